"""Whole-deployment simulation on one host: meter -> terminal (firmware) -> Wi-SUN module -> smart
meter/head-end, with the calendar clock accelerated.

  python -m tools.demo [--days 2] [--rate 1800] [--heap 256k] [--runtime micropython|cpython]
                       [--terminals 1..4] [--web]

--web: each terminal serves its status page (docs/product.md) on its own loopback address with a
password printed at the start, and the deployment stays up after the run until Ctrl-C, so that a
browser on this machine can look at it (the run then stays on the host's loopback: a browser
cannot reach a private network namespace).

The firmware runs as a separate process under the real `micropython` binary (unix port) with a
capped heap. Each party has its own loopback address (see docs/architecture.md); the run goes into
a network namespace of its own when the machine allows it (tools/own_netns.py; SIM_NETNS=0 keeps
it on the host's loopback, on a reserved /24). Every terminal (its own meter emulator, firmware
process and J11 module emulator) is attached to one smart-meter twin (tools/smartmeter.py: PAN
coordinator, time authority, the 920 MHz air at 100 kbit/s), through which its head-end reads it.
The run ends with
  intervals expected=N delivered=N missing=0
(with --terminals N > 1, one such line per terminal: "terminal k: intervals expected=...") and
exits 0 only when, for every terminal, nothing is missing and every delivered value equals its
meter's ground truth.
"""

import argparse
import asyncio
import os
import sys
import time

from firmware import timeutil
from tools import own_netns
from tools.deployment import TwinDeployment, default_heap
from tools.loopback_block import free_tcp_port

JST = 540
WEB_PORT = 8080
WEB_HEAP_KB = 16  # the web server's code from .mpy and a request in flight (docs/memory.md)


async def run_demo(days, rate, heap, runtime, seed, verbose, out=print, terminals=1,
                   on_stop=None, web=False):
    """The demo's run: one result per terminal (a list), each with expected, delivered,
    missing, mismatched, read_errors, workdir, firmware_alive and air (the twin's figures).
    on_stop(dep): called with the TwinDeployment before it stops (tests look at the twin).
    web: the terminals serve their status pages, and stay up after the run until cancelled."""
    overrides = None
    if web:
        import secrets

        password = secrets.token_urlsafe(9)
        overrides = {"web": {"enabled": True, "password": password, "port": WEB_PORT}}
        heap = heap or "%dk" % (int(default_heap()[:-1]) + WEB_HEAP_KB)
    dep = TwinDeployment(terminals=terminals, rate=rate, seed=seed, heap=heap, runtime=runtime,
                         config_overrides=overrides)
    out("network: deployment on %s0/24" % dep.net)
    if web:
        for t in dep.terminals:
            port = free_tcp_port(t.terminal_ip, WEB_PORT)
            t.overrides["web"] = dict(overrides["web"], port=port)
            out("status page: http://%s:%d/ (any user name, password %s)"
                % (t.terminal_ip, port, password))
    if terminals > 1:
        out("twin: %d terminals attached to one smart-meter twin (PAN coordinator, time "
            "authority, 100 kbit/s shared air)" % terminals)
    await dep.start()
    try:
        results = await asyncio.gather(*[
            _run_terminal(dep, t, days, _prefixed(out, t.index) if terminals > 1 else out)
            for t in dep.terminals])
        if web:
            for line in summary_lines(results):
                out(line)
            out("the deployment stays up for the browser: Ctrl-C ends it")
            await asyncio.Event().wait()
    finally:
        alive = [t.firmware_alive() for t in dep.terminals]
        if on_stop is not None:
            on_stop(dep)
        await dep.stop()
        if verbose:
            for t in dep.terminals:
                out(t.terminal_log())
    for k, r in enumerate(results):
        r["firmware_alive"] = alive[k]
        r["air"] = dep.twin.figures(k)
    return results


def _prefixed(out, k):
    return lambda msg: out("terminal %d: %s" % (k, msg))


