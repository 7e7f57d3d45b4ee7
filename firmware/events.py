# The one table of event codes of the terminal's event log (docs/events.md): shared like units.py.
# The producers (clock, boot, metering, backfill, the COSEM server) report an event through a
# callable `event(code, detail)` handed to them by the application; the store keeps it in flash
# and the COSEM event log (IC 7) serves it. The codes are ours: the IoT-route spec is not public
# (the values stay configurable by a mapping in the COSEM object if the utility assigns others).
# detail: one integer whose meaning depends on the code (column "detail" of docs/events.md).
from firmware.compat import const

CLOCK_SET = const(1)  # the smart meter set the clock; detail: the step in seconds (new - old)
POWER_UP = const(2)  # started after a power cut or reset; detail: boot count
METER_RESET = const(3)  # the meter's counter went back; detail: meter index
METER_REPLACED = const(4)  # another meter answers at the configured address; detail: meter index
COUNTER_WRAP = const(5)  # the meter's counter wrapped past its maximum; detail: meter index
UNIT_CHANGE = const(6)  # the energy unit changed; detail: meter index * 256 + new unit code
BACKFILL_DONE = const(7)  # a backfill filled slots; detail: slots filled
ASSOCIATION_FAILED = const(8)  # an AARQ or HLS pass 3 failed authentication; detail: client SAP
REPLAY_REJECTED = const(9)  # a ciphered APDU with a used invocation counter; detail: client SAP
CLOCK_SHIFT = const(10)  # shift_time or adjust_* by the management client; detail: step in seconds
PUSH_GIVEN_UP = const(11)  # push retries exhausted for a slot; detail: the slot number
FLASH_SEALED = const(12)  # the flash log sealed a torn sector at mount; detail: sectors sealed
CLOCK_SLEW = const(13)  # a set beyond clock.adjust_flag_s is being slewed; detail: offset in s
RADIO_AUTH_FAILED = const(14)  # PANA rejected the credentials: radio latched; detail: 0
LINK_DOWN = const(15)  # the radio session ended; detail: why (firmware/radio/session.py DOWN_*)
LINK_UP = const(16)  # the radio session is ready; detail: the channel (J11 numbering 4..17)
CLOCK_NTP = const(17)  # NTP (not the smart meter) set the clock; detail: step/offset as CLOCK_SET
METER_CLOCK_SET = const(18)  # the terminal set the meter's clock; detail: meter minus true time, s
SAFE_MODE = const(19)  # started in safe/setup mode; detail: why (firmware/app/safeboot.py WHY_*)
CONFIG_ERROR = const(20)  # the configuration had errors; detail: how many (defaults kept or setup)
FACTORY_RESET = const(21)  # secrets wiped; detail: 1 = metering data kept, 0 = erased too
TASK_CRASH = const(22)  # a supervised task crashed and was restarted; detail: task number

NAMES = {
    CLOCK_SET: "clock set",
    POWER_UP: "power up",
    METER_RESET: "meter reset",
    METER_REPLACED: "meter replaced",
    COUNTER_WRAP: "counter wrap",
    UNIT_CHANGE: "unit change",
    BACKFILL_DONE: "backfill done",
    ASSOCIATION_FAILED: "association failed",
    REPLAY_REJECTED: "replay rejected",
    CLOCK_SHIFT: "clock shift",
    PUSH_GIVEN_UP: "push given up",
    FLASH_SEALED: "flash sealed",
    CLOCK_SLEW: "clock slew",
    RADIO_AUTH_FAILED: "radio auth failed",
    LINK_DOWN: "link down",
    LINK_UP: "link up",
    CLOCK_NTP: "clock set by NTP",
    METER_CLOCK_SET: "meter clock set",
    SAFE_MODE: "safe mode",
    CONFIG_ERROR: "configuration error",
    FACTORY_RESET: "factory reset",
    TASK_CRASH: "task crashed",
}


def ignore(code, detail=0):
    """The default event sink of a component built without an event log (unit tests)."""
