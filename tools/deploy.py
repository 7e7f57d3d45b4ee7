"""Put the terminal on an ESP32 with MicroPython's own tools (README "Putting it on an ESP32").

  python tools/deploy.py --board wt32-eth01 --port /dev/ttyUSB0 --config my-config.json
                         [--image FILE [--erase]] [--dry-run]
  make deploy BOARD=wt32-eth01 PORT=/dev/ttyUSB0 CONFIG=my-config.json [IMAGE=FILE]
              [DEPLOY_FLAGS=--dry-run]

Steps (each printed with the exact command line before it runs; --dry-run prints and runs nothing):
1. firmware: a board without PSRAM ("psram": false) needs the custom image named by its "firmware"
   field (boards/IOT_TERMINAL_ESP32: the terminal frozen in, the meterlog partition). With --image
   the image is written with esptool (not a dependency of this project: install it yourself);
   without, the build and flash commands are printed and the probe checks what the device runs.
   A board with PSRAM takes the standard MicroPython image plus a .mpy bundle (step 4).
2. probe (mpremote exec): board name, meterlog partition size, firmware frozen in, stale /firmware;
   stretches the watchdog to 10 minutes (the terminal's cannot be stopped, only re-timed).
3. remove a stale /firmware directory (it would shadow the frozen modules), if the probe saw one.
4. PSRAM boards only: compile the device code to .mpy (mpy-cross -march=xtensawin).
5. copy boot.py, main.py, lib/ (if it holds modules), the board file as :board.json and the
   configuration as :config.json (mpremote cp).
6. verify every copied file by SHA-256 (mpremote sha256sum) against the local file.
7. reset (mpremote reset): the terminal starts from main.py.
The configuration is refused unless it is a JSON object with what the board needs to work
(radio.pana_password; on Wi-Fi boards lan.wifi_ssid and a WPA2 lan.wifi_psk); secret values are
never printed, and neither is the hash of the configuration file.
"""

import argparse
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools import check_board  # noqa: E402

BOARDS_DIR = REPO / "boards"
BAUD = 460800
FLASH_OFFSET = "0x1000"  # esp32 port images (bootloader + table + app) start at 0x1000 on an ESP32
PARTITION_TABLE_OFFSET = "0x8000"
DEPLOY_WDT_MS = 600000
# After esptool resets the board, let MicroPython boot before mpremote interrupts it: on the first
# boot after an erase, _boot.py formats the vfs partition, which an interrupt would cut short.
BOOT_WAIT_S = 5
STAGE = Path("build") / "deploy"
PROBE_TAG = "DEPLOY-PROBE"
# One exec: re-time the watchdog, then report board name, meterlog size (-1: no esp32 module),
# firmware importable from frozen code only, and a /firmware directory on the filesystem.
PROBE = (
    'import os,sys,machine\n'
    'machine.WDT(timeout=%d)\n'
    'try:\n'
    ' import esp32\n'
    ' p=esp32.Partition.find(esp32.Partition.TYPE_DATA,label="meterlog")\n'
    ' m=p[0].info()[3] if p else 0\n'
    'except ImportError:\n'
    ' m=-1\n'
    'd=int("firmware" in os.listdir("/"))\n'
    'sys.path[:]=[".frozen"]\n'
    'try:\n'
    ' import firmware.compat\n'
    ' f=1\n'
    'except ImportError:\n'
    ' f=0\n'
    'print("%s|%%s|%%d|%%d|%%d"%%(os.uname().machine,m,f,d))\n'
) % (DEPLOY_WDT_MS, PROBE_TAG)


class DeployError(Exception):
    pass


def _show(path):
    """A path as the commands use it: relative to the repository when inside it."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return str(p)


def _tool(name):
    local = Path(sys.executable).parent / name
    if local.exists():
        return _show(local)
    return shutil.which(name) or name


def esp32_board_names(boards_dir):
    """Boards a device can be: ESP32 board files, less the simulation's ("simulation": true)."""
    return [p.stem for p, b in check_board.esp32_boards(boards_dir) if not b.get("simulation")]


