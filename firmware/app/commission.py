# Commissioning report: what an installer runs once the terminal is mounted, to confirm that it
# reaches the smart meter (guideline: the installer confirms reachability). It joins, measures
# the signal, the join time and a DLMS round trip to the smart meter, and prints PASS/FAIL with
# reasons an installer can act on. Pure: it takes a radio session (firmware/radio/session.py),
# the calendar clock and an output function; tools/commission.py and the REPL (main()) wire it.
#
# On the device (docs/commissioning.md): interrupt the terminal at the REPL (Ctrl-C), then
#   import firmware.app.commission as c; c.main()
# builds the radio with the terminal's own methods from board.json and config.json through the
# HAL, prints the report and returns "PASS" or "FAIL".
import asyncio

from firmware import log
from firmware.compat import sleep_ms, ticks_diff, ticks_ms, wait_ms
from firmware.cosem import probe
from firmware.radio import j11

_TAG = "commission"

DEFAULTS = {
    "join_timeout_s": 300,  # a full scan at duration 9 is ~70 s; PANA up to 60 s; plus retries
    # this many scans in a row that heard no smart meter end the join early (durations 6..9 by
    # default: ~130 s of listening on every channel); 0 = wait for join_timeout_s
    "empty_scans": 4,
    "rssi_good_dbm": -85,  # at or above: PASS
    "rssi_min_dbm": -95,  # below: FAIL (Wi-SUN 100 kbit/s sensitivity is about -100 dBm)
    "dlms_port": 4059,
    "client_sap": 16,  # public client (SPEC: the smart meter's client/server SAPs are not public)
    "server_sap": 1,
    "reply_timeout_s": 10,
    "tries": 3,
    "rtt_good_ms": 2000,
    "clock_tolerance_s": 60,  # terminal clock vs smart meter clock, when the terminal's is set
    "deviation_sign": -1,
    "offset_min": 540,
}

MAX_UDP = 256  # the probe's replies are < 64 bytes; larger datagrams are dropped by the driver
_SECTION = "commission"  # the configuration file's section (read here, ignored by the terminal)

PASS = "PASS"
WARN = "WARN"
FAIL = "FAIL"


def _join_reason(session):
    st = session.stats
    state = session.state
    err = st.get("last_error") or ""
    if state == "auth_failed":
        if st.get("auth_failed"):
            return ("the smart meter rejected the terminal's credentials: check the Wi-SUN ID and "
                    "password in the configuration against the utility's registration")
        return "no Wi-SUN credentials configured: set radio.pana_password"
    if "scan" in err or "beacon" in err:
        return ("no smart meter heard on any channel: check the antenna, move the terminal or "
                "the antenna nearer the smart meter, check the pairing ID / PAN ID")
    if "PANA" in err:
        return ("the smart meter was heard but did not complete authentication: the signal is "
                "too weak or the terminal is not registered at the smart meter yet")
    if "timeout" in err or st.get("module_timeouts"):
        return ("the Wi-SUN module does not answer: check its power, the UART wiring (TX/RX "
                "crossed) and the baud rate")
    return "not joined (%s, last error: %s)" % (state, err or "none")


def _scans_exhausted(session, cfg):
    """True once `empty_scans` scans have ended and the last heard no smart meter: an installer
    should not wait out the whole join timeout for "no smart meter heard"."""
    n = cfg["empty_scans"]
    st = session.stats
    return (n > 0 and st.get("scans", 0) >= n and session.state != "scanning"
            and "beacon" in (st.get("last_error") or ""))


class Report:
    def __init__(self, out):
        self.out = out
        self.checks = []

    def add(self, name, verdict, detail):
        self.checks.append((name, verdict, detail))
        self.out("%-10s %-4s %s" % (name, verdict, detail))

    def verdict(self):
        for _n, v, _d in self.checks:
            if v == FAIL:
                return FAIL
        return PASS


