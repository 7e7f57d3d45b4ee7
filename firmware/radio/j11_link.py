# The J11 family behind the radio driver contract (firmware/radio/link.py, docs/radio.md): HAN /
# Enhanced HAN (modes 2, 3, 5) and B-route (mode 5), over the J11Module command driver. It maps
# the module's commands, result codes and notifications onto the contract's names, so the session
# never sees a J11 code. Sequences: docs/j11.md "Join sequences" (reference wisun-modules.md §5).
from firmware import log
from firmware.compat import const
from firmware.radio import j11, link
from firmware.radio.j11 import J11Error
from firmware.radio.j11_module import (
    DEFAULT_PANA_TIMEOUT_MS,
    DEFAULT_RESET_TIMEOUT_MS,
    J11CommandError,
    J11ModuleError,
    J11Timeout,
)

_TAG = "j11"

# B-route and re-authentication commands (reference §3.2); HAN codes are in firmware.radio.j11
CMD_HAN_REAUTH = const(0x002B)
CMD_HAN_PANA_END = const(0x003B)
CMD_ROUTE_B_START = const(0x0053)
CMD_ROUTE_B_PANA_SET = const(0x0054)
CMD_ROUTE_B_PANA_START = const(0x0056)
CMD_ROUTE_B_PANA_END = const(0x0057)
CMD_ROUTE_B_REAUTH = const(0x00D2)

RESULT_MAC_FAILED = const(0x0E)  # MAC connection failed (common on the first Route-B start)
RESULT_NOT_STARTED = const(0x10)  # the module has no HAN/B-route session (it lost it)
RESULT_ALREADY_SET = const(0x58)  # B-route credentials already set: as good as set
TX_RESULT_NO_ACK = const(5)
# [I] tx result of a transmit the module refused under the ARIB T108 limit (nothing sent): what a
# J11 reports is not public; 7 is the emulator's choice (tools/j11_emulator.py T108_TX_RESULT)
TX_RESULT_T108 = const(7)
_PROVISIONAL_CHANNEL = const(4)  # 0x005F before a scan needs some channel; the scan covers all


