"""The seeded fault schedule of the chaos soak (tools/soak.py) and the meter model that survives a
counter reset. Pure: no I/O, no clock; the same seed and length give the same schedule.

A Fault is (at_s, kind, duration_s, params): `at_s` seconds of simulated time after the soak's
start (the head-end's first clock set), `duration_s` how long it lasts (0 for instant faults).
Kinds (docs/soak.md says what status each must produce):

  meter_silent   the meter drops every request (minutes to 3 days)             params: meter
  meter_reboot   the meter node restarts: day selectors reset, INF 0xD5 sent   params: meter
  counter_reset  the meter's counters restart from 0 at the next boundary      params: meter
  radio_loss     the smart meter is out of radio reach (minutes to 3 days)
  clock_step     the head-end sets the terminal's clock wrong by step_s (±1 min to ±1 day),
                 and back to true time after duration_s                         params: step_s
  power_cut      the terminal process is killed (flash image kept); it is off for duration_s.
                 Only in the first half of the fault period: the second half is one boot, long
                 enough for the heap trend (tools/soak_oracle.heap_growth_kb_per_30d)
  bad_3610       malformed datagrams to the terminal's ECHONET port, and junk/truncated replies
                 from the meter itself                                           params: meter, n
  bad_uart       frames from the module with bad header/data checksums and noise   params: n
  bad_4059       malformed DLMS wrapper datagrams over the air                     params: n
  flood_3610     a burst of well-formed ECHONET requests from a stranger          params: n
  flood_4059     a burst of DLMS requests from a second radio peer                 params: n
"""

import collections
import math
import random

from firmware import timeutil
from tools.meter_model import MeterModel

Fault = collections.namedtuple("Fault", "at_s kind duration_s params")

MIN_S = 60
HOUR_S = 3600
DAY_S = timeutil.DAY_S
JST_S = 540 * 60

# Faults per 30 simulated days (at least one of each kind however short the run).
PER_30_DAYS = {
    "meter_silent": 8,
    "meter_reboot": 4,
    "counter_reset": 3,
    "radio_loss": 6,
    "clock_step": 10,
    "power_cut": 8,
    "bad_3610": 6,
    "bad_uart": 6,
    "bad_4059": 6,
    "flood_3610": 4,
    "flood_4059": 4,
}
# Bounds of every flood and malformed burst (count): network safety, and a soak that ends.
FLOOD_MAX = 2000
BAD_MAX = 200


def _log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _step_time(rng, lo, hi):
    """A clock-step instant: a third near local (JST) midnight, a third within 2 minutes of a
    :00/:30 boundary, the rest anywhere."""
    t = rng.randrange(lo, hi)
    pick = rng.random()
    if pick < 1 / 3:
        t -= (t + JST_S) % DAY_S  # local midnight before t
        t += rng.randrange(-10 * MIN_S, 10 * MIN_S)
    elif pick < 2 / 3:
        t -= t % timeutil.SLOT_S
        t += rng.randrange(-2 * MIN_S, 2 * MIN_S)
    return min(max(t, lo), hi - 1)


