"""tools/provision.py: a credential label's QR code (or its text) becomes the configuration's radio
keys; each bad label, image or Wi-Fi setting gives its documented message (docs/provisioning.md)
and exit code without quoting a secret; the board path runs mpremote (a fake one that plays the
board and records every call) with a private temporary file that is gone afterwards.

Here and not in host_tests/unit: the tool is host-only (zxing-cpp, Pillow, subprocess), and every
unit test file also runs under MicroPython."""

import io
import json
import os
import pty
import re
import select
import stat
import subprocess
import sys
import threading
import time
import tty

import pytest
import segno
from fake_tools import write_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from tools import provision

REPO = provision.REPO
DOC = (REPO / "docs" / "provisioning.md").read_text()


def documented(message):
    """The message is in docs/provisioning.md's table, up to its numbers and file names."""
    def norm(t):
        return re.sub(r"\d+", "N", re.sub(r"\S*label\.png", "F", t))

    return norm(message) in norm(DOC)
SAMPLE = REPO / "docs" / "samples" / "credential-qr.png"
GOOD_ID = "00112233445566778899AABBCCDDEEFF"
GOOD_PW = "Zq7wKm3pXr9T"
PSK = "plant-wpa2-Passphrase-88"


def keyed(ident=GOOD_ID, pw=GOOD_PW, extra=""):
    return "WISUN-ID:%s;PWD:%s;%s" % (ident, pw, extra)


def qr_png(path, text, **kw):
    segno.make(text, error="m", micro=False).save(str(path), kind="png", scale=6, border=4, **kw)
    return path


def run(argv, stdin="", capsys=None):
    """main() in-process: (exit code, stdout, stderr)."""
    rc = provision.main(argv, stdin=io.StringIO(stdin))
    out, err = capsys.readouterr()
    return rc, out, err


# --- the good path -------------------------------------------------------------------------


def test_sample_label_decodes_to_its_configuration(capsys):
    rc, out, err = run(["--image", str(SAMPLE), "--print"], capsys=capsys)
    assert rc == 0, err
    assert json.loads(out) == {"radio": {"route_b_id": provision.SAMPLE_ID,
                                         "pana_password": provision.SAMPLE_PASSWORD}}
    assert err == ""


def test_sample_label_is_what_make_sample_makes(tmp_path, capsys):
    rc, out, _ = run(["--make-sample", str(tmp_path / "s.png")], capsys=capsys)
    assert rc == 0 and provision.SAMPLE_PAYLOAD in out
    assert (tmp_path / "s.png").read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize("kind", ["keyed", "keyed-lowercase-names", "two-lines", "crlf"])
def test_text_forms(kind, capsys):
    text = {"keyed": keyed() + "\n",
            "keyed-lowercase-names": "wisun-id:%s; pwd:%s" % (GOOD_ID, GOOD_PW),
            "two-lines": "%s\n%s\n" % (GOOD_ID, GOOD_PW),
            "crlf": "\r\n%s\r\n\r\n%s\r\n" % (GOOD_ID, GOOD_PW)}[kind]
    rc, out, err = run(["--print"], stdin=text, capsys=capsys)
    assert rc == 0, err
    assert json.loads(out)["radio"] == {"route_b_id": GOOD_ID, "pana_password": GOOD_PW}


def test_photo_like_image_decodes(tmp_path, capsys):
    """A rotated, blurred JPEG of the label on a grey background with a transparent PNG too."""
    label = Image.open(SAMPLE).convert("L")
    bg = Image.new("L", (label.width + 200, label.height + 200), 170)
    bg.paste(label.rotate(7, expand=True, fillcolor=255), (60, 40))
    bg.save(tmp_path / "photo.jpg", quality=70)
    gray = Image.open(qr_png(tmp_path / "t.png", keyed())).convert("L")
    dark = gray.point(lambda v: 255 if v < 128 else 0)  # opaque black modules, clear elsewhere
    Image.merge("LA", (Image.new("L", gray.size, 0), dark)).save(tmp_path / "transparent.png")
    for name, pw in (("photo.jpg", provision.SAMPLE_PASSWORD), ("transparent.png", GOOD_PW)):
        rc, out, err = run(["--image", str(tmp_path / name), "--print"], capsys=capsys)
        assert rc == 0, (name, err)
        assert json.loads(out)["radio"]["pana_password"] == pw


