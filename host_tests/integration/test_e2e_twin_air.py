"""The smart-meter twin without firmware (tools/smartmeter.py): the air model's frame sizes and
times, the shared medium (datagrams of two terminals offered at once are serialised: the second
starts when the first's air time ends, read from the twin's recorded schedule), the relay of each
terminal's traffic to its own module and head-end, the credential table and bad input."""

import asyncio
import random

import pytest

from tools import loopback_block
from tools.simclock import SimClock
from tools.smartmeter import (
    DOWN,
    MAX_TERMINALS,
    PANA_FAILED,
    PANA_NO_RESPONSE,
    PANA_OK,
    UP,
    AirModel,
    SmartMeterTwin,
)

MAC = "001D129012345678"


def test_air_model_single_frame_numbers():
    air = AirModel()
    # 100 bytes of UDP payload: MAC header 21 + security 10 + FCS 4 + IPHC/UDP 9 = 144 B PSDU
    assert air.psdus(100) == [144]
    frames, tx, ack, medium = air.datagram(100)
    assert frames == 1
    assert tx == pytest.approx((10 + 2 + 144) * 8 / 100000)  # 12.48 ms
    assert ack == pytest.approx((10 + 2 + 7) * 8 / 100000)  # 1.52 ms
    assert medium == pytest.approx(tx + ack + 0.000128 + 0.001)
    assert air.bound_s(100) == pytest.approx(0.008)
    # the largest payload that fits one frame: 255 - 35 - 9 = 211
    assert air.psdus(211) == [255]
    assert len(air.psdus(212)) == 2


def test_air_model_fragments_carry_the_whole_payload():
    air = AirModel()
    for n in [212, 300, 500, 1000, 1232] + random.Random(5).sample(range(212, 1233), 40):
        ps = air.psdus(n)
        assert all(p <= 255 for p in ps), (n, ps)
        # payload carried: first fragment after 35 + FRAG1 4 + IPHC/UDP 9, the rest after 35 + 5
        carried = (ps[0] - 48) + sum(p - 40 for p in ps[1:])
        assert carried == n, (n, ps)
        # every fragment but the last ends at a multiple of 8 bytes of the uncompressed
        # datagram (IPv6 40 + UDP 8 + the payload carried so far)
        if len(ps) > 1:
            assert (48 + ps[0] - 48) % 8 == 0
            assert all((p - 40) % 8 == 0 for p in ps[1:-1])
    # the J11's largest UDP payload: 200 B in the first fragment, 208 B in each further one
    assert air.psdus(1232) == [248, 248, 248, 248, 248, 240]


def test_credentials_and_beacons():
    twin = SmartMeterTwin(SimClock(0), ("127.0.0.1", 0), mac=MAC)
    for k in range(MAX_TERMINALS):
        twin.add_terminal("001D1290000A%04X" % k, "PASS%08d" % k, ("127.0.0.1", 100 + k),
                          ("127.0.0.1", 200 + k))
    with pytest.raises(ValueError):
        twin.add_terminal("001D1290000AFFFF", "x", ("127.0.0.1", 1), ("127.0.0.1", 2))
    ok = twin.authenticate(None, "001D1290000A0002", MAC, {"password": "PASS00000002"})
    assert ok == PANA_OK
    assert twin.authenticate(None, "001D1290000A0002", MAC, b"PASS00000001") == PANA_FAILED
    assert twin.authenticate(None, "001D1290000A0009", MAC, "PASS00000002") == PANA_FAILED
    assert twin.authenticate(None, "001D1290000A0002", "001D129000000000",
                             "PASS00000002") == PANA_NO_RESPONSE
    assert twin.beacons(None, 1 << 4) == [(4, 0x1234, bytes.fromhex(MAC), -52)]
    assert twin.beacons(None, 1 << 5) == []
    kw = twin.module_kw(3)
    assert kw == {"sm_mac": MAC, "pan_id": 0x1234, "channel": 4, "pana_password": "PASS00000003"}


class _Ep(asyncio.DatagramProtocol):
    def __init__(self):
        self.q = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.q.put_nowait((asyncio.get_running_loop().time(), data, addr))


def _wpdu(src, dst, body):
    return b"\x00\x01" + src.to_bytes(2, "big") + dst.to_bytes(2, "big") \
        + len(body).to_bytes(2, "big") + body


