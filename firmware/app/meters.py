# The meter side of the terminal for 1..N meters: one ECHONET endpoint (port 3610) shared by every
# meter's client, a dispatcher that hands each datagram to the client of its source address, the
# discovery listener and the per-source rate limiter; per meter a capture loop and a backfill loop.
import asyncio

from firmware import events, log
from firmware.app import heapmon
from firmware.app.backfill import BackfillPlanner
from firmware.app.config import same_type
from firmware.app.metering import SlotPoller
from firmware.app.views import StoreSink
from firmware.compat import const, sleep_ms, wait_ms
from firmware.meter.drmeter import MeterTimeout

_PEER_CHECK_MS = const(60000)  # a meter's own socket: look at the addresses this often
_PEER_RETRY_MS = const(600000)  # the stack refused one: try again after this long
_AMBIGUOUS_REPEAT_MS = const(600000)  # the refusal to meter is said again this often
_LIST_TRIES = const(3)  # unreadable instance lists before reading the configured object
_DRAIN_READS = const(4)  # reads of a meter's socket per wake-up
_PEER_RX = const(1280)  # one read can hold several replies back to back (MicroPython readinto)


def meter_configs(section):
    """One dict per meter: the "meter" section, overridden by each entry of its "list"."""
    entries = section["list"] or [{}]
    out = []
    for e in entries:
        c = dict(section)
        c.pop("list", None)
        chosen = False
        if not isinstance(e, dict):
            log.error("config", "meter.list entries must be objects; %r ignored" % (e,))
            e = {}
        for key, val in e.items():  # checked like the section itself: a typo never stops metering
            if key not in c:
                log.warn("config", "unknown key meter.list[%d].%s ignored" % (len(out), key))
            elif not same_type(val, c[key]):
                log.error("config", "meter.list[%d].%s = %r is not a %s; keeping %r"
                          % (len(out), key, val, type(c[key]).__name__, c[key]))
            else:
                c[key] = val
                if key == "eoj":
                    chosen = True
        # An eoj chosen per meter (a list entry, or an instance other than 1) says which of
        # several meter objects on one node is meant, like device_type / metered_id do.
        c["eoj_chosen"] = chosen or c["eoj"] & 0xFF != 1
        out.append(c)
    return out


