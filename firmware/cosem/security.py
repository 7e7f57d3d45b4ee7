# DLMS security suite 0: AES-GCM-128 built on one AES-ECB block function, the ciphered APDU
# forms (service-specific glo-ciphering and general-glo-ciphering), HLS-GMAC tags and our
# invocation counter. Pure: the AES block function comes from the HAL (firmware/hal/aes.py) as
# `aes_ecb(key) -> obj.encrypt(src16, dst16)`; persistence of the counter comes as an object
# with get(key, default)/set(key, value) (the store's StateFile).
#
# GCM (NIST SP 800-38D): H = E_K(0); GHASH with a 4-bit Shoup table (16 multiples of H per key
# as 256 bytes, plus one shared 16-entry reduction table), 128-bit values as Python ints
# (MicroPython has big ints; 31-bit small ints are never assumed); CTR keystream from ECB on
# IV || counter32 starting at 2; tag = GHASH ^ E_K(IV || 1) truncated to 12 bytes. Decryption
# verifies the tag over the ciphertext (constant-time compare) BEFORE producing any plaintext.
import struct

from firmware.compat import const

SC_AUTH = const(0x10)
SC_ENC = const(0x20)
SC_AUTH_ENC = const(0x30)
TAG_LEN = const(12)
TITLE_LEN = const(8)
GENERAL_GLO = const(0xDB)
# largest framing overhead of a protected APDU: DB | 08 title | len(3) | SC | IC(4) | tag(12)
OVERHEAD = const(30)

# plain xDLMS tag -> service-specific global-ciphering tag
GLO_TAGS = {
    0xC0: 0xC8,  # get-request
    0xC1: 0xC9,  # set-request
    0xC3: 0xCB,  # action-request
    0xC4: 0xCC,  # get-response
    0xC5: 0xCD,  # set-response
    0xC7: 0xCF,  # action-response
    0x01: 0x21,  # initiateRequest
    0x08: 0x28,  # initiateResponse
    0x0E: 0x2E,  # confirmedServiceError
}
REQUEST_TAGS = (0xC8, 0xC9, 0xCB, GENERAL_GLO)  # ciphered requests a server accepts

# GF(2^128) reduction of the 4 bits shifted out per step (GCM bit order), as 128-bit values
_RED = tuple(
    r << 112
    for r in (0x0000, 0x1C20, 0x3840, 0x2460, 0x7080, 0x6CA0, 0x48C0, 0x54E0,
              0xE100, 0xFD20, 0xD940, 0xC560, 0x9180, 0x8DA0, 0xA9C0, 0xB5E0)
)
_POLY = 0xE1 << 120
_MASK32 = 0xFFFFFFFF


class SecurityError(ValueError):
    """A ciphered APDU that is malformed (framing) or fails authentication."""


class DecipherError(SecurityError):
    """Well-framed, but the tag does not verify or the security control is not accepted."""


