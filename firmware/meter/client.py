# The meter reader: the terminal's ECHONET Lite controller (0x05FF01) for one meter object, on top
# of the request transport (firmware/meter/transport.py: TIDs, one outstanding request, timeouts).
#
# Reads are driven by the meter's Get property map (0x9F) and a per-class profile
# (firmware/meter/profiles.py). read() learns what the meter can take: a smaller per-Get EPC
# capacity (short answers or silence on large batches) and "poison" EPCs that make the meter drop
# any Get containing them (found by bisection, then never asked again for poison_hold_ms); a
# timeout is followed by liveness probes before the meter is declared silent. Identity and
# scaling (unit, coefficient, digits) are read once per meter generation and checked against
# every value returned: counters that fall flag a meter reset, a moved unit raises UnitChanged.
#
# Over the ~400 lines of a module (about 450): every read shares the learned state (capacity,
# poison, probe, identity, scaling) of one meter object; splitting the reads from the learner
# would cost a second object per meter or a module's import heap for no reuse.
import asyncio

from firmware import events, log, timeutil
from firmware.compat import const, ticks_diff, ticks_ms
from firmware.meter import drmeter, echonet, profiles
from firmware.meter.drmeter import MeterError, MeterTimeout, UnitChanged
from firmware.meter.echonet import EchonetError
from firmware.meter.transport import STATS, Transport
from firmware.store.record import FLAG_METER_RESET

_PROBES = const(2)  # liveness probes after a timeout, each costing a time-out if unanswered
_PROBE_EPCS = (0x9F, 0x80, 0x82, 0x8A)  # in every object: Get map, status, version, maker
_DEFAULT_BATCH = const(16)  # EPCs per Get until the meter shows it takes fewer
_EPC_GET_MAP = const(0x9F)
_STATS = STATS + ("splits", "poisoned", "day_races", "wraps", "resets", "rediscoveries")

def _unique(seq):
    out = []
    for e in seq:
        if e not in out:
            out.append(e)
    return out


