"""``/volumes`` over aiohttp: shapes, statuses and messages as dockerd answers them.

The app is ``make_app`` plus ``volumes.setup`` over a real store in a temp
directory; ``in_use`` is a dict the test changes. Prune and ``/system/df``
go through the system router's stores seam.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ketch.api import make_app
from ketch.api.routers import volumes
from ketch.api.routers.system import HostFacts
from ketch.linux.fake import RecordingSyscalls
from ketch.volume.store import ANONYMOUS_LABEL, VolumeStore

FACTS = HostFacts(
    id="0d1c", name="box", server_version="0.1.0", git_commit="abc1234", build_time="",
    runtime_version="CPython 3.11.7", os="linux", arch="amd64", machine="x86_64",
    kernel_version="6.1.0", operating_system="Debian", ncpu=4, mem_total=8 << 30,
    root_dir="/var/lib/ketch", cgroup_version="2")


class Backend:
    def facts(self) -> HostFacts:
        return FACTS


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VolumeStore]:
    s = VolumeStore(str(tmp_path), syscalls=RecordingSyscalls(), mountpoints=lambda: [])
    yield s
    s.close()


USERS: dict[str, list[str]] = {}


def call(store: VolumeStore, *requests: tuple[str, str, Any]) -> list[tuple[int, Any]]:
    async def go() -> list[tuple[int, Any]]:
        app = make_app(Backend())
        volumes.setup(app, store, in_use=lambda n: USERS.get(n, []))
        out = []
        async with TestClient(TestServer(app)) as client:
            for method, path, body in requests:
                kw: dict[str, Any] = {}
                if body is not None:
                    kw["data"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
                    kw["headers"] = {"Content-Type": "application/json"}
                resp = await client.request(method, path, **kw)
                raw = await resp.read()
                out.append((resp.status, json.loads(raw) if raw else None))
        return out
    return asyncio.run(go())


def one(store: VolumeStore, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return call(store, (method, path, body))[0]


@pytest.fixture(autouse=True)
def _no_users() -> Iterator[None]:
    USERS.clear()
    yield
    USERS.clear()


def test_create_inspect_list(store: VolumeStore) -> None:
    status, body = one(store, "POST", "/v1.45/volumes/create",
                       {"Name": "web", "Driver": "local", "DriverOpts": {},
                        "Labels": {"a": "b"}})
    assert status == 201
    assert body["Name"] == "web" and body["Labels"] == {"a": "b"} and body["Options"] is None
    assert body["Mountpoint"] == store.path_of("web") and body["Scope"] == "local"
    status, doc = one(store, "GET", "/volumes/web")
    assert status == 200 and doc == body
    status, listing = one(store, "GET", "/v1.41/volumes")
    assert status == 200 and listing == {"Volumes": [body], "Warnings": None}
    f = quote(json.dumps({"name": ["zzz"]}))
    assert one(store, "GET", f"/volumes?filters={f}") == (200, {"Volumes": [],
                                                                "Warnings": None})


def test_create_without_name_or_body(store: VolumeStore) -> None:
    status, body = one(store, "POST", "/volumes/create", b"")
    assert status == 201 and len(body["Name"]) == 64
    assert body["Labels"] == {ANONYMOUS_LABEL: ""}


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"Name": "a"}, 400, "create a: volume name is too short, names should be at least two "
                         "alphanumeric characters"),
    ({"Name": "x1", "Driver": "foo"}, 404,
     'create x1: error looking up volume plugin foo: plugin "foo" not found'),
    ({"Name": "x2", "DriverOpts": {"foo": "bar"}}, 400, 'create x2: invalid option: "foo"'),
    ({"Name": "x3", "DriverOpts": {"type": "tmpfs"}}, 400,
     'create x3: missing required option: "device"'),
    ({"Name": "x4", "ClusterVolumeSpec": {}}, 503, volumes.SWARM_ONLY),
    (b"xx", 400, None),
])
def test_create_refusals(store: VolumeStore, body: Any, status: int,
                         message: str | None) -> None:
    got_status, got = one(store, "POST", "/volumes/create", body)
    assert got_status == status
    if message is not None:
        assert got == {"message": message}


def test_inspect_missing(store: VolumeStore) -> None:
    assert one(store, "GET", "/volumes/nope") == (404, {"message": "get nope: no such volume"})


def test_remove(store: VolumeStore) -> None:
    store.create("used")
    store.create("free")
    USERS["used"] = ["e06c01a01bce"]
    results = call(store, ("DELETE", "/volumes/used", None),
                   ("DELETE", "/volumes/used?force=1", None),
                   ("DELETE", "/volumes/free", None),
                   ("DELETE", "/volumes/free", None),
                   ("DELETE", "/volumes/free?force=true", None))
    in_use = {"message": "remove used: volume is in use - [e06c01a01bce]"}
    assert results == [(409, in_use), (409, in_use), (204, None),
                       (404, {"message": "get free: no such volume"}), (204, None)]


def test_list_filters_and_dangling(store: VolumeStore) -> None:
    store.create("used")
    store.create("free", labels={"k": "v"})
    USERS["used"] = ["c1"]

    def names(doc: dict[str, Any]) -> list[str]:
        return [v["Name"] for v in one(store, "GET",
                                       "/volumes?filters=" + quote(json.dumps(doc)))[1]
                ["Volumes"]]

    assert names({"dangling": {"true": True}}) == ["free"]
    assert names({"dangling": ["false"]}) == ["used"]
    assert names({"label": ["k=v"]}) == ["free"]
    assert one(store, "GET", "/volumes?filters=" + quote(json.dumps({"foo": ["x"]}))) == \
        (400, {"message": "invalid filter 'foo'"})


def test_prune_by_api_version(store: VolumeStore) -> None:
    store.create("named")
    anon = store.create().name
    used_anon = store.create().name
    USERS[used_anon] = ["c1"]
    status, body = one(store, "POST", "/v1.45/volumes/prune")
    assert (status, body) == (200, {"VolumesDeleted": [anon], "SpaceReclaimed": 0})
    # An old client (the docker CLI against dockerd 20.10 speaks 1.41) prunes all unused.
    status, body = one(store, "POST", "/v1.41/volumes/prune")
    assert body["VolumesDeleted"] == ["named"]
    store.create("again")
    f = quote(json.dumps({"all": ["true"]}))
    assert one(store, "POST", f"/volumes/prune?filters={f}")[1]["VolumesDeleted"] == ["again"]
    f = quote(json.dumps({"until": ["1h"]}))
    assert one(store, "POST", f"/volumes/prune?filters={f}") == \
        (400, {"message": "invalid filter 'until'"})


def test_system_df_lists_volumes(store: VolumeStore) -> None:
    v = store.create("sized")
    Path(v.mountpoint, "f").write_bytes(b"12345")
    USERS["sized"] = ["c1"]
    status, body = one(store, "GET", "/system/df")
    assert status == 200
    [doc] = body["Volumes"]
    assert doc["Name"] == "sized" and doc["UsageData"] == {"Size": 5, "RefCount": 1}
