# MeterClient learning what a real meter can take (both runtimes, in-memory endpoint): per-Get
# capacity, poison EPCs, wrap/reset detection, rediscovery, other classes, the network seams.
import asyncio
import struct
import unittest

from test_echonet_client import (
    DR_TABLE,
    METER,
    OTHER,
    FakeEndpoint,
    TableMeter,
    reply,
    stamp,
    u32,
    with_client,
)

from firmware import events, log
from firmware.meter import echonet
from firmware.meter.client import MeterClient, MeterTimeout, UnitChanged
from firmware.meter.profiles import CoefficientError
from firmware.store.record import FLAG_METER_RESET

WIDE = (0x80, 0x83, 0x8A, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD6, 0xE0, 0xE2)


def wide_table():
    t = dict(DR_TABLE)
    t.update({0x8A: b"\x00\x00\x77", 0xD2: b"\x01", 0xE0: u32(5), 0xE2: u32(6)})
    return t


class CapacityTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_meter_answering_first_k_epcs(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.cap = 3
            got = await c.read(WIDE)
            self.assertTrue(all(got[e] is not None for e in WIDE))
            self.assertEqual(c.cap, 3)
            n = len(m.gets)
            await c.read(WIDE)
            self.assertEqual([len(g) for g in m.gets[n:]], [3, 3, 3, 2])
            self.assertEqual(c.stats["timeouts"], 0)
        with_client(t)

    def test_meter_dropping_large_gets(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.drop_over = 4
            got = await c.read(WIDE)
            self.assertTrue(all(got[e] is not None for e in WIDE))
            self.assertLessEqual(c.cap, 4)
            self.assertEqual(c.stats["poisoned"], 0)
            n = len(m.gets)
            t0 = c.stats["timeouts"]
            got = await c.read(WIDE)
            self.assertTrue(all(got[e] is not None for e in WIDE))
            self.assertEqual(c.stats["timeouts"], t0)  # converged: no more timeouts
            self.assertTrue(all(len(g) <= 4 for g in m.gets[n:]))
        with_client(t)

    def test_no_probe_outside_the_batch(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.drop_over = 1
            got = await c.read((0x80, 0x9F))  # both probe candidates are in the batch itself
            self.assertEqual(got[0x80], b"\x30")
            self.assertIsNotNone(got[0x9F])
            self.assertEqual((c.cap, c.stats["poisoned"]), (1, 0))
        with_client(t)

    def test_poison_epc_isolated_rest_read(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.poison = {0xD2}
            got = await c.read(WIDE)
            self.assertIsNone(got[0xD2])
            self.assertTrue(all(got[e] is not None for e in WIDE if e != 0xD2))
            self.assertTrue(c.is_poisoned(0xD2))
            self.assertEqual(c.stats["poisoned"], 1)
            self.assertEqual(c.cap, 16)  # the poison did not shrink the batch size
            n = len(m.gets)
            t0 = c.stats["timeouts"]
            await c.read(WIDE)
            self.assertEqual(len(m.gets), n + 1)
            self.assertNotIn(0xD2, m.gets[-1])
            self.assertEqual(c.stats["timeouts"], t0)
            self.assertTrue(any("0xD2" in x and "drops every Get" in x for x in self.lines))
        with_client(t)

    def test_poison_and_capacity_together(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.poison = {0xE0}
            m.drop_over = 3
            got = await c.read(WIDE)
            self.assertIsNone(got[0xE0])
            self.assertTrue(all(got[e] is not None for e in WIDE if e != 0xE0))
            self.assertEqual(c.stats["poisoned"], 1)
            self.assertLessEqual(c.cap, 3)
        with_client(t)

    def test_poison_held_then_retried(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.poison = {0xD2}
            await c.read((0xD1, 0xD2))
            self.assertTrue(c.is_poisoned(0xD2))
            m.poison = set()  # e.g. meter firmware fixed
            await asyncio.sleep(0.06)
            got = await c.read((0xD1, 0xD2))
            self.assertEqual(got[0xD2], b"\x01")
            self.assertFalse(c.is_poisoned(0xD2))
        with_client(t, {"timeout_ms": 30, "retries": 1, "poison_hold_ms": 50})

    def test_silent_meter_is_not_poisoned(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.silent = True
            with self.assertRaises(MeterTimeout):
                await c.read(WIDE)
            self.assertEqual(c.stats["poisoned"], 0)
            self.assertEqual(c.cap, 16)
            # the Get (3 attempts) + two liveness probes, 0x9F then 0x80 (3 attempts each)
            self.assertEqual(len(ep.sent), 9)
            m.silent = False
            got = await c.read(WIDE)
            self.assertTrue(all(got[e] is not None for e in WIDE))
        with_client(t)

    def test_unanswered_map_still_reads(self):
        async def t(c, ep):
            m = TableMeter(ep, wide_table())
            m.poison = {0x9F}
            self.assertEqual(await c.read_unit(), 1)
            self.assertIsNone(c.getmap)
            self.assertTrue(c.is_poisoned(0x9F))
        with_client(t)


class CounterTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def meter(self, ep, vals):
        """0x028E whose E6/E7 step through vals [(hh, mm, fwd, rev)]."""
        table = dict(DR_TABLE)
        m = TableMeter(ep, table)
        m.i = 0

        def fixed(which):
            def edt():
                hh, mm, f, r = vals[min(m.i, len(vals) - 1)]
                if which:
                    m.i += 1
                return stamp(2025, 4, 1, hh, mm, 0, r if which else f)
            return edt
        m.table[0xE6] = fixed(0)
        m.table[0xE7] = fixed(1)
        return m

    def test_wrap_at_ten_to_the_nine(self):
        async def t(c, ep):
            self.meter(ep, [(10, 0, 999999990, 5), (10, 30, 7, 6)])
            got = []
            c.event = lambda code, detail: got.append((code, detail))
            c.meter_index = 2
            await c.read_unit()
            self.assertEqual((await c.read_fixed_time())[1], 999999990)
            self.assertEqual((await c.read_fixed_time())[1], 7)
            self.assertEqual(c.stats["wraps"], 1)
            self.assertEqual(c.stats["resets"], 0)
            self.assertEqual(c.take_flags(), 0)
            self.assertTrue(any("+17" in x for x in self.lines))
            self.assertEqual(got, [(events.COUNTER_WRAP, 2)])
        with_client(t)

    def test_decrease_is_a_reset_event_and_rereads_the_meter(self):
        async def t(c, ep):
            m = self.meter(ep, [(10, 0, 5000, 5), (10, 30, 10, 6)])
            got = []
            c.event = lambda code, detail: got.append((code, detail))
            await c.read_unit()
            await c.read_fixed_time()
            n = len(m.gets)
            _, fwd, _ = await c.read_fixed_time()
            self.assertEqual(fwd, 10)  # the reading itself is genuine and returned
            self.assertEqual(c.stats["resets"], 1)
            self.assertEqual(c.take_flags(), FLAG_METER_RESET)
            self.assertEqual(c.take_flags(), 0)
            await c.read_fixed_time()
            self.assertEqual(m.gets[n + 1], [0x9F])  # map, identity, unit read again
            self.assertEqual(got, [(events.METER_RESET, 0)])  # one event for both counters
        with_client(t)

    def test_older_stamp_is_not_compared(self):
        async def t(c, ep):
            self.meter(ep, [(10, 30, 5000, 5), (10, 0, 4990, 5)])
            await c.read_fixed_time()
            await c.read_fixed_time()
            self.assertEqual(c.stats["resets"] + c.stats["wraps"], 0)
        with_client(t)


class RediscoveryTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def inf_d5(self, ep, src=METER):
        buf = bytearray(64)
        n = echonet.encode_into(buf, 1, 0x0EF001, 0x0EF001, echonet.INF,
                                [(0xD5, b"\x01\x02\x8e\x01")])
        ep.deliver(buf[:n], src)

    def test_inf_d5_rereads_unit_and_reports_a_change(self):
        async def t(c, ep):
            table = dict(DR_TABLE)
            table[0xE6] = stamp(2025, 4, 1, 10, 30, 0, 100)
            table[0xE7] = stamp(2025, 4, 1, 10, 30, 0, 5)
            m = TableMeter(ep, table)
            self.assertEqual(await c.read_unit(), 0x01)
            await c.read_fixed_time()
            m.table[0xD4] = b"\x02"  # rebooted with another unit
            self.inf_d5(ep)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            self.assertEqual(c.stats["rediscoveries"], 1)
            with self.assertRaises(UnitChanged):
                await c.read_fixed_time()
            self.assertIn([0x9F], m.gets[3:])
            self.assertEqual(await c.read_unit(), 0x02)
            self.assertEqual((await c.read_fixed_time())[1], 100)
        with_client(t)

    def test_inf_d5_from_another_node_ignored(self):
        async def t(c, ep):
            TableMeter(ep, DR_TABLE)
            await c.read_unit()
            self.inf_d5(ep, OTHER)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            self.assertEqual(c.stats["rediscoveries"], 0)
        with_client(t)

    def test_identity_change_flags_a_meter_reset(self):
        async def t(c, ep):
            table = dict(DR_TABLE)
            m = TableMeter(ep, table)
            got = []
            c.event = lambda code, detail: got.append((code, detail))
            c.meter_index = 1
            await c.read_unit()
            self.assertEqual(got, [])
            m.table[0xD6] = b"\xfe\x00\x00\x77" + b"OTHER-METER-1"
            c.cap = 2  # learned about the old meter: forgotten with it
            c.invalidate("test")
            self.assertEqual(await c.read_unit(), 1)
            self.assertEqual(c.take_flags(), FLAG_METER_RESET)
            self.assertEqual(c.cap, 16)
            # map + identity/unit; after the change: map + the same 5 EPCs in batches of 2
            self.assertEqual([len(g) for g in m.gets], [1, 5, 1, 2, 2, 1])
            self.assertTrue(any("identity changed" in x for x in self.lines))
            self.assertEqual(got, [(events.METER_REPLACED, 1)])
        with_client(t)


class IdentityGapTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)

    def tearDown(self):
        log.set_sink(None)

    def test_identity_property_unavailable_once_is_not_a_new_meter(self):
        async def t(c, ep):
            m = TableMeter(ep, DR_TABLE)
            await c.read_unit()
            saved = m.table[0xD6]
            m.table[0xD6] = None  # one Get_SNA for 0xD6
            c.invalidate("test")
            await c.read_unit()
            m.table[0xD6] = saved
            c.invalidate("test")
            await c.read_unit()
            self.assertEqual(c.take_flags(), 0)
            m.table[0xD6] = b"\xfe" + bytes(3) + b"ANOTHER-METER"
            c.invalidate("test")
            await c.read_unit()
            self.assertEqual(c.take_flags(), FLAG_METER_RESET)
        with_client(t)


class ClassTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_low_voltage_smart_meter(self):
        async def t(c, ep):
            hist = struct.pack(">H48I", 2, *([123] * 48))
            table = {0x80: b"\x30", 0x83: b"\xfe" + bytes(16), 0x8D: b"SN0000000001",
                     0xD3: u32(10), 0xD7: b"\x06", 0xE1: b"\x02",
                     0xEA: stamp(2025, 4, 1, 10, 30, 0, 999999),
                     0xEB: stamp(2025, 4, 1, 10, 30, 0, 12), 0xE2: hist, 0xE4: hist,
                     0x98: b"\x07\xe9\x04\x01", 0x97: b"\x0a\x2b"}
            m = TableMeter(ep, table, eoj=0x028801, day_epc=0xE5, day_len=1)
            self.assertEqual(await c.read_unit(), 0x01)  # 0.01 kWh x 10 = 0.1 kWh
            self.assertEqual((c.unit_code, c.coefficient, c.digits), (0x02, 10, 6))
            _, fwd, rev = await c.read_fixed_time()
            self.assertEqual((fwd, rev), (999999, 12))
            fwd, _ = await c.read_history(2)
            self.assertEqual(fwd[0], 123)
            self.assertEqual(m.day, 2)
            setc = [echonet.decode(d) for d, _ in ep.sent if echonet.decode(d).esv == 0x61]
            self.assertEqual(bytes(setc[0].edt(0xE5)), b"\x02")
            t2k, sync = await c.read_clock()
            self.assertIsNone(sync)
            self.assertEqual(await c.read_retention(), 99)  # no retention EPC: 0..99 selectable
            m.table[0xEA] = stamp(2025, 4, 1, 11, 0, 0, 1000000)  # beyond 6 digits
            with self.assertRaises(ValueError):
                await c.read_fixed_time()
        with_client(t, {"timeout_ms": 60, "retries": 2, "eoj": 0x028801})

    def test_sub_meter_epc_numbers(self):
        async def t(c, ep):
            table = {0x80: b"\x30", 0x83: b"\xfe" + bytes(16), 0xD3: u32(1), 0xD4: b"\x03",
                     0xD7: b"\x08", 0xE1: u32(777), 0xE3: u32(3),
                     0xEA: stamp(2025, 4, 1, 10, 30, 0, 777),
                     0xEB: stamp(2025, 4, 1, 10, 30, 0, 3)}
            m = TableMeter(ep, table, eoj=0x028D01, day_epc=0xE0, day_len=1)
            self.assertEqual(await c.read_unit(), 0x03)
            self.assertEqual((await c.read_fixed_time())[1:], (777, 3))
            self.assertTrue(all(0xE0 not in g for g in m.gets))  # E0 is the day selector here
        with_client(t, {"timeout_ms": 60, "retries": 2, "eoj": 0x028D01})

    def test_unrepresentable_coefficient_is_a_clear_error(self):
        async def t(c, ep):
            table = {0x80: b"\x30", 0x83: b"\xfe" + bytes(16), 0xD3: u32(3), 0xD7: b"\x06",
                     0xE1: b"\x01"}
            TableMeter(ep, table, eoj=0x028801, day_epc=0xE5, day_len=1)
            with self.assertRaises(CoefficientError):
                await c.read_unit()
        with_client(t, {"timeout_ms": 60, "retries": 2, "eoj": 0x028801})


class SeamTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)

    def tearDown(self):
        log.set_sink(None)

    def test_rate_limiter_and_listener(self):
        class Limiter:
            def __init__(self):
                self.seen = []

            def allow(self, addr):
                self.seen.append(addr)
                return addr != OTHER

        class Listener:
            def __init__(self):
                self.frames = []

            def on_frame(self, f, addr):
                self.frames.append((f.esv, addr))

        async def t(c, ep):
            c.rate_limiter = Limiter()
            c.listener = Listener()
            buf = bytearray(64)
            n = echonet.encode_get(buf, 7, 0x05FF01, 0x0EF001, (0x80,))
            ep.deliver(buf[:n], OTHER)  # limited: no answer
            n = echonet.encode_into(buf, 8, 0x0EF001, 0x05FF01, echonet.INF,
                                    [(0x80, b"\x30")])
            ep.deliver(buf[:n], METER)
            ep.meter = lambda f, a: ep.deliver(reply(f, 0x72, [(0x80, b"\x30")]))
            await c.get((0x80,))
            return c, ep

        c, ep = with_client(t)
        self.assertEqual(c.stats["limited"], 1)
        self.assertEqual(len(ep.sent), 1)  # only our Get
        self.assertEqual(c.listener.frames, [(echonet.INF, METER)])  # our reply not passed on


class EndpointUse(unittest.TestCase):
    def test_fake_endpoint_round_trip(self):
        ep = FakeEndpoint()
        ep.deliver(b"\x01", METER)
        self.assertEqual(len(ep.inbox), 1)
        self.assertIsNotNone(MeterClient(ep, METER, {}).profile)
