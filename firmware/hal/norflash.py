# NOR-flash emulator: the block device the host terminal, the tests and the demo use.
#
# Same protocol as esp32.Partition: readblocks(block, buf, offset=0), writeblocks(block, buf,
# offset) programs (bits only go 1 -> 0: new = old AND data), writeblocks(block, buf) without an
# offset erases first, ioctl(4) block count, ioctl(5) block size, ioctl(6, block) erase.
#
# Test hooks: counters (bytes programmed, erases per block, ops), a power cut at the N-th
# program/erase (`cut_after_ops`), optionally torn (a seeded random prefix of that op lands), weak
# bits (`weak`: the bits a cut program left unfinished settle to their intended value at a later
# power-up), and bit damage (`corrupt`). With `path` the contents live in a file (write-through,
# nothing cached), so a host terminal keeps its data across restarts without holding the whole
# region in RAM.
import os


class PowerCut(BaseException):
    """Raised by the emulator at the armed operation and by every operation after it.
    A BaseException: firmware code that survives ordinary errors (`except Exception`) must not
    survive a power cut, which stops the CPU."""


_EINVAL = 22
_CHUNK = 64  # bytes per read-modify-write step (preallocated: no heap churn per program)
_FF = b"\xff" * _CHUNK


class NorFlash:
    def __init__(self, n_blocks, block_size=4096, path=None, cut_after_ops=None, tear=False,
                 seed=1, weak=0):
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.size = n_blocks * block_size
        self.path = path
        self.bytes_programmed = 0
        self.programs = 0
        self.erases = [0] * n_blocks
        self.ops = 0  # programs + erases since creation (what cut_after_ops counts)
        self.cut_after_ops = None
        self.tear = False
        self.dead = False
        self._rng = 1
        self.weak = 0
        self.power_ups = 0  # power_cycle() calls since creation
        self._weak = []  # [power-up at which they settle, address, intended bytes] per cut program
        self.arm(cut_after_ops, tear, seed, weak)
        self._chunk = bytearray(_CHUNK)
        self._file = None
        self._mem = None
        if path is None:
            self._mem = bytearray(self.size)
            self._mv = memoryview(self._mem)
            for a in range(0, self.size, _CHUNK):
                k = min(_CHUNK, self.size - a)
                self._mv[a:a + k] = _FF[:k]
        else:
            self._open_file(path)

    # --- file backing -------------------------------------------------------------------
    def _open_file(self, path):
        try:
            st = os.stat(path)
            size = st[6]
        except OSError:
            size = -1
        if size != self.size:
            with open(path, "wb") as f:  # new (or wrong-sized) backing: a fully erased device
                for a in range(0, self.size, _CHUNK):
                    f.write(_FF[:min(_CHUNK, self.size - a)])
        self._file = open(path, "r+b")

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read(self, addr, mv):
        if self._mem is not None:
            mv[:] = self._mv[addr:addr + len(mv)]
        else:
            self._file.seek(addr)
            self._file.readinto(mv)

    def _write(self, addr, data):
        if self._mem is not None:
            self._mv[addr:addr + len(data)] = data
        else:
            self._file.seek(addr)
            self._file.write(data)
            self._file.flush()

    # --- fault injection ----------------------------------------------------------------
    def arm(self, cut_after_ops=None, tear=False, seed=1, weak=0):
        """Cut power at op number `cut_after_ops` counted from now (1 = the next op).

        weak=N (N >= 1): a program cut by the power (clean or torn) leaves its unfinished bits
        weak: they read as they are now, and at the N-th power-up after the cut they settle to
        the value the program was writing (N=2: after the reboot that followed the cut, at the
        next one). Models NOR cells left partly programmed, which read differently over time;
        the worst case (every unfinished bit settles) is the one that can make a torn record
        valid later. An erase of the block forgets them."""
        self.cut_after_ops = None if cut_after_ops is None else self.ops + cut_after_ops
        self.tear = tear
        self.weak = weak
        self._rng = (seed & 0x7FFFFFFF) or 1

    def power_cycle(self):
        """Power back on: the device works again and no cut is armed; weak bits due at this
        power-up settle (ANDed with what their program was writing)."""
        self.dead = False
        self.cut_after_ops = None
        self.power_ups += 1
        keep = []
        for w in self._weak:
            if w[0] > self.power_ups:
                keep.append(w)
                continue
            addr, data = w[1], w[2]
            cur = bytearray(len(data))
            self._read(addr, memoryview(cur))
            for i in range(len(data)):
                cur[i] &= data[i]
            self._write(addr, cur)
        self._weak = keep

    def _forget_weak(self, addr, n):
        """An erase of [addr, addr + n) resets the cells: their pending weak bits are gone."""
        self._weak = [w for w in self._weak
                      if w[1] + len(w[2]) <= addr or w[1] >= addr + n]

    def _rand(self, n):
        # xorshift32, masked to 30 bits so it stays a small int on the ESP32 as well
        x = self._rng
        x ^= (x << 13) & 0x3FFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0x3FFFFFFF
        self._rng = x or 1
        return x % n

    def _check_alive(self):
        if self.dead:
            raise PowerCut("device is off")

    def _next_op_cuts(self):
        self.ops += 1
        if self.cut_after_ops is not None and self.ops >= self.cut_after_ops:
            self.dead = True
            return True
        return False

    def corrupt(self, block, offset, xor_mask):
        """Flip bits of one byte (damage, not a program: it may set bits). Not counted."""
        addr = block * self.block_size + offset
        b = bytearray(1)
        self._read(addr, memoryview(b))
        b[0] ^= xor_mask
        self._write(addr, b)

    # --- block device protocol ----------------------------------------------------------
    def _addr(self, block, offset, n):
        if block < 0 or block >= self.n_blocks or offset < 0 or offset + n > self.block_size:
            raise OSError(_EINVAL)
        return block * self.block_size + offset

    def readblocks(self, block, buf, offset=0):
        self._check_alive()
        mv = memoryview(buf)
        n = len(mv)
        # multi-block reads are allowed from offset 0, as on esp32.Partition
        if offset == 0 and n > self.block_size:
            if block < 0 or (block * self.block_size + n) > self.size:
                raise OSError(_EINVAL)
            self._read(block * self.block_size, mv)
            return
        self._read(self._addr(block, offset, n), mv)

    def writeblocks(self, block, buf, offset=None):
        self._check_alive()
        if offset is None:  # esp32.Partition: no offset = erase then program the whole block
            self.erase(block)
            offset = 0
        mv = memoryview(buf)
        n = len(mv)
        addr = self._addr(block, offset, n)
        cut = self._next_op_cuts()
        if cut and self.weak:  # whatever this program does not finish may settle later
            self._weak.append([self.power_ups + self.weak, addr, bytes(mv)])
        if cut and not self.tear:
            raise PowerCut("program %d@%d not done" % (block, offset))
        keep = n
        if cut:
            keep = self._rand(n + 1)  # bytes fully programmed; the next one only partly
        partial = self._rand(256) if cut and keep < n else None
        done = keep + (partial is not None)
        chunk = memoryview(self._chunk)
        pos = 0
        while pos < done:  # read-modify-write: bits only go 1 -> 0
            k = min(_CHUNK, done - pos)
            self._read(addr + pos, chunk[:k])
            for i in range(k):
                j = pos + i
                if j < keep:
                    self._chunk[i] &= mv[j]
                else:
                    self._chunk[i] &= mv[j] | partial
            self._write(addr + pos, chunk[:k])
            pos += k
        keep = done
        self.programs += 1
        self.bytes_programmed += keep
        if cut:
            raise PowerCut("program %d@%d torn after %d of %d bytes" % (block, offset, keep, n))

    def erase(self, block):
        self._check_alive()
        addr = self._addr(block, 0, self.block_size)
        cut = self._next_op_cuts()
        if cut and not self.tear:
            raise PowerCut("erase %d not done" % block)
        n = self.block_size
        if cut:
            n = self._rand(self.block_size)  # interrupted: only a prefix reads erased
        pos = 0
        while pos < n:
            k = min(_CHUNK, n - pos)
            self._write(addr + pos, _FF[:k] if k < _CHUNK else _FF)
            pos += k
        if self._weak:
            self._forget_weak(addr, n)
        self.erases[block] += 1
        if cut:
            raise PowerCut("erase %d torn after %d bytes" % (block, n))

    def ioctl(self, op, arg):
        if op == 4:
            return self.n_blocks
        if op == 5:
            return self.block_size
        if op == 6:
            self.erase(arg)
            return 0
        if op in (1, 2, 3):  # init, deinit, sync: nothing to do
            return 0
        return None

    def total_erases(self):
        return sum(self.erases)
