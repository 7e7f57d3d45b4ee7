# Async driver for a ROHM BP35Cx-J11 module on a UART port (`async readinto(buf) -> n`,
# `async write(data)`). One reader task splits the byte stream into frames and dispatches them:
# the response to the single command in flight wakes its waiter, notifications go to the armed
# notification waiter, the scan collector and registered handlers. Commands are serialised by a
# lock; every waiter is armed before the request is written (a response and its notification can
# arrive in one UART burst) and every wait has a ticks-based deadline.
import asyncio

from firmware import log
from firmware.compat import (
    const,
    sleep_ms,
    ticks_add,
    ticks_diff,
    ticks_ms,
    wait_ms,
)
from firmware.radio import j11

_TAG = "j11"
_RESP_BUF = const(64)  # responses the driver reads are short; 0x2008 echoes at most a few bytes
_NOTIFY_BUF = const(16)
_UART_READ = const(256)  # room for one UART read beyond a whole frame (the IDF's minimum rxbuf)
_UART_RETRIES = const(2)  # re-sends after 0x13 / 0xF0-0xF3 / 0x2FFF (the frame was mangled)
_TX_RETRY_BASE_MS = const(100)

DEFAULT_CMD_TIMEOUT_MS = const(5000)
DEFAULT_RESET_TIMEOUT_MS = const(10000)
DEFAULT_PANA_TIMEOUT_MS = const(60000)
TX_NO_ACK = const(5)


class J11ModuleError(Exception):
    """The module did not do what was asked (timeout, error result)."""


class J11Timeout(J11ModuleError):
    def __init__(self, what):
        super().__init__("timeout waiting for %s" % what)


class J11CommandError(J11ModuleError):
    def __init__(self, cmd, result):
        # Only the command code and result byte: never request data (it may hold a password).
        super().__init__("command 0x%04X failed: result 0x%02X" % (cmd, result))
        self.cmd = cmd
        self.result = result


class _Waiter:
    """One awaited frame code; the frame data is copied into a preallocated buffer."""

    def __init__(self, size):
        self.code = -1
        self.event = asyncio.Event()
        self.buf = bytearray(size)
        self.n = 0
        self.error = 0  # 0xFFFF / 0x2FFF error frame received instead of the response

    def arm(self, code):
        self.code = code
        self.n = 0
        self.error = 0
        self.event.clear()

    def disarm(self):
        self.code = -1

    def deliver(self, data, error=0):
        n = min(len(data), len(self.buf))
        self.buf[0:n] = data[0:n]
        self.n = n
        self.error = error
        self.code = -1
        self.event.set()

    def data(self):
        return memoryview(self.buf)[0:self.n]


def _uart_result(result):
    return result == j11.RESULT_UART_TIMEOUT or 0xF0 <= result <= 0xF3


