import pytest

from firmware import log


@pytest.fixture
def lines():
    """The firmware's log lines during one test (firmware.log's sink)."""
    out = []
    log.set_sink(out.append)
    yield out
    log.set_sink(None)


@pytest.fixture
def tc():
    """unittest's assert* methods for helpers shared with the unit lane."""
    import unittest

    return unittest.TestCase()
