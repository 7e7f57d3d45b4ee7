"""Integration fault matrix (issue 10 done-when): the firmware's own RadioSession and driver on
CPython, over a real pty (the host HAL's PtyUart), against the J11 emulator in both modes (HAN and
B-route) and the SKSTACK emulator in both dialects (single-hop and DSE).

1. Both J11 modes (and both SKSTACK dialects) join, exchange datagrams both ways with the smart
   meter on the air side, survive a link-down notification and rejoin from the cache (no scan).
2. For every fault knob of each emulator, one case: the fault is applied at a seeded point (at a
   seeded command of the join, or while ready before a seeded one of the queued sends) and the
   case shows: the session returns to ready; every datagram the application queued is delivered
   to the meter exactly once (the sender retries a False like firmware/app does); the meter's
   datagram reaches recv(); the number of commands the driver wrote is below an explicit bound.
3. Bad credentials latch (no join attempt for a while, RADIO_AUTH_FAILED once, the right password
   joins); PANA re-authentication closes the send gate and opens it again (no send lost), a
   failed one is a full reopen; the T108 limit (bulk refused at the reserve, replies until the
   module refuses, resumes when the limit is off).

Each case appends a row to MATRIX; with FM_TABLE=path set, the table is written there (the
report's matrix table)."""

import asyncio
import json
import os
import random
import time
import zlib

import pytest
from radio_rig import MP, PASSWORD, PORT, SLOW_CMD, SM_IP6, Rig, spawn_micropython

from firmware import events as ev
from firmware.radio import link
from firmware.radio.session import DOWN_LINK, DOWN_REAUTH, ST_AUTH_FAILED, ST_REAUTH

MATRIX = []

# the join each family writes, in order (scan included: no sm_mac is configured)
JOIN_SEQ = {
    "han": [0x00D9, 0x006B, 0x005F, 0x0051, 0x005F, 0x000A, 0x002C, 0x003A, 0x0005],
    "b": [0x00D9, 0x006B, 0x005F, 0x0051, 0x005F, 0x0054, 0x0053, 0x0005, 0x0056],
    "sk": ["SKRESET", "SKSREG", "ROPT", "SKVER", "SKSREG", "SKSCAN", "SKSETPWD", "SKSETRBID",
           "SKSREG", "SKSREG", "SKLL64", "SKJOIN", "SKTABLE", "SKUDPPORT"],
    "dse": ["SKRESET", "SKSREG", "ROPT", "SKSREG", "SKVER", "SKSREG", "SKSCAN", "SKSETPWD",
            "SKSETRBID", "SKSREG", "SKSREG", "SKLL64", "SKJOIN", "SKTABLE", "SKUDPPORT"],
}
# a rejoin from the cache: the join without the scan (and its settings / pairing ID)
REJOIN_LEN = {"han": 7, "b": 7, "sk": 12, "dse": 13}
N_PAYLOADS = 6


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    path = os.environ.get("FM_TABLE")
    if path and MATRIX:
        with open(path, "w") as f:
            f.write("| family | knob | phase | outcome | commands (bound) | s |\n")
            f.write("|---|---|---|---|---|---|\n")
            for fam, knob, phase, outcome, writes, bound, secs in MATRIX:
                # bound None: the case asserts its counts itself (e.g. none while latched)
                f.write("| %s | %s | %s | %s | %d (%s) | %.2f |\n" % (
                    fam, knob, phase, outcome, writes, "-" if bound is None else bound, secs))


def run(coro):
    asyncio.run(coro)


def _rng(name):
    return random.Random(zlib.crc32(name.encode()))


def _payloads(rng, tag):
    return [("%s-%d:" % (tag, i)).encode() + bytes(rng.randrange(256)
                                                   for _ in range(rng.randint(1, 400)))
            for i in range(N_PAYLOADS)]


# ---------------------------------------------------------------------------------------------
# 1. both J11 modes (and both SKSTACK dialects): join, both ways, link down, rejoin from cache

