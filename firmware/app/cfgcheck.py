# The configuration check (docs/configuration.md "Configuration check"): the problems of a
# merged configuration, each (severity, "section.key", message), by the rules of
# firmware/app/config.py SCHEMA. Imported at boot for the check only (main() unloads it), so
# that its code and the rules it builds cost no heap while the device runs.
from firmware import log
from firmware.app import config as cfgmod


def _add(out, severity, where, msg):
    out.append((severity, where, msg))


# Non-secret keys where a pasted credential would be a secret shown in clear (status page,
# logs): a value shaped like a Wi-SUN credential there enters setup mode.
_PASTE_KEYS = ("lan.wifi_ssid", "dlms.ldn", "dlms.device_id")
_HEXD = "0123456789abcdefABCDEF"


def _is_hex(v, n=None):
    if n is not None and len(v) != n:
        return False
    for c in v:
        if c not in _HEXD:
            return False
    return True


def _ipv4_ok(v):
    parts = v.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3 or not _is_dec(p) or int(p) > 255:
            return False
    return True


def _is_dec(v):
    for c in v:
        if c not in "0123456789":
            return False
    return True


def _fmt_problem(fmt, v, cred_fmt):
    """None if text v has format fmt, else what is wrong and what is expected (never v)."""
    from firmware.app import credentials as cr

    if fmt[-1] == "?":
        if v == "":
            return None
        fmt = fmt[:-1]
    if fmt == "ipv4":
        return None if _ipv4_ok(v) else "is not an IPv4 address; expected a.b.c.d (0..255 each)"
    if fmt == "hex":
        return None if v and len(v) % 2 == 0 and _is_hex(v) else \
            "expected hexadecimal digits, an even number of them"
    if fmt == "hex16" or fmt == "mac":
        return None if _is_hex(v, 16) else "expected 16 hexadecimal digits"
    if fmt == "key":
        return None if _is_hex(v, 32) else "expected a key of 32 hexadecimal digits"
    if fmt == "id":
        return cr.check_id(v)
    if fmt == "password":
        if v == "":
            return "is missing: the radio cannot join without it"
        return cr.check_password(v, cred_fmt)
    if fmt == "ssid":
        return cr.check_ssid(v)
    if fmt == "psk":
        if v == "":
            return "is empty: open networks are not allowed; expected a WPA2/WPA3 passphrase " \
                   "of 8 to 63 characters"
        return cr.check_psk(v)
    if fmt == "ldn":
        if len(v) != 16:
            return "has %d characters; expected 16 (3-letter FLAG id and 13 more)" % len(v)
        for c in v:
            if not " " < c <= "~":
                return "expected 16 printable ASCII characters"
        return None
    if fmt == "obis":
        p = v.split(".")
        if len(p) == 6:
            for x in p:
                if not x or not _is_dec(x) or int(x) > 255:
                    break
            else:
                return None
        return "expected an OBIS code: six numbers 0..255 joined by dots"
    return None


RANGE = 0  # rule kinds of rules()
ENUM = 1
FORMAT = 2


def _int_text(x):
    return _is_dec(x[1:] if x[:1] == "-" else x) and x not in ("", "-")


def rules():
    """(section, key, setup, kind, arg) for each line of config.SCHEMA: kind RANGE with arg
    (lo, hi), ENUM with the tuple of allowed values, FORMAT with the format's name; setup: a bad
    value enters setup mode."""
    for line in cfgmod.SCHEMA.split("\n"):
        if not line:
            continue
        where, r = line.split(" ", 1)
        sect, key = where.split(".", 1)
        setup = r[0] == "!"
        if setup:
            r = r[1:]
        if ".." in r:
            lo, hi = r.split("..")
            yield sect, key, setup, RANGE, (int(lo), int(hi))
        elif "|" in r:
            yield sect, key, setup, ENUM, tuple([int(x) if _int_text(x) else x
                                                 for x in r.split("|")])
        else:
            yield sect, key, setup, FORMAT, r


def _rule_problem(kind, arg, v, cred_fmt):
    if kind == FORMAT:
        return _fmt_problem(arg, v, cred_fmt) if isinstance(v, str) else None
    if kind == RANGE:
        if not isinstance(v, int) or arg[0] <= v <= arg[1]:
            return None  # a wrong type is merge's problem
        return "= %d is out of range; expected %d..%d" % (v, arg[0], arg[1])
    if v in arg:
        return None
    return "is not an allowed value; expected one of %s" % ", ".join([repr(x) for x in arg])


def _looks_like_credential(v):
    """What a pasted credential looks like: the 32-hex-digit ID, or 12 letters and digits
    with both (a B-route password). None, "id" or "password"."""
    if len(v) == 32 and _is_hex(v):
        return "id"
    if len(v) == 12:
        letters = digits = 0
        for c in v:
            if "0" <= c <= "9":
                digits += 1
            elif "a" <= c <= "z" or "A" <= c <= "Z":
                letters += 1
            else:
                return None
        if letters and digits:
            return "password"
    return None


