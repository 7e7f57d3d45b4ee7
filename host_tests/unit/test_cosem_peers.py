import unittest

from cosem_fakes import AARQ_PUBLIC, aarq_with_pdu, make_server

from firmware import log
from firmware.cosem import wrapper

GET_CLOCK = bytes.fromhex("c001c100080000010000ff0200")
GET_PROFILE = bytes.fromhex("c001c100070100630100ff0200")
RLRQ = bytes.fromhex("6203800100")


def wpdu(apdu, src=16):
    return wrapper.build(src, 1, apdu)


class PerPeerAssociationTest(unittest.TestCase):
    """Two head-ends with the same client SAP: each has its own association."""

    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.srv, self.clock, self.view = make_server()

    def tearDown(self):
        log.set_sink(None)

    def req(self, apdu, peer):
        r = self.srv.handle_wpdu(wpdu(apdu), peer)
        return r[8:]

    def test_release_by_one_peer_leaves_the_other_associated(self):
        a, b = (b"\xfe\x80" + bytes(14), 4059), (b"\xfe\x80" + bytes(13) + b"\x05", 4059)
        self.assertEqual(self.req(AARQ_PUBLIC, a)[:1], b"\x61")
        self.assertEqual(self.req(AARQ_PUBLIC, b)[:1], b"\x61")
        self.assertEqual(self.req(RLRQ, b)[:1], b"\x63")
        self.assertEqual(self.req(GET_CLOCK, a)[:4], bytes.fromhex("c401c100"))
        self.assertEqual(self.req(GET_CLOCK, b), bytes.fromhex("d80101"))  # b must associate
        self.assertIsNotNone(self.srv.association(16, a))
        self.assertIsNone(self.srv.association(16, b))

    def test_table_is_bounded_oldest_ends_first(self):
        peers = [(bytes((i,)) * 16, 4059) for i in range(6)]
        for p in peers:
            self.assertEqual(self.req(AARQ_PUBLIC, p)[:1], b"\x61")
        self.assertIsNone(self.srv.association(16, peers[0]))
        self.assertIsNone(self.srv.association(16, peers[1]))
        for p in peers[2:]:
            self.assertIsNotNone(self.srv.association(16, p))
        self.assertIn("association table full", "\n".join(self.lines))


class ReplyBufferTest(unittest.TestCase):
    """handle_wpdu(..., out=buf): the same bytes as the allocating form, written into buf."""

    def setUp(self):
        log.set_sink(lambda line: None)
        self.a, _c, _v = make_server()
        self.b, _c, _v = make_server()

    def tearDown(self):
        log.set_sink(None)

    def test_same_reply_written_into_the_buffer(self):
        out = self.b.reply_buffer()
        peer = (b"\xfe\x80" + bytes(14), 4059)
        for apdu in (AARQ_PUBLIC, bytes.fromhex("c0")):
            want = self.a.handle_wpdu(wpdu(apdu), peer)
            got = self.b.handle_wpdu(wpdu(apdu), peer, out)
            self.assertEqual(bytes(got), want)
            self.assertEqual(bytes(out[:len(want)]), want)  # in the caller's buffer

    def test_get_reply_is_a_view_of_the_server_buffer_not_a_copy(self):
        # a GET reply (every block of a long GET) is built once, in the server's PDU buffer
        # behind room for the wrapper header: handle_wpdu writes the header in front of it
        out = self.b.reply_buffer()
        peer = (b"\xfe\x80" + bytes(14), 4059)
        self.a.handle_wpdu(wpdu(aarq_with_pdu(128)), peer)
        self.b.handle_wpdu(wpdu(aarq_with_pdu(128)), peer, out)
        for apdu in (GET_CLOCK, GET_PROFILE, bytes.fromhex("c002c100000001"),
                     bytes.fromhex("c002c100000001"), bytes.fromhex("c002c200000002")):
            out[:] = bytes(len(out))
            want = self.a.handle_wpdu(wpdu(apdu), peer)
            got = self.b.handle_wpdu(wpdu(apdu), peer, out)
            self.assertEqual(bytes(got), want)
            self.assertEqual(bytes(out), bytes(len(out)))  # nothing copied into `out`
            pos = bytes(self.b._out).find(want)
            self.assertGreaterEqual(pos, 0)
            self.b._out[pos] ^= 0xFF  # the reply is that memory, not a copy of it
            self.assertEqual(got[0], want[0] ^ 0xFF)
            self.b._out[pos] ^= 0xFF

    def test_resent_block_through_handle_wpdu(self):
        # the block kept for a re-send is the one built in place: same bytes, new invoke byte,
        # the wrapper header in front of it again
        out = self.b.reply_buffer()
        peer = (b"\xfe\x80" + bytes(14), 4059)
        self.b.handle_wpdu(wpdu(aarq_with_pdu(128)), peer, out)
        self.b.handle_wpdu(wpdu(GET_PROFILE), peer, out)
        b2 = bytes(self.b.handle_wpdu(wpdu(bytes.fromhex("c002c100000001")), peer, out))
        self.assertEqual(b2[:8], wrapper.build(1, 16, b2[8:])[:8])
        self.assertEqual(b2[8:16], bytes.fromhex("c402c10000000002"))
        again = bytes(self.b.handle_wpdu(wpdu(bytes.fromhex("c002c500000001")), peer, out))
        self.assertEqual(again[:10], b2[:10])
        self.assertEqual(again[10], 0xC5)
        self.assertEqual(again[11:], b2[11:])
        b3 = bytes(self.b.handle_wpdu(wpdu(bytes.fromhex("c002c100000002")), peer, out))
        self.assertEqual(b3[12:16], bytes.fromhex("00000003"))

    def test_get_normal_of_another_client_replaces_the_kept_block(self):
        # one PDU buffer: another association's GET reply is built where the last block was
        # kept, so a repeat of that block is refused (data-block-unavailable), never wrong
        pa, pb = (b"\xfe\x80" + bytes(14), 4059), (b"\xfe\x80" + bytes(13) + b"\x05", 4059)
        out = self.b.reply_buffer()
        self.b.handle_wpdu(wpdu(aarq_with_pdu(128)), pa, out)
        self.b.handle_wpdu(wpdu(AARQ_PUBLIC), pb, out)
        self.b.handle_wpdu(wpdu(GET_PROFILE), pa, out)
        self.b.handle_wpdu(wpdu(bytes.fromhex("c002c100000001")), pa, out)
        self.assertEqual(bytes(self.b.handle_wpdu(wpdu(GET_CLOCK), pb, out))[8:12],
                         bytes.fromhex("c401c100"))
        r = self.b.handle_wpdu(wpdu(bytes.fromhex("c002c100000001")), pa, out)
        self.assertEqual(bytes(r[8:]), bytes.fromhex("c402c10100000001010e"))

    def test_buffer_fits_the_largest_reply(self):
        out = self.b.reply_buffer()
        self.assertGreaterEqual(len(out), wrapper.HEADER_LEN + self.b.max_pdu)
