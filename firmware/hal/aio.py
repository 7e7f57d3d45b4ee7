# Await readiness of a socket or file without busy polling, on both runtimes.
# MicroPython: park the task on asyncio's poll queue (internal API also used by asyncio.Stream).
# CPython: loop.add_reader/add_writer with a future.
from firmware.compat import IS_MICROPYTHON

if IS_MICROPYTHON:
    from asyncio import core as _core

    def wait_readable(obj):
        yield _core._io_queue.queue_read(obj)

    def wait_writable(obj):
        yield _core._io_queue.queue_write(obj)

else:
    import asyncio as _asyncio

    async def _wait(obj, add, remove):
        loop = _asyncio.get_running_loop()
        fut = loop.create_future()
        fd = obj if isinstance(obj, int) else obj.fileno()
        getattr(loop, add)(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            getattr(loop, remove)(fd)

    async def wait_readable(obj):
        await _wait(obj, "add_reader", "remove_reader")

    async def wait_writable(obj):
        await _wait(obj, "add_writer", "remove_writer")
