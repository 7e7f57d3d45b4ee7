# The optional NTP time source (config clock.ntp, off by default; docs/clock.md section 6).
#
# The smart meter stays the time authority: NTP sets the terminal's clock only while the smart
# meter has not set it since boot, or has not for clock.doubtful_after_s (the IC 8 status would
# say doubtful). Every query re-checks that rule just before the set, so a smart-meter set that
# arrives meanwhile wins. A set from NTP reaches the clock listener with SOURCE_NTP: it is logged
# and recorded as CLOCK_NTP (never CLOCK_SET), and it never sets a meter's clock.
#
# Imported only when clock.ntp is on: when off the feature costs no heap at all.
import os

from firmware import log
from firmware.compat import sleep_ms
from firmware.hal import sntp
from firmware.hal.clock import SOURCE_NTP
from firmware.hal.sntp import SntpError

_TAG = "ntp"
_RETRY_MS = 60000  # after a failed query (no reply, a bad reply), real milliseconds
_IDLE_MS = 10000  # how often the rule is looked at while NTP may not set the clock


def since_authority_s(clock):
    """Calendar seconds since the smart meter last set `clock`; None if it never did since boot
    (or the clock has no time)."""
    now = clock.now_t2k()
    if now is None or clock.authority_set is None:
        return None
    return now - clock.authority_set


def allowed(since_s, doubtful_after_s):
    """May NTP set the clock? since_s: calendar seconds since the smart meter's last set (None =
    never since boot); doubtful_after_s 0 = the clock is never doubtful."""
    if since_s is None:
        return True
    return bool(doubtful_after_s) and since_s > doubtful_after_s


class NtpSource:
    def __init__(self, hal, clock, cfg, lan=None, query=sntp.ntp_query):
        """hal: .lan_ip(), the address the query's socket is bound to (host: lan.bind_ip;
        ESP32: the Wi-Fi/Ethernet address); cfg: the clock section (ntp_server, ntp_port,
        ntp_every_s, ntp_timeout_ms); lan: has .up (None = always up); query: the exchange,
        query(bind_ip, server, port, timeout_ms, nonce) -> t2k (firmware/hal/sntp.py, the same
        socket code on both HALs)."""
        self.hal = hal
        self.query = query
        self.clock = clock
        self.server = cfg["ntp_server"]
        self.port = cfg["ntp_port"]
        self.every_ms = max(60, cfg["ntp_every_s"]) * 1000
        self.timeout_ms = max(100, min(10000, cfg["ntp_timeout_ms"]))
        self.lan = lan
        self.stats = {"queries": 0, "sets": 0, "bad": 0, "silent": 0, "held_off": 0}

    def may_set(self):
        return allowed(since_authority_s(self.clock), self.clock.doubtful_after_s)

    async def poll_once(self):
        """One query if the rule allows it; True if the clock was set from NTP."""
        if not self.may_set():
            return False
        self.stats["queries"] += 1
        try:
            t = await self.query(self.hal.lan_ip(), self.server, self.port, self.timeout_ms,
                                 os.urandom(8))
        except SntpError as e:
            self.stats["bad"] += 1
            log.warn(_TAG, "reply from %s rejected: %s" % (self.server, e))
            return False
        except Exception as e:  # OSError, a timeout (its class differs by runtime), DNS
            self.stats["silent"] += 1
            log.warn(_TAG, "no time from %s: %s(%s)" % (self.server, type(e).__name__, e))
            return False
        if not self.may_set():  # the smart meter set the clock while we waited: it wins
            self.stats["held_off"] += 1
            return False
        self.clock.set_t2k(t, SOURCE_NTP)
        self.stats["sets"] += 1
        return True

    async def run(self):
        if not self.server:
            log.error(_TAG, "clock.ntp is on but clock.ntp_server is empty: NTP not used")
            while True:
                await sleep_ms(3600000)
        while True:
            if self.lan is not None and not self.lan.up:
                await sleep_ms(_IDLE_MS)
                continue
            if not self.may_set():
                await sleep_ms(_IDLE_MS)
                continue
            ok = await self.poll_once()
            await sleep_ms(self.every_ms if ok else _RETRY_MS)
