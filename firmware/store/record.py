# Fixed 24-byte flash records and 16-byte sector headers (layout: docs/flash-log.md).
# Everything packs into / unpacks from caller-owned buffers at an offset, so the log and the index
# never allocate per record beyond the returned tuples.
import struct
from binascii import crc32

from firmware.compat import const

RECORD_SIZE = const(24)
HEADER_SIZE = const(16)
_BODY = const(20)  # bytes covered by a record's CRC
_HDR_BODY = const(12)
HEADER_MAGIC = b"MLG1"
_VERSION = const(1)

TYPE_INTERVAL = const(1)
TYPE_STATE = const(2)

SOURCE_FIXED = const(1)  # 0xE6/0xE7 fixed-time value stamped by the meter with the boundary
SOURCE_CUMULATIVE = const(2)  # 0xE0/0xE2 read by the terminal at the boundary
SOURCE_HISTORY = const(3)  # 0xE1/0xE3 meter history (backfill)
SOURCE_NAMES = {"fixed": SOURCE_FIXED, "cumulative": SOURCE_CUMULATIVE, "history": SOURCE_HISTORY}
# Which source replaces which for one slot: the meter's own boundary stamp beats its history,
# which beats a value the terminal read near the boundary.
_RANK = (0, 3, 1, 2)

FLAG_CLOCK_ADJUSTED = const(0x01)
FLAG_POWER_DOWN = const(0x02)
FLAG_METER_RESET = const(0x04)
FLAG_UNAVAILABLE = const(0x08)
FLAG_CLOCK_INVALID = const(0x10)
FLAGS_DEFINED = const(0x1F)

NO_DATA = const(0xFFFFFFFE)  # ECHONET "no data" sentinel of every cumulative / history value
_U32 = const(0xFFFFFFFF)

# DLMS profile status bits (dlms-cosem.md §2.5)
STATUS_PDN = const(0x80)
STATUS_CAD = const(0x20)
STATUS_DNV = const(0x04)
STATUS_CIV = const(0x02)
STATUS_ERR = const(0x01)

# seq, kind, meter, unit, flags, slot, fwd, rev
_REC_FMT = ">IBBBBIII"
_HDR_FMT = ">4sBBHI"


class RecordError(ValueError):
    pass


def source_code(src):
    """Source as its number; accepts the names "fixed", "cumulative", "history"."""
    if isinstance(src, str):
        code = SOURCE_NAMES.get(src)
        if code is None:
            raise RecordError("unknown source %r" % src)
        return code
    if src not in (SOURCE_FIXED, SOURCE_CUMULATIVE, SOURCE_HISTORY):
        raise RecordError("unknown source %r" % (src,))
    return src


def rank(source, flags):
    """Trust order for one slot: any available value beats an unavailable one, then the source."""
    return (0 if flags & FLAG_UNAVAILABLE else 4) + _RANK[source]


def dlms_status(flags):
    """DLMS profile status byte for a record's flags (mapping in docs/flash-log.md §2.2)."""
    st = 0
    if flags & FLAG_POWER_DOWN:
        st |= STATUS_PDN
    if flags & FLAG_CLOCK_ADJUSTED:
        st |= STATUS_CAD
    if flags & FLAG_UNAVAILABLE:
        st |= STATUS_DNV
    if flags & FLAG_CLOCK_INVALID:
        st |= STATUS_CIV | STATUS_DNV
    if flags & FLAG_METER_RESET:
        st |= STATUS_ERR
    return st


def _u32(name, v):
    if not isinstance(v, int) or v < 0 or v > _U32:
        raise RecordError("%s out of u32 range: %r" % (name, v))


def _u8(name, v):
    if not isinstance(v, int) or v < 0 or v > 255:
        raise RecordError("%s out of u8 range: %r" % (name, v))


def pack_interval(buf, off, seq, meter, slot, fwd, rev, unit, source, flags):
    """Fill a complete interval record (CRC included) at buf[off:off+24]."""
    _u8("meter", meter)
    _u8("unit", unit)
    _u32("slot", slot)
    _u32("fwd", fwd)
    _u32("rev", rev)
    source = source_code(source)
    if not isinstance(flags, int) or flags & ~FLAGS_DEFINED:
        raise RecordError("undefined flag bits in %r" % (flags,))
    struct.pack_into(_REC_FMT, buf, off, seq, (TYPE_INTERVAL << 4) | source, meter, unit, flags,
                     slot, fwd, rev)
    seal(buf, off)


