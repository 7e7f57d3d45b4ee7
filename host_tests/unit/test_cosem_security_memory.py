# The long-lived heap security suite 0 adds to the COSEM server: one key set (AES context, the
# GHASH table as 256 bytes, AK), our counter, the client's title and counter. No buffers: a
# ciphered request is deciphered in its own datagram and a reply protected in the server's PDU
# buffer (docs/memory.md, docs/dlms.md "Security"). A second PDU-sized buffer fails this test.
import gc
import struct
import unittest

from cosem_fakes import AARQ_PUBLIC, RAW_TABLE, FakeClock, ListView, make_rows
from cosem_secure import AK, EK, STOC, FakeState, SecClient, get_next

from firmware import log
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer
from firmware.hal import aes

GET_PROFILE = bytes.fromhex("c001c100070100630100ff0200")
KEYED = {"mgmt_mechanism": "gmac", "mgmt_ek": EK.hex(), "mgmt_ak": AK.hex(), "ic_block": 4}
# bytes of live heap the keyed server may keep beyond the plain one, after an association and a
# whole long GET with a re-send. Measured on the unix port (64-bit): 1,984 (was 3,200 with the
# deciphered-request and protected-reply buffers); on CPython (tracemalloc; larger ints and
# dicts, the `cryptography` context) 3,652-3,719. One PDU-sized buffer more breaks either bound.
_BOUND_MP = 2300
_BOUND_CPYTHON = 4250


def _live():
    gc.collect()
    if hasattr(gc, "mem_alloc"):
        return gc.mem_alloc()
    import tracemalloc

    return tracemalloc.get_traced_memory()[0]


class SecurityHeapTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)
        self.tm = None
        if not hasattr(gc, "mem_alloc"):
            import tracemalloc

            self.tm = tracemalloc
            tracemalloc.start()

    def tearDown(self):
        log.set_sink(None)
        if self.tm is not None:
            self.tm.stop()

    def _server_heap(self, keyed):
        table = default_table(ListView(make_rows(200)), RAW_TABLE)
        clock = FakeClock(0)
        client = SecClient(None) if keyed else None  # the head-end's side: not counted
        cfg = {"lls_password": "12345678", "mgmt_mechanism": "lls", "mgmt_password": "12345678"}
        before = _live()
        if keyed:
            cfg.update(KEYED)
            srv = CosemServer(table, clock, cfg, aes_ecb=aes.ecb, ic_state=FakeState(),
                              rng=lambda n: STOC[:n])
            client.srv = srv
            client.associate()
            req = client.request
        else:
            srv = CosemServer(table, clock, cfg)
            self.assertEqual(srv.handle_apdu(AARQ_PUBLIC, 16)[0], 0x61)

            def req(apdu):
                return srv.handle_apdu(apdu, 16)
        r = req(GET_PROFILE)
        blocks = 0
        while not r[3]:
            self.assertEqual(r[:2], b"\xc4\x02")
            n = struct.unpack(">I", r[4:8])[0]
            blocks += 1
            if blocks == 2:
                self.assertEqual(req(get_next(n - 1)), r)  # a re-send
            r = req(get_next(n))
        self.assertGreater(blocks, 2)
        r = None
        used = _live() - before
        self.assertIsNotNone(srv)
        return used

    def test_keyed_server_extra_live_heap_is_bounded(self):
        # a first round of each imports what they use (protection.py, cryptography's backend)
        # and fills the logger's and the interpreter's caches: then the data is what is measured
        self._server_heap(True)
        self._server_heap(False)
        plain = self._server_heap(False)
        keyed = self._server_heap(True)
        extra = keyed - plain
        bound = _BOUND_MP if hasattr(gc, "mem_alloc") else _BOUND_CPYTHON
        self.assertLess(extra, bound, "keyed server keeps %d bytes more" % extra)
        self.assertGreater(extra, 0)  # (the key set is there: the measurement sees it)


if __name__ == "__main__":
    unittest.main()
