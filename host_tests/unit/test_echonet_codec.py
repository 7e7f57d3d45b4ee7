import binascii
import unittest

from firmware.meter import echonet
from firmware.meter.echonet import EchonetError


def h(text):
    return binascii.unhexlify(text.replace(" ", ""))


# Golden frames from docs reference echonet-lite.md (§1.5 discovery, §2.2 worked example).
ANNOUNCE = h("10 81 00 01 0E F0 01 0E F0 01 73 01 D5 04 01 05 FF 01")
SEARCH = h("10 81 00 02 05 FF 01 0E F0 01 62 01 D6 00")
SEARCH_REPLY = h("10 81 00 02 0E F0 01 05 FF 01 72 01 D6 04 01 02 8E 01")
FIXED_REQ = h("10 81 00 2A 05 FF 01 02 8E 01 62 02 E6 00 E7 00")
FIXED_RESP = h("10 81 00 2A 02 8E 01 05 FF 01 72 02"
               "E6 0B 07 E8 0A 0F 0A 1E 00 00 01 86 A0"
               "E7 0B 07 E8 0A 0F 0A 1E 00 FF FF FF FE")
SETC_DAY1 = h("10 81 00 2B 05 FF 01 02 8E 01 61 01 D5 02 00 01")
SET_RES_DAY = h("10 81 00 2B 02 8E 01 05 FF 01 71 01 D5 00")
GET_E1 = h("10 81 00 2C 05 FF 01 02 8E 01 62 01 E1 00")
# The 0x028E Get map of a real product (28 EPCs, bitmap form), composed by hand.
NICHICON_EPCS = [0x80, 0x81, 0x82, 0x83, 0x86, 0x88, 0x8A, 0x8C, 0x8D, 0x97, 0x98, 0x9D, 0x9E,
                 0x9F, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xDA, 0xDB, 0xE0, 0xE1, 0xE2, 0xE3,
                 0xE6, 0xE7]
NICHICON_MAP = h("1C 61 61 61 61 20 20 41 42 03 00 21 20 01 03 02 02")


class DecodeGoldenTest(unittest.TestCase):
    def test_announcement(self):
        f = echonet.decode(ANNOUNCE)
        self.assertEqual((f.tid, f.seoj, f.deoj, f.esv), (1, 0x0EF001, 0x0EF001, echonet.INF))
        self.assertEqual(f.epcs(), [0xD5])
        self.assertEqual(bytes(f.edt(0xD5)), h("01 05 FF 01"))

    def test_search_and_reply(self):
        f = echonet.decode(SEARCH)
        self.assertEqual((f.seoj, f.deoj, f.esv), (0x05FF01, 0x0EF001, echonet.GET))
        self.assertEqual(len(f.edt(0xD6)), 0)
        r = echonet.decode(SEARCH_REPLY)
        self.assertEqual((r.tid, r.seoj, r.deoj, r.esv), (2, 0x0EF001, 0x05FF01, 0x72))
        self.assertEqual(bytes(r.edt(0xD6)), h("01 02 8E 01"))

    def test_worked_example(self):
        f = echonet.decode(FIXED_RESP)
        self.assertEqual(f.tid, 0x2A)
        self.assertEqual(f.epcs(), [0xE6, 0xE7])
        self.assertEqual(bytes(f.edt(0xE6)), h("07 E8 0A 0F 0A 1E 00 00 01 86 A0"))
        self.assertEqual(bytes(f.edt(0xE7)), h("07 E8 0A 0F 0A 1E 00 FF FF FF FE"))
        self.assertIsNone(f.edt(0xE0))

    def test_decode_with_length_in_larger_buffer(self):
        buf = bytearray(64)
        buf[:len(SET_RES_DAY)] = SET_RES_DAY
        f = echonet.decode(buf, len(SET_RES_DAY))
        self.assertEqual((f.esv, f.epcs(), len(f.edt(0xD5))), (echonet.SET_RES, [0xD5], 0))

    def test_setget(self):
        raw = h("10 81 00 05 05 FF 01 02 8E 01 6E 01 D5 02 00 01 02 E1 00 E3 00")
        f = echonet.decode(raw)
        self.assertEqual(f.esv, echonet.SETGET)
        self.assertEqual([(e, bytes(d)) for e, d in f.props], [(0xD5, b"\x00\x01")])
        self.assertEqual([e for e, _ in f.get_props], [0xE1, 0xE3])
        buf = bytearray(64)
        n = echonet.encode_into(buf, 5, 0x05FF01, 0x028E01, echonet.SETGET,
                                [(0xD5, b"\x00\x01")], [(0xE1, None), (0xE3, None)])
        self.assertEqual(bytes(buf[:n]), raw)


