"""Runs that never collide: a deployment's loopback /24 is reserved by an exclusive lock until it
is released (tools/loopback_block.py), and `make demo`/`make bench` move into a network namespace
of their own where the machine allows it (tools/own_netns.py)."""

import asyncio
import os
import socket
import subprocess
import sys

from tools import loopback_block, own_netns
from tools.deployment import Deployment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Rng:
    """randrange() answers from a fixed list of blocks (a, b), so that two reservations are forced
    to try the same block first."""

    def __init__(self, blocks):
        self._vals = [v for ab in blocks for v in ab]

    def randrange(self, lo, hi):
        v = self._vals.pop(0)
        assert lo <= v < hi
        return v


def test_two_reservations_never_share_a_block(tmp_path):
    first = loopback_block.reserve(rng=_Rng([(201, 7)]), lock_dir=str(tmp_path))
    try:
        # the second run draws the same block first: the lock sends it on to the next one
        second = loopback_block.reserve(rng=_Rng([(201, 7), (201, 8)]), lock_dir=str(tmp_path))
        try:
            assert first.prefix == "127.201.7."
            assert second.prefix == "127.201.8."
        finally:
            second.release()
    finally:
        first.release()


_RACER = """
import random, sys, time
from tools import loopback_block

class Rng:  # six blocks for six runs: without the lock, two of them would share one
    def __init__(self):
        self.r = random.Random()
        self.b = None

    def randrange(self, lo, hi):
        if self.b is None:
            self.b = self.r.randrange(6)
            return 206
        b, self.b = self.b, None
        return b

start = float(sys.argv[2])
while time.time() < start:  # every run draws at the same moment
    pass
r = loopback_block.reserve(rng=Rng(), lock_dir=sys.argv[1])
print(r.prefix, flush=True)
time.sleep(1.0)  # hold it while the others draw
r.release()
"""


def test_six_runs_at_once_on_six_blocks_all_differ(tmp_path):
    import time

    start = "%.3f" % (time.time() + 1.0)
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), start], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    got = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        got.append(out.strip())
    assert sorted(got) == ["127.206.%d." % b for b in range(6)], got


def test_a_released_block_can_be_reserved_again(tmp_path):
    r = loopback_block.reserve(rng=_Rng([(202, 9)]), lock_dir=str(tmp_path))
    assert r.held
    r.release()
    assert not r.held
    again = loopback_block.reserve(rng=_Rng([(202, 9)]), lock_dir=str(tmp_path))
    assert again.prefix == "127.202.9."
    again.release()


def test_a_block_locked_by_another_process_is_skipped(tmp_path):
    path = tmp_path / "127.203.4.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'a+b'); fcntl.flock(f, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(30)\n", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = loopback_block.reserve(rng=_Rng([(203, 4), (203, 5)]), lock_dir=str(tmp_path))
        assert r.prefix == "127.203.5."
        r.release()
    finally:
        holder.kill()
        holder.wait(5)
    # the holder is gone, and so is its lock: no block is leaked by a run that dies
    r = loopback_block.reserve(rng=_Rng([(203, 4)]), lock_dir=str(tmp_path))
    assert r.prefix == "127.203.4."
    r.release()


def test_a_block_in_use_outside_the_lock_is_skipped(tmp_path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.204.1.2", loopback_block.ECHONET_PORT))  # a meter nobody reserved
    try:
        r = loopback_block.reserve(rng=_Rng([(204, 1), (204, 2)]), lock_dir=str(tmp_path))
        assert r.prefix == "127.204.2."
        r.release()
    finally:
        s.close()
    assert loopback_block.ports_free("127.204.1.")


def test_no_free_block_is_an_error(tmp_path):
    held = loopback_block.reserve(rng=_Rng([(205, 1)]), lock_dir=str(tmp_path))
    try:
        try:
            loopback_block.reserve(tries=3, rng=_Rng([(205, 1)] * 3), lock_dir=str(tmp_path))
        except RuntimeError as e:
            assert "no free loopback /24" in str(e)
        else:
            raise AssertionError("a held block was handed out")
    finally:
        held.release()


def test_a_deployment_holds_its_block_until_stop():
    dep = Deployment()
    prefix = dep.net
    assert dep.reservation.held
    name = "%s.lock" % prefix.rstrip(".")
    assert loopback_block._lock(os.path.join(loopback_block.LOCK_DIR, name)) is None
    asyncio.run(dep.stop())
    assert not dep.reservation.held
    f = loopback_block._lock(os.path.join(loopback_block.LOCK_DIR, name))
    assert f is not None
    f.close()


def test_a_tool_runs_in_its_own_namespace_or_says_why_not():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(own_netns.ENV_PARENT, None)
    env.pop(own_netns.ENV_SWITCH, None)
    r = subprocess.run([sys.executable, "-m", "tools.own_netns"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    reason = own_netns.unavailable_reason()
    ns = r.stdout.strip().splitlines()[-1]
    if reason is None:  # root with unshare (CI, this machine): a namespace of its own
        assert "own network namespace" in r.stdout
        assert ns.startswith("netns net:[") and ns != "netns %s" % own_netns.current_netns()
    else:
        assert reason in r.stdout and ns == "netns %s" % own_netns.current_netns()


def test_the_namespace_can_be_switched_off():
    env = dict(os.environ, PYTHONPATH=ROOT, SIM_NETNS="0")
    env.pop(own_netns.ENV_PARENT, None)
    r = subprocess.run([sys.executable, "-m", "tools.own_netns"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert "switched off by SIM_NETNS=0" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "netns %s" % own_netns.current_netns()
