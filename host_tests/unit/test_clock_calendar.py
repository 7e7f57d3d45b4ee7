# The calendar clock's discipline (docs/clock.md): slew small offsets without skipping or
# repeating a second (so no :00/:30 boundary), step large ones, hold a step while a capture runs
# (bounded), and the IC 8 status: invalid until the first set, doubtful long after the last.
import unittest

from clock_fakes import make_clock

from firmware import timeutil
from firmware.hal import clock as clockmod

# 2025-04-10 12:29:30 JST: 30 s before a boundary
T0 = timeutil.t2k_from_fields(2025, 4, 10, 3, 29, 30)


class ClockTest(unittest.TestCase):
    def make(self, rate=1, slew_max_s=60, doubtful_after_s=0, hold_max_ms=60000):
        c, self.ticks = make_clock(doubtful_after_s, slew_max_s, rate, hold_max_ms)
        self.heard = []
        c.add_listener(lambda old, new: self.heard.append((old, new, c.last_kind)))
        return c

    def walk(self, c, real_ms, step_ms, boundary=None):
        """now_t2k() every step_ms for real_ms, each reading 0 or 1 s after the one before (no
        second skipped or repeated). Returns how often `boundary` was passed."""
        prev = c.now_t2k()
        passed = 0
        for _ in range(real_ms // step_ms):
            self.ticks.ms += step_ms
            t = c.now_t2k()
            if t - prev not in (0, 1):
                self.fail("clock went from %d to %d" % (prev, t))
            if boundary is not None and prev < boundary <= t:
                passed += 1
            prev = t
        return passed

    def test_unset_clock_is_invalid_and_the_first_set_steps(self):
        c = self.make()
        self.assertIsNone(c.now_t2k())
        self.assertEqual(c.status(), clockmod.STATUS_INVALID)
        c.set_t2k(T0)
        self.assertEqual(c.now_t2k(), T0)
        self.assertEqual(c.status(), 0)
        self.assertEqual(self.heard, [(None, T0, clockmod.STEP)])

    def test_forward_slew_passes_every_second_and_converges(self):
        c = self.make()
        c.set_t2k(T0)
        self.ticks.ms += 400  # a fraction of a second in: the set is whole seconds
        c.set_t2k(T0 + 40)  # 40 s fast: slewed at 1 s per 10 s
        self.assertEqual(self.heard[-1], (T0, T0 + 40, clockmod.SLEW))
        self.assertEqual(c.now_t2k(), T0)  # nothing jumped
        # the boundary 30 s after T0 is passed exactly once (not skipped, not repeated)
        self.assertEqual(self.walk(c, 600000, 100, boundary=T0 + 30), 1)
        # the offset is absorbed within 400 s (+10 %), then the clock runs at rate again
        self.assertEqual(c.slewing_ms(), 0)
        self.assertEqual(c.now_t2k(), T0 + 40 + 600)
        self.assertEqual(c.stats["steps"], 1)

    def test_backward_slew_never_repeats_a_second(self):
        c = self.make()
        c.set_t2k(T0)
        c.set_t2k(T0 - 60)  # the bound itself still slews
        self.assertEqual(c.last_kind, clockmod.SLEW)
        self.assertEqual(self.walk(c, 500000, 250, boundary=T0 + 30), 1)
        # the clock ran at 0.9 so far: 450 s in 500 s
        self.assertEqual(c.now_t2k(), T0 + 450)
        self.walk(c, 200000, 250)
        self.assertEqual(c.now_t2k(), T0 - 60 + 700)

    def test_slew_is_exact_at_an_accelerated_rate_and_across_reanchors(self):
        c = self.make(rate=60)  # the host simulation's clock
        c.set_t2k(T0)
        c.set_t2k(T0 + 59)
        self.walk(c, 2 * 3600000, 9)  # two re-anchors, odd tick steps
        self.assertEqual(c.now_t2k(), T0 + 59 + 2 * 3600 * 60)

    def test_a_new_set_replaces_the_slew_in_progress(self):
        c = self.make()
        c.set_t2k(T0)
        c.set_t2k(T0 + 50)
        self.walk(c, 100000, 100)  # 10 s of the 50 slewed: the clock reads T0 + 110
        self.assertEqual(c.now_t2k(), T0 + 110)
        c.set_t2k(T0 + 100)  # the smart meter says: 10 s fast now
        self.assertEqual(c.slewing_ms(), -10000)
        self.walk(c, 200000, 100)
        self.assertEqual(c.now_t2k(), T0 + 100 + 200)

    def test_offset_beyond_slew_max_steps_at_once(self):
        c = self.make()
        c.set_t2k(T0)
        c.set_t2k(T0 + 61)
        self.assertEqual(c.now_t2k(), T0 + 61)
        self.assertEqual(self.heard[-1], (T0, T0 + 61, clockmod.STEP))
        self.assertEqual(c.last_offset, 61)

    def test_slew_off_steps_every_set(self):
        c = self.make(slew_max_s=0)
        c.set_t2k(T0)
        c.set_t2k(T0 + 5)
        self.assertEqual(c.now_t2k(), T0 + 5)
        self.assertEqual(c.last_kind, clockmod.STEP)

    def test_step_waits_for_the_capture_and_carries_the_time_waited(self):
        c = self.make()
        c.set_t2k(T0)
        c.hold()
        c.set_t2k(T0 + 3600)
        self.assertTrue(c.step_pending())
        self.assertEqual(c.now_t2k(), T0)  # not yet: the capture in progress keeps its side
        self.ticks.ms += 7000
        c.poll()  # within hold_max_ms: still waits
        self.assertEqual(c.now_t2k(), T0 + 7)
        c.release()
        self.assertFalse(c.step_pending())
        self.assertEqual(c.now_t2k(), T0 + 3600 + 7)
        self.assertEqual(self.heard[-1], (T0 + 7, T0 + 3607, clockmod.STEP))
        self.assertEqual(c.stats["deferred"], 1)

    def test_nested_holds_and_a_slew_during_a_hold(self):
        c = self.make()
        c.set_t2k(T0)
        c.hold()
        c.hold()  # two meters capturing
        c.set_t2k(T0 + 20)  # a slew never waits: it skips no boundary
        self.assertFalse(c.step_pending())
        c.set_t2k(T0 - 3600)
        c.release()
        self.assertTrue(c.step_pending())
        c.release()
        self.assertEqual(c.now_t2k(), T0 - 3600)
        self.assertEqual(c.slewing_ms(), 0)  # the step superseded the slew

    def test_a_hanging_capture_holds_the_step_for_hold_max_ms_only(self):
        c = self.make(hold_max_ms=30000)
        c.set_t2k(T0)
        c.hold()
        c.set_t2k(T0 + 86400)
        self.ticks.ms += 29999
        c.poll()
        self.assertTrue(c.step_pending())
        self.ticks.ms += 1
        c.poll()
        self.assertFalse(c.step_pending())
        self.assertEqual(c.now_t2k(), T0 + 86400 + 30)
        self.assertEqual(c.stats["overdue"], 1)
        c.release()  # the capture ends later: nothing more happens
        self.assertEqual(c.now_t2k(), T0 + 86400 + 30)

    def test_doubtful_after_the_configured_time_without_a_set(self):
        c = self.make(doubtful_after_s=2 * 86400)
        c.set_t2k(T0)
        self.ticks.ms += 2 * 86400 * 1000
        self.assertEqual(c.status(), 0)
        self.ticks.ms += 1000
        self.assertEqual(c.status(), clockmod.STATUS_DOUBTFUL)
        c.set_t2k(c.now_t2k() + 2)  # any set (a slew too) makes it good again
        self.assertEqual(c.status(), 0)

    def test_never_doubtful_when_switched_off(self):
        c = self.make(doubtful_after_s=0)
        c.set_t2k(T0)
        self.ticks.ms += 400 * 86400 * 1000
        self.assertEqual(c.status(), 0)


if __name__ == "__main__":
    unittest.main()
