# Progress watchdog: the hardware watchdog is fed only while every watched task makes progress.
#
# A task declares a limit (expect) and beats at each point of progress; housekeeping feeds the
# WDT only while check() holds. A task is watched from its first beat (so a meter side that waits
# hours for the LAN is not "stalled"), is not watched while parked() says it waits legitimately
# (e.g. the radio in back-off or waiting for credentials), and rests after its supervisor restarts
# it until it beats again. The first stall is logged once and latched: from then on the WDT is no
# longer fed and resets the device within the board's watchdog_ms.
#
# Real milliseconds (compat.ticks_ms), never the calendar clock: the smart meter may step it.
from firmware import log
from firmware.compat import ticks_diff, ticks_ms


class Health:
    def __init__(self, ticks=ticks_ms, diff=ticks_diff):
        self._ticks = ticks
        self._diff = diff
        self._tasks = {}  # name -> [limit_ms, parked fn or None]
        self._last = {}  # name -> ticks of the last beat; absent = not watched (yet)
        self.stalled = None  # the task that stalled (latched)

    def expect(self, name, limit_ms, parked=None):
        """Once `name` has beaten, it must beat again within limit_ms, except while parked()."""
        self._tasks[name] = [limit_ms, parked]

    def beat(self, name):
        if name in self._tasks:
            self._last[name] = self._ticks()

    def rest(self, name):
        """Not watched until its next beat (its supervisor is starting it again)."""
        self._last.pop(name, None)

    def check(self):
        """True while every watched task is within its limit."""
        if self.stalled is not None:
            return False
        now = self._ticks()
        for name in self._last:
            limit, parked = self._tasks[name]
            if parked is not None and parked():
                self._last[name] = now
                continue
            idle = self._diff(now, self._last[name])
            if idle > limit:
                self.stalled = name
                log.error("health", "task %s made no progress for %d ms (limit %d ms): "
                          "watchdog no longer fed, the device resets" % (name, idle, limit))
                return False
        return True


HEALTH = Health()


def beat(name):
    """Progress of task `name` (the capture loop of meter k is "meter<k>", the radio "radio")."""
    HEALTH.beat(name)
