"""The ``macvlan`` and ``ipvlan`` network drivers: containers get a sub-interface of
a host interface (the network's ``parent``), with addresses of the parent's
segment, and no NAT, no port publishing, no host-side interface.

The engine's order of calls (as for bridge.py)::

    removed = cleanup_leftovers(state_dir, keep_container_ids)        # daemon start
    cfg = config_from_options("macvlan", {"parent": "eth0"}, network_id=..., ...)
    net = MacvlanNetwork(state_dir, cfg); net.setup()                 # network create / daemon start
    ep = net.attach(EndpointRequest(cid, f"/proc/{pid}/ns/net", ifname="eth1"))
    net.detach(cid)                                                   # container gone
    net.teardown()                                                    # network rm

Docker's rules (libnetwork/drivers/macvlan and ipvlan, moby 28), kept here:
- ``-o parent=`` names a host interface. ``eth0.10`` that does not exist is
  created as an 802.1q VLAN of ``eth0`` and deleted with the network. No parent:
  a parent that leads nowhere (``dm-<id[:12]>`` for macvlan, ``di-<id[:12]>``
  for ipvlan) is created, and the network is internal (no default route).
- macvlan modes bridge (default), private, vepa, passthru; several macvlan
  networks may share a parent unless one of them is passthru. ipvlan modes l2
  (default), l3, l3s and flags bridge (default), private, vepa; an ipvlan parent
  serves one ipvlan network.
- MAC: macvlan takes ``--mac-address`` or one derived from the IPv4 address
  (dockerd 20.10's rule; dockerd 28 picks a random one); ipvlan shares the
  parent's MAC and refuses ``--mac-address``.
- Default route: via the network's gateway; ipvlan l3/l3s: a device route
  (``default dev eth0``), as those modes route in the parent's netns and have
  no gateway address. Internal networks give no default route.
- ``-p``: dockerd logs "macvlan driver does not support port mappings" and
  carries on; so does ketch (the endpoint publishes nothing).

Kernel objects and who removes them:
- the parent, if ketch created it (dummy/ifb or VLAN): recorded in the state file
  before it exists, removed by teardown only if it is still of the kind ketch
  made. Like dockerd, the network that created a VLAN parent deletes it even if
  another macvlan network was given the same parent meanwhile;
- per container: the sub-interface, born in the container's netns with its final
  name; removed by detach, or by the kernel when the netns dies. A record keeps
  the netns's inode so that a reused pid's netns is never touched.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ketch.errors import (
    Conflict,
    InvalidArgument,
    MultiError,
    NotFound,
    NotSupported,
    System,
)
from ketch.linux import netlink_links as links
from ketch.linux.netlink import Netlink
from ketch.network import jsonfiles
from ketch.network.endpoint import Endpoint, EndpointRequest
from ketch.network.ipam import Allocator, IPAddress, mac_from_ip, validate_mac

log = logging.getLogger(__name__)

IFNAMSIZ = 15
DRIVERS = ("macvlan", "ipvlan")
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = ("l2", "l3", "l3s")
IPVLAN_FLAGS = ("bridge", "private", "vepa")
STATE_VERSION = 1

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address
IPv4Network = ipaddress.IPv4Network
IPv6Network = ipaddress.IPv6Network

_NETWORK_ID = re.compile(r"[0-9a-f]{64}")


def dummy_name(driver: str, network_id: str) -> str:
    """The parent dockerd makes for a network without ``-o parent``."""
    return ("di-" if driver == "ipvlan" else "dm-") + network_id[:12]


# -- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class MacvlanConfig:
    """One macvlan/ipvlan network as the network manager decided it (IPAM done)."""

    network_id: str                          # 64 hex
    name: str
    subnet: IPv4Network
    gateway: IPv4Address | None = None       # None: no gateway (ipvlan l3, internal)
    ip_range: IPv4Network | None = None
    subnet6: IPv6Network | None = None
    gateway6: IPv6Address | None = None
    ip_range6: IPv6Network | None = None
    driver: str = "macvlan"                  # "macvlan" | "ipvlan"
    parent: str = ""                         # "" = ketch's own dummy parent
    mode: str = ""                           # "" = the driver's default
    flag: str = ""                           # ipvlan only; "" = bridge
    internal: bool = False
    mtu: int | None = None

    def __post_init__(self) -> None:
        if not _NETWORK_ID.fullmatch(self.network_id):
            raise InvalidArgument(f"invalid network id {self.network_id!r}: 64 hex digits")
        if self.driver not in DRIVERS:
            raise InvalidArgument(f"unknown network driver {self.driver!r}")
        _validate_mode(self.driver, self.mode, self.flag)
        if not self.mode:
            object.__setattr__(self, "mode", "bridge" if self.driver == "macvlan" else "l2")
        if self.driver == "ipvlan" and not self.flag:
            object.__setattr__(self, "flag", "bridge")
        if self.parent == "lo":
            raise InvalidArgument(f"loopback interface is not a valid {self.driver} parent link")
        if len(self.parent) > IFNAMSIZ or "/" in self.parent or " " in self.parent:
            raise InvalidArgument(f"invalid parent interface name {self.parent!r}")
        if not self.parent and not self.internal:
            # moby 28: with no parent interface, the network is internal
            object.__setattr__(self, "internal", True)
        _check_in(self.gateway, self.subnet, "gateway")
        _check_in(self.gateway6, self.subnet6, "gateway")
        if self.ip_range is not None and not self.ip_range.subnet_of(self.subnet):
            raise InvalidArgument(f"ip-range {self.ip_range} is not within subnet {self.subnet}")
        if self.ip_range6 is not None and (self.subnet6 is None
                                           or not self.ip_range6.subnet_of(self.subnet6)):
            raise InvalidArgument(f"ip-range {self.ip_range6} is not within subnet "
                                  f"{self.subnet6}")

    @property
    def parent_name(self) -> str:
        return self.parent or dummy_name(self.driver, self.network_id)

    @property
    def routed(self) -> bool:
        """ipvlan l3/l3s: the default route is a device route, no gateway."""
        return self.driver == "ipvlan" and self.mode in ("l3", "l3s")


def _check_in(ip: IPAddress | None, net: IPv4Network | IPv6Network | None, what: str) -> None:
    if ip is not None and (net is None or ip not in net):
        raise InvalidArgument(f"{what} {ip} is not within subnet {net}")


def _validate_mode(driver: str, mode: str, flag: str) -> None:
    """dockerd's parseNetworkOptions messages, word for word."""
    if driver == "macvlan":
        if mode and mode not in MACVLAN_MODES:
            raise InvalidArgument(f"requested macvlan mode '{mode}' is not valid, 'bridge' "
                                  "mode is the macvlan driver default")
        if flag:
            raise InvalidArgument("ipvlan_flag is an ipvlan option")
        return
    if mode and mode not in IPVLAN_MODES:
        raise InvalidArgument(f"requested ipvlan mode '{mode}' is not valid, 'l2' mode is "
                              "the ipvlan driver default")
    if flag and flag not in IPVLAN_FLAGS:
        raise InvalidArgument(f"requested ipvlan flag '{flag}' is not valid, 'bridge' is the "
                              "ipvlan driver default")


