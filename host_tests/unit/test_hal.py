# HAL tests: the ESP32 differences the unix port hides (recvfrom address form, epoch 2000 RTC,
# WPA2+ policy, raw-byte SSIDs, the flash partition, the watchdog armed by boot.py) exercised with
# fake `machine` / `network` / `esp32` modules.
import json
import unittest

import hal_fakes as port

from firmware import timeutil
from firmware.hal.udp import norm_addr


def _root():
    f = __file__
    for _ in range(3):  # host_tests/unit/test_hal.py -> repository root
        i = f.rfind("/")
        f = f[:i] if i >= 0 else "."
    return f or "."


class NormAddrTest(unittest.TestCase):
    def test_esp32_tuple_form(self):
        self.assertEqual(norm_addr(("192.168.1.20", 3610)), ("192.168.1.20", 3610))

    def test_unix_port_raw_sockaddr(self):
        raw = bytes((2, 0, 0x0E, 0x1A, 127, 0, 0, 2)) + bytes(8)  # AF_INET, port 3610, 127.0.0.2
        self.assertEqual(norm_addr(raw), ("127.0.0.2", 3610))


class _FakeRTC:
    def __init__(self):
        self._mem = b""
        self.now = (2000, 1, 1, 5, 0, 0, 12, 0)  # power-on: the RTC counts from 2000-01-01
        self.set_to = None

    def memory(self, data=None):
        if data is None:
            return self._mem
        self._mem = bytes(data)

    def datetime(self, t=None):
        if t is None:
            return self.now
        self.set_to = t
        self.now = t


class _FakeWLAN:
    IF_STA = 0
    PM_NONE = 0

    def __init__(self, iface=0):
        self.scans = []
        self.n_scans = 0
        self.connected_to = None
        self.connected = False
        self.state = port.STAT_IDLE
        self.disconnects = 0
        self.ip = "192.168.1.20"

    def active(self, on=None):
        return True

    def config(self, *a, **kw):
        pass

    def isconnected(self):
        return self.connected

    def status(self):
        return self.state

    def scan(self):
        self.n_scans += 1
        return self.scans

    def connect(self, ssid, key, bssid=None):
        self.connected_to = (ssid, bssid)
        self.state = port.STAT_CONNECTING

    def disconnect(self):
        self.disconnects += 1
        self.state = port.STAT_IDLE

    def ifconfig(self, cfg=None):
        return (self.ip, "255.255.255.0", "192.168.1.1", "192.168.1.1")


for _name, _v in port.SEC:
    setattr(_FakeWLAN, _name, _v)


class _FakePartition:
    TYPE_APP = 0
    TYPE_DATA = 1
    table = []

    def __init__(self, label, n_blocks, block_size=4096, ptype=1):
        self.label = label
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.type = ptype

    @staticmethod
    def find(type=0, subtype=255, label=None):
        return [p for p in _FakePartition.table
                if p.type == type and (label is None or p.label == label)]

    def ioctl(self, op, arg):
        if op == 4:
            return self.n_blocks
        if op == 5:
            return self.block_size
        return None


WIFI_BOARD = {"hal": "esp32", "network": {"kind": "wifi"}, "watchdog_ms": 30000,
              "flash": {"partition": "meterlog", "block_size": 4096, "first_block": 0,
                        "n_blocks": 128}}


