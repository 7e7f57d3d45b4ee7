# The event log wired in the terminal: a boot and clock sets by the smart meter produce events a
# management client reads over COSEM, across a reboot (docs/events.md). A whole Terminal (store,
# radio and COSEM side, meter side) does not fit the MicroPython unit lane's 256 KB heap after
# every import, so this runs under CPython only, with a fake HAL (no process, no socket).
import gc
import os
import struct
import unittest

from firmware import log
from firmware.app import config as cfgmod
from firmware.app.meters import meter_configs
from firmware.app.terminal import Terminal
from firmware.cosem import axdr
from firmware.hal import aes
from firmware.hal.clock import CalendarClock
from firmware.hal.norflash import NorFlash, PowerCut

H = bytes.fromhex
AARQ_LLS = H("6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
             "BE10040E01000000065F1F0400007E1F04B0")  # client 1, password 12345678
DIR = "/tmp/test_app_events"
T0 = 765244800  # 2024-04-01T00:00Z
GET_LOG = H("c001c100070000636200ff0200")
MGMT = 1


def set_clock(t):
    return H("c101c100080000010000ff0200") + b"\x09\x0c" + axdr.datetime_bytes(t, -540, 540)


class FakeHal:
    aes_ecb = staticmethod(aes.ecb)  # the host HAL's AES (cryptography on CPython)

    def __init__(self, flash):
        self.clock = CalendarClock()
        self._flash = flash

    def flash_region(self):
        return 0, 4

    def blockdev(self):
        return self._flash

    def radio_uart(self):
        return None


def _clean():
    try:
        names = os.listdir(DIR)
    except OSError:
        os.mkdir(DIR)
        return
    for n in names:
        os.remove(DIR + "/" + n)


class TerminalEventsTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        _clean()
        self.flash = NorFlash(4, block_size=256)
        self.cfg = cfgmod.merge({
            "store": {"state_path": DIR + "/state.json"},
            "dlms": {"mgmt_mechanism": "lls", "mgmt_password": "12345678"},
            "meter": {"ip": "127.0.0.1"},
        })

    def tearDown(self):
        log.set_sink(None)
        _clean()

    def boot(self):
        gc.collect()
        t = Terminal(FakeHal(self.flash), self.cfg)
        t.meter_cfgs = meter_configs(self.cfg["meter"])
        t._build_radio()
        t._build_meter()
        r = t.server.handle_apdu(AARQ_LLS, MGMT)
        self.assertEqual(r[0], 0x61)
        self.assertIsNotNone(t.server.association(MGMT))
        return t

    def read_log(self, t):
        r = t.server.handle_apdu(GET_LOG, MGMT)
        self.assertEqual(r[:4], H("c401c100"), r.hex())
        rows = axdr.Reader(r, 4).value()
        out = []
        for row in rows:
            tm = None if row[0][:2] == b"\xff\xff" else axdr.parse_datetime(row[0], -1, 540)
            out.append((tm, row[1], row[2]))
        return out

    def test_build_only_config_sections_dropped_after_start_up(self):
        # dlms, events and (not pushing) push are read only while building: run() drops them
        cfg = dict(self.cfg)
        t = Terminal(FakeHal(self.flash), cfg)
        t.meter_cfgs = meter_configs(cfg["meter"])
        t._build_radio()
        t._build_meter()
        t._forget_build_config()
        self.assertEqual([cfg["dlms"], cfg["events"], cfg["push"]], [None, None, None])
        # the terminal goes on without them: association, clock set (an event), log read
        self.assertEqual(t.server.handle_apdu(AARQ_LLS, MGMT)[0], 0x61)
        self.assertEqual(t.server.handle_apdu(set_clock(T0), MGMT), H("c501c100"))
        self.assertEqual(len(self.read_log(t)), 2)

    def test_boot_and_clock_sets_are_read_over_cosem(self):
        t = self.boot()
        self.assertEqual(self.read_log(t), [(None, 2, 1)])  # POWER_UP, boot 1, clock not set
        self.assertEqual(t.server.handle_apdu(set_clock(T0), MGMT), H("c501c100"))
        self.assertEqual(t.server.handle_apdu(set_clock(T0 + 3), MGMT), H("c501c100"))  # sync
        self.assertEqual(t.server.handle_apdu(set_clock(T0 - 600), MGMT), H("c501c100"))
        got = self.read_log(t)
        self.assertEqual(got[1], (T0, 1, -0x80000000))  # first set: no old time
        self.assertEqual(len(got), 3)  # a 3 s synchronisation is not an event
        tm, code, step = got[2]
        self.assertEqual(code, 1)
        self.assertEqual(tm, T0 - 600)  # the new time ...
        # ... and the step: old = new - step (the 3 s sync is slewed, docs/clock.md: the clock
        # read T0 .. T0 + 3 when the step came)
        self.assertTrue(-604 <= step <= -600, step)
        # the meter side and the server share the one event callable
        self.assertIs(t.channels[0].client.event, t.event)
        self.assertEqual(t.channels[0].client.meter_index, 0)
        self.assertIs(t.channels[0].planner.event, t.event)
        self.assertIs(t.channels[0].poller.event, t.event)
        self.assertIs(t.server.event, t.event)
        t.event(7, 48)  # as the backfill reports
        # reboot: the log survives, the new boot is recorded with its count
        t = None
        gc.collect()
        t2 = self.boot()
        got2 = self.read_log(t2)
        self.assertEqual(got2[:3], got)
        self.assertEqual(got2[3][1:], (7, 48))
        self.assertEqual(got2[4][1:], (2, 2))  # POWER_UP, boot 2
        code = t2.server.handle_apdu(H("c001c10001" "0000600b00ff" "0200"), MGMT)
        self.assertEqual(code, H("c401c1001102"))
        detail = t2.server.handle_apdu(H("c001c10001" "0000600b80ff" "0200"), MGMT)
        self.assertEqual(struct.unpack(">i", detail[5:9])[0], 2)

    def test_torn_interval_record_is_a_flash_sealed_event(self):
        t = self.boot()
        slot = T0 // 1800 + 10 * 365 * 48  # any slot
        t.store.put(0, slot, 100, 5, 1, "fixed", 0)
        self.flash.arm(1, tear=True, seed=3)  # the next program is torn by a power cut
        with self.assertRaises(PowerCut):
            t.store.put(0, slot + 1, 101, 5, 1, "fixed", 0)
        t = None
        self.flash.power_cycle()
        t2 = self.boot()
        self.assertEqual(t2.flashlog.stats["torn_sealed"], 1)
        got = self.read_log(t2)
        self.assertEqual([r[1:] for r in got], [(2, 1), (2, 2), (12, 1)])  # POWER_UP x2, sealed
        t2 = None
        self.flash.power_cycle()
        t3 = self.boot()  # a clean boot seals only its blank weak slot: no event
        self.assertEqual([r[1] for r in self.read_log(t3)], [2, 2, 12, 2])


if __name__ == "__main__":
    unittest.main()
