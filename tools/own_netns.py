"""Run a host tool (demo, bench) in a network namespace of its own when the machine allows it.

A fresh namespace has nothing but its own loopback interface, so a run there cannot meet any
other run's sockets, whatever addresses either picks. The tool re-executes itself as

    unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh python -m tools.X ARGS

(root, `unshare` and `ip` needed; the namespace disappears with its last process, so nothing is
left to clean up after a crash). Where that is impossible (not root, no `unshare`, a container
that refuses CLONE_NEWNET) or switched off with SIM_NETNS=0, the tool stays on the host's
loopback and each deployment reserves its own /24 (tools/loopback_block.py). Either way the mode
is printed.

The pytest lanes stay on the reserved blocks: CPython 3.11 has no os.unshare()/os.setns() (3.12
added them), so a test process cannot enter a namespace for one test and come back, and
unsharing the whole pytest process would only move the collision to the next pytest run.
"""

import os
import shutil
import subprocess
import sys

# Set for the re-executed tool: the namespace it was started from, so that it can tell that it
# really runs in another one.
ENV_PARENT = "TERMINAL_SIM_PARENT_NETNS"
ENV_SWITCH = "SIM_NETNS"  # "0": stay on the host's loopback


def current_netns():
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def in_own_netns():
    """True if this process runs in a namespace that reexec_in_own_netns() made for it."""
    parent = os.environ.get(ENV_PARENT)
    here = current_netns()
    return bool(parent and here and here != parent)


def unavailable_reason():
    """None if a private network namespace can be made here, else why not."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return "switched off by %s=0" % ENV_SWITCH
    if os.environ.get(ENV_PARENT):
        return "re-executed once already, still in the namespace it started from"
    if current_netns() is None:
        return "/proc/self/ns/net unreadable (cannot tell namespaces apart)"
    if os.geteuid() != 0:
        return "not root"
    for tool in ("unshare", "ip", "sh"):
        if shutil.which(tool) is None:
            return "no `%s` on PATH" % tool
    try:
        probe = subprocess.run(["unshare", "--net", "--", "ip", "link", "set", "lo", "up"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unshare --net failed: %s" % e
    if probe.returncode != 0:
        return "unshare --net refused: %s" % (probe.stderr.strip() or probe.returncode)
    return None


def mode_line():
    """One line saying where this process's deployments live."""
    if in_own_netns():
        return "network: own network namespace (unshare --net), loopback only"
    return ("network: host loopback, each deployment on its own reserved 127.a.b.0/24 "
            "(tools/loopback_block.py)")


def reexec_in_own_netns(module, argv, out=print):
    """Called first in a tool's main(): re-executes `python -m module argv` in a new network
    namespace with its loopback up, and never returns; or, when already there or when that is
    impossible, returns after printing the mode (and why)."""
    if in_own_netns():
        out(mode_line())
        return
    reason = unavailable_reason()
    if reason is not None:
        out(mode_line() + "; no namespace: " + reason)
        return
    out("network: re-running in a network namespace of its own (unshare --net)")
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ)
    env[ENV_PARENT] = current_netns()
    cmd = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, "-m", module] + list(argv)
    os.execvpe("unshare", cmd, env)


def main():
    """`python -m tools.own_netns`: show the mode a tool would get here (and the namespace)."""
    reexec_in_own_netns("tools.own_netns", sys.argv[1:])
    print("netns %s" % current_netns())


if __name__ == "__main__":
    main()
