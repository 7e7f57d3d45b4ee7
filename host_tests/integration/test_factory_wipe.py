"""Factory reset on the ESP32 HAL (firmware/hal/esp32.py) under the MicroPython unix port, over
the esp32-sim stand-ins: a 4 MiB flash image laid out by the board's partition table, the vfs
partition formatted LittleFS (vfs.VfsLfs2) as the port does.

The device is provisioned through the firmware's own classes (config.json rewritten several times,
state.json with the DLMS invocation counter through StateFile and security.Counter, the event
log), plus Wi-Fi credentials in NVS as an earlier firmware could have left them. The test first
checks that it SEES the secrets in the image (LittleFS keeps superseded copies: a scan that finds
nothing before the wipe would prove nothing), runs factory.reset, then scans the whole image for
every secret (text, hex, the binary key bytes) and every invocation-counter encoding.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "host_tests", "unit")  # event_fakes, for the script
sys.path.insert(0, ROOT)

from tools.esp32sim import host as esp32sim  # noqa: E402

MP = os.path.join(os.path.dirname(sys.executable), "micropython")
if not os.path.exists(MP):
    MP = shutil.which("micropython")

SECTOR = 4096
NVS = (0x9000, 0x6000)
METERLOG = (0x200000, 0x80000)
VFS = (0x280000, 0x180000)
IC0 = 0x5A3C9E71  # the DLMS invocation counter before the reset (a 31-bit small int)
IC_BLOCK = 256
VERSIONS = 4  # config.json written this many times, every secret different each time


def secrets(v):
    """Every secret of config.json, version v (distinctive: found nowhere else by chance)."""
    return {
        ("lan", "wifi_psk"): "Wpa2-Psk-Zq%d-fixture-8c1e" % v,
        ("radio", "route_b_id"): "%dB7E4C19A0D3F5E2B8C6A1D9F0E37%d5A" % (v, v),
        ("radio", "pana_password"): "PanaPw%dXk7Q2z" % v,
        ("dlms", "lls_password"): "LlsPw-%d-reader-7f3a" % v,
        ("dlms", "mgmt_password"): "MgmtPw-%d-mgr-91bd" % v,
        ("dlms", "mgmt_ek"): "%d1C7E2A9B40F36D58E17C2B9A04F6D3" % v,
        ("dlms", "mgmt_ak"): "%d2D8F3B0C51A47E69F28D3C0B15A7E4" % v,
        ("dlms", "reader_ek"): "%d3E9A4C1D62B58F70A39E4D1C26B8F5" % v,
        ("dlms", "reader_ak"): "%d4FAB5D2E73C69A81B4AF5E2D37C9A6" % v,
        ("mqtt", "password"): "MqttPw-%d-broker-c4e2" % v,
        ("web", "password"): "WebPw-%d-setup-5d7b" % v,
    }


def config_json(v):
    cfg = {"dlms": {"ic_block": IC_BLOCK}}
    for (sect, key), val in secrets(v).items():
        cfg.setdefault(sect, {})[key] = val
    cfg["lan"]["wifi_ssid"] = "terminal-site"
    return json.dumps(cfg)


BOARD = {
    "name": "esp32-sim-wipe", "hal": "esp32", "simulation": True,
    "network": {"kind": "wifi"},
    "radio_uart": {"id": 2, "tx": 17, "rx": 16},
    "flash": {"partition": "meterlog", "block_size": 4096, "first_block": 0, "n_blocks": 128},
    "vfs": {"mount": "/flash"},  # the device mounts it at "/"; the unix port's root is the host's
    "watchdog_ms": 60000,
}
KEPT = {  # what tools/deploy.py puts next to config.json, and lib/ (umqtt)
    "boot.py": "# boot.py of the deployment\nimport gc\n",
    "main.py": "# main.py of the deployment\n",
    "lib/umqtt/simple.py": "# umqtt.simple stand-in\nclass MQTTClient: pass\n",
}

SCRIPT = r"""
import json
import os
import sys

import esp32
import vfs

from firmware import log
from firmware.cosem.security import Counter
from firmware.store.eventlog import EventLog
from firmware.store.state import StateFile

