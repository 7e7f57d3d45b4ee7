"""1:N end to end under `micropython`: four 0x028E meters, each its own node on its own loopback
address with its own values; the terminal keeps a record series per meter and serves meter k on
OBIS channel B = k + 1."""

import asyncio
import threading
import time

import pytest

from firmware import timeutil
from firmware.cosem.objects import obis
from tools.deployment import Deployment

RATE = 900
N = 4


@pytest.fixture(scope="module")
def dep():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    d = Deployment(rate=RATE, meters=N)
    d.loop = loop

    def run(coro, timeout_s=30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    d.run = run
    run(d.start())
    head = d.head_end(out=lambda *a: None)
    d.head = head
    try:
        run(head.connect(timeout_s=60), 90)
        run(head.sync_clock())
        d.first_b = head.clock_set_at - head.clock_set_at % 1800 + 1800
        time.sleep(d.sim.wall_seconds_until(d.first_b + 3 * 1800 + 300))
        yield d
    finally:
        head.close()
        run(d.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_each_meter_has_its_own_series(dep):
    last_b = dep.first_b + 2 * 1800
    for k in range(N):
        ln = obis("1.%d.99.1.0.255" % (k + 1))
        rows = dep.run(dep.head.client.get_profile(dep.first_b, last_b, ln=ln))
        got = [(timeutil.slot_of_t2k(t), fwd, rev) for t, fwd, rev, _st in rows]
        slots = range(timeutil.slot_of_t2k(dep.first_b), timeutil.slot_of_t2k(last_b) + 1)
        want = [(s,) + dep.models[k].served_at_slot(s) for s in slots]
        assert got == want, "meter %d" % k
    # the meters' values differ at every slot checked (by construction: Deployment gives each
    # its own start), so a mix-up of meters or channels would show
    for s in slots:
        assert len({dep.models[k].at_slot(s)[0] for k in range(N)}) == N, s
    assert dep.firmware_alive()
    assert "4 meter(s) configured" in dep.terminal_log()