def _twin_of_two(net):
    """A twin on net.4 with terminals 0 and 1: module k on net.(43 + 20k), backhaul .(44 + 20k)."""
    twin = SmartMeterTwin(SimClock(0), (net + "4", 4059), mac=MAC)
    for k in range(2):
        b = 40 + 20 * k
        twin.add_terminal("001D1290000A%04X" % k, "PASS%08d" % k, (net + str(b + 3), 4059),
                          (net + str(b + 4), 4059))
    return twin


async def _shared_medium(net):
    loop = asyncio.get_running_loop()
    twin = _twin_of_two(net)
    eps = {}
    await twin.start()
    try:
        for k in range(2):
            b = 40 + 20 * k
            for role, host in (("module", b + 3), ("head", b + 5), ("public", b + 6)):
                eps[role, k] = (await loop.create_datagram_endpoint(
                    _Ep, local_addr=(net + str(host), 4059)))
        # both head-ends send a 1000-byte datagram at once (one loop turn)
        down = {k: _wpdu(1, 1, bytes([k]) * 992) for k in range(2)}
        for k in range(2):
            eps["head", k][0].sendto(down[k], twin.terminals[k].backhaul_addr)
        got = {}
        for k in range(2):
            t_rx, data, addr = await asyncio.wait_for(eps["module", k][1].q.get(), 5)
            got[k] = (t_rx, data, addr)
            assert data == down[k] and addr == twin.air_addr  # its own module, from the twin
        s0, s1 = list(twin.schedule)[:2]
        medium = twin.air.datagram(1000)[3]
        assert {s0[0], s1[0]} == {0, 1} and s0[1] == s1[1] == DOWN
        assert s0[2] == s1[2] == 1000 and s0[3] == s1[3] == 5
        assert s0[5] - s0[4] == pytest.approx(medium)
        assert s1[5] - s1[4] == pytest.approx(medium)
        assert s1[4] == s0[5]  # one medium: the second waits for the first's last ACK
        res = loop._clock_resolution
        for entry in (s0, s1):  # each delivered only once its air time was over
            assert got[entry[0]][0] >= entry[5] - res
        # uplink: the modules answer at once; the public client (SAP 16) of terminal 1 also
        # asked, and gets its own answer: the twin routes by the wrapper's client wPort
        eps["public", 1][0].sendto(_wpdu(16, 1, b"\xc0"), twin.terminals[1].backhaul_addr)
        await asyncio.wait_for(eps["module", 1][1].q.get(), 5)
        up = {k: _wpdu(1, 1, bytes([0x80 + k]) * 192) for k in range(2)}  # 200 B
        for k in range(2):
            eps["module", k][0].sendto(up[k], twin.air_addr)
        eps["module", 1][0].sendto(_wpdu(1, 16, b"\xc4"), twin.air_addr)
        for k in range(2):
            _t, data, addr = await asyncio.wait_for(eps["head", k][1].q.get(), 5)
            assert data == up[k] and addr == twin.terminals[k].backhaul_addr
        _t, data, _a = await asyncio.wait_for(eps["public", 1][1].q.get(), 5)
        assert data == _wpdu(1, 16, b"\xc4")
        sched = list(twin.schedule)
        ups = [e for e in sched if e[1] == UP]
        assert len(ups) == 3
        for a, b in zip(sched, sched[1:]):
            assert b[4] >= a[5]  # never two transmissions on the air at once
        assert ups[1][4] == ups[0][5] and ups[2][4] == ups[1][5]
        # per-terminal sums: terminal 0 sent 200 B (frames) and acknowledged 1000 B (5 ACKs)
        f0 = twin.figures(0)
        _fr, tx_up, ack_up, m_up = twin.air.datagram(200)
        _fr, tx_dn, ack_dn, m_dn = twin.air.datagram(1000)
        assert f0["tx_s"] == pytest.approx(tx_up + ack_dn)
        assert f0["medium_s"] == pytest.approx(m_up + m_dn)
        assert f0["up_bytes"] == 200 and f0["down_bytes"] == 1000
        assert f0["bound_s"] == pytest.approx(1200 * 8 / 100000)

        # bad input: a stranger on the air, an oversized datagram from a head-end, a flood
        stranger = (await loop.create_datagram_endpoint(
            _Ep, local_addr=(net + "30", 4059)))[0]
        stranger.sendto(b"who", twin.air_addr)
        eps["head", 0][0].sendto(b"\x00" * 1300, twin.terminals[0].backhaul_addr)
        for _ in range(200):  # 200 x 1232 B is about 25 s of air: beyond the 10 s backlog
            eps["head", 0][0].sendto(_wpdu(1, 1, b"\x00" * 1224),
                                     twin.terminals[0].backhaul_addr)
        await asyncio.sleep(0.3)
        assert twin.stats["air_unknown_source"] == 1
        assert twin.stats["down_too_long"] == 1
        assert twin.stats["air_congested"] > 0
        stranger.close()
    finally:
        for tr, _p in eps.values():
            tr.close()
        await twin.stop()


