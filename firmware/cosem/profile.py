# IC 7 Profile Generic: the 30-minute load profile over the meter data view; and the default
# object set the terminal serves (default_table), which needs every interface class: here, not in
# objects.py, so that objects.py imports nothing of this module (and not in a module of its own:
# each .mpy import leaves holes in the heap, docs/memory.md).
#
# Buffer rows are {clock (date-time of the slot boundary), +A, -A, status}. Rows are streamed from
# the store block by block; after the first block the stream resumes from the slot after the last
# row sent, so a late backfill row inserted during a transfer can neither duplicate nor shift rows.
from firmware import log, timeutil
from firmware.compat import const
from firmware.cosem import axdr
from firmware.cosem import xdlms as x
from firmware.cosem.objects import (
    CLASS_CLOCK,
    CLASS_DATA,
    CLASS_PROFILE,
    CLASS_REGISTER,
    STATUS_DNV,
    AssociationObject,
    ClockObject,
    CosemObject,
    DataObject,
    EnergyFormat,
    ObjectTable,
    Producer,
    RegisterObject,
    RowsGone,
    SapAssignmentObject,
    Value,
    _w_enum,
    _w_raw,
    _w_u32,
    capture_descriptor,
    latest_status,
    obis,
)

_R = (1, 1, 1)  # (public, reader, management): objects.ROLE_*
_NONE = (0, 0, 0)
_SLOT_MAX = const(0x3FFFFFFF)  # "no upper bound" that stays a small int on the ESP32
SELECTOR_RANGE = const(1)
SELECTOR_ENTRY = const(2)
CAPTURE_PERIOD_S = const(1800)
SORT_FIFO = const(1)
_ALL_COLS = (0, 1, 2, 3)


class SelectionError(Exception):
    """Selective-access parameters that cannot be served: args = (DataAccessResult, reason)."""


def write_row(w, env, row, fmt, cols=_ALL_COLS):
    """One buffer row (slot, fwd, rev, status, unit_code) as structure{clock, +A, -A, status},
    or the selected columns, values in `fmt` (EnergyFormat): the one encoding of a row, shared
    by the profile and the push (firmware/cosem/push.py), so that a pushed slot is byte for byte
    the row served. A value not exact in `fmt` is null-data and the row's status has DNV.
    True when both values are exact."""
    # both values converted first: the status says DNV whichever columns are selected
    ok_f = fmt.convert(row[1], row[4], fmt.fwd)
    ok_r = fmt.convert(row[2], row[4], fmt.rev)
    w.structure(len(cols))
    for c in cols:
        if c == 0:
            w.datetime(timeutil.t2k_of_slot(row[0]), env.time_zone, env.offset_min, 0)
        elif c == 3:
            w.u8(row[3] if ok_f and ok_r else row[3] | STATUS_DNV)
        elif c == 1:
            if ok_f:
                fmt.write(w, fmt.fwd)
            else:
                w.null()
        elif ok_r:
            fmt.write(w, fmt.rev)
        else:
            w.null()
    return ok_f and ok_r


class Rows(Producer):
    """array(count) of buffer rows. The first block starts at index `first` (rows_by_index) or at
    `from_slot` (rows); later blocks continue with rows(last_slot + 1, to_slot).
    Values are served in `fmt` (EnergyFormat); one that is not exact in it is null-data, its
    row's status has DNV, and the transfer logs it once."""

    def __init__(self, env, view, fmt, cols, count, first, from_slot, to_slot):
        self._env = env
        self._fmt = fmt
        self._warned = False
        self._view = view
        self._cols = cols
        self._count = count
        self._first = first  # None = range mode
        self._from = from_slot
        self._to = to_slot
        self._emitted = 0
        self._last_slot = None
        self._it = None
        self._pending = None

    def begin_block(self, w):
        self._pending = None
        if self._emitted >= self._count:
            self._it = None
        elif self._last_slot is not None:
            self._it = iter(self._view.rows(self._last_slot + 1, self._to))
        elif self._first is not None:
            self._it = iter(self._view.rows_by_index(self._first, self._first + self._count - 1))
        else:
            self._it = iter(self._view.rows(self._from, self._to))

    def header(self, w):
        w.array(self._count)

    def item(self, w):
        if self._emitted >= self._count:
            return False
        if self._pending is None:
            try:
                self._pending = next(self._it)
            except StopIteration:
                raise RowsGone() from None
        row = self._pending
        if not write_row(w, self._env, row, self._fmt, self._cols) and not self._warned:
            self._warned = True
            log.warn("cosem", "profile slot %d: %d/%d in unit %r not exact in 10^%d Wh: "
                     "null-data, DNV" % (row[0], row[1], row[2], row[4], self._fmt.scaler))
        return True

    def advance(self):
        self._last_slot = self._pending[0]
        self._pending = None
        self._emitted += 1