class EncodeGoldenTest(unittest.TestCase):
    def setUp(self):
        self.buf = bytearray(256)

    def out(self, n):
        return bytes(self.buf[:n])

    def test_get_fixed_time(self):
        n = echonet.encode_get(self.buf, 0x2A, 0x05FF01, 0x028E01, (0xE6, 0xE7))
        self.assertEqual(self.out(n), FIXED_REQ)

    def test_get_res(self):
        n = echonet.encode_into(self.buf, 0x2A, 0x028E01, 0x05FF01, echonet.GET_RES, [
            (0xE6, h("07 E8 0A 0F 0A 1E 00 00 01 86 A0")),
            (0xE7, h("07 E8 0A 0F 0A 1E 00 FF FF FF FE"))])
        self.assertEqual(self.out(n), FIXED_RESP)

    def test_backfill_setc_and_get(self):
        n = echonet.encode_into(self.buf, 0x2B, 0x05FF01, 0x028E01, echonet.SETC,
                                [(0xD5, b"\x00\x01")])
        self.assertEqual(self.out(n), SETC_DAY1)
        n = echonet.encode_into(self.buf, 0x2B, 0x028E01, 0x05FF01, echonet.SET_RES,
                                [(0xD5, None)])
        self.assertEqual(self.out(n), SET_RES_DAY)
        n = echonet.encode_get(self.buf, 0x2C, 0x05FF01, 0x028E01, (0xE1,))
        self.assertEqual(self.out(n), GET_E1)

    def test_history_get_res_pdc_194(self):
        edt = b"\x00\x01" + b"\xff\xff\xff\xfe" * 48
        n = echonet.encode_into(self.buf, 0x2C, 0x028E01, 0x05FF01, echonet.GET_RES,
                                [(0xE1, edt)])
        self.assertEqual(self.out(n)[10:14], h("72 01 E1 C2"))
        self.assertEqual(n, 12 + 2 + 194)
        self.assertEqual(bytes(echonet.decode(self.buf, n).edt(0xE1)), edt)

    def test_discovery_frames(self):
        n = echonet.encode_into(self.buf, 1, 0x0EF001, 0x0EF001, echonet.INF,
                                [(0xD5, h("01 05 FF 01"))])
        self.assertEqual(self.out(n), ANNOUNCE)
        n = echonet.encode_get(self.buf, 2, 0x05FF01, 0x0EF001, (0xD6,))
        self.assertEqual(self.out(n), SEARCH)

    def test_get_sna_pdc0(self):
        n = echonet.encode_into(self.buf, 7, 0x028E01, 0x05FF01, echonet.GET_SNA,
                                [(0xD4, b"\x01"), (0xE6, None)])
        self.assertEqual(self.out(n), h("10 81 00 07 02 8E 01 05 FF 01 52 02 D4 01 01 E6 00"))

    def test_tid_masked_to_16_bits(self):
        n = echonet.encode_get(self.buf, 0x1FFFF, 0x05FF01, 0x028E01, (0x80,))
        self.assertEqual(echonet.decode(self.buf, n).tid, 0xFFFF)

    def test_encode_errors(self):
        with self.assertRaises(EchonetError):
            echonet.encode_into(self.buf, 1, 1, 1, echonet.GET, [])
        with self.assertRaises(EchonetError):
            echonet.encode_into(self.buf, 1, 1, 1, echonet.GET_RES, [(0x80, bytes(256))])
        with self.assertRaises(EchonetError):
            echonet.encode_into(bytearray(20), 1, 1, 1, echonet.GET_RES, [(0x80, bytes(10))])
        with self.assertRaises(EchonetError):
            echonet.encode_get(self.buf, 1, 1, 1, list(range(256)))


