# ROHM/ISB J11 binary UART protocol: frame codec, resyncing reassembler, payload decoders.
#
# Frame (big-endian): unique code (4) | command (2) | length = 4 + len(data) (2) |
# header checksum = sum(bytes 0..7) (2) | data checksum = sum(data) (2) | data (<= 1349).
# Requests carry D0EA83FC, responses and notifications D0F9EE5D. See docs/j11.md.
#
# Over the ~400 lines of a module: codec, reassembler and payload decoders are one wire format,
# imported together by the driver and the emulator; a split would add a module's import heap.
import struct

from firmware import log
from firmware.compat import const, ticks_diff, ticks_ms
from firmware.radio import link

UC_REQUEST = b"\xd0\xea\x83\xfc"
UC_RESPONSE = b"\xd0\xf9\xee\x5d"
HEADER_LEN = const(12)
MAX_DATA = const(1349)
MAX_FRAME = const(1361)
MAX_UDP_PAYLOAD = const(1232)

# Command codes used by the driver, the session and the emulator.
CMD_STATUS = const(0x0001)
CMD_OPEN_UDP = const(0x0005)
CMD_TRANSMIT = const(0x0008)
CMD_HAN_START = const(0x000A)
CMD_HAN_PANA_SET = const(0x002C)
CMD_HAN_PANA_START = const(0x003A)
CMD_ACTIVE_SCAN = const(0x0051)
CMD_INIT = const(0x005F)
CMD_VERSION = const(0x006B)
CMD_RESET = const(0x00D9)
RESP_FLAG = const(0x2000)
NOTIFY_SCAN = const(0x4051)
NOTIFY_UDP_RX = const(0x6018)
NOTIFY_STARTUP = const(0x6019)
NOTIFY_CONNECTION = const(0x601A)
NOTIFY_PANA = const(0x6028)
NOTIFY_RX_FAIL = const(0x6038)
ERR_INVALID_COMMAND = const(0xFFFF)
ERR_HEADER_CHECKSUM = const(0x2FFF)

RESULT_OK = const(0x01)
RESULT_UART_TIMEOUT = const(0x13)

PANA_OK = const(1)
PANA_BAD_CREDENTIALS = const(2)
PANA_NO_RESPONSE = const(3)

CONN_MAC_CONNECTED = const(1)
CONN_PANA_CONNECTED = const(2)
CONN_MAC_DISCONNECTED = const(3)
CONN_PANA_DISCONNECTED = const(4)

SCAN_MASK_ALL = const(0x0003FFF0)  # channels 4..17

_UDP_RX_FIXED = const(27)  # 0x6018 bytes before the payload
UDP_RX_FIXED = _UDP_RX_FIXED
UDP_TX_FIXED = const(22)  # 0x0008 bytes before the payload


class J11Error(ValueError):
    """Malformed J11 frame or payload."""


def checksum(buf, start, end):
    """16-bit byte sum of buf[start:end], summed in place (a view, no copy of the bytes)."""
    return sum(memoryview(buf)[start:end]) & 0xFFFF


def finish_into(buf, cmd, n_data, unique=UC_REQUEST):
    """Write the header for the n_data bytes already placed at buf[12:]; return the frame length.

    Lets callers build large payloads (UDP transmit) straight into a preallocated buffer.
    """
    if n_data < 0 or n_data > MAX_DATA:
        raise J11Error("data length %d out of range 0..%d" % (n_data, MAX_DATA))
    if len(buf) < HEADER_LEN + n_data:
        raise J11Error("buffer too small for %d data bytes" % n_data)
    buf[0:4] = unique
    struct.pack_into(">HH", buf, 4, cmd, 4 + n_data)
    struct.pack_into(">HH", buf, 8, checksum(buf, 0, 8), checksum(buf, 12, 12 + n_data))
    return HEADER_LEN + n_data


