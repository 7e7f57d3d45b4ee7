# Access rights per client role (objects.ROLE_*): public reads only, the reading client reads,
# the management client may also set the clock and call its methods. The object_list of
# Association LN reports each role's rights, and those are the rights the server enforces.
import unittest

from cosem_fakes import AARQ_LLS, AARQ_PUBLIC, ListView, make_rows, make_server

from firmware import log
from firmware.cosem import axdr
from firmware.cosem.objects import READ, ROLE_MGMT, ROLE_PUBLIC, ROLE_READER, WRITE

H = bytes.fromhex
GET_OBJECT_LIST = H("c001c1000f0000280000ff0200")
SET_CLOCK = H("c101c100080000010000ff0200090c07e80401ff0c1e0000fde400")
SHIFT_30 = H("c301c100080000010000ff060110001e")
QUARTER = H("c301c100080000010000ff01010f00")
CLOCK_LN = H("0000010000ff")
PROFILE_LN = H("0100630100ff")
ROLES = (ROLE_PUBLIC, ROLE_READER, ROLE_MGMT)


class RolesBase(unittest.TestCase):
    table_config = {}  # the defaults: no public clock write

    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.srv, self.clock, self.view = make_server(
            view=ListView(make_rows(48, skip=(5, 6))), table_config=self.table_config)

    def tearDown(self):
        log.set_sink(None)

    def associate_as(self, role):
        """A client SAP associated with `role`. The server assigns public (SAP 16) and
        management (LLS, SAP 1) today; the reading client's mechanism (LLS/HLS) comes with
        security suite 0, so its role is given to a public association here."""
        if role == ROLE_MGMT:
            self.assertEqual(self.srv.handle_apdu(AARQ_LLS, 1)[:1], b"\x61")
            sap = 1
        else:
            self.assertEqual(self.srv.handle_apdu(AARQ_PUBLIC, 16)[:1], b"\x61")
            sap = 16
        a = self.srv.association(sap)
        self.assertEqual(a.role, ROLE_MGMT if role == ROLE_MGMT else ROLE_PUBLIC)
        a.role = role
        return sap

    def object_list(self, sap):
        r = self.srv.handle_apdu(GET_OBJECT_LIST, sap)
        data = bytearray()
        while True:
            if r[1] == 1:
                self.assertEqual(r[3], 0)
                data += r[4:]
                break
            rd = axdr.Reader(r, 9)
            rd.length()
            data += r[rd.pos :]
            if r[3]:
                break
            r = self.srv.handle_apdu(b"\xc0\x02\xc1" + r[4:8], sap)
        return {bytes(o[2]): o for o in axdr.Reader(bytes(data)).value()}


class ObjectListRightsTest(RolesBase):
    def test_clock_rights_per_role(self):
        want = {
            ROLE_PUBLIC: (READ, (0, 0, 0, 0, 0, 0)),
            ROLE_READER: (READ, (0, 0, 0, 0, 0, 0)),
            # adjust_to_quarter, adjust_to_minute, shift_time; 2, 4, 5 are not implemented
            ROLE_MGMT: (READ | WRITE, (1, 0, 1, 0, 0, 1)),
        }
        for role in ROLES:
            ol = self.object_list(self.associate_as(role))
            attrs, methods = ol[CLOCK_LN][3]
            self.assertEqual(attrs[1], [2, want[role][0], None], role)
            for a in attrs:
                if a[0] != 2:
                    self.assertEqual(a[1], READ, (role, a))
            self.assertEqual(tuple(m[1] for m in methods), want[role][1], role)
            self.assertEqual([m[0] for m in methods], [1, 2, 3, 4, 5, 6])

    def test_profile_buffer_advertises_selectors_for_every_role(self):
        for role in ROLES:
            ol = self.object_list(self.associate_as(role))
            attrs, methods = ol[PROFILE_LN][3]
            self.assertEqual(attrs[1], [2, READ, [1, 2]], role)  # range and entry descriptors
            for a in attrs:
                self.assertEqual(a[1], READ, (role, a))
                if a[0] != 2:
                    self.assertIsNone(a[2], (role, a))
            self.assertEqual([m[1] for m in methods], [0, 0], role)  # no reset, no capture

    def test_public_and_reader_write_nothing_and_call_nothing(self):
        for role in (ROLE_PUBLIC, ROLE_READER):
            ol = self.object_list(self.associate_as(role))
            self.assertEqual(len(ol), 9)
            for ln, o in ol.items():
                attrs, methods = o[3]
                for a in attrs:
                    self.assertFalse(a[1] & WRITE, (role, ln, a))
                for m in methods:
                    self.assertEqual(m[1], 0, (role, ln, m))

    def test_secret_never_readable(self):
        for role in ROLES:
            ol = self.object_list(self.associate_as(role))
            attrs = ol[H("0000280000ff")][3][0]
            self.assertEqual(attrs[6], [7, 0, None], role)
            self.assertEqual(attrs[8], [9, 0, None], role)

    def test_the_list_is_what_the_server_enforces(self):
        # every attribute each role may not read is refused to it, every other one is not
        for role in ROLES:
            sap = self.associate_as(role)
            ol = self.object_list(sap)
            checked = 0
            for ln, o in ol.items():
                for a in o[3][0]:
                    if ln == H("0000280000ff") and a[0] == 2:
                        continue  # the object list itself (read above)
                    req = H("c001c1") + bytes((o[0] >> 8, o[0] & 0xFF)) + ln + bytes((a[0], 0))
                    r = self.srv.handle_apdu(req, sap)
                    denied = r[:4] == H("c401c101") and r[4] == 3
                    self.assertEqual(denied, not a[1] & READ, (role, ln.hex(), a, r.hex()))
                    checked += 1
            self.assertEqual(checked, 39)  # every attribute of the 9 objects but one


