import struct
import unittest

from cosem_fakes import (
    AARQ_LLS,
    AARQ_PUBLIC,
    SLOT0,
    ListView,
    aarq_with_pdu,
    make_rows,
    make_server,
    wpdu,
)

from firmware import log, timeutil
from firmware.cosem import axdr
from firmware.cosem.objects import ROLE_MGMT, ROLE_PUBLIC

H = bytes.fromhex
GET_CLOCK = H("c001c100080000010000ff0200")
GET_PROFILE = H("c001c100070100630100ff0200")
AARE_PUBLIC = H(
    "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000121D02000007"
)


def get_next(block, invoke=0xC1):
    return bytes((0xC0, 0x02, invoke)) + struct.pack(">I", block)


def get_all(srv, req, sap=16, pdu=None):
    """Raw attribute data of a GET, following block transfer; also returns the block count."""
    r = srv.handle_apdu(req, sap)
    if r[1] == 1:
        assert r[3] == 0, r
        return r[4:], 0
    data = bytearray()
    blocks = 0
    while True:
        assert r[:2] == H("c402"), r
        if pdu is not None:
            assert len(r) <= pdu, (len(r), pdu)
        last = r[3]
        n = struct.unpack(">I", r[4:8])[0]
        assert r[8] == 0, r
        rd = axdr.Reader(r, 9)
        ln = rd.length()
        assert rd.pos + ln == len(r)
        data += r[rd.pos :]
        blocks += 1
        assert n == blocks
        if last:
            return bytes(data), blocks
        r = srv.handle_apdu(get_next(n), sap)


