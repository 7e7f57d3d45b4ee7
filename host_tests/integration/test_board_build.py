"""The ESP32 board build (boards/IOT_TERMINAL_ESP32) checked statically by tools/check_board.py:
it passes on the repository, and each kind of mistake it exists for is reported."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import check_board as cb

REPO = cb.REPO
BOARD_DIR = cb.BOARD_DIR

GOOD_CSV = (BOARD_DIR / cb.CSV_NAME).read_text()


def _board(n_blocks=128, block_size=4096, partition="meterlog", **extra):
    flash = {"partition": partition, "block_size": block_size, "n_blocks": n_blocks}
    flash.update(extra)
    return (Path("test-board.json"), {"hal": "esp32", "flash": flash})


def _problems(csv, boards=()):
    return cb.check_partitions(cb.parse_partitions(csv), boards, "test.csv")


def test_repository_board_passes():
    problems, summary = cb.check_board()
    assert problems == []
    assert any("meterlog 0x200000+0x80000" in s for s in summary)


def test_cli_reports_ok():
    r = subprocess.run([sys.executable, "tools/check_board.py"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check_board IOT_TERMINAL_ESP32: OK" in r.stdout


def test_every_esp32_board_file_matches_the_log_partition():
    rows = {r["name"]: r for r in cb.parse_partitions(GOOD_CSV)}
    boards = cb.esp32_boards(REPO / "boards")
    assert len(boards) >= 3
    for path, board in boards:
        flash = board["flash"]
        assert flash["partition"] == "meterlog", path
        assert flash["block_size"] * flash["n_blocks"] == rows["meterlog"]["size"], path
        # without PSRAM: the frozen image; with PSRAM: the standard SPIRAM image + .mpy bundle
        if board["psram"] is False:
            assert board["firmware"] == BOARD_DIR.name, path
        else:
            assert board["psram"] is True and board["firmware"] == "ESP32_GENERIC-SPIRAM", path
    assert any(b["psram"] for _, b in boards) and any(not b["psram"] for _, b in boards)


@pytest.mark.parametrize("text,value", [
    ("0x1F0000", 0x1F0000), ("4096", 4096), ("24K", 24 * 1024), ("1M", 1 << 20), ("2m", 2 << 20)])
def test_sizes_in_hex_decimal_and_suffixes(text, value):
    assert cb.parse_int(text) == value


def test_empty_offsets_follow_the_previous_partition_aligned():
    rows = cb.parse_partitions(textwrap.dedent("""\
        nvs,      data, nvs,     ,  24K,
        phy_init, data, phy,     ,  4K,
        factory,  app,  factory, ,  0x1F0000,
        meterlog, data, 0x40,    ,  512K,
        vfs,      data, fat,     ,  0x180000,
        """))
    assert [(r["name"], r["offset"]) for r in rows] == [
        ("nvs", 0x9000), ("phy_init", 0xF000), ("factory", 0x10000), ("meterlog", 0x200000),
        ("vfs", 0x280000)]
    assert _problems("\n".join("%s,%s,%s,0x%x,0x%x," % (
        r["name"], r["type"], r["subtype"], r["offset"], r["size"]) for r in rows)) == []


BROKEN_TABLES = {
    "overlap": (GOOD_CSV.replace("0x40,    0x200000", "0x40,    0x1F0000"), "overlaps"),
    "misaligned app": (GOOD_CSV.replace("factory, 0x10000", "factory, 0x11000"),
                       "not aligned to 0x10000"),
    "misaligned data": (GOOD_CSV.replace("0x280000, 0x180000", "0x280800, 0x17F000"),
                        "not aligned to 0x1000"),
    "too big": (GOOD_CSV.replace("0x280000, 0x180000", "0x280000, 0x200000"),
                "beyond the 4 MiB flash"),
    "missing meterlog": ("\n".join(line for line in GOOD_CSV.splitlines()
                                   if not line.startswith("meterlog")),
                         "no 'meterlog' partition"),
    "small app": (GOOD_CSV.replace("0x10000,  0x1F0000", "0x10000,  0x1E0000"),
                  "smaller than 1.9 MB"),
    "over the table": (GOOD_CSV.replace("nvs,     0x9000", "nvs,     0x8000"), "before 0x9000"),
    "log as fat": (GOOD_CSV.replace("meterlog, data, 0x40", "meterlog, data, fat"),
                   "may mount or format"),
    "no vfs": ("\n".join(line for line in GOOD_CSV.splitlines() if not line.startswith("vfs")),
               "no data partition 'vfs'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_TABLES))
def test_broken_partition_tables_are_reported(case):
    csv, expected = BROKEN_TABLES[case]
    assert csv != GOOD_CSV or case == "missing meterlog"
    problems = _problems(csv, [_board()])
    assert any(expected in p for p in problems), problems


def test_board_flash_fields_against_the_partition():
    assert _problems(GOOD_CSV, [_board()]) == []
    assert _problems(GOOD_CSV, [_board(first_block=0)]) == []  # tolerated, present or absent
    assert any("n_blocks * block_size = 0x7F000" in p
               for p in _problems(GOOD_CSV, [_board(n_blocks=127)]))
    assert any("do not fit" in p for p in _problems(GOOD_CSV, [_board(first_block=1)]))
    assert any("must be 4096" in p for p in _problems(GOOD_CSV, [_board(block_size=512)]))
    assert any("not in the partition table" in p
               for p in _problems(GOOD_CSV, [_board(partition="log2")]))


# --- sdkconfig -------------------------------------------------------------------------------


def test_sdkconfig_resolves_to_the_board_csv():
    settings, order, env, problems = cb.resolve_sdkconfig(BOARD_DIR)
    assert problems == []
    assert settings["CONFIG_PARTITION_TABLE_CUSTOM"] == "y"
    assert cb.resolve_partition_csv(settings["CONFIG_PARTITION_TABLE_CUSTOM_FILENAME"]) == \
        BOARD_DIR / cb.CSV_NAME
    # sdkconfig.base first (the port's defaults), the generated fragment last
    assert order[0][0] == "boards/sdkconfig.base"
    assert order[-1][1] == "generated by mpconfigboard.cmake"
    assert env["MICROPY_FROZEN_MANIFEST"] == str(BOARD_DIR / "manifest.py")


def test_relative_csv_names_resolve_in_the_port_directory():
    assert cb.resolve_partition_csv('"partitions-4MiBplus.csv"') == \
        cb.PORT_DIR / "partitions-4MiBplus.csv"
    assert cb.resolve_partition_csv('"/abs/x.csv"') == Path("/abs/x.csv")


@pytest.fixture
def board_copy(tmp_path):
    dst = tmp_path / BOARD_DIR.name
    shutil.copytree(BOARD_DIR, dst)
    return dst


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_fragment_before_sdkconfig_base_is_reported(board_copy):
    cmake = board_copy / "mpconfigboard.cmake"
    _edit(cmake, "    boards/sdkconfig.base\n", "")
    _edit(cmake, "    ${IOT_TERMINAL_PARTITION_FRAGMENT}\n",
          "    ${IOT_TERMINAL_PARTITION_FRAGMENT}\n    boards/sdkconfig.base\n")
    problems = cb.check_sdkconfig(board_copy)
    assert any("partitions-4MiBplus.csv" in p for p in problems), problems


def test_missing_generated_fragment_is_reported(board_copy):
    _edit(board_copy / "mpconfigboard.cmake", "    ${IOT_TERMINAL_PARTITION_FRAGMENT}\n", "")
    problems = cb.check_sdkconfig(board_copy)
    assert any("resolves to <PORT_DIR>/IOT_TERMINAL_ESP32-partition" in p for p in problems), \
        problems


def test_bluetooth_left_on_without_sdkconfig_ble_is_reported(board_copy):
    _edit(board_copy / "mpconfigboard.h", "#define MICROPY_PY_BLUETOOTH (0)\n", "")
    assert any("MICROPY_PY_BLUETOOTH" in p for p in cb.check_sdkconfig(board_copy))


# --- manifest --------------------------------------------------------------------------------


def _manifest(tmp_path, body):
    path = tmp_path / "manifest.py"
    path.write_text(textwrap.dedent(body))
    return path


def _device_files():
    return sorted(p.relative_to(REPO / "firmware").as_posix()
                  for p in (REPO / "firmware").rglob("*.py")
                  if "firmware/" + p.relative_to(REPO / "firmware").as_posix()
                  not in cb.HOST_ONLY)


def test_frozen_set_is_firmware_minus_host_only():
    problems, m = cb.check_manifest(BOARD_DIR / "manifest.py")
    assert problems == []
    frozen = {t for _, t, _, _ in m.files if t.startswith("firmware/")}
    assert frozen == {"firmware/" + f for f in _device_files()}
    assert not frozen & set(cb.HOST_ONLY)
    assert {opt for _, t, opt, _ in m.files if t.startswith("firmware/")} == {2}
    # the one third-party library: umqtt.simple from lib/ (tools/fetch_lib.py), asserts kept
    assert {(t, opt) for _, t, opt, _ in m.files if not t.startswith("firmware/")} == {
        ("umqtt/simple.py", 0)}
    assert m.port_includes == ["$(PORT_DIR)/boards/manifest.py"]


def test_manifest_freezing_host_code_is_reported(tmp_path):
    path = _manifest(tmp_path, """\
        include("$(PORT_DIR)/boards/manifest.py")
        package("firmware", base_path=%r, opt=2)
        """ % str(REPO))
    problems, _ = cb.check_manifest(path)
    assert "manifest: freezes host-only module firmware/hal/host.py" in problems
    assert "manifest: freezes host-only module firmware/hal/norflash.py" in problems


def test_manifest_leaving_a_module_out_or_without_opt_is_reported(tmp_path):
    files = [f for f in _device_files() if f != "timeutil.py"]
    path = _manifest(tmp_path, """\
        package("firmware", files=%r, base_path=%r)
        """ % (files, str(REPO)))
    problems, _ = cb.check_manifest(path)
    assert "manifest: firmware/timeutil.py is device code but not frozen" in problems
    assert any("has no explicit opt level" in p for p in problems)
    assert any("does not include $(PORT_DIR)/boards/manifest.py" in p for p in problems)
    # frozen modules import firmware.timeutil, which is now missing from the image
    assert any("imports firmware.timeutil, which is not frozen" in p for p in problems)


def test_manifest_host_only_list_must_match_the_checker(board_copy):
    _edit(board_copy / "manifest.py", 'HOST_ONLY = ("hal/host.py", "hal/norflash.py")',
          'HOST_ONLY = ("hal/host.py",)')
    assert cb.manifest_host_only(board_copy / "manifest.py") == ("hal/host.py",)


def test_mpy_cross_failure_is_reported(tmp_path):
    repo = tmp_path / "repo"
    (repo / "firmware").mkdir(parents=True)
    (repo / "firmware" / "__init__.py").write_text("")
    # valid CPython 3.11, but MicroPython has no match statement
    (repo / "firmware" / "bad.py").write_text("def f(x):\n    match x:\n        case 1:\n"
                                              "            return 2\n")
    path = _manifest(tmp_path, """\
        include("$(PORT_DIR)/boards/manifest.py")
        package("firmware", base_path=%r, opt=2)
        """ % str(repo))
    problems, _ = cb.check_manifest(path, repo=repo, host_only=())
    assert any(p.startswith("mpy-cross -march=xtensawin -O2 firmware/bad.py") for p in problems), \
        problems


# --- imports on the device side --------------------------------------------------------------

ALL = ["firmware/__init__.py", "firmware/compat.py", "firmware/log.py", "firmware/app/__init__.py",
       "firmware/app/x.py", "firmware/hal/__init__.py", "firmware/hal/host.py"]
FROZEN = {f: 2 for f in ALL if f != "firmware/hal/host.py"}


def _imports(source, rel="firmware/app/x.py", strip=True):
    return cb.check_imports(rel, textwrap.dedent(source), FROZEN, ALL,
                            cb.MICROPYTHON_BUILTINS, strip)


def test_device_imports_that_resolve():
    assert _imports("""\
        import asyncio
        import struct
        from firmware import log
        from firmware.compat import IS_MICROPYTHON
        from . import x
        from .. import compat
        try:
            from micropython import const
        except ImportError:
            import functools
        if IS_MICROPYTHON:
            import machine
        else:
            import termios
        if not IS_MICROPYTHON:
            import tty
        """) == []


@pytest.mark.parametrize("source,expected", [
    ("import termios", "imports termios, a host-only module"),
    ("def f():\n    import tty", "imports tty, a host-only module"),
    ("import requests_toolbelt", "neither a MicroPython built-in nor frozen"),
    ("from firmware.hal import host", "imports firmware.hal.host, a host-only module"),
    ("def f():\n    from firmware.hal import host", "a host-only module that is not frozen"),
    ("import firmware.nothing", "not a module of firmware/"),
    ("import os\nos.openpty()", "os.openpty does not exist on the ESP32"),
    ("def f(x):\n    assert x > 0", "assert is compiled out at opt >= 1"),
    ("if __debug__:\n    pass", "__debug__ is compiled out"),
])
def test_device_imports_that_do_not(source, expected):
    problems = _imports(source)
    assert any(expected in p for p in problems), problems


def test_hal_factory_may_name_the_host_hal():
    src = "def create(board):\n    from firmware.hal import host as impl\n"
    assert _imports(src, rel="firmware/hal/__init__.py") == []
