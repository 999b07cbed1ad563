"""A small rtnetlink client: links, addresses and routes, in any network namespace.

Why not pyroute2 (named in DESIGN.md): 0.9 runs an asyncio loop of its own inside
its synchronous API (it cannot be called from ketchd's loop thread) and forks a
process to open a socket in another netns; it also costs ~200 ms to import.
The engine needs a handful of messages per container, so they are spelled here
(linux/rtnetlink.h, linux/if_link.h, linux/veth.h) and sent over one
``AF_NETLINK`` socket, a few microseconds each.

A socket's netns is fixed when it is created, so ``Netlink(netns_path=...)``
enters the namespace on the calling thread only (setns affects one thread),
creates the socket and comes back before returning. Errors are ``OSError`` with
the kernel's errno and the operation in the message.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from ketch.linux.syscalls import CLONE_NEWNET, libc

# Message types (linux/rtnetlink.h).
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

NLMSG_ERROR = 2
NLMSG_DONE = 3

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

IFF_UP = 0x1
NLA_F_NESTED = 0x8000

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_PROTINFO = 12
IFLA_NET_NS_FD = 28
IFLA_BRPORT_MODE = 4      # hairpin (linux/if_link.h, inside IFLA_PROTINFO)
AF_BRIDGE = 7
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
IFA_F_NODAD = 0x02
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLA = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _NLA.size + len(data)
    return _NLA.pack(length, kind) + data + b"\0" * (_align(length) - length)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attributes of one message (the last one wins for repeated kinds)."""
    out: dict[int, bytes] = {}
    while offset + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size:
            break
        out[kind & ~NLA_F_NESTED] = data[offset + _NLA.size: offset + length]
        offset += _align(length)
    return out


def _cstr(data: bytes | None) -> str:
    return "" if data is None else data.split(b"\0", 1)[0].decode(errors="replace")


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    kind: str          # "bridge", "veth", ... ("" for devices without linkinfo)
    master: int        # ifindex of the bridge it is enslaved to, 0 if none
    up: bool
    mac: str


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True, slots=True)
class Route:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    oif: int
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    table: int


def _enter_netns_socket(netns_path: str) -> socket.socket:
    """A NETLINK_ROUTE socket that lives in ``netns_path``; only this thread moves, briefly."""
    lib = libc()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if lib.setns(target, CLONE_NEWNET) != 0:
                import ctypes
                err = ctypes.get_errno()
                raise OSError(err, f"setns {netns_path}: {os.strerror(err)}", netns_path)
        finally:
            os.close(target)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
        finally:
            if lib.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - would be a kernel bug
                import ctypes
                err = ctypes.get_errno()
                raise OSError(err, "setns back to the daemon's netns failed")
    finally:
        os.close(own)


