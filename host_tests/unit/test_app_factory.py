"""Factory reset on the host HAL (files shredded, the NOR emulator's backing file erased) and the
wipe primitives of firmware/hal/wipe.py. The device path (whole LittleFS partition erased, image
scanned for every secret) is host_tests/integration/test_factory_wipe.py."""
import gc
import os
import unittest

from event_fakes import code_details, mounted

from firmware import events as ev
from firmware import hal as halmod
from firmware import log
from firmware.app import config, factory
from firmware.hal import FlashError, wipe
from firmware.hal.norflash import NorFlash
from firmware.store.eventlog import EventLog
from firmware.store.state import StateFile


def _run_id():
    # unique per interpreter: pytest-xdist runs this file's tests in several processes at once
    return "".join("%02x" % b for b in os.urandom(4))


_DIR = "/tmp/test_app_factory_%s" % _run_id()
_PSK = "host-wipe-psk-3f9c1a"


def _rm_tree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            _rm_tree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _block_is(bd, b, byte):
    """Every byte of block b is `byte` (read 256 bytes at a time: the unit lane heap is small)."""
    buf = bytearray(256)
    want = bytes([byte]) * 256
    for off in range(0, bd.ioctl(5, 0), 256):
        bd.readblocks(b, buf, off)
        if buf != want:
            return False
    return True


class _StuckBlock(NorFlash):
    """A flash whose block `stuck` does not erase `fails` times (worn out, or a driver fault)."""

    def __init__(self, stuck, fails):
        NorFlash.__init__(self, 4, 512)
        self.stuck = stuck
        self.fails = fails

    def ioctl(self, op, arg):
        if op == 6 and arg == self.stuck and self.fails > 0:
            self.fails -= 1
            return 0
        return NorFlash.ioctl(self, op, arg)


class _Order(NorFlash):
    """Records the order of block erases."""

    def __init__(self):
        NorFlash.__init__(self, 4, 512)
        self.order = []

    def ioctl(self, op, arg):
        if op == 6:
            self.order.append(arg)
        return NorFlash.ioctl(self, op, arg)


