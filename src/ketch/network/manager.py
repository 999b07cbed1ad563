"""Every network of a daemon: the records (``store``), the driver behind each, and
what they share (ketch's nft table, the host port allocator).

No container knowledge beyond IDs: the engine decides which networks a
container joins, in which order and under which interface names; this turns
``network create``/``rm`` into kernel objects and finds networks by name or
ID as dockerd does (full ID, then name, then a unique ID prefix).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ketch.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    KetchError,
    NotFound,
    NotSupported,
    System,
    Unavailable,
)
from ketch.network import store
from ketch.network.bridge import BridgeConfig, BridgeNetwork, cleanup_leftovers
from ketch.network.endpoint import Endpoint, EndpointRequest, NetworkDriver
from ketch.network.firewall import Firewall
from ketch.network.ipam import DEFAULT_POOLS, AddressPool, choose_subnet
from ketch.network.ports import PortAllocator
from ketch.network.proxy import UserlandProxy
from ketch.network.store import IPAMConfig, NetworkRecord

BRIDGE_OPTS = "com.docker.network.bridge."
MTU_OPTION = "com.docker.network.driver.mtu"


@dataclass
class NetworkSpec:
    """``POST /networks/create``, parsed."""

    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam: list[IPAMConfig] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _bool_option(options: dict[str, str], key: str, default: bool) -> bool:
    raw = options.get(key)
    if raw is None:
        return default
    if raw.lower() in ("1", "t", "true"):
        return True
    if raw.lower() in ("0", "f", "false"):
        return False
    raise InvalidArgument(f'failed to parse "{raw}" as bool for {key}')


class NetworkManager:
    def __init__(self, state_dir: str, default_bridge: BridgeConfig | None, *,
                 pools: Sequence[AddressPool] = DEFAULT_POOLS, table: str = "ketch") -> None:
        self.state_dir = state_dir
        self.default_bridge = default_bridge
        self.pools = pools
        self.firewall = Firewall(default_bridge.table if default_bridge else table)
        self.ports = PortAllocator(default_bridge.ephemeral_ports if default_bridge else None)
        self.proxy = UserlandProxy()
        self._lock = threading.RLock()
        self._records: dict[str, NetworkRecord] = {}
        self._drivers: dict[str, NetworkDriver] = {}
        self._broken: dict[str, str] = {}    # network id -> why its set-up failed
        self._last_pool: ipaddress.IPv4Network | None = None   # the rotation's place

    # -- start and stop ----------------------------------------------------------------

    def setup(self, live: Iterable[str] = ()) -> list[str]:
        """Daemon start: the predefined networks, every user network's kernel side
        (kept endpoints of ``live`` containers, leftovers of others removed). Returns
        what was cleaned."""
        with self._lock:
            records = {r.id: r for r in store.load_all(self.state_dir)}
            bridges = {r.interface for r in records.values() if r.driver == "bridge"}
            if self.default_bridge is not None:
                bridges.add(self.default_bridge.name)
            removed = cleanup_leftovers(self.state_dir, live, networks=bridges)
            from ketch.network import macvlan

            removed += macvlan.cleanup_leftovers(
                self.state_dir, live,
                keep_network_ids=[r.id for r in records.values()
                                  if r.driver in ("macvlan", "ipvlan")])
            self._records = records
            for name, kind in (("host", "host"), ("none", "null")):
                if not any(r.name == name and r.driver == kind for r in records.values()):
                    rec = NetworkRecord(store.predefined_id(name), name, kind, time.time_ns())
                    store.save(self.state_dir, rec)
                    self._records[rec.id] = rec
            # the default bridge: its record follows daemon.json (a changed "bridge"
            # is another network)
            for rec in [r for r in self._records.values() if r.name == "bridge"
                        and r.predefined]:
                if self.default_bridge is None or rec.interface != self.default_bridge.name:
                    del self._records[rec.id]
                    store.remove(self.state_dir, rec.id)
            errors: list[str] = []
            if self.default_bridge is not None:
                self._setup_default(self.default_bridge)
            for rec in list(self._records.values()):
                if rec.predefined or rec.driver in ("host", "null"):
                    continue
                try:
                    driver = self._make_driver(rec)
                    driver.setup()
                    self._drivers[rec.id] = driver
                    self._broken.pop(rec.id, None)
                except (KetchError, OSError) as exc:
                    errors.append(f"network {rec.name}: {exc}")
                    self._broken[rec.id] = str(exc)
            return removed + [f"error: {e}" for e in errors]

    def _setup_default(self, cfg: BridgeConfig) -> None:
        net_id = store.predefined_id("bridge", cfg.name)
        net = BridgeNetwork(self.state_dir, cfg, firewall=self.firewall, ports=self.ports,
                            proxy=self.proxy)
        net.setup()
        rec = self._records.get(net_id) or NetworkRecord(net_id, "bridge", "bridge", time.time_ns())
        rec.interface = cfg.name
        rec.enable_ipv6 = bool(cfg.subnet6)
        # dockerd lists the default network's subnet without its gateway
        rec.ipam = [IPAMConfig(str(net.subnet), str(net.gateway) if cfg.bip else "")]
        if net.subnet6 is not None:
            rec.ipam.append(IPAMConfig(str(net.subnet6)))
        rec.options = {
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": str(cfg.icc).lower(),
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": cfg.name,
            "com.docker.network.driver.mtu": str(cfg.mtu or 1500),
        }
        store.save(self.state_dir, rec)
        self._records[rec.id] = rec
        self._drivers[rec.id] = net

    def close(self) -> None:
        with self._lock:
            for d in self._drivers.values():
                d.close()
            self._drivers.clear()
            self.proxy.close()
            self.ports.close()
            self.firewall.close()

    # -- lookups -----------------------------------------------------------------------

    def records(self) -> list[NetworkRecord]:
        with self._lock:
            return list(self._records.values())

    def find(self, ref: str) -> NetworkRecord:
        """dockerd's FindNetwork: a full ID, then a name, then a unique ID prefix."""
        with self._lock:
            if ref in self._records:
                return self._records[ref]
            named = [r for r in self._records.values() if r.name == ref]
            if len(named) == 1:
                return named[0]
            if len(named) > 1:
                raise Conflict(f"network {ref} is ambiguous ({len(named)} matches found "
                               "based on name)")
            if ref:
                prefixed = [r for r in self._records.values() if r.id.startswith(ref)]
                if len(prefixed) == 1:
                    return prefixed[0]
                if len(prefixed) > 1:
                    raise Conflict(f"network {ref} is ambiguous ({len(prefixed)} matches "
                                   "found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def default_id(self) -> str:
        if self.default_bridge is None:
            return ""
        return store.predefined_id("bridge", self.default_bridge.name)

    def driver(self, network_id: str) -> NetworkDriver | None:
        with self._lock:
            return self._drivers.get(network_id)

    # -- create and remove -------------------------------------------------------------

    def create(self, spec: NetworkSpec) -> NetworkRecord:
        with self._lock:
            if any(r.name == spec.name for r in self._records.values()):
                raise Conflict(f"network with name {spec.name} already exists")
            driver = spec.driver or "bridge"
            if driver in ("host", "null"):
                raise Forbidden(f'only one instance of "{driver}" network is allowed')
            if driver not in ("bridge", "macvlan", "ipvlan"):
                if driver == "overlay":
                    raise Unavailable('This node is not a swarm manager. Use "docker swarm '
                                      'init" or "docker swarm join" to connect this node to '
                                      "swarm and try again.")
                raise NotFound(f'plugin "{driver}" not found')
            if spec.ipam_driver not in ("", "default"):
                raise NotFound(f'plugin "{spec.ipam_driver}" not found')
            net_id = secrets.token_hex(32)
            rec = NetworkRecord(net_id, spec.name, driver, time.time_ns(), spec.enable_ipv6,
                                spec.internal, spec.attachable, "default",
                                dict(spec.ipam_options), [], dict(spec.options),
                                dict(spec.labels))
            rec.ipam = self._decide_ipam(spec)
            rec.user_subnets = bool(spec.ipam)
            if driver in ("macvlan", "ipvlan"):
                from ketch.network import macvlan

                # the options' words first, as dockerd checks them before any IPAM
                macvlan.skips_gateway(driver, rec.options, rec.internal)
            if driver == "bridge":
                _bool_option(rec.options, BRIDGE_OPTS + "enable_icc", True)
                _bool_option(rec.options, BRIDGE_OPTS + "enable_ip_masquerade", True)
                rec.interface = rec.options.get(store.BRIDGE_NAME_OPTION) or f"br-{net_id[:12]}"
                if any(r.interface == rec.interface for r in self._records.values()):
                    raise Conflict(f"bridge name {rec.interface} is used by another network")
            d = self._make_driver(rec)
            store.save(self.state_dir, rec)
            try:
                d.setup()
            except BaseException:
                try:
                    d.teardown()
                finally:
                    store.remove(self.state_dir, rec.id)
                raise
            self._records[rec.id] = rec
            self._drivers[rec.id] = d
            return rec

    def _decide_ipam(self, spec: NetworkSpec) -> list[IPAMConfig]:
        """The subnets as given (checked), or one chosen from the pools; the gateway is
        the subnet's first address unless given."""
        # IPv4 first, as dockerd lists them (the docker CLI sends them in any order)
        out = sorted((_checked_pool(cfg) for cfg in spec.ipam), key=lambda c: c.version)
        v4 = [c for c in out if c.version == 4]
        v6 = [c for c in out if c.version == 6]
        if len(v4) > 1 or len(v6) > 1:
            raise Forbidden(f"{spec.driver or 'bridge'} driver doesn't support multiple "
                            "subnets")
        if v6 and not spec.enable_ipv6:
            raise InvalidArgument("IPv6 subnet given without --ipv6: add --ipv6 to create an "
                                  "IPv6 network")
        if spec.enable_ipv6 and not v6:
            raise NotFound("could not find an available, non-overlapping IPv6 address "
                                  "pool among the defaults to assign to the network")
        taken = self._taken_subnets()
        for c in out:
            net = ipaddress.ip_network(c.subnet, strict=False)
            if any(net.overlaps(t) for t in taken if t.version == net.version):
                raise Forbidden("Pool overlaps with other one on this address space")
        if not v4:
            from ketch.linux.netlink import Netlink
            from ketch.network.bridge import host_occupied_networks

            with Netlink() as nl:
                occupied: list[ipaddress.IPv4Network] = host_occupied_networks(nl)
            occupied += [t for t in taken if isinstance(t, ipaddress.IPv4Network)]
            subnet = choose_subnet(self.pools, occupied, self._last_pool)
            self._last_pool = subnet
            out.insert(0, IPAMConfig(str(subnet), str(subnet.network_address + 1)))
        return out

    def _taken_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c.subnet, strict=False) for r in self._records.values()
                for c in r.ipam if c.subnet]

    def _make_driver(self, rec: NetworkRecord) -> NetworkDriver:
        if rec.driver == "bridge":
            v4, v6 = rec.ipam_v4(), rec.ipam_v6()
            base = self.default_bridge or BridgeConfig()
            mtu = rec.options.get(MTU_OPTION)
            try:
                mtu_value = int(mtu) if mtu else base.mtu
            except ValueError:
                raise InvalidArgument(f"invalid MTU number: {mtu}") from None
            cfg = BridgeConfig(
                name=rec.interface, table=self.firewall.table,
                icc=_bool_option(rec.options, BRIDGE_OPTS + "enable_icc", True),
                masquerade=_bool_option(rec.options, BRIDGE_OPTS + "enable_ip_masquerade",
                                        True),
                ip_forward=base.ip_forward, mtu=mtu_value,
                ephemeral_ports=base.ephemeral_ports,
                subnet=str(_net(v4.subnet)) if v4 else None,
                gateway=_gateway(v4) if v4 else None,
                ip_range=v4.ip_range or None if v4 else None,
                subnet6=str(_net(v6.subnet)) if v6 else None,
                gateway6=_gateway(v6) if v6 else None,
                ip_range6=v6.ip_range or None if v6 else None,
                internal=rec.internal, network_id=rec.id, network_name=rec.name,
                reserved=tuple(a for c in rec.ipam for a in c.aux_addresses.values()))
            return BridgeNetwork(self.state_dir, cfg, firewall=self.firewall, ports=self.ports,
                                 proxy=self.proxy)
        if rec.driver in ("macvlan", "ipvlan"):
            from ketch.network import macvlan

            v4, v6 = rec.ipam_v4(), rec.ipam_v6()
            if v4 is None:
                raise NotSupported(f"{rec.driver} networks need an IPv4 subnet in ketch")
            no_gw = macvlan.skips_gateway(rec.driver, rec.options, rec.internal)
            mcfg = macvlan.config_from_options(
                rec.driver, rec.options, network_id=rec.id, name=rec.name,
                subnet=str(_net(v4.subnet)), gateway=None if no_gw else _gateway(v4),
                ip_range=v4.ip_range or None,
                subnet6=str(_net(v6.subnet)) if v6 else None,
                gateway6=None if no_gw or v6 is None else _gateway(v6),
                ip_range6=(v6.ip_range or None) if v6 else None, internal=rec.internal)
            return macvlan.MacvlanNetwork(self.state_dir, mcfg)
        raise NotSupported(f"the {rec.driver} network driver is not supported yet")


    def remove(self, network_id: str, *, has_containers: bool) -> None:
        """``has_containers``: the engine's view (running containers attached)."""
        with self._lock:
            rec = self._records.get(network_id)
            if rec is None:
                raise NotFound(f"network {network_id} not found")
            if rec.predefined:
                raise Forbidden(f"{rec.name} is a pre-defined network and cannot be removed")
            d = self._drivers.get(network_id)
            if has_containers or (d is not None and d.endpoints()):
                raise Forbidden(f"error while removing network: network {rec.name} id "
                                f"{rec.id} has active endpoints")
            if d is not None:
                d.teardown()
                del self._drivers[network_id]
            store.remove(self.state_dir, rec.id)
            del self._records[network_id]

    # -- endpoints ---------------------------------------------------------------------

    def attach(self, network_id: str, req: EndpointRequest) -> Endpoint:
        d = self.driver(network_id)
        if d is None:
            rec = self.find(network_id)
            why = self._broken.get(rec.id)
            if why is not None:
                raise Unavailable(f"network {rec.name} is not available: its set-up failed "
                                  f"when the daemon started: {why}")
            raise NotSupported(f"network {rec.name} ({rec.driver}) takes no endpoints")
        return d.attach(req)

    def detach(self, network_id: str, container_id: str, *, background: bool = False) -> None:
        d = self.driver(network_id)
        if d is not None:
            d.detach(container_id, background=background)

    def endpoint(self, network_id: str, container_id: str) -> Endpoint | None:
        d = self.driver(network_id)
        return d.endpoint(container_id) if d is not None else None


