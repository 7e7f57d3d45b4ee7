"""MQTT telemetry against a broker that answers wrongly: a fake TCP server on the deployment's
loopback /24 answers each connection of the terminal firmware (under the real `micropython`) with
one kind of bad input in turn (garbage CONNACK, a refused CONNACK, a cut CONNACK, silence, a
stream of garbage instead of a PUBACK, a PUBLISH we never subscribed to, a closed connection).
Each is logged and followed by a reconnect; the firmware never crashes and metering goes on."""

import socket
import threading
import time

from loop_thread import LoopThread

from tools import deployment
from tools.deployment import Deployment, wait_until

RATE = 900
SERVER_HOST = 26
HEAP = "%dk" % (int(deployment.default_heap()[:-1]) + deployment.MQTT_HEAP_KB)
CONNACK_OK = b"\x20\x02\x00\x00"


def _read_connect(c):
    """Read the client's CONNECT packet (fixed header, remaining length, body)."""
    c.settimeout(5)
    head = c.recv(1)
    n = mul = 0
    shift = 0
    while True:
        b = c.recv(1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        mul += 1
        if not b & 0x80:
            break
    got = b""
    while len(got) < n:
        chunk = c.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return head + got


def _garbage_connack(c):
    c.sendall(b"\xff\xff\xff\xff")


def _refused(c):
    c.sendall(b"\x20\x02\x00\x05")  # not authorised


def _cut_connack(c):
    c.sendall(b"\x20")


def _silence(c):
    time.sleep(3)  # longer than the client's timeout


def _garbage_instead_of_puback(c):
    c.sendall(CONNACK_OK)
    c.settimeout(3)
    try:
        c.recv(4096)  # its first PUBLISH
        for _ in range(200):
            c.sendall(b"\x00" * 64)  # never a PUBACK
            time.sleep(0.005)
    except OSError:
        pass


def _unsolicited_publish(c):
    c.sendall(CONNACK_OK + b"\x30\x05\x00\x01ahi")
    time.sleep(1)  # open while the client reads it


def _close(c):
    pass


BEHAVIOURS = (_garbage_connack, _refused, _cut_connack, _silence, _garbage_instead_of_puback,
              _unsolicited_publish, _close)


class BadBroker:
    def __init__(self, host, port=1883):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind((host, port))
        self.s.listen(4)
        self.s.settimeout(0.2)
        self.served = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        i = 0
        while not self.stop.is_set():
            try:
                c, _ = self.s.accept()
            except OSError:
                continue
            fn = BEHAVIOURS[i % len(BEHAVIOURS)]
            i += 1
            # each connection on its own thread: a silent one must not hold up the next
            threading.Thread(target=self._serve, args=(c, fn), daemon=True).start()

    def _serve(self, c, fn):
        try:
            pkt = _read_connect(c)
            assert pkt[:1] == b"\x10"
            fn(c)
            self.served.append(fn.__name__)
        except (OSError, AssertionError, IndexError) as e:
            self.served.append("%s: %r" % (fn.__name__, e))
        finally:
            c.close()

    def close(self):
        self.stop.set()
        self.t.join(5)
        self.s.close()


def test_bad_broker_answers_are_logged_and_retried():
    bg = LoopThread()
    d = Deployment(rate=RATE, heap=HEAP)
    host = d.addr(SERVER_HOST)
    d.overrides["mqtt"] = {"enabled": True, "host": host, "backoff": [1, 1], "timeout_ms": 500}
    srv = BadBroker(host)
    head = d.head_end(out=lambda *a: None)
    try:
        bg.run(d.start())
        bg.run(head.connect(timeout_s=60), 90)
        bg.run(head.sync_clock())
        n = len(BEHAVIOURS)
        assert wait_until(lambda: len(srv.served) >= 2 * n, 90), (srv.served,
                                                                  d.terminal_log()[-3000:])
        assert {s.split(":")[0] for s in srv.served} == {f.__name__ for f in BEHAVIOURS}
        assert d.firmware_alive()
        log_text = d.terminal_log()
        assert log_text.count("mqtt: broker %s" % host) >= n  # connect failures, logged
        # each kind of bad input is named in the log
        for what in ("AssertionError", "MQTTException 5", "IndexError", "ETIMEDOUT",
                     "no PUBACK", "TypeError"):
            assert what in log_text, (what, [ln for ln in log_text.splitlines() if "mqtt" in ln])
        assert "task crashed" not in log_text and "Traceback" not in log_text
        # metering went on all along: slots stored while the broker misbehaved
        assert log_text.count("meter0: slot") >= 3, log_text[-3000:]
    finally:
        srv.close()
        head.close()
        bg.run(d.stop())
        bg.close()
