import struct
import unittest

from firmware import timeutil, units
from firmware.cosem import axdr, wrapper
from firmware.cosem.objects import capture_descriptor, obis

H = bytes.fromhex


def encode(fn, size=64):
    buf = bytearray(size)
    w = axdr.Writer(buf)
    fn(w)
    return bytes(buf[: w.pos])


class WriterTest(unittest.TestCase):
    def test_integer_types(self):
        self.assertEqual(encode(lambda w: w.u32(5009)), H("0600001391"))
        self.assertEqual(encode(lambda w: w.u32(1329)), H("0600000531"))
        self.assertEqual(encode(lambda w: w.i8(-1)), H("0fff"))
        self.assertEqual(encode(lambda w: w.i16(-540)), H("10fde4"))
        self.assertEqual(encode(lambda w: w.u8(200)), H("11c8"))
        self.assertEqual(encode(lambda w: w.u16(756)), H("1202f4"))
        self.assertEqual(encode(lambda w: w.enum(2)), H("1602"))
        self.assertEqual(encode(lambda w: w.integer(axdr.DOUBLE_LONG, -2)), H("05fffffffe"))
        self.assertEqual(
            encode(lambda w: w.integer(axdr.LONG64_UNSIGNED, 2**40)), H("150000010000000000")
        )
        self.assertEqual(encode(lambda w: w.integer(axdr.LONG64, -1)), H("14ffffffffffffffff"))
        self.assertEqual(encode(lambda w: w.boolean(True)), H("0301"))
        self.assertEqual(encode(lambda w: w.null()), H("00"))

    def test_range_checked(self):
        for fn in (
            lambda w: w.u32(-1),
            lambda w: w.u32(2**32),
            lambda w: w.i8(128),
            lambda w: w.u16(65536),
            lambda w: w.enum(256),
        ):
            with self.assertRaises(axdr.AxdrError):
                encode(fn)

    def test_lengths(self):
        self.assertEqual(encode(lambda w: w.array(4)), H("0104"))
        self.assertEqual(encode(lambda w: w.array(0x80)), H("018180"))
        self.assertEqual(encode(lambda w: w.array(1440)), H("018205a0"))
        self.assertEqual(encode(lambda w: w.structure(2)), H("0202"))
        self.assertEqual(encode(lambda w: w.octets(b"")), H("0900"))
        self.assertEqual(encode(lambda w: w.visible(b"AB")), H("0a024142"))
        self.assertEqual(encode(lambda w: w.bit_string(24, H("00121d"))), H("041800121d"))

    def test_full_buffer_raises_and_rolls_back(self):
        buf = bytearray(6)
        w = axdr.Writer(buf)
        w.u8(1)
        mark = w.pos
        with self.assertRaises(axdr.AxdrFull):
            w.u32(7)
        self.assertEqual(w.pos, mark)  # nothing half-counted
        w = axdr.Writer(bytearray(100), 0, 3)
        with self.assertRaises(axdr.AxdrFull):
            w.octets(b"abc")

    def test_scaler_unit_and_descriptors(self):
        su = bytes((0x02, 0x02, 0x0F, units.wh_scaler(0x03) & 0xFF, 0x16, 30))
        self.assertEqual(su, H("02020f00161e"))
        self.assertEqual(units.wh_scaler(0x04), -1)
        self.assertEqual(units.wh_scaler(0x0D), 7)
        self.assertIsNone(units.wh_scaler(0x05))
        # capture_objects {clock.2, +A.2, -A.2, status.2} (reference 2.5)
        got = bytes((1, 4)) + b"".join(
            [
                capture_descriptor(8, obis("0.0.1.0.0.255"), 2),
                capture_descriptor(3, obis("1.0.1.8.0.255"), 2),
                capture_descriptor(3, obis("1.0.2.8.0.255"), 2),
                capture_descriptor(1, obis("0.0.96.10.1.255"), 2),
            ]
        )
        want = H(
            "0104"
            "020412000809060000010000ff0f02120000"
            "020412000309060100010800ff0f02120000"
            "020412000309060100020800ff0f02120000"
            "020412000109060000600a01ff0f02120000"
        )
        self.assertEqual(got, want)

    def test_obis_parse(self):
        self.assertEqual(obis("0.0.96.10.1.255"), H("0000600a01ff"))
        for bad in ("1.2.3", "1.0.1.8.0.256", "a.b.c.d.e.f"):
            with self.assertRaises(ValueError):
                obis(bad)