def test_local_config_is_merged_and_private(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"radio": {"route": "b", "pana_password": "OLDOLDOLD123"},
                               "meter": {"ip": "192.0.2.7"}}))
    cfg.chmod(0o644)
    rc, out, err = run(["--config", str(cfg), "--ssid", "plant-ap", "--psk", PSK],
                       stdin=keyed(), capsys=capsys)
    assert rc == 0, err
    assert json.loads(cfg.read_text()) == {
        "radio": {"route": "b", "pana_password": GOOD_PW, "route_b_id": GOOD_ID},
        "meter": {"ip": "192.0.2.7"}, "lan": {"wifi_ssid": "plant-ap", "wifi_psk": PSK}}
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert "radio.route_b_id, radio.pana_password, lan.wifi_ssid, lan.wifi_psk written" in out
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left
    _no_secret(out + err, GOOD_PW, GOOD_ID, PSK)


def test_new_local_config_is_created(tmp_path, capsys):
    cfg = tmp_path / "new.json"
    rc, _, err = run(["--config", str(cfg)], stdin=keyed(), capsys=capsys)
    assert rc == 0, err
    assert json.loads(cfg.read_text()) == {"radio": {"route_b_id": GOOD_ID,
                                                     "pana_password": GOOD_PW}}


def test_psk_is_asked_for_when_not_given(monkeypatch, capsys):
    asked = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        os.devnull if p == "/dev/tty" else p, *a, **k))  # a terminal, even under CI
    monkeypatch.setattr(provision.getpass, "getpass", lambda prompt: asked.append(prompt) or PSK)
    rc, out, err = run(["--print", "--text", keyed(), "--ssid", "plant-ap"], capsys=capsys)
    assert rc == 0, err
    assert asked == ["Wi-Fi passphrase (WPA2/WPA3): "]
    assert json.loads(out)["lan"] == {"wifi_ssid": "plant-ap", "wifi_psk": PSK}


def test_psk_without_a_terminal_is_refused(capsys):
    """No /dev/tty (setsid: no controlling terminal): the tool says to give --psk instead of
    reading an empty passphrase from the stdin that held the credential."""
    r = subprocess.run([sys.executable, "-m", "tools.provision", "--print", "--ssid", "plant-ap"],
                       cwd=REPO, input=keyed(), capture_output=True, text=True, timeout=60,
                       start_new_session=True)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "provision: no terminal to ask for the Wi-Fi passphrase on; give --psk\n"


def test_lookalike_note_for_typed_text_only(tmp_path, capsys):
    pw = "AB0lCDEFGHJK"  # 0 at 3, l at 4: legal in a password, easily misread
    rc, _, err = run(["--print"], stdin=keyed(pw=pw), capsys=capsys)
    assert rc == 0
    assert "provision: note: password characters 3, 4 are easily misread (O/0, l/1/I)" in err
    _no_secret(err, pw)
    rc, _, err = run(["--print", "--image", str(qr_png(tmp_path / "l.png", keyed(pw=pw)))],
                     capsys=capsys)
    assert rc == 0 and err == ""  # a QR code is read exactly


def test_free_format_follows_the_configuration(tmp_path, capsys):
    pw = "long;free:pass\\word"
    text = "WISUN-ID:%s;PWD:%s;" % (GOOD_ID, pw.replace("\\", "\\\\").replace(";", "\\;"))
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"radio": {"credential_format": "free"}}))
    rc, _, err = run(["--config", str(cfg)], stdin=text, capsys=capsys)
    assert rc == 0, err
    assert json.loads(cfg.read_text())["radio"]["pana_password"] == pw
    # the same password for a configuration that keeps the B-route format: refused
    cfg.write_text(json.dumps({"radio": {"credential_format": "broute"}}))
    rc, _, err = run(["--config", str(cfg), "--credential-format", "free"], stdin=text,
                     capsys=capsys)
    assert rc == 3
    assert "sets radio.credential_format broute: password character 5 is not a letter or digit" \
        in err
    _no_secret(err, pw)


