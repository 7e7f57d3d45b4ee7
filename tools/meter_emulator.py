"""A class 0x028E meter node (distributed generator's electric energy meter) on a loopback address,
for tests and the demo. CPython asyncio only.

    python -m tools.meter_emulator --addr 127.0.0.2 [--port 3610] [--seed 1] [--rate 1]

It exposes the node profile 0x0EF001 and the meter object 0x028E01, answers Get / SetC / SetI /
INF_REQ to the request's source (ip, port), and takes its calendar from a clock object with
now_t2k() (tools.simclock.SimClock in the demo; real time by default) and its values from
tools.meter_model.MeterModel. The frame handling is written independently of firmware/meter so
the two check each other.

Fault injection: `emulator.faults` is a dict that tests change at run time (see FAULT_DEFAULTS).
Every parsed request is recorded in `emulator.requests` (Request tuples) for assertions.
"""

import argparse
import asyncio
import collections
import random
import struct
import sys
import time

from firmware import timeutil
from tools.meter_model import MeterModel

NO_DATA = 0xFFFFFFFE
EOJ_NODE_PROFILE = 0x0EF001
EOJ_METER = 0x028E01
MAKER = b"\xff\xff\xff"  # no registered maker code: test equipment

GET, SETC, SETI, INF_REQ = 0x62, 0x61, 0x60, 0x63
GET_RES, SET_RES, INF = 0x72, 0x71, 0x73
GET_SNA, SETC_SNA, SETI_SNA, INF_SNA = 0x52, 0x51, 0x50, 0x53

FAULT_DEFAULTS = {
    "drop_next": 0,  # silently drop the next N requests
    "drop_prob": 0.0,  # drop each request with this probability (seeded)
    "delay_ms": 0,  # answer every request after this delay
    "delay_next_ms": [],  # per-request delays consumed first, e.g. [450, 0]
    "duplicate": 0,  # send each reply this many extra times
    "garbage": 0,  # send N random datagrams to the requester before each reply
    "truncate_next": 0,  # cut the next N replies short
    "nodata_slots": set(),  # slots whose E6/E7 answer 0xFFFFFFFE
    "stale_slots": set(),  # slots whose E6/E7 still carry the previous boundary
    "clock_offset_s": 0,  # meter clock minus true time
    "sna_epcs": set(),  # EPCs answered in Get_SNA with PDC 0 (as if unreadable)
    "omit_epcs": set(),  # EPCs left out of the reply entirely (non-compliant Get_SNA)
    "d5_hijack": None,  # after each accepted SetC 0xD5, another controller sets this day
}

Request = collections.namedtuple("Request", "t src tid seoj deoj esv epcs edts action")


class RealClock:
    def now_t2k(self):
        return int(time.time()) - timeutil.UNIX_T2K


class AsyncUdpEndpoint:
    """The firmware's UDP endpoint interface (recvfrom/sendto/close) over asyncio, for host tests
    and tools: `ep = await AsyncUdpEndpoint.open(("127.0.0.1", 0))`."""

    class _Proto(asyncio.DatagramProtocol):
        def __init__(self, q):
            self.q = q

        def datagram_received(self, data, addr):
            if self.q.full():
                return  # like a full socket buffer
            self.q.put_nowait((data, (addr[0], addr[1])))

    def __init__(self, transport, q):
        self.transport = transport
        self.q = q
        self.local = transport.get_extra_info("sockname")[:2]

    @classmethod
    async def open(cls, local, queue_len=4096):
        if not local[0].startswith("127."):
            raise ValueError("loopback addresses only: %r" % (local,))
        q = asyncio.Queue(queue_len)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: cls._Proto(q),
                                                           local_addr=local)
        return cls(transport, q)

    async def recvfrom(self, buf):
        data, addr = await self.q.get()
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n, addr

    def sendto(self, data, addr):
        self.transport.sendto(bytes(data), addr)
        return len(data)

    def close(self):
        self.transport.close()


def parse_request(data):
    """(tid, seoj, deoj, esv, [(epc, edt)]) or None if not a well-formed Format 1 frame."""
    if len(data) < 12 or data[0] != 0x10 or data[1] != 0x81:
        return None
    tid = (data[2] << 8) | data[3]
    seoj = int.from_bytes(data[4:7], "big")
    deoj = int.from_bytes(data[7:10], "big")
    esv, opc = data[10], data[11]
    if opc == 0:
        return None
    off, props = 12, []
    for _ in range(opc):
        if off + 2 > len(data):
            return None
        epc, pdc = data[off], data[off + 1]
        if off + 2 + pdc > len(data):
            return None
        props.append((epc, bytes(data[off + 2:off + 2 + pdc])))
        off += 2 + pdc
    if off != len(data):
        return None
    return tid, seoj, deoj, esv, props


