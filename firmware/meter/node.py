# The minimal ECHONET Lite node the terminal must be on the LAN: the node profile (0x0EF001) and
# the controller (0x05FF01) answer Gets and INF_REQs from their property tables, refuse every Set
# (nothing on the terminal is writable over the LAN) and acknowledge INFC. One responder serves
# every meter's transport (the terminal has one node, however many meters it reads); its tables
# and answer buffer are built on the first request to our node.
from firmware.compat import const
from firmware.meter import echonet
from firmware.meter.echonet import EchonetError

_TX_LEN = const(256)  # our node-profile answers are small

# Node profile / controller property values the terminal reports
_ON = b"\x30"
_NP_VERSION = b"\x01\x0e\x01\x00"  # node profile: spec 1.14, Format 1 supported
_DEV_RELEASE = b"\x00\x00R\x00"  # device object: APPENDIX Release R
_NO_FAULT = b"\x42"
_LOCATION_UNSET = b"\x00"
_NP_INF_MAP = (0x80, 0xD5)
_NP_GET = (0x80, 0x82, 0x83, 0x8A, 0x9D, 0x9E, 0x9F, 0xD3, 0xD4, 0xD6, 0xD7)
_CT_INF_MAP = (0x80, 0x81, 0x88)
_CT_GET = (0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x9D, 0x9E, 0x9F)


class NodeResponder:
    def __init__(self, identity=None):
        """identity: (maker_code, unique13) for the terminal's 0x83/0x8A; default unregistered."""
        maker, unique = identity or (0xFFFFFF, bytes(13))
        if len(unique) != 13:
            raise ValueError("identity: unique part must be 13 bytes")
        self._maker3 = bytes(((maker >> 16) & 0xFF, (maker >> 8) & 0xFF, maker & 0xFF))
        self._unique = bytes(unique)
        self._np = self._ct = None
        self._ans = None  # answer buffer: allocated with the tables

    @staticmethod
    def _node_profile_props(maker3, ident):
        return {
            0x80: _ON,
            0x82: _NP_VERSION,
            0x83: ident,
            0x8A: maker3,
            0x9D: echonet.encode_propmap(_NP_INF_MAP),
            0x9E: echonet.encode_propmap(()),
            0x9F: echonet.encode_propmap(_NP_GET),
            0xD3: b"\x00\x00\x01",  # one instance besides the node profile
            0xD4: b"\x00\x02",  # two classes including the node profile
            0xD6: b"\x01\x05\xff\x01",
            0xD7: b"\x01\x05\xff",
        }

    @staticmethod
    def _controller_props(maker3, ident):
        return {
            0x80: _ON,
            0x81: _LOCATION_UNSET,
            0x82: _DEV_RELEASE,
            0x83: ident,
            0x88: _NO_FAULT,
            0x8A: maker3,
            0x9D: echonet.encode_propmap(_CT_INF_MAP),
            0x9E: echonet.encode_propmap(()),
            0x9F: echonet.encode_propmap(_CT_GET),
        }

    def answer(self, f, addr, ep):
        """Answer a request addressed to the terminal's node profile or controller through `ep`.
        "answered", "dropped" (not an object of ours, an ESV we do not answer, an echo too large
        to encode) or the EchonetError that prevented the answer."""
        if self._np is None:
            self._ans = bytearray(_TX_LEN)
            ident = b"\xfe" + self._maker3 + self._unique
            self._np = self._node_profile_props(self._maker3, ident)
            self._ct = self._controller_props(self._maker3, ident)
        if echonet.eoj_matches(f.deoj, echonet.EOJ_NODE_PROFILE):
            own, table = echonet.EOJ_NODE_PROFILE, self._np
        elif echonet.eoj_matches(f.deoj, echonet.EOJ_CONTROLLER):
            own, table = echonet.EOJ_CONTROLLER, self._ct
        else:
            return "dropped"  # not an object of ours: no response (spec practice)
        esv = f.esv
        get_props = None
        if esv == echonet.GET or esv == echonet.INF_REQ:
            props = []
            ok = True
            for e, _ in f.props:
                v = table.get(e)
                ok = ok and v is not None
                props.append((e, v))
            if esv == echonet.GET:
                resp = echonet.GET_RES if ok else echonet.GET_SNA
            else:
                resp = echonet.INF if ok else echonet.INF_SNA
        elif esv == echonet.SETC or esv == echonet.SETI:
            # Nothing on the terminal is writable over the LAN: refuse, echoing the EDTs.
            props = f.props
            resp = echonet.SETC_SNA if esv == echonet.SETC else echonet.SETI_SNA
        elif esv == echonet.SETGET:
            props = f.props
            get_props = [(e, table.get(e)) for e, _ in f.get_props]
            resp = echonet.SETGET_SNA
        elif esv == echonet.INFC:
            props = [(e, None) for e, _ in f.props]
            resp = echonet.INFC_RES
        else:
            return "dropped"
        try:
            n = echonet.encode_into(self._ans, f.tid, own, f.seoj, resp, props, get_props)
        except EchonetError as e:  # e.g. a huge SetC to echo: drop rather than answer wrongly
            return e
        ep.sendto(memoryview(self._ans)[:n], addr)
        return "answered"
