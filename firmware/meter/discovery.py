# ECHONET Lite discovery for the terminal (see docs/discovery.md).
#
# Pure part: frame builders (search, INF_REQ, start-up announcement, unicast check) and the
# instance list parser (which meter object bills is chosen by the client's find_instance() on
# 0xD0/0xD6, see docs/echonet.md). Driver part: Discovery keeps
# a small table of nodes fed by handle(frame, addr) -- the client's receive path hands over every
# frame that is not the reply to its own request -- and run() sends the announcement, periodic
# multicast searches, periodic re-joins of the group and a periodic unicast Get 0xD6 to the meter
# address, because multicast can be dead (ESP32 Ethernet, IGMP pruning) while unicast works.
# The meter address is the discovered node if exactly one node offers the meter class, else the
# configured static address. Events (meter chosen, reboot, lost, back, ambiguous) are appended to
# `events` (bounded) and passed to `on_event` if set.
#
# Over the ~400 lines of a module: the frame builders are used only by the driver below; apart
# they would cost a module's import heap for no reuse.
import asyncio

from firmware import log
from firmware.compat import const, ticks_add, ticks_diff, ticks_ms, wait_ms
from firmware.meter import echonet
from firmware.meter.echonet import EchonetError

PORT = const(3610)
GROUP = "224.0.23.0"
EPC_INF_LIST = const(0xD5)  # node profile: instance list notification
EPC_GET_LIST = const(0xD6)  # node profile: self-node instance list S
METER_CLASS = const(0x028E)

# Events
EV_METER = "meter"  # (EV_METER, ip): the meter address is now ip (first choice or a change)
EV_REBOOT = "reboot"  # (EV_REBOOT, ip): the meter's node announced itself again: re-read it
EV_LOST = "lost"  # (EV_LOST, ip): unicast checks to the meter went unanswered
EV_BACK = "back"  # (EV_BACK, ip): the meter answers unicast checks again
EV_AMBIGUOUS = "ambiguous"  # (EV_AMBIGUOUS, "ip,ip"): several nodes offer the meter class

_TX_LEN = const(32)
_MAX_EVENTS = const(16)
_LOG_BURST = const(5)
_LOG_WINDOW_MS = const(60000)
_SOLICITED_MS = const(10000)  # INF 0xD5 answers to our INF_REQ arrive within this window


class DiscoveryError(ValueError):
    pass


# --- frames -----------------------------------------------------------------------------------

def build_search(buf, tid):
    """Get 0xD6 from the controller to every node profile (multicast search, unicast check):
    10 81 TT TT 05 FF 01 0E F0 01 62 01 D6 00."""
    return echonet.encode_get(buf, tid, echonet.EOJ_CONTROLLER, echonet.EOJ_NODE_PROFILE,
                              (EPC_GET_LIST,))


def build_inf_req(buf, tid):
    """INF_REQ 0xD5: nodes answer with INF 0xD5 (10 81 TT TT 05 FF 01 0E F0 01 63 01 D5 00)."""
    return echonet.encode_get(buf, tid, echonet.EOJ_CONTROLLER, echonet.EOJ_NODE_PROFILE,
                              (EPC_INF_LIST,), echonet.INF_REQ)


def encode_instance_list(eojs):
    if not 1 <= len(eojs) <= echonet.MAX_INSTANCES:
        raise DiscoveryError("instance list of %d objects (1..84)" % len(eojs))
    out = bytearray(1 + 3 * len(eojs))
    out[0] = len(eojs)
    i = 1
    for e in eojs:
        out[i] = (e >> 16) & 0xFF
        out[i + 1] = (e >> 8) & 0xFF
        out[i + 2] = e & 0xFF
        i += 3
    return bytes(out)


def build_announce(buf, tid, eojs=(echonet.EOJ_CONTROLLER,)):
    """Start-up INF 0xD5 from our node profile to the group:
    10 81 TT TT 0E F0 01 0E F0 01 73 01 D5 04 01 05 FF 01 (one controller instance)."""
    return echonet.encode_into(buf, tid, echonet.EOJ_NODE_PROFILE, echonet.EOJ_NODE_PROFILE,
                               echonet.INF, [(EPC_INF_LIST, encode_instance_list(eojs))])


