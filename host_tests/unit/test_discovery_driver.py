import binascii
import unittest

from firmware import log
from firmware.meter import discovery, echonet
from firmware.meter.discovery import EV_AMBIGUOUS, EV_BACK, EV_LOST, EV_METER, EV_REBOOT


def h(text):
    return binascii.unhexlify(text.replace(" ", ""))


class Clock:
    def __init__(self):
        self.t = 5000

    def __call__(self):
        return self.t & ((1 << 30) - 1)


class FakeEndpoint:
    def __init__(self, fail=False):
        self.sent = []
        self.groups = {}
        self.joins = 0
        self.fail = fail

    def sendto(self, data, addr):
        if self.fail:
            raise OSError(101)
        self.sent.append((bytes(data), addr))
        return len(data)

    def join_multicast(self, group, iface_ip):
        self.joins += 1
        self.groups[group] = iface_ip

    def rejoin(self, iface_ip=None):
        self.joins += 1
        return 1


def frame(seoj, esv, epc, edt, tid=0x0100, deoj=0x05FF01):
    buf = bytearray(300)
    n = echonet.encode_into(buf, tid, seoj, deoj, esv, [(epc, edt)])
    return echonet.decode(bytes(buf[:n]))


def get_res(eojs, tid=0x0100):
    return frame(0x0EF001, echonet.GET_RES, 0xD6, discovery.encode_instance_list(eojs), tid)


def inf(eojs, tid=0x0001):
    return frame(0x0EF001, echonet.INF, 0xD5, discovery.encode_instance_list(eojs), tid,
                 deoj=0x0EF001)


METER_NODE = [0x028E01]
OTHER_NODE = [0x013001]
GROUP = ("224.0.23.0", 3610)


class DriverTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.clk = Clock()
        self.ep = FakeEndpoint()

    def tearDown(self):
        log.set_sink(None)

    def disc(self, **cfg):
        base = {"own_ip": "10.99.0.1", "search_min_ms": 1000, "search_ms": 60000,
                "check_ms": 10000, "rejoin_ms": 30000}
        base.update(cfg)
        d = discovery.Discovery(self.ep, base, clock=self.clk)
        d.on_event = lambda kind, ip: self.seen.append((kind, ip))
        self.seen = []
        return d

    def sent(self, addr=None):
        return [echonet.decode(b) for b, a in self.ep.sent if addr is None or a == addr]

    def test_startup_announces_and_searches(self):
        d = self.disc()
        d.join()
        d.step()
        frames = self.sent(GROUP)
        self.assertEqual([(f.seoj, f.esv, f.epcs()) for f in frames],
                         [(0x0EF001, echonet.INF, [0xD5]), (0x05FF01, echonet.GET, [0xD6]),
                          (0x05FF01, echonet.INF_REQ, [0xD5])])
        self.assertEqual(bytes(frames[0].edt(0xD5)), h("01 05 FF 01"))
        self.assertEqual(self.ep.joins, 1)
        self.assertIsNone(d.meter_addr())

    def test_finds_meter_and_reports_it(self):
        d = self.disc()
        d.step()
        self.assertFalse(d.handle(frame(0x028E01, echonet.GET_RES, 0xE0, b"\0\0\0\1"),
                                  ("10.99.0.2", 3610)))
        self.assertTrue(d.handle(get_res(OTHER_NODE), ("10.99.0.3", 3610)))
        self.assertIsNone(d.meter_addr())
        self.assertTrue(d.handle(get_res(METER_NODE), ("10.99.0.2", 3610)))
        self.assertEqual(d.meter_addr(), ("10.99.0.2", 3610))
        self.assertEqual(self.seen, [(EV_METER, "10.99.0.2")])
        self.assertEqual(sorted(d.nodes), ["10.99.0.2", "10.99.0.3"])

    def test_own_frames_ignored(self):
        d = self.disc()
        self.assertFalse(d.handle(inf([0x05FF01]), ("10.99.0.1", 3610)))
        self.assertEqual(d.nodes, {})

    def test_search_backs_off_until_found_then_slows(self):
        d = self.disc(check_ms=10 ** 6)  # unanswered checks would speed searching up again
        times = []
        for _ in range(400):
            before = len(self.ep.sent)
            d.step()
            if any(echonet.decode(b).esv == echonet.GET and a == GROUP
                   for b, a in self.ep.sent[before:]):
                times.append(self.clk.t)
            self.clk.t += 250
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertEqual(gaps[:4], [1000, 2000, 4000, 8000])
        self.assertLessEqual(max(gaps), 60000)
        d.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        t0 = self.clk.t
        d.step()
        n0 = len(self.sent(GROUP))
        while self.clk.t - t0 < 59000:
            self.clk.t += 500
            d.step()
        # once the meter is known, the next search after the pending one waits search_ms
        self.assertLessEqual(len(self.sent(GROUP)) - n0, 1)

    def test_static_fallback_and_unicast_checks(self):
        d = self.disc(static_addr="10.99.0.2", multicast=False)
        self.assertEqual(d.meter_addr(), ("10.99.0.2", 3610))
        for _ in range(35):
            d.step()
            self.clk.t += 1000
        self.assertEqual(self.sent(GROUP), [])  # multicast off: nothing to the group
        checks = self.sent(("10.99.0.2", 3610))
        self.assertEqual(len(checks), 3)
        self.assertEqual([(f.deoj, f.esv, f.epcs()) for f in checks],
                         [(0x0EF001, echonet.GET, [0xD6])] * 3)
        # checks 1 and 2 unanswered when checks 2 and 3 went out; limit 3 not reached yet
        self.assertEqual(d.stats["misses"], 2)
        self.assertEqual(self.seen, [])
        self.clk.t += 10000
        d.step()
        self.assertEqual(self.seen, [(EV_LOST, "10.99.0.2")])
        tid = self.sent(("10.99.0.2", 3610))[-1].tid
        self.assertTrue(d.handle(get_res(METER_NODE, tid), ("10.99.0.2", 3610)))
        self.assertEqual(self.seen[-1], (EV_BACK, "10.99.0.2"))
        self.clk.t += 10000
        d.step()
        self.assertEqual(d.stats["misses"], 3)  # the answered check is not a miss

    def test_late_or_foreign_check_reply_does_not_count(self):
        d = self.disc(static_addr="10.99.0.2", multicast=False, miss_limit=1)
        d.step()
        self.clk.t += 10000
        d.step()  # first check
        self.clk.t += 10000
        d.step()  # first check missed -> lost
        self.assertEqual(self.seen, [(EV_LOST, "10.99.0.2")])
        tid = self.sent(("10.99.0.2", 3610))[-1].tid
        d.handle(get_res(METER_NODE, tid ^ 1), ("10.99.0.2", 3610))
        d.handle(get_res(METER_NODE, tid), ("10.99.0.9", 3610))
        self.assertEqual(self.seen, [(EV_LOST, "10.99.0.2")])

    def test_meter_reboot_event_once_per_storm(self):
        d = self.disc()
        d.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        self.seen.clear()
        for _ in range(5):
            d.handle(inf(METER_NODE, tid=7), ("10.99.0.2", 3610))
        self.assertEqual(self.seen, [(EV_REBOOT, "10.99.0.2")])
        self.clk.t += 10001
        d.handle(inf(METER_NODE, tid=8), ("10.99.0.2", 3610))
        self.assertEqual(self.seen[-1], (EV_REBOOT, "10.99.0.2"))
        self.assertEqual(len(self.seen), 2)

    def test_answer_to_our_inf_req_is_not_a_reboot(self):
        d = self.disc()
        d.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        self.seen.clear()
        d.search(inf_req=True)
        tid = self.sent(GROUP)[-1].tid
        d.handle(inf(METER_NODE, tid=tid), ("10.99.0.2", 3610))
        self.assertEqual(self.seen, [])
        d.handle(inf(METER_NODE, tid=tid + 1), ("10.99.0.2", 3610))
        self.assertEqual(self.seen, [(EV_REBOOT, "10.99.0.2")])

    def test_inf_from_another_node_is_no_reboot(self):
        d = self.disc()
        d.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        self.seen.clear()
        d.handle(inf(OTHER_NODE), ("10.99.0.3", 3610))
        self.assertEqual(self.seen, [])
        self.assertEqual(d.nodes["10.99.0.3"].announces, 1)

    def test_two_meter_nodes_ambiguous_unless_static_or_pinned(self):
        d = self.disc()
        d.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        d.handle(get_res(METER_NODE), ("10.99.0.5", 3610))
        self.assertEqual(d.meter_addr(), ("10.99.0.2", 3610))  # the current choice stays
        d2 = self.disc(static_addr="10.99.0.5")
        d2.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        d2.handle(get_res(METER_NODE), ("10.99.0.5", 3610))
        self.assertEqual(d2.meter_addr(), ("10.99.0.5", 3610))
        d3 = self.disc()
        d3.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        d3.set_meter(None)
        d3.nodes.clear()
        d3.handle(get_res(METER_NODE), ("10.99.0.5", 3610))
        d3.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        self.assertEqual(d3.meter_addr(), ("10.99.0.5", 3610))
        d3._chosen = None
        d3._update_choice()
        self.assertEqual(self.seen[-1], (EV_AMBIGUOUS, "10.99.0.2,10.99.0.5"))
        self.assertIsNone(d3.meter_addr())
        d3.set_meter("10.99.0.2")
        self.assertEqual(d3.meter_addr(), ("10.99.0.2", 3610))
        d3.handle(get_res(OTHER_NODE), ("10.99.0.5", 3610))
        self.assertEqual(d3.meter_addr(), ("10.99.0.2", 3610))

    def test_meter_moves_address(self):
        d = self.disc(node_ttl_ms=30000)
        d.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        self.clk.t += 31000
        d.handle(get_res(METER_NODE), ("10.99.0.7", 3610))  # DHCP gave it a new address
        d.step()
        self.assertEqual(d.meter_addr(), ("10.99.0.7", 3610))
        self.assertNotIn("10.99.0.2", d.nodes)
        self.assertEqual(self.seen[-1], (EV_METER, "10.99.0.7"))

    def test_table_bounded_meter_kept(self):
        d = self.disc(max_nodes=4)
        d.handle(get_res(METER_NODE), ("10.99.0.2", 3610))
        for i in range(30):
            self.clk.t += 10
            d.handle(get_res(OTHER_NODE), ("10.98.0.%d" % i, 3610))
        self.assertEqual(len(d.nodes), 4)
        self.assertIn("10.99.0.2", d.nodes)
        self.assertIn("10.98.0.29", d.nodes)

    def test_bad_list_logged_and_consumed(self):
        d = self.disc()
        f = frame(0x0EF001, echonet.GET_RES, 0xD6, h("03 02 8E 01"))
        for _ in range(20):
            self.assertTrue(d.handle(f, ("10.99.0.4", 3610)))
        self.assertEqual(d.stats["bad"], 20)
        self.assertEqual(len([x for x in self.lines if "bad instance list" in x]), 5)
        self.assertEqual(d.nodes, {})

    def test_send_errors_do_not_raise(self):
        self.ep.fail = True
        d = self.disc(static_addr="10.99.0.2")
        d.step()
        self.clk.t += 10000
        d.step()
        self.assertGreater(d.stats["send_errors"], 2)

    def test_link_up_rejoins_and_announces_again(self):
        d = self.disc()
        d.join()
        d.step()
        n = len(self.sent(GROUP))
        d.link_up()
        d.step()
        self.assertEqual(self.ep.joins, 2)
        after = self.sent(GROUP)[n:]
        self.assertEqual(after[0].esv, echonet.INF)

    def test_periodic_rejoin(self):
        d = self.disc()
        d.join()
        for _ in range(70):
            d.step()
            self.clk.t += 1000
        self.assertEqual(self.ep.joins, 3)  # start + every 30 s

    def test_events_bounded(self):
        d = self.disc(static_addr="10.99.0.2", multicast=False, miss_limit=1)
        for i in range(40):
            d._event(EV_METER, "x%d" % i)
        self.assertEqual(len(d.events), 16)
        self.assertEqual(d.events[-1], (EV_METER, "x39"))
        self.assertEqual(d.events[0], (EV_METER, "x24"))  # the oldest ones went


class RunTest(unittest.TestCase):
    def test_run_sends_and_wakes_on_link_up(self):
        import asyncio

        ep = FakeEndpoint()
        d = discovery.Discovery(ep, {"search_min_ms": 50, "search_ms": 200, "check_ms": 100,
                                     "static_addr": "10.99.0.2"})

        async def main():
            t = asyncio.create_task(d.run())
            await asyncio.sleep(0.3)
            n = len(ep.sent)
            d.link_up()
            await asyncio.sleep(0.02)
            t.cancel()
            return n

        lines = []
        log.set_sink(lines.append)
        try:
            n = asyncio.run(main())
        finally:
            log.set_sink(None)
        self.assertGreaterEqual(n, 5)
        self.assertEqual(echonet.decode(ep.sent[n][0]).esv, echonet.INF)
        self.assertIn(("10.99.0.2", 3610), [a for _, a in ep.sent])


if __name__ == "__main__":
    unittest.main()
