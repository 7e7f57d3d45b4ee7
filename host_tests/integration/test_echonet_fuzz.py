"""Fuzzing the meter side: decode(), the 0x028E decoders and the client's receive path.

A frame that decodes must re-encode to exactly the same bytes (the format is canonical), so the
decoder can neither accept garbage nor misread a valid frame. Everything else must raise the
module's ValueError subclass. The client's handle() must never raise and never hit its internal
error path (stats["errors"]), and every answer it sends must itself be a valid frame.
"""

import asyncio
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import log
from firmware.meter import drmeter, echonet, profiles
from firmware.meter.client import MeterClient
from firmware.meter.drmeter import MeterDataError
from firmware.meter.echonet import _KNOWN_ESV as KNOWN_ESV
from firmware.meter.echonet import EchonetError
from firmware.meter.node import NodeResponder
from tools.meter_emulator import parse_request

# >= 100k frames per fuzz test in `make test`; `make soak` sets FUZZ_FRAMES higher.
FRAMES = int(os.environ.get("FUZZ_FRAMES", "100000"))

SEEDS = [
    "10 81 00 01 05 FF 01 0E F0 01 62 01 D6 00",
    "10 81 00 02 0E F0 01 05 FF 01 72 01 D6 04 01 02 8E 01",
    "10 81 00 2A 05 FF 01 02 8E 01 62 02 E6 00 E7 00",
    "10 81 00 2A 02 8E 01 05 FF 01 72 02 E6 0B 07 E8 0A 0F 0A 1E 00 00 01 86 A0"
    " E7 0B 07 E8 0A 0F 0A 1E 00 FF FF FF FE",
    "10 81 00 2B 05 FF 01 02 8E 01 61 01 D5 02 00 01",
    "10 81 00 2B 02 8E 01 05 FF 01 71 01 D5 00",
    "10 81 00 05 05 FF 01 02 8E 01 6E 01 D5 02 00 01 02 E1 00 E3 00",
    "10 81 00 07 05 FF 01 0E F0 01 62 08 80 00 82 00 83 00 8A 00 9D 00 9E 00 9F 00 D6 00",
    "10 81 00 09 05 FF 01 05 FF 01 61 01 80 01 31",
    "10 81 00 09 02 8E 01 05 FF 01 74 01 80 01 30",
    "10 81 00 0A 02 8E 01 05 FF 01 52 02 D4 01 01 E6 00",
]
SEEDS = [bytes.fromhex(s.replace(" ", "")) for s in SEEDS]
HIST = (b"\x10\x81\x00\x2c\x02\x8e\x01\x05\xff\x01\x72\x01\xe1\xc2"
        + struct.pack(">H48I", 1, *([5] * 47 + [0xFFFFFFFE])))
SEEDS.append(HIST)
METER = ("127.0.0.2", 3610)


def mutate(rng, frame):
    b = bytearray(frame)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        elif op == 4 and len(b) > 11:
            b[11] = rng.choice((0, 1, 2, 3, 255, min(255, b[11] + 1), max(0, b[11] - 1)))
        elif op == 5 and len(b) > 13:
            i = rng.randrange(12, len(b))
            b[i] = rng.choice((0, 1, 0xC2, 0xFF))
    return bytes(b)


def random_frame(rng):
    r = rng.random()
    if r < 0.7:
        return mutate(rng, rng.choice(SEEDS))
    if r < 0.85:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    return b"\x10\x81" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))


def reencode(f):
    buf = bytearray(2048)
    n = echonet.encode_into(buf, f.tid, f.seoj, f.deoj, f.esv, f.props, f.get_props)
    return bytes(buf[:n])


def check_decode(data):
    try:
        f = echonet.decode(data)
    except EchonetError:
        return False
    assert reencode(f) == data
    return True


def test_seed_frames_are_valid():
    for s in SEEDS:
        assert check_decode(s), s.hex()


def test_decode_seeded_fuzz_100k():
    rng = random.Random(20240401)
    ok = 0
    for _ in range(FRAMES):
        ok += check_decode(random_frame(rng))
    assert 1000 < ok < FRAMES  # both branches were exercised


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_decode_hypothesis(data):
    check_decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_drmeter_decoders_raise_only_their_error(data):
    for fn in (drmeter.decode_unit, drmeter.decode_fixed_time,
               drmeter.decode_history, drmeter.decode_retention, drmeter.decode_time,
               drmeter.decode_date):
        try:
            fn(data)
        except MeterDataError:
            pass
    try:
        echonet.decode_propmap(data)
    except EchonetError:
        pass