async def _exchange(session, dst, cfg, apdu, check):
    """Send one request, return (reply value, round-trip ms) or raise probe.ProbeError."""
    req = probe.wpdu(cfg["client_sap"], cfg["server_sap"], apdu)
    last = "no reply"
    for _ in range(cfg["tries"]):
        t0 = ticks_ms()
        if not await session.send(dst, cfg["dlms_port"], req):
            last = "the radio did not send the request"
            continue
        limit = cfg["reply_timeout_s"] * 1000
        while True:
            left = limit - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                break
            try:
                _src, sport, _dport, payload = await wait_ms(session.recv(), left)
            except asyncio.TimeoutError:
                break
            if sport != cfg["dlms_port"]:
                continue
            rtt = ticks_diff(ticks_ms(), t0)
            return check(payload), rtt
        last = "no reply within %d s" % cfg["reply_timeout_s"]
    raise probe.ProbeError(last)


async def run(session, clock, config=None, out=print):
    """Join, measure, probe; returns (verdict, checks). Starts and stops session.run()."""
    cfg = dict(DEFAULTS)
    cfg.update(config or {})
    rep = Report(out)
    out("commissioning: joining the smart meter (up to %d s)" % cfg["join_timeout_s"])
    t0 = ticks_ms()
    task = asyncio.create_task(session.run())
    try:
        limit = cfg["join_timeout_s"] * 1000
        while not session.is_ready() and ticks_diff(ticks_ms(), t0) < limit:
            if session.state == "auth_failed" or _scans_exhausted(session, cfg):
                break
            await sleep_ms(100)
        if not session.is_ready():
            rep.add("join", FAIL, _join_reason(session))
            out("commissioning: %s" % FAIL)
            return FAIL, rep.checks
        join_ms = ticks_diff(ticks_ms(), t0)
        st = session.stats
        rep.add("join", PASS, "joined in %d.%d s on channel %s (%d scans)"
                % (join_ms // 1000, join_ms % 1000 // 100, session.channel, st.get("scans", 0)))
        if st.get("rssi") is None:
            # no scan (the smart meter configured or remembered): the module reports the RSSI
            # with the first datagram it receives, so the round trip comes first
            await _dlms(rep, session, clock, cfg)
            _signal(rep, session.stats, cfg)
        else:
            _signal(rep, st, cfg)
            await _dlms(rep, session, clock, cfg)
    finally:
        task.cancel()
        try:
            await task
        except BaseException:  # the session task ends by cancellation here
            pass
    v = rep.verdict()
    out("commissioning: %s" % v)
    return v, rep.checks


def _signal(rep, st, cfg):
    rssi = st.get("rssi")
    lqi = st.get("lqi")
    extra = "" if lqi is None else ", LQI %d" % lqi
    if rssi is None:
        rep.add("signal", WARN, "the module reported no RSSI" + extra)
    elif rssi >= cfg["rssi_good_dbm"]:
        rep.add("signal", PASS, "RSSI %d dBm%s" % (rssi, extra))
    elif rssi >= cfg["rssi_min_dbm"]:
        rep.add("signal", WARN, "RSSI %d dBm%s: marginal, expect retries; a better antenna "
                "position is advised" % (rssi, extra))
    else:
        rep.add("signal", FAIL, "RSSI %d dBm%s: too weak for a reliable link (need >= %d dBm); "
                "move the terminal or its antenna" % (rssi, extra, cfg["rssi_min_dbm"]))


async def _dlms(rep, session, clock, cfg):
    dst = j11.link_local_of_mac(session.peer_mac)
    cs, ss = cfg["client_sap"], cfg["server_sap"]
    try:
        refused, rtt = await _exchange(session, dst, cfg, probe.AARQ,
                                       lambda p: probe.check_aare(p, cs, ss))
        if refused:
            rep.add("dlms", FAIL, "the smart meter answered but %s" % refused)
            return
        sm_t2k, rtt2 = await _exchange(
            session, dst, cfg, probe.GET_CLOCK,
            lambda p: probe.parse_clock(p, cs, ss, cfg["deviation_sign"], cfg["offset_min"]))
        await _exchange(session, dst, cfg, probe.RLRQ, lambda p: probe.check_rlre(p, cs, ss))
    except probe.ProbeError as e:
        rep.add("dlms", FAIL, "no DLMS round trip to the smart meter: %s" % e)
        log.warn(_TAG, "DLMS probe failed: %s" % e)
        return
    worst = max(rtt, rtt2)
    v = PASS if worst <= cfg["rtt_good_ms"] else WARN
    rep.add("dlms", v, "association %d ms, clock read %d ms" % (rtt, rtt2))
    now = clock.now_t2k() if clock is not None else None
    if now is None:
        rep.add("clock", PASS, "smart meter clock read; the terminal's clock is not set yet "
                "(the smart meter sets it)")
    else:
        d = now - sm_t2k
        ok = -cfg["clock_tolerance_s"] <= d <= cfg["clock_tolerance_s"]
        rep.add("clock", PASS if ok else WARN, "terminal clock %+d s from the smart meter's" % d)


def settings(section):
    """The commission settings: DEFAULTS with the integers of `section` (the configuration
    file's "commission" object) that replace a default; anything else is logged and skipped."""
    cfg = dict(DEFAULTS)
    if not isinstance(section, dict):
        if section is not None:
            log.error(_TAG, "config section commission must be an object; using defaults")
        return cfg
    for k, v in section.items():
        if k not in cfg or isinstance(v, bool) or not isinstance(v, int):
            log.warn(_TAG, "commission.%s ignored (unknown or not an integer)" % k)
            continue
        cfg[k] = v
    return cfg


def _section(config_path):
    import json

    try:
        with open(config_path) as f:
            return json.load(f).get(_SECTION)
    except (OSError, ValueError, AttributeError):
        return None  # config.load has said what is wrong with the file


async def _feed(hal):
    while True:  # the board's watchdog (armed by boot.py) keeps running through the join
        hal.feed_watchdog()
        await sleep_ms(1000)


class _RadioBuild:
    """What the terminal's radio methods read (Terminal._detect_radio, Terminal._radio_link): its
    HAL's radio UART, the radio section, the largest datagram. Commissioning builds the radio with
    those very methods, so it joins exactly as the terminal will, and the terminal carries no
    extra code for it (its heap has none to spare: docs/memory.md)."""

    def __init__(self, uart, r, max_udp):
        self.hal = self
        self.radio_uart = uart
        self.cfg = {"radio": r}
        self.server = self
        self.max_wpdu = max_udp
        self._radio_family = None


async def build_session(uart, r, max_udp=MAX_UDP):
    """A RadioSession over the driver of r["family"] (detected when "auto"), built the terminal's
    way. uart: a callable giving the UART (called once, or twice when the family is detected, as
    in the terminal)."""
    from firmware.app.terminal import Terminal
    from firmware.radio.session import RadioSession

    b = _RadioBuild(uart, r, max_udp)
    await Terminal._detect_radio(b)
    return RadioSession(Terminal._radio_link(b, r), r)


async def run_with_hal(hal, cfg, checks_cfg, out=print):
    """Build the driver and session from cfg["radio"] over the HAL's radio UART and run the
    checks; (verdict, checks)."""
    feeder = asyncio.create_task(_feed(hal))
    try:
        session = await build_session(hal.radio_uart, cfg["radio"])
        return await run(session, hal.clock, checks_cfg, out)
    finally:
        feeder.cancel()


def main(board_path="board.json", config_path="config.json", out=print):
    """The REPL command: commissioning with the device's own board and configuration files;
    returns "PASS" or "FAIL" (the report is printed line by line)."""
    from firmware import hal as halmod
    from firmware.app import config as cfgmod

    cfg = cfgmod.load(config_path)  # secrets registered with the log: never printed
    hal = halmod.create(halmod.load_board(board_path), cfg)
    verdict, _checks = asyncio.run(run_with_hal(hal, cfg, settings(_section(config_path)), out))
    return verdict
