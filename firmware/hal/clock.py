# Calendar clock: t2k seconds (since 2000-01-01Z), set from the smart meter (docs/clock.md).
#
# It runs on the monotonic millisecond ticks, re-anchoring before ticks_diff's half-period limit
# (2^29 ms ~ 6.2 days on the ESP32) so a device that runs for months never sees a wrap. `rate` > 1
# accelerates only this clock (host simulation); timeouts keep using real ticks.
#
# Discipline (configure(); off until then, so every set is a step as before):
# - an offset of at most `slew_max_s` is slewed: the clock runs faster or slower by at most
#   1/`slew_div` of calendar time until the offset is absorbed. now_t2k() stays monotonic and
#   moves at most one second at a time, so no :00/:30 boundary is ever skipped or repeated.
# - a larger offset is a step. While a capture holds the clock (hold()/release()) the step waits,
#   for at most `hold_max_ms` real milliseconds (poll() applies an overdue one), then it applies
#   with the time the set said plus the time waited.
# - status(): STATUS_INVALID until the first set, STATUS_DOUBTFUL after `doubtful_after_s`
#   calendar seconds without one (COSEM IC 8 clock status bits).
from firmware.compat import const, ticks_diff, ticks_ms

_REANCHOR_MS = const(3600000)  # re-anchor every real hour, far below the wrap horizon

STATUS_INVALID = const(0x01)  # IC 8 clock status: invalid value
STATUS_DOUBTFUL = const(0x02)  # IC 8 clock status: doubtful value

# Who set the clock (last_source, for listeners): the smart meter (DLMS, the time authority), the
# RTC kept across a soft reset (ESP32), or the optional NTP source (firmware/app/ntp.py).
SOURCE_SMART_METER = const(0)
SOURCE_RTC = const(1)
SOURCE_NTP = const(2)

STEP = const(0)  # last_kind: the last set stepped the clock
SLEW = const(1)  # last_kind: the last set is being slewed


