# LAN supervisor: keeps Wi-Fi / Ethernet up with capped exponential back-off, and runs the
# "link is up again" hooks (multicast re-join, discovery, backfill check) after every reconnect.
from firmware import log
from firmware.compat import sleep_ms

_TAG = "lan"


class LanSupervisor:
    def __init__(self, hal, check_ms=2000, backoff_min_ms=1000, backoff_max_ms=60000):
        self.hal = hal
        self.check_ms = check_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.up = False
        self.on_up = []  # fn() called after every transition to up
        self.stats = {"ups": 0, "downs": 0, "attempts": 0}

    def _set_up(self):
        self.up = True
        self.stats["ups"] += 1
        log.info(_TAG, "link up (%d)" % self.stats["ups"])
        self.run_hooks()

    def run_hooks(self):
        for fn in self.on_up:
            try:
                fn()
            except Exception as e:
                log.exc(_TAG, "link-up hook failed", e)

    async def wait_up(self):
        """Bring the link up for the first time (back-off between attempts)."""
        delay = self.backoff_min_ms
        while not self.up:
            self.stats["attempts"] += 1
            if self.hal.lan_up():
                self._set_up()
                return
            await sleep_ms(delay)
            delay = min(delay * 2, self.backoff_max_ms)

    async def run(self):
        """Watch the link for ever; reconnect with back-off when it drops."""
        await self.wait_up()
        while True:
            await sleep_ms(self.check_ms)
            if self.hal.lan_up():
                continue
            self.up = False
            self.stats["downs"] += 1
            log.warn(_TAG, "link down: reconnecting")
            await self.wait_up()