class MeterChannel:
    """One meter: its client, 30-minute capture loop and backfill from its history."""

    def __init__(self, index, client, clock, store, cfg, backfill_lock=None,
                 event=events.ignore):
        """backfill_lock: an asyncio.Lock shared by every meter's channel, so that one backfill
        pass runs at a time (its day of history, store reads and meter frames are what a pass
        holds; N at once would cost N times the heap for no gain in time).
        event: fn(code, detail) of the event log (firmware.events), e.g. UNIT_CHANGE."""
        self.index = index
        self.backfill_lock = backfill_lock or asyncio.Lock()
        self.client = client
        self.cfg = cfg
        self.poller = SlotPoller(clock, client, StoreSink(store), index, cfg,
                                 tag="meter%d" % index, event=event)
        self.planner = BackfillPlanner(clock, client, store, index, cfg,
                                       tag="backfill%d" % index)
        self.clock = clock
        self._full = True  # a full backfill pass is due (boot)
        self._due = asyncio.Event()
        self.poller.on_event = self.on_event
        self.ambiguous = None  # "0x028E01,0x028E02": several meter objects, none chosen
        self.ambiguous_repeat_ms = _AMBIGUOUS_REPEAT_MS

    def on_event(self, name):
        """Capture-loop events, plus "recovered" from the radio / discovery side."""
        if name == "stored" and self.index == 0:
            heapmon.slot_done()
        if name in ("recovered", "gave_up", "reboot"):
            self._full = True
        if name in ("recovered", "reboot"):
            self.planner.forget_meter()  # ask its history depth again (it may have changed)
        self._due.set()

    def has_address(self):
        return bool(self.client.addr[0])

    async def select_instance(self):
        """Which meter object on the meter's node bills (docs/echonet.md, several meter objects).
        With 0xD0 device type / 0xD6 metered-device ID configured (hex text): the one that
        matches. Otherwise the node's instance list decides: one object of the class is read
        (whatever its instance number, unless eoj was chosen); several (e.g. a V2H PCS with two
        0x028E) and nothing chosen: metering is refused -- slots stay missing rather than bill
        the wrong device -- with an ERROR every 10 minutes naming the candidates and the keys to
        set, and `ambiguous` in the status. Returns once an object is selected."""
        dt = self.cfg["device_type"]
        mid = self.cfg["metered_id"]
        tag = "meter%d" % self.index
        delay = 1000
        failed = 0
        while True:
            try:
                if dt or mid:
                    await self.client.find_instance(bytes.fromhex(dt) if dt else None,
                                                    bytes.fromhex(mid) if mid else None)
                    return
                # The objects' own 0xD0/0xD6 are asked only to name several candidates: a meter
                # that drops Gets of an EPC it lacks must not stall a single-object node here.
                cands = await self.client.candidates(ids=False)
            except (MeterTimeout, ValueError, OSError) as e:  # no answer, no unique match
                log.warn(tag, "meter object selection: %s(%s)" % (type(e).__name__, e))
                failed += 1
                if not (dt or mid) and failed >= _LIST_TRIES:
                    # Nothing chosen and the node's list cannot be read (no 0xD6, a malformed
                    # one, or no answer): read the configured object as before the check
                    # existed, rather than never metering an ordinary meter.
                    log.warn(tag, "node instance list unreadable after %d tries: reading the "
                             "configured 0x%06X (a second meter object would go unnoticed)"
                             % (failed, self.client.deoj))
                    self.ambiguous = None
                    return
                await sleep_ms(delay)
                delay = min(delay * 2, 60000)
                continue
            if len(cands) > 1 and not self.cfg["eoj_chosen"]:
                try:  # their 0xD0/0xD6 make the ERROR below say what to configure
                    cands = await self.client.candidates()
                except (MeterTimeout, ValueError, OSError) as e:
                    log.warn(tag, "meter objects' 0xD0/0xD6: %s(%s)" % (type(e).__name__, e))
            if len(cands) == 1 and not self.cfg["eoj_chosen"]:
                self.client.select(cands[0][0])
            if len(cands) < 2 or self.cfg["eoj_chosen"]:
                if not cands:  # the list names no object of our class: read the one configured
                    log.warn(tag, "meter node lists no object of class 0x%04X: reading 0x%06X"
                             % (self.client.deoj >> 8, self.client.deoj))
                self.ambiguous = None
                return
            self.ambiguous = ",".join(["0x%06X" % c[0] for c in cands])
            log.error(tag, "%d meter objects, none chosen: NOT METERING. Set meter.device_type "
                      "(0xD0) or meter.metered_id (0xD6) to one of: %s" % (len(cands), "; ".join(
                          ['0x%06X device_type="%s" metered_id="%s"' % (
                              c[0], c[1].hex() if c[1] else "", c[2].hex() if c[2] else "")
                           for c in cands])))
            await sleep_ms(self.ambiguous_repeat_ms)

    async def capture(self):
        while not self.has_address():  # the address comes from discovery
            await sleep_ms(500)
        await self.select_instance()
        await self.poller.run()

    async def backfill(self):
        recent = self.cfg["backfill_recent_days"]
        while True:
            if self.poller.unit_code is None or not self.clock.is_set():
                await sleep_ms(500)
                continue
            self.planner.unit_code = self.poller.unit_code
            full = self._full
            self._full = False
            self._due.clear()
            before = self.planner.stats["errors"]
            async with self.backfill_lock:
                await self.planner.run_once(None if full else recent)
            if self.planner.stats["errors"] != before:
                self._full = True  # try the whole window again next time
            await self._due.wait()


