# Tiny logger: "LEVEL tag: message" lines on stdout, with secret redaction.
# Secrets (Wi-SUN ID/password, Wi-Fi PSK, DLMS keys) are registered once and scrubbed from every
# line, so a careless format string can never print them.
import sys

DEBUG = 10
INFO = 20
WARN = 30
ERROR = 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARN: "WARN", ERROR: "ERROR"}

level = INFO
_secrets = []
_sink = None  # optional callable(line) for tests; default is stdout
counts = {WARN: 0, ERROR: 0}


def add_secret(value):
    """Register a secret string or bytes; it is replaced by *** in every later log line."""
    if not value:
        return
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode()
        except Exception:
            value = None
        if not value:
            return
    if len(value) >= 4 and value not in _secrets:
        _secrets.append(value)


def redact(text):
    for s in _secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


def set_sink(fn):
    global _sink
    _sink = fn


def log(lvl, tag, msg):
    if lvl < level:
        return
    if lvl in counts:
        counts[lvl] += 1
    line = redact("%s %s: %s" % (_NAMES.get(lvl, str(lvl)), tag, msg))
    if _sink is not None:
        _sink(line)
    else:
        sys.stdout.write(line + "\n")


def debug(tag, msg):
    log(DEBUG, tag, msg)


def info(tag, msg):
    log(INFO, tag, msg)


def warn(tag, msg):
    log(WARN, tag, msg)


def error(tag, msg):
    log(ERROR, tag, msg)


def exc(tag, msg, e):
    """Log an exception by type and message only (never its args, which could hold secrets)."""
    log(ERROR, tag, "%s: %s(%s)" % (msg, type(e).__name__, redact(str(e))))
