# A scripted radio driver implementing the contract (firmware/radio/link.py, docs/radio.md), for
# the session's fault-matrix tests on both runtimes. Each call pops its next scripted outcome
# (default: success) and is recorded in `calls`, so a test asserts what the session asked and how
# often.

import asyncio

from firmware.compat import sleep_ms
from firmware.radio import link

MAC = b"\x00\x1d\x12\x90\x12\x34\x56\x78"
MAC2 = b"\x00\x1d\x12\x90\xaa\xbb\xcc\xdd"
PASSWORD = "0123456789AB"
ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"
TIMEOUT = "timeout"  # a scripted outcome: raise LinkTimeout
ERROR = "error"  # raise LinkCommandError


def _pop(script, default):
    return script.pop(0) if script else default


class FakeLink:
    family = "fake"

    def __init__(self, password=PASSWORD):
        self.on_udp = None
        self.on_event = None
        self.password = password
        self.beacon = (7, 0x1234, MAC, -60)  # (channel, pan_id, mac, rssi) the scans find
        self.calls = []  # call names in order
        self.scans = []  # (duration, mask, pairing_id)
        self.joins = []  # (channel, pan_id, mac)
        self.sent = []  # (dst, sport, dport, bytes payload)
        self.opened = []
        self.reset_script = []
        self.scan_script = []  # each: a list of beacons, or TIMEOUT
        self.join_script = []  # each: link.JOIN_* or TIMEOUT
        self.send_script = []  # each: link.TX_* or TIMEOUT / ERROR
        self.reauth_script = []
        self.reauth_hold = None  # an asyncio.Event reauth() waits for (the test releases it)
        self.stats = {"timeouts": 0, "tx_no_ack": 0, "bad_frames": 0}
        self.started = 0

    def count(self, name):
        return self.calls.count(name)

    def _raise(self, r, what):
        if r == TIMEOUT:
            self.stats["timeouts"] += 1
            raise link.LinkTimeout("timeout waiting for %s" % what)
        if r == ERROR:
            raise link.LinkCommandError(what, 0x10)

    def start(self):
        self.started += 1

    async def reset(self):
        self.calls.append("reset")
        await sleep_ms(0)
        self._raise(_pop(self.reset_script, None), "reset")

    async def version(self):
        self.calls.append("version")
        return "fake 1.0"

    async def scan(self, duration, mask, pairing_id):
        self.calls.append("scan")
        self.scans.append((duration, mask, pairing_id))
        r = _pop(self.scan_script, None)
        self._raise(r, "scan")
        return [self.beacon] if r is None else r

    async def join(self, channel, pan_id, mac, credentials):
        self.calls.append("join")
        self.joins.append((channel, pan_id, bytes(mac)))
        r = _pop(self.join_script, None)
        self._raise(r, "join")
        if r is not None:
            return r
        if credentials["password"] != self.password:
            return link.JOIN_BAD_CREDENTIALS
        return link.JOIN_OK

    async def open_udp(self, port):
        self.calls.append("open_udp")
        self.opened.append(port)

    async def send(self, dst16, sport, dport, payload):
        self.calls.append("send")
        r = _pop(self.send_script, link.TX_OK)
        self._raise(r, "send")
        if r == link.TX_OK or r == link.TX_QUEUED:
            self.sent.append((bytes(dst16), sport, dport, bytes(payload)))
        return r

    async def reauth(self):
        self.calls.append("reauth")
        if self.reauth_hold is not None:
            await self.reauth_hold.wait()
        r = _pop(self.reauth_script, link.JOIN_OK)
        self._raise(r, "reauth")
        return r

    async def leave(self):
        self.calls.append("leave")

    # -- the module's side -----------------------------------------------------------------------

    def deliver(self, payload, dport=4059, src=b"\xfe\x80" + bytes(6) + MAC, rssi=-50):
        self.on_udp(memoryview(src), 4059, dport, rssi, memoryview(payload))

    def event(self, code, detail=0):
        self.on_event(code, detail)


class FakeTicks:
    """A ms clock the test moves (the session's T108 ring)."""

    def __init__(self, t=1000):
        self.t = t

    def __call__(self):
        return self.t


class ByteUart:
    """The driver's end of a scripted module's UART: what the module sends waits in `inbox`
    until the driver reads it, at most `chunk` bytes a read when chunk > 0 (split reads)."""

    chunk = 0

    def __init__(self):
        self.inbox = bytearray()
        self.ev = asyncio.Event()

    async def readinto(self, buf):
        while not self.inbox:
            self.ev.clear()
            await self.ev.wait()
        n = min(len(buf), len(self.inbox))
        if self.chunk:
            n = min(n, self.chunk)
        buf[0:n] = self.inbox[0:n]
        self.inbox = self.inbox[n:]
        return n

    def send(self, b):
        self.inbox += b
        self.ev.set()


class ScriptedUart(ByteUart):
    """A text-line module (SKSTACK) that answers each write from `answers` [(key, answer)]: the
    first key the written bytes start with (contains=True: contain) wins, `noise` goes before the
    answer, an empty answer sends nothing, and (now, later, ms) sends `later` ms after `now`."""

    def __init__(self, answers, noise=b"", contains=False, chunk=0):
        super().__init__()
        self.answers = answers
        self.noise = noise
        self.contains = contains
        self.chunk = chunk
        self.writes = []

    async def write(self, data):
        data = bytes(data)
        self.writes.append(data)
        for key, resp in self.answers:
            if (key in data) if self.contains else data.startswith(key):
                if isinstance(resp, tuple):
                    self.push(resp[0])
                    asyncio.create_task(self._later(resp[1], resp[2]))
                elif resp:
                    self.push(resp)
                return

    async def _later(self, b, ms):
        await sleep_ms(ms)
        self.push(b)

    def push(self, b):
        self.send(self.noise + b)
