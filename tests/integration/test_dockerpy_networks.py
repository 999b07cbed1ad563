"""ketchd's user-defined networks judged by docker-py 7: ``client.networks``
create/get/list, ``Network.connect/disconnect`` (aliases, static addresses),
``Network.containers``, ``containers.run(network=...)``, the attrs' shapes, and
errors as ``docker.errors.NotFound``/``APIError`` with Docker's status codes.

One private ketchd for the module (test_networks' fixtures: its own bridge, nft
table, cgroup parent; busybox loaded). Every container gets the module's fake
upstream as ``dns`` so no name ever goes to the host's resolver, and only local
names are looked up. Containers and networks are removed after each test.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import Ketchd
from tests.integration.test_networks import (  # noqa: F401 - fixtures
    HEX64,
    NET_KEYS,
    FakeDns,
    clean,
    fake_addr,
    fake_dns,
    kd,
    links,
    subnet24,
)

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.root


@pytest.fixture
def client(kd: Ketchd, fake_dns: FakeDns | None  # noqa: F811
           ) -> Iterator[Any]:
    c = docker.DockerClient(base_url=kd.host, timeout=60)
    c.fake_dns = fake_addr(fake_dns)
    try:
        yield c
    finally:
        c.close()
        clean(kd)


def sleeper(client: Any, name: str, **kw: Any) -> Any:
    return client.containers.run("busybox", ["sleep", "600"], detach=True, name=name,
                                 dns=[client.fake_dns], **kw)


def lookup(ctr: Any, name: str) -> list[str]:
    """Addresses busybox nslookup gets from the embedded DNS server."""
    res = ctr.exec_run(["nslookup", name, "127.0.0.11"])
    out = res.output.decode()
    assert res.exit_code == 0, out
    lines = out.split("Non-authoritative answer:", 1)[-1].splitlines()
    return sorted(line.split(":", 1)[1].strip() for line in lines if line.startswith("Address:"))


def net_ip(ctr: Any, network: str) -> str:
    ctr.reload()
    return str(ctr.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def test_create_get_list_and_attrs(client: Any) -> None:
    sub = subnet24()
    net = ipaddress.IPv4Network(sub)
    gw, rng = str(net[1]), f"{net[64]}/26"
    custom = f"kx{secrets.token_hex(3)}"
    ipam = docker.types.IPAMConfig(pool_configs=[
        docker.types.IPAMPool(subnet=sub, gateway=gw, iprange=rng)])
    n = client.networks.create("pyn", driver="bridge", ipam=ipam, labels={"team": "a"},
                               options={"com.docker.network.bridge.name": custom})
    assert HEX64.fullmatch(n.id) and n.name == "pyn" and n.short_id == n.id[:12]
    assert custom in links()
    a = n.attrs
    assert list(a) == NET_KEYS
    assert a["IPAM"]["Config"] == [{"Subnet": sub, "IPRange": rng, "Gateway": gw}]
    assert a["Labels"] == {"team": "a"}
    assert a["Options"] == {"com.docker.network.bridge.name": custom}
    assert a["Driver"] == "bridge" and a["Internal"] is False and a["EnableIPv6"] is False
    for ref in ("pyn", n.id, n.id[:12]):
        assert client.networks.get(ref).id == n.id
    auto = client.networks.create("pyauto", internal=True)
    assert auto.attrs["Internal"] is True
    (cfg,) = auto.attrs["IPAM"]["Config"]
    assert not ipaddress.ip_network(cfg["Subnet"]).overlaps(net)
    assert f"br-{auto.id[:12]}" in links()

    def names(**kw: Any) -> list[str]:
        return sorted(x.name for x in client.networks.list(**kw))

    assert names() == ["bridge", "host", "none", "pyauto", "pyn"]
    assert names(names=["pyn"]) == ["pyn"]
    assert names(ids=[auto.id]) == ["pyauto"]
    assert names(filters={"label": "team=a"}) == ["pyn"]
    assert names(filters={"type": "custom"}) == ["pyauto", "pyn"]
    assert names(filters={"driver": "bridge"}) == ["bridge", "pyauto", "pyn"]
    # The list has no containers; greedy fetches each network.
    c = sleeper(client, "py1", network="pyn")
    listed = {x.name: x for x in client.networks.list()}
    assert listed["pyn"].attrs["Containers"] == {}
    greedy = {x.name: x for x in client.networks.list(greedy=True)}
    assert [x.id for x in greedy["pyn"].containers] == [c.id]
    entry = greedy["pyn"].attrs["Containers"][c.id]
    assert entry["Name"] == "py1" and HEX64.fullmatch(entry["EndpointID"])
    ip = ipaddress.IPv4Address(entry["IPv4Address"].split("/")[0])
    assert ip in ipaddress.IPv4Network(rng) and entry["IPv4Address"].endswith("/24")
    c.remove(force=True)
    auto.remove()
    assert f"br-{auto.id[:12]}" not in links()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(auto.id)


def test_run_connect_disconnect_and_containers(client: Any) -> None:
    sub = subnet24()
    net = client.networks.create("pyn", ipam=docker.types.IPAMConfig(pool_configs=[
        docker.types.IPAMPool(subnet=sub)]))
    other = client.networks.create("pyother")
    c1 = sleeper(client, "py1", network="pyn")
    c2 = sleeper(client, "py2", network="pyother")
    net.reload()
    assert [x.id for x in net.containers] == [c1.id]
    c1.reload()
    ep = c1.attrs["NetworkSettings"]["Networks"]["pyn"]
    assert ep["NetworkID"] == net.id and ipaddress.ip_address(ep["IPAddress"]) in \
        ipaddress.ip_network(sub)
    assert ep["Gateway"] == str(ipaddress.ip_network(sub)[1]) and ep["IPPrefixLen"] == 24

    net.connect(c2, aliases=["al1", "al2"])
    c2.reload()
    eps = c2.attrs["NetworkSettings"]["Networks"]
    assert sorted(eps) == ["pyn", "pyother"]
    assert eps["pyn"]["Aliases"] == ["al1", "al2"] and eps["pyn"]["NetworkID"] == net.id
    ip2 = eps["pyn"]["IPAddress"]
    net.reload()
    assert sorted(x.id for x in net.containers) == sorted([c1.id, c2.id])
    for name in ("py2", "al1", "AL2", c2.id[:12]):
        assert lookup(c1, name) == [ip2], name
    out = c2.exec_run(["ip", "-o", "addr", "show", "eth1"]).output.decode()
    assert f"inet {ip2}/24 " in out

    # A static address on connect, by name of the container.
    wanted = str(ipaddress.ip_network(sub)[50])
    c3 = sleeper(client, "py3", network="pyother")
    net.connect("py3", ipv4_address=wanted, aliases=["al1"])
    assert net_ip(c3, "pyn") == wanted
    assert c3.attrs["NetworkSettings"]["Networks"]["pyn"]["IPAMConfig"] == {
        "IPv4Address": wanted}
    assert lookup(c1, "al1") == sorted([ip2, wanted])       # an alias both share

    net.disconnect(c2)
    c2.reload()
    assert list(c2.attrs["NetworkSettings"]["Networks"]) == ["pyother"]
    net.reload()
    assert sorted(x.id for x in net.containers) == sorted([c1.id, c3.id])
    assert lookup(c1, "al1") == [wanted]
    assert "eth1" not in c2.exec_run(["ip", "-o", "link"]).output.decode()
    net.disconnect(c3, force=True)
    net.reload()
    assert [x.id for x in net.containers] == [c1.id]
    other.reload()
    assert sorted(x.id for x in other.containers) == sorted([c2.id, c3.id])


def test_ipv6_network(client: Any) -> None:
    sub6 = f"fd00:{secrets.randbelow(0xffff) + 1:x}:{secrets.randbelow(0xffff):x}::/64"
    net = client.networks.create("py6", enable_ipv6=True, ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=sub6)]))
    assert net.attrs["EnableIPv6"] is True
    c = sleeper(client, "py6c", network="py6")
    c.reload()
    ep = c.attrs["NetworkSettings"]["Networks"]["py6"]
    assert ipaddress.ip_address(ep["GlobalIPv6Address"]) in ipaddress.ip_network(sub6)
    net.reload()
    assert net.attrs["Containers"][c.id]["IPv6Address"] == f"{ep['GlobalIPv6Address']}/64"


def status_of(exc: pytest.ExceptionInfo[Any]) -> tuple[int, str]:
    return exc.value.status_code, exc.value.explanation


def test_errors(client: Any) -> None:
    sub = subnet24()
    net = client.networks.create("pyn", ipam=docker.types.IPAMConfig(pool_configs=[
        docker.types.IPAMPool(subnet=sub)]))
    with pytest.raises(docker.errors.NotFound) as e:
        client.networks.get("nosuch")
    assert status_of(e) == (404, "network nosuch not found")
    with pytest.raises(docker.errors.APIError) as e:
        client.networks.create("pyn2", ipam=docker.types.IPAMConfig(pool_configs=[
            docker.types.IPAMPool(subnet=sub)]))
    assert status_of(e) == (403, "Pool overlaps with other one on this address space")
    with pytest.raises(docker.errors.APIError) as e:
        client.networks.create("pyn")
    assert status_of(e) == (409, "network with name pyn already exists")
    with pytest.raises(docker.errors.APIError) as e:
        client.networks.create("pyn3", ipam=docker.types.IPAMConfig(pool_configs=[
            docker.types.IPAMPool(subnet="10.81.0.0/24", gateway="10.82.0.1")]))
    assert status_of(e) == (
        500, "failed to allocate gateway (10.82.0.1): Requested address is out of range")
    with pytest.raises(docker.errors.NotFound) as e:
        client.networks.create("pyn3", driver="nosuch")
    assert status_of(e) == (404, 'plugin "nosuch" not found')
    assert sorted(x.name for x in client.networks.list(filters={"type": "custom"})) == ["pyn"]

    with pytest.raises(docker.errors.APIError) as e:
        client.networks.get("bridge").remove()
    assert status_of(e) == (403, "bridge is a pre-defined network and cannot be removed")
    c1 = sleeper(client, "py1", network="pyn")
    with pytest.raises(docker.errors.APIError) as e:
        net.remove()
    assert status_of(e) == (403, f"error while removing network: network pyn id {net.id} has "
                                 "active endpoints")
    with pytest.raises(docker.errors.NotFound) as e:
        net.connect("nosuch")
    assert status_of(e) == (404, "No such container: nosuch")
    with pytest.raises(docker.errors.APIError) as e:
        net.connect(c1)
    assert status_of(e) == (403, "endpoint with name py1 already exists in network pyn")
    c2 = sleeper(client, "py2", network="bridge")
    with pytest.raises(docker.errors.APIError) as e:
        net.connect(c2, ipv4_address=net_ip(c1, "pyn"))
    assert status_of(e) == (403, "Address already in use")
    with pytest.raises(docker.errors.APIError) as e:
        net.connect(c2, ipv4_address="10.1.2.3")
    # (dockerd 20.10 answers 500 here, ketchd 400: reported, not judged here)
    assert status_of(e)[1] == ("Invalid address 10.1.2.3: It does not belong to any of this "
                               "network's subnets")
    with pytest.raises(docker.errors.APIError) as e:
        client.networks.get("bridge").connect(c1, aliases=["x"])
    assert status_of(e)[1] == ("network-scoped alias is supported only for containers in user "
                               "defined networks")
    assert status_of(e)[0] == 400
    for ctr, nets in ((c1, ["pyn"]), (c2, ["bridge"])):
        ctr.reload()
        assert list(ctr.attrs["NetworkSettings"]["Networks"]) == nets
    with pytest.raises(docker.errors.NotFound) as e:
        client.containers.run("busybox", ["true"], detach=True, name="py3", network="nosuch",
                              dns=[client.fake_dns])
    assert status_of(e) == (404, "network nosuch not found")
    assert client.containers.get("py3").status == "created"


def test_network_events(client: Any) -> None:
    since = int(time.time()) - 1
    net = client.networks.create("pyev", labels={"x": "y"})
    c = sleeper(client, "pyevc", network="bridge")
    net.connect(c)
    net.disconnect(c)
    net.remove()
    events = list(client.events(since=since, until=int(time.time()) + 1, decode=True,
                                filters={"type": "network", "network": net.id}))
    assert [e["Action"] for e in events] == ["create", "connect", "disconnect", "destroy"]
    for e in events:
        assert e["Type"] == "network" and e["Actor"]["ID"] == net.id and e["scope"] == "local"
        attrs = e["Actor"]["Attributes"]
        assert attrs["name"] == "pyev" and attrs["type"] == "bridge"
        assert attrs.get("container") == (c.id if e["Action"] in ("connect", "disconnect")
                                          else None)


def test_prune(client: Any) -> None:
    keep = client.networks.create("pykeep")
    old = client.networks.create("pyold", labels={"gen": "1"})
    client.networks.create("pyold2")
    sleeper(client, "py1", network="pykeep")
    assert client.networks.prune(filters={"label": "gen=1"}) == {"NetworksDeleted": ["pyold"]}
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(old.id)
    assert client.networks.prune() == {"NetworksDeleted": ["pyold2"]}
    assert client.networks.prune() == {"NetworksDeleted": None}
    assert [n.id for n in client.networks.list(filters={"type": "custom"})] == [keep.id]
