# Portability shims so one source runs on MicroPython (ESP32 / unix port) and CPython 3.11.
# Only names that differ between the two runtimes live here; nothing touches hardware.
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython: emulate wrapping ms ticks (2^30 period, as on ESP32)
    import time as _time

    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD >> 1

    def ticks_ms():
        return int(_time.monotonic() * 1000) & (_TICKS_PERIOD - 1)

    def ticks_add(t, delta):
        return (t + delta) & (_TICKS_PERIOD - 1)

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF


def print_exception(exc, file=None):
    """Print a traceback on either runtime (MicroPython has sys.print_exception)."""
    if IS_MICROPYTHON:
        sys.print_exception(exc, file) if file else sys.print_exception(exc)
    else:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=file)


def wait_ms(aw, ms):
    """asyncio.wait_for with a timeout in milliseconds on both runtimes (raises TimeoutError)."""
    import asyncio

    if IS_MICROPYTHON:
        return asyncio.wait_for_ms(aw, ms)
    return asyncio.wait_for(aw, ms / 1000)


async def sleep_ms(ms):
    """asyncio.sleep_ms on MicroPython, asyncio.sleep on CPython (always a real coroutine)."""
    import asyncio

    if IS_MICROPYTHON:
        await asyncio.sleep_ms(ms)
    else:
        await asyncio.sleep(ms / 1000)
