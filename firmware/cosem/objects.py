# COSEM object table: the interface classes the terminal serves, with per-client access rights.
#
# A GET returns a Producer that streams the attribute value into the server's block buffer as a
# header plus items (array elements, or one whole value), so large values (the object list, the
# 45-day load profile) are never built in RAM. Producers only advance after an item was written
# completely; the server rolls back an item that did not fit and writes it into the next block.
#
# Over the ~400 lines of a module: the interface classes share the producers and writers above;
# the load profile and the default object set are in profile.py.
from firmware import log, timeutil, units
from firmware.compat import const
from firmware.cosem import axdr
from firmware.cosem import xdlms as x

NO_ACCESS = const(0)
READ = const(1)
WRITE = const(2)
READ_WRITE = const(3)

# Client roles (docs/dlms.md "Roles"): which SAP and mechanism has which role is configuration;
# the rights of each role live in the object table, one entry per role in each access tuple.
ROLE_PUBLIC = const(0)  # no authentication: reads only
ROLE_READER = const(1)  # LLS or HLS: reads
ROLE_MGMT = const(2)  # HLS-GMAC: may also set the clock, call its methods, configure push

# (public, reader, management) access per attribute / method
_R = (READ, READ, READ)
_NONE = (NO_ACCESS, NO_ACCESS, NO_ACCESS)
_MGMT_ONLY = (NO_ACCESS, NO_ACCESS, 1)

CLASS_DATA = const(1)
CLASS_REGISTER = const(3)
CLASS_PROFILE = const(7)
CLASS_CLOCK = const(8)
CLASS_ASSOCIATION_LN = const(15)
CLASS_SAP_ASSIGNMENT = const(17)

UNIT_WH = const(30)


def obis(text):
    """b'\\x01\\x00\\x01\\x08\\x00\\xff' for '1.0.1.8.0.255'."""
    parts = text.split(".")
    if len(parts) != 6:
        raise ValueError("OBIS code needs 6 groups: %r" % text)
    vals = [int(p) for p in parts]
    for v in vals:
        if v < 0 or v > 255:
            raise ValueError("OBIS group out of range: %r" % text)
    return bytes(vals)


def obis_text(ln):
    return ".".join([str(b) for b in ln])


class RowsGone(Exception):
    """Stored rows vanished during a long GET (ring wrapped); the transfer is aborted."""


class Producer:
    """Streams one attribute value: header(), then item()/advance() until item() returns False."""

    def begin_block(self, w):
        pass

    def header(self, w):
        pass

    def item(self, w):
        return False

    def advance(self):
        pass


class Value(Producer):
    """A single value written whole by fn(w, arg)."""

    def __init__(self, fn, arg=None):
        self._fn = fn
        self._arg = arg
        self._done = False

    def item(self, w):
        if self._done:
            return False
        self._fn(w, self._arg)
        return True

    def advance(self):
        self._done = True


class Elements(Producer):
    """An array of n elements; element i is written by fn(w, i)."""

    def __init__(self, n, fn):
        self._n = n
        self._fn = fn
        self._i = 0

    def header(self, w):
        w.array(self._n)

    def item(self, w):
        if self._i >= self._n:
            return False
        self._fn(w, self._i)
        return True

    def advance(self):
        self._i += 1


def _w_octets(w, b):
    w.octets(b)


def _w_u32(w, v):
    w.u32(v)


def _w_u8(w, v):
    w.u8(v)


def _w_enum(w, v):
    w.enum(v)


def _w_raw(w, b):
    w.raw(b)


def _w_i16(w, v):
    w.i16(v)


def _w_i8(w, v):
    w.i8(v)


def _w_bool(w, v):
    w.boolean(v)


def capture_descriptor(class_id, ln, attr):
    """struct{long-unsigned class, octet-string LN, integer attr, long-unsigned data_index 0}."""
    return (
        bytes((0x02, 0x04, 0x12, class_id >> 8, class_id & 0xFF, 0x09, 0x06))
        + ln
        + bytes((0x0F, attr, 0x12, 0, 0))
    )


