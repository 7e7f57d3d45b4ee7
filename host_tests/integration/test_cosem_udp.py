"""tools/dlms_client.py against a CosemServer behind a real loopback UDP socket (127.0.0.x)."""

import asyncio
import socket
import threading

import pytest
from cosem_fakes import FakeClock
from cosem_fakes import ListView as FakeView
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import InterfaceType
from gurux_dlms.objects import GXDLMSProfileGeneric

from firmware import log, timeutil
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer
from tools.dlms_client import (
    AssociationRejected,
    AsyncDlmsUdpClient,
    DataAccessError,
    DlmsClient,
    ExceptionResponse,
    StaleResponse,
)

T0 = timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0)
SLOT0 = timeutil.slot_of_t2k(T0)
SERVER_IP = "127.0.0.31"
CLIENT_IP = "127.0.0.32"


ROWS = [(SLOT0 + i, 500000 + 11 * i, 3 * i, 0x20 if i == 3 else 0) for i in range(200) if i != 7]


class UdpServer:
    """CosemServer on a loopback UDP socket in a thread; `drop` loses chosen responses."""

    def __init__(self, server):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((SERVER_IP, 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self.drop = set()  # indexes of responses to drop
        self.n = 0
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            assert peer[0].startswith("127.")
            resp = self.server.handle_wpdu(data)
            self.n += 1
            if resp is not None and self.n not in self.drop:
                self.sock.sendto(resp, peer)

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()


@pytest.fixture
def udp():
    clock = FakeClock(T0 + 7200)
    view = FakeView(ROWS)
    # the public client sets the clock, as the simulation's head-end does (tools/deployment.py)
    server = CosemServer(
        default_table(view, {"public_clock_write": True}), clock,
        {"lls_password": "s3cret-pw", "max_pdu": 512, "mgmt_mechanism": "lls",
         "mgmt_password": "s3cret-pw"},
    )
    u = UdpServer(server)
    yield u, clock, view
    u.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_client_end_to_end(udp):
    u, clock, view = udp

    async def go():
        c = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, timeout_s=1, retries=1, max_pdu=256)
        try:
            conf = await c.associate()
            assert conf == 0x00121D
            assert await c.get_clock() == T0 + 7200
            await c.set_clock(T0 + 99999)
            assert clock.t == T0 + 99999
            value, scaler = await c.get_register("1.0.1.8.0.255")
            assert (value, scaler) == (ROWS[-1][1] * 100, 0)  # 0.1 kWh counters in Wh
            rows = await c.get_profile(T0 + 1800, T0 + 10 * 1800)
            assert [r[0] for r in rows] == [T0 + i * 1800 for i in range(1, 11) if i != 7]
            assert rows[2] == (T0 + 3 * 1800, 50003300, 900, 0x20)
            everything = await c.get_profile(T0 - 86400, T0 + 86400 * 30)
            assert len(everything) == len(ROWS)
            assert [r[1:] for r in everything] == [(r[1] * 100, r[2] * 100, r[3]) for r in ROWS]
            assert await c.get_profile(T0 + 1, T0 + 1799) == []
            await c.release()
            with pytest.raises(ExceptionResponse):
                await c.get_clock()
        finally:
            c.close()

    run(go())


def test_lost_block_response_is_resent(udp):
    u, _, _ = udp
    lines = []
    log.set_sink(lines.append)

    async def go():
        c = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, timeout_s=0.3, retries=2, max_pdu=128)
        try:
            await c.associate()
            u.drop = {u.n + 3, u.n + 6}  # lose the answers to two GET-Next requests
            rows = await c.get_profile(T0, T0 + 30 * 1800)
            assert len(rows) == 30
            assert [r[0] for r in rows] == sorted({r[0] for r in rows})
        finally:
            c.close()

    try:
        run(go())
    finally:
        log.set_sink(None)
    assert sum("re-sending block" in line for line in lines) == 2


def test_lls_client(udp):
    u, _, _ = udp

    async def go():
        c = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, client_sap=1, password="s3cret-pw")
        bad = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, client_sap=1, password="nope-nope")
        try:
            await c.associate()
            await c.action(8, "0.0.1.0.0.255", 6, b"\x10\x00\x3c")  # shift_time +60 s
            with pytest.raises(AssociationRejected) as ei:
                await bad.associate()
            assert ei.value.diagnostic == 13
        finally:
            c.close()
            bad.close()

    run(go())
    assert u.server.clock.t == T0 + 7200 + 60


