"""``GET /system/df`` and the prunes of ``docker system prune``, over a real image service.

The shapes and messages are dockerd's (moby's ``types.DiskUsage``, the prune
reports, its filter errors); the numbers are the image service's, checked
against what dockerd computes for the same layer sharing: a layer used by
more than one top-level image is *shared*, ``LayersSize`` counts each layer once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.unit.test_api_versions import Backend as SystemBackend
from tests.unit.test_image_service import APP, BASE, OTHER, _image, _load, _sha

from ketch.api import make_app
from ketch.api.routers import system
from ketch.image.service import ImageService
from ketch.image.snapshot.naive import NaiveSnapshotter


@pytest.fixture
def svc(tmp_path: Path) -> ImageService:
    return ImageService(tmp_path / "images",
                        snapshotter=NaiveSnapshotter(str(tmp_path / "images" / "snapshots")))


def call(app_images: Any, method: str, path: str, *,
         plug: dict[str, Any] | None = None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        app = make_app(SystemBackend(), app_images)
        for name, store in (plug or {}).items():
            setattr(system.stores(app), name, store)
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path)
            raw = await resp.read()
            return resp.status, json.loads(raw) if raw else None
    return asyncio.run(go())


def _filters(doc: dict[str, Any]) -> str:
    return "filters=" + json.dumps(doc)


# --- /system/df --------------------------------------------------------------------------


def test_df_shape_and_shared_sizes(svc: ImageService) -> None:
    base, app = _image([BASE]), _image([BASE, APP], labels={"a": "1"})
    other = _image([OTHER], created="2023-01-01T00:00:00Z")
    _load(svc, (base, ["base:1"]), (app, ["app:1", "app:2"]), (other, []))
    svc.rootfs_mounts("app:1", "ctr-1")
    svc.rootfs_mounts("app:1", "ctr-2")
    status, body = call(svc, "GET", "/v1.45/system/df")
    assert status == 200
    assert list(body) == ["LayersSize", "Images", "Containers", "Volumes", "BuildCache"]
    assert body["Containers"] == [] and body["Volumes"] == [] and body["BuildCache"] == []
    sizes = {"base": len(b"base\n"), "app": len(b"echo hi\n"), "other": len(b"x\n")}
    assert body["LayersSize"] == sum(sizes.values())
    by_id = {i["Id"]: i for i in body["Images"]}
    assert set(by_id) == {_sha(base[0]), _sha(app[0]), _sha(other[0])}
    b, a, o = by_id[_sha(base[0])], by_id[_sha(app[0])], by_id[_sha(other[0])]
    # BASE is in two images: shared by both; APP and OTHER are their image's own.
    assert (b["Size"], b["SharedSize"], b["Containers"]) == (sizes["base"], sizes["base"], 0)
    assert (a["Size"], a["SharedSize"], a["Containers"]) == (
        sizes["base"] + sizes["app"], sizes["base"], 2)
    assert (o["Size"], o["SharedSize"], o["Containers"]) == (sizes["other"], 0, 0)
    assert a["RepoTags"] == ["app:1", "app:2"] and a["Labels"] == {"a": "1"}
    assert o["RepoTags"] == []
    assert "VirtualSize" not in a
    # Newest first, as dockerd sorts them.
    assert [i["Created"] for i in body["Images"]] == sorted(
        (i["Created"] for i in body["Images"]), reverse=True)


def test_df_by_api_version_and_type(svc: ImageService) -> None:
    _load(svc, (_image([BASE]), ["base:1"]))
    status, body = call(svc, "GET", "/v1.41/system/df")
    assert status == 200
    assert body["BuilderSize"] == 0  # sent before 1.42
    assert body["Images"][0]["VirtualSize"] == body["Images"][0]["Size"]  # before 1.44
    status, body = call(svc, "GET", "/v1.45/system/df?type=image")
    assert status == 200 and body["LayersSize"] == len(b"base\n") and len(body["Images"]) == 1
    assert body["Containers"] is None and body["Volumes"] is None and body["BuildCache"] is None
    status, body = call(svc, "GET", "/v1.45/system/df?type=container&type=volume")
    assert (body["LayersSize"], body["Images"], body["Containers"], body["Volumes"]) == (
        0, None, [], [])
    status, body = call(svc, "GET", "/v1.45/system/df?type=foo")
    assert (status, body) == (400, {"message": "unknown object type: foo"})
    status, body = call(svc, "GET", "/v1.41/system/df?type=foo")  # no types before 1.42
    assert status == 200 and body["Images"] is not None


def test_df_without_an_image_store() -> None:
    status, body = call(None, "GET", "/system/df")
    assert status == 200
    assert body == {"LayersSize": 0, "Images": [], "Containers": [], "Volumes": [],
                    "BuildCache": []}


def test_df_hides_unnamed_parents(svc: ImageService) -> None:
    """An unnamed image with a child (a build step) is not a top-level image, as in dockerd."""
    from ketch.image.metadata import ImageRecord

    _load(svc, (_image([BASE]), ["base:1"]))
    parent = svc.get("base:1")
    child = ImageRecord(id="sha256:" + "c" * 64, manifest_digest=parent.manifest_digest,
                        created=parent.created, size=parent.size, parent=parent.id,
                        layers=parent.layers)
    svc.metadata.add_image(child)
    svc.metadata.tag("child:1", child.id)
    svc.metadata.untag("base:1")
    _, body = call(svc, "GET", "/system/df")
    assert [i["Id"] for i in body["Images"]] == [child.id]
    assert body["Images"][0]["SharedSize"] == 0  # the parent does not count as a user
    assert body["LayersSize"] == len(b"base\n")


# --- the prunes docker system prune calls ---------------------------------------------------


@pytest.mark.parametrize("path, report", [
    ("/containers/prune", {"ContainersDeleted": None, "SpaceReclaimed": 0}),
    ("/networks/prune", {"NetworksDeleted": None}),
    ("/volumes/prune", {"VolumesDeleted": [], "SpaceReclaimed": 0}),
    ("/build/prune?all=1", {"CachesDeleted": None, "SpaceReclaimed": 0}),
])
def test_empty_stores_prune_nothing(path: str, report: dict[str, Any]) -> None:
    assert call(None, "POST", "/v1.45" + path) == (200, report)
    sep = "&" if "?" in path else "?"
    status, body = call(None, "POST", "/v1.45" + path + sep + _filters({"label": {"a=b": True}}))
    assert (status, body) == (200, report)


@pytest.mark.parametrize("path, filters, message", [
    ("/containers/prune", {"foo": {"x": True}}, "invalid filter 'foo'"),
    ("/containers/prune", {"until": {"xyz": True}},
     'failed to parse value as time or duration: "xyz"'),
    ("/containers/prune", {"until": {"1h": True, "2h": True}},
     "more than one until filter specified"),
    ("/networks/prune", {"dangling": {"true": True}}, "invalid filter 'dangling'"),
    ("/volumes/prune", {"until": {"1h": True}}, "invalid filter 'until'"),
    ("/volumes/prune", {"all": {"maybe": True}}, "invalid filter 'all=[maybe]'"),
    ("/build/prune", {"foo": {"x": True}}, "failed to prune build cache: invalid filter 'foo'"),
    ("/build/prune", {"until": {"2020-01-01": True}},
     "failed to prune build cache: \"until\" filter expects a duration (e.g., '24h'): "
     'time: unknown unit "-" in duration "2020-01-01"'),  # as Go's ParseDuration words it
    ("/build/prune", {"until": {"1h": True}, "unused-for": {"2h": True}},
     'failed to prune build cache: conflicting filters: "until" and "unused-for"'),
    ("/build/prune", {"unused-for": {"1h": True, "2h": True}},
     "failed to prune build cache: filters expect only one value"),
    ("/build/prune", {"unused-for": {"x": True}},
     "failed to prune build cache: \"unused-for\" filter expects a duration (e.g., '24h'): "
     'time: invalid duration "x"'),
    ("/images/prune", {"foo": {"x": True}}, "invalid filter 'foo'"),
    ("/images/prune", {"until": {"xyz": True}},
     'failed to parse value as time or duration: "xyz"'),
])
def test_bad_prune_filters_are_400_with_dockerds_words(svc: ImageService, path: str,
                                                       filters: dict[str, Any],
                                                       message: str) -> None:
    assert call(svc, "POST", f"/v1.45{path}?{_filters(filters)}") == (400, {"message": message})


def test_good_filters_pass(svc: ImageService) -> None:
    ok = [("/containers/prune", {"until": {"24h": True}, "label!": {"a": True}}),
          ("/networks/prune", {"until": {"2020-01-01T00:00:00Z": True}}),
          ("/volumes/prune", {"all": {"true": True}, "label": {"a": True}}),
          ("/build/prune", {"until": {"24h": True}, "inuse": {"true": True}})]
    for path, filters in ok:
        status, _ = call(svc, "POST", f"/v1.45{path}?{_filters(filters)}")
        assert status == 200, path


def test_images_prune_over_the_service(svc: ImageService) -> None:
    old = _image([BASE], created="2020-01-01T00:00:00Z", labels={"keep": "no"})
    _load(svc, (old, ["app:1"]))
    _load(svc, (_image([BASE, APP]), ["app:1"]))  # old is dangling now
    status, body = call(svc, "POST", "/images/prune?" + _filters({"label": {"keep=yes": True}}))
    assert (status, body) == (200, {"ImagesDeleted": None, "SpaceReclaimed": 0})
    status, body = call(svc, "POST", "/images/prune?" + _filters(
        {"dangling": {"true": True}, "until": {"2021-01-01T00:00:00Z": True},
         "label": {"keep=no": True}}))
    assert (status, body) == (200, {"ImagesDeleted": [{"Deleted": _sha(old[0])}],
                                    "SpaceReclaimed": 0})
    status, body = call(svc, "POST", "/images/prune?" + _filters({"dangling": {"false": True}}))
    assert status == 200 and body["SpaceReclaimed"] == len(b"base\n") + len(b"echo hi\n")
    assert svc.list() == []


class Containers:
    """What the engine's container store will be: here, one stopped container."""

    def __init__(self) -> None:
        self.pruned: list[tuple[dict[str, Any], system.PruneOptions]] = []

    def disk_usage(self) -> list[dict[str, Any]]:
        return [{"Id": "c" * 64, "Names": ["/web"], "SizeRw": 12, "SizeRootFs": 34}]

    def prune(self, filters: Any, options: system.PruneOptions) -> dict[str, Any]:
        self.pruned.append((dict(filters), options))
        return {"ContainersDeleted": ["c" * 64], "SpaceReclaimed": 12}


def test_a_real_store_plugs_into_the_seam(svc: ImageService) -> None:
    store = Containers()
    _, body = call(svc, "GET", "/system/df", plug={"containers": store})
    assert body["Containers"] == store.disk_usage()
    status, body = call(svc, "POST", "/v1.43/containers/prune?" + _filters(
        {"until": {"1h": True}}), plug={"containers": store})
    assert (status, body) == (200, {"ContainersDeleted": ["c" * 64], "SpaceReclaimed": 12})
    assert store.pruned == [({"until": ["1h"]}, system.PruneOptions("1.43"))]
