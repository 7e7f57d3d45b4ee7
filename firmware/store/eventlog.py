# The event log store (format: docs/events.md): fixed 24-byte event records appended to two
# segment files on the board's filesystem; when the current segment is full the older one is
# truncated and becomes the current one. Appends only, one record per open/write/close, so a power
# cut loses at most the event being written. Reads stream record by record through one
# preallocated 24-byte buffer; no table of events is kept in RAM.
#
# The filesystem is an argument (`fs`: open(name, mode), and optionally fsync(f)); the default is
# the port's own (LittleFS on the ESP32). Producers call record(code, detail) from anywhere: it
# never raises on a filesystem error (logged and counted instead).
import os
import struct
from array import array
from binascii import crc32

from firmware import events as ev
from firmware import log
from firmware.compat import const, ticks_add, ticks_diff, ticks_ms

RECORD_SIZE = const(24)
_BODY = const(20)
TYPE_EVENT = const(0x30)
NO_TIME = const(0xFFFFFFFF)  # time field of an event recorded before the clock was set
_FMT = ">IBBHIiI"  # seq, type, code, reserved, time, detail, reserved
_I32_MAX = const(0x7FFFFFFF)
DETAIL_NO_OLD_TIME = -0x80000000  # CLOCK_SET detail when the clock had no time before
_BUCKETS = const(16)  # token buckets, by code & 15 (codes are small: 1..12 today)


class EventsGone(Exception):
    """The events a read was positioned on were dropped by a rotation (the read cannot go on)."""


def pack(buf, seq, code, t2k, detail):
    """Write one event record into buf (24 bytes), CRC included."""
    struct.pack_into(_FMT, buf, 0, seq, TYPE_EVENT, code, 0,
                     NO_TIME if t2k is None else t2k, detail, 0)
    struct.pack_into(">I", buf, _BODY, crc32(memoryview(buf)[:_BODY]))


def _u32(b, off):
    return (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]


def unpack(buf, body=None):
    """(seq, t2k | None, code, detail) of a valid record in buf, or None if it is not valid.
    body: memoryview(buf)[:20], kept by the caller so that a read allocates only the tuple
    (struct.unpack_from and a fresh memoryview cost ~250 B per record on the unix port)."""
    if buf[4] != TYPE_EVENT:
        return None
    if crc32(body if body is not None else memoryview(buf)[:_BODY]) != _u32(buf, _BODY):
        return None
    t = _u32(buf, 8)
    d = _u32(buf, 12)
    if d & 0x80000000:
        d -= 0x100000000
    return (_u32(buf, 0), None if t == NO_TIME else t, buf[5], d)


def clamp_i32(v):
    if v > _I32_MAX:
        return _I32_MAX
    if v < -_I32_MAX:
        return -_I32_MAX  # -2^31 is kept for "no value" (CLOCK_SET with no old time)
    return v


class _PortFs:
    """The port's filesystem: builtin open, os.fsync where it exists."""

    def open(self, name, mode):
        return open(name, mode)

    def fsync(self, f):
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())


class Cursor:
    """A read position over the log, oldest event first: part 0 = older segment, 1 = current.
    Holds an open file only while a read is under way (EventLog.close releases it)."""

    def __init__(self, epoch):
        self.part = 0
        self.slot = 0
        self.epoch = epoch
        self.f = None


