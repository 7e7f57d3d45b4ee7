"""tools/meter_model.py: the deterministic ground truth shared by the emulator and the head-end."""

import random

import pytest

from firmware import timeutil
from tools.meter_emulator import MeterEmulator, parse_request
from tools.meter_model import ORIGIN_SLOT, MeterModel


def test_origin_and_determinism():
    m = MeterModel()
    assert m.at_slot(ORIGIN_SLOT) == (123456, 7890)
    assert MeterModel(seed=1).at_slot(ORIGIN_SLOT + 777) == m.at_slot(ORIGIN_SLOT + 777)
    assert MeterModel(seed=2).at_slot(ORIGIN_SLOT + 777) != m.at_slot(ORIGIN_SLOT + 777)
    assert m.unit_code == 0x01


@pytest.mark.parametrize("seed", [1, 2, 99])
def test_increments_realistic_and_consistent(seed):
    m = MeterModel(seed=seed)
    start = timeutil.slot_of_t2k(timeutil.t2k_from_fields(2025, 3, 31, 15, 0, 0))
    prev = m.at_slot(start - 1)
    for slot in range(start, start + 48 * 30):
        cur = m.at_slot(slot)
        inc = m.increment(slot - 1)
        assert 0 <= inc[0] <= 20 and 0 <= inc[1] <= 5
        assert cur == (prev[0] + inc[0], prev[1] + inc[1])
        prev = cur


def test_reverse_only_around_noon_jst():
    m = MeterModel()
    day0 = timeutil.slot_of_t2k(timeutil.t2k_from_fields(2025, 5, 1, 15, 0, 0))  # 00:00 JST
    night = [m.increment(day0 + k)[1] for k in list(range(0, 14)) + list(range(34, 48))]
    assert night == [0] * len(night)
    assert sum(m.increment(day0 + k)[1] for k in range(16, 32)) > 0


def test_far_slots_computed_directly_and_monotonic():
    m = MeterModel(seed=5)
    rng = random.Random(1)
    slots = sorted(rng.randrange(ORIGIN_SLOT, ORIGIN_SLOT + 48 * 3650) for _ in range(200))
    vals = [m.at_slot(s) for s in slots]
    for a, b in zip(vals, vals[1:]):
        assert a[0] <= b[0] and a[1] <= b[1]
    assert vals[-1][0] < 10**9


def test_wrap_at_modulus():
    m = MeterModel(start_fwd=10**9 - 5, modulus=10**9)
    vals = [m.at_slot(ORIGIN_SLOT + k)[0] for k in range(10)]
    assert vals[0] == 10**9 - 5
    assert any(v < 100 for v in vals[1:])
    assert all(0 <= v < 10**9 for v in vals)


def test_at_t2k_requires_boundary():
    m = MeterModel()
    with pytest.raises(ValueError):
        m.at_t2k(timeutil.t2k_of_slot(ORIGIN_SLOT) + 1)
    assert m.at_t2k(timeutil.t2k_of_slot(ORIGIN_SLOT)) == (123456, 7890)


def test_emulator_request_parser_and_handler_survive_garbage():
    emu = MeterEmulator(addr=("127.0.0.42", 0))
    rng = random.Random(3)
    for _ in range(5000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        if rng.random() < 0.5:
            data = b"\x10\x81" + data
        assert parse_request(data) is None or len(data) >= 12
        emu.handle(data, ("127.0.0.1", 3610))  # not started: replies are not sent
    assert emu.stats["datagrams"] == 5000


def test_emulator_refuses_non_loopback():
    with pytest.raises(ValueError):
        MeterEmulator(addr=("0.0.0.0", 3610))
