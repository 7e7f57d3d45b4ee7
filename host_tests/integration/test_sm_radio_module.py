"""The J11 emulator's HAN PAN coordinator mode (mode 1) and tools/sm_radio.py without a firmware
terminal: the coordinator commands and their malformed forms, acceptance mode, beacons, the
configuration parser (malformed input and a fuzz), and a datagram exchange both ways between a
terminal-side driver and SmartMeterRadio through the two emulators' air sockets."""

import asyncio
import json
import random

import pytest

from firmware import log
from firmware.radio import j11, link
from firmware.radio.j11_link import J11Link
from firmware.radio.j11_module import J11CommandError, J11Module
from tools import loopback_block, sm_radio
from tools.j11_emulator import R_INVALID_PARAM, R_WRONG_MODE, J11Emulator
from tools.serial_uart import SerialUart

SM_MAC = "001D129012345678"
T_MAC = "001D1290000A0001"
T_PW = "TERMPASS0001"


def cfg(**kw):
    c = {"channel": 5, "pan_id": 0x2345, "cmd_timeout_ms": 1000, "reset_timeout_ms": 2000,
         "terminals": [{"mac": T_MAC, "password": T_PW}]}
    c.update(kw)
    return c


class Rig:
    """A mode-1 emulator (the smart meter's module) and one terminal-side emulator whose
    coordinator it is, each with the firmware's J11 driver over SerialUart on its pty."""

    async def start(self, net, accept=True, config=None):
        self.sm = J11Emulator(air_addr=(net + "4", 0), sm_addr=(net + "30", 4059),
                              own_mac=SM_MAC, sm_mac=SM_MAC, boot_ms=10, pana_ms=10,
                              scan_ms_per_channel=0)
        await self.sm.start()
        self.sm_uart = SerialUart(self.sm.slave_path)
        self.radio = sm_radio.SmartMeterRadio(self.sm_uart,
                                              sm_radio.check_config(config or cfg()))
        await self.radio.start()
        if not accept:
            await self.radio.module.command(sm_radio.CMD_HAN_ACCEPT, b"\x02")
        self.t = J11Emulator(air_addr=(net + "3", 0), sm_addr=self.sm.air_addr, own_mac=T_MAC,
                             sm_mac=SM_MAC, coordinator=self.sm, boot_ms=10, pana_ms=10,
                             scan_ms_per_channel=0)
        await self.t.start()
        self.t_uart = SerialUart(self.t.slave_path)
        self.drv = J11Link(J11Module(self.t_uart, cmd_timeout_ms=1000), reset_timeout_ms=2000,
                           pana_timeout_ms=3000)
        self.drv.start()
        await self.drv.reset()

    async def stop(self):
        self.drv.stop()
        self.t_uart.close()
        self.radio.close()
        await self.t.stop()
        await self.sm.stop()


def run_rig(body, **kw):
    async def main():
        block = loopback_block.reserve()
        r = Rig()
        try:
            await r.start(block.prefix, **kw)
            return await asyncio.wait_for(body(r), 20)
        finally:
            try:
                await r.stop()
            finally:
                block.release()

    return asyncio.run(main())


def test_scan_join_and_datagrams_both_ways():
    async def body(r):
        beacons = await r.drv.scan(2, j11.SCAN_MASK_ALL, None)
        assert beacons == [(5, 0x2345, j11.mac_bytes(SM_MAC), r.t.rssi)]
        assert await r.drv.join(5, 0x2345, SM_MAC, {"id": None, "password": T_PW}) \
            == link.JOIN_OK
        assert await r.radio.wait_joined(T_MAC, 2) == 1
        assert T_MAC in r.radio.connected
        await r.drv.open_udp(4059)
        got = []
        r.drv.on_udp = lambda src, sp, dp, rssi, p: got.append((bytes(src), sp, dp, bytes(p)))
        ep = r.radio.endpoint(T_MAC)
        assert await r.radio.send(T_MAC, b"\x00\x01down")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [(j11.link_local_of_mac(SM_MAC), r.sm.air_addr[1], 4059, b"\x00\x01down")]
        tx = await r.drv.send(j11.link_local_of_mac(SM_MAC), 4059, 4059, b"\x00\x01up")
        assert tx == link.TX_OK
        assert await asyncio.wait_for(ep.queue.get(), 2) == b"\x00\x01up"
        # a configured terminal's endpoint only: the client's addr is ignored
        assert ep.addr == (j11.ipv6_text(j11.link_local_of_mac(T_MAC)), 4059)

    run_rig(body)


def test_scan_hears_nothing_on_another_channel_and_join_gets_no_answer():
    async def body(r):
        assert await r.drv.scan(2, 1 << 4, None) == []  # the PAN is on channel 5
        assert await r.drv.join(4, 0x2345, SM_MAC, {"id": None, "password": T_PW}) \
            == link.JOIN_NO_RESPONSE
        assert r.radio.joins == []

    run_rig(body)


def test_not_accepting_new_devices_gives_no_answer():
    async def body(r):
        res = await r.drv.join(5, 0x2345, SM_MAC, {"id": None, "password": T_PW})
        assert res == link.JOIN_NO_RESPONSE
        assert r.sm.stats["coord_not_accepting"] == 1 and r.radio.joins == []

    run_rig(body, accept=False)


