# Secure-wipe primitives of the factory reset (firmware/app/factory.py, docs/product.md "Factory
# reset"), shared by the ESP32 and host HALs: erase a block device and prove it reads erased, and
# carry the few files a reset keeps (board.json, boot.py, main.py, lib/) across a re-format.
#
# Erase, not overwrite: LittleFS is copy-on-write, so an overwritten or deleted file leaves its
# old blocks (the secret) in place until they are reused; only erasing every block of the
# partition removes them. A block is read back after its erase: a flash that did not erase would
# otherwise keep a secret while the reset reported success.
import os

from firmware.compat import const
from firmware.hal import FlashError

_CHUNK = const(256)  # read-back granule: no 4 KB buffer on a heap that is about to be reset
_FF = b"\xff" * _CHUNK
KEEP_MAX = const(65536)  # bytes of kept files held in RAM across the re-format, at most


def erase_verify(bdev, first=0, n=None, feed=None, markers=()):
    """Erase blocks [first, first + n) of bdev (ioctl 6) and read every byte back as 0xFF; a block
    that does not read erased is erased once more, then FlashError. feed(): called per block (the
    watchdog: the 1.5 MB vfs partition takes seconds to erase). markers: byte strings (a secret
    key's name, a secret): the blocks holding one are erased first, so that a power cut during
    the erase most likely finds them gone already. The number of blocks erased."""
    if n is None:
        n = bdev.ioctl(4, 0) - first
    size = bdev.ioctl(5, 0)
    buf = bytearray(_CHUNK)
    late = bytearray(n)  # 1: no marker seen, erased in the second pass (n bytes, not a list)
    if markers:
        for b in range(first, first + n):
            late[b - first] = not _holds(bdev, b, size, markers)
            if feed is not None:
                feed()
    for second in (0, 1):
        for b in range(first, first + n):
            if late[b - first] != second:
                continue
            for attempt in (0, 1):
                bdev.ioctl(6, b)
                if _reads_erased(bdev, b, size, buf):
                    break
                if attempt:
                    raise FlashError("block %d does not read erased after two erases" % b)
            if feed is not None:
                feed()
    return n


def _holds(bdev, block, size, markers):
    """True if one of the markers is in the block, also across two reads: each read starts the
    longest marker's length before the end of the one before (flash reads are cheap; nothing is
    allocated per read, and 1.5 MB is scanned)."""
    keep = 0
    for m in markers:
        keep = max(keep, min(len(m), _CHUNK) - 1)
    win = bytearray(keep + _CHUNK)
    for off in range(0, size - keep, _CHUNK):
        bdev.readblocks(block, win, off - keep if off >= keep else 0)
        for m in markers:
            if m in win:
                return True
    return False


def _reads_erased(bdev, block, size, buf):
    for off in range(0, size, _CHUNK):
        bdev.readblocks(block, buf, off)
        if buf != _FF:
            return False
    return True


def join(top, name):
    return name if top in ("", ".") else top.rstrip("/") + "/" + name


def _is_dir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return None  # absent


def read_files(top, names, limit=KEEP_MAX):
    """[(relative path, bytes or None for a directory)] of the names under top that exist,
    directories walked; FlashError (before anything is erased) past `limit` bytes in all."""
    out = []
    total = 0
    todo = list(names)
    while todo:
        rel = todo.pop(0)
        path = join(top, rel)
        kind = _is_dir(path)
        if kind is None:
            continue
        if kind:
            out.append((rel, None))
            for entry in os.listdir(path):
                todo.append(rel + "/" + entry)
            continue
        with open(path, "rb") as f:
            data = f.read()
        total += len(data)
        if total > limit:
            raise FlashError("files to keep exceed %d bytes: nothing erased" % limit)
        out.append((rel, data))
    return out


def write_files(top, files):
    """Write back what read_files() returned (parents before children, as read)."""
    for rel, data in files:
        path = join(top, rel)
        if data is None:
            os.mkdir(path)
            continue
        with open(path, "wb") as f:
            f.write(data)


def shred(path):
    """Host only (no raw flash there): overwrite a file with zeros of its length, sync it, delete
    it. True if there was a file. A journalling or copy-on-write host filesystem may still hold
    the old blocks: only the device's partition erase is a guarantee (docs/product.md)."""
    try:
        size = os.stat(path)[6]
    except OSError:
        return False
    zero = bytes(_CHUNK)
    with open(path, "r+b") as f:
        left = size
        while left > 0:
            k = left if left < _CHUNK else _CHUNK
            f.write(zero[:k])
            left -= k
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    os.remove(path)
    return True
