"""A J11 module as the smart meter's side, driven from the host (tools/sm_radio.py): a J11
emulator in mode 1 (HAN PAN coordinator) on its pty, opened through SerialUart exactly as a
USB-serial adapter would be, is the coordinator of the terminal's own J11 emulator (its
`coordinator` hook). The real firmware terminal (micropython) joins it with PANA checked against
the coordinator's 0x002C table; the head-end's DLMS client reads the terminal's profile over that
radio and the values are the meter's ground truth; terminals not in the table, or with a wrong
password, fail PANA and the coordinator's host is told. Then the head-end CLI does the same read
with --module (the PAN kept, no reset)."""

import asyncio
import csv
import io
import json
import os
import threading
import time

import pytest
from rich.console import Console

from firmware import log, timeutil
from firmware.radio import j11, link
from firmware.radio.j11_link import J11Link
from firmware.radio.j11_module import J11Module
from tools import headend_cli, loopback_block, sm_radio
from tools.deployment import DLMS_PORT, PANA_PASSWORD, SM_MAC, Deployment, wait_until
from tools.j11_emulator import J11Emulator
from tools.serial_uart import SerialUart

RATE = 900
TERMINAL_MAC = "001D1290000A0001"  # the deployment's module (DEFAULT_OWN_MAC)
OTHER_MAC = "001D1290000A0002"  # in the table; joins with a wrong password below
OTHER_PASSWORD = "OTHERPASS002"
STRANGER_MAC = "001D1290000A0009"  # not in the table
WRONG = "WRONGPASS999"


def sm_config():
    return {"channel": 4, "pan_id": "0x1234", "cmd_timeout_ms": 2000, "reset_timeout_ms": 3000,
            "terminals": [{"mac": TERMINAL_MAC, "password": PANA_PASSWORD},
                          {"mac": OTHER_MAC, "password": OTHER_PASSWORD}]}


@pytest.fixture(scope="module")
def rig():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro, timeout_s=30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    block = loopback_block.reserve()
    net = block.prefix
    lines = []
    log.set_sink(lines.append)
    # the smart meter's module: air on N.4 (where the terminal's module sends), PAN coordinator
    sm_emu = J11Emulator(air_addr=(net + "4", DLMS_PORT), sm_addr=(net + "30", DLMS_PORT),
                         own_mac=SM_MAC, sm_mac=SM_MAC, boot_ms=50, pana_ms=50)
    dep = Deployment(rate=RATE, block=block, module_kw=dict(coordinator=sm_emu, boot_ms=50,
                                                            pana_ms=50))
    r = type("Rig", (), {})()
    r.run, r.net, r.dep, r.sm_emu, r.lines, r.workdir = run, net, dep, sm_emu, lines, dep.workdir
    r.radio = None
    try:
        run(sm_emu.start())
        r.radio = sm_radio.SmartMeterRadio(SerialUart(sm_emu.slave_path),
                                           sm_radio.check_config(sm_config()))
        r.reused = run(r.radio.start(reuse=True))
        run(dep.start(), 120)
        r.joined = run(r.radio.wait_joined(TERMINAL_MAC, 60), 70)
        head = dep.head_end(out=lambda *a: None)
        sm_radio.attach(head.client, r.radio.endpoint(TERMINAL_MAC))
        head.client.timeout_s = 5
        r.head = head
        run(head.connect(timeout_s=60, alive=dep.firmware_alive), 90)
        run(head.sync_clock())
        r.first_b = head.clock_set_at - head.clock_set_at % 1800 + 1800
        time.sleep(dep.sim.wall_seconds_until(r.first_b + 3 * 1800 + 300))
        yield r
    finally:
        log.set_sink(None)
        if r.radio is not None:
            r.radio.close()
        try:
            run(dep.stop(), 30)
            run(sm_emu.stop())
        finally:
            block.release()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def _truth(dep, first_b, n):
    s0 = timeutil.slot_of_t2k(first_b)
    return [(s,) + dep.model.served_at_slot(s) for s in range(s0, s0 + n)]


@pytest.mark.timeout(150)
def test_terminal_joins_the_module_and_is_read_over_the_radio(rig):
    assert rig.reused is False  # a fresh module: reset and the whole coordinator sequence
    sent = [c for c, _ in rig.sm_emu.requests]
    assert sent[:6] == [0x0107, j11.CMD_RESET, j11.CMD_VERSION, j11.CMD_INIT, j11.CMD_HAN_START,
                        sm_radio.CMD_HAN_ACCEPT], [hex(c) for c in sent]
    init = [d for c, d in rig.sm_emu.requests if c == j11.CMD_INIT][0]
    assert init[0] == 1 and init[2] == 4  # mode 1, channel 4
    assert [d[:8].hex().upper() for c, d in rig.sm_emu.requests
            if c == j11.CMD_HAN_PANA_SET] == [TERMINAL_MAC, OTHER_MAC]
    assert rig.sm_emu.coord_pan == 0x1234 and DLMS_PORT in rig.sm_emu.open_ports
    # the coordinator's host heard the terminal's PANA and its connection
    assert rig.joined == 1
    assert (TERMINAL_MAC, 1) in rig.radio.joins and TERMINAL_MAC in rig.radio.connected
    assert rig.dep.module.authenticated and rig.sm_emu.stats["coord_pana_1"] >= 1
    rows = rig.run(rig.head.client.get_profile(rig.first_b, rig.first_b + 2 * 1800), 60)
    assert [(timeutil.slot_of_t2k(t), f, r) for t, f, r, _s in rows] == _truth(rig.dep,
                                                                              rig.first_b, 3)
    # every datagram crossed the two modules' air sockets, none through a side channel
    assert rig.radio.stats["rx"] >= 3 and rig.radio.stats["tx"] >= 3
    assert rig.sm_emu.stats["tx"] == rig.radio.stats["tx"]
    assert rig.dep.module.stats["rx"] >= rig.radio.stats["tx"] - 1
    assert rig.radio.stats["rx_unknown"] == 0
    text = "\n".join(rig.lines)
    assert PANA_PASSWORD not in text and OTHER_PASSWORD not in text


