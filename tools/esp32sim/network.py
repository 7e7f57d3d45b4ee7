# Stand-in for the v1.28 esp32 port's `network` module on the MicroPython unix port (host side
# only, never frozen): WLAN (station) and LAN, on loopback. The access points come from sim.json
# "wifi"; creating the file <sim>/wifi_down takes all of them out of range (see _sim.py).
#
# Behaviour copied from ports/esp32/network_wlan.c:
#   scan()       list of (ssid, bssid, channel, RSSI, security, hidden); ssid and bssid are raw
#                bytes (a name need not be UTF-8), security is ESP-IDF's wifi_auth_mode_t, hidden
#                is always False; OSError if the STA is not active; blocks while it scans; empty
#                while a connection attempt is under way (esp_wifi_scan_start fails then and the
#                port returns the empty list).
#   connect()    ssid/key as str or bytes (mp_obj_str_get_data), keyword bssid of 6 bytes; returns
#                at once. The driver keeps retrying while a connection is requested, also after a
#                drop, until disconnect(). With a key of 8 or more characters ESP-IDF's authmode
#                threshold is WPA2: WEP/WPA-only access points are not joined (reason 211).
#   status()     STAT_GOT_IP when connected; NO_AP_FOUND*/WRONG_PASSWORD reasons as they are;
#                STAT_IDLE after disconnect(); STAT_CONNECTING while a connection is requested.
#   IF_AP        the device's own access point (setup mode): config(ssid/essid, key/password,
#                security/authmode, max_clients, hidden, channel); a WPA2 key must be 8..63
#                characters (ESP-IDF refuses others). Every change is recorded in <sim>/ap.json
#                ({"active", "ssid", "key", "security": name}) so a test can check the AP it ran;
#                ifconfig() gives the device's loopback address (sim.json "ip").
import json
import time

import _sim

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 211
STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD = 212
_REASON_ASSOC_LEAVE = 8
_REASON_CONNECTION_FAIL = 205

PHY_LAN8710, PHY_LAN8720, PHY_IP101, PHY_RTL8201, PHY_DP83848, PHY_KSZ8041, PHY_KSZ8081 = range(7)
PHY_GENERIC = 7
ETH_INITIALIZED, ETH_STARTED, ETH_STOPPED, ETH_CONNECTED, ETH_DISCONNECTED, ETH_GOT_IP = range(6)

_SEC = {"SEC_OPEN": 0, "SEC_WEP": 1, "SEC_WPA": 2, "SEC_WPA2": 3, "SEC_WPA_WPA2": 4,
        "SEC_WPA2_ENT": 5, "SEC_WPA3": 6, "SEC_WPA2_WPA3": 7, "SEC_WAPI": 8, "SEC_OWE": 9,
        "SEC_WPA3_ENT_192": 10, "SEC_WPA3_EXT_PSK": 11, "SEC_WPA3_EXT_PSK_MIXED_MODE": 12,
        "SEC_DPP": 13}
_BELOW_WPA2 = (0, 1, 2)  # open, WEP, WPA: below the WPA2 threshold a >= 8-character key sets

_hostname = "esp32"


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


def _wifi():
    return _sim.cfg().get("wifi", {})


def _ms(key, default):
    return _wifi().get(key, default)


def _aps():
    """The access points in range: dicts with bytes ssid/bssid, channel, rssi, sec (number)."""
    if _sim.exists("wifi_down"):
        return []
    out = []
    for ap in _wifi().get("aps", []):
        out.append({"ssid": bytes.fromhex(ap["ssid_hex"]), "bssid": bytes.fromhex(ap["bssid"]),
                    "channel": ap.get("channel", 1), "rssi": ap.get("rssi", -50),
                    "sec": _SEC[ap.get("sec", "SEC_WPA2")], "psk": ap.get("psk", "")})
    return out


def _address():
    return _sim.cfg().get("ip", "127.0.0.1")


class _Sta:
    active = False
    requested = False
    connected = False
    reason = 0
    ssid = b""
    key = b""
    bssid = None
    attempt_at = None  # ticks of the next connection attempt by the driver
    static = None
    pm = 1  # PM_PERFORMANCE (WIFI_PS_MIN_MODEM), the ESP-IDF default


def _find(s):
    for ap in _aps():
        if ap["ssid"] == s.ssid and (s.bssid is None or ap["bssid"] == s.bssid):
            return ap
    return None


