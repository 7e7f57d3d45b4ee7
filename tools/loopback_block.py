"""Loopback address blocks for simulated deployments, reserved so that two runs never share one.

A deployment (tools/deployment.py) puts every party on one loopback /24, 127.a.b.0. Choosing a
random block and checking it by binding is racy: two runs that start together can both find a
block free and both take it. So a block is *reserved*: an exclusive, non-blocking flock(2) on a
file named after it in a directory shared by every run on the machine (LOCK_DIR), held until the
deployment releases it (Deployment.stop()) or its process ends (the kernel drops the lock, so a
crashed run never leaks a block). flock locks belong to the open file description, so two
reservations in one process (the bench's side-by-side runs) exclude each other too.

The ports of a reserved block are still checked by binding: a tool that does not take the lock
(an older checkout, a hand-started emulator) must not be run over either.

Lock files are never deleted: unlinking a lock file while another run holds or is about to open it
would let two runs lock two different files of the same name. They are empty, at most one per
block (65,000 at the very most).
"""

import fcntl
import os
import random
import socket
import tempfile

LOCK_DIR = os.path.join(tempfile.gettempdir(), "terminal-sim-loopback")
ECHONET_PORT = 3610
DLMS_PORT = 4059
# The fixed parties of a deployment (docs/architecture.md): terminal N.1 and meter N.2 on the
# ECHONET port, the module's air side N.3 and the head-end N.4 on the DLMS port.
PROBES = ((1, ECHONET_PORT), (2, ECHONET_PORT), (3, DLMS_PORT), (4, DLMS_PORT))


class Reservation:
    """One reserved block: `prefix` is "127.a.b."; release() (or the end of the process) frees
    it. Not inherited by child processes (Python opens files close-on-exec)."""

    def __init__(self, prefix, lock_file, lock_path):
        self.prefix = prefix
        self.lock_path = lock_path
        self._f = lock_file

    @property
    def held(self):
        return self._f is not None

    def release(self):
        if self._f is not None:
            self._f.close()  # closing the only descriptor drops the flock
            self._f = None


def _lock(path):
    """The open lock file with an exclusive flock on it, or None if another holder has it."""
    f = open(path, "a+b")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except BaseException:
        f.close()
        raise
    return f


def ports_free(prefix, probes=PROBES):
    """True if every (host, port) of `probes` can be bound on the block `prefix` right now."""
    socks = []
    try:
        for host, port in probes:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((prefix + str(host), port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def reserve(tries=200, rng=None, lock_dir=None, probe=ports_free):
    """Reserve a free loopback /24 (127.1.0 ... 127.254.254; 127.0.x is left to tests that bind
    fixed 127.0.0.x addresses). Raises RuntimeError if none of `tries` random blocks is free."""
    rng = rng or random.SystemRandom()
    lock_dir = lock_dir or LOCK_DIR
    os.makedirs(lock_dir, exist_ok=True)
    for _ in range(tries):
        a, b = rng.randrange(1, 255), rng.randrange(0, 255)
        prefix = "127.%d.%d." % (a, b)
        path = os.path.join(lock_dir, "127.%d.%d.lock" % (a, b))
        f = _lock(path)
        if f is None:
            continue  # another run holds this block
        if not probe(prefix):
            f.close()  # someone outside the lock protocol uses it
            continue
        return Reservation(prefix, f, path)
    raise RuntimeError("no free loopback /24 for a deployment after %d tries" % tries)


def free_tcp_port(ip, first=8080, count=100):
    """The first TCP port from `first` that can be bound on `ip` (a web server's port)."""
    import socket

    for port in range(first, first + count):
        s = socket.socket()
        try:
            s.bind((ip, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise OSError("no free TCP port on %s" % ip)
