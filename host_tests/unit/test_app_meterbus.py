# MeterBus receive paths on real loopback sockets, on both runtimes: the meter's replies arrive
# through its own connected socket; when its address changes the socket is reopened for the new
# one; datagrams from other sources go to the shared endpoint and its dispatch.
import asyncio
import socket
import unittest

from loopback import bound, sender

from firmware import log
from firmware.app.meters import MeterBus
from firmware.meter import echonet

US = "127.0.0.71"
METER_A = "127.0.0.72"
METER_B = "127.0.0.73"
OTHER = "127.0.0.74"


class _Client:
    def __init__(self, ip, port):
        self.addr = (ip, port)
        self.got = []

    def handle(self, buf, n, addr):
        self.got.append((bytes(buf[:n]), addr))

    def handle_joined(self, buf, n, addr):  # as MeterClient does
        echonet.each_frame(buf, n, self.handle, addr)


class _Channel:
    def __init__(self, client):
        self.index = 0
        self.client = client


class MeterBusReceiveTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.ep, self.port = bound(US, 43000)
        self.client = _Client(METER_A, self.port)
        self.bus = MeterBus(self.ep, [_Channel(self.client)])
        self.bus.peer_check_ms = 50  # look at the addresses often (60 s on the device)
        self.to_us = socket.getaddrinfo(US, self.port)[0][-1]
        self.socks = [sender(ip, self.port) for ip in (METER_A, METER_B, OTHER)]

    def tearDown(self):
        for s in self.socks:
            s.close()
        self.ep.close()
        log.set_sink(None)

    def _run(self, script):
        async def main():
            task = asyncio.create_task(self.bus.run())
            try:
                await script()
            finally:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

        asyncio.run(main())

    async def _until(self, pred, ms=2000):
        for _ in range(ms // 10):
            if pred():
                return True
            await asyncio.sleep(0.01)
        return pred()

    def test_meter_reply_through_its_own_socket_then_a_new_address(self):
        a, b, other = self.socks

        async def script():
            self.assertTrue(await self._until(
                lambda: any("own socket for %s" % METER_A in x for x in self.lines)))
            a.sendto(b"from A", self.to_us)
            self.assertTrue(await self._until(lambda: len(self.client.got) == 1))
            self.assertEqual(self.client.got[0], (b"from A", (METER_A, self.port)))
            # discovery moves the meter: after the next address check its socket follows
            self.client.addr = (METER_B, self.port)
            self.assertTrue(await self._until(
                lambda: any("own socket for %s" % METER_B in x for x in self.lines)))
            b.sendto(b"from B", self.to_us)
            self.assertTrue(await self._until(lambda: len(self.client.got) == 2))
            self.assertEqual(self.client.got[1], (b"from B", (METER_B, self.port)))
            # a stranger reaches the shared endpoint (dispatched to channel 0's client)
            other.sendto(b"stranger", self.to_us)
            self.assertTrue(await self._until(lambda: len(self.client.got) == 3))
            self.assertEqual(self.client.got[2], (b"stranger", (OTHER, self.port)))

        self._run(script)
        self.assertEqual([x for x in self.lines if "ERROR" in x], [])


FRAME = bytes.fromhex("1081000102 8E01 05FF01 72 01 E7 04 00000001".replace(" ", ""))


def frame(tid):
    b = bytearray(FRAME)
    b[3] = tid
    return bytes(b)


class MeterBusQueuedTest(MeterBusReceiveTest):
    def test_several_replies_queued_are_handled_one_by_one(self):
        # MicroPython's readinto joins queued datagrams into one read: they must still reach
        # the client one frame at a time
        a = self.socks[0]

        async def script():
            self.assertTrue(await self._until(
                lambda: any("own socket for %s" % METER_A in x for x in self.lines)))
            self.bus.peer_check_ms = 60000
            await asyncio.sleep(0.05)  # the task waits on the socket
            for tid in (1, 2, 3):
                a.sendto(frame(tid), self.to_us)
            self.assertTrue(await self._until(lambda: len(self.client.got) >= 3))
            await asyncio.sleep(0.05)

        self._run(script)
        self.assertEqual([g[0] for g in self.client.got], [frame(1), frame(2), frame(3)])
        self.assertTrue(all(g[1] == (METER_A, self.port) for g in self.client.got))

    def test_empty_datagram_reopens_the_socket_and_never_spins(self):
        a = self.socks[0]

        async def script():
            self.assertTrue(await self._until(
                lambda: any("own socket for %s" % METER_A in x for x in self.lines)))
            a.sendto(b"", self.to_us)
            self.assertTrue(await self._until(lambda: any("reads nothing" in x
                                                          for x in self.lines)))
            self.assertTrue(await self._until(
                lambda: sum("own socket for %s" % METER_A in x for x in self.lines) == 2, 4000))
            a.sendto(frame(7), self.to_us)
            self.assertTrue(await self._until(lambda: len(self.client.got) == 1))

        self._run(script)
        self.assertEqual(self.client.got[0][0], frame(7))


class PeerBindAddressTest(unittest.TestCase):
    """A meter's own socket is bound to our unicast address, never to 0.0.0.0 (lwIP hands every
    multicast datagram to each socket bound to the wildcard address, connected or not)."""

    class _Ep:
        def __init__(self, ip):
            self.local = (ip, 3610)

    class _Disc:
        on_event = None

        def __init__(self, ip):
            self.own_ip = ip

    def test_unicast_kept_wildcard_replaced_unknown_waits(self):
        bus = MeterBus(self._Ep("127.0.0.71"), [], None)
        self.assertEqual(bus._peer_bind_ip(), "127.0.0.71")
        bus = MeterBus(self._Ep("0.0.0.0"), [], self._Disc("192.0.2.10"))
        self.assertEqual(bus._peer_bind_ip(), "192.0.2.10")
        bus = MeterBus(self._Ep("0.0.0.0"), [], self._Disc(None))
        self.assertEqual(bus._peer_bind_ip(), "0.0.0.0")  # no own socket until we have one