def _update():
    s = _Sta
    now = time.ticks_ms()
    if s.connected and _find(s) is None:  # out of range: beacon timeout, the driver retries
        s.connected = False
        s.reason = STAT_BEACON_TIMEOUT
        s.attempt_at = time.ticks_add(now, _ms("retry_ms", 1000))
    if not (s.requested and not s.connected and s.attempt_at is not None):
        return
    if time.ticks_diff(now, s.attempt_at) < 0:
        return
    ap = _find(s)
    if ap is None:
        s.reason = STAT_NO_AP_FOUND
    elif len(s.key) >= 8 and ap["sec"] in _BELOW_WPA2:
        s.reason = STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD
    elif ap["sec"] != 0 and ap["psk"].encode() != s.key:
        s.reason = STAT_WRONG_PASSWORD
    else:
        s.connected = True
        s.reason = 0
        s.attempt_at = None
        return
    s.attempt_at = time.ticks_add(now, _ms("retry_ms", 1000))


def _bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)


class _Ap:
    active = False
    ssid = "ESP_513001"  # the port's default name: the AP's MAC
    key = ""
    security = 0  # SEC_OPEN until configured, as on the port
    max_clients = 10


def _sec_name(v):
    for name, value in _SEC.items():
        if value == v:
            return name
    return str(v)


def _record_ap():
    a = _Ap
    _sim.write_atomic("ap.json", json.dumps({"active": a.active, "ssid": a.ssid, "key": a.key,
                                             "security": _sec_name(a.security),
                                             "max_clients": a.max_clients}))


def _ap_config(kw):
    a = _Ap
    ssid, key, sec = a.ssid, a.key, a.security
    for k, v in kw.items():
        if k in ("ssid", "essid"):
            ssid = _bytes(v)[:32].decode()
        elif k in ("key", "password"):
            key = _bytes(v)[:63].decode()
        elif k in ("security", "authmode"):
            sec = v
        elif k == "max_clients":
            a.max_clients = v
        elif k not in ("hidden", "channel", "txpower", "mac", "protocol"):
            raise ValueError("unknown config param")
    if sec != 0 and not 8 <= len(key) <= 63:
        raise OSError("Wifi Invalid Password")  # esp_wifi_set_config: ESP_ERR_WIFI_PASSWORD
    a.ssid, a.key, a.security = ssid, key, sec
    _record_ap()


class WLAN:
    IF_STA = 0
    IF_AP = 1
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __init__(self, interface_id=0):
        if interface_id not in (0, 1):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id

    def active(self, is_active=None):
        if self._if != 0:
            if is_active is not None:
                _Ap.active = bool(is_active)
                _record_ap()
            return _Ap.active
        if is_active is None:
            return _Sta.active
        _Sta.active = bool(is_active)
        if not is_active:
            _Sta.requested = _Sta.connected = False
        return _Sta.active

    def _sta(self):
        if self._if != 0:
            raise OSError("STA required")

    def scan(self):
        self._sta()
        s = _Sta
        if not s.active:
            raise OSError("STA must be active")
        _update()
        if s.requested and not s.connected:
            return []
        time.sleep_ms(_ms("scan_ms", 300))  # scan(): blocks the interpreter while it scans
        return [(ap["ssid"], ap["bssid"], ap["channel"], ap["rssi"], ap["sec"], False)
                for ap in _aps()]

    def connect(self, ssid=None, key=None, *, bssid=None):
        self._sta()
        s = _Sta
        if not s.active:
            raise OSError("Wifi Not Started")
        if ssid is not None:
            s.ssid = _bytes(ssid)[:32]
        if key is not None:
            s.key = _bytes(key)[:64]
        if bssid is not None:
            bssid = bytes(bssid)
            if len(bssid) != 6:
                raise ValueError()
        s.bssid = bssid
        s.requested = True
        s.connected = False
        s.reason = 0
        s.attempt_at = time.ticks_add(time.ticks_ms(), _ms("connect_ms", 300))

    def disconnect(self):
        s = _Sta
        s.requested = s.connected = False
        s.reason = _REASON_ASSOC_LEAVE
        s.attempt_at = None

    def isconnected(self):
        if self._if != 0:
            return False
        _update()
        return _Sta.connected

    def status(self, param=None):
        s = _Sta
        _update()
        if param is not None:
            if param == "rssi":
                ap = _find(s) if s.connected else None
                if ap is None:
                    raise OSError("Wifi Not Connected")
                return ap["rssi"]
            raise ValueError("unknown status param")
        if self._if != 0:
            return None
        r = s.reason
        if s.connected:
            return STAT_GOT_IP
        if r in (STAT_NO_AP_FOUND, STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY,
                 STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD, STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD):
            return r
        if r in (STAT_WRONG_PASSWORD, _REASON_CONNECTION_FAIL):
            return STAT_WRONG_PASSWORD
        if r == _REASON_ASSOC_LEAVE:
            return STAT_IDLE
        if s.requested:
            return STAT_CONNECTING
        return STAT_IDLE if r == 0 else r

    def config(self, *args, **kw):
        s = _Sta
        if self._if == 1:
            if kw:
                if not _Ap.active:
                    raise OSError("Wifi Not Started")
                return _ap_config(kw)
            if args == ("mac",):
                return b"\x24\x0a\xc4\x51\x30\x02"
            if args and args[0] in ("ssid", "essid"):
                return _Ap.ssid
            if args and args[0] in ("security", "authmode"):
                return _Ap.security
            raise ValueError("unknown config param")
        if kw:
            for k, v in kw.items():
                if k == "pm":
                    s.pm = v
                elif k not in ("reconnects", "txpower", "hostname", "dhcp_hostname",
                               "protocol", "channel", "mac"):
                    raise ValueError("unknown config param")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        name = args[0]
        if name == "mac":
            return b"\x24\x0a\xc4\x51\x30\x01"
        if name in ("ssid", "essid"):
            return s.ssid.decode()
        if name == "pm":
            return s.pm
        if name == "reconnects":
            return -1
        raise ValueError("unknown config param")

    def ifconfig(self, cfg=None):
        if self._if == 1:
            ip = _address() if _Ap.active else "0.0.0.0"
            return (ip, "255.255.255.0", ip, ip)
        return _ifconfig(_Sta, cfg, _Sta.connected)

    def ipconfig(self, *args, **kw):
        return _ipconfig(_Sta, args, kw, self.isconnected())


