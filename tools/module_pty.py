"""What the two radio module emulators (tools/j11_emulator.py, tools/skstack_emulator.py) share:
loopback-only addresses, the peer table (peer MAC -> fe80::IID -> loopback address), the pty
the firmware opens as its radio UART, the air socket, and the writer with its fault plumbing
(split_writes). The module's own dialect (frames or command lines) stays in each emulator.
"""

import argparse
import asyncio
import os
import random
import signal
import tty

from firmware.radio import j11

DEFAULT_AIR = ("127.0.0.3", 4059)
DEFAULT_SM = ("127.0.0.4", 4059)
DEFAULT_SM_MAC = "001D129012345678"
DEFAULT_OWN_MAC = "001D1290000A0001"
DEFAULT_PAN_ID = 0x1234
DEFAULT_CHANNEL = 4  # J11 numbering


def loopback(addr):
    """(ip, port) checked to be loopback: the emulators never touch a real network."""
    if not addr[0].startswith("127."):
        raise ValueError("emulator addresses must be loopback (127.x), got %s" % addr[0])
    return (addr[0], int(addr[1]))


def parse_addr(text):
    host, port = text.rsplit(":", 1)
    return loopback((host, int(port)))


def set_fault_knobs(faults, known, changes):
    """Apply {knob: value} to faults; an unknown knob is a KeyError (a typo must not pass)."""
    for k, v in changes.items():
        if k not in known:
            raise KeyError("unknown fault %r" % k)
        faults[k] = v


class _AirProtocol(asyncio.DatagramProtocol):
    def __init__(self, emu):
        self.emu = emu

    def datagram_received(self, data, addr):
        self.emu._air_received(data, addr)


class PtyModule:
    """Base of an emulator: the subclass calls _init_module(), sets self.faults (with
    "split_writes") and self.stats, and implements _on_readable() and _air_received(data, addr).
    _split_pause_s is the pause between split_writes pieces."""

    _split_pause_s = 0.001

    def _init_module(self, air_addr, sm_addr, sm_mac, pan_id, channel, app_port, seed):
        """The settings both emulators take: the air socket's address, the one configured smart
        meter (its loopback address, MAC, PAN ID and J11 channel), registered as a peer."""
        self.air_addr = loopback(air_addr)
        # The terminal's UDP port as the air sees it (the received datagrams' destination
        # port). It defaults to the air socket's port, so the default deployment is 4059 end to
        # end.
        self.app_port = app_port or self.air_addr[1] or 4059
        self.sm_mac = j11.mac_bytes(sm_mac)
        self.sm_addr = loopback(sm_addr)
        self.pan_id = pan_id
        self.sm_channel = channel
        self._rng = random.Random(seed)
        self.peers = {}  # IPv6 (16 bytes) -> loopback (ip, port)
        self.add_peer(self.sm_mac, self.sm_addr)
        self.slave_path = None
        self._master = self._slave = None
        self._out = None
        self._cmdq = None
        self._air = None

    def add_peer(self, mac, addr):
        """Register a radio peer: its link-local address maps to a loopback (ip, port)."""
        self.peers[j11.link_local_of_mac(mac)] = loopback(addr)

    def _peer_ip(self, addr):
        """The IPv6 address of the registered peer at loopback addr, or None (counted)."""
        for ip, a in self.peers.items():
            if a == (addr[0], addr[1]):
                return ip
        self.stats["air_unknown_peer"] += 1
        return None

    async def _open(self):
        """Open the pty (raw both ends: no echo, no line discipline) and the air socket."""
        loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.slave_path = os.ttyname(self._slave)
        self._out = asyncio.Queue()
        self._cmdq = asyncio.Queue()
        loop.add_reader(self._master, self._on_readable)
        self._air, _ = await loop.create_datagram_endpoint(
            lambda: _AirProtocol(self), local_addr=self.air_addr)
        self.air_addr = self._air.get_extra_info("sockname")[:2]  # resolves port 0

    async def _close(self, tasks):
        """Cancel and reap tasks, then close the pty and the air socket."""
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = None
        if self._air is not None:
            self._air.close()
            self._air = None

    def _read_master(self):
        """Bytes the host wrote, or None (EIO: no process has the slave open)."""
        try:
            return os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError, OSError):
            return None

    async def _merge(self, data):
        """Hook before a write (the J11's merge_writes); the default writes data as it is."""
        return data

    async def _writer(self):
        while True:
            data = await self._merge(await self._out.get())
            if self.faults["split_writes"]:
                off = 0
                while off < len(data):
                    n = self._rng.randint(1, 7)
                    await self._write(data[off:off + n])
                    off += n
                    await asyncio.sleep(self._split_pause_s)
            else:
                await self._write(data)

    async def _write(self, data):
        mv = memoryview(data)
        while len(mv):
            try:
                n = os.write(self._master, mv)
                mv = mv[n:]
            except BlockingIOError:
                await asyncio.sleep(0.005)


def argument_parser(description):
    """The command line options both emulators take; the caller adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--air", default="%s:%d" % DEFAULT_AIR, help="air-side UDP bind (loopback)")
    p.add_argument("--sm", default="%s:%d" % DEFAULT_SM, help="smart meter loopback address")
    p.add_argument("--sm-mac", default=DEFAULT_SM_MAC)
    p.add_argument("--pan-id", default="0x%04X" % DEFAULT_PAN_ID)
    p.add_argument("--channel", type=int, default=DEFAULT_CHANNEL, help="J11 numbering 4..17")
    p.add_argument("--password", default="0123456789AB", help="expected PANA password")
    return p


async def serve(emu):
    """Start emu, print its pty path and run until SIGINT/SIGTERM."""
    await emu.start()
    print(emu.slave_path, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emu.stop()
