"""Head-end CLI: read a terminal's 30-minute load profile over DLMS/COSEM, through the smart-meter
twin's backhaul endpoint for that terminal (tools/smartmeter.py) or straight to one terminal's
module air side, and show it.

  python -m tools.headend_cli --server 127.a.b.44:4059 [--from 2025-04-01T00:00 --to ...]
        [--csv out.csv] [--png out.png] [--gaps] [--table-rows 48] [--public]
  python -m tools.headend_cli --spawn 2 --days 1 --terminal 1 --csv t1.csv --png t1.png
  python -m tools.headend_cli --module /dev/ttyUSB0 --sm-config sm.json \
        --terminal-mac 001D1290000A0001 [--from ... --to ...]

- reads the whole profile (default) or a range, block by block, with a progress bar;
- prints a table (rich), writes CSV with exact integer Wh (no floats in the data path: the raw
  value times 10^scaler, a decimal text when the scaler is negative), plots a PNG of forward and
  reverse energy per slot (matplotlib, Agg; the plot alone uses floats);
- --gaps: finds the slots missing from what it read and re-reads each missing range once
  (after --gap-wait real seconds).

Keys: the management client (HLS-GMAC, suite 0) with the simulation's keys
(tools/deployment.py) unless --public, or HEADEND_EK / HEADEND_AK / HEADEND_TITLE in the
environment (hex; never printed); its invocation counter starts above every earlier run's
(--ic-file). --local defaults to the server's address plus one host, any port (through the twin;
straight to a module give its smart meter's address, N.4:4059). --spawn N starts a twin
deployment of N terminals, lets it run --days simulated days with each terminal's clock set from
the twin's calendar, then reads terminal --terminal. --module PATH: the datagrams go over a J11
module on this host acting as the smart meter (HAN PAN coordinator, tools/sm_radio.py: a real
module on a USB-serial adapter or an emulator's pty) to the terminal --terminal-mac, with the
coordinator's channel, PAN ID and allowed terminals (MAC + password) from --sm-config; a PAN the
module already runs is kept (--sm-reset starts it afresh and waits --join-timeout s for the
terminal's PANA).
"""

import argparse
import asyncio
import csv
import datetime
import os
import sys
import time

from firmware import timeutil
from firmware.cosem import axdr
from firmware.cosem.objects import obis as obis_bytes
from tools import deployment
from tools.dlms_client import CLASS_PROFILE, PROFILE_LN, AsyncDlmsUdpClient

JST = 540
ROW_BYTES = 38  # about one encoded profile row (structure of date-time, 2 x long64u, unsigned)


def parse_addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def default_local(server):
    """The head-end's address next to `server`: host + 1 (twin: backhaul N.b+4 -> head-end
    N.b+5; straight: module air N.3 -> smart meter N.4), any free port: the twin answers
    whoever asked (by client SAP), so the CLI can run beside the demo's head-end. Straight to a
    module, give --local N.4:4059: the module only hears its registered peer."""
    a, b, c, d = server[0].split(".")
    return "%s.%s.%s.%d" % (a, b, c, int(d) + 1), 0


def parse_when(text, tz_min=JST):
    """t2k of an ISO date-time; without a zone it is local time (tz_min)."""
    dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone(datetime.timedelta(minutes=tz_min)))
    return timeutil.t2k_of_unix(int(dt.timestamp()))


def fmt_wh(raw, scaler):
    """Exact decimal text of raw x 10^scaler Wh (integers only)."""
    if scaler >= 0:
        return "%d" % (raw * 10 ** scaler)
    s = "%0*d" % (-scaler + 1, raw)
    return "%s.%s" % (s[:scaler], s[scaler:])


def missing_ranges(slots, first_slot, last_slot):
    """Contiguous runs [(s0, s1)] of slots in [first_slot, last_slot] not in `slots`."""
    out = []
    run = None
    for s in range(first_slot, last_slot + 1):
        if s in slots:
            if run is not None:
                out.append((run, s - 1))
                run = None
        elif run is None:
            run = s
    if run is not None:
        out.append((run, last_slot))
    return out