MOUNT = "/flash"
phase = sys.argv[1]
with open(sys.argv[2]) as f:
    P = json.load(f)


def part(label):
    return esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)[0]


def put(name, text):
    with open(name, "w") as f:
        f.write(text)


if phase == "provision":
    p = part("vfs")
    vfs.VfsLfs2.mkfs(p)
    vfs.mount(vfs.VfsLfs2(p), MOUNT)
    os.chdir(MOUNT)
    put("board.json", P["board"])
    os.mkdir("lib")
    os.mkdir("lib/umqtt")
    for name, text in P["kept"].items():
        put(name, text)
    for text in P["configs"]:  # the setup page saving again and again
        put("config.json", text)
    st = StateFile("state.json")
    st.set("boot_count", 7)
    st.update({"sm_mac": "001D129012345678", "channel": 33, "pan_id": 0x1234})
    st.set("dlms_ic", P["ic0"])
    c = Counter(st, "dlms_ic", P["ic_block"])
    assert c.take() == P["ic0"]  # persists the next ceiling, ic0 + ic_block
    lg = EventLog("events", 256, None, burst=0)
    lg.mount()
    for code in (2, 16, 1, 8):
        lg.record(code, 5)
    vfs.umount(MOUNT)
    m = part("meterlog")
    m.writeblocks(0, bytes(range(256)) * 16)  # stands for the interval log's records
    m.writeblocks(127, b"MLG1" * 1024)
    print("PROVISIONED")

elif phase == "deploy":  # tools/deploy.py onto a formatted board: files, a config without secrets
    vfs.mount(vfs.VfsLfs2(part("vfs")), MOUNT)
    os.chdir(MOUNT)
    put("board.json", P["board"])
    put("config.json", "{}")
    print("DEPLOYED")

elif phase == "wipe":
    vfs.mount(vfs.VfsLfs2(part("vfs")), MOUNT)  # as the port's _boot.py
    os.chdir(MOUNT)
    from firmware import hal as halmod
    from firmware.app import config, factory

    cfg = config.load("config.json")
    hal = halmod.create(halmod.load_board("board.json"), cfg)
    rep = factory.reset(hal, cfg, P["keep"])
    print("REPORT " + json.dumps(rep))

elif phase == "boot":
    p = part("vfs")
    formatted = False
    try:
        vfs.mount(vfs.VfsLfs2(p), MOUNT)
    except OSError:  # the port's _boot.py: inisetup formats an unmountable vfs
        vfs.VfsLfs2.mkfs(p)
        vfs.mount(vfs.VfsLfs2(p), MOUNT)
        formatted = True
    os.chdir(MOUNT)
    from event_fakes import code_details, mounted
    from firmware.app import config, factory

    files = {}
    todo = [""]
    while todo:
        d = todo.pop()
        for name in os.listdir(d or "."):
            rel = d + "/" + name if d else name
            if os.stat(rel)[0] & 0x4000:
                todo.append(rel)
            else:
                with open(rel, "rb") as f:
                    data = f.read()
                try:
                    files[rel] = data.decode()
                except UnicodeError:  # the event log's segments
                    files[rel] = len(data)
    cfg = config.load("config.json")
    out = {"formatted": formatted, "files": files,
           "events": code_details(mounted(factory.events_path(cfg), 256)),
           "lan": cfg["lan"], "radio": [cfg["radio"]["route_b_id"], cfg["radio"]["pana_password"]],
           "dlms": [cfg["dlms"][k] for k in ("lls_password", "mgmt_password", "mgmt_ek",
                                              "mgmt_ak", "reader_ek", "reader_ak")]}
    print("BOOT " + json.dumps(out))
