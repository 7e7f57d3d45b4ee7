import binascii
import unittest

from firmware import log
from firmware.radio import j11


def h(text):
    return binascii.unhexlify(text.replace(" ", "").replace("|", ""))


# ROHM 63AN028E sample frames (reference wisun-modules.md section 3.5).
F1 = h("D0EA83FC 00D9 0004 0416 0000")
F2 = h("D0F9EE5D 6019 0004 0391 0000")
F3 = h("D0EA83FC 005F 0008 03A0 0009 | 05 00 04 00")
F4 = h("D0F9EE5D 205F 0005 0398 0001 | 01")
F7 = h("D0EA83FC 0051 0012 039C 041D | 06 0003FFF0 01 4343444445454646")
F8_NONE = h("D0F9EE5D 4051 0006 03AB 0005 | 01 04")
F8_HIT = h("D0F9EE5D 4051 0012 03B7 06BA | 00 0C 01 0050C2FFFEDC2822 BCDE DE")
F13 = h("D0F9EE5D 2053 0011 0398 06BA | 01 0C BCDE 0050C2FFFEDC2822 DE")
F14 = h("D0EA83FC 0005 0006 0344 0028 | 0E1A")
F16 = h("D0EA83FC 0056 0004 0393 0000")
F18 = h("D0F9EE5D 6028 000D 03A9 0436 | 01 0050C2FFFEDC2822")
F20 = h("D0EA83FC 0008 002A 036B 0A75 | FE80000000000000 0250C2FFFEDC2822 0E1A 0E1A 0010"
        "| 1081 0006 05FF01 028801 62 02 EA00 EB00")
F21 = h("D0F9EE5D 2008 000B 0347 009D | 01 00 1081000605")

# (name, frame, unique code, command, data)
GOLDEN = (
    ("F1", F1, j11.UC_REQUEST, 0x00D9, b""),
    ("F2", F2, j11.UC_RESPONSE, 0x6019, b""),
    ("F3", F3, j11.UC_REQUEST, 0x005F, h("05000400")),
    ("F4", F4, j11.UC_RESPONSE, 0x205F, h("01")),
    ("F7", F7, j11.UC_REQUEST, 0x0051, h("060003FFF0014343444445454646")),
    ("F8n", F8_NONE, j11.UC_RESPONSE, 0x4051, h("0104")),
    ("F8h", F8_HIT, j11.UC_RESPONSE, 0x4051, h("000C010050C2FFFEDC2822BCDEDE")),
    ("F13", F13, j11.UC_RESPONSE, 0x2053, h("010CBCDE0050C2FFFEDC2822DE")),
    ("F14", F14, j11.UC_REQUEST, 0x0005, h("0E1A")),
    ("F16", F16, j11.UC_REQUEST, 0x0056, b""),
    ("F18", F18, j11.UC_RESPONSE, 0x6028, h("010050C2FFFEDC2822")),
    ("F20", F20, j11.UC_REQUEST, 0x0008, F20[12:]),
    ("F21", F21, j11.UC_RESPONSE, 0x2008, h("01001081000605")),
)


