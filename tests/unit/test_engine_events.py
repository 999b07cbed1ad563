"""The event bus: dockerd's message shape, buffer, filters, subscribers, image events,
and the ``/events`` route (since/until/filters) over aiohttp's test server."""

from __future__ import annotations

import asyncio
import builtins
import functools
import io
import json
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ketch.api.errors import error_middleware
from ketch.api.routers import events as events_router
from ketch.engine import events as ev
from ketch.engine.events import EventBus, EventFilter, EventingImages, Message
from ketch.engine.store import Container
from ketch.errors import InvalidArgument

S = 1_000_000_000
CID = "ab" * 32
IMG = "sha256:" + "cd" * 32


def aio(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), 30))
    return run


class Clock:
    """Nanoseconds that advance one second a call (deterministic times)."""

    def __init__(self, start: int = 1000 * S) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += S
        return self.now


def container(name: str = "web", labels: dict[str, str] | None = None,
              image: str = "busybox:latest") -> Container:
    return Container(id=CID, name=name, created="", image=image, image_id=IMG,
                     config={"Image": image, "Labels": labels})


# --- the message ---------------------------------------------------------------------------


def test_container_message_shape_as_dockerd() -> None:
    bus = EventBus(clock=lambda: 1700000000_123456789)
    m = bus.container_event("die", container(labels={"team": "a", "name": "label-loses"}),
                            {"exitCode": "3"})
    assert m.to_json() == {
        "status": "die", "id": CID, "from": "busybox:latest", "Type": "container",
        "Action": "die",
        "Actor": {"ID": CID, "Attributes": {"exitCode": "3", "team": "a",
                                            "name": "web", "image": "busybox:latest"}},
        "scope": "local", "time": 1700000000, "timeNano": 1700000000_123456789}


def test_own_attributes_win_over_labels_and_image_events_have_no_from() -> None:
    bus = EventBus()
    m = bus.container_event("kill", container(labels={"signal": "x", "k": "v"}),
                            {"signal": "9"})
    assert m.attributes["signal"] == "9" and m.attributes["k"] == "v"
    img = bus.image_event("tag", IMG, "me/box:1", {"maintainer": "me"}).to_json()
    assert img["status"] == "tag" and img["id"] == IMG and "from" not in img
    assert img["Actor"]["Attributes"] == {"maintainer": "me", "name": "me/box:1"}
    net = bus.log("connect", "network", "n1", {"container": CID}).to_json()
    assert "status" not in net and "id" not in net and net["Type"] == "network"


def test_network_events_through_the_engine_hook_as_dockerd() -> None:
    bus = EventBus(clock=lambda: 1700000000_000000001)
    from ketch.network.store import predefined_id

    nid = predefined_id("bridge", "ketch0")
    assert len(nid) == 64 and nid == predefined_id("bridge", "ketch0") != \
        predefined_id("bridge", "kt1")
    m = bus.container_event("network connect", container(labels={"team": "a"}),
                            ev.network_attrs(nid, "bridge", "bridge"))
    # dockerd 20.10's shape: no status/id/from, no labels, the network as the actor.
    assert m.to_json() == {
        "Type": "network", "Action": "connect",
        "Actor": {"ID": nid, "Attributes": {"container": CID, "name": "bridge",
                                            "type": "bridge"}},
        "scope": "local", "time": 1700000000, "timeNano": 1700000000_000000001}
    assert bus.container_event("network disconnect", container(),
                               ev.network_attrs(nid, "bridge", "bridge")).action == "disconnect"


# --- buffer and subscriptions ------------------------------------------------------------------


@aio
async def test_buffer_keeps_the_last_events_and_replays_only_with_since_or_until() -> None:
    clock = Clock()
    bus = EventBus(limit=3, clock=clock)
    for i in range(5):
        bus.container_event("start", container(f"c{i}"), {})
    assert [m.attributes["name"] for m in bus.recent()] == ["c2", "c3", "c4"]
    buffered, sub = bus.subscribe()
    assert buffered == []           # no since/until: only what comes next
    sub.close()
    times = [m.time_nano for m in bus.recent()]
    buffered, sub = bus.subscribe(since_ns=times[1])
    assert [m.attributes["name"] for m in buffered] == ["c3", "c4"]
    sub.close()
    buffered, sub = bus.subscribe(since_ns=1, until_ns=times[1])
    assert [m.attributes["name"] for m in buffered] == ["c2", "c3"]
    sub.close()
    buffered, sub = bus.subscribe(since_ns=1, filters={"container": ["c4"]})
    assert [m.attributes["name"] for m in buffered] == ["c4"]
    sub.close()


@aio
async def test_subscriber_gets_matching_events_from_the_loop_and_from_threads() -> None:
    bus = EventBus()
    _, sub = bus.subscribe(filters={"event": ["die"]})
    bus.container_event("start", container(), {})
    bus.container_event("die", container(), {"exitCode": "0"})
    t = threading.Thread(target=bus.image_event, args=("die", IMG))   # a worker thread
    t.start()
    t.join()
    first = await sub.get()
    second = await asyncio.wait_for(sub.get(), 5)
    assert first is not None and first.type == "container" and first.action == "die"
    assert second is not None and second.type == "image"
    sub.close()
    bus.container_event("die", container(), {})
    assert sub.queue.empty()        # closed: nothing more is delivered


