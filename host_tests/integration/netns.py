"""Network namespaces for the ECHONET Lite multicast tests (helper module, not a test).

Two namespaces joined by a veth pair, 10.99.0.1/24 (terminal side) <-> 10.99.0.2/24 (peer
side), each with `ip route add 224.0.0.0/4 dev <veth>` so multicast has a route. Addresses exist
only inside these namespaces: no packet reaches the host's interfaces. Names are unique per run and
everything is deleted in `close()` (use the context manager / fixture).

Run as a script inside a namespace (`ip netns exec NS python|micropython netns.py ROLE ...`):
  terminal      the firmware's MeterClient + Discovery on 0.0.0.0:3610 (CPython or micropython)
  meter         tools.meter_emulator's 0x028E node on 0.0.0.0:3610 with multicast (CPython)
  pychonet      pychonet's controller discovers the node in the other namespace (CPython)
  uecho-meter   an independent 0x028E device built with the `uecho` package (CPython)
Result lines start with "@" and carry JSON; everything else is log output.
"""
import sys

if sys.implementation.name != "micropython":
    import os

    _HERE = os.path.dirname(os.path.abspath(__file__))
    REPO = os.path.abspath(os.path.join(_HERE, "..", ".."))
else:
    REPO = "."
if REPO not in sys.path:
    sys.path.insert(0, REPO)

GROUP = "224.0.23.0"
PORT = 3610
IP_TERMINAL = "10.99.0.1"
IP_PEER = "10.99.0.2"
IP_PEER_ROUTED = "10.99.1.2"  # the peer behind a router (NetPair(multicast=False))


def emit(kind, **kw):
    import json

    kw["kind"] = kind
    print("@" + json.dumps(kw))


def results(text):
    """The "@" JSON lines of a role's output, as dicts."""
    import json

    out = []
    for line in text.splitlines():
        if line.startswith("@"):
            out.append(json.loads(line[1:]))
    return out


# --- host side (CPython only) ----------------------------------------------------------------


class NetnsUnavailable(Exception):
    pass


def _ip(*args, check=True):
    import subprocess

    p = subprocess.run(("ip",) + args, capture_output=True, text=True, timeout=10)
    if check and p.returncode:
        raise RuntimeError("ip %s: %s" % (" ".join(args), p.stderr.strip()))
    return p


