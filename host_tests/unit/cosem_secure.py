# A minimal suite-0 client for the unit tests (no tests here): builds a ciphered HLS-GMAC AARQ,
# runs pass 3 and protects/unprotects requests with firmware/cosem/security.py. The independent
# checks are the gurux and dlms-cosem interop tests.
import struct

from cosem_fakes import make_server

from firmware.cosem import security as sec
from firmware.hal import aes

H = bytes.fromhex
EK = H("000102030405060708090A0B0C0D0E0F")
AK = H("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = H("4D4D4D0000000001")
SERVER_TITLE = H("5858580000000001")
CTOS = b"K56iVagYK56iVagY"
STOC = b"P6wRJ21FP6wRJ21F"
INITIATE = H("01000000065F1F0400007E1F04B0")
SECURE_CFG = {"mgmt_mechanism": "gmac", "mgmt_ek": EK.hex(), "mgmt_ak": AK.hex(),
              "ic_block": 4}


class FakeState:
    def __init__(self):
        self.values = {}
        self.writes = 0

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = value
        self.writes += 1


def make_secure_server(config=None, state=None, view=None):
    cfg = dict(SECURE_CFG)
    if config:
        cfg.update(config)
    events = []
    srv, clock, view = make_server(view=view, config=cfg, aes_ecb=aes.ecb,
                                   ic_state=state if state is not None else FakeState(),
                                   rng=lambda n: STOC[:n])
    srv.event = lambda code, detail=0: events.append((code, detail))
    return srv, clock, view, events


def tlv(tag, body):
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    return bytes((tag, 0x81, n)) + body


class SecClient:
    """Talks to a CosemServer through handle_apdu with suite 0."""

    def __init__(self, srv, sap=1, title=CLIENT_TITLE, ek=EK, ak=AK, ic=100, general=False,
                 sc=sec.SC_AUTH_ENC):
        self.srv = srv
        self.sap = sap
        self.title = title
        self.keys = sec.Keys(aes.ecb, ek, ak)
        self.ic = ic
        self.general = general
        self.sc = sc
        self.server_ic = 0
        self.stoc = None
        self.last_request = None

    def take(self):
        self.ic += 1
        return self.ic

    def aarq(self, mechanism=5, ctos=CTOS, initiate=INITIATE):
        glo = sec.seal(self.keys, self.title, self.take(), sec.SC_AUTH_ENC, initiate)
        body = tlv(0xA1, H("060760857405080103"))
        body += tlv(0xA6, tlv(0x04, self.title))
        body += H("8A020780") + tlv(0x8B, H("608574050802") + bytes((mechanism,)))
        body += tlv(0xAC, tlv(0x80, ctos))
        body += tlv(0xBE, tlv(0x04, glo))
        return tlv(0x60, body)

    def associate(self, check=True):
        """AARQ then pass 3; returns the AARE."""
        aare = self.srv.handle_apdu(self.aarq(), self.sap)
        if check:
            assert H("A203020100") in aare, aare.hex()
            i = aare.index(H("AA128010"))
            self.stoc = aare[i + 4:i + 20]
            self.pass3()
        return aare

    def pass3(self, stoc=None, ic=None):
        ic = self.take() if ic is None else ic
        reply = sec.hls_reply(self.keys, self.title, ic, stoc or self.stoc)
        action = H("C301C1000F0000280000FF0101") + bytes((0x09, len(reply))) + reply
        return self.request(action)

    def protect(self, plain, ic=None):
        ic = self.take() if ic is None else ic
        return sec.seal(self.keys, self.title, ic, self.sc, plain, self.general)

    def request(self, plain, ic=None):
        """Send a protected request; returns the unprotected reply (or the plain exception)."""
        apdu = self.protect(plain, ic)
        self.last_request = apdu
        return self.open(self.srv.handle_apdu(apdu, self.sap))

    def open(self, reply):
        if reply is None or reply[0] == 0xD8:
            return reply
        plain, f = sec.unseal(self.keys, SERVER_TITLE, reply)
        assert f.ic > self.server_ic, (f.ic, self.server_ic)
        self.server_ic = f.ic
        self.last_frame = f
        return plain


def get_next(block, invoke=0xC1):
    return bytes((0xC0, 0x02, invoke)) + struct.pack(">I", block)
