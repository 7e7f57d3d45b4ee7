"""The smart meter's side of the simulation: a DLMS head-end that reads the terminal over the
emulated Wi-SUN path, sets the terminal's clock and prints every 30-minute value it receives.

With keys (tools/deployment.py gives the simulation's) it is the terminal's management client:
HLS-GMAC (mechanism 5) and every GET/SET protected with authenticated encryption (security suite
0); without, the public client (reads only: the firmware refuses it the clock by default).

It talks UDP to the J11 module emulator's air socket; the emulator turns each datagram into the
radio notification the terminal's module would raise.
"""

import asyncio

from firmware import timeutil
from firmware.cosem import axdr
from firmware.cosem.objects import obis as obis_bytes
from tools.dlms_client import AsyncDlmsUdpClient, ExceptionResponse

SCALERS = {0x00: 3, 0x01: 2, 0x02: 1, 0x03: 0, 0x04: -1, 0x0A: 4, 0x0B: 5, 0x0C: 6, 0x0D: 7}


def fmt_kwh(raw, scaler):
    """Exact decimal text of raw x 10^scaler Wh, in kWh (no floats)."""
    exp = scaler - 3  # power of ten in kWh
    if exp >= 0:
        return "%d" % (raw * 10**exp)
    s = "%0*d" % (-exp + 1, raw)
    return "%s.%s" % (s[:exp], s[exp:])


class HeadEnd:
    def __init__(self, simclock, local=("127.0.0.4", 4059), server=("127.0.0.3", 4059),
                 tz_offset_min=540, out=print, resync_every_s=6 * 3600, client_sap=16,
                 **security):
        """security: ek, ak, system_title (tools.dlms_client.DlmsClient) of the management
        client at client_sap; none: the public client."""
        self.sim = simclock
        self.client = AsyncDlmsUdpClient(local, server, client_sap=client_sap, **security)
        self.tz = tz_offset_min
        self.out = out
        self.resync_every_s = resync_every_s
        self.received = {}  # slot -> (fwd, rev, status)
        self.scaler = None
        self.clock_set_at = None
        self._last_sync = None
        self._said_role = False

    async def connect(self, timeout_s=60.0, alive=None):
        """Associate, retrying until the terminal has joined the PAN and answers.
        alive: optional callable; False (the terminal process died) ends the wait at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = None
        while loop.time() < deadline:
            if alive is not None and not alive():
                raise RuntimeError("terminal exited before associating")
            try:
                await self.client.associate()
                if not self._said_role:
                    self._said_role = True
                    self.out("head-end: associated as %s" % (
                        "the management client (HLS-GMAC, authenticated encryption)"
                        if self.client.dlms.keys is not None else "the public client"))
                return
            except Exception as e:  # not joined yet / no answer: retry
                last = e
                await asyncio.sleep(0.5)
        raise TimeoutError("terminal never associated: %r" % (last,))

    async def sync_clock(self):
        t = self.sim.now_t2k()
        await self.client.set_clock(t)
        if self.clock_set_at is None:
            self.clock_set_at = t
        self._last_sync = t
        self.out("head-end: set terminal clock to %s" % timeutil.iso(t, self.tz))

    async def read_scaler(self):
        """Scaler of +A (attribute 3); the terminal knows it once it has read the meter."""
        su = await self.client.get(3, obis_bytes("1.0.1.8.0.255"), 3)
        s = axdr.Reader(su).value()
        self.scaler = s[0]

    async def poll(self, from_t2k, to_t2k, quiet=False):
        try:
            rows = await self.client.get_profile(from_t2k, to_t2k)
        except ExceptionResponse:
            # the association was released or lost (e.g. the terminal restarted): associate again
            await self.client.associate()
            rows = await self.client.get_profile(from_t2k, to_t2k)
        if rows and self.scaler is None:
            await self.read_scaler()
        new = 0
        for t2k, fwd, rev, status in rows:
            slot = timeutil.slot_of_t2k(t2k)
            if slot not in self.received:
                new += 1
                if not quiet:
                    self.out(
                        "%s  +A %s kWh  -A %s kWh  status 0x%02X"
                        % (timeutil.iso(t2k, self.tz), fmt_kwh(fwd, self.scaler),
                           fmt_kwh(rev, self.scaler), status)
                    )
            self.received[slot] = (fwd, rev, status)
        return new

    async def maybe_resync(self):
        if self._last_sync is None or self.sim.now_t2k() - self._last_sync >= self.resync_every_s:
            await self.sync_clock()

    def close(self):
        self.client.close()
