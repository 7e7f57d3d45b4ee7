# All configuration defaults in one place (mqtt_as style). A JSON file overrides them per section.
# Bad entries are logged and replaced by the default: a typo must never stop metering.
#
# Choices that the (non-public) IoT-route application spec would decide are marked SPEC: they are
# configurable, with the default documented in docs/configuration.md.
import json

from firmware import log

KEEP_DEFAULT = 1  # problem severity: logged, the key's default is used
SETUP = 2  # problem severity: the device enters setup mode (metering and radio not started)

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
    # Safe boot (docs/product.md): a boot loop ends in safe mode (metering and radio paused,
    # REPL and setup page up).
    "safeboot": {
        # Boots in a row that each ended (reset, crash, power cut) before stable_s of uptime:
        # this many, and the next boot is in safe mode. The window is max_resets x stable_s of
        # uptime (the device has no calendar across a reset to measure minutes with).
        "max_resets": 4,
        # Uptime (real seconds, ticks) after which a normal boot counts as stable.
        "stable_s": 300,
    },
    # Persistent counters (firmware/store/counters.py, docs/product.md "Counters"): written to
    # flash at each boot and then every persist_s seconds of uptime (flash wear).
    "counters": {
        "persist_s": 3600,
    },
    # The device's web server (docs/product.md): setup page in setup/safe mode, status page and
    # JSON API when enabled. Off in the field profile.
    "web": {
        "enabled": False,
        # status page and JSON API (firmware/app/web.py): HTTP Basic with this password (any
        # user name); enabled with an empty password serves nothing (an ERROR says why)
        "port": 80,
        "password": "",  # secret
        "bind": "",  # "" = the HAL's choice (host: lan.bind_ip; ESP32: every interface)
        # Setup page (firmware/app/setup.py): the setup access point's name ("" = IoT-terminal-
        # and the last 4 hex digits of its MAC), its WPA2 key (secret; "" = a random 12-character
        # key made at the first setup, kept in the state dir, shown on the serial console) and
        # the page's TCP port; after a successful setup the result stays readable this long,
        # then the device restarts with the new configuration.
        "setup_ssid": "",
        "setup_psk": "",
        "setup_port": 80,
        "setup_restart_s": 60,
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
    # The event log (docs/events.md): two segment files on the filesystem (LittleFS on the
    # device), each of `capacity` 24-byte events; the newest `capacity` are always kept.
    "events": {
        "path": "",  # "" = "events" next to store.state_path (files path.0 and path.1)
        "capacity": 256,
        "burst": 8,  # events of one code stored back to back before the flood limit (0 = none)
        "refill_s": 300,  # then one more every refill_s seconds
    },
}

SECRET_KEYS = ("wifi_psk", "pana_password", "route_b_id", "lls_password", "mgmt_password",
               "mgmt_ek", "mgmt_ak", "reader_ek", "reader_ak",
               "password", "setup_psk")  # web.password, web.setup_psk


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


# Problems merge() found in the file (unknown keys, wrong types): check() returns them too.
_merged = []


def _problem(out, severity, where, msg):
    out.append((severity, where, msg))


def merge(overrides):
    """DEFAULTS updated with a dict of per-section overrides; bad entries logged and skipped
    (and kept for check() as KEEP_DEFAULT problems)."""
    cfg = {}
    comp = _component_defaults()
    probs = _merged
    del probs[:]
    for sect, defaults in DEFAULTS.items():
        cfg[sect] = dict(comp.get(sect, {}))
        cfg[sect].update(defaults)
    if not isinstance(overrides, dict):
        log.error("config", "top level must be an object; using defaults")
        _problem(probs, KEEP_DEFAULT, "", "the file must hold one JSON object; defaults used")
        return cfg
    for sect, values in overrides.items():
        if sect == "commission":
            continue  # read by the commissioning command only (firmware/app/commission.py)
        if sect not in cfg:
            log.warn("config", "unknown section '%s' ignored" % sect)
            _problem(probs, KEEP_DEFAULT, str(sect)[:32], "unknown section; ignored (a typo?)")
            continue
        if not isinstance(values, dict):
            log.error("config", "section '%s' must be an object; using defaults" % sect)
            _problem(probs, KEEP_DEFAULT, sect, "must be an object of keys; defaults used")
            continue
        for key, val in values.items():
            if key in SECRET_KEYS and isinstance(val, str):
                log.add_secret(val)
            if key not in cfg[sect]:
                log.warn("config", "unknown key %s.%s ignored" % (sect, key))
                _problem(probs, KEEP_DEFAULT, "%s.%s" % (sect, str(key)[:32]),
                         "unknown key; ignored (a typo? docs/config-reference.md lists the keys)")
                continue
            want = type(cfg[sect][key])
            if not same_type(val, cfg[sect][key]):
                # text, lists and objects are not echoed: a credential typed into the wrong key
                # is not registered as a secret yet
                shown = "***" if key in SECRET_KEYS or isinstance(val, (str, list, dict)) \
                    else repr(val)
                log.error(
                    "config",
                    "%s.%s = %s is not a %s; keeping default" % (sect, key, shown, want.__name__),
                )
                _problem(probs, KEEP_DEFAULT, "%s.%s" % (sect, key), "is a %s, expected a %s; "
                         "default kept" % (type(val).__name__, want.__name__))
                continue
            cfg[sect][key] = val
    return cfg


