"""-p/-P parsing (docker 28 CLI's messages, checked against /usr/local/bin/docker) and
the host-port allocator."""

from __future__ import annotations

import socket

import pytest

from ketch.errors import Conflict, InvalidArgument, Unavailable
from ketch.network.ports import (
    PortAllocator,
    PortMapping,
    PortSpec,
    parse_port_spec,
    parse_publish,
    ports_json,
    publish_all,
)


@pytest.mark.parametrize("raw, want", [
    ("80", [PortSpec(80, "tcp")]),
    ("8080:80", [PortSpec(80, "tcp", "", 8080, 8080)]),
    ("127.0.0.1:8080:80/udp", [PortSpec(80, "udp", "127.0.0.1", 8080, 8080)]),
    ("127.0.0.1::80", [PortSpec(80, "tcp", "127.0.0.1")]),
    ("80/TCP", [PortSpec(80, "tcp")]),
    ("80/", [PortSpec(80, "tcp")]),
    ("8000-8001:80-81", [PortSpec(80, "tcp", "", 8000, 8000), PortSpec(81, "tcp", "", 8001, 8001)]),
    ("8000-8010:80", [PortSpec(80, "tcp", "", 8000, 8010)]),
    ("90-91/sctp", [PortSpec(90, "sctp"), PortSpec(91, "sctp")]),
])
def test_parse(raw: str, want: list[PortSpec]) -> None:
    assert parse_port_spec(raw) == want


@pytest.mark.parametrize("raw, message", [
    ("abc", "invalid containerPort: abc"),
    ("80:abc", "invalid containerPort: abc"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"),
    ("80/xyz", "invalid proto: xyz"),
    ("8000-8002:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8000-8002"),
    ("8002-8000:80", "invalid hostPort: 8002-8000"),
    ("99999:80", "invalid hostPort: 99999"),
    ("", "no port specified: <empty>"),
    ("80:", "no port specified: 80:<empty>"),
])
def test_parse_errors(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_port_spec(raw)
    assert exc.value.message == message


def test_publish_all_skips_ports_given_with_p() -> None:
    given = parse_publish(["8080:80"])
    assert publish_all(["80/tcp", "53/udp", "9000"], given) == [PortSpec(53, "udp"),
                                                                  PortSpec(9000, "tcp")]


def test_allocator_fixed_and_conflicts() -> None:
    pa = PortAllocator((40000, 40002), bind=False)
    m = pa.allocate(PortSpec(80, "tcp", "", 8080, 8080), "10.0.0.2")
    assert m == PortMapping("0.0.0.0", 8080, 80, "tcp")
    with pytest.raises(Conflict, match=r"^Bind for 0.0.0.0:8080 failed: port is already allocated$"):
        pa.allocate(PortSpec(81, "tcp", "", 8080, 8080), "10.0.0.3")
    # 0.0.0.0 covers every address; dockerd's allocator lets 127.0.0.1:8080 through, and
    # its proxy's bind fails: that message
    with pytest.raises(Conflict, match=r"^Error starting userland proxy: listen tcp4 "
                       r"127.0.0.1:8080: bind: address already in use$"):
        pa.allocate(PortSpec(81, "tcp", "127.0.0.1", 8080, 8080), "10.0.0.3")
    # IPv4 and IPv6 wildcards are two bindings
    assert pa.allocate(PortSpec(80, "tcp", "::", 8080, 8080), "10.0.0.2").host_ip == "::"
    assert pa.allocate(PortSpec(81, "udp", "", 8080, 8080), "10.0.0.3").proto == "udp"
    pa.release(m)
    assert pa.allocate(PortSpec(81, "tcp", "", 8080, 8080), "10.0.0.3").host_port == 8080


def test_allocator_ephemeral_is_sequential_and_wraps() -> None:
    pa = PortAllocator((40000, 40002), bind=False)
    got = [pa.allocate(PortSpec(80), "10.0.0.2").host_port for _ in range(3)]
    assert got == [40000, 40001, 40002]
    with pytest.raises(Unavailable):
        pa.allocate(PortSpec(80), "10.0.0.2")
    pa.release(PortMapping("0.0.0.0", 40001, 80, "tcp"))
    assert pa.allocate(PortSpec(80), "10.0.0.2").host_port == 40001


def test_allocator_range_picks_a_free_port_in_it() -> None:
    pa = PortAllocator((40000, 40002), bind=False)
    pa.allocate(PortSpec(80, "tcp", "", 9000, 9000), "10.0.0.2")
    assert pa.allocate(PortSpec(80, "tcp", "", 9000, 9001), "10.0.0.3").host_port == 9001


def test_allocator_binds_and_reports_ports_held_by_others() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        pa = PortAllocator((40000, 40002))
        with pytest.raises(Conflict, match=f"failed to bind host port for 127.0.0.1:{port}:"
                                           f"10.0.0.2:80/tcp: address already in use"):
            pa.allocate(PortSpec(80, "tcp", "127.0.0.1", port, port), "10.0.0.2")
        assert pa.used == {}
    finally:
        holder.close()
    m = pa.allocate(PortSpec(80, "tcp", "127.0.0.1", port, port), "10.0.0.2")
    probe = socket.socket()
    with pytest.raises(OSError):
        probe.bind(("127.0.0.1", port))     # held while the container has it
    probe.close()
    pa.release(m)
    probe = socket.socket()
    probe.bind(("127.0.0.1", port))
    probe.close()


def test_ports_json() -> None:
    got = ports_json([PortMapping("0.0.0.0", 8080, 80, "tcp")], exposed=["80/tcp", "53/udp"])
    assert got == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": None}
