"""Driver + session (CPython) against the J11 module emulator over a real pty (the host HAL's
PtyUart), with a loopback smart-meter peer socket."""

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest
from radio_rig import close_rig

from firmware import log
from firmware.hal.host import PtyUart
from firmware.radio import j11, j11_link
from firmware.radio.j11_module import J11Module
from firmware.radio.session import ST_AUTH_FAILED, ST_READY, RadioSession
from tools.j11_emulator import J11Emulator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SM_MAC = "001D129012345678"
SM_IP6 = j11.link_local_of_mac(SM_MAC)
PASSWORD = "0123456789AB"
JOIN_ORDER = [0x00D9, 0x006B, 0x005F, 0x000A, 0x002C, 0x003A, 0x0005]


class Rig:
    """Emulator + smart-meter peer socket + firmware driver/session, all on loopback."""

    def __init__(self, cfg=None, emu=None):
        self.lines = []
        self.sm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sm.bind(("127.0.0.4", 0))
        self.sm.setblocking(False)
        kw = dict(air_addr=("127.0.0.3", 0), sm_addr=self.sm.getsockname(), sm_mac=SM_MAC,
                  pana_password=PASSWORD, app_port=4059)
        kw.update(emu or {})
        self.emu = J11Emulator(**kw)
        self.cfg = dict(sm_mac=SM_MAC, pana_password=PASSWORD, backoff_min_ms=50,
                        backoff_max_ms=400, cmd_timeout_ms=1500, reset_timeout_ms=2000,
                        pana_timeout_ms=1500, scan_duration=1, scan_max_duration=4)
        self.cfg.update(cfg or {})

    async def __aenter__(self):
        log.set_sink(self.lines.append)
        await self.emu.start()
        self.port = PtyUart(self.emu.slave_path)
        self.module = J11Module(self.port)
        self.session = RadioSession(j11_link.build(self.module, self.cfg), self.cfg)
        self.task = asyncio.create_task(self.session.run())
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await close_rig(self.module, self.port, self.emu, self.sm, self.lines, (PASSWORD,))

    async def until(self, cond, timeout=10.0, what="condition"):
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError("timed out waiting for %s; state=%s stats=%s log tail=%s"
                                     % (what, self.session.state, self.session.stats,
                                        self.lines[-8:]))
            await asyncio.sleep(0.01)

    async def ready(self, timeout=10.0):
        await self.until(self.session.is_ready, timeout, "ready")

    def cmds(self):
        return [c for c, _ in self.emu.requests]

    async def sm_recv(self, timeout=3.0):
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recvfrom(self.sm, 2048), timeout)

    def sm_send(self, payload):
        self.sm.sendto(payload, self.emu.air_addr)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def test_join_order_and_udp_both_ways():
    async def body():
        async with Rig() as r:
            await r.ready()
            assert r.cmds() == JOIN_ORDER
            init = [d for c, d in r.emu.requests if c == 0x005F][0]
            assert init == bytes((3, 0, 4, 0))  # HAN end device, no sleep, ch 4, 20 mW
            assert [d for c, d in r.emu.requests if c == 0x000A][0] == bytes.fromhex(SM_MAC)
            assert [d for c, d in r.emu.requests if c == 0x0005][0] == b"\x0f\xdb"
            r.sm_send(b"\x00\x01\x00\x10\x00\x01\x00\x05hello")
            src, sport, dport, payload = await asyncio.wait_for(r.session.recv(), 3)
            assert (src, sport, dport) == (SM_IP6, r.sm.getsockname()[1], 4059)
            assert payload == b"\x00\x01\x00\x10\x00\x01\x00\x05hello"
            assert await r.session.send(src, 4059, b"reply-bytes" * 100)
            data, addr = await r.sm_recv()
            assert data == b"reply-bytes" * 100
            assert addr == r.emu.air_addr
            st = r.session.stats
            assert st["joins"] == 1 and st["rx"] == 1 and st["tx_ok"] == 1
            assert st["rssi"] == -52 and st["bad_frames"] == 0
            assert r.module.rx.stats["dropped_bytes"] == 0

    run(body())


