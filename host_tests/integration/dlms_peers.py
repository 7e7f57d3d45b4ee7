"""Independent DLMS peers shared by the interop and twin tests (test-only; gurux-dlms GPLv2,
dlms-cosem BSL, never shipped): dlms-cosem's missing UDP IO (one wrapped APDU per datagram) and
the decoding of a (protected) pushed DataNotification by each library."""

import re
import socket

from dlms_cosem.protocol.xdlms import DataNotification, GeneralGlobalCipher
from gurux_dlms import GXByteBuffer, GXDLMSTranslator
from gurux_dlms.enums import Security

from firmware.cosem import wrapper


class UdpTransport:
    """dlms-cosem ships no UDP IO: one wrapped APDU per datagram, from `local_ip` (port 0 = any,
    or a fixed one, e.g. the air-side peer port the J11 emulator maps to a radio MAC)."""

    def __init__(self, addr, client_sap, server_sap=1, local_ip="127.0.0.42", local_port=0,
                 timeout_s=3):
        self.addr = addr
        self.client_sap = client_sap
        self.server_sap = server_sap
        self.local = (local_ip, local_port)
        self.timeout_s = timeout_s
        self.sock = None
        self.sent = []

    def connect(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(self.local)
        self.sock.settimeout(self.timeout_s)

    def disconnect(self):
        self.sock.close()

    def send_request(self, apdu):
        self.sent.append(bytes(apdu))
        self.sock.sendto(wrapper.build(self.client_sap, self.server_sap, apdu), self.addr)
        return wrapper.parse(self.sock.recv(4096))[2]


def cosem_open_push(apdu, ek, ak):
    """dlms-cosem: (DataNotification, sender system title, invocation counter) of a
    general-glo-ciphered pushed APDU, decrypted and verified with the keys."""
    g = GeneralGlobalCipher.from_bytes(bytes(apdu))
    plain = g.to_plain_apdu(ek, ak)
    return DataNotification.from_bytes(plain), g.system_title, g.invocation_counter


def gurux_push_row(apdu, ek=None, ak=None, title=None):
    """(clock octets, +A, -A, status) of a pushed DataNotification as gurux-dlms's translator
    decodes it; with keys, a general-glo-ciphered one is decrypted first (the translator puts the
    deciphered PDU in a comment; no comment = it did not verify)."""
    t = GXDLMSTranslator()
    if ek is not None:
        t.security = Security.AUTHENTICATION_ENCRYPTION
        t.blockCipherKey = bytes(ek)
        t.authenticationKey = bytes(ak)
        t.systemTitle = bytes(title)
        t.serverSystemTitle = bytes(title)
        t.comments = True
    xml = t.pduToXml(GXByteBuffer(bytes(apdu)))
    assert "<DataNotification>" in xml, xml
    body = xml[xml.index("<NotificationBody>"):]
    clock = re.search(r'<OctetString Value="([0-9A-F]+)"', body).group(1)
    ints = [int(v, 16) for v in re.findall(r'<UInt(?:32|64) Value="([0-9A-F]+)"', body)]
    status = int(re.search(r'<UInt8 Value="([0-9A-F]+)"', body).group(1), 16)
    return bytes.fromhex(clock), ints[0], ints[1], status