def build_frame(tid, seoj, deoj, esv, props):
    out = bytearray(struct.pack(">BBH", 0x10, 0x81, tid))
    out += seoj.to_bytes(3, "big") + deoj.to_bytes(3, "big") + bytes((esv, len(props)))
    for epc, edt in props:
        out += bytes((epc, len(edt))) + edt
    return bytes(out)


def propmap(epcs):
    s = sorted(set(epcs))
    if len(s) < 16:
        return bytes([len(s)] + s)
    bm = bytearray(17)
    bm[0] = len(s)
    for e in s:
        bm[1 + (e & 0x0F)] |= 1 << ((e >> 4) - 8)
    return bytes(bm)


NP_GET = (0x80, 0x82, 0x83, 0x8A, 0x9D, 0x9E, 0x9F, 0xD3, 0xD4, 0xD6, 0xD7)
METER_GET = (0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x98, 0x9D, 0x9E, 0x9F, 0xD0, 0xD1, 0xD2, 0xD3,
             0xD4, 0xD5, 0xD6, 0xDA, 0xDB, 0xE0, 0xE1, 0xE2, 0xE3, 0xE6, 0xE7)
METER_SET = (0xD5,)


class MeterEmulator:
    def __init__(self, addr=("127.0.0.2", 3610), clock=None, model=None, tz_offset_min=540,
                 retention_days=45, seed=1, instance=1, faults=None, log_len=10000):
        if not addr[0].startswith("127."):
            raise ValueError("the meter emulator binds loopback addresses only")
        if tz_offset_min % 30:
            raise ValueError("tz offset must be a whole number of 30-minute slots")
        self.bind_addr = (addr[0], addr[1])
        self.addr = None  # actual (ip, port) once started
        self.clock = clock or RealClock()
        self.model = model or MeterModel(seed=seed)
        self.tz = tz_offset_min
        self.retention = retention_days
        self.eoj = (EOJ_METER & 0xFFFF00) | instance
        # Fresh containers per instance: tests mutate them in place.
        self.faults = {k: (type(v)(v) if isinstance(v, (set, list)) else v)
                       for k, v in FAULT_DEFAULTS.items()}
        self.faults.update(faults or {})
        self.requests = collections.deque(maxlen=log_len)
        self.stats = collections.Counter()
        self.d5 = 0xFFFF  # history day selector, initially "not set"
        self._rng = random.Random(seed)
        self._ep = None
        self._task = None
        self._timers = set()
        ident = b"\xfe" + MAKER + b"EMU028E-%05d" % (seed % 100000)
        self._np = {
            0x80: b"\x30", 0x82: b"\x01\x0e\x01\x00", 0x83: ident, 0x8A: MAKER,
            0x9D: propmap((0x80, 0xD5)), 0x9E: propmap(()), 0x9F: propmap(NP_GET),
            0xD3: b"\x00\x00\x01", 0xD4: b"\x00\x02", 0xD6: b"\x01" + self.eoj.to_bytes(3, "big"),
            0xD7: b"\x01\x02\x8e",
        }
        self._static = {
            0x80: b"\x30", 0x81: b"\x00", 0x82: b"\x00\x00R\x00", 0x83: ident, 0x88: b"\x42",
            0x8A: MAKER, 0x9D: propmap((0x80, 0x88)), 0x9E: propmap(METER_SET),
            0x9F: propmap(METER_GET),
            0xD0: b"\x02\x7e\x00",  # metering an EV charger/discharger, grid-connected
            0xD1: b"\x02\x00\x00\x00\x00\x02\x01",  # node MAC + meter index 1
            0xD2: b"\x01", 0xD6: b"\xfe" + MAKER + b"EV-PCS-000001",
            0xDB: b"\x01",  # time synchronised
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self):
        self._ep = await AsyncUdpEndpoint.open(self.bind_addr)
        self.addr = self._ep.local
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self):
        for h in list(self._timers):
            h.cancel()
        self._timers.clear()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._ep:
            self._ep.close()
            self._ep = None

    async def _serve(self):
        buf = bytearray(1500)
        while True:
            n, src = await self._ep.recvfrom(buf)
            self.handle(bytes(buf[:n]), src)

    # --- meter time and values ----------------------------------------------------------------

    def now_t2k(self):
        """The meter's own clock (UTC t2k), including the injected offset."""
        return self.clock.now_t2k() + self.faults["clock_offset_s"]

    def latest_boundary(self):
        now = self.now_t2k()
        return now - now % timeutil.SLOT_S

    def _local_fields(self, t2k):
        return timeutil.fields_from_t2k(t2k + self.tz * 60)

    def _stamp(self, t2k):
        y, mo, d, h, mi, s, _ = self._local_fields(t2k)
        return struct.pack(">HBBBBB", y, mo, d, h, mi, s)

    def fixed_time(self, which):
        """EDT of 0xE6 (which=0, forward) or 0xE7 (which=1, reverse)."""
        b = self.latest_boundary()
        slot = timeutil.slot_of_t2k(b)
        if slot in self.faults["stale_slots"]:
            b -= timeutil.SLOT_S
        value = self.model.at_t2k(b)[which]
        if slot in self.faults["nodata_slots"]:
            value = NO_DATA
        return self._stamp(b) + struct.pack(">I", value)

    def history(self, which):
        """EDT of 0xE1/0xE3 for the day selected by 0xD5 (0 = the meter's today)."""
        day = self.d5
        vals = [NO_DATA] * 48
        if day != 0xFFFF and day <= self.retention:
            latest = self.latest_boundary()
            y, mo, d, _, _, _, _ = self._local_fields(self.now_t2k())
            local0 = (timeutil.days_from_civil(y, mo, d) - day) * timeutil.DAY_S
            for i in range(48):
                t = local0 + i * timeutil.SLOT_S - self.tz * 60
                if t <= latest:
                    vals[i] = self.model.at_t2k(t)[which]
        return struct.pack(">H48I", day, *vals)

    def meter_value(self, epc):
        """Current EDT of a meter-object property, or None if not implemented."""
        v = self._static.get(epc)
        if v is not None:
            return v
        if epc == 0xD3:
            return struct.pack(">H", self.retention)
        if epc == 0xD4:
            return bytes((self.model.unit_code,))
        if epc == 0xD5:
            return struct.pack(">H", self.d5)
        if epc in (0xE0, 0xE2):
            return struct.pack(">I", self.model.at_t2k(self.latest_boundary())[epc == 0xE2])
        if epc in (0xE1, 0xE3):
            return self.history(epc == 0xE3)
        if epc in (0xE6, 0xE7):
            return self.fixed_time(epc == 0xE7)
        if epc == 0x98:
            y, mo, d, _, _, _, _ = self._local_fields(self.now_t2k())
            return struct.pack(">HBB", y, mo, d)
        if epc == 0xDA:
            _, _, _, h, mi, s, _ = self._local_fields(self.now_t2k())
            return bytes((h, mi, s))
        return None

    def _set_d5(self, edt):
        if len(edt) != 2:
            return False
        day = (edt[0] << 8) | edt[1]
        if day > min(99, self.retention):
            return False
        self.d5 = day
        if self.faults["d5_hijack"] is not None:
            self.d5 = self.faults["d5_hijack"]
        return True

    # --- request handling -----------------------------------------------------------------------

    def handle(self, data, src):
        """Process one datagram from src; schedules the reply (if any)."""
        self.stats["datagrams"] += 1
        req = parse_request(data)
        if req is None:
            self.stats["malformed"] += 1
            return
        tid, seoj, deoj, esv, props = req
        epcs = [e for e, _ in props]
        action = self._fault_action()
        rec = Request(time.monotonic(), src, tid, seoj, deoj, esv, epcs,
                      [d for _, d in props], action)
        self.requests.append(rec)
        if action == "dropped":
            self.stats["dropped"] += 1
            return
        reply = self._reply(tid, seoj, deoj, esv, props)
        if reply is None:
            return
        delays = self.faults["delay_next_ms"]
        delay = delays.pop(0) if delays else self.faults["delay_ms"]
        if delay:
            loop = asyncio.get_running_loop()
            h = loop.call_later(delay / 1000, self._send_reply, reply, src)
            self._timers.add(h)
        else:
            self._send_reply(reply, src)

    def _fault_action(self):
        f = self.faults
        if f["drop_next"] > 0:
            f["drop_next"] -= 1
            return "dropped"
        if f["drop_prob"] and self._rng.random() < f["drop_prob"]:
            return "dropped"
        return "answered"

    def _send_reply(self, reply, src):
        now = asyncio.get_running_loop().time()
        self._timers = {h for h in self._timers if h.when() > now}  # forget fired timers
        if self._ep is None:
            return
        f = self.faults
        for _ in range(f["garbage"]):
            n = self._rng.randint(1, 40)
            junk = bytes(self._rng.getrandbits(8) for _ in range(n))
            if self._rng.random() < 0.5:
                junk = b"\x10\x81" + junk  # looks like ECHONET Lite, is not
            self._ep.sendto(junk, src)
            self.stats["garbage"] += 1
        if f["truncate_next"] > 0:
            f["truncate_next"] -= 1
            reply = reply[:self._rng.randint(1, len(reply) - 1)]
            self.stats["truncated"] += 1
        for _ in range(1 + f["duplicate"]):
            self._ep.sendto(reply, src)
            self.stats["replies"] += 1

    def _reply(self, tid, seoj, deoj, esv, props):
        if deoj in (EOJ_NODE_PROFILE, EOJ_NODE_PROFILE & 0xFFFF00):
            own, value = EOJ_NODE_PROFILE, self._np.get
        elif deoj in (self.eoj, self.eoj & 0xFFFF00):
            own, value = self.eoj, self.meter_value
        else:
            self.stats["no_object"] += 1
            return None
        if esv in (GET, INF_REQ):
            out, ok = [], True
            for epc, _ in props:
                v = None if epc in self.faults["sna_epcs"] else value(epc)
                if epc in self.faults["omit_epcs"]:
                    ok = False
                    continue
                ok = ok and v is not None
                out.append((epc, v or b""))
            if not out:
                return None
            if esv == GET:
                return build_frame(tid, own, seoj, GET_RES if ok else GET_SNA, out)
            return build_frame(tid, own, seoj, INF if ok else INF_SNA, out)
        if esv in (SETC, SETI):
            out, ok = [], True
            for epc, edt in props:
                accepted = own == self.eoj and epc == 0xD5 and self._set_d5(edt)
                ok = ok and accepted
                out.append((epc, b"" if accepted else edt))
            if esv == SETC:
                return build_frame(tid, own, seoj, SET_RES if ok else SETC_SNA, out)
            return None if ok else build_frame(tid, own, seoj, SETI_SNA, out)
        self.stats["unsupported"] += 1
        return None


