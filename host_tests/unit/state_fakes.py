# The state file (firmware/store/state.py StateFile) as the push and MQTT queues use it, in memory
# (no tests here): a value is copied when set, as the real file keeps what was written, not the
# caller's list; writes counts the set() calls.


class FakeState:
    def __init__(self, values=None):
        self.values = dict(values or {})
        self.writes = 0

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = list(value)
        self.writes += 1
        return True
