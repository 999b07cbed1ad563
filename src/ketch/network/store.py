"""The networks a daemon has: one JSON file per network under the network state
dir (``net-<id>.json``, see ``jsonfiles``), next to the drivers' kernel state.

A record is what ``docker network create`` asked for, with what was decided
then (the subnet picked from the pools, the gateway, the bridge's name): the
same network comes back after a restart. The predefined ``bridge``, ``host``
and ``none`` are records too, made at the first start.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ketch.network import jsonfiles

PREDEFINED = ("bridge", "host", "none")
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


@dataclass
class IPAMConfig:
    subnet: str
    gateway: str = ""
    ip_range: str = ""
    aux_addresses: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return 6 if ":" in self.subnet else 4

    def to_json(self) -> dict[str, Any]:
        """Docker's IPAM.Config entry: only the keys that have a value."""
        out: dict[str, Any] = {"Subnet": self.subnet}
        if self.ip_range:
            out["IPRange"] = self.ip_range
        if self.gateway:
            out["Gateway"] = self.gateway
        if self.aux_addresses:
            out["AuxiliaryAddresses"] = dict(self.aux_addresses)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IPAMConfig:
        return cls(d.get("Subnet", ""), d.get("Gateway", ""), d.get("IPRange", ""),
                   dict(d.get("AuxiliaryAddresses") or {}))


@dataclass
class NetworkRecord:
    id: str
    name: str
    driver: str                       # bridge, macvlan, ipvlan, host, null
    created: int                      # ns since the epoch
    enable_ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam: list[IPAMConfig] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    interface: str = ""               # the bridge's name, for bridge networks
    user_subnets: bool = False        # IPAM config given at create (static --ip allowed)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED and (self.driver in ("host", "null")
                                           or self.options.get(
                                               "com.docker.network.bridge.default_bridge")
                                           == "true")

    @property
    def user_defined(self) -> bool:
        """Docker's IsUserDefined: embedded DNS and network-scoped aliases."""
        return not self.predefined

    def ipam_v4(self) -> IPAMConfig | None:
        return next((c for c in self.ipam if c.version == 4), None)

    def ipam_v6(self) -> IPAMConfig | None:
        return next((c for c in self.ipam if c.version == 6), None)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "driver": self.driver,
                "created": self.created, "enable_ipv6": self.enable_ipv6,
                "internal": self.internal, "attachable": self.attachable,
                "ipam_driver": self.ipam_driver, "ipam_options": dict(self.ipam_options),
                "ipam": [c.to_json() for c in self.ipam], "options": dict(self.options),
                "labels": dict(self.labels), "interface": self.interface,
                "user_subnets": self.user_subnets}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NetworkRecord:
        return cls(d["id"], d["name"], d["driver"], int(d["created"]), bool(d.get("enable_ipv6")),
                   bool(d.get("internal")), bool(d.get("attachable")),
                   d.get("ipam_driver", "default"), dict(d.get("ipam_options") or {}),
                   [IPAMConfig.from_json(c) for c in d.get("ipam", [])],
                   dict(d.get("options") or {}), dict(d.get("labels") or {}),
                   d.get("interface", ""), bool(d.get("user_subnets")))


def predefined_id(name: str, interface: str = "") -> str:
    """IDs of the predefined networks, stable across restarts: the default bridge's
    depends on its interface (two daemons with different bridges differ)."""
    seed = f"ketch network bridge {interface}" if name == "bridge" else f"ketch network {name}"
    return hashlib.sha256(seed.encode()).hexdigest()


PREFIX = "net"


def load_all(state_dir: str) -> list[NetworkRecord]:
    return [NetworkRecord.from_json(d) for d in jsonfiles.load_all(state_dir, PREFIX)]


def save(state_dir: str, rec: NetworkRecord) -> None:
    jsonfiles.save(state_dir, PREFIX, rec.id, rec.to_json())


def remove(state_dir: str, network_id: str) -> None:
    jsonfiles.remove(state_dir, PREFIX, network_id)