def _link_down(r, status=3):
    if r.j11:
        r.emu.set_faults(disconnect=status)
    else:
        r.emu.peer_end()  # EVENT 26


@pytest.mark.timeout(30)
@pytest.mark.parametrize("family", ["han", "b", "sk", "dse"])
def test_join_both_ways_link_down_rejoin_from_cache(family):
    async def body():
        async with Rig(family) as r:
            await r.ready()
            assert r.cmds() == JOIN_SEQ[family]
            if family == "b":
                b = dict((c, d) for c, d in r.emu.requests)
                assert b[0x0051][5:14] == b"\x01" + b"CCDDEEFF"  # pairing ID: last 8 of the ID
                assert b[0x005F][0] == 5  # B-route is mode 5
            payloads = [b"up-%d" % i for i in range(3)]
            assert await r.send_all(payloads) == 0
            assert all(n == 1 for n in (await r.delivered(payloads)).values())
            src, sport, dport, got = await r.peer_to_terminal(b"meter-request")
            assert (src, sport, dport) == (SM_IP6, r.sm.getsockname()[1], PORT)
            for status in (3, 4):  # MAC and PANA disconnected (SKSTACK: EVENT 26 twice)
                _link_down(r, status)
                want = status - 1
                await r.until(lambda: r.session.stats["joins"] == want, what="rejoin")  # noqa: B023
            assert r.scans() == 1  # the rejoins used the cached peer
            assert r.session.stats["disconnects"] == 2
            downs = [d for c, d in r.events if c == ev.LINK_DOWN]
            assert downs == [DOWN_LINK, DOWN_LINK]
            ups = [d for c, d in r.events if c == ev.LINK_UP]
            assert ups == [4, 4, 4]
            more = [b"after-%d" % i for i in range(3)]
            await r.send_all(more)
            assert all(n == 1 for n in (await r.delivered(more)).values())
            await r.peer_to_terminal(b"meter-again")
            # two rejoins without a scan: the join minus scan, each
            assert r.uart.writes == len(JOIN_SEQ[family]) + 2 * REJOIN_LEN[family] + 6

    run(body())


# ---------------------------------------------------------------------------------------------
# 2. every fault knob x family

class Case:
    def __init__(self, knob, families, faults, phases=("join", "ready"), hold=None, restore=None,
                 before=None, down=False, extra=0, joins=2, may_dup=False, cfg=None, emu=None,
                 consumed=None, bit=None):
        """faults: what set_faults() gets at the seeded point; hold: seconds after which
        `restore` is set (a boolean fault switched off again); before: the join command the
        fault must precede to bite (None: any point of the join); down: in the ready phase also
        drop the link so the fault meets a rejoin; joins / extra: the command bound is
        joins x the family's join + the sends + extra; may_dup: a lost transmit response
        (the datagram went, the module's answer did not) may make the sender's retry a
        duplicate; consumed: the counter knob that must have been used (the fault did bite);
        bit(rig): the same for a fault that is no counter."""
        self.knob = knob
        self.families = families
        self.faults = faults
        self.phases = phases
        self.hold = hold
        self.restore = restore
        self.before = before
        self.down = down
        self.extra = extra
        self.joins = joins
        self.may_dup = may_dup
        self.cfg = cfg
        self.emu = emu
        self.consumed = consumed
        self.bit = bit


J11 = ("han", "b")
SK = ("sk", "dse")

