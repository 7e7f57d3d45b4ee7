"""The ESP32 HAL itself (firmware/hal/esp32.py) in the twin: the firmware runs under the real
`micropython` binary against the stand-in machine / network / esp32 modules of tools/esp32sim
(boards/esp32-sim.json), started as the esp32 port starts it (boot.py arms the watchdog, then
main.py), inside a tools.deployment.Deployment: meter emulator, J11 module emulator on the
stand-in UART, head-end.

One simulated day with a Wi-Fi drop and a stalled firmware (SIGSTOP longer than the watchdog):
the watchdog stand-in's host side kills and restarts it like a reset, the gap is backfilled from
the meter's history, and every 30-minute value the head-end reads equals the meter's."""

import asyncio
import json
import os
import signal
import subprocess
import textwrap
import time

from firmware import timeutil
from tools.deployment import (
    HEAP_MARGIN_KB,
    MIN_HEAP_KB,
    Deployment,
    build_host_mpy,
    find_micropython,
    wait_until,
)
from tools.esp32sim import host as esp32sim

# The bench's minimum plus its margin and the management keys' cost (tools/deployment.py), plus
# what the stand-in modules cost: they are imported from source (tools/esp32sim/*.py), so the
# compiler runs on the heap. Issue 11 raised it from 24: the network stand-in gained the setup
# access point and scan details, and the ESP32 HAL its setup-mode and wipe methods (bytecode in
# RAM from .mpy here, frozen on the device); 472 KB no longer held the day (MemoryError).
STAND_INS_KB = 40
HEAP = "%dk" % (MIN_HEAP_KB[1] + HEAP_MARGIN_KB + STAND_INS_KB)
RATE = 1800  # 30 simulated minutes per real second: one day in 48 s
SLOT = timeutil.SLOT_S
DROP_AFTER_SLOTS = 4  # boundaries after the first read
DROP_S = 6.0  # real seconds of Wi-Fi outage (3 simulated hours)
STALL_AFTER_SLOTS = 32  # the Wi-Fi is back by then (the LAN supervisor backs off up to 16 s)
STALL_EXTRA_S = 2.0  # stopped this long beyond the watchdog timeout
JST = 540


async def _await_log(dep, text, since, timeout_s):
    t = time.monotonic() + timeout_s
    while time.monotonic() < t:
        if text in dep.terminal_log()[since:]:
            return True
        await asyncio.sleep(0.1)
    return False


def _deployment():
    dep = Deployment(rate=RATE, heap=HEAP, board="esp32-sim")
    # our own .mpy build: the shared build/host-mpy may be rebuilt by another run meanwhile
    dep.mpy_dir = build_host_mpy(os.path.join(dep.workdir, "mpy"))
    return dep


def _watchdog_ms():
    with open(os.path.join(esp32sim.ROOT, "boards", "esp32-sim.json")) as f:
        return json.load(f)["watchdog_ms"]


# -- the stand-ins behave as the v1.28 esp32 port ------------------------------------------------

