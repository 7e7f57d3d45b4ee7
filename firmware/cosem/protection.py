# Security suite 0 in the COSEM server: the one point where protection wraps the plain request/
# reply path (docs/dlms.md "Security"). A ciphered request (glo C8/C9/CB or general-glo DB) is
# verified and deciphered, served by the unchanged plain dispatch, and its
# reply protected in the request's form with a new invocation counter; both in place (the
# request in the datagram's buffer, a GET reply in the server's PDU buffer); HLS-GMAC pass 3/4, the
# glo-initiateRequest of a ciphered AARQ, protected release and the clients' counters live here
# too. Functions of the server `s` (its state: clients, counter, system_title, _out, _out_ic,
# _peer_ic, event); imported only when a client has keys, so a server without ciphered clients
# does not pay for this module, security.py and their tables (import heap, docs/memory.md).
import struct

from firmware import events, log
from firmware.compat import const
from firmware.cosem import acse, axdr
from firmware.cosem import security as sec
from firmware.cosem import xdlms as x

_TAG = "cosem"
_ASSOCIATION_LN = b"\x00\x00\x28\x00\x00\xff"  # the current association (HLS pass 3)
_CHALLENGE = const(16)  # bytes of our HLS challenge (StoC)
_MAX_PEER_COUNTERS = const(8)  # client invocation counters remembered (client, title)


def ap_title(raw):
    """The 8-byte system title of a calling-AP-title `04 08 <title>`, else None."""
    if raw is not None and len(raw) == 10 and raw[0] == 0x04 and raw[1] == 8:
        return bytes(raw[2:])
    return None


def challenge(s):
    if s._rng is not None:
        return bytes(s._rng(_CHALLENGE))
    import os

    return os.urandom(_CHALLENGE)

def glo_initiate(s, client, title, ui, client_sap):
    """The InitiateRequest of a glo-initiateRequest from `title`, or None (logged)."""
    if ui is None or ui[:1] != bytes((acse.GLO_INITIATE_REQUEST,)):
        log.warn(_TAG, "ciphered AARQ from client %d without a glo-initiateRequest"
                 % client_sap)
        return None
    try:
        plain, f = sec.unseal(client.keys, title, ui)
    except sec.SecurityError as e:
        log.warn(_TAG, "glo-initiateRequest of client %d: %s" % (client_sap, e))
        return None
    if not fresh(s, client_sap, title, f.ic):
        return None
    try:
        return acse.parse_initiate_request(plain)
    except acse.AcseError as e:
        log.warn(_TAG, "ciphered InitiateRequest: %s" % e)
        return None

def user_info(s, client, title, plain):
    """The xDLMS APDU of an AARE: protected (glo-initiateResponse) in a ciphered context."""
    if client is None or client.keys is None:
        return plain
    return sec.seal(client.keys, s.system_title, s.counter.take(), sec.SC_AUTH_ENC,
                    plain)

def auth_failed(s, client_sap, why, context):
    log.warn(_TAG, "association of client %d failed: %s" % (client_sap, why))
    s.event(events.ASSOCIATION_FAILED, client_sap)
    return s._reject(acse.DIAG_AUTHENTICATION_FAILURE, None, context=context)

def fresh(s, client_sap, title, ic):
    """True (and remembered) if `ic` is above every counter accepted from this client and
    title; a replay is logged and reported as an event."""
    k = (client_sap, bytes(title))
    last = s._peer_ic.get(k)
    if last is not None and ic <= last:
        log.warn(_TAG, "replay from client %d: invocation counter %d, last %d"
                 % (client_sap, ic, last))
        s.event(events.REPLAY_REJECTED, client_sap)
        return False
    if last is None:
        if len(s._peer_ic_order) >= _MAX_PEER_COUNTERS:
            s._peer_ic.pop(s._peer_ic_order.pop(0), None)
        s._peer_ic_order.append(k)
    s._peer_ic[k] = ic
    return True