CASES = [
    # -- J11 emulator (docs/j11.md "Faults") --
    Case("bad_header_checksum", J11, dict(bad_header_checksum=2), may_dup=True, extra=4,
         consumed="bad_header_checksum"),
    Case("bad_data_checksum", J11, dict(bad_data_checksum=2), may_dup=True, extra=4,
         consumed="bad_data_checksum"),
    Case("garbage", J11, dict(garbage=6), joins=1, extra=2, consumed="garbage"),
    Case("split_writes", J11, dict(split_writes=True), hold=0.4,
         restore=dict(split_writes=False), joins=1, extra=2),
    Case("merge_writes", J11, dict(merge_writes=3), joins=1, extra=2, consumed="merge_writes"),
    Case("drop_responses", J11, dict(drop_responses=1), may_dup=True, extra=4,
         consumed="drop_responses"),
    Case("drop_notifications", J11, dict(drop_notifications=1), extra=4),
    Case("mute", J11, dict(mute=True), hold=0.4, restore=dict(mute=False), joins=4, extra=12),
    Case("truncate_requests", J11, dict(truncate_requests=1), joins=1, extra=3,
         consumed="truncate_requests", cfg=SLOW_CMD),
    Case("tx_no_ack", J11, dict(tx_no_ack=3), joins=1, extra=4, consumed="tx_no_ack"),
    Case("pana_result_3", J11, dict(pana_result=3, pana_result_count=2), before="pana",
         down=True, joins=4, extra=2, consumed="pana_result_count"),
    Case("silent_scans", J11, dict(silent_scans=2), phases=("join",), before="scan", joins=1,
         extra=2 * 4, consumed="silent_scans"),
    Case("mac_fail", ("b",), dict(mac_fail=3), before=0x0053, down=True, joins=5, extra=2,
         consumed="mac_fail"),
    Case("mac_fail_backoff", ("b",), dict(mac_fail=4), before=0x0053, down=True, joins=6,
         extra=2, consumed="mac_fail"),
    Case("credentials_already_set", ("b",), dict(credentials_already_set=True), before=0x0054,
         down=True, restore=dict(credentials_already_set=0), joins=2),
    Case("lifetime_s", J11, dict(lifetime_s=20), phases=("ready",), hold=0.5,
         restore=dict(lifetime_s=0), joins=1, extra=20,
         bit=lambda r: r.emu.stats["lifetime_expiries"] >= 1),
    Case("lifetime_disconnect_first", J11, dict(lifetime_s=20, lifetime_disconnect_first=True),
         phases=("ready",), hold=0.3, restore=dict(lifetime_s=0), joins=4, extra=20,
         bit=lambda r: r.session.stats["disconnects"] >= 1),
    Case("reauth_result", J11, dict(lifetime_s=20, reauth_result=3, reauth_result_count=1),
         phases=("ready",), hold=0.5, restore=dict(lifetime_s=0), joins=3, extra=20,
         consumed="reauth_result_count"),
    Case("t108_limited", J11, dict(t108_limited=True), hold=0.4,
         restore=dict(t108_limited=False), joins=1, extra=20,
         cfg=dict(tx_limit_hold_ms=200), bit=lambda r: r.session.stats["tx_limited"] >= 1),
    Case("air_down", J11, dict(air_down=True), hold=0.4, restore=dict(air_down=False), joins=5,
         extra=12),
    Case("disconnect", J11, dict(disconnect=3), phases=("ready",), joins=2),
    # -- SKSTACK emulator (docs/skstack.md "Emulator") --
    Case("silent_scans", SK, dict(silent_scans=2), phases=("join",), before="scan", joins=1,
         extra=2 * 7, consumed="silent_scans"),
    Case("join_fail_3", SK, dict(join_fail=2, join_fail_kind=3), before="pana", down=True,
         joins=4, extra=2, consumed="join_fail"),
    # SKSTACK re-sends nothing itself (EVENT 21 01 is final): 3 no-ACKs in a row are 3 failed
    # sends, stale_tries: a full reopen (SKTERM + rejoin from the cache)
    Case("tx_no_ack", SK, dict(tx_no_ack=3), joins=2, extra=4, consumed="tx_no_ack"),
    Case("nd_first", SK, dict(nd_first=3), joins=1, consumed="nd_first"),
    Case("event21_before_ok", SK, dict(event21_before_ok=False), joins=1),
    Case("ll64_ok", SK, dict(ll64_ok=True), before="SKLL64", down=True, joins=2),
    # the driver never runs an ED scan (SKSCAN 0): the knob cannot bite; the case shows that
    # its absence does not disturb the active scan either
    Case("eedscan_extra_crlf", SK, dict(eedscan_extra_crlf=False), phases=("join",),
         before="scan", joins=1),
    Case("eport_extra_lines", SK, dict(eport_extra_lines=True), before="SKTABLE", down=True,
         joins=2),
    Case("split_writes", SK, dict(split_writes=True), hold=0.4,
         restore=dict(split_writes=False), joins=1),
    Case("garbage", SK, dict(garbage=6), joins=1, extra=2, consumed="garbage"),
    Case("mute", SK, dict(mute=True), hold=0.4, restore=dict(mute=False), joins=4, extra=12),
    Case("air_down", SK, dict(air_down=True), hold=0.4, restore=dict(air_down=False), joins=5,
         extra=12),
    # the expiry timer is armed by a join: in the ready phase the link drops so a rejoin arms it
    Case("expire_ms", SK, dict(expire_ms=20000), before="pana", down=True, hold=0.8,
         restore=dict(expire_ms=0), joins=2, extra=2,
         bit=lambda r: r.session.stats["reauths"] >= 1),
    Case("expire_ms_reauth_fail", SK, dict(expire_ms=20000, reauth_fail=True), before="pana",
         down=True, hold=0.8, restore=dict(expire_ms=0, reauth_fail=False), joins=4, extra=2,
         bit=lambda r: r.session.stats["reauth_failures"] >= 1),
    Case("t108_after_sends", SK, dict(t108_after_sends=2, t108_ms=20000), hold=0.6,
         restore=dict(t108_after_sends=0), joins=1, extra=4,
         bit=lambda r: r.session.stats["tx_limited"] >= 1),
    Case("peer_end", SK, dict(), phases=("ready",), down=True, joins=2),
]

