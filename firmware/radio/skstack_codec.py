# SKSTACK IP text protocol codec (reference wisun-modules.md section 4): a byte-stream reader
# that splits the module's output into lines and ERXUDP datagrams, and small parsers that work
# on a line in place (offsets into a preallocated buffer), so a received datagram or an EVENT
# line costs no allocation. Pure: no I/O, no asyncio; the driver (skstack.py) feeds it.
#
# ERXUDP data is parsed by DATALEN, never by line: in binary mode (WOPT 00) the data is DATALEN
# raw bytes (they may contain CR LF) followed by CR LF; in hex mode (WOPT 01, RL7023 IPS) it is
# 2 x DATALEN hex characters. Both are accepted whatever the driver configured: after DATALEN
# bytes, a CR means binary; a hex character means the bytes so far were hex text, and they are
# decoded in place and the rest read as hex (unambiguous: hex text never has a CR in the middle).
from firmware.compat import const

LINE_SIZE = const(256)  # the longest line the module sends is an ERXUDP header (~140 bytes)
MAX_TOKENS = const(12)
MAX_UDP = const(1232)  # SKSENDTO LEN <= 0x04D0

# reader states
_S_LINE = const(0)
_S_BIN = const(1)  # DATALEN data bytes (binary, or the first half of hex text)
_S_AFTER = const(2)  # just after DATALEN bytes: CR (binary) or a hex digit (hex text)
_S_HEX = const(3)  # the rest of hex text, decoded nibble by nibble
_S_CR = const(4)  # data complete: expect CR LF
_S_LF = const(5)
_S_SKIP = const(6)  # resync: discard to the next LF
_S_SKIPN = const(7)  # discard `need` bytes (an oversized datagram), then resync

# error kinds (counted in Reader.errors and reported once per kind by the driver)
E_OVERLONG = const(0)
E_GARBLED = const(1)  # an ERXUDP header that does not parse
E_TOO_LONG = const(2)  # DATALEN beyond the payload buffer
E_DATA = const(3)  # data not followed by CR LF, or a non-hex character in hex data
E_NAMES = ("overlong line", "garbled ERXUDP", "datagram too long", "bad ERXUDP data")

_ERXUDP = b"ERXUDP"


def hexval(c):
    """One ASCII hex digit (either case) -> 0..15, or -1."""
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


def hex_int(buf, s, e):
    """buf[s:e] as unsigned hex (1..7 digits: stays a small int on the ESP32), else -1."""
    if e <= s or e - s > 7:
        return -1
    v = 0
    while s < e:
        d = hexval(buf[s])
        if d < 0:
            return -1
        v = (v << 4) | d
        s += 1
    return v


def dec_int(buf, s, e):
    """buf[s:e] as an unsigned decimal (1..9 digits), else -1."""
    if e <= s or e - s > 9:
        return -1
    v = 0
    while s < e:
        c = buf[s]
        if not 48 <= c <= 57:
            return -1
        v = v * 10 + c - 48
        s += 1
    return v


def hex_into(buf, s, e, out, off=0):
    """Hex text buf[s:e] (even length) -> bytes into out[off:]; the byte count, or -1."""
    n = e - s
    if n & 1 or off + n // 2 > len(out):
        return -1
    i = 0
    while s < e:
        a = hexval(buf[s])
        b = hexval(buf[s + 1])
        if a < 0 or b < 0:
            return -1
        out[off + i] = (a << 4) | b
        s += 2
        i += 1
    return i


def ipv6_into(buf, s, e, out):
    """The module's IPv6 text (eight 4-digit groups, 39 characters) -> 16 bytes into out.
    True when it parsed. The modules always print the full form, never '::'."""
    if e - s != 39:
        return False
    for g in range(8):
        p = s + g * 5
        if g < 7 and buf[p + 4] != 58:  # ':'
            return False
        if hex_into(buf, p, p + 4, out, g * 2) != 2:
            return False
    return True


_HEX = b"0123456789ABCDEF"


