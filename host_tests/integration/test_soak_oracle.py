"""The soak's oracle (tools/soak_oracle.py) and schedule (tools/chaos.py) on made-up data: each
rule can fail."""

from firmware import timeutil
from tools import chaos, soak_oracle
from tools.meter_model import MeterModel

TZ = 540
S = timeutil.SLOT_S
T0 = timeutil.t2k_from_fields(2025, 3, 31, 15, 0, 0)  # 2025-04-01 00:00 JST


def _setup(days=2, retention=3):
    truth = chaos.EpochModel(MeterModel(seed=3))
    tl = soak_oracle.Timeline(T0, 1)
    tl.end = T0 + days * timeutil.DAY_S
    first = soak_oracle.history_start(T0, retention, TZ)
    last = tl.end - S
    rows = [(b, *truth.served_at_slot(timeutil.slot_of_t2k(b)), 0)
            for b in range(first, last + 1, S)]
    return truth, tl, first, last, rows


def _audit(rows, truth, tl, first, last, retention=3):
    return soak_oracle.audit(rows, truth, tl, 0, first, last, retention, TZ, out=lambda *a: None)


def test_a_complete_exact_read_passes():
    truth, tl, first, last, rows = _setup()
    r = _audit(rows, truth, tl, first, last)
    assert r["expected"] == len(rows) and r["delivered"] == len(rows)
    assert r["missing_recoverable"] == r["duplicates"] == r["invented"] == r["status_wrong"] == 0


def test_missing_duplicate_wrong_and_invented_rows_are_counted():
    truth, tl, first, last, rows = _setup()
    bad = list(rows)
    del bad[10]  # missing
    bad.append(bad[20])  # duplicate
    t, f, rv, st = bad[30]
    bad[30] = (t, f + 1, rv, st)  # wrong value
    bad.append((last + S, 1, 2, 0))  # a slot the meter never had
    r = _audit(bad, truth, tl, first, last)
    assert r["missing_recoverable"] == 1
    assert r["duplicates"] == 1
    assert r["invented"] == 2


def test_slots_outside_every_window_are_not_required():
    truth, tl, first, last, rows = _setup(days=2, retention=0)
    # the meter keeps only today; it is silent for the whole first day: that day cannot be had
    tl.silent[0].append((T0, T0 + timeutil.DAY_S))
    day1 = [row for row in rows if row[0] >= T0 + timeutil.DAY_S]
    r = _audit(day1, truth, tl, first, last, retention=0)
    assert r["missing_recoverable"] == 0 and r["expected"] == len(day1)
    # ... but a live row from inside the silence cannot be
    live = [(T0 + 4 * S, *truth.served_at_slot(timeutil.slot_of_t2k(T0 + 4 * S)), 0)]
    r = _audit(day1 + live, truth, tl, first, last, retention=0)
    assert r["status_wrong"] == 1


def test_clock_adjusted_must_follow_a_clock_set():
    truth, tl, first, last, rows = _setup()
    i = next(i for i, row in enumerate(rows) if row[0] >= T0 + 10 * S)
    te = rows[i][0] - 600  # set during the slot before: the next live row must carry CAD
    tl.clock_sets.append((te, True))
    assert _audit(rows, truth, tl, first, last)["status_wrong"] == 1  # no CAD anywhere
    flagged = list(rows)
    t, f, rv, _ = flagged[i]
    flagged[i] = (t, f, rv, soak_oracle.CAD)
    assert _audit(flagged, truth, tl, first, last)["status_wrong"] == 0
    t, f, rv, _ = flagged[i + 5]
    flagged[i + 5] = (t, f, rv, soak_oracle.CAD)  # a second CAD with no set before it
    assert _audit(flagged, truth, tl, first, last)["status_wrong"] == 1
    tl.kills.append(te + 60)  # a power cut before the next row: the flag may be lost
    assert _audit(rows, truth, tl, first, last)["status_wrong"] == 0


