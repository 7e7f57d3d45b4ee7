"""End to end, under the real `micropython` binary: meter emulator -> terminal firmware -> J11
module emulator (pty) -> head-ends on loopback UDP. Checks that an independent DLMS client
(gurux-dlms, GPLv2, test-only) reads the same values the meter emulator served, and that bad input
at each boundary is logged clearly while the terminal keeps running."""

import asyncio
import datetime
import socket
import time

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import InterfaceType
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from loop_thread import LoopThread

from firmware import timeutil
from tools import deployment
from tools.deployment import Deployment, wait_until

RATE = 900  # 30 simulated minutes every 2 real seconds
GURUX_HOST = 20  # gurux on N.20 of the deployment's loopback /24
ROGUE_HOST = 21
GURUX_MAC = "001D12AABBCCDD05"


@pytest.fixture(scope="module")
def dep():
    # The emulators live on an event loop in a background thread, so that blocking peers (gurux's
    # socket loop below) and the loop's own head-end can both talk to the terminal.
    bg = LoopThread()
    d = Deployment(rate=RATE)  # heap: the bench's minimum plus a margin (tools/deployment.py)
    d.loop = bg.loop
    run(d, d.start())
    d.module.add_peer(bytes.fromhex(GURUX_MAC), (d.addr(GURUX_HOST), 4059))
    head = d.head_end(out=lambda *a: None)
    d.head = head
    try:
        run(d, head.connect(timeout_s=60), 90)
        run(d, head.sync_clock())
        # let three boundaries pass so that the terminal has stored values
        first_b = head.clock_set_at - head.clock_set_at % 1800 + 1800
        d.first_b = first_b
        time.sleep(d.sim.wall_seconds_until(first_b + 3 * 1800 + 300))
        yield d
    finally:
        head.close()
        run(d, d.stop())
        bg.close()


def run(dep, coro, timeout_s=30):
    return asyncio.run_coroutine_threadsafe(coro, dep.loop).result(timeout_s)


def test_values_delivered_equal_meter_values(dep):
    now = dep.sim.now_t2k()
    run(dep, dep.head.poll(dep.first_b, now, quiet=True))
    b = dep.first_b
    checked = 0
    while b + 60 <= now - 300:
        slot = timeutil.slot_of_t2k(b)
        assert slot in dep.head.received, "slot %s missing" % timeutil.iso(b, 540)
        fwd, rev, status = dep.head.received[slot]
        assert (fwd, rev) == dep.model.served_at_slot(slot)  # raw 0.1 kWh counters, in Wh
        assert status == 0
        checked += 1
        b += 1800
    assert checked >= 3
    assert dep.firmware_alive()
    # the head-end is the management client; the keys the deployment configured never reach
    # the terminal's log, in either case
    log_text = dep.terminal_log()
    assert "client 1 associated (HLS-GMAC passed)" in log_text
    for key in (deployment.MGMT_EK, deployment.MGMT_AK):
        assert key.upper() not in log_text and key.lower() not in log_text
    # the meter's replies came through its own connected socket (hal.udp.PeerEndpoint)
    assert "meter0: own socket for %s:3610" % dep.meter_addr[0] in dep.terminal_log()


class GuruxRadioHeadEnd:
    """gurux-dlms generating and parsing every APDU; bytes carried over loopback UDP to the J11
    emulator's air socket, i.e. through the emulated radio and the terminal's UART."""

    def __init__(self, dep):
        self.air = dep.air_addr
        self.c = GXDLMSClient(True, 16, 1, interfaceType=InterfaceType.WRAPPER)
        self.c.maxReceivePDUSize = 256  # force block transfer for the profile
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((dep.addr(GURUX_HOST), 4059))
        self.s.settimeout(3)

    def exchange(self, frames):
        reply = GXReplyData()
        for frame in frames if isinstance(frames, list) else [frames]:
            self.s.sendto(bytes(frame), self.air)
            self.c.getData(GXByteBuffer(self.s.recvfrom(4096)[0]), reply)
            while reply.isMoreData():
                self.s.sendto(bytes(self.c.receiverReady(reply)), self.air)
                self.c.getData(GXByteBuffer(self.s.recvfrom(4096)[0]), reply)
        return reply

    def read(self, obj, attr):
        reply = self.exchange(self.c.read(obj, attr))
        assert reply.error == 0, reply.getErrorMessage()
        return self.c.updateValue(obj, attr, reply.value)

    def close(self):
        self.s.close()


