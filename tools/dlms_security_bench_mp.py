"""DLMS security suite 0 costs under the `micropython` binary (unix port, cryptolib AES-ECB).
Prints one JSON line:

  cd <repo> && MICROPYPATH=.:.frozen micropython -X heapsize=256k \
      tools/dlms_security_bench_mp.py [RUNS]

dlms.gcm_1kb_ms            protect (auth+enc, glo form) a 1,024-byte APDU, median of RUNS
dlms.gcm_open_1kb_ms       verify then decrypt the same, median
dlms.gcm_key_setup_ms      one key set: H = E_K(0) and the 16-entry GHASH table
dlms.gcm_key_heap_bytes    heap kept by one key set (security.Keys)
dlms.hls_association_ms    the server's side of an HLS-GMAC association: ciphered AARQ (glo-
                           initiateRequest) + pass 3 (verify f(StoC), answer f(CtoS)), median;
                           the client's messages are built before the clock starts
On the ESP32, ECB is mbedTLS (hardware AES) and the GHASH big-int work dominates: scale by the
interpreter speed ratio (docs/dlms.md "Security", "Costs").
"""

import gc
import json
import sys
import time

sys.path.insert(0, "host_tests/unit")

from cosem_secure import STOC, SecClient, make_secure_server  # noqa: E402

from firmware import log  # noqa: E402
from firmware.cosem import security as sec  # noqa: E402
from firmware.hal import aes  # noqa: E402

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
TITLE = b"MMM\x00\x00\x00\x00\x01"


def _ms(t0):
    return time.ticks_diff(time.ticks_us(), t0) / 1000


def _median(xs):
    xs = sorted(xs)
    return round(xs[len(xs) // 2], 3)


def main(runs):
    log.set_sink(lambda line: None)
    gc.collect()
    free0 = gc.mem_free()
    t0 = time.ticks_us()
    keys = sec.Keys(aes.ecb, EK, AK)
    setup_ms = _ms(t0)
    gc.collect()
    key_heap = free0 - gc.mem_free()
    plain = bytes((0xC4,)) + bytes(i & 0xFF for i in range(1023))
    dst = bytearray(1024 + sec.OVERHEAD)
    back = bytearray(1024)
    seal_ms = []
    open_ms = []
    for i in range(runs):
        t0 = time.ticks_us()
        end = sec.seal_into(keys, TITLE, i + 1, sec.SC_AUTH_ENC, plain, dst, 0)
        seal_ms.append(_ms(t0))
        mv = memoryview(dst)[0:end]
        t0 = time.ticks_us()
        f = sec.parse(mv)
        n = sec.open_into(keys, TITLE, mv, f, back, 0)
        open_ms.append(_ms(t0))
        assert n == 1024 and bytes(back) == plain
    srv, _, _, _ = make_secure_server()
    c = SecClient(srv)
    hls_ms = []
    for _ in range(max(3, runs // 4)):
        aarq = c.aarq()
        reply = sec.hls_reply(c.keys, c.title, c.take(), STOC)
        pass3 = c.protect(bytes.fromhex("C301C1000F0000280000FF010109") + bytes((len(reply),))
                          + reply)
        gc.collect()
        t0 = time.ticks_us()
        aare = srv.handle_apdu(aarq, 1)
        r = srv.handle_apdu(pass3, 1)
        hls_ms.append(_ms(t0))
        assert b"\xa2\x03\x02\x01\x00" in aare and r[0] == 0xCF, (aare, r)
        assert srv.association(1).stoc is None
    print(json.dumps({
        "dlms.gcm_1kb_ms": _median(seal_ms),
        "dlms.gcm_open_1kb_ms": _median(open_ms),
        "dlms.gcm_key_setup_ms": round(setup_ms, 3),
        "dlms.gcm_key_heap_bytes": key_heap,
        "dlms.hls_association_ms": _median(hls_ms),
        "runs": runs,
    }))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
