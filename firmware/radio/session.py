# Wi-SUN HAN join / session state machine for the terminal as a HAN end device (or coordinator).
#
# reset -> version -> initial settings -> [active scan when the smart meter is neither configured
# nor cached] -> HAN start -> PANA credentials -> PANA start -> open the application UDP port ->
# ready. Any failure backs off (capped exponential with jitter) and starts again from the reset.
# PANA result 2 (bad credentials) latches: no retry until set_pana_password() is called, so a
# wrong password cannot lock the terminal out. A 0x601A disconnect, a module that stops answering
# or application silence longer than liveness_s (note_app_activity) reopens the session.
import asyncio

from firmware import health, log
from firmware.compat import const, ticks_diff, ticks_ms, wait_ms
from firmware.radio import j11
from firmware.radio.j11_module import (
    DEFAULT_PANA_TIMEOUT_MS,
    DEFAULT_RESET_TIMEOUT_MS,
    J11CommandError,
    J11ModuleError,
    J11Timeout,
)

_TAG = "radio"

ST_IDLE = "idle"
ST_RESETTING = "resetting"
ST_CONFIGURING = "configuring"
ST_SCANNING = "scanning"
ST_STARTING = "starting"
ST_AUTHENTICATING = "authenticating"
ST_OPENING = "opening"
ST_READY = "ready"
ST_BACKOFF = "backoff"
ST_AUTH_FAILED = "auth_failed"

DEFAULTS = {
    "mode": 3,  # 3 HAN end device, 2 HAN coordinator (relay-capable), 5 dual
    "channel": 4,  # used with a configured sm_mac; a scan finds the channel otherwise
    "pan_id": 0x1234,  # scan: only beacons of this PAN (-1 = any)
    "sm_mac": "",  # smart meter (PAN coordinator) MAC, 16 hex; "" = active scan
    "pana_password": "",
    "udp_port": 4059,
    "scan_duration": 6,  # first scan duration (1..14); grows by 1 after each empty scan
    "scan_max_duration": 9,
    "scan_mask": j11.SCAN_MASK_ALL,
    "pairing_id": "",  # 8 characters sent with the active scan ("" = ID flag 0)
    "tx_power": 0,  # 0 = 20 mW, 1 = 10 mW, 2 = 1 mW
    "backoff_min_ms": 2000,
    "backoff_max_ms": 300000,
    "liveness_s": 3600,  # 0 disables the application watchdog
    "cmd_timeout_ms": 5000,
    "reset_timeout_ms": DEFAULT_RESET_TIMEOUT_MS,
    "pana_timeout_ms": DEFAULT_PANA_TIMEOUT_MS,
    "tx_retries": 3,
    "rx_queue": 4,
}

_TIMEOUTS_BEFORE_REOPEN = const(2)
_RESULT_NOT_STARTED = const(0x10)


class _JoinFailed(Exception):
    pass


class _AuthRejected(Exception):
    pass


def _settings(config):
    cfg = dict(DEFAULTS)
    for k, v in (config or {}).items():
        if k in cfg:
            cfg[k] = v
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
    if cfg["backoff_max_ms"] < cfg["backoff_min_ms"]:
        cfg["backoff_max_ms"] = cfg["backoff_min_ms"]
    return cfg


