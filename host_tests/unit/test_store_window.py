import unittest

from firmware import log
from firmware.hal.norflash import NorFlash
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

S0 = 960528  # 2024-10-15T00:00Z


class SharedWindowTableTest(unittest.TestCase):
    """Range reads share one preallocated window table; interleaved or abandoned reads must
    still return exactly the stored rows."""

    def setUp(self):
        log.set_sink(lambda line: None)
        self.st = IntervalStore(FlashLog(NorFlash(16, block_size=1024)), max_meters=2)
        self.want = []
        for i in range(300):  # more than three windows, with gaps
            if i % 7 == 3:
                continue
            self.st.put(0, S0 + i, 1000 + i, 7 * i, 0x01, "fixed")
            self.st.put(1, S0 + i, 5000 + i, i, 0x01, "fixed")
            self.want.append(S0 + i)

    def tearDown(self):
        log.set_sink(None)

    def test_interleaved_reads_of_two_meters(self):
        a = self.st.rows(0, S0, S0 + 299)
        b = self.st.rows(1, S0, S0 + 299)
        got_a, got_b = [], []
        for ra, rb in zip(a, b):
            got_a.append(ra)
            got_b.append(rb)
        self.assertEqual([r[0] for r in got_a], self.want)
        self.assertEqual([r[0] for r in got_b], self.want)
        self.assertEqual([r[1] for r in got_a], [1000 + s - S0 for s in self.want])
        self.assertEqual([r[1] for r in got_b], [5000 + s - S0 for s in self.want])

    def test_nested_read_inside_a_read(self):
        outer = []
        for row in self.st.rows(0, S0, S0 + 299):
            outer.append(row[0])
            if len(outer) % 50 == 0:
                self.assertEqual(self.st.count(1), len(self.want))
                inner = list(self.st.rows(1, row[0], row[0] + 3))
                self.assertGreater(len(inner), 0)
        self.assertEqual(outer, self.want)

    def test_abandoned_reads_reuse_the_shared_table(self):
        # like a DLMS block transfer: a new read per block, the previous one never finished
        for k in range(40):
            it = self.st.rows(0, S0 + k, S0 + 299)
            self.assertEqual(next(it)[0] >= S0 + k, True)
        self.assertEqual(self.st.private_tables, 0)

    def test_interleaving_is_what_costs_a_private_table(self):
        a = self.st.rows(0, S0, S0 + 299)
        next(a)
        list(self.st.rows(1, S0, S0 + 10))  # takes the table while `a` is suspended
        self.assertEqual(len(list(a)), len(self.want) - 1)
        self.assertEqual(self.st.private_tables, 1)

    def test_rows_by_index_interleaved_with_rows(self):
        it = self.st.rows_by_index(0, 1, len(self.want))
        first = [next(it) for _ in range(120)]
        list(self.st.rows(1, S0, S0 + 299))  # takes the shared table meanwhile
        rest = list(it)
        self.assertEqual([r[0] for r in first + rest], self.want)
