"""Commissioning from a PC (CPython): the firmware's radio driver and session (built from the
configuration exactly as the terminal builds them: commission.build_session) over a serial port,
then the firmware's commissioning checks (firmware/app/commission.py: join, signal, a DLMS round
trip to the smart meter, clock) and their report. docs/commissioning.md.

    python -m tools.commission --port /dev/ttyUSB0 --config config.json [--family auto|j11|
        skstack|skstack-dse] [--route han|b] [--baud 115200] [--sm-mac HEX] [--channel N]
        [--pan-id N] [--join-timeout S] [--reply-timeout S] [--verbose]
    python -m tools.commission --twin [--family j11|skstack|skstack-dse] [--route han|b]
        [--twin-fault out-of-range|silent-scans|reject-association|silent-meter] [--config F]

--port: a real module on a USB-serial adapter, or any emulator's pty (tools/serial_uart.py: no
emulator special case). --twin starts a smart-meter twin (tools/smartmeter.py) with one module
emulator whose PAN coordinator it is, on a loopback block of its own, and commissions against it
through the emulator's pty; the terminal's credentials are the twin's table entry unless --config
gives others (then PANA fails with "credentials rejected").

Credentials (radio.pana_password, radio.route_b_id) come from the configuration file only, never
from the command line (visible to every user), and are never printed: the firmware's log masks them
(log.add_secret). The report goes to stdout, the firmware's log (WARN and up, all with --verbose)
to stderr. Exit 0 on PASS, 1 on FAIL, 2 on a usage or configuration error.
"""

import argparse
import asyncio
import json
import sys
import time

from firmware import log, timeutil
from firmware.app import commission
from firmware.app import config as cfgmod

FAMILIES = ("auto", "j11", "skstack", "skstack-dse")
TWIN_FAULTS = ("out-of-range", "silent-scans", "reject-association", "silent-meter")
# B-route on the twin: a placeholder authentication ID (32 characters; the twin checks only the
# password, and answers any pairing ID: docs/twin.md)
TWIN_ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"


class HostClock:
    """The PC's clock as the terminal's calendar: the clock check compares the smart meter's
    time with it (the PC is expected to keep UTC by NTP)."""

    def now_t2k(self):
        return timeutil.t2k_of_unix(int(time.time()))


class TwinRig:
    """A smart-meter twin and one module emulator (J11, or SKSTACK single-hop / DSE) whose PAN
    coordinator the twin is, on one reserved loopback block (the TwinDeployment layout of terminal
    0: twin air N.4, module air N.43, backhaul N.44). radio_config() is the terminal's radio
    section that the twin's table accepts."""

    def __init__(self, family="j11", route="han", sim=None, time_scale=0.01):
        from tools.simclock import SimClock

        self.family = family if family in ("skstack", "skstack-dse") else "j11"
        self.route = route
        self.sim = sim or SimClock(timeutil.t2k_of_unix(int(time.time())), 1)
        self.time_scale = time_scale
        self.reservation = None
        self.twin = None
        self.emu = None

    async def start(self):
        from tools import deployment as dep
        from tools import loopback_block
        from tools.smartmeter import SmartMeterTwin

        b = dep.TWIN_BASE
        port = dep.DLMS_PORT
        probes = [(4, port), (b + 3, port), (b + dep.TWIN_BACKHAUL, port)]
        self.reservation = loopback_block.reserve(
            probe=lambda prefix: loopback_block.ports_free(prefix, probes))
        net = self.reservation.prefix
        try:
            self.twin = SmartMeterTwin(self.sim, (net + "4", port), mac=dep.SM_MAC)
            mac = dep.twin_terminal_mac(0)
            t = self.twin.add_terminal(mac, dep.twin_terminal_password(0),
                                       (net + str(b + 3), port),
                                       (net + str(b + dep.TWIN_BACKHAUL), port))
            kw = dict(self.twin.module_kw(0), air_addr=t.module_addr,
                      sm_addr=self.twin.air_addr, own_mac=mac, coordinator=self.twin,
                      time_scale=self.time_scale)
            if self.family == "j11":
                from tools.j11_emulator import J11Emulator

                self.emu = J11Emulator(**kw)
            else:
                from tools.skstack_emulator import SkStackEmulator

                self.emu = SkStackEmulator(dse=self.family == "skstack-dse", **kw)
            await self.twin.start()
            await self.emu.start()
        except BaseException:
            await self.stop()
            raise

    @property
    def port(self):
        """The emulator's pty: the module's UART."""
        return self.emu.slave_path

    def radio_config(self):
        r = {"route": self.route, "pan_id": self.twin.pan_id,
             "pana_password": self.twin.terminals[0].password.decode()}
        if self.route == "b":
            r["route_b_id"] = TWIN_ROUTE_B_ID
        return r

    def set_fault(self, fault):
        """One of TWIN_FAULTS: the module out of the twin's reach (no beacon, PANA unanswered,
        nothing crosses the air), scans that hear nothing, the smart meter refusing the public
        client's association, or its DLMS server silent."""
        if fault == "out-of-range":
            self.emu.set_faults(air_down=True)
        elif fault == "silent-scans":
            self.emu.set_faults(silent_scans=10 ** 6)
        elif fault == "reject-association":
            self.twin.association_reject = (1, 1)  # rejected-permanent, no-reason-given
        elif fault == "silent-meter":
            self.twin.answer_probe = False
        elif fault is not None:
            raise ValueError("unknown twin fault %r" % (fault,))

    async def stop(self):
        try:
            if self.emu is not None and self.emu.slave_path is not None:
                await self.emu.stop()
            if self.twin is not None:
                await self.twin.stop()
        finally:
            if self.reservation is not None:
                self.reservation.release()
                self.reservation = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()


