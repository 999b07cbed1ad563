"""rtnetlink messages for the links macvlan and ipvlan networks need: macvlan and
ipvlan sub-interfaces, dummy and 802.1q VLAN parents, and a detailed look at a
link (its parent, kind and mode), over the project's own ``Netlink`` socket.

A sub-interface is created by the socket of the netns its parent lives in, with
``IFLA_NET_NS_FD`` naming the container's netns and ``IFLA_IFNAME`` its final
name: the kernel looks the parent up in the socket's netns and registers the new
device in the target one, so there is no temporary host name to rename or to
leave behind, and a name taken in the target netns fails the creation (EEXIST)
instead of clobbering anything.

Constants from linux/if_link.h. Like ``Netlink.create_veth``, nothing is created
up: IFF_UP is set afterwards from a socket in the device's own netns.
"""

from __future__ import annotations

import errno as _errno
import struct
from dataclasses import dataclass

from ketch.linux.netlink import (
    IFF_UP,
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_NEWLINK,
    Netlink,
    attr,
    attr_str,
    attr_u32,
    mac_bytes,
    nested,
    parse_attrs,
)

IFLA_LINK = 5
IFLA_LINK_NETNSID = 37

IFLA_MACVLAN_MODE = 1     # u32
IFLA_IPVLAN_MODE = 1      # u16
IFLA_IPVLAN_FLAGS = 2     # u16
IFLA_VLAN_ID = 1          # u16
IFLA_VLAN_PROTOCOL = 5    # be16

ETH_P_8021Q = 0x8100

MACVLAN_MODES: dict[str, int] = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IPVLAN_MODES: dict[str, int] = {"l2": 0, "l3": 1, "l3s": 2}
# "bridge" is the absence of both flag bits
IPVLAN_FLAGS: dict[str, int] = {"bridge": 0, "private": 1, "vepa": 2}

_IFINFOMSG = struct.Struct("=BxHiII")


def _ifinfo(index: int = 0) -> bytes:
    return _IFINFOMSG.pack(0, 0, index, 0, 0)


def _attr_u16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=H", value))


def _new_link(nl: Netlink, name: str, kind: str, data: bytes | None, *, parent_index: int = 0,
              netns_fd: int | None = None, mac: str | None = None, mtu: int | None = None,
              what: str) -> None:
    attrs = attr_str(IFLA_IFNAME, name)
    if parent_index:
        attrs += attr_u32(IFLA_LINK, parent_index)
    if netns_fd is not None:
        attrs += attr_u32(IFLA_NET_NS_FD, netns_fd)
    if mac:
        attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
    if mtu:
        attrs += attr_u32(IFLA_MTU, mtu)
    info = [attr_str(IFLA_INFO_KIND, kind)]
    if data is not None:
        info.append(nested(IFLA_INFO_DATA, data))
    attrs += nested(IFLA_LINKINFO, *info)
    nl.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _ifinfo() + attrs, what)


def create_macvlan(nl: Netlink, name: str, *, parent_index: int, mode: str = "bridge",
                   netns_fd: int | None = None, mac: str | None = None,
                   mtu: int | None = None) -> None:
    """A macvlan port of ``parent_index`` (in ``nl``'s netns), born in the netns behind
    ``netns_fd`` (else ``nl``'s) as ``name``. Passthru ports take the parent's MAC
    whatever ``mac`` says (the kernel's rule)."""
    if mode not in MACVLAN_MODES:
        raise ValueError(f"unknown macvlan mode: {mode}")
    _new_link(nl, name, "macvlan", attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode]),
              parent_index=parent_index, netns_fd=netns_fd, mac=mac, mtu=mtu,
              what=f"create macvlan {name}")


def create_ipvlan(nl: Netlink, name: str, *, parent_index: int, mode: str = "l2",
                  flag: str = "bridge", netns_fd: int | None = None,
                  mtu: int | None = None) -> None:
    """An ipvlan port of ``parent_index``; it shares the parent's MAC (no ``mac``)."""
    if mode not in IPVLAN_MODES:
        raise ValueError(f"unknown ipvlan mode: {mode}")
    if flag not in IPVLAN_FLAGS:
        raise ValueError(f"unknown ipvlan flag: {flag}")
    data = _attr_u16(IFLA_IPVLAN_MODE, IPVLAN_MODES[mode])
    if IPVLAN_FLAGS[flag]:
        data += _attr_u16(IFLA_IPVLAN_FLAGS, IPVLAN_FLAGS[flag])
    _new_link(nl, name, "ipvlan", data, parent_index=parent_index, netns_fd=netns_fd, mtu=mtu,
              what=f"create ipvlan {name}")


