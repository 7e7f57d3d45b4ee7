# The esp32 port's start-up on the MicroPython unix port (host side only, never frozen): run
# boot.py, then main.py, from the working directory, which plays the device's filesystem (the
# files `mpremote cp boot.py main.py :` and board.json/config.json put there), as pyexec_file
# does on the device. An error in boot.py is printed and main.py still runs; when main.py ends
# the device would sit at the REPL, where nothing feeds the watchdog: here the process ends, and
# the host's watchdog monitor resets it likewise once the feed is overdue.
#
#   ESP32SIM=<sim dir> MICROPYPATH=<firmware dir>:<this dir>:.frozen \
#       micropython tools/esp32sim/device.py --board board.json --config config.json
import sys


def _run(name):
    with open(name) as f:
        src = f.read()
    exec(src, {"__name__": "__main__", "__file__": name})


try:
    _run("boot.py")
except Exception as e:  # as on the device: reported, then main.py runs
    sys.print_exception(e)
_run("main.py")
