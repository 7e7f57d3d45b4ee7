# 30-minute interval records per (meter, slot) over a FlashLog, with a small RAM slot index.
#
# The newest valid record of a slot is its value. A later record for a stored slot is written only
# if it comes from a better source (or replaces an unavailable value), or adds status flags; a
# repeat of the stored value writes nothing. Reads resolve windows of slots against only the
# sectors whose slot range overlaps, so memory stays bounded for any range (docs/flash-log.md §6).
#
# Over the ~400 lines of a module: the slot index, the write rule and the windowed reads keep one
# state consistent across a power cut; one module keeps that reasoning in one place.
import struct
from array import array

from firmware import log
from firmware.compat import const
from firmware.store import record
from firmware.store.flashlog import CHUNK as _CHUNK
from firmware.store.record import RECORD_SIZE, TYPE_INTERVAL

_WINDOW = const(96)  # slots resolved per step of rows(): 2 days of one meter
# The RAM index holds slots as signed 32-bit array items that stay small ints on the ESP32
# (31-bit): slots are below 2^30 - 1 (t2k below 2^30 x 1800 s, beyond year 60000), and an empty
# (sector, meter) entry is lo = _EMPTY_LO, hi = -1 (lo > hi).
_EMPTY_LO = const(0x3FFFFFFF)
SLOT_LIMIT = const(0x3FFFFFFF)  # slots are < SLOT_LIMIT
_SLOT_MAX = const(0xFFFFFFFF)
_MARK_EVERY = const(8)  # windows between two rows_by_index marks (16 days of one meter)


class StoreError(ValueError):
    pass


def _seq(b, off):
    # sequence numbers stay below 2^30 (a billion records), so this is a small int on the ESP32
    return (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]


class _Window:
    """The window table of one range read. It borrows the store's shared table; if another read
    took it while this one was suspended at a yield, the window is re-read into a private table
    (so an abandoned read costs nothing, and interleaved reads stay correct)."""

    def __init__(self, store):
        self.store = store
        self.token = -1
        self.private = None
        self.args = None

    def fill(self, meter, a, e):
        self.args = (meter, a, e)
        st = self.store
        if self.private is None:
            st._table_token += 1
            self.token = st._table_token
            st._fill(meter, a, e, st._table)
        else:
            st._fill(meter, a, e, self.private)

    def table(self):
        st = self.store
        if self.private is not None:
            return self.private
        if st._table_token != self.token:
            self.private = bytearray(_WINDOW * RECORD_SIZE)
            st.private_tables += 1
            meter, a, e = self.args
            st._fill(meter, a, e, self.private)
            return self.private
        return st._table


