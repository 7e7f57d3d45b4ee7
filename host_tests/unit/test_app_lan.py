import asyncio
import unittest

from firmware import log
from firmware.app.lan import LanSupervisor


class FakeHal:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def lan_up(self):
        self.calls += 1
        return self.answers.pop(0) if self.answers else True


class LanSupervisorTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_backoff_until_up_then_hooks(self):
        hal = FakeHal([False, False, False, True])
        sup = LanSupervisor(hal, backoff_min_ms=1, backoff_max_ms=4)
        seen = []
        sup.on_up.append(lambda: seen.append("rejoin multicast"))
        asyncio.run(sup.wait_up())
        self.assertTrue(sup.up)
        self.assertEqual(hal.calls, 4)
        self.assertEqual(seen, ["rejoin multicast"])

    def test_drop_and_reconnect_runs_hooks_again(self):
        hal = FakeHal([True, True, False, False, True])
        sup = LanSupervisor(hal, check_ms=1, backoff_min_ms=1, backoff_max_ms=2)
        seen = []
        sup.on_up.append(lambda: seen.append(1))

        async def go():
            t = asyncio.create_task(sup.run())
            for _ in range(200):
                await asyncio.sleep(0.005)
                if sup.stats["ups"] >= 2:
                    break
            t.cancel()

        asyncio.run(go())
        self.assertEqual(sup.stats["downs"], 1)
        self.assertEqual(len(seen), 2)
        self.assertIn("link down", "\n".join(self.lines))

    def test_failing_hook_is_logged_not_fatal(self):
        hal = FakeHal([True])
        sup = LanSupervisor(hal)

        def bad():
            raise OSError("no multicast")

        sup.on_up.append(bad)
        asyncio.run(sup.wait_up())
        self.assertTrue(sup.up)
        self.assertIn("link-up hook failed", "\n".join(self.lines))
