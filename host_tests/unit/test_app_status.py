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

    async def candidates(self):
        return TWO


class Box:
    """The parts of a Terminal that its status reads (a whole Terminal needs a HAL)."""

    session = None
    status = Terminal.status
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
        self.assertEqual(box.status()["ambiguous"], {})

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
        st = box.status()
        self.assertEqual(st["ambiguous"], {0: "0x028E01,0x028E02"})
        self.assertEqual(st["unexpected"], 3)
        box._log_status()
        alive = [ln for ln in self.lines if "alive:" in ln]
        self.assertEqual(len(alive), 1)
        self.assertTrue(alive[0].startswith("WARN"))
        self.assertIn("unexpected=3", alive[0])
        self.assertIn("NOT METERING meter0: 0x028E01,0x028E02", alive[0])


if __name__ == "__main__":
    unittest.main()