_STANDIN_CHECK = textwrap.dedent("""
    import asyncio, esp32, machine, network, time
    P = esp32.Partition
    p = P.find(P.TYPE_DATA, label="meterlog")[0]
    assert P.find(P.TYPE_DATA, label="nope") == []
    assert p.ioctl(4, 0) == 128 and p.ioctl(5, 0) == 4096, (p.ioctl(4, 0), p.ioctl(5, 0))
    p.writeblocks(3, b"\\x0f" * 4096)               # no offset: erase, then write
    p.writeblocks(3, b"\\xf3\\xff", 10)             # offset: program only (AND)
    b = bytearray(4)
    p.readblocks(3, b, 9)
    assert b == b"\\x0f\\x03\\x0f\\x0f", b
    p.ioctl(6, 3)
    p.readblocks(3, b, 9)
    assert b == b"\\xff" * 4, b
    try:
        p.readblocks(128, b)
        raise AssertionError("read past the partition")
    except OSError:
        pass
    w = network.WLAN(network.WLAN.IF_STA)
    try:
        w.scan()
        raise AssertionError("scan with the STA inactive")
    except OSError:
        pass
    w.active(True)
    names = [ap[0] for ap in w.scan()]
    assert b"\\x83e\\x83X\\x83g" in names and b"terminal-site" in names, names
    assert w.status() == network.STAT_IDLE and not w.isconnected()
    w.connect("terminal-site", "sim-wpa2-passphrase", bssid=bytes.fromhex("02005e000002"))
    assert w.status() == network.STAT_CONNECTING
    time.sleep_ms(400)
    assert w.status() == network.STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD  # WPA-only AP
    w.disconnect()
    assert w.status() == network.STAT_IDLE
    w.connect(b"terminal-site", "wrong-passphrase", bssid=bytes.fromhex("02005e000001"))
    time.sleep_ms(400)
    assert w.status() == network.STAT_WRONG_PASSWORD
    w.connect("terminal-site", "sim-wpa2-passphrase", bssid=bytes.fromhex("02005e000001"))
    assert w.scan() == []  # no scan while connecting
    time.sleep_ms(400)
    assert w.isconnected() and w.status() == network.STAT_GOT_IP
    assert w.ifconfig()[0] == "127.0.0.1" and w.ipconfig("addr4")[0] == "127.0.0.1"
    open(DIR + "/wifi_down", "w").close()
    assert not w.isconnected() and w.status() == network.STAT_CONNECTING
    time.sleep_ms(1100)
    assert w.status() == network.STAT_NO_AP_FOUND
    import os
    os.remove(DIR + "/wifi_down")
    time.sleep_ms(1100)
    assert w.isconnected()
    rtc = machine.RTC()
    assert rtc.memory() == b"" and machine.reset_cause() == machine.PWRON_RESET
    assert rtc.datetime()[0] == 2000
    rtc.datetime((2025, 4, 1, 1, 3, 30, 15, 0))
    y, mo, d, wd, h, mi, s, us = rtc.datetime()
    assert (y, mo, d, wd, h) == (2025, 4, 1, 1, 3) and mi in (30, 31), rtc.datetime()
    machine.WDT(timeout=1234).feed()
    assert open(DIR + "/wdt").read().split()[0] == "1234"
    u = machine.UART(2, baudrate=115200, tx=17, rx=16, rxbuf=2048, timeout=0)
    assert u.read() is None
    u.write(b"ping")
    async def main():
        r = asyncio.StreamReader(u)
        buf = bytearray(16)
        n = await r.readinto(buf)
        assert bytes(buf[:n]) == b"pong", buf[:n]
    asyncio.run(main())
    print("STAND-INS OK")
""")


