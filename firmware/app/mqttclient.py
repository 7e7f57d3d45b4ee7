# The MQTT client of the telemetry: micropython-lib's umqtt.simple (lib/umqtt/simple.py, fetched
# by tools/fetch_lib.py, never copied here), subclassed so that a dead or misbehaving broker never
# stalls the event loop for long:
#
# - every blocking step (connect, TLS handshake, each read and write) has a socket timeout;
# - umqtt.simple switches its socket back to fully blocking after every message it reads
#   (setblocking(True)); the socket it gets here is a small wrapper whose setblocking(True)
#   restores the timeout instead;
# - waiting for a PUBACK reads at most _MAX_OPS packets and for at most one timeout: a broker
#   streaming garbage cannot keep publish() looping;
# - TLS is done by the wrapper right after the TCP connect (an SSLContext with the CA when
#   given), so umqtt.simple's own `import ussl` (a module MicroPython 1.28 no longer has) is never
#   reached: the client is built with ssl=False.
#
# On CPython (host runs) umqtt.simple's `usocket`, `ustruct` and `ubinascii` are aliased to the
# standard modules before it is imported, and the wrapper gives CPython sockets the read/write of
# MicroPython's streams. On MicroPython those names exist and nothing is aliased.
import socket

from firmware.compat import IS_MICROPYTHON, ticks_diff, ticks_ms

if not IS_MICROPYTHON:  # host only: umqtt.simple imports MicroPython's names
    import binascii
    import struct
    import sys

    sys.modules.setdefault("usocket", socket)
    sys.modules.setdefault("ustruct", struct)
    sys.modules.setdefault("ubinascii", binascii)

import umqtt.simple as _simple  # noqa: E402 - after the host aliases

MQTTException = _simple.MQTTException
# Linux and lwIP (ESP32) values; MicroPython's socket module does not name them
_IPPROTO_TCP = getattr(socket, "IPPROTO_TCP", 6)
_TCP_NODELAY = getattr(socket, "TCP_NODELAY", 1)
_MAX_OPS = 16  # packets read while waiting for one PUBACK before giving up on the connection


def _would_block(e):
    return e.args and e.args[0] in (11, 115) or type(e).__name__ in (
        "BlockingIOError", "SSLWantReadError", "SSLWantWriteError")


class _Sock:
    """The socket umqtt.simple drives: read(n), write(buf, n), setblocking, close, connect."""

    def __init__(self, timeout_s, tls, hostname):
        self.timeout_s = timeout_s
        self.tls = tls  # an SSLContext, or None
        self.hostname = hostname
        self.raw = socket.socket()
        self.raw.settimeout(timeout_s)
        try:
            # umqtt.simple writes a packet in pieces and then waits for the PUBACK: with Nagle
            # the pieces after the first wait for the broker's delayed ACK (~40 ms a message)
            self.raw.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self.io = self.raw
        self.blocking = True

    def connect(self, addr):
        self.raw.connect(addr)
        if self.tls is not None:
            self.io = self.tls.wrap_socket(self.raw, server_hostname=self.hostname)
            if not IS_MICROPYTHON:
                self.io.settimeout(self.timeout_s)

    def setblocking(self, flag):
        self.blocking = flag
        s = self.raw if IS_MICROPYTHON else self.io
        if flag:
            s.settimeout(self.timeout_s)
        else:
            s.setblocking(False)

    def read(self, n):
        try:
            if IS_MICROPYTHON:
                return self.io.read(n)
            buf = b""
            while len(buf) < n:
                chunk = self.io.recv(n - len(buf))
                if not chunk:
                    break
                buf += chunk
                if not self.blocking:
                    break
            return buf
        except OSError as e:
            if not self.blocking and _would_block(e):
                return None
            raise

    def write(self, buf, n=None):
        if n is not None and n < len(buf):
            buf = memoryview(buf)[:n]
        if IS_MICROPYTHON:
            return self.io.write(buf)
        if isinstance(buf, str):  # umqtt.simple writes topics and ids as str
            buf = buf.encode()
        self.io.sendall(buf)
        return len(buf)

    def close(self):
        try:
            self.io.close()
        finally:
            if self.io is not self.raw:
                self.raw.close()


class _Net:
    """Stands in for umqtt.simple's `socket` module during connect(): its sockets are _Sock."""

    def __init__(self, timeout_s, tls, hostname):
        self.args = (timeout_s, tls, hostname)

    def socket(self):
        return _Sock(*self.args)

    def getaddrinfo(self, host, port):
        return socket.getaddrinfo(host, port)


class Client(_simple.MQTTClient):
    """umqtt.simple's MQTTClient with bounded blocking (see above). tls: an SSLContext or None;
    user "" = no user name/password."""

    def __init__(self, client_id, host, port, user="", password="", keepalive=0,
                 timeout_ms=2000, tls=None):
        super().__init__(client_id, host, port, user or None, password if user else None,
                         keepalive)
        self.timeout_ms = timeout_ms
        self._net = _Net(timeout_ms / 1000, tls, host)
        self._ops = 0
        self._t0 = 0

    def connect(self, clean_session=True):
        self.close()
        real = _simple.socket
        _simple.socket = self._net  # only our sockets (the module global is umqtt's own)
        try:
            return super().connect(clean_session)
        finally:
            _simple.socket = real

    def publish(self, topic, msg, retain=False, qos=0):
        self._ops = 0
        self._t0 = ticks_ms()
        return super().publish(topic, msg, retain, qos)

    def wait_msg(self):
        self._ops += 1
        if self._ops > _MAX_OPS or ticks_diff(ticks_ms(), self._t0) > self.timeout_ms:
            raise MQTTException("no PUBACK from the broker")
        return super().wait_msg()

    def poll(self):
        """Read what the broker sent (PINGRESP) without waiting."""
        self._ops = 0
        self._t0 = ticks_ms()
        return self.check_msg()

    def close(self):
        s = self.sock
        self.sock = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
