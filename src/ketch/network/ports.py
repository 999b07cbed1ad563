"""Published ports: ``-p``/``-P`` parsing with Docker's grammar and messages, and the
host-port allocator.

``-p [ip:][hostPort:]containerPort[/proto]`` where either port may be a range
``a-b``; a host range with a single container port means "any free port in this
range"; an empty host port means an ephemeral one from the kernel's
``ip_local_port_range``. Messages are the docker 28 CLI's (go-connections nat).

Host ports are reserved the way dockerd 28 does it: ketch keeps its own table of
(proto, ip, port) in use ("port is already allocated"), and binds a socket on the
host port so that no host process can take it while the container has it (and
so that a port a host process already holds fails with "address already in use").
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from ketch.errors import Conflict, InvalidArgument, Unavailable

PROTOS = ("tcp", "udp", "sctp")


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One container port to publish, as parsed (before any host port is chosen)."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""            # "" = every address (0.0.0.0)
    host_port_start: int = 0     # 0 = ephemeral
    host_port_end: int = 0

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A published port with its host side decided."""

    host_ip: str                 # "0.0.0.0" for every address
    host_port: int
    container_port: int
    proto: str

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def to_json(self) -> dict[str, object]:
        return {"host_ip": self.host_ip, "host_port": self.host_port,
                "container_port": self.container_port, "proto": self.proto}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> PortMapping:
        return cls(str(d["host_ip"]), int(str(d["host_port"])), int(str(d["container_port"])),
                   str(d["proto"]))


def _split_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    n = len(parts)
    if n == 1:
        return "", "", parts[0]
    if n == 2:
        return "", parts[0], parts[1]
    if n == 3:
        return parts[0], parts[1], parts[2]
    return ":".join(parts[:n - 2]), parts[n - 2], parts[n - 1]


def _split_proto(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1 or not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def parse_port_range(ports: str) -> tuple[int, int]:
    """``"80"`` -> (80, 80); ``"8000-8010"`` -> (8000, 8010). ValueError if invalid."""
    if not ports:
        raise ValueError("empty string specified for ports")
    if "-" not in ports:
        start = _uint16(ports)
        return start, start
    first, _, rest = ports.partition("-")
    start, end = _uint16(first), _uint16(rest.split("-")[0])
    if end < start:
        raise ValueError(f"invalid range specified for port: {ports}")
    return start, end


def _uint16(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    value = int(text)
    if value > 65535:
        raise ValueError(text)
    return value


def parse_port_spec(raw: str) -> list[PortSpec]:
    """One ``-p`` value -> one PortSpec per container port (Docker's ParsePortSpec)."""
    ip, host_port, container_port = _split_parts(raw)
    proto, container_port = _split_proto(container_port)
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise InvalidArgument(f"invalid IP address: {ip}")
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidArgument(f"invalid IP address: {ip}") from None
    if not container_port:
        raise InvalidArgument(f"no port specified: {raw}<empty>")
    try:
        start, end = parse_port_range(container_port)
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {container_port}") from None
    host_start = host_end = 0
    if host_port:
        try:
            host_start, host_end = parse_port_range(host_port)
        except ValueError:
            raise InvalidArgument(f"invalid hostPort: {host_port}") from None
    if host_port and end - start != host_end - host_start and end != start:
        raise InvalidArgument(f"invalid ranges specified for container and host Ports: "
                              f"{container_port} and {host_port}")
    proto = proto.lower()
    if proto not in PROTOS:
        raise InvalidArgument(f"invalid proto: {proto}")
    if ip and ipaddress.ip_address(ip).version == 6:
        raise InvalidArgument(f"publishing on IPv6 addresses is not supported: {ip}")
    specs = []
    for i in range(end - start + 1):
        if not host_port:
            hs = he = 0
        elif start == end:
            hs, he = host_start, host_end          # any free port of the host range
        else:
            hs = he = host_start + i
        specs.append(PortSpec(start + i, proto, ip, hs, he))
    return specs


def parse_publish(values: Iterable[str]) -> list[PortSpec]:
    out: list[PortSpec] = []
    for value in values:
        out.extend(parse_port_spec(value))
    return out


def publish_all(exposed: Iterable[str], already: Iterable[PortSpec] = ()) -> list[PortSpec]:
    """``-P``: every exposed port ("80/tcp", "53/udp", "80") not already published by -p
    gets an ephemeral host port."""
    taken = {s.key for s in already}
    out = []
    for item in exposed:
        proto, port = _split_proto(item)
        try:
            start, end = parse_port_range(port)
        except ValueError:
            raise InvalidArgument(f"invalid containerPort: {port}") from None
        for p in range(start, end + 1):
            spec = PortSpec(p, proto.lower() or "tcp")
            if spec.key not in taken:
                taken.add(spec.key)
                out.append(spec)
    return out


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range; Docker's fallback 49153-65535 if unreadable."""
    try:
        with open(path) as f:
            lo, hi = (int(x) for x in f.read().split())
        if 0 < lo <= hi <= 65535:
            return lo, hi
    except (OSError, ValueError):
        pass
    return 49153, 65535


_SOCK_TYPES = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0),
               "sctp": (socket.SOCK_STREAM, 132)}


def is_v6(host_ip: str) -> bool:
    return ":" in host_ip