def test_max_payload_and_oversize():
    async def body():
        async with Rig() as r:
            await r.ready()
            big = bytes(range(256)) * 4 + bytes(208)
            assert len(big) == j11.MAX_UDP_PAYLOAD
            assert await r.session.send(SM_IP6, 4059, big)
            assert (await r.sm_recv())[0] == big
            r.sm_send(big)
            assert (await asyncio.wait_for(r.session.recv(), 3))[3] == big
            assert not await r.session.send(SM_IP6, 4059, big + b"x")
            assert r.session.stats["tx_fail"] == 1

    run(body())


def test_join_by_active_scan_and_cache():
    async def body():
        async with Rig(cfg={"sm_mac": ""}, emu={"channel": 9}) as r:
            await r.ready()
            cmds = r.cmds()
            assert cmds == [0x00D9, 0x006B, 0x005F, 0x0051, 0x005F, 0x000A, 0x002C, 0x003A,
                            0x0005]
            inits = [d for c, d in r.emu.requests if c == 0x005F]
            assert inits[1][2] == 9
            assert r.session.channel == 9 and r.session.peer_mac == bytes.fromhex(SM_MAC)
            # a MAC disconnect: rejoin from the cache, no second scan
            r.emu.set_faults(disconnect=3)
            await r.until(lambda: r.session.stats["joins"] == 2, what="rejoin")
            assert r.cmds().count(0x0051) == 1
            assert r.session.stats["disconnects"] == 1

    run(body())


def test_silent_scans_grow_duration():
    async def body():
        async with Rig(cfg={"sm_mac": ""}) as r:
            r.emu.set_faults(silent_scans=2)
            await r.ready()
            scans = [d for c, d in r.emu.requests if c == 0x0051]
            assert [d[0] for d in scans] == [1, 2, 3]
            assert all(d[1:5] == b"\x00\x03\xff\xf0" for d in scans)
            assert r.session.stats["join_failures"] == 2

    run(body())


def test_bad_credentials_latch_then_new_password():
    async def body():
        async with Rig(cfg={"pana_password": "WRONGPASS123"}) as r:
            await r.until(lambda: r.session.state == ST_AUTH_FAILED, what="latch")
            await asyncio.sleep(1.0)  # several back-off periods: must not retry
            assert r.cmds().count(0x003A) == 1
            assert r.session.stats["auth_failed"] == 1
            assert any("bad credentials" in line for line in r.lines)
            assert not any("WRONGPASS123" in line for line in r.lines)
            r.session.set_pana_password(PASSWORD)
            await r.ready()
            assert r.cmds().count(0x003A) == 2

    run(body())


def test_pana_no_response_retries_with_backoff():
    async def body():
        async with Rig() as r:
            r.emu.set_faults(pana_result=3, pana_result_count=2)
            t0 = time.monotonic()
            await r.ready()
            assert r.session.stats["join_failures"] == 2
            assert r.cmds().count(0x00D9) == 3
            assert time.monotonic() - t0 >= 0.05  # backed off at least once (min 50 ms)

    run(body())


def test_backoff_is_capped_exponential_with_jitter():
    async def body():
        async with Rig(cfg={"backoff_min_ms": 100, "backoff_max_ms": 1000}) as r:
            s = r.session
            for failures, lo, hi in ((0, 50, 100), (1, 100, 200), (3, 400, 800), (9, 500, 1000)):
                s._failures = failures
                got = {s.backoff_ms() for _ in range(50)}
                assert min(got) >= lo and max(got) <= hi, (failures, got)
                assert len(got) > 5  # jitter
            s._failures = 0
            await r.ready()

    run(body())


def test_tx_no_ack_retried_then_reported():
    async def body():
        async with Rig(cfg={"tx_retries": 3}) as r:
            await r.ready()
            r.emu.set_faults(tx_no_ack=2)
            assert await r.session.send(SM_IP6, 4059, b"abc")
            assert (await r.sm_recv())[0] == b"abc"
            r.emu.set_faults(tx_no_ack=10)
            assert not await r.session.send(SM_IP6, 4059, b"def")
            st = r.session.stats
            assert st["tx_no_ack"] == 5 and st["tx_fail"] == 1 and st["tx_ok"] == 1
            assert r.cmds().count(0x0008) == 2 + 1 + 4
            r.emu.set_faults(tx_no_ack=0)
            assert await r.session.send(SM_IP6, 4059, b"ghi")

    run(body())


