# The optional meter-clock keeper and NTP source (docs/clock.md section 6): what decides a set of
# the meter's clock (drift, Set map, date, quiet window, min interval, only after a smart-meter
# set) and when NTP may set the terminal's clock (never while the smart meter's set is fresh),
# with the clock listener's events naming the source. Both runtimes.
import asyncio
import unittest

from rng import Rng

from firmware import events, timeutil
from firmware.app import meterclock as mc
from firmware.app import ntp
from firmware.app.config import DEFAULTS
from firmware.app.terminal import Terminal
from firmware.hal import clock as clockmod
from firmware.hal.clock import CalendarClock
from firmware.hal.sntp import SntpError
from firmware.meter import clockprops, profiles
from firmware.meter.drmeter import MeterTimeout
from firmware.store.eventlog import DETAIL_NO_OLD_TIME

# 2026-12-01 14:10:00 JST: 10 minutes into a slot (its quiet part)
T = timeutil.t2k_from_fields(2026, 12, 1, 5, 10, 0)


class Ticks:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms


def make_clock(doubtful_after_s=172800):
    ticks = Ticks()
    c = CalendarClock(ticks=ticks, diff=lambda a, b: a - b)
    c.configure(slew_max_s=0, doubtful_after_s=doubtful_after_s)  # every set steps
    return c, ticks


class FakeClient:
    def __init__(self, clock, offset_s=0, setmap=(0x98, 0xDA), sync=0x01, cls=0x028E):
        self.clock = clock
        self.offset_s = offset_s
        self.profile = profiles.PROFILES[cls]
        self.setmap = setmap
        self.sync = sync
        self.reads = 0
        self.sets = []
        self.accept = True
        self.silent = False

    async def clock_epcs(self):
        if self.silent:
            raise MeterTimeout("silent")
        p = self.profile
        t = None
        for e in (p.time, 0x97):
            if e in self.setmap:
                t = e
                break
        return (0x98 if 0x98 in self.setmap else None), t

    async def read_meter_clock(self, time_epc=None):
        self.reads += 1
        t = self.clock.now_t2k() + self.offset_s
        if time_epc == 0x97:
            t -= t % 60  # HH MM: no seconds
        return t, self.sync

    async def set_clock(self, t2k, date_epc, time_epc):
        self.sets.append((t2k, date_epc, time_epc))
        if self.accept:
            self.offset_s = 0
        return self.accept


class Poller:
    unit_code = 0x02


class Channel:
    def __init__(self, client, index=0):
        self.client = client
        self.index = index
        self.poller = Poller()


def keeper_for(clock, client, min_s=86400, drift_s=5):
    cfg = dict(DEFAULTS["clock"])
    cfg["set_meter_min_s"] = min_s
    cfg["set_meter_drift_s"] = drift_s
    got = []
    k = mc.MeterClockKeeper(clock, [Channel(client)], cfg, 540,
                            lambda code, detail=0: got.append((code, detail)),
                            port=lambda c: c)
    return k, got


class DecideTest(unittest.TestCase):
    def test_decide(self):
        self.assertEqual(mc.decide(None, 5, 0x98, 0xDA, False), mc.UNKNOWN)
        self.assertEqual(mc.decide(5, 5, 0x98, 0xDA, False), mc.KEEP)
        self.assertEqual(mc.decide(-5, 5, None, None, False), mc.KEEP)
        self.assertEqual(mc.decide(6, 5, 0x98, 0xDA, False), mc.SET)
        self.assertEqual(mc.decide(-6, 5, None, 0xDA, False), mc.SET)  # same date: time only
        self.assertEqual(mc.decide(-6, 5, None, 0xDA, True), mc.UNSETTABLE)
        self.assertEqual(mc.decide(600, 5, 0x98, None, False), mc.UNSETTABLE)

    def test_quiet_window(self):
        b = T - T % 1800
        self.assertEqual(mc.quiet_wait_s(b), 300)
        self.assertEqual(mc.quiet_wait_s(b + 299), 1)
        self.assertEqual(mc.quiet_wait_s(b + 300), 0)
        self.assertEqual(mc.quiet_wait_s(b + 1500), 0)
        self.assertEqual(mc.quiet_wait_s(b + 1501), 599)

    def test_check_due(self):
        self.assertTrue(mc.check_due(T, None, 86400))
        self.assertFalse(mc.check_due(T + 86399, T, 86400))
        self.assertTrue(mc.check_due(T + 86400, T, 86400))
        self.assertTrue(mc.check_due(T - 1, T, 86400))  # stepped back: cannot judge