def _options(driver: str, options: Mapping[str, str]) -> tuple[str, str, str]:
    """(parent, mode, flag) from ``-o`` options; other keys are ignored, as dockerd does."""
    if driver not in DRIVERS:
        raise InvalidArgument(f"unknown network driver {driver!r}")
    parent = str(options.get("parent", ""))
    if driver == "macvlan":
        mode, flag = str(options.get("macvlan_mode", "")), ""
    else:
        mode, flag = str(options.get("ipvlan_mode", "")), str(options.get("ipvlan_flag", ""))
    _validate_mode(driver, mode, flag)
    if parent == "lo":
        raise InvalidArgument(f"loopback interface is not a valid {driver} parent link")
    return parent, mode, flag


def skips_gateway(driver: str, options: Mapping[str, str], internal: bool = False) -> bool:
    """Whether IPAM must not reserve a gateway address for the network (moby's
    GetSkipGwAlloc): ipvlan l3/l3s route without one; internal networks, and
    parentless ones (internal by rule), have no use for one."""
    parent, mode, _flag = _options(driver, options)
    if driver == "ipvlan" and mode in ("l3", "l3s"):
        return True
    return internal or not parent


def config_from_options(driver: str, options: Mapping[str, str], *, network_id: str,
                        name: str, subnet: IPv4Network | str,
                        gateway: IPv4Address | str | None = None,
                        ip_range: IPv4Network | str | None = None,
                        subnet6: IPv6Network | str | None = None,
                        gateway6: IPv6Address | str | None = None,
                        ip_range6: IPv6Network | str | None = None,
                        internal: bool = False) -> MacvlanConfig:
    """``docker network create -d macvlan|ipvlan -o parent=.. -o macvlan_mode=..``:
    the driver options checked with dockerd's messages, and the IPAM the caller
    chose, into a config."""
    parent, mode, flag = _options(driver, options)
    try:
        return MacvlanConfig(
            network_id=network_id, name=name, driver=driver, parent=parent, mode=mode,
            flag=flag, internal=internal,
            subnet=IPv4Network(subnet),
            gateway=IPv4Address(gateway) if gateway else None,
            ip_range=IPv4Network(ip_range) if ip_range else None,
            subnet6=IPv6Network(subnet6) if subnet6 else None,
            gateway6=IPv6Address(gateway6) if gateway6 else None,
            ip_range6=IPv6Network(ip_range6) if ip_range6 else None)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def parse_vlan_parent(name: str) -> tuple[str, int]:
    """``eth0.10`` -> ("eth0", 10), with dockerd's messages (the base's existence is
    checked by the caller)."""
    if "." not in name:
        raise InvalidArgument(f"invalid subinterface vlan name {name}, example formatting is "
                              "eth0.10")
    parts = name.split(".")
    if len(parts) != 2:
        raise InvalidArgument("required interface name format is: name.vlan_id, ex. eth0.10 "
                              f"for vlan 10, instead received {name}")
    base, vid = parts
    # Go's strconv.Atoi: an optional sign, then decimal digits
    if not re.fullmatch(r"[+-]?[0-9]+", vid):
        raise InvalidArgument(f"unable to parse a valid vlan id from: {vid} (ex. eth0.10 for "
                              "vlan 10)")
    return base, int(vid)


