"""Byte-faithful ROHM BP35Cx-J11 module emulator on a pseudo-terminal (host tool, CPython asyncio).

UART side: a pty in raw mode; the firmware opens `slave_path` as its radio UART. Requests are
reassembled with the firmware's own codec and answered as reference wisun-modules.md section 3
describes: result byte first, 0x6019 after a reset, 0x4051 per channel before 0x2051, 0x6028 after
0x003A, 0x2008 with the tx result, 0x13 when a request does not arrive whole within 1 s.

Air side: a UDP socket on a loopback address (default 127.0.0.3:4059). A 0x0008 transmit to IPv6 X
becomes a datagram to the loopback address registered for X in the peer table (peer MAC ->
fe80::IID with the U/L bit flipped); a datagram from a registered peer becomes a 0x6018
notification. Faults are data (see FAULTS) and can be changed while running with set_faults().

    python -m tools.j11_emulator [--air 127.0.0.3:4059] [--sm 127.0.0.4:4059] ...
prints the pty path and runs until killed.
"""

import argparse
import asyncio
import collections
import os
import random
import signal
import struct
import sys
import tty

from firmware.compat import ticks_diff, ticks_ms
from firmware.radio import j11

DEFAULT_AIR = ("127.0.0.3", 4059)
DEFAULT_SM = ("127.0.0.4", 4059)
DEFAULT_SM_MAC = "001D129012345678"
DEFAULT_OWN_MAC = "001D1290000A0001"
DEFAULT_PAN_ID = 0x1234
DEFAULT_CHANNEL = 4

# Fault knobs. Counters are consumed one per use; booleans stay until changed.
FAULTS = {
    "bad_header_checksum": 0,  # next N frames to the host carry a wrong header checksum
    "bad_data_checksum": 0,  # next N frames to the host carry a wrong data checksum
    "garbage": 0,  # next N frames to the host are preceded by random noise
    "split_writes": False,  # write every frame in small random pieces with pauses
    "drop_responses": 0,  # next N 0x2xxx responses are not sent (the command still runs)
    "drop_notifications": 0,  # next N notifications are not sent
    "mute": False,  # vanished device: nothing is sent at all
    "tx_no_ack": 0,  # next N transmits answer tx result 5 and send nothing
    "pana_result": 0,  # next PANA attempts end with this 0x6028 result (2 or 3) ...
    "pana_result_count": 0,  # ... this many times
    "silent_scans": 0,  # next N active scans hear no beacon
    "truncate_requests": 0,  # next N requests lose their tail on the wire -> 0x13 after 1 s
    # the smart meter is out of reach (radio loss): scans hear no beacon, PANA gets no answer
    # (result 3), transmits are not acknowledged (tx result 5), nothing arrives from the air
    "air_down": False,
}

_RESULT_OK = 0x01
_RESULT_INVALID_PARAM = 0x04
_RESULT_HAN_ACTIVE = 0x0F
_RESULT_NOT_STARTED = 0x10
_RESULT_UART_TIMEOUT = 0x13
_RESULT_BUSY = 0x3D
_FRAME_TIMEOUT_S = 1.0


def _loopback(addr):
    if not addr[0].startswith("127."):
        raise ValueError("emulator addresses must be loopback (127.x), got %s" % addr[0])
    return (addr[0], int(addr[1]))


def _parse_addr(text):
    host, port = text.rsplit(":", 1)
    return _loopback((host, int(port)))



class ModuleReassembler(j11.Reassembler):
    """The firmware's reassembler plus what the module itself does with a frame that stops
    coming: after 1 s it answers result 0x13 for the command in the partial header."""

    def partial_age(self, now=None):
        """ms since the last byte arrived while a partial frame is pending, else -1."""
        if self._end == self._start:
            return -1
        return ticks_diff(ticks_ms() if now is None else now, self._last_rx)

    def partial_cmd(self):
        """Command code of the pending partial frame, or -1 when its header is incomplete."""
        if self._end - self._start >= 6 and self._at_unique(self._start):
            return struct.unpack_from(">H", self._buf, self._start + 4)[0]
        return -1

    def drop_partial(self):
        """Discard a pending partial frame (after the 1 s frame timeout)."""
        if self._end > self._start:
            self._drop_stale()
        self.flush()

class _AirProtocol(asyncio.DatagramProtocol):
    def __init__(self, emu):
        self.emu = emu

    def datagram_received(self, data, addr):
        self.emu._air_received(data, addr)