def instance_list_of(frame):
    """(epc, [EOJ]) if `frame` is a node profile's instance list (Get_Res/Get_SNA 0xD6,
    INF/INFC 0xD5), (epc, None) if it carries the EPC without data, None if it is not one."""
    if frame.seoj >> 8 != echonet.EOJ_NODE_PROFILE >> 8:
        return None
    if frame.esv in (echonet.GET_RES, echonet.GET_SNA):
        epc = EPC_GET_LIST
    elif frame.esv in (echonet.INF, echonet.INFC):
        epc = EPC_INF_LIST
    else:
        return None
    edt = frame.edt(epc)
    if edt is None:
        return None
    if len(edt) == 0:
        return epc, None
    return epc, echonet.parse_instance_list(edt)


# --- driver -----------------------------------------------------------------------------------

class Node:
    """What discovery knows about one ECHONET Lite node (one IP address)."""

    def __init__(self, ip, eojs, now):
        self.ip = ip
        self.eojs = eojs
        self.seen = now  # ticks_ms of the last instance list
        self.announces = 0  # unsolicited INF 0xD5 seen

    def meters(self, cls):
        return [e for e in self.eojs if e >> 8 == cls]

    def __repr__(self):
        return "Node(%s %s)" % (self.ip, " ".join("%06X" % e for e in self.eojs))


