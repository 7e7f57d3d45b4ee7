# Credential format checks, shared by the firmware's configuration check (firmware/app/config.py)
# and the host's provisioning tool (tools/provision.py): one definition of a valid credential.
#
# The guideline issues the Wi-SUN credentials as a 32-hex-character ID and a 12-character
# password (the B-route format), printed with a QR code to stop typing errors. The IoT-route
# credential type itself is not public (SPEC): radio.credential_format "broute" checks this
# format, "free" only length and printable ASCII (docs/configuration.md).
#
# Every check returns None when the value is good, else one sentence saying what is wrong and
# what is expected. A message never quotes the value: it may be a secret.

ID_LEN = 32
PASSWORD_LEN = 12
_HEX = "0123456789abcdefABCDEF"
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# a letter typed where the hex alphabet has a digit that looks the same
_LOOKALIKE = {"O": "0", "o": "0", "l": "1", "I": "1", "i": "1"}


def _where(i):
    return "character %d" % (i + 1)


def check_id(value):
    """The Wi-SUN (B-route style) authentication ID: exactly 32 hexadecimal digits."""
    if not isinstance(value, str):
        return "must be text of %d hexadecimal digits" % ID_LEN
    for i in range(len(value)):
        c = value[i]
        if c in _HEX:
            continue
        if c in _LOOKALIKE:
            return "%s is the letter %s, not a hexadecimal digit (the digit %s?)" % (
                _where(i), c, _LOOKALIKE[c])
        if c == " " or c == "-" or c == ":":
            return "%s is a separator; give the %d hexadecimal digits without spaces or dashes" % (
                _where(i), ID_LEN)
        return "%s is not a hexadecimal digit (0-9, A-F)" % _where(i)
    if len(value) != ID_LEN:
        return "has %d characters; expected %d hexadecimal digits" % (len(value), ID_LEN)
    return None


def check_password(value, fmt="broute"):
    """The Wi-SUN password: "broute" = exactly 12 letters or digits; "free" = 8 to 64 printable
    ASCII characters (a later credential type, SPEC)."""
    if not isinstance(value, str):
        return "must be text"
    if fmt == "free":
        if not 8 <= len(value) <= 64:
            return "has %d characters; expected 8 to 64" % len(value)
        for i in range(len(value)):
            if not " " < value[i] <= "~":
                return "%s is not printable ASCII" % _where(i)
        return None
    for i in range(len(value)):
        if value[i] not in _ALNUM:
            return "%s is not a letter or digit (expected %d letters and digits)" % (
                _where(i), PASSWORD_LEN)
    if len(value) != PASSWORD_LEN:
        return "has %d characters; expected %d letters and digits" % (len(value), PASSWORD_LEN)
    return None


def lookalikes(value):
    """Positions (0-based) of characters easily confused when typed or read from print:
    O/0 and l/1/I. Legal in a password; the provisioning tool warns about them."""
    out = []
    for i in range(len(value)):
        if value[i] in "O0l1I":
            out.append(i)
    return out


def check_psk(value):
    """WPA2/WPA3-Personal: a passphrase of 8 to 63 printable ASCII characters, or 64 hex
    digits (the raw key)."""
    if not isinstance(value, str):
        return "must be text"
    n = len(value)
    if n == 64:
        for i in range(n):
            if value[i] not in _HEX:
                return "has 64 characters, so it must be a raw key of 64 hexadecimal digits; " \
                       "%s is not one" % _where(i)
        return None
    if not 8 <= n <= 63:
        return "has %d characters; expected a passphrase of 8 to 63 (WPA2/WPA3)" % n
    for i in range(n):
        if not " " <= value[i] <= "~":
            return "%s is not printable ASCII" % _where(i)
    return None


def check_ssid(value):
    """1 to 32 bytes once UTF-8 encoded."""
    if not isinstance(value, str):
        return "must be text"
    n = len(value.encode())
    if not 1 <= n <= 32:
        return "is %d bytes long; expected 1 to 32 bytes" % n
    return None
