# Exact values whatever the unit: every record keeps its own ECHONET unit code, and +A/-A are
# served in ONE configured scaler and type (default Wh, long64-unsigned), converted exactly per
# record; a value that cannot be served exactly is null-data with DNV in its row's status
# (profile) or other-reason (register), never rounded. Runs on CPython and under micropython.
import struct
import unittest

from cosem_fakes import AARQ_PUBLIC, SLOT0, FakeClock, SynthView, aarq_with_pdu, make_server

from firmware import log, timeutil, units
from firmware.app.views import MeterView
from firmware.cosem import axdr
from firmware.cosem.objects import EnergyFormat
from firmware.hal.norflash import NorFlash
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

H = bytes.fromhex
GET_PROFILE = H("c001c100070100630100ff0200")
GET_IMPORT = H("c001c100030100010800ff0200")
GET_EXPORT = H("c001c100030100020800ff0200")
GET_SCALER = H("c001c100030100010800ff0300")
GET_CAPTURE = H("c001c100070100630100ff0300")
GET_STATUS = H("c001c100010000600a01ff0200")

# A meter whose unit changes mid-run: 0.1 kWh, then 0.01 kWh, then 10 kWh (a 9-digit counter
# of 10 kWh reaches 9,999,999,990 kWh: long64-unsigned), then kWh. (unit, fwd raw, rev raw,
# +A Wh, -A Wh), the Wh written out by hand.
RUN = (
    (0x01, 123456, 789, 12345600, 78900),
    (0x01, 123460, 790, 12346000, 79000),
    (0x01, 123470, 790, 12347000, 79000),
    (0x02, 1234705, 7901, 12347050, 79010),
    (0x02, 1234799, 7903, 12347990, 79030),
    (0x02, 999999999, 0, 9999999990, 0),
    (0x0A, 1235, 8, 12350000, 80000),
    (0x0A, 999999999, 1, 9999999990000, 10000),
    (0x00, 12351, 80, 12351000, 80000),
    (0x00, 4294967295, 80, 4294967295000, 80000),
)


def get_all(srv, req, sap=16):
    """Raw attribute data of a GET, following block transfer."""
    r = srv.handle_apdu(req, sap)
    if r[1] == 1:
        if r[3] != 0:
            return None, r[4]
        return r[4:], None
    data = bytearray()
    while True:
        rd = axdr.Reader(r, 9)
        rd.length()
        data += r[rd.pos :]
        if r[3]:
            return bytes(data), None
        r = srv.handle_apdu(b"\xc0\x02\xc1" + r[4:8], sap)


def value_of(reply):
    """The value of a GET-Normal response c4 01 inv 00 <data>."""
    assert reply[:2] == H("c401") and reply[3] == 0, reply
    return axdr.Reader(reply, 4).value()


class StoreBacked(unittest.TestCase):
    """Records in the real interval store (each with its own unit), read through MeterView."""

    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.store = IntervalStore(FlashLog(NorFlash(16, block_size=1024)), max_meters=1)
        self.view = MeterView(self.store, 0)

    def tearDown(self):
        log.set_sink(None)

    def put_run(self, run=RUN):
        for i in range(len(run)):
            u, f, r = run[i][:3]
            self.store.put(0, SLOT0 + i, f, r, u, "fixed")

    def server(self, table_config, pdu=None):
        srv, _, _ = make_server(view=self.view, clock=FakeClock(0), table_config=table_config)
        srv.handle_apdu(AARQ_PUBLIC if pdu is None else aarq_with_pdu(pdu), 16)
        return srv

    def rows(self, srv, req=GET_PROFILE):
        data, err = get_all(srv, req)
        self.assertIsNone(err)
        return axdr.Reader(data).value()


