# Importing firmware/hal/esp32.py against fake `machine` / `network` / `esp32` modules, on either
# runtime (no tests here): the esp32 port's constants, the swap into sys.modules and its undoing.
import sys

# The v1.28 esp32 port's constants: security = ESP-IDF wifi_auth_mode_t, status = modnetwork
SEC = (("SEC_OPEN", 0), ("SEC_WEP", 1), ("SEC_WPA", 2), ("SEC_WPA2", 3), ("SEC_WPA_WPA2", 4),
       ("SEC_WPA2_ENT", 5), ("SEC_WPA3", 6), ("SEC_WPA2_WPA3", 7), ("SEC_WAPI", 8),
       ("SEC_OWE", 9), ("SEC_WPA3_ENT_192", 10), ("SEC_WPA3_EXT_PSK", 11),
       ("SEC_WPA3_EXT_PSK_MIXED_MODE", 12), ("SEC_DPP", 13))
STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD, STAT_THRESHOLD = 201, 202, 211
SHIFT_JIS_SSID = b"\x83e\x83X\x83g"  # "テスト" in Shift-JIS: not UTF-8


class Mod:
    """A fake module: attributes set by the test."""


def network(wlan):
    """A fake `network` module: the WLAN class given and the port's status constants."""
    mod = Mod()
    mod.WLAN = wlan
    mod.STAT_IDLE, mod.STAT_CONNECTING, mod.STAT_GOT_IP = STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP
    mod.STAT_NO_AP_FOUND, mod.STAT_WRONG_PASSWORD = STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD
    mod.STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = STAT_THRESHOLD
    return mod


def forget_hal_module():
    """Import firmware.hal.esp32 afresh against this test's fakes: drop it from sys.modules and
    from its package (`from firmware.hal import esp32` would otherwise return the old module)."""
    import firmware.hal as pkg

    sys.modules.pop("firmware.hal.esp32", None)
    if "esp32" in pkg.__dict__:
        del pkg.esp32


def import_esp32_hal(machine, network, esp32):
    """(firmware.hal.esp32 imported afresh with these fakes in sys.modules, what they replaced
    for restore())."""
    saved = {}
    for name, mod in (("machine", machine), ("network", network), ("esp32", esp32)):
        saved[name] = sys.modules.get(name)
        sys.modules[name] = mod
    forget_hal_module()
    from firmware.hal import esp32 as hal_esp32

    return hal_esp32, saved


def restore(saved):
    """The modules import_esp32_hal replaced, back; the HAL module forgotten again."""
    for name, mod in saved.items():
        if mod is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = mod
    forget_hal_module()