@pytest.mark.timeout(60)
def test_shared_medium_serialises_terminals_and_relays_each_to_its_own():
    block = loopback_block.reserve()
    try:
        asyncio.run(_shared_medium(block.prefix))
    finally:
        block.release()


def test_link_figures_of_a_profile_read():
    from tools import twin_bench

    log, got, blocks = twin_bench.profile_read_datagrams(96)
    assert len(got) == 96 and [r[1] for r in got] == [100000 * 100 + 700 * i for i in range(96)]
    # AARQ/AARE, HLS pass 3/4, one GET and one GET-Next per further block, RLRQ/RLRE
    assert len(log) == 2 * (3 + blocks) and blocks > 1
    assert [d for d, _n in log] == ["down", "up"] * (3 + blocks)
    f = twin_bench.measure(96)
    air = AirModel()
    medium = sum(air.datagram(n)[3] for _d, n in log)
    tx = sum(air.datagram(n)[1] if d == "up" else air.datagram(n)[2] for d, n in log)
    assert f["link.profile_45d_read_s"] == round(medium, 2)
    assert f["link.profile_45d_tx_s"] == round(tx, 2)
    assert 1 < f["link.profile_45d_bound_ratio"] < 3
    assert f["link.profile_45d_bytes"] == sum(n for _d, n in log)
    # the push backlog: one protected DataNotification per slot, sent by the terminal
    sizes = twin_bench.push_backlog_sizes(96)
    assert len(sizes) == 96 and min(sizes) > 40  # wrapper + general-glo header + tag + row
    push = sum(air.datagram(n)[1] for n in sizes)
    assert f["link.backlog_45d_airtime_s"] == round(push, 2)
    assert f["link.backlog_45d_t108_share"] == round(push / 360, 4)


async def _fuzz(net, n):
    rng = random.Random(10)
    twin = _twin_of_two(net)
    await twin.start()
    try:
        # the head-ends are known only once they have spoken: the first uplinks find none
        for i in range(n):
            size = rng.choice((0, 1, 7, 8, 9, rng.randrange(0, 1400)))
            data = bytes(rng.randrange(256) for _ in range(size))
            if rng.random() < 0.5:
                data = b"\x00\x01" + data[2:]  # a wrapper version, random wPorts and length
            t = twin.terminals[rng.randrange(2)]
            if i < 50 or rng.random() < 0.5:
                host = "%s%d" % (net, rng.choice((43, 63, 45, 30, 4)))
                twin._from_air(data, (host, rng.choice((4059, 4059, 1))))
            else:
                twin._from_headend(t, data, (net + str(rng.randrange(1, 255)), 4059))
        for t in twin.terminals:
            assert len(t.routes) <= 16
        assert len(twin.schedule) <= twin.schedule.maxlen
        # everything offered was either booked on the medium or counted as dropped
        assert twin.stats["air_congested"] > 0 and twin.stats["down_too_long"] > 0
        assert twin.stats["air_unknown_source"] > 0 and twin.stats["up_no_headend"] > 0
        booked = twin.stats["datagrams_up"] + twin.stats["datagrams_down"]
        dropped = sum(twin.stats[k] for k in ("air_congested", "down_too_long",
                                              "air_unknown_source", "up_no_headend"))
        assert booked + dropped == n
    finally:
        await twin.stop()


@pytest.mark.timeout(60)
def test_fuzz_the_twin_with_random_datagrams_on_both_sides():
    block = loopback_block.reserve()
    try:
        asyncio.run(_fuzz(block.prefix, 3000))
    finally:
        block.release()


def test_demo_summary_lines():
    from tools import demo

    one = [{"expected": 3, "delivered": 3, "missing": 0, "mismatched": 0}]
    assert demo.summary_lines(one) == ["intervals expected=3 delivered=3 missing=0"]
    assert demo.results_ok(one)
    two = one + [{"expected": 3, "delivered": 1, "missing": 1, "mismatched": 1}]
    assert demo.summary_lines(two) == [
        "terminal 0: intervals expected=3 delivered=3 missing=0",
        "terminal 1: intervals mismatched=1",
        "terminal 1: intervals expected=3 delivered=1 missing=1"]
    assert not demo.results_ok(two)
    assert not demo.results_ok([{"expected": 0, "delivered": 0, "missing": 0, "mismatched": 0}])
