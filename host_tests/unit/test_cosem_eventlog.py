# The COSEM event log (docs/events.md §8): IC 7 at 0.0.99.98.0.255 over the event store, read
# whole (block transfer), by range (clock column, inclusive bounds) and by entry; the event code
# and detail Data objects; access by role.
import struct
import unittest

from cosem_fakes import AARQ_LLS, AARQ_PUBLIC, FakeClock, ListView, aarq_with_pdu, make_rows
from event_fakes import MemFs

from firmware import events as ev
from firmware import log
from firmware.cosem import axdr
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer
from firmware.store.eventlog import EventLog

H = bytes.fromhex
T0 = 765244800  # 2024-04-01T00:00Z
LN = "0000636200ff"
GET_LOG = H("c001c10007" + LN + "0200")
CLOCK_DESC = "0204120008090600000100" + "00ff0f02120000"
MGMT = 17  # the LLS reading client (reader role: may read the event log)


def get_next(block):
    return bytes((0xC0, 0x02, 0xC1)) + struct.pack(">I", block)


def dt(t):
    return axdr.datetime_bytes(t, -540, 540)


def range_req(t_from, t_to, cols=""):
    n = len(cols) // 30
    return H("c001c10007" + LN + "020101" + "0204" + CLOCK_DESC + "090c" + dt(t_from).hex()
             + "090c" + dt(t_to).hex() + "01%02x" % n + cols)


def entry_req(e_from, e_to, c_from=0, c_to=0):
    return H("c001c10007" + LN + "020102" + "0204" + "06%08x06%08x12%04x12%04x"
             % (e_from, e_to, c_from, c_to))