@aio
async def test_a_slow_subscriber_is_cut_off_and_close_ends_every_stream() -> None:
    bus = EventBus()
    _, slow = bus.subscribe()
    _, other = bus.subscribe()
    for _ in range(ev.QUEUE_LIMIT + 5):
        bus.log("x", "container", CID)
    assert slow.queue.qsize() == ev.QUEUE_LIMIT + 1     # the limit, then the end mark
    items = [slow.queue.get_nowait() for _ in range(ev.QUEUE_LIMIT + 1)]
    assert items[-1] is None and all(isinstance(m, Message) for m in items[:-1])
    while not other.queue.empty():
        other.queue.get_nowait()
    _, fresh = bus.subscribe()
    bus.close()
    assert await fresh.get() is None


# --- filters -----------------------------------------------------------------------------------


def _msg(action: str = "start", type_: str = "container", actor: str = CID,
         **attrs: str) -> Message:
    return Message(type=type_, action=action, actor_id=actor, attributes=dict(attrs))


@pytest.mark.parametrize(("filters", "message", "included"), [
    ({}, _msg(), True),
    ({"event": ["start"]}, _msg("start"), True),
    ({"event": ["start"]}, _msg("stop"), False),
    ({"event": ["start", "stop"]}, _msg("stop"), True),
    ({"event": ["exec_"]}, _msg("exec_start: sh"), False),          # exact otherwise
    ({"event": ["exec_start"]}, _msg("exec_start: sh -c true"), True),   # prefix for these
    ({"event": ["health_status"]}, _msg("health_status: healthy"), True),
    ({"container": ["web"]}, _msg(name="web"), True),
    ({"container": ["we"]}, _msg(name="web"), True),                # a prefix of the name
    ({"container": [CID[:12]]}, _msg(name="web"), True),            # or of the ID
    ({"container": ["db"]}, _msg(name="web"), False),
    # dockerd matches the actor's ID or name whatever the type (seen with 20.10:
    # --filter container=web shows the tag event of web:1, container=bridge the
    # bridge's network events).
    ({"container": ["web"]}, _msg("tag", type_="image", actor=IMG, name="web:1"), True),
    ({"container": ["bridge"]}, _msg("connect", "network", "n1id", name="bridge"), True),
    ({"container": [CID[:12]]}, _msg("connect", "network", "n1id", name="bridge"), False),
    ({"network": ["web"]}, _msg(name="web"), True),
    ({"type": ["network"]}, _msg(), False),
    ({"type": ["network"]}, _msg("disconnect", "network", "n1id", name="bridge"), True),
    ({"event": ["exec_die"]}, _msg("exec_die"), True),
    ({"event": ["exec_die"]}, _msg("exec_start: true "), False),
    ({"event": ["exec_create"]}, _msg("exec_create: true "), True),
    ({"type": ["image"]}, _msg(), False),
    ({"type": ["container", "image"]}, _msg(), True),
    ({"image": ["busybox"]}, _msg(image="busybox:latest"), True),   # the tag stripped
    ({"image": ["busybox:latest"]}, _msg(image="busybox:latest"), True),
    ({"image": ["busybox:1"]}, _msg(image="busybox:latest"), False),
    ({"image": ["busy"]}, _msg(image="busybox"), False),            # no prefixes for images
    ({"image": ["me/box"]}, _msg("tag", "image", IMG, name="me/box:1"), True),
    ({"image": [IMG]}, _msg("delete", "image", IMG, name=IMG), True),
    ({"label": ["team"]}, _msg(team="a"), True),
    ({"label": ["team=a", "tier"]}, _msg(team="a"), False),          # every label must hold
    ({"label": ["team=b"]}, _msg(team="a"), False),
    ({"scope": ["swarm"]}, _msg(), False),
    ({"event": ["start"], "container": ["web"]}, _msg("start", name="db"), False),
    ({"network": ["n1"]}, _msg("connect", "network", "n1id", name="n1"), True),
    ({"volume": ["v"]}, _msg(), False),
    ({"nonsense": ["x"]}, _msg(), True),                             # unknown names ignored
])
def test_filter(filters: dict[str, list[str]], message: Message, included: bool) -> None:
    assert EventFilter(filters).include(message) is included


# --- image events ----------------------------------------------------------------------------


@dataclass
class Img:
    id: str
    repo_tags: list[str] = field(default_factory=list)


