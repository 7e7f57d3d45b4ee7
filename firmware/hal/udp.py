# Non-blocking UDP endpoint shared by the host and ESP32 HALs.
# Normalises the peer address to (ip_str, port): the ESP32 port returns ('ip', port) from recvfrom,
# the unix port returns a raw sockaddr_in bytes object.
#
# Multicast (ECHONET Lite 224.0.23.0, see docs/discovery.md): join_multicast() adds the IGMP
# membership (IP_ADD_MEMBERSHIP, 8 bytes: group + interface address, the only form the ESP32 port
# accepts) and, where the runtime has the option, pins the outgoing multicast interface and turns
# multicast loop-back off. The ESP32 port has no IP_MULTICAST_IF/IP_MULTICAST_LOOP/
# IP_DROP_MEMBERSHIP (unknown options print a warning there and do nothing), so on the device the
# route of the default interface carries outgoing multicast. rejoin() repeats the join after a
# reconnect: memberships die with the interface address, and switches prune idle groups.
# To receive multicast the endpoint must be bound to 0.0.0.0 (a socket bound to a unicast address
# does not see datagrams addressed to the group on Linux).
import socket
import sys

from firmware.compat import const
from firmware.hal.aio import wait_readable

MCAST_GROUP = "224.0.23.0"  # ECHONET Lite IPv4 multicast group

# Option numbers: Linux values, used when the socket module lacks the name (the MicroPython unix
# port has IP_ADD_MEMBERSHIP but no IPPROTO_IP/IP_MULTICAST_IF/IP_MULTICAST_LOOP). lwIP on the
# ESP32 dispatches on the option name only and ignores the level.
_IPPROTO_IP = const(0)
_IP_MULTICAST_IF = const(32)
_IP_MULTICAST_LOOP = const(34)
_IP_ADD_MEMBERSHIP = const(35)
_IP_DROP_MEMBERSHIP = const(36)
_EADDRINUSE = const(98)  # Linux: already a member of the group on that interface
_ECONNREFUSED = const(111)
# Largest datagram taken from the socket. The ESP32 socket has no recvfrom_into: recvfrom(n)
# allocates n + 1 bytes, then shrinks the object to the datagram, so n is the contiguous block
# every receive needs. ECHONET Lite replies are bounded by what the terminal asks: the largest is
# a history pair (0xE2 + 0xE4: 12 + 2 x (2 + 194) = 404 bytes); a node profile instance list
# (0xD6) is at most 253. A longer datagram is cut here and then dropped as malformed (logged).
MAX_DATAGRAM = const(640)
_ESP32 = sys.platform == "esp32"


def norm_addr(a):
    if isinstance(a, tuple):
        return (a[0], a[1])
    # struct sockaddr_in: family (2, host order), port (2, big-endian), IPv4 (4)
    return ("%d.%d.%d.%d" % (a[4], a[5], a[6], a[7]), (a[2] << 8) | a[3])


def ip4(text):
    """4-byte network-order address of a dotted quad; ValueError if it is not one."""
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError("not an IPv4 address: %r" % (text,))
    out = bytearray(4)
    for i in range(4):
        p = parts[i]
        if not p.isdigit() or len(p) > 3 or int(p) > 255:
            raise ValueError("not an IPv4 address: %r" % (text,))
        out[i] = int(p)
    return bytes(out)


def mreq(group, iface_ip):
    """struct ip_mreq: group address + local interface address (8 bytes)."""
    g = ip4(group)
    if g[0] & 0xF0 != 0xE0:
        raise ValueError("%s is not a multicast group" % group)
    return g + ip4(iface_ip or "0.0.0.0")


def _opt(name, default):
    return getattr(socket, name, default)


