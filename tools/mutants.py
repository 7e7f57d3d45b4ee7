"""Mutation lane: break the code on purpose, one known way at a time, and check a test notices.

  python tools/mutants.py [-j 2] [--no-baseline] [--list] [name ...]

The mutants are listed in tools/mutants.toml (file, exact snippet, replacement, the test commands
that must kill it; README "Mutation lane" says how to add one). For each mutant the source tree
(firmware/, tools/, host_tests/, boot.py, main.py, ...) is copied to a temporary directory, the
snippet is replaced there (never in the working tree: other lanes may be running on it) and the
commands run in that copy, in order, until one fails: the mutant is then killed. A command:

  pytest ARGS...   CPython pytest (-q -x) on ARGS
  mp PATTERN       the MicroPython unit lane (tools/mp_tests.py) on host_tests/unit files
  python ARGS...   any script, with this interpreter

Checks before anything runs (each failure is reported, and the lane fails):
  - every snippet occurs exactly once in its file (a refactor must update the list),
  - the mutated file still compiles and differs from the original,
  - with --baseline (the default) every command passes on the unmutated copy, so a kill is the
    mutant's doing and not a broken or empty command (pytest exit 4/5, "no tests ran", count as
    errors, never as kills).

Exit 0 only when every mutant is killed. Prints one line per mutant and the wall time.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIST = os.path.join(ROOT, "tools", "mutants.toml")
# what a test run needs from the tree; bench/, build/, .git and caches stay behind
_COPY = ("firmware", "tools", "host_tests", "lib", "boards", "boot.py", "main.py",
         "pyproject.toml")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
_TIMEOUT_S = 240  # per command: a mutant that hangs a test is killed by the timeout
_PYTEST_KILL = (1, 2)  # tests failed; interrupted (e.g. the mutant breaks an import)
_MAX_JOBS = 2  # the machine has 2 cores, shared with the other lanes


class ListError(Exception):
    pass


def load(path=LIST):
    with open(path, "rb") as f:
        data = tomllib.load(f)
    mutants = data.get("mutant", [])
    names = set()
    for m in mutants:
        for key in ("name", "file", "find", "replace", "killed_by"):
            if key not in m:
                raise ListError("mutant %r: no %r" % (m.get("name", "?"), key))
        if m["name"] in names:
            raise ListError("mutant %r listed twice" % m["name"])
        names.add(m["name"])
        if not m["killed_by"]:
            raise ListError("mutant %r: no test command" % m["name"])
    return mutants


def check(m, root=ROOT):
    """Problems with applying mutant m to the tree at root (empty list: none)."""
    path = os.path.join(root, m["file"])
    if not os.path.isfile(path):
        return ["%s: file %s not found" % (m["name"], m["file"])]
    with open(path) as f:
        src = f.read()
    n = src.count(m["find"])
    if n != 1:
        return ["%s: snippet found %d times in %s (must be exactly once: update the entry in "
                "tools/mutants.toml)" % (m["name"], n, m["file"])]
    out = src.replace(m["find"], m["replace"])
    if out == src:
        return ["%s: replacement changes nothing" % m["name"]]
    try:
        compile(out, m["file"], "exec")
    except SyntaxError as e:
        return ["%s: mutated %s does not compile: %s" % (m["name"], m["file"], e)]
    problems = []
    for cmd in m["killed_by"]:
        try:
            argv(cmd)
        except ListError as e:
            problems.append("%s: %s" % (m["name"], e))
    return problems


def argv(cmd):
    words = shlex.split(cmd)
    if not words:
        raise ListError("empty command")
    kind, args = words[0], words[1:]
    if kind == "pytest":
        return [sys.executable, "-m", "pytest", "-q", "-x"] + args
    if kind == "mp":
        return [sys.executable, os.path.join("tools", "mp_tests.py")] + args
    if kind == "python":
        return [sys.executable] + args
    raise ListError("command %r: must start with pytest, mp or python" % cmd)


def copy_tree(dst):
    os.makedirs(dst, exist_ok=True)
    for name in _COPY:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dst, name), ignore=_IGNORE)
        elif os.path.exists(src):
            shutil.copy2(src, os.path.join(dst, name))
    venv = os.path.join(ROOT, ".venv")
    if os.path.exists(venv):
        os.symlink(os.path.realpath(venv), os.path.join(dst, ".venv"))


def run(cmd, cwd):
    """(verdict, seconds, output tail): verdict 'fail', 'pass', 'error' or 'timeout'."""
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        r = subprocess.run(argv(cmd), cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0, ""
    out = (r.stdout + r.stderr)[-3000:]
    dt = time.monotonic() - t0
    if r.returncode == 0:
        if cmd.startswith("mp ") and " 0 passed, 0 failed" in out:
            return "error", dt, out  # the pattern matched no test file
        return "pass", dt, out
    if cmd.startswith("pytest") and r.returncode not in _PYTEST_KILL:
        return "error", dt, out  # usage error, no tests collected: cannot kill anything
    return "fail", dt, out


def baseline(commands, tmp):
    """Every command must pass on the unmutated tree. Returns problems."""
    where = os.path.join(tmp, "baseline")
    copy_tree(where)
    problems = []
    for cmd in commands:
        verdict, dt, out = run(cmd, where)
        print("baseline  %-6s %5.1f s  %s" % (verdict, dt, cmd), flush=True)
        if verdict != "pass":
            problems.append("baseline: %r gives %s on the unmutated tree:\n%s"
                            % (cmd, verdict, out))
    return problems


def attack(m, tmp):
    """Apply m to a fresh copy and run its commands until one fails. Returns a result dict."""
    where = os.path.join(tmp, m["name"])
    copy_tree(where)
    path = os.path.join(where, m["file"])
    with open(path) as f:
        src = f.read()
    with open(path, "w") as f:
        f.write(src.replace(m["find"], m["replace"]))
    res = {"name": m["name"], "killed_by": None, "seconds": 0.0, "errors": []}
    for cmd in m["killed_by"]:
        verdict, dt, out = run(cmd, where)
        res["seconds"] += dt
        if verdict in ("fail", "timeout"):
            res["killed_by"] = cmd + (" (timeout)" if verdict == "timeout" else "")
            break
        if verdict == "error":
            res["errors"].append("%r: %s" % (cmd, out))
    shutil.rmtree(where, ignore_errors=True)
    return res


def main(argv_):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=_MAX_JOBS)
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running the commands on the unmutated tree")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("names", nargs="*", help="only these mutants")
    a = ap.parse_args(argv_)
    t0 = time.monotonic()
    try:
        mutants = load()
    except (ListError, tomllib.TOMLDecodeError) as e:
        print("mutants: %s: %s" % (LIST, e))
        return 1
    if a.names:
        unknown = set(a.names) - {m["name"] for m in mutants}
        if unknown:
            print("mutants: unknown %s" % ", ".join(sorted(unknown)))
            return 1
        mutants = [m for m in mutants if m["name"] in a.names]
    if a.list:
        for m in mutants:
            print("%-36s %-32s %s" % (m["name"], m["file"], " | ".join(m["killed_by"])))
        return 0
    problems = []
    for m in mutants:
        problems += check(m)
    if problems:
        print("mutants: the list does not apply to this tree:\n  " + "\n  ".join(problems))
        return 1
    jobs = max(1, min(a.jobs, _MAX_JOBS))
    commands = []
    for m in mutants:
        for cmd in m["killed_by"]:
            if cmd not in commands:
                commands.append(cmd)
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        if not a.no_baseline:
            problems = baseline(commands, tmp)
            if problems:
                print("\n".join(problems))
                print("mutants: FAILED (a test command does not pass on the unmutated tree)")
                return 1
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(lambda m: attack(m, tmp), mutants))
    survived = 0
    for r in results:
        if r["killed_by"]:
            print("killed    %-36s %5.1f s  by %s" % (r["name"], r["seconds"], r["killed_by"]))
        else:
            survived += 1
            print("SURVIVED  %-36s %5.1f s" % (r["name"], r["seconds"]))
        for e in r["errors"]:
            print("          error: %s" % e)
    print("mutants: %d of %d killed in %.0f s (%d jobs)"
          % (len(results) - survived, len(results), time.monotonic() - t0, jobs))
    if survived:
        print("mutants: FAILED: a test must notice each mutant (tools/mutants.toml)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