class RadioSession:
    def __init__(self, module, config):
        self._m = module
        cfg = _settings(config)
        self._cfg = cfg
        self.udp_port = cfg["udp_port"]
        self._password = cfg["pana_password"]
        log.add_secret(self._password)
        self._configured_mac = None
        if cfg["sm_mac"]:
            try:
                self._configured_mac = j11.mac_bytes(cfg["sm_mac"])
            except j11.J11Error as e:
                log.error(_TAG, "sm_mac ignored (%s); the smart meter will be found by scan" % e)
        self._cached = None  # (channel, mac) found by a scan
        self._scan_d = cfg["scan_duration"]
        self.state = ST_IDLE
        self._failures = 0
        self._latched = False
        self._cred_event = asyncio.Event()
        self._drop = asyncio.Event()
        self._drop_reason = ""
        self._rxq = []
        self._rx_event = asyncio.Event()
        self._timeouts = 0
        self._last_app = ticks_ms()
        self._seed = (ticks_ms() ^ 0x5DEECE6) & 0x7FFFFFFF
        self.peer_mac = None
        self.channel = None
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
            "auth_failed": 0,
            "scans": 0,
            "bad_frames": 0,
            "last_error": "",
        }
        module.on(j11.NOTIFY_UDP_RX, self._on_udp)
        module.on(j11.NOTIFY_CONNECTION, self._on_connection)
        module.on(j11.NOTIFY_RX_FAIL, self._on_rx_fail)

    # -- public API ---------------------------------------------------------------------------

    @property
    def stats(self):
        s = self._stats
        s["bad_frames"] = self._m.rx.stats["regions"]
        s["tx_no_ack"] = self._m.stats["tx_no_ack"]
        s["module_timeouts"] = self._m.stats["timeouts"]
        return s

    def is_ready(self):
        return self.state == ST_READY

    def note_app_activity(self):
        """Call on every valid application exchange; feeds the liveness watchdog."""
        self._last_app = ticks_ms()

    def set_pana_password(self, password):
        """New credentials: clears the bad-credentials latch and lets run() try again."""
        log.add_secret(password)
        self._password = password
        self._latched = False
        self._cred_event.set()

    def reopen(self, reason="requested"):
        """Tear the session down and join again (e.g. from the application)."""
        self._drop_reason = reason
        self._drop.set()

    async def recv(self):
        """Next datagram for udp_port: (src_ipv6 bytes, src_port, dst_port, payload bytearray)."""
        while not self._rxq:
            self._rx_event.clear()
            await self._rx_event.wait()
        return self._rxq.pop(0)

    async def send(self, dst_ipv6, dst_port, payload):
        """Transmit one datagram from udp_port; True when the module reports it sent."""
        if self.state != ST_READY:
            self._stats["tx_fail"] += 1
            log.warn(_TAG, "send while %s: dropped" % self.state)
            return False
        try:
            queue, tx = await self._m.transmit(dst_ipv6, self.udp_port, dst_port, payload,
                                               self._cfg["tx_retries"])
        except j11.J11Error as e:
            self._stats["tx_fail"] += 1
            log.error(_TAG, "send rejected: %s" % e)
            return False
        except J11Timeout as e:
            self._stats["tx_fail"] += 1
            self._timeouts += 1
            log.warn(_TAG, "send: %s" % e)
            if self._timeouts >= _TIMEOUTS_BEFORE_REOPEN:
                self.reopen("module not answering")
            return False
        except J11CommandError as e:
            self._stats["tx_fail"] += 1
            log.warn(_TAG, "send: %s" % e)
            if e.result == _RESULT_NOT_STARTED:
                self.reopen("module lost the HAN session")
            return False
        self._timeouts = 0
        if tx == 0:
            self._stats["tx_ok"] += 1
            if queue:
                log.debug(_TAG, "datagram held in the indirect queue")
            return True
        self._stats["tx_fail"] += 1
        log.warn(_TAG, "send failed: tx result %d" % tx)
        return False

    async def run(self):
        """Join, serve, rejoin; runs forever."""
        self._m.start()
        while True:
            # progress: each pass; the waits in between (ready, back-off, credentials) are parked
            health.beat(_TAG)
            if self._latched or not self._password:
                await self._wait_for_credentials()
                continue
            try:
                await self._join()
            except _AuthRejected:
                continue
            except (_JoinFailed, J11ModuleError, j11.J11Error) as e:
                self._join_failed(str(e))
            except Exception as e:  # a bug must not end the radio task
                log.exc(_TAG, "join crashed", e)
                self._join_failed(type(e).__name__)
            else:
                self._failures = 0
                await self._serve()
            await self._backoff()

    # -- join ---------------------------------------------------------------------------------

    async def _join(self):
        m = self._m
        cfg = self._cfg
        self._drop.clear()
        self._m.cmd_timeout_ms = cfg["cmd_timeout_ms"]
        self.state = ST_RESETTING
        await m.reset(cfg["reset_timeout_ms"])
        self.state = ST_CONFIGURING
        fw, major, minor, rev = await m.version()
        log.info(_TAG, "module firmware 0x%04X version %d.%d.%d" % (fw, major, minor, rev))
        mode = cfg["mode"]
        if self._configured_mac is not None:
            channel, mac, source = cfg["channel"], self._configured_mac, "configured"
        elif self._cached is not None:
            channel, mac = self._cached
            source = "cached"
        else:
            channel, mac, source = cfg["channel"], None, "scan"
        await m.init_settings(mode, channel, 0, cfg["tx_power"])
        if mac is None:
            self.state = ST_SCANNING
            channel, mac = await self._scan()
            self._cached = (channel, mac)
            await m.init_settings(mode, channel, 0, cfg["tx_power"])
        log.info(_TAG, "joining smart meter %s on channel %d (%s)"
                 % (j11.mac_hex(mac), channel, source))
        self.state = ST_STARTING
        await m.han_start(mac)
        self.state = ST_AUTHENTICATING
        await m.set_pana_password(self._password, mac)
        result, _ = await m.pana_start(cfg["pana_timeout_ms"])
        if result == j11.PANA_BAD_CREDENTIALS:
            self._latched = True
            self._stats["auth_failed"] += 1
            self._stats["last_error"] = "PANA: bad credentials"
            log.error(_TAG, "PANA authentication rejected (bad credentials): not retrying until "
                      "the password is changed")
            raise _AuthRejected()
        if result != j11.PANA_OK:
            if source == "cached":
                self._cached = None  # rescan next time: the meter may have moved channel
            raise _JoinFailed("PANA result %d (no response)" % result)
        self.state = ST_OPENING
        await m.open_udp(self.udp_port)
        self.peer_mac = mac
        self.channel = channel
        self._scan_d = cfg["scan_duration"]

    async def _scan(self):
        cfg = self._cfg
        d = self._scan_d
        self._stats["scans"] += 1
        log.info(_TAG, "active scan, duration %d" % d)
        beacons = await self._m.active_scan(d, cfg["scan_mask"], cfg["pairing_id"] or None)
        best = None
        want = cfg["pan_id"]
        for ch, mac, pan, rssi in beacons:
            if want >= 0 and pan != want:
                continue
            if best is None or rssi > best[3]:
                best = (ch, mac, pan, rssi)
        if best is None:
            self._scan_d = min(d + 1, cfg["scan_max_duration"])
            raise _JoinFailed("scan found no beacon of PAN 0x%04X (%d other)"
                              % (want & 0xFFFF, len(beacons)))
        self._stats["rssi"] = best[3]
        return best[0], best[1]

    def _join_failed(self, why):
        self._failures += 1
        self._stats["join_failures"] += 1
        self._stats["last_error"] = why
        log.warn(_TAG, "join failed in state %s: %s" % (self.state, why))

    async def _wait_for_credentials(self):
        self.state = ST_AUTH_FAILED
        if not self._password and not self._latched:
            log.error(_TAG, "no PANA password configured: radio idle")
        self._cred_event.clear()
        await self._cred_event.wait()
        self._failures = 0

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
        self.state = ST_READY
        self._stats["joins"] += 1
        self._timeouts = 0
        self._last_app = ticks_ms()
        log.info(_TAG, "ready: UDP port %d open" % self.udp_port)
        limit = self._cfg["liveness_s"] * 1000
        while True:
            if limit > 0:
                left = limit - ticks_diff(ticks_ms(), self._last_app)
                if left <= 0:
                    self._stats["liveness_reopens"] += 1
                    self._drop_reason = "no application activity for %d s" % (limit // 1000)
                    break
                try:
                    await wait_ms(self._drop.wait(), left)
                except asyncio.TimeoutError:
                    continue
            else:
                await self._drop.wait()
            break
        self.state = ST_IDLE
        log.warn(_TAG, "session closed: %s; reopening" % self._drop_reason)

    # -- notifications ------------------------------------------------------------------------

    def _on_udp(self, data):
        src, sport, dport, _pan, _mc, _enc, rssi, payload = j11.decode_udp_rx(data)
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

    def _on_connection(self, data):
        status, mac, rssi = j11.decode_connection(data)
        if rssi is not None:
            self._stats["rssi"] = rssi
        if status in (j11.CONN_MAC_DISCONNECTED, j11.CONN_PANA_DISCONNECTED):
            self._stats["disconnects"] += 1
            if self.state == ST_READY or self.state == ST_OPENING:
                self.reopen("%s disconnected (0x601A status %d)"
                            % ("MAC" if status == j11.CONN_MAC_DISCONNECTED else "PANA", status))
        else:
            log.info(_TAG, "connection status %d" % status)

    def _on_rx_fail(self, data):
        reason, _src, _seq, _frag, _tag = j11.decode_rx_fail(data)
        self._stats["rx_fail"] += 1
        log.warn(_TAG, "module dropped a received packet (reason 0x%02X)" % reason)
