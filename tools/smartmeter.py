"""The smart-meter twin: the PAN coordinator and time authority of a simulated deployment with up
to four terminals (guideline ⑬), in the host process (asyncio). docs/twin.md describes it.

- Credentials: a table MAC -> PANA password, one entry per terminal. Each terminal's J11 module
  emulator is configured from it (module_kw(): the coordinator's MAC, channel, PAN ID and the
  password it accepts), so a terminal configured with another password fails PANA (result 2).
  beacons() and authenticate() answer the same questions for a module emulator that asks its
  coordinator (an optional hook; nothing here depends on it).
- Relay: one air socket (the smart meter as every module sees it) and one backhaul UDP endpoint per
  terminal; a datagram from terminal k's module goes out of backhaul endpoint k to the head-end
  that last spoke there, and a datagram into backhaul endpoint k goes to terminal k's module. So
  any DLMS client reads terminal k by talking to endpoint k, unchanged.
- Air: AirModel turns a UDP payload into 802.15.4g frames (SHR, PHR, MAC header, security, FCS,
  6LoWPAN/UDP compressed headers, RFC 4944 fragments of at most MAX_PSDU bytes, an ACK each) at
  100 kbit/s; all terminals share one medium, so a datagram starts when the medium is free and is
  delivered when its last frame's ACK has gone (real, monotonic time: the radio is not
  accelerated, only the calendar). Every transmission is recorded (schedule) and summed per
  terminal (airtime): the terminal's own transmit time is what ARIB T108 limits (360 s/h).
- Time: `clock` (the deployment's SimClock) is the calendar the head-end sets terminals from.
- The smart meter's own DLMS server, as far as commissioning needs it (firmware/cosem/probe.py,
  docs/commissioning.md): a datagram from a terminal's module addressed to the smart meter itself
  (wrapper source wPort = a probe client SAP, 16 public; destination = server_sap, 1), i.e. not
  a reply to a head-end, is answered by the twin after its modelled air time: AARQ (LN, no
  security) -> AARE, GET clock 0.0.1.0.0.255 attribute 2 -> its calendar as a COSEM date-time,
  RLRQ -> RLRE; anything else from that client -> an EXCEPTION-Response. `association_reject`
  (result, diagnostic) makes it refuse the association; `answer_probe = False` makes it silent.
"""

import asyncio
import collections

from firmware.cosem import acse, axdr, wrapper, xdlms
from firmware.radio import j11

MAX_TERMINALS = 4  # guideline ⑬: at most about four terminals per smart meter
DEFAULT_MAC = "001D129012345678"
DEFAULT_PAN_ID = 0x1234
DEFAULT_CHANNEL = 4
DEFAULT_RSSI = -52
MAX_ROUTES = 16  # client SAPs remembered per terminal
UP = "up"  # terminal -> smart meter
DOWN = "down"  # smart meter -> terminal
# PANA results (J11 0x6028): 1 done, 2 failed (credentials), 3 no response
PANA_OK = 1
PANA_FAILED = 2
PANA_NO_RESPONSE = 3
# The smart meter's DLMS server as the commissioning probe reaches it (SPEC: its SAPs are not
# public; these are the commissioning defaults, firmware/app/commission.py)
PROBE_CLIENT_SAPS = (16,)  # public client
PROBE_SERVER_SAP = 1
PROBE_CONFORMANCE = 0x000010  # get only: all the probe needs
PROBE_MAX_PDU = 1200
# GET-Request-Normal of the clock's attribute 2 after the invoke-id byte: class 8, 0.0.1.0.0.255,
# attribute 2, no access selection
_GET_CLOCK_TAIL = bytes((0x00, 0x08, 0, 0, 1, 0, 0, 255, 0x02, 0x00))
_AARE_OK = acse.build_aare(0, 0, user_info=acse.initiate_response(PROBE_CONFORMANCE,
                                                                  PROBE_MAX_PDU))
_RLRE = acse.build_rlre()