# --- refusals ------------------------------------------------------------------------------

# (case, credential text, exit code, message): the messages are docs/provisioning.md's table
BAD_TEXT = [
    ("short ID", keyed(ident=GOOD_ID[:31]), 3,
     "ID has 31 characters; expected 32 hexadecimal digits"),
    ("long ID", keyed(ident=GOOD_ID + "0"), 3,
     "ID has 33 characters; expected 32 hexadecimal digits"),
    ("letter O in the ID", keyed(ident="0011O233" + GOOD_ID[8:]), 3,
     "ID character 5 is the letter O, not a hexadecimal digit (the digit 0?)"),
    ("lowercase l in the ID", keyed(ident="001122334455667l" + GOOD_ID[16:]), 3,
     "ID character 16 is the letter l, not a hexadecimal digit (the digit 1?)"),
    ("ID in groups", keyed(ident="0011 2233" + GOOD_ID[8:]), 3,
     "ID character 5 is a separator; give the 32 hexadecimal digits without spaces or dashes"),
    ("other letter in the ID", keyed(ident="G" + GOOD_ID[1:]), 3,
     "ID character 1 is not a hexadecimal digit (0-9, A-F)"),
    ("11-character password", keyed(pw=GOOD_PW[:11]), 3,
     "password has 11 characters; expected 12 letters and digits"),
    ("symbol in the password", keyed(pw="Zq7wKm3p-r9T"), 3,
     "password character 9 is not a letter or digit (expected 12 letters and digits)"),
    ("full-width digit in the ID", keyed(ident="00\uff11" + GOOD_ID[3:]), 3,
     "ID character 3 is not ASCII (a full-width or accented character?)"),
    ("accented letter in the password", keyed(pw="Zq7wK\u00e9m3pXr9"), 3,
     "password character 6 is not ASCII (a full-width or accented character?)"),
    ("extra field", keyed(extra="S:plant-ap;"), 3,
     "field 3 is not WISUN-ID or PWD (extra fields are refused)"),
    ("field without a name", "WISUN-ID:%s;%s;" % (GOOD_ID, GOOD_PW), 3,
     "field 2 has no NAME: prefix (expected WISUN-ID:<id>;PWD:<password>;)"),
    ("missing password", "WISUN-ID:%s;" % GOOD_ID, 3,
     "no PWD field (expected WISUN-ID:<id>;PWD:<password>;)"),
    ("field twice", keyed(extra="PWD:%s;" % GOOD_PW), 3, "PWD is given twice"),
    ("one line", GOOD_ID + GOOD_PW, 3,
     "one line only; expected the ID on the first line and the password on the second"),
    ("extra line", "%s\n%s\nplant-ap\n" % (GOOD_ID, GOOD_PW), 3,
     "3 lines; expected 2: the ID, then the password (extra lines are refused)"),
    ("swapped", "%s\n%s\n" % (GOOD_PW, GOOD_ID), 3,
     "the ID has 12 characters and the password 32: are they swapped?"),
    ("empty", " \n", 3, "the credential text is empty"),
]


@pytest.mark.parametrize("case,text,code,message", BAD_TEXT, ids=[c[0] for c in BAD_TEXT])
def test_bad_credential_text(case, text, code, message, capsys):
    rc, out, err = run(["--print"], stdin=text, capsys=capsys)
    assert (rc, out) == (code, "")
    assert err.startswith("provision: ") and message in err
    assert documented(message), "not in docs/provisioning.md's table"
    _no_secret(err, GOOD_PW, GOOD_ID)


@pytest.mark.parametrize("case,text,code,message", BAD_TEXT[:-1],
                         ids=[c[0] for c in BAD_TEXT[:-1]])
def test_bad_credential_in_a_qr_code(case, text, code, message, tmp_path, capsys):
    """The same refusals when the text comes from a QR code (segno writes UTF-8 for non-ASCII)."""
    png = qr_png(tmp_path / "bad.png", text)
    rc, out, err = run(["--image", str(png), "--print"], capsys=capsys)
    assert (rc, out) == (code, "") and message in err


