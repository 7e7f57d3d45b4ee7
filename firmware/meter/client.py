# The terminal's ECHONET Lite controller (0x05FF01) for one meter object, plus the minimal node the
# terminal must be on the LAN (node profile 0x0EF001 and the controller answer Gets).
#
# One receive task (run()) owns the socket. Requests are serialised by a lock: exactly one is
# outstanding per meter, each attempt gets a fresh TID, and only a reply from the meter's IP, the
# meter object and the pending TID completes it. Anything else is counted and dropped; a
# malformed datagram costs one log line, never the task.
import asyncio

from firmware import log, timeutil
from firmware.compat import IS_MICROPYTHON, const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from firmware.meter import drmeter, echonet
from firmware.meter.echonet import EchonetError

_RX_LEN = const(1472)  # largest UDP payload in one Ethernet frame
_TX_LEN = const(256)  # our requests and node-profile answers are small
_LOG_BURST = const(5)  # malformed-frame log lines per window before suppressing
_LOG_WINDOW_MS = const(10000)

# Node profile / controller property values the terminal reports
_ON = b"\x30"
_NP_VERSION = b"\x01\x0e\x01\x00"  # node profile: spec 1.14, Format 1 supported
_DEV_RELEASE = b"\x00\x00R\x00"  # device object: APPENDIX Release R
_NO_FAULT = b"\x42"
_LOCATION_UNSET = b"\x00"
_NP_INF_MAP = (0x80, 0xD5)
_NP_GET = (0x80, 0x82, 0x83, 0x8A, 0x9D, 0x9E, 0x9F, 0xD3, 0xD4, 0xD6, 0xD7)
_CT_INF_MAP = (0x80, 0x81, 0x88)
_CT_GET = (0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x9D, 0x9E, 0x9F)


class MeterTimeout(Exception):
    pass


class MeterError(ValueError):
    """The meter answered, but not with what the read needs (refused, missing, inconsistent)."""


def _with_timeout_ms(aw, ms):
    if IS_MICROPYTHON:
        return asyncio.wait_for_ms(aw, ms)
    return asyncio.wait_for(aw, ms / 1000)


class _Pending:
    def __init__(self, tid, esvs):
        self.tid = tid
        self.esvs = esvs  # acceptable reply ESVs
        self.esv = None
        self.props = None  # copied [(epc, bytes)]
        self.event = asyncio.Event()


