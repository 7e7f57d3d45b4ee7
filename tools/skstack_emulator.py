"""SKSTACK IP module emulator on a pseudo-terminal (host tool, CPython asyncio): ROHM BP35A1 /
RL7023 IPS (single-hop) or, with dse=True, BP35C2 / RL7023 DSS (the SIDE field).

UART side: a pty in raw mode; the firmware opens `slave_path` as its radio UART. Command lines
(CRLF-terminated ASCII) are answered as reference wisun-modules.md section 4 describes: echo until
`SKSREG SFE 0`, `OK` / `OK <val>` / `FAIL ERxx`, value lines (`EVER`, `ESREG`, `EINFO`, `EPORT`),
`SKLL64` answered by the address alone, `SKSENDTO` data read raw by LEN (never echoed), `EVENT`
lines (DSE: with SIDE), `EPANDESC` blocks with per-channel dwell 9.6 ms x (2^d + 1) in simulated
time (x time_scale real seconds), ERXUDP in binary or hex (ROPT/WOPT; `ropt=False` is the RL7023
IPS: ROPT/WOPT FAIL ER04, hex only), PANA over port 716 shown as ERXUDP 02CC lines.

Air side: a UDP socket on a loopback address (default 127.0.0.3:4059), like tools/j11_emulator.py:
a SKSENDTO to IPv6 X becomes a datagram to the loopback address registered for X in the peer table
(peer MAC -> fe80::IID, U/L bit flipped); a datagram from a registered peer becomes an ERXUDP.

Faults are data (FAULTS, set_faults()); expire_session(), t108(), peer_end() raise the module's
own events. coordinator: None (one configured smart meter) or an object with
beacons(emu, j11_channel_mask, pairing_id) -> [(j11_channel, pan_id, mac_bytes, rssi)] and
authenticate(emu, own_mac, peer_mac, credentials) -> 1 ok / 2 bad credentials / 3 no response.

    python -m tools.skstack_emulator [--dse] [--air 127.0.0.3:4059] [--sm 127.0.0.4:4059] ...
prints the pty path and runs until killed.
"""

import asyncio
import collections
import sys

from firmware.radio import j11, link
from firmware.radio import skstack_codec as sk
from tools import module_pty

# Fault knobs. Counters are consumed one per use; booleans stay until changed.
FAULTS = {
    "silent_scans": 0,  # next N active scans hear no beacon
    "join_fail": 0,  # next N SKJOIN/SKREJOIN end in EVENT 24 ...
    "join_fail_kind": 2,  # ... 2: the peer rejects PANA (ERXUDP 02CC seen), 3: no answer
    "tx_no_ack": 0,  # next N SKSENDTO end EVENT 21 ... 01 and send nothing
    "nd_first": 0,  # next N SKSENDTO send EVENT 21 ... 02 (neighbour discovery) before 00/01
    "event21_before_ok": True,  # SKSENDTO: EVENT 21 before OK (real modules), else after
    "ll64_ok": False,  # SKLL64: an OK after the address (real modules send none)
    "eedscan_extra_crlf": True,  # an empty line after EEDSCAN (as the BP35A1 does)
    "eport_extra_lines": False,  # SKTABLE E: fw 1.2.10's extra lines after the six UDP ports
    "split_writes": False,  # write every line in small random pieces with pauses
    "garbage": 0,  # next N lines to the host are preceded by a line of random noise
    "mute": False,  # vanished device: nothing is sent at all, commands are not executed
    "air_down": False,  # the smart meter is out of reach: no beacon, no PANA, no ACK, no rx
    # PANA lifetime expiry: this many simulated ms after each successful join, EVENT 29, then
    # the automatic re-authentication ends EVENT 25, or EVENT 24 with reauth_fail (0: never)
    "expire_ms": 0,
    "reauth_fail": False,
    # ARIB T108: after this many acknowledged sends EVENT 32 (sends then FAIL ER10), and EVENT 33
    # t108_ms simulated ms later (0: the limit stays until t108(False))
    "t108_after_sends": 0,
    "t108_ms": 0,
}