def test_unknown_destination_is_no_ack():
    async def body():
        async with Rig(cfg={"tx_retries": 1}) as r:
            await r.ready()
            other = j11.link_local_of_mac("0011223344556677")
            assert not await r.session.send(other, 4059, b"x")
            assert r.emu.stats["tx_unknown_peer"] == 2

    run(body())


def test_corrupted_split_and_noisy_uart():
    async def body():
        async with Rig() as r:
            r.emu.set_faults(bad_header_checksum=1, bad_data_checksum=1, garbage=6,
                             split_writes=True)
            await r.ready(timeout=20)
            r.sm_send(b"payload")
            assert (await asyncio.wait_for(r.session.recv(), 3))[3] == b"payload"
            assert r.session.stats["bad_frames"] >= 2
            rx = r.module.rx.stats
            assert rx["bad_header"] >= 1 and rx["bad_data"] >= 1 and rx["garbage"] >= 1
            assert any("discarded" in line for line in r.lines)

    run(body())


def test_dropped_response_times_out_and_rejoins():
    async def body():
        async with Rig() as r:
            r.emu.set_faults(drop_responses=1)  # the version response disappears
            await r.ready()
            assert r.session.stats["join_failures"] == 1
            assert "timeout" in r.session.stats["last_error"]
            assert r.cmds().count(0x00D9) == 2

    run(body())


def test_dropped_startup_notification_times_out_and_rejoins():
    async def body():
        async with Rig() as r:
            r.emu.set_faults(drop_notifications=1)  # the 0x6019 after the first reset
            await r.ready()
            assert r.session.stats["join_failures"] == 1
            assert "0x6019" in r.session.stats["last_error"]

    run(body())


def test_truncated_request_answered_0x13_and_resent():
    async def body():
        async with Rig() as r:
            r.emu.set_faults(truncate_requests=1)  # the first reset loses its tail on the wire
            t0 = time.monotonic()
            await r.ready(timeout=15)
            assert time.monotonic() - t0 >= 1.0  # the module waited out its 1 s frame timer
            assert r.emu.stats["truncated"] == 1
            assert r.session.stats["join_failures"] == 0
            assert r.module.stats["uart_retries"] == 1
            assert r.cmds()[:2] == [0x00D9, 0x00D9]
            r.emu.set_faults(truncate_requests=1)
            assert await r.session.send(SM_IP6, 4059, b"after-0x13")
            assert (await r.sm_recv())[0] == b"after-0x13"
            assert r.module.stats["uart_retries"] == 2
            assert r.emu.stats["tx"] == 1  # the truncated transmit was never put on the air

    run(body())


def test_partial_frame_on_the_wire_gets_0x13_after_1s():
    async def body():
        emu = J11Emulator(air_addr=("127.0.0.3", 0), sm_addr=("127.0.0.4", 9))
        await emu.start()
        port = PtyUart(emu.slave_path)
        try:
            frame = j11.encode(0x006B)
            await port.write(frame[:5])
            t0 = time.monotonic()
            rx = j11.Reassembler()
            buf = bytearray(64)
            got = None
            while got is None:
                n = await asyncio.wait_for(port.readinto(buf), 3)
                rx.feed(buf[:n])
                got = rx.next_frame()
            assert time.monotonic() - t0 >= 0.9
            # header incomplete (5 bytes): the command is unknown -> error frame, result 0x13
            assert (got[0], bytes(got[1])) == (0xFFFF, b"\x13")
            await port.write(frame[:10])
            got = None
            while got is None:
                n = await asyncio.wait_for(port.readinto(buf), 3)
                rx.feed(buf[:n])
                got = rx.next_frame()
            assert (got[0], bytes(got[1])) == (0x206B, b"\x13")
            await port.write(frame)
            got = None
            while got is None:
                n = await asyncio.wait_for(port.readinto(buf), 3)
                rx.feed(buf[:n])
                got = rx.next_frame()
            assert got[0] == 0x206B and got[1][0] == 1
        finally:
            port.close()
            await emu.stop()

    run(body())


