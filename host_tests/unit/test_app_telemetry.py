"""MQTT telemetry (firmware/app/telemetry.py) on both runtimes, with the real IntervalStore on the
NOR emulator and a fake MQTT client: the payload builders (golden text), Home Assistant discovery
configs, the queue (every slot once, oldest first, backfilled slots after the cursor, a slot whose
PUBACK never came sent again and only it, the floor persisted and resumed), the reconnect loop
(connect errors and garbage answers logged and retried, never a crash), and an injected crash of
the telemetry task that does not stop metering (the terminal's supervisor restarts it)."""

import asyncio
import json
import unittest

from state_fakes import FakeState

from firmware import log, timeutil
from firmware.app import telemetry as tm
from firmware.compat import sleep_ms, ticks_diff, ticks_ms
from firmware.hal.norflash import NorFlash
from firmware.store import record
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

S0 = timeutil.slot_of_t2k(timeutil.t2k_from_fields(2025, 3, 31, 15, 0, 0))  # 00:00 JST
LDN = "XXX0000000000001"
DEV = "iot-terminal-" + LDN


class FakeTerminal:
    def __init__(self, store=None, state=None):
        self.store = store or IntervalStore(FlashLog(NorFlash(8)), max_meters=1)
        self.state = state or FakeState()
        self.cfg = {"meter": {"tz_offset_min": 540},
                    "dlms": {"ldn": LDN, "backfill_status_bit": 0x40}}
        self.events = []

    def event(self, code, detail=0):
        self.events.append((code, detail))


class Broker:
    """What the fake clients talk to: messages delivered, and the faults to inject."""

    def __init__(self):
        self.msgs = []  # (topic, payload, retain, qos)
        self.connects = 0
        self.connect_errors = []  # exceptions raised by the next connects
        self.lose = {}  # publish number -> "before" (lost) | "after" (delivered, PUBACK lost)
        self.n = 0
        self.wills = []

    def slots(self):
        return [json.loads(p) for t, p, _r, _q in self.msgs if t.endswith("/slot")]

    def keys(self):
        return [(m["meter"], m["slot"]) for m in self.slots()]


class FakeClient:
    def __init__(self, broker):
        self.b = broker

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.b.wills.append((topic, msg, retain, qos))

    def connect(self):
        if self.b.connect_errors:
            raise self.b.connect_errors.pop(0)
        self.b.connects += 1

    def publish(self, topic, msg, retain=False, qos=0):
        self.b.n += 1
        how = self.b.lose.get(self.b.n)
        if how == "before":
            raise OSError(32)
        self.b.msgs.append((topic, msg, retain, qos))
        if how == "after":
            raise OSError(104)

    def ping(self):
        pass

    def poll(self):
        return None

    def close(self):
        pass


def make(term=None, broker=None, **cfg):
    term = term or FakeTerminal()
    broker = broker or Broker()
    c = {"enabled": True, "host": "127.0.0.1", "status_every_s": 3600}
    c.update(cfg)
    t = tm.Telemetry(term, c, lambda: {"up": 1}, lambda cfg, cid, tls: FakeClient(broker))
    t.backoff_ms = (5, 20)  # the unit tests do not wait seconds between connects
    return t, term, broker


def put(store, slot, fwd=None, source=record.SOURCE_FIXED, flags=0):
    store.put(0, slot, 1000 + (slot - S0) if fwd is None else fwd, 7, 0x01, source, flags)


def run_until(tele, pred, timeout_ms=5000, also=None):
    async def main():
        tasks = [asyncio.create_task(tele.run())]
        if also is not None:
            tasks.append(asyncio.create_task(also()))
        t0 = ticks_ms()
        while not pred() and ticks_diff(ticks_ms(), t0) < timeout_ms:
            await sleep_ms(5)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass

    asyncio.run(main())
    return pred()