class NetPair:
    """Two namespaces: the terminal's (side 0) and the peer's (side 1).

    multicast=True: one veth pair, 10.99.0.1/24 <-> 10.99.0.2/24, same link, multicast works.
    multicast=False: the peer sits on another subnet (10.99.1.2/24) behind a third, forwarding
    namespace; unicast is routed, multicast (224.0.23.0, link-local scope) is not -- multicast
    dead as for a meter behind a router or a switch that pruned the group. (tc actions, which
    could drop multicast on one link, are not available in this kernel.)"""

    def __init__(self, multicast=True):
        import secrets

        tag = "%x%s" % (os.getpid() & 0xFFFF, secrets.token_hex(2))
        self.tag = tag
        self.multicast = multicast
        self.ns = ("ecnA" + tag, "ecnB" + tag)
        self.router = None if multicast else "ecnR" + tag
        self.ips = (IP_TERMINAL, IP_PEER if multicast else IP_PEER_ROUTED)
        self._made = []
        self._procs = []

    def _add_ns(self, name):
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _link(self, ns_a, dev_a, ip_a, ns_b, dev_b, ip_b):
        _ip("link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b,
            "netns", ns_b)
        for ns, dev, ip in ((ns_a, dev_a, ip_a), (ns_b, dev_b, ip_b)):
            _ip("-n", ns, "addr", "add", ip + "/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def open(self):
        probe = _ip("netns", "add", self.ns[0], check=False)
        if probe.returncode:
            raise NetnsUnavailable("`ip netns add` not permitted here: %s" % probe.stderr.strip())
        self._made.append(self.ns[0])
        try:
            _ip("-n", self.ns[0], "link", "set", "lo", "up")
            self._add_ns(self.ns[1])
            t = self.tag
            devs = ("veA" + t, "veB" + t)  # 15-byte interface name limit
            if self.multicast:
                self._link(self.ns[0], devs[0], self.ips[0], self.ns[1], devs[1], self.ips[1])
            else:
                self._add_ns(self.router)
                self._link(self.ns[0], devs[0], self.ips[0], self.router, "vrA" + t,
                           "10.99.0.254")
                self._link(self.ns[1], devs[1], self.ips[1], self.router, "vrB" + t,
                           "10.99.1.254")
                _ip("netns", "exec", self.router, "sh", "-c",
                    "echo 1 > /proc/sys/net/ipv4/ip_forward")
                _ip("-n", self.ns[0], "route", "add", "10.99.1.0/24", "via", "10.99.0.254")
                _ip("-n", self.ns[1], "route", "add", "10.99.0.0/24", "via", "10.99.1.254")
            for ns, dev in zip(self.ns, devs):
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except Exception:  # already reaped or stuck in the kernel: the netns goes anyway
                pass
        self._procs = []
        for ns in self._made:
            _ip("netns", "del", ns, check=False)  # deletes the veth end inside it too
        self._made = []

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def argv(self, side, argv):
        return ["ip", "netns", "exec", self.ns[side]] + list(argv)

    def popen(self, side, argv):
        """Start argv inside namespace `side` (0 terminal, 1 peer); killed by close()."""
        import subprocess

        env = dict(os.environ, PYTHONPATH=REPO, MICROPYPATH=".frozen:" + REPO,
                   PYTHONUNBUFFERED="1")
        p = subprocess.Popen(self.argv(side, argv), cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        self._procs.append(p)
        return p

    def role(self, side, role, *args, runtime=None):
        """Start this file as `role` inside namespace `side`."""
        exe = runtime or sys.executable
        extra = ["-X", "heapsize=256k"] if exe.endswith("micropython") else []
        return self.popen(side, [exe] + extra + [os.path.join(_HERE, "netns.py"), role]
                          + [str(a) for a in args])


def finish(p, timeout):
    """(returncode, output) of a role process, killing it after `timeout` seconds."""
    import subprocess

    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return p.returncode, out


# --- roles (run inside a namespace) ----------------------------------------------------------


def _opts(argv):
    """--key value / --flag pairs into a dict (argparse is not in MicroPython)."""
    out = {}
    i = 0
    while i < len(argv):
        k = argv[i][2:].replace("-", "_")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[k] = argv[i + 1]
            i += 2
        else:
            out[k] = True
            i += 1
    return out


def role_terminal(argv):
    """The firmware pieces as the integrator will wire them: one endpoint on 0.0.0.0:3610
    (joined to the group), MeterClient owning the receive path, Discovery as its listener and
    RateLimiter on its rate-limit seam. Optionally reads the meter once it is known."""
    import asyncio

    from firmware.compat import sleep_ms, ticks_diff, ticks_ms
    from firmware.hal.udp import UdpEndpoint
    from firmware.meter import discovery
    from firmware.meter.node import NodeResponder
    from firmware.meter.ratelimit import RateLimiter
    from tools.meter_inspect import InspectingClient

    o = _opts(argv)
    ip = o.get("ip", IP_TERMINAL)
    seconds = int(o.get("seconds", 5))
    cfg = {"own_ip": ip, "iface_ip": ip, "search_min_ms": 300, "search_ms": 2000,
           "check_ms": int(o.get("check_ms", 500)), "rejoin_ms": 2000, "miss_limit": 2,
           "multicast": "no_multicast" not in o}
    if "static" in o:
        cfg["static_addr"] = o["static"]
    ep = UdpEndpoint("0.0.0.0", PORT)
    disc = discovery.Discovery(ep, cfg)
    eoj = int(o.get("eoj", "0x028E01"), 16)
    client = InspectingClient(ep, (o.get("static", "0.0.0.0"), PORT),
                              {"timeout_ms": 1000, "retries": 1, "eoj": eoj}, NodeResponder())
    limiter = RateLimiter()
    client.listener = disc
    client.rate_limiter = limiter
    state = {"reads": 0}

    def on_event(kind, addr_ip):
        emit("event", event=kind, ip=addr_ip)
        if kind == discovery.EV_METER:
            client.addr = (addr_ip, PORT)
            limiter.pin(addr_ip)
            client.invalidate("meter address %s" % addr_ip)
        elif kind == discovery.EV_REBOOT:
            client.invalidate("meter node restarted")

    disc.on_event = on_event

    async def reader():
        while disc.meter_addr() is None:
            await sleep_ms(100)
        client.addr = disc.meter_addr()
        unit = await client.read_unit()
        stamp, fwd, rev = await client.read_fixed_time()
        ident = await client.read_identity()
        emit("read", ip=client.addr[0], unit=unit, stamp=stamp, fwd=fwd, rev=rev,
             maker=ident["maker"])
        state["reads"] += 1

    async def main():
        tasks = [asyncio.create_task(client.run()), asyncio.create_task(disc.run())]
        if "read" in o:
            tasks.append(asyncio.create_task(reader()))
        t0 = ticks_ms()
        while ticks_diff(ticks_ms(), t0) < seconds * 1000:
            await sleep_ms(100)
            if "read" in o and state["reads"] and "linger" not in o:
                break
        for t in tasks:
            t.cancel()
        await sleep_ms(10)
        nodes = {}
        for k in disc.nodes:
            nodes[k] = ["%06X" % e for e in disc.nodes[k].eojs]
        m = disc.meter_addr()
        emit("summary", meter=m[0] if m else None, nodes=nodes, stats=disc.stats,
             answered=client.stats["answered"], events=[list(e) for e in disc.events])

    asyncio.run(main())
    ep.close()


def _mcast_socket(iface_ip):
    import socket
    import struct

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", PORT))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton(iface_ip)))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface_ip))
    s.setblocking(False)
    return s


class _McastEndpoint:
    """The emulator's asyncio endpoint (tools.meter_emulator.AsyncUdpEndpoint) opened on a
    multicast socket bound to 0.0.0.0:3610 in a namespace."""

    @classmethod
    async def open(cls, iface_ip):
        import asyncio

        from tools.meter_emulator import AsyncUdpEndpoint

        q = asyncio.Queue(1024)
        loop = asyncio.get_running_loop()
        tr, _ = await loop.create_datagram_endpoint(lambda: AsyncUdpEndpoint._Proto(q),
                                                    sock=_mcast_socket(iface_ip))
        return AsyncUdpEndpoint(tr, q)


def role_meter(argv):
    """tools.meter_emulator inside a namespace. The emulator refuses non-loopback addresses, so
    it is built on a loopback placeholder and its endpoint swapped for one on 0.0.0.0:3610 that
    has joined 224.0.23.0 (the change it needs is described in docs/discovery.md)."""
    import asyncio

    from tools.meter_emulator import MeterEmulator

    o = _opts(argv)
    ip = o.get("ip", IP_PEER)
    seconds = float(o.get("seconds", 5))
    extra = []
    if "two" in o:
        extra = [{"instance": 2, "device_type": b"\x02\xa1\x00", "serial": 2}]

    class NsMeterEmulator(MeterEmulator):
        async def start(self):
            self._ep = await _McastEndpoint.open(ip)
            self.addr = (ip, PORT)
            self._task = asyncio.get_running_loop().create_task(self._serve())

    async def main():
        emu = NsMeterEmulator(addr=("127.0.0.2", PORT), extra_objects=extra)
        await emu.start()
        edt = bytes((len(emu.objects),)) + b"".join(x.eoj.to_bytes(3, "big")
                                                     for x in emu.objects)
        # start-up INF 0xD5 from the node profile to the group
        announce = bytes.fromhex("1081 0001 0EF001 0EF001 73 01 D5") + bytes((len(edt),)) + edt
        if "announce" in o:
            emu._ep.sendto(announce, (GROUP, PORT))
        emit("ready", ip=ip)
        reboot_at = float(o.get("reboot_after", 0))
        t0 = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - t0 < seconds:
            await asyncio.sleep(0.05)
            if reboot_at and asyncio.get_running_loop().time() - t0 >= reboot_at:
                reboot_at = 0
                emu.reboot(reset_counters=False, announce_to=(GROUP, PORT))
                emit("rebooted")
        got = [(r.src[0], r.deoj, r.esv, r.epcs) for r in emu.requests]
        infs = [r for r in got if r[2] == 0x73]
        emit("summary", requests=len(got),
             sources=sorted({r[0] for r in got}),
             searches=sum(1 for r in got if r[1] == 0x0EF001 and r[2] == 0x62),
             meter_gets=sum(1 for r in got if r[1] >> 8 == 0x028E and r[2] == 0x62),
             infs=len(infs))
        await emu.stop()

    asyncio.run(main())


def role_listen(argv):
    """Record every datagram to 224.0.23.0:3610 for `seconds` (the terminal's announcement)."""
    import select
    import time

    o = _opts(argv)
    s = _mcast_socket(o.get("ip", IP_PEER))
    emit("ready")
    end = time.monotonic() + float(o.get("seconds", 3))
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], 0.1)
        if r:
            data, addr = s.recvfrom(1500)
            emit("datagram", src=addr[0], hex=data.hex())
    s.close()


