"""tools/deploy.py (`make deploy`): the dry run prints each step with its exact command line in
order, picks the image path per board, refuses unknown boards and unusable configurations, and
never prints a secret. A fake mpremote/esptool plays the device for the real (non-dry) run."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from fake_tools import write_tool

from tools import deploy

REPO = deploy.REPO
PSK = "wpa2-Secret-Passphrase-7731"
PANA = "PanaSecret43"  # 12 letters and digits: the B-route format radio.credential_format checks
ESP32_BOARDS = ["esp32-devkitc-wifi", "olimex-esp32-poe", "wt32-eth01"]
PROBE_OK = "DEPLOY-PROBE|IoT-route wireless terminal with ESP32|524288|1|0"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "my-config.json"
    path.write_text(json.dumps({
        "lan": {"wifi_ssid": "plant-ap", "wifi_psk": PSK},
        "radio": {"pana_password": PANA, "sm_mac": "001D129012345678"},
        "dlms": {"lls_password": "LLS-Secret-99"},
    }))
    return path


def _dry(board, config, *extra):
    r = subprocess.run([sys.executable, "tools/deploy.py", "--board", board, "--port",
                        "/dev/ttyUSB0", "--config", str(config), "--dry-run", *extra],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def _commands(stdout):
    """The command lines of a dry run, in order (a probe's script continues on further lines)."""
    return [line.split("$ ", 1)[1] for line in stdout.splitlines() if "$ " in line]


def _no_secrets(text, config):
    for secret in (PSK, PANA, "LLS-Secret-99", hashlib.sha256(config.read_bytes()).hexdigest()):
        assert secret not in text


@pytest.mark.parametrize("board", ESP32_BOARDS)
def test_dry_run_prints_every_step_in_order(board, config):
    rc, out, err = _dry(board, config)
    assert rc == 0, err
    cmds = _commands(out)
    assert [c.split()[3] for c in cmds] == ["exec", "rm", "cp", "sha256sum", "reset"]
    assert all(c.split()[0].endswith("mpremote") and c.split()[1:3] == ["connect", "/dev/ttyUSB0"]
               for c in cmds)
    assert "machine.WDT(timeout=600000)" in out  # the probe re-times the terminal's watchdog
    assert "[only if the probe finds /firmware] $ " in out
    # lib/: the third-party modules tools/fetch_lib.py put there (umqtt.simple), when present
    libs = [p.relative_to(REPO).as_posix() for p in deploy.lib_files()]
    lib_cp = "+ cp -r build/deploy/%s/lib : " % board if libs else ""
    assert cmds[2].endswith("cp boot.py main.py : %s+ cp boards/%s.json :board.json + cp %s "
                            ":config.json" % (lib_cp, board, config))
    assert cmds[3].endswith("sha256sum :boot.py :main.py %s:board.json :config.json"
                            % "".join(":%s " % p for p in libs))
    expected = hashlib.sha256((REPO / "boards" / ("%s.json" % board)).read_bytes()).hexdigest()
    assert "expected %s  board.json" % expected in out
    # no PSRAM: the custom image, built from the board folder
    assert "make BOARD_DIR=%s" % (REPO / "boards" / "IOT_TERMINAL_ESP32") in out
    assert "build-IOT_TERMINAL_ESP32/firmware.bin" in out
    assert "mpy-cross" not in out and "esptool" not in out
    _no_secrets(out + err, config)


def test_dry_run_with_image_flashes_first(config, tmp_path):
    image = tmp_path / "firmware.bin"
    image.write_bytes(b"\xe9" * 16)
    rc, out, err = _dry("wt32-eth01", config, "--image", str(image), "--erase")
    assert rc == 0, err
    cmds = _commands(out)
    assert cmds[0].split()[1:] == ["--chip", "esp32", "--port", "/dev/ttyUSB0", "erase_flash"]
    assert cmds[1].split()[1:] == ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud",
                                   "460800", "write_flash", "-z", "0x1000", str(image)]
    assert [c.split()[3] for c in cmds[2:]] == ["exec", "rm", "cp", "sha256sum", "reset"]
    _no_secrets(out + err, config)


def test_psram_board_takes_the_standard_image_and_a_mpy_bundle(config, tmp_path):
    board = json.loads((REPO / "boards" / "wt32-eth01.json").read_text())
    board.update(psram=True, firmware="ESP32_GENERIC-SPIRAM")
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "wrover-lan.json").write_text(json.dumps(board))
    rc, out, err = _dry("wrover-lan", config, "--boards-dir", str(boards))
    assert rc == 0, err
    assert "standard image ESP32_GENERIC-SPIRAM" in out
    assert "IOT_TERMINAL_ESP32/firmware" not in out
    cmds = _commands(out)
    compiled = [c for c in cmds if c.split()[0].endswith("mpy-cross")]
    frozen = deploy.check_board.evaluate_manifest(
        REPO / "boards" / "IOT_TERMINAL_ESP32" / "manifest.py").files
    assert len(compiled) == len(frozen) > 30  # the same device code the custom image freezes
    assert all("-march=xtensawin" in c and "firmware/hal/host" not in c for c in compiled)
    assert "gen_esp32part.py boards/IOT_TERMINAL_ESP32/partitions-4MiB-meterlog.csv" in out
    copy = [c for c in cmds if " cp " in c][0]
    assert "+ cp -r build/deploy/wrover-lan/firmware :" in copy
    assert ":firmware/app/terminal.mpy" in [c for c in cmds if "sha256sum" in c][0]
    _no_secrets(out + err, config)


