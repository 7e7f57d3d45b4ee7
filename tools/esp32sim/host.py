"""Host side of the ESP32 stand-ins (CPython): runs firmware/hal/esp32.py under the MicroPython
unix port inside a tools.deployment.Deployment with board="esp32-sim", and plays the parts of the
device that must live outside the firmware process.

- firmware_command(): the simulated device's filesystem (<workdir>/esp32sim: boot.py, main.py and
  board.json, as `mpremote cp` puts them on a device), its sim.json (calendar rate, the J11
  emulator's pty as UART2, a 4 MiB flash image laid out by the board build's partition table
  (boards/IOT_TERMINAL_ESP32/partitions-4MiB-meterlog.csv), the Wi-Fi access points, the
  device's loopback address) and the command line:
  micropython tools/esp32sim/device.py with MICROPYPATH = <firmware .mpy>:tools/esp32sim:.frozen.
- WatchdogMonitor: the task watchdog. The machine.WDT stand-in writes <sim>/wdt on every feed;
  when the last feed is older than its timeout the monitor kills the process and starts it again,
  like the chip's reset (reset_cause() = WDT_RESET). It runs in this process, so it fires even
  when the whole interpreter is stalled (SIGSTOP).
- set_wifi(): takes every access point out of range, or back.
"""

import json
import os
import shutil
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIM_ENV = "ESP32SIM"
WIFI_SSID = "terminal-site"
WIFI_PSK = "sim-wpa2-passphrase"
SHIFT_JIS_SSID = b"\x83e\x83X\x83g"  # a neighbour whose name is not UTF-8
FLASH_BYTES = 4 * 1024 * 1024
PARTITIONS = os.path.join(ROOT, "boards", "IOT_TERMINAL_ESP32", "partitions-4MiB-meterlog.csv")


def sim_dir(dep):
    return os.path.join(dep.workdir, "esp32sim")


def default_sim(dep):
    """sim.json for a deployment: our WPA2 network, a stronger WPA-only AP with the same name
    (must be refused), a Shift-JIS neighbour and an open neighbour."""
    return {
        "rate": dep.rate,
        "ip": dep.terminal_ip,
        "uart": {"2": dep.module.slave_path},
        "flash": {"image": os.path.join(sim_dir(dep), "flash.bin"), "table": PARTITIONS},
        "wifi": {
            "aps": [
                {"ssid_hex": WIFI_SSID.encode().hex(), "bssid": "02005e000001", "channel": 6,
                 "rssi": -55, "sec": "SEC_WPA2", "psk": WIFI_PSK},
                {"ssid_hex": WIFI_SSID.encode().hex(), "bssid": "02005e000002", "channel": 1,
                 "rssi": -40, "sec": "SEC_WPA", "psk": WIFI_PSK},
                {"ssid_hex": SHIFT_JIS_SSID.hex(), "bssid": "02005e000003", "channel": 11,
                 "rssi": -35, "sec": "SEC_WPA2_WPA3", "psk": "other"},
                {"ssid_hex": b"guest".hex(), "bssid": "02005e000004", "channel": 11,
                 "rssi": -70, "sec": "SEC_OPEN"},
            ],
            "connect_ms": 300,  # connect() until GOT_IP
            "retry_ms": 1000,  # the driver's retries after a drop / a failed attempt
            "scan_ms": 300,  # scan() blocks the interpreter this long
        },
    }


def firmware_config(dep):
    """The esp32-sim additions to the firmware's config.json."""
    return {"lan": {"wifi_ssid": WIFI_SSID, "wifi_psk": WIFI_PSK}}


def firmware_command(dep, firmware_dir, board_path, cfg_path, micropython):
    """(cmd, cwd, env) that start the simulated device; creates its filesystem and flash image
    on the first call and keeps them (flash, RTC) across later calls (resets)."""
    d = sim_dir(dep)
    os.makedirs(d, exist_ok=True)
    for name in ("boot.py", "main.py"):
        shutil.copy(os.path.join(ROOT, name), os.path.join(d, name))
    shutil.copy(board_path, os.path.join(d, "board.json"))
    sim = default_sim(dep)
    sim.update(getattr(dep, "esp32sim", None) or {})
    with open(os.path.join(d, "sim.json"), "w") as f:
        json.dump(sim, f, indent=1)
    image = sim["flash"]["image"]
    if not os.path.exists(image):
        with open(image, "wb") as f:
            f.write(b"\xff" * FLASH_BYTES)  # a new chip: every sector erased
    cmd = [micropython, "-X", "heapsize=" + dep.heap, os.path.join(HERE, "device.py"),
           "--board", os.path.join(d, "board.json"), "--config", cfg_path]
    env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (firmware_dir, HERE))
    env[SIM_ENV] = d
    return cmd, d, env


def set_wifi(dep, up):
    path = os.path.join(sim_dir(dep), "wifi_down")
    if up:
        if os.path.exists(path):
            os.remove(path)
    else:
        open(path, "w").close()


class WatchdogMonitor:
    """The ESP32 task watchdog, outside the firmware process (see the module docstring)."""

    def __init__(self, dep, poll_s=0.1):
        self.dep = dep
        self.dir = sim_dir(dep)
        self.poll_s = poll_s
        self.resets = []  # (cause, wall time)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _feed(self):
        try:
            with open(self._path("wdt")) as f:
                timeout, fed = f.read().split()
            return int(timeout), int(fed)
        except (OSError, ValueError):
            return None  # not armed (yet), or being rewritten

    def _loop(self):
        while not self._stop.wait(self.poll_s):
            dep = self.dep
            if dep.proc is None or dep._log_f is None:
                continue  # the Deployment itself stopped the firmware: power off, not a reset
            if os.path.exists(self._path("reset_request")) and dep.proc.poll() is not None:
                self._reset("SOFT", "machine.reset()")
                continue
            feed = self._feed()
            if feed is None:
                continue
            timeout, fed = feed
            late = int(time.time() * 1000) - fed
            if late > timeout:
                self._reset("WDT", "watchdog reset: not fed for %d ms (timeout %d ms)"
                            % (late, timeout))

    def _reset(self, cause, why):
        dep = self.dep
        dep.stop_firmware(kill=True)  # SIGKILL works on a stopped (SIGSTOP) process too
        for name in ("wdt", "reset_request"):
            if os.path.exists(self._path(name)):
                os.remove(self._path(name))
        with open(self._path("reset_cause"), "w") as f:
            f.write(cause)
        with open(dep.log_path, "a") as f:
            f.write("esp32sim: %s\n" % why)
        self.resets.append((cause, time.time()))
        dep.start_firmware()
