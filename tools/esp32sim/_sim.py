# Shared plumbing of the ESP32 stand-ins (machine, network, esp32) for the MicroPython unix port.
# Host side only: tools/esp32sim is put on MICROPYPATH by the simulation, never frozen.
#
# The simulated device lives in a directory named by $ESP32SIM: sim.json (written by
# tools/esp32sim/host.py: calendar rate, UART ptys, flash image and partition table, Wi-Fi access
# points, the device's address) and the control/state files below.
#   wifi_down     exists: every access point is out of range (the test drops Wi-Fi)
#   lan_down      exists: the Ethernet link is down
#   wdt           "timeout_ms fed_at_unix_ms", rewritten on every WDT feed (the host watches it)
#   reset_cause   written by the host before it starts the firmware again after a reset
#   reset_request written by machine.reset() before the process exits
#   rtc           the RTC's calendar time across resets other than power-on
import json
import os
import time

DIR = os.getenv("ESP32SIM") or "."
_cfg = None


def cfg():
    global _cfg
    if _cfg is None:
        try:
            with open(DIR + "/sim.json") as f:
                _cfg = json.load(f)
        except (OSError, ValueError):
            _cfg = {}
    return _cfg


def path(name):
    return DIR + "/" + name


def exists(name):
    try:
        os.stat(path(name))
        return True
    except OSError:
        return False


def read(name):
    try:
        with open(path(name)) as f:
            return f.read()
    except OSError:
        return None


def write_atomic(name, text):
    tmp = path(name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path(name))


def remove(name):
    try:
        os.remove(path(name))
    except OSError:
        pass


def wall_ms():
    """Unix wall-clock milliseconds (the host compares the watchdog feed with its own clock)."""
    return int(time.time() * 1000)
