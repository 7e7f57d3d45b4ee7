# MQTT telemetry (docs/product.md "MQTT telemetry"): every stored 30-minute slot of every meter
# (each new slot, and each slot filled later by backfill) as one QoS 1 message, a periodic status,
# and Home Assistant MQTT discovery for the energy sensors, through umqtt.simple
# (firmware/app/mqttclient.py).
#
# Store-and-forward: the store is the queue, exactly as for the DLMS push (firmware/app/push.py,
# whose queue this reuses under its own state key): per meter a cursor ("every slot <= cursor
# stored so far was published") and a bitmap of the slots stored below it later (backfill), the
# floor persisted in the state file. A slot leaves the queue only when its PUBACK came; a broker
# outage of any length leaves the queue where it was, and everything is sent from the flash log
# after it. A slot goes twice only if its PUBACK was lost, if a power cut came before the floor
# was written (mqtt.persist_every), or if it was stored again with a better value meanwhile.
#
# umqtt.simple blocks: the connect and each publish run with a short socket timeout, one message
# at a time with a yield to the event loop in between, and never from inside a capture (the store
# put listener only marks the slot and wakes this task).
import asyncio
import json

from firmware import log, timeutil, units
from firmware.app import config as cfgmod
from firmware.app.push import PushScheduler
from firmware.app.views import MeterView
from firmware.compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms, wait_ms
from firmware.store.record import NO_DATA

_TAG = "mqtt"
DEFAULTS = cfgmod.DEFAULTS["mqtt"]
STATE_KEY = "mqtt_cursor"
_IDLE_MS = const(1000)  # idle: read the broker's PINGRESP and look at the clock this often
_NO_LIB_LOG_MS = const(3600000)


class SlotQueue(PushScheduler):
    """The push's store-and-forward queue (cursor + backfill bitmap per meter, floor in the state
    file under "mqtt_cursor"); no rate limit, window or retries: an MQTT slot waits for the
    broker as long as it takes."""

    state_key = STATE_KEY

    def __init__(self, views, cfg, state=None, event=None):
        c = {"backlog_slots": cfg["backlog_slots"], "persist_every": cfg["persist_every"],
             "seed": 1}
        if event is None:
            PushScheduler.__init__(self, views, None, None, None, c, state, tag=_TAG)
        else:
            PushScheduler.__init__(self, views, None, None, None, c, state, event, tag=_TAG)

    def _next(self, m):
        """Oldest first: the backfilled slots below the cursor, then the stored slots above it
        (the push sends the newest slot ahead of a backlog and remembers a few of those; an MQTT
        backlog drains in seconds, and a remembered list that overflows sends slots twice)."""
        self._ahead = False
        row = self._oldest_backfilled(m)
        return self._first_above(m) if row is None else row

    def next(self):
        """(meter, row) to publish, or None; the same until done() (a failed publish retries
        the same slot)."""
        if self.current is None:
            self.current = self._pick()
            self._redo = False
        return self.current

    def done(self):
        """Its PUBACK came."""
        self.stats["sent"] += 1
        self._done_slot()

    def pending(self):
        """Slots known to wait (bitmap bits; slots above the cursor are not counted)."""
        return sum(m.nbits for m in self.meters)


# -- payloads (pure) ---------------------------------------------------------------------------

def _num(v):
    return "null" if v == NO_DATA else "%d" % v


def slot_payload(k, row, tz_min=0, backfill_bit=0x40):
    """JSON of one slot: row = (slot, fwd, rev, dlms_status, unit_code) of a MeterView. Energy =
    fwd x 10^exp kWh, integers as stored (null: the meter had no value); status: the DLMS profile
    status byte; the slot key is (meter, slot), time the :00/:30 boundary it begins at."""
    slot, fwd, rev, st, unit = row
    e = units.exponent(unit)
    return ('{"meter":%d,"slot":%d,"time":"%s","fwd":%s,"rev":%s,"unit":"kWh","exp":%s,'
            '"status":%d,"backfilled":%s}'
            % (k, slot, timeutil.iso(timeutil.t2k_of_slot(slot), tz_min), _num(fwd), _num(rev),
               "null" if e is None else "%d" % e, st, "true" if st & backfill_bit else "false"))


def topic_name(text):
    """A topic level from free text: no '/', '+', '#' or spaces."""
    out = ""
    for ch in text:
        out += "_" if ch in "/+# " else ch
    return out or "terminal"


