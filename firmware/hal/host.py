# Host HAL: runs the firmware on a PC (CPython or the MicroPython unix port) for the simulation.
#   radio UART   -> the pseudo-terminal created by tools/j11_emulator.py
#   LAN          -> UDP sockets on a loopback address of the terminal's own (127.0.0.1)
#   flash        -> firmware.hal.norflash.NorFlash, file-backed so data survives a restart
#   calendar     -> CalendarClock, optionally accelerated (config "clock": {"rate": N})
import termios

from firmware.compat import IS_MICROPYTHON, sleep_ms
from firmware.hal.aio import wait_readable
from firmware.hal.clock import CalendarClock
from firmware.hal.udp import UdpEndpoint

_VMIN = 6
_VTIME = 5


class PtyUart:
    """The Wi-SUN module's UART as a pseudo-terminal slave, in raw mode."""

    def __init__(self, path):
        self.path = path
        if IS_MICROPYTHON:
            # MicroPython's read() loops until n bytes; VMIN=0/VTIME=0 makes each read return what
            # is there, so readinto() never blocks once poll says readable.
            self._f = open(path, "r+b", buffering=0)
            self.fd = self._f.fileno()
        else:
            import os

            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            self._f = None
        if IS_MICROPYTHON:
            termios.setraw(self.fd)
        else:
            import tty

            tty.setraw(self.fd)
        attr = termios.tcgetattr(self.fd)
        attr[6][_VMIN] = 0
        attr[6][_VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, attr)

    async def readinto(self, buf):
        while True:
            if IS_MICROPYTHON:
                await wait_readable(self._f)
                n = self._f.readinto(buf)
            else:
                import os

                await wait_readable(self.fd)
                try:
                    data = os.read(self.fd, len(buf))
                except BlockingIOError:
                    continue
                n = len(data)
                buf[:n] = data
            if n:
                return n
            await sleep_ms(1)  # spurious wake-up (or the emulator went away): do not spin

    async def write(self, data):
        if IS_MICROPYTHON:
            self._f.write(data)
            return
        import os

        mv = memoryview(data)
        while len(mv):
            try:
                n = os.write(self.fd, mv)
                mv = mv[n:]
            except BlockingIOError:
                await sleep_ms(2)

    def close(self):
        if self._f:
            self._f.close()
        else:
            import os

            os.close(self.fd)


class Hal:
    kind = "host"

    def __init__(self, board, config):
        self.board = board
        self.config = config
        self.clock = CalendarClock(rate=config["clock"]["rate"])
        self._bdev = None

    def radio_uart(self):
        path = self.config["radio"]["uart"] or self.board.get("radio_uart")
        if not path:
            raise OSError("host board: no radio UART path (config radio.uart)")
        return PtyUart(path)

    def lan_up(self):
        """The host's LAN is always up (loopback); the ESP32 HAL joins Wi-Fi/Ethernet here."""
        return True

    def lan_ip(self):
        return self.config["lan"]["bind_ip"]

    def lan_udp(self, port):
        return UdpEndpoint(self.config["lan"]["bind_ip"], port)

    def listen_ip(self):
        """Where the device's web server listens: the simulated terminal's own address."""
        return self.config["lan"]["bind_ip"]

    # -- setup mode (firmware/app/setup.py): no access point on a PC ---------------------------

    def ap_start(self, ssid, psk):
        """No radio here: the setup page is served on lan.bind_ip."""
        return ssid or "IoT-terminal-host", self.config["lan"]["bind_ip"]

    def ap_stop(self):
        pass

    def wifi_scan(self):
        """The board file's "wifi_scan" list (the simulation's neighbourhood): entries with
        "ssid" (text) or "ssid_hex", "bssid" (12 hex digits), "rssi", "sec" (an ESP-IDF name);
        the same tuples and policy as the ESP32 HAL."""
        from firmware.hal.wifipolicy import why_not

        mixed = self.config["lan"]["wifi_allow_wpa_wpa2_mixed"]
        out = []
        for ap in self.board.get("wifi_scan") or ():
            ssid = ap["ssid"].encode() if "ssid" in ap else bytes.fromhex(ap["ssid_hex"])
            why = why_not(ap.get("sec", "SEC_WPA2"), mixed)
            out.append((ssid, bytes.fromhex(ap.get("bssid", "020000000000")),
                        ap.get("rssi", -50), ap.get("sec", "SEC_WPA2"), why is None, why))
        return out

    def station_join(self, ssid, psk):
        self.config["lan"]["wifi_ssid"] = ssid
        self.config["lan"]["wifi_psk"] = psk

    def station_result(self):
        """The host's LAN is loopback: always joined."""
        return "joined", self.lan_ip()

    def station_stop(self):
        pass

    def flash_region(self):
        """(first_block, n_blocks) of the interval log: from the config (store.*) on the host."""
        st = self.config["store"]
        return st["first_block"], st["n_blocks"]

    def blockdev(self):
        if self._bdev is None:
            from firmware.hal.norflash import NorFlash

            st = self.config["store"]
            self._bdev = NorFlash(st["first_block"] + st["n_blocks"], path=st["path"] or None)
        return self._bdev

    def aes_ecb(self, key):
        """AES-128 block encryptor for DLMS security suite 0 (firmware/hal/aes.py: cryptolib on
        MicroPython, mbedTLS-backed on the ESP32; the `cryptography` package on CPython)."""
        from firmware.hal import aes

        return aes.ecb(key)

    def feed_watchdog(self):
        pass

    # -- factory reset (firmware/app/factory.py). No raw flash under the files here: each is
    # overwritten with zeros and deleted, which a journalling host filesystem need not honour;
    # only the device's partition erase is a guarantee (docs/product.md "Factory reset").

    def wipe_filesystem(self, keep_names, files=(), markers=()):
        """Shred `files` (config, state, event log); the kept names are left as they are."""
        from firmware.hal import wipe

        gone = [p for p in files if wipe.shred(p)]
        return {"files": gone, "kept": list(keep_names)}

    def erase_store(self):
        """Erase every block of the emulated NOR flash of the interval log (its backing file)."""
        from firmware.hal import wipe

        bd = self.blockdev()
        return wipe.erase_verify(bd, 0, bd.ioctl(4, 0))

    def erase_nvs(self):
        return 0  # a PC has no NVS

    def reset_cause(self):
        """Every start of the host simulation is a power-on (counters: resets_power_on)."""
        return "power_on"

    def reset(self):
        raise SystemExit(3)
