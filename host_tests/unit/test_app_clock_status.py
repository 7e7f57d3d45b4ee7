# The IC 8 clock status a client reads (docs/clock.md): invalid (0x01) until the first set since
# boot, doubtful (0x02) after clock.doubtful_after_s without a set, in attribute 4 and in the
# status byte of attribute 2's date-time; the real calendar clock behind the COSEM server.
import unittest

from clock_fakes import make_clock
from cosem_fakes import AARQ_PUBLIC, make_server

from firmware import log, timeutil

H = bytes.fromhex
GET_CLOCK_TIME = H("c001c100080000010000ff0200")
GET_CLOCK_STATUS = H("c001c100080000010000ff0400")
# 2025-04-10 12:00 JST
B = timeutil.t2k_from_fields(2025, 4, 10, 3, 0, 0)


class CosemClockStatusTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)

    def tearDown(self):
        log.set_sink(None)

    def test_invalid_then_good_then_doubtful(self):
        clock, ticks = make_clock(doubtful_after_s=2 * 86400)
        srv, _c, _v = make_server(clock=clock)
        srv.handle_apdu(AARQ_PUBLIC, 16)
        # before the first set: time unspecified with status 0x01, status attribute 0x01
        self.assertEqual(srv.handle_apdu(GET_CLOCK_STATUS, 16), H("c401c1001101"))
        self.assertEqual(srv.handle_apdu(GET_CLOCK_TIME, 16)[-1], 0x01)
        clock.set_t2k(B)
        self.assertEqual(srv.handle_apdu(GET_CLOCK_STATUS, 16), H("c401c1001100"))
        # 2025-04-10 12:00:00 JST, deviation -540, status 0
        self.assertEqual(srv.handle_apdu(GET_CLOCK_TIME, 16),
                         H("c401c100090c07e9040a040c000000fde400"))
        ticks.ms += 2 * 86400 * 1000 + 1000  # two days and a second without a set
        self.assertEqual(srv.handle_apdu(GET_CLOCK_STATUS, 16), H("c401c1001102"))
        self.assertEqual(srv.handle_apdu(GET_CLOCK_TIME, 16),
                         H("c401c100090c07e9040c060c000100fde402"))
        clock.set_t2k(clock.now_t2k())
        self.assertEqual(srv.handle_apdu(GET_CLOCK_STATUS, 16), H("c401c1001100"))


if __name__ == "__main__":
    unittest.main()
