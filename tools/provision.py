"""Provisioning from a PC: the Wi-SUN credential from its label's QR code (a photo or scan) or its
text, checked with the firmware's own rules (firmware/app/credentials.py), then written into a
board's /config.json (mpremote), into a local configuration file, or printed. docs/provisioning.md.

    python -m tools.provision --image LABEL.png --port /dev/ttyUSB0 [--ssid SSID]
    python -m tools.provision --text 'WISUN-ID:<32 hex>;PWD:<12>;' --config config.json
    python -m tools.provision --print < credential.txt
    python -m tools.provision --make-sample docs/samples/credential-qr.png

The credential comes from --image (PNG/JPEG, decoded with zxing-cpp), --text, or stdin. Its text is
either "WISUN-ID:<id>;PWD:<password>;" or two lines (the ID, then the password). With --ssid the
Wi-Fi settings go in too; the passphrase is asked for (getpass) unless --psk gives it; an open
network is refused. Secrets are shown only by --print (that is what it is for); errors go to stderr
and never quote a secret. A temporary copy for mpremote is private (0600) and deleted after.

Exit codes: 0 done; 1 the board or file could not be read or written; 2 usage; 3 the credential is
not valid; 4 the image cannot be read or holds no (single) QR code; 5 the Wi-Fi settings are not
valid; 6 the existing configuration is not a JSON object of sections.
"""

import argparse
import getpass
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from firmware.app import credentials  # noqa: E402

EXIT_OK = 0
EXIT_DEVICE = 1
EXIT_USAGE = 2
EXIT_CREDENTIAL = 3
EXIT_IMAGE = 4
EXIT_WIFI = 5
EXIT_CONFIG = 6

# SPEC: the utility's label format is not public; this key form is our choice (after the Wi-Fi
# QR convention "WIFI:S:..;P:..;;"). Names are case-insensitive; "\" escapes ";" and "\" in a
# value (a "free" format password may hold them).
KEY_ID = "WISUN-ID"
KEY_PASSWORD = "PWD"
FORMATS = ("broute", "free")
REMOTE_CONFIG = ":config.json"
# The terminal's watchdog keeps running while mpremote holds the board at the raw REPL: each
# mpremote session first stretches it to 10 minutes (as tools/deploy.py does); the reset at the
# end restarts the terminal. Off the esp32 port (no machine.WDT) nothing happens.
WDT_MS = 600000
STRETCH_WDT = ("try:\n import machine\n machine.WDT(timeout=%d)\nexcept Exception:\n pass\n"
               % WDT_MS)

SAMPLE_ID = "0123456789ABCDEF0123456789ABCDEF"
SAMPLE_PASSWORD = "SAMPLEPASSWD"
SAMPLE_PAYLOAD = "%s:%s;%s:%s;" % (KEY_ID, SAMPLE_ID, KEY_PASSWORD, SAMPLE_PASSWORD)


