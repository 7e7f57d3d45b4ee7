"""Ground-truth oracle of the chaos soak (tools/soak.py): what the head-end finally holds, judged
against the meter emulators' own records (tools.chaos.EpochModel) and the timeline of the faults
the soak applied. Pure: no I/O. docs/soak.md states the rules; in short:

- recoverable slot: the meter had it (its boundary passed, and its day was still inside the
  meter's history, 0xD3 days + today) during a *window* of at least MIN_WINDOW_S in which the
  meter answered, the terminal ran and its clock was true. Each one must be delivered, once,
  with the meter's exact value.
- invented: a row for a slot the meter never had, or with a value the meter never had for it.
- duplicate: a slot delivered more than once in the final read.
- status: only the bits the faults can cause (BACKFILL 0x40, CAD 0x20, ERR 0x01); a live
  (non-backfilled) row only where the meter answered and the terminal ran during its slot; CAD
  only after a clock set that moved the terminal's clock, and on the first live row after each
  such set (unless the terminal lost power before that row: the pending flag is in RAM), or on
  a backfilled row whose boundary a step crossed (docs/clock.md); ERR
  only at or after a counter reset, at most once per reset.
"""

from firmware import timeutil

SLOT_S = timeutil.SLOT_S
DAY_S = timeutil.DAY_S
BACKFILL = 0x40
CAD = 0x20
ERR = 0x01
ALLOWED_BITS = BACKFILL | CAD | ERR
# A window shorter than this does not count as a chance to backfill: a full pass over 46 days
# of history takes well under an hour of simulated time, six hours leaves room for the radio
# back-off, a capture read that waits out its timeouts and a loaded machine.
MIN_WINDOW_S = 6 * 3600


def merge(intervals):
    """Union of [a, b) intervals, sorted and merged."""
    out = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def complement(intervals, lo, hi):
    """[lo, hi) minus the union of intervals."""
    out, t = [], lo
    for a, b in merge(intervals):
        if b <= t:
            continue
        if a > t:
            out.append((t, min(a, hi)))
        t = max(t, b)
        if t >= hi:
            break
    if t < hi:
        out.append((t, hi))
    return [(a, b) for a, b in out if b > a]


def covered(intervals, a, b):
    """True if [a, b) lies inside the union of intervals."""
    for x, y in merge(intervals):
        if x <= a and b <= y:
            return True
    return False


def expiry(b, retention_days, tz_min):
    """The instant the meter drops the day of boundary b from its history: local midnight of the
    date (local date of b) + retention + 1 (history days 0 .. retention)."""
    local_day = (b + tz_min * 60) // DAY_S
    return (local_day + retention_days + 1) * DAY_S - tz_min * 60


def history_start(t2k, retention_days, tz_min):
    """The first boundary the meter holds at t2k: local 00:00 of (its date - retention)."""
    local_day = (t2k + tz_min * 60) // DAY_S
    return (local_day - retention_days) * DAY_S - tz_min * 60


class Timeline:
    """What the soak did, in true simulated time (t2k)."""

    def __init__(self, t0, meters):
        self.t0 = t0
        self.silent = [[] for _ in range(meters)]  # [a, b): every request dropped
        self.down = []  # [kill, restart): the terminal process not running
        self.unusable = []  # [kill, clock set after restart) and [step, correction)
        # (t2k, certain) of each set that moved (certain) or may have moved (its answer was
        # lost) a running terminal's clock by more than clock.adjust_flag_s
        self.clock_sets = []
        # (a, b): true times between which a clock step (or its correction) moved the
        # terminal's clock; the boundaries in between were crossed, and the firmware re-reads
        # them from the meter's history with CAD (docs/clock.md)
        self.crossed = []
        self.kills = []
        self.resets = [[] for _ in range(meters)]  # (slot of the reset boundary)
        self.end = None  # time of the final read

    def windows(self, k):
        bad = self.silent[k] + [(a, self.end if b is None else b) for a, b in self.unusable]
        return [w for w in complement(bad, self.t0, self.end) if w[1] - w[0] >= MIN_WINDOW_S]


