"""Fuzz the COSEM server and its codecs: no input may raise out of handle_wpdu/handle_apdu or hit
the server's internal-error path, and every codec fails only with its own ValueError subclass."""

import random
import struct
import time

from cosem_fakes import FakeClock
from cosem_fakes import ListView as FakeView
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import log, timeutil
from firmware.cosem import acse, axdr, wrapper
from firmware.cosem import xdlms as x
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer

T0 = timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0)
SLOT0 = timeutil.slot_of_t2k(T0)
H = bytes.fromhex


AARQ_PUBLIC = H("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
AARQ_LLS = H(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400007E1F04B0"
)
SEEDS = [
    AARQ_PUBLIC,
    AARQ_LLS,
    H("6203800100"),
    H("6215800100BE10040E01000000065F1F0400007E1F04B0"),
    H("c001c100080000010000ff0200"),
    H("c001c1000f0000280000ff0200"),
    H("c001c100070100630100ff0200"),
    H("c002c100000001"),
    H("c003c10300030100010800ff020000030100020800ff020000080000010000ff0200"),
    H(
        "c001c100070100630100ff0201010204020412000809060000010000ff0f02120000"
        "090c07e80401ff01000000fde400090c07e80401ff03000000fde4000100"
    ),
    H("c001c100070100630100ff020102020406000000010600000030120001120000"),
    H("c101c100080000010000ff0200090c07e80401ff0c1e0000fde400"),
    H("c301c100080000010000ff06011000" + "1e"),
    H("c301c100070100630100ff02010f00"),
    H("d80101"),
]


def make_server(pdu=128):
    rows = [(SLOT0 + i, 1000 + i, i, i & 0xFF) for i in range(300) if i % 17]
    table = default_table(FakeView(rows))
    return CosemServer(table, FakeClock(T0), {"lls_password": "12345678", "max_pdu": pdu,
                                              "mgmt_mechanism": "lls",
                                              "mgmt_password": "12345678"})


def mutate(rng, b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 2 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 3:
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4 and len(b) > 2:
            i = rng.randrange(len(b) - 1)
            b[i] = rng.choice((0x00, 0x7F, 0x80, 0x81, 0x82, 0xFF))
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def test_seeded_mutation_fuzz():
    rng = random.Random(62056)
    internal = []
    kinds = {}

    def sink(line):
        if "internal error" in line:
            internal.append(line)

    log.set_sink(sink)
    try:
        servers = [make_server(64), make_server(512)]
        count = 0
        t_end = time.monotonic() + 30
        while count < 24000 and time.monotonic() < t_end:
            srv = servers[count & 1]
            sap = rng.choice((16, 16, 16, 1, 17))
            if rng.random() < 0.5:  # keep the fuzzer mostly inside an association
                srv.handle_apdu(AARQ_PUBLIC if sap != 1 else AARQ_LLS, sap)
            apdu = mutate(rng, rng.choice(SEEDS))
            if count % 3 == 0:
                data = wrapper.build(sap, 1, apdu)
                if rng.random() < 0.5:
                    data = mutate(rng, data)
                resp = srv.handle_wpdu(data)
            else:
                resp = srv.handle_apdu(apdu, sap)
            assert resp is None or isinstance(resp, bytes)
            if resp:
                k = resp[8] if count % 3 == 0 else resp[0]
                kinds[k] = kinds.get(k, 0) + 1
            if resp is not None and len(resp) > 0 and resp[0] == 0xC4:
                a = srv.association(sap)
                assert a is None or len(resp) <= a.client_pdu
            count += 1
        assert count >= 20000, count
    finally:
        log.set_sink(None)
    assert internal == []
    # the mutations reach every layer: AAREs, GET/SET/ACTION responses and exceptions
    for k in (0x61, 0x63, 0xC4, 0xC5, 0xC7, 0xD8):
        assert kinds.get(k, 0) > 50, (hex(k), kinds)


def test_block_sequences_random_acks():
    """Random GET-Next numbers during long GETs: only defined answers, never a stale state."""
    rng = random.Random(4059)
    srv = make_server(64)
    for _ in range(300):
        srv.handle_apdu(AARQ_PUBLIC, 16)
        r = srv.handle_apdu(SEEDS[6], 16)
        n = 1
        for _ in range(rng.randint(1, 40)):
            ack = n if rng.random() < 0.8 else rng.choice((n - 1, n + 1, 0, 2**32 - 1))
            r = srv.handle_apdu(bytes((0xC0, 2, 0xC1)) + struct.pack(">I", ack), 16)
            assert r[:3] == H("c402c1")
            got = struct.unpack(">I", r[4:8])[0]
            if r[8] == 1:
                assert r[3] == 1 and r[9] in (
                    x.DATA_BLOCK_NUMBER_INVALID,
                    x.NO_LONG_GET_IN_PROGRESS,
                )
                break
            if ack == n:
                assert got == n + 1
                n = got
            else:
                assert ack == n - 1 and got == n  # re-sent
            if r[3] == 1:
                break


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_axdr_reader_only_raises_axdr_error(data):
    for fn in (lambda: axdr.Reader(data).value(), lambda: axdr.Reader(data).skip()):
        try:
            fn()
        except axdr.AxdrError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_acse_and_xdlms_parsers_only_raise_their_errors(data):
    mv = memoryview(data)
    for fn, err in (
        (lambda: acse.parse_aarq(mv), acse.AcseError),
        (lambda: acse.parse_rlrq(mv), acse.AcseError),
        (lambda: acse.parse_initiate_request(data), acse.AcseError),
        (lambda: x.parse_request(mv), x.XdlmsError),
        (lambda: wrapper.parse(data), wrapper.WrapperError),
    ):
        try:
            fn()
        except err:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=12), st.sampled_from((-1, 1)))
