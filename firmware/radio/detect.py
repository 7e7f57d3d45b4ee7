# Module family detection at boot (reference wisun-modules.md section 2): drivers break when the
# dialect is wrong (a BP35C2 answers the single-hop SKSCAN with FAIL ER05), so ask the module.
#   1. J11 binary: the version request 0x006B; a 0x206B response -> FAMILY_J11.
#   2. SKSTACK: "SKVER" (after a CRLF that ends whatever the J11 frame left in the module's line
#      buffer); "EVER ..." -> SKSTACK.
#   3. Single-hop or DSE: read register SA2 ("include LQI in ERXUDP"), which only DSE has: a read
#      has no side effect and writes no flash, unlike a trial SKSCAN (starts a scan) or WOPT;
#      "ESREG" -> DSE, FAIL -> single-hop. The DSE driver sets SA2 anyway.
# Garbage is skipped; a module that answers nothing -> None (the caller retries or reports).
from firmware.compat import sleep_ms, ticks_add, ticks_diff, ticks_ms, wait_ms
from firmware.radio import j11, link

# (Not the SKSTACK codec: a J11 terminal would keep that module's heap for nothing; the terminal
# unloads this module once it has its answer.)
_J11_VERSION = j11.encode(j11.CMD_VERSION)
_LINE_MAX = 96


class _Lines:
    """Collects the text lines of an SKSTACK answer (at most a few, short); bytes beyond
    _LINE_MAX in one line and non-ASCII noise are dropped."""

    def __init__(self):
        self.got = []
        self.line = bytearray(_LINE_MAX)
        self.n = 0

    def feed(self, b, n):
        for i in range(n):
            c = b[i]
            if c == 10 or c == 13:
                if self.n:
                    self.got.append(bytes(self.line[0:self.n]))
                self.n = 0
            elif 32 <= c < 127 and self.n < _LINE_MAX:
                self.line[self.n] = c
                self.n += 1


async def _read_until(uart, buf, deadline, feed, done):
    """Read and feed() until done() or the deadline; True when done."""
    while not done():
        left = ticks_diff(deadline, ticks_ms())
        if left <= 0:
            return False
        try:
            n = await wait_ms(uart.readinto(buf), left)
        except Exception:  # timeout, or a UART that fails: nothing more from this module
            if ticks_diff(deadline, ticks_ms()) > 0:
                await sleep_ms(10)
            continue
        feed(buf, n)
    return True


async def _ask(uart, buf, text, prefixes, timeout_ms):
    """Write an SKSTACK command line; the lines read until one starts with one of prefixes (or
    the timeout). Not "until OK": the FAIL for the J11 frame's bytes may come first."""
    lines = _Lines()

    def done():
        for x in lines.got:
            for p in prefixes:
                if x.startswith(p):
                    return True
        return False

    await uart.write(text)
    await _read_until(uart, buf, ticks_add(ticks_ms(), timeout_ms),
                      lines.feed, done)
    return lines.got


async def detect_family(uart, timeout_ms=1000):
    """-> link.FAMILY_J11 / FAMILY_SKSTACK / FAMILY_SKSTACK_DSE, or None (no answer)."""
    buf = bytearray(64)
    rx = j11.Reassembler(j11.UC_RESPONSE, "detect", size=512)
    found = []

    def feed_j11(b, n):
        mv = memoryview(b)
        off = 0
        while off < n:
            off += rx.feed(mv[off:n])
            while True:  # frames out (this also frees room for the rest of the read)
                f = rx.next_frame()
                if f is None:
                    break
                if f[0] == j11.CMD_VERSION | j11.RESP_FLAG:
                    found.append(1)

    await uart.write(_J11_VERSION)
    if await _read_until(uart, buf, ticks_add(ticks_ms(), timeout_ms), feed_j11,
                         lambda: bool(found)):
        return link.FAMILY_J11
    got = await _ask(uart, buf, b"\r\nSKVER\r\n", (b"EVER ",), timeout_ms)
    if not any(x.startswith(b"EVER ") for x in got):
        return None
    got = await _ask(uart, buf, b"SKSREG SA2\r\n", (b"ESREG", b"FAIL"), timeout_ms)
    for x in got:
        if x.startswith(b"ESREG"):
            return link.FAMILY_SKSTACK_DSE
        if x.startswith(b"FAIL"):
            return link.FAMILY_SKSTACK
    return None

