"""The engine's side of networking: which network a container gets, and what
``inspect`` and ``ps`` say about it.

The kernel work (bridge, veth, addresses, nftables DNAT for ``-p``) is
``ketch.network``; this module holds the daemon's network options and turns
``-p``/``-P`` into port specs and NetworkSettings.Ports into ``ps``' entries.
The networks themselves are ``ketch.engine.networks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch.errors import InvalidArgument, NotSupported

if TYPE_CHECKING:
    from ketch.engine import model
    from ketch.network.bridge import BridgeConfig
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
    ipv6: bool = False              # --ipv6 with --fixed-cidr-v6: the default network's
    fixed_cidr_v6: str | None = None

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
            if ":" in host_ip and (proto or "tcp") == "sctp":
                # relayed by the userland proxy, which ketch has for TCP and UDP
                raise NotSupported(f"publishing {proto} on an IPv6 address is not supported")
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


def default_bridge_config(opts: NetworkOptions, pools: Any) -> BridgeConfig | None:
    """The default network's settings, or None when daemon.json says ``"bridge": "none"``."""
    if opts.bridge == "none":
        return None
    from ketch.network.bridge import BridgeConfig

    return BridgeConfig(name=opts.bridge, table=opts.table, bip=opts.bip,
                        address_pools=pools, icc=opts.icc,
                        subnet6=opts.fixed_cidr_v6 if opts.ipv6 else None)
