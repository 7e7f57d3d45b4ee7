# A-XDR data encoding (IEC 62056-6-2 / Green Book "Data" CHOICE) for the COSEM server.
#
# Writer encodes into a caller-provided preallocated bytearray and raises AxdrFull instead of
# growing, so the block-transfer code can roll back a partially written row (w.pos = mark).
# Reader decodes from a memoryview without copying. Date-time attributes are 12-byte octet-strings.
import struct

from firmware import timeutil
from firmware.compat import const

NULL = const(0x00)
ARRAY = const(0x01)
STRUCTURE = const(0x02)
BOOLEAN = const(0x03)
BIT_STRING = const(0x04)
DOUBLE_LONG = const(0x05)
DOUBLE_LONG_UNSIGNED = const(0x06)
OCTET_STRING = const(0x09)
VISIBLE_STRING = const(0x0A)
INTEGER = const(0x0F)
LONG = const(0x10)
UNSIGNED = const(0x11)
LONG_UNSIGNED = const(0x12)
LONG64 = const(0x14)
LONG64_UNSIGNED = const(0x15)
ENUM = const(0x16)

DEVIATION_UNSPECIFIED = const(-32768)  # 0x8000 on the wire
_MAX_DEPTH = const(8)  # nesting limit of the generic decoder (hostile input must not recurse deep)