class UdpEndpoint:
    def __init__(self, bind_ip, port, reuse=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if reuse:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(socket.getaddrinfo(bind_ip, port)[0][-1])
        self.sock.setblocking(False)
        self._addr_cache = {}
        self.local = (bind_ip, port)
        self.groups = {}  # group -> interface address joined on ("0.0.0.0" = default)
        self.max_datagram = MAX_DATAGRAM

    def _sockaddr(self, addr):
        sa = self._addr_cache.get(addr)
        if sa is None:
            if len(self._addr_cache) > 16:
                self._addr_cache.clear()
            sa = socket.getaddrinfo(addr[0], addr[1])[0][-1]
            self._addr_cache[addr] = sa
        return sa

    async def recv(self):
        """(datagram bytes, (ip, port)) of the next datagram, at most MAX_DATAGRAM bytes. The bytes
        object is the one the socket allocated (no second copy, no receive buffer of our own)."""
        while True:
            try:
                data, a = self.sock.recvfrom(self.max_datagram)
            except OSError as e:
                if e.args and e.args[0] in (11, 115, 119):  # EAGAIN / in progress (ESP32 variants)
                    await wait_readable(self.sock)
                    continue
                raise
            return data, norm_addr(a)

    async def recvfrom(self, buf):
        """Copying form of recv() for callers that own a buffer: (length, (ip, port))."""
        data, addr = await self.recv()
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n, addr

    def sendto(self, data, addr):
        try:
            return self.sock.sendto(data, self._sockaddr(addr))
        except OSError as e:
            if e.args and e.args[0] in (11, 105, 118, 119):  # full buffers: drop, caller retries
                return 0
            raise

    # --- multicast ---------------------------------------------------------------------------

    def join_multicast(self, group=MCAST_GROUP, iface_ip="0.0.0.0"):
        """Join `group` on the interface with address iface_ip ("0.0.0.0": the kernel's choice)
        and send multicast out of that interface where the runtime allows choosing it.
        Joining a group already joined is not an error. OSError if the stack refuses."""
        iface_ip = iface_ip or "0.0.0.0"
        req = mreq(group, iface_ip)
        try:
            self.sock.setsockopt(_opt("IPPROTO_IP", _IPPROTO_IP),
                                 _opt("IP_ADD_MEMBERSHIP", _IP_ADD_MEMBERSHIP), req)
        except OSError as e:
            if not (e.args and e.args[0] == _EADDRINUSE):
                raise
        self.groups[group] = iface_ip
        if not _ESP32:
            level = _opt("IPPROTO_IP", _IPPROTO_IP)
            if iface_ip != "0.0.0.0":
                self.sock.setsockopt(level, _opt("IP_MULTICAST_IF", _IP_MULTICAST_IF),
                                     req[4:])
            # Our own announcements and searches must not come back to our receive path.
            self.sock.setsockopt(level, _opt("IP_MULTICAST_LOOP", _IP_MULTICAST_LOOP), 0)

    def leave_multicast(self, group=MCAST_GROUP):
        """Drop the membership where the runtime can (not on the ESP32); forget it either way."""
        iface_ip = self.groups.pop(group, None)
        if iface_ip is None or _ESP32:
            return
        try:
            self.sock.setsockopt(_opt("IPPROTO_IP", _IPPROTO_IP),
                                 _opt("IP_DROP_MEMBERSHIP", _IP_DROP_MEMBERSHIP),
                                 mreq(group, iface_ip))
        except OSError:
            pass  # the interface (and with it the membership) is already gone

    def rejoin(self, iface_ip=None):
        """Join every remembered group again (after a reconnect; iface_ip: the new interface
        address if it changed). Returns the number of groups joined."""
        n = 0
        for group, old in list(self.groups.items()):
            ip = iface_ip or old
            self.leave_multicast(group)
            self.join_multicast(group, ip)
            n += 1
        return n

    def close(self):
        self.sock.close()

    def peer_endpoint(self, peer, buf=None, bind_ip=None):
        """A receive-only socket on our port, connected to one peer (ip, port), bound to
        bind_ip (default: this endpoint's address; pass the unicast address when this one is
        bound to 0.0.0.0, so that it gets no multicast); see PeerEndpoint. OSError if the stack
        refuses a second socket on the port."""
        return PeerEndpoint(bind_ip or self.local[0], self.local[1], peer,
                            buf or self.max_datagram)


class PeerEndpoint:
    """Datagrams from one peer (the meter) without an allocation per datagram.

    The ESP32 socket has no recvfrom_into: recvfrom() allocates the data and an address tuple for
    every datagram. readinto() fills a buffer of ours but loses the source address, which is
    harmless on a socket connect()ed to the peer: the stack delivers to it only what that peer
    sends, and prefers it to the unconnected socket on the same port (SO_REUSEADDR; lwIP picks a
    fully matching PCB first, Linux scores a connected socket higher). What else arrives on the
    port (discovery, multicast, other nodes, a peer answering from another source port) still
    reaches the unconnected UdpEndpoint, so if a stack does not prefer this socket nothing is lost:
    it only costs the allocation again."""

    def __init__(self, bind_ip, port, peer, buf=MAX_DATAGRAM):
        """buf: the receive buffer, or its size. Several peers may share one buffer if each
        datagram is handled before the task yields (read_now() then handle, no await between)."""
        self.peer = (peer[0], peer[1])
        self.local = (bind_ip, port)
        self.buf = bytearray(buf) if isinstance(buf, int) else buf
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo(bind_ip, port)[0][-1])
            s.connect(socket.getaddrinfo(peer[0], peer[1])[0][-1])
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self.sock = s
        # CPython sockets have recv_into; MicroPython's (unix and ESP32) have readinto
        self._into = getattr(s, "recv_into", None) or s.readinto

    def read_now(self):
        """Length of the datagram now read into self.buf, or None if none is waiting (a longer
        one is cut to the buffer, then dropped as malformed by the parser). Never blocks."""
        while True:
            try:
                return self._into(self.buf)  # MicroPython: None when nothing is there
            except OSError as e:
                if e.args and e.args[0] in (11, 115, 119):  # EAGAIN / in progress (ESP32)
                    return None
                if e.args and e.args[0] == _ECONNREFUSED:
                    continue  # an ICMP "port unreachable" for what we sent: the meter is down
                raise

    def readable(self):
        """Awaitable: until a datagram is waiting."""
        return wait_readable(self.sock)

    async def recv_into(self):
        """Length of the next datagram from the peer, read into self.buf."""
        while True:
            n = self.read_now()
            if n is not None:
                return n
            await self.readable()

    def close(self):
        self.sock.close()
