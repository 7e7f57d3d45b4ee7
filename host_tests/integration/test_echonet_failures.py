"""Field failures of echonet-lite.md §4 that belong to the meter side: the firmware MeterClient
against tools/meter_emulator.py over real loopback UDP sockets (terminal 127.0.0.44, meter
127.0.0.45, a second controller / rogue on 127.0.0.46; ephemeral ports). Each test injects the
failure, shows the client recovers, and checks that no value was lost or altered: every value
read is compared with the emulator's ground-truth model.
"""

import asyncio
import gc
import time

import pytest

from firmware import timeutil
from firmware.meter import echonet
from firmware.meter.client import MeterError, MeterTimeout, UnitChanged
from firmware.meter.node import NodeResponder
from firmware.meter.profiles import CoefficientError
from firmware.store.record import FLAG_METER_RESET
from tools.meter_emulator import AsyncUdpEndpoint, MeterEmulator
from tools.meter_inspect import InspectingClient
from tools.meter_model import MeterModel

JST = 540
TERMINAL_IP, METER_IP, OTHER_IP = "127.0.0.44", "127.0.0.45", "127.0.0.46"
# 2025-04-01 10:47:13 JST: latest boundary 10:30 JST (history day 0 holds slots 0..21).
T0 = timeutil.t2k_from_fields(2025, 4, 1, 1, 47, 13)
B0 = timeutil.t2k_from_fields(2025, 4, 1, 1, 30, 0)
SLOT = timeutil.SLOT_S


class StepClock:
    def __init__(self, t2k):
        self.t = t2k

    def now_t2k(self):
        return self.t


def run(scenario, cfg=None, clock=None, limit_s=30, **emu_kw):
    """Emulator + client + receive task around scenario(c, emu, ep, clock)."""
    clock = clock or StepClock(T0)

    async def main():
        emu_kw.setdefault("model", MeterModel(seed=11))
        emu = MeterEmulator(addr=(METER_IP, 0), clock=clock, **emu_kw)
        await emu.start()
        ep = await AsyncUdpEndpoint.open((TERMINAL_IP, 0))
        conf = {"timeout_ms": 150, "retries": 2, "tz_offset_min": JST}
        conf.update(cfg or {})
        c = InspectingClient(ep, emu.addr, conf, NodeResponder())
        task = asyncio.create_task(c.run())
        try:
            return await asyncio.wait_for(scenario(c, emu, ep, clock), limit_s)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            ep.close()
            await emu.stop()

    return asyncio.run(main())


def expect_fixed(emu, b):
    return (b,) + emu.model.at_t2k(b)


# --- "device stops answering": silent for N polls, then back; backlog backfilled -------------


def test_silent_meter_recovers_and_history_fills_the_gap():
    async def s(c, emu, ep, clock):
        await c.read_unit()
        got = {}
        r = await c.read_fixed_time()
        got[r[0]] = r[1:]
        emu.faults["drop_prob"] = 1.0  # silent for three boundaries
        for _ in range(3):
            clock.t += SLOT
            with pytest.raises(MeterTimeout):
                await c.read_fixed_time()
        emu.faults["drop_prob"] = 0.0
        clock.t += SLOT
        r = await c.read_fixed_time()  # no restart needed
        got[r[0]] = r[1:]
        fwd, rev = await c.read_history(0)  # backfill from the meter's own history
        day0 = timeutil.t2k_from_fields(2025, 3, 31, 15, 0, 0)
        for i in range(48):
            if fwd[i] is not None:
                got.setdefault(day0 + i * SLOT, (fwd[i], rev[i]))
        for k in range(5):
            b = B0 + k * SLOT
            assert got[b] == emu.model.at_t2k(b), k  # nothing lost, nothing altered
        return c

    c = run(s)
    assert c.stats["poisoned"] == 0 and c.cap == 16 and c._pending is None


# --- ≤ 1 outstanding request; a meter that drops a second concurrent request ---------------


def test_concurrent_reads_are_serialised():
    async def s(c, emu, ep, clock):
        await c.read_unit()
        emu.requests.clear()
        emu.faults["delay_ms"] = 30
        res = await asyncio.gather(c.read_fixed_time(), c.read_identity(),
                                   c.read_history(1), c.read_fixed_time())
        assert res[0] == expect_fixed(emu, B0) == res[3]
        reqs = list(emu.requests)
        for a, b in zip(reqs, reqs[1:]):
            assert b.t - a.t >= 0.025  # the next request left only after the previous reply
        assert c.stats["retries"] == 0

    run(s)