class UnitChangeTest(StoreBacked):
    def test_every_row_exact_across_unit_changes(self):
        self.put_run()
        srv = self.server({}, pdu=128)  # small blocks: rows cross many block boundaries
        rows = self.rows(srv)
        self.assertEqual(len(rows), len(RUN))
        for i in range(len(RUN)):
            t = axdr.parse_datetime(rows[i][0], -1, 540)
            self.assertEqual(timeutil.slot_of_t2k(t), SLOT0 + i)
            self.assertEqual(rows[i][1:], [RUN[i][3], RUN[i][4], 0], i)
        # the registers: the newest record, in its own unit (kWh) converted to Wh
        self.assertEqual(value_of(srv.handle_apdu(GET_IMPORT, 16)), RUN[-1][3])
        self.assertEqual(value_of(srv.handle_apdu(GET_EXPORT, 16)), RUN[-1][4])
        self.assertEqual(srv.handle_apdu(GET_SCALER, 16), H("c401c100 02020f00161e"))
        self.assertEqual(value_of(srv.handle_apdu(GET_STATUS, 16)), 0)
        self.assertFalse([ln for ln in self.lines if "WARN" in ln or "ERROR" in ln])

    def test_one_type_for_every_value(self):
        self.put_run()
        srv = self.server({})
        r = srv.handle_apdu(GET_IMPORT, 16)
        self.assertEqual(r, H("c401c100 15") + struct.pack(">Q", RUN[-1][3]))
        data, _ = get_all(srv, GET_PROFILE)
        # every value column is long64-unsigned, even those that would fit 32 bits
        self.assertEqual(data.count(H("020409")), len(RUN))
        rd = axdr.Reader(data)
        rd.container(axdr.ARRAY)
        for _ in range(len(RUN)):
            rd.container(axdr.STRUCTURE)
            rd.octets()
            self.assertEqual(rd.u8(), axdr.LONG64_UNSIGNED)
            rd.take(8)
            self.assertEqual(rd.u8(), axdr.LONG64_UNSIGNED)
            rd.take(8)
            rd.value()

    def test_range_and_entry_selection_exact(self):
        self.put_run()
        srv = self.server({})
        # entry_descriptor rows 6..8 (1-based), all columns
        req = H("c001c100070100630100ff020102020406000000060600000008120000120000")
        rows = self.rows(srv, req)
        self.assertEqual([r[1:3] for r in rows], [[w[3], w[4]] for w in RUN[5:8]])
        # range over the 10 kWh part, +A column only
        t_a = timeutil.t2k_of_slot(SLOT0 + 6)
        t_b = timeutil.t2k_of_slot(SLOT0 + 7)
        req = (H("c001c100070100630100ff0201 01 0204 0204 120008 0906 0000010000ff 0f02 120000")
               + b"\x09\x0c" + axdr.datetime_bytes(t_a, -540, 540)
               + b"\x09\x0c" + axdr.datetime_bytes(t_b, -540, 540)
               + H("0101 0204 120003 0906 0100010800ff 0f02 120000"))
        rows = self.rows(srv, req)
        self.assertEqual(rows, [[RUN[6][3]], [RUN[7][3]]])

    def test_capture_objects_and_shape_do_not_depend_on_the_scaler(self):
        self.put_run()
        a = self.server({}).handle_apdu(GET_CAPTURE, 16)
        b = self.server({"energy_scaler": 3, "energy_type": "u32"}).handle_apdu(GET_CAPTURE, 16)
        self.assertEqual(a, b)
        self.assertEqual(len(value_of(a)), 4)

    def test_configured_scaler_kwh(self):
        # scaler 3 = kWh: 0.1 kWh records are exact only on whole kWh
        run = ((0x0A, 5, 0, 50, 0), (0x00, 51, 1, 51, 1), (0x01, 520, 10, 52, 1))
        self.put_run(run)
        srv = self.server({"energy_scaler": 3})
        self.assertEqual(srv.table.energy.scaler, 3)  # the format a push would use too
        self.assertEqual(srv.handle_apdu(GET_SCALER, 16), H("c401c100 02020f03161e"))
        rows = self.rows(srv)
        self.assertEqual([r[1:] for r in rows], [[50, 0, 0], [51, 1, 0], [52, 1, 0]])


class NotExactTest(StoreBacked):
    def test_finer_unit_than_the_scaler_is_null_with_dnv(self):
        # 0x04 = 0.0001 kWh = 0.1 Wh: in Wh only a raw multiple of 10 is exact
        run = ((0x04, 1234560, 50, 123456, 5), (0x04, 1234567, 50, None, 5),
               (0x04, 1234570, 53, 123457, None))
        self.put_run(run)
        srv = self.server({})
        rows = self.rows(srv)
        self.assertEqual([r[1:] for r in rows],
                         [[123456, 5, 0], [None, 5, 0x04], [123457, None, 0x04]])
        # the register of a value with a fraction is refused, not rounded; status says DNV
        self.assertEqual(srv.handle_apdu(GET_IMPORT, 16), H("c401c100 15") + struct.pack(
            ">Q", 123457))
        self.assertEqual(srv.handle_apdu(GET_EXPORT, 16), H("c401c101fa"))
        self.assertEqual(value_of(srv.handle_apdu(GET_STATUS, 16)), 0x04)
        self.assertTrue([ln for ln in self.lines if "not exact" in ln and "profile" in ln])
        self.assertTrue([ln for ln in self.lines if "not exact" in ln and "register" in ln])

    def test_status_keeps_its_flags_with_dnv(self):
        self.store.put(0, SLOT0, 1234567, 0, 0x04, "fixed", 0x02)  # power down in the slot
        srv = self.server({})
        self.assertEqual(self.rows(srv)[0][1:], [None, 0, 0x84])
        # the status column alone (entry_descriptor columns 4..4) says DNV too
        req = H("c001c100070100630100ff020102020406000000010600000000120004120004")
        self.assertEqual(self.rows(srv, req), [[0x84]])

    def test_u32_overflow_is_null_with_dnv(self):
        self.put_run()
        srv = self.server({"energy_type": "u32"})
        rows = self.rows(srv)
        for i in range(len(RUN)):
            f, r = RUN[i][3], RUN[i][4]
            want_f = f if f < 2**32 else None
            want_r = r if r < 2**32 else None
            dnv = 0 if want_f is not None and want_r is not None else 0x04
            self.assertEqual(rows[i][1:], [want_f, want_r, dnv], i)
        self.assertEqual(srv.handle_apdu(GET_IMPORT, 16), H("c401c101fa"))  # 4,294,967,295,000
        r = srv.handle_apdu(GET_EXPORT, 16)
        self.assertEqual(r, H("c401c100 06") + struct.pack(">I", RUN[-1][4]))

    def test_unknown_unit_code_is_never_served(self):
        self.store.put(0, SLOT0, 100, 1, 0x01, "fixed")
        self.store.put(0, SLOT0 + 1, 100, 1, 0x05, "fixed")  # not in the ECHONET table
        srv = self.server({})
        self.assertEqual([r[1:] for r in self.rows(srv)], [[10000, 100, 0], [None, None, 4]])
        self.assertEqual(srv.handle_apdu(GET_IMPORT, 16), H("c401c101fa"))


