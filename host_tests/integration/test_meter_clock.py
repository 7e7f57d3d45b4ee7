"""The optional meter-clock set and NTP source (docs/clock.md section 6) over real loopback UDP:
the firmware's MeterClient and MeterClockKeeper against tools/meter_emulator.py, and the host
HAL's NTP query against a fake SNTP server. Every party on a reserved loopback /24
(tools/loopback_block.py): terminal .1, meter .2, SNTP server .3; no other network."""

import asyncio
import struct

import pytest

from firmware import events, timeutil
from firmware.app import config as cfgmod
from firmware.app.meterclock import SET, UNSETTABLE, MeterClockKeeper
from firmware.app.ntp import NtpSource
from firmware.app.terminal import Terminal
from firmware.hal import clock as clockmod
from firmware.hal import sntp
from firmware.hal.clock import CalendarClock
from firmware.hal.host import Hal
from firmware.hal.sntp import SntpError
from firmware.hal.udp import UdpEndpoint
from firmware.meter.client import MeterClient
from firmware.meter.node import NodeResponder
from tools import loopback_block
from tools.meter_emulator import SETC, MeterEmulator
from tools.meter_model import MeterModel

JST = 540
# 2026-12-01 14:12:00 JST: in the quiet part of a slot
T = timeutil.t2k_from_fields(2026, 12, 1, 5, 12, 0)
NTP_T2K = 3155673600


@pytest.fixture
def block():
    r = loopback_block.reserve()
    yield r.prefix
    r.release()


class Poller:
    unit_code = 0x02


class Channel:
    def __init__(self, client):
        self.client = client
        self.index = 0
        self.poller = Poller()


class Box:
    """The clock listener of a Terminal, with the keeper it wakes."""

    _on_clock_set = Terminal._on_clock_set


def run_keeper(prefix, faults, scenario):
    async def main():
        true = CalendarClock()  # true time: the emulator's clock before its offset
        true.set_t2k(T)
        emu = MeterEmulator(addr=(prefix + "2", 0), clock=true, model=MeterModel(seed=3),
                            tz_offset_min=JST, faults=faults)
        await emu.start()
        ep = UdpEndpoint(prefix + "1", 0, reuse=False)
        c = MeterClient(ep, emu.addr, {"timeout_ms": 300, "retries": 2, "tz_offset_min": JST},
                        NodeResponder())
        rx = asyncio.create_task(c.run())
        term = CalendarClock()  # the terminal's clock, not yet set
        cfg = dict(cfgmod.DEFAULTS["clock"])
        got = []
        keeper = MeterClockKeeper(term, [Channel(c)], cfg, JST,
                                  lambda code, detail=0: got.append((code, detail)))
        box = Box()
        box.cfg = {"meter": {"tz_offset_min": JST}, "clock": cfg}
        box.clock = term
        box.channels = ()
        box.meter_clock = keeper
        box.event = lambda code, detail=0: got.append((code, detail))
        term.add_listener(box._on_clock_set)
        task = asyncio.create_task(keeper.run())
        try:
            await asyncio.wait_for(c.read_unit(), 10)
            return await asyncio.wait_for(scenario(emu, true, term, keeper, got), 20)
        finally:
            for t in (task, rx):
                t.cancel()
            await asyncio.gather(task, rx, return_exceptions=True)
            ep.close()
            await emu.stop()

    return asyncio.run(main())


async def settle(keeper, emu, n=0):
    """Until the keeper has checked n+1 times (or errored)."""
    for _ in range(200):
        await asyncio.sleep(0.02)
        if keeper.stats["checks"] + keeper.stats["errors"] > n:
            return
    raise AssertionError("the keeper never checked the meter")


def clock_setcs(emu):
    return [r for r in emu.requests if r.esv == SETC and 0xDA in r.epcs]


