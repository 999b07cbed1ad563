"""The default bridge network on the real kernel, in the host's netns.

Each session uses its own bridge name (``kt<hex>``), nft table
(``ketch_test_<hex>``) and a subnet from 10.213.0.0/16 that no host route
covers; "containers" are ``unshare -n sleep`` processes. Finalizers tear down
everything and then check that no interface, table or state file is left.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.throwaway_netns import Netns

from ketch.errors import Conflict, NotFound, NotSupported
from ketch.linux.netlink import Netlink
from ketch.linux.nftables import Nft
from ketch.network.bridge import BridgeConfig, BridgeNetwork, cleanup_leftovers
from ketch.network.endpoint import EndpointRequest
from ketch.network.ipam import AddressPool
from ketch.network.ports import parse_publish
from ketch.network.proxy import host_has_ipv6

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"
POOLS = (AddressPool(ipaddress.IPv4Network("10.213.0.0/16"), 24),)


def req(cid: str, netns: str, *, ports: object = ()) -> EndpointRequest:
    return EndpointRequest(cid, netns, ports=tuple(ports))  # type: ignore[arg-type]


@pytest.fixture
def names() -> tuple[str, str]:
    tag = secrets.token_hex(4)
    return f"kt{tag}", f"ketch_test_{tag}"


def _leftovers(bridge: str, table: str, veths: list[str], state_dir: Path) -> list[str]:
    found = []
    with Netlink() as nl:
        links = {link.name for link in nl.links()}
    found += [n for n in [bridge, *veths] if n in links]
    if Nft().table_exists("inet", table) or Nft().table_exists("ip", table):
        found.append(f"table {table}")
    found += [p.name for p in state_dir.glob("bridge-*.json")]
    return found


def _host_firewall_and_forwarding() -> tuple[list[str], str]:
    """The host's own tables, whole, and ip_forward. Other ketch daemons' tables
    (``ketch*``, other tests' or benchmarks' running meanwhile) are left out: they
    change under their own daemons."""
    nft = Nft()
    tables = [line.split()[1:] for line in nft.run("list tables").splitlines() if line]
    own = [nft.run(f"list table {fam} {name}") for fam, name in tables
           if not name.startswith("ketch")]
    return own, Path("/proc/sys/net/ipv4/ip_forward").read_text()


@pytest.fixture
def net(tmp_path: Path, names: tuple[str, str],
        request: pytest.FixtureRequest) -> Iterator[BridgeNetwork]:
    bridge, table = names
    state_dir = tmp_path / "netstate"
    before = _host_firewall_and_forwarding()
    icc = getattr(request, "param", True)
    n = BridgeNetwork(str(state_dir), BridgeConfig(name=bridge, table=table,
                                                     address_pools=POOLS, icc=icc))
    n.setup()
    veths: list[str] = []
    yield n
    try:
        veths = [e.host_veth for e in n.endpoints()]
    except Exception:  # noqa: BLE001 - the test may have closed it
        pass
    n.close()       # its threads (the proxy's) go; kernel objects stay for the teardown
    fresh = BridgeNetwork(str(state_dir), BridgeConfig(name=bridge, table=table,
                                                       address_pools=POOLS))
    fresh.teardown()
    left = _leftovers(bridge, table, veths, state_dir)
    assert not left, f"left behind: {left}"
    # Other tables and the forwarding sysctl are as they were (ketch puts ip_forward
    # back only if it was the one that turned it on).
    assert _host_firewall_and_forwarding() == before


@pytest.fixture
def netns() -> Iterator[list[Netns]]:
    made: list[Netns] = []
    yield made
    for ns in made:
        ns.kill()


def _host_address(exclude: str) -> str:
    """An address of the host that is not loopback and not on our bridge."""
    with Netlink() as nl:
        names = {link.index: link.name for link in nl.links()}
        for a in nl.addresses():
            if not a.address.ip.is_loopback and names.get(a.index) != exclude:
                return str(a.address.ip)
    pytest.skip("the host has no address besides loopback")


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _serve(ns: Netns, tmp_path: Path, body: str, ip: str) -> None:
    """busybox httpd on port 80 inside ``ns``; returns once it accepts connections."""
    www = tmp_path / f"www-{secrets.token_hex(2)}"
    www.mkdir()
    (www / "index.html").write_text(body)
    ns.spawn(BUSYBOX, "httpd", "-f", "-p", "80", "-h", str(www))
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection((ip, 80), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_bridge_ping_publish_and_clean_detach(net: BridgeNetwork, netns: list[Netns],
                                              tmp_path: Path) -> None:
    a, b = Netns(), Netns()
    netns += [a, b]
    bridge = net.config.name
    assert net.subnet.subnet_of(ipaddress.IPv4Network("10.213.0.0/16"))
    assert net.gateway == net.subnet.network_address + 1
    with open(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet") as f:
        assert f.read().strip() == "1"

    ea = net.attach(req("ca-" + secrets.token_hex(4), a.path))
    eb = net.attach(req("cb-" + secrets.token_hex(4), b.path,
                    ports=parse_publish(["80"])))
    assert ea.ip == net.subnet.network_address + 2
    assert eb.ip == net.subnet.network_address + 3
    assert ea.mac == "02:42:" + ":".join(f"{x:02x}" for x in ea.ip.packed)
    assert len(ea.host_veth) <= 15 and ea.host_veth.startswith("veth")
    port_info = subprocess.run(["bridge", "-d", "link", "show", "dev", ea.host_veth],
                               capture_output=True, text=True).stdout
    assert f"master {bridge}" in port_info and "hairpin on" in port_info

    # Inside: eth0 with address and MAC, lo up, default route via the gateway.
    addr = a.run("ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"{ea.ip}/{ea.prefix}" in addr
    assert ea.mac in a.run("ip", "-o", "link", "show", "dev", "eth0").stdout
    assert "UP" in a.run("ip", "-o", "link", "show", "dev", "lo").stdout
    assert f"default via {net.gateway} dev eth0" in a.run("ip", "route").stdout

    # Container to container, and to the gateway.
    assert a.run(BUSYBOX, "ping", "-c1", "-W2", str(eb.ip)).returncode == 0
    assert b.run(BUSYBOX, "ping", "-c1", "-W2", str(net.gateway)).returncode == 0

    # -p 80: an ephemeral port on 0.0.0.0 (DNAT) and the same on [::] (the userland
    # proxy: IPv6 clients cannot be DNATed to the container's IPv4 address)
    mapping = eb.ports[0]
    v6 = host_has_ipv6()
    assert [(m.host_ip, m.host_port) for m in eb.ports[1:]] == \
        ([("::", mapping.host_port)] if v6 else [])
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert lo <= mapping.host_port <= hi and mapping.host_ip == "0.0.0.0"
    _serve(b, tmp_path, "hello from b\n", str(eb.ip))
    port = mapping.host_port
    host_ip = _host_address(bridge)
    # The host's loopback (output DNAT + route_localnet + masquerade of 127/8)...
    assert _http_get(f"http://127.0.0.1:{port}/") == "hello from b\n"
    # ... the host's own address, and IPv6 loopback through the proxy...
    assert _http_get(f"http://{host_ip}:{port}/") == "hello from b\n"
    if v6:
        assert _http_get(f"http://[::1]:{port}/") == "hello from b\n"
    # ... another container through the host's address, and b through it to itself.
    for ns in (a, b):
        # (busybox-static's wget crashes resolving names with this glibc: use Python)
        out = ns.run(sys.executable, "-c", "import urllib.request as u; print(u.urlopen("
                     f"'http://{host_ip}:{port}/', timeout=5).read().decode(), end='')")
        assert out.stdout == "hello from b\n", out.stderr

    # A second container cannot take the same host port.
    c = Netns()
    netns.append(c)
    cid_c = "cc-" + secrets.token_hex(4)
    with pytest.raises(Conflict, match="port is already allocated"):
        net.attach(req(cid_c, c.path, ports=parse_publish([f"{port}:80"])))
    assert net.endpoint(cid_c) is None
    # ... and the address it would have had is free again.
    ec = net.attach(req(cid_c, c.path))
    assert ec.ip == net.subnet.network_address + 4
    net.detach(cid_c)

    # Detach: veth gone (and eth0 with it), the rule gone, the address free.
    net.detach(eb.container_id)
    with Netlink() as nl:
        assert nl.link(eb.host_veth) is None
    assert "eth0" not in b.run("ip", "-o", "link").stdout
    assert f"{port}" not in Nft().run(f"list map inet {net.config.table} pub_any")
    with pytest.raises(OSError):
        _http_get(f"http://127.0.0.1:{port}/")
    net.detach(eb.container_id)          # idempotent
    again = net.attach(req("cd-" + secrets.token_hex(4), b.path))
    assert again.ip == eb.ip             # lowest free, as dockerd


def test_attach_failure_leaves_nothing(net: BridgeNetwork, netns: list[Netns]) -> None:
    with pytest.raises(NotFound):
        net.attach(req("gone", "/proc/999999999/ns/net"))
    assert net.endpoints() == []
    a = Netns()
    netns.append(a)
    ep = net.attach(req("x1", a.path))
    assert ep.ip == net.subnet.network_address + 2
    # eth0 exists already in that netns: refused, and the host end is not left behind.
    with pytest.raises(Conflict):
        net.attach(req("x2", a.path))
    with Netlink() as nl:
        assert nl.link(ep.host_veth) is not None
        assert [link.name for link in nl.links() if link.master == nl.index(net.config.name)] \
            == [ep.host_veth]
    assert [e.container_id for e in net.endpoints()] == ["x1"]


def test_restart_keeps_endpoints_and_cleanup_removes_leftovers(
        net: BridgeNetwork, netns: list[Netns], tmp_path: Path, names: tuple[str, str]) -> None:
    bridge, table = names
    a, b = Netns(), Netns()
    netns += [a, b]
    ea = net.attach(req("live", a.path, ports=parse_publish(["127.0.0.1::80"])))
    eb = net.attach(req("dead", b.path, ports=parse_publish(["80/udp"])))
    state_dir = net.state_dir
    net.close()                              # the daemon goes away; kernel objects stay

    removed = cleanup_leftovers(state_dir, keep=["live"])
    assert f"link {eb.host_veth}" in removed
    assert cleanup_leftovers(state_dir, keep=["live"]) == []     # idempotent
    again = BridgeNetwork(state_dir, BridgeConfig(name=bridge, table=table,
                                                  address_pools=POOLS))
    again.setup()
    assert [e.container_id for e in again.endpoints()] == ["live"]
    assert again.endpoint("live") == ea
    listing = Nft().run(f"list table inet {table}")
    assert f"127.0.0.1 . tcp . {ea.ports[0].host_port}" in listing
    assert "udp" not in listing.split("map pub_any")[1].split("}")[0]
    # The recorded host port is held again: nobody else can bind it.
    with pytest.raises(Conflict):
        again.attach(req("other", b.path, ports=parse_publish([f"127.0.0.1:{ea.ports[0].host_port}:80"])))
    again.close()

    removed = cleanup_leftovers(state_dir)
    assert f"link {ea.host_veth}" in removed and f"link {bridge}" in removed
    assert f"nft table inet {table}" in removed
    assert cleanup_leftovers(state_dir) == []
    assert _leftovers(bridge, table, [ea.host_veth, eb.host_veth], Path("/nonexistent")) == []


@pytest.mark.parametrize("net", [False], indirect=True, ids=["icc=false"])
def test_icc_false_isolates_containers(net: BridgeNetwork, netns: list[Netns]) -> None:
    a, b = Netns(), Netns()
    netns += [a, b]
    net.attach(req("i1", a.path))
    eb = net.attach(req("i2", b.path))
    assert a.run(BUSYBOX, "ping", "-c1", "-W1", str(eb.ip)).returncode != 0
    assert a.run(BUSYBOX, "ping", "-c1", "-W1", str(net.gateway)).returncode == 0


def test_background_detach(net: BridgeNetwork, netns: list[Netns]) -> None:
    a, b = Netns(), Netns()
    netns += [a, b]
    ea = net.attach(req("bg1", a.path, ports=parse_publish(["80"])))
    net.detach("bg1", background=True)
    assert net.endpoint("bg1") is None
    assert str(ea.ports[0].host_port) not in Nft().run(f"list map inet {net.config.table} pub_any")
    # Until the veth is gone its address is not handed out again...
    eb = net.attach(req("bg2", b.path))
    assert eb.ip in (ea.ip, ea.ip + 1)
    net.drain()
    with Netlink() as nl:
        assert nl.link(ea.host_veth) is None
    # ... and a restart of the same container waits for its old veth.
    net.detach("bg2", background=True)
    again = net.attach(req("bg2", b.path))
    assert again.host_veth == eb.host_veth
    net.detach("bg2", background=True)
    net.detach("bg2")                        # waits for the pending one
    with Netlink() as nl:
        assert nl.link(eb.host_veth) is None
    assert net.endpoints() == []


def test_attach_detach_time(net: BridgeNetwork, netns: list[Netns]) -> None:
    """Not asserted on (tests never assert on timings): printed for the report."""
    spaces = [Netns() for _ in range(10)]
    netns += spaces
    half = len(spaces) // 2
    t0 = time.perf_counter()
    for i, ns in enumerate(spaces):
        net.attach(req(f"t{i}", ns.path, ports=parse_publish(["80"])))
    t1 = time.perf_counter()
    for i in range(half):
        net.detach(f"t{i}")
    t2 = time.perf_counter()
    for i in range(half, len(spaces)):
        net.detach(f"t{i}", background=True)
    t3 = time.perf_counter()
    net.drain()
    print(f"\nattach {(t1 - t0) / len(spaces) * 1000:.2f} ms, "
          f"detach {(t2 - t1) / half * 1000:.2f} ms, "
          f"background detach {(t3 - t2) / half * 1000:.2f} ms per container")
    assert net.endpoints() == []


def _private_scenario() -> dict[str, object]:
    """Run in a fresh netns (``unshare -n``) with br_netfilter's hook off there, as on
    a host where it is not loaded: routed hairpin and loopback paths, and the
    clear refusal of icc=false. The "uplink" is a veth pair with a documentation
    address; everything dies with the netns."""
    import json  # noqa: F401 - used by the caller's protocol
    import tempfile

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("0")
    subprocess.run(["ip", "link", "add", "upl0", "type", "veth", "peer", "name", "upl1"],
                   check=True)
    subprocess.run(["ip", "addr", "add", "198.51.100.2/24", "dev", "upl0"], check=True)
    for dev in ("upl0", "upl1"):
        subprocess.run(["ip", "link", "set", dev, "up"], check=True)
    tmp = Path(tempfile.mkdtemp())
    results: dict[str, object] = {}
    try:
        BridgeNetwork(str(tmp / "icc"), BridgeConfig(name="kticc", table="ketch_icc",
                                                      icc=False)).setup()
    except NotSupported as exc:
        results["icc"] = str(exc)
    net = BridgeNetwork(str(tmp / "state"), BridgeConfig(name="ktpriv", table="ketch_priv"))
    net.setup()
    a, b = Netns(), Netns()
    try:
        net.attach(req("a", a.path))
        eb = net.attach(req("b", b.path, ports=parse_publish(["18080:80"])))
        _serve(b, tmp, "hello\n", str(eb.ip))
        results["loopback"] = _http_get("http://127.0.0.1:18080/")
        results["host"] = _http_get("http://198.51.100.2:18080/")
        for name, ns in (("from_a", a), ("from_b", b)):
            out = ns.run(sys.executable, "-c", "import urllib.request as u; print(u.urlopen("
                         "'http://198.51.100.2:18080/', timeout=5).read().decode(), end='')")
            results[name] = out.stdout or out.stderr[-200:]
        results["subnet"] = str(net.subnet)
    finally:
        a.kill()
        b.kill()
        net.teardown()
    return results


def test_publish_without_br_netfilter() -> None:
    import json

    # (run as a script: the repository's root on its path, for ``tests.*``)
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(["unshare", "-n", sys.executable, __file__, "private-scenario"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": repo})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["subnet"] == "172.17.0.0/16"      # nothing in this netns overlaps docker0's
    for key in ("loopback", "host", "from_a", "from_b"):
        assert got[key] == "hello\n", (key, got[key])
    assert "br_netfilter" in str(got["icc"])


if __name__ == "__main__" and sys.argv[1:] == ["private-scenario"]:
    import json

    print(json.dumps(_private_scenario()))
