"""Security suite 0 end to end, under the real `micropython` binary, over the radio path of the
twin (meter emulator -> terminal -> J11 module emulator -> peers on the air side, loopback UDP):

- gurux-dlms as the public client reads the clock and the registers; its SET of the clock is
  denied (read-write-denied);
- gurux-dlms (GXDLMSSecureClient, glo tags) and dlms-cosem (general-glo DB) as the management
  client with HLS-GMAC and authenticated encryption read the object list, the clock, +A, -A, the
  whole profile (45 days of history backfilled at first boot, many blocks) and a range, with the
  meter's values, and set the clock;
- push is on: every DataNotification arrives general-glo-ciphered and dlms-cosem and gurux-dlms
  decrypt it with the management keys; its values are the meter's;
- a replayed ciphered request, a wrong authentication key and a wrong LLS password are each
  rejected and found in the event log (read over the radio), the client SAP as detail;
- no key or password text reaches the terminal's log.
"""

import asyncio
import datetime
import logging
import socket
import threading
import time

import pytest
import structlog
from dlms_cosem import cosem, enumerations
from dlms_cosem.client import DlmsClient as CosemClient
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.security import HighLevelSecurityGmacAuthentication
from dlms_cosem.utils import parse_as_dlms_data
from dlms_peers import UdpTransport, cosem_open_push, gurux_push_row
from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient

from firmware import events, timeutil
from firmware.cosem import wrapper
from firmware.radio import j11
from tools import deployment
from tools.deployment import Deployment, wait_until

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

RATE = 900  # 30 simulated minutes every 2 real seconds
EK = bytes.fromhex(deployment.MGMT_EK)
AK = bytes.fromhex(deployment.MGMT_AK)
WRONG_AK = AK[:-1] + b"\x00"
SERVER_TITLE = bytes.fromhex(deployment.SERVER_TITLE)
READER_PW = "Rdr-pw-7394"
WRONG_PW = "Wrong-pw-51"
HISTORY_ROWS = 45 * 48  # the meter emulator keeps 45 days (0xD3); the terminal backfills them
GURUX_HOST, GURUX_MAC = 20, "001D12AABBCCDD05"
PUSH_HOST, PUSH_MAC = 22, "001D12AABBCCDD16"
COSEM_HOST, COSEM_MAC = 23, "001D12AABBCCDD17"
JST = datetime.timezone(datetime.timedelta(hours=9))
PROFILE = "1.0.99.1.0.255"


def _ipv6_text(mac):
    return j11.ipv6_text(j11.link_local_of_mac(bytes.fromhex(mac)))


def utc_dt(t2k):
    return datetime.datetime.fromtimestamp(timeutil.unix_of_t2k(t2k), datetime.timezone.utc)


def slot_of_clock(c):
    """The slot of a row's clock octets (local JST date-time, deviation -540)."""
    y = (c[0] << 8) | c[1]
    return timeutil.slot_of_t2k(timeutil.t2k_from_fields(y, c[2], c[3], c[5], c[6], c[7])
                                - 540 * 60)


class PushReceiver:
    """The push destination on the air side: every datagram, from a thread."""

    def __init__(self, addr):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(addr)
        self.s.settimeout(0.2)
        self.datagrams = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.datagrams.append(self.s.recvfrom(2048)[0])
            except OSError:
                continue

    def close(self):
        self.stop.set()
        self.t.join(2)
        self.s.close()


