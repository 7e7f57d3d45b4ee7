# Push scheduler: sends a DataNotification (firmware/cosem/push.py) for every stored 30-minute
# slot of every meter -- each new slot, and each slot filled later by backfill -- through the radio
# to the configured destination (docs/dlms.md "Push").
#
# The store is the queue. Per meter, a cursor says "every slot <= cursor stored so far was pushed
# (or given up on)", so the slots to push are the stored slots above the cursor plus the slots at
# or below it that were stored after it passed them (backfill): those are bits of a RAM bitmap
# over the `backlog_slots` below the cursor (one bit per slot, a ring indexed by slot % size). The
# oldest pending slot goes first: the bitmap is drained before the cursor moves on.
#
# Power cuts (at-least-once): the state file keeps a floor per meter, at most the cursor and
# below every pending bitmap slot. It is written (a) before a backfilled record at or below the
# persisted floor is appended (store put listener), so no such slot can be stored and forgotten,
# and (b) when the floor has advanced `persist_every` slots. After a reboot every stored slot
# above the floor is pushed again: up to persist_every - 1 slots (or the bitmap's span) twice.
#
# Timing: real ticks (compat.ticks_*) for back-off, the rate limit and the randomised start; the
# calendar clock only for the communication window and the notification's date-time.
import asyncio

from firmware import events, log
from firmware.app import config as cfgmod
from firmware.compat import const, ticks_add, ticks_diff, ticks_ms, wait_ms

_TAG = "push"
_MAX_BACKOFF_MS = const(3600000)  # back-off never waits longer than an hour
_IDLE_MS = const(60000)  # nothing pending: look at the store again this often anyway
_WINDOW_POLL_MS = const(60000)  # outside the window, or no calendar time: check again
_SLOT_MAX = const(0x3FFFFFFF)
_AHEAD = const(16)  # live slots remembered as pushed while a backlog drains (8 hours)

# the `push` configuration section (defaults and their meaning: firmware/app/config.py)
DEFAULTS = cfgmod.DEFAULTS["push"]
STATE_KEY = "push_cursor"


