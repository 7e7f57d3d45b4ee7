# MeterClient against a scripted in-memory endpoint (both runtimes). The real-socket tests against
# the meter emulator are in host_tests/integration/test_echonet_client_emulator.py.
import asyncio
import struct
import unittest

from firmware import log, timeutil
from firmware.meter import echonet
from firmware.meter.client import MeterError, MeterTimeout
from firmware.meter.drmeter import MeterDataError
from firmware.meter.node import NodeResponder
from tools.meter_inspect import InspectingClient

METER = ("192.0.2.10", 3610)  # never touches a network: the endpoint is in memory
OTHER = ("192.0.2.99", 3610)


class FakeEndpoint:
    """In-memory UDP endpoint: sendto() hands requests to `meter(frame, addr)`, which may call
    deliver() to queue datagrams for recvfrom()."""

    def __init__(self):
        self.sent = []
        self.inbox = []
        self.event = asyncio.Event()
        self.meter = None

    async def recv(self):
        while not self.inbox:
            self.event.clear()
            await self.event.wait()
        return self.inbox.pop(0)

    def deliver(self, data, addr=METER):
        self.inbox.append((bytes(data), addr))
        self.event.set()

    def sendto(self, data, addr):
        data = bytes(data)
        self.sent.append((data, addr))
        if self.meter:
            self.meter(echonet.decode(data), addr)
        return len(data)

    def close(self):
        pass


def reply(req, esv, props, seoj=None, tid=None):
    buf = bytearray(512)
    n = echonet.encode_into(buf, req.tid if tid is None else tid,
                            req.deoj if seoj is None else seoj, req.seoj, esv, props)
    return bytes(buf[:n])


def stamp(y, mo, d, hh, mm, ss, value):
    return struct.pack(">HBBBBBI", y, mo, d, hh, mm, ss, value)


def u32(v):
    return struct.pack(">I", v)


DR_TABLE = {0x80: b"\x30", 0x83: b"\xfe" + bytes(16), 0xD0: b"\x02\x7e\x00",
            0xD1: b"\x02\x00\x00\x00\x00\x02\x01", 0xD3: b"\x00\x2d", 0xD4: b"\x01",
            0xD6: b"\xfe" + bytes(16)}


class TableMeter:
    """A meter object behind FakeEndpoint answering Get/SetC from `table` (values: bytes or a
    callable returning bytes/None). 0x9F lists the table unless `getmap` is given. Knobs: cap
    (answer only the first k EPCs), drop_over (drop Gets of more than k EPCs), poison (drop Gets
    containing any of these EPCs), silent; history days via hist(day, epc) -> bytes."""

    def __init__(self, ep, table, eoj=0x028E01, getmap=None, day_epc=0xD5, day_len=2):
        self.ep = ep
        self.table = dict(table)
        self.eoj = eoj
        self.getmap = getmap
        self.cap = None
        self.drop_over = None
        self.poison = set()
        self.silent = False
        self.day_epc = day_epc
        self.day_len = day_len
        self.day = None
        self.hijack = 0  # the next N accepted day SetCs are overwritten by "another controller"
        self.refuse_day = False
        self.gets = []
        ep.meter = self

    def value(self, e):
        if e == 0x9F:
            m = self.getmap if self.getmap is not None else list(self.table) + [0x9F]
            return echonet.encode_propmap(m)
        v = self.table.get(e)
        return v() if callable(v) else v

    def __call__(self, f, addr):
        if self.silent or f.deoj != self.eoj:
            return
        if f.esv == 0x62:
            epcs = f.epcs()
            self.gets.append(epcs)
            if self.drop_over is not None and len(epcs) > self.drop_over:
                return
            if self.poison & set(epcs):
                return
            props = []
            ok = True
            for e in epcs:
                v = self.value(e)
                ok = ok and v is not None
                props.append((e, v or b""))
            if self.cap is not None:
                props = props[:self.cap]
            self.ep.deliver(reply(f, 0x72 if ok else 0x52, props))
        elif f.esv == 0x61:
            e, edt = f.props[0]
            ok = e == self.day_epc and len(edt) == self.day_len and not self.refuse_day
            if ok:
                self.day = int.from_bytes(bytes(edt), "big")
                if self.hijack:
                    self.hijack -= 1
                    self.day += 1
            self.ep.deliver(reply(f, 0x71 if ok else 0x51, [(e, b"" if ok else bytes(edt))]))


