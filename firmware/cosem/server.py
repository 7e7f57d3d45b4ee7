# COSEM server: wrapper in/out, association per client SAP, GET/SET/ACTION dispatch and GET block
# transfer that streams attribute values into one preallocated PDU buffer.
#
# Long GET: rows are serialised until the block is full, the partial row is rolled back and goes
# into the next block. A block is built once, in the server's one PDU buffer, behind room for
# the wrapper header: handle_wpdu writes that header in front of it and returns a view, and the
# same bytes stay there for a GET-Next repeating the previous block number (our response was
# lost on the radio). The radio's transmit frame is the block's only copy (docs/dlms.md).
#
# Over the ~400 lines of a module: the association, the service dispatch and the block transfer
# share one per-association state and one PDU buffer; each further module costs heap at import
# (docs/memory.md), and none of the parts is used without the others.

from firmware import events, log
from firmware.compat import const
from firmware.cosem import acse, axdr, clients, wrapper
from firmware.cosem import xdlms as x
from firmware.cosem.objects import READ, WRITE, RowsGone

_TAG = "cosem"
# offset of the A-XDR data in the PDU buffer: room for the wrapper header (8, wrapper.HEADER_LEN),
# the longest protection header (general-glo-ciphering, 18: a ciphered reply is protected in
# place) and the longest APDU header (the block header, 12)
_DATA = const(38)
_NORMAL_HDR = const(4)  # C4 01 inv 00
_BLOCK_HDR = const(12)  # C4 02 inv last block(4) 00 len(<=3)
# a block must hold its header, the array header and one 28-byte row
MIN_CLIENT_PDU = const(64)
_MAX_ASSOCIATIONS = const(4)  # peers x client SAPs kept at once (oldest ended first)
_SPILL = const(512)  # largest single element of a streamed value

# conformance bits on the wire (24-bit, bit 0 = MSB of the first byte)
CONF_BLOCK_GET = const(0x001000)
CONF_MULTIPLE_REFS = const(0x000200)
CONF_DATA_NOTIFICATION = const(0x000080)
CONF_GET = const(0x000010)
CONF_SET = const(0x000008)
CONF_SELECTIVE = const(0x000004)
CONF_ACTION = const(0x000001)
SUPPORTED_CONFORMANCE = const(0x00121D)
_CIPHERED_REQUESTS = (0xC8, 0xC9, 0xCB, 0xDB)  # glo get/set/action, general-glo (security.py)
_SEC_OVERHEAD = const(30)  # largest framing of a protected APDU (security.OVERHEAD)
_MECH_NAMES = {acse.MECH_NONE: "public", acse.MECH_LLS: "LLS", acse.MECH_GMAC: "HLS-GMAC"}


# SPEC choices (docs/dlms.md "Security"): clients, mechanisms, keys, titles are configuration
DEFAULTS = {
    "server_sap": 1,
    "public_client_sap": 16,  # no authentication: ROLE_PUBLIC
    "reader_client_sap": 17,  # ROLE_READER
    "reader_mechanism": "lls",  # lls (lls_password) | gmac (reader_ek/reader_ak)
    "mgmt_client_sap": 1,  # ROLE_MGMT
    "mgmt_mechanism": "gmac",  # gmac (mgmt_ek/mgmt_ak) | lls (mgmt_password; weaker)
    "lls_password": "",  # the reading client's LLS password ("" disables it)
    "mgmt_password": "",  # only with mgmt_mechanism lls
    "system_title": "5858580000000001",  # ours: 8 bytes hex (FLAG id "XXX" + serial)
    "reader_ek": "",  # suite 0 keys, 32 hex digits each; set: the client must cipher
    "reader_ak": "",
    "reader_title": "",  # the client's system title, 16 hex digits ("" = any)
    "mgmt_ek": "",
    "mgmt_ak": "",
    "mgmt_title": "",
    "ic_block": 256,  # our invocation counter is persisted this far ahead (one write per block)
    "max_pdu": 512,
    "time_zone_min": -540,
    "deviation_sign": -1,
    "push": False,
}


