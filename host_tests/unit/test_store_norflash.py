import os
import unittest

from firmware.hal.norflash import NorFlash, PowerCut

_PATH = "/tmp/test_store_norflash.bin"


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


class NorSemanticsTest(unittest.TestCase):
    def setUp(self):
        self.f = NorFlash(4, block_size=256)

    def read(self, block, off, n):
        b = bytearray(n)
        self.f.readblocks(block, b, off)
        return b

    def test_geometry_and_erased(self):
        self.assertEqual(self.f.ioctl(4, 0), 4)
        self.assertEqual(self.f.ioctl(5, 0), 256)
        self.assertEqual(self.read(3, 0, 256), bytearray(b"\xff" * 256))

    def test_program_only_clears_bits(self):
        self.f.writeblocks(1, b"\x0f\xf0", 10)
        self.assertEqual(self.read(1, 10, 2), bytearray(b"\x0f\xf0"))
        self.f.writeblocks(1, b"\xf3\xff", 10)  # cannot set bits back to 1
        self.assertEqual(self.read(1, 10, 2), bytearray(b"\x03\xf0"))
        self.assertEqual(self.f.bytes_programmed, 4)
        self.assertEqual(self.f.programs, 2)

    def test_erase_sets_ff_and_counts(self):
        self.f.writeblocks(2, b"\x00" * 8, 0)
        self.assertEqual(self.f.ioctl(6, 2), 0)
        self.assertEqual(self.read(2, 0, 8), bytearray(b"\xff" * 8))
        self.assertEqual(self.f.erases, [0, 0, 1, 0])
        self.assertEqual(self.f.ops, 2)

    def test_no_offset_erases_first(self):
        self.f.writeblocks(0, b"\x00" * 4, 0)
        self.f.writeblocks(0, b"\x5a" * 256)
        self.assertEqual(self.read(0, 0, 4), bytearray(b"\x5a" * 4))
        self.assertEqual(self.f.erases[0], 1)

    def test_bounds(self):
        with self.assertRaises(OSError):
            self.f.writeblocks(4, b"\x00", 0)
        with self.assertRaises(OSError):
            self.f.writeblocks(0, b"\x00\x00", 255)
        with self.assertRaises(OSError):
            self.read(0, 250, 10)

    def test_cut_without_tear_drops_the_op_and_kills_the_device(self):
        self.f.arm(2)
        self.f.writeblocks(0, b"\x00", 0)
        with self.assertRaises(PowerCut):
            self.f.writeblocks(0, b"\x00", 1)
        with self.assertRaises(PowerCut):
            self.read(0, 0, 1)
        self.f.power_cycle()
        self.assertEqual(self.read(0, 0, 2), bytearray(b"\x00\xff"))

    def test_torn_program_is_a_prefix(self):
        data = bytes(range(64))
        seen = set()
        for seed in range(1, 40):
            f = NorFlash(1, block_size=256)
            f.arm(1, tear=True, seed=seed)
            with self.assertRaises(PowerCut):
                f.writeblocks(0, data, 0)
            f.power_cycle()
            b = bytearray(64)
            f.readblocks(0, b, 0)
            k = 0
            while k < 64 and b[k] == data[k]:
                k += 1
            seen.add(k)
            if k < 64:  # the byte at the tear is partly programmed: a subset of its 0 bits
                self.assertEqual(b[k] & data[k], data[k])
                self.assertEqual(b[k + 1:], bytearray(b"\xff" * (63 - k)))
        self.assertGreater(len(seen), 10)

    def test_weak_bits_settle_at_the_nth_power_up(self):
        data = bytes(range(64))
        for tear in (False, True):
            for weak in (1, 2, 3):
                f = NorFlash(1, block_size=256)
                f.arm(1, tear=tear, seed=5, weak=weak)
                with self.assertRaises(PowerCut):
                    f.writeblocks(0, data, 0)
                b = bytearray(64)
                for n in range(1, weak + 1):
                    f.power_cycle()
                    f.readblocks(0, b, 0)
                    if n < weak:  # unfinished: still what the cut left
                        self.assertNotEqual(b, bytearray(data))
                self.assertEqual(b, bytearray(data))  # settled to the intended value
                f.power_cycle()
                f.readblocks(0, b, 0)
                self.assertEqual(b, bytearray(data))

    def test_weak_bits_are_off_by_default_and_forgotten_by_an_erase(self):
        data = bytes(64)
        f = NorFlash(1, block_size=256)
        f.arm(1)
        with self.assertRaises(PowerCut):
            f.writeblocks(0, data, 0)
        f.power_cycle()
        f.power_cycle()
        b = bytearray(64)
        f.readblocks(0, b, 0)
        self.assertEqual(b, bytearray(b"\xff" * 64))  # never settles
        f.arm(1, weak=2)
        with self.assertRaises(PowerCut):
            f.writeblocks(0, data, 0)
        f.power_cycle()
        f.erase(0)
        f.power_cycle()
        f.readblocks(0, b, 0)
        self.assertEqual(b, bytearray(b"\xff" * 64))

    def test_weak_bits_only_clear_bits(self):
        f = NorFlash(1, block_size=256)
        f.arm(1, weak=1)
        with self.assertRaises(PowerCut):
            f.writeblocks(0, b"\x0f" * 8, 0)
        f.power_cycle()  # cut before anything visible; settles now
        f.writeblocks(0, b"\x00" * 4, 0)  # a later program, e.g. a seal
        b = bytearray(8)
        f.readblocks(0, b, 0)
        self.assertEqual(b, bytearray(b"\x00" * 4 + b"\x0f" * 4))
        f2 = NorFlash(1, block_size=256)
        f2.arm(1, weak=2)
        with self.assertRaises(PowerCut):
            f2.writeblocks(0, b"\x0f" * 8, 0)
        f2.power_cycle()
        f2.writeblocks(0, b"\x00" * 4, 0)  # sealed before the weak bits settle
        f2.power_cycle()
        f2.readblocks(0, b, 0)
        self.assertEqual(b, bytearray(b"\x00" * 4 + b"\x0f" * 4))

    def test_torn_erase_leaves_a_prefix(self):
        self.f.writeblocks(1, b"\x00" * 256, 0)
        self.f.arm(1, tear=True, seed=7)
        with self.assertRaises(PowerCut):
            self.f.ioctl(6, 1)
        self.f.power_cycle()
        b = self.read(1, 0, 256)
        k = 0
        while k < 256 and b[k] == 0xFF:
            k += 1
        self.assertLess(k, 256)
        self.assertEqual(b[k:], bytearray(256 - k))

    def test_corrupt_flips_bits(self):
        self.f.corrupt(3, 5, 0x81)
        self.assertEqual(self.read(3, 5, 1)[0], 0x7E)


class NorFileBackingTest(unittest.TestCase):
    def setUp(self):
        _rm(_PATH)

    def tearDown(self):
        _rm(_PATH)

    def test_survives_reopen(self):
        f = NorFlash(3, block_size=512, path=_PATH)
        self.assertEqual(os.stat(_PATH)[6], 3 * 512)
        f.writeblocks(2, b"\x12\x34", 100)
        f.ioctl(6, 0)
        f.close()
        g = NorFlash(3, block_size=512, path=_PATH)
        b = bytearray(2)
        g.readblocks(2, b, 100)
        self.assertEqual(b, bytearray(b"\x12\x34"))
        g.writeblocks(2, b"\xf0\x0f", 100)
        g.readblocks(2, b, 100)
        self.assertEqual(b, bytearray(b"\x10\x04"))
        g.close()

    def test_wrong_size_file_is_reinitialised(self):
        with open(_PATH, "wb") as fh:
            fh.write(b"\x00" * 100)
        f = NorFlash(2, block_size=256, path=_PATH)
        b = bytearray(256)
        f.readblocks(1, b)
        self.assertEqual(b, bytearray(b"\xff" * 256))
        f.close()