def test_errors_surface(udp):
    u, _, _ = udp

    async def go():
        c = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, timeout_s=0.5, retries=0)
        try:
            with pytest.raises(ExceptionResponse):
                await c.get_clock()  # before AARQ
            await c.associate()
            with pytest.raises(DataAccessError) as ei:
                await c.get(3, "1.0.3.8.0.255", 2)
            assert ei.value.code == 4
        finally:
            c.close()
        silent = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, server_sap=5, timeout_s=0.2)
        try:
            with pytest.raises(TimeoutError):
                await silent.associate()  # unknown server SAP: dropped, no answer
        finally:
            silent.close()

    run(go())


def test_gurux_over_udp(udp):
    u, _, view = udp
    c = GXDLMSClient(True, 16, 1, interfaceType=InterfaceType.WRAPPER)
    c.maxReceivePDUSize = 200
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((CLIENT_IP, 0))
    s.settimeout(2)

    def exchange(frames):
        reply = GXReplyData()
        for f in frames:
            s.sendto(bytes(f), u.addr)
            c.getData(GXByteBuffer(s.recv(2048)), reply)
            while reply.isMoreData():
                s.sendto(bytes(c.receiverReady(reply)), u.addr)
                c.getData(GXByteBuffer(s.recv(2048)), reply)
        return reply

    try:
        c.parseAareResponse(exchange(c.aarqRequest()).data)
        pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
        c.updateValue(pg, 3, exchange(c.read(pg, 3)).value)
        c.updateValue(pg, 2, exchange(c.read(pg, 2)).value)
        assert [r[1] for r in pg.buffer] == [r[1] * 100 for r in ROWS]  # Wh
        exchange(c.releaseRequest())
    finally:
        s.close()


def test_sans_io_reassembly_matches_server():
    view = FakeView(ROWS)
    server = CosemServer(default_table(view), FakeClock(T0), {})
    cl = DlmsClient(max_pdu=100)
    cl.parse_aare(server.handle_wpdu(cl.build_aarq()))
    req = cl.build_get(7, "1.0.99.1.0.255", 2, DlmsClient.entry_access(5, 9))
    blocks = 0
    while True:
        done, payload = cl.feed_get(server.handle_wpdu(req))
        if done:
            break
        blocks += 1
        req = payload
    assert blocks >= 1
    rows = cl.decode_profile(payload)
    assert [(timeutil.slot_of_t2k(r[0]),) + r[1:] for r in rows] == [
        (r[0], r[1] * 100, r[2] * 100, r[3]) for r in ROWS[4:9]]  # 0.1 kWh counters in Wh


EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")


@pytest.fixture
def udp_secure():
    from firmware.hal import aes

    clock = FakeClock(T0 + 7200)
    view = FakeView(ROWS)
    server = CosemServer(
        default_table(view), clock, {"mgmt_ek": EK.hex(), "mgmt_ak": AK.hex(), "max_pdu": 256},
        aes_ecb=aes.ecb,
    )
    evs = []
    server.event = lambda code, detail=0: evs.append(code)
    u = UdpServer(server)
    yield u, clock, view, evs
    u.close()


@pytest.mark.parametrize("general", (False, True))
def test_hls_gmac_client(udp_secure, general):
    """tools/dlms_client.py as the management client: HLS-GMAC, every request protected (glo
    or general-glo), a profile in many blocks with one response lost (the retry is protected
    again with a new counter), clock set."""
    u, clock, view, evs = udp_secure
    u.drop = {4}  # the 2nd block of the profile read

    async def go():
        c = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, client_sap=1, ek=EK, ak=AK,
                               general=general, timeout_s=0.5)
        try:
            await c.associate()
            assert c.dlms.server_title == bytes.fromhex("5858580000000001")
            rows = await c.get_profile(T0, T0 + 200 * 1800)
            assert [r[1] for r in rows] == [r[1] * 100 for r in ROWS if r[0] <= SLOT0 + 200]
            assert await c.get_clock() == clock.t
            await c.set_clock(T0 + 9000)
            await c.release()
        finally:
            c.close()

    run(go())
    assert clock.t == T0 + 9000
    assert evs == []  # the retry was not taken for a replay


