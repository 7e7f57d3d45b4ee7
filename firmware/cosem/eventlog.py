# The event log as COSEM objects (docs/events.md §8): a Profile Generic (IC 7) whose buffer rows
# are {clock, event code, event detail}, streamed from the event store, and the two Data objects
# (IC 1) of the newest event's code and detail. The selective-access parsing is the load
# profile's (ProfileObject); only the row source differs: events in sequence order, read from the
# store's files one record at a time, with a time filter for range reads (the clock can step back,
# so event times are not sorted).
from firmware import log
from firmware.cosem import axdr
from firmware.cosem import xdlms as x
from firmware.cosem.objects import (
    CLASS_CLOCK,
    CLASS_DATA,
    READ,
    CosemObject,
    Producer,
    RowsGone,
    Value,
    _w_u8,
)
from firmware.cosem.profile import ProfileObject
from firmware.store.eventlog import EventsGone

# (public, reader, management): the public client has no access (docs/events.md §8)
_RM = (0, READ, READ)
_NO_TIME_DATETIME = axdr.UNSPECIFIED_DATETIME[:11] + b"\x01"  # clock status 0x01: invalid
_TAG = "cosem"


class EventRows(Producer):
    """array(count) of event rows, oldest first, those with first <= index (among the rows that
    pass the time filter) and at most `count` of them. The store cursor keeps the file position
    across blocks; its file is open only while a block is being filled."""

    def __init__(self, env, log_, cols, count, skip, t_from, t_to):
        self._env = env
        self._log = log_
        self._cols = cols
        self._count = count
        self._skip = skip  # rows of the filter to pass over first (entry_descriptor)
        self._from = t_from  # None = no time filter
        self._to = t_to
        self._emitted = 0
        self._cur = log_.cursor()
        self._pending = None

    def header(self, w):
        w.array(self._count)

    def _next(self):
        lg = self._log
        while True:
            try:
                e = lg.read(self._cur)
            except EventsGone:
                raise RowsGone() from None
            if e is None:
                lg.close(self._cur)
                raise RowsGone()  # fewer rows than promised in block 1
            if self._from is not None and (e[1] is None or e[1] < self._from or e[1] > self._to):
                continue
            if self._skip:
                self._skip -= 1
                continue
            return e

    def item(self, w):
        if self._emitted >= self._count:
            self._log.close(self._cur)
            return False
        try:
            if self._pending is None:
                self._pending = self._next()
            e = self._pending
            env = self._env
            w.structure(len(self._cols))
            for c in self._cols:
                if c == 0:
                    if e[1] is None:
                        w.octets(_NO_TIME_DATETIME)
                    else:
                        w.datetime(e[1], env.time_zone, env.offset_min, 0)
                elif c == 1:
                    w.u8(e[2])
                else:
                    w.integer(axdr.DOUBLE_LONG, e[3])
        except BaseException:
            # the block is full (AxdrFull: the row opens the next block) or the read ends:
            # no file stays open between blocks
            self._log.close(self._cur)
            raise
        return True

    def advance(self):
        self._pending = None
        self._emitted += 1


class EventLogObject(ProfileObject):
    """IC 7 over the event store: readable by reader and management, methods refused."""

    capture_period = 0  # asynchronous: an event is captured when it happens

    def __init__(self, ln, events, columns):
        ProfileObject.__init__(self, ln, None, columns, events.max_entries(), None)
        self._attrs = (_RM,) * 8
        self._events = events

    def _count(self):
        return self._events.count()

    def _all(self, env):
        return EventRows(env, self._events, (0, 1, 2), self._events.count(), 0, None, None)

    def _by_time(self, env, t_from, t_to, cols):
        # both bounds inclusive, over every event (times are not sorted)
        lg = self._events
        count = 0
        if t_from <= t_to:
            c = lg.cursor()
            try:
                while True:
                    e = lg.read(c)
                    if e is None:
                        break
                    if e[1] is not None and t_from <= e[1] <= t_to:
                        count += 1
            except EventsGone:
                log.warn(_TAG, "event log rotated during a range count")
            finally:
                lg.close(c)
        return EventRows(env, lg, cols, count, 0, t_from, t_to)

    def _by_entry(self, env, first, count, cols):
        return EventRows(env, self._events, cols, count, first, None, None)


class EventDataObject(CosemObject):
    """IC 1 Data: the newest event's code (`unsigned`) or detail (`double-long`)."""

    class_id = CLASS_DATA

    def __init__(self, ln, events, detail):
        CosemObject.__init__(self, ln, (_RM, _RM))
        self._events = events
        self._detail = detail

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        if attr != 2:
            return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)
        e = self._events.last
        if e is None:
            return x.TEMPORARY_FAILURE  # no event yet
        if self._detail:
            return Value(_w_i32, e[3])
        return Value(_w_u8, e[2])


def _w_i32(w, v):
    w.integer(axdr.DOUBLE_LONG, v)


def objects(events, ln_log, ln_code, ln_detail, ln_clock):
    """The three event objects over one EventLog, for default_table."""
    columns = ((CLASS_CLOCK, ln_clock), (CLASS_DATA, ln_code), (CLASS_DATA, ln_detail))
    return [
        EventLogObject(ln_log, events, columns),
        EventDataObject(ln_code, events, False),
        EventDataObject(ln_detail, events, True),
    ]