class GoldenVectorTest(unittest.TestCase):
    def test_encode_matches_golden(self):
        for name, frame, uc, cmd, data in GOLDEN:
            with self.subTest(name=name):
                self.assertEqual(j11.encode(cmd, data, uc), frame)

    def test_encode_into_preallocated(self):
        buf = bytearray(j11.MAX_FRAME)
        for name, frame, uc, cmd, data in GOLDEN:
            with self.subTest(name=name):
                n = j11.encode_into(buf, cmd, data, uc)
                self.assertEqual(bytes(buf[:n]), frame)

    def test_decode_golden(self):
        for name, frame, uc, cmd, data in GOLDEN:
            with self.subTest(name=name):
                got_uc, got_cmd, got_data = j11.decode(frame)
                self.assertEqual(got_uc, uc)
                self.assertEqual(got_cmd, cmd)
                self.assertEqual(bytes(got_data), data)

    def test_checksums_f1(self):
        # D0+EA+83+FC+00+D9+00+04 = 0x0416
        self.assertEqual(j11.checksum(F1, 0, 8), 0x0416)
        self.assertEqual(j11.checksum(F20, 12, len(F20)), 0x0A75)

    def test_request_builders_match_golden(self):
        self.assertEqual(j11.init_request(5, 4), F3[12:])
        self.assertEqual(j11.scan_request(6, 0x0003FFF0, "CCDDEEFF"), F7[12:])
        buf = bytearray(j11.MAX_FRAME)
        payload = h("1081000605FF0102880162 02EA00EB00")
        n = j11.udp_tx_into(buf, j11.link_local_of_mac("0050C2FFFEDC2822"), 3610, 3610, payload)
        self.assertEqual(bytes(buf[:j11.finish_into(buf, 0x0008, n)]), F20)

    def test_link_local_flips_ul_bit(self):
        ip = j11.link_local_of_mac("0050C2FFFEDC2822")
        self.assertEqual(ip, h("FE800000000000000250C2FFFEDC2822"))
        self.assertEqual(j11.link_local_of_mac("021D129012345678")[8], 0x00)

    def test_decoders_on_golden(self):
        self.assertEqual(j11.decode_scan(F8_NONE[12:]), (4, []))
        ch, beacons = j11.decode_scan(F8_HIT[12:])
        self.assertEqual(ch, 12)
        self.assertEqual(beacons, [(h("0050C2FFFEDC2822"), 0xBCDE, 0xDE - 256)])
        self.assertEqual(j11.decode_pana(F18[12:]), (1, h("0050C2FFFEDC2822")))
        self.assertEqual(j11.decode_tx_result(F21[12:]), (1, 0, 0))
        self.assertEqual(j11.result_of(F4[12:]), 1)


