# The session's fault matrix over a scripted contract driver (radio_fakes.FakeLink), on CPython
# and MicroPython: every field failure of wisun-modules.md §7-§8 the session must survive. Each
# scenario ends back in READY, delivers what was queued both ways, and asks the driver a bounded
# number of times. Timings are small real milliseconds; the T108 ring runs on a fake clock.
import asyncio
import unittest

from radio_fakes import MAC, MAC2, PASSWORD, ROUTE_B_ID, TIMEOUT, FakeLink, FakeTicks

from firmware import events as ev
from firmware import log
from firmware.compat import sleep_ms, ticks_diff, ticks_ms
from firmware.radio import link
from firmware.radio import session as rs
from firmware.radio.session import ST_AUTH_FAILED, ST_REAUTH, RadioSession

DST = b"\xfe\x80" + bytes(6) + MAC
CFG = {"sm_mac": "", "pana_password": PASSWORD, "backoff_min_ms": 20, "backoff_max_ms": 80,
       "scan_duration": 2, "scan_max_duration": 4, "pana_lifetime_s": 0, "liveness_s": 0,
       "gate_wait_ms": 300}


async def until(cond, ms=3000):
    t0 = ticks_ms()
    while not cond():
        if ticks_diff(ticks_ms(), t0) > ms:
            raise AssertionError("condition not met in %d ms" % ms)
        await sleep_ms(2)