async def _terminal_join(rig, mac, password, host):
    """A terminal-side module (J11 emulator, end device) driven by the firmware's own J11 driver
    over its pty, joining the coordinator module with `password`."""
    emu = J11Emulator(air_addr=(rig.net + str(host), DLMS_PORT),
                      sm_addr=(rig.net + "4", DLMS_PORT), own_mac=mac, sm_mac=SM_MAC,
                      coordinator=rig.sm_emu, boot_ms=20, pana_ms=20)
    await emu.start()
    uart = SerialUart(emu.slave_path)
    drv = J11Link(J11Module(uart, cmd_timeout_ms=2000), reset_timeout_ms=3000,
                  pana_timeout_ms=5000)
    try:
        drv.start()
        await drv.reset()
        return await drv.join(4, 0x1234, SM_MAC, {"id": None, "password": password}), emu
    finally:
        drv.stop()
        uart.close()
        await emu.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mac,password,host", [
    (STRANGER_MAC, PANA_PASSWORD, 23),  # a MAC the table does not hold (with a good password)
    (OTHER_MAC, WRONG, 24),  # a MAC the table holds, with the wrong password
])
def test_terminal_not_in_the_table_or_wrong_password_fails_pana_and_is_reported(
        rig, mac, password, host):
    seen = len(rig.radio.joins)
    result, emu = rig.run(_terminal_join(rig, mac, password, host), 30)
    assert result == link.JOIN_BAD_CREDENTIALS
    assert not emu.authenticated and emu.stats["pana_2"] == 1
    assert wait_until(lambda: (mac, 2) in rig.radio.joins[seen:], 5), rig.radio.joins
    assert mac not in rig.radio.connected
    assert rig.run(rig.radio.wait_joined(mac, 0.1)) == 2
    text = "\n".join(rig.lines)
    assert "terminal %s failed PANA: result 2" % mac in text
    assert password not in text and OTHER_PASSWORD not in text
    # the coordinator relays nothing to or from it: no peer entry was made
    assert j11.link_local_of_mac(j11.mac_bytes(mac)) not in rig.sm_emu.peers


@pytest.mark.timeout(150)
def test_cli_reads_the_terminal_through_the_module_and_keeps_the_pan(rig, tmp_path):
    rig.radio.close()  # the CLI opens the module's port itself now (one owner of the UART)
    rig.radio = None
    cfg_path = tmp_path / "sm.json"
    cfg_path.write_text(json.dumps(sm_config()))
    last_b = rig.first_b + 3 * 1800
    csv_path = tmp_path / "t.csv"
    out = io.StringIO()
    resets = rig.sm_emu.stats["requests"], sum(
        1 for c, _ in rig.sm_emu.requests if c == j11.CMD_RESET)
    argv = ["--module", rig.sm_emu.slave_path, "--sm-config", str(cfg_path),
            "--terminal-mac", TERMINAL_MAC.lower(),
            "--from", timeutil.iso(rig.first_b, 540)[:19], "--to", timeutil.iso(last_b, 540)[:19],
            "--csv", str(csv_path), "--gaps", "--table-rows", "-1",
            "--ic-file", os.path.join(rig.workdir, "headend.ic")]
    rc = headend_cli.main(argv, console=Console(file=out, width=120))
    text = out.getvalue()
    assert rc == 0, text
    assert "PAN kept" in text and "gaps: 0 slots missing in 0 ranges" in text
    # no reset: the terminal stayed joined
    assert sum(1 for c, _ in rig.sm_emu.requests if c == j11.CMD_RESET) == resets[1]
    assert rig.dep.module.authenticated
    with open(csv_path) as f:
        got = list(csv.DictReader(f))
    assert [(int(r["slot"]), int(r["fwd_wh"]), int(r["rev_wh"])) for r in got] == _truth(
        rig.dep, rig.first_b, 4)
    assert PANA_PASSWORD not in text


def test_cli_refuses_a_terminal_the_config_does_not_list(tmp_path):
    cfg_path = tmp_path / "sm.json"
    cfg_path.write_text(json.dumps(sm_config()))
    out = io.StringIO()
    rc = headend_cli.main(["--module", "/nonexistent/tty", "--sm-config", str(cfg_path),
                           "--terminal-mac", STRANGER_MAC], console=Console(file=out, width=200))
    assert rc == 2 and "not in the smart-meter radio configuration" in out.getvalue()
