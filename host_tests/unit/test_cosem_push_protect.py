"""Protected push: with the management client's keys the pushed DataNotification goes out in
general-glo-ciphering (DB, our system title, our never-repeating invocation counter shared with
the server's replies), authenticated encryption, the plain APDU recovered exactly by the keys'
holder. Without management keys there is no protector (pushes stay plain). The independent
decode (dlms-cosem and gurux-dlms) is in host_tests/integration/test_cosem_secure_interop.py."""

import unittest

from cosem_fakes import make_server
from cosem_secure import SERVER_TITLE, SecClient, make_secure_server

from firmware import timeutil
from firmware.cosem import protection
from firmware.cosem import push as p
from firmware.cosem import security as sec
from firmware.cosem.objects import EnergyFormat
from firmware.hal import aes

H = bytes.fromhex
EK = H("000102030405060708090A0B0C0D0E0F")
AK = H("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
T1230 = timeutil.t2k_from_fields(2024, 4, 1, 3, 30, 0)  # 2024-04-01 12:30 JST
SLOT1230 = timeutil.slot_of_t2k(T1230)
RAW = EnergyFormat(2, "u32")  # raw 0.1 kWh counters, as the golden vectors of test_cosem_push
U = 0x01


class Env:
    time_zone = -540
    offset_min = 540


ROW = (SLOT1230, 1329, 34, 0, U)


def _plain(fmt=RAW):
    e = p.DataNotificationEncoder(Env(), 1, fmt=fmt)
    return bytes(e.encode(ROW, 1, 7, T1230))[8:]


class ProtectedPushTest(unittest.TestCase):
    def test_general_glo_with_the_management_keys_and_our_counter(self):
        srv, _clock, _view, _events = make_secure_server()
        protect = protection.push_protector(srv)
        self.assertIsNotNone(protect)
        e = p.DataNotificationEncoder(Env(), 1, protect, fmt=RAW)
        ic0 = srv.counter.peek()
        wpdu = bytes(e.encode(ROW, 1, 7, T1230))
        self.assertEqual(wpdu[:6], H("000100010001"))  # wPort 1 -> client SAP 1
        self.assertEqual(int.from_bytes(wpdu[6:8], "big"), len(wpdu) - 8)
        apdu = wpdu[8:]
        self.assertEqual(apdu[:10], b"\xdb\x08" + SERVER_TITLE)
        f = sec.parse(memoryview(apdu))
        self.assertEqual((f.sc, f.ic), (sec.SC_AUTH_ENC, ic0))
        plain = _plain()
        self.assertNotIn(plain[18:], apdu)  # the row is encrypted, not just authenticated
        got, _f = sec.unseal(sec.Keys(aes.ecb, EK, AK), SERVER_TITLE, apdu)
        self.assertEqual(got, plain)
        # the next push takes the next value of the same counter
        apdu2 = bytes(e.encode(ROW, 1, 8, T1230))[8:]
        self.assertEqual(sec.parse(memoryview(apdu2)).ic, ic0 + 1)

    def test_push_and_replies_share_one_never_repeating_counter(self):
        srv, _clock, _view, _events = make_secure_server()
        c = SecClient(srv)
        c.associate()
        after_assoc = c.server_ic
        e = p.DataNotificationEncoder(Env(), 1, protection.push_protector(srv), fmt=RAW)
        pushed = sec.parse(memoryview(bytes(e.encode(ROW, 1, 1, T1230))[8:])).ic
        self.assertGreater(pushed, after_assoc)
        # a GET reply after the push is protected with a later value, never the pushed one
        c.request(H("C001C100080000010000FF0200"))
        self.assertGreater(c.server_ic, pushed)

    def test_wrong_key_does_not_open_a_pushed_apdu(self):
        srv, _clock, _view, _events = make_secure_server()
        e = p.DataNotificationEncoder(Env(), 1, protection.push_protector(srv), fmt=RAW)
        apdu = bytes(e.encode(ROW, 1, 1, T1230))[8:]
        wrong = sec.Keys(aes.ecb, EK, H("D0D1D2D3D4D5D6D7D8D9DADBDCDDDE00"))
        with self.assertRaises(sec.DecipherError):
            sec.unseal(wrong, SERVER_TITLE, apdu)

    def test_default_energy_format_row_protected(self):
        srv, _clock, _view, _events = make_secure_server()
        e = p.DataNotificationEncoder(Env(), 1, protection.push_protector(srv),
                                      fmt=EnergyFormat())
        apdu = bytes(e.encode(ROW, 1, 7, T1230))[8:]
        got, _f = sec.unseal(sec.Keys(aes.ecb, EK, AK), SERVER_TITLE, apdu)
        self.assertEqual(got, _plain(EnergyFormat()))

    def test_no_protector_without_management_keys(self):
        srv, _clock, _view = make_server()  # LLS management client: no keys
        self.assertIsNone(protection.push_protector(srv))
        # a reader with keys does not protect pushes: they are the management client's
        srv, _clock, _view, _events = make_secure_server(
            {"mgmt_ek": "", "mgmt_ak": "", "mgmt_mechanism": "lls", "mgmt_password": "pw",
             "reader_mechanism": "gmac", "reader_ek": EK.hex(), "reader_ak": AK.hex()})
        self.assertTrue(srv.ciphered)
        self.assertIsNone(protection.push_protector(srv))


if __name__ == "__main__":
    unittest.main()