def encode_into(buf, cmd, data=b"", unique=UC_REQUEST):
    """Encode one frame into buf (bytearray/memoryview); return its length."""
    n = len(data)
    if n > MAX_DATA:
        raise J11Error("data length %d exceeds %d" % (n, MAX_DATA))
    if len(buf) < HEADER_LEN + n:
        raise J11Error("buffer too small for %d data bytes" % n)
    if n:
        memoryview(buf)[HEADER_LEN:HEADER_LEN + n] = data
    return finish_into(buf, cmd, n, unique)


def encode(cmd, data=b"", unique=UC_REQUEST):
    """Encode one frame as new bytes (tests, emulator)."""
    buf = bytearray(HEADER_LEN + len(data))
    encode_into(buf, cmd, data, unique)
    return bytes(buf)


def decode(frame, unique=None):
    """Decode exactly one complete frame -> (unique_code bytes, cmd, data memoryview)."""
    mv = memoryview(frame)
    if len(mv) < HEADER_LEN:
        raise J11Error("frame shorter than the 12-byte header")
    uc = bytes(mv[0:4])
    if uc != UC_REQUEST and uc != UC_RESPONSE:
        raise J11Error("unknown unique code")
    if unique is not None and uc != unique:
        raise J11Error("unexpected unique code")
    cmd, length, hsum, dsum = struct.unpack_from(">HHHH", mv, 4)
    if hsum != checksum(mv, 0, 8):
        raise J11Error("header checksum mismatch")
    if length < 4 or length - 4 > MAX_DATA:
        raise J11Error("message length %d out of range" % length)
    if len(mv) != HEADER_LEN + length - 4:
        raise J11Error("frame size %d does not match message length %d" % (len(mv), length))
    if dsum != checksum(mv, HEADER_LEN, len(mv)):
        raise J11Error("data checksum mismatch")
    return uc, cmd, mv[HEADER_LEN:]


# ---------------------------------------------------------------------------------------------
# Reassembler


_BUF_SIZE = const(2048)  # default: one maximal frame (1361) plus room for the next UART read
_TAIL_KEEP = const(3)  # bytes kept when no unique code is seen: a code may straddle two reads
_REGION_CAP = const(1024)  # a discarded region longer than this is reported in pieces
STALE_MS = const(1000)  # J11 frames arrive whole within 1 s; an older partial frame is dead

# reasons, as bit flags so one region line can name everything that went into it
_R_GARBAGE = const(1)
_R_HEADER = const(2)
_R_LENGTH = const(4)
_R_DATA = const(8)
_R_TRUNC = const(16)
_REASONS = (
    (_R_GARBAGE, "no unique code"),
    (_R_HEADER, "bad header checksum"),
    (_R_LENGTH, "bad message length"),
    (_R_DATA, "bad data checksum"),
    (_R_TRUNC, "truncated frame"),
)


