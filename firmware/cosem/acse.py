# ACSE (association control) APDUs with the xDLMS InitiateRequest/Response they carry.
#
# AARQ/AARE/RLRQ/RLRE are BER TLVs. Association events are rare, so building the small AARE with a
# few bytes concatenations is fine; the hot path (GET/blocks) never comes through here.
import struct

from firmware.compat import const

AARQ = const(0x60)
AARE = const(0x61)
RLRQ = const(0x62)
RLRE = const(0x63)

# application-context-name OID prefix 2.16.756.5.8.1.x: x = 1 LN, 2 SN, 3 LN+ciphering, 4 SN+cipher
CONTEXT_PREFIX = b"\x60\x85\x74\x05\x08\x01"
CONTEXT_LN = const(1)
CONTEXT_LN_CIPHERED = const(3)
# mechanism-name OID prefix 2.16.756.5.8.2.x: 0 none, 1 LLS, 2 HLS, 5 HLS-GMAC ...
MECHANISM_PREFIX = b"\x60\x85\x74\x05\x08\x02"
MECH_NONE = const(0)
MECH_LLS = const(1)
MECH_GMAC = const(5)  # HLS-GMAC (security suite 0)

RESULT_ACCEPTED = const(0)
RESULT_REJECTED_PERMANENT = const(1)
RESULT_REJECTED_TRANSIENT = const(2)

DIAG_NULL = const(0)
DIAG_NO_REASON = const(1)
DIAG_CONTEXT_NOT_SUPPORTED = const(2)
DIAG_MECHANISM_NOT_RECOGNISED = const(11)
DIAG_MECHANISM_REQUIRED = const(12)
DIAG_AUTHENTICATION_FAILURE = const(13)
DIAG_AUTHENTICATION_REQUIRED = const(14)  # HLS: passes 3 and 4 follow

# xDLMS InitiateRequest/Response and ConfirmedServiceError tags
INITIATE_REQUEST = const(0x01)
INITIATE_RESPONSE = const(0x08)
CONFIRMED_SERVICE_ERROR = const(0x0E)
GLO_INITIATE_REQUEST = const(0x21)
GLO_INITIATE_RESPONSE = const(0x28)
# initiate ServiceError values
INIT_ERR_OTHER = const(0)
INIT_ERR_VERSION_TOO_LOW = const(1)
INIT_ERR_INCOMPATIBLE_CONFORMANCE = const(2)
INIT_ERR_PDU_TOO_SHORT = const(3)

DLMS_VERSION = const(6)
VAA_NAME_LN = const(0x0007)


class AcseError(ValueError):
    """Malformed ACSE APDU or InitiateRequest."""


def _ber_len(mv, pos, end):
    """(length, new pos) of a BER definite length at mv[pos]."""
    if pos >= end:
        raise AcseError("truncated BER length")
    b = mv[pos]
    pos += 1
    if b < 0x80:
        return b, pos
    n = b & 0x7F
    if n == 0 or n > 2 or pos + n > end:
        raise AcseError("unsupported BER length form 0x%02x" % b)
    v = 0
    for i in range(n):
        v = (v << 8) | mv[pos + i]
    return v, pos + n


def _ber_len_bytes(n):
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    return bytes((0x82, n >> 8, n & 0xFF))


def _tlv(tag, body):
    return bytes((tag,)) + _ber_len_bytes(len(body)) + body


def iter_tlvs(mv, pos, end):
    """Yield (tag, value_start, value_end) for the BER TLVs in mv[pos:end]."""
    while pos < end:
        tag = mv[pos]
        if tag & 0x1F == 0x1F:
            raise AcseError("multi-byte BER tag 0x%02x not supported" % tag)
        n, p = _ber_len(mv, pos + 1, end)
        if p + n > end:
            raise AcseError("BER tag 0x%02x length %d overruns the APDU" % (tag, n))
        yield tag, p, p + n
        pos = p + n


