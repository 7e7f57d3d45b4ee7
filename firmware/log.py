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
_secrets = []  # longest first, so a secret that contains another is scrubbed whole
_sink = None  # optional callable(line) for tests; default is stdout
counts = {WARN: 0, ERROR: 0}


def add_secret(value):
    """Register a secret string or bytes; it is replaced by *** in every later log line.
    Any non-empty secret counts, however short: a short one garbles some log text, which is
    better than printing it. Bytes that are not UTF-8 cannot appear in a text line as such."""
    if not value:
        return
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode()
        except Exception:
            return
    if value in _secrets:
        return
    i = 0
    while i < len(_secrets) and len(_secrets[i]) >= len(value):
        i += 1
    _secrets.insert(i, value)


def redact(text):
    for s in _secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


def set_sink(fn):
    global _sink
    _sink = fn


def _emit(line):
    if _sink is not None:
        _sink(line)
    else:
        sys.stdout.write(line + "\n")


def log(lvl, tag, msg):
    if lvl < level:
        return
    if lvl in counts:
        counts[lvl] += 1
    # level and tag are program text; only the message can carry a secret
    _emit("%s %s: %s" % (_NAMES.get(lvl, str(lvl)), tag, redact(msg)))


def debug(tag, msg):
    log(DEBUG, tag, msg)


def info(tag, msg):
    log(INFO, tag, msg)


def warn(tag, msg):
    log(WARN, tag, msg)


def error(tag, msg):
    log(ERROR, tag, msg)


_NO_TRACEBACK = "  (traceback not logged: out of memory)"


def exc(tag, msg, e):
    """Log an exception: one ERROR line (type and message), then its traceback (file, line,
    function), each line redacted like any other, so a secret inside the exception's text or in
    a source line of the traceback never reaches the log. Counted as one error. Never raises:
    out of memory, a fixed line replaces the traceback (a supervisor that cannot log its task's
    crash must still restart the task)."""
    import io

    from firmware.compat import print_exception

    try:
        log(ERROR, tag, "%s: %s(%s)" % (msg, type(e).__name__, e))
        if ERROR < level:
            return
        buf = io.StringIO()
        print_exception(e, buf)
        for line in buf.getvalue().split("\n"):
            if line:
                _emit("  %s: %s" % (tag, redact(line)))
    except MemoryError:
        try:
            _emit(_NO_TRACEBACK)
        except Exception:
            return  # not even a fixed line fits: the caller's recovery matters more
    except Exception:
        return  # logging an error must never raise another one
