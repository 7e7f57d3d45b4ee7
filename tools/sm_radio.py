"""The smart meter's side of the radio on the host: a J11 module (a real BP35Cx-J11 / RS-WSUHA-J11
on a USB-serial adapter, or a J11 emulator's pty: tools/serial_uart.py, no emulator special case)
driven as the **HAN PAN coordinator** with the firmware's own command driver
(firmware/radio/j11_module.py), so that a head-end on the PC reads a real terminal board over the
air. docs/twin.md "A module as the smart meter".

    radio = SmartMeterRadio(SerialUart("/dev/ttyUSB0"), load_config("sm.json"))
    await radio.start()                      # reset, 0x005F mode 1, 0x000A, 0x0025, 0x002C, 0x0005
    await radio.wait_joined(mac, 60)         # 0x6028 / 0x601A from the module
    attach(dlms_client, radio.endpoint(mac))  # the client's datagrams now go over the radio

Sequence (reference wisun-modules.md §5, HAN PAN coordinator): reset 0x00D9 (wait for 0x6019),
version 0x006B (logged), initial settings 0x005F mode 1 on the configured channel, HAN start
0x000A with the PAN ID, acceptance mode 0x0025 = 1 (accepting), 0x002C per allowed terminal (its
module MAC + PANA password), open the UDP port 0x0005. The module then reports each terminal's
PANA (0x6028: result + MAC) and connection (0x601A status 2); both are logged and kept in
`joins` / `connected`.

Configuration (JSON, docs/twin.md): {"channel": 4, "pan_id": 4660 or "0x1234", "udp_port": 4059,
"tx_power": 0, "baudrate": 115200, "cmd_timeout_ms": 5000, "reset_timeout_ms": 10000,
"terminals": [{"mac": "001D1290000A0001", "password": "..."}]}. Passwords come from this file
only and are registered as log secrets before anything else happens; no message of this module
carries one.
"""

import asyncio
import json

from firmware import log
from firmware.radio import j11
from firmware.radio.j11_module import J11Module, J11ModuleError

_TAG = "sm-radio"
CMD_HAN_ACCEPT = 0x0025  # HAN acceptance mode set: 1 initial (accepting), 2 normal
CMD_GET_INIT = 0x0107  # get initial settings: mode, sleep, channel, power
HAN_ACTIVE = 2  # 0x0001 block state: 1 inactive, 2 active, 3 authenticating
RESULT_PORT_OPEN = 0x0A  # 0x0005: port already open (counts as done)
MODE_PAN_COORDINATOR = 1
MAX_TERMINALS = 16  # entries this tool registers [I: the module's table size is not public]
RX_QUEUE = 32  # datagrams held per terminal for the client (the oldest dropped beyond)

DEFAULTS = {
    "channel": 4,
    "pan_id": 0x1234,
    "udp_port": 4059,
    "tx_power": 0,
    "baudrate": 115200,
    "cmd_timeout_ms": 5000,
    "reset_timeout_ms": 10000,
    "tx_retries": 3,
}


def _int(v):
    return int(v, 0) if isinstance(v, str) else int(v)


def check_config(raw):
    """The validated configuration (defaults filled in); ValueError naming the key, never a
    password. terminals: [(mac bytes, password bytes)]."""
    if not isinstance(raw, dict):
        raise ValueError("smart-meter radio configuration: the top level must be an object")
    for t in raw.get("terminals") or ():
        if isinstance(t, dict) and isinstance(t.get("password"), str) and t["password"]:
            log.add_secret(t["password"])  # first: nothing below may show it
    cfg = dict(DEFAULTS)
    bounds = {"channel": (4, 17), "pan_id": (0, 0xFFFE), "udp_port": (1, 0xFFFF),
              "tx_power": (0, 2), "baudrate": (1200, 4000000), "cmd_timeout_ms": (100, 600000),
              "reset_timeout_ms": (100, 600000), "tx_retries": (0, 10)}
    for key, (lo, hi) in bounds.items():
        if key in raw:
            try:
                v = _int(raw[key])
            except (TypeError, ValueError):
                raise ValueError("smart-meter radio configuration: %s is not an integer" % key)
            if not lo <= v <= hi:
                raise ValueError("smart-meter radio configuration: %s must be %d..%d"
                                 % (key, lo, hi))
            cfg[key] = v
    terms = raw.get("terminals")
    if not isinstance(terms, list) or not 1 <= len(terms) <= MAX_TERMINALS:
        raise ValueError("smart-meter radio configuration: terminals must list 1..%d entries"
                         % MAX_TERMINALS)
    out = []
    for i, t in enumerate(terms):
        if not isinstance(t, dict):
            raise ValueError("smart-meter radio configuration: terminal %d is not an object" % i)
        try:
            mac = j11.mac_bytes(t.get("mac"))
        except (TypeError, ValueError, j11.J11Error):
            raise ValueError("smart-meter radio configuration: terminal %d: mac must be 16 hex "
                             "digits" % i)
        pw = t.get("password")
        pwb = pw.encode() if isinstance(pw, str) else b""
        if not 1 <= len(pwb) <= 32:
            raise ValueError("smart-meter radio configuration: terminal %d: password must be "
                             "1..32 bytes" % i)
        if any(m == mac for m, _ in out):
            raise ValueError("smart-meter radio configuration: terminal %d: mac listed twice" % i)
        out.append((mac, pwb))
    cfg["terminals"] = out
    return cfg


