"""Interval-store costs on the NOR emulator with the production geometry (4 KB sectors).

  python -m tools.store_bench [n_records]

measure(n_records) appends n_records 30-minute records of one meter to a 512 KB region and
returns a flat {"store.<name>": number} map (tools/bench.py merges it into bench/results.json):

store.record_bytes               size of one record on flash
store.bytes_programmed_per_record  all programmed bytes (records + sector headers) / records
store.program_amplification      bytes programmed per record / record size (goal <= 2)
store.erases_per_record          sector erases / records in steady state: over the second half
                                 of the run, where the ring is full once n_records >= 2 x 21,590
                                 (goal <= 0.01; 1/170 by design, docs/flash-log.md)
store.erases_per_record_from_blank  the same over the whole run, starting from blank flash (lower:
                                 the first ring pass erases nothing)
store.max_erases_per_sector      wear of the most erased sector over the run
store.retention_records_512k     records guaranteed kept in 512 KB (just after a sector drop)
store.retention_days_512k        the same in days of one meter's 30-minute records (goal >= 400)
store.retained_days_measured     days actually readable at the end of the run
store.mount_ms                   mount + index build of the full region (host CPU, this runtime)
store.day_read_sector_reads      4 KB sectors read to stream one retained day (middle of the log;
                                 bytes read / 4096 rounded up: sectors are read in chunks)
store.full_read_ms               stream every retained row of the meter (host CPU)
store.last_day_by_index_sector_reads  sector reads for the newest 48 entries by entry number,
                                 after one full rows_by_index pass has left its marks

Under the `micropython` binary (unix port, tools/store_bench_mp.py, MICROPYPATH=.:.frozen):
store.recovery_ms_full_log       boot mount of the full 512 KB log left by the run above (file
                                 image): IntervalStore(FlashLog(bdev), max_meters=4), i.e. the
                                 FlashLog.mount() scan plus the slot index; median of 5 runs
                                 (goal <= 300)
store.recovery_heap_kb           heap the mounted store keeps (256 KB heap; gc.mem_alloc delta)
store.recovery_records           valid records that mount found (the image is a full ring)
store.recovery_programs_per_mount  flash programs per boot mount of that clean log: 1, the
                                 24-byte seal of the head's weak slot (docs/flash-log.md §4); 0
                                 when the head is full
store.lfs_append_bytes_per_record  the same 24-byte records appended with vfs.VfsLfs2 on the NOR
                                 emulator (open "ab", write, close per record): bytes programmed
store.lfs_erases_per_record      and block erases per record, for comparison with the log's
store.lfs_records                records appended in that run (all read back)

Power cuts (host CPU, the harness of host_tests/unit/test_store_powercut.py):
store.powercut_cases             cuts at every program and erase of a 3-day, 3-meter workload on
                                 8 x 512 B sectors, clean and torn (3 seeds), then remount
store.powercut_lost              acknowledged records (put() returned True) that the remount no
                                 longer has, or has with another value, over all cases (must be 0;
                                 a record may be missing only when FlashLog.capacity() newer
                                 records were acknowledged after it)
store.powercut_failed_cases      cases in which any of the harness's checks failed (must be 0)
store.powercut_acked_checked     acknowledged records within the promised retention checked
                                 over all cases
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

from firmware import log
from firmware.hal.norflash import NorFlash
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore
from firmware.store.record import RECORD_SIZE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_UNIT = os.path.join(ROOT, "host_tests", "unit")  # the power-cut harness is reused from there
if _UNIT not in sys.path:
    sys.path.insert(0, _UNIT)
from test_store_powercut import Harness, model_put, newest_by_scan, workload  # noqa: E402

_SLOT0 = 960528  # 2024-10-15T00:00Z
_N_BLOCKS = 128
_BLOCK = 4096
_MP_HELPER = os.path.join("tools", "store_bench_mp.py")


class _CountingFlash(NorFlash):
    """Counts what the store reads, in whole sectors (the log reads a sector in chunks)."""

    nbytes = 0

    @property
    def reads(self):
        return -(-self.nbytes // self.block_size)

    @reads.setter
    def reads(self, v):
        self.nbytes = v * self.block_size

    def readblocks(self, block, buf, offset=0):
        self.nbytes += len(buf)
        NorFlash.readblocks(self, block, buf, offset)


def _ms(t0):
    return round((time.perf_counter() - t0) * 1000, 1)


def measure(n_records=50000, lfs_records=5000, recovery_runs=5, powercut=None):
    """All store.* figures. powercut: keyword arguments of powercut_bench (None = its defaults)."""
    out, flash = append_bench(n_records)
    out.update(recovery_bench(flash, recovery_runs))
    out.update(lfs_bench(lfs_records))
    out.update(powercut_bench(**(powercut or {})))
    return out


def append_bench(n_records):
    """The log's own costs; returns (figures, the flash the run left behind)."""
    old_level = log.level
    log.level = log.WARN
    try:
        flash = _CountingFlash(_N_BLOCKS, block_size=_BLOCK)
        st = IntervalStore(FlashLog(flash), max_meters=1)
        half = n_records // 2
        erases_half = 0
        for i in range(n_records):
            if i == half:
                erases_half = flash.total_erases()
            st.put(0, _SLOT0 + i, (i * 13) % 1000000000, i % 1000, 0x01, "fixed")
        t0 = time.perf_counter()
        st = IntervalStore(FlashLog(flash), max_meters=1)
        mount_ms = _ms(t0)
        first, last = st.first_slot(0), st.last_slot(0)
        mid = first + ((last - first) // 96) * 48
        mid -= mid % 48
        flash.reads = 0
        day = list(st.rows(0, mid, mid + 47))
        day_reads = flash.reads
        t0 = time.perf_counter()
        total = 0
        for _row in st.rows(0):
            total += 1
        full_ms = _ms(t0)
        for _row in st.rows_by_index(0, 1, total):
            pass
        flash.reads = 0
        tail = list(st.rows_by_index(0, total - 47, total))
        tail_reads = flash.reads if len(tail) == 48 else -1
        lg = st.log
        programmed = flash.bytes_programmed
        kept = lg.capacity()
        return {
            "store.record_bytes": RECORD_SIZE,
            "store.bytes_programmed_per_record": round(programmed / n_records, 3),
            "store.program_amplification": round(programmed / n_records / RECORD_SIZE, 4),
            "store.erases_per_record": round(
                (flash.total_erases() - erases_half) / (n_records - half), 5),
            "store.erases_per_record_from_blank": round(flash.total_erases() / n_records, 5),
            "store.max_erases_per_sector": max(flash.erases),
            "store.retention_records_512k": kept,
            "store.retention_days_512k": round(kept / 48, 1),
            "store.retained_days_measured": round(total / 48, 1),
            "store.mount_ms": mount_ms,
            "store.day_read_sector_reads": day_reads if len(day) == 48 else -1,
            "store.full_read_ms": full_ms,
            "store.last_day_by_index_sector_reads": tail_reads,
        }, flash
    finally:
        log.level = old_level


def _run_micropython(args, heap):
    """Run tools/store_bench_mp.py under the micropython binary; returns its JSON result."""
    from tools.deployment import find_micropython

    mp = find_micropython()
    if not mp:
        raise RuntimeError("micropython binary not found")
    r = subprocess.run([mp, "-X", "heapsize=" + heap, _MP_HELPER] + [str(a) for a in args],
                       cwd=ROOT, env=dict(os.environ, MICROPYPATH=".:.frozen"),
                       capture_output=True, text=True, timeout=180)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise RuntimeError("store_bench_mp.py %s failed (rc %d): %s"
                           % (args[0], r.returncode, (r.stderr or r.stdout)[-2000:]))
    return json.loads(lines[-1])


def recovery_bench(flash, runs=5, heap="256k"):
    """Boot mount of a full log under micropython: the image of `flash` (which must hold a full
    ring) goes to a file that a file-backed NorFlash reads in the subprocess."""
    old_level = log.level
    log.level = log.WARN
    try:
        lg = FlashLog(flash)
        lg.mount()
    finally:
        log.level = old_level
    if len(lg.order) < lg.n - 1:
        raise ValueError("log not full: %d of %d sectors hold data" % (len(lg.order), lg.n - 1))
    image = bytearray(flash.size)
    flash.readblocks(0, image)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "meterlog.bin")
        with open(path, "wb") as f:
            f.write(image)
        del image
        res = _run_micropython(["recovery", path, flash.n_blocks, runs], heap)
    # a clean log: the mount erases nothing and programs only the seal of the head's weak slot
    if res["erases"] or res["programs"] > runs:
        raise RuntimeError("%d mounts of a clean full log erased %d sectors, programmed %d times"
                           % (runs, res["erases"], res["programs"]))
    if res["records"] != lg.stats["records"]:
        raise RuntimeError("micropython mount found %d records, CPython %d"
                           % (res["records"], lg.stats["records"]))
    runs_us = sorted(res["runs_us"])
    return {
        "store.recovery_ms_full_log": round(runs_us[len(runs_us) // 2] / 1000, 1),
        "store.recovery_heap_kb": round(res["heap_bytes"] / 1024, 1),
        "store.recovery_records": res["records"],
        "store.recovery_programs_per_mount": round(res["programs"] / runs, 2),
    }


def lfs_bench(n_records=5000, heap="2048k"):
    """Plain-LittleFS appends (vfs.VfsLfs2 on the 512 KB NOR emulator) under micropython."""
    res = _run_micropython(["lfs", n_records, _N_BLOCKS], heap)
    if res["read_back"] != n_records:
        raise RuntimeError("LittleFS file holds %d of %d records" % (res["read_back"], n_records))
    return {
        "store.lfs_append_bytes_per_record": round(res["bytes_programmed"] / n_records, 1),
        "store.lfs_erases_per_record": round(res["erases"] / n_records, 4),
        "store.lfs_records": n_records,
    }


class _LossCountingHarness(Harness):
    """The unit lane's power-cut harness, plus a count of acknowledged records lost: put() calls
    before the cut are recorded, and the store mounted after the power cycle is compared with
    them (the harness's own checks still run, and a failing case is counted, not raised)."""

    def __init__(self, *args):
        Harness.__init__(self, *args)
        self.lost = 0
        self.failed = 0
        self.checked = 0
        self.first_failure = None
        self._opens = -1  # -1: not inside case()

    def case(self, k, tear, seed=1):
        self._opens = 0
        self._model = {}
        self._acks = 0
        self._ack_no = {}  # key -> number of the acknowledgement that wrote its current value
        self._inflight = None
        try:
            return Harness.case(self, k, tear, seed)
        except Exception as e:  # a failed check or a crash: counted, the run goes on
            self.failed += 1
            if self.first_failure is None:
                self.first_failure = "k=%d tear=%s seed=%d: %s: %s" % (
                    k, tear, seed, type(e).__name__, e)
            return 1
        finally:
            self._opens = -1

    def open(self, flash):
        st = Harness.open(self, flash)
        if self._opens < 0:
            return st
        self._opens += 1
        if self._opens == 1:
            self._watch(st)
        elif self._opens == 2:
            self._count_lost(st)
        return st

    def _watch(self, st):
        put = st.put

        def acked_put(*op):
            self._inflight = op
            wrote = put(*op)
            if wrote:
                model_put(self._model, op)
                self._acks += 1
                self._ack_no[(op[0], op[1])] = self._acks
            self._inflight = None
            return wrote

        st.put = acked_put

    def _count_lost(self, st):
        # The log promises the newest capacity() records (FlashLog.capacity()); before the cut
        # every append was acknowledged (the emulated chip fails only at the cut; a blank chip is
        # formatted, so mount skipped no slot), so the newest `cap` acknowledgements must all be
        # there, however few records survived. An older record may be gone; if it is there it
        # must have its acknowledged value.
        cap = st.log.capacity()
        scan = newest_by_scan(st.log)
        infl_key = infl_val = None
        if self._inflight is not None:
            op = self._inflight
            infl_key = (op[0], op[1])
            tmp = dict(self._model)
            if model_put(tmp, op):
                infl_val = tmp[infl_key]
        for key, val in self._model.items():
            got = scan.get(key)
            promised = self._acks - self._ack_no[key] < cap
            if promised:
                self.checked += 1
            if got is None:
                if promised:
                    self.lost += 1
            elif got[1] != val and not (key == infl_key and got[1] == infl_val):
                self.lost += 1


def powercut_bench(days=3, meters=3, n_blocks=8, block_size=512, seeds=(1, 1000, 2000),
                   k_step=1):
    """A cut at every k_step-th program/erase, clean and torn with each seed (the integration
    matrix's scenario by default, about 2,000 cases)."""
    old_level = log.level
    log.level = log.ERROR + 1  # cut after cut: the store's warnings are expected, not news
    try:
        h = _LossCountingHarness(unittest.TestCase(), workload(days, meters=meters), n_blocks,
                                 block_size, meters)
        cases = h.run_all(seeds=seeds, k_step=k_step)
    finally:
        log.level = old_level
    if h.first_failure:
        print("store power-cut: first failed case: %s" % h.first_failure)
    return {
        "store.powercut_cases": cases,
        "store.powercut_lost": h.lost,
        "store.powercut_failed_cases": h.failed,
        "store.powercut_acked_checked": h.checked,
    }


def main(argv):
    n = int(argv[1]) if len(argv) > 1 else 50000
    for k, v in sorted(measure(n).items()):
        print("%-36s %s" % (k, v))


if __name__ == "__main__":
    main(sys.argv)
