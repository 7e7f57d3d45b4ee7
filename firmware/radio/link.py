# The radio driver contract: what the session (firmware/radio/session.py) may ask of a module
# driver, whatever its family (J11 binary in HAN or B-route mode, SKSTACK IP single-hop, SKSTACK
# IP DSE). docs/radio.md describes each call; this module holds only the shared names, so that a
# driver, the session and the tests agree on them without importing each other.
from firmware.compat import const

FAMILY_J11 = "j11"
FAMILY_SKSTACK = "skstack"  # single-hop (BP35A1, RL7023 IPS)
FAMILY_SKSTACK_DSE = "skstack-dse"  # dual stack (BP35C2, RL7023 DSS): the SIDE field

# join() / reauth() results
JOIN_OK = const(0)
JOIN_BAD_CREDENTIALS = const(1)  # PANA rejected the credentials: latch, never hammer
JOIN_NO_RESPONSE = const(2)  # PANA or the coordinator did not answer: radio, retry
JOIN_MAC_FAILED = const(3)  # MAC association failed (J11 0x0E): reset and retry, bounded

# send() results
TX_OK = const(0)  # sent and acknowledged
TX_NO_ACK = const(1)  # not acknowledged (J11 tx result 5, SKSTACK EVENT 21 param 01): retryable
TX_QUEUED = const(2)  # held in the indirect queue for a sleepy peer
TX_LIMITED = const(3)  # refused: the ARIB T108 transmit-time limit is on

# on_event(code, detail) codes the driver reports
EV_LINK_DOWN = const(1)  # MAC or PANA disconnected; the session is gone
EV_REAUTH_STARTED = const(2)  # PANA lifetime expired, the module re-authenticates (EVENT 29)
EV_REAUTH_OK = const(3)  # re-authentication done (EVENT 25)
EV_REAUTH_FAILED = const(4)  # re-authentication failed (EVENT 24): full reopen
EV_TX_LIMIT_ON = const(5)  # ARIB T108 limit reached (EVENT 32)
EV_TX_LIMIT_OFF = const(6)  # limit lifted (EVENT 33)
EV_RX_FAIL = const(7)  # the module dropped a received packet (detail = reason)


class LinkError(Exception):
    """The module did not do what was asked. Messages carry codes, never request data."""


class LinkTimeout(LinkError):
    pass


class LinkCommandError(LinkError):
    def __init__(self, what, code):
        super().__init__("%s failed: %s" % (what, code))
        self.code = code


def mac_bytes(mac):
    """EUI-64 (8 bytes) from 16 hex characters or 8 bytes; ValueError otherwise."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 8:
            raise ValueError("MAC must be 8 bytes")
        return bytes(mac)
    if not isinstance(mac, str) or len(mac) != 16:
        raise ValueError("MAC must be 16 hex characters")
    import binascii

    try:
        return binascii.unhexlify(mac)
    except ValueError:  # binascii.Error on CPython is a ValueError too
        raise ValueError("MAC must be 16 hex characters")


def mac_hex(mac):
    """16 upper-case hex characters of an 8-byte MAC (for logs and the state file)."""
    import binascii

    return binascii.hexlify(bytes(mac)).decode().upper()


def skstack_channel(j11_channel):
    """J11 channel 4..17 (400 kHz steps) -> SKSTACK channel 33..59 (200 kHz steps)."""
    return 33 + 2 * (j11_channel - 4)


def j11_channel(sk_channel):
    """SKSTACK channel 33..60 -> J11 channel, None for the odd 200 kHz channels J11 lacks."""
    d = sk_channel - 33
    if d < 0 or d & 1 or d // 2 + 4 > 17:
        return None
    return d // 2 + 4
