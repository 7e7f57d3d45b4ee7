"""The heap sweep of make bench: the reported minimum passed every run, and no size above it was
seen to fail (the search stops at the first failing size, then refines only below the last
pass)."""

import pytest

from tools import bench


def _runner(fails_below, flaky=()):
    """runs_at(kb) for a fake terminal: every run passes at fails_below KB and above, except the
    sizes in `flaky`, where one run of three fails."""
    seen = []

    def runs_at(kb):
        seen.append(kb)
        ok = kb >= fails_below
        out = []
        for k in range(bench.RUNS):
            good = ok and not (kb in flaky and k == 1)
            out.append({"ok": good, "log": "" if good else "MemoryError", "missing": 0})
        return out

    return runs_at, seen


def test_minimum_is_the_smallest_size_passing_every_run():
    runs_at, seen = _runner(fails_below=301)
    kb, table, _kept = bench.sweep(1, 336, runs_at=runs_at, log=lambda *a: None)
    assert kb == 304  # 336 ... 304 pass (8 KB steps), 296 fails, 300 fails (4 KB refinement)
    assert seen == [336, 328, 320, 312, 304, 296, 300]
    assert all(table[s] == bench.RUNS for s in table if s >= kb)


def test_a_flaky_size_stops_the_search_above_it():
    # 320 fails one run of three: nothing at or below it is reported, even if smaller sizes
    # would pass: the figure is a threshold, not a lucky bisection
    runs_at, seen = _runner(fails_below=250, flaky=(320,))
    kb, _table, _kept = bench.sweep(1, 336, runs_at=runs_at, log=lambda *a: None)
    assert kb == 324
    assert 312 not in seen


def test_refinement_never_tests_the_failing_coarse_size_again():
    runs_at, seen = _runner(fails_below=355)
    kb, _t, _k = bench.sweep(4, 384, runs_at=runs_at, log=lambda *a: None)
    assert kb == 356
    assert seen.count(352) == 1


def test_start_size_must_pass():
    runs_at, _seen = _runner(fails_below=400)
    with pytest.raises(SystemExit):
        bench.sweep(1, 336, runs_at=runs_at, log=lambda *a: None)
