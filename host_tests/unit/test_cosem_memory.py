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
