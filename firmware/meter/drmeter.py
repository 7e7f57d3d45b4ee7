# Property decoders for class 0x028E (distributed generator's electric energy meter).
#
# Values stay as the meter's raw 9-digit counters plus the 0xD4 unit code: integers only, nothing
# scaled here. 0xFFFFFFFE ("no data") becomes None; any other out-of-range value is an error, never
# clamped. Meter timestamps are local time; they are converted to UTC t2k with the configured
# offset (minutes, local minus UTC; JST = +540).
import struct

from firmware import timeutil, units
from firmware.compat import const

NO_DATA = 0xFFFFFFFE  # above 2^30: a long int on the ESP32, so not a const()
MAX_RAW = const(999999999)
MODULUS = const(1000000000)  # 9-digit counters wrap here (assumed, see docs/echonet.md)
HISTORY_SLOTS = const(48)
HISTORY_LEN = const(194)  # 2-byte day + 48 x u32
FIXED_TIME_LEN = const(11)
MAX_DAY = const(99)
DAY_UNSET = const(0xFFFF)

# EPCs of class 0x028E used by the terminal
EPC_OPERATING = const(0x80)
EPC_RELEASE = const(0x82)
EPC_IDENT = const(0x83)
EPC_MAKER = const(0x8A)
EPC_DATE = const(0x98)
EPC_DEVICE_TYPE = const(0xD0)
EPC_DEVICE_ID = const(0xD1)
EPC_TOLERANCE = const(0xD2)
EPC_RETENTION = const(0xD3)
EPC_UNIT = const(0xD4)
EPC_HISTORY_DAY = const(0xD5)
EPC_METERED_ID = const(0xD6)
EPC_TIME = const(0xDA)
EPC_TIME_SYNC = const(0xDB)
EPC_HIST_IN = const(0xE1)
EPC_HIST_OUT = const(0xE3)
EPC_FIXED_IN = const(0xE6)
EPC_FIXED_OUT = const(0xE7)

class MeterDataError(ValueError):
    pass


# The other errors of a meter request or read (transport and reader raise them), here with
# MeterDataError so that the loops that catch them (app/metering, app/backfill) import only this
# small module.
class MeterTimeout(Exception):
    pass


class MeterError(ValueError):
    """The meter answered, but not with what the read needs (refused, missing, inconsistent)."""


class UnitChanged(MeterError):
    """The meter's unit/coefficient changed since read_unit() (meter rebooted or replaced):
    call read_unit() again before storing values read from now on."""


def _need_len(edt, n, what):
    if len(edt) != n:
        raise MeterDataError("%s: EDT of %d bytes, expected %d" % (what, len(edt), n))


def unit_exponent(code):
    """Power of ten of kWh for a unit code; MeterDataError for a code not in the table."""
    e = units.exponent(code)
    if e is None:
        raise MeterDataError("unknown unit code 0x%02X" % code)
    return e


def decode_unit(edt):
    _need_len(edt, 1, "0xD4 unit")
    unit_exponent(edt[0])
    return edt[0]


def check_raw(raw, what="value", max_raw=MAX_RAW):
    """raw counter, or None for the no-data sentinel; MeterDataError above max_raw (the meter's
    digit count: 9 for 0x028E, 0xD7 for 0x0288/0x028D)."""
    if raw == NO_DATA:
        return None
    if raw < 0 or raw > max_raw:
        raise MeterDataError("%s 0x%08X exceeds the meter's %d digits"
                             % (what, raw, len(str(max_raw))))
    return raw


def local_to_t2k(y, mo, d, h, mi, s, tz_offset_min, what="timestamp"):
    """UTC t2k of a meter-local calendar time; MeterDataError if a field is out of range."""
    if not (2000 <= y <= 2099 and 1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60
            and s < 60):
        raise MeterDataError("%s %04d-%02d-%02d %02d:%02d:%02d is not a valid date/time"
                             % (what, y, mo, d, h, mi, s))
    days = timeutil.days_from_civil(y, mo, d)
    if timeutil.civil_from_days(days) != (y, mo, d):
        raise MeterDataError("%s %04d-%02d-%02d does not exist" % (what, y, mo, d))
    return days * timeutil.DAY_S + h * 3600 + mi * 60 + s - tz_offset_min * 60


