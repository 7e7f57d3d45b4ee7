# ECHONET Lite Format 1 frame codec (see docs/echonet.md).
#
# decode() validates a whole datagram before returning anything, so a caller never acts on half a
# frame. EDTs are memoryview slices of the caller's buffer (no copies): copy what you keep before
# the buffer is reused. encode_into() writes into a preallocated bytearray and returns the length.
import struct

from firmware.compat import const

EHD1 = const(0x10)
EHD2_FORMAT1 = const(0x81)
HEADER_LEN = const(12)  # EHD1 EHD2 TID(2) SEOJ(3) DEOJ(3) ESV OPC

# Service codes (ESV)
SETI = const(0x60)
SETC = const(0x61)
GET = const(0x62)
INF_REQ = const(0x63)
SETGET = const(0x6E)
SET_RES = const(0x71)
GET_RES = const(0x72)
INF = const(0x73)
INFC = const(0x74)
INFC_RES = const(0x7A)
SETGET_RES = const(0x7E)
SETI_SNA = const(0x50)
SETC_SNA = const(0x51)
GET_SNA = const(0x52)
INF_SNA = const(0x53)
SETGET_SNA = const(0x5E)

_KNOWN_ESV = (SETI, SETC, GET, INF_REQ, SETGET, SET_RES, GET_RES, INF, INFC, INFC_RES,
              SETGET_RES, SETI_SNA, SETC_SNA, GET_SNA, INF_SNA, SETGET_SNA)
_SETGET_FAMILY = (SETGET, SETGET_RES, SETGET_SNA)

# Objects (EOJ as 24-bit ints: class group << 16 | class << 8 | instance)
EOJ_NODE_PROFILE = const(0x0EF001)
EOJ_CONTROLLER = const(0x05FF01)
MAX_INSTANCES = const(84)  # capacity of a 0xD5/0xD6 instance list (253-byte EDT)
EOJ_DR_METER = const(0x028E01)  # distributed generator's electric energy meter, instance 1


class EchonetError(ValueError):
    pass


def is_request(esv):
    """True for the ESVs a node must answer (0x60..0x6F)."""
    return 0x60 <= esv <= 0x6F


def class_of(eoj):
    return eoj >> 8


def eoj_matches(deoj, own):
    """A DEOJ addresses `own` if equal, or if it names own's class with instance 0 (= all)."""
    return deoj == own or (deoj & 0xFF == 0 and deoj >> 8 == own >> 8)


class Frame:
    def __init__(self, tid, seoj, deoj, esv, props, get_props=None):
        self.tid = tid
        self.seoj = seoj
        self.deoj = deoj
        self.esv = esv
        self.props = props  # [(epc, edt)], for SetGet the Set part
        self.get_props = get_props  # SetGet family only: the Get part

    def edt(self, epc):
        """EDT of the first property `epc` in props, or None if absent."""
        for e, d in self.props:
            if e == epc:
                return d
        return None

    def epcs(self):
        return [e for e, _ in self.props]

    def __repr__(self):
        return "Frame(tid=0x%04X seoj=0x%06X deoj=0x%06X esv=0x%02X epcs=%s)" % (
            self.tid, self.seoj, self.deoj, self.esv, " ".join("%02X" % e for e in self.epcs()))


def _props(mv, off, end, count, what):
    out = []
    for i in range(count):
        if off + 2 > end:
            raise EchonetError("%s property %d of %d: frame ends at EPC/PDC"
                               % (what, i + 1, count))
        epc = mv[off]
        pdc = mv[off + 1]
        off += 2
        if off + pdc > end:
            raise EchonetError(
                "%s EPC 0x%02X: PDC %d overruns the frame (%d bytes left)"
                % (what, epc, pdc, end - off))
        out.append((epc, mv[off:off + pdc]))
        off += pdc
    return out, off


