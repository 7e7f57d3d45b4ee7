"""Compile every firmware source with mpy-cross for the ESP32 (xtensawin); any failure fails.

Usage: python tools/check_mpy.py MPY_CROSS FILE... [--out DIR]
Prints the total .mpy size (KB), which `make bench` reports as firmware.mpy_total_kb.
"""

import os
import subprocess
import sys
import tempfile


def compile_all(mpy_cross, files, out_dir, arch="xtensawin"):
    """Compile files into out_dir (same relative paths). arch=None gives portable bytecode, which
    the host's unix-port micropython loads (the demo runs the firmware from such a tree)."""
    total = 0
    failures = []
    for f in files:
        dst = os.path.join(out_dir, os.path.splitext(f)[0] + ".mpy")
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        # written aside and renamed: deployments built by parallel test workers share the host
        # tree (build/host-mpy), and a micropython loading a half-written .mpy fails
        tmp = "%s.%d.tmp" % (dst, os.getpid())
        cmd = [mpy_cross, "-O2", "-o", tmp, f]
        if arch:
            cmd.insert(1, "-march=" + arch)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            failures.append((f, (r.stderr or r.stdout).strip()))
            if os.path.exists(tmp):
                os.remove(tmp)
        else:
            os.replace(tmp, dst)
            total += os.path.getsize(dst)
    return total, failures


def main(argv):
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        out = argv[i + 1]
        del argv[i : i + 2]
    mpy_cross, files = argv[0], argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        total, failures = compile_all(mpy_cross, files, out or tmp)
    for f, err in failures:
        print("mpy-cross FAILED %s: %s" % (f, err))
    print("mpy-cross -march=xtensawin: %d files, %d failed, %.1f KB" % (
        len(files), len(failures), total / 1024))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