class J11Emulator:
    def __init__(self, air_addr=DEFAULT_AIR, sm_addr=DEFAULT_SM, sm_mac=DEFAULT_SM_MAC,
                 pan_id=DEFAULT_PAN_ID, channel=DEFAULT_CHANNEL, pana_password="0123456789AB",
                 own_mac=DEFAULT_OWN_MAC, faults=None, scan_ms_per_channel=10, boot_ms=30,
                 pana_ms=30, rssi=-52, seed=1, version=(0x0400, 1, 2, 3), app_port=None):
        self.air_addr = _loopback(air_addr)
        # The terminal's UDP port as the air sees it (0x6018 destination port). It defaults to
        # the air socket's port, so the default deployment is 4059 end to end.
        self.app_port = app_port or self.air_addr[1] or 4059
        self.sm_mac = j11.mac_bytes(sm_mac)
        self.sm_addr = _loopback(sm_addr)
        self.pan_id = pan_id
        self.sm_channel = channel
        self.pana_password = pana_password.encode() if isinstance(pana_password, str) \
            else bytes(pana_password)
        self.own_mac = j11.mac_bytes(own_mac)
        self.scan_ms_per_channel = scan_ms_per_channel
        self.boot_ms = boot_ms
        self.pana_ms = pana_ms
        self.rssi = rssi
        self.version = version
        self.faults = dict(FAULTS)
        if faults:
            self.set_faults(faults)
        self._rng = random.Random(seed)
        self.peers = {}  # IPv6 (16 bytes) -> loopback (ip, port)
        self.add_peer(self.sm_mac, self.sm_addr)
        self.requests = collections.deque(maxlen=2000)  # (cmd, data) as received
        self.sent = collections.deque(maxlen=2000)  # (code, data) as sent (before faults)
        self.stats = collections.Counter()
        self.slave_path = None
        self._master = self._slave = None
        self._rx = ModuleReassembler(j11.UC_REQUEST, "j11emu")
        self._out = None
        self._cmdq = None
        self._tasks = []
        self._proc_task = None
        self._air = None
        self._reset_state()

    # -- public -------------------------------------------------------------------------------

    def add_peer(self, mac, addr):
        """Register a radio peer: its link-local address maps to a loopback (ip, port)."""
        self.peers[j11.link_local_of_mac(mac)] = _loopback(addr)

    def set_faults(self, faults=None, **kw):
        """Change fault knobs at run time; {'disconnect': status} sends 0x601A at once."""
        d = dict(faults or {}, **kw)
        status = d.pop("disconnect", None)
        for k, v in d.items():
            if k not in FAULTS:
                raise KeyError("unknown fault %r" % k)
            self.faults[k] = v
        if status:
            self.disconnect(3 if status is True else status)

    def disconnect(self, status=3):
        """Drop the HAN session and tell the host (0x601A: 3 MAC / 4 PANA disconnected)."""
        self.authenticated = False
        self.stats["disconnects"] += 1
        self._notify(j11.NOTIFY_CONNECTION, bytes((status,)) + self.sm_mac + self._rssi_byte())

    async def start(self):
        loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass unchanged
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.slave_path = os.ttyname(self._slave)
        self._out = asyncio.Queue()
        self._cmdq = asyncio.Queue()
        loop.add_reader(self._master, self._on_readable)
        self._air, _ = await loop.create_datagram_endpoint(
            lambda: _AirProtocol(self), local_addr=self.air_addr)
        self.air_addr = self._air.get_extra_info("sockname")[:2]  # resolves port 0
        self._tasks = [asyncio.create_task(self._writer()),
                       asyncio.create_task(self._frame_timer())]
        self._proc_task = asyncio.create_task(self._processor())

    async def stop(self):
        loop = asyncio.get_running_loop()
        tasks = self._tasks + ([self._proc_task] if self._proc_task else [])
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        self._proc_task = None
        if self._master is not None:
            loop.remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = None
        if self._air is not None:
            self._air.close()
            self._air = None

    # -- module state -------------------------------------------------------------------------

    def _reset_state(self):
        self.mode = None  # set by 0x005F
        self.channel = None
        self.han_peer = None
        self.password = None
        self.authenticated = False
        self.open_ports = set()

    def _rssi_byte(self):
        return bytes((self.rssi & 0xFF,))

    # -- UART in ------------------------------------------------------------------------------

    def _on_readable(self):
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no process has the slave open (our own fd keeps it rare)
            return
        mv = memoryview(data)
        off = 0
        bad_before = self._rx.stats["bad_header"]
        while off < len(data):
            off += self._rx.feed(mv[off:])
            while True:
                f = self._rx.next_frame()
                if f is None:
                    break
                self._request(f[0], bytes(f[1]))
        for _ in range(self._rx.stats["bad_header"] - bad_before):
            self._send(j11.ERR_HEADER_CHECKSUM, b"")  # the module reports header errors

    def _request(self, cmd, data):
        self.requests.append((cmd, data))
        self.stats["requests"] += 1
        if self.faults["truncate_requests"] > 0:
            self.faults["truncate_requests"] -= 1
            self.stats["truncated"] += 1
            asyncio.get_running_loop().call_later(
                _FRAME_TIMEOUT_S, self._respond, cmd, bytes((_RESULT_UART_TIMEOUT,)))
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
            await asyncio.sleep(0.1)
            if self._rx.partial_age() > _FRAME_TIMEOUT_S * 1000:
                cmd = self._rx.partial_cmd()
                self._rx.drop_partial()
                self.stats["frame_timeouts"] += 1
                if cmd >= 0:
                    self._respond(cmd, bytes((_RESULT_UART_TIMEOUT,)))
                else:
                    self._send(j11.ERR_INVALID_COMMAND, bytes((_RESULT_UART_TIMEOUT,)))

    async def _boot(self):
        await asyncio.sleep(self.boot_ms / 1000)
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
            j11.CMD_ACTIVE_SCAN: self._cmd_scan,
            j11.CMD_HAN_START: self._cmd_han_start,
            j11.CMD_HAN_PANA_SET: self._cmd_pana_set,
            j11.CMD_HAN_PANA_START: self._cmd_pana_start,
            j11.CMD_OPEN_UDP: self._cmd_open_udp,
            j11.CMD_TRANSMIT: self._cmd_transmit,
        }.get(cmd)
        if handler is None:
            self._send(j11.ERR_INVALID_COMMAND, b"\x03")
            return
        await handler(cmd, data)

    def _result(self, cmd, result, extra=b""):
        self._respond(cmd, bytes((result,)) + extra)

    async def _cmd_version(self, cmd, data):
        fw, major, minor, rev = self.version
        self._result(cmd, _RESULT_OK, struct.pack(">HBBI", fw, major, minor, rev))

    async def _cmd_status(self, cmd, data):
        han = 2 if self.authenticated else (3 if self.han_peer else 1)
        self._result(cmd, _RESULT_OK, bytes((2 if self.mode else 1, 1, han)))

    async def _cmd_init(self, cmd, data):
        if len(data) != 4:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        mode, sleep, channel, power = data
        if mode not in (1, 2, 3, 5) or sleep > 1 or not 4 <= channel <= 17 or power > 2:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        if self.han_peer is not None:
            return self._result(cmd, _RESULT_HAN_ACTIVE)
        self.mode, self.channel = mode, channel
        self._result(cmd, _RESULT_OK)

    async def _cmd_scan(self, cmd, data):
        if len(data) not in (6, 14) or not 1 <= data[0] <= 14:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        if self.mode is None:
            return self._result(cmd, _RESULT_NOT_STARTED)
        mask = struct.unpack_from(">I", data, 1)[0]
        silent = self.faults["silent_scans"] > 0
        if silent:
            self.faults["silent_scans"] -= 1
        silent = silent or self.faults["air_down"]
        self.stats["scans"] += 1
        for ch in range(4, 18):
            if not mask & (1 << ch):
                continue
            await asyncio.sleep(self.scan_ms_per_channel / 1000)
            if ch == self.sm_channel and not silent:
                body = bytes((0, ch, 1)) + self.sm_mac + struct.pack(">H", self.pan_id) \
                    + self._rssi_byte()
            else:
                body = bytes((1, ch))
            self._notify(j11.NOTIFY_SCAN, body)
        self._result(cmd, _RESULT_OK)

    async def _cmd_han_start(self, cmd, data):
        if self.mode is None:
            return self._result(cmd, _RESULT_NOT_STARTED)
        want = 2 if self.mode == 1 else 8
        if len(data) != want:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        if self.han_peer is not None:
            return self._result(cmd, _RESULT_HAN_ACTIVE)
        self.han_peer = data if want == 8 else b""
        self._result(cmd, _RESULT_OK)

    async def _cmd_pana_set(self, cmd, data):
        if self.mode is None:
            return self._result(cmd, _RESULT_NOT_STARTED)
        # [peer MAC (8)] + password: the MAC is present when the first 8 bytes name a peer.
        pw = data
        if len(data) > 8 and (data[:8] == self.sm_mac or j11.link_local_of_mac(data[:8])
                              in self.peers):
            pw = data[8:]
        if not 1 <= len(pw) <= 32:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        self.password = pw
        self._result(cmd, _RESULT_OK)

    async def _cmd_pana_start(self, cmd, data):
        if self.han_peer is None or self.password is None:
            return self._result(cmd, _RESULT_NOT_STARTED)
        self._result(cmd, _RESULT_OK)
        await asyncio.sleep(self.pana_ms / 1000)
        if self.faults["pana_result_count"] > 0 and self.faults["pana_result"]:
            self.faults["pana_result_count"] -= 1
            result = self.faults["pana_result"]
        elif (self.channel != self.sm_channel or self.han_peer != self.sm_mac
              or self.faults["air_down"]):
            result = 3  # nobody answers on that channel / address
        elif self.password != self.pana_password:
            result = 2
        else:
            result = 1
        self.stats["pana_%d" % result] += 1
        self.authenticated = result == 1
        self._notify(j11.NOTIFY_PANA, bytes((result,)) + self.sm_mac)
        if result == 1:
            self._notify(j11.NOTIFY_CONNECTION, b"\x02" + self.sm_mac + self._rssi_byte())

    async def _cmd_open_udp(self, cmd, data):
        if len(data) != 2:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        if self.mode is None:
            return self._result(cmd, _RESULT_NOT_STARTED)
        self.open_ports.add(struct.unpack(">H", data)[0])
        self._result(cmd, _RESULT_OK)

    async def _cmd_transmit(self, cmd, data):
        if len(data) < 22:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        dst = bytes(data[:16])
        _sport, _dport, n = struct.unpack_from(">HHH", data, 16)
        payload = data[22:]
        if n != len(payload) or n > j11.MAX_UDP_PAYLOAD:
            return self._result(cmd, _RESULT_INVALID_PARAM)
        if not self.authenticated:
            return self._result(cmd, _RESULT_NOT_STARTED)
        if self.faults["air_down"]:
            self.stats["tx_air_down"] += 1
            return self._result(cmd, _RESULT_OK, b"\x05")
        if self.faults["tx_no_ack"] > 0:
            self.faults["tx_no_ack"] -= 1
            self.stats["tx_no_ack"] += 1
            return self._result(cmd, _RESULT_OK, b"\x05")
        addr = self.peers.get(dst)
        if addr is None:
            self.stats["tx_unknown_peer"] += 1
            return self._result(cmd, _RESULT_OK, b"\x05")  # nobody acknowledges
        self._air.sendto(payload, addr)
        self.stats["tx"] += 1
        self._result(cmd, _RESULT_OK, b"\x00" + payload[:5])

    # -- air ----------------------------------------------------------------------------------

    def _air_received(self, data, addr):
        src = None
        for ip, a in self.peers.items():
            if a == (addr[0], addr[1]):
                src = ip
                break
        if src is None:
            self.stats["air_unknown_peer"] += 1
            return
        port = self.app_port
        if self.faults["air_down"]:
            self.stats["air_down_dropped"] += 1
            return
        if not self.authenticated or port not in self.open_ports:
            self.stats["air_dropped"] += 1
            return
        if len(data) > j11.MAX_UDP_PAYLOAD:
            self.stats["air_too_long"] += 1
            return
        self.stats["rx"] += 1
        head = struct.pack(">HHHBBBH", addr[1], port, self.pan_id, 0, 2, self.rssi & 0xFF,
                           len(data))
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
        self._out.put_nowait(bytes(frame))

    async def _writer(self):
        while True:
            data = await self._out.get()
            if self.faults["split_writes"]:
                off = 0
                while off < len(data):
                    n = self._rng.randint(1, 7)
                    await self._write(data[off:off + n])
                    off += n
                    await asyncio.sleep(0.002)
            else:
                await self._write(data)

    async def _write(self, data):
        mv = memoryview(data)
        while len(mv):
            try:
                n = os.write(self._master, mv)
                mv = mv[n:]
            except BlockingIOError:
                await asyncio.sleep(0.005)


async def _main(args):
    emu = J11Emulator(air_addr=_parse_addr(args.air), sm_addr=_parse_addr(args.sm),
                      sm_mac=args.sm_mac, pan_id=int(args.pan_id, 0), channel=args.channel,
                      pana_password=args.password)
    await emu.start()
    print(emu.slave_path, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emu.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description="J11 Wi-SUN module emulator on a pty")
    p.add_argument("--air", default="%s:%d" % DEFAULT_AIR, help="air-side UDP bind (loopback)")
    p.add_argument("--sm", default="%s:%d" % DEFAULT_SM, help="smart meter loopback address")
    p.add_argument("--sm-mac", default=DEFAULT_SM_MAC)
    p.add_argument("--pan-id", default="0x%04X" % DEFAULT_PAN_ID)
    p.add_argument("--channel", type=int, default=DEFAULT_CHANNEL)
    p.add_argument("--password", default="0123456789AB", help="expected PANA password")
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