def frame_end(buf, off, end):
    """End offset of the Format 1 frame that starts at buf[off] within buf[:end], found from
    its own structure (header, OPC, then EPC/PDC/EDT per property; SetGet has a second list):
    frames delimit themselves, so several read back to back into one buffer can be split.
    Returns `end` when no frame can be delimited there (decode() then says why)."""
    if end - off < HEADER_LEN or buf[off] != EHD1 or buf[off + 1] != EHD2_FORMAT1:
        return end
    lists = 2 if buf[off + 10] in _SETGET_FAMILY else 1
    p = off + HEADER_LEN
    opc = buf[off + 11]
    for k in range(lists):
        if k:
            if p >= end:
                return end
            opc = buf[p]
            p += 1
        for _ in range(opc):
            if p + 2 > end:
                return end
            p += 2 + buf[p + 1]
    return p if p <= end else end


def each_frame(buf, n, fn, addr):
    """fn(view, length, addr) for every frame in buf[:n], which may hold several datagrams back
    to back (MicroPython's readinto on a socket reads on while datagrams are queued); a last
    frame cut by a full buffer reaches fn as it is (and decode() rejects it)."""
    off = 0
    while off < n:
        end = frame_end(buf, off, n)
        if off == 0 and end == n:
            fn(buf, n, addr)  # one frame: no view needed
        else:
            fn(memoryview(buf)[off:end], end - off, addr)
        off = end


def decode(buf, n=None):
    """Parse one datagram (buf[:n]) into a Frame; raise EchonetError if it is not a valid
    Format 1 ECHONET Lite frame in every byte."""
    if n is None:
        n = len(buf)
    if n < HEADER_LEN:
        raise EchonetError("frame too short: %d bytes (minimum 12)" % n)
    mv = memoryview(buf)
    if mv[0] != EHD1:
        raise EchonetError("EHD1 0x%02X is not ECHONET Lite (0x10)" % mv[0])
    if mv[1] != EHD2_FORMAT1:
        raise EchonetError("EHD2 0x%02X: only Format 1 (0x81) is accepted" % mv[1])
    tid = (mv[2] << 8) | mv[3]
    seoj = (mv[4] << 16) | (mv[5] << 8) | mv[6]
    deoj = (mv[7] << 16) | (mv[8] << 8) | mv[9]
    esv = mv[10]
    if esv not in _KNOWN_ESV:
        raise EchonetError("unknown ESV 0x%02X" % esv)
    opc = mv[11]
    if esv in _SETGET_FAMILY:
        props, off = _props(mv, HEADER_LEN, n, opc, "set")
        if off >= n:
            raise EchonetError("SetGet frame ends before OPCGet")
        opc_get = mv[off]
        get_props, off = _props(mv, off + 1, n, opc_get, "get")
        if opc == 0 and opc_get == 0:
            raise EchonetError("SetGet with OPCSet = OPCGet = 0")
    else:
        if opc == 0:
            raise EchonetError("OPC 0 (no properties)")
        props, off = _props(mv, HEADER_LEN, n, opc, "frame")
        get_props = None
    if off != n:
        raise EchonetError("%d trailing bytes after the last property" % (n - off))
    return Frame(tid, seoj, deoj, esv, props, get_props)


def _put_props(buf, off, props):
    for epc, edt in props:
        pdc = 0 if edt is None else len(edt)
        if pdc > 255:
            raise EchonetError("EPC 0x%02X: EDT of %d bytes (max 255)" % (epc, pdc))
        if off + 2 + pdc > len(buf):
            raise EchonetError("encode buffer of %d bytes too small" % len(buf))
        buf[off] = epc
        buf[off + 1] = pdc
        off += 2
        if pdc:
            buf[off:off + pdc] = edt
            off += pdc
    return off