def pack_state(buf, off, seq, key, value):
    """A state record: key 0..255, value 0..2^64-1 split over the slot and fwd fields."""
    _u8("key", key)
    if not isinstance(value, int) or value < 0 or value >> 64:
        raise RecordError("state value out of u64 range: %r" % (value,))
    struct.pack_into(_REC_FMT, buf, off, seq, TYPE_STATE << 4, key, 0, 0, value >> 32,
                     value & _U32, 0)
    seal(buf, off)


def set_seq(buf, off, seq):
    """Stamp a new sequence number and recompute the CRC (used by the log at append time)."""
    struct.pack_into(">I", buf, off, seq)
    seal(buf, off)


def seal(buf, off):
    struct.pack_into(">I", buf, off + _BODY, crc32(memoryview(buf)[off:off + _BODY]))


def is_valid(buf, off):
    # An all-zero slot (a tombstone, is_tombstone) is never valid: the CRC-32 of 20 zero bytes is
    # 0x0fd59b8d, not 0 (checked in test_store_record.py).
    return crc32(memoryview(buf)[off:off + _BODY]) == struct.unpack_from(">I", buf, off + _BODY)[0]


def is_blank(buf, off, n=RECORD_SIZE):
    """True if buf[off:off+n] is all 0xFF (erased, never programmed)."""
    if buf[off] != 0xFF or buf[off + n - 1] != 0xFF:
        return False  # the common cases (programmed record) decided without a loop
    for i in range(off + 1, off + n - 1):
        if buf[i] != 0xFF:
            return False
    return True


def is_tombstone(buf, off):
    """True if buf[off:off+24] is all zeros: a slot sealed at mount (docs/flash-log.md §4). NOR
    programming only clears bits, so such a slot reads zero, and never valid, whatever happens to
    the cells of a program it covered."""
    if buf[off] or buf[off + RECORD_SIZE - 1]:
        return False
    for i in range(off + 1, off + RECORD_SIZE - 1):
        if buf[i]:
            return False
    return True


def seq_of(buf, off):
    return struct.unpack_from(">I", buf, off)[0]


def type_of(buf, off):
    return buf[off + 4] >> 4


def meter_slot(buf, off):
    """(type, meter, slot) without checking the CRC: cheap filter before is_valid."""
    return buf[off + 4] >> 4, buf[off + 5], struct.unpack_from(">I", buf, off + 8)[0]


def unpack_interval(buf, off):
    """(seq, meter, slot, fwd, rev, unit, source, flags) of an interval record."""
    seq, kind, meter, unit, flags, slot, fwd, rev = struct.unpack_from(_REC_FMT, buf, off)
    return seq, meter, slot, fwd, rev, unit, kind & 0x0F, flags


def unpack_state(buf, off):
    """(seq, key, value) of a state record."""
    seq, _kind, key, _u, _f, hi, lo, _r = struct.unpack_from(_REC_FMT, buf, off)
    return seq, key, (hi << 32) | lo


def pack_header(buf, off, generation):
    struct.pack_into(_HDR_FMT, buf, off, HEADER_MAGIC, _VERSION, RECORD_SIZE, 0, generation)
    struct.pack_into(">I", buf, off + _HDR_BODY, crc32(memoryview(buf)[off:off + _HDR_BODY]))


def header_generation(buf, off=0):
    """Generation of a valid sector header, None if the header is blank, -1 if it is bad."""
    if is_blank(buf, off, HEADER_SIZE):
        return None
    crc = struct.unpack_from(">I", buf, off + _HDR_BODY)[0]
    if crc32(memoryview(buf)[off:off + _HDR_BODY]) != crc:
        return -1
    magic, ver, rsize, _res, gen = struct.unpack_from(_HDR_FMT, buf, off)
    if magic != HEADER_MAGIC or ver != _VERSION or rsize != RECORD_SIZE:
        return -1
    return gen