def _outer(mv, want_tag):
    if len(mv) < 2 or mv[0] != want_tag:
        raise AcseError("expected APDU tag 0x%02x" % want_tag)
    n, p = _ber_len(mv, 1, len(mv))
    if p + n != len(mv):
        raise AcseError("APDU length %d does not match %d bytes" % (n, len(mv) - p))
    return p, p + n


def _oid_last(mv, s, e, prefix, what):
    """Last arc of an OID wrapped as `06 07 <7 bytes>` (context/mechanism names)."""
    if e - s == 9 and mv[s] == 0x06 and mv[s + 1] == 7:
        s += 2
    if e - s != 7 or bytes(mv[s : s + 6]) != prefix:
        raise AcseError("unrecognised %s name" % what)
    return mv[s + 6]


class Aarq:
    """Fields of an AARQ that the server acts on; absent fields stay None."""

    def __init__(self):
        self.context = None  # last OID arc: 1 LN, 3 LN ciphered ...
        self.calling_title = None
        self.auth_required = False
        self.mechanism = None  # last OID arc, None = absent (no authentication)
        self.mechanism_known = True
        self.auth_value = None
        self.user_info = None  # bytes of the xDLMS APDU inside BE/04


def parse_aarq(mv):
    """Parse an AARQ; unknown tags are ignored. Raises AcseError on malformed input."""
    s, e = _outer(mv, AARQ)
    q = Aarq()
    for tag, vs, ve in iter_tlvs(mv, s, e):
        if tag == 0xA1:
            q.context = _oid_last(mv, vs, ve, CONTEXT_PREFIX, "application-context")
        elif tag == 0xA6:
            # calling-AP-title: kept raw; only used once ciphering exists (ignored otherwise)
            q.calling_title = bytes(mv[vs:ve])
        elif tag == 0x8A:
            # sender-acse-requirements BIT STRING: 07 80 = authentication bit set
            q.auth_required = ve - vs >= 2 and (mv[vs + 1] & 0x80) != 0
        elif tag == 0x8B:
            if ve - vs == 7 and bytes(mv[vs : vs + 6]) == MECHANISM_PREFIX:
                q.mechanism = mv[vs + 6]
            else:
                q.mechanism = 0xFF
                q.mechanism_known = False
        elif tag == 0xAC:
            # calling-authentication-value CHOICE: 80 = charstring (LLS password / HLS challenge)
            if ve - vs < 2 or mv[vs] != 0x80:
                raise AcseError("calling-authentication-value is not a charstring")
            n, p = _ber_len(mv, vs + 1, ve)
            if p + n != ve:
                raise AcseError("calling-authentication-value length mismatch")
            q.auth_value = bytes(mv[p:ve])
        elif tag == 0xBE:
            if ve - vs < 2 or mv[vs] != 0x04:
                raise AcseError("user-information is not an OCTET STRING")
            n, p = _ber_len(mv, vs + 1, ve)
            if p + n != ve:
                raise AcseError("user-information length mismatch")
            q.user_info = bytes(mv[p:ve])
    if q.context is None:
        raise AcseError("AARQ without application-context-name")
    return q


class InitiateRequest:
    def __init__(self, dedicated_key, version, conformance, max_pdu):
        self.dedicated_key = dedicated_key
        self.version = version
        self.conformance = conformance  # 24-bit int, wire order (bit 0 = MSB of the first byte)
        self.max_pdu = max_pdu


