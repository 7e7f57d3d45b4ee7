import unittest

from firmware import log
from firmware.hal.norflash import NorFlash, PowerCut
from firmware.store import record as r
from firmware.store.flashlog import FlashLog, LogError

_BS = 256  # 16-byte header + 10 record slots


def rec(meter, slot, fwd=0, rev=0):
    b = bytearray(24)
    r.pack_interval(b, 0, 0, meter, slot, fwd, rev, 1, r.SOURCE_FIXED, 0)
    return b


def all_records(lg):
    """(sector, seq, slot) of every valid record, oldest first."""
    out = []
    lg.scan(lambda s, buf, off: out.append((s, r.seq_of(buf, off), r.meter_slot(buf, off)[2])))
    return out


class FlashLogTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.f = NorFlash(5, block_size=_BS)

    def tearDown(self):
        log.set_sink(None)

    def mount(self):
        lg = FlashLog(self.f)
        lg.mount()
        return lg

    def test_geometry_errors(self):
        self.assertRaises(LogError, FlashLog, self.f, 0, 2)
        self.assertRaises(LogError, FlashLog, self.f, 3, 3)
        self.assertRaises(LogError, FlashLog, NorFlash(4, block_size=32))

    def test_fresh_region_formats_and_opens_sector_0(self):
        self.f.writeblocks(3, b"junk", 40)  # foreign bytes: erased by the format
        lg = self.mount()
        self.assertEqual(lg.stats["formatted"], 1)
        self.assertEqual(lg.append(rec(0, 100)), 1)
        self.assertEqual(lg.order, [0])
        b = bytearray(_BS)
        self.f.readblocks(3, b)
        self.assertEqual(b, bytearray(b"\xff" * _BS))
        self.assertEqual(self.f.erases, [0, 0, 0, 1, 0])

    def test_append_mount_round_trip(self):
        lg = self.mount()
        for i in range(25):
            self.assertEqual(lg.append(rec(0, 1000 + i)), i + 1)
        lg2 = self.mount()
        self.assertEqual(lg2.stats["records"], 25)
        self.assertEqual(lg2.next_seq, 26)
        self.assertEqual(lg2.head, lg.head)
        self.assertEqual([x[2] for x in all_records(lg2)], list(range(1000, 1025)))
        self.assertEqual(lg2.append(rec(0, 2000)), 26)

    def test_wrap_drops_oldest_sector_first(self):
        lg = self.mount()
        for i in range(95):
            lg.append(rec(0, i))
        recs = all_records(self.mount())
        seqs = [x[1] for x in recs]
        self.assertEqual(seqs, list(range(seqs[0], 96)))  # contiguous, newest kept
        self.assertGreaterEqual(len(seqs), lg.capacity())
        self.assertEqual(seqs[-1], 95)
        # one sector is always erased: the one after the head
        spare = (lg.head + 1) % 5
        b = bytearray(_BS)
        self.f.readblocks(spare, b)
        self.assertEqual(b, bytearray(b"\xff" * _BS))
        self.assertLessEqual(max(self.f.erases), 3)

    def test_odd_block_size(self):
        f = NorFlash(4, block_size=200)  # 7 slots, 16 spare bytes at the end
        lg = FlashLog(f)
        lg.mount()
        self.assertEqual(lg.slots, 7)
        for i in range(40):
            lg.append(rec(1, i))
        lg2 = FlashLog(f)
        lg2.mount()
        self.assertEqual(lg2.stats["recovery_erases"], 0)  # the spare reads erased
        got = [x[2] for x in all_records(lg2)]
        self.assertEqual(got, list(range(40 - len(got), 40)))
        self.assertGreaterEqual(len(got), lg2.capacity())

    def test_seq_strictly_increasing_across_remounts(self):
        for k in range(6):
            lg = self.mount()
            for i in range(7):
                lg.append(rec(0, k * 7 + i))
        seqs = [x[1] for x in all_records(self.mount())]
        for a, b in zip(seqs, seqs[1:]):
            self.assertEqual(b, a + 1)

    def test_bit_flips_detected_reported_skipped(self):
        lg = self.mount()
        for i in range(30):
            lg.append(rec(0, i))
        victim = lg.order[1]
        self.f.corrupt(victim, 16 + 2 * 24 + 9, 0x04)  # record 2 of that sector
        self.f.corrupt(victim, 16 + 5 * 24 + 20, 0x80)  # CRC byte of record 5
        lg2 = self.mount()
        self.assertEqual(lg2.stats["bad_records"], 2)
        self.assertEqual(lg2.stats["records"], 28)
        self.assertTrue([x for x in self.lines if "bad record" in x])
        slots = [x[2] for x in all_records(lg2)]
        self.assertEqual(len(slots), 28)
        self.assertNotIn(12, slots)
        self.assertNotIn(15, slots)
        self.assertIn(11, slots)
        self.assertEqual(lg2.append(rec(0, 99)), 31)

    def test_damaged_header_keeps_records_readable(self):
        lg = self.mount()
        for i in range(25):
            lg.append(rec(0, i))
        self.f.corrupt(lg.order[0], 3, 0x01)
        lg2 = self.mount()
        self.assertEqual(lg2.stats["bad_headers"], 1)
        self.assertEqual(len(all_records(lg2)), 25)

    def test_damaged_head_header_is_not_appended_to(self):
        lg = self.mount()
        for i in range(13):
            lg.append(rec(0, i))
        head = lg.head
        self.f.corrupt(head, 9, 0x02)
        lg2 = self.mount()
        self.assertEqual(lg2.head, head)
        lg2.append(rec(0, 50))
        self.assertEqual(lg2.last_sector, (head + 1) % 5)
        self.assertEqual([x[2] for x in all_records(self.mount())], list(range(13)) + [50])

    def test_torn_record_is_skipped_never_reprogrammed(self):
        lg = self.mount()
        for i in range(3):
            lg.append(rec(0, i))
        self.f.arm(1, tear=True, seed=3)
        with self.assertRaises(PowerCut):
            lg.append(rec(0, 3))
        self.f.power_cycle()
        before = self.f.bytes_programmed
        lg2 = self.mount()
        lg2.append(rec(0, 4))
        got = [x[2] for x in all_records(lg2)]
        self.assertEqual(got[:3], [0, 1, 2])
        self.assertEqual(got[-1], 4)
        self.assertEqual(self.f.bytes_programmed - before, 24)  # only the new slot
        self.assertGreaterEqual(lg2.used(lg2.head), 5)  # past the torn slot and the skipped one

    def test_interrupted_erase_of_the_spare_is_redone(self):
        lg = self.mount()
        for i in range(41):  # the 5th sector opened: the oldest (0) is being erased
            lg.append(rec(0, i))
        self.f.arm(1, tear=True, seed=11)
        for i in range(41, 60):
            try:
                lg.append(rec(0, i))
            except PowerCut:
                break
        self.f.power_cycle()
        lg2 = self.mount()
        spare = (lg2.head + 1) % 5
        b = bytearray(_BS)
        self.f.readblocks(spare, b)
        self.assertEqual(b, bytearray(b"\xff" * _BS))
        seqs = [x[1] for x in all_records(lg2)]
        self.assertEqual(seqs, list(range(seqs[0], seqs[-1] + 1)))

    def test_cut_while_opening_a_sector(self):
        for tear in (False, True):
            f = NorFlash(4, block_size=_BS)
            lg = FlashLog(f)
            lg.mount()
            for i in range(10):
                lg.append(rec(0, i))  # head full: the next append opens sector 1
            f.arm(1, tear=tear, seed=5)
            with self.assertRaises(PowerCut):
                lg.append(rec(0, 10))
            f.power_cycle()
            lg2 = FlashLog(f)
            lg2.mount()
            lg2.append(rec(0, 11))
            self.assertEqual([x[2] for x in all_records(lg2)], list(range(10)) + [11])

    def test_read_back_failure_rewrites_next_slot(self):
        lg = self.mount()
        lg.append(rec(0, 1))
        orig = self.f.writeblocks
        calls = []

        def flaky(block, buf, offset=None):
            calls.append(offset)
            if len(calls) == 1:
                b = bytearray(buf)
                b[6] ^= 0xFF  # a stuck cell: the slot does not hold what was sent
                return orig(block, b, offset)
            return orig(block, buf, offset)

        self.f.writeblocks = flaky
        seq = lg.append(rec(0, 2))
        self.assertEqual(lg.stats["rewrites"], 1)
        self.assertEqual(seq, 3)
        del self.f.writeblocks
        lg2 = self.mount()
        self.assertEqual(lg2.stats["bad_records"], 1)
        self.assertEqual([x[2] for x in all_records(lg2)], [1, 2])