# --- soak: latency bound, no leak of pending entries, TIDs or memory ------------------------


def test_soak_polls_latency_and_no_leak():
    n = 3000

    async def s(c, emu, ep, clock):
        await c.read_unit()
        emu.faults["drop_prob"] = 0.01  # some loss: retries must not leak either
        worst = 0.0
        gc.collect()
        tids = set()
        t_start = time.monotonic()
        for i in range(n):
            t0 = time.monotonic()
            assert await c.read_fixed_time() == expect_fixed(emu, B0)
            worst = max(worst, time.monotonic() - t0)
            tids.add(c._tid)
            if i == n // 10:
                gc.collect()
                base = len(gc.get_objects())
        gc.collect()
        grown = len(gc.get_objects()) - base
        assert c._pending is None
        assert not c._lock.locked()
        assert worst < 3 * 0.150 + 0.2  # never worse than the retries of one request
        assert grown < 200, grown
        assert len(tids) == n  # every request got a fresh TID
        assert time.monotonic() - t_start < 25
        return c.stats

    stats = run(s, limit_s=40, log_len=16)  # the emulator keeps only a short request log
    assert stats["errors"] == 0 and stats["timeouts"] == 0


# --- fewer EPCs returned than asked: the meter caps OPC at k ----------------------------------


def test_opc_cap_learned_and_identity_complete():
    async def s(c, emu, ep, clock):
        emu.faults["opc_cap"] = 2
        await c.read_unit()
        ident = await c.read_identity()
        assert c.cap == 2
        assert ident["device_type"] == b"\x02\x7e\x00" and ident["retention"] == 45
        assert ident["tolerance"] == 1 and len(ident["metered_id"]) == 17
        assert await c.read_fixed_time() == expect_fixed(emu, B0)
        fwd, rev = await c.read_history(1)
        day1 = timeutil.t2k_from_fields(2025, 3, 30, 15, 0, 0)
        assert [(f, r) for f, r in zip(fwd, rev)] == [emu.model.at_t2k(day1 + i * SLOT)
                                                      for i in range(48)]
        emu.requests.clear()
        await c.read_identity()
        assert all(len(r.epcs) <= 2 for r in emu.requests)
        assert emu.stats["capped"] > 0

    run(s)


def test_large_gets_dropped_cap_learned():
    async def s(c, emu, ep, clock):
        emu.faults["opc_drop"] = 3
        await c.read_unit()
        ident = await c.read_identity()
        assert ident["retention"] == 45 and ident["unit"] == 1
        assert c.cap <= 3 and c.stats["poisoned"] == 0
        t0 = c.stats["timeouts"]
        await c.read_identity()
        assert c.stats["timeouts"] == t0  # converged
        assert await c.read_fixed_time() == expect_fixed(emu, B0)

    run(s)


# --- one bad EPC kills the whole Get: isolate it, keep reading the rest ------------------------


def test_poison_property_isolated(lines):
    async def s(c, emu, ep, clock):
        emu.faults["poison_epcs"] = {0xD2}
        await c.read_unit()
        ident = await c.read_identity()
        assert ident["tolerance"] is None and ident["retention"] == 45
        assert c.is_poisoned(0xD2)
        emu.requests.clear()
        await c.read_identity()
        assert [r.action for r in emu.requests] == ["answered"]
        assert 0xD2 not in emu.requests[0].epcs
        assert await c.read_fixed_time() == expect_fixed(emu, B0)

    run(s)
    assert any("drops every Get containing 0xD2" in x for x in lines)


def test_poison_on_a_value_keeps_the_other_direction():
    async def s(c, emu, ep, clock):
        emu.faults["poison_epcs"] = {0xE7}
        await c.read_unit()
        b, fwd, rev = await c.read_fixed_time()
        assert (b, fwd, rev) == (B0, emu.model.at_t2k(B0)[0], None)
        emu.faults["poison_epcs"] = set()  # not asked again while held: still None, no timeouts
        t0 = c.stats["timeouts"]
        assert (await c.read_fixed_time())[2] is None
        assert c.stats["timeouts"] == t0

    run(s)


# --- unit not returned: never scaled with a guessed unit; flagged and retried ------------------


