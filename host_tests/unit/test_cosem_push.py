"""Push on the COSEM side: the DataNotification of one profile row (byte-exact, and the body equal
to the profile's own row), the IC 40 push setup object (attributes, rights by role, SET, method 1)
and the destination/window parsers with malformed input."""

import unittest

from cosem_fakes import SLOT0, T0, FakeClock, ListView

from firmware import log, timeutil
from firmware.cosem import axdr, wrapper
from firmware.cosem import push as p
from firmware.cosem import xdlms as x
from firmware.cosem.objects import ROLE_MGMT, ROLE_PUBLIC, ROLE_READER, EnergyFormat, obis
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer

# 2024-04-01 12:30 JST = 03:30Z
T1230 = timeutil.t2k_from_fields(2024, 4, 1, 3, 30, 0)
SLOT1230 = timeutil.slot_of_t2k(T1230)
DT1230 = "07e80401010c1e0000fde400"  # Monday (Gurux writes ff for the day of week)
# Shape of the reference's Gurux vector (0F, C0000001, 0C + time, body) with our row as the body:
# structure{clock, +A, -A, status}, the profile's buffer row.
GOLDEN = bytes.fromhex(
    "0001" "0001" "0010" "002e"
    "0f" "c0000001" "0c" + DT1230
    + "0204" "090c" + DT1230 + "0600000531" "0600000022" "1100"
)
# the 00 (no date-time) form, as in the reference's dlms-cosem vector "0f 000001db 00 ..."
GOLDEN_NO_TIME = bytes.fromhex(
    "0001" "0001" "0001" "0022"
    "0f" "000001db" "00"
    "0204" "090c" + DT1230 + "0600000531" "0600000022" "1140"
)


class Env:
    time_zone = -540
    offset_min = 540


# the golden vectors serve raw 0.1 kWh counters unchanged (scaler 2, double-long-unsigned), as
# cosem_fakes.RAW_TABLE does; a row is (slot, fwd, rev, status, unit code)
RAW = EnergyFormat(2, "u32")
U = 0x01


