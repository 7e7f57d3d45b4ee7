"""Safe boot and the start-up decision (docs/product.md), with the firmware running under the real
`micropython` binary in a tools.deployment.Deployment:

- an unusable configuration ends in setup mode (logged; no meter read, no radio), and after the
  configuration is fixed the next start runs normally;
- killed (SIGKILL) max_resets times within seconds of start, the next start is in safe mode; after
  safeboot.clear() it runs normally;
- a crash looping in one supervised task (an injected "web" task) does not stop metering: slots
  keep being stored, each crash is recorded as TASK_CRASH (detail: the task number).
"""

import os
import shutil
import tempfile
import time

import pytest
from event_fakes import code_details, mounted
from loop_thread import LoopThread

from firmware import events as ev
from firmware.app import safeboot
from firmware.app.terminal import task_number
from firmware.store.eventlog import EventLog
from tools.deployment import Deployment, build_host_mpy, wait_until

BAD_PASSWORD = "Bad pass-word!"  # not B-route format (12 letters and digits)


def events_of(dep):
    """(code, detail) of every event in the deployment's event log files."""
    return code_details(mounted(os.path.join(dep.workdir, "events"), 256))


@pytest.fixture
def bg():
    t = LoopThread()
    yield t
    t.close()


def _stop(bg, dep):
    bg.run(dep.stop())


def test_unusable_configuration_ends_in_setup_mode_then_runs_when_fixed(bg):
    dep = Deployment(rate=1800, config_overrides={"radio": {"pana_password": BAD_PASSWORD}})
    try:
        bg.run(dep.start(), 120)
        assert wait_until(lambda: "configuration needs setup" in dep.terminal_log(), 60), \
            dep.terminal_log()
        time.sleep(2)  # a normal start would have mounted the store and opened the radio by now
        log = dep.terminal_log()
        assert dep.firmware_alive()
        assert "ERROR config: radio.pana_password character 4 is not a letter or digit " \
               "(expected 12 letters and digits) (setup mode)" in log
        assert "metering and radio not started" in log
        assert "store mounted" not in log and "+A=" not in log and "j11" not in log.lower()
        assert BAD_PASSWORD not in log
        assert (ev.SAFE_MODE, safeboot.WHY_CONFIG) in events_of(dep)
        assert (ev.CONFIG_ERROR, 1) in events_of(dep)
        # fixed (as the setup page would write it): the next start runs normally
        dep.stop_firmware()
        dep.overrides = {}
        before = len(dep.terminal_log())
        dep.start_firmware()
        assert wait_until(lambda: "ready: UDP port" in dep.terminal_log()[before:], 60), \
            dep.terminal_log()[before:]
        new = dep.terminal_log()[before:]
        assert "store mounted" in new and "needs setup" not in new and "Traceback" not in new
    finally:
        _stop(bg, dep)


def test_killed_at_start_max_resets_times_ends_in_safe_mode_until_cleared(bg):
    dep = Deployment(rate=1800)
    try:
        bg.run(dep.start(), 120)
        for n in range(1, 5):  # safeboot.max_resets = 4 (default): four resets in a row
            before = len(dep.terminal_log())
            if n > 1:
                dep.start_firmware()
            # killed seconds after start: once the boot is counted (the state file's "boot n"
            # comes after the safe-boot count)
            assert wait_until(lambda n=n, b=before: "boot %d" % n in dep.terminal_log()[b:], 60), \
                dep.terminal_log()[before:]
            dep.stop_firmware(kill=True)
        before = len(dep.terminal_log())
        dep.start_firmware()
        assert wait_until(lambda: "boot loop" in dep.terminal_log()[before:], 60), \
            dep.terminal_log()[before:]
        time.sleep(2)
        new = dep.terminal_log()[before:]
        assert "ERROR safeboot: boot loop (boot 5 in a row not stable): metering and radio not " \
               "started" in new
        assert "store mounted" not in new and dep.firmware_alive()
        assert (ev.SAFE_MODE, safeboot.WHY_BOOT_LOOP) in events_of(dep)
        # a reboot does not leave safe mode ...
        dep.stop_firmware(kill=True)
        before = len(dep.terminal_log())
        dep.start_firmware()
        assert wait_until(lambda: "boot loop" in dep.terminal_log()[before:], 60)
        dep.stop_firmware(kill=True)
        # ... safeboot.clear() does (at the REPL, or the setup page after saving)
        safeboot.clear(os.path.join(dep.workdir, "safeboot.json"))
        before = len(dep.terminal_log())
        dep.start_firmware()
        assert wait_until(lambda: "ready: UDP port" in dep.terminal_log()[before:], 60), \
            dep.terminal_log()[before:]
        new = dep.terminal_log()[before:]
        assert "boot loop" not in new and "store mounted" in new and "boot 5" in new
    finally:
        _stop(bg, dep)


