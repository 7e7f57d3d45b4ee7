# detect_family() against scripted modules (both runtimes): J11, SKSTACK single-hop and DSE,
# garbage around the answers, and a module that answers nothing.
import asyncio
import unittest

from radio_fakes import ScriptedUart

from firmware.radio import j11, link
from firmware.radio.detect import detect_family

# result 01, firmware id 0x0400, version 1.2, revision 3
J11_VERSION = j11.encode(0x206B, bytes.fromhex("010400010200000003"), j11.UC_RESPONSE)
# an SKSTACK module sees the J11 frame's bytes as the start of a line: FAIL when the CRLF comes
SK = [(b"SKVER", b"FAIL ER04\r\nEVER 1.2.10\r\nOK\r\n")]
SINGLE = SK + [(b"SKSREG SA2", b"FAIL ER06\r\n")]
DSE = SK + [(b"SKSREG SA2", b"ESREG 0\r\nOK\r\n")]


def detect(answers, noise=b"", timeout_ms=100):
    uart = ScriptedUart(answers, noise, contains=True, chunk=5)  # split reads
    return asyncio.run(detect_family(uart, timeout_ms)), uart.writes


class DetectTest(unittest.TestCase):
    def test_j11(self):
        fam, writes = detect([(j11.encode(j11.CMD_VERSION), J11_VERSION)])
        self.assertEqual(fam, link.FAMILY_J11)
        self.assertEqual(len(writes), 1)  # no SKSTACK text sent to a J11 module

    def test_skstack_single_hop(self):
        fam, writes = detect(SINGLE)
        self.assertEqual(fam, link.FAMILY_SKSTACK)
        self.assertEqual(writes[1:], [b"\r\nSKVER\r\n", b"SKSREG SA2\r\n"])

    def test_skstack_dse(self):
        self.assertEqual(detect(DSE)[0], link.FAMILY_SKSTACK_DSE)

    def test_garbage_around_answers(self):
        noise = b"\x00\xff\xd0\xf9\xee\x5d\x20\x6b junk\r\nOK\r\n"
        self.assertEqual(detect(DSE, noise)[0], link.FAMILY_SKSTACK_DSE)
        self.assertEqual(detect(SINGLE, noise)[0], link.FAMILY_SKSTACK)
        self.assertEqual(detect([(j11.encode(j11.CMD_VERSION), J11_VERSION)], noise)[0],
                         link.FAMILY_J11)

    def test_nothing_answers(self):
        self.assertIsNone(detect([])[0])

    def test_skver_but_no_sa2_answer(self):
        self.assertIsNone(detect(SK)[0])