class CosemObject:
    class_id = 0
    version = 0
    _methods = ()  # an instance attribute only for objects with methods (heap)

    def __init__(self, ln, attrs, methods=()):
        self.ln = ln
        self._attrs = attrs
        if methods:
            self._methods = methods

    def attr_access(self, attr, role):
        if attr < 1 or attr > len(self._attrs):
            return None
        return self._attrs[attr - 1][role]

    def method_access(self, method, role):
        if method < 1 or method > len(self._methods):
            return None
        return self._methods[method - 1][role]

    def selectors(self, attr):
        return None

    def write_access_rights(self, w, role):
        """access_rights structure of the object_list (Association LN version 1), as `role`
        has them."""
        w.structure(2)
        w.array(len(self._attrs))
        k = role
        for i in range(len(self._attrs)):
            w.structure(3)
            w.i8(i + 1)
            mode = self._attrs[i][k]
            w.enum(mode)
            sels = self.selectors(i + 1) if mode & READ else None
            if sels:
                w.array(len(sels))
                for s in sels:
                    w.i8(s)
            else:
                w.null()
        w.array(len(self._methods))
        for i in range(len(self._methods)):
            w.structure(2)
            w.i8(i + 1)
            w.enum(self._methods[i][k])

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        """Producer for the attribute value, or a DataAccessResult code."""
        if attr == 1:
            return Value(_w_octets, self.ln)
        return x.OBJECT_UNAVAILABLE

    def set(self, env, assoc, attr, reader):
        return x.READ_WRITE_DENIED

    def action(self, env, assoc, method, reader):
        return x.READ_WRITE_DENIED


class DataObject(CosemObject):
    """IC 1 Data. `value` is bytes (octet-string), or a callable(env) -> int (unsigned) or None."""

    class_id = CLASS_DATA

    def __init__(self, ln, value):
        CosemObject.__init__(self, ln, (_R, _R))
        self._value = value

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        if attr != 2:
            return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)
        v = self._value
        if isinstance(v, (bytes, bytearray)):
            return Value(_w_octets, v)
        v = v(env)
        if v is None:
            return x.TEMPORARY_FAILURE
        return Value(_w_u8, v)


# Profile status bit "data not valid" (dlms-cosem.md 2.5; store.record.STATUS_DNV): also set on
# a row whose value cannot be served exactly in the configured scaler and type.
STATUS_DNV = const(0x04)
ENERGY_TYPES = {"u64": axdr.LONG64_UNSIGNED, "u32": axdr.DOUBLE_LONG_UNSIGNED}


class EnergyFormat:
    """How +A/-A are served (registers and profile columns alike): one scaler (values in
    10^scaler Wh) and one A-XDR type for every value, whatever ECHONET unit each record was
    stored in, so a head-end sees one type and one scaler (docs/dlms.md "Values and scaler").

    convert(raw, unit_code, limbs) is True when the value is exact in that scaler and fits the
    type; otherwise the caller serves null-data (profile, with DNV in the row status) or
    other-reason (register): a value is never rounded or cut silently."""

    def __init__(self, scaler=0, value_type="u64"):
        if not isinstance(scaler, int) or not units.SCALER_MIN <= scaler <= units.SCALER_MAX:
            log.error("config", "dlms.energy_scaler %r not in %d..%d: using 0 (Wh)"
                      % (scaler, units.SCALER_MIN, units.SCALER_MAX))
            scaler = 0
        if value_type not in ENERGY_TYPES:
            log.error("config", "dlms.energy_type %r is not u64 or u32: using u64" % (value_type,))
            value_type = "u64"
        self.scaler = scaler
        self.tag = ENERGY_TYPES[value_type]
        self._n = 4 if value_type == "u64" else 2
        self.scaler_unit = bytes((0x02, 0x02, 0x0F, scaler & 0xFF, 0x16, UNIT_WH))
        # preallocated: the profile converts two values per row, the register one per GET
        self.fwd = [0, 0, 0, 0]
        self.rev = [0, 0, 0, 0]

    def convert(self, raw, unit_code, limbs):
        if not units.scale_into(raw, unit_code, self.scaler, limbs):
            return False
        return self._n == 4 or limbs[2] == limbs[3] == 0

    def write(self, w, limbs):
        w.limbs(self.tag, limbs, self._n)

    def status(self, row):
        """The row's status byte, with DNV if one of its values cannot be served exactly."""
        ok = self.convert(row[1], row[4], self.fwd) & self.convert(row[2], row[4], self.rev)
        return row[3] if ok else row[3] | STATUS_DNV


