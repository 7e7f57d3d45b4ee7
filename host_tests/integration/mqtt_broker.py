"""The MQTT tests' broker (tools/mosquitto.py: a real mosquitto on a loopback address, started by
the test itself) and a paho-mqtt subscriber that collects every message."""

import threading

from tools.mosquitto import MOSQUITTO, Broker, port_open, require_mosquitto  # noqa: F401


class Collector:
    """A paho-mqtt subscriber (persistent session, QoS 1) keeping (topic, payload, retain)."""

    def __init__(self, host, port, topics, client_id="test-collector"):
        import paho.mqtt.client as mqtt

        self.messages = []
        self.redelivered = []  # copies the broker sent again (DUP set), not the publisher
        self.lock = threading.Lock()
        self.topics = topics
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False)
        self.c.reconnect_delay_set(0.2, 1)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()

    def _on_connect(self, client, _userdata, _flags, _rc, _props=None):
        for t in self.topics:
            client.subscribe(t, qos=1)

    def _on_message(self, _client, _userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.retain))
            if msg.dup:  # the broker's redelivery to this subscriber (its PUBACK was lost)
                self.redelivered.append((msg.topic, bytes(msg.payload)))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
