import unittest

from firmware.radio import skstack_codec as sk

SENDER = b"FE80:0000:0000:0000:021D:1290:0003:C890"
DEST = b"FE80:0000:0000:0000:021D:1290:0003:C891"
SENDER16 = bytes((0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x1D, 0x12, 0x90, 0x00, 0x03, 0xC8, 0x90))

# reference wisun-modules.md 4.4
EPANDESC = (b"EVENT 20 " + SENDER + b"\r\n"
            b"EPANDESC\r\n"
            b"  Channel:21\r\n"
            b"  Channel Page:09\r\n"
            b"  Pan ID:8888\r\n"
            b"  Addr:12345678ABCDEF01\r\n"
            b"  LQI:E1\r\n"
            b"  PairID:AABBCCDD\r\n"
            b"EVENT 22 " + SENDER + b"\r\n")
# reference 4.5: the instance-list INF (hex data) and the 1192 W answer
INF_HEX = b"108103610EF0010EF0017301D50401028801"
ERX_SINGLE_HEX = (b"ERXUDP " + SENDER + b" FF02:0000:0000:0000:0000:0000:0000:0001 0E1A 0E1A "
                  b"001D129000030C89 1 0012 " + INF_HEX + b"\r\n")
W1192 = bytes.fromhex("1081000102880105FF017201E704000004A8")


def erx_single_bin(data, secured=b"1"):
    return (b"ERXUDP " + SENDER + b" " + DEST + b" 0E1A 0E1A 001D129000030C89 " + secured
            + (" %04X " % len(data)).encode() + data + b"\r\n")


def erx_dse_bin(data, lqi=b"E1", side=b"0"):
    return (b"ERXUDP " + SENDER + b" " + DEST + b" 0E1A 0E1A 001D129000030C89 " + lqi + b" 1 "
            + side + (" %04X " % len(data)).encode() + data + b"\r\n")


class Collector:
    def __init__(self, max_udp=sk.MAX_UDP):
        self.lines = []
        self.udp = []
        self.errs = []
        self.erx = sk.Erxudp()
        self.r = sk.Reader(max_udp, line_cb=self.on_line, udp_cb=self.on_udp,
                           err_cb=self.errs.append)

    def on_line(self, r):
        self.lines.append(bytes(r.line[0:r.n]))

    def on_udp(self, r, n):
        ok = self.erx.parse(r)
        e = self.erx
        self.udp.append((ok, bytes(e.src), e.rport, e.lport, e.lqi, e.secured, e.side,
                         bytes(r.data(n))))

    def feed(self, data, step=0):
        if not step:
            self.r.feed(data)
            return
        for i in range(0, len(data), step):
            self.r.feed(data[i:i + step])


class HelpersTest(unittest.TestCase):
    def test_hex_and_ipv6(self):
        self.assertEqual(sk.hex_int(b"04D0", 0, 4), 0x4D0)
        self.assertEqual(sk.hex_int(b"0G", 0, 2), -1)
        self.assertEqual(sk.hex_int(b"", 0, 0), -1)
        out = bytearray(16)
        self.assertTrue(sk.ipv6_into(SENDER, 0, len(SENDER), out))
        self.assertEqual(bytes(out), SENDER16)
        self.assertEqual(sk.ipv6_text(SENDER16), SENDER)
        self.assertFalse(sk.ipv6_into(b"FE80::1", 0, 7, out))
        self.assertFalse(sk.ipv6_into(SENDER.replace(b":", b"-"), 0, 39, out))

    def test_lqi_to_rssi_integer(self):
        self.assertEqual(sk.lqi_to_rssi(0xE1), -42)  # reference: E1 -> -42.4 dBm
        self.assertEqual(sk.lqi_to_rssi(0xB2), -55)  # 0.275 x 178 - 104.27 = -55.32
        self.assertEqual(sk.lqi_to_rssi(0), -104)
        self.assertEqual(sk.lqi_to_rssi(255), -34)  # -34.145
        for rssi in (-100, -70, -52, -42, -35):
            self.assertEqual(sk.lqi_to_rssi(sk.rssi_to_lqi(rssi)), rssi)

    def test_put_hex(self):
        b = bytearray(6)
        self.assertEqual(sk.put_hex(b, 1, 0x4D0, 4), 5)
        self.assertEqual(bytes(b[1:5]), b"04D0")


