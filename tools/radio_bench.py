"""Radio figures of issue 10 for `make bench`: simulated seconds from a link loss to READY.

The firmware's own J11 driver and session (firmware/radio: J11Link over J11Module, RadioSession
with the shipped radio defaults: scan duration 6 growing to 9, back-off from 2 s) run on CPython
over the J11 emulator's pty (tools/serial_uart.SerialUart, as with a real module). The emulator
runs at time_scale 1.0: its modelled delays (reset 3 s, a PANA exchange 3 s, a scan dwell of
9.64 ms x 2^d per channel) take real time, so wall seconds here are the simulated seconds.

wisun.rejoin_s_cached   READY -> 0x601A PANA disconnected -> READY again: the session rejoins from
                        its cache (channel, PAN ID, coordinator MAC) without a scan
wisun.rejoin_s_scan     READY -> link loss while the smart meter moves to another channel: the
                        cached join gets no PANA answer, the session rescans and joins
(both the median of `runs`; wisun.rejoin_scans_* = active scans the rejoin needed)

  python -m tools.radio_bench [runs]
"""

import asyncio
import json
import socket
import sys
import time

from firmware import log
from firmware.radio import j11_link
from firmware.radio.j11_module import J11Module
from firmware.radio.session import RadioSession
from tools.j11_emulator import J11Emulator
from tools.serial_uart import SerialUart

SM_MAC = "001D129012345678"
PASSWORD = "0123456789AB"


async def _until(cond, timeout_s):
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("radio bench: timed out")
        await asyncio.sleep(0.01)


async def _one(host):
    lines = []
    log.set_sink(lines.append)
    sm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sm.bind((host, 0))
    emu = J11Emulator(air_addr=(host, 0), sm_addr=sm.getsockname(), sm_mac=SM_MAC,
                      pana_password=PASSWORD, app_port=4059, time_scale=1.0, channel=9)
    await emu.start()
    uart = SerialUart(emu.slave_path)
    module = J11Module(uart)
    cfg = {"pana_password": PASSWORD, "pan_id": emu.pan_id}
    session = RadioSession(j11_link.build(module, cfg), cfg)
    task = asyncio.create_task(session.run())
    out = {}
    try:
        await _until(session.is_ready, 120)
        scans = session.stats["scans"]
        t0 = time.monotonic()
        emu.disconnect(4)
        await _until(lambda: not session.is_ready(), 10)
        await _until(session.is_ready, 120)
        out["cached"] = time.monotonic() - t0
        out["cached_scans"] = session.stats["scans"] - scans
        scans = session.stats["scans"]
        t0 = time.monotonic()
        emu.sm_channel = 12  # the smart meter restarted on another channel
        emu.disconnect(3)
        await _until(lambda: not session.is_ready(), 10)
        await _until(session.is_ready, 240)
        out["scan"] = time.monotonic() - t0
        out["scan_scans"] = session.stats["scans"] - scans
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        module.stop()
        await asyncio.sleep(0)
        uart.close()
        await emu.stop()
        sm.close()
        log.set_sink(None)
    assert not any(PASSWORD in line for line in lines)
    return out


def measure(runs=3, host="127.0.0.3"):
    got = [asyncio.run(_one(host)) for _ in range(runs)]

    def med(k):
        v = sorted(g[k] for g in got)
        return v[len(v) // 2]

    return {
        "wisun.rejoin_s_cached": round(med("cached"), 2),
        "wisun.rejoin_s_scan": round(med("scan"), 2),
        "wisun.rejoin_scans_cached": med("cached_scans"),
        "wisun.rejoin_scans_scan": med("scan_scans"),
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=2))
