# Factory reset / secure wipe (docs/product.md "Factory reset"): no byte of a secret may remain
# in flash afterwards - Wi-Fi PSK, Wi-SUN ID and password, DLMS keys and passwords, MQTT and web
# passwords (config.json), our DLMS invocation counters and the joined smart meter (state.json) -
# and metering data is kept or erased as chosen. The event log starts again with FACTORY_RESET.
#
# Orchestration only: the HAL erases (firmware/hal/esp32.py: the whole LittleFS partition and the
# NVS partition, erase verified; firmware/hal/host.py: the files shredded). Synchronous: nothing
# else may run between the wipe and the reset that must follow it (a task writing state.json
# afterwards would put an invocation counter back), so callers reset right after it returns.
from firmware import events as ev
from firmware import log
from firmware.app.config import SETUP_KEY_FILE, events_path  # noqa: F401 - events_path: API

# Files carried across the re-format (read into RAM first): the board file and the start-up
# scripts, as tools/deploy.py copies them, and lib/ (micropython-lib modules such as umqtt).
# None of them holds a secret; config.json and state.json are not in the list on purpose.
KEEP = ("board.json", "boot.py", "main.py", "lib")
DONE = "FACTORY RESET DONE"  # run() prints it with the report (JSON) before the reset


def secret_files(cfg, config_path):
    """Every file that may hold a secret or an invocation counter (what the host HAL shreds; the
    device erases the whole filesystem instead): the configuration, the state file (invocation
    counters), the event log and the setup page's access-point key."""
    from firmware.store.state import beside

    st = cfg["store"]["state_path"]
    evp = events_path(cfg)
    return (config_path, config_path + ".tmp", st, st + ".tmp", evp + ".0", evp + ".1",
            beside(st, SETUP_KEY_FILE))


# Byte strings found in every copy of config.json and state.json, current or superseded: the
# names of the secret keys (SECRET_KEYS, the MQTT and web passwords: '"password"') and of the
# invocation counter. The blocks holding one are erased before the others (firmware/hal/wipe.py).
_KEY_MARKERS = (b'password"', b'_psk"', b'route_b_id"', b'_ek"', b'_ak"', b'_ic"')


def markers(cfg):
    """_KEY_MARKERS and the configured secrets' values (a value a file split from its key)."""
    from firmware.app.config import SECRET_KEYS

    out = list(_KEY_MARKERS)
    for sect in cfg.values():
        if not isinstance(sect, dict):
            continue
        for k, v in sect.items():
            if (k in SECRET_KEYS or k.endswith("password")) and isinstance(v, str) and \
                    len(v) >= 4:
                out.append(v.encode())
    return out


def reset(hal, cfg, keep_metering=True, config_path="config.json"):
    """Wipe every secret; erase the interval log too unless keep_metering; record FACTORY_RESET
    (detail 1 = metering data kept, 0 = erased) in the new event log. Returns a report dict:
    nvs (blocks erased), filesystem (the HAL's: blocks erased and files kept on the device,
    files shredded on the host), store (blocks erased, or None when kept), event (its sequence
    number, or None if it could not be stored). Raises FlashError if an erase does not verify.
    The caller must reset the device next (hal.reset()), without awaiting anything first."""
    from firmware.store.eventlog import EventLog

    log.warn("factory", "factory reset: erasing every secret%s"
             % ("" if keep_metering else " and the metering data"))
    report = {}
    # NVS first, then the filesystem: a power cut part-way leaves the fewest secrets behind
    report["nvs"] = hal.erase_nvs()
    report["filesystem"] = hal.wipe_filesystem(KEEP, secret_files(cfg, config_path),
                                               markers(cfg))
    report["store"] = None if keep_metering else hal.erase_store()
    cap = cfg["events"]["capacity"]
    lg = EventLog(events_path(cfg), cap if 1 <= cap <= 4096 else 256, hal.clock, burst=0)
    lg.mount()
    report["event"] = lg.record(ev.FACTORY_RESET, 1 if keep_metering else 0)
    log.warn("factory", "factory reset done: %r" % (report,))
    return report


def run(keep_metering=True, board_path="board.json", config_path="config.json", restart=True):
    """REPL entry: load the board file and the configuration, wipe, print the report, reset the
    device (restart=False: the caller resets, as tools/factory_reset.py does with mpremote).
        from firmware.app import factory; factory.run()                    # metering data kept
        from firmware.app import factory; factory.run(keep_metering=False) # erased too"""
    from firmware import hal as halmod
    from firmware.app import config as cfgmod

    cfg = cfgmod.load(config_path)
    hal = halmod.create(halmod.load_board(board_path), cfg)
    report = reset(hal, cfg, keep_metering, config_path)
    import json

    print(DONE + " " + json.dumps(report))
    if restart:
        hal.reset()
    return report