def test_vanished_module_then_back():
    async def body():
        async with Rig() as r:
            await r.ready()
            r.emu.set_faults(mute=True)
            assert not await r.session.send(SM_IP6, 4059, b"1")
            assert not await r.session.send(SM_IP6, 4059, b"2")  # 2nd timeout -> reopen
            await r.until(lambda: not r.session.is_ready(), what="reopen")
            await asyncio.sleep(0.5)
            r.emu.set_faults(mute=False)
            await r.until(lambda: r.session.stats["joins"] == 2, timeout=15, what="rejoin")

    run(body())


def test_liveness_watchdog_reopens():
    async def body():
        async with Rig(cfg={"liveness_s": 1}) as r:
            await r.ready()
            for _ in range(15):  # 1.5 s of activity: no reopen
                r.session.note_app_activity()
                await asyncio.sleep(0.1)
            assert r.session.stats["joins"] == 1
            await r.until(lambda: r.session.stats["joins"] == 2, timeout=5, what="reopen")
            assert r.session.stats["liveness_reopens"] == 1
            assert any("no application activity" in line for line in r.lines)

    run(body())


def test_send_when_not_ready_is_refused():
    async def body():
        async with Rig(cfg={"pana_password": "WRONGPASS123"}) as r:
            await r.until(lambda: r.session.state == ST_AUTH_FAILED, what="latch")
            assert not await r.session.send(SM_IP6, 4059, b"x")
            assert 0x0008 not in r.cmds()

    run(body())


def test_datagram_for_other_port_and_unknown_peer_ignored():
    async def body():
        async with Rig(emu={"app_port": 4060}) as r:
            await r.ready()
            r.sm_send(b"to-4060")
            stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            stranger.bind(("127.0.0.5", 0))
            stranger.sendto(b"who", r.emu.air_addr)
            stranger.close()
            # 4060 is not open on the module: dropped there, like the stranger's datagram
            await r.until(lambda: r.emu.stats["air_unknown_peer"] == 1
                          and r.emu.stats["air_dropped"] == 1, what="emulator saw both")
            await asyncio.sleep(0.1)
            assert r.session.stats["rx"] == 0

    run(body())


def test_secret_never_logged_even_at_debug():
    async def body():
        level = log.level
        log.level = log.DEBUG
        try:
            async with Rig(cfg={"pana_password": "Secret-Pw-9876"}) as r:
                await r.until(lambda: r.session.state == ST_AUTH_FAILED, what="latch")
                r.session.set_pana_password(PASSWORD)
                await r.ready()
                sent = [d for c, d in r.emu.requests if c == 0x002C]
                assert sent[0] == bytes.fromhex(SM_MAC) + b"Secret-Pw-9876"  # it did go out
                assert len(r.lines) > 5
                assert not any("Secret-Pw-9876" in line for line in r.lines)
        finally:
            log.level = level

    run(body())


def test_emulator_command_line():
    proc = subprocess.Popen([sys.executable, "-m", "tools.j11_emulator", "--air", "127.0.0.3:0",
                             "--sm", "127.0.0.4:4059"], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/")
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, j11.encode(0x00D9))
            rx = j11.Reassembler()
            got = None
            deadline = time.monotonic() + 5
            while got is None and time.monotonic() < deadline:
                rx.feed(os.read(fd, 64))
                got = rx.next_frame()
            assert got is not None and got[0] == 0x6019
        finally:
            os.close(fd)
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


@pytest.mark.parametrize("mode", [2, 5])
def test_other_modes(mode):
    async def body():
        async with Rig(cfg={"mode": mode}) as r:
            await r.ready()
            assert [d for c, d in r.emu.requests if c == 0x005F][0][0] == mode
            assert r.session.state == ST_READY

    run(body())