class ReaderTest(unittest.TestCase):
    def test_epandesc_block(self):
        c = Collector()
        c.feed(EPANDESC)
        self.assertEqual(c.lines[2], b"  Channel:21")
        d = sk.PanDesc()
        r = c.r
        for line in c.lines[2:8]:
            r.line[0:len(line)] = line
            r.n = len(line)
            key, s, e = sk.kv(r)
            self.assertTrue(d.field(key, r.line, s, e), key)
        self.assertTrue(d.complete())
        self.assertEqual((d.channel, d.page, d.pan_id, d.lqi), (0x21, 9, 0x8888, 0xE1))
        self.assertEqual(d.mac, bytes.fromhex("12345678ABCDEF01"))
        self.assertEqual(d.pair_id, b"AABBCCDD")

    def test_event_with_and_without_side(self):
        ev = sk.Event()
        c = Collector()
        c.r.line_cb = lambda r: c.lines.append((ev.parse(r), ev.num, ev.side, ev.param))
        c.feed(b"EVENT 21 " + SENDER + b" 02\r\n"  # single-hop, ND sent
               b"EVENT 21 " + SENDER + b" 0 00\r\n"  # DSE: SIDE then PARAM
               b"EVENT 25 " + SENDER + b"\r\n"
               b"EVENT 29 " + SENDER + b" 1\r\n"  # DSE, no PARAM
               b"EVENT 21 " + SENDER + b" 0 123\r\n"  # bad
               b"EVENT XY " + SENDER + b"\r\n")  # bad
        self.assertEqual(c.lines, [(True, 0x21, -1, 2), (True, 0x21, 0, 0), (True, 0x25, -1, -1),
                                   (True, 0x29, 1, -1), (False, 0x21, 0, -1),
                                   (False, -1, -1, -1)])

    def test_erxudp_single_hop_hex_reference(self):
        c = Collector()
        c.feed(ERX_SINGLE_HEX)
        self.assertEqual(c.udp, [(True, SENDER16, 0x0E1A, 0x0E1A, -1, 1, -1,
                                  bytes.fromhex(INF_HEX.decode()))])
        self.assertEqual(c.lines, [])

    def test_erxudp_binary_with_crlf_inside(self):
        data = b"\r\n\r\nOK\r\nEVENT 21\r\n" + W1192 + b"\n"
        for step in (0, 1, 3, 7):
            c = Collector()
            c.feed(b"OK\r\n" + erx_single_bin(data) + b"EVENT 25 " + SENDER + b"\r\n", step)
            self.assertEqual(c.lines, [b"OK", b"EVENT 25 " + SENDER], step)
            self.assertEqual(c.udp[0][-1], data)
            self.assertTrue(c.udp[0][0])

    def test_erxudp_dse_with_sa2(self):
        c = Collector()
        c.feed(erx_dse_bin(W1192, side=b"1"), 5)
        ok, src, rport, lport, lqi, sec, side, data = c.udp[0]
        self.assertTrue(ok)
        self.assertEqual((lqi, sec, side, data), (0xE1, 1, 1, W1192))

    def test_erxudp_dse_hex(self):
        c = Collector()
        line = erx_dse_bin(W1192).replace(b"0012 " + W1192, b"0012 " + W1192.hex().encode())
        c.feed(line, 4)
        self.assertEqual(c.udp[0][-1], W1192)

    def test_erxudp_dse_without_sa2(self):
        c = Collector()
        c.feed(b"ERXUDP " + SENDER + b" " + DEST + b" 0E1A 0E1A 001D129000030C89 1 0 0003 abc\r\n")
        self.assertEqual(c.udp[0][4:], (-1, 1, 0, b"abc"))

    def test_empty_datagram(self):
        c = Collector()
        c.feed(erx_single_bin(b"") + b"OK\r\n")
        self.assertEqual(c.udp[0][-1], b"")
        self.assertEqual(c.lines, [b"OK"])


