"""Interop: gurux-dlms (test-only) reads the event log (docs/events.md §8) of an in-process
CosemServer as the management client: capture objects, the whole buffer through small blocks, a
range and an entry selection, the event code object; the public client is refused."""

import pytest
from cosem_fakes import FakeClock
from cosem_fakes import ListView as FakeView
from event_fakes import MemFs
from gurux_dlms.enums import Authentication
from gurux_dlms.objects import GXDLMSData, GXDLMSProfileGeneric
from test_cosem_gurux import JST, Session, utc_dt

from firmware import events as ev
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer
from firmware.store.eventlog import EventLog

T0 = 765244800  # 2024-04-01T00:00Z


@pytest.fixture
def env():
    clock = FakeClock(None)
    events = EventLog("ev", 64, clock, fs=MemFs(), burst=0)
    events.mount()
    events.record(ev.POWER_UP, 1)  # before the clock was set
    for i in range(20):
        clock.t = T0 + 600 * i
        events.record(ev.CLOCK_SET if i % 2 else ev.BACKFILL_DONE, -i * 7)
    server = CosemServer(default_table(FakeView([]), None, events), clock,
                         {"mgmt_mechanism": "lls", "mgmt_password": "12345678"})
    return server, events


def mgmt(server, pdu=128):
    s = Session(server, client_sap=1, auth=Authentication.LOW, password=b"12345678", pdu=pdu)
    s.associate()
    return s


def read_columns(s, pg):
    s.read(pg, 3)
    assert [(int(o.objectType), o.logicalName) for o, _ in pg.captureObjects] == [
        (8, "0.0.1.0.0.255"), (1, "0.0.96.11.0.255"), (1, "0.0.96.11.128.255")]


def test_whole_event_log_through_small_blocks(env):
    server, events = env
    s = mgmt(server)
    pg = GXDLMSProfileGeneric("0.0.99.98.0.255")
    read_columns(s, pg)
    before = s.frames
    s.read(pg, 2)
    assert s.frames - before > 3
    assert len(pg.buffer) == 21
    first = pg.buffer[0]
    assert first[1:] == [ev.POWER_UP, 1]
    for i, row in enumerate(pg.buffer[1:]):
        assert row[0].value == utc_dt(T0 + 600 * i)
        assert row[1:] == [ev.CLOCK_SET if i % 2 else ev.BACKFILL_DONE, -i * 7]
    s.read(pg, 7)
    assert pg.entriesInUse == 21
    s.read(pg, 8)
    assert pg.profileEntries == 128


def test_range_and_entry(env):
    server, _ = env
    s = mgmt(server)
    pg = GXDLMSProfileGeneric("0.0.99.98.0.255")
    read_columns(s, pg)
    start = utc_dt(T0 + 600 * 3).astimezone(JST)
    end = utc_dt(T0 + 600 * 5).astimezone(JST)
    reply = s.exchange(s.c.readRowsByRange(pg, start, end))
    s.c.updateValue(pg, 2, reply.value)
    assert [r[2] for r in pg.buffer] == [-21, -28, -35]  # both bounds inclusive
    start = utc_dt(T0 + 600 * 3 + 1).astimezone(JST)
    end = utc_dt(T0 + 600 * 4 - 1).astimezone(JST)
    reply = s.exchange(s.c.readRowsByRange(pg, start, end))
    assert reply.error == 0
    s.c.updateValue(pg, 2, reply.value)
    assert pg.buffer == []
    reply = s.exchange(s.c.readRowsByEntry(pg, 2, 3))  # entries 2..4 (Gurux: index, count)
    s.c.updateValue(pg, 2, reply.value)
    assert [r[1:] for r in pg.buffer] == [[ev.BACKFILL_DONE, 0], [ev.CLOCK_SET, -7],
                                         [ev.BACKFILL_DONE, -14]]
    code = GXDLMSData("0.0.96.11.0.255")
    s.read(code, 2)
    assert code.value == ev.CLOCK_SET


def test_public_client_refused(env):
    server, _ = env
    s = Session(server)
    s.associate()
    reply = s.exchange(s.c.read(GXDLMSProfileGeneric("0.0.99.98.0.255"), 2))
    assert reply.error == 3  # read-write-denied
