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
        heapmon._last_day = -1

    def tearDown(self):
        log.set_sink(None)
        heapmon.enabled = self.was

    def day_lines(self):
        return [x for x in self.lines if "heap: day" in x]

    def test_one_line_per_calendar_day(self):
        heapmon.daily(None)  # clock not set yet: no day to name
        t = 9000 * DAY + 100
        heapmon.daily(t)
        heapmon.daily(t + 3600)
        heapmon.daily(t + DAY)
        got = self.day_lines()
        if hasattr(gc, "mem_alloc"):  # MicroPython: the live heap, one line per day
            self.assertEqual(len(got), 2)
            self.assertIn("day 9000: ", got[0])
            self.assertIn("day 9001: ", got[1])
            self.assertIn(" used, ", got[0])
        else:  # CPython has no heap figures to give
            self.assertEqual(got, [])

    def test_off_unless_heap_log(self):
        heapmon.enabled = False
        heapmon.daily(9000 * DAY)
        self.assertEqual(self.day_lines(), [])


if __name__ == "__main__":
    unittest.main()