def ct_equal(a, b):
    """Constant-time comparison of two byte strings."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


class Gcm:
    """AES-GCM-128 for one key. ecb: an object with encrypt(src16, dst16) (firmware.hal.aes)."""

    def __init__(self, ecb):
        self._aes = ecb
        self._cb = bytearray(16)  # counter block IV || counter
        self._ks = bytearray(16)  # keystream block
        self._pend = bytearray(16)  # GHASH input not yet a whole block
        self._np = 0
        self._y = 0
        ecb.encrypt(bytes(16), self._ks)
        v = int.from_bytes(self._ks, "big")
        m = [0] * 16
        m[8] = v
        i = 4
        while i:
            v = (v >> 1) ^ (_POLY if v & 1 else 0)  # times x
            m[i] = v
            i >>= 1
        for i in (2, 4, 8):
            for j in range(1, i):
                m[i + j] = m[i] ^ m[j]
        # kept as 256 bytes (entry i at 16 * i), not 16 ints: a 128-bit int costs ~70 bytes of
        # heap on the unix port, the table 1.2 KB per key set as ints, 0.3 KB as bytes
        t = bytearray(256)
        for i in range(16):
            t[16 * i:16 * i + 16] = m[i].to_bytes(16, "big")
        self._m = t

    def _mul(self, x):
        """x * H in GF(2^128), x a 128-bit int (block bytes big-endian)."""
        m = memoryview(self._m)
        red = _RED
        fb = int.from_bytes
        xb = x.to_bytes(16, "big")
        z = 0
        for k in range(15, -1, -1):
            b = xb[k]
            if k != 15:
                z = (z >> 4) ^ red[z & 15]
            i = (b & 15) << 4
            z ^= fb(m[i:i + 16], "big")
            z = (z >> 4) ^ red[z & 15]
            i = (b >> 4) << 4
            z ^= fb(m[i:i + 16], "big")
        return z

    def _update(self, mv):
        n = len(mv)
        i = 0
        np = self._np
        if np:
            k = min(16 - np, n)
            self._pend[np:np + k] = mv[0:k]
            np += k
            i = k
            if np < 16:
                self._np = np
                return
            self._y = self._mul(self._y ^ int.from_bytes(self._pend, "big"))
            np = 0
        y = self._y
        while i + 16 <= n:
            y = self._mul(y ^ int.from_bytes(mv[i:i + 16], "big"))
            i += 16
        self._y = y
        if i < n:
            self._pend[0:n - i] = mv[i:n]
            np = n - i
        self._np = np

    def _pad(self):
        np = self._np
        if np:
            p = self._pend
            for k in range(np, 16):
                p[k] = 0
            self._y = self._mul(self._y ^ int.from_bytes(p, "big"))
            self._np = 0

    def _block(self, iv, counter):
        cb = self._cb
        cb[0:12] = iv
        struct.pack_into(">I", cb, 12, counter)
        self._aes.encrypt(cb, self._ks)
        return self._ks

    def _tag(self, iv, aad, ct, tag_len):
        """GHASH over the AAD parts and the ciphertext, XOR E_K(IV || 1)."""
        self._y = 0
        self._np = 0
        alen = 0
        for part in aad:
            self._update(part)
            alen += len(part)
        self._pad()
        self._update(ct)
        self._pad()
        y = self._mul(self._y ^ ((alen * 8) << 64) ^ (len(ct) * 8))
        t = y ^ int.from_bytes(self._block(iv, 1), "big")
        return t.to_bytes(16, "big")[:tag_len]

    def _ctr(self, iv, src, dst, dpos):
        n = len(src)
        i = 0
        c = 2
        while i < n:
            ks = self._block(iv, c)
            if n - i >= 16:
                v = int.from_bytes(src[i:i + 16], "big") ^ int.from_bytes(ks, "big")
                dst[dpos + i:dpos + i + 16] = v.to_bytes(16, "big")
            else:
                for j in range(n - i):
                    dst[dpos + i + j] = src[i + j] ^ ks[j]
            i += 16
            c += 1

    def encrypt(self, iv, aad, src, dst, dpos, tag_len=TAG_LEN):
        """Encrypt src into dst[dpos:]; returns the tag over that ciphertext and the AAD parts.
        src and dst may be the same buffer at the same place."""
        self._ctr(iv, src, dst, dpos)
        return self._tag(iv, aad, memoryview(dst)[dpos:dpos + len(src)], tag_len)

    def decrypt(self, iv, aad, src, tag, dst, dpos):
        """Verify tag over src (ciphertext) and AAD first; only then decrypt into dst[dpos:].
        False (dst untouched) when the tag does not verify."""
        if not ct_equal(self._tag(iv, aad, src, len(tag)), tag):
            return False
        self._ctr(iv, src, dst, dpos)
        return True

    def auth(self, iv, aad, tag_len=TAG_LEN):
        """GMAC: the tag over AAD only (no ciphertext)."""
        return self._tag(iv, aad, b"", tag_len)


class Keys:
    """One client's key set: block cipher key (EK) with its GHASH table, authentication key."""

    def __init__(self, aes_ecb, ek, ak):
        if len(ek) != 16 or len(ak) != 16:
            raise ValueError("suite 0 keys are 16 bytes")
        self.gcm = Gcm(aes_ecb(bytes(ek)))
        self.ak = bytes(ak)


