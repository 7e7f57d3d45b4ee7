"""MeterClient (firmware) against tools/meter_emulator.py over real loopback UDP sockets:
the terminal on 127.0.0.41, the meter on 127.0.0.42, a rogue sender on 127.0.0.43. Ports are
ephemeral so parallel runs and the demo (which uses 3610) never collide."""

import asyncio
import time

import pytest

from firmware import timeutil
from firmware.hal.udp import UdpEndpoint
from firmware.meter import echonet
from firmware.meter.client import MeterClient, MeterError, MeterTimeout
from firmware.meter.drmeter import MeterDataError
from firmware.meter.node import NodeResponder
from tools.meter_emulator import AsyncUdpEndpoint, MeterEmulator
from tools.meter_inspect import InspectingClient
from tools.meter_model import MeterModel
from tools.simclock import SimClock

JST = 540
# 2025-04-01 10:47:13 JST: latest boundary 10:30 JST, history day 0 has slots 0..21.
T0 = timeutil.t2k_from_fields(2025, 4, 1, 1, 47, 13)
B0 = timeutil.t2k_from_fields(2025, 4, 1, 1, 30, 0)


class FrozenClock:
    def __init__(self, t2k):
        self.t = t2k

    def now_t2k(self):
        return self.t


def warm(c, emu):
    """After the client has read the map, identity and unit: forget that traffic."""
    emu.requests.clear()
    for k in c.stats:
        c.stats[k] = 0


