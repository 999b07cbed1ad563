"""The embedded DNS server in a real network namespace: 127.0.0.11:53 bound inside it,
queried from inside over UDP and TCP, forwarding from the daemon's netns, stop()
freeing the port. Prints the time of 10,000 sequential UDP queries (never asserted)."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.integration.throwaway_netns import Netns
from tests.unit.test_network_dns import (
    RCODE_NXDOMAIN,
    FakeResolver,
    Upstream,
    reply_to,
)

from ketch.errors import InvalidArgument, NotFound, Unavailable
from ketch.linux.netns import run_in_netns, socket_in_netns
from ketch.network import dns

pytestmark = pytest.mark.root

NAMES = {"web": ["172.30.0.2"], "svc": ["172.30.0.2", "172.30.0.3"]}
PTRS = {"172.30.0.2": "web.n1"}

# Run inside the netns by nsenter: a separate process, as a container's resolver is.
CLIENT = r"""
import json, socket, struct, sys, time
from ketch.network import dns
out = {}
def q(name, qtype=1, qid=1):
    return dns.Message(qid, 0x100, [dns.Question(name, qtype)]).encode()
def show(m):
    return {"id": m.id, "flags": m.flags, "rcode": m.rcode,
            "answers": [[rr.name, rr.rtype, rr.ttl, rr.rdata.hex()] for rr in m.answers],
            "ptr": [dns.name_text(dns.decode_name(rr.rdata, 0)[0]) for rr in m.answers
                    if rr.rtype == 12]}
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.settimeout(5)
for name, qtype in json.loads(sys.argv[1]):
    c.sendto(q(name, qtype), ("127.0.0.11", 53))
    out[f"udp {name} {qtype}"] = show(dns.parse_message(c.recv(65535)))
t = socket.create_connection(("127.0.0.11", 53), timeout=5)
f = t.makefile("rb")
for name, qtype in json.loads(sys.argv[1]):
    data = q(name, qtype, 2)
    t.sendall(struct.pack("!H", len(data)) + data)
    (n,) = struct.unpack("!H", f.read(2))
    out[f"tcp {name} {qtype}"] = show(dns.parse_message(f.read(n)))
count = int(sys.argv[2])
data = q("web")
t0 = time.perf_counter()
for _ in range(count):
    c.sendto(data, ("127.0.0.11", 53))
    c.recv(65535)
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def _netns_id() -> str:
    import os
    return os.readlink("/proc/thread-self/ns/net")


@pytest.fixture
def netns() -> Iterator[Callable[[], Netns]]:
    made: list[Netns] = []

    def make() -> Netns:
        made.append(Netns())
        return made[-1]

    yield make
    for n in made:
        n.kill()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream(lambda m: reply_to(m, RCODE_NXDOMAIN, answers=0)
                  if m.questions[0].name.startswith("nx") else reply_to(m))
    yield up
    up.close()


@pytest.fixture
def server(upstream: Upstream) -> Iterator[dns.DnsServer]:
    s = dns.DnsServer(FakeResolver(NAMES, PTRS, [upstream.addr]))
    s.start()
    yield s
    s.close()


