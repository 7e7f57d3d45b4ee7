"""Byte-faithful ROHM BP35Cx-J11 dual-stack module emulator on a pseudo-terminal (host tool,
CPython asyncio).

UART side: a pty in raw mode; the firmware (or an unmodified broute-j11 session) opens
`slave_path` as its radio UART. Requests are parsed the way the module does it (reference
wisun-modules.md section 3): one answer per request, result byte first, the ROHM result codes for
mangled requests (0x2FFF header checksum, 0xF1 data checksum, 0xF3 length over the maximum, 0x13
frame not whole within 1 s), 0x6019 after a reset, 0x4051 per channel as its dwell ends and 0x2051
after the whole scan, 0x6028 after a PANA exchange. B-route and HAN state are kept apart as in
the dual stack (mode 5). docs/j11.md (section "Emulator") lists every command, result code and
fault knob, and marks our inferences [I].

Time: every modelled delay (scan dwell, PANA exchange, reset, ping round trip) is a *simulated*
duration; it takes `time_scale` real seconds per simulated second and is added to
`sim_elapsed_s`. `sim_now()` is the simulated clock (real time / time_scale + `advance()`), used
for the PANA lifetime and the ARIB T108 sliding hour.

Air side: a UDP socket on a loopback address (default 127.0.0.3:4059). A 0x0008 transmit to IPv6
X becomes a datagram to the loopback address registered for X in the peer table (peer MAC ->
fe80::IID with the U/L bit flipped); a datagram from a registered peer becomes a 0x6018
notification. Faults are data (see FAULTS) and can be changed while running with set_faults().

    python -m tools.j11_emulator [--air 127.0.0.3:4059] [--sm 127.0.0.4:4059] ...
prints the pty path and runs until killed.
"""

import asyncio
import collections
import hashlib
import struct
import sys
import time

from firmware.radio import j11
from tools import module_pty

# Fault knobs. Counters are consumed one per use; booleans stay until changed.
FAULTS = {
    "bad_header_checksum": 0,  # next N frames to the host carry a wrong header checksum
    "bad_data_checksum": 0,  # next N frames to the host carry a wrong data checksum
    "garbage": 0,  # next N frames to the host are preceded by random noise
    "split_writes": False,  # write every frame in small random pieces with pauses
    "merge_writes": 0,  # next N frames to the host go out in one write with the frame after
    "drop_responses": 0,  # next N 0x2xxx responses are not sent (the command still runs)
    "drop_notifications": 0,  # next N notifications are not sent
    "mute": False,  # vanished device: nothing is sent at all, requests are not executed
    "tx_no_ack": 0,  # next N transmits answer tx result 5 and send nothing
    "pana_result": 0,  # next PANA attempts end with this 0x6028 result (2 or 3) ...
    "pana_result_count": 0,  # ... this many times
    "silent_scans": 0,  # next N active scans hear no beacon
    "mac_fail": 0,  # next N Route-B starts (0x0053) answer 0x0E, MAC connection failed
    "credentials_already_set": 0,  # next N 0x0054 answer 0x58 (True: every one)
    "truncate_requests": 0,  # next N requests lose their tail on the wire -> 0x13 after 1 s
    # PANA session lifetime in simulated seconds (0 = never expires). On expiry the module
    # re-authenticates by itself and shows the host the redo's 0x6028 [I].
    "lifetime_s": 0,
    "lifetime_disconnect_first": False,  # also send 0x601A status 4 before the redo [I]
    "reauth_result": 0,  # next lifetime redos end with this 0x6028 result (2 or 3) ...
    "reauth_result_count": 0,  # ... this many times
    "t108_limited": False,  # ARIB T108 limit forced on: every transmit is refused
    # the smart meter is out of reach (radio loss): scans hear no beacon, PANA gets no answer
    # (result 3), transmits are not acknowledged (tx result 5), nothing arrives from the air
    "air_down": False,
}

# Result codes (ROHM 63TR008E Table 34, as carried by broute-j11 commands.py)
R_OK = 0x01
R_INVALID_COMMAND = 0x03
R_INVALID_PARAM = 0x04
R_PORT_OPEN = 0x0A
R_PORT_NOT_OPEN = 0x0B
R_MAC_FAILED = 0x0E
R_HAN_ACTIVE = 0x0F  # HAN operating, or mode mismatch
R_NOT_STARTED = 0x10
R_TOO_MANY_PORTS = 0x12
R_UART_TIMEOUT = 0x13
R_WRONG_MODE = 0x14
R_HAN_AUTHENTICATING = 0x33
R_BROUTE_OPERATING = 0x34
R_BROUTE_AUTHENTICATING = 0x35
R_PING_PENDING = 0x3C
R_PANA_NOT_READY = 0x51
R_CREDENTIALS_SET = 0x58
R_HEADER_CHECKSUM = 0xF0  # data of the 0x2FFF error frame [I]
R_DATA_CHECKSUM = 0xF1
R_LENGTH_SHORT = 0xF2
R_LENGTH_OVER = 0xF3

# Commands beyond the firmware codec's names
CMD_CLOSE_UDP = 0x0006
CMD_GET_PORTS = 0x0007
CMD_GET_IP = 0x0009
CMD_GET_MAC = 0x000E
CMD_HAN_REAUTH = 0x002B
CMD_HAN_PANA_END = 0x003B
CMD_HAN_ACCEPT = 0x0025  # HAN acceptance mode set (mode 1): 1 initial (accepting), 2 normal
CMD_BROUTE_START = 0x0053
CMD_BROUTE_CREDENTIALS = 0x0054
CMD_BROUTE_PANA_START = 0x0056
CMD_BROUTE_PANA_END = 0x0057
CMD_BROUTE_END = 0x0058
CMD_BROUTE_KEY = 0x0059
CMD_BROUTE_PAN_ID = 0x005E
CMD_GET_INIT = 0x0107
CMD_PING = 0x00D1
CMD_BROUTE_REAUTH = 0x00D2
NOTIFY_PING = 0x60D1

_FRAME_TIMEOUT_S = 1.0
_MERGE_WAIT_S = 0.05  # merge_writes: how long a frame waits for one to merge with [I]
_MAX_PORTS = 6  # [I] open UDP ports the module holds (0x12 beyond)

