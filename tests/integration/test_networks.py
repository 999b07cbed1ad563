"""ketchd's user-defined networks end to end, judged by the docker CLI (28.x) and by
traffic: HTTP between containers by name, alias and short ID, published ports from
the host and back in (hairpin), isolation between networks, internal networks, the
embedded DNS server (names, shared aliases, PTR, AAAA, forwarding), connect and
disconnect, static addresses, conflicts that must leave nothing behind, dockerd's
messages for bad input, a ketchd restart, and ``ketch system reset``.

One private ketchd for the module (its own default bridge, nft table and cgroup
parent; busybox loaded); every test removes its containers and networks, also
when it fails. Expected behaviour is Docker's (dockerd 20.10 as observed in
/work/notes/dockerd-network-facts.md).

No DNS query may reach the host's real resolver: every container on a user network
gets ``--dns`` pointing at a fake upstream this module serves on the loopback
(``FakeDns``), and only names that are local or that the fake knows are asked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import BIN, PREFIX
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    _wait_ready,
    cgroup_parent_of,
    docker,
    start_ketchd,
    stop_supervisor,
    write_private_config,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None or shutil.which("nft") is None,
                                 reason="needs the docker CLI and nft")]

HEX64 = re.compile(r"[0-9a-f]{64}")
# The fake upstream's address: on the loopback, never the host's resolver.
FAKE_DNS_CANDIDATES = ("127.0.0.153", "127.0.1.153", "127.0.2.153")
FAKE_ANSWERS = {"outside.test": "198.51.100.7"}
PAGE = "hello-from-web"


# --------------------------------------------------------------------------- fake upstream

class FakeDns:
    """A UDP DNS server on a loopback address: A records for ``FAKE_ANSWERS``,
    NXDOMAIN for every other name, an empty answer for other types of known names.
    It records every name asked, so tests see what was forwarded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.addr = sock.getsockname()[0]
        self.asked: list[tuple[str, int]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(Exception):
                self.sock.sendto(self.answer(data), peer)

    def answer(self, data: bytes) -> bytes:
        qid, _flags, qdcount = struct.unpack_from("!HHH", data)
        assert qdcount == 1
        pos, labels = 12, []
        while data[pos]:
            labels.append(data[pos + 1:pos + 1 + data[pos]].decode().lower())
            pos += 1 + data[pos]
        qtype, _qclass = struct.unpack_from("!HH", data, pos + 1)
        question = data[12:pos + 5]
        name = ".".join(labels)
        self.asked.append((name, qtype))
        ip = FAKE_ANSWERS.get(name)
        rcode = 0 if ip else 3
        answers = b""
        if ip and qtype == 1:
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
        header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        return header + question + answers

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def fake_dns() -> Iterator[FakeDns | None]:
    """The fake upstream, or None when no candidate address could be bound (the
    containers' ``--dns`` then points at a closed port: queries fail, never leak)."""
    for addr in FAKE_DNS_CANDIDATES:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((addr, 53))
        except OSError:
            s.close()
            continue
        fake = FakeDns(s)
        yield fake
        fake.close()
        return
    yield None


# --------------------------------------------------------------------------- the daemon

def start_daemon_process(k: Ketchd) -> None:
    with open(k.dir / "ketchd.log", "ab") as log:
        k.proc = subprocess.Popen(k.args(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    _wait_ready(k, None, 30)


@pytest.fixture(scope="module")
def kd(busybox_archive: Path) -> Iterator[Ketchd]:  # noqa: F811
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-d", dir="/tmp"))
    k = Ketchd(d, None)  # type: ignore[arg-type]
    try:
        write_private_config(k)
        (d / "ketchd.log").write_bytes(b"")
        start_daemon_process(k)
        ok(docker(k, "load", "-i", str(busybox_archive)))
        yield k
    finally:
        if k.proc is not None:
            k.stop()
        stop_supervisor(k)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def k(kd: Ketchd, fake_dns: FakeDns | None) -> Iterator[Ketchd]:
    """The module's daemon, emptied of containers and user networks after the test."""
    kd.fake_dns = fake_addr(fake_dns)  # type: ignore[attr-defined]
    yield kd
    clean(kd)


def clean(k: Ketchd) -> None:
    ids = docker(k, "ps", "-aq").stdout.split()
    if ids:
        docker(k, "rm", "-f", *ids)
    docker(k, "network", "prune", "-f")
    left = [n for n in docker(k, "network", "ls", "--format", "{{.Name}}").stdout.split()
            if n not in ("bridge", "host", "none")]
    if left:
        docker(k, "network", "rm", *left)


# --------------------------------------------------------------------------- helpers

def dk(k: Ketchd, *args: str) -> subprocess.CompletedProcess[str]:
    """docker, without the CLI's own warning about our loopback --dns (docker 28 prints
    it client-side before it sends the request)."""
    out = docker(k, *args)
    out.stderr = "".join(line for line in out.stderr.splitlines(keepends=True)
                         if not line.startswith("WARNING: Localhost DNS ("))
    return out


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, (out.args, out.stdout, out.stderr)
    return out.stdout


def fake_addr(fake: FakeDns | None) -> str:
    return fake.addr if fake is not None else FAKE_DNS_CANDIDATES[0]


def run(k: Ketchd, *args: str, cmd: tuple[str, ...] = ("sleep", "600")) -> str:
    """``docker run -d`` with the fake upstream as --dns; returns the container ID."""
    return ok(docker(k, "run", "-d", "--dns", dns_of(k), *args, "busybox", *cmd)).strip()


def dns_of(k: Ketchd) -> str:
    return str(getattr(k, "fake_dns", FAKE_DNS_CANDIDATES[0]))


def web(k: Ketchd, name: str, *args: str) -> str:
    """A busybox httpd serving PAGE on port 80."""
    cid = run(k, "--name", name, *args, cmd=(
        "sh", "-c", f"mkdir -p /www && echo {PAGE} > /www/index.html && "
                    "exec httpd -f -p 80 -h /www"))
    return cid


def sh(k: Ketchd, ctr: str, script: str) -> subprocess.CompletedProcess[str]:
    return docker(k, "exec", ctr, "sh", "-c", script)


def fetch_in(k: Ketchd, ctr: str, url: str, timeout: int = 3) -> subprocess.CompletedProcess[str]:
    # busybox 1.35's wget -T segfaults (also on the host): the timeout applet instead
    return sh(k, ctr, f"timeout {timeout} wget -q -O- {url}")


def wait_page(k: Ketchd, ctr: str, url: str, deadline: float = 10) -> str:
    """The page at url from inside ctr, retried while the server comes up."""
    end = time.monotonic() + deadline
    while True:
        out = fetch_in(k, ctr, url)
        if out.returncode == 0 or time.monotonic() > end:
            return out.stdout if out.returncode == 0 else out.stderr
        time.sleep(0.2)


def host_fetch(url: str, deadline: float = 10) -> str:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - test URL
                return str(resp.read().decode())
        except OSError as exc:
            if time.monotonic() > end:
                return f"error: {exc}"
            time.sleep(0.2)


def inspect(k: Ketchd, *what: str) -> Any:
    return json.loads(ok(docker(k, *what)))


def net_inspect(k: Ketchd, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = inspect(k, "network", "inspect", name)[0]
    return doc


def ctr_inspect(k: Ketchd, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = inspect(k, "inspect", name)[0]
    return doc


def nslookup(k: Ketchd, ctr: str, name: str, qtype: str = "") -> tuple[int, list[str], str]:
    """(rc, addresses answered, raw output) of busybox nslookup against 127.0.0.11."""
    opt = f"-type={qtype} " if qtype else ""
    out = sh(k, ctr, f"nslookup {opt}{name} 127.0.0.11")
    text = out.stdout + out.stderr
    addrs = []
    in_answer = False
    for line in text.splitlines():
        if line.startswith(("Non-authoritative answer", "Name:")):
            in_answer = True
        elif in_answer and line.startswith("Address:"):
            addrs.append(line.split(":", 1)[1].strip())
    return out.returncode, addrs, text


def until(pred: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def host_address() -> str:
    """A non-loopback IPv4 address of this machine that is not on a bridge."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        dev, addr = fields[1], fields[3].split("/")[0]
        if dev.startswith("veth") or os.path.exists(f"/sys/class/net/{dev}/bridge"):
            continue
        return addr
    pytest.skip("no non-loopback host address")


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def ports_of(bridge: str) -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True,
                         text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def bridge_of(k: Ketchd) -> str:
    return str(json.loads(k.config.read_text())["bridge"])


def nft_table(k: Ketchd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", "list", "table", "inet", f"ketch_{bridge_of(k)}"],
                          capture_output=True, text=True)


def addrs_in(k: Ketchd, ctr: str) -> dict[str, list[str]]:
    """interface -> its addresses (``ip -o addr`` inside the container), lo left out."""
    out: dict[str, list[str]] = {}
    for line in ok(sh(k, ctr, "ip -o addr")).splitlines():
        fields = line.split()
        if fields[1] != "lo" and fields[2] in ("inet", "inet6") \
                and not fields[3].startswith("fe80:"):
            out.setdefault(fields[1].split("@")[0], []).append(fields[3])
    return out


def subnet24() -> str:
    """A random 10.x.y.0/24 (other daemons on this machine take the default pools)."""
    return f"10.{secrets.randbelow(100) + 140}.{secrets.randbelow(250) + 1}.0/24"




# --------------------------------------------------------------------------- create/ls/rm

NET_KEYS = ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal",
            "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options",
            "Labels"]


def test_create_and_inspect_shapes(k: Ketchd) -> None:
    sub = subnet24()
    net = ipaddress.IPv4Network(sub)
    gw, first, last = str(net[254]), net[128], net[191]
    brname = f"kx{secrets.token_hex(3)}"
    out = ok(docker(k, "network", "create", "--subnet", sub, "--gateway", gw,
                    "--ip-range", f"{first}/26", "--internal", "--label", "a=b",
                    "--label", "c=", "-o", f"com.docker.network.bridge.name={brname}", "fx"))
    fx_id = out.strip()
    assert HEX64.fullmatch(fx_id), out
    doc = net_inspect(k, "fx")
    assert list(doc) == NET_KEYS
    assert doc["Name"] == "fx" and doc["Id"] == fx_id and doc["Scope"] == "local"
    assert doc["Driver"] == "bridge" and doc["EnableIPv6"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", doc["Created"])
    assert doc["IPAM"] == {"Driver": "default", "Options": {}, "Config": [
        {"Subnet": sub, "IPRange": f"{first}/26", "Gateway": gw}]}
    assert doc["Internal"] is True and doc["Attachable"] is False and doc["Ingress"] is False
    assert doc["ConfigFrom"] == {"Network": ""} and doc["ConfigOnly"] is False
    assert doc["Containers"] == {}
    assert doc["Options"] == {"com.docker.network.bridge.name": brname}
    assert doc["Labels"] == {"a": "b", "c": ""}
    # The bridge carries the gateway.
    addr = ok(subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", brname],
                             capture_output=True, text=True))
    assert f"inet {gw}/24 " in addr

    # An auto-chosen subnet: a /16 or /20 of Docker's pools, its .1 the gateway, on
    # br-<id12>, overlapping nothing on the host but its own bridge; a second one differs.
    ids = [ok(docker(k, "network", "create", name)).strip() for name in ("plain", "plain2")]
    subnets = []
    for name, nid in zip(("plain", "plain2"), ids, strict=True):
        doc = net_inspect(k, name)
        (cfg,) = doc["IPAM"]["Config"]
        assert list(cfg) == ["Subnet", "Gateway"]
        pool = ipaddress.IPv4Network(cfg["Subnet"])
        assert (pool.prefixlen == 16 and pool.subnet_of(ipaddress.IPv4Network("172.16.0.0/12"))
                or pool.prefixlen == 20
                and pool.subnet_of(ipaddress.IPv4Network("192.168.0.0/16"))), pool
        assert cfg["Gateway"] == str(pool[1])
        assert doc["IPAM"]["Options"] == {} and doc["Options"] == {} and doc["Labels"] == {}
        assert doc["Internal"] is False
        routes = ok(subprocess.run(["ip", "-4", "route", "show", "root", str(pool)],
                                   capture_output=True, text=True))
        assert [r.split()[2] for r in routes.splitlines()] == [f"br-{nid[:12]}"], routes
        subnets.append(pool)
    assert not subnets[0].overlaps(subnets[1])

    # Containers: the running ones, with their endpoint.
    cid = run(k, "--name", "c1", "--network", "plain")
    ok(docker(k, "create", "--name", "c2", "--network", "plain", "busybox", "true"))
    in_fx = run(k, "--name", "c3", "--network", "fx")
    doc = net_inspect(k, "plain")
    assert list(doc["Containers"]) == [cid]
    entry = doc["Containers"][cid]
    assert list(entry) == ["Name", "EndpointID", "MacAddress", "IPv4Address", "IPv6Address"]
    ip = ctr_inspect(k, "c1")["NetworkSettings"]["Networks"]["plain"]
    assert entry["Name"] == "c1" and entry["EndpointID"] == ip["EndpointID"]
    assert HEX64.fullmatch(entry["EndpointID"])
    assert entry["IPv4Address"] == f"{ip['IPAddress']}/{subnets[0].prefixlen}"
    assert ipaddress.ip_address(ip["IPAddress"]) in subnets[0]
    assert entry["IPv6Address"] == ""
    mac = "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(ip["IPAddress"]).packed)
    assert entry["MacAddress"] == mac == ip["MacAddress"]
    assert addrs_in(k, "c1") == {"eth0": [entry["IPv4Address"]]}
    inner_mac = ok(sh(k, "c1", "cat /sys/class/net/eth0/address")).strip()
    assert inner_mac == mac
    # In the internal network, from its --ip-range.
    fx_entry = net_inspect(k, "fx")["Containers"][in_fx]
    fx_ip = ipaddress.IPv4Address(fx_entry["IPv4Address"].split("/")[0])
    assert first <= fx_ip <= last and fx_entry["IPv4Address"].endswith("/24")
    # GET /networks (list) never lists containers.
    listed = json.loads(k.curl("http://x/networks").stdout)
    assert {n["Name"]: n["Containers"] for n in listed}["plain"] == {}


def test_ls_filters_format_and_rm(k: Ketchd) -> None:
    ids = {}
    for name, extra in (("alpha", ("--label", "a=b", "--label", "c=")),
                        ("pl-one", ("--internal",)), ("zeta", ())):
        ids[name] = ok(docker(k, "network", "create", *extra, name)).strip()
    lines = ok(docker(k, "network", "ls")).splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = [line.split() for line in lines[1:]]
    assert [r[1] for r in rows] == ["alpha", "bridge", "host", "none", "pl-one", "zeta"]
    assert {r[1]: (r[2], r[3]) for r in rows} == {
        "alpha": ("bridge", "local"), "bridge": ("bridge", "local"), "host": ("host", "local"),
        "none": ("null", "local"), "pl-one": ("bridge", "local"), "zeta": ("bridge", "local")}
    assert {r[1]: r[0] for r in rows}["zeta"] == ids["zeta"][:12]
    quiet = ok(docker(k, "network", "ls", "-q")).split()
    assert len(quiet) == 6 and all(re.fullmatch(r"[0-9a-f]{12}", q) for q in quiet)

    def names(*filters: str) -> list[str]:
        args = [x for f in filters for x in ("--filter", f)]
        return ok(docker(k, "network", "ls", *args, "--format", "{{.Name}}")).split()

    assert names("name=pl") == ["pl-one"]
    assert names("driver=null") == ["none"]
    assert names("label=a") == names("label=a=b") == names("label=c") == ["alpha"]
    assert names("label=a=x") == []
    assert names("type=custom") == ["alpha", "pl-one", "zeta"]
    assert names("type=builtin") == ["bridge", "host", "none"]
    assert names(f"id={ids['zeta'][:6]}") == ["zeta"]
    assert names("scope=local", "driver=bridge") == ["alpha", "bridge", "pl-one", "zeta"]
    assert names("driver=nosuch") == []
    out = ok(docker(k, "network", "ls", "--filter", "name=alpha", "--format",
                    "{{.ID}} {{.IPv6}} {{.Internal}} {{.Labels}} {{.CreatedAt}}"))
    # ({{.Labels}} joins a Go map: in any order)
    m = re.fullmatch(ids["alpha"][:12] + r" false false (\S+) "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \+0000 UTC\n", out)
    assert m and sorted(m[1].split(",")) == ["a=b", "c="], out
    out = ok(docker(k, "network", "ls", "--filter", "name=pl-one", "--format",
                    "{{.Internal}}"))
    assert out == "true\n"
    bad = docker(k, "network", "ls", "--filter", "nosuch=1")
    # dockerd 20.10 says "Invalid filter", Docker 23+ "invalid filter": either is Docker's
    assert bad.returncode == 1
    assert bad.stderr in ("Error response from daemon: Invalid filter 'nosuch'\n",
                          "Error response from daemon: invalid filter 'nosuch'\n")

    # rm prints each name; its bridge goes.
    assert f"br-{ids['zeta'][:12]}" in links()
    assert ok(docker(k, "network", "rm", "zeta", ids["pl-one"][:12])) == \
        f"zeta\n{ids['pl-one'][:12]}\n"
    assert f"br-{ids['zeta'][:12]}" not in links()
    assert names("type=custom") == ["alpha"]


def test_prune(k: Ketchd) -> None:
    def names() -> list[str]:
        return ok(docker(k, "network", "ls", "--filter", "type=custom", "--format",
                         "{{.Name}}")).split()

    ids = {name: ok(docker(k, "network", "create", *extra, name)).strip()
           for name, extra in (("alpha", ("--label", "keep=1")), ("pr1", ()), ("pr2", ()),
                               ("used", ()))}
    run(k, "--name", "u1", "--network", "used")
    # by label first: only the matching unused one
    out = ok(docker(k, "network", "prune", "-f", "--filter", "label=keep"))
    assert out.splitlines()[0] == "Deleted Networks:"
    assert [n for n in out.splitlines()[1:] if n] == ["alpha"]
    out = ok(docker(k, "network", "prune", "-f"))
    assert out.startswith("Deleted Networks:\n")
    # (dockerd lists them in no fixed order; the CLI ends with an empty line)
    assert sorted(n for n in out.splitlines()[1:] if n) == ["pr1", "pr2"]
    assert names() == ["used"]
    assert f"br-{ids['pr1'][:12]}" not in links() and f"br-{ids['used'][:12]}" in links()
    assert ok(docker(k, "network", "prune", "-f")) == ""

# --------------------------------------------------------------------------- traffic

def test_http_by_name_alias_id_and_published_port(k: Ketchd) -> None:
    hostaddr = host_address()
    port = free_port()
    ok(docker(k, "network", "create", "webnet"))
    cid = web(k, "web", "--network", "webnet", "--network-alias", "www", "-p", f"{port}:80")
    run(k, "--name", "client", "--network", "webnet")
    assert wait_page(k, "client", "http://web/") == f"{PAGE}\n"
    for host in ("www", cid[:12], "web.webnet", "WEB"):
        assert fetch_in(k, "client", f"http://{host}/").stdout == f"{PAGE}\n", host
    # From the host, on the loopback and on another address of the machine.
    assert host_fetch(f"http://127.0.0.1:{port}/") == f"{PAGE}\n"
    assert host_fetch(f"http://{hostaddr}:{port}/") == f"{PAGE}\n"
    # dockerd publishes on [::] too (its proxy): the IPv6 loopback answers.
    assert ok(docker(k, "port", "web")) == f"80/tcp -> 0.0.0.0:{port}\n80/tcp -> [::]:{port}\n"
    if socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
        assert host_fetch(f"http://[::1]:{port}/") == f"{PAGE}\n"
    # Hairpin: a container of the network, and the server itself, through the host's port.
    assert wait_page(k, "client", f"http://{hostaddr}:{port}/") == f"{PAGE}\n"
    assert wait_page(k, "web", f"http://{hostaddr}:{port}/") == f"{PAGE}\n"
    gw = net_inspect(k, "webnet")["IPAM"]["Config"][0]["Gateway"]
    assert wait_page(k, "client", f"http://{gw}:{port}/") == f"{PAGE}\n"
    # Gone with the container: the port is free again.
    ok(docker(k, "rm", "-f", "web"))
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)  # noqa: S310
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.close()


def test_ports_bound_to_one_host_address(k: Ketchd) -> None:
    hostaddr = host_address()
    lo_port, addr_port = free_port(), free_port()
    ok(docker(k, "network", "create", "webnet"))
    web(k, "web", "--network", "webnet", "-p", f"127.0.0.1:{lo_port}:80",
        "-p", f"{hostaddr}:{addr_port}:80")
    run(k, "--name", "client", "--network", "webnet")
    assert ok(docker(k, "port", "web")) == (f"80/tcp -> 127.0.0.1:{lo_port}\n"
                                             f"80/tcp -> {hostaddr}:{addr_port}\n")
    assert host_fetch(f"http://127.0.0.1:{lo_port}/") == f"{PAGE}\n"
    assert host_fetch(f"http://{hostaddr}:{addr_port}/") == f"{PAGE}\n"
    assert wait_page(k, "client", f"http://{hostaddr}:{addr_port}/") == f"{PAGE}\n"
    # Each only on its own address.
    for url in (f"http://{hostaddr}:{lo_port}/", f"http://127.0.0.1:{addr_port}/"):
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=2)  # noqa: S310
    gw = net_inspect(k, "webnet")["IPAM"]["Config"][0]["Gateway"]
    assert fetch_in(k, "client", f"http://{gw}:{lo_port}/", timeout=2).returncode != 0
    table = ok(nft_table(k))
    assert re.search(rf"\b{re.escape(hostaddr)} \. tcp \. {addr_port} : ", table), table

def test_isolation_between_networks_and_internal_networks(k: Ketchd) -> None:
    hostaddr = host_address()
    port = free_port()
    for name, extra in (("webnet", ()), ("other", ()), ("inner", ("--internal",))):
        ok(docker(k, "network", "create", *extra, name))
    web(k, "web", "--network", "webnet", "-p", f"{port}:80")
    run(k, "--name", "neighbour", "--network", "webnet")
    run(k, "--name", "stranger", "--network", "other")
    web(k, "iweb", "--network", "inner")
    run(k, "--name", "ipeer", "--network", "inner")
    web_ip = ctr_inspect(k, "web")["NetworkSettings"]["Networks"]["webnet"]["IPAddress"]
    assert wait_page(k, "neighbour", f"http://{web_ip}/") == f"{PAGE}\n"
    # Another user network cannot reach it directly.
    assert fetch_in(k, "stranger", f"http://{web_ip}/", timeout=2).returncode != 0
    # The internal network: its members reach each other, by name too ...
    assert wait_page(k, "ipeer", "http://iweb/") == f"{PAGE}\n"
    # ... and nothing outside: not the published port through the host's address or
    # the other network's gateway, not the other network's container.
    other_gw = net_inspect(k, "webnet")["IPAM"]["Config"][0]["Gateway"]
    for url in (f"http://{hostaddr}:{port}/", f"http://{other_gw}:{port}/",
                f"http://{web_ip}/"):
        assert fetch_in(k, "ipeer", url, timeout=2).returncode != 0, url
    # and nothing outside can reach in
    iweb_ip = ctr_inspect(k, "iweb")["NetworkSettings"]["Networks"]["inner"]["IPAddress"]
    assert fetch_in(k, "neighbour", f"http://{iweb_ip}/", timeout=2).returncode != 0
    # The published port still works from the host meanwhile.
    assert host_fetch(f"http://{hostaddr}:{port}/") == f"{PAGE}\n"


# --------------------------------------------------------------------------- DNS

def test_dns_names_shared_aliases_and_ptr(k: Ketchd, fake_dns: FakeDns | None) -> None:
    ok(docker(k, "network", "create", "dnsn"))
    run(k, "--name", "w1", "--network", "dnsn", "--network-alias", "svc",
        "--network-alias", "Shared")
    w2 = run(k, "--name", "w2", "--network", "dnsn", "--network-alias", "shared")
    run(k, "--name", "cl", "--network", "dnsn")
    ip1, ip2 = (ctr_inspect(k, n)["NetworkSettings"]["Networks"]["dnsn"]["IPAddress"]
                for n in ("w1", "w2"))
    asked_before = len(fake_dns.asked) if fake_dns else 0
    for name, want in (("w1", [ip1]), ("W1", [ip1]), ("svc", [ip1]), ("SVC", [ip1]),
                       (w2[:12], [ip2]), ("w2.dnsn", [ip2]), ("shared", [ip1, ip2]),
                       ("SHARED", [ip1, ip2])):
        rc, addrs, text = nslookup(k, "cl", name)
        assert rc == 0 and sorted(addrs) == sorted(want), (name, text)
    # Reverse: the name with its network.
    rc, _, text = nslookup(k, "cl", ip2)
    rev = ".".join(reversed(ip2.split("."))) + ".in-addr.arpa"
    assert rc == 0 and f"{rev}\tname = w2.dnsn" in text, text
    # None of these went upstream (neither A nor the AAAA busybox asks too).
    if fake_dns is not None:
        assert fake_dns.asked[asked_before:] == []
    # A container gone is gone from the answers; a stopped one too, back once started.
    ok(docker(k, "rm", "-f", "w2"))
    assert nslookup(k, "cl", "shared")[1] == [ip1]
    assert nslookup(k, "cl", "w2")[0] != 0
    ok(docker(k, "stop", "-t", "0", "w1"))
    assert nslookup(k, "cl", "svc")[0] != 0
    ok(docker(k, "start", "w1"))
    ip1 = ctr_inspect(k, "w1")["NetworkSettings"]["Networks"]["dnsn"]["IPAddress"]
    assert nslookup(k, "cl", "svc")[1] == [ip1]


def test_dns_forwards_unknown_names_to_the_containers_dns(k: Ketchd,
                                                         fake_dns: FakeDns | None) -> None:
    if fake_dns is None:
        pytest.skip("no loopback address for the fake upstream DNS server")
    ok(docker(k, "network", "create", "fwd"))
    run(k, "--name", "cl", "--network", "fwd")
    rc, addrs, text = nslookup(k, "cl", "outside.test")
    assert rc == 0 and addrs == [FAKE_ANSWERS["outside.test"]], text
    assert ("outside.test", 1) in fake_dns.asked
    rc, addrs, text = nslookup(k, "cl", "nosuch.test")
    assert rc != 0 and addrs == [] and "NXDOMAIN" in text, text
    assert ("nosuch.test", 1) in fake_dns.asked


def test_dns_aaaa_on_an_ipv6_network(k: Ketchd) -> None:
    sub6 = f"fd00:{secrets.randbelow(0xffff) + 1:x}:{secrets.randbelow(0xffff):x}::/64"
    ok(docker(k, "network", "create", "--ipv6", "--subnet", sub6, "v6n"))
    doc = net_inspect(k, "v6n")
    assert doc["EnableIPv6"] is True
    assert [list(c) for c in doc["IPAM"]["Config"]] == [["Subnet", "Gateway"], ["Subnet"]]
    assert doc["IPAM"]["Config"][1]["Subnet"] == sub6
    w6 = run(k, "--name", "w6", "--network", "v6n")
    run(k, "--name", "c6", "--network", "v6n")
    ep = ctr_inspect(k, "w6")["NetworkSettings"]["Networks"]["v6n"]
    v6 = ep["GlobalIPv6Address"]
    net6 = ipaddress.ip_network(sub6)
    assert ipaddress.ip_address(v6) in net6 and ep["GlobalIPv6PrefixLen"] == 64
    assert ep["IPv6Gateway"] == str(net6[1])
    assert f"{v6}/64" in addrs_in(k, "w6")["eth0"]
    assert net_inspect(k, "v6n")["Containers"][w6]["IPv6Address"] == f"{v6}/64"
    rc, addrs, text = nslookup(k, "c6", "w6", "AAAA")
    assert rc == 0 and [str(ipaddress.ip_address(a)) for a in addrs] == [v6], text
    rc, addrs, text = nslookup(k, "c6", "w6", "A")
    assert rc == 0 and addrs == [ep["IPAddress"]], text
    rc, _, text = nslookup(k, "c6", v6)
    rev = ".".join(reversed(ipaddress.IPv6Address(v6).exploded.replace(":", "")))
    assert rc == 0 and f"{rev}.ip6.arpa\tname = w6.v6n" in text, text
    # and the address is really reachable over IPv6
    assert ok(sh(k, "c6", f"ping -6 -c 1 -W 2 {v6} >/dev/null && echo up")) == "up\n"


# --------------------------------------------------------------------------- connect

def test_connect_and_disconnect_a_running_container(k: Ketchd) -> None:
    for name in ("na", "nb"):
        ok(docker(k, "network", "create", name))
    cid = run(k, "--name", "c1", "--network", "na")
    run(k, "--name", "c2", "--network", "nb")
    na_ip = ctr_inspect(k, "c1")["NetworkSettings"]["Networks"]["na"]["IPAddress"]
    assert list(addrs_in(k, "c1")) == ["eth0"]
    assert nslookup(k, "c2", "c1")[0] != 0       # not on nb yet
    ok(docker(k, "network", "connect", "--alias", "ca", "nb", "c1"))
    ep = ctr_inspect(k, "c1")["NetworkSettings"]["Networks"]["nb"]
    nb_ip = ep["IPAddress"]
    # API 1.45 (what the CLI negotiates): the short ID is in DNSNames, no longer in Aliases
    assert ep["Aliases"] == ["ca"] and ep["DNSNames"] == ["c1", "ca", cid[:12]]
    addrs = addrs_in(k, "c1")
    assert list(addrs) == ["eth0", "eth1"]
    assert addrs["eth0"][0].startswith(na_ip + "/") and addrs["eth1"][0].startswith(nb_ip + "/")
    for name in ("c1", "ca", cid[:12]):
        rc, got, text = nslookup(k, "c2", name)
        assert rc == 0 and got == [nb_ip], (name, text)
    hosts = ok(sh(k, "c1", "cat /etc/hosts")).splitlines()
    assert f"{nb_ip}\t{cid[:12]}" in hosts and f"{na_ip}\t{cid[:12]}" in hosts
    assert cid in net_inspect(k, "nb")["Containers"]
    assert ok(sh(k, "c2", "ping -c 1 -W 2 ca >/dev/null && echo up")) == "up\n"

    ok(docker(k, "network", "disconnect", "nb", "c1"))
    assert list(addrs_in(k, "c1")) == ["eth0"]
    assert nslookup(k, "c2", "c1")[0] != 0
    assert nslookup(k, "c2", "ca")[0] != 0
    assert cid not in net_inspect(k, "nb")["Containers"]
    assert "nb" not in ctr_inspect(k, "c1")["NetworkSettings"]["Networks"]
    assert f"{nb_ip}\t{cid[:12]}" not in ok(sh(k, "c1", "cat /etc/hosts")).splitlines()
    assert f"{nb_ip}/" not in ok(sh(k, "c1", "ip -o addr"))


def test_connect_a_stopped_container_then_start(k: Ketchd) -> None:
    for name in ("na", "nb"):
        ok(docker(k, "network", "create", name))
    cid = ok(docker(k, "create", "--name", "s1", "--dns", dns_of(k), "--network", "na",
                    "busybox", "sleep", "600")).strip()
    ok(docker(k, "network", "connect", "nb", "s1"))
    assert sorted(ctr_inspect(k, "s1")["NetworkSettings"]["Networks"]) == ["na", "nb"]
    ok(docker(k, "start", "s1"))
    nets = ctr_inspect(k, "s1")["NetworkSettings"]["Networks"]
    addrs = addrs_in(k, "s1")
    assert list(addrs) == ["eth0", "eth1"]
    assert addrs["eth0"][0].split("/")[0] == nets["na"]["IPAddress"]
    assert addrs["eth1"][0].split("/")[0] == nets["nb"]["IPAddress"]
    for name in ("na", "nb"):
        assert list(net_inspect(k, name)["Containers"]) == [cid]
    run(k, "--name", "peer", "--network", "nb")
    rc, got, text = nslookup(k, "peer", "s1")
    assert rc == 0 and got == [nets["nb"]["IPAddress"]], text


def test_concurrent_runs_and_removals_on_one_network(k: Ketchd) -> None:
    from concurrent.futures import ThreadPoolExecutor

    nid = ok(docker(k, "network", "create", "par")).strip()
    bridge = f"br-{nid[:12]}"
    names = [f"par{i}" for i in range(8)]
    with ThreadPoolExecutor(len(names)) as pool:
        ids = list(pool.map(lambda n: run(k, "--name", n, "--network", "par"), names))
    entries = net_inspect(k, "par")["Containers"]
    assert sorted(entries) == sorted(ids)
    ips = [e["IPv4Address"] for e in entries.values()]
    assert len(set(ips)) == len(ips)
    assert len(ports_of(bridge)) == len(names)
    for name, cid in zip(names, ids, strict=True):
        rc, got, text = nslookup(k, names[0], name)
        assert rc == 0 and [f"{a}/" for a in got] == [entries[cid]["IPv4Address"].split("/")[0]
                                                       + "/"], text
    with ThreadPoolExecutor(len(names)) as pool:
        outs = list(pool.map(lambda n: docker(k, "rm", "-f", n), names))
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    # (ketchd deletes a removed container's veth in the background, just after)
    assert until(lambda: ports_of(bridge) == set(), 5), ports_of(bridge)
    assert net_inspect(k, "par")["Containers"] == {}
    ok(docker(k, "network", "rm", "par"))
    assert bridge not in links()

# --------------------------------------------------------------------------- addresses, ports

RUN_HELP = "\n\nRun 'docker run --help' for more information\n"


def test_static_ip_and_address_in_use(k: Ketchd) -> None:
    sub = subnet24()
    net = ipaddress.ip_network(sub)
    nid = ok(docker(k, "network", "create", "--subnet", sub, "st")).strip()
    bridge = f"br-{nid[:12]}"
    ip = str(net[10])
    run(k, "--name", "ip1", "--network", "st", "--ip", ip)
    assert addrs_in(k, "ip1") == {"eth0": [f"{ip}/24"]}
    ep = ctr_inspect(k, "ip1")["NetworkSettings"]["Networks"]["st"]
    assert ep["IPAMConfig"] == {"IPv4Address": ip} and ep["IPAddress"] == ip
    veths = ports_of(bridge)
    assert len(veths) == 1
    for name, taken in (("ip2", ip), ("ip3", str(net[1]))):    # a container's, the gateway
        out = dk(k, "run", "-d", "--dns", dns_of(k), "--name", name, "--network", "st",
                     "--ip", taken, "busybox", "sleep", "600")
        assert out.returncode == 125
        assert out.stderr == f"docker: Error response from daemon: Address already in use{RUN_HELP}"
        assert ctr_inspect(k, name)["State"]["Status"] == "created"
    out = docker(k, "run", "-d", "--name", "ip4", "--network", "st", "--ip", "10.1.2.3",
                 "busybox", "sleep", "600")
    assert (out.returncode, out.stderr) == (125, (
        "docker: Error response from daemon: Invalid address 10.1.2.3: It does not belong to "
        f"any of this network's subnets{RUN_HELP}"))
    assert ports_of(bridge) == veths
    # An address freed is given again.
    ok(docker(k, "rm", "-f", "ip1"))
    ok(docker(k, "start", "ip2"))
    assert addrs_in(k, "ip2") == {"eth0": [f"{ip}/24"]}


def test_port_already_allocated_leaves_nothing(k: Ketchd) -> None:
    port = free_port()
    nid = ok(docker(k, "network", "create", "pn")).strip()
    bridge = f"br-{nid[:12]}"
    web(k, "p1", "--network", "pn", "-p", f"{port}:80")
    veths = ports_of(bridge)
    assert len(veths) == 1
    elem = re.compile(rf"\btcp \. {port} : ")
    assert len(elem.findall(ok(nft_table(k)))) == 1
    out = dk(k, "run", "-d", "--dns", dns_of(k), "--name", "p2", "--network", "pn",
                 "-p", f"{port}:80", "busybox", "sleep", "600")
    assert out.returncode == 125
    msg = re.fullmatch(r"docker: Error response from daemon: (driver failed programming external "
                       r"connectivity on endpoint p2 \([0-9a-f]{64}\): Bind for 0\.0\.0\.0:"
                       rf"{port} failed: port is already allocated)" + re.escape(RUN_HELP),
                       out.stderr)
    assert msg, out.stderr
    state = ctr_inspect(k, "p2")["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("created", 128, msg[1])
    assert ctr_inspect(k, "p2")["NetworkSettings"]["Ports"] == {}
    assert ports_of(bridge) == veths
    assert len(elem.findall(ok(nft_table(k)))) == 1
    assert host_fetch(f"http://127.0.0.1:{port}/") == f"{PAGE}\n"     # p1 still served
    ok(docker(k, "rm", "-f", "p1"))
    assert until(lambda: ports_of(bridge) == set(), 5), ports_of(bridge)
    assert elem.findall(ok(nft_table(k))) == []
    ok(docker(k, "start", "p2"))        # the port is free now
    assert len(elem.findall(ok(nft_table(k)))) == 1
    ok(docker(k, "rm", "-f", "p2"))
    assert elem.findall(ok(nft_table(k))) == []


# --------------------------------------------------------------------------- bad input

def err(k: Ketchd, *args: str) -> tuple[int, str]:
    out = dk(k, *args)
    return out.returncode, out.stderr


def test_bad_input_messages_and_exit_codes(k: Ketchd) -> None:
    daemon = "Error response from daemon: "
    sub = subnet24()
    net = ipaddress.IPv4Network(sub)
    o1 = ok(docker(k, "network", "create", "--subnet", sub, "o1")).strip()
    ok(docker(k, "network", "create", "o2"))
    for overlapping in (sub, str(next(net.subnets(1))), str(net.supernet(4))):
        assert err(k, "network", "create", "--subnet", overlapping, "o3") == (
            1, f"{daemon}Pool overlaps with other one on this address space\n"), overlapping
    assert err(k, "network", "create", "o1") == (1, f"{daemon}network with name o1 already "
                                                    "exists\n")
    assert err(k, "network", "create", "--subnet", "10.60.0.0/33", "o3") == (
        1, f"{daemon}Invalid subnet 10.60.0.0/33 : invalid CIDR address: 10.60.0.0/33\n")
    assert err(k, "network", "create", "-d", "nosuch", "o3") == (
        1, f"{daemon}plugin \"nosuch\" not found\n")
    # A gateway outside the subnet: the CLI refuses it itself; the API answers 500.
    out = k.curl("-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
                 "-d", json.dumps({"Name": "o3", "CheckDuplicate": True, "IPAM": {"Config": [
                     {"Subnet": "10.81.0.0/24", "Gateway": "10.82.0.1"}]}}),
                 "http://x/networks/create")
    body, code = out.stdout.rsplit("\n", 1)
    assert (code, json.loads(body)) == ("500", {
        "message": "failed to allocate gateway (10.82.0.1): Requested address is out of range"})
    names = ok(docker(k, "network", "ls", "--format", "{{.Name}}")).split()
    assert "o3" not in names

    # Unknown networks.
    run(k, "--name", "c1", "--network", "o1")
    assert err(k, "network", "inspect", "nosuch") == (1, f"{daemon}network nosuch not found\n")
    assert err(k, "network", "connect", "nosuch", "c1") == (
        1, f"{daemon}network nosuch not found\n")
    assert err(k, "network", "disconnect", "nosuch", "c1") == (
        1, f"{daemon}network nosuch not found\n")
    rc, text = err(k, "network", "rm", "nosuch")
    assert rc == 1 and text.startswith(f"{daemon}network nosuch not found\n"), text
    assert err(k, "run", "-d", "--name", "r1", "--network", "nosuch", "busybox", "true") == (
        125, f"docker: {daemon}network nosuch not found{RUN_HELP}")
    assert ctr_inspect(k, "r1")["State"]["Status"] == "created"
    # Unknown container, twice connected, not connected.
    assert err(k, "network", "connect", "o2", "nosuch") == (
        1, f"{daemon}No such container: nosuch\n")
    assert err(k, "network", "connect", "o1", "c1") == (
        1, f"{daemon}endpoint with name c1 already exists in network o1\n")
    c1 = ctr_inspect(k, "c1")["Id"]
    assert err(k, "network", "disconnect", "o2", "c1") == (
        1, f"{daemon}container {c1} is not connected to network o2\n")
    # --ip where it cannot be.
    assert err(k, "run", "-d", "--name", "r2", "--network", "o2", "--ip", "10.1.1.1",
               "busybox", "true") == (
        125, f"docker: {daemon}user specified IP address is supported only when connecting "
             f"to networks with user configured subnets{RUN_HELP}")
    assert ctr_inspect(k, "r2")["State"]["Status"] == "created"
    # rm: in use, predefined.
    rc, text = err(k, "network", "rm", "o1")
    assert rc == 1 and text.startswith(
        f"{daemon}error while removing network: network o1 id {o1} has active endpoints\n"), text
    for name in ("bridge", "host", "none"):
        rc, text = err(k, "network", "rm", name)
        assert rc == 1 and text.startswith(
            f"{daemon}{name} is a pre-defined network and cannot be removed\n"), text
    assert err(k, "network", "connect", "none", "c1") == (
        1, f"{daemon}container cannot be connected to multiple networks with one of the "
           "networks in private (none) mode\n")
    assert err(k, "network", "connect", "host", "c1") == (
        1, f"{daemon}container cannot be disconnected from host network or connected to host "
           "network\n")
    # Invalid -p (refused by the CLI: nothing is created).
    before = ok(docker(k, "ps", "-aq")).split()
    for spec, msg in (("99999:80", "invalid hostPort: 99999"),
                      ("80:99999", "invalid containerPort: 99999"),
                      ("80/sctpx", "invalid proto: sctpx"),
                      ("1.2.3:80:80", "invalid IP address: 1.2.3")):
        rc, text = err(k, "run", "-d", "-p", spec, "busybox", "true")
        assert rc == 125 and text.startswith(f"docker: {msg}"), (spec, text)
    assert ok(docker(k, "ps", "-aq")).split() == before
    # All networks still there and working.
    assert sorted(n for n in ok(docker(k, "network", "ls", "--format", "{{.Name}}")).split()
                  if n.startswith("o")) == ["o1", "o2"]


# --------------------------------------------------------------------------- restart, reset

def test_networks_survive_a_ketchd_restart(k: Ketchd) -> None:
    port = free_port()
    sub = subnet24()
    ok(docker(k, "network", "create", "rn"))
    ok(docker(k, "network", "create", "--subnet", sub, "rs"))
    web(k, "r1", "--network", "rn", "-p", f"{port}:80")
    run(k, "--name", "r2", "--network", "rn")
    ok(docker(k, "network", "connect", "rs", "r2"))
    before = {n: net_inspect(k, n) for n in ("rn", "rs")}
    ips = {n: ctr_inspect(k, n)["NetworkSettings"]["Networks"]["rn"]["IPAddress"]
           for n in ("r1", "r2")}
    assert wait_page(k, "r2", "http://r1/") == f"{PAGE}\n"

    os.kill(k.proc.pid, signal.SIGKILL)
    k.proc.wait(10)
    start_daemon_process(k)

    after = {n: net_inspect(k, n) for n in ("rn", "rs")}
    for n in ("rn", "rs"):
        assert after[n]["Id"] == before[n]["Id"]
        assert after[n]["IPAM"] == before[n]["IPAM"] and after[n]["Created"] == before[n]["Created"]
        assert after[n]["Containers"] == before[n]["Containers"]
        assert f"br-{after[n]['Id'][:12]}" in links()
    # The running containers still find each other by name (the DNS server is back in
    # their netns), and the published port still answers.
    end = time.monotonic() + 10
    while (got := nslookup(k, "r2", "r1"))[1] != [ips["r1"]] and time.monotonic() < end:
        time.sleep(0.2)
    assert got[1] == [ips["r1"]], got[2]
    assert fetch_in(k, "r2", "http://r1/").stdout == f"{PAGE}\n"
    assert host_fetch(f"http://127.0.0.1:{port}/") == f"{PAGE}\n"
    # A new container joins, gets a fresh address, and resolves and is resolved.
    r3 = run(k, "--name", "r3", "--network", "rn")
    ip3 = ctr_inspect(k, "r3")["NetworkSettings"]["Networks"]["rn"]["IPAddress"]
    assert ip3 not in ips.values()
    assert fetch_in(k, "r3", "http://r1/").stdout == f"{PAGE}\n"
    rc, got3, text = nslookup(k, "r2", "r3")
    assert rc == 0 and got3 == [ip3], text
    assert sorted(net_inspect(k, "rn")["Containers"]) == sorted(
        [ctr_inspect(k, n)["Id"] for n in ("r1", "r2")] + [r3])
    # and the second network of r2 is still its eth1
    assert sorted(addrs_in(k, "r2")) == ["eth0", "eth1"]


@pytest.mark.parametrize("how", ["ketch system reset", "fixture teardown"])
def test_reset_removes_bridges_veths_and_the_nft_table(
        start_ketchd: Callable[..., Ketchd], busybox_archive: Path,  # noqa: F811
        how: str) -> None:
    k = start_ketchd()
    k.fake_dns = FAKE_DNS_CANDIDATES[0]  # type: ignore[attr-defined]
    custom = f"kx{secrets.token_hex(3)}"
    ids = [ok(docker(k, "network", "create", *extra, name)).strip() for name, extra in (
        ("n1", ()), ("n2", ("--internal",)),
        ("n3", ("-o", f"com.docker.network.bridge.name={custom}")))]
    made = {bridge_of(k), f"br-{ids[0][:12]}", f"br-{ids[1][:12]}", custom}
    assert made <= links()
    port = free_port()
    if how == "ketch system reset":
        ok(docker(k, "load", "-i", str(busybox_archive)))
        run(k, "--name", "c1", "--network", "n1", "-p", f"{port}:80")
        ok(docker(k, "network", "connect", "n3", "c1"))
        made |= ports_of(f"br-{ids[0][:12]}") | ports_of(custom)
        assert len(made) == 6
        assert f"tcp . {port} : " in ok(nft_table(k))
        out = subprocess.run([str(BIN / "ketch"), "system", "reset", "--root", str(k.root),
                              "--exec-root", str(k.dir / "exec"), "--pidfile", str(k.pidfile),
                              "--cgroup-parent", cgroup_parent_of(k), "-f"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert k.proc.wait(10) is not None
    else:
        assert nft_table(k).returncode == 0
        k.stop()
        stop_supervisor(k)
    assert made & links() == set()
    assert nft_table(k).returncode != 0
    s = socket.socket()     # the published port is free again
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.close()