def latest_status(view, fmt):
    row = view.latest()
    return None if row is None else fmt.status(row)


def _w_energy(w, arg):
    fmt, raw, unit_code = arg
    fmt.convert(raw, unit_code, fmt.fwd)  # checked exact by the GET that made this producer
    fmt.write(w, fmt.fwd)


class RegisterObject(CosemObject):
    """IC 3 Register over the meter view: column 1 = forward (+A), 2 = reverse (-A), served in
    the configured EnergyFormat."""

    class_id = CLASS_REGISTER

    def __init__(self, ln, view, column, fmt):
        CosemObject.__init__(self, ln, (_R, _R, _R), (_NONE,))
        self._view = view
        self._col = column
        self._fmt = fmt

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        if attr == 2:
            row = self._view.latest()
            if row is None:
                return x.TEMPORARY_FAILURE
            fmt = self._fmt
            raw = row[self._col]
            if not fmt.convert(raw, row[4], fmt.fwd):
                log.warn("cosem", "register %s: %d in unit %r is not exact in 10^%d Wh as "
                         "0x%02x: not served" % (obis_text(self.ln), raw, row[4], fmt.scaler,
                                                 fmt.tag))
                return x.OTHER_REASON
            return Value(_w_energy, (fmt, raw, row[4]))
        if attr == 3:
            return Value(_w_raw, self._fmt.scaler_unit)
        return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)


CLOCK_STATUS_INVALID = const(0x01)
_CLOCK_BASE_CRYSTAL = const(1)
_SHIFT_LIMIT_S = const(900)


class ClockObject(CosemObject):
    """IC 8 Clock over the calendar clock. time_zone and the deviation sign come from config."""

    class_id = CLASS_CLOCK

    def __init__(self, ln, public_write):
        pub_time = READ_WRITE if public_write else READ
        attrs = (_R, (pub_time, READ, READ_WRITE), _R, _R, _R, _R, _R, _R, _R)
        # methods: 1 adjust_to_quarter, 2 adjust_to_measuring_period, 3 adjust_to_minute,
        # 4 adjust_to_preset_time, 5 preset_adjusting_time, 6 shift_time
        methods = (_MGMT_ONLY, _NONE, _MGMT_ONLY, _NONE, _NONE, _MGMT_ONLY)
        CosemObject.__init__(self, ln, attrs, methods)

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        if attr == 2:
            now = env.clock.now_t2k()
            if now is None:
                return Value(_w_octets, axdr.UNSPECIFIED_DATETIME[:11] + b"\x01")
            return Value(_w_time, (env, now, clock_status(env.clock)))
        if attr == 3:
            return Value(_w_i16, env.time_zone)
        if attr == 4:
            return Value(_w_u8, clock_status(env.clock))
        if attr == 5 or attr == 6:
            return Value(_w_octets, axdr.UNSPECIFIED_DATETIME)
        if attr == 7:
            return Value(_w_i8, 0)
        if attr == 8:
            return Value(_w_bool, False)
        if attr == 9:
            return Value(_w_enum, _CLOCK_BASE_CRYSTAL)
        return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)

    def set(self, env, assoc, attr, reader):
        if attr != 2:
            return x.READ_WRITE_DENIED
        try:
            b = reader.octets()
        except axdr.AxdrError:
            return x.TYPE_UNMATCHED
        if len(b) != 12:
            return x.TYPE_UNMATCHED
        try:
            t = axdr.parse_datetime(b, env.deviation_sign, env.offset_min)
        except axdr.AxdrError as e:
            log.warn("cosem", "clock write rejected: %s" % e)
            return x.OTHER_REASON
        if t < 0:
            log.warn("cosem", "clock write before 2000 rejected")
            return x.OTHER_REASON
        old = env.clock.now_t2k()
        env.clock.set_t2k(t)
        log.info(
            "cosem",
            "clock set by client %d: %s (was %s)"
            % (
                assoc.client_sap,
                timeutil.iso(t, env.offset_min),
                timeutil.iso(old, env.offset_min),
            ),
        )
        return x.SUCCESS

    def action(self, env, assoc, method, reader):
        now = env.clock.now_t2k()
        if now is None:
            return x.TEMPORARY_FAILURE
        try:
            arg = reader.any_int() if reader is not None else None
        except axdr.AxdrError:
            return x.TYPE_UNMATCHED
        if method == 1 or method == 3:
            q = 900 if method == 1 else 60
            t = (now + q // 2) // q * q
        elif method == 6:
            if arg is None or arg < -_SHIFT_LIMIT_S or arg > _SHIFT_LIMIT_S:
                return x.OTHER_REASON
            t = now + arg
        else:
            return x.READ_WRITE_DENIED
        env.clock.set_t2k(t)
        log.info("cosem", "clock method %d: %s" % (method, timeutil.iso(t, env.offset_min)))
        return x.SUCCESS


def _w_time(w, arg):
    env, t, st = arg
    w.datetime(t, env.time_zone, env.offset_min, st)


def clock_status(clock):
    """IC 8 status byte: 0x01 invalid until the first set since boot, 0x02 doubtful after
    clock.doubtful_after_s without a set (docs/clock.md); a clock without status(): set or not."""
    fn = getattr(clock, "status", None)
    if fn is not None:
        return fn()
    return 0 if clock.is_set() else CLOCK_STATUS_INVALID


class SapAssignmentObject(CosemObject):
    class_id = CLASS_SAP_ASSIGNMENT

    def __init__(self, ln, server_sap, ldn):
        CosemObject.__init__(self, ln, (_R, _R), (_NONE,))
        self._sap = server_sap
        self._ldn = ldn

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        if attr == 2:
            return Elements(1, self._entry)
        return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)

    def _entry(self, w, i):
        w.structure(2)
        w.u16(self._sap)
        w.octets(self._ldn)