class Base(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.srv, self.clock, self.view = make_server()

    def tearDown(self):
        log.set_sink(None)

    def assoc(self, aarq=AARQ_PUBLIC, sap=16):
        r = self.srv.handle_apdu(aarq, sap)
        self.assertEqual(r[:2], H("6129") if aarq is AARQ_PUBLIC else r[:2])
        self.assertIsNotNone(self.srv.association(sap))
        return r


class AssociationTest(Base):
    def test_public_golden(self):
        self.assertEqual(self.srv.handle_apdu(AARQ_PUBLIC, 16), AARE_PUBLIC)
        a = self.srv.association(16)
        self.assertEqual((a.conformance, a.client_pdu, a.role), (0x121D, 512, ROLE_PUBLIC))

    def test_client_pdu_honoured(self):
        self.srv.handle_apdu(aarq_with_pdu(200), 16)
        self.assertEqual(self.srv.association(16).client_pdu, 200)

    def test_push_conformance(self):
        srv, _, _ = make_server(config={"push": True})
        aarq = bytearray(AARQ_PUBLIC)
        aarq[-5:-2] = H("00FFFF")
        r = srv.handle_apdu(bytes(aarq), 16)
        self.assertIn(H("5F1F040000129D"), r)

    def test_lls(self):
        r = self.srv.handle_apdu(AARQ_LLS, 1)
        self.assertIn(H("A203020100"), r)
        self.assertIn(H("8907608574050802" + "01"), r)
        self.assertEqual(self.srv.association(1).role, ROLE_MGMT)

    def test_bad_password(self):
        bad = AARQ_LLS.replace(b"12345678", b"12345679")
        r = self.srv.handle_apdu(bad, 1)
        self.assertIn(H("A203020101A305A10302010D"), r)
        self.assertIsNone(self.srv.association(1))
        for line in self.lines:
            self.assertNotIn("12345678", line)
            self.assertNotIn("12345679", line)

    def test_mgmt_without_auth_and_public_with_lls(self):
        r = self.srv.handle_apdu(AARQ_PUBLIC, 1)
        self.assertIn(H("A305A10302010C"), r)  # mechanism-required
        r = self.srv.handle_apdu(AARQ_LLS, 16)
        self.assertIn(H("A305A10302010B"), r)  # mechanism-not-recognised
        hls = AARQ_LLS.replace(H("0760857405080201"), H("0760857405080205"))
        r = self.srv.handle_apdu(hls, 1)
        self.assertIn(H("A305A10302010B"), r)

    def test_mgmt_disabled_without_password(self):
        srv, _, _ = make_server(config={"mgmt_password": ""})
        r = srv.handle_apdu(AARQ_LLS, 1)
        self.assertIn(H("A203020101"), r)
        self.assertIsNone(srv.association(1))

    def test_unknown_client_rejected(self):
        r = self.srv.handle_apdu(AARQ_PUBLIC, 18)
        self.assertIn(H("A203020101"), r)

    def test_ciphered_context_rejected(self):
        aarq = H(
            "6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B0760857405080201AC0A8008"
            "3132333435363738BE34043221303001234567801302FF8A7874133D414CED25B42534D28DB004772060"
            "6B175BD52211BE6841DB204D39EE6FDB8E356855"
        )
        r = self.srv.handle_apdu(aarq, 1)
        self.assertEqual(r, H("6117A109060760857405080103A203020101A305A103020102"))

    def test_version_too_low(self):
        aarq = AARQ_PUBLIC.replace(H("065F1F"), H("055F1F"))
        r = self.srv.handle_apdu(aarq, 16)
        self.assertEqual(
            r, H("611FA109060760857405080101A203020101A305A103020101BE0604040E010601")
        )

    def test_pdu_too_short_and_incompatible(self):
        r = self.srv.handle_apdu(aarq_with_pdu(32), 16)
        self.assertTrue(r.endswith(H("0E010603")))
        aarq = AARQ_PUBLIC.replace(H("00007E1F"), H("00000000"))
        r = self.srv.handle_apdu(aarq, 16)
        self.assertTrue(r.endswith(H("0E010602")))

    def test_malformed_aarq(self):
        for b in (AARQ_PUBLIC[:-3], H("6000"), H("6003A10100")):
            r = self.srv.handle_apdu(b, 16)
            self.assertEqual(r[0], 0x61)
            self.assertIn(H("A203020101"), r)
        self.assertIsNone(self.srv.association(16))

    def test_release(self):
        self.assoc()
        self.assertEqual(self.srv.handle_apdu(H("6203800100"), 16), H("6303800100"))
        self.assertIsNone(self.srv.association(16))
        self.assertEqual(self.srv.handle_apdu(GET_CLOCK, 16), H("d80101"))
        self.assoc()
        r = self.srv.handle_apdu(H("6215800100BE10040E01000000065F1F0400007E1F04B0"), 16)
        self.assertEqual(r, H("6315800100BE10040E0800065F1F040000121D02000007"))


class GetTest(Base):
    def test_before_aarq(self):
        self.assertEqual(self.srv.handle_apdu(GET_CLOCK, 16), H("d80101"))

    def test_clock(self):
        self.assoc()
        # T0 + 1 h = 2024-04-01T01:00Z = 10:00 JST Monday
        self.assertEqual(
            self.srv.handle_apdu(GET_CLOCK, 16), H("c401c100090c07e80401010a000000fde400")
        )
        attrs = {
            3: "c401c10010fde4",
            4: "c401c1001100",
            7: "c401c1000f00",
            8: "c401c1000300",
            9: "c401c1001601",
            1: "c401c100090600000100" + "00ff",
        }
        for a, want in attrs.items():
            req = H("c001c100080000010000ff") + bytes((a, 0))
            self.assertEqual(self.srv.handle_apdu(req, 16), H(want))

    def test_clock_unset(self):
        self.clock.t = None
        self.assoc()
        r = self.srv.handle_apdu(GET_CLOCK, 16)
        self.assertEqual(r, H("c401c100090cffffffffffffffffff800001"))
        r = self.srv.handle_apdu(H("c001c100080000010000ff0400"), 16)
        self.assertEqual(r, H("c401c1001101"))

    def test_registers(self):
        self.assoc()
        fwd, rev = self.view.latest()[1:3]
        r = self.srv.handle_apdu(H("c001c100030100010800ff0200"), 16)
        self.assertEqual(r, H("c401c10006") + struct.pack(">I", fwd))
        r = self.srv.handle_apdu(H("c001c100030100020800ff0200"), 16)
        self.assertEqual(r, H("c401c10006") + struct.pack(">I", rev))
        r = self.srv.handle_apdu(H("c001c100030100010800ff0300"), 16)
        self.assertEqual(r, H("c401c10002020f02161e"))

    def test_scaler_is_the_configured_one_whatever_the_unit(self):
        # the table serves 10^2 Wh (RAW_TABLE): a record in another unit is converted to it,
        # one that cannot be is not served (test_cosem_values has the whole matrix)
        fwd = self.view.latest()[1]
        for unit, want in ((0x00, fwd * 10), (0x01, fwd), (0x0A, fwd * 100)):
            self.view.unit_code = unit
            self.assoc()
            r = self.srv.handle_apdu(H("c001c100030100010800ff0300"), 16)
            self.assertEqual(r, H("c401c10002020f02161e"))
            r = self.srv.handle_apdu(H("c001c100030100010800ff0200"), 16)
            self.assertEqual(r, H("c401c10006") + struct.pack(">I", want), unit)
        for unit in (None, 0x05, 0x03):  # unknown codes; 0x03 (Wh) has a fraction of 0.1 kWh
            self.view.unit_code = unit
            r = self.srv.handle_apdu(H("c001c100030100010800ff0200"), 16)
            self.assertEqual(r, H("c401c101fa"), unit)

    def test_large_counter_exact(self):
        self.view._rows.append((SLOT0 + 100, 0xFFFFFFFF, 0x80000000, 0))
        self.assoc()
        r = self.srv.handle_apdu(H("c001c100030100010800ff0200"), 16)
        self.assertEqual(r, H("c401c10006ffffffff"))

    def test_with_list(self):
        self.assoc()
        req = H("c003c10300030100010800ff020000030100020800ff020000080000010000ff0200")
        fwd, rev = self.view.latest()[1:3]
        want = (
            H("c403c10300 06")
            + struct.pack(">I", fwd)
            + H("0006")
            + struct.pack(">I", rev)
            + H("00090c07e80401010a000000fde400")
        )
        self.assertEqual(self.srv.handle_apdu(req, 16), want)
        # unknown object in a list -> 01 object-undefined for that item only
        req = H("c003c10200030100010800ff0200 00030100030800ff0200")
        r = self.srv.handle_apdu(req, 16)
        self.assertTrue(r.endswith(H("0104")))

    def test_errors(self):
        self.assoc()
        cases = (
            ("c001c100030100030800ff0200", "c401c10104"),  # unknown object
            ("c001c100010100010800ff0200", "c401c10109"),  # class mismatch
            ("c001c100030100010800ff0900", "c401c1010b"),  # no attribute 9
            ("c001c1000f0000280000ff0700", "c401c10103"),  # secret not readable
            ("c001c100030100010800ff020102020406000000010600000001120001120000", "c401c1010d"),
        )
        for req, want in cases:
            self.assertEqual(self.srv.handle_apdu(H(req), 16), H(want), req)

    def test_unknown_and_ciphered_tags(self):
        self.assoc()
        for apdu in (H("ff"), H("0f000001db00")):
            self.assertEqual(self.srv.handle_apdu(apdu, 16), H("d80202"))
        # ciphered APDUs outside a ciphered association: service not allowed
        for apdu in (H("c8 1e 30 01234567"), H("db08")):
            self.assertEqual(self.srv.handle_apdu(apdu, 16), H("d80101"))

    def test_truncated_requests(self):
        self.assoc()
        full = H("c001c100070100630100ff02010102040204120008090600000100" + "00ff0f02120000")
        for n in range(1, len(full)):
            r = self.srv.handle_apdu(full[:n], 16)
            self.assertEqual(r, H("d80103"), n)
        self.assertIn("malformed", self.lines[-1])
        self.assertEqual(self.srv.handle_apdu(GET_CLOCK + b"\x00", 16), H("d80103"))

    def test_profile_attributes(self):
        self.assoc()
        want = {
            4: "0600000708",
            5: "1601",
            6: "020412000809060000010000ff0f02120000",
            7: "060000002e",
            8: "0600000870",
        }
        for a, v in want.items():
            req = H("c001c100070100630100ff") + bytes((a, 0))
            self.assertEqual(self.srv.handle_apdu(req, 16), H("c401c100" + v))
        self.assertEqual(
            self.srv.handle_apdu(H("c001c100000000600a01ff0200"), 16), H("c401c10109")
        )
        self.assertEqual(
            self.srv.handle_apdu(H("c001c100010000600a01ff0200"), 16), H("c401c1001100")
        )


class ObjectListTest(Base):
    def test_object_list_rights(self):
        self.assoc(AARQ_LLS, 1)
        data, blocks = get_all(self.srv, H("c001c1000f0000280000ff0200"), 1)
        self.assertGreater(blocks, 1)
        ol = axdr.Reader(data).value()
        self.assertEqual(len(ol), 9)
        by_ln = {bytes(o[2]): o for o in ol}
        prof = by_ln[H("0100630100ff")]
        self.assertEqual(prof[:2], [7, 1])
        attrs = prof[3][0]
        self.assertEqual(attrs[1], [2, 1, [1, 2]])  # buffer: read, selectors {1, 2}
        self.assertEqual(attrs[0], [1, 1, None])
        clock = by_ln[H("0000010000ff")]
        self.assertEqual(clock[3][0][1], [2, 3, None])  # time: read-write
        self.assertEqual(clock[3][1][5], [6, 1])  # shift_time for the management client
        assoc = by_ln[H("0000280000ff")]
        self.assertEqual(assoc[:2], [15, 1])

    def test_small_pdu_splits_large_elements(self):
        self.srv.handle_apdu(aarq_with_pdu(64), 16)
        data, blocks = get_all(self.srv, H("c001c1000f0000280000ff0200"), 16, pdu=64)
        self.assertGreater(blocks, 9)
        ol = axdr.Reader(data).value()
        self.assertEqual(len(ol), 9)
        clock = [o for o in ol if o[0] == 8][0]
        self.assertEqual(clock[3][0][1], [2, 3, None])

    def test_association_attributes(self):
        self.assoc()
        r = self.srv.handle_apdu(H("c001c1000f0000280000ff0300"), 16)
        self.assertEqual(r, H("c401c100 0202 0f10 120001"))
        r = self.srv.handle_apdu(H("c001c1000f0000280000ff0400"), 16)
        self.assertEqual(r, H("c401c100 0207 1102 1110 1202f4 1105 1108 1101 1101"))
        r = self.srv.handle_apdu(H("c001c1000f0000280000ff0600"), 16)
        self.assertTrue(r.endswith(H("1102 1100")))
        r = self.srv.handle_apdu(H("c001c1000f0000280000ff0800"), 16)
        self.assertEqual(r, H("c401c1001602"))
        r = self.srv.handle_apdu(H("c001c1000f0000280000ff0500"), 16)
        self.assertEqual(r, H("c401c100 0206 041800121d 120200 120200 1106 0f00 0900"))
        r = self.srv.handle_apdu(H("c001c100110000290000ff0200"), 16)
        self.assertEqual(r, H("c401c100 0101 0202 120001 0910") + b"XXX0000000000001")


class BlockTransferTest(Base):
    def rows_of(self, data):
        r = axdr.Reader(data)
        out = r.value()
        self.assertEqual(r.remaining(), 0)
        return out

    def test_profile_blocks_layout(self):
        self.srv.handle_apdu(aarq_with_pdu(128), 16)
        r = self.srv.handle_apdu(GET_PROFILE, 16)
        self.assertEqual(r[:9], H("c402c10000000001 00"))
        self.assertEqual(r[10:12], H("012e"))  # array header only in block 1
        self.assertLessEqual(len(r), 128)
        # whole rows only: after the array header, (len - 2) is a multiple of 28
        self.assertEqual((len(r) - 12) % 28, 0)
        data, blocks = get_all(self.srv, GET_PROFILE, 16, pdu=128)
        rows = self.rows_of(data)
        self.assertEqual(len(rows), 46)
        self.assertGreater(blocks, 10)
        want = list(self.view.rows_by_index(0, 45))
        for got, w in zip(rows, want):
            t = axdr.parse_datetime(got[0], -1, 540)
            self.assertEqual(timeutil.slot_of_t2k(t), w[0])
            self.assertEqual(got[1:], list(w[1:4]))

    def test_wrong_block_number(self):
        self.srv.handle_apdu(aarq_with_pdu(128), 16)
        self.srv.handle_apdu(GET_PROFILE, 16)
        r = self.srv.handle_apdu(get_next(5), 16)
        self.assertEqual(r, H("c402c10100000005 0113"))
        # the transfer is gone now
        r = self.srv.handle_apdu(get_next(1), 16)
        self.assertEqual(r, H("c402c10100000001 0110"))

    def test_repeated_next_resends_last_block(self):
        self.srv.handle_apdu(aarq_with_pdu(128), 16)
        self.srv.handle_apdu(GET_PROFILE, 16)
        b2 = self.srv.handle_apdu(get_next(1), 16)
        self.assertEqual(b2[4:8], H("00000002"))
        again = self.srv.handle_apdu(get_next(1), 16)
        self.assertEqual(again, b2)
        b3 = self.srv.handle_apdu(get_next(2), 16)
        self.assertEqual(b3[4:8], H("00000003"))
        self.assertNotEqual(b3, b2)
        # a new invoke id on the repeat is echoed
        again = self.srv.handle_apdu(get_next(2, 0xC2), 16)
        self.assertEqual(again[2], 0xC2)
        self.assertEqual(again[3:], b3[3:])

    def test_repeat_after_another_transfers_block_is_refused_not_wrong(self):
        # the last block is kept in one server buffer (no copy per block): once another
        # association's block has replaced it, a repeat gets a block error, never that block
        pa, pb = (b"\xfe\x80" + bytes(14), 4059), (b"\xfe\x80" + bytes(13) + b"\x05", 4059)
        self.srv.handle_apdu(aarq_with_pdu(128), 16, pa)
        self.srv.handle_apdu(aarq_with_pdu(128), 16, pb)
        self.srv.handle_apdu(GET_PROFILE, 16, pa)
        a2 = self.srv.handle_apdu(get_next(1), 16, pa)
        self.assertEqual(a2[4:8], H("00000002"))
        self.assertEqual(self.srv.handle_apdu(get_next(1), 16, pa), a2)  # repeat: same block
        self.srv.handle_apdu(GET_PROFILE, 16, pb)  # b's first block takes the buffer
        r = self.srv.handle_apdu(get_next(1), 16, pa)
        self.assertEqual(r, H("c402c10100000001010e"))  # data-block-unavailable (14)
        self.assertIn("asked again after another transfer", "\n".join(self.lines))

    def test_new_get_resets_transfer(self):
        self.srv.handle_apdu(aarq_with_pdu(128), 16)
        self.srv.handle_apdu(GET_PROFILE, 16)
        self.srv.handle_apdu(GET_CLOCK, 16)
        self.assertEqual(self.srv.handle_apdu(get_next(1), 16), H("c402c101000000010110"))
        self.srv.handle_apdu(GET_PROFILE, 16)
        self.srv.handle_apdu(aarq_with_pdu(128), 16)
        self.assertEqual(self.srv.handle_apdu(get_next(1), 16), H("c402c101000000010110"))

    def test_next_without_transfer(self):
        self.assoc()
        self.assertEqual(self.srv.handle_apdu(get_next(1), 16), H("c402c101000000010110"))

    def test_rows_vanish_mid_transfer(self):
        self.srv.handle_apdu(aarq_with_pdu(128), 16)
        self.srv.handle_apdu(GET_PROFILE, 16)
        del self.view._rows[10:]
        r = self.srv.handle_apdu(get_next(1), 16)
        for _ in range(5):
            if r[3] == 1:
                break
            r = self.srv.handle_apdu(get_next(struct.unpack(">I", r[4:8])[0]), 16)
        self.assertEqual(r[3], 1)
        self.assertEqual(r[8:], H("010f"))  # long-get-aborted

    def test_backfill_during_transfer_keeps_count(self):
        view = ListView(make_rows(40, skip=(30,)))
        srv, _, _ = make_server(view=view)
        srv.handle_apdu(aarq_with_pdu(128), 16)
        r = srv.handle_apdu(GET_PROFILE, 16)
        view._rows.append((SLOT0 + 30, 1, 2, 0))  # late backfill into the unsent part
        view._rows.sort()
        data = bytearray()
        while True:
            rd = axdr.Reader(r, 9)
            n = rd.length()
            data += r[rd.pos : rd.pos + n]
            if r[3]:
                break
            r = srv.handle_apdu(get_next(struct.unpack(">I", r[4:8])[0]), 16)
        rows = self.rows_of(bytes(data))
        self.assertEqual(len(rows), 39)  # the count promised in block 1
        slots = [timeutil.slot_of_t2k(axdr.parse_datetime(x[0], -1, 540)) for x in rows]
        self.assertEqual(slots, sorted(set(slots)))


class RobustnessTest(Base):
    def test_with_list_in_blocks_survives_buffer_reuse(self):
        self.srv.handle_apdu(aarq_with_pdu(64), 16)
        req = bytearray(
            H(
                "c003c102"
                "00070100630100ff0201020204060000000106000000051200011200" + "00"
                "00080000010000ff0200"
            )
        )
        r = self.srv.handle_apdu(req, 16)
        req[:] = bytes(len(req))  # the caller reuses its receive buffer
        data = bytearray()
        n = 0
        while True:
            self.assertEqual(r[:2], H("c402"))
            self.assertLessEqual(len(r), 64)
            rd = axdr.Reader(r, 9)
            ln = rd.length()
            data += r[rd.pos : rd.pos + ln]
            n += 1
            if r[3]:
                break
            r = self.srv.handle_apdu(get_next(n), 16)
        rd = axdr.Reader(bytes(data))
        self.assertEqual(rd.length(), 2)
        self.assertEqual(rd.u8(), 0)
        rows = rd.value()
        self.assertEqual([x[1] for x in rows], [w[1] for w in self.view.rows_by_index(0, 4)])
        self.assertEqual(rd.u8(), 0)
        self.assertEqual(rd.value(), H("07e80401010a000000fde400"))

    def test_unencodable_values_answer_other_reason(self):
        # a register value that does not fit the type is refused; in the profile the row is
        # kept with null-data for that value and DNV in its status (test_cosem_values)
        self.view._rows.append((SLOT0 + 60, 2**32, 0, 0))
        self.assoc()
        r = self.srv.handle_apdu(H("c001c100030100010800ff0200"), 16)
        self.assertEqual(r, H("c401c101fa"))
        self.srv.handle_apdu(aarq_with_pdu(128), 16)
        data, _blocks = get_all(self.srv, GET_PROFILE, 16, pdu=128)
        rows = axdr.Reader(data).value()
        self.assertEqual(rows[-1][1:], [None, 0, 0x04])


class SelectiveAccessTest(Base):
    def setUp(self):
        Base.setUp(self)
        # 2024-03-31T15:00Z .. : slots every 30 min, 17:00Z missing
        base = timeutil.slot_of_t2k(timeutil.t2k_from_fields(2024, 3, 31, 15, 0, 0))
        rows = [(base + i, 500 + i, 10 + i, i) for i in range(10) if i != 4]
        self.view._rows = rows
        self.base = base
        self.assoc()

    def test_range_golden_jst(self):
        # reference 4.3: 2024-04-01 01:00-03:00 JST = 16:00Z..18:00Z, inclusive both ends
        req = H(
            "c001c100070100630100ff0201010204020412000809060000010000ff0f02120000"
            "090c07e80401ff01000000fde400090c07e80401ff03000000fde4000100"
        )
        data, _ = get_all(self.srv, req)
        rows = axdr.Reader(data).value()
        self.assertEqual([r[1] for r in rows], [502, 503, 505, 506])  # 17:00Z missing
        self.assertEqual(rows[0][0], H("07e8040101010000" + "00fde400"))
        self.assertEqual(data[:2], H("0104"))

    def test_range_unix_bounds_and_columns(self):
        f = timeutil.unix_of_t2k(timeutil.t2k_of_slot(self.base + 1))
        t = timeutil.unix_of_t2k(timeutil.t2k_of_slot(self.base + 2))
        req = (
            H("c001c100070100630100ff0201010204020412000809060000010000ff0f02120000")
            + H("06")
            + struct.pack(">I", f)
            + H("06")
            + struct.pack(">I", t)
            + H("0102 020412000309060100020800ff0f02120000 020412000809060000010000ff0f02120000")
        )
        data, _ = get_all(self.srv, req)
        rows = axdr.Reader(data).value()
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0][0], 11)
        self.assertEqual(len(rows[0]), 2)

    def test_range_empty(self):
        req = H(
            "c001c100070100630100ff0201010204020412000809060000010000ff0f02120000"
            "090c07e80401ff01000100fde400090c07e80401ff011d0000fde4000100"
        )
        self.assertEqual(self.srv.handle_apdu(req, 16), H("c401c1000100"))
        # reversed bounds are empty as well
        req = H(
            "c001c100070100630100ff0201010204020412000809060000010000ff0f02120000"
            "090c07e80401ff03000000fde400090c07e80401ff01000000fde4000100"
        )
        self.assertEqual(self.srv.handle_apdu(req, 16), H("c401c1000100"))

    def test_range_deviation_unspecified(self):
        req = H(
            "c001c100070100630100ff0201010204020412000809060000010000ff0f02120000"
            "090c07e80401ff010000008000ff090c07e80401ff010000008000ff0100"
        )
        data, _ = get_all(self.srv, req)
        self.assertEqual([r[1] for r in axdr.Reader(data).value()], [502])

    def test_range_bad_parameters(self):
        good_head = "c001c100070100630100ff020101"
        bad = (
            # restricting object is +A, not the clock column
            "0204020412000309060100010800ff0f02120000090c07e80401ff01000000fde400"
            "090c07e80401ff03000000fde4000100",
            # invalid date
            "0204020412000809060000010000ff0f02120000090c07e80d01ff01000000fde400"
            "090c07e80401ff03000000fde4000100",
            # bound of the wrong type
            "0204020412000809060000010000ff0f021200001100090c07e80401ff03000000fde4000100",
        )
        for b in bad:
            r = self.srv.handle_apdu(H(good_head + b), 16)
            self.assertEqual(r[:4], H("c401c101"), b)
        r = self.srv.handle_apdu(H("c001c100070100630100ff02010300"), 16)
        self.assertEqual(r, H("c401c1010d"))  # selector 3

    def test_entry_golden_and_columns(self):
        req = H(
            "c001c100070100630100ff020102020406000000010600000030120001120000"
        )  # Gurux readRowsByEntry(pg, 1, 48)
        data, _ = get_all(self.srv, req)
        rows = axdr.Reader(data).value()
        self.assertEqual(len(rows), 9)
        req = H("c001c100070100630100ff020102020406000000030600000000120002120003")
        data, _ = get_all(self.srv, req)
        rows = axdr.Reader(data).value()
        self.assertEqual(
            rows, [[502, 12], [503, 13], [505, 15], [506, 16], [507, 17], [508, 18], [509, 19]]
        )
        req = H("c001c100070100630100ff020102020406000000640600000000120001120000")
        self.assertEqual(self.srv.handle_apdu(req, 16), H("c401c1000100"))
        req = H("c001c100070100630100ff020102020406000000010600000000120003120002")
        self.assertEqual(self.srv.handle_apdu(req, 16)[:4], H("c401c101"))