def schedule(seed, days, meters=1, start_t2k=0, warmup_s=12 * HOUR_S, settle_s=None):
    """The faults of a soak of `days` simulated days, sorted by time. Faults start after
    `warmup_s` (the boot backfill has finished) and every fault has ended `settle_s` before the
    end (default: 1 day, or a third of the run if shorter), so the terminal can recover before
    the final audit. `start_t2k` (the soak's start) only places clock steps near local midnight
    and boundaries."""
    rng = random.Random(seed)
    total = int(days * DAY_S)
    if settle_s is None:
        settle_s = min(DAY_S, total // 3)
    lo, hi = warmup_s, total - settle_s
    if hi - lo < 2 * HOUR_S:
        raise ValueError("a soak of %g days leaves no time for faults" % days)
    long_max = min(3 * DAY_S, (hi - lo) // 2)
    out = []
    for kind, n30 in sorted(PER_30_DAYS.items()):
        n = max(1, round(n30 * days / 30))
        for _ in range(n):
            meter = rng.randrange(meters)
            if kind in ("meter_silent", "radio_loss"):
                dur = _log_uniform(rng, 5 * MIN_S, long_max)
                at = rng.randrange(lo, hi - dur)
                out.append(Fault(at, kind, dur, {"meter": meter}))
            elif kind == "clock_step":
                mag = _log_uniform(rng, MIN_S, DAY_S)
                step = mag if rng.random() < 0.5 else -mag
                hold = _log_uniform(rng, 10 * MIN_S, 12 * HOUR_S)
                at = _step_time(rng, start_t2k + lo, start_t2k + hi - hold) - start_t2k
                out.append(Fault(at, kind, hold, {"step_s": step}))
            elif kind == "power_cut":
                dur = _log_uniform(rng, 2 * MIN_S, 6 * HOUR_S)
                at = rng.randrange(lo, max(lo + 1, (lo + hi) // 2 - dur))
                out.append(Fault(at, kind, dur, {}))
            elif kind in ("meter_reboot", "counter_reset"):
                out.append(Fault(rng.randrange(lo, hi), kind, 0,
                                 {"meter": meter, "announce": rng.random() < 0.5}))
            elif kind.startswith("flood"):
                out.append(Fault(rng.randrange(lo, hi), kind, 0,
                                 {"n": rng.randrange(FLOOD_MAX // 4, FLOOD_MAX + 1)}))
            else:  # bad_*: a burst now, and (3610) junk from the meter for a while
                dur = _log_uniform(rng, 10 * MIN_S, 6 * HOUR_S)
                out.append(Fault(rng.randrange(lo, hi - dur), kind, dur,
                                 {"meter": meter, "n": rng.randrange(BAD_MAX // 4, BAD_MAX + 1),
                                  "seed": rng.getrandbits(32)}))
    out.sort(key=lambda f: (f.at_s, f.kind))
    return _one_clock_step_at_a_time(out)


def _one_clock_step_at_a_time(faults):
    """Clock steps do not overlap (each one ends by setting true time): a step that begins
    while another one holds is dropped."""
    out, busy_until = [], -1
    for f in faults:
        if f.kind == "clock_step":
            if f.at_s < busy_until:
                continue
            busy_until = f.at_s + f.duration_s
        out.append(f)
    return out


class EpochModel:
    """A meter's ground truth across counter resets: the values of `base` (a MeterModel) before
    the first reset, then from each reset boundary on a fresh model whose counters are 0 at that
    boundary. The meter's history keeps what it recorded before a reset (the emulator asks this
    model for every slot, past or present). Quacks like MeterModel for the emulator."""

    def __init__(self, base):
        self.base = base
        self.epochs = []  # (first_slot, MeterModel), ascending
        self.unit_code = base.unit_code
        self.modulus = base.modulus

    def reset_at(self, slot, seed):
        """Counters restart from 0 at the boundary that begins `slot`."""
        if self.epochs and slot <= self.epochs[-1][0]:
            raise ValueError("resets must move forward")
        m = MeterModel(seed=seed, unit_code=self.unit_code, start_fwd=0, start_rev=0,
                       modulus=self.modulus, origin_slot=slot)
        self.epochs.append((slot, m))

    def resets(self):
        return [s for s, _ in self.epochs]

    def model_for(self, slot):
        m = self.base
        for first, em in self.epochs:
            if slot >= first:
                m = em
        return m

    def at_slot(self, slot):
        return self.model_for(slot).at_slot(slot)

    def served_at_slot(self, slot, scaler=0):
        return self.model_for(slot).served_at_slot(slot, scaler)

    def at_t2k(self, boundary_t2k):
        if boundary_t2k % timeutil.SLOT_S:
            raise ValueError("%d is not a :00/:30 boundary" % boundary_t2k)
        return self.at_slot(timeutil.slot_of_t2k(boundary_t2k))