class Discovery:
    def __init__(self, endpoint, config=None, tag="discovery", clock=ticks_ms):
        """endpoint: the ECHONET UDP endpoint (the client's; bound to 0.0.0.0:3610 to hear
        multicast). config: the "discovery" section, keys in docs/discovery.md."""
        cfg = config or {}
        self._clock = clock
        self.ep = endpoint
        self.tag = tag
        self.own_ip = cfg.get("own_ip")  # our interface address: frames from it are ignored
        self.iface_ip = cfg.get("iface_ip", self.own_ip or "0.0.0.0")
        self.meter_class = cfg.get("meter_class", METER_CLASS)
        s = cfg.get("static_addr")
        self.static = (s, PORT) if s else None
        self.port = cfg.get("port", PORT)
        self.multicast = cfg.get("multicast", True)
        self.announce_eojs = tuple(cfg.get("instances", (echonet.EOJ_CONTROLLER,)))
        encode_instance_list(self.announce_eojs)  # validate now, not at the first announce
        self.search_min_ms = cfg.get("search_min_ms", 5000)  # while no meter is known
        self.search_ms = cfg.get("search_ms", 600000)  # once one is
        self.check_ms = cfg.get("check_ms", 60000)
        self.rejoin_ms = cfg.get("rejoin_ms", 300000)
        self.miss_limit = max(1, cfg.get("miss_limit", 3))
        self.reboot_holdoff_ms = cfg.get("reboot_holdoff_ms", 10000)
        self.max_nodes = max(1, cfg.get("max_nodes", 8))
        # A node silent for this long leaves the table (a meter that moved to another address
        # must not keep the choice ambiguous for ever).
        self.node_ttl_ms = cfg.get("node_ttl_ms", 2 * self.search_ms + 2 * self.check_ms)
        self.nodes = {}  # ip -> Node
        self.events = []
        self.on_event = None  # fn(kind, ip)
        self._chosen = None  # ip picked by discovery or set_meter()
        self._pinned = False  # set_meter(): automatic choice no longer replaces it
        self._tx = bytearray(_TX_LEN)
        self._tid = (self._clock() * 7 + 0x3000) & 0xFFFF
        self._infreq_tid = None
        self._infreq_t = 0
        self._check_tid = None
        self._check_answered = True
        self._misses = 0
        self._lost = False
        self._reboot_t = None
        self._search_gap = self.search_min_ms
        now = self._clock()
        self._next_search = now
        self._next_check = ticks_add(now, self.check_ms)
        self._next_rejoin = ticks_add(now, self.rejoin_ms)
        self._announce_due = True
        self._wake = asyncio.Event()
        self._log_t0 = now
        self._log_n = 0
        self.stats = {"searches": 0, "checks": 0, "announces": 0, "lists": 0, "bad": 0,
                      "send_errors": 0, "joins": 0, "join_errors": 0, "misses": 0}

    # --- public queries ---------------------------------------------------------------------

    def meter_addr(self):
        """(ip, 3610) of the meter: the discovered/chosen node, else the static address, else
        None."""
        if self._chosen is not None:
            return (self._chosen, self.port)
        return self.static

    def set_meter(self, ip):
        """Pin the meter to ip (the integrator's choice); None unpins."""
        self._pinned = ip is not None
        self._choose(ip)

    # --- receive side -------------------------------------------------------------------------

    def on_frame(self, frame, addr):
        """Listener seam of MeterClient: same as handle()."""
        self.handle(frame, addr)

    def handle(self, frame, addr):
        """Consume a decoded frame from addr (ip, port); True if it was a discovery frame
        (instance list). Never raises on bad input: it is logged and dropped."""
        ip = addr[0]
        if ip == self.own_ip:
            return False
        try:
            got = instance_list_of(frame)
        except EchonetError as e:
            self.stats["bad"] += 1
            self._log_bad(ip, e)
            return True
        if got is None:
            return False
        epc, eojs = got
        now = self._clock()
        is_meter = ip == self._meter_ip()
        if is_meter and frame.tid == self._check_tid and epc == EPC_GET_LIST:
            self._check_answered = True
            self._misses = 0
            if self._lost:
                self._lost = False
                self._event(EV_BACK, ip)
        if eojs is None:
            return True
        self.stats["lists"] += 1
        node = self.nodes.get(ip)
        if node is None:
            node = self._add_node(ip, eojs, now)
        else:
            node.eojs = eojs
            node.seen = now
        if epc == EPC_INF_LIST and not self._solicited(frame.tid, now):
            node.announces += 1
            if is_meter:
                self._on_meter_announce(ip, now)
        self._update_choice()
        return True

    def _solicited(self, tid, now):
        return (self._infreq_tid is not None and tid == self._infreq_tid
                and ticks_diff(now, self._infreq_t) < _SOLICITED_MS)

    def _on_meter_announce(self, ip, now):
        # An INF 0xD5 storm after one reboot is one event.
        if self._reboot_t is not None and 0 <= ticks_diff(now, self._reboot_t) < \
                self.reboot_holdoff_ms:
            return
        self._reboot_t = now
        log.info(self.tag, "meter node %s announced itself (restart): re-read it" % ip)
        self._event(EV_REBOOT, ip)

    def _add_node(self, ip, eojs, now):
        if len(self.nodes) >= self.max_nodes:
            keep = self._meter_ip()
            old = None
            for k, n in self.nodes.items():
                if k != keep and (old is None or ticks_diff(n.seen, self.nodes[old].seen) < 0):
                    old = k
            if old is not None:
                del self.nodes[old]
        node = Node(ip, eojs, now)
        self.nodes[ip] = node
        log.info(self.tag, "node %s: %s" % (ip, " ".join("%06X" % e for e in eojs)))
        return node

    def _meter_ip(self):
        a = self.meter_addr()
        return a[0] if a is not None else None

    def _update_choice(self):
        if self._pinned:
            return
        ips = [ip for ip in sorted(self.nodes) if self.nodes[ip].meters(self.meter_class)]
        static = self.static[0] if self.static else None
        if static in ips:
            self._choose(static)
        elif len(ips) == 1:
            # A configured address is left only when it stopped answering (meter moved).
            if static is None or self._lost or self._chosen is not None:
                self._choose(ips[0])
        elif len(ips) > 1 and self._chosen not in ips:
            # Which of several meter nodes bills is not guessed here: a static address decides.
            self._event(EV_AMBIGUOUS, ",".join(ips))
            self._choose(None)

    def _choose(self, ip):
        if ip == self._chosen:
            return
        before = self.meter_addr()
        self._chosen = ip
        after = self.meter_addr()
        if after != before:
            self._misses = 0
            self._lost = False
            self._check_answered = True
            self._check_tid = None
            if after is not None:
                log.info(self.tag, "meter address %s" % after[0])
                self._event(EV_METER, after[0])

    def _event(self, kind, ip):
        if len(self.events) >= _MAX_EVENTS:
            del self.events[0]
        self.events.append((kind, ip))
        if self.on_event is not None:
            try:
                self.on_event(kind, ip)
            except Exception as e:  # a consumer's bug must not stop discovery
                log.exc(self.tag, "event handler for %s %s" % (kind, ip), e)

    def _log_bad(self, ip, e):
        now = self._clock()
        if ticks_diff(now, self._log_t0) > _LOG_WINDOW_MS:
            if self._log_n > _LOG_BURST:
                log.warn(self.tag, "%d more bad instance lists suppressed"
                         % (self._log_n - _LOG_BURST))
            self._log_t0 = now
            self._log_n = 0
        self._log_n += 1
        if self._log_n <= _LOG_BURST:
            log.warn(self.tag, "bad instance list from %s: %s" % (ip, e))

    # --- send side ------------------------------------------------------------------------------

    def _next_tid(self):
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def _send(self, n, addr, what):
        try:
            self.ep.sendto(memoryview(self._tx)[:n], addr)
            return True
        except OSError as e:  # LAN down, no route to the group: the next period tries again
            self.stats["send_errors"] += 1
            log.warn(self.tag, "%s to %s failed: %s" % (what, addr[0], e))
            return False

    def join(self):
        """(Re)join the group on the endpoint, where it supports multicast."""
        if not self.multicast:
            return False
        j = getattr(self.ep, "join_multicast", None)
        if j is None:
            return False
        try:
            if getattr(self.ep, "groups", None) and GROUP in self.ep.groups:
                self.ep.rejoin(self.iface_ip)
            else:
                j(GROUP, self.iface_ip)
            self.stats["joins"] += 1
            return True
        except OSError as e:
            self.stats["join_errors"] += 1
            log.warn(self.tag, "joining %s on %s failed: %s" % (GROUP, self.iface_ip, e))
            return False

    def announce(self):
        """Start-up INF 0xD5 to the group."""
        self.stats["announces"] += 1
        n = build_announce(self._tx, self._next_tid(), self.announce_eojs)
        return self._send(n, (GROUP, self.port), "announcement")

    def search(self, inf_req=False):
        """Multicast Get 0xD6 (and INF_REQ 0xD5 if asked)."""
        self.stats["searches"] += 1
        ok = self._send(build_search(self._tx, self._next_tid()), (GROUP, self.port), "search")
        if inf_req:
            self._infreq_tid = self._next_tid()
            self._infreq_t = self._clock()
            ok = self._send(build_inf_req(self._tx, self._infreq_tid), (GROUP, self.port),
                            "INF_REQ") and ok
        return ok

    def check(self):
        """Unicast Get 0xD6 to the meter address; the previous one counts as missed if it was
        not answered."""
        addr = self.meter_addr()
        if addr is None:
            return False
        if not self._check_answered:
            self._misses += 1
            self.stats["misses"] += 1
            if self._misses >= self.miss_limit and not self._lost:
                self._lost = True
                log.warn(self.tag, "meter %s: %d unicast checks unanswered"
                         % (addr[0], self._misses))
                self._event(EV_LOST, addr[0])
                self._update_choice()
                self._search_gap = self.search_min_ms  # look for it where it may have moved
                self._next_search = self._clock()
        self.stats["checks"] += 1
        self._check_tid = self._next_tid()
        self._check_answered = False
        return self._send(build_search(self._tx, self._check_tid), addr, "unicast check")

    def link_up(self):
        """LAN supervisor hook after every (re)connect: re-join, announce, search now."""
        self.join()
        self._next_rejoin = ticks_add(self._clock(), self.rejoin_ms)
        self._announce_due = True
        self._search_gap = self.search_min_ms
        self._next_search = self._clock()
        self._wake.set()

    def _due(self, t, now):
        return ticks_diff(now, t) >= 0

    def step(self, now=None):
        """Do whatever is due now; returns ms until the next thing is due."""
        if now is None:
            now = self._clock()
        if self._announce_due:
            self._announce_due = False
            if self.multicast:
                self.announce()
                self.search(inf_req=True)
                self._schedule_search(now)
        if self.multicast and self._due(self._next_search, now):
            self.search()
            self._schedule_search(now)
        if self.multicast and self._due(self._next_rejoin, now):
            self.join()
            self._next_rejoin = ticks_add(now, self.rejoin_ms)
        if self._due(self._next_check, now):
            self.check()
            self._next_check = ticks_add(now, self.check_ms)
        self.prune(now)
        wait = ticks_diff(self._next_check, now)
        if self.multicast:
            wait = min(wait, ticks_diff(self._next_search, now),
                       ticks_diff(self._next_rejoin, now))
        return max(wait, 10)

    def prune(self, now=None):
        """Forget nodes not heard from for node_ttl_ms; the choice follows the live ones."""
        if now is None:
            now = self._clock()
        gone = [ip for ip, n in self.nodes.items() if ticks_diff(now, n.seen) > self.node_ttl_ms]
        for ip in gone:
            log.info(self.tag, "node %s silent for %d ms: forgotten" % (ip, self.node_ttl_ms))
            del self.nodes[ip]
        if gone:
            self._update_choice()
        return len(gone)

    def _schedule_search(self, now):
        if self._chosen is not None and not self._lost:
            gap = self.search_ms
        else:
            gap = self._search_gap
            self._search_gap = min(self._search_gap * 2, self.search_ms)
        self._next_search = ticks_add(now, gap)

    async def run(self):
        """Join, announce, then periodic searches / re-joins / unicast checks for ever."""
        self.join()
        if self.static is not None:
            log.info(self.tag, "static meter address %s until discovery finds one"
                     % self.static[0])
        while True:
            wait = self.step()
            self._wake.clear()
            try:
                await wait_ms(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
