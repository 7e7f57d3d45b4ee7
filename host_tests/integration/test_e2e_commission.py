"""Commissioning end to end (docs/commissioning.md): the firmware's driver, session and checks
(firmware/app/commission.py; the radio built by the terminal's own radio methods) over
SerialUart on a module emulator's pty, against the smart-meter twin as PAN coordinator (beacons,
PANA from its table) and as the DLMS server the probe reaches (AARE, its clock, RLRE after the
modelled air time). PASS with J11 and SKSTACK (both dialects), FAIL with the installer's reason for
each field failure; the command's exit codes and its silence about secrets; the twin deployment's
emulators asking the twin; the firmware's commission.main() under `micropython`."""

import asyncio
import json
import os
import random
import re
import subprocess
import sys

import pytest

from firmware.app import commission
from firmware.cosem import probe, wrapper
from tools.commission import HostClock, TwinRig, build_config, commission_over
from tools.serial_uart import SerialUart
from tools.simclock import SimClock
from tools.smartmeter import DOWN, UP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRONG = "WRONGPASS123"
# commission.main() under the unix port, firmware as .mpy in RAM: passed at 272k, failed at 264k
# (it imports the terminal module for its radio methods); plus the deployments' 32k margin
HEAP = "304k"
FAST = {"join_timeout_s": 8, "reply_timeout_s": 2, "tries": 2}


def _commission(family="j11", route="han", fault=None, radio=None, sim=None, hook=None,
                checks=None):
    """Commission against a fresh twin rig: (verdict, {check: (verdict, detail)}, lines, rig)."""
    lines = []

    async def body():
        async with TwinRig(family, route, sim=sim) as rig:
            rig.set_fault(fault)
            if hook is not None:
                hook(rig)
            cfg, _ = build_config({"radio": dict(radio or {})}, rig.radio_config())
            uart = SerialUart(rig.port)
            try:
                c = dict(FAST, **(checks or {}))
                v, chk, _s = await commission_over(uart, cfg, c, HostClock(), lines.append)
            finally:
                uart.close()
            return v, {n: (cv, d) for n, cv, d in chk}, rig

    v, chk, rig = asyncio.run(body())
    return v, chk, lines, rig


def _rtts(detail):
    m = re.match(r"association (\d+) ms, clock read (\d+) ms$", detail)
    assert m, detail
    return int(m.group(1)), int(m.group(2))


@pytest.mark.timeout(60)
def test_pass_with_j11_reports_rssi_rtt_and_the_twins_clock():
    # the twin's calendar 10 minutes behind the PC: the clock check shows it, with the sign
    # (and proves the deviation field is read as the twin writes it: JST, Blue Book)
    now = HostClock().now_t2k()
    v, c, lines, rig = _commission(sim=SimClock(now - 600, 1))
    assert v == commission.PASS, lines
    assert c["join"][0] == "PASS" and "(1 scans)" in c["join"][1]
    assert c["signal"] == ("PASS", "RSSI -52 dBm")
    assert c["dlms"][0] == "PASS"
    assoc, clock_read = _rtts(c["dlms"][1])
    m = re.match(r"terminal clock \+(\d+) s from the smart meter's$", c["clock"][1])
    assert m and 599 <= int(m.group(1)) <= 602, c["clock"]
    assert c["clock"][0] == "WARN"
    st = rig.twin.stats
    assert st["pana_ok"] == 1 and st["probe_associations"] == 1
    assert st["probe_replies"] == 3 and st["probe_exceptions"] == 0
    # AARQ, GET, RLRQ up; AARE, GET-Response, RLRE down: each answer starts on the air only
    # when its request's last ACK has gone (the schedule, not wall time)
    sched = list(rig.twin.schedule)
    assert [(e[1], e[2]) for e in sched] == [
        (UP, len(probe.wpdu(16, 1, probe.AARQ))), (DOWN, sched[1][2]),
        (UP, len(probe.wpdu(16, 1, probe.GET_CLOCK))), (DOWN, 8 + 18),
        (UP, len(probe.wpdu(16, 1, probe.RLRQ))), (DOWN, 8 + 5)]
    for a, b in zip(sched, sched[1:]):
        assert b[4] >= a[5]
    # a round trip cannot be shorter than its two datagrams' modelled air time
    assert assoc >= int((sched[0][5] - sched[0][4] + sched[1][5] - sched[1][4]) * 1000)
    assert clock_read >= int((sched[2][5] - sched[2][4] + sched[3][5] - sched[3][4]) * 1000)
    assert lines[-1] == "commissioning: PASS"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("family,route", [("skstack", "han"), ("skstack-dse", "han"),
                                          ("skstack-dse", "b"), ("j11", "b")])
