"""A host UART over pyserial with the firmware's UART interface (`async readinto(buf) -> n`,
`async write(data)`), so the same driver (J11Module, SkStackLink) runs on CPython against a real
module on a USB-serial adapter or against an emulator's pty: the path is configuration, with no
emulator special case (pyserial opens a pty path like any tty).

    uart = SerialUart("/dev/ttyUSB0", baudrate=115200)
    link = SkStackLink(uart)

Reads wait for readability with the event loop (add_reader), never by polling; a vanished adapter
raises from readinto (the driver's reader logs it, pauses and retries).
"""

import asyncio

import serial

DEFAULT_BAUDRATE = 115200  # BP35A1 / BP35C2 / J11 factory setting


def _wake(fut):
    if not fut.done():
        fut.set_result(None)


class SerialUart:
    def __init__(self, path, baudrate=DEFAULT_BAUDRATE, rtscts=False):
        self.path = path
        # timeout=0: read() returns what is buffered; write_timeout=0 would drop data, so
        # writes stay blocking at the OS level but are split into what the port accepts.
        self._s = serial.Serial(path, baudrate=baudrate, timeout=0, rtscts=rtscts,
                                exclusive=False)
        self.fd = self._s.fileno()

    async def readinto(self, buf):
        loop = asyncio.get_running_loop()
        while True:
            data = self._s.read(len(buf))
            if data:
                n = len(data)
                buf[:n] = data
                return n
            fut = loop.create_future()
            loop.add_reader(self.fd, _wake, fut)
            try:
                await fut
            finally:
                loop.remove_reader(self.fd)

    async def write(self, data):
        self._s.write(bytes(data))
        # let the reader run between large writes (a 1232-byte SKSENDTO at 115200 Bd is ~0.1 s)
        await asyncio.sleep(0)

    def close(self):
        self._s.close()