class MalformedTest(unittest.TestCase):
    def check(self, raw, words):
        with self.assertRaises(EchonetError) as cm:
            echonet.decode(raw)
        msg = str(cm.exception)
        for w in words:
            self.assertIn(w, msg)

    def test_short(self):
        self.check(b"", ["too short"])
        self.check(FIXED_REQ[:11], ["too short", "11"])

    def test_ehd1(self):
        self.check(b"\x11" + FIXED_REQ[1:], ["EHD1 0x11"])

    def test_ehd2_format2_rejected(self):
        self.check(FIXED_REQ[:1] + b"\x82" + FIXED_REQ[2:], ["EHD2 0x82"])

    def test_opc_zero(self):
        self.check(FIXED_REQ[:11] + b"\x00", ["OPC 0"])

    def test_unknown_esv(self):
        self.check(FIXED_REQ[:10] + b"\x99" + FIXED_REQ[11:], ["ESV 0x99"])

    def test_pdc_overrun(self):
        self.check(FIXED_RESP[:-1], ["EPC 0xE7", "overruns"])
        self.check(FIXED_REQ[:-1], ["ends at EPC/PDC"])

    def test_opc_larger_than_props(self):
        self.check(FIXED_REQ[:11] + b"\x03" + FIXED_REQ[12:], ["property 3 of 3"])

    def test_trailing(self):
        self.check(FIXED_REQ + b"\x00", ["1 trailing"])
        self.check(FIXED_RESP + b"\x01\x02", ["2 trailing"])

    def test_setget_errors(self):
        self.check(h("10 81 00 05 05 FF 01 02 8E 01 6E 01 D5 02 00 01"), ["OPCGet"])
        self.check(h("10 81 00 05 05 FF 01 02 8E 01 6E 00 00"), ["OPCSet = OPCGet = 0"])

    def test_errors_are_value_errors(self):
        self.assertTrue(issubclass(EchonetError, ValueError))


class PropMapTest(unittest.TestCase):
    def test_list_form(self):
        self.assertEqual(echonet.decode_propmap(h("02 D5 80")), [0x80, 0xD5])
        self.assertEqual(echonet.encode_propmap([0xD5, 0x80]), h("02 80 D5"))
        self.assertEqual(echonet.encode_propmap(()), h("00"))
        self.assertEqual(echonet.decode_propmap(h("00")), [])

    def test_bitmap_form(self):
        self.assertEqual(echonet.decode_propmap(NICHICON_MAP), NICHICON_EPCS)
        self.assertEqual(echonet.encode_propmap(NICHICON_EPCS), NICHICON_MAP)

    def test_boundary_16_uses_bitmap(self):
        epcs = list(range(0x80, 0x90))
        m = echonet.encode_propmap(epcs)
        self.assertEqual(len(m), 17)
        self.assertEqual(m, h("10") + b"\x01" * 16)
        self.assertEqual(echonet.decode_propmap(m), epcs)
        m15 = echonet.encode_propmap(epcs[:15])
        self.assertEqual(len(m15), 16)
        self.assertEqual(echonet.decode_propmap(m15), epcs[:15])

    def test_all_epcs_round_trip(self):
        epcs = list(range(0x80, 0x100))
        m = echonet.encode_propmap(epcs)
        self.assertEqual(m, b"\x80" + b"\xff" * 16)
        self.assertEqual(echonet.decode_propmap(m), epcs)

    def test_malformed(self):
        for bad in (b"", h("03 80 81"), h("01 80 81"), h("02 80 80"), h("01 10"),
                    h("10") + b"\x01" * 15, h("11") + b"\x01" * 16, h("1C") + bytes(16)):
            with self.subTest(bad=bad):
                with self.assertRaises(EchonetError):
                    echonet.decode_propmap(bad)
        with self.assertRaises(EchonetError):
            echonet.encode_propmap([0x10])


class EojTest(unittest.TestCase):
    def test_instance_zero_matches_class(self):
        self.assertTrue(echonet.eoj_matches(0x0EF000, 0x0EF001))
        self.assertTrue(echonet.eoj_matches(0x05FF01, 0x05FF01))
        self.assertFalse(echonet.eoj_matches(0x05FF02, 0x05FF01))
        self.assertFalse(echonet.eoj_matches(0x028E00, 0x05FF01))
        self.assertTrue(echonet.is_request(echonet.GET))
        self.assertFalse(echonet.is_request(echonet.GET_RES))