def test_clock_adjusted_on_a_backfilled_row_only_where_a_step_crossed():
    truth, tl, first, last, rows = _setup()
    i = next(i for i, row in enumerate(rows) if row[0] >= T0 + 10 * S)
    bf = soak_oracle.BACKFILL
    re_read = list(rows)
    t, f, rv, _ = re_read[i]
    re_read[i] = (t, f, rv, bf | soak_oracle.CAD)  # re-read from history, flagged
    assert _audit(re_read, truth, tl, first, last)["status_wrong"] == 1  # no step crossed it
    tl.crossed.append((t - 600, t + 3600))  # a +1 h step 10 min before its boundary
    assert _audit(re_read, truth, tl, first, last)["status_wrong"] == 0
    t, f, rv, _ = re_read[i + 5]  # 2.5 h later: outside the step (and its slot of slack)
    re_read[i + 5] = (t, f, rv, bf | soak_oracle.CAD)
    assert _audit(re_read, truth, tl, first, last)["status_wrong"] == 1


def test_reset_flag_only_after_a_counter_reset_and_bits_no_fault_causes():
    truth, tl, first, last, rows = _setup()
    rslot = timeutil.slot_of_t2k(T0 + 20 * S)
    truth.reset_at(rslot, seed=9)
    tl.resets[0].append(rslot)
    rows = [(b, *truth.served_at_slot(timeutil.slot_of_t2k(b)), 0) for b, _f, _r, _s in rows]
    assert truth.at_slot(rslot) == (0, 0)
    r = _audit(rows, truth, tl, first, last)
    assert r["status_wrong"] == 0 and r["resets"] == 1 and r["resets_flagged"] == 0
    i = next(i for i, row in enumerate(rows) if row[0] == T0 + 20 * S)
    ok = list(rows)
    ok[i] = ok[i][:3] + (soak_oracle.ERR,)
    r = _audit(ok, truth, tl, first, last)
    assert r["status_wrong"] == 0 and r["resets_flagged"] == 1
    early = list(rows)
    early[i - 1] = early[i - 1][:3] + (soak_oracle.ERR,)
    assert _audit(early, truth, tl, first, last)["status_wrong"] == 1
    dnv = list(rows)
    dnv[3] = dnv[3][:3] + (0x04,)
    assert _audit(dnv, truth, tl, first, last)["status_wrong"] == 1


def test_heap_growth_is_the_within_boot_slope_after_warmup():
    flat = [(1, d, 300_000 + (d % 2) * 2000) for d in range(30)]
    assert abs(soak_oracle.heap_growth_kb_per_30d(flat)) < 1
    leak = [(1, d, 300_000 + d * 1024) for d in range(30)]
    assert soak_oracle.heap_growth_kb_per_30d(leak) == 30.0
    # a reboot drops the heap: not a negative trend
    two = [(1, d, 300_000 + d * 512) for d in range(10)] + [(2, d, 290_000 + d * 512)
                                                           for d in range(10, 20)]
    assert soak_oracle.heap_growth_kb_per_30d(two) == 15.0
    # tables filling in the first two days of a boot are warm-up, not a trend
    warm = [(1, 0, 300_000), (1, 1, 302_000)] + [(1, d, 303_000) for d in range(2, 12)]
    assert soak_oracle.heap_growth_kb_per_30d(warm) == 0
    assert soak_oracle.heap_growth_kb_per_30d(warm, warmup_days=0) > 4
    assert soak_oracle.heap_warmup_kb(warm) == 2.9
    assert soak_oracle.heap_growth_kb_per_30d([(1, d, d) for d in range(4)]) is None


def test_schedule_is_reproducible_and_bounded():
    a = chaos.schedule(5, 30, start_t2k=T0)
    assert a == chaos.schedule(5, 30, start_t2k=T0)
    assert a != chaos.schedule(6, 30, start_t2k=T0)
    end = 30 * timeutil.DAY_S - timeutil.DAY_S
    for f in a:
        assert 12 * 3600 <= f.at_s and f.at_s + f.duration_s <= end
        if f.kind in ("meter_silent", "radio_loss"):
            assert 5 * 60 <= f.duration_s <= 3 * timeutil.DAY_S
        if f.kind == "clock_step":
            assert 60 <= abs(f.params["step_s"]) <= timeutil.DAY_S
        if "n" in f.params:
            assert f.params["n"] <= chaos.FLOOD_MAX
    steps = [f for f in a if f.kind == "clock_step"]
    for x, y in zip(steps, steps[1:], strict=False):
        assert x.at_s + x.duration_s <= y.at_s
