"""Generate docs/config-reference.md, the configuration reference, from the firmware's own sources:
firmware/app/config.py (DEFAULTS, the comment lines above each key and after it, SCHEMA,
SECRET_KEYS) and the components whose defaults the radio and dlms sections take
(firmware/radio/session.py and firmware/cosem/server.py DEFAULTS). Never edit the output by hand:
a test (host_tests/integration/test_config_doc.py) fails when it differs from what this writes.

  python tools/config_doc.py            write docs/config-reference.md
  python tools/config_doc.py --check    exit 1 if the committed file is not up to date
"""

import ast
import io
import json
import os
import sys
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from firmware.app import cfgcheck, config  # noqa: E402

OUT = os.path.join(ROOT, "docs", "config-reference.md")
SOURCES = {  # where a section's keys are documented: config.py, then the component's own file
    "radio": "firmware/radio/session.py",
    "dlms": "firmware/cosem/server.py",
}
FORMATS = {
    "ipv4": "IPv4 address a.b.c.d",
    "hex": "hexadecimal text, an even number of digits",
    "hex16": "16 hexadecimal digits",
    "mac": "16 hexadecimal digits (a MAC)",
    "key": "32 hexadecimal digits (an AES-128 key)",
    "id": "32 hexadecimal digits (Wi-SUN authentication ID)",
    "password": "per radio.credential_format: broute = 12 letters and digits, free = 8..64 "
                "printable ASCII",
    "ssid": "1 to 32 bytes (UTF-8)",
    "psk": "WPA2/WPA3 passphrase of 8 to 63 characters, or 64 hexadecimal digits",
    "ldn": "16 printable ASCII characters",
    "obis": "OBIS code a.b.c.d.e.f (0..255 each)",
}


def _comments(src):
    """line number -> comment text (without '#') for every comment in the source."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string[1:].strip()
    return out


def _defaults_dict(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "DEFAULTS" for t in node.targets):
            return node.value
    raise ValueError("no DEFAULTS dict")


def _literal(src, node):
    """The value as written in the source (0x028E01 stays hex), when it is a literal."""
    seg = ast.get_source_segment(src, node)
    try:
        ast.literal_eval(seg)
    except (ValueError, SyntaxError):
        return None
    return seg


def _describe(src_lines, comments, key_node, value_node):
    """The comment lines right above the key (stopping at code or a blank line) and the comment
    at the end of its value's last line, as one text."""
    above = []
    n = key_node.lineno - 1
    while n >= 1 and src_lines[n - 1].strip().startswith("#"):
        above.insert(0, comments[n])
        n -= 1
    text = " ".join(above)
    tail = comments.get(value_node.end_lineno)
    if tail and not src_lines[value_node.end_lineno - 1].strip().startswith("#"):
        text = (text + " " + tail).strip()
    return text, bool(above)


def key_docs(path):
    """{section or None: {key: (text, from a comment block, literal or None)}} from a DEFAULTS
    dict literal (config.py: nested sections; a component: one flat dict, under None)."""
    with open(os.path.join(ROOT, path)) as f:
        src = f.read()
    lines = src.split("\n")
    comments = _comments(src)
    top = _defaults_dict(ast.parse(src))
    nested = all(isinstance(v, ast.Dict) for v in top.values)
    out = {}
    if nested and path.endswith("config.py"):
        for k, v in zip(top.keys, top.values):
            sect = {"": _describe(lines, comments, k, k) + (None,)}  # the section's own text
            for kk, vv in zip(v.keys, v.values):
                sect[kk.value] = _describe(lines, comments, kk, vv) + (_literal(src, vv),)
            out[k.value] = sect
    else:
        out[None] = {k.value: _describe(lines, comments, k, v) + (_literal(src, v),)
                     for k, v in zip(top.keys, top.values)}
    return out