def test_stand_ins_behave_as_the_esp32_port(tmp_path):
    master, slave = os.openpty()
    d = str(tmp_path)

    class _Dep:  # what default_sim reads from a Deployment
        rate = 1
        terminal_ip = "127.0.0.1"
        workdir = d

        class module:
            slave_path = os.ttyname(slave)

    sim = esp32sim.default_sim(_Dep)
    sim["flash"]["image"] = os.path.join(d, "flash.bin")
    sim["wifi"]["scan_ms"] = 10
    with open(sim["flash"]["image"], "wb") as f:
        f.write(b"\xff" * esp32sim.FLASH_BYTES)
    with open(os.path.join(d, "sim.json"), "w") as f:
        json.dump(sim, f)
    script = os.path.join(d, "check.py")
    with open(script, "w") as f:
        f.write("DIR = %r\n" % d + _STANDIN_CHECK)
    env = dict(os.environ, ESP32SIM=d, MICROPYPATH="%s:.frozen" % esp32sim.HERE)
    proc = subprocess.Popen([find_micropython(), script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        got = b""
        t = time.monotonic() + 20
        while b"ping" not in got and time.monotonic() < t:  # the UART's far end
            os.set_blocking(master, False)
            try:
                got += os.read(master, 64)
            except BlockingIOError:
                time.sleep(0.05)
        assert got == b"ping"
        os.write(master, b"pong")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)
    assert b"STAND-INS OK" in out, out.decode(errors="replace")


# -- a stock partition table: a clear line, metering not started, and no reset loop -----------

def test_missing_meterlog_partition_is_reported_without_a_reset_loop():
    dep = _deployment()
    stock = os.path.join(dep.workdir, "stock-partitions.csv")
    with open(stock, "w") as f:  # MicroPython's standard 4 MiB table: no meterlog
        f.write("nvs, data, nvs, 0x9000, 0x6000,\nphy_init, data, phy, 0xf000, 0x1000,\n"
                "factory, app, factory, 0x10000, 0x1F0000,\nvfs, data, fat, 0x200000, 0x200000,\n")
    dep.esp32sim = {"flash": {"image": os.path.join(esp32sim.sim_dir(dep), "flash.bin"),
                              "table": stock}}
    mon = None
    try:
        dep.start_firmware()  # no emulators needed: the firmware stops before them
        mon = esp32sim.WatchdogMonitor(dep).start()
        assert wait_until(lambda: "no data partition labelled 'meterlog'" in dep.terminal_log(),
                         20), dep.terminal_log()
        time.sleep(_watchdog_ms() / 1000 + 2)
        log = dep.terminal_log()
        assert mon.resets == [], log
        assert dep.firmware_alive(), log
        assert "metering not started" in log
        assert log.count("reset cause") == 1
    finally:
        if mon:
            mon.stop()
        dep.stop_firmware()


# -- one simulated day through the ESP32 HAL ---------------------------------------------------

async def _day(dep, mon, result):
    head = dep.head_end(out=lambda *a: None)
    model, sim = dep.model, dep.sim
    try:
        await head.connect(timeout_s=60, alive=dep.firmware_alive)
        await head.sync_clock()
        first_b = head.clock_set_at - head.clock_set_at % SLOT + SLOT
        last_b = first_b + timeutil.DAY_S - SLOT
        b, k = first_b, 0
        while b <= last_b:
            await asyncio.sleep(sim.wall_seconds_until(b + 300))
            if k == DROP_AFTER_SLOTS:
                result["drop_at"] = len(dep.terminal_log())
                esp32sim.set_wifi(dep, False)  # every access point out of range ...
                dep.meter.faults["drop_prob"] = 1.0  # ... and with them the meter
                await asyncio.sleep(DROP_S)
                dep.meter.faults["drop_prob"] = 0.0
                esp32sim.set_wifi(dep, True)
            if k == STALL_AFTER_SLOTS:
                since = len(dep.terminal_log())
                os.kill(dep.proc.pid, signal.SIGSTOP)  # the whole interpreter stalls
                t0 = time.monotonic()
                while not mon.resets and time.monotonic() - t0 < _watchdog_ms() / 1000 + 10:
                    await asyncio.sleep(0.1)
                result["stall_to_reset_s"] = time.monotonic() - t0
                assert mon.resets, "the watchdog did not fire"
                assert await _await_log(dep, "ready: UDP port", since, 40), dep.terminal_log()
                await head.client.associate()  # the terminal's association died with it
                await head.sync_clock()  # and its clock: RTC memory does not survive a reset
            try:
                await head.maybe_resync()
                await head.poll(b - 4 * SLOT, b, quiet=True)
            except Exception:  # a lost exchange is retried with the next slot's window
                result["read_errors"] += 1
            b += SLOT
            k += 1
        # the final audit: every slot of the day against the meter's ground truth
        await asyncio.sleep(sim.wall_seconds_until(last_b + 600))
        for attempt in range(3):
            try:
                head.received.clear()
                await head.poll(first_b, last_b, quiet=True)
                break
            except Exception:
                if attempt == 2:
                    raise
        for bb in range(first_b, last_b + 1, SLOT):
            slot = timeutil.slot_of_t2k(bb)
            result["expected"] += 1
            got = head.received.get(slot)
            if got is None:
                result["missing"].append(timeutil.iso(bb, JST))
            elif (got[0], got[1]) != model.served_at_slot(slot):
                result["mismatched"].append((timeutil.iso(bb, JST), got[:2],
                                             model.served_at_slot(slot)))
        await head.client.release()
    finally:
        head.close()


def test_one_day_through_the_esp32_hal_with_wifi_drop_and_watchdog_reset():
    t_start = time.monotonic()
    dep = _deployment()
    result = {"expected": 0, "missing": [], "mismatched": [], "read_errors": 0}
    mon = None

    async def run():
        nonlocal mon
        await dep.start()
        mon = esp32sim.WatchdogMonitor(dep).start()
        try:
            await _day(dep, mon, result)
        finally:
            mon.stop()
            await dep.stop()

    asyncio.run(run())
    wall = time.monotonic() - t_start
    log = dep.terminal_log()
    print("e2e esp32 HAL: %.0f s wall, %d read errors, reset %.1f s after the stall"
          % (wall, result["read_errors"], result.get("stall_to_reset_s", -1)))
    assert result["expected"] == 48
    assert result["missing"] == [], (result["missing"], log[-5000:])
    assert result["mismatched"] == []
    # Wi-Fi: joined through the ESP32 HAL's policy (the stronger WPA-only AP with our SSID was
    # refused, the Shift-JIS neighbour did no harm), dropped and reconnected
    assert "reset cause PWRON_RESET" in log
    assert "AP 02:00:5e:00:00:02 refused: SEC_WPA is below WPA2" in log
    assert "joining 02:00:5e:00:00:01 (SEC_WPA2" in log
    after_drop = log[result["drop_at"]:]
    assert "link down" in after_drop and "link up (2)" in after_drop, after_drop[:3000]
    # the stall: exactly one watchdog reset, and the firmware came back from it
    assert [c for c, _ in mon.resets] == ["WDT"], mon.resets
    assert "esp32sim: watchdog reset: not fed for" in log
    assert "reset cause WDT_RESET" in log
    assert "boot 2" in log
    assert "filled" in log.split("reset cause WDT_RESET")[1]  # the gap came from the history
    assert "made no progress" not in log  # no task stalled on its own
    assert "crashed" not in log
    assert wall < 120