PARAMS = [pytest.param(c, f, id="%s-%s" % (f, c.knob)) for c in CASES for f in c.families]


def _join_index(family, before):
    seq = JOIN_SEQ[family]
    if before is None:
        return len(seq)
    if before == "scan":
        before = 0x0051 if family in J11 else "SKSCAN"
    elif before == "pana":
        before = {"han": 0x003A, "b": 0x0056}.get(family, "SKJOIN")
    return seq.index(before) + 1


def _apply(r, case, rng, ready):
    f = dict(case.faults)
    if ready and case.down:
        if r.j11:
            f["disconnect"] = 4
        else:
            r.emu.peer_end()
    if f:
        r.emu.set_faults(f)
    if case.hold is not None:
        asyncio.get_running_loop().call_later(case.hold, r.emu.set_faults, case.restore)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("case,family", PARAMS)
def test_fault_matrix(case, family):
    name = "%s-%s" % (family, case.knob)
    rng = _rng(name)
    phase = rng.choice(case.phases)
    payloads = _payloads(rng, name)

    async def body():
        async with Rig(family, cfg=case.cfg, emu=case.emu) as r:
            if phase == "join":
                # a seeded command of the join: the fault is set just before it is written
                k = rng.randrange(_join_index(family, case.before))
                r.uart.at(k, lambda: _apply(r, case, rng, False))
                c = JOIN_SEQ[family][k]
                point = "before " + ("0x%04X" % c if r.j11 else c)
                await r.send_all(payloads)  # queued from the start: retried until ready
            else:
                await r.ready()
                at = rng.randrange(N_PAYLOADS)
                point = "before send %d" % at
                await r.send_all(payloads, before=lambda i: i == at and _apply(r, case, rng,
                                                                                True))
            if case.hold is not None:
                await asyncio.sleep(case.hold)  # the restore has run
            if case.restore and case.hold is None:
                r.emu.set_faults(case.restore)
            await r.ready(timeout=15)
            got = await r.delivered(payloads)
            await r.peer_to_terminal(b"meter-after-" + case.knob.encode())
            if case.consumed:  # the counter was used at least once: the fault did bite
                assert r.emu.faults[case.consumed] < case.faults[case.consumed], "never bit"
            if case.bit is not None:
                assert case.bit(r), "the fault never bit (%s)" % point
            dups = sum(n - 1 for n in got.values())
            if case.may_dup and phase == "ready":
                # only a transmit whose answer was lost after it went out is sent twice
                assert dups <= r.session.stats["module_timeouts"], got
            else:
                assert dups == 0, got
            assert set(got) <= set(payloads), "a datagram the application never sent"
            bound = case.joins * len(JOIN_SEQ[family]) + N_PAYLOADS + case.extra
            writes = r.uart.writes
            assert writes <= bound, (writes, bound, r.cmds())
            st = r.session.stats
            outcome = "ready, %d/%d once%s; joins %d, failures %d" % (
                len(payloads), N_PAYLOADS, (", %d dup" % dups) if dups else "", st["joins"],
                st["join_failures"])
            MATRIX.append((family, case.knob, "%s (%s)" % (phase, point), outcome, writes,
                           bound, time.monotonic() - r.t0))

    run(body())


