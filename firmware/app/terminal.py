# The terminal: builds every component from the board and configuration and runs their tasks.
#
#   meter (ECHONET Lite over LAN) --SlotPoller--> IntervalStore (NOR flash log)
#   IntervalStore --MeterView--> COSEM objects --CosemServer--> RadioSession (any driver) --> meter
#   smart meter --DLMS SET Clock--> calendar clock --> slot boundaries
#
# Each task runs under a supervisor: an unexpected exception is logged and the task restarts after
# a capped back-off, so one failing part never stops the others (or metering).
#
# Order of start-up is a memory decision. Run from .mpy files (host, PSRAM boards) an import also
# allocates the bytecode and leaves the heap cut into small holes; frozen on the ESP32 it costs
# only module dicts and function objects. So the store is built first, then the radio and COSEM
# side, then every meter-side object (its socket waits for the LAN), all before any task runs and
# cuts the heap up with traffic (docs/memory.md).
import asyncio

from firmware import events as ev
from firmware import hal as halmod
from firmware import health, log, timeutil
from firmware.app import config as cfgmod
from firmware.app import heapmon
from firmware.app.views import MeterView
from firmware.compat import sleep_ms, ticks_diff, ticks_ms
from firmware.hal import clock as clockmod
from firmware.store import record
from firmware.store.eventlog import DETAIL_NO_OLD_TIME

_TAG = "terminal"
# Crossed slots are re-read with the clock-adjusted flag at most this far (46 days: the meter's
# history, 0xD3 <= 45 plus today) either side of the new time: a step to a wrong year must not
# flag years of backfill (docs/clock.md section 3).
_REREAD_SPAN = 46 * 48
_DETECT_MS = 3000  # radio module family detection at boot (radio.family "auto")
# who set the clock (clockmod.SOURCE_*), for the log
_SOURCE_NAMES = ("the smart meter", "the RTC kept across a reset", "NTP")


def _unload(name):
    """Drop a module used only at boot so the collector can take its globals (and, from .mpy,
    its code): sys.modules and the package attribute are its only references."""
    import sys

    if sys.modules.pop(name, None) is not None:
        pkg, _, leaf = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and leaf in getattr(parent, "__dict__", {}):
            delattr(parent, leaf)


# TASK_CRASH event detail: the supervised task's number (docs/events.md). Named tasks are their
# position here + 1; "meter<k>" is 64 + k and "backfill<k>" 96 + k; any other name 255.
TASK_NUMBERS = ("radio", "dlms", "terminal", "lan", "meters", "push", "ntp", "echonet",
                "discovery", "meterclock", "web", "telemetry")
_crash_sink = None  # callable(name) the terminal sets: counts and records a crash


def task_number(name):
    if name in TASK_NUMBERS:
        return TASK_NUMBERS.index(name) + 1
    for prefix, base in (("meter", 64), ("backfill", 96)):
        k = name[len(prefix):]
        if name.startswith(prefix) and k and k.isdigit() and int(k) < 32:
            return base + int(k)
    return 255


def set_crash_sink(fn):
    global _crash_sink
    _crash_sink = fn


async def supervise(name, start, backoff_ms=1000, max_backoff_ms=60000):
    delay = backoff_ms
    while True:
        t0 = ticks_ms()
        health.HEALTH.rest(name)  # (re)started: watched again from its next beat
        try:
            await start()
            log.warn(name, "task returned; restarting")
        except Exception as e:
            log.exc(name, "task crashed; restarting in %d ms" % delay, e)
            sink = _crash_sink
            if sink is not None:
                try:
                    sink(name)
                except Exception as e2:  # noqa: BLE001 - the restart matters more
                    log.exc(name, "crash not recorded", e2)
        if ticks_diff(ticks_ms(), t0) > max_backoff_ms:
            delay = backoff_ms  # it had run well for a while: this is a new incident
        await sleep_ms(delay)
        delay = min(delay * 2, max_backoff_ms)