def role_pychonet(argv):
    """pychonet (an independent controller) discovers the node at --target by multicast."""
    import asyncio

    from pychonet.echonetapiclient import ECHONETAPIClient
    from pychonet.lib.udpserver import UDPServer

    o = _opts(argv)
    target = o.get("target", IP_TERMINAL)
    seconds = float(o.get("seconds", 6))

    async def main():
        loop = asyncio.get_running_loop()
        server = UDPServer(local_ip=o.get("ip", IP_PEER))
        server.run("0.0.0.0", PORT, loop=loop)
        api = ECHONETAPIClient(server)
        api._logger = lambda *a: None
        api._message_timeout = 30  # x 0.1 s
        found = asyncio.Event()

        async def on_discover(host):
            await api.discover(host)  # unicast: 0x8A 0x8C 0x83 0xD6
            found.set()

        api._discover_callback = on_discover
        emit("ready")
        await api.discover()  # multicast Get 0xD6
        try:
            await asyncio.wait_for(found.wait(), seconds)
        except asyncio.TimeoutError:
            emit("summary", found=False, hosts=sorted(api._state))
            return
        st = api._state.get(target, {})
        inst = st.get("instances", {})
        objs = sorted("%02X%02X%02X" % (g, c, i)
                      for g in inst for c in inst[g] for i in inst[g][c])
        ok = await api.getAllPropertyMaps(target, 0x05, 0xFF, 0x01)
        maps = {}
        if ok:
            d = inst[0x05][0xFF][0x01]
            maps = {"%02X" % k: sorted(v) for k, v in d.items() if k in (0x9D, 0x9E, 0x9F)}
        ident = await api.getIdentificationInformation(target, 0x05, 0xFF, 0x01)
        emit("summary", found=True, hosts=sorted(api._state), objects=objs,
             discovered=bool(st.get("discovered")), maps=maps, ident=bool(ident),
             manufacturer=str(st.get("manufacturer")), uid=str(st.get("uid")))
        server.close()

    asyncio.run(main())


