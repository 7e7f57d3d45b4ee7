# Device entry point. On the ESP32 it reads /board.json and /config.json; on the host:
#   micropython main.py --board boards/host.json --config my-config.json
import sys


def _arg(name, default):
    argv = getattr(sys, "argv", None) or []
    for i in range(len(argv) - 1):
        if argv[i] == name:
            return argv[i + 1]
    return default


from firmware.app.terminal import main  # noqa: E402

main(_arg("--board", "board.json"), _arg("--config", "config.json"))