def encode_into(buf, tid, seoj, deoj, esv, props, get_props=None):
    """Write a frame into buf; props is [(epc, edt or None)], None/empty meaning PDC 0.
    For the SetGet family, props is the Set part and get_props the Get part.
    Returns the frame length."""
    if len(buf) < HEADER_LEN + 1:
        raise EchonetError("encode buffer of %d bytes too small" % len(buf))
    struct.pack_into(">BBHBHBHB", buf, 0, EHD1, EHD2_FORMAT1, tid & 0xFFFF,
                     (seoj >> 16) & 0xFF, seoj & 0xFFFF, (deoj >> 16) & 0xFF, deoj & 0xFFFF, esv)
    if len(props) > 255 or (get_props is not None and len(get_props) > 255):
        raise EchonetError("too many properties (max 255)")
    if esv in _SETGET_FAMILY:
        buf[11] = len(props)
        off = _put_props(buf, HEADER_LEN, props)
        gp = get_props or ()
        if off >= len(buf):
            raise EchonetError("encode buffer of %d bytes too small" % len(buf))
        buf[off] = len(gp)
        return _put_props(buf, off + 1, gp)
    if not props:
        raise EchonetError("a frame needs at least one property")
    buf[11] = len(props)
    return _put_props(buf, HEADER_LEN, props)


def encode_get(buf, tid, seoj, deoj, epcs, esv=GET):
    """A request listing EPCs with PDC 0 (Get, INF_REQ)."""
    return encode_into(buf, tid, seoj, deoj, esv, [(e, None) for e in epcs])


# Property maps (0x9D/0x9E/0x9F): count byte, then either the EPCs (count < 16) or a 16-byte
# bitmap where byte 1+i bit b means EPC ((b + 8) << 4) | i.


def decode_propmap(edt):
    """Sorted list of EPCs in a property map EDT; EchonetError if inconsistent."""
    if len(edt) < 1:
        raise EchonetError("property map: empty EDT")
    count = edt[0]
    if count < 16:
        if len(edt) != 1 + count:
            raise EchonetError("property map: count %d but %d EPC bytes" % (count, len(edt) - 1))
        out = sorted(edt[1:])
        for e in out:
            if e < 0x80:
                raise EchonetError("property map: EPC 0x%02X out of range" % e)
        for i in range(1, len(out)):
            if out[i] == out[i - 1]:
                raise EchonetError("property map: EPC 0x%02X listed twice" % out[i])
        return out
    if len(edt) != 17:
        raise EchonetError("property map: count %d needs a 17-byte EDT, got %d"
                           % (count, len(edt)))
    out = []
    for b in range(8):
        for i in range(16):
            if edt[1 + i] & (1 << b):
                out.append(((b + 8) << 4) | i)
    if len(out) != count:
        raise EchonetError("property map: count %d but bitmap holds %d" % (count, len(out)))
    out.sort()
    return out


def parse_instance_list(edt):
    """[EOJ] of a node profile's instance list (0xD5/0xD6 EDT): count (1 byte) + count x 3-byte
    EOJ, nothing else; EchonetError otherwise. Used by discovery and by the meter object choice."""
    n = len(edt)
    if n < 1:
        raise EchonetError("instance list: empty EDT")
    count = edt[0]
    if count > MAX_INSTANCES:
        raise EchonetError("instance list: count %d above %d" % (count, MAX_INSTANCES))
    if n != 1 + 3 * count:
        raise EchonetError("instance list: count %d needs %d bytes, EDT has %d"
                           % (count, 1 + 3 * count, n))
    out = []
    for i in range(1, n, 3):
        out.append((edt[i] << 16) | (edt[i + 1] << 8) | edt[i + 2])
    return out


def encode_propmap(epcs):
    """Property-map EDT for a collection of EPCs (0x80..0xFF), list form below 16 entries."""
    s = sorted(set(epcs))
    for e in s:
        if not 0x80 <= e <= 0xFF:
            raise EchonetError("property map: EPC 0x%02X out of range" % e)
    if len(s) < 16:
        return bytes([len(s)] + s)
    out = bytearray(17)
    out[0] = len(s)
    for e in s:
        out[1 + (e & 0x0F)] |= 1 << ((e >> 4) - 8)
    return bytes(out)
