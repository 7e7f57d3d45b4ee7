# Backfill planner: fills missing 30-minute slots from the meter's own day histories.
#
# 0x028E keeps 0xD3 days of history: SetC 0xD5 = day (0 = the meter's today), then Get 0xE1/0xE3
# gives the cumulative values at the 48 boundaries 00:00 ... 23:30 of that local date. The planner
#   1. lists the missing slots of the window (the store is the only state: idempotent, and after a
#      power cut it simply plans again),
#   2. maps each one to (day, index) using the METER's clock (day 0 is the meter's date, which can
#      differ from ours around midnight or after a clock step),
#   3. reads each needed day once, checks the echoed day, and stores every slot whose values are
#      both present (0xFFFFFFFE stays missing) with source "history",
#   4. re-reads the meter clock afterwards: if the meter's date changed meanwhile, the day numbers
#      moved, so nothing read in that pass is stored.
from firmware import events, log, timeutil
from firmware.app import heapmon
from firmware.compat import sleep_ms
from firmware.meter import drmeter
from firmware.meter.drmeter import MeterTimeout
from firmware.store.record import FLAG_CLOCK_ADJUSTED

_EPC_DATE = 0x98
_SLOTS_PER_DAY = 48
_ADJ_RANGES = 4  # crossed-slot ranges kept (a fifth drops the oldest: docs/clock.md)