def recoverable(b, windows, retention_days, tz_min):
    """A window [u, v) is settled from u + MIN_WINDOW_S on (time for a full backfill pass);
    slot b is recoverable if the meter still held it at some settled moment, one slot after its
    boundary (time for the live read, or for the backfill once the read is given up)."""
    exp = expiry(b, retention_days, tz_min)
    for u, v in windows:
        if max(u + MIN_WINDOW_S, b + SLOT_S) <= min(v, exp):
            return True
    return False


def audit(rows, truth, tl, k, first_b, last_b, retention_days, tz_min, out=print):
    """Judge one meter's final read. rows: [(t2k, fwd, rev, status)] as read; truth: the
    meter's model (served_at_slot: the values as served, in Wh); [first_b, last_b]: the
    boundaries the meter ever held up to the end.
    Returns counters (expected, delivered, missing_recoverable, duplicates, invented,
    status_wrong, resets, resets_flagged) and prints the first few problems."""
    r = dict.fromkeys(("expected", "delivered", "missing_recoverable", "duplicates",
                       "invented", "status_wrong", "resets", "resets_flagged",
                       "delivered_unrecoverable"), 0)
    shown = [0]

    def say(msg):
        shown[0] += 1
        if shown[0] <= 30:
            out("soak oracle: meter %d %s" % (k, msg))

    got = {}
    for t, fwd, rev, st in rows:
        if t % SLOT_S:
            r["invented"] += 1
            say("row off a boundary: %d" % t)
            continue
        if t in got:
            r["duplicates"] += 1
            say("DUPLICATE %s" % timeutil.iso(t, tz_min))
            continue
        got[t] = (fwd, rev, st)
    wins = tl.windows(k)
    for b in range(first_b, last_b + 1, SLOT_S):
        want = truth.served_at_slot(timeutil.slot_of_t2k(b))
        row = got.pop(b, None)
        rec = recoverable(b, wins, retention_days, tz_min)
        if rec:
            r["expected"] += 1
        if row is None:
            if rec:
                r["missing_recoverable"] += 1
                say("MISSING %s (recoverable)" % timeutil.iso(b, tz_min))
            continue
        if row[:2] != want:
            r["invented"] += 1
            say("WRONG VALUE %s got %r want %r" % (timeutil.iso(b, tz_min), row[:2], want))
            continue
        if rec:
            r["delivered"] += 1
        else:
            r["delivered_unrecoverable"] += 1  # delivered though no window was certain: fine
    for b in sorted(got):  # slots the meter never had
        r["invented"] += 1
        say("INVENTED row %s %r" % (timeutil.iso(b, tz_min), got[b]))
    _check_status(rows, tl, k, r, say, tz_min)
    return r


