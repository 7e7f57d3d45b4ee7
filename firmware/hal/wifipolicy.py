# Which Wi-Fi security a terminal may join, by ESP-IDF's names (wifi_auth_mode_t): pure, so the
# ESP32 HAL (which compares them with network.WLAN's values), the host HAL's simulated scan and
# the setup page share one rule. The guideline makes WPA2 or better a connection condition.
STRONG = ("SEC_WPA2", "SEC_WPA3", "SEC_WPA2_WPA3", "SEC_WPA3_EXT_PSK",
          "SEC_WPA3_EXT_PSK_MIXED_MODE")
MIXED = "SEC_WPA_WPA2"  # joined only with lan.wifi_allow_wpa_wpa2_mixed
_ENTERPRISE = ("SEC_WPA2_ENT", "SEC_WPA3_ENT", "SEC_WPA3_ENT_192", "SEC_WPA2_WPA3_ENT")
_WHY = {
    "SEC_OPEN": "open network (no encryption)",
    "SEC_WEP": "WEP (broken encryption) is below WPA2",
    "SEC_WPA": "WPA (TKIP) is below WPA2",
    "SEC_OWE": "OWE (enhanced open) has no key: WPA2/WPA3-Personal only",
    "SEC_WAPI": "WAPI is not WPA2/WPA3",
    "SEC_DPP": "DPP is not supported: WPA2/WPA3-Personal only",
}


def why_not(name, allow_mixed=False):
    """None when a network of this security may be joined, else the reason (one phrase)."""
    if name in STRONG or (allow_mixed and name == MIXED):
        return None
    if name == MIXED:
        return "WPA/WPA2 mixed is allowed only with lan.wifi_allow_wpa_wpa2_mixed"
    if name in _ENTERPRISE:
        return "enterprise (802.1X) login is not supported: WPA2/WPA3-Personal only"
    return _WHY.get(name, "%s is not WPA2/WPA3" % name)
