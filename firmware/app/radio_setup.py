# The radio driver and session from the `radio` configuration section, over a UART: shared by the
# terminal (firmware/app/terminal.py) and the commissioning command (firmware/app/commission.py on
# the device, tools/commission.py on a PC over a serial port), so that commissioning joins exactly
# the way the terminal will. Family "auto" asks the module (firmware/radio/detect.py); a driver
# missing from the build, or an unknown family, falls back to J11 with an ERROR line.
from firmware import log
from firmware.radio import link

_TAG = "terminal"
DETECT_MS = 3000  # module family detection (radio.family "auto")


async def detect(uart, family="auto", detect_family=None, timeout_ms=DETECT_MS):
    """The module family to drive: `family` unless "auto", else what the module answers (J11
    when detection fails, raises, or the build lacks it). uart: a callable giving the UART, called
    only when detection runs. detect_family: tests pass their own (uart, ms) -> family|None."""
    if family != "auto":
        return family
    if detect_family is None:
        try:
            from firmware.radio.detect import detect_family
        except ImportError:
            detect_family = None
    found = None
    if detect_family is not None:
        try:
            found = await detect_family(uart(), timeout_ms)
        except Exception as e:  # noqa: BLE001 - detection must never stop the radio
            log.exc(_TAG, "radio module detection failed", e)
    if found is None:
        if detect_family is None:
            log.info(_TAG, "no radio module detection in this build: J11")
        else:
            log.warn(_TAG, "radio module family not detected: assuming J11")
        return link.FAMILY_J11
    log.info(_TAG, "radio module family: %s" % found)
    return found


def driver(uart, family, r, max_udp):
    """The driver of `family` ("j11", "skstack", "skstack-dse"; "auto" = J11) over uart, its frame
    buffers sized to max_udp (the largest datagram the application sends or takes). The SKSTACK
    driver is imported only when chosen."""
    if family in (link.FAMILY_SKSTACK, link.FAMILY_SKSTACK_DSE):
        try:
            from firmware.radio.skstack import SkStackLink
        except ImportError:
            log.error(_TAG, "radio.family %s: no SKSTACK driver in this build; using J11"
                      % family)
        else:
            return SkStackLink(uart, dse=family == link.FAMILY_SKSTACK_DSE, max_udp=max_udp)
    elif family not in (link.FAMILY_J11, "auto"):
        log.error(_TAG, "radio.family %r unknown; using J11" % (family,))
    from firmware.radio import j11_link
    from firmware.radio.j11_module import J11Module

    return j11_link.build(J11Module(uart, max_udp=max_udp), r)


async def session(uart, r, max_udp, event=None, cache=None, detect_family=None):
    """A RadioSession over the driver of r["family"] (detected when "auto"). uart: a callable
    giving the UART (called once, or twice when the family is detected, as the terminal does)."""
    from firmware.radio.session import RadioSession

    family = await detect(uart, r.get("family", "auto"), detect_family)
    return RadioSession(driver(uart(), family, r, max_udp), r, event=event, cache=cache)
