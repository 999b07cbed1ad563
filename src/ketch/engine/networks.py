"""The engine's networks: Docker's network objects (``/networks`` API), a
container's endpoints on them, and the names the embedded DNS server answers.

The kernel side is ``ketch.network.manager``; this module knows containers:
which networks a container joins and in which order (its NetworkMode first,
then the others as they were given; interfaces eth0, eth1, ...), which of its
endpoints gives the default route (the first not internal), the Docker JSON
of networks and of a container's NetworkSettings, and the DNS view (a
container resolves the names of the containers that share a user-defined
network with it: their names, network-scoped aliases and short IDs).

A container's network configuration lives in its NetworkSettings.Networks
(as dockerd keeps it): one entry per network with what was asked (IPAMConfig,
Aliases, MacAddress, ...); the run-time fields are filled while it runs and
emptied when it stops (NetworkID stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    KetchError,
    NotFound,
    NotSupported,
    System,
)

if TYPE_CHECKING:
    from ketch.engine.containers import Engine
    from ketch.engine.network import NetworkOptions
    from ketch.engine.store import Container
    from ketch.network.dns import DnsServer
    from ketch.network.endpoint import Endpoint
    from ketch.network.manager import NetworkManager
    from ketch.network.store import NetworkRecord

log = logging.getLogger("ketch.engine.networks")

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def endpoint_settings_json(cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """An EndpointSettings with the configured fields of ``cfg`` and no run-time data."""
    cfg = cfg or {}
    return {
        "IPAMConfig": cfg.get("IPAMConfig"), "Links": cfg.get("Links"),
        "Aliases": cfg.get("Aliases"), "MacAddress": cfg.get("MacAddress") or "",
        "DriverOpts": cfg.get("DriverOpts"), "NetworkID": cfg.get("NetworkID") or "",
        "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


def _run_time(ep_json: dict[str, Any], ep: Endpoint | None, network_id: str,
              dns_names: list[str] | None, container_id: str) -> dict[str, Any]:
    out = dict(ep_json)
    out["NetworkID"] = network_id
    out["DNSNames"] = dns_names
    if ep is None:
        out["EndpointID"] = _endpoint_id(network_id, container_id)
        return out
    out.update({
        "MacAddress": ep.mac, "EndpointID": ep.endpoint_id or _endpoint_id(network_id, container_id),
        "Gateway": str(ep.gateway) if ep.gateway else "",
        "IPAddress": str(ep.ip) if ep.ip else "", "IPPrefixLen": ep.prefix if ep.ip else 0,
        "IPv6Gateway": str(ep.gateway6) if ep.gateway6 else "",
        "GlobalIPv6Address": str(ep.ip6) if ep.ip6 else "",
        "GlobalIPv6PrefixLen": ep.prefix6 if ep.ip6 else 0,
    })
    return out


def _endpoint_id(network_id: str, container_id: str) -> str:
    return hashlib.sha256(f"ketch endpoint {network_id}/{container_id}".encode()).hexdigest()


def sandbox_id(container_id: str) -> str:
    return hashlib.sha256(f"ketch sandbox {container_id}".encode()).hexdigest()


def network_settings(networks: dict[str, dict[str, Any]], *, ports: dict[str, Any],
                     sandbox_key: str = "", container_id: str = "",
                     default: dict[str, Any] | None = None) -> dict[str, Any]:
    """Docker's NetworkSettings. The deprecated top-level address fields are the
    default ``bridge`` network's endpoint (``default``), as dockerd fills them."""
    top = default or endpoint_settings_json()
    return {
        "Bridge": "", "SandboxID": sandbox_id(container_id) if sandbox_key else "",
        "SandboxKey": sandbox_key, "Ports": ports,
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "EndpointID": top["EndpointID"], "Gateway": top["Gateway"],
        "GlobalIPv6Address": top["GlobalIPv6Address"],
        "GlobalIPv6PrefixLen": top["GlobalIPv6PrefixLen"],
        "IPAddress": top["IPAddress"], "IPPrefixLen": top["IPPrefixLen"],
        "IPv6Gateway": top["IPv6Gateway"], "MacAddress": top["MacAddress"],
        "Networks": networks,
    }


@dataclass
class Attached:
    """One running container's endpoint on one network."""

    network_id: str
    name: str                   # the network's name (the key in Networks)
    endpoint: Endpoint | None   # None on host/none
    dns_names: list[str] = field(default_factory=list)   # lower-cased, for the resolver
    default_route: bool = False  # the container's default route goes through it
    internal: bool = False
    # Its endpoint's Links on a user-defined network (alias -> container name, lower
    # case): names only this container resolves (libnetwork's endpoint aliases).
    links: dict[str, str] = field(default_factory=dict)


