"""Fuzz of the setup page's POST /api/setup (firmware/app/setup.py): arbitrary bodies, and forms
and JSON objects carrying secrets, mutated. The handler never raises, answers 200 or 400 (or 503
while busy) with a JSON object, and never echoes any field's value in its answer or the log."""

import asyncio
import json
import os
import tempfile
from urllib.parse import quote_from_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web_fakes import Req, Resp

from firmware import log
from firmware.app import setup
from firmware.app.config import merge

# values made to be recognisable: at least 4 characters, one of which never appears in a message
MARK = "#$&*<>@[]^_`{|}~"
_secret = st.builds(lambda a, m, b: a + m + b, st.text(max_size=30),
                    st.sampled_from(MARK), st.text(min_size=3, max_size=40))
_field = st.sampled_from(setup.FIELDS + ("x", ""))


class _Hal:
    board = {"network": {"kind": "wifi"}}

    def station_join(self, ssid, psk):
        pass

    def station_result(self):
        return "failed", "the access point refused the key (wrong PSK)"

    def station_stop(self):
        pass


def _post(body):
    d = tempfile.mkdtemp(prefix="setup-fuzz-")
    cfg = merge({"store": {"state_path": os.path.join(d, "state.json")}})
    s = setup.Setup(_Hal(), cfg, 2, [], os.path.join(d, "config.json"), True)
    resp = Resp()

    async def go():
        await s.submit(Req(body), resp)
        if s._task is not None:
            await s._task

    asyncio.run(go())
    return s, resp


def _mutate(body, cuts):
    b = bytearray(body)
    for pos, byte in cuts:
        if b:
            b[pos % len(b)] = byte
    return bytes(b)


def _check(body, secrets, lines):
    s, resp = _post(body)
    assert resp.status in (200, 400, 503), resp.status
    ans = json.loads(resp.body)
    assert isinstance(ans, dict) and "ok" in ans
    text = resp.body.decode("utf-8", "replace") + "\n".join(lines)
    for v in secrets:
        assert v not in text, (v, text)
        assert json.dumps(v)[1:-1] not in resp.body.decode(), v  # nor JSON-escaped
    if resp.status == 200:  # accepted: the join fails, nothing is written
        assert s.state == "failed"
        assert not os.path.exists(s.config_path)
    return resp.status


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1200))
def test_arbitrary_bodies_never_crash(body):
    lines = []
    log.set_sink(lines.append)
    try:
        _check(body, [], lines)
    finally:
        log.set_sink(None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_field, _secret), max_size=6), st.booleans(),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3))
def test_forms_with_secrets_never_echo_them(fields, as_json, cuts):
    if as_json:
        body = json.dumps(dict(fields)).encode()
    else:
        body = b"&".join(quote_from_bytes(k.encode()).encode() + b"=" +
                         quote_from_bytes(v.encode()).encode() for k, v in fields)
    body = _mutate(body, cuts)
    lines = []
    log.set_sink(lines.append)
    try:
        _check(body, [v for _, v in fields], lines)
    finally:
        log.set_sink(None)


_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=7,
                     max_size=62)
_good = st.fixed_dictionaries({
    "ssid": st.text(min_size=1, max_size=10).filter(lambda s: len(s.encode()) <= 32),
    "psk": st.builds(lambda a, m: a + m, _printable, st.sampled_from(MARK)),
    "id": st.text("0123456789abcdefABCDEF", min_size=32, max_size=32),
    "password": st.text("0123456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ",
                        min_size=12, max_size=12),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_good, st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=1))
def test_accepted_forms_never_echo_them_either(values, cuts):
    body = _mutate(json.dumps(values).encode(), cuts)
    lines = []
    log.set_sink(lines.append)
    try:
        status = _check(body, [values["psk"], values["id"], values["password"]], lines)
    finally:
        log.set_sink(None)
    if not cuts:
        assert status == 200  # unmutated, every value is good: accepted, and the join tried