class ClockWriteTest(RolesBase):
    def test_public_set_of_clock_time_denied(self):
        t = self.clock.t
        sap = self.associate_as(ROLE_PUBLIC)
        self.assertEqual(self.srv.handle_apdu(SET_CLOCK, sap), H("c501c103"))
        self.assertEqual(self.clock.t, t)
        self.assertEqual(self.clock.sets, 0)

    def test_reader_set_of_clock_time_denied(self):
        t = self.clock.t
        sap = self.associate_as(ROLE_READER)
        self.assertEqual(self.srv.handle_apdu(SET_CLOCK, sap), H("c501c103"))
        self.assertEqual(self.clock.t, t)

    def test_management_sets_the_clock(self):
        sap = self.associate_as(ROLE_MGMT)
        self.assertEqual(self.srv.handle_apdu(SET_CLOCK, sap), H("c501c100"))
        self.assertEqual(self.clock.sets, 1)

    def test_method_calls_by_public_and_reader_denied(self):
        t = self.clock.t
        for role in (ROLE_PUBLIC, ROLE_READER):
            sap = self.associate_as(role)
            for req in (SHIFT_30, QUARTER):
                self.assertEqual(self.srv.handle_apdu(req, sap), H("c701c10300"), role)
        self.assertEqual(self.clock.t, t)
        sap = self.associate_as(ROLE_MGMT)
        self.assertEqual(self.srv.handle_apdu(SHIFT_30, sap), H("c701c10000"))
        self.assertEqual(self.clock.t, t + 30)

    def test_profile_reset_and_capture_denied_to_every_role(self):
        for role in ROLES:
            sap = self.associate_as(role)
            for m in (1, 2):
                req = H("c301c100070100630100ff") + bytes((m,)) + H("010f00")
                self.assertEqual(self.srv.handle_apdu(req, sap), H("c701c10300"), (role, m))
        self.assertEqual(self.view.count(), 46)


class PublicClockWriteOptionTest(RolesBase):
    """SPEC option dlms.public_clock_write: the public client may set the clock (the
    simulation's head-end does, until it associates as the management client)."""

    table_config = {"public_clock_write": True}

    def test_public_may_set_reader_may_not(self):
        ol = self.object_list(self.associate_as(ROLE_PUBLIC))
        self.assertEqual(ol[CLOCK_LN][3][0][1], [2, READ | WRITE, None])
        self.assertEqual([m[1] for m in ol[CLOCK_LN][3][1]], [0] * 6)  # still no methods
        self.assertEqual(self.srv.handle_apdu(SET_CLOCK, 16), H("c501c100"))
        self.assertEqual(self.srv.handle_apdu(SHIFT_30, 16), H("c701c10300"))
        sap = self.associate_as(ROLE_READER)
        self.assertEqual(self.object_list(sap)[CLOCK_LN][3][0][1], [2, READ, None])
        self.assertEqual(self.srv.handle_apdu(SET_CLOCK, sap), H("c501c103"))


if __name__ == "__main__":
    unittest.main()
