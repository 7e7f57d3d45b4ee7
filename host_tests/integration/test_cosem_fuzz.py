"""Fuzz the COSEM server and its codecs: no input may raise out of handle_wpdu/handle_apdu or hit
the server's internal-error path, and every codec fails only with its own ValueError subclass."""

import os
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


# >= 100k malformed APDUs in `make test`; `make soak` sets COSEM_FUZZ_APDUS=1000000.
APDUS = int(os.environ.get("COSEM_FUZZ_APDUS", "100000"))
# ciphered requests (suite 0): 20,000 in make test, more in make soak; bounded in time too
CIPHERED = int(os.environ.get("COSEM_FUZZ_CIPHERED", "20000"))

PEER_A = (b"\xfe\x80" + bytes(14), 4059)
PEER_B = (b"\xfe\x80" + bytes(13) + b"\x07", 4059)
AARQ_LLS_WRONG = AARQ_LLS.replace(b"12345678", b"12345679")
AARQ_CIPHERED = AARQ_PUBLIC.replace(H("0760857405080101"), H("0760857405080103"))
DT_FROM = "090c07e80401ff01000000fde400"  # 2024-04-01 01:00 JST
DT_TO = "090c07e80401ff03000000fde400"
CLOCK_COL = "020412000809060000010000ff0f02120000"
# real requests of every service the server knows (plain APDUs): the mutation seeds
SERVICE_SEEDS = {
    "aarq": [AARQ_PUBLIC, AARQ_LLS, AARQ_LLS_WRONG, AARQ_CIPHERED,
             AARQ_PUBLIC[:-2] + H("0040"), AARQ_PUBLIC[:-2] + H("0200")],
    "rlrq": [H("6203800100"), H("6215800100BE10040E01000000065F1F0400007E1F04B0"), H("6200")],
    "get": [
        H("c001c100080000010000ff0200"),  # clock time
        H("c001c100080000010000ff0300"),
        H("c001c1000f0000280000ff0200"),  # object list
        H("c001c1000f0000280000ff0300"),
        H("c001c100070100630100ff0200"),  # whole profile
        H("c001c100070100630100ff0300"),  # capture objects
        H("c001c100030100010800ff0200"),  # +A
        H("c001c100030100020800ff0300"),  # -A scaler/unit
        H("c001c100010000600a01ff0200"),  # profile status
        # range selector (date-time bounds, then Unix seconds, then chosen columns)
        H("c001c100070100630100ff020101" + "0204" + CLOCK_COL + DT_FROM + DT_TO + "0100"),
        H("c001c100070100630100ff020101" + "0204" + CLOCK_COL
          + "0654e4c440" + "06ffffffff" + "0101" + CLOCK_COL),
        # entry selector
        H("c001c100070100630100ff020102020406000000010600000030120001120000"),
        H("c001c100070100630100ff020102020406000000050600000000120002120003"),
    ],
    "next": [H("c002c100000001"), H("c002c100000002"), H("c002c1ffffffff"), H("c002c100000000")],
    "list": [
        H("c003c10300030100010800ff020000030100020800ff020000080000010000ff0200"),
        H("c003c102000701006301" + "00ff020102020406000000010600000004120001120000"
          + "00080000010000ff0200"),
        H("c003c1020007010063010" + "0ff0200000f0000280000ff0200"),
    ],
    "set": [
        H("c101c100080000010000ff0200090c07e80401ff0c1e0000fde400"),
        H("c101c100080000010000ff0201" + "0100" + "090c07e80401ff0c1e0000fde400"),
        H("c101c100030100010800ff020006000003e8"),
    ],
    "action": [
        H("c301c100080000010000ff06011000" + "1e"),
        H("c301c100080000010000ff0100"),
        H("c301c100080000010000ff030100" + "00"),
        H("c301c100070100630100ff01010f00"),
    ],
}
ALL_SEEDS = [b for group in SERVICE_SEEDS.values() for b in group] + SEEDS
# bytes that are tags or length forms somewhere in ACSE, xDLMS or A-XDR
TAGS = (0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x09, 0x0A, 0x0F, 0x10, 0x11, 0x12, 0x14, 0x15, 0x16,
        0x19, 0x28, 0x60, 0x61, 0x62, 0x63, 0x80, 0x8A, 0x8B, 0xA1, 0xA2, 0xAC, 0xBE, 0xC0, 0xC1,
        0xC3, 0xC4, 0xC8, 0xCB, 0xD8, 0xDB)
