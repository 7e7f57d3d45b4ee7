# main.py of the simulated device for the setup page's Chromium test: until the start-up
# decision (docs/product.md, terminal.main) lands, this starts setup mode directly, as that
# decision would for a configuration without Wi-Fi or Wi-SUN credentials (why = WHY_CONFIG),
# with the problems the configuration check reports, in the credential checks' own words.
import asyncio
import sys

from firmware import hal as halmod
from firmware.app import config as cfgmod
from firmware.app import credentials, heapmon
from firmware.app.setup import serve_setup


def _arg(name, default):
    argv = getattr(sys, "argv", None) or []
    for i in range(len(argv) - 1):
        if argv[i] == name:
            return argv[i + 1]
    return default


config_path = _arg("--config", "config.json")
cfg = cfgmod.load(config_path)
hal = halmod.create(halmod.load_board(_arg("--board", "board.json")), cfg)
heapmon.enabled = cfg["terminal"]["heap_log"]
lan, radio = cfg["lan"], cfg["radio"]
problems = []
for key, why in (("lan.wifi_ssid", credentials.check_ssid(lan["wifi_ssid"])),
                 ("lan.wifi_psk", credentials.check_psk(lan["wifi_psk"])),
                 ("radio.route_b_id", credentials.check_id(radio["route_b_id"])),
                 ("radio.pana_password", credentials.check_password(radio["pana_password"]))):
    if why:
        problems.append((2, key, why))
asyncio.run(serve_setup(hal, cfg, 2, problems, None, config_path))
