# The meter's own clock over ECHONET Lite, for the optional meter-clock keeper (config
# clock.set_meter, firmware/app/meterclock.py; docs/clock.md section 6): the Set property map
# (0x9E), the date 0x98 with the time 0xDA (0x028E, HH MM SS) or 0x97 (HH MM), and the 0x028E
# time-sync status 0xDB. A port over a MeterClient (its transport, learned map, poison EPCs and
# time zone), in a module of its own so that a terminal with the option off imports none of it.
from firmware import log, timeutil
from firmware.compat import const
from firmware.meter import drmeter, echonet
from firmware.meter.drmeter import MeterDataError
from firmware.meter.echonet import EchonetError

EPC_TIME_HM = const(0x97)  # super class current time: 2 B HH MM
EPC_TIME_HMS = const(0xDA)  # 0x028E current time: 3 B HH MM SS
_EPC_SET_MAP = const(0x9E)


def decode_meter_clock(date_edt, time_edt, tz_offset_min):
    """UTC t2k of the meter's clock from 0x98 (YYYY(2) MM DD) and 0x97 (HH MM, seconds taken
    as 0) or 0xDA (HH MM SS), in the meter's local time (tz_offset_min east of UTC).
    MeterDataError if either is absent or malformed."""
    if date_edt is None or time_edt is None:
        raise MeterDataError("meter clock: date 0x98 or time not given")
    y, mo, d = drmeter.decode_date(date_edt)
    if len(time_edt) == 2:
        time_edt = bytes(time_edt) + b"\x00"
    h, mi, s = drmeter.decode_time(time_edt)
    return drmeter.local_to_t2k(y, mo, d, h, mi, s, tz_offset_min)


def encode_meter_clock(t2k, tz_offset_min, time_epc):
    """(0x98 EDT, time EDT) of UTC t2k in the meter's local time; the time as 0x97 (HH MM) or
    0xDA (HH MM SS) by time_epc."""
    y, mo, d, h, mi, s, _ = timeutil.fields_from_t2k(t2k + tz_offset_min * 60)
    date = bytes((y >> 8, y & 0xFF, mo, d))
    return date, (bytes((h, mi)) if time_epc == EPC_TIME_HM else bytes((h, mi, s)))


class MeterClockPort:
    """The clock reads and set of one meter, through its MeterClient `client`."""

    def __init__(self, client):
        self.client = client

    async def clock_epcs(self):
        """(date_epc|None, time_epc|None): the clock properties the meter's Set property map
        (0x9E) lists: 0x98, and the class's time (0xDA on 0x028E) or else 0x97. (None, None)
        when the map is not given or unusable: nothing is set without the meter's word."""
        c = self.client
        await c._prepare()
        edt = (await c.read((_EPC_SET_MAP,)))[_EPC_SET_MAP]
        if edt is None:
            return None, None
        try:
            setmap = echonet.decode_propmap(edt)
        except EchonetError as e:
            log.warn(c.tag, "unusable Set property map: %s" % e)
            return None, None
        p = c.profile
        time_epc = None
        for e in (p.time, EPC_TIME_HM):
            if e in setmap:
                time_epc = e
                break
        return (p.date if p.date in setmap else None), time_epc

    async def read_meter_clock(self, time_epc=None):
        """(t2k|None, sync|None): the meter's clock (0x98 + time_epc, default the class's time
        EPC; None if unavailable or malformed, logged) and its time-sync status (0xDB on 0x028E:
        0 not synced, 1 synced, 2 failed, 0xFF not implemented; None if the class has none or
        it is unavailable)."""
        c = self.client
        await c._prepare()
        p = c.profile
        t_epc = time_epc or p.time
        epcs = (p.date, t_epc) + ((p.sync,) if p.sync is not None else ())
        vals = await c.read(epcs)
        t2k = None
        if vals[p.date] is not None or vals[t_epc] is not None:
            try:
                t2k = decode_meter_clock(vals[p.date], vals[t_epc], c.tz)
            except ValueError as e:
                log.warn(c.tag, "meter clock not usable: %s" % e)
        sync = None
        if p.sync is not None:
            edt = vals[p.sync]
            if edt is not None and len(edt) == 1:
                sync = edt[0]
            elif edt is not None:
                log.warn(c.tag, "time-sync status 0x%02X: %d bytes, expected 1"
                         % (p.sync, len(edt)))
        return t2k, sync

    async def set_clock(self, t2k, date_epc, time_epc):
        """SetC the meter's clock to UTC t2k: date (if date_epc) and time in one frame, so the
        meter takes both or neither. True if the meter accepted every property."""
        c = self.client
        date, tm = encode_meter_clock(t2k, c.tz, time_epc)
        props = [(date_epc, date)] if date_epc is not None else []
        props.append((time_epc, tm))
        esv, _ = await c._request(echonet.SETC, props, (echonet.SET_RES, echonet.SETC_SNA),
                                  "SetC clock")
        if esv != echonet.SET_RES:
            c.stats["sna"] += 1
            log.warn(c.tag, "SetC clock: refused (SetC_SNA)")
            return False
        return True