class BackfillPlanner:
    def __init__(self, clock, reader, store, meter_index, cfg, tag="backfill"):
        """reader: read_retention() -> days|None, read_history(day) -> (fwd[48], rev[48]) and
        get(epcs) -> {epc: bytes|None} (0x98 date); store: missing(), put(); cfg: "meter"."""
        self.clock = clock
        self.reader = reader
        self.store = store
        self.meter = meter_index
        self.cfg = cfg
        self.tag = tag
        self.tz = cfg["tz_offset_min"]
        self.retention = None  # days of meter history (0xD3), read once per meter session
        self.unit_code = None  # set by the caller from the live meter (records need it)
        self.stats = {"runs": 0, "filled": 0, "unavailable": 0, "errors": 0, "date_moved": 0,
                      "meter_changed": 0, "unexpected": 0}
        self._no_history_said = False  # the missing 0xD3 is logged once, not every pass
        self.event = events.ignore  # the event log's event(code, detail), set by the app
        # [lo, hi] slot ranges whose boundary a clock step crossed (docs/clock.md): a slot in
        # one is filled with the clock-adjusted flag. RAM only (a power cut forgets them).
        self._adj = [0] * (2 * _ADJ_RANGES)
        self._nadj = 0

    def mark_adjusted(self, lo, hi):
        """Slots lo..hi had their boundary crossed by a clock step: re-read them (the caller
        asks for a pass) and flag what is filled there clock-adjusted."""
        a = self._adj
        n = self._nadj
        if n == _ADJ_RANGES:
            # full: forget the oldest (its slots are still re-read, without the flag; merging
            # ranges far apart would flag every slot between them)
            for i in range(2 * n - 2):
                a[i] = a[i + 2]
            n -= 1
        a[2 * n] = lo
        a[2 * n + 1] = hi
        self._nadj = n + 1

    def adjusted(self, slot):
        """True if a clock step crossed this slot's boundary (a range still kept)."""
        a = self._adj
        for i in range(self._nadj):
            if a[2 * i] <= slot <= a[2 * i + 1]:
                return True
        return False

    def _prune_adjusted(self, first, last):
        """Forget the ranges with nothing left to fill: wholly before the window (out of the
        meter's history) or wholly inside it with every slot stored."""
        a = self._adj
        i = 0
        while i < self._nadj:
            lo = a[2 * i]
            hi = a[2 * i + 1]
            done = hi < first
            if not done and lo >= first and hi <= last:
                done = True
                for _s in self.store.missing(self.meter, lo, hi):
                    done = False
                    break
            if done:
                n = self._nadj - 1
                a[2 * i] = a[2 * n]
                a[2 * i + 1] = a[2 * n + 1]
                self._nadj = n
            else:
                i += 1

    def forget_meter(self):
        """After a meter swap or reboot: re-read its retention before the next pass."""
        self.retention = None

    async def _read_retention(self):
        # The client knows each class's property (0xD3 means coefficient on 0x0288/0x028D).
        return await self.reader.read_retention()

    async def _meter_date(self):
        """The meter's own local date (0x98) as days since 2000-01-01: what its day 0 means."""
        vals = await self.reader.get((_EPC_DATE,))
        edt = vals.get(_EPC_DATE)
        if edt is None:
            raise drmeter.MeterDataError("meter did not return its date (0x98)")
        y, m, d = drmeter.decode_date(edt)
        return timeutil.days_from_civil(y, m, d)

    def _local_days(self, t2k):
        return (t2k + self.tz * 60) // timeutil.DAY_S

    def window(self, now, horizon_days):
        """(first_slot, last_slot) that backfill may fill: the last `horizon_days` local dates
        (as the meter keeps them: day 0 = today from 00:00), up to the boundary the 30-minute
        loop has given up on (it still owns the newer ones)."""
        last_b = now - self.cfg["give_up_after_s"] - 1
        last_b -= last_b % timeutil.SLOT_S
        first_day = self._local_days(now) - (horizon_days - 1)
        first_b = first_day * timeutil.DAY_S - self.tz * 60
        return timeutil.slot_of_t2k(first_b), timeutil.slot_of_t2k(last_b)

    async def run_once(self, horizon_days=None):
        """One pass over the window; returns the number of slots filled. Exceptions from the meter
        are logged and counted; the next pass starts from the store again."""
        self.stats["runs"] += 1
        now = self.clock.now_t2k()
        if now is None or self.unit_code is None:
            return 0
        try:
            return await self._pass(now, horizon_days)
        except (MeterTimeout, ValueError, OSError) as e:  # the meter's or the store's errors
            self.stats["errors"] += 1
            log.warn(self.tag, "pass failed: %s(%s)" % (type(e).__name__, e))
            return 0
        except Exception as e:  # noqa: BLE001 - a bug: said with its traceback, counted
            self.stats["errors"] += 1
            self.stats["unexpected"] += 1
            log.exc(self.tag, "pass failed: unexpected error", e)
            return 0

    async def _pass(self, now, horizon_days):
        if self.retention is None:
            days = await self._read_retention()
            if days is None:
                # No usable 0xD3 now: a meter without history, or one whose client holds 0xD3
                # back after a silence it took for "drops Gets with 0xD3". Asked again next pass
                # (counted as an error, so the caller keeps the whole window due): caching "no
                # history" here switched backfill off for the rest of the meter session.
                self.stats["errors"] += 1
                if not self._no_history_said:
                    self._no_history_said = True
                    log.warn(self.tag, "meter gives no history depth (0xD3): gaps cannot be "
                             "backfilled until it does")
                return 0
            self.retention = days
            self._no_history_said = False
        retention = self.retention  # this pass's: forget_meter() may reset the attribute
        days = retention + 1 if horizon_days is None else min(horizon_days, retention + 1)
        first, last = self.window(now, days)
        if first > last:
            return 0
        # Day by day (at most 48 slots held at once): list the day's missing slots, read the
        # meter's history of that day once, store what it has.
        meter_day = None
        filled = 0
        base_first = self._local_days(timeutil.t2k_of_slot(first))
        base_last = self._local_days(timeutil.t2k_of_slot(last))
        for ld in range(base_first, base_last + 1):
            base = timeutil.slot_of_t2k(ld * timeutil.DAY_S - self.tz * 60)
            a = base if base > first else first
            b = base + _SLOTS_PER_DAY - 1
            if b > last:
                b = last
            todo = list(self.store.missing(self.meter, a, b))
            if not todo:
                continue
            if meter_day is None:
                meter_day = await self._meter_date()
            d = meter_day - ld
            if d < 0 or d > retention:
                continue  # outside the meter's history: stays missing
            fwd, rev = await self.reader.read_history(d)
            heapmon.sample("backfill day")  # the day's 2 x 48 values are still referenced
            if self.retention is None:
                # forget_meter() ran while we waited (the meter rebooted or was replaced): this
                # day may be another meter's history; never store it. Planned again next pass.
                self.stats["meter_changed"] += 1
                log.info(self.tag, "meter changed during the pass: planning again")
                break
            if await self._meter_date() != meter_day:
                self.stats["date_moved"] += 1
                log.info(self.tag, "meter date changed during the pass: planning again")
                break
            for slot in todo:
                i = slot - base
                if fwd[i] is None or rev[i] is None:
                    self.stats["unavailable"] += 1
                    continue
                flags = FLAG_CLOCK_ADJUSTED if self._nadj and self.adjusted(slot) else 0
                if self.store.put(self.meter, slot, fwd[i], rev[i], self.unit_code, "history",
                                  flags):
                    filled += 1
            await sleep_ms(0)  # let the boundary read and the radio run between days
        if self._nadj and horizon_days is None:
            self._prune_adjusted(first, last)  # a full pass covered every range it could
        if filled:
            self.stats["filled"] += filled
            log.info(self.tag, "filled %d slots from the meter's history" % filled)
            self.event(events.BACKFILL_DONE, filled)
        return filled