def check(cfg, net_kind=None):
    """The problems of a merged configuration, each (severity, "section.key", message):
    merge()'s (unknown keys, wrong types), then config.SCHEMA's rules, credentials, the network and
    secrets in wrong fields. A KEEP_DEFAULT problem's key is set back to its default here.
    net_kind: the board's network kind ("wifi", "ethernet", "host"); default lan.kind.
    Logged here (merge logged its own). Never raises; never quotes a string value."""
    out = list(cfgmod._merged)
    del cfgmod._merged[:]
    n0 = len(out)
    try:
        _check(cfg, net_kind, out)
    except Exception as e:  # noqa: BLE001 - a check bug must not stop the device
        log.exc("config", "configuration check failed", e)
    for i in range(n0, len(out)):
        sev, where, msg = out[i]
        (log.error if sev == cfgmod.SETUP else log.warn)("config", "%s %s%s" % (
            where, msg, " (setup mode)" if sev == cfgmod.SETUP else ""))
    return out


def _check(cfg, net_kind, out):
    comp = cfgmod._component_defaults()
    radio = cfg.get("radio") or {}
    cred_fmt = radio.get("credential_format", "broute")
    if cred_fmt not in ("broute", "free"):
        cred_fmt = "broute"
    lan = cfg.get("lan") or {}
    if net_kind is None:
        net_kind = lan.get("kind", "host")
    _misplaced_secrets(cfg, comp, out)
    flagged = [p[1] for p in out if p[0] == cfgmod.SETUP]
    for sect, key, setup, kind, arg in rules():
        values = cfg.get(sect)
        if not isinstance(values, dict) or key not in values:
            continue
        where = "%s.%s" % (sect, key)
        if where in flagged:
            continue  # a misplaced secret: said already
        if (key == "wifi_ssid" or key == "wifi_psk") and net_kind != "wifi":
            continue  # not used by a wired or host board
        msg = _rule_problem(kind, arg, values[key], cred_fmt)
        if msg is None:
            continue
        if setup:
            _add(out, cfgmod.SETUP, where, msg)
            continue
        d = cfgmod.DEFAULTS.get(sect, {})
        default = d[key] if key in d else comp.get(sect, {}).get(key)
        values[key] = default
        shown = "" if key in cfgmod.SECRET_KEYS or isinstance(default, str) else \
            "; default %r kept" % (default,)
        _add(out, cfgmod.KEEP_DEFAULT, where, msg + (shown or "; default kept"))
    if radio.get("route") == "b" and radio.get("route_b_id") == "":
        _add(out, cfgmod.SETUP, "radio.route_b_id", "is missing: the B-route needs the "
                 "authentication ID of 32 hexadecimal digits")


def _misplaced_secrets(cfg, comp, out):
    """A secret's value in a non-secret key, or a credential-shaped value in a key that is shown
    in clear: setup mode, the value registered as a secret (never logged from now on)."""
    secrets = []
    for sect, values in cfg.items():
        if not isinstance(values, dict):
            continue
        for key in cfgmod.SECRET_KEYS:
            v = values.get(key)
            if isinstance(v, str) and len(v) >= 6:
                secrets.append((v, "%s.%s" % (sect, key)))
    pw_bad = _fmt_problem("password", (cfg.get("radio") or {}).get("pana_password", ""),
                          (cfg.get("radio") or {}).get("credential_format", "broute"))
    for sect, values in cfg.items():
        if not isinstance(values, dict):
            continue
        d = cfgmod.DEFAULTS.get(sect, {})
        c = comp.get(sect, {})
        for key, v in values.items():
            if key in cfgmod.SECRET_KEYS or not isinstance(v, str) or not v:
                continue
            if v == (d[key] if key in d else c.get(key)):
                continue  # a default is never a misplaced secret
            where = "%s.%s" % (sect, key)
            for s, owner in secrets:
                if v == s:
                    _add(out, cfgmod.SETUP, where, "holds the value of %s, a secret; a secret "
                             "goes only in its own key" % owner)
                    break
            else:
                if where not in _PASTE_KEYS:
                    continue
                kind = _looks_like_credential(v)
                if kind == "id" or (kind == "password" and
                                    (key != "wifi_ssid" or pw_bad is not None)):
                    log.add_secret(v)
                    _add(out, cfgmod.SETUP, where, "looks like a Wi-SUN %s (%s); a secret in "
                             "the wrong field? put it in radio.%s" % (
                                 "authentication ID" if kind == "id" else "password",
                                 "32 hexadecimal digits" if kind == "id" else
                                 "12 letters and digits",
                                 "route_b_id" if kind == "id" else "pana_password"))
