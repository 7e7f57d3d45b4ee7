# The ARIB T108 budget (firmware/radio/airtime.py) on a fake clock, both runtimes: the air-time
# model, the sliding hour of per-minute buckets, a clock that steps back, the per-bucket cap.
import unittest

from radio_fakes import FakeTicks

from firmware.radio.airtime import AirtimeBudget, airtime_ms

MIN = 60000


class AirtimeTest(unittest.TestCase):
    def test_model(self):
        self.assertEqual(airtime_ms(0), 7)  # one frame's overhead: 80 x 80 us = 6.4 ms
        self.assertEqual(airtime_ms(5), 7)  # (5 + 80) x 80 us = 6.8 ms
        self.assertEqual(airtime_ms(200), 23)  # (200 + 80) x 80 us = 22.4 ms
        self.assertEqual(airtime_ms(201), 29)  # two frames: (201 + 160) x 80 us = 28.9 ms
        self.assertEqual(airtime_ms(1232), 144)  # 7 frames: (1232 + 560) x 80 us = 143.4 ms

    def test_sliding_hour(self):
        t = FakeTicks(5)
        b = AirtimeBudget(360000, t)
        b.charge(100)
        t.t += 30 * MIN
        b.charge(50)
        self.assertEqual((b.used_ms(), b.left_ms()), (150, 359850))
        t.t += 30 * MIN - 1  # the first charge's minute is still inside the hour
        self.assertEqual(b.used_ms(), 150)
        t.t += 1  # 60 minutes: its bucket is reused for the new minute
        self.assertEqual(b.used_ms(), 50)
        t.t += 30 * MIN
        self.assertEqual(b.used_ms(), 0)
        for _ in range(4000):  # every minute of almost three days, one charge each
            t.t += MIN
            b.charge(7)
        self.assertEqual(b.used_ms(), 60 * 7)

    def test_idle_hour_and_clock_step_back_clear(self):
        t = FakeTicks(1000)
        b = AirtimeBudget(1000, t)
        b.charge(900)
        self.assertEqual(b.left_ms(), 100)
        t.t += 61 * MIN
        self.assertEqual(b.left_ms(), 1000)
        b.charge(400)
        t.t -= 5 * MIN  # a clock that went back: what was counted can no longer be placed
        self.assertEqual(b.used_ms(), 0)
        b.charge(2000)
        self.assertEqual(b.left_ms(), 0)  # never negative

    def test_bucket_cap(self):
        t = FakeTicks(0)
        b = AirtimeBudget(360000, t)
        b.charge(60000)
        b.charge(60000)  # more than a minute can hold: the excess is dropped, sum consistent
        self.assertEqual(b.used_ms(), 0xFFFF)
        t.t += 60 * MIN
        self.assertEqual(b.used_ms(), 0)


if __name__ == "__main__":
    unittest.main()