def test_unit_missing_then_available():
    async def s(c, emu, ep, clock):
        emu.faults["sna_epcs"] = {0xD4}
        with pytest.raises(MeterError):
            await c.read_unit()
        with pytest.raises(MeterError):
            await c.read_fixed_time()  # no value leaves the client without a unit
        emu.faults["sna_epcs"] = set()
        assert await c.read_unit() == 0x01
        assert await c.read_fixed_time() == expect_fixed(emu, B0)

    run(s)


# --- scale factors: every unit code, and 0x0288 with a coefficient ---------------------------


@pytest.mark.parametrize("code", [0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0B, 0x0C, 0x0D])
def test_every_unit_code_end_to_end(code):
    async def s(c, emu, ep, clock):
        assert await c.read_unit() == code
        assert await c.read_fixed_time() == expect_fixed(emu, B0)

    run(s, model=MeterModel(seed=11, unit_code=code))


@pytest.mark.parametrize("cls,eoj,coef,unit,stored", [
    (0x0288, 0x028801, 10, 0x02, 0x01),  # 0.01 kWh x 10 -> stored as 0.1 kWh
    (0x0288, 0x028801, 1, 0x01, 0x01),
    (0x028D, 0x028D01, 1000, 0x03, 0x00),  # 0.001 kWh x 1000 -> 1 kWh
])
def test_other_classes_with_coefficient(cls, eoj, coef, unit, stored):
    async def s(c, emu, ep, clock):
        assert await c.read_unit() == stored
        assert (c.unit_code, c.coefficient, c.digits) == (unit, coef, 6)
        assert await c.read_fixed_time() == expect_fixed(emu, B0)
        fwd, rev = await c.read_history(2)
        day2 = timeutil.t2k_from_fields(2025, 3, 29, 15, 0, 0)
        assert list(zip(fwd, rev)) == [emu.model.at_t2k(day2 + i * SLOT) for i in range(48)]
        day_epc = 0xE5 if cls == 0x0288 else 0xE0
        sets = [r for r in emu.requests if r.esv == 0x61]
        assert sets[-1].epcs == [day_epc] and sets[-1].edts == [b"\x02"]

    run(s, cfg={"eoj": eoj}, cls=cls, coefficient=coef, digits=6,
        model=MeterModel(seed=11, unit_code=unit, modulus=10 ** 6, start_fwd=1234))


def test_unrepresentable_coefficient_refused():
    async def s(c, emu, ep, clock):
        with pytest.raises(CoefficientError, match="not a power of ten"):
            await c.read_unit()

    run(s, cfg={"eoj": 0x028801}, cls=0x0288, coefficient=3, digits=6,
        model=MeterModel(seed=11, modulus=10 ** 6))


# --- slow devices: a reply inside the configured timeout is a success ------------------------


def test_slow_meter_within_timeout():
    async def s(c, emu, ep, clock):
        await c.read_unit()
        emu.faults["delay_ms"] = 1200
        t0 = time.monotonic()
        assert await c.read_fixed_time() == expect_fixed(emu, B0)
        assert time.monotonic() - t0 > 1.1  # it waited for the late reply (no retry below)
        assert c.stats["retries"] == 0

    run(s, cfg={"timeout_ms": 1500})


# --- reads driven by 0x9F: never assume a required EPC exists --------------------------------


def test_unlisted_properties_never_asked():
    async def s(c, emu, ep, clock):
        emu.faults["unlisted_epcs"] = {0xE7, 0xD2}
        assert await c.read_unit() == 1
        b, fwd, rev = await c.read_fixed_time()
        assert (b, fwd, rev) == (B0, emu.model.at_t2k(B0)[0], None)
        ident = await c.read_identity()
        assert ident["tolerance"] is None
        assert all(0xE7 not in r.epcs and 0xD2 not in r.epcs for r in emu.requests)
        assert c.stats["sna"] == 0

    run(s)


# --- partial Set: SetC of the day refused -> no history read for that day --------------------


def test_refused_day_no_history_read():
    async def s(c, emu, ep, clock):
        await c.read_unit()
        emu.requests.clear()
        with pytest.raises(MeterError, match="refused history day 46"):
            await c.read_history(46)
        assert [r.esv for r in emu.requests] == [0x61]
        fwd, _ = await c.read_history(45)  # the oldest kept day still works
        assert fwd.count(None) == 0

    run(s)


# --- fixed-time value with no data / the previous stamp: retry, then backfill ----------------


