# Stand-in for the v1.28 esp32 port's `machine` module on the MicroPython unix port (host side
# only, never frozen): WDT, RTC, UART, Pin, reset, reset_cause. See _sim.py for the sim directory.
import io
import select
import sys
import termios
import time

import _sim

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
_CAUSES = {"WDT": WDT_RESET, "SOFT": SOFT_RESET, "HARD": HARD_RESET}


def _boot_cause():
    text = _sim.read("reset_cause")
    _sim.remove("reset_cause")  # a later start without it is a power-on
    return _CAUSES.get((text or "").strip(), PWRON_RESET)


_cause = _boot_cause()


def reset_cause():
    return _cause


def reset():
    """esp_restart(): the host starts the firmware again at once. The port reports ESP_RST_SW
    as SOFT_RESET afterwards."""
    _sim.write_atomic("reset_request", "SOFT")
    sys.exit(0)


def idle():
    time.sleep_ms(1)


def freq(hz=None):
    return 240000000


def unique_id():
    return b"\x24\x0a\xc4\x51\x30\x01"


# -- WDT ---------------------------------------------------------------------------------------
# The port's WDT is the one ESP-IDF task watchdog: WDT(timeout=...) (re)configures it, a second
# call changes the timeout of the same watchdog, there is no deinit. Expiry is judged OUTSIDE this
# process (tools/esp32sim/host.py reads the feed file), so it also fires when the whole interpreter
# is stalled, e.g. by SIGSTOP.

_wdt_timeout = None


class WDT:
    def __init__(self, id=0, timeout=5000):
        global _wdt_timeout
        if id != 0:
            raise ValueError("WDT(%d) doesn't exist" % id)
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        _wdt_timeout = timeout
        self.feed()

    def feed(self):
        _sim.write_atomic("wdt", "%d %d\n" % (_wdt_timeout, _sim.wall_ms()))


# -- RTC ---------------------------------------------------------------------------------------
# datetime() is the system time: it keeps counting across resets other than power-on (which
# starts it at 2000-01-01). memory() is RTC_DATA_ATTR in machine_rtc.c: the bootloader loads it
# afresh at every reset except a deep-sleep wake, so here it lives as long as the process (a soft
# reset, which keeps it on the device, is not simulated). The calendar runs at sim.json "rate".

_DAY = 86400


def _days_from_civil(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 730425  # days since 2000-01-01


def _civil_from_days(n):
    z = n + 730425
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def _rtc_load():
    if _cause == PWRON_RESET:
        _sim.remove("rtc")
        return 0, _sim.wall_ms()
    text = _sim.read("rtc")
    if text:
        base, wall = text.split()
        return int(base), int(wall)
    return 0, _sim.wall_ms()


_rtc_base, _rtc_wall = _rtc_load()  # seconds since 2000 at wall-clock ms
_rtc_mem = b""


class RTC:
    def __init__(self, id=0):
        pass

    def _now(self):
        rate = _sim.cfg().get("rate", 1)
        return _rtc_base + (_sim.wall_ms() - _rtc_wall) * rate // 1000

    def datetime(self, t=None):
        global _rtc_base, _rtc_wall
        if t is None:
            s = self._now()
            days = s // _DAY
            rem = s - days * _DAY
            y, m, d = _civil_from_days(days)
            # (year, month, day, weekday 0 = Monday, hour, minute, second, microsecond)
            return (y, m, d, (days + 5) % 7, rem // 3600, rem // 60 % 60, rem % 60, 0)
        y, m, d, _wd, h, mi, s, _us = t
        _rtc_base = _days_from_civil(y, m, d) * _DAY + h * 3600 + mi * 60 + s
        _rtc_wall = _sim.wall_ms()
        _sim.write_atomic("rtc", "%d %d\n" % (_rtc_base, _rtc_wall))

    def init(self, t):
        self.datetime(t)

    def memory(self, data=None):
        global _rtc_mem
        if data is None:
            return _rtc_mem
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _rtc_mem = bytes(data)


# -- UART --------------------------------------------------------------------------------------
# UART n is the pseudo-terminal named by sim.json "uart": {"n": path} (the J11 module emulator's
# slave side), in raw mode. As on the port: timeout=0 makes read/readinto return what is there and
# None when nothing is (EAGAIN); timeout>0 waits up to that long for the first byte; asyncio's
# StreamReader/StreamWriter work on it (select.poll gets the pty's fd through ioctl GET_FILENO).
# The kernel's pty buffer is larger than rxbuf: an overflow of the driver's ring buffer (bytes
# lost while the interpreter is stalled) is not simulated; rxbuf/txbuf are only kept.

_MP_STREAM_POLL = 3
_MP_STREAM_CLOSE = 4
_MP_STREAM_GET_FILENO = 10
_POLL_RD = 1
_POLL_WR = 4
_EINVAL = 22
_VMIN = 6
_VTIME = 5


class UART(io.IOBase):
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None,
                 rts=None, cts=None, txbuf=256, rxbuf=256, timeout=0, timeout_char=0,
                 invert=0, flow=0):
        path = _sim.cfg().get("uart", {}).get(str(id))
        if not path:
            raise ValueError("UART(%d) doesn't exist" % id)
        self.id = id
        self.baudrate = baudrate
        self.rxbuf = max(rxbuf, 257)  # the driver needs more than its 128-byte hardware FIFO
        self.txbuf = txbuf
        self._timeout = timeout
        self._f = open(path, "r+b", buffering=0)
        self._fd = self._f.fileno()
        termios.setraw(self._fd)
        attr = termios.tcgetattr(self._fd)
        attr[6][_VMIN] = 0
        attr[6][_VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, attr)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def _readable(self, ms):
        return bool(self._poll.poll(ms))

    def any(self):
        return 1 if self._readable(0) else 0

    def readinto(self, buf, nbytes=None):
        if self._timeout > 0 and not self._readable(0):
            self._readable(self._timeout)
        mv = memoryview(buf)
        n = self._f.readinto(mv if nbytes is None else mv[:nbytes])
        return n or None

    def read(self, nbytes=-1):
        buf = bytearray(nbytes if nbytes > 0 else self.rxbuf)
        n = self.readinto(buf)
        return bytes(buf[:n]) if n else None

    def write(self, buf):
        return self._f.write(buf)

    def flush(self):
        pass

    def txdone(self):
        return True

    def deinit(self):
        if self._f is not None:
            self._poll.unregister(self._fd)
            self._f.close()
            self._f = None

    def ioctl(self, req, arg):
        if req == _MP_STREAM_GET_FILENO:
            return self._fd
        if req == _MP_STREAM_POLL:
            r = 0
            if arg & _POLL_RD and self._readable(0):
                r |= _POLL_RD
            if arg & _POLL_WR:
                r |= _POLL_WR
            return r
        if req == _MP_STREAM_CLOSE:
            self.deinit()
            return 0
        return -_EINVAL


# -- Pin ---------------------------------------------------------------------------------------


class Pin:
    IN, OUT, OPEN_DRAIN = 1, 3, 7
    PULL_DOWN, PULL_UP = 1, 2
    IRQ_RISING, IRQ_FALLING = 1, 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        if not 0 <= id <= 39:
            raise ValueError("invalid pin")
        self.id = id
        self._v = value or 0

    def init(self, mode=-1, pull=-1, value=None):
        if value is not None:
            self._v = value

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0
