"""Deterministic ground truth for the simulated 0x028E meter, shared by the meter emulator and the
head-end's final check.

at_slot(slot) gives the cumulative raw counters (forward = AC input, reverse = AC output) at the
:00/:30 boundary that begins `slot` (Unix seconds // 1800). Any slot is computed directly, without
iterating from an origin:

    value(s) = start + C(s) - C(origin) + n(s) - n(origin)   (mod modulus)

C(s) is the cumulative sum of a fixed 48-entry daily profile (local time: import all day, export
only around noon), so C(s) = days * day_total + prefix[slot of day]. n(s) is pseudo-random noise
from a hash of (seed, s), bounded by half of the profile on both sides of the boundary, so every
per-slot increment p + n(s+1) - n(s) stays within [p - p//2, p + p//2]: never negative, forward
0..19 and reverse 0..4 raw units (0.1 kWh with unit code 0x01).
"""

from firmware import timeutil, units

# Raw units per 30 minutes by local slot of day (00:00, 00:30, ... 23:30).
FWD_PROFILE = (
    6, 6, 5, 5, 4, 4, 4, 4, 4, 4, 5, 6, 8, 10, 11, 12, 10, 8, 6, 5, 4, 3, 3, 2,
    2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12, 13, 13, 12, 12, 11, 10, 10, 9, 8, 8, 7, 7, 6,
)
REV_PROFILE = (
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3,
    3, 3, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
)
# Slot whose boundary carries start_fwd/start_rev: 2024-01-01 00:00 JST.
ORIGIN_SLOT = timeutil.slot_of_t2k(timeutil.t2k_from_fields(2023, 12, 31, 15, 0, 0))
_MASK64 = (1 << 64) - 1


def _mix64(x):
    """splitmix64 finaliser: a well-spread 64-bit hash of x."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class _Channel:
    def __init__(self, profile, seed, salt, tz_slots):
        self.p = profile
        self.total = sum(profile)
        self.prefix = [0]
        for v in profile:
            self.prefix.append(self.prefix[-1] + v)
        self.key = _mix64(seed * 2 + salt)
        self.tz_slots = tz_slots

    def _k(self, slot):
        return (slot + self.tz_slots) % 48

    def cum(self, slot):
        u = slot + self.tz_slots
        return (u // 48) * self.total + self.prefix[u % 48]

    def noise(self, slot):
        amp = min(self.p[self._k(slot - 1)], self.p[self._k(slot)]) // 2
        if amp == 0:
            return 0
        return _mix64(self.key ^ (slot & _MASK64)) % (amp + 1)

    def value(self, slot, origin):
        return self.cum(slot) - self.cum(origin) + self.noise(slot) - self.noise(origin)


def served(raw, unit_code, scaler=0):
    """(fwd, rev) raw counters of `unit_code` as the terminal serves them over DLMS: integers of
    10^scaler Wh (the default configuration: Wh). Exact by construction for the model's units."""
    k = units.exponent(unit_code) + 3 - scaler
    if k < 0:
        raise ValueError("unit 0x%02X is finer than 10^%d Wh" % (unit_code, scaler))
    return (raw[0] * 10**k, raw[1] * 10**k)


# Two models with the same profile, origin and start differ only by their noise, by at most this
# many raw units on either channel (each n(s) - n(origin) is within +-max(profile)//2).
NOISE_SPREAD = 2 * (max(max(FWD_PROFILE), max(REV_PROFILE)) // 2)


class MeterModel:
    def __init__(self, seed=1, unit_code=0x01, start_fwd=123456, start_rev=7890,
                 modulus=10**9, tz_offset_min=540, origin_slot=ORIGIN_SLOT):
        if tz_offset_min % 30:
            raise ValueError("the daily profile needs a whole number of slots of offset")
        self.seed = seed
        self.unit_code = unit_code
        self.start_fwd = start_fwd
        self.start_rev = start_rev
        self.modulus = modulus
        self.origin = origin_slot
        tz_slots = tz_offset_min // 30
        self._fwd = _Channel(FWD_PROFILE, seed, 0, tz_slots)
        self._rev = _Channel(REV_PROFILE, seed, 1, tz_slots)

    def at_slot(self, slot):
        """(fwd_raw, rev_raw) at the boundary that begins `slot`."""
        return ((self.start_fwd + self._fwd.value(slot, self.origin)) % self.modulus,
                (self.start_rev + self._rev.value(slot, self.origin)) % self.modulus)

    def at_t2k(self, boundary_t2k):
        if boundary_t2k % timeutil.SLOT_S:
            raise ValueError("%d is not a :00/:30 boundary" % boundary_t2k)
        return self.at_slot(timeutil.slot_of_t2k(boundary_t2k))

    def served_at_slot(self, slot, scaler=0):
        """(fwd, rev) at the boundary that begins `slot` as the terminal serves them (Wh)."""
        return served(self.at_slot(slot), self.unit_code, scaler)

    def increment(self, slot):
        """(fwd, rev) raw energy during `slot` (from its boundary to the next), before wrap."""
        return (self._fwd.value(slot + 1, self.origin) - self._fwd.value(slot, self.origin),
                self._rev.value(slot + 1, self.origin) - self._rev.value(slot, self.origin))


class UnitChangingModel:
    """A meter whose unit can change (set unit_code, e.g. through MeterEmulator.reboot) while its
    energy goes on: every counter it reports, live or history, is the base model's energy in
    the unit it has now (a finer unit: the counters gain digits). served_at_slot is the truth
    the terminal must serve whatever unit each slot was stored in. Quacks like MeterModel."""

    def __init__(self, base):
        self.base = base
        self.unit_code = base.unit_code
        self.modulus = base.modulus

    def at_slot(self, slot):
        k = units.exponent(self.base.unit_code) - units.exponent(self.unit_code)
        if k < 0:
            raise ValueError("unit 0x%02X is coarser than the model's" % self.unit_code)
        f, r = self.base.at_slot(slot)
        return (f * 10**k, r * 10**k)

    def at_t2k(self, boundary_t2k):
        if boundary_t2k % timeutil.SLOT_S:
            raise ValueError("%d is not a :00/:30 boundary" % boundary_t2k)
        return self.at_slot(timeutil.slot_of_t2k(boundary_t2k))

    def served_at_slot(self, slot, scaler=0):
        return self.base.served_at_slot(slot, scaler)
