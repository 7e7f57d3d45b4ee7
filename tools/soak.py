"""Seeded chaos soak of the whole twin (issue 8 item 4; docs/soak.md).

  python -m tools.soak [--days 30] [--seed N] [--rate 3600] [--meters 1] [--out bench/soak.json]

Runs the deployment of tools/deployment.py (meter emulator(s), J11 module emulator, head-end,
firmware under `micropython` at the budget heap tools.deployment.default_heap()) for --days
simulated days while tools.chaos.schedule(seed) injects faults across every layer: meter silent,
meter reboot, counter reset, radio loss, clock steps (±1 min .. ±1 day, near boundaries and JST
midnight, via the head-end's clock set), power cuts (process killed, flash image kept),
malformed frames on 3610 / the UART / 4059, floods on 3610 and 4059. The head-end reads each new
slot as it goes (lost reads are fine). Every fault ends a day before the end (a third of the run
if shorter); then the head-end reads the whole profile and tools.soak_oracle judges it against
the meters' own records:

  every recoverable slot delivered with the meter's exact value and a status the faults explain;
  nothing invented; nothing duplicated.

A slot is *recoverable* when the meter held it (its local day was still within the meter's
history: 0xD3 = 45 days plus today, tools/meter_emulator.py) at a settled moment at least one
slot after its boundary; settled = at least 6 simulated hours (soak_oracle.MIN_WINDOW_S) into a
window in which the meter answered, the terminal ran and its clock was true. Slots the meter held
only outside settled moments are judged for value and status if delivered, but not required.

The live heap is sampled once per simulated hour by the terminal, which logs each day's lowest
sample (`heap day N: L used, H highest, S samples`, firmware/app/heapmon.daily);
`soak.heap_growth_kb_per_30d` is the least-squares slope of those daily floors over whole days
(one slope, one intercept per boot) and must stay below HEAP_GROWTH_MAX_KB_PER_30D in runs of at
least HEAP_TREND_MIN_DAYS days.

The seed is printed first; `--seed N` replays the same fault schedule (the twin's timing is not
deterministic: a failure that depends on a race may need a few runs). Figures go to --out as a
flat {"name": number} JSON (bench/soak.json: `make soak`).

Real-time timeouts are scaled to the calendar acceleration (SOAK_CONFIG): on the device a 5 s
meter timeout is 5 s of calendar; at x3600 it would be 5 hours, and the radio's 5-minute back-off
300 hours. The soak keeps the device's proportions instead.
"""

import argparse
import asyncio
import json
import os
import random
import re
import socket
import struct
import sys
import time

from firmware import timeutil
from firmware.cosem.objects import obis
from tools import chaos, soak_oracle
from tools.deployment import Deployment, build_host_mpy

JST = 540
RETENTION_DAYS = 45
# Live-heap growth allowed over 30 days (KB). The firmware runs at the bench's minimum heap plus
# HEAP_MARGIN_KB (32 KB, tools/deployment.py); a leak must not eat that margin within a year of
# field life (32 KB / 12 = 2.7 KB per 30 days). The trend is fitted to each whole day's floor (the
# lowest of 24 hourly samples: a single sample may land on a DLMS block or a day of history in
# flight, +3..4 KB) after each boot's warm-up (soak_oracle.heap_growth_kb_per_30d); a leak of one
# small object per slot (48 x 30 x 32 B) would show as 45 KB per 30 days.
HEAP_GROWTH_MAX_KB_PER_30D = 4.0
HEAP_TREND_MIN_DAYS = 10  # fewer daily samples cannot tell a trend from the noise
SECOND_PEER_MAC = "001D129099999999"
STRANGER = 21  # host number (on the deployment's /24) of the malformed/flood source on 3610
PEER2 = 22  # second radio peer: malformed and flooding DLMS over the air