class EncoderTest(unittest.TestCase):
    def test_golden_with_time(self):
        e = p.DataNotificationEncoder(Env(), 1, fmt=RAW)
        got = bytes(e.encode((SLOT1230, 1329, 34, 0, U), 16, 0xC0000001, T1230))
        self.assertEqual(got, GOLDEN)

    def test_send_time_carries_the_clock_status(self):
        e = p.DataNotificationEncoder(Env(), 1, fmt=RAW)
        got = bytes(e.encode((SLOT1230, 1329, 34, 0, U), 16, 0xC0000001, T1230, 0x02))
        want = bytearray(GOLDEN)
        want[8 + 5 + 12] = 0x02  # wrapper, tag + invoke id, 0C, 11 bytes: the status byte
        self.assertEqual(got, bytes(want))

    def test_golden_without_time(self):
        e = p.DataNotificationEncoder(Env(), 1, fmt=RAW)
        got = bytes(e.encode((SLOT1230, 1329, 34, 0x40, U), 1, 0x1DB))
        self.assertEqual(got, GOLDEN_NO_TIME)

    def test_body_is_the_profile_row(self):
        # the row a GET of the profile buffer returns, byte for byte (same encoding function)
        rows = [(SLOT0 + i, 1000 + i, 7 * i, i % 3, U) for i in range(4)]
        srv = CosemServer(default_table(ListView(rows)), FakeClock(T0 + 3 * 1800), {})
        aarq = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
        srv.handle_apdu(aarq, 16)
        get = bytes.fromhex("c00181" "0007" "0100630100ff" "02" "00")
        resp = srv.handle_apdu(get, 16)
        self.assertEqual(resp[:6], bytes.fromhex("c40181000104"))
        served = resp[6:]
        e = p.DataNotificationEncoder(srv, 1, fmt=srv.table.energy)
        pushed = b""
        for r in rows:
            wpdu = bytes(e.encode(r, 1, 1))
            pushed += wpdu[8 + 6:]  # after the wrapper, 0F, invoke and the 00 date-time
        self.assertEqual(pushed, served)

    def test_no_allocation_of_a_new_buffer_per_push(self):
        e = p.DataNotificationEncoder(Env(), 1, fmt=RAW)
        a = e.encode((SLOT1230, 1, 2, 0, U), 1, 1)
        b = e.encode((SLOT1230 + 1, 3, 4, 0, U), 1, 2)
        self.assertEqual(bytes(a), bytes(b))  # one buffer: the first view shows the second

    def test_protect_hook_wraps_the_protected_apdu(self):
        seen = []

        def protect(apdu):
            seen.append(bytes(apdu))
            return b"\xdb\x08ABCDEFGH" + bytes((len(apdu),)) + bytes(apdu)

        e = p.DataNotificationEncoder(Env(), 1, protect, fmt=RAW)
        got = bytes(e.encode((SLOT1230, 1329, 34, 0, U), 16, 0xC0000001, T1230))
        self.assertEqual(seen, [GOLDEN[8:]])
        src, dst, apdu = wrapper.parse(got)
        self.assertEqual((src, dst), (1, 16))
        self.assertEqual(bytes(apdu), b"\xdb\x08ABCDEFGH" + bytes((len(GOLDEN) - 8,))
                         + GOLDEN[8:])

    def test_protect_set_after_construction(self):
        e = p.DataNotificationEncoder(Env(), 1, fmt=RAW)
        e.protect = lambda apdu: b"\xdb" + bytes(apdu)
        got = bytes(e.encode((SLOT1230, 1329, 34, 0, U), 16, 0xC0000001, T1230))
        self.assertEqual(got[8:], b"\xdb" + GOLDEN[8:])
        self.assertEqual(got[6:8], bytes((0, len(GOLDEN) - 7)))

    def test_value_not_exact_is_null_with_dnv_as_in_the_profile(self):
        # 2^32 does not fit double-long-unsigned: null-data and DNV (0x04), never cut
        e = p.DataNotificationEncoder(Env(), 1, fmt=RAW)
        got = bytes(e.encode((SLOT1230, 1 << 32, 34, 0, U), 1, 1))
        self.assertEqual(got[8 + 6:], bytes.fromhex("0204" "090c" + DT1230 + "00"
                                                     "0600000022" "1104"))


class ParseTest(unittest.TestCase):
    def test_ipv6_forms(self):
        self.assertEqual(p.parse_ipv6("fe80::21d:1290:1234:5678"),
                         bytes.fromhex("fe80000000000000021d129012345678"))
        self.assertEqual(p.parse_ipv6("::1"), bytes(15) + b"\x01")
        self.assertEqual(p.parse_ipv6("1:2:3:4:5:6:7:8"),
                         bytes.fromhex("00010002000300040005000600070008"))

    def test_ipv6_malformed(self):
        for bad in ("", "fe80", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8",
                    "g::1", "12345::1", ":", "1:2:3:4:5:6:7", None, 5, "fe80::1%eth0",
                    "a" * 50):
            self.assertRaises(p.PushConfigError, p.parse_ipv6, bad)

    def test_ipv6_fuzz_only_config_errors(self):
        seed = 7
        alphabet = "0123456789abcdefg:%. "
        for _ in range(3000):
            n = seed % 20
            s = ""
            for _ in range(n):
                seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
                s += alphabet[(seed >> 8) % len(alphabet)]
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            try:
                self.assertEqual(len(p.parse_ipv6(s)), 16)
            except p.PushConfigError:
                pass

    def test_hhmm(self):
        self.assertEqual(p.parse_hhmm("00:00"), 0)
        self.assertEqual(p.parse_hhmm("23:59"), 1439)
        self.assertEqual(p.parse_hhmm("24:00"), 1440)
        for bad in ("24:01", "1:00", "12:60", "ab:cd", "12-30", None, 1230):
            self.assertRaises(p.PushConfigError, p.parse_hhmm, bad)

    def test_settings_from_config_keeps_defaults_on_bad_entries(self):
        lines = []
        log.set_sink(lines.append)
        try:
            s = p.settings_from_config({
                "destination": "not-an-address", "port": 0, "retries": True,
                "randomisation_s": 30, "window": [["22:00", "06:00"], ["x", "y"], "bad"]})
        finally:
            log.set_sink(None)
        self.assertIsNone(s.dst_ip)
        self.assertEqual(s.destination, p.SMART_METER)
        self.assertEqual(s.port, 4059)
        self.assertEqual(s.retries, 3)
        self.assertEqual(s.randomisation_s, 30)
        self.assertEqual(s.windows, [(1320, 360)])
        self.assertEqual(len([ln for ln in lines if "ERROR push" in ln]), 5)

    def test_window_across_midnight(self):
        s = p.PushSettings()
        s.windows = [(1320, 360)]
        self.assertTrue(s.in_window(1380))
        self.assertTrue(s.in_window(0))
        self.assertFalse(s.in_window(360))
        self.assertEqual(s.minutes_to_window(600), 720)
        self.assertEqual(s.minutes_to_window(100), 0)