def with_client(test, cfg=None, first_tid=100):
    """Run coroutine test(client, endpoint) with the client's receive task running."""
    conf = {"timeout_ms": 60, "retries": 2} if cfg is None else cfg

    async def main():
        ep = FakeEndpoint()
        c = InspectingClient(ep, METER, conf, NodeResponder(), first_tid=first_tid)
        task = asyncio.create_task(c.run())
        try:
            return await test(c, ep)
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    return asyncio.run(main())


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_get_res(self):
        async def t(c, ep):
            ep.meter = lambda f, a: ep.deliver(reply(f, 0x72, [(0xD4, b"\x02")]))
            self.assertEqual(await c.get((0xD4,)), {0xD4: b"\x02"})
            req = echonet.decode(ep.sent[0][0])
            self.assertEqual((req.seoj, req.deoj, req.esv, req.tid), (0x05FF01, 0x028E01, 0x62,
                                                                     101))
            self.assertEqual(ep.sent[0][1], METER)
        with_client(t)

    def test_read_unit_starts_with_the_property_map(self):
        async def t(c, ep):
            table = dict(DR_TABLE)
            table[0xD4] = b"\x02"
            m = TableMeter(ep, table)
            self.assertEqual(await c.read_unit(), 0x02)
            self.assertEqual(m.gets[0], [0x9F])
            self.assertEqual(sorted(m.gets[1]), [0x83, 0xD0, 0xD1, 0xD4, 0xD6])
            self.assertEqual(len(m.gets), 2)
            self.assertEqual(await c.read_unit(), 0x02)  # later calls re-read the unit only
            self.assertEqual(m.gets[2], [0xD4])
        with_client(t)

    def test_epcs_missing_from_the_map_are_not_asked(self):
        async def t(c, ep):
            table = dict(DR_TABLE)
            table[0xE6] = stamp(2024, 10, 15, 10, 30, 0, 100000)
            m = TableMeter(ep, table)
            b, fwd, rev = await c.read_fixed_time()
            self.assertEqual((fwd, rev), (100000, None))
            self.assertTrue(all(0xE7 not in g for g in m.gets))
        with_client(t)

    def test_get_sna_pdc0_and_omitted(self):
        async def t(c, ep):
            ep.meter = lambda f, a: ep.deliver(reply(f, 0x52, [(0xE0, b"\x00\x00\x00\x05"),
                                                               (0xE2, b"")]))
            got = await c.get((0xE0, 0xE2, 0xE6))
            self.assertEqual(got, {0xE0: b"\x00\x00\x00\x05", 0xE2: None, 0xE6: None})
            self.assertEqual(c.stats["sna"], 1)
        with_client(t)

    def test_sna_for_unit_raises(self):
        async def t(c, ep):
            table = dict(DR_TABLE)
            table[0xD4] = None  # listed in 0x9F, answered with Get_SNA
            TableMeter(ep, table)
            with self.assertRaises(MeterError):
                await c.read_unit()
            with self.assertRaises(MeterError):  # and no value without a unit
                await c.read_fixed_time()
            table.pop(0xD4)
            m = TableMeter(ep, table)  # not in the map at all: not even asked
            c.invalidate("test")
            with self.assertRaises(MeterError):
                await c.read_unit()
            self.assertTrue(all(0xD4 not in g for g in m.gets))
        with_client(t)

    def test_unknown_unit_code_is_an_error(self):
        async def t(c, ep):
            table = dict(DR_TABLE)
            table[0xD4] = b"\x05"
            TableMeter(ep, table)
            with self.assertRaises(MeterDataError):
                await c.read_unit()
        with_client(t)

    def test_timeout_then_retry_with_fresh_tid(self):
        async def t(c, ep):
            calls = []

            def meter(f, a):
                calls.append(f.tid)
                if len(calls) == 2:
                    ep.deliver(reply(f, 0x72, [(0xD4, b"\x01")]))
            ep.meter = meter
            self.assertEqual(await c.get((0xD4,)), {0xD4: b"\x01"})
            self.assertEqual(calls, [101, 102])
            self.assertEqual(c.stats["retries"], 1)
        with_client(t)

    def test_gives_up_after_retries(self):
        async def t(c, ep):
            with self.assertRaises(MeterTimeout):
                await c.get((0xE6,))
            tids = [echonet.decode(d).tid for d, _ in ep.sent]
            self.assertEqual(tids, [101, 102, 103])
            self.assertEqual(c.stats["timeouts"], 1)
            # the client keeps working afterwards
            TableMeter(ep, DR_TABLE)
            self.assertEqual(await c.read_unit(), 1)
        with_client(t)

    def test_timeout_configurable_and_bounded(self):
        async def t(c, ep):
            return c.timeout_ms
        self.assertEqual(with_client(t, {"timeout_ms": 20000}), 20000)
        self.assertEqual(with_client(t, {"timeout_ms": 60000}), 20000)
        self.assertEqual(with_client(t, {}), 5000)
        self.assertTrue(any("clamped" in x for x in self.lines))

    def test_tid_wraps(self):
        async def t(c, ep):
            ep.meter = lambda f, a: ep.deliver(reply(f, 0x72, [(0x80, b"\x30")]))
            await c.get((0x80,))
            await c.get((0x80,))
            self.assertEqual([echonet.decode(d).tid for d, _ in ep.sent], [0xFFFF, 0])
        with_client(t, first_tid=0xFFFE)

    def test_late_reply_to_old_tid_ignored(self):
        async def t(c, ep):
            reqs = []

            def meter(f, a):
                reqs.append(f)
                if len(reqs) == 2:
                    # the first attempt's answer arrives late, then the right one
                    ep.deliver(reply(reqs[0], 0x72, [(0xD4, b"\x0a")]))
                    ep.deliver(reply(f, 0x72, [(0xD4, b"\x01")]))
            ep.meter = meter
            self.assertEqual(await c.get((0xD4,)), {0xD4: b"\x01"})
            self.assertEqual(c.stats["stale"], 1)
        with_client(t)

    def test_wrong_source_ignored(self):
        async def t(c, ep):
            def meter(f, a):
                ep.deliver(reply(f, 0x72, [(0xD4, b"\x0a")]), OTHER)  # wrong IP
                ep.deliver(reply(f, 0x72, [(0xD4, b"\x0b")], seoj=0x028E02))  # wrong object
                ep.deliver(reply(f, 0x71, [(0xD4, b"")]))  # wrong service
                ep.deliver(reply(f, 0x72, [(0xD4, b"\x01")]))
            ep.meter = meter
            self.assertEqual(await c.get((0xD4,)), {0xD4: b"\x01"})
            self.assertEqual(c.stats["foreign"], 3)
        with_client(t)

    def test_duplicate_reply_harmless(self):
        async def t(c, ep):
            def meter(f, a):
                for _ in range(3):
                    ep.deliver(reply(f, 0x72, [(0xD4, b"\x01")]))
            ep.meter = meter
            await c.get((0xD4,))
            await c.get((0xD4,))
            self.assertEqual(c.stats["replies"], 2)
            self.assertEqual(len(ep.sent), 2)
        with_client(t)

    def _fixed(self, ep, e6, e7):
        table = dict(DR_TABLE)
        table[0xE6] = e6
        table[0xE7] = e7
        return TableMeter(ep, table)

    def test_fixed_time(self):
        async def t(c, ep):
            self._fixed(ep, stamp(2024, 10, 15, 10, 30, 0, 100000),
                        stamp(2024, 10, 15, 10, 30, 0, 0xFFFFFFFE))
            b, fwd, rev = await c.read_fixed_time()
            self.assertEqual(b, timeutil.t2k_from_fields(2024, 10, 15, 1, 30, 0))
            self.assertEqual((fwd, rev), (100000, None))
        with_client(t)

    def test_fixed_time_off_boundary_rejected_and_reported(self):
        async def t(c, ep):
            self._fixed(ep, stamp(2024, 10, 15, 10, 30, 5, 100000),
                        stamp(2024, 10, 15, 10, 30, 5, 10))
            with self.assertRaises(MeterDataError):
                await c.read_fixed_time()
            self.assertTrue(any("boundary" in line for line in self.lines))
        with_client(t)

    def test_fixed_time_stamps_must_agree(self):
        async def t(c, ep):
            self._fixed(ep, stamp(2024, 10, 15, 10, 30, 0, 100000),
                        stamp(2024, 10, 15, 10, 0, 0, 10))
            with self.assertRaises(MeterError):
                await c.read_fixed_time()
        with_client(t)

    def test_fixed_time_beyond_nine_digits_rejected(self):
        async def t(c, ep):
            self._fixed(ep, stamp(2024, 10, 15, 10, 30, 0, 1000000000),
                        stamp(2024, 10, 15, 10, 30, 0, 1))
            with self.assertRaises(MeterDataError):
                await c.read_fixed_time()
        with_client(t)

    def test_fixed_time_one_direction_missing(self):
        async def t(c, ep):
            m = self._fixed(ep, stamp(2024, 10, 15, 10, 30, 0, 7), None)
            _, fwd, rev = await c.read_fixed_time()
            self.assertEqual((fwd, rev), (7, None))
            m.table[0xE6] = None
            with self.assertRaises(MeterError):
                await c.read_fixed_time()
        with_client(t)

    def _history_meter(self, ep, echo_day=None):
        table = dict(DR_TABLE)
        m = TableMeter(ep, table)

        def hist(base):
            def edt():
                vals = [base + i for i in range(47)] + [0xFFFFFFFE]
                return struct.pack(">H48I", m.day if echo_day is None else echo_day, *vals)
            return edt
        table[0xE1] = hist(1000)
        table[0xE3] = hist(50)
        m.table = table
        return m

    def test_history(self):
        async def t(c, ep):
            self._history_meter(ep)
            await c.read_unit()
            n0 = len(ep.sent)
            fwd, rev = await c.read_history(3)
            self.assertEqual(fwd[:2], [1000, 1001])
            self.assertEqual(rev[46], 96)
            self.assertIsNone(fwd[47])
            setc = echonet.decode(ep.sent[n0][0])
            self.assertEqual((setc.esv, bytes(setc.edt(0xD5))), (0x61, b"\x00\x03"))
            self.assertEqual(echonet.decode(ep.sent[n0 + 1][0]).epcs(), [0xE1, 0xE3])
        with_client(t)

    def test_history_echo_mismatch(self):
        async def t(c, ep):
            self._history_meter(ep, echo_day=4)
            with self.assertRaises(MeterError) as cm:
                await c.read_history(3)
            self.assertIn("echoes day 4", str(cm.exception))
            self.assertEqual(c.stats["day_races"], 4)  # 1 + history_retries (3)
        with_client(t)

    def test_history_race_retried(self):
        async def t(c, ep):
            m = self._history_meter(ep)
            m.hijack = 2  # another controller moves the selector twice, then leaves it alone
            fwd, _ = await c.read_history(3)
            self.assertEqual(fwd[0], 1000)
            self.assertEqual(c.stats["day_races"], 2)
            self.assertEqual(m.day, 3)
        with_client(t)

    def test_history_day_refused(self):
        async def t(c, ep):
            m = self._history_meter(ep)
            m.refuse_day = True
            await c.read_unit()
            n0 = len(ep.sent)
            with self.assertRaises(MeterError):
                await c.read_history(3)
            self.assertEqual(len(ep.sent), n0 + 1)  # no Get after a refused SetC
        with_client(t)

    def test_identity_and_clock(self):
        async def t(c, ep):
            table = {0x8A: b"\x00\x00\x77", 0x83: b"\xfe" + bytes(16), 0xD3: b"\x00\x2d",
                     0xD4: b"\x01", 0xD0: b"\x02\x7e\x00", 0x98: b"\x07\xe9\x04\x01",
                     0xDA: b"\x00\x05\x09", 0xDB: b"\x01"}
            TableMeter(ep, table)
            ident = await c.read_identity()
            self.assertEqual(ident["maker"], 0x77)
            self.assertEqual(ident["retention"], 45)
            self.assertEqual(ident["unit"], 1)
            self.assertIsNone(ident["device_id"])
            t2k, sync = await c.read_clock()
            self.assertEqual(t2k, timeutil.t2k_from_fields(2025, 3, 31, 15, 5, 9))
            self.assertEqual(sync, 1)
            self.assertEqual(await c.read_retention(), 45)
        with_client(t)