def _no_qr(path):
    im = Image.new("L", (300, 200), 255)
    d = ImageDraw.Draw(im)
    d.rectangle((20, 20, 120, 120), fill=0)
    d.text((150, 80), "no code here", fill=0)
    im.save(path)


def _corrupt(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def _truncated(path):
    data = SAMPLE.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _two_codes(path):
    a = Image.open(qr_png(path.with_suffix(".a.png"), keyed()))
    b = Image.open(qr_png(path.with_suffix(".b.png"), keyed(pw="OtherPass123")))
    im = Image.new("L", (a.width + b.width + 40, max(a.height, b.height)), 255)
    im.paste(a, (0, 0))
    im.paste(b, (a.width + 40, 0))
    im.save(path)


BAD_IMAGE = [
    ("image with no QR code", _no_qr, 4, "no QR code found in image"),
    ("corrupt image file", _corrupt, 4, "cannot be read as PNG or JPEG"),
    ("truncated image file", _truncated, 4, "cannot be read as PNG or JPEG"),
    ("two different QR codes", _two_codes, 4, "holds 2 different QR codes; crop it to the "
                                              "credential's"),
    ("QR code of spaces only", lambda p: qr_png(p, "  "), 3, "the QR code holds no text"),
    ("QR code of nothing", lambda p: qr_png(p, ""), 4, "no QR code found in image"),
    ("missing file", lambda p: None, 4, "no such file"),
]


@pytest.mark.parametrize("case,make,code,message", BAD_IMAGE, ids=[c[0] for c in BAD_IMAGE])
def test_bad_image(case, make, code, message, tmp_path, capsys):
    path = tmp_path / "label.png"
    make(path)
    rc, out, err = run(["--image", str(path), "--print"], capsys=capsys)
    assert (rc, out) == (code, "")
    assert message in err
    assert documented(message), "not in docs/provisioning.md's table"
    _no_secret(err, GOOD_PW, "OtherPass123")


BAD_WIFI = [
    ("open network", "plant-ap", "", 5, "no Wi-Fi passphrase: open networks are refused"),
    ("short passphrase", "plant-ap", "short77", 5,
     "Wi-Fi passphrase has 7 characters; expected a passphrase of 8 to 63 (WPA2/WPA3)"),
    ("64 characters, not hex", "plant-ap", "g" * 64, 5,
     "Wi-Fi passphrase has 64 characters, so it must be a raw key of 64 hexadecimal digits"),
    ("control character", "plant-ap", "abc\tdefgh", 5,
     "Wi-Fi passphrase character 4 is not printable ASCII"),
    ("SSID too long", "\u00e9" * 17, PSK, 5, "SSID is 34 bytes long; expected 1 to 32 bytes"),
    ("empty SSID", "", PSK, 5, "SSID is 0 bytes long; expected 1 to 32 bytes"),
]


@pytest.mark.parametrize("case,ssid,psk,code,message", BAD_WIFI, ids=[c[0] for c in BAD_WIFI])
def test_bad_wifi(case, ssid, psk, code, message, capsys):
    rc, out, err = run(["--print", "--ssid", ssid, "--psk", psk], stdin=keyed(), capsys=capsys)
    assert (rc, out) == (code, "") and message in err
    assert documented(message), "not in docs/provisioning.md's table"
    _no_secret(err, GOOD_PW, GOOD_ID, *([psk] if len(psk) >= 6 else []))


@pytest.mark.parametrize("argv,message", [
    (["--text", keyed()], "say where the credential goes: --port, --config or --print"),
    (["--print", "--text", keyed(), "--psk", PSK], "--psk needs --ssid"),
    (["--config", "x.json", "--text", keyed(), "--no-reset"], "--no-reset goes with --port"),
])
def test_usage_errors(argv, message, capsys):
    rc, out, err = run(argv, capsys=capsys)
    assert (rc, out) == (2, "") and message in err


def test_broken_local_config_is_left_alone(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    for text, message in (('{"radio": {"pana_password": "OLDSECRET123",}', "is not valid JSON "
                           "(line 1, column 44); fix or remove it first"),
                          ('["OLDSECRET123"]', "is not a JSON object of sections"),
                          ('{"radio": "OLDSECRET123"}', "section 'radio' of the existing "
                                                        "configuration is not an object")):
        cfg.write_text(text)
        rc, _, err = run(["--config", str(cfg)], stdin=keyed(), capsys=capsys)
        assert rc == 6 and message in err, err
        assert cfg.read_text() == text
        _no_secret(err, "OLDSECRET123", GOOD_PW)


# --- the parser under fuzz -----------------------------------------------------------------

_NEAR = "0123456789ABCDEFabcdefOlI:;\\ \n-\u00e9\uff10"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=120) | st.text(alphabet=_NEAR, max_size=90),
       st.sampled_from(provision.FORMATS))
