"""COSEM server with security suite 0: ciphered AARQ, HLS-GMAC 4-pass, protected GET/SET/ACTION
in glo and general-glo form, replay rejection, our invocation counter, roles, config checks."""

import struct
import unittest

from cosem_fakes import AARQ_LLS, AARQ_PUBLIC, ListView, make_rows
from cosem_secure import (
    AK,
    CLIENT_TITLE,
    CTOS,
    EK,
    SERVER_TITLE,
    STOC,
    FakeState,
    SecClient,
    get_next,
    make_secure_server,
)

from firmware import events, log, timeutil
from firmware.cosem import axdr
from firmware.cosem import security as sec
from firmware.cosem.objects import ROLE_MGMT, ROLE_PUBLIC, ROLE_READER

H = bytes.fromhex
GET_CLOCK = H("c001c100080000010000ff0200")
GET_PROFILE = H("c001c100070100630100ff0200")
OTHER_AK = H("D0D1D2D3D4D5D6D7D8D9DADBDCDDDE00")


class Base(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.srv, self.clock, self.view, self.events = make_secure_server()

    def tearDown(self):
        log.set_sink(None)


class HlsTest(Base):
    def test_four_passes(self):
        c = SecClient(self.srv)
        aare = self.srv.handle_apdu(c.aarq(), 1)
        # pass 2: accepted, diag 14, our title, mechanism 5, StoC, glo-initiateResponse
        self.assertIn(H("A109060760857405080103A203020100A305A10302010E"), aare)
        self.assertIn(H("A40A0408") + SERVER_TITLE, aare)
        self.assertIn(H("88020780890760857405080205"), aare)
        self.assertIn(H("AA128010") + STOC, aare)
        i = aare.index(H("BE"))
        glo = aare[i + 4:]
        self.assertEqual(glo[0], 0x28)
        plain, f = sec.unseal(c.keys, SERVER_TITLE, glo)
        # InitiateResponse: conformance 00 12 1D, our max receive PDU 512
        self.assertEqual(plain, H("0800065F1F040000121D02000007"))
        a = self.srv.association(1)
        self.assertEqual((a.role, a.stoc), (ROLE_MGMT, STOC))
        # pass 3 and 4
        c.stoc = STOC
        r = c.pass3()
        self.assertEqual(r[:8], H("C701C10001000911"))
        ic_s = struct.unpack(">I", r[9:13])[0]
        self.assertEqual(r[8:], sec.hls_reply(c.keys, SERVER_TITLE, ic_s, CTOS))
        self.assertEqual(c.last_frame.tag, 0xCF)
        self.assertIsNone(self.srv.association(1).stoc)
        self.assertEqual(self.events, [])
        self.assertEqual(c.request(GET_CLOCK), H("c401c100090c07e80401010a000000fde400"))

    def test_only_pass3_before_pass4(self):
        c = SecClient(self.srv)
        c.associate(check=False)
        c.stoc = STOC
        # a plain request: refused, association kept for pass 3
        self.assertEqual(self.srv.handle_apdu(GET_CLOCK, 1), H("d80101"))
        # a ciphered GET instead of pass 3 ends the association
        self.assertEqual(c.request(GET_CLOCK), H("d80101"))
        self.assertIsNone(self.srv.association(1))
        self.assertEqual(self.events, [(events.ASSOCIATION_FAILED, 1)])

    def test_wrong_pass3_tag(self):
        c = SecClient(self.srv)
        c.associate(check=False)
        r = c.pass3(stoc=b"not-our-challenge")
        self.assertEqual(r, H("C701C10300"))
        self.assertIsNone(self.srv.association(1))
        self.assertEqual(self.events, [(events.ASSOCIATION_FAILED, 1)])
        # nothing works afterwards without a new association
        self.assertEqual(self.srv.handle_apdu(c.protect(GET_CLOCK), 1), H("d80101"))

    def test_wrong_key(self):
        c = SecClient(self.srv, ak=OTHER_AK)
        aare = self.srv.handle_apdu(c.aarq(), 1)
        self.assertIn(H("A203020101A305A10302010D"), aare)
        self.assertIsNone(self.srv.association(1))
        self.assertEqual(self.events, [(events.ASSOCIATION_FAILED, 1)])
        for line in self.lines:
            self.assertNotIn(AK.hex(), line.lower())

    def test_wrong_title_when_configured(self):
        srv, _, _, evs = make_secure_server({"mgmt_title": "4D4D4D0000000002"})
        aare = srv.handle_apdu(SecClient(srv).aarq(), 1)
        self.assertIn(H("A305A10302010D"), aare)
        self.assertEqual(evs, [(events.ASSOCIATION_FAILED, 1)])
        srv2, _, _, _ = make_secure_server({"mgmt_title": CLIENT_TITLE.hex()})
        SecClient(srv2).associate()

    def test_plain_context_refused_for_keyed_client(self):
        r = self.srv.handle_apdu(AARQ_LLS, 1)
        self.assertIn(H("A305A103020102"), r)
        hls_plain = AARQ_LLS.replace(H("0760857405080201"), H("0760857405080205"))
        self.assertIn(H("A305A103020102"), self.srv.handle_apdu(hls_plain, 1))

    def test_lls_mechanism_for_gmac_client(self):
        c = SecClient(self.srv)
        r = self.srv.handle_apdu(c.aarq(mechanism=1), 1)
        self.assertIn(H("A305A10302010B"), r)
        self.assertIsNone(self.srv.association(1))

    def test_public_and_reader_unchanged(self):
        self.assertIn(H("A203020100"), self.srv.handle_apdu(AARQ_PUBLIC, 16))
        self.assertEqual(self.srv.association(16).role, ROLE_PUBLIC)
        self.assertIn(H("A203020100"), self.srv.handle_apdu(AARQ_LLS, 17))
        self.assertEqual(self.srv.association(17).role, ROLE_READER)
        # ciphered context for a client without keys: not supported
        self.assertIn(H("A305A103020102"), self.srv.handle_apdu(SecClient(self.srv).aarq(), 16))

    def test_reader_with_hls(self):
        srv, _, _, _ = make_secure_server({"reader_mechanism": "gmac", "reader_ek": EK.hex(),
                                           "reader_ak": OTHER_AK.hex()})
        c = SecClient(srv, sap=17, ak=OTHER_AK)
        c.associate()
        self.assertEqual(srv.association(17).role, ROLE_READER)
        # the management keys do not open the reader (and vice versa)
        self.assertIn(H("A305A10302010D"), srv.handle_apdu(SecClient(srv, sap=17).aarq(), 17))


class ProtectedServicesTest(Base):
    def setUp(self):
        Base.setUp(self)
        self.c = SecClient(self.srv)
        self.c.associate()

    def test_get_glo_auth_enc(self):
        self.assertEqual(self.c.request(GET_CLOCK), H("c401c100090c07e80401010a000000fde400"))
        self.assertEqual((self.c.last_frame.tag, self.c.last_frame.sc), (0xCC, 0x30))

    def test_auth_only_reply_in_kind(self):
        self.c.sc = sec.SC_AUTH
        self.assertEqual(self.c.request(GET_CLOCK), H("c401c100090c07e80401010a000000fde400"))
        self.assertEqual(self.c.last_frame.sc, 0x10)

    def test_general_glo_reply_in_kind(self):
        self.c.general = True
        self.assertEqual(self.c.request(GET_CLOCK), H("c401c100090c07e80401010a000000fde400"))
        self.assertEqual((self.c.last_frame.tag, self.c.last_frame.title), (0xDB, SERVER_TITLE))

    def test_general_glo_from_another_title(self):
        self.c.general = True
        other = SecClient(self.srv, title=H("4D4D4D0000000009"), general=True, ic=10**6)
        r = self.srv.handle_apdu(other.protect(GET_CLOCK), 1)
        self.assertEqual(r, H("d80105"))

    def test_set_clock_and_methods(self):
        want = timeutil.t2k_from_fields(2024, 4, 1, 3, 30, 0)
        r = self.c.request(H("c101c100080000010000ff0200090c07e80401ff0c1e0000fde400"))
        self.assertEqual(r, H("c501c100"))
        self.assertEqual(self.clock.t, want)
        self.assertEqual(self.c.last_frame.tag, 0xCD)
        r = self.c.request(H("c301c100080000010000ff06011000" + "1e"))
        self.assertEqual(r, H("c701c10000"))
        self.assertEqual(self.clock.t, want + 30)

    def test_association_object_reports_ciphered_gmac(self):
        ctx = self.c.request(H("c001c1000f0000280000ff0400"))
        mech = self.c.request(H("c001c1000f0000280000ff0600"))
        self.assertEqual((ctx[:4], ctx[-2:]), (H("c401c100"), H("1103")))
        self.assertEqual(mech[-2:], H("1105"))

    def test_plain_request_refused(self):
        self.assertEqual(self.srv.handle_apdu(GET_CLOCK, 1), H("d80101"))
        self.assertIsNotNone(self.srv.association(1))

    def test_replay_rejected(self):
        self.c.request(GET_CLOCK)
        again = self.srv.handle_apdu(self.c.last_request, 1)
        self.assertEqual(again, H("d80106") + struct.pack(">I", self.c.ic + 1))
        old = self.srv.handle_apdu(self.c.protect(GET_CLOCK, ic=5), 1)
        self.assertEqual(old[:3], H("d80106"))
        self.assertEqual(self.events, [(events.REPLAY_REJECTED, 1)] * 2)
        # the association goes on with a fresh counter
        self.assertEqual(self.c.request(GET_CLOCK)[:3], H("c401c1"))

    def test_bad_tag_is_deciphering_error(self):
        req = bytearray(self.c.protect(GET_CLOCK))
        req[-1] ^= 1
        self.assertEqual(self.srv.handle_apdu(bytes(req), 1), H("d80105"))
        self.assertEqual(self.c.request(GET_CLOCK)[:3], H("c401c1"))  # counter not consumed

    def test_unprotected_forms_refused(self):
        for sc in (0x00, 0x20, 0x31, 0x50):
            req = bytearray(self.c.protect(GET_CLOCK))
            req[2] = sc
            self.assertEqual(self.srv.handle_apdu(bytes(req), 1), H("d80105"), sc)

    def test_glo_tag_must_match_content(self):
        req = bytearray(self.c.protect(GET_CLOCK))
        req[0] = 0xC9  # glo-set-request carrying a GET
        self.assertEqual(self.srv.handle_apdu(bytes(req), 1), H("d80202"))

    def test_ciphered_non_request(self):
        self.c.general = True  # a DataNotification has no glo request tag
        plain = self.c.request(H("0f000001db00"))
        self.assertEqual(plain, H("d80202"))
        self.assertEqual(self.c.request(H("c00101")), H("d80103"))  # truncated inside

    def test_long_get_blocks_protected_and_resend_new_counter(self):
        self._long_get_with_resends()

    def test_resend_general_glo(self):
        # the longer header (18 bytes) goes in front of the block in the PDU buffer too
        self.c.general = True
        self._long_get_with_resends()

    def test_resend_authenticated_only(self):
        # SC 0x10: the block stays plaintext in place, only the tag and header are new
        self.c.sc = sec.SC_AUTH
        self._long_get_with_resends()

    def test_ciphered_request_deciphered_in_its_datagram(self):
        from firmware.cosem import wrapper

        dgram = bytearray(wrapper.build(1, 1, self.c.protect(GET_CLOCK)))
        sent = bytes(dgram)
        out = self.srv.reply_buffer()
        r = self.srv.handle_wpdu(dgram, None, out)
        self.assertEqual(self.c.open(bytes(r)[8:])[:3], H("c401c1"))
        # the plaintext request now lies where its ciphertext was: no buffer of the server's
        self.assertNotEqual(bytes(dgram), sent)
        self.assertIn(GET_CLOCK, bytes(dgram))
        # and a reply built in the PDU buffer is protected there: the view is of _out
        big = bytearray(wrapper.build(1, 1, self.c.protect(GET_PROFILE)))
        r = self.srv.handle_wpdu(big, None, out)
        self.assertIn(bytes(r), bytes(self.srv._out))
        self.assertEqual(self.c.open(bytes(r)[8:])[:2], H("c402"))

    def _long_get_with_resends(self):
        first = self.c.request(GET_PROFILE)
        self.assertEqual(first[:2], H("c402"))
        data = bytearray()
        r = first
        blocks = 0
        resent = False
        while True:
            n = struct.unpack(">I", r[4:8])[0]
            rd = axdr.Reader(r, 9)
            ln = rd.length()
            data += r[rd.pos:rd.pos + ln]
            blocks += 1
            self.assertLessEqual(len(self.c.last_request), 512)
            if r[3]:
                break
            if blocks in (2, 3):
                # our block was lost: the client repeats its previous ack (twice for block 2:
                # a block re-protected in place is restored again)
                for _ in range(3 if blocks == 2 else 1):
                    ic_before = self.c.server_ic
                    again = self.c.request(get_next(n - 1))
                    self.assertEqual(again, r)
                    self.assertGreater(self.c.server_ic, ic_before)
                resent = True
            r = self.c.request(get_next(n))
        self.assertTrue(resent)
        self.assertGreater(blocks, 1)
        # same rows as the public client reads in plain
        plain_srv, _, _, _ = make_secure_server()
        plain_srv.handle_apdu(AARQ_PUBLIC, 16)
        rr = plain_srv.handle_apdu(GET_PROFILE, 16)
        pdata = bytearray()
        while True:
            rd = axdr.Reader(rr, 9)
            ln = rd.length()
            pdata += rr[rd.pos:rd.pos + ln]
            if rr[3]:
                break
            rr = plain_srv.handle_apdu(get_next(struct.unpack(">I", rr[4:8])[0]), 16)
        self.assertEqual(bytes(data), bytes(pdata))

    def test_reply_fits_client_pdu(self):
        srv, _, _, _ = make_secure_server(view=ListView(make_rows(200)))
        c = SecClient(srv)
        c.associate()
        self.assertEqual(srv.association(1).client_pdu, 512 - sec.OVERHEAD)
        c.general = True
        r = srv.handle_apdu(c.protect(GET_PROFILE), 1)
        self.assertLessEqual(len(r), 512)

    def test_release_ciphered(self):
        glo = c_glo = sec.seal(self.c.keys, CLIENT_TITLE, self.c.take(), 0x30,
                               H("01000000065F1F0400007E1F04B0"))
        del c_glo
        rlrq = H("62") + bytes((len(glo) + 7,)) + H("800100BE") + bytes((len(glo) + 2, 4,
                                                                           len(glo))) + glo
        r = self.srv.handle_apdu(rlrq, 1)
        self.assertEqual(r[:5], H("63") + r[1:2] + H("800100"))
        i = r.index(H("BE"))
        plain, f = sec.unseal(self.c.keys, SERVER_TITLE, r[i + 4:])
        self.assertEqual(plain[0], 0x08)
        self.assertIsNone(self.srv.association(1))


    def test_release_with_broken_glo_refused_plain_accepted(self):
        glo = bytearray(sec.seal(self.c.keys, CLIENT_TITLE, self.c.take(), 0x30,
                                 H("01000000065F1F0400007E1F04B0")))
        glo[-1] ^= 1
        rlrq = H("62") + bytes((len(glo) + 7,)) + H("800100BE") + bytes(
            (len(glo) + 2, 4, len(glo))) + bytes(glo)
        self.assertEqual(self.srv.handle_apdu(rlrq, 1), H("d80101"))
        self.assertIsNotNone(self.srv.association(1))
        self.assertEqual(self.srv.handle_apdu(H("6203800100"), 1), H("6303800100"))
        self.assertIsNone(self.srv.association(1))


class CounterTest(unittest.TestCase):
    def test_our_counter_persisted_ahead_and_never_repeats(self):
        state = FakeState()
        seen = []
        for boot in range(3):
            srv, _, _, _ = make_secure_server(state=state)
            c = SecClient(srv, ic=1000 * (boot + 1))
            c.associate()
            for _ in range(3):
                c.request(GET_CLOCK)
                seen.append(c.server_ic)
        self.assertEqual(len(set(seen)), len(seen))
        self.assertEqual(seen, sorted(seen))
        # ic_block 4: about one write per 4 protected APDUs, plus one per boot
        self.assertLessEqual(state.writes, 3 + len(seen) // 2 + 3)
        self.assertGreaterEqual(state.values["dlms_ic"], seen[-1] + 1)


class ConfigTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_malformed_key_disables_client_without_leaking(self):
        bad = "00112233445566778899AABBCCDDEEFG"
        srv, _, _, _ = make_secure_server({"mgmt_ek": bad})
        self.assertNotIn(1, srv.clients)
        self.assertIn("dlms.mgmt_ek must be 32 hex digits", "\n".join(self.lines))
        for line in self.lines:
            self.assertNotIn(bad, line)
            self.assertNotIn(AK.hex(), line.lower())

    def test_short_key_and_half_pair(self):
        srv, _, _, _ = make_secure_server({"mgmt_ak": "0011"})
        self.assertNotIn(1, srv.clients)
        srv, _, _, _ = make_secure_server({"mgmt_ak": ""})
        self.assertNotIn(1, srv.clients)
        self.assertIn("must both be set", "\n".join(self.lines))

    def test_bad_system_title_disables_ciphered_clients(self):
        srv, _, _, _ = make_secure_server({"system_title": "585858"})
        self.assertNotIn(1, srv.clients)
        self.assertFalse(srv.ciphered)
        self.assertIn(16, srv.clients)
        self.assertIn("dlms.system_title must be 16 hex digits", "\n".join(self.lines))

    def test_bad_mechanism(self):
        srv, _, _, _ = make_secure_server({"mgmt_mechanism": "none"})
        self.assertNotIn(1, srv.clients)
        self.assertIn("dlms.mgmt_mechanism must be", "\n".join(self.lines))

    def test_secrets_redacted_in_any_case(self):
        make_secure_server({"mgmt_ek": EK.hex().upper(), "mgmt_ak": AK.hex().lower()})
        log.warn("t", "k=%s a=%s" % (EK.hex().lower(), AK.hex().upper()))
        self.assertEqual(self.lines[-1], "WARN t: k=*** a=***")

    def test_no_aes_means_no_ciphered_clients(self):
        from cosem_fakes import make_server

        srv, _, _ = make_server(config={"mgmt_mechanism": "gmac", "mgmt_ek": EK.hex(),
                                        "mgmt_ak": AK.hex()})
        self.assertNotIn(1, srv.clients)


def _rng(seed):
    x = [seed]

    def nxt(n):
        v = x[0]
        v ^= (v << 13) & 0xFFFFFFFF
        v ^= v >> 17
        v ^= (v << 5) & 0xFFFFFFFF
        x[0] = v
        return v % n

    return nxt


class FuzzTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)

    def tearDown(self):
        log.set_sink(None)

    def test_ciphered_fuzz(self):
        """10,000 broken ciphered APDUs (tags, lengths, SC, counters, bodies) into a live
        HLS association: every one is answered with an exception or dropped, none raises, none
        is served, and the association still answers a valid request afterwards."""
        srv, _, _, evs = make_secure_server()
        c = SecClient(srv)
        c.associate()
        rnd = _rng(0xC1F3)
        set_clock = H("c101c100080000010000ff0200090c07e80401ff0c1e0000fde400")
        reqs = (GET_CLOCK, GET_PROFILE, set_clock)
        served = 0
        for i in range(10000):
            c.general = not c.general if i % 7 == 0 else c.general
            orig = c.protect(reqs[i % 3], ic=c.ic + 1 + rnd(3))
            b = bytearray(orig)
            op = rnd(6)
            if op == 0:
                b[rnd(len(b))] ^= 1 << rnd(8)
            elif op == 1:
                b = b[:rnd(len(b))]
            elif op == 2:
                b += bytes((rnd(256),))
            elif op == 3:
                b[rnd(min(len(b), 12))] = rnd(256)
            elif op == 4:
                b[0] = (0xC8, 0xC9, 0xCB, 0xDB, 0xCC)[rnd(5)]
            else:  # a replayed counter: an old, valid frame
                b = bytearray(c.protect(reqs[0], ic=1 + rnd(c.ic)))
            r = srv.handle_apdu(bytes(b), 1)
            if r is not None and r[0] != 0xD8 and bytes(b) != orig:
                served += 1
        self.assertEqual(served, 0)
        self.assertIn((events.REPLAY_REJECTED, 1), evs)
        self.assertIsNotNone(srv.association(1))
        c.general = False
        c.ic += 10
        self.assertEqual(c.request(GET_CLOCK)[:3], H("c401c1"))


if __name__ == "__main__":
    unittest.main()
