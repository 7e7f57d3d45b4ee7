# Calendar clock: t2k seconds (since 2000-01-01Z), set from the smart meter.
#
# It runs on the monotonic millisecond ticks, re-anchoring before ticks_diff's half-period limit
# (2^29 ms ~ 6.2 days on the ESP32) so a device that runs for months never sees a wrap. `rate` > 1
# accelerates only this clock (host simulation); timeouts keep using real ticks.
from firmware.compat import const, ticks_diff, ticks_ms

_REANCHOR_MS = const(3600000)  # re-anchor every real hour, far below the wrap horizon


class CalendarClock:
    def __init__(self, rate=1, ticks=ticks_ms, diff=ticks_diff):
        self.rate = rate
        self._ticks = ticks
        self._diff = diff
        self._base_t2k = None
        self._base_ticks = 0
        self._frac_ms = 0  # accelerated milliseconds not yet carried into whole seconds
        self._listeners = []
        self.set_count = 0

    def is_set(self):
        return self._base_t2k is not None

    def now_t2k(self):
        if self._base_t2k is None:
            return None
        now = self._ticks()
        el = self._diff(now, self._base_ticks)
        if el >= _REANCHOR_MS:
            ms = el * self.rate + self._frac_ms
            self._base_t2k += ms // 1000
            self._frac_ms = ms % 1000
            self._base_ticks = now
            el = 0
        return self._base_t2k + (el * self.rate + self._frac_ms) // 1000

    def set_t2k(self, t2k):
        old = self.now_t2k()
        self._base_t2k = int(t2k)
        self._base_ticks = self._ticks()
        self._frac_ms = 0
        self.set_count += 1
        for fn in self._listeners:
            fn(old, self._base_t2k)

    def add_listener(self, fn):
        """fn(old_t2k_or_None, new_t2k) is called after every set."""
        self._listeners.append(fn)

    def ms_until(self, t2k):
        """Real milliseconds until the calendar reaches t2k (0 if past, None if unset)."""
        now = self.now_t2k()
        if now is None:
            return None
        if t2k <= now:
            return 0
        return ((t2k - now) * 1000 + self.rate - 1) // self.rate
