import os
import unittest

from firmware import log
from firmware.store.state import StateFile

_PATH = "/tmp/test_store_state.json"


def _rm(p):
    try:
        os.remove(p)
    except OSError:
        pass


class StateFileTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        _rm(_PATH)
        _rm(_PATH + ".tmp")

    def tearDown(self):
        log.set_sink(None)
        _rm(_PATH)
        _rm(_PATH + ".tmp")

    def test_defaults_set_and_reload(self):
        s = StateFile(_PATH)
        self.assertIsNone(s.get("boots"))
        self.assertEqual(s.get("boots", 0), 0)
        self.assertTrue(s.set("boots", 1))
        self.assertFalse(s.set("boots", 1))
        self.assertTrue(s.update({"boots": 2, "last_slot": 960531}))
        self.assertFalse(s.update({"boots": 2}))
        self.assertEqual(s.writes, 2)
        s2 = StateFile(_PATH)
        self.assertEqual(s2.get("boots"), 2)
        self.assertEqual(s2.get("last_slot"), 960531)
        with open(_PATH) as f:
            self.assertTrue(f.read().endswith("\n"))

    def test_leftover_tmp_from_a_cut_is_ignored(self):
        StateFile(_PATH).set("k", 1)
        with open(_PATH + ".tmp", "w") as f:
            f.write('{"k": 2')  # cut while writing the temporary file
        s = StateFile(_PATH)
        self.assertEqual(s.get("k"), 1)
        s.set("k", 3)
        self.assertEqual(StateFile(_PATH).get("k"), 3)

    def test_damaged_file_falls_back_to_defaults_and_logs(self):
        StateFile(_PATH).set("k", 1)
        with open(_PATH) as f:
            text = f.read()
        with open(_PATH, "w") as f:
            f.write(text.replace("1", "7", 1))
        s = StateFile(_PATH)
        self.assertIsNone(s.get("k"))
        self.assertTrue([x for x in self.lines if "unreadable" in x])
        with open(_PATH, "w") as f:
            f.write("garbage")
        self.assertIsNone(StateFile(_PATH).get("k"))
