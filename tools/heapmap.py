"""What kind of object holds the heap: parse the block maps the terminal logs with
terminal.heap_log and terminal.heap_map on (micropython.mem_info(1)), and print KB per block type
for each map, and the difference between two of them.

  python -m tools.heapmap terminal.log [FROM_MAP TO_MAP]

A map line is "<offset>: <64 characters>", one character per GC block (four machine words: 32
bytes on the 64-bit unix port, 16 on the ESP32; taken from the offsets). A letter starts an object
of that type (h: other, e.g. tasks, generators and instances; S: str; B: bytes; A: bytearray;
L: list; D: dict; T: tuple; M: module; ...), "=" continues it, "." is free.
"""

import collections
import re
import sys

_LINE = re.compile(r"^([0-9a-f]{8}): (\S+)$")


def maps(log_text):
    """[(title, [(block_offset, chars), ...])] of every map in the log."""
    out = []
    cur = None
    for line in log_text.splitlines():
        m = re.match(r"INFO heap: map (.+):$", line)
        if m:
            cur = (m.group(1), [])
            out.append(cur)
            continue
        m = _LINE.match(line)
        if m and cur is not None:
            cur[1].append((int(m.group(1), 16), m.group(2)))
    return out


def kinds(rows):
    """bytes per object type letter in one map."""
    size = collections.Counter()
    block = (rows[1][0] - rows[0][0]) // len(rows[0][1]) if len(rows) > 1 else 32
    kind = None
    for _off, chars in rows:
        for c in chars:
            if c == "=":
                if kind is not None:
                    size[kind] += block
            elif c == ".":
                kind = None
            else:
                kind = c
                size[kind] += block
    return size


def main(argv):
    text = open(argv[0]).read()
    ms = maps(text)
    for i, (title, rows) in enumerate(ms):
        k = kinds(rows)
        print("%2d %-28s %s" % (i, title, "  ".join("%s %.1f" % (c, n / 1024)
                                                    for c, n in k.most_common(8))))
    if len(argv) >= 3:
        a, b = kinds(ms[int(argv[1])][1]), kinds(ms[int(argv[2])][1])
        print("difference %s -> %s (KB):" % (ms[int(argv[1])][0], ms[int(argv[2])][0]))
        for c in sorted(set(a) | set(b), key=lambda c: -(b[c] - a[c])):
            print("  %s %+.1f" % (c, (b[c] - a[c]) / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
