"""An asyncio event loop in a daemon thread, for the end-to-end fixtures: the emulators live on
it while the test's own thread (and blocking peers such as gurux's socket loop) talk to the
terminal."""

import asyncio
import threading


class LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout_s=30):
        """Run coro on the loop and wait for its result (TimeoutError after timeout_s)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