@pytest.fixture(scope="module")
def dep():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    # push every slot to the receiver as the management client (SAP 1): protected ("auto")
    push_cfg = {"enabled": True, "destination": _ipv6_text(PUSH_MAC), "client_sap": 1,
                "randomisation_s": 0, "rate_per_min": 1200, "burst": 20,
                "repetition_delay_s": 1}
    # push is not in the bench's heap scenario: its heap comes on top (tools/deployment.py)
    d = Deployment(rate=RATE, heap=deployment.default_heap(push=True),
                   config_overrides={"push": push_cfg, "dlms": {"lls_password": READER_PW}})
    d.loop = loop
    d.t0 = time.monotonic()
    d.rx = PushReceiver((d.addr(PUSH_HOST), 4059))
    run(d, d.start())
    for mac, host in ((GURUX_MAC, GURUX_HOST), (PUSH_MAC, PUSH_HOST), (COSEM_MAC, COSEM_HOST)):
        d.module.add_peer(bytes.fromhex(mac), (d.addr(host), 4059))
    head = d.head_end(out=lambda *a: None)
    d.head = head
    try:
        run(d, head.connect(timeout_s=60), 90)
        run(d, head.sync_clock())
        d.t_clock = time.monotonic()

        # the terminal backfills the meter's 45 days of history after the clock is set
        def entries():
            try:
                v = run(d, head.client.get(7, PROFILE, 7))
            except Exception:  # noqa: BLE001 - a lost exchange: ask again
                return 0
            return int.from_bytes(v[1:], "big")

        assert wait_until(lambda: entries() >= HISTORY_ROWS, 90, step=1.0), (
            entries(), d.terminal_log()[-3000:])
        d.t_history = time.monotonic() - d.t_clock
        yield d
    finally:
        head.close()
        d.rx.close()
        run(d, d.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def run(dep, coro, timeout_s=60):
    return asyncio.run_coroutine_threadsafe(coro, dep.loop).result(timeout_s)


class GuruxRadio:
    """gurux-dlms over the J11 emulator's air side (source port 4059 of a registered peer)."""

    def __init__(self, dep, sap=16, auth=Authentication.NONE, password=None, ak=AK,
                 title=b"GRX00001"):
        if auth == Authentication.HIGH_GMAC:
            self.c = GXDLMSSecureClient(True, sap, 1, auth, password, InterfaceType.WRAPPER)
            self.c.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
            self.c.ciphering.systemTitle = title
            self.c.ciphering.blockCipherKey = EK
            self.c.ciphering.authenticationKey = ak
        else:
            self.c = GXDLMSClient(True, sap, 1, auth, password, InterfaceType.WRAPPER)
        self.air = dep.air_addr
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((dep.addr(GURUX_HOST), 4059))
        self.s.settimeout(5)
        self.sent = []
        self.frames = 0

    def send(self, frame):
        self.sent.append(bytes(frame))
        self.frames += 1
        self.s.sendto(bytes(frame), self.air)
        return self.s.recvfrom(4096)[0]

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

    def release(self):
        self.exchange(self.c.releaseRequest())

    def close(self):
        self.s.close()


def latest_candidates(dep, col):
    """The register's value: the newest stored slot's, or the one before (a boundary may pass
    between the read and this computation)."""
    now = dep.sim.now_t2k()
    b = now - 60 - (now - 60) % 1800
    s = timeutil.slot_of_t2k(b)
    return {dep.model.served_at_slot(s)[col], dep.model.served_at_slot(s - 1)[col],
            dep.model.served_at_slot(s + 1)[col]}


def check_rows(dep, rows):
    """rows: [(slot, fwd, rev)]; each value is the meter's (Wh); the slots ascend with no gap."""
    for slot, fwd, rev in rows:
        assert (fwd, rev) == dep.model.served_at_slot(slot), timeutil.iso(
            timeutil.t2k_of_slot(slot), 540)
    slots = [r[0] for r in rows]
    assert slots == list(range(slots[0], slots[0] + len(slots))), "gap in the profile"


def test_public_client_reads_and_may_not_set_the_clock(dep):
    g = GuruxRadio(dep)
    try:
        g.associate()
        clk = GXDLMSClock("0.0.1.0.0.255")
        g.read(clk, 2)
        got = timeutil.t2k_of_unix(int(clk.time.value.timestamp()))
        assert abs(got - dep.sim.now_t2k()) <= 5 * RATE
        for ln, col in (("1.0.1.8.0.255", 0), ("1.0.2.8.0.255", 1)):
            reg = GXDLMSRegister(ln)
            g.read(reg, 3)
            g.read(reg, 2)
            assert int(reg.value) in latest_candidates(dep, col)
        before = dep.sim.now_t2k()
        clk.time = GXDateTime(utc_dt(before + 7200).astimezone(JST))
        reply = g.exchange(g.c.write(clk, 2))
        assert reply.error == 3  # read-write-denied
        g.read(clk, 2)  # unchanged: still true time, not two hours ahead
        got = timeutil.t2k_of_unix(int(clk.time.value.timestamp()))
        assert abs(got - dep.sim.now_t2k()) <= 5 * RATE
        g.release()
    finally:
        g.close()


def test_gurux_management_client_hls_gmac(dep):
    g = GuruxRadio(dep, sap=1, auth=Authentication.HIGH_GMAC)
    try:
        g.associate()
        assert g.sent[-1][8] == 0xCB  # HLS pass 3 went out ciphered (glo action)
        objs = g.c.parseObjects(g.exchange(g.c.getObjectsRequest()).data, True)
        names = [o.logicalName for o in objs]
        for ln in ("0.0.1.0.0.255", "1.0.1.8.0.255", "1.0.2.8.0.255", PROFILE,
                   "0.0.99.98.0.255", "0.0.25.9.0.255"):
            assert ln in names
        clk = GXDLMSClock("0.0.1.0.0.255")
        g.read(clk, 2)
        assert abs(timeutil.t2k_of_unix(int(clk.time.value.timestamp()))
                   - dep.sim.now_t2k()) <= 5 * RATE
        for ln, col in (("1.0.1.8.0.255", 0), ("1.0.2.8.0.255", 1)):
            reg = GXDLMSRegister(ln)
            g.read(reg, 3)
            assert reg.scaler == 1  # Wh (gurux gives 10^scaler)
            g.read(reg, 2)
            assert int(reg.value) in latest_candidates(dep, col)
        pg = GXDLMSProfileGeneric(PROFILE)
        g.read(pg, 3)
        frames = g.frames
        g.read(pg, 2)  # the whole profile
        blocks = g.frames - frames
        rows = [(timeutil.slot_of_t2k(timeutil.t2k_of_unix(int(r[0].value.timestamp()))),
                 int(r[1]), int(r[2])) for r in pg.buffer]
        assert len(rows) >= HISTORY_ROWS
        assert blocks > 100
        check_rows(dep, rows)
        dep.gurux_profile = (len(rows), blocks)
        mid = rows[len(rows) // 2][0]
        start = utc_dt(timeutil.t2k_of_slot(mid)).astimezone(JST)
        end = utc_dt(timeutil.t2k_of_slot(mid + 47)).astimezone(JST)
        reply = g.exchange(g.c.readRowsByRange(pg, start, end))
        assert reply.error == 0
        g.c.updateValue(pg, 2, reply.value)
        part = [(timeutil.slot_of_t2k(timeutil.t2k_of_unix(int(r[0].value.timestamp()))),
                 int(r[1]), int(r[2])) for r in pg.buffer]
        assert [r[0] for r in part] == list(range(mid, mid + 48))
        check_rows(dep, part)
        # set the clock (a management right): to true time, as the smart meter does
        clk.time = GXDateTime(utc_dt(dep.sim.now_t2k()).astimezone(JST))
        assert g.exchange(g.c.write(clk, 2)).error == 0
        g.read(clk, 2)
        assert abs(timeutil.t2k_of_unix(int(clk.time.value.timestamp()))
                   - dep.sim.now_t2k()) <= 5 * RATE
        g.c.useProtectedRelease = True
        g.release()
    finally:
        g.close()


def _attr(interface, ln, attr):
    return cosem.CosemAttribute(interface=interface, instance=cosem.Obis.from_string(ln),
                                attribute=attr)


def _cosem_client(dep):
    return CosemClient(
        transport=UdpTransport(dep.air_addr, 1, local_ip=dep.addr(COSEM_HOST), local_port=4059,
                               timeout_s=5),
        authentication=HighLevelSecurityGmacAuthentication(challenge_length=32),
        encryption_key=EK,
        authentication_key=AK,
        client_system_title=b"uti12345",
        max_pdu_size=512,
    )


def test_dlms_cosem_management_client_hls_gmac_general_glo(dep):
    c = _cosem_client(dep)
    c.connect()
    try:
        c.associate()
        assert c.transport.sent[-1][0] == 0xDB  # pass 3 in general-glo-ciphering
        ci = enumerations.CosemInterface
        objs = parse_as_dlms_data(c.get(_attr(ci.ASSOCIATION_LN, "0.0.40.0.0.255", 2)))
        lns = {bytes(o[2]) for o in objs}
        assert bytes((1, 0, 99, 1, 0, 255)) in lns and bytes((0, 0, 1, 0, 0, 255)) in lns
        raw = parse_as_dlms_data(c.get(_attr(ci.CLOCK, "0.0.1.0.0.255", 2)))
        assert abs(slot_of_clock(raw) - timeutil.slot_of_t2k(dep.sim.now_t2k())) <= 1
        for ln, col in (("1.0.1.8.0.255", 0), ("1.0.2.8.0.255", 1)):
            raw = c.get(_attr(ci.REGISTER, ln, 2))
            assert raw[0] == 0x15  # long64-unsigned Wh
            assert parse_as_dlms_data(raw) in latest_candidates(dep, col)
        profile = _attr(ci.PROFILE_GENERIC, PROFILE, 2)
        n_sent = len(c.transport.sent)
        whole = parse_as_dlms_data(c.get(profile))
        blocks = len(c.transport.sent) - n_sent
        rows = [(slot_of_clock(r[0]), r[1], r[2]) for r in whole]
        assert len(rows) >= HISTORY_ROWS
        assert blocks > 100
        check_rows(dep, rows)
        dep.cosem_profile = (len(rows), blocks)
        mid = rows[len(rows) // 3][0]
        clock_col = CaptureObject(cosem_attribute=_attr(ci.CLOCK, "0.0.1.0.0.255", 2))
        start = utc_dt(timeutil.t2k_of_slot(mid)).astimezone(JST)
        end = utc_dt(timeutil.t2k_of_slot(mid + 9)).astimezone(JST)
        rng = RangeDescriptor(restricting_object=clock_col, from_value=start, to_value=end)
        part = [(slot_of_clock(r[0]), r[1], r[2])
                for r in parse_as_dlms_data(c.get(profile, access_descriptor=rng))]
        assert [r[0] for r in part] == list(range(mid, mid + 10))
        check_rows(dep, part)
        dt = utc_dt(dep.sim.now_t2k()).astimezone(JST)
        data = bytes.fromhex("090c") + dt.year.to_bytes(2, "big") + bytes(
            (dt.month, dt.day, 0xFF, dt.hour, dt.minute, dt.second, 0)) + bytes.fromhex("fde400")
        c.set(_attr(ci.CLOCK, "0.0.1.0.0.255", 2), data)
        raw = parse_as_dlms_data(c.get(_attr(ci.CLOCK, "0.0.1.0.0.255", 2)))
        assert abs(slot_of_clock(raw) - timeutil.slot_of_t2k(dep.sim.now_t2k())) <= 1
        c.release_association()
    finally:
        c.disconnect()


def test_pushes_are_protected_and_carry_the_meters_values(dep):
    assert wait_until(lambda: len(dep.rx.datagrams) >= 10, 30), dep.terminal_log()[-3000:]
    datagrams = list(dep.rx.datagrams)
    last_ic = 0
    got = {}
    for i, dg in enumerate(datagrams):
        assert dg[:6] == bytes.fromhex("000100010001")  # wPort 1 -> management SAP 1
        apdu = dg[8:]
        assert apdu[:10] == b"\xdb\x08" + SERVER_TITLE  # general-glo-ciphering, our title
        assert b"\x02\x04\x09\x0c" not in apdu  # the row is not in clear
        dn, title, ic = cosem_open_push(apdu, EK, AK)
        assert title == SERVER_TITLE and ic > last_ic  # our counter never repeats
        last_ic = ic
        body = bytes(dn.body)
        slot = slot_of_clock(body[4:16])
        vals = parse_as_dlms_data(body)
        got[slot] = (vals[1], vals[2], vals[3])
        if i < 5:  # gurux-dlms decrypts and decodes the same notification
            clock, fwd, rev, status = gurux_push_row(apdu, EK, AK, SERVER_TITLE)
            assert (clock, fwd, rev, status) == (body[4:16], vals[1], vals[2], vals[3])
    for slot, (fwd, rev, status) in got.items():
        assert (fwd, rev) == dep.model.served_at_slot(slot)
        assert status in (0, 0x40)
    dep.pushes = (len(datagrams), len(got))


def test_replay_wrong_key_and_wrong_password_are_rejected_and_logged(dep):
    before = len(dep.terminal_log())
    g = GuruxRadio(dep, sap=1, auth=Authentication.HIGH_GMAC, title=b"GRX00002")
    try:
        g.associate()
        g.read(GXDLMSClock("0.0.1.0.0.255"), 2)
        replay = g.sent[-1]
        assert replay[8] == 0xC8  # a ciphered GET
        g.s.sendto(replay, dep.air_addr)
        _src, _dst, apdu = wrapper.parse(g.s.recvfrom(4096)[0])
        assert bytes(apdu[:3]) == bytes.fromhex("d80106")  # invocation counter error
    finally:
        g.close()
    bad = GuruxRadio(dep, sap=1, auth=Authentication.HIGH_GMAC, ak=WRONG_AK,
                     title=b"GRX00003")
    try:
        with pytest.raises(GXDLMSException):
            bad.associate()
    finally:
        bad.close()
    bad = GuruxRadio(dep, sap=17, auth=Authentication.LOW, password=WRONG_PW.encode())
    try:
        with pytest.raises(GXDLMSException) as ei:
            bad.associate()
        assert ei.value.diagnostic == 13
    finally:
        bad.close()
    new = dep.terminal_log()[before:]
    assert "replay from client 1" in new
    assert "association of client 1 failed" in new
    # the event log, read over the radio by the reading client (LLS, the right password)
    g = GuruxRadio(dep, sap=17, auth=Authentication.LOW, password=READER_PW.encode())
    try:
        g.associate()
        pg = GXDLMSProfileGeneric("0.0.99.98.0.255")
        g.read(pg, 3)
        g.read(pg, 2)
        found = {(int(r[1]), int(r[2])) for r in pg.buffer}
        g.release()
    finally:
        g.close()
    assert (events.REPLAY_REJECTED, 1) in found
    assert (events.ASSOCIATION_FAILED, 1) in found  # the wrong key
    assert (events.ASSOCIATION_FAILED, 17) in found  # the wrong password


def test_no_secret_in_the_terminal_log(dep):
    text = dep.terminal_log()
    assert "pushes protected" in text
    for secret in (deployment.MGMT_EK, deployment.MGMT_AK, READER_PW, WRONG_PW):
        assert secret.upper() not in text and secret.lower() not in text and secret not in text
    assert "Traceback" not in text and "MemoryError" not in text
    assert dep.firmware_alive()
    print("\nsecurity twin: history backfilled in %.1f s after the clock set; gurux profile %r "
          "(rows, frames), dlms-cosem profile %r (rows, frames), pushes %r (datagrams, slots); "
          "%.1f s in all" % (dep.t_history, getattr(dep, "gurux_profile", None),
                             getattr(dep, "cosem_profile", None), getattr(dep, "pushes", None),
                             time.monotonic() - dep.t0))
    print("\n".join(line for line in text.splitlines() if "heap" in line))
