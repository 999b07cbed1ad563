"""The macvlan and ipvlan drivers on the real kernel.

The "uplink" parent is an interface made per test with this session's tag
(``kmv<tag><n>``: a dummy, or an ifb on kernels built without dummy); network
ids start with the tag, so ketch's own parents (``dm-<id[:12]>``) carry it too.
"Containers" are ``unshare -n sleep`` processes, killed by pid in finalizers
(their netns takes the sub-interfaces with it). Finalizers delete every host
interface with the tag and check that none is left, also when a test fails.

Kernels without ipvlan or 802.1q (CONFIG_IPVLAN / CONFIG_VLAN_8021Q unset) run
the failure paths instead: the attach or setup fails with dockerd's message and
leaves no interface and no record.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.conftest import PREFIX
from tests.integration.throwaway_netns import Netns

from ketch.errors import Conflict, Forbidden, InvalidArgument, NotFound, NotSupported, System
from ketch.linux import netlink_links as links
from ketch.linux.netlink import Netlink
from ketch.network.endpoint import EndpointRequest
from ketch.network.macvlan import (
    MacvlanNetwork,
    cleanup_leftovers,
    config_from_options,
    dummy_name,
    load_state,
    state_path,
)

pytestmark = pytest.mark.root

TAG = PREFIX.rsplit("-", 1)[-1][:6]          # 6 hex of this session
SUBNET = "10.214.0.0/24"
GATEWAY = "10.214.0.1"


def _host_links() -> set[str]:
    with Netlink() as nl:
        return {link.name for link in nl.links()}


def _ours() -> set[str]:
    return {n for n in _host_links() if TAG in n}


class Env:
    """Per-test factory of uplinks, netns and networks; the finalizer undoes all."""

    def __init__(self, tmp_path: Path) -> None:
        self.state_dir = str(tmp_path / "netstate")
        self.n = 0
        self.uplinks: list[str] = []
        self.netns: list[Netns] = []
        self.nets: list[MacvlanNetwork] = []

    def network_id(self) -> str:
        return TAG + secrets.token_hex(29)

    def uplink(self) -> str:
        self.n += 1
        name = f"kmv{TAG}{self.n}"
        self.uplinks.append(name)
        with Netlink() as nl:
            links.create_internal_parent(nl, name)
            nl.set_up(nl.index(name))
        return name

    def ns(self) -> Netns:
        ns = Netns()
        self.netns.append(ns)
        return ns

    def net(self, driver: str = "macvlan", options: dict[str, str] | None = None,
            **ipam: object) -> MacvlanNetwork:
        ipam.setdefault("subnet", SUBNET)
        if "gateway" not in ipam:
            ipam["gateway"] = GATEWAY
        cfg = config_from_options(driver, options or {}, network_id=self.network_id(),
                                  name=f"n{self.n}", **ipam)  # type: ignore[arg-type]
        net = MacvlanNetwork(self.state_dir, cfg)
        self.nets.append(net)
        net.setup()
        return net

    def finish(self) -> None:
        for ns in self.netns:
            ns.kill()
        errors = []
        for net in self.nets:
            try:
                MacvlanNetwork(self.state_dir, net.config).teardown()
            except Exception as exc:  # noqa: BLE001 - delete the rest
                errors.append(exc)
        with Netlink() as nl:
            for name in sorted(_ours()):     # VLANs of the uplinks first (sorted: "x.10" > "x")
                nl.delete_link(name) if "." in name else None
            for name in sorted(_ours()):
                nl.delete_link(name)
        assert not errors, errors


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        left_before_cleanup = _ours() - set(e.uplinks)
        e.finish()
        assert not _ours(), f"left behind: {_ours()}"
        assert not left_before_cleanup, f"teardown left behind: {left_before_cleanup}"


def _req(ns: Netns, **kw: object) -> EndpointRequest:
    return EndpointRequest(container_id=kw.pop("cid", None) or "c" + secrets.token_hex(31),
                           netns_path=ns.path, **kw)  # type: ignore[arg-type]


def _kernel_has(kind: str) -> bool:
    """Whether this kernel can make ``kind`` links (tried in a throwaway netns)."""
    ns = Netns()
    try:
        with Netlink(ns.path) as nl:
            links.create_internal_parent(nl, "p0")
            idx = nl.index("p0")
            try:
                if kind == "ipvlan":
                    links.create_ipvlan(nl, "t0", parent_index=idx)
                else:
                    links.create_vlan(nl, "p0.10", parent_index=idx, vlan_id=10)
            except OSError:
                return False
            return True
    finally:
        ns.kill()


# -- macvlan -------------------------------------------------------------------------


def test_macvlan_bridge_mode_two_endpoints(env: Env) -> None:
    parent = env.uplink()
    net = env.net(options={"parent": parent})
    a, b = env.ns(), env.ns()
    ea = net.attach(_req(a))
    eb = net.attach(_req(b, ifname="eth1"))
    assert (str(ea.ip), str(eb.ip)) == ("10.214.0.2", "10.214.0.3")
    assert ea.mac == "02:42:0a:d6:00:02" and eb.mac == "02:42:0a:d6:00:03"
    assert ea.gateway == ipaddress.IPv4Address(GATEWAY) and ea.prefix == 24
    assert ea.host_veth == "" and ea.ports == () and len(ea.endpoint_id) == 64

    detail = a.run("ip", "-d", "-o", "link", "show", "dev", "eth0").stdout
    assert "macvlan mode bridge" in detail and ea.mac in detail and "UP" in detail
    assert "10.214.0.2/24" in a.run("ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert "UP" in a.run("ip", "-o", "link", "show", "dev", "lo").stdout
    assert f"default via {GATEWAY} dev eth0" in a.run("ip", "route").stdout
    assert "eth1" in b.links() and "eth0" not in b.links()
    with Netlink(a.path) as inner:
        d = links.link_details(inner, "eth0")
        assert d is not None and d.kind == "macvlan" and d.parent_netnsid >= 0

    assert a.ping(eb.ip) and b.ping(ea.ip)

    st = load_state(env.state_dir, net.config.network_id)
    assert st is not None and set(st.endpoints) == {ea.container_id, eb.container_id}
    assert st.created_parent == "" and st.parent == parent

    net.detach(ea.container_id)
    net.detach(ea.container_id)              # idempotent
    assert "eth0" not in a.links()
    assert net.endpoint(ea.container_id) is None
    again = net.attach(_req(a, cid=ea.container_id))
    assert again.ip == ea.ip                # released address reused first

    net.teardown()
    assert a.links() == {"lo"} and b.links() == {"lo"}
    assert parent in _host_links()          # never a parent ketch did not create
    assert not os.path.exists(state_path(env.state_dir, net.config.network_id))


def test_macvlan_private_mode_isolates_ports(env: Env) -> None:
    net = env.net(options={"parent": env.uplink(), "macvlan_mode": "private"})
    a, b = env.ns(), env.ns()
    net.attach(_req(a))
    eb = net.attach(_req(b))
    assert "macvlan mode private" in a.run("ip", "-d", "link", "show", "eth0").stdout
    assert not a.ping(eb.ip)


def test_static_ip_ip_range_and_mac(env: Env) -> None:
    net = env.net(options={"parent": env.uplink()}, ip_range="10.214.0.128/25")
    a, b, c = env.ns(), env.ns(), env.ns()
    ea = net.attach(_req(a))
    assert str(ea.ip) == "10.214.0.128"     # the range's first address (as moby's IPAM)
    eb = net.attach(_req(b, ip="10.214.0.5", mac="02:11:22:33:44:55"))
    assert str(eb.ip) == "10.214.0.5" and eb.mac == "02:11:22:33:44:55"
    assert "02:11:22:33:44:55" in b.run("ip", "link", "show", "eth0").stdout
    assert a.ping(eb.ip)
    # dockerd's statuses: taken 403, outside the subnet 500
    with pytest.raises(Forbidden, match="Address already in use"):
        net.attach(_req(c, ip="10.214.0.5"))
    with pytest.raises(System, match="does not belong to any of this network's subnets"):
        net.attach(_req(c, ip="10.99.0.5"))
    assert c.links() == {"lo"}
    assert len(net.endpoints()) == 2


def test_internal_and_second_network_get_no_default_route(env: Env) -> None:
    parent = env.uplink()
    internal = env.net(options={"parent": parent}, internal=True)
    a = env.ns()
    ep = internal.attach(_req(a))
    assert ep.gateway is None
    assert "default" not in a.run("ip", "route").stdout
    other = env.net(options={"parent": parent}, subnet="10.214.1.0/24", gateway="10.214.1.1")
    ep2 = other.attach(_req(a, ifname="eth1", default_route=False))
    assert ep2.gateway is None and "default" not in a.run("ip", "route").stdout
    assert "10.214.1.2/24" in a.run("ip", "-o", "addr", "show", "dev", "eth1").stdout


def test_dual_stack(env: Env) -> None:
    net = env.net(options={"parent": env.uplink()}, subnet6="fd00:214::/64",
                  gateway6="fd00:214::1")
    a, b = env.ns(), env.ns()
    ea = net.attach(_req(a))
    eb = net.attach(_req(b, ip6="fd00:214::99"))
    assert str(ea.ip6) == "fd00:214::2" and ea.prefix6 == 64
    assert ea.gateway6 == ipaddress.IPv6Address("fd00:214::1")
    assert str(eb.ip6) == "fd00:214::99"
    assert "fd00:214::2/64" in a.run("ip", "-o", "-6", "addr", "show", "dev", "eth0").stdout
    assert "default via fd00:214::1 dev eth0" in a.run("ip", "-6", "route").stdout
    assert a.ping(eb.ip6)


def test_passthru_takes_the_parent_alone(env: Env) -> None:
    parent = env.uplink()
    with Netlink() as nl:
        parent_mac = nl.link(parent).mac  # type: ignore[union-attr]
    net = env.net(options={"parent": parent, "macvlan_mode": "passthru"})
    ep = net.attach(_req(env.ns()))
    assert ep.mac == parent_mac             # passthru inherits the parent's MAC
    with pytest.raises(Conflict, match="already using parent interface .* in mode passthru"):
        env.net(options={"parent": parent})


def test_missing_parent(env: Env) -> None:
    with pytest.raises(InvalidArgument, match=f"invalid subinterface vlan name kmv{TAG}x, "
                                              "example formatting is eth0.10"):
        env.net(options={"parent": f"kmv{TAG}x"})
    assert not list(Path(env.state_dir).glob("macvlan-*.json"))
    parent = env.uplink()
    net = env.net(options={"parent": parent})
    with Netlink() as nl:
        nl.delete_link(parent)
    a = env.ns()
    with pytest.raises(NotFound, match=f"the requested parent interface {parent} was not found"):
        net.attach(_req(a))
    assert a.links() == {"lo"} and not net.endpoints()


# -- failures leave nothing ----------------------------------------------------------


def test_duplicate_ifname_in_netns_leaves_theirs_alone(env: Env) -> None:
    parent = env.uplink()
    net = env.net(options={"parent": parent})
    a = env.ns()
    assert a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0").returncode == 0
    with pytest.raises(Conflict, match="failed to create the macvlan port: file exists"):
        net.attach(_req(a))
    assert a.links() == {"lo", "eth0", "other0"}   # the netns's own eth0 is untouched
    assert not net.endpoints()
    st = load_state(env.state_dir, net.config.network_id)
    assert st is not None and not st.endpoints
    b = env.ns()
    assert str(net.attach(_req(b)).ip) == "10.214.0.2"   # the address was given back


def test_failure_after_the_port_exists_removes_it(env: Env) -> None:
    net = env.net(options={"parent": env.uplink()}, subnet6="fd00:214::/64",
                  gateway6="fd00:214::1")
    a = env.ns()
    # IPv6 off in the netns: the IPv6 address fails once eth0 exists
    for key in ("all", "default"):
        assert a.run("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1").returncode == 0
    with pytest.raises(OSError, match="add address fd00:214::2/64"):
        net.attach(_req(a))
    assert a.links() == {"lo"}
    assert not net.endpoints()
    st = load_state(env.state_dir, net.config.network_id)
    assert st is not None and not st.endpoints


def test_gone_netns(env: Env) -> None:
    net = env.net(options={"parent": env.uplink()})
    a = env.ns()
    ep = net.attach(_req(a))
    a.kill()
    net.detach(ep.container_id)             # nothing to delete: no error
    assert not net.endpoints()
    b = env.ns()
    b.kill()
    with pytest.raises(NotFound):
        net.attach(_req(b))
    assert not net.endpoints()


# -- parents ketch creates -----------------------------------------------------------


def test_parentless_network_has_its_own_dummy(env: Env) -> None:
    net = env.net()
    name = dummy_name("macvlan", net.config.network_id)
    assert name.startswith("dm-" + TAG) and len(name) == 15
    assert net.config.internal               # no parent: internal, as moby 28
    with Netlink() as nl:
        d = links.link_details(nl, name)
    assert d is not None and d.kind in ("dummy", "ifb") and d.up
    st = load_state(env.state_dir, net.config.network_id)
    assert st is not None and st.created_parent == d.kind and st.parent == name
    a, b = env.ns(), env.ns()
    ea, eb = net.attach(_req(a)), net.attach(_req(b))
    assert ea.gateway is None and "default" not in a.run("ip", "route").stdout
    assert a.ping(eb.ip)                    # the containers still reach each other
    net.setup()                              # idempotent: same parent, endpoints kept
    assert len(net.endpoints()) == 2
    net.teardown()
    assert name not in _host_links()
    assert a.links() == {"lo"}


def test_vlan_parent(env: Env) -> None:
    base = env.uplink()
    vlan = f"{base}.10"
    if _kernel_has("vlan"):
        net = env.net(options={"parent": vlan})
        with Netlink() as nl:
            d = links.link_details(nl, vlan)
        assert d is not None and d.kind == "vlan" and d.vlan_id == 10 and d.up
        st = load_state(env.state_dir, net.config.network_id)
        assert st is not None and st.created_parent == "vlan"
        a, b = env.ns(), env.ns()
        eb = net.attach(_req(b))
        net.attach(_req(a))
        assert a.ping(eb.ip)
        net.teardown()
        assert vlan not in _host_links() and base in _host_links()
    else:
        with pytest.raises(NotSupported,
                           match=f"failed to create {vlan} vlan link: operation not supported"):
            env.net(options={"parent": vlan})
        assert vlan not in _host_links()
        assert not list(Path(env.state_dir).glob("macvlan-*.json"))
    with pytest.raises(NotFound, match="-o parent interface was not found on the host: nope"):
        env.net(options={"parent": "nope.10"})
    with pytest.raises(InvalidArgument, match="vlan id must be between 1-4094, received: 5000"):
        env.net(options={"parent": f"{base}.5000"})
    with pytest.raises(InvalidArgument, match="unable to parse a valid vlan id from: x"):
        env.net(options={"parent": f"{base}.x"})
    assert not list(Path(env.state_dir).glob("macvlan-*.json"))


def test_existing_vlan_parent_is_not_removed(env: Env) -> None:
    if not _kernel_has("vlan"):
        pytest.skip("this kernel has no 802.1q VLAN support (CONFIG_VLAN_8021Q)")
    base = env.uplink()
    with Netlink() as nl:
        links.create_vlan(nl, f"{base}.20", parent_index=nl.index(base), vlan_id=20)
    net = env.net(options={"parent": f"{base}.20"})
    net.teardown()
    assert f"{base}.20" in _host_links()


# -- ipvlan --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_ipvlan(env: Env, mode: str) -> None:
    parent = env.uplink()
    gateway = None if mode == "l3" else GATEWAY     # l3 networks have none (GetSkipGwAlloc)
    net = env.net("ipvlan", {"parent": parent, "ipvlan_mode": mode}, gateway=gateway)
    a, b = env.ns(), env.ns()
    with pytest.raises(InvalidArgument, match="do not support custom mac address"):
        net.attach(_req(a, mac="02:00:00:00:00:01"))
    if not _kernel_has("ipvlan"):
        with pytest.raises(NotSupported,
                           match="failed to create the ipvlan port: operation not supported"):
            net.attach(_req(a))
        assert a.links() == {"lo"} and not net.endpoints()
        st = load_state(env.state_dir, net.config.network_id)
        assert st is not None and not st.endpoints
        return
    with Netlink() as nl:
        parent_mac = nl.link(parent).mac  # type: ignore[union-attr]
    ea, eb = net.attach(_req(a)), net.attach(_req(b))
    assert ea.mac == parent_mac and eb.mac == parent_mac
    detail = a.run("ip", "-d", "link", "show", "eth0").stdout
    assert f"ipvlan  mode {mode} bridge" in detail or f"ipvlan mode {mode} bridge" in detail
    routes = a.run("ip", "route").stdout
    if mode == "l3":
        assert ea.gateway is None and "default dev eth0" in routes
    else:
        assert f"default via {GATEWAY} dev eth0" in routes
    assert a.ping(eb.ip)


def test_ipvlan_one_network_per_parent(env: Env) -> None:
    parent = env.uplink()
    first = env.net("ipvlan", {"parent": parent})
    with pytest.raises(Conflict, match=f"network di-{first.config.network_id[:12]} is already "
                                       f"using parent interface {parent}"):
        env.net("ipvlan", {"parent": parent})


# -- restart and cleanup -------------------------------------------------------------


def test_cleanup_leftovers_removes_exactly_what_was_recorded(env: Env) -> None:
    parentless = env.net()
    parent = env.uplink()
    kept = env.net(options={"parent": parent}, subnet="10.214.1.0/24", gateway="10.214.1.1")
    a, b, c = env.ns(), env.ns(), env.ns()
    ea = kept.attach(_req(a))
    kept.attach(_req(b))
    ec = parentless.attach(_req(c))
    # A record whose netns is not the one it was made in (a reused pid) is never acted on.
    d = env.ns()
    ed = kept.attach(_req(d))
    path = state_path(env.state_dir, kept.config.network_id)
    raw = json.loads(Path(path).read_text())
    raw["endpoints"][ed.container_id]["netns_id"] = [0, 0]
    Path(path).write_text(json.dumps(raw))
    for n in (kept, parentless):
        n.close()                           # the daemon stops; kernel objects stay

    removed = cleanup_leftovers(env.state_dir, [ea.container_id, ec.container_id])
    assert removed == [f"link eth0 in {b.path}"]
    assert "eth0" in a.links() and "eth0" not in b.links()
    assert "eth0" in d.links()              # not touched: netns identity differs
    assert "eth0" in c.links()
    assert cleanup_leftovers(env.state_dir, [ea.container_id, ec.container_id]) == []

    # A restarted daemon carries on with what was kept.
    again = MacvlanNetwork(env.state_dir, kept.config)
    again.setup()
    assert [e.container_id for e in again.endpoints()] == [ea.container_id]
    assert again.endpoint(ea.container_id) == ea
    e2 = again.attach(_req(b))
    assert str(e2.ip) == "10.214.1.3"       # b's old address, released by the cleanup
    again.close()

    # Networks the daemon no longer knows go whole: endpoints, ketch's dummy, the record.
    dummy = dummy_name("macvlan", parentless.config.network_id)
    removed = cleanup_leftovers(env.state_dir, [ea.container_id],
                                keep_network_ids=[kept.config.network_id])
    # (the networks' state files are read in the order of their random IDs)
    assert sorted(removed) == sorted([f"link eth0 in {b.path}", f"link eth0 in {c.path}",
                                      f"link {dummy}"])
    assert dummy not in _host_links() and "eth0" not in c.links()
    assert not os.path.exists(state_path(env.state_dir, parentless.config.network_id))
    assert parent in _host_links()
    d.kill()


def test_concurrent_attach_and_detach(env: Env) -> None:
    net = env.net(options={"parent": env.uplink()})
    spaces = [env.ns() for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        eps = list(pool.map(lambda ns: net.attach(_req(ns)), spaces))
    assert sorted(int(str(e.ip).rsplit(".", 1)[1]) for e in eps) == [2, 3, 4, 5, 6, 7]
    assert spaces[0].ping(eps[5].ip)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda e: net.detach(e.container_id), eps))
    assert not net.endpoints() and all(ns.links() == {"lo"} for ns in spaces)
    st = load_state(env.state_dir, net.config.network_id)
    assert st is not None and not st.endpoints
