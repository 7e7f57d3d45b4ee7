# The push scheduler's T108 hook (firmware/app/push.py): bulk traffic waits while the radio
# session keeps its air-time reserve for DLMS replies (session.may_send(True) False), without
# spending the slot's retries, and goes on when the budget is back.
import asyncio
import unittest

from test_app_push import S0, FakeSession, listening_scheduler

from firmware import log


class BudgetSession(FakeSession):
    def __init__(self):
        super().__init__()
        self.budget = False
        self.asked = []

    def may_send(self, bulk=False):
        self.asked.append(bulk)
        return self.budget


class PushGateTest(unittest.TestCase):
    def setUp(self):
        log.set_sink(lambda line: None)

    def tearDown(self):
        log.set_sink(None)

    def test_bulk_waits_for_the_reserve(self):
        store, sch = listening_scheduler()
        sess = BudgetSession()

        async def go():
            task = asyncio.create_task(sch.run(sess))
            await asyncio.sleep(0)
            store.put(0, S0 + 1, 110, 1, 0x01, "fixed")
            for _ in range(30):
                await asyncio.sleep(0.01)
            self.assertEqual(sess.sent, [])  # held: the budget is at the reserve
            self.assertTrue(sess.asked and all(sess.asked))  # asked as bulk traffic
            self.assertGreater(sch.stats["not_ready"], 0)
            self.assertEqual(sch.stats["failed"], 0)  # no retry spent
            sess.budget = True
            sch.trigger()  # waives the not-ready back-off
            for _ in range(500):
                if sess.sent:
                    break
                await asyncio.sleep(0.01)
            task.cancel()

        asyncio.run(go())
        self.assertEqual(len(sess.sent), 1)


if __name__ == "__main__":
    unittest.main()