class _Meter:
    """Push progress of one meter."""

    def __init__(self, view, cursor, size):
        self.view = view
        self.cursor = cursor  # every slot <= cursor stored so far is pushed (or given up)
        self.bits = bytearray((size + 7) // 8)  # pending slots in (cursor - size, cursor]
        self.nbits = 0
        self.low = _SLOT_MAX  # <= the lowest pending bit (reset when the bitmap empties)
        self.saved = cursor  # the floor in the state file
        self.ahead = []  # slots above the cursor pushed ahead of the backlog (at most _AHEAD)
        self.epoch = 0  # rewinds so far: a slot picked before a rewind must not move the cursor


class PushScheduler:
    """views: one MeterView per meter (rows(from, to)); settings: cosem.push.PushSettings;
    encoder: cosem.push.DataNotificationEncoder; clock: the calendar clock (now_t2k, and
    ms_until when present); state: StateFile or None; event: fn(code, detail); cfg: `push`.

    Pure core: due(now_ms), sent(ok, now_ms), not_ready(now_ms), on_put(meter, slot). run()
    is the thin async shell around it. The queue (_pick, _done_slot, on_put) is also the MQTT
    telemetry's (firmware/app/telemetry.py), under its own state key."""

    state_key = STATE_KEY

    def __init__(self, views, settings, encoder, clock, cfg=None, state=None,
                 event=events.ignore, tag=_TAG):
        c = dict(DEFAULTS)
        c.update(cfg or {})
        self.settings = settings
        self.encoder = encoder
        self.clock = clock
        self.state = state
        self.event = event
        self.tag = tag
        self.size = max(8, c["backlog_slots"])
        self.persist_every = max(1, c["persist_every"])
        rate = max(1, c["rate_per_min"])
        self.interval_ms = 60000 // rate
        self.cap_ms = max(1, c["burst"]) * self.interval_ms
        self._credit = self.cap_ms
        self._refilled = None
        seed = c["seed"] or (ticks_ms() | 1)
        self._seed = seed & 0x7FFFFFFF
        self.stats = {"sent": 0, "failed": 0, "given_up": 0, "not_ready": 0, "persisted": 0,
                      "rewinds": 0}
        saved = state.get(self.state_key) if state is not None else None
        self.meters = []
        fresh = False
        for k in range(len(views)):
            v = views[k]
            if isinstance(saved, list) and k < len(saved) and isinstance(saved[k], int):
                cur = saved[k]
            else:
                # first start with push on: what is stored already is not pushed (the profile
                # serves it); every slot stored from now on is
                last = v.latest()
                cur = -1 if last is None else last[0]
                fresh = True
            self.meters.append(_Meter(v, cur, self.size))
        if fresh:
            self._persist()
        self.current = None  # (meter index, row) being pushed
        self.tries = 0  # failed sends of the current slot
        self._redo = False  # the current slot was stored again while it was being sent
        self._next_at = None  # ticks before which the current slot is not sent
        self._not_ready = 0  # consecutive sends skipped because the radio was not ready
        self._rr = 0  # the meter looked at first (round robin)
        self._epoch = 0  # the picked meter's epoch at the pick
        self._ahead = False  # _next chose the newest slot ahead of the backlog
        self._picked_ahead = False
        self.invoke = 0
        self.wake = None  # asyncio.Event, created by run()

    # -- the queue ---------------------------------------------------------------------------

    def floor(self, m):
        return m.cursor if m.nbits == 0 else min(m.cursor, m.low - 1)

    def _persist(self):
        if self.state is None:
            return
        floors = [self.floor(m) for m in self.meters]
        try:
            self.state.set(self.state_key, floors)
        except OSError as e:  # a full or failing filesystem: push on, say what is at stake
            log.error(self.tag, "push floor not saved (%s): after a power cut some slots may "
                      "not be pushed again" % e)
            return
        for i in range(len(floors)):
            self.meters[i].saved = floors[i]
        self.stats["persisted"] += 1

    def _bit(self, m, slot):
        i = slot % self.size
        return m.bits[i >> 3] & (1 << (i & 7))

    def _set_bit(self, m, slot):
        i = slot % self.size
        if not m.bits[i >> 3] & (1 << (i & 7)):
            m.bits[i >> 3] |= 1 << (i & 7)
            m.nbits += 1
            if slot < m.low:
                m.low = slot

    def _clear_bit(self, m, slot):
        i = slot % self.size
        if m.bits[i >> 3] & (1 << (i & 7)):
            m.bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
            m.nbits -= 1
            if m.nbits == 0:
                m.low = _SLOT_MAX

    def on_put(self, meter, slot):
        """Store put listener: a record for (meter, slot) is about to be appended. Never raises:
        the push must not stop a value from being stored."""
        try:
            self._on_put(meter, slot)
        except Exception as e:  # noqa: BLE001 - a push bug must not cost a stored value
            log.exc(self.tag, "put listener failed for meter %d slot %d" % (meter, slot), e)

    def _on_put(self, meter, slot):
        if meter >= len(self.meters):
            return
        m = self.meters[meter]
        cur = self.current
        if cur is not None and cur[0] == meter and cur[1][0] == slot:
            self._redo = True  # a newer value of the slot in flight: push it again after
        if slot <= m.cursor:
            if m.cursor - slot < self.size:
                self._set_bit(m, slot)
            else:
                # older than the bitmap reaches: push everything from there again (duplicates
                # of pushed slots, never a lost one)
                self.stats["rewinds"] += 1
                log.info(self.tag, "meter %d slot %d stored below the push backlog: rewinding"
                         % (meter, slot))
                self._rewind(m, slot - 1)
            if self.floor(m) < m.saved:
                self._persist()  # before the record exists in flash
        if self.wake is not None:
            self.wake.set()

    def _rewind(self, m, cursor):
        m.cursor = cursor
        m.bits[:] = bytes(len(m.bits))
        m.nbits = 0
        m.low = _SLOT_MAX
        m.ahead = []
        m.epoch += 1

    def _lowest_bit(self, m):
        """The lowest pending bitmap slot of m (m.nbits > 0)."""
        start = m.low if m.low > m.cursor - self.size else m.cursor - self.size + 1
        for s in range(start, m.cursor + 1):
            if self._bit(m, s):
                m.low = s
                return s
        # unreachable while nbits counts the bits in the window; repair by pushing the whole
        # window again rather than lose a slot
        log.error(self.tag, "meter bitmap lost count: pushing the backlog window again")
        self._rewind(m, m.cursor - self.size)
        return None

    def _first_above(self, m):
        """The oldest stored row above the cursor; slots already pushed ahead move the cursor."""
        while True:
            row = None
            for r in m.view.rows(m.cursor + 1, _SLOT_MAX):
                row = r
                break
            if row is None or row[0] not in m.ahead:
                return row
            m.ahead.remove(row[0])  # pushed ahead of the backlog: done
            m.cursor = row[0]

    def _next(self, m):
        """The next row of meter m to push, or None: the newest stored slot first when a
        backlog is still draining (a live value is never held behind 45 days of history),
        then the oldest pending one."""
        self._ahead = False
        first = self._first_above(m)
        if first is not None:
            last = m.view.latest()
            if (last is not None and last[0] not in m.ahead
                    and (last[0] > first[0] or m.nbits)):
                self._ahead = True
                return last
        row = self._oldest_backfilled(m)
        return first if row is None else row

    def _oldest_backfilled(self, m):
        """The stored row of m's lowest pending bitmap slot, or None (also the MQTT queue's,
        firmware/app/telemetry.py)."""
        while m.nbits:
            s = self._lowest_bit(m)
            if s is None:
                break
            for row in m.view.rows(s, s):
                return row
            self._clear_bit(m, s)  # gone from the store (ring wrapped): nothing to send
        return None

    def _pick(self):
        n = len(self.meters)
        for j in range(n):
            k = (self._rr + j) % n
            row = self._next(self.meters[k])
            if row is not None:
                self._rr = (k + 1) % n
                self._epoch = self.meters[k].epoch
                self._picked_ahead = self._ahead
                return (k, row)
        return None

    def _done_slot(self):
        k, row = self.current
        m = self.meters[k]
        slot = row[0]
        if m.epoch != self._epoch:
            pass  # rewound meanwhile: the slot is above the new cursor and goes again
        elif self._picked_ahead:
            if self._redo:
                pass  # stored again meanwhile: it goes again in its turn
            elif slot > m.cursor:
                if len(m.ahead) >= _AHEAD:
                    m.ahead.pop(0)  # forgotten: pushed once more in its turn (at least once)
                m.ahead.append(slot)
            else:
                self._clear_bit(m, slot)
        elif slot > m.cursor:
            if m.nbits and slot - m.low >= self.size:
                self._rewind(m, m.low - 1)  # the bitmap cannot span the jump: push again
            else:
                m.cursor = slot
                if self._redo:
                    self._set_bit(m, slot)
        else:
            self._clear_bit(m, slot)
            if self._redo:
                self._set_bit(m, slot)
        self.current = None
        self.tries = 0
        self._redo = False
        self._next_at = None
        if self.floor(m) - m.saved >= self.persist_every:
            self._persist()

    # -- timing ------------------------------------------------------------------------------

    def _rand(self, n):
        self._seed = (self._seed * 1103515245 + 12345) & 0x7FFFFFFF
        return (self._seed >> 8) % n if n > 0 else 0

    def _window_wait_ms(self):
        s = self.settings
        if not s.windows:
            return 0
        now = self.clock.now_t2k()
        if now is None:
            return _WINDOW_POLL_MS  # no time of day yet
        local = now + self.encoder.env.offset_min * 60
        mins = s.minutes_to_window((local % 86400) // 60)
        if mins == 0:
            return 0
        target = now - local % 60 + mins * 60
        ms_until = getattr(self.clock, "ms_until", None)
        ms = ms_until(target) if ms_until is not None else (target - now) * 1000
        if ms is None or ms > _WINDOW_POLL_MS:
            return _WINDOW_POLL_MS
        return max(ms, 1)

    def _refill(self, now_ms):
        if self._refilled is not None:
            self._credit = min(self.cap_ms, self._credit + ticks_diff(now_ms, self._refilled))
        self._refilled = now_ms

    def due(self, now_ms):
        """None when the current slot should be sent now; else real ms to wait (a wake-up by
        on_put or a trigger may come earlier)."""
        self._refill(now_ms)
        if self.current is None:
            picked = self._pick()
            if picked is None:
                return _IDLE_MS
            self.current = picked
            self.tries = 0
            self._redo = False
            r = self.settings.randomisation_s
            # the first send after an idle queue (a new boundary, a backfill) starts at a
            # random point of [0, randomisation_s]: terminals behind one smart meter spread out
            self._next_at = ticks_add(now_ms, self._rand(r * 1000 + 1)) if r else None
        if self._next_at is not None:
            d = ticks_diff(self._next_at, now_ms)
            if d > 0:
                return d
            self._next_at = None
        w = self._window_wait_ms()
        if w:
            return w
        if self._credit < self.interval_ms:
            return self.interval_ms - self._credit
        return None

    def trigger(self):
        """Push setup method 1: send the current slot now (back-off and randomisation waived;
        the rate limit still holds)."""
        self._next_at = None
        if self.wake is not None:
            self.wake.set()

    def _backoff_ms(self, n):
        ms = self.settings.repetition_delay_s * 1000
        while n > 1 and ms < _MAX_BACKOFF_MS:
            ms *= 2
            n -= 1
        return min(ms, _MAX_BACKOFF_MS)

    def sent(self, ok, now_ms):
        """Outcome of the send due() asked for."""
        self._credit -= self.interval_ms
        self._not_ready = 0
        k, row = self.current
        if ok:
            self.stats["sent"] += 1
            self._done_slot()
            return
        self.stats["failed"] += 1
        self.tries += 1
        if self.tries > self.settings.retries:
            self.stats["given_up"] += 1
            log.warn(self.tag, "meter %d slot %d not pushed after %d attempts: given up"
                     % (k, row[0], self.tries))
            self.event(events.PUSH_GIVEN_UP, row[0])
            self._redo = False  # given up: its newer value waits for the next trigger too
            self._done_slot()
            return
        self._next_at = ticks_add(now_ms, self._backoff_ms(self.tries))

    def not_ready(self, now_ms):
        """The radio cannot send (not joined, no destination): wait with the same back-off,
        without spending the slot's retries (an outage delays pushes, it does not drop them)."""
        self.stats["not_ready"] += 1
        self._not_ready += 1
        self._next_at = ticks_add(now_ms, self._backoff_ms(self._not_ready))

    # -- the async shell ---------------------------------------------------------------------

    def destination(self, session):
        """16-byte IPv6 of the destination, or None (smart meter not joined yet)."""
        ip = self.settings.dst_ip
        if ip is not None:
            return ip
        mac = getattr(session, "peer_mac", None)
        if mac is None:
            return None
        from firmware.radio import j11

        return j11.link_local_of_mac(mac)

    async def run(self, session):
        """Forever: push through session (is_ready(), async send(dst, port, payload))."""
        self.wake = asyncio.Event()
        while True:
            now = ticks_ms()
            wait = self.due(now)
            if wait is None:
                dst = self.destination(session)
                # bulk traffic: stops while the radio keeps its T108 reserve for DLMS replies
                may = getattr(session, "may_send", None)
                if dst is None or not session.is_ready() or (may is not None and not may(True)):
                    self.not_ready(now)
                    continue
                k, row = self.current
                self.invoke = (self.invoke + 1) & 0xFFFFFF
                st = self.clock.status() if hasattr(self.clock, "status") else 0
                wpdu = self.encoder.encode(row, self.settings.client_sap, self.invoke,
                                           self.clock.now_t2k(), st)
                try:
                    ok = await session.send(dst, self.settings.port, wpdu)
                except Exception as e:  # noqa: BLE001 - a radio bug must not stop pushing
                    log.exc(self.tag, "send failed", e)
                    ok = False
                self.sent(ok, ticks_ms())
                if ok:
                    log.debug(self.tag, "meter %d slot %d pushed" % (k, row[0]))
                continue
            self.wake.clear()
            try:
                await wait_ms(self.wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
