# Push (DLMS/COSEM IC 40 Push setup) and the DataNotification of one load-profile row.
#
# The terminal pushes every 30-minute slot to the smart meter (docs/dlms.md "Push"): the body is
# the profile's own buffer row {clock, +A, -A, status}, written by profile.write_row, so a pushed
# slot is byte for byte the row a GET of the profile returns. Pure: the scheduler that decides
# when to send, and the radio, are in firmware/app/push.py.
#
#   WPDU  00 01 | source wPort (server SAP) | destination wPort (client SAP) | length
#   APDU  0F | long-invoke-id-and-priority (4) | 0C + date-time (12) or 00 | body
#
# Protection: a `protect(apdu_mv) -> bytes|memoryview` callable (e.g. general-glo-ciphering with
# the server's system title and invocation counter, security suite 0) replaces the plain APDU
# before the wrapper is added; None sends it in clear.
import struct

from firmware import log
from firmware.compat import const
from firmware.cosem import axdr, wrapper
from firmware.cosem import xdlms as x
from firmware.cosem.objects import (
    NO_ACCESS,
    READ,
    READ_WRITE,
    CosemObject,
    EnergyFormat,
    Value,
    _w_raw,
    _w_u8,
    capture_descriptor,
)
from firmware.cosem.profile import write_row

CLASS_PUSH_SETUP = const(40)
DATA_NOTIFICATION = const(0x0F)
TRANSPORT_TCP = const(0)
TRANSPORT_UDP = const(1)
MESSAGE_AXDR = const(0)  # A-XDR encoded xDLMS APDU
DEFAULT_OBIS = "0.0.25.9.0.255"

_APDU_HDR = const(18)  # 0F, invoke (4), 0C + date-time (12), plus the 00 form's slack
_BODY_MAX = const(64)  # one row: 28 bytes today, 36 with long64 values; room to spare
_PROTECT_SLACK = const(48)  # DB + title + length + SC + IC + tag(12)
SMART_METER = "smart-meter"  # destination: the peer the radio joined (its link-local IPv6)

# (public, reader, management): the destination and schedule are management settings
# ("configure push" is a management-client right); the public client sees none of them.
_R_ALL = (READ, READ, READ)
_MGMT_RW = (NO_ACCESS, READ, READ_WRITE)
_MGMT_R = (NO_ACCESS, READ, READ)
_MGMT_CALL = (NO_ACCESS, NO_ACCESS, 1)


class PushConfigError(ValueError):
    """A push setting that cannot be used (configuration file or a SET by the client)."""


def parse_ipv6(text):
    """16 bytes of an IPv6 address in text form (with '::' compression); PushConfigError."""
    if not isinstance(text, str) or not text or len(text) > 45:
        raise PushConfigError("destination is not an IPv6 address: %r" % (text,))
    halves = text.split("::")
    if len(halves) > 2:
        raise PushConfigError("destination has more than one '::': %r" % text)
    groups = []
    for h in halves:
        part = []
        if h:
            for g in h.split(":"):
                if not 1 <= len(g) <= 4:
                    raise PushConfigError("destination group %r invalid in %r" % (g, text))
                try:
                    part.append(int(g, 16))
                except ValueError:
                    raise PushConfigError("destination group %r invalid in %r" % (g, text)) \
                        from None
        groups.append(part)
    if len(halves) == 2:
        fill = 8 - len(groups[0]) - len(groups[1])
        if fill < 1:
            raise PushConfigError("destination has too many groups: %r" % text)
        words = groups[0] + [0] * fill + groups[1]
    else:
        words = groups[0]
    if len(words) != 8:
        raise PushConfigError("destination needs 8 groups: %r" % text)
    out = bytearray(16)
    for i in range(8):
        struct.pack_into(">H", out, 2 * i, words[i])
    return bytes(out)


