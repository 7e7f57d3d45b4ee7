# Per-class profiles: which EPC carries what on each supported meter class, so the client code
# is class-independent; plus exact decimal scaling (integers only) and the conversion of
# (raw, unit, coefficient) into the store's (raw, unit_code). See docs/echonet.md.
from firmware import units
from firmware.compat import const
from firmware.meter import drmeter
from firmware.meter.drmeter import MeterDataError

CLASS_DR_METER = const(0x028E)  # distributed generator's electric energy meter
CLASS_LV_SMART = const(0x0288)  # low-voltage smart electric energy meter
CLASS_SUB_METER = const(0x028D)  # smart electric energy sub-meter

_MAX_COEFFICIENT = const(999999)


class CoefficientError(MeterDataError):
    """A coefficient the store's (raw u32, unit code) record cannot represent exactly."""


class Profile:
    """EPC roles of one meter class. None = the class has no such property."""

    def __init__(self, cls, name, unit, coefficient, digits, fixed_digits, fixed, hist,
                 day, day_width, retention, time_epc, time_len, sync, identity):
        self.cls = cls
        self.name = name
        self.unit = unit  # unit code EPC (1 byte, firmware.units table)
        self.coefficient = coefficient  # coefficient EPC (u32, absent = 1)
        self.digits = digits  # effective-digits EPC (1 byte, 1..8)
        self.fixed_digits = fixed_digits  # digit count when the class has no digits EPC
        self.fixed_fwd, self.fixed_rev = fixed
        self.hist_fwd, self.hist_rev = hist
        self.day = day  # history day selector EPC
        self.day_width = day_width  # its EDT width: 2 on 0x028E, 1 elsewhere
        self.retention = retention  # history retention days EPC (0x028E only)
        self.date = 0x98
        self.time = time_epc
        self.time_len = time_len
        self.sync = sync
        self.identity = identity  # EPCs whose change means another meter (or a reset one)

    def scaling_epcs(self):
        return tuple(e for e in (self.unit, self.coefficient, self.digits) if e is not None)


PROFILES = {
    CLASS_DR_METER: Profile(
        CLASS_DR_METER, "0x028E DR meter", 0xD4, None, None, 9, (0xE6, 0xE7),
        (0xE1, 0xE3), 0xD5, 2, 0xD3, 0xDA, 3, 0xDB, (0x83, 0xD0, 0xD1, 0xD6)),
    CLASS_LV_SMART: Profile(
        CLASS_LV_SMART, "0x0288 LV smart meter", 0xE1, 0xD3, 0xD7, None, (0xEA, 0xEB),
        (0xE2, 0xE4), 0xE5, 1, None, 0x97, 2, None, (0x83, 0x8D)),
    CLASS_SUB_METER: Profile(
        CLASS_SUB_METER, "0x028D sub-meter", 0xD4, 0xD3, 0xD7, None, (0xEA, 0xEB),
        (0xE2, 0xE4), 0xE0, 1, None, 0x97, 2, None, (0x83, 0x8D)),
}


def decode_coefficient(edt):
    """0xD3 (0x0288/0x028D): u32 1..999999."""
    if len(edt) != 4:
        raise MeterDataError("coefficient: EDT of %d bytes, expected 4" % len(edt))
    v = (edt[0] << 24) | (edt[1] << 16) | (edt[2] << 8) | edt[3]
    if not 1 <= v <= _MAX_COEFFICIENT:
        raise MeterDataError("coefficient %d outside 1..999999" % v)
    return v


def decode_digits(edt):
    """0xD7 effective digits: 1..8."""
    if len(edt) != 1:
        raise MeterDataError("effective digits: EDT of %d bytes, expected 1" % len(edt))
    if not 1 <= edt[0] <= 8:
        raise MeterDataError("effective digits %d outside 1..8" % edt[0])
    return edt[0]


def power_of_ten(n):
    """k if n == 10^k (k >= 0), else None."""
    k = 0
    while n >= 10 and n % 10 == 0:
        n //= 10
        k += 1
    return k if n == 1 else None


def store_unit(unit_code, coefficient=1):
    """Unit code under which raw counters of (unit_code, coefficient) are stored unchanged:
    raw x coefficient x unit == raw x unit'. Exact when coefficient = 10^k and the unit's
    exponent + k stays within -4..4 (the unit table); otherwise CoefficientError."""
    e = drmeter.unit_exponent(unit_code)
    if coefficient == 1:
        return unit_code
    k = power_of_ten(coefficient)
    if k is None:
        raise CoefficientError("coefficient %d is not a power of ten: the store keeps one unit "
                               "code per record and cannot represent it" % coefficient)
    code = units.code_for(e + k)
    if code is None:
        raise CoefficientError("coefficient %d x unit 0x%02X = 10^%d kWh: beyond the largest "
                               "unit code (10^4 kWh)" % (coefficient, unit_code, e + k))
    return code