class MalformedTest(unittest.TestCase):
    def after(self, bad):
        """bad input, then a good line and datagram: both must come through."""
        c = Collector(max_udp=64)
        c.feed(bad + b"\r\nOK\r\n" + erx_single_bin(b"xy\r\n"), 3)
        self.assertEqual(c.lines[-1], b"OK")
        self.assertEqual(c.udp[-1][-1], b"xy\r\n")
        return c

    def test_overlong_line(self):
        c = self.after(b"A" * 1000)
        self.assertEqual(c.r.errors[sk.E_OVERLONG], 1)

    def test_datalen_beyond_buffer(self):
        c = self.after(erx_single_bin(b"Z" * 100)[:-2])
        self.assertEqual(c.r.errors[sk.E_TOO_LONG], 1)
        self.assertEqual(c.errs, [sk.E_TOO_LONG])

    def test_non_hex_datalen(self):
        c = self.after(b"ERXUDP " + SENDER + b" " + DEST
                       + b" 0E1A 0E1A 001D129000030C89 1 00G2 ab")
        self.assertEqual(c.r.errors[sk.E_GARBLED], 1)

    def test_no_datalen_token(self):
        c = self.after(b"ERXUDP a b c d e f g h i j k l m")
        self.assertEqual(c.r.errors[sk.E_GARBLED], 1)

    def test_data_not_followed_by_crlf(self):
        c = self.after(erx_single_bin(b"\x01\x02")[:-2] + b"\xffjunk")
        self.assertEqual(c.r.errors[sk.E_DATA], 1)

    def test_bad_hex_data(self):
        c = self.after(erx_single_bin(b"ABCD")[:-2].replace(b"0004 ABCD", b"0004 ABCDEFGZ"))
        self.assertEqual(c.r.errors[sk.E_DATA], 1)

    def test_hex_data_running_past_datalen(self):
        # hex text for b"0123" (itself hex digits) and 4 digits too many: an error, never the
        # datagram re-read as hex and delivered as b"\x01\x23\x34\x35"
        c = self.after(erx_single_bin(b"0123")[:-2].replace(b"0004 0123", b"0004 303132333435"))
        self.assertEqual(c.r.errors[sk.E_DATA], 1)
        self.assertEqual(len(c.udp), 1)  # only the good datagram after it

    def test_wrong_field_counts_and_garbled_header(self):
        c = Collector()
        c.feed(b"ERXUDP FE80:0000 " + DEST + b" 0E1A 0E1A 001D129000030C89 1 0002 ab\r\n")
        self.assertFalse(c.udp[0][0])  # delivered framed, but the header does not parse
        c.feed(b"ERXUDP " + SENDER + b" " + DEST + b" 0E1A 0E1A 001D1290 1 0002 ab\r\n")
        self.assertFalse(c.udp[1][0])
        ev = sk.Event()
        c.r.line_cb = lambda r: c.lines.append(ev.parse(r))
        c.feed(b"EVENT\r\nEVENT 21\r\nEVENT 21 a b c d e\r\n")
        self.assertEqual(c.lines, [False, True, False])

    def test_reset_recovers(self):
        c = Collector()
        c.feed(b"ERXUDP " + SENDER + b" " + DEST + b" 0E1A 0E1A 001D129000030C89 1 0100 ")
        c.r.reset()
        c.feed(b"OK\r\n")
        self.assertEqual(c.lines, [b"OK"])


class FuzzTest(unittest.TestCase):
    def test_seeded_mutations(self):
        """Random byte flips, cuts, insertions and split reads over the reference lines:
        nothing raises out of the reader or the line parsers, and it resyncs afterwards."""
        base = (EPANDESC + ERX_SINGLE_HEX + erx_single_bin(W1192 + b"\r\n") + erx_dse_bin(W1192)
                + b"EVENT 21 " + SENDER + b" 0 02\r\nOK 00\r\nFAIL ER04\r\nESREG 01\r\n")
        seed = 20261201
        ev = sk.Event()
        erx = sk.Erxudp()
        d = sk.PanDesc()
        counts = [0, 0]

        def on_line(r):
            counts[0] += 1
            ev.parse(r)
            f = sk.kv(r)
            if f is not None:
                d.field(f[0], r.line, f[1], f[2])

        def on_udp(r, n):
            counts[1] += 1
            erx.parse(r)

        r = sk.Reader(256, line_cb=on_line, udp_cb=on_udp)
        for _ in range(300):
            buf = bytes(base)
            for _ in range(1 + seed % 6):
                seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
                pos = seed % len(buf)
                op = (seed >> 8) % 4
                byte = bytes(((seed >> 12) & 0xFF,))
                if op == 0:  # flip a byte
                    buf = buf[:pos] + byte + buf[pos + 1:]
                elif op == 1:  # cut a piece
                    buf = buf[:pos] + buf[pos + (seed >> 12) % 40:]
                elif op == 2:  # insert a run
                    buf = buf[:pos] + byte * ((seed >> 20) % 9) + buf[pos:]
                else:  # a stray LF
                    buf = buf[:pos] + b"\n" + buf[pos + 1:]
            step = 1 + (seed >> 4) % 50
            for i in range(0, len(buf), step):
                r.feed(buf[i:i + step])
            r.feed(b"\r\n" + b"\x00" * 1300 + b"\r\n")  # end a pending data read, then resync
            before = counts[:]
            r.feed(b"OK\r\n" + erx_single_bin(b"ok"))
            self.assertEqual(counts, [before[0] + 1, before[1] + 1])
        self.assertGreater(sum(r.errors), 0)
