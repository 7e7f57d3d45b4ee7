# The radio session: join, serve, keep alive and rejoin, over any driver of the contract
# (firmware/radio/link.py, docs/radio.md "Session"). The session never sees a module's codes.
#
# Each attempt: reset -> version -> [active scan unless the peer is configured or cached] ->
# join -> open the application port -> ready. A failure backs off (capped exponential with
# jitter); a MAC failure and a failed join of the cached peer retry at once, a bounded number of
# times in a row. Bad credentials latch: no attempt until new credentials are set, so a wrong
# password never locks the terminal out. While ready: PANA re-authentication before the lifetime
# expires (sends wait at a gate meanwhile), the ARIB T108 budget of our own air time, and the
# watchdogs (link down, module silent, N unacknowledged sends, application silence) that tear the
# session down and join again.
import asyncio

from firmware import events as ev
from firmware import health, log
from firmware.compat import const, ticks_add, ticks_diff, ticks_ms, wait_ms
from firmware.radio import link
from firmware.radio.airtime import AirtimeBudget, airtime_ms

_TAG = "radio"

ST_IDLE = "idle"
ST_RESETTING = "resetting"
ST_SCANNING = "scanning"
ST_JOINING = "joining"
ST_OPENING = "opening"
ST_READY = "ready"
ST_REAUTH = "reauthenticating"
ST_BACKOFF = "backoff"
ST_AUTH_FAILED = "auth_failed"

SCAN_MASK_ALL = const(0x0003FFF0)  # J11 channels 4..17

DEFAULTS = {
    "route": "han",  # "han" (HAN / Enhanced HAN) or "b" (B-route)
    "mode": 3,  # HAN: 3 end device, 2 coordinator (relay-capable), 5 dual; B-route: always 5
    "channel": 4,  # used with a configured sm_mac; a scan finds the channel otherwise
    "pan_id": 0x1234,  # scan: only beacons of this PAN (-1 = any)
    "sm_mac": "",  # smart meter (PAN coordinator) MAC, 16 hex; "" = active scan
    "pana_password": "",
    "route_b_id": "",  # B-route authentication ID, 32 characters (secret)
    "udp_port": 4059,
    "scan_duration": 6,  # first scan duration (1..14); grows by 1 after each empty scan
    "scan_max_duration": 9,
    "scan_mask": SCAN_MASK_ALL,
    "pairing_id": "",  # 8 characters for the scan; "" = the last 8 of route_b_id (none on HAN)
    "tx_power": 0,  # 0 = 20 mW, 1 = 10 mW, 2 = 1 mW
    "backoff_min_ms": 2000,
    "backoff_max_ms": 300000,
    "fast_retries": 3,  # immediate retries in a row (MAC failure, cached peer gone), then back-off
    "liveness_s": 3600,  # 0 disables the application watchdog
    "stale_tries": 3,  # consecutive unacknowledged sends that tear the session down (0 = off)
    "pana_lifetime_s": 3600,  # [I] re-authenticate at 80 % of it (0 = never)
    "gate_wait_ms": 5000,  # the longest send() waits for a closed gate (re-auth, T108)
    "airtime_budget_ms": 360000,  # ARIB T108: 360 s of transmit time per hour
    "bulk_reserve_pct": 20,  # bulk traffic (push backlog) stops with this much budget left
    "cmd_timeout_ms": 5000,
    "reset_timeout_ms": 10000,
    "pana_timeout_ms": 60000,
    "tx_retries": 3,
    "rx_queue": 4,
    # a TX_LIMITED send with no limit-off event to follow (J11 reports none): the gate stays
    # closed this long before a send tries again
    "tx_limit_hold_ms": 60000,
}

MAC_RETRIES = const(3)  # MAC failures (J11 0x0E) reset and retried in a row, then back-off
_TIMEOUTS_BEFORE_REOPEN = const(2)
_REAUTH_PCT = const(80)
_LIMIT_ON_MS = const(3600000)  # EV_TX_LIMIT_ON: closed until OFF, at most the T108 hour