class EncodeErrorTest(unittest.TestCase):
    def test_too_long(self):
        with self.assertRaises(j11.J11Error):
            j11.encode(0x0008, bytes(j11.MAX_DATA + 1))
        self.assertEqual(len(j11.encode(0x0008, bytes(j11.MAX_DATA))), j11.MAX_FRAME)

    def test_udp_payload_larger_than_the_frame_buffer_is_refused(self):
        buf = bytearray(j11.HEADER_LEN + j11.UDP_TX_FIXED + 100)
        self.assertEqual(j11.udp_tx_into(buf, bytes(16), 4059, 4059, bytes(100)), 122)
        with self.assertRaises(j11.J11Error):
            j11.udp_tx_into(buf, bytes(16), 4059, 4059, bytes(101))

    def test_buffer_too_small(self):
        with self.assertRaises(j11.J11Error):
            j11.encode_into(bytearray(20), 0x0008, bytes(9))

    def test_udp_payload_limit(self):
        buf = bytearray(j11.MAX_FRAME)
        ip = bytes(16)
        self.assertEqual(j11.udp_tx_into(buf, ip, 1, 2, bytes(1232)), 22 + 1232)
        with self.assertRaises(j11.J11Error):
            j11.udp_tx_into(buf, ip, 1, 2, bytes(1233))
        with self.assertRaises(j11.J11Error):
            j11.udp_tx_into(buf, bytes(15), 1, 2, b"x")

    def test_builders_reject_bad_parameters(self):
        for bad in ((0, 4), (3, 3), (3, 18), (4, 4)):
            with self.subTest(bad=bad):
                with self.assertRaises(j11.J11Error):
                    j11.init_request(*bad)
        with self.assertRaises(j11.J11Error):
            j11.scan_request(0)
        with self.assertRaises(j11.J11Error):
            j11.scan_request(15)
        with self.assertRaises(j11.J11Error):
            j11.scan_request(6, pairing_id="short")
        self.assertEqual(j11.scan_request(6)[5:], bytes(9))
        for bad in ("00112233", "zz1D129012345678", b"1234567"):
            with self.subTest(mac=bad):
                with self.assertRaises(j11.J11Error):
                    j11.mac_bytes(bad)

    def test_scan_timeout_grows_with_duration_and_channels(self):
        t6 = j11.scan_timeout_ms(6)
        self.assertEqual(t6, (964 * 64 // 100) * 14 * 3 // 2 + 2000)
        self.assertGreater(j11.scan_timeout_ms(7), t6)
        self.assertLess(j11.scan_timeout_ms(6, 0x10), t6)
        # d = 9 over 14 channels: about 69 s of dwell, about 104 s with the margin
        self.assertTrue(100000 < j11.scan_timeout_ms(9) < 110000)


class DecodeErrorTest(unittest.TestCase):
    def test_decode_rejects(self):
        cases = (
            ("short", F4[:11]),
            ("unique", b"\x00" + F4[1:]),
            ("hsum", F4[:9] + b"\x00" + F4[10:]),
            ("dsum", F4[:12] + b"\x02"),
            ("truncated", F20[:-1]),
            ("extra", F4 + b"\x00"),
        )
        for name, frame in cases:
            with self.subTest(name=name):
                with self.assertRaises(j11.J11Error):
                    j11.decode(frame)
        with self.assertRaises(j11.J11Error):
            j11.decode(F4, j11.UC_REQUEST)

    def test_bad_length_field(self):
        frame = bytearray(F2)
        frame[7] = 2  # length 2 < 4
        frame[8:10] = j11.checksum(frame, 0, 8).to_bytes(2, "big")
        with self.assertRaises(j11.J11Error):
            j11.decode(bytes(frame))

    def test_payload_decoders_reject_malformed(self):
        bad = (
            (j11.result_of, b""),
            (j11.decode_version, h("01 0001 01")),
            (j11.decode_tx_result, b""),
            (j11.decode_tx_result, b"\x01"),
            (j11.decode_scan, b"\x00"),
            (j11.decode_scan, b"\x07\x04"),
            (j11.decode_scan, b"\x00\x04"),
            (j11.decode_scan, h("00 0C 02 0050C2FFFEDC2822 BCDE DE")),
            (j11.decode_scan, h("00 0C 01 0050C2FFFEDC2822 BCDE")),
            (j11.decode_udp_rx, bytes(26)),
            (j11.decode_udp_rx, bytes(25) + b"\x00\x05" + b"abcd"),
            (j11.decode_connection, h("03 0050C2FFFEDC28")),
            (j11.decode_connection, h("09 0050C2FFFEDC2822 C0")),
            (j11.decode_pana, h("01 0050C2")),
            (j11.decode_rx_fail, bytes(20)),
        )
        for i, (fn, data) in enumerate(bad):
            with self.subTest(i=i):
                with self.assertRaises(j11.J11Error):
                    fn(data)

    def test_payload_decoders_good(self):
        self.assertEqual(j11.decode_version(h("01 0101 01 02 00000304")), (0x0101, 1, 2, 0x0304))
        self.assertEqual(j11.decode_tx_result(h("01 15")), (1, 1, 5))
        self.assertEqual(j11.decode_tx_result(h("04")), (4, 0, -1))
        self.assertEqual(j11.decode_connection(h("03 0050C2FFFEDC2822 C0")),
                         (3, h("0050C2FFFEDC2822"), -64))
        self.assertEqual(j11.decode_connection(h("01 0050C2FFFEDC2822")),
                         (1, h("0050C2FFFEDC2822"), None))
        ip = j11.link_local_of_mac("001D129012345678")
        data = ip + h("0FDB 0FDB 1234 00 02 C8 0003") + b"abc"
        src, sp, dp, pan, mc, enc, rssi, payload = j11.decode_udp_rx(data)
        self.assertEqual((bytes(src), sp, dp, pan, mc, enc, rssi, bytes(payload)),
                         (ip, 4059, 4059, 0x1234, False, True, -56, b"abc"))
        fail = j11.decode_rx_fail(b"\x20" + ip + h("07 01 ABCD"))
        self.assertEqual(fail, (0x20, ip, 7, 1, 0xABCD))


class _Sink:
    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)


class ReassemblerTest(unittest.TestCase):
    def setUp(self):
        self.sink = _Sink()
        log.set_sink(self.sink)

    def tearDown(self):
        log.set_sink(None)

    def drain(self, r):
        out = []
        while True:
            f = r.next_frame()
            if f is None:
                return out
            out.append((f[0], bytes(f[1])))

    def feed_all(self, r, data, now=0):
        out = []
        mv = memoryview(data)
        off = 0
        while off < len(data):
            off += r.feed(mv[off:], now)
            out.extend(self.drain(r))
        return out

    def test_single_and_back_to_back(self):
        r = j11.Reassembler()
        got = self.feed_all(r, F2 + F4 + F8_HIT + F18 + F21)
        self.assertEqual([c for c, _ in got], [0x6019, 0x205F, 0x4051, 0x6028, 0x2008])
        self.assertEqual(got[3][1], F18[12:])
        self.assertEqual(r.stats["frames"], 5)
        self.assertEqual(r.stats["dropped_bytes"], 0)
        self.assertEqual(self.sink.lines, [])

    def test_split_at_every_position(self):
        stream = F2 + F8_HIT + F21
        for cut in range(1, len(stream)):
            with self.subTest(cut=cut):
                r = j11.Reassembler()
                got = self.feed_all(r, stream[:cut]) + self.feed_all(r, stream[cut:])
                self.assertEqual([c for c, _ in got], [0x6019, 0x4051, 0x2008])
                self.assertEqual(got[2][1], F21[12:])

    def test_frame_longer_than_a_small_buffer_is_dropped_and_the_next_one_kept(self):
        big = j11.encode(0x6018, bytes(27) + bytes(300), unique=j11.UC_RESPONSE)
        r = j11.Reassembler(size=200)
        got = self.feed_all(r, big + F4)
        self.assertEqual([c for c, _ in got], [0x205F])
        self.assertEqual(r.stats["bad_length"], 1)
        self.assertTrue(any("bad message length" in line for line in self.sink.lines))
        # the same frame fits the default buffer
        r = j11.Reassembler()
        self.assertEqual([c for c, _ in self.feed_all(r, big + F4)], [0x6018, 0x205F])

    def test_byte_by_byte(self):
        r = j11.Reassembler()
        got = []
        for b in F18 + F4:
            got.extend(self.feed_all(r, bytes((b,))))
        self.assertEqual(got, [(0x6028, F18[12:]), (0x205F, b"\x01")])

    def test_garbage_between_frames_is_one_region_each(self):
        r = j11.Reassembler()
        got = self.feed_all(r, b"\x00\xffjunk" + F4 + b"\xd0\xf9\xee" + b"zz" + F21)
        self.assertEqual([c for c, _ in got], [0x205F, 0x2008])
        self.assertEqual(r.stats["dropped_bytes"], 6 + 5)
        self.assertEqual(r.stats["regions"], 2)
        self.assertEqual(len(self.sink.lines), 2)
        self.assertIn("6 bytes", self.sink.lines[0])
        self.assertIn("no unique code", self.sink.lines[0])

    def test_request_code_is_garbage_for_firmware_side(self):
        r = j11.Reassembler(j11.UC_RESPONSE)
        got = self.feed_all(r, F1 + F4)
        self.assertEqual(got, [(0x205F, b"\x01")])
        r2 = j11.Reassembler(j11.UC_REQUEST)
        self.assertEqual(self.feed_all(r2, F4 + F1), [(0x00D9, b"")])

    def test_bad_header_checksum_resyncs(self):
        bad = bytearray(F18)
        bad[9] ^= 0x40
        r = j11.Reassembler()
        got = self.feed_all(r, bytes(bad) + F4)
        self.assertEqual(got, [(0x205F, b"\x01")])
        self.assertEqual(r.stats["bad_header"], 1)
        self.assertEqual(r.stats["dropped_bytes"], len(F18))
        self.assertEqual(len(self.sink.lines), 1)
        self.assertIn("bad header checksum", self.sink.lines[0])

    def test_bad_data_checksum_resyncs(self):
        bad = bytearray(F21)
        bad[-1] ^= 1
        r = j11.Reassembler()
        got = self.feed_all(r, bytes(bad) + F2)
        self.assertEqual(got, [(0x6019, b"")])
        self.assertEqual(r.stats["bad_data"], 1)
        self.assertEqual(len(self.sink.lines), 1)
        self.assertIn("bad data checksum", self.sink.lines[0])

    def test_bad_length_resyncs(self):
        frame = bytearray(F2)
        frame[6:8] = b"\x07\x00"  # 1792 > 4 + 1349
        frame[8:10] = j11.checksum(frame, 0, 8).to_bytes(2, "big")
        r = j11.Reassembler()
        self.assertEqual(self.feed_all(r, bytes(frame) + F4), [(0x205F, b"\x01")])
        self.assertEqual(r.stats["bad_length"], 1)

    def test_truncated_frame_followed_by_good_frames(self):
        # A frame cut short is followed at once by good ones: the bogus long "frame" fails its
        # data checksum and every good frame is recovered from the same bytes.
        big = j11.encode(0x6018, bytes(100), j11.UC_RESPONSE)
        r = j11.Reassembler()
        got = self.feed_all(r, big[:30] + F18 + F4 + F2 + F21 + F18 * 3)
        self.assertEqual([c for c, _ in got],
                         [0x6028, 0x205F, 0x6019, 0x2008, 0x6028, 0x6028, 0x6028])
        self.assertEqual(r.stats["bad_data"], 1)
        self.assertEqual(r.stats["dropped_bytes"], 30)

    def test_stale_partial_frame_dropped_when_next_bytes_come_late(self):
        r = j11.Reassembler(j11.UC_RESPONSE)
        self.assertEqual(self.feed_all(r, F21[:15], now=100), [])
        self.assertEqual(r.pending(), 15)
        got = self.feed_all(r, F4, now=100 + j11.STALE_MS + 1)
        self.assertEqual(got, [(0x205F, b"\x01")])
        self.assertEqual(r.stats["truncated"], 1)
        self.assertIn("truncated frame", self.sink.lines[0])

    def test_max_frame_through_space_commit(self):
        frame = j11.encode(0x6018, bytes(range(256)) * 5 + bytes(69), j11.UC_RESPONSE)
        self.assertEqual(len(frame), j11.MAX_FRAME)
        r = j11.Reassembler()
        got = []
        for _ in range(3):
            off = 0
            while off < len(frame):
                sp = r.space()
                self.assertGreater(len(sp), 0)
                n = min(len(sp), len(frame) - off, 700)
                sp[0:n] = frame[off:off + n]
                r.commit(n)
                off += n
                got.extend(self.drain(r))
        self.assertEqual(len(got), 3)
        self.assertEqual(got[2][1], frame[12:])

    def test_long_garbage_reported_in_capped_pieces(self):
        r = j11.Reassembler()
        got = self.feed_all(r, b"\x55" * 5000 + F4)
        self.assertEqual(got, [(0x205F, b"\x01")])
        self.assertEqual(r.stats["dropped_bytes"], 5000)
        self.assertGreaterEqual(len(self.sink.lines), 3)
        self.assertLessEqual(len(self.sink.lines), 6)

    def test_seeded_random_chunks(self):
        # Small deterministic fuzz (the 100k-chunk one is in the integration tests).
        frames = (F2, F4, F8_HIT, F18, F21, F8_NONE)
        seed = 12345
        r = j11.Reassembler()
        sent = 0
        got = 0
        for _ in range(300):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            f = frames[seed % len(frames)]
            if seed & 0x100:
                f = b"\x00\xd0" + f  # garbage, including a unique-code prefix byte
            sent += 1
            cut = (seed >> 9) % len(f)
            got += len(self.feed_all(r, f[:cut]))
            got += len(self.feed_all(r, f[cut:]))
        self.assertEqual(got, sent)


if __name__ == "__main__":
    unittest.main()


class StaleFrameHidingGoodFramesTest(unittest.TestCase):
    def test_good_frame_behind_a_truncated_one_survives_the_stale_drop(self):
        # a 0x6018 whose tail was lost, then a complete 0x2008 transmit response, then (1.5 s
        # later) the next frame: the 0x2008 must still come out
        rx = j11.encode(0x6018, bytes(40), j11.UC_RESPONSE)
        tx = j11.encode(0x2008, b"\x01\x00", j11.UC_RESPONSE)
        nxt = j11.encode(0x601A, b"\x02" + bytes(8) + b"\xc8", j11.UC_RESPONSE)
        r = j11.Reassembler()
        got = []
        r.feed(rx[:30] + tx, now=0)
        while True:
            f = r.next_frame()
            if f is None:
                break
            got.append(f[0])
        self.assertEqual(got, [])  # the 0x2008 is hidden inside the claimed 0x6018 length
        r.feed(nxt, now=1500)
        while True:
            f = r.next_frame()
            if f is None:
                break
            got.append(f[0])
        self.assertEqual(got, [0x2008, 0x601A])
        self.assertEqual(r.stats["truncated"], 1)
