"""Fuzz tests for every J11 parser: reassembler, frame and payload decoders, the driver's
notification dispatch and the emulator's request handling."""

import asyncio
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import log
from firmware.radio import j11
from firmware.radio.j11_module import J11Module
from firmware.radio.session import RadioSession
from tools.j11_emulator import J11Emulator

UC = j11.UC_RESPONSE
DECODERS = (j11.result_of, j11.decode_version, j11.decode_tx_result, j11.decode_scan,
            j11.decode_udp_rx, j11.decode_connection, j11.decode_pana, j11.decode_rx_fail)


def _quiet():
    lines = []
    log.set_sink(lines.append)
    return lines


def _random_frame(rng):
    n = rng.choice((0, 1, 2, 9, 11, 27 + rng.randrange(40), rng.randrange(j11.MAX_DATA + 1)))
    data = bytearray(rng.getrandbits(8) for _ in range(n))
    if n >= 8 and rng.random() < 0.2:
        at = rng.randrange(n - 3)
        data[at:at + 4] = UC  # a unique code inside good data must not confuse the parser
    return j11.encode(rng.choice((0x2008, 0x6018, 0x4051, 0x6028, 0x205F)), bytes(data), UC)


def test_reassembler_100k_random_chunks():
    lines = _quiet()
    try:
        rng = random.Random(20240601)
        r = j11.Reassembler()
        stream = bytearray()
        intact = []
        while len(intact) < 6000:
            f = _random_frame(rng)
            kind = rng.random()
            if kind < 0.70:
                stream += f
                intact.append(f)
            elif kind < 0.78:
                bad = bytearray(f)
                bad[rng.randrange(12)] ^= 1 << rng.randrange(8)  # header damage
                stream += bad
            elif kind < 0.86 and len(f) > 12:
                bad = bytearray(f)
                bad[12 + rng.randrange(len(f) - 12)] ^= 1 << rng.randrange(8)  # data damage
                stream += bad
            elif kind < 0.93:
                stream += f[:rng.randrange(1, len(f))]  # truncated
            else:
                junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
                stream += junk + (UC[:rng.randrange(4)] if rng.random() < 0.5 else b"")
        got = []
        chunks = 0
        off = 0
        mv = memoryview(stream)
        while off < len(stream) or chunks < 100000:
            if off >= len(stream):
                off = 0  # keep going to reach 100k chunks; frames repeat
            n = min(rng.choice((1, 1, 2, 3, 5, 8, 13, 64, 200, 1500)), len(stream) - off)
            taken = r.feed(mv[off:off + n], now=0)
            off += taken
            chunks += 1
            while True:
                fr = r.next_frame()
                if fr is None:
                    break
                got.append(j11.encode(fr[0], bytes(fr[1]), UC))
        assert chunks >= 100000
        # every frame that came out is one that went in intact, in order
        intact_set = set(intact)
        assert all(f in intact_set for f in got)
        first_pass = got[:len(intact)]
        assert first_pass[0] == intact[0]
        # a corrupted frame may hide the next one only with ~2^-16 odds: allow a hair
        assert len(got) >= len(intact) * 0.995
        assert r.stats["bad_header"] > 0 and r.stats["bad_data"] > 0 and r.stats["garbage"] > 0
        assert r.stats["regions"] == len([x for x in lines if "discarded" in x])
    finally:
        log.set_sink(None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoders_raise_only_j11error(data):
    for fn in DECODERS:
        try:
            fn(data)
        except j11.J11Error:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_frame_decode_raises_only_j11error(data):
    try:
        uc, cmd, body = j11.decode(data)
    except j11.J11Error:
        return
    assert j11.encode(cmd, bytes(body), uc) == data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), max_size=30), st.data())
def test_reassembler_chunks_hypothesis(chunks, data):
    _quiet()
    try:
        r = j11.Reassembler()
        good = j11.encode(0x6028, b"\x01" + bytes(8), UC)
        for c in chunks:
            r.feed(c, now=0)
            while r.next_frame() is not None:
                pass
        # after any noise, a clean frame preceded by 1.4 kB of padding that cannot start a
        # frame is always found
        pad = b"\x00" * 1400
        out = []
        for piece in (pad, good):
            off = 0
            while off < len(piece):
                off += r.feed(piece[off:], now=0)
                while True:
                    f = r.next_frame()
                    if f is None:
                        break
                    out.append((f[0], bytes(f[1])))
        assert out[-1] == (0x6028, good[12:])
    finally:
        log.set_sink(None)


class _NullUart:
    async def readinto(self, buf):
        await asyncio.sleep(3600)

    async def write(self, data):
        pass


def test_notification_dispatch_fuzz():
    lines = _quiet()

    async def body():
        m = J11Module(_NullUart())
        s = RadioSession(m, {"sm_mac": "001D129012345678", "pana_password": "x" * 12})
        rng = random.Random(7)
        for _ in range(20000):
            code = rng.choice((0x6018, 0x601A, 0x6038, 0x4051, 0x6028, 0x6019, 0x2008, 0x7777,
                               0xFFFF, 0x2FFF))
            n = rng.choice((0, 1, 9, 10, 21, 27, 30, rng.randrange(200)))
            m._dispatch(code, bytes(rng.getrandbits(8) for _ in range(n)))
        assert m.stats["bad_notifications"] > 0
        assert s.stats["rx"] >= 0

    try:
        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        log.set_sink(None)
    assert not any("failed:" in x and "handler" in x for x in lines)


def test_emulator_request_fuzz():
    async def body():
        emu = J11Emulator(air_addr=("127.0.0.3", 0), sm_addr=("127.0.0.4", 9), pana_ms=0,
                          scan_ms_per_channel=0)
        await emu.start()
        try:
            rng = random.Random(99)
            codes = (0x0001, 0x0005, 0x0008, 0x000A, 0x002C, 0x003A, 0x0051, 0x005F, 0x006B,
                     0x1234)
            for i in range(3000):
                cmd = rng.choice(codes)
                n = rng.choice((0, 1, 2, 4, 6, 8, 14, 22, 30, rng.randrange(100)))
                data = bytes(rng.getrandbits(8) for _ in range(n))
                before = emu.stats["frames_out"]
                await emu._execute(cmd, data)
                assert emu.stats["frames_out"] > before, (hex(cmd), data)  # always answers
                if i % 50 == 0:
                    emu._reset_state()
        finally:
            await emu.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