# -- persisted state -----------------------------------------------------------------


@dataclass
class EndpointRecord:
    container_id: str
    endpoint_id: str
    ifname: str
    netns_path: str
    netns_id: tuple[int, int]        # (st_dev, st_ino) of the netns at attach
    mac: str
    ip: str
    prefix: int
    gateway: str = ""                # "" : no default route through it
    ip6: str = ""
    prefix6: int = 0
    gateway6: str = ""
    routed: bool = False             # default route(s) by device (ipvlan l3)
    removing: bool = False           # detach began; the addresses stay taken until done

    def to_json(self) -> dict[str, object]:
        return {"container_id": self.container_id, "endpoint_id": self.endpoint_id,
                "ifname": self.ifname, "netns_path": self.netns_path,
                "netns_id": list(self.netns_id), "mac": self.mac, "ip": self.ip,
                "prefix": self.prefix, "gateway": self.gateway, "ip6": self.ip6,
                "prefix6": self.prefix6, "gateway6": self.gateway6, "routed": self.routed,
                "removing": self.removing}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EndpointRecord:
        dev, ino = d.get("netns_id", (0, 0))
        return cls(d["container_id"], d.get("endpoint_id", ""), d["ifname"], d["netns_path"],
                   (int(dev), int(ino)), d.get("mac", ""), d["ip"], int(d.get("prefix", 0)),
                   d.get("gateway", ""), d.get("ip6", ""), int(d.get("prefix6", 0)),
                   d.get("gateway6", ""), bool(d.get("routed", False)),
                   bool(d.get("removing", False)))