class Association:
    def __init__(self, client_sap, role, mechanism, conformance, client_pdu):
        self.client_sap = client_sap
        self.role = role  # objects.ROLE_*: the rights of this association
        self.context = acse.CONTEXT_LN
        self.mechanism = mechanism
        self.conformance = conformance
        self.client_pdu = client_pdu  # largest APDU we may send to this client
        self.xfer = None  # the long GET in progress (_Transfer) or None
        self.keys = None  # security.Keys of a ciphered association, else None
        self.client_title = None  # the client's system title (ciphered association)
        self.stoc = None  # HLS-GMAC: our challenge while pass 3 is awaited, then None
        self.ctos = None  # HLS-GMAC: the client's challenge (answered in pass 4)


class _Transfer:
    def __init__(self, producer, invoke, serial=0):
        self.producer = producer
        self.invoke = invoke
        self.serial = serial  # the server's count of transfers: who owns its last-block buffer
        self.block_no = 0
        self.carry = None  # tail of an element larger than a block, sent first in the next one
        self.started = False
        self.finished = False
        # the last block sent is _out[start:end] (end 0: none yet), kept for a re-send while
        # the server's _last_owner is this transfer's serial
        self.start = 0
        self.end = 0


class _WithList:
    """Producer for GET-With-List: count, then per item `00 Data` or `01 DataAccessResult`."""

    def __init__(self, server, assoc, mv, items):
        self._srv = server
        self._assoc = assoc
        self._mv = mv  # a private copy of the request: items are re-read in later blocks
        self._items = items
        self._i = 0

    def begin_block(self, w):
        pass

    def header(self, w):
        w.length(len(self._items))

    def item(self, w):
        if self._i >= len(self._items):
            return False
        desc, sel, sel_pos = self._items[self._i]
        prod = self._srv._producer(self._assoc, self._mv, desc, sel, sel_pos)
        if isinstance(prod, int):
            w.byte(1)
            w.byte(prod)
        else:
            w.byte(0)
            _write_whole(w, prod)
        return True

    def advance(self):
        self._i += 1


def _write_whole(w, prod):
    prod.begin_block(w)
    prod.header(w)
    while prod.item(w):
        prod.advance()