class NodeTest(unittest.TestCase):
    """The terminal as an ECHONET Lite node: answers to requests from anyone."""

    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def exchange(self, frame_hex_props, deoj=0x0EF001, esv=0x62, src=OTHER):
        async def t(c, ep):
            buf = bytearray(128)
            n = echonet.encode_into(buf, 0x1234, 0x05FF01, deoj, esv, frame_hex_props)
            ep.deliver(buf[:n], src)
            for _ in range(20):
                await asyncio.sleep(0)
            return ep.sent, c.stats
        return with_client(t)

    def test_node_profile_get(self):
        sent, stats = self.exchange([(e, None) for e in (0x80, 0x82, 0x83, 0x8A, 0x9D, 0x9E,
                                                         0x9F, 0xD3, 0xD4, 0xD6, 0xD7)])
        self.assertEqual(len(sent), 1)
        data, addr = sent[0]
        self.assertEqual(addr, OTHER)
        f = echonet.decode(data)
        self.assertEqual((f.tid, f.seoj, f.deoj, f.esv), (0x1234, 0x0EF001, 0x05FF01, 0x72))
        self.assertEqual(bytes(f.edt(0x80)), b"\x30")
        self.assertEqual(bytes(f.edt(0x82)), b"\x01\x0e\x01\x00")
        self.assertEqual(len(f.edt(0x83)), 17)
        self.assertEqual(f.edt(0x83)[0], 0xFE)
        self.assertEqual(bytes(f.edt(0xD3)), b"\x00\x00\x01")
        self.assertEqual(bytes(f.edt(0xD4)), b"\x00\x02")
        self.assertEqual(bytes(f.edt(0xD6)), b"\x01\x05\xff\x01")
        self.assertEqual(bytes(f.edt(0xD7)), b"\x01\x05\xff")
        self.assertEqual(echonet.decode_propmap(f.edt(0x9D)), [0x80, 0xD5])
        self.assertEqual(echonet.decode_propmap(f.edt(0x9E)), [])
        self.assertIn(0xD6, echonet.decode_propmap(f.edt(0x9F)))
        self.assertEqual(stats["answered"], 1)

    def test_multicast_style_instance_zero(self):
        sent, _ = self.exchange([(0xD6, None)], deoj=0x0EF000)
        f = echonet.decode(sent[0][0])
        self.assertEqual((f.seoj, f.esv, bytes(f.edt(0xD6))), (0x0EF001, 0x72,
                                                                b"\x01\x05\xff\x01"))

    def test_unknown_epc_get_sna(self):
        sent, _ = self.exchange([(0x80, None), (0xE0, None)])
        f = echonet.decode(sent[0][0])
        self.assertEqual(f.esv, 0x52)
        self.assertEqual([(e, len(d)) for e, d in f.props], [(0x80, 1), (0xE0, 0)])

    def test_controller_get(self):
        sent, _ = self.exchange([(0x80, None), (0x8A, None), (0x9F, None)], deoj=0x05FF01)
        f = echonet.decode(sent[0][0])
        self.assertEqual((f.seoj, f.esv), (0x05FF01, 0x72))
        self.assertEqual(bytes(f.edt(0x8A)), b"\xff\xff\xff")

    def test_setc_and_seti_refused(self):
        sent, _ = self.exchange([(0x80, b"\x31")], esv=0x61)
        f = echonet.decode(sent[0][0])
        self.assertEqual((f.esv, bytes(f.edt(0x80))), (0x51, b"\x31"))
        sent, _ = self.exchange([(0x80, b"\x31")], esv=0x60, deoj=0x05FF01)
        self.assertEqual(echonet.decode(sent[0][0]).esv, 0x50)

    def test_infc_acknowledged(self):
        sent, _ = self.exchange([(0x80, b"\x30")], esv=0x74, deoj=0x05FF01, src=METER)
        f = echonet.decode(sent[0][0])
        self.assertEqual((f.esv, f.props[0][0], len(f.props[0][1])), (0x7A, 0x80, 0))

    def test_other_objects_get_no_answer(self):
        sent, stats = self.exchange([(0x80, None)], deoj=0x013001)
        self.assertEqual(sent, [])
        self.assertEqual(stats["dropped"], 1)

    def test_malformed_logged_and_survived(self):
        async def t(c, ep):
            for junk in (b"", b"\x10\x81", b"\x10\x82" + bytes(12), b"\xff" * 40):
                ep.deliver(junk, OTHER)
            ep.meter = lambda f, a: ep.deliver(reply(f, 0x72, [(0xD4, b"\x01")]))
            self.assertEqual(await c.read_unit(), 1)
            return c.stats
        stats = with_client(t)
        # The empty datagram is never parsed: receive() naps on it (a dead ESP32 socket reads
        # empty for ever).
        self.assertEqual(stats["malformed"], 3)
        warn = [line for line in self.lines if "malformed" in line]
        self.assertEqual(len(warn), 3)
        self.assertIn("EHD2 0x82", warn[1])

    def test_malformed_flood_log_is_bounded(self):
        async def t(c, ep):
            for _ in range(200):
                ep.deliver(b"\x00", OTHER)
            for _ in range(50):
                await asyncio.sleep(0)
            return c.stats
        stats = with_client(t)
        self.assertEqual(stats["malformed"], 200)
        self.assertLessEqual(len([x for x in self.lines if "malformed" in x]), 6)