# ---------------------------------------------------------------------------------------------
# 3. bad credentials latch; PANA re-authentication gate; the T108 limit

def _bad_credentials(r, ready):
    """Credentials the meter rejects (PANA result 2 / EVENT 24 after the peer's PANA messages),
    once; in the ready phase the link drops too, so the rejoin meets them."""
    if r.j11:
        r.emu.set_faults(pana_result=2, pana_result_count=1, **({"disconnect": 4} if ready
                                                                  else {}))
    else:
        r.emu.set_faults(join_fail=1, join_fail_kind=2)
        if ready:
            r.emu.peer_end()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("phase", ["join", "ready", "config"])
@pytest.mark.parametrize("family", ["han", "b", "sk", "dse"])
def test_bad_credentials_latch(family, phase):
    name = "%s-latch-%s" % (family, phase)
    rng = _rng(name)
    cfg = {"pana_password": "WRONGPASS123"} if phase == "config" else None

    async def body():
        async with Rig(family, cfg=cfg) as r:
            if phase == "join":
                k = rng.randrange(_join_index(family, "pana"))
                r.uart.at(k, lambda: _bad_credentials(r, False))
            elif phase == "ready":
                await r.ready()
                _bad_credentials(r, True)
            await r.until(lambda: r.session.state == ST_AUTH_FAILED, what="latch")
            writes, joins = r.uart.writes, r.joins_sent()
            # several back-off periods (max 400 ms): not one command, let alone a join attempt
            await asyncio.sleep(0.9)
            assert r.uart.writes == writes and r.joins_sent() == joins
            assert r.auth_failed_events() == [(ev.RADIO_AUTH_FAILED, 0)]
            assert r.session.stats["auth_failed"] == 1
            assert not await r.session.send(SM_IP6, PORT, b"x")  # reported, not sent
            assert sum(1 for x in r.lines if "bad credentials" in x) == 1
            r.session.set_pana_password(PASSWORD)
            await r.ready()
            payloads = _payloads(rng, name)
            await r.send_all(payloads)
            assert all(n == 1 for n in (await r.delivered(payloads)).values())
            assert len(r.auth_failed_events()) == 1
            assert not any("WRONGPASS123" in x for x in r.lines)
            # the join before the latch, the one after (+ the first join in the ready phase)
            assert r.joins_sent() == (3 if phase == "ready" else 2)
            bound = (3 if phase == "ready" else 2) * len(JOIN_SEQ[family]) + N_PAYLOADS
            assert r.uart.writes <= bound
            MATRIX.append((family, "bad credentials", phase, "latched: 0 commands in 0.9 s, "
                           "1 RADIO_AUTH_FAILED; new password joins", r.uart.writes, bound,
                           time.monotonic() - r.t0))

    run(body())


def _watch_states(r, seen):
    """Sample (state, gate open) while the test runs."""
    async def watch():
        while True:
            seen.add((r.session.state, r.session._gate.is_set()))
            await asyncio.sleep(0.002)
    return asyncio.create_task(watch())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("family", ["han", "b"])