class TestPayloads(unittest.TestCase):
    def test_slot_payload_golden(self):
        row = (S0 + 1, 272587, 24306, 0, 0x01)
        self.assertEqual(
            tm.slot_payload(0, row, 540),
            '{"meter":0,"slot":%d,"time":"2025-04-01T00:30:00+09:00","fwd":272587,"rev":24306,'
            '"unit":"kWh","exp":-1,"status":0,"backfilled":false}' % (S0 + 1))

    def test_slot_payload_no_data_and_backfilled(self):
        m = json.loads(tm.slot_payload(2, (S0, record.NO_DATA, 5, 0x44, 0x0A), 0))
        self.assertIsNone(m["fwd"])  # the meter had no value: never an invented number
        self.assertEqual(m["rev"], 5)
        self.assertEqual(m["exp"], 1)  # 0x0A: 10 kWh per unit
        self.assertTrue(m["backfilled"])
        self.assertEqual(m["status"], 0x44)
        self.assertEqual(m["time"], "2025-03-31T15:00:00Z")
        self.assertEqual(m["meter"], 2)

    def test_unknown_unit_is_null(self):
        self.assertIsNone(json.loads(tm.slot_payload(0, (S0, 1, 2, 0, 0x7F)))["exp"])

    def test_topic_name(self):
        self.assertEqual(tm.topic_name("a/b+c#d e"), "a_b_c_d_e")
        self.assertEqual(tm.topic_name(""), "terminal")

    def test_ha_configs(self):
        cfgs = tm.ha_configs("homeassistant", "pre", "dev1", 2)
        self.assertEqual(len(cfgs), 5)
        topics = [t for t, _p in cfgs]
        self.assertIn("homeassistant/sensor/dev1/dev1_meter1_reverse/config", topics)
        fwd = json.loads(cfgs[0][1])
        self.assertEqual(fwd["device_class"], "energy")
        self.assertEqual(fwd["state_class"], "total_increasing")
        self.assertEqual(fwd["unit_of_measurement"], "kWh")
        self.assertEqual(fwd["state_topic"], "pre/dev1/meter0/state")
        self.assertEqual(fwd["value_template"], "{{ value_json.fwd * 10 ** value_json.exp }}")
        self.assertEqual(fwd["device"]["identifiers"], ["dev1"])
        st = json.loads(cfgs[-1][1])
        self.assertEqual(st["state_topic"], "pre/dev1/availability")
        self.assertEqual(st["json_attributes_topic"], "pre/dev1/status")

    def test_ca_der(self):
        pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAEC\r\nAw==\n-----END CERTIFICATE-----\n"
        self.assertEqual(tm.ca_der(pem), b"\x00\x01\x02\x03")
        self.assertEqual(tm.ca_der(b"\x30\x82\x01"), b"\x30\x82\x01")  # DER as it is
        self.assertRaises(ValueError, tm.ca_der, b"-----BEGIN CERTIFICATE-----\nAAEC\n")

    def test_device_name(self):
        self.assertEqual(tm.device_name(dict(tm.DEFAULTS), {"dlms": {"ldn": LDN}}), DEV)
        self.assertEqual(tm.device_name(dict(tm.DEFAULTS, client_id="x"), {"dlms": None}), "x")


class TestQueue(unittest.TestCase):
    def test_every_slot_once_oldest_first_with_the_stores_values(self):
        t, term, b = make()
        for s in range(S0, S0 + 10):
            put(term.store, s)
        self.assertTrue(run_until(t, lambda: len(b.slots()) >= 10))
        self.assertEqual(b.keys(), [(0, s) for s in range(S0, S0 + 10)])
        for m in b.slots():
            self.assertEqual(m["fwd"], 1000 + m["slot"] - S0)
            self.assertEqual(m["rev"], 7)
        # QoS 1, not retained; the newest also on the retained state topic
        self.assertTrue(all(q == 1 and not r for tp, _p, r, q in b.msgs if tp.endswith("/slot")))
        state = [json.loads(p)["slot"] for tp, p, r, _q in b.msgs if tp.endswith("/state")]
        self.assertEqual(state, list(range(S0, S0 + 10)))
        self.assertEqual(b.wills, [("iot-terminal/%s/availability" % DEV, "offline", True, 1)])
        self.assertIn(("iot-terminal/%s/availability" % DEV, "online", True, 1), b.msgs)

    def test_backfilled_slots_below_the_cursor_are_sent(self):
        t, term, b = make()
        put(term.store, S0 + 20)
        self.assertTrue(run_until(t, lambda: len(b.slots()) >= 1))
        for s in range(S0 + 5, S0 + 8):  # backfill, below the cursor
            put(term.store, s, source=record.SOURCE_HISTORY)
        put(term.store, S0 + 21)
        self.assertTrue(run_until(t, lambda: len(b.slots()) >= 5))
        self.assertEqual(b.keys(), [(0, S0 + 20), (0, S0 + 5), (0, S0 + 6), (0, S0 + 7),
                                    (0, S0 + 21)])
        self.assertTrue(all(m["backfilled"] for m in b.slots()[1:4]))
        # the state topic never goes back: Home Assistant would read a meter reset
        state = [json.loads(p)["slot"] for tp, p, r, _q in b.msgs if tp.endswith("/state")]
        self.assertEqual(state, [S0 + 20, S0 + 21])

    def test_lost_puback_resends_that_slot_only(self):
        t, term, b = make()
        for s in range(S0, S0 + 6):
            put(term.store, s)
        # publish 1 = availability, 2 = status, then slots (and state after each slot)
        b.lose = {5: "after", 9: "before"}
        self.assertTrue(run_until(t, lambda: len(set(b.keys())) >= 6 and b.connects >= 3))
        keys = b.keys()
        self.assertEqual(sorted(set(keys)), [(0, s) for s in range(S0, S0 + 6)])
        dup = [k for k in set(keys) if keys.count(k) > 1]
        self.assertEqual(len(dup), 1)  # the slot whose PUBACK never came, and no other
        self.assertEqual(keys.count(dup[0]), 2)

    def test_floor_persisted_and_resumed(self):
        state = FakeState()
        term = FakeTerminal(state=state)
        t, term, b = make(term, persist_every=1)
        for s in range(S0, S0 + 4):
            put(term.store, s)
        self.assertTrue(run_until(t, lambda: len(b.slots()) >= 4))
        self.assertEqual(state.values[tm.STATE_KEY], [S0 + 3])
        term.store.put_listeners[:] = []
        # reboot: a new telemetry over the same store and state sends only what is new
        for s in range(S0 + 4, S0 + 6):
            put(term.store, s)
        t2, _term, b2 = make(term)
        self.assertTrue(run_until(t2, lambda: len(b2.slots()) >= 2))
        self.assertEqual(b2.keys(), [(0, S0 + 4), (0, S0 + 5)])

    def test_first_start_begins_at_the_newest_stored_slot(self):
        term = FakeTerminal()
        for s in range(S0, S0 + 3):
            put(term.store, s)
        t, term, b = make(term)  # like the push: history already stored is not sent
        put(term.store, S0 + 3)
        self.assertTrue(run_until(t, lambda: len(b.slots()) >= 1))
        self.assertEqual(b.keys(), [(0, S0 + 3)])


