# The default COSEM object set the terminal serves over its meter data views: association, SAP
# assignment, logical device name, device ID and clock, then per meter +A, -A, profile status and
# the 30-minute load profile. Kept apart from the interface classes (objects.py, profile.py) so
# that neither of those imports the other's importer.
from firmware.cosem.objects import (
    CLASS_CLOCK,
    CLASS_DATA,
    CLASS_REGISTER,
    AssociationObject,
    ClockObject,
    DataObject,
    ObjectTable,
    RegisterObject,
    SapAssignmentObject,
    latest_status,
    obis,
)
from firmware.cosem.profile import ProfileObject

DEFAULT_OBIS = {
    "association": "0.0.40.0.0.255",
    "sap_assignment": "0.0.41.0.0.255",
    "ldn": "0.0.42.0.0.255",
    "device_id": "0.0.96.1.0.255",
    "clock": "0.0.1.0.0.255",
    "import": "1.0.1.8.0.255",
    "export": "1.0.2.8.0.255",
    "profile_status": "0.0.96.10.1.255",
    "profile": "1.0.99.1.0.255",
}


def default_table(view, config=None):
    """The default object set over one meter data view, or over a list of views (1:N meters).
    config keys (all optional): 'obis' (dict overriding DEFAULT_OBIS), 'server_sap', 'ldn',
    'device_id', 'profile_entries', 'public_clock_write'.

    With several views, meter k's +A, -A, profile status and profile use OBIS channel B = k + 1
    (e.g. 1.2.1.8.0.255 for the second meter); the association, clock and identity objects are
    shared. SPEC: the IoT-route object list is not public; channel numbering is a choice."""
    cfg = config or {}
    codes = dict(DEFAULT_OBIS)
    codes.update(cfg.get("obis") or {})
    ln = {}
    for k in codes:
        ln[k] = obis(codes[k])
    ldn = _as_bytes(cfg.get("ldn", "XXX0000000000001"))
    objs = [
        AssociationObject(ln["association"]),
        SapAssignmentObject(ln["sap_assignment"], cfg.get("server_sap", 1), ldn),
        DataObject(ln["ldn"], ldn),
        DataObject(ln["device_id"], _as_bytes(cfg.get("device_id", "000000000000"))),
        ClockObject(ln["clock"], cfg.get("public_clock_write", True)),
    ]
    views = view if isinstance(view, (list, tuple)) else [view]
    for k in range(len(views)):
        v = views[k]
        ch = None if len(views) == 1 else k + 1
        imp = _channel(ln["import"], ch)
        exp = _channel(ln["export"], ch)
        st = _channel(ln["profile_status"], ch)
        objs.append(RegisterObject(imp, v, 1))
        objs.append(RegisterObject(exp, v, 2))
        objs.append(DataObject(st, _status_fn(v)))
        objs.append(
            ProfileObject(
                _channel(ln["profile"], ch),
                v,
                (
                    (CLASS_CLOCK, ln["clock"]),
                    (CLASS_REGISTER, imp),
                    (CLASS_REGISTER, exp),
                    (CLASS_DATA, st),
                ),
                cfg.get("profile_entries", 2160),
            )
        )
    return ObjectTable(objs)


def _status_fn(view):
    return lambda env: latest_status(view)


def _channel(ln, ch):
    """The logical name with OBIS group B (channel) replaced; None keeps it."""
    if ch is None:
        return ln
    b = bytearray(ln)
    b[1] = ch
    return bytes(b)


def _as_bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)
