# Streaming the 45-day profile (2160 rows) through 512-byte blocks must work in the 256 KB test
# heap: rows are generated on demand by the view and checked block by block, never collected.
import gc
import struct
import unittest

from cosem_fakes import AARQ_PUBLIC, SLOT0, FakeClock, SynthView, make_server

from firmware import timeutil
from firmware.cosem import axdr

GET_PROFILE = bytes.fromhex("c001c100070100630100ff0200")
N = 2160


def _mem_alloc():
    gc.collect()
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else None


class ProfileMemoryTest(unittest.TestCase):
    def test_2160_rows_in_512_byte_blocks(self):
        view = SynthView(SLOT0, N)
        srv, _, _ = make_server(view=view, clock=FakeClock(0))
        srv.handle_apdu(AARQ_PUBLIC, 16)
        before = _mem_alloc()
        peak = 0
        r = srv.handle_apdu(GET_PROFILE, 16)
        self.assertEqual(r[:2], b"\xc4\x02")
        seen = 0
        blocks = 0
        while True:
            self.assertLessEqual(len(r), 512)
            blocks += 1
            self.assertEqual(struct.unpack_from(">I", r, 4)[0], blocks)
            rd = axdr.Reader(r, 9)
            n = rd.length()
            self.assertEqual(rd.pos + n, len(r))
            if blocks == 1:
                self.assertEqual(rd.container(axdr.ARRAY), N)
            while rd.remaining():  # whole rows only in every block
                row = rd.value()
                slot = SLOT0 + seen
                self.assertEqual(row[1:], list(SynthView.row_at(slot, seen)[1:4]))
                if seen % 500 == 0:
                    t = axdr.parse_datetime(row[0], -1, 540)
                    self.assertEqual(timeutil.slot_of_t2k(t), slot)
                seen += 1
            if r[3]:
                break
            if blocks % 50 == 0:
                used = _mem_alloc()
                if used is not None:
                    peak = max(peak, used - before)
            r = srv.handle_apdu(b"\xc0\x02\xc1" + struct.pack(">I", blocks), 16)
        self.assertEqual(seen, N)
        self.assertGreaterEqual(blocks, N * 28 // 500)
        if before is not None:
            # the transfer holds one block and a few objects, not the 60 KB buffer
            self.assertLess(peak, 8 * 1024)


# --- allocations of the reply path ------------------------------------------------------------
# Each block of a long GET is built once, in the server's PDU buffer behind room for the wrapper
# header; handle_wpdu returns a view of it and the radio copies it once, into the J11 transmit
# frame (preallocated). Measured here: what handling a GET-Next and framing its reply for the
# radio leave behind per block, with the rows already in memory (the store's own reads are
# measured by `make bench`, dlms.profile_45d_*).

_BLOCKS = 20


class _Rows:
    """Rows prebuilt once: the view allocates nothing per row (a generator per block)."""

    unit_code = 0x01

    def __init__(self, n):
        self.r = [SynthView.row_at(SLOT0 + i, i) for i in range(n)]

    def latest(self):
        return self.r[-1]

    def count(self):
        return len(self.r)

    def rows(self, a, b):
        r = self.r
        i = max(0, a - SLOT0)
        while i < len(r) and r[i][0] <= b:
            yield r[i]
            i += 1

    def rows_by_index(self, first, last):
        r = self.r
        i = first
        while i <= last and i < len(r):
            yield r[i]
            i += 1


def _reply_path_setup():
    from firmware import log
    from firmware.cosem import wrapper
    from firmware.radio import j11

    log.level = log.WARN
    srv, _, _ = make_server(view=_Rows(_BLOCKS * 18 + 40), clock=FakeClock(0),
                            config={"max_pdu": 512})
    out = srv.reply_buffer()
    peer = (b"\xfe\x80" + bytes(14), 4059)
    srv.handle_wpdu(wrapper.build(16, 1, AARQ_PUBLIC), peer, out)
    first = srv.handle_wpdu(wrapper.build(16, 1, GET_PROFILE), peer, out)
    assert first[8:10] == b"\xc4\x02", bytes(first[:12])
    nxt = bytearray(wrapper.build(16, 1, b"\xc0\x02\xc1\x00\x00\x00\x01"))
    tx = bytearray(j11.HEADER_LEN + j11.UDP_TX_FIXED + srv.max_wpdu)
    dst = peer[0]

    def block(k):
        struct.pack_into(">I", nxt, wrapper.HEADER_LEN + 3, k)
        r = srv.handle_wpdu(nxt, peer, out)
        n = j11.udp_tx_into(tx, dst, 4059, 4059, r)
        j11.finish_into(tx, j11.CMD_TRANSMIT, n)
        return r

    return block


def _restore_log():
    from firmware import log

    log.level = log.INFO


class ReplyPathAllocationTest(unittest.TestCase):
    def tearDown(self):
        _restore_log()

    def test_blocks_leave_little_for_the_collector(self):
        block = _reply_path_setup()
        if hasattr(gc, "mem_alloc"):  # micropython: what each block leaves for the collector
            total = 0
            for k in range(1, _BLOCKS + 1):
                gc.collect()
                a = gc.mem_alloc()
                gc.disable()
                try:
                    r = block(k)
                    total += gc.mem_alloc() - a
                finally:
                    gc.enable()
                self.assertEqual(struct.unpack_from(">I", r, 12)[0], k + 1)
            per_block = total // _BLOCKS
            # ~1 KB on the unix port: the request object, the row generator, a few views. A copy
            # of the block (~500 bytes) or a date decoded per row (~160 bytes x 18) fails here.
            self.assertLess(per_block, 1400, per_block)
            return
        import tracemalloc  # CPython: the largest extra memory while one block is handled

        tracemalloc.start()
        try:
            worst = 0
            for k in range(1, _BLOCKS + 1):
                r = None
                cur = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                r = block(k)
                worst = max(worst, tracemalloc.get_traced_memory()[1] - cur)
                self.assertEqual(struct.unpack_from(">I", r, 12)[0], k + 1)
        finally:
            tracemalloc.stop()
        # ~2.5 KB on CPython 3.11 (frames, the request object); a copy of the block adds 0.5 KB
        self.assertLess(worst, 2816, worst)
