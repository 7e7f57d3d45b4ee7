"""Fuzz of the configuration check (firmware/app/cfgcheck.py) with hypothesis over random JSON-ish
configurations: merge() + check() never raise, every problem is (severity, key, message), and no
secret ever appears in a message or a log line. CPython only (hypothesis); a seeded fuzz runs on
both runtimes in host_tests/unit/test_config_check.py."""

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import log
from firmware.app import config

SECRET = "Zk8-Secret-Value-41"
KEYS = [(s, k) for s, d in config.DEFAULTS.items() for k in d] + [
    ("radio", "pana_password"), ("radio", "route_b_id"), ("radio", "sm_mac"), ("radio", "route"),
    ("dlms", "mgmt_ek"), ("dlms", "system_title"), ("nosuch", "x")]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                    st.text(max_size=70), st.just(SECRET), st.just(""),
                    st.sampled_from(["0123456789AB", "00112233445566778899AABBCCDDEEFF",
                                     "1.2.3.4", "han", "b", "wifi", "free", "0.0.25.9.0.255"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)
configs = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8).map(
        lambda d: _nest(d)),
    json_values)


def _nest(flat):
    out = {"lan": {"wifi_psk": SECRET}}
    for (s, k), v in flat.items():
        out.setdefault(s, {})[k] = v
    return out


@settings(max_examples=400, deadline=None)
@given(configs, st.sampled_from(["wifi", "ethernet", "host", None]))
def test_check_never_raises_never_echoes_a_secret(overrides, kind):
    lines = []
    log.set_sink(lines.append)
    try:
        cfg = config.merge(overrides)
        probs = config.check(cfg, kind)
    finally:
        log.set_sink(None)
    for p in probs:
        assert len(p) == 3 and p[0] in (config.KEEP_DEFAULT, config.SETUP)
        assert isinstance(p[1], str) and isinstance(p[2], str)
        assert SECRET not in p[2] and SECRET not in p[1]
    assert not [line for line in lines if SECRET in line]
    assert "configuration check failed" not in "\n".join(lines)  # no bug caught by the guard
    # a checked configuration has its defaults back wherever the problem kept the default
    for sect, d in config.DEFAULTS.items():
        for k, v in d.items():
            assert config.same_type(cfg[sect][k], v), (sect, k)
