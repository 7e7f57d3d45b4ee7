"""An unmodified broute-j11 session (J11Session over pyserial on the emulator's pty) joins the
emulated module's smart meter over the B-route and reads a low-voltage meter (0x028801) that a
small ECHONET Lite responder serves from the air side on loopback. Also: a wrong password
latches broute-j11 (AuthenticationError), a 0x0E first association is retried, and a scan with
a pairing ID the meter does not have hears nothing."""

import asyncio
import struct
from decimal import Decimal

import pytest
from broute_j11.session import (  # broute-j11: test-only dependency (requirements-dev.txt)
    AuthenticationError,
    J11Session,
    MeterNotFoundError,
    SessionConfig,
)
from broute_j11.transport import SerialTransport

from firmware.radio import j11
from tools import j11_emulator as emu_mod
from tools.j11_emulator import J11Emulator

AUTH_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "0123456789AB"
SM_MAC = "001D129012345678"
CHANNEL = 9
PAN_ID = 0x8888

# What the meter serves (EDTs), and the values broute-j11 must make of them
METER = {
    0xD3: struct.pack(">I", 2),  # coefficient
    0xD7: b"\x06",  # digits
    0xE1: b"\x01",  # unit 0.1 kWh
    0x8A: b"\x00\x00\x16",
    0x82: b"\x00\x00\x4a\x00",
    0x8D: b"SN0000000042",
    0xE7: struct.pack(">i", 1234),  # W
    0xE8: struct.pack(">hh", 123, -45),  # 0.1 A
    0xE0: struct.pack(">I", 123456),
    0xE3: struct.pack(">I", 789),
}


class EchonetMeter(asyncio.DatagramProtocol):
    """A low-voltage smart meter 0x028801 that answers Get with Get_Res (Get_SNA for EPCs it
    does not have), written for this test from the ECHONET Lite frame layout."""

    def __init__(self):
        self.gets = []
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) < 12 or data[:2] != b"\x10\x81" or data[10] != 0x62:
            return
        tid, opc = data[2:4], data[11]
        epcs, off = [], 12
        for _ in range(opc):
            epcs.append(data[off])
            off += 2 + data[off + 1]
        self.gets.append(epcs)
        props = b"".join(bytes((e, len(METER.get(e, b"")))) + METER.get(e, b"") for e in epcs)
        esv = 0x72 if all(e in METER for e in epcs) else 0x52
        self.transport.sendto(b"\x10\x81" + tid + b"\x02\x88\x01\x05\xff\x01"
                              + bytes((esv, opc)) + props, addr)


class Air:
    def __init__(self, **kw):
        self.kw = kw

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        self.meter_tr, self.meter = await loop.create_datagram_endpoint(
            EchonetMeter, local_addr=("127.0.0.4", 0))
        args = dict(air_addr=("127.0.0.3", 0), sm_addr=self.meter_tr.get_extra_info("sockname"),
                    sm_mac=SM_MAC, channel=CHANNEL, pan_id=PAN_ID, app_port=3610,
                    broute_id=AUTH_ID, broute_password=PASSWORD)
        args.update(self.kw)
        self.emu = J11Emulator(**args)
        await self.emu.start()
        return self

    async def __aexit__(self, *exc):
        await self.emu.stop()
        self.meter_tr.close()

    def session(self, password=PASSWORD, **kw):
        cfg = SessionConfig(auth_id=AUTH_ID, password=password, command_timeout=3.0,
                            startup_timeout=3.0, pana_timeout=5.0, echonet_timeout=3.0, **kw)
        return J11Session(SerialTransport(self.emu.slave_path), cfg)

    def cmds(self):
        return [c for c, _ in self.emu.requests]


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 55))


@pytest.mark.timeout(60)
def test_broute_j11_joins_and_reads_the_meter():
    async def body():
        async with Air() as air:
            s = air.session()
            try:
                link = await s.async_connect()
                assert (link.channel, link.pan_id, link.mac_address) == \
                    (CHANNEL, PAN_ID, bytes.fromhex(SM_MAC))
                assert link.rssi == air.emu.rssi
                assert air.cmds()[:9] == [0x00D9, 0x006B, 0x005F, 0x0054, 0x0051, 0x005F,
                                          0x0053, 0x0005, 0x0056]
                reqs = air.emu.requests
                assert reqs[2][1] == bytes((5, 0, 4, 0))  # dual mode, provisional channel 4
                assert reqs[3][1] == (AUTH_ID + PASSWORD).encode()
                assert reqs[4][1][5:] == b"\x01" + AUTH_ID[-8:].encode()  # pairing ID
                assert reqs[5][1] == bytes((5, 0, CHANNEL, 0))
                assert reqs[7][1] == b"\x0e\x1a"
                assert s.profile.coefficient == 2 and s.profile.unit == Decimal("0.1")
                reading = await s.async_read_meter()
                assert reading.instantaneous_power == 1234
                assert reading.current_r_phase == Decimal("12.3")
                assert reading.current_t_phase == Decimal("-4.5")
                assert reading.cumulative_forward_energy == Decimal("24691.2")  # 123456*2*0.1
                assert reading.cumulative_reverse_energy == Decimal("157.8")  # 789*2*0.1
                assert air.meter.gets[-1] == [0xE7, 0xE8, 0xE0, 0xE3]
                assert air.emu.stats["tx"] == len(air.meter.gets)
                assert air.emu.stats["rx"] == len(air.meter.gets)
            finally:
                await s.async_close()
            assert air.cmds()[-1] == 0x0057  # broute-j11 ends PANA on close

    run(body())


