import unittest

from firmware import log
from firmware.hal.norflash import NorFlash
from firmware.store import record as r
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore, StoreError

S0 = 960528  # 2024-10-15T00:00Z


class IntervalStoreTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)
        self.f = NorFlash(8, block_size=256)
        self.st = self.open()

    def tearDown(self):
        log.set_sink(None)

    def open(self, meters=2):
        return IntervalStore(FlashLog(self.f), max_meters=meters)

    def test_put_get_and_remount(self):
        self.assertTrue(self.st.put(0, S0, 100000, 5, 0x01, "fixed"))
        self.assertEqual(self.st.get(0, S0), (100000, 5, 1, r.SOURCE_FIXED, 0))
        self.assertIsNone(self.st.get(0, S0 + 1))
        self.assertIsNone(self.st.get(1, S0))
        st2 = self.open()
        self.assertEqual(st2.get(0, S0), (100000, 5, 1, r.SOURCE_FIXED, 0))
        self.assertTrue(st2.has(0, S0))
        self.assertFalse(st2.has(0, S0 + 1))
        self.assertFalse(st2.has(1, S0))

    def test_poller_sink_protocol(self):
        self.assertFalse(self.st.has(1, S0))
        self.assertTrue(self.st.store(1, S0, 3, 4, 1, "fixed", r.FLAG_CLOCK_ADJUSTED))
        self.assertTrue(self.st.has(1, S0))
        self.assertEqual(self.st.get(1, S0), (3, 4, 1, r.SOURCE_FIXED, r.FLAG_CLOCK_ADJUSTED))

    def test_same_value_is_not_written_again(self):
        self.assertTrue(self.st.put(0, S0, 7, 8, 1, "fixed"))
        before = self.f.bytes_programmed
        self.assertFalse(self.st.put(0, S0, 7, 8, 1, r.SOURCE_FIXED))
        self.assertEqual(self.f.bytes_programmed, before)
        st2 = self.open()  # the mount seals its weak slot (docs/flash-log.md §4): 24 bytes
        before = self.f.bytes_programmed
        self.assertFalse(st2.put(0, S0, 7, 8, 1, "fixed"))
        self.assertEqual(self.f.bytes_programmed, before)

    def test_better_source_and_late_backfill_supersede(self):
        self.st.put(0, S0, 10, 1, 1, "cumulative")
        self.assertTrue(self.st.put(0, S0, 11, 1, 1, "history"))  # late backfill
        self.assertEqual(self.st.get(0, S0)[:4], (11, 1, 1, r.SOURCE_HISTORY))
        self.assertTrue(self.st.put(0, S0, 12, 1, 1, "fixed"))
        self.assertFalse(self.st.put(0, S0, 13, 1, 1, "history"))  # worse: ignored
        self.assertFalse(self.st.put(0, S0, 14, 1, 1, "cumulative"))
        self.assertEqual(self.st.get(0, S0)[0], 12)
        self.assertEqual(self.open().get(0, S0)[0], 12)
        self.assertEqual(self.st.count(0), 1)
        self.assertEqual(len(list(self.st.rows(0))), 1)

    def test_available_value_replaces_unavailable(self):
        self.st.put(0, S0, 10, r.NO_DATA, 1, "fixed", r.FLAG_UNAVAILABLE)
        self.assertTrue(self.st.put(0, S0, 10, 20, 1, "history"))
        self.assertEqual(self.st.get(0, S0), (10, 20, 1, r.SOURCE_HISTORY, 0))

    def test_conflicting_value_same_source_keeps_first(self):
        self.st.put(0, S0, 10, 1, 1, "fixed")
        self.assertFalse(self.st.put(0, S0, 99, 1, 1, "fixed"))
        self.assertEqual(self.st.get(0, S0)[0], 10)
        self.assertTrue([x for x in self.lines if "conflicting" in x])

    def test_flags_are_merged_for_the_same_value(self):
        self.st.put(0, S0, 10, 1, 1, "fixed", r.FLAG_CLOCK_ADJUSTED)
        self.assertTrue(self.st.put(0, S0, 10, 1, 1, "fixed", r.FLAG_POWER_DOWN))
        self.assertEqual(self.st.get(0, S0)[4], r.FLAG_CLOCK_ADJUSTED | r.FLAG_POWER_DOWN)
        self.assertFalse(self.st.put(0, S0, 10, 1, 1, "fixed", r.FLAG_POWER_DOWN))

    def test_rows_with_missing_slots_and_meters(self):
        self.f = NorFlash(8, block_size=1024)  # 42 slots per sector: no wrap in this test
        self.st = self.open()
        present = [i for i in range(150) if i % 4 != 1 and not (60 <= i < 70)]
        for i in present:
            self.st.put(0, S0 + i, i, 2 * i, 1, "fixed")
            if i % 3 == 0:
                self.st.put(1, S0 + i, 1000 + i, 0, 2, "cumulative")
        rows = list(self.st.rows(0, S0 + 10, S0 + 120))
        want = [i for i in present if 10 <= i <= 120]
        self.assertEqual([row[0] - S0 for row in rows], want)
        self.assertEqual(rows[0], (S0 + 10, 10, 20, 1, r.SOURCE_FIXED, 0))
        self.assertEqual([row[0] - S0 for row in self.st.rows(1)],
                         [i for i in present if i % 3 == 0])
        self.assertEqual(list(self.st.rows(0, S0 + 60, S0 + 69)), [])
        self.assertEqual(list(self.st.rows(0, S0 + 200, S0 + 300)), [])
        self.assertEqual(self.st.first_slot(0), S0)
        self.assertEqual(self.st.last_slot(0), S0 + present[-1])
        self.assertEqual(self.st.count(0), len(present))
        self.assertEqual(list(self.st.missing(0, S0 + 58, S0 + 72)),
                         [S0 + i for i in range(58, 73) if i not in present])

    def test_rows_by_index(self):
        for i in range(0, 40, 2):
            self.st.put(0, S0 + i, i, 0, 1, "fixed")
        self.assertEqual([row[0] - S0 for row in self.st.rows_by_index(0, 1, 3)], [0, 2, 4])
        self.assertEqual([row[0] - S0 for row in self.st.rows_by_index(0, 19, 25)], [36, 38])
        self.assertEqual(list(self.st.rows_by_index(0, 21, 30)), [])
        self.assertEqual(list(self.st.rows_by_index(0, 0, 3)), [])

    def test_rows_by_index_marks_follow_changes(self):
        self.f = NorFlash(8, block_size=4096)  # 170 slots per sector
        self.st = self.open()

        def check(pairs):
            for first, last in pairs:
                want = []
                k = 0
                for row in self.st.rows(0):  # streamed: the MicroPython heap is small
                    k += 1
                    if first <= k <= last:
                        want.append(row)
                got = list(self.st.rows_by_index(0, first, last))
                self.assertEqual(got, want, (first, last))

        for i in range(0, 1700, 2):
            if i % 50 != 7:
                self.st.put(0, S0 + i, i, 0, 1, "fixed")
        n = self.st.count(0)
        pairs = [(1, 3), (n - 47, n), (n // 2, n // 2 + 100), (n, n + 5), (400, 400)]
        check(pairs)
        self.assertIsNotNone(self.st._marks[0])
        self.assertGreater(len(self.st._marks[0]), 2)
        check(pairs)  # from the marks this time
        self.st.put(0, S0 + 1000 + 1, 1, 0, 1, "history")  # backfill a gap: entries move
        check([(500, 520), (n - 10, n + 1)])
        self.st.put(0, S0 + 5000, 1, 0, 1, "fixed")  # a new newest row: marks stay valid
        marks = self.st._marks[0]
        self.assertIsNotNone(marks)
        check([(n - 1, n + 2), (1, 1)])
        self.assertEqual(self.st._marks[0][:len(marks)], marks)  # kept (and maybe extended)
        self.st.put(0, S0 + 57, 1, 0, 1, "history")  # marks dropped
        self.assertIsNone(self.st._marks[0])
        it = self.st.rows_by_index(0, 1, n + 10)  # a pass that builds marks ...
        next(it)
        self.st.put(0, S0 + 3, 1, 0, 1, "history")  # ... while an older row appears
        for _row in it:
            pass
        check([(1, 5), (n - 3, n + 3), (700, 703)])

    def test_backfill_after_wrap_and_remount(self):
        # 8 sectors x 10 slots: the ring wraps and the oldest sectors are dropped
        for i in range(100):
            if i % 10 != 7:
                self.st.put(0, S0 + i, i, 0, 1, "fixed")
        first = self.st.first_slot(0)
        self.assertGreater(first, S0)
        tail = first + 30
        filled = []
        for i in range(7, 100, 10):
            if S0 + i > tail:
                self.assertTrue(self.st.put(0, S0 + i, i, 0, 1, "history"))
                filled.append(S0 + i)
        self.assertGreater(len(filled), 1)
        st2 = self.open()
        rows = list(st2.rows(0, tail, S0 + 99))
        self.assertEqual([row[0] for row in rows], list(range(tail, S0 + 100)))
        for row in rows:
            src = r.SOURCE_HISTORY if row[0] in filled else r.SOURCE_FIXED
            self.assertEqual(row, (row[0], row[0] - S0, 0, 1, src, 0))
        self.assertEqual(st2.count(0), len(list(st2.rows(0))))
        self.assertGreaterEqual(st2.count(0), st2.log.capacity())

    def test_count_follows_drops(self):
        self.assertEqual(self.st.count(0), 0)  # cached from here on: kept up to date
        self.assertEqual(self.st.count(1), 0)
        for i in range(200):
            self.st.put(0, S0 + i, i, 0, 1, "cumulative")
            if i % 3 == 0:
                self.st.put(1, S0 + i, i, 0, 1, "cumulative")
            if i >= 12 and i % 4 == 0:  # upgrade a recent slot: the old record is superseded
                self.assertTrue(self.st.put(0, S0 + i - 12, i - 12, 0, 1, "fixed"))
            if i % 9 == 0:
                self.assertEqual(self.st.count(0), len(list(self.st.rows(0))))
                self.assertEqual(self.st.count(1), len(list(self.st.rows(1))))
        self.assertLessEqual(self.st.count(0), 70)
        self.assertEqual(self.st.count(0), self.open().count(0))

    def test_count_when_the_replaced_record_is_dropped_by_the_same_put(self):
        self.assertEqual(self.st.count(0), 0)
        for i in range(150):
            self.st.put(0, S0 + i, i, 0, 1, "cumulative")
            if i % 2:
                continue
            # upgrade the oldest slot still holding a cumulative value: its only record sits in
            # the oldest sector, which the append may drop while it opens a new sector
            for row in self.st.rows(0):
                if row[4] == r.SOURCE_CUMULATIVE:
                    self.assertTrue(self.st.put(0, row[0], row[1], 0, 1, "fixed"))
                    break
            self.assertEqual(self.st.count(0), len(list(self.st.rows(0))), i)

    def test_bit_flip_in_one_sector_only_loses_that_record(self):
        for i in range(30):
            self.st.put(0, S0 + i, i, 0, 1, "fixed")
        sec = self.st.log.order[1]
        self.f.corrupt(sec, 16 + 3 * 24 + 13, 0x10)
        st2 = self.open()
        slots = [row[0] - S0 for row in st2.rows(0)]
        self.assertEqual(len(slots), 29)
        self.assertEqual(st2.log.stats["bad_records"], 1)
        self.assertEqual(list(st2.missing(0, S0, S0 + 29)), [S0 + 13])

    def test_bad_arguments(self):
        self.assertRaises(StoreError, self.st.put, 2, S0, 1, 1, 1, "fixed")
        self.assertRaises(StoreError, self.st.get, -1, S0)
        self.assertRaises(r.RecordError, self.st.put, 0, S0, 1 << 32, 1, 1, "fixed")
        self.assertRaises(r.RecordError, self.st.put, 0, S0, 1, 1, 1, "guess")
        self.assertIsNone(self.st.get(0, S0))
        self.assertTrue(issubclass(StoreError, ValueError))
        # slots stay below 2^30 - 1 (small ints on the ESP32): t2k beyond year 60000 is refused
        from firmware.store.intervals import SLOT_LIMIT

        self.assertRaises(StoreError, self.st.put, 0, SLOT_LIMIT, 1, 1, 1, "fixed")
        self.assertRaises(StoreError, self.st.put, 0, -1, 1, 1, 1, "fixed")
        self.assertTrue(self.st.put(0, SLOT_LIMIT - 1, 1, 1, 1, "fixed"))
        self.assertEqual(self.st.get(0, SLOT_LIMIT - 1)[:2], (1, 1))
        self.assertEqual(self.st.last_slot(0), SLOT_LIMIT - 1)

    def test_lookups_allocate_nothing_per_sector(self):
        # has()/last_slot() walk every sector of the ring at every capture pass: the index is
        # read item by item, no tuple per sector
        import gc

        for k in range(40):
            self.st.put(0, S0 + k, 1000 + k, 5, 1, "fixed")
        if not hasattr(gc, "mem_alloc"):
            return  # CPython: no heap counter
        gc.collect()
        gc.disable()
        try:
            a = gc.mem_alloc()
            for _ in range(20):
                self.st.last_slot(0)
                self.st.first_slot(0)
            used = gc.mem_alloc() - a
        finally:
            gc.enable()
        self.assertLess(used, 20 * 64)  # was one tuple per sector per call

    def test_rows_stream_with_bounded_allocation(self):
        import gc

        self.f = NorFlash(8, block_size=2048)  # 84 slots per sector
        self.st = self.open()
        for i in range(400):
            self.st.put(0, S0 + i, i, 0, 1, "fixed")
        gc.collect()
        has_mem = hasattr(gc, "mem_alloc")  # MicroPython: measure what the iterator keeps
        base = gc.mem_alloc() if has_mem else 0
        grown = 0
        n = 0
        for row in self.st.rows(0):
            self.assertEqual(row[1], row[0] - S0)
            n += 1
            if n == 350 and has_mem:
                gc.collect()
                grown = gc.mem_alloc() - base
        self.assertEqual(n, 400)
        # a window table (2.3 KB) and small objects, not 350 rows (> 20 KB as a list)
        self.assertLess(grown, 6000)
