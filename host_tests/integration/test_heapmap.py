"""tools/heapmap: block maps from the terminal's log turned into bytes per object type."""

from tools import heapmap

LOG = """INFO heap: map after x:
mem: total=1, current=1, peak=1
GC memory layout; from 7ff648360800:
00000000: MDSh=hhL..h===
00000800: =A==..........
INFO heap: map peak y:
GC memory layout; from 7ff648360800:
00000000: MDSh=hhL..h===
00000800: =A==..h=h=h===
"""


def test_bytes_per_type_and_the_difference():
    ms = heapmap.maps(LOG)
    assert [t for t, _rows in ms] == ["after x", "peak y"]
    block = 0x800 // 14  # offsets step 0x800 per line of 14 characters in this small map
    a = heapmap.kinds(ms[0][1])
    assert a["h"] == (1 + 1 + 1 + 1 + 1 + 3 + 1) * block  # h=, h, h, h===, then "=" on line 2
    assert a["A"] == 3 * block and a["L"] == 1 * block and a["M"] == 1 * block
    b = heapmap.kinds(ms[1][1])
    assert b["h"] - a["h"] == 8 * block  # h= h= h===
