"""Push end to end, under the real `micropython` binary: meter emulator -> terminal firmware ->
J11 module emulator (pty) -> a push receiver on the air side (loopback UDP). With push enabled,
the terminal sends a DataNotification for every slot it stores, live and backfilled from the
meter's history, protected (general-glo-ciphering) with the management client's keys, which the
deployment configures; dlms-cosem and gurux-dlms decrypt and decode each one, and its values
are the meter's."""

import socket
import threading
import time

from dlms_peers import cosem_open_push, gurux_push_row
from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSPushSetup
from gurux_dlms.secure import GXDLMSSecureClient
from loop_thread import LoopThread

from firmware import timeutil
from firmware.radio import j11
from tools import deployment
from tools.deployment import Deployment, wait_until

RATE = 900  # 30 simulated minutes every 2 real seconds
PUSH_HOST = 22  # the push receiver on N.22 of the deployment's loopback /24
PUSH_MAC = "001D12AABBCCDD16"
GURUX_HOST = 20
GURUX_MAC = "001D12AABBCCDD05"
EK = bytes.fromhex(deployment.MGMT_EK)
AK = bytes.fromhex(deployment.MGMT_AK)
SERVER_TITLE = bytes.fromhex(deployment.SERVER_TITLE)


class GuruxManagement:
    """gurux-dlms as the management client (SAP 1, HLS-GMAC, authenticated encryption with the
    deployment's keys) over the emulated radio."""

    def __init__(self, dep):
        self.air = dep.air_addr
        self.c = GXDLMSSecureClient(True, 1, 1, Authentication.HIGH_GMAC, None,
                                    InterfaceType.WRAPPER)
        self.c.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        self.c.ciphering.systemTitle = b"GRX00001"
        self.c.ciphering.blockCipherKey = EK
        self.c.ciphering.authenticationKey = AK
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((dep.addr(GURUX_HOST), 4059))
        self.s.settimeout(3)

    def exchange(self, frames):
        reply = GXReplyData()
        for frame in frames if isinstance(frames, list) else [frames]:
            self.s.sendto(bytes(frame), self.air)
            self.c.getData(GXByteBuffer(self.s.recvfrom(4096)[0]), reply)
        return reply

    def associate(self):
        self.c.parseAareResponse(self.exchange(self.c.aarqRequest()).data)
        if self.c.isAuthenticationRequired:
            reply = self.exchange(self.c.getApplicationAssociationRequest())
            self.c.parseApplicationAssociationResponse(reply.data)

    def close(self):
        self.s.close()


def _ipv6_text(mac):
    return j11.ipv6_text(j11.link_local_of_mac(bytes.fromhex(mac)))


def test_every_slot_pushed_with_the_meters_values():
    bg = LoopThread()
    run = bg.run

    push_cfg = {"enabled": True, "destination": _ipv6_text(PUSH_MAC), "client_sap": 1,
                "randomisation_s": 0, "rate_per_min": 600, "burst": 20,
                "repetition_delay_s": 1}
    # push is not in the bench's heap scenario: its heap comes on top (tools/deployment.py)
    d = Deployment(rate=RATE, heap=deployment.default_heap(push=True),
                   config_overrides={"push": push_cfg})
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((d.addr(PUSH_HOST), 4059))
    rx.settimeout(0.2)
    got = {}  # slot -> (fwd, rev, status), from every datagram received
    datagrams = []
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                data, _ = rx.recvfrom(2048)
            except OSError:
                continue
            datagrams.append(data)

    rt = threading.Thread(target=receive, daemon=True)
    rt.start()
    run(d.start())
    d.module.add_peer(bytes.fromhex(PUSH_MAC), (d.addr(PUSH_HOST), 4059))
    d.module.add_peer(bytes.fromhex(GURUX_MAC), (d.addr(GURUX_HOST), 4059))
    head = d.head_end(out=lambda *a: None)
    try:
        run(head.connect(timeout_s=60), 90)
        run(head.sync_clock())
        first_b = head.clock_set_at - head.clock_set_at % 1800 + 1800
        # three live boundaries after the clock was set
        time.sleep(d.sim.wall_seconds_until(first_b + 3 * 1800 + 300))
        live = [timeutil.slot_of_t2k(first_b + i * 1800) for i in range(3)]
        def pushed_slots():
            return {_slot_of(bytes(cosem_open_push(dg[8:], EK, AK)[0].body[4:16]))
                    for dg in list(datagrams)}

        assert wait_until(lambda: set(live) <= pushed_slots(), 20), d.terminal_log()[-3000:]
        last_ic = 0
        snapshot = list(datagrams)  # the receiver goes on appending
        for dg in snapshot:
            assert dg[:6] == bytes.fromhex("000100010001")  # wPort 1 -> client SAP 1
            assert int.from_bytes(dg[6:8], "big") == len(dg) - 8
            apdu = dg[8:]
            assert apdu[:10] == b"\xdb\x08" + SERVER_TITLE  # general-glo, our system title
            dn, _title, ic = cosem_open_push(apdu, EK, AK)  # dlms-cosem: verified, decrypted
            assert ic > last_ic  # our invocation counter never repeats
            last_ic = ic
            clock, fwd, rev, status = gurux_push_row(apdu, EK, AK, SERVER_TITLE)
            assert bytes(dn.body[4:16]) == clock  # both libraries see the same row
            slot = _slot_of(clock)
            got[slot] = (fwd, rev, status)
        for slot, (fwd, rev, status) in got.items():
            assert (fwd, rev) == d.model.served_at_slot(slot), timeutil.iso(
                timeutil.t2k_of_slot(slot), 540)  # Wh
            assert status in (0, 0x40)  # 0x40: recovered from the meter's history
        backfilled = [s for s in got if got[s][2] == 0x40]
        assert len(got) == len(snapshot), "a slot was pushed twice"
        assert backfilled, "no slot recovered by backfill was pushed"
        assert min(backfilled) < live[0]
        # the push setup object, read by the management client through the radio
        g = GuruxManagement(d)
        try:
            g.associate()
            ps = GXDLMSPushSetup("0.0.25.9.0.255")
            ps.version = 0  # ours is version 0 (gurux defaults to 2)
            for attr in (2, 3, 6):
                reply = g.exchange(g.c.read(ps, attr))
                assert reply.error == 0, reply.getErrorMessage()
                g.c.updateValue(ps, attr, reply.value)
            assert [o[0].logicalName for o in ps.pushObjectList] == [
                "0.0.1.0.0.255", "1.0.1.8.0.255", "1.0.2.8.0.255", "0.0.96.10.1.255"]
            assert ps.destination == "[%s]:4059" % push_cfg["destination"]
            assert ps.numberOfRetries == 3
            g.exchange(g.c.releaseRequest())
        finally:
            g.close()
        assert d.firmware_alive()
        log_text = d.terminal_log()
        assert "push: pushing every slot to" in log_text
        assert "pushes protected" in log_text
        assert "Traceback" not in log_text
    finally:
        stop.set()
        rt.join(2)
        rx.close()
        head.close()
        run(d.stop())
        bg.close()


def _slot_of(c):
    """The slot of a pushed row's clock octets: the slot boundary in JST (deviation -540)."""
    y = (c[0] << 8) | c[1]
    t = timeutil.t2k_from_fields(y, c[2], c[3], c[5], c[6], c[7]) - 540 * 60
    return timeutil.slot_of_t2k(t)