def test_hls_gmac_client_wrong_key(udp_secure):
    u, _, _, evs = udp_secure

    async def go():
        c = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, client_sap=1, ek=EK, ak=bytes(16))
        try:
            with pytest.raises(AssociationRejected) as ei:
                await c.associate()
            assert ei.value.diagnostic == 13
        finally:
            c.close()

    run(go())
    assert evs == [8]


class _Sim:
    def __init__(self, t):
        self.t = t

    def now_t2k(self):
        return self.t


def test_headend_is_the_management_client(udp_secure):
    """tools/headend.py with the deployment's keys: associates with HLS-GMAC, sets the clock
    (a management right) and polls the profile through protected blocks; the public head-end
    (no keys) is refused the clock set."""
    from tools import deployment
    from tools.headend import HeadEnd

    u, clock, view, evs = udp_secure
    sim = _Sim(T0 + 5000)
    keys = {"client_sap": deployment.MGMT_SAP, "ek": bytes.fromhex(deployment.MGMT_EK),
            "ak": bytes.fromhex(deployment.MGMT_AK),
            "system_title": bytes.fromhex(deployment.HEADEND_TITLE)}
    assert (keys["ek"], keys["ak"]) == (EK, AK)  # the fixture's server has the same keys

    async def go():
        h = HeadEnd(sim, local=(CLIENT_IP, 0), server=u.addr, out=lambda *a: None, **keys)
        pub = HeadEnd(sim, local=(CLIENT_IP, 0), server=u.addr, out=lambda *a: None)
        try:
            await h.connect(timeout_s=5)
            assert h.client.dlms.server_title == bytes.fromhex(deployment.SERVER_TITLE)
            await h.sync_clock()
            assert await h.poll(T0, T0 + 20 * 1800, quiet=True) > 0
            assert h.scaler == 0  # Wh
            await pub.connect(timeout_s=5)
            with pytest.raises(DataAccessError) as ei:
                await pub.sync_clock()
            assert ei.value.code == 3  # read-write-denied
        finally:
            h.close()
            pub.close()

    run(go())
    assert clock.t == T0 + 5000
    assert evs == []


def test_repeated_protected_response_is_stale():
    """A protected response seen twice (the radio repeated it) is ignored as stale, never
    taken for a new answer."""
    from firmware.hal import aes

    server = CosemServer(default_table(FakeView(ROWS)), FakeClock(T0 + 7200),
                         {"mgmt_ek": EK.hex(), "mgmt_ak": AK.hex()}, aes_ecb=aes.ecb,
                         rng=lambda n: bytes(n))
    c = DlmsClient(client_sap=1, ek=EK, ak=AK)
    c.parse_aare(server.handle_wpdu(c.build_aarq()))
    assert c.parse_hls_result(server.handle_wpdu(c.build_hls_reply()))
    resp = bytes(server.handle_wpdu(c.build_get(8, "0.0.1.0.0.255", 2)))
    assert c.feed_get(resp)[0] is True
    with pytest.raises(StaleResponse):
        c.feed_get(resp)


def test_clock_set_retry_carries_the_time_of_its_own_sending(udp):
    """set_clock(callable): a retried SET is built again with the time of that attempt (at
    x3600 a timeout is an hour of calendar: re-sending the first attempt's time set a clock
    hours stale in the chaos soak)."""
    u, clock, _view = udp
    times = iter((T0 + 1000, T0 + 2000, T0 + 3000))
    asked = []

    def now():
        asked.append(next(times))
        return asked[-1]

    async def go():
        c = AsyncDlmsUdpClient((CLIENT_IP, 0), u.addr, timeout_s=0.5, retries=2)
        try:
            await c.associate()
            u.drop = {u.n + 1}  # the answer to the first SET is lost
            await c.set_clock(now)
        finally:
            c.close()

    run(go())
    assert asked == [T0 + 1000, T0 + 2000]
    assert clock.t == T0 + 2000
