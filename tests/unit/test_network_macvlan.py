"""macvlan/ipvlan driver without the kernel: dockerd's option rules and messages,
the config's checks, the state file, and the bytes of the rtnetlink requests."""

from __future__ import annotations

import ipaddress
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import InvalidArgument
from ketch.linux import netlink_links as links
from ketch.linux.netlink import attr, attr_str, attr_u32, nested, parse_attrs
from ketch.network.macvlan import (
    EndpointRecord,
    MacvlanConfig,
    MacvlanState,
    config_from_options,
    dummy_name,
    load_all_states,
    load_state,
    parse_vlan_parent,
    remove_state,
    save_state,
    skips_gateway,
    state_path,
)

NID = "3f" * 32


def cfg(driver: str = "macvlan", options: dict[str, str] | None = None,
        **kw: Any) -> MacvlanConfig:
    kw.setdefault("subnet", "192.168.50.0/24")
    kw.setdefault("gateway", "192.168.50.1")
    return config_from_options(driver, options if options is not None else {"parent": "eth0"},
                               network_id=NID, name="mv", **kw)


# -- options -------------------------------------------------------------------------


def test_defaults_per_driver() -> None:
    c = cfg()
    assert (c.driver, c.parent, c.mode, c.flag, c.internal) == ("macvlan", "eth0", "bridge", "",
                                                                False)
    assert c.subnet == ipaddress.IPv4Network("192.168.50.0/24")
    assert c.gateway == ipaddress.IPv4Address("192.168.50.1")
    i = cfg("ipvlan")
    assert (i.mode, i.flag, i.routed) == ("l2", "bridge", False)
    assert cfg("ipvlan", {"parent": "eth0", "ipvlan_mode": "l3s", "ipvlan_flag": "vepa"}).routed