def test_refuses_unknown_and_non_esp32_boards(config):
    rc, out, err = _dry("esp32-nonexistent", config)
    assert rc == 2 and out == ""
    assert "unknown board 'esp32-nonexistent'" in err and "wt32-eth01" in err
    rc, out, err = _dry("host", config)
    assert rc == 2 and "not an ESP32 board" in err
    rc, out, err = _dry("../boards/wt32-eth01", config)
    assert rc == 2 and "unknown board" in err
    rc, out, err = _dry("esp32-sim", config)  # the twin's board: stand-in modules, no device
    assert rc == 2 and "host simulation" in err and "esp32-sim" not in err.split(":")[-1]


BAD_CONFIGS = {
    "not json": ('{"radio": {"pana_password": "%s",}' % PANA, "is not valid JSON"),
    "not an object": ('["%s"]' % PANA, "must be a JSON object"),
    "section not an object": ('{"radio": "%s"}' % PANA, "section 'radio' must be an object"),
    "no pana password": ('{"lan": {"wifi_ssid": "a", "wifi_psk": "%s"}}' % PSK,
                         "radio.pana_password"),
    "no psk on wifi": ('{"radio": {"pana_password": "%s"}, "lan": {"wifi_ssid": "a"}}' % PANA,
                       "lan.wifi_psk"),
    # the firmware's own configuration check (firmware/app/cfgcheck.py) decides
    "credential format": ('{"radio": {"pana_password": "PANA-Secret-0143"}, "lan": {"wifi_ssid": '
                          '"a", "wifi_psk": "%s"}}' % PSK, "would start the device in setup mode: "
                          "radio.pana_password character 5 is not a letter or digit"),
    "psk too short": ('{"radio": {"pana_password": "%s"}, "lan": {"wifi_ssid": "a", '
                      '"wifi_psk": "Zq7#x"}}' % PANA, "lan.wifi_psk"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_refuses_unusable_configurations(case, tmp_path):
    text, expected = BAD_CONFIGS[case]
    path = tmp_path / "bad.json"
    path.write_text(text)
    rc, out, err = _dry("esp32-devkitc-wifi", path)
    assert rc == 2 and out == ""
    assert expected in err
    for secret in (PSK, PANA, "Zq7#x", "PANA-Secret-0143"):
        assert secret not in err


def test_ethernet_board_needs_no_wifi_settings(tmp_path):
    path = tmp_path / "lan.json"
    path.write_text(json.dumps({"radio": {"pana_password": PANA}}))
    assert _dry("olimex-esp32-poe", path)[0] == 0
    assert _dry("esp32-devkitc-wifi", path)[0] == 2


def test_make_deploy_runs_the_tool(config):
    if not shutil.which("make"):
        pytest.skip("no make")
    r = subprocess.run(["make", "-n", "deploy", "BOARD=wt32-eth01", "PORT=/dev/ttyUSB0",
                        "CONFIG=%s" % config, "DEPLOY_FLAGS=--dry-run"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if "tools/deploy.py" in x]
    assert line and line[-1].startswith(".venv/bin/python tools/deploy.py")
    assert '--board "wt32-eth01" --port "/dev/ttyUSB0" --config "%s"' % config in line[-1]
    assert line[-1].rstrip().endswith("--dry-run")


# --- the real run, against a fake device ------------------------------------------------------

# after fake_tools.MPREMOTE_ARGS (dev, args, cmds)
FAKE_MPREMOTE = r'''
assert args[:2] == ["connect", "/dev/ttyUSB0"], args
with open(os.path.join(dev, "..", "calls.log"), "a") as log:
    log.write("mpremote " + " ".join(a.split("\n")[0] for a in args[2:]) + "\n")
for cmd in cmds:
    if cmd[0] == "exec":
        print(os.environ["FAKE_PROBE"])
    elif cmd[0] == "cp":
        paths = [c for c in cmd[1:] if c != "-r"]
        dest = paths[-1][1:]
        for src in paths[:-1]:
            target = os.path.join(dev, dest, os.path.basename(src)) if dest in ("", "/") \
                else os.path.join(dev, dest)
            if os.path.isdir(src):
                shutil.copytree(src, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, target)
            print("cp %s :%s" % (src, os.path.relpath(target, dev)))
        bad = os.environ.get("FAKE_CORRUPT")
        if bad and os.path.exists(os.path.join(dev, bad)):
            with open(os.path.join(dev, bad), "ab") as f:
                f.write(b" ")
    elif cmd[0] == "sha256sum":
        for p in cmd[1:]:
            print("sha256sum " + p)
            with open(os.path.join(dev, p[1:]), "rb") as f:
                print(hashlib.sha256(f.read()).hexdigest())
    elif cmd[0] == "rm":
        shutil.rmtree(os.path.join(dev, cmd[-1][1:]))
    elif cmd[0] == "reset":
        pass
    else:
        sys.exit("fake mpremote: unknown command %r" % cmd)
'''

FAKE_ESPTOOL = r'''
import os, sys
with open(os.path.join(os.environ["FAKE_DEVICE"], "..", "calls.log"), "a") as log:
    log.write("esptool " + " ".join(sys.argv[1:]) + "\n")
'''


@pytest.fixture
def device(tmp_path, monkeypatch):
    dev = tmp_path / "device"
    dev.mkdir()
    tools = {}
    for name, src in (("mpremote", FAKE_MPREMOTE), ("esptool", FAKE_ESPTOOL)):
        tools[name] = write_tool(tmp_path / ("fake-" + name), src, name == "mpremote")
    monkeypatch.setenv("FAKE_DEVICE", str(dev))
    monkeypatch.setenv("FAKE_PROBE", PROBE_OK)
    monkeypatch.setattr(deploy, "BOOT_WAIT_S", 0)

    def run(*extra):
        argv = ["--board", "wt32-eth01", "--port", "/dev/ttyUSB0", "--config",
                os.environ["CONFIG"], "--mpremote", tools["mpremote"],
                "--esptool", tools["esptool"], *extra]
        rc = deploy.main(argv)
        log = tmp_path / "calls.log"
        calls = log.read_text().splitlines() if log.exists() else []
        return rc, [c.split()[0] + " " + c.split()[1] if c.startswith("mpremote") else c
                    for c in calls]

    return dev, run


def test_real_run_copies_verifies_and_resets(device, config, monkeypatch, capsys):
    dev, run = device
    monkeypatch.setenv("CONFIG", str(config))
    rc, calls = run()
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert calls == ["mpremote exec", "mpremote cp", "mpremote sha256sum", "mpremote reset"]
    assert (dev / "board.json").read_bytes() == (REPO / "boards" / "wt32-eth01.json").read_bytes()
    assert (dev / "config.json").read_bytes() == config.read_bytes()
    assert (dev / "main.py").read_bytes() == (REPO / "main.py").read_bytes()
    libs = deploy.lib_files()
    for p in libs:  # lib/ (umqtt.simple, when fetched) copied as it is
        assert (dev / p.relative_to(REPO)).read_bytes() == p.read_bytes()
    assert "all %d files verified" % (4 + len(libs)) in out and "deploy: done" in out
    _no_secrets(out + err, config)


def test_real_run_flashes_an_image_then_removes_a_stale_bundle(device, config, monkeypatch,
                                                                tmp_path, capsys):
    dev, run = device
    (dev / "firmware").mkdir()
    (dev / "firmware" / "compat.mpy").write_bytes(b"M")
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\xe9")
    monkeypatch.setenv("CONFIG", str(config))
    monkeypatch.setenv("FAKE_PROBE", PROBE_OK[:-1] + "1")
    rc, calls = run("--image", str(image), "--erase")
    assert rc == 0, capsys.readouterr().err
    assert calls[0] == "esptool --chip esp32 --port /dev/ttyUSB0 erase_flash"
    assert calls[1].startswith("esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 "
                               "write_flash -z 0x1000 ")
    assert calls[2:] == ["mpremote exec", "mpremote rm", "mpremote cp", "mpremote sha256sum",
                         "mpremote reset"]
    assert not (dev / "firmware").exists()


def test_real_run_stops_on_a_stock_image(device, config, monkeypatch, capsys):
    dev, run = device
    monkeypatch.setenv("CONFIG", str(config))
    monkeypatch.setenv("FAKE_PROBE", "DEPLOY-PROBE|Generic ESP32 module with ESP32|0|0|0")
    rc, calls = run()
    err = capsys.readouterr().err
    assert rc == 1 and calls == ["mpremote exec"]
    assert "not the IOT_TERMINAL_ESP32 image" in err
    assert not (dev / "config.json").exists()


def test_real_run_reports_a_hash_mismatch(device, config, monkeypatch, capsys):
    dev, run = device
    monkeypatch.setenv("CONFIG", str(config))
    monkeypatch.setenv("FAKE_CORRUPT", "config.json")
    rc, calls = run()
    out, err = capsys.readouterr()
    assert rc == 1 and "reset" not in " ".join(calls)
    assert "SHA-256 mismatch on the device for: config.json" in err
    _no_secrets(out + err, config)
