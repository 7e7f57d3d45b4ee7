# Small settings/counters record kept power-cut safe by write-to-temp + rename over the target.
# On the ESP32 the file lives on LittleFS, where rename is atomic (micropython-platform.md §3.2):
# after a cut the file holds either the old or the new content, never a mix. Removing the target
# before the rename would break that, so it is never done.
import json
import os
from binascii import crc32

from firmware import log


class StateError(ValueError):
    pass


def beside(state_path, name):
    """The file `name` in the directory of the state file (store.state_path): where the safe-boot
    count, the counters, the event log and the setup key live."""
    return state_path[: state_path.rfind("/") + 1] + name


def _encode(values):
    body = json.dumps(values)
    return "%s\n%08x\n" % (body, crc32(body.encode()))


def _decode(text):
    parts = text.split("\n")
    if len(parts) < 2:
        raise StateError("state file truncated")
    body, crc = parts[0], parts[1]
    if "%08x" % crc32(body.encode()) != crc:
        raise StateError("state file CRC mismatch")
    values = json.loads(body)
    if not isinstance(values, dict):
        raise StateError("state file is not an object")
    return values


class StateFile:
    """get/set of a few JSON values (ints, strings); every set() rewrites the file atomically."""

    def __init__(self, path, tag="state"):
        self.path = path
        self.tmp = path + ".tmp"
        self.tag = tag
        self.values = {}
        self.writes = 0
        self._load()

    def _load(self):
        try:
            with open(self.path) as f:
                text = f.read()
        except OSError:
            return  # never written: defaults
        try:
            self.values = _decode(text)
        except (ValueError, StateError) as e:
            log.error(self.tag, "%s unreadable (%s): using defaults" % (self.path, e))
            self.values = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        """Store one value; returns False (no write) if it is unchanged."""
        if self.values.get(key) == value and key in self.values:
            return False
        new = dict(self.values)
        new[key] = value
        self._write(new)
        self.values = new
        return True

    def update(self, values):
        new = dict(self.values)
        new.update(values)
        if new == self.values:
            return False
        self._write(new)
        self.values = new
        return True

    def _write(self, values):
        data = _encode(values)
        with open(self.tmp, "w") as f:
            f.write(data)
            f.flush()
            if hasattr(os, "fsync"):
                os.fsync(f.fileno())
        os.rename(self.tmp, self.path)
        self.writes += 1