class Terminal:
    def __init__(self, hal, cfg):
        from firmware.store.flashlog import FlashLog
        from firmware.store.intervals import IntervalStore

        self.hal = hal
        self.cfg = cfg
        self.clock = hal.clock
        st = cfg["store"]
        first, n = hal.flash_region()  # board file on the ESP32, store.* on the host
        self.flashlog = FlashLog(hal.blockdev(), first, n)
        # The RAM index has room for the configured meters only (8 bytes per sector each): it
        # is rebuilt from flash at every boot, so a meter added later is indexed then.
        self.store = IntervalStore(self.flashlog, max_meters=max(1, len(cfg["meter"]["list"])))
        log.info(_TAG, "store mounted: %d records of meter 0, last slot %s" % (
            self.store.count(0), self.store.last_slot(0)))
        heapmon.milestone("store mounted")
        boots = self._open_state(st["state_path"])
        self._open_counters(st["state_path"])
        self._open_events(st["state_path"], boots)
        self.channels = []
        self.bus = None
        self.poller = None
        self.server = None
        self.session = None
        self._radio_family = None  # set by _detect_radio (radio.family "auto")
        self.pusher = None  # PushScheduler when push.enabled
        self.telemetry = None  # Telemetry when mqtt.enabled (built in run())
        self.web = None  # WebServer when web.enabled (built in run())
        # suite 0's protect(apdu_mv) -> bytes|memoryview for pushed APDUs (None = plain)
        self.push_protect = None
        self.meter_clock = None  # MeterClockKeeper when clock.set_meter (docs/clock.md section 6)
        self._configure_clock(cfg["clock"])
        self.clock.add_listener(self._on_clock_set)

    def _open_state(self, path):
        from firmware.store.state import StateFile

        self.state = StateFile(path)
        boots = self.state.get("boot_count", 0) + 1  # never goes backwards: written before use
        self.state.set("boot_count", boots)
        log.info(_TAG, "boot %d" % boots)
        return boots

    def _open_counters(self, state_path):
        """Persistent counters (docs/product.md "Counters"): this boot and its reset cause, CRC
        failures the flash log's mount found, every slot the store takes."""
        from firmware.store.counters import Counters, path_for

        self.counters = c = Counters(path_for(state_path), self.cfg["counters"]["persist_s"])
        fs = self.flashlog.stats
        c.add("crc_errors", fs.get("bad_records", 0) + fs.get("bad_headers", 0))
        cause = getattr(self.hal, "reset_cause", None)
        c.boot(cause() if cause is not None else "power_on")
        self.store.put_listeners.append(c.on_put)
        set_crash_sink(self._task_crashed)

    def _open_events(self, state_path, boots):
        """The event log, and the one callable `self.event(code, detail)` every producer is
        handed (docs/events.md): the counters see each event first. Records this boot and a
        flash-log repair done by the mount."""
        self.events = open_event_log(self.cfg, state_path, self.clock)
        self.event = self._event  # bound once: handed to every producer
        self.event(ev.POWER_UP, boots)
        torn = self.flashlog.stats.get("torn_sealed", 0)
        if torn:
            self.event(ev.FLASH_SEALED, torn)

    def _event(self, code, detail=0):
        counters = getattr(self, "counters", None)
        if counters is not None:
            counters.on_event(code, detail)
        return self.events.record(code, detail)

    def _task_crashed(self, name):
        """A supervised task crashed (supervise): counted and recorded as TASK_CRASH."""
        self.event(ev.TASK_CRASH, task_number(name))

    def _radio_config(self):
        """The radio section (the session's settings; secrets stay in the config)."""
        return self.cfg["radio"]

    def _radio_cache(self):
        """(channel, pan_id, mac) of the smart meter the last join found, from the state file:
        a rejoin after a reboot then skips the scan (and scans again if that peer is gone)."""
        from firmware.radio.link import mac_bytes

        st = self.state
        mac = st.get("sm_mac")
        if not mac or self.cfg["radio"]["sm_mac"]:
            return None
        try:
            c = (st.get("channel", 4), st.get("pan_id", -1), mac_bytes(mac))
        except ValueError:
            log.warn(_TAG, "remembered smart meter MAC unreadable: scanning")
            return None
        log.info(_TAG, "smart meter %s on channel %d remembered from the last join"
                 % (mac, c[0]))
        return c

    def _remember_radio(self):
        """Keep the joined peer in the state file (written only when it changed: flash wear)."""
        c = self.session.cached
        if c is None:
            return
        from firmware.radio.link import mac_hex

        mac = mac_hex(c[2])
        st = self.state
        if st.get("sm_mac") == mac and st.get("channel") == c[0] and st.get("pan_id") == c[1]:
            return
        st.update({"sm_mac": mac, "channel": c[0], "pan_id": c[1]})

    async def _detect_radio(self, detect_family=None):
        """radio.family "auto": ask the module which family it is (firmware.radio.detect), once
        at boot before anything is built; J11 when detection fails or the build lacks it.
        detect_family: tests pass their own."""
        from firmware.radio import link

        family = self.cfg["radio"].get("family", "auto")
        if family != "auto":
            self._radio_family = family
            return
        if detect_family is None:
            try:
                from firmware.radio.detect import detect_family
            except ImportError:
                detect_family = None
        family = None
        if detect_family is not None:
            try:
                family = await detect_family(self.hal.radio_uart(), _DETECT_MS)
            except Exception as e:  # noqa: BLE001 - detection must never stop the radio
                log.exc(_TAG, "radio module detection failed", e)
        if family is None:
            if detect_family is None:
                log.info(_TAG, "no radio module detection in this build: J11")
            else:
                log.warn(_TAG, "radio module family not detected: assuming J11")
            family = link.FAMILY_J11
        else:
            log.info(_TAG, "radio module family: %s" % family)
        self._radio_family = family
        _unload("firmware.radio.detect")  # used once at boot: its code and globals go

    def _radio_link(self, r):
        """The driver of the module family (radio.family, or what _detect_radio found): "j11",
        "skstack" or "skstack-dse". The SKSTACK driver is imported only when chosen."""
        from firmware.radio import link

        family = self._radio_family or r.get("family", "auto")
        uart = self.hal.radio_uart()
        if family in (link.FAMILY_SKSTACK, link.FAMILY_SKSTACK_DSE):
            try:
                from firmware.radio import skstack
            except ImportError:
                log.error(_TAG, "radio.family %s: no SKSTACK driver in this build; using J11"
                          % family)
            else:
                # the radio section's deadlines, as j11_link.build gives the J11 driver
                return skstack.build(uart, r, dse=family == link.FAMILY_SKSTACK_DSE,
                                     max_udp=self.server.max_wpdu)
        elif family not in (link.FAMILY_J11, "auto"):
            log.error(_TAG, "radio.family %r unknown; using J11" % (family,))
        from firmware.radio import j11_link
        from firmware.radio.j11_module import J11Module

        # frame buffers sized to the largest DLMS datagram (wrapper + PDU), not the module's 1232
        return j11_link.build(J11Module(uart, max_udp=self.server.max_wpdu), r)

    # -- meter side --------------------------------------------------------------------------

    def _build_meter(self):
        """Every meter-side object, at boot before any task runs (its buffers and large
        instance dicts then come from an unfragmented heap); the socket follows in _attach_lan."""
        from firmware.app.meters import MeterBus, MeterChannel
        from firmware.meter.client import MeterClient
        from firmware.meter.discovery import Discovery
        from firmware.meter.node import NodeResponder
        from firmware.meter.ratelimit import RateLimiter

        cfgs = self.meter_cfgs
        port = cfgs[0]["port"]
        limiter = RateLimiter(**self.cfg["ratelimit"])
        dcfg = dict(self.cfg["discovery"])
        dcfg["static_addr"] = cfgs[0]["ip"] or None
        disc = Discovery(None, dcfg)
        self.channels = []
        backfill_lock = asyncio.Lock()  # one backfill pass at a time across meters (heap)
        node = NodeResponder()  # our one ECHONET node, whichever meter's socket asks it
        for k in range(len(cfgs)):
            c = cfgs[k]
            client = MeterClient(None, (c["ip"], port), c, node, tag="echonet%d" % k)
            client.rate_limiter = limiter
            client.listener = disc
            client.event = self.event  # meter reset / replaced / counter wrap
            client.meter_index = k
            if c["ip"]:
                limiter.pin(c["ip"])  # the meter never shares the strangers' budget
            ch = MeterChannel(k, client, self.clock, self.store, c, backfill_lock)
            ch.planner.event = self.event  # backfill done
            ch.poller.event = self.event  # unit change (the capture loop reports it)
            self.channels.append(ch)
        self.bus = MeterBus(None, self.channels, disc)
        self.discovery = disc
        if self.cfg["clock"]["set_meter"]:
            from firmware.app.meterclock import MeterClockKeeper

            self.meter_clock = MeterClockKeeper(self.clock, self.channels, self.cfg["clock"],
                                                self.cfg["meter"]["tz_offset_min"], self.event)
        # compatibility: the first meter under its old names
        self.poller = self.channels[0].poller
        log.info(_TAG, "%d meter(s) configured" % len(self.channels))

    def _attach_lan(self):
        """Once the LAN is up: the ECHONET socket, our own address, the watch on capture."""
        ep = self.hal.lan_udp(self.meter_cfgs[0]["port"])
        disc = self.discovery
        disc.ep = ep
        disc.own_ip = self.hal.lan_ip()  # our frames come back by multicast: ignore them
        disc.iface_ip = disc.own_ip or "0.0.0.0"
        self.bus.ep = ep
        for ch in self.channels:
            ch.client.ep = ep
            c = ch.cfg
            # capture pass: (1 + retries) x timeout per Get, up to ~16 Gets for a half-silent meter
            health.HEALTH.expect("meter%d" % ch.index, self.cfg["watchdog"]["capture_ms"]
                                 or 2 * 16 * (1 + c["retries"]) * c["timeout_ms"])
        # (re)joins the multicast group, announces and searches: now, and after every reconnect
        self.lan.on_up.append(disc.link_up)
        self.lan.run_hooks()

    # -- smart-meter side --------------------------------------------------------------------

    def _build_radio(self):
        from firmware.cosem.profile import default_table
        from firmware.cosem.server import CosemServer
        from firmware.radio.session import RadioSession

        d = dict(self.cfg["dlms"])
        # IC 7 profile_entries = what the flash log keeps (21,420 records in 512 KB), so that
        # entries_in_use never exceeds it
        d["profile_entries"] = self.flashlog.capacity()
        # conformance advertises data-notification when the terminal pushes
        d["push"] = d["push"] or self.cfg["push"]["enabled"]
        views = []
        for k in range(len(self.meter_cfgs)):
            views.append(MeterView(self.store, k, backfill_bit=d["backfill_status_bit"]))
        self.server = CosemServer(default_table(views if len(views) > 1 else views[0], d,
                                                self.events), self.clock, d,
                                  aes_ecb=self.hal.aes_ecb, ic_state=self.state)
        # association failures and replays (the server reports through `event` once it has one)
        self.server.event = self.event
        r = self._radio_config()
        self.session = RadioSession(self._radio_link(r), r, event=self.event,
                                    cache=self._radio_cache())
        self._watch_radio()
        if self.cfg["push"]["enabled"]:
            self.push_protect = self._push_protection()
            self._build_push(views, d)

    def _push_protection(self):
        """push.protect: "auto" protects pushes with the management client's keys
        (general-glo-ciphering, our system title and invocation counter) when it has keys;
        "none" sends them plain. None = plain."""
        mode = self.cfg["push"].get("protect", "auto")
        if mode not in ("auto", "none"):
            log.error("push", "push.protect must be 'auto' or 'none'; using 'auto'")
            mode = "auto"
        if mode == "none" or not self.server.ciphered:
            return None
        from firmware.cosem.protection import push_protector

        protect = push_protector(self.server)
        if protect is not None:
            log.info("push", "pushes protected: general-glo-ciphering with the management keys")
        return protect

    def _build_push(self, views, d):
        """Push of every slot: the scheduler over the store, listening to its puts, and one IC 40
        push setup per meter (channel B = k + 1 with several, like the profile)."""
        from firmware.app.push import PushScheduler
        from firmware.cosem import push as cp
        from firmware.cosem.objects import CLASS_PROFILE, obis

        pc = self.cfg["push"]
        settings = cp.settings_from_config(pc)
        enc = cp.DataNotificationEncoder(self.server, d["server_sap"], self.push_protect,
                                         fmt=self.server.table.energy)
        self.pusher = PushScheduler(views, settings, enc, self.clock, pc, self.state,
                                    lambda code, detail=0: self.event(code, detail))
        self.store.put_listeners.append(self.pusher.on_put)
        table = self.server.table
        # the load profiles (capture period 1800 s), not the event log (asynchronous: 0)
        profiles = [o for o in table.objects
                    if o.class_id == CLASS_PROFILE and o.capture_period]
        try:
            ln = obis(pc["obis"])
        except ValueError as e:
            log.error("push", "push.obis: %s; using %s" % (e, cp.DEFAULT_OBIS))
            ln = obis(cp.DEFAULT_OBIS)
        for k in range(len(profiles)):
            b = bytearray(ln)
            if len(profiles) > 1:
                b[1] = k + 1
            # the pushed row is the profile's row: its capture objects are the push list
            table.add(cp.PushSetupObject(bytes(b), profiles[k]._columns, settings,
                                         self.pusher.trigger))
        log.info("push", "pushing every slot to %s port %d (client SAP %d)"
                 % (settings.destination, settings.port, settings.client_sap))

    def _watch_radio(self):
        """Radio progress: each pass of the join loop. A join is bounded by the driver's
        timeouts; waiting while ready, in back-off or for credentials is parked, so a radio that
        cannot join never resets the device."""
        from firmware.radio import session as rs

        r = self.cfg["radio"]
        # the longest scan: 9.64 ms x 2^d per channel (14 channels), + 50 %, + 2 s (docs/radio.md)
        scan_ms = 964 * (1 << r["scan_max_duration"]) // 100 * 14 * 3 // 2 + 2000
        limit = self.cfg["watchdog"]["radio_ms"] or 2 * (
            r["reset_timeout_ms"] + 10 * r["cmd_timeout_ms"] + r["pana_timeout_ms"] + scan_ms)
        s = self.session
        parked = (rs.ST_READY, rs.ST_BACKOFF, rs.ST_AUTH_FAILED)
        health.HEALTH.expect("radio", limit, parked=lambda: s.state in parked)

    async def dlms_link(self):
        s = self.session
        # replies other than GET are written here; a GET reply (each block) comes back as a view
        # of the server's own PDU buffer: no allocation and no copy per reply
        out = self.server.reply_buffer()
        while True:
            src, sport, _dport, payload = await s.recv()
            reply = self.server.handle_wpdu(payload, (src, sport), out)
            if reply:
                heapmon.sample("dlms reply")  # the reply (one block) is still referenced
                await s.send(src, sport, reply)
                s.note_app_activity()

    # -- clock -------------------------------------------------------------------------------

    def _configure_clock(self, c):
        """The calendar clock's discipline (docs/clock.md): slew, step hold, doubtful status.
        A value out of range is logged and its default used."""
        d = cfgmod.DEFAULTS["clock"]
        v = {}
        for key, lo, hi in (("slew_max_s", 0, 3600), ("slew_div", 2, 1000),
                            ("hold_max_s", 0, 3600), ("doubtful_after_s", 0, 10 * 365 * 86400)):
            x = c[key]
            if x < lo or x > hi:
                log.error("config", "clock.%s = %d out of %d..%d; using %d"
                          % (key, x, lo, hi, d[key]))
                x = d[key]
            v[key] = x
        self.clock.configure(slew_max_s=v["slew_max_s"], slew_div=v["slew_div"],
                             hold_max_ms=v["hold_max_s"] * 1000,
                             doubtful_after_s=v["doubtful_after_s"])

    def _on_clock_set(self, old, new):
        """Every set that took effect (docs/clock.md): the first set and every adjustment beyond
        clock.adjust_flag_s are events and flag the next live record "clock adjusted"; a step
        also has the slots whose boundary it crossed re-read from the meter's history. A set
        from NTP is recorded as CLOCK_NTP; only the smart meter's sets wake the meter-clock
        keeper (section 6)."""
        tz = self.cfg["meter"]["tz_offset_min"]
        src = self.clock.last_source
        keeper = getattr(self, "meter_clock", None)
        if src == clockmod.SOURCE_SMART_METER and keeper is not None:
            keeper.authority_set()
        who = _SOURCE_NAMES[src]
        code = ev.CLOCK_NTP if src == clockmod.SOURCE_NTP else ev.CLOCK_SET
        if old is None:
            log.info("clock", "set by %s to %s" % (who, timeutil.iso(new, tz)))
            self.event(code, DETAIL_NO_OLD_TIME)
            return
        step = new - old
        lim = self.cfg["clock"]["adjust_flag_s"]
        if -lim <= step <= lim:
            # Routine synchronisation (a few seconds) is not recorded: it would push every
            # other event out of the log.
            if src == clockmod.SOURCE_NTP:
                log.info("clock", "NTP: %+d s" % step)
            return
        chs = getattr(self, "channels", ())
        for ch in chs:
            ch.poller.flag_next(record.FLAG_CLOCK_ADJUSTED)
        if self.clock.last_kind == clockmod.SLEW:
            log.info("clock", "%s: slewing %+d s towards %s" % (who, step,
                                                                timeutil.iso(new, tz)))
            self.event(ev.CLOCK_NTP if src == clockmod.SOURCE_NTP else ev.CLOCK_SLEW, step)
            return
        log.warn("clock", "%s: stepped by %d s to %s" % (who, step, timeutil.iso(new, tz)))
        # Recorded with the step exactly when the next record is flagged "clock adjusted":
        # the event's time is the new time, so old = time - detail.
        self.event(code, step)
        lo, hi = crossed_slots(old, new, _REREAD_SPAN)
        if lo > hi:
            return
        log.info("clock", "%d boundaries crossed: re-read from the meter's history"
                 % (hi - lo + 1))
        for ch in chs:
            ch.planner.mark_adjusted(lo, hi)
            ch.on_event("gave_up")  # a full backfill pass: the crossed slots may be days back

    def clock_status(self):
        """"ok", "invalid" (never set since boot) or "doubtful" (no set for
        clock.doubtful_after_s), as the COSEM clock object reports it."""
        st = self.clock.status()
        return "invalid" if st & clockmod.STATUS_INVALID else \
            "doubtful" if st & clockmod.STATUS_DOUBTFUL else "ok"

    # -- housekeeping ------------------------------------------------------------------------

    async def housekeeping(self):
        import gc

        n = 0
        was_ready = False
        while True:
            if health.HEALTH.check():  # every watched task made progress within its limit
                self.hal.feed_watchdog()
            await sleep_ms(1000)
            n += 1
            ready = self.session is not None and self.session.is_ready()
            if ready and not was_ready:
                self._remember_radio()
                if n > 1:
                    for ch in self.channels:
                        ch.on_event("recovered")  # radio back: check for gaps at once
            was_ready = ready
            self.clock.poll()  # a step held past clock.hold_max_s by a hanging capture
            self.counters.poll()  # uptime; the file at most every counters.persist_s
            heapmon.daily(self.clock.now_t2k())
            if n % 60 == 0:
                gc.collect()
                if self.session is not None:  # the radio driver's checksum failures
                    self.counters.track("crc_errors", "radio",
                                        self.session.stats.get("bad_frames", 0))
                self._log_status()

    def _log_status(self):
        """The minute status line: records stored, radio state, free heap, bugs the capture and
        backfill loops survived, and the meters not metered because several meter objects answer
        and none is chosen (then a WARN: that meter bills nothing until it is chosen)."""
        import gc

        chs = self.channels
        amb = ["meter%d: %s" % (ch.index, ch.ambiguous) for ch in chs if ch.ambiguous]
        clk = getattr(self, "clock", None)
        line = "alive: stored=%d radio=%s clock=%s free=%s unexpected=%d" % (
            sum(ch.poller.stats["stored"] for ch in chs),
            self.session.state if self.session else "-",
            self.clock_status() if clk is not None else "-",
            gc.mem_free() if hasattr(gc, "mem_free") else "?",
            sum(ch.poller.stats["unexpected"] + ch.planner.stats["unexpected"] for ch in chs))
        if amb:
            log.warn(_TAG, line + " NOT METERING " + ", ".join(amb))
        else:
            log.info(_TAG, line)

    async def run(self):
        from firmware.app.lan import LanSupervisor
        from firmware.app.meters import meter_configs

        # The radio side and the watchdog-feeding housekeeping start at once: the smart meter can
        # read stored values and set the clock while the LAN (Wi-Fi/Ethernet) is still down.
        self.lan = LanSupervisor(self.hal)
        self.meter_cfgs = meter_configs(self.cfg["meter"])
        await self._detect_radio()
        self._build_radio()
        heapmon.milestone("radio and COSEM built")
        self._build_meter()  # before any task runs; its socket comes with the LAN
        self._build_telemetry()
        self._build_web()
        self._forget_build_config()
        heapmon.milestone("meter side built")
        heapmon.modules()
        _gc_early()
        await asyncio.gather(
            supervise("radio", self.session.run),
            supervise("dlms", self.dlms_link),
            supervise(_TAG, self.housekeeping),
            supervise("lan", self.lan.run),
            supervise("meters", self.meter_side),
            *([supervise("push", self._push)] if self.pusher is not None else []),
            *([supervise("ntp", self._ntp)] if self.cfg["clock"]["ntp"] else []),
            *([supervise("web", self._web)] if self.web is not None else []),
            *([supervise("telemetry", self.telemetry.run)] if self.telemetry is not None else []),
        )

    def _build_web(self):
        """web.enabled: the status page and JSON API (docs/product.md), imported and built at
        start-up with the rest (from .mpy an import later, in a heap cut up by traffic, leaves
        holes); nothing is imported when it is off (the field profile)."""
        self.web = None
        if self.cfg["web"]["enabled"]:
            from firmware.app.web import WebServer

            self.web = WebServer(self, self.cfg["web"])

    async def _web(self):
        await self.web.run()

    # -- MQTT telemetry (docs/product.md "MQTT telemetry") ------------------------------------

    def _build_telemetry(self):
        """mqtt.enabled: the telemetry task's queue listens to the store from now on (built
        before any task runs, and before the dlms section is dropped: the client id is made of
        the logical device name)."""
        self.telemetry = None
        if not self.cfg["mqtt"]["enabled"]:
            return
        from firmware.app import (
            mqttclient,  # noqa: F401 - loaded now, not at the first connect
            status,
        )
        from firmware.app.telemetry import Telemetry

        # the periodic status is the status page's summary (one definition of the values)
        self.telemetry = Telemetry(self, self.cfg["mqtt"], lambda: status.summary(self))
        heapmon.milestone("telemetry built")

    async def _ntp(self):
        from firmware.app.ntp import NtpSource

        await NtpSource(self.hal, self.clock, self.cfg["clock"], self.lan).run()

    def _forget_build_config(self):
        """Sections read only while the components are built (dlms: the server and the push
        encoder copied what they use; events; push unless pushing): not kept for the device's
        life (~0.8 KB on the unix port, and the DLMS keys' text leaves RAM; docs/memory.md)."""
        for k in ("dlms", "events") + (() if self.pusher is not None else ("push",)):
            self.cfg[k] = None

    async def _push(self):
        await self.pusher.run(self.session)

    async def meter_side(self):
        while not self.lan.up:
            await sleep_ms(500)
        if self.bus.ep is None:
            self._attach_lan()
        tasks = [supervise("echonet", self.bus.run), supervise("discovery", self.discovery.run)]
        for ch in self.channels:
            tasks.append(supervise("meter%d" % ch.index, ch.capture))
            tasks.append(supervise("backfill%d" % ch.index, ch.backfill))
        if self.meter_clock is not None:
            tasks.append(supervise("meterclock", self.meter_clock.run))
        await asyncio.gather(*tasks)


