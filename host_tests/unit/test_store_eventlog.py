# The event log store (docs/events.md): format, wrap, power cuts at every byte, bad and fuzzed
# contents, the flood limit, cursors across rotations.
import os
import unittest

from event_fakes import MemFs, StepClock, read_all

from firmware import events as ev
from firmware import log
from firmware.compat import ticks_add
from firmware.hal.norflash import PowerCut
from firmware.store import eventlog as el
from firmware.store.eventlog import EventLog, EventsGone

T0 = 765244800  # 2024-04-01T00:00Z
GOLDEN = "00000001300100002d9cb580fffffda800000000c6afa534"


def make(fs, cap=4, clock=None, burst=0):
    lg = EventLog("ev", cap, clock or StepClock(T0), fs=fs, burst=burst)
    lg.mount()
    return lg


class _Rng:
    """Deterministic LCG (the same sequence on CPython and MicroPython)."""

    def __init__(self, seed):
        self.s = seed

    def next(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s % n


class Base(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)


class FormatTest(Base):
    def test_golden_record(self):
        b = bytearray(24)
        el.pack(b, 1, ev.CLOCK_SET, T0, -600)
        self.assertEqual(b.hex(), GOLDEN)
        self.assertEqual(el.unpack(b), (1, T0, ev.CLOCK_SET, -600))

    def test_no_time_and_limits(self):
        b = bytearray(24)
        el.pack(b, 7, ev.POWER_UP, None, -0x80000000)
        self.assertEqual(b[8:12], b"\xff\xff\xff\xff")
        self.assertEqual(el.unpack(b), (7, None, ev.POWER_UP, -0x80000000))
        el.pack(b, 8, ev.POWER_UP, 0, 0x7FFFFFFF)
        self.assertEqual(el.unpack(b), (8, 0, ev.POWER_UP, 0x7FFFFFFF))

    def test_invalid_records(self):
        b = bytearray(24)
        el.pack(b, 1, 1, T0, 5)
        for i in range(24):
            c = bytearray(b)
            c[i] ^= 0x01
            self.assertIsNone(el.unpack(c), i)
        self.assertIsNone(el.unpack(bytearray(24)))  # all zero: never valid
        self.assertIsNone(el.unpack(bytearray(b"\xff" * 24)))

    def test_round_trip_through_remount(self):
        fs = MemFs()
        clk = StepClock(None)
        lg = make(fs, 8, clk)
        want = []
        for i in range(6):
            if i == 2:
                clk.t = T0 + 100
            seq = lg.record(1 + i, i * 1000 - 2500)
            want.append((seq, clk.t, 1 + i, i * 1000 - 2500))
        self.assertEqual([w[0] for w in want], [1, 2, 3, 4, 5, 6])
        self.assertEqual(read_all(lg), want)
        lg2 = make(fs, 8, clk)
        self.assertEqual(read_all(lg2), want)
        self.assertEqual(lg2.count(), 6)
        self.assertEqual(lg2.last, want[-1])
        self.assertEqual(lg2.next_seq, 7)
        self.assertEqual(fs.open_files, 0)

    def test_detail_clamped_and_code_checked(self):
        lg = make(MemFs())
        lg.record(ev.CLOCK_SET, 3 * 10**9)
        lg.record(ev.CLOCK_SET, -(3 * 10**9))
        self.assertIsNone(lg.record(0, 1))
        self.assertIsNone(lg.record(256, 1))
        self.assertEqual([e[3] for e in read_all(lg)], [0x7FFFFFFF, -0x7FFFFFFF])
        self.assertIn("refused", "\n".join(self.lines))

    def test_port_filesystem(self):
        path = "/tmp/test_store_eventlog"
        try:
            lg = EventLog(path, 3, StepClock(T0), burst=0)
            lg.mount()
            for i in range(8):
                lg.record(ev.POWER_UP, i)
            lg2 = EventLog(path, 3, StepClock(T0), burst=0)
            lg2.mount()
            got = [e[3] for e in read_all(lg2)]
            self.assertEqual(got[-3:], [5, 6, 7])
            self.assertEqual(got, list(range(8 - len(got), 8)))
        finally:
            for s in (".0", ".1"):
                try:
                    os.remove(path + s)
                except OSError:
                    pass


class WrapTest(Base):
    def test_newest_capacity_always_kept(self):
        fs = MemFs()
        lg = make(fs, 5)
        for n in range(1, 31):
            lg.record(ev.BACKFILL_DONE, n)
            got = [e[3] for e in read_all(lg)]
            keep = min(n, 5)
            self.assertEqual(got[-keep:], list(range(n - keep + 1, n + 1)))
            self.assertEqual(got, list(range(n - len(got) + 1, n + 1)))  # contiguous, ordered
            self.assertLessEqual(len(got), 10)
            self.assertEqual(lg.count(), len(got))
            self.assertLessEqual(len(fs.files["ev.0"]), 5 * 24)
        self.assertEqual([e[3] for e in read_all(make(fs, 5))], got)
        self.assertEqual(lg.max_entries(), 10)

    def test_capacity_lowered(self):
        fs = MemFs()
        lg = make(fs, 8)
        for n in range(6):
            lg.record(ev.POWER_UP, n)
        lg = make(fs, 3)  # the current segment holds more than capacity: rotates next
        lg.record(ev.POWER_UP, 6)
        self.assertEqual([e[3] for e in read_all(lg)], [0, 1, 2, 3, 4, 5, 6])
        lg.record(ev.POWER_UP, 7)
        lg.record(ev.POWER_UP, 8)
        lg.record(ev.POWER_UP, 9)
        self.assertEqual([e[3] for e in read_all(lg)], [6, 7, 8, 9])


class PowerCutTest(Base):
    def test_cut_at_every_byte_never_loses_older_events(self):
        cap = 3
        cases = 0
        for before in range(0, 9):  # positions in the ring, rotations included
            for cut in range(0, 24):
                del self.lines[:]  # many mounts: keep the log sink small (MicroPython heap)
                fs = MemFs()
                lg = make(fs, cap)
                for n in range(before):
                    lg.record(ev.POWER_UP, n)
                acked = [(n + 1, T0, ev.POWER_UP, n) for n in range(before)]  # acknowledged
                fs.budget = cut
                with self.assertRaises(PowerCut):
                    lg.record(ev.CLOCK_SET, 999)
                fs.power_cycle()
                lg2 = make(fs, cap)
                got = read_all(lg2)
                keep = min(before, cap)
                # the newest `capacity` acknowledged events survive, intact and in order;
                # nothing else appears (the torn event is lost)
                self.assertEqual(got[len(got) - keep :] if keep else [], acked[len(acked) - keep :]
                                 if keep else [], (before, cut))
                for e in got:
                    self.assertIn(e, acked)
                # and the log goes on: new sequence numbers above every old one, read back
                s1 = lg2.record(ev.POWER_UP, 100)
                s2 = lg2.record(ev.POWER_UP, 101)
                self.assertGreater(s1, max([e[0] for e in acked] or [0]))
                after = read_all(make(fs, cap))
                self.assertEqual([e[3] for e in after[-2:]], [100, 101])
                seqs = [e[0] for e in after]
                self.assertEqual(seqs, sorted(set(seqs)))
                self.assertEqual(s2, s1 + 1)
                cases += 1
        self.assertEqual(cases, 9 * 24)

    def test_cut_while_padding(self):
        fs = MemFs()
        lg = make(fs, 4)
        lg.record(ev.POWER_UP, 1)
        fs.budget = 10
        with self.assertRaises(PowerCut):
            lg.record(ev.POWER_UP, 2)
        fs.power_cycle()
        fs.budget = 5  # the pad itself is cut
        with self.assertRaises(PowerCut):
            make(fs, 4)
        fs.power_cycle()
        lg = make(fs, 4)
        self.assertEqual(len(fs.files["ev.0"]) % 24, 0)
        lg.record(ev.POWER_UP, 3)
        self.assertEqual([e[3] for e in read_all(make(fs, 4))], [1, 3])

    def test_write_error_is_logged_and_repaired(self):
        fs = MemFs()
        lg = make(fs, 4)
        lg.record(ev.POWER_UP, 1)
        fs.fail_writes = True
        self.assertIsNone(lg.record(ev.POWER_UP, 2))
        fs.fail_writes = False
        fs.files["ev.0"] += b"\x00\x01\x02"  # as if the failed write had left a few bytes
        lg.record(ev.POWER_UP, 3)
        self.assertEqual([e[3] for e in read_all(make(fs, 4))], [1, 3])
        self.assertEqual(lg.stats["errors"], 1)
        self.assertIn("not stored", "\n".join(self.lines))


    def test_pad_failure_writes_nothing_until_padded(self):
        fs = MemFs()
        lg = make(fs, 4)
        for n in range(5):  # segment 0 full (0..3), segment 1: 4
            lg.record(ev.POWER_UP, n)
        fs.files["ev.1"] += b"\x01\x02\x03"  # a torn tail in the current segment
        fs.fail_writes = True
        lg = make(fs, 4)  # the pad fails
        self.assertIsNone(lg.record(ev.POWER_UP, 5))
        self.assertEqual(len(fs.files["ev.1"]), 27)  # nothing appended after the torn tail
        self.assertEqual(len(fs.files["ev.0"]), 96)  # and no rotation dropped the older events
        fs.fail_writes = False
        lg.record(ev.POWER_UP, 6)  # mounts again, pads, appends
        self.assertEqual([e[3] for e in read_all(make(fs, 4))], [0, 1, 2, 3, 4, 6])
        self.assertIn("torn tail not padded", "\n".join(self.lines))


class DamageTest(Base):
    def test_corrupt_record_skipped_and_logged(self):
        fs = MemFs()
        lg = make(fs, 8)
        for n in range(5):
            lg.record(ev.POWER_UP, n)
        fs.files["ev.0"][2 * 24 + 13] ^= 0x40
        lg2 = make(fs, 8)
        self.assertEqual([e[3] for e in read_all(lg2)], [0, 1, 3, 4])
        self.assertEqual(lg2.count(), 4)
        self.assertEqual(lg2.stats["bad"], 1)
        self.assertIn("ev.0: 1 bad slot(s) skipped", "\n".join(self.lines))
        lg2.record(ev.POWER_UP, 5)
        self.assertEqual([e[3] for e in read_all(make(fs, 8))], [0, 1, 3, 4, 5])

    def test_fuzzed_files_never_crash(self):
        rng = _Rng(7)
        good = bytearray(24)
        for case in range(300):
            del self.lines[:]
            fs = MemFs()
            for name in ("ev.0", "ev.1"):
                if rng.next(5) == 0:
                    continue  # missing file
                data = bytearray()
                for _ in range(rng.next(12)):
                    kind = rng.next(4)
                    if kind == 0:  # a valid record with any sequence number and time
                        el.pack(good, rng.next(1 << 30), 1 + rng.next(255),
                                rng.next(1 << 30) if rng.next(2) else None, rng.next(1 << 20))
                        data += good
                    elif kind == 1:
                        data += bytes([rng.next(256) for _ in range(24)])
                    elif kind == 2:
                        data += bytes([rng.next(256) for _ in range(rng.next(24))])
                    else:
                        el.pack(good, rng.next(50), 3, T0, 1)
                        good[rng.next(24)] ^= 1 << rng.next(8)
                        data += good
                fs.files[name] = data
            lg = make(fs, 1 + rng.next(6))
            got = read_all(lg)
            self.assertEqual(len(got), lg.count(), case)
            seq = lg.record(ev.POWER_UP, case)
            self.assertIsNotNone(seq)
            got2 = read_all(make(fs, lg.capacity))
            self.assertEqual(got2[-1], (seq, T0, ev.POWER_UP, case))
            self.assertGreater(seq, max([e[0] for e in got] or [0]))
            self.assertEqual(fs.open_files, 0)


class FloodTest(Base):
    def test_burst_then_suppressed_per_code(self):
        fs = MemFs()
        lg = EventLog("ev", 16, StepClock(T0), fs=fs, burst=3, refill_s=3600)
        lg.mount()
        stored = [lg.record(ev.ASSOCIATION_FAILED, 16) for _ in range(5)]
        self.assertEqual([s is not None for s in stored], [True, True, True, False, False])
        self.assertIsNotNone(lg.record(ev.CLOCK_SET, 5))  # another code has its own bucket
        self.assertEqual(lg.stats["suppressed"], 2)
        text = "\n".join(self.lines)
        self.assertEqual(text.count("repeats too often"), 1)
        lg._tokens[ev.ASSOCIATION_FAILED] = 1  # as after the refill period
        self.assertIsNotNone(lg.record(ev.ASSOCIATION_FAILED, 16))
        self.assertIn("2 events of code 8 were not stored", "\n".join(self.lines))


    def test_zero_refill_period_is_one_second(self):
        lg = EventLog("ev", 16, StepClock(T0), fs=MemFs(), burst=1, refill_s=0)
        lg.mount()
        lg._refill_at = ticks_add(lg._refill_at, -5000)  # 5 s ago: refills, no division by 0
        self.assertIsNotNone(lg.record(ev.POWER_UP, 1))
        self.assertEqual(lg.refill_ms, 1000)


class CursorTest(Base):
    def test_read_in_current_segment_survives_one_rotation(self):
        fs = MemFs()
        lg = make(fs, 3)
        for n in range(4):  # segment 0: 0 1 2, segment 1: 3
            lg.record(ev.POWER_UP, n)
        c = lg.cursor()
        self.assertEqual([lg.read(c)[3] for _ in range(2)], [0, 1])
        lg.record(ev.POWER_UP, 4)
        lg.record(ev.POWER_UP, 5)
        lg.record(ev.POWER_UP, 6)  # rotation: 0 1 2 dropped
        with self.assertRaises(EventsGone):
            lg.read(c)
        c = lg.cursor()
        self.assertEqual(lg.read(c)[3], 3)
        lg.close(c)
        lg.record(ev.POWER_UP, 7)
        lg.record(ev.POWER_UP, 8)
        lg.record(ev.POWER_UP, 9)  # rotation: 3 4 5 dropped
        with self.assertRaises(EventsGone):
            lg.read(c)
        c = lg.cursor()
        self.assertEqual(lg.read(c)[3], 6)  # older segment now: 6 7 8
        self.assertEqual(lg.read(c)[3], 7)
        self.assertEqual(lg.read(c)[3], 8)
        self.assertEqual(lg.read(c)[3], 9)  # current: 9
        lg.close(c)
        lg.record(ev.POWER_UP, 10)
        lg.record(ev.POWER_UP, 11)
        lg.record(ev.POWER_UP, 12)  # rotation: 6 7 8 dropped; 9 10 11 now older
        self.assertEqual(lg.read(c)[3], 10)  # the cursor was in the current segment: it goes on
        self.assertEqual([lg.read(c)[3], lg.read(c)[3]], [11, 12])
        self.assertIsNone(lg.read(c))
        lg.close(c)
        self.assertEqual(fs.open_files, 0)


if __name__ == "__main__":
    unittest.main()
