import asyncio
import binascii
import unittest

from rng import Rng

from firmware import log, timeutil
from firmware.app import commission
from firmware.cosem import axdr, probe, wrapper

SM_MAC = b"\x00\x1d\x12\x90\x12\x34\x56\x78"
AARE_OK = binascii.unhexlify(
    "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007")
AARE_REJECTED = binascii.unhexlify(
    "6129A109060760857405080101A203020101A305A103020102BE10040E0800065F1F040000501F01F40007")
RLRE = binascii.unhexlify("6303800100")
SM_T2K = timeutil.t2k_from_fields(2025, 4, 1, 3, 0, 0)


def _clock_reply(t2k):
    return b"\xC4\x01\xC1\x00\x09\x0C" + axdr.datetime_bytes(t2k, -540, 540)


class FakeClock:
    def __init__(self, t2k=None):
        self.t2k = t2k

    def now_t2k(self):
        return self.t2k


class FakeSession:
    """The session's public face; a canned smart meter answers the probe's requests."""

    def __init__(self, join=True, state="ready", rssi=-60, aare=AARE_OK, t2k=SM_T2K,
                 lose=0, stats=None, rx_rssi=None):
        self.state = "idle"
        self.rx_rssi = rx_rssi
        self._join = join
        self._final = state
        self.stats = {"rssi": rssi, "scans": 1, "last_error": "", "auth_failed": 0}
        self.stats.update(stats or {})
        self.channel = 4
        self.peer_mac = SM_MAC
        self.replies = {0x60: aare, 0xC0: _clock_reply(t2k), 0x62: RLRE}
        self.lose = lose
        self.sent = []
        self.q = []
        self.ev = asyncio.Event()

    def is_ready(self):
        self.polls = getattr(self, "polls", 0) + 1
        return self.state == "ready"

    async def run(self):
        await asyncio.sleep(0.01)
        self.state = self._final if not self._join else "ready"
        while True:
            await asyncio.sleep(1)

    async def send(self, dst, port, payload):
        self.sent.append((bytes(dst), port, bytes(payload)))
        _s, _d, apdu = wrapper.parse(payload)
        if self.lose > 0:
            self.lose -= 1
            return True
        self.q.append((b"", 4059, 4059, wrapper.build(1, 16, self.replies[apdu[0]])))
        if self.rx_rssi is not None:
            self.stats["rssi"] = self.rx_rssi  # the module reports it with a received datagram
        self.ev.set()
        return True

    async def recv(self):
        while not self.q:
            self.ev.clear()
            await self.ev.wait()
        return self.q.pop(0)


def _run(session, clock=None, **cfg):
    lines = []
    cfg.setdefault("reply_timeout_s", 1)
    v, checks = asyncio.run(commission.run(session, clock, cfg, lines.append))
    return v, {c[0]: c for c in checks}, lines


