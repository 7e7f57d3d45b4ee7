# The setup page (setup and safe mode, docs/product.md "Setup page"): the device's own WPA2 access
# point, a small page that says why the device is in setup mode, a Wi-Fi scan where only WPA2/WPA3
# networks can be chosen, the Wi-Fi PSK and the Wi-SUN credentials; a trial join in station mode,
# and on success the values merged into config.json and a restart into the normal run.
#
# Pure parts (form parsing, validation, the scan list, the config merge) take their input as
# arguments and are unit-tested; serve_setup is the thin shell around them. No value of any
# field is ever logged or echoed in an answer (the SSID only once it is accepted); accepted
# secrets are registered with the logger before anything else runs.
import json
import os

from firmware import log
from firmware.app import credentials, heapmon
from firmware.app.config import SETUP_KEY_FILE
from firmware.app.httpd import HttpServer
from firmware.compat import const, sleep_ms, ticks_diff, ticks_ms
from firmware.store.state import beside

_TAG = "setup"
KEY_FILE = SETUP_KEY_FILE  # the generated AP key, next to store.state_path
KEY_LEN = const(12)
# the generated AP key: lower case and digits without the lookalikes 0/o, 1/l/i (read from a
# serial console and typed on a phone)
_KEY_CHARS = "abcdefghjkmnpqrstuvwxyz23456789"
MAX_BODY = const(1024)  # the form: four fields of at most 64 characters, percent-encoded
MAX_NETS = const(24)  # networks listed by /api/scan, strongest first
_JOIN_MS = const(30000)  # a trial join that has not succeeded by then failed
_POLL_MS = const(500)
_RETRY_S = const(30)  # an access point or server that failed to start is tried again
FIELDS = ("ssid", "psk", "id", "password")
# firmware/app/safeboot.py WHY_* (docs/product.md): why the device is in setup mode
WHY_TEXT = {1: "the device restarted too often in a short time (boot loop): metering is paused",
            2: "the configuration cannot be used as it is: metering is paused",
            3: "the flash log is unusable: metering is paused",
            4: "setup was requested"}
_CT_JSON = "application/json"
_CT_HTML = "text/html; charset=utf-8"


# -- request bodies ------------------------------------------------------------------------------

def _unquote(b):
    """Percent-decoding of one form component (bytes -> bytes; "+" is a space)."""
    out = bytearray()
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c == 0x25:  # %
            if i + 2 >= n:
                raise ValueError("truncated escape")
            out.append(_hexval(b[i + 1]) << 4 | _hexval(b[i + 2]))
            i += 3
            continue
        out.append(0x20 if c == 0x2B else c)
        i += 1
    return bytes(out)


def _hexval(c):
    if 0x30 <= c <= 0x39:
        return c - 0x30
    c |= 0x20  # lower case
    if 0x61 <= c <= 0x66:
        return c - 0x57
    raise ValueError("not a hex digit")


def _utf8(s):
    try:
        s.encode()
        return True
    except UnicodeError:
        return False


def parse_body(body):
    """(values, errors) of a POST body: application/x-www-form-urlencoded or a JSON object with
    the fields of FIELDS. values: field -> str; errors: field (or "form") -> message. Never
    raises on the content, never quotes a value (any field may hold a secret)."""
    values = {}
    errors = {}
    if len(body) > MAX_BODY:
        errors["form"] = "the form is over %d bytes" % MAX_BODY
        return values, errors
    if body.strip()[:1] == b"{":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeError):
            errors["form"] = "the body is not valid JSON"
            return values, errors
        if not isinstance(data, dict):
            errors["form"] = "the body is not a JSON object"
            return values, errors
        for k, v in data.items():
            if k not in FIELDS:
                errors["form"] = "the form has a field this page does not know"
            elif not isinstance(v, str):
                errors[k] = "must be text"
            elif not _utf8(v):
                errors[k] = "is not UTF-8 text"  # a lone surrogate escape ("\udc00")
            else:
                values[k] = v
        return values, errors
    for part in body.split(b"&"):
        if not part:
            continue
        k, _, v = part.partition(b"=")
        try:
            k = _unquote(k).decode()
        except (ValueError, UnicodeError):
            errors["form"] = "a field name is not properly URL-encoded text"
            continue
        if k not in FIELDS:
            errors["form"] = "the form has a field this page does not know"
            continue
        if k in values or k in errors:
            errors[k] = "is given twice"
            values.pop(k, None)
            continue
        try:
            v = _unquote(v)
        except ValueError:
            errors[k] = "is not properly URL-encoded"
            continue
        try:
            values[k] = v.decode()
        except UnicodeError:
            errors[k] = "is not UTF-8 text"
    return values, errors


