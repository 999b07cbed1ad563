"""IPv4 address management for bridge networks, as Docker's default IPAM does it.

- The subnet of a network comes from ``bip`` (daemon.json ``bip``: the gateway
  address with its prefix, "172.26.0.1/16") or else is the first subnet of the
  ``default-address-pools`` that overlaps no route and no address of the host
  (and no other ketch network).
- Addresses are handed out lowest-free first, from the subnet's first host
  address, skipping the gateway and the broadcast address, so a released
  address is reused by the next container, as dockerd 20.10 does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ketch.errors import Forbidden, InvalidArgument, System, Unavailable

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


@dataclass(frozen=True, slots=True)
class AddressPool:
    """One entry of ``default-address-pools``: subnets of /size carved from base."""

    base: IPv4Network
    size: int

    def subnets(self) -> Iterator[IPv4Network]:
        if self.size <= self.base.prefixlen:
            yield self.base
            return
        yield from self.base.subnets(new_prefix=self.size)


def _pool(base: str, size: int) -> AddressPool:
    return AddressPool(IPv4Network(base), size)


# libnetwork's local-scope defaults (ipamutils): 172.17-19/16, 172.20/14, 172.24/14,
# 172.28/14 split in /16s, then 192.168/16 split in /20s.
DEFAULT_POOLS: tuple[AddressPool, ...] = (
    _pool("172.17.0.0/16", 16), _pool("172.18.0.0/16", 16), _pool("172.19.0.0/16", 16),
    _pool("172.20.0.0/14", 16), _pool("172.24.0.0/14", 16), _pool("172.28.0.0/14", 16),
    _pool("192.168.0.0/16", 20),
)


def parse_address_pools(value: Iterable[dict[str, Any]]) -> tuple[AddressPool, ...]:
    """daemon.json's ``default-address-pools``: ``[{"base": "10.10.0.0/16", "size": 24}]``."""
    pools = []
    for item in value:
        if not isinstance(item, dict) or "base" not in item or "size" not in item:
            raise InvalidArgument(f"invalid default address pool: {item!r} "
                                  "(want {\"base\": CIDR, \"size\": prefix length})")
        try:
            base = ipaddress.ip_network(str(item["base"]))
        except ValueError as exc:
            raise InvalidArgument(f"invalid base pool {item['base']!r}: {exc}") from None
        if not isinstance(base, IPv4Network):
            raise InvalidArgument(f"IPv6 address pools are not supported: {item['base']}")
        size = item["size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 30:
            raise InvalidArgument(f"invalid pools size: {size!r}")
        if size < base.prefixlen:
            raise InvalidArgument(f"invalid pools size: {size} is shorter than the base "
                                  f"{base}'s prefix")
        pools.append(AddressPool(base, size))
    if not pools:
        raise InvalidArgument("default-address-pools is empty")
    return tuple(pools)


def parse_bip(bip: str) -> tuple[IPv4Address, IPv4Network]:
    """``--bip 172.26.0.1/16`` -> (gateway 172.26.0.1, subnet 172.26.0.0/16)."""
    try:
        iface = ipaddress.ip_interface(bip)
    except ValueError:
        raise InvalidArgument(f"invalid bip: {bip}: must be an IPv4 address with a prefix "
                              "length (CIDR)") from None
    if not isinstance(iface, ipaddress.IPv4Interface) or "/" not in bip:
        raise InvalidArgument(f"invalid bip: {bip}: must be an IPv4 address with a prefix "
                              "length (CIDR)")
    net = iface.network
    if net.prefixlen > 30 or iface.ip in (net.network_address, net.broadcast_address):
        raise InvalidArgument(f"invalid bip: {bip}: not a usable host address of {net}")
    return iface.ip, net


def choose_subnet(pools: Sequence[AddressPool], occupied: Iterable[IPv4Network],
                  after: IPv4Network | None = None) -> IPv4Network:
    """The first pool subnet overlapping none of ``occupied`` (host routes, addresses,
    other networks); with ``after`` (the last one handed out), the first such one
    after it, wrapping around, as dockerd's allocator rotates through its pools."""
    taken = list(occupied)
    candidates = [s for pool in pools for s in pool.subnets()]
    if after is not None and after in candidates:
        i = candidates.index(after) + 1
        candidates = candidates[i:] + candidates[:i]
    for subnet in candidates:
        if not any(subnet.overlaps(o) for o in taken):
            return subnet
    raise Unavailable("could not find an available, non-overlapping IPv4 address pool among "
                      "the defaults to assign to the network")


def first_host(subnet: IPv4Network) -> IPv4Address:
    return subnet.network_address + 1


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Allocator:
    """Lowest-free address allocation in one subnet (IPv4 or IPv6), from ``ip_range``
    when the network has one (``--ip-range``); static addresses may be anywhere in
    the subnet, as Docker allows. The allocated set is what gets persisted."""

    def __init__(self, subnet: IPNetwork, gateway: IPAddress | None,
                 allocated: Iterable[IPAddress] = (), *,
                 ip_range: IPNetwork | None = None, network_name: str = "bridge") -> None:
        self.subnet = subnet
        self.gateway = gateway
        self.ip_range = ip_range or subnet
        self.network_name = network_name
        self.allocated: set[IPAddress] = set(allocated)

    def _usable(self, ip: IPAddress) -> bool:
        if ip not in self.subnet or ip == self.gateway or ip == self.subnet.network_address:
            return False
        # IPv6 has no broadcast address; dockerd still never hands out the last one
        return ip != self.subnet.broadcast_address

    def allocate(self, ip: IPAddress | None = None) -> IPAddress:
        if ip is not None:
            if ip.version != self.subnet.version or ip not in self.subnet:
                raise System(f"Invalid address {ip}: It does not belong to any of "
                             "this network's subnets")
            if not self._usable(ip) or ip in self.allocated:
                raise Forbidden("Address already in use")
            self.allocated.add(ip)
            return ip
        make = type(self.subnet.network_address)
        for n in range(int(self.ip_range.network_address),
                       int(self.ip_range.broadcast_address) + 1):
            candidate = make(n)
            if self._usable(candidate) and candidate not in self.allocated:
                self.allocated.add(candidate)
                return candidate
        family = "IPv4" if self.subnet.version == 4 else "IPv6"
        raise Unavailable(f"no available {family} addresses on this network's address "
                          f"pools: {self.network_name} ({self.subnet})")

    def release(self, ip: IPAddress) -> None:
        self.allocated.discard(ip)


def mac_from_ip(ip: IPv4Address) -> str:
    """Docker's generated MAC: 02:42 then the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def validate_mac(mac: str) -> str:
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                  for p in parts):
        raise InvalidArgument(f"invalid MAC address: {mac}")
    return mac.lower()
