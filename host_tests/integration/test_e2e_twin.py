"""Four terminals on one smart-meter twin, end to end under `micropython`: each terminal (its own
meter emulator, firmware process and J11 module emulator) joins the twin's PAN with its own
credentials, has its clock set from the twin's calendar, and delivers every slot of half a
simulated day, exactly, through the twin's relay and the modelled shared air (tools.demo's run,
the code behind `make demo TERMINALS=4`)."""

import asyncio

import pytest

from tools import demo
from tools.deployment import TERMINAL_START_STEP
from tools.smartmeter import DOWN, UP

RATE = 1800
DAYS = 0.5


@pytest.mark.timeout(300)
def test_four_terminals_deliver_every_slot_exactly_through_the_twin():
    lines = []
    seen = {}

    def on_stop(dep):
        seen["schedule"] = list(dep.twin.schedule)
        seen["stats"] = dict(dep.twin.stats)
        seen["pana"] = [dict(t.module.stats) for t in dep.terminals]
        seen["first"] = [t.model.served_at_slot(t.model.origin)[0] for t in dep.terminals]

    results = asyncio.run(demo.run_demo(DAYS, RATE, None, "micropython", 1, False,
                                        out=lines.append, terminals=4, on_stop=on_stop))
    text = "\n".join(lines)
    assert len(results) == 4
    for k, r in enumerate(results):
        assert r["firmware_alive"], "terminal %d died\n%s" % (k, text[-3000:])
        # 0.5 simulated day: 24 boundaries, give or take the join time
        assert r["expected"] >= 20, (k, r)
        assert r["missing"] == 0 and r["mismatched"] == 0, (k, r, text[-3000:])
        assert r["delivered"] == r["expected"]
        air = r["air"]
        assert air["up_datagrams"] > 0 and air["down_datagrams"] > 0
        assert 0 < air["bound_s"] < air["tx_s"] < air["medium_s"]
        # each terminal joined the twin's PAN once, with its own (correct) credentials
        assert seen["pana"][k]["pana_1"] >= 1 and seen["pana"][k].get("pana_2", 0) == 0
        assert "terminal %d: head-end: set terminal clock to" % k in text
    assert demo.results_ok(results)
    assert demo.summary_lines(results) == [
        "terminal %d: intervals expected=%d delivered=%d missing=0" % (k, r["expected"],
                                                                    r["expected"])
        for k, r in enumerate(results)]
    # the meters' values differ by construction (a mix-up of terminals in the relay shows)
    assert [b - a for a, b in zip(seen["first"], seen["first"][1:])] == \
        [TERMINAL_START_STEP * 100] * 3
    # one medium: no two transmissions overlap, and all four terminals used it both ways
    sched = seen["schedule"]
    for a, b in zip(sched, sched[1:]):
        assert b[4] >= a[5]
    assert {(e[0], e[1]) for e in sched} == {(k, d) for k in range(4) for d in (UP, DOWN)}
    assert seen["stats"].get("air_unknown_source", 0) == 0
