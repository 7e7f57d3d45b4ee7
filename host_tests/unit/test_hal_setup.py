# The HAL's setup-mode calls (firmware/hal/esp32.py and host.py): the WPA2 setup access point,
# the scan with the join policy's verdict and reason, and the trial join's result, with fake
# `machine` / `network` / `esp32` modules as in test_hal.py.
import unittest

import hal_fakes as port

from firmware.app.config import merge
from firmware.hal.wifipolicy import why_not


class _WLAN:
    IF_STA = 0
    IF_AP = 1
    PM_NONE = 0
    made = []

    def __init__(self, iface=0):
        self.iface = iface
        self.on = False
        self.cfg = {}
        self.scans = []
        self.state = port.STAT_IDLE
        self.connected = False
        self.connects = []
        self.disconnects = 0
        _WLAN.made.append(self)

    def active(self, on=None):
        if on is not None:
            self.on = on
        return self.on

    def config(self, *a, **kw):
        if a == ("mac",):
            return b"\x24\x0a\xc4\x51\xab\xcd"
        self.cfg.update(kw)

    def scan(self):
        return self.scans

    def connect(self, ssid, key, bssid=None):
        self.connects.append((ssid, key, bssid))
        self.state = port.STAT_CONNECTING

    def disconnect(self):
        self.disconnects += 1
        self.state = port.STAT_IDLE

    def isconnected(self):
        return self.connected

    def status(self):
        return self.state

    def ifconfig(self, cfg=None):
        return ("192.168.4.1" if self.iface else "192.168.1.20", "255.255.255.0", "", "")


for _name, _v in port.SEC:
    setattr(_WLAN, _name, _v)


class _RTC:
    def memory(self, data=None):
        return b""

    def datetime(self, t=None):
        return (2000, 1, 1, 5, 0, 0, 0, 0)