class CommissionTest(unittest.TestCase):
    def setUp(self):
        self.log = []
        log.set_sink(self.log.append)

    def tearDown(self):
        log.set_sink(None)

    def test_pass_measures_join_signal_and_dlms_round_trip(self):
        s = FakeSession()
        v, c, lines = _run(s, FakeClock(SM_T2K + 5))
        self.assertEqual(v, commission.PASS)
        self.assertEqual(c["join"][1], "PASS")
        self.assertEqual(c["signal"][1], "PASS")
        self.assertIn("-60 dBm", c["signal"][2])
        self.assertEqual(c["dlms"][1], "PASS")
        self.assertEqual(c["clock"][1], "PASS")
        self.assertIn("+5 s", c["clock"][2])
        # AARQ, GET clock, RLRQ to the smart meter's link-local address, public client -> SAP 1
        kinds = [wrapper.parse(p)[2][0] for _d, _p, p in s.sent]
        self.assertEqual(kinds, [0x60, 0xC0, 0x62])
        self.assertEqual(s.sent[0][0], b"\xfe\x80" + bytes(6) + b"\x02" + SM_MAC[1:])
        self.assertEqual(wrapper.parse(s.sent[0][2])[:2], (16, 1))
        self.assertEqual(lines[-1], "commissioning: PASS")

    def test_bad_credentials_fail_with_an_installer_reason(self):
        s = FakeSession(join=False, state="auth_failed", stats={"auth_failed": 1})
        v, c, _ = _run(s, join_timeout_s=2)
        self.assertEqual(v, commission.FAIL)
        self.assertIn("rejected the terminal's credentials", c["join"][2])
        self.assertNotIn("dlms", c)

    def test_no_beacon_says_so(self):
        s = FakeSession(join=False, state="backoff",
                        stats={"last_error": "scan found no beacon of PAN 0x1234 (0 other)"})
        v, c, _ = _run(s, join_timeout_s=1)
        self.assertEqual(v, commission.FAIL)
        self.assertIn("no smart meter heard", c["join"][2])

    def test_empty_scans_end_the_join_before_its_timeout(self):
        s = FakeSession(join=False, state="backoff",
                        stats={"scans": 4, "last_error": "scan found no beacon of PAN 0x1234"})
        v, c, lines = _run(s, join_timeout_s=60)
        self.assertEqual(v, commission.FAIL)
        self.assertIn("no smart meter heard", c["join"][2])
        # ended by the scan count, not by the 60 s timeout (~600 polls of 100 ms): the fake
        # session reports its scans from the start, so the loop ends at its first polls
        self.assertLess(s.polls, 10)
        s = FakeSession(join=False, state="backoff",
                        stats={"scans": 3, "last_error": "scan found no beacon of PAN 0x1234"})
        v, _c, _ = _run(s, join_timeout_s=1, empty_scans=4)
        self.assertEqual(v, commission.FAIL)

    def test_weak_signal_fails_marginal_warns(self):
        v, c, _ = _run(FakeSession(rssi=-99))
        self.assertEqual((v, c["signal"][1]), (commission.FAIL, "FAIL"))
        v, c, _ = _run(FakeSession(rssi=-90))
        self.assertEqual((v, c["signal"][1]), (commission.PASS, "WARN"))

    def test_rejected_association_fails_with_its_diagnostic(self):
        v, c, _ = _run(FakeSession(aare=AARE_REJECTED))
        self.assertEqual(v, commission.FAIL)
        self.assertIn("result 1, diagnostic 2", c["dlms"][2])

    def test_lost_request_is_retried_and_silence_fails(self):
        v, c, _ = _run(FakeSession(lose=1))
        self.assertEqual(c["dlms"][1], "PASS")
        v, c, _ = _run(FakeSession(lose=99), tries=2)
        self.assertEqual(v, commission.FAIL)
        self.assertIn("no reply within 1 s", c["dlms"][2])

    def test_without_a_scan_the_signal_comes_from_the_replies(self):
        v, c, lines = _run(FakeSession(rssi=None, rx_rssi=-70))
        self.assertEqual(v, commission.PASS)
        self.assertEqual(c["signal"][1:], ("PASS", "RSSI -70 dBm"))
        self.assertEqual([x.split()[0] for x in lines[1:-1]], ["join", "dlms", "clock", "signal"])
        v, c, _ = _run(FakeSession(rssi=None))  # none at all: said so, not a failure
        self.assertEqual((v, c["signal"][1]), (commission.PASS, "WARN"))

    def test_clock_far_from_the_smart_meter_warns(self):
        v, c, _ = _run(FakeSession(), FakeClock(SM_T2K - 600))
        self.assertEqual(c["clock"][1], "WARN")
        self.assertIn("-600 s", c["clock"][2])


