"""Two terminals on one smart-meter twin under `micropython`: terminal 1 is configured with a PANA
password the twin's credential table does not hold and must fail PANA (latched, reported, still
running) while terminal 0 runs; then the head-end CLI (tools/headend_cli.py) reads terminal 0
through the twin and writes a CSV equal to its meter's ground truth, and a PNG."""

import asyncio
import csv
import io
import os
import time

import pytest
from loop_thread import LoopThread
from rich.console import Console

from firmware import timeutil
from tools import headend_cli
from tools.deployment import TwinDeployment, wait_until

RATE = 900
WRONG = "WRONGPASS999"


@pytest.fixture(scope="module")
def twin():
    bg = LoopThread()
    run = bg.run

    d = TwinDeployment(terminals=2, rate=RATE, passwords={1: WRONG})
    d.run = run
    run(d.start(), 120)
    heads = [t.head_end(out=lambda *a: None) for t in d.terminals]
    try:
        run(heads[0].connect(timeout_s=60, alive=d.terminals[0].firmware_alive), 90)
        run(heads[0].sync_clock())
        d.first_b = heads[0].clock_set_at - heads[0].clock_set_at % 1800 + 1800
        d.heads = heads
        time.sleep(d.sim.wall_seconds_until(d.first_b + 3 * 1800 + 300))
        yield d
    finally:
        for h in heads:
            h.close()
        run(d.stop())
        bg.close()


@pytest.mark.timeout(120)
def test_wrong_password_fails_pana_while_the_other_runs(twin):
    bad = twin.terminals[1]
    assert bad.firmware_config()["radio"]["pana_password"] == WRONG
    assert twin.twin.module_kw(1)["pana_password"] != WRONG
    assert wait_until(lambda: bad.module.stats["pana_2"] >= 1, 20), bad.terminal_log()[-2000:]
    assert not bad.module.authenticated and bad.module.stats["pana_1"] == 0
    assert bad.firmware_alive()
    log_text = bad.terminal_log()
    assert "bad credentials" in log_text
    assert WRONG not in log_text  # the password never reaches the log
    # nothing of terminal 1 crossed the air; its head-end gets no association
    assert all(e[0] == 0 for e in twin.twin.schedule)
    with pytest.raises(TimeoutError):
        twin.run(twin.heads[1].connect(timeout_s=5), 30)
    assert twin.twin.stats.get("datagrams_up", 0) > 0
    assert not [e for e in twin.twin.schedule if e[0] == 1 and e[1] == "up"]
    # terminal 0 meanwhile delivers its slots
    rows = twin.run(twin.heads[0].client.get_profile(twin.first_b, twin.first_b + 2 * 1800))
    m = twin.terminals[0].model
    assert [(timeutil.slot_of_t2k(t), f, r) for t, f, r, _s in rows] == [
        (s,) + m.served_at_slot(s) for s in
        range(timeutil.slot_of_t2k(twin.first_b), timeutil.slot_of_t2k(twin.first_b) + 3)]


@pytest.mark.timeout(120)
def test_cli_csv_equals_ground_truth_and_png(twin, tmp_path):
    t0 = twin.terminals[0]
    last_b = twin.first_b + 3 * 1800
    csv_path, png_path = tmp_path / "t0.csv", tmp_path / "t0.png"
    out = io.StringIO()
    argv = ["--server", "%s:%d" % t0.headend_server,
            "--from", timeutil.iso(twin.first_b, 540)[:19],
            "--to", timeutil.iso(last_b, 540)[:19],
            "--csv", str(csv_path), "--png", str(png_path), "--gaps",
            "--ic-file", os.path.join(twin.workdir, "headend.ic")]
    rc = headend_cli.main(argv, console=Console(file=out, width=120))
    text = out.getvalue()
    assert rc == 0, text
    assert "gaps: 0 slots missing in 0 ranges" in text
    assert "blocks" in text and "load profile: 4 rows" in text
    with open(csv_path) as f:
        got = list(csv.DictReader(f))
    first = timeutil.slot_of_t2k(twin.first_b)
    assert [int(r["slot"]) for r in got] == list(range(first, first + 4))
    for r in got:
        fwd, rev = t0.model.served_at_slot(int(r["slot"]))  # Wh, exact
        assert (r["fwd_wh"], r["rev_wh"]) == (str(fwd), str(rev))
        assert r["slot_start"] == timeutil.iso(timeutil.t2k_of_slot(int(r["slot"])), 540)
    with open(png_path, "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def _read(twin, lo, hi, tmp_path, name, **kw):
    t0 = twin.terminals[0]
    out = io.StringIO()
    r = asyncio.run(headend_cli.read_terminal(
        t0.headend_server, headend_cli.default_local(t0.headend_server), lo, hi,
        csv_path=str(tmp_path / name), gaps=True, table_rows=-1,
        console=Console(file=out, width=120), ic_file=os.path.join(twin.workdir, "headend.ic"),
        **kw))
    for row in r["rows"]:
        assert row[1:3] == t0.model.served_at_slot(timeutil.slot_of_t2k(row[0]))
    return r, out.getvalue()


@pytest.mark.timeout(120)
def test_cli_rereads_gaps_and_recovers_what_arrived_meanwhile(twin, tmp_path):
    # the range ends two boundaries ahead: those slots are missing at the first read, and the
    # re-read after the wait (2 x 30 simulated minutes = 4 s at x900, plus margin) brings them
    now = twin.sim.now_t2k()
    nxt = now - now % 1800 + 1800
    lo, hi = twin.first_b, nxt + 1800
    r, text = _read(twin, lo, hi, tmp_path, "g.csv", gap_wait_s=2 * 1800 / RATE + 3)
    ahead = [timeutil.slot_of_t2k(nxt), timeutil.slot_of_t2k(nxt + 1800)]
    found = [s for s0, s1 in r["gaps"] for s in range(s0, s1 + 1)]
    assert set(ahead) <= set(found), (r["gaps"], ahead)
    assert r["recovered"] == len(found) and r["still_missing"] == [], text
    slots = [timeutil.slot_of_t2k(row[0]) for row in r["rows"]]
    assert slots == list(range(timeutil.slot_of_t2k(lo), timeutil.slot_of_t2k(hi) + 1))
    assert "re-read recovered %d, still missing 0" % len(found) in text


@pytest.mark.timeout(120)
def test_cli_reports_gaps_that_stay(twin, tmp_path):
    # 60 days before the clock was set: beyond the meter's history, so never stored
    lo = twin.first_b - 60 * timeutil.DAY_S
    hi = lo + 3 * 1800
    r, text = _read(twin, lo, hi, tmp_path, "h.csv")
    want = list(range(timeutil.slot_of_t2k(lo), timeutil.slot_of_t2k(hi) + 1))
    assert r["rows"] == [] and r["gaps"] == [(want[0], want[-1])]
    assert r["still_missing"] == want and r["recovered"] == 0
    assert "still missing 4" in text