class MeterClient(Transport):
    def __init__(self, endpoint, meter_addr, config=None, responder=None, first_tid=None,
                 tag="echonet"):
        """endpoint: UDP endpoint (recv/sendto); meter_addr: (ip, port).
        config: the "meter" config section (timeout_ms 1..20000, retries, eoj, tz_offset_min,
        max_batch, history_retries, poison_hold_ms).
        responder: the terminal's NodeResponder (one for every meter), or None."""
        cfg = config or {}
        Transport.__init__(self, endpoint, meter_addr, cfg.get("eoj", echonet.EOJ_DR_METER),
                           cfg.get("timeout_ms", 5000), cfg.get("retries", 3), first_tid, tag,
                           responder, _STATS)
        # None for a class without a profile (e.g. a node profile queried with get()).
        self.profile = profiles.PROFILES.get(self.deoj >> 8)
        self.tz = cfg.get("tz_offset_min", 540)
        self.max_batch = max(1, cfg.get("max_batch", _DEFAULT_BATCH))
        self.history_retries = cfg.get("history_retries", 3)
        self.poison_hold_ms = cfg.get("poison_hold_ms", 3600000)
        self._flags = 0
        self.event = events.ignore  # the event log's event(code, detail), set by the app
        self.meter_index = 0  # the detail of this meter's events
        self._announced_unit = None  # what read_unit() last returned
        self._hist_lock = asyncio.Lock()  # SetC day + Get history belong together
        self._forget_meter()

    def _forget_meter(self):
        """Drop everything learned about the meter (a different meter may answer next)."""
        self.cap = self.max_batch  # EPCs per Get the meter is known to take
        self._poison = {}  # EPC -> ticks_ms when isolated
        self._reading = ()  # the EPCs of the read() in progress
        self._good_epc = _EPC_GET_MAP  # an EPC the meter answered alone: the liveness probe
        self.getmap = None  # EPCs of 0x9F, or None if the meter did not give a usable map
        self.identity_key = None
        self._last = None  # (stamp, fwd, rev) of the newest fixed-time reading
        self._ready = False
        self.unit_code = None  # the meter's own unit code
        self.coefficient = 1
        self.digits = self.profile.fixed_digits if self.profile else None
        self.store_unit_code = None  # unit code of (raw, unit) as stored, coefficient folded in

    # --- learned meter behaviour: property map, batch capacity, poison EPCs -----------------

    def _askable(self, epc):
        if self.getmap is not None and epc not in self.getmap:
            return False
        t = self._poison.get(epc)
        if t is None:
            return True
        if ticks_diff(ticks_ms(), t) >= self.poison_hold_ms:
            del self._poison[epc]  # give it another chance (firmware update, transient fault)
            log.info(self.tag, "asking for 0x%02X again after %d ms" % (epc, self.poison_hold_ms))
            return True
        return False

    def is_poisoned(self, epc):
        return epc in self._poison

    def _learn_cap(self, cap, why):
        if cap < self.cap:
            self.cap = cap
            log.warn(self.tag, "meter takes at most %d EPCs per Get (%s)" % (cap, why))

    async def _alive(self, avoid):
        """True if the meter answers a Get of one probe EPC not in `avoid`: the EPC it last
        answered alone, then properties every ECHONET Lite object has (0x9F, 0x80, 0x82, 0x8A),
        then the other EPCs being read, until one answers (a meter that silently drops a Get of
        0x9F or 0x80 itself is still alive), at most _PROBES of them. False if every probe went
        unanswered; None if no candidate is left outside `avoid` and the isolated EPCs."""
        tried = ()
        for e in (self._good_epc,) + _PROBE_EPCS + self._reading:
            if e in avoid or e in self._poison or e in tried:
                continue
            if len(tried) >= _PROBES:
                break
            tried += (e,)
            try:
                await self._get_once((e,))
                self._good_epc = e
                return True
            except MeterTimeout:
                continue
        return False if tried else None

    async def read(self, epcs):
        """{epc: bytes|None} for `epcs` in as many Gets as the meter needs. EPCs absent from the
        meter's 0x9F map or isolated as poison are not asked (None). MeterTimeout only when the
        meter answers nothing at all."""
        out = {}
        for e in epcs:
            out[e] = None
        ask = [e for e in epcs if self._askable(e)]
        self._reading = tuple(ask)  # more liveness probes when the usual ones are poison
        try:
            await self._read_list(ask, out)
        finally:
            self._reading = ()
        return out

    async def _read_list(self, epcs, out):
        """Read epcs in batches of the current cap; True if any EPC came back in a reply."""
        got = False
        i = 0
        while i < len(epcs):
            batch = epcs[i:i + self.cap]
            i += len(batch)
            ok, present = await self._read_batch(batch, out)
            got = got or bool(present)
        return got

    async def _read_batch(self, batch, out):
        """(clean, present): clean = answered without timeouts below; present = EPCs that came
        back in replies."""
        try:
            _, props = await self._get_once(batch)
        except MeterTimeout:
            return await self._after_timeout(batch, out)
        present = self._fill(out, props)
        if len(batch) == 1 and out[batch[0]] is not None:
            self._good_epc = batch[0]
        missing = [e for e in batch if e not in present]
        k = len(present)
        if missing and k and present == batch[:k]:
            # Only the first k EPCs answered: a capacity limit, if asking the rest works.
            self.stats["splits"] += 1
            saved, self.cap = self.cap, min(self.cap, k)
            got = await self._read_list(missing, out)
            self.cap = saved
            if got:
                self._learn_cap(k, "answered %d of %d EPCs" % (k, len(batch)))
            present = present + [e for e in missing if out[e] is not None]
        return True, present

    async def _after_timeout(self, batch, out):
        alive = await self._alive(batch)
        # Without a probe a batch is still bisected (its halves get probes of their own), but
        # a single EPC is never convicted.
        if alive is False or (alive is None and len(batch) == 1):
            raise MeterTimeout("meter %s answers nothing (Get %s and a probe unanswered)"
                               % (self.addr[0], ",".join("%02X" % e for e in batch)))
        if len(batch) == 1:
            epc = batch[0]
            self._poison[epc] = ticks_ms()
            self.stats["poisoned"] += 1
            log.warn(self.tag, "meter drops every Get containing 0x%02X: not asked for %d ms"
                     % (epc, self.poison_hold_ms))
            return False, []
        # Bisect: a batch that fails only for its size splits cleanly; a poison EPC is chased
        # down to one EPC while the rest is still read.
        self.stats["splits"] += 1
        h = (len(batch) + 1) // 2
        ok1, p1 = await self._read_batch(batch[:h], out)
        ok2, p2 = await self._read_batch(batch[h:], out)
        if ok1 and ok2:
            self._learn_cap(h, "a Get of %d EPCs went unanswered" % len(batch))
        return False, p1 + p2

    # --- meter identity and scaling ---------------------------------------------------------

    def invalidate(self, why):
        """Meter rebooted/rediscovered: map, scaling and identity are read again before the next
        value is returned (learned capacity and poison EPCs are kept unless the identity
        changed)."""
        if self._ready:
            self.stats["rediscoveries"] += 1
            log.info(self.tag, "meter state to be re-read: %s" % why)
        self._ready = False

    async def _prepare(self):
        """Property map, scaling, identity: once per meter generation."""
        if self._ready:
            return False
        p = self.profile
        if p is None:
            raise MeterError("meter class 0x%04X is not supported" % (self.deoj >> 8))
        vals = await self.read((_EPC_GET_MAP,))  # a meter that drops it still gets read
        edt = vals[_EPC_GET_MAP]
        getmap = None
        if edt is None:
            log.warn(self.tag, "meter gave no Get property map (0x9F): asking for everything")
        else:
            try:
                getmap = echonet.decode_propmap(edt)
            except EchonetError as e:
                log.warn(self.tag, "unusable Get property map: %s" % e)
        if getmap is not None:
            # The map answered on its own: it is the liveness probe from now on.
            self._good_epc = _EPC_GET_MAP
        self.getmap = getmap
        vals = await self.read(tuple(_unique(p.identity + p.scaling_epcs())))
        key = [vals[e] for e in p.identity]
        old = self.identity_key
        if old is not None:
            # Only EPCs answered both times count: a property that was unavailable once (SNA,
            # poison) is not a different meter.
            changed = False
            for i in range(len(key)):
                if key[i] is not None and old[i] is not None and key[i] != old[i]:
                    changed = True
                elif key[i] is None:
                    key[i] = old[i]
            if changed:
                log.warn(self.tag, "meter identity changed: another meter (or a reset one) "
                         "answers")
                self._flags |= FLAG_METER_RESET
                self.event(events.METER_REPLACED, self.meter_index)
                self._forget_meter()
                self.getmap = getmap
        self.identity_key = key
        self._ready = True
        try:
            self._scaling(vals)
        except ValueError as e:  # MeterError / MeterDataError: retried by the next value read
            self.store_unit_code = None
            log.warn(self.tag, "scaling not usable: %s" % e)
        return True

    async def _read_scaling(self):
        self._scaling(await self.read(self.profile.scaling_epcs()))

    def _scaling(self, vals):
        p = self.profile
        edt = vals[p.unit]
        if edt is None:
            raise MeterError("unit 0x%02X not available: values cannot be scaled" % p.unit)
        unit = drmeter.decode_unit(edt)
        coef = 1
        if p.coefficient is not None and vals[p.coefficient] is not None:
            coef = profiles.decode_coefficient(vals[p.coefficient])
        digits = p.fixed_digits
        if p.digits is not None:
            if vals[p.digits] is None:
                log.warn(self.tag, "effective digits 0x%02X not available: every decrease will "
                         "count as a meter reset" % p.digits)
                digits = None
            else:
                digits = profiles.decode_digits(vals[p.digits])
        store_code = profiles.store_unit(unit, coef)
        if (unit, coef, digits) != (self.unit_code, self.coefficient, self.digits):
            log.info(self.tag, "unit 0x%02X coefficient %d digits %s -> stored unit 0x%02X"
                     % (unit, coef, digits, store_code))
        self.unit_code, self.coefficient, self.digits = unit, coef, digits
        self.store_unit_code = store_code

    def _max_raw(self):
        return 10 ** (self.digits or 8) - 1

    async def _ensure(self):
        """Prepared, with a usable unit: values are never returned without one."""
        await self._prepare()
        if self.store_unit_code is None:
            await self._read_scaling()
        if self._announced_unit is not None and self.store_unit_code != self._announced_unit:
            raise UnitChanged("stored unit changed from 0x%02X to 0x%02X: read_unit() again"
                              % (self._announced_unit, self.store_unit_code))

    def take_flags(self):
        """Record flags (firmware.store.record) raised since the last call, e.g.
        FLAG_METER_RESET after a counter decrease or an identity change."""
        f = self._flags
        self._flags = 0
        return f

    async def candidates(self, ids=True):
        """[(eoj, device_type, metered_id)] of every object of our class on the meter's node: the
        node profile's instance list (0xD6), then (ids=True) each object's 0xD0 (device type,
        3 bytes) and 0xD6 (metered-device ID), None where not given or (ids=False) not asked.
        MeterError if the list is unusable."""
        vals = await self.get((0xD6,), echonet.EOJ_NODE_PROFILE)
        try:
            eojs = echonet.parse_instance_list(vals[0xD6] or b"")
        except EchonetError as e:
            raise MeterError("meter node gave no usable instance list (0xD6): %s" % e)
        out = []
        for eoj in eojs:
            if eoj >> 8 == self.deoj >> 8:
                if ids:
                    v = await self.get((0xD0, 0xD6), eoj)
                    out.append((eoj, v[0xD0], v[0xD6]))
                else:
                    out.append((eoj, None, None))
        return out

    async def find_instance(self, device_type=None, metered_id=None):
        """EOJ of the one candidate() whose 0xD0 / 0xD6 equal the given ones (None = any),
        selected for every later read. MeterError if none or several match."""
        found = [c[0] for c in await self.candidates()
                 if (device_type is None or c[1] == bytes(device_type))
                 and (metered_id is None or c[2] == bytes(metered_id))]
        if len(found) != 1:
            raise MeterError("%d meter objects of class 0x%04X match device type %s / metered "
                             "ID %s" % (len(found), self.deoj >> 8, device_type, metered_id))
        self.select(found[0])
        return found[0]

    def select(self, eoj):
        """Read meter object `eoj` from now on (what was learned about another is dropped)."""
        if eoj != self.deoj:
            log.info(self.tag, "meter object 0x%06X selected" % eoj)
            self.deoj = eoj
            self._forget_meter()

    # --- the reads the terminal makes ------------------------------------------------------

    async def read_unit(self):
        """The unit code the values are stored under (the meter's unit code with a power-of-ten
        coefficient folded in; never guessed). Re-reads the scaling properties every call."""
        if not await self._prepare() or self.store_unit_code is None:
            await self._read_scaling()  # raises MeterError while the unit is unavailable
        self._announced_unit = self.store_unit_code
        return self.store_unit_code

    def _delta(self, old, new):
        if self.digits is None or old > self._max_raw():
            return ("ok", new - old) if new >= old else ("reset", None)
        return drmeter.delta(old, new, 10 ** self.digits)

    def _check_counters(self, stamp, fwd, rev):
        """Classify the step from the previous fixed-time reading: wraps are logged; a decrease
        without wrap is a meter reset/replacement (flagged, state re-read), never a delta."""
        last = self._last
        if stamp is None:
            return
        if last is not None and stamp > last[0]:
            seen = None  # one event per reading, even if both counters moved
            for name, old, new in (("forward", last[1], fwd), ("reverse", last[2], rev)):
                if old is None or new is None:
                    continue
                kind, d = self._delta(old, new)
                if kind == "wrap":
                    self.stats["wraps"] += 1
                    log.info(self.tag, "%s counter wrapped: %d -> %d (+%d)" % (name, old, new, d))
                    seen = seen or events.COUNTER_WRAP
                elif kind == "reset":
                    self.stats["resets"] += 1
                    self._flags |= FLAG_METER_RESET
                    log.warn(self.tag, "%s counter fell %d -> %d: meter reset or replaced"
                             % (name, old, new))
                    self.invalidate("counter decrease")
                    seen = events.METER_RESET
            if seen is not None:
                self.event(seen, self.meter_index)
        if last is None or stamp >= last[0]:
            self._last = (stamp, fwd if fwd is not None else (last and last[1]),
                          rev if rev is not None else (last and last[2]))

    async def read_fixed_time(self):
        """(boundary_t2k, fwd_raw|None, rev_raw|None) from the fixed-time values (0x028E: 0xE6
        AC input = forward, 0xE7 AC output = reverse; 0x0288/0x028D: 0xEA/0xEB). MeterError if
        neither is available or the stamps disagree; MeterDataError if a stamp is not a :00/:30
        boundary; UnitChanged after a meter change until read_unit() is called again."""
        await self._ensure()
        p = self.profile
        vals = await self.read((p.fixed_fwd, p.fixed_rev))
        ef = vals[p.fixed_fwd]
        er = vals[p.fixed_rev]
        if ef is None and er is None:
            raise MeterError("fixed-time values 0x%02X/0x%02X both unavailable"
                             % (p.fixed_fwd, p.fixed_rev))
        stamp = None
        fwd = rev = None
        mx = self._max_raw()
        try:
            if ef is not None:
                stamp, fwd = drmeter.decode_fixed_time(ef, self.tz, True, "0x%02X" % p.fixed_fwd,
                                                       mx)
            if er is not None:
                sr, rev = drmeter.decode_fixed_time(er, self.tz, True, "0x%02X" % p.fixed_rev, mx)
                if ef is not None and sr != stamp:
                    raise MeterError("0x%02X and 0x%02X stamped differently (%s vs %s)"
                                     % (p.fixed_fwd, p.fixed_rev, timeutil.iso(stamp, self.tz),
                                        timeutil.iso(sr, self.tz)))
                stamp = sr
        except drmeter.MeterDataError as e:
            log.warn(self.tag, "fixed-time value rejected: %s" % e)
            raise
        self._check_counters(stamp, fwd, rev)
        if not self._ready:
            # A counter fell: identity and unit are read again before these values are trusted
            # (UnitChanged if the unit moved with the meter).
            await self._ensure()
        return stamp, fwd, rev

    async def read_history(self, day):
        """(forward[48], reverse[48]) raw|None for history day `day` (0 = meter's today).
        Sets the day selector, then reads both histories; the day echoed in each EDT must equal
        `day`. If another controller changed the selector in between, SetC + Get are repeated
        up to history_retries times."""
        await self._ensure()
        p = self.profile
        async with self._hist_lock:
            for attempt in range(1 + self.history_retries):
                if not await self.set_c(p.day, drmeter.encode_day(day, p.day_width)):
                    raise MeterError("meter refused history day %d (0x%02X)" % (day, p.day))
                vals = await self.read((p.hist_fwd, p.hist_rev))
                if vals[p.hist_fwd] is None and vals[p.hist_rev] is None:
                    raise MeterError("history 0x%02X/0x%02X both unavailable"
                                     % (p.hist_fwd, p.hist_rev))
                out = []
                echo = day
                for epc in (p.hist_fwd, p.hist_rev):
                    edt = vals[epc]
                    if edt is None:
                        out.append([None] * drmeter.HISTORY_SLOTS)
                        continue
                    e, slots = drmeter.decode_history(edt, "0x%02X" % epc, self._max_raw())
                    if e != day:
                        echo = e
                        break
                    out.append(slots)
                if echo == day:
                    return out[0], out[1]
                self.stats["day_races"] += 1
                log.warn(self.tag, "history echoes day %d, requested %d (selector changed by "
                         "another controller?), attempt %d/%d"
                         % (echo, day, attempt + 1, 1 + self.history_retries))
        raise MeterError("history echoes day %d, requested %d, %d times"
                         % (echo, day, 1 + self.history_retries))

    async def read_retention(self):
        """Oldest history day the meter keeps: 0x028E 0xD3 (None if 0xFFFF = no history or not
        available); classes without a retention property select 0..99 (slots the meter does
        not hold come back as no-data)."""
        await self._prepare()
        p = self.profile
        if p.retention is None:
            return drmeter.MAX_DAY
        edt = (await self.read((p.retention,)))[p.retention]
        return None if edt is None else drmeter.decode_retention(edt)
