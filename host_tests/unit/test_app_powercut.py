import unittest

from powercut_scenario import count_ops, run_case


class PowerCutScenarioTest(unittest.TestCase):
    """Capture loop + backfill + store, cut at every flash operation of a half-day scenario, clean
    and torn (the full matrix over days is host_tests/integration/test_app_powercut_matrix.py)."""

    DAYS = 0.5

    def test_uncut_run_is_exact(self):
        sc = run_case(self.DAYS, None, False)
        sc.check(self)
        self.assertEqual(sc.reboots, 0)

    def test_cut_at_every_operation(self):
        ops = count_ops(self.DAYS)
        self.assertGreater(ops, 20)
        cases = 0
        for k in range(1, ops + 1):
            for tear in (False, True):
                sc = run_case(self.DAYS, k, tear)
                sc.check(self)
                self.assertGreaterEqual(sc.reboots, 1)
                cases += 1
        print("power-cut scenario: %d cases over %d flash operations" % (cases, ops))
