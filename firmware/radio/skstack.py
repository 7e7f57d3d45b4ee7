# SKSTACK IP driver (reference wisun-modules.md section 4): ROHM BP35A1 / Tessera RL7023 IPS
# (single-hop) and BP35C2 / RL7023 DSS (dual stack, dse=True: the SIDE field), implementing the
# radio driver contract (firmware/radio/link.py, docs/radio.md). docs/skstack.md has the details.
#
# One reader task feeds the UART byte stream to skstack_codec.Reader; lines complete the single
# command in flight (OK / FAIL ERxx / a value line), events go to the scan collector, the join /
# send waiters and on_event; ERXUDP datagrams go to on_udp as a view of the preallocated payload
# buffer. Commands are serialised by a lock, every waiter is armed before the command is written
# (EVENT 21 usually arrives before OK) and every wait has a ticks deadline.
import asyncio

from firmware import log
from firmware.compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms, wait_ms
from firmware.radio import link
from firmware.radio import skstack_codec as sk

_TAG = "skstack"
_READ = const(128)
_VAL = const(160)  # one value line (EINFO is the longest, ~90 characters)
_HDR = const(96)  # SKSENDTO header: "SKSENDTO 1 <39> 0E1A 1 0 04D0 "

DEFAULT_CMD_TIMEOUT_MS = const(5000)
DEFAULT_PANA_TIMEOUT_MS = const(60000)
DEFAULT_SEND_TIMEOUT_MS = const(10000)  # EVENT 21 after neighbour discovery can take seconds
DEFAULT_RESET_TIMEOUT_MS = const(5000)
_LL64_OK_GRACE_MS = const(100)  # an optional OK after SKLL64's address
_TERM_TIMEOUT_MS = const(5000)
PANA_PORT = const(716)  # 0x02CC: PANA runs over UDP 716 (ERXUDP ... 02CC 02CC ...)
N_HANDLES = const(6)

# command completion kinds
_K_NONE = const(0)
_K_OK = const(1)  # OK / OK <val> / FAIL ERxx
_K_LL64 = const(2)  # the FE80:... line (no OK on real modules)
# command outcome
_R_PENDING = const(0)
_R_OK = const(1)
_R_FAIL = const(2)

# EVENT numbers
_EV_RX_NS = const(0x01)
_EV_RX_NA = const(0x02)
_EV_ECHO = const(0x05)
_EV_EDSCAN = const(0x1F)
_EV_BEACON = const(0x20)
_EV_UDP_SENT = const(0x21)
_EV_SCAN_DONE = const(0x22)
_EV_PANA_FAIL = const(0x24)
_EV_PANA_OK = const(0x25)
_EV_PEER_END = const(0x26)
_EV_PANA_END = const(0x27)
_EV_END_TIMEOUT = const(0x28)
_EV_LIFETIME = const(0x29)
_EV_TX_LIMIT_ON = const(0x32)
_EV_TX_LIMIT_OFF = const(0x33)

_B_OK = b"OK"
_B_FAIL = b"FAIL"
_B_EVENT = b"EVENT"
_B_EPANDESC = b"EPANDESC"
_B_EPORT = b"EPORT"
_B_FE80 = b"FE80"


def scan_channels(mask):
    """J11 channel mask (bits 4..17) -> (SKSTACK mask, channel count). The whole J11 band is
    sent as FFFFFFFF (all 28 SKSTACK channels, as the reference exchange does)."""
    if mask & 0x0003FFF0 == 0x0003FFF0:
        return 0xFFFFFFFF, 28
    m = 0
    n = 0
    for ch in range(4, 18):
        if mask & (1 << ch):
            m |= 1 << (link.skstack_channel(ch) - 33)
            n += 1
    return m, n


def scan_timeout_ms(duration, channels):
    """9.6 ms x (2^d + 1) per channel, + 50 % and 2 s of margin."""
    return 96 * ((1 << duration) + 1) * channels // 10 * 3 // 2 + 2000


