# xDLMS services (LN referencing): GET/SET/ACTION request parsing, response framing, exceptions.
#
# Requests are parsed into small tuples over memoryviews of the APDU (no copies of values); the
# server encodes responses straight into its preallocated output buffer.
import struct

from firmware.compat import const
from firmware.cosem.axdr import AxdrError, Reader

GET_REQUEST = const(0xC0)
SET_REQUEST = const(0xC1)
ACTION_REQUEST = const(0xC3)
GET_RESPONSE = const(0xC4)
SET_RESPONSE = const(0xC5)
ACTION_RESPONSE = const(0xC7)
EXCEPTION_RESPONSE = const(0xD8)

NORMAL = const(1)
NEXT = const(2)
WITH_LIST = const(3)

# DataAccessResult (also used as Action-Result)
SUCCESS = const(0)
HARDWARE_FAULT = const(1)
TEMPORARY_FAILURE = const(2)
READ_WRITE_DENIED = const(3)
OBJECT_UNDEFINED = const(4)
OBJECT_CLASS_INCONSISTENT = const(9)
OBJECT_UNAVAILABLE = const(11)
TYPE_UNMATCHED = const(12)
SCOPE_OF_ACCESS_VIOLATED = const(13)
DATA_BLOCK_UNAVAILABLE = const(14)
LONG_GET_ABORTED = const(15)
NO_LONG_GET_IN_PROGRESS = const(16)
DATA_BLOCK_NUMBER_INVALID = const(19)
OTHER_REASON = const(250)

# EXCEPTION-Response: state-error, service-error
STATE_SERVICE_NOT_ALLOWED = const(1)
STATE_SERVICE_UNKNOWN = const(2)
SERVICE_OPERATION_NOT_POSSIBLE = const(1)
SERVICE_NOT_SUPPORTED = const(2)
SERVICE_OTHER = const(3)
SERVICE_PDU_TOO_LONG = const(4)
SERVICE_DECIPHERING = const(5)  # deciphering-error (security suite 0)
SERVICE_IC_ERROR = const(6)  # invocation-counter-error, followed by the expected IC (u32)

_MAX_LIST = const(16)  # attribute descriptors accepted in one GET-Request-With-List


class XdlmsError(ValueError):
    """Malformed xDLMS APDU."""


def _need(mv, end):
    if end > len(mv):
        raise XdlmsError("APDU truncated (need %d bytes, have %d)" % (end, len(mv)))


def _descriptor(mv, p):
    """class_id(2) | LN(6) | attribute/method id (int8) -> ((class, ln bytes, id), new pos)."""
    _need(mv, p + 9)
    cls = struct.unpack_from(">H", mv, p)[0]
    ln = bytes(mv[p + 2 : p + 8])
    ident = struct.unpack_from(">b", mv, p + 8)[0]
    return (cls, ln, ident), p + 9


def _access_selection(mv, p):
    """(selector, parameters memoryview start) or None; returns (sel, new pos)."""
    _need(mv, p + 1)
    flag = mv[p]
    if flag == 0:
        return None, p + 1
    if flag != 1:
        raise XdlmsError("access-selection flag 0x%02x" % flag)
    _need(mv, p + 2)
    return (mv[p + 1], p + 2), p + 2


class Request:
    """A parsed GET/SET/ACTION request.

    service: GET_REQUEST/SET_REQUEST/ACTION_REQUEST, kind: NORMAL/NEXT/WITH_LIST, invoke: the
    invoke-id-and-priority byte, desc: (class, ln, id), selector/sel_pos: selective access
    (selector None if absent; parameters start at mv[sel_pos]), block: GET-Next block number,
    items: for with-list, a list of (desc, selector, sel_pos), value_pos: start of SET data or
    ACTION parameters (None if absent). Positions index into `mv`.
    """

    def __init__(self, mv, service, kind, invoke):
        self.mv = mv
        self.service = service
        self.kind = kind
        self.invoke = invoke
        self.desc = None
        self.selector = None
        self.sel_pos = None
        self.block = None
        self.items = None
        self.value_pos = None


def _skip_data(mv, p):
    r = Reader(mv, p)
    try:
        r.skip()
    except AxdrError as e:
        raise XdlmsError("selective-access parameters: %s" % e) from None
    return r.pos


