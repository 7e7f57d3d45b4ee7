# The optional meter-clock keeper (config clock.set_meter, off by default; docs/clock.md section
# 6): after the smart meter (the time authority) sets the terminal's clock, each meter's clock is
# read over ECHONET Lite (0x98 + 0xDA or 0x97, and 0xDB time-sync status) and, if it is off by
# more than clock.set_meter_drift_s and its Set property map (0x9E) lists the properties, set to
# the terminal's time with one SetC. Never from NTP alone (only the smart meter's sets wake it),
# never more often than clock.set_meter_min_s per meter, only in the quiet middle of a slot (the
# fixed-time read after a boundary is done, the next boundary far), and each set is an event.
#
# Imported only when clock.set_meter is on: when off the feature costs no heap at all.
import asyncio

from firmware import events, log, timeutil
from firmware.compat import const, sleep_ms
from firmware.meter.clockprops import EPC_TIME_HM, MeterClockPort
from firmware.meter.drmeter import MeterTimeout

# The part of each 30-minute slot in which a meter's clock may be set: from boundary + 5 min
# (the fixed-time values were read at + read_delay_s, 60 s) to boundary + 25 min, so that the
# meter's own boundary is not moved under a read in progress.
QUIET_FROM_S = const(300)
QUIET_TO_S = const(1500)

# decide(): what to do about one meter's clock
KEEP = const(0)  # within the drift allowed: nothing
SET = const(1)  # set it
UNSETTABLE = const(2)  # off, but its Set map lists no time (or no date, and the date is wrong)
UNKNOWN = const(3)  # the meter's clock could not be read

_NAMES = ("in time", "set", "off but not settable", "unreadable")
_DETAIL_MAX = 2147483647


def decide(offset_s, drift_s, date_epc, time_epc, date_differs):
    """KEEP, SET, UNSETTABLE or UNKNOWN for a meter whose clock is offset_s (meter minus true,
    None = unreadable) off, whose Set map lets us set date_epc/time_epc (None = not listed), and
    whose local date differs from the true one (date_differs)."""
    if offset_s is None:
        return UNKNOWN
    if -drift_s <= offset_s <= drift_s:
        return KEEP
    if time_epc is None or (date_epc is None and date_differs):
        return UNSETTABLE
    return SET


def quiet_wait_s(now_t2k):
    """Calendar seconds until the quiet part of a slot (0 inside it)."""
    r = now_t2k % timeutil.SLOT_S
    if r < QUIET_FROM_S:
        return QUIET_FROM_S - r
    if r > QUIET_TO_S:
        return timeutil.SLOT_S - r + QUIET_FROM_S
    return 0


def check_due(now_t2k, last_t2k, min_s):
    """True if a meter last checked at last_t2k (None = never) may be checked again (a clock
    stepped back to before the last check counts as due: the interval cannot be judged)."""
    return last_t2k is None or now_t2k < last_t2k or now_t2k - last_t2k >= min_s