def role_uecho_meter(argv):
    """An independent 0x028E device implementation: uecho's LocalNode with a distributed
    generator's electric energy meter object (values fixed here, answered by uecho itself)."""
    import struct
    import time

    import uecho

    o = _opts(argv)
    seconds = float(o.get("seconds", 6))
    node = uecho.LocalNode()
    dev = uecho.Device(0x028E01)
    # 2024-10-15 10:30:00 JST, forward 100000, reverse 2500 (units of 0.1 kWh)
    stamp = struct.pack(">HBBBBB", 2024, 10, 15, 10, 30, 0)
    values = {0x80: b"\x30", 0x8A: b"\xff\xff\xff", 0x83: b"\xfe\xff\xff\xff" + b"UECHO-METER01",
              0x82: b"\x00\x00R\x00", 0xD0: b"\x02\x7e\x00", 0xD3: b"\x00\x2d", 0xD4: b"\x01",
              0xE0: struct.pack(">I", 100000), 0xE2: struct.pack(">I", 2500),
              0xE6: stamp + struct.pack(">I", 100000), 0xE7: stamp + struct.pack(">I", 2500)}
    for epc, edt in values.items():
        prop = dev.get_property(epc)
        # uecho's bundled MRA data marks 0xE6/0xE7 Get as prohibited (MRA R: conditionally
        # required): this device implements them, so they are made readable.
        prop.set_attribute(uecho.Property.GET, uecho.Property.REQUIRED)
        prop.data = edt
    node.add_object(dev)
    if not node.start():
        emit("summary", started=False)
        return
    # Start-up announcement (INF 0xD5) from uecho's own node profile, sent by uecho to the group.
    np = node.get_object(0x0EF001)
    msg = uecho.Message()
    msg.ESV = 0x73
    msg.SEOJ = 0x0EF001
    msg.DEOJ = 0x0EF001
    msg.add_property((0xD5, np.get_property_data(0xD5)))
    node.announce_message(msg)
    emit("ready", addrs=[s.ifaddr for s in node._LocalNode__manager.servers])
    time.sleep(seconds)
    node.stop()
    emit("summary", started=True)


ROLES = {"terminal": role_terminal, "meter": role_meter, "listen": role_listen,
         "pychonet": role_pychonet, "uecho-meter": role_uecho_meter}

if __name__ == "__main__":
    ROLES[sys.argv[1]](sys.argv[2:])
