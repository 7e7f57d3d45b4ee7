"""Push end to end, under the real `micropython` binary: meter emulator -> terminal firmware ->
J11 module emulator (pty) -> a push receiver on the air side (loopback UDP). With push enabled,
the terminal sends a DataNotification for every slot it stores, live and backfilled from the
meter's history; gurux-dlms and dlms-cosem decode each one, and its values are the meter's."""

import asyncio
import re
import socket
import threading
import time

from dlms_cosem.protocol.xdlms import DataNotification
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXDLMSTranslator, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.objects import GXDLMSPushSetup

from firmware import timeutil
from firmware.radio import j11
from tools.deployment import Deployment, wait_until

RATE = 900  # 30 simulated minutes every 2 real seconds
PUSH_HOST = 22  # the push receiver on N.22 of the deployment's loopback /24
PUSH_MAC = "001D12AABBCCDD16"
GURUX_HOST = 20
GURUX_MAC = "001D12AABBCCDD05"
LLS = "12345678"


class GuruxManagement:
    """gurux-dlms as the management client (LLS, SAP 1) over the emulated radio."""

    def __init__(self, dep):
        self.air = dep.air_addr
        self.c = GXDLMSClient(True, 1, 1, Authentication.LOW, LLS, InterfaceType.WRAPPER)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((dep.addr(GURUX_HOST), 4059))
        self.s.settimeout(3)

    def exchange(self, frames):
        reply = GXReplyData()
        for frame in frames if isinstance(frames, list) else [frames]:
            self.s.sendto(bytes(frame), self.air)
            self.c.getData(GXByteBuffer(self.s.recvfrom(4096)[0]), reply)
        return reply

    def close(self):
        self.s.close()


def _ipv6_text(mac):
    ip = j11.link_local_of_mac(bytes.fromhex(mac))
    return ":".join("%x" % ((ip[i] << 8) | ip[i + 1]) for i in range(0, 16, 2))


def _gurux_row(apdu):
    """(clock octets, +A, -A, status) as gurux-dlms decodes the DataNotification."""
    xml = GXDLMSTranslator().pduToXml(GXByteBuffer(apdu))
    assert "<DataNotification>" in xml, xml
    body = xml[xml.index("<NotificationBody>"):]
    clock = re.search(r'<OctetString Value="([0-9A-F]+)"', body).group(1)
    ints = [int(v, 16) for v in re.findall(r'<UInt(?:32|64) Value="([0-9A-F]+)"', body)]
    status = int(re.search(r'<UInt8 Value="([0-9A-F]+)"', body).group(1), 16)
    return bytes.fromhex(clock), ints[0], ints[1], status


def test_every_slot_pushed_with_the_meters_values():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro, timeout_s=30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    push_cfg = {"enabled": True, "destination": _ipv6_text(PUSH_MAC), "client_sap": 16,
                "randomisation_s": 0, "rate_per_min": 600, "burst": 20,
                "repetition_delay_s": 1}
    d = Deployment(rate=RATE, config_overrides={"push": push_cfg,
                                                "dlms": {"lls_password": LLS}})
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
        assert wait_until(lambda: all(
            any(_slot_of(dg) == s for dg in list(datagrams)) for s in live), 20), \
            d.terminal_log()[-3000:]
        for dg in list(datagrams):
            assert dg[:6] == bytes.fromhex("000100010010")  # wPort 1 -> client SAP 16
            assert int.from_bytes(dg[6:8], "big") == len(dg) - 8
            apdu = dg[8:]
            clock, fwd, rev, status = _gurux_row(apdu)
            dn = DataNotification.from_bytes(apdu)
            assert bytes(dn.body[4:16]) == clock  # dlms-cosem sees the same row
            slot = _slot_of(dg)
            got[slot] = (fwd, rev, status)
        for slot, (fwd, rev, status) in got.items():
            assert (fwd, rev) == d.model.at_slot(slot), timeutil.iso(
                timeutil.t2k_of_slot(slot), 540)
            assert status in (0, 0x40)  # 0x40: recovered from the meter's history
        backfilled = [s for s in got if got[s][2] == 0x40]
        assert len(got) == len(datagrams), "a slot was pushed twice"
        assert backfilled, "no slot recovered by backfill was pushed"
        assert min(backfilled) < live[0]
        # the push setup object, read by the management client through the radio
        g = GuruxManagement(d)
        try:
            g.c.parseAareResponse(g.exchange(g.c.aarqRequest()).data)
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
        assert "Traceback" not in log_text
    finally:
        stop.set()
        rt.join(2)
        rx.close()
        head.close()
        run(d.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _slot_of(dg):
    """The slot of a pushed row: its clock is the slot boundary in JST (deviation -540)."""
    c = dg[8 + 18 + 4 : 8 + 18 + 16]  # 0F inv(4) 0C dt(12) | 02 04 09 0C <clock>
    y = (c[0] << 8) | c[1]
    t = timeutil.t2k_from_fields(y, c[2], c[3], c[5], c[6], c[7]) - 540 * 60
    return timeutil.slot_of_t2k(t)
