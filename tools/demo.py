"""Whole-deployment simulation on one host: meter -> terminal (firmware) -> Wi-SUN module -> smart
meter/head-end, with the calendar clock accelerated.

  python -m tools.demo [--days 2] [--rate 1800] [--heap 256k] [--runtime micropython|cpython]

The firmware runs as a separate process under the real `micropython` binary (unix port) with a
capped heap. Each party has its own loopback address (see docs/architecture.md); the run goes into
a network namespace of its own when the machine allows it (tools/own_netns.py; SIM_NETNS=0 keeps
it on the host's loopback, on a reserved /24). The run ends with
  intervals expected=N delivered=N missing=0
and exits 0 only when nothing is missing and every delivered value equals the meter's ground truth.
"""

import argparse
import asyncio
import sys
import time

from firmware import timeutil
from tools import own_netns
from tools.deployment import Deployment

JST = 540


async def run_demo(days, rate, heap, runtime, seed, verbose, out=print):
    dep = Deployment(rate=rate, seed=seed, heap=heap, runtime=runtime)
    out("network: deployment on %s0/24" % dep.net)
    await dep.start()
    sim, model = dep.sim, dep.model
    head = dep.head_end(tz_offset_min=JST, out=out)
    result = {"expected": 0, "delivered": 0, "missing": 0, "mismatched": 0, "read_errors": 0,
              "workdir": dep.workdir}
    try:
        await head.connect(timeout_s=60, alive=dep.firmware_alive)
        await head.sync_clock()
        end_t2k = head.clock_set_at + int(days * timeutil.DAY_S)
        first_b = head.clock_set_at - head.clock_set_at % timeutil.SLOT_S + timeutil.SLOT_S
        out("head-end: reading the 30-minute profile for %g simulated days (x%d)" % (days, rate))
        next_b = first_b
        while next_b <= end_t2k:
            # Read each slot 5 simulated minutes after its boundary.
            await asyncio.sleep(sim.wall_seconds_until(next_b + 300))
            if not dep.firmware_alive():
                raise RuntimeError("firmware exited with %s" % dep.proc.returncode)
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
        alive = dep.firmware_alive()
        await dep.stop()
        result["firmware_alive"] = alive
        if verbose:
            out(dep.terminal_log())
    return result


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
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    r = asyncio.run(run_demo(a.days, a.rate, a.heap, a.runtime, a.seed, a.verbose))
    print("terminal log and flash image: %s (%.0f s)" % (r["workdir"], time.monotonic() - t0))
    if r["mismatched"]:
        print("intervals mismatched=%d" % r["mismatched"])
    print("intervals expected=%d delivered=%d missing=%d"
          % (r["expected"], r["delivered"], r["missing"]))
    ok = r["missing"] == 0 and r["mismatched"] == 0 and r["expected"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    own_netns.reexec_in_own_netns("tools.demo", sys.argv[1:])  # only when run as a program
    sys.exit(main())