class ProfileObject(CosemObject):
    """The load profile. The selective-access parsing is shared with the event log
    (cosem/eventlog.py), which overrides the row hooks _count, _all, _by_time and _by_entry."""

    class_id = CLASS_PROFILE
    version = 1
    capture_period = CAPTURE_PERIOD_S
    _view = None
    _fmt = None

    def __init__(self, ln, view, columns, profile_entries, fmt):
        # methods 1 reset and 2 capture are refused: the store is append-only billing data
        CosemObject.__init__(self, ln, (_R, _R, _R, _R, _R, _R, _R, _R), (_NONE, _NONE))
        if view is not None:  # (the event log has neither: class attributes None)
            self._view = view
            self._fmt = fmt
        # ((class_id, ln), ...) in buffer column order; their capture descriptors are encoded
        # when attribute 3 or 6 is read (rarely), not kept (heap, docs/memory.md)
        self._columns = columns
        self._entries = profile_entries

    def selectors(self, attr):
        return (SELECTOR_RANGE, SELECTOR_ENTRY) if attr == 2 else None

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        if attr == 2:
            try:
                return self._buffer(env, selector, mv, sel_pos)
            except SelectionError as e:
                log.warn("cosem", "profile selective access refused: %s" % e.args[1])
                return e.args[0]
        if attr == 3:
            cols = self._columns
            return Value(_w_raw, bytes((0x01, len(cols))) + b"".join(
                [capture_descriptor(c, ln_, 2) for c, ln_ in cols]))
        if attr == 4:
            return Value(_w_u32, self.capture_period)
        if attr == 5:
            return Value(_w_enum, SORT_FIFO)
        if attr == 6:
            return Value(_w_raw, capture_descriptor(self._columns[0][0], self._columns[0][1], 2))
        if attr == 7:
            return Value(_w_u32, self._count())
        if attr == 8:
            return Value(_w_u32, self._entries)
        return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)

    def _count(self):
        return self._view.count()

    def _all(self, env):
        n = self._view.count()
        return Rows(env, self._view, self._fmt, _ALL_COLS, n, 0, None, _SLOT_MAX)

    def _by_time(self, env, t_from, t_to, cols):
        # inclusive both ends: slots whose boundary instant lies in [t_from, t_to]
        s_from = timeutil.slot_of_t2k(t_from + timeutil.SLOT_S - 1)
        s_to = timeutil.slot_of_t2k(t_to)
        count = 0
        if s_from <= s_to:
            for _ in self._view.rows(s_from, s_to):
                count += 1
        return Rows(env, self._view, self._fmt, cols, count, None, s_from, s_to)

    def _by_entry(self, env, first, count, cols):
        """Rows first .. first + count - 1 (0-based)."""
        return Rows(env, self._view, self._fmt, cols, count, first, None, _SLOT_MAX)

    def _buffer(self, env, selector, mv, sel_pos):
        if selector is None:
            return self._all(env)
        r = axdr.Reader(mv, sel_pos)
        try:
            if selector == SELECTOR_RANGE:
                return self._range(env, r)
            if selector == SELECTOR_ENTRY:
                return self._entry(env, r)
        except axdr.AxdrError as e:
            raise SelectionError(x.OTHER_REASON, "malformed parameters: %s" % e) from None
        raise SelectionError(x.SCOPE_OF_ACCESS_VIOLATED, "selector %d" % selector)

    def _column_of(self, r):
        """Index of the capture-object descriptor read from r (struct of 4)."""
        if r.container(axdr.STRUCTURE) != 4:
            raise SelectionError(x.OTHER_REASON, "capture object descriptor is not a 4-struct")
        cls = r.typed_int(axdr.LONG_UNSIGNED)
        ln = bytes(r.octets())
        attr = r.typed_int(axdr.INTEGER)
        r.typed_int(axdr.LONG_UNSIGNED)  # data_index: 0 = whole attribute
        for i in range(len(self._columns)):
            if self._columns[i][0] == cls and self._columns[i][1] == ln and attr == 2:
                return i
        raise SelectionError(x.OTHER_REASON, "object is not a captured column")

    def _time(self, env, r):
        tag = r.peek()
        if tag == axdr.OCTET_STRING:
            return axdr.parse_datetime(r.octets(), env.deviation_sign, env.offset_min)
        if tag == axdr.DOUBLE_LONG_UNSIGNED:  # some head-ends send Unix seconds
            return timeutil.t2k_of_unix(r.typed_int(tag))
        raise SelectionError(x.TYPE_UNMATCHED, "range bound tag 0x%02x" % tag)

    def _range(self, env, r):
        if r.container(axdr.STRUCTURE) != 4:
            raise SelectionError(x.OTHER_REASON, "range_descriptor is not a 4-struct")
        if self._column_of(r) != 0:
            raise SelectionError(x.OTHER_REASON, "restricting object must be the clock column")
        t_from = self._time(env, r)
        t_to = self._time(env, r)
        n = r.container(axdr.ARRAY)
        if n > len(self._columns):
            raise SelectionError(x.OTHER_REASON, "%d selected values" % n)
        if n == 0:
            cols = _ALL_COLS[: len(self._columns)]
        else:
            sel = []
            for _ in range(n):
                sel.append(self._column_of(r))
            cols = tuple(sel)
        return self._by_time(env, t_from, t_to, cols)

    def _entry(self, env, r):
        if r.container(axdr.STRUCTURE) != 4:
            raise SelectionError(x.OTHER_REASON, "entry_descriptor is not a 4-struct")
        e_from = r.typed_int(axdr.DOUBLE_LONG_UNSIGNED)
        e_to = r.typed_int(axdr.DOUBLE_LONG_UNSIGNED)
        c_from = r.typed_int(axdr.LONG_UNSIGNED)
        c_to = r.typed_int(axdr.LONG_UNSIGNED)
        total = self._count()
        n_cols = len(self._columns)
        if e_from == 0:
            e_from = 1
        if e_to == 0 or e_to > total:
            e_to = total
        if c_from == 0:
            c_from = 1
        if c_to == 0:
            c_to = n_cols
        if c_from > c_to or c_to > n_cols:
            raise SelectionError(x.OTHER_REASON, "columns %d..%d" % (c_from, c_to))
        cols = _ALL_COLS[c_from - 1 : c_to]
        count = e_to - e_from + 1 if e_from <= e_to else 0
        return self._by_entry(env, e_from - 1, count, cols)


