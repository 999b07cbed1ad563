"""What a bridge network created, persisted as one JSON file per bridge in the
daemon's state dir, so a restarted daemon keeps its addresses and ports and can
remove exactly what it made.

Written as ``jsonfiles`` writes: whole, then renamed.
An endpoint is recorded BEFORE its interfaces and rules are created, so a crash
in between leaves a record that cleanup can act on, never an unrecorded veth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ketch.network import jsonfiles
from ketch.network.ports import PortMapping

VERSION = 1


@dataclass
class EndpointRecord:
    container_id: str
    ip: str
    mac: str
    host_veth: str
    ports: list[PortMapping] = field(default_factory=list)
    hostname: str = ""
    aliases: list[str] = field(default_factory=list)
    # detached, its veth being deleted in the background: the address stays taken
    # until the interface is gone
    removing: bool = False
    ip6: str = ""
    ifname: str = "eth0"
    default_route: bool = True

    def to_json(self) -> dict[str, object]:
        return {"container_id": self.container_id, "ip": self.ip, "mac": self.mac,
                "host_veth": self.host_veth, "ports": [p.to_json() for p in self.ports],
                "hostname": self.hostname, "aliases": list(self.aliases),
                "removing": self.removing, "ip6": self.ip6, "ifname": self.ifname,
                "default_route": self.default_route}

    @classmethod
    def from_json(cls, d: dict) -> EndpointRecord:
        return cls(d["container_id"], d["ip"], d["mac"], d["host_veth"],
                   [PortMapping.from_json(p) for p in d.get("ports", [])],
                   d.get("hostname", ""), list(d.get("aliases", [])),
                   bool(d.get("removing", False)), d.get("ip6", ""), d.get("ifname", "eth0"),
                   bool(d.get("default_route", True)))


@dataclass
class NetworkState:
    bridge: str
    table: str
    subnet: str = ""
    gateway: str = ""
    created_bridge: bool = False
    # sysctl key -> value before ketch changed it (only keys ketch did change)
    sysctls_changed: dict[str, str] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    subnet6: str = ""
    gateway6: str = ""
    network_id: str = ""     # "" for the default network

    def to_json(self) -> dict[str, object]:
        return {"version": VERSION, "bridge": self.bridge, "table": self.table,
                "subnet": self.subnet, "gateway": self.gateway,
                "created_bridge": self.created_bridge,
                "sysctls_changed": dict(self.sysctls_changed),
                "endpoints": {k: e.to_json() for k, e in self.endpoints.items()},
                "subnet6": self.subnet6, "gateway6": self.gateway6,
                "network_id": self.network_id}

    @classmethod
    def from_json(cls, d: dict) -> NetworkState:
        return cls(d["bridge"], d["table"], d.get("subnet", ""), d.get("gateway", ""),
                   bool(d.get("created_bridge")), dict(d.get("sysctls_changed", {})),
                   {k: EndpointRecord.from_json(e) for k, e in d.get("endpoints", {}).items()},
                   d.get("subnet6", ""), d.get("gateway6", ""), d.get("network_id", ""))


PREFIX = "bridge"


def state_path(state_dir: str, bridge: str) -> str:
    return jsonfiles.path(state_dir, PREFIX, bridge)


def load(state_dir: str, bridge: str) -> NetworkState | None:
    doc = jsonfiles.load(state_dir, PREFIX, bridge)
    return None if doc is None else NetworkState.from_json(doc)


def load_all(state_dir: str) -> list[NetworkState]:
    return [NetworkState.from_json(d) for d in jsonfiles.load_all(state_dir, PREFIX)]


def save(state_dir: str, st: NetworkState) -> None:
    jsonfiles.save(state_dir, PREFIX, st.bridge, st.to_json())


def remove(state_dir: str, bridge: str) -> None:
    jsonfiles.remove(state_dir, PREFIX, bridge)
