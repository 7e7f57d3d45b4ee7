# The daily heap line the chaos soak reads its growth trend from (firmware/app/heapmon.daily).
import gc
import unittest

from firmware import log
from firmware.app import heapmon

DAY = 86400


class DailyHeapLineTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.was = heapmon.enabled
        heapmon.enabled = True
        heapmon._hour = heapmon._day = -1
        heapmon._n = 0

    def tearDown(self):
        log.set_sink(None)
        heapmon.enabled = self.was

    def day_lines(self):
        return [x for x in self.lines if "heap: day" in x]

    def test_one_line_per_calendar_day_with_its_hourly_floor(self):
        heapmon.daily(None)  # clock not set yet: no day to name
        t = 9000 * DAY + 100
        for h in range(24):  # day 9000: one sample per hour (and none between)
            heapmon.daily(t + h * 3600)
            heapmon.daily(t + h * 3600 + 60)
        self.assertEqual(self.day_lines(), [])  # the day is logged once it is over
        heapmon.daily(t + DAY)
        heapmon.daily(t + DAY + 3600)
        got = self.day_lines()
        if hasattr(gc, "mem_alloc"):  # MicroPython: the live heap
            self.assertEqual(len(got), 1)
            self.assertIn("day 9000: ", got[0])
            self.assertIn(" highest, 24 samples", got[0])
            low, high = [int(x.split()[0]) for x in got[0].split(": ", 2)[2].split(", ")[:2]]
            self.assertLessEqual(low, high)
        else:  # CPython has no heap figures to give
            self.assertEqual(got, [])

    def test_off_unless_heap_log(self):
        heapmon.enabled = False
        heapmon.daily(9000 * DAY)
        self.assertEqual(self.day_lines(), [])


if __name__ == "__main__":
    unittest.main()