# -- configuration check (docs/configuration.md "Configuration check") ------------------------
# The rule of each checked key, one line "section.key rule": the single source of the check
# (firmware/app/cfgcheck.py, imported at boot only) and of the generated reference
# (tools/config_doc.py -> docs/config-reference.md). One string: frozen on the device it costs no
# heap at all. A rule is
#   lo..hi         an int range, both included
#   a|b|c          the allowed values (ints when they are numbers)
#   format         a named text format: ipv4, hex, hex16, mac, key (32 hex digits), id
#                  (credentials.check_id), password (check_password per radio.credential_format),
#                  ssid, psk (only on a Wi-Fi board), ldn (16 printable), obis; "?" after it: ""
#                  is allowed too
# A leading "!": a bad value enters setup mode (SETUP); otherwise it is logged and the key's
# default kept (KEEP_DEFAULT). Keys without a line are checked for their type only (merge).
SCHEMA = """
clock.rate 1..1000000
clock.adjust_flag_s 0..86400
clock.slew_max_s 0..3600
clock.slew_div 2..1000
clock.hold_max_s 0..3600
clock.doubtful_after_s 0..315360000
clock.set_meter_min_s 60..31536000
clock.set_meter_drift_s 1..3600
clock.ntp_server ipv4?
clock.ntp_port 1..65535
clock.ntp_every_s 60..604800
clock.ntp_timeout_ms 100..10000
lan.kind host|wifi|ethernet
lan.bind_ip ipv4
lan.wifi_ssid !ssid
lan.wifi_psk !psk
lan.static_ip ipv4?
lan.netmask ipv4
lan.gateway ipv4?
lan.dns ipv4?
meter.ip ipv4?
meter.port 1..65535
meter.eoj 0..16777215
meter.tz_offset_min -720..840
meter.timeout_ms 1..600000
meter.retries 0..20
meter.read_delay_s 0..1740
meter.retry_every_s 1..1800
meter.give_up_after_s 1..1799
meter.backfill_recent_days 0..45
meter.device_type hex?
meter.metered_id hex?
meter.max_batch 1..64
meter.history_retries 0..20
meter.poison_hold_ms 0..86400000
radio.family auto|j11|skstack|skstack-dse
radio.credential_format broute|free
radio.route !han|b
radio.mode 2|3|5
radio.channel 4..17
radio.pan_id -1..65535
radio.sm_mac !mac?
radio.pana_password !password
radio.route_b_id !id?
radio.udp_port 1..65535
radio.scan_duration 1..14
radio.scan_max_duration 1..14
radio.tx_power 0..2
radio.liveness_s 0..86400
radio.pana_lifetime_s 0..86400
radio.bulk_reserve_pct 0..100
dlms.ldn ldn
dlms.energy_scaler -3..7
dlms.energy_type u64|u32
dlms.reader_mechanism lls|gmac
dlms.mgmt_mechanism gmac|lls
dlms.system_title hex16
dlms.reader_title hex16?
dlms.mgmt_title hex16?
dlms.reader_ek key?
dlms.reader_ak key?
dlms.mgmt_ek key?
dlms.mgmt_ak key?
dlms.backfill_status_bit 0..255
dlms.max_pdu 64..65535
push.port 1..65535
push.retries 0..255
push.rate_per_min 1..60000
push.burst 1..10000
push.backlog_slots 0..100000
web.port 1..65535
web.bind ipv4?
web.setup_psk psk?
web.setup_port 1..65535
web.setup_restart_s 1..3600
mqtt.port 0..65535
mqtt.status_every_s 10..86400
mqtt.keepalive_s 0..65535
mqtt.timeout_ms 100..60000
mqtt.persist_every 1..1000
mqtt.backlog_slots 0..100000
push.persist_every 1..100000
push.obis obis
push.protect auto|none
safeboot.max_resets 2..100
safeboot.stable_s 10..86400
counters.persist_s 60..86400
events.capacity 1..4096
events.burst 0..255
events.refill_s 1..86400
"""


# The setup page's generated access-point key (a secret), next to store.state_path: the setup page
# writes it, the factory reset shreds it on the host.
SETUP_KEY_FILE = "setup_key"


def events_path(cfg):
    """The event log's path: events.path, or "events" next to store.state_path (the terminal,
    safe/setup mode and the factory reset alike)."""
    from firmware.store.state import beside

    return cfg["events"]["path"] or beside(cfg["store"]["state_path"], "events")


def check(cfg, net_kind=None):
    """The problems of a merged configuration: firmware.app.cfgcheck.check."""
    from firmware.app import cfgcheck

    return cfgcheck.check(cfg, net_kind)


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
