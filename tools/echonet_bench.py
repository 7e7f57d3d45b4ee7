"""ECHONET Lite receive costs, under the names of what each one times.

    python -m tools.echonet_bench

measure() -> flat {"echonet.<name>": number}:

echonet.cpython_frame_split_us_per_frame   our echonet.decode() under CPython: header checks and
                          the split into (EPC, EDT) pairs only, no EDT is interpreted; per frame of
                          the mix below
echonet.pychonet_frame_split_us_per_frame  pychonet's decodeEchonetMsg() on the same frames,
                          same CPython run (it also only splits): a reference, not a goal
echonet.mp_fixed_time_read_us_per_slot     the whole fixed-time read of one slot on the terminal's
                          runtime (`micropython` unix port on this host's CPU, not an ESP32): split
                          the receive buffer into frames, decode the Get_Res, decode 0xE6 and 0xE7
                          as fixed-time values and check their stamps agree
                          (tools/echonet_bench_mp.py; best of 5 runs of 2,000 reads)
echonet.mp_fixed_time_read_alloc_bytes_per_slot  heap bytes that read allocates (unix port, 64-bit
                          objects: about half on the ESP32)

The CPython frame mix is what the terminal receives in operation: Get_Res with the fixed-time
values 0xE6/0xE7, a day history 0xE1 (194-byte EDT), INF 0xD5 instance-list announcements and
Get_SNA answers. Each decoder runs over the whole mix `rounds` times; the best of `repeat` runs
counts (the least disturbed by the rest of the machine).
"""
import json
import os
import struct
import subprocess
import sys
import time

from firmware.meter import echonet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MP_HELPER = os.path.join("tools", "echonet_bench_mp.py")


def frame_mix():
    stamp = struct.pack(">HBBBBB", 2024, 10, 15, 10, 30, 0)
    hist = struct.pack(">H48I", 1, *[100000 + 37 * i for i in range(47)] + [0xFFFFFFFE])
    buf = bytearray(256)
    frames = []

    def add(tid, seoj, deoj, esv, props):
        n = echonet.encode_into(buf, tid, seoj, deoj, esv, props)
        frames.append(bytes(buf[:n]))

    add(0x002A, 0x028E01, 0x05FF01, echonet.GET_RES,
        [(0xE6, stamp + struct.pack(">I", 100000)), (0xE7, stamp + b"\xff\xff\xff\xfe")])
    add(0x002C, 0x028E01, 0x05FF01, echonet.GET_RES, [(0xE1, hist)])
    add(0x002D, 0x028E01, 0x05FF01, echonet.GET_RES, [(0xE3, hist)])
    add(0x0001, 0x0EF001, 0x0EF001, echonet.INF, [(0xD5, b"\x01\x02\x8e\x01")])
    add(0x0002, 0x0EF001, 0x0EF001, echonet.INF, [(0xD5, b"\x02\x02\x8e\x01\x02\x8e\x02")])
    add(0x002E, 0x028E01, 0x05FF01, echonet.GET_SNA,
        [(0xE6, stamp + struct.pack(">I", 100001)), (0xE7, b"")])
    add(0x002F, 0x028E01, 0x05FF01, echonet.GET_SNA, [(0xD4, b"\x01"), (0xD6, b"")])
    for i in range(5):  # the steady state is mostly fixed-time reads
        add(0x0030 + i, 0x028E01, 0x05FF01, echonet.GET_RES,
            [(0xE6, stamp + struct.pack(">I", 100002 + i)),
             (0xE7, stamp + struct.pack(">I", 2500 + i))])
    return frames


def _time_us(fn, frames, rounds, repeat):
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(rounds):
            for f in frames:
                fn(f)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best * 1e6 / (rounds * len(frames))


def measure(rounds=200, repeat=5):
    from pychonet.lib.functions import decodeEchonetMsg

    frames = frame_mix()
    # Both decoders must agree on what each frame holds before their speed means anything.
    for f in frames:
        ours = echonet.decode(f)
        theirs = decodeEchonetMsg(f)
        got = [(p["EPC"], bytes(p["EDT"]) if p["PDC"] else b"") for p in theirs["OPC"]]
        if (theirs["TID"], theirs["ESV"], got) != (ours.tid, ours.esv,
                                                   [(e, bytes(d)) for e, d in ours.props]):
            raise SystemExit("decoders disagree on %s" % f.hex())
    out = {
        "echonet.cpython_frame_split_us_per_frame":
            round(_time_us(echonet.decode, frames, rounds, repeat), 2),
        "echonet.pychonet_frame_split_us_per_frame":
            round(_time_us(decodeEchonetMsg, frames, rounds, repeat), 2),
    }
    out.update(mp_fixed_time_read())
    return out


def mp_fixed_time_read(rounds=2000, repeat=5, heap="256k"):
    """echonet.mp_fixed_time_read_* from tools/echonet_bench_mp.py under micropython."""
    from tools.deployment import find_micropython

    mp = find_micropython()
    if not mp:
        raise RuntimeError("micropython binary not found")
    r = subprocess.run([mp, "-X", "heapsize=" + heap, _MP_HELPER, str(rounds), str(repeat)],
                       cwd=ROOT, env=dict(os.environ, MICROPYPATH=".:.frozen"),
                       capture_output=True, text=True, timeout=120)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise RuntimeError("echonet_bench_mp.py failed (rc %d): %s"
                           % (r.returncode, (r.stderr or r.stdout)[-2000:]))
    res = json.loads(lines[-1])
    return {
        "echonet.mp_fixed_time_read_us_per_slot": round(res["us_per_read"], 2),
        "echonet.mp_fixed_time_read_alloc_bytes_per_slot": round(res["alloc_bytes_per_read"]),
    }


def main():
    print(json.dumps(measure(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
