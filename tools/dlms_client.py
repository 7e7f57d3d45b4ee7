"""Host-side DLMS/COSEM client over the UDP wrapper: public client, LLS client, or (with keys) an
HLS-GMAC client with security suite 0 (authenticated encryption, glo or general-glo form).

`DlmsClient` is sans-IO: it builds request APDUs/WPDUs and parses responses, including GET block
transfer reassembly. `AsyncDlmsUdpClient` runs it over an asyncio datagram endpoint with timeouts
and retries; the simulation's head-end (tools/headend.py) uses it. It reuses the firmware's A-XDR
and ACSE codecs and firmware/cosem/security.py, so a codec bug shows up on both sides; the
Gurux and dlms-cosem interop tests are the independent check.
"""

import asyncio
import os
import struct

from firmware.cosem import acse, axdr, wrapper
from firmware.cosem import security as sec
from firmware.cosem.objects import obis

ASSOCIATION_LN = "0.0.40.0.0.255"

CLOCK_LN = "0.0.1.0.0.255"
PROFILE_LN = "1.0.99.1.0.255"
CLASS_CLOCK = 8
CLASS_REGISTER = 3
CLASS_PROFILE = 7
# what we propose: block-transfer-with-get, multiple-references, get, set, selective, action
PROPOSED_CONFORMANCE = 0x00121D


class DlmsError(Exception):
    """A DLMS-level failure (rejected association, DataAccessResult, exception response)."""


class AssociationRejected(DlmsError):
    def __init__(self, result, diagnostic, initiate_error=None):
        DlmsError.__init__(
            self,
            "association rejected: result %d diagnostic %d%s"
            % (
                result,
                diagnostic,
                "" if initiate_error is None else " initiate-error %d" % initiate_error,
            ),
        )
        self.result = result
        self.diagnostic = diagnostic
        self.initiate_error = initiate_error


class StaleResponse(DlmsError):
    """A protected response whose invocation counter is not above the last accepted one: a late
    duplicate (the radio repeated it, or it answers an earlier try); ignored, never a value."""


class DataAccessError(DlmsError):
    def __init__(self, code, what=""):
        DlmsError.__init__(self, "data-access-result %d %s" % (code, what))
        self.code = code


class ExceptionResponse(DlmsError):
    def __init__(self, state_error, service_error):
        DlmsError.__init__(self, "exception-response %d/%d" % (state_error, service_error))
        self.state_error = state_error
        self.service_error = service_error


def _ln(x):
    return obis(x) if isinstance(x, str) else bytes(x)