class Reassembler:
    """Splits a UART byte stream into J11 frames.

    Feed bytes with feed(data) (copying) or space()/commit(n) (read straight into the buffer),
    then call next_frame() until it returns None. Each good frame comes back as
    (cmd, data memoryview); the view points into the internal buffer and is valid only until the
    next feed/commit/next_frame call, so a consumer copies what it keeps.

    Garbage, bad checksums, impossible lengths and stale partial frames are dropped; every
    contiguous dropped region is reported with one log line and counted in `stats`.
    """

    def __init__(self, unique=UC_RESPONSE, tag="j11", stale_ms=STALE_MS, size=_BUF_SIZE):
        """size: the buffer; a frame that could never fit in it is dropped as a bad length (a
        driver that bounds what it accepts sizes it to its largest frame plus one UART read)."""
        self.unique = unique
        self.tag = tag
        self.stale_ms = stale_ms
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        self._start = 0  # first unconsumed byte
        self._end = 0  # one past the last received byte
        self._last_rx = ticks_ms()
        self._drop_n = 0
        self._drop_why = 0
        self.stats = {
            "frames": 0,
            "regions": 0,
            "dropped_bytes": 0,
            "garbage": 0,
            "bad_header": 0,
            "bad_length": 0,
            "bad_data": 0,
            "truncated": 0,
        }

    # -- input --------------------------------------------------------------------------------

    def space(self):
        """Writable view of the free tail (never empty after next_frame() returned None)."""
        self._compact()
        return self._mv[self._end:]

    def commit(self, n, now=None):
        """Account for n bytes written into space()."""
        if n <= 0:
            return
        now = ticks_ms() if now is None else now
        if self._end > self._start and ticks_diff(now, self._last_rx) > self.stale_ms:
            # What is pending is older than the module's 1 s frame budget: it will never
            # complete, and waiting for it would swallow the frames that follow.
            self._drop_stale(rescan=True)
        self._last_rx = now
        self._end += n

    def feed(self, data, now=None):
        """Copy as much of data as fits; return how many bytes were taken."""
        free = self.space()
        n = min(len(free), len(data))
        if n:
            free[0:n] = memoryview(data)[0:n] if n < len(data) else data
            self.commit(n, now)
        return n

    def pending(self):
        """Bytes held waiting for the rest of a frame."""
        return self._end - self._start

    # -- output -------------------------------------------------------------------------------

    def next_frame(self):
        """Next good frame as (cmd, data memoryview), or None when more bytes are needed."""
        buf = self._buf
        uc = self.unique
        while True:
            start = self._start
            avail = self._end - start
            if avail < 4:
                return None
            if not self._at_unique(start):
                idx = buf.find(uc, start + 1, self._end)
                if idx < 0:
                    keep = min(_TAIL_KEEP, avail)
                    self._discard(avail - keep, _R_GARBAGE)
                    return None
                self._discard(idx - start, _R_GARBAGE)
                continue
            if avail < HEADER_LEN:
                return None
            cmd, length, hsum, dsum = struct.unpack_from(">HHHH", buf, start + 4)
            if hsum != checksum(buf, start, start + 8):
                self._bad(_R_HEADER, "bad_header")
                continue
            total = HEADER_LEN + length - 4
            if length < 4 or length - 4 > MAX_DATA or total > len(buf):
                self._bad(_R_LENGTH, "bad_length")
                continue
            if avail < total:
                return None
            if dsum != checksum(buf, start + HEADER_LEN, start + total):
                # Drop only the unique code: if this "frame" is a truncated one followed by a
                # good frame, the good frame is still in the buffer and found by the rescan.
                self._bad(_R_DATA, "bad_data")
                continue
            self.flush()
            self._start = start + total
            self.stats["frames"] += 1
            return cmd, self._mv[start + HEADER_LEN:start + total]

    def flush(self):
        """Report the dropped region collected so far (one log line)."""
        if not self._drop_n:
            return
        why = []
        for bit, text in _REASONS:
            if self._drop_why & bit:
                why.append(text)
        log.warn(self.tag, "discarded %d bytes from the UART stream (%s)"
                 % (self._drop_n, ", ".join(why)))
        self.stats["regions"] += 1
        self._drop_n = 0
        self._drop_why = 0

    # -- internals ----------------------------------------------------------------------------

    def _at_unique(self, i):
        b = self._buf
        u = self.unique
        return b[i] == u[0] and b[i + 1] == u[1] and b[i + 2] == u[2] and b[i + 3] == u[3]

    def _bad(self, reason, counter):
        self.stats[counter] += 1
        self._discard(4, reason)  # skip this unique code, rescan from the next byte

    def _drop_stale(self, rescan=False):
        n = self._end - self._start
        if n >= 4 and self._at_unique(self._start):
            if rescan:
                # A frame whose tail was lost still claims its full length, so complete frames
                # that came after it wait inside it: drop only its unique code and rescan, as
                # for a bad checksum, so they are found.
                self._bad(_R_TRUNC, "truncated")
                return
            self.stats["truncated"] += 1
            self._discard(n, _R_TRUNC)
        else:
            self._discard(n, _R_GARBAGE)

    def _discard(self, n, reason):
        if n <= 0:
            return
        if reason == _R_GARBAGE and not (self._drop_why & _R_GARBAGE):
            self.stats["garbage"] += 1
        self._start += n
        self._drop_n += n
        self._drop_why |= reason
        self.stats["dropped_bytes"] += n
        if self._drop_n >= _REGION_CAP:
            self.flush()

    def _compact(self):
        s = self._start
        if s == 0:
            return
        n = self._end - s
        if n:
            self._mv[0:n] = self._mv[s:self._end]
        self._start = 0
        self._end = n