def _rules():
    out = {}
    for sect, key, setup, kind, arg in cfgcheck.rules():
        if kind == cfgcheck.RANGE:
            text = "%d..%d" % arg
        elif kind == cfgcheck.ENUM:
            text = " \\| ".join("`%s`" % (x,) for x in arg)
        else:
            opt = arg.endswith("?")
            text = FORMATS[arg.rstrip("?")] + ("; or empty" if opt else "")
            if key in ("wifi_ssid", "wifi_psk"):
                # cfgcheck: only where the board's network is Wi-Fi; an empty PSK is an open net
                text += "; checked on a Wi-Fi board" + (
                    "; empty (an open network) is refused" if key == "wifi_psk" else "")
        out[(sect, key)] = (text, setup)
    return out


def _value(v):
    """As JSON (what a configuration file holds)."""
    return "`%s`" % json.dumps(v)


def _cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def generate():
    """The reference's text."""
    docs = key_docs("firmware/app/config.py")
    comp_docs = {s: key_docs(p)[None] for s, p in SOURCES.items()}
    comp = config._component_defaults()
    rules = _rules()
    out = [
        "# Configuration reference",
        "",
        "Generated by `tools/config_doc.py` from `firmware/app/config.py` (DEFAULTS, the comments "
        "on each key, SCHEMA) and the defaults of the radio session "
        "(`firmware/radio/session.py`) and the COSEM server (`firmware/cosem/server.py`). "
        "Do not edit: run `python tools/config_doc.py` after changing them (a test checks that "
        "this file is up to date).",
        "",
        "How a configuration is read and what happens to a bad value: "
        "[configuration.md](configuration.md) (\"Configuration check\"). Column *bad value*: "
        "**default** = logged and the default kept (KEEP_DEFAULT); **setup** = the device "
        "enters setup mode (SETUP). A key without a rule is checked for its type only (a wrong "
        "type keeps the default). *secret*: never logged (`***`), never shown. A key with no "
        "description has no comment in the source: its section's page in `docs/` describes it "
        "([configuration.md](configuration.md) \"Sections\" points there).",
        "",
    ]
    for sect, defaults in config.DEFAULTS.items():
        out.append("## `%s`" % sect)
        out.append("")
        intro = docs[sect].get("", ("",))[0]
        if sect in comp:
            intro = (intro + " Defaults from `%s`, overridden where this section sets a key."
                     % SOURCES[sect]).strip()
        if intro:
            out += [intro, ""]
        keys = dict(comp.get(sect, {}))
        keys.update(defaults)
        out.append("| key | default | rule | bad value | description |")
        out.append("|---|---|---|---|---|")
        group = None  # the key whose comment block also covers the keys after it
        for key, v in keys.items():
            none = ("", False, None)
            text, block, lit = docs[sect].get(key, none) if key in defaults else none
            if key not in defaults or not text:
                ctext, cblock, clit = comp_docs.get(sect, {}).get(key, none)
                text, block = (text, block) if text else (ctext, cblock)
                lit = lit if key in defaults else clit
            shown = "`%s`" % lit if lit and lit.startswith("0x") else _value(v)
            if text:
                group = key if block else None
            elif group is not None:
                text = "see `%s`" % group
            rule, setup = rules.get((sect, key), ("type only", False))
            if key in config.SECRET_KEYS and not text.startswith("secret"):
                text = ("secret. " + text).strip()
            out.append("| `%s` | %s | %s | %s | %s |" % (
                key, _cell(shown), rule, "setup" if setup else "default", _cell(text)))
        out.append("")
    return "\n".join(out)


def main(argv):
    text = generate()
    if "--check" in argv:
        try:
            with open(OUT) as f:
                same = f.read() == text
        except OSError:
            same = False
        if not same:
            print("docs/config-reference.md is out of date: run python tools/config_doc.py")
            return 1
        return 0
    with open(OUT, "w") as f:
        f.write(text)
    print("wrote %s" % os.path.relpath(OUT, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
