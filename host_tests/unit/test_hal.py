# HAL tests: the ESP32 differences the unix port hides (recvfrom address form, epoch 2000 RTC,
# WPA2+ policy) exercised with fake `machine` / `network` / `esp32` modules.
import sys
import unittest

from firmware import timeutil
from firmware.hal.udp import norm_addr


class NormAddrTest(unittest.TestCase):
    def test_esp32_tuple_form(self):
        self.assertEqual(norm_addr(("192.168.1.20", 3610)), ("192.168.1.20", 3610))

    def test_unix_port_raw_sockaddr(self):
        raw = bytes((2, 0, 0x0E, 0x1A, 127, 0, 0, 2)) + bytes(8)  # AF_INET, port 3610, 127.0.0.2
        self.assertEqual(norm_addr(raw), ("127.0.0.2", 3610))


class _FakeRTC:
    def __init__(self, mem=b"", now=None):
        self._mem = mem
        self.set_to = None

    def memory(self, data=None):
        if data is None:
            return self._mem
        self._mem = bytes(data)

    def datetime(self, t):
        self.set_to = t


class _FakeWLAN:
    IF_STA = 0
    PM_NONE = 0
    # ESP-IDF wifi_auth_mode_t values
    SEC_OPEN, SEC_WEP, SEC_WPA, SEC_WPA2, SEC_WPA_WPA2 = 0, 1, 2, 3, 4
    SEC_WPA3, SEC_WPA2_WPA3 = 6, 7

    def __init__(self, iface):
        self.scans = []
        self.connected_to = None

    def active(self, on):
        pass

    def config(self, **kw):
        pass

    def isconnected(self):
        return False

    def status(self):
        return 0  # idle: not connecting

    def scan(self):
        return self.scans

    def connect(self, ssid, key, bssid=None):
        self.connected_to = (ssid, bssid)


class _Mod:
    pass


class Esp32HalTest(unittest.TestCase):
    def setUp(self):
        self.saved = {}
        self.rtc = _FakeRTC()
        machine = _Mod()
        machine.RTC = lambda: self.rtc
        machine.WDT = lambda timeout: None
        network = _Mod()
        network.WLAN = _FakeWLAN
        esp32 = _Mod()
        for name, mod in (("machine", machine), ("network", network), ("esp32", esp32)):
            self.saved[name] = sys.modules.get(name)
            sys.modules[name] = mod
        sys.modules.pop("firmware.hal.esp32", None)
        from firmware.app.config import merge
        from firmware.hal import esp32 as hal_esp32

        self.hal_mod = hal_esp32
        self.cfg = merge({"lan": {"wifi_ssid": "site", "wifi_psk": "correct horse"}})
        self.lines = []
        from firmware import log

        log.set_sink(self.lines.append)

    def tearDown(self):
        from firmware import log

        log.set_sink(None)
        for name, mod in self.saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
        sys.modules.pop("firmware.hal.esp32", None)

    def test_rtc_keeps_smart_meter_time_as_epoch_2000(self):
        hal = self.hal_mod.Hal({"hal": "esp32"}, self.cfg)
        self.assertFalse(hal.clock.is_set())  # cold boot: no trusted time
        t = timeutil.t2k_from_fields(2025, 4, 1, 3, 30, 15)  # a Tuesday
        hal.clock.set_t2k(t)
        self.assertEqual(self.rtc.set_to, (2025, 4, 1, 1, 3, 30, 15, 0))  # weekday 0 = Monday
        self.assertEqual(self.rtc.memory()[:4], b"T2K1")

    def test_wifi_refuses_open_wep_wpa_and_joins_wpa2(self):
        hal = self.hal_mod.Hal({"hal": "esp32", "network": {"kind": "wifi"}}, self.cfg)
        W = _FakeWLAN
        hal._nic = W(0)
        hal._nic.scans = [
            (b"site", b"\x01" * 6, 1, -40, W.SEC_OPEN, False),
            (b"site", b"\x02" * 6, 1, -41, W.SEC_WEP, False),
            (b"site", b"\x03" * 6, 1, -42, W.SEC_WPA, False),
            (b"site", b"\x04" * 6, 1, -60, W.SEC_WPA2, False),
            (b"other", b"\x05" * 6, 1, -30, W.SEC_WPA3, False),
        ]
        self.assertFalse(hal.lan_up())  # connecting
        self.assertEqual(hal._nic.connected_to, ("site", b"\x04" * 6))  # BSSID pinned
        refused = [line for line in self.lines if "refused" in line]
        self.assertEqual(len(refused), 3)
        self.assertNotIn("correct horse", "\n".join(self.lines))

    def test_wifi_with_only_weak_access_points_does_not_join(self):
        hal = self.hal_mod.Hal({"hal": "esp32", "network": {"kind": "wifi"}}, self.cfg)
        W = _FakeWLAN
        hal._nic = W(0)
        hal._nic.scans = [(b"site", b"\x03" * 6, 1, -42, W.SEC_WPA_WPA2, False)]
        self.assertFalse(hal.lan_up())
        self.assertIsNone(hal._nic.connected_to)
        self.assertIn("no WPA2/WPA3 access point", "\n".join(self.lines))