def test_fixed_time_nodata_and_stale_then_backfilled():
    async def s(c, emu, ep, clock):
        await c.read_unit()
        slot = timeutil.slot_of_t2k(B0)
        emu.faults["nodata_slots"] = {slot}
        assert await c.read_fixed_time() == (B0, None, None)
        emu.faults["nodata_slots"] = set()
        emu.faults["stale_slots"] = {slot}
        assert (await c.read_fixed_time())[0] == B0 - SLOT  # the caller sees the wrong stamp
        emu.faults["stale_slots"] = set()
        fwd, rev = await c.read_history(0)
        assert (fwd[21], rev[21]) == emu.model.at_t2k(B0)  # 10:30 JST from the history

    run(s)


def test_meter_clock_off_by_minutes_unsynced():
    async def s(c, emu, ep, clock):
        emu.faults["clock_offset_s"] = -600
        emu.faults["sync_status"] = 0x02
        t, sync = await c.read_clock()
        assert t == T0 - 600 and sync == 0x02
        assert await c.read_fixed_time() == expect_fixed(emu, B0)  # 10:37 meter time: same slot
        emu.faults["clock_offset_s"] = 600
        assert await c.read_fixed_time() == expect_fixed(emu, B0)  # 10:57

    run(s)


# --- counter wrap and meter replacement -----------------------------------------------------


def test_counter_wrap_at_ten_to_the_nine():
    start = 10 ** 9 - 10  # midday imports are 2-4 raw units per slot: wraps within 8 slots

    async def s(c, emu, ep, clock):
        await c.read_unit()
        seen = []
        for _ in range(8):
            b, fwd, rev = await c.read_fixed_time()
            assert (fwd, rev) == emu.model.at_t2k(b)
            seen.append(fwd)
            clock.t += SLOT
        assert any(b < a for a, b in zip(seen, seen[1:]))  # it did wrap
        assert c.stats["wraps"] == 1 and c.stats["resets"] == 0
        assert c.take_flags() == 0

    from tools.meter_model import ORIGIN_SLOT
    origin = timeutil.slot_of_t2k(B0)
    assert origin > ORIGIN_SLOT
    run(s, model=MeterModel(seed=11, start_fwd=start, origin_slot=origin))


def test_meter_replaced_reset_flagged_and_reread(lines):
    async def s(c, emu, ep, clock):
        assert await c.read_unit() == 1
        assert await c.read_fixed_time() == expect_fixed(emu, B0)
        clock.t += SLOT
        emu.reboot(reset_counters=True, new_identity=True, unit_code=0x02)
        with pytest.raises(UnitChanged):
            await c.read_fixed_time()  # identity changed: re-read unit before any value
        assert c.take_flags() & FLAG_METER_RESET
        assert await c.read_unit() == 0x02
        assert await c.read_fixed_time() == expect_fixed(emu, B0 + SLOT)
        # the same meter reset without changing identity: the decrease is the signal
        clock.t += 5 * SLOT
        assert await c.read_fixed_time() == expect_fixed(emu, B0 + 6 * SLOT)
        emu.reboot(reset_counters=True)
        clock.t += SLOT
        b, fwd, rev = await c.read_fixed_time()
        assert (b, fwd, rev) == expect_fixed(emu, B0 + 7 * SLOT)
        assert c.stats["resets"] >= 1
        assert c.take_flags() == FLAG_METER_RESET

    emu_model = MeterModel(seed=11, start_fwd=500000, start_rev=40000)
    run(s, model=emu_model)
    assert any("identity changed" in x for x in lines)
    assert any("meter reset or replaced" in x for x in lines)


def test_reboot_announced_by_unicast_inf_rereads_unit():
    async def s(c, emu, ep, clock):
        assert await c.read_unit() == 1
        emu.reboot(reset_counters=False, unit_code=0x03, announce_to=ep.local)
        for _ in range(100):
            if c.stats["rediscoveries"]:
                break
            await asyncio.sleep(0.01)
        assert c.stats["rediscoveries"] == 1
        with pytest.raises(UnitChanged):
            await c.read_fixed_time()
        assert await c.read_unit() == 0x03
        assert await c.read_fixed_time() == expect_fixed(emu, B0)

    run(s)


# --- history day changed by another controller between SetC and Get ------------------------


def test_day_race_retried_and_read_correctly():
    async def s(c, emu, ep, clock):
        await c.read_unit()
        emu.faults.update(d5_hijack=7, d5_hijack_count=2)
        fwd, rev = await c.read_history(3)
        day3 = timeutil.t2k_from_fields(2025, 3, 28, 15, 0, 0)
        assert list(zip(fwd, rev)) == [emu.model.at_t2k(day3 + i * SLOT) for i in range(48)]
        assert c.stats["day_races"] == 2
        emu.faults.update(d5_hijack=7, d5_hijack_count=None)  # never lets go: a clear error
        with pytest.raises(MeterError, match="echoes day 7"):
            await c.read_history(3)

    run(s)


