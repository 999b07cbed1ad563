"""Bridge networks (the default ``bridge`` and user-defined ones): a Linux bridge,
one veth pair per container and network, NAT and published ports in ketch's own
nftables table (``firewall.Firewall``, shared by all bridges of a daemon, as is
the host port allocator).

The engine's order of calls::

    removed = cleanup_leftovers(state_dir, keep=live_container_ids)   # daemon start
    net = BridgeNetwork(state_dir, BridgeConfig(...), firewall=fw, ports=pa); net.setup()
    ep = net.attach(EndpointRequest(cid, f"/proc/{init_pid}/ns/net", ports=specs))
    ... resolv_conf / hosts / hostname from ketch.network.etcfiles, bind-mounted
    net.detach(cid)                                                   # container gone

Kernel objects and who removes them:
- the bridge (``ketch0``) with the gateway address, up, ``route_localnet=1``:
  created by setup if missing (recorded), removed by teardown/cleanup only if
  ketch created it;
- per container: ``veth<7 hex>`` on the bridge and its peer (``eth0``, ``eth1``...)
  born in the container's netns (with addresses, MAC, default routes unless the
  network is internal; ``lo`` set up there):
  deleting the host end deletes both; the netns going away deletes both too;
- ketch's nft table (see nat.py), rewritten whole by setup, one map element per
  published port added/deleted by attach/detach, deleted by teardown/cleanup;
- ``net.ipv4.ip_forward=1`` (and ``net.ipv6.conf.all.forwarding=1`` for an IPv6
  network): set by setup; the old value is recorded and put back by teardown
  only if ketch changed it (dockerd never puts it back; a daemon restart keeps
  it on, as containers are still running).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ketch.errors import (
    Conflict,
    InvalidArgument,
    KetchError,
    MultiError,
    NotFound,
    NotSupported,
)
from ketch.linux import sysctl
from ketch.linux.netlink import Netlink
from ketch.linux.nftables import Nft, NftError
from ketch.network import nat, state
from ketch.network.endpoint import Endpoint, EndpointRequest
from ketch.network.firewall import Firewall, delete_elements
from ketch.network.ipam import (
    DEFAULT_POOLS,
    AddressPool,
    Allocator,
    choose_subnet,
    mac_from_ip,
    parse_bip,
    validate_mac,
)
from ketch.network.ports import PortAllocator, PortMapping, PortSpec, is_v6
from ketch.network.proxy import UserlandProxy, host_has_ipv6
from ketch.network.state import EndpointRecord, NetworkState

IFNAMSIZ = 15
CONTAINER_IFNAME = "eth0"


@dataclass(frozen=True)
class BridgeConfig:
    """Daemon options of the default network (daemon.json ``bridge``, ``bip``,
    ``default-address-pools``, ``icc``, ``ip-forward``, ``mtu``)."""

    name: str = "ketch0"
    table: str = "ketch"
    bip: str | None = None
    address_pools: Sequence[AddressPool] = DEFAULT_POOLS
    icc: bool = True
    ip_forward: bool = True
    mtu: int | None = None
    ephemeral_ports: tuple[int, int] | None = None   # default: ip_local_port_range
    # A user network's IPAM, decided when it was created (else bip or a free pool)
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    subnet6: str | None = None          # IPv6 (--ipv6 with --subnet v6, --fixed-cidr-v6)
    gateway6: str | None = None
    ip_range6: str | None = None
    internal: bool = False
    masquerade: bool = True
    network_id: str = ""                # "" for the default network
    network_name: str = "bridge"        # in messages
    reserved: tuple[str, ...] = ()      # --aux-address: never handed out

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > IFNAMSIZ or "/" in self.name or " " in self.name:
            raise InvalidArgument(f"invalid bridge name {self.name!r}: 1 to 15 characters, "
                                  "no '/' or spaces")
        if not self.table.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"invalid nftables table name {self.table!r}")


def veth_name(bridge: str, container_id: str) -> str:
    """Host end name, stable per (bridge, container) so a leftover can be found again."""
    return "veth" + hashlib.sha256(f"{bridge}/{container_id}".encode()).hexdigest()[:7]


def host_occupied_networks(nl: Netlink, ignore_ifindex: int = 0) -> list[ipaddress.IPv4Network]:
    """Subnets a new network must not overlap: the host's routes (not the default
    route) and the networks of its addresses, except those on ``ignore_ifindex``."""
    out = []
    for r in nl.routes():
        if r.dst.prefixlen == 0 or r.oif == ignore_ifindex or r.dst.version != 4:
            continue
        if r.table not in (254, 255):       # main and local
            continue
        if r.table == 255 and r.dst.prefixlen == 32:
            continue                          # local /32s duplicate the addresses below
        out.append(ipaddress.IPv4Network(r.dst))
    for a in nl.addresses():
        if a.index != ignore_ifindex and a.address.version == 4:
            out.append(ipaddress.IPv4Network(a.address.network))
    return out


class BridgeNetwork:
    """One bridge network; thread-safe (attach/detach may come from any thread)."""

    def __init__(self, state_dir: str, config: BridgeConfig | None = None, *,
                 nft: Nft | None = None, bind_ports: bool = True,
                 firewall: Firewall | None = None, ports: PortAllocator | None = None,
                 proxy: UserlandProxy | None = None) -> None:
        self.state_dir = state_dir
        self.config = config or BridgeConfig()
        self.firewall = firewall or Firewall(self.config.table, nft)
        self._lock = threading.RLock()
        self._nl: Netlink | None = None
        self._state: NetworkState | None = None
        self._ipam: Allocator | None = None
        self._ipam6: Allocator | None = None
        self._own_ports = ports is None
        self._ports = ports or PortAllocator(self.config.ephemeral_ports, bind=bind_ports)
        self._own_proxy = proxy is None
        self._proxy = proxy or UserlandProxy()
        self._bridge_index = 0
        self._reaper: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future[None]] = {}

    # -- helpers ---------------------------------------------------------------------

    @property
    def nft(self) -> Nft:
        return self.firewall.nft

    @property
    def nl(self) -> Netlink:
        if self._nl is None:
            self._nl = Netlink()
        return self._nl

    @property
    def st(self) -> NetworkState:
        if self._state is None:
            raise InvalidArgument(f"bridge network {self.config.name} is not set up")
        return self._state

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.st.subnet)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(self.st.gateway)

    @property
    def subnet6(self) -> ipaddress.IPv6Network | None:
        return ipaddress.IPv6Network(self.st.subnet6) if self.st.subnet6 else None

    @property
    def gateway6(self) -> ipaddress.IPv6Address | None:
        return ipaddress.IPv6Address(self.st.gateway6) if self.st.gateway6 else None

    def _save(self) -> None:
        state.save(self.state_dir, self.st)

    def rules(self) -> nat.BridgeRules:
        cfg = self.config
        return nat.BridgeRules(cfg.name, self.st.subnet, cfg.icc, cfg.internal,
                               self.st.subnet6, cfg.masquerade)

    # -- network lifecycle -------------------------------------------------------------

    def _choose_ipam(self, st: NetworkState, link_index: int) -> None:
        cfg = self.config
        if cfg.subnet:
            subnet = ipaddress.IPv4Network(cfg.subnet)
            gw = ipaddress.IPv4Address(cfg.gateway) if cfg.gateway else subnet.network_address + 1
            if st.endpoints and st.subnet and str(subnet) != st.subnet:
                raise Conflict(f"bridge {cfg.name} has endpoints in {st.subnet}; "
                               f"cannot move it to {subnet}")
            st.subnet, st.gateway = str(subnet), str(gw)
        elif cfg.bip:
            gw, subnet = parse_bip(cfg.bip)
            if st.endpoints and st.subnet and str(subnet) != st.subnet:
                raise Conflict(f"bridge {cfg.name} has endpoints in {st.subnet}; "
                               f"cannot move it to {subnet}")
            st.gateway, st.subnet = str(gw), str(subnet)
        elif not st.subnet:
            occupied = host_occupied_networks(self.nl, link_index)
            subnet = choose_subnet(cfg.address_pools, occupied)
            st.subnet, st.gateway = str(subnet), str(subnet.network_address + 1)
        if cfg.subnet6:
            subnet6 = ipaddress.IPv6Network(cfg.subnet6)
            st.subnet6 = str(subnet6)
            st.gateway6 = cfg.gateway6 or str(subnet6.network_address + 1)
        else:
            st.subnet6 = st.gateway6 = ""

    def setup(self) -> None:
        """Make the bridge, its address, sysctls and the nft rules exist; idempotent, and
        keeps the endpoints recorded by a previous daemon (live restore)."""
        with self._lock:
            cfg = self.config
            if not cfg.icc and not _bridged_traffic_filtered():
                # Frames between two ports of one bridge never reach the IP forward hook
                # unless br_netfilter passes them there; ketch does not load it (it
                # changes the whole host's bridging, as dockerd does).
                raise NotSupported("icc=false needs the br_netfilter module with "
                                   "net.bridge.bridge-nf-call-iptables=1 on this host")
            st = state.load(self.state_dir, cfg.name) or NetworkState(cfg.name, cfg.table)
            st.table = cfg.table
            st.network_id = cfg.network_id
            self._state = st
            link = self.nl.link(cfg.name)
            if link is not None and link.kind != "bridge":
                raise Conflict(f"interface {cfg.name} exists and is not a bridge")
            self._choose_ipam(st, link.index if link else 0)
            if link is None:
                st.created_bridge = True
                self._save()                      # recorded before it exists
                self.nl.create_bridge(cfg.name, mtu=cfg.mtu)
                link = self.nl.link(cfg.name)
                assert link is not None
            self._bridge_index = link.index
            want: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = [
                ipaddress.IPv4Interface(f"{st.gateway}/{self.subnet.prefixlen}")]
            have = [a.address for a in self.nl.addresses() if a.index == link.index]
            if self.subnet6 is not None:
                want.append(ipaddress.IPv6Interface(f"{st.gateway6}/{self.subnet6.prefixlen}"))
                have += [a.address for a in self.nl.addresses(socket.AF_INET6)
                         if a.index == link.index]
            for w in want:
                if w not in have:
                    self.nl.add_address(link.index, w, nodad=True)
            # Loopback sources (127.0.0.1 -> published port, DNATed into the bridge) are
            # martians unless the bridge allows them.
            sysctl.write(f"net/ipv4/conf/{cfg.name}/route_localnet", "1")
            if cfg.ip_forward:
                self._ensure_sysctl(st, "net/ipv4/ip_forward")
                if self.subnet6 is not None:
                    self._ensure_sysctl(st, "net/ipv6/conf/all/forwarding")
            self.nl.set_up(link.index)
            for rec in [r for r in st.endpoints.values() if r.removing]:
                # a previous daemon died while deleting it: finish the job
                self.nl.delete_link(rec.host_veth)
                del st.endpoints[rec.container_id]
            rng = ipaddress.IPv4Network(cfg.ip_range) if cfg.ip_range else None
            taken = [ipaddress.ip_address(e.ip) for e in st.endpoints.values()]
            taken += [ipaddress.ip_address(r) for r in cfg.reserved]
            self._ipam = Allocator(self.subnet, self.gateway,
                                   (ip for ip in taken if ip.version == 4),
                                   ip_range=rng, network_name=cfg.network_name)
            self._ipam6 = None
            if self.subnet6 is not None:
                rng6 = ipaddress.IPv6Network(cfg.ip_range6) if cfg.ip_range6 else None
                taken6 = [ipaddress.ip_address(e.ip6) for e in st.endpoints.values() if e.ip6]
                taken6 += [ipaddress.ip_address(r) for r in cfg.reserved]
                self._ipam6 = Allocator(self.subnet6, self.gateway6,
                                        (ip for ip in taken6 if ip.version == 6),
                                        ip_range=rng6, network_name=cfg.network_name)
            if self._own_ports:
                self._ports.close()
            for e in st.endpoints.values():
                for m in e.ports:
                    self._ports.claim(m)
                self._proxy_ports(e.ip, e.ports)
            self._save()
            self.firewall.remember((m, e.ip) for e in st.endpoints.values() for m in e.ports)
            self.firewall.set_bridge(self.rules())

    @staticmethod
    def _ensure_sysctl(st: NetworkState, key: str) -> None:
        old = sysctl.ensure(key, "1")
        if old is not None and key not in st.sysctls_changed:
            st.sysctls_changed[key] = old

    def teardown(self) -> None:
        """Remove every endpoint, the rules, the bridge (if ketch made it); restore the
        sysctls ketch changed; forget the state."""
        self.drain()
        with self._lock:
            if self._state is None:
                self._state = state.load(self.state_dir, self.config.name)
                if self._state is None:
                    return
            errors: list[BaseException] = []
            for cid in list(self.st.endpoints):
                try:
                    self.detach(cid)
                except Exception as exc:  # noqa: BLE001 - remove the rest anyway
                    errors.append(exc)
            try:
                self.firewall.remove_bridge(self.config.name)
            except NftError as exc:
                errors.append(exc)
            _remove_network(self.nl, None, self.st, errors, restore_sysctls=True)
            if self._own_ports:
                self._ports.close()
            if not errors:
                state.remove(self.state_dir, self.config.name)
            self.close()
            if errors:
                raise MultiError(errors)

    def close(self) -> None:
        """Drop sockets and port reservations; kernel objects stay (daemon shutdown).
        Pending background deletions are finished first."""
        self.drain()
        if self._reaper is not None:
            self._reaper.shutdown()
            self._reaper = None
        with self._lock:
            if self._state is not None:
                for e in self._state.endpoints.values():
                    self._unproxy_ports(e.ports)
            if self._own_proxy:
                self._proxy.close()
            if self._own_ports:
                self._ports.close()
            elif self._state is not None:
                for e in self._state.endpoints.values():
                    for m in e.ports:
                        self._ports.release(m)
            if self._nl is not None:
                self._nl.close()
                self._nl = None
            self._state = None

    # -- endpoints -----------------------------------------------------------------------

    def endpoint(self, container_id: str) -> Endpoint | None:
        with self._lock:
            if self._state is None:
                return None
            rec = self.st.endpoints.get(container_id)
            return None if rec is None or rec.removing else self._endpoint(rec)

    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return [self._endpoint(r) for r in self.st.endpoints.values() if not r.removing]

    def _endpoint(self, rec: EndpointRecord) -> Endpoint:
        gw = self.gateway
        gw6 = self.gateway6 if rec.ip6 else None
        return Endpoint(rec.container_id, rec.ifname, rec.mac, ipaddress.IPv4Address(rec.ip),
                        self.subnet.prefixlen, gw,
                        ipaddress.IPv6Address(rec.ip6) if rec.ip6 else None,
                        self.subnet6.prefixlen if rec.ip6 and self.subnet6 else 0, gw6,
                        rec.host_veth, tuple(rec.ports), endpoint_id(self.config.name,
                                                                     rec.container_id))

    def attach(self, req: EndpointRequest) -> Endpoint:
        """Connect the netns to the bridge. On any failure nothing is left behind."""
        container_id = req.container_id
        with self._lock:
            pending = self._pending.get(container_id)
        if pending is not None:
            pending.result()                      # a restart: the old veth must go first
        with self._lock:
            st = self.st
            assert self._ipam is not None
            if container_id in st.endpoints:
                raise Conflict(f"endpoint with name {container_id} already exists in network "
                               f"{self.config.network_name}")
            if req.ip6 and self._ipam6 is None:
                raise InvalidArgument(f"invalid IPv6 address {req.ip6}: network "
                                      f"{self.config.network_name} has no IPv6 subnet")
            addr = self._ipam.allocate(ipaddress.IPv4Address(req.ip) if req.ip else None)
            addr6 = None
            try:
                if self._ipam6 is not None:
                    addr6 = self._ipam6.allocate(ipaddress.IPv6Address(req.ip6)
                                                 if req.ip6 else None)
            except BaseException:
                self._ipam.release(addr)
                raise
            mappings: list[PortMapping] = []
            rec = EndpointRecord(container_id, str(addr),
                                 validate_mac(req.mac) if req.mac
                                 else mac_from_ip(ipaddress.IPv4Address(addr)),
                                 veth_name(self.config.name, container_id), mappings,
                                 ip6=str(addr6) if addr6 else "", ifname=req.ifname,
                                 default_route=req.default_route)
            try:
                for spec in req.ports:
                    m = self._ports.allocate(spec, str(addr))
                    mappings.append(m)
                    if m.host_ip == "0.0.0.0" and not spec.host_ip:
                        mappings += self._ipv6_twin(m, str(addr))
                st.endpoints[container_id] = rec
                self._save()                      # recorded before anything is created
                self._plumb(rec, req.netns_path)
                self.firewall.publish([(m, rec.ip) for m in mappings])
                self._proxy_ports(rec.ip, mappings)
            except BaseException:
                self._unproxy_ports(mappings)
                self.nl.delete_link(rec.host_veth)
                for m in mappings:
                    self._ports.release(m)
                self._ipam.release(addr)
                if addr6 is not None and self._ipam6 is not None:
                    self._ipam6.release(addr6)
                if st.endpoints.pop(container_id, None) is not None:
                    self._save()
                raise
            return self._endpoint(rec)

    def _ipv6_twin(self, m: PortMapping, container_ip: str) -> list[PortMapping]:
        """``-p 8080:80`` binds [::]:8080 too where the host has IPv6 (dockerd lists
        both), served by the userland proxy; TCP and UDP, and only if that port is
        free on IPv6 (the IPv4 binding stands either way)."""
        if m.proto not in ("tcp", "udp") or not self._ports.bind or not host_has_ipv6():
            return []
        try:
            return [self._ports.allocate(PortSpec(m.container_port, m.proto, "::",
                                                  m.host_port, m.host_port), container_ip)]
        except KetchError:
            return []

    def _proxy_ports(self, container_ip: str, mappings: Sequence[PortMapping]) -> None:
        for m in mappings:
            sock = self._ports.socket_of(m) if is_v6(m.host_ip) else None
            if sock is not None:
                self._proxy.add((m.proto, m.host_ip, m.host_port), sock,
                                (container_ip, m.container_port))

    def _unproxy_ports(self, mappings: Sequence[PortMapping]) -> None:
        for m in mappings:
            if is_v6(m.host_ip):
                self._proxy.remove((m.proto, m.host_ip, m.host_port))

    def _plumb(self, rec: EndpointRecord, netns_path: str) -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"network namespace {netns_path} does not exist") from None
        try:
            try:
                self.nl.create_veth(rec.host_veth, rec.ifname, master=self._bridge_index,
                                    peer_netns_fd=fd, peer_mac=rec.mac, mtu=self.config.mtu)
            except FileExistsError:
                raise Conflict(f"{rec.host_veth} or {rec.ifname} in {netns_path} "
                               "already exists") from None
        finally:
            os.close(fd)
        host_end = self.nl.index(rec.host_veth)
        self.nl.set_hairpin(host_end)
        self.nl.set_up(host_end)
        with Netlink(netns_path) as inner:
            inner.set_up(1)                       # lo is ifindex 1 in every netns
            eth = inner.index(rec.ifname)
            inner.set_up(eth)
            inner.add_address(eth, ipaddress.IPv4Interface(f"{rec.ip}/{self.subnet.prefixlen}"))
            if rec.default_route:       # (the engine's choice; internal ones too)
                inner.add_default_route(self.gateway, eth)
            if rec.ip6 and self.subnet6 is not None:
                inner.add_address(eth, ipaddress.IPv6Interface(
                    f"{rec.ip6}/{self.subnet6.prefixlen}"), nodad=True)
                if rec.default_route and self.gateway6 is not None:
                    inner.add_default_route(self.gateway6, eth)

    def detach(self, container_id: str, *, background: bool = False) -> None:
        """Remove the container's port rules, veth and address; no error if gone already.

        Deleting a veth costs the kernel 10-20 ms (an RCU grace period). With
        ``background=True`` the rules and host ports go now, the veth is deleted by
        a worker thread, and the address is released only once the interface is
        gone (so it is never on the bridge twice); attach of the same container
        waits for it. ``drain()`` waits for every pending deletion.
        """
        with self._lock:
            if self._state is None:
                return
            st = self.st
            rec = st.endpoints.get(container_id)
            if rec is None:
                return
            pending = self._pending.get(container_id)
            if pending is None and not rec.removing:
                self._unproxy_ports(rec.ports)
                if rec.ports:
                    self.firewall.unpublish(rec.ports)
                for m in rec.ports:
                    self._ports.release(m)
                rec.ports = []
                rec.removing = True
                self._save()
                if background:
                    if self._reaper is None:
                        self._reaper = ThreadPoolExecutor(1, thread_name_prefix="ketch-net-reaper")
                    self._pending[container_id] = self._reaper.submit(self._finish_detach, rec)
                    return
        if pending is not None:
            if not background:
                pending.result()
            return
        # ours, or left "removing" by a daemon that died: finish it here
        self._finish_detach(rec)

    def _finish_detach(self, rec: EndpointRecord) -> None:
        # Outside the lock: other attaches and detaches go on meanwhile. A socket of
        # its own, as Netlink sockets are not shared between threads.
        with Netlink() as nl:
            nl.delete_link(rec.host_veth)
        with self._lock:
            self._pending.pop(rec.container_id, None)
            if self._state is None or self._state.endpoints.get(rec.container_id) is not rec:
                return
            if self._ipam is not None:
                self._ipam.release(ipaddress.IPv4Address(rec.ip))
            if self._ipam6 is not None and rec.ip6:
                self._ipam6.release(ipaddress.IPv6Address(rec.ip6))
            del self._state.endpoints[rec.container_id]
            self._save()

    def drain(self) -> None:
        """Wait for the veth deletions that ``detach(background=True)`` started."""
        while True:
            with self._lock:
                futures = list(self._pending.values())
            if not futures:
                return
            for f in futures:
                f.result()


def endpoint_id(bridge: str, container_id: str) -> str:
    """Docker's EndpointID is 64 hex; ketch's is derived, so a restarted daemon
    reports the same one for the same veth."""
    return hashlib.sha256(f"ketch endpoint {bridge}/{container_id}".encode()).hexdigest()


def _bridged_traffic_filtered() -> bool:
    try:
        return sysctl.read("net/bridge/bridge-nf-call-iptables") == "1"
    except OSError:
        return False


def _remove_network(nl: Netlink, nft: Nft | None, st: NetworkState,
                    errors: list[BaseException], *, restore_sysctls: bool) -> None:
    """The bridge (if ketch made it), the sysctls; and, given ``nft``, the table."""
    if nft is not None:
        try:
            nft.run(nat.delete_table_script(st.table))
        except NftError as exc:
            errors.append(exc)
    if st.created_bridge:
        try:
            nl.delete_link(st.bridge)
            st.created_bridge = False
        except OSError as exc:
            errors.append(exc)
    if restore_sysctls:
        for key, old in list(st.sysctls_changed.items()):
            try:
                sysctl.write(key, old)
                del st.sysctls_changed[key]
            except OSError as exc:
                errors.append(exc)


def cleanup_leftovers(state_dir: str, keep: Iterable[str] = (), *,
                      nft: Nft | None = None,
                      networks: Iterable[str] | None = None) -> list[str]:
    """At daemon start: remove what a previous run recorded for containers not in
    ``keep`` (veths, port elements). Bridges not in ``networks`` (the bridge names
    the daemon still has; None: every recorded one stays) and, with no bridge
    left, the table go too. Only recorded objects are touched; returns what was
    removed. Idempotent. ``networks=()`` is the full reset."""
    keep = set(keep)
    wanted = None if networks is None else set(networks)
    removed: list[str] = []
    records = state.load_all(state_dir)
    if not records:
        return removed
    nft = nft or Nft()
    errors: list[BaseException] = []
    tables: dict[str, bool] = {}          # table -> still used by a kept bridge
    with Netlink() as nl:
        for st in records:
            stays = wanted is None or st.bridge in wanted
            for cid in [c for c, r in st.endpoints.items()
                        if c not in keep or r.removing or not stays]:
                rec = st.endpoints[cid]
                try:
                    if nl.delete_link(rec.host_veth):
                        removed.append(f"link {rec.host_veth}")
                except OSError as exc:
                    errors.append(exc)
                    continue
                if rec.ports and _table_exists(nft, st.table):
                    delete_elements(nft, st.table, rec.ports)
                    removed.extend(f"port {m.host_ip}:{m.host_port}/{m.proto}" for m in rec.ports)
                del st.endpoints[cid]
            if stays and (st.endpoints or wanted is not None):
                tables[st.table] = True
                state.save(state_dir, st)
                continue
            tables.setdefault(st.table, False)
            if st.created_bridge and nl.link(st.bridge) is not None:
                removed.append(f"link {st.bridge}")
            _remove_network(nl, None, st, errors, restore_sysctls=False)
            if st.created_bridge:
                state.save(state_dir, st)
            else:
                state.remove(state_dir, st.bridge)
        for table, used in tables.items():
            if not used and _table_exists(nft, table):
                removed.append(f"nft table {nat.FAMILY} {table}")
                try:
                    nft.run(nat.delete_table_script(table))
                except NftError as exc:
                    errors.append(exc)
    if errors:
        raise MultiError(errors)
    return removed


def _table_exists(nft: Nft, table: str) -> bool:
    return nft.table_exists(nat.FAMILY, table) or nft.table_exists(nat.LEGACY_FAMILY, table)