class SettingsTest(unittest.TestCase):
    """The configuration file's "commission" section (read by commission.main and
    tools/commission.py; the terminal skips it silently) and the radio built the terminal's way."""

    def setUp(self):
        self.log = []
        log.set_sink(self.log.append)

    def tearDown(self):
        log.set_sink(None)

    def test_section_overrides_integers_only(self):
        c = commission.settings({"join_timeout_s": 20, "rssi_good_dbm": -80, "tries": True,
                                 "bogus": 1, "rtt_good_ms": "2000"})
        self.assertEqual((c["join_timeout_s"], c["rssi_good_dbm"]), (20, -80))
        self.assertEqual(c["tries"], commission.DEFAULTS["tries"])
        self.assertEqual(c["rtt_good_ms"], commission.DEFAULTS["rtt_good_ms"])
        self.assertEqual(len([x for x in self.log if "ignored" in x]), 3)
        self.assertEqual(commission.settings(None), commission.DEFAULTS)
        self.assertEqual(commission.settings([1]), commission.DEFAULTS)
        self.assertTrue(any("must be an object" in x for x in self.log))

    def test_the_terminal_skips_the_section_silently(self):
        from firmware.app import config

        cfg = config.merge({"commission": {"join_timeout_s": 20}, "bogus": {}})
        self.assertNotIn("commission", cfg)
        self.assertEqual([x for x in self.log if "unknown section" in x],
                         ["WARN config: unknown section 'bogus' ignored"])

    def test_session_built_with_the_terminals_methods(self):
        from firmware.radio.j11_link import J11Link

        uarts = []

        def uart():
            uarts.append(1)
            return None

        s = asyncio.run(commission.build_session(uart, {"family": "j11", "route": "b"}))
        self.assertIsInstance(s.link, J11Link)
        self.assertEqual((s.link.route, s.link.mode), ("b", 5))
        self.assertEqual(len(s.link.m._tx), 12 + 22 + commission.MAX_UDP)  # probe-sized frames
        self.assertEqual(len(uarts), 1)  # a given family: no detection, the UART opened once


class ProbeTest(unittest.TestCase):
    def test_requests_are_the_reference_bytes(self):
        self.assertEqual(probe.wpdu(16, 1, probe.GET_CLOCK),
                         binascii.unhexlify("000100100001000D" "C001C100080000010000FF0200"))

    def test_replies_checked(self):
        ok = wrapper.build(1, 16, _clock_reply(SM_T2K))
        self.assertEqual(probe.parse_clock(ok, 16, 1, -1, 540), SM_T2K)
        self.assertIsNone(probe.check_aare(wrapper.build(1, 16, AARE_OK), 16, 1))
        for bad in (b"", b"\x00\x01", wrapper.build(2, 16, AARE_OK),
                    wrapper.build(1, 16, b"\xC4\x01\xC1\x01\x04"),
                    wrapper.build(1, 16, b"\xC4\x01\xC1\x00\x09\x0B" + bytes(11)),
                    wrapper.build(1, 16, b"\xC4\x01\xC1\x00\x09\x0C" + b"\xff" * 12)):
            with self.assertRaises(probe.ProbeError):
                probe.parse_clock(bad, 16, 1, -1, 540)
        with self.assertRaises(probe.ProbeError):
            probe.check_aare(wrapper.build(1, 16, b"\x61\x03\xA1\x01\x00"), 16, 1)

    def test_fuzz_replies_raise_only_probe_errors(self):
        rnd = Rng(10)
        outcomes = {"accepted": 0, "rejected": 0}
        seeds = [wrapper.build(1, 16, x) for x in (AARE_OK, _clock_reply(SM_T2K), RLRE)]
        for _ in range(3000):
            b = bytearray(seeds[rnd.below(len(seeds))])
            for _k in range(1 + rnd.below(4)):
                op = rnd.below(3)
                if op == 0 and b:
                    b[rnd.below(len(b))] = rnd.below(256)
                elif op == 1 and b:
                    b = b[:rnd.below(len(b))]
                else:
                    b.append(rnd.below(256))
            for fn in (probe.check_aare, probe.check_rlre, probe.parse_clock):
                args = (bytes(b), 16, 1) + ((-1, 540) if fn is probe.parse_clock else ())
                try:
                    fn(*args)
                    outcomes["accepted"] += 1
                except probe.ProbeError:  # the one error a reply may raise: anything else fails
                    outcomes["rejected"] += 1
        self.assertGreater(outcomes["accepted"], 100)
        self.assertGreater(outcomes["rejected"], 1000)


if __name__ == "__main__":
    unittest.main()
