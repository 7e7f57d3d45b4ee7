# Clock handling around the calendar clock (docs/clock.md): a step that arrives in the middle of
# a capture, the crossed slots, the listener's events and the terminal's status line.
import asyncio
import gc
import unittest

from clock_fakes import make_clock
from meter_fakes import FakeMeter

from firmware import events, log, timeutil
from firmware.app.backfill import BackfillPlanner
from firmware.app.config import DEFAULTS
from firmware.app.metering import SlotPoller
from firmware.app.terminal import Terminal, crossed_slots
from firmware.app.views import StoreSink
from firmware.hal.norflash import NorFlash
from firmware.store import record
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

# 2025-04-10 12:00 JST
B = timeutil.t2k_from_fields(2025, 4, 10, 3, 0, 0)


class Box:
    """The parts of a Terminal its clock code uses (a whole Terminal needs a HAL)."""

    _on_clock_set = Terminal._on_clock_set
    _configure_clock = Terminal._configure_clock
    clock_status = Terminal.clock_status
    _log_status = Terminal._log_status
    session = None


def box_for(clock, channels=()):
    box = Box()
    box.cfg = {"meter": {"tz_offset_min": 540}, "clock": dict(DEFAULTS["clock"])}
    box.clock = clock
    box.events = []
    box.event = lambda code, detail=0: box.events.append((code, detail))
    box.channels = channels
    clock.add_listener(box._on_clock_set)
    return box


class StepDuringCaptureMeter(FakeMeter):
    """The smart meter's set arrives while the fixed-time value is being read."""

    def __init__(self, now, clock, to):
        FakeMeter.__init__(self, now)
        self.clock = clock
        self.to = to

    async def read_fixed_time(self):
        if self.to is not None:
            self.clock.set_t2k(self.to)
            self.to = None
        return await FakeMeter.read_fixed_time(self)


class Channel:
    def __init__(self, poller, planner):
        self.poller = poller
        self.planner = planner
        self.said = []

    def on_event(self, name):
        self.said.append(name)


class StepTest(unittest.TestCase):
    def setUp(self):
        gc.collect()
        log.set_sink(lambda line: None)
        self.clock, self.ticks = make_clock()
        self.store = IntervalStore(FlashLog(NorFlash(8, block_size=1024)), max_meters=1)
        self.cfg = dict(DEFAULTS["meter"])

    def tearDown(self):
        log.set_sink(None)

    def true_now(self):
        return B + 61 + self.ticks.ms // 1000

    def build(self, meter):
        self.poller = SlotPoller(self.clock, meter, StoreSink(self.store), 0, self.cfg)
        self.planner = BackfillPlanner(self.clock, meter, self.store, 0, self.cfg)
        self.ch = Channel(self.poller, self.planner)
        self.box = box_for(self.clock, (self.ch,))

    def test_a_step_waits_until_the_capture_is_stored(self):
        # the terminal is 2 h slow; the set arrives during the read of the 12:00 value
        meter = StepDuringCaptureMeter(self.true_now, self.clock, None)
        self.build(meter)
        self.clock.set_t2k(self.true_now())
        meter.to = self.true_now() + 2 * 3600
        asyncio.run(self.poller.step())
        slot = timeutil.slot_of_t2k(B)
        rec = self.store.get(0, slot)
        # stored under the meter's stamp, before the step: no clock-adjusted flag
        self.assertEqual(rec[:2], meter.model.at_slot(slot))
        self.assertEqual(rec[4] & record.FLAG_CLOCK_ADJUSTED, 0)
        # then the step: an event, the next live row flagged, the crossed boundaries re-read
        self.assertEqual(self.clock.now_t2k(), B + 61 + 2 * 3600)
        self.assertEqual(self.box.events[-1], (events.CLOCK_SET, 7200))
        self.assertEqual(self.poller.pending_flags, record.FLAG_CLOCK_ADJUSTED)
        self.assertIn("gave_up", self.ch.said)
        self.assertTrue(self.planner.adjusted(slot + 1))
        self.assertTrue(self.planner.adjusted(slot + 4))
        self.assertFalse(self.planner.adjusted(slot))
        self.assertFalse(self.planner.adjusted(slot + 5))

    def test_slew_and_routine_sync(self):
        meter = FakeMeter(self.true_now)
        self.build(meter)
        self.clock.set_t2k(B)
        self.assertEqual(self.box.events, [(events.CLOCK_SET, -2147483648)])
        self.clock.set_t2k(B + 5)  # routine: no event, no flag
        self.assertEqual(len(self.box.events), 1)
        self.assertEqual(self.poller.pending_flags, 0)
        self.clock.set_t2k(B - 40)  # slewed, beyond adjust_flag_s: an event, the flag
        self.assertEqual(self.box.events[-1], (events.CLOCK_SLEW, -40))
        self.assertEqual(self.poller.pending_flags, record.FLAG_CLOCK_ADJUSTED)
        self.assertEqual(self.planner._nadj, 0)  # a slew crosses nothing

    def test_bad_clock_config_falls_back_to_defaults(self):
        lines = []
        log.set_sink(lines.append)
        box = box_for(self.clock)
        box.cfg["clock"]["slew_max_s"] = -1
        box.cfg["clock"]["slew_div"] = 1
        box._configure_clock(box.cfg["clock"])
        self.assertEqual(self.clock.slew_max_s, DEFAULTS["clock"]["slew_max_s"])
        self.assertEqual(self.clock.slew_div, DEFAULTS["clock"]["slew_div"])
        self.assertEqual(len([x for x in lines if "clock.slew" in x]), 2)


