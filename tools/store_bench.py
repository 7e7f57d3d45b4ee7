"""Interval-store costs on the NOR emulator with the production geometry (4 KB sectors).

  python -m tools.store_bench [n_records]

measure(n_records) appends n_records 30-minute records of one meter to a 512 KB region and
returns a flat {"store.<name>": number} map (tools/bench.py merges it into bench/results.json):

store.record_bytes               size of one record on flash
store.bytes_programmed_per_record  all programmed bytes (records + sector headers) / records
store.program_amplification      bytes programmed per record / record size (goal <= 2)
store.erases_per_record          sector erases / records over the whole run (goal <= 0.01)
store.erases_per_record_steady   the same over the second half of the run (the ring is full
                                 there once n_records >= 2 x 21,590)
store.max_erases_per_sector      wear of the most erased sector over the run
store.retention_records_512k     records guaranteed kept in 512 KB (just after a sector drop)
store.retention_days_512k        the same in days of one meter's 30-minute records (goal >= 400)
store.retained_days_measured     days actually readable at the end of the run
store.mount_ms                   mount + index build of the full region (host CPU, this runtime)
store.day_read_sector_reads      4 KB sector reads to stream one retained day (middle of the log)
store.full_read_ms               stream every retained row of the meter (host CPU)
store.last_day_by_index_sector_reads  sector reads for the newest 48 entries by entry number,
                                 after one full rows_by_index pass has left its marks
"""

import sys
import time

from firmware import log
from firmware.hal.norflash import NorFlash
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore
from firmware.store.record import RECORD_SIZE

_SLOT0 = 960528  # 2024-10-15T00:00Z
_N_BLOCKS = 128
_BLOCK = 4096


class _CountingFlash(NorFlash):
    reads = 0

    def readblocks(self, block, buf, offset=0):
        if len(buf) >= self.block_size:
            self.reads += 1
        NorFlash.readblocks(self, block, buf, offset)


def _ms(t0):
    return round((time.perf_counter() - t0) * 1000, 1)


def measure(n_records=50000):
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
            "store.erases_per_record": round(flash.total_erases() / n_records, 5),
            "store.erases_per_record_steady": round(
                (flash.total_erases() - erases_half) / (n_records - half), 5),
            "store.max_erases_per_sector": max(flash.erases),
            "store.retention_records_512k": kept,
            "store.retention_days_512k": round(kept / 48, 1),
            "store.retained_days_measured": round(total / 48, 1),
            "store.mount_ms": mount_ms,
            "store.day_read_sector_reads": day_reads if len(day) == 48 else -1,
            "store.full_read_ms": full_ms,
            "store.last_day_by_index_sector_reads": tail_reads,
        }
    finally:
        log.level = old_level


def main(argv):
    n = int(argv[1]) if len(argv) > 1 else 50000
    for k, v in sorted(measure(n).items()):
        print("%-36s %s" % (k, v))


if __name__ == "__main__":
    main(sys.argv)
