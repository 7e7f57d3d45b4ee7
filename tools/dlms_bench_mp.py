"""The cost of reading the whole load profile by block transfer, server side, on the terminal's own
runtime: must run under the `micropython` binary (unix port). tools/dlms_bench.py starts it and
reads the one JSON line it prints last.

  cd <repo> && MICROPYPATH=.:.frozen micropython -X heapsize=512k tools/dlms_bench_mp.py \
      [ROWS] [REPEAT]

Builds what the terminal builds for one meter: an IntervalStore over a FlashLog on the NOR
emulator (in RAM), filled with ROWS consecutive 30-minute records (default 2160 = 45 days), the
MeterView, the default object table and the CosemServer with its reply buffer. Then a public
client associates and reads Profile Generic attribute 2 (1.0.99.1.0.255) with a GET-Normal and a
GET-Next per block, every request a whole WPDU through handle_wpdu(data, peer, out), exactly as
the terminal's dlms_link calls it. Each read is checked (block numbers in sequence, whole rows
only, the row count and the first and last +A values), so a broken server cannot pass as a fast
or lean one.

Prints one JSON line:
  read_ms          best of REPEAT timed reads (AARQ excluded; no collection forced inside; the
                   view is MeterView behind one pass-through generator, the sampler's, idle here)
  alloc_per_block  bytes allocated per block over a timed read (micropython.mem_total; counts
                   the frames of calls freed at once too, so it is above the garbage made)
  garbage_per_block  bytes left for the collector per block: gc.mem_alloc() across each block's
                   handle_wpdu with the collector paused for that call, averaged over the blocks
  peak_heap_bytes  the extra heap of a read: the largest live heap (after a collection) seen at
                   every row the store yields and after every block, the reply still referenced,
                   minus the live heap before the GET with no transfer in progress (includes the
                   sampling generator this script wraps around MeterView.rows)
  blocks, rows, max_reply
"""

import gc
import json
import struct
import sys
import time

try:
    import micropython
except ImportError:  # CPython: no allocation counter (the script is meant for micropython)
    micropython = None

from firmware import log, timeutil
from firmware.app.views import MeterView
from firmware.cosem import wrapper
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer
from firmware.hal.norflash import NorFlash
from firmware.store import record
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

_T0 = timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0)
_SLOT0 = timeutil.slot_of_t2k(_T0)
_CLIENT = 16  # public client
_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
_GET_PROFILE = bytes.fromhex("c001c100070100630100ff0200")
_GET_CLOCK = bytes.fromhex("c001c100080000010000ff0200")
_PEER = (b"\xfe\x80" + bytes(14), 4059)


def fwd_at(i):
    return 100000 + 7 * i


class SampledView(MeterView):
    """The terminal's MeterView; when a probe is set, the live heap is sampled at every row the
    store yields (inside the block being built)."""

    probe = None

    def rows(self, from_slot, to_slot):
        for r in MeterView.rows(self, from_slot, to_slot):
            if self.probe is not None:
                self.probe.sample()
            yield r

    def rows_by_index(self, first, last):
        for r in MeterView.rows_by_index(self, first, last):
            if self.probe is not None:
                self.probe.sample()
            yield r


class _Clock:
    def __init__(self, t):
        self.t = t

    def now_t2k(self):
        return self.t

    def set_t2k(self, t):
        self.t = t

    def is_set(self):
        return True


