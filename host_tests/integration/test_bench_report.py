"""bench/REPORT.md and `make bench-check` (tools/bench_report.py) on fake figures: every goal of
tools/goals.py is judged, a missed goal fails the check by name, and a figure that vanished from
a lane that ran does not pass."""

import io
import json
import os
import re

from tools import bench_report, goals

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _meeting_every_goal():
    """Fake figures right at every threshold (each comparison used here includes equality),
    plus one figure without a goal."""
    bench, soak = {"firmware.mpy_total_kb": 180.5}, {"soak.seed": 1234}
    for g in goals.GOALS:
        assert g.op in ("<=", ">=", "=="), g.metric  # else the threshold itself would not pass
        (soak if g.lane == "soak" else bench)[g.metric] = g.threshold
    return bench, soak


def _write(tmp_path, bench, soak=None):
    (tmp_path / "results.json").write_text(json.dumps(bench))
    if soak is not None:
        (tmp_path / "soak.json").write_text(json.dumps(soak))
    return ["--results", str(tmp_path / "results.json"), "--soak", str(tmp_path / "soak.json"),
            "--out", str(tmp_path / "REPORT.md")]


def _check(args):
    err = io.StringIO()
    rc = bench_report.main(["--check"] + args, err=err)
    return rc, err.getvalue()


def test_every_goal_met_passes_and_lists_figures_without_a_goal(tmp_path):
    bench, soak = _meeting_every_goal()
    rc, err = _check(_write(tmp_path, bench, soak))
    assert rc == 0, err
    assert err == ""
    md = (tmp_path / "REPORT.md").read_text()
    n = len(goals.GOALS)
    assert "%d goals: %d pass, 0 missed, 0 not run." % (n, n) in md
    for g in goals.GOALS:
        row = r"\| `%s` \| [^|]+ \| %s \| pass \|" % (re.escape(g.metric), re.escape(g.text()))
        assert re.search(row, md), g.metric
    assert "| `firmware.mpy_total_kb` | 180.5 |  | no goal |" in md
    assert "| `soak.seed` | 1234 |  | no goal |" in md


def test_a_missed_goal_fails_the_check_and_is_named(tmp_path):
    bench, soak = _meeting_every_goal()
    bench["firmware.data_heap_kb"] = 68.3  # the figure at the end of issue 7: budget 52
    soak["soak.duplicates"] = 2
    rc, err = _check(_write(tmp_path, bench, soak))
    assert rc == 1
    named = sorted(re.findall(r"goal missed: (\S+) =", err))
    assert named == ["firmware.data_heap_kb", "soak.duplicates"], err
    assert "firmware.data_heap_kb = 68.3, goal <= 52" in err
    md = (tmp_path / "REPORT.md").read_text()
    assert "2 missed" in md
    assert "| `firmware.data_heap_kb` | 68.3 | <= 52 | **MISSED** |" in md
    assert "- `soak.duplicates` = 2, goal == 0 (MISSED)" in md


def test_one_step_past_each_threshold_is_missed(tmp_path):
    # every comparison is applied the right way round: nudge each figure just past its goal
    for g in goals.GOALS:
        bench, soak = _meeting_every_goal()
        lane = soak if g.lane == "soak" else bench
        lane[g.metric] = g.threshold + (1 if g.op in ("<=", "==") else -1)
        rc, err = _check(_write(tmp_path, bench, soak))
        assert rc == 1 and re.findall(r"goal missed: (\S+) =", err) == [g.metric], (g.metric, err)


def test_a_vanished_figure_is_missed_but_a_lane_not_run_is_not(tmp_path):
    bench, soak = _meeting_every_goal()
    del bench["store.powercut_lost"]
    rc, err = _check(_write(tmp_path, bench))  # no soak.json: make soak did not run
    assert rc == 1
    assert re.findall(r"goal missed: (\S+) =", err) == ["store.powercut_lost"]
    md = (tmp_path / "REPORT.md").read_text()
    assert "| `store.powercut_lost` | – | == 0 | **MISSED (not measured)** |" in md
    n_soak = sum(1 for g in goals.GOALS if g.lane == "soak")
    assert "%d not run." % n_soak in md
    assert "| `soak.invented` | – | == 0 | not run |" in md


def test_a_soak_lane_that_ran_must_give_its_figures(tmp_path):
    bench, soak = _meeting_every_goal()
    del soak["soak.invented"]
    rc, err = _check(_write(tmp_path, bench, soak))
    assert rc == 1 and re.findall(r"goal missed: (\S+) =", err) == ["soak.invented"]


def test_a_non_number_never_passes(tmp_path):
    bench, soak = _meeting_every_goal()
    bench["store.powercut_lost"] = None
    rc, err = _check(_write(tmp_path, bench, soak))
    assert rc == 1 and "store.powercut_lost" in err


def test_without_results_the_check_fails(tmp_path):
    rc, err = _check(["--results", str(tmp_path / "none.json"), "--out",
                      str(tmp_path / "REPORT.md")])
    assert rc == 2 and "run `make bench` first" in err


def test_goals_name_figures_the_bench_produces():
    # a renamed figure must take its goal along: every bench goal's name is in a bench tool
    text = ""
    for name in ("bench.py", "store_bench.py", "echonet_bench.py", "dlms_bench.py",
                 "radio_bench.py", "twin_bench.py"):
        with open(os.path.join(ROOT, "tools", name)) as f:
            text += f.read()
    for g in goals.GOALS:
        if g.lane == "bench":
            base = g.metric.replace("_4meters", "")
            assert base in text, g.metric
        assert g.why, g.metric
    goals.by_metric()  # no metric has two goals
