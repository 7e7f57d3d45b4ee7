"""Discovery on a real (namespaced) network: multicast search and announcement between two
network namespaces, multicast dead behind a router, a meter reboot, and independent peers
(pychonet as a controller finding the terminal, uecho as a 0x028E device). Every process runs
inside a namespace created here; nothing touches the host's interfaces."""
import binascii
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import netns  # noqa: E402

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

pytestmark = pytest.mark.timeout(60)


def _pair(multicast):
    try:
        return netns.NetPair(multicast=multicast).open()
    except netns.NetnsUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def pair():
    p = _pair(True)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def dead_pair():
    p = _pair(False)
    try:
        yield p
    finally:
        p.close()


def run(proc, timeout=15):
    code, out = netns.finish(proc, timeout)
    return code, out, netns.results(out)


def one(res, kind):
    got = [r for r in res if r["kind"] == kind]
    assert len(got) == 1, (kind, res)
    return got[0]


def wait_ready(proc, timeout=5):
    """Read the role's output up to its "ready" line (the socket is bound and joined)."""
    end = time.monotonic() + timeout
    lines = []
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("@") and '"ready"' in line:
            return lines
    raise AssertionError("peer not ready: %s" % "".join(lines))


def _discover_and_read(pair, runtime=None):
    meter = pair.role(1, "meter", "--seconds", 6, "--announce", "--ip", pair.ips[1])
    wait_ready(meter)
    term = pair.role(0, "terminal", "--seconds", 5, "--read", runtime=runtime)
    code, out, res = run(term)
    assert code == 0, out
    _, mout, mres = run(meter)
    return res, out, one(mres, "summary")


def test_discovery_finds_emulator_by_multicast(pair):
    res, out, msum = _discover_and_read(pair)
    assert ["meter", pair.ips[1]] in [[r["event"], r["ip"]] for r in res if r["kind"] == "event"]
    read = one(res, "read")
    assert read["ip"] == pair.ips[1] and read["unit"] == 1
    assert read["fwd"] is not None and read["rev"] is not None
    assert one(res, "summary")["nodes"] == {pair.ips[1]: ["028E01"]}
    assert msum["searches"] >= 1  # our multicast Get 0xD6 reached the other namespace
    assert msum["meter_gets"] >= 3


def test_discovery_under_micropython(pair):
    if not os.path.exists(MICROPYTHON):
        pytest.fail("micropython binary missing at %s" % MICROPYTHON)
    res, out, msum = _discover_and_read(pair, runtime=MICROPYTHON)
    read = one(res, "read")
    assert read["ip"] == pair.ips[1] and read["fwd"] is not None, out
    assert msum["searches"] >= 1


def test_multicast_dead_falls_back_to_static_and_unicast_checks(dead_pair):
    peer = dead_pair.ips[1]
    meter = dead_pair.role(1, "meter", "--seconds", 6, "--announce", "--ip", peer)
    wait_ready(meter)
    blind = dead_pair.role(0, "terminal", "--seconds", 2)  # no static address: nothing found
    _, bout, bres = run(blind)
    assert one(bres, "summary")["meter"] is None, bout
    term = dead_pair.role(0, "terminal", "--seconds", 3, "--static", peer, "--read", "--linger")
    code, out, res = run(term)
    assert code == 0, out
    _, _, mres = run(meter)
    s = one(res, "summary")
    assert one(res, "read")["ip"] == peer
    assert s["meter"] == peer and s["stats"]["searches"] >= 2
    assert s["stats"]["checks"] >= 3 and s["stats"]["misses"] == 0
    assert s["nodes"] == {peer: ["028E01"]}  # learned from unicast check answers
    # No multicast crossed the router: every Get 0xD6 the meter saw was a unicast check.
    assert one(mres, "summary")["searches"] <= s["stats"]["checks"]


def test_announcement_reaches_the_peer_namespace(pair):
    listener = pair.role(1, "listen", "--seconds", 3, "--ip", pair.ips[1])
    wait_ready(listener)
    term = pair.role(0, "terminal", "--seconds", 1)
    run(term)
    _, out, res = run(listener)
    grams = [r for r in res if r["kind"] == "datagram" and r["src"] == pair.ips[0]]
    frames = [binascii.unhexlify(g["hex"]) for g in grams]
    announce = [f for f in frames if f[4:] == bytes.fromhex("0EF001 0EF001 73 01 D5 04 01 05FF01")]
    assert len(announce) == 1 and announce[0][:2] == b"\x10\x81", out
    assert any(f[4:] == bytes.fromhex("05FF01 0EF001 62 01 D6 00") for f in frames)
    assert any(f[4:] == bytes.fromhex("05FF01 0EF001 63 01 D5 00") for f in frames)


def test_meter_reboot_is_reported(pair):
    meter = pair.role(1, "meter", "--seconds", 4, "--announce", "--reboot-after", 1.5,
                      "--ip", pair.ips[1])
    wait_ready(meter)
    term = pair.role(0, "terminal", "--seconds", 3)
    _, out, res = run(term)
    _, _, mres = run(meter)
    one(mres, "rebooted")
    events = [(r["event"], r["ip"]) for r in res if r["kind"] == "event"]
    assert events == [("meter", pair.ips[1]), ("reboot", pair.ips[1])], out


def test_two_meter_instances_are_listed(pair):
    meter = pair.role(1, "meter", "--seconds", 4, "--two", "--ip", pair.ips[1])
    wait_ready(meter)
    term = pair.role(0, "terminal", "--seconds", 2)
    _, out, res = run(term)
    run(meter)
    assert one(res, "summary")["nodes"] == {pair.ips[1]: ["028E01", "028E02"]}, out


def test_pychonet_discovers_the_terminal(pair):
    term = pair.role(0, "terminal", "--seconds", 8)
    time.sleep(0.5)
    ctl = pair.role(1, "pychonet", "--seconds", 5, "--target", pair.ips[0])
    _, out, res = run(ctl, 20)
    s = one(res, "summary")
    assert s["found"] and s["discovered"], out
    assert pair.ips[0] in s["hosts"]
    assert s["objects"] == ["05FF01"]
    assert s["maps"]["9F"] == [0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x9D, 0x9E, 0x9F]
    assert s["ident"] is True
    term.kill()
    _, tout, tres = run(term)
    assert "Traceback" not in tout


def test_uecho_device_is_discovered_and_read(pair):
    dev = pair.role(1, "uecho-meter", "--seconds", 6)
    wait_ready(dev)
    term = pair.role(0, "terminal", "--seconds", 5, "--read")
    code, out, res = run(term)
    run(dev)
    assert code == 0, out
    read = one(res, "read")
    assert (read["ip"], read["unit"], read["fwd"], read["rev"]) == (pair.ips[1], 1, 100000, 2500)
    # 2024-10-15 10:30:00 JST
    assert read["stamp"] == 782271000
    assert one(res, "summary")["nodes"][pair.ips[1]] == ["028E01"]
