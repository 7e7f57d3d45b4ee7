import unittest

from cosem_fakes import AARQ_PUBLIC, SLOT0, T0, FakeClock, ListView

from firmware.cosem import objects
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer


def H(s):
    return bytes.fromhex(s.replace(" ", ""))


class MultiMeterTableTest(unittest.TestCase):
    """1:N meters: meter k's registers and profile on OBIS channel B = k + 1."""

    def setUp(self):
        self.views = [
            ListView([(SLOT0, 1000 + k, 20 + k, 0)], unit_code=0x01) for k in range(4)
        ]
        table = default_table(self.views)
        self.srv = CosemServer(table, FakeClock(T0 + 3600), {})
        self.assertEqual(self.srv.handle_apdu(AARQ_PUBLIC, 16)[:1], b"\x61")

    def get_value(self, ln_hex):
        # GET-Request-Normal, class 3 register, attribute 2
        return self.srv.handle_apdu(H("c001c1 0003" + ln_hex + "0200"), 16)

    def test_each_meter_on_its_own_channel(self):
        for k in range(4):
            ln = "01%02x010800ff" % (k + 1)
            # the default table: Wh as long64-unsigned (raw 0.1 kWh x 100)
            self.assertEqual(self.get_value(ln), H("c401c100 15%016x" % ((1000 + k) * 100)))
            ln = "01%02x020800ff" % (k + 1)
            self.assertEqual(self.get_value(ln), H("c401c100 15%016x" % ((20 + k) * 100)))

    def test_channel_zero_absent_with_several_meters(self):
        r = self.get_value("0100010800ff")
        self.assertEqual(r[:4], H("c401c101"))  # DataAccessResult, not a value

    def test_profiles_per_channel_and_shared_clock(self):
        names = [objects.obis_text(o.ln) for o in self.srv.table.objects]
        for k in range(1, 5):
            self.assertIn("1.%d.99.1.0.255" % k, names)
            self.assertIn("0.%d.96.10.1.255" % k, names)
        self.assertEqual(names.count("0.0.1.0.0.255"), 1)

    def test_single_meter_keeps_channel_zero(self):
        names = [objects.obis_text(o.ln) for o in default_table(self.views[0]).objects]
        self.assertIn("1.0.1.8.0.255", names)
        self.assertIn("1.0.99.1.0.255", names)