def _check_status(rows, tl, k, r, say, tz_min):
    seen = set()
    live = []  # boundaries of the rows captured live (no backfill bit), ascending
    status = {}
    for t, _f, _r, st in sorted(rows):
        if t in seen or t % SLOT_S:
            continue
        seen.add(t)
        status[t] = st
        if st & ~ALLOWED_BITS:
            r["status_wrong"] += 1
            say("status 0x%02X at %s: bits no fault causes" % (st, timeutil.iso(t, tz_min)))
        if not st & BACKFILL:
            live.append(t)
            # a live read needs the meter answering and the terminal running during the slot
            if covered(tl.silent[k] + tl.down, t, t + SLOT_S):
                r["status_wrong"] += 1
                say("live row at %s while the meter was silent or the terminal off"
                    % timeutil.iso(t, tz_min))
        elif st & CAD and not any(a - SLOT_S <= t <= b + SLOT_S for a, b in tl.crossed):
            # backfill flags only the slots whose boundary a step crossed (a slot of slack: the
            # soak knows the set's time to within its round trip)
            r["status_wrong"] += 1
            say("CAD on a backfilled row at %s, no step crossed it" % timeutil.iso(t, tz_min))
    sets = sorted(te for te, _certain in tl.clock_sets)
    certain = sorted(te for te, c in tl.clock_sets if c)
    # CAD allowed: some set happened before the row's slot ended, and no live row was captured
    # between that set and this row (it would have taken the pending flag).
    for t in live:
        if not status[t] & CAD:
            continue
        ok = False
        for te in sets:
            if te >= t + SLOT_S:
                break
            if not any(te <= x < t for x in live):
                ok = True
        if not ok:
            r["status_wrong"] += 1
            say("CAD at %s without a clock set before it" % timeutil.iso(t, tz_min))
    # CAD required: on the first live row captured after each set (the row of the set's own
    # slot may have been read before the set: then the next one), unless power was cut first.
    for te in certain:
        after = [x for x in live if x + SLOT_S > te][:2]
        if not after:
            continue
        cands = after[:1] if after[0] >= te else after
        cut = [c for c in tl.kills if te <= c < cands[-1] + SLOT_S]
        if cut or any(status[x] & CAD for x in cands):
            continue
        r["status_wrong"] += 1
        say("clock set at %s: no CAD on the next live row (%s)"
            % (timeutil.iso(te, tz_min), ", ".join(timeutil.iso(x, tz_min) for x in cands)))
    # ERR: at or after a counter reset, at most one per reset
    resets = sorted(tl.resets[k])
    r["resets"] = len(resets)
    err_rows = [t for t in sorted(status) if status[t] & ERR]
    for i, slot in enumerate(resets):
        rb = timeutil.t2k_of_slot(slot)
        nxt = timeutil.t2k_of_slot(resets[i + 1]) if i + 1 < len(resets) else None
        mine = [t for t in err_rows if t >= rb and (nxt is None or t < nxt)]
        if mine:
            r["resets_flagged"] += 1
        if len(mine) > 1:
            r["status_wrong"] += len(mine) - 1
            say("ERR %d times after the reset at %s" % (len(mine), timeutil.iso(rb, tz_min)))
    first_reset = timeutil.t2k_of_slot(resets[0]) if resets else None
    for t in err_rows:
        if first_reset is None or t < first_reset:
            r["status_wrong"] += 1
            say("ERR at %s with no counter reset before it" % timeutil.iso(t, tz_min))


WARMUP_DAYS = 2  # whole days after a boot left out of the heap trend


def heap_growth_kb_per_30d(samples, warmup_days=WARMUP_DAYS):
    """Least-squares slope of the live heap over simulated days, in KB per 30 days, from
    samples (boot, day, used_bytes) of whole days: one slope shared by every boot (each boot its
    own intercept: a power cut restarts the heap, which is not a trend), leaving out each boot's
    first `warmup_days` whole days, in which bounded tables fill (the rate limiter's sources,
    discovery's last events, learned meter quirks: a step of a few hundred bytes each, measured
    by heap_warmup_kb). None with fewer than 3 samples in the longest boot."""
    by_boot = {}
    for boot, day, used in samples:
        by_boot.setdefault(boot, []).append((day, used))
    sxy = sxx = 0.0
    n_max = 0
    for pts in by_boot.values():
        pts = pts[warmup_days:]
        n = len(pts)
        n_max = max(n_max, n)
        if n < 2:
            continue
        mx = sum(p[0] for p in pts) / n
        my = sum(p[1] for p in pts) / n
        sxy += sum((p[0] - mx) * (p[1] - my) for p in pts)
        sxx += sum((p[0] - mx) ** 2 for p in pts)
    if n_max < 3 or sxx == 0:
        return None
    return round(sxy / sxx * 30 / 1024, 2)


def heap_warmup_kb(samples):
    """Largest rise of the daily floor within one boot above that boot's first whole day (KB),
    over the whole boot: the bounded warm-up the trend leaves out, but also any leak (which the
    slope judges); a figure to read beside the slope, not a goal."""
    first = {}
    rise = 0
    for boot, _day, used in samples:
        first.setdefault(boot, used)
        rise = max(rise, used - first[boot])
    return round(rise / 1024, 1)