def query_inside(ns: Netns, questions: list[tuple[str, int]], count: int) -> dict[str, Any]:
    done = ns.run(sys.executable, "-c", CLIENT, json.dumps(questions), str(count),
                  timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_serve_in_a_netns(netns: Callable[[], Netns], server: dns.DnsServer,
                          upstream: Upstream) -> None:
    ns = netns()
    with pytest.raises(Unavailable, match="loopback interface is down"):
        server.serve("c1", ns.path)
    ns.lo_up()
    server.serve("c1", ns.path)
    server.serve("c1", ns.path)  # idempotent
    pid = ns.proc.pid
    server.serve("c1", f"/proc/{pid}/task/{pid}/ns/net")  # the same netns by another path
    assert server.served() == {"c1": ns.path}
    with pytest.raises(NotFound):
        server.serve("c2", "/proc/0/ns/net")
    got = query_inside(ns, [("web", 1), ("SVC.", 1), ("web", 28),
                            ("2.0.30.172.in-addr.arpa", 12), ("nx.example", 1),
                            ("host.example", 1)], 10_000)
    print(f"\n10,000 sequential UDP queries of a local name: {got['seconds']:.3f} s")
    for proto in ("udp", "tcp"):
        answers = {key.split(" ", 1)[1]: value for key, value in got.items()
                   if key.startswith(proto)}
        assert answers["web 1"]["answers"] == [["web", 1, 600, "ac1e0002"]]
        assert answers["web 1"]["flags"] == dns.FLAG_QR | dns.FLAG_RD | dns.FLAG_RA
        assert sorted(a[3] for a in answers["SVC. 1"]["answers"]) == ["ac1e0002", "ac1e0003"]
        assert answers["SVC. 1"]["answers"][0][0] == "SVC"
        assert answers["web 28"]["rcode"] == 0 and answers["web 28"]["answers"] == []
        assert answers["2.0.30.172.in-addr.arpa 12"]["ptr"] == ["web.n1"]
        assert answers["nx.example 1"]["rcode"] == RCODE_NXDOMAIN
        assert answers["host.example 1"]["answers"][0][3] == "c0000200"
    # forwarded from the daemon's netns: the upstream on its 127.0.0.1 saw them
    seen = {(proto, m.questions[0].name) for proto, m in upstream.seen}
    assert {("udp", "nx.example"), ("tcp", "nx.example"), ("udp", "host.example"),
            ("tcp", "host.example")} <= seen


def test_stop_frees_the_port_and_serve_moves_with_the_netns(
        netns: Callable[[], Netns], server: dns.DnsServer) -> None:
    first, second = netns(), netns()
    first.lo_up()
    second.lo_up()
    server.serve("c1", first.path)
    server.serve("c1", second.path)  # a restarted container: a new netns
    assert server.served() == {"c1": second.path}
    got = query_inside(second, [("web", 1)], 1)
    assert got["udp web 1"]["answers"][0][3] == "ac1e0002"
    for ns in (first, second):
        # first's port is free: serve() left it when it moved
        probe = socket_in_netns(ns.path, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if ns is first:
                probe.bind(("127.0.0.11", 53))
            else:
                with pytest.raises(OSError):
                    probe.bind(("127.0.0.11", 53))
        finally:
            probe.close()
    server.stop("c1")
    server.stop("c1")
    assert server.served() == {}
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        probe = socket_in_netns(second.path, socket.AF_INET, kind)
        try:
            probe.bind(("127.0.0.11", 53))
        finally:
            probe.close()
    bad = second.run(sys.executable, "-c", CLIENT, json.dumps([("web", 1)]), "0",
                     timeout=120)
    assert bad.returncode != 0  # nothing answers there any more


def test_a_container_dns_server_on_the_wildcard_shares_udp_53(
        netns: Callable[[], Netns], server: dns.DnsServer) -> None:
    ns = netns()
    ns.lo_up()
    server.serve("c1", ns.path)
    theirs = socket_in_netns(ns.path, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        theirs.bind(("0.0.0.0", 53))  # as dnsmasq does in a container
        got = query_inside(ns, [("web", 1)], 1)
        assert got["udp web 1"]["answers"][0][3] == "ac1e0002"
    finally:
        theirs.close()


def test_run_in_netns_moves_only_its_own_thread(netns: Callable[[], Netns]) -> None:
    ns = netns()
    ours = _netns_id()
    assert run_in_netns(ns.path, _netns_id) != ours
    assert _netns_id() == ours
    with pytest.raises(ZeroDivisionError):
        run_in_netns(ns.path, lambda: 1 // 0)
    with pytest.raises(NotFound):
        run_in_netns("/proc/0/ns/net", _netns_id)
    with pytest.raises(InvalidArgument):
        run_in_netns("/proc/self/ns/mnt", _netns_id)