class MeterClockKeeper:
    def __init__(self, clock, channels, cfg, tz_offset_min=540, event=events.ignore,
                 port=MeterClockPort):
        """clock: the CalendarClock; channels: the MeterChannels (client, index, poller);
        cfg: the clock config section (set_meter_min_s, set_meter_drift_s); port(client): the
        meter's clock reads and set (firmware/meter/clockprops.py)."""
        self.clock = clock
        self.port = port
        self.channels = channels
        self.min_s = cfg["set_meter_min_s"]
        self.drift_s = cfg["set_meter_drift_s"]
        self.tz = tz_offset_min
        self.event = event
        self._due = asyncio.Event()
        n = len(channels)
        self.last_check = [None] * n  # calendar time of each meter's last check
        self.offset = [None] * n  # meter minus terminal, seconds, at the last check
        self.sync = [None] * n  # the meter's 0xDB time-sync status at the last check
        self.state = [None] * n  # decide() at the last check
        self.stats = {"checks": 0, "sets": 0, "refused": 0, "errors": 0}

    def authority_set(self):
        """The smart meter set the terminal's clock (the terminal's clock listener calls this
        for SOURCE_SMART_METER sets only)."""
        self._due.set()

    async def run(self):
        while True:
            await self._due.wait()
            self._due.clear()
            for ch in self.channels:
                await self.check(ch)

    async def _wait_quiet(self):
        """Until the slot's quiet part, with no slew of a second or more in progress (the meter
        gets the time the smart meter said, not one still converging)."""
        while True:
            now = self.clock.now_t2k()
            w = quiet_wait_s(now)
            if not w and abs(self.clock.slewing_ms()) < 1000:
                return
            await sleep_ms(max(100, self.clock.ms_until(now + (w or 1)) or 0))

    async def check(self, ch):
        """Check (and if needed set) one meter's clock; the decide() result, or None when not
        due, the meter not yet metered, or the meter did not answer (logged)."""
        i = ch.index
        now = self.clock.now_t2k()
        if now is None or ch.poller.unit_code is None:
            return None  # no time yet, or the meter not read yet: the next set wakes us again
        if not check_due(now, self.last_check[i], self.min_s):
            return None
        await self._wait_quiet()
        tag = "meter%d" % i
        client = self.port(ch.client)
        try:
            date_epc, time_epc = await client.clock_epcs()
            meter_t, sync = await client.read_meter_clock(time_epc)
            now = self.clock.now_t2k()
            self.last_check[i] = now
            self.stats["checks"] += 1
            self._report_sync(tag, i, sync)
            off = None if meter_t is None else meter_t - now
            self.offset[i] = off
            # 0x97 has no seconds: its reading is up to 59 s behind whatever the drift allowed
            drift = max(self.drift_s, 60) if time_epc == EPC_TIME_HM else self.drift_s
            tz = self.tz * 60
            differs = off is not None and (meter_t + tz) // 86400 != (now + tz) // 86400
            act = decide(off, drift, date_epc, time_epc, differs)
            self.state[i] = act
            if act == SET:
                await self._set(tag, client, i, off, date_epc, time_epc)
            elif act == UNSETTABLE:
                log.warn(tag, "meter clock %+d s off; its Set property map (0x9E) lists no "
                         "settable %s: left alone" % (off, "time" if time_epc is None else "date"))
            elif act == UNKNOWN:
                log.warn(tag, "meter clock unreadable (0x98 + 0x%02X)"
                         % (time_epc or ch.client.profile.time))
            else:
                log.info(tag, "meter clock %+d s: in time" % off)
            return act
        except (MeterTimeout, ValueError, OSError) as e:
            self.stats["errors"] += 1
            log.warn(tag, "meter clock check: %s(%s)" % (type(e).__name__, e))
            return None

    async def _set(self, tag, client, i, off, date_epc, time_epc):
        clock = self.clock
        now = clock.now_t2k()
        if time_epc == EPC_TIME_HM and now % 60:  # HH MM only: set it as a minute begins
            await sleep_ms(clock.ms_until(now - now % 60 + 60) or 0)
        t = clock.now_t2k()
        if not await client.set_clock(t, date_epc, time_epc):
            self.stats["refused"] += 1
            log.warn(tag, "meter refused its clock (0x%02X) although its Set map lists it"
                     % time_epc)
            return
        self.stats["sets"] += 1
        log.warn(tag, "meter clock was %+d s off: set to %s" % (off, timeutil.iso(t, self.tz)))
        self.event(events.METER_CLOCK_SET,
                   max(-_DETAIL_MAX, min(_DETAIL_MAX, off)))
        meter_t, sync = await client.read_meter_clock(time_epc)
        if meter_t is not None:
            self.offset[i] = meter_t - clock.now_t2k()
            log.info(tag, "meter clock now %+d s" % self.offset[i])
        self._report_sync(tag, i, sync)

    def _report_sync(self, tag, i, sync):
        """0xDB: logged when it changes, a WARN when the meter says its sync failed."""
        if sync is None or sync == self.sync[i]:
            return
        self.sync[i] = sync
        if sync == 0x02:
            log.warn(tag, "meter reports its time synchronisation failed (0xDB = 0x02)")
        else:
            log.info(tag, "meter time-sync status 0xDB = 0x%02X (%s)" % (sync, {
                0x00: "not synchronised", 0x01: "synchronised", 0xFF: "not implemented"}.get(
                    sync, "unknown value")))

    def status(self, i):
        """One meter's state for status lines: "in time", "set", "off but not settable",
        "unreadable", or "-" before the first check."""
        s = self.state[i]
        return "-" if s is None else _NAMES[s]