def put_hex(buf, off, value, digits):
    """Write value as `digits` uppercase hex digits at buf[off]; returns the new offset."""
    i = off + digits - 1
    while i >= off:
        buf[i] = _HEX[value & 15]
        value >>= 4
        i -= 1
    return off + digits


def put_ipv6(buf, off, ip):
    """16 address bytes -> the module's 39-character text at buf[off]; returns the new offset."""
    for g in range(8):
        if g:
            buf[off] = 58
            off += 1
        off = put_hex(buf, off, (ip[2 * g] << 8) | ip[2 * g + 1], 4)
    return off


def ipv6_text(ip):
    b = bytearray(39)
    put_ipv6(b, 0, ip)
    return bytes(b)


def lqi_to_rssi(lqi):
    """RSSI (dBm, rounded to an integer) = 0.275 x LQI - 104.27, in integer arithmetic."""
    x = 275 * lqi - 104270  # milli-dBm
    if x < 0:
        return -((-x + 500) // 1000)
    return (x + 500) // 1000


def rssi_to_lqi(rssi):
    """Inverse of lqi_to_rssi (emulator side), clamped to 0..255."""
    v = (rssi * 1000 + 104270 + 137) // 275
    return 0 if v < 0 else (255 if v > 255 else v)


def starts(buf, n, prefix):
    """buf[:n] begins with prefix (no slice allocated)."""
    m = len(prefix)
    if n < m:
        return False
    for i in range(m):
        if buf[i] != prefix[i]:
            return False
    return True


def token_eq(buf, s, e, word):
    if e - s != len(word):
        return False
    for i in range(e - s):
        if buf[s + i] != word[i]:
            return False
    return True


class Reader:
    """Byte stream -> line_cb(reader) for each line, udp_cb(reader, n) for each ERXUDP datagram.

    During a callback, the line is self.line[:self.n], its tokens (split at single spaces) are
    self.ts[i]:self.te[i] for i < self.nt; a datagram's data is self.payload[:n]. Callbacks must
    copy what they keep. Errors are counted in self.errors[kind] and reported to err_cb(kind)."""

    def __init__(self, max_udp=MAX_UDP, line_size=LINE_SIZE, line_cb=None, udp_cb=None,
                 err_cb=None):
        self.line = bytearray(line_size)
        self.payload = bytearray(max_udp)
        self._pv = memoryview(self.payload)
        self.ts = [0] * MAX_TOKENS
        self.te = [0] * MAX_TOKENS
        self.line_cb = line_cb
        self.udp_cb = udp_cb
        self.err_cb = err_cb
        self.errors = [0, 0, 0, 0]
        self.lines = 0
        self.datagrams = 0
        self.reset()

    def reset(self):
        self.n = 0
        self.nt = 0
        self.state = _S_LINE
        self._erx = False  # the current line is an ERXUDP header
        self.datalen_tok = -1  # index of the DATALEN token
        self._need = 0
        self._got = 0

    def _error(self, kind):
        self.errors[kind] += 1
        self.state = _S_SKIP
        if self.err_cb is not None:
            self.err_cb(kind)

    def feed(self, data, n=None):
        """Process data[:n] (bytes, bytearray or memoryview)."""
        if n is None:
            n = len(data)
        if not isinstance(data, memoryview):  # slices of a view copy nothing
            data = memoryview(data)
        i = 0
        while i < n:
            st = self.state
            if st == _S_LINE:
                i = self._feed_line(data, i, n)
            elif st == _S_BIN:
                k = min(n - i, self._need - self._got)
                self.payload[self._got:self._got + k] = data[i:i + k]
                self._got += k
                i += k
                if self._got == self._need:
                    self.state = _S_AFTER
            elif st == _S_HEX:
                d = hexval(data[i])
                if d < 0:
                    self._error(E_DATA)
                    continue  # reprocess the byte while skipping (it may be the LF)
                j = self._got
                if j & 1:
                    self.payload[j >> 1] |= d
                else:
                    self.payload[j >> 1] = d << 4
                self._got = j + 1
                i += 1
                if self._got == 2 * self._need:
                    self.state = _S_CR
            elif st == _S_CR or st == _S_AFTER:
                c = data[i]
                if c == 13:
                    self.state = _S_LF
                    i += 1
                elif c == 10:
                    i += 1
                    self._deliver()
                elif st == _S_AFTER and self._hex_so_far():
                    self.state = _S_HEX  # reprocess c as the next nibble
                else:
                    self._error(E_DATA)
            elif st == _S_LF:
                if data[i] == 10:
                    i += 1
                    self._deliver()
                else:
                    self._error(E_DATA)
            elif st == _S_SKIPN:
                k = min(n - i, self._need)
                self._need -= k
                i += k
                if self._need == 0:
                    self.state = _S_SKIP
            else:  # _S_SKIP
                c = data[i]
                i += 1
                if c == 10:
                    self.n = 0
                    self.nt = 0
                    self._erx = False
                    self.state = _S_LINE

    def _hex_so_far(self):
        """After DATALEN bytes with no CR: were they hex text? Then decode them in place."""
        m = self._need
        p = self.payload
        for j in range(m):
            if hexval(p[j]) < 0:
                return False
        for j in range(m):
            d = hexval(p[j])
            if j & 1:
                p[j >> 1] |= d
            else:
                p[j >> 1] = d << 4
        self._got = m
        return True

    def _feed_line(self, data, i, n):
        line = self.line
        size = len(line)
        while i < n:
            c = data[i]
            i += 1
            if c == 10:
                k = self.n
                if k and line[k - 1] == 13:
                    k -= 1
                self.n = k
                self._end_token()
                self.lines += 1
                if self.line_cb is not None:
                    self.line_cb(self)
                self.n = 0
                self.nt = 0
                self._erx = False
                return i
            if self.n >= size:
                self._error(E_OVERLONG)
                return i
            line[self.n] = c
            self.n += 1
            if c == 32:
                self._space()
                if self.state != _S_LINE:
                    return i
        return i

    def _end_token(self):
        """Close the token that ends at self.n (before a space, CR LF or the data)."""
        k = self.n
        s = 0 if self.nt == 0 else self.te[self.nt - 1] + 1
        if k > s and self.nt < MAX_TOKENS:
            self.ts[self.nt] = s
            self.te[self.nt] = k
            self.nt += 1

    def _space(self):
        self.n -= 1  # the token ends before the space
        nt0 = self.nt
        self._end_token()
        self.n += 1
        if self.nt == nt0:  # an empty token (double space): keep offsets consistent
            if self.nt < MAX_TOKENS:
                self.ts[self.nt] = self.n - 1
                self.te[self.nt] = self.n - 1
                self.nt += 1
        if self.nt == 1:
            self._erx = token_eq(self.line, self.ts[0], self.te[0], _ERXUDP)
            return
        if not self._erx or self.nt < 8:
            return
        # DATALEN is the first 4-character token after SENDERLLA (token 5): SECURED and SIDE
        # are 1 character, LQI 2, so this finds it in every layout (single-hop, DSE with or
        # without SA2).
        t = self.nt - 1
        if self.te[t] - self.ts[t] != 4:
            if t >= 9:
                self._error(E_GARBLED)
            return
        m = hex_int(self.line, self.ts[t], self.te[t])
        if m < 0 or m > MAX_UDP:  # no module sends more than 0x04D0: garbage, resync
            self._error(E_GARBLED)
            return
        self.datalen_tok = t
        if m > len(self.payload):
            self.errors[E_TOO_LONG] += 1
            self._need = m
            self.state = _S_SKIPN
            if self.err_cb is not None:
                self.err_cb(E_TOO_LONG)
            return
        self._need = m
        self._got = 0
        self.state = _S_BIN if m else _S_CR

    def _deliver(self):
        n = self._need
        self.state = _S_LINE
        self.datagrams += 1
        if self.udp_cb is not None:
            self.udp_cb(self, n)
        self.n = 0
        self.nt = 0
        self._erx = False

    def data(self, n):
        return self._pv[0:n]


# -- line parsers (work on the Reader's current line) ------------------------------------------

class Erxudp:
    """Fields of the current ERXUDP header, parsed into preallocated storage."""

    def __init__(self):
        self.src = bytearray(16)
        self.rport = 0
        self.lport = 0
        self.lqi = -1  # -1: not in this layout (single-hop, DSE without SA2)
        self.secured = 0
        self.side = -1  # -1: single-hop

    def parse(self, r):
        """True when the header's fields parse (r: the Reader during udp_cb)."""
        b, ts, te = r.line, r.ts, r.te
        d = r.datalen_tok
        if d < 7 or not ipv6_into(b, ts[1], te[1], self.src):
            return False
        self.rport = hex_int(b, ts[3], te[3])
        self.lport = hex_int(b, ts[4], te[4])
        if self.rport < 0 or self.lport < 0 or te[5] - ts[5] != 16:
            return False
        extra = d - 6  # tokens between SENDERLLA and DATALEN
        self.lqi = -1
        self.side = -1
        if extra == 1:  # SECURED
            self.secured = hex_int(b, ts[6], te[6])
        elif extra == 2:  # SECURED SIDE
            self.secured = hex_int(b, ts[6], te[6])
            self.side = hex_int(b, ts[7], te[7])
        elif extra == 3:  # LQI SECURED SIDE (DSE, SA2=1)
            self.lqi = hex_int(b, ts[6], te[6])
            self.secured = hex_int(b, ts[7], te[7])
            self.side = hex_int(b, ts[8], te[8])
        else:
            return False
        return self.secured >= 0 and (extra == 1 or self.side >= 0) \
            and (extra != 3 or self.lqi >= 0)


class Event:
    """EVENT <NUM> <SENDER> [<SIDE>] [<PARAM>]: SIDE is one digit, PARAM two (either dialect)."""

    def __init__(self):
        self.num = -1
        self.side = -1
        self.param = -1

    def parse(self, r):
        b, ts, te = r.line, r.ts, r.te  # (a 4-name unpack would build a tuple)
        nt = r.nt
        if nt < 2 or nt > 5 or te[1] - ts[1] != 2:
            return False
        self.num = hex_int(b, ts[1], te[1])
        self.side = -1
        self.param = -1
        for k in range(3, nt):
            w = te[k] - ts[k]
            v = hex_int(b, ts[k], te[k])
            if v < 0:
                return False
            if w == 1 and k == 3:
                self.side = v
            elif w == 2:
                self.param = v
            else:
                return False
        return self.num >= 0


def kv(r):
    """An EPANDESC field line '  Key:Value' -> (key bytes, value start, value end) or None."""
    b, n = r.line, r.n
    if n < 3 or b[0] != 32:
        return None
    s = 0
    while s < n and b[s] == 32:
        s += 1
    c = s
    while c < n and b[c] != 58:
        c += 1
    if c >= n:
        return None
    return bytes(b[s:c]), c + 1, n


class PanDesc:
    """One EPANDESC block, filled field by field."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.channel = -1
        self.page = -1
        self.pan_id = -1
        self.mac = None
        self.lqi = -1
        self.side = -1
        self.pair_id = None

    def field(self, key, b, s, e):
        """Store one field; False when its value does not parse."""
        if key == b"Channel":
            self.channel = hex_int(b, s, e)
            return self.channel >= 0
        if key == b"Channel Page":
            self.page = hex_int(b, s, e)
            return self.page >= 0
        if key == b"Pan ID":
            self.pan_id = hex_int(b, s, e) if e - s == 4 else -1
            return self.pan_id >= 0
        if key == b"Addr":
            mac = bytearray(8)
            if e - s != 16 or hex_into(b, s, e, mac) != 8:
                return False
            self.mac = bytes(mac)
            return True
        if key == b"LQI":
            self.lqi = hex_int(b, s, e) if e - s <= 2 else -1
            return self.lqi >= 0
        if key == b"Side":
            self.side = hex_int(b, s, e)
            return self.side >= 0
        if key == b"PairID":
            self.pair_id = bytes(b[s:e])
            return True
        return True  # unknown field: ignored

    def complete(self):
        return self.channel >= 0 and self.pan_id >= 0 and self.mac is not None \
            and self.lqi >= 0
