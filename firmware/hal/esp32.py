# ESP32 HAL: the only place that touches machine / network / esp32 on the device.
# Board specifics (pins, UART, network kind, flash region, watchdog) come from boards/<board>.json.
# On the host the same file runs against the stand-ins in tools/esp32sim (boards/esp32-sim.json).
import asyncio

import esp32
import machine
import network

from firmware import log, timeutil
from firmware.compat import const, ticks_diff, ticks_ms
from firmware.hal import FlashError
from firmware.hal.clock import SOURCE_RTC, CalendarClock
from firmware.hal.udp import UdpEndpoint
from firmware.hal.wifipolicy import MIXED as _MIXED
from firmware.hal.wifipolicy import STRONG as _STRONG
from firmware.hal.wifipolicy import why_not

_RTC_MAGIC = b"T2K1"  # RTC memory marker: the RTC holds a set time (smart meter, or NTP)
_MIN_RTC_YEAR = const(2024)  # an RTC reading before this is a power-on default, never trusted
_CONNECT_WAIT_MS = const(30000)  # the driver's own reconnect gets this long, then scan again
_RESET_CAUSES = ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET")
_CAUSE_NAMES = ("power_on", "hard", "watchdog", "deepsleep", "soft")  # counters: resets_<name>
# Scanned security accepted for the join: WPA2 or better (firmware/hal/wifipolicy.py; names, not
# numbers: the values are ESP-IDF's wifi_auth_mode_t and differ between IDF versions).
_SEC_NAMES = ("SEC_OPEN", "SEC_WEP", "SEC_WPA", "SEC_WPA2", "SEC_WPA_WPA2", "SEC_WPA2_ENT",
              "SEC_WPA3", "SEC_WPA2_WPA3", "SEC_WAPI", "SEC_OWE", "SEC_WPA3_ENT_192",
              "SEC_WPA3_EXT_PSK", "SEC_WPA3_EXT_PSK_MIXED_MODE", "SEC_DPP", "SEC_WPA3_ENT",
              "SEC_WPA2_WPA3_ENT")


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
        # boot.py armed the watchdog before the imports; WDT() again re-configures the same one
        # (there is one and it cannot be stopped), so the board's timeout holds from here on.
        wdt_ms = board.get("watchdog_ms", 0)
        self._wdt = machine.WDT(timeout=wdt_ms) if wdt_ms else None
        self.ticks = ticks_ms  # real milliseconds for the Wi-Fi timeouts (tests replace it)
        # clock.rate stays 1 on a device; the esp32-sim board runs the calendar accelerated
        self.clock = CalendarClock(rate=config["clock"]["rate"])
        self._rtc = machine.RTC()
        self._bdev = None
        self._region = None
        self._nic = None
        self._bound = []  # endpoints bound to our own address (rebound when it changes)
        self._connect_at = None  # ticks of connect(), or of the first "connecting" after a drop
        self._joined = False  # a connect() of ours is outstanding (the driver retries it)
        self._said = []  # one-time messages already logged
        self._no_ap = False  # the last scan found no WPA2/WPA3 access point with our SSID
        self._ap = None  # the setup access point (setup mode only)
        self._ssid = config["lan"]["wifi_ssid"].encode()  # scan() gives raw bytes
        self._log_reset_cause()
        self._restore_rtc()
        self.clock.add_listener(self._save_rtc)

    def _once(self, key, fn, tag, msg):
        if key not in self._said:
            self._said.append(key)
            fn(tag, msg)

    # -- boot, calendar clock ----------------------------------------------------------------

    def _cause(self):
        """(index in _RESET_CAUSES or -1, machine's value) of the last reset."""
        fn = getattr(machine, "reset_cause", None)
        if fn is None:
            return -1, None
        cause = fn()
        for i in range(len(_RESET_CAUSES)):
            if getattr(machine, _RESET_CAUSES[i], None) == cause:
                return i, cause
        return -1, cause

    def reset_cause(self):
        """Why the chip last reset, as a short name for the counters (resets_<name>):
        power_on, hard, watchdog, deepsleep, soft, or other."""
        i = self._cause()[0]
        return _CAUSE_NAMES[i] if i >= 0 else "other"

    def _log_reset_cause(self):
        i, cause = self._cause()
        if i < 0 and cause is None:
            return
        name = _RESET_CAUSES[i] if i >= 0 else str(cause)
        (log.warn if name == "WDT_RESET" else log.info)("boot", "reset cause %s" % name)

    def _restore_rtc(self):
        """The RTC keeps the smart meter's time while RTC memory keeps our marker (a soft reset
        or deep sleep; power-on clears both). It is read as calendar fields: time.time() counts
        from 2000 on the ESP32 but from 1970 on other ports, the fields mean the same on all."""
        try:
            if bytes(self._rtc.memory()[:4]) != _RTC_MAGIC:
                return
            y, mo, d, _wd, h, mi, s = self._rtc.datetime()[:7]
        except (OSError, ValueError, TypeError) as e:
            log.warn("clock", "RTC unreadable (%s): waiting for the smart meter" % e)
            return
        if y < _MIN_RTC_YEAR:
            log.warn("clock", "RTC marked as set but reads year %d: not trusted" % y)
            return
        t = timeutil.t2k_from_fields(y, mo, d, h, mi, s)
        self.clock.set_t2k(t, SOURCE_RTC)
        log.info("clock", "kept by the RTC across the reset: %s" % timeutil.iso(t))

    def _save_rtc(self, old, new):
        y, mo, d, h, mi, s, wd = timeutil.fields_from_t2k(new)
        self._rtc.datetime((y, mo, d, wd - 1, h, mi, s, 0))  # RTC weekday: 0 = Monday
        self._rtc.memory(_RTC_MAGIC)

    def radio_uart(self):
        return Esp32Uart(self.board["radio_uart"])

    # -- LAN ---------------------------------------------------------------------------------

    def lan_up(self):
        """Bring up Wi-Fi (WPA2 or better only) or Ethernet; True once an address is held."""
        net = self.board.get("network", {})
        up = self._ethernet(net) if net.get("kind") == "ethernet" else self._wifi()
        if up and self._bound:
            self._follow_address()
        return up

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

    def _wifi_config_ok(self):
        lan = self.config["lan"]
        if not self._ssid or len(self._ssid) > 32:
            self._once("ssid", log.error, "wifi",
                       "lan.wifi_ssid must be 1 to 32 bytes (UTF-8): Wi-Fi not joined")
            return False
        if not 8 <= len(lan["wifi_psk"]) <= 64:
            # WPA2/WPA3-Personal: a passphrase of 8..63 characters or 64 hex digits. A shorter
            # key would also lower the ESP-IDF's own authmode threshold from WPA2 to open.
            self._once("psk", log.error, "wifi",
                       "lan.wifi_psk must be 8 to 63 characters (or 64 hex digits) for WPA2: "
                       "Wi-Fi not joined")
            return False
        return True

    def _sta(self):
        if self._nic is None:
            self._nic = network.WLAN(network.WLAN.IF_STA)
            self._nic.active(True)
            self._nic.config(pm=self._nic.PM_NONE)  # power save drops inbound unicast/multicast
            self._static_ip()
        return self._nic

    def _wifi(self):
        if not self._wifi_config_ok():
            return False
        lan = self.config["lan"]
        nic = self._sta()
        if nic.isconnected():
            self._connect_at = None
            return True
        stuck = nic.status() == getattr(network, "STAT_CONNECTING", -1)
        if stuck:
            # Connecting, or the driver reconnecting after a drop (it retries the pinned BSSID
            # for ever). A scan now would come back empty and connect() would be refused.
            if self._connect_at is None:
                self._connect_at = self.ticks()
            if ticks_diff(self.ticks(), self._connect_at) < _CONNECT_WAIT_MS:
                return False
            log.info("wifi", "no connection after %d s: scanning again"
                     % (_CONNECT_WAIT_MS // 1000))
        if stuck or self._joined:
            # stop the driver retrying the BSSID pinned before (it may be gone for good), so
            # that the scan works and the best access point is chosen again
            self._joined = False
            try:
                nic.disconnect()
            except OSError:
                pass
        self._connect_at = None
        try:
            scan = nic.scan()
        except OSError as e:
            log.warn("wifi", "scan failed: %s" % e)
            return False
        best = self._choose(scan, lan["wifi_allow_wpa_wpa2_mixed"])
        self._no_ap = best is None
        if best is None:
            log.warn("wifi", "no WPA2/WPA3 access point with the configured SSID")
            return False
        try:
            # the SSID as configured (connect() takes str or bytes alike), the BSSID we vetted
            nic.connect(lan["wifi_ssid"], lan["wifi_psk"], bssid=best[0])
            self._joined = True
            self._connect_at = self.ticks()
            log.info("wifi", "joining %s (%s, RSSI %d)" % (_mac(best[0]), sec_name(best[2]),
                                                          best[1]))
        except OSError as e:
            log.warn("wifi", "connect failed: %s" % e)
        return False  # the caller polls again; connecting takes seconds

    def _choose(self, scan, allow_mixed):
        """The strongest access point with our SSID and WPA2 or better; SSIDs are compared as
        bytes (another network's name need not be UTF-8, e.g. Shift-JIS)."""
        best = None
        for ap in scan:
            if ap[0] != self._ssid:
                continue
            bssid, rssi, sec = ap[1], ap[3], ap[4]
            if not wifi_security_ok(sec, allow_mixed):
                self._once(b"refused" + bssid, log.warn, "wifi", "AP %s refused: %s is below WPA2"
                           % (_mac(bssid), sec_name(sec)))
                continue
            if best is None or rssi > best[1]:
                best = (bssid, rssi, sec)
        return best

    # -- setup mode: the device's own access point, scan and trial join (firmware/app/setup.py) --

    def ap_start(self, ssid, psk):
        """Start the setup access point, WPA2-PSK with psk (8..63 characters); ssid "" = the
        default name with the AP's MAC (so two devices set up side by side differ). The station
        interface stays up next to it (AP+STA) for the scan and the trial join. Returns
        (ssid, the AP's own address for the setup page)."""
        ap = network.WLAN(network.WLAN.IF_AP)
        ap.active(True)
        if not ssid:
            mac = ap.config("mac")
            ssid = "IoT-terminal-%02X%02X" % (mac[4], mac[5])
        # security = WPA2-PSK explicitly: an AP config without it is open on some IDF versions
        ap.config(ssid=ssid, key=psk, security=network.WLAN.SEC_WPA2, max_clients=2)
        self._ap = ap
        log.info("wifi", "setup access point %s up (WPA2)" % ssid)
        return ssid, ap.ifconfig()[0]

    def ap_stop(self):
        if self._ap is not None:
            self._ap.active(False)
            self._ap = None

    def wifi_scan(self):
        """The networks in range: a list of (ssid bytes, bssid bytes, rssi, security name,
        selectable, reason) where selectable is the join policy (wifi_security_ok) and reason
        (None when selectable) says why not."""
        mixed = self.config["lan"]["wifi_allow_wpa_wpa2_mixed"]
        out = []
        for ap in self._sta().scan():
            sec = ap[4]
            name = sec_name(sec)
            ok = wifi_security_ok(sec, mixed)
            out.append((bytes(ap[0]), bytes(ap[1]), ap[3], name, ok,
                        None if ok else why_not(name, mixed)))
        return out

    def station_join(self, ssid, psk):
        """Start joining ssid with psk by the normal join policy (lan_up); the caller polls
        station_result(). The values replace lan.wifi_ssid/wifi_psk of the running config."""
        self.station_stop()
        lan = self.config["lan"]
        lan["wifi_ssid"] = ssid
        lan["wifi_psk"] = psk
        self._ssid = ssid.encode()
        self._said = []
        self._no_ap = False
        self.lan_up()

    def station_result(self):
        """("joining", ""), ("joined", our address) or ("failed", why)."""
        nic = self._sta()
        st = nic.status()
        # a definite refusal first: lan_up() would disconnect and try again
        if st == getattr(network, "STAT_WRONG_PASSWORD", -2):
            return "failed", "the access point refused the key (wrong PSK)"
        if st == getattr(network, "STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD", -2):
            return "failed", "the access point offers less than WPA2"
        if self.lan_up():
            return "joined", self.lan_ip()
        if self._no_ap:
            return "failed", "no WPA2/WPA3 access point with this name in range"
        if st == getattr(network, "STAT_NO_AP_FOUND", -2):
            return "failed", "no access point with this name answered"
        return "joining", ""

    def station_stop(self):
        """Stop a trial join (the driver would retry it for ever)."""
        if self._nic is not None and self._joined:
            try:
                self._nic.disconnect()
            except OSError:
                pass
        self._joined = False
        self._connect_at = None

    def lan_ip(self):
        """Our IPv4 address once the link is up (DHCP or static)."""
        try:
            return self._nic.ifconfig()[0] if self._nic is not None else "0.0.0.0"
        except OSError:
            return "0.0.0.0"

    def lan_udp(self, port):
        """Multicast discovery needs a socket bound to 0.0.0.0 (one bound to a unicast address
        does not see the group's datagrams). Without it the socket is bound to our own address,
        so nothing sent to another address of the device reaches it, and several terminals can
        share one host in the simulation; it is bound again if DHCP hands out a new address."""
        if self.config["discovery"]["multicast"]:
            return UdpEndpoint("0.0.0.0", port)
        ep = UdpEndpoint(self.lan_ip(), port)
        self._bound.append(ep)
        return ep

    def listen_ip(self):
        """The web server listens on every interface (station, Ethernet or setup AP): its
        address may change with DHCP while it runs."""
        return "0.0.0.0"

    def _follow_address(self):
        ip = self.lan_ip()
        if ip == "0.0.0.0":
            return
        for ep in self._bound:
            old_ip, port = ep.local
            if old_ip == ip:
                continue
            log.warn("lan", "address changed from %s to %s: UDP port %d bound again"
                     % (old_ip, ip, port))
            fresh = UdpEndpoint(ip, port)
            old = ep.sock
            ep.sock, ep.local = fresh.sock, fresh.local  # a task parked on the old one wakes up
            old.close()

    # -- flash -------------------------------------------------------------------------------

    def blockdev(self):
        if self._bdev is None:
            self._bdev, self._region = self._open_flash()
        return self._bdev

    def flash_region(self):
        """(first_block, n_blocks) of the interval log inside the board's partition."""
        self.blockdev()
        return self._region

    def _open_flash(self):
        fl = self.board.get("flash") or {}
        label = fl.get("partition", "meterlog")
        parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
        if not parts:
            raise FlashError("no data partition labelled '%s' (a stock partition table? flash "
                             "the image built from boards/IOT_TERMINAL_ESP32)" % label)
        part = parts[0]
        size = part.ioctl(5, 0)
        count = part.ioctl(4, 0)
        want = fl.get("block_size", 4096)
        if size != want:
            raise FlashError("partition '%s' has %d-byte blocks, the board file says %d"
                             % (label, size, want))
        first = fl.get("first_block", 0)
        n = fl.get("n_blocks", count - first)
        if first < 0 or n < 2 or first + n > count:
            raise FlashError("board flash region %d+%d blocks does not fit partition '%s' of %d "
                             "blocks" % (first, n, label, count))
        return part, (first, n)

    def aes_ecb(self, key):
        """AES-128 block encryptor for DLMS security suite 0 (firmware/hal/aes.py: cryptolib on
        MicroPython, mbedTLS-backed on the ESP32; the `cryptography` package on CPython)."""
        from firmware.hal import aes

        return aes.ecb(key)

    def feed_watchdog(self):
        if self._wdt:
            self._wdt.feed()

    # -- factory reset (firmware/app/factory.py, docs/product.md "Factory reset") --------------

    def _data_partition(self, label):
        parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
        if not parts:
            raise FlashError("no data partition labelled '%s'" % label)
        return parts[0]

    def wipe_filesystem(self, keep_names, files=(), markers=()):
        """Erase every block of the vfs partition (LittleFS keeps old copies of rewritten files
        in blocks nothing points to any more: deleting config.json would leave the secrets),
        the blocks holding one of `markers` first, prove it erased, format it again and write
        back the files named in keep_names, read into RAM first. `files` (the host's list of
        files to shred) is not needed here: the whole filesystem goes. A power cut after the
        erase leaves an erased partition, which the port's _boot.py formats at the next start."""
        import gc
        import os

        import vfs

        from firmware.hal import wipe

        spec = self.board.get("vfs") or {}
        mount = spec.get("mount", "/")
        part = self._data_partition(spec.get("partition", "vfs"))
        kept = wipe.read_files(mount, keep_names)  # FlashError here: nothing erased yet
        cwd = os.getcwd()
        # a file object nothing refers to is closed by its finaliser, which can write to the
        # flash: let that happen now, into the old filesystem, not later into the new one
        gc.collect()
        vfs.umount(mount)
        n = wipe.erase_verify(part, 0, part.ioctl(4, 0), self.feed_watchdog, markers)
        vfs.VfsLfs2.mkfs(part)
        vfs.mount(vfs.VfsLfs2(part), mount)
        if cwd.startswith(mount):
            os.chdir(cwd)
        wipe.write_files(mount, kept)
        return {"blocks": n, "kept": [k[0] for k in kept]}

    def erase_store(self):
        """Erase the whole interval-log partition (metering data not kept); blocks erased."""
        from firmware.hal import wipe

        part = self.blockdev()
        return wipe.erase_verify(part, 0, part.ioctl(4, 0), self.feed_watchdog)

    def erase_nvs(self):
        """Erase the ESP-IDF NVS partition. MicroPython keeps the Wi-Fi station and AP settings
        in RAM only (network_wlan.c: esp_wifi_set_storage(WIFI_STORAGE_RAM) right after
        esp_wifi_init) and this firmware keeps nothing in esp32.NVS, but a firmware the board
        ran before may have left Wi-Fi credentials in NVS (namespace nvs.net80211). Nothing of
        ours lives there; the PHY calibration it also holds is redone at the next boot, and the
        erased pages are an empty NVS to nvs_flash_init. Blocks erased (0: no such partition)."""
        from firmware.hal import wipe

        try:
            part = self._data_partition(self.board.get("nvs_partition", "nvs"))
        except FlashError:
            log.warn("factory", "no nvs partition: nothing to erase there")
            return 0
        return wipe.erase_verify(part, 0, part.ioctl(4, 0), self.feed_watchdog)

    def reset(self):
        machine.reset()


def wifi_security_ok(sec, allow_mixed=False):
    """WPA2 or better (guideline: WPA2+ is a connection condition); WPA/WPA2 mixed mode only
    when configured (lan.wifi_allow_wpa_wpa2_mixed, see docs/configuration.md)."""
    for name in _STRONG + ((_MIXED,) if allow_mixed else ()):
        v = getattr(network.WLAN, name, None)
        if v is not None and v == sec:
            return True
    return False


def sec_name(sec):
    for name in _SEC_NAMES:
        if getattr(network.WLAN, name, None) == sec:
            return name
    return "security %s" % sec


def _mac(b):
    return ":".join("%02x" % x for x in b)