def glo_release(s, a, ui, client_sap):
    """True if the RLRQ of a ciphered association carries a glo-initiateRequest from the
    client (verified, fresh counter)."""
    if ui[:1] != bytes((acse.GLO_INITIATE_REQUEST,)):
        log.warn(_TAG, "RLRQ with a plain InitiateRequest in client %d's ciphered "
                 "association refused" % client_sap)
        return False
    try:
        _plain, f = sec.unseal(a.keys, a.client_title, ui)
    except sec.SecurityError as e:
        log.warn(_TAG, "RLRQ of client %d refused: %s" % (client_sap, e))
        return False
    return fresh(s, client_sap, a.client_title, f.ic)

def ciphered_request(s, mv, client_sap):
    """Unprotect a glo/general-glo request, serve it through the plain path, protect the
    reply in kind (same form and security control, a new invocation counter)."""
    a = s._assoc.get(s._key(client_sap))
    if a is None or a.keys is None:
        log.warn(_TAG, "ciphered APDU 0x%02x from client %d without a ciphered association"
                 % (mv[0], client_sap))
        return x.exception_response(
            x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OPERATION_NOT_POSSIBLE
        )
    if len(mv) > s.max_pdu:
        return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_PDU_TOO_LONG)
    try:
        f = sec.parse(mv)
        if f.title is not None and f.title != a.client_title:
            raise sec.DecipherError("general-glo-ciphering from another system title")
        mv = _writable(mv)
        # deciphered where it lies (the datagram's own buffer): no request buffer
        n = sec.open_into(a.keys, a.client_title, mv, f, mv, f.start)
    except sec.DecipherError as e:
        log.warn(_TAG, "ciphered APDU from client %d refused: %s" % (client_sap, e))
        return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_DECIPHERING)
    except sec.SecurityError as e:
        log.warn(_TAG, "malformed ciphered APDU from client %d: %s" % (client_sap, e))
        return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OTHER)
    if not fresh(s, client_sap, a.client_title, f.ic):
        return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_IC_ERROR) + \
            struct.pack(">I", s._peer_ic[(client_sap, a.client_title)] + 1)
    plain = mv[f.start:f.start + n]
    if n == 0 or plain[0] not in (x.GET_REQUEST, x.SET_REQUEST, x.ACTION_REQUEST) or (
            f.title is None and sec.GLO_TAGS[plain[0]] != f.tag):
        # (the glo tag is outside the authenticated data: it must name what it carries)
        log.warn(_TAG, "ciphered APDU 0x%02x from client %d holds no matching "
                 "GET/SET/ACTION" % (f.tag, client_sap))
        return x.exception_response(x.STATE_SERVICE_UNKNOWN, x.SERVICE_NOT_SUPPORTED)
    if a.stoc is not None:
        resp = hls_pass3(s, a, plain, client_sap)
        if resp is None:
            return x.exception_response(
                x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OPERATION_NOT_POSSIBLE
            )
    else:
        s._in_cipher = True
        try:
            resp = s._service(plain, client_sap)
        finally:
            s._in_cipher = False
    if resp is None or resp[0] == x.EXCEPTION_RESPONSE:
        return resp  # no ciphered form; carries no data
    general = f.title is not None
    try:
        ic = s.counter.take()
        if resp is s._reply:
            # a GET reply built in the server's PDU buffer: protected where it lies (room for
            # the header before it, for the tag after it); the block kept there for a re-send
            # is now ciphertext under `ic` (restore() brings the plaintext back)
            start, end = sec.seal_in_place(a.keys, s.system_title, ic, f.sc, s._out,
                                           s._reply_at, s._reply_at + len(resp), general)
            if f.sc & sec.SC_ENC:
                s._out_ic = ic
            return s._view(start, end)
        # other replies are small new bytes already (SET/ACTION results, errors)
        buf = bytearray(len(resp) + sec.OVERHEAD)
        end = sec.seal_into(a.keys, s.system_title, ic, f.sc, resp, buf, 0, general)
    except (sec.SecurityError, OSError) as e:
        log.error(_TAG, "reply to client %d not protected: %s" % (client_sap, e))
        return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OTHER)
    return memoryview(buf)[0:end]