class Esp32SetupTest(unittest.TestCase):
    def setUp(self):
        _WLAN.made = []
        machine = port.Mod()
        machine.RTC = _RTC
        machine.WDT = lambda id=0, timeout=5000: None
        network = port.network(_WLAN)
        esp32 = port.Mod()
        esp32.Partition = None
        self.mod, self.saved = port.import_esp32_hal(machine, network, esp32)
        from firmware import log

        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        from firmware import log

        log.set_sink(None)
        port.restore(self.saved)

    def hal(self, **lan):
        return self.mod.Hal({"hal": "esp32", "network": {"kind": "wifi"}}, merge({"lan": lan}))

    def test_ap_is_wpa2_with_the_key_and_named_after_its_mac(self):
        hal = self.hal()
        ssid, ip = hal.ap_start("", "k3y-of-12chr")
        ap = [w for w in _WLAN.made if w.iface == 1][0]
        self.assertTrue(ap.on)
        self.assertEqual(ap.cfg["security"], _WLAN.SEC_WPA2)
        self.assertEqual(ap.cfg["key"], "k3y-of-12chr")
        self.assertEqual((ssid, ap.cfg["ssid"], ip), ("IoT-terminal-ABCD", "IoT-terminal-ABCD",
                                                      "192.168.4.1"))
        self.assertEqual(hal.ap_start("my-setup", "k3y-of-12chr")[0], "my-setup")
        hal.ap_stop()
        self.assertFalse(_WLAN.made[-1].on)
        self.assertNotIn("k3y-of-12chr", "\n".join(self.lines))

    def test_scan_gives_the_policy_verdict_and_reason_with_raw_names(self):
        hal = self.hal()
        hal._sta().scans = [
            (b"home", b"\x01" * 6, 1, -60, _WLAN.SEC_WPA2, False),
            (b"home", b"\x02" * 6, 1, -40, _WLAN.SEC_WPA, False),
            (port.SHIFT_JIS_SSID, b"\x03" * 6, 6, -50, _WLAN.SEC_WPA2_WPA3, False),
            (b"cafe", b"\x04" * 6, 11, -70, _WLAN.SEC_OPEN, False),
            (b"mix", b"\x05" * 6, 11, -70, _WLAN.SEC_WPA_WPA2, False),
            (b"corp", b"\x06" * 6, 11, -70, _WLAN.SEC_WPA2_ENT, False),
        ]
        got = hal.wifi_scan()
        self.assertEqual(got, [
            (b"home", b"\x01" * 6, -60, "SEC_WPA2", True, None),
            (b"home", b"\x02" * 6, -40, "SEC_WPA", False, "WPA (TKIP) is below WPA2"),
            (port.SHIFT_JIS_SSID, b"\x03" * 6, -50, "SEC_WPA2_WPA3", True, None),
            (b"cafe", b"\x04" * 6, -70, "SEC_OPEN", False, "open network (no encryption)"),
            (b"mix", b"\x05" * 6, -70, "SEC_WPA_WPA2", False, why_not("SEC_WPA_WPA2")),
            (b"corp", b"\x06" * 6, -70, "SEC_WPA2_ENT", False, why_not("SEC_WPA2_ENT")),
        ])
        mixed = self.hal(wifi_allow_wpa_wpa2_mixed=True)
        mixed._sta().scans = [(b"mix", b"\x05" * 6, 11, -70, _WLAN.SEC_WPA_WPA2, False)]
        self.assertEqual(mixed.wifi_scan()[0][4:], (True, None))

    def test_policy_names_agree_with_the_join_check(self):
        for name, value in port.SEC:
            for mixed in (False, True):
                self.assertEqual(self.mod.wifi_security_ok(value, mixed),
                                 why_not(name, mixed) is None, (name, mixed))

    def test_trial_join_joins_the_wpa2_bssid_and_reports_joined(self):
        hal = self.hal()
        nic = hal._sta()
        nic.scans = [(b"home", b"\x01" * 6, 1, -60, _WLAN.SEC_WPA2, False),
                     (b"home", b"\x02" * 6, 1, -40, _WLAN.SEC_WPA, False)]
        hal.station_join("home", "correct horse")
        self.assertEqual(nic.connects, [("home", "correct horse", b"\x01" * 6)])
        self.assertEqual(hal.station_result(), ("joining", ""))
        nic.connected = True
        nic.state = port.STAT_GOT_IP
        self.assertEqual(hal.station_result(), ("joined", "192.168.1.20"))
        self.assertEqual(hal.config["lan"]["wifi_ssid"], "home")

    def test_trial_join_failures_say_why(self):
        hal = self.hal()
        nic = hal._sta()
        nic.scans = [(b"home", b"\x02" * 6, 1, -40, _WLAN.SEC_WPA, False)]
        hal.station_join("home", "correct horse")
        self.assertEqual(nic.connects, [])  # only a WPA AP of that name: never asked
        self.assertEqual(hal.station_result(),
                         ("failed", "no WPA2/WPA3 access point with this name in range"))
        nic.scans = [(b"home", b"\x01" * 6, 1, -60, _WLAN.SEC_WPA2, False)]
        hal.station_join("home", "wrong key!")
        nic.state = port.STAT_WRONG_PASSWORD
        self.assertEqual(hal.station_result(),
                         ("failed", "the access point refused the key (wrong PSK)"))
        n = len(nic.connects)
        hal.station_stop()
        self.assertEqual(nic.disconnects, 1)  # the refused join stopped (the first never began)
        self.assertEqual(len(nic.connects), n)  # a refusal is not retried behind our back
        nic.state = port.STAT_THRESHOLD
        self.assertEqual(hal.station_result(),
                         ("failed", "the access point offers less than WPA2"))
        text = "\n".join(self.lines)
        self.assertNotIn("correct horse", text)
        self.assertNotIn("wrong key!", text)


class HostSetupTest(unittest.TestCase):
    def test_host_scan_from_the_board_file_with_the_same_policy(self):
        from firmware.hal import host

        board = {"hal": "host", "wifi_scan": [
            {"ssid": "home", "sec": "SEC_WPA3", "rssi": -45, "bssid": "020000000001"},
            {"ssid_hex": "836583588367", "sec": "SEC_WEP"}]}
        hal = host.Hal(board, merge({"lan": {"bind_ip": "127.0.0.9"}}))
        self.assertEqual(hal.wifi_scan(), [
            (b"home", b"\x02\x00\x00\x00\x00\x01", -45, "SEC_WPA3", True, None),
            (port.SHIFT_JIS_SSID, b"\x02\x00\x00\x00\x00\x00", -50, "SEC_WEP", False,
             "WEP (broken encryption) is below WPA2")])
        self.assertEqual(hal.ap_start("", "whatever-key"), ("IoT-terminal-host", "127.0.0.9"))
        hal.station_join("home", "correct horse")
        self.assertEqual(hal.station_result(), ("joined", "127.0.0.9"))
