"""The daemon's event bus: what ``GET /events`` streams (moby's daemon/events).

Every state change is logged once as a ``Message`` in Docker's shape and goes to

- a ring buffer of the last ``EVENTS_LIMIT`` messages, which ``since``/``until``
  replay (dockerd keeps 256: an old ``--since`` sees only what is still held);
- every live subscriber whose filter includes it.

The engine calls ``bus.container_event`` (its ``on_event`` hook) on the event
loop; image operations run in worker threads and log through
``EventingImages``. So ``log`` is thread-safe: a subscriber's queue belongs to
the loop that subscribed, and messages from other threads reach it with
``call_soon_threadsafe``.

Network events: the engine has one hook, ``on_event(action, container, attrs)``;
it reports a container joining or leaving a network as the actions ``network
connect`` / ``network disconnect`` (how ``docker events`` prints them) with
``network_attrs(...)``, and ``container_event`` logs those as dockerd's
LogNetworkEventWithAttributes does: Type ``network``, the network's ID as the
actor, attributes ``container``, ``name`` and ``type`` (the driver).

Filters follow moby's daemon/events/filter.go: ``container`` and the other
object kinds match the actor's ID or its ``name`` attribute by prefix, whatever
the event's type (dockerd's ``--filter container=bridge`` shows the bridge's
network events, ``--filter network=web`` a container named web), ``image``
matches ids and names with and without the tag, ``event`` is exact (a prefix
for ``health_status``/``exec_create``/``exec_start``), ``label`` needs every
``key`` / ``key=value``, ``type`` and ``scope`` are exact.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ketch import filters as flt

if TYPE_CHECKING:
    from ketch.engine.store import Container

EVENTS_LIMIT = 256          # moby daemon/events: eventsLimit
QUEUE_LIMIT = 1024          # moby's bufferSize per subscriber; beyond it the stream ends

CONTAINER = "container"
IMAGE = "image"
NETWORK = "network"

# The engine's actions for network events, and the network actions they stand for.
NETWORK_ACTIONS = {"network connect": "connect", "network disconnect": "disconnect"}

_FUZZY_EVENTS = frozenset({"health_status", "exec_create", "exec_start"})


@dataclass(slots=True)
class Message:
    """``events.Message``: the deprecated status/id/from are filled for containers and
    images, as dockerd still sends them (old clients read only those)."""

    type: str
    action: str
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = 0
    scope: str = "local"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type in (CONTAINER, IMAGE):
            out["status"] = self.action
            out["id"] = self.actor_id
            if self.type == CONTAINER and self.attributes.get("image"):
                out["from"] = self.attributes["image"]
        out.update({"Type": self.type, "Action": self.action,
                    "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
                    "scope": self.scope, "time": self.time_nano // 1_000_000_000,
                    "timeNano": self.time_nano})
        return out


def network_attrs(network_id: str, name: str, driver: str) -> dict[str, str]:
    """The ``attrs`` of a ``network connect``/``network disconnect`` the engine reports."""
    return {"network": network_id, "name": name, "type": driver}


# --- filters -----------------------------------------------------------------------------


def _exact(filters: flt.Filters, key: str, *sources: str) -> bool:
    values = filters.get(key)
    if not values:
        return True
    return any(v == s for v in values for s in sources)


def _fuzzy(filters: flt.Filters, key: str, *sources: str) -> bool:
    values = filters.get(key)
    if not values:
        return True
    return any(v == s or s.startswith(v) for v in values for s in sources)


def _strip_tag(image: str) -> str:
    """The repository name without tag or digest ("busybox:1" -> "busybox")."""
    from ketch.errors import KetchError
    from ketch.image.reference import normalize

    try:
        ref = normalize(image)
    except KetchError:
        return image
    familiar = ref.familiar()
    name = familiar.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


class EventFilter:
    """One subscriber's ``filters`` (unknown names are ignored, as dockerd's /events does)."""

    def __init__(self, filters: flt.Filters | None = None) -> None:
        self.filters: dict[str, list[str]] = {k: list(v) for k, v in (filters or {}).items()}

    def include(self, m: Message) -> bool:
        f = self.filters
        if not f:
            return True
        if set(f.get("event", ())) & _FUZZY_EVENTS:
            ok = _fuzzy(f, "event", m.action)
        else:
            ok = _exact(f, "event", m.action)
        if not ok or not _exact(f, "type", m.type) or not _exact(f, "scope", m.scope):
            return False
        name = m.attributes.get("name", "")
        for kind in ("container", "plugin", "volume", "network", "node", "service",
                     "secret", "config", "daemon"):
            if f.get(kind) and not _fuzzy(f, kind, m.actor_id, name):
                return False
        if f.get("image"):
            image_name = m.attributes.get("name" if m.type == IMAGE else "image", "")
            sources = [m.actor_id, image_name, _strip_tag(m.actor_id), _strip_tag(image_name)]
            if not _exact(f, "image", *sources):
                return False
        return flt.match_kv_list(f.get("label", ()), m.attributes)


# --- the bus -----------------------------------------------------------------------------


class Subscription:
    """A live listener: messages arrive in ``queue``; None there means the stream ended
    (the subscriber fell ``QUEUE_LIMIT`` messages behind, or the bus closed)."""

    def __init__(self, bus: EventBus, flt_: EventFilter, loop: asyncio.AbstractEventLoop
                 ) -> None:
        self.bus = bus
        self.filter = flt_
        self.loop = loop
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.closed = False

    def _deliver(self, m: Message | None) -> None:
        if self.closed:
            return
        if m is None or self.queue.qsize() >= QUEUE_LIMIT:
            self.closed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(m)

    async def get(self) -> Message | None:
        return await self.queue.get()

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(self, limit: int = EVENTS_LIMIT,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._events: collections.deque[Message] = collections.deque(maxlen=limit)
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._clock = clock

    # -- logging ------------------------------------------------------------------------
    def log(self, action: str, type_: str, actor_id: str,
            attributes: Mapping[str, str] | None = None) -> Message:
        """Record and publish one event; safe from any thread."""
        m = Message(type=type_, action=action, actor_id=actor_id,
                    attributes=dict(attributes or {}), time_nano=self._clock())
        with self._lock:
            self._events.append(m)
            subs = [s for s in self._subs if s.filter.include(m)]
        for s in subs:
            self._send(s, m)
        return m

    @staticmethod
    def _send(s: Subscription, m: Message | None) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is s.loop:
            s._deliver(m)
        else:
            with contextlib.suppress(RuntimeError):     # that loop is closed
                s.loop.call_soon_threadsafe(s._deliver, m)

    def container_event(self, action: str, c: Container, attrs: Mapping[str, str]) -> Message:
        """The engine's ``on_event``: moby's LogContainerEventWithAttributes (the
        container's labels, then image and name, added to the event's own attributes),
        or a network event for the ``NETWORK_ACTIONS``."""
        if action in NETWORK_ACTIONS:
            return self.network_event(NETWORK_ACTIONS[action], attrs["network"],
                                      attrs["name"], attrs["type"], c.id)
        attributes = dict(attrs)
        for k, v in ((c.config or {}).get("Labels") or {}).items():
            attributes.setdefault(str(k), str(v))
        image = (c.config or {}).get("Image") or c.image
        if image:
            attributes["image"] = image
        attributes["name"] = c.name.lstrip("/")
        return self.log(action, CONTAINER, c.id, attributes)

    def network_event(self, action: str, network_id: str, name: str, driver: str,
                      container_id: str) -> Message:
        """moby's LogNetworkEventWithAttributes: a container (dis)connecting, or the
        network's own create/destroy (no container)."""
        attrs = {"container": container_id} if container_id else {}
        return self.log(action, NETWORK, network_id, {**attrs, "name": name, "type": driver})

    def image_event(self, action: str, image_id: str, ref_name: str = "",
                    labels: Mapping[str, str] | None = None) -> Message:
        """moby's LogImageEvent: the image's labels, and ``name`` when a ref is given."""
        attributes = {str(k): str(v) for k, v in (labels or {}).items()}
        if ref_name:
            attributes["name"] = ref_name
        return self.log(action, IMAGE, image_id, attributes)

    # -- subscribing --------------------------------------------------------------------
    def subscribe(self, since_ns: int = 0, until_ns: int = 0,
                  filters: flt.Filters | None = None
                  ) -> tuple[list[Message], Subscription]:
        """The buffered events in [since, until] that match (only when either is
        given, as dockerd), and a subscription for what comes next. Call on the loop
        that will read the subscription."""
        ef = EventFilter(filters)
        sub = Subscription(self, ef, asyncio.get_running_loop())
        with self._lock:
            buffered: list[Message] = []
            if since_ns or until_ns:
                for m in self._events:
                    if m.time_nano < since_ns or (until_ns and m.time_nano > until_ns):
                        continue
                    if ef.include(m):
                        buffered.append(m)
            self._subs.append(sub)
        return buffered, sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)
        sub.closed = True

    def close(self) -> None:
        """Ends every stream (daemon shutdown)."""
        with self._lock:
            subs, self._subs = self._subs, []
        for s in subs:
            self._send(s, None)

    def recent(self) -> list[Message]:
        with self._lock:
            return list(self._events)