def restore(s, a, start, end):
    """The plaintext of the block kept in _out[start:end] for a re-send, enciphered in place
    when it was sent (`s._out_ic`): CTR run again with that counter."""
    sec.unseal_in_place(a.keys, s.system_title, s._out_ic, s._out, start, end)
    s._out_ic = 0


def _writable(mv):
    """mv itself when its memory can be written (the radio queues each datagram as a
    bytearray), else a copy (bytes from callers such as tests)."""
    try:
        mv[0] = mv[0]
        return mv
    except TypeError:
        return memoryview(bytearray(mv))

def hls_pass3(s, a, plain, client_sap):
    """reply_to_HLS_authentication (ACTION 0.0.40.0.0.255 method 1): verify f(StoC), answer
    f(CtoS). Anything else before it, or a wrong tag, ends the association (None)."""
    try:
        req = x.parse_request(plain)
    except x.XdlmsError:
        req = None
    ok = (req is not None and req.service == x.ACTION_REQUEST and req.desc is not None
          and req.desc[0] == 15 and req.desc[1] == _ASSOCIATION_LN and req.desc[2] == 1
          and req.value_pos is not None)
    value = None
    if ok:
        try:
            value = axdr.Reader(req.mv, req.value_pos).octets()
        except axdr.AxdrError:
            value = None
    if value is None or not sec.check_hls_reply(a.keys, a.client_title, a.stoc, value):
        s._drop_assoc(client_sap)
        log.warn(_TAG, "HLS pass 3 of client %d failed: association dropped" % client_sap)
        s.event(events.ASSOCIATION_FAILED, client_sap)
        if ok:
            return x.action_response(req.invoke, x.READ_WRITE_DENIED)
        return None
    a.stoc = None
    reply = sec.hls_reply(a.keys, s.system_title, s.counter.take(), a.ctos)
    a.ctos = None
    log.info(_TAG, "client %d associated (HLS-GMAC passed)" % client_sap)
    # ACTION-Response-Normal: result success, return parameters: data octet-string(17)
    return bytes((x.ACTION_RESPONSE, x.NORMAL, req.invoke, 0, 1, 0, 0x09, len(reply))) + reply

def push_keys(s):
    """The management client's key set (pushes are protected with it), or None."""
    from firmware.cosem.objects import ROLE_MGMT

    for c in s.clients.values():
        if c.role == ROLE_MGMT and c.keys is not None:
            return c.keys
    return None

_PUSH_APDU = const(96)  # a DataNotification of one profile row (cosem/push.py): 46..82 bytes


def protect_push(s, keys, apdu_mv, out):
    """A pushed APDU (DataNotification) in general-glo-ciphering with authenticated encryption:
    `DB | 08 <our system title> | len | 30 | IC | ciphertext | tag`, IC from the server's one
    never-repeating counter (the same as its replies), written into `out` (the protector's own
    buffer: the server's PDU buffer may hold a block kept for a re-send). The caller copies the
    view out at once. Raises SecurityError when the counter is exhausted: a push is never sent
    in clear instead."""
    if len(apdu_mv) + sec.OVERHEAD > len(out):
        out = bytearray(len(apdu_mv) + sec.OVERHEAD)  # never for one row; kept correct anyway
    end = sec.seal_into(keys, s.system_title, s.counter.take(), sec.SC_AUTH_ENC, apdu_mv,
                        out, 0, True)
    return memoryview(out)[0:end]


def push_protector(s):
    """protect(apdu_mv) -> memoryview for the push encoder when the management client has keys
    (push.protect "auto"), else None (pushes go out plain). Its buffer (~130 bytes) is made
    once, here."""
    keys = push_keys(s)
    if keys is None:
        return None
    out = bytearray(_PUSH_APDU + sec.OVERHEAD)

    def protect(apdu_mv):
        return protect_push(s, keys, apdu_mv, out)

    return protect
