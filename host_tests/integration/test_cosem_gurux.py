"""Interop: gurux-dlms (GPLv2, test-only) as head-end against an in-process CosemServer."""

import datetime

import pytest
from cosem_fakes import FakeClock
from cosem_fakes import ListView as FakeView
from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from firmware import timeutil
from firmware.cosem.objects import ROLE_MGMT
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer

JST = datetime.timezone(datetime.timedelta(hours=9))
T0 = timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0)  # 2024-04-01T00:00Z = 09:00 JST
SLOT0 = timeutil.slot_of_t2k(T0)


def make_rows(n, skip=()):
    return [
        (SLOT0 + i, 100000 + 7 * i, 2000 + 3 * i, 0x20 if i % 11 == 0 else 0)
        for i in range(n)
        if i not in skip
    ]


def utc_dt(t2k):
    return datetime.datetime.fromtimestamp(timeutil.unix_of_t2k(t2k), datetime.timezone.utc)


class Session:
    """Runs Gurux requests through server.handle_wpdu, following block transfer."""

    def __init__(self, server, client_sap=16, auth=Authentication.NONE, password=None, pdu=None):
        self.server = server
        self.c = GXDLMSClient(True, client_sap, 1, auth, password, InterfaceType.WRAPPER)
        if pdu:
            self.c.maxReceivePDUSize = pdu
        self.frames = 0

    def exchange(self, data):
        reply = GXReplyData()
        for frame in data if isinstance(data, list) else [data]:
            resp = self.server.handle_wpdu(bytes(frame))
            assert resp is not None
            self.frames += 1
            self.c.getData(GXByteBuffer(resp), reply)
            while reply.isMoreData():
                nxt = self.c.receiverReady(reply)
                resp = self.server.handle_wpdu(bytes(nxt))
                assert resp is not None
                self.frames += 1
                self.c.getData(GXByteBuffer(resp), reply)
        return reply

    def associate(self):
        reply = self.exchange(self.c.aarqRequest())
        self.c.parseAareResponse(reply.data)
        return reply

    def read(self, obj, attr):
        reply = self.exchange(self.c.read(obj, attr))
        assert reply.error == 0, reply.getErrorMessage()
        return self.c.updateValue(obj, attr, reply.value)

    def release(self):
        return self.exchange(self.c.releaseRequest())


@pytest.fixture
def env():
    clock = FakeClock(T0 + 3600)
    view = FakeView(make_rows(48, skip=(5, 6)))
    table = default_table(view, {"ldn": "XXX0000000000001"})
    # the LLS tests below use SAP 1 as an LLS management client (default: HLS-GMAC)
    server = CosemServer(table, clock, {"lls_password": "12345678", "mgmt_mechanism": "lls",
                                        "mgmt_password": "12345678"})
    return server, clock, view


def test_associate_public_and_read_clock(env):
    server, clock, _ = env
    s = Session(server)
    s.associate()
    assert server.association(16) is not None
    clk = GXDLMSClock("0.0.1.0.0.255")
    s.read(clk, 2)
    assert clk.time.value == utc_dt(T0 + 3600)
    assert clk.time.value.utcoffset() == datetime.timedelta(hours=9)
    s.read(clk, 3)
    assert clk.timeZone == -540
    s.read(clk, 4)
    assert int(clk.status) == 0
    s.release()
    assert server.association(16) is None


def test_set_clock(env):
    # the management client (LLS here) may set the clock; the public client may not (below)
    server, clock, _ = env
    s = Session(server, client_sap=1, auth=Authentication.LOW, password=b"12345678")
    s.associate()
    clk = GXDLMSClock("0.0.1.0.0.255")
    want = T0 + 86400 + 1234
    clk.time = GXDateTime(utc_dt(want).astimezone(JST))
    reply = s.exchange(s.c.write(clk, 2))
    assert reply.error == 0
    assert clock.t == want


def test_registers_value_and_scaler(env):
    server, _, view = env
    s = Session(server)
    s.associate()
    for ln, col in (("1.0.1.8.0.255", 1), ("1.0.2.8.0.255", 2)):
        reg = GXDLMSRegister(ln)
        s.read(reg, 3)
        s.read(reg, 2)
        assert reg.unit == 30
        assert reg.scaler == 1  # the default: Wh (Gurux returns the multiplier 10^scaler)
        assert reg.value == view.latest()[col] * 100  # raw 0.1 kWh as long64-unsigned Wh


def read_profile_columns(s, pg):
    s.read(pg, 3)
    assert [o.logicalName for o, _ in pg.captureObjects] == [
        "0.0.1.0.0.255",
        "1.0.1.8.0.255",
        "1.0.2.8.0.255",
        "0.0.96.10.1.255",
    ]


def test_full_profile_many_blocks(env):
    server, _, view = env
    s = Session(server, pdu=128)
    s.associate()
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    read_profile_columns(s, pg)
    before = s.frames
    s.read(pg, 2)
    assert s.frames - before > 5  # 46 rows of 28 bytes through 128-byte PDUs
    rows = view.rows_by_index(0, view.count() - 1)
    assert len(pg.buffer) == view.count()
    for got, want in zip(pg.buffer, rows):
        assert got[0].value == utc_dt(timeutil.t2k_of_slot(want[0]))
        assert got[1:] == [want[1] * 100, want[2] * 100, want[3]]


