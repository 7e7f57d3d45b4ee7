# Run host_tests/unit/test_*.py under the MicroPython unix port.
# Usage: MICROPYPATH=tools/mpunit:. micropython -X heapsize=256k tools/mpunit/run.py DIR [pattern]
# Prints one line per failure and a closing "N passed, N failed" line; exits 1 on any failure.
import gc
import os
import sys
import unittest


def _modules(d, pattern):
    names = sorted(n for n in os.listdir(d) if n.startswith("test_") and n.endswith(".py"))
    return [n[:-3] for n in names if pattern in n]


def main():
    if ".frozen" not in sys.path:
        sys.path.append(".frozen")  # asyncio & co. are frozen modules; MICROPYPATH hides them
    d = sys.argv[1] if len(sys.argv) > 1 else "host_tests/unit"
    pattern = sys.argv[2] if len(sys.argv) > 2 else ""
    sys.path.insert(0, d)
    passed = failed = skipped = 0
    for modname in _modules(d, pattern):
        try:
            mod = __import__(modname)
        except Exception as e:
            failed += 1
            print("FAIL import %s: %s %s" % (modname, type(e).__name__, e))
            sys.print_exception(e)
            continue
        for cname in dir(mod):
            cls = getattr(mod, cname)
            if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
                continue
            if cls is unittest.TestCase:
                continue
            for tname in sorted(dir(cls)):
                if not tname.startswith("test"):
                    continue
                inst = cls()
                try:
                    inst.setUp()
                    try:
                        getattr(inst, tname)()
                    finally:
                        inst.tearDown()
                    passed += 1
                except unittest.SkipTest as e:
                    skipped += 1
                    print("skip %s.%s.%s: %s" % (modname, cname, tname, e))
                except Exception as e:
                    failed += 1
                    print("FAIL %s.%s.%s: %s %s" % (modname, cname, tname, type(e).__name__, e))
                    sys.print_exception(e)
                gc.collect()
        del sys.modules[modname]
        gc.collect()
    print("micropython: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed else 0)


main()