def test_parse_datetime_only_raises_axdr_error(b, sign):
    try:
        t = axdr.parse_datetime(b, sign, 540)
    except axdr.AxdrError:
        return
    # whatever parses must re-encode to the same local fields
    dev = struct.unpack(">h", b[9:11])[0]
    out = axdr.datetime_bytes(
        t, dev if dev != -32768 else -540, 540 if dev == -32768 else (-dev if sign < 0 else dev)
    )
    assert out[:4] == b[:4] and out[5:8] == b[5:8]


def test_ciphered_mutation_fuzz():
    """Suite 0: mutated ciphered AARQs, HLS pass 3 and protected requests (tags, lengths, SC,
    counters, bodies) into a server with an HLS-GMAC management client. No internal error; an
    association never survives a failed authentication; nothing mutated is served."""
    from cosem_secure import STOC, SecClient, make_secure_server

    from firmware.cosem import security as sec

    rng = random.Random(4059_0)
    internal = []

    def sink(line):
        if "internal error" in line:
            internal.append(line)

    log.set_sink(sink)
    try:
        srv, _, _, evs = make_secure_server()
        c = SecClient(srv)
        count = 0
        served = 0
        t_end = time.monotonic() + 30
        reqs = [SEEDS[i] for i in (4, 5, 6, 7, 8, 11, 12)]
        while count < 20000 and time.monotonic() < t_end:
            a = srv.association(1)
            if a is None or rng.random() < 0.02:
                c.associate()
                a = srv.association(1)
            kind = rng.randrange(10)
            if kind == 0:  # a mutated ciphered AARQ: rejected, or a fresh pending association
                aarq = mutate(rng, c.aarq())
                r = srv.handle_apdu(aarq, 1)
                a = srv.association(1)
                if r is not None and r[:1] == b"\x61" and b"\xa2\x03\x02\x01\x00" not in r:
                    assert a is None
            elif kind == 1:  # pass 3 with a broken reply: the association ends
                c.associate(check=False)
                c.stoc = STOC
                reply = sec.hls_reply(c.keys, c.title, c.take(), STOC)
                bad = mutate(rng, reply)
                action = H("C301C1000F0000280000FF0101") + bytes((0x09, len(bad) & 0x7F)) + bad
                r = srv.handle_apdu(c.protect(action), 1)
                b = srv.association(1)
                if bad != reply:
                    assert b is None, r
            else:  # protected requests: mutated, replayed, or general form
                c.general = rng.random() < 0.5
                c.sc = rng.choice((0x30, 0x30, 0x10))
                ic = c.ic + 1 if rng.random() < 0.8 else rng.randrange(1, c.ic + 1)
                orig = c.protect(rng.choice(reqs), ic=ic)
                data = mutate(rng, orig)
                r = srv.handle_apdu(data, 1)
                assert r is None or isinstance(r, bytes)
                if r and r[0] not in (0xD8, 0x63) and data != orig:  # (a plain RLRQ releases)
                    served += 1
                c.ic = max(c.ic, ic)  # a frame the server accepted consumed its counter
            count += 1
        assert count >= 20000, count
    finally:
        log.set_sink(None)
    assert internal == []
    assert served == 0
    assert (8, 1) in evs and (9, 1) in evs  # association failures and replays were reported


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_security_parse_only_raises_security_error(data):
    from cosem_secure import AK, CLIENT_TITLE, EK

    from firmware.cosem import security as sec
    from firmware.hal import aes

    keys = sec.Keys(aes.ecb, EK, AK)
    mv = memoryview(data)
    try:
        f = sec.parse(mv)
        sec.open_into(keys, f.title or CLIENT_TITLE, mv, f, bytearray(128), 0)
    except sec.SecurityError:
        pass