LENGTHS = (0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF)
RESPONSE_TAGS = (0x61, 0x63, 0xC4, 0xC5, 0xC7, 0xD8)


def mutate_apdu(rng, b):
    """A structure-blind but DLMS-flavoured mutation: tags and length forms where tags and
    lengths could be, truncations, bit flips, splices, bogus block numbers and invoke bytes."""
    b = bytearray(b)
    for _ in range(rng.randint(1, 3)):
        n = len(b)
        op = rng.randrange(11)
        if op == 0 and n:  # bit flip
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # broken tag
            b[rng.randrange(n)] = rng.choice(TAGS)
        elif op == 2 and n:  # broken length
            i = rng.randrange(n)
            b[i] = rng.choice(LENGTHS + ((b[i] + 1) & 0xFF, (b[i] - 1) & 0xFF))
        elif op == 3 and n:  # truncation
            del b[rng.randrange(n):]
        elif op == 4:  # insertion
            pos = rng.randrange(n + 1)
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif op == 5 and n > 1:  # deletion inside
            i = rng.randrange(n - 1)
            del b[i:i + rng.randint(1, min(8, n - i))]
        elif op == 6 and n > 4:  # duplicated piece
            i = rng.randrange(n - 2)
            k = rng.randint(1, min(16, n - i))
            b[i:i] = b[i:i + k]
        elif op == 7:  # splice with another request
            other = rng.choice(ALL_SEEDS)
            b = b[:rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1):]
        elif op == 8 and n >= 7 and b[0] == 0xC0:  # bogus block number / counter
            struct.pack_into(">I", b, 3, rng.choice(
                (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, rng.randrange(1 << 32))))
        elif op == 9 and n >= 3:  # another service / choice / invoke byte
            k = rng.randrange(3)
            b[k] = rng.choice(TAGS) if k == 0 else rng.randrange(256)
        else:  # trailing garbage
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))
    return bytes(b)


def _aare_result(resp):
    i = resp.find(b"\xa2\x03\x02\x01")
    return resp[i + 4] if i >= 0 else None


class _Sink:
    def __init__(self):
        self.internal = []
        self.lines = 0

    def __call__(self, line):
        self.lines += 1
        if "internal error" in line:
            self.internal.append(line)


