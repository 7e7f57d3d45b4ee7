# Hardware abstraction. The board file (boards/*.json) names the implementation:
#   "hal": "host"  -> firmware.hal.host  (sockets on loopback, pty UART, NOR emulator, sim clock)
#   "hal": "esp32" -> firmware.hal.esp32 (machine.UART, esp32.Partition, RTC, WDT, network)
# Only modules under firmware/hal/ import machine, network, esp32 or termios.
import json


class BoardError(ValueError):
    pass


class FlashError(ValueError):
    """The store's flash region is unusable as configured (no such partition, wrong block size,
    region larger than the partition). The terminal then logs it and does not start metering,
    but keeps feeding the watchdog: a setup error must not become a reset loop."""


def load_board(path):
    try:
        with open(path) as f:
            board = json.load(f)
    except (OSError, ValueError) as e:
        raise BoardError("board file %s unreadable: %s" % (path, e))
    if not isinstance(board, dict) or board.get("hal") not in ("host", "esp32"):
        raise BoardError("board file %s: 'hal' must be 'host' or 'esp32'" % path)
    return board


def create(board, config):
    """Build the HAL object named by the board file."""
    if board["hal"] == "esp32":
        from firmware.hal import esp32 as impl
    else:
        from firmware.hal import host as impl
    return impl.Hal(board, config)