def test_read_rows_by_range_inclusive_and_empty(env):
    server, _, view = env
    s = Session(server, pdu=256)
    s.associate()
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    read_profile_columns(s, pg)
    start = utc_dt(T0 + 2 * 1800).astimezone(JST)
    end = utc_dt(T0 + 9 * 1800).astimezone(JST)
    reply = s.exchange(s.c.readRowsByRange(pg, start, end))
    s.c.updateValue(pg, 2, reply.value)
    slots = [
        timeutil.slot_of_t2k(timeutil.t2k_of_unix(int(r[0].value.timestamp()))) for r in pg.buffer
    ]
    assert slots == [SLOT0 + i for i in (2, 3, 4, 7, 8, 9)]  # 5 and 6 are missing slots
    # a range that falls between boundaries is empty: 01 00, not an error
    start = utc_dt(T0 + 2 * 1800 + 1).astimezone(JST)
    end = utc_dt(T0 + 3 * 1800 - 1).astimezone(JST)
    reply = s.exchange(s.c.readRowsByRange(pg, start, end))
    assert reply.error == 0
    s.c.updateValue(pg, 2, reply.value)
    assert pg.buffer == []


def test_read_rows_by_entry(env):
    server, _, view = env
    s = Session(server)
    s.associate()
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    read_profile_columns(s, pg)
    reply = s.exchange(s.c.readRowsByEntry(pg, 3, 4))
    s.c.updateValue(pg, 2, reply.value)
    want = list(view.rows_by_index(2, 5))
    assert [r[1] for r in pg.buffer] == [w[1] * 100 for w in want]


def test_object_list_and_lls(env):
    server, _, _ = env
    s = Session(server, client_sap=1, auth=Authentication.LOW, password=b"12345678", pdu=128)
    s.associate()
    assert server.association(1).role == ROLE_MGMT
    reply = s.exchange(s.c.getObjectsRequest())
    objs = s.c.parseObjects(reply.data, True)
    lns = sorted(o.logicalName for o in objs)
    assert "1.0.99.1.0.255" in lns and "0.0.1.0.0.255" in lns
    assert len(objs) == 9


def test_bad_lls_password_rejected(env):
    server, _, _ = env
    s = Session(server, client_sap=1, auth=Authentication.LOW, password=b"wrong-pw")
    with pytest.raises(GXDLMSException) as ei:
        s.associate()
    assert ei.value.diagnostic == 13  # authentication-failure
    assert server.association(1) is None


def test_read_list(env):
    server, clock, view = env
    s = Session(server)
    s.associate()
    imp = GXDLMSRegister("1.0.1.8.0.255")
    clk = GXDLMSClock("0.0.1.0.0.255")
    st = GXDLMSData("0.0.96.10.1.255")
    reply = s.exchange(s.c.readList([(imp, 2), (clk, 2), (st, 2)])[0])
    assert reply.value[0] == view.latest()[1] * 100
    assert bytes(reply.value[1]) == bytes.fromhex("07e8040101 0a000000 fde400".replace(" ", ""))
    assert reply.value[2] == view.latest()[3]


def test_clock_unset_reports_invalid_status():
    clock = FakeClock(None)
    server = CosemServer(default_table(FakeView([])), clock, {})
    s = Session(server)
    s.associate()
    clk = GXDLMSClock("0.0.1.0.0.255")
    s.read(clk, 4)
    assert int(clk.status) == 1
    reply = s.exchange(s.c.read(clk, 2))
    assert bytes(reply.value)[-1] == 1  # date-time status: invalid
    # an empty store: no register value yet, empty profile
    reply = s.exchange(s.c.read(GXDLMSRegister("1.0.1.8.0.255"), 2))
    assert reply.error == 2  # temporary-failure
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    read_profile_columns(s, pg)
    s.read(pg, 2)
    assert pg.buffer == []


def test_45_day_profile_through_512_byte_blocks():
    n = 2160
    view = FakeView(make_rows(n))
    server = CosemServer(default_table(view), FakeClock(T0), {})
    s = Session(server, pdu=512)
    s.associate()
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    read_profile_columns(s, pg)
    before = s.frames
    s.read(pg, 2)
    assert len(pg.buffer) == n
    assert s.frames - before >= n * 28 // 500
    assert [r[1] for r in pg.buffer] == [r[1] * 100 for r in make_rows(n)]
    assert pg.buffer[-1][0].value == utc_dt(timeutil.t2k_of_slot(SLOT0 + n - 1))


def test_unit_change_read_back_exactly():
    # records in 0.1 kWh, then 0.01 kWh, then 10 kWh (a 9-digit counter past 32 bits in Wh)
    rows = [(SLOT0, 1234, 5, 0, 0x01), (SLOT0 + 1, 12345, 51, 0, 0x02),
            (SLOT0 + 2, 999999999, 1, 0, 0x0A)]
    server = CosemServer(default_table(FakeView(rows)), FakeClock(T0), {})
    s = Session(server, pdu=128)
    s.associate()
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    read_profile_columns(s, pg)
    s.read(pg, 2)
    assert [r[1:] for r in pg.buffer] == [[123400, 500, 0], [123450, 510, 0],
                                          [9999999990000, 10000, 0]]
    reg = GXDLMSRegister("1.0.1.8.0.255")
    s.read(reg, 3)
    s.read(reg, 2)
    assert (reg.scaler, reg.value) == (1, 9999999990000)


def test_public_client_cannot_set_the_clock_by_default():
    clock = FakeClock(T0)
    server = CosemServer(default_table(FakeView([])), clock, {})
    s = Session(server)
    s.associate()
    clk = GXDLMSClock("0.0.1.0.0.255")
    clk.time = GXDateTime(utc_dt(T0 + 999).astimezone(JST))
    reply = s.exchange(s.c.write(clk, 2))
    assert reply.error == 3  # read-write-denied
    assert clock.t == T0
