"""Simulated calendar clock shared by the host emulators (meter, smart meter/head-end).

Only the calendar clock is accelerated: t2k = start_t2k + elapsed_wall_seconds * rate. Timeouts and
back-off everywhere stay on real monotonic time, as on the device.
"""

import time


class SimClock:
    def __init__(self, start_t2k, rate=1, monotonic=time.monotonic):
        self.start_t2k = int(start_t2k)
        self.rate = rate
        self._mono = monotonic
        self._m0 = monotonic()

    def now_t2k(self):
        return self.start_t2k + int((self._mono() - self._m0) * self.rate)

    def wall_seconds_until(self, t2k):
        """Real seconds until the simulated clock reaches t2k (0 if already past)."""
        return max(0.0, (t2k - self.now_t2k()) / self.rate)
