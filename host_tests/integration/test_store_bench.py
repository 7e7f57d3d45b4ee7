# Small runs of the store bench's micropython and power-cut measurements (tools/store_bench.py):
# the figures come out, are sane, and the loss counter really counts losses.

import pytest

from firmware import log
from firmware.store.record import HEADER_SIZE, RECORD_SIZE
from tools import store_bench
from tools.store_bench import _LossCountingHarness

# enough 30-minute records to wrap the 512 KB ring once (127 sectors x 170 slots = 21,590)
_FULL = 22500


@pytest.fixture(scope="module")
def full_log():
    figures, flash = store_bench.append_bench(_FULL)
    return figures, flash


def test_recovery_of_full_log_under_micropython(full_log):
    figures, flash = full_log
    m = store_bench.recovery_bench(flash, runs=3)
    assert m["store.recovery_ms_full_log"] > 0, m
    # a full ring: every sector but the spare and the fresh head's free slots hold records
    assert figures["store.retention_records_512k"] <= m["store.recovery_records"] <= 127 * 170
    assert 1 < m["store.recovery_heap_kb"] < 64, m


def test_recovery_refuses_a_log_that_is_not_full():
    _figures, flash = store_bench.append_bench(3000)
    with pytest.raises(ValueError):
        store_bench.recovery_bench(flash, runs=1)


def test_micropython_helper_failure_is_reported():
    with pytest.raises(RuntimeError):
        store_bench._run_micropython(["recovery", "/nonexistent/meterlog.bin", 128, 1], "256k")


def test_littlefs_costs_more_than_the_log(full_log):
    figures, _flash = full_log
    m = store_bench.lfs_bench(400)
    assert m["store.lfs_records"] == 400
    ours = figures["store.bytes_programmed_per_record"]
    assert ours <= 2 * figures["store.record_bytes"]
    # copy-on-write of the file's last block: kilobytes and about one erase per 24-byte append
    assert m["store.lfs_append_bytes_per_record"] > 20 * ours, (m, ours)
    assert m["store.lfs_erases_per_record"] > 0.5, m
    assert m["store.lfs_erases_per_record"] > 20 * figures["store.erases_per_record"]


def test_powercut_run_loses_nothing():
    m = store_bench.powercut_bench(days=1, meters=2, n_blocks=5, block_size=256, seeds=(1,))
    assert m["store.powercut_cases"] > 200, m
    assert m["store.powercut_failed_cases"] == 0, m
    assert m["store.powercut_lost"] == 0, m
    # the loss check looked at records: most cases have dozens acknowledged before the cut
    assert m["store.powercut_acked_checked"] > 10 * m["store.powercut_cases"], m


class _DamagingHarness(_LossCountingHarness):
    """Flips a bit in the first record slot of every sector before the post-cut remount: the
    records there are acknowledged and retained, so the counter must report them lost."""

    def open(self, flash):
        if self._opens == 1:
            buf = bytearray(RECORD_SIZE)
            for b in range(flash.n_blocks):
                flash.readblocks(b, buf, HEADER_SIZE)
                if buf != b"\xff" * RECORD_SIZE:
                    flash.corrupt(b, HEADER_SIZE + 12, 0x01)
        return _LossCountingHarness.open(self, flash)


def test_loss_counter_counts_damaged_records():
    import unittest

    from test_store_powercut import workload

    old = log.level
    log.level = log.ERROR + 1
    try:
        h = _DamagingHarness(unittest.TestCase(), workload(1), 5, 256, 2)
        cases = h.run_all(seeds=(1,), k_step=10)
    finally:
        log.level = old
    assert cases >= 20
    assert h.lost >= cases // 2, (h.lost, cases)
    assert h.failed > 0  # and the harness's own checks see it too
    print("\ndamaged: %d lost in %d cases; first: %s" % (h.lost, cases, h.first_failure))
    assert h.first_failure
