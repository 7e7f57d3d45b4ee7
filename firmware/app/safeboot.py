# Boot-loop detection (docs/product.md "Safe boot"). Each boot is counted as unstable in a tiny
# state file before anything else can fail, and marked stable after safeboot.stable_s of uptime;
# after safeboot.max_resets boots in a row that never became stable the device starts in safe
# mode (metering and radio paused, REPL and setup page up) instead of resetting for ever.
#
# The file (`safeboot.json` next to store.state_path; firmware/store/state.py format: JSON line +
# CRC line, written by temp file + rename) holds {"unstable": n, "requested": 0|1}. Two writes per
# boot at most (count, stable). Left by: a reboot after the setup page saved a configuration (it
# calls clear()), or clear() at the REPL.
from firmware import log
from firmware.compat import sleep_ms

WHY_BOOT_LOOP = 1  # max_resets boots in a row ended before stable_s
WHY_CONFIG = 2  # the configuration has SETUP problems (firmware/app/config.py check)
WHY_FLASH = 3  # the store's flash region is unusable
WHY_REQUESTED = 4  # setup requested by the user (request(), e.g. from the status page)
WHY_TEXT = ("", "boot loop", "configuration needs setup", "flash unusable", "setup requested")

FILE = "safeboot.json"
_TAG = "safeboot"
_CAP = 1000  # the count stops growing here (it is a state, not a statistic)
_path = FILE  # set by enter(): clear() at the REPL needs no argument
_state = None


def path_for(state_path):
    """The safe-boot file next to the state file (store.state_path)."""
    from firmware.store.state import beside

    return beside(state_path, FILE)


def _open(path):
    from firmware.store.state import StateFile

    return StateFile(path, tag=_TAG)


def enter(path=None):
    """Count this boot as unstable (first thing at start-up). Returns how many boots in a row,
    this one included, have not become stable."""
    global _path, _state
    if path is not None:
        _path = path
    try:
        _state = _open(_path)
        n = min(_state.get("unstable", 0) + 1, _CAP)
        _state.set("unstable", n)
    except Exception as e:  # noqa: BLE001 - a filesystem fault must not stop the boot itself
        log.exc(_TAG, "boot count not kept", e)
        _state = None
        return 1
    return n


def unstable():
    """Boots in a row not yet stable, this one included (0 before enter)."""
    return _state.get("unstable", 0) if _state is not None else 0


def boot_loop(max_resets):
    """True when the previous max_resets boots each ended before becoming stable."""
    return unstable() - 1 >= max_resets


def requested():
    return _state is not None and bool(_state.get("requested", 0))


def stable():
    """This boot ran stable_s without a reset: the count starts again (one write)."""
    if _state is not None:
        try:
            _state.update({"unstable": 0, "requested": 0})
        except OSError as e:
            log.warn(_TAG, "stable mark not written: %s" % e)


def clear(path=None):
    """Leave safe mode at the next boot: at the REPL `from firmware.app import safeboot;
    safeboot.clear()`, or called by the setup page after it saved a configuration."""
    global _state
    st = _state if path is None and _state is not None else _open(path or _path)
    st.update({"unstable": 0, "requested": 0})
    if path is None:
        _state = st
    log.info(_TAG, "boot count cleared: the next boot runs normally")


def request(path=None):
    """Ask for setup mode at the next boot (WHY_REQUESTED)."""
    st = _state if path is None and _state is not None else _open(path or _path)
    st.set("requested", 1)


def decide(max_resets, problems, setup_severity):
    """0 = run normally, else the WHY_* of safe/setup mode: a boot loop first (the configuration
    may be fine and something else crash), then a request, then SETUP problems."""
    if boot_loop(max_resets):
        return WHY_BOOT_LOOP
    if requested():
        return WHY_REQUESTED
    for p in problems:
        if p[0] == setup_severity:
            return WHY_CONFIG
    return 0


async def stable_after(stable_s):
    """Mark the boot stable after stable_s seconds of uptime (real ticks, not the calendar)."""
    await sleep_ms(stable_s * 1000)
    stable()
    log.info(_TAG, "up %d s: boot is stable" % stable_s)


async def hold(hal, why, every_s=600):
    """Safe/setup mode without a setup page (none in this build): keep the device up (watchdog
    fed, REPL reachable with Ctrl-C) and say why every every_s seconds."""
    n = 0
    while True:
        hal.feed_watchdog()
        await sleep_ms(1000)
        n += 1
        if n % every_s == 0:
            log.error(_TAG, "safe mode (%s): metering and radio not started" % WHY_TEXT[why])