# ---------------------------------------------------------------------------------------------
# Request payload builders


def mac_bytes(mac):
    """EUI-64 from 16 hex characters (or 8 bytes); J11Error otherwise."""
    try:
        return link.mac_bytes(mac)
    except ValueError as e:
        raise J11Error(str(e))


mac_hex = link.mac_hex


def link_local_of_mac(mac):
    """fe80:: + EUI-64 with the universal/local bit flipped (16 bytes)."""
    ip = bytearray(16)
    ip[0] = 0xFE
    ip[1] = 0x80
    ip[8:16] = mac_bytes(mac)
    ip[8] ^= 0x02
    return bytes(ip)


def ipv6_text(ip):
    """Compact-enough text form for logs: eight 4-hex groups."""
    ip = bytes(ip)
    return ":".join("%02x%02x" % (ip[i], ip[i + 1]) for i in range(0, 16, 2))


def scan_request(duration, mask=SCAN_MASK_ALL, pairing_id=None):
    """0x0051 data: duration (1), channel mask (4), ID flag (1), pairing ID (8)."""
    if not 1 <= duration <= 14:
        raise J11Error("scan duration %d out of range 1..14" % duration)
    data = bytearray(14)
    data[0] = duration
    struct.pack_into(">I", data, 1, mask)
    if pairing_id:
        pid = pairing_id.encode() if isinstance(pairing_id, str) else bytes(pairing_id)
        if len(pid) != 8:
            raise J11Error("pairing ID must be 8 bytes")
        data[5] = 1
        data[6:14] = pid
    return bytes(data)


def scan_timeout_ms(duration, mask=SCAN_MASK_ALL):
    """Whole-scan budget: channels x 9.64 ms x 2^duration, plus 50 % and 2 s of margin."""
    n = 0
    m = mask
    while m:
        n += m & 1
        m >>= 1
    dwell = 964 * (1 << duration) // 100
    return dwell * n * 3 // 2 + 2000


def init_request(mode, channel, sleep=0, power=0):
    """0x005F data: mode, HAN sleep, channel, TX power."""
    if mode not in (1, 2, 3, 5):
        raise J11Error("mode %d is not 1, 2, 3 or 5" % mode)
    if not 4 <= channel <= 17:
        raise J11Error("channel %d out of range 4..17" % channel)
    if power not in (0, 1, 2):
        raise J11Error("TX power code %d is not 0, 1 or 2" % power)
    return bytes((mode, 1 if sleep else 0, channel, power))


def udp_tx_into(buf, dst_ipv6, src_port, dst_port, payload):
    """Place 0x0008 data at buf[12:]; return the data length (then call finish_into)."""
    n = len(payload)
    if n > MAX_UDP_PAYLOAD:
        raise J11Error("UDP payload %d bytes exceeds %d" % (n, MAX_UDP_PAYLOAD))
    if 34 + n > len(buf):
        raise J11Error("UDP payload %d bytes does not fit a %d-byte frame buffer" % (n, len(buf)))
    if len(dst_ipv6) != 16:
        raise J11Error("destination IPv6 must be 16 bytes")
    # equal-length slice assignments: the payload's one copy, no view or temporary allocated
    buf[12:28] = dst_ipv6
    struct.pack_into(">HHH", buf, 28, src_port, dst_port, n)
    buf[34:34 + n] = payload
    return 22 + n


