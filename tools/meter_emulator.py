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
    "d5_hijack": None,  # after each accepted day SetC, another controller sets this day
    "opc_cap": None,  # k: answer only the first k EPCs of a Get (pychonet PR #66)
    "opc_drop": None,  # k: silently drop any Get with more than k EPCs
    "poison_epcs": set(),  # silently drop any Get containing one of these EPCs (HA #250)
    "d5_hijack_count": None,  # with d5_hijack: only the next N SetCs are hijacked (None = all)
    "unlisted_epcs": set(),  # left out of 0x9F and answered with Get_SNA (MoekadenRoom #5)
    "sync_status": 0x01,  # 0xDB: 0x00 not synced, 0x01 synced, 0x02 failed
    # clock EPCs (0x98 date, 0xDA HH MM SS, 0x97 HH MM) in the Set map (0x9E) and honoured by a
    # SetC: the meter's clock_offset_s becomes what the set says and 0xDB turns 0x01
    "clock_set_epcs": set(),
}
CLOCK_EPCS = (0x97, 0x98, 0xDA)

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

    async def recv(self):
        return await self.q.get()

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


def _parse_props(data, off, count):
    props = []
    for _ in range(count):
        if off + 2 > len(data):
            return None, off
        epc, pdc = data[off], data[off + 1]
        if off + 2 + pdc > len(data):
            return None, off
        props.append((epc, bytes(data[off + 2:off + 2 + pdc])))
        off += 2 + pdc
    return props, off


def parse_request(data):
    """(tid, seoj, deoj, esv, [(epc, edt)], get_props) or None if not a well-formed Format 1
    frame; get_props is the Get part of a SetGet (0x6E/0x7E/0x5E), else None."""
    if len(data) < 12 or data[0] != 0x10 or data[1] != 0x81:
        return None
    tid = (data[2] << 8) | data[3]
    seoj = int.from_bytes(data[4:7], "big")
    deoj = int.from_bytes(data[7:10], "big")
    esv, opc = data[10], data[11]
    get_props = None
    if esv in (0x6E, 0x7E, 0x5E):
        props, off = _parse_props(data, 12, opc)
        if props is None or off >= len(data):
            return None
        get_props, off = _parse_props(data, off + 1, data[off])
        if get_props is None or (opc == 0 and not get_props):
            return None
    else:
        if opc == 0:
            return None
        props, off = _parse_props(data, 12, opc)
        if props is None:
            return None
    if off != len(data):
        return None
    return tid, seoj, deoj, esv, props, get_props


def build_frame(tid, seoj, deoj, esv, props, get_props=None):
    out = bytearray(struct.pack(">BBH", 0x10, 0x81, tid))
    out += seoj.to_bytes(3, "big") + deoj.to_bytes(3, "big") + bytes((esv, len(props)))
    for epc, edt in props:
        out += bytes((epc, len(edt))) + edt
    if get_props is not None:
        out.append(len(get_props))
        for epc, edt in get_props:
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
SETGET, SETGET_RES, SETGET_SNA = 0x6E, 0x7E, 0x5E

# What each emulated class publishes (EPC roles written from the MRA tables in
# /work/shared/reference/echonet-lite.md §2.2-2.4, independently of firmware/meter/profiles.py).
CLASSES = {
    0x028E: {
        "get": (0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x98, 0x9D, 0x9E, 0x9F, 0xD0, 0xD1, 0xD2,
                0xD3, 0xD4, 0xD5, 0xD6, 0xDA, 0xDB, 0xE0, 0xE1, 0xE2, 0xE3, 0xE6, 0xE7),
        "unit": 0xD4, "coef": None, "digits": None, "cum": (0xE0, 0xE2), "hist": (0xE1, 0xE3),
        "fixed": (0xE6, 0xE7), "day": 0xD5, "day_len": 2, "retention": 0xD3, "time": 0xDA,
    },
    0x0288: {
        "get": (0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD3,
                0xD7, 0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xEA, 0xEB),
        "unit": 0xE1, "coef": 0xD3, "digits": 0xD7, "cum": (0xE0, 0xE3), "hist": (0xE2, 0xE4),
        "fixed": (0xEA, 0xEB), "day": 0xE5, "day_len": 1, "retention": None, "time": 0x97,
    },
    0x028D: {
        "get": (0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD3,
                0xD4, 0xD7, 0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xEA, 0xEB),
        "unit": 0xD4, "coef": 0xD3, "digits": 0xD7, "cum": (0xE1, 0xE3), "hist": (0xE2, 0xE4),
        "fixed": (0xEA, 0xEB), "day": 0xE0, "day_len": 1, "retention": None, "time": 0x97,
    },
}
METER_GET = CLASSES[0x028E]["get"]
METER_SET = (0xD5,)