def decode_fixed_time(edt, tz_offset_min=540, boundary=False, what="0xE6/0xE7", max_raw=MAX_RAW):
    """(t2k_utc, raw|None) from an 11-byte fixed-time EDT: YYYY MM DD hh mm ss u32.
    A never-captured value (timestamp bytes all 0xFF) gives (None, None).
    boundary=True also rejects a stamp that is not hh:00:00 or hh:30:00 local time."""
    _need_len(edt, FIXED_TIME_LEN, what)
    y, mo, d, h, mi, s, raw = struct.unpack_from(">HBBBBBI", edt, 0)
    if y == 0xFFFF and mo == 0xFF and d == 0xFF and h == 0xFF and mi == 0xFF and s == 0xFF:
        if raw != NO_DATA:
            raise MeterDataError("%s: unset timestamp with a value" % what)
        return None, None
    t = local_to_t2k(y, mo, d, h, mi, s, tz_offset_min, what)
    if boundary and (s != 0 or mi % 30 != 0):
        raise MeterDataError("%s stamped %04d-%02d-%02d %02d:%02d:%02d: not a :00/:30 boundary"
                             % (what, y, mo, d, h, mi, s))
    return t, check_raw(raw, what, max_raw)


def decode_history(edt, what="0xE1/0xE3", max_raw=MAX_RAW):
    """(day, [48 x raw|None]) from a history EDT; slot i is local 00:00 + 30 min x i."""
    _need_len(edt, HISTORY_LEN, what)
    vals = struct.unpack_from(">H48I", edt, 0)
    day = vals[0]
    out = [None] * HISTORY_SLOTS
    for i in range(HISTORY_SLOTS):
        out[i] = check_raw(vals[1 + i], what, max_raw)
    return day, out


def encode_day(day, width=2):
    """Day-selector EDT for history day 0..99 (0 = today): 2 bytes (0x028E 0xD5) or 1 byte
    (0x0288 0xE5, 0x028D 0xE0)."""
    if not 0 <= day <= MAX_DAY:
        raise MeterDataError("history day %d outside 0..99" % day)
    if width == 1:
        return bytes((day,))
    return bytes((day >> 8, day & 0xFF))


def decode_retention(edt):
    """0xD3: days of history kept (0 = today only), or None for 0xFFFF (no history)."""
    _need_len(edt, 2, "0xD3 retention")
    v = (edt[0] << 8) | edt[1]
    if v == DAY_UNSET:
        return None
    if v > MAX_DAY:
        raise MeterDataError("0xD3 retention %d outside 0..99" % v)
    return v


def decode_time(edt):
    """0xDA current time: (hh, mm, ss)."""
    _need_len(edt, 3, "0xDA time")
    h, m, s = edt[0], edt[1], edt[2]
    if h > 23 or m > 59 or s > 59:
        raise MeterDataError("0xDA time %02d:%02d:%02d invalid" % (h, m, s))
    return h, m, s


def decode_date(edt):
    """0x98 current date: (year, month, day)."""
    _need_len(edt, 4, "0x98 date")
    y, mo, d = struct.unpack_from(">HBB", edt, 0)
    local_to_t2k(y, mo, d, 0, 0, 0, 0, "0x98 date")  # validates
    return y, mo, d


def meter_clock_t2k(date_edt, time_edt, tz_offset_min=540):
    """UTC t2k of the meter's clock from 0x98 + 0xDA."""
    y, mo, d = decode_date(date_edt)
    h, mi, s = decode_time(time_edt)
    return local_to_t2k(y, mo, d, h, mi, s, tz_offset_min)


def history_slot_t2k(day_local_date, index, tz_offset_min=540):
    """UTC t2k of history slot `index` (0..47) of local date (y, m, d)."""
    y, mo, d = day_local_date
    return local_to_t2k(y, mo, d, 0, 0, 0, tz_offset_min) + index * timeutil.SLOT_S


def delta(prev, new, modulus=MODULUS, wrap_window=None):
    """Classify a counter step: ("ok", d) for new >= prev; ("wrap", d) when the counter rolled
    over modulus and the implied step d is below wrap_window (default modulus // 100);
    ("reset", None) for any other decrease (meter replaced or reset): never a negative or huge
    delta."""
    if not (0 <= prev < modulus and 0 <= new < modulus):
        raise MeterDataError("counter %d -> %d outside 0..%d" % (prev, new, modulus - 1))
    if new >= prev:
        return ("ok", new - prev)
    d = new + (modulus - prev)
    if wrap_window is None:
        wrap_window = modulus // 100
    if d < wrap_window:
        return ("wrap", d)
    return ("reset", None)