def ha_configs(ha_prefix, prefix, device, meters, name="IoT-route terminal"):
    """[(topic, payload)] of the Home Assistant MQTT discovery config messages (retained): per
    meter a forward and a reverse energy sensor on its state topic, and one status sensor (the
    availability, with the status message as attributes)."""
    base = "%s/%s" % (prefix, device)
    dev = {"identifiers": [device], "name": name, "manufacturer": "IoT-route terminal",
           "model": "ECHONET Lite to DLMS/COSEM"}
    avail = base + "/availability"
    out = []
    for k in range(meters):
        for what, key in (("forward", "fwd"), ("reverse", "rev")):
            uid = "%s_meter%d_%s" % (device, k, what)
            cfg = {"name": "Meter %d %s energy" % (k, what), "unique_id": uid,
                   "object_id": uid, "device_class": "energy",
                   "state_class": "total_increasing", "unit_of_measurement": "kWh",
                   "state_topic": "%s/meter%d/state" % (base, k),
                   "value_template": "{{ value_json.%s * 10 ** value_json.exp }}" % key,
                   "availability_topic": avail, "device": dev}
            out.append(("%s/sensor/%s/%s/config" % (ha_prefix, device, uid), json.dumps(cfg)))
    uid = device + "_status"
    cfg = {"name": "Status", "unique_id": uid, "object_id": uid, "state_topic": avail,
           "json_attributes_topic": base + "/status", "entity_category": "diagnostic",
           "icon": "mdi:lan-connect", "device": dev}
    out.append(("%s/sensor/%s/%s/config" % (ha_prefix, device, uid), json.dumps(cfg)))
    return out


def device_name(cfg, full_cfg):
    """The client id: mqtt.client_id, else "iot-terminal-" + the COSEM logical device name."""
    if cfg["client_id"]:
        return cfg["client_id"]
    d = full_cfg.get("dlms") or {}
    return "iot-terminal-" + topic_name(d.get("ldn", "") or "0")


def ca_der(data):
    """The first certificate of a PEM file as DER (MicroPython's mbedtls builds may lack the PEM
    parser); DER as it is."""
    begin = data.find(b"-----BEGIN CERTIFICATE-----")
    if begin < 0:
        return data
    end = data.find(b"-----END CERTIFICATE-----", begin)
    if end < 0:
        raise ValueError("mqtt.ca_file: PEM certificate without its END line")
    from binascii import a2b_base64

    body = data[begin + 27:end].replace(b"\r", b"").replace(b"\n", b"")
    return a2b_base64(body)