class StatusLineTest(unittest.TestCase):
    def tearDown(self):
        log.set_sink(None)

    def test_terminal_reports_the_clock_status(self):
        clock, ticks = make_clock(doubtful_after_s=3600)
        box = box_for(clock)
        lines = []
        log.set_sink(lines.append)
        self.assertEqual(box.clock_status(), "invalid")
        box._log_status()
        self.assertIn("clock=invalid", lines[-1])
        clock.set_t2k(B)
        self.assertEqual(box.clock_status(), "ok")
        ticks.ms += 3601 * 1000
        self.assertEqual(box.clock_status(), "doubtful")
        box._log_status()
        self.assertIn("clock=doubtful", lines[-1])


class CrossedTest(unittest.TestCase):
    def test_crossed_slots(self):
        s = timeutil.slot_of_t2k(B)
        self.assertEqual(crossed_slots(B - 10, B + 10), (s, s))
        self.assertEqual(crossed_slots(B + 10, B - 10), (s, s))
        self.assertEqual(crossed_slots(B, B + 1799), (s + 1, s))  # none: B was passed before
        self.assertEqual(crossed_slots(B - 1, B), (s, s))
        self.assertEqual(crossed_slots(B - 1, B + 86400), (s, s + 48))
        # clipped to `span` slots either side of the new time
        self.assertEqual(crossed_slots(B - 10 * 86400, B + 1, 96), (s - 96, s))
        self.assertEqual(crossed_slots(B + 1, B - 10 * 86400, 96), (s - 479, s - 384))

    def test_ranges_are_bounded_and_pruned(self):
        clock, _t = make_clock()
        store = IntervalStore(FlashLog(NorFlash(8, block_size=1024)), max_meters=1)
        p = BackfillPlanner(clock, None, store, 0, dict(DEFAULTS["meter"]))
        for k in range(6):
            p.mark_adjusted(100 + 10 * k, 101 + 10 * k)
        self.assertEqual(p._nadj, 4)
        self.assertFalse(p.adjusted(101) or p.adjusted(111))  # the oldest two were dropped
        self.assertTrue(p.adjusted(121) and p.adjusted(151))
        self.assertFalse(p.adjusted(135))  # never merged: nothing between ranges is flagged
        for s in range(120, 122):
            store.put(0, s, 1, 1, 1, "history")
        p._prune_adjusted(0, 1000)  # 120..121 all stored: forgotten
        self.assertFalse(p.adjusted(120))
        p._prune_adjusted(135, 1000)  # 130..131 fell out of the window
        self.assertFalse(p.adjusted(130))
        self.assertTrue(p.adjusted(141) and p.adjusted(150))


if __name__ == "__main__":
    unittest.main()
