# Real loopback sockets for unit tests on both runtimes (CPython and the MicroPython unix port).
import socket

from firmware.hal.udp import UdpEndpoint


def bound(ip, first_port, reuse=True):
    """(UdpEndpoint, port) on a free port at or above first_port (found by trying: MicroPython
    sockets have no getsockname)."""
    for port in range(first_port, first_port + 200, 7):
        try:
            return UdpEndpoint(ip, port, reuse=reuse), port
        except OSError:
            continue
    raise OSError("no free port from %d" % first_port)


def sender(ip, port):
    """A plain UDP socket bound to (ip, port), to send as a given peer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(socket.getaddrinfo(ip, port)[0][-1])
    return s
