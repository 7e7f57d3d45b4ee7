# SkStackLink against a scripted in-memory module (both runtimes): the exact bytes it writes and
# how it reads the reference answers (wisun-modules.md 4.5), quirks and failures.
import asyncio
import unittest

from radio_fakes import ScriptedUart

from firmware import log
from firmware.radio import link
from firmware.radio.skstack import SkStackLink, build, scan_channels, scan_timeout_ms

SM = b"FE80:0000:0000:0000:021D:1290:1234:5678"
SM16 = bytes((0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x1D, 0x12, 0x90, 0x12, 0x34, 0x56, 0x78))
MAC = "001D129012345678"
PW = "0123456789AB"
RBID = "00112233445566778899AABBCCDDEEFF"
OK = b"OK\r\n"


def ev(num, param=None, side=None):
    t = b"EVENT " + num + b" " + SM
    if side is not None:
        t += b" " + side
    if param is not None:
        t += b" " + param
    return t + b"\r\n"


BASE = [
    (b"SKRESET", OK), (b"SKSREG SFE 0", OK), (b"ROPT", b"OK 00\r\n"), (b"SKSREG SA2 1", OK),
    (b"SKVER", b"EVER 1.2.10\r\nOK\r\n"),
    (b"SKSETPWD", OK), (b"SKSETRBID", OK), (b"SKSREG S", OK),
    (b"SKLL64", SM + b"\r\n"),  # no OK (real modules)
    (b"SKTABLE E", b"EPORT\r\n3610\r\n716\r\n0\r\n0\r\n0\r\n0\r\n\r\nOK\r\n"),
    (b"SKUDPPORT", OK), (b"SKTERM", OK + ev(b"27")),
]


def run(coro):
    lines = []
    log.set_sink(lines.append)
    try:
        return asyncio.run(coro)
    finally:
        log.set_sink(None)
        for x in lines:
            assert PW not in x and RBID not in x, x


def make(extra, dse=False, **kw):
    uart = ScriptedUart(extra + BASE)
    kw.setdefault("cmd_timeout_ms", 500)
    kw.setdefault("pana_timeout_ms", 500)
    kw.setdefault("send_timeout_ms", 500)
    lk = SkStackLink(uart, dse=dse, **kw)
    lk.start()
    return uart, lk