# ---------------------------------------------------------------------------------------------
# Response / notification decoders (all take the frame data, e.g. the view from next_frame)


def _rssi(b):
    return b - 256 if b >= 128 else b


def result_of(data):
    """Result byte that starts every 0x2xxx response."""
    if len(data) < 1:
        raise J11Error("response without a result byte")
    return data[0]


def decode_version(data):
    """0x206B -> (fw_id, major, minor, revision)."""
    if len(data) < 9:
        raise J11Error("version response needs 9 bytes, got %d" % len(data))
    return struct.unpack_from(">HBBI", data, 1)


def decode_tx_result(data):
    """0x2008 -> (result, queue, tx_result); tx_result 0 = sent, 5 = no ACK."""
    if len(data) < 1:
        raise J11Error("transmit response without a result byte")
    if data[0] != RESULT_OK:
        return data[0], 0, -1
    if len(data) < 2:
        raise J11Error("transmit response without the tx-result byte")
    return data[0], data[1] >> 4, data[1] & 0x0F


def decode_scan(data):
    """0x4051 -> (channel, [(mac bytes, pan_id, rssi_dbm), ...]); empty list = no beacon."""
    if len(data) < 2:
        raise J11Error("scan notification needs 2 bytes, got %d" % len(data))
    result, channel = data[0], data[1]
    if result == 1:
        return channel, []
    if result != 0:
        raise J11Error("scan notification result %d unknown" % result)
    if len(data) < 3:
        raise J11Error("scan notification without a beacon count")
    count = data[2]
    if len(data) != 3 + 11 * count:
        raise J11Error("scan notification: %d beacons need %d bytes, got %d"
                       % (count, 3 + 11 * count, len(data)))
    out = []
    for i in range(count):
        off = 3 + 11 * i
        pan = struct.unpack_from(">H", data, off + 8)[0]
        out.append((bytes(data[off:off + 8]), pan, _rssi(data[off + 10])))
    return channel, out


def decode_udp_rx(data):
    """0x6018 -> (src_ipv6, src_port, dst_port, pan_id, multicast, encrypted, rssi, payload).

    src_ipv6 and payload are views into data (copy them to keep them).
    """
    if len(data) < _UDP_RX_FIXED:
        raise J11Error("UDP notification needs %d bytes, got %d" % (_UDP_RX_FIXED, len(data)))
    src_port, dst_port, pan_id, dtype, enc, rssi, n = struct.unpack_from(">HHHBBBH", data, 16)
    if len(data) != _UDP_RX_FIXED + n:
        raise J11Error("UDP notification length field %d but %d payload bytes"
                       % (n, len(data) - _UDP_RX_FIXED))
    mv = memoryview(data)
    return (mv[0:16], src_port, dst_port, pan_id, dtype == 1, enc == 2, _rssi(rssi),
            mv[_UDP_RX_FIXED:])


def decode_connection(data):
    """0x601A -> (status, mac bytes, rssi or None)."""
    if len(data) < 9:
        raise J11Error("connection notification needs 9 bytes, got %d" % len(data))
    if not 1 <= data[0] <= 4:
        raise J11Error("connection status %d unknown" % data[0])
    rssi = _rssi(data[9]) if len(data) >= 10 else None
    return data[0], bytes(data[1:9]), rssi


def decode_pana(data):
    """0x6028 -> (result, mac bytes); 1 OK, 2 bad credentials, 3 no response."""
    if len(data) < 9:
        raise J11Error("PANA notification needs 9 bytes, got %d" % len(data))
    return data[0], bytes(data[1:9])


def decode_rx_fail(data):
    """0x6038 -> (reason, src_ipv6 bytes, seq, fragment flag, tag)."""
    if len(data) < 21:
        raise J11Error("receive-failure notification needs 21 bytes, got %d" % len(data))
    seq, frag, tag = struct.unpack_from(">BBH", data, 17)
    return data[0], bytes(data[1:17]), seq, frag, tag