def tls_context(cfg):
    """SSLContext for mqtt.tls: the broker's certificate checked against mqtt.ca_file when given
    (else not checked: logged)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg["ca_file"]:
        ctx.verify_mode = ssl.CERT_REQUIRED
        with open(cfg["ca_file"], "rb") as f:
            ctx.load_verify_locations(cadata=ca_der(f.read()))
    else:
        ctx.check_hostname = False  # CPython: before CERT_NONE; an unused attribute on MicroPython
        ctx.verify_mode = ssl.CERT_NONE
        log.warn(_TAG, "mqtt.tls without mqtt.ca_file: the broker's certificate is not checked")
    return ctx


def _client(cfg, client_id, tls):
    from firmware.app.mqttclient import Client

    port = cfg["port"] or (8883 if cfg["tls"] else 1883)
    return Client(client_id, cfg["host"], port, cfg["user"], cfg["password"], cfg["keepalive_s"],
                  cfg["timeout_ms"], tls)


def _why(e):
    return "%s %s" % (type(e).__name__, e)


class Telemetry:
    """terminal: what the terminal gives (store, state, event, cfg, clock; lan optional);
    cfg: the `mqtt` section; status_fn() -> dict (firmware.app.status.summary). make_client:
    tests pass their own (cfg, client_id, tls) -> client."""

    def __init__(self, terminal, cfg, status_fn, make_client=None):
        c = dict(DEFAULTS)
        c.update(cfg or {})
        self.cfg = c
        log.add_secret(c["password"])  # also when built without config.merge (it does too)
        self.status_fn = status_fn
        self.terminal = terminal
        full = terminal.cfg
        self.tz = full["meter"]["tz_offset_min"]
        d = full.get("dlms") or {}
        self.backfill_bit = d.get("backfill_status_bit", 0x40)
        store = terminal.store
        views = [MeterView(store, k, backfill_bit=self.backfill_bit)
                 for k in range(store.max_meters)]
        self.queue = SlotQueue(views, c, terminal.state, getattr(terminal, "event", None))
        store.put_listeners.append(self.queue.on_put)
        self.client_id = device_name(c, full)
        self.device = topic_name(self.client_id)
        self.base = "%s/%s" % (c["prefix"], self.device)
        self.make_client = make_client or _client
        self.client = None
        self.latest = [-1] * len(views)  # newest slot sent on meter<k>/state
        b = c["backoff"]
        ok = isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) and x > 0 for x in b)
        if not ok:
            log.error(_TAG, "mqtt.backoff must be [first_s, cap_s] (positive); using %r"
                      % (DEFAULTS["backoff"],))
            b = DEFAULTS["backoff"]
        self.backoff_ms = (b[0] * 1000, max(b[0], b[1]) * 1000)
        self.stats = {"connects": 0, "connect_failed": 0, "drops": 0, "slots": 0, "status": 0}

    # -- topics and messages -----------------------------------------------------------------

    def slot_topic(self, k):
        return "%s/meter%d/slot" % (self.base, k)

    def _publish_slot(self, k, row):
        payload = slot_payload(k, row, self.tz, self.backfill_bit)
        self.client.publish(self.slot_topic(k), payload, False, 1)
        self.queue.done()
        self.stats["slots"] += 1
        if row[0] > self.latest[k]:
            # the newest value for Home Assistant: retained, never older than what it had
            self.client.publish("%s/meter%d/state" % (self.base, k), payload, True, 1)
            self.latest[k] = row[0]

    def _publish_status(self):
        try:
            st = dict(self.status_fn())
        except Exception as e:  # noqa: BLE001 - the status is optional, the slots are not
            log.exc(_TAG, "status summary failed", e)
            return
        st["mqtt"] = {"slots": self.stats["slots"], "pending": self.queue.pending(),
                      "connects": self.stats["connects"]}
        self.client.publish(self.base + "/status", json.dumps(st), True, 1)
        self.stats["status"] += 1

    def _on_connect(self):
        c = self.client
        c.publish(self.base + "/availability", "online", True, 1)
        if self.cfg["ha_discovery"]:
            for topic, payload in ha_configs(self.cfg["ha_prefix"], self.cfg["prefix"],
                                             self.device, len(self.latest)):
                c.publish(topic, payload, True, 1)

    # -- the async shell ---------------------------------------------------------------------

    def _lan_up(self):
        lan = getattr(self.terminal, "lan", None)
        return lan is None or lan.up

    def _connect(self):
        tls = tls_context(self.cfg) if self.cfg["tls"] else None
        self.client = self.make_client(self.cfg, self.client_id, tls)
        self.client.set_last_will(self.base + "/availability", "offline", True, 1)
        self.client.connect()
        self.stats["connects"] += 1
        self._on_connect()

    def _close(self):
        c = self.client
        self.client = None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    async def run(self):
        """Forever: connect, publish, reconnect with a capped back-off."""
        self.queue.wake = asyncio.Event()
        if not self.cfg["host"]:
            log.error(_TAG, "mqtt.enabled without mqtt.host: telemetry off")
            while True:
                await sleep_ms(_NO_LIB_LOG_MS)
        first, cap = self.backoff_ms
        delay = first
        while True:
            if not self._lan_up():
                await sleep_ms(500)
                continue
            try:
                self._connect()
            except ImportError as e:
                log.error(_TAG, "umqtt.simple not installed (%s): run tools/fetch_lib.py, or "
                          "mpremote mip install umqtt.simple" % e)
                self._close()
                await sleep_ms(_NO_LIB_LOG_MS)
                continue
            except Exception as e:  # noqa: BLE001 - any broker answer: logged, retried
                self.stats["connect_failed"] += 1
                log.warn(_TAG, "broker %s: %s; retrying in %d s"
                         % (self.cfg["host"], _why(e), delay // 1000))
                self._close()
                await sleep_ms(delay)
                delay = min(delay * 2, cap)
                continue
            log.info(_TAG, "connected to %s as %s" % (self.cfg["host"], self.client_id))
            delay = first
            try:
                await self._serve()
            except Exception as e:  # noqa: BLE001 - the connection failed: reconnect
                self.stats["drops"] += 1
                log.warn(_TAG, "connection lost (%s); reconnecting in %d s"
                         % (_why(e), delay // 1000))
            self._close()
            await sleep_ms(delay)
            delay = min(delay * 2, cap)

    async def _serve(self):
        """Publish while connected; returns only by an exception (the connection failed)."""
        every = max(1, self.cfg["status_every_s"]) * 1000
        ping = self.cfg["keepalive_s"] * 500  # half the keepalive (0 = no pings)
        next_status = ticks_ms()
        last_io = next_status
        wake = self.queue.wake
        while True:
            now = ticks_ms()
            if ticks_diff(now, next_status) >= 0:
                self._publish_status()
                next_status = ticks_add(now, every)
                last_io = now
            item = self.queue.next()
            if item is not None:
                self._publish_slot(item[0], item[1])
                last_io = ticks_ms()
                await sleep_ms(0)  # one message at a time: the other tasks run in between
                continue
            if ping and ticks_diff(now, last_io) >= ping:
                self.client.ping()
                last_io = now
            if self.client.poll() is not None:
                # a packet we never asked for (we subscribe to nothing): the stream cannot be
                # trusted any more
                raise ValueError("unexpected packet from the broker")
            wake.clear()
            try:
                await wait_ms(wake.wait(), _IDLE_MS)
            except asyncio.TimeoutError:
                pass