def test_pass_with_skstack_dialects_and_b_route(family, route):
    v, c, lines, rig = _commission(family, route)
    assert v == commission.PASS, lines
    assert c["signal"] == ("PASS", "RSSI -52 dBm")
    _rtts(c["dlms"][1])
    assert rig.twin.stats["pana_ok"] == 1 and rig.twin.stats["probe_replies"] == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("family", ["j11", "skstack"])
def test_wrong_password_fails_with_the_credentials_reason(family):
    v, c, lines, rig = _commission(family, radio={"pana_password": WRONG})
    assert v == commission.FAIL
    assert "rejected the terminal's credentials" in c["join"][1]
    assert "dlms" not in c
    assert rig.twin.stats["pana_failed"] == 1 and rig.twin.stats["pana_ok"] == 0


@pytest.mark.timeout(60)
def test_a_terminal_missing_from_the_twins_table_fails_pana():
    def stranger(rig):
        rig.emu.own_mac = bytes.fromhex("001D1290000A00FF")  # right password, unknown module

    v, c, _lines, rig = _commission(hook=stranger)
    assert v == commission.FAIL and "rejected the terminal's credentials" in c["join"][1]
    assert rig.twin.stats["pana_failed"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("family,fault", [("j11", "out-of-range"), ("skstack", "out-of-range"),
                                          ("j11", "silent-scans")])
def test_out_of_range_fails_with_no_smart_meter_heard(family, fault):
    v, c, _lines, rig = _commission(family, fault=fault, checks={"join_timeout_s": 4})
    assert v == commission.FAIL
    assert "no smart meter heard on any channel" in c["join"][1]
    assert not rig.twin.schedule  # nothing crossed the air


@pytest.mark.timeout(60)
@pytest.mark.parametrize("family", ["j11", "skstack"])
def test_configured_meter_out_of_range_fails_authentication(family):
    # no scan (the smart meter's MAC configured): PANA is unanswered (result 3) because the twin
    # does not hear a module out of its reach, whichever emulator asks
    v, c, _lines, rig = _commission(family, fault="out-of-range",
                                    radio={"sm_mac": "001D129012345678", "channel": 4},
                                    checks={"join_timeout_s": 4})
    assert v == commission.FAIL
    assert "did not complete authentication" in c["join"][1], c["join"]
    assert rig.twin.stats["pana_ok"] == 0
    if family == "skstack":  # (the J11 emulator answers 3 itself before it asks the twin)
        assert rig.twin.stats["pana_no_response"] >= 1


@pytest.mark.timeout(60)
def test_rejected_association_fails_with_its_diagnostic():
    v, c, _lines, rig = _commission(fault="reject-association")
    assert v == commission.FAIL
    assert c["join"][0] == "PASS" and c["signal"][0] == "PASS"
    assert c["dlms"] == ("FAIL", "the smart meter answered but association rejected "
                                 "(result 1, diagnostic 1)")
    assert rig.twin.stats["probe_associations"] == 0


@pytest.mark.timeout(60)
def test_silent_smart_meter_fails_after_the_retries():
    v, c, _lines, rig = _commission(fault="silent-meter", checks={"reply_timeout_s": 1})
    assert v == commission.FAIL
    assert c["dlms"] == ("FAIL", "no DLMS round trip to the smart meter: no reply within 1 s")
    assert rig.twin.stats["probe_unanswered"] == 2  # the AARQ, tried twice


# -- the twin's probe server alone (no sockets) --------------------------------------------------

class _T:
    probe_associated = False


def _twin():
    from tools.smartmeter import SmartMeterTwin

    return SmartMeterTwin(SimClock(0), ("127.0.0.1", 0))


def test_twin_answers_only_the_probe_and_excepts_the_rest():
    twin, t = _twin(), _T()
    req = lambda apdu: probe.wpdu(16, 1, apdu)  # noqa: E731
    # not associated yet: GET -> EXCEPTION-Response service-not-allowed
    assert wrapper.parse(twin.probe_reply(t, req(probe.GET_CLOCK)))[2] == b"\xD8\x01\x01"
    r = twin.probe_reply(t, req(probe.AARQ))
    assert probe.check_aare(r, 16, 1) is None and t.probe_associated
    assert probe.parse_clock(twin.probe_reply(t, req(probe.GET_CLOCK)), 16, 1, -1, 540) == 0
    # the invoke-id byte is echoed
    assert wrapper.parse(twin.probe_reply(t, req(b"\xC0\x01\x42" + probe.GET_CLOCK[3:])))[2][2] \
        == 0x42
    # another attribute, another object, another service, garbage: exceptions, not data
    for apdu in (probe.GET_CLOCK[:-2] + b"\x03\x00", probe.GET_CLOCK[:5] + b"\x02" +
                 probe.GET_CLOCK[6:], b"\xC1\x01\xC1" + probe.GET_CLOCK[3:] + b"\x00",
                 b"\xFF", b"\x60\x01"):
        assert wrapper.parse(twin.probe_reply(t, req(apdu)))[2] == b"\xD8\x02\x02"
    # an AARQ asking for authentication or another context is refused
    assert "result 1, diagnostic 11" in probe.check_aare(twin.probe_reply(t, req(
        bytes.fromhex("6036A1090607608574050801018A0207808B0760857405080201AC0A80084142434445"
                      "464748BE10040E01000000065F1F0400007E1F04B0"))), 16, 1)
    assert probe.check_rlre(twin.probe_reply(t, req(probe.RLRQ)), 16, 1) is None
    assert not t.probe_associated
    # the probe is told apart from a terminal's reply to a head-end by its wPorts
    assert twin._is_probe(req(probe.AARQ))
    assert not twin._is_probe(probe.wpdu(1, 16, probe.AARQ))
    assert not twin._is_probe(probe.wpdu(1, 1, probe.AARQ))
    assert twin.probe_reply(t, b"\x00\x01\x00\x10\x00\x01\x00\x09\x60") is None  # bad length
    assert twin.stats["probe_malformed"] == 1


def test_fuzz_the_twins_probe_server():
    twin, t = _twin(), _T()
    rnd = random.Random(11)
    seeds = [probe.wpdu(16, 1, a) for a in (probe.AARQ, probe.GET_CLOCK, probe.RLRQ)]
    answered = 0
    for _ in range(3000):
        b = bytearray(rnd.choice(seeds))
        for _k in range(1 + rnd.randrange(4)):
            op = rnd.randrange(3)
            if op == 0:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            elif op == 1 and len(b) > 1:
                del b[rnd.randrange(1, len(b)):]
            else:
                b.append(rnd.randrange(256))
        if rnd.random() < 0.5:  # keep the header's length right: the APDU parsers are reached
            b[6:8] = (max(len(b) - 8, 0)).to_bytes(2, "big")
        r = twin.probe_reply(t, bytes(b))
        if r is not None:
            src, dst, apdu = wrapper.parse(r)
            assert src == 1 and dst == (b[2] << 8 | b[3]) and len(apdu) >= 3
            answered += 1
    assert answered > 1000 and twin.stats["probe_malformed"] > 100


# -- the twin deployment: its emulators ask the twin ---------------------------------------------

@pytest.mark.timeout(60)
def test_twin_deployment_modules_ask_the_twin():
    """The deployment's module emulator (started alone, no firmware) with the terminal's own radio
    configuration: PASS; once the twin's table holds another password for it, PANA fails although
    the emulator's own configured password still matches: the twin decides."""
    from tools.deployment import TwinDeployment

    dep = TwinDeployment(terminals=1, runtime="cpython", rate=1)

    async def body(table_password=None):
        term = dep.terminals[0]
        assert term.module.coordinator is dep.twin
        if table_password:
            dep.twin.terminals[0].password = table_password
        await dep.twin.start()
        await term.module.start()
        try:
            r = dict(term.firmware_config()["radio"], uart=term.module.slave_path)
            cfg, _ = build_config({"radio": r})
            uart = SerialUart(term.module.slave_path)
            try:
                v, chk, _s = await commission_over(uart, cfg, FAST, dep.sim, lambda line: None)
            finally:
                uart.close()
        finally:
            await term.module.stop()
            await dep.twin.stop()
        return v, {n: d for n, _v, d in chk}

    try:
        v, c = asyncio.run(body())
        assert v == commission.PASS, c
        assert "clock" in c and "+0 s" in c["clock"]  # the deployment's calendar is the twin's
        # no scan (the terminal's configuration names the smart meter): the RSSI comes with the
        # replies, so the signal is measured after the round trip
        assert c["signal"] == "RSSI -52 dBm"
        v, c = asyncio.run(body(b"ANOTHERPASS1"))
        assert v == commission.FAIL and "rejected the terminal's credentials" in c["join"]
        assert term_pana_2(dep)
    finally:
        dep.reservation.release()


def term_pana_2(dep):
    return dep.terminals[0].module.stats["pana_2"] >= 1 and dep.twin.stats["pana_failed"] >= 1


# -- the command ----------------------------------------------------------------------------

def _cmd(*args, timeout=60):
    r = subprocess.run([sys.executable, "-m", "tools.commission", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.timeout(120)
def test_command_exit_codes_and_no_secret_in_its_output(tmp_path):
    code, out, err = _cmd("--twin", "--verbose")
    assert code == 0, out + err
    assert out.splitlines()[-1] == "commissioning: PASS"
    assert re.search(r"^dlms +PASS association \d+ ms, clock read \d+ ms$", out, re.M)
    assert "INFO radio:" in err  # --verbose: the firmware's log, on stderr
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"radio": {"pana_password": WRONG},
                               "commission": {"join_timeout_s": 20}}))
    code, out2, err2 = _cmd("--twin", "--verbose", "--config", str(bad))
    assert code == 1
    assert "rejected the terminal's credentials" in out2
    assert out2.splitlines()[-1] == "commissioning: FAIL"
    code, out3, err3 = _cmd("--twin", "--twin-fault", "reject-association")
    assert code == 1 and "association rejected" in out3
    for text in (out, err, out2, err2, out3, err3):
        # neither the twin's password for the terminal nor the configured wrong one
        assert "TWINPASS0001" not in text and WRONG not in text
    code, _o, err = _cmd("--port", str(tmp_path / "no-such-port"))
    assert code == 2 and "cannot open" in err
    (tmp_path / "broken.json").write_text("{")
    code, _o, err = _cmd("--twin", "--config", str(tmp_path / "broken.json"))
    assert code == 2 and "unreadable" in err


