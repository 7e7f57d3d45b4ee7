# The status summary, the slot stream and the status page / JSON API (firmware/app/status.py,
# firmware/app/web.py) over a real store, event log and calendar clock, driven through the HTTP
# server's connection handler with in-memory streams (both runtimes; no sockets): values, auth,
# malformed requests, bounds, and a seeded fuzz of request bytes that must be answered or closed
# without the server failing or keeping heap.
import asyncio
import gc
import json
import unittest
from binascii import b2a_base64

from event_fakes import MemFs
from rng import Rng

from firmware import events as ev
from firmware import log, timeutil
from firmware.app import config as cfgmod
from firmware.app import status
from firmware.app.web import WebServer
from firmware.hal.clock import SOURCE_NTP, CalendarClock
from firmware.hal.norflash import NorFlash
from firmware.store import record as r
from firmware.store.eventlog import EventLog
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

PASSWORD = "status-pw-4711"
# 2025-04-01 10:40 JST (01:40Z): the newest boundary is 10:30 JST, 10 minutes ago
T_NOW = timeutil.t2k_from_fields(2025, 4, 1, 1, 40, 0)
END = timeutil.slot_of_t2k(T_NOW)


def basic(pw, user="admin"):
    return "Basic " + b2a_base64(("%s:%s" % (user, pw)).encode()).decode().strip()


class Reader:
    """A StreamReader over fixed bytes (then end of stream)."""

    def __init__(self, data):
        self.d = data
        self.i = 0
        self.reads = 0

    async def read(self, n):
        self.reads += 1
        b = self.d[self.i:self.i + n]
        self.i += len(b)
        return b

    async def readexactly(self, n):
        b = await self.read(n)
        if len(b) < n:
            raise EOFError()
        return b

    async def readline(self):
        # as the streams' readline: everything up to a newline, however long
        j = self.d.find(b"\n", self.i)
        j = len(self.d) if j < 0 else j + 1
        b = self.d[self.i:j]
        self.i = j
        return b


class Endless(Reader):
    """`head`, then "a" for ever."""

    async def read(self, n):
        self.i += n
        return self.d[self.i - n:self.i] if self.i <= len(self.d) else b"a" * n

    async def readline(self):
        self.i += 100000  # an unbounded readline takes all the client sends (here 100 KB)
        return b"a" * 300


class Writer:
    def __init__(self):
        self.out = bytearray()
        self.closed = False

    def write(self, b):
        self.out += b

    async def drain(self):
        pass

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


class Poller:
    def __init__(self, failing=False):
        self.stats = {"stored": 7}
        self._failing = failing


class Client:
    def __init__(self, ip, ready):
        self.addr = (ip, 3610)
        self._ready = ready


class Channel:
    def __init__(self, ip="10.0.0.5", ready=True, failing=False, ambiguous=None):
        self.client = Client(ip, ready)
        self.poller = Poller(failing)
        self.cfg = {"give_up_after_s": 1740}
        self.ambiguous = ambiguous


class Session:
    state = "ready"
    channel = 7
    stats = {"rssi": -61, "joins": 1, "disconnects": 0}


class Counters:
    def snapshot(self):
        return {"boots": 3, "reads": 41}


class Box:
    """The parts of a Terminal the status page reads."""

    def __init__(self, meters=2):
        self.clock = CalendarClock()
        self.store = IntervalStore(FlashLog(NorFlash(8, block_size=1024)), max_meters=meters)
        self.fs = MemFs()
        self.events = EventLog("ev", 8, None, fs=self.fs, burst=0)
        self.events.mount()
        self.channels = [Channel(), Channel("", ready=False)][:meters]
        self.session = Session()
        self.cfg = {"meter": {"tz_offset_min": 540}}


def web_cfg(**kw):
    c = dict(cfgmod.DEFAULTS["web"])
    c.update({"enabled": True, "password": PASSWORD, "bind": "127.0.0.1", "port": 0})
    c.update(kw)
    return c


def request(ws, raw):
    """Run one connection with `raw` as the client's bytes: (status, headers, body bytes)."""
    w = Writer()
    asyncio.run(ws.http._client(Reader(raw), w))
    out = bytes(w.out)
    assert w.closed
    if not out:
        return None, "", b""
    head, _, body = out.partition(b"\r\n\r\n")
    first = head.split(b"\r\n")[0].split()
    return int(first[1]), head.decode(), body