class ProfileReader:
    """Reads the profile through an AsyncDlmsUdpClient, one GET block at a time, so that a
    progress bar can follow the blocks (on_block(n_bytes) after each)."""

    def __init__(self, client, ln=PROFILE_LN):
        self.client = client
        self.ln = obis_bytes(ln) if isinstance(ln, str) else ln
        self.blocks = 0
        self.bytes = 0
        self.scaler = None

    async def read_scaler(self):
        su = await self.client.get(3, obis_bytes("1.0.1.8.0.255"), 3)
        self.scaler = axdr.Reader(su).value()[0]
        return self.scaler

    async def rows(self, from_t2k, to_t2k, on_block=None):
        """[(t2k, fwd, rev, status)] of the rows with their boundary in [from_t2k, to_t2k]."""
        c = self.client
        dlms = c.dlms
        req = dlms.build_get(CLASS_PROFILE, self.ln, 2, dlms.range_access(from_t2k, to_t2k))
        while True:
            seen = []

            def parse(wpdu, seen=seen):
                out = dlms.feed_get(wpdu)
                if out is not None:
                    seen.append(len(wpdu))
                return out

            # the client's one exchange with retries (tools-internal use of its private step:
            # AsyncDlmsUdpClient.get does the same loop without a per-block callback)
            done, payload = await c._exchange(req, parse)
            self.blocks += 1
            self.bytes += seen[-1] if seen else 0
            if on_block is not None:
                on_block(seen[-1] if seen else 0)
            if done:
                return dlms.decode_profile(payload)
            req = payload