class FactoryHostTest(unittest.TestCase):
    def setUp(self):
        gc.collect()
        self.lines = []
        log.set_sink(self.lines.append)
        _rm_tree(_DIR)
        os.mkdir(_DIR)
        self.cfg_path = _DIR + "/config.json"
        with open(self.cfg_path, "w") as f:
            f.write('{"lan": {"wifi_psk": "%s"}}' % _PSK)
        with open(_DIR + "/board.json", "w") as f:
            f.write('{"hal": "host"}')
        self.cfg = config.merge({
            "lan": {"wifi_psk": _PSK},
            "store": {"path": _DIR + "/flash.bin", "state_path": _DIR + "/state.json",
                      "n_blocks": 4},
        })
        st = StateFile(_DIR + "/state.json")
        st.update({"boot_count": 3, "dlms_ic": 1513922161})
        lg = EventLog(_DIR + "/events", 8, None, burst=0)
        lg.mount()
        lg.record(ev.POWER_UP, 3)
        with open(_DIR + "/setup_key", "w") as f:  # the setup page's generated AP key
            f.write("k7m2p9q4w3x8")
        self.hal = halmod.create({"hal": "host"}, self.cfg)
        bd = self.hal.blockdev()
        for off in range(0, 4096, 256):
            bd.writeblocks(1, b"\x5a" * 256, off)

    def tearDown(self):
        log.set_sink(None)
        if self.hal._bdev is not None:
            self.hal._bdev.close()
        _rm_tree(_DIR)

    def _events(self):
        return code_details(mounted(_DIR + "/events", 8))

    def _store_block_is(self, b, byte):
        return _block_is(self.hal.blockdev(), b, byte)

    def test_keep_metering_shreds_secret_files_and_records_the_reset(self):
        rep = factory.reset(self.hal, self.cfg, True, self.cfg_path)
        for name in ("config.json", "state.json", "events.1", "setup_key"):
            self.assertFalse(_exists(_DIR + "/" + name), name)
        self.assertIn(self.cfg_path, rep["filesystem"]["files"])
        self.assertIn(_DIR + "/state.json", rep["filesystem"]["files"])
        self.assertTrue(_exists(_DIR + "/board.json"))
        self.assertEqual(self._events(), [(ev.FACTORY_RESET, 1)])  # the old POWER_UP is gone
        self.assertTrue(self._store_block_is(1, 0x5A))
        self.assertIsNone(rep["store"])
        self.assertEqual(rep["nvs"], 0)
        self.assertIsNone(StateFile(_DIR + "/state.json").get("dlms_ic"))
        for line in self.lines:
            self.assertNotIn(_PSK, line)

    def test_metering_erased_when_not_kept(self):
        rep = factory.reset(self.hal, self.cfg, False, self.cfg_path)
        self.assertEqual(rep["store"], 4)
        for b in range(4):
            self.assertTrue(self._store_block_is(b, 0xFF), b)
        with open(self.cfg["store"]["path"], "rb") as f:  # the backing file itself
            for _ in range(4 * 4096 // 256):
                self.assertEqual(f.read(256), b"\xff" * 256)
            self.assertEqual(f.read(), b"")
        self.assertEqual(self._events(), [(ev.FACTORY_RESET, 0)])

    def test_events_path_follows_the_terminal_rule(self):
        self.assertEqual(factory.events_path(self.cfg), _DIR + "/events")
        cfg = config.merge({"events": {"path": "/x/ev"}})
        self.assertEqual(factory.events_path(cfg), "/x/ev")
        self.assertEqual(factory.events_path(config.merge({})), "events")


class WipeTest(unittest.TestCase):
    def test_erase_verify_erases_and_feeds(self):
        bd = NorFlash(4, 512)
        bd.writeblocks(2, bytes(512))
        fed = []
        self.assertEqual(wipe.erase_verify(bd, feed=lambda: fed.append(1)), 4)
        self.assertEqual(len(fed), 4)
        self.assertTrue(_block_is(bd, 2, 0xFF))

    def test_a_block_that_does_not_erase_is_retried_then_refused(self):
        bd = _StuckBlock(2, 1)
        bd.writeblocks(2, bytes(512))
        self.assertEqual(wipe.erase_verify(bd), 4)  # the second erase worked
        bd = _StuckBlock(2, 2)
        bd.writeblocks(2, bytes(512))
        with self.assertRaises(FlashError):
            wipe.erase_verify(bd)

    def test_blocks_holding_a_marker_are_erased_first(self):
        bd = _Order()
        bd.writeblocks(3, b"x" * 250 + b'"wifi_psk": "s"', 0)  # straddles two 256-byte reads
        bd.writeblocks(1, b"..secret-value..", 100)
        wipe.erase_verify(bd, markers=(b'_psk"', b"secret-value"))
        self.assertEqual(bd.order, [1, 3, 0, 2])
        bd.order = []
        wipe.erase_verify(bd)
        self.assertEqual(bd.order, [0, 1, 2, 3])

    def test_kept_files_over_the_limit_refused_before_anything_is_erased(self):
        _rm_tree(_DIR)
        os.mkdir(_DIR)
        os.mkdir(_DIR + "/lib")
        with open(_DIR + "/lib/a.py", "w") as f:
            f.write("x" * 100)
        with open(_DIR + "/board.json", "w") as f:
            f.write("{}")
        got = wipe.read_files(_DIR, ("board.json", "absent.py", "lib"))
        self.assertEqual(got, [("board.json", b"{}"), ("lib", None), ("lib/a.py", b"x" * 100)])
        with self.assertRaises(FlashError):
            wipe.read_files(_DIR, ("board.json", "lib"), limit=50)
        _rm_tree(_DIR)
        os.mkdir(_DIR)
        wipe.write_files(_DIR, got)
        with open(_DIR + "/lib/a.py") as f:
            self.assertEqual(f.read(), "x" * 100)
        _rm_tree(_DIR)


if __name__ == "__main__":
    unittest.main()
