"""DLMS server costs of `make bench`: a whole 45-day load profile read by block transfer, server
side, under the `micropython` binary (unix port, this host's CPU, not an ESP32).

  python -m tools.dlms_bench [rows]

Runs tools/dlms_bench_mp.py (store on the NOR emulator filled with `rows` 30-minute records, the
terminal's MeterView, default object table and CosemServer; a public client reads Profile Generic
attribute 2 with GET-Normal and one GET-Next per block through handle_wpdu, as dlms_link does) and
returns a flat {"dlms.<name>": number} map:

dlms.profile_45d_read_ms          best of 3 reads of the 2,160 rows (AARQ excluded), ms
dlms.profile_45d_peak_heap_kb     extra heap of the read: the largest live heap (after a
                                  collection) sampled at every row the store yields and after
                                  every block, minus the live heap before the GET (goal < 8)
dlms.profile_45d_alloc_bytes_per_block  bytes allocated per block (micropython.mem_total; counts
                                  call frames freed at once as well)
dlms.profile_45d_garbage_bytes_per_block  bytes per block left for the collector (gc.mem_alloc
                                  across each block's handle_wpdu with the collector paused)
dlms.profile_45d_blocks           blocks of the read (512-byte PDU)

and, from tools/dlms_security_bench_mp.py (security suite 0 under micropython, cryptolib ECB):
dlms.gcm_1kb_ms, dlms.gcm_open_1kb_ms, dlms.gcm_key_setup_ms, dlms.gcm_key_heap_bytes,
dlms.hls_association_ms (that file's docstring says what each is).
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MP_HELPER = os.path.join("tools", "dlms_bench_mp.py")
_MP_SECURITY = os.path.join("tools", "dlms_security_bench_mp.py")
ROWS_45D = 2160


def _run_mp(script, args, heap):
    """The JSON line a micropython helper prints last (a dict)."""
    from tools.deployment import find_micropython

    mp = find_micropython()
    if not mp:
        raise RuntimeError("micropython binary not found")
    name = os.path.basename(script)
    r = subprocess.run([mp, "-X", "heapsize=" + heap, script] + [str(a) for a in args],
                       cwd=ROOT, env=dict(os.environ, MICROPYPATH=".:.frozen"),
                       capture_output=True, text=True, timeout=300)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise RuntimeError("%s failed (rc %d): %s"
                           % (name, r.returncode, (r.stderr or r.stdout)[-2000:]))
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise RuntimeError("%s: %s" % (name, lines[-1][-2000:])) from None


def mp_profile_read(rows=ROWS_45D, repeat=3, heap="512k"):
    """The raw figures of tools/dlms_bench_mp.py (a dict), run under micropython."""
    return _run_mp(_MP_HELPER, [rows, repeat], heap)


def mp_security(runs=20, heap="256k"):
    """The suite 0 figures of tools/dlms_security_bench_mp.py, flat dlms.* names."""
    res = _run_mp(_MP_SECURITY, [runs], heap)
    res.pop("runs", None)
    return res


def measure(rows=ROWS_45D, repeat=3):
    res = mp_profile_read(rows, repeat)
    if res["rows"] != rows:
        raise RuntimeError("read %r rows, want %d" % (res["rows"], rows))
    return {
        "dlms.profile_45d_read_ms": round(res["read_ms"], 1),
        "dlms.profile_45d_peak_heap_kb": round(res["peak_heap_bytes"] / 1024, 1),
        "dlms.profile_45d_alloc_bytes_per_block": round(res["alloc_per_block"]),
        "dlms.profile_45d_garbage_bytes_per_block": round(res["garbage_per_block"]),
        "dlms.profile_45d_blocks": res["blocks"],
    }


def main(argv):
    rows = int(argv[1]) if len(argv) > 1 else ROWS_45D
    res = measure(rows)
    res.update(mp_security())
    print(json.dumps(res, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