# Fixed-size integer types: tag -> (struct format, byte count)
_FIXED = {
    BOOLEAN: (">B", 1),
    DOUBLE_LONG: (">i", 4),
    DOUBLE_LONG_UNSIGNED: (">I", 4),
    INTEGER: (">b", 1),
    LONG: (">h", 2),
    UNSIGNED: (">B", 1),
    LONG_UNSIGNED: (">H", 2),
    LONG64: (">q", 8),
    LONG64_UNSIGNED: (">Q", 8),
    ENUM: (">B", 1),
}
# Value ranges checked before packing (struct on MicroPython silently truncates).
_RANGE = {
    DOUBLE_LONG: (-0x80000000, 0x7FFFFFFF),
    DOUBLE_LONG_UNSIGNED: (0, 0xFFFFFFFF),
    INTEGER: (-128, 127),
    LONG: (-32768, 32767),
    UNSIGNED: (0, 255),
    LONG_UNSIGNED: (0, 0xFFFF),
    LONG64: (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
    LONG64_UNSIGNED: (0, 0xFFFFFFFFFFFFFFFF),
    ENUM: (0, 255),
}


class AxdrError(ValueError):
    """Malformed or unsupported A-XDR input."""


class AxdrFull(Exception):
    """The Writer's buffer (or its limit) is full; the caller rolls back to a mark."""


class Writer:
    def __init__(self, buf, start=0, limit=None):
        self.buf = buf
        self.pos = start
        self.limit = len(buf) if limit is None else limit

    def reset(self, start, limit):
        self.pos = start
        self.limit = min(limit, len(self.buf))

    def _need(self, n):
        if self.pos + n > self.limit:
            raise AxdrFull()

    def raw(self, data):
        n = len(data)
        self._need(n)
        self.buf[self.pos : self.pos + n] = data
        self.pos += n

    def byte(self, b):
        self._need(1)
        self.buf[self.pos] = b
        self.pos += 1

    def length(self, n):
        if n < 0x80:
            self.byte(n)
        elif n < 0x100:
            self._need(2)
            self.buf[self.pos] = 0x81
            self.buf[self.pos + 1] = n
            self.pos += 2
        elif n < 0x10000:
            self._need(3)
            self.buf[self.pos] = 0x82
            struct.pack_into(">H", self.buf, self.pos + 1, n)
            self.pos += 3
        else:
            raise AxdrError("length %d too large" % n)

    def null(self):
        self.byte(NULL)

    def array(self, n):
        self.byte(ARRAY)
        self.length(n)

    def structure(self, n):
        self.byte(STRUCTURE)
        self.length(n)

    def boolean(self, v):
        self._need(2)
        self.buf[self.pos] = BOOLEAN
        self.buf[self.pos + 1] = 1 if v else 0
        self.pos += 2

    def integer(self, tag, v):
        """Any fixed-size integer type (double-long ... enum), range-checked."""
        fmt, n = _FIXED[tag]
        if tag in _RANGE:
            lo, hi = _RANGE[tag]
            if v < lo or v > hi:
                raise AxdrError("value %d out of range for tag 0x%02x" % (v, tag))
        self._need(1 + n)
        self.buf[self.pos] = tag
        struct.pack_into(fmt, self.buf, self.pos + 1, v)
        self.pos += 1 + n

    def u8(self, v):
        self.integer(UNSIGNED, v)

    def i8(self, v):
        self.integer(INTEGER, v)

    def i16(self, v):
        self.integer(LONG, v)

    def u16(self, v):
        self.integer(LONG_UNSIGNED, v)

    def u32(self, v):
        self.integer(DOUBLE_LONG_UNSIGNED, v)

    def enum(self, v):
        self.integer(ENUM, v)

    def octets(self, data, tag=OCTET_STRING):
        self.byte(tag)
        self.length(len(data))
        self.raw(data)

    def visible(self, data):
        self.octets(data, VISIBLE_STRING)

    def limbs(self, tag, limbs, n):
        """An unsigned integer of n 16-bit limbs (least significant first) as `tag`: n = 2
        double-long-unsigned, 4 long64-unsigned. Values past 2^30 never become a big int."""
        self._need(1 + 2 * n)
        b = self.buf
        p = self.pos
        b[p] = tag
        for i in range(n):
            v = limbs[n - 1 - i]
            b[p + 1 + 2 * i] = v >> 8
            b[p + 2 + 2 * i] = v & 0xFF
        self.pos = p + 1 + 2 * n

    def bit_string(self, nbits, data):
        if (nbits + 7) // 8 != len(data):
            raise AxdrError("bit-string of %d bits needs %d bytes" % (nbits, (nbits + 7) // 8))
        self.byte(BIT_STRING)
        self.length(nbits)
        self.raw(data)

    def datetime(self, t2k, deviation, offset_min, status=0):
        """09 0C + COSEM date-time of t2k rendered as local time (UTC + offset_min)."""
        self._need(14)
        self.buf[self.pos] = OCTET_STRING
        self.buf[self.pos + 1] = 12
        pack_datetime(self.buf, self.pos + 2, t2k, deviation, offset_min, status)
        self.pos += 14


# The calendar fields of the last local day rendered: [day number, year, month, day, weekday].
# A profile read renders 48 rows per day; decoding each date anew allocated two tuples per row
# (about 160 bytes of garbage on the unix port), this list is updated in place once per day.
_DAY = [None, 0, 0, 0, 0]


def pack_datetime(buf, off, t2k, deviation, offset_min, status=0):
    """Write the 12-byte COSEM date-time of t2k (local = UTC + offset_min) at buf[off]."""
    t = t2k + offset_min * 60
    days = t // timeutil.DAY_S
    rem = t - days * timeutil.DAY_S
    c = _DAY
    if c[0] != days:
        c[1], c[2], c[3] = timeutil.civil_from_days(days)
        c[4] = (days + 5) % 7 + 1  # 2000-01-01 was a Saturday (6); 1 = Monday
        c[0] = days
    struct.pack_into(">HBBBBBBBhB", buf, off, c[1], c[2], c[3], c[4], rem // 3600,
                     (rem // 60) % 60, rem % 60, 0, deviation, status)


def datetime_bytes(t2k, deviation, offset_min, status=0):
    b = bytearray(12)
    pack_datetime(b, 0, t2k, deviation, offset_min, status)
    return bytes(b)


UNSPECIFIED_DATETIME = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x80\x00\xff"

_MDAYS = b"\x1f\x1c\x1f\x1e\x1f\x1e\x1f\x1f\x1e\x1f\x1e\x1f"


def parse_datetime(b, deviation_sign, default_offset_min):
    """t2k of a 12-byte COSEM date-time.

    deviation_sign: -1 = Blue Book (UTC = local + deviation), +1 = flipped convention.
    deviation 0x8000 (not specified) means local time with default_offset_min (local - UTC).
    day-of-week is ignored (0xFF or any value); hundredths are truncated.
    """
    if len(b) != 12:
        raise AxdrError("date-time must be 12 bytes, got %d" % len(b))
    y, mo, d, _wd, h, mi, s, hs, dev, _st = struct.unpack_from(">HBBBBBBBhB", b, 0)
    if y == 0xFFFF or not 1 <= mo <= 12 or d < 1:
        raise AxdrError("date-time has a wildcard or invalid date")
    leap = mo == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if d > _MDAYS[mo - 1] + (1 if leap else 0):
        raise AxdrError("date-time day %d invalid for month %d" % (d, mo))
    if h > 23 or mi > 59 or s > 59 or (hs > 99 and hs != 0xFF):
        raise AxdrError("date-time has a wildcard or invalid time")
    if dev == DEVIATION_UNSPECIFIED:
        offset = default_offset_min
    else:
        if dev < -840 or dev > 840:
            raise AxdrError("date-time deviation %d out of range" % dev)
        offset = -dev if deviation_sign < 0 else dev
    return timeutil.t2k_from_fields(y, mo, d, h, mi, s) - offset * 60


class Reader:
    def __init__(self, data, pos=0, end=None):
        self.mv = data if isinstance(data, memoryview) else memoryview(data)
        self.pos = pos
        self.end = len(self.mv) if end is None else end

    def remaining(self):
        return self.end - self.pos

    def _need(self, n):
        if self.pos + n > self.end:
            raise AxdrError("truncated: need %d bytes at offset %d" % (n, self.pos))

    def u8(self):
        self._need(1)
        v = self.mv[self.pos]
        self.pos += 1
        return v

    def peek(self):
        self._need(1)
        return self.mv[self.pos]

    def unpack(self, fmt, n):
        self._need(n)
        v = struct.unpack_from(fmt, self.mv, self.pos)[0]
        self.pos += n
        return v

    def take(self, n):
        self._need(n)
        v = self.mv[self.pos : self.pos + n]
        self.pos += n
        return v

    def length(self):
        b = self.u8()
        if b < 0x80:
            return b
        if b == 0x81:
            return self.u8()
        if b == 0x82:
            return self.unpack(">H", 2)
        raise AxdrError("unsupported length prefix 0x%02x" % b)

    def expect(self, tag):
        t = self.u8()
        if t != tag:
            raise AxdrError("expected tag 0x%02x, got 0x%02x" % (tag, t))

    def typed_int(self, tag):
        """Read `tag` + fixed-size integer; raises on another tag."""
        self.expect(tag)
        fmt, n = _FIXED[tag]
        return self.unpack(fmt, n)

    def any_int(self):
        """An integer of any fixed-size integer type (tag included)."""
        tag = self.u8()
        if tag not in _FIXED or tag == BOOLEAN:
            raise AxdrError("expected an integer, got tag 0x%02x" % tag)
        fmt, n = _FIXED[tag]
        return self.unpack(fmt, n)

    def octets(self, tag=OCTET_STRING):
        self.expect(tag)
        return self.take(self.length())

    def container(self, tag):
        self.expect(tag)
        return self.length()

    def value(self, depth=0):
        """Decode one Data element into Python values.

        null -> None, array/structure -> list, boolean -> bool, integers/enum -> int,
        octet/visible-string -> bytes, bit-string -> (nbits, bytes).
        """
        tag = self.u8()
        if tag == NULL:
            return None
        if tag == ARRAY or tag == STRUCTURE:
            if depth >= _MAX_DEPTH:
                raise AxdrError("nesting deeper than %d" % _MAX_DEPTH)
            n = self.length()
            if n > self.remaining():  # every element takes >= 1 byte
                raise AxdrError("%d elements cannot fit in %d bytes" % (n, self.remaining()))
            out = []
            for _ in range(n):
                out.append(self.value(depth + 1))
            return out
        if tag == BOOLEAN:
            return self.u8() != 0
        if tag in _FIXED:
            fmt, n = _FIXED[tag]
            return self.unpack(fmt, n)
        if tag == OCTET_STRING or tag == VISIBLE_STRING:
            return bytes(self.take(self.length()))
        if tag == BIT_STRING:
            nbits = self.length()
            return (nbits, bytes(self.take((nbits + 7) // 8)))
        raise AxdrError("unsupported data tag 0x%02x" % tag)

    def skip(self, depth=0):
        """Skip one Data element without allocating."""
        tag = self.u8()
        if tag == NULL:
            return
        if tag == ARRAY or tag == STRUCTURE:
            if depth >= _MAX_DEPTH:
                raise AxdrError("nesting deeper than %d" % _MAX_DEPTH)
            n = self.length()
            if n > self.remaining():
                raise AxdrError("%d elements cannot fit in %d bytes" % (n, self.remaining()))
            for _ in range(n):
                self.skip(depth + 1)
            return
        if tag in _FIXED:
            self._need(_FIXED[tag][1])
            self.pos += _FIXED[tag][1]
            return
        if tag == OCTET_STRING or tag == VISIBLE_STRING:
            n = self.length()
            self._need(n)
            self.pos += n
            return
        if tag == BIT_STRING:
            n = (self.length() + 7) // 8
            self._need(n)
            self.pos += n
            return
        raise AxdrError("unsupported data tag 0x%02x" % tag)