def test_coordinator_commands_refuse_malformed_requests():
    async def body(r):
        m = r.radio.module
        for data in (b"", b"\x00", b"\x03", b"\x01\x01"):
            with pytest.raises(J11CommandError) as e:
                await m.command(sm_radio.CMD_HAN_ACCEPT, data)
            assert e.value.result == R_INVALID_PARAM
        for data in (b"", b"\x00" * 8, b"\x00" * 41):  # no password / beyond 32 bytes
            with pytest.raises(J11CommandError) as e:
                await m.command(j11.CMD_HAN_PANA_SET, data)
            assert e.value.result == R_INVALID_PARAM
        # acceptance mode only for the PAN coordinator
        with pytest.raises(J11CommandError) as e:
            await r.drv.m.command(sm_radio.CMD_HAN_ACCEPT, b"\x01")
        assert e.value.result == 0x10  # the terminal's module: no initial settings yet
        await r.drv.m.init_settings(3, 5)
        with pytest.raises(J11CommandError) as e:
            await r.drv.m.command(sm_radio.CMD_HAN_ACCEPT, b"\x01")
        assert e.value.result == R_WRONG_MODE
        # the coordinator still works
        assert await r.drv.join(5, 0x2345, SM_MAC, {"id": None, "password": T_PW}) \
            == link.JOIN_OK

    run_rig(body)


def test_running_pan_is_kept_and_a_reset_module_is_not():
    async def body(r):
        assert await r.radio.running_pan()
        assert await r.radio.start(reuse=True) is True
        await r.radio.module.reset()
        assert not await r.radio.running_pan()
        assert await r.radio.start(reuse=True) is False
        assert r.sm.coord_pan == 0x2345 and r.sm.coord_accepting

    run_rig(body)


def test_datagram_from_an_unknown_source_is_dropped_and_counted():
    async def body(r):
        r.sm._notify(j11.NOTIFY_UDP_RX, j11.link_local_of_mac("0011223344556677")
                     + bytes((0x0F, 0xDB, 0x0F, 0xDB, 0x23, 0x45, 0, 2, 0xC0, 0, 1)) + b"x")
        for _ in range(100):
            if r.radio.stats["rx_unknown"]:
                break
            await asyncio.sleep(0.01)
        assert r.radio.stats["rx_unknown"] == 1 and r.radio.stats["rx"] == 0
        # a mangled notification is counted by the driver, nothing raised
        r.sm._notify(j11.NOTIFY_PANA, b"\x01")
        r.sm._notify(j11.NOTIFY_CONNECTION, b"\x09" + b"\x00" * 9)
        await asyncio.sleep(0.1)
        assert r.radio.module.stats["bad_notifications"] == 2 and r.radio.joins == []

    run_rig(body)


@pytest.mark.parametrize("raw,what", [
    ([], "top level"),
    ({}, "terminals"),
    (cfg(terminals=[]), "terminals"),
    (cfg(terminals=["x"]), "terminal 0 is not an object"),
    (cfg(terminals=[{"mac": "00", "password": T_PW}]), "mac"),
    (cfg(terminals=[{"mac": "zz" * 8, "password": T_PW}]), "mac"),
    (cfg(terminals=[{"mac": T_MAC}]), "password"),
    (cfg(terminals=[{"mac": T_MAC, "password": "p" * 33}]), "password"),
    (cfg(terminals=[{"mac": T_MAC, "password": T_PW}] * 2), "twice"),
    (cfg(channel=3), "channel"),
    (cfg(channel="x"), "channel"),
    (cfg(pan_id=0xFFFF), "pan_id"),
    (cfg(udp_port=0), "udp_port"),
    (cfg(tx_power=3), "tx_power"),
])
def test_config_refuses_malformed_input_without_showing_passwords(raw, what):
    with pytest.raises(ValueError) as e:
        sm_radio.check_config(raw)
    assert what in str(e.value) and T_PW not in str(e.value)


def test_config_file_unreadable_does_not_quote_its_text(tmp_path):
    p = tmp_path / "sm.json"
    p.write_text('{"terminals": [{"mac": "%s", "password": "SECRETPW12" ' % T_MAC)
    with pytest.raises(ValueError) as e:
        sm_radio.load_config(str(p))
    assert "SECRETPW12" not in str(e.value) and "unreadable" in str(e.value)
    good = tmp_path / "ok.json"
    good.write_text(json.dumps(cfg(pan_id="0x1234")))
    c = sm_radio.load_config(str(good))
    assert c["pan_id"] == 0x1234 and c["terminals"] == [(j11.mac_bytes(T_MAC), T_PW.encode())]
    assert log.redact("x" + T_PW) == "x***"


def test_config_fuzz():
    rng = random.Random(10)
    base = json.dumps(cfg())
    for _ in range(3000):
        s = bytearray(base.encode())
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(s))
            op = rng.randrange(3)
            if op == 0:
                s[i] = rng.randrange(32, 127)
            elif op == 1:
                del s[i]
            else:
                s.insert(i, rng.randrange(32, 127))
        try:
            raw = json.loads(s.decode())
        except ValueError:
            continue
        try:
            c = sm_radio.check_config(raw)
        except ValueError:
            continue
        assert 4 <= c["channel"] <= 17 and 0 <= c["pan_id"] <= 0xFFFE
        for mac, pw in c["terminals"]:
            assert len(mac) == 8 and 1 <= len(pw) <= 32