class IntervalStore:
    def __init__(self, flashlog, max_meters=4, tag="store"):
        if max_meters < 1 or max_meters > 256:
            raise StoreError("max_meters must be 1..256")
        self.log = flashlog
        self.tag = tag
        self.max_meters = max_meters
        # per (sector, meter): min slot, max slot of the valid interval records there, read
        # item by item (no tuple per lookup: lookups walk every sector of the ring)
        self._idx = array("i", (0 for _ in range(flashlog.n * max_meters * 2)))
        for s in range(flashlog.n):
            self._clear(s)
        self._count = [None] * max_meters  # distinct slots, computed lazily
        self._rec = bytearray(RECORD_SIZE)  # the record _find() found
        self._found = -1  # and its sector
        self._new = bytearray(RECORD_SIZE)  # the record put() appends
        # One window table shared by every range read, allocated once: a fresh 2.3 KB table per
        # call fragments a small heap (a DLMS block transfer starts a new read per block). A
        # read that finds the table taken by another read when it resumes refills its window
        # into a private table (see _window).
        self._table = bytearray(_WINDOW * RECORD_SIZE)
        self._table_token = 0
        self.private_tables = 0  # windows that had to leave the shared table (interleaved reads)
        self._hit = None  # (meter, slot) known to be stored: has() for the slot just written
        # per meter: [(rows before slot, slot)] every _MARK_EVERY windows, or None (unknown)
        self._marks = [None] * max_meters
        self._marks_version = 0
        self.unindexed = 0  # records of meters >= max_meters (configuration shrank)
        # fn(meter, slot), called before a record for the slot is appended: a listener that must
        # not lose the slot across a power cut (the push cursor) persists what it needs first
        self.put_listeners = []
        flashlog.drop_listeners.append(self._forget)
        if flashlog.mounted:
            flashlog.scan(self._index_record)
        else:
            flashlog.mount(visit=self._index_record)

    # --- index --------------------------------------------------------------------------
    def _clear(self, s):
        m = self.max_meters
        idx = self._idx
        for i in range(s * m, s * m + m):
            idx[2 * i] = _EMPTY_LO
            idx[2 * i + 1] = -1

    def _note(self, s, meter, slot):
        i = (s * self.max_meters + meter) << 1
        idx = self._idx
        if slot < idx[i]:
            idx[i] = slot
        if slot > idx[i + 1]:
            idx[i + 1] = slot

    def _index_record(self, s, buf, off):
        if record.type_of(buf, off) != TYPE_INTERVAL:
            return
        t, meter, slot = record.meter_slot(buf, off)
        if meter >= self.max_meters or slot >= SLOT_LIMIT:
            self.unindexed += 1
            return
        self._note(s, meter, slot)

    def _forget(self, s):
        """Drop listener, called before sector s (the oldest) is erased: keep the counts."""
        for m in range(self.max_meters):
            if self._count[m] is not None:
                self._count[m] -= self._live_in(s, m)
        self._clear(s)
        self._hit = None
        self._drop_marks()

    def _drop_marks(self):
        self._marks = [None] * self.max_meters
        self._marks_version += 1

    def _live_in(self, s, meter):
        """Slots of meter whose newest record is in sector s (s is the oldest sector: a slot is
        live there if no other sector has a valid record for it)."""
        i2 = (s * self.max_meters + meter) << 1
        lo = self._idx[i2]
        hi = self._idx[i2 + 1]
        if lo > hi:
            return 0
        top = 0  # highest sequence number in s
        used = self.log.used(s)
        i = 0
        while i < used:
            k = min(_CHUNK, used - i)
            buf = self.log.read(s, i, k)
            for j in range(k):
                off = j * RECORD_SIZE
                if record.is_valid(buf, off):
                    q = record.seq_of(buf, off)
                    if q > top:
                        top = q
            i += k
        self._table_token += 1  # this pass does not yield: the shared table is safe
        table = self._table
        n = 0
        a = lo
        while a <= hi:
            e = a + _WINDOW - 1
            if e > hi:
                e = hi
            self._fill(meter, a, e, table)
            for i in range(e - a + 1):
                q = record.seq_of(table, i * RECORD_SIZE)
                if q and q <= top:
                    n += 1
            a = e + 1
        return n

    def _check_meter(self, meter):
        if not isinstance(meter, int) or meter < 0 or meter >= self.max_meters:
            raise StoreError("meter %r outside 0..%d" % (meter, self.max_meters - 1))

    # --- lookups ------------------------------------------------------------------------
    def _find(self, meter, slot):
        """Copy the newest valid record of (meter, slot) into self._rec; False if none."""
        order = self.log.order
        for k in range(len(order) - 1, -1, -1):
            s = order[k]
            i2 = (s * self.max_meters + meter) << 1
            lo = self._idx[i2]
            hi = self._idx[i2 + 1]
            if slot < lo or slot > hi:
                continue
            end = self.log.used(s)  # newest first: chunks from the end of the sector
            while end > 0:
                i = end - _CHUNK if end > _CHUNK else 0
                buf = self.log.read(s, i, end - i)
                for j in range(end - i - 1, -1, -1):
                    off = j * RECORD_SIZE
                    if buf[off + 5] != meter or (buf[off + 4] >> 4) != TYPE_INTERVAL:
                        continue
                    if ((buf[off + 8] << 24) | (buf[off + 9] << 16) | (buf[off + 10] << 8)
                            | buf[off + 11]) != slot:
                        continue
                    if record.is_valid(buf, off):
                        self._rec[:] = memoryview(buf)[off:off + RECORD_SIZE]
                        self._found = s
                        return True
                end = i
        return False

    def get(self, meter, slot):
        """(fwd, rev, unit_code, source, flags) of the slot, or None if it is missing."""
        self._check_meter(meter)
        if not self._find(meter, slot):
            return None
        _seq, _m, _s, fwd, rev, unit, source, flags = record.unpack_interval(self._rec, 0)
        return fwd, rev, unit, source, flags

    def has(self, meter, slot):
        self._check_meter(meter)
        if self._hit is not None and self._hit[0] == meter and self._hit[1] == slot:
            return True
        last = self.last_slot(meter)
        if last is None or slot > last:
            return False
        if self._find(meter, slot):
            self._hit = (meter, slot)
            return True
        return False

    def first_slot(self, meter):
        self._check_meter(meter)
        best = None
        for s in self.log.order:
            i2 = (s * self.max_meters + meter) << 1
            lo = self._idx[i2]
            hi = self._idx[i2 + 1]
            if lo <= hi and (best is None or lo < best):
                best = lo
        return best

    def last_slot(self, meter):
        self._check_meter(meter)
        best = None
        for s in self.log.order:
            i2 = (s * self.max_meters + meter) << 1
            lo = self._idx[i2]
            hi = self._idx[i2 + 1]
            if lo <= hi and (best is None or hi > best):
                best = hi
        return best

    # --- writing ------------------------------------------------------------------------
    def put(self, meter, slot, fwd, rev, unit_code, source, flags=0):
        """Store a value for (meter, slot). Returns True if a record was written, False if the
        slot already holds this value or a better one. Raises StoreError/RecordError on bad
        arguments."""
        self._check_meter(meter)
        if not isinstance(slot, int) or slot < 0 or slot >= SLOT_LIMIT:
            raise StoreError("slot %r outside 0..%d" % (slot, SLOT_LIMIT - 1))
        src = record.source_code(source)
        new = self._new
        record.pack_interval(new, 0, 0, meter, slot, fwd, rev, unit_code, src, flags)  # checks
        old_sector = -1
        if self._find(meter, slot):
            old_sector = self._found
            _q, _m, _s, ofwd, orev, ounit, osrc, oflags = record.unpack_interval(self._rec, 0)
            same_value = ofwd == fwd and orev == rev and ounit == unit_code
            if same_value and osrc == src and oflags == flags:
                return False
            new_rank = record.rank(src, flags)
            old_rank = record.rank(osrc, oflags)
            if new_rank < old_rank:
                return False
            if new_rank == old_rank:
                if not same_value:
                    log.warn(self.tag, "meter %d slot %d: conflicting value %d/%d kept as %d/%d"
                             % (meter, slot, fwd, rev, ofwd, orev))
                    return False
                if flags | oflags == oflags:
                    return False
                # same value, more status: keep every flag
                record.pack_interval(new, 0, 0, meter, slot, fwd, rev, unit_code, src,
                                     flags | oflags)
        for fn in self.put_listeners:
            fn(meter, slot)
        self.log.append(new)
        self._note(self.log.last_sector, meter, slot)
        # A new slot counts +1; so does a replaced one whose old record's sector was dropped
        # (and counted out) while this append opened a new sector.
        if old_sector < 0 or old_sector not in self.log.order:
            if self._count[meter] is not None:
                self._count[meter] += 1
            self._marks_version += 1  # a marks pass running right now must not be kept
            marks = self._marks[meter]
            if marks and slot < marks[-1][1]:
                self._drop_marks()  # a row appeared before a mark: its entry numbers moved
        self._hit = (meter, slot)
        return True

    def store(self, meter, slot, fwd, rev, unit_code, source, flags=0):
        """put() under the name the 30-minute poller's sink protocol uses (app/metering.py)."""
        return self.put(meter, slot, fwd, rev, unit_code, source, flags)

    # --- range reads --------------------------------------------------------------------
    def _next_present(self, meter, a, b):
        """Smallest slot >= a (and <= b) that some sector's range for meter covers, or None."""
        best = None
        for s in self.log.order:
            i2 = (s * self.max_meters + meter) << 1
            lo = self._idx[i2]
            hi = self._idx[i2 + 1]
            if lo > hi or hi < a or lo > b:
                continue
            c = lo if lo > a else a
            if best is None or c < best:
                best = c
        return best

    def _fill(self, meter, a, e, table):
        """Newest valid record per slot of [a, e] into table (seq 0 = empty entry).
        Runs for every record of every overlapping sector, so it reads fields byte by byte
        (no tuple per record) and checks the CRC only of a record that would win."""
        for i in range(e - a + 1):
            struct.pack_into(">I", table, i * RECORD_SIZE, 0)
        tmv = memoryview(table)
        for s in self.log.order:
            i2 = (s * self.max_meters + meter) << 1
            lo = self._idx[i2]
            hi = self._idx[i2 + 1]
            if lo > hi or hi < a or lo > e:
                continue
            used = self.log.used(s)
            i = 0
            while i < used:
                k = min(_CHUNK, used - i)
                buf = self.log.read(s, i, k)
                bmv = memoryview(buf)
                for j in range(k):
                    off = j * RECORD_SIZE
                    if buf[off + 5] != meter or (buf[off + 4] >> 4) != TYPE_INTERVAL:
                        continue
                    slot = (buf[off + 8] << 24) | (buf[off + 9] << 16) | (buf[off + 10] << 8) \
                        | buf[off + 11]
                    if slot < a or slot > e:
                        continue
                    t = (slot - a) * RECORD_SIZE
                    if _seq(buf, off) <= _seq(table, t) or not record.is_valid(buf, off):
                        continue
                    tmv[t:t + RECORD_SIZE] = bmv[off:off + RECORD_SIZE]
                i += k

    def rows(self, meter, from_slot=0, to_slot=_SLOT_MAX):
        """Ascending (slot, fwd, rev, unit_code, source, flags) of stored slots in
        [from_slot, to_slot]; streams window by window (missing slots produce no row)."""
        self._check_meter(meter)
        w = _Window(self)
        a = from_slot
        while a <= to_slot:
            a = self._next_present(meter, a, to_slot)
            if a is None:
                return
            e = a + _WINDOW - 1
            if e > to_slot:
                e = to_slot
            w.fill(meter, a, e)
            for i in range(e - a + 1):
                t = i * RECORD_SIZE
                table = w.table()
                if record.seq_of(table, t):
                    _q, _m, slot, fwd, rev, unit, src, flags = record.unpack_interval(table, t)
                    yield slot, fwd, rev, unit, src, flags
            a = e + 1

    def count(self, meter):
        """Number of distinct stored slots: one streaming pass the first time, then kept up to
        date by put() and by the drop listener."""
        self._check_meter(meter)
        if self._count[meter] is None:
            n = 0
            for _ in self.rows(meter):
                n += 1
            self._count[meter] = n
        return self._count[meter]

    def rows_by_index(self, meter, first, last):
        """Rows with 1-based chronological entry numbers first..last (DLMS entry_descriptor).
        Passes leave a mark (rows before a slot) every few windows beyond the last mark; later
        calls start at the mark just before `first`. Marks are dropped when older rows change."""
        self._check_meter(meter)
        if first < 1 or last < first:
            return
        marks = self._marks[meter] or []
        version = self._marks_version
        k = 0  # rows before slot a
        a = 0
        start = -1
        for j in range(len(marks)):
            if marks[j][0] >= first:
                break
            k, a = marks[j]
            start = j
        extending = start == len(marks) - 1  # past the last mark: leave new marks behind
        new = []
        win = _Window(self)
        w = 0
        while True:
            a = self._next_present(meter, a, _SLOT_MAX)
            if a is None:
                return
            if extending and w % _MARK_EVERY == 0 and (w or not marks):
                new.append((k, a))
                # saved at once: MicroPython never runs the `finally` of a generator that is
                # dropped unfinished (a DLMS transfer stops after its count of rows)
                if version == self._marks_version:
                    self._marks[meter] = marks + new
            w += 1
            e = a + _WINDOW - 1
            if e > _SLOT_MAX:
                e = _SLOT_MAX
            win.fill(meter, a, e)
            for i in range(e - a + 1):
                t = i * RECORD_SIZE
                table = win.table()
                if not record.seq_of(table, t):
                    continue
                k += 1
                if k > last:
                    return
                if k >= first:
                    _q, _m, slot, fwd, rev, unit, src, flags = record.unpack_interval(table, t)
                    yield slot, fwd, rev, unit, src, flags
            a = e + 1

    def missing(self, meter, from_slot, to_slot):
        """Ascending slots in [from_slot, to_slot] without a stored record (backfill planner)."""
        nxt = from_slot
        for row in self.rows(meter, from_slot, to_slot):
            while nxt < row[0]:
                yield nxt
                nxt += 1
            nxt = row[0] + 1
        while nxt <= to_slot:
            yield nxt
            nxt += 1