def test_j11_reauth_gate(family):
    """The session re-authenticates at 80 % of pana_lifetime_s (1 s here): the gate is closed
    meanwhile and sends wait (none reaches the module while it authenticates: no 0x33/0x35
    answer), then go; none is lost or refused. Then a failed re-authentication: a full
    reopen."""
    rng = _rng(family + "-reauth")

    async def body():
        async with Rig(family, cfg={"pana_lifetime_s": 1}) as r:
            await r.ready()
            seen = set()
            w = _watch_states(r, seen)
            payloads = _payloads(rng, "reauth")
            payloads = [p + b"%d" % i for i in range(2) for p in payloads]  # 12 datagrams
            t0 = time.monotonic()
            refused = 0
            for p in payloads:
                refused += await r.send_all([p])
                await asyncio.sleep(0.08)  # ~1 s of traffic: the re-authentication at 0.8 s
            w.cancel()
            assert time.monotonic() - t0 > 0.9
            cmd = 0x00D2 if family == "b" else 0x002B
            assert r.count(cmd) >= 1 and r.session.stats["reauths"] >= 1
            # the gate was closed whenever the session was re-authenticating (J11Module's
            # command lock would hold a transmit too; the gate bounds the wait: gate_wait_ms)
            assert (ST_REAUTH, False) in seen and (ST_REAUTH, True) not in seen, seen
            busy = [d for c, d in r.emu.sent if c == 0x2008 and d[0] in (0x33, 0x35)]
            assert busy == [] and refused == 0
            assert all(n == 1 for n in (await r.delivered(payloads)).values())
            assert r.session.stats["joins"] == 1  # the gate, not a reopen
            # the next re-authentication fails (no answer): a full reopen, then ready again
            r.emu.set_faults(pana_result=3, pana_result_count=1)
            await r.until(lambda: r.session.stats["joins"] == 2, what="reopen after re-auth")
            assert (ev.LINK_DOWN, DOWN_REAUTH) in r.events
            assert r.session.stats["reauth_failures"] == 1
            more = [b"after-reauth-%d" % i for i in range(3)]
            await r.send_all(more)
            assert all(n == 1 for n in (await r.delivered(more)).values())
            # join, 12 sends, at most 3 re-authentications, the rejoin from the cache, 3 sends
            bound = len(JOIN_SEQ[family]) + 12 + 3 + REJOIN_LEN[family] + 3
            assert r.uart.writes <= bound
            MATRIX.append((family, "session re-auth (pana_lifetime_s 1)", "ready",
                           "gate closed during %d re-auths, 0 sends refused; failed re-auth -> "
                           "reopen" % r.count(cmd), r.uart.writes, bound,
                           time.monotonic() - r.t0))

    run(body())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("family", ["sk", "dse"])
def test_skstack_auto_reauth_gate(family):
    """The module re-authenticates on its own (EVENT 29 ... 25): the session's gate is closed
    in between (no SKSENDTO written), the queued sends go after; EVENT 24: a full reopen."""
    async def body():
        async with Rig(family) as r:
            await r.ready()
            marks = []
            inner = r.link.on_event

            def on_event(code, detail):
                marks.append((code, r.uart.writes))
                inner(code, detail)
            r.link.on_event = on_event
            payloads = [b"gate-%d" % i for i in range(8)]
            sender = asyncio.create_task(r.send_all(
                payloads, before=lambda i: i == 2 and r.emu.expire_session(True, 30000)))
            refused = await asyncio.wait_for(sender, 10)
            assert [c for c, _ in marks] == [link.EV_REAUTH_STARTED, link.EV_REAUTH_OK]
            assert marks[0][1] == marks[1][1]  # nothing written while the gate was closed
            assert refused == 0
            assert all(n == 1 for n in (await r.delivered(payloads)).values())
            assert r.session.stats["joins"] == 1 and r.session.stats["reauths"] == 1
            r.emu.expire_session(False, 1000)
            await r.until(lambda: r.session.stats["joins"] == 2, what="reopen")
            assert (ev.LINK_DOWN, DOWN_REAUTH) in r.events
            more = [b"after-%d" % i for i in range(3)]
            await r.send_all(more)
            assert all(n == 1 for n in (await r.delivered(more)).values())
            bound = len(JOIN_SEQ[family]) + 8 + REJOIN_LEN[family] + 3  # no command re-sent
            assert r.uart.writes <= bound
            MATRIX.append((family, "module re-auth (EVENT 29)", "ready",
                           "gate closed 29..25, 0 sends refused; 24 -> reopen", r.uart.writes,
                           bound, time.monotonic() - r.t0))

    run(body())


