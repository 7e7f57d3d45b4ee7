# Adapters between the interval store and its two users: the capture loop (a sink of readings)
# and the COSEM objects (a read-only view of one meter's records).
from firmware.store import record


class StoreSink:
    """What SlotPoller needs: has(meter, slot) and store(...)."""

    def __init__(self, store):
        self.s = store

    def has(self, meter, slot):
        return self.s.has(meter, slot)

    def store(self, meter, slot, fwd, rev, unit_code, source, flags):
        return self.s.put(meter, slot, fwd, rev, unit_code, source, flags)

    def last_unit(self, meter):
        """The unit code of the meter's newest record, or None."""
        last = self.s.last_slot(meter)
        rec = None if last is None else self.s.get(meter, last)
        return None if rec is None else rec[2]


class MeterView:
    """The meter data view of docs/architecture.md over IntervalStore, for one meter.
    Rows are (slot, fwd, rev, dlms_status, unit_code): raw counters with the ECHONET unit code
    of their own record (the COSEM side converts each to the served scaler); missing slots
    produce no row."""

    def __init__(self, store, meter, backfill_bit=0x40):
        self.s = store
        self.meter = meter
        # SPEC: a value recovered from the meter's history is marked in the profile status with
        # this bit (0x40: reserved in the usual bit layout, free for the utility spec to assign).
        self.backfill_bit = backfill_bit

    def _status(self, src, flags):
        st = record.dlms_status(flags)
        if src == record.SOURCE_HISTORY:
            st |= self.backfill_bit
        return st

    def latest(self):
        last = self.s.last_slot(self.meter)
        if last is None:
            return None
        rec = self.s.get(self.meter, last)
        if rec is None:
            return None
        return (last, rec[0], rec[1], self._status(rec[3], rec[4]), rec[2])

    def count(self):
        return self.s.count(self.meter)

    def rows(self, from_slot, to_slot):
        for slot, fwd, rev, unit, src, flags in self.s.rows(self.meter, from_slot, to_slot):
            yield (slot, fwd, rev, self._status(src, flags), unit)

    def rows_by_index(self, first, last):
        # COSEM counts from 0 here; the store's entry numbers are 1-based (entry_descriptor).
        for slot, fwd, rev, unit, src, flags in self.s.rows_by_index(self.meter, first + 1,
                                                                     last + 1):
            yield (slot, fwd, rev, self._status(src, flags), unit)
