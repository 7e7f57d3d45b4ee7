# main.py of the simulated device for the setup page's tests: until the start-up decision
# (docs/product.md, terminal.main) lands, this stands in for it. A configuration without usable
# Wi-Fi or Wi-SUN credentials starts setup mode (why = WHY_CONFIG) with the problems in the
# credential checks' own words; a usable one starts the normal run (terminal.main), as after the
# restart that ends a successful setup.
import asyncio
import sys

from firmware import hal as halmod
from firmware.app import config as cfgmod
from firmware.app import credentials, heapmon


def _arg(name, default):
    argv = getattr(sys, "argv", None) or []
    for i in range(len(argv) - 1):
        if argv[i] == name:
            return argv[i + 1]
    return default


config_path = _arg("--config", "config.json")
cfg = cfgmod.load(config_path)
lan, radio = cfg["lan"], cfg["radio"]
problems = []
for key, why in (("lan.wifi_ssid", credentials.check_ssid(lan["wifi_ssid"])),
                 ("lan.wifi_psk", credentials.check_psk(lan["wifi_psk"])),
                 ("radio.route_b_id", credentials.check_id(radio["route_b_id"])),
                 ("radio.pana_password", credentials.check_password(radio["pana_password"]))):
    if why:
        problems.append((2, key, why))
if problems:
    from firmware.app.setup import serve_setup

    hal = halmod.create(halmod.load_board(_arg("--board", "board.json")), cfg)
    heapmon.enabled = cfg["terminal"]["heap_log"]
    asyncio.run(serve_setup(hal, cfg, 2, problems, None, config_path))
else:
    del cfg, lan, radio, problems
    from firmware.app.terminal import main

    main(_arg("--board", "board.json"), config_path)
