"""Push scheduler (firmware/app/push.py) with a fake store view, a fake state file and fake clocks:
retry/back-off sequence and give-up event, the radio not ready, the rate limit over a 45-day
backlog, order, nothing pushed twice in steady state, backfilled slots pushed, the persisted floor
(written before a backfilled record) and the resume after a simulated reboot; plus the async
shell with a fake radio session and the real IntervalStore's put listener."""

import asyncio
import unittest
from array import array

from state_fakes import FakeState

from firmware import events, log, timeutil
from firmware.app import push as ap
from firmware.app.views import MeterView
from firmware.cosem import push as cp
from firmware.hal.norflash import NorFlash
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

S0 = timeutil.slot_of_t2k(timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0))
DAY = 48


class Env:
    time_zone = -540
    offset_min = 540


class Clock:
    def __init__(self, t=None):
        self.t = t

    def now_t2k(self):
        return self.t


class FakeView:
    """Stored slots as a bitmap over [base, base + n): rows computed on demand (the 45-day test
    holds 2,160 slots without 2,160 tuples). put() calls the listeners first, like the store."""

    def __init__(self, base, n=4 * 1024):
        self.base = base
        self.present = bytearray(n)
        self.listeners = []
        self.version = {}

    def put(self, slot, meter=0):
        for fn in self.listeners:
            fn(meter, slot)
        self.present[slot - self.base] = 1

    def row(self, slot):
        return (slot, 1000 + slot - self.base, 3, self.version.get(slot, 0))

    def latest(self):
        for i in range(len(self.present) - 1, -1, -1):
            if self.present[i]:
                return self.row(self.base + i)
        return None

    def rows(self, a, b):
        a = max(a, self.base)
        b = min(b, self.base + len(self.present) - 1)
        for s in range(a, b + 1):
            if self.present[s - self.base]:
                yield self.row(s)


def make(views, cfg=None, state=None, settings=None, clock=None, events_=None):
    s = settings or cp.PushSettings()
    c = {"seed": 1, "randomisation_s": 0}
    c.update(cfg or {})
    s.randomisation_s = c["randomisation_s"]
    sink = events_ if events_ is not None else []
    sch = ap.PushScheduler(views, s, cp.DataNotificationEncoder(Env(), 1), clock or Clock(), c,
                           state if state is not None else FakeState(),
                           lambda code, detail: sink.append((code, detail)))
    for k in range(len(views)):
        if hasattr(views[k], "listeners"):
            views[k].listeners.append(sch.on_put)
    return sch


def drive(sch, t, until, ok=lambda row, t: True):
    """Run the core with a fake tick clock from t to until; returns ([(t, meter, slot)], t)."""
    out = []
    while t < until:
        w = sch.due(t)
        if w is None:
            k, row = sch.current
            good = ok(row, t)
            out.append((t, k, row[0], good))
            sch.sent(good, t)
        else:
            t += w
    return out, t


class SchedulerTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_first_start_pushes_only_new_slots(self):
        v = FakeView(S0)
        for s in range(S0, S0 + 10):
            v.put(s)
        st = FakeState()
        sch = make([v], state=st)
        self.assertEqual(st.values[ap.STATE_KEY], [S0 + 9])  # the start is persisted at once
        self.assertEqual(drive(sch, 0, 600000)[0], [])
        v.put(S0 + 10)
        self.assertEqual([x[2] for x in drive(sch, 600000, 1200000)[0]], [S0 + 10])

    def test_steady_state_each_slot_once_in_order(self):
        v = FakeView(S0)
        st = FakeState()
        sch = make([v], state=st)
        t = 0
        sent = []
        for i in range(3 * DAY):
            v.put(S0 + i)
            got, t = drive(sch, t, t + 1800000)
            sent += [x[2] for x in got]
        self.assertEqual(sent, list(range(S0, S0 + 3 * DAY)))
        # batched: one state write per persist_every slots (plus the start)
        self.assertEqual(st.writes, 1 + 3 * DAY // 8)

    def test_retry_backoff_then_give_up_event(self):
        v = FakeView(S0)
        ev = []
        sch = make([v], cfg={"persist_every": 1}, events_=ev)
        sch.settings.retries = 3
        sch.settings.repetition_delay_s = 60
        v.put(S0)
        got, t = drive(sch, 0, 3600000, ok=lambda row, t: row[0] != S0)
        # 1 + 3 attempts for S0 at 0, +60 s, +120 s, +240 s, then given up
        self.assertEqual([(x[0], x[2]) for x in got],
                         [(0, S0), (60000, S0), (180000, S0), (420000, S0)])
        v.put(S0 + 1)
        got, t = drive(sch, t, t + 3600000)
        self.assertEqual([x[2] for x in got], [S0 + 1])
        self.assertEqual(ev, [(events.PUSH_GIVEN_UP, S0)])
        self.assertEqual(sch.stats["given_up"], 1)
        self.assertTrue(any("given up" in ln for ln in self.lines))
        self.assertEqual(sch.meters[0].cursor, S0 + 1)

    def test_radio_not_ready_spends_no_retries(self):
        v = FakeView(S0)
        ev = []
        sch = make([v], events_=ev)
        v.put(S0)
        t = 0
        waits = []
        for _ in range(10):  # a long outage: ten not-ready rounds, back-off growing
            self.assertIsNone(sch.due(t))
            sch.not_ready(t)
            w = sch.due(t)
            waits.append(w)
            t += w
        self.assertEqual(waits[:4], [60000, 120000, 240000, 480000])
        self.assertEqual(waits[-1], 3600000)  # capped
        got, t = drive(sch, t, t + 60000)
        self.assertEqual([x[2] for x in got], [S0])
        self.assertEqual(ev, [])

    def test_rate_limit_45_day_backlog(self):
        v = FakeView(S0, n=45 * DAY + 10)
        sch = make([v], cfg={"rate_per_min": 6, "burst": 4})
        sch.meters[0].cursor = S0 - 1  # nothing pushed yet: the whole backlog is due
        for s in range(S0, S0 + 45 * DAY):
            v.present[s - S0] = 1
        # the drive loop with arrays (2,160 tuples do not fit the MicroPython lane's heap)
        slots = array("i")
        times = array("i")
        t = 0
        while t < 24 * 3600000:
            w = sch.due(t)
            if w is None:
                slots.append(sch.current[1][0])
                times.append(t)
                sch.sent(True, t)
            else:
                t += w
        self.assertEqual(len(slots), 45 * DAY)
        # the newest slot first (a live value is not held behind the backlog), then the rest
        # once each, oldest first
        self.assertEqual(slots[0], S0 + 45 * DAY - 1)
        for i in range(1, len(slots)):
            self.assertEqual(slots[i], S0 + i - 1)
        # bounded: in any minute at most burst + rate sends
        j = 0
        for i in range(len(times)):
            while times[i] - times[j] >= 60000:
                j += 1
            self.assertLessEqual(i - j + 1, 4 + 6)
        # and the whole backlog takes the time the rate says (2,160 at 6/min: 6 hours)
        self.assertGreaterEqual(times[-1], (45 * DAY - 4) * 10000)
        self.assertLess(times[-1], (45 * DAY) * 10000 + 1)

    def test_live_slot_not_held_behind_a_draining_backlog(self):
        v = FakeView(S0)
        sch = make([v], cfg={"rate_per_min": 6, "burst": 1})
        sch.meters[0].cursor = S0 - 1
        for s in range(S0, S0 + 200):
            v.present[s - S0] = 1
        got, t = drive(sch, 0, 600000)  # 61 sends in 10 minutes: the newest, then 60 oldest
        sent = [x[2] for x in got]
        self.assertEqual(sent[:3], [S0 + 199, S0, S0 + 1])
        v.put(S0 + 200)  # a new boundary while 139 slots are still due
        more, t = drive(sch, t, t + 24 * 3600000)
        sent += [x[2] for x in more]
        # right after the slot already being sent, not after the backlog
        self.assertEqual(more[1][2], S0 + 200)
        self.assertEqual(sorted(sent), list(range(S0, S0 + 201)))  # each exactly once
        self.assertEqual(sch.meters[0].ahead, [])

    def test_backfilled_slots_pushed_once_then_live(self):
        v = FakeView(S0)
        st = FakeState()
        sch = make([v], state=st)
        for s in range(S0 + 100, S0 + 103):
            v.put(s)
        t = drive(sch, 0, 600000)[1]
        w0 = st.writes
        # backfill fills 20 older slots: the floor goes below them before the first is stored
        seen = []
        v.listeners.insert(0, lambda m, s: seen.append(list(st.values[ap.STATE_KEY])))
        for s in range(S0 + 40, S0 + 60):
            v.put(s)
        self.assertEqual(st.writes, w0 + 1)  # one write for the pass, not one per slot
        self.assertEqual(st.values[ap.STATE_KEY], [S0 + 39])
        v.put(S0 + 103)  # the live slot of the next boundary
        got, t = drive(sch, t, t + 3600000)
        # the live slot first, then the backfilled ones oldest first
        self.assertEqual([x[2] for x in got], [S0 + 103] + list(range(S0 + 40, S0 + 60)))
        self.assertEqual(sch.meters[0].nbits, 0)
        # written when the bitmap drained and the cursor passed the slot pushed ahead
        self.assertEqual(st.values[ap.STATE_KEY], [S0 + 103])
        self.assertEqual(drive(sch, t, t + 3600000)[0], [])  # nothing twice

    def test_state_write_failure_never_stops_storing(self):
        class BrokenState(FakeState):
            def set(self, key, value):
                raise OSError(28)

        v = FakeView(S0)
        sch = make([v], state=BrokenState())
        v.put(S0 + 5)
        drive(sch, 0, 600000)
        v.put(S0 + 1)  # backfill: the floor write fails, the value is still stored
        self.assertEqual(v.present[1], 1)
        self.assertTrue(any("push floor not saved" in ln for ln in self.lines))
        got = drive(sch, 600000, 1200000)[0]
        self.assertEqual([x[2] for x in got], [S0 + 1])

    def test_backfill_older_than_the_bitmap_rewinds(self):
        v = FakeView(S0)
        st = FakeState()
        sch = make([v], cfg={"backlog_slots": 96}, state=st)
        for s in range(S0 + 200, S0 + 202):
            v.put(s)
        t = drive(sch, 0, 600000)[1]
        v.put(S0 + 10)  # 191 slots below the cursor, the bitmap spans 96
        self.assertEqual(st.values[ap.STATE_KEY], [S0 + 9])
        got, t = drive(sch, t, t + 3600000)
        # at least once: the older slot, then the already pushed ones again
        self.assertEqual([x[2] for x in got], [S0 + 201, S0 + 10, S0 + 200])

    def test_reboot_resumes_from_the_persisted_floor(self):
        v = FakeView(S0 - 100)
        st = FakeState()
        sch = make([v], state=st)
        pushed = []
        t = 0
        for i in range(21):
            v.put(S0 + i)
            got, t = drive(sch, t, t + 1800000)
            pushed += [x[2] for x in got]
        # a backfilled slot stored, then the power is cut before it is pushed
        v.put(S0 - 5)
        self.assertEqual(st.values[ap.STATE_KEY], [S0 - 6])
        # reboot: RAM lost, the state file and the store kept
        sch2 = make([v], state=FakeState(st.values))
        self.assertEqual(sch2.meters[0].cursor, S0 - 6)
        v.put(S0 + 21)
        got, t = drive(sch2, t, t + 3600000)
        again = [x[2] for x in got]
        self.assertIn(S0 - 5, again)  # nothing silently lost
        # the live slot first, then at least once everything above the floor
        self.assertEqual(again, [S0 + 21, S0 - 5] + list(range(S0, S0 + 21)))

    def test_reboot_without_backfill_repeats_fewer_than_persist_every(self):
        v = FakeView(S0)
        st = FakeState()
        sch = make([v], state=st, cfg={"persist_every": 8})
        t = 0
        for i in range(13):
            v.put(S0 + i)
            t = drive(sch, t, t + 1800000)[1]
        sch2 = make([v], state=FakeState(st.values), cfg={"persist_every": 8})
        got = drive(sch2, t, t + 3600000)[0]
        # the floor was written at S0 (first push) and S0 + 8: S0 + 9 .. S0 + 12 go again
        self.assertEqual([x[2] for x in got], [S0 + 12, S0 + 9, S0 + 10, S0 + 11])
        self.assertLess(len(got), 8)

    def test_slot_stored_again_while_in_flight_is_pushed_again(self):
        v = FakeView(S0)
        sch = make([v])
        v.put(S0)
        self.assertIsNone(sch.due(0))
        v.version[S0] = 0x40
        v.put(S0)  # a better value for the slot, while its push is on the radio
        sch.sent(True, 0)
        got = drive(sch, 0, 600000)[0]
        self.assertEqual([x[2] for x in got], [S0])

    def test_randomised_first_send_seeded(self):
        v = FakeView(S0)
        firsts = []
        for seed in (1, 2, 1):
            sch = make([v], cfg={"seed": seed, "randomisation_s": 30})
            v.put(S0 + seed)  # a new slot after an idle queue
            w = sch.due(1000)
            self.assertGreaterEqual(w, 0)
            self.assertLessEqual(w, 30000)
            firsts.append(w)
            sch.trigger()  # push setup method 1: at once
            self.assertIsNone(sch.due(1000))
        self.assertEqual(firsts[0], firsts[2])
        self.assertNotEqual(firsts[0], firsts[1])

    def test_communication_window(self):
        v = FakeView(S0)
        s = cp.PushSettings()
        s.windows = [(22 * 60, 6 * 60)]  # 22:00-06:00 JST
        clock = Clock(timeutil.t2k_from_fields(2024, 4, 1, 12, 0, 0))  # 21:00 JST
        sch = make([v], settings=s, clock=clock)
        v.put(S0)
        self.assertEqual(sch.due(0), 60000)  # an hour away: look again in a minute
        clock.t += 3600 - 30
        self.assertEqual(sch.due(0), 30000)
        clock.t += 30
        self.assertIsNone(sch.due(0))
        clock.t = None  # no calendar time: the window cannot be judged
        self.assertEqual(sch.due(0), 60000)

    def test_two_meters_round_robin(self):
        v0 = FakeView(S0)
        v1 = FakeView(S0)
        sch = make([v0, v1])
        v1.listeners = []
        v1.listeners.append(lambda m, s: sch.on_put(1, s))
        for i in range(3):
            v0.put(S0 + i)
            v1.put(S0 + i, 1)
        got = drive(sch, 0, 600000)[0]
        self.assertEqual([(x[1], x[2]) for x in got],
                         [(0, S0 + 2), (1, S0 + 2), (0, S0), (1, S0), (0, S0 + 1), (1, S0 + 1)])


def listening_scheduler():
    """(store, scheduler): one meter's store holding the S0 row, the scheduler listening to
    its puts and fast enough (600 per minute) for a test to wait on."""
    store = IntervalStore(FlashLog(NorFlash(8, block_size=256)), max_meters=1)
    store.put(0, S0, 100, 1, 0x01, "fixed")
    sch = make([MeterView(store, 0)], cfg={"rate_per_min": 600, "burst": 10})
    store.put_listeners.append(sch.on_put)
    return store, sch


class FakeSession:
    def __init__(self):
        self.peer_mac = bytes.fromhex("001D129012345678")
        self.ready = True
        self.sent = []

    def is_ready(self):
        return self.ready

    async def send(self, dst, port, payload):
        self.sent.append((bytes(dst), port, bytes(payload)))
        return True


class ShellTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_store_listener_and_session(self):
        store, sch = listening_scheduler()
        self.assertEqual(sch.meters[0].cursor, S0)
        sess = FakeSession()

        async def go():
            task = asyncio.create_task(sch.run(sess))
            await asyncio.sleep(0)
            store.put(0, S0 + 2, 120, 1, 0x01, "fixed")
            store.put(0, S0 + 1, 110, 1, 0x01, "history")  # backfill
            for _ in range(200):
                if len(sess.sent) >= 2:
                    break
                await asyncio.sleep(0.01)
            task.cancel()

        asyncio.run(go())
        self.assertEqual(len(sess.sent), 2)
        # the smart meter's link-local address from the joined peer's MAC
        self.assertEqual(sess.sent[0][0], bytes.fromhex("fe80000000000000021d129012345678"))
        self.assertEqual(sess.sent[0][1], 4059)
        vals = []
        for _dst, _port, wpdu in sess.sent:
            self.assertEqual(wpdu[:8], bytes.fromhex("000100010001") + bytes((0, len(wpdu) - 8)))
            self.assertEqual(wpdu[8], 0x0F)
            vals.append(wpdu[-20:])  # +A, -A (long64-unsigned Wh, the default), status
        # the live slot, then the backfilled one (status bit 0x40); 0.1 kWh counters in Wh
        self.assertEqual(vals, [
            bytes.fromhex("15" "0000000000002ee0" "15" "0000000000000064" "1100"),
            bytes.fromhex("15" "0000000000002af8" "15" "0000000000000064" "1140")])


if __name__ == "__main__":
    unittest.main()
