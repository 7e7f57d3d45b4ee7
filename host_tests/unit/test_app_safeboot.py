# Boot-loop detection (firmware/app/safeboot.py, docs/product.md "Safe boot"): each boot counted
# before anything else, stable after stable_s, safe mode after max_resets unstable boots in a row,
# left by clear(); the start-up decision's order.
import asyncio
import os
import unittest

from firmware import log
from firmware.app import config, safeboot


def _run_id():
    # unique per interpreter: pytest-xdist runs this file's tests in several processes at once
    return "".join("%02x" % b for b in os.urandom(4))


_DIR = "/tmp/test_app_safeboot_%s" % _run_id()
_PATH = _DIR + "/safeboot.json"


def _clean():
    try:
        names = os.listdir(_DIR)
    except OSError:
        os.mkdir(_DIR)
        return
    for n in names:
        os.remove(_DIR + "/" + n)


def boot(n_resets):
    """n_resets boots that each died before becoming stable, then this boot's enter()."""
    for _ in range(n_resets):
        safeboot.enter(_PATH)
    return safeboot.enter(_PATH)


SETUP_PROBLEM = [(config.SETUP, "radio.pana_password", "is missing")]
KEEP_PROBLEM = [(config.KEEP_DEFAULT, "meter.bogus", "unknown key")]


class SafeBootTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        _clean()

    def tearDown(self):
        log.set_sink(None)
        _clean()

    def test_path_next_to_the_state_file(self):
        self.assertEqual(safeboot.path_for("/data/state.json"), "/data/safeboot.json")
        self.assertEqual(safeboot.path_for("state.json"), "safeboot.json")

    def test_each_boot_counted_before_anything_else(self):
        self.assertEqual(safeboot.enter(_PATH), 1)
        self.assertEqual(safeboot.enter(_PATH), 2)  # the first one never became stable
        self.assertEqual(safeboot.unstable(), 2)

    def test_max_resets_unstable_boots_in_a_row_is_a_loop(self):
        boot(3)
        self.assertFalse(safeboot.boot_loop(4))  # 3 resets: not yet
        self.assertEqual(safeboot.decide(4, [], config.SETUP), 0)
        safeboot.enter(_PATH)  # a 4th reset before stable_s
        self.assertTrue(safeboot.boot_loop(4))
        self.assertEqual(safeboot.decide(4, [], config.SETUP), safeboot.WHY_BOOT_LOOP)

    def test_a_stable_boot_starts_the_count_again(self):
        boot(3)
        safeboot.stable()
        self.assertEqual(boot(3), 4)  # three more resets after the stable boot: no loop
        self.assertFalse(safeboot.boot_loop(4))

    def test_stable_after_uptime(self):
        boot(5)
        asyncio.run(safeboot.stable_after(0))
        self.assertEqual(safeboot.enter(_PATH), 1)

    def test_clear_at_the_repl_leaves_safe_mode(self):
        boot(6)
        self.assertTrue(safeboot.boot_loop(4))
        safeboot.clear()  # no argument: the path of the last enter()
        self.assertEqual(safeboot.enter(_PATH), 1)
        self.assertFalse(safeboot.boot_loop(4))

    def test_clear_by_path_from_the_setup_page(self):
        boot(6)
        safeboot.clear(_PATH)
        self.assertEqual(safeboot.enter(_PATH), 1)

    def test_decision_order(self):
        boot(0)
        self.assertEqual(safeboot.decide(4, KEEP_PROBLEM, config.SETUP), 0)
        self.assertEqual(safeboot.decide(4, SETUP_PROBLEM, config.SETUP), safeboot.WHY_CONFIG)
        safeboot.request()
        self.assertEqual(safeboot.enter(_PATH), 2)
        self.assertEqual(safeboot.decide(4, SETUP_PROBLEM, config.SETUP),
                         safeboot.WHY_REQUESTED)
        boot(4)
        self.assertEqual(safeboot.decide(4, SETUP_PROBLEM, config.SETUP),
                         safeboot.WHY_BOOT_LOOP)
        safeboot.stable()  # a stable boot also ends a request
        safeboot.enter(_PATH)
        self.assertEqual(safeboot.decide(4, [], config.SETUP), 0)

    def test_damaged_file_counts_from_one(self):
        boot(6)
        with open(_PATH, "w") as f:
            f.write('{"unstable": 9}\nffffffff\n')
        self.assertEqual(safeboot.enter(_PATH), 1)
        self.assertIn("unreadable", "\n".join(self.lines))

    def test_unwritable_place_never_stops_the_boot(self):
        self.assertEqual(safeboot.enter("/nonexistent-dir/x/safeboot.json"), 1)
        self.assertFalse(safeboot.boot_loop(4))
        self.assertIn("boot count not kept", "\n".join(self.lines))

    def test_hold_feeds_the_watchdog_and_says_why(self):
        class Hal:
            fed = 0

            def feed_watchdog(self):
                Hal.fed += 1

        async def body():
            t = asyncio.create_task(safeboot.hold(Hal(), safeboot.WHY_BOOT_LOOP, every_s=1))
            await asyncio.sleep(1.2)  # the one-second loop passes its first reminder
            t.cancel()

        asyncio.run(body())
        self.assertGreaterEqual(Hal.fed, 1)
        self.assertIn("safe mode (boot loop)", "\n".join(self.lines))


if __name__ == "__main__":
    unittest.main()