class SkStackLink:
    def __init__(self, uart, dse=False, max_udp=sk.MAX_UDP, side=0, sec=1, hex_data=False,
                 cmd_timeout_ms=DEFAULT_CMD_TIMEOUT_MS, pana_timeout_ms=DEFAULT_PANA_TIMEOUT_MS,
                 send_timeout_ms=DEFAULT_SEND_TIMEOUT_MS, pana_lifetime_s=None,
                 auto_reauth=None, reset_timeout_ms=DEFAULT_RESET_TIMEOUT_MS):
        """dse: the dual-stack dialect (SIDE fields); side: 0 B-route side, 1 HAN side (DSE);
        sec: SKSENDTO SEC (1 encrypt or drop); hex_data: ask for hex ERXUDP data (WOPT 01)
        instead of binary (both are parsed); pana_lifetime_s / auto_reauth: S16 / S17 written
        at every join when not None."""
        self._uart = uart
        self.dse = dse
        self.family = link.FAMILY_SKSTACK_DSE if dse else link.FAMILY_SKSTACK
        self.side = side
        self.sec = sec
        self.hex_data = hex_data
        self.cmd_timeout_ms = cmd_timeout_ms
        self.pana_timeout_ms = pana_timeout_ms
        self.send_timeout_ms = send_timeout_ms
        self.reset_timeout_ms = reset_timeout_ms
        self.pana_lifetime_s = pana_lifetime_s
        self.auto_reauth = auto_reauth
        max_udp = min(max_udp, sk.MAX_UDP)
        self.max_udp = max_udp
        self.on_udp = None
        self.on_event = None
        self.rx = sk.Reader(max_udp, line_cb=self._on_line, udp_cb=self._on_udp,
                            err_cb=self._on_error)
        self._rbuf = bytearray(_READ)
        self._rmv = memoryview(self._rbuf)
        self._tx = bytearray(_HDR + max_udp)
        self._txv = memoryview(self._tx)
        self._val = bytearray(_VAL)
        self._val_n = 0
        self._erx = sk.Erxudp()
        self._ev = sk.Event()
        self._lock = asyncio.Lock()
        self._done = asyncio.Event()  # the command in flight completed (OK / FAIL / value)
        self._kind = _K_NONE
        self._want = None  # value-line prefix the command in flight collects
        self._result = _R_PENDING
        self._fail = bytearray(4)  # "ER04"
        self._ports = [0] * N_HANDLES  # UDP port per SKSTACK handle 1..6 (index 0..5)
        self._eport = -1  # EPORT lines collected so far (-1: not listing)
        # send: EVENT 21 final result (0/1), -1 pending
        self._tx_event = asyncio.Event()
        self._tx_result = -1
        self._sending = False
        # join / rejoin: EVENT 25 / 24
        self._join_event = asyncio.Event()
        self._join_result = -1
        self._joining = False
        self._pana_rx = 0  # PANA datagrams (port 716) seen during the join
        self._leaving = False
        self._reauthing = False
        self.joined = False
        self.tx_limited = False
        self._scan = None  # list collecting beacons during a scan
        self._scan_mask = 0
        self._scan_pid = None
        self._scan_done = asyncio.Event()
        self._desc = None  # PanDesc being filled after EPANDESC
        self._peer_ip = bytearray(16)
        self._setup_done = False
        self._task = None
        self._warned = 0  # bit per codec error kind already logged
        self.stats = {
            "commands": 0,
            "timeouts": 0,
            "fails": 0,
            "uart_errors": 0,
            "bad_lines": 0,
            "rx_errors": 0,
            "rx_udp": 0,
            "rx_dropped": 0,
            "tx": 0,
            "tx_no_ack": 0,
            "tx_limited": 0,
            "nd": 0,
            "beacons": 0,
            "events": 0,
        }

    # -- reader -------------------------------------------------------------------------------

    def start(self):
        """Start the reader task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._reader())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _reader(self):
        buf = self._rbuf
        mv = self._rmv
        rx = self.rx
        while True:
            try:
                n = await self._uart.readinto(buf)
            except Exception as e:  # a vanished adapter must not kill the reader
                self.stats["uart_errors"] += 1
                log.exc(_TAG, "UART read failed", e)
                await sleep_ms(200)
                continue
            try:
                rx.feed(mv, n)
            except Exception as e:  # a parser bug must not kill the reader either
                self.stats["rx_errors"] += 1
                log.exc(_TAG, "receive failed", e)
                rx.reset()

    def _on_error(self, kind):
        self.stats["rx_errors"] += 1
        if kind == sk.E_TOO_LONG:
            self.stats["rx_dropped"] += 1
            self._emit(link.EV_RX_FAIL, kind)
        if not self._warned & (1 << kind):  # once per kind: garbage must not flood the log
            self._warned |= 1 << kind
            log.warn(_TAG, "receive: %s (resync at the next line)" % sk.E_NAMES[kind])

    def _emit(self, code, detail=None):
        fn = self.on_event
        if fn is not None:
            try:
                fn(code, detail)
            except Exception as e:
                log.exc(_TAG, "on_event failed", e)

    def _on_udp(self, r, n):
        e = self._erx
        if not e.parse(r):
            self.stats["bad_lines"] += 1
            return
        if e.lport == PANA_PORT:
            if self._joining:
                self._pana_rx += 1
            return
        if e.lport not in self._ports:
            self.stats["rx_dropped"] += 1
            return
        self.stats["rx_udp"] += 1
        fn = self.on_udp
        if fn is not None:
            rssi = sk.lqi_to_rssi(e.lqi) if e.lqi >= 0 else None
            try:
                fn(e.src, e.rport, e.lport, rssi, r.data(n))
            except Exception as ex:
                log.exc(_TAG, "on_udp failed", ex)

    def _on_line(self, r):
        b, n = r.line, r.n
        if self._desc is not None:
            if n and b[0] == 32:
                f = sk.kv(r)
                if f is None or not self._desc.field(f[0], b, f[1], f[2]):
                    self.stats["bad_lines"] += 1
                return
            self._end_desc()
        if n == 0:
            return  # extra CRLF (after EEDSCAN, between EPORT lines)
        if sk.starts(b, n, _B_EVENT):
            self._on_event_line(r)
            return
        if sk.starts(b, n, _B_EPANDESC):
            self._desc = sk.PanDesc()
            return
        if self._kind == _K_NONE:
            return  # late or unsolicited response, echo
        if sk.starts(b, n, _B_OK) and (n == 2 or b[2] == 32):
            if self._kind == _K_OK:
                if n > 3:
                    self._keep(b, 3, n)
                self._finish(_R_OK)
            return
        if sk.starts(b, n, _B_FAIL):
            k = min(4, max(0, n - 5))
            self._fail[0:k] = b[5:5 + k]
            for j in range(k, 4):
                self._fail[j] = 63  # '?'
            self._finish(_R_FAIL)
            return
        if self._eport >= 0:
            p = sk.dec_int(b, 0, n)
            if p >= 0 and self._eport < N_HANDLES:
                self._ports[self._eport] = p
                self._eport += 1
            return
        w = self._want
        if w is not None and sk.starts(b, n, w):
            if w is _B_EPORT:
                self._eport = 0
                return
            self._keep(b, 0, n)
            if self._kind == _K_LL64:
                self._finish(_R_OK)

    def _keep(self, b, s, e):
        k = min(e - s, _VAL)
        self._val[0:k] = b[s:s + k]
        self._val_n = k

    def _finish(self, result):
        if self._result == _R_PENDING:
            self._result = result
            self._done.set()

    def _end_desc(self):
        d = self._desc
        self._desc = None
        if not d.complete():
            self.stats["bad_lines"] += 1
            log.warn(_TAG, "incomplete EPANDESC ignored")
            return
        if self._scan is None:
            return
        ch = link.j11_channel(d.channel)
        if ch is None or not self._scan_mask & (1 << ch):
            log.info(_TAG, "beacon on SKSTACK channel %d (no J11 channel) ignored" % d.channel)
            return
        if self._scan_pid is not None and d.pair_id is not None and d.pair_id != self._scan_pid:
            return
        self.stats["beacons"] += 1
        self._scan.append((ch, d.pan_id, d.mac, sk.lqi_to_rssi(d.lqi)))

    def _on_event_line(self, r):
        ev = self._ev
        if not ev.parse(r):
            self.stats["bad_lines"] += 1
            return
        self.stats["events"] += 1
        num = ev.num
        if num == _EV_UDP_SENT:
            if not self._sending:
                return  # PANA's own datagrams during a join
            if ev.param == 2:
                self.stats["nd"] += 1  # neighbour discovery sent: the final 00/01 follows
            elif ev.param >= 0 and self._tx_result < 0:
                self._tx_result = ev.param
                self._tx_event.set()
        elif num == _EV_PANA_OK or num == _EV_PANA_FAIL:
            ok = num == _EV_PANA_OK
            if self._joining:
                if self._join_result < 0:
                    self._join_result = 1 if ok else 0
                    self._join_event.set()
            elif self._reauthing or (not ok and self.joined):
                self._reauthing = False
                self.joined = ok
                self._emit(link.EV_REAUTH_OK if ok else link.EV_REAUTH_FAILED)
        elif num == _EV_BEACON or num == _EV_EDSCAN:
            pass  # EPANDESC / EEDSCAN follows
        elif num == _EV_SCAN_DONE:
            self._scan_done.set()
        elif num == _EV_PEER_END or num == _EV_PANA_END or num == _EV_END_TIMEOUT:
            if self._leaving:
                self._join_result = num
                self._join_event.set()
            elif self.joined:
                self.joined = False
                self._emit(link.EV_LINK_DOWN, num)
        elif num == _EV_LIFETIME:
            self._reauthing = True
            self._emit(link.EV_REAUTH_STARTED)
        elif num == _EV_TX_LIMIT_ON:
            self.tx_limited = True
            self._emit(link.EV_TX_LIMIT_ON)
        elif num == _EV_TX_LIMIT_OFF:
            self.tx_limited = False
            self._emit(link.EV_TX_LIMIT_OFF)

    # -- exchange -----------------------------------------------------------------------------

    async def _wait(self, event, deadline):
        """True when event got set before the deadline."""
        left = ticks_diff(deadline, ticks_ms())
        if left > 0 and not event.is_set():
            try:
                await wait_ms(event.wait(), left)
            except asyncio.TimeoutError:
                pass
        return event.is_set()

    def _arm(self, kind, want=None):
        self._kind = kind
        self._want = want
        self._result = _R_PENDING
        self._val_n = 0
        self._eport = -1
        self._done.clear()

    async def _run(self, n, what, kind=_K_OK, want=None, timeout_ms=None, check=True):
        """Write self._tx[:n] (the lock held), wait for completion -> _R_OK / _R_FAIL.
        `what` names the command in errors (never its arguments: they may be credentials)."""
        self._arm(kind, want)
        self.stats["commands"] += 1
        try:
            await self._uart.write(self._txv[0:n])
            t = self.cmd_timeout_ms if timeout_ms is None else timeout_ms
            if not await self._wait(self._done, ticks_add(ticks_ms(), t)):
                self.stats["timeouts"] += 1
                raise link.LinkTimeout("%s: no answer" % what)
        finally:
            self._kind = _K_NONE
            self._eport = -1
        if self._result == _R_FAIL:
            self.stats["fails"] += 1
            if check:
                raise link.LinkCommandError(what, bytes(self._fail).decode())
        return self._result

    def _put(self, text):
        """The command text (str or bytes) + CRLF into the tx buffer -> its length."""
        b = text.encode() if isinstance(text, str) else text
        n = len(b)
        self._tx[0:n] = b
        self._tx[n] = 13
        self._tx[n + 1] = 10
        return n + 2

    async def _cmd(self, text, what=None, **kw):
        return await self._run(self._put(text), what or _name(text), **kw)

    async def command(self, text, what=None, want=None, timeout_ms=None):
        """One command line -> the value line it collected (bytes, may be empty)."""
        async with self._lock:
            await self._cmd(text, what, want=want, timeout_ms=timeout_ms)
            return bytes(self._val[0:self._val_n])

    async def _setup(self):
        """Echo off, data format (read before write: WOPT writes flash), DSE: LQI in ERXUDP."""
        await self._cmd("SKSREG SFE 0")
        if await self._cmd("ROPT", check=False) == _R_FAIL:
            self.hex_data = True  # RL7023 IPS: no ROPT (FAIL ER04), hex data only
        else:
            want = b"01" if self.hex_data else b"00"
            have = bytes(self._val[0:self._val_n])
            if have != want:
                log.info(_TAG, "data format %s -> %s (flash write)" % (have, want))
                await self._cmd(b"WOPT " + want)
        if self.dse:
            await self._cmd("SKSREG SA2 1")
        self._setup_done = True

    # -- contract -----------------------------------------------------------------------------

    async def reset(self, timeout_ms=None):
        """SKRESET, then the settings a reset loses (echo) and the data format."""
        if timeout_ms is None:
            timeout_ms = self.reset_timeout_ms
        self.start()
        async with self._lock:
            self._setup_done = False
            self.joined = False
            self._reauthing = False
            self.tx_limited = False
            self._ports = [0] * N_HANDLES
            await self._cmd("SKRESET", timeout_ms=timeout_ms)
            await sleep_ms(100)  # the module restarts after its OK
            await self._setup()

    async def _ensure(self):
        if not self._setup_done:
            await self._setup()

    async def version(self):
        async with self._lock:
            await self._ensure()
            await self._cmd("SKVER", want=b"EVER")
            return bytes(self._val[5:self._val_n]).decode()

    async def register(self, reg, value=None):
        """SKSREG read (value None -> the value text) or write."""
        async with self._lock:
            if value is None:
                await self._cmd("SKSREG " + reg, want=b"ESREG")
                return bytes(self._val[6:self._val_n]).decode()
            await self._cmd("SKSREG %s %s" % (reg, value))

    async def scan(self, duration, mask=0x0003FFF0, pairing_id=None):
        """SKSCAN 2 <mask> <d> [SIDE] -> [(j11 channel, pan_id, mac bytes, rssi dBm)]."""
        if not 0 <= duration <= 14:
            raise link.LinkError("scan duration %d out of range 0..14" % duration)
        skmask, nch = scan_channels(mask)
        async with self._lock:
            await self._ensure()
            if pairing_id is not None:
                pid = pairing_id.encode() if isinstance(pairing_id, str) else bytes(pairing_id)
                if len(pid) != 8:
                    raise link.LinkError("pairing ID must be 8 characters")
                await self._cmd(b"SKSREG S0A " + pid, "SKSREG S0A")
                self._scan_pid = pid
            else:
                self._scan_pid = None
            self._scan = []
            self._scan_mask = mask
            self._scan_done.clear()
            cmd = "SKSCAN 2 %08X %X" % (skmask, duration)
            if self.dse:
                cmd += " %d" % self.side
            try:
                deadline = ticks_add(ticks_ms(), scan_timeout_ms(duration, nch))
                await self._cmd(cmd)
                if not await self._wait(self._scan_done, deadline):
                    self.stats["timeouts"] += 1
                    raise link.LinkTimeout("SKSCAN: no EVENT 22")
                if self._desc is not None:
                    self._end_desc()
                return self._scan
            finally:
                self._scan = None

    async def join(self, channel, pan_id, mac, credentials):
        """Credentials, channel, PAN ID, SKLL64, SKJOIN -> link.JOIN_*."""
        pw = credentials.get("password")
        rbid = credentials.get("id")
        if not pw:
            raise link.LinkError("PANA password missing")
        log.add_secret(pw)
        if rbid:
            log.add_secret(rbid)
        pwb = pw.encode() if isinstance(pw, str) else bytes(pw)
        if not 1 <= len(pwb) <= 32:
            raise link.LinkError("PANA password must be 1..32 bytes")
        macb = _mac(mac)
        async with self._lock:
            await self._ensure()
            await self._cmd(("SKSETPWD %X " % len(pwb)).encode() + pwb, "SKSETPWD")
            if rbid:
                rb = rbid.encode() if isinstance(rbid, str) else bytes(rbid)
                if len(rb) != 32:
                    raise link.LinkError("Route-B ID must be 32 characters")
                await self._cmd(b"SKSETRBID " + rb, "SKSETRBID")
            await self._cmd("SKSREG S2 %02X" % link.skstack_channel(channel))
            await self._cmd("SKSREG S3 %04X" % pan_id)
            if self.pana_lifetime_s is not None:
                await self._cmd("SKSREG S16 %X" % max(0x3C, self.pana_lifetime_s))
            if self.auto_reauth is not None:
                await self._cmd("SKSREG S17 %d" % (1 if self.auto_reauth else 0))
            await self._ll64(macb)
            return await self._pana(b"SKJOIN " + sk.ipv6_text(self._peer_ip), "SKJOIN")

    async def _ll64(self, macb):
        await self._cmd(b"SKLL64 " + _hexb(macb), "SKLL64", kind=_K_LL64, want=_B_FE80)
        if not sk.ipv6_into(self._val, 0, self._val_n, self._peer_ip):
            raise link.LinkCommandError("SKLL64", "bad address")
        # real modules send no OK after the address; some do: let it arrive and drop it here
        # rather than have it complete the next command
        self._arm(_K_OK)
        await self._wait(self._done, ticks_add(ticks_ms(), _LL64_OK_GRACE_MS))
        self._kind = _K_NONE

    async def _pana(self, text, what):
        self._joining = True
        self._join_result = -1
        self._pana_rx = 0
        self._join_event.clear()
        try:
            deadline = ticks_add(ticks_ms(), self.pana_timeout_ms)
            await self._cmd(text, what)
            if not await self._wait(self._join_event, deadline):
                self.stats["timeouts"] += 1
                log.warn(_TAG, "%s: no EVENT 25/24" % what)
                return link.JOIN_NO_RESPONSE
            if self._join_result == 1:
                self.joined = True
                self._reauthing = False
                return link.JOIN_OK
            self.joined = False
            # EVENT 24 says only "failed": a peer that answered PANA (ERXUDP on 716) rejected
            # the credentials; silence means nobody answered
            if self._pana_rx:
                log.warn(_TAG, "%s: PANA rejected (EVENT 24)" % what)
                return link.JOIN_BAD_CREDENTIALS
            log.warn(_TAG, "%s: PANA got no answer (EVENT 24)" % what)
            return link.JOIN_NO_RESPONSE
        finally:
            self._joining = False

    async def reauth(self):
        async with self._lock:
            return await self._pana(b"SKREJOIN", "SKREJOIN")

    async def leave(self):
        """SKTERM, wait for EVENT 27/28 (best effort: never raises)."""
        async with self._lock:
            self._leaving = True
            self._join_event.clear()
            try:
                deadline = ticks_add(ticks_ms(), _TERM_TIMEOUT_MS)
                if await self._cmd("SKTERM", check=False) == _R_OK:
                    await self._wait(self._join_event, deadline)
            except link.LinkError as e:
                log.warn(_TAG, "leave: %s" % e)
            finally:
                self._leaving = False
                self.joined = False

    async def open_udp(self, port):
        """SKTABLE E; SKUDPPORT <free handle> <port> unless the port is already open."""
        async with self._lock:
            await self._ensure()
            await self._cmd("SKTABLE E", want=_B_EPORT)
            if port in self._ports:
                return
            for h in range(N_HANDLES):
                if self._ports[h] == 0:
                    await self._cmd("SKUDPPORT %d %04X" % (h + 1, port))
                    self._ports[h] = port
                    return
            raise link.LinkCommandError("SKUDPPORT", "no free handle")

    async def send(self, dst16, sport, dport, payload):
        """SKSENDTO <H> <ip> <port> <sec> [side] <len> <raw data> -> link.TX_*."""
        n = len(payload)
        if n > self.max_udp:
            raise link.LinkError("payload %d bytes > %d" % (n, self.max_udp))
        h = 0
        while h < N_HANDLES and self._ports[h] != sport:
            h += 1
        if h == N_HANDLES:
            raise link.LinkError("port %d not open" % sport)
        async with self._lock:
            b = self._tx
            b[0:9] = b"SKSENDTO "
            b[9] = 49 + h
            b[10] = 32
            o = sk.put_ipv6(b, 11, dst16)
            b[o] = 32
            o = sk.put_hex(b, o + 1, dport, 4)
            b[o] = 32
            b[o + 1] = 48 + self.sec
            b[o + 2] = 32
            o += 3
            if self.dse:
                b[o] = 48 + self.side
                b[o + 1] = 32
                o += 2
            o = sk.put_hex(b, o, n, 4)
            b[o] = 32
            o += 1
            b[o:o + n] = payload
            self._tx_result = -1
            self._tx_event.clear()
            self._sending = True
            try:
                deadline = ticks_add(ticks_ms(), self.send_timeout_ms)
                r = await self._run(o + n, "SKSENDTO", check=False)
                if r == _R_FAIL:
                    if self.tx_limited:
                        self.stats["tx_limited"] += 1
                        return link.TX_LIMITED
                    raise link.LinkCommandError("SKSENDTO", bytes(self._fail).decode())
                if not await self._wait(self._tx_event, deadline):
                    self.stats["timeouts"] += 1
                    raise link.LinkTimeout("SKSENDTO: no EVENT 21")
            finally:
                self._sending = False
            if self._tx_result == 0:
                self.stats["tx"] += 1
                return link.TX_OK
            if self.tx_limited:
                self.stats["tx_limited"] += 1
                return link.TX_LIMITED
            self.stats["tx_no_ack"] += 1
            return link.TX_NO_ACK


def _name(text):
    """The command word of a command line (errors never carry the arguments)."""
    if isinstance(text, str):
        text = text.encode()
    i = text.find(b" ")
    return (text if i < 0 else text[:i]).decode()


def _hexb(b):
    out = bytearray(2 * len(b))
    for i in range(len(b)):
        sk.put_hex(out, 2 * i, b[i], 2)
    return bytes(out)


def _mac(mac):
    if isinstance(mac, (bytes, bytearray)) and len(mac) == 8:
        return bytes(mac)
    if isinstance(mac, str) and len(mac) == 16:
        out = bytearray(8)
        if sk.hex_into(mac.encode(), 0, 16, out) == 8:
            return bytes(out)
    raise link.LinkError("MAC must be 8 bytes or 16 hex characters")


def build(uart, cfg, dse=False, max_udp=sk.MAX_UDP):
    """A SkStackLink with the radio section's driver deadlines (cmd_timeout_ms, reset_timeout_ms,
    pana_timeout_ms: docs/radio.md), like j11_link.build: without it a SKSTACK terminal waited
    the driver's own defaults (a vanished module cost 5 s per reset, whatever the config said)."""
    return SkStackLink(uart, dse=dse, max_udp=max_udp,
                       cmd_timeout_ms=cfg.get("cmd_timeout_ms", DEFAULT_CMD_TIMEOUT_MS),
                       reset_timeout_ms=cfg.get("reset_timeout_ms", DEFAULT_RESET_TIMEOUT_MS),
                       pana_timeout_ms=cfg.get("pana_timeout_ms", DEFAULT_PANA_TIMEOUT_MS))