async def _run_terminal(dep, term, days, out):
    """One terminal's head-end: associate, set its clock from the twin's calendar, read each
    slot 5 simulated minutes after its boundary, then audit the whole range against its meter's
    ground truth."""
    sim, model = dep.sim, term.model
    head = term.head_end(tz_offset_min=JST, out=out)
    result = {"expected": 0, "delivered": 0, "missing": 0, "mismatched": 0, "read_errors": 0,
              "workdir": term.workdir}
    try:
        await head.connect(timeout_s=60, alive=term.firmware_alive)
        await head.sync_clock()
        end_t2k = head.clock_set_at + int(days * timeutil.DAY_S)
        first_b = head.clock_set_at - head.clock_set_at % timeutil.SLOT_S + timeutil.SLOT_S
        out("head-end: reading the 30-minute profile for %g simulated days (x%d)"
            % (days, dep.rate))
        next_b = first_b
        while next_b <= end_t2k:
            # Read each slot 5 simulated minutes after its boundary.
            await asyncio.sleep(sim.wall_seconds_until(next_b + 300))
            if not term.firmware_alive():
                raise RuntimeError("firmware exited with %s" % term.proc.returncode)
            try:
                await head.maybe_resync()
                await head.poll(next_b - 4 * timeutil.SLOT_S, next_b)
            except Exception as e:  # a lost exchange is retried with the next slot's window
                result["read_errors"] += 1
                out("head-end: read failed (%s: %s); retrying next slot" % (type(e).__name__, e))
            next_b += timeutil.SLOT_S
        last_b = next_b - timeutil.SLOT_S
        # Final audit: one range read of everything, compared with the meter's ground truth.
        head.received.clear()
        await head.poll(first_b, last_b, quiet=True)
        for b in range(first_b, last_b + 1, timeutil.SLOT_S):
            slot = timeutil.slot_of_t2k(b)
            result["expected"] += 1
            got = head.received.get(slot)
            if got is None:
                result["missing"] += 1
                out("MISSING %s" % timeutil.iso(b, JST))
            elif (got[0], got[1]) != model.served_at_slot(slot):
                result["mismatched"] += 1
                out("MISMATCH %s got %r want %r" % (timeutil.iso(b, JST), got[:2],
                                                    model.served_at_slot(slot)))
            else:
                result["delivered"] += 1
        await head.client.release()
    finally:
        head.close()
    return result


def summary_lines(results):
    """The closing lines: one terminal as before, several with one line per terminal."""
    lines = []
    for k, r in enumerate(results):
        pre = "terminal %d: " % k if len(results) > 1 else ""
        if r["mismatched"]:
            lines.append("%sintervals mismatched=%d" % (pre, r["mismatched"]))
        lines.append("%sintervals expected=%d delivered=%d missing=%d"
                     % (pre, r["expected"], r["delivered"], r["missing"]))
    return lines


def results_ok(results):
    return bool(results) and all(
        r["missing"] == 0 and r["mismatched"] == 0 and r["expected"] > 0 for r in results)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=2)
    ap.add_argument("--rate", type=int, default=1800, help="simulated seconds per real second")
    ap.add_argument("--heap", default=None,
                    help="micropython -X heapsize (default: the minimum make bench measured "
                    "plus a margin, tools/deployment.py MIN_HEAP_KB)")
    ap.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="print the terminal's log at the end")
    ap.add_argument("--terminals", type=int, default=1,
                    help="terminals attached to the smart-meter twin (1..4)")
    ap.add_argument("--web", action="store_true",
                    help="serve each terminal's status page and stay up until Ctrl-C")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        results = asyncio.run(run_demo(a.days, a.rate, a.heap, a.runtime, a.seed, a.verbose,
                                       terminals=a.terminals, web=a.web))
    except KeyboardInterrupt:
        print("demo ended by Ctrl-C")
        return 0
    dt = time.monotonic() - t0
    if len(results) == 1:
        print("terminal log and flash image: %s (%.0f s)" % (results[0]["workdir"], dt))
    else:
        for k, r in enumerate(results):
            air = r["air"]
            print("terminal %d: log and flash image %s; air: %d datagrams, %.2f s on the "
                  "medium, %.2f s transmitting (T108 budget 360 s/h)"
                  % (k, r["workdir"], air["up_datagrams"] + air["down_datagrams"],
                     air["medium_s"], air["tx_s"]))
        print("(%.0f s)" % dt)
    for line in summary_lines(results):
        print(line)
    return 0 if results_ok(results) else 1


if __name__ == "__main__":
    if "--web" in sys.argv:
        os.environ[own_netns.ENV_SWITCH] = "0"  # the browser must reach the terminals
    own_netns.reexec_in_own_netns("tools.demo", sys.argv[1:])  # only when run as a program
    sys.exit(main())
