"""The status page in headless Chromium against the firmware running under `micropython` in a
simulated deployment (meter emulator -> terminal -> J11 emulator -> head-end; accelerated clock):
the page is loaded with the web password (an Authorization header set over the DevTools protocol),
and every value it shows -- the last 48 slots with their status, the missing and backfilled
counts, the event log tail -- equals what the terminal's own flash log and event files hold, read
on the host with the firmware's store code, and the meter's values. A screenshot of the page is
kept under build/artefacts/ (the path is printed)."""

import asyncio
import base64
import http.client
import json
import os
import shutil
import tempfile
import time

import pytest
from chromium_cdp import Chromium, find_chromium
from event_fakes import mounted, read_all
from loop_thread import LoopThread

from firmware import events as ev
from firmware import timeutil, units
from firmware.hal.norflash import NorFlash
from firmware.store import record
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore
from tools.deployment import ROOT, Deployment, default_heap
from tools.loopback_block import free_tcp_port

RATE = 300  # 30 simulated minutes every 6 real seconds: a page load sees one store state
PASSWORD = "Chromium-Status-7d1e"
TZ = 540
ARTEFACTS = os.path.join(ROOT, "build", "artefacts")
# the record flags the page spells, by bit (docs/product.md "Status page and JSON API")
FLAG_TEXT = ((record.FLAG_CLOCK_ADJUSTED, "clock-adjusted"),
             (record.FLAG_POWER_DOWN, "power-down"), (record.FLAG_METER_RESET, "meter-reset"),
             (record.FLAG_UNAVAILABLE, "unavailable"),
             (record.FLAG_CLOCK_INVALID, "clock-invalid"))
EXTRACT = """JSON.stringify({
  ready: document.body.dataset.ready,
  error: document.getElementById("error").textContent,
  clock: document.getElementById("clock-status").textContent,
  source: document.getElementById("clock-source").textContent,
  radio: document.getElementById("radio-state").textContent,
  rssi: document.getElementById("radio-rssi").textContent,
  meters: [...document.querySelectorAll("#meters tr")].slice(1)
          .map(r => [...r.cells].map(c => c.textContent)),
  slots: [...document.querySelectorAll("#slots-0 tr")].slice(1)
          .map(r => [...r.cells].map(c => c.textContent)),
  events: [...document.querySelectorAll("#events tr")].slice(1)
          .map(r => [...r.cells].map(c => c.textContent))})"""


def free_port(ip, first=8080):
    return free_tcp_port(ip, first)


def auth(pw):
    return "Basic " + base64.b64encode(("status:" + pw).encode()).decode()


