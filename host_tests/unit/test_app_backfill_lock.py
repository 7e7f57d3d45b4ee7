# Meters share one backfill lock: passes of different meters never overlap.
import asyncio
import unittest

from firmware.app.config import DEFAULTS
from firmware.app.meters import MeterChannel, meter_configs


class FakeClient:
    def __init__(self):
        self.addr = ("10.0.0.5", 3610)


class _SetClock:
    def is_set(self):
        return True


class BackfillOneAtATimeTest(unittest.TestCase):
    """Meters share one backfill lock: passes never overlap (a pass holds a day of history and
    store reads; N at once would cost N times the heap)."""

    def test_passes_of_two_meters_never_overlap(self):
        cfg = meter_configs(DEFAULTS["meter"])[0]  # no merge(): it compiles the radio side
        lock = asyncio.Lock()
        running = []
        overlaps = []

        class Planner:
            def __init__(self, name):
                self.name = name
                self.stats = {"errors": 0}
                self.unit_code = None
                self.passes = 0

            async def run_once(self, horizon_days=None):
                running.append(self.name)
                if len(running) > 1:
                    overlaps.append(tuple(running))
                await asyncio.sleep(0.02)  # a pass awaits the meter between days
                running.remove(self.name)
                self.passes += 1

        chans = []
        for k in range(2):
            ch = MeterChannel(k, FakeClient(), _SetClock(), None, cfg, backfill_lock=lock)
            ch.poller.unit_code = 0x01
            ch.planner = Planner("m%d" % k)
            chans.append(ch)

        async def main():
            tasks = [asyncio.create_task(ch.backfill()) for ch in chans]
            for _ in range(50):
                await asyncio.sleep(0.01)
                if all(ch.planner.passes for ch in chans):
                    break
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except asyncio.CancelledError:
                    pass

        asyncio.run(main())
        self.assertEqual([ch.planner.passes for ch in chans], [1, 1])
        self.assertEqual(overlaps, [])
