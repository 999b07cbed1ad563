"""What every network driver (bridge, macvlan, ipvlan) takes and gives for one
container on one network: the request, and the endpoint as plumbed.

The engine decides the interface name (``eth0``, ``eth1``... in the order the
container joins its networks) and which endpoint carries the default route
(the first non-internal one), so drivers stay ignorant of each other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from ketch.network.ports import PortMapping, PortSpec

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address


@dataclass(frozen=True)
class EndpointRequest:
    container_id: str
    netns_path: str                  # /proc/<pid>/ns/net of the container's init
    ifname: str = "eth0"             # the interface's name inside the container
    ip: str | None = None            # static IPv4 (--ip), else the network's IPAM picks
    ip6: str | None = None           # static IPv6 (--ip6), on IPv6 networks only
    mac: str | None = None           # --mac-address, else derived from the IPv4 address
    default_route: bool = True       # this endpoint gives the container its default route
    ports: tuple[PortSpec, ...] = ()  # -p/-P; drivers that cannot publish refuse non-empty


@dataclass(frozen=True)
class Endpoint:
    container_id: str
    ifname: str
    mac: str
    ip: IPv4Address | None
    prefix: int
    gateway: IPv4Address | None      # the network's gateway (the route may go elsewhere)
    ip6: IPv6Address | None = None
    prefix6: int = 0
    gateway6: IPv6Address | None = None
    host_veth: str = ""              # the host end of a veth pair ("" for macvlan/ipvlan)
    ports: tuple[PortMapping, ...] = field(default_factory=tuple)
    endpoint_id: str = ""            # 64 hex, as Docker's EndpointID

    @property
    def subnet(self) -> ipaddress.IPv4Network | None:
        if self.ip is None:
            return None
        return ipaddress.IPv4Interface(f"{self.ip}/{self.prefix}").network


class NetworkDriver(Protocol):
    """One network's kernel side; thread-safe, its state persisted under the daemon's
    network state dir so a restarted daemon can carry on or clean up."""

    def setup(self) -> None:
        """Make the network's kernel objects exist (idempotent; keeps recorded endpoints)."""

    def attach(self, req: EndpointRequest) -> Endpoint:
        """Plumb the container in; on any failure nothing is left behind."""

    def detach(self, container_id: str, *, background: bool = False) -> None:
        """Remove the container's interface, addresses and rules; no error if gone."""

    def endpoint(self, container_id: str) -> Endpoint | None: ...

    def endpoints(self) -> list[Endpoint]: ...

    def teardown(self) -> None:
        """Remove every endpoint and the network's kernel objects; forget its state."""

    def close(self) -> None:
        """Drop sockets; kernel objects stay (daemon shutdown)."""