LN = obis(p.DEFAULT_OBIS)
CLOCK_LN = obis("0.0.1.0.0.255")
COLS = ((8, CLOCK_LN), (3, obis("1.0.1.8.0.255")), (3, obis("1.0.2.8.0.255")),
        (1, obis("0.0.96.10.1.255")))


class Assoc:
    def __init__(self, role):
        self.role = role
        self.client_sap = 1


def _value(prod):
    buf = bytearray(256)
    w = axdr.Writer(buf)
    prod.begin_block(w)
    prod.header(w)
    while prod.item(w):
        prod.advance()
    return bytes(buf[: w.pos])


class PushSetupTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.s = p.PushSettings()
        self.s.set_destination("fe80::1")
        self.triggered = []
        self.o = p.PushSetupObject(LN, COLS, self.s, lambda: self.triggered.append(1))

    def tearDown(self):
        log.set_sink(None)

    def get(self, attr, role=ROLE_MGMT):
        return _value(self.o.get(Env(), Assoc(role), attr, None, None, 0))

    def test_attributes(self):
        self.assertEqual(self.o.class_id, 40)
        self.assertEqual(self.o.version, 0)
        self.assertEqual(self.get(1), bytes.fromhex("0906") + LN)
        lst = self.get(2)
        self.assertEqual(lst[:2], b"\x01\x04")
        self.assertEqual(lst[2:19], bytes.fromhex("020412000809060000010000ff0f021200")[:17])
        self.assertEqual(self.get(3), bytes.fromhex("0203" "1601" "090e") + b"[fe80::1]:4059"
                         + bytes.fromhex("1600"))
        self.assertEqual(self.get(4), b"\x01\x00")
        self.s.windows = [(1320, 360)]
        self.assertEqual(self.get(4), bytes.fromhex(
            "01010202" "090cffffffffff1600000080 00ff".replace(" ", "")
            + "090cffffffffff0600000080 00ff".replace(" ", "")))
        self.assertEqual(self.get(5), bytes.fromhex("120000"))
        self.assertEqual(self.get(6), bytes.fromhex("1103"))
        self.assertEqual(self.get(7), bytes.fromhex("12003c"))

    def test_rights_by_role(self):
        o = self.o
        for attr in range(2, 8):
            self.assertEqual(o.attr_access(attr, ROLE_PUBLIC), 0)
            self.assertEqual(o.attr_access(attr, ROLE_READER), 1)
        self.assertEqual(o.attr_access(1, ROLE_PUBLIC), 1)
        self.assertEqual(o.attr_access(2, ROLE_MGMT), 1)  # the row layout is the firmware's
        for attr in range(3, 8):
            self.assertEqual(o.attr_access(attr, ROLE_MGMT), 3)
        self.assertEqual(o.method_access(1, ROLE_MGMT), 1)
        self.assertEqual(o.method_access(1, ROLE_READER), 0)
        self.assertEqual(o.method_access(1, ROLE_PUBLIC), 0)

    def set(self, attr, data):
        return self.o.set(Env(), Assoc(ROLE_MGMT), attr, axdr.Reader(memoryview(data)))

    def test_set_destination_and_schedule(self):
        d = b"[fe80::21d:1290:1234:5678]:4060"
        self.assertEqual(self.set(3, bytes.fromhex("02031601") + bytes((0x09, len(d))) + d
                                  + b"\x16\x00"), x.SUCCESS)
        self.assertEqual(self.s.dst_ip, bytes.fromhex("fe80000000000000021d129012345678"))
        self.assertEqual(self.s.port, 4060)
        sm = b"[smart-meter]:4059"
        self.assertEqual(self.set(3, bytes.fromhex("02031601") + bytes((0x09, len(sm))) + sm
                                  + b"\x16\x00"), x.SUCCESS)
        self.assertIsNone(self.s.dst_ip)
        self.assertEqual(self.set(5, bytes.fromhex("12001e")), x.SUCCESS)
        self.assertEqual(self.set(6, bytes.fromhex("1105")), x.SUCCESS)
        self.assertEqual(self.set(7, bytes.fromhex("120078")), x.SUCCESS)
        self.assertEqual((self.s.randomisation_s, self.s.retries, self.s.repetition_delay_s),
                         (30, 5, 120))
        win = bytes.fromhex("01010202" "090cffffffffff1600000080 00ff".replace(" ", "")
                            + "090cffffffffff0600000080 00ff".replace(" ", ""))
        self.assertEqual(self.set(4, win), x.SUCCESS)
        self.assertEqual(self.s.windows, [(1320, 360)])

    def test_set_refused(self):
        tcp = b"[fe80::1]:4059"
        self.assertEqual(self.set(3, bytes.fromhex("02031600") + bytes((0x09, len(tcp))) + tcp
                                  + b"\x16\x00"), x.OTHER_REASON)
        bad = b"[fe80::zz]:4059"
        self.assertEqual(self.set(3, bytes.fromhex("02031601") + bytes((0x09, len(bad))) + bad
                                  + b"\x16\x00"), x.OTHER_REASON)
        self.assertEqual(self.s.dst_ip, p.parse_ipv6("fe80::1"))  # unchanged
        self.assertEqual(self.set(7, bytes.fromhex("120000")), x.OTHER_REASON)
        self.assertEqual(self.set(6, bytes.fromhex("120005")), x.TYPE_UNMATCHED)
        self.assertEqual(self.set(2, bytes.fromhex("0100")), x.READ_WRITE_DENIED)
        self.assertEqual(self.set(5, b""), x.TYPE_UNMATCHED)

    def test_set_fuzz_never_raises(self):
        seed = 3
        for i in range(4000):
            n = seed % 24
            b = bytearray(n)
            for j in range(n):
                seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
                b[j] = (seed >> 8) & 0xFF
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            if n > 1 and i % 2:
                b[0] = (0x02, 0x01, 0x12, 0x11)[i % 4]  # get past the first tag now and then
            res = self.set(3 + i % 5, bytes(b))
            self.assertIn(res, (x.SUCCESS, x.TYPE_UNMATCHED, x.OTHER_REASON))
        self.assertEqual(len(self.s.dst_ip or bytes(16)), 16)

    def test_method_push_triggers(self):
        self.assertEqual(self.o.action(Env(), Assoc(ROLE_MGMT), 1,
                                       axdr.Reader(memoryview(b"\x0f\x00"))), x.SUCCESS)
        self.assertEqual(self.triggered, [1])
        self.assertEqual(self.o.action(Env(), Assoc(ROLE_MGMT), 2, None), x.READ_WRITE_DENIED)

    def test_served_through_the_server_by_role(self):
        rows = [(SLOT0, 1, 2, 0)]
        table = default_table(ListView(rows))
        table.add(self.o)
        srv = CosemServer(table, FakeClock(T0), {"push": True})
        aarq = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
        srv.handle_apdu(aarq, 16)
        # public: the logical name, nothing else
        resp = srv.handle_apdu(bytes.fromhex("c00181" "0028") + LN + b"\x01\x00", 16)
        self.assertEqual(resp, bytes.fromhex("c401810009 06".replace(" ", "")) + LN)
        resp = srv.handle_apdu(bytes.fromhex("c00181" "0028") + LN + b"\x03\x00", 16)
        self.assertEqual(resp, bytes.fromhex("c401810103"))


if __name__ == "__main__":
    unittest.main()
