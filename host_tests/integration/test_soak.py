"""The chaos soak (tools/soak.py, docs/soak.md) over 3 simulated days: every kind of fault at
least once, then the final full-profile audit against the meter's own records. `make soak` runs
the same for 30 days with a random seed. SOAK_SEED replays another schedule."""

import asyncio
import os

from tools import chaos, soak


def test_three_day_soak_delivers_every_recoverable_slot_once():
    seed = int(os.environ.get("SOAK_SEED", "7"))
    lines = []
    fig, problems, _workdir = asyncio.run(soak.run_soak(3, seed, rate=3600, out=lines.append))
    print("\n".join(lines))
    print(fig)
    assert problems == [], "seed %d: %s" % (seed, problems)
    kinds = {f.kind for f in chaos.schedule(seed, 3)}
    assert kinds == set(chaos.PER_30_DAYS), "every kind of fault is scheduled"
    assert fig["soak.faults_injected"] >= len(kinds) - 2  # a step during a cut is skipped
    assert fig["soak.power_cuts"] >= 1
    assert fig["soak.slots_expected"] > 45 * 48  # the meter's whole history plus the run
    assert fig["soak.slots_delivered"] == fig["soak.slots_expected"]
    assert fig["soak.slots_missing_recoverable"] == 0
    assert fig["soak.duplicates"] == 0 and fig["soak.invented"] == 0
    assert fig["soak.heap_samples"] >= 1  # the floor of each whole simulated day