class AirModel:
    """Air time of UDP datagrams on the 920 MHz link: IEEE 802.15.4g SUN FSK at 100 kbit/s.
    Every number is a class attribute (docs/twin.md gives the reasons); sizes in bytes."""

    RATE_BPS = 100000
    SHR = 10  # preamble 8 + SFD 2
    PHR = 2  # SUN FSK PHY header
    MAC_HEADER = 21  # frame control 2, sequence 1, PAN ID 2, destination 8, source 8 (64-bit)
    SECURITY = 6 + 4  # auxiliary security header (control 1, frame counter 4, key id 1), MIC-32
    FCS = 4  # 32-bit CRC (SUN PHY)
    MAX_PSDU = 255
    IPHC_UDP = 2 + 7  # IPHC with link-local addresses from the MAC; NHC UDP: 1 + ports 4 + sum 2
    UNCOMPRESSED_HEADERS = 40 + 8  # IPv6 + UDP: what fragment offsets count
    FRAG1 = 4
    FRAGN = 5
    ACK_PSDU = 2 + 1 + 4  # Imm-Ack: frame control, sequence, FCS
    CCA_S = 0.000128  # carrier sense before each frame (ARIB T108 short carrier sense)
    TURNAROUND_S = 0.001  # aTurnaroundTime (SUN PHY) before the ACK

    def __init__(self, rate_bps=None, max_psdu=None):
        self.rate_bps = rate_bps or self.RATE_BPS
        self.max_psdu = max_psdu or self.MAX_PSDU

    def psdus(self, payload_len):
        """The PSDU sizes of the frames carrying one UDP payload of payload_len bytes."""
        overhead = self.MAC_HEADER + self.SECURITY + self.FCS
        room = self.max_psdu - overhead  # MAC payload per frame
        if self.IPHC_UDP + payload_len <= room:
            return [overhead + self.IPHC_UDP + payload_len]
        # RFC 4944: every fragment but the last carries a multiple of 8 bytes of the
        # uncompressed datagram; the first also carries the compressed IPv6/UDP headers
        first = (room - self.FRAG1 - self.IPHC_UDP + self.UNCOMPRESSED_HEADERS) // 8 * 8 \
            - self.UNCOMPRESSED_HEADERS
        nth = (room - self.FRAGN) // 8 * 8
        if first <= 0 or nth <= 0:
            raise ValueError("MAX_PSDU %d too small to fragment" % self.max_psdu)
        out = [overhead + self.FRAG1 + self.IPHC_UDP + first]
        left = payload_len - first
        while left > 0:
            n = min(nth, left)
            out.append(overhead + self.FRAGN + n)
            left -= n
        return out

    def frame_s(self, psdu):
        """Transmit time of one PPDU carrying psdu bytes."""
        return (self.SHR + self.PHR + psdu) * 8 / self.rate_bps

    def datagram(self, payload_len):
        """(frames, sender_tx_s, receiver_tx_s, medium_s) of one datagram: the sender's data
        frames, the receiver's ACKs, and the whole occupation of the medium (carrier sense,
        frames, turnarounds, ACKs)."""
        ps = self.psdus(payload_len)
        tx = sum(self.frame_s(p) for p in ps)
        ack = len(ps) * self.frame_s(self.ACK_PSDU)
        medium = tx + ack + len(ps) * (self.CCA_S + self.TURNAROUND_S)
        return len(ps), tx, ack, medium

    def bound_s(self, payload_bytes):
        """The pure air-time bound: the payload's bits alone at the raw rate."""
        return payload_bytes * 8 / self.rate_bps


def _is_wpdu(data):
    """An IEC 62056-47 wrapper header (version 1) is there: wPorts can be read."""
    return len(data) >= 8 and data[0] == 0 and data[1] == 1


class Terminal:
    """One row of the twin's table: a terminal's credentials and where its traffic goes."""

    def __init__(self, index, mac, password, module_addr, backhaul_addr, headend=None):
        self.index = index
        self.mac = j11.mac_bytes(mac)
        self.password = password.encode() if isinstance(password, str) else bytes(password)
        self.module_addr = (module_addr[0], int(module_addr[1]))
        self.backhaul_addr = (backhaul_addr[0], int(backhaul_addr[1]))
        # where uplink datagrams go: the (ip, port) that last spoke to the backhaul endpoint,
        # or a configured one before anybody has (unsolicited traffic: pushes)
        self.headend = (headend[0], int(headend[1])) if headend else None
        # client SAP (the wrapper's wPort) -> the head-end address that last used it, so that
        # several DLMS clients (management, public) can read one terminal side by side
        self.routes = {}
        self.transport = None
        self.probe_associated = False  # the terminal's probe association with the smart meter
        # air time summed over this terminal's traffic (seconds, floats: a model, not data)
        self.airtime = {"tx_s": 0.0, "rx_s": 0.0, "medium_s": 0.0, "frames": 0,
                        "up_bytes": 0, "down_bytes": 0, "up_datagrams": 0, "down_datagrams": 0}