def test_seeded_mutation_fuzz():
    """COSEM_FUZZ_APDUS (100,000) mutated requests of every service against servers with live
    associations and long GETs in progress: every answer is a defined APDU within the client's
    PDU, nothing reaches the server's internal-error path, and a rejected AARQ never leaves an
    association behind (in particular a wrong LLS password after a good association)."""
    rng = random.Random(62056)
    sink = _Sink()
    kinds = {}
    services = {}
    log.set_sink(sink)
    t0 = time.monotonic()
    try:
        servers = [make_server(64), make_server(512)]
        outs = [s.reply_buffer() for s in servers]
        names = list(SERVICE_SEEDS)
        for count in range(APDUS):
            k = count & 1
            srv = servers[k]
            sap = rng.choice((16, 16, 16, 1, 1, 17))
            peer = PEER_A if rng.random() < 0.8 else PEER_B
            good = AARQ_LLS if sap == 1 else AARQ_PUBLIC
            r = rng.random()
            if r < 0.3:  # keep the fuzzer mostly inside an association ...
                srv.handle_apdu(good, sap, peer)
                if rng.random() < 0.3:  # ... often with a long GET in progress
                    srv.handle_apdu(SERVICE_SEEDS["get"][rng.choice((2, 4, 11))], sap, peer)
            name = rng.choice(names)
            services[name] = services.get(name, 0) + 1
            apdu = mutate_apdu(rng, rng.choice(SERVICE_SEEDS[name]))
            via_wpdu = count % 3 == 0
            if via_wpdu:
                data = wrapper.build(sap, 1, apdu)
                if rng.random() < 0.2:
                    data = mutate_apdu(rng, data)
                resp = srv.handle_wpdu(data, peer, outs[k])
                if resp is not None:
                    resp = bytes(resp)
                    assert len(resp) <= srv.max_wpdu
                    src, dst, body = wrapper.parse(resp)  # a well-formed WPDU back
                    assert src == 1
                    sap = dst  # the client SAP the (maybe mutated) request came from
                    resp = bytes(body)
            else:
                resp = srv.handle_apdu(apdu, sap, peer)
            assert resp is None or isinstance(resp, bytes)
            if not resp:
                continue
            tag = resp[0]
            assert tag in RESPONSE_TAGS, (apdu.hex(), resp.hex())
            kinds[tag] = kinds.get(tag, 0) + 1
            a = srv.association(sap, peer)
            if tag == 0xC4:
                assert a is not None and len(resp) <= a.client_pdu
            if tag == 0x61:  # an AARQ was answered: accepted <=> associated
                accepted = _aare_result(resp) == 0
                assert accepted == (a is not None), (apdu.hex(), resp.hex())
                if not accepted and rng.random() < 0.5:  # and it really is gone
                    g = srv.handle_apdu(SERVICE_SEEDS["get"][0], sap, peer)
                    assert g == H("d80101"), g
            if tag == 0x63:
                assert a is None
            if count % 5000 == 0:  # a wrong password always ends a good association
                assert _aare_result(srv.handle_apdu(AARQ_LLS, 1, peer)) == 0
                assert srv.association(1, peer) is not None
                assert _aare_result(srv.handle_apdu(AARQ_LLS_WRONG, 1, peer)) == 1
                assert srv.association(1, peer) is None
    finally:
        log.set_sink(None)
    dt = time.monotonic() - t0
    print("cosem fuzz: %d APDUs in %.1f s (%.0f/s), %d log lines, answers %s"
          % (APDUS, dt, APDUS / dt, sink.lines, {hex(k): v for k, v in sorted(kinds.items())}))
    assert sink.internal == [], sink.internal[:3]
    # the mutations reach every service and every kind of answer
    assert len(services) == len(SERVICE_SEEDS)
    if APDUS >= 20000:
        for k in RESPONSE_TAGS:
            assert kinds.get(k, 0) > 50, (hex(k), kinds)


def test_wrong_password_ends_the_association():
    """An association never survives a failed authentication: a wrong LLS password (or a
    mangled authentication value) from the same client releases the good association first."""
    srv = make_server(512)
    log.set_sink(lambda line: None)
    try:
        for bad in (AARQ_LLS_WRONG, AARQ_LLS.replace(b"12345678", b"1234567"),
                    AARQ_LLS[:40], AARQ_LLS.replace(b"\xac\x0a\x80\x08", b"\xac\x0a\x81\x08"),
                    AARQ_PUBLIC.replace(b"\xa1\x09", b"\xa1\x09\x8a\x02\x07\x80", 1)):
            assert _aare_result(srv.handle_apdu(AARQ_LLS, 1, PEER_A)) == 0
            assert srv.handle_apdu(SERVICE_SEEDS["get"][0], 1, PEER_A)[:4] == H("c401c100")
            srv.handle_apdu(SERVICE_SEEDS["get"][4], 1, PEER_A)  # a transfer in progress too
            r = srv.handle_apdu(bad, 1, PEER_A)
            assert _aare_result(r) != 0, (bad.hex(), r.hex())
            assert srv.association(1, PEER_A) is None
            assert srv.handle_apdu(SERVICE_SEEDS["get"][0], 1, PEER_A) == H("d80101")
            assert srv.handle_apdu(H("c002c100000001"), 1, PEER_A) == H("d80101")
    finally:
        log.set_sink(None)


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
        t_end = time.monotonic() + max(30, CIPHERED / 400)
        reqs = [SEEDS[i] for i in (4, 5, 6, 7, 8, 11, 12)]
        while count < CIPHERED and time.monotonic() < t_end:
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
        assert count >= CIPHERED, count
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