class EveryEsvTest(unittest.TestCase):
    """Each of the 16 ESVs of Part 2 §3.2.5 round-trips byte for byte; the SetGet family
    carries two OPC counts, everything else one."""

    ONE_OPC = (echonet.SETI, echonet.SETC, echonet.GET, echonet.INF_REQ, echonet.SET_RES,
               echonet.GET_RES, echonet.INF, echonet.INFC, echonet.INFC_RES, echonet.SETI_SNA,
               echonet.SETC_SNA, echonet.GET_SNA, echonet.INF_SNA)
    TWO_OPC = (echonet.SETGET, echonet.SETGET_RES, echonet.SETGET_SNA)

    def test_codes(self):
        self.assertEqual(sorted(self.ONE_OPC + self.TWO_OPC),
                         [0x50, 0x51, 0x52, 0x53, 0x5E, 0x60, 0x61, 0x62, 0x63, 0x6E, 0x71,
                          0x72, 0x73, 0x74, 0x7A, 0x7E])

    def test_one_opc_round_trip_with_several_properties(self):
        buf = bytearray(64)
        for esv in self.ONE_OPC:
            with self.subTest(esv=esv):
                n = echonet.encode_into(buf, 0x0102, 0x028E01, 0x05FF01, esv,
                                        [(0x80, b"\x30"), (0xE0, None), (0xD5, b"\x00\x01")])
                want = h("10 81 01 02 02 8E 01 05 FF 01") + bytes((esv,)) + h(
                    "03 80 01 30 E0 00 D5 02 00 01")
                self.assertEqual(bytes(buf[:n]), want)
                f = echonet.decode(buf, n)
                self.assertEqual((f.esv, f.epcs(), f.get_props), (esv, [0x80, 0xE0, 0xD5], None))

    def test_two_opc_round_trip(self):
        buf = bytearray(64)
        for esv in self.TWO_OPC:
            with self.subTest(esv=esv):
                n = echonet.encode_into(buf, 5, 0x05FF01, 0x028E01, esv, [(0xD5, b"\x00\x01")],
                                        [(0xE1, None), (0xE3, None)])
                want = (h("10 81 00 05 05 FF 01 02 8E 01") + bytes((esv,))
                        + h("01 D5 02 00 01 02 E1 00 E3 00"))
                self.assertEqual(bytes(buf[:n]), want)
                f = echonet.decode(buf, n)
                self.assertEqual(([e for e, _ in f.props], [e for e, _ in f.get_props]),
                                 ([0xD5], [0xE1, 0xE3]))
        # OPCSet 0 with a Get part is valid; a Get part that overruns is not
        f = echonet.decode(h("10 81 00 05 05 FF 01 02 8E 01 6E 00 01 E1 00"))
        self.assertEqual((f.props, [e for e, _ in f.get_props]), ([], [0xE1]))
        with self.assertRaises(EchonetError):
            echonet.decode(h("10 81 00 05 05 FF 01 02 8E 01 6E 00 02 E1 00"))

    def test_infc_res_form(self):
        # INFC_Res: same TID, SEOJ/DEOJ swapped, EPCs listed with PDC 0
        infc = echonet.decode(h("10 81 00 09 02 8E 01 05 FF 01 74 01 80 01 30"))
        buf = bytearray(32)
        n = echonet.encode_into(buf, infc.tid, infc.deoj, infc.seoj, echonet.INFC_RES,
                                [(e, None) for e in infc.epcs()])
        self.assertEqual(bytes(buf[:n]), h("10 81 00 09 05 FF 01 02 8E 01 7A 01 80 00"))


class FrameEndTest(unittest.TestCase):
    """echonet.frame_end: frames read back to back into one buffer are split by their own
    structure (MicroPython's readinto on a socket joins queued datagrams)."""

    GET_RES = bytes.fromhex("1081000102 8E01 05FF01 72 02 E7 04 00000001 E6 00".replace(" ", ""))
    SETGET = bytes.fromhex("1081000205FF01028E016E01E50100 01E200".replace(" ", ""))

    def test_back_to_back_frames_split(self):
        buf = bytearray(self.GET_RES + self.SETGET + self.GET_RES)
        n = len(buf)
        a = echonet.frame_end(buf, 0, n)
        b = echonet.frame_end(buf, a, n)
        c = echonet.frame_end(buf, b, n)
        self.assertEqual((a, b, c), (len(self.GET_RES), len(self.GET_RES) + len(self.SETGET), n))
        self.assertEqual(echonet.decode(memoryview(buf)[a:b], b - a).esv, 0x6E)
        self.assertEqual(echonet.decode(memoryview(buf)[b:c], c - b).props[0][0], 0xE7)

    def test_cut_or_foreign_data_runs_to_the_end(self):
        cut = self.GET_RES[:-3]
        self.assertEqual(echonet.frame_end(cut, 0, len(cut)), len(cut))  # decode() says why
        junk = b"\x00" * 20
        self.assertEqual(echonet.frame_end(junk, 0, 20), 20)
        self.assertEqual(echonet.frame_end(self.GET_RES, 0, 5), 5)