class EventLog:
    tag = "events"  # log tag (an instance attribute only when another is given)

    def __init__(self, path, capacity=256, clock=None, fs=None, burst=8, refill_s=300,
                 tag="events"):
        if capacity < 1:
            raise ValueError("event log capacity must be at least 1")
        self.path = path  # segment files path.0 and path.1 (names built when opened)
        self.capacity = capacity
        self.clock = clock
        self.fs = fs or _PortFs()
        if tag != "events":
            self.tag = tag
        self.burst = burst
        self.refill_ms = max(1, refill_s) * 1000  # at least a second (never a division by 0)
        self._buf = bytearray(RECORD_SIZE)
        self._rbuf = bytearray(RECORD_SIZE)  # reads: a record() between two reads keeps it
        self._rbody = memoryview(self._rbuf)[:_BODY]
        self._slots = [0, 0]  # 24-byte slots in each segment file
        self._valid = [0, 0]  # valid records in each segment file
        self._cur = 0  # index of the current segment file
        self.next_seq = 1
        self.rotations = 0  # increases at every rotation: cursors made before it are stale
        self.last = None  # (seq, t2k | None, code, detail) of the newest event
        self._tokens = bytearray(_BUCKETS)
        for i in range(_BUCKETS):
            self._tokens[i] = min(burst, 255)
        self._refill_at = ticks_ms()
        self._suppressed = array("I", bytes(4 * _BUCKETS))  # not a list of 16 ints (heap)
        self._remount = False  # a write failed part-way: scan (and pad) before the next one
        self.stats = {"recorded": 0, "bad": 0, "errors": 0, "suppressed": 0, "padded": 0}

    def name(self, k):
        """Segment file k (0 or 1)."""
        return "%s.%d" % (self.path, k)

    # --- mount --------------------------------------------------------------------------
    def mount(self):
        """Scan both segments, find the head by sequence, pad a torn tail. Never raises on the
        files' content."""
        maxs = [0, 0]
        tails = [0, 0]
        self.last = None
        self._remount = False
        self.stats["bad"] = 0
        for k in (0, 1):
            maxs[k], tails[k] = self._scan(k)
        cur = 1 if maxs[1] > maxs[0] else 0
        self._cur = cur
        self.next_seq = max(maxs) + 1
        if tails[cur]:
            self._pad(cur, tails[cur])
        log.info(self.tag, "mounted: %d events (%d bad slots), next seq %d"
                 % (self.count(), self.stats["bad"], self.next_seq))
        return self.stats

    def _scan(self, k):
        """(highest seq, bytes of a short tail) of segment k; counts its slots."""
        self._slots[k] = 0
        self._valid[k] = 0
        try:
            f = self.fs.open(self.name(k), "rb")
        except OSError:
            return 0, 0  # never written
        buf = self._rbuf
        top = 0
        bad = 0
        tail = 0
        try:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                if n < RECORD_SIZE:
                    tail = n  # torn tail: the last read of the file
                    break
                self._slots[k] += 1
                e = unpack(buf, self._rbody)
                if e is None:
                    bad += 1
                    continue
                self._valid[k] += 1
                if e[0] > top:
                    top = e[0]
                if self.last is None or e[0] > self.last[0]:
                    self.last = e
        except OSError as e:
            log.error(self.tag, "%s unreadable after %d slots: %s" % (self.name(k),
                                                                    self._slots[k], e))
        finally:
            f.close()
        if bad or tail:
            self.stats["bad"] += bad + (1 if tail else 0)
            log.warn(self.tag, "%s: %d bad slot(s)%s skipped" % (
                self.name(k), bad, " and a torn tail of %d bytes" % tail if tail else ""))
        return top, tail

    def _pad(self, k, tail):
        """Zero bytes up to the next record boundary: the torn record becomes one bad slot."""
        try:
            with self.fs.open(self.name(k), "ab") as f:
                f.write(bytes(RECORD_SIZE - tail))
                f.flush()
                self.fs.fsync(f)
            self._slots[k] += 1
            self.stats["padded"] += 1
        except OSError as e:
            # Appending after an unpadded tail would misalign every later record, and rotating
            # would drop the older segment: nothing is written until a mount pads it.
            log.error(self.tag, "%s: torn tail not padded: %s" % (self.name(k), e))
            self._remount = True

    # --- writing ------------------------------------------------------------------------
    def record(self, code, detail=0):
        """Store one event stamped with the calendar time now; the sequence number, or None if
        it was not stored (flood limit, filesystem error, bad arguments: logged)."""
        if code < 1 or code > 255:
            log.error(self.tag, "event code %r refused" % (code,))
            return None
        if not self._take_token(code):
            return None
        t = self.clock.now_t2k() if self.clock is not None else None
        if t is not None and (t < 0 or t >= NO_TIME):
            t = None
        if detail < -_I32_MAX - 1 or detail > _I32_MAX:
            detail = clamp_i32(detail)
        if self._remount:
            self.mount()
            if self._remount:  # still not padded: logged by _pad
                self.stats["errors"] += 1
                return None
        seq = self.next_seq
        pack(self._buf, seq, code, t, detail)
        k = self._cur
        mode = "ab"
        if self._slots[k] >= self.capacity:
            k = 1 - k  # rotate: the older segment's events are the ones dropped
            mode = "wb"
        try:
            if mode == "wb":
                self.rotations += 1
                self._slots[k] = 0
                self._valid[k] = 0
                self._cur = k
            with self.fs.open(self.name(k), mode) as f:
                self._slots[k] += 1  # consumed even if the write fails: never written twice
                self.next_seq = seq + 1
                f.write(self._buf)
                f.flush()
                self.fs.fsync(f)
        except OSError as e:
            self.stats["errors"] += 1
            self._remount = True  # a partial record may be in the file: pad it before appending
            log.error(self.tag, "event %d (%s) not stored: %s"
                      % (code, ev.NAMES.get(code, "?"), e))
            return None
        self._valid[k] += 1
        self.stats["recorded"] += 1
        self.last = (seq, t, code, detail)
        return seq

    def _take_token(self, code):
        if self.burst <= 0:
            return True
        now = ticks_ms()
        d = ticks_diff(now, self._refill_at)
        if d >= self.refill_ms:
            n = d // self.refill_ms
            if n >= self.burst:
                self._refill_at = now
            else:
                self._refill_at = ticks_add(self._refill_at, n * self.refill_ms)
            cap = min(self.burst, 255)
            for i in range(_BUCKETS):
                self._tokens[i] = min(self._tokens[i] + n, cap)
        b = code & (_BUCKETS - 1)
        if self._tokens[b] == 0:
            if self._suppressed[b] == 0:
                log.warn(self.tag, "event %d (%s) repeats too often: not stored for a while"
                         % (code, ev.NAMES.get(code, "?")))
            self._suppressed[b] += 1
            self.stats["suppressed"] += 1
            return False
        self._tokens[b] -= 1
        if self._suppressed[b]:
            log.warn(self.tag, "%d events of code %d were not stored (flood limit)"
                     % (self._suppressed[b], code))
            self._suppressed[b] = 0
        return True

    # --- reading ------------------------------------------------------------------------
    def count(self):
        return self._valid[0] + self._valid[1]

    def max_entries(self):
        """The most events the log can hold (profile_entries)."""
        return 2 * self.capacity

    def cursor(self):
        return Cursor(self.rotations)

    def read(self, c):
        """The next valid event at cursor c, (seq, t2k | None, code, detail), or None at the end.
        EventsGone if a rotation dropped the segment c was reading. The tuple is the only
        allocation per event; the file stays open until close(c)."""
        if c.epoch != self.rotations:
            # A rotation since c was made: what was the older segment is gone, what was the
            # current one is the older one now.
            if c.part == 0 or self.rotations - c.epoch > 1:
                self.close(c)
                raise EventsGone()
            self.close(c)
            c.part -= 1
            if c.part == 1:
                c.slot = 0  # it had read the whole segment: the new current one is all new
            c.epoch = self.rotations
        buf = self._rbuf
        while c.part < 2:
            k = self._cur if c.part == 1 else 1 - self._cur
            if c.slot >= self._slots[k]:
                self.close(c)
                c.part += 1
                c.slot = 0
                continue
            if c.f is None:
                try:
                    c.f = self.fs.open(self.name(k), "rb")
                    c.f.seek(c.slot * RECORD_SIZE)
                except OSError as e:
                    log.error(self.tag, "%s unreadable: %s" % (self.name(k), e))
                    self.close(c)
                    raise EventsGone() from None
            n = c.f.readinto(buf)
            if n != RECORD_SIZE:  # shorter than mount saw: the file changed under the read
                self.close(c)
                raise EventsGone()
            c.slot += 1
            e = unpack(buf, self._rbody)
            if e is not None:
                return e
        return None

    def close(self, c):
        f = c.f
        if f is not None:
            c.f = None
            try:
                f.close()
            except OSError:
                pass
