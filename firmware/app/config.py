# All configuration defaults in one place (mqtt_as style). A JSON file overrides them per section.
# Bad entries are logged and replaced by the default: a typo must never stop metering.
#
# Choices that the (non-public) IoT-route application spec would decide are marked SPEC: they are
# configurable, with the default documented in docs/configuration.md.
import json

from firmware import log

DEFAULTS = {
    "terminal": {
        # Log the heap at each start-up milestone and its peak while serving a profile read or
        # backfilling a day (tools/heap_scenario.py; costs a gc.collect() per block when on).
        "heap_log": False,
        # With heap_log: the heap's block map (micropython.mem_info(1)) at each milestone and new
        # peak, for tools/heapmap.py (what kind of object holds the heap).
        "heap_map": False,
    },
    "clock": {
        # Host only: calendar acceleration (1 = real time). Timeouts always use real ticks.
        "rate": 1,
        # A clock step larger than this (seconds) marks the next record "clock adjusted".
        "adjust_flag_s": 10,
        # Discipline (docs/clock.md). An offset up to slew_max_s is slewed at 1 s per
        # slew_div s of calendar time (0 = every set steps); a larger one steps, waiting up to
        # hold_max_s (real seconds) for a capture in progress to finish.
        "slew_max_s": 60,
        "slew_div": 10,
        "hold_max_s": 60,
        # IC 8 clock status "doubtful" (0x02) after this long without a set (0 = never).
        "doubtful_after_s": 172800,
        # SPEC: set the meter's clock over ECHONET (0x98 + 0xDA/0x97, where its Set map 0x9E
        # lists them) after a smart-meter set, when it is off by more than set_meter_drift_s;
        # checked at most every set_meter_min_s calendar seconds (docs/clock.md section 6).
        "set_meter": False,
        "set_meter_min_s": 86400,
        "set_meter_drift_s": 5,
        # SPEC: NTP over the LAN while the smart meter has not set the clock since boot, or
        # not for doubtful_after_s; ntp_server is an address (a name costs a blocking DNS
        # lookup on the ESP32), queried every ntp_every_s (docs/clock.md section 6).
        "ntp": False,
        "ntp_server": "",
        "ntp_port": 123,
        "ntp_every_s": 3600,
        "ntp_timeout_ms": 2000,
    },
    "lan": {
        "kind": "host",  # host | wifi | ethernet (ESP32 HAL)
        "bind_ip": "127.0.0.1",
        "wifi_ssid": "",
        "wifi_psk": "",  # secret; 8 to 63 characters (or 64 hex digits), else no join
        # Join an access point that offers WPA and WPA2 together (see docs/configuration.md)
        "wifi_allow_wpa_wpa2_mixed": False,
        "static_ip": "",  # "" = DHCP; else IPv4 address with netmask/gateway/dns below
        "netmask": "255.255.255.0",
        "gateway": "",
        "dns": "",
    },
    "meter": {
        "ip": "127.0.0.2",
        "port": 3610,
        "eoj": 0x028E01,
        "tz_offset_min": 540,  # meter local time minus UTC (JST)
        "timeout_ms": 5000,
        "retries": 3,
        # Calendar seconds after a :00/:30 boundary before the fixed-time values are read, then
        # how often (calendar seconds) to retry while the meter has not published the new slot.
        "read_delay_s": 60,
        "retry_every_s": 120,
        "give_up_after_s": 1740,  # E6/E7 move on to the next boundary at +1800 s
        # Backfill from the meter's day histories: a full pass (whole 0xD3 retention) at start,
        # after a meter outage and after a radio rejoin; the last `backfill_recent_days` after
        # every boundary.
        "backfill_recent_days": 1,
        # Several meter objects on one node: select by 0xD0 device type / 0xD6 metered-device ID
        # (hex text, e.g. "027E00"); empty = the configured eoj as it is.
        "device_type": "",
        "metered_id": "",
        "max_batch": 16,  # EPCs per Get until the meter shows a smaller capacity
        "history_retries": 3,  # another controller moved 0xD5 between SetC and Get
        "poison_hold_ms": 3600000,  # an EPC that silences the meter is not asked for this long
        # 1:N: one entry per meter, each a dict of overrides of this section ("ip", "eoj",
        # "device_type" (0xD0, hex text), "metered_id" (0xD6, hex text)). Empty: one meter, as
        # configured by this section. An empty "ip" leaves the address to discovery.
        "list": [],
    },
    # "radio" and "dlms" take their defaults from the components themselves (single source of
    # truth, see _component_defaults); only the keys below are added or changed here.
    "radio": {
        "uart": "",  # host: pty path of the module emulator; ESP32: see boards/*.json
        # the module: "auto" detects it at boot (J11 when detection fails), "j11", "skstack"
        # (single-hop: BP35A1, RL7023 IPS) or "skstack-dse" (dual stack: BP35C2, RL7023 DSS)
        "family": "auto",
        # SPEC: format of radio.route_b_id / radio.pana_password (firmware/app/credentials.py):
        # "broute" = 32 hex digits + 12 letters/digits (the guideline's QR code), "free" = 8..64
        # printable ASCII password
        "credential_format": "broute",
    },
    "dlms": {
        # SPEC: OBIS codes (partial overrides of firmware.cosem.profile.DEFAULT_OBIS)
        "obis": {},
        "ldn": "XXX0000000000001",  # COSEM logical device name (FLAG id + 13 characters)
        "device_id": "000000000000",
        # SPEC: the public client (no authentication) may set our clock. Off: only the
        # management client may (issue 9); the simulation turns it on for its public head-end.
        "public_clock_write": False,
        # SPEC: +A/-A (registers and profile) in 10^energy_scaler Wh (-3..7; 0 = Wh, 3 = kWh),
        # every record converted exactly from its own ECHONET unit; "u64" long64-unsigned or
        # "u32" double-long-unsigned for every value (docs/dlms.md "Values and scaler")
        "energy_scaler": 0,
        "energy_type": "u64",
        "backfill_status_bit": 0x40,  # SPEC: profile status bit of values from meter history
    },
    # Push of every slot (docs/dlms.md "Push", firmware/app/push.py).
    "push": {
        # SPEC: the IoT-route spec is not public; push is off until the utility asks for it.
        "enabled": False,
        "destination": "smart-meter",  # IPv6 text, or "smart-meter" = the peer the radio joined
        "port": 4059,
        "client_sap": 1,  # destination wPort of the WPDU
        "window": [],  # [["HH:MM", "HH:MM"], ...] local time; [] = at any time
        "randomisation_s": 10,  # first send after an idle queue waits a random 0..this many s
        "retries": 3,  # re-sends after a failed send before the slot is given up
        "repetition_delay_s": 60,  # first back-off; doubles per failure, capped at 1 h
        "rate_per_min": 6,  # token bucket: sustained sends per minute ...
        "burst": 4,  # ... and how many may go back to back
        "backlog_slots": 2208,  # bitmap of backfilled slots below the cursor: 46 d, 276 B/meter
        "persist_every": 8,  # floor advanced this many slots -> one state file write
        "seed": 0,  # randomisation seed; 0 = from the boot's ticks
        "obis": "0.0.25.9.0.255",
        # "auto": general-glo-ciphered (suite 0, authenticated encryption) with the management
        # client's keys when it has keys, else plain; "none": always plain (SPEC)
        "protect": "auto",
    },
    "discovery": {
        "multicast": True,  # search/announce on 224.0.23.0 (off on the host simulation)
        "search_min_ms": 5000,  # multicast search period while no meter is known
        "search_ms": 600000,  # ... and once one is
        "check_ms": 60000,  # unicast liveness check of the known meter
        "rejoin_ms": 300000,  # periodic re-join of the multicast group (IGMP)
        "miss_limit": 3,
    },
    "ratelimit": {
        "rate_per_s": 20,  # datagrams per second per source on port 3610
        "burst": 40,
        "max_sources": 8,
        "total_per_s": 60,  # shared by every source not in the table
        "total_burst": 120,
    },
    # Progress watchdog (docs/architecture.md): the hardware WDT (board watchdog_ms) is fed only
    # while every watched task has made progress within its limit. 0 = derived from the meter /
    # radio timeouts (2x the longest legitimate pass).
    "watchdog": {
        "capture_ms": 0,
        "radio_ms": 0,
    },
    "store": {
        "path": "",  # host: backing file of the emulated flash ("" = RAM only)
        # Small state (boot counter, the smart meter found by the last scan), on LittleFS on the
        # device; written with temp file + rename, so a power cut leaves the old or the new one.
        "state_path": "state.json",
        "first_block": 0,
        "n_blocks": 128,  # 512 KB of 4 KB sectors
    },
    # The event log (docs/events.md): two segment files on the filesystem (LittleFS on the
    # device), each of `capacity` 24-byte events; the newest `capacity` are always kept.
    # Safe boot (docs/product.md): a boot loop ends in safe mode (metering and radio paused,
    # REPL and setup page up).
    "safeboot": {
    },
    # The device's web server (docs/product.md): setup page in setup/safe mode, status page and
    # JSON API when enabled. Off in the field profile.
    "web": {
        "enabled": False,
    },
    # MQTT telemetry with umqtt.simple (docs/product.md). Off in the field profile.
    "mqtt": {
        "enabled": False,
        "host": "",  # broker address (a name costs a blocking DNS lookup on the ESP32)
        "port": 0,  # 0 = 1883, or 8883 with tls
        "client_id": "",  # "" = "iot-terminal-" + dlms.device_id
        "user": "",  # "" = no user name and password in CONNECT
        "password": "",  # secret
        "tls": False,  # TLS; the broker's certificate verified against ca_file when given
        "ca_file": "",  # CA certificate (PEM or DER) on the device's filesystem
        "prefix": "iot-terminal",  # topics <prefix>/<device>/...; <device> = the client id
        "status_every_s": 300,  # periodic status message (real seconds)
        "keepalive_s": 120,  # MQTT keepalive; a PINGREQ every half of it while idle
        "timeout_ms": 2000,  # socket timeout of each blocking connect/publish step
        "backoff": [2, 300],  # reconnect: first wait, doubling up to the cap (seconds)
        "ha_discovery": False,  # Home Assistant MQTT discovery (retained config messages)
        "ha_prefix": "homeassistant",
        # floor advanced this many slots -> one state file write (a power cut sends up to
        # persist_every - 1 slots per meter again)
        "persist_every": 8,
        "backlog_slots": 2208,  # bitmap of backfilled slots below the cursor (46 days)
    },
    "events": {
        "path": "",  # "" = "events" next to store.state_path (files path.0 and path.1)
        "capacity": 256,
        "burst": 8,  # events of one code stored back to back before the flood limit (0 = none)
        "refill_s": 300,  # then one more every refill_s seconds
    },
}

