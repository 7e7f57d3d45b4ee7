# Persistent counters (firmware/store/counters.py): they survive a restart, count through the
# event sink and the store's put listener, and write the file at most at boot + every persist_s.
import os
import unittest

from firmware import events as ev
from firmware import log
from firmware.compat import ticks_add
from firmware.store.counters import Counters, path_for


def _run_id():
    # unique per interpreter: pytest-xdist runs this file's tests in several processes at once
    return "".join("%02x" % b for b in os.urandom(4))


_PATH = "/tmp/test_store_counters_%s.json" % _run_id()


def _rm(p):
    try:
        os.remove(p)
    except OSError:
        pass


class Ticks:
    def __init__(self):
        self.ms = 1000

    def __call__(self):
        return self.ms


class CountersTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        _rm(_PATH)
        self.ticks = Ticks()

    def tearDown(self):
        log.set_sink(None)
        _rm(_PATH)

    def make(self, persist_s=3600):
        return Counters(_PATH, persist_s, ticks=self.ticks)

    def test_path_next_to_the_state_file(self):
        self.assertEqual(path_for("/data/state.json"), "/data/counters.json")

    def test_survive_a_restart(self):
        c = self.make()
        c.boot("power_on")
        c.on_put(0, 100)
        c.on_put(0, 101)
        c.on_event(ev.BACKFILL_DONE, 5)
        c.on_event(ev.LINK_DOWN, 3)
        c.on_event(ev.TASK_CRASH, 11)
        c.on_event(ev.CLOCK_SET, 1)  # not counted
        self.ticks.ms += 7500
        c.persist()  # a clean point
        c2 = self.make()
        c2.boot("watchdog")
        s = c2.snapshot()
        self.assertEqual(s["boots"], 2)
        self.assertEqual(s["resets_power_on"], 1)
        self.assertEqual(s["resets_watchdog"], 1)
        self.assertEqual((s["reads"], s["backfills"], s["link_drops"], s["task_crashes"]),
                         (2, 5, 1, 1))
        self.assertEqual(s["uptime_s"], 7)

    def test_power_cut_loses_at_most_persist_s(self):
        c = self.make(persist_s=60)
        c.boot("power_on")
        for _ in range(130):  # 130 s of uptime, one poll a second
            self.ticks.ms += 1000
            c.on_put(0, 1)
            c.poll()
        # no persist() at the end: a power cut
        s = self.make().snapshot()
        self.assertEqual(s["uptime_s"], 120)  # the write at 120 s is the last one
        self.assertEqual(s["reads"], 120)

    def test_writes_bounded_by_persist_s(self):
        c = self.make(persist_s=3600)
        c.boot("power_on")
        for _ in range(7200):  # two hours, a poll a second, a read every second
            self.ticks.ms += 1000
            c.on_put(0, 1)
            c.poll()
        self.assertEqual(c.writes, 1 + 2)  # the boot, then one per hour
        self.assertEqual(c.snapshot()["uptime_s"], 7200)

    def test_uptime_across_ticks_wrap(self):
        period = ticks_add(0, -1) + 1  # 2^30 on the ESP32 (and CPython's shim), more on unix
        self.ticks.ms = period - 1500
        c = self.make()
        for _ in range(5):
            self.ticks.ms = ticks_add(self.ticks.ms, 1000)
            c.poll()
        self.assertLess(self.ticks.ms, 5000)  # it did wrap
        self.assertEqual(c.snapshot()["uptime_s"], 5)

    def test_track_adds_growth_of_a_per_boot_total(self):
        c = self.make()
        c.track("crc_errors", "radio", 3)
        c.track("crc_errors", "radio", 3)
        c.track("crc_errors", "radio", 5)
        c.track("crc_errors", "radio", 1)  # the driver restarted its count
        self.assertEqual(c.snapshot()["crc_errors"], 6)

    def test_damaged_values_start_at_zero(self):
        with open(_PATH, "w") as f:
            f.write("garbage")
        c = self.make()
        self.assertEqual(c.snapshot()["boots"], 0)
        self.assertIn("unreadable", "\n".join(self.lines))

    def test_snapshot_is_a_copy_of_ints(self):
        c = self.make()
        s = c.snapshot()
        s["boots"] = 99
        self.assertEqual(c.snapshot()["boots"], 0)
        for k, v in c.snapshot().items():
            self.assertTrue(isinstance(v, int), k)


if __name__ == "__main__":
    unittest.main()