async def _amain(a):
    from tools.simclock import SimClock

    start = a.start_t2k if a.start_t2k is not None else RealClock().now_t2k()
    clock = SimClock(start, a.rate)
    emu = MeterEmulator(addr=(a.addr, a.port), clock=clock,
                        model=MeterModel(seed=a.seed, unit_code=a.unit),
                        tz_offset_min=a.tz, retention_days=a.retention, seed=a.seed)
    await emu.start()
    print("meter emulator 0x%06X on %s:%d (meter time %s)"
          % (emu.eoj, emu.addr[0], emu.addr[1], timeutil.iso(emu.now_t2k(), a.tz)), flush=True)
    seen = 0
    try:
        while True:
            await asyncio.sleep(1)
            if a.verbose:
                reqs = list(emu.requests)[seen:]
                seen = len(emu.requests)
                for r in reqs:
                    print("%s tid=%04X esv=%02X deoj=%06X epcs=%s %s"
                          % (r.src[0], r.tid, r.esv, r.deoj,
                             " ".join("%02X" % e for e in r.epcs), r.action), flush=True)
    finally:
        await emu.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description="ECHONET Lite 0x028E meter emulator (loopback)")
    ap.add_argument("--addr", default="127.0.0.2")
    ap.add_argument("--port", type=int, default=3610)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--unit", type=lambda s: int(s, 0), default=0x01, help="0xD4 unit code")
    ap.add_argument("--tz", type=int, default=540, help="meter local time minus UTC, minutes")
    ap.add_argument("--retention", type=int, default=45, help="0xD3 history days")
    ap.add_argument("--rate", type=int, default=1, help="calendar acceleration")
    ap.add_argument("--start-t2k", type=int, default=None, help="calendar start (default now)")
    ap.add_argument("--verbose", action="store_true", help="print every request")
    a = ap.parse_args(argv)
    if not a.addr.startswith("127."):
        ap.error("--addr must be a loopback address (127.x.x.x)")
    try:
        asyncio.run(_amain(a))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