def validate(values, cfg, wifi):
    """(updates, errors) for config.json from parsed form values: updates {"lan": {...},
    "radio": {...}}; errors field -> the message of firmware/app/credentials.py as it gives it.
    An empty field keeps a configured value that passes its check; wifi: the board joins Wi-Fi
    (the Wi-Fi fields are ignored otherwise)."""
    lan = cfg["lan"]
    radio = cfg["radio"]
    fmt = radio.get("credential_format", "broute")
    errors = {}
    lan_new = {}
    radio_new = {}
    if wifi:
        ssid = values.get("ssid", "")
        if not ssid and credentials.check_ssid(lan["wifi_ssid"]) is None:
            ssid = lan["wifi_ssid"]
        why = credentials.check_ssid(ssid) if ssid else "choose a network"
        if why:
            errors["ssid"] = why
        psk = values.get("psk", "")
        if not psk and ssid == lan["wifi_ssid"] and credentials.check_psk(lan["wifi_psk"]) is None:
            psk = lan["wifi_psk"]
        why = credentials.check_psk(psk) if psk else "enter the network's key (PSK)"
        if why:
            errors["psk"] = why
        lan_new = {"wifi_ssid": ssid, "wifi_psk": psk}
    for field, key, check in (("id", "route_b_id", credentials.check_id),
                              ("password", "pana_password", None)):
        v = values.get(field, "")
        if not v and _cred_ok(field, radio.get(key, ""), fmt):
            continue  # keep the configured one
        if not v:
            errors[field] = "is required"
            continue
        why = check(v) if check else credentials.check_password(v, fmt)
        if why:
            errors[field] = why
        else:
            radio_new[key] = v
    updates = {}
    if lan_new:
        updates["lan"] = lan_new
    if radio_new:
        updates["radio"] = radio_new
    return updates, errors


def _cred_ok(field, value, fmt):
    if not value:
        return False
    if field == "id":
        return credentials.check_id(value) is None
    return credentials.check_password(value, fmt) is None


# -- the scan list --------------------------------------------------------------------------------

def networks(scan):
    """The scan as the page lists it: dicts, strongest first, at most MAX_NETS, one at a time
    (the answer is streamed row by row). A name that is not UTF-8 (a Shift-JIS neighbour) or
    empty (hidden) cannot be stored in lan.wifi_ssid, so it is shown but not selectable."""
    scan.sort(key=lambda ap: -ap[2])
    for i in range(min(len(scan), MAX_NETS)):
        ssid, bssid, rssi, sec, ok, why = scan[i]
        try:
            name = bytes(ssid).decode()
        except UnicodeError:
            name = None
            if ok:
                ok, why = False, "the name is not UTF-8 text (cannot be stored in lan.wifi_ssid)"
        if name == "" and ok:
            ok, why = False, "hidden network (no name)"
        yield {"ssid": name, "ssid_hex": _hex(ssid), "bssid": _mac(bssid), "rssi": rssi,
               "sec": sec[4:] if sec.startswith("SEC_") else sec, "ok": ok, "why": why or ""}


def _hex(b):
    return "".join("%02x" % x for x in b)


def _mac(b):
    return ":".join("%02x" % x for x in b)


# -- config.json and the AP key -------------------------------------------------------------------