class DlmsClient:
    """Sans-IO client. build_* return WPDU bytes; parse_*/feed_* take received WPDU bytes."""

    def __init__(
        self,
        client_sap=16,
        server_sap=1,
        password=None,
        max_pdu=0xFFFF,
        time_zone_min=-540,
        deviation_sign=-1,
        conformance=PROPOSED_CONFORMANCE,
        ek=None,
        ak=None,
        system_title=b"SIM00001",
        general=False,
        security_control=sec.SC_AUTH_ENC,
        invocation_counter=0,
    ):
        """ek/ak (16 bytes each): HLS-GMAC with every request protected (general: DB form,
        else glo tags C8/C9/CB); system_title: ours (8 bytes)."""
        self.keys = None
        if ek is not None:
            from firmware.hal import aes

            self.keys = sec.Keys(aes.ecb, ek, ak)
        self.title = bytes(system_title)
        self.general = general
        self.sc = security_control
        self.ic = invocation_counter  # the last one used
        self.server_title = None
        self.server_ic = -1  # the last one accepted from the server
        self.ctos = None
        self.stoc = None
        self.hls_pending = False
        self._last_plain = None  # the last request APDU, protected again (new IC) on a retry
        self.client_sap = client_sap
        self.server_sap = server_sap
        self.password = password.encode() if isinstance(password, str) else password
        self.max_pdu = max_pdu
        self.time_zone = time_zone_min
        self.deviation_sign = deviation_sign
        self.offset_min = time_zone_min * (-1 if deviation_sign < 0 else 1)
        self.conformance = conformance
        self.negotiated = None
        self.server_max_pdu = None
        self._invoke = 0
        self._block = None  # GET transfer in progress: (invoke, expected block, bytearray)

    # --- framing ---------------------------------------------------------------------------

    def wrap(self, apdu):
        """The WPDU of a request; with keys, GET/SET/ACTION go out protected."""
        self._last_plain = apdu
        if self.keys is not None and apdu[0] in (0xC0, 0xC1, 0xC3):
            self.ic += 1
            apdu = sec.seal(self.keys, self.title, self.ic, self.sc, apdu, self.general)
        return wrapper.build(self.client_sap, self.server_sap, apdu)

    def rewrap(self):
        """The last request again for a retry: protected with a new invocation counter (the
        server rejects a repeated one as a replay); an AARQ is built anew."""
        if self._last_plain is not None and self._last_plain[0] == acse.AARQ and self.keys:
            return self.build_aarq()
        return self.wrap(self._last_plain)

    def unwrap(self, wpdu):
        src, dst, apdu = wrapper.parse(wpdu)
        if src != self.server_sap or dst != self.client_sap:
            raise DlmsError("WPDU from wPort %d to %d is not for us" % (src, dst))
        apdu = bytes(apdu)
        if self.keys is not None and apdu[:1] in (b"\xcc", b"\xcd", b"\xcf", b"\xdb"):
            return self._unprotect(apdu)
        return apdu

    def _unprotect(self, apdu):
        try:
            plain, f = sec.unseal(self.keys, self.server_title, apdu)
        except sec.SecurityError as e:
            raise DlmsError("protected response: %s" % e) from None
        if f.title is not None and f.title != self.server_title:
            raise DlmsError("protected response from another system title")
        if f.ic <= self.server_ic:
            raise StaleResponse("server invocation counter %d repeated" % f.ic)
        self.server_ic = f.ic
        return plain

    def _next_invoke(self):
        self._invoke = self._invoke % 15 + 1
        return 0xC0 | self._invoke  # high priority, confirmed

    # --- association -----------------------------------------------------------------------

    def build_aarq(self):
        c = self.conformance
        ui = bytes((1, 0, 0, 0, 6, 0x5F, 0x1F, 0x04, 0x00, c >> 16, (c >> 8) & 0xFF, c & 0xFF))
        ui += struct.pack(">H", self.max_pdu)
        if self.keys is not None:
            self.ic += 1
            ui = sec.seal(self.keys, self.title, self.ic, sec.SC_AUTH_ENC, ui)
            self.ctos = os.urandom(16)
            body = bytes.fromhex("A109060760857405080103A60A0408") + self.title
            body += bytes.fromhex("8A0207808B0760857405080205")
            body += bytes((0xAC, 18, 0x80, 16)) + self.ctos
        else:
            body = bytes.fromhex("A109060760857405080101")
        if self.password is not None and self.keys is None:
            pw = self.password
            body += bytes.fromhex("8A0207808B0760857405080201")
            body += bytes((0xAC, len(pw) + 2, 0x80, len(pw))) + pw
        body += bytes((0xBE, len(ui) + 2, 0x04, len(ui))) + ui
        apdu = bytes((0x60, len(body))) + body
        self._last_plain = apdu
        return wrapper.build(self.client_sap, self.server_sap, apdu)

    def parse_aare(self, wpdu):
        apdu = memoryview(self.unwrap(wpdu))
        if len(apdu) < 2 or apdu[0] != acse.AARE:
            self._raise_exception(bytes(apdu))
            raise DlmsError("expected an AARE, got %s" % bytes(apdu[:4]).hex())
        result = diag = None
        ui = None
        n, p = acse._ber_len(apdu, 1, len(apdu))
        for tag, s, e in acse.iter_tlvs(apdu, p, p + n):
            if tag == 0xA2:
                result = apdu[e - 1]
            elif tag == 0xA3:
                diag = apdu[e - 1]
            elif tag == 0xBE:
                ui = bytes(apdu[s + 2 : e])
            elif tag == 0xA4 and e - s == 10:
                self.server_title = bytes(apdu[s + 2 : e])
            elif tag == 0xAA:
                self.stoc = bytes(apdu[s + 2 : e])
        if result is None or diag is None:
            raise DlmsError("AARE without result/diagnostic")
        if ui and ui[0] == acse.GLO_INITIATE_RESPONSE and self.keys is not None:
            ui = self._unprotect(ui)
        if result != 0:
            err = ui[3] if ui and ui[0] == acse.CONFIRMED_SERVICE_ERROR and len(ui) >= 4 else None
            raise AssociationRejected(result, diag, err)
        if not ui or ui[0] != acse.INITIATE_RESPONSE or len(ui) < 14:
            raise DlmsError("AARE without InitiateResponse")
        self.negotiated = (ui[7] << 16) | (ui[8] << 8) | ui[9]
        self.server_max_pdu = struct.unpack_from(">H", ui, 10)[0]
        self.hls_pending = diag == acse.DIAG_AUTHENTICATION_REQUIRED
        if self.hls_pending and (self.keys is None or not self.stoc):
            raise DlmsError("HLS requested without keys or challenge")
        return self.negotiated

    def build_hls_reply(self):
        """HLS pass 3: reply_to_HLS_authentication with 10 | IC | GMAC(StoC)."""
        self.ic += 1
        reply = sec.hls_reply(self.keys, self.title, self.ic, self.stoc)
        return self.build_action(15, ASSOCIATION_LN, 1, bytes((0x09, len(reply))) + reply)

    def parse_hls_result(self, wpdu):
        """HLS pass 4: the server's f(CtoS) must verify; True, or None for a stale answer."""
        apdu = self.unwrap(wpdu)
        self._raise_exception(apdu)
        if len(apdu) < 4 or apdu[0] != 0xC7 or apdu[1] != 1:
            raise DlmsError("expected an ACTION-Response, got %s" % apdu[:4].hex())
        if apdu[2] & 0x0F != self._invoke:
            return None
        if apdu[3] != 0:
            raise AssociationRejected(1, acse.DIAG_AUTHENTICATION_FAILURE)
        if apdu[4:8] != b"\x01\x00\x09\x11" or not sec.check_hls_reply(
                self.keys, self.server_title, self.ctos, apdu[8:]):
            raise DlmsError("the server's HLS proof does not verify")
        self.hls_pending = False
        return True

    def build_rlrq(self):
        return self.wrap(bytes.fromhex("6203800100"))

    def parse_rlre(self, wpdu):
        apdu = self.unwrap(wpdu)
        if not apdu or apdu[0] != acse.RLRE:
            raise DlmsError("expected an RLRE, got %s" % apdu[:4].hex())
        return True

    # --- GET -------------------------------------------------------------------------------

    def build_get(self, class_id, ln, attr, access=None):
        """GET-Request-Normal; access = selective-access bytes `selector + parameters`."""
        inv = self._next_invoke()
        self._block = None
        apdu = bytes((0xC0, 0x01, inv)) + struct.pack(">H", class_id) + _ln(ln)
        apdu += struct.pack(">b", attr)
        apdu += b"\x00" if access is None else b"\x01" + access
        return self.wrap(apdu)

    def build_get_next(self, block):
        return self.wrap(bytes((0xC0, 0x02, 0xC0 | self._invoke)) + struct.pack(">I", block))

    def feed_get(self, wpdu):
        """(True, raw A-XDR data) when complete, or (False, GET-Next WPDU to send).

        Raises DataAccessError / ExceptionResponse; returns None for a stale duplicate block.
        """
        apdu = self.unwrap(wpdu)
        self._raise_exception(apdu)
        if len(apdu) < 4 or apdu[0] != 0xC4:
            raise DlmsError("expected a GET-Response, got %s" % apdu[:4].hex())
        if apdu[2] & 0x0F != self._invoke:
            return None  # answer to an older request
        if apdu[1] == 1:
            if apdu[3] != 0:
                raise DataAccessError(apdu[4] if len(apdu) > 4 else -1)
            return True, apdu[4:]
        if apdu[1] != 2 or len(apdu) < 9:
            raise DlmsError("unsupported GET-Response %s" % apdu[:4].hex())
        last = apdu[3]
        n = struct.unpack_from(">I", apdu, 4)[0]
        if apdu[8] != 0:
            self._block = None
            raise DataAccessError(apdu[9] if len(apdu) > 9 else -1, "in block %d" % n)
        expected = 1 if self._block is None else self._block[0] + 1
        if n != expected:
            if n < expected:
                return None  # duplicate of a block we already have
            raise DlmsError("block %d received, expected %d" % (n, expected))
        r = axdr.Reader(apdu, 9)
        ln = r.length()
        if r.pos + ln != len(apdu):
            raise DlmsError("block %d raw-data length mismatch" % n)
        buf = bytearray() if self._block is None else self._block[1]
        buf += apdu[r.pos :]
        if last:
            self._block = None
            return True, bytes(buf)
        self._block = (n, buf)
        return False, self.build_get_next(n)

    # --- SET / ACTION ----------------------------------------------------------------------

    def build_set(self, class_id, ln, attr, data):
        inv = self._next_invoke()
        apdu = bytes((0xC1, 0x01, inv)) + struct.pack(">H", class_id) + _ln(ln)
        return self.wrap(apdu + struct.pack(">b", attr) + b"\x00" + data)

    def build_action(self, class_id, ln, method, data=None):
        inv = self._next_invoke()
        apdu = bytes((0xC3, 0x01, inv)) + struct.pack(">H", class_id) + _ln(ln)
        apdu += struct.pack(">b", method)
        apdu += b"\x00" if data is None else b"\x01" + data
        return self.wrap(apdu)

    def parse_result(self, wpdu, tag):
        """Result of a SET (tag 0xC5) or ACTION (0xC7) response; None for a stale answer."""
        apdu = self.unwrap(wpdu)
        self._raise_exception(apdu)
        if len(apdu) < 4 or apdu[0] != tag or apdu[1] != 1:
            raise DlmsError("expected 0x%02x-01, got %s" % (tag, apdu[:4].hex()))
        if apdu[2] & 0x0F != self._invoke:
            return None
        if apdu[3] != 0:
            raise DataAccessError(apdu[3])
        return True

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _raise_exception(apdu):
        if len(apdu) >= 3 and apdu[0] == 0xD8:
            raise ExceptionResponse(apdu[1], apdu[2])

    def datetime_octets(self, t2k):
        """09 0C + date-time of t2k in the configured zone."""
        return b"\x09\x0c" + axdr.datetime_bytes(t2k, self.time_zone, self.offset_min)

    def range_access(self, from_t2k, to_t2k, clock_ln=CLOCK_LN):
        """Selective access selector 1: rows with the clock column in [from, to], all columns."""
        desc = b"\x02\x04\x12\x00\x08\x09\x06" + _ln(clock_ln) + b"\x0f\x02\x12\x00\x00"
        return (
            b"\x01\x02\x04"
            + desc
            + self.datetime_octets(from_t2k)
            + self.datetime_octets(to_t2k)
            + b"\x01\x00"
        )

    @staticmethod
    def entry_access(from_entry, to_entry, from_col=1, to_col=0):
        """Selective access selector 2 (1-based entries, to_entry 0 = last)."""
        return b"\x02\x02\x04" + struct.pack(
            ">BIBIBHBH", 6, from_entry, 6, to_entry, 0x12, from_col, 0x12, to_col
        )

    def decode_profile(self, data):
        """[(t2k, fwd, rev, status)] from a full-column buffer value."""
        rows = axdr.Reader(data).value()
        out = []
        for r in rows:
            if len(r) != 4:
                raise DlmsError("profile row with %d columns" % len(r))
            t = axdr.parse_datetime(r[0], self.deviation_sign, self.offset_min)
            out.append((t, r[1], r[2], r[3]))
        return out

    @staticmethod
    def decode_register(value_data, scaler_unit_data):
        """(raw value, power-of-ten scaler) of a register (value exact, no floats)."""
        value = axdr.Reader(value_data).value()
        su = axdr.Reader(scaler_unit_data).value()
        if not isinstance(su, list) or len(su) != 2:
            raise DlmsError("scaler_unit is not a 2-structure")
        return value, su[0]


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, peer):
        self.peer = peer
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        if addr[:2] == self.peer[:2]:
            self.queue.put_nowait(data)

    def error_received(self, exc):  # ICMP port unreachable etc.: the retry loop handles it
        pass