def crossed_slots(old, new, span=None):
    """(lo, hi): the slots whose boundary a step from `old` to `new` crossed, i.e. the
    boundaries in (min, max] (forward: never reached live; backward: they occur again), at most
    `span` slots either side of the new time's slot; lo > hi when none."""
    a, b = (old, new) if old < new else (new, old)
    lo = timeutil.slot_of_t2k(a - a % timeutil.SLOT_S + timeutil.SLOT_S)
    hi = timeutil.slot_of_t2k(b - b % timeutil.SLOT_S)
    if span is not None:
        s = timeutil.slot_of_t2k(new)
        lo = lo if lo > s - span else s - span
        hi = hi if hi < s + span else s + span
    return lo, hi


def _gc_early():
    """Collect when a quarter of the free heap has been allocated, not when it is exhausted: a
    collection at exhaustion leaves a fragmented heap in which a 1.5 KB datagram buffer no longer
    fits (MicroPython's heap does not compact)."""
    import gc

    if hasattr(gc, "threshold"):
        gc.collect()
        gc.threshold(gc.mem_free() // 4)


def open_event_log(cfg, state_path, clock):
    """The event log of the events section (normal, safe and setup mode alike)."""
    from firmware.store.eventlog import EventLog

    c = cfg["events"]
    path = cfgmod.events_path(cfg)
    cap = c["capacity"]
    if cap < 1 or cap > 4096:  # two files of up to 96 KB each on the 1.5 MB vfs
        log.error("config", "events.capacity = %d out of 1..4096; using 256" % cap)
        cap = 256
    events = EventLog(path, cap, clock, burst=c["burst"], refill_s=c["refill_s"])
    events.mount()
    return events


def main(board_path, config_path):
    """The start-up decision (docs/product.md): count the boot, check the configuration, then
    safe mode (boot loop), setup mode (configuration unusable, or asked for) or the normal run."""
    from firmware.app import safeboot

    log.info("boot", "IoT-route wireless terminal starting")
    cfg = cfgmod.load(config_path)  # never raises: a broken file gives the defaults
    state_path = cfg["store"]["state_path"]
    n = safeboot.enter(safeboot.path_for(state_path))
    board = halmod.load_board(board_path)
    problems = cfgmod.check(cfg, (board.get("network") or {}).get("kind"))
    _unload("firmware.app.cfgcheck")  # used once at boot: its code and rules go (~10 KB on
    _unload("firmware.app.credentials")  # the unix port; the web setup imports them again)
    hal = halmod.create(board, cfg)
    sb = cfg["safeboot"]
    why = safeboot.decide(sb["max_resets"], problems, cfgmod.SETUP)
    if why:
        log.error("safeboot", "%s (boot %d in a row not stable): metering and radio not "
                  "started; setup page up, REPL with Ctrl-C" % (safeboot.WHY_TEXT[why], n))
        asyncio.run(setup_mode(hal, cfg, why, problems, sb["stable_s"], config_path))
        return
    heapmon.enabled = cfg["terminal"]["heap_log"]
    heapmon.dump_map = heapmon.enabled and cfg["terminal"]["heap_map"]
    heapmon.milestone("imports")
    try:
        terminal = Terminal(hal, cfg)
    except halmod.FlashError as e:
        # A setup error (e.g. a stock partition table): no metering, but no reset loop either.
        log.error("flash", "%s: metering not started" % e)
        asyncio.run(_gather(flash_unusable(hal, str(e)), safeboot.stable_after(sb["stable_s"])))
        return
    if problems:
        terminal.event(ev.CONFIG_ERROR, len(problems))
    del safeboot
    asyncio.run(_gather(terminal.run(), _stable_then_unload(sb["stable_s"])))


async def _gather(*coros):
    await asyncio.gather(*coros)


async def _stable_then_unload(stable_s):
    """The boot is stable after stable_s: then safeboot's code and globals go (5 KB of heap from
    .mpy; safeboot.clear() at the REPL imports it again, its file next to state.json)."""
    from firmware.app import safeboot

    await safeboot.stable_after(stable_s)
    del safeboot
    _unload("firmware.app.safeboot")


async def setup_mode(hal, cfg, why, problems, stable_s, config_path="config.json"):
    """Safe or setup mode: no metering, no radio; the event log records why; the setup page
    (firmware.app.setup, when the build has it) runs beside a loop that feeds the watchdog and says
    why every 10 minutes. A boot loop stays in safe mode until safeboot.clear(); the other
    reasons count as a stable boot after stable_s (they are not a crash)."""
    from firmware.app import safeboot

    events = None
    try:
        events = open_event_log(cfg, cfg["store"]["state_path"], hal.clock)
        events.record(ev.SAFE_MODE, why)
        if problems:
            events.record(ev.CONFIG_ERROR, len(problems))
    except Exception as e:  # noqa: BLE001 - safe mode must come up without an event log
        log.exc("safeboot", "event log not available", e)
    tasks = [safeboot.hold(hal, why)]
    if why != safeboot.WHY_BOOT_LOOP:
        tasks.append(safeboot.stable_after(stable_s))
    try:
        from firmware.app.setup import serve_setup
    except ImportError:
        log.warn("safeboot", "no setup page in this build: configure over the REPL (Ctrl-C)")
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: safe mode stays up without it
        log.exc("safeboot", "setup page not available", e)
    else:
        tasks.append(_setup_page(serve_setup, hal, cfg, why, problems, events, config_path))
    await asyncio.gather(*tasks)


async def _setup_page(serve_setup, hal, cfg, why, problems, events, config_path):
    try:
        await serve_setup(hal, cfg, why, problems, events, config_path)
    except Exception as e:  # noqa: BLE001 - the device stays in safe mode, REPL up
        log.exc("safeboot", "setup page stopped", e)


async def flash_unusable(hal, why):
    """Keep the device up (watchdog fed) and say why every 10 minutes, until it is re-flashed."""
    n = 0
    while True:
        hal.feed_watchdog()
        await sleep_ms(1000)
        n += 1
        if n % 600 == 0:
            log.error("flash", "%s: metering not started" % why)
