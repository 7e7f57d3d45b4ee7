# The request transport of one meter: exactly one request outstanding (a lock), a fresh TID for
# every attempt, a timeout per attempt and `retries` more attempts; only a reply from the meter's
# IP, the object asked and the pending TID completes a request. Everything else that arrives is
# handed on: requests to our node to the node responder (firmware/meter/node.py), notifications
# and foreign replies to the listener (discovery); a malformed datagram costs one log line (rate
# limited), never the receive task.
#
# receive() is the one receive loop over a shared endpoint (the terminal's MeterBus routes each
# datagram by source address; a lone transport routes everything to itself with run()). A
# meter's own connected socket is read by MeterBus with readinto and split by handle_joined().
import asyncio

from firmware import log
from firmware.compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms, wait_ms
from firmware.meter import echonet
from firmware.meter.drmeter import MeterTimeout
from firmware.meter.echonet import EchonetError

_TX_LEN = const(256)  # our requests are small
_LOG_BURST = const(5)  # malformed-frame log lines per window before suppressing
_LOG_WINDOW_MS = const(10000)
_MAX_TIMEOUT_MS = const(20000)  # the longest status-reflection wait in the AIF specs
_NP_INSTANCE_LIST = const(0xD5)  # node profile INF: a (re)started node announces itself

# What a transport counts (MeterClient adds the reader's counters to the same dict).
STATS = ("requests", "attempts", "replies", "timeouts", "retries", "sna", "stale", "foreign",
         "malformed", "answered", "dropped", "errors", "limited")


class _Pending:
    def __init__(self, tid, esvs, deoj):
        self.tid = tid
        self.esvs = esvs  # acceptable reply ESVs
        self.deoj = deoj  # the object asked: the reply's SEOJ
        self.esv = None
        self.props = None  # copied [(epc, bytes)]
        self.event = asyncio.Event()



async def receive(ep, route, tag="echonet"):
    """The receive loop of a shared endpoint: each datagram goes to route(source_ip).handle()
    (the socket's own bytes: no buffer here; one allocation per datagram, since the ESP32
    socket has no recvfrom_into). Never returns, never lets an exception out, never spins on an
    empty datagram or a dead socket."""
    while True:
        try:
            data, addr = await ep.recv()
            if not data:
                await sleep_ms(100)
                continue
            route(addr[0]).handle(data, len(data), addr)
        except OSError as e:  # the socket failed: say so, try again
            log.warn(tag, "receive failed: %s" % e)
            await sleep_ms(100)
        except Exception as e:  # noqa: BLE001 - a bug must not end the receive path
            log.exc(tag, "receive failed", e)
            await sleep_ms(100)


