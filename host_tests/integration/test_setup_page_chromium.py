"""The setup page in headless Chromium against the firmware running under `micropython` on the
esp32-sim board (the ESP32 HAL against the stand-ins of tools/esp32sim): a configuration without
Wi-Fi or Wi-SUN credentials, so the device is in setup mode with its WPA2 access point up.

As a user on a phone would: the page says why the device is in setup mode and lists the scan,
where the WPA2 network can be chosen and the WPA-only, open and Shift-JIS neighbours cannot (each
with its reason); a Wi-SUN ID with the letter O gets the credential check's precise message; a
wrong PSK is refused by the access point and said so; then the right values join, the page shows
"joined", and config.json holds them. No secret in the log; the AP key only on the console.
A screenshot of each step is kept under build/artefacts/.
The device runs the real main.py: the start-up decision (terminal.main, docs/product.md) finds
the configuration unusable and starts setup mode."""

import json
import os
import time
import urllib.request

import pytest
from chromium_cdp import Chromium, find_chromium
from loop_thread import LoopThread

from firmware.app import credentials
from tools.deployment import PANA_PASSWORD, Deployment, build_host_mpy, default_heap, wait_until
from tools.esp32sim import host as esp32sim

HERE = os.path.dirname(os.path.abspath(__file__))
ARTEFACTS = os.path.join(esp32sim.ROOT, "build", "artefacts")
# setup mode must fit in the heap the normal run is given (it runs instead of it, through the same
# main.py and terminal module); the figures measured are logged
HEAP = default_heap()
PORT = 8080
GOOD_ID = "0123456789ABCDEF0123456789ABCDEF"
BAD_ID = "0123456789ABCDEF0123456789ABCDEO"  # the letter O where a digit belongs
GOOD_PASSWORD = "Z7pQ4xW2mN8k"
WRONG_PSK = "not-the-key-of-it"
STEP_S = 20  # the longest any one step may take


def _unconfigured(monkeypatch, heap, restart_s=60):
    """A deployment on the esp32-sim board whose configuration lacks the Wi-Fi and Wi-SUN
    credentials: the start-up decision (terminal.main) starts setup mode."""
    find_chromium()  # fails, naming the install step, before anything is started
    dep = Deployment(board="esp32-sim", heap=heap, config_overrides={
        "lan": {"wifi_ssid": "", "wifi_psk": ""},
        "radio": {"pana_password": "", "route_b_id": ""},
        "web": {"setup_port": PORT, "setup_restart_s": restart_s},
        "terminal": {"heap_log": True},
    })
    dep.mpy_dir = build_host_mpy(os.path.join(dep.workdir, "mpy"))
    return dep


def _setup_mode_up(dep):
    assert wait_until(lambda: "setup page on http://" in dep.terminal_log(), STEP_S), \
        dep.terminal_log()


@pytest.fixture
def device(monkeypatch):
    dep = _unconfigured(monkeypatch, HEAP)
    mon = None
    try:
        dep.start_firmware()
        mon = esp32sim.WatchdogMonitor(dep).start()
        _setup_mode_up(dep)
        yield dep, mon
    finally:
        if mon:
            mon.stop()
        dep.stop_firmware()
        dep.reservation.release()


def _ap(dep):
    with open(os.path.join(esp32sim.sim_dir(dep), "ap.json")) as f:
        return json.load(f)


def _config(dep):
    with open(os.path.join(dep.workdir, "config.json")) as f:
        return json.load(f)


def _rows(br):
    return br.evaluate("""[...document.querySelectorAll('#nets li')].map(li => ({
        bssid: li.dataset.bssid, text: li.textContent,
        enabled: !!li.querySelector('input:not([disabled])')}))""")


def _submit(br, psk, wisun_id, password):
    for sel in ("#psk", "#id", "#password"):
        br.evaluate("document.querySelector('%s').value = ''" % sel)
    br.click("li[data-bssid='02:00:5e:00:00:01'] input")
    br.type_into("#psk", psk)
    br.type_into("#id", wisun_id)
    br.type_into("#password", password)
    br.click("#go")


