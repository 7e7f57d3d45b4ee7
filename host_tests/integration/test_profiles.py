"""The example configuration profiles (boards/profiles/, docs/product.md "Profiles"): the field
profile switches the web server and MQTT off, the full profile switches everything on; each left
as shipped (credentials empty) starts setup mode, and each filled in passes the firmware's own
configuration check with no problem at all."""

import json

import pytest

from firmware import log
from firmware.app import config
from tools.deployment import ROOT

FILLED = {
    "lan": {"wifi_ssid": "site", "wifi_psk": "a-wpa2-passphrase"},
    "radio": {"route_b_id": "0123456789ABCDEF0123456789ABCDEF", "pana_password": "SAMPLEPASSWD"},
    "dlms": {"mgmt_ek": "000102030405060708090A0B0C0D0E0F",
             "mgmt_ak": "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"},
    "web": {"password": "web-pass-1"},
    "mqtt": {"host": "192.0.2.10"},
    "clock": {"ntp_server": "192.0.2.1"},
}


def _profile(name):
    with open("%s/boards/profiles/%s.json" % (ROOT, name)) as f:
        return json.load(f)


def _check(data):
    log.set_sink(lambda line: None)
    try:
        return config.check(config.merge(data), "wifi")
    finally:
        log.set_sink(None)


@pytest.mark.parametrize("name,on", [("field", False), ("full", True)])
def test_profile_switches_and_check(name, on):
    data = _profile(name)
    assert data["web"]["enabled"] is on and data["mqtt"]["enabled"] is on
    shipped = _check(data)
    assert {w for sev, w, _m in shipped if sev == config.SETUP} >= {
        "lan.wifi_ssid", "lan.wifi_psk", "radio.pana_password"}, shipped
    for sect, values in FILLED.items():
        if sect in data:
            data[sect].update(values)
    assert _check(data) == []