async def read_with_progress(reader, from_t2k, to_t2k, console=None, label="profile"):
    """reader.rows() under a rich progress bar (blocks and bytes)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    expect = max(1, (to_t2k - from_t2k) // timeutil.SLOT_S + 1) * ROW_BYTES
    with Progress(TextColumn("[bold]%s" % label), BarColumn(),
                  TextColumn("{task.fields[blocks]} blocks, {task.completed:.0f} B"),
                  TimeElapsedColumn(), console=console, transient=False) as prog:
        task = prog.add_task(label, total=expect, blocks=0)

        def on_block(n):
            prog.update(task, advance=n, blocks=reader.blocks)
            if prog.tasks[0].completed > prog.tasks[0].total:
                prog.update(task, total=prog.tasks[0].completed)

        rows = await reader.rows(from_t2k, to_t2k, on_block)
        prog.update(task, total=max(prog.tasks[0].completed, 1),
                    completed=max(prog.tasks[0].completed, 1))
    return rows


def table(rows, scaler, tz_min=JST, limit=48):
    """A rich Table of the last `limit` rows (0: all)."""
    from rich.table import Table

    shown = rows if not limit else rows[-limit:]
    t = Table(title="load profile: %d rows%s" % (
        len(rows), "" if len(shown) == len(rows) else " (last %d shown)" % len(shown)))
    t.add_column("slot start")
    t.add_column("+A Wh", justify="right")
    t.add_column("-A Wh", justify="right")
    t.add_column("status", justify="right")
    for t2k, fwd, rev, status in shown:
        t.add_row(timeutil.iso(t2k, tz_min), fmt_wh(fwd, scaler), fmt_wh(rev, scaler),
                  "0x%02X" % status)
    return t


def write_csv(path, rows, scaler, tz_min=JST):
    """slot_start (ISO, local), slot (Unix s // 1800), fwd_wh, rev_wh, status: exact values."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slot_start", "slot", "fwd_wh", "rev_wh", "status"])
        for t2k, fwd, rev, status in rows:
            w.writerow([timeutil.iso(t2k, tz_min), timeutil.slot_of_t2k(t2k),
                        fmt_wh(fwd, scaler), fmt_wh(rev, scaler), status])


def plot_png(path, rows, scaler, tz_min=JST):
    """Forward and reverse energy per slot (the difference of consecutive cumulative values,
    only between adjacent slots) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tz = datetime.timezone(datetime.timedelta(minutes=tz_min))
    xs, dfwd, drev = [], [], []
    for a, b in zip(rows, rows[1:]):
        if b[0] - a[0] != timeutil.SLOT_S:
            continue  # a gap: no per-slot energy across it
        xs.append(datetime.datetime.fromtimestamp(timeutil.unix_of_t2k(a[0]), tz))
        dfwd.append((b[1] - a[1]) * 10.0 ** scaler)
        drev.append((b[2] - a[2]) * 10.0 ** scaler)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.step(xs, dfwd, where="post", label="forward (+A)")
    ax.step(xs, drev, where="post", label="reverse (-A)")
    ax.set_ylabel("Wh per 30 min")
    ax.set_title("energy per slot (%d slots)" % len(xs))
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def default_ic_file():
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "terminal-headend-cli.ic")


def start_ic(ic_file=None):
    """The first invocation counter of this run: above every one used before. The terminal
    refuses a counter at or below the last it accepted from our system title (replay
    protection), and other head-ends with the same keys may have used small ones: start at the
    larger of Unix seconds (every run starts above any earlier run's start) and the counter the
    last run stored in ic_file."""
    ic = int(time.time())
    if ic_file:
        try:
            with open(ic_file) as f:
                ic = max(ic, int(f.read().strip() or 0) + 1)
        except (OSError, ValueError):
            pass
    return ic & 0xFFFFFFFF


def save_ic(ic_file, ic):
    if ic_file:
        try:
            os.makedirs(os.path.dirname(ic_file) or ".", exist_ok=True)
            with open(ic_file, "w") as f:
                f.write("%d\n" % ic)
        except OSError:
            pass  # next run starts from the clock instead


def client_for(server, local, public=False, timeout_s=3, ic_file=None, transport=None):
    """transport: a tools.sm_radio.RadioEndpoint to use instead of a UDP socket."""
    sec = {}
    if not public:
        sec = {"client_sap": deployment.MGMT_SAP,
               "ek": bytes.fromhex(os.environ.get("HEADEND_EK", deployment.MGMT_EK)),
               "ak": bytes.fromhex(os.environ.get("HEADEND_AK", deployment.MGMT_AK)),
               "system_title": bytes.fromhex(os.environ.get("HEADEND_TITLE",
                                                            deployment.HEADEND_TITLE))}
    c = AsyncDlmsUdpClient(local, server, timeout_s=timeout_s, **sec)
    if not public:
        c.dlms.ic = start_ic(ic_file)
    if transport is not None:
        from tools import sm_radio

        sm_radio.attach(c, transport)
    return c


async def read_terminal(server, local, from_t2k=None, to_t2k=None, csv_path=None, png_path=None,
                        gaps=False, public=False, table_rows=48, console=None, now_t2k=None,
                        tz_min=JST, ic_file=None, gap_wait_s=0, transport=None, timeout_s=3):
    """The CLI's work against one DLMS server: a dict with rows, scaler, gaps (missing ranges
    found), recovered (slots the re-reads brought), still_missing (slots). gap_wait_s: real
    seconds to wait before re-reading the gaps (a terminal backfills missing slots from its
    meter, and a slot whose boundary is still ahead is captured once it has passed)."""
    from rich.console import Console

    console = console or Console()
    client = client_for(server, local, public, timeout_s, ic_file=ic_file, transport=transport)
    reader = ProfileReader(client)
    try:
        await client.associate()
        whole = from_t2k is None
        lo = 0 if whole else from_t2k
        hi = to_t2k if to_t2k is not None else (now_t2k or _far_future())
        rows = await read_with_progress(reader, lo, hi, console,
                                        "whole profile" if whole else "range")
        scaler = await reader.read_scaler() if rows or gaps else 0
        got = {timeutil.slot_of_t2k(r[0]): r for r in rows}
        out = {"gaps": [], "recovered": 0, "still_missing": []}
        if gaps and (rows or not whole):
            # expected: every boundary of the range asked for; of a whole profile (or an
            # open end), those between the first and the last row read
            first = timeutil.slot_of_t2k(lo + (-lo) % timeutil.SLOT_S) if not whole \
                else min(got)
            last = timeutil.slot_of_t2k(to_t2k) if to_t2k is not None \
                else (max(got) if got else first - 1)
            out["gaps"] = missing_ranges(got, first, last)
            if out["gaps"] and gap_wait_s > 0:
                await asyncio.sleep(gap_wait_s)
            for s0, s1 in out["gaps"]:
                again = await read_with_progress(
                    reader, timeutil.t2k_of_slot(s0), timeutil.t2k_of_slot(s1), console,
                    "gap %s" % timeutil.iso(timeutil.t2k_of_slot(s0), tz_min))
                for r in again:
                    s = timeutil.slot_of_t2k(r[0])
                    if s0 <= s <= s1 and s not in got:
                        got[s] = r
                        out["recovered"] += 1
            rows = [got[s] for s in sorted(got)]
            out["still_missing"] = [s for s0, s1 in out["gaps"] for s in range(s0, s1 + 1)
                                    if s not in got]
            console.print("gaps: %d slots missing in %d ranges; re-read recovered %d, "
                          "still missing %d" % (sum(s1 - s0 + 1 for s0, s1 in out["gaps"]),
                                                len(out["gaps"]), out["recovered"],
                                                len(out["still_missing"])))
        if table_rows >= 0:
            console.print(table(rows, scaler, tz_min, table_rows))
        console.print("%d rows in %d blocks, %d bytes received" % (
            len(rows), reader.blocks, reader.bytes))
        if csv_path:
            write_csv(csv_path, rows, scaler, tz_min)
            console.print("CSV: %s" % csv_path)
        if png_path:
            plot_png(png_path, rows, scaler, tz_min)
            console.print("PNG: %s" % png_path)
        try:
            await client.release()
        except Exception:  # releasing is a courtesy: the read is done
            pass
        out.update(rows=rows, scaler=scaler, blocks=reader.blocks)
        return out
    finally:
        if not public:
            save_ic(ic_file, client.dlms.ic)
        client.close()


def _far_future():
    return timeutil.t2k_from_fields(2099, 12, 31, 23, 30, 0)


async def spawn_and_read(a, console):
    """--spawn: a twin deployment of a.spawn terminals, run for a.days simulated days with each
    clock set from the twin's calendar, then the read of terminal a.terminal."""
    dep = deployment.TwinDeployment(terminals=a.spawn, rate=a.rate)
    await dep.start()
    heads = [t.head_end(out=lambda *x: None) for t in dep.terminals]
    try:
        for t, h in zip(dep.terminals, heads):
            await h.connect(timeout_s=90, alive=t.firmware_alive)
            await h.sync_clock()
        end = dep.sim.now_t2k() + int(a.days * timeutil.DAY_S)
        console.print("twin on %s0/24: %d terminals, running %g simulated days at x%d"
                      % (dep.net, a.spawn, a.days, a.rate))
        await asyncio.sleep(dep.sim.wall_seconds_until(end))
        for h in heads:
            h.close()
        heads = []
        term = dep.terminals[a.terminal]
        r = await read_terminal(term.headend_server, default_local(term.headend_server),
                                a.from_t2k, a.to_t2k,
                                a.csv, a.png, a.gaps, a.public, a.table_rows, console,
                                now_t2k=dep.sim.now_t2k(), ic_file=a.ic_file,
                                gap_wait_s=a.gap_wait)
        air = dep.twin.figures(a.terminal)
        console.print("air (terminal %d): %.2f s on the medium, %.2f s transmitting, bound "
                      "%.2f s" % (a.terminal, air["medium_s"], air["tx_s"], air["bound_s"]))
        return r
    finally:
        for h in heads:
            h.close()
        await dep.stop()


async def radio_read(a, console):
    """--module: a J11 module on this host as the smart meter's radio (tools/sm_radio.py), then
    the read of terminal --terminal-mac over it."""
    from tools import sm_radio
    from tools.serial_uart import SerialUart

    cfg = sm_radio.load_config(a.sm_config)
    try:
        mac = sm_radio.j11.mac_bytes(a.terminal_mac)
    except ValueError:
        raise ValueError("--terminal-mac must be 16 hex digits")
    if mac not in [m for m, _pw in cfg["terminals"]]:
        raise ValueError("terminal %s is not in the smart-meter radio configuration"
                         % a.terminal_mac.upper())
    radio = sm_radio.SmartMeterRadio(SerialUart(a.module, baudrate=cfg["baudrate"]), cfg)
    try:
        ep = radio.endpoint(mac)
        reused = await radio.start(reuse=not a.sm_reset)
        if not reused:
            r = await radio.wait_joined(mac, a.join_timeout)
            if r != 1:
                raise sm_radio.JoinFailed(mac, r)
        console.print("smart-meter radio on %s: terminal %s (%s)" % (
            a.module, a.terminal_mac.upper(), "PAN kept" if reused else "joined"))
        # a radio round trip is slower than loopback: 12 s per try (a block of 1232 bytes takes
        # ~0.15 s on the air, more through a relaying module and the UARTs)
        return await read_terminal(ep.addr, None, a.from_t2k, a.to_t2k, a.csv, a.png, a.gaps,
                                   a.public, a.table_rows, console, tz_min=a.tz,
                                   ic_file=a.ic_file, gap_wait_s=a.gap_wait, transport=ep,
                                   timeout_s=a.radio_timeout)
    finally:
        radio.close()


def main(argv=None, console=None):
    from rich.console import Console

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", help="DLMS server IP:PORT (twin backhaul endpoint or air side)")
    ap.add_argument("--local", help="our IP:PORT (default: server host + 1, any port)")
    ap.add_argument("--from", dest="from_", help="first slot boundary, ISO (local time if no "
                    "zone); default: the whole profile")
    ap.add_argument("--to", help="last slot boundary, ISO; default: now")
    ap.add_argument("--csv", help="write the rows as CSV (exact Wh)")
    ap.add_argument("--png", help="plot forward/reverse per slot to this PNG")
    ap.add_argument("--gaps", action="store_true", help="re-read the ranges of missing slots")
    ap.add_argument("--gap-wait", type=float, default=0,
                    help="real seconds to wait before re-reading the gaps")
    ap.add_argument("--table-rows", type=int, default=48,
                    help="rows of the table (the last ones; 0 all, -1 no table)")
    ap.add_argument("--public", action="store_true", help="the public client (no keys)")
    ap.add_argument("--ic-file", default=default_ic_file(),
                    help="where the last invocation counter used is kept (management client)")
    ap.add_argument("--tz", type=int, default=JST, help="local time offset, minutes")
    ap.add_argument("--spawn", type=int, default=0, help="start a twin with N terminals first")
    ap.add_argument("--terminal", type=int, default=0, help="with --spawn: which to read")
    ap.add_argument("--days", type=float, default=1, help="with --spawn: simulated days to run")
    ap.add_argument("--rate", type=int, default=3600, help="with --spawn: simulated s per s")
    ap.add_argument("--module", help="serial port of a J11 module acting as the smart meter "
                    "(PAN coordinator), or an emulator's pty")
    ap.add_argument("--sm-config", help="with --module: channel, PAN ID, terminals (MAC + "
                    "password; JSON, docs/twin.md)")
    ap.add_argument("--terminal-mac", help="with --module: the terminal's module MAC (16 hex)")
    ap.add_argument("--sm-reset", action="store_true",
                    help="with --module: reset the module and start the PAN afresh")
    ap.add_argument("--join-timeout", type=float, default=120,
                    help="with --module --sm-reset: seconds to wait for the terminal's PANA")
    ap.add_argument("--radio-timeout", type=float, default=12,
                    help="with --module: seconds per DLMS try over the radio")
    a = ap.parse_args(argv)
    console = console or Console()
    a.from_t2k = parse_when(a.from_, a.tz) if a.from_ else None
    a.to_t2k = parse_when(a.to, a.tz) if a.to else None
    try:
        if a.module:
            if not (a.sm_config and a.terminal_mac):
                ap.error("--module needs --sm-config and --terminal-mac")
            r = asyncio.run(radio_read(a, console))
        elif a.spawn:
            if not 0 <= a.terminal < a.spawn:
                ap.error("--terminal must be below --spawn")
            r = asyncio.run(spawn_and_read(a, console))
        else:
            if not a.server:
                ap.error("--server (or --spawn) is required")
            server = parse_addr(a.server)
            local = parse_addr(a.local) if a.local else default_local(server)
            r = asyncio.run(read_terminal(server, local, a.from_t2k, a.to_t2k, a.csv, a.png,
                                          a.gaps, a.public, a.table_rows, console,
                                          tz_min=a.tz, ic_file=a.ic_file,
                                          gap_wait_s=a.gap_wait))
    except (OSError, TimeoutError, ValueError) as e:
        console.print("head-end: %s: %s" % (type(e).__name__, e))
        return 2
    except Exception as e:  # the radio's own failures (tools/sm_radio.py): codes, no secrets
        from firmware.radio.j11_module import J11ModuleError
        from tools.sm_radio import JoinFailed

        if not isinstance(e, (J11ModuleError, JoinFailed)):
            raise
        console.print("head-end: %s: %s" % (type(e).__name__, e))
        return 2
    return 1 if r["still_missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