# LINK_DOWN event details (docs/events.md)
DOWN_LINK = const(1)  # the driver reported the link down (MAC/PANA disconnected)
DOWN_MODULE = const(2)  # the module stopped answering
DOWN_STALE = const(3)  # stale_tries sends in a row unacknowledged
DOWN_LIVENESS = const(4)  # no application activity for liveness_s
DOWN_REAUTH = const(5)  # PANA re-authentication failed
DOWN_REQUESTED = const(6)  # reopen() by the application

# join attempt outcomes
_OK = const(0)
_FAIL = const(1)  # back off
_FAST = const(2)  # retry at once (bounded by fast_retries)
_LATCHED = const(3)


def _int_in(cfg, key, lo, hi, default):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        log.error(_TAG, "%s %r out of range %d..%d; using %d" % (key, v, lo, hi, default))
        cfg[key] = default


def _settings(config):
    cfg = dict(DEFAULTS)
    for k, v in (config or {}).items():
        if k in cfg:
            cfg[k] = v
    if cfg["route"] not in ("han", "b"):
        log.error(_TAG, "radio route %r is not 'han' or 'b'; using 'han'" % (cfg["route"],))
        cfg["route"] = "han"
    if cfg["mode"] not in (2, 3, 5):
        log.error(_TAG, "radio mode %r unsupported for a terminal; using 3" % (cfg["mode"],))
        cfg["mode"] = 3
    if not (isinstance(cfg["channel"], int) and 4 <= cfg["channel"] <= 17):
        log.error(_TAG, "radio channel %r out of range 4..17; using 4" % (cfg["channel"],))
        cfg["channel"] = 4
    d = cfg["scan_duration"]
    if not (isinstance(d, int) and 1 <= d <= 14):
        log.error(_TAG, "scan_duration %r out of range 1..14; using 6" % (d,))
        cfg["scan_duration"] = 6
    if not (isinstance(cfg["scan_max_duration"], int) and
            cfg["scan_duration"] <= cfg["scan_max_duration"] <= 14):
        cfg["scan_max_duration"] = max(cfg["scan_duration"], 9)
    if not (isinstance(cfg["liveness_s"], int) and 0 <= cfg["liveness_s"] <= 86400):
        # ticks wrap after ~12 days; a day of silence is already far beyond any poll period
        log.error(_TAG, "liveness_s %r out of range 0..86400; using 3600" % (cfg["liveness_s"],))
        cfg["liveness_s"] = 3600
    _int_in(cfg, "pana_lifetime_s", 0, 86400, 3600)
    _int_in(cfg, "stale_tries", 0, 1000, 3)
    _int_in(cfg, "fast_retries", 0, 10, 3)
    _int_in(cfg, "gate_wait_ms", 0, 600000, 5000)
    _int_in(cfg, "airtime_budget_ms", 1000, 3600000, 360000)
    _int_in(cfg, "bulk_reserve_pct", 0, 90, 20)
    _int_in(cfg, "tx_limit_hold_ms", 100, 3600000, 60000)
    if cfg["backoff_max_ms"] < cfg["backoff_min_ms"]:
        cfg["backoff_max_ms"] = cfg["backoff_min_ms"]
    return cfg


class _JoinFailed(Exception):
    pass


