"""Fuzz the status page / JSON API server over real loopback TCP (CPython): any request bytes,
sent whole and then the write side closed, are answered with an HTTP status line or the
connection is closed -- the server never fails, never serves data without the password, leaves no
client or task behind, and answers a good request afterwards. (The unit lane runs a seeded fuzz
with a heap check on both runtimes: host_tests/unit/test_app_web.py.)"""

import asyncio
import base64
import binascii
import os
import socket
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loop_thread import LoopThread
from test_app_web import END, PASSWORD, T_NOW, Box, web_cfg  # the unit rig's terminal

from firmware import log
from firmware.app.web import WebServer
from tools import loopback_block

AUTH = b"Authorization: Basic " + base64.b64encode(b"a:" + PASSWORD.encode()) + b"\r\n"
SEEDS = [
    b"GET / HTTP/1.0\r\n" + AUTH + b"\r\n",
    b"GET /api/status HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
    b"GET /api/slots?meter=0 HTTP/1.0\r\n" + AUTH + b"\r\n",
    b"GET /api/events?n=64 HTTP/1.0\r\n" + AUTH + b"\r\n",
    b"GET /api/slots?meter=1 HTTP/1.0\r\n\r\n",
    b"POST /api/status HTTP/1.0\r\nContent-Length: 4\r\n\r\nabcd",
]


class Rig:
    def __init__(self):
        self.block = loopback_block.reserve()
        self.ip = self.block.prefix + "1"
        self.bg = LoopThread()
        self.t = Box()
        self.t.clock.set_t2k(T_NOW)
        self.t.store.put(0, END, 1, 2, 1, "fixed")
        self.port = 8080
        self.ws = WebServer(self.t, web_cfg(bind=self.ip, port=self.port))
        self.task = asyncio.run_coroutine_threadsafe(self.ws.run(), self.bg.loop)
        for _ in range(100):
            try:
                socket.create_connection((self.ip, self.port), 1).close()
                break
            except OSError:
                time.sleep(0.05)

    def send(self, data):
        s = socket.create_connection((self.ip, self.port), 5)
        s.settimeout(8)
        out = b""
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while True:
                b = s.recv(4096)
                if not b:
                    break
                out += b
        except ConnectionResetError:
            pass  # closed with input unread: a close is an answer too
        finally:
            s.close()
        return out

    def close(self):
        self.task.cancel()
        self.bg.close()
        self.block.release()


RIG = None


def rig():
    global RIG
    if RIG is None:
        log.set_sink(lambda line: None)
        RIG = Rig()
    return RIG


def teardown_module(_m):
    if RIG is not None:
        RIG.close()
    log.set_sink(None)


def mutated():
    return st.tuples(st.sampled_from(SEEDS), st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 400), st.binary(max_size=12)),
        max_size=4)).map(apply)


def apply(args):
    b, ops = args
    for op, pos, data in ops:
        p = pos % (len(b) + 1)
        if op == 0:
            b = b[:p] + data + b[p + len(data):]
        elif op == 1:
            b = b[:p]
        elif op == 2:
            b = b[:p] + data + b[p:]
        else:
            b = b[:p] + b"\r\n" + b[p:]
    return b


@settings(max_examples=int(os.environ.get("WEB_FUZZ_REQUESTS", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.binary(max_size=600)))
def test_any_request_is_answered_or_closed(data):
    r = rig()
    out = r.send(data)
    if out:
        assert out.startswith(b"HTTP/1.0 "), out[:80]
        code = int(out.split()[1])
        assert code in (200, 400, 401, 404, 405, 413)
        if code == 200:
            assert carries_password(data), data  # nothing is served without the password


def carries_password(data):
    """True if an Authorization header of the request holds the password (base64 decoded
    leniently, as binascii does: characters outside the alphabet are skipped)."""
    for line in data.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        value = value.strip()
        if name.strip().lower() == b"authorization" and value.startswith(b"Basic "):
            try:
                cred = binascii.a2b_base64(value[6:])
            except binascii.Error:
                continue
            if cred.partition(b":")[2] == PASSWORD.encode():
                return True
    return False


def test_server_fine_after_fuzz():
    r = rig()
    for data in SEEDS + [b"\xff" * 1000, b"GET /" + b"a" * 5000]:
        r.send(data)
    out = r.send(SEEDS[2])
    assert out.startswith(b"HTTP/1.0 200") and b'"slot":%d' % END in out
    assert r.ws.http.clients == 0
    assert not r.task.done()  # the server task is still running

    async def tasks():
        return len(asyncio.all_tasks())

    # the server's own task only: no client handler left behind
    assert asyncio.run_coroutine_threadsafe(tasks(), r.bg.loop).result(5) == 2
