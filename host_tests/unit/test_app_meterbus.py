# MeterBus receive paths on real loopback sockets, on both runtimes: the meter's replies arrive
# through its own connected socket; when its address changes the socket is reopened for the new
# one; datagrams from other sources go to the shared endpoint and its dispatch.
import asyncio
import socket
import unittest

from loopback import bound, sender

from firmware import log
from firmware.app.meters import MeterBus

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
