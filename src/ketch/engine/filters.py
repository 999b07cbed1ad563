"""``docker ps --filter`` and ``docker container prune --filter`` over stored containers.

The names and their meanings are moby's (daemon/list.go): values of one
name are alternatives (any may match), different names must all match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ketch import filters as f
from ketch.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from ketch.engine.store import Container, ContainerStore

LIST = frozenset({"id", "name", "label", "status", "exited", "ancestor", "before", "since",
                  "health", "isolation", "is-task", "network", "publish", "expose",
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
    is_task = _is_task(filters)
    publish = _ports("publish", filters.get("publish", ()))
    expose = _ports("expose", filters.get("expose", ()))
    before = [_created(store, r) for r in filters.get("before", ())]
    since = [_created(store, r) for r in filters.get("since", ())]
    ancestors = _ancestor_ids(filters.get("ancestor", ()), store)

    def match(c: Container) -> bool:
        if (ids := filters.get("id")) and not any(c.id.startswith(i) for i in ids):
            return False
        if (names := filters.get("name")) and not any(
                _go_match(n, f"/{c.name}") or _go_match(n, c.name) for n in names):
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
        # No container of ketch is a swarm task.
        if is_task:
            return False
        if (vols := filters.get("volume")) and not _has_volume(c, vols):
            return False
        if (nets := filters.get("network")) and not _on_network(c, nets):
            return False
        # "isolation" is accepted and matches everything, as dockerd on Linux.
        return not (publish or expose) or _has_port(c, publish, expose)

    return match


def _created(store: ContainerStore, ref: str) -> str:
    """The creation time of ``before=``/``since=``'s container, refused in the words of
    dockerd's view (NoSuchContainerError), not of the API's lookup."""
    try:
        return store.get(ref).created
    except NotFound:
        raise NotFound(f"no such container {ref}") from None


def _go_match(pattern: str, text: str) -> bool:
    """filters.Args.Match: equal, or the pattern (a regexp) found in the text; a
    pattern that does not compile matches nothing."""
    import re

    if pattern == text:
        return True
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _is_task(filters: f.Filters) -> bool:
    """``is-task=true`` or ``false``; anything else is refused as dockerd does."""
    values = list(filters.get("is-task", ()))
    if not values:
        return False
    if "true" in values:
        return True
    if "false" in values:
        return False
    raise f.invalid_filter("is-task", values)


def _ports(key: str, values: Sequence[str]) -> set[tuple[int, str]]:
    """moby's portOp: ``80``, ``80/udp``, ``8000-8010/tcp`` as (port, proto) pairs."""
    from ketch.network.ports import parse_port_range

    out: set[tuple[int, str]] = set()
    for value in values:
        if ":" in value:
            raise InvalidArgument(f"filter for '{key}' should not contain ':': {value}")
        port, _, proto = value.partition("/")
        proto = proto.split("/")[0] or "tcp"
        try:
            start, end = parse_port_range(port)
        except ValueError:
            raise InvalidArgument(f"error while looking up for {key} {value}: "
                                  f"{_port_range_error(port)}") from None
        out.update((p, proto) for p in range(start, end + 1))
    return out


def _port_range_error(port: str) -> str:
    """The words of Go's nat.ParsePortRange for a range it refuses."""
    if not port:
        return "empty string specified for ports"
    for part in port.split("-")[:2]:
        if not part.isdigit():
            return f'strconv.ParseUint: parsing "{part}": invalid syntax'
        if int(part) > 65535:
            return f'strconv.ParseUint: parsing "{part}": value out of range'
    return f"Invalid range specified for the Port: {port}"


def _has_volume(c: Container, values: Sequence[str]) -> bool:
    """A mount's destination, or its volume name (its source for a bind)."""
    wanted = set(values)
    for m in c.mounts:
        if m.get("Destination") in wanted or (m.get("Name") or m.get("Source")) in wanted:
            return True
    return False


def _on_network(c: Container, values: Sequence[str]) -> bool:
    """A network the container is attached to, by name or by a prefix of its id."""
    networks = c.network_settings.get("Networks") or {}
    for value in values:
        if value in networks:
            return True
        if any((nw or {}).get("NetworkID", "").startswith(value) for nw in networks.values()):
            return True
    return False


def _has_port(c: Container, publish: set[tuple[int, str]],
              expose: set[tuple[int, str]]) -> bool:
    """Any of the ports ``ps`` lists for the container: by host port or container port."""
    from ketch.engine.network import ps_ports

    for p in ps_ports(c.network_settings):
        proto = str(p.get("Type", "tcp"))
        if (int(p.get("PublicPort", 0)), proto) in publish:
            return True
        if (int(p["PrivatePort"]), proto) in expose:
            return True
    return False


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