class ProvisionError(Exception):
    """A refusal with its exit code; the message never quotes a secret."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


def _bad(message):
    return ProvisionError(EXIT_CREDENTIAL, message)


def _non_ascii(value):
    """Position (0-based) of the first character that is not ASCII, or None."""
    for i, c in enumerate(value):
        if ord(c) > 0x7E or ord(c) < 0x20:
            return i
    return None


def _check_field(name, value, check):
    i = _non_ascii(value)
    if i is not None:
        c = value[i]
        what = "a control character" if ord(c) < 0x20 or ord(c) == 0x7F else \
            "not ASCII (a full-width or accented character?)"
        raise _bad("%s character %d is %s" % (name, i + 1, what))
    problem = check(value)
    if problem:
        raise _bad("%s %s" % (name, problem))


def _split_fields(text):
    """The ";"-separated fields of the key form, "\\" escaping the next character."""
    fields, cur, esc = [], [], False
    for c in text:
        if esc:
            cur.append(c)
            esc = False
        elif c == "\\":
            esc = True
        elif c == ";":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if esc:
        raise _bad("the text ends in an unfinished \\ escape")
    fields.append("".join(cur))
    return [f.strip() for f in fields]


def _parse_keyed(text):
    found = {}
    n = 0
    for field in _split_fields(text):
        if not field:
            continue  # ";;" and the final ";" are not fields
        n += 1
        if ":" not in field:
            raise _bad("field %d has no NAME: prefix (expected %s:<id>;%s:<password>;)"
                       % (n, KEY_ID, KEY_PASSWORD))
        name, value = field.split(":", 1)
        key = name.strip().upper()
        if key not in (KEY_ID, KEY_PASSWORD):
            # the name is not quoted: a mistyped label could put a secret there
            raise _bad("field %d is not %s or %s (extra fields are refused)"
                       % (n, KEY_ID, KEY_PASSWORD))
        if key in found:
            raise _bad("%s is given twice" % key)
        found[key] = value.strip()
    for key in (KEY_ID, KEY_PASSWORD):
        if key not in found:
            raise _bad("no %s field (expected %s:<id>;%s:<password>;)"
                       % (key, KEY_ID, KEY_PASSWORD))
    return found[KEY_ID], found[KEY_PASSWORD]


def _parse_lines(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        raise _bad("one line only; expected the ID on the first line and the password on the "
                   "second (or %s:<id>;%s:<password>;)" % (KEY_ID, KEY_PASSWORD))
    if len(lines) > 2:
        raise _bad("%d lines; expected 2: the ID, then the password (extra lines are refused)"
                   % len(lines))
    return lines[0], lines[1]


def parse_credential(text, fmt="broute"):
    """(id, password) from the label's text, checked; else ProvisionError (EXIT_CREDENTIAL) with
    one sentence that names the field and position but never quotes a value."""
    if fmt not in FORMATS:
        raise ProvisionError(EXIT_USAGE, "credential format must be one of %s"
                             % ", ".join(FORMATS))
    if not isinstance(text, str):
        raise _bad("the credential must be text")
    text = text.strip()
    if not text:
        raise _bad("the credential text is empty")
    first = text.splitlines()[0]
    if ":" in first:  # an ID is hex, so a colon on the first line means the key form
        ident, password = _parse_keyed(text)
    else:
        ident, password = _parse_lines(text)
    if len(ident) == credentials.PASSWORD_LEN and len(password) == credentials.ID_LEN:
        raise _bad("the ID has %d characters and the password %d: are they swapped? (the ID "
                   "comes first)" % (len(ident), len(password)))
    _check_field("ID", ident, credentials.check_id)
    _check_field("password", password, lambda v: credentials.check_password(v, fmt))
    return ident, password


def lookalike_note(password):
    """A note on the password's characters that are easily misread from print (legal, but a
    typed copy may have them wrong), or None. Positions only, never the characters."""
    where = credentials.lookalikes(password)
    if not where:
        return None
    many = len(where) > 1
    return ("password character%s %s %s easily misread (O/0, l/1/I): if you typed it, compare "
            "with the label" % ("s" if many else "", ", ".join(str(i + 1) for i in where),
                                "are" if many else "is"))


def check_wifi(ssid, psk):
    """None, or ProvisionError (EXIT_WIFI) on an SSID or passphrase the device would refuse."""
    problem = credentials.check_ssid(ssid)
    if problem:
        raise ProvisionError(EXIT_WIFI, "SSID %s" % problem)
    if not psk:
        raise ProvisionError(EXIT_WIFI, "no Wi-Fi passphrase: open networks are refused (the "
                             "device joins WPA2/WPA3-Personal networks only)")
    problem = credentials.check_psk(psk)
    if problem:
        raise ProvisionError(EXIT_WIFI, "Wi-Fi passphrase %s" % problem)


# --- the QR code ---------------------------------------------------------------------------


def read_qr(path):
    """The text of the one QR code in an image file (PNG, JPEG, anything Pillow opens)."""
    try:
        import zxingcpp
        from PIL import Image
    except ImportError as e:
        raise ProvisionError(EXIT_IMAGE, "reading an image needs zxing-cpp and Pillow (%s; pip "
                             "install -r requirements-dev.txt)" % e)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # a transparent background is white on paper, not black
                rgba = im.convert("RGBA")
                img = Image.new("RGBA", rgba.size, "white")
                img.alpha_composite(rgba)
                img = img.convert("L")
            else:
                img = im.convert("L")
    except FileNotFoundError:
        raise ProvisionError(EXIT_IMAGE, "image %s: no such file" % path)
    except IsADirectoryError:
        raise ProvisionError(EXIT_IMAGE, "image %s is a directory" % path)
    except PermissionError:
        raise ProvisionError(EXIT_IMAGE, "image %s: permission denied" % path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # Pillow raises UnidentifiedImageError (an OSError) for unknown formats, OSError or
        # SyntaxError for truncated or corrupt files
        raise ProvisionError(EXIT_IMAGE, "image %s cannot be read as PNG or JPEG (%s)"
                             % (path, type(e).__name__))
    codes = zxingcpp.read_barcodes(img, formats=zxingcpp.BarcodeFormat.QRCode)
    texts = []
    for code in codes:
        if code.text not in texts:
            texts.append(code.text)
    if not texts:
        raise ProvisionError(EXIT_IMAGE, "no QR code found in image %s (use a sharp, evenly lit "
                             "photo or a scan of the whole code)" % path)
    if len(texts) > 1:
        raise ProvisionError(EXIT_IMAGE, "image %s holds %d different QR codes; crop it to the "
                             "credential's" % (path, len(texts)))
    if not texts[0].strip():
        raise _bad("the QR code holds no text")
    return texts[0]


def make_sample(path):
    """The sample label: an obviously fake credential's QR code (segno) with its text beside it,
    as a utility's notice might print it. Regenerate with --make-sample."""
    import io

    import segno
    from PIL import Image, ImageDraw, ImageFont

    qr = segno.make(SAMPLE_PAYLOAD, error="m", micro=False)
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=6, border=4)
    buf.seek(0)
    code = Image.open(buf).convert("L")
    font = ImageFont.load_default(size=18)
    small = ImageFont.load_default(size=14)
    w = code.width + 470
    label = Image.new("L", (w, code.height + 20), 255)
    label.paste(code, (10, 10))
    draw = ImageDraw.Draw(label)
    x = code.width + 20
    draw.text((x, 24), "Wi-SUN credential", font=font, fill=0)
    draw.text((x, 50), "SAMPLE - not a real credential", font=small, fill=0)
    draw.text((x, 90), "ID", font=small, fill=0)
    draw.text((x, 108), " ".join(SAMPLE_ID[i:i + 4] for i in range(0, 32, 4)), font=small,
              fill=0)
    draw.text((x, 140), "Password", font=small, fill=0)
    draw.text((x, 158), SAMPLE_PASSWORD, font=font, fill=0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    label.save(path, format="PNG", optimize=True)


# --- the configuration -----------------------------------------------------------------------


def fragment(ident, password, ssid=None, psk=None):
    """The configuration keys the credential (and Wi-Fi settings) set."""
    out = {"radio": {"route_b_id": ident, "pana_password": password}}
    if ssid is not None:
        out["lan"] = {"wifi_ssid": ssid, "wifi_psk": psk}
    return out


def parse_config(text, where):
    """The existing configuration: a JSON object of section objects, else EXIT_CONFIG. Messages
    give the position, never the content (it holds secrets)."""
    if not text.strip():
        return {}
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise ProvisionError(EXIT_CONFIG, "%s is not valid JSON (line %d, column %d); fix or "
                             "remove it first" % (where, getattr(e, "lineno", 0),
                                                  getattr(e, "colno", 0)))
    if not isinstance(cfg, dict):
        raise ProvisionError(EXIT_CONFIG, "%s is not a JSON object of sections" % where)
    return cfg


def merge(cfg, frag):
    """cfg with the fragment's keys set (other keys and sections kept); EXIT_CONFIG when a section
    it sets is not an object."""
    out = dict(cfg)
    for sect, values in frag.items():
        have = out.get(sect, {})
        if not isinstance(have, dict):
            raise ProvisionError(EXIT_CONFIG, "section %r of the existing configuration is not "
                                 "an object" % sect)
        have = dict(have)
        have.update(values)
        out[sect] = have
    return out


def config_format(cfg, override):
    """The password format to check against: --credential-format, else the configuration's
    radio.credential_format, else "broute"."""
    if override:
        return override
    fmt = _named_format(cfg)
    return fmt if fmt in FORMATS else "broute"


def _named_format(cfg):
    radio = cfg.get("radio") if isinstance(cfg, dict) else None
    return radio.get("credential_format") if isinstance(radio, dict) else None


def dump(cfg):
    return json.dumps(cfg, indent=2) + "\n"


def write_private(path, text):
    """Write text to path readable by its owner only (0600), whatever the old file's mode."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".provision-", dir=str(path.parent or "."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        _scrub(tmp)
        raise


def _scrub(path):
    """Overwrite a file that held a secret, then delete it (best effort on any filesystem)."""
    try:
        n = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(b"\0" * n)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        pass
    try:
        os.unlink(path)
    except OSError:
        pass


def read_local(path):
    try:
        return parse_config(Path(path).read_text(), str(path))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ProvisionError(EXIT_DEVICE, "%s cannot be read (%s)"
                             % (path, getattr(e, "strerror", None) or type(e).__name__))


# --- the board, through mpremote -----------------------------------------------------------


def _mpremote():
    local = Path(sys.executable).parent / "mpremote"
    return str(local) if local.exists() else (shutil.which("mpremote") or "mpremote")


class Board:
    """The board's /config.json over mpremote (`fs cat`, `fs cp`, `fs sha256sum`, `reset`)."""

    def __init__(self, port, mpremote=None, secrets=()):
        self.port = port
        self.mpremote = mpremote or _mpremote()
        self.secrets = [s for s in secrets if s]

    def _run(self, *cmd):
        argv = [self.mpremote, "connect", self.port, "exec", STRETCH_WDT, "+"] + list(cmd)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise ProvisionError(EXIT_DEVICE, "mpremote not found (pip install mpremote, or "
                                 "--mpremote PATH)")
        except subprocess.TimeoutExpired:
            raise ProvisionError(EXIT_DEVICE, "mpremote did not finish within 120 s on %s"
                                 % self.port)
        return r

    def _failed(self, what, r):
        # stdout may hold the old configuration (secrets): only stderr is shown, redacted
        err = _redact(r.stderr.strip(), self.secrets)
        return ProvisionError(EXIT_DEVICE, "%s on %s failed (mpremote exit %d)%s"
                              % (what, self.port, r.returncode, (": " + err) if err else ""))

    def read(self):
        """The text of the board's configuration ("" when it has none)."""
        r = self._run("fs", "cat", REMOTE_CONFIG)
        if r.returncode != 0:
            if "No such file" in r.stderr or "ENOENT" in r.stderr:
                return ""
            raise self._failed("reading %s" % REMOTE_CONFIG, r)
        return r.stdout

    def write(self, text, reset=True):
        """Copy text to the board's /config.json through a private temporary file (deleted after),
        check it by SHA-256, then reset the board so the terminal starts with it."""
        tmpdir = tempfile.mkdtemp(prefix="provision-")  # 0700
        tmp = os.path.join(tmpdir, "config.json")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            r = self._run("fs", "cp", tmp, REMOTE_CONFIG, "+", "fs", "sha256sum", REMOTE_CONFIG)
            if r.returncode != 0:
                raise self._failed("writing %s" % REMOTE_CONFIG, r)
        finally:
            _scrub(tmp)
            shutil.rmtree(tmpdir, ignore_errors=True)
        want = hashlib.sha256(text.encode()).hexdigest()
        if want not in re.findall(r"\b[0-9a-f]{64}\b", r.stdout):
            raise ProvisionError(EXIT_DEVICE, "%s on %s does not match what was sent (SHA-256): "
                                 "run the tool again" % (REMOTE_CONFIG, self.port))
        if reset:
            r = self._run("reset")
            if r.returncode != 0:
                raise self._failed("the reset", r)

    def reset_quietly(self):
        """Best effort after a refusal: the board runs its terminal again."""
        try:
            self._run("reset")
        except ProvisionError:
            pass


def _redact(text, secrets):
    for s in secrets:
        if s and s in text:
            text = text.replace(s, "***")
    return text


# --- the command ---------------------------------------------------------------------------


def _read_text(args, stdin):
    if args.text is not None:
        return args.text
    if stdin.isatty():
        print("paste the credential text (WISUN-ID:...;PWD:...; or two lines), then Ctrl-D:",
              file=sys.stderr)
    try:
        return stdin.read()
    except UnicodeDecodeError:
        raise _bad("the credential text is not UTF-8")


def _ask_psk(stdin):
    # getpass asks on /dev/tty; without one it would read stdin, which may have held the
    # credential and be at its end (an empty passphrase: "open network", a wrong message)
    try:
        with open("/dev/tty"):
            pass
    except OSError:
        raise ProvisionError(EXIT_USAGE, "no terminal to ask for the Wi-Fi passphrase on; "
                             "give --psk")
    try:
        return getpass.getpass("Wi-Fi passphrase (WPA2/WPA3): ")
    except (EOFError, OSError):
        raise ProvisionError(EXIT_USAGE, "the Wi-Fi passphrase could not be read; give --psk")


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m tools.provision",
        description="Check a Wi-SUN credential from its QR code or text and put it in a board's "
                    "configuration (docs/provisioning.md).",
        epilog="Exit codes: 0 done, 1 board/file not read or written, 2 usage, 3 credential "
               "invalid, 4 image unreadable or no single QR code, 5 Wi-Fi settings invalid, "
               "6 existing configuration not a JSON object.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="photo or scan of the label's QR code (PNG, JPEG)")
    src.add_argument("--text", help="the credential text (visible in the process list: prefer "
                                    "stdin)")
    dst = p.add_mutually_exclusive_group()
    dst.add_argument("--port", help="merge into the board's /config.json over mpremote (serial "
                                    "port, e.g. /dev/ttyUSB0)")
    dst.add_argument("--config", help="merge into this local configuration file (0600)")
    dst.add_argument("--print", action="store_true",
                     help="print the configuration keys as JSON (secrets shown, on purpose)")
    dst.add_argument("--make-sample", metavar="PNG",
                     help="write the sample label image (a fake credential) and stop")
    p.add_argument("--ssid", help="Wi-Fi network name (lan.wifi_ssid)")
    p.add_argument("--psk", help="Wi-Fi passphrase (visible in the process list: leave it out to "
                                 "be asked)")
    p.add_argument("--credential-format", choices=FORMATS,
                   help="password format (default: the configuration's radio.credential_format, "
                        "else broute)")
    p.add_argument("--no-reset", action="store_true",
                   help="--port: leave the board at the REPL (its watchdog resets it within 10 "
                        "minutes)")
    p.add_argument("--mpremote", help="mpremote command (default: the venv's, else PATH)")
    return p


def run(args, stdin, out):
    if args.make_sample:
        make_sample(args.make_sample)
        print("sample label written to %s (credential: %s)" % (args.make_sample, SAMPLE_PAYLOAD),
              file=out)
        return EXIT_OK
    if not (args.port or args.config or args.print):
        raise ProvisionError(EXIT_USAGE, "say where the credential goes: --port, --config or "
                             "--print")
    if args.psk is not None and args.ssid is None:
        raise ProvisionError(EXIT_USAGE, "--psk needs --ssid")
    if args.no_reset and not args.port:
        raise ProvisionError(EXIT_USAGE, "--no-reset goes with --port")
    # the credential first: a bad label is refused before the board is touched
    payload = read_qr(args.image) if args.image else _read_text(args, stdin)
    existing = read_local(args.config) if args.config else {}
    fmt = config_format(existing, args.credential_format)
    ident, password = parse_credential(payload, fmt)
    _agree(payload, fmt, existing, args.config)
    secrets = [ident, password]
    note = None if args.image else lookalike_note(password)
    ssid = psk = None
    if args.ssid is not None:
        ssid = args.ssid
        psk = args.psk if args.psk is not None else _ask_psk(stdin)
        secrets.append(psk)
        check_wifi(ssid, psk)
    frag = fragment(ident, password, ssid, psk)
    keys = ", ".join("%s.%s" % (s, k) for s, v in frag.items() for k in v)
    if note:
        print("provision: note: %s" % note, file=sys.stderr)
    if args.print:
        out.write(dump(frag))
        return EXIT_OK
    if args.config:
        try:
            write_private(args.config, dump(merge(existing, frag)))
        except OSError as e:
            raise ProvisionError(EXIT_DEVICE, "%s cannot be written (%s)"
                                 % (args.config, e.strerror or type(e).__name__))
        print("%s written to %s (mode 0600)" % (keys, args.config), file=out)
        return EXIT_OK
    board = Board(args.port, args.mpremote, secrets)
    text = board.read()
    try:
        existing = parse_config(text, "the board's " + REMOTE_CONFIG)
        _agree(payload, fmt, existing, "the board's " + REMOTE_CONFIG)
        board.write(dump(merge(existing, frag)), reset=not args.no_reset)
    except ProvisionError:
        if not args.no_reset:
            board.reset_quietly()  # reading it stopped the terminal: start it again
        raise
    print("%s written to %s on %s (checked by SHA-256)%s" % (
        keys, REMOTE_CONFIG, args.port,
        "" if args.no_reset else "; the board was reset and starts with them"), file=out)
    return EXIT_OK


def _agree(payload, fmt, cfg, where):
    """The password must also suit the format the configuration itself names (the device checks
    that one): a "free" password refused for a board set to "broute"."""
    theirs = _named_format(cfg)
    if theirs in FORMATS and theirs != fmt:
        try:
            parse_credential(payload, theirs)
        except ProvisionError as e:
            raise ProvisionError(e.code, "%s sets radio.credential_format %s: %s"
                                 % (where, theirs, e.message))


def main(argv=None, stdin=None, out=None):
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return run(args, stdin, out)
    except ProvisionError as e:
        print("provision: %s" % e.message, file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("provision: interrupted", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