def parse_initiate_request(b):
    """01 | dedicated-key | response-allowed | QoS | version | 5F1F 04 00 conf(3) | max pdu."""
    mv = memoryview(b)
    n = len(mv)
    if n < 1 or mv[0] != INITIATE_REQUEST:
        raise AcseError("user-information is not an InitiateRequest")
    p = 1
    key = None
    if p >= n:
        raise AcseError("truncated InitiateRequest")
    if mv[p]:
        if p + 2 > n or p + 2 + mv[p + 1] > n:
            raise AcseError("truncated dedicated-key")
        key = bytes(mv[p + 2 : p + 2 + mv[p + 1]])
        p += 2 + mv[p + 1]
    else:
        p += 1
    # response-allowed (BOOLEAN DEFAULT TRUE) and proposed-quality-of-service (OPTIONAL)
    for _ in range(2):
        if p >= n:
            raise AcseError("truncated InitiateRequest")
        p += 2 if mv[p] else 1
    if p + 9 > n:
        raise AcseError("truncated InitiateRequest")
    version = mv[p]
    if mv[p + 1] != 0x5F or mv[p + 2] != 0x1F or mv[p + 3] != 0x04 or mv[p + 4] != 0x00:
        raise AcseError("InitiateRequest conformance block malformed")
    conf = (mv[p + 5] << 16) | (mv[p + 6] << 8) | mv[p + 7]
    p += 8
    if p + 2 != n:
        raise AcseError("InitiateRequest max-receive-pdu-size malformed")
    max_pdu = struct.unpack_from(">H", mv, p)[0]
    return InitiateRequest(key, version, conf, max_pdu)


def initiate_response(conformance, server_max_pdu):
    """08 | QoS 00 | version 06 | 5F1F 04 00 conf(3) | server max receive PDU | VAA-name 0007."""
    b = bytearray(14)
    b[0] = INITIATE_RESPONSE
    b[1] = 0
    b[2] = DLMS_VERSION
    b[3:7] = b"\x5f\x1f\x04\x00"
    b[7] = (conformance >> 16) & 0xFF
    b[8] = (conformance >> 8) & 0xFF
    b[9] = conformance & 0xFF
    struct.pack_into(">HH", b, 10, server_max_pdu, VAA_NAME_LN)
    return bytes(b)


def initiate_error(err):
    """ConfirmedServiceError: 0E | initiate (01) | ServiceError choice initiate (06) | value."""
    return bytes((CONFIRMED_SERVICE_ERROR, 0x01, 0x06, err))


def build_aare(result, diag, context=CONTEXT_LN, mechanism=None, user_info=None,
               responding_title=None, stoc=None):
    """AARE with optional responding-AP-title (ciphered contexts), responder-acse-requirements/
    mechanism (when authentication was used) and the HLS server-to-client challenge."""
    body = _tlv(0xA1, b"\x06\x07" + CONTEXT_PREFIX + bytes((context,)))
    body += b"\xa2\x03\x02\x01" + bytes((result,))
    body += b"\xa3\x05\xa1\x03\x02\x01" + bytes((diag,))
    if responding_title is not None:
        body += _tlv(0xA4, _tlv(0x04, responding_title))
    if mechanism:
        body += b"\x88\x02\x07\x80" + _tlv(0x89, MECHANISM_PREFIX + bytes((mechanism,)))
    if stoc is not None:
        body += _tlv(0xAA, _tlv(0x80, stoc))
    if user_info is not None:
        body += _tlv(0xBE, _tlv(0x04, user_info))
    return _tlv(AARE, body)


def parse_rlrq(mv):
    """(reason or None, user-information bytes or None) of an RLRQ."""
    s, e = _outer(mv, RLRQ)
    reason = None
    ui = None
    for tag, vs, ve in iter_tlvs(mv, s, e):
        if tag == 0x80 and ve - vs == 1:
            reason = mv[vs]
        elif tag == 0xBE:
            if ve - vs < 2 or mv[vs] != 0x04:
                raise AcseError("RLRQ user-information is not an OCTET STRING")
            ui = bytes(mv[vs + 2 : ve])
    return reason, ui


def build_rlre(user_info=None):
    """RLRE reason normal (0); with an InitiateResponse when the RLRQ carried one."""
    body = b"\x80\x01\x00"
    if user_info is not None:
        body += _tlv(0xBE, _tlv(0x04, user_info))
    return _tlv(RLRE, body)