class ScaleIntoTest(unittest.TestCase):
    """units.scale_into against plain integer arithmetic, over every code and scaler."""

    def test_matrix(self):
        limbs = [0, 0, 0, 0]
        raws = (0, 1, 7, 10, 99, 1000, 123456789, 999999999, 2**32 - 1)
        n = over = 0
        for code in units.EXP:
            for scaler in range(units.SCALER_MIN, units.SCALER_MAX + 1):
                k = units.EXP[code] + 3 - scaler
                for raw in raws:
                    exact = units.scale_into(raw, code, scaler, limbs)
                    got = limbs[0] | limbs[1] << 16 | limbs[2] << 32 | limbs[3] << 48
                    if k >= 0:
                        want, want_exact = raw * 10**k, True
                    else:
                        want, want_exact = raw // 10**-k, raw % 10**-k == 0
                    for v in limbs:
                        self.assertTrue(0 <= v <= 0xFFFF)
                    n += 1
                    if want >= 2**64:  # past long64-unsigned: refused
                        self.assertFalse(exact, (code, scaler, raw))
                        over += 1
                        continue
                    self.assertEqual(exact, want_exact, (code, scaler, raw))
                    self.assertEqual(got, want, (code, scaler, raw))
        self.assertEqual(n, 9 * 11 * len(raws))
        self.assertEqual(over, 1)  # 0x0D (10 MWh) raw 2^32-1 at scaler -3: 4.3e19 Wh

    def test_refused_inputs(self):
        limbs = [9, 9, 9, 9]
        self.assertFalse(units.scale_into(5, 0x05, 0, limbs))
        self.assertEqual(limbs, [0, 0, 0, 0])
        self.assertFalse(units.scale_into(2**32, 0x03, 0, limbs))
        self.assertFalse(units.scale_into(-1, 0x03, 0, limbs))


class FormatConfigTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_defaults_and_bad_values(self):
        f = EnergyFormat()
        self.assertEqual((f.scaler, f.tag), (0, axdr.LONG64_UNSIGNED))
        self.assertEqual(f.scaler_unit, H("02020f00161e"))
        f = EnergyFormat(-1, "u32")
        self.assertEqual((f.scaler, f.tag), (-1, axdr.DOUBLE_LONG_UNSIGNED))
        self.assertEqual(f.scaler_unit, H("02020fff161e"))
        self.assertFalse(self.lines)
        for bad in (8, -4, "2", None):
            f = EnergyFormat(bad, "u64")
            self.assertEqual(f.scaler, 0)
        f = EnergyFormat(0, "long")
        self.assertEqual(f.tag, axdr.LONG64_UNSIGNED)
        self.assertEqual(len([ln for ln in self.lines if "ERROR" in ln]), 5)


class BigValuesStreamTest(unittest.TestCase):
    """2160 rows of 10 kWh counters near 10^9 (served values near 10^13, past 32 bits) stream
    in 512-byte blocks without the heap growing (no big int kept per row)."""

    def test_2160_large_rows(self):
        class BigView(SynthView):
            @staticmethod
            def row_at(slot, i, unit_code=0x0A):
                return (slot, 999000000 + i, 5 + i, 0, unit_code)

        view = BigView(SLOT0, 2160)
        srv, _, _ = make_server(view=view, clock=FakeClock(0), table_config={})
        srv.handle_apdu(AARQ_PUBLIC, 16)
        r = srv.handle_apdu(GET_PROFILE, 16)
        seen = 0
        while True:
            rd = axdr.Reader(r, 9)
            rd.length()
            if seen == 0:
                rd.container(axdr.ARRAY)
            while rd.remaining():
                row = rd.value()
                self.assertEqual(row[1:], [(999000000 + seen) * 10000, (5 + seen) * 10000, 0])
                seen += 1
            if r[3]:
                break
            r = srv.handle_apdu(b"\xc0\x02\xc1" + r[4:8], 16)
        self.assertEqual(seen, 2160)


if __name__ == "__main__":
    unittest.main()
