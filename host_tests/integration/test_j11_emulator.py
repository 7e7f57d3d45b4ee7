"""The J11 module emulator on its own, over a real pty, byte by byte: ROHM's sample frames
(reference wisun-modules.md section 3.5, F1..F21), one answer per mangled request with the ROHM
result code, result codes of the command set, scan timing in simulated time, the pairing ID, and
the fault knobs (lifetime redo, T108 budget, ping, merged writes, the coordinator twin)."""

import asyncio
import os
import socket
import struct
import time

import pytest

from firmware.radio import j11
from tools import j11_emulator as emu_mod
from tools.j11_emulator import J11Emulator

# ROHM 63AN028E sample values (reference section 3.5), spaces removed
F1 = "D0EA83FC 00D9 0004 0416 0000"
F2 = "D0F9EE5D 6019 0004 0391 0000"
F3 = "D0EA83FC 005F 0008 03A0 0009 05000400"
F4 = "D0F9EE5D 205F 0005 0398 0001 01"
F7 = "D0EA83FC 0051 0012 039C 041D 06 0003FFF0 01 4343444445454646"
F8_NONE = "D0F9EE5D 4051 0006 03AB 0005 0104"
F8_HIT = "D0F9EE5D 4051 0012 03B7 06BA 000C01 0050C2FFFEDC2822 BCDE DE"
F13 = "D0F9EE5D 2053 0011 0398 06BA 01 0C BCDE 0050C2FFFEDC2822 DE"
F14 = "D0EA83FC 0005 0006 0344 0028 0E1A"
F16 = "D0EA83FC 0056 0004 0393 0000"
F18 = "D0F9EE5D 6028 000D 03A9 0436 01 0050C2FFFEDC2822"
F20 = ("D0EA83FC 0008 002A 036B 0A75 FE80000000000000 0250C2FFFEDC2822 0E1A 0E1A 0010"
       "1081 0006 05FF01 028801 62 02 EA00 EB00")
F21 = "D0F9EE5D 2008 000B 0347 009D 01 00 1081000605"

ROHM_MAC = "0050C2FFFEDC2822"
ROHM_ID = "00112233445566778899AABBCCDDEEFF"  # pairing ID = last 8 characters: "CCDDEEFF"
ROHM_PW = "0123456789AB"


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def req(cmd, data=b""):
    return j11.encode(cmd, data, j11.UC_REQUEST)


def resp(code, data=b""):
    return j11.encode(code, data, j11.UC_RESPONSE)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 50))