def write_config(path, updates):
    """Merge updates ({section: {key: value}}) into the JSON file at path: temp file + rename,
    so a power cut leaves the old or the new file. A file that is not a JSON object is kept as
    path.broken and replaced by the updates alone."""
    data = {}
    try:
        with open(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            os.rename(path, path + ".broken")
            log.warn(_TAG, "%s was not a JSON object: kept as %s.broken" % (path, path))
            data = {}
    except OSError:
        pass  # no file yet
    for sect, values in updates.items():
        s = data.get(sect)
        if not isinstance(s, dict):
            s = data[sect] = {}
        s.update(values)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    os.rename(tmp, path)


def new_key(rand=os.urandom):
    """KEY_LEN characters of _KEY_CHARS from the RNG (rejection sampling: no bias)."""
    out = []
    n = len(_KEY_CHARS)
    top = 256 - 256 % n
    while len(out) < KEY_LEN:
        for b in rand(KEY_LEN):
            if b < top and len(out) < KEY_LEN:
                out.append(_KEY_CHARS[b % n])
    return "".join(out)


def ap_key(cfg, rand=os.urandom):
    """(key, generated): web.setup_psk when set, else the key kept in the state dir, made at
    the first setup. A kept key that is not a valid WPA2 key is replaced."""
    k = cfg["web"].get("setup_psk", "")
    if k:
        why = credentials.check_psk(k)
        if why is None:
            return k, False
        log.error(_TAG, "web.setup_psk %s: the generated key is used instead" % why)
    path = beside(cfg["store"]["state_path"], KEY_FILE)
    try:
        with open(path) as f:
            k = f.read().strip()
        if credentials.check_psk(k) is None:
            return k, False
    except OSError:
        pass
    k = new_key(rand)
    with open(path + ".tmp", "w") as f:
        f.write(k)
    os.rename(path + ".tmp", path)
    return k, True


# -- the server -----------------------------------------------------------------------------------

class Setup:
    """The setup page's state: setup (waiting for the form), joining, joined, failed (the
    form may be sent again), saved (a board without Wi-Fi: nothing to join)."""

    def __init__(self, hal, cfg, why, problems, config_path, wifi):
        self.hal = hal
        self.cfg = cfg
        self.why = why
        self.problems = problems or []
        self.config_path = config_path
        self.wifi = wifi
        self.state = "setup"
        self.detail = ""
        self.restart_ms = cfg["web"].get("setup_restart_s", 60) * 1000
        self._task = None

    def server(self, host, port):
        srv = HttpServer(host, port, max_body=MAX_BODY)
        srv.route("GET", "/", self.page, auth=False)
        srv.route("GET", "/api/setup", self.info, auth=False)
        srv.route("GET", "/api/scan", self.scan, auth=False)
        srv.route("POST", "/api/setup", self.submit, auth=False)
        srv.route("GET", "/api/result", self.result, auth=False)
        return srv

    async def page(self, req, resp):
        from firmware.app.setup_page import PAGE

        await resp.start(200, _CT_HTML)
        mv = memoryview(PAGE)
        for i in range(0, len(mv), 512):  # small writes: no copy of the whole page on the heap
            await resp.write(mv[i:i + 512])

    async def info(self, req, resp):
        probs = []
        for p in self.problems:
            sev, key, msg = p[0], p[1], p[2]
            probs.append({"severity": sev if isinstance(sev, (int, str)) else str(sev),
                          "key": log.redact(str(key)), "message": log.redact(str(msg))})
        lan = self.cfg["lan"]
        radio = self.cfg["radio"]
        fmt = radio.get("credential_format", "broute")
        body = {"why": self.why, "why_text": WHY_TEXT.get(self.why, "setup mode"),
                "problems": probs, "state": self.state, "wifi": self.wifi,
                "ssid": lan["wifi_ssid"] if self.wifi else "",
                "have": {"psk": bool(self.wifi and lan["wifi_psk"]),
                         "id": _cred_ok("id", radio.get("route_b_id", ""), fmt),
                         "password": _cred_ok("password", radio.get("pana_password", ""), fmt)},
                "credential_format": fmt}
        text = json.dumps(body)
        heapmon.sample("setup request")  # the answer still referenced
        await resp.send(200, text, _CT_JSON)

    async def scan(self, req, resp):
        if not self.wifi:
            await resp.send(200, '{"networks": []}', _CT_JSON)
            return
        try:
            scan = self.hal.wifi_scan()
        except OSError as e:
            log.warn(_TAG, "Wi-Fi scan failed: %s" % e)
            await resp.send(503, json.dumps({"error": "scan failed: %s" % e}), _CT_JSON)
            return
        await resp.start(200, _CT_JSON)
        sep = '{"networks": ['
        for row in networks(scan):
            await resp.write(sep + json.dumps(row))
            sep = ", "
        heapmon.sample("setup request")  # the scan still referenced
        await resp.write("]}" if sep == ", " else '{"networks": []}')

    async def submit(self, req, resp):
        if self.state in ("joining", "joined", "saved"):
            await resp.send(503, json.dumps({"ok": False, "errors": {
                "form": "the device is busy with the values sent before (%s)" % self.state}}),
                _CT_JSON)
            return
        if req.ctype != "application/json":
            # the page sends JSON; a form on another site the phone has open can only post
            # urlencoded, multipart or text/plain without the browser asking first (CORS), and
            # a text/plain body may well look like JSON: refused, nothing joined or written
            await resp.send(415, json.dumps({"ok": False, "errors": {
                "form": "send the values as application/json (as the setup page does)"}}),
                _CT_JSON)
            return
        values, errors = parse_body(req.body)
        updates, more = validate(values, self.cfg, self.wifi) if "form" not in errors \
            else ({}, {})
        for k, v in more.items():
            errors.setdefault(k, v)
        if errors:
            log.warn(_TAG, "form refused: %s" % ", ".join(sorted(errors)))
            await resp.send(400, json.dumps({"ok": False, "errors": errors}), _CT_JSON)
            return
        for sect in updates.values():
            for k, v in sect.items():
                if k != "wifi_ssid":
                    log.add_secret(v)
        self._task = _spawn(self._apply(updates))
        self.state = "joining" if self.wifi else "saved"
        self.detail = ""
        await resp.send(200, json.dumps({"ok": True, "state": self.state}), _CT_JSON)

    async def result(self, req, resp):
        await resp.send(200, json.dumps({"state": self.state, "detail": self.detail}), _CT_JSON)

    async def _apply(self, updates):
        lan = updates.get("lan")
        if lan:
            ok = await self._join(lan["wifi_ssid"], lan["wifi_psk"])
            if not ok:
                return
        try:
            write_config(self.config_path, updates)
        except OSError as e:
            self.state = "failed"
            self.detail = "could not write the configuration: %s" % e
            log.error(_TAG, self.detail)
            return
        log.info(_TAG, "configuration written to %s (%s)" % (
            self.config_path, ", ".join(sorted("%s.%s" % (s, k) for s in updates
                                               for k in updates[s]))))
        # a person fixed the configuration: a boot loop's count starts again (docs/product.md)
        from firmware.app import safeboot

        safeboot.clear(safeboot.path_for(self.cfg["store"]["state_path"]))
        if lan:
            self.state = "joined"
        else:
            self.state = "saved"
        await sleep_ms(self.restart_ms)
        log.info(_TAG, "restarting with the new configuration")
        self.hal.ap_stop()
        self.hal.reset()

    async def _join(self, ssid, psk):
        log.info(_TAG, "trying to join %s" % ssid)
        hal = self.hal
        t0 = ticks_ms()
        try:
            hal.station_join(ssid, psk)
            while True:
                state, detail = hal.station_result()
                if state == "joined":
                    log.info(_TAG, "joined %s, address %s" % (ssid, detail))
                    self.detail = detail
                    return True
                if state == "failed" or ticks_diff(ticks_ms(), t0) > _JOIN_MS:
                    break
                await sleep_ms(_POLL_MS)
        except OSError as e:
            detail = "Wi-Fi error: %s" % e
        hal.station_stop()
        self.state = "failed"
        self.detail = detail or "no connection within %d s" % (_JOIN_MS // 1000)
        log.warn(_TAG, "joining %s failed: %s" % (ssid, self.detail))
        return False


def _spawn(coro):
    import asyncio

    return asyncio.create_task(coro)


def _wifi_board(hal):
    return hal.board.get("network", {}).get("kind") == "wifi"


async def serve_setup(hal, cfg, why, problems, events, config_path):
    """Setup mode: the setup access point and page until the device restarts with the new
    configuration; the watchdog is fed meanwhile. An access point or server that cannot start
    is logged and tried again every _RETRY_S seconds. events: the event sink (the caller records
    SAFE_MODE; nothing here yet)."""
    task = None
    n = 0
    try:
        while True:
            hal.feed_watchdog()
            if (task is None or task.done()) and n % _RETRY_S == 0:
                task = _start(hal, cfg, why, problems, config_path)
                if task is not None and heapmon.enabled:
                    await sleep_ms(0)
                    heapmon.milestone("setup page up")
            await sleep_ms(1000)
            n += 1
    finally:
        if task is not None:
            task.cancel()


def _start(hal, cfg, why, problems, config_path):
    """The access point and the server task, or None (logged) when they cannot start."""
    w = cfg["web"]
    try:
        key, made = ap_key(cfg)
        log.add_secret(key)
        ssid, ip = hal.ap_start(w.get("setup_ssid", ""), key)
    except OSError as e:
        log.error(_TAG, "setup access point could not start: %s" % e)
        return None
    # The key goes to the serial console once per start of setup mode, never through the
    # logger (whose lines may be collected): whoever reads the console has the REPL anyway.
    if not _said_key:
        _said_key.append(1)
        print("Setup access point: %s  key: %s%s" % (ssid, key, "  (new)" if made else ""))
    setup = Setup(hal, cfg, why, problems, config_path, _wifi_board(hal))
    srv = setup.server(ip, w.get("setup_port", 80))
    log.info(_TAG, "setup page on http://%s:%d/ (%s)" % (ip, srv.port,
                                                         WHY_TEXT.get(why, "setup mode")))
    return _spawn(_serve(srv))


_said_key = []


async def _serve(srv):
    try:
        await srv.run()
    except OSError as e:
        log.error(_TAG, "setup page could not listen on port %d: %s" % (srv.port, e))
