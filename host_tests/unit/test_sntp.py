# The SNTP codec (firmware/hal/sntp.py, docs/clock.md section 6): a request carries the nonce;
# a reply sets the clock only if it is 48+ bytes, server mode, version 3/4, not leap-alarm,
# stratum 1..15 and echoes the nonce; malformed and random replies never raise anything but
# SntpError. Both runtimes.
import struct
import unittest

from rng import Rng

from firmware import timeutil
from firmware.hal import sntp
from firmware.hal.sntp import SntpError

NONCE = b"\x11\x22\x33\x44\x55\x66\x77\x88"
T = timeutil.t2k_from_fields(2026, 12, 1, 5, 0, 0)
NTP_T2K = 3155673600


def reply(t2k=T, frac=0, li=0, vn=4, mode=4, stratum=2, origin=NONCE, extra=b""):
    secs = (t2k + NTP_T2K) % 4294967296
    b = bytearray(48)
    b[0] = (li << 6) | (vn << 3) | mode
    b[1] = stratum
    b[24:32] = origin
    struct.pack_into(">II", b, 32, secs, 0)  # receive timestamp
    struct.pack_into(">II", b, 40, secs, frac)  # transmit timestamp
    return b + extra


class SntpTest(unittest.TestCase):
    def test_request(self):
        buf = bytearray(b"\xaa" * 48)
        self.assertEqual(sntp.encode_request(buf, NONCE), 48)
        self.assertEqual(buf[0], 0x23)  # LI 0, version 4, mode 3 (client)
        self.assertEqual(bytes(buf[1:40]), bytes(39))
        self.assertEqual(bytes(buf[40:48]), NONCE)

    def test_good_reply(self):
        self.assertEqual(sntp.decode_reply(reply(), 48, NONCE), T)
        # version 3 servers, and a key id + MAC after the 48 bytes, are fine
        r = reply(vn=3, extra=bytes(20))
        self.assertEqual(sntp.decode_reply(r, len(r), NONCE), T)

    def test_rounding_and_round_trip(self):
        half = 0x80000000  # .5 s
        self.assertEqual(sntp.decode_reply(reply(frac=half - 0x01000000), 48, NONCE), T)
        self.assertEqual(sntp.decode_reply(reply(frac=half), 48, NONCE), T + 1)
        # .3 s + half of a 600 ms round trip = .6 s: rounds up
        self.assertEqual(sntp.decode_reply(reply(frac=0x4CCCCCCD), 48, NONCE, 600), T + 1)
        self.assertEqual(sntp.decode_reply(reply(frac=0x4CCCCCCD), 48, NONCE, 200), T)

    def test_era_1(self):
        # 2036-02-07T06:28:16Z is NTP second 2^32, i.e. 0 of era 1
        t = timeutil.t2k_from_fields(2040, 1, 1)
        self.assertEqual(sntp.decode_reply(reply(t2k=t), 48, NONCE), t)

    def test_malformed(self):
        for what, r, n in (
            ("short", reply(), 47),
            ("client mode", reply(mode=3), 48),
            ("broadcast mode", reply(mode=5), 48),
            ("version 2", reply(vn=2), 48),
            ("version 5", reply(vn=5), 48),
            ("leap alarm", reply(li=3), 48),
            ("kiss-o'-death", reply(stratum=0), 48),
            ("stratum 16", reply(stratum=16), 48),
            ("foreign origin", reply(origin=b"\x00" * 8), 48),
            ("zero transmit", bytearray(reply()[:40]) + bytes(8), 48),
        ):
            with self.assertRaises(SntpError):
                sntp.decode_reply(r, n, NONCE)
                self.fail(what)

    def test_fuzz(self):
        """Random replies and single-byte corruptions of a good one: SntpError or a time, never
        another exception; a reply whose origin bytes differ from the nonce never gives a time."""
        rng = Rng(20261201)
        good = reply()
        for i in range(1500):
            if i % 3 == 0:
                n = rng.below(80)
                r = bytearray(n)
                for k in range(n):
                    r[k] = rng.below(256)
            else:
                r = bytearray(good)
                for _ in range(1 + rng.below(3)):
                    r[rng.below(48)] = rng.below(256)
                n = 48
            try:
                t = sntp.decode_reply(r, len(r), NONCE, rng.below(70000) - 5000)
            except SntpError:
                continue
            self.assertEqual(bytes(r[24:32]), NONCE)
            self.assertTrue(isinstance(t, int))


if __name__ == "__main__":
    unittest.main()
