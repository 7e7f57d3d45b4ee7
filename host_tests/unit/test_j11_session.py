# Driver + session against a small scripted in-memory module (runs on CPython and MicroPython;
# the byte-faithful emulator over a real pty is exercised in host_tests/integration).
import asyncio
import unittest

from radio_fakes import ByteUart

from firmware import log
from firmware.compat import sleep_ms, ticks_diff, ticks_ms
from firmware.radio import j11, j11_link
from firmware.radio.j11_module import J11CommandError, J11Module, J11Timeout
from firmware.radio.session import ST_AUTH_FAILED, ST_READY, RadioSession, _settings

SM_MAC = "001D129012345678"
SM_MACB = j11.mac_bytes(SM_MAC)
PASSWORD = "0123456789AB"


class FakeUart(ByteUart):
    """Answers J11 requests like a module whose smart meter is on channel 7."""

    def __init__(self):
        super().__init__()
        self.rx = j11.Reassembler(j11.UC_REQUEST, "fake")
        self.requests = []
        self.sent = []
        self.pana = []  # forced 0x6028 results
        self.no_ack = 0
        self.silent = False
        self.password = None

    def push(self, code, data=b""):
        self.send(j11.encode(code, data, j11.UC_RESPONSE))

    async def write(self, data):
        self.rx.feed(data)
        while True:
            f = self.rx.next_frame()
            if f is None:
                break
            self.handle(f[0], bytes(f[1]))

    def handle(self, cmd, data):
        self.requests.append(cmd)
        if self.silent:
            return
        r = cmd | 0x2000
        if cmd == 0x00D9:
            self.push(0x6019)
        elif cmd == 0x006B:
            self.push(r, b"\x01\x04\x00\x01\x02\x00\x00\x00\x03")
        elif cmd == 0x0051:
            for ch in range(4, 18):
                if ch == 7:
                    self.push(0x4051, bytes((0, ch, 1)) + SM_MACB + b"\x12\x34\xc8")
                else:
                    self.push(0x4051, bytes((1, ch)))
            self.push(r, b"\x01")
        elif cmd == 0x002C:
            self.password = data[8:]
            self.push(r, b"\x01")
        elif cmd == 0x003A:
            if self.pana:
                res = self.pana.pop(0)
            else:
                res = 1 if self.password == PASSWORD.encode() else 2
            # notification first, response second: the driver armed both before writing
            self.push(0x6028, bytes((res,)) + SM_MACB)
            self.push(r, b"\x01")
        elif cmd == 0x0008:
            if self.no_ack:
                self.no_ack -= 1
                self.push(r, b"\x01\x05")
            else:
                self.sent.append(data)
                self.push(r, b"\x01\x00" + data[22:27])
        else:
            self.push(r, b"\x01")


CFG = {"sm_mac": SM_MAC, "pana_password": PASSWORD, "backoff_min_ms": 10,
       "backoff_max_ms": 40, "cmd_timeout_ms": 300, "reset_timeout_ms": 300,
       "pana_timeout_ms": 300}


async def until(cond, ms=3000):
    t0 = ticks_ms()
    while not cond():
        if ticks_diff(ticks_ms(), t0) > ms:
            raise AssertionError("condition not met in %d ms" % ms)
        await sleep_ms(5)


class SessionTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)
        for line in self.lines:
            self.assertNotIn(PASSWORD, line)

    def run_session(self, body, cfg=None):
        conf = dict(CFG)
        conf.update(cfg or {})
        uart = FakeUart()
        module = J11Module(uart)
        session = RadioSession(j11_link.build(module, conf), conf)

        async def main():
            task = asyncio.create_task(session.run())
            try:
                await body(uart, module, session)
            finally:
                task.cancel()
                module.stop()
                await sleep_ms(1)

        asyncio.run(main())

    def test_join_send_recv(self):
        async def body(uart, module, s):
            await until(s.is_ready)
            self.assertEqual(uart.requests, [0x00D9, 0x006B, 0x005F, 0x000A, 0x002C, 0x003A,
                                             0x0005])
            ok = await s.send(j11.link_local_of_mac(SM_MAC), 4059, b"hello")
            self.assertTrue(ok)
            self.assertEqual(uart.sent[0][22:], b"hello")
            self.assertEqual(uart.sent[0][:16], j11.link_local_of_mac(SM_MAC))
            src = j11.link_local_of_mac(SM_MAC)
            uart.push(0x6018, src + b"\x0f\xdb\x0f\xdb\x12\x34\x00\x02\xc8\x00\x03abc")
            got = await s.recv()
            self.assertEqual(got, (src, 4059, 4059, b"abc"))
            self.assertEqual(s.stats["rssi"], -56)
            self.assertEqual(s.stats["joins"], 1)

        self.run_session(body)

    def test_join_by_scan(self):
        async def body(uart, module, s):
            await until(s.is_ready)
            self.assertIn(0x0051, uart.requests)
            self.assertEqual(s.channel, 7)
            self.assertEqual(s.peer_mac, SM_MACB)

        self.run_session(body, {"sm_mac": ""})

    def test_bad_credentials_latch(self):
        async def body(uart, module, s):
            await until(lambda: s.state == ST_AUTH_FAILED)
            await sleep_ms(200)
            self.assertEqual(uart.requests.count(0x003A), 1)
            s.set_pana_password(PASSWORD)
            await until(s.is_ready)
            self.assertEqual(uart.requests.count(0x003A), 2)

        self.run_session(body, {"pana_password": "Wrong-Pass-1"})
        self.assertFalse(any("Wrong-Pass-1" in line for line in self.lines))

    def test_no_response_retries(self):
        async def body(uart, module, s):
            uart.pana = [3, 3]
            await until(s.is_ready)
            self.assertEqual(s.stats["join_failures"], 2)

        self.run_session(body)

    def test_disconnect_rejoins(self):
        async def body(uart, module, s):
            await until(s.is_ready)
            uart.push(0x601A, b"\x03" + SM_MACB + b"\xc0")
            await until(lambda: s.stats["joins"] == 2)
            self.assertEqual(s.stats["disconnects"], 1)
            self.assertEqual(uart.requests.count(0x00D9), 2)

        self.run_session(body)

    def test_tx_no_ack(self):
        async def body(uart, module, s):
            await until(s.is_ready)
            uart.no_ack = 2
            self.assertTrue(await s.send(j11.link_local_of_mac(SM_MAC), 4059, b"x"))
            uart.no_ack = 9
            self.assertFalse(await s.send(j11.link_local_of_mac(SM_MAC), 4059, b"y"))
            self.assertEqual(s.stats["tx_fail"], 1)
            self.assertEqual(s.stats["tx_no_ack"], 2 + 3)

        self.run_session(body, {"tx_retries": 3})

    def test_silent_module_times_out(self):
        async def body(uart, module, s):
            await until(s.is_ready)
            uart.silent = True
            self.assertFalse(await s.send(j11.link_local_of_mac(SM_MAC), 4059, b"1"))
            self.assertFalse(await s.send(j11.link_local_of_mac(SM_MAC), 4059, b"2"))
            await until(lambda: not s.is_ready())
            uart.silent = False
            await until(lambda: s.stats["joins"] == 2)

        self.run_session(body)

    def test_liveness(self):
        async def body(uart, module, s):
            await until(s.is_ready)
            await until(lambda: s.stats["liveness_reopens"] == 1, 3000)
            await until(lambda: s.state == ST_READY)

        self.run_session(body, {"liveness_s": 1})


class DriverTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)

    def tearDown(self):
        log.set_sink(None)

    def test_command_errors(self):
        async def main():
            uart = FakeUart()
            m = J11Module(uart, cmd_timeout_ms=100)
            m.start()
            try:
                self.assertEqual(await m.version(), (0x0400, 1, 2, 3))
                uart.silent = True
                with self.assertRaises(J11Timeout):
                    await m.version()
                uart.silent = False
                # a result other than 0x01 raises, with only code and result in the message
                orig = uart.handle

                def reject(cmd, data):
                    uart.requests.append(cmd)
                    uart.push(cmd | 0x2000, b"\x04")

                uart.handle = reject
                try:
                    await m.set_pana_password("Secret-Password", SM_MAC)
                    self.fail("no exception")
                except J11CommandError as e:
                    self.assertEqual((e.cmd, e.result), (0x002C, 0x04))
                    self.assertNotIn("Secret", str(e))
                uart.handle = orig
                # 0x13 (frame arrived incomplete) is re-sent
                sends = []

                def flaky(cmd, data):
                    sends.append(cmd)
                    if len(sends) == 1:
                        uart.push(cmd | 0x2000, b"\x13")
                    else:
                        orig(cmd, data)

                uart.handle = flaky
                await m.open_udp(4059)
                self.assertEqual(sends, [0x0005, 0x0005])
                self.assertEqual(m.stats["uart_retries"], 1)
            finally:
                m.stop()
                await sleep_ms(1)

        asyncio.run(main())

    def test_scan_collects_beacons(self):
        async def main():
            uart = FakeUart()
            m = J11Module(uart)
            m.start()
            try:
                got = await m.active_scan(2)
                self.assertEqual(got, [(7, SM_MACB, 0x1234, -56)])
            finally:
                m.stop()
                await sleep_ms(1)

        asyncio.run(main())


class SettingsTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_defaults_and_repairs(self):
        s = _settings({})
        self.assertEqual((s["mode"], s["udp_port"], s["scan_duration"]), (3, 4059, 6))
        s = _settings({"mode": 1, "channel": 40, "scan_duration": 0, "backoff_min_ms": 500,
                       "backoff_max_ms": 100, "unknown": 1, "liveness_s": 10 ** 7})
        self.assertEqual((s["mode"], s["channel"], s["scan_duration"]), (3, 4, 6))
        self.assertEqual((s["backoff_max_ms"], s["liveness_s"]), (500, 3600))
        self.assertNotIn("unknown", s)
        self.assertEqual(len(self.lines), 4)

    def test_bad_sm_mac_falls_back_to_scan(self):
        s = RadioSession(j11_link.J11Link(J11Module(FakeUart())),
                         {"sm_mac": "nothex", "pana_password": "abcd"})
        self.assertIsNone(s._configured_mac)
        self.assertTrue(any("sm_mac" in line for line in self.lines))


if __name__ == "__main__":
    unittest.main()