class DateTimeTest(unittest.TestCase):
    T = timeutil.t2k_from_fields(2024, 4, 1, 3, 30, 0)  # 12:30 JST

    def test_jst_golden(self):
        got = encode(lambda w: w.datetime(self.T, -540, 540, 0))
        self.assertEqual(got, H("090c07e80401010c1e0000fde400"))

    def test_parse_blue_book_sign(self):
        b = H("07e80401010c1e0000fde400")
        self.assertEqual(axdr.parse_datetime(b, -1, 540), self.T)

    def test_parse_flipped_sign(self):
        b = H("07e80401010c1e00000" + "21c00")  # deviation +540 under the flipped convention
        self.assertEqual(axdr.parse_datetime(b, 1, 540), self.T)

    def test_unspecified_deviation_and_dow(self):
        # Gurux writes dow 0xFF; 0x8000 means local time in the configured zone
        self.assertEqual(axdr.parse_datetime(H("07e80401ff0c1e00008000ff"), -1, 540), self.T)
        self.assertEqual(axdr.parse_datetime(H("07e80401ff0c1e0000fde400"), -1, 0), self.T)

    def test_cest_vector(self):
        # dlms-cosem SET vector: 2021-01-24 14:48:57.80, deviation -60 (CET)
        t = axdr.parse_datetime(H("07e50118ff0e303950ffc400"), -1, 540)
        self.assertEqual(t, timeutil.t2k_from_fields(2021, 1, 24, 13, 48, 57))

    def test_malformed(self):
        for hexs in (
            "ffff0401010c1e0000fde400",  # year wildcard
            "07e80d01010c1e0000fde400",  # month 13
            "07e80231010c1e0000fde400",  # 31 Feb
            "07e8021e010c1e0000fde400",  # 30 Feb 2024
            "07e80401011800000000fde400"[:24],  # hour 24
            "07e80401010cff0000fde400",  # minute wildcard
            "07e80401010c1e0000100000",  # deviation 4096
            "07e80401010c1e0000fd",  # short
        ):
            with self.assertRaises(axdr.AxdrError):
                axdr.parse_datetime(H(hexs), -1, 540)
        self.assertEqual(
            axdr.parse_datetime(H("07e8021d010c1e0000fde400"), -1, 540),
            timeutil.t2k_from_fields(2024, 2, 29, 3, 30, 0),
        )

    def test_roundtrip(self):
        for t in range(0, 40 * 365 * 86400, 86400 * 37 + 1234):
            b = axdr.datetime_bytes(t, -540, 540)
            self.assertEqual(axdr.parse_datetime(b, -1, 540), t)

    def test_fields_when_the_cached_day_changes(self):
        # pack_datetime keeps the last day's calendar fields: every instant, in any order and
        # across midnight, month, leap day and the offset, must still give the full fields
        ts = [timeutil.t2k_from_fields(2024, 2, 28, 14, 59, 59), 0, -1, 86399, 86400]
        ts += [timeutil.t2k_from_fields(2024, 2, 28, 15, 0, 0) + k * 1800 for k in range(100)]
        ts += [timeutil.t2k_from_fields(2024, 12, 31, 15, 0, 0) - 1, 7 * 86400 * 1000 + 1]
        for off in (540, 0, -300):
            for t in ts + ts[::-1]:
                b = axdr.datetime_bytes(t, -off, off)
                y, mo, d, h, mi, sec, wd = timeutil.fields_from_t2k(t + off * 60)
                want = struct.pack(">HBBBBBBBhB", y, mo, d, wd, h, mi, sec, 0, -off, 0)
                self.assertEqual(b, want, (t, off))


class ReaderTest(unittest.TestCase):
    def test_value(self):
        r = axdr.Reader(H("0204 0600000531 0a024142 0102 0300 1602 0418a5a5a5"))
        v = r.value()
        self.assertEqual(v, [1329, b"AB", [False, 2], (24, H("a5a5a5"))])
        self.assertEqual(r.remaining(), 0)

    def test_long_lengths(self):
        self.assertEqual(axdr.Reader(H("098105") + b"x" * 5).value(), b"x" * 5)
        r = axdr.Reader(H("09820100") + b"y" * 256)
        self.assertEqual(len(r.value()), 256)

    def test_skip_matches_value(self):
        data = H("02030600000531090c07e80401010c1e0000fde40001021100120001")
        r1 = axdr.Reader(data)
        r1.value()
        r2 = axdr.Reader(data)
        r2.skip()
        self.assertEqual(r1.pos, r2.pos)

    def test_malformed(self):
        for hexs in (
            "",
            "06000005",  # truncated double-long-unsigned
            "0905aabb",  # octet-string shorter than its length
            "83000001",  # bad length prefix on unknown tag
            "0983010000",  # 3-byte length form not supported
            "01ff",  # array count larger than the data
            "7f",  # unknown tag
            "0101" * 20 + "00",  # nested too deep
        ):
            with self.assertRaises(axdr.AxdrError):
                axdr.Reader(H(hexs)).value()
            with self.assertRaises(axdr.AxdrError):
                axdr.Reader(H(hexs)).skip()

    def test_typed(self):
        r = axdr.Reader(H("12000810fde4"))
        self.assertEqual(r.typed_int(axdr.LONG_UNSIGNED), 8)
        with self.assertRaises(axdr.AxdrError):
            r.typed_int(axdr.INTEGER)


class WrapperTest(unittest.TestCase):
    GET_CLOCK = H("000100100001000dc001c100080000010000ff0200")

    def test_golden(self):
        src, dst, apdu = wrapper.parse(self.GET_CLOCK)
        self.assertEqual((src, dst), (16, 1))
        self.assertEqual(bytes(apdu), H("c001c100080000010000ff0200"))
        self.assertEqual(wrapper.build(16, 1, apdu), self.GET_CLOCK)

    def test_malformed(self):
        for bad in (
            b"",
            H("0001001000"),
            H("0002001000010001c0"),  # version 2
            H("000100100001000dc001"),  # length says 13, 2 present
            H("00010010000100") + b"\x00",  # zero length
            self.GET_CLOCK + b"\x00",  # trailing byte
        ):
            with self.assertRaises(wrapper.WrapperError):
                wrapper.parse(bad)