def route_default_via(netns_path: str, ep: Endpoint) -> None:
    """Move a container's default route(s) to ``ep``'s gateway (a network that sorts
    first joined it), as dockerd's sandbox does on connect and disconnect."""
    from ketch.linux.netlink import Netlink

    with Netlink(netns_path) as nl:
        index = nl.index(ep.ifname)
        if ep.gateway is not None:
            nl.delete_default_route(4)
            nl.add_default_route(ep.gateway, index)
        if ep.gateway6 is not None:
            nl.delete_default_route(6)
            nl.add_default_route(ep.gateway6, index)


def drop_default_route(netns_path: str) -> None:
    """No network left to route through (its last non-internal one went)."""
    from ketch.linux.netlink import Netlink

    with Netlink(netns_path) as nl:
        nl.delete_default_route(4)
        nl.delete_default_route(6)


def _checked_pool(cfg: IPAMConfig) -> IPAMConfig:
    try:
        subnet = ipaddress.ip_network(cfg.subnet, strict=False)
    except ValueError:
        raise System(f"Invalid subnet {cfg.subnet} : invalid CIDR address: "
                     f"{cfg.subnet}") from None
    # kept as typed (host bits too), as dockerd shows it
    out = IPAMConfig(cfg.subnet, "", "", dict(cfg.aux_addresses))
    if cfg.ip_range:
        try:
            rng = ipaddress.ip_network(cfg.ip_range, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid CIDR address: {cfg.ip_range}") from None
        if rng.version != subnet.version or not rng.subnet_of(subnet):  # type: ignore[arg-type]
            raise InvalidArgument(f"no matching subnet for range {cfg.ip_range}")
        out.ip_range = str(rng)
    if cfg.gateway:
        try:
            gw = ipaddress.ip_address(cfg.gateway)
        except ValueError:
            raise InvalidArgument(f"invalid gateway address: {cfg.gateway}") from None
        if gw.version != subnet.version or gw not in subnet:
            raise System(f"failed to allocate gateway ({cfg.gateway}): Requested address "
                         "is out of range")
        out.gateway = str(gw)
    for host, addr in cfg.aux_addresses.items():
        try:
            a = ipaddress.ip_address(addr)
        except ValueError:
            raise InvalidArgument(f"invalid auxiliary address {host}={addr}") from None
        if a.version != subnet.version or a not in subnet:
            raise InvalidArgument(f"no matching subnet for aux-address {addr}")
    return out


def _gateway(cfg: IPAMConfig) -> str:
    """The given gateway, else the subnet's first address (as dockerd's IPAM)."""
    return cfg.gateway or str(_net(cfg.subnet).network_address + 1)


def _net(subnet: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(subnet, strict=False)


def state_dir(root: str) -> str:
    return os.path.join(root, "network")