def _len_at(mv, p):
    """A-XDR length at mv[p] -> (length, new pos)."""
    if p >= len(mv):
        raise SecurityError("truncated length")
    b = mv[p]
    if b < 0x80:
        return b, p + 1
    if b == 0x81 and p + 2 <= len(mv):
        return mv[p + 1], p + 2
    if b == 0x82 and p + 3 <= len(mv):
        return (mv[p + 1] << 8) | mv[p + 2], p + 3
    raise SecurityError("bad length form 0x%02x" % b)


def _put_len(buf, p, n):
    if n < 0x80:
        buf[p] = n
        return p + 1
    if n < 0x100:
        buf[p] = 0x81
        buf[p + 1] = n
        return p + 2
    buf[p] = 0x82
    buf[p + 1] = n >> 8
    buf[p + 2] = n & 0xFF
    return p + 3


class Frame:
    """A parsed ciphered APDU: tag, sender title (general-glo only, else None), SC, IC, and the
    span [start, end) of ciphertext-or-plaintext followed by the 12-byte tag."""

    def __init__(self, tag, title, sc, ic, start, end):
        self.tag = tag
        self.title = title
        self.sc = sc
        self.ic = ic
        self.start = start
        self.end = end


def parse(mv):
    """Frame of `glo-tag | len | SC | IC | body | tag` or `DB | len title | len | SC | IC | ...`.
    Raises SecurityError on malformed framing."""
    n = len(mv)
    if n < 2:
        raise SecurityError("ciphered APDU truncated")
    tag = mv[0]
    p = 1
    title = None
    if tag == GENERAL_GLO:
        tl, p = _len_at(mv, p)
        if tl != TITLE_LEN or p + tl > n:
            raise SecurityError("general-glo-ciphering system title of %d bytes" % tl)
        title = bytes(mv[p:p + tl])
        p += tl
    ln, p = _len_at(mv, p)
    if p + ln != n:
        raise SecurityError("ciphered APDU length %d, %d bytes follow" % (ln, n - p))
    if ln < 5 + TAG_LEN:
        raise SecurityError("ciphered APDU of %d bytes is too short" % ln)
    sc = mv[p]
    ic = struct.unpack_from(">I", mv, p + 1)[0]
    return Frame(tag, title, sc, ic, p + 5, n)


def _iv(title, ic):
    return bytes(title) + struct.pack(">I", ic)


def open_into(keys, title, mv, f, dst, dpos):
    """Verify (and decrypt) frame f of mv sent by `title` into dst[dpos:]; returns the plain
    length. Raises DecipherError: authentication is required (SC 0x10 or 0x30, suite 0, unicast
    key, no compression)."""
    sc = f.sc
    if sc & 0xCF or not sc & SC_AUTH:
        raise DecipherError("security control 0x%02x not accepted" % sc)
    body = mv[f.start:f.end - TAG_LEN]
    tag = mv[f.end - TAG_LEN:f.end]
    iv = _iv(title, f.ic)
    scb = bytes((sc,))
    if sc & SC_ENC:
        if not keys.gcm.decrypt(iv, (scb, keys.ak), body, tag, dst, dpos):
            raise DecipherError("authentication tag does not verify")
    else:
        if not ct_equal(keys.gcm.auth(iv, (scb, keys.ak, body)), tag):
            raise DecipherError("authentication tag does not verify")
        dst[dpos:dpos + len(body)] = body
    return len(body)


def seal_into(keys, title, ic, sc, plain, dst, pos, general=False):
    """Write the protected form of `plain` into dst[pos:] and return the end position:
    service-specific glo tag (from plain[0]) or general-glo-ciphering with our title."""
    n = len(plain)
    body = 5 + n + TAG_LEN
    p = pos
    if general:
        dst[p] = GENERAL_GLO
        dst[p + 1] = TITLE_LEN
        dst[p + 2:p + 2 + TITLE_LEN] = title
        p += 2 + TITLE_LEN
    else:
        t = GLO_TAGS.get(plain[0])
        if t is None:
            raise SecurityError("no glo-ciphering tag for APDU 0x%02x" % plain[0])
        dst[p] = t
        p += 1
    p = _put_len(dst, p, body)
    dst[p] = sc
    struct.pack_into(">I", dst, p + 1, ic)
    p += 5
    iv = _iv(title, ic)
    scb = bytes((sc,))
    if sc & SC_ENC:
        tag = keys.gcm.encrypt(iv, (scb, keys.ak), plain, dst, p)
    else:
        dst[p:p + n] = plain
        tag = keys.gcm.auth(iv, (scb, keys.ak, plain))
    dst[p + n:p + n + TAG_LEN] = tag
    return p + n + TAG_LEN