# Modelled durations in simulated seconds [I: ROHM gives no figures]; time_scale makes them real.
SCAN_DWELL_UNIT_S = 0.00964  # per channel: 9.64 ms x 2^duration (reference section 3.2)
SIM_BOOT_S = 3.0  # reset -> 0x6019
SIM_PANA_S = 3.0  # one PANA exchange (start, re-auth, lifetime redo)
SIM_PING_TIMEOUT_S = 3.0  # no echo reply -> 0x60D1 result 2
SIM_PING_TURNAROUND_S = 0.02  # the peer's processing of an echo request
# ARIB T108: 360 s of transmit time in any hour; air time at 100 kbit/s of payload + UDP header +
# an assumed 54 bytes of PHY (8 preamble, 2 SFD, 2 PHR), MAC with security and FCS (35) and
# 6LoWPAN IPHC (7) [I]; fragmentation is not modelled.
AIR_BITRATE = 100000
AIR_OVERHEAD = 8 + 54
T108_WINDOW_S = 3600.0
T108_TX_RESULT = 0x07  # [I] tx result nibble of a transmit refused by the T108 limit

# B-route states
BR_IDLE, BR_STARTED, BR_AUTHENTICATING, BR_AUTHENTICATED = 0, 1, 2, 3


def air_time_s(payload_len):
    """Modelled air time (simulated seconds) of one datagram of payload_len bytes."""
    return (payload_len + AIR_OVERHEAD) * 8 / AIR_BITRATE


def scan_dwell_s(duration, mask):
    """Modelled duration of an active scan: 9.64 ms x 2^duration per channel in the mask."""
    return sum(1 for ch in range(4, 18) if mask >> ch & 1) * SCAN_DWELL_UNIT_S * 2 ** duration


class RequestParser:
    """The module's side of the UART: what the J11 does with the bytes the host writes.

    feed() returns events: ("frame", cmd, data) for a good request, ("reply", code, data) for an
    error answer the module sends at once. Rules: bytes before a request unique code are
    dropped silently; a bad header checksum draws one 0x2FFF and only the unique code is
    dropped (the rest is garbage to the rescan, so nothing else is answered); a length field
    below 4 draws cmd|0x2000 + 0xF2, above the maximum + 0xF3, and the header is dropped; a bad
    data checksum draws 0xF1 and the whole frame is dropped. A frame not whole within 1 s of its
    first byte is answered by expire() with 0x13."""

    def __init__(self):
        self.buf = bytearray()
        self.pending_since = None  # monotonic time the pending frame's first bytes arrived
        self.stats = collections.Counter()

    def feed(self, data, now):
        self.buf += data
        out = []
        buf = self.buf
        while True:
            i = buf.find(j11.UC_REQUEST)
            if i < 0:
                keep = min(len(buf), 3)  # a unique code may straddle two reads
                self.stats["garbage_bytes"] += len(buf) - keep
                del buf[:len(buf) - keep]
                self.pending_since = None
                break
            if i:
                self.stats["garbage_bytes"] += i
                del buf[:i]
                self.pending_since = None
            if self.pending_since is None:
                self.pending_since = now
            if len(buf) < j11.HEADER_LEN:
                break
            cmd, length, hsum = struct.unpack_from(">HHH", buf, 4)
            if sum(buf[:8]) & 0xFFFF != hsum:
                self.stats["bad_header"] += 1
                out.append(("reply", j11.ERR_HEADER_CHECKSUM, bytes((R_HEADER_CHECKSUM,))))
                del buf[:4]
                self.pending_since = None
                continue
            if length < 4 or length - 4 > j11.MAX_DATA:
                self.stats["bad_length"] += 1
                result = R_LENGTH_SHORT if length < 4 else R_LENGTH_OVER
                out.append(("reply", cmd | j11.RESP_FLAG, bytes((result,))))
                del buf[:j11.HEADER_LEN]
                self.pending_since = None
                continue
            total = j11.HEADER_LEN + length - 4
            if len(buf) < total:
                break
            dsum = struct.unpack_from(">H", buf, 10)[0]
            data = bytes(buf[j11.HEADER_LEN:total])
            del buf[:total]
            self.pending_since = None
            if sum(data) & 0xFFFF != dsum:
                self.stats["bad_data"] += 1
                out.append(("reply", cmd | j11.RESP_FLAG, bytes((R_DATA_CHECKSUM,))))
                continue
            self.stats["frames"] += 1
            out.append(("frame", cmd, data))
        return out

    def expire(self, now):
        """Events for a pending frame older than 1 s: cmd|0x2000 + 0x13, or 0xFFFF + 0x13 when
        even the command code has not arrived; the partial frame is dropped."""
        if self.pending_since is None or now - self.pending_since <= _FRAME_TIMEOUT_S:
            return []
        self.stats["frame_timeouts"] += 1
        buf = self.buf
        if len(buf) >= 6:
            reply = ("reply", struct.unpack_from(">H", buf, 4)[0] | j11.RESP_FLAG,
                     bytes((R_UART_TIMEOUT,)))
        else:
            reply = ("reply", j11.ERR_INVALID_COMMAND, bytes((R_UART_TIMEOUT,)))
        del buf[:4]
        self.pending_since = None
        return [reply] + self.feed(b"", now)