def test_fuzz_parser_raises_only_its_own_error(text, fmt):
    try:
        ident, pw = provision.parse_credential(text, fmt)
    except provision.ProvisionError as e:
        assert e.code == provision.EXIT_CREDENTIAL and e.message
        return
    assert credentials_ok(ident, pw, fmt)


_PW = st.text(alphabet="ABCDEFGHJKMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789\u00e9;:\\ -.",
              min_size=7, max_size=16)
_ID = st.text(alphabet="0123456789ABCDEFOl -:", min_size=30, max_size=34)


def _fuzz_text(ident, pw, form):
    return {"keyed": keyed(ident, pw), "lines": "%s\n%s" % (ident, pw),
            "keyed-extra": keyed(ident, pw, "X:%s;" % pw),
            "lines-extra": "%s\n%s\n%s" % (ident, pw, pw)}[form]


def _error_of(text, fmt):
    try:
        provision.parse_credential(text, fmt)
    except provision.ProvisionError as e:
        return e.message
    return ""


@settings(max_examples=600, deadline=None)
@given(_ID, _PW, st.sampled_from(["keyed", "lines", "keyed-extra", "lines-extra"]),
       st.sampled_from(provision.FORMATS))
def test_fuzz_errors_never_quote_the_password(ident, pw, form, fmt):
    message = _error_of(_fuzz_text(ident, pw, form), fmt)
    # the same input with the secrets blanked: text found there too is the message's own wording
    # (a generated password such as "expecte" is part of "expected"), not a quoted secret
    blank = _error_of(_fuzz_text("#" * len(ident), "#" * len(pw), form), fmt)
    for part in (pw, pw.strip(), ident.strip()):
        if len(part) >= 7 and part not in blank:
            assert part not in message


def credentials_ok(ident, pw, fmt):
    from firmware.app import credentials

    return credentials.check_id(ident) is None and credentials.check_password(pw, fmt) is None


def _no_secret(text, *secrets):
    for s in secrets:
        assert s not in text


# --- the board, through a fake mpremote -----------------------------------------------------

