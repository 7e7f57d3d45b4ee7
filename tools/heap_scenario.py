"""The heap scenario of `make bench`: a whole deployment that exercises every part of the terminal
that holds or churns heap, run under `micropython -X heapsize=N` to find the smallest N that works.

  python -m tools.heap_scenario [--heap 512k] [--meters 1] [--days 2] [--rate 3600] [--verbose]
                                [--profile field|full]

Events, in order (simulated time; only the calendar clock is accelerated):
  1. boot with an empty flash log: the terminal backfills the meters' whole history (45 days, the
     emulator's 0xD3 retention), so the store holds >= 45 days of records per meter;
  2. the head-end associates, sets the clock, and reads each new slot 5 minutes after its boundary;
  3. from day 0.5 a meter outage of `outage_days` (>= 1 day; every request to every meter is
     dropped), then the meters answer again and the terminal backfills the gap;
  4. a clock step: the head-end sets the terminal's clock 600 s ahead, then back to true time;
  5. at the end a full-profile read of every meter (all stored days, block transfer) compared
     slot by slot with each meter's ground truth.
It passes when nothing is missing or wrong over the whole range and the terminal is still alive.

Profiles (docs/product.md "Profiles"): "field" is the configuration's defaults (no web server, no
MQTT, no push); "full" turns on everything that costs heap at once: the status page and JSON API
(both read after every boundary, each answer checked 200), MQTT telemetry to a real mosquitto
started here (tools/mosquitto.py) and the DLMS push of every slot to a peer on the air; a web
answer that is not 200 fails the run.
The terminal logs its heap at each milestone ("heap after ..."; "heap peak ...") when
terminal.heap_log is on: tools.bench turns those lines into firmware.heap.*.
"""

import argparse
import asyncio
import sys
import time

from firmware import timeutil
from firmware.cosem.objects import obis
from tools.deployment import Deployment
from tools.loopback_block import free_tcp_port

JST = 540
RETENTION_DAYS = 45


PROFILES = ("field", "full")
WEB_PASSWORD = "bench-web-password"
BROKER_HOST = 70  # the full profile's mosquitto and push peer: hosts of the deployment's /24
PUSH_HOST = 71
PUSH_MAC = "02005E00000000A1"


class ScenarioFailed(RuntimeError):
    pass


class FullProfile:
    """The everything-on profile's parties: mosquitto, the push peer's UDP sink, and the web
    reader that fetches /api/status and /api/slots after every boundary."""

    def __init__(self, dep):
        from firmware.radio import j11
        from tools.mosquitto import Broker

        self.dep = dep
        self.broker = Broker(dep.workdir, dep.addr(BROKER_HOST), 1883)
        self.web_port = free_tcp_port(dep.terminal_ip, 8080)
        dest = j11.ipv6_text(j11.link_local_of_mac(bytes.fromhex(PUSH_MAC)))
        dep.overrides["web"] = {"enabled": True, "password": WEB_PASSWORD,
                                "port": self.web_port}
        dep.overrides["mqtt"] = {"enabled": True, "host": dep.addr(BROKER_HOST), "port": 1883,
                                 "status_every_s": 1800}
        dep.overrides["push"] = {"enabled": True, "destination": dest, "randomisation_s": 0,
                                 "rate_per_min": 600, "burst": 20}
        self.sink = None
        self.web_ok = self.web_errors = 0

    async def start(self):
        import socket

        self.broker.start()
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind((self.dep.addr(PUSH_HOST), 4059))
        self.sink.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sink.fileno(), self._drain)
        self.dep.module.add_peer(bytes.fromhex(PUSH_MAC), (self.dep.addr(PUSH_HOST), 4059))

    def _drain(self):
        try:
            while True:
                self.sink.recv(2048)
        except OSError:
            pass

    async def read_pages(self, out):
        import base64

        auth = base64.b64encode(b"bench:" + WEB_PASSWORD.encode()).decode()
        for path in ("/api/status", "/api/slots?meter=0"):
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(
                    self.dep.terminal_ip, self.web_port), 5)
                w.write(("GET %s HTTP/1.0\r\nAuthorization: Basic %s\r\n\r\n"
                         % (path, auth)).encode())
                await w.drain()
                data = await asyncio.wait_for(r.read(), 10)
                w.close()
                ok = data.startswith(b"HTTP/1.0 200")
            except (OSError, asyncio.TimeoutError) as e:
                ok, data = False, repr(e).encode()
            if ok:
                self.web_ok += 1
            else:
                self.web_errors += 1
                out("scenario: web %s failed: %r" % (path, data[:80]))

    def stop(self):
        if self.sink is not None:
            asyncio.get_running_loop().remove_reader(self.sink.fileno())
            self.sink.close()
        self.broker.stop()


