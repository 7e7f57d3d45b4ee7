"""Every test leaves the firmware logger as it found it. pytest-xdist runs tests of many files in
one worker process, one after the other: a test that registers a secret (a fuzzed configuration
registers whatever its secret keys hold, e.g. "x") or swaps the sink would otherwise change what
later tests in that process see (their log lines redacted to "0***82")."""

import pytest

from firmware import log


@pytest.fixture(autouse=True)
def _firmware_log_restored():
    secrets = list(log._secrets)
    sink = log._sink
    level = log.level
    yield
    log._secrets[:] = secrets
    log._sink = sink
    log.level = level
