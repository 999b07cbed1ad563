"""Endpoint links on a user-defined network: ``--link`` there, docker-compose v1's ``links:``."""

from __future__ import annotations

from ketch.engine.networks import link_aliases


def test_link_aliases_read_as_moby_parses_links() -> None:
    assert link_aliases(["v1_peer_1:pal", "v1_peer_1:v1_peer_1", "/db:/web/DB", "solo"]) == {
        "pal": "v1_peer_1", "v1_peer_1": "v1_peer_1", "db": "db", "solo": "solo"}
    assert link_aliases([]) == {}
    assert link_aliases([":x", ""]) == {}