@dataclass
class MacvlanState:
    network_id: str
    driver: str
    parent: str
    mode: str = ""
    # what ketch made the parent as: "" (it was there), "dummy", "ifb" or "vlan"
    created_parent: str = ""
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"version": STATE_VERSION, "network_id": self.network_id, "driver": self.driver,
                "parent": self.parent, "mode": self.mode, "created_parent": self.created_parent,
                "endpoints": {k: e.to_json() for k, e in self.endpoints.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MacvlanState:
        return cls(d["network_id"], d["driver"], d["parent"], d.get("mode", ""),
                   d.get("created_parent", ""),
                   {k: EndpointRecord.from_json(e) for k, e in d.get("endpoints", {}).items()})


PREFIX = "macvlan"


def state_path(state_dir: str, network_id: str) -> str:
    return jsonfiles.path(state_dir, PREFIX, network_id)


def load_state(state_dir: str, network_id: str) -> MacvlanState | None:
    doc = jsonfiles.load(state_dir, PREFIX, network_id)
    return None if doc is None else MacvlanState.from_json(doc)


def load_all_states(state_dir: str) -> list[MacvlanState]:
    return [MacvlanState.from_json(d) for d in jsonfiles.load_all(state_dir, PREFIX)]


def save_state(state_dir: str, st: MacvlanState) -> None:
    """Whole, then renamed (``jsonfiles``): a crash leaves the old or the new version."""
    jsonfiles.save(state_dir, PREFIX, st.network_id, st.to_json())


def remove_state(state_dir: str, network_id: str) -> None:
    jsonfiles.remove(state_dir, PREFIX, network_id)


# -- kernel helpers ------------------------------------------------------------------


def _go_error(exc: OSError) -> str:
    """The kernel's error as Go's syscall.Errno prints it (what dockerd's messages carry)."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]


def _open_recorded_netns(rec: EndpointRecord) -> int | None:
    """An fd of the endpoint's netns if the path still leads to the netns it was made
    in (not the netns of a process that got the pid since), else None. Working
    through the fd, not the path, closes the window for a pid reused meanwhile."""
    try:
        fd = os.open(rec.netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != rec.netns_id:
        os.close(fd)
        return None
    return fd


def _delete_in_netns(rec: EndpointRecord, fd: int | None = None) -> bool:
    """Delete the endpoint's interface if its netns is still the one it was made in;
    False when there was nothing to delete (netns gone: the kernel deleted it)."""
    own = fd is None
    if fd is None:
        fd = _open_recorded_netns(rec)
        if fd is None:
            return False
    try:
        with Netlink(f"/proc/self/fd/{fd}") as inner:
            found = links.link_details(inner, rec.ifname)
            if found is None or found.kind not in DRIVERS:
                return False              # not ours (or renamed away): leave it
            return inner.delete_link(rec.ifname)
    finally:
        if own:
            os.close(fd)


def _delete_parent(nl: Netlink, name: str, kind: str) -> bool:
    """Delete a parent ketch created, if it is still what ketch made."""
    found = links.link_details(nl, name)
    if found is None:
        return False
    if kind == "vlan":
        if found.kind != "vlan" or not found.parent_index:
            log.warning("not deleting %s: no longer a VLAN sub-interface", name)
            return False
    # "dummy" or "ifb" alike: a crash may have come between recording "dummy" and
    # making an ifb on a kernel without dummy
    elif found.kind not in ("dummy", "ifb") or found.parent_index:
        log.warning("not deleting %s: no longer a %s device", name, kind)
        return False
    return nl.delete_link(name)


# -- the driver ----------------------------------------------------------------------


class MacvlanNetwork:
    """One macvlan or ipvlan network; thread-safe (attach/detach from any thread)."""

    def __init__(self, state_dir: str, config: MacvlanConfig) -> None:
        self.state_dir = state_dir
        self.config = config
        self._lock = threading.RLock()
        self._nl: Netlink | None = None
        self._state: MacvlanState | None = None
        self._ipam: Allocator | None = None
        self._ipam6: Allocator | None = None

    @property
    def nl(self) -> Netlink:
        if self._nl is None:
            self._nl = Netlink()
        return self._nl

    @property
    def st(self) -> MacvlanState:
        if self._state is None:
            raise InvalidArgument(f"{self.config.driver} network {self.config.name} is not set up")
        return self._state

    def _save(self) -> None:
        save_state(self.state_dir, self.st)

    # -- network lifecycle -------------------------------------------------------------

    def setup(self) -> None:
        """Make the parent exist (a VLAN or ketch's dummy, when so configured); idempotent,
        keeps the endpoints recorded by a previous daemon."""
        with self._lock:
            cfg = self.config
            parent = cfg.parent_name
            st = load_state(self.state_dir, cfg.network_id)
            if st is not None and (st.driver != cfg.driver or st.parent != parent):
                if st.endpoints:
                    raise Conflict(f"network {cfg.name} has endpoints on {st.driver} parent "
                                   f"{st.parent}; cannot move them to {parent}")
                if st.created_parent:
                    _delete_parent(self.nl, st.parent, st.created_parent)
                st = None
            fresh = st is None
            if st is None:
                st = MacvlanState(cfg.network_id, cfg.driver, parent, cfg.mode)
            self._check_parent_users(parent)
            self._state = st
            link = self.nl.link(parent)
            if link is None:
                self._create_parent(st, parent, fresh)
            for rec in [r for r in st.endpoints.values() if r.removing]:
                _delete_in_netns(rec)    # a previous daemon died while deleting it
                del st.endpoints[rec.container_id]
            self._ipam = Allocator(cfg.subnet, cfg.gateway,
                                   (IPv4Address(e.ip) for e in st.endpoints.values()),
                                   ip_range=cfg.ip_range, network_name=cfg.name)
            self._ipam6 = None
            if cfg.subnet6 is not None:
                self._ipam6 = Allocator(cfg.subnet6, cfg.gateway6,
                                        (IPv6Address(e.ip6) for e in st.endpoints.values()
                                         if e.ip6),
                                        ip_range=cfg.ip_range6, network_name=cfg.name)
            self._save()

    def _check_parent_users(self, parent: str) -> None:
        """dockerd's rules for networks sharing a parent (among the recorded ones)."""
        cfg = self.config
        for other in load_all_states(self.state_dir):
            if other.network_id == cfg.network_id or other.parent != parent:
                continue
            if other.driver != cfg.driver:
                continue                   # the kernel refuses the mix at attach, as for dockerd
            if cfg.driver == "ipvlan":
                raise Conflict(f"network {dummy_name('ipvlan', other.network_id)} is already "
                               f"using parent interface {parent}")
            if cfg.mode == "passthru":
                raise Conflict(f"cannot use mode passthru, macvlan network {other.network_id} "
                               f"is already using parent interface {parent}")
            if other.mode == "passthru":
                raise Conflict(f"macvlan network {other.network_id} is already using parent "
                               f"interface {parent} in mode passthru")

    def _create_parent(self, st: MacvlanState, parent: str, fresh: bool) -> None:
        """The parent is missing: ketch's dummy, or a VLAN sub-interface of an existing
        interface; recorded before it is made, forgotten again if making it fails."""
        cfg = self.config
        nl = self.nl
        base_index, vid = 0, 0
        if parent == dummy_name(cfg.driver, cfg.network_id):
            kind = "dummy"
        else:
            base, vid = parse_vlan_parent(parent)
            base_link = nl.link(base)
            if base_link is None:
                raise NotFound(f"-o parent interface was not found on the host: {base}")
            if not 1 <= vid <= 4094:
                raise InvalidArgument(f"vlan id must be between 1-4094, received: {vid}")
            base_index, kind = base_link.index, "vlan"
        st.created_parent = kind
        self._save()                      # recorded before it exists
        try:
            if kind == "dummy":
                st.created_parent = links.create_internal_parent(nl, parent)
                self._save()
            else:
                try:
                    links.create_vlan(nl, parent, parent_index=base_index, vlan_id=vid)
                except OSError as exc:
                    err = NotSupported if exc.errno == _errno.EOPNOTSUPP else System
                    raise err(f"failed to create {parent} vlan link: {_go_error(exc)}") from None
            nl.set_up(nl.index(parent))
        except BaseException:
            try:
                nl.delete_link(parent)
            finally:
                st.created_parent = ""
                if fresh and not st.endpoints:
                    remove_state(self.state_dir, cfg.network_id)
                    self._state = None
                else:
                    self._save()
            raise

    def teardown(self) -> None:
        """Remove every endpoint and the parent ketch created; forget the state."""
        with self._lock:
            if self._state is None:
                self._state = load_state(self.state_dir, self.config.network_id)
                if self._state is None:
                    return
            st = self._state
            errors: list[BaseException] = []
            for cid in list(st.endpoints):
                try:
                    self.detach(cid)
                except Exception as exc:  # noqa: BLE001 - remove the rest anyway
                    errors.append(exc)
            if st.created_parent and not errors:
                try:
                    # as dockerd: even if another macvlan network shares it
                    _delete_parent(self.nl, st.parent, st.created_parent)
                    st.created_parent = ""
                except OSError as exc:
                    errors.append(exc)
            if errors:
                self._save()
                self.close()
                raise MultiError(errors)
            remove_state(self.state_dir, st.network_id)
            self.close()

    def close(self) -> None:
        """Drop the socket; kernel objects stay (daemon shutdown)."""
        with self._lock:
            if self._nl is not None:
                self._nl.close()
                self._nl = None
            self._state = None

    # -- endpoints -----------------------------------------------------------------------

    def endpoint(self, container_id: str) -> Endpoint | None:
        with self._lock:
            rec = self.st.endpoints.get(container_id)
            return None if rec is None or rec.removing else _endpoint(rec)

    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return [_endpoint(r) for r in self.st.endpoints.values() if not r.removing]

    def attach(self, req: EndpointRequest) -> Endpoint:
        """Give the container its sub-interface; on any failure nothing is left behind."""
        cfg = self.config
        with self._lock:
            st = self.st
            assert self._ipam is not None
            if req.container_id in st.endpoints:
                raise Conflict(f"endpoint with name {req.container_id} already exists in "
                               f"network {cfg.name}")
            if cfg.driver == "ipvlan" and req.mac:
                raise InvalidArgument("ipvlan interfaces do not support custom mac address "
                                      "assignment")
            if req.ip6 and self._ipam6 is None:
                raise InvalidArgument(f"no configured subnet or ip-range contain the IP "
                                      f"address {req.ip6}")
            if req.ports:
                log.warning("%s driver does not support port mappings", cfg.driver)
            mac = validate_mac(req.mac) if req.mac else ""
            ip = _parse_ip(req.ip, 4)
            ip6 = _parse_ip(req.ip6, 6)
            addr = self._ipam.allocate(ip)
            addr6: IPAddress | None = None
            rec: EndpointRecord | None = None
            created = False
            fd: int | None = None
            try:
                if self._ipam6 is not None:
                    addr6 = self._ipam6.allocate(ip6)
                assert isinstance(addr, IPv4Address)
                routes = req.default_route and not cfg.internal
                rec = EndpointRecord(
                    container_id=req.container_id, endpoint_id=secrets.token_hex(32),
                    ifname=req.ifname, netns_path=req.netns_path, netns_id=(0, 0),
                    mac=mac or (mac_from_ip(addr) if cfg.driver == "macvlan" else ""),
                    ip=str(addr), prefix=cfg.subnet.prefixlen,
                    gateway=str(cfg.gateway) if routes and cfg.gateway and not cfg.routed
                    else "",
                    ip6=str(addr6) if addr6 else "",
                    prefix6=cfg.subnet6.prefixlen if cfg.subnet6 else 0,
                    gateway6=str(cfg.gateway6) if routes and cfg.gateway6 and addr6
                    and not cfg.routed else "",
                    routed=routes and cfg.routed)
                fd = _open_netns(req.netns_path)
                st_ns = os.fstat(fd)
                rec.netns_id = (st_ns.st_dev, st_ns.st_ino)
                st.endpoints[req.container_id] = rec
                self._save()              # recorded before anything is created
                self._create_port(rec, fd)
                created = True
                self._configure(rec, fd)
                self._save()              # the MAC read back
            except BaseException:
                if created and rec is not None and fd is not None:
                    try:
                        _delete_in_netns(rec, fd)
                    except OSError as exc:  # pragma: no cover - netns broke under us
                        log.warning("could not delete %s in %s: %s", rec.ifname,
                                    rec.netns_path, exc)
                self._ipam.release(addr)
                if addr6 is not None and self._ipam6 is not None:
                    self._ipam6.release(addr6)
                if st.endpoints.pop(req.container_id, None) is not None:
                    self._save()
                raise
            finally:
                if fd is not None:
                    os.close(fd)
            return _endpoint(rec)

    def _create_port(self, rec: EndpointRecord, netns_fd: int) -> None:
        cfg = self.config
        parent = self.nl.link(self.st.parent)
        if parent is None:
            raise NotFound(f"the requested parent interface {self.st.parent} was not found "
                           "on the Docker host")
        try:
            if cfg.driver == "macvlan":
                links.create_macvlan(self.nl, rec.ifname, parent_index=parent.index,
                                     mode=cfg.mode, netns_fd=netns_fd, mac=rec.mac,
                                     mtu=cfg.mtu)
            else:
                links.create_ipvlan(self.nl, rec.ifname, parent_index=parent.index,
                                    mode=cfg.mode, flag=cfg.flag, netns_fd=netns_fd,
                                    mtu=cfg.mtu)
        except OSError as exc:
            msg = f"failed to create the {cfg.driver} port: {_go_error(exc)}"
            if exc.errno == _errno.EEXIST:
                raise Conflict(f"{msg} ({rec.ifname} in {rec.netns_path})") from None
            if exc.errno == _errno.EOPNOTSUPP:
                raise NotSupported(msg) from None
            raise System(msg) from None

    def _configure(self, rec: EndpointRecord, netns_fd: int) -> None:
        """Inside the container's netns: lo and the port up, addresses, routes."""
        with Netlink(f"/proc/self/fd/{netns_fd}") as inner:
            inner.set_up(1)                       # lo is ifindex 1 in every netns
            found = links.link_details(inner, rec.ifname)
            if found is None:
                raise System(f"{rec.ifname} vanished from {rec.netns_path}")
            rec.mac = found.mac                   # ipvlan and passthru: the parent's
            inner.set_up(found.index)
            inner.add_address(found.index, ipaddress.IPv4Interface(f"{rec.ip}/{rec.prefix}"))
            if rec.ip6:
                # no duplicate address detection: the address works at once
                inner.add_address(found.index,
                                  ipaddress.IPv6Interface(f"{rec.ip6}/{rec.prefix6}"),
                                  nodad=True)
            if rec.routed:
                inner.add_route(IPv4Network("0.0.0.0/0"), found.index)
                if rec.ip6:
                    inner.add_route(IPv6Network("::/0"), found.index)
            if rec.gateway:
                inner.add_default_route(IPv4Address(rec.gateway), found.index)
            if rec.gateway6:
                inner.add_default_route(IPv6Address(rec.gateway6), found.index)

    def detach(self, container_id: str, *, background: bool = False) -> None:
        """Delete the container's sub-interface (nothing to do if its netns is gone) and
        release its addresses. ``background`` is accepted for the driver protocol: the
        deletion is one message, done here."""
        with self._lock:
            st = self.st
            rec = st.endpoints.get(container_id)
            if rec is None:
                return
            if not rec.removing:
                rec.removing = True
                self._save()
            _delete_in_netns(rec)
            if self._ipam is not None:
                self._ipam.release(IPv4Address(rec.ip))
            if self._ipam6 is not None and rec.ip6:
                self._ipam6.release(IPv6Address(rec.ip6))
            del st.endpoints[container_id]
            self._save()


def _parse_ip(value: str | None, version: int) -> IPAddress | None:
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(f"invalid IPv{version} address: {value}") from None
    if ip.version != version:
        raise InvalidArgument(f"invalid IPv{version} address: {value}")
    return ip


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise NotFound(f"network namespace {path} does not exist") from None


def _endpoint(rec: EndpointRecord) -> Endpoint:
    return Endpoint(
        container_id=rec.container_id, ifname=rec.ifname, mac=rec.mac,
        ip=IPv4Address(rec.ip), prefix=rec.prefix,
        gateway=IPv4Address(rec.gateway) if rec.gateway else None,
        ip6=IPv6Address(rec.ip6) if rec.ip6 else None, prefix6=rec.prefix6,
        gateway6=IPv6Address(rec.gateway6) if rec.gateway6 else None,
        endpoint_id=rec.endpoint_id)


def cleanup_leftovers(state_dir: str, keep_container_ids: Iterable[str] = (), *,
                      keep_network_ids: Iterable[str] | None = None) -> list[str]:
    """At daemon start: delete the sub-interfaces recorded for containers not in
    ``keep_container_ids`` (those whose netns still exists) and forget them. With
    ``keep_network_ids`` given, networks not in it are removed whole (their
    endpoints, the parent ketch created, the state file). Networks are otherwise
    kept, parents included: they outlive the daemon as Docker's do. Only what was
    recorded is touched; returns what was removed. Idempotent."""
    keep = set(keep_container_ids)
    keep_nets = None if keep_network_ids is None else set(keep_network_ids)
    removed: list[str] = []
    errors: list[BaseException] = []
    records = load_all_states(state_dir)
    if not records:
        return removed
    with Netlink() as nl:
        for st in records:
            drop_net = keep_nets is not None and st.network_id not in keep_nets
            for cid in [c for c, r in st.endpoints.items()
                        if drop_net or c not in keep or r.removing]:
                rec = st.endpoints[cid]
                try:
                    if _delete_in_netns(rec):
                        removed.append(f"link {rec.ifname} in {rec.netns_path}")
                except OSError as exc:
                    errors.append(exc)
                    continue
                del st.endpoints[cid]
            if drop_net and not st.endpoints:
                if st.created_parent:
                    try:
                        if _delete_parent(nl, st.parent, st.created_parent):
                            removed.append(f"link {st.parent}")
                        st.created_parent = ""
                    except OSError as exc:
                        errors.append(exc)
                if not st.created_parent:
                    remove_state(state_dir, st.network_id)
                    continue
            save_state(state_dir, st)
    if errors:
        raise MultiError(errors)
    return removed