class J11Emulator(module_pty.PtyModule):
    """coordinator: optional smart-meter twin with beacons(emu, channel_mask, pairing_id) ->
    [(channel, pan_id, mac_bytes, rssi)] and authenticate(emu, own_mac, peer_mac, credentials)
    -> 0x6028 result (1/2/3), credentials {"id": str|None, "password": str}. None: the one
    configured smart meter (sm_mac, pan_id, channel, pairing_id, passwords) answers.

    boot_ms / pana_ms / scan_ms_per_channel, when given, override the real duration of those
    delays (tests that want them instant); the simulated figures are unchanged."""

    def __init__(self, air_addr=module_pty.DEFAULT_AIR, sm_addr=module_pty.DEFAULT_SM,
                 sm_mac=module_pty.DEFAULT_SM_MAC, pan_id=module_pty.DEFAULT_PAN_ID,
                 channel=module_pty.DEFAULT_CHANNEL, pana_password="0123456789AB",
                 own_mac=module_pty.DEFAULT_OWN_MAC, faults=None, scan_ms_per_channel=None,
                 boot_ms=None, pana_ms=None, rssi=-52, seed=1, version=(0x0400, 1, 2, 3),
                 app_port=None, time_scale=0.01, pairing_id=None, broute_id=None,
                 broute_password=None, coordinator=None, lifetime_s=None, t108_budget_s=360.0):
        self._init_module(air_addr, sm_addr, sm_mac, pan_id, channel, app_port, seed)
        self.pana_password = _bytes(pana_password)
        # The smart meter's B-route credentials: None id = any ID is accepted; the password
        # defaults to the HAN one. Its pairing ID is the last 8 characters of the B-route ID
        # unless given; None = it answers every pairing ID.
        self.broute_id = broute_id.upper() if broute_id else None
        self.broute_password = _bytes(broute_password) if broute_password is not None \
            else self.pana_password
        if pairing_id is None and self.broute_id:
            pairing_id = self.broute_id[-8:]
        if pairing_id is not None and len(pairing_id) != 8:
            raise ValueError("pairing_id must be 8 characters")
        self.pairing_id = _bytes(pairing_id) if pairing_id is not None else None
        self.coordinator = coordinator
        self.own_mac = j11.mac_bytes(own_mac)
        self.time_scale = time_scale
        self.scan_ms_per_channel = scan_ms_per_channel
        self.boot_ms = boot_ms
        self.pana_ms = pana_ms
        self.rssi = rssi
        self.version = version
        self.t108_budget_s = t108_budget_s
        self.faults = dict(FAULTS)
        if lifetime_s:
            self.faults["lifetime_s"] = lifetime_s
        if faults:
            self.set_faults(faults)
        self.requests = collections.deque(maxlen=2000)  # (cmd, data) as received
        self.sent = collections.deque(maxlen=2000)  # (code, data) as sent (before faults)
        self.stats = collections.Counter()
        self.sim_elapsed_s = 0.0  # total modelled time of the module's timed operations
        self._sim_offset = 0.0
        self._t0 = time.monotonic()
        self._air_log = collections.deque()  # (sim time, air time s) of transmits, last hour
        self._rx = RequestParser()
        self._tasks = []
        self._proc_task = None
        self._aux = set()  # module-internal activities (ping, lifetime redo): die with a reset
        self._reset_state()

    # -- public -------------------------------------------------------------------------------

    def set_faults(self, faults=None, **kw):
        """Change fault knobs at run time; {'disconnect': status} sends 0x601A at once."""
        d = dict(faults or {}, **kw)
        status = d.pop("disconnect", None)
        module_pty.set_fault_knobs(self.faults, FAULTS, d)
        if status:
            self.disconnect(3 if status is True else status)

    def disconnect(self, status=3):
        """Drop the session(s) and tell the host (0x601A: 3 MAC / 4 PANA disconnected)."""
        self.authenticated = False
        peer = self.broute_peer or self.sm_mac
        if self.broute >= BR_AUTHENTICATED:
            self.broute = BR_STARTED if status == 4 else BR_IDLE
        self.stats["disconnects"] += 1
        self._notify(j11.NOTIFY_CONNECTION, bytes((status,)) + peer + self._rssi_byte())

    def sim_now(self):
        """The simulated clock (s): real time since construction / time_scale + advance()."""
        real = time.monotonic() - self._t0
        return self._sim_offset + (real / self.time_scale if self.time_scale > 0
                                   else self.sim_elapsed_s)

    def advance(self, seconds):
        """Move the simulated clock forward (lifetime expiry, T108 window) without waiting."""
        self._sim_offset += seconds

    def t108_air_s(self):
        """Modelled transmit time (s) in the sliding hour ending now."""
        self._trim_air_log()
        return sum(a for _, a in self._air_log)

    async def start(self):
        await self._open()
        self._tasks = [asyncio.create_task(self._writer()),
                       asyncio.create_task(self._frame_timer()),
                       asyncio.create_task(self._lifetime_timer())]
        self._proc_task = asyncio.create_task(self._processor())

    async def stop(self):
        await self._close(self._tasks + ([self._proc_task] if self._proc_task else [])
                          + list(self._aux))
        self._tasks = []
        self._aux.clear()
        self._proc_task = None

    # -- module state -------------------------------------------------------------------------

    def _reset_state(self):
        self.mode = None  # set by 0x005F
        self.sleep = self.power = 0
        self.channel = None
        # HAN side
        self.han_peer = None
        self.password = None
        self.authenticated = False  # HAN PANA session up
        self.han_reauth = False
        self.han_auth_at = 0.0
        # B-route side
        self.broute = BR_IDLE
        self.broute_creds = None  # (id bytes, password bytes) from 0x0054
        self.broute_peer = None  # MAC, PAN ID, channel, rssi of the coordinator joined
        self.broute_pan = None
        self.broute_rssi = self.rssi
        self.broute_reauth = False
        self.broute_auth_at = 0.0
        self.open_ports = []
        self._coord_reset()
        self.last_scan = []  # beacons heard by the last scan
        self.ping_pending = False
        for t in list(self._aux):
            t.cancel()
        self._aux.clear()

    def _rssi_byte(self, rssi=None):
        return bytes(((self.rssi if rssi is None else rssi) & 0xFF,))

    def _take(self, knob):
        """Consume one use of a counter knob; True stays on. Returns whether it fired."""
        v = self.faults[knob]
        if v is True:
            return True
        if v and v > 0:
            self.faults[knob] = v - 1
            return True
        return False

    async def _delay(self, sim_s, real_ms=None):
        """One modelled delay: sim_s simulated seconds (real_ms overrides the real wait)."""
        real = real_ms / 1000 if real_ms is not None else sim_s * self.time_scale
        if real > 0:
            await asyncio.sleep(real)
        self.sim_elapsed_s += sim_s

    def _spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self._aux.add(t)
        t.add_done_callback(self._aux.discard)
        return t

    def _session_up(self):
        return self.authenticated or self.broute == BR_AUTHENTICATED or bool(self.coord_joined)

    # -- UART in ------------------------------------------------------------------------------

    def _on_readable(self):
        data = self._read_master()
        if data is None:
            return
        self._events(self._rx.feed(data, time.monotonic()))

    def _events(self, events):
        for ev in events:
            if ev[0] == "frame":
                self._request(ev[1], ev[2])
            else:
                self.stats["uart_errors"] += 1
                self._send(ev[1], ev[2])

    def _request(self, cmd, data):
        self.requests.append((cmd, data))
        self.stats["requests"] += 1
        if self.faults["mute"]:
            # a vanished device neither answers nor acts: a transmit it never answers must not
            # go on the air either (the host's retry would be a duplicate the module caused)
            self.stats["muted_requests"] += 1
            return
        if self.faults["truncate_requests"] > 0:
            self.faults["truncate_requests"] -= 1
            self.stats["truncated"] += 1
            asyncio.get_running_loop().call_later(
                _FRAME_TIMEOUT_S, self._respond, cmd, bytes((R_UART_TIMEOUT,)))
            return
        if cmd == j11.CMD_RESET:
            # Reset acts at once, even in the middle of a scan.
            if self._proc_task is not None:
                self._proc_task.cancel()
            self._cmdq = asyncio.Queue()
            self._reset_state()
            self._proc_task = asyncio.create_task(self._boot())
            return
        self._cmdq.put_nowait((cmd, data))

    async def _frame_timer(self):
        # A request that started but did not complete within 1 s is answered with result 0x13.
        while True:
            await asyncio.sleep(0.05)
            events = self._rx.expire(time.monotonic())
            if events:
                self.stats["frame_timeouts"] += 1
                self._events(events)

    async def _boot(self):
        await self._delay(SIM_BOOT_S, self.boot_ms)
        self._notify(j11.NOTIFY_STARTUP, b"")
        await self._processor()

    async def _processor(self):
        while True:
            cmd, data = await self._cmdq.get()
            try:
                await self._execute(cmd, data)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # an emulator bug must show, not hang the test silently
                print("j11 emulator: command 0x%04X crashed: %r" % (cmd, e), file=sys.stderr)
                raise

    # -- commands -----------------------------------------------------------------------------

    async def _execute(self, cmd, data):
        handler = {
            j11.CMD_VERSION: self._cmd_version,
            j11.CMD_STATUS: self._cmd_status,
            j11.CMD_INIT: self._cmd_init,
            CMD_GET_INIT: self._cmd_get_init,
            j11.CMD_ACTIVE_SCAN: self._cmd_scan,
            j11.CMD_HAN_START: self._cmd_han_start,
            j11.CMD_HAN_PANA_SET: self._cmd_pana_set,
            j11.CMD_HAN_PANA_START: self._cmd_pana_start,
            CMD_HAN_PANA_END: self._cmd_han_pana_end,
            CMD_HAN_REAUTH: self._cmd_han_reauth,
            CMD_HAN_ACCEPT: self._cmd_han_accept,
            j11.CMD_OPEN_UDP: self._cmd_open_udp,
            CMD_CLOSE_UDP: self._cmd_close_udp,
            CMD_GET_PORTS: self._cmd_get_ports,
            CMD_GET_IP: self._cmd_get_ip,
            CMD_GET_MAC: self._cmd_get_mac,
            j11.CMD_TRANSMIT: self._cmd_transmit,
            CMD_PING: self._cmd_ping,
            CMD_BROUTE_CREDENTIALS: self._cmd_broute_credentials,
            CMD_BROUTE_START: self._cmd_broute_start,
            CMD_BROUTE_PANA_START: self._cmd_broute_pana_start,
            CMD_BROUTE_PANA_END: self._cmd_broute_pana_end,
            CMD_BROUTE_END: self._cmd_broute_end,
            CMD_BROUTE_REAUTH: self._cmd_broute_reauth,
            CMD_BROUTE_KEY: self._cmd_broute_key,
            CMD_BROUTE_PAN_ID: self._cmd_broute_pan_id,
        }.get(cmd)
        if handler is None:
            self._send(j11.ERR_INVALID_COMMAND, bytes((R_INVALID_COMMAND,)))
            return
        await handler(cmd, data)

    def _result(self, cmd, result, extra=b""):
        self._respond(cmd, bytes((result,)) + extra)

    async def _cmd_version(self, cmd, data):
        fw, major, minor, rev = self.version
        self._result(cmd, R_OK, struct.pack(">HBBI", fw, major, minor, rev))

    async def _cmd_status(self, cmd, data):
        # block states (1 inactive, 2 active, 3 authenticating): global, B-route, HAN
        han = 2 if self.authenticated or self._coord_started() else (3 if self.han_peer else 1)
        br = {BR_IDLE: 1, BR_AUTHENTICATING: 3}.get(self.broute, 2)
        self._result(cmd, R_OK, bytes((2 if self.mode else 1, br, han)))

    async def _cmd_init(self, cmd, data):
        if len(data) != 4:
            return self._result(cmd, R_INVALID_PARAM)
        mode, sleep, channel, power = data
        if mode not in (1, 2, 3, 5) or sleep > 1 or not 4 <= channel <= 17 or power > 2:
            return self._result(cmd, R_INVALID_PARAM)
        if self.han_peer is not None:
            return self._result(cmd, R_HAN_ACTIVE)
        if self.broute != BR_IDLE:
            return self._result(cmd, R_BROUTE_OPERATING)
        self.mode, self.sleep, self.channel, self.power = mode, sleep, channel, power
        self._result(cmd, R_OK)

    async def _cmd_get_init(self, cmd, data):
        if self.mode is None:
            return self._result(cmd, R_NOT_STARTED)
        self._result(cmd, R_OK, bytes((self.mode, self.sleep, self.channel, self.power)))

    def _beacons(self, mask, pairing_id):
        """[(channel, pan_id, mac, rssi)] of the coordinators that answer a scan."""
        if self.coordinator is not None:
            pid = pairing_id.decode("latin-1") if pairing_id is not None else None
            return [(ch, pan, bytes(mac), rssi) for ch, pan, mac, rssi
                    in self.coordinator.beacons(self, mask, pid) if mask >> ch & 1]
        if not mask >> self.sm_channel & 1:
            return []
        if pairing_id is not None and self.pairing_id is not None \
                and pairing_id != self.pairing_id:
            return []
        return [(self.sm_channel, self.pan_id, self.sm_mac, self.rssi)]

    async def _cmd_scan(self, cmd, data):
        if len(data) not in (6, 14) or not 1 <= data[0] <= 14 or data[5] > 1 \
                or (data[5] == 1 and len(data) != 14):
            return self._result(cmd, R_INVALID_PARAM)
        duration = data[0]
        mask = struct.unpack_from(">I", data, 1)[0]
        if not mask or mask & ~j11.SCAN_MASK_ALL:
            return self._result(cmd, R_INVALID_PARAM)
        if self.mode is None:
            return self._result(cmd, R_NOT_STARTED)
        pairing_id = bytes(data[6:14]) if data[5] == 1 else None
        silent = self._take("silent_scans") or self.faults["air_down"]
        self.stats["scans"] += 1
        heard = {}
        if not silent:
            for b in self._beacons(mask, pairing_id):
                heard.setdefault(b[0], []).append(b)
        self.last_scan = []
        dwell = SCAN_DWELL_UNIT_S * 2 ** duration
        for ch in range(4, 18):
            if not mask & (1 << ch):
                continue
            await self._delay(dwell, self.scan_ms_per_channel)
            found = heard.get(ch)
            if found:
                body = bytearray((0, ch, len(found)))
                for _, pan, mac, rssi in found:
                    body += mac + struct.pack(">H", pan) + bytes((rssi & 0xFF,))
                self.last_scan += found
            else:
                body = bytes((1, ch))
            self._notify(j11.NOTIFY_SCAN, bytes(body))
        self._result(cmd, R_OK)

    async def _cmd_han_start(self, cmd, data):
        if self.mode is None:
            return self._result(cmd, R_NOT_STARTED)
        want = 2 if self.mode == 1 else 8
        if len(data) != want:
            return self._result(cmd, R_INVALID_PARAM)
        if self.han_peer is not None:
            return self._result(cmd, R_HAN_ACTIVE)
        self.han_peer = data if want == 8 else b""
        if want == 2:
            self.coord_pan = struct.unpack(">H", data)[0]
        self._result(cmd, R_OK)

    async def _cmd_pana_set(self, cmd, data):
        if self.mode is None:
            return self._result(cmd, R_NOT_STARTED)
        if self.mode == 1:
            return self._coord_pana_set(cmd, data)
        # [peer MAC (8)] + password: the MAC is present when the first 8 bytes name a peer.
        pw = data
        if len(data) > 8 and (data[:8] == self.sm_mac or j11.link_local_of_mac(data[:8])
                              in self.peers):
            pw = data[8:]
        if not 1 <= len(pw) <= 32:
            return self._result(cmd, R_INVALID_PARAM)
        self.password = pw
        self._result(cmd, R_OK)

    def _pana_outcome(self, route, peer_mac, forced=("pana_result", "pana_result_count")):
        """0x6028 result (1 OK, 2 bad credentials, 3 no response) of one PANA exchange."""
        knob, count = forced
        if self.faults[count] > 0 and self.faults[knob]:
            self.faults[count] -= 1
            return self.faults[knob]
        if self.faults["air_down"]:
            return 3
        if route == "broute":
            cid, pw = self.broute_creds
            creds = {"id": cid.decode("latin-1"), "password": pw.decode("latin-1")}
        else:
            creds = {"id": None, "password": bytes(self.password).decode("latin-1")}
        if self.coordinator is not None:
            return self.coordinator.authenticate(self, self.own_mac, bytes(peer_mac), creds)
        if self.channel != self.sm_channel or bytes(peer_mac) != self.sm_mac:
            return 3  # nobody answers on that channel / address
        if route == "broute":
            if self.broute_id is not None and creds["id"].upper() != self.broute_id:
                return 2
            return 1 if self.broute_creds[1] == self.broute_password else 2
        return 1 if self.password == self.pana_password else 2

    async def _cmd_pana_start(self, cmd, data):
        if self.han_peer is None or self.password is None:
            return self._result(cmd, R_NOT_STARTED)
        if self.han_reauth:
            return self._result(cmd, R_HAN_AUTHENTICATING)
        self._result(cmd, R_OK)
        self.han_reauth = True
        self._spawn(self._han_pana(first=True))

    async def _han_pana(self, first):
        # The PANA exchange runs in the module while the UART keeps taking commands: a command
        # that needs the session meanwhile is answered 0x33 (HAN authenticating).
        try:
            await self._delay(SIM_PANA_S, self.pana_ms)
            peer = self.han_peer or self.sm_mac
            result = self._pana_outcome("han", peer)
            self.stats["pana_%d" % result] += 1
            self.authenticated = result == 1
            self.han_auth_at = self.sim_now()
        finally:
            self.han_reauth = False
        self._notify(j11.NOTIFY_PANA, bytes((result,)) + self.sm_mac)
        if result == 1 and first:
            self._notify(j11.NOTIFY_CONNECTION, b"\x02" + self.sm_mac + self._rssi_byte())
        return result

    async def _cmd_han_pana_end(self, cmd, data):
        if not self.authenticated:
            return self._result(cmd, R_NOT_STARTED)
        self.authenticated = False
        self._result(cmd, R_OK)

    async def _cmd_han_reauth(self, cmd, data):
        if len(data) != 8:
            return self._result(cmd, R_INVALID_PARAM)
        if not self.authenticated:
            return self._result(cmd, R_NOT_STARTED)
        if self.han_reauth:
            return self._result(cmd, R_HAN_AUTHENTICATING)
        self._result(cmd, R_OK)
        self.han_reauth = True
        self._spawn(self._han_pana(first=False))

    async def _cmd_open_udp(self, cmd, data):
        if len(data) != 2:
            return self._result(cmd, R_INVALID_PARAM)
        if self.mode is None:
            return self._result(cmd, R_NOT_STARTED)
        port = struct.unpack(">H", data)[0]
        if port == 0:
            return self._result(cmd, R_INVALID_PARAM)
        if port in self.open_ports:
            return self._result(cmd, R_PORT_OPEN)
        if len(self.open_ports) >= _MAX_PORTS:
            return self._result(cmd, R_TOO_MANY_PORTS)
        self.open_ports.append(port)
        self._result(cmd, R_OK)

    async def _cmd_close_udp(self, cmd, data):
        if len(data) != 2:
            return self._result(cmd, R_INVALID_PARAM)
        if self.mode is None:
            return self._result(cmd, R_NOT_STARTED)
        port = struct.unpack(">H", data)[0]
        if port not in self.open_ports:
            return self._result(cmd, R_PORT_NOT_OPEN)
        self.open_ports.remove(port)
        self._result(cmd, R_OK)

    async def _cmd_get_ports(self, cmd, data):
        # [I] result, count (1), ports (2 each) in opening order
        self._result(cmd, R_OK, bytes((len(self.open_ports),))
                     + b"".join(struct.pack(">H", p) for p in self.open_ports))

    async def _cmd_get_ip(self, cmd, data):
        self._result(cmd, R_OK, j11.link_local_of_mac(self.own_mac))

    async def _cmd_get_mac(self, cmd, data):
        self._result(cmd, R_OK, self.own_mac)

    # -- transmit / ping ----------------------------------------------------------------------

    def _trim_air_log(self):
        horizon = self.sim_now() - T108_WINDOW_S
        log = self._air_log
        while log and log[0][0] <= horizon:
            log.popleft()

    def _t108_refuses(self, air):
        if self.faults["t108_limited"]:
            return True
        return self.t108_air_s() + air > self.t108_budget_s

    def _reauthenticating(self):
        if self.broute == BR_AUTHENTICATING or self.broute_reauth:
            return R_BROUTE_AUTHENTICATING
        if self.han_reauth:
            return R_HAN_AUTHENTICATING
        return 0

    async def _cmd_transmit(self, cmd, data):
        if len(data) < 22:
            return self._result(cmd, R_INVALID_PARAM)
        dst = bytes(data[:16])
        _sport, _dport, n = struct.unpack_from(">HHH", data, 16)
        payload = data[22:]
        if n != len(payload) or n > j11.MAX_UDP_PAYLOAD or n == 0:
            return self._result(cmd, R_INVALID_PARAM)
        busy = self._reauthenticating()
        if busy:
            return self._result(cmd, busy)
        if not self._session_up():
            return self._result(cmd, R_NOT_STARTED)
        air = air_time_s(n)
        if self._t108_refuses(air):
            self.stats["tx_t108"] += 1
            return self._result(cmd, R_OK, bytes((T108_TX_RESULT,)))
        self._air_log.append((self.sim_now(), air))  # the frame goes on the air from here on
        if self.faults["air_down"]:
            self.stats["tx_air_down"] += 1
            return self._result(cmd, R_OK, b"\x05")
        if self.faults["tx_no_ack"] > 0:
            self.faults["tx_no_ack"] -= 1
            self.stats["tx_no_ack"] += 1
            return self._result(cmd, R_OK, b"\x05")
        addr = self.peers.get(dst)
        if addr is None:
            self.stats["tx_unknown_peer"] += 1
            return self._result(cmd, R_OK, b"\x05")  # nobody acknowledges
        self._air.sendto(payload, addr)
        self.stats["tx"] += 1
        self._result(cmd, R_OK, b"\x00" + payload[:5])

    async def _cmd_ping(self, cmd, data):
        # IPv6 (16), length of the echo data (2), type (1) [, data] [I: the fields after the
        # address are not checked beyond their lengths]
        if len(data) < 19:
            return self._result(cmd, R_INVALID_PARAM)
        n = struct.unpack_from(">H", data, 16)[0]
        if n > j11.MAX_UDP_PAYLOAD:
            return self._result(cmd, R_INVALID_PARAM)
        if not self._session_up():
            return self._result(cmd, R_NOT_STARTED)
        if self.ping_pending:
            return self._result(cmd, R_PING_PENDING)
        dst = bytes(data[:16])
        self.ping_pending = True
        self._result(cmd, R_OK)
        self._spawn(self._ping(dst, n))

    async def _ping(self, dst, n):
        # The echo request and reply each take their air time; the peer turns it round.
        air = air_time_s(n + 8)
        self._air_log.append((self.sim_now(), air))
        reachable = dst in self.peers and not self.faults["air_down"]
        try:
            if reachable:
                await self._delay(2 * air + SIM_PING_TURNAROUND_S)
                self.stats["ping_ok"] += 1
            else:
                await self._delay(SIM_PING_TIMEOUT_S)
                self.stats["ping_lost"] += 1
        finally:
            self.ping_pending = False
        # [I] 0x60D1: result (1 echo reply received, 2 none), the pinged IPv6 (16)
        self._notify(NOTIFY_PING, bytes((1 if reachable else 2,)) + dst)

    # -- B-route ------------------------------------------------------------------------------

    def _broute_mode_error(self):
        if self.mode is None:
            return R_NOT_STARTED
        if self.mode != 5:
            return R_WRONG_MODE  # B-route exists only in the dual-stack mode
        return 0

    def _broute_refusal(self, *checks):
        """The result refusing a B-route command, or 0: the mode first, then checks in the
        command's order: "idle" (not started: 0x10), "busy" (a PANA exchange runs: 0x35), "up"
        (the session is up: 0x34), "down" (no session: 0x10)."""
        err = self._broute_mode_error()
        for c in checks:
            if err:
                break
            if c == "idle" and self.broute == BR_IDLE:
                err = R_NOT_STARTED
            elif c == "busy" and (self.broute == BR_AUTHENTICATING or self.broute_reauth):
                err = R_BROUTE_AUTHENTICATING
            elif c == "up" and self.broute == BR_AUTHENTICATED:
                err = R_BROUTE_OPERATING
            elif c == "down" and self.broute != BR_AUTHENTICATED:
                err = R_NOT_STARTED
        return err

    async def _cmd_broute_credentials(self, cmd, data):
        err = self._broute_mode_error()
        if err:
            return self._result(cmd, err)
        if len(data) != 44 or not all(0x21 <= b < 0x7F for b in data):
            return self._result(cmd, R_INVALID_PARAM)
        if self.broute != BR_IDLE:
            return self._result(cmd, R_BROUTE_OPERATING)
        if self._take("credentials_already_set"):
            if self.broute_creds is None:  # what the module holds: these very credentials
                self.broute_creds = (bytes(data[:32]), bytes(data[32:]))
            return self._result(cmd, R_CREDENTIALS_SET)
        if self.broute_creds is not None:
            return self._result(cmd, R_CREDENTIALS_SET)
        self.broute_creds = (bytes(data[:32]), bytes(data[32:]))
        self._result(cmd, R_OK)

    async def _cmd_broute_start(self, cmd, data):
        err = self._broute_mode_error()
        if err:
            return self._result(cmd, err)
        if self.broute != BR_IDLE:
            return self._result(cmd, R_BROUTE_OPERATING)
        if self.broute_creds is None:
            return self._result(cmd, R_PANA_NOT_READY)
        if self._take("mac_fail"):
            self.stats["mac_fail"] += 1
            return self._result(cmd, R_MAC_FAILED)
        # The module finds the meter on its channel itself: the beacon whose pairing ID is the
        # last 8 characters of the B-route ID.
        found = [] if self.faults["air_down"] else \
            self._beacons(1 << self.channel, self.broute_creds[0][-8:])
        if not found:
            self.stats["mac_fail"] += 1
            return self._result(cmd, R_MAC_FAILED)
        ch, pan, mac, rssi = max(found, key=lambda b: b[3])
        self.broute = BR_STARTED
        self.broute_peer, self.broute_pan, self.broute_rssi = bytes(mac), pan, rssi
        self._result(cmd, R_OK, bytes((ch,)) + struct.pack(">H", pan) + mac
                     + self._rssi_byte(rssi))

    async def _broute_pana(self, first):
        # Runs in the module while the UART keeps taking commands (0x35 meanwhile).
        try:
            await self._delay(SIM_PANA_S, self.pana_ms)
            result = self._pana_outcome("broute", self.broute_peer)
            self.stats["broute_pana_%d" % result] += 1
            self.broute = BR_AUTHENTICATED if result == 1 else BR_STARTED
            self.broute_auth_at = self.sim_now()
        finally:
            self.broute_reauth = False
            if self.broute == BR_AUTHENTICATING:
                self.broute = BR_STARTED
        self._notify(j11.NOTIFY_PANA, bytes((result,)) + self.broute_peer)
        if result == 1 and first:
            self._notify(j11.NOTIFY_CONNECTION,
                         b"\x02" + self.broute_peer + self._rssi_byte(self.broute_rssi))
        return result

    async def _cmd_broute_pana_start(self, cmd, data):
        err = self._broute_refusal("idle", "busy", "up")
        if err:
            return self._result(cmd, err)
        self._result(cmd, R_OK)
        self.broute = BR_AUTHENTICATING
        self._spawn(self._broute_pana(first=True))

    async def _cmd_broute_reauth(self, cmd, data):
        err = self._broute_refusal("busy", "down")
        if err:
            return self._result(cmd, err)
        self._result(cmd, R_OK)
        self.broute_reauth = True
        self._spawn(self._broute_pana(first=False))

    async def _cmd_broute_pana_end(self, cmd, data):
        err = self._broute_refusal("busy", "down")
        if err:
            return self._result(cmd, err)
        self.broute = BR_STARTED
        self._result(cmd, R_OK)

    async def _cmd_broute_end(self, cmd, data):
        err = self._broute_refusal("idle", "busy")
        if err:
            return self._result(cmd, err)
        self.broute = BR_IDLE
        self.broute_peer = None
        self._result(cmd, R_OK)

    async def _cmd_broute_key(self, cmd, data):
        err = self._broute_refusal("down")
        if err:
            return self._result(cmd, err)
        # [I] result + the 16-byte session key: a stable stand-in derived from the two MACs
        key = hashlib.sha256(self.own_mac + self.broute_peer).digest()[:16]
        self._result(cmd, R_OK, key)

    async def _cmd_broute_pan_id(self, cmd, data):
        err = self._broute_refusal("idle")
        if err:
            return self._result(cmd, err)
        self._result(cmd, R_OK, struct.pack(">H", self.broute_pan))

    # -- PANA lifetime ------------------------------------------------------------------------

    async def _lifetime_timer(self):
        while True:
            await asyncio.sleep(0.02)
            life = self.faults["lifetime_s"]
            if not life:
                continue
            now = self.sim_now()
            if self.broute == BR_AUTHENTICATED and not self.broute_reauth \
                    and now - self.broute_auth_at >= life:
                self.broute_reauth = True
                self._spawn(self._lifetime_redo("broute"))
            if self.authenticated and not self.han_reauth and now - self.han_auth_at >= life:
                self.han_reauth = True
                self._spawn(self._lifetime_redo("han"))

    async def _lifetime_redo(self, route):
        """The session lifetime ran out: the module redoes PANA by itself. What J11 shows the
        host is not public; we show the redo's 0x6028 (and, on failure, 0x601A status 4) [I]."""
        broute = route == "broute"
        peer = self.broute_peer if broute else self.sm_mac
        self.stats["lifetime_expiries"] += 1
        try:
            if self.faults["lifetime_disconnect_first"]:
                self._notify(j11.NOTIFY_CONNECTION, b"\x04" + peer + self._rssi_byte())
            await self._delay(SIM_PANA_S, self.pana_ms)
            result = self._pana_outcome(route, peer, ("reauth_result", "reauth_result_count"))
            self.stats["reauth_%d" % result] += 1
            if broute:
                self.broute = BR_AUTHENTICATED if result == 1 else BR_STARTED
                self.broute_auth_at = self.sim_now()
            else:
                self.authenticated = result == 1
                self.han_auth_at = self.sim_now()
            self._notify(j11.NOTIFY_PANA, bytes((result,)) + peer)
            if result != 1:
                self._notify(j11.NOTIFY_CONNECTION, b"\x04" + peer + self._rssi_byte())
        finally:
            if broute:
                self.broute_reauth = False
            else:
                self.han_reauth = False

    # -- HAN PAN coordinator (mode 1) ---------------------------------------------------------
    # The module as the smart meter's side: 0x000A with a PAN ID, 0x0025 acceptance, 0x002C one
    # entry per allowed device (MAC + password). It is then the `coordinator` of the terminals'
    # emulators (beacons() / authenticate() below): their PANA is checked against its table, it
    # tells its own host (0x6028 result + the device's MAC; on success 0x601A status 2) and
    # registers the device's air socket as a peer, so transmits go both ways.

    def _coord_reset(self):
        self.coord_pan = None  # PAN ID from 0x000A in mode 1
        self.coord_accepting = False  # 0x0025: 1 accepting; after a reset normal (2) [I]
        self.coord_table = {}  # device MAC (8 bytes) -> password (bytes), from 0x002C
        self.coord_joined = set()  # device MACs authenticated since the reset

    def _coord_started(self):
        return self.mode == 1 and self.coord_pan is not None

    async def _cmd_han_accept(self, cmd, data):
        if len(data) != 1 or data[0] not in (1, 2):
            return self._result(cmd, R_INVALID_PARAM)
        if self.mode is None:
            return self._result(cmd, R_NOT_STARTED)
        if self.mode != 1:
            return self._result(cmd, R_WRONG_MODE)  # [I] only the PAN coordinator accepts
        self.coord_accepting = data[0] == 1
        self._result(cmd, R_OK)

    def _coord_pana_set(self, cmd, data):
        # mode 1: the device's MAC (8) is required, then its password (1..32)
        if not 9 <= len(data) <= 40:
            return self._result(cmd, R_INVALID_PARAM)
        self.coord_table[bytes(data[:8])] = bytes(data[8:])
        self._result(cmd, R_OK)

    def beacons(self, asker, mask, pairing_id):
        """Coordinator hook: this module's beacon while it runs as PAN coordinator."""
        if not self._coord_started() or not mask >> self.channel & 1 or self.faults["air_down"] \
                or self.faults["mute"]:
            return []
        return [(self.channel, self.coord_pan, self.own_mac, asker.rssi)]

    def authenticate(self, asker, device_mac, peer_mac, credentials):
        """Coordinator hook: one device's PANA against this module's 0x002C table -> 0x6028
        result for the device: 1 ok, 2 bad credentials (MAC not in the table or wrong
        password), 3 no answer (not this coordinator or channel, not started, not accepting a
        new device [I], out of reach)."""
        mac = bytes(device_mac)
        if not self._coord_started() or bytes(peer_mac) != self.own_mac \
                or asker.channel != self.channel or self.faults["air_down"] \
                or self.faults["mute"]:
            return 3
        if not self.coord_accepting and mac not in self.coord_joined:
            self.stats["coord_not_accepting"] += 1
            return 3
        pw = self.coord_table.get(mac)
        ok = pw is not None and credentials.get("password", "").encode("latin-1") == pw
        result = 1 if ok else 2
        self.stats["coord_pana_%d" % result] += 1
        self._notify(j11.NOTIFY_PANA, bytes((result,)) + mac)
        if ok:
            self.add_peer(mac, asker.air_addr)
            if mac not in self.coord_joined:
                self.coord_joined.add(mac)
                self._notify(j11.NOTIFY_CONNECTION, b"\x02" + mac + self._rssi_byte())
        return result

    # -- air ----------------------------------------------------------------------------------

    def _air_received(self, data, addr):
        src = self._peer_ip(addr)
        if src is None:
            return
        port = self.app_port
        if self.faults["air_down"]:
            self.stats["air_down_dropped"] += 1
            return
        if not self._session_up() or port not in self.open_ports:
            self.stats["air_dropped"] += 1
            return
        if len(data) > j11.MAX_UDP_PAYLOAD:
            self.stats["air_too_long"] += 1
            return
        self.stats["rx"] += 1
        pan = self.broute_pan if self.broute == BR_AUTHENTICATED and not self.authenticated \
            else (self.coord_pan if self.mode == 1 else self.pan_id)
        head = struct.pack(">HHHBBBH", addr[1], port, pan, 0, 2, self.rssi & 0xFF, len(data))
        self._notify(j11.NOTIFY_UDP_RX, src + head + data)

    # -- UART out -----------------------------------------------------------------------------

    def _respond(self, cmd, data):
        self._send(cmd | j11.RESP_FLAG, data)

    def _notify(self, code, data):
        self._send(code, data)

    def _send(self, code, data):
        self.sent.append((code, bytes(data)))
        self.stats["frames_out"] += 1
        f = self.faults
        if f["mute"]:
            self.stats["muted"] += 1
            return
        if code & 0xF000 == 0x2000 and code != j11.ERR_HEADER_CHECKSUM \
                and f["drop_responses"] > 0:
            f["drop_responses"] -= 1
            self.stats["dropped_responses"] += 1
            return
        if code & 0xF000 in (0x4000, 0x6000) and f["drop_notifications"] > 0:
            f["drop_notifications"] -= 1
            self.stats["dropped_notifications"] += 1
            return
        frame = bytearray(j11.encode(code, data, j11.UC_RESPONSE))
        if f["bad_header_checksum"] > 0:
            f["bad_header_checksum"] -= 1
            frame[9] ^= 0x5A
        elif f["bad_data_checksum"] > 0:
            f["bad_data_checksum"] -= 1
            frame[11] ^= 0x5A
        if f["garbage"] > 0:
            f["garbage"] -= 1
            noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 40)))
            frame = bytearray(noise + b"\xd0\xf9") + frame  # include a false unique-code start
        if self._out is not None:
            self._out.put_nowait(bytes(frame))

    _split_pause_s = 0.002  # split_writes: the pause between pieces

    async def _merge(self, data):
        if self.faults["merge_writes"] > 0:
            # hold this frame a moment for the next one, then write both at once; never
            # longer than a UART burst would take [I]: a response held for seconds would be
            # a lost response, not a merged write
            self.faults["merge_writes"] -= 1
            try:
                data += await asyncio.wait_for(self._out.get(), _MERGE_WAIT_S)
                self.stats["merged_writes"] += 1
            except asyncio.TimeoutError:
                pass
        return data


def _bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)


async def _main(args):
    emu = J11Emulator(air_addr=module_pty.parse_addr(args.air),
                      sm_addr=module_pty.parse_addr(args.sm),
                      sm_mac=args.sm_mac, pan_id=int(args.pan_id, 0), channel=args.channel,
                      pana_password=args.password, time_scale=args.time_scale,
                      broute_id=args.broute_id or None, pairing_id=args.pairing_id or None)
    await module_pty.serve(emu)


def main(argv=None):
    p = module_pty.argument_parser("J11 Wi-SUN module emulator on a pty")
    p.add_argument("--broute-id", default="", help="the meter's B-route ID (32 hex)")
    p.add_argument("--pairing-id", default="", help="the meter's pairing ID (8 characters)")
    p.add_argument("--time-scale", type=float, default=0.01,
                   help="real seconds per simulated second (1 = real time)")
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