def test_gurux_reads_clock_registers_and_profile_through_the_radio(dep):
    g = GuruxRadioHeadEnd(dep)
    try:
        reply = g.exchange(g.c.aarqRequest())
        g.c.parseAareResponse(reply.data)
        clock = GXDLMSClock("0.0.1.0.0.255")
        g.read(clock, 2)
        got = int(clock.time.value.timestamp())
        assert abs(timeutil.t2k_of_unix(got) - dep.sim.now_t2k()) <= 3 * RATE  # within 3 s real
        latest_slot = None
        for ln, col in (("1.0.1.8.0.255", 0), ("1.0.2.8.0.255", 1)):
            reg = GXDLMSRegister(ln)
            g.read(reg, 3)
            assert reg.scaler == 1  # the default: Wh (scaler 0; Gurux gives 10^scaler)
            g.read(reg, 2)
            # the register holds the newest stored slot's value, which the profile also shows
            latest_slot = timeutil.slot_of_t2k(
                dep.sim.now_t2k() - 60 - (dep.sim.now_t2k() - 60) % 1800)
            want = dep.model.served_at_slot(latest_slot)[col]
            candidates = (want, dep.model.served_at_slot(latest_slot - 1)[col])
            # long64-unsigned Wh: the raw 0.1 kWh counter times 100
            assert int(reg.value) in candidates
        pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
        g.read(pg, 3)  # capture objects first, so the buffer can be decoded
        start = datetime.datetime.fromtimestamp(timeutil.unix_of_t2k(dep.first_b),
                                                datetime.timezone.utc)
        end = datetime.datetime.fromtimestamp(timeutil.unix_of_t2k(dep.first_b + 3 * 1800),
                                              datetime.timezone.utc)
        reply = g.exchange(g.c.readRowsByRange(pg, start, end))
        assert reply.error == 0
        g.c.updateValue(pg, 2, reply.value)
        assert len(pg.buffer) == 4
        for i, row in enumerate(pg.buffer):
            slot = timeutil.slot_of_t2k(dep.first_b + i * 1800)
            assert int(row[0].value.timestamp()) == timeutil.unix_of_t2k(dep.first_b + i * 1800)
            assert (int(row[1]), int(row[2])) == dep.model.served_at_slot(slot)
        g.exchange(g.c.releaseRequest())
    finally:
        g.close()


def test_bad_input_at_each_boundary_is_logged_and_survived(dep):
    before = dep.terminal_log()
    # 1. LAN: a truncated ECHONET Lite frame and a garbage datagram to the terminal's port 3610
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((dep.addr(ROGUE_HOST), 0))
    # cut after ESV
    s.sendto(bytes.fromhex("1081000a05ff01028e0162"), (dep.terminal_ip, 3610))
    # PDC overrun
    s.sendto(bytes.fromhex("10810001028e0105ff017201e60b07e8"), (dep.terminal_ip, 3610))
    # 2. DLMS: a malformed APDU inside a valid wrapper, and a truncated wrapper
    s.close()
    g = GuruxRadioHeadEnd(dep)
    try:
        reply = g.exchange(g.c.aarqRequest())  # associated, so the APDU reaches the parser
        g.c.parseAareResponse(reply.data)
        g.s.sendto(bytes.fromhex("0001001000010005c001c10008"), dep.air_addr)  # GET cut short
        assert g.s.recvfrom(4096)[0][8:9] in (b"\xd8", b"\xc4")  # an error answer, not silence
        g.s.sendto(bytes.fromhex("000100100001"), dep.air_addr)  # truncated wrapper header
    finally:
        g.close()
    assert wait_until(lambda: "WPDU too short" in dep.terminal_log()[len(before):], 10)
    # 3. radio UART: a frame with a bad checksum, and garbage between frames
    dep.module.set_faults(bad_header_checksum=1, garbage=2)
    # the head-end keeps working through it (its requests are what carry the UART faults)
    lost = []
    for _ in range(3):
        try:
            run(dep, dep.head.poll(dep.first_b, dep.sim.now_t2k(), quiet=True))
        except Exception as e:  # an exchange hit by a corrupted frame is lost, not the terminal
            lost.append(e)
    assert len(lost) < 3
    assert wait_until(lambda: "discarded" in dep.terminal_log()[len(before):], 10)
    new = dep.terminal_log()[len(before):]
    assert "dropped malformed datagram from %s" % dep.addr(ROGUE_HOST) in new
    assert "discarded" in new and "UART" in new
    assert "malformed APDU 0xc0 from client 16" in new
    assert "WPDU too short" in new
    assert "Traceback" not in new
    # still alive and still serving every slot since the start
    now = dep.sim.now_t2k()
    dep.head.received.clear()
    run(dep, dep.head.poll(dep.first_b, now, quiet=True))
    b = dep.first_b
    while b + 60 <= now - 300:
        assert timeutil.slot_of_t2k(b) in dep.head.received
        b += 1800
    assert dep.firmware_alive()