async def run_scenario(heap, meters=1, days=2.0, rate=3600, outage_days=1.0, seed=1,
                       out=print, runtime="micropython", extra_config=None, fail_fast=False,
                       profile="field"):
    """fail_fast: end the run at the first MemoryError in the terminal's log or after 4 reads
    in a row fail (a sweep only needs to know that a size fails, not how badly).
    profile: "field" (the defaults) or "full" (web, MQTT and push on: FullProfile)."""
    cfg = {"terminal": {"heap_log": True}}
    for sect, vals in (extra_config or {}).items():
        cfg.setdefault(sect, {}).update(vals)
    dep = Deployment(rate=rate, seed=seed, heap=heap, runtime=runtime, meters=meters,
                     config_overrides=cfg)
    for m in dep.meters:
        m.retention = RETENTION_DAYS
    full = FullProfile(dep) if profile == "full" else None
    await dep.start()
    if full is not None:
        await full.start()
    sim = dep.sim
    head = dep.head_end(tz_offset_min=JST, out=lambda *a: None)
    result = {"expected": 0, "delivered": 0, "missing": 0, "mismatched": 0, "read_errors": 0,
              "workdir": dep.workdir, "meters": meters}
    try:
        await head.connect(timeout_s=60, alive=dep.firmware_alive)
        await head.sync_clock()
        t0 = head.clock_set_at
        end_t2k = t0 + int(days * timeutil.DAY_S)
        outage = (t0 + timeutil.DAY_S // 2, t0 + timeutil.DAY_S // 2
                  + int(outage_days * timeutil.DAY_S))
        step_at = outage[1] + 3 * timeutil.SLOT_S
        next_b = t0 - t0 % timeutil.SLOT_S + timeutil.SLOT_S
        in_outage = stepped = False
        failed_in_row = 0
        while next_b <= end_t2k:
            await asyncio.sleep(sim.wall_seconds_until(next_b + 300))
            if not dep.firmware_alive():
                raise RuntimeError("firmware exited with %s" % dep.proc.returncode)
            if fail_fast and (failed_in_row >= 4 or "MemoryError" in dep.terminal_log()):
                raise ScenarioFailed("MemoryError or %d failed reads in a row" % failed_in_row)
            now = sim.now_t2k()
            if not in_outage and outage[0] <= now < outage[1]:
                in_outage = True
                out("scenario: meter outage from %s" % timeutil.iso(now, JST))
                for m in dep.meters:
                    m.faults["drop_prob"] = 1.0
            elif in_outage and now >= outage[1]:
                in_outage = False
                out("scenario: meters back at %s" % timeutil.iso(now, JST))
                for m in dep.meters:
                    m.faults["drop_prob"] = 0.0
            try:
                if not stepped and now >= step_at:
                    stepped = True
                    await head.client.set_clock(sim.now_t2k() + 600)
                    out("scenario: clock stepped +600 s")
                    await asyncio.sleep(1.0)
                    await head.sync_clock()
                await head.maybe_resync()
                if meters == 1:
                    await head.poll(next_b - 4 * timeutil.SLOT_S, next_b, quiet=True)
                else:  # the smart meter reads every meter's profile (channel B = k + 1)
                    for k in range(meters):
                        await head.client.get_profile(next_b - 4 * timeutil.SLOT_S, next_b,
                                                      ln=obis("1.%d.99.1.0.255" % (k + 1)))
                failed_in_row = 0
                if full is not None:
                    await full.read_pages(out)
            except Exception as e:  # a lost exchange is retried with the next slot's window
                result["read_errors"] += 1
                failed_in_row += 1
                out("scenario: read failed (%s: %s)" % (type(e).__name__, e))
            next_b += timeutil.SLOT_S
        last_b = next_b - timeutil.SLOT_S
        # let the last backfill settle, then the full-profile audit of every meter
        await asyncio.sleep(3.0)
        first_b = last_b - (RETENTION_DAYS - 1) * timeutil.DAY_S
        first_b -= first_b % timeutil.DAY_S  # from a UTC midnight inside the meters' retention
        first_b += timeutil.DAY_S
        for k in range(meters):
            ln = obis("1.%d.99.1.0.255" % (k + 1 if meters > 1 else 0))
            rows = None
            for _ in range(3):
                try:
                    rows = await head.client.get_profile(first_b, last_b, ln=ln)
                    break
                except Exception as e:
                    result["read_errors"] += 1
                    out("scenario: full read of meter %d failed (%s)" % (k, e))
                    await head.client.associate()
            got = {}
            for t, fwd, rev, _st in rows or ():
                got[timeutil.slot_of_t2k(t)] = (fwd, rev)
            for b in range(first_b, last_b + 1, timeutil.SLOT_S):
                slot = timeutil.slot_of_t2k(b)
                result["expected"] += 1
                if slot not in got:
                    result["missing"] += 1
                    if result["missing"] <= 20:
                        out("scenario: MISSING meter %d %s" % (k, timeutil.iso(b, JST)))
                elif got[slot] != dep.models[k].served_at_slot(slot):
                    result["mismatched"] += 1
                else:
                    result["delivered"] += 1
        out("scenario: full read %s .. %s, %d meter(s)" % (timeutil.iso(first_b, JST),
                                                           timeutil.iso(last_b, JST), meters))
        await head.client.release()
    finally:
        head.close()
        result["firmware_alive"] = dep.firmware_alive()
        if full is not None:
            full.stop()
            result["web_ok"], result["web_errors"] = full.web_ok, full.web_errors
        await dep.stop()
        result["log"] = dep.terminal_log()
    result["ok"] = (result["expected"] > 0 and result["missing"] == 0
                    and result["mismatched"] == 0 and result["firmware_alive"]
                    and not result.get("web_errors"))
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heap", default="512k")
    ap.add_argument("--meters", type=int, default=1)
    ap.add_argument("--days", type=float, default=2)
    ap.add_argument("--rate", type=int, default=3600)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--profile", choices=PROFILES, default="field")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    r = asyncio.run(run_scenario(a.heap, a.meters, a.days, a.rate, profile=a.profile))
    if a.verbose:
        print(r["log"])
    else:
        print("\n".join(line for line in r["log"].splitlines()
                        if "heap" in line or "ERROR" in line or "Error" in line))
    print("scenario: expected=%d delivered=%d missing=%d mismatched=%d alive=%s web=%s/%s "
          "(%.0f s)" % (r["expected"], r["delivered"], r["missing"], r["mismatched"],
                        r["firmware_alive"], r.get("web_ok", "-"), r.get("web_errors", "-"),
                        time.monotonic() - t0))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
