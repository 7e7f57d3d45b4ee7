# The status page and its JSON API (docs/product.md "Status page and JSON API"), on the shared
# HTTP server (firmware/app/httpd.py), in normal mode when web.enabled:
#   GET /                  one static page; its script fills the tables from the API below
#   GET /api/status        status.summary() as JSON
#   GET /api/slots?meter=k meter k's last 48 slots newest first, streamed row by row
#   GET /api/events?n=20   the event log's newest n events (1..64), oldest first, streamed
# Every route needs HTTP Basic with web.password; with an empty password nothing is served.
# Reads only: a client can neither change the terminal nor hold a store read across its pauses.
import asyncio
import json

from firmware import events as ev
from firmware import log, timeutil
from firmware.app import status
from firmware.app.httpd import HttpError, HttpServer, json_text
from firmware.compat import const
from firmware.store.eventlog import EventsGone

_TAG = "web"
EVENTS_DEFAULT = const(20)
EVENTS_MAX = const(64)
_JSON = "application/json"
# the page's script is inline and fetches only from this device
_CSP = ("Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; connect-src 'self'\r\n")

# One small static page: no external resource, every value written with textContent (never as
# HTML). Energy is shown exactly: Wh = raw x 10^scaler as decimal text, no float arithmetic.
PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>IoT-route terminal</title>
<style>body{font:14px sans-serif;margin:1em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}th{background:#eee}
.missing,.pending{color:#a00}.backfilled{color:#05a}</style></head>
<body data-ready="0"><h1>IoT-route terminal</h1><p id="error"></p>
<table><tr><th>time</th><td id="time"></td></tr>
<tr><th>clock</th><td id="clock-status"></td></tr>
<tr><th>last set</th><td id="clock-last-set"></td></tr>
<tr><th>set by</th><td id="clock-source"></td></tr>
<tr><th>radio</th><td id="radio-state"></td></tr>
<tr><th>RSSI</th><td id="radio-rssi"></td></tr>
<tr><th>channel</th><td id="radio-channel"></td></tr></table>
<h2>Meters</h2><table id="meters"><tr><th>meter</th><th>link</th><th>address</th>
<th>missing</th><th>backfilled</th><th>last slot</th></tr></table>
<div id="slots"></div><h2>Counters</h2><table id="counters"></table>
<h2>Events</h2><table id="events"><tr><th>seq</th><th>time</th><th>event</th>
<th>detail</th></tr></table>
<script>
function el(t,x,c){var e=document.createElement(t);if(x!==undefined)e.textContent=x;
if(c)e.className=c;return e}
function row(tb,cells,c){var r=el("tr",undefined,c);cells.forEach(function(x){
r.appendChild(el("td",x===null?"-":String(x)))});tb.appendChild(r);return r}
function set(id,x){document.getElementById(id).textContent=x===null?"-":String(x)}
function t2k(t){return t===null?null:new Date((t+946684800)*1000).toISOString()}
function wh(raw,sc){if(raw===null)return"-";if(sc===null)return raw+" raw";
var s=String(raw);if(sc>=0)return s+"0".repeat(sc);while(s.length<=-sc)s="0"+s;
return s.slice(0,s.length+sc)+"."+s.slice(s.length+sc)}
function get(u){return fetch(u,{cache:"no-store"}).then(function(r){
if(!r.ok)throw new Error(u+": "+r.status);return r.json()})}
async function load(){var s=await get("/api/status");set("time",t2k(s.time));
set("clock-status",s.clock.status);set("clock-last-set",t2k(s.clock.last_set));
set("clock-source",s.clock.source);set("radio-state",s.radio.state);
set("radio-rssi",s.radio.rssi);set("radio-channel",s.radio.channel);
var mt=document.getElementById("meters"),sd=document.getElementById("slots");
for(var m of s.meters){row(mt,[m.index,m.link,m.address,m.missing,m.backfilled,
m.last_slot]).id="meter-"+m.index;var d=await get("/api/slots?meter="+m.index);
sd.appendChild(el("h2","Meter "+m.index+": last "+d.rows.length+" slots (Wh)"));
var t=el("table");t.id="slots-"+m.index;
row(t,["slot","time","+A","-A","status"]);
for(var x of d.rows){var r=row(t,[x.slot,x.time,wh(x.fwd,x.scaler),wh(x.rev,x.scaler),
x.flags.join(" ")],x.flags.join(" "));r.dataset.slot=x.slot}sd.appendChild(t)}
var ct=document.getElementById("counters");
if(s.counters)Object.keys(s.counters).sort().forEach(function(k){
row(ct,[k,s.counters[k]])});var e=await get("/api/events?n=20"),
et=document.getElementById("events");
e.events.forEach(function(x){row(et,[x.seq,x.time,x.name,x.detail])})}
load().then(function(){document.body.dataset.ready="1"},function(e){
set("error",String(e));document.body.dataset.ready="error"})
</script></body></html>
"""


def _int_arg(req, name, default, lo, hi):
    """A bounded integer query argument; HttpError 400 when it is not one."""
    v = req.arg(name)
    if v is None or v == "":
        if default is None:
            raise HttpError(400, "%s missing" % name)
        return default
    if len(v) > 6 or not v.isdigit():
        raise HttpError(400, "%s is not a number" % name)
    n = int(v)
    if n < lo or n > hi:
        raise HttpError(400, "%s %d outside %d..%d" % (name, n, lo, hi))
    return n


def _num(x):
    return "null" if x is None else "%d" % x


class WebServer:
    """The status page and JSON API of a running Terminal. cfg: the "web" config section."""

    def __init__(self, terminal, cfg):
        self.t = terminal
        self.password = cfg.get("password", "")
        log.add_secret(self.password)
        host = cfg.get("bind", "")
        if not host:
            hal = getattr(terminal, "hal", None)
            host = hal.listen_ip() if hal is not None and hasattr(hal, "listen_ip") \
                else "0.0.0.0"
        self.http = HttpServer(host, cfg.get("port", 80), self.password, max_body=0,
                               realm="IoT-route terminal status")
        self.http.route("GET", "/", self.page)
        self.http.route("GET", "/api/status", self.api_status)
        self.http.route("GET", "/api/slots", self.api_slots)
        self.http.route("GET", "/api/events", self.api_events)

    async def run(self):
        if not self.password:
            # enabled with no password: a status page open to the whole LAN is refused
            log.error(_TAG, "web.enabled but web.password is empty: status page not served "
                            "(set web.password)")
            while True:
                await asyncio.sleep(3600)
        await self.http.run()

    def _tz(self):
        cfg = getattr(self.t, "cfg", None)
        try:
            return cfg["meter"]["tz_offset_min"]
        except (KeyError, TypeError):
            return 0

    async def page(self, req, resp):
        await resp.send(200, PAGE, "text/html; charset=utf-8", _CSP)

    async def api_status(self, req, resp):
        s = status.summary(self.t)
        lan = getattr(self.t, "lan", None)
        s["lan_up"] = None if lan is None else bool(lan.up)
        s["tz_offset_min"] = self._tz()
        await resp.send(200, json.dumps(s), _JSON)

    async def api_slots(self, req, resp):
        k = _int_arg(req, "meter", None, 0, self.t.store.max_meters - 1)
        tz = self._tz()
        await resp.start(200, _JSON)
        await resp.write('{"meter":%d,"tz_offset_min":%d,"rows":[' % (k, tz))
        sep = ""
        for slot, fwd, rev, flags, unit in status.slots(self.t, k):
            sc = status.wh_scaler(unit)
            names = ",".join('"%s"' % n for n in status.flag_names(flags))
            await resp.write('%s{"slot":%d,"time":"%s","fwd":%s,"rev":%s,"scaler":%s,'
                             '"unit":%s,"flags":[%s]}'
                             % (sep, slot, timeutil.iso(timeutil.t2k_of_slot(slot), tz),
                                _num(fwd), _num(rev), _num(sc), _num(unit), names))
            sep = ","
        await resp.write("]}")

    async def api_events(self, req, resp):
        n = _int_arg(req, "n", EVENTS_DEFAULT, 1, EVENTS_MAX)
        lg = self.t.events
        tz = self._tz()
        skip = lg.count() - n
        await resp.start(200, _JSON)
        await resp.write('{"events":[')
        c = lg.cursor()
        sep = ""
        sent = 0
        try:
            while sent < n:
                e = lg.read(c)
                if e is None:
                    break
                if skip > 0:
                    skip -= 1
                    continue
                # the file is not held open while the client is slow to read
                lg.close(c)
                seq, t, code, detail = e
                await resp.write('%s{"seq":%d,"time":%s,"code":%d,"name":%s,"detail":%d}'
                                 % (sep, seq, "null" if t is None else
                                    '"%s"' % timeutil.iso(t, tz), code,
                                    json_text(ev.NAMES.get(code, "event %d" % code)), detail))
                sep = ","
                sent += 1
        except EventsGone:
            log.warn(_TAG, "event log rotated during a read: list cut short")
        finally:
            lg.close(c)
        await resp.write("]}")