def _is_special(mode: str) -> bool:
    return mode in ("host", "none") or mode.startswith("container:")


class Networks:
    """The engine's network side; the resolver of its DNS server."""

    def __init__(self, engine: Engine, opts: NetworkOptions, root: str) -> None:
        from ketch.engine.network import default_bridge_config
        from ketch.network.ipam import DEFAULT_POOLS, parse_address_pools
        from ketch.network.manager import NetworkManager, state_dir

        self.engine = engine
        self.opts = opts
        pools = parse_address_pools(opts.address_pools) if opts.address_pools else DEFAULT_POOLS
        self.manager: NetworkManager = NetworkManager(
            state_dir(root), default_bridge_config(opts, pools), pools=pools, table=opts.table)
        self._lock = threading.RLock()
        self._attached: dict[str, list[Attached]] = {}     # container id -> endpoints
        self._upstreams: dict[str, tuple[list[tuple[str, int]], bool]] = {}
        self._dns: DnsServer | None = None

    # -- start and stop -----------------------------------------------------------------

    def setup(self, running: list[Container]) -> None:
        """Daemon start (in a worker thread): the networks, then what the running
        containers have on them (and their DNS)."""
        removed = self.manager.setup([c.id for c in running])
        for line in removed:
            log.info("network cleanup: %s", line)
        self._unpin_leftovers(running)
        for c in running:
            attached = []
            for name, ep_json in (c.network_settings.get("Networks") or {}).items():
                net_id = ep_json.get("NetworkID") or ""
                try:
                    rec = self.manager.find(net_id or name)
                except KetchError:
                    continue
                ep = self.manager.endpoint(rec.id, c.id)
                attached.append(Attached(rec.id, rec.name, ep, self._dns_names(c, rec, ep_json),
                                         internal=rec.internal, links=_links(rec, ep_json)))
            routed = [a for a in attached if a.endpoint is not None]
            if routed:
                min(routed, key=lambda a: (a.internal, a.name)).default_route = True
            with self._lock:
                self._attached[c.id] = attached
            if c.state.pid and self._needs_dns(attached):
                with contextlib.suppress(KetchError, OSError):
                    self._serve_dns(c, f"/proc/{c.state.pid}/ns/net")

    def close(self) -> None:
        if self._dns is not None:
            self._dns.close()
            self._dns = None
        self.manager.close()

    # -- lookups -----------------------------------------------------------------------

    def find(self, ref: str) -> NetworkRecord:
        return self.manager.find(ref)

    def default_record(self) -> NetworkRecord | None:
        net_id = self.manager.default_id()
        if not net_id:
            return None
        try:
            return self.manager.find(net_id)
        except NotFound:
            return None

    def attached(self, container_id: str) -> list[Attached]:
        with self._lock:
            return list(self._attached.get(container_id, ()))

    def containers_on(self, network_id: str) -> list[tuple[str, Attached]]:
        with self._lock:
            return [(cid, a) for cid, atts in self._attached.items() for a in atts
                    if a.network_id == network_id]

    # -- a container's configuration ---------------------------------------------------

    def configure(self, mode: str, endpoints: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """NetworkSettings.Networks of a new container: NetworkMode's network first,
        then the other endpoints given at create (API 1.44+), each with its config."""
        from ketch.jsonmodel import to_json

        def cfg(ep: Any) -> dict[str, Any]:
            return endpoint_settings_json(to_json(ep) if ep is not None else None)

        out: dict[str, dict[str, Any]] = {}
        if mode.startswith("container:"):
            return out
        given = dict(endpoints or {})
        primary = given.pop(mode, None)
        key = mode
        if not _is_special(mode):
            with contextlib.suppress(KetchError):
                key = self.manager.find(mode).name
            if primary is None and key != mode:
                primary = given.pop(key, None)
        out[key] = cfg(primary)
        for name, ep in given.items():
            out[name] = cfg(ep)
        return out

    # -- plugging a container in -------------------------------------------------------

    def plug(self, c: Container, pid: int, ports: tuple[Any, ...]) -> list[Attached]:
        """Connect a created container (its netns exists, its program has not started)
        to each of its networks (in a worker thread): the default bridge first, then
        the others as configured, interfaces eth0, eth1, ...; the default route through
        the non-internal network whose name sorts first (as dockerd's sandbox picks
        its gateway). On failure nothing is left connected."""
        from ketch.network.endpoint import EndpointRequest

        hc = c.host_config
        mode = hc.get("NetworkMode") or "bridge"
        if mode.startswith("container:"):
            return []
        networks = c.network_settings.get("Networks") or {}
        recs = [(self._find_for_start(name, ep_json), ep_json)
                for name, ep_json in networks.items()]
        default_id = self.manager.default_id()
        recs.sort(key=lambda t: 0 if t[0].id == default_id else 1)
        for rec, ep_json in recs:
            _check_endpoint_config(rec, ep_json)
        route_to = _route_holder([r for r, _ in recs if r.driver not in ("host", "null")])
        netns = f"/proc/{pid}/ns/net"
        attached: list[Attached] = []
        try:
            from ketch.linux.netns import pin

            self._unpin(c.id)            # a leftover of a daemon that died meanwhile
            pin(netns, self.sandbox_key(c.id))
            for rec, ep_json in recs:
                if rec.driver in ("host", "null"):
                    attached.append(Attached(rec.id, rec.name, None))
                    continue
                ipam = ep_json.get("IPAMConfig") or {}
                mac = c.desired_macs.get(rec.name) or (c.config or {}).get("MacAddress") or None
                n = sum(1 for a in attached if a.endpoint is not None)
                req = EndpointRequest(c.id, netns, ifname=f"eth{n}",
                                      ip=ipam.get("IPv4Address") or None,
                                      ip6=ipam.get("IPv6Address") or None,
                                      mac=mac, default_route=rec.id == route_to,
                                      ports=ports if n == 0 else ())
                ep = self._attach(c, rec, req)
                attached.append(Attached(rec.id, rec.name, ep, self._dns_names(c, rec, ep_json),
                                         default_route=req.default_route, internal=rec.internal,
                                         links=_links(rec, ep_json)))
        except BaseException:
            for a in attached:
                with contextlib.suppress(KetchError, OSError):
                    self.manager.detach(a.network_id, c.id)
            self._unpin(c.id)
            raise
        with self._lock:
            self._attached[c.id] = attached
        if self._needs_dns(attached):
            try:
                self._serve_dns(c, netns)
            except BaseException:
                self.unplug(c.id)
                raise
        return attached

    def _find_for_start(self, name: str, ep_json: dict[str, Any]) -> NetworkRecord:
        try:
            return self.manager.find(ep_json.get("NetworkID") or name)
        except NotFound:
            try:
                return self.manager.find(name)
            except NotFound:
                missing = NotFound(f"network {name} not found")
                missing.not_runtime = True  # type: ignore[attr-defined]
                raise missing from None

    def _attach(self, c: Container, rec: NetworkRecord, req: Any) -> Endpoint:
        try:
            return self.manager.attach(rec.id, req)
        except KetchError as exc:
            err = exc
            if "already allocated" in str(exc) or "address already in use" in str(exc):
                from ketch.network.bridge import endpoint_id

                eid = endpoint_id(rec.interface, c.id) if rec.driver == "bridge" \
                    else _endpoint_id(rec.id, c.id)
                err = type(exc)(f"driver failed programming external connectivity on "
                                f"endpoint {c.name} ({eid}): {exc}")
            err.not_runtime = True  # type: ignore[attr-defined]  # worded as dockerd's
            raise err from None

    def unplug(self, container_id: str, *, background: bool = True) -> list[Attached]:
        """Disconnect a container from everything (it stopped); what it was on."""
        with self._lock:
            attached = self._attached.pop(container_id, [])
            self._upstreams.pop(container_id, None)
        if self._dns is not None:
            self._dns.stop(container_id)
        for a in attached:
            if a.endpoint is not None:
                with contextlib.suppress(KetchError, OSError):
                    self.manager.detach(a.network_id, container_id, background=background)
        self._unpin(container_id)
        return attached

    def sandbox_key(self, container_id: str) -> str:
        """Where the container's network namespace is bind-mounted while it runs
        (dockerd's ``<exec-root>/netns/<sandbox id[:12]>``)."""
        import os

        return os.path.join(self.engine.opts.exec_root, "netns", sandbox_id(container_id)[:12])

    def _unpin(self, container_id: str) -> None:
        from ketch.linux.netns import unpin

        with contextlib.suppress(OSError):
            unpin(self.sandbox_key(container_id))

    def _unpin_leftovers(self, running: list[Container]) -> None:
        """At daemon start: the sandbox keys of containers that are gone."""
        import os

        from ketch.linux.netns import unpin

        d = os.path.join(self.engine.opts.exec_root, "netns")
        keep = {os.path.basename(self.sandbox_key(c.id)) for c in running}
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return
        for name in names:
            if name not in keep:
                with contextlib.suppress(OSError):
                    unpin(os.path.join(d, name))

    def connect_running(self, c: Container, rec: NetworkRecord, ep_json: dict[str, Any]
                        ) -> Attached:
        """``network connect`` of a running container: the next interface; the default
        route moves to it if its network's name sorts before the current one's."""
        from ketch.network.endpoint import EndpointRequest
        from ketch.network.manager import route_default_via

        _check_endpoint_config(rec, ep_json, connecting=True)
        current = self.attached(c.id)
        ipam = ep_json.get("IPAMConfig") or {}
        names = {a.endpoint.ifname for a in current if a.endpoint is not None}
        ifname = next(f"eth{i}" for i in range(len(names) + 1) if f"eth{i}" not in names)
        netns = f"/proc/{c.state.pid}/ns/net"
        holder = next((a for a in current if a.default_route), None)
        takes_route = holder is None or (holder.internal, holder.name) > (rec.internal, rec.name)
        req = EndpointRequest(c.id, netns, ifname=ifname,
                              ip=ipam.get("IPv4Address") or None,
                              ip6=ipam.get("IPv6Address") or None,
                              mac=ep_json.get("MacAddress") or None,
                              default_route=takes_route and holder is None)
        ep = self._attach(c, rec, req)
        a = Attached(rec.id, rec.name, ep, self._dns_names(c, rec, ep_json),
                     default_route=takes_route, internal=rec.internal,
                     links=_links(rec, ep_json))
        try:
            if takes_route and holder is not None:
                route_default_via(netns, ep)
                holder.default_route = False
            with self._lock:
                self._attached.setdefault(c.id, []).append(a)
            if self._needs_dns([a]):
                self._serve_dns(c, netns)
        except BaseException:
            self.disconnect_running(c.id, rec.id)
            raise
        return a

    def disconnect_running(self, container_id: str, network_id: str) -> Attached | None:
        from ketch.network.manager import route_default_via

        with self._lock:
            atts = self._attached.get(container_id, [])
            found = next((a for a in atts if a.network_id == network_id), None)
            if found is None:
                return None
            atts.remove(found)
            still_dns = self._needs_dns(atts)
            heir = None
            if found.default_route:
                routed = [a for a in atts if a.endpoint is not None]
                heir = min(routed, key=lambda a: (a.internal, a.name)) if routed else None
        if found.endpoint is not None:
            self.manager.detach(network_id, container_id)
        if heir is not None and heir.endpoint is not None:
            c = self.engine.store.find(container_id)
            if c is not None and c.state.pid:
                with contextlib.suppress(KetchError, OSError):
                    route_default_via(f"/proc/{c.state.pid}/ns/net", heir.endpoint)
                    heir.default_route = True
        if not still_dns and self._dns is not None:
            self._dns.stop(container_id)
        return found

    # -- JSON --------------------------------------------------------------------------

    def settings_running(self, c: Container, attached: list[Attached], pid: int,
                         ports_json: dict[str, Any]) -> dict[str, Any]:
        nets = dict(c.network_settings.get("Networks") or {})
        out: dict[str, dict[str, Any]] = {}
        by_name = {a.name: a for a in attached}
        default_id = self.manager.default_id()
        top = None
        for name, ep_json in nets.items():
            a = by_name.get(name)
            if a is None:
                out[name] = ep_json
                continue
            shown = self._shown_names(c, a)
            out[name] = _run_time(ep_json, a.endpoint, a.network_id, shown, c.id)
            if shown is not None:       # a user-defined network: see with_short_id
                out[name]["Aliases"] = with_short_id(out[name].get("Aliases"), c.id)
            if a.network_id == default_id:
                top = out[name]
        for a in attached:          # connected under another key than configured
            if a.name not in out:
                out[a.name] = _run_time(endpoint_settings_json(), a.endpoint, a.network_id,
                                        self._shown_names(c, a), c.id)
        if not any(a.endpoint is not None for a in attached):
            ports_json = {}         # host and none: nothing published, nothing listed
        mode = c.host_config.get("NetworkMode") or ""
        return network_settings(out, ports=ports_json,
                                sandbox_key="" if mode.startswith("container:")
                                else self.sandbox_key(c.id),
                                container_id=c.id, default=top)

    def _shown_names(self, c: Container, a: Attached) -> list[str] | None:
        rec = None
        with contextlib.suppress(KetchError):
            rec = self.manager.find(a.network_id)
        if rec is None or not rec.user_defined or a.endpoint is None:
            return None
        ep_json = (c.network_settings.get("Networks") or {}).get(a.name) or {}
        return dns_names(c, ep_json.get("Aliases") or [])

    @staticmethod
    def settings_stopped(c: Container, ports_json: dict[str, Any]) -> dict[str, Any]:
        """After a stop: the configuration stays (and the sandbox's ID and key, stale,
        as dockerd leaves them), the run-time fields go."""
        nets = {}
        for name, ep_json in (c.network_settings.get("Networks") or {}).items():
            nets[name] = endpoint_settings_json(ep_json)
            nets[name]["MacAddress"] = c.desired_macs.get(name, "")
        out = network_settings(nets, ports=ports_json)
        out["SandboxID"] = c.network_settings.get("SandboxID", "")
        out["SandboxKey"] = c.network_settings.get("SandboxKey", "")
        return out

    def renamed(self, c: Container) -> None:
        """The container's new name answers in DNS, its old one no more."""
        with self._lock:
            for a in self._attached.get(c.id, []):
                if a.dns_names:
                    ep_json = (c.network_settings.get("Networks") or {}).get(a.name) or {}
                    a.dns_names = [n.lower() for n in dns_names(c, ep_json.get("Aliases") or [])]

    def inspect(self, rec: NetworkRecord, container_names: dict[str, str]) -> dict[str, Any]:
        """``GET /networks/{id}``: Docker's NetworkResource."""
        containers: dict[str, Any] = {}
        for cid, a in self.containers_on(rec.id):
            ep = a.endpoint
            containers[cid] = {
                "Name": container_names.get(cid, cid[:12]),
                "EndpointID": (ep.endpoint_id if ep else "") or _endpoint_id(rec.id, cid),
                "MacAddress": ep.mac if ep else "",
                "IPv4Address": f"{ep.ip}/{ep.prefix}" if ep and ep.ip else "",
                "IPv6Address": f"{ep.ip6}/{ep.prefix6}" if ep and ep.ip6 else "",
            }
        return network_json(rec, containers)

    # -- the embedded DNS server --------------------------------------------------------

    def uses_embedded_dns(self, c: Container) -> bool:
        """Whether a container's resolv.conf points at 127.0.0.11: one of its networks
        is user-defined (as dockerd decides it when it builds the sandbox)."""
        mode = c.host_config.get("NetworkMode") or ""
        if _is_special(mode):
            return False
        for name, ep_json in (c.network_settings.get("Networks") or {}).items():
            with contextlib.suppress(KetchError):
                if self.manager.find(ep_json.get("NetworkID") or name).user_defined:
                    return True
        return False

    def _needs_dns(self, attached: list[Attached]) -> bool:
        for a in attached:
            with contextlib.suppress(KetchError):
                if a.endpoint is not None and self.manager.find(a.network_id).user_defined:
                    return True
        return False

    def _serve_dns(self, c: Container, netns_path: str) -> None:
        self._remember_upstreams(c)
        container_id = c.id
        with self._lock:
            if self._dns is None:
                from ketch.network.dns import DnsServer

                self._dns = DnsServer(self)
                self._dns.start()
            dns = self._dns
        dns.serve(container_id, netns_path)

    def _dns_names(self, c: Container, rec: NetworkRecord, ep_json: dict[str, Any]) -> list[str]:
        if not rec.user_defined:
            return []
        return [n.lower() for n in dns_names(c, ep_json.get("Aliases") or [])]

    def lookup(self, key: str, name: str) -> list[IPAddr] | None:
        name = name.rstrip(".").lower()
        with self._lock:
            mine = self._attached.get(key, [])
            for a in mine:
                if a.endpoint is None or not a.dns_names:
                    continue
                wanted = name
                suffix = "." + a.name.lower()
                if wanted.endswith(suffix):
                    wanted = wanted[:-len(suffix)]
                wanted = a.links.get(wanted, wanted)
                found: list[IPAddr] = []
                for _cid, atts in self._attached.items():
                    for b in atts:
                        if b.network_id != a.network_id or b.endpoint is None:
                            continue
                        if wanted in b.dns_names:
                            if b.endpoint.ip is not None:
                                found.append(b.endpoint.ip)
                            if b.endpoint.ip6 is not None:
                                found.append(b.endpoint.ip6)
                if found:
                    return found
        return None

    def reverse(self, key: str, ip: IPAddr) -> str | None:
        with self._lock:
            mine = {a.network_id for a in self._attached.get(key, []) if a.dns_names}
            for _cid, atts in self._attached.items():
                for b in atts:
                    if b.network_id in mine and b.endpoint is not None and b.dns_names \
                            and ip in (b.endpoint.ip, b.endpoint.ip6):
                        return f"{b.dns_names[0]}.{b.name}"
        return None

    def upstreams(self, key: str) -> list[tuple[str, int]]:
        with self._lock:
            return self._upstreams.get(key, ([], False))[0]

    def ndots_set(self, key: str) -> bool:
        with self._lock:
            return self._upstreams.get(key, ([], False))[1]

    def _remember_upstreams(self, c: Container) -> None:
        """What the DNS thread forwards to for ``c`` (its --dns, else the host's IPv4
        resolvers), and whether it set a positive ndots; taken when it joins, so the
        DNS thread never reads the store or files."""
        from ketch.network import etcfiles

        servers = list(c.host_config.get("Dns") or [])
        if not servers:
            servers = etcfiles.nameservers(etcfiles.read_host_resolv_conf())
        v4 = [(s, 53) for s in servers if ":" not in s]
        ndots = any(o.startswith("ndots:") and o[6:].isdigit() and int(o[6:]) > 0
                    for o in c.host_config.get("DnsOptions") or [])
        with self._lock:
            self._upstreams[c.id] = (v4, ndots)


class NetworkAPI:
    """``/networks``: what the router calls (async; kernel work in worker threads)."""

    def __init__(self, engine: Engine,
                 log: Callable[[str, str, str, dict[str, str]], object] | None = None) -> None:
        """``log``: the event bus's ``log(action, type, actor id, attributes)``."""
        self.engine = engine
        self.nets = engine.networks
        self._log = log

    def on_event(self, action: str, rec: NetworkRecord, container_id: str = "") -> None:
        if self._log is not None:
            attrs = {"container": container_id} if container_id else {}
            self._log(action, "network", rec.id, {**attrs, "name": rec.name,
                                                  "type": rec.driver})

    def _names(self) -> dict[str, str]:
        return {c.id: c.name.lstrip("/") for c in self.engine.store.all()}

    async def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        spec = parse_create(doc)
        rec = await asyncio.to_thread(self.nets.manager.create, spec)
        self.on_event("create", rec)
        return {"Id": rec.id, "Warning": ""}

    async def inspect(self, ref: str) -> dict[str, Any]:
        rec = self.nets.find(ref)
        return self.nets.inspect(rec, self._names())

    async def listing(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        out = []
        for rec in sorted(self.nets.manager.records(), key=lambda r: r.created):
            doc = network_json(rec, {})
            if _matches(doc, rec, filters, bool(self.nets.containers_on(rec.id))):
                out.append(doc)
        return out

    async def remove(self, ref: str) -> None:
        rec = self.nets.find(ref)
        busy = bool(self.nets.containers_on(rec.id))
        await asyncio.to_thread(self.nets.manager.remove, rec.id, has_containers=busy)
        self.on_event("destroy", rec)

    async def prune(self, filters: dict[str, list[str]]) -> list[str]:
        from ketch import filters as flt

        flt.check_names(filters, flt.NETWORK_PRUNE)
        until = flt.prune_until(filters)
        deleted = []
        for rec in sorted(self.nets.manager.records(), key=lambda r: r.name):
            if rec.predefined or self.nets.containers_on(rec.id):
                continue
            if until is not None and rec.created / 1e9 >= until:
                continue
            if not flt.match_labels(filters, rec.labels):
                continue
            try:
                await self.remove(rec.id)
            except KetchError as exc:       # in use meanwhile: dockerd skips it too
                log.info("network prune: %s: %s", rec.name, exc)
                continue
            deleted.append(rec.name)
        if self._log is not None:
            self._log("prune", "network", "", {"reclaimed": "0"})
        return deleted

    async def connect(self, ref: str, container: str, ep_cfg: dict[str, Any]) -> None:
        rec = self.nets.find(ref)
        c = self.engine.store.get(container)
        async with self.engine._lock(c.id):
            c = self.engine.store.get(c.id)
            mode = c.host_config.get("NetworkMode") or ""
            if mode.startswith("container:"):
                raise Forbidden("container sharing network namespace with another container "
                                "or host cannot be connected to any other network")
            if mode == "host" or rec.driver == "host":
                raise InvalidArgument("container cannot be disconnected from host network or "
                                      "connected to host network")
            if mode == "none" or rec.driver == "null":
                raise InvalidArgument("container cannot be connected to multiple networks "
                                      "with one of the networks in private (none) mode")
            nets = dict(c.network_settings.get("Networks") or {})
            if rec.name in nets:
                raise Forbidden(f"endpoint with name {c.name.lstrip('/')} already exists in "
                                f"network {rec.name}")
            cfg = endpoint_settings_json(ep_cfg)
            if rec.user_defined:
                cfg["Aliases"] = with_short_id(cfg.get("Aliases"), c.id)
            if cfg.get("MacAddress"):
                c.desired_macs[rec.name] = cfg["MacAddress"]
            if c.state.status in ("running", "paused"):
                cfg["NetworkID"] = rec.id
                await asyncio.to_thread(self.nets.connect_running, c, rec, cfg)
                nets[rec.name] = cfg
                c.network_settings["Networks"] = nets
                c.network_settings = self.nets.settings_running(
                    c, self.nets.attached(c.id), c.state.pid,
                    c.network_settings.get("Ports") or {})
                await asyncio.to_thread(self.engine.rewrite_network_files, c)
            else:
                nets[rec.name] = cfg
                c.network_settings["Networks"] = nets
            await asyncio.to_thread(self.engine.store.save, c)
        self.on_event("connect", rec, c.id)

    async def disconnect(self, ref: str, container: str, force: bool) -> None:
        c = self.engine.store.get(container)
        try:
            rec = self.nets.find(ref)
        except NotFound:
            if not force:
                raise
            rec = None
        async with self.engine._lock(c.id):
            c = self.engine.store.get(c.id)
            nets = dict(c.network_settings.get("Networks") or {})
            name = rec.name if rec is not None else ref
            mode = c.host_config.get("NetworkMode") or ""
            if rec is not None and (rec.driver == "host" or mode == "host"):
                raise InvalidArgument("container cannot be disconnected from host network or "
                                      "connected to host network")
            if name not in nets:
                raise System(f"container {c.id} is not connected to network {name}")
            if rec is not None and c.state.status in ("running", "paused"):
                await asyncio.to_thread(self.nets.disconnect_running, c.id, rec.id)
            del nets[name]
            c.desired_macs.pop(name, None)
            c.network_settings["Networks"] = nets
            if c.state.status in ("running", "paused"):
                c.network_settings = self.nets.settings_running(
                    c, self.nets.attached(c.id), c.state.pid,
                    c.network_settings.get("Ports") or {})
                await asyncio.to_thread(self.engine.rewrite_network_files, c)
            await asyncio.to_thread(self.engine.store.save, c)
        if rec is not None:
            self.on_event("disconnect", rec, c.id)


def parse_create(doc: dict[str, Any]) -> Any:
    """``POST /networks/create``'s body as a NetworkSpec, with dockerd's refusals."""
    from ketch.network.manager import NetworkSpec
    from ketch.network.store import IPAMConfig

    name = doc.get("Name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument("network name is required") if not name else \
            InvalidArgument("invalid JSON: Name must be a string")
    if doc.get("ConfigOnly") or (doc.get("ConfigFrom") or {}).get("Network"):
        raise NotSupported("config-only networks and --config-from are not supported")
    if doc.get("Ingress"):
        raise Forbidden("Ingress network can only be global scope network")
    if (doc.get("Scope") or "local") != "local":
        raise Forbidden("cannot create a swarm scoped network when swarm is not active")
    ipam = doc.get("IPAM") or {}
    configs = []
    for item in ipam.get("Config") or []:
        if not isinstance(item, dict):
            raise InvalidArgument("invalid JSON: IPAM.Config entries must be objects")
        configs.append(IPAMConfig(str(item.get("Subnet") or ""), str(item.get("Gateway") or ""),
                                  str(item.get("IPRange") or ""),
                                  {str(k): str(v) for k, v in
                                   (item.get("AuxiliaryAddresses") or {}).items()}))
    for cfg in configs:
        if not cfg.subnet:
            raise InvalidArgument("ketch networks need a subnet in each IPAM config")
    return NetworkSpec(name=name, driver=str(doc.get("Driver") or "bridge"),
                       internal=bool(doc.get("Internal")), attachable=bool(doc.get("Attachable")),
                       enable_ipv6=bool(doc.get("EnableIPv6")),
                       ipam_driver=str(ipam.get("Driver") or "default"),
                       ipam_options={str(k): str(v) for k, v in
                                     (ipam.get("Options") or {}).items()},
                       ipam=configs,
                       options={str(k): str(v) for k, v in (doc.get("Options") or {}).items()},
                       labels={str(k): str(v) for k, v in (doc.get("Labels") or {}).items()})


def _matches(doc: dict[str, Any], rec: NetworkRecord, filters: dict[str, list[str]],
             in_use: bool) -> bool:
    import re

    from ketch import filters as flt

    flt.check_names(filters, ("driver", "name", "id", "scope", "type", "label", "dangling"))
    for key, values in filters.items():
        if key == "driver" and rec.driver not in values:
            return False
        if key == "name" and not any(re.search(v, rec.name) for v in values):
            return False
        if key == "id" and not any(re.search(v, rec.id) for v in values):
            return False
        if key == "scope" and "local" not in values:
            return False
        if key == "type":
            for v in values:
                if v not in ("custom", "builtin"):
                    raise InvalidArgument(f"invalid filter: 'type'='{v}'")
            kind = "builtin" if rec.predefined else "custom"
            if kind not in values:
                return False
        if key == "label" and not flt.match_kv_list(values, rec.labels):
            return False
        if key == "dangling" and flt.bool_filter(filters, "dangling", False) == (
                in_use or rec.predefined):
            return False
    return True


def with_short_id(aliases: list[str] | None, container_id: str) -> list[str]:
    """The stored Aliases of a user-defined network's endpoint end with the short
    container ID once it joined (or was connected), as dockerd keeps them; API 1.45
    and later show them without it (``strip_short_id``)."""
    out = list(aliases or [])
    if container_id[:12] not in out:
        out.append(container_id[:12])
    return out


def _route_holder(recs: list[NetworkRecord]) -> str | None:
    """Which network gives the default route: the first by name among those not
    internal, else among the internal ones (dockerd 20.10 routes through an
    internal network when it is all a container has)."""
    if not recs:
        return None
    return min(recs, key=lambda r: (r.internal, r.name)).id


def _links(rec: NetworkRecord, ep_json: dict[str, Any]) -> dict[str, str]:
    return link_aliases(ep_json.get("Links") or []) if rec.user_defined else {}


def link_aliases(links: list[str]) -> dict[str, str]:
    """An endpoint's ``Links`` ("name:alias", as ``--link`` with a user-defined network
    or docker-compose v1's ``links:`` give them) as alias -> container name, the way
    moby's ParseLink reads them (leading slashes dropped, the alias's last part)."""
    out: dict[str, str] = {}
    for link in links:
        name, _, alias = link.partition(":")
        name = name.strip("/")
        alias = (alias or name).rstrip("/").rsplit("/", 1)[-1]
        if name and alias:
            out[alias.lower()] = name.lower()
    return out


def dns_names(c: Container, aliases: list[str]) -> list[str]:
    """Docker's DNSNames (API 1.44+) of an endpoint on a user-defined network: the
    container's name, its aliases, its short ID and its hostname (moby's
    buildEndpointDNSNames; dockerd 20.10 added the hostname to the aliases)."""
    out: list[str] = []
    hostname = str((c.config or {}).get("Hostname") or "")
    for n in (c.name.lstrip("/"), *aliases, c.id[:12], hostname):
        if n and n not in out:
            out.append(n)
    return out


def network_json(rec: NetworkRecord, containers: dict[str, Any] | None) -> dict[str, Any]:
    from ketch.engine.files import go_time

    return {
        "Name": rec.name, "Id": rec.id, "Created": go_time(rec.created),
        "Scope": "local", "Driver": rec.driver, "EnableIPv6": rec.enable_ipv6,
        "IPAM": {"Driver": rec.ipam_driver,
                 "Options": None if rec.predefined else dict(rec.ipam_options),
                 "Config": [c.to_json() for c in rec.ipam]},
        "Internal": rec.internal, "Attachable": rec.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": containers if containers is not None else {},
        "Options": dict(rec.options), "Labels": dict(rec.labels),
    }


def _check_endpoint_config(rec: NetworkRecord, ep_json: dict[str, Any], *,
                           connecting: bool = False) -> None:
    """dockerd's checks of an endpoint's configuration against its network, made when
    the container joins it (at start, or ``network connect``)."""
    ipam = ep_json.get("IPAMConfig") or {}
    err: KetchError | None = None
    if ipam.get("IPv4Address") or ipam.get("IPv6Address"):
        if not rec.user_defined:
            err = InvalidArgument("user specified IP address is supported on user defined "
                                  "networks only")
        elif not rec.user_subnets:
            err = InvalidArgument("user specified IP address is supported only when "
                                  "connecting to networks with user configured subnets")
    if err is None and ep_json.get("Aliases") and not rec.user_defined:
        err = InvalidArgument("network-scoped alias is supported only for containers in "
                              "user defined networks")
    if err is not None:
        if not connecting:
            err.not_runtime = True  # type: ignore[attr-defined]
        raise err


__all__ = ["Attached", "Conflict", "Networks", "network_json"]
