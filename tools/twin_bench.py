"""Link figures of issue 10 from the twin's air model (tools/smartmeter.py AirModel): a 45-day load
profile (2,160 rows) read by the management client (HLS-GMAC, every request and reply protected,
security suite 0) from the terminal's own CosemServer (store on the NOR emulator, default object
table, default max_pdu 512), sans-IO: every datagram of the exchange (AARQ, HLS pass 3/4, the
GET and one GET-Next per block, the RLRQ) at its real size, each sent over the modelled air.

  python -m tools.twin_bench [rows]

Prints a flat JSON map (for `make bench`; not wired into it here):

link.profile_45d_read_s          the read's time on the air: the medium occupied by every datagram
                                 of the exchange, back to back (processing time and back-off not
                                 modelled), one terminal alone on the medium
link.profile_45d_bound_ratio     that time over the pure air-time bound (all payload bytes at
                                 100 kbit/s, no framing, no ACKs)
link.profile_45d_tx_s            the terminal's own transmit time for the read (its reply frames
                                 and its ACKs of the requests): what ARIB T108 counts
link.backlog_45d_airtime_s       the terminal's transmit time for pushing a 45-day backlog: 2,160
                                 DataNotifications (one per slot, protected with the management
                                 keys as push.protect "auto" sends them), each built by the
                                 firmware's own push encoder, at its real size, on the air model
link.backlog_45d_t108_share      that over the 360 s/h ARIB T108 budget (the push rate limit of
                                 6/min spreads it over ~6 h: docs/dlms.md Push)
link.profile_45d_datagrams, link.profile_45d_blocks, link.profile_45d_bytes
"""

import json
import sys

from tools.smartmeter import AirModel

T108_BUDGET_S_PER_H = 360
ROWS_45D = 2160


def _server(rows):
    """The terminal's COSEM server over a store of `rows` consecutive records, with the
    simulation's management keys (tools/deployment.py)."""
    from firmware import timeutil
    from firmware.app.views import MeterView
    from firmware.cosem.profile import default_table
    from firmware.cosem.server import CosemServer
    from firmware.hal import aes
    from firmware.hal.norflash import NorFlash
    from firmware.store import record
    from firmware.store.flashlog import FlashLog
    from firmware.store.intervals import IntervalStore
    from tools import deployment

    t0 = timeutil.t2k_from_fields(2024, 4, 1, 0, 0, 0)
    slot0 = timeutil.slot_of_t2k(t0)
    flog = FlashLog(NorFlash(max(8, rows // 170 + 4)))
    store = IntervalStore(flog, max_meters=1)
    for i in range(rows):
        store.put(0, slot0 + i, 100000 + 7 * i, 2000 + 3 * i, 0x01, record.SOURCE_FIXED, 0)
    view = MeterView(store, 0)
    table = default_table(view, {"profile_entries": flog.capacity()})

    class Clock:
        def now_t2k(self):
            return t0 + rows * 1800

        def set_t2k(self, t):
            pass

        def is_set(self):
            return True

    cfg = {"mgmt_ek": deployment.MGMT_EK, "mgmt_ak": deployment.MGMT_AK}
    return CosemServer(table, Clock(), cfg, aes_ecb=aes.ecb), t0, view


def profile_read_datagrams(rows=ROWS_45D):
    """[(direction, bytes)] of the management client's whole read of `rows` rows, and the
    rows decoded (checked by the caller)."""
    from firmware.cosem.objects import obis
    from tools import deployment
    from tools.dlms_client import PROFILE_LN, DlmsClient

    srv, t0, _view = _server(rows)
    c = DlmsClient(deployment.MGMT_SAP, 1, ek=bytes.fromhex(deployment.MGMT_EK),
                   ak=bytes.fromhex(deployment.MGMT_AK),
                   system_title=bytes.fromhex(deployment.HEADEND_TITLE))
    peer = (b"\xfe\x80" + bytes(14), 4059)
    log = []

    def exchange(wpdu):
        log.append(("down", len(wpdu)))
        r = srv.handle_wpdu(bytes(wpdu), peer)
        if r is None:
            raise RuntimeError("no reply from the server")
        r = bytes(r)
        log.append(("up", len(r)))
        return r

    c.parse_aare(exchange(c.build_aarq()))
    if c.hls_pending:
        c.parse_hls_result(exchange(c.build_hls_reply()))
    req = c.build_get(7, obis(PROFILE_LN), 2, c.range_access(t0, t0 + (rows - 1) * 1800))
    blocks = 0
    while True:
        out = c.feed_get(exchange(req))
        blocks += 1
        done, payload = out
        if done:
            got = c.decode_profile(payload)
            break
        req = payload
    c.parse_rlre(exchange(c.build_rlrq()))
    return log, got, blocks


def push_backlog_sizes(rows=ROWS_45D):
    """Sizes of the WPDUs the firmware's push encoder builds for `rows` slots (protected)."""
    from firmware.cosem import push as cp
    from firmware.cosem.protection import push_protector

    srv, _t0, view = _server(rows)
    protect = push_protector(srv)
    if protect is None:
        raise RuntimeError("no management keys: the pushes would go out plain")
    enc = cp.DataNotificationEncoder(srv, 1, protect, fmt=srv.table.energy)
    sizes = []
    for k, row in enumerate(view.rows(0, 0x7FFFFFFF)):
        sizes.append(len(enc.encode(row, 1, k + 1)))
    if len(sizes) != rows:
        raise RuntimeError("encoded %d pushes, want %d" % (len(sizes), rows))
    return sizes


def measure(rows=ROWS_45D, air=None):
    air = air or AirModel()
    log, got, blocks = profile_read_datagrams(rows)
    if len(got) != rows:
        raise RuntimeError("read %d rows, want %d" % (len(got), rows))
    medium = tx = 0.0
    nbytes = 0
    for direction, n in log:
        _frames, sender_s, acks_s, medium_s = air.datagram(n)
        medium += medium_s
        nbytes += n
        tx += sender_s if direction == "up" else acks_s  # the terminal's own emission
    bound = air.bound_s(nbytes)
    push_tx = 0.0
    for n in push_backlog_sizes(rows):
        push_tx += air.datagram(n)[1]  # the terminal sends; the smart meter only ACKs
    return {
        "link.profile_45d_read_s": round(medium, 2),
        "link.profile_45d_bound_ratio": round(medium / bound, 3),
        "link.profile_45d_tx_s": round(tx, 2),
        "link.backlog_45d_airtime_s": round(push_tx, 2),
        "link.backlog_45d_t108_share": round(push_tx / T108_BUDGET_S_PER_H, 4),
        "link.profile_45d_datagrams": len(log),
        "link.profile_45d_blocks": blocks,
        "link.profile_45d_bytes": nbytes,
    }


def main(argv):
    rows = int(argv[1]) if len(argv) > 1 else ROWS_45D
    print(json.dumps(measure(rows), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