def parse_request(mv):
    """Parse GET/SET/ACTION requests (normal, GET next and with-list)."""
    _need(mv, 3)
    service = mv[0]
    kind = mv[1]
    req = Request(mv, service, kind, mv[2])
    p = 3
    if service == GET_REQUEST:
        if kind == NORMAL:
            req.desc, p = _descriptor(mv, p)
            sel, p = _access_selection(mv, p)
            if sel is not None:
                req.selector, req.sel_pos = sel
                p = _skip_data(mv, p)
        elif kind == NEXT:
            _need(mv, p + 4)
            req.block = struct.unpack_from(">I", mv, p)[0]
            p += 4
        elif kind == WITH_LIST:
            r = Reader(mv, p)
            try:
                n = r.length()
            except AxdrError as e:
                raise XdlmsError("with-list count: %s" % e) from None
            p = r.pos
            if n == 0 or n > _MAX_LIST:
                raise XdlmsError("with-list of %d descriptors (1..%d accepted)" % (n, _MAX_LIST))
            items = []
            for _ in range(n):
                desc, p = _descriptor(mv, p)
                sel, p = _access_selection(mv, p)
                if sel is None:
                    items.append((desc, None, None))
                else:
                    items.append((desc, sel[0], sel[1]))
                    p = _skip_data(mv, p)
            req.items = items
        else:
            raise XdlmsError("GET-Request choice %d not supported" % kind)
    elif service == SET_REQUEST:
        if kind != NORMAL:
            raise XdlmsError("SET-Request choice %d not supported" % kind)
        req.desc, p = _descriptor(mv, p)
        sel, p = _access_selection(mv, p)
        if sel is not None:
            req.selector, req.sel_pos = sel
            p = _skip_data(mv, p)
        req.value_pos = p
        p = _skip_data(mv, p)
    elif service == ACTION_REQUEST:
        if kind != NORMAL:
            raise XdlmsError("ACTION-Request choice %d not supported" % kind)
        req.desc, p = _descriptor(mv, p)
        _need(mv, p + 1)
        if mv[p] == 1:
            req.value_pos = p + 1
            p = _skip_data(mv, p + 1)
        elif mv[p] == 0:
            p += 1
        else:
            raise XdlmsError("ACTION parameters flag 0x%02x" % mv[p])
    else:
        raise XdlmsError("not a GET/SET/ACTION request (tag 0x%02x)" % service)
    if p != len(mv):
        raise XdlmsError("%d trailing bytes after the request" % (len(mv) - p))
    return req


def exception_response(state_error, service_error):
    return bytes((EXCEPTION_RESPONSE, state_error, service_error))


def pack_get_block_header(buf, end, invoke, last, block_no, raw_len):
    """Write `C4 02 inv last block(4) 00 len` so that it ends at buf[end]; returns its start."""
    if raw_len < 0x80:
        nl = 1
    elif raw_len < 0x100:
        nl = 2
    else:
        nl = 3
    start = end - 9 - nl
    buf[start] = GET_RESPONSE
    buf[start + 1] = NEXT
    buf[start + 2] = invoke
    buf[start + 3] = 1 if last else 0
    struct.pack_into(">I", buf, start + 4, block_no)
    buf[start + 8] = 0
    if nl == 1:
        buf[start + 9] = raw_len
    elif nl == 2:
        buf[start + 9] = 0x81
        buf[start + 10] = raw_len
    else:
        buf[start + 9] = 0x82
        struct.pack_into(">H", buf, start + 10, raw_len)
    return start


def get_block_error(invoke, block_no, result):
    """Last block carrying a DataAccessResult instead of raw data."""
    b = bytearray(9)
    b[0] = GET_RESPONSE
    b[1] = NEXT
    b[2] = invoke
    b[3] = 1
    struct.pack_into(">I", b, 4, block_no)
    b[8] = 1
    return bytes(b) + bytes((result,))


def get_normal_error(invoke, result):
    return bytes((GET_RESPONSE, NORMAL, invoke, 1, result))


def set_response(invoke, result):
    return bytes((SET_RESPONSE, NORMAL, invoke, result))


def action_response(invoke, result):
    """ACTION-Response-Normal without return parameters."""
    return bytes((ACTION_RESPONSE, NORMAL, invoke, result, 0))
