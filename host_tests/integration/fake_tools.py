"""Fake command-line tools that play the device for the provisioning and deployment tests
(test_provision.py, test_deploy.py): executable Python scripts written into the test's directory.

A fake mpremote's source runs after MPREMOTE_ARGS, which gives it `dev` (the directory standing
for the device's filesystem, $FAKE_DEVICE), `args` (its argv: connect PORT <cmd> [+ <cmd> ...])
and `cmds` (the commands, split at the "+" as mpremote chains them)."""

import sys
import textwrap

MPREMOTE_ARGS = r'''
import hashlib, json, os, shutil, stat, sys
dev = os.environ["FAKE_DEVICE"]
args = sys.argv[1:]
cmds, cur = [], []
for a in args[2:]:
    if a == "+":
        cmds.append(cur)
        cur = []
    else:
        cur.append(a)
cmds.append(cur)
'''


def write_tool(path, source, mpremote=False):
    """An executable script at path (a pathlib.Path) running source under this interpreter, after
    MPREMOTE_ARGS when mpremote; the path as text."""
    head = MPREMOTE_ARGS if mpremote else ""
    path.write_text("#!%s\n%s%s" % (sys.executable, head, textwrap.dedent(source)))
    path.chmod(0o755)
    return str(path)