# The firmware's own main.py, with one more supervised task that crashes every ~0.2 s.
CRASHING_MAIN = '''
import asyncio
from firmware.app import terminal as t

_run = t.Terminal.run


async def _crash():
    await t.sleep_ms(200)
    raise RuntimeError("injected crash")


async def _run_with_crashes(self):
    await asyncio.gather(_run(self), t.supervise("web", _crash, backoff_ms=100,
                                                  max_backoff_ms=400))


t.Terminal.run = _run_with_crashes
exec(open("main.py.orig").read())
'''


def test_crash_loop_in_one_supervised_task_does_not_stop_metering(bg):
    fw = tempfile.mkdtemp(prefix="fw-crash-")
    try:
        shutil.copytree(build_host_mpy(), fw, dirs_exist_ok=True)
        os.replace(os.path.join(fw, "main.py"), os.path.join(fw, "main.py.orig"))
        with open(os.path.join(fw, "main.py"), "w") as f:
            f.write(CRASHING_MAIN)
        dep = Deployment(rate=1800, mpy_dir=fw)
        try:
            bg.run(dep.start(), 120)
            head = dep.head_end(out=lambda *a: None)
            try:
                bg.run(head.connect(timeout_s=60), 90)
                bg.run(head.sync_clock())  # the calendar: metering starts
            finally:
                head.close()
            assert wait_until(lambda: dep.terminal_log().count("+A=") >= 2, 60), \
                dep.terminal_log()[-3000:]
            log = dep.terminal_log()
            crashes_then = log.count("web: task crashed")
            slots_then = log.count("+A=")
            assert crashes_then >= 3
            # several more boundaries (one per real second at x1800) while it keeps crashing
            assert wait_until(lambda: dep.terminal_log().count("+A=") >= slots_then + 4, 30)
            log = dep.terminal_log()
            assert log.count("web: task crashed") > crashes_then
            assert dep.firmware_alive()
            crash_events = [d for c, d in events_of(dep) if c == ev.TASK_CRASH]
            # recorded with the task's number; the event log's flood limit keeps the first
            # events.burst (8) of them
            assert crash_events and set(crash_events) == {task_number("web")}
        finally:
            _stop(bg, dep)
    finally:
        shutil.rmtree(fw, ignore_errors=True)


def test_stable_boot_is_marked_and_safeboot_unloaded(tmp_path):
    import asyncio
    import sys

    from firmware.app import terminal

    path = str(tmp_path / "safeboot.json")
    for _ in range(3):
        safeboot.enter(path)
    asyncio.run(terminal._stable_then_unload(0))
    assert "firmware.app.safeboot" not in sys.modules  # its heap goes once the boot is stable
    from firmware.app import safeboot as again  # a REPL's clear() imports it again

    assert again is not safeboot
    assert again.enter(path) == 1  # the count started again


def test_setup_mode_runs_the_setup_page_with_why_problems_and_events(tmp_path, monkeypatch):
    import asyncio
    import sys
    import types

    from firmware.app import config as cfgmod
    from firmware.app import terminal
    from firmware.hal.clock import CalendarClock

    calls = []

    async def serve_setup(hal, cfg, why, problems, events, config_path):
        calls.append((hal, cfg, why, problems, events))
        await asyncio.sleep(10)

    page = types.ModuleType("firmware.app.setup")
    page.serve_setup = serve_setup
    monkeypatch.setitem(sys.modules, "firmware.app.setup", page)

    class Hal:
        clock = CalendarClock()
        fed = 0

        def feed_watchdog(self):
            Hal.fed += 1

    cfg = cfgmod.merge({"store": {"state_path": str(tmp_path / "state.json")}})
    problems = [(cfgmod.SETUP, "radio.pana_password", "is missing")]
    hal = Hal()

    async def body():
        task = asyncio.ensure_future(terminal.setup_mode(hal, cfg, safeboot.WHY_CONFIG,
                                                         problems, 300))
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(body())
    assert len(calls) == 1
    got_hal, got_cfg, why, got_problems, events = calls[0]
    assert (got_hal, got_cfg, why, got_problems) == (hal, cfg, safeboot.WHY_CONFIG, problems)
    assert isinstance(events, EventLog)
    assert Hal.fed >= 1  # the watchdog is fed beside the page
    assert code_details(events) == [(ev.SAFE_MODE, safeboot.WHY_CONFIG), (ev.CONFIG_ERROR, 1)]