@pytest.mark.timeout(60)
def test_broute_j11_wrong_password_latches():
    async def body():
        async with Air() as air:
            s = air.session(password="ZZZZZZZZZZZZ")
            try:
                with pytest.raises(AuthenticationError):
                    await s.async_connect()
                assert s.authentication_failed
                with pytest.raises(AuthenticationError):  # latched: no second attempt
                    await s.async_connect()
                assert air.cmds().count(0x0056) == 1
                assert air.emu.stats["broute_pana_2"] == 1
            finally:
                await s.async_close()

    run(body())


@pytest.mark.timeout(60)
def test_broute_j11_retries_a_0x0e_association():
    async def body():
        async with Air(faults={"mac_fail": 1}) as air:
            s = air.session()
            try:
                link = await s.async_connect()
                assert link.mac_address == bytes.fromhex(SM_MAC)
                assert air.cmds().count(0x0053) == 2  # 0x0E, then the retry joins
                assert air.cmds().count(0x00D9) == 2  # from a reset module
                assert air.emu.stats["mac_fail"] == 1
                assert (await s.async_read_meter()).instantaneous_power == 1234
            finally:
                await s.async_close()

    run(body())


@pytest.mark.timeout(60)
def test_broute_j11_wrong_pairing_id_hears_nothing():
    async def body():
        async with Air(pairing_id="DEADBEEF") as air:
            s = air.session(scan_duration=1)
            try:
                before = air.emu.sim_elapsed_s
                with pytest.raises(MeterNotFoundError):
                    await s.async_connect()
                assert air.emu.stats["scans"] == 3  # durations 1, 2, 3
                beacons = [d for c, d in air.emu.sent if c == j11.NOTIFY_SCAN]
                assert len(beacons) == 3 * 14 and all(d[0] == 1 for d in beacons)
                scans = 14 * 0.00964 * (2 + 4 + 8)
                boots = air.cmds().count(0x00D9) * emu_mod.SIM_BOOT_S
                assert air.emu.sim_elapsed_s - before == pytest.approx(scans + boots)
                assert 0x0053 not in air.cmds()
            finally:
                await s.async_close()

    run(body())


def test_broute_commands_refuse_by_state_in_order():
    """The result byte each B-route command refuses with, per module mode and B-route state:
    the mode first (0x10 before 0x005F, 0x14 outside mode 5), then the command's own checks in
    order (a PANA exchange running, 0x35, is seen before a session up, 0x34)."""
    emu = J11Emulator(air_addr=("127.0.0.3", 0))
    cmds = {"pana_start": emu._cmd_broute_pana_start, "reauth": emu._cmd_broute_reauth,
            "pana_end": emu._cmd_broute_pana_end, "end": emu._cmd_broute_end,
            "key": emu._cmd_broute_key, "pan_id": emu._cmd_broute_pan_id}

    def refusals(mode, state, reauth=False):
        out = {}
        for name, fn in cmds.items():
            emu.mode, emu.broute, emu.broute_reauth = mode, state, reauth
            emu.sent.clear()
            asyncio.run(fn(0x0056, b""))
            out[name] = emu.sent[-1][1][0]
        return out

    assert set(refusals(None, emu_mod.BR_IDLE).values()) == {0x10}
    assert set(refusals(2, emu_mod.BR_AUTHENTICATED).values()) == {0x14}
    assert refusals(5, emu_mod.BR_IDLE) == dict.fromkeys(cmds, 0x10)
    emu.broute_pan, emu.broute_peer = PAN_ID, bytes(8)  # what a key / PAN ID answer reads
    busy = refusals(5, emu_mod.BR_AUTHENTICATING)
    assert busy == {"pana_start": 0x35, "reauth": 0x35, "pana_end": 0x35, "end": 0x35,
                    "key": 0x10, "pan_id": 0x01}
    redo = refusals(5, emu_mod.BR_AUTHENTICATED, reauth=True)
    assert {k: redo[k] for k in ("pana_start", "reauth", "pana_end", "end")} \
        == dict.fromkeys(("pana_start", "reauth", "pana_end", "end"), 0x35)
    emu.mode, emu.broute, emu.broute_reauth = 5, emu_mod.BR_AUTHENTICATED, False
    asyncio.run(emu._cmd_broute_pana_start(0x0056, b""))
    assert emu.sent[-1][1][0] == 0x34
