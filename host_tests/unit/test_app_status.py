# The terminal's status (the minute "alive" line): a meter that is not metered because several
# meter objects answer and none is chosen is shown there, as are the bugs the loops survived.
import asyncio
import unittest

from firmware import log
from firmware.app.config import DEFAULTS
from firmware.app.meters import MeterChannel, meter_configs
from firmware.app.terminal import Terminal

TWO = [(0x028E01, b"\x02\x7e\x00", None), (0x028E02, b"\x02\x7e\x00", None)]


class TwoObjectsClient:
    addr = ("10.0.0.5", 3610)
    deoj = 0x028E01

    async def candidates(self, ids=True):
        return TWO if ids else [(c[0], None, None) for c in TWO]


class Box:
    """The parts of a Terminal that its status reads (a whole Terminal needs a HAL)."""

    session = None
    _log_status = Terminal._log_status


class StatusTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def test_ambiguous_meter_and_unexpected_errors_are_in_the_status(self):
        cfg = meter_configs(DEFAULTS["meter"])[0]
        ch = MeterChannel(0, TwoObjectsClient(), None, None, cfg)
        box = Box()
        box.channels = [ch]
        box._log_status()
        self.assertTrue(self.lines[-1].startswith("INFO terminal: alive:"))
        self.assertNotIn("NOT METERING", self.lines[-1])

        async def refuse_once():
            task = asyncio.create_task(ch.select_instance())
            for _ in range(10):
                await asyncio.sleep(0)
                if ch.ambiguous:
                    break
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

        asyncio.run(refuse_once())
        ch.poller.stats["unexpected"] = 2
        ch.planner.stats["unexpected"] = 1
        self.assertEqual(ch.ambiguous, "0x028E01,0x028E02")
        box._log_status()
        alive = [ln for ln in self.lines if "alive:" in ln]
        self.assertEqual(len(alive), 2)
        self.assertTrue(alive[1].startswith("WARN"))
        self.assertIn("unexpected=3", alive[1])
        self.assertIn("NOT METERING meter0: 0x028E01,0x028E02", alive[1])


if __name__ == "__main__":
    unittest.main()
