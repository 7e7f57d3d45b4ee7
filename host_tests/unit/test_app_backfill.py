import asyncio
import unittest

from meter_fakes import FakeMeter, StepClock

from firmware import events, log, timeutil
from firmware.app.backfill import BackfillPlanner
from firmware.app.config import DEFAULTS
from firmware.app.views import MeterView
from firmware.hal.norflash import NorFlash
from firmware.store import record
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

# 2025-04-10 12:10 JST
NOW = timeutil.t2k_from_fields(2025, 4, 10, 3, 10, 0)


def run(coro):
    return asyncio.run(coro)


class BackfillTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.clock = StepClock(NOW)
        self.meter = FakeMeter(self.clock.now_t2k, retention=3)
        self.flash = NorFlash(16, block_size=1024)
        self.store = IntervalStore(FlashLog(self.flash), max_meters=2)
        self.cfg = dict(DEFAULTS["meter"])
        self.p = BackfillPlanner(self.clock, self.meter, self.store, 0, self.cfg)
        self.p.unit_code = 0x01

    def tearDown(self):
        log.set_sink(None)

    def window(self):
        return self.p.window(NOW, self.meter.retention + 1)

    def test_fills_every_gap_of_the_history_window_exactly(self):
        first, last = self.window()
        for s in range(first, last + 1, 3):  # some slots came in live
            self.store.put(0, s, *self.meter.model.at_slot(s), 0x01, "fixed")
        got = []
        self.p.event = lambda code, detail: got.append((code, detail))
        filled = run(self.p.run_once())
        self.assertGreater(filled, 100)
        self.assertEqual(got, [(events.BACKFILL_DONE, filled)])
        self.assertEqual(run(self.p.run_once()), 0)
        self.assertEqual(len(got), 1)  # a pass that fills nothing is not an event
        rows = list(self.store.rows(0, first, last))
        self.assertEqual([r[0] for r in rows], list(range(first, last + 1)))
        for slot, fwd, rev, _unit, src, _flags in rows:
            self.assertEqual((fwd, rev), self.meter.model.at_slot(slot))
            want = record.SOURCE_FIXED if (slot - first) % 3 == 0 else record.SOURCE_HISTORY
            self.assertEqual(src, want)
        # one history read per day that had gaps (4 days: today and 3 back)
        self.assertEqual(sorted(self.meter.history_reads), [0, 1, 2, 3])

    def test_window_leaves_the_slot_loop_its_boundaries(self):
        # Worked out by hand, not by window(): NOW is 12:10 JST. The 30-minute loop owns the
        # 12:00 boundary until it gives up (give_up_after_s later), so backfill ends at 11:30;
        # one second after the loop gives up, 12:00 is backfill's too. Today starts 00:00 JST.
        b = timeutil.t2k_from_fields(2025, 4, 10, 3, 0, 0)  # 12:00 JST
        midnight = timeutil.t2k_from_fields(2025, 4, 9, 15, 0, 0)  # 00:00 JST
        give_up = self.cfg["give_up_after_s"]
        slot = timeutil.slot_of_t2k
        self.assertEqual(self.p.window(NOW, 1), (slot(midnight), slot(b) - 1))
        self.assertEqual(self.p.window(b + give_up, 1)[1], slot(b) - 1)
        self.assertEqual(self.p.window(b + give_up + 1, 1)[1], slot(b))
        # a pass leaves 12:00 to the loop, though the meter's history already has it
        self.assertEqual(run(self.p.run_once(1)), slot(b) - slot(midnight))
        self.assertIsNone(self.store.get(0, slot(b)))
        self.assertEqual(self.store.get(0, slot(b) - 1)[:2], self.meter.model.at_slot(slot(b) - 1))

    def test_meter_forgotten_during_a_pass_stores_nothing_more(self):
        # A meter reboot or swap (MeterChannel calls forget_meter) while a pass waits for the
        # meter: the day being read may be another meter's history. Before, the next retention
        # check raised TypeError (int > None) and the pass died as an unexpected error.
        reads = []
        real = self.meter.read_history

        async def read_history(d):
            reads.append(d)
            if len(reads) == 2:
                self.p.forget_meter()
            return await real(d)

        self.meter.read_history = read_history
        filled = run(self.p.run_once())
        self.assertEqual(len(reads), 2)
        self.assertEqual(self.p.stats["meter_changed"], 1)
        self.assertEqual(self.p.stats["unexpected"], 0)
        first, last = self.window()
        stored = [r[0] for r in self.store.rows(0, first, last)]
        # only the first day read was stored; the second (read across the swap) was not
        self.assertEqual(filled, len(stored))
        days = set(self.p._local_days(timeutil.t2k_of_slot(s)) for s in stored)
        self.assertEqual(len(days), 1)
        # the next pass asks the meter's history depth again, then fills the rest
        self.assertGreater(run(self.p.run_once()), 0)
        self.assertEqual(self.p.stats["unexpected"], 0)

    def test_backfilled_values_say_so_in_the_profile_status(self):
        run(self.p.run_once())
        view = MeterView(self.store, 0)
        statuses = set(r[3] for r in view.rows(0, 1 << 30))
        self.assertEqual(statuses, {0x40})

    def test_idempotent_and_no_new_flash_writes(self):
        run(self.p.run_once())
        programmed = self.flash.bytes_programmed
        self.assertEqual(run(self.p.run_once()), 0)
        self.assertEqual(self.flash.bytes_programmed, programmed)

    def test_no_data_slots_stay_missing(self):
        first, last = self.window()
        self.meter.nodata = {first + 5, first + 6}
        run(self.p.run_once())
        missing = list(self.store.missing(0, first, last))
        self.assertEqual(missing, [first + 5, first + 6])
        self.assertEqual(self.p.stats["unavailable"], 2)

    def test_slots_beyond_the_meter_history_stay_missing(self):
        run(self.p.run_once(horizon_days=10))  # asks for more than the meter keeps
        first, _last = self.p.window(NOW, 10)
        hist_first, _ = self.window()
        self.assertIsNone(self.store.get(0, hist_first - 1))
        self.assertEqual(self.store.first_slot(0), hist_first)
        self.assertGreater(hist_first, first)

    def test_wrong_echo_stores_nothing_and_is_retried(self):
        self.meter.wrong_echo = 1  # another controller moved 0xD5 between SetC and Get
        self.assertEqual(run(self.p.run_once()), 0)
        self.assertEqual(self.p.stats["errors"], 1)
        self.assertIsNone(self.store.last_slot(0))
        self.assertIn("pass failed", "\n".join(self.lines))
        self.assertGreater(run(self.p.run_once()), 0)  # the next pass succeeds

    def test_meter_date_change_during_the_pass_discards_that_day(self):
        self.meter.date_jump_after_history = True
        filled = run(self.p.run_once())
        self.assertEqual(filled, 0)
        self.assertEqual(self.p.stats["date_moved"], 1)
        self.assertIsNone(self.store.last_slot(0))

    def test_day_numbers_follow_the_meter_date_not_ours(self):
        # our clock 00:05 JST, the meter's 23:55 JST the day before: its day 0 is our yesterday
        t = timeutil.t2k_from_fields(2025, 4, 9, 15, 5, 0)  # 2025-04-10 00:05 JST
        self.clock.t = t
        self.meter.clock_offset_s = -600
        self.cfg["give_up_after_s"] = 60
        run(self.p.run_once(horizon_days=2))
        for slot, fwd, rev, _u, _s, _f in self.store.rows(0, 0, 1 << 30):
            self.assertEqual((fwd, rev), self.meter.model.at_slot(slot))
        self.assertGreater(self.store.count(0), 40)

    def test_silent_meter_is_logged_not_raised(self):
        self.meter.silent = True
        self.assertEqual(run(self.p.run_once()), 0)
        self.assertEqual(self.p.stats["errors"], 1)

    def test_a_bug_is_logged_with_its_traceback_counted_and_survived(self):
        def broken(day):
            raise KeyError(day)
        real = self.meter.read_history
        self.meter.read_history = broken
        self.assertEqual(run(self.p.run_once()), 0)
        self.assertEqual((self.p.stats["errors"], self.p.stats["unexpected"]), (1, 1))
        self.assertTrue(any(ln.startswith("ERROR") and "KeyError" in ln for ln in self.lines))
        self.assertTrue(any("test_app_backfill" in ln for ln in self.lines))  # the traceback
        self.meter.read_history = real
        self.assertGreater(run(self.p.run_once()), 0)  # the next pass fills the gaps

    def test_meter_errors_are_expected_ones(self):
        self.meter.silent = True
        run(self.p.run_once())
        self.assertEqual((self.p.stats["errors"], self.p.stats["unexpected"]), (1, 0))
        self.assertFalse(any(ln.startswith("ERROR") for ln in self.lines))

    def test_meter_without_history(self):
        self.meter.retention = 0xFFFF
        self.assertEqual(run(self.p.run_once()), 0)
        self.assertEqual(run(self.p.run_once()), 0)
        self.assertEqual(sum("no history depth" in x for x in self.lines), 1)  # said once
        self.assertEqual(self.p.stats["errors"], 2)  # the caller keeps the whole window due

    def test_history_depth_missing_once_does_not_switch_backfill_off(self):
        # The soak (seed 49149): after a 2-day silence the client held 0xD3 back as "poison";
        # the planner cached "no history" and never backfilled that meter again (144 slots).
        days = self.meter.retention
        self.meter.retention = 0xFFFF  # 0xD3 not available for now
        self.assertEqual(run(self.p.run_once()), 0)
        self.meter.retention = days
        filled = run(self.p.run_once())
        first, last = self.window()
        self.assertEqual(filled, last - first + 1)
