# SNTP client (RFC 4330 / RFC 5905 client mode) for the optional NTP time source (docs/clock.md
# section 6). The codec is pure; query() does one exchange over a UDP endpoint, ntp_query() over
# a socket of its own bound to the HAL's LAN address (hal.lan_ip()): the same code on the host
# and on the ESP32 (firmware/hal/udp.py). Not imported unless clock.ntp is on.
#
# ESP32 port facts (../shared/reference/micropython-platform.md): its epoch is 2000 like t2k, but
# the conversion here is explicit and does not depend on it; the frozen ntptime module is not used
# (it blocks for its whole timeout, sends no nonce and sets the RTC itself; the RTC follows a set
# of the calendar clock in esp32.py); lwIP's getaddrinfo blocks the event loop while it resolves
# a server *name* (configure an address); NTP seconds are above 2^30, so they are heap longs
# there (one query an hour).
#
# A request carries a nonce in its transmit timestamp; a reply counts only if it echoes that nonce
# as its origin timestamp (an old or forged reply cannot set the clock), is 48 bytes or more, in
# server mode (4), version 3 or 4, stratum 1..15 and not "alarm" (leap 3 =
# the server is not synchronised). The time is whole seconds since 2000 (t2k), rounded, with half
# the round trip added.
import struct

from firmware.compat import const

PACKET_LEN = const(48)
_MODE_CLIENT = const(3)
_MODE_SERVER = const(4)
_VERSION = const(4)
_LEAP_ALARM = const(3)
# NTP seconds (era 0, from 1900) of 2000-01-01T00:00Z: 100 years of 365 days plus 24 leap days
# (plain ints, not const(): above 2^30 they are heap longs on the ESP32 in any case)
_NTP_T2K = 3155673600
# A transmit time below this (2024-01-01Z in NTP era 0) is taken as era 1 (after 2036-02-07),
# as micropython-lib's ntptime does (MIN_NTP_TIMESTAMP).
_MIN_NTP = 3913056000
_ERA = 4294967296


class SntpError(ValueError):
    """A reply that must not set the clock (why in the message; it never carries secrets)."""


def encode_request(buf, nonce):
    """Write a 48-byte client request into buf (a preallocated bytearray): LI 0, version 4,
    mode 3, everything else 0 but the transmit timestamp, which carries `nonce` (8 bytes; the
    server echoes it as the origin timestamp). Returns 48."""
    for i in range(PACKET_LEN):
        buf[i] = 0
    buf[0] = (_VERSION << 3) | _MODE_CLIENT
    buf[40:48] = nonce
    return PACKET_LEN


def decode_reply(buf, n, nonce, rtt_ms=0):
    """t2k (whole seconds, rounded) of a server reply of n bytes in buf, with half of rtt_ms (the
    round trip) added; SntpError if the reply is unusable."""
    if n < PACKET_LEN:
        raise SntpError("reply of %d bytes, expected at least 48" % n)
    b0 = buf[0]
    li = b0 >> 6
    vn = (b0 >> 3) & 7
    mode = b0 & 7
    if mode != _MODE_SERVER:
        raise SntpError("mode %d, expected 4 (server)" % mode)
    if vn not in (3, 4):
        raise SntpError("version %d, expected 3 or 4" % vn)
    if li == _LEAP_ALARM:
        raise SntpError("leap indicator 3: server not synchronised")
    stratum = buf[1]
    if not 1 <= stratum <= 15:
        # 0 is a kiss-o'-death (e.g. RATE, DENY): back off, never take its time
        raise SntpError("stratum %d (0 = kiss-o'-death), expected 1..15" % stratum)
    mv = memoryview(buf)
    if bytes(mv[24:32]) != bytes(nonce):
        raise SntpError("origin timestamp is not our request's: stale or foreign reply")
    secs, frac = struct.unpack_from(">II", buf, 40)
    if secs == 0 and frac == 0:
        raise SntpError("transmit timestamp is zero")
    if secs < _MIN_NTP:
        secs += _ERA
    if rtt_ms < 0 or rtt_ms > 60000:
        rtt_ms = 0
    ms = ((frac >> 16) * 1000 >> 16) + rtt_ms // 2
    return secs - _NTP_T2K + (ms + 500) // 1000


async def query(ep, server, nonce, timeout_ms, ticks_ms, ticks_diff, wait_ms, buf):
    """One SNTP exchange: send to server (ip or name, port) through ep (firmware/hal/udp.py
    UdpEndpoint), wait up to timeout_ms for the reply from that server echoing nonce. Returns
    t2k; SntpError for a bad reply, OSError/TimeoutError when none came."""
    n = encode_request(buf, nonce)
    t0 = ticks_ms()
    ep.sendto(memoryview(buf)[:n], server)
    while True:
        left = timeout_ms - ticks_diff(ticks_ms(), t0)
        if left <= 0:
            raise OSError(110, "no NTP reply within %d ms" % timeout_ms)
        data, addr = await wait_ms(ep.recv(), left)
        if addr[1] != server[1]:
            continue  # not from the server's port: not a reply to us
        return decode_reply(data, len(data), nonce, ticks_diff(ticks_ms(), t0))


async def ntp_query(bind_ip, server, port, timeout_ms, nonce):
    """t2k from one SNTP exchange with (server, port) from a fresh UDP socket bound to bind_ip
    on a free port (closed again: the feature holds no socket between queries)."""
    from firmware.compat import ticks_diff, ticks_ms, wait_ms
    from firmware.hal.udp import UdpEndpoint

    ep = UdpEndpoint(bind_ip, 0, reuse=False)
    ep.max_datagram = 96  # 48 bytes, or 68 with a key id and MAC: never the 640-byte default
    try:
        return await query(ep, (server, port), nonce, timeout_ms, ticks_ms, ticks_diff,
                           wait_ms, bytearray(PACKET_LEN))
    finally:
        ep.close()