class CalendarClock:
    def __init__(self, rate=1, ticks=ticks_ms, diff=ticks_diff):
        self.rate = rate
        self._ticks = ticks
        self._diff = diff
        self._base_t2k = None
        self._base_ticks = 0
        self._frac_ms = 0  # accelerated milliseconds not yet carried into whole seconds
        self._slew_ms = 0  # calendar ms still to add (+) or take away (-) by slewing
        self._listeners = []
        self.set_count = 0
        self.slew_max_s = 0  # 0: every set is a step
        self.slew_div = 10  # slew at most 1 ms per slew_div ms of calendar time
        self.hold_max_ms = 60000
        self.doubtful_after_s = 0  # 0: never doubtful
        self._holds = 0
        self._hold_ticks = 0  # ticks when the first hold began
        self._pending = None  # a step waiting for the hold: [t2k, ticks of the set]
        self._last_set = None  # calendar time just after the last set
        self.last_kind = STEP
        self.last_offset = 0  # seconds (new - old) of the last set, for listeners
        self.last_source = SOURCE_SMART_METER  # who made the last set (SOURCE_*)
        self.authority_set = None  # calendar time of the smart meter's last set, None = never
        self.stats = {"steps": 0, "slews": 0, "deferred": 0, "overdue": 0}

    def configure(self, slew_max_s=0, slew_div=10, hold_max_ms=60000, doubtful_after_s=0):
        self.slew_max_s = slew_max_s
        self.slew_div = max(2, slew_div)
        self.hold_max_ms = hold_max_ms
        self.doubtful_after_s = doubtful_after_s

    def is_set(self):
        return self._base_t2k is not None

    def _reanchor(self, now, el):
        """Fold the elapsed time (and the slew applied in it) into the base."""
        c = el * self.rate
        adj = self._slew_part(c)
        ms = c + self._frac_ms + adj
        self._base_t2k += ms // 1000
        self._frac_ms = ms % 1000
        self._base_ticks = now
        self._slew_ms -= adj

    def _slew_part(self, c):
        """The slew applied over c calendar ms since the anchor (signed, bounded by the rest)."""
        s = self._slew_ms
        if not s:
            return 0
        a = c // self.slew_div
        if s > 0:
            return a if a < s else s
        return -a if a < -s else s

    def now_t2k(self):
        if self._base_t2k is None:
            return None
        now = self._ticks()
        el = self._diff(now, self._base_ticks)
        c = el * self.rate
        if el >= _REANCHOR_MS or (self._slew_ms and c // self.slew_div >= abs(self._slew_ms)):
            # a whole hour, or the slew fully absorbed: carried into the base (same value now)
            self._reanchor(now, el)
            return self._base_t2k + self._frac_ms // 1000
        return self._base_t2k + (c + self._frac_ms + self._slew_part(c)) // 1000

    def set_t2k(self, t2k, source=SOURCE_SMART_METER):
        """The time is t2k now, says `source`. A first set, or one beyond slew_max_s, steps
        (waiting while a capture holds the clock); a smaller one slews. Listeners hear of every
        set when it takes effect (a slew at once)."""
        t2k = int(t2k)
        if source == SOURCE_SMART_METER:
            self.authority_set = t2k
        if self._base_t2k is None:
            self._step(t2k, source)
            return
        now = self._ticks()
        self._reanchor(now, self._diff(now, self._base_ticks))
        off_s = t2k - self._base_t2k  # whole seconds, as sets come (hundredths not used)
        if self.slew_max_s and -self.slew_max_s <= off_s <= self.slew_max_s:
            off_ms = off_s * 1000 - self._frac_ms
            self._pending = None  # the newest set says what the time is
            old = self._base_t2k
            self._slew_ms = off_ms
            self.stats["slews"] += 1
            self._notify(old, t2k, SLEW, source)
            return
        if self._holds:
            if self._pending is None:
                self.stats["deferred"] += 1
            self._pending = [t2k, now, source]
            return
        self._step(t2k, source)

    def _step(self, t2k, source=SOURCE_SMART_METER):
        old = self.now_t2k()
        self._base_t2k = t2k
        self._base_ticks = self._ticks()
        self._frac_ms = 0
        self._slew_ms = 0
        self.stats["steps"] += 1
        self._notify(old, t2k, STEP, source)

    def _notify(self, old, new, kind, source):
        self.set_count += 1
        self.last_source = source
        self._last_set = new
        self.last_kind = kind
        self.last_offset = 0 if old is None else new - old
        for fn in self._listeners:
            fn(old, new)

    def _apply_pending(self):
        p = self._pending
        self._pending = None
        el = self._diff(self._ticks(), p[1])
        self._step(p[0] + (el * self.rate) // 1000, p[2])

    def hold(self):
        """A capture begins: a step arriving now waits until release() (or hold_max_ms)."""
        if not self._holds:
            self._hold_ticks = self._ticks()
        self._holds += 1

    def release(self):
        if self._holds:
            self._holds -= 1
        if not self._holds and self._pending is not None:
            self._apply_pending()

    def poll(self):
        """Called about once a second (housekeeping): a step held longer than hold_max_ms is
        applied anyway (a capture that hangs must not keep a wrong clock)."""
        if self._pending is not None and self._holds and \
                self._diff(self._ticks(), self._hold_ticks) >= self.hold_max_ms:
            self.stats["overdue"] += 1
            self._apply_pending()

    def step_pending(self):
        return self._pending is not None

    def slewing_ms(self):
        """Calendar milliseconds still to slew (signed; 0 when not slewing)."""
        if self._slew_ms:
            self.now_t2k()  # folds a finished slew
        return self._slew_ms

    def status(self):
        """IC 8 clock status bits: invalid before the first set, doubtful long after the last."""
        now = self.now_t2k()
        if now is None:
            return STATUS_INVALID
        if self.doubtful_after_s and now - self._last_set > self.doubtful_after_s:
            return STATUS_DOUBTFUL
        return 0

    def last_set_t2k(self):
        """Calendar time just after the last set that took effect (None: never set)."""
        return self._last_set

    def add_listener(self, fn):
        """fn(old_t2k_or_None, new_t2k) is called after every set that took effect (last_kind
        says STEP or SLEW; for a slew, new is the time the clock is converging to)."""
        self._listeners.append(fn)

    def ms_until(self, t2k):
        """Real milliseconds until the calendar reaches t2k (0 if past, None if unset)."""
        now = self.now_t2k()
        if now is None:
            return None
        if t2k <= now:
            return 0
        return ((t2k - now) * 1000 + self.rate - 1) // self.rate