class MeterObject:
    """One meter object (class + instance) of the emulated node, with its own model and day
    selector. device_type/metered_id distinguish several 0x028E instances (0xD0/0xD6)."""

    def __init__(self, node, cls=0x028E, instance=1, model=None, coefficient=1, digits=None,
                 device_type=b"\x02\x7e\x00", metered_id=None, serial=1):
        if cls not in CLASSES:
            raise ValueError("class 0x%04X not emulated" % cls)
        self.node = node
        self.cls = cls
        self.c = CLASSES[cls]
        self.eoj = (cls << 8) | instance
        self.digits = digits if digits is not None else (9 if cls == 0x028E else 8)
        self.model = model or MeterModel(seed=node.seed, modulus=10 ** self.digits)
        self.coefficient = coefficient
        self.day = 0xFFFF if self.c["day_len"] == 2 else 0xFF  # selector "not set"
        self.serial = serial
        self.device_type = device_type
        self.metered_id = metered_id or (b"\xfe" + MAKER + b"EV-PCS-%06d" % serial)
        self.boot = 0  # bumped by reboot(): part of 0x83

    @property
    def ident(self):
        return b"\xfe" + MAKER + b"M%04X-%02d-%04d" % (self.cls, self.boot % 100,
                                                        self.serial % 10000)

    def static(self, epc):
        c = self.c
        table = {
            0x80: b"\x30", 0x81: b"\x00", 0x82: b"\x00\x00R\x00", 0x83: self.ident,
            0x88: b"\x42", 0x8A: MAKER, 0x8D: b"SN%010d" % self.serial,
            0x9D: propmap((0x80, 0x88)),
            0x9E: propmap((c["day"],) + tuple(self.node.faults["clock_set_epcs"])),
            0x9F: propmap(set(c["get"]) - self.node.faults["unlisted_epcs"]),
        }
        if self.cls == 0x028E:
            table.update({
                0xD0: self.device_type,
                0xD1: b"\x02\x00\x00\x00\x00\x02" + bytes((self.serial & 0xFF,)),
                0xD2: b"\x01", 0xD6: self.metered_id,
                0xDB: bytes((self.node.faults["sync_status"],)),
            })
        return table.get(epc)

    def value(self, epc):
        """Current EDT of a property, or None if not implemented."""
        c, node = self.c, self.node
        if epc not in c["get"] or epc in node.faults["unlisted_epcs"]:
            return None
        v = self.static(epc)
        if v is not None:
            return v
        if epc == c["retention"]:
            return struct.pack(">H", node.retention)
        if epc == c["unit"]:
            return bytes((self.model.unit_code,))
        if epc == c["coef"]:
            return struct.pack(">I", self.coefficient)
        if epc == c["digits"]:
            return bytes((self.digits,))
        if epc == c["day"]:
            return self.day.to_bytes(c["day_len"], "big")
        if epc in c["cum"]:
            return struct.pack(">I", self.model.at_t2k(node.latest_boundary())[
                c["cum"].index(epc)])
        if epc in c["hist"]:
            return node.history(c["hist"].index(epc), self)
        if epc in c["fixed"]:
            return node.fixed_time(c["fixed"].index(epc), self)
        if epc == 0x98:
            y, mo, d, _, _, _, _ = node.local_fields(node.now_t2k())
            return struct.pack(">HBB", y, mo, d)
        if epc == c["time"]:
            _, _, _, h, mi, s, _ = node.local_fields(node.now_t2k())
            return bytes((h, mi, s)) if epc == 0xDA else bytes((h, mi))
        return None

    def set_day(self, edt):
        if len(edt) != self.c["day_len"]:
            return False
        day = int.from_bytes(edt, "big")
        limit = 99 if self.c["retention"] is None else min(99, self.node.retention)
        if day > limit:
            return False
        self.day = day
        f = self.node.faults
        if f["d5_hijack"] is not None and f["d5_hijack_count"] != 0:
            self.day = f["d5_hijack"]
            if f["d5_hijack_count"] is not None:
                f["d5_hijack_count"] -= 1
        return True

    def clock_edt_ok(self, epc, edt):
        """A clock property the Set map lists, with an EDT of its size and a valid value."""
        if epc not in self.node.faults["clock_set_epcs"]:
            return False
        if epc == 0x98:
            if len(edt) != 4:
                return False
            y, mo, d = struct.unpack(">HBB", edt)
            return 2000 <= y <= 2099 and 1 <= mo <= 12 and \
                timeutil.civil_from_days(timeutil.days_from_civil(y, mo, d)) == (y, mo, d)
        n = 3 if epc == 0xDA else 2
        return len(edt) == n and edt[0] < 24 and edt[1] < 60 and (n == 2 or edt[2] < 60)

    def setget(self, epc, edt):
        return epc == self.c["day"] and self.set_day(edt)


