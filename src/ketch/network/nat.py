"""ketch's nftables table: the text of its rules, nothing else (no kernel here).

Everything lives in ONE table of family ``inet`` (default name ``ketch``), shared
by every bridge network of the daemon; no other table or chain is ever read or
written, so the host's own firewall and other engines' rules stay as they are.
Layout::

    table inet ketch {
      set bridges   { type ifname }                   # every ketch bridge
      map pub_any   { inet_proto . inet_service : ipv4_addr . inet_service }
      map pub_ip    { ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
      chain prerouting  { nat hook prerouting  dstnat; fib daddr type local jump publish }
      chain output      { nat hook output      -100;   fib daddr type local jump publish }
      chain publish     { dnat via pub_ip (host ip given), then via pub_any (0.0.0.0) }
      chain postrouting { nat hook postrouting srcnat;
                          loopback sources into a bridge -> masquerade (route_localnet),
                          DNATed traffic from the subnet back into it -> masquerade
                          (hairpin: replies then come back through the host),
                          the subnet going out another interface -> masquerade
                          (IPv4 and IPv6), except for internal networks }
      chain forward     { filter hook forward; nothing in or out of an internal
                          network but between its own ports; published ports
                          (DNATed) from anywhere; isolation between ketch bridges,
                          intra-bridge drop when icc is off }
    }

A published port is one map element, keyed by (host ip,) proto and host port;
removing a container's ports is deleting exactly its elements, no handles to
track. The table is (re)written whole in one transaction when a network comes or
goes, from the persisted state, so a restarted daemon gets the same rules.
Published ports are IPv4 (host addresses and container addresses).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ketch.network.ports import PortMapping

FAMILY = "inet"
# ketch before IPv6 kept its table in family ip: a leftover of that name is removed too
LEGACY_FAMILY = "ip"


@dataclass(frozen=True, slots=True)
class BridgeRules:
    name: str
    subnet: str          # "172.17.0.0/16"
    icc: bool = True
    internal: bool = False
    subnet6: str = ""    # "fd00:1::/64" on IPv6 networks
    masquerade: bool = True   # com.docker.network.bridge.enable_ip_masquerade


def _q(name: str) -> str:
    return '"' + name.replace('"', "") + '"'


def element_key(m: PortMapping) -> tuple[str, str]:
    """(map, key) of a published port."""
    if m.host_ip in ("", "0.0.0.0"):
        return "pub_any", f"{m.proto} . {m.host_port}"
    return "pub_ip", f"{m.host_ip} . {m.proto} . {m.host_port}"


def element(m: PortMapping, container_ip: str) -> tuple[str, str]:
    name, key = element_key(m)
    return name, f"{key} : {container_ip} . {m.container_port}"


def table_script(table: str, bridges: Iterable[BridgeRules],
                 published: Iterable[tuple[PortMapping, str]] = ()) -> str:
    """The whole table, replacing any previous version atomically."""
    bridges = list(bridges)
    any_elems: list[str] = []
    ip_elems: list[str] = []
    for m, cip in published:
        name, elem = element(m, cip)
        (any_elems if name == "pub_any" else ip_elems).append(elem)

    def elements(items: list[str]) -> str:
        return f" elements = {{ {', '.join(items)} }};" if items else ""

    post = ["ip saddr 127.0.0.0/8 oifname @bridges masquerade"]
    forward: list[str] = []
    # First the internal networks' walls, then a published port reached through a host
    # address (DNATed) passes from any network (dockerd's proxy serves those), then
    # the isolation between networks.
    walls: list[str] = []
    for b in bridges:
        name = _q(b.name)
        if b.internal:
            # nothing leaves or enters but between the network's own ports
            walls.append(f"iifname {name} oifname != {name} drop")
            walls.append(f"oifname {name} iifname != {name} drop")
        else:
            # Hairpin: a container reaching a published port through a host address,
            # the DNATed connection going back into the same subnet (to another
            # container or to itself). Matched on addresses, not interfaces: with
            # br_netfilter loaded the kernel bridges such packets directly and the
            # interface names differ.
            post.append(f"ct status dnat ip saddr {b.subnet} ip daddr {b.subnet} masquerade")
            if b.masquerade:
                post.append(f"ip saddr {b.subnet} oifname != {name} masquerade")
                if b.subnet6:
                    post.append(f"ip6 saddr {b.subnet6} oifname != {name} masquerade")
            forward.append(f"iifname {name} oifname @bridges oifname != {name} drop")
        if not b.icc:
            forward.append(f"iifname {name} oifname {name} drop")
    lines = [
        f"add table {LEGACY_FAMILY} {table}",
        f"delete table {LEGACY_FAMILY} {table}",
        f"add table {FAMILY} {table}",
        f"delete table {FAMILY} {table}",
        f"table {FAMILY} {table} {{",
        f"  set bridges {{ type ifname;{elements([_q(b.name) for b in bridges])} }}",
        "  map pub_any { type inet_proto . inet_service : ipv4_addr . inet_service;"
        f"{elements(any_elems)} }}",
        "  map pub_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;"
        f"{elements(ip_elems)} }}",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump publish",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump publish",
        "  }",
        "  chain publish {",
        "    meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub_ip",
        "    meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pub_any",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *(f"    {r}" for r in post),
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        *(f"    {r}" for r in walls),
        "    ct status dnat accept",
        *(f"    {r}" for r in forward),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def add_elements_script(table: str, published: Iterable[tuple[PortMapping, str]]) -> str:
    return "".join(f"add element {FAMILY} {table} {name} {{ {elem} }}\n"
                   for name, elem in (element(m, cip) for m, cip in published))


def delete_elements_script(table: str, mappings: Iterable[PortMapping]) -> str:
    return "".join(f"delete element {FAMILY} {table} {name} {{ {key} }}\n"
                   for name, key in (element_key(m) for m in mappings))


def delete_table_script(table: str) -> str:
    return "".join(f"add table {fam} {table}\ndelete table {fam} {table}\n"
                   for fam in (LEGACY_FAMILY, FAMILY))
