"""SkStackLink (CPython) against the SKSTACK emulator over a real pty, both dialects, through
tools/serial_uart.py (pyserial) and through the host HAL's PtyUart, with a loopback smart-meter
peer socket; every fault knob of the emulator; family detection (J11 emulator too)."""

import asyncio
import os
import socket
import time
import tty

import pytest
from radio_rig import close_rig

from firmware import log
from firmware.hal.host import PtyUart
from firmware.radio import j11, link
from firmware.radio import skstack_codec as sk
from firmware.radio.detect import detect_family
from firmware.radio.skstack import SkStackLink
from tools.j11_emulator import J11Emulator
from tools.serial_uart import SerialUart
from tools.skstack_emulator import SkStackEmulator

SM_MAC = "001D129012345678"
SM_IP6 = j11.link_local_of_mac(SM_MAC)
PASSWORD = "0123456789AB"
RBID = "00112233445566778899AABBCCDDEEFF"
CREDS = {"id": RBID, "password": PASSWORD}
PORT = 4059
# binary data with CR LF inside, and bytes that look like the end of a line
PAYLOAD = b"\x00\x01\r\n\xff\xfeEVENT 21\r\nOK\r\n" + bytes(range(256))

pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(coro)


class Rig:
    def __init__(self, dse=False, uart="hal", emu=None, drv=None):
        self.lines = []
        self.events = []
        self.rx = []
        self.sm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sm.bind(("127.0.0.4", 0))
        self.sm.setblocking(False)
        kw = dict(dse=dse, air_addr=("127.0.0.3", 0), sm_addr=self.sm.getsockname(),
                  sm_mac=SM_MAC, pana_password=PASSWORD, rbid=RBID, app_port=PORT,
                  time_scale=0.01)
        kw.update(emu or {})
        self.emu = SkStackEmulator(**kw)
        self.dse = dse
        self.uart_kind = uart
        self.drv = dict(cmd_timeout_ms=1500, pana_timeout_ms=3000, send_timeout_ms=2000)
        self.drv.update(drv or {})

    async def __aenter__(self):
        log.set_sink(self.lines.append)
        await self.emu.start()
        path = self.emu.slave_path
        self.uart = SerialUart(path) if self.uart_kind == "serial" else PtyUart(path)
        self.link = SkStackLink(self.uart, dse=self.dse, **self.drv)
        self.link.on_event = lambda code, detail: self.events.append(code)
        self.link.on_udp = lambda src, sport, dport, rssi, payload: self.rx.append(
            (bytes(src), sport, dport, rssi, bytes(payload)))
        # the reader starts with reset(): detect_family() reads the UART itself before that
        return self

    async def __aexit__(self, *exc):
        await close_rig(self.link, self.uart, self.emu, self.sm, self.lines, (PASSWORD, RBID))

    async def until(self, cond, timeout=5.0, what="condition"):
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError("timed out waiting for %s; stats=%s log=%s"
                                     % (what, self.link.stats, self.lines[-8:]))
            await asyncio.sleep(0.01)

    async def up(self):
        """reset, scan, join, open the port: the whole bring-up."""
        await self.link.reset()
        beacons = await self.link.scan(2, pairing_id=RBID[-8:])
        assert len(beacons) == 1, beacons
        ch, pan, mac, rssi = beacons[0]
        assert (ch, pan, mac) == (4, 0x1234, bytes.fromhex(SM_MAC))
        assert rssi == self.emu.rssi
        assert await self.link.join(ch, pan, mac, CREDS) == link.JOIN_OK
        await self.link.open_udp(PORT)
        return beacons[0]

    async def sm_recv(self, timeout=3.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                return self.sm.recvfrom(2048)
            except BlockingIOError:
                await asyncio.sleep(0.01)
        raise AssertionError("the smart meter received nothing")

    async def roundtrip(self, payload=PAYLOAD):
        """A datagram both ways through the air side."""
        n0 = len(self.rx)
        while True:  # what earlier sends left at the meter
            try:
                self.sm.recvfrom(2048)
            except BlockingIOError:
                break
        assert await self.link.send(SM_IP6, PORT, PORT, payload) == link.TX_OK
        data, _ = await self.sm_recv()
        assert data == payload
        self.sm.sendto(payload[::-1], self.emu.air_addr)
        await self.until(lambda: len(self.rx) > n0, what="ERXUDP")
        src, sport, dport, rssi, got = self.rx[-1]
        assert (src, dport, got) == (SM_IP6, PORT, payload[::-1])
        if self.dse:
            assert rssi == self.emu.rssi  # LQI in ERXUDP (SA2=1)
        else:
            assert rssi is None  # single-hop ERXUDP carries no LQI: nothing invented


@pytest.mark.parametrize("dse", [False, True], ids=["single", "dse"])
@pytest.mark.parametrize("uart", ["hal", "serial"])
def test_bring_up_and_datagrams(dse, uart):
    async def main():
        async with Rig(dse, uart) as r:
            assert await detect_family(r.uart, 500) == (
                link.FAMILY_SKSTACK_DSE if dse else link.FAMILY_SKSTACK)
            await r.up()
            assert (await r.link.version()).startswith("1.")
            await r.roundtrip()
            await r.roundtrip(b"\r\n")
            cmds = [c.split(b" ")[0] for c in r.emu.requests]
            assert b"WOPT" not in cmds  # binary already: the flash is not written
            assert r.emu.regs["SFE"] == "0"
            assert r.emu.regs["S02"] == "21" and r.emu.regs["S03"] == "1234"
            if dse:
                assert r.emu.regs["SA2"] == "1"
            assert r.link.stats["rx_errors"] == 0
    run(main())


@pytest.mark.parametrize("dse", [False, True], ids=["single", "dse"])
def test_hex_data_format_read_before_write(dse):
    async def main():
        async with Rig(dse, drv=dict(hex_data=True)) as r:
            await r.up()
            await r.roundtrip()
            assert r.emu.hex_data and r.emu.stats["flash_writes"] == 1
            await r.link.reset()  # already hex: read, not written again
            assert r.emu.stats["flash_writes"] == 1
    run(main())


def test_rl7023_ips_without_ropt_is_hex():
    async def main():
        async with Rig(False, emu=dict(ropt=False)) as r:
            await r.up()
            assert r.link.hex_data
            await r.roundtrip()
    run(main())


@pytest.mark.parametrize("dse", [False, True], ids=["single", "dse"])
def test_scan_join_faults(dse):
    async def main():
        async with Rig(dse) as r:
            await r.link.reset()
            r.emu.set_faults(silent_scans=1)
            assert await r.link.scan(1, pairing_id=RBID[-8:]) == []
            assert len(await r.link.scan(1, pairing_id=RBID[-8:])) == 1
            mac = bytes.fromhex(SM_MAC)
            r.emu.set_faults(join_fail=1, join_fail_kind=2)
            assert await r.link.join(4, 0x1234, mac, CREDS) == link.JOIN_BAD_CREDENTIALS
            r.emu.set_faults(join_fail=1, join_fail_kind=3)
            assert await r.link.join(4, 0x1234, mac, CREDS) == link.JOIN_NO_RESPONSE
            bad = {"id": RBID, "password": "WRONGPASSWRD"}
            assert await r.link.join(4, 0x1234, mac, bad) == link.JOIN_BAD_CREDENTIALS
            assert await r.link.join(5, 0x1234, mac, CREDS) == link.JOIN_NO_RESPONSE
            r.emu.set_faults(ll64_ok=True)  # the optional OK must not answer the next command
            assert await r.link.join(4, 0x1234, mac, CREDS) == link.JOIN_OK
            await r.link.open_udp(PORT)
            await r.roundtrip()
            assert not any("WRONGPASSWRD" in x for x in r.lines)
    run(main())


@pytest.mark.parametrize("dse", [False, True], ids=["single", "dse"])
def test_send_faults(dse):
    async def main():
        async with Rig(dse) as r:
            await r.up()
            r.emu.set_faults(tx_no_ack=1)
            assert await r.link.send(SM_IP6, PORT, PORT, b"x") == link.TX_NO_ACK
            r.emu.set_faults(nd_first=1)
            nd = r.link.stats["nd"]
            assert await r.link.send(SM_IP6, PORT, PORT, b"y") == link.TX_OK
            assert r.link.stats["nd"] == nd + 1
            r.emu.set_faults(event21_before_ok=False)
            assert await r.link.send(SM_IP6, PORT, PORT, b"z") == link.TX_OK
            r.emu.set_faults(event21_before_ok=True)
            r.emu.t108(True)
            await r.until(lambda: link.EV_TX_LIMIT_ON in r.events, what="EVENT 32")
            assert await r.link.send(SM_IP6, PORT, PORT, b"w") == link.TX_LIMITED
            r.emu.t108(False)
            await r.until(lambda: link.EV_TX_LIMIT_OFF in r.events, what="EVENT 33")
            await r.roundtrip()
            with pytest.raises(link.LinkError):
                await r.link.send(SM_IP6, 1234, PORT, b"q")  # port not open
    run(main())


@pytest.mark.parametrize("dse", [False, True], ids=["single", "dse"])
def test_session_events(dse):
    async def main():
        async with Rig(dse) as r:
            await r.up()
            r.emu.expire_session(reauth_ok=True)
            await r.until(lambda: link.EV_REAUTH_OK in r.events, what="re-auth ok")
            assert r.events[-2:] == [link.EV_REAUTH_STARTED, link.EV_REAUTH_OK]
            await r.roundtrip()
            r.emu.expire_session(reauth_ok=False)
            await r.until(lambda: link.EV_REAUTH_FAILED in r.events, what="re-auth failed")
            assert r.events[-2:] == [link.EV_REAUTH_STARTED, link.EV_REAUTH_FAILED]
            assert await r.link.reauth() == link.JOIN_OK
            await r.roundtrip()
            r.emu.peer_end()
            await r.until(lambda: link.EV_LINK_DOWN in r.events, what="EVENT 26")
            assert await r.link.reauth() == link.JOIN_OK
            await r.link.leave()
            assert not r.emu.authenticated
            assert r.events.count(link.EV_LINK_DOWN) == 1  # our own SKTERM is no link loss
    run(main())


def test_lifetime_and_t108_as_data_knobs():
    async def main():
        async with Rig(True, emu=dict(faults=dict(expire_ms=5000, t108_after_sends=2,
                                                  t108_ms=30000))) as r:
            await r.up()
            await r.until(lambda: link.EV_REAUTH_OK in r.events, what="timed expiry")
            assert r.events[:2] == [link.EV_REAUTH_STARTED, link.EV_REAUTH_OK]
            assert await r.link.send(SM_IP6, PORT, PORT, b"1") == link.TX_OK
            assert await r.link.send(SM_IP6, PORT, PORT, b"2") == link.TX_OK
            await r.until(lambda: r.link.tx_limited, what="EVENT 32")
            assert await r.link.send(SM_IP6, PORT, PORT, b"3") == link.TX_LIMITED
            await r.until(lambda: link.EV_TX_LIMIT_OFF in r.events, what="EVENT 33")
            assert await r.link.send(SM_IP6, PORT, PORT, b"4") == link.TX_OK
            r.emu.set_faults(reauth_fail=True)
            await r.until(lambda: link.EV_REAUTH_FAILED in r.events, what="failed re-auth")
            assert not r.emu.authenticated
    run(main())


@pytest.mark.parametrize("dse", [False, True], ids=["single", "dse"])
def test_line_quirks_split_reads_and_garbage(dse):
    async def main():
        async with Rig(dse, emu=dict(faults=dict(split_writes=True, eport_extra_lines=True))) as r:
            await r.up()
            assert r.link._ports[:3] == [3610, 716, PORT]
            ed = "SKSCAN 0 FFFFFFFF 1" + (" 0" if dse else "")
            await r.link.command(ed)  # ED scan: EVENT 1F, EEDSCAN, the extra CRLF
            await r.until(lambda: any(x.startswith(b"EEDSCAN") for x in r.emu.sent), 5,
                          "EEDSCAN")
            await r.roundtrip()
            r.emu.set_faults(split_writes=False, garbage=6)
            await r.roundtrip()
            await r.roundtrip()
            assert r.emu.faults["garbage"] == 0
            r.emu.inject(b"ERXUDP FE80:0000 garbled\r\nEVENT ZZ\r\n" + b"A" * 600 + b"\r\n")
            await r.roundtrip()
            assert r.link.stats["rx_errors"] >= 1
    run(main())


def test_vanished_device_then_back():
    async def main():
        async with Rig(False) as r:
            await r.up()
            r.emu.set_faults(mute=True)
            with pytest.raises(link.LinkTimeout):
                await r.link.send(SM_IP6, PORT, PORT, b"lost")
            with pytest.raises(link.LinkTimeout):
                await r.link.version()
            r.emu.set_faults(mute=False)
            await r.link.reset()
            assert await r.link.join(4, 0x1234, bytes.fromhex(SM_MAC), CREDS) == link.JOIN_OK
            await r.link.open_udp(PORT)
            await r.roundtrip()
    run(main())


def test_single_hop_syntax_to_dse_module_fails_er05():
    async def main():
        async with Rig(True) as r:
            r.link.dse = False  # the dialect mix-up of hsakoh/broute-mqtt#2
            await r.link.reset()
            with pytest.raises(link.LinkCommandError) as e:
                await r.link.scan(1, pairing_id=RBID[-8:])
            assert e.value.code == "ER05"
            r.link.dse = True
            assert len(await r.link.scan(1, pairing_id=RBID[-8:])) == 1
    run(main())


def test_datagram_beyond_buffer_is_dropped_and_reported():
    async def main():
        async with Rig(False, drv=dict(max_udp=64)) as r:
            await r.up()
            r.sm.sendto(b"B" * 200, r.emu.air_addr)
            await r.until(lambda: link.EV_RX_FAIL in r.events, what="EV_RX_FAIL")
            assert r.rx == []
            await r.roundtrip(b"short\r\n")
    run(main())


def test_han_style_password_only():
    async def main():
        async with Rig(False, emu=dict(rbid=None)) as r:
            await r.link.reset()
            (ch, pan, mac, _), = await r.link.scan(1, pairing_id=RBID[-8:])
            assert await r.link.join(ch, pan, mac, {"password": PASSWORD}) == link.JOIN_OK
            assert not any(c.startswith(b"SKSETRBID") for c in r.emu.requests)
    run(main())


class _Coordinator:
    """Two meters; only the second accepts."""

    def __init__(self):
        self.calls = []

    def beacons(self, emu, mask, pairing_id):
        return [(6, 0x2222, bytes.fromhex("001D129000000006"), -70),
                (9, 0x3333, bytes.fromhex("001D129000000009"), -60)]

    def authenticate(self, emu, own_mac, peer_mac, credentials):
        self.calls.append((peer_mac, credentials["password"]))
        return 1 if peer_mac[-1] == 9 else 3


def test_coordinator_hook():
    async def main():
        coord = _Coordinator()
        async with Rig(True, emu=dict(coordinator=coord)) as r:
            await r.link.reset()
            got = await r.link.scan(1, pairing_id=RBID[-8:])
            assert [(c, p) for c, p, _, _ in got] == [(6, 0x2222), (9, 0x3333)]
            assert [x[3] for x in got] == [-70, -60]
            assert await r.link.join(*got[0][:3], CREDS) == link.JOIN_NO_RESPONSE
            assert await r.link.join(*got[1][:3], CREDS) == link.JOIN_OK
            assert r.emu.regs["S02"] == "%02X" % link.skstack_channel(9)
            assert len(coord.calls) == 2
    run(main())


# -- the reference exchange (wisun-modules.md 4.5), line by line -----------------------------

def _read_lines(fd, n, timeout=5.0):
    out = b""
    end = time.monotonic() + timeout
    while out.count(b"\r\n") < n and time.monotonic() < end:
        try:
            out += os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.005)
    return out.split(b"\r\n")[:n]


