# Per-source token buckets for the ECHONET port (see docs/discovery.md), so that a flood on UDP
# 3610 cannot starve metering: each source IP gets `rate_per_s` datagrams per second with bursts
# of `burst`; all unpinned sources together also share one bucket of `total_per_s`, so many
# (possibly spoofed) addresses cannot add up to a flood. Pinned sources (the meter) have their own
# bucket only and are never evicted. The table is bounded (max_sources, least recently seen entry
# evicted). Drops are counted per source; each source costs at most one log line per
# log_interval_ms, drops by the shared bucket one line per interval for all sources together, and
# no more than max_sources + 1 lines are written per interval whatever the churn of addresses.
# Integer milli-token arithmetic, no floats.
from firmware import log
from firmware.compat import const, ticks_diff, ticks_ms

_MILLI = const(1000)

# Entry fields (a list per source: one allocation when a source first appears)
_TOKENS = const(0)  # milli-tokens
_LAST = const(1)  # ticks_ms of the last refill
_SEEN = const(2)  # ticks_ms of the last datagram (LRU)
_DROPS = const(3)  # datagrams dropped since the entry was created
_LOGGED = const(4)  # ticks_ms of the last log line, or None
_UNLOGGED = const(5)  # drops since the last log line


class RateLimiter:
    def __init__(self, rate_per_s=20, burst=40, max_sources=8, total_per_s=60, total_burst=120,
                 log_interval_ms=60000, tag="ratelimit", clock=ticks_ms):
        if rate_per_s < 1 or burst < 1 or total_per_s < 1 or total_burst < 1 or max_sources < 1:
            raise ValueError("rate limiter: rates, bursts and table size must be >= 1")
        self.rate = rate_per_s
        self.cap = burst * _MILLI
        self.total_rate = total_per_s
        self.total_cap = total_burst * _MILLI
        self.max_sources = max_sources
        self.log_interval_ms = log_interval_ms
        self.tag = tag
        self._clock = clock
        self._src = {}  # ip -> entry list
        self._pinned = set()
        now = clock()
        self._total = [self.total_cap, now, now, 0, None, 0]
        self._lines_t0 = now
        self._lines_n = 0
        self.stats = {"allowed": 0, "dropped": 0, "evicted": 0, "shared_dropped": 0,
                      "log_suppressed": 0}

    def pin(self, ip):
        """Exempt ip (a configured or discovered meter) from limiting."""
        self._pinned.add(ip)

    def unpin(self, ip):
        self._pinned.discard(ip)

    def drops(self, ip):
        """Datagrams dropped from ip while it has been in the table."""
        e = self._src.get(ip)
        return e[_DROPS] if e is not None else 0

    def sources(self):
        return list(self._src)

    def _refill(self, e, now, rate, cap):
        dt = ticks_diff(now, e[_LAST])
        full_ms = cap // rate + 1  # time to refill from empty: bounds dt*rate below 31 bits
        if dt < 0 or dt > full_ms:
            dt = full_ms  # negative only after idling past half the ticks period: long idle
        elif dt == 0:
            return
        e[_TOKENS] = min(cap, e[_TOKENS] + dt * rate)
        e[_LAST] = now

    def _entry(self, ip, now):
        e = self._src.get(ip)
        if e is not None:
            return e
        if len(self._src) >= self.max_sources:
            old = None
            for k, v in self._src.items():
                if k in self._pinned:
                    continue
                if old is None or ticks_diff(v[_SEEN], self._src[old][_SEEN]) < 0:
                    old = k
            if old is not None:
                del self._src[old]
                self.stats["evicted"] += 1
        e = [self.cap, now, now, 0, None, 0]
        self._src[ip] = e
        return e

    def allow(self, src):
        """True if a datagram from src (ip string or (ip, port)) may be processed now."""
        ip = src[0] if isinstance(src, tuple) else src
        if ip in self._pinned:
            # The meter only answers our requests (one outstanding at a time), so its rate is
            # ours; limiting it would cut a backfill burst. Its replies are still TID-checked.
            self.stats["allowed"] += 1
            return True
        now = self._clock()
        e = self._entry(ip, now)
        e[_SEEN] = now
        self._refill(e, now, self.rate, self.cap)
        if e[_TOKENS] < _MILLI:
            self._drop(ip, e, now)
            return False
        if ip not in self._pinned:
            t = self._total
            self._refill(t, now, self.total_rate, self.total_cap)
            if t[_TOKENS] < _MILLI:
                e[_DROPS] += 1
                self.stats["shared_dropped"] += 1
                self._drop("all sources", t, now)
                return False
            t[_TOKENS] -= _MILLI
        e[_TOKENS] -= _MILLI
        self.stats["allowed"] += 1
        return True

    def _drop(self, who, e, now):
        self.stats["dropped"] += 1
        e[_DROPS] += 1
        e[_UNLOGGED] += 1
        if e[_LOGGED] is not None and ticks_diff(now, e[_LOGGED]) < self.log_interval_ms:
            return
        if ticks_diff(now, self._lines_t0) >= self.log_interval_ms:
            self._lines_t0 = now
            self._lines_n = 0
        if self._lines_n > self.max_sources:
            self.stats["log_suppressed"] += 1
            return
        self._lines_n += 1
        log.warn(self.tag, "%s: %d datagrams dropped (flood on the ECHONET port), %d in all"
                 % (who, e[_UNLOGGED], e[_DROPS]))
        e[_UNLOGGED] = 0
        e[_LOGGED] = now