def load_board(name, boards_dir=BOARDS_DIR):
    boards_dir = Path(boards_dir)
    known = ", ".join(esp32_board_names(boards_dir))
    path = boards_dir / ("%s.json" % name)
    if not name or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not path.is_file():
        raise DeployError("unknown board %r; ESP32 boards: %s" % (name, known))
    try:
        board = json.loads(path.read_text())
    except ValueError as e:
        raise DeployError("board file %s is not valid JSON: %s" % (_show(path), e))
    if not isinstance(board, dict) or board.get("hal") != "esp32":
        raise DeployError("board %r is not an ESP32 board (hal %r); ESP32 boards: %s"
                          % (name, board.get("hal") if isinstance(board, dict) else None, known))
    if board.get("simulation"):
        raise DeployError("board %r is the host simulation's, not a device; ESP32 boards: %s"
                          % (name, known))
    if not isinstance(board.get("psram"), bool) or not isinstance(board.get("firmware"), str):
        raise DeployError("board file %s needs \"psram\": true/false and a \"firmware\" name"
                          % _show(path))
    return path, board


SETUP = 2  # firmware.app.config.SETUP (the firmware is imported only when a config is checked)


def firmware_check(overrides, net_kind):
    """config.check of the firmware over these overrides, its log lines silenced (they would
    repeat the problems, which are returned as (severity, key, message))."""
    from firmware import log
    from firmware.app import config as fwcfg

    log.set_sink(lambda line: None)
    try:
        return fwcfg.check(fwcfg.merge(overrides), net_kind)
    finally:
        log.set_sink(None)