def _wildcard(host_ip: str) -> str:
    return "::" if is_v6(host_ip) else "0.0.0.0"


def bind_host_port(proto: str, host_ip: str, port: int) -> socket.socket:
    """A socket bound on the host port, holding it; OSError if it is in use. An IPv6
    one is IPv6-only: 0.0.0.0 and :: are two bindings, as dockerd makes them."""
    stype, sproto = _SOCK_TYPES[proto]
    family = socket.AF_INET6 if is_v6(host_ip) else socket.AF_INET
    sock = socket.socket(family, stype | socket.SOCK_CLOEXEC, sproto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host_ip, port))
    except OSError:
        sock.close()
        raise
    return sock


class PortAllocator:
    """Host ports in use by ketch's containers, with Docker's sequential ephemeral search
    (the next ephemeral port follows the last one handed out, wrapping around)."""

    def __init__(self, ephemeral: tuple[int, int] | None = None, *, bind: bool = True) -> None:
        self.ephemeral = ephemeral or ephemeral_range()
        self.bind = bind
        self.used: dict[tuple[str, str, int], socket.socket | None] = {}
        self.last: dict[str, int] = {}

    def _conflicts(self, proto: str, ip: str, port: int) -> bool:
        if ip in ("0.0.0.0", "::"):
            return any(p == proto and n == port and is_v6(i) == is_v6(ip)
                       for (p, i, n) in self.used)
        return ((proto, ip, port) in self.used) or ((proto, _wildcard(ip), port) in self.used)

    def socket_of(self, mapping: PortMapping) -> socket.socket | None:
        """The socket holding a mapping's host port (None when not binding)."""
        return self.used.get((mapping.proto, mapping.host_ip, mapping.host_port))

    def _take(self, proto: str, ip: str, port: int, spec_text: str) -> None:
        if self._conflicts(proto, ip, port):
            if (proto, ip, port) not in self.used and ip not in ("0.0.0.0", "::"):
                # another key holds it (the wildcard): dockerd's allocator lets it
                # through and its proxy's bind fails
                family = "tcp6" if is_v6(ip) else "tcp4"
                raise Conflict(f"Error starting userland proxy: listen {family} {ip}:{port}: "
                               "bind: address already in use")
            raise Conflict(f"Bind for {ip}:{port} failed: port is already allocated")
        sock = None
        if self.bind:
            try:
                sock = bind_host_port(proto, ip, port)
            except OSError as exc:
                raise Conflict(f"failed to bind host port for {spec_text}: "
                               f"{exc.strerror.lower() if exc.strerror else exc}") from None
        self.used[(proto, ip, port)] = sock

    def allocate(self, spec: PortSpec, container_ip: str) -> PortMapping:
        ip = spec.host_ip or "0.0.0.0"
        if is_v6(ip) and ip.startswith("["):
            ip = ip[1:-1]
        if spec.host_port_start and spec.host_port_start == spec.host_port_end:
            port = spec.host_port_start
            self._take(spec.proto, ip, port,
                       f"{ip}:{port}:{container_ip}:{spec.container_port}/{spec.proto}")
            return PortMapping(ip, port, spec.container_port, spec.proto)
        lo, hi = ((spec.host_port_start, spec.host_port_end) if spec.host_port_start
                  else self.ephemeral)
        key = f"{spec.proto}/{ip}/{lo}-{hi}"
        start = self.last.get(key, hi)
        last_error: Conflict | None = None
        for i in range(hi - lo + 1):
            port = lo + (start - lo + 1 + i) % (hi - lo + 1)
            try:
                self._take(spec.proto, ip, port,
                           f"{ip}:{port}:{container_ip}:{spec.container_port}/{spec.proto}")
            except Conflict as exc:
                last_error = exc
                continue
            self.last[key] = port
            return PortMapping(ip, port, spec.container_port, spec.proto)
        if spec.host_port_start and last_error is not None:
            raise last_error
        raise Unavailable(f"all ports are allocated in the range {lo}-{hi}")

    def claim(self, mapping: PortMapping) -> None:
        """Re-reserve a mapping recorded before a daemon restart (best effort bind)."""
        sock = None
        if self.bind:
            try:
                sock = bind_host_port(mapping.proto, mapping.host_ip, mapping.host_port)
            except OSError:
                sock = None
        self.used[(mapping.proto, mapping.host_ip, mapping.host_port)] = sock

    def release(self, mapping: PortMapping) -> None:
        sock = self.used.pop((mapping.proto, mapping.host_ip, mapping.host_port), None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for sock in self.used.values():
            if sock is not None:
                sock.close()
        self.used.clear()


def ports_json(mappings: Iterable[PortMapping],
               exposed: Iterable[str] = ()) -> dict[str, list[dict[str, str]] | None]:
    """``NetworkSettings.Ports``: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
    exposed-but-unpublished ports mapped to None."""
    out: dict[str, list[dict[str, str]] | None] = {}
    for item in exposed:
        proto, port = _split_proto(item)
        out.setdefault(f"{port}/{proto.lower() or 'tcp'}", None)
    for m in mappings:
        entry = out.get(m.key) or []
        entry.append({"HostIp": m.host_ip, "HostPort": str(m.host_port)})
        out[m.key] = entry
    return out