def test_reference_exchange_replayed():
    async def main():
        emu = SkStackEmulator(air_addr=("127.0.0.3", 0), sm_addr=("127.0.0.4", 9), sm_mac=SM_MAC,
                              pana_password=PASSWORD, rbid=RBID, time_scale=0.01,
                              channel=17)  # 0x3B as in the log
        await emu.start()
        fd = os.open(emu.slave_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        loop = asyncio.get_running_loop()

        async def ask(text, n):
            os.write(fd, text)
            return await loop.run_in_executor(None, _read_lines, fd, n)

        try:
            assert await ask(b"SKSREG SFE 0\r\n", 2) == [b"SKSREG SFE 0", b"OK"]  # echoed
            assert await ask(b"ROPT\r\n", 1) == [b"OK 00"]
            assert await ask(b"WOPT 01\r\n", 1) == [b"OK"]
            assert await ask(b"WOPT 00\r\n", 1) == [b"OK"]
            assert await ask(b"SKSETPWD C " + PASSWORD.encode() + b"\r\n", 1) == [b"OK"]
            assert await ask(b"SKSETRBID " + RBID.encode() + b"\r\n", 1) == [b"OK"]
            got = await ask(b"SKSCAN 2 FFFFFFFF 6\r\n", 10)
            ip_sm = j11.ipv6_text(SM_IP6).upper().encode()
            assert got[:7] == [b"OK", b"EVENT 20 " + ip_sm, b"EPANDESC", b"  Channel:3B",
                               b"  Channel Page:09", b"  Pan ID:1234",
                               b"  Addr:" + SM_MAC.encode()]
            assert got[7] == b"  LQI:%02X" % sk.rssi_to_lqi(emu.rssi)
            assert got[8:] == [b"  PairID:" + RBID[-8:].encode(),
                               b"EVENT 22 " + j11.ipv6_text(emu.own_ip).upper().encode()]
            assert await ask(b"SKLL64 " + SM_MAC.encode() + b"\r\n", 1) == [ip_sm]  # no OK
            assert await ask(b"SKSREG S2 3B\r\n", 1) == [b"OK"]
            assert await ask(b"SKSREG S3 1234\r\n", 1) == [b"OK"]
            got = await ask(b"SKJOIN " + ip_sm + b"\r\n", 8)
            assert got[0] == b"OK"
            assert got[1] == b"EVENT 21 " + ip_sm + b" 02"
            assert got[2] == b"EVENT 02 " + ip_sm
            assert got[3].startswith(b"ERXUDP " + ip_sm + b" ")
            assert b" 02CC 02CC " + SM_MAC.encode() + b" 0 0014 " in got[3]
            assert got[4] == b"EVENT 21 " + ip_sm + b" 00"
            assert got[7] == b"EVENT 25 " + ip_sm
            data = bytes.fromhex("1081000105FF010288016201E700")
            got = await ask(b"SKSENDTO 1 " + ip_sm + b" 0E1A 1 000E " + data, 2)
            assert got == [b"EVENT 21 " + ip_sm + b" 00", b"OK"]
        finally:
            os.close(fd)
            await emu.stop()
    run(main())


# -- family detection -------------------------------------------------------------------------

def test_detect_j11_emulator_unchanged():
    async def main():
        emu = J11Emulator(air_addr=("127.0.0.3", 0), sm_addr=("127.0.0.4", 9))
        await emu.start()
        uart = PtyUart(emu.slave_path)
        try:
            assert await detect_family(uart, 500) == link.FAMILY_J11
        finally:
            uart.close()
            await emu.stop()
    run(main())


@pytest.mark.parametrize("dse", [False, True], ids=["single", "dse"])
def test_detect_skstack_through_garbage(dse):
    async def main():
        async with Rig(dse, uart="serial", emu=dict(faults=dict(split_writes=True))) as r:
            r.emu.inject(b"\xff\x00garbage\r\nOK\r\n\xd0\xf9\xee")
            want = link.FAMILY_SKSTACK_DSE if dse else link.FAMILY_SKSTACK
            assert await detect_family(r.uart, 500) == want
    run(main())


def test_detect_nothing_answers():
    async def main():
        master, slave = os.openpty()
        try:
            uart = PtyUart(os.ttyname(slave))
            assert await detect_family(uart, 200) is None
            uart.close()
        finally:
            os.close(master)
            os.close(slave)
    run(main())


@pytest.mark.parametrize("line", [b"SKJOIN FE80:XYZ", b"SKADDNBR 1234 001D129012345678",
                                  b"SKSENDTO 1 FE80::1::2 0E1A 1 0003 "])
def test_emulator_fails_er06_on_a_bad_ipv6_argument(line):
    emu = SkStackEmulator(air_addr=("127.0.0.3", 0))
    with pytest.raises(Exception) as e:
        asyncio.run(emu._execute(line.rstrip(b" "), b"abc"))
    assert getattr(e.value, "code", None) == "ER06"
    assert not emu.air_out and not emu.neighbours
