# hal.udp.PeerEndpoint on real loopback sockets, on both runtimes: a socket connected to the
# meter takes the meter's datagrams into a preallocated buffer; everything else still reaches the
# shared (unconnected) endpoint on the same address and port.
import asyncio
import socket
import unittest

from loopback import bound, sender

from firmware.hal.udp import PeerEndpoint, UdpEndpoint

US = "127.0.0.61"
METER = "127.0.0.62"
OTHER = "127.0.0.63"


def run(coro):
    return asyncio.run(coro)


class PeerEndpointTest(unittest.TestCase):
    def setUp(self):
        self.shared, self.port = bound(US, 41000)
        self.peer = self.shared.peer_endpoint((METER, self.port))
        self.meter = sender(METER, self.port)
        self.other = sender(OTHER, self.port)
        self.to_us = socket.getaddrinfo(US, self.port)[0][-1]

    def tearDown(self):
        for s in (self.meter, self.other):
            s.close()
        self.peer.close()
        self.shared.close()

    def test_meter_datagram_lands_in_the_peer_buffer(self):
        buf = self.peer.buf
        self.meter.sendto(b"\x10\x81meter", self.to_us)
        n = run(asyncio.wait_for(self.peer.recv_into(), 2))
        self.assertEqual(bytes(buf[:n]), b"\x10\x81meter")
        self.assertIs(self.peer.buf, buf)  # the same buffer every time
        self.assertEqual(self.peer.peer, (METER, self.port))

    def test_other_sources_still_reach_the_shared_endpoint(self):
        self.other.sendto(b"\x10\x81other", self.to_us)
        self.meter.sendto(b"\x10\x81meter", self.to_us)
        data, addr = run(asyncio.wait_for(self.shared.recv(), 2))
        self.assertEqual((bytes(data), addr), (b"\x10\x81other", (OTHER, self.port)))
        n = run(asyncio.wait_for(self.peer.recv_into(), 2))
        self.assertEqual(bytes(self.peer.buf[:n]), b"\x10\x81meter")

    def test_meter_from_another_source_port_goes_to_the_shared_endpoint(self):
        s = sender(METER, self.port + 1)
        try:
            s.sendto(b"\x10\x81side", self.to_us)
            data, addr = run(asyncio.wait_for(self.shared.recv(), 2))
            self.assertEqual((bytes(data), addr), (b"\x10\x81side", (METER, self.port + 1)))
        finally:
            s.close()

    def test_long_datagram_is_cut_to_the_buffer(self):
        self.meter.sendto(bytes(range(256)) * 4, self.to_us)
        n = run(asyncio.wait_for(self.peer.recv_into(), 2))
        self.assertEqual(n, len(self.peer.buf))


class PeerEndpointRefusedTest(unittest.TestCase):
    def test_port_held_without_reuse_refuses_a_second_socket(self):
        # e.g. a stack without SO_REUSE: the terminal then keeps using the shared endpoint
        for port in range(42000, 42200, 7):
            try:
                shared = UdpEndpoint(US, port, reuse=False)
                break
            except OSError:
                continue
        try:
            with self.assertRaises(OSError):
                PeerEndpoint(US, port, (METER, port))
        finally:
            shared.close()
