# Append-only ring of 24-byte records over raw NOR flash (format and recovery: docs/flash-log.md).
#
# One head sector takes appends; the sector after it is always erased (the spare) except in the
# short window while a new head is being opened. Power may fail at any program or erase; mount()
# finds the head by scanning and finishes whatever the cut interrupted. A record slot is programmed
# once, except that mount() seals the head's tail: it programs every slot after the head's last
# valid record, up to and including the slot after the last programmed one, to all zeros (a
# tombstone), so that no record a cut left unfinished can settle into a valid one later.
from firmware import log
from firmware.compat import const
from firmware.store import record
from firmware.store.record import HEADER_SIZE, RECORD_SIZE

_TRIES = const(3)  # program + read-back attempts per append
_SEQ_MAX = const(0xFFFFFFFE)
# Records read per readblocks: sectors are read in chunks into one 768-byte buffer rather than
# whole into a 4 KB one (docs/memory.md); a 4 KB sector takes 6 reads.
CHUNK = const(32)


class LogError(ValueError):
    pass


class FlashLog:
    def __init__(self, bdev, first_block=0, n_blocks=None, tag="flashlog"):
        self.bdev = bdev
        self.tag = tag
        total = bdev.ioctl(4, 0)
        self.block_size = bdev.ioctl(5, 0)
        if n_blocks is None:
            n_blocks = total - first_block
        if first_block < 0 or n_blocks < 3 or first_block + n_blocks > total:
            raise LogError("region %d+%d does not fit a %d-block device (3 blocks minimum)"
                           % (first_block, n_blocks, total))
        self.slots = (self.block_size - HEADER_SIZE) // RECORD_SIZE
        if self.slots < 2:
            raise LogError("block size %d too small" % self.block_size)
        self.first = first_block
        self.n = n_blocks
        self.chunk = bytearray(CHUNK * RECORD_SIZE)  # the one read buffer (between yields only)
        self._tail = self.block_size - HEADER_SIZE - self.slots * RECORD_SIZE  # bytes after slots
        self._rb = bytearray(RECORD_SIZE)  # read-back of the record just programmed
        self._hdr = bytearray(HEADER_SIZE)
        # slots consumed (programmed or torn) per sector: 170 at most for 4 KB sectors, so one
        # byte each (a list costs a pointer each)
        self._used = bytearray(n_blocks) if self.slots < 256 else [0] * n_blocks
        self._gen = [0] * n_blocks  # header generation; 0 = none, -1 = bad
        self._blank = bytearray(n_blocks)  # 1 = known to read all 0xFF
        self.order = []  # sectors holding data, oldest first, ending with the head
        self.head = 0
        self.next_seq = 1
        self.max_gen = 0
        self.last_sector = -1  # sector of the last appended record
        self.drop_listeners = []  # fn(sector), called before a sector holding data is erased
        self.mounted = False
        self.stats = {"bad_records": 0, "bad_headers": 0, "recovery_erases": 0,
                      "formatted": 0, "rewrites": 0, "records": 0,
                      "tombstones": 0, "sealed": 0, "torn_sealed": 0}

    # --- reading ------------------------------------------------------------------------
    def read(self, sector, first, count):
        """Read record slots [first, first + count) of a sector (count <= CHUNK) into
        self.chunk and return it: slot first + j is at offset j * RECORD_SIZE."""
        n = count * RECORD_SIZE
        self.bdev.readblocks(self.first + sector, memoryview(self.chunk)[:n],
                             HEADER_SIZE + first * RECORD_SIZE)
        return self.chunk

    def _tail_erased(self, sector):
        """The bytes after the last record slot (none with 4 KB sectors) read all 0xFF."""
        t = self._tail
        while t > 0:
            k = min(t, len(self.chunk))
            off = self.block_size - t
            self.bdev.readblocks(self.first + sector, memoryview(self.chunk)[:k], off)
            if not record.is_blank(self.chunk, 0, k):
                return False
            t -= k
        return True

    def used(self, sector):
        return self._used[sector]

    def scan(self, visit):
        """visit(sector, buf, off) for every valid record, oldest sector first (buf is the
        chunk buffer: valid during the call only)."""
        for s in list(self.order):
            n = self._used[s]
            i = 0
            while i < n:
                k = min(CHUNK, n - i)
                buf = self.read(s, i, k)
                for j in range(k):
                    off = j * RECORD_SIZE
                    if record.is_valid(buf, off):
                        visit(s, buf, off)
                i += k

    def capacity(self):
        """Slots always retained: every sector but the spare and the freshly opened head. Each
        mount seals one of them (docs/flash-log.md §7), so records = this minus mounts since."""
        return (self.n - 2) * self.slots

    # --- mount --------------------------------------------------------------------------
    def mount(self, visit=None):
        """Scan the region, recover the head, make sure the spare is erased. Returns stats.
        visit(sector, buf, off) is called for every valid record (physical order)."""
        st = self.stats
        self.max_gen = 0
        max_seq = 0
        seq_sector = -1
        counts = [0] * self.n
        hdr = self._hdr
        for s in range(self.n):
            self.bdev.readblocks(self.first + s, hdr, 0)
            gen = record.header_generation(hdr, 0)
            last = -1
            bad = 0
            dead = 0
            i = 0
            while i < self.slots:  # the record slots, a chunk at a time
                k = min(CHUNK, self.slots - i)
                buf = self.read(s, i, k)
                for j in range(k):
                    off = j * RECORD_SIZE
                    if record.is_blank(buf, off):
                        continue
                    last = i + j
                    if not record.is_valid(buf, off):
                        if record.is_tombstone(buf, off):
                            dead += 1  # sealed by an earlier mount: expected, not logged
                        else:
                            bad += 1
                        continue
                    counts[s] += 1
                    seq = record.seq_of(buf, off)
                    if seq > max_seq:
                        max_seq = seq
                        seq_sector = s
                    if visit is not None:
                        visit(s, buf, off)
                i += k
            if gen is None and last < 0 and self._tail_erased(s):
                self._blank[s] = 1  # reads all 0xFF: nothing to erase before use
                self._gen[s] = 0
                self._used[s] = 0
                continue
            self._blank[s] = 0
            if gen is None:
                gen = 0
            elif gen < 0:
                st["bad_headers"] += 1
                log.warn(self.tag, "sector %d: bad header" % s)
            elif gen > self.max_gen:
                self.max_gen = gen
            self._gen[s] = gen
            self._used[s] = last + 1
            st["tombstones"] += dead
            if bad:
                st["bad_records"] += bad
                log.warn(self.tag, "sector %d: %d bad record slot(s) skipped" % (s, bad))
        st["records"] = sum(counts)
        gen_sector = -1
        for s in range(self.n):
            if self._gen[s] > 0 and self._gen[s] == self.max_gen:
                gen_sector = s
        if seq_sector < 0 and gen_sector < 0:
            self._format()
        else:
            head = seq_sector if seq_sector >= 0 else gen_sector
            nxt = (head + 1) % self.n
            if (gen_sector == nxt and counts[nxt] == 0
                    and self._gen[nxt] > self._gen[head]):
                head = nxt  # power cut right after a new head was opened
            self.head = head
            self._seal_tail(head)
            # Safe because of the seal: the only records that may carry a sequence number above
            # max_seq are the ones a cut left unfinished in the head's tail, all zeros now.
            self.next_seq = max_seq + 1
            self.order = []
            for k in range(2, self.n + 1):
                s = (head + k) % self.n
                if counts[s] or self._gen[s] > 0:
                    self.order.append(s)
            spare = (head + 1) % self.n
            if not self._blank[spare]:
                if counts[spare] or self._gen[spare] > 0:
                    self.order.insert(0, spare)  # so drop listeners forget what visit() saw
                st["recovery_erases"] += 1
                log.info(self.tag, "sector %d after the head not erased: erasing" % spare)
                self._drop(spare)
            elif self._used[head] >= self.slots:
                # The next append opens the spare. A header program cut before any bit changed
                # visibly can leave weak bits there: erase rather than program over them.
                st["recovery_erases"] += 1
                self._erase(spare)
        self.mounted = True
        log.info(self.tag, "mounted: %d records, head sector %d, next seq %d"
                 % (st["records"], self.head, self.next_seq))
        return st

    def _seal_tail(self, s):
        """Program to zeros every slot of sector s after its last valid record, up to and
        including the slot after the last programmed one (docs/flash-log.md §4), and count them
        as used. The last one may have been under program when power failed with no bit visibly
        changed (weak bits), the others are torn records; either could settle into a valid record
        carrying a sequence number the log hands out again. A cut while sealing leaves the same
        situation one slot further on, and the next mount seals it again. Reads slot by slot
        through the 24-byte read-back buffer, from the end: usually the weak slot, one tombstone
        of the previous mount and the last valid record (3 reads, 1 program)."""
        end = self._used[s]
        if end < self.slots:
            end += 1  # the weak slot
        rb = self._rb
        i = end - 1
        while i >= 0:
            off = HEADER_SIZE + i * RECORD_SIZE
            self.bdev.readblocks(self.first + s, rb, off)
            if record.is_valid(rb, 0):
                break
            if not record.is_tombstone(rb, 0):
                if not record.is_blank(rb, 0):
                    self.stats["torn_sealed"] += 1  # a cut left a record half programmed
                self._seal(s, off)
            i -= 1
        self._used[s] = end

    def _seal(self, s, off):
        rb = self._rb
        for _ in range(_TRIES):
            for k in range(RECORD_SIZE):
                rb[k] = 0
            self.bdev.writeblocks(self.first + s, rb, off)
            self.bdev.readblocks(self.first + s, rb, off)
            if record.is_tombstone(rb, 0):
                self.stats["sealed"] += 1
                return
        # A cell that will not program: nothing more to do without erasing live data. The slot
        # stays bad (reported at every mount) and could, in theory, still settle.
        log.warn(self.tag, "sector %d offset %d: seal did not program" % (s, off))

    def _format(self):
        log.info(self.tag, "no log found: formatting %d sectors" % self.n)
        self.stats["formatted"] += 1
        self.order = []
        for s in range(self.n):
            if not self._blank[s]:
                self._erase(s)
        self.max_gen = 0
        self.next_seq = 1
        self.head = self.n - 1  # so that the first open is sector 0
        self._used[self.head] = self.slots
        self._gen[self.head] = 0

    # --- writing ------------------------------------------------------------------------
    def _erase(self, s):
        self._blank[s] = 0  # unknown until the erase has completed
        self.bdev.ioctl(6, self.first + s)
        self._blank[s] = 1
        self._used[s] = 0
        self._gen[s] = 0

    def _drop(self, s):
        if s in self.order:
            for fn in self.drop_listeners:
                fn(s)
            self.order.remove(s)
        self._erase(s)

    def _open_next(self):
        """Commit a header in the spare (the new head), then erase the sector after it."""
        for _ in range(self.n):
            new = (self.head + 1) % self.n
            if not self._blank[new]:
                self._drop(new)
            gen = self.max_gen + 1
            record.pack_header(self._hdr, 0, gen)
            self._blank[new] = 0
            self._gen[new] = -1
            self._used[new] = 0
            self.max_gen = gen
            self.head = new
            self.bdev.writeblocks(self.first + new, self._hdr, 0)
            rb = memoryview(self._rb)[:HEADER_SIZE]
            self.bdev.readblocks(self.first + new, rb, 0)
            ok = record.header_generation(rb, 0) == gen
            nxt = (new + 1) % self.n
            if not self._blank[nxt]:
                self._drop(nxt)  # the oldest data goes; one erased sector exists again
            if ok:
                self._gen[new] = gen
                self.order.append(new)
                return
            log.warn(self.tag, "sector %d: header did not program; skipping it" % new)
            self._used[new] = self.slots
        raise LogError("no sector accepts a header")

    def append(self, rec):
        """Stamp the next sequence number into rec (24-byte bytearray, CRC recomputed), program
        it and verify it; returns the sequence number. The slot is consumed before programming so
        a torn record is never programmed again."""
        for _ in range(_TRIES):
            if self._gen[self.head] <= 0 or self._used[self.head] >= self.slots:
                self._open_next()
            s = self.head
            i = self._used[s]
            self._used[s] = i + 1
            seq = self.next_seq
            if seq > _SEQ_MAX:
                raise LogError("sequence numbers exhausted")
            self.next_seq = seq + 1
            record.set_seq(rec, 0, seq)
            off = HEADER_SIZE + i * RECORD_SIZE
            self.bdev.writeblocks(self.first + s, rec, off)
            self.bdev.readblocks(self.first + s, self._rb, off)
            if self._rb == rec:
                self.last_sector = s
                return seq
            self.stats["rewrites"] += 1
            log.warn(self.tag, "sector %d slot %d did not program: writing again" % (s, i))
        raise LogError("record did not program after %d tries" % _TRIES)
