import unittest

from firmware.cosem import acse

H = bytes.fromhex
AARQ_PUBLIC = H("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
AARQ_LLS = H(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400007E1F04B0"
)
AARQ_HLS = H(
    "6036A1090607608574050801018A0207808B0760857405080205AC0A80084B35366956616759"
    "BE10040E01000000065F1F0400007E1F04B0"
)
AARQ_CIPHERED_LLS = H(
    "6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B0760857405080201AC0A80083132"
    "333435363738BE34043221303001234567801302FF8A7874133D414CED25B42534D28DB0047720606B175BD5"
    "2211BE6841DB204D39EE6FDB8E356855"
)


class AarqTest(unittest.TestCase):
    def test_public(self):
        q = acse.parse_aarq(memoryview(AARQ_PUBLIC))
        self.assertEqual(q.context, acse.CONTEXT_LN)
        self.assertIsNone(q.mechanism)
        self.assertFalse(q.auth_required)
        i = acse.parse_initiate_request(q.user_info)
        self.assertEqual((i.version, i.conformance, i.max_pdu), (6, 0x007E1F, 1200))
        self.assertIsNone(i.dedicated_key)

    def test_lls(self):
        q = acse.parse_aarq(memoryview(AARQ_LLS))
        self.assertTrue(q.auth_required)
        self.assertEqual(q.mechanism, acse.MECH_LLS)
        self.assertEqual(q.auth_value, b"12345678")

    def test_hls_mechanism_seen(self):
        q = acse.parse_aarq(memoryview(AARQ_HLS))
        self.assertEqual(q.mechanism, 5)
        self.assertEqual(q.auth_value, b"K56iVagY")

    def test_ciphered(self):
        q = acse.parse_aarq(memoryview(AARQ_CIPHERED_LLS))
        self.assertEqual(q.context, acse.CONTEXT_LN_CIPHERED)
        self.assertEqual(q.calling_title, H("04084D4D4D0000BC614E"))
        self.assertEqual(q.user_info[0], acse.GLO_INITIATE_REQUEST)

    def test_unknown_tags_ignored(self):
        # dlms-cosem style: calling-AP-title present without ciphering, plus an unknown A7 tag
        body = H("A109060760857405080101") + H("A60A0408757469000102030A") + H("A703020100")
        body += H("BE10040E01000000065F1F040020525F0400")
        q = acse.parse_aarq(memoryview(bytes((0x60, len(body))) + body))
        self.assertEqual(q.context, 1)
        self.assertEqual(acse.parse_initiate_request(q.user_info).conformance, 0x20525F)

    def test_dedicated_key_and_flags(self):
        i = acse.parse_initiate_request(
            H("01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0")
        )
        self.assertEqual(i.dedicated_key, H("00112233445566778899AABBCCDDEEFF"))
        i = acse.parse_initiate_request(H("0100010001000" + "5" + "5F1F0400001E1D0100"))
        self.assertEqual((i.version, i.conformance, i.max_pdu), (5, 0x1E1D, 256))

    def test_malformed(self):
        bad = [
            b"",
            H("60"),
            H("6103A10100"),  # not an AARQ
            AARQ_PUBLIC[:-1],  # length mismatch
            H("6005A103060100"),  # context too short
            H("6009A10706056085740508"),  # context with a short OID
            H("6002BF01"),  # multi-byte tag
            H("6004A185FFFF"),  # 5-byte BER length
            H("6006BE04040501"),  # user-info overrun
            H("6000"),  # no context at all
        ]
        for b in bad:
            with self.assertRaises(acse.AcseError):
                acse.parse_aarq(memoryview(b))
        for ui in (b"", H("08"), H("0100"), H("01000000065F1F0400007E1F04"), H("0101")):
            with self.assertRaises(acse.AcseError):
                acse.parse_initiate_request(ui)


class AareTest(unittest.TestCase):
    def test_accepted_golden(self):
        ui = acse.initiate_response(0x00501F, 0x01F4)
        self.assertEqual(ui, H("0800065F1F040000501F01F40007"))
        self.assertEqual(
            acse.build_aare(0, 0, user_info=ui),
            H(
                "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007"
            ),
        )

    def test_rejected_golden(self):
        ui = acse.initiate_response(0x00501F, 0x01F4)
        self.assertEqual(
            acse.build_aare(1, acse.DIAG_CONTEXT_NOT_SUPPORTED, user_info=ui),
            H(
                "6129A109060760857405080101A203020101A305A103020102BE10040E0800065F1F040000501F01F40007"
            ),
        )
        self.assertEqual(
            acse.build_aare(1, 1, user_info=acse.initiate_error(acse.INIT_ERR_VERSION_TOO_LOW)),
            H("611FA109060760857405080101A203020101A305A103020101BE0604040E010601"),
        )

    def test_lls_accepted_carries_mechanism(self):
        b = acse.build_aare(0, 0, mechanism=1, user_info=acse.initiate_response(0x121D, 512))
        self.assertIn(H("880207808907608574050802" + "01"), b)


class ReleaseTest(unittest.TestCase):
    def test_rlrq_plain_and_with_user_info(self):
        self.assertEqual(acse.parse_rlrq(memoryview(H("6203800100"))), (0, None))
        reason, ui = acse.parse_rlrq(
            memoryview(H("6215800100BE10040E01000000065F1F0400007E1F04B0"))
        )
        self.assertEqual(reason, 0)
        self.assertEqual(ui, H("01000000065F1F0400007E1F04B0"))
        with self.assertRaises(acse.AcseError):
            acse.parse_rlrq(memoryview(H("620380010000")))

    def test_rlre_golden(self):
        self.assertEqual(acse.build_rlre(), H("6303800100"))
        self.assertEqual(
            acse.build_rlre(acse.initiate_response(0x1E1D, 0x04C8)),
            # the reference vector 6316...be11040f0801000006... carries negotiated-QoS present
            # (01 00); like the AARE vectors we omit the optional field
            H("6315800100be10040e0800065f1f0400001e1d04c80007"),
        )