async def commission_over(uart, cfg, checks_cfg, clock, out=print):
    """Build the driver (the radio section's family; "auto" asks the module) and the session over
    uart, run the checks: (verdict, checks, session). The driver's reader task is ended after."""
    before = asyncio.all_tasks()
    session = await commission.build_session(lambda: uart, cfg["radio"])
    try:
        verdict, checks = await commission.run(session, clock, checks_cfg, out)
    finally:
        mine = asyncio.all_tasks() - before - {asyncio.current_task()}
        for t in mine:
            t.cancel()
        for t in mine:
            try:
                await t
            except BaseException:  # noqa: BLE001 - ended by cancellation (or already failed)
                pass
    return verdict, checks, session


def read_config(path):
    """The device configuration file as a dict ({} without one); ValueError when it cannot be
    read (the tool must not commission with defaults silently)."""
    if path is None:
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError("configuration %s unreadable: %s" % (path, e))
    if not isinstance(data, dict):
        raise ValueError("configuration %s: the top level must be an object" % path)
    return data


def build_config(data, radio_base=None):
    """(merged configuration, commission section) of the file's data; radio_base: radio values
    the file's radio section overrides (the twin's credentials). Secrets are registered with the
    log (config.merge), so no line shows them."""
    data = dict(data)
    radio = dict(radio_base or {})
    if isinstance(data.get("radio"), dict):
        radio.update(data["radio"])
    data["radio"] = radio
    return cfgmod.merge(data), data.get("commission")


def _apply_flags(cfg, args):
    r = cfg["radio"]
    if args.family is not None:
        r["family"] = args.family
    if args.route is not None:
        r["route"] = args.route
    if args.sm_mac is not None:
        r["sm_mac"] = args.sm_mac
    if args.channel is not None:
        r["channel"] = args.channel
    if args.pan_id is not None:
        r["pan_id"] = args.pan_id


def _checks_cfg(section, args):
    c = commission.settings(section)
    if args.join_timeout is not None:
        c["join_timeout_s"] = args.join_timeout
    if args.reply_timeout is not None:
        c["reply_timeout_s"] = args.reply_timeout
    return c


async def _commission_on(uart, cfg, section, args, out):
    """The verdict of commissioning over uart (closed afterwards): --port and --twin alike."""
    try:
        verdict, _checks, _s = await commission_over(uart, cfg, _checks_cfg(section, args),
                                                     HostClock(), out)
    finally:
        uart.close()
    return verdict


async def run_port(args, out=print):
    from tools.serial_uart import SerialUart

    cfg, section = build_config(read_config(args.config))
    _apply_flags(cfg, args)
    r = cfg["radio"]
    out("commissioning over %s at %d Bd: family %s, route %s"
        % (args.port, args.baud, r["family"], r["route"]))
    return await _commission_on(SerialUart(args.port, baudrate=args.baud), cfg, section, args,
                                out)


async def run_twin(args, out=print):
    """--twin: the rig, its fault, the configuration (the twin's credentials unless --config
    gives the radio section's), then the same path as --port over the emulator's pty."""
    from tools.serial_uart import SerialUart

    family = args.family or "j11"
    route = args.route or "han"
    async with TwinRig(family, route) as rig:
        rig.set_fault(args.twin_fault)
        cfg, section = build_config(read_config(args.config), rig.radio_config())
        _apply_flags(cfg, args)
        out("commissioning against the smart-meter twin: %s module emulator on %s, route %s%s"
            % (rig.family, rig.port, route,
               ", fault " + args.twin_fault if args.twin_fault else ""))
        return await _commission_on(SerialUart(rig.port), cfg, section, args, out)


def parser():
    p = argparse.ArgumentParser(prog="python -m tools.commission",
                                description="Commission a Wi-SUN terminal: join the smart meter, "
                                "measure the signal and a DLMS round trip, print PASS/FAIL.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the module (USB-serial adapter or a pty)")
    where.add_argument("--twin", action="store_true",
                       help="against a smart-meter twin with one module emulator")
    p.add_argument("--config", help="the device's config.json (radio credentials, commission)")
    p.add_argument("--family", choices=FAMILIES, help="radio module family (default: config)")
    p.add_argument("--route", choices=("han", "b"), help="HAN or B-route (default: config)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--sm-mac", help="smart meter MAC, 16 hex (default: scan)")
    p.add_argument("--channel", type=int, help="channel 4..17 with --sm-mac")
    p.add_argument("--pan-id", type=lambda s: int(s, 0), help="PAN ID to scan for (-1 any)")
    p.add_argument("--join-timeout", type=int, help="seconds for the join (default 300)")
    p.add_argument("--reply-timeout", type=int, help="seconds per DLMS reply (default 10)")
    p.add_argument("--twin-fault", choices=TWIN_FAULTS, help="--twin: make it fail this way")
    p.add_argument("--verbose", action="store_true", help="the firmware's whole log on stderr")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.twin_fault and not args.twin:
        parser().error("--twin-fault needs --twin")
    log.level = log.DEBUG if args.verbose else log.WARN
    log.set_sink(lambda line: print(line, file=sys.stderr))
    try:
        if args.twin:
            verdict = asyncio.run(run_twin(args))
        else:
            verdict = asyncio.run(run_port(args))
    except ValueError as e:  # configuration unreadable
        print("commissioning: %s" % log.redact(str(e)), file=sys.stderr)
        return 2
    except OSError as e:  # the serial port cannot be opened
        print("commissioning: cannot open the module's port: %s" % log.redact(str(e)),
              file=sys.stderr)
        return 2
    finally:
        log.set_sink(None)
    return 0 if verdict == commission.PASS else 1


if __name__ == "__main__":
    sys.exit(main())