def _w_name(w, arg):
    """Association context/mechanism name as Gurux writes it: struct of the 7 OID arcs."""
    arc6, last = arg
    w.structure(7)
    w.u8(2)
    w.u8(16)
    w.u16(756)
    w.u8(5)
    w.u8(8)
    w.u8(arc6)
    w.u8(last)


class AssociationObject(CosemObject):
    """IC 15 Association LN (version 1): the current association of the asking client."""

    class_id = CLASS_ASSOCIATION_LN
    version = 1

    def __init__(self, ln):
        # 7 secret and 9 security_setup_reference are not readable; no HLS methods yet
        attrs = (_R, _R, _R, _R, _R, _R, _NONE, _R, _NONE)
        CosemObject.__init__(self, ln, attrs, (_NONE, _NONE, _NONE, _NONE))

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        if attr == 2:
            return _ObjectList(env.table, assoc.role)
        if attr == 3:
            return Value(_w_partners, (assoc.client_sap, env.server_sap))
        if attr == 4:
            return Value(_w_name, (1, assoc.context))
        if attr == 5:
            return Value(_w_context_info, (env, assoc))
        if attr == 6:
            return Value(_w_name, (2, assoc.mechanism))
        if attr == 8:
            return Value(_w_enum, 2)  # associated
        return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)


def _w_partners(w, arg):
    w.structure(2)
    w.i8(arg[0])
    w.u16(arg[1])


def _w_context_info(w, arg):
    env, assoc = arg
    c = assoc.conformance
    w.structure(6)
    w.bit_string(24, bytes(((c >> 16) & 0xFF, (c >> 8) & 0xFF, c & 0xFF)))
    w.u16(env.max_pdu)
    w.u16(assoc.client_pdu)
    w.u8(6)
    w.i8(0)
    w.octets(b"")


class _ObjectList(Elements):
    def __init__(self, table, role):
        Elements.__init__(self, len(table.objects), self._write)
        self._objs = table.objects
        self._role = role

    def _write(self, w, i):
        o = self._objs[i]
        w.structure(4)
        w.u16(o.class_id)
        w.u8(o.version)
        w.octets(o.ln)
        o.write_access_rights(w, self._role)


class ObjectTable:
    def __init__(self, objects):
        self.objects = objects
        self.energy = None  # the EnergyFormat of +A/-A (set by profile.default_table)
        self._by_ln = {}
        for o in objects:
            self._by_ln[o.ln] = o

    def find(self, ln):
        return self._by_ln.get(ln)

    def add(self, obj):
        """An object built after the table (the push setup, once push is configured)."""
        self.objects.append(obj)
        self._by_ln[obj.ln] = obj
