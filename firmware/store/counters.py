# Persistent counters that survive reboots (docs/product.md "Counters"): cumulative uptime, boots,
# resets by cause, slots stored, slots backfilled, radio link drops, CRC/checksum errors, task
# crashes. Kept in RAM as one dict of ints and written to a small state file (firmware/store/
# state.py: JSON line + CRC line, temp file + rename) at boot and then at most every persist_s
# seconds of uptime: with the default 3600 s that is 24 writes a day plus one per boot, whatever
# the traffic (LittleFS spreads them over its blocks). A power cut loses at most the counts of
# the last persist_s seconds; it never makes a counter go back further than that.
#
# Counting costs no allocation: small ints replace small ints in a dict whose keys exist.
from firmware import events as ev
from firmware import log
from firmware.compat import ticks_add, ticks_diff, ticks_ms
from firmware.store.state import beside

FILE = "counters.json"
NAMES = ("uptime_s", "boots", "reads", "backfills", "link_drops", "crc_errors", "task_crashes")
_TAG = "counters"


def path_for(state_path):
    """The counters file next to the state file (store.state_path)."""
    return beside(state_path, FILE)


class Counters:
    def __init__(self, path, persist_s=3600, ticks=ticks_ms):
        from firmware.store.state import StateFile

        self._file = StateFile(path, tag=_TAG)
        self.values = {}
        for n in NAMES:
            self.values[n] = 0
        for k, v in self._file.values.items():
            # only non-negative ints come back: a damaged or foreign value starts at 0
            if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                self.values[k] = v
        self.persist_ms = max(1, persist_s) * 1000
        self._ticks = ticks
        self._t = ticks()  # uptime folded into uptime_s up to here
        self._wrote = self._t
        self._seen = {}  # per-boot totals of other components' stats, already counted

    @property
    def writes(self):
        """File writes since this object was built (the wear the counters cost)."""
        return self._file.writes

    def boot(self, cause):
        """Count this boot and its reset cause (the HAL's reset_cause(): "power_on", "watchdog",
        ...), and write at once: a boot loop must show in the counters too."""
        self.add("boots")
        self.add("resets_" + cause)
        self.persist()

    def add(self, name, n=1):
        v = self.values
        v[name] = v.get(name, 0) + n

    def on_event(self, code, detail=0):
        """Every event the terminal records passes here first (its event sink)."""
        if code == ev.LINK_DOWN:
            self.add("link_drops")
        elif code == ev.BACKFILL_DONE:
            if detail > 0:
                self.add("backfills", detail)
        elif code == ev.TASK_CRASH:
            self.add("task_crashes")

    def on_put(self, meter, slot):
        """IntervalStore put listener: a slot stored (live or backfilled)."""
        self.add("reads")

    def track(self, name, source, total):
        """Add to `name` what another component's per-boot total `source` (e.g. the radio
        driver's bad frames) grew by since the last call; a total that went back restarted."""
        last = self._seen.get(source, 0)
        if total != last:
            self.add(name, total - last if total > last else total)
            self._seen[source] = total

    def _fold(self):
        now = self._ticks()
        s = ticks_diff(now, self._t) // 1000
        if s > 0:
            self.values["uptime_s"] += s
            self._t = ticks_add(self._t, s * 1000)
        return now

    def poll(self):
        """Call about every second: uptime folded in (ticks wrap after ~12 days, so never more
        than a few seconds at a time) and the file written once persist_s has passed."""
        now = self._fold()
        if ticks_diff(now, self._wrote) >= self.persist_ms:
            self.persist()

    def persist(self):
        """Write the counters now (at boot, every persist_s, and at clean points)."""
        self._wrote = self._fold()
        try:
            self._file.update(self.values)
        except OSError as e:
            log.warn(_TAG, "counters not written: %s" % e)

    def snapshot(self):
        """name -> int, uptime included up to now (a copy)."""
        self._fold()
        return dict(self.values)
