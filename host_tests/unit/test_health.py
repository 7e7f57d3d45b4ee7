# Progress watchdog: the hardware WDT is fed only while every watched task makes progress.
import asyncio
import unittest

from firmware import health, log, timeutil
from firmware.app.metering import SlotPoller
from firmware.compat import sleep_ms, ticks_diff, ticks_ms
from firmware.hal.clock import CalendarClock


class _Ticks:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def _diff(a, b):
    return a - b


class HealthTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.now = _Ticks()
        self.h = health.Health(ticks=self.now, diff=_diff)

    def tearDown(self):
        log.set_sink(None)

    def test_not_watched_before_the_first_beat(self):
        # e.g. the capture loop of a meter side that waits for the LAN for hours
        self.h.expect("meter0", 1000)
        self.now.t = 10 * 3600 * 1000
        self.assertTrue(self.h.check())

    def test_stall_detected_after_the_limit_latched_and_said_once(self):
        self.h.expect("meter0", 1000)
        self.h.expect("radio", 5000)
        self.h.beat("meter0")
        self.h.beat("radio")
        self.now.t = 1000
        self.assertTrue(self.h.check())
        self.now.t = 1001
        self.assertFalse(self.h.check())
        self.h.beat("meter0")  # too late: the device resets
        self.now.t = 1500
        self.assertFalse(self.h.check())
        stalled = [line for line in self.lines if "meter0" in line]
        self.assertEqual(len(stalled), 1)
        self.assertIn("ERROR", stalled[0])
        self.assertEqual(self.h.stalled, "meter0")

    def test_parked_task_is_not_stalled(self):
        parked = [False]
        self.h.expect("radio", 1000, parked=lambda: parked[0])
        self.h.beat("radio")
        parked[0] = True  # waiting for credentials / in back-off / serving: legitimate waits
        self.now.t = 3600 * 1000
        self.assertTrue(self.h.check())
        parked[0] = False  # joining again: bounded by the module's timeouts
        self.now.t += 1000
        self.assertTrue(self.h.check())
        self.now.t += 1
        self.assertFalse(self.h.check())

    def test_restarted_task_rests_until_its_next_beat(self):
        self.h.expect("meter0", 1000)
        self.h.beat("meter0")
        self.h.rest("meter0")  # its supervisor restarts it (after a back-off)
        self.now.t = 60000
        self.assertTrue(self.h.check())
        self.h.beat("meter0")
        self.now.t = 61001
        self.assertFalse(self.h.check())

    def test_unknown_names_are_ignored(self):
        self.h.beat("nobody")
        self.now.t = 10 ** 6
        self.assertTrue(self.h.check())


class _Reader:
    """A meter reader that answers at once, or hangs (a task stuck in I/O) when told to."""

    def __init__(self):
        self.hang = False
        self._never = asyncio.Event()

    async def read_unit(self):
        if self.hang:
            await self._never.wait()
        return 0x01

    async def read_fixed_time(self):
        if self.hang:
            await self._never.wait()
        return self.boundary, 1000, 20


class _Sink:
    def __init__(self):
        self.slots = set()

    def has(self, meter, slot):
        return slot in self.slots

    def store(self, meter, slot, fwd, rev, unit, source, flags):
        self.slots.add(slot)


_LIMIT_MS = 1000
_RUN_MS = 2500


class CaptureLoopWatchdogTest(unittest.TestCase):
    """The real capture loop (SlotPoller.run) beats; a simulated housekeeping feeds a fake WDT
    every 100 ms only while health.check() holds."""

    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.saved = health.HEALTH
        health.HEALTH = health.Health()

    def tearDown(self):
        log.set_sink(None)
        health.HEALTH = self.saved

    def run_loop(self, hang_after_ms):
        clock = CalendarClock()
        b = timeutil.t2k_from_fields(2025, 4, 1, 3, 30, 0)
        clock.set_t2k(b + 100)
        reader = _Reader()
        reader.boundary = b
        cfg = {"read_delay_s": 60, "retry_every_s": 120, "give_up_after_s": 1740,
               "tz_offset_min": 540}
        poller = SlotPoller(clock, reader, _Sink(), 0, cfg, tag="meter0")
        health.HEALTH.expect("meter0", _LIMIT_MS)
        feeds = []
        out = {}

        async def housekeeping():
            t0 = ticks_ms()
            while ticks_diff(ticks_ms(), t0) < _RUN_MS:
                el = ticks_diff(ticks_ms(), t0)
                if hang_after_ms is not None and el >= hang_after_ms and not reader.hang:
                    reader.hang = True
                    clock.set_t2k(b + 1800 + 100)  # the next boundary's read now hangs
                    out["hang_at"] = el
                if health.HEALTH.check():
                    feeds.append(el)
                await sleep_ms(100)

        async def main():
            task = asyncio.create_task(poller.run())
            await housekeeping()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

        asyncio.run(main())
        return feeds, out

    def test_healthy_capture_loop_keeps_the_watchdog_fed(self):
        feeds, _ = self.run_loop(None)
        self.assertGreaterEqual(feeds[-1], _RUN_MS - 300)  # still feeding at the end
        self.assertEqual(health.HEALTH.stalled, None)

    def test_stalled_capture_loop_ends_in_no_feed_within_the_bound(self):
        feeds, out = self.run_loop(600)
        # last beat <= hang + one nap (500 ms); detection <= last beat + limit + one check period
        bound = out["hang_at"] + 500 + _LIMIT_MS + 100 + 150
        self.assertLess(feeds[-1], bound)
        self.assertLess(feeds[-1], _RUN_MS - 300)  # and no feeding after it
        self.assertEqual(health.HEALTH.stalled, "meter0")
        self.assertIn("meter0", "\n".join(self.lines))
