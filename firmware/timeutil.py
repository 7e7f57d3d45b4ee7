# Calendar arithmetic shared by every layer, independent of the runtime's epoch.
#
# Internal calendar time is "t2k": integer seconds since 2000-01-01T00:00:00Z. It stays a small
# int on the ESP32 (31-bit) until 2034, whereas Unix seconds do not. The ESP32 port's own epoch is
# 2000 and the unix port's is 1970, so nothing here calls time.gmtime()/mktime().
#
# A 30-minute slot number is Unix epoch seconds // 1800 (the definition the store and the DLMS
# profile use). Because 946684800 (= 2000-01-01 in Unix seconds) is a multiple of 1800,
# slot = t2k // 1800 + SLOT_T2K_BASE exactly.
from firmware.compat import const

UNIX_T2K = const(946684800)  # Unix seconds at 2000-01-01T00:00:00Z
SLOT_S = const(1800)
SLOT_T2K_BASE = const(525936)  # = UNIX_T2K // SLOT_S
DAY_S = const(86400)


def days_from_civil(y, m, d):
    """Days since 2000-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 730425  # 730425 = days from 0000-03-01 to 2000-01-01


def civil_from_days(n):
    """(year, month, day) for n days since 2000-01-01."""
    n += 730425
    era = n // 146097
    doe = n - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (m <= 2), m, d)


def t2k_from_fields(y, mo, d, h=0, mi=0, s=0):
    return days_from_civil(y, mo, d) * DAY_S + h * 3600 + mi * 60 + s


def fields_from_t2k(t):
    """(year, month, day, hour, minute, second, weekday) with weekday 1 = Monday ... 7 = Sunday."""
    days = t // DAY_S
    rem = t - days * DAY_S
    y, mo, d = civil_from_days(days)
    wd = (days + 5) % 7 + 1  # 2000-01-01 was a Saturday (6)
    return (y, mo, d, rem // 3600, (rem // 60) % 60, rem % 60, wd)


def slot_of_t2k(t):
    return t // SLOT_S + SLOT_T2K_BASE


def t2k_of_slot(slot):
    return (slot - SLOT_T2K_BASE) * SLOT_S


def unix_of_t2k(t):
    return t + UNIX_T2K


def t2k_of_unix(u):
    return u - UNIX_T2K


def iso(t, offset_min=0):
    """ISO-8601 text for logs, e.g. 2024-04-01T12:30:00+09:00 (offset = local minus UTC)."""
    if t is None:
        return "unset"
    y, mo, d, h, mi, s, _ = fields_from_t2k(t + offset_min * 60)
    if offset_min == 0:
        tz = "Z"
    else:
        a = offset_min if offset_min > 0 else -offset_min
        tz = "%s%02d:%02d" % ("+" if offset_min > 0 else "-", a // 60, a % 60)
    return "%04d-%02d-%02dT%02d:%02d:%02d%s" % (y, mo, d, h, mi, s, tz)