def parse_hhmm(text):
    """Minutes of the day of 'HH:MM' (00:00 .. 24:00)."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        raise PushConfigError("window time must be 'HH:MM': %r" % (text,))
    try:
        h = int(text[:2])
        m = int(text[3:])
    except ValueError:
        raise PushConfigError("window time must be 'HH:MM': %r" % text) from None
    if h < 0 or m < 0 or m > 59 or h * 60 + m > 1440:
        raise PushConfigError("window time out of range: %r" % text)
    return h * 60 + m


class PushSettings:
    """What the push setup object shows and the scheduler obeys; shared by both (a SET by the
    management client takes effect at the next send; it is not written to flash: the
    configuration file is what a reboot restores)."""

    def __init__(self):
        self.destination = SMART_METER  # text: an IPv6 address or "smart-meter"
        self.dst_ip = None  # 16 bytes, or None for the joined smart meter
        self.port = 4059
        self.client_sap = 1
        self.windows = []  # [(start_min, end_min)] local time of day; [] = always
        self.randomisation_s = 0
        self.retries = 3
        self.repetition_delay_s = 60

    def set_destination(self, text):
        if text == SMART_METER:
            self.dst_ip = None
        else:
            self.dst_ip = parse_ipv6(text)
        self.destination = text

    def in_window(self, minute_of_day):
        if not self.windows:
            return True
        for a, b in self.windows:
            if a <= b:
                if a <= minute_of_day < b:
                    return True
            elif minute_of_day >= a or minute_of_day < b:  # across midnight
                return True
        return False

    def minutes_to_window(self, minute_of_day):
        """Minutes until a window opens (0 when inside one)."""
        if self.in_window(minute_of_day):
            return 0
        best = 1440
        for a, _b in self.windows:
            d = (a - minute_of_day) % 1440
            if d < best:
                best = d
        return best


def settings_from_config(cfg):
    """PushSettings of the `push` configuration section; a bad entry is logged and the default
    kept (a typo never stops the device)."""
    s = PushSettings()
    try:
        s.set_destination(cfg.get("destination", SMART_METER))
    except PushConfigError as e:
        log.error("push", "%s; pushing to the smart meter" % e)
    for key, lo, hi in (("port", 1, 0xFFFF), ("client_sap", 0, 0xFFFF),
                        ("randomisation_s", 0, 0xFFFF), ("retries", 0, 255),
                        ("repetition_delay_s", 1, 0xFFFF)):
        v = cfg.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            log.error("push", "push.%s = %r outside %d..%d; keeping %d"
                      % (key, v, lo, hi, getattr(s, key)))
            continue
        setattr(s, key, v)
    wins = []
    for w in cfg.get("window") or []:
        try:
            if not isinstance(w, (list, tuple)) or len(w) != 2:
                raise PushConfigError("window entry must be [\"HH:MM\", \"HH:MM\"]: %r" % (w,))
            wins.append((parse_hhmm(w[0]), parse_hhmm(w[1])))
        except PushConfigError as e:
            log.error("push", "%s; entry ignored" % e)
    s.windows = wins
    return s


class DataNotificationEncoder:
    """WPDUs carrying a DataNotification of one profile row, built in a preallocated buffer.

    env: what profile.write_row needs (time_zone, offset_min: the CosemServer itself).
    protect: optional fn(apdu memoryview) -> bytes|memoryview, the protected APDU.
    fmt: the EnergyFormat the profile serves (`default_table(...).energy`; None: the default,
    Wh long64-unsigned), so that a pushed row is the served row."""

    def __init__(self, env, server_sap=1, protect=None, fmt=None):
        self.env = env
        self.fmt = fmt if fmt is not None else EnergyFormat()
        self.server_sap = server_sap
        self.protect = protect
        n = wrapper.HEADER_LEN + _APDU_HDR + _BODY_MAX
        self._buf = bytearray(n)
        self._out = bytearray(n + _PROTECT_SLACK) if protect is not None else None
        self._w = axdr.Writer(self._buf)

    def encode(self, row, client_sap, invoke, now_t2k=None, clock_status=0):
        """memoryview of the WPDU (valid until the next call) for row (slot, fwd, rev, status).
        invoke: long-invoke-id-and-priority (32 bits as sent); now_t2k: the notification's
        date-time (None: the 00 form); clock_status: its status byte (the clock's IC 8 status:
        invalid / doubtful, docs/clock.md), so a receiver sees a send time it cannot trust."""
        env = self.env
        buf = self._buf
        h = wrapper.HEADER_LEN
        buf[h] = DATA_NOTIFICATION
        struct.pack_into(">I", buf, h + 1, invoke & 0xFFFFFFFF)
        if now_t2k is None:
            buf[h + 5] = 0
            pos = h + 6
        else:
            buf[h + 5] = 12
            axdr.pack_datetime(buf, h + 6, now_t2k, env.time_zone, env.offset_min, clock_status)
            pos = h + 18
        w = self._w
        w.reset(pos, len(buf))
        write_row(w, env, row, self.fmt)
        n = w.pos - h
        mv = memoryview(buf)
        if self.protect is None:
            wrapper.pack_header_into(buf, 0, self.server_sap, client_sap, n)
            return mv[: h + n]
        p = self.protect(mv[h : h + n])
        m = len(p)
        out = self._out
        if out is None:  # protect set after construction: its buffer, once
            out = self._out = bytearray(len(buf) + _PROTECT_SLACK)
        if h + m > len(out):
            out = bytearray(h + m)  # never with suite 0 (slack above); kept correct anyway
        wrapper.pack_header_into(out, 0, self.server_sap, client_sap, m)
        out[h : h + m] = p
        return memoryview(out)[: h + m]


def _w_window_time(w, minute):
    b = bytearray(axdr.UNSPECIFIED_DATETIME)
    if minute >= 1440:
        minute = 0  # 24:00 is the next day's 00:00
    b[5] = minute // 60
    b[6] = minute % 60
    b[7] = 0
    b[8] = 0
    w.octets(b)


def _w_windows(w, windows):
    w.array(len(windows))
    for a, b in windows:
        w.structure(2)
        _w_window_time(w, a)
        _w_window_time(w, b)


def _w_destination(w, s):
    w.structure(3)
    w.enum(TRANSPORT_UDP)
    w.octets(("[%s]:%d" % (s.destination, s.port)).encode())
    w.enum(MESSAGE_AXDR)


def _w_u16(w, v):
    w.u16(v)


def _parse_destination(b):
    """(destination text, port) of the '[address]:port' octet-string; PushConfigError."""
    try:
        t = bytes(b).decode()
    except (UnicodeError, ValueError):
        raise PushConfigError("destination is not text") from None
    if not t.startswith("[") or "]:" not in t:
        raise PushConfigError("destination must be '[address]:port'")
    i = t.index("]:")
    try:
        port = int(t[i + 2 :])
    except ValueError:
        raise PushConfigError("destination port invalid") from None
    if not 1 <= port <= 0xFFFF:
        raise PushConfigError("destination port out of range")
    return t[1:i], port


def _window_minute(b):
    if len(b) != 12 or b[5] > 23 or b[6] > 59:
        raise PushConfigError("window time needs hour and minute")
    return b[5] * 60 + b[6]


class PushSetupObject(CosemObject):
    """IC 40 Push setup (version 0) over PushSettings. columns: ((class_id, ln), ...) of the
    pushed row, the profile's capture objects; trigger: fn() called by method 1 push."""

    class_id = CLASS_PUSH_SETUP
    version = 0

    def __init__(self, ln, columns, settings, trigger=None):
        attrs = (_R_ALL, _MGMT_R, _MGMT_RW, _MGMT_RW, _MGMT_RW, _MGMT_RW, _MGMT_RW)
        CosemObject.__init__(self, ln, attrs, (_MGMT_CALL,))
        self._list = bytes((0x01, len(columns))) + b"".join(
            [capture_descriptor(c, ln_, 2) for c, ln_ in columns])
        self.settings = settings
        self._trigger = trigger

    def get(self, env, assoc, attr, selector, mv, sel_pos):
        s = self.settings
        if attr == 2:
            return Value(_w_raw, self._list)
        if attr == 3:
            return Value(_w_destination, s)
        if attr == 4:
            return Value(_w_windows, s.windows)
        if attr == 5:
            return Value(_w_u16, s.randomisation_s)
        if attr == 6:
            return Value(_w_u8, s.retries)
        if attr == 7:
            return Value(_w_u16, s.repetition_delay_s)
        return CosemObject.get(self, env, assoc, attr, selector, mv, sel_pos)

    def set(self, env, assoc, attr, reader):
        s = self.settings
        try:
            if attr == 3:
                if reader.container(axdr.STRUCTURE) != 3:
                    return x.TYPE_UNMATCHED
                transport = reader.typed_int(axdr.ENUM)
                dest, port = _parse_destination(reader.octets())
                message = reader.typed_int(axdr.ENUM)
                if transport != TRANSPORT_UDP or message != MESSAGE_AXDR:
                    return x.OTHER_REASON
                old = (s.destination, s.dst_ip)
                try:
                    s.set_destination(dest)
                except PushConfigError:
                    s.destination, s.dst_ip = old
                    raise
                s.port = port
            elif attr == 4:
                n = reader.container(axdr.ARRAY)
                if n > 8:
                    return x.OTHER_REASON
                wins = []
                for _ in range(n):
                    if reader.container(axdr.STRUCTURE) != 2:
                        return x.TYPE_UNMATCHED
                    a = _window_minute(reader.octets())
                    b = _window_minute(reader.octets())
                    wins.append((a, b))
                s.windows = wins
            elif attr == 5:
                s.randomisation_s = reader.typed_int(axdr.LONG_UNSIGNED)
            elif attr == 6:
                s.retries = reader.typed_int(axdr.UNSIGNED)
            elif attr == 7:
                v = reader.typed_int(axdr.LONG_UNSIGNED)
                if v < 1:
                    return x.OTHER_REASON
                s.repetition_delay_s = v
            else:
                return x.READ_WRITE_DENIED
        except axdr.AxdrError:
            return x.TYPE_UNMATCHED
        except PushConfigError as e:
            log.warn("push", "push setup attribute %d refused: %s" % (attr, e))
            return x.OTHER_REASON
        log.info("push", "push setup attribute %d set by client %d" % (attr, assoc.client_sap))
        return x.SUCCESS

    def action(self, env, assoc, method, reader):
        if method != 1:
            return x.READ_WRITE_DENIED
        if reader is not None:
            try:
                reader.skip()  # data: integer(0)
            except axdr.AxdrError:
                return x.TYPE_UNMATCHED
        if self._trigger is None:
            return x.TEMPORARY_FAILURE
        self._trigger()
        return x.SUCCESS
