# The 30-minute capture loop for one meter: after every :00/:30 boundary of the calendar clock
# (set by the smart meter), read the meter's fixed-time values (0xE6/0xE7) and store one record for
# the slot that begins at that boundary.
#
# A value is stored only if the meter stamped it with exactly the expected boundary; otherwise the
# read is retried, and after `give_up_after_s` the slot is left missing (visible, never invented)
# for the backfill from the meter's own history.
from firmware import events, health, log, timeutil
from firmware.compat import sleep_ms
from firmware.meter.drmeter import MeterTimeout, UnitChanged

_MAX_NAP_MS = 500  # wake at least this often: the clock can be stepped by the smart meter


class SlotPoller:
    def __init__(self, clock, reader, sink, meter_index, cfg, tag="meter", event=events.ignore):
        """reader: .read_unit() and .read_fixed_time() -> (boundary_t2k, fwd|None, rev|None)
        sink: .has(meter, slot) and .store(meter, slot, fwd, rev, unit_code, source, flags);
        optionally .last_unit(meter): the unit of the newest stored record (a change while the
        terminal was off is then seen too)
        event: fn(code, detail) of the event log (firmware.events)"""
        self.clock = clock
        self.event = event
        self._seen_unit = None  # the unit last read from the meter (unit_code is reset to None
        # when the client says the unit changed; this one is kept to tell a change)
        self.reader = reader
        self.sink = sink
        self.meter = meter_index
        self.cfg = cfg
        self.tag = tag
        self.unit_code = None
        self.pending_flags = 0
        self.stats = {"stored": 0, "retries": 0, "given_up": 0, "errors": 0, "skew": 0,
                      "unexpected": 0}
        self._retry_at = None  # (slot, t2k) of the next retry for a slot not yet published
        self._failing = False  # the last read failed (meter silent or refusing)
        self._gave_up = None  # the slot last given up on
        self._target = None  # the slot the previous pass aimed at
        self.on_event = None  # fn(name): "stored", "recovered" (after an outage), "gave_up"

    def _notify(self, name):
        if self.on_event is not None:
            self.on_event(name)

    def flag_next(self, flags):
        """OR flags (e.g. clock adjusted) into the next stored record."""
        self.pending_flags |= flags

    def target_boundary(self, now):
        """The newest boundary whose read delay has elapsed at calendar time `now`."""
        t = now - self.cfg["read_delay_s"]
        return t - t % timeutil.SLOT_S

    async def step(self):
        """One pass; returns real milliseconds to sleep before the next pass."""
        now = self.clock.now_t2k()
        if now is None:
            return _MAX_NAP_MS  # no time yet: slots cannot be placed
        b = self.target_boundary(now)
        slot = timeutil.slot_of_t2k(b)
        next_b = b + timeutil.SLOT_S + self.cfg["read_delay_s"]
        last, self._target = self._target, slot
        if last is not None and slot > last + 1:
            # Boundaries passed while one read was outstanding (a meter that timed out for hours
            # through retries and bisection) or the clock jumped: none of them was given up on
            # here, so ask for a whole backfill pass, not only today's.
            log.info(self.tag, "%d boundaries passed unread" % (slot - last - 1))
            self._notify("gave_up")
        if self.sink.has(self.meter, slot):
            return self._nap(next_b)
        if now - b > self.cfg["give_up_after_s"]:
            # Reached only if the terminal was not running (or the meter was silent) for the slot.
            if self._gave_up == slot:
                return self._nap(next_b)  # said once per slot, not on every pass
            self._gave_up = slot
            self.stats["given_up"] += 1
            log.warn(self.tag, "slot %s missing: no fixed-time value in time"
                     % timeutil.iso(b, self.cfg["tz_offset_min"]))
            self._notify("gave_up")
            return self._nap(next_b)
        if self._retry_at and self._retry_at[0] == slot and now < self._retry_at[1]:
            return self._nap(self._retry_at[1])
        hold = getattr(self.clock, "hold", None)
        if hold is not None:
            # A step of the clock waits until this capture is stored (docs/clock.md): the record
            # and its clock-adjusted flag then belong to one side of the step.
            hold()
        try:
            await self._read(b, slot, now)
        finally:
            if hold is not None:
                self.clock.release()
        if self.sink.has(self.meter, slot):
            return self._nap(next_b)
        self._retry_at = (slot, now + self.cfg["retry_every_s"])
        return self._nap(self._retry_at[1])

    def _nap(self, t2k):
        ms = self.clock.ms_until(t2k)
        if ms is None or ms > _MAX_NAP_MS:
            return _MAX_NAP_MS
        return max(ms, 1)

    async def _read(self, b, slot, now):
        try:
            if self.unit_code is None:
                self.unit_code = await self.reader.read_unit()
                log.info(self.tag, "unit code 0x%02X" % self.unit_code)
                self._check_unit(self.unit_code)
            stamp, fwd, rev = await self.reader.read_fixed_time()
        except (MeterTimeout, ValueError, OSError) as e:
            # Silence, refusals, malformed or inconsistent values (every codec error is a
            # ValueError), a send that failed: logged, retried later.
            self.stats["errors"] += 1
            self._failing = True
            if isinstance(e, UnitChanged):  # meter swapped/rebooted: read the unit again
                self.unit_code = None
            log.warn(self.tag, "read for %s failed: %s(%s)"
                     % (timeutil.iso(b, self.cfg["tz_offset_min"]), type(e).__name__, e))
            return
        except Exception as e:  # noqa: BLE001 - a bug: said with its traceback, counted, retried
            self.stats["errors"] += 1
            self.stats["unexpected"] += 1
            self._failing = True
            log.exc(self.tag, "read for %s: unexpected error"
                    % timeutil.iso(b, self.cfg["tz_offset_min"]), e)
            return
        tz = self.cfg["tz_offset_min"]
        if self._failing:
            self._failing = False
            log.info(self.tag, "meter answers again")
            self._notify("recovered")
        if stamp != b:
            self.stats["retries"] += 1
            if stamp is not None and stamp > b:
                self.stats["skew"] += 1
            log.info(
                self.tag,
                "fixed-time value stamped %s, want %s: retrying"
                % (timeutil.iso(stamp, tz), timeutil.iso(b, tz)),
            )
            return
        if fwd is None or rev is None:
            self.stats["retries"] += 1
            log.info(self.tag, "meter has no value for %s yet (0xFFFFFFFE)" % timeutil.iso(b, tz))
            return
        take = getattr(self.reader, "take_flags", None)
        if take is not None:
            self.pending_flags |= take()  # e.g. meter reset/replaced, seen by the client
        flags = self.pending_flags
        self.sink.store(self.meter, slot, fwd, rev, self.unit_code, "fixed", flags)
        self.pending_flags = 0
        self.stats["stored"] += 1
        self._notify("stored")
        log.info(self.tag, "slot %s +A=%d -A=%d (unit 0x%02X)" % (
            timeutil.iso(b, self.cfg["tz_offset_min"]), fwd, rev, self.unit_code))

    def _check_unit(self, code):
        """UNIT_CHANGE when the meter's unit differs from the one read before, or (first read
        after boot) from the newest stored record's. Records keep their own unit, so the
        values served stay exact (docs/dlms.md "Values and scaler"); the event says why the
        raw counters jump."""
        prev = self._seen_unit
        if prev is None:
            last_unit = getattr(self.sink, "last_unit", None)
            prev = last_unit(self.meter) if last_unit is not None else None
        self._seen_unit = code
        if prev is not None and prev != code:
            log.warn(self.tag, "meter unit changed: 0x%02X -> 0x%02X" % (prev, code))
            self.event(events.UNIT_CHANGE, self.meter * 256 + code)

    async def run(self):
        while True:
            ms = await self.step()
            health.beat(self.tag)  # a pass done (docs/architecture.md, progress watchdog)
            await sleep_ms(ms)
