"""The firmware's own RadioSession + driver (J11 HAN, J11 B-route, SKSTACK single-hop, SKSTACK
DSE) against the module emulators over a real pty (the host HAL's PtyUart), with a smart-meter
peer socket on the air side. Used by test_radio_fault_matrix.py.

Counts every write the driver makes to the UART: J11Module writes one whole frame per write and
SkStackLink one command line (SKSENDTO with its data) per write, so `writes` is the number of
driver commands put on the wire."""

import asyncio
import collections
import os
import shutil
import socket
import sys
import time

from firmware import events as ev
from firmware import log
from firmware.hal.host import PtyUart
from firmware.radio import j11, j11_link, skstack
from firmware.radio.j11_module import J11Module
from firmware.radio.session import RadioSession
from tools.j11_emulator import J11Emulator
from tools.skstack_emulator import SkStackEmulator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MP = os.path.join(os.path.dirname(sys.executable), "micropython")
if not os.path.exists(MP):
    MP = shutil.which("micropython")


async def spawn_micropython(script, source):
    """Write source to script (a path) and start it under the MicroPython unix port (256 KB heap,
    this repository's modules); its stdout and stderr both come on proc.stdout."""
    script.write_text(source)
    return await asyncio.create_subprocess_exec(
        MP, "-X", "heapsize=256k", str(script), cwd=ROOT,
        env=dict(os.environ, MICROPYPATH=".:.frozen"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)


async def close_rig(driver, uart, emu, sm, lines, secrets):
    """A radio rig's tear-down, in the order that leaves nothing running: the driver's reader
    (then one loop turn for it to end), its UART, the emulator, the peer socket, the log sink.
    None of `secrets` may be in the log `lines`."""
    if driver is not None:
        driver.stop()
        await asyncio.sleep(0)
        uart.close()
    await emu.stop()
    sm.close()
    log.set_sink(None)
    assert not any(s in x for x in lines for s in secrets), "a secret was logged"


SM_MAC = "001D129012345678"
SM_IP6 = j11.link_local_of_mac(SM_MAC)
PASSWORD = "0123456789AB"
RBID = "00112233445566778899AABBCCDDEEFF"
PORT = 4059
FAMILIES = ("han", "b", "sk", "dse")  # J11 HAN, J11 B-route, SKSTACK single-hop, SKSTACK DSE

# small timeouts and back-off: every case ends in seconds (the emulators run at time_scale 0.01:
# a reset takes 30 ms, a PANA exchange 30 ms). A case with truncated J11 requests needs
# cmd_timeout_ms above the module's 1 s frame timer (0x13 after 1 s, then re-sent): SLOW_CMD.
BASE_CFG = dict(pana_password=PASSWORD, backoff_min_ms=50, backoff_max_ms=400,
                cmd_timeout_ms=400, reset_timeout_ms=600, pana_timeout_ms=600,
                scan_duration=1, scan_max_duration=3, tx_retries=1, gate_wait_ms=600,
                liveness_s=0, stale_tries=3, udp_port=PORT, sm_mac="")
SLOW_CMD = dict(cmd_timeout_ms=1500)


class CountingUart:
    """The UART the driver owns, counting what the driver writes."""

    def __init__(self, inner):
        self.inner = inner
        self.writes = 0
        self._hooks = {}

    def at(self, n, fn):
        """Call fn() just before the driver's write number n (0 = the first) goes out."""
        self._hooks[n] = fn

    async def readinto(self, buf):
        return await self.inner.readinto(buf)

    async def write(self, data):
        fn = self._hooks.pop(self.writes, None)
        if fn is not None:
            fn()
        self.writes += 1
        await self.inner.write(data)

    def close(self):
        self.inner.close()


class Rig:
    """family: "han" | "b" | "sk" | "dse". cfg / emu: overrides of the session config and the
    emulator's keyword arguments."""

    def __init__(self, family, cfg=None, emu=None, session=True):
        self.family = family
        self.j11 = family in ("han", "b")
        self.lines = []
        self.events = []
        self.peer_rx = []  # payloads the smart meter received, in order
        self.sm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sm.bind(("127.0.0.4", 0))
        self.sm.setblocking(False)
        kw = dict(air_addr=("127.0.0.3", 0), sm_addr=self.sm.getsockname(), sm_mac=SM_MAC,
                  pana_password=PASSWORD, app_port=PORT, time_scale=0.01)
        if family == "b":
            kw.update(broute_id=RBID)
        elif not self.j11:
            kw.update(dse=family == "dse", rbid=RBID)
        kw.update(emu or {})
        self.emu = J11Emulator(**kw) if self.j11 else SkStackEmulator(**kw)
        self.cfg = dict(BASE_CFG)
        if family != "han":
            self.cfg.update(route="b", route_b_id=RBID)
        self.cfg.update(cfg or {})
        self.t0 = None
        self.with_session = session  # False: only the emulator and the peer (another runtime
        # drives the pty)

    async def __aenter__(self):
        log.set_sink(self.lines.append)
        await self.emu.start()
        self._peer_task = asyncio.create_task(self._peer())
        self.t0 = time.monotonic()
        if not self.with_session:
            self.task = self.link = self.uart = None
            return self
        self.uart = CountingUart(PtyUart(self.emu.slave_path))
        c = self.cfg
        if self.j11:
            self.module = J11Module(self.uart)
            drv = j11_link.build(self.module, c)
        else:
            self.module = None
            drv = skstack.build(self.uart, c, dse=self.family == "dse")
            drv.send_timeout_ms = c["cmd_timeout_ms"]  # no neighbour discovery takes long here
        self.link = drv
        self.session = RadioSession(drv, c, event=self._event)
        self.task = asyncio.create_task(self.session.run())
        return self

    async def __aexit__(self, *exc):
        for t in (self.task, self._peer_task):
            if t is None:
                continue
            t.cancel()
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await close_rig(self.link, self.uart, self.emu, self.sm, self.lines, (PASSWORD, RBID))

    def _event(self, code, detail=0):
        self.events.append((code, detail))

    async def _peer(self):
        loop = asyncio.get_running_loop()
        while True:
            data, _ = await loop.sock_recvfrom(self.sm, 2048)
            self.peer_rx.append(data)

    # -- waits ---------------------------------------------------------------------------------

    async def until(self, cond, timeout=10.0, what="condition"):
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError("timed out waiting for %s; family=%s state=%s stats=%s "
                                     "log tail=%s" % (what, self.family, self.session.state,
                                                      self.session.stats, self.lines[-10:]))
            await asyncio.sleep(0.01)

    async def ready(self, timeout=10.0):
        await self.until(self.session.is_ready, timeout, "ready")

    # -- counts --------------------------------------------------------------------------------

    def cmds(self):
        """What the emulator received: J11 command codes, SKSTACK command words."""
        if self.j11:
            return [c for c, _ in self.emu.requests]
        return [bytes(x).split(b" ", 1)[0].decode("latin-1") for x in self.emu.requests]

    def count(self, what):
        return self.cmds().count(what)

    def scans(self):
        return self.count(0x0051 if self.j11 else "SKSCAN")

    def joins_sent(self):
        """Join attempts that reached PANA (J11 0x003A / 0x0056, SKSTACK SKJOIN)."""
        if self.j11:
            return self.count(0x003A) + self.count(0x0056)
        return self.count("SKJOIN")

    def auth_failed_events(self):
        return [e for e in self.events if e[0] == ev.RADIO_AUTH_FAILED]

    # -- traffic -------------------------------------------------------------------------------

    async def send_all(self, payloads, before=None, timeout=20.0, bulk=False):
        """The application's sender: each payload until send() says True (a False is retried
        after a short pause, as firmware/app does). before(i) runs before payload i. Returns
        the number of False results."""
        end = time.monotonic() + timeout
        refused = 0
        for i, p in enumerate(payloads):
            if before is not None:
                before(i)
            while not await self.session.send(SM_IP6, PORT, p, bulk=bulk):
                refused += 1
                if time.monotonic() > end:
                    raise AssertionError("payload %d never sent; state=%s stats=%s log=%s"
                                         % (i, self.session.state, self.session.stats,
                                            self.lines[-10:]))
                await asyncio.sleep(0.02)
        return refused

    async def delivered(self, payloads, timeout=3.0):
        """Wait until the peer has every payload; -> Counter of what it received."""
        want = set(payloads)
        await self.until(lambda: want <= set(self.peer_rx), timeout, "delivery at the peer")
        await asyncio.sleep(0.05)  # a late duplicate would show now
        return collections.Counter(self.peer_rx)

    async def peer_to_terminal(self, payload, timeout=5.0):
        """The meter sends until the terminal's recv() has it (a client retrying its request)."""
        end = time.monotonic() + timeout
        while True:
            self.sm.sendto(payload, self.emu.air_addr)
            try:
                got = await asyncio.wait_for(self.session.recv(), 0.3)
            except asyncio.TimeoutError:
                got = None
            if got is not None and bytes(got[3]) == payload:
                return got
            if time.monotonic() > end:
                raise AssertionError("the terminal never received %r" % payload)