def _ifconfig(state, cfg, up):
    if cfg is not None:
        state.static = tuple(cfg)
        return None
    if state.static is not None:
        return state.static
    if not up:
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
    ip = _address()
    return (ip, "255.0.0.0", "127.0.0.254", "127.0.0.254")


def _ipconfig(state, args, kw, up):
    if kw:
        if "addr4" in kw:
            state.static = (kw["addr4"].split("/")[0], "255.255.255.0", kw.get("gw4", ""), "")
        return None
    ip, mask = _ifconfig(state, None, up)[:2]
    if args == ("addr4",):
        return (ip, mask)
    if args == ("dhcp4",):
        return state.static is None
    if args == ("gw4",):
        return _ifconfig(state, None, up)[2]
    raise ValueError("unexpected key")


class _Eth:
    active = False
    static = None
    made = False


class LAN:
    """network.LAN: one Ethernet interface; link down while <sim>/lan_down exists."""

    def __init__(self, id=0, *, mdc=None, mdio=None, power=None, phy_addr=None, phy_type=None,
                 reset=None, ref_clk=None, ref_clk_mode=None, **kw):
        if mdc is None or mdio is None or phy_addr is None or phy_type is None:
            raise TypeError("mdc, mdio, phy_addr and phy_type are required")
        if not 0 <= phy_addr <= 31:
            raise ValueError("invalid phy address")
        if phy_type not in range(8):
            raise ValueError("invalid phy type")
        if _Eth.made:
            raise OSError("ethernet already initialized")  # init once per boot on the port
        _Eth.made = True

    def active(self, is_active=None):
        if is_active is None:
            return _Eth.active
        _Eth.active = bool(is_active)
        return _Eth.active

    def isconnected(self):
        return _Eth.active and not _sim.exists("lan_down")

    def status(self):
        if not _Eth.active:
            return ETH_STOPPED
        return ETH_GOT_IP if self.isconnected() else ETH_DISCONNECTED

    def config(self, *args, **kw):
        if args == ("mac",):
            return b"\x24\x0a\xc4\x51\x30\x03"
        if kw:
            return None
        raise ValueError("unknown config param")

    def ifconfig(self, cfg=None):
        return _ifconfig(_Eth, cfg, self.isconnected())

    def ipconfig(self, *args, **kw):
        return _ipconfig(_Eth, args, kw, self.isconnected())


for _name, _value in _SEC.items():
    setattr(WLAN, _name, _value)
