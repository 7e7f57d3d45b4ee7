# push.protect wired in the terminal: with the management client's keys the push encoder gets the
# server's protector (general-glo-ciphering, the server's counter), "none" or an LLS management
# client leave pushes plain, a bad value is logged and "auto" used; the keys never reach the log.
# A whole Terminal does not fit the MicroPython unit lane's heap: CPython only, fake HAL (as
# test_app_events.py).
import gc
import os
import unittest

from test_app_events import FakeHal

from firmware import log, timeutil
from firmware.app import config as cfgmod
from firmware.app.meters import meter_configs
from firmware.app.terminal import Terminal
from firmware.cosem import security as sec
from firmware.hal import aes
from firmware.hal.norflash import NorFlash

EK = "000102030405060708090A0B0C0D0E0F"
AK = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
DIR = "/tmp/test_app_push_protect"
T1230 = timeutil.t2k_from_fields(2024, 4, 1, 3, 30, 0)
ROW = (timeutil.slot_of_t2k(T1230), 1329, 34, 0, 0x01)
KEYS = {"mgmt_ek": EK, "mgmt_ak": AK}


def _clean():
    try:
        names = os.listdir(DIR)
    except OSError:
        os.mkdir(DIR)
        return
    for n in names:
        os.remove(DIR + "/" + n)


class TerminalPushProtectTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        _clean()

    def tearDown(self):
        log.set_sink(None)
        _clean()

    def build(self, dlms, protect=None):
        push = {"enabled": True}
        if protect is not None:
            push["protect"] = protect
        cfg = cfgmod.merge({"store": {"state_path": DIR + "/state.json"}, "dlms": dlms,
                            "meter": {"ip": "127.0.0.1"}, "push": push})
        gc.collect()
        t = Terminal(FakeHal(NorFlash(4, block_size=256)), cfg)
        t.meter_cfgs = meter_configs(cfg["meter"])
        t._build_radio()
        return t

    def encode(self, t):
        return bytes(t.pusher.encoder.encode(ROW, 1, 1, T1230))

    def test_auto_protects_with_the_management_keys(self):
        t = self.build(KEYS)
        self.assertIsNotNone(t.push_protect)
        self.assertIs(t.pusher.encoder.protect, t.push_protect)
        ic = t.server.counter.peek()
        apdu = self.encode(t)[8:]
        self.assertEqual(apdu[:10], b"\xdb\x08" + t.server.system_title)
        plain, f = sec.unseal(sec.Keys(aes.ecb, bytes.fromhex(EK), bytes.fromhex(AK)),
                              t.server.system_title, apdu)
        self.assertEqual((f.sc, f.ic), (0x30, ic))
        self.assertEqual(plain[0], 0x0F)
        text = "\n".join(self.lines)
        self.assertIn("pushes protected", text)
        for k in (EK, AK):
            self.assertNotIn(k.upper(), text)
            self.assertNotIn(k.lower(), text)

    def test_none_sends_plain(self):
        t = self.build(KEYS, "none")
        self.assertIsNone(t.push_protect)
        self.assertEqual(self.encode(t)[8], 0x0F)

    def test_bad_value_logged_and_auto_used(self):
        t = self.build(KEYS, "always")
        self.assertIsNotNone(t.push_protect)
        self.assertEqual(self.encode(t)[8], 0xDB)
        self.assertTrue([ln for ln in self.lines if "ERROR" in ln and "push.protect" in ln],
                        self.lines)

    def test_no_management_keys_plain(self):
        t = self.build({"mgmt_mechanism": "lls", "mgmt_password": "12345678"})
        self.assertIsNone(t.push_protect)
        self.assertEqual(self.encode(t)[8], 0x0F)


if __name__ == "__main__":
    unittest.main()
