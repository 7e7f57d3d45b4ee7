"""MQTT telemetry against a real broker: mosquitto started by the test on the deployment's
loopback /24, the terminal firmware under the real `micropython` binary (accelerated clock) with
mqtt enabled, a paho-mqtt subscriber collecting every message.

- store-and-forward: the broker is stopped for several simulated hours and started again; every
  slot of the store (read from the flash image after the run) arrives, exactly one message per
  slot key (meter, slot), with the store's values;
- TLS: a self-signed CA and server certificate (cryptography), a mosquitto TLS listener, the
  firmware verifying the broker against the CA; the host client refuses a broker signed by
  another CA;
- Home Assistant discovery: the retained config messages validate against a JSON schema written
  from Home Assistant's documented MQTT sensor discovery keys."""

import datetime
import json
import os
import shutil
import time

import jsonschema
from loop_thread import LoopThread
from mqtt_broker import Broker, Collector, port_open

from firmware import timeutil
from firmware.hal.norflash import NorFlash
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore
from tools import deployment
from tools.deployment import Deployment, wait_until

RATE = 900  # 30 simulated minutes every 2 real seconds
BROKER_HOST = 25  # mosquitto on N.25 of the deployment's /24
PREFIX = "it"
# the telemetry's own modules and umqtt.simple on top of the deployment's heap (docs/memory.md)
HEAP = "%dk" % (int(deployment.default_heap()[:-1]) + deployment.MQTT_HEAP_KB)

# Home Assistant MQTT sensor discovery (https://www.home-assistant.io/integrations/sensor.mqtt/,
# "MQTT Discovery"): the keys we send, their types and the values HA accepts for them.
HA_DEVICE = {
    "type": "object",
    "properties": {"identifiers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                   "name": {"type": "string"}, "manufacturer": {"type": "string"},
                   "model": {"type": "string"}},
    "required": ["identifiers", "name"],
    "additionalProperties": False,
}
HA_SENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "unique_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        "object_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        "state_topic": {"type": "string", "pattern": "^[^#+]+$"},
        "value_template": {"type": "string"},
        "device_class": {"enum": ["energy"]},
        "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        "unit_of_measurement": {"enum": ["Wh", "kWh", "MWh"]},
        "availability_topic": {"type": "string", "pattern": "^[^#+]+$"},
        "json_attributes_topic": {"type": "string", "pattern": "^[^#+]+$"},
        "entity_category": {"enum": ["diagnostic", "config"]},
        "icon": {"type": "string", "pattern": "^mdi:"},
        "device": HA_DEVICE,
    },
    "required": ["unique_id", "state_topic", "device"],
    "additionalProperties": False,
    # an energy sensor: HA's long-term statistics need all of these together
    "if": {"properties": {"device_class": {"const": "energy"}}, "required": ["device_class"]},
    "then": {"required": ["state_class", "unit_of_measurement", "value_template"],
             "properties": {"state_class": {"enum": ["total", "total_increasing"]}}},
}


def _store_rows(d, copy=False):
    """{(meter, slot): (fwd, rev)} of every record in the terminal's flash image (copy: of a
    copy, while the firmware runs: mounting may seal a torn sector)."""
    path = d.firmware_config()["store"]["path"]
    if copy:
        shutil.copy(path, path + ".copy")
        path += ".copy"
    f = NorFlash(128, path=path)
    try:
        st = IntervalStore(FlashLog(f), max_meters=1)
        return {(0, row[0]): (row[1], row[2]) for row in st.rows(0)}
    finally:
        f.close()


def _slot_messages(msgs):
    out = []
    for topic, payload, _retain in msgs:
        if topic.endswith("/slot"):
            out.append(json.loads(payload))
    return out


def _start(d, bg, head):
    bg.run(d.start())
    bg.run(head.connect(timeout_s=60), 90)
    bg.run(head.sync_clock())


def _stop(d, bg, head, broker, col):
    """Everything _start and the test started, stopped; mosquitto and the loop thread even when
    the deployment's stop fails."""
    try:
        col.close()
        head.close()
        bg.run(d.stop())
    finally:
        broker.stop()
        bg.close()


