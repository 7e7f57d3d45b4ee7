# J11Link: the J11 command driver behind the contract, against a scripted in-memory module (both
# runtimes): HAN and B-route join sequences, result codes mapped to JOIN_* / TX_*, notifications
# to on_udp / on_event, errors to LinkError without credentials in them.
import asyncio
import unittest

from test_j11_session import SM_MACB, FakeUart

from firmware import log
from firmware.compat import sleep_ms
from firmware.radio import j11, link
from firmware.radio.j11_link import J11Link, build
from firmware.radio.j11_module import J11Module

RB_ID = "00112233445566778899AABBCCDDEEFF"
RB_PW = "ABCDEFGHIJKL"


class J11Uart(FakeUart):
    """FakeUart plus the B-route and re-authentication commands, with scripted results."""

    def __init__(self):
        super().__init__()
        self.results = {}  # cmd -> list of result bytes for its response (popped)
        self.pana_results = []  # 0x6028 results (popped; default 1)
        self.data = {}  # cmd -> last request data
        self.tx_scripted = []  # 0x2008 response data for the next transmits (popped)

    def handle(self, cmd, data):
        self.data[cmd] = data
        if cmd == 0x0008 and self.tx_scripted:  # whole 0x2008 responses (result, tx byte)
            self.requests.append(cmd)
            self.push(0x2008, self.tx_scripted.pop(0))
            return
        script = self.results.get(cmd)
        if script:
            self.requests.append(cmd)
            self.push(cmd | 0x2000, bytes((script.pop(0),)))
            return
        r = cmd | 0x2000
        if cmd in (0x0056, 0x002B, 0x00D2):
            self.requests.append(cmd)
            res = self.pana_results.pop(0) if self.pana_results else 1
            if res is not None:
                self.push(0x6028, bytes((res,)) + SM_MACB)
            self.push(r, b"\x01")
        elif cmd == 0x0053:
            self.requests.append(cmd)
            self.push(r, b"\x01\x0c\xbc\xde" + SM_MACB + b"\xde")
        else:
            super().handle(cmd, data)