def run(scenario, timeout_ms=200, retries=2, faults=None, clock=None, endpoint="asyncio",
        prepare=True, emu_kw=None, cfg=None):
    """Start emulator + client, run scenario(client, emulator), tear everything down.
    prepare: let the client read property map, identity and unit first (then forget it)."""

    async def main():
        kw = {"model": MeterModel(seed=7)}
        kw.update(emu_kw or {})
        emu = MeterEmulator(addr=("127.0.0.42", 0), clock=clock or FrozenClock(T0),
                            faults=faults, **kw)
        await emu.start()
        if endpoint == "hal":
            ep = UdpEndpoint("127.0.0.41", 0, reuse=False)
        else:
            ep = await AsyncUdpEndpoint.open(("127.0.0.41", 0))
        conf = {"timeout_ms": timeout_ms, "retries": retries, "tz_offset_min": JST}
        conf.update(cfg or {})
        c = InspectingClient(ep, emu.addr, conf, NodeResponder())
        task = asyncio.create_task(c.run())
        try:
            if prepare:
                await asyncio.wait_for(c.read_unit(), 10)
                warm(c, emu)
            return await asyncio.wait_for(scenario(c, emu, ep), 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            ep.close()
            await emu.stop()

    return asyncio.run(main())


def test_unit_and_fixed_time_match_model():
    async def s(c, emu, ep):
        assert await c.read_unit() == 0x01
        b, fwd, rev = await c.read_fixed_time()
        assert b == B0
        assert (fwd, rev) == emu.model.at_t2k(B0)
        return c.stats

    stats = run(s)
    assert stats["attempts"] == 2 and stats["timeouts"] == 0


def test_first_read_is_driven_by_the_property_map():
    async def s(c, emu, ep):
        assert await c.read_unit() == 0x01
        reqs = list(emu.requests)
        assert reqs[0].esv == 0x62 and reqs[0].epcs == [0x9F]
        assert sorted(reqs[1].epcs) == [0x83, 0xD0, 0xD1, 0xD4, 0xD6]
        assert len(reqs) == 2
        assert c.getmap is not None and 0xE6 in c.getmap

    run(s, prepare=False)


def test_real_hal_endpoint():
    async def s(c, emu, ep):
        b, fwd, rev = await c.read_fixed_time()
        assert (fwd, rev) == emu.model.at_t2k(b)

    run(s, endpoint="hal")


def test_history_today_and_yesterday():
    async def s(c, emu, ep):
        today = timeutil.t2k_from_fields(2025, 3, 31, 15, 0, 0)  # 2025-04-01 00:00 JST
        for day in (0, 1, 45):
            fwd, rev = await c.read_history(day)
            base = today - day * timeutil.DAY_S
            for i in range(48):
                t = base + i * timeutil.SLOT_S
                want = emu.model.at_t2k(t) if t <= B0 else (None, None)
                assert (fwd[i], rev[i]) == want, (day, i)
        assert fwd.count(None) == 0
        fwd0, _ = await c.read_history(0)
        assert fwd0[21] is not None and fwd0[22] is None  # 10:30 published, 11:00 future
        sets = [r for r in emu.requests if r.esv == 0x61]
        assert [r.edts[0] for r in sets] == [b"\x00\x00", b"\x00\x01", b"\x00\x2d", b"\x00\x00"]

    run(s)


def test_history_day_beyond_retention_refused():
    async def s(c, emu, ep):
        with pytest.raises(MeterError):
            await c.read_history(46)
        assert [r.esv for r in emu.requests] == [0x61]

    run(s)


def test_history_echo_checked_when_another_controller_changes_day():
    async def s(c, emu, ep):
        emu.faults["d5_hijack"] = 5
        with pytest.raises(MeterError, match="echoes day 5"):
            await c.read_history(2)

    run(s)


def test_timeout_and_retry_with_fresh_tid():
    async def s(c, emu, ep):
        emu.faults["drop_next"] = 2
        assert await c.read_unit() == 1
        reqs = list(emu.requests)
        assert [r.action for r in reqs] == ["dropped", "dropped", "answered"]
        tids = [r.tid for r in reqs]
        assert len(set(tids)) == 3 and tids[1] == (tids[0] + 1) & 0xFFFF
        assert c.stats["retries"] == 2

    run(s)


def test_gives_up_then_recovers():
    async def s(c, emu, ep):
        emu.faults["drop_prob"] = 1.0
        t0 = time.monotonic()
        with pytest.raises(MeterTimeout):
            await c.read_fixed_time()
        # 3 attempts of the Get, then 3 each of two one-EPC liveness probes (0x9F, then 0x80:
        # a meter that drops the map's Get is still alive) before giving up: a silent meter is
        # never mistaken for a poison property.
        assert time.monotonic() - t0 >= 1.75  # nine timeouts of 200 ms each at least
        assert len(emu.requests) == 9
        assert c.stats["poisoned"] == 0 and c.cap == 16
        emu.faults["drop_prob"] = 0.0
        assert (await c.read_fixed_time())[0] == B0

    run(s)


def test_late_reply_to_old_tid_ignored():
    async def s(c, emu, ep):
        # attempt 1 answered at 400 ms (after the 300 ms timeout), while attempt 2 is pending;
        # attempt 2 answered at 300 + 200 ms.
        emu.faults["delay_next_ms"] = [400, 200]
        assert await c.read_unit() == 1
        assert c.stats["stale"] == 1
        assert c.stats["retries"] == 1

    run(s, timeout_ms=300)


def test_reply_from_wrong_address_ignored():
    async def s(c, emu, ep):
        rogue = await AsyncUdpEndpoint.open(("127.0.0.43", 0))
        emu.faults["delay_ms"] = 150
        try:
            task = asyncio.create_task(c.read_unit())
            for _ in range(100):
                if emu.requests:
                    break
                await asyncio.sleep(0.005)
            req = emu.requests[-1]
            buf = bytearray(64)
            n = echonet.encode_into(buf, req.tid, 0x028E01, 0x05FF01, 0x72, [(0xD4, b"\x0d")])
            rogue.sendto(buf[:n], ep.local)  # right TID and SEOJ, wrong IP
            assert await task == 0x01
            assert c.stats["foreign"] == 1
        finally:
            rogue.close()

    run(s)


def test_get_sna_both_forms():
    async def s(c, emu, ep):
        emu.faults["sna_epcs"] = {0xE7}
        b, fwd, rev = await c.read_fixed_time()
        assert (b, fwd, rev) == (B0, emu.model.at_t2k(B0)[0], None)
        emu.faults["sna_epcs"] = set()
        emu.faults["omit_epcs"] = {0xE7}
        assert await c.read_fixed_time() == (B0, emu.model.at_t2k(B0)[0], None)
        got = await c.get((0xE0, 0xE9))  # 0xE9 not implemented by the meter
        assert got[0xE9] is None and len(got[0xE0]) == 4
        assert c.stats["sna"] == 3

    run(s)


def test_garbage_and_truncated_replies_survived(lines):
    async def s(c, emu, ep):
        emu.faults.update(garbage=3, truncate_next=1)
        b, fwd, rev = await c.read_fixed_time()
        assert b == B0
        assert c.stats["malformed"] >= 4  # 3 garbage + the truncated reply (+3 more garbage)
        assert c.stats["retries"] == 1
        emu.faults.update(garbage=0, duplicate=2)
        assert await c.read_unit() == 1
        assert await c.read_unit() == 1
        return c.stats

    stats = run(s)
    assert stats["errors"] == 0
    assert any("dropped malformed datagram from 127.0.0.42" in x for x in lines)


def test_stale_and_nodata_fixed_time():
    async def s(c, emu, ep):
        slot = timeutil.slot_of_t2k(B0)
        emu.faults["stale_slots"] = {slot}
        b, fwd, _ = await c.read_fixed_time()
        assert b == B0 - timeutil.SLOT_S
        assert fwd == emu.model.at_t2k(B0 - timeutil.SLOT_S)[0]
        emu.faults["stale_slots"] = set()
        emu.faults["nodata_slots"] = {slot}
        assert await c.read_fixed_time() == (B0, None, None)

    run(s)


def test_meter_clock_offset():
    async def s(c, emu, ep):
        emu.faults["clock_offset_s"] = -1200  # meter shows 10:27:13 JST
        t, sync = await c.read_clock()
        assert t == T0 - 1200 and sync == 1
        assert (await c.read_fixed_time())[0] == B0 - timeutil.SLOT_S

    run(s)


def test_identity():
    async def s(c, emu, ep):
        ident = await c.read_identity()
        assert ident["retention"] == 45 and ident["unit"] == 1
        assert ident["device_type"] == b"\x02\x7e\x00"
        assert ident["maker"] == 0xFFFFFF and len(ident["ident"]) == 17

    run(s)


def test_discover_meter_node_profile():
    async def s(c, emu, ep):
        ep2 = await AsyncUdpEndpoint.open(("127.0.0.41", 0))
        np = MeterClient(ep2, emu.addr, {"eoj": 0x0EF001, "timeout_ms": 200})
        task = asyncio.create_task(np.run())
        try:
            got = await np.get((0xD6, 0xD7, 0x9F))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            ep2.close()
        assert got[0xD6] == b"\x01\x02\x8e\x01"
        assert got[0xD7] == b"\x01\x02\x8e"
        maps = await c.get((0x9F, 0x9E))
        get_map = echonet.decode_propmap(maps[0x9F])
        assert len(maps[0x9F]) == 17  # more than 15 EPCs: bitmap form
        for epc in (0xD3, 0xD4, 0xD5, 0xDA, 0xE1, 0xE3, 0xE6, 0xE7):
            assert epc in get_map
        assert echonet.decode_propmap(maps[0x9E]) == [0xD5]

    run(s)


def test_terminal_node_profile_answers_meter_side_probe():
    async def s(c, emu, ep):
        probe = await AsyncUdpEndpoint.open(("127.0.0.42", 0))
        try:
            buf = bytearray(64)
            n = echonet.encode_get(buf, 0x4242, 0x05FF01, 0x0EF001, (0x83, 0x8A, 0xD6))
            probe.sendto(buf[:n], ep.local)
            rx = bytearray(256)
            m, addr = await asyncio.wait_for(probe.recvfrom(rx), 2)
            f = echonet.decode(rx, m)
            assert addr == ep.local
            assert (f.tid, f.seoj, f.esv) == (0x4242, 0x0EF001, 0x72)
            assert bytes(f.edt(0xD6)) == b"\x01\x05\xff\x01"
            assert len(f.edt(0x83)) == 17
        finally:
            probe.close()

    run(s)


def test_one_outstanding_request():
    async def s(c, emu, ep):
        emu.faults["delay_ms"] = 40
        results = await asyncio.gather(c.read_unit(), c.read_fixed_time(), c.read_unit())
        assert results[0] == 1 and results[2] == 1
        times = [r.t for r in emu.requests]
        assert len(times) == 3
        for a, b in zip(times, times[1:]):
            assert b - a >= 0.035  # the next request left only after the previous reply

    run(s)


def test_accelerated_simclock_boundaries():
    async def s(c, emu, ep):
        seen = set()
        for _ in range(4):
            b, fwd, rev = await c.read_fixed_time()
            assert b % timeutil.SLOT_S == 0
            assert (fwd, rev) == emu.model.at_t2k(b)
            seen.add(b)
            await asyncio.sleep(0.05)
        assert len(seen) >= 2

    run(s, clock=SimClock(T0, rate=36000))  # one slot every 50 ms of real time


def test_off_boundary_stamp_is_reported(lines):
    async def s(c, emu, ep):
        off = b"\x07\xe9\x04\x01\x0a\x1e\x07" + b"\x00\x00\x00\x01"  # 10:30:07
        emu.fixed_time = lambda which, obj=None: off
        with pytest.raises(MeterDataError):
            await c.read_fixed_time()

    run(s)
    assert any("not a :00/:30 boundary" in x for x in lines)
