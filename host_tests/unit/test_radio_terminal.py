# The terminal's radio wiring (firmware/app/terminal.py) without a whole Terminal (it does not fit
# the MicroPython lane's heap): radio.family chooses the driver ("auto" detects, J11 when
# detection fails or raises), and the joined peer is kept in the state file as the session's
# cache, written only when it changed.
import asyncio
import unittest

from firmware import log
from firmware.app.terminal import Terminal
from firmware.radio import link
from firmware.radio.j11_link import J11Link

MAC = b"\x00\x1d\x12\x90\x12\x34\x56\x78"


class FakeState:
    def __init__(self, values=None):
        self.values = dict(values or {})
        self.writes = 0

    def get(self, key, default=None):
        return self.values.get(key, default)

    def update(self, d):
        self.writes += 1
        self.values.update(d)


class Server:
    max_wpdu = 300


class Hal:
    def radio_uart(self):
        return None


class Session:
    cached = None


class Rig:
    """The attributes the radio methods of Terminal use."""

    def __init__(self, radio=None, state=None):
        r = {"family": "auto", "sm_mac": "", "route": "han", "mode": 3, "udp_port": 4059}
        r.update(radio or {})
        self.cfg = {"radio": r}
        self.hal = Hal()
        self.server = Server()
        self.state = FakeState(state)
        self.session = Session()
        self._radio_family = None


def _skstack_present():
    try:
        from firmware.radio import skstack  # noqa: F401
    except ImportError:
        return False
    return True


class RadioWiringTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def detect(self, rig, fn):
        asyncio.run(Terminal._detect_radio(rig, fn))
        return rig._radio_family

    def test_family_auto(self):
        async def found(uart, ms):
            return link.FAMILY_J11

        async def none(uart, ms):
            return None

        async def broken(uart, ms):
            raise OSError("uart gone")

        self.assertEqual(self.detect(Rig(), found), link.FAMILY_J11)
        self.assertEqual(self.detect(Rig(), none), link.FAMILY_J11)
        self.assertTrue(any("not detected" in x for x in self.lines))
        self.assertEqual(self.detect(Rig(), broken), link.FAMILY_J11)
        self.assertTrue(any("detection failed" in x for x in self.lines))
        # an explicit family is not detected
        called = []

        async def spy(uart, ms):
            called.append(1)
            return None

        self.assertEqual(self.detect(Rig({"family": "skstack"}), spy), "skstack")
        self.assertEqual(called, [])

    def test_driver_of_the_family(self):
        rig = Rig({"family": "j11", "route": "b"})
        lk = Terminal._radio_link(rig, rig.cfg["radio"])
        self.assertIsInstance(lk, J11Link)
        self.assertEqual((lk.route, lk.mode), ("b", 5))
        self.assertEqual(len(lk.m._tx), 12 + 22 + 300)  # frame buffer sized to the DLMS PDU
        rig = Rig({"family": "bogus"})
        self.assertIsInstance(Terminal._radio_link(rig, rig.cfg["radio"]), J11Link)
        self.assertTrue(any("unknown" in x for x in self.lines))
        rig = Rig({"family": "skstack-dse"})
        lk = Terminal._radio_link(rig, rig.cfg["radio"])
        if _skstack_present():
            self.assertEqual(lk.family, link.FAMILY_SKSTACK_DSE)
        else:
            self.assertIsInstance(lk, J11Link)
            self.assertTrue(any("no SKSTACK driver" in x for x in self.lines))

    def test_peer_cache_in_state_file(self):
        rig = Rig()
        self.assertIsNone(Terminal._radio_cache(rig))
        rig.session.cached = (9, 0x1234, MAC)
        Terminal._remember_radio(rig)
        Terminal._remember_radio(rig)  # unchanged: not written again (flash wear)
        self.assertEqual(rig.state.writes, 1)
        self.assertEqual(rig.state.values, {"sm_mac": "001D129012345678", "channel": 9,
                                            "pan_id": 0x1234})
        rig2 = Rig(state=rig.state.values)
        self.assertEqual(Terminal._radio_cache(rig2), (9, 0x1234, MAC))
        # a configured smart meter wins; an unreadable remembered MAC means a scan
        self.assertIsNone(Terminal._radio_cache(Rig({"sm_mac": "001D129012345678"},
                                                    rig.state.values)))
        self.assertIsNone(Terminal._radio_cache(Rig(state={"sm_mac": "zz", "channel": 4})))


if __name__ == "__main__":
    unittest.main()