class Netlink:
    """One rtnetlink socket; not thread-safe (one request at a time)."""

    def __init__(self, netns_path: str | None = None) -> None:
        if netns_path is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                      socket.NETLINK_ROUTE)
        else:
            self.sock = _enter_netns_socket(netns_path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------

    def request(self, msg_type: int, flags: int, payload: bytes,
                what: str) -> list[tuple[int, bytes]]:
        """Send one request; return the replies' (type, body) until ACK or DONE.

        A negative errno in NLMSG_ERROR becomes ``OSError(errno, "<what>: <strerror>")``.
        """
        self.seq += 1
        seq = self.seq
        flags |= NLM_F_REQUEST
        # NLM_F_DUMP's bits are reused by NLM_F_EXCL/REPLACE on NEW requests: only
        # GET requests (type % 4 == 2) dump (ended by DONE); everything else, single
        # GETs included, asks for an ACK so the reply always has an end.
        if msg_type % 4 != 2 or flags & NLM_F_DUMP != NLM_F_DUMP:
            flags |= NLM_F_ACK
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload
        self.sock.send(msg)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _mflags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                body = data[offset + _NLMSGHDR.size: offset + length]
                offset += _align(length)
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", body)
                    if code:
                        raise OSError(-code, f"{what}: {os.strerror(-code)}")
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, body))

    # -- links -----------------------------------------------------------------------

    def links(self) -> list[Link]:
        replies = self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(0, 0, 0, 0, 0),
                               "list links")
        return [_parse_link(body) for mtype, body in replies if mtype == RTM_NEWLINK]

    def link(self, name: str) -> Link | None:
        body = self.link_message(name)
        return None if body is None else _parse_link(body)

    def link_message(self, name: str) -> bytes | None:
        """The kernel's RTM_NEWLINK body for the link called ``name``, or None."""
        try:
            replies = self.request(RTM_GETLINK, 0,
                                   _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name),
                                   f"get link {name}")
        except OSError as exc:
            if exc.errno in (_errno.ENODEV, _errno.ENOENT):
                return None
            raise
        return next((body for mtype, body in replies if mtype == RTM_NEWLINK), None)

    def index(self, name: str) -> int:
        found = self.link(name)
        if found is None:
            raise OSError(_errno.ENODEV, f"link {name}: no such device")
        return found.index

    def create_bridge(self, name: str, *, mtu: int | None = None) -> None:
        attrs = attr_str(IFLA_IFNAME, name) + nested(IFLA_LINKINFO,
                                                     attr_str(IFLA_INFO_KIND, "bridge"))
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs, f"create bridge {name}")

    def create_veth(self, name: str, peer: str, *, master: int, peer_netns_fd: int,
                    peer_mac: str | None = None, mtu: int | None = None) -> None:
        """A veth pair, both ends down: ``name`` enslaved to ``master`` here, ``peer`` born
        in the netns behind ``peer_netns_fd`` (no rename or move afterwards).

        IFF_UP cannot be asked for at creation (6.x answers ENOTCONN): the caller sets
        each end up afterwards, from the socket of its own netns."""
        peer_attrs = attr_str(IFLA_IFNAME, peer) + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        if peer_mac:
            peer_attrs += attr(IFLA_ADDRESS, mac_bytes(peer_mac))
        if mtu:
            peer_attrs += attr_u32(IFLA_MTU, mtu)
        peer_msg = _IFINFOMSG.pack(0, 0, 0, 0, 0) + peer_attrs
        info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                      nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)))
        attrs = attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_MASTER, master) + info
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs, f"create veth {name}")

    def set_up(self, index: int, up: bool = True) -> None:
        self.request(RTM_NEWLINK, 0,
                     _IFINFOMSG.pack(0, 0, index, IFF_UP if up else 0, IFF_UP),
                     f"set link {index} {'up' if up else 'down'}")

    def delete_link(self, name: str) -> bool:
        """Delete by name; False if it was not there (idempotent cleanup)."""
        try:
            self.request(RTM_DELLINK, 0,
                         _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name),
                         f"delete link {name}")
        except OSError as exc:
            if exc.errno in (_errno.ENODEV, _errno.ENOENT):
                return False
            raise
        return True

    def set_hairpin(self, index: int, on: bool = True) -> None:
        """Let a bridge port send frames back out the port they came in by (``bridge
        link set dev X hairpin on``): with br_netfilter loaded, a container reaching its
        own published port through a host address is DNATed and bridged straight back
        to itself; dockerd sets it too when it runs without the userland proxy."""
        protinfo = nested(IFLA_PROTINFO, attr(IFLA_BRPORT_MODE, bytes([1 if on else 0])))
        self.request(RTM_SETLINK, 0, _IFINFOMSG.pack(AF_BRIDGE, 0, index, 0, 0) + protinfo,
                     f"set hairpin on link {index}")

    # -- addresses -------------------------------------------------------------------

    def add_address(self, index: int,
                    iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface, *,
                    nodad: bool = False) -> None:
        """``nodad``: an IPv6 address usable at once, without the ~1 s of duplicate
        address detection (the container's program starts right after)."""
        ip = iface.ip.packed
        family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        flags = IFA_F_NODAD if nodad and iface.version == 6 else 0
        payload = (_IFADDRMSG.pack(family, iface.network.prefixlen, flags,
                                   RT_SCOPE_UNIVERSE, index)
                   + attr(IFA_LOCAL if iface.version == 4 else IFA_ADDRESS, ip))
        if iface.version == 4:
            payload += attr(IFA_ADDRESS, ip)
            if iface.network.prefixlen < 31:
                payload += attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, payload, f"add address {iface}")

    def delete_address(self, index: int,
                       iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
        """False if the address was not there."""
        family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        payload = (_IFADDRMSG.pack(family, iface.network.prefixlen, 0, 0, index)
                   + attr(IFA_LOCAL if iface.version == 4 else IFA_ADDRESS, iface.ip.packed))
        try:
            self.request(RTM_DELADDR, 0, payload, f"delete address {iface}")
        except OSError as exc:
            if exc.errno in (_errno.EADDRNOTAVAIL, _errno.ENODEV, _errno.ENOENT):
                return False
            raise
        return True

    def addresses(self, family: int = socket.AF_INET) -> list[Address]:
        """The addresses of one family (AF_INET or AF_INET6) on every link."""
        replies = self.request(RTM_GETADDR, NLM_F_DUMP,
                               _IFADDRMSG.pack(family, 0, 0, 0, 0), "list addresses")
        size = 4 if family == socket.AF_INET else 16
        out = []
        for mtype, body in replies:
            if mtype != RTM_NEWADDR:
                continue
            fam, prefix, _f, _scope, index = _IFADDRMSG.unpack_from(body)
            if fam != family:
                continue
            attrs = parse_attrs(body, _IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is None or len(raw) != size:
                continue
            ip = ipaddress.ip_address(raw)
            out.append(Address(index, ipaddress.ip_interface(f"{ip}/{prefix}")))
        return out

    # -- routes ----------------------------------------------------------------------

    def add_default_route(self, gateway: ipaddress.IPv4Address | ipaddress.IPv6Address,
                          oif: int) -> None:
        family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
        payload = (_RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                               RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
                   + attr(RTA_GATEWAY, gateway.packed) + attr_u32(RTA_OIF, oif))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, payload,
                     f"add default route via {gateway}")

    def add_route(self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, oif: int) -> None:
        """A device route (no gateway): ``ip route add DST dev OIF``; a /0 is the
        default route of an ipvlan l3 endpoint."""
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        payload = (_RTMSG.pack(family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                               RT_SCOPE_LINK, RTN_UNICAST, 0)
                   + attr_u32(RTA_OIF, oif))
        if dst.prefixlen:
            payload += attr(RTA_DST, dst.network_address.packed)
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, payload, f"add route {dst}")

    def delete_default_route(self, version: int = 4) -> bool:
        """False if there was none."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        payload = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_NOWHERE, 0, 0)
        try:
            self.request(RTM_DELROUTE, 0, payload, "delete default route")
        except OSError as exc:
            if exc.errno in (_errno.ESRCH, _errno.ENOENT):
                return False
            raise
        return True

    def routes(self, family: int = socket.AF_INET) -> list[Route]:
        """The routes of one family, of every table (local and broadcast ones included)."""
        replies = self.request(RTM_GETROUTE, NLM_F_DUMP,
                               _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                               "list routes")
        size = 4 if family == socket.AF_INET else 16
        out = []
        for mtype, body in replies:
            if mtype != RTM_NEWROUTE:
                continue
            fam, dst_len, _s, _tos, table, _proto, _scope, _rtype, _fl = _RTMSG.unpack_from(body)
            if fam != family:
                continue
            attrs = parse_attrs(body, _RTMSG.size)
            if RTA_TABLE in attrs:
                (table,) = struct.unpack("=I", attrs[RTA_TABLE])
            dst = ipaddress.ip_address(attrs.get(RTA_DST, bytes(size)))
            gw = attrs.get(RTA_GATEWAY)
            oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
            out.append(Route(ipaddress.ip_network(f"{dst}/{dst_len}", strict=False), oif,
                             ipaddress.ip_address(gw) if gw and len(gw) == size else None,
                             table))
        return out


def _parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    attrs = parse_attrs(body, _IFINFOMSG.size)
    kind = ""
    if IFLA_LINKINFO in attrs:
        kind = _cstr(parse_attrs(attrs[IFLA_LINKINFO]).get(IFLA_INFO_KIND))
    master = struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0
    mac = ":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b""))
    return Link(index, _cstr(attrs.get(IFLA_IFNAME)), kind, master, bool(flags & IFF_UP), mac)