SECRET_KEYS = ("wifi_psk", "pana_password", "route_b_id", "lls_password", "mgmt_password",
               "mgmt_ek", "mgmt_ak", "reader_ek", "reader_ak", "password")


class ConfigError(ValueError):
    pass


def same_type(val, default):
    """True if val may replace default (bools are not ints, and ints are not bools)."""
    want = type(default)
    if want is bool or isinstance(val, bool):
        return isinstance(val, bool) and want is bool
    return isinstance(val, want)


def _component_defaults():
    # Imported here, not at module level, so that loading the config stays cheap in tests.
    from firmware.cosem.server import DEFAULTS as dlms_defaults
    from firmware.radio.session import DEFAULTS as radio_defaults

    return {"radio": radio_defaults, "dlms": dlms_defaults}


def merge(overrides):
    """DEFAULTS updated with a dict of per-section overrides; bad entries logged and skipped."""
    cfg = {}
    comp = _component_defaults()
    for sect, defaults in DEFAULTS.items():
        cfg[sect] = dict(comp.get(sect, {}))
        cfg[sect].update(defaults)
    if not isinstance(overrides, dict):
        log.error("config", "top level must be an object; using defaults")
        return cfg
    for sect, values in overrides.items():
        if sect == "commission":
            continue  # read by the commissioning command only (firmware/app/commission.py)
        if sect not in cfg:
            log.warn("config", "unknown section '%s' ignored" % sect)
            continue
        if not isinstance(values, dict):
            log.error("config", "section '%s' must be an object; using defaults" % sect)
            continue
        for key, val in values.items():
            if key in SECRET_KEYS and isinstance(val, str):
                log.add_secret(val)
            if key not in cfg[sect]:
                log.warn("config", "unknown key %s.%s ignored" % (sect, key))
                continue
            want = type(cfg[sect][key])
            if not same_type(val, cfg[sect][key]):
                shown = "***" if key in SECRET_KEYS else repr(val)
                log.error(
                    "config",
                    "%s.%s = %s is not a %s; keeping default" % (sect, key, shown, want.__name__),
                )
                continue
            cfg[sect][key] = val
    return cfg


def load(path):
    """Read a JSON config file; a missing or broken file gives the defaults (logged)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        log.warn("config", "no config file at %s; using defaults" % path)
        return merge({})
    try:
        data = json.loads(text)
    except ValueError as e:
        log.error("config", "config file %s is not valid JSON (%s); using defaults" % (path, e))
        return merge({})
    return merge(data)