# Plays `mpremote connect PORT <cmd> [+ <cmd> ...]` on a directory (fake_tools.py): exec (prints
# nothing), fs cat, fs cp, fs sha256sum, reset. Records each call's argv and, for cp, the source
# file's mode.
FAKE_MPREMOTE = r'''
rec = {"argv": args}
rec["cmds"] = [" ".join(c[:2]) if c[0] == "fs" else c[0] for c in cmds]
fail = os.environ.get("FAKE_FAIL", "")
try:
    if args[:2] != ["connect", os.environ["FAKE_PORT"]]:
        print("mpremote: failed to access %s (it may be in use by another program)" % args[1],
              file=sys.stderr)
        sys.exit(1)
    for cmd in cmds:
        if cmd[0] == "exec":
            assert "machine.WDT(timeout=600000)" in cmd[1]
        elif cmd[:2] == ["fs", "cat"]:
            if fail == "cat":
                print(os.environ.get("FAKE_STDOUT", ""))
                print("mpremote: " + os.environ.get("FAKE_STDERR", ""), file=sys.stderr)
                sys.exit(1)
            path = os.path.join(dev, cmd[2][1:])
            if not os.path.exists(path):
                print("mpremote: cat: %s: No such file or directory." % cmd[2][1:],
                      file=sys.stderr)
                sys.exit(1)
            sys.stdout.write(open(path).read())
        elif cmd[:2] == ["fs", "cp"]:
            src, dst = cmd[2], cmd[3]
            rec["src"] = src
            rec["src_mode"] = stat.S_IMODE(os.stat(src).st_mode)
            rec["dir_mode"] = stat.S_IMODE(os.stat(os.path.dirname(src)).st_mode)
            # a second name for the temporary file: shows what its blocks hold once it is deleted
            os.link(src, os.path.join(dev, "..", "tmp-link"))
            shutil.copyfile(src, os.path.join(dev, dst[1:]))
            if fail == "corrupt":
                with open(os.path.join(dev, dst[1:]), "a") as f:
                    f.write(" ")
            print("cp %s %s" % (src, dst))
        elif cmd[:2] == ["fs", "sha256sum"]:
            print("sha256sum " + cmd[2])
            print(hashlib.sha256(open(os.path.join(dev, cmd[2][1:]), "rb").read()).hexdigest())
        elif cmd == ["reset"]:
            open(os.path.join(dev, ".reset"), "a").write("x")
        else:
            sys.exit("fake mpremote: unknown command %r" % cmd)
finally:
    with open(os.path.join(dev, "..", "calls.jsonl"), "a") as log:
        log.write(json.dumps(rec) + "\n")
'''


@pytest.fixture
def board(tmp_path, monkeypatch):
    dev = tmp_path / "device"
    dev.mkdir()
    write_tool(tmp_path / "mpremote", FAKE_MPREMOTE, mpremote=True)
    monkeypatch.setenv("FAKE_DEVICE", str(dev))
    monkeypatch.setenv("FAKE_PORT", "/dev/ttyUSB0")
    # found on PATH, as a user's own mpremote would be (the venv's is not used when absent)
    monkeypatch.setenv("PATH", "%s%s%s" % (tmp_path, os.pathsep, os.environ["PATH"]))
    monkeypatch.setattr(provision, "_mpremote", lambda: "mpremote")

    def calls():
        log = tmp_path / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() \
            else []

    return dev, calls


def _board_run(argv, stdin, capsys):
    return run(["--port", "/dev/ttyUSB0"] + argv, stdin=stdin, capsys=capsys)


def test_board_without_config_gets_one(board, capsys):
    dev, calls = board
    rc, out, err = _board_run(["--ssid", "plant-ap", "--psk", PSK], keyed(), capsys)
    assert rc == 0, err
    assert json.loads((dev / "config.json").read_text()) == {
        "radio": {"route_b_id": GOOD_ID, "pana_password": GOOD_PW},
        "lan": {"wifi_ssid": "plant-ap", "wifi_psk": PSK}}
    c = calls()
    assert [x["cmds"] for x in c] == [["exec", "fs cat"], ["exec", "fs cp", "fs sha256sum"],
                                      ["exec", "reset"]]
    # the copy came from a private file in a private directory, gone now
    assert c[1]["src_mode"] == 0o600 and c[1]["dir_mode"] == 0o700
    assert not os.path.exists(c[1]["src"]) and not os.path.exists(os.path.dirname(c[1]["src"]))
    left = (dev.parent / "tmp-link").read_bytes()
    assert len(left) > 100 and left == bytes(len(left))  # overwritten with zeros, then deleted
    assert (dev / ".reset").exists()
    assert "written to :config.json on /dev/ttyUSB0 (checked by SHA-256); the board was reset" \
        in out
    for x in c:  # secrets never on a command line
        _no_secret(" ".join(x["argv"]), GOOD_PW, GOOD_ID, PSK)
    _no_secret(out + err, GOOD_PW, GOOD_ID, PSK)