def test_setup_page_in_chromium_joins_wpa2_and_writes_the_configuration(device):
    dep, mon = device
    url = "http://%s:%d/" % (dep.terminal_ip, PORT)
    log = dep.terminal_log()
    # the AP: WPA2 with the generated key, which went to the console once and nowhere else
    line = [x for x in log.splitlines() if x.startswith("Setup access point: ")]
    assert len(line) == 1, log
    key = line[0].split("key: ")[1].split()[0]
    assert credentials.check_psk(key) is None and len(key) == 12
    assert log.count(key) == 1, log
    ap = _ap(dep)
    assert ap["active"] and ap["security"] == "SEC_WPA2" and ap["key"] == key, ap
    assert ap["ssid"] == "IoT-terminal-3002", ap  # the stand-in AP's MAC ends 30:02
    with open(os.path.join(dep.workdir, "setup_key")) as f:
        assert f.read() == key  # kept in the state dir (next to store.state_path)
    os.makedirs(ARTEFACTS, exist_ok=True)
    t0 = time.monotonic()
    with Chromium(timeout_s=STEP_S) as browser:
        br = browser.new_page()
        br.open(url)
        assert br.wait_for("document.querySelectorAll('#nets li[data-bssid]').length == 4",
                           STEP_S), br.evaluate("document.body.innerText")
        why = br.evaluate("document.getElementById('why').textContent")
        assert "configuration cannot be used" in why, why
        probs = br.evaluate("document.getElementById('probs').textContent")
        # config.check's own messages (firmware/app/cfgcheck.py), key by key
        for name, msg in (("lan.wifi_psk", "open networks are not allowed"),
                          ("radio.pana_password", "is missing")):
            assert name + ": " in probs and msg in probs, probs
        rows = {r["bssid"]: r for r in _rows(br)}
        wpa2, wpa, sjis, guest = (rows["02:00:5e:00:00:0%d" % i] for i in (1, 2, 3, 4))
        assert wpa2["enabled"] and esp32sim.WIFI_SSID in wpa2["text"], wpa2
        assert "not selectable" not in wpa2["text"], wpa2
        assert not wpa["enabled"] and "WPA (TKIP) is below WPA2" in wpa["text"], wpa
        assert not guest["enabled"] and "open network" in guest["text"], guest
        assert not sjis["enabled"] and "name not UTF-8: 836583588367" in sjis["text"], sjis
        assert "not UTF-8 text" in sjis["text"], sjis
        br.screenshot(os.path.join(ARTEFACTS, "setup_page_scan.png"))

        # a Wi-SUN ID with the letter O: the credential check's own message, nothing written
        _submit(br, esp32sim.WIFI_PSK, BAD_ID, GOOD_PASSWORD)
        want = credentials.check_id(BAD_ID)
        assert br.wait_for("document.getElementById('e_id').textContent", STEP_S) == want
        assert want == "character 32 is the letter O, not a hexadecimal digit (the digit 0?)"
        assert br.evaluate("document.getElementById('e_psk').textContent") == ""
        br.screenshot(os.path.join(ARTEFACTS, "setup_page_bad_id.png"))
        assert _config(dep)["lan"]["wifi_ssid"] == ""

        # a wrong PSK: the access point refuses it; the page says so and nothing is written
        _submit(br, WRONG_PSK, GOOD_ID, GOOD_PASSWORD)
        res = br.wait_for("(t => t.startsWith('not joined') && t)"
                          "(document.getElementById('r').textContent)", STEP_S)
        assert res == "not joined: the access point refused the key (wrong PSK)", res
        assert _config(dep)["lan"]["wifi_psk"] == ""

        # the right values: joined in station mode, shown, and written
        _submit(br, esp32sim.WIFI_PSK, GOOD_ID, GOOD_PASSWORD)
        res = br.wait_for("(t => t.startsWith('joined') && t)"
                          "(document.getElementById('r').textContent)", STEP_S)
        assert res and res.startswith("joined: address %s " % dep.terminal_ip), \
            (res, dep.terminal_log())
        br.screenshot(os.path.join(ARTEFACTS, "setup_page_joined.png"))
    assert time.monotonic() - t0 < 4 * STEP_S
    cfg = _config(dep)
    assert cfg["lan"]["wifi_ssid"] == esp32sim.WIFI_SSID
    assert cfg["lan"]["wifi_psk"] == esp32sim.WIFI_PSK
    assert cfg["radio"]["route_b_id"] == GOOD_ID
    assert cfg["radio"]["pana_password"] == GOOD_PASSWORD
    assert cfg["web"]["setup_port"] == PORT  # the rest of the file kept
    log = dep.terminal_log()
    for secret in (esp32sim.WIFI_PSK, WRONG_PSK, GOOD_ID, BAD_ID, GOOD_PASSWORD):
        assert secret not in log, secret
    assert log.count(key) == 1
    assert "joined %s" % esp32sim.WIFI_SSID in log
    assert mon.resets == [], log  # setup mode feeds the watchdog
    assert "MemoryError" not in log
    # heap of setup mode (live heap after a collection), for docs/memory.md
    for line in log.splitlines():
        if line.startswith("INFO heap: "):
            print(line)