class J11LinkTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)
        for line in self.lines:
            self.assertNotIn(RB_PW, line)
            self.assertNotIn(RB_ID, line)

    def run_link(self, body, **kw):
        uart = J11Uart()
        m = J11Module(uart, cmd_timeout_ms=200)
        kw.setdefault("pana_timeout_ms", 200)
        kw.setdefault("reset_timeout_ms", 200)
        lk = J11Link(m, **kw)
        got = []
        lk.on_event = lambda code, detail: got.append((code, detail))

        async def main():
            lk.start()
            try:
                await body(uart, lk, got)
            finally:
                lk.stop()
                await sleep_ms(1)

        asyncio.run(main())

    def test_han_join_sequence(self):
        async def body(uart, lk, got):
            await lk.reset()
            self.assertIn("J11 firmware 0x0400 version 1.2.3", await lk.version())
            r = await lk.join(7, 0x1234, SM_MACB, {"id": "", "password": "0123456789AB"})
            self.assertEqual(r, link.JOIN_OK)
            await lk.open_udp(4059)
            await lk.open_udp(4059)  # already open: not sent again
            self.assertEqual(uart.requests, [0x00D9, 0x006B, 0x005F, 0x000A, 0x002C, 0x003A,
                                             0x0005])
            self.assertEqual(uart.data[0x005F], bytes((3, 0, 7, 0)))
            self.assertEqual(uart.data[0x002C], SM_MACB + b"0123456789AB")
            # a wrong password: PANA result 2
            r = await lk.join(7, 0x1234, SM_MACB, {"id": "", "password": "nope"})
            self.assertEqual(r, link.JOIN_BAD_CREDENTIALS)
            # re-authentication names the peer
            self.assertEqual(await lk.reauth(), link.JOIN_OK)
            self.assertEqual(uart.data[0x002B], SM_MACB)
            await lk.leave()
            self.assertEqual(uart.requests[-1], 0x003B)

        self.run_link(body, mode=3)

    def test_b_route_join_sequence(self):
        async def body(uart, lk, got):
            await lk.reset()
            found = await lk.scan(6, j11.SCAN_MASK_ALL, RB_ID[-8:])
            self.assertEqual(found, [(7, 0x1234, SM_MACB, -56)])
            self.assertEqual(uart.data[0x0051][5:], b"\x01" + RB_ID[-8:].encode())
            uart.results[0x0054] = [0x58]  # credentials already set: as good as set
            r = await lk.join(7, 0x1234, SM_MACB, {"id": RB_ID, "password": RB_PW})
            self.assertEqual(r, link.JOIN_OK)
            self.assertEqual(uart.requests, [0x00D9, 0x005F, 0x0051, 0x005F, 0x0054, 0x0053,
                                             0x0005, 0x0056])
            self.assertEqual(uart.data[0x005F][0], 5)  # B-route: always mode 5
            self.assertEqual(uart.data[0x0054], (RB_ID + RB_PW).encode())
            await lk.open_udp(4059)  # opened by the join: not again
            self.assertEqual(uart.requests.count(0x0005), 1)
            self.assertEqual(await lk.reauth(), link.JOIN_OK)
            self.assertEqual(uart.requests[-1], 0x00D2)
            # 0x0E on Route-B start: MAC failed
            uart.results[0x0053] = [0x0E]
            r = await lk.join(7, 0x1234, SM_MACB, {"id": RB_ID, "password": RB_PW})
            self.assertEqual(r, link.JOIN_MAC_FAILED)
            # another error result is an error, with codes only
            uart.results[0x0054] = [0x04]
            try:
                await lk.join(7, 0x1234, SM_MACB, {"id": RB_ID, "password": RB_PW})
                self.fail("no exception")
            except link.LinkCommandError as e:
                self.assertEqual(e.code, 0x04)
                self.assertNotIn(RB_PW, str(e))
            # malformed credentials never reach the module
            n = len(uart.requests)
            try:
                await lk.join(7, 0x1234, SM_MACB, {"id": RB_ID, "password": "short"})
                self.fail("no exception")
            except link.LinkError as e:
                self.assertNotIn("short", str(e))
            self.assertEqual(uart.requests[n:], [0x005F])
            # PANA silent: no 0x6028 within the timeout -> no response (radio, retry)
            uart.pana_results = [None]
            r = await lk.join(7, 0x1234, SM_MACB, {"id": RB_ID, "password": RB_PW})
            self.assertEqual(r, link.JOIN_NO_RESPONSE)
            uart.pana_results = [3]
            self.assertEqual(await lk.reauth(), link.JOIN_NO_RESPONSE)

        self.run_link(body, route="b", mode=3)

    def test_send_results_and_errors(self):
        async def body(uart, lk, got):
            dst = j11.link_local_of_mac(SM_MACB)
            self.assertEqual(await lk.send(dst, 4059, 4059, b"hi"), link.TX_OK)
            uart.no_ack = 9
            self.assertEqual(await lk.send(dst, 4059, 4059, b"hi"), link.TX_NO_ACK)
            self.assertEqual(lk.stats["tx_no_ack"], 1)  # tx_retries=1: one re-send
            uart.no_ack = 0
            uart.results[0x0008] = [0x10]  # not started: the module lost the session
            with self.assertRaises(link.LinkCommandError):
                await lk.send(dst, 4059, 4059, b"hi")
            self.assertEqual(got, [(link.EV_LINK_DOWN, 0x10)])
            uart.silent = True
            with self.assertRaises(link.LinkTimeout):
                await lk.send(dst, 4059, 4059, b"hi")
            uart.silent = False
            with self.assertRaises(link.LinkError):  # larger than the module takes
                await lk.send(dst, 4059, 4059, bytes(1300))
            self.assertEqual(lk.stats["timeouts"], 1)

        self.run_link(body, tx_retries=1)

    def test_t108_refusal_is_limited_not_no_ack(self):
        # [I] tx result 7 (the emulator's T108 refusal): nothing was sent and no re-send helps;
        # reported as TX_NO_ACK it made the session count stale sends and reopen a good link
        async def body(uart, lk, got):
            dst = j11.link_local_of_mac(SM_MACB)
            uart.tx_scripted = [b"\x01\x07"]
            self.assertEqual(await lk.send(dst, 4059, 4059, b"hi"), link.TX_LIMITED)
            self.assertEqual(uart.requests.count(0x0008), 1)  # not re-sent
            self.assertEqual((lk.stats["tx_limited"], lk.stats["tx_no_ack"]), (1, 0))
            self.assertEqual(await lk.send(dst, 4059, 4059, b"hi"), link.TX_OK)

        self.run_link(body, tx_retries=3)

    def test_notifications(self):
        async def body(uart, lk, got):
            rx = []
            lk.on_udp = lambda *a: rx.append((bytes(a[0]), a[1], a[2], a[3], bytes(a[4]),
                                              isinstance(a[4], memoryview)))
            src = j11.link_local_of_mac(SM_MACB)
            uart.push(0x6018, src + b"\x0f\xdb\x0f\xdb\x12\x34\x00\x02\xc8\x00\x03abc")
            uart.push(0x601A, b"\x03" + SM_MACB + b"\xc0")
            uart.push(0x601A, b"\x02" + SM_MACB + b"\xc0")  # PANA connected: no event
            uart.push(0x6038, b"\x20" + bytes(20))
            uart.push(0x601A, b"\x09")  # malformed: counted, ignored
            await sleep_ms(20)
            self.assertEqual(rx, [(src, 4059, 4059, -56, b"abc", True)])
            self.assertEqual(got, [(link.EV_LINK_DOWN, 3), (link.EV_RX_FAIL, 0x20)])
            self.assertEqual(lk.stats["bad_notifications"], 1)
            self.assertEqual(lk.stats["bad_frames"], 0)

        self.run_link(body)

    def test_build_from_config(self):
        m = J11Module(FakeUart())
        lk = build(m, {"route": "b", "mode": 3, "udp_port": 3610, "cmd_timeout_ms": 1234,
                       "tx_retries": 2})
        self.assertEqual((lk.mode, lk.udp_port, lk.tx_retries, m.cmd_timeout_ms),
                         (5, 3610, 2, 1234))
        self.assertEqual(lk.family, link.FAMILY_J11)
        lk = J11Link(m, route="x")
        self.assertEqual(lk.route, "han")


if __name__ == "__main__":
    unittest.main()
