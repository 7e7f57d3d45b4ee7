import binascii
import struct
import unittest

from firmware import timeutil
from firmware.meter import drmeter
from firmware.meter.drmeter import MeterDataError


def h(text):
    return binascii.unhexlify(text.replace(" ", ""))


class UnitTest(unittest.TestCase):
    def test_every_unit_code(self):
        table = {0x00: 0, 0x01: -1, 0x02: -2, 0x03: -3, 0x04: -4, 0x0A: 1, 0x0B: 2, 0x0C: 3,
                 0x0D: 4}
        for code, exp in table.items():
            with self.subTest(code=code):
                self.assertEqual(drmeter.unit_exponent(code), exp)
                self.assertEqual(drmeter.decode_unit(bytes((code,))), code)

    def test_unknown_codes_rejected(self):
        for code in (0x05, 0x06, 0x09, 0x0E, 0x10, 0x7F, 0xFF):
            with self.subTest(code=code):
                with self.assertRaises(MeterDataError):
                    drmeter.decode_unit(bytes((code,)))
        with self.assertRaises(MeterDataError):
            drmeter.decode_unit(b"")
        with self.assertRaises(MeterDataError):
            drmeter.decode_unit(b"\x01\x01")


class ValueTest(unittest.TestCase):
    def test_range(self):
        self.assertEqual(drmeter.check_raw(0), 0)
        self.assertEqual(drmeter.check_raw(999999999), 999999999)
        self.assertIsNone(drmeter.check_raw(0xFFFFFFFE))
        for bad in (1000000000, 0xFFFFFFFF, 0xFFFFFFFD, 0x80000000):
            with self.subTest(bad=bad):
                with self.assertRaises(MeterDataError):
                    drmeter.check_raw(bad)


class FixedTimeTest(unittest.TestCase):
    def test_worked_example(self):
        # 2024-10-15 10:30:00 JST = 01:30:00Z
        t, v = drmeter.decode_fixed_time(h("07 E8 0A 0F 0A 1E 00 00 01 86 A0"))
        self.assertEqual(t, timeutil.t2k_from_fields(2024, 10, 15, 1, 30, 0))
        self.assertEqual(v, 100000)
        t, v = drmeter.decode_fixed_time(h("07 E8 0A 0F 0A 1E 00 FF FF FF FE"), 540, True)
        self.assertEqual(t, timeutil.t2k_from_fields(2024, 10, 15, 1, 30, 0))
        self.assertIsNone(v)

    def test_timezone_offsets(self):
        edt = h("07 E8 01 01 00 00 00 00 00 00 05")  # 2024-01-01 00:00 local
        self.assertEqual(drmeter.decode_fixed_time(edt, 540)[0],
                         timeutil.t2k_from_fields(2023, 12, 31, 15, 0, 0))
        self.assertEqual(drmeter.decode_fixed_time(edt, 0)[0],
                         timeutil.t2k_from_fields(2024, 1, 1, 0, 0, 0))
        self.assertEqual(drmeter.decode_fixed_time(edt, -300)[0],
                         timeutil.t2k_from_fields(2024, 1, 1, 5, 0, 0))

    def test_boundary_check(self):
        self.assertIsNotNone(drmeter.decode_fixed_time(h("07 E8 0A 0F 0A 00 00 00 00 00 01"),
                                                       540, True))
        for stamp in ("0A 1E 01", "0A 1F 00", "0A 0F 00"):
            edt = h("07 E8 0A 0F " + stamp + " 00 00 00 01")
            with self.subTest(stamp=stamp):
                drmeter.decode_fixed_time(edt, 540, False)  # fine without the check
                with self.assertRaises(MeterDataError) as cm:
                    drmeter.decode_fixed_time(edt, 540, True)
                self.assertIn("boundary", str(cm.exception))

    def test_unset_stamp(self):
        self.assertEqual(drmeter.decode_fixed_time(h("FF FF FF FF FF FF FF FF FF FF FE")),
                         (None, None))
        with self.assertRaises(MeterDataError):
            drmeter.decode_fixed_time(h("FF FF FF FF FF FF FF 00 00 00 01"))

    def test_malformed(self):
        for bad in ("07 E8 0D 01 00 00 00 00 00 00 01",  # month 13
                    "07 E8 02 1E 00 00 00 00 00 00 01",  # Feb 30
                    "07 E7 02 1D 00 00 00 00 00 00 01",  # Feb 29 2023
                    "07 E8 01 00 00 00 00 00 00 00 01",  # day 0
                    "07 E8 01 01 18 00 00 00 00 00 01",  # hour 24
                    "07 CF 01 01 00 00 00 00 00 00 01",  # 1999
                    "07 E8 01 01 00 00 00 3B 9A CA 00",  # 10 digits
                    "07 E8 01 01 00 00 00 00 00 01"):  # 10 bytes
            with self.subTest(bad=bad):
                with self.assertRaises(MeterDataError):
                    drmeter.decode_fixed_time(h(bad))
        self.assertEqual(drmeter.decode_fixed_time(h("07 E8 02 1D 00 00 00 00 00 00 01"), 0)[0],
                         timeutil.t2k_from_fields(2024, 2, 29))


