"""Fuzz tests for every J11 parser: reassembler, frame and payload decoders, the driver's
notification dispatch and the emulator's request handling."""

import asyncio
import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import log
from firmware.radio import j11
from firmware.radio.j11_link import J11Link
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


# A bogus frame is at most MAX_FRAME bytes and an intact frame at least HEADER_LEN, so one
# collision (see _match_passes) can hide at most this many intact frames.
_HIDE_MAX = j11.MAX_FRAME // j11.HEADER_LEN + 1
# Collisions allowed over the whole run. Each truncated frame collides with odds 2^-16 (its data
# checksum must happen to match the bytes that follow it); ~600 truncated frames per pass x 19
# passes expect ~0.2 of them. The run is seeded, so this only matters when the seed changes: a
# handful still passes, a reassembler that invents or loses frames on its own does not.
_COLLISIONS_MAX = 3


def _match_passes(got, intact, passes):
    """Walk the frames that came out against `passes` repetitions of the intact ones, in order.

    Every intact frame must come out exactly once per pass, in order. The one documented way to
    lose one: a truncated frame still claims its full length, and when the bytes that follow it
    happen to match its data checksum it comes out as a frame that never went in (a bogus frame),
    hiding the intact frames it swallowed. Those are counted and bounded, nothing else is allowed.
    Returns (per-pass out counts, per-pass hidden counts, bogus frames).
    """
    n = len(intact)
    intact_set = set(intact)
    out = [0] * passes
    hidden = [0] * passes
    bogus = 0
    pos = 0  # index into the intact frames repeated `passes` times
    after_bogus = False
    for i, f in enumerate(got):
        if f not in intact_set:
            bogus += 1
            after_bogus = True
            continue
        if after_bogus:
            # resync on the next intact frame within reach of the bogus one
            skip = 0
            while pos < n * passes and intact[pos % n] != f and skip < _HIDE_MAX:
                hidden[pos // n] += 1
                pos += 1
                skip += 1
            after_bogus = False
        assert pos < n * passes, "frame %d came out after the last pass ended" % i
        assert f == intact[pos % n], (
            "frame %d out: expected intact frame %d of pass %d (lost, duplicated or reordered)"
            % (i, pos % n, pos // n))
        out[pos // n] += 1
        pos += 1
    if after_bogus:  # the run ended on a bogus frame: it may have hidden the last ones
        end = min(n * passes, pos + _HIDE_MAX)
        while pos < end:
            hidden[pos // n] += 1
            pos += 1
    return out, hidden, bogus


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

        def drain():
            while True:
                fr = r.next_frame()
                if fr is None:
                    return
                got.append(j11.encode(fr[0], bytes(fr[1]), UC))

        chunks = 0
        passes = 0
        mv = memoryview(stream)
        while chunks < 100000:  # whole passes over the stream until 100k chunks are fed
            off = 0
            while off < len(stream):
                n = min(rng.choice((1, 1, 2, 3, 5, 8, 13, 64, 200, 1500)), len(stream) - off)
                off += r.feed(mv[off:off + n], now=0)
                chunks += 1
                drain()
            passes += 1
        # a truncated frame at the very end still waits for its claimed length, holding the
        # intact frames behind it: padding that cannot start a frame lets them out
        pad = b"\x00" * j11.MAX_FRAME
        off = 0
        while off < len(pad):
            off += r.feed(pad[off:], now=0)
            drain()
        assert passes >= 10
        out, hidden, bogus = _match_passes(got, intact, passes)
        for p in range(passes):
            assert out[p] + hidden[p] == len(intact), (p, out[p], hidden[p])
        assert bogus <= _COLLISIONS_MAX, bogus
        assert sum(hidden) <= bogus * _HIDE_MAX, (hidden, bogus)
        assert r.stats["frames"] == len(got)
        print("\nj11 reassembler: %d chunks, %d passes of %d intact frames, %d out, "
              "%d bogus, %d hidden" % (chunks, passes, len(intact), len(got), bogus, sum(hidden)))
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


def _udp_rx(rng, dport, n):
    """A well-formed 0x6018 body: source IPv6, ports, PAN, type, encryption, RSSI, payload."""
    payload = bytes(rng.getrandbits(8) for _ in range(n))
    src = bytes(rng.getrandbits(8) for _ in range(16))
    return src + struct.pack(">HHHBBBH", 3610, dport, 0x1234, 0, 2, 0xC8, n) + payload, payload


def test_notification_dispatch_fuzz():
    lines = _quiet()

    async def body():
        m = J11Module(_NullUart())
        s = RadioSession(J11Link(m), {"sm_mac": "001D129012345678", "pana_password": "x" * 12})
        rng = random.Random(7)
        # Mixed in with the noise, well-formed UDP notifications whose fate is known by
        # construction: for our port they are queued (the oldest dropped when the queue is
        # full), for another port ignored. Random bodies are well-formed only with odds below
        # 2^-32 (length field and port must both match), so they count as malformed.
        want_rx = want_other = 0
        last = []
        for _ in range(20000):
            code = rng.choice((0x6018, 0x601A, 0x6038, 0x4051, 0x6028, 0x6019, 0x2008, 0x7777,
                               0xFFFF, 0x2FFF))
            if code == j11.NOTIFY_UDP_RX and rng.random() < 0.3:
                ours = rng.random() < 0.7
                data, payload = _udp_rx(rng, s.udp_port if ours else 4060, rng.randrange(60))
                if ours:
                    want_rx += 1
                    last = (last + [payload])[-4:]
                else:
                    want_other += 1
            else:
                n = rng.choice((0, 1, 9, 10, 21, 27, 30, rng.randrange(200)))
                data = bytes(rng.getrandbits(8) for _ in range(n))
            m._dispatch(code, data)
        assert m.stats["bad_notifications"] > 0
        assert want_rx > 100 and want_other > 50
        assert s.stats["rx"] == want_rx
        assert s.stats["rx_dropped"] == want_rx - len(s._rxq)
        assert [d[3] for d in s._rxq] == last[-len(s._rxq):]  # the newest, in order
        assert all(d[2] == s.udp_port for d in s._rxq)

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
