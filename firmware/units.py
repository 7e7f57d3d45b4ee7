# The one table of ECHONET Lite energy unit codes (0x028E 0xD4, 0x0288 0xE1, 0x028D 0xD4): kWh per
# raw counter unit as a power of ten. Shared like timeutil: the meter side validates and folds
# coefficients with it, the store keeps the code with every record, the COSEM side turns it into
# the register's Wh scaler. Integers only.
EXP = {0x00: 0, 0x01: -1, 0x02: -2, 0x03: -3, 0x04: -4, 0x0A: 1, 0x0B: 2, 0x0C: 3, 0x0D: 4}


def exponent(code):
    """Power of ten of kWh per raw unit for a unit code, or None for a code not in the table."""
    return EXP.get(code)


def code_for(exp):
    """The unit code of 10^exp kWh, or None beyond the table (-4..4)."""
    for code, e in EXP.items():
        if e == exp:
            return code
    return None


def wh_scaler(code):
    """DLMS scaler of a Wh register holding raw values of this unit code (kWh = Wh x 10^3), or
    None for a code not in the table."""
    e = EXP.get(code)
    return None if e is None else e + 3
