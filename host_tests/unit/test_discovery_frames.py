import binascii
import unittest

from rng import Rng

from firmware.hal import udp
from firmware.meter import discovery, echonet
from firmware.meter.discovery import DiscoveryError
from firmware.meter.echonet import EchonetError


def h(text):
    return binascii.unhexlify(text.replace(" ", ""))


# Golden frames: /work/shared/reference/echonet-lite.md §1.5 (TID chosen here).
ANNOUNCE = h("10 81 12 34 0E F0 01 0E F0 01 73 01 D5 04 01 05 FF 01")
SEARCH = h("10 81 12 34 05 FF 01 0E F0 01 62 01 D6 00")
INF_REQ = h("10 81 12 34 05 FF 01 0E F0 01 63 01 D5 00")
SEARCH_REPLY = h("10 81 12 34 0E F0 01 05 FF 01 72 01 D6 04 01 02 8E 01")
TWO_METERS = h("10 81 00 07 0E F0 01 05 FF 01 72 01 D6 07 02 02 8E 01 02 8E 02")


class BuildTest(unittest.TestCase):
    def setUp(self):
        self.buf = bytearray(32)

    def test_announce(self):
        n = discovery.build_announce(self.buf, 0x1234)
        self.assertEqual(bytes(self.buf[:n]), ANNOUNCE)

    def test_search(self):
        n = discovery.build_search(self.buf, 0x1234)
        self.assertEqual(bytes(self.buf[:n]), SEARCH)

    def test_inf_req(self):
        n = discovery.build_inf_req(self.buf, 0x1234)
        self.assertEqual(bytes(self.buf[:n]), INF_REQ)

    def test_announce_several_instances(self):
        n = discovery.build_announce(self.buf, 1, (0x05FF01, 0x05FF02))
        f = echonet.decode(self.buf, n)
        self.assertEqual(bytes(f.edt(0xD5)), h("02 05 FF 01 05 FF 02"))

    def test_instance_list_bounds(self):
        with self.assertRaises(DiscoveryError):
            discovery.encode_instance_list(())
        with self.assertRaises(DiscoveryError):
            discovery.encode_instance_list([0x05FF01] * 85)
        self.assertEqual(len(discovery.encode_instance_list([0x05FF01] * 84)), 253)


class ParseTest(unittest.TestCase):
    def test_reply_golden(self):
        f = echonet.decode(SEARCH_REPLY)
        self.assertEqual(discovery.instance_list_of(f), (0xD6, [0x028E01]))

    def test_two_instances(self):
        f = echonet.decode(TWO_METERS)
        self.assertEqual(discovery.instance_list_of(f), (0xD6, [0x028E01, 0x028E02]))

    def test_announce_is_inf_list(self):
        self.assertEqual(discovery.instance_list_of(echonet.decode(ANNOUNCE)), (0xD5, [0x05FF01]))

    def test_not_discovery(self):
        for frame in (SEARCH, INF_REQ,
                      h("10 81 00 2A 02 8E 01 05 FF 01 72 01 E0 04 00 00 00 01"),
                      h("10 81 00 2A 0E F0 01 05 FF 01 72 01 8A 03 FF FF FF")):
            self.assertIsNone(discovery.instance_list_of(echonet.decode(frame)))

    def test_sna_without_data(self):
        f = echonet.decode(h("10 81 00 01 0E F0 01 05 FF 01 52 01 D6 00"))
        self.assertEqual(discovery.instance_list_of(f), (0xD6, None))

    def test_malformed_lists(self):
        for edt in (h("02 02 8E 01"), h("01 02 8E"), h("01 02 8E 01 00"), h("55") + bytes(255),
                    h("00 01")):
            with self.subTest(edt=edt):
                with self.assertRaises(EchonetError):
                    echonet.parse_instance_list(edt)
        with self.assertRaises(EchonetError):
            echonet.parse_instance_list(b"")
        self.assertEqual(echonet.parse_instance_list(b"\x00"), [])

    def test_fuzz_parser(self):
        rng = Rng(4)
        ok = bad = 0
        for _ in range(3000):
            n = rng.below(41)
            edt = bytes(rng.below(256) for _ in range(n))
            if n and rng.below(2):
                edt = bytes(((n - 1) // 3,)) + edt[1:]
            try:
                eojs = echonet.parse_instance_list(edt)
            except EchonetError:
                bad += 1
                continue
            ok += 1
            self.assertEqual(len(edt), 1 + 3 * len(eojs))
            if eojs:
                self.assertEqual(discovery.encode_instance_list(eojs), edt)
        self.assertGreater(ok, 100)
        self.assertGreater(bad, 100)


class MreqTest(unittest.TestCase):
    def test_mreq_bytes(self):
        self.assertEqual(udp.mreq("224.0.23.0", "10.99.0.1"), h("E0 00 17 00 0A 63 00 01"))
        self.assertEqual(udp.mreq("224.0.23.0", None), h("E0 00 17 00 00 00 00 00"))

    def test_bad_addresses(self):
        for g, i in (("10.0.0.1", "0.0.0.0"), ("224.0.23", "0.0.0.0"),
                     ("224.0.23.0", "1.2.3.256"), ("224.0.23.0", "a.b.c.d"),
                     ("224.0.23.0", "1.2.3.4.5")):
            with self.subTest(g=g, i=i):
                with self.assertRaises(ValueError):
                    udp.mreq(g, i)


class FakeSock:
    def __init__(self, busy=False):
        self.opts = []
        self.busy = busy

    def setsockopt(self, level, opt, value):
        if self.busy and opt == 35:
            raise OSError(98)
        self.opts.append((level, opt, value))


class SockEndpoint(udp.UdpEndpoint):
    """The endpoint's multicast methods over a fake socket (no network in unit tests)."""

    def __init__(self, sock):
        self.sock = sock
        self.groups = {}


class EndpointMulticastTest(unittest.TestCase):
    def ep(self, sock):
        return SockEndpoint(sock)

    def test_join_sets_membership_interface_and_no_loop(self):
        s = FakeSock()
        e = self.ep(s)
        e.join_multicast("224.0.23.0", "10.99.0.1")
        self.assertEqual(s.opts[0], (0, 35, h("E0 00 17 00 0A 63 00 01")))
        self.assertIn((0, 32, h("0A 63 00 01")), s.opts)
        self.assertIn((0, 34, 0), s.opts)
        self.assertEqual(e.groups, {"224.0.23.0": "10.99.0.1"})

    def test_rejoin_drops_then_adds(self):
        s = FakeSock()
        e = self.ep(s)
        e.join_multicast("224.0.23.0", "10.99.0.1")
        s.opts.clear()
        self.assertEqual(e.rejoin("10.99.0.7"), 1)
        self.assertEqual(s.opts[0], (0, 36, h("E0 00 17 00 0A 63 00 01")))
        self.assertEqual(s.opts[1], (0, 35, h("E0 00 17 00 0A 63 00 07")))
        self.assertEqual(e.groups, {"224.0.23.0": "10.99.0.7"})

    def test_join_twice_is_not_an_error(self):
        e = self.ep(FakeSock(busy=True))
        e.join_multicast()
        self.assertEqual(e.groups, {"224.0.23.0": "0.0.0.0"})


if __name__ == "__main__":
    unittest.main()
