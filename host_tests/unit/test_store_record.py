import unittest
from binascii import unhexlify

from firmware import timeutil
from firmware.store import record as r

# 2024-10-15 10:30 JST fixed-time value 100000 x 0.1 kWh (echonet-lite.md §2.2 worked example),
# reverse "no data" 0xFFFFFFFE, seq 1, meter 0: the whole 24-byte record, CRC included.
GOLDEN_RECORD = unhexlify("0000000111000108000ea813000186a0fffffffecd81a1df")
GOLDEN_HEADER = unhexlify("4d4c47310118000000000001a3fbd1b0")  # generation 1


class RecordLayoutTest(unittest.TestCase):
    def test_golden_interval_record(self):
        slot = timeutil.slot_of_t2k(timeutil.t2k_from_fields(2024, 10, 15, 1, 30, 0))
        self.assertEqual(slot, 960531)
        b = bytearray(24)
        r.pack_interval(b, 0, 1, 0, slot, 100000, r.NO_DATA, 0x01, "fixed", r.FLAG_UNAVAILABLE)
        self.assertEqual(bytes(b), GOLDEN_RECORD)
        self.assertTrue(r.is_valid(b, 0))
        self.assertEqual(r.unpack_interval(b, 0),
                         (1, 0, slot, 100000, 0xFFFFFFFE, 1, r.SOURCE_FIXED, r.FLAG_UNAVAILABLE))

    def test_golden_header(self):
        h = bytearray(16)
        r.pack_header(h, 0, 1)
        self.assertEqual(bytes(h), GOLDEN_HEADER)
        self.assertEqual(r.header_generation(h), 1)
        self.assertIsNone(r.header_generation(bytearray(b"\xff" * 16)))
        h[9] ^= 0x10
        self.assertEqual(r.header_generation(h), -1)

    def test_pack_at_offset_and_extremes(self):
        b = bytearray(b"\xaa" * 60)
        r.pack_interval(b, 30, 0xFFFFFFFE, 255, 0xFFFFFFFF, 999999999, 0, 0x0D, 3, 0x1F)
        self.assertEqual(b[:30], bytearray(b"\xaa" * 30))
        self.assertEqual(b[54:], bytearray(b"\xaa" * 6))
        self.assertEqual(r.unpack_interval(b, 30),
                         (0xFFFFFFFE, 255, 0xFFFFFFFF, 999999999, 0, 0x0D, 3, 0x1F))
        self.assertEqual(r.meter_slot(b, 30), (r.TYPE_INTERVAL, 255, 0xFFFFFFFF))

    def test_every_single_bit_flip_is_detected(self):
        b = bytearray(GOLDEN_RECORD)
        for i in range(24 * 8):
            b[i // 8] ^= 1 << (i % 8)
            self.assertFalse(r.is_valid(b, 0), "bit %d" % i)
            b[i // 8] ^= 1 << (i % 8)
        self.assertTrue(r.is_valid(b, 0))

    def test_set_seq_reseals(self):
        b = bytearray(GOLDEN_RECORD)
        r.set_seq(b, 0, 77)
        self.assertTrue(r.is_valid(b, 0))
        self.assertEqual(r.seq_of(b, 0), 77)

    def test_blank(self):
        self.assertTrue(r.is_blank(bytearray(b"\xff" * 24), 0))
        for i in (0, 7, 23):
            b = bytearray(b"\xff" * 24)
            b[i] = 0xFE
            self.assertFalse(r.is_blank(b, 0))
        self.assertFalse(r.is_valid(bytearray(b"\xff" * 24), 0))
        self.assertFalse(r.is_valid(bytearray(24), 0))

    def test_state_record(self):
        b = bytearray(24)
        r.pack_state(b, 0, 5, 9, (1 << 64) - 2)
        self.assertEqual(r.type_of(b, 0), r.TYPE_STATE)
        self.assertEqual(r.unpack_state(b, 0), (5, 9, (1 << 64) - 2))
        self.assertRaises(r.RecordError, r.pack_state, b, 0, 5, 9, 1 << 64)

    def test_bad_arguments(self):
        b = bytearray(24)
        bad = [
            (1, 256, 1, 1, 1, 1, 1, 0),  # meter
            (1, 0, -1, 1, 1, 1, 1, 0),  # slot
            (1, 0, 1, 1 << 32, 1, 1, 1, 0),  # fwd
            (1, 0, 1, 1, -5, 1, 1, 0),  # rev
            (1, 0, 1, 1, 1, 300, 1, 0),  # unit
            (1, 0, 1, 1, 1, 1, 9, 0),  # source
            (1, 0, 1, 1, 1, 1, "estimated", 0),  # source name
            (1, 0, 1, 1, 1, 1, 1, 0x80),  # undefined flag
        ]
        for args in bad:
            with self.assertRaises(r.RecordError):
                r.pack_interval(b, 0, *args)
        self.assertTrue(issubclass(r.RecordError, ValueError))

    def test_sources_and_rank(self):
        self.assertEqual(r.source_code("fixed"), r.SOURCE_FIXED)
        self.assertEqual(r.source_code("history"), r.SOURCE_HISTORY)
        self.assertEqual(r.source_code(r.SOURCE_CUMULATIVE), r.SOURCE_CUMULATIVE)
        fixed, hist, cum = r.SOURCE_FIXED, r.SOURCE_HISTORY, r.SOURCE_CUMULATIVE
        self.assertGreater(r.rank(fixed, 0), r.rank(hist, 0))
        self.assertGreater(r.rank(hist, 0), r.rank(cum, 0))
        self.assertGreater(r.rank(cum, 0), r.rank(fixed, r.FLAG_UNAVAILABLE))
        self.assertEqual(r.rank(fixed, r.FLAG_POWER_DOWN), r.rank(fixed, 0))


class DlmsStatusTest(unittest.TestCase):
    def test_mapping(self):
        self.assertEqual(r.dlms_status(0), 0)
        self.assertEqual(r.dlms_status(r.FLAG_POWER_DOWN), 0x80)
        self.assertEqual(r.dlms_status(r.FLAG_CLOCK_ADJUSTED), 0x20)
        self.assertEqual(r.dlms_status(r.FLAG_UNAVAILABLE), 0x04)
        self.assertEqual(r.dlms_status(r.FLAG_CLOCK_INVALID), 0x06)
        self.assertEqual(r.dlms_status(r.FLAG_METER_RESET), 0x01)
        self.assertEqual(r.dlms_status(r.FLAG_POWER_DOWN | r.FLAG_CLOCK_ADJUSTED), 0xA0)
        self.assertEqual(r.dlms_status(r.FLAGS_DEFINED), 0xA7)