class MeterBus:
    """The shared ECHONET endpoint: receive task, dispatch by source address, discovery."""

    def __init__(self, endpoint, channels, discovery=None):
        self.ep = endpoint
        self.channels = channels
        self.discovery = discovery
        self.peer_check_ms = _PEER_CHECK_MS
        self._rx = bytearray(_PEER_RX)  # shared by every meter's own socket (allocated at boot)
        self.peer_retry_ms = _PEER_RETRY_MS
        if discovery is not None:
            discovery.on_event = self._on_discovery

    def _drain(self, ch, peer):
        """Handle what the meter's socket holds, with no await in between (the buffer is shared
        by every meter's socket). MicroPython's readinto on a socket reads on until the buffer is
        full or nothing is left, so one read can hold several datagrams back to back: ECHONET
        frames delimit themselves, so they are split here (a last frame cut by a full buffer is
        dropped as malformed). False if the socket reads 0 bytes (the ESP32 port then takes the
        peer as closed and reads 0 for ever): the caller reopens it."""
        for _ in range(_DRAIN_READS):  # bounded: a flood cannot hold the event loop
            n = peer.read_now()
            if n is None:
                return True
            if n == 0:
                return False
            ch.client.handle_joined(peer.buf, n, peer.peer)
        return True

    def _client_for(self, ip):
        for ch in self.channels:
            if ch.client.addr[0] == ip:
                return ch.client
        return self.channels[0].client  # it answers requests to our node and drops the rest

    def _on_discovery(self, kind, ip):
        from firmware.meter import discovery as d

        if kind == d.EV_METER:
            ch = self.channels[0]
            old = ch.client.addr[0]
            if old != ip:
                log.info("meter0", "meter address %s (discovery)" % ip)
                lim = ch.client.rate_limiter
                if lim is not None:  # the meter's replies never share the strangers' budget
                    if old:
                        lim.unpin(old)
                    lim.pin(ip)
                ch.client.addr = (ip, ch.client.addr[1])
                ch.client.invalidate("meter address %s" % ip)
        for ch in self.channels:
            if ch.client.addr[0] != ip:
                continue
            if kind == d.EV_REBOOT:
                ch.client.invalidate("meter node restarted")
                ch.on_event("reboot")
            elif kind == d.EV_BACK:
                ch.on_event("recovered")

    async def run(self):
        """Receive tasks: the shared endpoint, and one connected socket per meter. Neither
        loop lets an exception out (a gather whose branch fails leaves the others running)."""
        await asyncio.gather(self._receive_shared(),
                             *[self._receive_from(ch) for ch in self.channels])

    async def _receive_shared(self):
        """Everything on the port that no meter's own socket takes: discovery, multicast, other
        nodes; routed by source address (transport.receive)."""
        from firmware.meter.transport import receive

        await receive(self.ep, self._client_for)

    def _peer_bind_ip(self):
        """Our unicast address for a meter's own socket. Bound to it (not 0.0.0.0) the socket
        gets no multicast: lwIP (SO_REUSE_RXTOALL) hands a multicast datagram to every socket
        bound to the port's wildcard address, connected or not."""
        ip = self.ep.local[0]
        if ip == "0.0.0.0" and self.discovery is not None:
            ip = self.discovery.own_ip or "0.0.0.0"
        return ip

    async def _receive_from(self, ch):
        """The meter's replies, read into one preallocated buffer (hal.udp.PeerEndpoint): no
        allocation per datagram in steady state. Reopened when the meter's or our address
        changes; if the stack refuses the socket, the shared endpoint carries the meter too."""
        tag = "meter%d" % ch.index
        peer = None
        refused = False
        while True:
            addr = ch.client.addr
            bind_ip = self._peer_bind_ip()
            if not addr[0] or bind_ip == "0.0.0.0" or refused:
                await sleep_ms(self.peer_retry_ms if refused else 500)
                refused = False
                continue
            if peer is not None and (peer.peer != addr or peer.local[0] != bind_ip):
                peer.close()
                peer = None
            if peer is None:
                try:
                    peer = self.ep.peer_endpoint(addr, self._rx, bind_ip)
                except (OSError, AttributeError) as e:  # refused, or an endpoint without it
                    log.warn(tag, "no socket of its own for %s (%s): shared endpoint used"
                             % (addr[0], e))
                    refused = True
                    continue
                log.info(tag, "own socket for %s:%d (no allocation per reply)" % addr)
            try:
                await wait_ms(peer.readable(), self.peer_check_ms)
                if not self._drain(ch, peer):
                    log.warn(tag, "own socket for %s reads nothing: reopened" % addr[0])
                    peer.close()
                    peer = None
                    await sleep_ms(1000)
            except asyncio.TimeoutError:
                continue  # look at the addresses again
            except Exception as e:  # noqa: BLE001 - the receive path must survive anything
                log.exc(tag, "receive failed", e)
                peer.close()
                peer = None
                await sleep_ms(100)