class Esp32HalTest(unittest.TestCase):
    def setUp(self):
        self.rtc = _FakeRTC()
        self.wdts = []
        machine = port.Mod()
        machine.RTC = lambda: self.rtc
        machine.WDT = lambda id=0, timeout=5000: self.wdts.append(timeout)
        machine.PWRON_RESET, machine.WDT_RESET, machine.SOFT_RESET = 1, 3, 5
        machine.reset_cause = lambda: 3
        network = port.network(_FakeWLAN)
        esp32 = port.Mod()
        esp32.Partition = _FakePartition
        _FakePartition.table = [_FakePartition("nvs", 6), _FakePartition("meterlog", 128)]
        self.hal_mod, self.saved = port.import_esp32_hal(machine, network, esp32)
        self.lines = []
        from firmware import log

        log.set_sink(self.lines.append)
        self.cfg = self.config()

    def config(self, **lan):
        from firmware.app.config import merge

        section = {"wifi_ssid": "site", "wifi_psk": "correct horse"}
        section.update(lan)
        return merge({"lan": section})

    def tearDown(self):
        from firmware import log

        log.set_sink(None)
        port.restore(self.saved)

    def wifi_hal(self, cfg=None):
        hal = self.hal_mod.Hal(WIFI_BOARD, cfg or self.cfg)
        hal._nic = _FakeWLAN(0)
        return hal

    def text(self):
        return "\n".join(self.lines)

    # -- calendar clock and RTC -------------------------------------------------------------

    def test_rtc_keeps_smart_meter_time_as_epoch_2000(self):
        hal = self.hal_mod.Hal({"hal": "esp32"}, self.cfg)
        self.assertFalse(hal.clock.is_set())  # cold boot: no trusted time
        t = timeutil.t2k_from_fields(2025, 4, 1, 3, 30, 15)  # a Tuesday
        hal.clock.set_t2k(t)
        self.assertEqual(self.rtc.set_to, (2025, 4, 1, 1, 3, 30, 15, 0))  # weekday 0 = Monday
        self.assertEqual(self.rtc.memory()[:4], b"T2K1")

    def test_rtc_time_read_as_calendar_fields_whatever_the_epoch(self):
        # time.time() counts from 2000 on the ESP32 but from 1970 on the unix port: the HAL must
        # not depend on it. The RTC's calendar fields mean the same on every port.
        self.rtc.memory(b"T2K1")
        self.rtc.now = (2025, 4, 1, 1, 3, 30, 15, 0)
        hal = self.hal_mod.Hal({"hal": "esp32"}, self.cfg)
        want = timeutil.t2k_from_fields(2025, 4, 1, 3, 30, 15)
        self.assertTrue(hal.clock.is_set())
        self.assertLessEqual(abs(hal.clock.now_t2k() - want), 1)

    def test_rtc_marked_but_implausible_is_not_trusted(self):
        self.rtc.memory(b"T2K1")
        self.rtc.now = (2000, 1, 1, 5, 0, 0, 40, 0)
        hal = self.hal_mod.Hal({"hal": "esp32"}, self.cfg)
        self.assertFalse(hal.clock.is_set())
        self.assertIn("not trusted", self.text())

    def test_reset_cause_is_logged(self):
        self.hal_mod.Hal({"hal": "esp32"}, self.cfg)
        self.assertIn("reset cause WDT_RESET", self.text())

    # -- watchdog ----------------------------------------------------------------------------

    def test_hal_reconfigures_the_watchdog_boot_py_armed(self):
        self.hal_mod.Hal(WIFI_BOARD, self.cfg)
        self.assertEqual(self.wdts, [30000])

    def test_boot_py_arms_the_watchdog_from_the_board_file(self):
        with open(_root() + "/boot.py") as f:
            src = f.read()
        g = {"__name__": "boot"}
        exec(src, g)  # on this host: no board.json in the working directory, nothing armed
        self.assertEqual(self.wdts, [])
        path = "/tmp/_terminal_board_test.json"
        with open(path, "w") as f:
            json.dump({"hal": "esp32", "watchdog_ms": 12000}, f)
        g["_arm_watchdog"](path)
        self.assertEqual(self.wdts, [12000])
        for bad in ("{not json", "[]", '{"watchdog_ms": "30 s"}', '{"watchdog_ms": 0}'):
            with open(path, "w") as f:
                f.write(bad)
            g["_arm_watchdog"](path)  # never raises: a failing boot.py must not stop the device
        g["_arm_watchdog"]("/nonexistent/board.json")
        self.assertEqual(self.wdts, [12000])

    # -- Wi-Fi -------------------------------------------------------------------------------

    def test_wifi_refuses_open_wep_wpa_and_joins_wpa2(self):
        hal = self.wifi_hal()
        W = _FakeWLAN
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
        self.assertNotIn("correct horse", self.text())

    def test_wifi_with_only_weak_access_points_does_not_join(self):
        hal = self.wifi_hal()
        W = _FakeWLAN
        hal._nic.scans = [(b"site", b"\x03" * 6, 1, -42, W.SEC_WPA_WPA2, False)]
        self.assertFalse(hal.lan_up())
        self.assertIsNone(hal._nic.connected_to)
        self.assertIn("no WPA2/WPA3 access point", self.text())

    def test_wifi_shift_jis_neighbour_does_not_break_the_join(self):
        # scan() gives raw bytes; on the esp32 build .decode() of a non-UTF-8 name raises
        # UnicodeError (a ValueError), which crashed the LAN task before a single AP was tried.
        hal = self.wifi_hal()
        W = _FakeWLAN
        hal._nic.scans = [
            (port.SHIFT_JIS_SSID, b"\x01" * 6, 6, -35, W.SEC_WPA2, False),
            (b"site", b"\x02" * 6, 1, -50, W.SEC_WPA2, False),
        ]
        self.assertFalse(hal.lan_up())
        self.assertEqual(hal._nic.connected_to, ("site", b"\x02" * 6))

    def test_wifi_non_ascii_ssid_compared_as_utf8_bytes_and_passed_as_given(self):
        ssid = "\u30ab\u30d5\u30a7"  # "カフェ"
        hal = self.wifi_hal(self.config(wifi_ssid=ssid))
        W = _FakeWLAN
        hal._nic.scans = [
            (port.SHIFT_JIS_SSID, b"\x01" * 6, 6, -35, W.SEC_WPA2, False),
            (ssid.encode(), b"\x02" * 6, 1, -50, W.SEC_WPA3, False),
        ]
        self.assertFalse(hal.lan_up())
        self.assertEqual(hal._nic.connected_to, (ssid, b"\x02" * 6))

    def test_wifi_mixed_mode_joined_only_when_configured(self):
        W = _FakeWLAN
        scan = [(b"site", b"\x03" * 6, 1, -42, W.SEC_WPA_WPA2, False)]
        hal = self.wifi_hal(self.config(wifi_allow_wpa_wpa2_mixed=True))
        hal._nic.scans = scan
        self.assertFalse(hal.lan_up())
        self.assertEqual(hal._nic.connected_to, ("site", b"\x03" * 6))
        self.assertNotIn("unknown key", self.text())

    def test_wifi_short_psk_refused_before_scanning_and_never_logged(self):
        hal = self.wifi_hal(self.config(wifi_psk="Zq9x7"))
        hal._nic.scans = [(b"site", b"\x04" * 6, 1, -60, _FakeWLAN.SEC_WPA2, False)]
        self.assertFalse(hal.lan_up())
        self.assertFalse(hal.lan_up())
        self.assertEqual(hal._nic.n_scans, 0)
        self.assertIsNone(hal._nic.connected_to)
        said = [line for line in self.lines if "wifi_psk" in line]
        self.assertEqual(len(said), 1)  # said once, not on every attempt
        self.assertNotIn("Zq9x7", self.text())

    def test_wifi_scans_again_when_the_driver_cannot_reconnect(self):
        # After a drop the driver retries the pinned BSSID for ever (port.STAT_CONNECTING): after a
        # while the HAL disconnects, scans and picks an access point again.
        hal = self.wifi_hal()
        now = [0]
        hal.ticks = lambda: now[0]
        nic = hal._nic
        nic.scans = [(b"site", b"\x04" * 6, 1, -60, _FakeWLAN.SEC_WPA2, False)]
        nic.state = port.STAT_CONNECTING
        self.assertFalse(hal.lan_up())
        now[0] = 10000
        self.assertFalse(hal.lan_up())
        self.assertEqual(nic.n_scans, 0)  # the driver's own reconnect gets its chance
        now[0] = 31000
        self.assertFalse(hal.lan_up())
        self.assertEqual(nic.disconnects, 1)
        self.assertEqual(nic.n_scans, 1)
        self.assertEqual(nic.connected_to, ("site", b"\x04" * 6))
        nic.connected = True
        self.assertTrue(hal.lan_up())

    def test_wifi_failed_join_stops_the_driver_before_choosing_again(self):
        hal = self.wifi_hal()
        nic = hal._nic
        nic.scans = [(b"site", b"\x04" * 6, 1, -60, _FakeWLAN.SEC_WPA2, False)]
        self.assertFalse(hal.lan_up())
        self.assertEqual(nic.disconnects, 0)  # nothing to stop before the first join
        nic.state = port.STAT_NO_AP_FOUND  # the join failed; the driver keeps retrying that BSSID
        nic.scans = [(b"site", b"\x07" * 6, 11, -50, _FakeWLAN.SEC_WPA3, False)]
        self.assertFalse(hal.lan_up())
        self.assertEqual(nic.disconnects, 1)
        self.assertEqual(nic.connected_to, ("site", b"\x07" * 6))

    # -- UDP ---------------------------------------------------------------------------------

    def test_udp_bound_to_own_address_without_multicast_discovery(self):
        from firmware.app.config import merge

        hal = self.wifi_hal(merge({"discovery": {"multicast": False},
                                   "lan": {"wifi_ssid": "site", "wifi_psk": "correct horse"}}))
        hal._nic.ip = "127.0.0.1"
        hal._nic.connected = True
        ep = hal.lan_udp(0)
        try:
            self.assertEqual(ep.local[0], "127.0.0.1")
            hal._nic.ip = "127.0.0.7"  # DHCP gave another address after a reconnect
            self.assertTrue(hal.lan_up())
            self.assertEqual(ep.local[0], "127.0.0.7")
            self.assertIn("127.0.0.7", self.text())
        finally:
            ep.close()

    def test_udp_bound_to_any_address_for_multicast_discovery(self):
        hal = self.wifi_hal()
        ep = hal.lan_udp(0)
        try:
            self.assertEqual(ep.local[0], "0.0.0.0")
        finally:
            ep.close()

    # -- flash region from the board file ----------------------------------------------------

    def test_flash_region_comes_from_the_board(self):
        board = dict(WIFI_BOARD)
        board["flash"] = {"partition": "meterlog", "block_size": 4096, "first_block": 8,
                          "n_blocks": 100}
        hal = self.hal_mod.Hal(board, self.cfg)
        self.assertEqual(hal.flash_region(), (8, 100))
        self.assertEqual(hal.blockdev().label, "meterlog")

    def test_missing_partition_is_a_clear_flash_error(self):
        from firmware.hal import FlashError

        _FakePartition.table = [_FakePartition("vfs", 384)]  # a stock partition table
        hal = self.hal_mod.Hal(WIFI_BOARD, self.cfg)
        with self.assertRaises(FlashError) as cm:
            hal.flash_region()
        self.assertIn("meterlog", str(cm.exception))

    def test_block_size_must_match_the_partition(self):
        from firmware.hal import FlashError

        board = dict(WIFI_BOARD)
        board["flash"] = {"partition": "meterlog", "block_size": 8192, "first_block": 0,
                          "n_blocks": 64}
        hal = self.hal_mod.Hal(board, self.cfg)
        with self.assertRaises(FlashError) as cm:
            hal.flash_region()
        self.assertIn("8192", str(cm.exception))

    def test_region_must_fit_the_partition(self):
        from firmware.hal import FlashError

        _FakePartition.table = [_FakePartition("meterlog", 64)]
        hal = self.hal_mod.Hal(WIFI_BOARD, self.cfg)
        with self.assertRaises(FlashError) as cm:
            hal.flash_region()
        self.assertIn("64", str(cm.exception))


class HostHalTest(unittest.TestCase):
    def test_flash_region_from_config(self):
        from firmware.app.config import merge
        from firmware.hal import host

        cfg = merge({"store": {"first_block": 2, "n_blocks": 6}})
        hal = host.Hal({"hal": "host"}, cfg)
        self.assertEqual(hal.flash_region(), (2, 6))
