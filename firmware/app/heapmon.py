# Heap milestones and peaks for the memory budget (docs/memory.md). Off unless the configuration
# says terminal.heap_log: a sample costs a gc.collect(). The figures are live heap after a
# collection, taken while the operation's buffers are still referenced, so "peak" means the
# largest live set seen at the sampling points, not garbage awaiting collection.
import gc

from firmware import log

enabled = False
_peaks = {}


def milestone(what):
    """Log the live heap after a start-up step ("heap after <what>: N used, N free")."""
    gc.collect()
    if hasattr(gc, "mem_alloc"):
        log.info("heap", "after %s: %d used, %d free" % (what, gc.mem_alloc(), gc.mem_free()))
        if dump_map:
            _dump("after " + what)


def sample(name):
    """Record the live heap inside an operation; logged when a new maximum is reached."""
    if not enabled or not hasattr(gc, "mem_alloc"):
        return
    gc.collect()
    a = gc.mem_alloc()
    if a > _peaks.get(name, 0):
        _peaks[name] = a
        log.info("heap", "peak %s: %d used" % (name, a))
        if dump_map:
            _dump("peak " + name)


dump_map = False  # terminal.heap_map: the block map (micropython.mem_info(1)) at each new peak


def _dump(what):
    import micropython

    log.info("heap", "map %s:" % what)
    micropython.mem_info(1)


def modules():
    """Log the firmware modules imported so far (the bench's import probe imports the same)."""
    if not enabled:
        return
    import sys

    names = sorted(k for k in sys.modules if k.startswith("firmware"))
    for i in range(0, len(names), 8):  # short lines: no large allocation at a tight heap
        log.info("heap", "modules: %s" % ",".join(names[i:i + 8]))


# The daily heap floor (live heap after a collection, sampled once per calendar hour): what a
# leak raises, while a single sample may land on a reply block or a day of history in flight.
_hour = -1
_day = -1
_low = 0
_high = 0
_n = 0


def daily(now_t2k):
    """Sample the live heap once per calendar hour; at the first sample of a new calendar day,
    log the day before ("heap day <n>: L used, H highest, S samples": its lowest and highest
    sample), for the soak's growth trend (tools/soak.py). Called every second by housekeeping:
    one gc.collect() per calendar hour, nothing on other calls; five ints of state."""
    global _hour, _day, _low, _high, _n
    if not enabled or now_t2k is None or not hasattr(gc, "mem_alloc"):
        return
    hour = now_t2k // 3600
    if hour == _hour:
        return
    _hour = hour
    gc.collect()
    a = gc.mem_alloc()
    day = now_t2k // 86400
    if day != _day:
        if _n:
            log.info("heap", "day %d: %d used, %d highest, %d samples" % (_day, _low, _high, _n))
        _day, _low, _high, _n = day, a, a, 1
        return
    _low = min(_low, a)
    _high = max(_high, a)
    _n += 1


def slot_done():
    """Log the bytes allocated since start at a slot boundary (micropython.mem_total, where the
    build keeps allocation statistics): the bench's alloc_bytes_per_slot is its step."""
    if not enabled:
        return
    try:
        import micropython

        total = micropython.mem_total()
    except (ImportError, AttributeError):
        return
    log.info("heap", "slot stored: %d allocated" % total)
