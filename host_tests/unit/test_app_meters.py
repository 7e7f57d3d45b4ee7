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