class Matrix(unittest.TestCase):
    def setUp(self):
        self.lines = []
        self.events = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)
        for line in self.lines:
            self.assertNotIn(PASSWORD, line)
            self.assertNotIn(ROUTE_B_ID, line)

    def run_session(self, body, cfg=None, cache=None, ticks=None, lk=None):
        conf = dict(CFG)
        conf.update(cfg or {})
        lk = lk or FakeLink()
        kw = {}
        if ticks is not None:
            kw["ticks"] = ticks
        s = RadioSession(lk, conf, event=lambda c, d=0: self.events.append((c, d)), cache=cache,
                         **kw)

        async def main():
            task = asyncio.create_task(s.run())
            try:
                await body(lk, s)
            finally:
                task.cancel()
                await sleep_ms(1)

        asyncio.run(main())
        return lk, s

    async def serving(self, lk, s, tag=b"x"):
        """READY, and data flows both ways: a datagram queued by the driver is received, and a
        reply goes out."""
        await until(s.is_ready)
        lk.deliver(b"req-" + tag)
        src, sport, dport, payload = await s.recv()
        self.assertEqual((payload, dport), (bytearray(b"req-" + tag), 4059))
        self.assertIsInstance(payload, bytearray)  # deciphered in place by the COSEM server
        self.assertTrue(await s.send(src, sport, b"rep-" + tag))
        self.assertEqual(lk.sent[-1][3], b"rep-" + tag)
        s.note_app_activity()

    # -- join faults ------------------------------------------------------------------------

    def test_join_by_scan_then_ready(self):
        async def body(lk, s):
            await self.serving(lk, s)
            self.assertEqual(lk.calls[:5], ["reset", "version", "scan", "join", "open_udp"])
            self.assertEqual(lk.joins, [(7, 0x1234, MAC)])
            self.assertEqual(lk.opened, [4059])
            self.assertEqual(s.cached, (7, 0x1234, MAC))
            self.assertEqual(self.events, [(ev.LINK_UP, 7)])

        self.run_session(body)

    def test_silent_scans_grow_duration_bounded(self):
        async def body(lk, s):
            lk.scan_script = [[], [], [], [], [(9, 0x9999, MAC2, -40)]]  # silent, then other PAN
            await self.serving(lk, s)
            self.assertEqual([d for d, _m, _p in lk.scans], [2, 3, 4, 4, 4, 4])
            self.assertEqual(s.stats["scans"], 6)
            self.assertEqual(s.stats["join_failures"], 5)
            self.assertEqual(lk.count("join"), 1)
            self.assertLessEqual(len(lk.calls), 6 * 3 + 3 + 1)

        self.run_session(body)

    def test_scan_picks_strongest_of_our_pan(self):
        async def body(lk, s):
            lk.scan_script = [[(5, 0x1234, MAC2, -80), (9, 0x4321, MAC2, -30),
                               (11, 0x1234, MAC, -50)]]
            await self.serving(lk, s)
            self.assertEqual(lk.joins, [(11, 0x1234, MAC)])
            self.assertEqual(s.stats["rssi"], -50)

        self.run_session(body)

    def test_mac_failure_resets_and_retries_bounded(self):
        async def body(lk, s):
            lk.join_script = [link.JOIN_MAC_FAILED] * 3
            await self.serving(lk, s)
            # three immediate reset-and-retry passes, no back-off, then joined
            self.assertEqual(lk.count("reset"), 4)
            self.assertEqual(lk.count("join"), 4)
            self.assertEqual(s.stats["mac_failures"], 3)
            self.assertFalse(any("next join attempt" in x for x in self.lines))

        self.run_session(body)

    def test_mac_failure_beyond_bound_backs_off(self):
        async def body(lk, s):
            lk.join_script = [link.JOIN_MAC_FAILED] * 5
            await self.serving(lk, s)
            self.assertEqual(lk.count("join"), 6)
            self.assertEqual(lk.count("reset"), 6)
            self.assertEqual(s.stats["mac_failures"], 5)
            self.assertEqual(sum(1 for x in self.lines if "next join attempt" in x), 1)

        self.run_session(body, {"fast_retries": 10})  # the MAC bound, not the fast-retry cap

    def test_fast_retries_capped(self):
        async def body(lk, s):
            lk.join_script = [link.JOIN_MAC_FAILED] * 2
            await self.serving(lk, s)
            self.assertEqual(lk.count("join"), 3)
            # the first retry at once, the second after a back-off: fast_retries = 1
            self.assertEqual(sum(1 for x in self.lines if "next join attempt" in x), 1)

        self.run_session(body, {"fast_retries": 1})

    def test_pana_no_response_backs_off_and_retries(self):
        async def body(lk, s):
            lk.join_script = [link.JOIN_NO_RESPONSE, link.JOIN_NO_RESPONSE]
            await self.serving(lk, s)
            self.assertEqual(s.stats["join_failures"], 2)
            self.assertEqual(sum(1 for x in self.lines if "next join attempt" in x), 2)
            self.assertEqual(lk.count("join"), 3)
            self.assertEqual(lk.count("scan"), 0)  # a configured peer is never scanned for
            self.assertLessEqual(len(lk.calls), 3 * 3 + 1 + 1)

        self.run_session(body, {"sm_mac": "001D129012345678", "channel": 5})

    def test_cached_peer_gone_rescans_at_once(self):
        async def body(lk, s):
            lk.join_script = [link.JOIN_NO_RESPONSE]
            await self.serving(lk, s)
            self.assertEqual(lk.calls[:7], ["reset", "version", "join", "reset", "version",
                                            "scan", "join"])
            self.assertEqual(lk.joins, [(12, 0x1234, MAC2), (7, 0x1234, MAC)])
            self.assertEqual(s.stats["rescans"], 1)
            self.assertEqual(s.cached, (7, 0x1234, MAC))
            self.assertFalse(any("next join attempt" in x for x in self.lines))

        self.run_session(body, cache=(12, 0x1234, MAC2))

    def test_cached_peer_rejoins_without_scan(self):
        async def body(lk, s):
            await self.serving(lk, s)
            self.assertEqual(lk.count("scan"), 0)
            self.assertEqual(lk.joins, [(12, 0x1234, MAC2)])

        self.run_session(body, cache=(12, 0x1234, MAC2))

    def test_bad_credentials_latch_report_then_new_credentials(self):
        async def body(lk, s):
            await until(lambda: s.state == ST_AUTH_FAILED)
            await sleep_ms(200)  # several back-off periods: no further attempt
            self.assertEqual(lk.count("join"), 1)
            self.assertEqual(lk.count("reset"), 1)
            self.assertEqual(s.stats["auth_failed"], 1)
            self.assertEqual(self.events, [(ev.RADIO_AUTH_FAILED, 0)])
            errors = [x for x in self.lines if "bad credentials" in x]
            self.assertEqual(len(errors), 1)
            self.assertFalse(await s.send(DST, 4059, b"x"))  # no session: refused
            self.assertEqual(lk.count("send"), 0)
            s.set_pana_password(PASSWORD)
            await self.serving(lk, s)
            self.assertEqual(lk.count("join"), 2)

        self.run_session(body, {"pana_password": "Wrong-Pass-1"})
        self.assertFalse(any("Wrong-Pass-1" in x for x in self.lines))

    def test_b_route_needs_id_and_scans_with_pairing_id(self):
        async def body(lk, s):
            await until(lambda: s.state == ST_AUTH_FAILED)
            self.assertEqual(lk.count("reset"), 0)
            s.set_credentials(route_b_id=ROUTE_B_ID)
            await self.serving(lk, s)
            self.assertEqual(lk.scans[0][2], ROUTE_B_ID[-8:])

        self.run_session(body, {"route": "b"})

    def test_module_timeouts(self):
        async def body(lk, s):
            lk.reset_script = [TIMEOUT]
            await self.serving(lk, s, b"1")
            self.assertIn("timeout", s.stats["last_error"])
            # a module that stops answering sends: the second timeout in a row reopens
            lk.send_script = [TIMEOUT, TIMEOUT]
            self.assertFalse(await s.send(DST, 4059, b"a"))
            self.assertTrue(s.is_ready())
            self.assertFalse(await s.send(DST, 4059, b"b"))
            await until(lambda: s.stats["joins"] == 2)
            await self.serving(lk, s, b"2")
            self.assertIn((ev.LINK_DOWN, rs.DOWN_MODULE), self.events)
            self.assertLessEqual(len(lk.calls), 20)

        self.run_session(body, {"sm_mac": "001D129012345678"})

    # -- while ready ------------------------------------------------------------------------

    def test_link_down_notification_rejoins(self):
        async def body(lk, s):
            await self.serving(lk, s, b"1")
            lk.event(link.EV_LINK_DOWN, 3)
            await until(lambda: s.stats["joins"] == 2)
            await self.serving(lk, s, b"2")
            self.assertEqual(s.stats["disconnects"], 1)
            self.assertEqual(self.events, [(ev.LINK_UP, 7), (ev.LINK_DOWN, rs.DOWN_LINK),
                                           (ev.LINK_UP, 7)])
            self.assertEqual(lk.count("scan"), 1)  # rejoined the cached peer
            self.assertEqual(lk.count("leave"), 0)  # the link is already gone
            self.assertLessEqual(len(lk.calls), 14)

        self.run_session(body)

    def test_stale_session_rejoins(self):
        async def body(lk, s):
            await self.serving(lk, s, b"1")
            lk.send_script = [link.TX_NO_ACK, link.TX_NO_ACK]
            self.assertFalse(await s.send(DST, 4059, b"a"))
            self.assertFalse(await s.send(DST, 4059, b"b"))
            s.note_app_activity()  # a valid application exchange resets the count
            lk.send_script = [link.TX_NO_ACK] * 3
            for p in (b"c", b"d"):
                self.assertFalse(await s.send(DST, 4059, p))
            self.assertTrue(s.is_ready())
            self.assertFalse(await s.send(DST, 4059, b"e"))  # third in a row
            await until(lambda: s.stats["joins"] == 2)
            await self.serving(lk, s, b"2")
            self.assertEqual(s.stats["stale_reopens"], 1)
            self.assertEqual(lk.count("leave"), 1)  # torn down
            self.assertIn((ev.LINK_DOWN, rs.DOWN_STALE), self.events)

        self.run_session(body, {"stale_tries": 3})

    def test_liveness_rejoins(self):
        async def body(lk, s):
            await self.serving(lk, s, b"1")
            await until(lambda: s.stats["liveness_reopens"] == 1, 3000)
            await until(lambda: s.stats["joins"] == 2)
            await self.serving(lk, s, b"2")
            self.assertEqual(lk.count("leave"), 1)

        self.run_session(body, {"liveness_s": 1})

    def test_pana_lifetime_reauth_gates_sends(self):
        async def body(lk, s):
            lk.reauth_hold = asyncio.Event()
            await self.serving(lk, s, b"1")
            await until(lambda: s.state == ST_REAUTH, 2000)  # at 80 % of 1 s
            self.assertFalse(s.is_ready())
            self.assertFalse(s.may_send(False))
            n = len(lk.sent)
            t = asyncio.create_task(s.send(DST, 4059, b"queued"))
            await sleep_ms(50)
            self.assertEqual(len(lk.sent), n)  # held at the gate
            lk.reauth_hold.set()
            self.assertTrue(await t)
            self.assertEqual(lk.sent[-1][3], b"queued")
            self.assertTrue(s.is_ready())
            self.assertEqual(s.stats["reauths"], 1)
            self.assertEqual(s.stats["joins"], 1)

        self.run_session(body, {"pana_lifetime_s": 1, "gate_wait_ms": 2000})

    def test_reauth_failed_reopens(self):
        async def body(lk, s):
            lk.reauth_script = [link.JOIN_NO_RESPONSE]
            await self.serving(lk, s, b"1")
            await until(lambda: s.stats["joins"] == 2, 3000)
            await self.serving(lk, s, b"2")
            self.assertEqual(s.stats["reauth_failures"], 1)
            self.assertIn((ev.LINK_DOWN, rs.DOWN_REAUTH), self.events)
            self.assertEqual(lk.count("reauth"), 1)

        self.run_session(body, {"pana_lifetime_s": 1})

    def test_driver_reauth_events_gate_sends(self):
        async def body(lk, s):
            await self.serving(lk, s, b"1")
            lk.event(link.EV_REAUTH_STARTED)
            t = asyncio.create_task(s.send(DST, 4059, b"held"))
            await sleep_ms(50)
            self.assertFalse(t.done())
            lk.event(link.EV_REAUTH_OK)
            self.assertTrue(await t)
            self.assertEqual(lk.sent[-1][3], b"held")
            # the gate waits a bounded time, then the send fails
            lk.event(link.EV_REAUTH_STARTED)
            self.assertFalse(await s.send(DST, 4059, b"late"))
            self.assertEqual(s.stats["tx_gated"], 1)
            lk.event(link.EV_REAUTH_FAILED)  # full reopen
            await until(lambda: s.stats["joins"] == 2)
            await self.serving(lk, s, b"2")
            self.assertEqual(lk.count("reauth"), 0)  # the module did it

        self.run_session(body, {"gate_wait_ms": 150})

    def test_driver_reauth_without_end_is_bounded(self):
        async def body(lk, s):
            await self.serving(lk, s, b"1")
            lk.event(link.EV_REAUTH_STARTED)
            await until(lambda: s.stats["joins"] == 2, 3000)
            await self.serving(lk, s, b"2")
            self.assertEqual(s.stats["reauth_failures"], 1)

        self.run_session(body, {"pana_timeout_ms": 200})

    # -- ARIB T108 --------------------------------------------------------------------------

    def test_t108_bulk_stops_at_reserve_replies_continue(self):
        clock = FakeTicks()

        async def body(lk, s):
            await self.serving(lk, s)
            self.assertEqual(s.airtime_left_ms(), 1000 - rs.airtime_ms(5))
            big = bytes(1000)
            per = rs.airtime_ms(1000)
            self.assertEqual(per, 112)  # (1000 + 5 frames x 80) bytes x 80 us
            bulk = 0
            while s.may_send(True):
                self.assertTrue(await s.send(DST, 4059, big, bulk=True))
                bulk += 1
                self.assertLess(bulk, 20)
            self.assertEqual(bulk, 8)  # 7 + 8 x 112 = 903 ms: 97 left, under the 200 ms reserve
            self.assertGreaterEqual(s.stats["bulk_deferred"], 1)
            self.assertFalse(await s.send(DST, 4059, bytes(200), bulk=True))  # fits, but reserve
            replies = 0
            while await s.send(DST, 4059, bytes(200)):  # 23 ms each
                replies += 1
                self.assertLess(replies, 20)
            self.assertEqual(replies, 4)  # to the hard limit: 903 + 4 x 23 = 995 of 1000
            self.assertEqual(s.stats["tx_budget_refused"], 1)
            # the hour slides: 30 min later still spent, 61 min later all back
            clock.t += 30 * 60000
            self.assertLess(s.airtime_left_ms(), 100)
            self.assertTrue(await s.send(DST, 4059, big, bulk=False) is False)
            clock.t += 31 * 60000
            self.assertEqual(s.airtime_left_ms(), 1000)
            self.assertTrue(s.may_send(True))
            self.assertTrue(await s.send(DST, 4059, big, bulk=True))
            self.assertEqual(s.stats["airtime_ms"], per)

        self.run_session(body, {"airtime_budget_ms": 1000, "bulk_reserve_pct": 20},
                         ticks=clock)

    def test_t108_ring_expires_per_minute(self):
        clock = FakeTicks()

        async def body(lk, s):
            await self.serving(lk, s)
            clock.t += 30 * 60000
            self.assertTrue(await s.send(DST, 4059, bytes(100)))
            used = s.stats["airtime_ms"]
            clock.t += 30 * 60000 + 1  # the first sends are an hour old
            self.assertEqual(s.stats["airtime_ms"], used - rs.airtime_ms(5))
            clock.t += 30 * 60000
            self.assertEqual(s.stats["airtime_ms"], 0)

        self.run_session(body, ticks=clock)

    def test_t108_module_limit_is_a_hard_gate(self):
        async def body(lk, s):
            await self.serving(lk, s, b"1")
            lk.event(link.EV_TX_LIMIT_ON)
            self.assertFalse(s.may_send(False))
            self.assertFalse(await s.send(DST, 4059, b"refused"))
            self.assertEqual(s.stats["tx_gated"], 1)
            t = asyncio.create_task(s.send(DST, 4059, b"waits"))
            await sleep_ms(30)
            lk.event(link.EV_TX_LIMIT_OFF)
            self.assertTrue(await t)
            self.assertEqual(lk.sent[-1][3], b"waits")
            # the module refusing a datagram closes the gate too, until it says the limit is off
            lk.send_script = [link.TX_LIMITED]
            self.assertFalse(await s.send(DST, 4059, b"x"))
            self.assertEqual(s.stats["tx_limited"], 2)
            self.assertFalse(s.may_send(False))
            lk.event(link.EV_TX_LIMIT_OFF)
            await self.serving(lk, s, b"2")
            self.assertEqual(s.stats["joins"], 1)  # never torn down

        self.run_session(body, {"gate_wait_ms": 100})

    def test_not_ready_sends_refused(self):
        async def body(lk, s):
            lk.join_script = [link.JOIN_NO_RESPONSE] * 2
            await until(lambda: s.stats["join_failures"] >= 1)
            self.assertFalse(s.may_send(False))
            self.assertFalse(await s.send(DST, 4059, b"x"))
            await self.serving(lk, s)

        self.run_session(body)


class Units(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)

    def tearDown(self):
        log.set_sink(None)

    def test_settings_repairs(self):
        s = rs._settings({"route": "x", "stale_tries": -1, "bulk_reserve_pct": 99,
                          "pana_lifetime_s": True, "airtime_budget_ms": 10})
        self.assertEqual((s["route"], s["stale_tries"], s["bulk_reserve_pct"]), ("han", 3, 20))
        self.assertEqual((s["pana_lifetime_s"], s["airtime_budget_ms"]), (3600, 360000))


if __name__ == "__main__":
    unittest.main()