class J11Module:
    def __init__(self, uart, cmd_timeout_ms=DEFAULT_CMD_TIMEOUT_MS,
                 max_udp=j11.MAX_UDP_PAYLOAD):
        """max_udp: the largest UDP payload the application sends or accepts (the DLMS wrapper
        plus its negotiated PDU size). The frame buffers are sized to it instead of the module's
        1232-byte maximum; a larger received datagram is dropped (logged as a bad length)."""
        self._uart = uart
        self.cmd_timeout_ms = cmd_timeout_ms
        max_udp = min(max_udp, j11.MAX_UDP_PAYLOAD)
        # receive: the UDP notification (header + fixed fields + payload) and one UART read
        self.rx = j11.Reassembler(j11.UC_RESPONSE, _TAG,
                                  size=j11.HEADER_LEN + j11.UDP_RX_FIXED + max_udp + _UART_READ)
        self._tx = bytearray(j11.HEADER_LEN + j11.UDP_TX_FIXED + max_udp)
        self._txv = memoryview(self._tx)
        self._lock = asyncio.Lock()
        self._resp = _Waiter(_RESP_BUF)
        self._notify = _Waiter(_NOTIFY_BUF)
        self._scan = None  # list collecting 0x4051 results while a scan runs
        self._handlers = {}
        self._task = None
        self.stats = {
            "commands": 0,
            "timeouts": 0,
            "error_frames": 0,
            "uart_retries": 0,
            "uart_errors": 0,
            "tx_no_ack": 0,
            "tx_limited": 0,  # transmits refused under the T108 limit (J11Link counts them)
            "unexpected": 0,
            "bad_notifications": 0,
        }

    # -- reader -------------------------------------------------------------------------------

    def start(self):
        """Start the reader task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._reader())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def on(self, code, handler):
        """Call handler(data_view) for every notification `code` (copy what you keep)."""
        if handler is None:
            self._handlers.pop(code, None)
        else:
            self._handlers[code] = handler

    async def _reader(self):
        rx = self.rx
        while True:
            try:
                n = await self._uart.readinto(rx.space())
            except Exception as e:  # a vanished adapter must not kill the reader
                self.stats["uart_errors"] += 1
                log.exc(_TAG, "UART read failed", e)
                await sleep_ms(200)
                continue
            rx.commit(n)
            while True:
                f = rx.next_frame()
                if f is None:
                    break
                self._dispatch(f[0], f[1])

    def _dispatch(self, cmd, data):
        resp = self._resp
        if cmd == resp.code:
            resp.deliver(data)
            return
        if cmd == j11.ERR_INVALID_COMMAND or cmd == j11.ERR_HEADER_CHECKSUM:
            self.stats["error_frames"] += 1
            log.warn(_TAG, "module sent error frame 0x%04X (pending 0x%04X)" % (cmd, resp.code))
            if resp.code >= 0:
                resp.deliver(data, cmd)
            return
        handled = False
        if cmd == self._notify.code:
            self._notify.deliver(data)
            handled = True
        if cmd == j11.NOTIFY_SCAN and self._scan is not None:
            handled = True
            try:
                ch, beacons = j11.decode_scan(data)
            except j11.J11Error as e:
                self.stats["bad_notifications"] += 1
                log.warn(_TAG, "bad scan notification: %s" % e)
            else:
                for mac, pan, rssi in beacons:
                    self._scan.append((ch, mac, pan, rssi))
        h = self._handlers.get(cmd)
        if h is not None:
            handled = True
            try:
                h(data)
            except j11.J11Error as e:
                self.stats["bad_notifications"] += 1
                log.warn(_TAG, "bad notification 0x%04X: %s" % (cmd, e))
            except Exception as e:
                log.exc(_TAG, "handler for 0x%04X failed" % cmd, e)
        if not handled:
            if cmd & 0xF000 == 0x2000:
                self.stats["unexpected"] += 1
                log.warn(_TAG, "unexpected response 0x%04X (late or unsolicited)" % cmd)
            else:
                log.debug(_TAG, "notification 0x%04X ignored" % cmd)

    # -- exchange -----------------------------------------------------------------------------

    async def _wait(self, waiter, deadline, what):
        left = ticks_diff(deadline, ticks_ms())
        if left > 0 and not waiter.event.is_set():
            try:
                await wait_ms(waiter.event.wait(), left)
            except asyncio.TimeoutError:
                pass
        if not waiter.event.is_set():
            waiter.disarm()
            self.stats["timeouts"] += 1
            raise J11Timeout(what)

    async def _exchange(self, cmd, n, timeout_ms=None):
        """Write the frame in self._tx[:n], wait for its response; return the response data.

        Re-sends a bounded number of times when the module reports a mangled frame.
        """
        timeout_ms = self.cmd_timeout_ms if timeout_ms is None else timeout_ms
        attempt = 0
        while True:
            self.stats["commands"] += 1
            self._resp.arm(cmd | j11.RESP_FLAG)
            await self._uart.write(self._txv[0:n])
            await self._wait(self._resp, ticks_add(ticks_ms(), timeout_ms),
                             "response to 0x%04X" % cmd)
            data = self._resp.data()
            result = data[0] if len(data) else 0
            if self._resp.error or _uart_result(result):
                if attempt < _UART_RETRIES:
                    attempt += 1
                    self.stats["uart_retries"] += 1
                    log.warn(_TAG, "command 0x%04X: module saw a bad frame (0x%04X/0x%02X), "
                             "resending" % (cmd, self._resp.error or cmd, result))
                    continue
                raise J11CommandError(cmd, result)
            if result != j11.RESULT_OK:
                raise J11CommandError(cmd, result)
            return data

    async def command(self, cmd, data=b"", timeout_ms=None):
        """Send one request and return its response data (result byte first) as a view
        that is valid until the next command."""
        async with self._lock:
            n = j11.encode_into(self._tx, cmd, data)
            return await self._exchange(cmd, n, timeout_ms)

    # -- commands -----------------------------------------------------------------------------

    async def reset(self, timeout_ms=DEFAULT_RESET_TIMEOUT_MS):
        """Hardware reset 0x00D9 (no response); wait for the start-up notification 0x6019.

        A reset frame the module received mangled is answered 0x20D9 with a UART error result
        instead: it is re-sent (bounded), like any other command.
        """
        async with self._lock:
            n = j11.encode_into(self._tx, j11.CMD_RESET)
            deadline = ticks_add(ticks_ms(), timeout_ms)
            resp_event = self._resp.event
            self._resp.event = self._notify.event  # either frame wakes the wait below
            try:
                attempt = 0
                while True:
                    self._notify.arm(j11.NOTIFY_STARTUP)
                    self._resp.arm(j11.CMD_RESET | j11.RESP_FLAG)
                    self.stats["commands"] += 1
                    await self._uart.write(self._txv[0:n])
                    await self._wait(self._notify, deadline, "start-up notification 0x6019")
                    if self._notify.code < 0:  # 0x6019 arrived
                        return
                    # otherwise the 0x20D9 error response woke us
                    result = self._resp.data()[0] if self._resp.n else 0
                    if attempt >= _UART_RETRIES or not (self._resp.error or _uart_result(result)):
                        raise J11CommandError(j11.CMD_RESET, result)
                    attempt += 1
                    self.stats["uart_retries"] += 1
                    log.warn(_TAG, "reset: module saw a bad frame (0x%02X), resending" % result)
            finally:
                self._notify.disarm()
                self._resp.disarm()
                self._resp.event = resp_event

    async def version(self):
        """0x006B -> (fw_id, major, minor, revision)."""
        return j11.decode_version(await self.command(j11.CMD_VERSION))

    async def status(self):
        """0x0001 -> the state bytes after the result (global, B-route, HAN)."""
        return bytes((await self.command(j11.CMD_STATUS))[1:])

    async def init_settings(self, mode, channel, sleep=0, power=0):
        await self.command(j11.CMD_INIT, j11.init_request(mode, channel, sleep, power))

    async def active_scan(self, duration, mask=j11.SCAN_MASK_ALL, pairing_id=None):
        """0x0051; returns [(channel, mac bytes, pan_id, rssi_dbm)] from the 0x4051 notifications
        (they come first; the 0x2051 response only after the whole scan)."""
        data = j11.scan_request(duration, mask, pairing_id)
        async with self._lock:
            n = j11.encode_into(self._tx, j11.CMD_ACTIVE_SCAN, data)
            self._scan = []
            try:
                await self._exchange(j11.CMD_ACTIVE_SCAN, n, j11.scan_timeout_ms(duration, mask))
                return self._scan
            finally:
                self._scan = None

    async def han_start(self, arg):
        """0x000A: PAN coordinator MAC (8 bytes) for modes 2/3/5, or PAN ID (int) for mode 1."""
        if isinstance(arg, int):
            data = bytes(((arg >> 8) & 0xFF, arg & 0xFF))
        else:
            data = j11.mac_bytes(arg)
        await self.command(j11.CMD_HAN_START, data)

    async def set_pana_password(self, password, mac=None):
        """0x002C: [peer MAC (8)] + password. The password is registered as a log secret."""
        log.add_secret(password)
        pw = password.encode() if isinstance(password, str) else bytes(password)
        if not 1 <= len(pw) <= 32:
            raise J11ModuleError("PANA password must be 1..32 bytes")
        data = (j11.mac_bytes(mac) if mac is not None else b"") + pw
        await self.command(j11.CMD_HAN_PANA_SET, data)

    async def pana_start(self, timeout_ms=DEFAULT_PANA_TIMEOUT_MS):
        """0x003A, then wait for 0x6028 -> (result, mac): 1 ok, 2 bad credentials, 3 no answer."""
        return await self.pana(j11.CMD_HAN_PANA_START, b"", timeout_ms)

    async def pana(self, cmd, data=b"", timeout_ms=DEFAULT_PANA_TIMEOUT_MS):
        """A command that ends in a PANA result: HAN PANA start 0x003A, B-route PANA start 0x0056,
        HAN re-authentication 0x002B (peer MAC), B-route re-authentication 0x00D2. Waits for its
        response, then for 0x6028 -> (result, mac)."""
        async with self._lock:
            n = j11.encode_into(self._tx, cmd, data)
            deadline = ticks_add(ticks_ms(), timeout_ms)
            self._notify.arm(j11.NOTIFY_PANA)
            try:
                await self._exchange(cmd, n)
                await self._wait(self._notify, deadline, "PANA result 0x6028")
            finally:
                self._notify.disarm()
            return j11.decode_pana(self._notify.data())

    async def open_udp(self, port):
        await self.command(j11.CMD_OPEN_UDP, bytes(((port >> 8) & 0xFF, port & 0xFF)))

    async def transmit(self, dst_ipv6, src_port, dst_port, payload, retries=3):
        """0x0008 -> (queue, tx_result) of the last attempt; tx 0 = sent, 5 = no ACK.

        A no-ACK is re-sent up to `retries` times with a growing pause.
        """
        async with self._lock:
            nd = j11.udp_tx_into(self._tx, dst_ipv6, src_port, dst_port, payload)
            n = j11.finish_into(self._tx, j11.CMD_TRANSMIT, nd)
            attempt = 0
            while True:
                data = await self._exchange(j11.CMD_TRANSMIT, n)
                _, queue, tx = j11.decode_tx_result(data)
                if tx != TX_NO_ACK or attempt >= retries:
                    return queue, tx
                attempt += 1
                self.stats["tx_no_ack"] += 1
                log.info(_TAG, "transmit: no ACK, retry %d/%d" % (attempt, retries))
                await sleep_ms(_TX_RETRY_BASE_MS << (attempt - 1))
