# ESP32 HAL: the only place that touches machine / network / esp32 on the device.
# Board specifics (pins, UART, network kind, flash region) come from boards/<board>.json.
import asyncio
import time

import esp32
import machine
import network

from firmware import log
from firmware.hal.clock import CalendarClock
from firmware.hal.udp import UdpEndpoint

_RTC_MAGIC = b"T2K1"  # RTC memory marker: the RTC holds smart-meter time (survives soft reset)


class Esp32Uart:
    """machine.UART behind the UART-port interface; RX buffered by the IRAM ISR (rxbuf >= 2048)."""

    def __init__(self, spec):
        self.uart = machine.UART(
            spec.get("id", 2),
            baudrate=spec.get("baud", 115200),
            tx=spec["tx"],
            rx=spec["rx"],
            rxbuf=spec.get("rxbuf", 2048),
            txbuf=spec.get("txbuf", 1024),
            timeout=0,  # StreamReader breaks if read() returns None on timeout (#10867)
        )
        self._r = asyncio.StreamReader(self.uart)
        self._w = asyncio.StreamWriter(self.uart, {})

    async def readinto(self, buf):
        while True:
            n = await self._r.readinto(buf)
            if n:
                return n

    async def write(self, data):
        self._w.write(data)
        await self._w.drain()  # one writer task only (concurrent drain corrupts output, #6621)


class Hal:
    kind = "esp32"

    def __init__(self, board, config):
        self.board = board
        self.config = config
        self.clock = CalendarClock(rate=1)
        self._rtc = machine.RTC()
        self._wdt = None
        self._bdev = None
        self._nic = None
        self.clock.add_listener(self._save_rtc)
        if self._rtc.memory()[:4] == _RTC_MAGIC:
            # Soft reset: the RTC kept the smart meter's time. time.time() is t2k on the ESP32.
            self.clock.set_t2k(time.time())
        wdt_ms = board.get("watchdog_ms", 0)
        if wdt_ms:
            self._wdt = machine.WDT(timeout=wdt_ms)

    def _save_rtc(self, old, new):
        from firmware.timeutil import fields_from_t2k

        y, mo, d, h, mi, s, wd = fields_from_t2k(new)
        self._rtc.datetime((y, mo, d, wd - 1, h, mi, s, 0))  # RTC weekday: 0 = Monday
        self._rtc.memory(_RTC_MAGIC)

    def radio_uart(self):
        return Esp32Uart(self.board["radio_uart"])

    def lan_up(self):
        """Bring up Wi-Fi (WPA2 or better only) or Ethernet; True once an address is held."""
        net = self.board.get("network", {})
        if net.get("kind") == "ethernet":
            return self._ethernet(net)
        return self._wifi()

    def _ethernet(self, net):
        if self._nic is None:
            kw = {
                "mdc": machine.Pin(net["mdc"]),
                "mdio": machine.Pin(net["mdio"]),
                "phy_type": getattr(network, net.get("phy", "PHY_LAN8720")),
                "phy_addr": net.get("phy_addr", 0),
            }
            if net.get("power") is not None:
                kw["power"] = machine.Pin(net["power"])
            if net.get("ref_clk") is not None:
                kw["ref_clk"] = machine.Pin(net["ref_clk"])
                kw["ref_clk_mode"] = machine.Pin.OUT if net.get("ref_clk_out") else machine.Pin.IN
            self._nic = network.LAN(**kw)
            self._nic.active(True)
            self._static_ip()
        return self._nic.isconnected()

    def _static_ip(self):
        """Static IPv4 from the config (lan.static_ip); DHCP when it is empty."""
        lan = self.config["lan"]
        if not lan["static_ip"]:
            return
        ip, mask, gw, dns = lan["static_ip"], lan["netmask"], lan["gateway"], lan["dns"]
        log.info("lan", "static address %s/%s gateway %s" % (ip, mask, gw))
        self._nic.ifconfig((ip, mask, gw, dns or gw))

    def _wifi(self):
        lan = self.config["lan"]
        if self._nic is None:
            self._nic = network.WLAN(network.WLAN.IF_STA)
            self._nic.active(True)
            self._nic.config(pm=self._nic.PM_NONE)  # power save drops inbound unicast/multicast
            self._static_ip()
        if self._nic.isconnected():
            return True
        if self._nic.status() == getattr(network, "STAT_CONNECTING", -1):
            return False  # a scan now would come back empty; connect() would be refused
        try:
            scan = self._nic.scan()
        except OSError as e:
            log.warn("wifi", "scan failed: %s" % e)
            return False
        best = None
        for ssid, bssid, _ch, rssi, sec, _hidden in scan:
            if ssid.decode() != lan["wifi_ssid"]:
                continue
            if not wifi_security_ok(sec):
                log.warn("wifi", "AP %s refused: security %d below WPA2" % (bssid.hex(), sec))
                continue
            if best is None or rssi > best[1]:
                best = (bssid, rssi)
        if best is None:
            log.warn("wifi", "no WPA2/WPA3 access point with the configured SSID")
            return False
        try:
            self._nic.connect(lan["wifi_ssid"], lan["wifi_psk"], bssid=best[0])
        except OSError as e:
            log.warn("wifi", "connect failed: %s" % e)
        return False  # the caller polls again; connecting takes seconds

    def lan_ip(self):
        """Our IPv4 address once the link is up (DHCP or static)."""
        try:
            return self._nic.ifconfig()[0] if self._nic is not None else "0.0.0.0"
        except OSError:
            return "0.0.0.0"

    def lan_udp(self, port):
        return UdpEndpoint("0.0.0.0", port)

    def blockdev(self):
        if self._bdev is None:
            label = self.board.get("flash", {}).get("partition", "meterlog")
            parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
            if not parts:
                raise OSError("no flash partition labelled %s" % label)
            self._bdev = parts[0]
        return self._bdev

    def feed_watchdog(self):
        if self._wdt:
            self._wdt.feed()

    def reset(self):
        machine.reset()


def wifi_security_ok(sec):
    """WPA2 or better only (guideline: WPA2+ is a connection condition). Names, not numbers."""
    ok = []
    for name in ("SEC_WPA2", "SEC_WPA3", "SEC_WPA2_WPA3", "SEC_WPA3_EXT_PSK"):
        v = getattr(network.WLAN, name, None)
        if v is not None:
            ok.append(v)
    return sec in ok
