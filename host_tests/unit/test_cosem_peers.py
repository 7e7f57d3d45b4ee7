import unittest

from cosem_fakes import AARQ_PUBLIC, make_server

from firmware import log
from firmware.cosem import wrapper

GET_CLOCK = bytes.fromhex("c001c100080000010000ff0200")
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
        for apdu in (AARQ_PUBLIC, GET_CLOCK, bytes.fromhex("c0")):
            want = self.a.handle_wpdu(wpdu(apdu), peer)
            got = self.b.handle_wpdu(wpdu(apdu), peer, out)
            self.assertEqual(bytes(got), want)
            self.assertEqual(bytes(out[:len(want)]), want)  # in the caller's buffer

    def test_buffer_fits_the_largest_reply(self):
        out = self.b.reply_buffer()
        self.assertGreaterEqual(len(out), wrapper.HEADER_LEN + self.b.max_pdu)