"""


class Sim:
    """A simulated board's flash and sim directory; run(phase) runs the script on it."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path)
        self.image = os.path.join(self.dir, "flash.bin")
        with open(self.image, "wb") as f:
            f.write(b"\xff" * esp32sim.FLASH_BYTES)
        self.sim = {"rate": 1, "flash": {"image": self.image, "table": esp32sim.PARTITIONS}}
        self._write_sim()
        self.script = os.path.join(self.dir, "wipe_check.py")
        with open(self.script, "w") as f:
            f.write(SCRIPT)

    def _write_sim(self):
        with open(os.path.join(self.dir, "sim.json"), "w") as f:
            json.dump(self.sim, f)

    def stall_at_erase(self, n):
        self.sim["flash"]["stall_at_erase"] = n
        self._write_sim()

    def cmd(self, phase, **params):
        p = {"board": json.dumps(BOARD), "kept": KEPT, "ic0": IC0, "ic_block": IC_BLOCK,
             "configs": [config_json(v) for v in range(VERSIONS)]}
        p.update(params)
        path = os.path.join(self.dir, "params.json")
        with open(path, "w") as f:
            json.dump(p, f)
        env = dict(os.environ, ESP32SIM=self.dir,
                   MICROPYPATH="%s:%s:%s:.frozen" % (ROOT, UNIT, esp32sim.HERE))
        return [MP, "-X", "heapsize=4m", self.script, phase, path], env

    def run(self, phase, **params):
        cmd, env = self.cmd(phase, **params)
        r = subprocess.run(cmd, cwd=self.dir, env=env, capture_output=True, text=True,
                           timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        return out

    def flash(self):
        with open(self.image, "rb") as f:
            return f.read()

    def plant_nvs_wifi(self, psk):
        """Wi-Fi station credentials in NVS (namespace nvs.net80211), as a firmware with
        WIFI_STORAGE_FLASH leaves them: an entry-like record holding the PSK as text."""
        rec = b"\xfe\xff\xff\xff" + b"nvs.net80211\x00sta.pswd\x00" + psk.encode() + b"\x00"
        with open(self.image, "r+b") as f:
            f.seek(NVS[0] + 2 * 32)
            f.write(rec)


def _result(out, tag):
    for line in out.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    raise AssertionError("no %s line in:\n%s" % (tag, out))


def encodings(text):
    b = text.encode()
    out = [b, b.hex().encode(), b.hex().upper().encode()]
    try:
        out.append(bytes.fromhex(text))  # a key: its 16 binary bytes too
    except ValueError:
        pass
    return out


def counter_encodings(v):
    return [str(v).encode(), b"%x" % v, b"%X" % v, v.to_bytes(4, "big"), v.to_bytes(4, "little")]


def every_needle():
    """(what, bytes) of every secret of every config version and both counter values."""
    out = []
    for v in range(VERSIONS):
        for (sect, key), val in secrets(v).items():
            for enc in encodings(val):
                out.append(("%s.%s v%d" % (sect, key, v), enc))
    for v in (IC0, IC0 + IC_BLOCK):
        for enc in counter_encodings(v):
            out.append(("dlms_ic %d" % v, enc))
    return out


def found(image, needles):
    return sorted({what for what, b in needles if b in image})


def provision(sim):
    sim.run("provision")
    sim.plant_nvs_wifi(secrets(VERSIONS - 1)[("lan", "wifi_psk")])
    pre = sim.flash()
    # The scan must be able to see what it looks for: the current value of every text secret
    # and both counter values are in the image, and so are superseded config.json copies.
    last = secrets(VERSIONS - 1)
    for (sect, key), val in last.items():
        assert val.encode() in pre[VFS[0]:VFS[0] + VFS[1]], "%s.%s not seen before" % (sect, key)
    for v in (IC0, IC0 + IC_BLOCK):
        assert str(v).encode() in pre, v
    stale = [v for v in range(VERSIONS - 1)
             if secrets(v)[("lan", "wifi_psk")].encode() in pre]
    assert stale, "no superseded copy lingers: the test would not show copy-on-write"
    assert last[("lan", "wifi_psk")].encode() in pre[NVS[0]:NVS[0] + NVS[1]]
    return pre, stale


def check_clean(image):
    left = found(image, every_needle())
    assert not left, "secrets left in the flash image: %s" % left


def check_boot(sim, detail):
    boot = _result(sim.run("boot"), "BOOT")
    assert not boot["formatted"]
    assert boot["files"].get("board.json") == json.dumps(BOARD)
    for name, text in KEPT.items():
        assert boot["files"].get(name) == text, name
    assert sorted(boot["files"]) == sorted(["board.json", "events.0"] + list(KEPT))
    assert boot["events"] == [[21, detail]]  # the new log: FACTORY_RESET only
    assert boot["lan"]["wifi_psk"] == "" and boot["radio"] == ["", ""]
    assert boot["dlms"] == [""] * 6
    return boot


def test_wipe_keeps_metering_and_leaves_no_secret(tmp_path):
    assert MP, "micropython binary not installed"
    sim = Sim(tmp_path)
    pre, stale = provision(sim)
    rep = _result(sim.run("wipe", keep=True), "REPORT")
    assert rep["nvs"] == NVS[1] // SECTOR
    assert rep["filesystem"]["blocks"] == VFS[1] // SECTOR
    assert sorted(rep["filesystem"]["kept"]) == sorted(
        ["board.json", "boot.py", "main.py", "lib", "lib/umqtt", "lib/umqtt/simple.py"])
    assert rep["store"] is None and rep["event"] == 1
    post = sim.flash()
    check_clean(post)
    a, n = METERLOG
    assert post[a:a + n] == pre[a:a + n]  # the interval log untouched
    assert post[a:a + 4] != b"\xff" * 4
    assert post[NVS[0]:NVS[0] + NVS[1]] == b"\xff" * NVS[1]
    check_boot(sim, 1)
    print("superseded PSK copies seen before the wipe: versions %s" % stale)


def test_wipe_erases_metering_when_asked(tmp_path):
    assert MP, "micropython binary not installed"
    sim = Sim(tmp_path)
    provision(sim)
    rep = _result(sim.run("wipe", keep=False), "REPORT")
    assert rep["store"] == METERLOG[1] // SECTOR
    post = sim.flash()
    check_clean(post)
    a, n = METERLOG
    assert post[a:a + n] == b"\xff" * n
    check_boot(sim, 0)


def test_power_cut_between_erase_and_format_boots_with_no_secret(tmp_path):
    assert MP, "micropython binary not installed"
    sim = Sim(tmp_path)
    pre, _ = provision(sim)
    # NVS then the vfs partition, each sector erased once; the next erase is the re-format's
    cut_wipe_at_erase(sim, NVS[1] // SECTOR + VFS[1] // SECTOR + 1)
    image = sim.flash()
    assert image[VFS[0]:VFS[0] + VFS[1]] == b"\xff" * VFS[1]  # cut after the erase, before mkfs
    check_clean(image)
    boot = _result(sim.run("boot"), "BOOT")
    assert boot["formatted"]  # the port formats the erased partition and starts
    assert boot["files"] == {} and boot["events"] == []
    assert boot["lan"]["wifi_psk"] == ""
    check_clean(sim.flash())
    a, n = METERLOG
    assert sim.flash()[a:a + n] == pre[a:a + n]


# -- tools/factory_reset.py ------------------------------------------------------------------

def test_tool_runs_the_wipe_through_mpremote_and_checks_the_report(tmp_path, capsys):
    from tools import factory_reset as tool

    assert tool.main(["--port", "/dev/ttyUSB9", "--dry-run"]) == 0
    line = capsys.readouterr().out
    assert "connect /dev/ttyUSB9 exec" in line and "keep_metering=True" in line
    assert line.rstrip().endswith("reset")
    assert tool.main(["--port", "/dev/ttyUSB9", "--dry-run", "--erase-metering"]) == 0
    assert "keep_metering=False" in capsys.readouterr().out
    fake = tmp_path / "mpremote"  # prints what the board prints, or nothing (a cut-short run)
    for said, rc in (('FACTORY RESET DONE {"nvs": 6, "store": null}', 0), ("", 1)):
        fake.write_text("#!/bin/sh\necho '%s'\n" % said)
        fake.chmod(0o755)
        assert tool.main(["--port", "/dev/x", "--yes", "--mpremote", str(fake)]) == rc
    assert tool.parse_report('x\nFACTORY RESET DONE {"event": 1}\n') == {"event": 1}


def test_tool_on_a_host_simulation(tmp_path, monkeypatch):
    from tools import factory_reset as tool

    cfg = tmp_path / "config.json"
    state = tmp_path / "state.json"
    cfg.write_text(json.dumps({"lan": {"wifi_psk": "tool-psk-1234"},
                               "store": {"state_path": str(state)}}))
    state.write_text("{}\n0\n")
    board = tmp_path / "host.json"
    board.write_text('{"hal": "host"}')
    monkeypatch.setattr("builtins.input", lambda: "no")
    assert tool.main(["--host-board", str(board), "--config", str(cfg)]) == 2
    assert cfg.exists()
    assert tool.main(["--host-board", str(board), "--config", str(cfg), "--yes"]) == 0
    assert not cfg.exists() and not state.exists()
    assert (tmp_path / "events.0").exists()  # FACTORY_RESET, in the new log
    sim_board = tmp_path / "sim.json"
    sim_board.write_text('{"hal": "esp32"}')
    assert tool.main(["--host-board", str(sim_board), "--config", str(cfg), "--yes"]) == 2


def marked_blocks(image):
    """vfs blocks holding a secret key's name or a current secret (erased first)."""
    from firmware.app import factory

    needles = list(factory._KEY_MARKERS) + [v.encode() for v in secrets(VERSIONS - 1).values()]
    out = []
    for b in range(VFS[1] // SECTOR):
        blk = image[VFS[0] + b * SECTOR:VFS[0] + (b + 1) * SECTOR]
        if any(n in blk for n in needles):
            out.append(b)
    return out


def cut_wipe_at_erase(sim, n):
    """Run the wipe and cut the power at its n-th sector erase (the erase itself not done)."""
    sim.stall_at_erase(n)
    cmd, env = sim.cmd("wipe", keep=True)
    proc = subprocess.Popen(cmd, cwd=sim.dir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    stalled = os.path.join(sim.dir, "stalled")
    try:
        t = time.monotonic() + 120
        while not os.path.exists(stalled) and proc.poll() is None and time.monotonic() < t:
            time.sleep(0.05)
        assert os.path.exists(stalled), proc.communicate(timeout=10)[0].decode(errors="replace")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    os.remove(stalled)
    sim.stall_at_erase(None)


def test_power_cut_during_the_erase(tmp_path):
    """The blocks holding a secret are erased first: a cut once they are gone leaves no secret
    even though most of the partition is not erased yet. A cut before (the documented window,
    well under a second on the device) leaves some: the reset is run again (after deploying the
    board again if the port found no filesystem and formatted it) and erases every block."""
    assert MP, "micropython binary not installed"
    sim = Sim(tmp_path)
    pre, _ = provision(sim)
    marked = marked_blocks(pre)
    nvs = NVS[1] // SECTOR
    assert 2 <= len(marked) < VFS[1] // SECTOR // 4, marked
    image0 = sim.flash()
    cut_wipe_at_erase(sim, nvs + len(marked) + 1)
    image = sim.flash()
    for b in marked:
        assert image[VFS[0] + b * SECTOR:VFS[0] + (b + 1) * SECTOR] == b"\xff" * SECTOR
    assert image[VFS[0]:VFS[0] + VFS[1]] != b"\xff" * VFS[1]  # most of it still to erase
    check_clean(image)
    assert _result(sim.run("boot"), "BOOT")["formatted"]
    check_clean(sim.flash())
    print("%d of %d vfs blocks held a marker: %s" % (len(marked), VFS[1] // SECTOR, marked))

    with open(sim.image, "wb") as f:  # back to the provisioned device; cut at the first erase
        f.write(image0)
    cut_wipe_at_erase(sim, nvs + 2)
    left = found(sim.flash(), every_needle())
    assert left, "a cut before the marked blocks are erased leaves secrets: the test sees them"
    boot = _result(sim.run("boot"), "BOOT")
    print("after a cut at the first erase: formatted %s, files %s, left %s"
          % (boot["formatted"], sorted(boot["files"]), left))
    if boot["formatted"] or "board.json" not in boot["files"]:
        sim.run("deploy")  # the board came up empty: deployed again
    rep = _result(sim.run("wipe", keep=True), "REPORT")
    assert rep["filesystem"]["blocks"] == VFS[1] // SECTOR
    check_clean(sim.flash())
