"""What a meter says about itself, for the host side (tests, tools, bring-up): identity and trust
metadata, and the meter's own clock. The terminal never reads them (it needs values, scaling and
history only), so they live here rather than in the firmware's heap: InspectingClient is a
firmware MeterClient with two more reads, over the same transport, capacity and poison logic."""

from firmware.meter import drmeter, profiles
from firmware.meter.client import MeterClient, MeterError, _unique


class InspectingClient(MeterClient):
    async def read_identity(self):
        """Identity and trust metadata of the meter object; unavailable items are None."""
        await self._prepare()
        p = self.profile
        extra = (0xD0, 0xD1, 0xD2) if p.retention is not None else ()
        epcs = (0x8A, 0x83, 0x82) + extra + p.identity + p.scaling_epcs()
        if p.retention is not None:
            epcs += (p.retention,)
        vals = await self.read(tuple(_unique(epcs)))
        maker = vals[0x8A]
        ident = {
            "maker": (maker[0] << 16) | (maker[1] << 8) | maker[2] if maker and len(maker) == 3
            else None,
            "ident": vals[0x83],
            "release": vals[0x82],
            "device_type": vals.get(0xD0),
            "device_id": vals.get(0xD1),
            "metered_id": vals.get(0xD6),
            "tolerance": None,
            "retention": None,
            "unit": None,
            "coefficient": None,
            "digits": self.profile.fixed_digits,
        }
        t = vals.get(0xD2)
        if t is not None and len(t) == 1:
            ident["tolerance"] = t[0]
        if p.retention is not None and vals[p.retention] is not None:
            ident["retention"] = drmeter.decode_retention(vals[p.retention])
        if vals[p.unit] is not None:
            ident["unit"] = drmeter.decode_unit(vals[p.unit])
        if p.coefficient is not None and vals[p.coefficient] is not None:
            ident["coefficient"] = profiles.decode_coefficient(vals[p.coefficient])
        if p.digits is not None and vals[p.digits] is not None:
            ident["digits"] = profiles.decode_digits(vals[p.digits])
        return ident

    async def read_clock(self):
        """(meter clock as UTC t2k, sync status or None): 0x98 date + 0xDA (0x028E, hh mm ss)
        or 0x97 (hh mm) time, 0xDB sync status where the class has it."""
        await self._prepare()
        p = self.profile
        epcs = (p.date, p.time) + ((p.sync,) if p.sync is not None else ())
        vals = await self.read(epcs)
        if vals[p.date] is None or vals[p.time] is None:
            raise MeterError("clock: meter did not return 0x%02X and 0x%02X" % (p.date, p.time))
        tm = vals[p.time]
        if p.time_len == 2:
            if len(tm) != 2:
                raise drmeter.MeterDataError("0x97 time: EDT of %d bytes, expected 2" % len(tm))
            tm = tm + b"\x00"
        t = drmeter.meter_clock_t2k(vals[p.date], tm, self.tz)
        s = vals[p.sync] if p.sync is not None else None
        return t, (s[0] if s is not None and len(s) == 1 else None)
