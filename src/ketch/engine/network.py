"""The engine's side of networking: which network a container gets, and what
``inspect`` and ``ps`` say about it.

The kernel work (bridge, veth, addresses, nftables DNAT for ``-p``) is
``ketch.network.bridge``; this module turns a container's HostConfig into
that library's calls and its answers back into Docker's ``NetworkSettings``.
Only the default ``bridge`` network exists so far (user networks are the
next issue), next to ``none``, ``host`` and ``container:<id>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch.errors import InvalidArgument, NotSupported

if TYPE_CHECKING:
    from ketch.engine import model
    from ketch.network.bridge import BridgeNetwork, Endpoint
    from ketch.network.ports import PortSpec

DEFAULT_BRIDGE = "ketch0"


@dataclass(slots=True)
class NetworkOptions:
    """daemon.json's ``bridge`` (the default network's interface, "none" for no
    default network), ``bip``, ``default-address-pools`` and ``icc``."""

    bridge: str = DEFAULT_BRIDGE
    bip: str | None = None
    address_pools: list[dict[str, Any]] = field(default_factory=list)
    icc: bool = True

    @property
    def table(self) -> str:
        """ketch's own nftables table; a non-default bridge gets its own."""
        return "ketch" if self.bridge == DEFAULT_BRIDGE else f"ketch_{self.bridge}"


def port_specs(hc: model.HostConfig, exposed: dict[str, Any] | None) -> list[PortSpec]:
    """``-p`` (HostConfig.PortBindings) and ``-P`` (PublishAllPorts over ExposedPorts)."""
    from ketch.network.ports import PortSpec, parse_port_range, publish_all

    specs: list[PortSpec] = []
    for key, bindings in (hc.port_bindings or {}).items():
        port, _, proto = key.partition("/")
        try:
            start, end = parse_port_range(port)
        except ValueError:
            raise InvalidArgument(f"invalid containerPort: {port}") from None
        from ketch.engine.model import PortBinding

        for b in bindings or [PortBinding()]:
            host_ip, host_port = b.host_ip or "", b.host_port or ""
            hs, he = (0, 0)
            if host_port:
                try:
                    hs, he = parse_port_range(host_port)
                except ValueError:
                    raise InvalidArgument(f"invalid hostPort: {host_port}") from None
            if ":" in host_ip:
                raise NotSupported("publishing on an IPv6 address is not supported yet")
            for i, p in enumerate(range(start, end + 1)):
                # A range maps one to one; a single host port or range for one container
                # port is the range to choose from.
                if end > start and he > hs:
                    specs.append(PortSpec(p, proto or "tcp", host_ip, hs + i, hs + i))
                else:
                    specs.append(PortSpec(p, proto or "tcp", host_ip, hs, he))
    if hc.publish_all_ports and exposed:
        specs += publish_all(list(exposed), specs)
    return specs


def _endpoint_json(ep: Endpoint | None, network_id: str = "") -> dict[str, Any]:
    return {
        "IPAMConfig": None, "Links": None, "Aliases": None,
        "MacAddress": ep.mac if ep else "", "DriverOpts": None, "NetworkID": network_id,
        "EndpointID": ep.host_veth if ep else "", "Gateway": str(ep.gateway) if ep else "",
        "IPAddress": str(ep.ip) if ep else "", "IPPrefixLen": ep.prefix if ep else 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


def settings(mode: str, ep: Endpoint | None, exposed: dict[str, Any] | None,
             sandbox_key: str = "", network_id: str = "") -> dict[str, Any]:
    """Docker's ``NetworkSettings`` for a container on ``mode``; ``network_id`` is the
    default network's (``events.bridge_network_id``) while the container is on it."""
    from ketch.network.ports import ports_json

    name = {"default": "bridge"}.get(mode, mode)
    networks: dict[str, Any] = {}
    if not mode.startswith("container:"):
        networks[name] = _endpoint_json(ep if name == "bridge" else None,
                                        network_id if name == "bridge" and ep else "")
    top = _endpoint_json(ep if name == "bridge" else None)
    return {
        "Bridge": "", "SandboxID": "", "SandboxKey": sandbox_key,
        "Ports": ports_json(ep.ports if ep else (), list(exposed or {})),
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "EndpointID": top["EndpointID"], "Gateway": top["Gateway"],
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "IPAddress": top["IPAddress"], "IPPrefixLen": top["IPPrefixLen"],
        "IPv6Gateway": "", "MacAddress": top["MacAddress"], "Networks": networks,
    }


def ps_ports(network_settings: dict[str, Any]) -> list[dict[str, Any]]:
    """``ps``' Ports entries from NetworkSettings.Ports, as dockerd lists them."""
    out: list[dict[str, Any]] = []
    for key, bindings in (network_settings.get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        if not bindings:
            out.append({"PrivatePort": int(port), "Type": proto})
            continue
        for b in bindings:
            out.append({"IP": b.get("HostIp", ""), "PrivatePort": int(port),
                        "PublicPort": int(b.get("HostPort") or 0), "Type": proto})
    return out


def make_bridge(root: str, opts: NetworkOptions) -> BridgeNetwork | None:
    """The default network, or None when daemon.json says ``"bridge": "none"``."""
    if opts.bridge == "none":
        return None
    from ketch.network.bridge import BridgeConfig, BridgeNetwork
    from ketch.network.ipam import DEFAULT_POOLS, parse_address_pools

    pools = parse_address_pools(opts.address_pools) if opts.address_pools else DEFAULT_POOLS
    config = BridgeConfig(name=opts.bridge, table=opts.table, bip=opts.bip,
                          address_pools=pools, icc=opts.icc)
    return BridgeNetwork(os.path.join(root, "network"), config)