BIG = bytes(range(256)) * 4 + bytes(208)  # 1232 bytes: 144 ms of modelled air time


@pytest.mark.timeout(30)
@pytest.mark.parametrize("family", ["han", "b", "sk", "dse"])
def test_t108_limit(family):
    """Our budget (1 s here, 50 % reserve): bulk traffic stops at the reserve, replies still go;
    the module's limit (J11: transmits refused; SKSTACK: EVENT 32) stops replies too without a
    reopen; limit off (J11: the hold ends; SKSTACK: EVENT 33) -> the replies go."""
    cfg = {"airtime_budget_ms": 1000, "bulk_reserve_pct": 50, "tx_limit_hold_ms": 300}

    async def body():
        async with Rig(family, cfg=cfg) as r:
            await r.ready()
            s = r.session
            bulk = 0
            while s.may_send(True):
                assert await s.send(SM_IP6, PORT, BIG[:-3] + b"%03d" % bulk, bulk=True)
                bulk += 1
                assert bulk < 10
            assert bulk == 4  # 4 x 144 ms: 424 ms left, at or below the 500 ms reserve
            assert not await s.send(SM_IP6, PORT, b"bulk", bulk=True)
            assert s.stats["bulk_deferred"] >= 2
            replies = [b"reply-%d" % i for i in range(3)]
            assert await r.send_all(replies) == 0  # replies still go
            # the module's own limit
            if r.j11:
                r.emu.set_faults(t108_limited=True)
                assert not await s.send(SM_IP6, PORT, b"refused")  # the module refuses
            else:
                r.emu.t108(True)
                await r.until(lambda: r.link.tx_limited, what="EVENT 32")
            assert not s.may_send(False) and not s.may_send(True)
            w0 = r.uart.writes
            t0 = time.monotonic()
            assert not await s.send(SM_IP6, PORT, b"gated")  # waits at the gate, refused
            assert time.monotonic() - t0 >= 0.2
            if r.j11:
                # J11 gives no limit-off: the gate held the send for tx_limit_hold_ms, then it
                # asked the module once, which still refuses (closed for another hold)
                assert r.uart.writes == w0 + 1 and s.stats["tx_limited"] == 2
            else:
                # EVENT 32 holds the gate until EVENT 33: gate_wait_ms, then refused unsent
                assert r.uart.writes == w0 and s.stats["tx_gated"] == 1
            if r.j11:
                r.emu.set_faults(t108_limited=False)  # J11 says nothing: the hold ends it
            else:
                r.emu.t108(False)  # EVENT 33
            late = [b"late-reply-%d" % i for i in range(3)]
            await r.send_all(late)
            got = await r.delivered(replies + late)
            assert all(n == 1 for n in got.values())
            assert b"gated" not in got and (r.j11 or b"refused" not in got)
            assert s.stats["joins"] == 1 and s.stats["stale_reopens"] == 0
            # join, 4 bulk, 3 replies, (J11: the refused one + one try after the hold), 3 late
            bound = len(JOIN_SEQ[family]) + 4 + 3 + (2 if r.j11 else 0) + 3
            assert r.uart.writes <= bound
            MATRIX.append((family, "T108 (budget 1 s, reserve 50 %)", "ready",
                           "bulk stopped after 4, replies went; module limit gated, no reopen; "
                           "off -> resumed", r.uart.writes, bound, time.monotonic() - r.t0))

    run(body())


