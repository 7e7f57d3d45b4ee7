import unittest

from firmware import log
from firmware.app import config


class ConfigTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_defaults(self):
        c = config.merge({})
        self.assertEqual(c["meter"]["eoj"], 0x028E01)
        self.assertEqual(c["dlms"]["time_zone_min"], -540)

    def test_override_and_bad_entries_keep_running(self):
        c = config.merge({
            "meter": {"ip": "127.0.0.9", "timeout_ms": "fast", "bogus": 1},
            "nosuch": {},
            "radio": 7,
        })
        self.assertEqual(c["meter"]["ip"], "127.0.0.9")
        self.assertEqual(c["meter"]["timeout_ms"], 5000)
        text = "\n".join(self.lines)
        self.assertIn("meter.timeout_ms", text)
        self.assertIn("meter.bogus", text)
        self.assertIn("nosuch", text)
        self.assertIn("section 'radio'", text)

    def test_bool_is_not_int(self):
        c = config.merge({"meter": {"retries": True}, "dlms": {"push": 1}})
        self.assertEqual(c["meter"]["retries"], 3)
        self.assertEqual(c["dlms"]["push"], False)

    def test_secret_never_logged(self):
        secret = "S3cretPassw0rd"
        config.merge({"radio": {"pana_password": secret, "mode": "x"}, "lan": {"wifi_psk": 5}})
        config.merge({"dlms": {"lls_password": secret}})
        log.info("t", "joining with password %s" % secret)
        text = "\n".join(self.lines)
        self.assertNotIn(secret, text)
        self.assertIn("***", text)

    def test_missing_and_broken_files(self):
        c = config.load("/nonexistent/config.json")
        self.assertEqual(c["meter"]["port"], 3610)
        path = "/tmp/_terminal_cfg_test.json"
        with open(path, "w") as f:
            f.write("{not json")
        c = config.load(path)
        self.assertEqual(c["meter"]["port"], 3610)
        self.assertIn("not valid JSON", "\n".join(self.lines))