def http_get(ip, port, path, pw):
    c = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        c.request("GET", path, headers={"Authorization": auth(pw)} if pw is not None else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wh_text(raw, unit_code):
    """raw x 10^scaler Wh as exact decimal text (the page's own rule, written again here)."""
    sc = units.wh_scaler(unit_code)
    if sc >= 0:
        return str(raw * 10 ** sc)
    s = str(raw).rjust(-sc + 1, "0")
    return s[:sc] + "." + s[sc:]


class Snapshot:
    """The terminal's flash log and event files, copied at one moment and read on the host with
    the firmware's store code (the copies, never the live files)."""

    def __init__(self, dep):
        self.dir = tempfile.mkdtemp(prefix="web-snap-")
        self.raw = []
        for name in ("flash.bin", "events.0", "events.1"):
            src = os.path.join(dep.workdir, name)
            data = b""
            if os.path.exists(src):
                with open(src, "rb") as f:
                    data = f.read()
            with open(os.path.join(self.dir, name), "wb") as f:
                f.write(data)
            self.raw.append(data)

    def same(self, other):
        return self.raw == other.raw

    def store(self):
        bdev = NorFlash(128, path=os.path.join(self.dir, "flash.bin"))
        return IntervalStore(FlashLog(bdev, 0, 128), max_meters=1)

    def events(self):
        return read_all(mounted(os.path.join(self.dir, "events"), 256))

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def run(bg, coro, timeout_s=30):
    return asyncio.run_coroutine_threadsafe(coro, bg.loop).result(timeout_s)


def load_page(browser, url):
    page = browser.new_page()
    page.call("Network.setExtraHTTPHeaders", {"headers": {"Authorization": auth(PASSWORD)}})
    page.open(url)
    ready = page.wait_for("document.body && document.body.dataset.ready !== '0' && "
                          "document.body.dataset.ready", 30)
    return page, ready, json.loads(page.evaluate(EXTRACT))


def check_page(shown, snap, dep):
    """Every value the page shows equals the snapshot's (and the meter's)."""
    assert shown["ready"] == "1", shown["error"]
    assert shown["clock"] == "ok" and shown["source"] == "smart meter"
    assert shown["radio"] == "ready"
    int(shown["rssi"])  # the module reported one
    rows = shown["slots"]
    assert len(rows) == 48
    slots = [int(r[0]) for r in rows]
    assert slots == list(range(slots[0], slots[0] - 48, -1))  # newest first, consecutive
    st = snap.store()
    missing = backfilled = live = 0
    for i, (slot_t, time_t, fwd_t, rev_t, flags_t) in enumerate(rows):
        slot = int(slot_t)
        assert time_t == timeutil.iso(timeutil.t2k_of_slot(slot), TZ)
        rec = st.get(0, slot)
        flags = set(flags_t.split())
        if rec is None:
            assert (fwd_t, rev_t) == ("-", "-"), (slot_t, fwd_t)
            # only the newest boundary may still be pending (the capture loop retries it)
            assert flags == ({"pending"} if i == 0 and flags == {"pending"} else {"missing"})
            missing += flags == {"missing"}
            continue
        fwd, rev, unit, src, rflags = rec
        assert (fwd_t, rev_t) == (wh_text(fwd, unit), wh_text(rev, unit)), slot_t
        # and the meter served exactly these (Wh)
        assert (fwd_t, rev_t) == tuple(str(v) for v in dep.model.served_at_slot(slot)), slot_t
        want = {name for bit, name in FLAG_TEXT if rflags & bit}
        if src == record.SOURCE_HISTORY:
            want.add("backfilled")
            backfilled += 1
        else:
            live += 1
        assert flags == want, (slot_t, flags_t, rec)
    assert live >= 2 and backfilled >= 1, (live, backfilled)  # both kinds are on the page
    # the meter's row: link, address and the counts of the same window
    (m,) = shown["meters"]
    assert m[:4] == ["0", "ok", dep.meter_addr[0], str(missing)]
    assert m[4] == str(backfilled)
    # the event log tail: the newest 20 events, oldest first, named
    evs = snap.events()[-20:]
    assert [r[0] for r in shown["events"]] == [str(e[0]) for e in evs]
    for r, (seq, t, code, detail) in zip(shown["events"], evs):
        assert r == [str(seq), timeutil.iso(t, TZ) if t is not None else "-",
                     ev.NAMES[code], str(detail)]
    assert "power up" in [r[2] for r in shown["events"]]


@pytest.mark.timeout(240)
def test_status_page_in_chromium_shows_the_store():
    find_chromium()  # fails, naming the install step, before anything is started
    bg = LoopThread()
    # web on: its code and page are loaded from .mpy on the host (frozen on the device)
    heap = "%dk" % (int(default_heap()[:-1]) + 16)
    dep = Deployment(rate=RATE, heap=heap)
    port = free_port(dep.terminal_ip)
    dep.overrides["web"] = {"enabled": True, "password": PASSWORD, "port": port}
    dep.overrides["meter"] = {"tz_offset_min": TZ}
    head = None
    snaps = []
    try:
        run(bg, dep.start())
        head = dep.head_end(out=lambda *a: None)
        run(bg, head.connect(timeout_s=60), 90)
        run(bg, head.sync_clock())
        # two live boundaries after the clock was set (backfill fills the day before)
        first_b = head.clock_set_at - head.clock_set_at % 1800 + 1800
        time.sleep(dep.sim.wall_seconds_until(first_b + 1800 + 300))
        ip = dep.terminal_ip
        assert http_get(ip, port, "/api/status", PASSWORD)[0] == 200, dep.terminal_log()[-3000:]
        # without the password, or with a wrong one: nothing but 401
        for pw in (None, "wrong", PASSWORD[:-1]):
            for path in ("/", "/api/status", "/api/slots?meter=0", "/api/events"):
                code, body = http_get(ip, port, path, pw)
                assert code == 401 and b"slot" not in body, (path, pw, code)
        url = "http://%s:%d/" % (ip, port)
        with Chromium(timeout_s=30, width=1000, height=2400) as browser:
            for _attempt in range(6):
                a = Snapshot(dep)
                page, _ready, shown = load_page(browser, url)
                b = Snapshot(dep)
                snaps += [a, b]
                if a.same(b):
                    break  # nothing was stored while the page loaded: one state to compare
            else:
                pytest.fail("the store changed during every page load")
            check_page(shown, a, dep)
            os.makedirs(ARTEFACTS, exist_ok=True)
            png = os.path.join(ARTEFACTS, "web_status_chromium.png")
            data = page.screenshot(png)
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
            print("status page screenshot: %s" % png)
        assert dep.firmware_alive()
        log_text = dep.terminal_log()
        assert "HTTP server on %s port %d" % (ip, port) in log_text
        assert PASSWORD not in log_text
        assert "Traceback" not in log_text
    finally:
        if head is not None:
            head.close()
        run(bg, dep.stop())
        bg.close()
        for s in snaps:
            s.remove()