class TestReconnect(unittest.TestCase):
    def test_connect_errors_logged_and_retried(self):
        lines = []
        log.set_sink(lines.append)
        try:
            t, term, b = make()
            put(term.store, S0)
            b.connect_errors = [OSError(111), AssertionError(), IndexError("index out of range"),
                                ValueError("garbage"), tm_exc()]
            self.assertTrue(run_until(t, lambda: len(b.slots()) >= 1))
        finally:
            log.set_sink(None)
        self.assertEqual(t.stats["connect_failed"], 5)
        self.assertEqual(sum(1 for ln in lines if "mqtt: broker 127.0.0.1:" in ln
                             or "mqtt: broker 127.0.0.1" in ln), 5)
        self.assertEqual(b.keys(), [(0, S0)])

    def test_password_never_logged(self):
        lines = []
        log.set_sink(lines.append)
        try:
            t, term, b = make(user="u", password="Sekr1t-mqtt-pw")
            put(term.store, S0)
            b.connect_errors = [ValueError("bad auth for u/Sekr1t-mqtt-pw")]
            self.assertTrue(run_until(t, lambda: len(b.slots()) >= 1))
        finally:
            log.set_sink(None)
        text = "\n".join(lines)
        self.assertIn("bad auth for u/***", text)
        self.assertNotIn("Sekr1t", text)

    def test_back_off_doubles_to_the_cap(self):
        t, _term, b = make()
        t.backoff_ms = (1000, 4000)
        b.connect_errors = [OSError(111)] * 100
        waits = []
        real = tm.sleep_ms

        async def fake_sleep(ms):
            waits.append(ms)
            await real(0)

        tm.sleep_ms = fake_sleep
        try:
            run_until(t, lambda: len(waits) >= 5)
        finally:
            tm.sleep_ms = real
        self.assertEqual(waits[:5], [1000, 2000, 4000, 4000, 4000])

    def test_no_host_no_connect(self):
        t, _term, b = make(host="")
        run_until(t, lambda: False, 50)
        self.assertEqual(b.connects, 0)

    def test_bad_backoff_config_uses_default(self):
        t = tm.Telemetry(FakeTerminal(), {"backoff": [0, "x"]}, dict)
        self.assertEqual(t.backoff_ms, (2000, 300000))
        t = tm.Telemetry(FakeTerminal(), {"backoff": [3, 60]}, dict)
        self.assertEqual(t.backoff_ms, (3000, 60000))


def tm_exc():
    from firmware.app.mqttclient import MQTTException

    return MQTTException(5)


class TestCrash(unittest.TestCase):
    def test_injected_crash_does_not_stop_metering(self):
        from firmware.app.terminal import supervise

        t, term, b = make()

        class Lan:
            crashes = 0

            @property
            def up(self):
                Lan.crashes += 1
                raise RuntimeError("injected crash in the telemetry task")

        term.lan = Lan()
        stored = []

        async def metering():
            for s in range(S0, S0 + 20):
                put(term.store, s)
                stored.append(s)
                await sleep_ms(20)

        async def main():
            tasks = [asyncio.create_task(supervise("mqtt", t.run, backoff_ms=10,
                                                   max_backoff_ms=40)),
                     asyncio.create_task(metering())]
            await tasks[1]
            tasks[0].cancel()
            try:
                await tasks[0]
            except asyncio.CancelledError:
                pass

        lines = []
        log.set_sink(lines.append)
        try:
            asyncio.run(main())
        finally:
            log.set_sink(None)
        self.assertEqual(len(stored), 20)  # metering went on
        self.assertEqual(term.store.count(0), 20)
        self.assertGreaterEqual(Lan.crashes, 3)  # restarted again and again
        self.assertTrue(any("task crashed" in ln for ln in lines))
        # the put listener kept marking: once the task runs again, everything goes
        del term.lan
        self.assertTrue(run_until(t, lambda: len(b.slots()) >= 20))


if __name__ == "__main__":
    unittest.main()