def header_len(n, general=False):
    """Bytes of the protected form's header in front of an n-byte APDU (seal_in_place)."""
    body = 5 + n + TAG_LEN
    return (1 + (1 if body < 0x80 else 2 if body < 0x100 else 3) + 5
            + (1 + TITLE_LEN if general else 0))


def seal_in_place(keys, title, ic, sc, buf, start, end, general=False):
    """Protect the APDU buf[start:end] where it lies: the header goes into the header_len()
    bytes before start, the body is enciphered in place, the tag follows at end (12 bytes of
    room needed). Returns the protected form's (start, end)."""
    pos = start - header_len(end - start, general)
    return pos, seal_into(keys, title, ic, sc, memoryview(buf)[start:end], buf, pos, general)


def unseal_in_place(keys, title, ic, buf, start, end):
    """The plaintext of our own enciphered body buf[start:end] (sealed with `ic`) back in
    place: CTR is its own inverse. No tag check (we wrote it); for a re-send of a block."""
    keys.gcm._ctr(_iv(title, ic), memoryview(buf)[start:end], buf, start)


def seal(keys, title, ic, sc, plain, general=False):
    """seal_into a new bytearray (associations, tests: not the per-request path)."""
    buf = bytearray(len(plain) + OVERHEAD)
    end = seal_into(keys, title, ic, sc, plain, buf, 0, general)
    return bytes(buf[:end])


def unseal(keys, title, apdu):
    """(plain bytes, Frame) of a protected APDU from `title` (associations, tests)."""
    mv = memoryview(apdu)
    f = parse(mv)
    if f.title is not None:
        title = f.title
    buf = bytearray(f.end - f.start)
    n = open_into(keys, title, mv, f, buf, 0)
    return bytes(buf[:n]), f


def gmac(keys, title, ic, challenge):
    """HLS-GMAC tag: GMAC(IV = title || IC, AAD = 10 || AK || challenge), 12 bytes."""
    return keys.gcm.auth(_iv(title, ic), (b"\x10", keys.ak, challenge))


def hls_reply(keys, title, ic, challenge):
    """The reply_to_HLS_authentication parameter: 10 | IC | GMAC (17 bytes)."""
    return b"\x10" + struct.pack(">I", ic) + gmac(keys, title, ic, challenge)


def check_hls_reply(keys, title, challenge, value):
    """True if `value` (17 bytes) is 10 | IC | GMAC of `challenge` under keys and title."""
    if len(value) != 5 + TAG_LEN or value[0] != SC_AUTH:
        return False
    ic = struct.unpack_from(">I", value, 1)[0]
    return ct_equal(gmac(keys, title, ic, challenge), value[5:])


class Counter:
    """Our invocation counter: strictly increasing, never repeated, across power cuts too.

    The state holds a ceiling: every value below it may have been used. take() persists a new
    ceiling `block` ahead before handing out the first value above the old one, so a power cut
    loses at most `block` values and never repeats one; that costs one state write per `block`
    protected APDUs. state: get(key, default)/set(key, value) (the store's StateFile), or None
    for a counter in RAM only (tests)."""

    def __init__(self, state=None, key="dlms_ic", block=256):
        self._state = state
        self._key = key
        self._block = max(1, int(block))
        start = 1  # 0 is never sent: some clients start their expected counter at 0
        if state is not None:
            v = state.get(key, 0)
            if isinstance(v, int) and v > start:
                start = v
        self._next = start
        self._ceiling = start  # nothing at or above it is covered by a persisted reservation

    def take(self):
        n = self._next
        if n > _MASK32:
            raise SecurityError("invocation counter exhausted: new keys needed")
        if n >= self._ceiling:
            c = min(n + self._block, _MASK32 + 1)
            if self._state is not None:
                self._state.set(self._key, c)  # before the value is used
            self._ceiling = c
        self._next = n + 1
        return n

    def peek(self):
        """The next value take() returns (Security Setup / tests)."""
        return self._next
