"""ketch's nftables table in the kernel, shared by every bridge network of a daemon.

``nat.py`` writes the text; this keeps what the table must hold (the bridges'
rules and the published ports) and applies changes: a network coming or going
rewrites the whole table in one transaction (rare, and isolation rules name
every bridge), a container's ports are single map elements added and deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from ketch.linux.nftables import Nft, NftError
from ketch.network import nat
from ketch.network.ports import PortMapping, is_v6


class Firewall:
    def __init__(self, table: str, nft: Nft | None = None) -> None:
        self.table = table
        self._nft = nft
        self._lock = threading.Lock()
        self._bridges: dict[str, nat.BridgeRules] = {}
        self._published: dict[tuple[str, str, int], tuple[PortMapping, str]] = {}

    @property
    def nft(self) -> Nft:
        if self._nft is None:
            self._nft = Nft()
        return self._nft

    @staticmethod
    def _key(m: PortMapping) -> tuple[str, str, int]:
        return (m.host_ip or "0.0.0.0", m.proto, m.host_port)

    def remember(self, published: Iterable[tuple[PortMapping, str]]) -> None:
        """Ports already in the kernel (a restarted daemon's endpoints): kept in the
        next rewrite, not added now."""
        with self._lock:
            for m, ip in _natted(published):
                self._published[self._key(m)] = (m, ip)

    def set_bridge(self, rules: nat.BridgeRules) -> None:
        with self._lock:
            self._bridges[rules.name] = rules
            self._rewrite()

    def remove_bridge(self, name: str, mappings: Sequence[PortMapping] = ()) -> None:
        """Forget a bridge (and ports still recorded for it); the last one takes the
        table with it."""
        with self._lock:
            self._bridges.pop(name, None)
            for m in mappings:
                self._published.pop(self._key(m), None)
            if self._bridges:
                self._rewrite()
            else:
                self._published.clear()
                self.nft.run(nat.delete_table_script(self.table))

    def _rewrite(self) -> None:
        self.nft.run(nat.table_script(self.table, self._bridges.values(),
                                      self._published.values()))

    def publish(self, published: Sequence[tuple[PortMapping, str]]) -> None:
        published = list(_natted(published))
        if not published:
            return
        with self._lock:
            self.nft.run(nat.add_elements_script(self.table, published))
            for m, ip in published:
                self._published[self._key(m)] = (m, ip)

    def unpublish(self, mappings: Sequence[PortMapping]) -> None:
        mappings = [m for m in mappings if not is_v6(m.host_ip)]
        if not mappings:
            return
        with self._lock:
            delete_elements(self.nft, self.table, mappings)
            for m in mappings:
                self._published.pop(self._key(m), None)

    def close(self) -> None:
        with self._lock:
            if self._nft is not None:
                self._nft.close()
                self._nft = None


def _natted(published: Iterable[tuple[PortMapping, str]]) -> Iterable[tuple[PortMapping, str]]:
    """The IPv4 bindings: those on IPv6 host addresses are the userland proxy's."""
    return ((m, ip) for m, ip in published if not is_v6(m.host_ip))


def delete_elements(nft: Nft, table: str, mappings: Sequence[PortMapping]) -> None:
    """All at once; if that fails (one already gone) one by one, ignoring the missing."""
    mappings = [m for m in mappings if not is_v6(m.host_ip)]
    if not mappings:
        return
    try:
        nft.run(nat.delete_elements_script(table, mappings))
    except NftError:
        for m in mappings:
            try:
                nft.run(nat.delete_elements_script(table, [m]))
            except NftError:
                pass