class MeterEmulator:
    def __init__(self, addr=("127.0.0.2", 3610), clock=None, model=None, tz_offset_min=540,
                 retention_days=45, seed=1, instance=1, faults=None, log_len=10000, cls=0x028E,
                 coefficient=1, digits=None, extra_objects=()):
        """extra_objects: dicts of MeterObject keyword arguments (cls, instance, model,
        device_type, metered_id, serial, ...) for more meter objects on the same node."""
        if not addr[0].startswith("127."):
            raise ValueError("the meter emulator binds loopback addresses only")
        if tz_offset_min % 30:
            raise ValueError("tz offset must be a whole number of 30-minute slots")
        self.bind_addr = (addr[0], addr[1])
        self.addr = None  # actual (ip, port) once started
        self.clock = clock or RealClock()
        self.seed = seed
        self.tz = tz_offset_min
        self.retention = retention_days
        # Fresh containers per instance: tests mutate them in place.
        self.faults = {k: (type(v)(v) if isinstance(v, (set, list)) else v)
                       for k, v in FAULT_DEFAULTS.items()}
        self.faults.update(faults or {})
        self.objects = [MeterObject(self, cls, instance, model, coefficient, digits)]
        for kw in extra_objects:
            self.objects.append(MeterObject(self, **kw))
        self.requests = collections.deque(maxlen=log_len)
        self.stats = collections.Counter()
        self._rng = random.Random(seed)
        self._ep = None
        self._task = None
        self._timers = set()
        self._boot = 0

    # The first object, for the single-meter tests and tools.
    @property
    def meter(self):
        return self.objects[0]

    @property
    def model(self):
        return self.objects[0].model

    @property
    def eoj(self):
        return self.objects[0].eoj

    @property
    def d5(self):
        return self.objects[0].day

    @d5.setter
    def d5(self, v):
        self.objects[0].day = v

    def node_value(self, epc):
        objs = self.objects
        classes = sorted({o.cls for o in objs})
        table = {
            0x80: b"\x30", 0x82: b"\x01\x0e\x01\x00",
            0x83: b"\xfe" + MAKER + b"EMU-NODE-%04d" % (self.seed % 10000), 0x8A: MAKER,
            0x9D: propmap((0x80, 0xD5)), 0x9E: propmap(()), 0x9F: propmap(NP_GET),
            0xD3: len(objs).to_bytes(3, "big"), 0xD4: (len(classes) + 1).to_bytes(2, "big"),
            0xD6: bytes((len(objs),)) + b"".join(o.eoj.to_bytes(3, "big") for o in objs),
            0xD7: bytes((len(classes),)) + b"".join(c.to_bytes(2, "big") for c in classes),
        }
        return table.get(epc)

    def object_for(self, deoj):
        for o in self.objects:
            if deoj in (o.eoj, o.eoj & 0xFFFF00):
                return o
        return None

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

    def reboot(self, reset_counters=True, new_identity=False, unit_code=None, announce_to=None):
        """Restart the node: day selectors back to "not set"; optionally counters restart from 0
        at the current boundary (a replaced or reset meter), a new identity (0x83/0xD6) and unit
        code. announce_to=(ip, port): send the start-up INF 0xD5 there (unicast; the multicast
        announcement belongs to the discovery tests)."""
        self._boot += 1
        slot = timeutil.slot_of_t2k(self.latest_boundary())
        for o in self.objects:
            o.day = 0xFFFF if o.c["day_len"] == 2 else 0xFF
            if reset_counters:
                o.model = MeterModel(seed=self.seed + self._boot, unit_code=o.model.unit_code,
                                     start_fwd=0, start_rev=0, modulus=o.model.modulus,
                                     tz_offset_min=self.tz, origin_slot=slot)
            if unit_code is not None:
                o.model.unit_code = unit_code
            if new_identity:
                o.boot = self._boot
                o.metered_id = b"\xfe" + MAKER + b"EV-PCS-R%05d" % self._boot
        self.stats["reboots"] += 1
        if announce_to is not None and self._ep is not None:
            edt = bytes((len(self.objects),)) + b"".join(o.eoj.to_bytes(3, "big")
                                                         for o in self.objects)
            self._ep.sendto(build_frame(self._boot & 0xFFFF, EOJ_NODE_PROFILE, EOJ_NODE_PROFILE,
                                        INF, [(0xD5, edt)]), announce_to)

    # --- meter time and values ----------------------------------------------------------------

    def now_t2k(self):
        """The meter's own clock (UTC t2k), including the injected offset."""
        return self.clock.now_t2k() + self.faults["clock_offset_s"]

    def set_clock(self, clock):
        """A SetC of the meter's clock {epc: edt}: the offset becomes what it says (0x97 sets
        the seconds to 0; a time without a date keeps the meter's date) and 0xDB 0x01."""
        y, mo, d, h, mi, s, _ = self.local_fields(self.now_t2k())
        if 0x98 in clock:
            y, mo, d = struct.unpack(">HBB", clock[0x98])
        if 0xDA in clock:
            h, mi, s = clock[0xDA]
        elif 0x97 in clock:
            h, mi, s = clock[0x97][0], clock[0x97][1], 0
        new = timeutil.t2k_from_fields(y, mo, d, h, mi, s) - self.tz * 60
        self.faults["clock_offset_s"] = new - self.clock.now_t2k()
        self.faults["sync_status"] = 0x01
        self.stats["clock_sets"] += 1

    def latest_boundary(self):
        now = self.now_t2k()
        return now - now % timeutil.SLOT_S

    def local_fields(self, t2k):
        return timeutil.fields_from_t2k(t2k + self.tz * 60)

    _local_fields = local_fields

    def _stamp(self, t2k):
        y, mo, d, h, mi, s, _ = self.local_fields(t2k)
        return struct.pack(">HBBBBB", y, mo, d, h, mi, s)

    def fixed_time(self, which, obj=None):
        """EDT of the fixed-time value (which=0 forward, 1 reverse)."""
        obj = obj or self.meter
        b = self.latest_boundary()
        slot = timeutil.slot_of_t2k(b)
        if slot in self.faults["stale_slots"]:
            b -= timeutil.SLOT_S
        value = obj.model.at_t2k(b)[which]
        if slot in self.faults["nodata_slots"]:
            value = NO_DATA
        return self._stamp(b) + struct.pack(">I", value)

    def history(self, which, obj=None):
        """History EDT for the day the object's selector holds (0 = the meter's today)."""
        obj = obj or self.meter
        day = obj.day
        vals = [NO_DATA] * 48
        unset = 0xFFFF if obj.c["day_len"] == 2 else 0xFF
        limit = self.retention if obj.c["retention"] is not None else 99
        if day != unset and day <= limit:
            latest = self.latest_boundary()
            y, mo, d, _, _, _, _ = self.local_fields(self.now_t2k())
            local0 = (timeutil.days_from_civil(y, mo, d) - day) * timeutil.DAY_S
            for i in range(48):
                t = local0 + i * timeutil.SLOT_S - self.tz * 60
                if t <= latest:
                    vals[i] = obj.model.at_t2k(t)[which]
        return struct.pack(">H48I", day, *vals)

    def meter_value(self, epc):
        return self.meter.value(epc)

    # --- request handling -----------------------------------------------------------------------

    def handle(self, data, src):
        """Process one datagram from src; schedules the reply (if any)."""
        self.stats["datagrams"] += 1
        req = parse_request(data)
        if req is None:
            self.stats["malformed"] += 1
            return
        tid, seoj, deoj, esv, props, get_props = req
        epcs = [e for e, _ in props] + [e for e, _ in get_props or ()]
        action = self._fault_action(esv, epcs)
        rec = Request(time.monotonic(), src, tid, seoj, deoj, esv, epcs,
                      [d for _, d in props], action)
        self.requests.append(rec)
        if action != "answered":
            self.stats[action] += 1
            return
        reply = self._reply(tid, seoj, deoj, esv, props, get_props)
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

    def _fault_action(self, esv, epcs):
        f = self.faults
        if f["drop_next"] > 0:
            f["drop_next"] -= 1
            return "dropped"
        if f["drop_prob"] and self._rng.random() < f["drop_prob"]:
            return "dropped"
        if esv == GET:
            if f["opc_drop"] is not None and len(epcs) > f["opc_drop"]:
                return "dropped_opc"
            if f["poison_epcs"] & set(epcs):
                return "dropped_poison"
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

    def _reply(self, tid, seoj, deoj, esv, props, get_props=None):
        obj = None
        if deoj in (EOJ_NODE_PROFILE, EOJ_NODE_PROFILE & 0xFFFF00):
            own, value = EOJ_NODE_PROFILE, self.node_value
        else:
            obj = self.object_for(deoj)
            if obj is None:
                self.stats["no_object"] += 1
                return None
            own, value = obj.eoj, obj.value
        if esv in (GET, INF_REQ):
            out, ok = [], True
            for epc, _ in props:
                v = None if epc in self.faults["sna_epcs"] else value(epc)
                if epc in self.faults["omit_epcs"]:
                    ok = False
                    continue
                ok = ok and v is not None
                out.append((epc, v or b""))
            cap = self.faults["opc_cap"]
            if esv == GET and cap is not None and len(out) > cap:
                out = out[:cap]  # a meter that silently answers only the first k EPCs
                self.stats["capped"] += 1
            if not out:
                return None
            if esv == GET:
                return build_frame(tid, own, seoj, GET_RES if ok else GET_SNA, out)
            return build_frame(tid, own, seoj, INF if ok else INF_SNA, out)
        if esv in (SETC, SETI):
            out, ok, clock = [], True, {}
            for epc, edt in props:
                if obj is not None and epc in CLOCK_EPCS:
                    accepted = obj.clock_edt_ok(epc, edt)
                    if accepted:
                        clock[epc] = bytes(edt)
                else:
                    accepted = obj is not None and epc == obj.c["day"] and obj.set_day(edt)
                ok = ok and accepted
                out.append((epc, b"" if accepted else edt))
            if clock and ok:  # all or nothing, as one frame
                self.set_clock(clock)
            if esv == SETC:
                return build_frame(tid, own, seoj, SET_RES if ok else SETC_SNA, out)
            return None if ok else build_frame(tid, own, seoj, SETI_SNA, out)
        if esv == SETGET:
            sets, ok = [], True
            for epc, edt in props:
                accepted = obj is not None and obj.setget(epc, edt)
                ok = ok and accepted
                sets.append((epc, b"" if accepted else edt))
            gets = []
            for epc, _ in get_props:
                v = value(epc)
                ok = ok and v is not None
                gets.append((epc, v or b""))
            return build_frame(tid, own, seoj, SETGET_RES if ok else SETGET_SNA, sets, gets)
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
