# Shared fakes for the cosem unit tests (no tests here): calendar clock, meter data views, helpers.
from firmware import timeutil
from firmware.cosem import wrapper
from firmware.cosem.profile import default_table
from firmware.cosem.server import CosemServer

T0 = timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0)  # 2024-04-01T00:00Z = 09:00 JST
SLOT0 = timeutil.slot_of_t2k(T0)
AARQ_PUBLIC = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
AARQ_LLS = bytes.fromhex(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400007E1F04B0"
)


class FakeClock:
    def __init__(self, t=None):
        self.t = t
        self.sets = 0

    def now_t2k(self):
        return self.t

    def set_t2k(self, t):
        self.t = t
        self.sets += 1

    def is_set(self):
        return self.t is not None


class ListView:
    """Rows (slot, fwd, rev, status, unit) in a sorted list, as MeterView gives them; a row given
    as (slot, fwd, rev, status) has the view's unit_code."""

    def __init__(self, rows, unit_code=0x01):
        self.unit_code = unit_code
        self._rows = sorted(rows)

    def _full(self, r):
        return r if len(r) == 5 else tuple(r) + (self.unit_code,)

    def latest(self):
        return self._full(self._rows[-1]) if self._rows else None

    def count(self):
        return len(self._rows)

    def rows(self, a, b):
        for r in self._rows:
            if a <= r[0] <= b:
                yield self._full(r)

    def rows_by_index(self, first, last):
        for i in range(max(first, 0), min(last, len(self._rows) - 1) + 1):
            yield self._full(self._rows[i])


class SynthView:
    """n consecutive slots from first_slot, computed on demand (no per-row storage)."""

    def __init__(self, first_slot, n, unit_code=0x01):
        self.unit_code = unit_code
        self.first = first_slot
        self.n = n

    @staticmethod
    def row_at(slot, i, unit_code=0x01):
        return (slot, 100000 + 7 * i, 2000 + 3 * i, i & 0x24, unit_code)

    def latest(self):
        if not self.n:
            return None
        return self.row_at(self.first + self.n - 1, self.n - 1)

    def count(self):
        return self.n

    def rows(self, a, b):
        s = max(a, self.first)
        e = min(b, self.first + self.n - 1)
        while s <= e:
            yield self.row_at(s, s - self.first)
            s += 1

    def rows_by_index(self, first, last):
        i = max(first, 0)
        last = min(last, self.n - 1)
        while i <= last:
            yield self.row_at(self.first + i, i)
            i += 1


def make_rows(n, skip=()):
    out = []
    for i in range(n):
        if i not in skip:
            out.append((SLOT0 + i, 100000 + 7 * i, 2000 + 3 * i, 0x20 if i % 11 == 0 else 0))
    return out


# The object table most cosem tests run on: their golden vectors serve the fake views' raw
# 0.1 kWh counters unchanged (scaler 2, double-long-unsigned) and let the public client set the
# clock, as the simulation does. The defaults (Wh, long64-unsigned, no public clock write) have
# tests of their own (test_cosem_values, test_cosem_roles).
RAW_TABLE = {"energy_scaler": 2, "energy_type": "u32", "public_clock_write": True}


def make_server(view=None, clock=None, config=None, table_config=None, **kw):
    """table_config None: RAW_TABLE; pass {} for the defaults."""
    if view is None:
        view = ListView(make_rows(48, skip=(5, 6)))
    if clock is None:
        clock = FakeClock(T0 + 3600)
    # the reading client (SAP 17) and, for the existing management tests, an LLS management
    # client (SAP 1) share the Green Book password; HLS-GMAC tests configure keys instead
    cfg = {"lls_password": "12345678", "mgmt_mechanism": "lls", "mgmt_password": "12345678"}
    if config:
        cfg.update(config)
    if table_config is None:
        table_config = RAW_TABLE
    return CosemServer(default_table(view, table_config), clock, cfg, **kw), clock, view


def aarq_with_pdu(pdu):
    """The public AARQ with another client max receive PDU size."""
    b = bytearray(AARQ_PUBLIC)
    b[-2] = pdu >> 8
    b[-1] = pdu & 0xFF
    return bytes(b)


def wpdu(apdu, src=16, dst=1):
    return wrapper.build(src, dst, apdu)
