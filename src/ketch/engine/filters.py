"""``docker ps --filter`` and ``docker container prune --filter`` over stored containers.

The names and their meanings are moby's (daemon/list.go): values of one
name are alternatives (any may match), different names must all match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ketch import filters as f
from ketch.errors import InvalidArgument

if TYPE_CHECKING:
    from ketch.engine.store import Container, ContainerStore

LIST = frozenset({"id", "name", "label", "label!", "status", "exited", "ancestor", "before",
                  "since", "health", "isolation", "is-task", "network", "publish", "expose",
                  "volume"})
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
HEALTH = ("starting", "healthy", "unhealthy", "none")

Match = Callable[["Container"], bool]


def _status(c: Container) -> str:
    return "restarting" if c.state.restarting else c.state.status


def container_filter(filters: f.Filters, store: ContainerStore) -> Match:
    """A predicate for ``GET /containers/json``; errors as dockerd words them."""
    f.check_names(filters, LIST)
    for s in filters.get("status", ()):
        if s not in STATUSES:
            raise InvalidArgument(f"invalid filter 'status={s}'")
    for h in filters.get("health", ()):
        if h not in HEALTH:
            raise InvalidArgument(f"Unrecognised filter value for health: {h}")
    exited: list[int] = []
    for e in filters.get("exited", ()):
        try:
            exited.append(int(e))
        except ValueError:
            raise InvalidArgument(f"invalid filter 'exited={e}'") from None
    before = [store.get(r).created for r in filters.get("before", ())]
    since = [store.get(r).created for r in filters.get("since", ())]
    ancestors = _ancestor_ids(filters.get("ancestor", ()), store)

    def match(c: Container) -> bool:
        if (ids := filters.get("id")) and not any(c.id.startswith(i) for i in ids):
            return False
        if names := filters.get("name"):
            import re

            if not any(re.search(n.lstrip("/"), c.name) for n in names):
                return False
        labels = c.config.get("Labels") or {}
        if not f.match_each_label(filters, labels):
            return False
        if (st := filters.get("status")) and _status(c) not in st:
            return False
        if exited and not (c.state.status == "exited" and c.state.exit_code in exited):
            return False
        if before and not all(c.created < b for b in before):
            return False
        if since and not all(c.created > s for s in since):
            return False
        if ancestors is not None and c.image_id not in ancestors \
                and c.image not in filters.get("ancestor", ()):
            return False
        if (hs := filters.get("health")):
            status = (c.state.health or {}).get("Status", "none")
            if status not in hs:
                return False
        return True

    return match


def _ancestor_ids(refs: object, store: ContainerStore) -> set[str] | None:
    values = list(refs)  # type: ignore[call-overload]
    if not values:
        return None
    # Images by id or id prefix; names are compared with what the container was created from.
    out: set[str] = set()
    for v in values:
        v = str(v)
        for c in store.all():
            if c.image_id == v or c.image_id.removeprefix("sha256:").startswith(
                    v.removeprefix("sha256:")):
                out.add(c.image_id)
    return out


def prune_filter(filters: f.Filters) -> Match:
    """``POST /containers/prune``: label, label! and until, as moby's ContainersPrune."""
    f.check_names(filters, f.CONTAINER_PRUNE)
    until = f.prune_until(filters)

    def match(c: Container) -> bool:
        from ketch.engine.containers import parse_rfc3339

        if until is not None and parse_rfc3339(c.created) >= until:
            return False
        return f.match_labels(filters, c.config.get("Labels") or {})

    return match