class RecordingEndpoint:
    def __init__(self):
        self.sent = 0

    def sendto(self, data, addr):
        echonet.decode(bytes(data))  # every answer must be a valid frame
        self.sent += 1
        return len(data)


def test_client_receive_path_fuzz_100k():
    lines = []
    log.set_sink(lines.append)
    try:
        ep = RecordingEndpoint()
        c = MeterClient(ep, METER, {"timeout_ms": 100, "retries": 0}, NodeResponder())
        rng = random.Random(7)
        buf = bytearray(1472)
        for _ in range(FRAMES):
            data = random_frame(rng)
            buf[:len(data)] = data
            src = METER if rng.random() < 0.7 else ("127.0.0.9", rng.randrange(1, 65536))
            c.handle(buf, len(data), src)
    finally:
        log.set_sink(None)
    s = c.stats
    assert s["errors"] == 0, [x for x in lines if "ERROR" in x][:5]
    assert s["malformed"] > 10_000
    assert s["answered"] > 100 and ep.sent == s["answered"]
    assert len(lines) < 2000  # malformed-frame logging is rate limited


def test_client_fuzz_with_pending_request():
    """Mutated replies while a real request waits: the request either completes with the
    meter's true answer or times out; the client never breaks."""

    async def main():
        ep = QueueEndpoint()
        c = MeterClient(ep, METER, {"timeout_ms": 50, "retries": 0}, NodeResponder(),
                        first_tid=0x29)
        task = asyncio.create_task(c.run())
        rng = random.Random(11)
        good = SEEDS[3]
        got = []
        try:
            for _ in range(200):
                req = asyncio.create_task(c.get((0xE6, 0xE7)))
                await asyncio.sleep(0)
                tid = c._tid
                for _ in range(20):
                    m = mutate(rng, good)
                    if m:  # an empty datagram makes receive() nap 100 ms (a dead ESP32 socket
                        ep.deliver(m, METER)  # reads empty): longer than this request waits
                ep.deliver(good[:2] + struct.pack(">H", tid) + good[4:], METER)
                got.append(await req)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return c, got

    lines = []
    log.set_sink(lines.append)
    try:
        c, got = asyncio.run(main())
    finally:
        log.set_sink(None)
    assert c.stats["errors"] == 0
    want = {0xE6: SEEDS[3][14:25], 0xE7: SEEDS[3][27:38]}
    # a mutated frame can only win if it is a valid reply with the right TID, SEOJ and ESV;
    # most requests must have been completed by the genuine reply
    assert sum(1 for g in got if g == want) > 150


class QueueEndpoint:
    def __init__(self):
        self.q = asyncio.Queue()

    def deliver(self, data, addr):
        self.q.put_nowait((data, addr))

    async def recv(self):
        return await self.q.get()

    async def recvfrom(self, buf):
        data, addr = await self.q.get()
        buf[:len(data)] = data
        return len(data), addr

    def sendto(self, data, addr):
        return len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=8))
def test_scaling_decoders_raise_only_their_error(data):
    for fn in (profiles.decode_coefficient, profiles.decode_digits):
        try:
            v = fn(data)
        except MeterDataError:
            continue
        assert isinstance(v, int) and v >= 1


def test_emulator_parser_agrees_with_firmware_decoder():
    """Two independent parsers (tools/meter_emulator.py and firmware/meter/echonet.py) must
    accept and split the same frames (for the ESVs the firmware knows)."""
    rng = random.Random(99)
    agree = 0
    for _ in range(FRAMES):
        data = random_frame(rng)
        try:
            f = echonet.decode(data)
        except EchonetError:
            f = None
        p = parse_request(data)
        if f is None:
            if p is not None and p[3] in KNOWN_ESV and (p[3] in (0x6E, 0x7E, 0x5E)) == (
                    p[5] is not None):
                raise AssertionError("emulator accepts what firmware rejects: %s" % data.hex())
            continue
        assert p is not None, data.hex()
        tid, seoj, deoj, esv, props, get_props = p
        assert (tid, seoj, deoj, esv) == (f.tid, f.seoj, f.deoj, f.esv)
        assert props == [(e, bytes(d)) for e, d in f.props]
        assert (get_props is None) == (f.get_props is None)
        if get_props is not None:
            assert get_props == [(e, bytes(d)) for e, d in f.get_props]
        agree += 1
    assert agree > 1000