class MeterClockCodecTest(unittest.TestCase):
    def test_round_trip(self):
        for epc, t in ((0xDA, T + 37), (0x97, T)):
            d, tm = clockprops.encode_meter_clock(t, 540, epc)
            self.assertEqual(len(tm), 3 if epc == 0xDA else 2)
            self.assertEqual(clockprops.decode_meter_clock(d, tm, 540), t)
        # 23:59:59 JST on 31 December: the local date is the meter's
        t = timeutil.t2k_from_fields(2026, 12, 31, 14, 59, 59)
        self.assertEqual(clockprops.encode_meter_clock(t, 540, 0xDA),
                         (b"\x07\xea\x0c\x1f", b"\x17\x3b\x3b"))

    def test_malformed(self):
        good_d, good_t = clockprops.encode_meter_clock(T, 540, 0xDA)
        for d, tm in ((None, good_t), (good_d, None), (good_d[:3], good_t), (good_d, b"\x01"),
                      (good_d, b"\x01\x02\x03\x04"), (b"\x07\xea\x02\x1e", good_t),
                      (b"\x07\xea\x0d\x01", good_t), (good_d, b"\x18\x00\x00"),
                      (good_d, b"\x00\x3c"), (good_d, b"\x00\x00\x3c"),
                      (b"\x07\xcf\x01\x01", good_t)):
            with self.assertRaises(ValueError):
                clockprops.decode_meter_clock(d, tm, 540)

    def test_fuzz(self):
        rng = Rng(97)
        for _ in range(2000):
            d = bytes([rng.below(256) for _ in range(rng.below(6))])
            tm = bytes([rng.below(256) for _ in range(rng.below(5))])
            try:
                t = clockprops.decode_meter_clock(d, tm, 540)
            except ValueError:
                continue
            self.assertEqual(len(d), 4)
            self.assertTrue(len(tm) in (2, 3))
            self.assertEqual(clockprops.decode_meter_clock(
                *clockprops.encode_meter_clock(t, 540, 0xDA), 540), t)


class KeeperTest(unittest.TestCase):
    def test_off_meter_clock_set_once_per_interval(self):
        c, ticks = make_clock()
        c.set_t2k(T)
        cl = FakeClient(c, offset_s=125)
        k, got = keeper_for(c, cl)
        self.assertEqual(asyncio.run(k.check(k.channels[0])), mc.SET)
        self.assertEqual(cl.sets, [(T, 0x98, 0xDA)])
        self.assertEqual(got, [(events.METER_CLOCK_SET, 125)])
        self.assertEqual(k.offset[0], 0)  # read back after the set
        self.assertEqual(k.status(0), "set")
        # not again (not even read) within set_meter_min_s
        cl.offset_s = -300
        ticks.ms += 3600 * 1000
        self.assertIsNone(asyncio.run(k.check(k.channels[0])))
        self.assertEqual(cl.reads, 2)
        ticks.ms += 86400 * 1000
        self.assertEqual(asyncio.run(k.check(k.channels[0])), mc.SET)
        self.assertEqual(got[-1], (events.METER_CLOCK_SET, -300))

    def test_in_time_not_set(self):
        c, _ = make_clock()
        c.set_t2k(T)
        cl = FakeClient(c, offset_s=-5)
        k, got = keeper_for(c, cl)
        self.assertEqual(asyncio.run(k.check(k.channels[0])), mc.KEEP)
        self.assertEqual((cl.sets, got), ([], []))

    def test_not_in_set_map_left_alone(self):
        c, _ = make_clock()
        c.set_t2k(T)
        cl = FakeClient(c, offset_s=600, setmap=(0xD5,), sync=0x02)
        k, got = keeper_for(c, cl)
        self.assertEqual(asyncio.run(k.check(k.channels[0])), mc.UNSETTABLE)
        self.assertEqual((cl.sets, got), ([], []))
        self.assertEqual(k.offset[0], 600)
        self.assertEqual(k.sync[0], 0x02)
        self.assertEqual(k.status(0), "off but not settable")

    def test_wrong_date_without_settable_date(self):
        c, _ = make_clock()
        c.set_t2k(T)
        cl = FakeClient(c, offset_s=86400, setmap=(0xDA,))
        k, got = keeper_for(c, cl)
        self.assertEqual(asyncio.run(k.check(k.channels[0])), mc.UNSETTABLE)
        self.assertEqual(cl.sets, [])

    def test_hhmm_meter_drift_is_a_minute(self):
        c, _ = make_clock()
        c.set_t2k(T)  # :00 seconds: an HH MM set goes at once
        cl = FakeClient(c, offset_s=50, setmap=(0x97, 0x98), cls=0x0288)
        k, _ = keeper_for(c, cl)
        self.assertEqual(asyncio.run(k.check(k.channels[0])), mc.KEEP)
        cl.offset_s = 185
        k.last_check[0] = None
        self.assertEqual(asyncio.run(k.check(k.channels[0])), mc.SET)
        self.assertEqual(cl.sets, [(T, 0x98, 0x97)])

    def test_refused_is_no_event(self):
        c, _ = make_clock()
        c.set_t2k(T)
        cl = FakeClient(c, offset_s=90)
        cl.accept = False
        k, got = keeper_for(c, cl)
        asyncio.run(k.check(k.channels[0]))
        self.assertEqual((len(cl.sets), got, k.stats["refused"]), (1, [], 1))

    def test_not_before_metering_nor_when_silent(self):
        c, _ = make_clock()
        c.set_t2k(T)
        cl = FakeClient(c, offset_s=90)
        k, got = keeper_for(c, cl)
        k.channels[0].poller.unit_code = None
        self.assertIsNone(asyncio.run(k.check(k.channels[0])))
        k.channels[0].poller.unit_code = 2
        cl.silent = True
        self.assertIsNone(asyncio.run(k.check(k.channels[0])))
        self.assertEqual((cl.reads, cl.sets, k.stats["errors"]), (0, [], 1))
        self.assertIsNone(k.last_check[0])  # tried again at the next smart-meter set