class ScanMathTest(unittest.TestCase):
    def test_mask_mapping(self):
        self.assertEqual(scan_channels(0x0003FFF0), (0xFFFFFFFF, 28))
        self.assertEqual(scan_channels(1 << 4), (1, 1))  # J11 4 -> SKSTACK 33, bit 0
        self.assertEqual(scan_channels(1 << 12), (1 << 16, 1))  # J11 12 -> 49
        self.assertEqual(scan_channels((1 << 5) | (1 << 17)), ((1 << 2) | (1 << 26), 2))

    def test_timeout_from_duration(self):
        # 9.6 ms x (2^6 + 1) = 624 ms per channel x 28, + 50 %, + 2 s
        self.assertEqual(scan_timeout_ms(6, 28), 624 * 28 * 3 // 2 + 2000)
        self.assertGreater(scan_timeout_ms(14, 28), 28 * 157000)


class DriverTest(unittest.TestCase):
    def test_join_sequence_single_hop(self):
        async def main():
            uart, lk = make([(b"SKJOIN", OK + ev(b"21", b"02") + ev(b"02") + ev(b"25"))],
                            pana_lifetime_s=0x100, auto_reauth=True)
            await lk.reset()
            r = await lk.join(4, 0x1234, MAC, {"id": RBID, "password": PW})
            lk.stop()
            return uart.writes, r

        writes, r = run(main())
        self.assertEqual(r, link.JOIN_OK)
        self.assertEqual(writes, [
            b"SKRESET\r\n", b"SKSREG SFE 0\r\n", b"ROPT\r\n",
            b"SKSETPWD C " + PW.encode() + b"\r\n", b"SKSETRBID " + RBID.encode() + b"\r\n",
            b"SKSREG S2 21\r\n", b"SKSREG S3 1234\r\n", b"SKSREG S16 100\r\n",
            b"SKSREG S17 1\r\n", b"SKLL64 " + MAC.encode() + b"\r\n", b"SKJOIN " + SM + b"\r\n"])

    def test_join_failures(self):
        async def main():
            out = []
            # EVENT 24 after PANA answers from the peer: the credentials were rejected
            pana = (b"ERXUDP " + SM + b" " + SM + b" 02CC 02CC 001D129012345678 0 0002 \r\n\r\n")
            for resp in (OK + pana + ev(b"24"), OK + ev(b"24"), OK, b"FAIL ER10\r\n"):
                uart, lk = make([(b"SKJOIN", resp)])
                try:
                    out.append(await lk.join(4, 0x1234, MAC, {"password": PW}))
                except link.LinkCommandError as e:
                    out.append(e.code)
                lk.stop()
            return out

        self.assertEqual(run(main()), [link.JOIN_BAD_CREDENTIALS, link.JOIN_NO_RESPONSE,
                                       link.JOIN_NO_RESPONSE, "ER10"])

    def test_send_bytes_and_results(self):
        payload = bytes.fromhex("1081000105FF010288016201E700") + b"\r\n"
        cases = ((False, ev(b"21", b"00") + OK, link.TX_OK),  # EVENT 21 before OK
                 (False, ev(b"21", b"02") + OK + ev(b"21", b"01"), link.TX_NO_ACK),
                 (False, ev(b"21", b"02") + ev(b"21", b"00") + OK, link.TX_OK),  # ND first
                 (True, OK + ev(b"21", b"00", b"0"), link.TX_OK))

        async def main():
            res = []
            for dse, answer, _ in cases:
                uart, lk = make([(b"SKSENDTO", answer)], dse=dse)
                await lk.open_udp(3610)
                res.append((await lk.send(SM16, 3610, 0x0E1A, payload), uart.writes[-1]))
                lk.stop()
            return res

        r = run(main())
        head = b"SKSENDTO 1 " + SM + b" 0E1A 1 0010 "
        dse_head = b"SKSENDTO 1 " + SM + b" 0E1A 1 0 0010 "
        for (dse, _, want), got in zip(cases, r):
            self.assertEqual(got, (want, (dse_head if dse else head) + payload))

    def test_open_udp_uses_free_handle(self):
        async def main():
            uart, lk = make([])
            await lk.open_udp(4059)
            await lk.open_udp(716)  # already open: only the table read
            lk.stop()
            return uart.writes

        w = run(main())
        self.assertEqual(w.count(b"SKUDPPORT 3 0FDB\r\n"), 1)  # 3610 and 716 hold 1 and 2
        self.assertEqual(w[-2:], [b"SKUDPPORT 3 0FDB\r\n", b"SKTABLE E\r\n"])

    def test_late_ok_after_ll64_does_not_answer_skjoin(self):
        # Some modules send an OK after SKLL64's address. Taken as SKJOIN's answer, it would hide
        # SKJOIN's FAIL (the join would then wait for EVENT 25 and report no response).
        async def main():
            uart, lk = make([(b"SKLL64", (SM + b"\r\n", OK, 20)),
                             (b"SKJOIN", (b"", b"FAIL ER10\r\n", 60))])
            try:
                return await lk.join(4, 0x1234, MAC, {"password": PW})
            except link.LinkCommandError as e:
                return e.code
            finally:
                lk.stop()

        self.assertEqual(run(main()), "ER10")

    def test_fail_is_command_error_without_arguments(self):
        async def main():
            uart, lk = make([(b"SKSETPWD", b"FAIL ER06\r\n")])
            try:
                await lk.join(4, 0x1234, MAC, {"password": PW})
            except link.LinkCommandError as e:
                return str(e), e.code
            finally:
                lk.stop()

        text, code = run(main())
        self.assertEqual(code, "ER06")
        self.assertNotIn(PW, text)
        self.assertIn("SKSETPWD", text)

    def test_timeout(self):
        async def main():
            uart, lk = make([(b"SKVER", b"")])
            try:
                await lk.version()
            except link.LinkTimeout:
                return "timeout"
            finally:
                lk.stop()

        self.assertEqual(run(main()), "timeout")

    def test_build_takes_the_radio_deadlines(self):
        lk = build(ScriptedUart([]), {"cmd_timeout_ms": 400, "reset_timeout_ms": 600,
                                  "pana_timeout_ms": 700}, dse=True, max_udp=300)
        self.assertEqual((lk.cmd_timeout_ms, lk.reset_timeout_ms, lk.pana_timeout_ms),
                         (400, 600, 700))
        self.assertEqual((lk.dse, lk.max_udp), (True, 300))

    def test_reset_waits_reset_timeout_ms(self):
        # an OK 300 ms late: within the driver's 5 s default, beyond the configured 50 ms
        async def main():
            uart, lk = make([(b"SKRESET", (b"", OK, 300))], reset_timeout_ms=50)
            try:
                await lk.reset()
                return "reset"
            except link.LinkTimeout:
                return "timeout"
            finally:
                lk.stop()

        self.assertEqual(run(main()), "timeout")

    def test_events_and_garbage_keep_the_reader_alive(self):
        async def main():
            uart, lk = make([])
            got = []
            lk.on_event = lambda c, d: got.append(c)
            lk.start()
            lk.joined = True
            uart.push(b"\x00\xff\r\n" + b"Z" * 500 + b"\r\nEVENT 29 " + SM + b"\r\n"
                      + ev(b"25") + ev(b"32") + ev(b"33") + b"EVENT 26 garbled extra x y\r\n"
                      + ev(b"28"))
            for _ in range(20):
                await asyncio.sleep(0)
            v = await lk.version()
            lk.stop()
            return got, v, lk.stats["rx_errors"]

        got, v, errs = run(main())
        self.assertEqual(got, [link.EV_REAUTH_STARTED, link.EV_REAUTH_OK, link.EV_TX_LIMIT_ON,
                               link.EV_TX_LIMIT_OFF, link.EV_LINK_DOWN])
        self.assertEqual(v, "1.2.10")
        self.assertEqual(errs, 1)  # the overlong line