# -- on the device's runtime ------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_firmware_commission_main_under_micropython(tmp_path):
    """firmware/app/commission.main() under the MicroPython unix port with the host HAL (board
    boards/host.json, the radio UART the emulator's pty from config.json), against the twin."""
    from tools.deployment import build_host_mpy, find_micropython

    mp = find_micropython()
    assert mp, "the micropython unix port is part of the dev environment"
    mpy_dir = build_host_mpy(str(tmp_path / "mpy"))

    async def body():
        async with TwinRig("j11") as rig:
            cfg = {"radio": dict(rig.radio_config(), uart=rig.port),
                   "commission": {"join_timeout_s": 30, "reply_timeout_s": 5}}
            path = tmp_path / "config.json"
            path.write_text(json.dumps(cfg))
            code = ("import sys\nfrom firmware.app import commission as c\n"
                    "sys.exit(0 if c.main(%r, %r) == 'PASS' else 1)\n"
                    % (os.path.join(ROOT, "boards", "host.json"), str(path)))
            proc = await asyncio.create_subprocess_exec(
                mp, "-X", "heapsize=" + HEAP, "-c", code, cwd=mpy_dir,
                env=dict(os.environ, MICROPYPATH=".:.frozen"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), dict(rig.twin.stats)

    code, out, stats = asyncio.run(body())
    assert code == 0, out
    assert re.search(r"^join +PASS joined in", out, re.M), out
    assert re.search(r"^dlms +PASS association \d+ ms", out, re.M), out
    # the host HAL's calendar is not set: the smart meter's clock is read, not compared
    assert "the terminal's clock is not set yet" in out
    assert stats["probe_replies"] == 3
    assert "TWINPASS0001" not in out