class _Recv(asyncio.DatagramProtocol):
    def __init__(self, fn):
        self.fn = fn

    def datagram_received(self, data, addr):
        self.fn(data, addr)

    def error_received(self, exc):  # ICMP port unreachable: the head-end or module went away
        pass


class SmartMeterTwin:
    def __init__(self, clock, air_addr, mac=DEFAULT_MAC, pan_id=DEFAULT_PAN_ID,
                 channel=DEFAULT_CHANNEL, air=None, max_backlog_s=10.0, schedule_len=10000,
                 rssi=DEFAULT_RSSI, deviation_sign=-1, offset_min=540,
                 server_sap=PROBE_SERVER_SAP, probe_client_saps=PROBE_CLIENT_SAPS):
        """clock: the calendar (SimClock) the head-end sets terminals from. air_addr: the
        twin's air socket, the smart meter every module sends to. max_backlog_s: a datagram
        that would wait longer than this for the medium is dropped (a flood must not queue
        without bound); schedule_len: how many transmissions the schedule keeps.
        deviation_sign / offset_min: how its clock is written (as the terminals' dlms section
        reads it: -1 Blue Book, 540 JST, so the deviation field is -540); server_sap /
        probe_client_saps: the wPorts of the commissioning probe it answers."""
        self.clock = clock
        self.air_addr = (air_addr[0], int(air_addr[1]))
        self.mac = j11.mac_bytes(mac)
        self.pan_id = pan_id
        self.channel = channel
        self.rssi = rssi
        self.air = air or AirModel()
        self.max_backlog_s = max_backlog_s
        self.terminals = []
        self._by_module = {}
        self._by_mac = {}
        self.schedule = collections.deque(maxlen=schedule_len)
        self.stats = collections.Counter()
        self._free_at = 0.0  # loop time at which the medium is free
        self._air_t = None
        self._loop = None
        self.deviation = -offset_min if deviation_sign < 0 else offset_min
        self.offset_min = offset_min
        self.server_sap = server_sap
        self.probe_client_saps = tuple(probe_client_saps)
        self.answer_probe = True  # False: the smart meter's DLMS server is silent
        self.association_reject = None  # (result, diagnostic): the AARE refuses the association

    # -- the credential table ------------------------------------------------------------------

    def add_terminal(self, mac, password, module_addr, backhaul_addr, headend=None):
        """Register terminal (its module's MAC, the PANA password the coordinator accepts, the
        module emulator's air address, the backhaul endpoint for it, optionally the head-end
        address uplink goes to before a head-end has spoken): its Terminal row."""
        if len(self.terminals) >= MAX_TERMINALS:
            raise ValueError("a smart meter serves at most %d terminals" % MAX_TERMINALS)
        t = Terminal(len(self.terminals), mac, password, module_addr, backhaul_addr, headend)
        if t.mac in self._by_mac:
            raise ValueError("terminal MAC %s registered twice" % t.mac.hex().upper())
        self.terminals.append(t)
        self._by_module[t.module_addr] = t
        self._by_mac[t.mac] = t
        return t

    def module_kw(self, index):
        """J11Emulator arguments that make terminal `index`'s module see this coordinator."""
        t = self.terminals[index]
        return {"sm_mac": self.mac.hex().upper(), "pan_id": self.pan_id,
                "channel": self.channel, "pana_password": t.password.decode()}

    # -- the coordinator hook (a module emulator may ask; nothing here needs it) ---------------

    def beacons(self, emu, channel_mask, pairing_id=None):
        """What an active scan hears: [(channel, pan_id, mac, rssi)] (empty when the mask
        leaves out our channel). pairing_id: the twin answers any (documented choice)."""
        if not channel_mask & (1 << self.channel):
            return []
        return [(self.channel, self.pan_id, self.mac, self.rssi)]

    def authenticate(self, emu, own_mac, peer_mac, credentials):
        """PANA result for a module `own_mac` authenticating to `peer_mac` with credentials
        (the password as bytes/str, or {"password": ...}): 1 done, 2 failed (unknown MAC or
        wrong password), 3 no response (not addressed to us)."""
        faults = getattr(emu, "faults", None) or {}
        if j11.mac_bytes(peer_mac) != self.mac or faults.get("air_down"):
            # not addressed to us, or the module is out of our reach (its air_down fault)
            self.stats["pana_no_response"] += 1
            return PANA_NO_RESPONSE
        pw = credentials.get("password") if isinstance(credentials, dict) else credentials
        pw = pw.encode() if isinstance(pw, str) else bytes(pw or b"")
        t = self._by_mac.get(j11.mac_bytes(own_mac))
        if t is None or pw != t.password:
            self.stats["pana_failed"] += 1
            return PANA_FAILED
        self.stats["pana_ok"] += 1
        return PANA_OK

    # -- sockets -------------------------------------------------------------------------------

    async def start(self):
        loop = self._loop = asyncio.get_running_loop()
        self._air_t, _ = await loop.create_datagram_endpoint(
            lambda: _Recv(self._from_air), local_addr=self.air_addr)
        for t in self.terminals:
            t.transport, _ = await loop.create_datagram_endpoint(
                lambda t=t: _Recv(lambda d, a: self._from_headend(t, d, a)),
                local_addr=t.backhaul_addr)

    async def stop(self):
        for t in self.terminals:
            if t.transport is not None:
                t.transport.close()
                t.transport = None
        if self._air_t is not None:
            self._air_t.close()
            self._air_t = None

    # -- relay over the modelled air -----------------------------------------------------------

    def _from_air(self, data, addr):
        t = self._by_module.get((addr[0], addr[1]))
        if t is None:
            self.stats["air_unknown_source"] += 1
            return
        if self._is_probe(data):
            self._transmit(t, UP, data, lambda: self._answer_probe(t, data))
            return
        dst = t.routes.get(bytes(data[4:6])) if _is_wpdu(data) else None
        dst = dst or t.headend
        if dst is None:
            self.stats["up_no_headend"] += 1  # nobody has asked for this terminal yet
            return
        self._transmit(t, UP, data, lambda: t.transport and t.transport.sendto(data, dst))

    def _from_headend(self, t, data, addr):
        t.headend = (addr[0], addr[1])
        if _is_wpdu(data):
            sap = bytes(data[2:4])  # its source wPort: the client SAP
            if sap not in t.routes and len(t.routes) >= MAX_ROUTES:
                t.routes.clear()  # bounded: a stream of made-up SAPs must not grow it
            t.routes[sap] = t.headend
        if len(data) > j11.MAX_UDP_PAYLOAD:
            self.stats["down_too_long"] += 1  # the module could not carry it either
            return
        self._transmit(t, DOWN, data,
                       lambda: self._air_t and self._air_t.sendto(data, t.module_addr))

    def _transmit(self, t, direction, data, deliver):
        """Put one datagram on the shared medium and deliver it when its air time is over."""
        now = self._loop.time()
        start, end, frames = self.occupy(t, direction, len(data), now)
        if start is None:
            return
        self._loop.call_at(end, deliver)

    def occupy(self, t, direction, n, now):
        """Book the medium for an n-byte datagram of terminal t offered at `now` (loop time):
        (start, end, frames), or (None, None, 0) when the backlog is over max_backlog_s.
        Records the transmission in `schedule` and t.airtime."""
        frames, tx_s, ack_s, medium_s = self.air.datagram(n)
        start = max(now, self._free_at)
        if start - now > self.max_backlog_s:
            self.stats["air_congested"] += 1
            return None, None, 0
        end = start + medium_s
        self._free_at = end
        a = t.airtime
        a["medium_s"] += medium_s
        a["frames"] += frames
        if direction == UP:  # the terminal sends the frames and hears the ACKs
            a["tx_s"] += tx_s
            a["rx_s"] += ack_s
            a["up_bytes"] += n
            a["up_datagrams"] += 1
        else:  # the terminal hears the frames and sends the ACKs
            a["tx_s"] += ack_s
            a["rx_s"] += tx_s
            a["down_bytes"] += n
            a["down_datagrams"] += 1
        self.schedule.append((t.index, direction, n, frames, start, end))
        self.stats["datagrams_" + direction] += 1
        return start, end, frames

    # -- the smart meter's own DLMS server (the commissioning probe) ---------------------------

    def _is_probe(self, data):
        """A request from a terminal to the smart meter itself: a probe client SAP to our server
        SAP (a terminal's reply to a head-end comes from its own server SAP instead)."""
        if not _is_wpdu(data):
            return False
        src = data[2] << 8 | data[3]
        dst = data[4] << 8 | data[5]
        return dst == self.server_sap and src in self.probe_client_saps

    def _answer_probe(self, t, data):
        """The request has crossed the air: answer it over the air (its own air time)."""
        reply = self.probe_reply(t, data)
        if reply is None:
            return
        self._transmit(t, DOWN, reply,
                       lambda: self._air_t and self._air_t.sendto(reply, t.module_addr))

    def probe_reply(self, t, data):
        """The wrapper datagram answering one probe request from terminal t, or None (silent:
        answer_probe False, or not a whole wrapper datagram: nobody to answer)."""
        if not self.answer_probe:
            self.stats["probe_unanswered"] += 1
            return None
        try:
            client, _dst, apdu = wrapper.parse(data)
        except wrapper.WrapperError:
            self.stats["probe_malformed"] += 1
            return None
        apdu = bytes(apdu)
        body = self._probe_apdu(t, apdu)
        self.stats["probe_replies"] += 1
        return wrapper.build(self.server_sap, client, body)

    def _probe_apdu(self, t, apdu):
        tag = apdu[0] if apdu else -1
        if tag == acse.AARQ:
            try:
                q = acse.parse_aarq(memoryview(apdu))
            except acse.AcseError:
                return self._exception(t)
            if self.association_reject is not None:
                t.probe_associated = False
                return acse.build_aare(*self.association_reject)
            if q.context != acse.CONTEXT_LN:
                return acse.build_aare(1, 2)  # application-context-name not supported
            if q.mechanism is not None:
                return acse.build_aare(1, 11)  # no authentication for the public client
            t.probe_associated = True
            self.stats["probe_associations"] += 1
            return _AARE_OK
        if tag == acse.RLRQ:
            try:
                acse.parse_rlrq(memoryview(apdu))
            except acse.AcseError:
                return self._exception(t)
            t.probe_associated = False
            return _RLRE
        if (tag == xdlms.GET_REQUEST and t.probe_associated and len(apdu) == 13
                and apdu[1] == xdlms.NORMAL and apdu[3:] == _GET_CLOCK_TAIL):
            return bytes((xdlms.GET_RESPONSE, xdlms.NORMAL, apdu[2], 0, axdr.OCTET_STRING, 12)) \
                + axdr.datetime_bytes(self.clock.now_t2k(), self.deviation, self.offset_min)
        return self._exception(t)

    def _exception(self, t):
        """EXCEPTION-Response: not associated -> service not allowed; else not supported."""
        self.stats["probe_exceptions"] += 1
        if not t.probe_associated:
            return xdlms.exception_response(xdlms.STATE_SERVICE_NOT_ALLOWED,
                                            xdlms.SERVICE_OPERATION_NOT_POSSIBLE)
        return xdlms.exception_response(xdlms.STATE_SERVICE_UNKNOWN,
                                        xdlms.SERVICE_NOT_SUPPORTED)

    def figures(self, index):
        """Air figures of terminal `index`: its airtime counters plus bound_s, the pure
        air-time bound of all its payload bytes (both directions)."""
        a = dict(self.terminals[index].airtime)
        a["bound_s"] = self.air.bound_s(a["up_bytes"] + a["down_bytes"])
        return a

    def now_t2k(self):
        """The time authority's calendar."""
        return self.clock.now_t2k()
