"""Security suite 0 interop over loopback UDP: gurux-dlms (GXDLMSSecureClient, glo tags C8/CB)
and dlms-cosem (HighLevelSecurityGmacAuthentication, general-glo DB) as head-ends against a
CosemServer with HLS-GMAC and authenticated encryption. Both libraries are test-only (GPLv2 /
BSL): never shipped with the firmware."""

import datetime
import logging
import socket
import threading

import pytest
import structlog
from cosem_fakes import FakeClock, SynthView
from dlms_cosem import cosem, enumerations
from dlms_cosem.client import DlmsClient as CosemClient
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.exceptions import DlmsClientException
from dlms_cosem.security import HighLevelSecurityGmacAuthentication
from dlms_peers import UdpTransport, cosem_open_push, gurux_push_row
from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient

from firmware import events, timeutil
from firmware.cosem import protection, wrapper
from firmware.cosem import push as cpush
from firmware.cosem.objects import ROLE_MGMT, ROLE_PUBLIC, ROLE_READER
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer
from firmware.hal import aes

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

H = bytes.fromhex
EK = H("000102030405060708090A0B0C0D0E0F")
AK = H("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
WRONG_AK = H("D0D1D2D3D4D5D6D7D8D9DADBDCDDDE00")
SERVER_TITLE = H("5858580000000001")
JST = datetime.timezone(datetime.timedelta(hours=9))
T0 = timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0)
SLOT0 = timeutil.slot_of_t2k(T0)
N_ROWS = 45 * 48
SERVER_IP = "127.0.0.41"
CLIENT_IP = "127.0.0.42"


class FakeState:
    def __init__(self):
        self.values = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = value