class FakeImages:
    snapshotter_name = "overlayfs"

    def __init__(self) -> None:
        self.ids = {"busybox": IMG, "busybox:latest": IMG, IMG: IMG, "me/box:1": IMG}

    def get(self, name: str) -> Img:
        if name not in self.ids:
            raise InvalidArgument(f"No such image: {name}")
        return Img(self.ids[name])

    def list(self, filters: Any = None, all: bool = False) -> list[Img]:
        return [Img(IMG)]

    def inspect(self, name: str) -> dict[str, Any]:
        self.get(name)
        return {"Id": IMG, "Config": {"Labels": {"maintainer": "me"}}}

    def tag(self, src: str, dst: str) -> None:
        self.ids[dst] = self.get(src).id

    def remove(self, name: str, force: bool = False, noprune: bool = False
               ) -> builtins.list[dict[str, str]]:
        return [{"Untagged": "me/box:1"}, {"Untagged": "busybox:latest"}, {"Deleted": IMG},
                {"Deleted": "sha256:" + "99" * 32}]    # a layer: no event

    def prune(self, filters: Any = None, *, all: bool = False) -> dict[str, Any]:
        return {"ImagesDeleted": [{"Deleted": IMG}], "SpaceReclaimed": 10}

    def load(self, stream: Any, moved: dict[str, str] | None = None) -> builtins.list[Img]:
        return [Img(IMG)]

    def import_rootfs(self, tar_stream: Any, ref: str | None = None,
                      changes: Sequence[str] = (), message: str = "") -> Img:
        return Img(IMG)

    def save(self, refs_or_ids: Sequence[str], out: Any) -> None:
        out.write(b"tar")


def _actions(bus: EventBus) -> list[tuple[str, str, str]]:
    return [(m.action, m.actor_id, m.attributes.get("name", "")) for m in bus.recent()]


def test_eventing_images_logs_as_dockerd() -> None:
    bus = EventBus()
    images = EventingImages(FakeImages(), bus)
    assert images.snapshotter_name == "overlayfs"          # everything else passes through
    images.tag("busybox", "me/box:1")
    assert _actions(bus) == [("tag", IMG, "me/box:1")]
    assert bus.recent()[0].attributes["maintainer"] == "me"
    records = images.remove("me/box:1")
    assert len(records) == 4
    assert _actions(bus)[1:] == [("untag", IMG, IMG), ("untag", IMG, IMG),
                                 ("delete", IMG, IMG)]
    bus = EventBus()
    images = EventingImages(FakeImages(), bus)
    images.load(io.BytesIO(b""))
    images.import_rootfs(io.BytesIO(b""), "x:1")
    out = io.BytesIO()
    images.save(["busybox", "nosuch"], out)
    assert out.getvalue() == b"tar"
    assert images.prune()["SpaceReclaimed"] == 10
    assert [a for a, _, _ in _actions(bus)] == ["load", "import", "save", "delete"]


# --- the route ---------------------------------------------------------------------------------


def test_event_time() -> None:
    assert events_router.event_time("") == 0
    assert events_router.event_time("1700000000") == 1700000000 * S
    assert events_router.event_time("1700000000.5") == 1700000000 * S + S // 2
    with pytest.raises(InvalidArgument):
        events_router.event_time("soon")


async def _get(bus: EventBus, path: str, *, during: Callable[[], object] | None = None
               ) -> tuple[int, str]:
    app = web.Application(middlewares=[error_middleware])
    events_router.setup(app, bus)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(path)
        if during is not None:
            await asyncio.sleep(0.1)
            during()
        return resp.status, await resp.text()


@aio
async def test_route_past_window_live_stream_and_errors() -> None:
    bus = EventBus()
    a = bus.container_event("create", container("a", labels={"x": "1"}), {})
    b = bus.container_event("start", container("b"), {})
    since, until = a.time_nano - 1, b.time_nano
    status, body = await _get(bus, f"/events?since={since // S}.{since % S:09d}"
                                   f"&until={until // S}.{until % S:09d}")
    assert status == 200
    assert [json.loads(x)["Action"] for x in body.splitlines()] == ["create", "start"]
    flt = json.dumps({"label": {"x=1": True}})
    status, body = await _get(bus, f"/events?since=1&until={until // S + 1}&filters={flt}")
    assert [json.loads(x)["Actor"]["Attributes"]["name"] for x in body.splitlines()] == ["a"]
    # Live, ended by an until a moment ahead: the buffer first (an until alone replays
    # from the start, as dockerd), then an event logged meanwhile.
    import time

    end = time.time() + 0.5
    status, body = await _get(bus, f"/events?until={end:.3f}",
                              during=lambda: bus.container_event("die", container("c"),
                                                                 {"exitCode": "1"}))
    assert [json.loads(x)["Action"] for x in body.splitlines()] == ["create", "start", "die"]
    status, body = await _get(bus, "/events?since=100&until=50")
    assert status == 400
    assert json.loads(body)["message"] == "`since` time (100) cannot be after `until` time (50)"
    status, body = await _get(bus, "/events?since=abc")
    assert status == 400



@aio
async def test_route_unsubscribes_a_client_that_hung_up() -> None:
    bus = EventBus()
    app = web.Application(middlewares=[error_middleware])
    events_router.setup(app, bus)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/events")
        assert resp.status == 200
        for _ in range(100):
            if bus._subs:
                break
            await asyncio.sleep(0.01)
        assert len(bus._subs) == 1
        resp.close()                  # no event will come to fail a write
        for _ in range(300):
            if not bus._subs:
                break
            await asyncio.sleep(0.01)
        assert bus._subs == []
