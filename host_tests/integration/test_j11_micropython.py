"""The radio driver and session running under the MicroPython unix port (through the host HAL's
pty UART) against the J11 module emulator: join, then echo one datagram to a loopback peer."""

import asyncio
import json
import socket

import pytest
from radio_rig import MP, spawn_micropython

from tools.j11_emulator import J11Emulator

SCRIPT = """
import asyncio
from firmware.hal.host import PtyUart
from firmware.radio import j11_link
from firmware.radio.j11_module import J11Module
from firmware.radio.session import RadioSession

CFG = %s

async def main():
    s = RadioSession(j11_link.build(J11Module(PtyUart(CFG["uart"])), CFG), CFG)
    task = asyncio.create_task(s.run())
    while not s.is_ready():
        await asyncio.sleep_ms(10)
    print("READY", s.stats["joins"])
    src, sport, dport, payload = await s.recv()
    s.note_app_activity()
    print("SENT", await s.send(src, sport, b"echo:" + payload), dport)
    task.cancel()

asyncio.run(main())
"""


@pytest.mark.skipif(MP is None, reason="micropython binary not installed")
def test_session_under_micropython(tmp_path):
    async def body():
        sm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sm.bind(("127.0.0.4", 0))
        sm.setblocking(False)
        emu = J11Emulator(air_addr=("127.0.0.3", 0), sm_addr=sm.getsockname(),
                          sm_mac="001D129012345678", pana_password="0123456789AB",
                          app_port=4059, channel=11)
        await emu.start()
        cfg = {"uart": emu.slave_path, "sm_mac": "", "pana_password": "0123456789AB",
               "scan_duration": 1, "backoff_min_ms": 50, "backoff_max_ms": 200}
        proc = await spawn_micropython(tmp_path / "radio_mp.py", SCRIPT % json.dumps(cfg))
        try:
            seen = []
            while not (seen and seen[-1].startswith(b"READY")):
                line = await asyncio.wait_for(proc.stdout.readline(), 20)
                assert line, b"".join(seen)  # the process ended before joining
                seen.append(line)
            assert seen[-1] == b"READY 1\n"
            sm.sendto(b"ping", emu.air_addr)
            loop = asyncio.get_running_loop()
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(sm, 2048), 10)
            assert data == b"echo:ping" and addr == emu.air_addr
            rest = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()
            assert "SENT True 4059" in rest, rest
            assert [c for c, _ in emu.requests][:5] == [0x00D9, 0x006B, 0x005F, 0x0051, 0x005F]
            assert emu.stats["pana_1"] == 1
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await emu.stop()
            sm.close()

    asyncio.run(asyncio.wait_for(body(), 60))