def test_meter_clock_corrected_after_a_smart_meter_set_not_after_ntp(block, lines):
    async def s(emu, true, term, keeper, got):
        # NTP sets the terminal's clock: the meter's clock is not touched
        term.set_t2k(true.now_t2k(), clockmod.SOURCE_NTP)
        await asyncio.sleep(0.3)
        assert keeper.stats["checks"] == 0
        assert not any(0x9E in r.epcs for r in emu.requests)
        # the smart meter sets it: the meter (off by +400 s, 0xDB "failed") is set
        term.set_t2k(true.now_t2k())
        await settle(keeper, emu)
        assert keeper.state[0] == SET
        assert emu.stats["clock_sets"] == 1
        assert len(clock_setcs(emu)) == 1
        assert abs(emu.faults["clock_offset_s"]) <= 1
        assert emu.faults["sync_status"] == 0x01
        assert keeper.sync[0] == 0x01 and abs(keeper.offset[0]) <= 1
        sets = [d for code, d in got if code == events.METER_CLOCK_SET]
        assert len(sets) == 1 and 399 <= sets[0] <= 401
        assert (events.CLOCK_NTP, -2147483648) in got
        assert any("0xDB = 0x02" in ln for ln in lines)  # its failed sync was reported
        # another smart-meter set soon after: not even read again (clock.set_meter_min_s)
        emu.faults["clock_offset_s"] = 200
        n = len(emu.requests)
        term.set_t2k(true.now_t2k())
        await asyncio.sleep(0.3)
        assert len(emu.requests) == n and keeper.stats["checks"] == 1

    run_keeper(block, {"clock_offset_s": 400, "sync_status": 0x02,
                       "clock_set_epcs": {0x98, 0xDA}}, s)


def test_meter_without_settable_clock_left_alone_and_reported(block, lines):
    async def s(emu, true, term, keeper, got):
        term.set_t2k(true.now_t2k())
        await settle(keeper, emu)
        assert keeper.state[0] == UNSETTABLE
        assert keeper.offset[0] == 600
        assert emu.stats["clock_sets"] == 0 and clock_setcs(emu) == []
        assert emu.faults["clock_offset_s"] == 600
        assert not [c for c, _ in got if c == events.METER_CLOCK_SET]
        assert any("+600 s off" in ln and "left alone" in ln for ln in lines)

    run_keeper(block, {"clock_offset_s": 600}, s)


class FakeSntp(asyncio.DatagramProtocol):
    """An SNTP server answering every request with `t2k` (or a crafted reply)."""

    def __init__(self, t2k, how="good"):
        self.t2k = t2k
        self.how = how
        self.seen = 0

    def connection_made(self, transport):
        self.tr = transport

    def datagram_received(self, data, addr):
        self.seen += 1
        if self.how == "silent":
            return
        secs = self.t2k + NTP_T2K
        b = bytearray(48)
        b[0] = (0 << 6) | (4 << 3) | 4
        b[1] = 0 if self.how == "kod" else 2
        b[24:32] = data[40:48] if self.how != "foreign" else bytes(8)
        struct.pack_into(">IIII", b, 32, secs, 0, secs, 0x40000000)  # .25 s
        self.tr.sendto(bytes(b), addr)


def ntp_run(prefix, how, scenario):
    async def main():
        srv = FakeSntp(T + 777, how)
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: srv, local_addr=(prefix + "3", 0))
        port = tr.get_extra_info("sockname")[1]
        cfg = cfgmod.merge({"lan": {"bind_ip": prefix + "1"},
                            "clock": {"ntp": True, "ntp_server": prefix + "3",
                                      "ntp_port": port, "ntp_timeout_ms": 300}})
        hal = Hal({}, cfg)
        try:
            return await scenario(hal, cfg, port, srv)
        finally:
            tr.close()

    return asyncio.run(main())


def test_ntp_over_loopback_sets_an_unset_clock(block):
    async def s(hal, cfg, port, srv):
        t = await sntp.ntp_query(hal.lan_ip(), block + "3", port, 300, b"12345678")
        assert t == T + 777
        src = NtpSource(hal, hal.clock, cfg["clock"])
        assert await src.poll_once()
        assert hal.clock.now_t2k() == T + 777 and hal.clock.last_source == clockmod.SOURCE_NTP
        assert srv.seen == 2
        hal.clock.set_t2k(T)  # the smart meter: NTP holds off
        assert not await src.poll_once()
        assert srv.seen == 2 and hal.clock.now_t2k() == T

    ntp_run(block, "good", s)


@pytest.mark.parametrize("how, exc", [("kod", SntpError), ("foreign", SntpError),
                                      ("silent", OSError)])
def test_ntp_bad_or_no_reply_sets_nothing(block, how, exc):
    async def s(hal, cfg, port, srv):
        with pytest.raises(exc):
            await sntp.ntp_query(hal.lan_ip(), block + "3", port, 300, b"12345678")
        src = NtpSource(hal, hal.clock, cfg["clock"])
        assert not await src.poll_once()
        assert not hal.clock.is_set() and srv.seen == 2

    ntp_run(block, how, s)


# -- the terminal's wiring -----------------------------------------------------------------------

H = bytes.fromhex
AARQ_LLS = H("6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
             "BE10040E01000000065F1F0400007E1F04B0")  # client 1, password 12345678