DEFAULT_OBIS = {
    "association": "0.0.40.0.0.255",
    "sap_assignment": "0.0.41.0.0.255",
    "ldn": "0.0.42.0.0.255",
    "device_id": "0.0.96.1.0.255",
    "clock": "0.0.1.0.0.255",
    "import": "1.0.1.8.0.255",
    "export": "1.0.2.8.0.255",
    "profile_status": "0.0.96.10.1.255",
    "profile": "1.0.99.1.0.255",
    "event_log": "0.0.99.98.0.255",
    "event_code": "0.0.96.11.0.255",
    "event_detail": "0.0.96.11.128.255",
}


def default_table(view, config=None, events=None):
    """The default object set over one meter data view, or over a list of views (1:N meters).
    config keys (all optional): 'obis' (dict overriding DEFAULT_OBIS), 'server_sap', 'ldn',
    'device_id', 'profile_entries', 'public_clock_write' (default False), 'energy_scaler'
    (default 0: Wh) and 'energy_type' ("u64" long64-unsigned, default, or "u32"). events: the
    event store (store.eventlog.EventLog), served as the event log and event code objects
    (docs/events.md).

    With several views, meter k's +A, -A, profile status and profile use OBIS channel B = k + 1
    (e.g. 1.2.1.8.0.255 for the second meter); the association, clock and identity objects are
    shared. SPEC: the IoT-route object list is not public; channel numbering is a choice."""
    cfg = config or {}
    codes = dict(DEFAULT_OBIS)
    codes.update(cfg.get("obis") or {})
    ln = {}
    for k in codes:
        ln[k] = obis(codes[k])
    ldn = _as_bytes(cfg.get("ldn", "XXX0000000000001"))
    objs = [
        AssociationObject(ln["association"]),
        SapAssignmentObject(ln["sap_assignment"], cfg.get("server_sap", 1), ldn),
        DataObject(ln["ldn"], ldn),
        DataObject(ln["device_id"], _as_bytes(cfg.get("device_id", "000000000000"))),
        ClockObject(ln["clock"], cfg.get("public_clock_write", False)),
    ]
    fmt = EnergyFormat(cfg.get("energy_scaler", 0), cfg.get("energy_type", "u64"))
    views = view if isinstance(view, (list, tuple)) else [view]
    for k in range(len(views)):
        v = views[k]
        ch = None if len(views) == 1 else k + 1
        imp = _channel(ln["import"], ch)
        exp = _channel(ln["export"], ch)
        st = _channel(ln["profile_status"], ch)
        objs.append(RegisterObject(imp, v, 1, fmt))
        objs.append(RegisterObject(exp, v, 2, fmt))
        objs.append(DataObject(st, _status_fn(v, fmt)))
        objs.append(
            ProfileObject(
                _channel(ln["profile"], ch),
                v,
                (
                    (CLASS_CLOCK, ln["clock"]),
                    (CLASS_REGISTER, imp),
                    (CLASS_REGISTER, exp),
                    (CLASS_DATA, st),
                ),
                cfg.get("profile_entries", 2160),
                fmt,
            )
        )
    if events is not None:
        from firmware.cosem import eventlog

        objs.extend(eventlog.objects(events, ln["event_log"], ln["event_code"],
                                     ln["event_detail"], ln["clock"]))
    table = ObjectTable(objs)
    table.energy = fmt  # the one EnergyFormat, for whatever else sends +A/-A (push)
    return table


def _status_fn(view, fmt):
    return lambda env: latest_status(view, fmt)


def _channel(ln, ch):
    """The logical name with OBIS group B (channel) replaced; None keeps it."""
    if ch is None:
        return ln
    b = bytearray(ln)
    b[1] = ch
    return bytes(b)


def _as_bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)