_REG_DEFAULTS = {
    "S02": "21", "S03": "FFFF", "S07": "00000000", "S0A": "00000000", "S15": "1",
    "S16": "00000384", "S17": "1", "SA0": "1", "SA1": "1", "SFB": "0", "SFD": "00000000",
    "SFE": "1", "SFF": "0",
}
_REG_READ_ONLY = ("S07", "SFB", "SFD")
_PANA_BYTES = bytes.fromhex("0000001800000000000000000000000000000000")  # a PANA-Auth header


def _ip_text(ip16):
    return sk.ipv6_text(ip16).decode()


class _Fail(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def _ip_arg(text):
    """An IPv6 address argument as 16 bytes; FAIL ER06 (bad parameter) when it is not one."""
    out = bytearray(16)
    b = text.encode() if isinstance(text, str) else text
    if not sk.ipv6_into(b, 0, len(b), out):
        raise _Fail("ER06")
    return bytes(out)


class SkStackEmulator(module_pty.PtyModule):
    # channel: J11 numbering (the default 4 is SKSTACK 33 = 0x21)
    def __init__(self, dse=False, air_addr=module_pty.DEFAULT_AIR, sm_addr=module_pty.DEFAULT_SM,
                 sm_mac=module_pty.DEFAULT_SM_MAC, pan_id=module_pty.DEFAULT_PAN_ID,
                 channel=module_pty.DEFAULT_CHANNEL, pana_password="0123456789AB",
                 rbid=None, own_mac=module_pty.DEFAULT_OWN_MAC, faults=None, time_scale=1.0,
                 pana_ms=300, rssi=-52, seed=1, version=None, app_port=None, coordinator=None,
                 ropt=True, hex_data=False, side=0):
        self.dse = dse
        self._init_module(air_addr, sm_addr, sm_mac, pan_id, channel, app_port, seed)
        self.pana_password = pana_password
        self.rbid = rbid  # the Route-B ID the meter expects (None: any)
        self.own_mac = j11.mac_bytes(own_mac)
        self.own_ip = j11.link_local_of_mac(self.own_mac)
        self.time_scale = time_scale
        self.pana_ms = pana_ms
        self.rssi = rssi
        self.version = version or ("1.5.2" if dse else "1.2.10")
        self.coordinator = coordinator
        self.ropt = ropt
        self.hex_data = hex_data or not ropt  # flash-stored data format (WOPT)
        self.side = side  # the SIDE this module reports in events (DSE)
        self.faults = dict(FAULTS)
        if faults:
            self.set_faults(faults)
        self.requests = collections.deque(maxlen=2000)  # command lines as received (bytes)
        self.sent = collections.deque(maxlen=4000)  # lines as sent (before faults)
        self.air_out = collections.deque(maxlen=2000)  # payloads sent on the air
        self.stats = collections.Counter()
        self._inbuf = bytearray()
        self._need = -1  # SKSENDTO data bytes still to read (-1: reading a line)
        self._pending = None
        self._tasks = []
        self._timers = []
        self._reset_state()

    # -- public -------------------------------------------------------------------------------

    def set_faults(self, faults=None, **kw):
        module_pty.set_fault_knobs(self.faults, FAULTS, dict(faults or {}, **kw))

    def expire_session(self, reauth_ok=True, delay_ms=100):
        """PANA lifetime expiry: EVENT 29, then the automatic re-authentication's EVENT 25 / 24."""
        self._event(0x29, self.peer_ip)

        async def finish():
            await self._sleep(delay_ms)
            if reauth_ok:
                self._event(0x25, self.peer_ip)
            else:
                self.authenticated = False
                self._event(0x24, self.peer_ip)
        self._timers.append(asyncio.get_running_loop().create_task(finish()))

    def _timer(self, sim_ms, fn):
        async def later():
            await self._sleep(sim_ms)
            fn()
        self._timers.append(asyncio.get_running_loop().create_task(later()))

    def _expire_now(self):
        if self.authenticated:
            self.stats["expiries"] += 1
            self.expire_session(reauth_ok=not self.faults["reauth_fail"])
            if self.faults["expire_ms"] > 0 and not self.faults["reauth_fail"]:
                self._timer(self.faults["expire_ms"], self._expire_now)

    def t108(self, on):
        """ARIB T108 transmit limit reached (EVENT 32) / lifted (EVENT 33)."""
        self.tx_limit = bool(on)
        self._event(0x32 if on else 0x33, self.own_ip)

    def peer_end(self):
        """The smart meter ends the PANA session (EVENT 26)."""
        self.authenticated = False
        self._event(0x26, self.peer_ip)

    def inject(self, raw):
        """Send raw bytes to the host as they are (tests of the driver's tolerance)."""
        self._out.put_nowait(bytes(raw))

    async def start(self):
        await self._open()
        self._tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._processor())]

    async def stop(self):
        for t in self._timers:
            t.cancel()
        self._timers = []
        await self._close(self._tasks)
        self._tasks = []

    # -- module state -------------------------------------------------------------------------

    def _reset_state(self):
        self.regs = dict(_REG_DEFAULTS)
        if self.dse:
            self.regs["SA2"] = "0"
        self.password = None
        self.rbid_set = None
        self.authenticated = False
        self.peer_ip = None
        self.ports = [3610, 716, 0, 0, 0, 0]
        self.neighbours = set()
        self.tx_limit = False

    def _reg_int(self, name):
        return int(self.regs[name], 16)

    async def _sleep(self, sim_ms):
        await asyncio.sleep(sim_ms / 1000 * self.time_scale)

    # -- UART in ------------------------------------------------------------------------------

    def _on_readable(self):
        data = self._read_master()
        if data is None:
            return
        self._inbuf += data
        self._parse_input()

    def _parse_input(self):
        buf = self._inbuf
        while buf:
            if self._need >= 0:
                if len(buf) < self._need:
                    return
                line, self._pending = self._pending, None
                data = bytes(buf[:self._need])
                del buf[:self._need]
                self._need = -1
                self._queue(line, data)
                continue
            i = buf.find(b"\n")
            head = buf if i < 0 else buf[:i]
            if head.startswith(b"SKSENDTO "):
                parts = bytes(head).split(b" ")
                want = 8 if self.dse else 7  # tokens + the empty one after the last space
                if len(parts) >= want:
                    hdr = b" ".join(parts[:want - 1])
                    try:
                        n = int(parts[want - 2], 16)
                    except ValueError:
                        n = -1
                    if n < 0 or len(parts[want - 2]) != 4:
                        if i < 0:
                            return
                        del buf[:i + 1]
                        self._queue(bytes(head).rstrip(b"\r"), None)
                        continue
                    del buf[:len(hdr) + 1]
                    self._pending = hdr
                    self._need = n
                    continue
            if i < 0:
                if len(buf) > 4096:
                    del buf[:]
                return
            line = bytes(buf[:i]).rstrip(b"\r")
            del buf[:i + 1]
            if line:
                self._queue(line, None)

    def _queue(self, line, data):
        self.requests.append(line)
        self.stats["requests"] += 1
        if self.faults["mute"]:
            # a vanished device neither answers nor acts: a SKSENDTO it never answers must not
            # go on the air either (the host's retry would be a duplicate the module caused)
            self.stats["muted_requests"] += 1
            return
        if self.regs.get("SFE") == "1":
            self._line(line.decode("latin-1"))  # echo (the command line, never SKSENDTO data)
        self._cmdq.put_nowait((line, data))

    async def _processor(self):
        while True:
            line, data = await self._cmdq.get()
            try:
                await self._execute(line, data)
            except _Fail as f:
                self._line("FAIL %s" % f.code)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # an emulator bug must show, not hang the test silently
                print("skstack emulator: %r crashed: %r" % (line[:20], e), file=sys.stderr)
                raise

    # -- commands -----------------------------------------------------------------------------

    async def _execute(self, line, data):
        words = line.decode("latin-1").split(" ")
        cmd, args = words[0], words[1:]
        handler = {
            "SKVER": self._c_ver, "SKAPPVER": self._c_appver, "SKRESET": self._c_reset,
            "SKSREG": self._c_sreg, "SKINFO": self._c_info, "SKSETPWD": self._c_setpwd,
            "SKSETRBID": self._c_setrbid, "SKSCAN": self._c_scan, "SKLL64": self._c_ll64,
            "SKJOIN": self._c_join, "SKREJOIN": self._c_rejoin, "SKTERM": self._c_term,
            "SKSENDTO": self._c_sendto, "SKUDPPORT": self._c_udpport, "SKTABLE": self._c_table,
            "SKADDNBR": self._c_addnbr, "ROPT": self._c_ropt, "WOPT": self._c_wopt,
        }.get(cmd)
        if handler is None:
            raise _Fail("ER04")
        if cmd == "SKSENDTO":
            await handler(args, data)
        else:
            await handler(args)

    def _nargs(self, args, *allowed):
        if len(args) not in allowed:
            raise _Fail("ER05")

    async def _c_ver(self, args):
        self._nargs(args, 0)
        self._line("EVER " + self.version)
        self._line("OK")

    async def _c_appver(self, args):
        self._nargs(args, 0)
        self._line("EAPPVER rev26e")
        self._line("OK")

    async def _c_reset(self, args):
        self._nargs(args, 0)
        self._line("OK")
        self._reset_state()
        self.stats["resets"] += 1

    async def _c_sreg(self, args):
        self._nargs(args, 1, 2)
        reg = args[0].upper()
        if reg == "S2":
            reg = "S02"
        elif reg == "S3":
            reg = "S03"
        if reg not in self.regs:
            raise _Fail("ER06")
        if len(args) == 1:
            self._line("ESREG " + self.regs[reg])
            self._line("OK")
            return
        if reg in _REG_READ_ONLY:
            raise _Fail("ER06")
        val = args[1].upper()
        try:
            v = int(val, 16)
        except ValueError:
            raise _Fail("ER06")
        if reg == "S02" and not 0x21 <= v <= 0x3C:
            raise _Fail("ER06")
        if reg == "S03" and (len(val) > 4 or v > 0xFFFF):
            raise _Fail("ER06")
        if reg == "S0A" and len(val) != 8:
            raise _Fail("ER06")
        if reg == "S16" and v < 0x3C:
            raise _Fail("ER06")
        if reg in ("S15", "S17", "SA0", "SA1", "SA2", "SFE", "SFF") and v > 1:
            raise _Fail("ER06")
        self.regs[reg] = val
        self._line("OK")

    async def _c_info(self, args):
        self._nargs(args, 0)
        self._line("EINFO %s %s %s %s FFFE" % (_ip_text(self.own_ip), j11.mac_hex(self.own_mac),
                                               self.regs["S02"], self.regs["S03"]))
        self._line("OK")

    async def _c_setpwd(self, args):
        if len(args) < 2:
            raise _Fail("ER05")
        pw = " ".join(args[1:])
        try:
            n = int(args[0], 16)
        except ValueError:
            raise _Fail("ER06")
        if not 1 <= n <= 32 or n != len(pw):
            raise _Fail("ER06")
        self.password = pw
        self._line("OK")

    async def _c_setrbid(self, args):
        self._nargs(args, 1)
        if len(args[0]) != 32:
            raise _Fail("ER06")
        self.rbid_set = args[0]
        self.regs["S0A"] = args[0][-8:]
        self._line("OK")

    def _beacons(self, j11_mask, pairing_id):
        if self.coordinator is not None:
            return self.coordinator.beacons(self, j11_mask, pairing_id)
        if not j11_mask & (1 << self.sm_channel):
            return []
        if self.rbid is not None and pairing_id != self.rbid[-8:]:
            return []  # mode 2: the meter answers only its own pairing ID
        return [(self.sm_channel, self.pan_id, self.sm_mac, self.rssi)]

    async def _c_scan(self, args):
        if self.dse:
            self._nargs(args, 4)  # single-hop syntax to a DSE module: ER05 (hsakoh/broute-mqtt#2)
        else:
            self._nargs(args, 3)
        try:
            mode, mask, dur = int(args[0], 16), int(args[1], 16), int(args[2], 16)
        except ValueError:
            raise _Fail("ER06")
        if mode not in (0, 2, 3) or not 0 <= dur <= 14 or len(args[1]) != 8:
            raise _Fail("ER06")
        self._line("OK")
        self.stats["scans"] += 1
        if mode == 0:
            await self._ed_scan(mask, dur)
            return
        j11_mask = 0
        for bit in range(28):
            ch = link.j11_channel(33 + bit)
            if mask & (1 << bit) and ch is not None:
                j11_mask |= 1 << ch
        silent = self.faults["silent_scans"] > 0
        if silent:
            self.faults["silent_scans"] -= 1
        silent = silent or self.faults["air_down"]
        pid = self.regs["S0A"] if mode == 2 else None
        beacons = [] if silent else self._beacons(j11_mask, pid)
        dwell = 9.6 * ((1 << dur) + 1)
        for bit in range(28):
            if not mask & (1 << bit):
                continue
            await self._sleep(dwell)
            for ch, pan, mac, rssi in beacons:
                if link.skstack_channel(ch) == 33 + bit:
                    self._beacon(33 + bit, pan, mac, rssi, pid)
        self._event(0x22, self.own_ip)

    def _beacon(self, skch, pan, mac, rssi, pid):
        self.stats["beacons"] += 1
        self._event(0x20, j11.link_local_of_mac(mac))
        lines = ["EPANDESC", "  Channel:%02X" % skch, "  Channel Page:09",
                 "  Pan ID:%04X" % pan, "  Addr:%s" % j11.mac_hex(mac),
                 "  LQI:%02X" % sk.rssi_to_lqi(rssi)]
        if self.dse:
            lines.append("  Side:%d" % self.side)
        if pid is not None:
            lines.append("  PairID:%s" % pid)
        for t in lines:
            self._line(t)

    async def _ed_scan(self, mask, dur):
        dwell = 9.6 * ((1 << dur) + 1)
        res = []
        for bit in range(28):
            if mask & (1 << bit):
                await self._sleep(dwell)
                res.append("%02X %02X" % (33 + bit, self._rng.randrange(0x20, 0x60)))
        self._event(0x1F, self.own_ip)
        self._line("EEDSCAN")
        self._line(" ".join(res))
        if self.faults["eedscan_extra_crlf"]:
            self._line("")

    async def _c_ll64(self, args):
        self._nargs(args, 1)
        try:
            mac = j11.mac_bytes(args[0])
        except j11.J11Error:
            raise _Fail("ER06")
        self._line(_ip_text(j11.link_local_of_mac(mac)))
        if self.faults["ll64_ok"]:
            self._line("OK")

    async def _c_join(self, args):
        self._nargs(args, 1)
        ip = _ip_arg(args[0])
        await self._pana(ip)

    async def _c_rejoin(self, args):
        self._nargs(args, 0)
        if self.peer_ip is None:
            raise _Fail("ER10")
        await self._pana(self.peer_ip)

    def _auth_result(self, ip):
        f = self.faults
        if f["join_fail"] > 0:
            f["join_fail"] -= 1
            return f["join_fail_kind"]
        peer_mac = bytes(ip[8:16])
        peer_mac = bytes((peer_mac[0] ^ 2,)) + peer_mac[1:]
        if self.coordinator is not None:
            return self.coordinator.authenticate(
                self, self.own_mac, peer_mac, {"id": self.rbid_set, "password": self.password})
        if (f["air_down"] or self._reg_int("S02") != link.skstack_channel(self.sm_channel)
                or self._reg_int("S03") != self.pan_id or peer_mac != self.sm_mac):
            return 3
        if self.password != self.pana_password:
            return 2
        if self.rbid is not None and self.rbid_set != self.rbid:
            return 2
        return 1

    async def _pana(self, ip):
        if self.password is None:
            raise _Fail("ER10")
        self._line("OK")
        self.peer_ip = ip
        self.authenticated = False
        result = self._auth_result(ip)
        self.stats["pana_%d" % result] += 1
        self._event(0x21, ip, 2)  # neighbour solicitation before the first PANA message
        await self._sleep(self.pana_ms / 3)
        if result == 3:
            await self._sleep(self.pana_ms)
            self._event(0x24, ip)
            return
        self._event(0x02, ip)
        self.neighbours.add(ip)
        for _ in range(2):
            self._erxudp(ip, 716, 716, _PANA_BYTES, secured=0)
            self._event(0x21, ip, 0)
            await self._sleep(self.pana_ms / 3)
        if result == 1:
            self.authenticated = True
            self._event(0x25, ip)
            if self.faults["expire_ms"] > 0:
                self._timer(self.faults["expire_ms"], self._expire_now)
        else:
            self._event(0x24, ip)

    async def _c_term(self, args):
        self._nargs(args, 0)
        if not self.authenticated:
            raise _Fail("ER10")
        self._line("OK")
        self.authenticated = False
        await self._sleep(50)
        self._event(0x27, self.peer_ip)

    async def _c_udpport(self, args):
        self._nargs(args, 2)
        try:
            h, port = int(args[0], 16), int(args[1], 16)
        except ValueError:
            raise _Fail("ER06")
        if not 1 <= h <= 6 or len(args[1]) != 4:
            raise _Fail("ER06")
        self.ports[h - 1] = port
        self._line("OK")

    async def _c_table(self, args):
        self._nargs(args, 1)
        if args[0] != "E":
            raise _Fail("ER06")
        self._line("EPORT")
        for p in self.ports:
            self._line("%d" % p)
        if self.faults["eport_extra_lines"]:
            self._line("")
            for _ in range(4):
                self._line("0")
        self._line("OK")

    async def _c_addnbr(self, args):
        self._nargs(args, 2)
        ip = _ip_arg(args[0])
        self.neighbours.add(ip)
        self._line("OK")

    async def _c_ropt(self, args):
        if not self.ropt:
            raise _Fail("ER04")
        self._nargs(args, 0)
        self._line("OK %s" % ("01" if self.hex_data else "00"))

    async def _c_wopt(self, args):
        if not self.ropt:
            raise _Fail("ER04")
        self._nargs(args, 1)
        if args[0] not in ("00", "01"):
            raise _Fail("ER06")
        self.hex_data = args[0] == "01"
        self.stats["flash_writes"] += 1
        self._line("OK")

    async def _c_sendto(self, args, data):
        if data is None:
            raise _Fail("ER06")
        self._nargs(args, 6 if self.dse else 5)
        try:
            h = int(args[0], 16)
            int(args[2], 16)  # the destination port (the air side sends to the peer's address)
            sec = int(args[3], 16)
        except ValueError:
            raise _Fail("ER06")
        ip = _ip_arg(args[1])
        if not 1 <= h <= 6 or sec > 2 or len(data) > sk.MAX_UDP:
            raise _Fail("ER06")
        if self.ports[h - 1] == 0:
            raise _Fail("ER06")
        if self.tx_limit:
            self.stats["tx_limited"] += 1
            raise _Fail("ER10")
        if not self.authenticated and sec == 1:
            raise _Fail("ER10")
        f = self.faults
        ok_first = not f["event21_before_ok"]
        if ok_first:
            self._line("OK")
        if ip not in self.neighbours or f["nd_first"] > 0:
            if f["nd_first"] > 0:
                f["nd_first"] -= 1
            self.stats["nd"] += 1
            self._event(0x21, ip, 2)
            await self._sleep(20)
            if not f["air_down"] and ip in self.peers:
                self.neighbours.add(ip)
        addr = self.peers.get(ip)
        if f["tx_no_ack"] > 0 or f["air_down"] or addr is None:
            if f["tx_no_ack"] > 0:
                f["tx_no_ack"] -= 1
            self.stats["tx_no_ack"] += 1
            self._event(0x21, ip, 1)
        else:
            self._air.sendto(data, addr)
            self.air_out.append(data)
            self.stats["tx"] += 1
            self._event(0x21, ip, 0)
            n = f["t108_after_sends"]
            if n > 0 and self.stats["tx"] % n == 0:
                self.t108(True)
                if f["t108_ms"] > 0:
                    self._timer(f["t108_ms"], lambda: self.t108(False))
        if not ok_first:
            self._line("OK")

    # -- air ----------------------------------------------------------------------------------

    def _air_received(self, data, addr):
        src = self._peer_ip(addr)
        if src is None:
            return
        if self.faults["air_down"] or not self.authenticated or self.app_port not in self.ports:
            self.stats["air_dropped"] += 1
            return
        if len(data) > sk.MAX_UDP:
            self.stats["air_too_long"] += 1
            return
        self.stats["rx"] += 1
        self._erxudp(src, addr[1], self.app_port, data)

    def _erxudp(self, src, rport, lport, data, secured=1):
        mac = bytes((src[8] ^ 2,)) + bytes(src[9:16])
        head = "ERXUDP %s %s %04X %04X %s " % (_ip_text(src), _ip_text(self.own_ip), rport, lport,
                                              j11.mac_hex(mac))
        if self.dse:
            if self.regs.get("SA2") == "1":
                head += "%02X " % sk.rssi_to_lqi(self.rssi)
            head += "%d %d " % (secured, self.side)
        else:
            head += "%d " % secured
        head += "%04X " % len(data)
        body = data.hex().upper().encode() if self.hex_data else bytes(data)
        self._raw(head.encode() + body + b"\r\n")

    # -- UART out -----------------------------------------------------------------------------

    def _event(self, num, ip, param=None):
        t = "EVENT %02X %s" % (num, _ip_text(ip or self.own_ip))
        if self.dse:
            t += " %d" % self.side
        if param is not None:
            t += " %02X" % param
        self._line(t)

    def _line(self, text):
        self._raw(text.encode("latin-1") + b"\r\n")

    def _raw(self, data):
        self.sent.append(data)
        self.stats["lines_out"] += 1
        f = self.faults
        if f["mute"]:
            self.stats["muted"] += 1
            return
        if f["garbage"] > 0:
            f["garbage"] -= 1
            noise = bytes(self._rng.choice(b"\x00\x7f\xff ABCDEF0123456789:\r")
                          for _ in range(self._rng.randint(1, 300)))
            data = noise + b"\r\n" + data
        self._out.put_nowait(data)


async def _main(args):
    emu = SkStackEmulator(dse=args.dse, air_addr=module_pty.parse_addr(args.air),
                          sm_addr=module_pty.parse_addr(args.sm), sm_mac=args.sm_mac,
                          pan_id=int(args.pan_id, 0), channel=args.channel,
                          pana_password=args.password, rbid=args.rbid,
                          time_scale=args.time_scale, ropt=not args.hex_only)
    await module_pty.serve(emu)


def main(argv=None):
    p = module_pty.argument_parser("SKSTACK IP Wi-SUN module emulator on a pty")
    p.add_argument("--dse", action="store_true", help="dual-stack dialect (BP35C2, RL7023 DSS)")
    p.add_argument("--hex-only", action="store_true", help="RL7023 IPS: no ROPT/WOPT, hex data")
    p.add_argument("--rbid", default=None, help="expected Route-B ID (32 characters)")
    p.add_argument("--time-scale", type=float, default=1.0, help="real s per simulated s")
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