class Base(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.fs = MemFs()
        self.clock = FakeClock(None)
        self.events = EventLog("ev", 8, self.clock, fs=self.fs, burst=0)
        self.events.mount()
        table = default_table(ListView(make_rows(4)), None, self.events)
        self.srv = CosemServer(table, self.clock, {"lls_password": "12345678"})

    def tearDown(self):
        log.set_sink(None)

    def add(self, t, code, detail):
        self.clock.t = t
        self.events.record(code, detail)

    def fill(self):
        self.add(None, ev.POWER_UP, 1)  # before the clock was set
        self.add(T0, ev.CLOCK_SET, -0x80000000)
        self.add(T0 + 1800, ev.CLOCK_SET, -600)  # stepped back ...
        self.add(T0 + 1200, ev.BACKFILL_DONE, 48)  # ... so this one is earlier in time
        self.add(T0 + 3600, ev.METER_RESET, 0)
        self.add(T0 + 7200, ev.ASSOCIATION_FAILED, 16)

    def get_all(self, req, sap=MGMT):
        r = self.srv.handle_apdu(req, sap)
        self.assertEqual(self.fs.open_files, 0)  # no file stays open between blocks
        if r[1] == 1:
            self.assertEqual(r[3], 0, r.hex())
            return r[4:], 0
        data = bytearray()
        blocks = 0
        while True:
            self.assertEqual(r[:2], H("c402"), r.hex())
            rd = axdr.Reader(r, 9)
            n = rd.length()
            data += r[rd.pos : rd.pos + n]
            blocks += 1
            if r[3]:
                return bytes(data), blocks
            r = self.srv.handle_apdu(get_next(blocks), sap)
            self.assertEqual(self.fs.open_files, 0)

    def rows(self, req, sap=MGMT):
        data, _ = self.get_all(req, sap)
        rd = axdr.Reader(data)
        v = rd.value()
        self.assertEqual(rd.remaining(), 0)
        return v

    def decoded(self, rows):
        out = []
        for r in rows:
            t = None if r[0][:2] == b"\xff\xff" else axdr.parse_datetime(r[0], -1, 540)
            out.append((t, r[1], r[2]))
        return out


class EventLogReadTest(Base):
    def test_whole_buffer_golden_and_blocks(self):
        self.fill()
        self.srv.handle_apdu(AARQ_LLS, MGMT)
        r = self.srv.handle_apdu(GET_LOG, MGMT)
        # first row: no time (unspecified date-time, status invalid), POWER_UP, detail 1
        self.assertEqual(r[:8], H("c401c100 0106 0203"))
        self.assertEqual(r[8:22], H("090c ffffffffffffffffff800001"))
        self.assertEqual(r[22:29], H("1102 0500000001"))
        # second row: 2024-04-01 09:00 JST, CLOCK_SET, no old time
        self.assertEqual(r[29:52], H("0203 090c 07e804010109000000fde400 1101 0580000000"))
        got = self.decoded(self.rows(GET_LOG))
        self.assertEqual(got, [(None, 2, 1), (T0, 1, -0x80000000), (T0 + 1800, 1, -600),
                               (T0 + 1200, 7, 48), (T0 + 3600, 3, 0), (T0 + 7200, 8, 16)])
        # a small PDU: several blocks, whole rows each
        self.srv.handle_apdu(aarq_with_pdu(64), 16)  # public association for the PDU size only
        self.srv.handle_apdu(AARQ_LLS[:-2] + b"\x00\x40", MGMT)
        data, blocks = self.get_all(GET_LOG)
        self.assertGreater(blocks, 2)
        self.assertEqual(self.decoded(axdr.Reader(data).value())[5], (T0 + 7200, 8, 16))

    def test_range_inclusive_and_unsorted_times(self):
        self.fill()
        self.srv.handle_apdu(AARQ_LLS, MGMT)
        got = self.decoded(self.rows(range_req(T0 + 1200, T0 + 3600)))
        self.assertEqual(got, [(T0 + 1800, 1, -600), (T0 + 1200, 7, 48), (T0 + 3600, 3, 0)])
        got = self.decoded(self.rows(range_req(T0 + 1201, T0 + 3599)))
        self.assertEqual(got, [(T0 + 1800, 1, -600)])
        self.assertEqual(self.rows(range_req(T0 + 7201, T0 + 9000)), [])
        self.assertEqual(self.get_all(range_req(T0 + 7201, T0 + 9000))[0], H("0100"))
        self.assertEqual(self.rows(range_req(T0 + 3600, T0)), [])  # reversed
        # selected columns: detail only
        rows = self.rows(range_req(T0, T0, "0204120001090600006" "00b80ff0f02120000"))
        self.assertEqual(rows, [[-0x80000000]])

    def test_entry(self):
        self.fill()
        self.srv.handle_apdu(AARQ_LLS, MGMT)
        got = self.decoded(self.rows(entry_req(2, 3)))
        self.assertEqual(got, [(T0, 1, -0x80000000), (T0 + 1800, 1, -600)])
        self.assertEqual(len(self.rows(entry_req(0, 0))), 6)
        self.assertEqual(len(self.rows(entry_req(5, 99))), 2)
        self.assertEqual(self.rows(entry_req(7, 9)), [])
        self.assertEqual(self.rows(entry_req(6, 6, 2, 3)), [[8, 16]])
        r = self.srv.handle_apdu(entry_req(1, 1, 2, 4), MGMT)
        self.assertEqual(r, H("c401c101fa"))  # column 4 does not exist

    def test_attributes_and_data_objects(self):
        self.srv.handle_apdu(AARQ_LLS, MGMT)
        code = H("c001c10001" + "0000600b00ff" + "0200")
        detail = H("c001c10001" + "0000600b80ff" + "0200")
        self.assertEqual(self.srv.handle_apdu(code, MGMT), H("c401c10102"))  # no event yet
        self.assertEqual(self.rows(GET_LOG), [])
        self.fill()
        self.assertEqual(self.srv.handle_apdu(code, MGMT), H("c401c1001108"))
        self.assertEqual(self.srv.handle_apdu(detail, MGMT), H("c401c1000500000010"))

        def attr(a):
            return self.srv.handle_apdu(H("c001c10007" + LN + "%02x00" % a), MGMT)

        self.assertEqual(attr(3), H("c401c100 0103" + CLOCK_DESC
                                    + "0204120001090600006" "00b00ff0f02120000"
                                    + "0204120001090600006" "00b80ff0f02120000"))
        self.assertEqual(attr(4), H("c401c1000600000000"))  # asynchronous capture
        self.assertEqual(attr(5), H("c401c1001601"))
        self.assertEqual(attr(7), H("c401c1000600000006"))
        self.assertEqual(attr(8), H("c401c1000600000010"))  # 2 x capacity 8

    def test_public_client_denied(self):
        self.fill()
        self.srv.handle_apdu(AARQ_PUBLIC, 16)
        self.assertEqual(self.srv.handle_apdu(GET_LOG, 16), H("c401c10103"))
        code = H("c001c10001" + "0000600b00ff" + "0200")
        self.assertEqual(self.srv.handle_apdu(code, 16), H("c401c10103"))

    def test_rotation_during_transfer_aborts(self):
        for i in range(8):
            self.add(T0 + i, ev.POWER_UP, i)
        self.srv.handle_apdu(AARQ_LLS[:-2] + b"\x00\x40", MGMT)
        r = self.srv.handle_apdu(GET_LOG, MGMT)
        self.assertEqual(r[3], 0)
        for i in range(9):  # the segment being read is dropped
            self.add(T0 + 100 + i, ev.POWER_UP, 100 + i)
        n = 1
        while r[3] == 0:
            r = self.srv.handle_apdu(get_next(n), MGMT)
            n += 1
        self.assertEqual(r[8:], H("010f"))  # long-get-aborted
        self.assertEqual(self.fs.open_files, 0)

    def test_fuzzed_selective_access_never_raises(self):
        self.fill()
        self.srv.handle_apdu(AARQ_LLS, MGMT)
        seeds = (range_req(T0, T0 + 3600), entry_req(2, 4, 1, 3),
                 range_req(T0, T0, "0204120001090600006" "00b80ff0f02120000"))
        x = 12345
        answered = 0
        for i in range(1500):
            req = bytes(seeds[i % 3])
            for _ in range(1 + i % 4):
                x = (x * 1103515245 + 12345) & 0x7FFFFFFF
                if len(req) <= 14:
                    break
                pos = 13 + x % (len(req) - 13)  # after the attribute descriptor
                op = (x >> 16) % 3
                b = bytes(((x >> 8) & 0xFF,))
                if op == 0:
                    req = req[:pos] + b + req[pos + 1 :]  # a changed byte
                elif op == 1:
                    req = req[:pos]  # truncated
                else:
                    req = req[:pos] + b + req[pos:]  # an inserted byte
            r = self.srv.handle_apdu(req, MGMT)
            self.assertIsNotNone(r)
            self.assertIn(r[0], (0xC4, 0xD8, 0x0E), r.hex())
            while r[:2] == H("c402") and r[3] == 0:  # drain a transfer it started
                r = self.srv.handle_apdu(get_next(struct.unpack(">I", r[4:8])[0]), MGMT)
            self.assertEqual(self.fs.open_files, 0)
            for line in self.lines:  # the server's catch-all would hide a bug
                self.assertNotIn("internal error", line)
            del self.lines[:]
            answered += 1
        self.assertEqual(answered, 1500)


if __name__ == "__main__":
    unittest.main()
