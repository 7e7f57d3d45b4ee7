"""The DLMS figures of make bench (tools/dlms_bench.py): the micropython profile read really runs,
reads every row it stored, and a broken helper fails loudly instead of dropping figures."""

import pytest

from tools import dlms_bench


def test_figures_of_a_small_read():
    m = dlms_bench.measure(rows=200, repeat=1)
    assert sorted(m) == ["dlms.profile_45d_alloc_bytes_per_block",
                         "dlms.profile_45d_blocks",
                         "dlms.profile_45d_garbage_bytes_per_block",
                         "dlms.profile_45d_peak_heap_kb",
                         "dlms.profile_45d_read_ms"]
    # 200 rows of 36 bytes (long64-unsigned values, the default) in 500-byte blocks of whole
    # rows (13 per block): 16 blocks
    assert m["dlms.profile_45d_blocks"] == 16, m
    assert m["dlms.profile_45d_read_ms"] > 0
    assert 0 < m["dlms.profile_45d_peak_heap_kb"] < 8, m


def test_the_helper_checks_what_it_read():
    # 0 rows: the profile is a single empty GET-Normal, not a block transfer; the helper must say
    # so instead of timing nothing
    with pytest.raises(RuntimeError):
        dlms_bench.mp_profile_read(rows=0, repeat=1)


def test_a_missing_helper_fails_loudly(monkeypatch):
    monkeypatch.setattr(dlms_bench, "_MP_HELPER", "tools/no_such_helper.py")
    with pytest.raises(RuntimeError):
        dlms_bench.mp_profile_read(rows=50, repeat=1)


def test_security_figures_under_micropython():
    m = dlms_bench.mp_security(runs=2)
    assert sorted(m) == ["dlms.gcm_1kb_ms", "dlms.gcm_key_heap_bytes", "dlms.gcm_key_setup_ms",
                         "dlms.gcm_open_1kb_ms", "dlms.hls_association_ms"]
    assert m["dlms.gcm_1kb_ms"] > 0 and m["dlms.hls_association_ms"] > 0
