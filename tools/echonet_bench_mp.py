"""The cost of one fixed-time read on the terminal's own runtime: must run under the `micropython`
binary (unix port). tools/echonet_bench.py starts it and reads the one JSON line it prints last.

  cd <repo> && MICROPYPATH=.:.frozen micropython -X heapsize=256k tools/echonet_bench_mp.py \
      ROUNDS REPEAT

Per slot the terminal receives one Get_Res from the 0x028E meter holding 0xE6 (forward) and 0xE7
(reverse), each an 11-byte stamp + value. One "read" here is everything the firmware does with
those bytes: split the receive buffer into frames (echonet.each_frame), decode the frame
(echonet.decode), find both EDTs and decode them as fixed-time values at a :00/:30 boundary
(drmeter.decode_fixed_time), and check that both carry the same stamp. Prints the best of REPEAT
runs of ROUNDS reads (us per read) and the bytes allocated per read (micropython.mem_total).
"""

import gc
import json
import struct
import sys
import time

import micropython

from firmware.meter import drmeter, echonet

_TZ = 540  # JST, as the terminal's default
_WANT = (drmeter.local_to_t2k(2024, 10, 15, 10, 30, 0, _TZ), 100000, 2500)


def fixed_time_reply(buf):
    """The meter's answer to Get 0xE6 0xE7 at 2024-10-15 10:30 JST, written into buf; length."""
    stamp = struct.pack(">HBBBBB", 2024, 10, 15, 10, 30, 0)
    return echonet.encode_into(buf, 0x002A, echonet.EOJ_DR_METER, echonet.EOJ_CONTROLLER,
                               echonet.GET_RES, [(0xE6, stamp + struct.pack(">I", _WANT[1])),
                                                 (0xE7, stamp + struct.pack(">I", _WANT[2]))])


class _Reader:
    """What the receive path and the meter reader do with one reply, kept in preallocated state
    so that the measurement sees the firmware's allocations, not the harness's."""

    def __init__(self):
        self.got = None

    def on_frame(self, buf, n, _addr):
        f = echonet.decode(buf, n)
        if f.esv != echonet.GET_RES:
            raise ValueError("not a Get_Res")
        sf, fwd = drmeter.decode_fixed_time(f.edt(0xE6), _TZ, True, "0xE6")
        sr, rev = drmeter.decode_fixed_time(f.edt(0xE7), _TZ, True, "0xE7")
        if sf != sr:
            raise ValueError("stamps differ")
        self.got = (sf, fwd, rev)


def measure(rounds, repeat):
    buf = bytearray(640)  # the meter's receive buffer size (docs/memory.md)
    n = fixed_time_reply(buf)
    r = _Reader()
    on_frame = r.on_frame
    echonet.each_frame(buf, n, on_frame, None)
    if r.got != _WANT:  # a broken decoder must not pass as a fast one
        raise SystemExit("fixed-time read gave %r, want %r" % (r.got, _WANT))
    best = None
    alloc = None
    for _ in range(repeat):
        gc.collect()
        a0 = micropython.mem_total()
        t0 = time.ticks_us()
        for _ in range(rounds):
            echonet.each_frame(buf, n, on_frame, None)
        dt = time.ticks_diff(time.ticks_us(), t0)
        a1 = micropython.mem_total()
        best = dt if best is None else min(best, dt)
        alloc = a1 - a0 if alloc is None else min(alloc, a1 - a0)
    return {"us_per_read": best / rounds, "alloc_bytes_per_read": alloc / rounds,
            "frame_bytes": n, "rounds": rounds}


def main(argv):
    rounds = int(argv[1]) if len(argv) > 1 else 2000
    repeat = int(argv[2]) if len(argv) > 2 else 5
    print(json.dumps(measure(rounds, repeat)))


main(sys.argv)
