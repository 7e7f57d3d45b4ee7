# The terminal's state as plain values, for the status page / JSON API (firmware/app/web.py) and
# the MQTT periodic status: summary() is one small dict; slots() streams one meter's recent slots
# newest first straight from the store (one store lookup per slot, no list of rows in RAM).
# Reads only: nothing here changes the terminal, and an absent part (no radio yet, no counters,
# clock never set) shows as None rather than failing.
from firmware import timeutil, units
from firmware.compat import const
from firmware.hal import clock as clockmod
from firmware.store import record

WINDOW = const(48)  # slots shown per meter: one day
# Status bits of a slot row beyond the record's own flags (record.FLAG_*, bits 0..4).
FLAG_BACKFILLED = const(0x100)  # the value came from the meter's history (backfill)
FLAG_MISSING = const(0x200)  # no record: the slot was not read and not yet backfilled
FLAG_PENDING = const(0x400)  # no record yet, and the capture loop is still trying for it
# (bit, name) in the order the API spells them
FLAG_NAMES = (
    (FLAG_MISSING, "missing"),
    (FLAG_PENDING, "pending"),
    (FLAG_BACKFILLED, "backfilled"),
    (record.FLAG_CLOCK_ADJUSTED, "clock-adjusted"),
    (record.FLAG_POWER_DOWN, "power-down"),
    (record.FLAG_METER_RESET, "meter-reset"),
    (record.FLAG_UNAVAILABLE, "unavailable"),
    (record.FLAG_CLOCK_INVALID, "clock-invalid"),
)
CLOCK_SOURCES = ("smart meter", "rtc", "ntp")  # by clockmod.SOURCE_*
_GIVE_UP_S = const(1740)  # meter.give_up_after_s when a channel has no config


def flag_names(flags):
    """The names of the bits set in a slot row's flags, in FLAG_NAMES order."""
    return [name for bit, name in FLAG_NAMES if flags & bit]


def _now(terminal):
    clk = getattr(terminal, "clock", None)
    return None if clk is None else clk.now_t2k()


def _end_slot(terminal, k, now):
    """The newest slot of the window: the one of the last :00/:30 boundary, or without a time
    the newest stored slot (None: nothing to show)."""
    if now is not None:
        return timeutil.slot_of_t2k(now)
    return terminal.store.last_slot(k)


def _give_up_s(terminal, k):
    chs = getattr(terminal, "channels", None) or ()
    if k < len(chs):
        return chs[k].cfg.get("give_up_after_s", _GIVE_UP_S)
    return _GIVE_UP_S


def slots(terminal, k, n=WINDOW):
    """(slot, fwd, rev, flags, unit_code) of meter k's last n slots, newest first. fwd/rev are
    the stored raw counters (integers) in the ECHONET unit of unit_code; a slot without a record
    yields (slot, None, None, FLAG_MISSING or FLAG_PENDING, None). flags: record.FLAG_* of the
    record plus FLAG_BACKFILLED. Streams: one store lookup per slot as the caller iterates."""
    now = _now(terminal)
    end = _end_slot(terminal, k, now)
    if end is None or n <= 0:
        return
    store = terminal.store
    # the newest boundary is not missing while the capture loop still retries it
    pending_until = None
    if now is not None:
        pending_until = timeutil.t2k_of_slot(end) + _give_up_s(terminal, k)
    slot = end
    stop = end - n if end - n >= -1 else -1
    while slot > stop:
        rec = store.get(k, slot)
        if rec is None:
            st = FLAG_PENDING if slot == end and pending_until is not None and \
                now <= pending_until else FLAG_MISSING
            yield slot, None, None, st, None
        else:
            fwd, rev, unit, src, flags = rec
            if src == record.SOURCE_HISTORY:
                flags |= FLAG_BACKFILLED
            yield slot, fwd, rev, flags, unit
        slot -= 1


def wh_scaler(unit_code):
    """Wh = raw x 10^scaler for a record's unit code (None for a code outside the table)."""
    return None if unit_code is None else units.wh_scaler(unit_code)


def _meter(terminal, k, ch):
    """One meter's link and its last day's counts."""
    missing = backfilled = 0
    for _slot, _f, _r, flags, _u in slots(terminal, k):
        if flags & FLAG_MISSING:
            missing += 1
        elif flags & FLAG_BACKFILLED:
            backfilled += 1
    last = terminal.store.last_slot(k)
    m = {"index": k, "link": "unknown", "address": None, "stored": None,
         "last_slot": last, "missing": missing, "backfilled": backfilled}
    if ch is not None:
        m["link"] = meter_link(ch)
        m["address"] = ch.client.addr[0] or None
        m["stored"] = ch.poller.stats.get("stored")
    return m


def meter_link(ch):
    """"ok" (the meter answers), "failing" (its last read failed), "connecting" (known, not yet
    identified), "searching" (no address yet) or "ambiguous" (several meter objects, none chosen:
    not metered)."""
    if ch.ambiguous:
        return "ambiguous"
    if not ch.client.addr[0]:
        return "searching"
    # the loops' own state (private: this module only reads it)
    if getattr(ch.poller, "_failing", False):
        return "failing"
    return "ok" if getattr(ch.client, "_ready", False) else "connecting"


def _radio(terminal):
    s = getattr(terminal, "session", None)
    if s is None:
        return {"state": None, "rssi": None, "channel": None}
    st = s.stats
    return {"state": s.state, "rssi": st.get("rssi"), "channel": s.channel,
            "joins": st.get("joins"), "disconnects": st.get("disconnects")}


def _clock(terminal, now):
    clk = getattr(terminal, "clock", None)
    if clk is None:
        return {"status": None, "now": now, "last_set": None, "source": None}
    bits = clk.status()
    status = "invalid" if bits & clockmod.STATUS_INVALID else \
        "doubtful" if bits & clockmod.STATUS_DOUBTFUL else "ok"
    last = clk.last_set_t2k()
    src = clk.last_source
    return {"status": status, "now": now, "last_set": last,
            "source": None if last is None or not 0 <= src < len(CLOCK_SOURCES)
            else CLOCK_SOURCES[src]}


def summary(terminal):
    """The terminal's state in one small dict (no slots): meters' link and last-day counts, the
    radio, the clock (times as t2k seconds, None when unset) and the counters when the terminal
    has them. Values are ints, strings, None or lists/dicts of them (JSON as it is)."""
    now = _now(terminal)
    chs = getattr(terminal, "channels", None) or ()
    n = terminal.store.max_meters
    meters = []
    for k in range(n):
        meters.append(_meter(terminal, k, chs[k] if k < len(chs) else None))
    out = {"time": now, "window": WINDOW, "meters": meters, "radio": _radio(terminal),
           "clock": _clock(terminal, now), "counters": None}
    counters = getattr(terminal, "counters", None)
    if counters is not None:
        out["counters"] = counters.snapshot()
    return out
