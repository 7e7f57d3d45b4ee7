"""The ECHONET figures of make bench (tools/echonet_bench.py): names that say what is timed, and
the micropython fixed-time read really runs and checks what it decoded."""

import pytest

from tools import echonet_bench


def test_figures_and_their_names():
    m = echonet_bench.measure(rounds=5, repeat=1)
    assert sorted(m) == ["echonet.cpython_frame_split_us_per_frame",
                         "echonet.mp_fixed_time_read_alloc_bytes_per_slot",
                         "echonet.mp_fixed_time_read_us_per_slot",
                         "echonet.pychonet_frame_split_us_per_frame"]
    assert all(v > 0 for v in m.values()), m


def test_the_micropython_read_fails_loudly(monkeypatch):
    monkeypatch.setattr(echonet_bench, "_MP_HELPER", "tools/no_such_helper.py")
    with pytest.raises(RuntimeError):
        echonet_bench.mp_fixed_time_read(rounds=5, repeat=1)
