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


# 10^n for the steps of scale_into: each step multiplies 16-bit limbs by at most 10^4, so every
# partial product stays below 2^30, a small int on the ESP32 (no big-int allocation per value).
_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)
SCALER_MIN = -3  # the range of a served Wh scaler keeps every step within small ints
SCALER_MAX = 7


def scale_into(raw, code, scaler, limbs):
    """A raw counter of unit `code` as a whole number of 10^scaler Wh, into `limbs` (4 x 16 bits,
    least significant first). True if exact; False if the value has a fraction of 10^scaler Wh
    (limbs then hold the floor), does not fit 64 bits, or the code is not in the table. Integers
    only, and only small ints for raw < 2^32 (the store's counters)."""
    e = EXP.get(code)
    if e is None or raw < 0 or raw >> 32:
        limbs[0] = limbs[1] = limbs[2] = limbs[3] = 0
        return False
    k = e + 3 - scaler  # power of ten from raw units to 10^scaler Wh
    if k < 0:
        d = _POW10[-k]
        q = raw // d
        limbs[0] = q & 0xFFFF
        limbs[1] = q >> 16
        limbs[2] = limbs[3] = 0
        return raw - q * d == 0
    limbs[0] = raw & 0xFFFF
    limbs[1] = raw >> 16
    limbs[2] = limbs[3] = 0
    carry = 0
    while k > 0:
        n = 4 if k > 4 else k
        f = _POW10[n]
        carry = 0
        for i in range(4):
            t = limbs[i] * f + carry
            limbs[i] = t & 0xFFFF
            carry = t >> 16
        if carry:
            return False
        k -= n
    return True
