# IEC 62056-47 wrapper (WPDU): version 0x0001 | source wPort | destination wPort | APDU length,
# each a big-endian uint16, then the APDU. On UDP one WPDU is one datagram.
import struct

from firmware.compat import const

HEADER_LEN = const(8)
VERSION = const(1)


class WrapperError(ValueError):
    """Malformed WPDU."""


def parse(data):
    """(source wPort, destination wPort, APDU memoryview) of one WPDU datagram."""
    n = len(data)
    if n < HEADER_LEN:
        raise WrapperError("WPDU too short (%d bytes)" % n)
    ver, src, dst, length = struct.unpack_from(">HHHH", data, 0)
    if ver != VERSION:
        raise WrapperError("WPDU version %d != 1" % ver)
    if length != n - HEADER_LEN:
        raise WrapperError("WPDU length field %d but %d APDU bytes" % (length, n - HEADER_LEN))
    if length == 0:
        raise WrapperError("WPDU carries no APDU")
    mv = data if isinstance(data, memoryview) else memoryview(data)
    return src, dst, mv[HEADER_LEN:]


def pack_header_into(buf, off, src, dst, apdu_len):
    struct.pack_into(">HHHH", buf, off, VERSION, src, dst, apdu_len)


def build(src, dst, apdu):
    out = bytearray(HEADER_LEN + len(apdu))
    pack_header_into(out, 0, src, dst, len(apdu))
    out[HEADER_LEN:] = apdu
    return bytes(out)
