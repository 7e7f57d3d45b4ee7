# Per-class profiles and exact decimal scaling (both runtimes). Golden values from
# /work/shared/reference/echonet-lite.md §2.2-2.4 and §2.7.
import unittest

from firmware.meter import drmeter, profiles
from firmware.meter.drmeter import MeterDataError
from firmware.meter.profiles import CoefficientError


class ProfileTest(unittest.TestCase):
    def test_dr_meter(self):
        p = profiles.PROFILES[0x028E]
        self.assertEqual((p.unit, p.coefficient, p.digits, p.fixed_digits), (0xD4, None, None, 9))
        self.assertEqual((p.fixed_fwd, p.fixed_rev), (0xE6, 0xE7))
        self.assertEqual((p.hist_fwd, p.hist_rev, p.day, p.day_width), (0xE1, 0xE3, 0xD5, 2))
        self.assertEqual((p.retention, p.time, p.sync), (0xD3, 0xDA, 0xDB))
        self.assertEqual(p.scaling_epcs(), (0xD4,))

    def test_low_voltage_smart_meter(self):
        p = profiles.PROFILES[0x0288]
        self.assertEqual((p.unit, p.coefficient, p.digits), (0xE1, 0xD3, 0xD7))
        self.assertEqual((p.fixed_fwd, p.fixed_rev), (0xEA, 0xEB))
        self.assertEqual((p.hist_fwd, p.hist_rev, p.day, p.day_width), (0xE2, 0xE4, 0xE5, 1))
        self.assertIsNone(p.retention)

    def test_sub_meter(self):
        p = profiles.PROFILES[0x028D]
        self.assertEqual((p.unit, p.coefficient, p.digits), (0xD4, 0xD3, 0xD7))
        self.assertEqual((p.fixed_fwd, p.fixed_rev), (0xEA, 0xEB))
        self.assertEqual((p.hist_fwd, p.hist_rev, p.day, p.day_width), (0xE2, 0xE4, 0xE0, 1))


def kwh_decimal(raw, unit_code, coefficient=1):
    """Exact energy as (mantissa, exp10): the oracle the store unit is checked against."""
    return raw * coefficient, drmeter.unit_exponent(unit_code)


class ScalingTest(unittest.TestCase):
    def test_power_of_ten(self):
        for n, k in ((1, 0), (10, 1), (100000, 5), (20, None), (3, None), (101, None)):
            with self.subTest(n=n):
                self.assertEqual(profiles.power_of_ten(n), k)

    def test_store_unit_folds_power_of_ten_coefficients(self):
        cases = ((0x01, 1, 0x01), (0x02, 10, 0x01), (0x04, 10000, 0x00), (0x01, 100, 0x0A),
                 (0x00, 1000, 0x0C), (0x0A, 1000, 0x0D), (0x0D, 1, 0x0D))
        for unit, coef, want in cases:
            with self.subTest(unit=unit, coef=coef):
                self.assertEqual(profiles.store_unit(unit, coef), want)
                m1, e1 = kwh_decimal(98765, unit, coef)
                m2, e2 = kwh_decimal(98765, want)
                self.assertEqual(m1 * 10 ** (e1 - min(e1, e2)), m2 * 10 ** (e2 - min(e1, e2)))

    def test_unrepresentable_coefficients(self):
        for unit, coef in ((0x01, 3), (0x01, 40), (0x00, 999999), (0x0D, 10), (0x0C, 100)):
            with self.subTest(unit=unit, coef=coef):
                with self.assertRaises(CoefficientError):
                    profiles.store_unit(unit, coef)
        with self.assertRaises(MeterDataError):
            profiles.store_unit(0x05, 1)

    def test_coefficient_and_digits_decoding(self):
        self.assertEqual(profiles.decode_coefficient(b"\x00\x0f\x42\x3f"), 999999)
        self.assertEqual(profiles.decode_coefficient(b"\x00\x00\x00\x01"), 1)
        for bad in (b"\x00\x00\x00\x00", b"\x00\x0f\x42\x40", b"\x01", b""):
            with self.assertRaises(MeterDataError):
                profiles.decode_coefficient(bad)
        self.assertEqual(profiles.decode_digits(b"\x08"), 8)
        for bad in (b"\x00", b"\x09", b"", b"\x06\x00"):
            with self.assertRaises(MeterDataError):
                profiles.decode_digits(bad)


class DigitsTest(unittest.TestCase):
    def test_raw_bounded_by_digits(self):
        self.assertEqual(drmeter.check_raw(999999, "x", 999999), 999999)
        self.assertIsNone(drmeter.check_raw(0xFFFFFFFE, "x", 999999))
        with self.assertRaises(MeterDataError):
            drmeter.check_raw(1000000, "x", 999999)

    def test_wrap_at_ten_to_the_digits(self):
        self.assertEqual(drmeter.delta(999990, 5, 10 ** 6), ("wrap", 15))
        self.assertEqual(drmeter.delta(999999990, 5), ("wrap", 15))
        self.assertEqual(drmeter.delta(500000, 5, 10 ** 6), ("reset", None))

    def test_one_byte_day_selector(self):
        self.assertEqual(drmeter.encode_day(7, 1), b"\x07")
        self.assertEqual(drmeter.encode_day(7), b"\x00\x07")
        with self.assertRaises(MeterDataError):
            drmeter.encode_day(100, 1)