def test_store_and_forward_through_a_broker_outage(tmp_path):
    bg = LoopThread()
    d = Deployment(rate=RATE, heap=HEAP, workdir=str(tmp_path / "dep"))
    os.makedirs(d.workdir, exist_ok=True)
    host = d.addr(BROKER_HOST)
    broker = Broker(str(tmp_path), host)
    d.overrides["mqtt"] = {"enabled": True, "host": host, "prefix": PREFIX,
                           "status_every_s": 5, "keepalive_s": 10, "backoff": [1, 2],
                           "ha_discovery": True}
    d.overrides["terminal"] = {"heap_log": True}
    broker.start()
    col = Collector(host, 1883, [PREFIX + "/#", "homeassistant/#"])
    head = d.head_end(out=lambda *a: None)
    try:
        _start(d, bg, head)
        first_b = head.clock_set_at - head.clock_set_at % 1800 + 1800
        # two live boundaries with the broker up (and the backfill of the meter's history)
        time.sleep(d.sim.wall_seconds_until(first_b + 1800 + 300))
        assert wait_until(lambda: len(_slot_messages(col.snapshot())) > 2, 30), \
            d.terminal_log()[-3000:]
        # outage: five simulated hours (ten boundaries) with no broker
        broker.stop()
        assert not port_open(host, 1883)
        time.sleep(d.sim.wall_seconds_until(first_b + 12 * 1800 + 300))
        assert d.firmware_alive()
        broker.start()
        time.sleep(d.sim.wall_seconds_until(first_b + 13 * 1800 + 300))
        # everything stored so far arrives (the store read from a copy of the flash image)
        def caught_up():
            got = {(m["meter"], m["slot"]) for m in _slot_messages(col.snapshot())}
            return set(_store_rows(d, copy=True)) <= got

        t0 = time.monotonic()
        assert wait_until(caught_up, 120, 1), d.terminal_log()[-3000:]
        print("caught up %.1f s after the broker came back" % (time.monotonic() - t0))
        time.sleep(1)
        d.stop_firmware()
        stored = _store_rows(d)
        log_text = d.terminal_log()
        msgs = col.snapshot()
        slots = _slot_messages(msgs)
        by_key = {}
        for m in slots:
            by_key.setdefault((m["meter"], m["slot"]), []).append(m)
        # no loss: every slot of the store, with the store's values
        missing = sorted(set(stored) - set(by_key))
        assert not missing, "%d of %d slots never published: %r\n%s" % (
            len(missing), len(stored), missing[:10], d.terminal_log()[-4000:])
        for key, (fwd, rev) in stored.items():
            m = by_key[key][-1]
            assert (m["fwd"], m["rev"]) == (fwd, rev), key
            assert m["unit"] == "kWh" and m["exp"] == -1
            assert m["time"] == timeutil.iso(timeutil.t2k_of_slot(key[1]), 540)
        # nothing invented
        assert not set(by_key) - set(stored)
        # no duplicates by slot key. QoS 1 is at-least-once: the one slot in flight when the
        # broker went down may have reached it (and the subscriber) while its PUBACK never came
        # back: that slot, and only that one, is sent again after the reconnect, identical. So
        # at most one duplicated key per connection lost, with identical payloads; none else.
        # The broker's own redeliveries to this subscriber (DUP set: mosquitto stopped before
        # the subscriber's PUBACK reached it) are the subscriber side of QoS 1, not the terminal
        # publishing twice: they are told apart and not counted.
        drops = log_text.count("mqtt: connection lost")
        assert 1 <= drops <= 2, log_text[-3000:]
        again = {}
        for topic, payload in col.redelivered:
            if topic.endswith("/slot"):
                m = json.loads(payload)
                k = (m["meter"], m["slot"])
                again[k] = again.get(k, 0) + 1
        print("broker redeliveries to the subscriber: %d" % sum(again.values()))
        dups = {k: v for k, v in by_key.items() if len(v) - again.get(k, 0) > 1}
        assert len(dups) <= drops, "published twice: %r" % sorted(dups)[:5]
        for k, v in dups.items():
            assert len(v) == 2 and v[0] == v[1], (k, v)
        # slots stored during the outage went after it, from the flash log
        outage = [k for k in stored if first_b + 2 * 1800 <= timeutil.t2k_of_slot(k[1])
                  < first_b + 12 * 1800]
        assert len(outage) >= 8, sorted(stored)
        backfilled = [m for m in slots if m["backfilled"]]
        assert backfilled, "no slot recovered by backfill was published"
        # status messages, before and after the outage
        status = [json.loads(p) for t, p, _r in msgs if t == "%s/%s/status"
                  % (PREFIX, "iot-terminal-XXX0000000000001")]
        assert len(status) >= 2 and all("mqtt" in s for s in status)
        # Home Assistant discovery: retained config messages that validate
        cfgs = [(t, json.loads(p)) for t, p, _r in msgs if t.startswith("homeassistant/")]
        assert {c["unique_id"] for _t, c in cfgs} == {
            "iot-terminal-XXX0000000000001_meter0_forward",
            "iot-terminal-XXX0000000000001_meter0_reverse",
            "iot-terminal-XXX0000000000001_status"}
        for topic, c in cfgs:
            assert topic.startswith("homeassistant/sensor/") and topic.endswith("/config")
            jsonschema.validate(c, HA_SENSOR)
        assert "Traceback" not in log_text
        assert "mqtt: broker %s" % host in log_text  # the reconnect attempts were logged
        print([ln for ln in log_text.splitlines() if "heap:" in ln][-6:])
    finally:
        _stop(d, bg, head, broker, col)


