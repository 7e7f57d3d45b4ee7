import unittest

from firmware import timeutil as tu


class TimeUtilTest(unittest.TestCase):
    def test_epoch_and_slot_base(self):
        self.assertEqual(tu.days_from_civil(2000, 1, 1), 0)
        self.assertEqual(tu.UNIX_T2K % tu.SLOT_S, 0)
        self.assertEqual(tu.UNIX_T2K // tu.SLOT_S, tu.SLOT_T2K_BASE)

    def test_known_dates(self):
        # 2024-04-01T03:30:00Z == Unix 1711942200 (checked against an independent calendar)
        t = tu.t2k_from_fields(2024, 4, 1, 3, 30, 0)
        self.assertEqual(tu.unix_of_t2k(t), 1711942200)
        self.assertEqual(tu.slot_of_t2k(t), 1711942200 // 1800)
        self.assertEqual(tu.fields_from_t2k(t), (2024, 4, 1, 3, 30, 0, 1))  # a Monday
        self.assertEqual(tu.iso(t, 540), "2024-04-01T12:30:00+09:00")

    def test_roundtrip_many_days(self):
        for n in range(-800, 20000, 7):
            y, m, d = tu.civil_from_days(n)
            self.assertEqual(tu.days_from_civil(y, m, d), n)

    def test_leap_days(self):
        self.assertEqual(tu.civil_from_days(tu.days_from_civil(2024, 2, 29)), (2024, 2, 29))
        self.assertEqual(tu.days_from_civil(2100, 3, 1) - tu.days_from_civil(2100, 2, 28), 1)
        self.assertEqual(tu.days_from_civil(2000, 3, 1) - tu.days_from_civil(2000, 2, 28), 2)

    def test_slot_roundtrip_small_ints(self):
        t = tu.t2k_from_fields(2033, 12, 31, 23, 59, 59)
        self.assertLess(t, 1 << 30)  # stays a small int on the ESP32 until 2034
        s = tu.slot_of_t2k(t)
        self.assertEqual(tu.t2k_of_slot(s), t - t % 1800)