class HistoryTest(unittest.TestCase):
    def test_decode(self):
        vals = [1000 + i for i in range(48)]
        vals[47] = 0xFFFFFFFE
        vals[0] = 999999999
        edt = struct.pack(">H48I", 1, *vals)
        self.assertEqual(len(edt), 194)
        day, out = drmeter.decode_history(edt)
        self.assertEqual(day, 1)
        self.assertEqual(out[0], 999999999)
        self.assertEqual(out[1:47], vals[1:47])
        self.assertIsNone(out[47])

    def test_all_no_data(self):
        day, out = drmeter.decode_history(b"\x00\x63" + b"\xff\xff\xff\xfe" * 48)
        self.assertEqual(day, 99)
        self.assertEqual(out, [None] * 48)

    def test_malformed(self):
        good = struct.pack(">H48I", 0, *range(48))
        with self.assertRaises(MeterDataError):
            drmeter.decode_history(good[:-1])
        with self.assertRaises(MeterDataError):
            drmeter.decode_history(good + b"\x00")
        with self.assertRaises(MeterDataError):
            drmeter.decode_history(good[:10] + b"\xff\xff\xff\xff" + good[14:])

    def test_slot_times(self):
        # slot 0 of local 2024-04-01 is 2024-03-31T15:00Z in JST; slot 47 is 23:30 local
        self.assertEqual(drmeter.history_slot_t2k((2024, 4, 1), 0),
                         timeutil.t2k_from_fields(2024, 3, 31, 15, 0, 0))
        self.assertEqual(drmeter.history_slot_t2k((2024, 4, 1), 47),
                         timeutil.t2k_from_fields(2024, 4, 1, 14, 30, 0))

    def test_day_and_retention(self):
        self.assertEqual(drmeter.encode_day(0), b"\x00\x00")
        self.assertEqual(drmeter.encode_day(1), b"\x00\x01")
        self.assertEqual(drmeter.encode_day(99), b"\x00\x63")
        for bad in (-1, 100, 0xFFFF):
            with self.assertRaises(MeterDataError):
                drmeter.encode_day(bad)
        self.assertEqual(drmeter.decode_retention(b"\x00\x2d"), 45)
        self.assertEqual(drmeter.decode_retention(b"\x00\x00"), 0)
        self.assertIsNone(drmeter.decode_retention(b"\xff\xff"))
        with self.assertRaises(MeterDataError):
            drmeter.decode_retention(b"\x00\x64")
        with self.assertRaises(MeterDataError):
            drmeter.decode_retention(b"\x2d")


class ClockTest(unittest.TestCase):
    def test_meter_clock(self):
        t = drmeter.meter_clock_t2k(h("07 E9 04 01"), h("00 05 09"), 540)
        self.assertEqual(t, timeutil.t2k_from_fields(2025, 3, 31, 15, 5, 9))
        self.assertEqual(drmeter.decode_time(h("17 3B 3B")), (23, 59, 59))
        self.assertEqual(drmeter.decode_date(h("07 E9 04 01")), (2025, 4, 1))
        for bad in ("18 00 00", "00 3C 00", "00 00 3C", "00 00"):
            with self.assertRaises(MeterDataError):
                drmeter.decode_time(h(bad))
        for bad in ("07 E9 04 1F", "07 E9 00 01", "07 E9 04"):
            with self.assertRaises(MeterDataError):
                drmeter.decode_date(h(bad))


class DeltaTest(unittest.TestCase):
    def test_ok(self):
        self.assertEqual(drmeter.delta(100, 100), ("ok", 0))
        self.assertEqual(drmeter.delta(100, 117), ("ok", 17))
        self.assertEqual(drmeter.delta(0, 999999999), ("ok", 999999999))

    def test_wrap(self):
        self.assertEqual(drmeter.delta(999999990, 5), ("wrap", 15))
        self.assertEqual(drmeter.delta(999999999, 0), ("wrap", 1))
        self.assertEqual(drmeter.delta(99999990, 3, modulus=10**8), ("wrap", 13))

    def test_reset(self):
        self.assertEqual(drmeter.delta(500000, 10), ("reset", None))
        self.assertEqual(drmeter.delta(123456, 123455), ("reset", None))
        # just outside the default window (1% of the modulus)
        self.assertEqual(drmeter.delta(990000000, 0), ("reset", None))
        self.assertEqual(drmeter.delta(990000001, 0), ("wrap", 9999999))
        self.assertEqual(drmeter.delta(990000000, 0, wrap_window=10**8), ("wrap", 10000000))

    def test_out_of_range(self):
        for prev, new in ((-1, 0), (0, 10**9), (10**9, 0), (0, 0xFFFFFFFE)):
            with self.assertRaises(MeterDataError):
                drmeter.delta(prev, new)