def soak_config(rate):
    """Config overrides: the heap log, and real-time timeouts scaled to the acceleration."""
    return {
        "terminal": {"heap_log": True},
        # A silent meter costs (1 + retries) x timeout of real time per read: 4 s (4 calendar
        # hours at x3600) instead of 20 s (20 hours).
        "meter": {"timeout_ms": max(300, int(3_600_000 // rate)),
                  # an EPC that seemed to silence the meter is held back 1 calendar hour, as
                  # on the device, not 3600 real s (150 calendar days)
                  "poison_hold_ms": max(1000, int(3_600_000_000 // rate // 1000))},
        # The radio back-off tops out at 2 calendar hours instead of 5 real minutes; a module
        # that loses its start-up notification (a UART fault) is reset again after 2 hours, not
        # 10 (its 10 s timeout).
        "radio": {"backoff_max_ms": max(2000, int(7_200_000 // rate)),
                  "reset_timeout_ms": max(2000, int(7_200_000 // rate)),
                  "cmd_timeout_ms": max(2000, int(7_200_000 // rate)),
                  # A lost 0x601A (UART fault) leaves the session "ready" but deaf until the
                  # application watchdog reopens it: after 1 hour of silence on the device, 3
                  # calendar hours here (6 missed reads), not 3600 real s (150 calendar days).
                  "liveness_s": max(3, 10_800 // rate)},
        # Power cuts come hours of calendar apart but seconds of real time apart here: a boot
        # counts as stable after 10 real s, and only 10 short boots in a row are a boot loop
        # (safe mode would stop the soak's metering; docs/product.md "Safe boot").
        "safeboot": {"stable_s": 10, "max_resets": 10},
    }


class Soak:
    def __init__(self, days, seed, rate=3600, meters=1, heap=None, out=print, only=None):
        self.days = days
        self.seed = seed
        self.rate = rate
        self.out = out
        self.dep = Deployment(rate=rate, seed=seed, heap=heap, meters=meters,
                              config_overrides=soak_config(rate))
        self.sim = self.dep.sim
        self.start = self.sim.start_t2k
        self.end = self.start + int(days * timeutil.DAY_S)
        self.faults = chaos.schedule(seed, days, meters, start_t2k=self.start)
        if only is not None:  # diagnosis: the seed's faults of these kinds only
            self.faults = [f for f in self.faults if f.kind in only]
        self.truth = []
        for m in self.dep.meters:
            m.retention = RETENTION_DAYS
            for o in m.objects:
                o.model = chaos.EpochModel(o.model)
            self.truth.append(m.objects[0].model)
        self.tl = soak_oracle.Timeline(self.start, meters)
        self.head = None
        self.lock = asyncio.Lock()  # one DLMS exchange at a time (the client is not reentrant)
        self.clock_set = False  # the running terminal's clock has been set since its boot
        self.clock_wrong_since = None
        self.down_since = None
        self.radio_down = 0
        self.silent = [0] * meters
        self.applied = []
        self.skipped = []
        self.read_errors = 0
        self.final_read_failed = False
        self._rng = random.Random(seed ^ 0x5EED)

    def log(self, msg):
        self.out("soak %s: %s" % (timeutil.iso(self.sim.now_t2k(), JST), msg))

    # -- the head-end ------------------------------------------------------------------------

    async def _set_clock(self, offset_s=0):
        """Set the terminal's clock to true time + offset_s. The time is taken once the lock is
        held: a read that waits out its timeouts holds it for hours of calendar (seed 512432
        set a clock 8.5 hours stale and took it for true time)."""
        async with self.lock:
            await self.head.client.set_clock(lambda: self.sim.now_t2k() + offset_s)

    async def ensure_clock(self):
        """After a boot: associate and set the terminal's clock (not a step: it had none)."""
        if self.clock_set or self.down_since is not None:
            return
        async with self.lock:
            await self.head.connect(timeout_s=60, alive=self.dep.firmware_alive)
            await self.head.client.set_clock(self.sim.now_t2k)
        self.clock_set = True
        self._clock_true()
        self.log("terminal clock set after boot")

    async def reader(self):
        """Read each new slot 5 minutes after its boundary, as the smart meter does."""
        b = self.start - self.start % timeutil.SLOT_S + timeutil.SLOT_S
        while b <= self.end:
            await asyncio.sleep(self.sim.wall_seconds_until(b + 300))
            now = self.sim.now_t2k()
            # after reads that waited out their timeouts: the newest boundary, not every one missed
            cur = max(b, now - now % timeutil.SLOT_S)
            b = cur + timeutil.SLOT_S
            if self.radio_down or self.down_since is not None:
                continue
            try:
                await self.ensure_clock()
                async with self.lock:
                    for k in range(len(self.truth)):
                        ln = obis("1.%d.99.1.0.255" % (k + 1 if len(self.truth) > 1 else 0))
                        await self.head.client.get_profile(cur - 4 * timeutil.SLOT_S, cur,
                                                           ln=ln)
            except Exception as e:  # noqa: BLE001 - a lost read is retried with the next slot
                self.read_errors += 1
                try:
                    async with self.lock:
                        await self.head.client.associate()
                except Exception:  # noqa: BLE001 - next slot
                    pass
                if self.read_errors % 20 == 1:
                    self.log("read failed (%s: %s)" % (type(e).__name__, e))

    # -- faults ------------------------------------------------------------------------------

    async def driver(self):
        """Apply the schedule: each fault at its time, its end after its duration."""
        actions = []
        for i, f in enumerate(self.faults):
            actions.append((self.start + f.at_s, 0, i, f))
            if f.duration_s:
                actions.append((self.start + f.at_s + f.duration_s, 1, i, f))
        actions.sort(key=lambda a: (a[0], a[1], a[2]))
        active = {}
        for at, is_end, i, f in actions:
            await asyncio.sleep(self.sim.wall_seconds_until(at))
            try:
                if is_end:
                    if i in active:
                        await self._end(f, active.pop(i))
                else:
                    state = await self._begin(f)
                    if state is not None:
                        active[i] = state
            except Exception as e:  # noqa: BLE001 - a fault that cannot be applied is skipped
                self.log("fault %s: %s: %s" % (f.kind, type(e).__name__, e))

    async def _begin(self, f):
        now = self.sim.now_t2k()
        k = f.params.get("meter", 0)
        kind = f.kind
        if kind == "meter_silent":
            self.silent[k] += 1
            self.dep.meters[k].faults["drop_prob"] = 1.0
            self._applied(f, "meter %d silent for %s" % (k, _dur(f.duration_s)))
            return now
        if kind == "meter_reboot":
            self._reboot(k, f.params["announce"])
            self._applied(f, "meter %d rebooted" % k)
            return None
        if kind == "counter_reset":
            m = self.dep.meters[k]
            b = m.latest_boundary() + timeutil.SLOT_S
            slot = timeutil.slot_of_t2k(b)
            for o in m.objects:
                o.model.reset_at(slot, seed=self.seed * 1000 + len(self.tl.resets[k]) + 1)
            self.tl.resets[k].append(slot)
            self._reboot(k, f.params["announce"])
            self._applied(f, "meter %d counters restart from 0 at %s" % (k, timeutil.iso(b, JST)))
            return None
        if kind == "radio_loss":
            self.radio_down += 1
            self.dep.module.set_faults(air_down=True, disconnect=3)
            self._applied(f, "radio lost for %s" % _dur(f.duration_s))
            return now
        if kind == "clock_step":
            return await self._clock_step(f)
        if kind == "power_cut":
            if self.down_since is not None:
                return self._skip(f, "terminal already off")
            self.dep.stop_firmware(kill=True)
            self.down_since = now
            self.clock_set = False
            self.tl.kills.append(now)
            self.tl.unusable.append((now, None))
            self._applied(f, "power cut for %s" % _dur(f.duration_s))
            return now
        if kind == "bad_3610":
            m = self.dep.meters[k]
            m.faults["garbage"] = 2
            m.faults["truncate_next"] = 3
            n = _send_malformed_3610(self.dep, f.params["n"], f.params["seed"])
            self._applied(f, "%d malformed datagrams to 3610, meter %d sends junk" % (n, k))
            return now
        if kind == "bad_uart":
            r = random.Random(f.params["seed"])
            knobs = {"bad_header_checksum": r.randint(1, 5), "bad_data_checksum": r.randint(1, 5),
                     "garbage": r.randint(1, 10), "split_writes": True}
            self.dep.module.set_faults(knobs)
            self._applied(f, "UART: %s" % knobs)
            return now
        if kind == "bad_4059":
            n = await _send_malformed_4059(self.dep, f.params["n"], f.params["seed"])
            self._applied(f, "%d malformed DLMS datagrams over the air" % n)
            return None
        if kind == "flood_3610":
            n = await _flood_3610(self.dep, f.params["n"])
            self._applied(f, "flood of %d ECHONET requests on 3610" % n)
            return None
        if kind == "flood_4059":
            n = await _flood_4059(self.dep, max(1, f.params["n"] // 10))
            self._applied(f, "flood of %d DLMS requests over the air" % n)
            return None
        raise ValueError("unknown fault %r" % kind)

    async def _end(self, f, since):
        now = self.sim.now_t2k()
        k = f.params.get("meter", 0)
        if f.kind == "meter_silent":
            self.silent[k] -= 1
            if not self.silent[k]:
                self.dep.meters[k].faults["drop_prob"] = 0.0
            self.tl.silent[k].append((since, now))
            self.log("meter %d answers again" % k)
        elif f.kind == "radio_loss":
            self.radio_down -= 1
            if not self.radio_down:
                self.dep.module.set_faults(air_down=False)
                self.log("radio back")
        elif f.kind == "power_cut":
            self.tl.down.append((since, now))
            self.dep.start_firmware()
            self.down_since = None
            self.log("power back: terminal restarted")
        elif f.kind == "bad_3610":
            self.dep.meters[k].faults["garbage"] = 0
            self.dep.meters[k].faults["truncate_next"] = 0
        elif f.kind == "bad_uart":
            self.dep.module.set_faults(split_writes=False)
        elif f.kind == "clock_step":
            await self._clock_back(f, since)

    def _clock_true(self):
        """The terminal runs with true time from now: close the open unusable intervals."""
        now = self.sim.now_t2k()
        self.tl.unusable = [(a, now if b is None else b) for a, b in self.tl.unusable]
        self.clock_wrong_since = None

    def _reboot(self, k, announce):
        to = (self.dep.terminal_ip, 3610) if announce else None
        self.dep.meters[k].reboot(reset_counters=False, announce_to=to)

    def _applied(self, f, what):
        self.applied.append(f)
        self.log(what)

    def _skip(self, f, why):
        self.skipped.append(f)
        self.log("%s skipped: %s" % (f.kind, why))
        return None

    async def _clock_step(self, f):
        if self.down_since is not None or self.radio_down or not self.clock_set:
            return self._skip(f, "terminal off, radio down or clock not set")
        step = f.params["step_s"]
        t = self.sim.now_t2k()
        self.tl.crossed.append((min(t, t + step), max(t, t + step)))
        self.tl.unusable.append((t, None))
        self.clock_wrong_since = t
        try:
            await self._set_clock(step)
            self.tl.clock_sets.append((self.sim.now_t2k(), True))
            certain = True
        except Exception as e:  # noqa: BLE001 - it may or may not have arrived
            self.tl.clock_sets.append((self.sim.now_t2k(), False))
            certain = False
            self.log("clock step: set failed (%s): it may have arrived" % e)
        self._applied(f, "terminal clock stepped by %+d s for %s" % (step, _dur(f.duration_s)))
        return {"certain": certain, "boot_kills": len(self.tl.kills)}

    async def _clock_back(self, f, state):
        """Set true time again, until it is acknowledged (the radio may be down meanwhile)."""
        certain = state["certain"]
        while True:
            if len(self.tl.kills) != state["boot_kills"]:
                return  # the terminal rebooted meanwhile: ensure_clock set true time
            if self.down_since is None and not self.radio_down:
                step = f.params["step_s"]
                t = self.sim.now_t2k()
                self.tl.crossed.append((min(t, t + step), max(t, t + step)))
                try:
                    await self._set_clock()
                    now = self.sim.now_t2k()
                    self.tl.clock_sets.append((now, certain))
                    self._clock_true()
                    self.log("terminal clock back to true time")
                    return
                except Exception as e:  # noqa: BLE001 - try again shortly
                    self.tl.clock_sets.append((self.sim.now_t2k(), False))
                    certain = False
                    self.log("clock back: set failed (%s)" % e)
            await asyncio.sleep(0.5)

    # -- the run -----------------------------------------------------------------------------

    async def run(self):
        t_wall = time.monotonic()
        dep = self.dep
        dep.mpy_dir = build_host_mpy(os.path.join(dep.workdir, "mpy"))
        self.out("soak: seed %d, %g days at x%d, %d faults scheduled, workdir %s"
                 % (self.seed, self.days, self.rate, len(self.faults), dep.workdir))
        await dep.start()
        self.head = dep.head_end(tz_offset_min=JST, out=lambda *a: None,
                                 resync_every_s=10 ** 9)
        result = {}
        try:
            await self.head.connect(timeout_s=120, alive=dep.firmware_alive)
            await self.head.sync_clock()
            self.clock_set = True
            self.dep.module.add_peer(bytes.fromhex(SECOND_PEER_MAC), (dep.addr(PEER2), 4059))
            await asyncio.gather(self.reader(), self.driver())
            result = await self.final_audit()
        finally:
            self.head.close()
            alive = dep.firmware_alive()
            await dep.stop()
        log_text = dep.terminal_log()
        samples = heap_samples(log_text)
        growth = soak_oracle.heap_growth_kb_per_30d(samples)
        warmup = soak_oracle.heap_warmup_kb(samples)
        fig = {
            "soak.days": self.days,
            "soak.seed": self.seed,
            "soak.faults_injected": len(self.applied),
            "soak.faults_skipped": len(self.skipped),
            "soak.power_cuts": sum(1 for f in self.applied if f.kind == "power_cut"),
            "soak.slots_expected": result.get("expected", 0),
            "soak.slots_delivered": result.get("delivered", 0),
            "soak.slots_missing_recoverable": result.get("missing_recoverable", -1),
            "soak.duplicates": result.get("duplicates", -1),
            "soak.invented": result.get("invented", -1),
            "soak.status_wrong": result.get("status_wrong", -1),
            "soak.counter_resets": result.get("resets", 0),
            "soak.counter_resets_flagged": result.get("resets_flagged", 0),
            "soak.heap_samples": len(samples),
            "soak.wall_s": round(time.monotonic() - t_wall, 1),
        }
        if growth is not None:
            fig["soak.heap_growth_kb_per_30d"] = growth
        if samples:
            fig["soak.heap_warmup_kb"] = warmup
        problems = []
        for key in ("slots_missing_recoverable", "duplicates", "invented", "status_wrong"):
            if fig["soak." + key] != 0:
                problems.append("%s = %d" % (key, fig["soak." + key]))
        if fig["soak.slots_expected"] <= 0:
            problems.append("nothing expected")
        if not alive:
            problems.append("terminal dead at the end")
        if self.final_read_failed:
            problems.append("the head-end could not read the profile at the end")
        if "MemoryError" in log_text:
            problems.append("MemoryError in the terminal's log")
        if self.days >= HEAP_TREND_MIN_DAYS:
            if growth is None:
                problems.append("no heap trend (too few daily samples)")
            elif growth > HEAP_GROWTH_MAX_KB_PER_30D:
                problems.append("heap grows %.1f KB / 30 days" % growth)
        return fig, problems, dep.workdir

    async def final_audit(self):
        """Wait for the terminal to have everything it can get, then read the whole profile.
        The wait follows progress: reads are repeated while they deliver more rows."""
        tz = JST
        first_b = soak_oracle.history_start(self.start, RETENTION_DAYS, tz)
        last_b = self.end - self.end % timeutil.SLOT_S
        total = {}
        best = None
        stale = 0
        while True:
            await asyncio.sleep(2.0)
            try:
                await self.ensure_clock()
                rows = []
                async with self.lock:
                    await self.head.client.associate()
                    for k in range(len(self.truth)):
                        ln = obis("1.%d.99.1.0.255" % (k + 1 if len(self.truth) > 1 else 0))
                        rows.append(await self.head.client.get_profile(first_b, last_b, ln=ln))
            except Exception as e:  # noqa: BLE001 - retried while there is progress
                self.log("final read failed (%s: %s)" % (type(e).__name__, e))
                stale += 1
                if stale > 10:  # the head-end cannot read: judged as an empty read
                    self.final_read_failed = True
                    rows = [[] for _ in self.truth]
                    self.tl.end = self.sim.now_t2k()
                    break
                continue
            n = sum(len(r) for r in rows)
            self.tl.end = self.sim.now_t2k()
            res = [soak_oracle.audit(rows[k], self.truth[k], self.tl, k, first_b, last_b,
                                     RETENTION_DAYS, tz, out=lambda *a: None)
                   for k in range(len(rows))]
            missing = sum(r["missing_recoverable"] for r in res)
            if missing == 0:
                break
            if best is None or n > best:
                best, stale = n, 0
            else:
                stale += 1
            if stale >= 5:  # five reads, 10 s of real time, with nothing new: it is final
                break
        n = sum(len(r) for r in rows)
        self.log("final read: %d rows %s .. %s" % (n, timeutil.iso(first_b, tz),
                                                   timeutil.iso(last_b, tz)))
        for k in range(len(rows)):
            res = soak_oracle.audit(rows[k], self.truth[k], self.tl, k, first_b, last_b,
                                    RETENTION_DAYS, tz, out=self.out)
            for key, v in res.items():
                total[key] = total.get(key, 0) + v
        return total


FULL_DAY_SAMPLES = 20  # hourly samples of a whole day (a boot day or a stepped day has fewer)


def heap_samples(log_text):
    """(boot, day, lowest used bytes) from the terminal's `heap day N: L used, H highest, S
    samples` lines (firmware/app/heapmon.daily: the day's floor over hourly samples), for days
    with at least FULL_DAY_SAMPLES samples; boots are counted by the start-up line."""
    out = []
    boot = 0
    for line in log_text.splitlines():
        if "IoT-route wireless terminal starting" in line:
            boot += 1
            continue
        m = re.search(r"INFO heap: day (\d+): (\d+) used, \d+ highest, (\d+) samples", line)
        if m and int(m.group(3)) >= FULL_DAY_SAMPLES:
            out.append((boot, int(m.group(1)), int(m.group(2))))
    return out


def _dur(s):
    if s >= timeutil.DAY_S:
        return "%.1f d" % (s / timeutil.DAY_S)
    if s >= 3600:
        return "%.1f h" % (s / 3600)
    return "%d min" % (s // 60)


# -- bad input and floods (bounded in count and time; loopback only) ---------------------------

def _udp(dep, host, port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((dep.addr(host), port))
    s.setblocking(False)
    return s


def _malformed_echonet(r):
    good = bytes.fromhex("1081") + struct.pack(">H", r.getrandbits(16)) + bytes.fromhex(
        "05FF010EF0016201D600")
    pick = r.randrange(5)
    if pick == 0:
        return bytes(r.getrandbits(8) for _ in range(r.randint(1, 64)))
    if pick == 1:
        return good[:r.randint(1, len(good) - 1)]  # truncated
    if pick == 2:
        return b"\x10\x82" + good[2:]  # Format 2 header
    if pick == 3:
        return good[:11] + b"\xff" + good[12:]  # OPC promises 255 properties
    return good + bytes(r.getrandbits(8) for _ in range(r.randint(1, 8)))  # trailing bytes


def _send_malformed_3610(dep, n, seed):
    r = random.Random(seed)
    s = _udp(dep, STRANGER)
    sent = 0
    try:
        for _ in range(n):
            try:
                s.sendto(_malformed_echonet(r), (dep.terminal_ip, 3610))
                sent += 1
            except BlockingIOError:
                break
    finally:
        s.close()
    return sent


async def _flood_3610(dep, n, max_s=3.0):
    s = _udp(dep, STRANGER)
    frame = bytes.fromhex("10810001" "05FF01" "0EF001" "62" "01" "80" "00")
    sent = 0
    t_end = time.monotonic() + max_s
    try:
        while sent < n and time.monotonic() < t_end:
            try:
                s.sendto(frame, (dep.terminal_ip, 3610))
                sent += 1
            except BlockingIOError:
                pass
            if sent % 50 == 0:
                await asyncio.sleep(0.01)
    finally:
        s.close()
    return sent


def _wpdu(apdu):
    return struct.pack(">HHHH", 1, 16, 1, len(apdu)) + apdu


def _malformed_wpdu(r):
    pick = r.randrange(4)
    if pick == 0:
        return bytes(r.getrandbits(8) for _ in range(r.randint(1, 40)))
    if pick == 1:
        w = _wpdu(bytes.fromhex("C001C10001000060010200FF0200"))
        return w[:r.randint(1, len(w) - 1)]  # cut short
    if pick == 2:
        return struct.pack(">HHHH", 1, 16, 1, 200) + b"\xc0\x01"  # length field lies
    return _wpdu(bytes(r.getrandbits(8) for _ in range(r.randint(1, 30))))  # junk APDU


async def _send_malformed_4059(dep, n, seed, max_s=3.0):
    r = random.Random(seed)
    s = _udp(dep, PEER2, 4059)
    sent = 0
    t_end = time.monotonic() + max_s
    try:
        for _ in range(min(n, 100)):  # each one crosses the UART as a notification
            if time.monotonic() > t_end:
                break
            s.sendto(_malformed_wpdu(r), dep.air_addr)
            sent += 1
            await asyncio.sleep(0.005)
    finally:
        s.close()
    return sent


async def _flood_4059(dep, n, max_s=3.0):
    """GET clock without an association: the terminal answers each with an exception."""
    s = _udp(dep, PEER2, 4059)
    req = _wpdu(bytes.fromhex("C001C1000800000100FF0200"))
    sent = 0
    t_end = time.monotonic() + max_s
    try:
        while sent < n and time.monotonic() < t_end:
            s.sendto(req, dep.air_addr)
            sent += 1
            await asyncio.sleep(0.002)
    finally:
        s.close()
    return sent


async def run_soak(days, seed, rate=3600, meters=1, heap=None, out=print, only=None):
    soak = Soak(days, seed, rate=rate, meters=meters, heap=heap, out=out, only=only)
    return await soak.run()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--seed", type=int, default=None, help="default: a random seed (printed)")
    ap.add_argument("--rate", type=int, default=3600)
    ap.add_argument("--meters", type=int, default=1)
    ap.add_argument("--heap", default=None, help="default: tools.deployment.default_heap()")
    ap.add_argument("--out", default=os.path.join("bench", "soak.json"))
    ap.add_argument("--only", default=None,
                    help="diagnosis: keep only these fault kinds (comma-separated; '' = none)")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 10 ** 6)
    print("soak: seed %d (replay with --seed %d)" % (seed, seed), flush=True)
    only = None if a.only is None else {k for k in a.only.split(",") if k}
    fig, problems, workdir = asyncio.run(run_soak(a.days, seed, a.rate, a.meters, a.heap,
                                                  only=only))
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(fig, f, indent=2, sort_keys=True)
    for k in sorted(fig):
        print("%-36s %s" % (k, fig[k]))
    print("terminal log and flash image: %s" % workdir)
    if problems:
        print("soak FAILED (seed %d): %s" % (seed, "; ".join(problems)))
        return 1
    print("soak passed (seed %d)" % seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