class SetActionTest(Base):
    def test_set_clock_gurux_vector(self):
        self.assoc()
        req = H("c101c100080000010000ff0200090c07e80401ff0c1e0000fde400")
        self.assertEqual(self.srv.handle_apdu(req, 16), H("c501c100"))
        self.assertEqual(self.clock.t, timeutil.t2k_from_fields(2024, 4, 1, 3, 30, 0))

    def test_set_clock_errors(self):
        self.assoc()
        t = self.clock.t
        cases = (
            ("c101c100080000010000ff02001100", "c501c10c"),  # not an octet-string
            ("c101c100080000010000ff0200090b07e80401ff0c1e0000fde4", "c501c10c"),  # 11 bytes
            ("c101c100080000010000ff0200090c07e80401ff191e0000fde400", "c501c1fa"),  # hour 25
            ("c101c100080000010000ff030010fde4", "c501c103"),  # time_zone is config
            ("c101c100030100010800ff020006000000ff", "c501c103"),  # register value
            ("c101c100030100030800ff020006000000ff", "c501c104"),
        )
        for req, want in cases:
            self.assertEqual(self.srv.handle_apdu(H(req), 16), H(want), req)
        self.assertEqual(self.clock.t, t)

    def test_clock_methods_management_only(self):
        shift = H("c301c100080000010000ff06011000" + "1e")
        self.assoc()
        t = self.clock.t
        self.assertEqual(self.srv.handle_apdu(shift, 16), H("c701c10300"))
        self.assertEqual(self.clock.t, t)
        self.assoc(AARQ_LLS, 1)
        self.assertEqual(self.srv.handle_apdu(shift, 1), H("c701c10000"))
        self.assertEqual(self.clock.t, t + 30)
        self.clock.t = t + 7 * 60 + 31
        quarter = H("c301c100080000010000ff01010f00")
        self.assertEqual(self.srv.handle_apdu(quarter, 1), H("c701c10000"))
        self.assertEqual(self.clock.t, t + 15 * 60)
        too_far = H("c301c100080000010000ff0601100385")
        self.assertEqual(self.srv.handle_apdu(too_far, 1), H("c701c1fa00"))

    def test_profile_reset_refused(self):
        self.assoc(AARQ_LLS, 1)
        r = self.srv.handle_apdu(H("c301c100070100630100ff02010f00"), 1)
        self.assertEqual(r, H("c701c10300"))
        self.assertEqual(self.view.count(), 46)


class WrapperLevelTest(Base):
    def test_ports_swapped(self):
        r = self.srv.handle_wpdu(wpdu(AARQ_PUBLIC))
        self.assertEqual(r[:8], H("000100010010002b"))
        self.assertEqual(r[8:], AARE_PUBLIC)
        r = self.srv.handle_wpdu(H("000100100001000dc001c100080000010000ff0200"))
        self.assertEqual(r[:6], H("000100010010"))

    def test_unknown_server_sap_dropped(self):
        self.assertIsNone(self.srv.handle_wpdu(wpdu(AARQ_PUBLIC, dst=2)))
        self.assertIn("unknown server SAP", self.lines[-1])
        self.assertIsNone(self.srv.association(16))

    def test_garbage_dropped(self):
        for d in (b"", H("0001"), H("000200100001000d") + GET_CLOCK):
            self.assertIsNone(self.srv.handle_wpdu(d))
        self.assertIsNone(self.srv.handle_apdu(b"", 16))
