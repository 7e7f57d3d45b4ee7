import asyncio
import unittest

from firmware import log
from firmware.app.config import merge
from firmware.app.meters import MeterChannel, meter_configs


class FakeClient:
    def __init__(self, fail=0):
        self.addr = ("10.0.0.5", 3610)
        self.fail = fail
        self.calls = []

    async def find_instance(self, device_type=None, metered_id=None):
        self.calls.append((device_type, metered_id))
        if self.fail:
            self.fail -= 1
            raise ValueError("2 meter objects match")
        return 0x028E02


class MetersConfigTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_one_meter_by_default(self):
        cfgs = meter_configs(merge({})["meter"])
        self.assertEqual(len(cfgs), 1)
        self.assertEqual(cfgs[0]["ip"], "127.0.0.2")
        self.assertNotIn("list", cfgs[0])

    def test_list_overrides_per_meter(self):
        m = merge({"meter": {"timeout_ms": 8000, "list": [{"ip": "10.0.0.5"},
                                                          {"ip": "10.0.0.6", "eoj": 0x028802},
                                                          "junk"]}})["meter"]
        cfgs = meter_configs(m)
        self.assertEqual([c["ip"] for c in cfgs], ["10.0.0.5", "10.0.0.6", "127.0.0.2"])
        self.assertEqual(cfgs[1]["eoj"], 0x028802)
        self.assertEqual(cfgs[0]["timeout_ms"], 8000)  # section values are the defaults
        self.assertIn("must be objects", "\n".join(self.lines))

    def test_instance_selection_retries_until_unique(self):
        cfg = meter_configs(merge({"meter": {"device_type": "027E00",
                                             "metered_id": "FE000077"}})["meter"])[0]
        client = FakeClient(fail=1)
        ch = MeterChannel(0, client, None, None, cfg)
        asyncio.run(ch.select_instance())
        self.assertEqual(client.calls, [(bytes.fromhex("027E00"), bytes.fromhex("FE000077"))] * 2)
        self.assertIn("meter object selection", "\n".join(self.lines))

    def test_no_selection_configured(self):
        cfg = meter_configs(merge({})["meter"])[0]
        client = FakeClient()
        asyncio.run(MeterChannel(0, client, None, None, cfg).select_instance())
        self.assertEqual(client.calls, [])


class MeterListTypesTest(unittest.TestCase):
    def test_bad_entry_values_are_logged_and_defaults_kept(self):
        lines = []
        log.set_sink(lines.append)
        try:
            cfgs = meter_configs(merge({"meter": {"list": [
                {"ip": "10.0.0.5", "eoj": "028E02", "timeout_ms": True, "nope": 1}]}})["meter"])
        finally:
            log.set_sink(None)
        self.assertEqual(cfgs[0]["ip"], "10.0.0.5")
        self.assertEqual(cfgs[0]["eoj"], 0x028E01)
        self.assertEqual(cfgs[0]["timeout_ms"], 5000)
        text = "\n".join(lines)
        self.assertIn("meter.list[0].eoj", text)
        self.assertIn("meter.list[0].timeout_ms", text)
        self.assertIn("meter.list[0].nope", text)


class _SetClock:
    def is_set(self):
        return True


class BackfillOneAtATimeTest(unittest.TestCase):
    """Meters share one backfill lock: passes never overlap (a pass holds a day of history and
    store reads; N at once would cost N times the heap)."""

    def test_passes_of_two_meters_never_overlap(self):
        cfg = meter_configs(merge({})["meter"])[0]
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
