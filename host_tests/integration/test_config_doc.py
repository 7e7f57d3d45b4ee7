"""docs/config-reference.md is generated (tools/config_doc.py) from firmware/app/config.py and the
component defaults, never written by hand: the committed file must be what the generator writes
now, and it must document every key with its rule."""

import os

from firmware.app import cfgcheck, config
from tools import config_doc


def test_committed_reference_is_what_the_generator_writes():
    with open(config_doc.OUT) as f:
        committed = f.read()
    assert committed == config_doc.generate(), \
        "docs/config-reference.md is out of date: run python tools/config_doc.py"


def test_every_key_and_rule_is_in_the_reference():
    text = config_doc.generate()
    comp = config._component_defaults()
    for sect, d in config.DEFAULTS.items():
        assert "## `%s`" % sect in text
        part = text.split("## `%s`" % sect)[1].split("\n## ")[0]
        for key in list(d) + list(comp.get(sect, {})):
            assert "| `%s` |" % key in part, (sect, key)
    for sect, key, setup, _kind, _arg in cfgcheck.rules():
        part = text.split("## `%s`" % sect)[1].split("\n## ")[0]
        row = [r for r in part.split("\n") if r.startswith("| `%s` |" % key)][0]
        assert ("| setup |" in row) == setup, row
    # the comment above a key in config.py is its description
    assert "Uptime (real seconds, ticks) after which a normal boot counts as stable." in text


def test_linked_from_the_docs():
    root = os.path.dirname(config_doc.OUT)
    with open(os.path.join(root, "configuration.md")) as f:
        assert "config-reference.md" in f.read()
    with open(os.path.join(root, "..", "README.md")) as f:
        assert "docs/config-reference.md" in f.read()
