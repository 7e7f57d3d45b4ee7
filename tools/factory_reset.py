"""Factory reset of a terminal: every secret erased beyond recovery (docs/product.md "Factory
reset"), metering data kept unless --erase-metering.

  python tools/factory_reset.py --port /dev/ttyUSB0 [--erase-metering] [--yes] [--dry-run]
  python tools/factory_reset.py --host-board boards/host.json --config my-config.json [...]

With --port it runs firmware.app.factory.run on the board through mpremote (one `exec`, then
`reset`): the running terminal is interrupted, the NVS and vfs partitions are erased (and the
meterlog partition with --erase-metering), board.json, boot.py, main.py and lib/ are written back,
FACTORY_RESET is recorded and the board restarts without configuration. With --host-board it
runs here against a host simulation's files (shredded: only the device erase is a guarantee).
Asks for confirmation unless --yes. Exit 0 when the device reported the reset done.
"""

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware.app.factory import DONE  # noqa: E402

CODE = "from firmware.app import factory\nfactory.run(keep_metering=%s, restart=False)\n"


def _tool(name):
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def device_command(mpremote, port, keep):
    """The mpremote command line: wipe (the board prints DONE and its report), then reset."""
    return [mpremote, "connect", port, "exec", CODE % keep, "reset"]


def parse_report(output):
    """The report dict the board printed after DONE, or None if it did not finish."""
    for line in output.splitlines():
        if line.startswith(DONE + " "):
            try:
                return json.loads(line[len(DONE) + 1:])
            except ValueError:
                return None
    return None


def _confirm(what, out):
    print("This erases %s. Type ERASE to go on: " % what, end="", file=out, flush=True)
    try:
        return input().strip() == "ERASE"
    except EOFError:
        return False


def main(argv=None, out=None):
    out = out or sys.stdout
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the board's serial port, e.g. /dev/ttyUSB0")
    where.add_argument("--host-board", help="a host simulation's board file (runs here)")
    ap.add_argument("--config", default="config.json", help="with --host-board: its config")
    ap.add_argument("--erase-metering", action="store_true",
                    help="erase the interval log too (default: metering data kept)")
    ap.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    ap.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    ap.add_argument("--mpremote", help="mpremote command (default: the venv's)")
    args = ap.parse_args(argv)
    keep = not args.erase_metering
    what = "every credential, key and invocation counter" + (
        "" if keep else ", and all metering data")
    if args.port:
        cmd = device_command(args.mpremote or _tool("mpremote"), args.port, keep)
        print("$ " + shlex.join(cmd), file=out)
        if args.dry_run:
            return 0
        if not args.yes and not _confirm(what, out):
            print("factory_reset: not confirmed: nothing erased", file=sys.stderr)
            return 2
        r = subprocess.run(cmd, capture_output=True, text=True)
        output = r.stdout + r.stderr
        print(output, end="", file=out)
        report = parse_report(output)
    else:
        if args.dry_run:
            print("would reset the host simulation of %s (config %s)"
                  % (args.host_board, args.config), file=out)
            return 0
        if not args.yes and not _confirm(what, out):
            print("factory_reset: not confirmed: nothing erased", file=sys.stderr)
            return 2
        from firmware import hal as halmod
        from firmware.app import factory

        try:
            if halmod.load_board(args.host_board)["hal"] != "host":
                raise halmod.BoardError("not a host board: use --port for a device")
        except halmod.BoardError as e:
            print("factory_reset: refused: %s" % e, file=sys.stderr)
            return 2
        report = factory.run(keep, args.host_board, args.config, restart=False)
    if report is None:
        print("factory_reset: the board did not report the reset done (see above); run it "
              "again: a reset cut short leaves blocks not yet erased", file=sys.stderr)
        return 1
    print("factory_reset: done (%s)" % ("metering data kept" if keep else "metering data erased"),
          file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