def _post(url, values):
    req = urllib.request.Request(url + "api/setup", data=json.dumps(values).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=STEP_S) as r:
        return json.load(r)


def _get(url, path):
    with urllib.request.urlopen(url + path, timeout=STEP_S) as r:
        return json.load(r)


def test_after_setup_the_device_restarts_into_the_normal_run_with_what_was_written(monkeypatch):
    """The whole loop: setup mode, the values sent, joined, written, the device restarts
    (machine.reset, as the watchdog monitor plays it) and runs normally: Wi-Fi joined with the
    written key, the radio joined with the written Wi-SUN password (the module emulator checks
    it), the setup access point down."""
    # the normal run's heap: this boot ends in it (setup mode itself needs far less)
    dep = _unconfigured(monkeypatch, "%dk" % (int(default_heap()[:-1]) + 24), restart_s=3)
    loop = LoopThread()
    mon = None
    try:
        loop.run(dep.start())  # the meter and module emulators, then the firmware
        mon = esp32sim.WatchdogMonitor(dep).start()
        _setup_mode_up(dep)
        url = "http://%s:%d/" % (dep.terminal_ip, PORT)
        assert _post(url, {"ssid": esp32sim.WIFI_SSID, "psk": esp32sim.WIFI_PSK, "id": GOOD_ID,
                           "password": PANA_PASSWORD}) == {"ok": True, "state": "joining"}
        assert wait_until(lambda: _get(url, "api/result")["state"] != "joining", STEP_S)
        assert _get(url, "api/result") == {"state": "joined", "detail": dep.terminal_ip}
        # the file is written before "joined" is shown. From here the device's config.json is
        # its own, kept across the reset as on a device's filesystem (the deployment would
        # write its own configuration again at the next start).
        written = _config(dep)
        dep.firmware_config = lambda: written
        assert wait_until(lambda: all(x in dep.terminal_log() for x in (
            "radio: ready", "lan: link up")), 3 * STEP_S), dep.terminal_log()
        log = dep.terminal_log()
        assert [c for c, _ in mon.resets] == ["SOFT"], log  # one restart: machine.reset()
        after = log[log.index("restarting with the new configuration"):]
        assert "IoT-route wireless terminal starting" in after
        assert "lan: link up" in after
        assert "setup page on" not in after
        assert not _ap(dep)["active"]
        for secret in (esp32sim.WIFI_PSK, GOOD_ID, PANA_PASSWORD):
            assert secret not in log, secret
    finally:
        if mon:
            mon.stop()
        try:
            loop.run(dep.stop())
        finally:
            loop.close()
