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

    def read_slot(self, sector, i):
        b = bytearray(24)
        self.f.readblocks(sector, b, 16 + i * 24)
        return b

    def test_torn_record_and_weak_slot_are_sealed(self):
        lg = self.mount()
        for i in range(3):
            lg.append(rec(0, i))
        self.f.arm(1, tear=True, seed=3)
        with self.assertRaises(PowerCut):
            lg.append(rec(0, 3))
        self.f.power_cycle()
        before = self.f.bytes_programmed
        lg2 = self.mount()
        head = lg2.head
        self.assertEqual(lg2.used(head), 5)  # the torn slot 3 and the weak slot 4
        self.assertEqual(lg2.stats["sealed"], 2)
        for i in (3, 4):
            self.assertEqual(self.read_slot(head, i), bytearray(24))  # tombstones
        lg2.append(rec(0, 4))
        got = [x[2] for x in all_records(lg2)]
        self.assertEqual(got, [0, 1, 2, 4])
        self.assertEqual(self.f.bytes_programmed - before, 3 * 24)  # two seals, the new slot
        self.assertEqual(lg2.stats["rewrites"], 0)

    def test_torn_record_that_settles_later_stays_dead(self):
        """The reviewer's case, narrowed: a torn append (seq 4) whose unfinished bits settle at
        the second power-up, after the first mount has given seq 4 to a new record."""
        lg = self.mount()
        for i in range(3):
            lg.append(rec(0, i))
        self.f.arm(1, tear=True, seed=3, weak=2)
        with self.assertRaises(PowerCut):
            lg.append(rec(0, 3))
        self.f.power_cycle()
        self.assertEqual(self.mount().append(rec(0, 4)), 4)
        self.f.power_cycle()  # the torn record's bits settle now
        got = all_records(self.mount())
        self.assertEqual([x[1:] for x in got], [(1, 0), (2, 1), (3, 2), (4, 4)])

    def test_weak_slot_that_settles_later_stays_dead(self):
        """A cut that changed no bit visibly: the slot reads blank at mount, then the program's
        bits settle. Mount must not give that slot to the next record."""
        lg = self.mount()
        for i in range(3):
            lg.append(rec(0, i))
        self.f.arm(1, tear=False, weak=2)
        with self.assertRaises(PowerCut):
            lg.append(rec(0, 3, fwd=0x55))
        self.f.power_cycle()
        self.assertEqual(self.read_slot(0, 3), bytearray(b"\xff" * 24))  # reads blank
        lg2 = self.mount()
        self.assertEqual(self.read_slot(0, 3), bytearray(24))  # yet sealed
        self.assertEqual(lg2.append(rec(0, 4, fwd=0xAA)), 4)
        self.assertEqual(lg2.stats["rewrites"], 0)  # the new record went to a fresh slot
        self.f.power_cycle()
        lg3 = self.mount()
        self.assertEqual([x[1:] for x in all_records(lg3)], [(1, 0), (2, 1), (3, 2), (4, 4)])
        self.assertEqual(lg3.stats["bad_records"], 0)

    def test_tombstones_are_not_bad_records(self):
        lg = self.mount()
        for i in range(3):
            lg.append(rec(0, i))
        self.f.arm(1, tear=True, seed=3)
        with self.assertRaises(PowerCut):
            lg.append(rec(0, 3))
        self.f.power_cycle()
        self.mount()  # sees the torn slot (one warning), seals it and the weak slot
        del self.lines[:]
        lg3 = self.mount()
        self.assertEqual(lg3.stats["bad_records"], 0)
        self.assertEqual(lg3.stats["tombstones"], 2)
        self.assertEqual(lg3.stats["records"], 3)
        self.assertEqual([ln for ln in self.lines if "WARN" in ln], [])
        self.assertEqual(lg3.stats["sealed"], 1)  # only the new weak slot

    def test_all_zero_slot_is_a_tombstone_never_valid(self):
        z = bytearray(24)
        self.assertFalse(r.is_valid(z, 0))
        self.assertTrue(r.is_tombstone(z, 0))
        b = rec(0, 1)
        self.assertFalse(r.is_tombstone(b, 0))
        for i in range(24):  # one bit left set anywhere: not a tombstone
            z[i] = 0x10
            self.assertFalse(r.is_tombstone(z, 0))
            z[i] = 0

    def test_torn_open_of_a_new_head_is_sealed_or_erased(self):
        """Cut at each op of the append that opens a new sector (header, erase of the sector
        after it, the first record), clean or torn, its unfinished bits settling after the
        remount: the fresh head with no valid record is sealed from slot 0, a torn header is
        erased as the spare."""
        for k in (1, 2, 3):
            for tear in (False, True):
                f = self.f = NorFlash(4, block_size=_BS)
                lg = self.mount()
                for i in range(30):
                    lg.append(rec(0, i))  # wraps: the next append opens a sector and erases one
                f.arm(k, tear=tear, seed=k + 7, weak=2)
                with self.assertRaises(PowerCut):
                    lg.append(rec(0, 30))
                f.power_cycle()
                lg2 = self.mount()
                seq = lg2.append(rec(0, 31))
                f.power_cycle()  # the cut op's bits settle now
                got = all_records(self.mount())
                seqs = [x[1] for x in got]
                what = "cut at op %d, tear %s" % (k, tear)
                self.assertEqual(seqs, sorted(set(seqs)), what)
                self.assertEqual(got[-1][1:], (seq, 31), what)
                self.assertEqual([x[2] for x in got][-3:-1], [28, 29], what)

    def test_cut_during_sealing_is_redone(self):
        for j in (1, 2):  # the first seal program (the weak slot), the second (the torn slot)
            for tear in (False, True):
                f = self.f = NorFlash(5, block_size=_BS)
                lg = self.mount()
                for i in range(3):
                    lg.append(rec(0, i))
                f.arm(1, tear=True, seed=3, weak=3)  # settles after the third power-up
                with self.assertRaises(PowerCut):
                    lg.append(rec(0, 3))
                f.power_cycle()
                f.arm(j, tear=tear, seed=j, weak=1)  # cut the seal; its own bits settle next
                with self.assertRaises(PowerCut):
                    self.mount()
                f.power_cycle()
                lg3 = self.mount()
                self.assertEqual(self.read_slot(0, 3), bytearray(24))
                self.assertEqual(self.read_slot(0, 4), bytearray(24))
                self.assertEqual(lg3.append(rec(0, 4)), 4)
                f.power_cycle()  # the torn record of the first cut settles now
                got = all_records(self.mount())
                self.assertEqual([x[1:] for x in got], [(1, 0), (2, 1), (3, 2), (4, 4)],
                                 "cut at seal program %d, tear %s" % (j, tear))

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