def create_dummy(nl: Netlink, name: str, *, netns_fd: int | None = None) -> None:
    """A ``dummy`` device: the parent of a parentless network (and a test's fake NIC)."""
    _new_link(nl, name, "dummy", None, netns_fd=netns_fd, what=f"create dummy {name}")


def create_internal_parent(nl: Netlink, name: str) -> str:
    """A parent that carries nothing off the host, for a parentless network: a
    ``dummy`` as dockerd makes, or, on kernels built without dummy (CONFIG_DUMMY
    unset and no module), an ``ifb``, which is also an Ethernet device that drops
    what it is given. Returns the kind made."""
    try:
        create_dummy(nl, name)
        return "dummy"
    except OSError as exc:
        if exc.errno != _errno.EOPNOTSUPP:
            raise
    _new_link(nl, name, "ifb", None, what=f"create ifb {name}")
    return "ifb"


def create_vlan(nl: Netlink, name: str, *, parent_index: int, vlan_id: int) -> None:
    """An 802.1q sub-interface (``eth0.10``) of ``parent_index``."""
    if not 1 <= vlan_id <= 4094:
        raise ValueError(f"vlan id must be between 1-4094, received: {vlan_id}")
    data = _attr_u16(IFLA_VLAN_ID, vlan_id) + attr(IFLA_VLAN_PROTOCOL,
                                                   struct.pack("!H", ETH_P_8021Q))
    _new_link(nl, name, "vlan", data, parent_index=parent_index, what=f"create vlan {name}")


@dataclass(frozen=True, slots=True)
class LinkDetails:
    """What ``Netlink.link`` does not say: the lower device and the kind's own data."""

    index: int
    name: str
    kind: str              # "macvlan", "ipvlan", "vlan", "dummy", ... ("" if none)
    parent_index: int      # IFLA_LINK: the lower device, 0 if none
    parent_netnsid: int    # -1: the lower device is in this netns (or there is none)
    mac: str
    up: bool
    mode: str = ""         # macvlan/ipvlan mode name
    flag: str = ""         # ipvlan flag name
    vlan_id: int = 0


def _name_of(table: dict[str, int], value: int) -> str:
    for name, v in table.items():
        if v == value:
            return name
    return str(value)


def link_details(nl: Netlink, name: str) -> LinkDetails | None:
    """The link called ``name`` in ``nl``'s netns, or None."""
    body = nl.link_message(name)
    return None if body is None else _parse_details(body)


def _u32(data: bytes | None, default: int = 0) -> int:
    return struct.unpack("=I", data[:4])[0] if data and len(data) >= 4 else default


def _parse_details(body: bytes) -> LinkDetails:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    attrs = parse_attrs(body, _IFINFOMSG.size)
    kind, mode, flag, vlan_id = "", "", "", 0
    if IFLA_LINKINFO in attrs:
        info = parse_attrs(attrs[IFLA_LINKINFO])
        kind = info.get(IFLA_INFO_KIND, b"").split(b"\0", 1)[0].decode()
        data = parse_attrs(info[IFLA_INFO_DATA]) if IFLA_INFO_DATA in info else {}
        if kind == "macvlan" and IFLA_MACVLAN_MODE in data:
            mode = _name_of(MACVLAN_MODES, _u32(data[IFLA_MACVLAN_MODE]))
        elif kind == "ipvlan":
            if IFLA_IPVLAN_MODE in data:
                mode = _name_of(IPVLAN_MODES, struct.unpack("=H", data[IFLA_IPVLAN_MODE][:2])[0])
            raw = data.get(IFLA_IPVLAN_FLAGS)
            flag = _name_of(IPVLAN_FLAGS, struct.unpack("=H", raw[:2])[0] if raw else 0)
        elif kind == "vlan" and IFLA_VLAN_ID in data:
            vlan_id = struct.unpack("=H", data[IFLA_VLAN_ID][:2])[0]
    netnsid = -1
    if IFLA_LINK_NETNSID in attrs:
        netnsid = struct.unpack("=i", attrs[IFLA_LINK_NETNSID][:4])[0]
    return LinkDetails(
        index=index,
        name=attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace"),
        kind=kind,
        parent_index=_u32(attrs.get(IFLA_LINK)),
        parent_netnsid=netnsid,
        mac=":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b"")),
        up=bool(flags & IFF_UP),
        mode=mode, flag=flag, vlan_id=vlan_id)