# ---------------------------------------------------------------------------------------------
# 4. the same session + driver under the MicroPython unix port (heap-capped): B-route through
# MAC failures and a T108 refusal, SKSTACK DSE through a silent PANA peer and EVENT 32 / 33

MP_SCRIPT = """
import asyncio
from firmware.hal.host import PtyUart
from firmware.radio import j11_link, skstack
from firmware.radio.j11_module import J11Module
from firmware.radio.session import RadioSession

CFG = %s
PEER = %r

async def main():
    uart = PtyUart(CFG["uart"])
    if CFG["family"] == "b":
        drv = j11_link.build(J11Module(uart), CFG)
    else:
        drv = skstack.build(uart, CFG, dse=True)
    s = RadioSession(drv, CFG)
    task = asyncio.create_task(s.run())
    while not s.is_ready():
        await asyncio.sleep_ms(10)
    print("READY", s.stats["joins"], s.stats["join_failures"])
    refused = 0
    for i in range(6):
        if i == 2:
            print("LIMIT")  # the test switches the module's T108 limit on for a while
            await asyncio.sleep_ms(50)
        p = b"mp-%%d" %% i
        while not await s.send(PEER, 4059, p):
            refused += 1
            await asyncio.sleep_ms(20)
    st = s.stats
    print("DONE", refused, st["tx_limited"], st["joins"], st["stale_reopens"])
    task.cancel()

asyncio.run(main())
"""


@pytest.mark.timeout(60)
@pytest.mark.skipif(MP is None, reason="micropython binary not installed")
@pytest.mark.parametrize("family", ["b", "dse"])
def test_fault_cases_under_micropython(family, tmp_path):
    async def body():
        async with Rig(family, session=False) as r:
            if r.j11:
                r.emu.set_faults(mac_fail=2)
            else:
                r.emu.set_faults(join_fail=1, join_fail_kind=3)
            cfg = dict(r.cfg, uart=r.emu.slave_path, family=family, tx_limit_hold_ms=200)
            proc = await spawn_micropython(tmp_path / "fm_mp.py",
                                           MP_SCRIPT % (json.dumps(cfg), SM_IP6))
            try:
                out = []
                while not (out and out[-1].startswith(b"DONE")):
                    line = await asyncio.wait_for(proc.stdout.readline(), 20)
                    assert line, b"".join(out)
                    out.append(line)
                    if line.startswith(b"LIMIT"):
                        if r.j11:
                            r.emu.set_faults(t108_limited=True)
                            asyncio.get_running_loop().call_later(
                                0.3, r.emu.set_faults, {"t108_limited": False})
                        else:
                            r.emu.t108(True)
                            asyncio.get_running_loop().call_later(0.3, r.emu.t108, False)
                text = b"".join(out).decode()
                assert "READY 1 %d" % (2 if r.j11 else 1) in text, text
                done = out[-1].split()
                refused, limited, joins, stale = (int(x) for x in done[1:])
                assert limited >= 1 and joins == 1 and stale == 0, text
                payloads = [b"mp-%d" % i for i in range(6)]
                got = await r.delivered(payloads)
                assert all(got[p] == 1 for p in payloads), got
                writes = len(r.emu.requests)
                # the join (+ 2 MAC-failure retries from the reset / 1 PANA retry), 6 sends,
                # + at most one refused transmit per hold (J11) / none (SKSTACK gate)
                bound = (3 * 9 + 6 + 4) if r.j11 else (2 * 15 + 6)
                assert writes <= bound, (writes, bound)
                MATRIX.append((family, "micropython: %s + T108" % ("mac_fail 2" if r.j11
                                                                   else "join_fail 3"),
                               "join / ready", "ready, 6/6 once, %d refused, no reopen"
                               % refused, writes, bound, time.monotonic() - r.t0))
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()

    run(body())
