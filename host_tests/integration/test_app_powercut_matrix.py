"""The power-cut matrix of the interval store with the real capture loop and backfill: a multi-day
scenario cut at EVERY program/erase operation, once clean and once torn. After each cut the
terminal stays off for an hour, reboots (mount + recovery), backfills from the meter's history and
runs on; at the end every boundary holds exactly the meter's value, once, and every record the
store acknowledged before the cut is still there.

Default: 2 simulated days. `make soak` runs more days (POWERCUT_DAYS)."""

import os
import time

from powercut_scenario import count_ops, run_case


def test_cut_at_every_operation_of_a_multi_day_scenario(tc):
    days = float(os.environ.get("POWERCUT_DAYS", "2"))
    t0 = time.monotonic()
    ops = count_ops(days)
    cases = 0
    for k in range(1, ops + 1):
        for tear in (False, True):
            sc = run_case(days, k, tear)
            sc.check(tc)  # raises on any lost, invented or duplicated value
            assert sc.reboots >= 1
            cases += 1
    print("power-cut matrix: %g days, %d flash operations, %d cases, 0 lost, %.1f s"
          % (days, ops, cases, time.monotonic() - t0))
    assert cases == 2 * ops
