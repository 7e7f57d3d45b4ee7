# Property tests: random put/remount/power-cut sequences against an independent model, and a
# seeded fuzz of the mount parser over damaged flash (bit flips, garbage, torn erases).
import random
import time
import unittest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from test_store_powercut import check_store, model_put, newest_by_scan

from firmware import log
from firmware.hal.norflash import NorFlash, PowerCut
from firmware.store import record as r
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

S0 = 960528
SOURCES = ("fixed", "cumulative", "history")


def setup_module(_m):
    log.set_sink(lambda line: None)


def teardown_module(_m):
    log.set_sink(None)


put_op = hs.tuples(
    hs.just("put"),
    hs.integers(0, 2),  # meter
    hs.integers(0, 60),  # slot offset: small range, so slots collide often
    hs.integers(0, 3),  # value choice: few distinct values, so repeats happen
    hs.sampled_from(SOURCES),
    hs.sampled_from((0, r.FLAG_POWER_DOWN, r.FLAG_CLOCK_ADJUSTED, r.FLAG_UNAVAILABLE)),
)
remount_op = hs.tuples(hs.just("remount"))
index_op = hs.tuples(hs.just("index"), hs.integers(0, 2), hs.integers(1, 80), hs.integers(0, 40))
# (cut, after n ops, torn, seed, weak: 0 = unfinished bits stay, 2 = they settle at the second
# power-up after the cut)
cut_op = hs.tuples(hs.just("cut"), hs.integers(1, 4), hs.booleans(), hs.integers(1, 10**6),
                   hs.sampled_from((0, 2)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(hs.one_of(put_op, put_op, put_op, remount_op, cut_op, index_op), max_size=120))
def test_random_sequences_match_model(ops):
    tc = unittest.TestCase()
    f = NorFlash(5, block_size=256)
    open_store = lambda: IntervalStore(FlashLog(f), max_meters=3)  # noqa: E731
    st = open_store()
    model = {}
    seq_of = {}
    for op in ops:
        if op[0] == "remount":
            try:
                st = open_store()
            except PowerCut:  # an armed cut may fire in the mount itself (erasing a dirty spare)
                f.power_cycle()
                st = open_store()
            continue
        if op[0] == "index":  # entry-number reads interleaved with puts, drops and cuts
            _, m, first, n = op
            want = list(st.rows(m))[first - 1:first + n]
            assert list(st.rows_by_index(m, first, first + n)) == want
            continue
        if op[0] == "cut":
            f.arm(op[1], tear=op[2], seed=op[3], weak=op[4])
            continue
        _, m, off, v, src, flags = op
        fwd, rev = (v * 1000 + off, v)
        put = (m, S0 + off, fwd, rev, 1, src, flags)
        after = dict(model)
        expect = model_put(after, put)
        try:
            wrote = st.put(*put)
        except PowerCut:
            f.power_cycle()
            st = open_store()
            got = newest_by_scan(st.log).get((m, S0 + off))
            if got is not None and got[0] >= st.log.next_seq - 1 and expect:
                # the interrupted put landed after all: it is the newest record
                if got[1] == after[(m, S0 + off)]:
                    model = after
                    seq_of[(m, S0 + off)] = got[0]
            continue
        assert wrote == expect, (put, model.get((m, S0 + off)))
        model = after
        if wrote:
            seq_of[(m, S0 + off)] = st.log.next_seq - 1
    f.power_cycle()
    st = open_store()
    scan, seqs = check_store(tc, st, 3)
    lo = seqs[0] if seqs else 1 << 40
    for key, val in model.items():
        if seq_of[key] >= lo:
            assert scan[key][1] == val, key
    for key in scan:
        assert key in model, "invented %r" % (key,)


def populated(rng, n_records):
    f = NorFlash(8, block_size=512)
    st = IntervalStore(FlashLog(f), max_meters=2)
    history = {}
    for _i in range(n_records):
        m = rng.randrange(2)
        slot = S0 + rng.randrange(120)
        fwd, rev = rng.randrange(10**9), rng.randrange(10**9)
        src = rng.choice(SOURCES)
        st.put(m, slot, fwd, rev, 1, src, 0)
        history.setdefault((m, slot), set()).add((fwd, rev))
    return f, history


def damage(rng, f):
    for _ in range(rng.randrange(1, 6)):
        kind = rng.randrange(4)
        b = rng.randrange(f.n_blocks)
        if kind == 0:  # single bit flips anywhere
            f.corrupt(b, rng.randrange(f.block_size), 1 << rng.randrange(8))
        elif kind == 1:  # a run of garbage bytes
            off = rng.randrange(f.block_size - 40)
            for i in range(rng.randrange(1, 40)):
                f.corrupt(b, off + i, rng.randrange(1, 256))
        elif kind == 2:  # torn erase: a prefix of the sector reads erased
            n = rng.randrange(f.block_size)
            f._mv[b * f.block_size:b * f.block_size + n] = b"\xff" * n
        else:  # a whole sector of random bytes
            f._mv[b * f.block_size:(b + 1) * f.block_size] = bytes(
                rng.randrange(256) for _ in range(f.block_size))


def test_fuzz_mount_over_damaged_flash():
    tc = unittest.TestCase()
    rng = random.Random(20241015)
    t0 = time.monotonic()
    cases = 0
    while time.monotonic() - t0 < 4 and cases < 400:
        f, history = populated(rng, rng.randrange(20, 200))
        damage(rng, f)
        st = IntervalStore(FlashLog(f), max_meters=2)  # must not raise
        scan, _ = check_store(tc, st, 2)
        for key, got in scan.items():
            # never an invented value: every row is something that was written for that slot
            assert key in history, key
            assert got[1][:2] in history[key], (key, got)
        for i in range(30):
            st.put(i % 2, S0 + 1000 + i, i, i, 1, "fixed")
        st2 = IntervalStore(FlashLog(f), max_meters=2)
        check_store(tc, st2, 2)
        for i in range(30):
            assert st2.get(i % 2, S0 + 1000 + i) == (i, i, 1, r.SOURCE_FIXED, 0)
        cases += 1
    print("\nstore mount fuzz cases: %d" % cases)
    assert cases >= 50


def test_fuzz_region_of_random_bytes():
    rng = random.Random(7)
    for _ in range(30):
        f = NorFlash(4, block_size=256)
        f._mv[:] = bytes(rng.randrange(256) for _ in range(4 * 256))
        st = IntervalStore(FlashLog(f), max_meters=1)
        assert list(st.rows(0)) == []
        assert st.put(0, S0, 1, 2, 1, "fixed")
        assert IntervalStore(FlashLog(f), max_meters=1).get(0, S0) == (1, 2, 1, 1, 0)