def build(rows):
    # 170 records per 4 KB sector: room for the rows and the ring's spare sectors
    flash = NorFlash(max(8, rows // 170 + 4))
    flog = FlashLog(flash)
    store = IntervalStore(flog, max_meters=1)
    for i in range(rows):
        store.put(0, _SLOT0 + i, fwd_at(i), 2000 + 3 * i, 0x01, record.SOURCE_FIXED, 0)
    view = SampledView(store, 0)
    table = default_table(view, {"profile_entries": flog.capacity()})
    clock = _Clock(_T0 + rows * 1800)
    return CosemServer(table, clock, {}), view


# a buffer row in the default format: 02 04 | 09 0C date-time | 15 +A(8) | 15 -A(8) | 11 status
_ROW = 36


def _u64(b, i):
    return (_u32(b, i) << 32) | _u32(b, i + 4)


def _u32(b, i):
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


class Reader:
    """The client's side of the read, in preallocated state (the harness must not be what the
    measurement sees)."""

    def __init__(self, srv, rows):
        self.srv = srv
        self.rows = rows
        self.out = srv.reply_buffer()
        self.get = wrapper.build(_CLIENT, 1, _GET_PROFILE)
        self.next = bytearray(wrapper.build(_CLIENT, 1, b"\xc0\x02\xc1\x00\x00\x00\x00"))
        self.clock = wrapper.build(_CLIENT, 1, _GET_CLOCK)
        self.blocks = 0
        self.raw = 0
        self.max_reply = 0
        self.first_fwd = -1
        self.last_fwd = -1

    def associate(self):
        r = self.srv.handle_wpdu(wrapper.build(_CLIENT, 1, _AARQ), _PEER, self.out)
        if r is None or r[8] != 0x61:
            raise SystemExit("association failed")

    def idle(self):
        """End the finished transfer (a new GET does): the heap is measured from a server with
        no transfer state, as between two reads of the smart meter."""
        r = self.srv.handle_wpdu(self.clock, _PEER, self.out)
        if r is None or r[8] != 0xC4 or r[11] != 0:
            raise SystemExit("GET clock failed")

    def start(self):
        self.blocks = 0
        self.raw = 0
        self.max_reply = 0
        return self.srv.handle_wpdu(self.get, _PEER, self.out)

    def check(self, r):
        """Check one reply block; True when it was the last."""
        h = wrapper.HEADER_LEN
        if r is None or r[h] != 0xC4 or r[h + 1] != 0x02:
            raise SystemExit("not a GET block: %r" % (None if r is None else bytes(r[:16]),))
        self.blocks += 1
        if _u32(r, h + 4) != self.blocks or r[h + 8] != 0:
            raise SystemExit("block %d: bad number or an error result" % self.blocks)
        p = h + 9
        n = r[p]
        p += 1
        if n == 0x81:
            n = r[p]
            p += 1
        elif n == 0x82:
            n = (r[p] << 8) | r[p + 1]
            p += 2
        if p + n != len(r):
            raise SystemExit("block %d: raw length %d but %d bytes" % (self.blocks, n, len(r) - p))
        if self.blocks == 1:  # the array header (01, its A-XDR length), then the first row
            k = 2 if r[p + 1] < 0x80 else 2 + (r[p + 1] & 0x7F)
            if r[p] != 0x01:
                raise SystemExit("block 1 does not open an array")
            p += k
            n -= k
            self.first_fwd = _u64(r, p + 17)
        if n % _ROW:
            raise SystemExit("block %d: not whole %d-byte rows" % (self.blocks, _ROW))
        self.raw += n
        self.last_fwd = _u64(r, len(r) - 19)
        self.max_reply = max(self.max_reply, len(r))
        return r[h + 3] == 1

    def ack(self):
        struct.pack_into(">I", self.next, wrapper.HEADER_LEN + 3, self.blocks)
        return self.srv.handle_wpdu(self.next, _PEER, self.out)

    def verify(self):
        if self.raw != _ROW * self.rows:
            raise SystemExit("read %d rows, want %d" % (self.raw // _ROW, self.rows))
        # records are in 0.1 kWh (unit 0x01), served in Wh (the default scaler 0): x 100
        want = (fwd_at(0) * 100, fwd_at(self.rows - 1) * 100)
        if (self.first_fwd, self.last_fwd) != want:
            raise SystemExit("first/last +A %d/%d, want %d/%d" % (
                self.first_fwd, self.last_fwd, want[0], want[1]))


def _us():
    return time.ticks_us() if hasattr(time, "ticks_us") else int(time.perf_counter() * 1e6)


def timed_read(rd):
    rd.idle()
    gc.collect()
    a0 = micropython.mem_total() if micropython else 0
    t0 = _us()
    r = rd.start()
    while not rd.check(r):
        r = rd.ack()
    t1 = _us()
    a1 = micropython.mem_total() if micropython else 0
    rd.verify()
    return (t1 - t0) / 1000, (a1 - a0) / rd.blocks


def garbage_read(rd):
    """Bytes per block left for the collector: gc.mem_alloc() across each block's handle_wpdu
    with the collector paused for that call (and a collection before it)."""
    rd.idle()
    total = 0
    r = None
    while r is None or not rd.check(r):
        gc.collect()
        a0 = gc.mem_alloc()
        gc.disable()
        try:
            r = rd.start() if r is None else rd.ack()
            total += gc.mem_alloc() - a0
        finally:
            gc.enable()
    rd.verify()
    return total / rd.blocks


class _Peak:
    """Live-heap sampler: sample() collects and keeps the largest gc.mem_alloc() seen."""

    def __init__(self, view):
        self.on = False
        self.max = 0
        view.probe = self

    def sample(self):
        if self.on:
            gc.collect()
            a = gc.mem_alloc()
            if a > self.max:
                self.max = a


def heap_read(rd, peak):
    rd.idle()
    gc.collect()
    base = gc.mem_alloc()
    peak.max = base
    peak.on = True
    try:
        r = rd.start()
        peak.sample()
        while not rd.check(r):
            r = rd.ack()
            peak.sample()
    finally:
        peak.on = False
    rd.verify()
    return peak.max - base


def main(argv):
    rows = int(argv[1]) if len(argv) > 1 else 2160
    repeat = int(argv[2]) if len(argv) > 2 else 3
    log.level = log.WARN
    srv, view = build(rows)
    rd = Reader(srv, rows)
    rd.associate()
    best = alloc = None
    for _ in range(repeat):
        ms, a = timed_read(rd)
        best = ms if best is None else min(best, ms)
        alloc = a if alloc is None else min(alloc, a)
    garbage = garbage_read(rd) if hasattr(gc, "mem_alloc") else 0
    peak = heap_read(rd, _Peak(view)) if hasattr(gc, "mem_alloc") else 0
    print(json.dumps({"read_ms": best, "alloc_per_block": alloc, "garbage_per_block": garbage,
                      "peak_heap_bytes": peak, "blocks": rd.blocks, "rows": rows,
                      "max_reply": rd.max_reply}))


main(sys.argv)
