# Runs before main.py on the device (the esp32 port runs boot.py, then main.py).
#
# It arms the hardware watchdog with the board file's "watchdog_ms" before main.py's heavy imports,
# so that a hang while importing, mounting the store or bringing up the network resets the device.
# The HAL later calls machine.WDT(timeout=...) again with the same value: on the esp32 port that
# re-configures the one task watchdog (it cannot be stopped once armed), it does not add another.
#
# Only json and machine are imported, and everything is guarded: boot.py must never fail. Without
# a readable /board.json (or with watchdog_ms 0) nothing is armed and main.py reports the problem;
# the device then stays at the REPL instead of resetting in a loop. Off the esp32 port (host runs)
# nothing happens unless a `machine` with a WDT is importable (the esp32-sim stand-ins).
import gc


def _arm_watchdog(path="board.json"):
    try:
        import sys

        import machine

        if sys.platform != "esp32" and not hasattr(machine, "WDT"):
            return
        import json

        with open(path) as f:
            ms = json.load(f).get("watchdog_ms", 0)
        if isinstance(ms, int) and not isinstance(ms, bool) and ms > 0:
            machine.WDT(timeout=ms)
    except Exception as e:  # boot.py must return whatever happens
        print("boot.py: watchdog not armed: %r" % (e,))


_arm_watchdog()
gc.collect()