class AsyncDlmsUdpClient:
    """DLMS client over UDP. Methods raise DlmsError subclasses or TimeoutError."""

    def __init__(
        self,
        local_addr,
        server_addr,
        client_sap=16,
        server_sap=1,
        timeout_s=3,
        retries=2,
        password=None,
        max_pdu=0xFFFF,
        time_zone_min=-540,
        deviation_sign=-1,
        **security,
    ):
        """security: ek, ak, system_title, general, security_control (DlmsClient)."""
        self.local_addr = local_addr
        self.server_addr = server_addr
        self.timeout_s = timeout_s
        self.retries = retries
        self.dlms = DlmsClient(
            client_sap, server_sap, password, max_pdu, time_zone_min, deviation_sign, **security
        )
        self._transport = None
        self._proto = None

    async def _open(self):
        if self._transport is None:
            loop = asyncio.get_running_loop()
            self._transport, self._proto = await loop.create_datagram_endpoint(
                lambda: _Proto(self.server_addr), local_addr=self.local_addr
            )

    async def _exchange(self, wpdu, parse, tries=None):
        """Send wpdu and return parse(response) for the first response it accepts (not None).
        tries: attempts (default retries + 1)."""
        await self._open()
        q = self._proto.queue
        while not q.empty():
            q.get_nowait()  # drop late answers to earlier requests
        loop = asyncio.get_running_loop()
        for attempt in range(self.retries + 1 if tries is None else tries):
            if attempt and self.dlms.keys is not None:
                wpdu = self.dlms.rewrap()  # a repeated invocation counter would be a replay
            self._transport.sendto(wpdu, self.server_addr)
            deadline = loop.time() + self.timeout_s
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    resp = await asyncio.wait_for(q.get(), left)
                except asyncio.TimeoutError:
                    break
                try:
                    out = parse(resp)
                except (wrapper.WrapperError, StaleResponse):
                    continue
                if out is not None:
                    return out
        raise TimeoutError("no DLMS answer from %s:%d" % self.server_addr[:2])

    async def associate(self):
        conf = await self._exchange(self.dlms.build_aarq(), self.dlms.parse_aare)
        if self.dlms.hls_pending:
            await self._exchange(self.dlms.build_hls_reply(), self.dlms.parse_hls_result)
        return conf

    async def release(self):
        await self._exchange(self.dlms.build_rlrq(), self.dlms.parse_rlre)

    async def get(self, class_id, ln, attr, access=None):
        """Raw A-XDR data of an attribute (block transfer followed)."""
        req = self.dlms.build_get(class_id, ln, attr, access)
        while True:
            done, payload = await self._exchange(req, self.dlms.feed_get)
            if done:
                return payload
            req = payload

    async def set(self, class_id, ln, attr, data):
        await self._exchange(
            self.dlms.build_set(class_id, ln, attr, data),
            lambda r: self.dlms.parse_result(r, 0xC5),
        )

    async def action(self, class_id, ln, method, data=None):
        await self._exchange(
            self.dlms.build_action(class_id, ln, method, data),
            lambda r: self.dlms.parse_result(r, 0xC7),
        )

    async def get_clock(self):
        """The terminal's clock as t2k, or None when it reports an unspecified time."""
        data = await self.get(CLASS_CLOCK, CLOCK_LN, 2)
        b = axdr.Reader(data).value()
        if b[:2] == b"\xff\xff":
            return None
        return axdr.parse_datetime(b, self.dlms.deviation_sign, self.dlms.offset_min)

    async def set_clock(self, t2k):
        """t2k: the time, or a callable giving it, called again for every attempt: a retried
        SET then carries the time of its own sending, not a stale one (at x3600 each timeout
        is an hour of calendar; the chaos soak once set a clock 6 h stale that way)."""
        if not callable(t2k):
            return await self.set(CLASS_CLOCK, CLOCK_LN, 2, self.dlms.datetime_octets(t2k))
        for attempt in range(self.retries + 1):
            req = self.dlms.build_set(CLASS_CLOCK, CLOCK_LN, 2, self.dlms.datetime_octets(t2k()))
            try:
                return await self._exchange(req, lambda r: self.dlms.parse_result(r, 0xC5),
                                            tries=1)
            except TimeoutError:
                if attempt == self.retries:
                    raise

    async def get_register(self, ln):
        value = await self.get(CLASS_REGISTER, ln, 2)
        su = await self.get(CLASS_REGISTER, ln, 3)
        return DlmsClient.decode_register(value, su)

    async def get_profile(self, from_t2k, to_t2k, ln=PROFILE_LN):
        data = await self.get(CLASS_PROFILE, ln, 2, self.dlms.range_access(from_t2k, to_t2k))
        return self.dlms.decode_profile(data)

    def close(self):
        if self._transport is not None:
            self._transport.close()
            self._transport = None


__all__ = [
    "AssociationRejected",
    "AsyncDlmsUdpClient",
    "DataAccessError",
    "DlmsClient",
    "DlmsError",
    "ExceptionResponse",
    "StaleResponse",
]