class FakeHal:
    def __init__(self):
        from firmware.hal import aes
        from firmware.hal.norflash import NorFlash

        self.aes_ecb = aes.ecb
        self.clock = CalendarClock()
        self._flash = NorFlash(4, block_size=256)

    def flash_region(self):
        return 0, 4

    def blockdev(self):
        return self._flash

    def radio_uart(self):
        return None


def build_terminal(tmp_path, clock_cfg):
    from firmware.app.meters import meter_configs

    cfg = cfgmod.merge({"store": {"state_path": str(tmp_path / "state.json")},
                        "events": {"burst": 0},
                        "dlms": {"mgmt_mechanism": "lls", "mgmt_password": "12345678"},
                        "meter": {"ip": "127.0.0.1"}, "clock": clock_cfg})
    t = Terminal(FakeHal(), cfg)
    t.meter_cfgs = meter_configs(cfg["meter"])
    t._build_radio()
    t._build_meter()
    return t


def test_terminal_wakes_the_keeper_on_smart_meter_sets_only(tmp_path, lines):
    from firmware.cosem import axdr

    t = build_terminal(tmp_path, {"set_meter": True})
    keeper = t.meter_clock
    assert isinstance(keeper, MeterClockKeeper) and keeper.channels == t.channels
    t.clock.set_t2k(T, clockmod.SOURCE_NTP)
    assert not keeper._due.is_set()
    assert any("clock: set by NTP" in ln for ln in lines)
    # the management client sets the clock over COSEM: the keeper wakes
    assert t.server.handle_apdu(AARQ_LLS, 1)[0] == 0x61
    set_req = (H("c101c100080000010000ff0200") + b"\x09\x0c"
               + axdr.datetime_bytes(T + 3600, -540, 540))
    assert t.server.handle_apdu(set_req, 1) == H("c501c100")
    assert keeper._due.is_set()


def test_off_by_default_nothing_imported(tmp_path):
    """With the defaults a whole terminal is built without importing either option's module."""
    import subprocess
    import sys

    code = """
import sys
sys.path.insert(0, ".")
from firmware.app import config as cfgmod
from firmware.app.meters import meter_configs
from firmware.app.terminal import Terminal
from firmware.hal import aes
from firmware.hal.clock import CalendarClock
from firmware.hal.norflash import NorFlash

class Hal:
    aes_ecb = staticmethod(aes.ecb)
    clock = CalendarClock()
    flash = NorFlash(4, block_size=256)
    def flash_region(self): return 0, 4
    def blockdev(self): return self.flash
    def radio_uart(self): return None

cfg = cfgmod.merge({"store": {"state_path": %r}, "meter": {"ip": "127.0.0.1"}})
t = Terminal(Hal(), cfg)
t.meter_cfgs = meter_configs(cfg["meter"])
t._build_radio()
t._build_meter()
t.clock.set_t2k(800000000)
print(t.meter_clock, sorted(m for m in sys.modules if m.split(".")[-1] in
      ("meterclock", "clockprops", "ntp", "sntp")))
""" % str(tmp_path / "state.json")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "None []", out.stdout + out.stderr


def test_sntp_query_under_micropython(block):
    """The same socket code on the real MicroPython unix port (its recvfrom gives a raw
    sockaddr, its timeout class differs): a good reply, then a silent server."""
    import os
    import socket
    import subprocess
    import sys
    import threading

    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((block + "3", 0))
    srv.settimeout(10)
    port = srv.getsockname()[1]

    def serve():
        data, addr = srv.recvfrom(512)  # answers the first request only
        b = bytearray(48)
        b[0] = (4 << 3) | 4
        b[1] = 1
        b[24:32] = data[40:48]
        struct.pack_into(">II", b, 40, T + 5 + NTP_T2K, 0)
        srv.sendto(bytes(b), addr)

    th = threading.Thread(target=serve)
    th.start()
    script = """
import asyncio
from firmware.hal import sntp
async def main():
    print("t2k", await sntp.ntp_query(%r, %r, %d, 2000, b"abcdefgh"))
    try:
        await sntp.ntp_query(%r, %r, %d, 300, b"abcdefgh")
    except Exception as e:
        print("silent", type(e).__name__)
asyncio.run(main())
""" % (block + "1", block + "3", port, block + "1", block + "3", port)
    try:
        out = subprocess.run([mp, "-X", "heapsize=256k", "-c", script], capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, MICROPYPATH=".:.frozen"))
    finally:
        th.join(15)
        srv.close()
    assert out.stdout.split() == ["t2k", str(T + 5), "silent", "TimeoutError"], \
        out.stdout + out.stderr