class J11Link:
    family = link.FAMILY_J11

    def __init__(self, module, route="han", mode=3, udp_port=4059, tx_power=0, tx_retries=3,
                 reset_timeout_ms=DEFAULT_RESET_TIMEOUT_MS,
                 pana_timeout_ms=DEFAULT_PANA_TIMEOUT_MS):
        """module: a J11Module. route "han" (mode 3 end device, 2 coordinator, 5 dual) or "b"
        (B-route, always mode 5). udp_port: opened by the B-route join before PANA (its
        sequence), by open_udp() on HAN."""
        if route not in ("han", "b"):
            log.error(_TAG, "route %r is not 'han' or 'b'; using 'han'" % (route,))
            route = "han"
        self.m = module
        self.route = route
        self.mode = 5 if route == "b" else mode
        self.udp_port = udp_port
        self.tx_power = tx_power
        self.tx_retries = tx_retries
        self.reset_timeout_ms = reset_timeout_ms
        self.pana_timeout_ms = pana_timeout_ms
        self.on_udp = None
        self.on_event = None
        self._open_port = -1  # the port the module has open since its last reset
        self._peer = None  # MAC of the current peer (HAN re-authentication names it)
        module.on(j11.NOTIFY_UDP_RX, self._udp)
        module.on(j11.NOTIFY_CONNECTION, self._connection)
        module.on(j11.NOTIFY_RX_FAIL, self._rx_fail)

    @property
    def stats(self):
        s = self.m.stats
        s["bad_frames"] = self.m.rx.stats["regions"]  # same dict every time: no allocation
        return s

    def start(self):
        self.m.start()

    def stop(self):
        self.m.stop()

    # -- contract calls ------------------------------------------------------------------------

    async def reset(self):
        self._open_port = -1
        self._peer = None
        try:
            await self.m.reset(self.reset_timeout_ms)
        except J11ModuleError as e:
            raise _link_error(e)

    async def version(self):
        try:
            fw, major, minor, rev = await self.m.version()
        except (J11ModuleError, J11Error) as e:
            raise _link_error(e)
        return "J11 firmware 0x%04X version %d.%d.%d" % (fw, major, minor, rev)

    async def scan(self, duration, mask=j11.SCAN_MASK_ALL, pairing_id=None):
        """0x005F (the mode, a provisional channel) then 0x0051: the module scans only in the
        mode it was set to. -> [(channel, pan_id, mac, rssi)]."""
        try:
            await self.m.init_settings(self.mode, _PROVISIONAL_CHANNEL, 0, self.tx_power)
            found = await self.m.active_scan(duration, mask, pairing_id)
        except (J11ModuleError, J11Error) as e:
            raise _link_error(e)
        return [(ch, pan, mac, rssi) for ch, mac, pan, rssi in found]

    async def join(self, channel, pan_id, mac, credentials):
        try:
            await self.m.init_settings(self.mode, channel, 0, self.tx_power)
            if self.route == "b":
                return await self._join_b(credentials)
            return await self._join_han(mac, credentials)
        except J11CommandError as e:
            if e.result == RESULT_MAC_FAILED:
                log.warn(_TAG, "MAC connection failed (command 0x%04X result 0x0E)" % e.cmd)
                return link.JOIN_MAC_FAILED
            raise _link_error(e)
        except (J11ModuleError, J11Error) as e:
            raise _link_error(e)

    async def _join_han(self, mac, credentials):
        m = self.m
        await m.han_start(mac)  # 0x000A: the PAN coordinator's MAC
        await m.set_pana_password(credentials["password"], mac)  # 0x002C
        self._peer = j11.mac_bytes(mac)
        return await self._pana(j11.CMD_HAN_PANA_START, b"")

    async def _join_b(self, credentials):
        m = self.m
        rid = credentials.get("id") or ""
        pw = credentials.get("password") or ""
        log.add_secret(rid)
        log.add_secret(pw)
        if len(rid) != 32 or len(pw) != 12:
            raise link.LinkError("B-route credentials need a 32-character ID and a "
                                 "12-character password")
        try:
            await m.command(CMD_ROUTE_B_PANA_SET, rid.encode() + pw.encode())  # 0x0054
        except J11CommandError as e:
            if e.result != RESULT_ALREADY_SET:  # 0x58: set before (kept in the module's flash)
                raise
        data = await m.command(CMD_ROUTE_B_START)  # 0x0053: result, ch, PAN ID, MAC, RSSI
        if len(data) >= 12:
            self._peer = bytes(data[4:12])
        await self.open_udp(self.udp_port)  # 0x0005: the B-route sequence opens before PANA
        return await self._pana(CMD_ROUTE_B_PANA_START, b"")  # 0x0056

    async def _pana(self, cmd, data):
        try:
            result, _mac = await self.m.pana(cmd, data, self.pana_timeout_ms)
        except J11Timeout:
            return link.JOIN_NO_RESPONSE  # no 0x6028 at all: the peer did not answer
        if result == j11.PANA_OK:
            return link.JOIN_OK
        if result == j11.PANA_BAD_CREDENTIALS:
            return link.JOIN_BAD_CREDENTIALS
        return link.JOIN_NO_RESPONSE

    async def open_udp(self, port):
        if port == self._open_port:
            return  # already open since the last reset
        try:
            await self.m.open_udp(port)
        except (J11ModuleError, J11Error) as e:
            raise _link_error(e)
        self._open_port = port

    async def send(self, dst16, sport, dport, payload):
        try:
            queue, tx = await self.m.transmit(dst16, sport, dport, payload, self.tx_retries)
        except J11CommandError as e:
            if e.result == RESULT_NOT_STARTED and self.on_event is not None:
                self.on_event(link.EV_LINK_DOWN, RESULT_NOT_STARTED)  # the module lost it
            raise _link_error(e)
        except (J11ModuleError, J11Error) as e:
            raise _link_error(e)
        if tx == 0:
            return link.TX_QUEUED if queue else link.TX_OK
        if tx == TX_RESULT_T108:
            # refused, not lost: the session closes its gate instead of counting a stale send
            self.m.stats["tx_limited"] += 1
            return link.TX_LIMITED
        return link.TX_NO_ACK

    async def reauth(self):
        """HAN 0x002B with the peer MAC, B-route 0x00D2; both end in 0x6028."""
        try:
            if self.route == "b":
                return await self._pana(CMD_ROUTE_B_REAUTH, b"")
            if self._peer is None:
                raise link.LinkError("re-authentication without a peer")
            return await self._pana(CMD_HAN_REAUTH, self._peer)
        except (J11ModuleError, J11Error) as e:
            raise _link_error(e)

    async def leave(self):
        """Best effort PANA end (HAN 0x003B, B-route 0x0057); errors are only logged."""
        try:
            await self.m.command(CMD_ROUTE_B_PANA_END if self.route == "b" else CMD_HAN_PANA_END)
        except (J11ModuleError, J11Error) as e:
            log.info(_TAG, "PANA end: %s" % str(e))

    # -- notifications -------------------------------------------------------------------------

    def _udp(self, data):
        src, sport, dport, _pan, _mc, _enc, rssi, payload = j11.decode_udp_rx(data)
        if self.on_udp is not None:
            self.on_udp(src, sport, dport, rssi, payload)

    def _connection(self, data):
        status, _mac, _rssi = j11.decode_connection(data)
        if status == j11.CONN_MAC_DISCONNECTED or status == j11.CONN_PANA_DISCONNECTED:
            if self.on_event is not None:
                self.on_event(link.EV_LINK_DOWN, status)
        else:
            log.info(_TAG, "connection status %d" % status)

    def _rx_fail(self, data):
        reason = j11.decode_rx_fail(data)[0]
        if self.on_event is not None:
            self.on_event(link.EV_RX_FAIL, reason)


def _link_error(e):
    """A J11 exception as a contract error; its text is codes only (J11 messages never carry
    request data)."""
    if isinstance(e, J11Timeout):
        return link.LinkTimeout(str(e))
    if isinstance(e, J11CommandError):
        return link.LinkCommandError("command 0x%04X" % e.cmd, e.result)
    return link.LinkError(str(e))


def build(module, cfg):
    """A J11Link over module with the radio section's settings (the session's keys)."""
    module.cmd_timeout_ms = cfg.get("cmd_timeout_ms", module.cmd_timeout_ms)
    return J11Link(module, route=cfg.get("route", "han"), mode=cfg.get("mode", 3),
                   udp_port=cfg.get("udp_port", 4059), tx_power=cfg.get("tx_power", 0),
                   tx_retries=cfg.get("tx_retries", 3),
                   reset_timeout_ms=cfg.get("reset_timeout_ms", DEFAULT_RESET_TIMEOUT_MS),
                   pana_timeout_ms=cfg.get("pana_timeout_ms", DEFAULT_PANA_TIMEOUT_MS))
