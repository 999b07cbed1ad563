"""ketch's nft table text, the persisted state, and rtnetlink attribute encoding.

The table script is also given to ``nft --check`` (which needs CAP_NET_ADMIN even to
parse, so only as root); nothing is applied."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from ketch.linux import netlink
from ketch.network import nat, state
from ketch.network.ports import PortMapping
from ketch.network.state import EndpointRecord, NetworkState

BR = nat.BridgeRules("ketch0", "172.17.0.0/16")
ANY = PortMapping("0.0.0.0", 8080, 80, "tcp")
LOCAL = PortMapping("127.0.0.1", 9090, 53, "udp")


def test_elements() -> None:
    assert nat.element(ANY, "172.17.0.2") == ("pub_any", "tcp . 8080 : 172.17.0.2 . 80")
    assert nat.element(LOCAL, "172.17.0.3") == ("pub_ip",
                                                 "127.0.0.1 . udp . 9090 : 172.17.0.3 . 53")
    assert nat.delete_elements_script("ketch", [ANY, LOCAL]) == (
        "delete element inet ketch pub_any { tcp . 8080 }\n"
        "delete element inet ketch pub_ip { 127.0.0.1 . udp . 9090 }\n")


def test_table_script_only_names_its_own_table() -> None:
    script = nat.table_script("ketch", [BR, nat.BridgeRules("br1", "10.0.0.0/24", icc=False)],
                              [(ANY, "172.17.0.2")])
    for line in script.splitlines():
        if line.startswith(("add ", "delete ", "table ")):
            assert " inet ketch" in line or " ip ketch" in line   # (the legacy family's)
    assert "elements = { tcp . 8080 : 172.17.0.2 . 80 }" in script
    assert 'ip saddr 172.17.0.0/16 oifname != "ketch0" masquerade' in script
    assert 'iifname "br1" oifname "br1" drop' in script          # --icc=false
    assert 'iifname "ketch0" oifname "ketch0" drop' not in script
    assert "policy drop" not in script


def test_internal_and_ipv6_rules() -> None:
    script = nat.table_script("ketch", [
        nat.BridgeRules("br-in", "10.1.0.0/24", internal=True),
        nat.BridgeRules("br-v6", "10.2.0.0/24", subnet6="fd00:1::/64"),
        nat.BridgeRules("br-nomasq", "10.3.0.0/24", masquerade=False)])
    # an internal network: nothing in or out but between its own ports, never masqueraded
    assert 'iifname "br-in" oifname != "br-in" drop' in script
    assert 'oifname "br-in" iifname != "br-in" drop' in script
    assert "10.1.0.0/24 oifname" not in script
    assert 'ip6 saddr fd00:1::/64 oifname != "br-v6" masquerade' in script
    assert 'ip saddr 10.3.0.0/24 oifname != "br-nomasq" masquerade' not in script


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft --check")
def test_scripts_parse() -> None:
    for script in (nat.table_script("ketch_unit_check", [BR], [(ANY, "172.17.0.2"),
                                                               (LOCAL, "172.17.0.3")]),):
        out = subprocess.run(["nft", "--check", "-f", "-"], input=script, text=True,
                             capture_output=True)
        assert out.returncode == 0, out.stderr


def test_state_roundtrip(tmp_path) -> None:
    st = NetworkState("ketch0", "ketch", "172.17.0.0/16", "172.17.0.1", True,
                      {"net/ipv4/ip_forward": "0"},
                      {"c1": EndpointRecord("c1", "172.17.0.2", "02:42:ac:11:00:02", "veth1234567",
                                            [ANY], "h", ["a"])})
    state.save(str(tmp_path), st)
    assert state.load(str(tmp_path), "ketch0") == st
    assert state.load_all(str(tmp_path)) == [st]
    assert not list(tmp_path.glob("*.tmp"))
    state.remove(str(tmp_path), "ketch0")
    state.remove(str(tmp_path), "ketch0")
    assert state.load(str(tmp_path), "ketch0") is None


def test_netlink_attrs() -> None:
    a = netlink.attr_str(netlink.IFLA_IFNAME, "eth0")
    assert a == struct.pack("=HH", 9, 3) + b"eth0\0" + b"\0\0\0"
    nested = netlink.nested(netlink.IFLA_LINKINFO, netlink.attr_str(netlink.IFLA_INFO_KIND, "veth"),
                            netlink.attr_u32(7, 42))
    outer = netlink.parse_attrs(nested)
    inner = netlink.parse_attrs(outer[netlink.IFLA_LINKINFO])
    assert inner[netlink.IFLA_INFO_KIND] == b"veth\0"
    assert struct.unpack("=I", inner[7]) == (42,)
    assert netlink.mac_bytes("02:42:ac:11:00:02") == bytes([2, 0x42, 0xac, 0x11, 0, 2])


def test_netlink_dump_in_own_netns() -> None:
    with netlink.Netlink() as nl:
        links = nl.links()
        assert any(link.name == "lo" and link.index == 1 for link in links)
        assert nl.link("lo") is not None
        assert nl.link("no-such-if-x") is None
        assert any(str(a.address.ip) == "127.0.0.1" for a in nl.addresses())
