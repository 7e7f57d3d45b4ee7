# A 0x028E meter without sockets, for tests of the capture loop, the backfill planner and the
# power-cut scenario: values from tools.meter_model.MeterModel, time from a callable (its clock
# may be offset from ours), the same reader API as firmware.meter.client.MeterClient.
from firmware import timeutil
from firmware.meter.drmeter import MeterTimeout
from tools.meter_model import MeterModel


class MeterSilent(MeterTimeout):
    pass


class EchoMismatch(ValueError):
    pass


class FakeMeter:
    def __init__(self, now, model=None, tz=540, retention=45, clock_offset_s=0):
        self.now = now  # callable -> our calendar t2k
        self.model = model or MeterModel(seed=3)
        self.tz = tz
        self.retention = retention
        self.clock_offset_s = clock_offset_s
        self.silent = False
        self.nodata = set()  # slots the meter reports as 0xFFFFFFFE
        self.wrong_echo = 0  # next N history reads echo another day (another controller)
        self.date_jump_after_history = False  # the meter's date changes right after a read
        self.requests = 0
        self.history_reads = []

    def meter_t(self):
        return self.now() + self.clock_offset_s

    def _check(self):
        self.requests += 1
        if self.silent:
            raise MeterSilent("no reply")

    def _value(self, slot):
        if slot in self.nodata:
            return None, None
        return self.model.at_slot(slot)

    async def read_unit(self):
        self._check()
        return self.model.unit_code

    async def read_fixed_time(self):
        self._check()
        t = self.meter_t()
        b = t - t % timeutil.SLOT_S
        fwd, rev = self._value(timeutil.slot_of_t2k(b))
        return b, fwd, rev

    def _meter_local_days(self):
        return (self.meter_t() + self.tz * 60) // timeutil.DAY_S

    async def get(self, epcs):
        self._check()
        out = {}
        for e in epcs:
            if e == 0xD3:
                out[e] = bytes(((self.retention >> 8) & 0xFF, self.retention & 0xFF))
            elif e == 0x98:
                y, m, d = timeutil.civil_from_days(self._meter_local_days())
                out[e] = bytes((y >> 8, y & 0xFF, m, d))
            else:
                out[e] = None
        return out

    async def read_retention(self):
        self._check()
        return None if self.retention == 0xFFFF else self.retention

    async def read_history(self, day):
        self._check()
        if day < 0 or day > self.retention:
            raise ValueError("day %d outside the history" % day)
        if self.wrong_echo:
            self.wrong_echo -= 1
            raise EchoMismatch("0xE1 echoes day %d, requested %d" % (day + 1, day))
        self.history_reads.append(day)
        ld = self._meter_local_days() - day
        base = timeutil.slot_of_t2k(ld * timeutil.DAY_S - self.tz * 60)
        now_slot = timeutil.slot_of_t2k(self.meter_t())
        fwd, rev = [], []
        for i in range(48):
            s = base + i
            f, r = (None, None) if s > now_slot else self._value(s)
            fwd.append(f)
            rev.append(r)
        if self.date_jump_after_history:
            self.date_jump_after_history = False
            self.clock_offset_s += timeutil.DAY_S
        return fwd, rev


class StepClock:
    """Calendar clock for scenario tests: set by the test, no real time involved."""

    def __init__(self, t=None):
        self.t = t

    def now_t2k(self):
        return self.t

    def is_set(self):
        return self.t is not None

    def set_t2k(self, t):
        self.t = t

    def ms_until(self, t2k):
        if self.t is None:
            return None
        return max(0, (t2k - self.t) * 1000)