class FakeKeeper:
    def __init__(self):
        self.woken = 0

    def authority_set(self):
        self.woken += 1


class Box:
    _on_clock_set = Terminal._on_clock_set


def box_for(clock):
    box = Box()
    box.cfg = {"meter": {"tz_offset_min": 540}, "clock": dict(DEFAULTS["clock"])}
    box.clock = clock
    box.events = []
    box.event = lambda code, detail=0: box.events.append((code, detail))
    box.channels = ()
    box.meter_clock = FakeKeeper()
    clock.add_listener(box._on_clock_set)
    return box


class ListenerSourceTest(unittest.TestCase):
    def test_ntp_sets_are_clock_ntp_and_never_wake_the_keeper(self):
        c, _ = make_clock()
        box = box_for(c)
        c.set_t2k(T, clockmod.SOURCE_NTP)
        c.set_t2k(T + 3600, clockmod.SOURCE_NTP)
        self.assertEqual(box.events, [(events.CLOCK_NTP, DETAIL_NO_OLD_TIME),
                                      (events.CLOCK_NTP, 3600)])
        self.assertEqual(box.meter_clock.woken, 0)
        self.assertIsNone(ntp.since_authority_s(c))
        c.set_t2k(T + 3600)  # the smart meter, routine: no event, but the keeper wakes
        self.assertEqual(len(box.events), 2)
        self.assertEqual(box.meter_clock.woken, 1)
        c.set_t2k(T + 7200)
        self.assertEqual(box.events[-1], (events.CLOCK_SET, 3600))
        self.assertEqual(box.meter_clock.woken, 2)


class FakeHal:
    def __init__(self, t=T, fail=None):
        self.t = t
        self.fail = fail
        self.queries = 0
        self.during = None  # fn() run while the query is in flight

    def lan_ip(self):
        return "127.0.0.1"

    async def query(self, bind_ip, server, port, timeout_ms, nonce):
        self.queries += 1
        if self.during:
            self.during()
        if self.fail:
            raise self.fail
        return self.t


def ntp_cfg():
    cfg = dict(DEFAULTS["clock"])
    cfg["ntp"] = True
    cfg["ntp_server"] = "127.0.0.9"
    return cfg


class NtpRuleTest(unittest.TestCase):
    def test_allowed(self):
        self.assertTrue(ntp.allowed(None, 172800))
        self.assertFalse(ntp.allowed(172800, 172800))
        self.assertTrue(ntp.allowed(172801, 172800))
        self.assertFalse(ntp.allowed(10 ** 8, 0))  # never doubtful: the smart meter's set holds

    def test_sets_only_while_the_smart_meter_has_not(self):
        c, ticks = make_clock(doubtful_after_s=172800)
        hal = FakeHal()
        src = ntp.NtpSource(hal, c, ntp_cfg(), query=hal.query)
        self.assertTrue(asyncio.run(src.poll_once()))  # invalid clock: NTP sets it
        self.assertEqual((c.now_t2k(), c.last_source), (T, clockmod.SOURCE_NTP))
        self.assertEqual(c.status(), 0)
        c.set_t2k(T + 100)  # the smart meter
        hal.t = T + 5000
        self.assertFalse(asyncio.run(src.poll_once()))
        self.assertEqual(hal.queries, 1)  # not even asked
        ticks.ms += 172801 * 1000  # no smart-meter set for doubtful_after_s
        self.assertTrue(asyncio.run(src.poll_once()))
        self.assertEqual(c.now_t2k(), T + 5000)

    def test_smart_meter_set_during_the_query_wins(self):
        c, _ = make_clock()
        hal = FakeHal(t=T + 999)
        hal.during = lambda: c.set_t2k(T)
        src = ntp.NtpSource(hal, c, ntp_cfg(), query=hal.query)
        self.assertFalse(asyncio.run(src.poll_once()))
        self.assertEqual((c.now_t2k(), src.stats["held_off"]), (T, 1))

    def test_bad_or_no_reply_sets_nothing(self):
        c, _ = make_clock()
        for fail, stat in ((SntpError("stratum 0"), "bad"), (OSError(110, "timeout"), "silent")):
            hal = FakeHal(fail=fail)
            src = ntp.NtpSource(hal, c, ntp_cfg(), query=hal.query)
            self.assertFalse(asyncio.run(src.poll_once()))
            self.assertEqual(src.stats[stat], 1)
        self.assertFalse(c.is_set())


if __name__ == "__main__":
    unittest.main()
