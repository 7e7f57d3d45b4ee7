import unittest

from firmware import log
from firmware.compat import ticks_add
from firmware.meter.ratelimit import RateLimiter


class Clock:
    """Tick source for tests: `t` is a plain counter, the ticks it yields wrap like the runtime's
    own ticks_ms (2^30 on the ESP32 and the CPython shim, 2^62 on the unix port)."""

    def __init__(self, t=1000):
        self._t = t
        self._ticks = ticks_add(0, t)

    @property
    def t(self):
        return self._t

    @t.setter
    def t(self, v):
        self._ticks = ticks_add(self._ticks, v - self._t)
        self._t = v

    def __call__(self):
        return self._ticks


class RateLimiterTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.clk = Clock()

    def tearDown(self):
        log.set_sink(None)

    def lim(self, **kw):
        args = {"rate_per_s": 10, "burst": 5, "max_sources": 4, "total_per_s": 100,
                "total_burst": 100, "clock": self.clk}
        args.update(kw)
        return RateLimiter(**args)

    def test_burst_then_drop_then_refill(self):
        r = self.lim()
        got = [r.allow("10.0.0.9") for _ in range(8)]
        self.assertEqual(got, [True] * 5 + [False] * 3)
        self.assertEqual(r.drops("10.0.0.9"), 3)
        self.clk.t += 100  # 10/s: one token per 100 ms
        self.assertTrue(r.allow("10.0.0.9"))
        self.assertFalse(r.allow("10.0.0.9"))
        self.clk.t += 99
        self.assertFalse(r.allow("10.0.0.9"))
        self.clk.t += 1
        self.assertTrue(r.allow("10.0.0.9"))

    def test_tuple_address_and_independent_sources(self):
        r = self.lim()
        for _ in range(5):
            self.assertTrue(r.allow(("10.0.0.9", 3610)))
        self.assertFalse(r.allow(("10.0.0.9", 40000)))  # same IP, other port: same bucket
        self.assertTrue(r.allow("10.0.0.8"))  # a flooding neighbour does not starve others
        self.assertEqual(r.drops("10.0.0.8"), 0)

    def test_refill_caps_at_burst_after_long_idle(self):
        r = self.lim()
        for _ in range(5):
            r.allow("a")
        self.clk.t += 10 ** 8  # long idle: no overflow, bucket merely full
        self.assertEqual(sum(r.allow("a") for _ in range(10)), 5)

    def test_tick_wrap(self):
        self.clk = Clock(-50)  # 50 ms before the tick counter wraps to 0
        r = self.lim()
        for _ in range(5):
            r.allow("a")
        self.assertFalse(r.allow("a"))
        self.clk.t += 100  # wraps past the end of the tick period
        self.assertTrue(r.allow("a"))

    def test_lru_bound_and_pinned_meter_always_allowed(self):
        r = self.lim(max_sources=3)
        r.pin("meter")
        for i in range(20):
            self.clk.t += 1
            r.allow("10.1.0.%d" % i)
        self.assertLessEqual(len(r.sources()), 3)
        self.assertIn("10.1.0.19", r.sources())
        self.assertGreater(r.stats["evicted"], 0)
        # a backfill burst of the meter's replies: never cut (they answer our own requests)
        self.assertTrue(all(r.allow("meter") for _ in range(500)))
        r.unpin("meter")
        self.assertFalse(all(r.allow("meter") for _ in range(500)))

    def test_many_sources_share_the_total_budget_but_not_the_meter(self):
        r = self.lim(max_sources=8, total_per_s=20, total_burst=20)
        r.pin("meter")
        allowed = 0
        for i in range(200):  # spoofed addresses, each with a fresh bucket
            allowed += r.allow("10.2.%d.%d" % (i // 250, i % 250))
        self.assertEqual(allowed, 20)
        self.assertTrue(r.allow("meter"))
        self.assertGreater(r.stats["shared_dropped"], 0)

    def test_one_log_line_per_source_per_interval(self):
        r = self.lim(log_interval_ms=60000)
        for _ in range(1000):
            r.allow("10.0.0.7")
        mine = [x for x in self.lines if "10.0.0.7" in x]
        self.assertEqual(len(mine), 1)
        self.clk.t += 30000
        for _ in range(100):
            r.allow("10.0.0.7")
        self.assertEqual(len([x for x in self.lines if "10.0.0.7" in x]), 1)
        self.clk.t += 30001
        for _ in range(1000):
            r.allow("10.0.0.7")
        mine = [x for x in self.lines if "10.0.0.7" in x]
        self.assertEqual(len(mine), 2)
        self.assertIn("in all", mine[1])

    def test_log_lines_bounded_under_address_churn(self):
        r = self.lim(max_sources=4, rate_per_s=1, burst=1, total_per_s=1000, total_burst=1000)
        for i in range(500):
            a = "10.3.0.%d" % (i % 6)  # more addresses than table slots
            r.allow(a)
            r.allow(a)
        self.assertLessEqual(len(self.lines), 5)
        self.assertGreater(r.stats["log_suppressed"], 0)

    def test_bad_parameters(self):
        with self.assertRaises(ValueError):
            RateLimiter(rate_per_s=0)
        with self.assertRaises(ValueError):
            RateLimiter(max_sources=0)


if __name__ == "__main__":
    unittest.main()