def _ct_equal(a, b):
    """Constant-time comparison of two byte strings (LLS password)."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _prot():
    # security suite 0 (protection.py, security.py) is imported only when a client has keys
    from firmware.cosem import protection

    return protection


class CosemServer:
    """handle_wpdu(data) -> bytes|None and handle_apdu(apdu, client_sap) -> bytes|None.

    objects: ObjectTable (profile.default_table), clock: now_t2k()/set_t2k()/is_set(),
    config: the 'dlms' configuration section (missing keys take DEFAULTS).
    aes_ecb: the HAL's AES-128 block function (hal.aes_ecb) for security suite 0; None: no
    ciphered clients. ic_state: get(key, default)/set(key, value) persistence of our invocation
    counter (the StateFile); None keeps it in RAM (tests only: it would repeat after a reboot).
    rng(n) -> n random bytes for HLS challenges (default os.urandom).
    self.event(code, detail): association failures and replays (firmware.events codes).
    """

    def __init__(self, objects, clock, config=None, aes_ecb=None, ic_state=None, rng=None):
        cfg = dict(DEFAULTS)
        if config:
            cfg.update(config)
        self.table = objects
        self.clock = clock
        self.event = events.ignore
        self.server_sap = cfg["server_sap"]
        self.clients = clients.build(cfg, aes_ecb)
        self.ciphered = False
        for c in self.clients.values():
            if c.keys is not None:
                self.ciphered = True
        self.system_title = clients.server_title(cfg) if self.ciphered else None
        self.counter = None
        if self.ciphered:
            from firmware.cosem.security import Counter

            self.counter = Counter(ic_state, "dlms_ic", cfg["ic_block"])
        self._rng = rng
        self._peer_ic = {}  # (client SAP, client title) -> last accepted invocation counter
        self._peer_ic_order = []
        self._in_cipher = False  # the request being served arrived ciphered
        self.max_pdu = max(MIN_CLIENT_PDU, min(int(cfg["max_pdu"]), 0xFFFF))
        self.time_zone = cfg["time_zone_min"]
        self.deviation_sign = -1 if cfg["deviation_sign"] < 0 else 1
        # local time minus UTC in minutes (JST: +540) under the configured sign convention
        self.offset_min = self.time_zone * self.deviation_sign
        self.supported = SUPPORTED_CONFORMANCE | (CONF_DATA_NOTIFICATION if cfg["push"] else 0)
        # Every GET reply is built here, its APDU at an offset >= wrapper.HEADER_LEN so that the
        # WPDU header goes in front of it without a copy. The last block of a long GET stays here
        # for a re-send until another reply is built: one buffer for the server, no copy per block.
        self._out = bytearray(_DATA + self.max_pdu)
        self._last_owner = 0  # serial of the transfer whose last block _out holds (0: none)
        self._serial = 0
        self._reply = None  # the view of _out last returned by _apdu (handle_wpdu recognises it)
        self._reply_at = 0  # where that view starts in _out
        # the largest reply datagram (a reply APDU never exceeds max_pdu; 12 bytes to spare)
        self.max_wpdu = wrapper.HEADER_LEN + _BLOCK_HDR + self.max_pdu
        # one element (an object_list entry) may exceed a small client's block: it is encoded
        # here whole and cut at byte positions across blocks
        self._spill = bytearray(_SPILL)
        self._w = axdr.Writer(self._out)
        self._assoc = {}  # (peer, client SAP) -> Association; peer None for handle_apdu callers
        self._order = []  # association keys, oldest first (the table is bounded)
        self._peer = None  # radio peer of the request being handled
        # the counter under which the block kept in _out was enciphered in place (0: plaintext);
        # a ciphered request is deciphered in its own datagram (protection.py): no buffers more
        self._out_ic = 0

    # --- entry points -----------------------------------------------------------------------

    def reply_buffer(self):
        """A buffer that fits any reply WPDU (wrapper header + the largest APDU we build), for
        handle_wpdu(..., out=): one per server, preallocated by the caller that sends replies."""
        return bytearray(self.max_wpdu)

    def handle_wpdu(self, data, peer=None, out=None):
        """peer: who sent the datagram (e.g. (IPv6, port)); associations are kept per peer and
        client SAP, so a second head-end using the same SAP cannot release or hijack ours.
        out: a reply_buffer(). A GET reply (every block of a long GET) comes back as a view of
        the server's own PDU buffer, the wrapper header written in front of it: no copy. Other
        replies are written into `out` and returned as a view of it. Either view is valid until
        the next call; without `out` the reply is new bytes. A ciphered request in a writable
        `data` (a bytearray, as the radio session queues) is deciphered there, in place."""
        try:
            src, dst, apdu = wrapper.parse(data)
        except wrapper.WrapperError as e:
            log.warn(_TAG, "dropped datagram: %s" % e)
            return None
        if dst != self.server_sap:
            log.warn(_TAG, "dropped WPDU for unknown server SAP %d (from %d)" % (dst, src))
            return None
        self._reply = None
        resp = self._apdu(apdu, src, peer)
        if resp is None:
            return None
        n = len(resp)
        if out is not None and resp is self._reply:  # built in _out behind header room
            self._reply = None
            s = self._reply_at - wrapper.HEADER_LEN
            wrapper.pack_header_into(self._out, s, dst, src, n)
            return memoryview(self._out)[s:self._reply_at + n]
        if out is None or wrapper.HEADER_LEN + n > len(out):
            return wrapper.build(dst, src, resp)
        wrapper.pack_header_into(out, 0, dst, src, n)
        mv = memoryview(out)
        mv[wrapper.HEADER_LEN:wrapper.HEADER_LEN + n] = resp
        return mv[:wrapper.HEADER_LEN + n]

    def handle_apdu(self, apdu, client_sap, peer=None):
        """The response APDU as bytes (None if there is none)."""
        r = self._apdu(apdu, client_sap, peer)
        return bytes(r) if isinstance(r, memoryview) else r

    def _apdu(self, apdu, client_sap, peer):
        """The response APDU; a GET reply built in _out comes as a view of it (_view)."""
        self._peer = peer
        mv = apdu if isinstance(apdu, memoryview) else memoryview(apdu)
        if len(mv) == 0:
            log.warn(_TAG, "empty APDU from client %d" % client_sap)
            return None
        tag = mv[0]
        try:
            if tag == acse.AARQ:
                return self._aarq(mv, client_sap)
            if tag == acse.RLRQ:
                return self._rlrq(mv, client_sap)
            if tag in (x.GET_REQUEST, x.SET_REQUEST, x.ACTION_REQUEST):
                return self._service(mv, client_sap)
            if tag in _CIPHERED_REQUESTS:
                if not self.ciphered:
                    log.warn(_TAG, "ciphered APDU 0x%02x from client %d: no ciphered client"
                             % (tag, client_sap))
                    return x.exception_response(
                        x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OPERATION_NOT_POSSIBLE
                    )
                return _prot().ciphered_request(self, mv, client_sap)
            log.warn(_TAG, "unsupported APDU tag 0x%02x from client %d" % (tag, client_sap))
            return x.exception_response(x.STATE_SERVICE_UNKNOWN, x.SERVICE_NOT_SUPPORTED)
        except (x.XdlmsError, axdr.AxdrError, acse.AcseError) as e:
            log.warn(_TAG, "malformed APDU 0x%02x from client %d: %s" % (tag, client_sap, e))
            return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OTHER)
        except Exception as e:  # a bug must cost one request, not the server
            log.exc(_TAG, "internal error on APDU 0x%02x" % tag, e)
            a = self._assoc.get(self._key(client_sap))
            if a is not None:
                a.xfer = None
            return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OTHER)

    def association(self, client_sap, peer=None):
        return self._assoc.get((peer, client_sap))

    def _key(self, client_sap):
        return (self._peer, client_sap)

    def _drop_assoc(self, client_sap):
        k = self._key(client_sap)
        if k in self._order:
            self._order.remove(k)
        return self._assoc.pop(k, None)

    def _add_assoc(self, client_sap, a):
        k = self._key(client_sap)
        if len(self._order) >= _MAX_ASSOCIATIONS:
            old = self._order.pop(0)
            self._assoc.pop(old, None)
            log.info(_TAG, "association table full: the oldest (client %d) ended" % old[1])
        self._order.append(k)
        self._assoc[k] = a

    # --- ACSE -------------------------------------------------------------------------------

    def _aarq(self, mv, client_sap):
        self._drop_assoc(client_sap)  # a new AARQ ends the old association and its transfer
        try:
            q = acse.parse_aarq(mv)
        except acse.AcseError as e:
            log.warn(_TAG, "malformed AARQ from client %d: %s" % (client_sap, e))
            return acse.build_aare(acse.RESULT_REJECTED_PERMANENT, acse.DIAG_NO_REASON)
        if q.context not in (acse.CONTEXT_LN, acse.CONTEXT_LN_CIPHERED):
            log.warn(_TAG, "AARQ context %d not supported" % q.context)
            return self._reject(acse.DIAG_CONTEXT_NOT_SUPPORTED, None)
        # who is asking decides the authentication mechanism, the role and the ciphering
        client = self.clients.get(client_sap)
        if client is None:
            log.warn(_TAG, "AARQ from unknown client SAP %d rejected" % client_sap)
            return self._reject(acse.DIAG_NO_REASON, None, context=q.context)
        ciphered = q.context == acse.CONTEXT_LN_CIPHERED
        if ciphered != (client.keys is not None):
            log.warn(_TAG, "client %d %s ciphering" % (
                client_sap, "asked for" if ciphered else "must use"))
            return self._reject(acse.DIAG_CONTEXT_NOT_SUPPORTED, None, context=q.context)
        title = None
        if ciphered:
            title = _prot().ap_title(q.calling_title)
            if title is None or (client.title is not None and title != client.title):
                return _prot().auth_failed(
                    self, client_sap, "calling-AP-title missing or not the configured one",
                    q.context)
            init = _prot().glo_initiate(self, client, title, q.user_info, client_sap)
            if init is None:
                return _prot().auth_failed(
                    self, client_sap, "glo-initiateRequest does not decipher (wrong key?) or "
                    "is replayed", q.context)
        else:
            init = None
            if q.user_info is not None and q.user_info[:1] == bytes((acse.INITIATE_REQUEST,)):
                try:
                    init = acse.parse_initiate_request(q.user_info)
                except acse.AcseError as e:
                    log.warn(_TAG, "AARQ InitiateRequest: %s" % e)
                    return self._reject(acse.DIAG_NO_REASON, None)
            if init is None:
                log.warn(_TAG, "AARQ from client %d without a plain InitiateRequest"
                         % client_sap)
                return self._reject(acse.DIAG_NO_REASON, None)
        ui_init = None if ciphered else init  # a plain InitiateResponse only in plain contexts
        mech = acse.MECH_NONE if q.mechanism is None else q.mechanism
        want = client.mechanism
        if mech != want:
            log.warn(_TAG, "client %d proposed mechanism %d, needs %d" % (client_sap, mech, want))
            if want != acse.MECH_NONE and mech == acse.MECH_NONE:
                return self._reject(acse.DIAG_MECHANISM_REQUIRED, ui_init, context=q.context)
            return self._reject(acse.DIAG_MECHANISM_NOT_RECOGNISED, ui_init, context=q.context)
        if want == acse.MECH_LLS and not _ct_equal(q.auth_value or b"", client.password):
            log.warn(_TAG, "LLS authentication failed for client %d" % client_sap)
            self.event(events.ASSOCIATION_FAILED, client_sap)
            return self._reject(acse.DIAG_AUTHENTICATION_FAILURE, ui_init, mech, q.context)
        ctos = None
        if want == acse.MECH_GMAC:
            ctos = q.auth_value
            if ctos is None or not 8 <= len(ctos) <= 64:
                return _prot().auth_failed(
                    self, client_sap, "HLS challenge missing or of bad length", q.context)
        if init.version < acse.DLMS_VERSION:
            log.warn(_TAG, "client %d DLMS version %d too low" % (client_sap, init.version))
            return acse.build_aare(
                acse.RESULT_REJECTED_PERMANENT,
                acse.DIAG_NO_REASON,
                context=q.context,
                user_info=self._user_info(client, title,
                                          acse.initiate_error(acse.INIT_ERR_VERSION_TOO_LOW)),
            )
        conf = init.conformance & self.supported
        err = None
        if conf & (CONF_GET | CONF_SET | CONF_ACTION) == 0:
            err = acse.INIT_ERR_INCOMPATIBLE_CONFORMANCE
        elif init.max_pdu < MIN_CLIENT_PDU:
            err = acse.INIT_ERR_PDU_TOO_SHORT
        if err is not None:
            log.warn(_TAG, "client %d InitiateRequest refused (error %d)" % (client_sap, err))
            return acse.build_aare(
                acse.RESULT_REJECTED_PERMANENT,
                acse.DIAG_NO_REASON,
                context=q.context,
                user_info=self._user_info(client, title, acse.initiate_error(err)),
            )
        pdu = min(init.max_pdu, self.max_pdu)
        if ciphered:
            pdu -= _SEC_OVERHEAD  # the protected reply must fit the client's PDU too
        a = Association(client_sap, client.role, mech, conf, pdu)
        a.context = q.context
        a.keys = client.keys
        a.client_title = title
        stoc = None
        if ctos is not None:
            stoc = _prot().challenge(self)
            a.stoc = stoc
            a.ctos = ctos
        self._add_assoc(client_sap, a)
        log.info(
            _TAG,
            "client %d %s (%s%s, conformance %06x, pdu %d)"
            % (client_sap, "associated" if stoc is None else "HLS pending",
               _MECH_NAMES.get(mech, "?"), ", ciphered" if ciphered else "", conf, pdu),
        )
        return acse.build_aare(
            acse.RESULT_ACCEPTED,
            acse.DIAG_NULL if stoc is None else acse.DIAG_AUTHENTICATION_REQUIRED,
            context=q.context,
            mechanism=mech,
            user_info=self._user_info(client, title,
                                      acse.initiate_response(conf, self.max_pdu)),
            responding_title=self.system_title if ciphered else None,
            stoc=stoc,
        )

    def _user_info(self, client, title, plain):
        """An AARE/RLRE's xDLMS APDU: protected (glo-initiateResponse) for a keyed client."""
        if client.keys is None:
            return plain
        return _prot().user_info(self, client, title, plain)

    def _reject(self, diag, init, mechanism=None, context=acse.CONTEXT_LN):
        ui = None
        if init is not None:
            ui = acse.initiate_response(init.conformance & self.supported, self.max_pdu)
        return acse.build_aare(
            acse.RESULT_REJECTED_PERMANENT, diag, context=context, mechanism=mechanism,
            user_info=ui
        )

    def _rlrq(self, mv, client_sap):
        try:
            _reason, ui = acse.parse_rlrq(mv)
        except acse.AcseError as e:
            log.warn(_TAG, "malformed RLRQ from client %d: %s" % (client_sap, e))
            ui = None
        a = self._assoc.get(self._key(client_sap))
        if a is not None and a.keys is not None and ui is not None and not _prot().glo_release(
                self, a, ui, client_sap):
            # a protected release must verify (a plain RLRQ is accepted: Gurux sends one by
            # default; it can end the association, as losing the link can, but reveals nothing)
            return x.exception_response(
                x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OPERATION_NOT_POSSIBLE
            )
        a = self._drop_assoc(client_sap)
        log.info(_TAG, "client %d released" % client_sap)
        if ui is not None and a is not None:
            resp = acse.initiate_response(a.conformance, self.max_pdu)
            return acse.build_rlre(self._user_info(a, a.client_title, resp))
        return acse.build_rlre()

    # --- GET / SET / ACTION -----------------------------------------------------------------

    def _service(self, mv, client_sap):
        a = self._assoc.get(self._key(client_sap))
        if a is None:
            log.warn(_TAG, "request 0x%02x from client %d before AARQ" % (mv[0], client_sap))
            return x.exception_response(
                x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OPERATION_NOT_POSSIBLE
            )
        if a.keys is not None and not self._in_cipher:
            log.warn(_TAG, "plain request 0x%02x in client %d's ciphered association"
                     % (mv[0], client_sap))
            return x.exception_response(
                x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_OPERATION_NOT_POSSIBLE
            )
        if len(mv) > self.max_pdu:
            return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_PDU_TOO_LONG)
        req = x.parse_request(mv)
        if req.service == x.GET_REQUEST:
            if not a.conformance & CONF_GET:
                return self._not_negotiated(client_sap, "get")
            if req.kind == x.NEXT:
                return self._get_next(a, req)
            a.xfer = None  # a new GET ends any long GET in progress
            if req.kind == x.WITH_LIST:
                if not a.conformance & CONF_MULTIPLE_REFS:
                    return self._not_negotiated(client_sap, "multiple-references")
                return self._get_with_list(a, req)
            return self._get_normal(a, req)
        if req.service == x.SET_REQUEST:
            if not a.conformance & CONF_SET:
                return self._not_negotiated(client_sap, "set")
            return x.set_response(req.invoke, self._set(a, req))
        if not a.conformance & CONF_ACTION:
            return self._not_negotiated(client_sap, "action")
        return x.action_response(req.invoke, self._action(a, req))

    def _not_negotiated(self, client_sap, what):
        log.warn(_TAG, "client %d used %s without negotiating it" % (client_sap, what))
        return x.exception_response(x.STATE_SERVICE_NOT_ALLOWED, x.SERVICE_NOT_SUPPORTED)

    def _lookup(self, desc):
        """(object, None) or (None, DataAccessResult) for a descriptor (access rights are
        checked by the caller)."""
        cls, ln, ident = desc
        obj = self.table.find(ln)
        if obj is None:
            return None, x.OBJECT_UNDEFINED
        if obj.class_id != cls:
            return None, x.OBJECT_CLASS_INCONSISTENT
        return obj, None

    def _producer(self, a, mv, desc, selector, sel_pos):
        obj, err = self._lookup(desc)
        if err is not None:
            return err
        attr = desc[2]
        mode = obj.attr_access(attr, a.role)
        if mode is None:
            return x.OBJECT_UNAVAILABLE
        if not mode & READ:
            return x.READ_WRITE_DENIED
        if selector is not None:
            sels = obj.selectors(attr)
            if not a.conformance & CONF_SELECTIVE or not sels or selector not in sels:
                return x.SCOPE_OF_ACCESS_VIOLATED
        return obj.get(self, a, attr, selector, mv, sel_pos)

    def _get_normal(self, a, req):
        prod = self._producer(a, req.mv, req.desc, req.selector, req.sel_pos)
        if isinstance(prod, int):
            return x.get_normal_error(req.invoke, prod)
        w = self._w
        self._last_owner = 0  # _out is rewritten: a block kept there for a re-send is gone
        self._out_ic = 0
        w.reset(_DATA, _DATA + a.client_pdu - _NORMAL_HDR)
        try:
            _write_whole(w, prod)
        except axdr.AxdrFull:
            # too big for one APDU: start again as a block transfer
            prod = self._producer(a, req.mv, req.desc, req.selector, req.sel_pos)
            return self._start_blocks(a, req, prod)
        except RowsGone:
            return self._rows_gone(req.invoke)
        except axdr.AxdrError as e:
            return self._unencodable(req.invoke, e)
        out = self._out
        s = _DATA - _NORMAL_HDR
        out[s] = x.GET_RESPONSE
        out[s + 1] = x.NORMAL
        out[s + 2] = req.invoke
        out[s + 3] = 0
        return self._view(s, w.pos)

    def _get_with_list(self, a, req):
        mv = memoryview(bytes(req.mv))
        prod = _WithList(self, a, mv, req.items)
        w = self._w
        self._last_owner = 0  # _out is rewritten: a block kept there for a re-send is gone
        self._out_ic = 0
        w.reset(_DATA, _DATA + a.client_pdu - 3)
        try:
            _write_whole(w, prod)
        except axdr.AxdrFull:
            return self._start_blocks(a, req, _WithList(self, a, mv, req.items))
        except RowsGone:
            return self._rows_gone(req.invoke)
        except axdr.AxdrError as e:
            return self._unencodable(req.invoke, e)
        out = self._out
        s = _DATA - 3
        out[s] = x.GET_RESPONSE
        out[s + 1] = x.WITH_LIST
        out[s + 2] = req.invoke
        return self._view(s, w.pos)

    def _view(self, start, end):
        """The reply _out[start:end], marked so that handle_wpdu puts the wrapper header in
        front of it instead of copying it (start >= wrapper.HEADER_LEN)."""
        v = memoryview(self._out)[start:end]
        self._reply = v
        self._reply_at = start
        return v

    def _unencodable(self, invoke, e):
        log.error(_TAG, "value cannot be encoded: %s" % e)
        return x.get_normal_error(invoke, x.OTHER_REASON)

    def _rows_gone(self, invoke):
        log.warn(_TAG, "profile rows vanished during a GET")
        return x.get_normal_error(invoke, x.LONG_GET_ABORTED)

    def _start_blocks(self, a, req, prod):
        if not a.conformance & CONF_BLOCK_GET:
            log.warn(_TAG, "value exceeds the PDU and block transfer was not negotiated")
            return x.get_normal_error(req.invoke, x.OTHER_REASON)
        self._serial += 1
        a.xfer = _Transfer(prod, req.invoke, self._serial)
        return self._next_block(a)

    def _next_block(self, a):
        t = a.xfer
        w = self._w
        self._last_owner = 0  # the block is built where the last one is kept
        self._out_ic = 0
        w.reset(_DATA, _DATA + a.client_pdu - _BLOCK_HDR)
        prod = t.producer
        done = False
        try:
            if t.carry is not None:
                self._put_carry(t, w)
            if t.carry is None:
                done = self._fill(t, prod, w)
        except RowsGone:
            return self._abort(a, x.LONG_GET_ABORTED, "profile rows vanished during the transfer")
        except axdr.AxdrFull:
            return self._abort(a, x.OTHER_REASON, "an element exceeds %d bytes" % _SPILL)
        except axdr.AxdrError as e:
            return self._abort(a, x.OTHER_REASON, "value cannot be encoded: %s" % e)
        t.block_no += 1
        start = x.pack_get_block_header(
            self._out, _DATA, t.invoke, done, t.block_no, w.pos - _DATA
        )
        # the block stays where it was built, for a re-send: no copy
        self._last_owner = t.serial  # a number, so a finished transfer is not kept alive
        t.start = start
        t.end = w.pos
        t.finished = done
        return self._view(start, w.pos)

    def _fill(self, t, prod, w):
        """Write whole elements until the block is full; True when the value is complete."""
        prod.begin_block(w)
        if not t.started:
            prod.header(w)
            t.started = True
        while True:
            mark = w.pos
            try:
                more = prod.item(w)
            except axdr.AxdrFull:
                w.pos = mark  # roll back the partial row; it opens the next block
                if mark == _DATA:
                    self._spill_item(t, prod, w)
                return False
            if not more:
                return True
            prod.advance()

    def _spill_item(self, t, prod, w):
        # the element alone exceeds an empty block: encode it aside and cut it into blocks
        sw = axdr.Writer(self._spill)
        prod.begin_block(sw)
        if not prod.item(sw):
            raise axdr.AxdrFull()
        prod.advance()
        t.carry = bytes(self._spill[: sw.pos])
        self._put_carry(t, w)

    def _put_carry(self, t, w):
        c = t.carry
        n = min(len(c), w.limit - w.pos)
        w.raw(c[:n])
        t.carry = c[n:] if n < len(c) else None

    def _abort(self, a, result, why):
        t = a.xfer
        a.xfer = None
        log.warn(_TAG, "long GET aborted at block %d: %s" % (t.block_no + 1, why))
        return x.get_block_error(t.invoke, t.block_no + 1, result)

    def _get_next(self, a, req):
        t = a.xfer
        if t is None:
            return x.get_block_error(req.invoke, req.block, x.NO_LONG_GET_IN_PROGRESS)
        if req.block == t.block_no and not t.finished:
            t.invoke = req.invoke
            return self._next_block(a)
        if req.block + 1 == t.block_no and t.end:
            if self._last_owner != t.serial:  # another reply has been built over it since
                log.warn(_TAG, "block %d asked again after another transfer's block or GET "
                         "reply replaced it: aborted" % t.block_no)
                a.xfer = None
                return x.get_block_error(req.invoke, req.block, x.DATA_BLOCK_UNAVAILABLE)
            log.info(_TAG, "re-sending block %d" % t.block_no)
            if self._out_ic:  # sent enciphered in place: the plaintext back, re-protected anew
                _prot().restore(self, a, t.start, t.end)
            self._out[t.start + 2] = req.invoke  # the invoke-id-and-priority byte of the request
            return self._view(t.start, t.end)
        if req.block == t.block_no and t.finished:
            return x.get_block_error(req.invoke, req.block, x.NO_LONG_GET_IN_PROGRESS)
        log.warn(_TAG, "GET-Next block %d but block %d was sent" % (req.block, t.block_no))
        a.xfer = None
        return x.get_block_error(req.invoke, req.block, x.DATA_BLOCK_NUMBER_INVALID)

    def _set(self, a, req):
        obj, err = self._lookup(req.desc)
        if err is not None:
            return err
        attr = req.desc[2]
        mode = obj.attr_access(attr, a.role)
        if mode is None:
            return x.OBJECT_UNAVAILABLE
        if not mode & WRITE or req.selector is not None:
            return x.READ_WRITE_DENIED
        return obj.set(self, a, attr, axdr.Reader(req.mv, req.value_pos))

    def _action(self, a, req):
        obj, err = self._lookup(req.desc)
        if err is not None:
            return err
        m = req.desc[2]
        mode = obj.method_access(m, a.role)
        if mode is None:
            return x.OBJECT_UNAVAILABLE
        if not mode:
            return x.READ_WRITE_DENIED
        r = None if req.value_pos is None else axdr.Reader(req.mv, req.value_pos)
        return obj.action(self, a, m, r)