def check_config(path, board):
    """Refuse a configuration the terminal could not work with on this board. Messages name keys,
    never values (several are secrets)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise DeployError("config %s cannot be read: %s" % (path, e.strerror))
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise DeployError("config %s is not valid JSON (line %d, column %d)"
                          % (path, e.lineno, e.colno))
    if not isinstance(cfg, dict):
        raise DeployError("config %s must be a JSON object of sections" % path)
    for sect, values in cfg.items():
        if not isinstance(values, dict):
            raise DeployError("config %s: section %r must be an object" % (path, sect))
    # the firmware's own check (firmware/app/cfgcheck.py): what would put the device in setup
    # mode is refused here; what it would only log (a default kept) is shown as a warning
    problems = firmware_check(cfg, (board.get("network") or {}).get("kind"))
    setup = [where + " " + msg for sev, where, msg in problems if sev == SETUP]
    for sev, where, msg in problems:
        if sev != SETUP:
            print("deploy: warning: config %s: %s %s (the default is kept)" % (path, where, msg),
                  file=sys.stderr)
    if setup:
        raise DeployError("config %s would start the device in setup mode: %s"
                          % (path, "; ".join(setup)))
    return cfg


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lib_files(repo=REPO):
    """Modules under lib/ (its README is not one)."""
    lib = Path(repo) / "lib"
    return sorted(p for p in lib.rglob("*") if p.is_file() and p.suffix in (".py", ".mpy"))


class Step:
    def __init__(self, title, notes=(), argv=None, when=None, tool=None, run=True):
        self.title = title
        self.notes = list(notes)
        self.argv = argv  # the command, or None for a step that only informs
        self.when = when  # a condition known only at run time, shown in the dry run
        self.tool = tool  # "esptool", "mpremote", "mpy-cross"
        self.run = run  # False: printed for the user to run, never run here


class Plan:
    def __init__(self, args, board_path, board):
        self.args = args
        self.board_path = board_path
        self.board = board
        self.name = board_path.stem
        self.port = args.port
        self.mpremote = args.mpremote or _tool("mpremote")
        self.esptool = args.esptool or shutil.which("esptool") or shutil.which("esptool.py") \
            or "esptool"
        self.psram = board["psram"]
        self.firmware = board["firmware"]
        self.stage = STAGE / self.name
        flash = board.get("flash") or {}
        self.log_bytes = (flash.get("first_block", 0) + flash.get("n_blocks", 0)) \
            * flash.get("block_size", 0)
        self.copies = []  # (local path shown, remote path, show hash)
        self.bundle = []  # (source, .mpy) for PSRAM boards
        self.steps = self._steps()

    def mp(self, *cmd):
        return [self.mpremote, "connect", self.port] + list(cmd)

    def esp(self, *cmd):
        return [self.esptool, "--chip", "esp32", "--port", self.port] + list(cmd)

    def _firmware_steps(self):
        a = self.args
        steps = []
        if not self.psram:
            board_dir = BOARDS_DIR / self.firmware
            if not (board_dir / "mpconfigboard.cmake").is_file():
                raise DeployError("board %s names firmware %r, which is not a board folder in "
                                  "boards/" % (self.name, self.firmware))
            build = "<micropython>/ports/esp32/build-%s/firmware.bin" % self.firmware
            notes = [
                "An ESP32 without PSRAM has ~100-120 KB of heap, shared with Wi-Fi/lwIP; the",
                "terminal imported from .mpy files would need ~150 KB of it, frozen ~35 KB.",
                "So this board runs the custom image %s: the terminal frozen in, and the" % (
                    self.firmware),
                "partition table with the raw meterlog partition (docs/board-build.md).",
            ]
            if not a.image:
                notes += [
                    "Build it once (ESP-IDF v5.x as the esp32 port requires):",
                    "  cd <micropython>/ports/esp32 && make BOARD_DIR=%s" % board_dir,
                    "then flash it by rerunning with --image %s" % build,
                    "(add --erase on the first install; erase wipes config and the interval log).",
                    "Without --image the probe below checks that the device already runs it.",
                ]
            steps.append(Step("firmware: custom image %s" % self.firmware, notes))
        else:
            notes = [
                "A board with PSRAM has megabytes of heap: the standard MicroPython image (%s," % (
                    self.firmware),
                "https://micropython.org/download/ESP32_GENERIC/) runs the terminal from .mpy",
                "files. Its partition table has no meterlog partition: after the image, write",
                "one made from boards/IOT_TERMINAL_ESP32/%s (ESP-IDF's gen_esp32part.py)." % (
                    check_board.CSV_NAME),
            ]
            if not a.image:
                notes.append("Flash it with --image FILE (and --erase on the first install).")
            steps.append(Step("firmware: standard image %s + .mpy bundle" % self.firmware, notes))
        if a.image:
            image = Path(a.image)
            if not image.is_file():
                raise DeployError("image %s does not exist" % a.image)
            if a.erase:
                steps.append(Step("erase the whole flash (first install: config and interval "
                                  "log are lost)", [], self.esp("erase_flash"), tool="esptool"))
            steps.append(Step("write the image at %s" % FLASH_OFFSET, [], self.esp(
                "--baud", str(BAUD), "write_flash", "-z", FLASH_OFFSET, _show(image)),
                tool="esptool"))
        if self.psram:
            table = self.stage / "partition-table.bin"
            steps.append(Step(
                "partition table with meterlog (run these yourself, once, after the image)", [],
                ["python", "$IDF_PATH/components/partition_table/gen_esp32part.py",
                 "boards/IOT_TERMINAL_ESP32/" + check_board.CSV_NAME, table.as_posix()],
                run=False))
            steps.append(Step("", [], self.esp("write_flash", PARTITION_TABLE_OFFSET,
                                               table.as_posix()), run=False))
        return steps

    def _steps(self):
        steps = self._firmware_steps()
        want = "runs %s, " % ("the image %s (%r)" % (self.firmware, check_board.board_name(
            BOARDS_DIR / self.firmware)) if not self.psram else "MicroPython")
        steps.append(Step(
            "probe the device",
            ["checks: %smeterlog partition >= %d bytes%s" % (
                want, self.log_bytes, ", firmware frozen in" if not self.psram else ""),
             "re-times the watchdog to %d s for the deploy (reset at the end)" % (
                 DEPLOY_WDT_MS // 1000)],
            self.mp("exec", PROBE), tool="mpremote"))
        steps.append(Step(
            "remove /firmware from the filesystem (it would shadow the frozen modules)"
            if not self.psram else "remove the old .mpy bundle",
            [], self.mp("rm", "-r", ":firmware"), when="the probe finds /firmware",
            tool="mpremote"))
        chain = ["cp", "boot.py", "main.py", ":"]
        self.copies = [("boot.py", "boot.py", True), ("main.py", "main.py", True)]
        libs = lib_files()
        if libs:
            for p in libs:
                rel = p.relative_to(REPO / "lib").as_posix()
                # hashed from lib/ itself: the staged copy is made only when the copy runs
                self.copies.append(("lib/" + rel, "lib/" + rel, True))
            chain += ["+", "cp", "-r", (self.stage / "lib").as_posix(), ":"]
        if self.psram:
            manifest = check_board.evaluate_manifest(BOARDS_DIR / "IOT_TERMINAL_ESP32" /
                                                     "manifest.py")
            mpyc = _tool("mpy-cross")
            for _src, target, opt, _kind in manifest.files:
                rel = Path(target).with_suffix(".mpy").as_posix()
                out = (self.stage / rel).as_posix()
                self.bundle.append((out, rel))
                steps.append(Step("compile" if not self.bundle[1:] else "", [], [
                    mpyc, "-march=xtensawin", "-O%d" % (opt or 0), "-o", out, target],
                    tool="mpy-cross"))
                self.copies.append((out, rel, True))
            chain += ["+", "cp", "-r", (self.stage / "firmware").as_posix(), ":"]
        config = _show(self.args.config)
        chain += ["+", "cp", _show(self.board_path), ":board.json",
                  "+", "cp", config, ":config.json"]
        self.copies += [(_show(self.board_path), "board.json", True),
                        (config, "config.json", False)]
        steps.append(Step("copy", [], self.mp(*chain), tool="mpremote"))
        steps.append(Step(
            "verify by SHA-256",
            ["expected %-64s  %s" % (self._expected_hash(local, show), remote)
             for local, remote, show in self.copies],
            self.mp("sha256sum", *[":" + r for _, r, _ in self.copies]), tool="mpremote"))
        steps.append(Step("reset: the terminal starts", [], self.mp("reset"), tool="mpremote"))
        return steps

    def _expected_hash(self, local, show):
        if not show:
            return "(holds secrets: not shown)"
        if local in dict(self.bundle):
            return "(hash of the compiled file)"
        return sha256_file(REPO / local)

    def print_step(self, n, step, out):
        if step.title:
            print("%d. %s" % (n, step.title), file=out)
        for line in step.notes:
            print("   " + line, file=out)
        if step.argv:
            prefix = "   [only if %s] " % step.when if step.when else "   "
            if not step.run:
                prefix += "(yourself) "
            # commands for the user keep $IDF_PATH expandable; ours are quoted exactly
            line = " ".join(step.argv) if not step.run else shlex.join(step.argv)
            print(prefix + "$ " + line, file=out)


def _run(argv, capture=False):
    r = subprocess.run(argv, cwd=REPO, capture_output=capture, text=True)
    if r.returncode != 0:
        raise DeployError("command failed (exit %d): %s%s" % (
            r.returncode, shlex.join(argv[:4]), ("\n" + r.stdout + r.stderr) if capture else ""))
    return r.stdout if capture else ""


def parse_probe(output):
    for line in output.splitlines():
        if line.startswith(PROBE_TAG + "|"):
            machine, m, f, d = line.split("|")[1:5]
            return {"machine": machine, "meterlog": int(m), "frozen": f == "1",
                    "fsdir": d == "1"}
    raise DeployError("the probe printed no %s line:\n%s" % (PROBE_TAG, output))


def parse_sha256sum(output):
    """{remote path: hex} from `mpremote sha256sum :a :b` ("sha256sum :a" then the digest)."""
    out, current = {}, None
    for line in output.splitlines():
        line = line.strip()
        m = re.fullmatch(r"sha256sum :(.+)", line)
        if m:
            current = m.group(1)
        elif current and re.fullmatch(r"[0-9a-f]{64}", line):
            out[current] = line
            current = None
    return out


def execute(plan, out=None):
    out = out or sys.stdout
    n = 0
    for step in plan.steps:
        n += 1 if step.title else 0
        if step.tool == "mpremote" and step.argv[3] == "exec":
            plan.print_step(n, step, out)
            probe = parse_probe(_run(step.argv, capture=True))
            name = check_board.board_name(BOARDS_DIR / plan.firmware)
            if not plan.psram and (not probe["machine"].startswith(name) or not probe["frozen"]):
                raise DeployError("the device runs %r without the frozen terminal, not the %s "
                                  "image: build and flash it (step 1)"
                                  % (probe["machine"], plan.firmware))
            if probe["meterlog"] < plan.log_bytes:
                raise DeployError("the device's meterlog partition has %d bytes, the board file "
                                  "needs %d: flash the partition table (step 1)"
                                  % (max(probe["meterlog"], 0), plan.log_bytes))
            plan.fsdir = probe["fsdir"]
            print("   probe: %s, meterlog %d bytes, frozen %s, /firmware %s" % (
                probe["machine"], probe["meterlog"], probe["frozen"], probe["fsdir"]), file=out)
            continue
        if step.when and not getattr(plan, "fsdir", False):
            continue
        plan.print_step(n, step, out)
        if not step.run or not step.argv:
            continue
        if step.tool == "esptool" and not (shutil.which(plan.esptool) or Path(plan.esptool)
                                           .exists()):
            raise DeployError("esptool not found (pip install esptool, or --esptool PATH)")
        if step.tool == "mpremote" and step.argv[3] == "sha256sum":
            got = parse_sha256sum(_run(step.argv, capture=True))
            bad = []
            for local, remote, _show_hash in plan.copies:
                if got.get(remote) != sha256_file(REPO / local):
                    bad.append(remote)
            if bad:
                raise DeployError("SHA-256 mismatch on the device for: %s; run the deploy again"
                                  % ", ".join(bad))
            print("   all %d files verified" % len(plan.copies), file=out)
            continue
        if step.tool == "mpremote" and "cp" in step.argv:
            _stage(plan)
        if step.tool == "mpy-cross":
            (REPO / step.argv[4]).parent.mkdir(parents=True, exist_ok=True)
        _run(step.argv)
        if step.tool == "esptool" and "write_flash" in step.argv:
            print("   waiting %d s for the board to boot" % BOOT_WAIT_S, file=out)
            time.sleep(BOOT_WAIT_S)


def _stage(plan):
    libs = lib_files()
    if libs:
        dst_root = REPO / plan.stage / "lib"
        shutil.rmtree(dst_root, ignore_errors=True)
        for p in libs:
            dst = dst_root / p.relative_to(REPO / "lib")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst)


def main(argv=None, out=None):
    out = out or sys.stdout
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board", required=True, help="board file name in boards/ (no .json)")
    ap.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    ap.add_argument("--config", required=True, help="configuration JSON to install")
    ap.add_argument("--image", help="firmware image to write with esptool first")
    ap.add_argument("--erase", action="store_true", help="erase the flash before --image")
    ap.add_argument("--dry-run", action="store_true", help="print every step, run nothing")
    ap.add_argument("--mpremote", help="mpremote command (default: the venv's)")
    ap.add_argument("--esptool", help="esptool command (default: esptool on PATH)")
    ap.add_argument("--boards-dir", default=str(BOARDS_DIR), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        if not args.port:
            raise DeployError("no serial port (PORT=/dev/ttyUSB0)")
        if args.erase and not args.image:
            raise DeployError("--erase only goes with --image")
        board_path, board = load_board(args.board, args.boards_dir)
        if not args.config:
            raise DeployError("no configuration (CONFIG=my-config.json)")
        check_config(args.config, board)
        plan = Plan(args, board_path, board)
    except DeployError as e:
        print("deploy: refused: %s" % e, file=sys.stderr)
        return 2
    print("deploy %s -> %s: ESP32 %s PSRAM, firmware %s" % (
        plan.name, plan.port, "with" if plan.psram else "without", plan.firmware), file=out)
    print("config %s: valid JSON with what this board needs (secrets are never printed)"
          % _show(args.config), file=out)
    if args.dry_run:
        print("dry run: every step is printed, nothing is run", file=out)
        n = 0
        for step in plan.steps:
            n += 1 if step.title else 0
            plan.print_step(n, step, out)
        return 0
    try:
        execute(plan, out)
    except DeployError as e:
        print("deploy: failed: %s" % e, file=sys.stderr)
        return 1
    print("deploy: done", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
