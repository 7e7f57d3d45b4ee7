# The terminal as a DLMS *client* of the smart meter, for one job: the commissioning round trip
# (and reading the smart meter's clock while at it). Public client, LN referencing, no security:
# AARQ -> AARE, GET clock 0.0.1.0.0.255 attribute 2 -> date-time, RLRQ -> RLRE. The requests are
# fixed bytes (reference dlms-cosem.md §4.6 / §4.3 / §4.4); the replies are checked in place.
# Which SAPs the smart meter serves is not public (SPEC): docs/commissioning.md.
import binascii

from firmware.cosem import axdr, wrapper

# AARQ LN, no security, proposed conformance 00 7E 1F, max PDU 1200 (Green Book example)
AARQ = binascii.unhexlify("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
GET_CLOCK = binascii.unhexlify("C001C100080000010000FF0200")
RLRQ = binascii.unhexlify("6203800100")


class ProbeError(ValueError):
    """The smart meter's reply is not what the probe asked for."""


def wpdu(client_sap, server_sap, apdu):
    return wrapper.build(client_sap, server_sap, apdu)


def _apdu(data, client_sap, server_sap):
    try:
        src, dst, apdu = wrapper.parse(data)
    except wrapper.WrapperError as e:
        raise ProbeError("reply is not a DLMS wrapper datagram (%s)" % e)
    if src != server_sap or dst != client_sap:
        raise ProbeError("reply from wPort %d to %d, expected %d to %d"
                         % (src, dst, server_sap, client_sap))
    return apdu


def check_aare(data, client_sap, server_sap):
    """None when the association was accepted, else the reason (result/diagnostic)."""
    a = _apdu(data, client_sap, server_sap)
    if len(a) < 2 or a[0] != 0x61:
        if len(a) and a[0] == 0xD8:
            return "exception response %s" % binascii.hexlify(bytes(a)).decode()
        raise ProbeError("reply is not an AARE (tag 0x%02X)" % (a[0] if len(a) else 0))
    b = bytes(a)
    i = b.find(b"\xA2\x03\x02\x01")
    if i < 0 or i + 4 >= len(b):
        raise ProbeError("AARE without a result")
    result = b[i + 4]
    if result == 0:
        return None
    j = b.find(b"\xA3\x05\xA1\x03\x02\x01")
    diag = b[j + 6] if 0 <= j and j + 6 < len(b) else -1
    return "association rejected (result %d, diagnostic %d)" % (result, diag)


def parse_clock(data, client_sap, server_sap, deviation_sign, offset_min):
    """t2k of the smart meter's clock from a GET-Response-Normal to GET_CLOCK."""
    a = _apdu(data, client_sap, server_sap)
    if len(a) < 4 or a[0] != 0xC4 or a[1] != 0x01:
        raise ProbeError("reply is not a GET-Response-Normal")
    if a[3] != 0:
        raise ProbeError("GET clock refused (data-access-result %d)"
                         % (a[4] if len(a) > 4 else -1))
    if len(a) != 18 or a[4] != 0x09 or a[5] != 12:
        raise ProbeError("clock value is not a 12-byte octet-string")
    try:
        return axdr.parse_datetime(bytes(a[6:18]), deviation_sign, offset_min)
    except axdr.AxdrError as e:
        raise ProbeError("clock value: %s" % e)


def check_rlre(data, client_sap, server_sap):
    a = _apdu(data, client_sap, server_sap)
    if len(a) < 1 or a[0] != 0x63:
        raise ProbeError("reply is not an RLRE")
