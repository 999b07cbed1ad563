"""ketchd's less common network set-ups through the docker CLI: macvlan on a parent
interface, IPv6 on the default bridge, the default route as networks come and go,
internal networks, and what a daemon restart keeps.

The macvlan parent is one end of a veth pair the test makes (this kernel has no
dummy driver); every interface a test makes is deleted by its finalizer, and the
daemon's own (bridges, sub-interfaces) by the fixture's ``system reset``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.test_daemon_system import Ketchd, docker

pytestmark = pytest.mark.root


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def sh(k: Ketchd, name: str, script: str) -> str:
    return ok(docker(k, "exec", name, "sh", "-c", script))


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}


@pytest.fixture
def parent() -> Iterator[str]:
    """A veth end, up, as the parent of macvlan networks."""
    name = "ktp" + secrets.token_hex(3)
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "b"],
                   check=True)
    try:
        for n in (name, name + "b"):
            subprocess.run(["ip", "link", "set", n, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


def test_macvlan_network(loaded_ketchd: Ketchd, parent: str) -> None:
    k = loaded_ketchd
    nid = ok(docker(k, "network", "create", "-d", "macvlan", "--subnet", "10.231.0.0/24",
                    "-o", f"parent={parent}", "mv")).strip()
    net = json.loads(ok(docker(k, "network", "inspect", "mv")))[0]
    assert net["Id"] == nid and net["Driver"] == "macvlan"
    assert net["Options"] == {"parent": parent}
    ok(docker(k, "run", "-d", "--name", "m1", "--network", "mv", "busybox", "sleep", "100"))
    # a sub-interface of the parent inside the container, the gateway as default route,
    # and the embedded DNS server (a user-defined network)
    out = ok(docker(k, "run", "--rm", "--network", "mv", "busybox", "sh", "-c",
                    "ip -o link show eth0; ip route; ping -c1 -W2 m1"))
    with open(f"/sys/class/net/{parent}/ifindex") as f:
        index = f.read().strip()
    assert f"eth0@if{index}:" in out and "default via 10.231.0.1 dev eth0" in out
    assert "1 packets received" in out
    # a second macvlan network in passthru mode on the same parent: dockerd's refusal
    again = docker(k, "network", "create", "-d", "macvlan", "--subnet", "10.232.0.0/24",
                   "-o", f"parent={parent}", "-o", "macvlan_mode=passthru", "mv2")
    assert again.returncode == 1 and "is already using parent interface" in again.stderr
    assert "mv2" not in ok(docker(k, "network", "ls", "--format", "{{.Name}}")).split()
    bad = docker(k, "network", "create", "-d", "macvlan", "-o", "macvlan_mode=nosuch", "mv3")
    assert bad.returncode == 1 and "nosuch" in bad.stderr
    ok(docker(k, "rm", "-f", "m1"))
    ok(docker(k, "network", "rm", "mv"))
    assert parent in links()          # never the parent ketch did not make


def test_default_route_follows_network_names(loaded_ketchd: Ketchd) -> None:
    k = loaded_ketchd
    for name, subnet in (("zeta", "10.241.0.0/24"), ("alpha", "10.242.0.0/24")):
        ok(docker(k, "network", "create", "--subnet", subnet, name))
    ok(docker(k, "network", "create", "--internal", "--subnet", "10.243.0.0/24", "aaa-in"))
    ok(docker(k, "run", "-d", "--name", "r1", "--network", "zeta", "busybox", "sleep", "100"))
    assert "default via 10.241.0.1 dev eth0" in sh(k, "r1", "ip route")
    ok(docker(k, "network", "connect", "aaa-in", "r1"))     # internal: never the route
    assert "default via 10.241.0.1 dev eth0" in sh(k, "r1", "ip route")
    ok(docker(k, "network", "connect", "alpha", "r1"))      # sorts first: takes it
    routes = sh(k, "r1", "ip route")
    assert "default via 10.242.0.1 dev eth2" in routes and routes.count("default") == 1
    hosts = sh(k, "r1", "cat /etc/hosts").splitlines()
    assert [h.split("\t")[0] for h in hosts[-3:]] == ["10.241.0.2", "10.243.0.2", "10.242.0.2"]
    ok(docker(k, "network", "disconnect", "alpha", "r1"))   # back to zeta
    assert "default via 10.241.0.1 dev eth0" in sh(k, "r1", "ip route")
    assert "eth2" not in sh(k, "r1", "ip -o link")
    # an internal network alone gives the route (dockerd 20.10's), which leads nowhere
    out = ok(docker(k, "run", "--rm", "--network", "aaa-in", "busybox", "ip", "route"))
    assert "default via 10.243.0.1 dev eth0" in out
    ok(docker(k, "rm", "-f", "r1"))
    for name in ("zeta", "alpha", "aaa-in"):
        ok(docker(k, "network", "rm", name))


def test_ipv6_default_bridge(start_ketchd: Any, busybox_archive: Any) -> None:
    k = start_ketchd({"ipv6": True, "fixed-cidr-v6": "fd00:dead:beef::/64"})
    ok(docker(k, "load", "-i", str(busybox_archive)))
    net = json.loads(ok(docker(k, "network", "inspect", "bridge")))[0]
    assert net["EnableIPv6"] is True
    assert {"Subnet": "fd00:dead:beef::/64"} in net["IPAM"]["Config"]
    ok(docker(k, "run", "-d", "--name", "v6", "busybox", "sleep", "100"))
    doc = json.loads(ok(docker(k, "inspect", "v6")))[0]["NetworkSettings"]
    assert doc["GlobalIPv6Address"] == "fd00:dead:beef::2" and doc["GlobalIPv6PrefixLen"] == 64
    assert doc["IPv6Gateway"] == "fd00:dead:beef::1"
    out = ok(docker(k, "run", "--rm", "busybox", "ping6", "-c1", "-W2", "fd00:dead:beef::2"))
    assert "1 packets received" in out
    ok(docker(k, "rm", "-f", "v6"))


def test_user_networks_survive_a_daemon_restart(loaded_ketchd: Ketchd) -> None:
    k = loaded_ketchd
    nid = ok(docker(k, "network", "create", "--subnet", "10.244.0.0/24", "keep")).strip()
    ok(docker(k, "run", "-d", "--name", "s1", "--network", "keep", "--network-alias", "svc",
              "busybox", "sleep", "100"))
    ok(docker(k, "run", "-d", "--name", "s2", "--network", "keep", "busybox", "sleep", "100"))
    bridge = "br-" + nid[:12]
    assert bridge in links()
    os.kill(k.proc.pid, signal.SIGKILL)
    k.proc.wait()
    with open(k.dir / "ketchd.log", "ab") as log:
        k.proc = subprocess.Popen(k.args(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while docker(k, "version").returncode != 0:
        assert time.monotonic() < deadline, "ketchd did not come back"
        time.sleep(0.1)
    net = json.loads(ok(docker(k, "network", "inspect", "keep")))[0]
    assert net["Id"] == nid and net["IPAM"]["Config"] == [{"Subnet": "10.244.0.0/24"}]
    assert sorted(c["Name"] for c in net["Containers"].values()) == ["s1", "s2"]
    # the DNS server answers again in the running containers' namespaces
    out = sh(k, "s2", "nslookup svc 127.0.0.11")
    assert "10.244.0.2" in out
    ok(docker(k, "run", "--rm", "--network", "keep", "busybox", "ping", "-c1", "-W2", "s1"))
    ok(docker(k, "rm", "-f", "s1", "s2"))
    ok(docker(k, "network", "rm", "keep"))
    assert bridge not in links()
