"""Store measurements that must run under the `micropython` binary (unix port).
tools/store_bench.py starts this script and reads the one JSON line it prints last.

  cd <repo> && MICROPYPATH=.:.frozen micropython -X heapsize=256k tools/store_bench_mp.py \
      recovery IMAGE N_BLOCKS RUNS
  cd <repo> && MICROPYPATH=.:.frozen micropython -X heapsize=2048k tools/store_bench_mp.py \
      lfs N_RECORDS N_BLOCKS

recovery: mount a log image (file-backed NorFlash) the way the terminal does at boot,
  IntervalStore(FlashLog(bdev), max_meters=4) = FlashLog.mount() scan + slot index build, RUNS
  times; prints every run's time (us), the records found, the heap the mounted store keeps, and
  the programs and erases the mounts did (on a cleanly written log: no erase, and one 24-byte
  program per mount, the seal of the head's weak slot, docs/flash-log.md §4).
lfs: the same 24-byte interval records appended the plain-filesystem way on MicroPython's own
  vfs.VfsLfs2 over an in-memory NorFlash (mkfs defaults: readsize=progsize=lookahead=32): per
  record open(..., "ab"), write 24 bytes, close. Prints bytes programmed and erases over the
  appends only (mkfs and mount excluded) and checks the file reads back complete.
"""

import gc
import json
import os
import sys
import time

from firmware import log
from firmware.hal.norflash import NorFlash
from firmware.store import record
from firmware.store.flashlog import FlashLog
from firmware.store.intervals import IntervalStore

_SLOT0 = 960528  # 2024-10-15T00:00Z, as tools/store_bench.py
_METERS = 4  # as the terminal (firmware/app/terminal.py)


def recovery(image, n_blocks, runs):
    # NorFlash(path=) would quietly create a blank device: a wrong path must fail, not time that
    if os.stat(image)[6] != n_blocks * 4096:
        raise SystemExit("%s is not a %d-block image" % (image, n_blocks))
    out = {"runs_us": [], "records": 0, "programs": 0, "erases": 0, "heap_bytes": 0}
    for _ in range(runs):
        flash = NorFlash(n_blocks, path=image)
        gc.collect()
        base = gc.mem_alloc()
        t0 = time.ticks_us()
        st = IntervalStore(FlashLog(flash), max_meters=_METERS)
        dt = time.ticks_diff(time.ticks_us(), t0)
        gc.collect()
        out["heap_bytes"] = max(out["heap_bytes"], gc.mem_alloc() - base)
        out["runs_us"].append(dt)
        out["records"] = st.log.stats["records"]
        out["programs"] += flash.programs
        out["erases"] += flash.total_erases()
        out["last_slot"] = st.last_slot(0)
        st = None
        flash.close()
    return out


def lfs(n_records, n_blocks):
    import vfs

    flash = NorFlash(n_blocks)
    vfs.VfsLfs2.mkfs(flash)
    fs = vfs.VfsLfs2(flash)
    vfs.mount(fs, "/lfsbench")
    try:
        p0, e0, w0 = flash.bytes_programmed, flash.total_erases(), flash.programs
        rec = bytearray(record.RECORD_SIZE)
        t0 = time.ticks_ms()
        for i in range(n_records):
            record.pack_interval(rec, 0, i + 1, 0, _SLOT0 + i, (i * 13) % 1000000000, i % 1000,
                                 0x01, record.SOURCE_FIXED, 0)
            f = open("/lfsbench/intervals.bin", "ab")
            f.write(rec)
            f.close()
        dt = time.ticks_diff(time.ticks_ms(), t0)
        out = {"records": n_records, "bytes_programmed": flash.bytes_programmed - p0,
               "erases": flash.total_erases() - e0, "programs": flash.programs - w0,
               "max_erases_per_block": max(flash.erases), "ms": dt}
        # the file must hold every record, in order: a broken run must not pass as a cheap one
        good = 0
        with open("/lfsbench/intervals.bin", "rb") as f:
            buf = bytearray(record.RECORD_SIZE)
            while f.readinto(buf) == record.RECORD_SIZE:
                if record.is_valid(buf, 0) and record.seq_of(buf, 0) == good + 1:
                    good += 1
        out["read_back"] = good
    finally:
        vfs.umount("/lfsbench")
    return out


def main(argv):
    log.level = log.WARN
    what = argv[1]
    if what == "recovery":
        out = recovery(argv[2], int(argv[3]), int(argv[4]))
    elif what == "lfs":
        out = lfs(int(argv[2]), int(argv[3]))
    else:
        raise SystemExit("usage: store_bench_mp.py recovery IMAGE N_BLOCKS RUNS | "
                         "lfs N_RECORDS N_BLOCKS")
    print(json.dumps(out))


main(sys.argv)