class UdpServer:
    """The CosemServer on a loopback UDP socket in a thread (replies through a reply buffer,
    as the terminal sends them)."""

    def __init__(self, server):
        self.server = server
        self.out = server.reply_buffer()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((SERVER_IP, 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            resp = self.server.handle_wpdu(data, peer, self.out)
            if resp is not None:
                self.sock.sendto(resp, peer)

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()


@pytest.fixture
def secure():
    clock = FakeClock(T0 + N_ROWS * 1800)
    view = SynthView(SLOT0, N_ROWS)
    state = FakeState()
    cfg = {
        "lls_password": "reader-pw",
        "mgmt_ek": EK.hex(),
        "mgmt_ak": AK.hex(),
        "max_pdu": 512,
    }
    # the fake view's raw 0.1 kWh counters served unchanged (scaler 2, double-long-unsigned), as
    # the other cosem tests do (cosem_fakes.RAW_TABLE); the default Wh/long64 has its own tests
    table = default_table(view, {"energy_scaler": 2, "energy_type": "u32"})
    server = CosemServer(table, clock, cfg, aes_ecb=aes.ecb, ic_state=state)
    evs = []
    server.event = lambda code, detail=0: evs.append((code, detail))
    u = UdpServer(server)
    yield u, clock, view, evs, state
    u.close()


def utc_dt(t2k):
    return datetime.datetime.fromtimestamp(timeutil.unix_of_t2k(t2k), datetime.timezone.utc)


# --- gurux ----------------------------------------------------------------------------------


class Gurux:
    def __init__(self, addr, sap=1, auth=Authentication.HIGH_GMAC, password=None, ak=AK,
                 title=b"GRX00001"):
        if auth == Authentication.HIGH_GMAC:
            self.c = GXDLMSSecureClient(True, sap, 1, auth, password, InterfaceType.WRAPPER)
            self.c.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
            self.c.ciphering.systemTitle = title
            self.c.ciphering.blockCipherKey = EK
            self.c.ciphering.authenticationKey = ak
        else:
            self.c = GXDLMSClient(True, sap, 1, auth, password, InterfaceType.WRAPPER)
        self.c.maxReceivePDUSize = 512
        self.addr = addr
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((CLIENT_IP, 0))
        self.s.settimeout(3)
        self.sent = []

    def send(self, frame):
        self.sent.append(bytes(frame))
        self.s.sendto(bytes(frame), self.addr)
        return self.s.recv(2048)

    def exchange(self, frames):
        reply = GXReplyData()
        for f in frames if isinstance(frames, list) else [frames]:
            self.c.getData(GXByteBuffer(self.send(f)), reply)
            while reply.isMoreData():
                self.c.getData(GXByteBuffer(self.send(self.c.receiverReady(reply))), reply)
        return reply

    def associate(self):
        self.c.parseAareResponse(self.exchange(self.c.aarqRequest()).data)
        if self.c.isAuthenticationRequired:
            reply = self.exchange(self.c.getApplicationAssociationRequest())
            self.c.parseApplicationAssociationResponse(reply.data)

    def read(self, obj, attr):
        reply = self.exchange(self.c.read(obj, attr))
        assert reply.error == 0, reply.getErrorMessage()
        return self.c.updateValue(obj, attr, reply.value)

    def close(self):
        self.s.close()


def test_gurux_public_reads(secure):
    u, clock, view, _, _ = secure
    g = Gurux(u.addr, sap=16, auth=Authentication.NONE)
    try:
        g.associate()
        assert u.server.association(16, g.s.getsockname()).role == ROLE_PUBLIC
        clk = GXDLMSClock("0.0.1.0.0.255")
        g.read(clk, 2)
        assert clk.time.value == utc_dt(clock.t)
    finally:
        g.close()


def test_gurux_management_hls_auth_enc(secure):
    u, clock, view, evs, state = secure
    g = Gurux(u.addr)
    try:
        g.associate()
        a = u.server.association(1, g.s.getsockname())
        assert a.role == ROLE_MGMT and a.stoc is None
        # every request after the AARQ went out ciphered with a glo tag
        assert g.sent[-1][8] == 0xCB
        objs = g.c.parseObjects(g.exchange(g.c.getObjectsRequest()).data, True)
        assert "1.0.99.1.0.255" in [o.logicalName for o in objs]
        clk = GXDLMSClock("0.0.1.0.0.255")
        g.read(clk, 2)
        assert clk.time.value == utc_dt(clock.t)
        latest = view.latest()
        for ln, col in (("1.0.1.8.0.255", 1), ("1.0.2.8.0.255", 2)):
            reg = GXDLMSRegister(ln)
            g.read(reg, 2)
            assert reg.value == latest[col]
        pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
        g.read(pg, 3)
        g.read(pg, 2)  # 2,160 rows through ~130 protected blocks
        assert len(pg.buffer) == N_ROWS
        assert [r[1] for r in pg.buffer] == [r[1] for r in view.rows_by_index(0, N_ROWS)]
        assert [r[2] for r in pg.buffer] == [r[2] for r in view.rows_by_index(0, N_ROWS)]
        start = utc_dt(timeutil.t2k_of_slot(SLOT0 + 100)).astimezone(JST)
        end = utc_dt(timeutil.t2k_of_slot(SLOT0 + 147)).astimezone(JST)
        reply = g.exchange(g.c.readRowsByRange(pg, start, end))
        rows = reply.value
        assert len(rows) == 48 and rows[0][1] == view.row_at(SLOT0 + 100, 100)[1]
        want = clock.t + 3600
        clk.time = GXDateTime(utc_dt(want).astimezone(JST))
        assert g.exchange(g.c.write(clk, 2)).error == 0
        assert clock.t == want
        g.c.useProtectedRelease = True  # RLRQ with a glo-initiateRequest, RLRE with 28
        g.exchange(g.c.releaseRequest())
        assert u.server.association(1, g.s.getsockname()) is None
    finally:
        g.close()
    assert evs == []
    assert state.values["dlms_ic"] > 100  # our counter was reserved ahead in the state


def test_gurux_replayed_request_rejected(secure):
    u, clock, _, evs, _ = secure
    g = Gurux(u.addr)
    try:
        g.associate()
        g.read(GXDLMSClock("0.0.1.0.0.255"), 2)
        replay = g.sent[-1]
        assert replay[8] == 0xC8
        g.s.sendto(replay, u.addr)
        src, dst, apdu = wrapper.parse(g.s.recv(2048))
        assert apdu[:3] == H("d80106")
        assert evs == [(events.REPLAY_REJECTED, 1)]
    finally:
        g.close()


def test_gurux_wrong_key_rejected(secure):
    u, _, _, evs, _ = secure
    g = Gurux(u.addr, ak=WRONG_AK)
    try:
        with pytest.raises(GXDLMSException):
            g.associate()
        assert u.server.association(1, g.s.getsockname()) is None
        assert evs == [(events.ASSOCIATION_FAILED, 1)]
    finally:
        g.close()


def test_gurux_lls_reader_and_wrong_password(secure):
    u, _, _, evs, _ = secure
    g = Gurux(u.addr, sap=17, auth=Authentication.LOW, password=b"reader-pw")
    bad = Gurux(u.addr, sap=17, auth=Authentication.LOW, password=b"wrong-pw")
    try:
        g.associate()
        assert u.server.association(17, g.s.getsockname()).role == ROLE_READER
        with pytest.raises(GXDLMSException) as ei:
            bad.associate()
        assert ei.value.diagnostic == 13
        assert evs == [(events.ASSOCIATION_FAILED, 17)]
    finally:
        g.close()
        bad.close()


# --- dlms-cosem -----------------------------------------------------------------------------


def cosem_client(addr, ak=AK):
    return CosemClient(
        transport=UdpTransport(addr, 1, local_ip=CLIENT_IP),
        authentication=HighLevelSecurityGmacAuthentication(challenge_length=32),
        encryption_key=EK,
        authentication_key=ak,
        client_system_title=b"uti12345",
        max_pdu_size=512,
    )


def attr_of(interface, obis_text, attr):
    return cosem.CosemAttribute(interface=interface, instance=cosem.Obis.from_string(obis_text),
                                attribute=attr)


def test_dlms_cosem_management_hls_general_glo(secure):
    u, clock, view, evs, _ = secure
    c = cosem_client(u.addr)
    c.connect()
    try:
        c.associate()
        a = u.server.association(1, c.transport.sock.getsockname())
        assert a.role == ROLE_MGMT and a.stoc is None
        assert c.transport.sent[-1][0] == 0xDB  # pass 3 in general-glo-ciphering
        raw = c.get(attr_of(enumerations.CosemInterface.CLOCK, "0.0.1.0.0.255", 2))
        local = utc_dt(clock.t).astimezone(JST)
        assert raw[:8] == H("090c") + bytes((local.year >> 8, local.year & 0xFF, local.month,
                                            local.day, local.isoweekday(), local.hour))
        latest = view.latest()
        raw = c.get(attr_of(enumerations.CosemInterface.REGISTER, "1.0.1.8.0.255", 2))
        assert raw == b"\x06" + latest[1].to_bytes(4, "big")
        raw = c.get(attr_of(enumerations.CosemInterface.REGISTER, "1.0.2.8.0.255", 2))
        assert raw == b"\x06" + latest[2].to_bytes(4, "big")
        profile = attr_of(enumerations.CosemInterface.PROFILE_GENERIC, "1.0.99.1.0.255", 2)
        whole = c.get(profile)
        assert whole[:4] == H("01820870")  # 2,160 rows, many blocks
        assert len(whole) == 4 + 28 * N_ROWS
        for i in (0, 1, 777, N_ROWS - 1):
            row = whole[4 + 28 * i:4 + 28 * (i + 1)]
            want = view.row_at(SLOT0 + i, i)
            assert row[16:21] == b"\x06" + want[1].to_bytes(4, "big")
            assert row[21:26] == b"\x06" + want[2].to_bytes(4, "big")
        clock_col = CaptureObject(
            cosem_attribute=attr_of(enumerations.CosemInterface.CLOCK, "0.0.1.0.0.255", 2)
        )
        start = utc_dt(timeutil.t2k_of_slot(SLOT0 + 10)).astimezone(JST)
        end = utc_dt(timeutil.t2k_of_slot(SLOT0 + 13)).astimezone(JST)
        rng = RangeDescriptor(restricting_object=clock_col, from_value=start, to_value=end)
        part = c.get(profile, access_descriptor=rng)
        assert part[:2] == H("0104") and len(part) == 2 + 4 * 28
        want = clock.t - 7200
        dt = utc_dt(want).astimezone(JST)
        data = H("090c") + dt.year.to_bytes(2, "big") + bytes(
            (dt.month, dt.day, 0xFF, dt.hour, dt.minute, dt.second, 0)) + H("fde400")
        c.set(attr_of(enumerations.CosemInterface.CLOCK, "0.0.1.0.0.255", 2), data)
        assert clock.t == want
        c.release_association()
    finally:
        c.disconnect()
    assert evs == []


def test_dlms_cosem_wrong_key_rejected(secure):
    u, _, _, evs, _ = secure
    c = cosem_client(u.addr, ak=WRONG_AK)
    c.connect()
    try:
        with pytest.raises(DlmsClientException):  # the AARE: authentication failure
            c.associate()
        assert u.server.association(1, c.transport.sock.getsockname()) is None
    finally:
        c.disconnect()
    assert evs == [(events.ASSOCIATION_FAILED, 1)]


# --- protected push -------------------------------------------------------------------------


def test_protected_push_decrypted_by_dlms_cosem_and_gurux(secure):
    """A DataNotification protected with the management keys (push.protect "auto"): both
    libraries decrypt it with EK/AK and our system title and read the row the profile serves;
    dlms-cosem refuses a wrong AK (tag), gurux a wrong EK."""
    u, clock, view, _, _ = secure
    srv = u.server
    enc = cpush.DataNotificationEncoder(srv, 1, protection.push_protector(srv),
                                        fmt=srv.table.energy)
    slot, fwd, rev, status = view.latest()[:4]
    row = (slot, fwd, rev, status, 0x01)
    ic = srv.counter.peek()
    wpdu = bytes(enc.encode(row, 1, 5, clock.t))
    apdu = wpdu[8:]
    assert apdu[:2] == H("db08")
    dn, title, got_ic = cosem_open_push(apdu, EK, AK)
    assert (title, got_ic) == (SERVER_TITLE, ic)
    assert dn.long_invoke_id_and_priority.long_invoke_id == 5
    body = bytes(dn.body)
    plain_row = bytes(cpush.DataNotificationEncoder(srv, 1, fmt=srv.table.energy).encode(
        row, 1, 5, clock.t))[8 + 18:]
    assert body == plain_row  # the profile's row, byte for byte
    assert body[16:21] == b"\x06" + fwd.to_bytes(4, "big")
    assert body[21:26] == b"\x06" + rev.to_bytes(4, "big")
    g_clock, g_fwd, g_rev, g_status = gurux_push_row(apdu, EK, AK, SERVER_TITLE)
    assert (g_clock, g_fwd, g_rev, g_status) == (body[4:16], fwd, rev, status)
    from dlms_cosem.exceptions import DecryptionError

    with pytest.raises(DecryptionError):
        cosem_open_push(apdu, EK, WRONG_AK)
    # gurux's translator does not check the tag (AK only enters the tag): a wrong EK it shows
    with pytest.raises(AssertionError):  # no deciphered DataNotification
        gurux_push_row(apdu, AK, AK, SERVER_TITLE)
