# In-memory filesystem for the event log store tests (no tests here): files are bytearrays, a power
# cut can be armed after any number of bytes written (the write stops there, as a torn append on
# a filesystem without LittleFS's all-or-nothing commit), and "wb" truncates at open, as LittleFS
# does once open() returns. Also the helpers that read a whole event log (tests of both runtimes,
# and the scripts the integration tests run under micropython).
from firmware.hal.norflash import PowerCut
from firmware.store.eventlog import EventLog


class MemFile:
    def __init__(self, fs, data, writable):
        self.fs = fs
        self.data = data
        self.writable = writable
        self.pos = 0
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def readinto(self, buf):
        n = min(len(buf), len(self.data) - self.pos)
        if n <= 0:
            return 0
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n

    def seek(self, off):
        self.pos = off

    def write(self, b):
        fs = self.fs
        if fs.fail_writes:
            raise OSError(28)  # ENOSPC
        for x in bytes(b):
            if fs.budget is not None:
                if fs.budget <= 0:
                    fs.dead = True
                    raise PowerCut()
                fs.budget -= 1
            self.data.append(x)
        return len(b)

    def flush(self):
        pass

    def close(self):
        self.closed = True
        self.fs.open_files -= 1


class MemFs:
    def __init__(self):
        self.files = {}
        self.budget = None  # bytes that may still be written before the power cut
        self.dead = False
        self.fail_writes = False
        self.open_files = 0

    def open(self, name, mode):
        if self.dead:
            raise PowerCut()
        if mode == "rb":
            if name not in self.files:
                raise OSError(2)
            data = self.files[name]
        elif mode == "wb":
            data = self.files[name] = bytearray()
        elif mode == "ab":
            data = self.files.setdefault(name, bytearray())
        else:
            raise ValueError(mode)
        self.open_files += 1
        return MemFile(self, data, mode != "rb")

    def fsync(self, f):
        pass

    def power_cycle(self):
        self.budget = None
        self.dead = False


class StepClock:
    def __init__(self, t=None):
        self.t = t

    def now_t2k(self):
        return self.t


def read_all(lg):
    """Every event of a mounted event log, oldest first: (seq, t2k | None, code, detail)."""
    c = lg.cursor()
    out = []
    while True:
        e = lg.read(c)
        if e is None:
            break
        out.append(e)
    lg.close(c)
    return out


def code_details(lg):
    """(code, detail) of every event of a mounted event log, oldest first."""
    return [(e[2], e[3]) for e in read_all(lg)]


def mounted(path, capacity):
    """The event log in the segment files path.0 and path.1 (made by the firmware), mounted to
    be read."""
    lg = EventLog(path, capacity, None, burst=0)
    lg.mount()
    return lg