def test_board_config_is_merged(board, capsys):
    dev, calls = board
    (dev / "config.json").write_text(json.dumps({
        "radio": {"route": "b", "pana_password": "OLDSECRET123", "sm_mac": "001D129012345678"},
        "lan": {"kind": "wifi", "wifi_ssid": "plant-ap", "wifi_psk": PSK}}))
    rc, out, err = _board_run(["--no-reset"], keyed(), capsys)
    assert rc == 0, err
    assert json.loads((dev / "config.json").read_text()) == {
        "radio": {"route": "b", "pana_password": GOOD_PW, "sm_mac": "001D129012345678",
                  "route_b_id": GOOD_ID},
        "lan": {"kind": "wifi", "wifi_ssid": "plant-ap", "wifi_psk": PSK}}
    assert [x["cmds"] for x in calls()] == [["exec", "fs cat"], ["exec", "fs cp", "fs sha256sum"]]
    assert not (dev / ".reset").exists()
    _no_secret(out + err, GOOD_PW, "OLDSECRET123", PSK)


def test_bad_credential_never_touches_the_board(board, capsys):
    _, calls = board
    rc, _, err = _board_run([], keyed(pw=GOOD_PW[:11]), capsys)
    assert rc == 3 and calls() == []


def test_board_read_failure_is_reported_without_secrets(board, monkeypatch, capsys):
    dev, calls = board
    monkeypatch.setenv("FAKE_FAIL", "cat")
    monkeypatch.setenv("FAKE_STDOUT", '{"radio": {"pana_password": "OLDSECRET123"}}')
    monkeypatch.setenv("FAKE_STDERR", "could not enter raw repl near " + GOOD_PW)
    rc, out, err = _board_run([], keyed(), capsys)
    assert rc == 1
    assert "reading :config.json on /dev/ttyUSB0 failed (mpremote exit 1): mpremote: could not " \
        "enter raw repl near ***" in err
    _no_secret(out + err, GOOD_PW, "OLDSECRET123")
    assert not (dev / "config.json").exists()


def test_wrong_port(board, capsys):
    _, calls = board
    rc, _, err = run(["--port", "/dev/ttyUSB9"], stdin=keyed(), capsys=capsys)
    assert rc == 1 and "failed to access /dev/ttyUSB9" in err


def test_broken_board_config_is_left_and_the_board_restarted(board, capsys):
    dev, calls = board
    text = '{"radio": {"pana_password": "OLDSECRET123"'
    (dev / "config.json").write_text(text)
    rc, out, err = _board_run([], keyed(), capsys)
    assert rc == 6
    assert "the board's :config.json is not valid JSON (line 1, column 43)" in err
    assert (dev / "config.json").read_text() == text
    assert [x["cmds"] for x in calls()] == [["exec", "fs cat"], ["exec", "reset"]]
    _no_secret(out + err, "OLDSECRET123")


def test_board_format_is_respected(board, capsys):
    dev, calls = board
    (dev / "config.json").write_text(json.dumps({"radio": {"credential_format": "broute"}}))
    rc, _, err = _board_run(["--credential-format", "free"], keyed(pw="free-format-pass"),
                            capsys)
    assert rc == 3 and "the board's :config.json sets radio.credential_format broute" in err
    assert [x["cmds"] for x in calls()] == [["exec", "fs cat"], ["exec", "reset"]]


def test_hash_mismatch_is_reported(board, monkeypatch, capsys):
    _, calls = board
    monkeypatch.setenv("FAKE_FAIL", "corrupt")
    rc, _, err = _board_run([], keyed(), capsys)
    assert rc == 1
    assert ":config.json on /dev/ttyUSB0 does not match what was sent (SHA-256): run the tool " \
        "again" in err
    c = calls()
    assert not os.path.exists(c[1]["src"])


def test_mpremote_missing(board, monkeypatch, capsys):
    monkeypatch.setattr(provision, "_mpremote", lambda: "/nonexistent/mpremote")
    rc, _, err = _board_run([], keyed(), capsys)
    assert rc == 1 and "mpremote not found" in err


# --- the board, as MicroPython itself (the unix port) ------------------------------------------

