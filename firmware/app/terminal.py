# The terminal: builds every component from the board and configuration and runs their tasks.
#
#   meter (ECHONET Lite over LAN) --SlotPoller--> IntervalStore (NOR flash log)
#   IntervalStore --MeterView--> COSEM objects --CosemServer--> RadioSession (J11) --> smart meter
#   smart meter --DLMS SET Clock--> calendar clock --> slot boundaries
#
# Each task runs under a supervisor: an unexpected exception is logged and the task restarts after
# a capped back-off, so one failing part never stops the others (or metering).
import asyncio

from firmware import hal as halmod
from firmware import log, timeutil
from firmware.app import config as cfgmod
from firmware.app.backfill import BackfillPlanner
from firmware.app.metering import SlotPoller
from firmware.app.views import MeterView, StoreSink
from firmware.compat import sleep_ms
from firmware.store import record

_TAG = "terminal"


async def supervise(name, start, backoff_ms=1000, max_backoff_ms=60000):
    delay = backoff_ms
    while True:
        try:
            await start()
            log.warn(name, "task returned; restarting")
        except Exception as e:
            log.exc(name, "task crashed; restarting in %d ms" % delay, e)
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
        self.flashlog = FlashLog(hal.blockdev(), st["first_block"], st["n_blocks"])
        # The index always has room for 4 meters (1:N is coming); it costs 8 bytes per sector each.
        self.store = IntervalStore(self.flashlog, max_meters=4)
        log.info(_TAG, "store mounted: %d records of meter 0, last slot %s" % (
            self.store.count(0), self.store.last_slot(0)))
        self._open_state(st["state_path"])
        self.meter = None
        self.poller = None
        self.server = None
        self.session = None
        self.clock.add_listener(self._on_clock_set)

    def _open_state(self, path):
        from firmware.store.state import StateFile

        self.state = StateFile(path)
        boots = self.state.get("boot_count", 0) + 1  # never goes backwards: written before use
        self.state.set("boot_count", boots)
        log.info(_TAG, "boot %d" % boots)

    def _radio_config(self):
        """The radio section, with the smart meter remembered from the last join when none is
        configured (a rejoin after a reboot then skips the scan)."""
        r = dict(self.cfg["radio"])
        if not r["sm_mac"] and self.state.get("sm_mac"):
            r["sm_mac"] = self.state.get("sm_mac")
            r["channel"] = self.state.get("channel", r["channel"])
            log.info(_TAG, "smart meter %s on channel %d remembered from the last join"
                     % (r["sm_mac"], r["channel"]))
        return r

    def _remember_radio(self):
        s = self.session
        if s.peer_mac is None or s.channel is None:
            return
        mac = "".join("%02X" % b for b in s.peer_mac)
        self.state.update({"sm_mac": mac, "channel": s.channel})

    # -- meter side --------------------------------------------------------------------------

    def _build_meter(self):
        from firmware.meter.client import MeterClient

        m = self.cfg["meter"]
        ep = self.hal.lan_udp(m["port"])
        self.meter = MeterClient(ep, (m["ip"], m["port"]), m)
        self.poller = SlotPoller(self.clock, self.meter, StoreSink(self.store), 0, m)
        self.planner = BackfillPlanner(self.clock, self.meter, self.store, 0, m)
        self._backfill_full = True  # a full pass is due (boot)
        self._backfill_due = asyncio.Event()
        self.poller.on_event = self._on_meter_event

    def _on_meter_event(self, name):
        if name in ("recovered", "gave_up"):
            self._backfill_full = True
        self._backfill_due.set()

    async def backfill(self):
        """Fill gaps from the meter's history when due (boot, outages, every boundary)."""
        recent = self.cfg["meter"]["backfill_recent_days"]
        while True:
            if self.poller.unit_code is None or not self.clock.is_set():
                await sleep_ms(500)
                continue
            self.planner.unit_code = self.poller.unit_code
            full = self._backfill_full
            self._backfill_full = False
            self._backfill_due.clear()
            before = self.planner.stats["errors"]
            await self.planner.run_once(None if full else recent)
            if self.planner.stats["errors"] != before:
                self._backfill_full = True  # try the whole window again next time
            await self._backfill_due.wait()

    # -- smart-meter side --------------------------------------------------------------------

    def _build_radio(self):
        from firmware.cosem.objects import default_table
        from firmware.cosem.server import CosemServer
        from firmware.radio.j11_module import J11Module
        from firmware.radio.session import RadioSession

        d = self.cfg["dlms"]
        view = MeterView(self.store, 0, unit_hint=lambda: self.poller and self.poller.unit_code,
                         backfill_bit=d["backfill_status_bit"])
        self.server = CosemServer(default_table(view, d), self.clock, d)
        module = J11Module(self.hal.radio_uart())
        self.session = RadioSession(module, self._radio_config())

    async def dlms_link(self):
        s = self.session
        while True:
            src, sport, _dport, payload = await s.recv()
            reply = self.server.handle_wpdu(payload)
            if reply:
                await s.send(src, sport, reply)
                s.note_app_activity()

    # -- clock -------------------------------------------------------------------------------

    def _on_clock_set(self, old, new):
        tz = self.cfg["meter"]["tz_offset_min"]
        if old is None:
            log.info("clock", "set by the smart meter to %s" % timeutil.iso(new, tz))
            return
        step = new - old
        if step > self.cfg["clock"]["adjust_flag_s"] or -step > self.cfg["clock"]["adjust_flag_s"]:
            log.warn("clock", "stepped by %d s to %s" % (step, timeutil.iso(new, tz)))
            if self.poller:
                self.poller.flag_next(record.FLAG_CLOCK_ADJUSTED)

    # -- housekeeping ------------------------------------------------------------------------

    async def housekeeping(self):
        import gc

        n = 0
        was_ready = False
        while True:
            self.hal.feed_watchdog()
            await sleep_ms(1000)
            n += 1
            ready = self.session is not None and self.session.is_ready()
            if ready and not was_ready:
                self._remember_radio()
                if n > 1 and self.poller is not None:
                    self._on_meter_event("recovered")  # radio back: check for gaps at once
            was_ready = ready
            if n % 60 == 0:
                gc.collect()
                log.info(_TAG, "alive: stored=%d radio=%s free=%s" % (
                    self.poller.stats["stored"] if self.poller else 0,
                    self.session.state if self.session else "-",
                    gc.mem_free() if hasattr(gc, "mem_free") else "?"))

    async def run(self):
        from firmware.app.lan import LanSupervisor

        self.lan = LanSupervisor(self.hal)
        await self.lan.wait_up()
        self._build_meter()
        self._build_radio()
        log_heap("components built")
        await asyncio.gather(
            supervise("echonet", self.meter.run),
            supervise("metering", self.poller.run),
            supervise("backfill", self.backfill),
            supervise("radio", self.session.run),
            supervise("dlms", self.dlms_link),
            supervise(_TAG, self.housekeeping),
            supervise("lan", self.lan.run),
        )


def log_heap(what):
    import gc

    gc.collect()
    if hasattr(gc, "mem_free"):
        log.info(_TAG, "heap after %s: %d used, %d free" % (what, gc.mem_alloc(), gc.mem_free()))


def main(board_path, config_path):
    log.info("boot", "IoT-route wireless terminal starting")
    cfg = cfgmod.load(config_path)
    board = halmod.load_board(board_path)
    hal = halmod.create(board, cfg)
    log_heap("imports")
    terminal = Terminal(hal, cfg)
    asyncio.run(terminal.run())