# -- TLS ---------------------------------------------------------------------------------------

def _make_ca(tmp, name, host):
    """(ca.pem path, server cert path, key path) of a fresh CA and a server cert for host."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address(host))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = {}
    for what, data in (("ca", ca.public_bytes(serialization.Encoding.PEM)),
                       ("cert", cert.public_bytes(serialization.Encoding.PEM)),
                       ("key", key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                                 serialization.NoEncryption()))):
        p = os.path.join(tmp, "%s-%s.pem" % (name, what))
        with open(p, "wb") as f:
            f.write(data)
        out[what] = p
    return out


def test_tls_with_a_verified_broker(tmp_path):
    bg = LoopThread()
    d = Deployment(rate=RATE, heap=HEAP, workdir=str(tmp_path / "dep"))
    os.makedirs(d.workdir, exist_ok=True)
    host = d.addr(BROKER_HOST)
    tls = _make_ca(str(tmp_path), "testca", host)
    other = _make_ca(str(tmp_path), "otherca", host)
    broker = Broker(str(tmp_path), host, tls=tls)
    d.overrides["mqtt"] = {"enabled": True, "host": host, "prefix": PREFIX, "tls": True,
                           "ca_file": tls["ca"], "backoff": [1, 2]}
    broker.start()
    col = Collector(host, 1883, [PREFIX + "/#"])
    head = d.head_end(out=lambda *a: None)
    try:
        # the host's client (CPython) refuses a broker whose certificate another CA signed
        from firmware.app import telemetry
        from firmware.app.mqttclient import Client

        bad = dict(telemetry.DEFAULTS, tls=True, ca_file=other["ca"])
        c = Client("probe", host, 8883, tls=telemetry.tls_context(bad))
        try:
            c.connect()
            raise AssertionError("connected to a broker signed by another CA")
        except OSError as e:
            assert "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate" in str(e).lower()
        finally:
            c.close()
        good = dict(telemetry.DEFAULTS, tls=True, ca_file=tls["ca"])
        c = Client("probe", host, 8883, tls=telemetry.tls_context(good))
        c.connect()
        c.publish(PREFIX + "/probe", b"hello", False, 1)
        c.close()
        # the firmware under micropython over TLS, verifying the broker against the CA
        _start(d, bg, head)
        assert wait_until(lambda: len(_slot_messages(col.snapshot())) >= 3, 60), \
            d.terminal_log()[-3000:] + broker.log()
        assert (PREFIX + "/probe", b"hello", False) in col.snapshot()
        assert "mqtt: connected to %s" % host in d.terminal_log()
        assert "not checked" not in d.terminal_log()
        assert "Traceback" not in d.terminal_log()
        # the firmware refuses the same broker when the configured CA did not sign it
        d.stop_firmware()
        d.overrides["mqtt"]["ca_file"] = other["ca"]
        open(d.log_path, "w").close()
        before = len(_slot_messages(col.snapshot()))
        d.start_firmware()
        assert wait_until(lambda: d.terminal_log().count("mqtt: broker %s" % host) >= 2, 30), \
            d.terminal_log()[-3000:]
        assert "mqtt: connected" not in d.terminal_log()
        assert len(_slot_messages(col.snapshot())) == before
        assert d.firmware_alive()
    finally:
        _stop(d, bg, head, broker, col)
