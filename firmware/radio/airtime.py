# ARIB STD-T108 transmit-time budget of our own transmissions (360 s per sliding hour): a modelled
# air time per datagram, kept in a fixed ring of per-minute buckets (no allocation per send).
# The model and why: docs/radio.md "T108 budget".
from array import array

from firmware.compat import const, ticks_add, ticks_diff, ticks_ms

# [I] 100 kbit/s = 80 us per byte; every frame of at most _FRAG_PAYLOAD payload bytes adds
# _FRAME_OVERHEAD bytes (PHY preamble/SFD/PHR, MAC header and security, FCS, 6LoWPAN/IPv6/UDP
# headers, and the ACK's air time)
_US_PER_BYTE = const(80)
_FRAG_PAYLOAD = const(200)
_FRAME_OVERHEAD = const(80)
_BUCKETS = const(60)  # one per minute of the hour
_BUCKET_MS = const(60000)
_BUCKET_MAX = const(0xFFFF)  # array('H'): a minute holds at most 60000 ms of air anyway


def airtime_ms(n):
    """Modelled air time of one n-byte datagram, rounded up to whole ms."""
    frames = 1 + (n - 1) // _FRAG_PAYLOAD if n > 0 else 1
    return ((n + frames * _FRAME_OVERHEAD) * _US_PER_BYTE + 999) // 1000


class AirtimeBudget:
    def __init__(self, budget_ms=360000, ticks=ticks_ms):
        """ticks: the ms clock (tests pass a fake one)."""
        self.budget_ms = budget_ms
        self._ticks = ticks
        self._ring = array("H", bytes(2 * _BUCKETS))
        self._i = 0  # the current minute's bucket
        self._t0 = ticks()  # when the current bucket began
        self._sum = 0

    def used_ms(self):
        """Air time charged in the last hour (ms); advances the ring first."""
        now = self._ticks()
        steps = ticks_diff(now, self._t0) // _BUCKET_MS
        if steps == 0:
            return self._sum
        if steps < 0 or steps >= _BUCKETS:  # a clock step back, or an hour of silence
            self._clear(now)
            return 0
        r = self._ring
        i = self._i
        for _ in range(steps):
            i = (i + 1) % _BUCKETS
            self._sum -= r[i]
            r[i] = 0
        self._i = i
        self._t0 = ticks_add(self._t0, steps * _BUCKET_MS)
        return self._sum

    def left_ms(self):
        return max(0, self.budget_ms - self.used_ms())

    def charge(self, ms):
        self.used_ms()
        i = self._i
        v = self._ring[i] + ms
        if v > _BUCKET_MAX:
            ms -= v - _BUCKET_MAX
            v = _BUCKET_MAX
        self._ring[i] = v
        self._sum += ms

    def _clear(self, now):
        r = self._ring
        for i in range(_BUCKETS):
            r[i] = 0
        self._sum = 0
        self._t0 = now