class ScriptedMeter:
    """In-memory meter with a random property table and random quirks, for the read() fuzz."""

    def __init__(self, ep, table, cap, drop_over, poison, rng):
        self.ep, self.table, self.cap, self.drop_over, self.poison = (ep, table, cap,
                                                                       drop_over, poison)
        self.rng = rng

    def __call__(self, data, addr):
        f = echonet.decode(data)
        epcs = f.epcs()
        if (self.drop_over is not None and len(epcs) > self.drop_over) or (
                self.poison & set(epcs)):
            return
        props = [(e, self.table.get(e, b"")) for e in epcs]
        ok = all(len(v) for _, v in props)
        if self.cap is not None:
            props = props[:self.cap]
        buf = bytearray(1472)
        n = echonet.encode_into(buf, f.tid, f.deoj, f.seoj, 0x72 if ok else 0x52, props)
        self.ep.deliver(bytes(buf[:n]), METER)


class MemEndpoint(QueueEndpoint):
    def __init__(self):
        super().__init__()
        self.meter = None

    def sendto(self, data, addr):
        self.meter(bytes(data), addr)
        return len(data)


def _check_quirky(epcs, readable, cap, drop_over, poison):
    table = {e: bytes((e, len(epcs))) for e in readable}

    async def main():
        ep = MemEndpoint()
        c = MeterClient(ep, METER, {"timeout_ms": 50, "retries": 0}, NodeResponder())
        ep.meter = ScriptedMeter(ep, table, cap, drop_over, poison, None)
        task = asyncio.create_task(c.run())
        try:
            got = await c.read(epcs)
            again = await c.read(epcs)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return c, got, again

    log.set_sink(lambda line: None)
    try:
        c, got, again = asyncio.run(main())
    finally:
        log.set_sink(None)
    assert c.stats["errors"] == 0
    for e in epcs:
        if e in poison:
            assert got[e] is None
        else:
            assert got[e] == table.get(e), (hex(e), cap, drop_over, poison)
        assert again[e] == got[e]
    if drop_over is not None and not poison and len(epcs) > drop_over:
        assert c.cap <= drop_over


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_read_converges_on_any_quirky_meter(data):
    """Whatever capacity limits and poison EPCs a meter has, read() returns every readable
    non-poison EPC's exact value, None for the rest, and learns a cap that works."""
    epcs = data.draw(st.lists(st.integers(0x80, 0xFF), min_size=1, max_size=24, unique=True))
    readable = data.draw(st.sets(st.sampled_from(epcs)))
    cap = data.draw(st.one_of(st.none(), st.integers(1, 8)))
    drop_over = data.draw(st.one_of(st.none(), st.integers(1, 8)))
    poison = data.draw(st.sets(st.sampled_from(epcs), max_size=2))
    _check_quirky(epcs, readable, cap, drop_over, poison)


# Found by the test above: a meter that silently drops every Get holding 0x9F (the first
# liveness probe), or 0x80 too, was taken for dead; the probe now goes on to 0x80 and then to
# the other EPCs being read.
@pytest.mark.parametrize("epcs,poison", [
    ([0x80, 0x81, 0xA0, 0xA1, 0x9F, 0x82], {0xA1, 0x9F}),
    ([0x80, 0x9F, 0x81], {0x9F}),
    ([0x80, 0x9F, 0x81], {0x80, 0x9F}),  # both usual probes: another probe answers
    ([0x80, 0x9F], {0x80, 0x9F}),  # everything asked is dropped: 0x82 shows the meter alive
    ([0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0x9F], {0xA0, 0x9F}),
])
def test_meter_dropping_the_property_map_probe_is_alive(epcs, poison):
    _check_quirky(epcs, set(), None, None, poison)


def test_frames_read_back_to_back_split_exactly():
    """A meter's own socket is read with readinto, which on MicroPython joins queued datagrams:
    each_frame() must hand every valid frame over on its own, whatever the mix."""
    rnd = random.Random(7)
    seeds = SEEDS  # valid frames, a 206-byte history reply among them
    for _ in range(min(FRAMES // 10, 20000)):
        picks = [rnd.choice(seeds) for _ in range(rnd.randint(1, 4))]
        buf = bytearray(b"".join(picks))
        got = []

        def keep(v, n, _addr, out=got):
            out.append(bytes(v[:n]))

        echonet.each_frame(buf, len(buf), keep, None)
        assert got == picks


@settings(max_examples=min(FRAMES // 50, 5000), deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(min_value=0, max_value=300))
def test_frame_end_never_raises_and_always_advances(data, cut):
    """Any bytes (garbage, cut frames): frame_end stays within the buffer and moves forward,
    so the split loop always ends; what it cannot delimit reaches decode(), which rejects it."""
    n = min(cut, len(data))
    off = 0
    steps = 0
    while off < n:
        end = echonet.frame_end(data, off, n)
        assert off < end <= n
        off = end
        steps += 1
    assert steps <= n
    got = []
    echonet.each_frame(data, n, lambda v, k, a: got.append(k), None)
    assert sum(got) == n
