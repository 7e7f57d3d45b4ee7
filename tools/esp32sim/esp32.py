# Stand-in for the v1.28 esp32 port's `esp32` module on the MicroPython unix port (host side
# only, never frozen): Partition over a flash image file, laid out by a partition-table CSV
# (sim.json "flash": {"image": path, "table": csv path}).
#
# As esp32_partition.c: find(type, subtype, label) returns a list; blocks of 4096 bytes (or the
# block_size given); readblocks(block, buf[, offset]); writeblocks(block, buf) erases the range
# first, writeblocks(block, buf, offset) only programs (NOR: new = old AND data); ioctl 4 block
# count, 5 block size, 6 erase one block, 1-3 nothing. ESP-IDF errors become OSError(-esp_err).
import time

import _sim

_ESP_ERR_INVALID_ARG = 0x102
_ESP_ERR_INVALID_SIZE = 0x104
_SECTOR = 4096
_TYPES = {"app": 0, "data": 1}
_SUBTYPES = {"factory": 0x00, "ota": 0x10, "test": 0x20, "ota_0": 0x10, "ota_1": 0x11,
             "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04, "efuse": 0x05,
             "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
             "littlefs": 0x83}


def _num(text):
    text = text.strip().lower()
    mult = 1
    if text.endswith("k"):
        mult, text = 1024, text[:-1]
    elif text.endswith("m"):
        mult, text = 1024 * 1024, text[:-1]
    return int(text, 16 if text.startswith("0x") else 10) * mult


def _table():
    rows = []
    fl = _sim.cfg().get("flash", {})
    try:
        with open(fl["table"]) as f:
            lines = f.read().split("\n")
    except (KeyError, OSError):
        return rows
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        label, ptype, sub = cols[0], cols[1].lower(), cols[2].lower()
        t = _TYPES[ptype] if ptype in _TYPES else _num(ptype)
        st = _SUBTYPES[sub] if sub in _SUBTYPES else _num(sub)
        rows.append((t, st, _num(cols[3]), _num(cols[4]), label))
    return rows


_image = None


def _flash():
    global _image
    if _image is None:
        _image = open(_sim.cfg()["flash"]["image"], "r+b")
    return _image


def _err(code):
    return OSError(-code)


_erases = 0  # sectors erased by this process (the power-cut hook below counts them)


def _erased_one():
    """sim.json "flash": {"stall_at_erase": N}: the N-th sector erase of this process is the
    last thing the device does - it writes <sim>/stalled and hangs until the host kills it (a
    power cut at that point, e.g. between the factory reset's erase and the re-format)."""
    global _erases
    _erases += 1
    if _erases == _sim.cfg().get("flash", {}).get("stall_at_erase"):
        _sim.write_atomic("stalled", "%d\n" % _erases)
        while True:
            time.sleep(1)


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096, _row=None):
        if _row is not None:  # from find()
            self._init(_row, block_size)
            return
        if isinstance(id, int):
            rows = [r for r in _table() if r[0] == 0]  # the factory app is boot and running
        else:
            rows = [r for r in _table() if r[4] == id and r[0] == 0]
            rows += [r for r in _table() if r[4] == id and r[0] == 1]
        if not rows:
            raise OSError(2)  # ENOENT, as esp32_partition_new(NULL)
        self._init(rows[0], block_size)

    def _init(self, row, block_size):
        if block_size < _SECTOR or block_size % _SECTOR:
            raise ValueError("invalid block size")
        self.type, self.subtype, self.address, self.size, self.label = row
        self.block_size = block_size

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=4096):
        out = []
        for row in _table():
            if row[0] != type or (subtype != 0xFF and row[1] != subtype):
                continue
            if label is not None and row[4] != label:
                continue
            out.append(Partition(row[4], block_size, row))
        return out

    def info(self):
        return (self.type, self.subtype, self.address, self.size, self.label, False)

    def __repr__(self):
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=0>" % (
            self.type, self.subtype, self.address, self.size, self.label)

    def _addr(self, block, offset, n):
        off = block * self.block_size + offset
        if block < 0 or offset < 0 or off + n > self.size:
            raise _err(_ESP_ERR_INVALID_SIZE)
        return self.address + off

    def readblocks(self, block_num, buf, offset=0):
        mv = memoryview(buf)
        f = _flash()
        f.seek(self._addr(block_num, offset, len(mv)))
        f.readinto(mv)

    def _erase(self, addr, n):
        if addr % _SECTOR or n % _SECTOR:
            raise _err(_ESP_ERR_INVALID_ARG)
        f = _flash()
        f.seek(addr)
        ff = b"\xff" * _SECTOR
        for _ in range(n // _SECTOR):
            f.write(ff)
            f.flush()
            _erased_one()

    def writeblocks(self, block_num, buf, offset=None):
        mv = memoryview(buf)
        n = len(mv)
        f = _flash()
        if offset is None:
            addr = self._addr(block_num, 0, n)
            self._erase(addr, n)
            f.seek(addr)
            f.write(mv)  # onto erased flash: AND with 0xFF is the data itself
        else:
            addr = self._addr(block_num, offset, n)
            old = bytearray(n)
            f.seek(addr)
            f.readinto(old)
            for i in range(n):
                old[i] &= mv[i]
            f.seek(addr)
            f.write(old)
        f.flush()

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):  # init, deinit, sync
            return 0
        if cmd == 4:
            return self.size // self.block_size
        if cmd == 5:
            return self.block_size
        if cmd == 6:
            self._erase(self._addr(arg, 0, self.block_size), self.block_size)
            return 0
        return None

    def set_boot(self):
        raise OSError(-_ESP_ERR_INVALID_ARG)

    def get_next_update(self):
        raise OSError(2)