def test_power_cut_of_the_terminal_loses_nothing(dep):
    """kill -9 the firmware (a power cut at process level: no clean-up), keep it off for two
    boundaries, start it again: the flash log is recovered, the outage is backfilled from the
    meter's history, and the profile has every slot."""
    dep.stop_firmware(kill=True)
    off_at = dep.sim.now_t2k()
    time.sleep(dep.sim.wall_seconds_until(off_at + 2 * 1800))
    before = len(dep.terminal_log())
    dep.start_firmware()
    # the smart meter sets the clock again after the reboot (the terminal's clock is not kept)
    assert wait_until(lambda: "ready: UDP port" in dep.terminal_log()[before:], 30)
    run(dep, dep.head.client.associate())
    run(dep, dep.head.sync_clock())
    assert wait_until(lambda: "filled" in dep.terminal_log()[before:], 30)
    new = dep.terminal_log()[before:]
    assert "boot 2" in new
    assert "Traceback" not in new
    now = dep.sim.now_t2k()
    dep.head.received.clear()
    run(dep, dep.head.poll(dep.first_b, now - 1800, quiet=True))
    b = dep.first_b
    outage = 0
    while b <= now - 1800 - 1740:
        slot = timeutil.slot_of_t2k(b)
        assert slot in dep.head.received, "slot %s missing" % timeutil.iso(b, 540)
        fwd, rev, status = dep.head.received[slot]
        assert (fwd, rev) == dep.model.served_at_slot(slot)
        if off_at < b < off_at + 2 * 1800:
            outage += 1
            assert status & 0x40  # came from the meter's history, and says so
        b += 1800
    assert outage >= 1


def test_flood_on_the_echonet_port_does_not_disturb_metering(dep):
    """A bounded flood of valid requests on UDP 3610 (3000 datagrams, at most 3 s, from one
    loopback address): the terminal rate-limits it, says so once, and every slot is still read."""
    before = len(dep.terminal_log())
    flood_from = dep.sim.now_t2k()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((dep.addr(ROGUE_HOST), 0))
    get_op = bytes.fromhex("1081 0001 05ff01 0ef001 62 01 80 00".replace(" ", ""))
    t_end = time.monotonic() + 3
    sent = 0
    while sent < 3000 and time.monotonic() < t_end:
        s.sendto(get_op, (dep.terminal_ip, 3610))
        sent += 1
    s.close()
    # two boundaries later every slot, including those during the flood, must be there
    time.sleep(dep.sim.wall_seconds_until(flood_from + 2 * 1800 + 300))
    new = dep.terminal_log()[before:]
    assert "flood on the ECHONET port" in new
    assert new.count("flood on the ECHONET port") < 10  # reported, not spammed
    now = dep.sim.now_t2k()
    dep.head.received.clear()
    run(dep, dep.head.poll(flood_from - 1800, now, quiet=True))
    b = flood_from - flood_from % 1800
    while b <= now - 300:
        slot = timeutil.slot_of_t2k(b)
        assert slot in dep.head.received, "slot %s missing after the flood" % timeutil.iso(b, 540)
        assert dep.head.received[slot][:2] == dep.model.served_at_slot(slot)
        b += 1800
    assert dep.firmware_alive()