class MeterClient:
    def __init__(self, endpoint, meter_addr, config=None, identity=None, first_tid=None,
                 tag="echonet"):
        """endpoint: UDP endpoint (recvfrom/sendto); meter_addr: (ip, port).
        config: the "meter" config section (timeout_ms, retries, eoj, tz_offset_min).
        identity: (maker_code, unique13) for the terminal's 0x83/0x8A; default unregistered."""
        cfg = config or {}
        self.ep = endpoint
        self.addr = (meter_addr[0], meter_addr[1])
        self.timeout_ms = cfg.get("timeout_ms", 5000)
        self.retries = cfg.get("retries", 3)
        self.deoj = cfg.get("eoj", echonet.EOJ_DR_METER)
        self.tz = cfg.get("tz_offset_min", 540)
        self.seoj = echonet.EOJ_CONTROLLER
        self.tag = tag
        maker, unique = identity or (0xFFFFFF, bytes(13))
        if len(unique) != 13:
            raise ValueError("identity: unique part must be 13 bytes")
        maker3 = bytes(((maker >> 16) & 0xFF, (maker >> 8) & 0xFF, maker & 0xFF))
        self._np = self._node_profile_props(maker3, b"\xfe" + maker3 + bytes(unique))
        self._ct = self._controller_props(maker3, b"\xfe" + maker3 + bytes(unique))
        self._rx = bytearray(_RX_LEN)
        self._tx = bytearray(_TX_LEN)
        self._ans = bytearray(_TX_LEN)  # answers to requests, built by the receive task
        self._tid = (ticks_ms() if first_tid is None else first_tid) & 0xFFFF
        self._lock = asyncio.Lock()
        self._pending = None
        self._log_t0 = ticks_ms()
        self._log_n = 0
        self.stats = {
            "requests": 0, "attempts": 0, "replies": 0, "timeouts": 0, "retries": 0, "sna": 0,
            "stale": 0, "foreign": 0, "malformed": 0, "answered": 0, "dropped": 0, "errors": 0,
        }

    # --- node / controller property tables -------------------------------------------------

    @staticmethod
    def _node_profile_props(maker3, ident):
        return {
            0x80: _ON,
            0x82: _NP_VERSION,
            0x83: ident,
            0x8A: maker3,
            0x9D: echonet.encode_propmap(_NP_INF_MAP),
            0x9E: echonet.encode_propmap(()),
            0x9F: echonet.encode_propmap(_NP_GET),
            0xD3: b"\x00\x00\x01",  # one instance besides the node profile
            0xD4: b"\x00\x02",  # two classes including the node profile
            0xD6: b"\x01\x05\xff\x01",
            0xD7: b"\x01\x05\xff",
        }

    @staticmethod
    def _controller_props(maker3, ident):
        return {
            0x80: _ON,
            0x81: _LOCATION_UNSET,
            0x82: _DEV_RELEASE,
            0x83: ident,
            0x88: _NO_FAULT,
            0x8A: maker3,
            0x9D: echonet.encode_propmap(_CT_INF_MAP),
            0x9E: echonet.encode_propmap(()),
            0x9F: echonet.encode_propmap(_CT_GET),
        }

    # --- requests ------------------------------------------------------------------------------

    def _next_tid(self):
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    async def _request(self, esv, props, reply_esvs, what):
        """Send a request and wait for its reply; returns (esv, [(epc, bytes)])."""
        async with self._lock:
            self.stats["requests"] += 1
            attempts = 1 + self.retries
            for attempt in range(attempts):
                tid = self._next_tid()
                p = _Pending(tid, reply_esvs)
                n = echonet.encode_into(self._tx, tid, self.seoj, self.deoj, esv, props)
                self._pending = p
                self.stats["attempts"] += 1
                if attempt:
                    self.stats["retries"] += 1
                try:
                    self.ep.sendto(memoryview(self._tx)[:n], self.addr)
                except OSError as e:  # e.g. no route while the LAN is down: counts as a timeout
                    log.warn(self.tag, "send %s to %s failed: %s" % (what, self.addr[0], e))
                deadline = ticks_add(ticks_ms(), self.timeout_ms)
                try:
                    while p.esv is None:
                        left = ticks_diff(deadline, ticks_ms())
                        if left <= 0:
                            break
                        try:
                            await _with_timeout_ms(p.event.wait(), left)
                        except asyncio.TimeoutError:
                            break
                finally:
                    self._pending = None
                if p.esv is not None:
                    self.stats["replies"] += 1
                    return p.esv, p.props
                log.info(self.tag, "%s: no reply from %s (TID 0x%04X, attempt %d/%d)"
                         % (what, self.addr[0], tid, attempt + 1, attempts))
            self.stats["timeouts"] += 1
            raise MeterTimeout("%s: no reply from %s after %d attempts"
                               % (what, self.addr[0], attempts))

    async def get(self, epcs):
        """Get properties from the meter object: {epc: bytes, or None if unavailable}.
        Get_SNA is not an error: unreadable EPCs (PDC 0 or omitted) map to None."""
        what = "Get " + ",".join("%02X" % e for e in epcs)
        esv, props = await self._request(echonet.GET, [(e, None) for e in epcs],
                                         (echonet.GET_RES, echonet.GET_SNA), what)
        out = {}
        for e in epcs:
            out[e] = None
        for e, edt in props:
            if e in out and len(edt) and out[e] is None:
                out[e] = edt
        if esv == echonet.GET_SNA:
            self.stats["sna"] += 1
            missing = [e for e in epcs if out[e] is None]
            log.info(self.tag, "%s: Get_SNA, unavailable %s"
                     % (what, ",".join("%02X" % e for e in missing)))
        return out

    async def set_c(self, epc, edt):
        """SetC one property; True if the meter accepted it (Set_Res with PDC 0)."""
        what = "SetC %02X" % epc
        esv, props = await self._request(echonet.SETC, [(epc, edt)],
                                         (echonet.SET_RES, echonet.SETC_SNA), what)
        if esv == echonet.SET_RES:
            for e, d in props:
                if e == epc and len(d) == 0:
                    return True
            log.warn(self.tag, "%s: Set_Res without the property" % what)
            return False
        self.stats["sna"] += 1
        log.info(self.tag, "%s: refused (SetC_SNA)" % what)
        return False

    async def _get_required(self, epcs, what):
        vals = await self.get(epcs)
        for e in epcs:
            if vals[e] is None:
                raise MeterError("%s: meter did not return 0x%02X" % (what, e))
        return vals

    async def read_unit(self):
        """The 0xD4 unit code (validated against the table; never guessed)."""
        vals = await self._get_required((drmeter.EPC_UNIT,), "unit")
        return drmeter.decode_unit(vals[drmeter.EPC_UNIT])

    async def read_fixed_time(self):
        """(boundary_t2k, fwd_raw|None, rev_raw|None) from 0xE6 (AC input = forward) and 0xE7
        (AC output = reverse). MeterError if neither is available or the stamps disagree;
        MeterDataError if a stamp is not a :00/:30 boundary."""
        vals = await self.get((drmeter.EPC_FIXED_IN, drmeter.EPC_FIXED_OUT))
        e6 = vals[drmeter.EPC_FIXED_IN]
        e7 = vals[drmeter.EPC_FIXED_OUT]
        if e6 is None and e7 is None:
            raise MeterError("fixed-time values 0xE6/0xE7 both unavailable")
        stamp = None
        fwd = rev = None
        try:
            if e6 is not None:
                stamp, fwd = drmeter.decode_fixed_time(e6, self.tz, True, "0xE6")
            if e7 is not None:
                s7, rev = drmeter.decode_fixed_time(e7, self.tz, True, "0xE7")
                if e6 is not None and s7 != stamp:
                    raise MeterError("0xE6 and 0xE7 stamped differently (%s vs %s)"
                                     % (timeutil.iso(stamp), timeutil.iso(s7)))
                stamp = s7
        except drmeter.MeterDataError as e:
            log.warn(self.tag, "fixed-time value rejected: %s" % e)
            raise
        return stamp, fwd, rev

    async def read_history(self, day):
        """(forward[48], reverse[48]) raw|None for history day `day` (0 = meter's today).
        Sets 0xD5 then reads 0xE1/0xE3; the day echoed in each EDT must equal `day`."""
        if not await self.set_c(drmeter.EPC_HISTORY_DAY, drmeter.encode_day(day)):
            raise MeterError("meter refused history day %d (0xD5)" % day)
        vals = await self.get((drmeter.EPC_HIST_IN, drmeter.EPC_HIST_OUT))
        if vals[drmeter.EPC_HIST_IN] is None and vals[drmeter.EPC_HIST_OUT] is None:
            raise MeterError("history 0xE1/0xE3 both unavailable")
        out = []
        for epc in (drmeter.EPC_HIST_IN, drmeter.EPC_HIST_OUT):
            edt = vals[epc]
            if edt is None:
                out.append([None] * drmeter.HISTORY_SLOTS)
                continue
            echo, slots = drmeter.decode_history(edt, "0x%02X" % epc)
            if echo != day:
                raise MeterError("0x%02X echoes day %d, requested %d (0xD5 changed meanwhile?)"
                                 % (epc, echo, day))
            out.append(slots)
        return out[0], out[1]

    async def read_identity(self):
        """Identity and trust metadata of the meter object; unavailable items are None."""
        vals = await self.get((0x8A, 0x83, 0x82, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4))
        maker = vals[0x8A]
        ident = {
            "maker": (maker[0] << 16) | (maker[1] << 8) | maker[2] if maker and len(maker) == 3
            else None,
            "ident": vals[0x83],
            "release": vals[0x82],
            "device_type": vals[0xD0],
            "device_id": vals[0xD1],
            "tolerance": vals[0xD2][0] if vals[0xD2] and len(vals[0xD2]) == 1 else None,
            "retention": None,
            "unit": None,
        }
        if vals[0xD3] is not None:
            ident["retention"] = drmeter.decode_retention(vals[0xD3])
        if vals[0xD4] is not None:
            ident["unit"] = drmeter.decode_unit(vals[0xD4])
        return ident

    async def read_clock(self):
        """(meter clock as UTC t2k, 0xDB sync status or None) from 0x98 + 0xDA."""
        vals = await self._get_required((drmeter.EPC_DATE, drmeter.EPC_TIME), "clock")
        sync = await self.get((drmeter.EPC_TIME_SYNC,))
        t = drmeter.meter_clock_t2k(vals[drmeter.EPC_DATE], vals[drmeter.EPC_TIME], self.tz)
        s = sync[drmeter.EPC_TIME_SYNC]
        return t, (s[0] if s is not None and len(s) == 1 else None)

    # --- receive path --------------------------------------------------------------------------

    async def run(self):
        """Receive task: owns the endpoint, never returns while the endpoint works."""
        while True:
            try:
                n, addr = await self.ep.recvfrom(self._rx)
            except OSError as e:
                self.stats["errors"] += 1
                log.warn(self.tag, "receive failed: %s" % e)
                await sleep_ms(100)
                continue
            self.handle(self._rx, n, addr)

    def handle(self, buf, n, addr):
        """Process one datagram; never raises (bad input is logged and dropped)."""
        try:
            f = echonet.decode(buf, n)
        except EchonetError as e:
            self.stats["malformed"] += 1
            self._log_malformed(addr, e)
            return
        try:
            if echonet.is_request(f.esv) or f.esv == echonet.INFC:
                self._answer(f, addr)
            else:
                self._on_reply(f, addr)
        except Exception as e:  # a bug must not kill the receive task; it is logged loudly
            self.stats["errors"] += 1
            log.exc(self.tag, "handling %r from %s" % (f, addr[0]), e)

    def _log_malformed(self, addr, e):
        now = ticks_ms()
        if ticks_diff(now, self._log_t0) > _LOG_WINDOW_MS:
            if self._log_n > _LOG_BURST:
                log.warn(self.tag, "%d more malformed datagrams suppressed"
                         % (self._log_n - _LOG_BURST))
            self._log_t0 = now
            self._log_n = 0
        self._log_n += 1
        if self._log_n <= _LOG_BURST:
            log.warn(self.tag, "dropped malformed datagram from %s:%d: %s"
                     % (addr[0], addr[1], e))

    def _on_reply(self, f, addr):
        p = self._pending
        if (p is None or addr[0] != self.addr[0] or f.seoj != self.deoj
                or f.esv not in p.esvs):
            self.stats["foreign"] += 1
            log.debug(self.tag, "ignored %r from %s" % (f, addr[0]))
            return
        if f.tid != p.tid:
            self.stats["stale"] += 1
            log.info(self.tag, "ignored late reply TID 0x%04X (waiting for 0x%04X)"
                     % (f.tid, p.tid))
            return
        # Copy now: the receive buffer is reused for the next datagram.
        p.props = [(e, bytes(d)) for e, d in f.props]
        p.esv = f.esv
        self._pending = None  # duplicates of this reply are now "foreign"
        p.event.set()

    def _answer(self, f, addr):
        """Answer a request addressed to the terminal's node profile or controller."""
        if echonet.eoj_matches(f.deoj, echonet.EOJ_NODE_PROFILE):
            own, table = echonet.EOJ_NODE_PROFILE, self._np
        elif echonet.eoj_matches(f.deoj, echonet.EOJ_CONTROLLER):
            own, table = echonet.EOJ_CONTROLLER, self._ct
        else:
            self.stats["dropped"] += 1  # not an object of ours: no response (spec practice)
            return
        esv = f.esv
        get_props = None
        if esv == echonet.GET or esv == echonet.INF_REQ:
            props = []
            ok = True
            for e, _ in f.props:
                v = table.get(e)
                ok = ok and v is not None
                props.append((e, v))
            if esv == echonet.GET:
                resp = echonet.GET_RES if ok else echonet.GET_SNA
            else:
                resp = echonet.INF if ok else echonet.INF_SNA
        elif esv == echonet.SETC or esv == echonet.SETI:
            # Nothing on the terminal is writable over the LAN: refuse, echoing the EDTs.
            props = f.props
            resp = echonet.SETC_SNA if esv == echonet.SETC else echonet.SETI_SNA
        elif esv == echonet.SETGET:
            props = f.props
            get_props = [(e, table.get(e)) for e, _ in f.get_props]
            resp = echonet.SETGET_SNA
        elif esv == echonet.INFC:
            props = [(e, None) for e, _ in f.props]
            resp = echonet.INFC_RES
        else:
            self.stats["dropped"] += 1
            return
        try:
            n = echonet.encode_into(self._ans, f.tid, own, f.seoj, resp, props, get_props)
        except EchonetError as e:  # e.g. a huge SetC to echo: drop rather than answer wrongly
            self.stats["dropped"] += 1
            log.warn(self.tag, "no answer to %r from %s: %s" % (f, addr[0], e))
            return
        self.ep.sendto(memoryview(self._ans)[:n], addr)
        self.stats["answered"] += 1
