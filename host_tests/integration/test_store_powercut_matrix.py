# The unit lane's power-cut harness on a bigger scenario (3 days, 3 meters, 8 sectors of 20 slots),
# clean and torn (two seeds per op), plus a second cut during the recovery that follows the first.
import time
import unittest

from test_store_powercut import Harness, check_store, newest_by_scan, workload

from firmware import log
from firmware.hal.norflash import NorFlash, PowerCut
from firmware.store import record as r


def setup_module(_m):
    log.set_sink(lambda line: None)


def teardown_module(_m):
    log.set_sink(None)


def test_cut_at_every_op_big_scenario():
    t0 = time.monotonic()
    h = Harness(unittest.TestCase(), workload(3, meters=3), 8, 512, 3)
    cases = h.run_all(seeds=(1, 1000, 2000))
    print("\nstore power-cut cases (integration): %d over %d ops in %.1f s"
          % (cases, h.total, time.monotonic() - t0))
    assert cases > 2000


def clone(f):
    """A copy of the chip, its weak bits (still to settle) included."""
    g = NorFlash(f.n_blocks, block_size=f.block_size)
    g._mv[:] = f._mv
    g.power_ups = f.power_ups
    g._weak = [list(w) for w in f._weak]
    return g


def test_second_cut_during_recovery():
    tc = unittest.TestCase()
    ops = workload(2, meters=2)
    h = Harness(tc, ops, 6, 256, 2)
    total = h.total_ops()
    cases = 0
    for k in range(1, total + 1, 3):
        f = NorFlash(6, block_size=256)
        st = h.open(f)
        # the first cut's unfinished bits settle at the second power-up: after the recovery
        # (cut or not) below, before the final mounts
        f.arm(k, tear=True, seed=k, weak=2)
        inflight = None
        try:
            for op in ops:
                inflight = op
                st.put(*op)
            inflight = None
        except PowerCut:
            pass
        f.power_cycle()
        base = clone(f)
        scan1 = newest_by_scan(h.open(clone(base)).log)
        last = max(o[1] for o in ops) + 1
        extra = {(0, last + i): (7 + i, 1, 1, r.SOURCE_FIXED, 0) for i in range(12)}
        for j in range(1, 30):
            g = clone(base)
            g.arm(j, tear=bool(j % 2), seed=j, weak=1)  # a cut seal settles at once
            try:
                st2 = h.open(g)  # the mount itself may erase: cut there too
                for (m, slot), v in extra.items():
                    st2.put(m, slot, v[0], v[1], v[2], v[3], v[4])
            except PowerCut:
                pass
            g.power_cycle()  # the second power-up: the first cut's weak bits settle
            st3 = h.open(g)
            scan3, seqs3 = check_store(tc, st3, 2)
            lo = seqs3[0] if seqs3 else 1 << 40
            infl_key = None if inflight is None else (inflight[0], inflight[1])
            late = scan3.get(infl_key)
            if late is not None and late != scan1.get(infl_key) and infl_key not in extra:
                # the first cut's put, never acknowledged, landed late: its torn record settled
                # before any mount had sealed it (the recovery mount was cut first), so no
                # sequence number had been handed out again and it is the newest of its slot
                tc.assertEqual(late[1][:2], inflight[2:4])
                if infl_key in scan1:
                    tc.assertGreater(late[0], scan1[infl_key][0])
            else:
                infl_key = None
            for key, got in scan1.items():
                if got[0] >= lo and key != infl_key:
                    tc.assertEqual(scan3.get(key), got)
            for key, got in scan3.items():
                if key == infl_key:
                    continue
                if key not in scan1:
                    tc.assertIn(key, extra)
                    tc.assertEqual(got[1], extra[key])
                elif key in extra:
                    tc.assertEqual(got[1], extra[key])
            st3.put(1, last + 100, 1, 2, 1, "history")
            g.power_cycle()
            st4 = h.open(g)
            check_store(tc, st4, 2)
            tc.assertEqual(st4.get(1, last + 100), (1, 2, 1, r.SOURCE_HISTORY, 0))
            cases += 1
    print("\nstore double power-cut cases: %d" % cases)
    assert cases > 500