def get(ws, path, pw=PASSWORD, extra=b""):
    h = b"GET " + path.encode() + b" HTTP/1.0\r\nHost: x\r\n"
    if pw is not None:
        h += b"Authorization: " + basic(pw).encode() + b"\r\n"
    return request(ws, h + extra + b"\r\n")


class WebTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.t = Box()
        self.t.clock.set_t2k(T_NOW)
        st = self.t.store
        # meter 0: live values, one backfilled, one clock-adjusted, END-3 missing; END pending
        st.put(0, END - 1, 120050, 7, 0x01, "fixed", r.FLAG_CLOCK_ADJUSTED)
        st.put(0, END - 2, 120040, 7, 0x01, "history")
        st.put(0, END - 4, 120020, 6, 0x01, "fixed")
        st.put(0, END - 47, 100000, 0, 0x01, "cumulative")
        st.put(0, END - 48, 99990, 0, 0x01, "fixed")  # outside the window of 48
        st.put(1, END - 1, 5, 0, 0x04, "fixed")  # 0.0001 kWh units: 0.5 Wh
        self.ws = WebServer(self.t, web_cfg())

    def tearDown(self):
        log.set_sink(None)

    # --- status.py ----------------------------------------------------------------------
    def test_slots_newest_first_with_flags(self):
        rows = list(status.slots(self.t, 0))
        self.assertEqual(len(rows), 48)
        self.assertEqual([x[0] for x in rows], list(range(END, END - 48, -1)))
        self.assertEqual(rows[0], (END, None, None, status.FLAG_PENDING, None))
        self.assertEqual(rows[1], (END - 1, 120050, 7, r.FLAG_CLOCK_ADJUSTED, 1))
        self.assertEqual(rows[2], (END - 2, 120040, 7, status.FLAG_BACKFILLED, 1))
        self.assertEqual(rows[3], (END - 3, None, None, status.FLAG_MISSING, None))
        self.assertEqual(rows[47], (END - 47, 100000, 0, 0, 1))
        self.assertEqual(status.flag_names(rows[1][3] | status.FLAG_BACKFILLED),
                         ["backfilled", "clock-adjusted"])

    def test_slots_is_a_stream(self):
        it = status.slots(self.t, 0)
        self.assertEqual(next(it)[0], END)
        # a value stored after the stream started is seen when its slot is reached
        self.t.store.put(0, END - 3, 120030, 7, 0x01, "history")
        self.assertEqual(next(it)[0], END - 1)
        next(it)
        self.assertEqual(next(it), (END - 3, 120030, 7, status.FLAG_BACKFILLED, 1))

    def test_newest_slot_missing_once_given_up(self):
        self.t.clock.set_t2k(timeutil.t2k_of_slot(END) + 1741)
        row = next(status.slots(self.t, 0))
        self.assertEqual(row, (END, None, None, status.FLAG_MISSING, None))

    def test_slots_without_time_end_at_the_newest_record(self):
        t = Box(meters=1)
        t.store.put(0, END - 5, 1, 2, 0x01, "fixed")
        rows = list(status.slots(t, 0, 3))
        self.assertEqual(rows, [(END - 5, 1, 2, 0, 1), (END - 6, None, None,
                                                         status.FLAG_MISSING, None),
                                (END - 7, None, None, status.FLAG_MISSING, None)])
        self.assertEqual(list(status.slots(Box(meters=1), 0)), [])

    def test_summary(self):
        self.t.counters = Counters()
        s = status.summary(self.t)
        self.assertEqual(s["time"], T_NOW)
        m0, m1 = s["meters"]
        # END-3 and 42 never-stored slots of the window are missing; END is pending
        self.assertEqual((m0["missing"], m0["backfilled"]), (43, 1))
        self.assertEqual((m0["link"], m0["address"], m0["last_slot"]), ("ok", "10.0.0.5",
                                                                        END - 1))
        self.assertEqual((m1["link"], m1["address"], m1["missing"]), ("searching", None, 46))
        self.assertEqual(s["radio"]["state"], "ready")
        self.assertEqual(s["radio"]["rssi"], -61)
        self.assertEqual(s["clock"], {"status": "ok", "now": T_NOW, "last_set": T_NOW,
                                      "source": "smart meter"})
        self.assertEqual(s["counters"], {"boots": 3, "reads": 41})
        json.dumps(s)  # plain JSON values only

    def test_summary_parts_absent(self):
        t = Box(meters=1)
        t.session = None
        t.channels = []
        s = status.summary(t)
        self.assertEqual(s["clock"]["status"], "invalid")
        self.assertIsNone(s["clock"]["last_set"])
        self.assertIsNone(s["clock"]["source"])
        self.assertIsNone(s["radio"]["state"])
        self.assertIsNone(s["counters"])
        self.assertEqual(s["meters"][0]["link"], "unknown")
        t.clock.set_t2k(T_NOW, source=SOURCE_NTP)
        self.assertEqual(status.summary(t)["clock"]["source"], "ntp")

    def test_meter_link_states(self):
        self.assertEqual(status.meter_link(Channel(failing=True)), "failing")
        self.assertEqual(status.meter_link(Channel(ready=False)), "connecting")
        self.assertEqual(status.meter_link(Channel(ambiguous="0x028E01,0x028E02")), "ambiguous")

    # --- routes -------------------------------------------------------------------------
    def test_api_status(self):
        code, head, body = get(self.ws, "/api/status")
        self.assertEqual(code, 200)
        self.assertIn("application/json", head)
        s = json.loads(body)
        self.assertEqual(s["meters"][0]["missing"], 43)
        self.assertEqual(s["tz_offset_min"], 540)
        self.assertEqual(s["radio"]["rssi"], -61)

    def test_api_slots(self):
        code, _, body = get(self.ws, "/api/slots?meter=0")
        self.assertEqual(code, 200)
        d = json.loads(body)
        self.assertEqual(d["meter"], 0)
        rows = d["rows"]
        self.assertEqual(len(rows), 48)
        self.assertEqual(rows[0]["flags"], ["pending"])
        self.assertEqual(rows[1], {"slot": END - 1, "time": "2025-04-01T10:00:00+09:00",
                                   "fwd": 120050, "rev": 7, "scaler": 2, "unit": 1,
                                   "flags": ["clock-adjusted"]})
        self.assertEqual(rows[2]["flags"], ["backfilled"])
        self.assertEqual((rows[3]["fwd"], rows[3]["flags"]), (None, ["missing"]))
        d1 = json.loads(get(self.ws, "/api/slots?meter=1")[2])
        self.assertEqual((d1["rows"][1]["fwd"], d1["rows"][1]["scaler"]), (5, -1))

    def test_api_slots_bounds(self):
        for q in ("", "?meter=2", "?meter=-1", "?meter=x", "?meter=99999999", "?meter="):
            code, _, body = get(self.ws, "/api/slots" + q)
            self.assertEqual(code, 400, q)
            self.assertIn(b"meter", body)

    def test_api_events_tail(self):
        for i in range(12):  # capacity 8 per segment: one rotation
            self.t.events.record(ev.LINK_UP if i % 2 else ev.POWER_UP, i)
        d = json.loads(get(self.ws, "/api/events?n=5")[2])["events"]
        self.assertEqual([e["detail"] for e in d], [7, 8, 9, 10, 11])
        self.assertEqual(d[-1]["name"], "link up")
        self.assertEqual(d[0]["code"], ev.LINK_UP)
        self.assertIsNone(d[0]["time"])  # the box's event log has no clock
        d = json.loads(get(self.ws, "/api/events")[2])["events"]
        self.assertEqual(len(d), 12)  # default 20: all there are
        self.assertEqual(self.t.fs.open_files, 0)  # no file left open
        for q in ("?n=0", "?n=65", "?n=1e3", "?n=%31"):
            self.assertEqual(get(self.ws, "/api/events" + q)[0], 400, q)

    def test_page(self):
        code, head, body = get(self.ws, "/")
        self.assertEqual(code, 200)
        self.assertIn("text/html", head)
        self.assertIn("Content-Security-Policy", head)
        for ident in (b'id="clock-status"', b'id="radio-rssi"', b'id="meters"',
                      b'id="events"', b"/api/slots?meter="):
            self.assertIn(ident, body)
        self.assertNotIn(b"http://", body)  # no external resource
        self.assertNotIn(b"https://", body)

    def test_auth(self):
        for pw in (None, "", "wrong", PASSWORD + "x", PASSWORD[:-1]):
            code, head, body = get(self.ws, "/api/status", pw=pw)
            self.assertEqual(code, 401, pw)
            self.assertIn("WWW-Authenticate: Basic", head)
            self.assertNotIn(PASSWORD.encode(), body)
        for auth in (b"Basic !!!", b"Bearer x", b"Basic " + b2a_base64(b"nocolon").strip()):
            code, _, _ = request(self.ws, b"GET / HTTP/1.0\r\nAuthorization: " + auth
                                 + b"\r\n\r\n")
            self.assertEqual(code, 401)
        self.assertEqual(get(self.ws, "/", pw=PASSWORD)[0], 200)
        self.assertEqual(self.ws.http.stats["auth_failed"], 8)
        self.assertFalse([x for x in self.lines if PASSWORD in x])

    def test_malformed_requests(self):
        cases = (
            (b"", 400),  # closed at once: answered all the same
            (b"GET /\r\n\r\n", 400),
            (b"GET / FTP/1.0\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nNoColon\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nContent-Length: x\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nContent-Length: 10\r\n\r\n", 413),  # no body on this server
            (b"GET / HTTP/1.0\r\n" + b"X: y\r\n" * 30 + b"\r\n", 400),
            (b"GET /" + b"a" * 300 + b" HTTP/1.0\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nX: " + b"y" * 300 + b"\r\n\r\n", 400),
            (b"GET \xff\xfe HTTP/1.0\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\n", 400),  # headers never end
            (b"POST /api/status HTTP/1.0\r\n\r\n", 405),
            (b"GET /nope HTTP/1.0\r\n\r\n", 404),
        )
        for raw, want in cases:
            self.assertEqual(request(self.ws, raw)[0], want, raw[:40])
        self.assertEqual(self.ws.http.clients, 0)

    def test_long_line_is_not_read_whole(self):
        for head in (b"GET /", b"GET / HTTP/1.0\r\nX: "):
            rd = Endless(head)  # a client that never sends a newline
            w = Writer()
            asyncio.run(self.ws.http._client(rd, w))
            self.assertTrue(bytes(w.out).startswith(b"HTTP/1.0 400"))
            # stopped at the line limit: the rest is never read
            self.assertLessEqual(rd.i, len(head) + 260)

    def test_handler_failure_answers_500_and_goes_on(self):
        self.t.store = None  # every store read fails
        self.assertEqual(get(self.ws, "/api/status")[0], 500)
        self.assertTrue([x for x in self.lines if "ERROR" in x and "/api/status" in x])
        self.t.store = Box().store
        self.assertEqual(get(self.ws, "/api/status")[0], 200)

    def test_empty_password_serves_nothing(self):
        ws = WebServer(self.t, web_cfg(password=""))
        self.assertEqual(get(ws, "/", pw="")[0], 401)

        async def briefly():
            task = asyncio.create_task(ws.run())
            await asyncio.sleep(0.01)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

        asyncio.run(briefly())
        self.assertTrue([x for x in self.lines
                         if x.startswith("ERROR") and "web.password is empty" in x])

    def test_password_is_a_secret(self):
        self.assertIn("password", cfgmod.SECRET_KEYS)
        log.warn("x", "the password is %s" % PASSWORD)
        self.assertNotIn(PASSWORD, self.lines[-1])

    def test_fuzz_requests_answered_or_closed_heap_kept(self):
        rng = Rng(11)
        good = (b"GET /api/slots?meter=0 HTTP/1.0\r\nAuthorization: "
                + basic(PASSWORD).encode() + b"\r\n\r\n")
        seeds = (good, b"GET /api/events?n=3 HTTP/1.1\r\nHost: a\r\n\r\n",
                 b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")

        def one(i):
            b = seeds[i % len(seeds)]
            for _ in range(1 + rng.below(4)):
                op = rng.below(4)
                p = rng.below(len(b) + 1)
                if op == 0 and b:
                    p %= len(b)
                    b = b[:p] + bytes((rng.below(256),)) + b[p + 1:]
                elif op == 1:
                    b = b[:p]
                elif op == 2:
                    b = b[:p] + bytes(rng.below(256) for _ in range(1 + rng.below(8))) + b[p:]
                else:
                    b = b[:p] + b"\r\n" + b[p:]
            code = request(self.ws, bytes(b))[0]
            self.assertIn(code, (None, 200, 400, 401, 404, 405, 413), bytes(b))

        log.set_sink(lambda line: None)  # not a list of 300 lines (the heap is measured)
        for i in range(20):  # warm up: first-use allocations (interned strings, caches)
            one(i)
        gc.collect()
        before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        for i in range(300):
            one(i)
        gc.collect()
        after = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        self.assertLess(after - before, 2048)
        self.assertEqual(self.ws.http.clients, 0)
        self.assertEqual(self.t.fs.open_files, 0)
