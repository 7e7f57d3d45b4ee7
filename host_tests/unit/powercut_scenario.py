# Power-cut scenario shared by the unit lane (both runtimes, short) and the integration matrix:
# the real capture loop, backfill planner and interval store on the NOR emulator, a meter that
# keeps history, and a power cut at operation k (clean or torn). After the cut: power back on,
# reboot (mount/recovery), backfill, go on to the end of the scenario. Afterwards every boundary of
# the scenario must hold exactly the meter's value, once.
import asyncio
import gc

from meter_fakes import FakeMeter, StepClock

from firmware import log, timeutil
from firmware.app.backfill import BackfillPlanner
from firmware.app.config import DEFAULTS
from firmware.app.metering import SlotPoller
from firmware.app.views import StoreSink
from firmware.hal.norflash import NorFlash, PowerCut
from firmware.store import record
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

START = timeutil.t2k_from_fields(2025, 4, 9, 15, 20, 0)  # 2025-04-10 00:20 JST


class Scenario:
    def __init__(self, days, cut_at=None, tear=False, seed=1, blocks=24, block_size=512,
                 outage_slots=2, flash=None):
        self.days = days
        self.flash = flash or NorFlash(blocks, block_size=block_size)
        self.clock = StepClock(START)
        self.meter = FakeMeter(self.clock.now_t2k, retention=3)
        self.cfg = dict(DEFAULTS["meter"])
        self.cut_at = cut_at
        self.tear = tear
        self.seed = seed
        self.reboots = 0
        self.outage_slots = outage_slots  # the terminal stays off this many boundaries after a cut
        self.acked = {}  # slot -> value acknowledged by the store before any cut

    def boot(self):
        while True:
            try:
                self.store = IntervalStore(FlashLog(self.flash), max_meters=1)
                break
            except PowerCut:  # cut again during recovery: power back on and retry
                self.flash.power_cycle()
                self.reboots += 1
        self.poller = SlotPoller(self.clock, self.meter, _AckSink(self), 0, self.cfg)
        self.planner = BackfillPlanner(self.clock, self.meter, self.store, 0, self.cfg)

    async def _backfill(self, days=None):
        if self.poller.unit_code is None:
            self.poller.unit_code = await self.meter.read_unit()
        self.planner.unit_code = self.poller.unit_code
        await self.planner.run_once(days)

    async def run(self):
        log.set_sink(lambda line: None)
        try:
            self.boot()
            if self.cut_at is not None:
                # weak=2: what the cut program left unfinished settles at the second power-up
                # (the last one below), after the reboot has handed out sequence numbers again
                self.flash.arm(self.cut_at, self.tear, self.seed, weak=2)
            first_b = START - START % timeutil.SLOT_S + timeutil.SLOT_S
            self.first_b = first_b
            self.last_b = first_b + int(self.days * 48 - 1) * timeutil.SLOT_S
            b = first_b
            full = True
            while b <= self.last_b:
                self.clock.t = b + self.cfg["read_delay_s"] + 1
                try:
                    await self.poller.step()
                    await self._backfill(None if full else 1)
                    full = False
                    b += timeutil.SLOT_S
                except PowerCut:
                    # off for a while: the boundaries of the outage can only come from backfill
                    b += self.outage_slots * timeutil.SLOT_S
                    self.flash.power_cycle()
                    self.reboots += 1
                    self.boot()
                    full = True  # the boot pass
            # the end: one more boundary later, a last pass fills whatever the cut lost
            self.clock.t = self.last_b + timeutil.SLOT_S + self.cfg["give_up_after_s"] + 60
            while True:
                try:
                    await self._backfill(None)
                    break
                except PowerCut:
                    self.flash.power_cycle()
                    self.reboots += 1
                    self.boot()
            # one more power-up at the end (not a cut): weak bits settle, the log is mounted again
            self.ops_run = self.flash.ops  # the cut points: the final mount is not one
            self.flash.power_cycle()
            self.boot()
        finally:
            log.set_sink(None)

    def check(self, tc):
        """Assertions on a finished run (tc: a unittest.TestCase)."""
        seqs = []
        self.store.log.scan(lambda s, buf, off: seqs.append(record.seq_of(buf, off)))
        for a, b in zip(seqs, seqs[1:]):
            tc.assertLess(a, b)  # no sequence number twice, none out of order
        first = timeutil.slot_of_t2k(self.first_b)
        last = timeutil.slot_of_t2k(self.last_b)
        rows = list(self.store.rows(0, first, last))
        slots = [r[0] for r in rows]
        want = list(range(first, last + 1))
        tc.assertEqual(slots, want)  # every boundary, once, in order: nothing lost or duplicated
        for slot, fwd, rev, unit, _src, _flags in rows:
            tc.assertEqual((fwd, rev), self.meter.model.at_slot(slot))  # nothing invented
            tc.assertEqual(unit, 0x01)
        for slot, value in self.acked.items():
            got = self.store.get(0, slot)
            tc.assertIsNotNone(got)
            tc.assertEqual((got[0], got[1]), value)


class _AckSink:
    """StoreSink that remembers what the store acknowledged (put returned without a cut)."""

    def __init__(self, sc):
        self.sc = sc

    def has(self, meter, slot):
        return self.sc.store.has(meter, slot)

    def store(self, meter, slot, fwd, rev, unit, source, flags):
        StoreSink(self.sc.store).store(meter, slot, fwd, rev, unit, source, flags)
        self.sc.acked[slot] = (fwd, rev)


def count_ops(days, **kw):
    """Program/erase operations of an uncut run: the cut points to try."""
    sc = Scenario(days, **kw)
    asyncio.run(sc.run())
    return sc.ops_run


_flash = [None]


def _fresh_flash(blocks=24, block_size=512):
    """One emulated chip reused (fully erased) by every case: hundreds of 12 KB allocations would
    fragment MicroPython's small heap."""
    f = _flash[0]
    if f is None or f.n_blocks != blocks or f.block_size != block_size:
        f = _flash[0] = None
        gc.collect()
        f = _flash[0] = NorFlash(blocks, block_size=block_size)
    f.power_cycle()
    for b in range(blocks):
        f.erase(b)
    f.ops = 0
    f.bytes_programmed = 0
    f.programs = 0
    f.erases = [0] * blocks
    return f


def run_case(days, k, tear, **kw):
    gc.collect()
    sc = Scenario(days, cut_at=k, tear=tear, seed=k, flash=_fresh_flash(), **kw)
    asyncio.run(sc.run())
    return sc
