# Minimal unittest-compatible TestCase for the MicroPython unix port (host test lane only).
# host_tests/unit/* are plain unittest.TestCase files: pytest runs them on CPython with the real
# unittest; tools/mpunit/run.py runs the same files under `micropython -X heapsize=...` with this.


class SkipTest(Exception):
    pass


class _Raises:
    def __init__(self, exc):
        self.expected = exc
        self.exception = None

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            raise AssertionError("%s not raised" % self.expected.__name__)
        if issubclass(et, self.expected):
            self.exception = ev
            return True
        return False


class _SubTest:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def skip(reason):
    def deco(fn):
        def wrapper(*a, **k):
            raise SkipTest(reason)

        return wrapper

    return deco


def skipIf(cond, reason):
    return skip(reason) if cond else (lambda fn: fn)


def skipUnless(cond, reason):
    return skipIf(not cond, reason)


class TestCase:
    def setUp(self):
        pass

    def tearDown(self):
        pass

    def subTest(self, *a, **k):
        return _SubTest()

    def skipTest(self, reason):
        raise SkipTest(reason)

    def fail(self, msg=None):
        raise AssertionError(msg or "fail")

    def assertEqual(self, a, b, msg=None):
        if not a == b:
            raise AssertionError(msg or "%r != %r" % (a, b))

    def assertNotEqual(self, a, b, msg=None):
        if a == b:
            raise AssertionError(msg or "%r == %r" % (a, b))

    def assertTrue(self, x, msg=None):
        if not x:
            raise AssertionError(msg or "%r is not true" % (x,))

    def assertFalse(self, x, msg=None):
        if x:
            raise AssertionError(msg or "%r is not false" % (x,))

    def assertIs(self, a, b, msg=None):
        if a is not b:
            raise AssertionError(msg or "%r is not %r" % (a, b))

    def assertIsNone(self, x, msg=None):
        if x is not None:
            raise AssertionError(msg or "%r is not None" % (x,))

    def assertIsNotNone(self, x, msg=None):
        if x is None:
            raise AssertionError(msg or "unexpectedly None")

    def assertIn(self, a, b, msg=None):
        if a not in b:
            raise AssertionError(msg or "%r not in %r" % (a, b))

    def assertNotIn(self, a, b, msg=None):
        if a in b:
            raise AssertionError(msg or "%r in %r" % (a, b))

    def assertIsInstance(self, x, t, msg=None):
        if not isinstance(x, t):
            raise AssertionError(msg or "%r is not %r" % (x, t))

    def assertGreater(self, a, b, msg=None):
        if not a > b:
            raise AssertionError(msg or "%r <= %r" % (a, b))

    def assertGreaterEqual(self, a, b, msg=None):
        if not a >= b:
            raise AssertionError(msg or "%r < %r" % (a, b))

    def assertLess(self, a, b, msg=None):
        if not a < b:
            raise AssertionError(msg or "%r >= %r" % (a, b))

    def assertLessEqual(self, a, b, msg=None):
        if not a <= b:
            raise AssertionError(msg or "%r > %r" % (a, b))

    def assertRaises(self, exc, fn=None, *a, **k):
        ctx = _Raises(exc)
        if fn is None:
            return ctx
        with ctx:
            fn(*a, **k)
        return ctx


def main():
    raise SystemExit("run tests with tools/mpunit/run.py")