def load_config(path):
    """check_config() of a JSON file; ValueError when unreadable or invalid."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        # the parser's message may quote the file's text (a password): only its position
        where = " (line %d)" % e.lineno if hasattr(e, "lineno") else ""
        raise ValueError("smart-meter radio configuration %s unreadable%s" % (path, where))
    return check_config(raw)


class JoinFailed(Exception):
    def __init__(self, mac, result):
        super().__init__("terminal %s did not join: %s" % (
            j11.mac_hex(mac), {2: "PANA rejected its credentials (result 2)",
                               3: "no PANA answer (result 3)"}.get(result,
                                                                  "no PANA within the time")))
        self.result = result


class RadioEndpoint:
    """One terminal as a datagram endpoint, shaped like what AsyncDlmsUdpClient uses of its
    asyncio transport and protocol: sendto(data, addr) (the addr is ignored: the terminal's
    link-local address and port are fixed), queue (datagrams from the terminal), close()."""

    def __init__(self, radio, mac):
        self.radio = radio
        self.mac = bytes(mac)
        self.ipv6 = j11.link_local_of_mac(self.mac)
        self.addr = (j11.ipv6_text(self.ipv6), radio.cfg["udp_port"])
        self.queue = asyncio.Queue()
        self.dropped = 0

    def deliver(self, payload):
        if self.queue.qsize() >= RX_QUEUE:
            self.queue.get_nowait()  # bounded: the oldest goes
            self.dropped += 1
        self.queue.put_nowait(payload)

    def sendto(self, data, addr=None):
        self.radio.send_soon(self.mac, bytes(data))

    def close(self):
        pass  # the radio stays up for other clients; SmartMeterRadio.close() ends it


def attach(client, endpoint):
    """Make an AsyncDlmsUdpClient (tools/dlms_client.py) talk over `endpoint` instead of its UDP
    socket: its exchange loop only calls transport.sendto() and reads proto.queue."""
    client._transport = endpoint
    client._proto = endpoint
    client.server_addr = endpoint.addr
    return client


class SmartMeterRadio:
    def __init__(self, uart, cfg, on_join=None):
        """uart: async readinto/write (SerialUart); cfg: check_config()/load_config() output.
        on_join(mac_hex, result): each 0x6028 the module reports (1 ok, 2 bad credentials)."""
        self.cfg = cfg
        self.uart = uart
        self.module = J11Module(uart, cmd_timeout_ms=cfg["cmd_timeout_ms"])
        self.on_join = on_join
        self.joins = []  # (mac hex, 0x6028 result) in arrival order
        self.connected = set()  # mac hex of terminals with 0x601A status 2 (PANA connected)
        self.version = None
        self.stats = {"rx": 0, "rx_unknown": 0, "rx_bad": 0, "tx": 0, "tx_fail": 0}
        self._endpoints = {}  # link-local IPv6 (16 bytes) -> RadioEndpoint
        for mac, _pw in cfg["terminals"]:
            ep = RadioEndpoint(self, mac)
            self._endpoints[ep.ipv6] = ep
        self._changed = asyncio.Event()
        self._sends = set()
        m = self.module
        m.on(j11.NOTIFY_PANA, self._pana)
        m.on(j11.NOTIFY_CONNECTION, self._connection)
        m.on(j11.NOTIFY_UDP_RX, self._udp)

    async def running_pan(self):
        """True when the module already runs our PAN: 0x0107 says mode 1 on our channel and
        0x0001 says the HAN block is active (a PAN coordinator started by an earlier run)."""
        m = self.module
        try:
            init = await m.command(CMD_GET_INIT)
            if len(init) < 4 or init[1] != MODE_PAN_COORDINATOR or init[3] != self.cfg["channel"]:
                return False
            st = await m.status()
        except J11ModuleError:
            return False  # 0x10 before any initial settings: not running
        return len(st) >= 3 and st[2] == HAN_ACTIVE

    async def start(self, reuse=False):
        """Bring the module up as PAN coordinator; J11ModuleError (codes only) on failure, each
        step bounded by the module driver's deadlines.

        reuse: keep a PAN the module already runs (running_pan()) instead of resetting it. A
        reset ends the PAN, and a terminal only notices that when its own sends go unanswered or
        its liveness limit passes (radio.liveness_s, an hour by default): a one-shot CLI run
        must not cut its terminals off. Returns True when it reused a running PAN."""
        cfg, m = self.cfg, self.module
        m.start()
        reused = reuse and await self.running_pan()
        if not reused:
            await m.reset(cfg["reset_timeout_ms"])
        self.version = await m.version()
        log.info(_TAG, "module version %04X %d.%d.%d" % self.version)
        if reused:
            log.info(_TAG, "module already runs the PAN on channel %d: kept" % cfg["channel"])
        else:
            await m.init_settings(MODE_PAN_COORDINATOR, cfg["channel"], 0, cfg["tx_power"])
            await m.han_start(cfg["pan_id"])
        await m.command(CMD_HAN_ACCEPT, b"\x01")
        for mac, pw in cfg["terminals"]:
            await m.set_pana_password(pw, mac)  # registers the password as a log secret
        try:
            await m.open_udp(cfg["udp_port"])
        except J11ModuleError as e:
            if getattr(e, "result", None) != RESULT_PORT_OPEN:
                raise
        log.info(_TAG, "PAN coordinator up: channel %d, PAN ID 0x%04X, %d terminal(s) allowed, "
                 "UDP %d" % (cfg["channel"], cfg["pan_id"], len(cfg["terminals"]),
                             cfg["udp_port"]))
        return reused

    def endpoint(self, mac):
        """The RadioEndpoint of a configured terminal (KeyError for another MAC)."""
        ep = self._endpoints.get(j11.link_local_of_mac(j11.mac_bytes(mac)))
        if ep is None:
            raise KeyError("terminal %s is not in the smart-meter radio configuration"
                           % j11.mac_hex(j11.mac_bytes(mac)))
        return ep

    def result_of(self, mac):
        """The last 0x6028 result reported for `mac`, or None."""
        h = j11.mac_hex(j11.mac_bytes(mac))
        for m, r in reversed(self.joins):
            if m == h:
                return r
        return None

    async def wait_joined(self, mac, timeout_s):
        """Wait until `mac` has authenticated (0x6028 result 1); its last result (1, or 2 when the
        module rejected its credentials: that is final, the terminal latches) or None at the
        deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            r = self.result_of(mac)
            if r in (1, 2):
                return r
            left = deadline - loop.time()
            if left <= 0:
                return r
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def send(self, mac, payload):
        """One datagram to a terminal's link-local address -> True when the module sent it
        (tx result 0); False otherwise (logged, never raised: the client retries)."""
        ep = self.endpoint(mac)
        port = self.cfg["udp_port"]
        try:
            _q, tx = await self.module.transmit(ep.ipv6, port, port, payload,
                                                self.cfg["tx_retries"])
        except J11ModuleError as e:
            self.stats["tx_fail"] += 1
            log.warn(_TAG, "transmit to %s failed: %s" % (j11.mac_hex(ep.mac), e))
            return False
        if tx != 0:
            self.stats["tx_fail"] += 1
            log.warn(_TAG, "transmit to %s: tx result %d" % (j11.mac_hex(ep.mac), tx))
            return False
        self.stats["tx"] += 1
        return True

    def send_soon(self, mac, payload):
        t = asyncio.get_running_loop().create_task(self.send(mac, payload))
        self._sends.add(t)
        t.add_done_callback(self._sends.discard)

    def close(self):
        for t in list(self._sends):
            t.cancel()
        self.module.stop()
        close = getattr(self.uart, "close", None)
        if close is not None:
            close()

    # -- notifications (the module driver's reader calls these) ------------------------------

    def _pana(self, data):
        result, mac = j11.decode_pana(data)
        h = j11.mac_hex(mac)
        self.joins.append((h, result))
        if result == j11.PANA_OK:
            log.info(_TAG, "terminal %s authenticated (PANA)" % h)
        else:
            log.warn(_TAG, "terminal %s failed PANA: result %d%s" % (
                h, result, " (bad credentials or not in the table)"
                if result == j11.PANA_BAD_CREDENTIALS else ""))
        self._changed.set()
        if self.on_join is not None:
            self.on_join(h, result)

    def _connection(self, data):
        status, mac, _rssi = j11.decode_connection(data)
        h = j11.mac_hex(mac)
        if status == j11.CONN_PANA_CONNECTED:
            self.connected.add(h)
            log.info(_TAG, "terminal %s connected" % h)
        elif status in (j11.CONN_MAC_DISCONNECTED, j11.CONN_PANA_DISCONNECTED):
            self.connected.discard(h)
            log.warn(_TAG, "terminal %s disconnected (status %d)" % (h, status))
        self._changed.set()

    def _udp(self, data):
        src, _sport, dport, _pan, _mc, _enc, _rssi, payload = j11.decode_udp_rx(data)
        ep = self._endpoints.get(bytes(src))
        if ep is None or dport != self.cfg["udp_port"]:
            self.stats["rx_unknown"] += 1
            log.warn(_TAG, "datagram from %s port %d dropped: not a configured terminal"
                     % (j11.ipv6_text(src), dport))
            return
        self.stats["rx"] += 1
        ep.deliver(bytes(payload))