@pytest.mark.parametrize("driver,options,message", [
    ("macvlan", {"macvlan_mode": "l2"},
     "requested macvlan mode 'l2' is not valid, 'bridge' mode is the macvlan driver default"),
    ("ipvlan", {"ipvlan_mode": "bridge"},
     "requested ipvlan mode 'bridge' is not valid, 'l2' mode is the ipvlan driver default"),
    ("ipvlan", {"ipvlan_flag": "l2"},
     "requested ipvlan flag 'l2' is not valid, 'bridge' is the ipvlan driver default"),
    ("macvlan", {"parent": "lo"}, "loopback interface is not a valid macvlan parent link"),
    ("ipvlan", {"parent": "lo"}, "loopback interface is not a valid ipvlan parent link"),
])
def test_dockerd_messages(driver: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        cfg(driver, options)
    assert str(info.value) == message


def test_mode_checked_before_parent_as_dockerd() -> None:
    with pytest.raises(InvalidArgument, match="macvlan mode 'x'"):
        cfg("macvlan", {"parent": "lo", "macvlan_mode": "x"})


def test_other_drivers_options_are_ignored() -> None:
    # dockerd reads only its own keys: a macvlan network ignores ipvlan_mode, and so on
    assert cfg("macvlan", {"parent": "eth0", "ipvlan_mode": "nonsense"}).mode == "bridge"
    assert cfg("ipvlan", {"parent": "eth0", "macvlan_mode": "nonsense", "foo": "x"}).mode == "l2"


def test_all_modes_accepted() -> None:
    for m in ("bridge", "private", "vepa", "passthru"):
        assert cfg("macvlan", {"parent": "eth0", "macvlan_mode": m}).mode == m
    for m in ("l2", "l3", "l3s"):
        for f in ("bridge", "private", "vepa"):
            c = cfg("ipvlan", {"parent": "eth0", "ipvlan_mode": m, "ipvlan_flag": f})
            assert (c.mode, c.flag) == (m, f)


def test_parentless_is_internal_with_dockers_dummy_name() -> None:
    c = cfg(options={})
    assert c.internal and c.parent == "" and c.parent_name == "dm-" + NID[:12]
    assert cfg("ipvlan", {}).parent_name == "di-" + NID[:12]
    assert dummy_name("macvlan", NID) == "dm-3f3f3f3f3f3f" and len(dummy_name("ipvlan", NID)) == 15


def test_skips_gateway_as_moby() -> None:
    assert not skips_gateway("macvlan", {"parent": "eth0"})
    assert skips_gateway("macvlan", {"parent": "eth0"}, internal=True)
    assert skips_gateway("macvlan", {})                     # parentless: internal
    assert not skips_gateway("ipvlan", {"parent": "eth0", "ipvlan_mode": "l2"})
    assert skips_gateway("ipvlan", {"parent": "eth0", "ipvlan_mode": "l3"})
    assert skips_gateway("ipvlan", {"parent": "eth0", "ipvlan_mode": "l3s"})
    with pytest.raises(InvalidArgument):
        skips_gateway("ipvlan", {"ipvlan_mode": "l4"})


def test_config_checks() -> None:
    with pytest.raises(InvalidArgument, match="network id"):
        config_from_options("macvlan", {}, network_id="abc", name="x", subnet="10.0.0.0/24")
    with pytest.raises(InvalidArgument, match="unknown network driver"):
        cfg("bridge")
    with pytest.raises(InvalidArgument, match="gateway 10.9.0.1 is not within"):
        cfg(gateway="10.9.0.1")
    with pytest.raises(InvalidArgument, match="ip-range 10.9.0.0/25 is not within"):
        cfg(ip_range="10.9.0.0/25")
    with pytest.raises(InvalidArgument):
        cfg(subnet="192.168.50.1/24")                          # host bits set
    with pytest.raises(InvalidArgument, match="ip-range fd01::/64 is not within"):
        cfg(subnet6="fd00::/64", ip_range6="fd01::/64")
    with pytest.raises(InvalidArgument, match="invalid parent interface name"):
        cfg(options={"parent": "a-very-long-interface-name"})
    c = cfg(subnet6="fd00::/64", gateway6="fd00::1", ip_range6="fd00::/80")
    assert c.gateway6 == ipaddress.IPv6Address("fd00::1")
    assert c.ip_range6 == ipaddress.IPv6Network("fd00::/80")
    assert cfg(gateway=None).gateway is None


def test_vlan_parent_names() -> None:
    assert parse_vlan_parent("eth0.10") == ("eth0", 10)
    with pytest.raises(InvalidArgument, match="invalid subinterface vlan name eth0, example"):
        parse_vlan_parent("eth0")
    with pytest.raises(InvalidArgument, match="required interface name format is: name.vlan_id, "
                                              "ex. eth0.10 for vlan 10, instead received a.b.c"):
        parse_vlan_parent("a.b.c")
    with pytest.raises(InvalidArgument, match=r"unable to parse a valid vlan id from: 1x \(ex"):
        parse_vlan_parent("eth0.1x")
    assert parse_vlan_parent("eth0.0") == ("eth0", 0)     # the range is checked afterwards


# -- state ---------------------------------------------------------------------------


def _state() -> MacvlanState:
    st = MacvlanState(NID, "macvlan", "dm-" + NID[:12], "bridge", created_parent="dummy")
    st.endpoints["c1"] = EndpointRecord("c1", "e" * 64, "eth0", "/proc/42/ns/net", (4, 4026),
                                        "02:42:c0:a8:32:02", "192.168.50.2", 24,
                                        gateway="192.168.50.1", ip6="fd00::2", prefix6=64,
                                        gateway6="fd00::1")
    st.endpoints["c2"] = EndpointRecord("c2", "f" * 64, "eth1", "/proc/43/ns/net", (4, 4027),
                                        "", "192.168.50.3", 24, routed=True, removing=True)
    return st


def test_state_round_trip_and_atomic_write(tmp_path: Path) -> None:
    d = str(tmp_path / "state")
    assert load_state(d, NID) is None and load_all_states(d) == []
    st = _state()
    save_state(d, st)
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert sorted(os.listdir(d)) == [f"macvlan-{NID}.json"]      # no temp file left
    raw = json.loads(Path(state_path(d, NID)).read_text())
    assert raw["version"] == 1 and raw["created_parent"] == "dummy"
    assert raw["endpoints"]["c1"]["netns_id"] == [4, 4026]
    assert load_state(d, NID) == st
    assert load_all_states(d) == [st]
    (tmp_path / "state" / "bridge-ketch0.json").write_text("{}")  # another driver's: ignored
    assert load_all_states(d) == [st]
    remove_state(d, NID)
    remove_state(d, NID)
    assert load_state(d, NID) is None


def test_state_reads_minimal_records() -> None:
    st = MacvlanState.from_json({"network_id": NID, "driver": "ipvlan", "parent": "eth0",
                                 "endpoints": {"c": {"container_id": "c", "ifname": "eth0",
                                                     "netns_path": "/x", "ip": "10.0.0.2"}}})
    rec = st.endpoints["c"]
    assert (st.created_parent, rec.netns_id, rec.gateway, rec.removing) == ("", (0, 0), "", False)


# -- rtnetlink requests --------------------------------------------------------------


class Recorder:
    """Stands in for Netlink: keeps each request's type, flags and payload."""

    def __init__(self, error: int = 0) -> None:
        self.sent: list[tuple[int, int, bytes]] = []
        self.error = error

    def request(self, msg_type: int, flags: int, payload: bytes, what: str) -> list:
        self.sent.append((msg_type, flags, payload))
        if self.error:
            raise OSError(self.error, f"{what}: {os.strerror(self.error)}")
        return []


def _sent(rec: Recorder) -> tuple[int, dict[int, bytes], dict[int, bytes], dict[int, bytes]]:
    ((msg_type, flags, payload),) = rec.sent
    assert msg_type == 16 and flags == 0x600          # RTM_NEWLINK, CREATE|EXCL
    attrs = parse_attrs(payload, 16)
    info = parse_attrs(attrs[18])
    data = parse_attrs(info[2]) if 2 in info else {}
    return payload[0], attrs, info, data


def test_macvlan_request() -> None:
    rec = Recorder()
    links.create_macvlan(rec, "eth1", parent_index=7, mode="private", netns_fd=9,  # type: ignore[arg-type]
                         mac="02:42:0a:00:00:02", mtu=1400)
    _family, attrs, info, data = _sent(rec)
    assert attrs[3] == b"eth1\0" and attrs[5] == struct.pack("=I", 7)
    assert attrs[28] == struct.pack("=I", 9) and attrs[4] == struct.pack("=I", 1400)
    assert attrs[1] == bytes.fromhex("02420a000002")
    assert info[1] == b"macvlan\0" and data[1] == struct.pack("=I", 1)   # MACVLAN_MODE_PRIVATE
    for mode, value in (("vepa", 2), ("bridge", 4), ("passthru", 8)):
        rec = Recorder()
        links.create_macvlan(rec, "m", parent_index=1, mode=mode)  # type: ignore[arg-type]
        _f, attrs, _i, data = _sent(rec)
        assert data[1] == struct.pack("=I", value) and 28 not in attrs and 1 not in attrs


def test_ipvlan_request() -> None:
    rec = Recorder()
    links.create_ipvlan(rec, "eth0", parent_index=3, mode="l3s", flag="vepa", netns_fd=5)  # type: ignore[arg-type]
    _f, attrs, info, data = _sent(rec)
    assert info[1] == b"ipvlan\0" and attrs[5] == struct.pack("=I", 3)
    assert data[1] == struct.pack("=H", 2) and data[2] == struct.pack("=H", 2)
    assert 1 not in attrs                                   # no MAC: the parent's
    rec = Recorder()
    links.create_ipvlan(rec, "eth0", parent_index=3)  # type: ignore[arg-type]
    _f, _a, _i, data = _sent(rec)
    assert data[1] == struct.pack("=H", 0) and 2 not in data   # l2, bridge (no flag bits)
    with pytest.raises(ValueError):
        links.create_ipvlan(Recorder(), "x", parent_index=1, mode="l4")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        links.create_ipvlan(Recorder(), "x", parent_index=1, flag="open")  # type: ignore[arg-type]


def test_vlan_and_dummy_requests() -> None:
    rec = Recorder()
    links.create_vlan(rec, "eth0.10", parent_index=2, vlan_id=10)  # type: ignore[arg-type]
    _f, attrs, info, data = _sent(rec)
    assert info[1] == b"vlan\0" and attrs[5] == struct.pack("=I", 2)
    assert data[1] == struct.pack("=H", 10) and data[5] == b"\x81\x00"
    with pytest.raises(ValueError, match="between 1-4094"):
        links.create_vlan(Recorder(), "eth0.0", parent_index=2, vlan_id=0)  # type: ignore[arg-type]
    rec = Recorder()
    assert links.create_internal_parent(rec, "dm-x") == "dummy"  # type: ignore[arg-type]
    _f, attrs, info, data = _sent(rec)
    assert info[1] == b"dummy\0" and 5 not in attrs and data == {}


def test_internal_parent_falls_back_to_ifb() -> None:
    rec = Recorder(error=95)                                    # EOPNOTSUPP: no dummy
    with pytest.raises(OSError):
        links.create_internal_parent(rec, "dm-x")  # type: ignore[arg-type]
    kinds = [parse_attrs(parse_attrs(p, 16)[18])[1] for _t, _f, p in rec.sent]
    assert kinds == [b"dummy\0", b"ifb\0"]
    with pytest.raises(OSError):
        links.create_internal_parent(Recorder(error=17), "dm-x")  # type: ignore[arg-type]


def test_link_details_parse() -> None:
    ifinfo = struct.pack("=BxHiII", 0, 1, 12, 1, 0)          # index 12, IFF_UP
    body = (ifinfo + attr_str(3, "eth0") + attr_u32(5, 7) + attr(37, struct.pack("=i", 0))
            + attr(1, bytes.fromhex("02420a000002"))
            + nested(18, attr_str(1, "ipvlan"),
                     nested(2, attr(1, struct.pack("=H", 1)), attr(2, struct.pack("=H", 1)))))
    d = links._parse_details(body)
    assert (d.index, d.name, d.kind, d.parent_index, d.parent_netnsid) == (12, "eth0", "ipvlan",
                                                                           7, 0)
    assert (d.mac, d.up, d.mode, d.flag) == ("02:42:0a:00:00:02", True, "l3", "private")
    body = (struct.pack("=BxHiII", 0, 1, 3, 0, 0) + attr_str(3, "eth0.10") + attr_u32(5, 2)
            + nested(18, attr_str(1, "vlan"), nested(2, attr(1, struct.pack("=H", 10)))))
    d = links._parse_details(body)
    assert (d.kind, d.vlan_id, d.up, d.parent_netnsid) == ("vlan", 10, False, -1)
    d = links._parse_details(struct.pack("=BxHiII", 0, 1, 1, 1, 0) + attr_str(3, "lo"))
    assert (d.kind, d.parent_index, d.mode) == ("", 0, "")
