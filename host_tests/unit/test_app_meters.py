import asyncio
import unittest

from firmware import log
from firmware.app.config import merge
from firmware.app.meters import MeterChannel, meter_configs
from firmware.meter.drmeter import MeterError, MeterTimeout

DT_V2H = bytes.fromhex("027E00")
ID_A = bytes.fromhex("FEFFFFFF") + b"V2H-PCS-00001"
ID_B = bytes.fromhex("FEFFFFFF") + b"V2H-PCS-00002"


class FakeClient:
    def __init__(self, fail=0, nodes=None, list_error=None):
        self.addr = ("10.0.0.5", 3610)
        self.list_error = list_error  # what candidates() raises, if anything
        self.asked_ids = []
        self.deoj = 0x028E01
        self.fail = fail
        self.calls = []
        self.nodes = nodes or []  # what candidates() answers, one list per call (last repeats)
        self.selected = []
        self.channel = None
        self.ambiguous_seen = []

    async def candidates(self, ids=True):
        if self.list_error is not None:
            raise self.list_error
        self.asked_ids.append(ids)
        if ids:  # the objects' 0xD0/0xD6, after the list (below) showed several
            return self.last
        if self.channel is not None:
            self.ambiguous_seen.append(self.channel.ambiguous)
        self.last = self.nodes.pop(0) if len(self.nodes) > 1 else self.nodes[0]
        return [(c[0], None, None) for c in self.last]

    def select(self, eoj):
        self.selected.append(eoj)

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

    def test_no_selection_configured_one_meter_object(self):
        cfg = meter_configs(merge({})["meter"])[0]
        client = FakeClient(nodes=[[(0x028E02, DT_V2H, ID_A)]])
        ch = MeterChannel(0, client, None, None, cfg)
        asyncio.run(ch.select_instance())
        self.assertEqual(client.calls, [])
        self.assertEqual(client.selected, [0x028E02])  # the node's only meter object
        self.assertIsNone(ch.ambiguous)
        self.assertNotIn("ERROR", "\n".join(self.lines))

    def test_unreadable_instance_list_reads_the_configured_object(self):
        # Found in review: a node whose 0xD6 list is missing, malformed or unanswered kept
        # select_instance waiting for ever, so an ordinary meter was never metered.
        for err in (MeterError("no usable instance list"), MeterTimeout("no reply")):
            self.lines.clear()
            cfg = meter_configs(merge({})["meter"])[0]
            client = FakeClient(list_error=err)
            ch = MeterChannel(0, client, None, None, cfg)
            asyncio.run(asyncio.wait_for(ch.select_instance(), 30))
            self.assertEqual(client.selected, [])  # the configured 0x028E01 is read
            self.assertIsNone(ch.ambiguous)
            text = "\n".join(self.lines)
            self.assertIn("unreadable after 3 tries", text)
            self.assertIn("0x028E01", text)

    def test_one_object_is_not_asked_for_its_ids(self):
        # A meter that drops Gets of 0xD0/0xD6 on its object must not stall selection: they
        # are asked only when several objects must be named.
        cfg = meter_configs(merge({})["meter"])[0]
        client = FakeClient(nodes=[[(0x028E01, DT_V2H, ID_A)]])
        ch = MeterChannel(0, client, None, None, cfg)
        asyncio.run(ch.select_instance())
        self.assertEqual(client.asked_ids, [False])

    def test_two_meter_objects_and_no_selector_refuse_to_meter(self):
        # A V2H PCS with two 0x028E objects: nothing is read until one of them is chosen (here
        # the node drops one after three refusals); each refusal is an ERROR naming both
        # candidates and the keys to set, and the channel shows it.
        two = [(0x028E01, DT_V2H, ID_A), (0x028E02, DT_V2H, ID_B)]
        cfg = meter_configs(merge({})["meter"])[0]
        client = FakeClient(nodes=[two, two, two, two[1:]])
        ch = MeterChannel(0, client, None, None, cfg)
        ch.ambiguous_repeat_ms = 1
        client.channel = ch
        asyncio.run(ch.select_instance())
        self.assertEqual(client.ambiguous_seen, [None, "0x028E01,0x028E02",
                                                 "0x028E01,0x028E02", "0x028E01,0x028E02"])
        errors = [ln for ln in self.lines if ln.startswith("ERROR")]
        self.assertEqual(len(errors), 3)
        for e in errors:
            self.assertIn("NOT METERING", e)
            self.assertIn("meter.device_type", e)
            self.assertIn("meter.metered_id", e)
            self.assertIn('0x028E02 device_type="027e00" metered_id="feffffff5632482d5043532d'
                          '3030303032"', e)
        self.assertEqual(client.selected, [0x028E02])
        self.assertIsNone(ch.ambiguous)

    def test_an_eoj_chosen_per_meter_is_a_selector(self):
        two = [(0x028E01, DT_V2H, ID_A), (0x028E02, DT_V2H, ID_B)]
        cfgs = meter_configs(merge({"meter": {"list": [{"eoj": 0x028E01},
                                                       {"eoj": 0x028E02}]}})["meter"])
        for cfg in cfgs:
            client = FakeClient(nodes=[two])
            ch = MeterChannel(0, client, None, None, cfg)
            asyncio.run(ch.select_instance())
            self.assertEqual(client.selected, [])  # the configured object is read as it is
            self.assertIsNone(ch.ambiguous)
        self.assertNotIn("ERROR", "\n".join(self.lines))
        cfg = meter_configs(merge({"meter": {"eoj": 0x028E02}})["meter"])[0]
        self.assertTrue(cfg["eoj_chosen"])  # an instance other than 1 is a choice too
        self.assertFalse(meter_configs(merge({})["meter"])[0]["eoj_chosen"])


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

