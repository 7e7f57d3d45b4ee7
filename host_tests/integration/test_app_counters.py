"""The persistent counters wired in the terminal (docs/product.md "Counters"): a boot and its reset
cause, every slot the store takes, the events passing the terminal's one event sink, a supervised
task's crash (counted and recorded as TASK_CRASH), and all of it across a reboot. CPython with a
fake HAL, like test_app_events.py (a whole Terminal does not fit the unit lane's heap)."""

import asyncio
import os

from firmware import events as ev
from firmware import log
from firmware.app import config as cfgmod
from firmware.app import terminal
from firmware.app.terminal import Terminal
from firmware.hal.clock import CalendarClock
from firmware.hal.norflash import NorFlash
from firmware.store import record


class FakeHal:
    def __init__(self, flash, cause="watchdog"):
        self.clock = CalendarClock()
        self._flash = flash
        self.cause = cause

    def flash_region(self):
        return 0, 4

    def blockdev(self):
        return self._flash

    def reset_cause(self):
        return self.cause


def _events(t):
    c = t.events.cursor()
    out = []
    while True:
        e = t.events.read(c)
        if e is None:
            break
        out.append((e[2], e[3]))
    t.events.close(c)
    return out


def test_counters_through_the_terminal_and_across_a_reboot(tmp_path):
    lines = []
    log.set_sink(lines.append)
    try:
        flash = NorFlash(4, block_size=256)
        cfg = cfgmod.merge({"store": {"state_path": str(tmp_path / "state.json")},
                            "events": {"burst": 0}})
        t = Terminal(FakeHal(flash, "power_on"), cfg)
        t.store.put(0, 1000, 5, 0, 0x01, record.SOURCE_FIXED)
        t.store.put(0, 1001, 6, 0, 0x01, record.SOURCE_FIXED)
        t.event(ev.LINK_DOWN, 2)
        t.event(ev.BACKFILL_DONE, 7)

        async def crash_once():
            raise RuntimeError("injected")

        async def one_crash():
            task = asyncio.ensure_future(terminal.supervise("web", crash_once, backoff_ms=10000))
            await asyncio.sleep(0.05)
            task.cancel()

        asyncio.run(one_crash())
        s = t.counters.snapshot()
        assert (s["boots"], s["resets_power_on"], s["reads"], s["link_drops"], s["backfills"],
                s["task_crashes"]) == (1, 1, 2, 1, 7, 1)
        assert (ev.TASK_CRASH, terminal.task_number("web")) in _events(t)
        assert terminal.task_number("web") == 11
        assert terminal.task_number("meter2") == 66 and terminal.task_number("backfill0") == 96
        assert terminal.task_number("nosuch") == 255
        t.counters.persist()  # a clean point (else the next hourly write)
        # reboot: a watchdog reset; the counts go on from the file
        t2 = Terminal(FakeHal(flash, "watchdog"), cfg)
        s2 = t2.counters.snapshot()
        assert (s2["boots"], s2["resets_power_on"], s2["resets_watchdog"], s2["reads"],
                s2["task_crashes"]) == (2, 1, 1, 2, 1)
        assert os.path.exists(str(tmp_path / "counters.json"))
    finally:
        log.set_sink(None)
