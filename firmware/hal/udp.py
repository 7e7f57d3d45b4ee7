# Non-blocking UDP endpoint shared by the host and ESP32 HALs.
# Normalises the peer address to (ip_str, port): the ESP32 port returns ('ip', port) from recvfrom,
# the unix port returns a raw sockaddr_in bytes object.
import socket

from firmware.hal.aio import wait_readable


def norm_addr(a):
    if isinstance(a, tuple):
        return (a[0], a[1])
    # struct sockaddr_in: family (2, host order), port (2, big-endian), IPv4 (4)
    return ("%d.%d.%d.%d" % (a[4], a[5], a[6], a[7]), (a[2] << 8) | a[3])


class UdpEndpoint:
    def __init__(self, bind_ip, port, reuse=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if reuse:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(socket.getaddrinfo(bind_ip, port)[0][-1])
        self.sock.setblocking(False)
        self._addr_cache = {}
        self.local = (bind_ip, port)

    def _sockaddr(self, addr):
        sa = self._addr_cache.get(addr)
        if sa is None:
            if len(self._addr_cache) > 16:
                self._addr_cache.clear()
            sa = socket.getaddrinfo(addr[0], addr[1])[0][-1]
            self._addr_cache[addr] = sa
        return sa

    async def recvfrom(self, buf):
        while True:
            try:
                data, a = self.sock.recvfrom(len(buf))
            except OSError as e:
                if e.args and e.args[0] in (11, 115, 119):  # EAGAIN / in progress (ESP32 variants)
                    await wait_readable(self.sock)
                    continue
                raise
            n = len(data)
            buf[:n] = data
            return n, norm_addr(a)

    def sendto(self, data, addr):
        try:
            return self.sock.sendto(data, self._sockaddr(addr))
        except OSError as e:
            if e.args and e.args[0] in (11, 105, 118, 119):  # full buffers: drop, caller retries
                return 0
            raise

    def close(self):
        self.sock.close()
