import asyncio
import unittest

from firmware import events, log, timeutil
from firmware.app.config import DEFAULTS
from firmware.app.metering import SlotPoller
from firmware.hal.clock import CalendarClock
from firmware.meter.drmeter import MeterTimeout, UnitChanged


class FakeTicks:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms


class FakeReader:
    def __init__(self):
        self.answers = []  # list of (stamp, fwd, rev) or exceptions, consumed in order
        self.calls = 0
        self.unit = 0x01

    async def read_unit(self):
        return self.unit

    async def read_fixed_time(self):
        self.calls += 1
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


class FakeSink:
    def __init__(self):
        self.rows = {}

    def has(self, meter, slot):
        return (meter, slot) in self.rows

    def store(self, meter, slot, fwd, rev, unit, source, flags):
        self.rows[(meter, slot)] = (fwd, rev, unit, source, flags)


T0 = timeutil.t2k_from_fields(2024, 4, 1, 3, 0, 0)  # a boundary (12:00 JST)


def run(coro):
    return asyncio.run(coro)


class StoreSinkWithUnits(FakeSink):
    """A sink that knows the unit of the newest record (StoreSink.last_unit)."""

    def __init__(self, last_units):
        FakeSink.__init__(self)
        self.last_units = last_units

    def last_unit(self, meter):
        return self.last_units.get(meter)


class UnitChangeEventTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)
        self.clock = CalendarClock(ticks=FakeTicks())
        self.reader = FakeReader()
        self.events = []
        self.cfg = dict(DEFAULTS["meter"])

    def tearDown(self):
        log.set_sink(None)

    def poller(self, sink, meter=0):
        return SlotPoller(self.clock, self.reader, sink, meter, self.cfg,
                          event=lambda code, detail: self.events.append((code, detail)))

    def test_unit_change_mid_run_is_an_event_and_records_keep_their_unit(self):
        sink = FakeSink()
        p = self.poller(sink)
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append((T0, 1000, 20))
        run(p.step())
        self.assertEqual(self.events, [])  # the first unit seen is no change
        # the meter now counts in 0.01 kWh: the client says so, the unit is read again
        self.reader.unit = 0x02
        self.reader.answers += [UnitChanged("stored unit changed"), (T0 + 1800, 10001, 201)]
        self.clock.set_t2k(T0 + 1800 + 61)
        run(p.step())
        self.assertEqual(self.events, [])
        self.clock.set_t2k(T0 + 1800 + 61 + self.cfg["retry_every_s"])  # the retry is due
        run(p.step())
        self.assertEqual(self.events, [(events.UNIT_CHANGE, 0x02)])
        self.assertEqual(sink.rows[(0, timeutil.slot_of_t2k(T0))][2], 0x01)
        self.assertEqual(sink.rows[(0, timeutil.slot_of_t2k(T0 + 1800))][2], 0x02)

    def test_same_unit_read_again_is_no_event(self):
        p = self.poller(FakeSink())
        self.clock.set_t2k(T0 + 61)
        self.reader.answers += [(T0, 1000, 20)]
        run(p.step())
        p.unit_code = None  # e.g. the meter rebooted: unit read again, unchanged
        self.reader.answers += [(T0 + 1800, 1001, 20)]
        self.clock.set_t2k(T0 + 1800 + 61)
        run(p.step())
        self.assertEqual(self.events, [])

    def test_change_while_the_terminal_was_off_is_seen_from_the_store(self):
        self.reader.unit = 0x0A
        p = self.poller(StoreSinkWithUnits({2: 0x01}), meter=2)
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append((T0, 5, 0))
        run(p.step())
        self.assertEqual(self.events, [(events.UNIT_CHANGE, 2 * 256 + 0x0A)])

    def test_store_sink_knows_the_newest_records_unit(self):
        from firmware.app.views import StoreSink
        from firmware.hal.norflash import NorFlash
        from firmware.store.flashlog import FlashLog
        from firmware.store.intervals import IntervalStore

        sink = StoreSink(IntervalStore(FlashLog(NorFlash(16, block_size=1024)), max_meters=2))
        self.assertIsNone(sink.last_unit(1))
        slot = timeutil.slot_of_t2k(T0)
        sink.store(1, slot + 1, 10, 1, 0x02, "fixed", 0)
        sink.store(1, slot, 9, 1, 0x01, "history", 0)  # older, stored later (backfill)
        self.assertEqual(sink.last_unit(1), 0x02)
        self.assertIsNone(sink.last_unit(0))
        self.reader.unit = 0x0A
        p = self.poller(sink, meter=1)
        self.clock.set_t2k(T0 + 2 * 1800 + 61)
        self.reader.answers.append((T0 + 2 * 1800, 5, 0))
        run(p.step())
        self.assertEqual(self.events, [(events.UNIT_CHANGE, 256 + 0x0A)])

    def test_no_event_without_a_previous_unit(self):
        p = self.poller(StoreSinkWithUnits({}))
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append((T0, 5, 0))
        run(p.step())
        self.assertEqual(self.events, [])
        self.assertEqual(p.stats["stored"], 1)


class SlotPollerTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)
        self.ticks = FakeTicks()
        self.clock = CalendarClock(ticks=self.ticks)
        self.reader = FakeReader()
        self.sink = FakeSink()
        self.cfg = dict(DEFAULTS["meter"])
        self.p = SlotPoller(self.clock, self.reader, self.sink, 0, self.cfg)

    def tearDown(self):
        log.set_sink(None)

    def test_waits_for_clock(self):
        self.assertEqual(run(self.p.step()), 500)
        self.assertEqual(self.reader.calls, 0)

    def test_stores_matching_boundary(self):
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append((T0, 1000, 20))
        run(self.p.step())
        slot = timeutil.slot_of_t2k(T0)
        self.assertEqual(self.sink.rows[(0, slot)], (1000, 20, 1, "fixed", 0))

    def test_stale_stamp_is_retried_not_stored(self):
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append((T0 - 1800, 990, 20))
        run(self.p.step())
        self.assertEqual(self.sink.rows, {})
        self.assertEqual(self.p.stats["retries"], 1)
        # before the retry time: no new read
        run(self.p.step())
        self.assertEqual(self.reader.calls, 1)
        # after retry_every_s the value is there
        self.clock.set_t2k(T0 + 61 + self.cfg["retry_every_s"])
        self.reader.answers.append((T0, 1000, 20))
        run(self.p.step())
        self.assertIn((0, timeutil.slot_of_t2k(T0)), self.sink.rows)

    def test_no_data_sentinel_not_stored(self):
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append((T0, None, 20))
        run(self.p.step())
        self.assertEqual(self.sink.rows, {})

    def test_read_error_survives(self):
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append(OSError("timeout"))
        run(self.p.step())
        self.assertEqual(self.p.stats["errors"], 1)
        self.assertEqual(self.sink.rows, {})

    def test_unit_changed_reads_the_unit_again(self):
        self.clock.set_t2k(T0 + 61)
        self.p.unit_code = 0x02
        self.reader.answers.append(UnitChanged("stored unit changed"))
        run(self.p.step())
        self.assertIsNone(self.p.unit_code)  # read_unit() again before the next value
        self.assertEqual((self.p.stats["errors"], self.p.stats["unexpected"]), (1, 0))

    def test_a_bug_is_logged_with_its_traceback_counted_and_survived(self):
        lines = []
        log.set_sink(lines.append)
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append(TypeError("unsupported operand"))
        self.reader.answers.append((T0, 10, 20))
        self.assertGreater(run(self.p.step()), 0)  # the pass ends normally
        self.assertEqual((self.p.stats["errors"], self.p.stats["unexpected"]), (1, 1))
        self.assertEqual(self.p.unit_code, 0x01)  # a bug is not a unit change
        self.assertTrue(any(ln.startswith("ERROR") and "TypeError" in ln for ln in lines))
        self.assertTrue(any("test_app_metering" in ln for ln in lines))  # the traceback
        self.clock.set_t2k(T0 + 61 + self.cfg["retry_every_s"])
        run(self.p.step())  # the next pass reads again and stores
        self.assertEqual(self.sink.rows[(0, timeutil.slot_of_t2k(T0))][:2], (10, 20))

    def test_read_lines_give_slot_times_in_the_meters_time_zone(self):
        lines = []
        log.set_sink(lines.append)
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append(MeterTimeout("no reply"))
        run(self.p.step())
        self.clock.set_t2k(T0 + 61 + self.cfg["retry_every_s"])
        self.reader.answers.append((T0 - 1800, 10, 20))
        run(self.p.step())
        text = "\n".join(lines)
        self.assertIn("read for 2024-04-01T12:00:00+09:00 failed: MeterTimeout", text)
        self.assertIn("stamped 2024-04-01T11:30:00+09:00, want 2024-04-01T12:00:00+09:00", text)
        self.assertNotIn("Z ", text)
        self.assertNotIn("Z:", text)

    def test_gives_up_after_limit(self):
        self.clock.set_t2k(T0 + self.cfg["give_up_after_s"] + 1)
        run(self.p.step())
        self.assertEqual(self.reader.calls, 0)
        self.assertEqual(self.p.stats["given_up"], 1)

    def test_gives_up_once_per_slot(self):
        events = []
        self.p.on_event = events.append
        self.clock.set_t2k(T0 + self.cfg["give_up_after_s"] + 1)
        for _ in range(5):
            run(self.p.step())
        self.assertEqual(self.p.stats["given_up"], 1)
        self.assertEqual(events, ["gave_up"])

    def test_boundaries_passed_during_a_long_read_ask_for_a_full_backfill(self):
        # a read that straddles hours of meter silence: the slots in between were never given
        # up on by this loop, so backfill must be told (a 1-day pass would miss yesterday's)
        events = []
        self.p.on_event = events.append
        self.clock.set_t2k(T0 + 61)
        self.reader.answers.append((T0, 1000, 20))
        run(self.p.step())
        self.assertEqual(events, ["stored"])
        self.clock.set_t2k(T0 + 20 * 1800 + 61)
        self.reader.answers.append((T0 + 20 * 1800, 1100, 20))
        run(self.p.step())
        self.assertEqual(events, ["stored", "gave_up", "stored"])
        # the next boundary in turn is no gap
        self.clock.set_t2k(T0 + 21 * 1800 + 61)
        self.reader.answers.append((T0 + 21 * 1800, 1105, 20))
        run(self.p.step())
        self.assertEqual(events[-1], "stored")
        self.assertEqual(events.count("gave_up"), 1)

    def test_flags_apply_to_next_record_only(self):
        self.clock.set_t2k(T0 + 61)
        self.p.flag_next(0x20)
        self.reader.answers.append((T0, 1000, 20))
        run(self.p.step())
        self.clock.set_t2k(T0 + 1800 + 61)
        self.reader.answers.append((T0 + 1800, 1005, 20))
        run(self.p.step())
        self.assertEqual(self.sink.rows[(0, timeutil.slot_of_t2k(T0))][4], 0x20)
        self.assertEqual(self.sink.rows[(0, timeutil.slot_of_t2k(T0 + 1800))][4], 0)


class CalendarClockTest(unittest.TestCase):
    def test_accelerated_and_reanchored_across_tick_wrap(self):
        ticks = FakeTicks()
        ticks.ms = (1 << 30) - 5000  # just before the ESP32 ticks wrap
        period = 1 << 30  # the ESP32's TICKS_PERIOD; the unix port's is far larger

        def diff30(a, b):
            return ((a - b + period // 2) & (period - 1)) - period // 2

        c = CalendarClock(rate=1800, ticks=lambda: ticks.ms & (period - 1), diff=diff30)
        c.set_t2k(T0)
        total = 0
        for _ in range(200):  # 200 real hours (> 2^29 ms) in 1-hour steps, crossing the wrap
            ticks.ms += 3600000
            total += 3600000
            c.now_t2k()
        self.assertEqual(c.now_t2k(), T0 + total * 1800 // 1000)

    def test_listener_sees_step(self):
        c = CalendarClock(ticks=lambda: 0)
        seen = []
        c.add_listener(lambda old, new: seen.append((old, new)))
        c.set_t2k(T0)
        c.set_t2k(T0 + 30)
        self.assertEqual(seen, [(None, T0), (T0, T0 + 30)])
        self.assertEqual(c.ms_until(T0 + 31), 1000)
