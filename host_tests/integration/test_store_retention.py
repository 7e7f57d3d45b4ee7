# Production geometry (512 KB of 4 KB sectors): retention, wear, read cost and memory bounds,
# and the on-flash format shared by CPython and the MicroPython unix port (file-backed flash).
import json
import os
import subprocess
import sys
import tracemalloc

from firmware import log
from firmware.hal.norflash import NorFlash
from firmware.store import record as r
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore
from tools import store_bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S0 = 960528


class CountingFlash(NorFlash):
    reads = 0

    def readblocks(self, block, buf, offset=0):
        if len(buf) >= self.block_size:
            self.reads += 1
        NorFlash.readblocks(self, block, buf, offset)


def setup_module(_m):
    log.set_sink(lambda line: None)


def teardown_module(_m):
    log.set_sink(None)


def test_bench_numbers_meet_goals():
    m = store_bench.append_bench(50000)[0]  # the append figures only (measure() runs all)
    print("\n" + "\n".join("%-36s %s" % kv for kv in sorted(m.items())))
    assert m["store.record_bytes"] == 24
    assert m["store.program_amplification"] <= 2
    assert m["store.erases_per_record"] <= 0.01  # steady state: the ring full
    assert m["store.erases_per_record_from_blank"] < m["store.erases_per_record"]
    assert m["store.retention_days_512k"] >= 400
    assert m["store.retained_days_measured"] >= 400
    assert 1 <= m["store.day_read_sector_reads"] <= 3
    assert 1 <= m["store.last_day_by_index_sector_reads"] <= 16


def test_400_days_one_meter_with_backfill_and_bounded_reads():
    f = CountingFlash(128)
    st = IntervalStore(FlashLog(f), max_meters=2)
    days = 460
    for i in range(days * 48):
        if i % 97 != 5:
            st.put(0, S0 + i, i, i // 2, 1, "fixed")
    last = S0 + days * 48 - 1
    for i in range(days * 48 - 30 * 48, days * 48, 97):  # a month of late backfill
        if i % 97 == 5:
            assert st.put(0, S0 + i, i, i // 2, 1, "history")
    st = IntervalStore(FlashLog(f), max_meters=2)
    first = st.first_slot(0)
    assert st.last_slot(0) == last
    assert (last - first + 1) / 48 >= 400
    # one day anywhere in the retained range: at most a few sector reads, no full scan
    for day_start in (first + 48 - first % 48, S0 + 200 * 48, last - 47):
        f.reads = 0
        rows = list(st.rows(0, day_start, day_start + 47))
        assert rows and all(day_start <= row[0] < day_start + 48 for row in rows)
        assert f.reads <= 4, f.reads  # 2 sectors of the day + the newest one with backfill
    f.reads = 0
    assert st.get(0, S0 + 300 * 48)[0] == 300 * 48
    assert f.reads <= 2
    # a full-range read streams: Python allocations stay small while 19,000+ rows go by
    tracemalloc.start()
    n = 0
    for _row in st.rows(0):
        n += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == st.count(0) and n > 19000
    assert peak < 16 * 1024, peak
    # retention: nothing newer than what 126 full sectors hold was dropped
    assert st.log.stats["records"] >= st.log.capacity()


def test_several_meters_share_the_region():
    f = NorFlash(16)
    st = IntervalStore(FlashLog(f), max_meters=4)
    for i in range(1000):
        for m in range(4):
            st.put(m, S0 + i, i * 10 + m, m, 1, "fixed")
    st = IntervalStore(FlashLog(f), max_meters=4)
    firsts = [st.first_slot(m) for m in range(4)]
    assert max(firsts) - min(firsts) <= 1  # the oldest sector holds all meters' oldest slots
    for m in range(4):
        rows = list(st.rows(m))
        assert [row[0] for row in rows] == list(range(firsts[m], S0 + 1000))
        assert all(row[1] == (row[0] - S0) * 10 + m for row in rows)
    assert sum(st.count(m) for m in range(4)) >= st.log.capacity()


_MP_SCRIPT = """
import sys, json
from firmware import log
from firmware.hal.norflash import NorFlash
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore
log.level = 30
f = NorFlash(4, path=sys.argv[1])
st = IntervalStore(FlashLog(f), max_meters=2)
if sys.argv[2] == "write":
    for i in range(300):
        st.put(i % 2, 960528 + i // 2, i * 7, i, 1, "fixed", 2 if i % 11 == 0 else 0)
print(json.dumps([list(row) for m in (0, 1) for row in st.rows(m)]))
f.close()
"""


def _micropython(args, tmp_path):
    script = tmp_path / "store_mp.py"
    script.write_text(_MP_SCRIPT)
    env = dict(os.environ, MICROPYPATH=ROOT)
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    out = subprocess.run([mp, str(script)] + args, capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_format_on_both_runtimes(tmp_path):
    path = str(tmp_path / "flash.bin")
    mp_rows = _micropython([path, "write"], tmp_path)
    assert len(mp_rows) == 300
    f = NorFlash(4, path=path)
    st = IntervalStore(FlashLog(f), max_meters=2)
    py_rows = [list(row) for m in (0, 1) for row in st.rows(m)]
    assert py_rows == mp_rows
    assert st.get(0, 960528)[4] == r.FLAG_POWER_DOWN
    st.put(1, 960528 + 500, 1, 2, 1, "history")
    f.close()
    again = _micropython([path, "read"], tmp_path)
    assert again == mp_rows + [[960528 + 500, 1, 2, 1, 3, 0]]