class Transport:
    def __init__(self, endpoint, meter_addr, deoj, timeout_ms=5000, retries=3, first_tid=None,
                 tag="echonet", responder=None, stats=STATS):
        """endpoint: UDP endpoint (recv/sendto); meter_addr: (ip, port); deoj: the meter object
        asked by default; timeout_ms 1..20000 per attempt; responder: the NodeResponder that
        answers requests to our node (None: they are dropped)."""
        self.ep = endpoint
        self.addr = (meter_addr[0], meter_addr[1])
        self.deoj = deoj
        self.seoj = echonet.EOJ_CONTROLLER
        self.tag = tag
        t = timeout_ms
        if not 1 <= t <= _MAX_TIMEOUT_MS:
            log.warn(tag, "timeout_ms %d outside 1..%d: clamped" % (t, _MAX_TIMEOUT_MS))
            t = min(max(t, 1), _MAX_TIMEOUT_MS)
        self.timeout_ms = t
        self.retries = retries
        # Seams for the network side: rate_limiter.allow(addr) -> bool is asked before a datagram
        # is parsed; listener.on_frame(frame, addr) gets every valid frame that is not the reply
        # to our pending request (INF, INFC, discovery answers, foreign replies).
        self.rate_limiter = None
        self.listener = None
        self.responder = responder
        self._tx = bytearray(_TX_LEN)
        self._tid = (ticks_ms() if first_tid is None else first_tid) & 0xFFFF
        self._lock = asyncio.Lock()
        self._pending = None
        self._log_t0 = ticks_ms()
        self._log_n = 0
        self.stats = {}
        for k in stats:
            self.stats[k] = 0

    def invalidate(self, why):
        """The meter's node restarted: what was learned about it may be stale (MeterClient
        re-reads it)."""

    def _next_tid(self):
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    async def _request(self, esv, props, reply_esvs, what, deoj=None):
        """Send a request and wait for its reply; returns (esv, [(epc, bytes)])."""
        if deoj is None:
            deoj = self.deoj
        async with self._lock:
            self.stats["requests"] += 1
            attempts = 1 + self.retries
            for attempt in range(attempts):
                tid = self._next_tid()
                p = _Pending(tid, reply_esvs, deoj)
                n = echonet.encode_into(self._tx, tid, self.seoj, deoj, esv, props)
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
                            await wait_ms(p.event.wait(), left)
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

    async def _get_once(self, epcs, deoj=None):
        """One Get (with retries): (esv, [(epc, bytes)]); MeterTimeout if never answered."""
        what = "Get " + ",".join("%02X" % e for e in epcs)
        esv, props = await self._request(echonet.GET, [(e, None) for e in epcs],
                                         (echonet.GET_RES, echonet.GET_SNA), what, deoj)
        if esv == echonet.GET_SNA:
            self.stats["sna"] += 1
            missing = [e for e in epcs if not any(p == e and len(d) for p, d in props)]
            log.info(self.tag, "%s: Get_SNA, unavailable %s"
                     % (what, ",".join("%02X" % e for e in missing)))
        return esv, props

    @staticmethod
    def _fill(out, props):
        """Copy EDTs of wanted EPCs into out (first non-empty wins); EPCs present in props."""
        present = []
        for e, edt in props:
            if e in out:
                present.append(e)
                if len(edt) and out[e] is None:
                    out[e] = edt
        return present

    async def get(self, epcs, deoj=None):
        """One Get of the meter object (or of `deoj` on the meter's node): {epc: bytes, or None
        if unavailable}. Get_SNA is not an error: unreadable EPCs (PDC 0 or omitted) are None."""
        _, props = await self._get_once(epcs, deoj)
        out = {}
        for e in epcs:
            out[e] = None
        self._fill(out, props)
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

    # --- receive path --------------------------------------------------------------------------

    async def run(self):
        """Receive task of a transport that owns its endpoint alone (tests, tools): receive()
        with every datagram routed here. (In the terminal the shared MeterBus routes them.)"""
        await receive(self.ep, lambda ip: self, self.tag)

    def handle_joined(self, buf, n, addr):
        """Process buf[:n] that may hold several datagrams back to back (a meter's own socket,
        read with readinto): each frame on its own (echonet.each_frame)."""
        echonet.each_frame(buf, n, self.handle, addr)

    def handle(self, buf, n, addr):
        """Process one datagram; never raises (bad input is logged and dropped)."""
        if self.rate_limiter is not None and not self.rate_limiter.allow(addr):
            self.stats["limited"] += 1
            return
        try:
            f = echonet.decode(buf, n)
        except EchonetError as e:
            self.stats["malformed"] += 1
            self._log_malformed(addr, e)
            return
        try:
            if echonet.is_request(f.esv) or f.esv == echonet.INFC:
                self._answer(f, addr)
            if not echonet.is_request(f.esv) and not self._on_reply(f, addr):
                self._on_other(f, addr)
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
        """True if f completed the pending request (or was a late reply to an earlier one)."""
        p = self._pending
        if (p is None or addr[0] != self.addr[0] or f.seoj != p.deoj
                or f.esv not in p.esvs):
            return False
        if f.tid != p.tid:
            self.stats["stale"] += 1
            log.info(self.tag, "ignored late reply TID 0x%04X (waiting for 0x%04X)"
                     % (f.tid, p.tid))
            return True
        # Copy now: the receive buffer is reused for the next datagram.
        p.props = [(e, bytes(d)) for e, d in f.props]
        p.esv = f.esv
        self._pending = None  # duplicates of this reply are now "foreign"
        p.event.set()
        return True

    def _on_other(self, f, addr):
        """Notifications and replies that are not ours to complete."""
        if (f.esv in (echonet.INF, echonet.INFC) and addr[0] == self.addr[0]
                and f.seoj >> 8 == echonet.EOJ_NODE_PROFILE >> 8
                and f.edt(_NP_INSTANCE_LIST) is not None):
            # The meter's node (re)started: its unit, identity or property map may be new.
            self.invalidate("instance list notification (INF 0xD5) from %s" % addr[0])
        elif f.esv not in (echonet.INF, echonet.INFC):
            self.stats["foreign"] += 1
            log.debug(self.tag, "ignored %r from %s" % (f, addr[0]))
        if self.listener is not None:
            self.listener.on_frame(f, addr)

    def _answer(self, f, addr):
        if self.responder is None:
            self.stats["dropped"] += 1
            return
        r = self.responder.answer(f, addr, self.ep)
        if r == "answered":
            self.stats["answered"] += 1
            return
        self.stats["dropped"] += 1
        if r != "dropped":
            log.warn(self.tag, "no answer to %r from %s: %s" % (f, addr[0], r))
