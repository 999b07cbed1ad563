"""Subnet choice, address allocation, MACs and the daemon.json pool options."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from ketch.errors import Forbidden, InvalidArgument, System, Unavailable
from ketch.network.ipam import (
    DEFAULT_POOLS,
    AddressPool,
    Allocator,
    choose_subnet,
    mac_from_ip,
    parse_address_pools,
    parse_bip,
    validate_mac,
)


def test_default_subnet_is_docker0s_when_free() -> None:
    assert choose_subnet(DEFAULT_POOLS, [IPv4Network("192.0.2.0/24")]) == \
        IPv4Network("172.17.0.0/16")


def test_subnet_skips_host_routes_and_addresses() -> None:
    occupied = [IPv4Network("172.17.5.0/24"), IPv4Network("172.16.0.0/12")]
    # 172.16/12 covers all of 172.17-31: the first 192.168 /20 is next.
    assert choose_subnet(DEFAULT_POOLS, occupied) == IPv4Network("192.168.0.0/20")
    assert choose_subnet(DEFAULT_POOLS, [IPv4Network("172.17.0.0/16")]) == \
        IPv4Network("172.18.0.0/16")


def test_no_subnet_left() -> None:
    pools = (AddressPool(IPv4Network("10.9.0.0/23"), 24),)
    with pytest.raises(Unavailable, match="non-overlapping IPv4 address pool"):
        choose_subnet(pools, [IPv4Network("10.9.0.0/24"), IPv4Network("10.9.1.0/25")])


def test_parse_address_pools() -> None:
    pools = parse_address_pools([{"base": "10.10.0.0/16", "size": 24}])
    assert pools == (AddressPool(IPv4Network("10.10.0.0/16"), 24),)
    assert next(pools[0].subnets()) == IPv4Network("10.10.0.0/24")
    for bad in ([{"base": "10.10.0.0/16"}], [{"base": "nope", "size": 24}],
                [{"base": "10.10.0.0/16", "size": 8}], [{"base": "fd00::/64", "size": 80}], []):
        with pytest.raises(InvalidArgument):
            parse_address_pools(bad)


def test_parse_bip() -> None:
    assert parse_bip("172.26.0.1/16") == (IPv4Address("172.26.0.1"), IPv4Network("172.26.0.0/16"))
    for bad in ("172.26.0.1", "172.26.0.0/16", "nope/8", "10.0.0.1/31", "fd00::1/64"):
        with pytest.raises(InvalidArgument, match="invalid bip"):
            parse_bip(bad)


def test_allocator_lowest_free_and_static() -> None:
    a = Allocator(IPv4Network("10.1.0.0/29"), IPv4Address("10.1.0.1"))
    assert [a.allocate() for _ in range(3)] == [IPv4Address(f"10.1.0.{i}") for i in (2, 3, 4)]
    a.release(IPv4Address("10.1.0.3"))
    assert a.allocate() == IPv4Address("10.1.0.3")
    assert a.allocate(IPv4Address("10.1.0.6")) == IPv4Address("10.1.0.6")
    # dockerd's words: taken (the gateway and the subnet's own addresses too) and outside
    for taken in ("10.1.0.6", "10.1.0.1", "10.1.0.7", "10.1.0.0"):
        with pytest.raises(Forbidden, match="Address already in use"):
            a.allocate(IPv4Address(taken))
    with pytest.raises(System, match="Invalid address 10.2.0.5: It does not belong "
                       "to any of this network's subnets"):
        a.allocate(IPv4Address("10.2.0.5"))
    assert a.allocate() == IPv4Address("10.1.0.5")
    with pytest.raises(Unavailable):
        a.allocate()


def test_allocator_gateway_not_first() -> None:
    a = Allocator(IPv4Network("10.1.0.0/24"), IPv4Address("10.1.0.2"), [IPv4Address("10.1.0.1")])
    assert a.allocate() == IPv4Address("10.1.0.3")


def test_mac() -> None:
    assert mac_from_ip(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
    assert validate_mac("02:42:AC:11:00:02") == "02:42:ac:11:00:02"
    with pytest.raises(InvalidArgument):
        validate_mac("02:42:ac:11:00")