class UnixBoard:
    """The MicroPython unix port as a board on a pty that mpremote opens like a serial port.
    A soft reset (Ctrl-D at the raw REPL, which ends the unix port) and machine.reset() restart
    the interpreter in the same directory: a fresh heap, the files kept, as on a device."""

    def __init__(self, micropython, fsdir, pypath):
        self.micropython, self.fsdir, self.pypath = micropython, fsdir, pypath
        self.master, slave = pty.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self.boots = 0
        self._stop = False
        self._start()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _start(self):
        m, s = pty.openpty()
        tty.setraw(m)
        tty.setraw(s)
        env = dict(os.environ, MICROPYPATH=self.pypath)
        self.proc = subprocess.Popen([self.micropython, "-i"], stdin=s, stdout=s, stderr=s,
                                     cwd=self.fsdir, env=env, close_fds=True)
        os.close(s)
        self.child = m
        self.boots += 1

    def _pump(self):
        last = b""
        while not self._stop:
            r, _, _ = select.select([self.master, self.child], [], [], 0.1)
            if self.master in r:
                data = os.read(self.master, 4096)
                last = data[-1:] or last
                try:
                    os.write(self.child, data)
                except OSError:
                    pass
            if self.child in r:
                try:
                    data = os.read(self.child, 4096)
                except OSError:
                    data = b""
                if data:
                    os.write(self.master, data)
                    continue
                self.proc.wait()
                if self._stop:
                    return
                os.close(self.child)
                self._start()
                if last == b"\x04":  # mpremote's soft reset: answer as a device does
                    os.write(self.master, b"soft reboot\r\n")
                    os.write(self.child, b"\r\x01")

    def close(self):
        self._stop = True
        self._thread.join(5)  # the pump sees _stop within its 0.1 s select; no restart after
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for fd in (self.child, self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass  # the pump closed the child's end of an interpreter that ended


# the board's machine module as far as provisioning reaches it: the watchdog re-timed, the reset
MACHINE = """import sys
def _note(s):
    with open(%r, "a") as f:
        f.write(s + "\\n")
class WDT:
    def __init__(self, id=0, timeout=5000):
        _note("wdt %%d" %% timeout)
def reset():
    _note("reset")
    sys.exit(0)
"""


@pytest.fixture
def unix_board(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "machine.py").write_text(MACHINE % str(tmp_path / "events"))
    b = UnixBoard(str(REPO / ".venv" / "bin" / "micropython"), str(fs), str(lib))
    try:
        yield b, fs, tmp_path / "events"
    finally:
        b.close()


def test_board_path_with_the_real_mpremote_and_micropython(unix_board, capsys):
    """The real mpremote over a pty to the real MicroPython (unix port): its raw REPL, fs cat,
    fs cp, sha256sum and the reset, as on a device."""
    b, fs, events = unix_board
    (fs / "config.json").write_text(json.dumps({"meter": {"ip": "192.0.2.7"},
                                                "radio": {"pana_password": "OLDSECRET123"}}))
    rc, out, err = run(["--port", b.path, "--ssid", "plant-ap", "--psk", PSK], stdin=keyed(),
                       capsys=capsys)
    assert rc == 0, err
    assert json.loads((fs / "config.json").read_text()) == {
        "meter": {"ip": "192.0.2.7"},
        "radio": {"pana_password": GOOD_PW, "route_b_id": GOOD_ID},
        "lan": {"wifi_ssid": "plant-ap", "wifi_psk": PSK}}
    # three sessions, each re-timing the watchdog first; then the reset, which mpremote sends
    # without waiting for it to run (exec --no-follow, as a device resets without a word)
    deadline = time.monotonic() + 20
    while "reset" not in events.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events.read_text().split("\n") == ["wdt 600000"] * 3 + ["reset", ""]
    assert "checked by SHA-256); the board was reset" in out
    _no_secret(out + err, GOOD_PW, "OLDSECRET123", PSK)
    assert [p.name for p in fs.iterdir()] == ["config.json"]


# --- the command as a user runs it ----------------------------------------------------------


def test_wrapper_script_from_another_directory(tmp_path):
    r = subprocess.run([str(REPO / "tools" / "provision"), "--image", str(SAMPLE), "--print"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["radio"]["pana_password"] == provision.SAMPLE_PASSWORD
    r = subprocess.run([sys.executable, "-m", "tools.provision", "--print"], cwd=REPO,
                       input=keyed(pw="short"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr == "provision: password has 5 characters; expected 12 letters and digits\n"