class Uart:
    """The host side of the pty, raw: write bytes, read bytes or whole frames."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.raw = bytearray()  # every byte read, in order
        self.pos = 0  # how far frame() / exact() have consumed raw
        self.reads = []  # size of every read
        self.notes = []  # notifications cmd() skipped on its way to the response

    def write(self, data):
        os.write(self.fd, data)

    async def _read_some(self, timeout):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                data = b""
            if data:
                self.raw += data
                self.reads.append(len(data))
                return data
            if loop.time() >= end:
                return b""
            await asyncio.sleep(0.002)

    def _next(self):
        raw = self.raw
        i = raw.find(j11.UC_RESPONSE, self.pos)
        if i < 0 or len(raw) - i < 12:
            return None
        code, length = struct.unpack_from(">HH", raw, i + 4)
        total = 8 + length
        if len(raw) - i < total:
            return None
        self.pos = i + total
        return code, bytes(raw[i + 12:i + total])

    async def frame(self, timeout=3.0):
        """The next frame (code, data) from the module."""
        end = asyncio.get_running_loop().time() + timeout
        while True:
            f = self._next()
            if f is not None:
                return f
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError("no frame within %.1f s" % timeout)
            await self._read_some(left)

    async def exact(self, expected, timeout=3.0):
        """The next len(expected) bytes, as they came (byte-exact comparisons)."""
        end = asyncio.get_running_loop().time() + timeout
        while len(self.raw) - self.pos < len(expected):
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await self._read_some(left)
        got = bytes(self.raw[self.pos:self.pos + len(expected)])
        self.pos += len(got)
        return got

    async def quiet(self, seconds):
        """Everything that arrives within `seconds` (expected: nothing)."""
        got = bytearray()
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            got += await self._read_some(end - asyncio.get_running_loop().time())
        return bytes(got)

    async def cmd(self, cmd, data=b"", timeout=3.0):
        """Send a request; return the data of its response (notifications before it go to
        self.notes)."""
        self.write(req(cmd, data))
        while True:
            code, d = await self.frame(timeout)
            if code == cmd | 0x2000:
                return d
            self.notes.append((code, d))

    def close(self):
        os.close(self.fd)


class Rig:
    def __init__(self, **kw):
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.4", 0))
        self.peer.setblocking(False)
        args = dict(air_addr=("127.0.0.3", 0), sm_addr=self.peer.getsockname())
        args.update(kw)
        self.emu = J11Emulator(**args)

    async def __aenter__(self):
        await self.emu.start()
        self.uart = Uart(self.emu.slave_path)
        return self

    async def __aexit__(self, *exc):
        self.uart.close()
        await self.emu.stop()
        self.peer.close()

    async def boot(self):
        self.uart.write(req(0x00D9))
        assert await self.uart.frame() == (0x6019, b"")

    async def broute_join(self, mode=5, channel=None, creds=None):
        """Reset .. Route-B start .. PANA OK, checking each answer."""
        u = self.uart
        await self.boot()
        ch = self.emu.sm_channel if channel is None else channel
        assert await u.cmd(0x005F, bytes((mode, 0, ch, 0))) == b"\x01"
        assert await u.cmd(0x0054, (creds or (ROHM_ID + ROHM_PW)).encode()) == b"\x01"
        start = await u.cmd(0x0053)
        assert start[0] == 1, start
        assert await u.cmd(0x0005, b"\x0e\x1a") == b"\x01"
        assert await u.cmd(0x0056) == b"\x01"
        code, d = await u.frame()
        assert code == 0x6028 and d[0] == 1, (hex(code), d)
        assert (await u.frame())[0] == 0x601A
        return start


def rohm_rig(**kw):
    return Rig(sm_mac=ROHM_MAC, pan_id=0xBCDE, channel=12, rssi=0xDE - 256,
               pana_password=ROHM_PW, broute_id=ROHM_ID, **kw)


def test_golden_vectors_are_consistent():
    # Our transcription of ROHM's samples must be what the firmware codec encodes.
    assert h(F1) == req(0x00D9)
    assert h(F2) == resp(0x6019)
    assert h(F3) == req(0x005F, b"\x05\x00\x04\x00")
    assert h(F7) == req(0x0051, h("06 0003FFF0 01") + b"CCDDEEFF")
    assert h(F13) == resp(0x2053, h("01 0C BCDE") + h(ROHM_MAC) + b"\xde")
    assert h(F18) == resp(0x6028, b"\x01" + h(ROHM_MAC))


@pytest.mark.timeout(60)
def test_rohm_sample_sequence_byte_exact():
    """reset, init, credentials, scan with pairing ID, Route-B start, open 3610, PANA, transmit:
    every answer with a golden frame in the reference matches it byte for byte."""

    async def body():
        async with rohm_rig() as r:
            u = r.uart
            u.write(h(F1))
            assert await u.exact(h(F2)) == h(F2)
            u.write(h(F3))
            assert await u.exact(h(F4)) == h(F4)
            u.write(req(0x0054, (ROHM_ID + ROHM_PW).encode()))
            assert await u.exact(resp(0x2054, b"\x01")) == resp(0x2054, b"\x01")
            u.write(h(F7))
            want = b"".join(h(F8_NONE) if ch == 4 else
                            (h(F8_HIT) if ch == 12 else resp(0x4051, bytes((1, ch))))
                            for ch in range(4, 18)) + resp(0x2051, b"\x01")
            assert await u.exact(want) == want
            u.write(req(0x005F, b"\x05\x00\x0c\x00"))
            assert await u.exact(resp(0x205F, b"\x01")) == resp(0x205F, b"\x01")
            u.write(req(0x0053))
            assert await u.exact(h(F13)) == h(F13)
            u.write(h(F14))
            assert await u.exact(resp(0x2005, b"\x01")) == resp(0x2005, b"\x01")
            u.write(h(F16))
            want = resp(0x2056, b"\x01") + h(F18) + resp(0x601A, b"\x02" + h(ROHM_MAC) + b"\xde")
            assert await u.exact(want) == want
            u.write(h(F20))
            assert await u.exact(h(F21)) == h(F21)
            data, _ = await asyncio.wait_for(
                asyncio.get_running_loop().sock_recvfrom(r.peer, 2048), 3)
            assert data == h("1081 0006 05FF01 028801 62 02 EA00 EB00")

    run(body())


@pytest.mark.timeout(60)
def test_one_answer_per_mangled_request():
    async def body():
        async with Rig() as r:
            u = r.uart
            await r.boot()
            # header checksum wrong: exactly one 0x2FFF, nothing later (no 1 s timeout answer)
            bad = bytearray(req(0x006B))
            bad[9] ^= 0x01
            u.write(bytes(bad))
            assert await u.frame() == (0x2FFF, b"\xf0")
            assert await u.quiet(1.4) == b""
            # data checksum wrong: cmd | 0x2000 with 0xF1 at once, nothing later
            bad = bytearray(req(0x005F, b"\x03\x00\x04\x00"))
            bad[11] ^= 0x01
            u.write(bytes(bad))
            assert await u.frame() == (0x205F, b"\xf1")
            assert await u.quiet(1.4) == b""
            assert r.emu.mode is None  # the mangled request was not executed
            # length field 0x0FFF (over the maximum): 0xF3 at once, nothing later
            head = bytearray(b"\xd0\xea\x83\xfc\x00\x08\x0f\xff\x00\x00\x00\x00")
            struct.pack_into(">H", head, 8, sum(head[:8]))
            u.write(bytes(head) + b"\x00" * 40)
            assert await u.frame() == (0x2008, b"\xf3")
            assert await u.quiet(1.4) == b""
            # length field below 4: 0xF2
            head = bytearray(b"\xd0\xea\x83\xfc\x00\x6b\x00\x02\x00\x00\x00\x00")
            struct.pack_into(">H", head, 8, sum(head[:8]))
            u.write(bytes(head))
            assert await u.frame() == (0x206B, b"\xf2")
            assert await u.quiet(1.4) == b""
            # a request that stops coming: 0x13 once, after 1 s
            u.write(req(0x0001)[:9])
            t0 = time.monotonic()
            assert await u.frame() == (0x2001, b"\x13")
            assert time.monotonic() - t0 >= 0.9
            assert await u.quiet(1.4) == b""
            # garbage before a good request is dropped silently; the request is answered
            u.write(b"\x00\xd0\xea\x55" + req(0x006B))
            code, d = await u.frame()
            assert code == 0x206B and d[0] == 1
            assert await u.quiet(0.3) == b""
            assert r.emu.stats["uart_errors"] == 5

    run(body())


@pytest.mark.timeout(60)
def test_result_codes():
    async def body():
        async with Rig() as r:
            u = r.uart
            await r.boot()
            u.write(req(0x1234))
            assert await u.frame() == (0xFFFF, b"\x03")  # unknown command
            assert await u.cmd(0x0053) == b"\x10"  # B-route before the initial settings
            assert await u.cmd(0x0005, b"\x0e\x1a") == b"\x10"
            assert await u.cmd(0x0107) == b"\x10"
            assert await u.cmd(0x005F, b"\x04\x00\x04\x00") == b"\x04"  # mode 4 invalid
            assert await u.cmd(0x005F, b"\x03\x00\x04\x00") == b"\x01"
            assert await u.cmd(0x0107) == b"\x01\x03\x00\x04\x00"
            assert await u.cmd(0x0054, (ROHM_ID + ROHM_PW).encode()) == b"\x14"  # HAN-only mode
            assert await u.cmd(0x0053) == b"\x14"
            assert await u.cmd(0x0005, b"\x0e\x1a") == b"\x01"
            assert await u.cmd(0x0005, b"\x0e\x1a") == b"\x0a"  # already open
            assert await u.cmd(0x0005, b"\x0f\xdb") == b"\x01"
            assert await u.cmd(0x0007) == b"\x01\x02\x0e\x1a\x0f\xdb"
            assert await u.cmd(0x0006, b"\x0e\x1a") == b"\x01"
            assert await u.cmd(0x0006, b"\x0e\x1a") == b"\x0b"  # not open
            for port in range(1000, 1005):
                assert await u.cmd(0x0005, struct.pack(">H", port)) == b"\x01"
            assert await u.cmd(0x0005, b"\x00\x07") == b"\x12"  # six ports is the most
            assert await u.cmd(0x0009) == b"\x01" + j11.link_local_of_mac(r.emu.own_mac)
            assert await u.cmd(0x000E) == b"\x01" + r.emu.own_mac
            assert await u.cmd(0x000A, r.emu.sm_mac) == b"\x01"
            assert await u.cmd(0x005F, b"\x03\x00\x04\x00") == b"\x0f"  # HAN operating
            assert await u.cmd(0x003B) == b"\x10"  # HAN PANA not up
            assert await u.cmd(0x002B, r.emu.sm_mac) == b"\x10"
            assert await u.cmd(0x0008, bytes(22)) == b"\x04"  # zero-length payload
            tx = j11.link_local_of_mac(r.emu.sm_mac) + struct.pack(">HHH", 1, 1, 1) + b"x"
            assert await u.cmd(0x0008, tx) == b"\x10"  # no session
            assert await u.cmd(0x00D1, j11.link_local_of_mac(r.emu.sm_mac) + b"\x00\x08\x00") \
                == b"\x10"

    run(body())


@pytest.mark.timeout(60)
def test_broute_state_results():
    async def body():
        async with rohm_rig(pana_ms=400) as r:
            u = r.uart
            await r.boot()
            assert await u.cmd(0x005F, b"\x05\x00\x0c\x00") == b"\x01"
            assert await u.cmd(0x0053) == b"\x51"  # no credentials yet
            assert await u.cmd(0x0054, b"short") == b"\x04"
            assert await u.cmd(0x0054, (ROHM_ID + ROHM_PW).encode()) == b"\x01"
            assert await u.cmd(0x0054, (ROHM_ID + ROHM_PW).encode()) == b"\x58"  # already set
            assert await u.cmd(0x0056) == b"\x10"  # Route-B not started
            assert await u.cmd(0x0057) == b"\x10"
            assert await u.cmd(0x005E) == b"\x10"
            assert (await u.cmd(0x0053))[0] == 1
            assert await u.cmd(0x0053) == b"\x34"  # operating
            assert await u.cmd(0x005F, b"\x05\x00\x0c\x00") == b"\x34"
            assert await u.cmd(0x0054, (ROHM_ID + ROHM_PW).encode()) == b"\x34"
            assert await u.cmd(0x005E) == b"\x01\xbc\xde"
            assert await u.cmd(0x0001) == b"\x01\x02\x02\x01"
            assert await u.cmd(0x0005, b"\x0e\x1a") == b"\x01"
            assert await u.cmd(0x0056) == b"\x01"
            # PANA runs in the module (400 ms): commands meanwhile see "authenticating"
            assert await u.cmd(0x0001) == b"\x01\x02\x03\x01"
            assert await u.cmd(0x0056) == b"\x35"
            assert await u.cmd(0x0057) == b"\x35"
            tx = j11.link_local_of_mac(ROHM_MAC) + struct.pack(">HHH", 3610, 3610, 1) + b"x"
            assert await u.cmd(0x0008, tx) == b"\x35"
            assert (await u.frame())[0] == 0x6028
            assert (await u.frame())[0] == 0x601A
            assert await u.cmd(0x0056) == b"\x34"  # already authenticated
            assert len(await u.cmd(0x0059)) == 17  # result + key
            assert await u.cmd(0x00D2) == b"\x01"  # re-authentication: response, then 0x6028
            assert await u.cmd(0x00D2) == b"\x35"
            assert await u.frame(3) == (0x6028, b"\x01" + h(ROHM_MAC))
            assert await u.cmd(0x0057) == b"\x01"  # PANA end
            assert await u.cmd(0x0059) == b"\x10"
            assert await u.cmd(0x0058) == b"\x01"  # Route-B end
            assert await u.cmd(0x0058) == b"\x10"
            assert await u.quiet(0.3) == b""

    run(body())


@pytest.mark.timeout(60)
def test_credentials_already_set_and_mac_fail_knobs():
    async def body():
        async with rohm_rig(faults={"credentials_already_set": 1, "mac_fail": 2}) as r:
            u = r.uart
            await r.boot()
            assert await u.cmd(0x005F, b"\x05\x00\x0c\x00") == b"\x01"
            assert await u.cmd(0x0054, (ROHM_ID + ROHM_PW).encode()) == b"\x58"
            assert await u.cmd(0x0053) == b"\x0e"  # MAC connection failed: result only
            assert await u.cmd(0x0053) == b"\x0e"
            assert (await u.cmd(0x0053))[:2] == b"\x01\x0c"  # the knob is used up
            assert r.emu.faults["mac_fail"] == 0 and r.emu.faults["credentials_already_set"] == 0

    run(body())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("duration,mask", [(1, 0x0003FFF0), (4, 0x0003FFF0), (6, 0x00001030),
                                           (9, 0x00000010)])
def test_scan_takes_its_dwell_in_simulated_time(duration, mask):
    async def body():
        async with Rig(channel=12) as r:
            u = r.uart
            await r.boot()
            assert await u.cmd(0x005F, b"\x03\x00\x04\x00") == b"\x01"
            before = r.emu.sim_elapsed_s
            u.write(req(0x0051, bytes((duration,)) + struct.pack(">I", mask) + bytes(9)))
            channels = [ch for ch in range(4, 18) if mask >> ch & 1]
            got = [await u.frame(10) for _ in channels]
            assert [c for c, _ in got] == [0x4051] * len(channels)
            assert [d[1] for _, d in got] == channels
            assert [d[0] for _, d in got] == [0 if ch == 12 else 1 for ch in channels]
            assert await u.frame(3) == (0x2051, b"\x01")
            want = len(channels) * 0.00964 * 2 ** duration
            assert r.emu.sim_elapsed_s - before == pytest.approx(want, rel=1e-9)

    run(body())


@pytest.mark.timeout(60)
def test_pairing_id_is_honoured():
    async def body():
        async with Rig(channel=5, pairing_id="CCDDEEFF") as r:
            u = r.uart
            await r.boot()
            assert await u.cmd(0x005F, b"\x03\x00\x04\x00") == b"\x01"

            async def scan(flag, pid):
                u.write(req(0x0051, b"\x01\x00\x00\x00\x60" + bytes((flag,)) + pid))
                frames = [await u.frame() for _ in range(3)]
                assert frames[-1] == (0x2051, b"\x01")
                return [d for c, d in frames[:2]]

            assert [d[0] for d in await scan(1, b"CCDDEEFF")] == [0, 1]  # ch 5 heard
            assert [d[0] for d in await scan(1, b"CCDDEE00")] == [1, 1]  # wrong pairing ID
            assert [d[0] for d in await scan(0, bytes(8))] == [0, 1]  # no pairing ID
            assert await u.cmd(0x0051, b"\x01\x00\x00\x00\x60\x01") == b"\x04"  # flag 1, no ID
            assert await u.cmd(0x0051, b"\x01\x00\x00\x00\x01\x00") == b"\x04"  # ch 0: none

    run(body())


class Twin:
    """The smallest coordinator: two meters on channel 7, one wants password B."""

    def __init__(self):
        self.calls = []

    def beacons(self, emu, channel_mask, pairing_id):
        self.calls.append(("beacons", channel_mask, pairing_id))
        return [(7, 0x0101, bytes.fromhex("0011223344556601"), -60),
                (7, 0x0202, bytes.fromhex("0011223344556602"), -40),
                (9, 0x0303, bytes.fromhex("0011223344556603"), -70)]

    def authenticate(self, emu, own_mac, peer_mac, credentials):
        self.calls.append(("auth", peer_mac, dict(credentials)))
        return 1 if credentials["password"] == "BBBBBBBBBBBB" else 2


@pytest.mark.timeout(60)
def test_coordinator_twin():
    async def body():
        twin = Twin()
        async with Rig(coordinator=twin) as r:
            u = r.uart
            await r.boot()
            assert await u.cmd(0x005F, b"\x05\x00\x07\x00") == b"\x01"
            u.write(req(0x0051, b"\x01\x00\x00\x02\x80\x01" + b"CCDDEEFF"))  # ch 7 and 9
            hit = await u.frame()
            assert hit[0] == 0x4051 and hit[1][:3] == b"\x00\x07\x02"
            assert hit[1][3:11] == bytes.fromhex("0011223344556601")
            assert (await u.frame())[1][:3] == b"\x00\x09\x01"
            assert await u.frame() == (0x2051, b"\x01")
            assert twin.calls[0] == ("beacons", 0x280, "CCDDEEFF")
            assert await u.cmd(0x0054, (ROHM_ID + "BBBBBBBBBBBB").encode()) == b"\x01"
            start = await u.cmd(0x0053)  # the strongest beacon on the module's channel
            assert start[:4] == b"\x01\x07\x02\x02"
            assert await u.cmd(0x0056) == b"\x01"
            assert await u.frame() == (0x6028, b"\x01" + bytes.fromhex("0011223344556602"))
            assert twin.calls[-1] == ("auth", bytes.fromhex("0011223344556602"),
                                      {"id": ROHM_ID, "password": "BBBBBBBBBBBB"})

    run(body())


@pytest.mark.timeout(60)
def test_lifetime_expiry_redo_then_failed_redo():
    async def body():
        async with rohm_rig(lifetime_s=600) as r:
            u = r.uart
            await r.broute_join()
            r.emu.advance(601)  # the session's lifetime runs out
            assert await u.frame() == (0x6028, b"\x01" + h(ROHM_MAC))  # the redo's result only
            assert r.emu.stats["lifetime_expiries"] == 1
            r.emu.set_faults(reauth_result=2, reauth_result_count=1)
            r.emu.advance(601)
            assert await u.frame() == (0x6028, b"\x02" + h(ROHM_MAC))
            code, d = await u.frame()
            assert (code, d[0]) == (0x601A, 4)  # PANA disconnected
            tx = j11.link_local_of_mac(ROHM_MAC) + struct.pack(">HHH", 3610, 3610, 1) + b"x"
            assert await u.cmd(0x0008, tx) == b"\x10"
            assert r.emu.stats["reauth_1"] == 1 and r.emu.stats["reauth_2"] == 1

    run(body())


@pytest.mark.timeout(60)
def test_t108_budget_refuses_transmits():
    async def body():
        payload = bytes(1000)
        per_frame = (1000 + emu_mod.AIR_OVERHEAD) * 8 / 100000  # 0.08496 s at 100 kbit/s
        async with rohm_rig(t108_budget_s=per_frame * 3.5) as r:
            u = r.uart
            await r.broute_join()
            tx = j11.link_local_of_mac(ROHM_MAC) + struct.pack(">HHH", 3610, 3610, 1000) \
                + payload
            results = [(await u.cmd(0x0008, tx))[:2] for _ in range(4)]
            assert results == [b"\x01\x00"] * 3 + [b"\x01\x07"]
            assert r.emu.t108_air_s() == pytest.approx(3 * per_frame)
            r.emu.advance(3601)  # the sliding hour moves past the three frames
            assert r.emu.t108_air_s() == 0
            assert (await u.cmd(0x0008, tx))[:2] == b"\x01\x00"
            r.emu.set_faults(t108_limited=True)
            assert (await u.cmd(0x0008, tx))[:2] == b"\x01\x07"
            assert r.emu.stats["tx"] == 4 and r.emu.stats["tx_t108"] == 2

    run(body())


@pytest.mark.timeout(60)
def test_ping_echo_and_no_reply():
    async def body():
        async with rohm_rig() as r:
            u = r.uart
            await r.broute_join()
            ip = j11.link_local_of_mac(ROHM_MAC)
            before = r.emu.sim_elapsed_s
            # two pings in one write: the second comes before the first one's echo
            u.write(req(0x00D1, ip + b"\x00\x20\x00") * 2)
            assert await u.frame() == (0x20D1, b"\x01")
            assert await u.frame() == (0x20D1, b"\x3c")  # one at a time
            assert await u.frame() == (0x60D1, b"\x01" + ip)
            rtt = 2 * (32 + 8 + emu_mod.AIR_OVERHEAD) * 8 / 100000 + 0.02
            assert r.emu.sim_elapsed_s - before == pytest.approx(rtt)
            other = j11.link_local_of_mac("0011223344556677")
            assert await u.cmd(0x00D1, other + b"\x00\x20\x00") == b"\x01"
            assert await u.frame() == (0x60D1, b"\x02" + other)

    run(body())


@pytest.mark.timeout(60)
def test_merged_writes_put_two_frames_in_one_write():
    async def body():
        async with Rig() as r:
            u = r.uart
            await r.boot()
            r.emu.set_faults(merge_writes=1)
            u.write(req(0x006B) + req(0x000E))
            a = await u.frame()
            b = await u.frame()
            assert (a[0], b[0]) == (0x206B, 0x200E)
            assert r.emu.stats["merged_writes"] == 1
            assert u.reads[-1] >= len(resp(0x206B, bytes(9))) + len(resp(0x200E, bytes(9)))

    run(body())


def test_request_parser_fuzz():
    """The module-side parser over random streams: every intact request comes out once and in
    order, every mangled one draws exactly one answer of the right kind, noise draws none."""
    import random

    rng = random.Random(7)
    for _ in range(40):
        parser = emu_mod.RequestParser()
        stream, want_frames, want_replies = bytearray(), [], []
        for _ in range(rng.randrange(1, 30)):
            cmd = rng.choice((0x0001, 0x0005, 0x0008, 0x0051, 0x005F, 0x00D1))
            data = bytes(rng.choice(range(0x00, 0xD0)) for _ in range(rng.randrange(0, 60)))
            frame = bytearray(req(cmd, data))
            kind = rng.choice(("good", "good", "header", "data", "noise"))
            if kind == "header":
                frame[9] ^= 0x01
                want_replies.append((0x2FFF, b"\xf0"))
            elif kind == "data" and data:
                frame[11] ^= 0x01
                want_replies.append((cmd | 0x2000, b"\xf1"))
            else:
                want_frames.append((cmd, data))
            if kind == "noise":  # bytes below 0xD0 never start a unique code
                stream += bytes(rng.randrange(0xD0) for _ in range(rng.randrange(1, 20)))
            stream += frame
        got_frames, got_replies = [], []
        off = 0
        while off < len(stream):
            n = rng.randrange(1, 50)
            for ev in parser.feed(bytes(stream[off:off + n]), now=0.0):
                (got_frames if ev[0] == "frame" else got_replies).append(ev[1:])
            off += n
        assert got_frames == want_frames
        assert got_replies == want_replies
        assert parser.expire(5.0) == []  # nothing pending
        # a request that stops half way: one 0x13 once its second has passed
        assert parser.feed(req(0x006B)[:8], now=10.0) == []
        assert parser.expire(10.5) == []
        assert parser.expire(11.1) == [("reply", 0x206B, b"\x13")]
        assert parser.expire(20.0) == []


@pytest.mark.timeout(60)
def test_random_bytes_on_the_uart_leave_the_module_answering():
    async def body():
        import random

        rng = random.Random(3)
        async with Rig() as r:
            u = r.uart
            await r.boot()
            for _ in range(20):
                u.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
            await u.quiet(1.3)  # let any partial frame time out
            u.pos = len(u.raw)
            code, d = (0, b"")
            u.write(req(0x006B))
            while code != 0x206B:
                code, d = await u.frame()
            assert d[0] == 1

    run(body())


@pytest.mark.timeout(60)
def test_every_command_answers_random_data():
    """Random data for the whole command set, in random module states: every request draws an
    answer and nothing crashes."""

    async def body():
        import random

        emu = J11Emulator(air_addr=("127.0.0.3", 0), sm_addr=("127.0.0.4", 9), pana_ms=0,
                          boot_ms=0, scan_ms_per_channel=0, broute_id=ROHM_ID)
        await emu.start()
        try:
            rng = random.Random(11)
            codes = (0x0001, 0x0005, 0x0006, 0x0007, 0x0008, 0x0009, 0x000A, 0x000E, 0x002B,
                     0x002C, 0x003A, 0x003B, 0x0051, 0x0053, 0x0054, 0x0056, 0x0057, 0x0058,
                     0x0059, 0x005E, 0x005F, 0x006B, 0x00D1, 0x00D2, 0x0107, 0x4321)
            good = {0x005F: bytes((5, 0, 4, 0)), 0x0054: (ROHM_ID + ROHM_PW).encode()}
            for i in range(3000):
                cmd = rng.choice(codes)
                if cmd in good and rng.random() < 0.3:
                    data = good[cmd]
                else:
                    n = rng.choice((0, 1, 2, 4, 6, 8, 14, 19, 22, 44, rng.randrange(100)))
                    data = bytes(rng.getrandbits(8) for _ in range(n))
                before = emu.stats["frames_out"]
                await emu._execute(cmd, data)
                assert emu.stats["frames_out"] > before, (hex(cmd), data)
                await asyncio.sleep(0)  # let module-internal exchanges run
                if i % 100 == 0:
                    emu._reset_state()
        finally:
            await emu.stop()

    run(body())