def test_real_second_controller_moves_the_day():
    """Another controller on another address really sends SetC 0xD5 between our SetC and Get."""
    async def s(c, emu, ep, clock):
        await c.read_unit()
        other = await AsyncUdpEndpoint.open((OTHER_IP, 0))
        orig = emu._reply
        state = {"n": 0}

        def reply_then_interfere(tid, seoj, deoj, esv, props, get_props=None):
            out = orig(tid, seoj, deoj, esv, props, get_props)
            if esv == 0x61 and seoj == 0x05FF01 and state["n"] < 1 and deoj != 0x05FF02:
                state["n"] += 1
                buf = bytearray(32)
                n = echonet.encode_into(buf, 0x7777, 0x05FF02, emu.eoj, 0x61,
                                        [(0xD5, b"\x00\x09")])
                emu.handle(bytes(buf[:n]), other.local)  # lands before our Get
            return out

        emu._reply = reply_then_interfere
        try:
            fwd, rev = await c.read_history(2)
        finally:
            other.close()
        day2 = timeutil.t2k_from_fields(2025, 3, 29, 15, 0, 0)
        assert list(zip(fwd, rev)) == [emu.model.at_t2k(day2 + i * SLOT) for i in range(48)]
        assert c.stats["day_races"] == 1

    run(s)


# --- two 0x028E instances told apart by 0xD0 / 0xD6 -------------------------------------------


def test_two_instances_selected_by_device_type_and_id():
    second = {"cls": 0x028E, "instance": 2, "model": MeterModel(seed=99, start_fwd=777777),
              "device_type": b"\x02\xa1\x00", "serial": 2}

    async def s(c, emu, ep, clock):
        eoj = await c.find_instance(device_type=b"\x02\xa1\x00")
        assert eoj == 0x028E02
        assert await c.read_unit() == 1
        b, fwd, rev = await c.read_fixed_time()
        assert (fwd, rev) == emu.objects[1].model.at_t2k(B0)
        eoj = await c.find_instance(metered_id=emu.objects[0].metered_id)
        assert eoj == 0x028E01
        assert await c.read_fixed_time() == expect_fixed(emu, B0)
        with pytest.raises(MeterError, match="2 meter objects"):
            await c.find_instance()

    run(s, extra_objects=[second])


# --- spec-side items: INFC acknowledged over the wire; hostile datagrams ---------------------


def test_infc_from_the_meter_acknowledged():
    async def s(c, emu, ep, clock):
        probe = await AsyncUdpEndpoint.open((METER_IP, 0))
        try:
            buf = bytearray(64)
            n = echonet.encode_into(buf, 0x0A0B, 0x028E01, 0x05FF01, echonet.INFC,
                                    [(0xE6, bytes(11))])
            probe.sendto(buf[:n], ep.local)
            rx = bytearray(128)
            m, _ = await asyncio.wait_for(probe.recvfrom(rx), 2)
            f = echonet.decode(rx, m)
            assert (f.tid, f.seoj, f.deoj, f.esv) == (0x0A0B, 0x05FF01, 0x028E01, 0x7A)
            assert [(e, len(d)) for e, d in f.props] == [(0xE6, 0)]
        finally:
            probe.close()

    run(s)


def test_hostile_datagrams_during_reads(lines):
    async def s(c, emu, ep, clock):
        await c.read_unit()
        rogue = await AsyncUdpEndpoint.open((OTHER_IP, 0))
        try:
            bad = [b"\x10\x82" + bytes(12), b"\x10\x81\x00\x01\x02\x8e\x01\x05\xff\x01\x72\x00",
                   b"\x10\x81\x00\x01\x02\x8e\x01\x05\xff\x01\x72\x01\xe6\x0b\x00", b"\x10"]
            for _ in range(50):
                for d in bad:
                    rogue.sendto(d, ep.local)
                assert await c.read_fixed_time() == expect_fixed(emu, B0)
        finally:
            rogue.close()
        return c.stats

    stats = run(s)
    assert stats["malformed"] >= 150 and stats["errors"] == 0
    assert len([x for x in lines if "dropped malformed" in x]) <= 12