# --- image events ---------------------------------------------------------------------------


class EventingImages:
    """The API's image backend with dockerd's image events around the image service.

    The image service has no event hook; this wrapper is what the ``/images``
    routes get instead of the service itself (``make_app(..., EventingImages(images,
    bus), ...)``). It logs, as dockerd does: ``tag`` (name = the new tag),
    ``untag`` and ``delete`` per record of a removal or prune, ``load`` per loaded
    image, ``import``, and ``save`` per saved image. Everything else is passed
    through unchanged. Called from worker threads, like the service.
    """

    def __init__(self, images: Any, bus: EventBus) -> None:
        self._images = images
        self._bus = bus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._images, name)

    def _labels(self, image_id: str) -> dict[str, str]:
        """The image's config labels (none once it is deleted)."""
        try:
            doc = self._images.inspect(image_id)
        except Exception:  # noqa: BLE001 - a gone image simply has no labels
            return {}
        return dict(((doc.get("Config") or {}).get("Labels")) or {})

    def _id(self, name: str) -> str:
        try:
            return str(self._images.get(name).id)
        except Exception:  # noqa: BLE001 - the operation itself reports a bad name
            return ""

    def log(self, action: str, image_id: str, ref_name: str = "") -> None:
        self._bus.image_event(action, image_id, ref_name, self._labels(image_id))

    def tag(self, src: str, dst: str) -> None:
        self._images.tag(src, dst)
        image_id = self._id(dst)
        if image_id:
            from ketch.image.reference import normalize

            self.log("tag", image_id, normalize(dst).familiar())

    def _image_ids(self) -> set[str]:
        try:
            return {str(s.id) for s in self._images.list(None, True)}
        except Exception:  # noqa: BLE001 - events are best effort, the removal is not
            return set()

    def _log_removed(self, records: Sequence[Mapping[str, Any]], known: set[str],
                     image_id: str = "", labels: Mapping[str, str] | None = None) -> None:
        """An ``untag`` per removed reference and a ``delete`` per removed image, both
        named by the image's ID as dockerd does. "Deleted" records of layers (not
        images) get no event."""
        if image_id:
            for r in records:
                if r.get("Untagged"):
                    self._bus.image_event("untag", image_id, image_id, labels)
        for r in records:
            gone = r.get("Deleted")
            if gone and gone in known:
                self._bus.image_event("delete", gone, gone,
                                      labels if gone == image_id else None)

    def remove(self, name: str, force: bool = False, noprune: bool = False
               ) -> Sequence[Mapping[str, Any]]:
        image_id = self._id(name)
        labels = self._labels(image_id) if image_id else {}
        known = self._image_ids()
        records = self._images.remove(name, force, noprune)
        self._log_removed(records, known, image_id, labels)
        return records

    def prune(self, filters: Any = None, *, all: bool = False) -> dict[str, Any]:
        known = self._image_ids()
        out: dict[str, Any] = self._images.prune(filters, all=all)
        self._log_removed(out.get("ImagesDeleted") or [], known)
        return out

    def load(self, stream: BinaryIO, moved: dict[str, str] | None = None) -> Any:
        loaded = self._images.load(stream, moved)
        for s in loaded:
            self.log("load", s.id, s.id)
        return loaded

    def import_rootfs(self, tar_stream: BinaryIO, ref: str | None = None,
                      changes: Sequence[str] = (), message: str = "") -> Any:
        s = self._images.import_rootfs(tar_stream, ref, changes, message)
        self.log("import", s.id, s.id)
        return s

    def save(self, refs_or_ids: Sequence[str], out: BinaryIO) -> None:
        self._images.save(refs_or_ids, out)
        for ref in refs_or_ids:
            image_id = self._id(ref)
            if image_id:
                self.log("save", image_id, image_id)
