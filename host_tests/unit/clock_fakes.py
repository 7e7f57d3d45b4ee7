# A calendar clock on a hand-driven millisecond counter, for the clock tests of both runtimes.
from firmware.hal.clock import CalendarClock


class Ticks:
    """The clock's ticks_ms: a test moves .ms by hand."""

    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms


def make_clock(doubtful_after_s=0, slew_max_s=60, rate=1, hold_max_ms=60000):
    """(CalendarClock on a fresh Ticks, that Ticks); slew_div 10 as in the defaults."""
    ticks = Ticks()
    c = CalendarClock(rate=rate, ticks=ticks, diff=lambda a, b: a - b)
    c.configure(slew_max_s=slew_max_s, slew_div=10, hold_max_ms=hold_max_ms,
                doubtful_after_s=doubtful_after_s)
    return c, ticks
