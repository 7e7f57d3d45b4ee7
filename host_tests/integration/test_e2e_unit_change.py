"""End to end under `micropython`: the meter's unit changes mid-run (0.1 kWh -> 0.01 kWh, its
counters gain a digit, announced by a restart INF) and every value the head-end reads over the
radio -- slots stored before the change, after it, and the registers -- is the meter's energy
exactly, in Wh (docs/dlms.md "Values and scaler")."""

import time

from loop_thread import LoopThread

from firmware import timeutil
from tools.deployment import Deployment
from tools.meter_model import UnitChangingModel

RATE = 900  # 30 simulated minutes every 2 real seconds


def test_unit_change_mid_run_leaves_every_served_value_exact():
    bg = LoopThread()
    run = bg.run

    d = Deployment(rate=RATE)
    model = UnitChangingModel(d.model)
    d.meter.objects[0].model = model
    head = None
    try:
        run(d.start())
        head = d.head_end(out=lambda *a: None)
        run(head.connect(timeout_s=60), 90)
        run(head.sync_clock())
        first_b = head.clock_set_at - head.clock_set_at % 1800 + 1800
        time.sleep(d.sim.wall_seconds_until(first_b + 2 * 1800 + 300))
        # the meter restarts counting in 0.01 kWh and says so (0xD5 INF to the terminal)
        change_b = d.sim.now_t2k() - d.sim.now_t2k() % 1800
        d.meter.reboot(reset_counters=False, unit_code=0x02,
                       announce_to=(d.terminal_ip, d.meter_addr[1]))
        time.sleep(d.sim.wall_seconds_until(change_b + 3 * 1800 + 300))
        last_b = d.sim.now_t2k() - 300 - (d.sim.now_t2k() - 300) % 1800
        rows = run(head.client.get_profile(first_b, last_b))
        got = {timeutil.slot_of_t2k(t): (f, r, st) for t, f, r, st in rows}
        b = first_b
        before = after = 0
        while b <= last_b:
            slot = timeutil.slot_of_t2k(b)
            assert slot in got, "slot %s missing" % timeutil.iso(b, 540)
            assert got[slot][:2] == model.served_at_slot(slot), timeutil.iso(b, 540)
            assert got[slot][2] & 0x04 == 0  # no DNV: every value exact
            if b < change_b:
                before += 1
            elif b > change_b:
                after += 1
            b += 1800
        assert before >= 2 and after >= 2
        value, scaler = run(head.client.get_register("1.0.1.8.0.255"))
        assert scaler == 0
        assert value in [model.served_at_slot(timeutil.slot_of_t2k(last_b) + k)[0]
                         for k in (0, 1)]
        text = d.terminal_log()
        assert "meter unit changed: 0x01 -> 0x02" in text
        assert "Traceback" not in text
        assert d.firmware_alive()
    finally:
        if head is not None:
            head.close()
        run(d.stop())
        bg.close()