class RadioSession:
    def __init__(self, driver, config, event=None, cache=None, ticks=ticks_ms):
        """driver: a link contract driver (None: attach() one before run()). event(code, detail)
        reports to the event log. cache: (channel, pan_id, mac bytes) remembered from an earlier
        join (the terminal's state file). ticks: the clock of the T108 ring (tests fake it)."""
        cfg = _settings(config)
        self._cfg = cfg
        self._event = event or ev.ignore
        self.udp_port = cfg["udp_port"]
        self._password = cfg["pana_password"]
        self._rb_id = cfg["route_b_id"]
        log.add_secret(self._password)
        log.add_secret(self._rb_id)
        self._configured_mac = None
        if cfg["sm_mac"]:
            try:
                self._configured_mac = link.mac_bytes(cfg["sm_mac"])
            except ValueError as e:
                log.error(_TAG, "sm_mac ignored (%s); the smart meter will be found by scan" % e)
        self.cached = None  # (channel, pan_id, mac) of the last good join
        if cache is not None:
            self.cached = (cache[0], cache[1], bytes(cache[2]))
        self._scan_d = cfg["scan_duration"]
        self.state = ST_IDLE
        self._failures = 0  # consecutive failed attempts: the back-off exponent
        self._fast = 0  # consecutive immediate retries
        self._mac_fails = 0
        self._latched = False
        self._cred_event = asyncio.Event()
        self._drop = asyncio.Event()  # set: the session is to be torn down
        self._wake = asyncio.Event()  # wakes the ready loop to look at its deadlines again
        self._drop_reason = ""
        self._drop_code = 0
        self._gate = asyncio.Event()  # set = sends may go; cleared during re-auth / T108 limit
        self._reauthing = False
        self._reauth_t0 = 0
        self._limit_until = None  # ticks until which the module's T108 limit holds
        self._rxq = []
        self._rx_event = asyncio.Event()
        self._timeouts = 0
        self._unacked = 0
        self._last_app = ticks_ms()
        self._authed_at = ticks_ms()
        self._seed = (ticks_ms() ^ 0x5DEECE6) & 0x7FFFFFFF
        self.air = AirtimeBudget(cfg["airtime_budget_ms"], ticks)  # ARIB T108, our sends
        self.peer_mac = None
        self.channel = None
        self.pan_id = None
        self._stats = {
            "joins": 0,
            "join_failures": 0,
            "rssi": None,
            "tx_ok": 0,
            "tx_fail": 0,
            "rx": 0,
            "rx_dropped": 0,
            "rx_fail": 0,
            "disconnects": 0,
            "liveness_reopens": 0,
            "stale_reopens": 0,
            "auth_failed": 0,
            "scans": 0,
            "mac_failures": 0,
            "rescans": 0,
            "reauths": 0,
            "reauth_failures": 0,
            "tx_gated": 0,
            "tx_limited": 0,
            "tx_budget_refused": 0,
            "bulk_deferred": 0,
            "airtime_ms": 0,
            "bad_frames": 0,
            "tx_no_ack": 0,
            "module_timeouts": 0,
            "last_error": "",
        }
        self._link = None
        if driver is not None:
            self.attach(driver)

    def attach(self, driver):
        """Use this driver (once, before run())."""
        self._link = driver
        driver.on_udp = self._on_udp
        driver.on_event = self._on_event

    # -- public API ---------------------------------------------------------------------------

    @property
    def link(self):
        return self._link

    @property
    def stats(self):
        s = self._stats
        if self._link is not None:
            ls = self._link.stats
            s["bad_frames"] = ls.get("bad_frames", 0)
            s["tx_no_ack"] = ls.get("tx_no_ack", 0)
            s["module_timeouts"] = ls.get("timeouts", 0)
        s["airtime_ms"] = self.air.used_ms()
        return s

    def is_ready(self):
        return self.state == ST_READY

    def note_app_activity(self):
        """Call on every valid application exchange; feeds the liveness and stale watchdogs."""
        self._last_app = ticks_ms()
        self._unacked = 0

    def set_credentials(self, password=None, route_b_id=None):
        """New credentials: clear the bad-credentials latch and let run() try again."""
        if password is not None:
            log.add_secret(password)
            self._password = password
        if route_b_id is not None:
            log.add_secret(route_b_id)
            self._rb_id = route_b_id
        self._latched = False
        self._cred_event.set()

    def set_pana_password(self, password):
        self.set_credentials(password=password)

    def reopen(self, reason="requested", code=DOWN_REQUESTED):
        """Tear the session down and join again (e.g. from the application)."""
        if not self._drop.is_set():
            self._drop_reason = reason
            self._drop_code = code
        self._drop.set()
        self._wake.set()

    async def recv(self):
        """Next datagram for udp_port: (src_ipv6 bytes, src_port, dst_port, payload bytearray)."""
        while not self._rxq:
            self._rx_event.clear()
            await self._rx_event.wait()
        return self._rxq.pop(0)

    # -- T108 budget --------------------------------------------------------------------------

    def airtime_left_ms(self):
        """What is left of the T108 budget (our own transmissions, sliding hour)."""
        return self.air.left_ms()

    def _limited(self):
        u = self._limit_until
        if u is None:
            return False
        if ticks_diff(u, ticks_ms()) <= 0:
            self._limit_until = None
            self._update_gate()
            return False
        return True

    def may_send(self, bulk=False):
        """True when a send would go now: ready, no gate closed, and budget left -- for bulk
        traffic (push backlog) more than the reserve kept for replies. Bulk refusals counted."""
        if self.state != ST_READY or self._reauthing or self._limited():
            return False
        left = self.airtime_left_ms()
        if bulk:
            if left <= self._cfg["airtime_budget_ms"] * self._cfg["bulk_reserve_pct"] // 100:
                self._stats["bulk_deferred"] += 1
                return False
            return True
        return left > 0

    def _update_gate(self):
        if self._reauthing or self._limit_until is not None:
            self._gate.clear()
        else:
            self._gate.set()

    async def _pass_gate(self):
        """Wait (bounded by gate_wait_ms) until re-authentication and the T108 limit are over."""
        if self._gate.is_set() and not self._limited():
            return True
        wait = self._cfg["gate_wait_ms"]
        t0 = ticks_ms()
        while True:
            left = wait - ticks_diff(ticks_ms(), t0)
            u = self._limit_until
            if u is not None:
                left = min(left, max(1, ticks_diff(u, ticks_ms())))
            if left <= 0:
                return False
            try:
                await wait_ms(self._gate.wait(), left)
            except asyncio.TimeoutError:
                pass
            if not self._limited() and self._gate.is_set():
                return self.state == ST_READY
            if ticks_diff(ticks_ms(), t0) >= wait:
                return False

    # -- send ---------------------------------------------------------------------------------

    async def send(self, dst_ipv6, dst_port, payload, bulk=False):
        """Transmit one datagram from udp_port; True when the driver reports it sent.

        Waits (bounded) while the session re-authenticates or the T108 limit is on. A reply
        (bulk False) goes until the budget is spent; bulk traffic stops at the reserve."""
        st = self._stats
        if self.state != ST_READY and self.state != ST_REAUTH:
            st["tx_fail"] += 1
            log.warn(_TAG, "send while %s: dropped" % self.state)
            return False
        if not await self._pass_gate():
            st["tx_gated"] += 1
            st["tx_fail"] += 1
            log.warn(_TAG, "send: gate closed (%s) for %d ms: dropped"
                     % ("re-authenticating" if self._reauthing else "T108 limit",
                        self._cfg["gate_wait_ms"]))
            return False
        need = airtime_ms(len(payload))
        left = self.airtime_left_ms()
        reserve = self._cfg["airtime_budget_ms"] * self._cfg["bulk_reserve_pct"] // 100
        # bulk goes while more than the reserve is left (the last may dip into it by one
        # datagram); a reply goes while it fits at all
        if need > left or (bulk and left <= reserve):
            if bulk:
                st["bulk_deferred"] += 1
            else:
                st["tx_budget_refused"] += 1
            st["tx_fail"] += 1
            log.warn(_TAG, "send: T108 budget (%d ms left of %d): %s datagram held back"
                     % (left, self._cfg["airtime_budget_ms"], "bulk" if bulk else "reply"))
            return False
        ls = self._link.stats
        retries0 = ls.get("tx_no_ack", 0)
        try:
            r = await self._link.send(dst_ipv6, self.udp_port, dst_port, payload)
        except link.LinkTimeout as e:
            st["tx_fail"] += 1
            self._timeouts += 1
            log.warn(_TAG, "send: %s" % e)
            if self._timeouts >= _TIMEOUTS_BEFORE_REOPEN:
                self.reopen("module not answering", DOWN_MODULE)
            self._unanswered()
            return False
        except link.LinkError as e:
            st["tx_fail"] += 1
            log.warn(_TAG, "send rejected: %s" % e)
            return False
        self._timeouts = 0
        if r == link.TX_LIMITED:
            st["tx_limited"] += 1
            st["tx_fail"] += 1
            log.warn(_TAG, "send refused by the module: T108 limit")
            if self._limit_until is None:
                self._limit_until = ticks_add(ticks_ms(), self._cfg["tx_limit_hold_ms"])
                self._update_gate()
            return False
        # every attempt of the driver's own no-ACK retries was on the air too
        self.air.charge(need * (1 + ls.get("tx_no_ack", 0) - retries0))
        if r == link.TX_OK or r == link.TX_QUEUED:
            st["tx_ok"] += 1
            self._unacked = 0
            return True
        st["tx_fail"] += 1
        log.warn(_TAG, "send failed: not acknowledged")
        self._unanswered()
        return False

    def _unanswered(self):
        self._unacked += 1
        n = self._cfg["stale_tries"]
        if n and self._unacked >= n and self.state == ST_READY:
            self._stats["stale_reopens"] += 1
            self.reopen("%d sends in a row unacknowledged" % self._unacked, DOWN_STALE)

    # -- run ----------------------------------------------------------------------------------

    async def run(self):
        """Join, serve, rejoin; runs forever."""
        self._link.start()
        while True:
            # progress: each pass; the waits in between (ready, back-off, credentials) are parked
            health.beat(_TAG)
            if self._latched or not self._have_credentials():
                await self._wait_for_credentials()
                continue
            try:
                outcome = await self._attempt()
            except (_JoinFailed, link.LinkError) as e:
                outcome = self._join_failed(str(e))
            except Exception as e:  # a bug must not end the radio task
                log.exc(_TAG, "join crashed", e)
                outcome = self._join_failed(type(e).__name__)
            if outcome == _LATCHED:
                continue
            if outcome == _OK:
                self._failures = 0
                self._fast = 0
                await self._serve()
            elif outcome == _FAST and self._fast < self._cfg["fast_retries"]:
                self._fast += 1
                continue
            else:
                self._fast = 0
            await self._backoff()

    def _have_credentials(self):
        if not self._password:
            return False
        return self._cfg["route"] != "b" or bool(self._rb_id)

    def _target(self):
        """(channel, pan_id, mac, source) to join without a scan, or None."""
        cfg = self._cfg
        if self._configured_mac is not None:
            return cfg["channel"], cfg["pan_id"], self._configured_mac, "configured"
        if self.cached is not None:
            c = self.cached
            return c[0], c[1], c[2], "cached"
        return None

    async def _attempt(self):
        lk = self._link
        self._drop.clear()
        self.state = ST_RESETTING
        await lk.reset()
        log.info(_TAG, await lk.version())
        t = self._target()
        if t is None:
            self.state = ST_SCANNING
            channel, pan, mac = await self._scan()
            source = "scan"
        else:
            channel, pan, mac, source = t
        log.info(_TAG, "joining %s on channel %d (%s)" % (link.mac_hex(mac), channel, source))
        self.state = ST_JOINING
        r = await lk.join(channel, pan, mac, {"id": self._rb_id, "password": self._password})
        if r == link.JOIN_BAD_CREDENTIALS:
            self._latch()
            return _LATCHED
        if r == link.JOIN_MAC_FAILED:
            self._stats["mac_failures"] += 1
            self._mac_fails += 1
            if self._mac_fails <= MAC_RETRIES:
                self._join_failed("MAC connection failed (%d/%d): reset and retry"
                                  % (self._mac_fails, MAC_RETRIES), False)
                return _FAST
            self._mac_fails = 0
            return self._join_failed("MAC connection failed %d times" % MAC_RETRIES)
        if r != link.JOIN_OK:
            if source == "cached":
                # the meter may have moved channel (or been replaced): scan at once
                self.cached = None
                self._stats["rescans"] += 1
                self._join_failed("no PANA answer from the cached peer: rescanning", False)
                return _FAST
            raise _JoinFailed("no PANA answer (join result %d)" % r)
        self.state = ST_OPENING
        await lk.open_udp(self.udp_port)
        self._mac_fails = 0
        self.peer_mac = bytes(mac)
        self.channel = channel
        self.pan_id = pan
        self.cached = (channel, pan, self.peer_mac)
        self._scan_d = self._cfg["scan_duration"]
        return _OK

    async def _scan(self):
        cfg = self._cfg
        d = self._scan_d
        self._stats["scans"] += 1
        pairing = cfg["pairing_id"] or (self._rb_id[-8:] if self._rb_id else None)
        log.info(_TAG, "active scan, duration %d" % d)
        # the driver bounds the scan (duration x channels); the next one, if needed, is longer
        self._scan_d = min(d + 1, cfg["scan_max_duration"])
        beacons = await self._link.scan(d, cfg["scan_mask"], pairing)
        best = None
        want = cfg["pan_id"]
        for b in beacons:
            if want >= 0 and b[1] != want and cfg["route"] != "b":
                continue
            if best is None or b[3] > best[3]:
                best = b
        if best is None:
            raise _JoinFailed("scan found no beacon of PAN 0x%04X (%d other)"
                              % (want & 0xFFFF, len(beacons)))
        self._stats["rssi"] = best[3]
        return best[0], best[1], bytes(best[2])

    def _latch(self):
        self._latched = True
        self._stats["auth_failed"] += 1
        self._stats["last_error"] = "PANA: bad credentials"
        log.error(_TAG, "PANA authentication rejected (bad credentials): not retrying until "
                  "the credentials are changed")
        self._event(ev.RADIO_AUTH_FAILED, 0)

    def _join_failed(self, why, count=True):
        if count:
            self._failures += 1
        self._stats["join_failures"] += 1
        self._stats["last_error"] = why
        log.warn(_TAG, "join failed in state %s: %s" % (self.state, why))
        return _FAIL

    async def _wait_for_credentials(self):
        self.state = ST_AUTH_FAILED
        if not self._latched:
            log.error(_TAG, "no %s configured: radio idle"
                      % ("PANA password" if not self._password else "B-route ID"))
        self._cred_event.clear()
        await self._cred_event.wait()
        self._failures = 0
        self._fast = 0

    def _rand(self, n):
        self._seed = (self._seed * 1103515245 + 12345) & 0x7FFFFFFF
        return (self._seed >> 8) % n if n > 0 else 0

    def backoff_ms(self):
        """Delay before the next attempt: min * 2^failures, capped, with 50 % jitter."""
        cfg = self._cfg
        d = cfg["backoff_min_ms"] << min(self._failures, 20)
        d = min(d, cfg["backoff_max_ms"])
        half = d // 2
        return half + self._rand(half + 1)

    async def _backoff(self):
        if self._latched:
            return
        self.state = ST_BACKOFF
        ms = self.backoff_ms()
        log.info(_TAG, "next join attempt in %d ms" % ms)
        try:
            await wait_ms(self._cred_event.wait(), ms)  # new credentials cut the wait short
        except asyncio.TimeoutError:
            pass
        self._cred_event.clear()

    # -- ready --------------------------------------------------------------------------------

    async def _serve(self):
        cfg = self._cfg
        self.state = ST_READY
        self._stats["joins"] += 1
        self._timeouts = 0
        self._unacked = 0
        self._reauthing = False
        self._update_gate()
        now = ticks_ms()
        self._last_app = now
        self._authed_at = now
        log.info(_TAG, "ready: UDP port %d open" % self.udp_port)
        self._event(ev.LINK_UP, self.channel)
        live_ms = cfg["liveness_s"] * 1000
        reauth_ms = cfg["pana_lifetime_s"] * 10 * _REAUTH_PCT  # s * 1000 * pct / 100
        while not self._drop.is_set():
            now = ticks_ms()
            left = 3600000  # nothing due: wake hourly anyway (a bounded wait)
            if live_ms > 0:
                left = live_ms - ticks_diff(now, self._last_app)
                if left <= 0:
                    self._stats["liveness_reopens"] += 1
                    self.reopen("no application activity for %d s" % cfg["liveness_s"],
                                DOWN_LIVENESS)
                    break
            if self._reauthing:  # the driver re-authenticates on its own (EV_REAUTH_STARTED)
                r = cfg["pana_timeout_ms"] - ticks_diff(now, self._reauth_t0)
                if r <= 0:
                    self._reauth_done(False, "re-authentication did not finish")
                    continue
                left = min(left, r)
            elif reauth_ms > 0:
                r = reauth_ms - ticks_diff(now, self._authed_at)
                if r <= 0:
                    await self._reauth()
                    continue
                left = min(left, r)
            self._wake.clear()
            try:
                await wait_ms(self._wake.wait(), left)
            except asyncio.TimeoutError:
                pass
        self.state = ST_IDLE
        self._reauthing = False
        self._update_gate()
        code = self._drop_code
        log.warn(_TAG, "session closed: %s; reopening" % self._drop_reason)
        self._event(ev.LINK_DOWN, code)
        if code in (DOWN_STALE, DOWN_LIVENESS, DOWN_REQUESTED):
            await self._link.leave()  # best effort: the next attempt resets the module anyway

    async def _reauth(self):
        """PANA re-authentication before the lifetime ends; sends wait at the gate meanwhile."""
        self._stats["reauths"] += 1
        self._reauthing = True
        self._update_gate()
        self.state = ST_REAUTH
        log.info(_TAG, "PANA re-authentication")
        try:
            r = await self._link.reauth()
        except link.LinkError as e:
            self._reauth_done(False, str(e))
            return
        if r == link.JOIN_OK:
            self._reauth_done(True, "")
        elif r == link.JOIN_BAD_CREDENTIALS:
            self._reauth_done(False, "bad credentials")
            self._latch()
        else:
            self._reauth_done(False, "join result %d" % r)

    def _reauth_done(self, ok, why):
        self._reauthing = False
        if ok:
            self._authed_at = ticks_ms()
            if self.state == ST_REAUTH:
                self.state = ST_READY
            self._update_gate()
            log.info(_TAG, "PANA re-authenticated")
            return
        self._stats["reauth_failures"] += 1
        self.reopen("PANA re-authentication failed: %s" % why, DOWN_REAUTH)

    # -- driver callbacks ---------------------------------------------------------------------

    def _on_udp(self, src, sport, dport, rssi, payload):
        self._stats["rssi"] = rssi
        if dport != self.udp_port:
            log.debug(_TAG, "datagram for port %d ignored" % dport)
            return
        q = self._rxq
        if len(q) >= self._cfg["rx_queue"]:
            q.pop(0)
            self._stats["rx_dropped"] += 1
            log.warn(_TAG, "receive queue full: oldest datagram dropped")
        # a bytearray (no more heap than bytes): the COSEM server deciphers a ciphered request
        # in place, in this copy, instead of in a buffer of its own
        q.append((bytes(src), sport, dport, bytearray(payload)))
        self._stats["rx"] += 1
        self._rx_event.set()

    def _on_event(self, code, detail):
        s = self._stats
        if code == link.EV_LINK_DOWN:
            s["disconnects"] += 1
            if self.state in (ST_READY, ST_REAUTH, ST_OPENING):
                self.reopen("link down (detail %d)" % detail, DOWN_LINK)
        elif code == link.EV_REAUTH_STARTED:
            if self.state == ST_READY:
                s["reauths"] += 1
                self._reauthing = True
                self._reauth_t0 = ticks_ms()
                self.state = ST_REAUTH
                self._update_gate()
                self._wake.set()  # _serve bounds the re-authentication by pana_timeout_ms
        elif code == link.EV_REAUTH_OK:
            if self._reauthing:
                self._reauth_done(True, "")
        elif code == link.EV_REAUTH_FAILED:
            if self.state == ST_READY or self.state == ST_REAUTH:
                self._reauth_done(False, "reported by the module")
        elif code == link.EV_TX_LIMIT_ON:
            s["tx_limited"] += 1
            log.warn(_TAG, "module: T108 transmit limit on")
            self._limit_until = ticks_add(ticks_ms(), _LIMIT_ON_MS)
            self._update_gate()
        elif code == link.EV_TX_LIMIT_OFF:
            log.info(_TAG, "module: T108 transmit limit off")
            self._limit_until = None
            self._update_gate()
        elif code == link.EV_RX_FAIL:
            s["rx_fail"] += 1
            log.warn(_TAG, "module dropped a received packet (reason 0x%02X)" % detail)
