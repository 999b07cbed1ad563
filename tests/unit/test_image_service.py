"""The image service over the copy-based snapshotter: no root, no mounts.

Archives are built here in ``docker save``'s classic shape, so what is
checked is how the service turns them into images, names and snapshots.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest
from tests.unit.image_blobs import layer_tar as _layer
from tests.unit.image_blobs import sha as _sha

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.image import oci
from ketch.image.check import ProblemKind
from ketch.image.service import ImageService, apply_changes, go_path_match
from ketch.image.snapshot import Kind, writable_dir
from ketch.image.snapshot.naive import NaiveSnapshotter


def _image(layers: list[bytes], *, created: str = "2024-01-01T00:00:00Z",
           labels: dict[str, str] | None = None) -> tuple[bytes, list[bytes]]:
    config = {
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": [_sha(la) for la in layers]},
        "history": [{"created": created, "created_by": f"step {i}"}
                    for i in range(len(layers))] + [
            {"created": created, "created_by": "CMD [\"sh\"]", "empty_layer": True}],
    }
    return json.dumps(config).encode(), layers


def _archive(images: list[tuple[tuple[bytes, list[bytes]], list[str]]]) -> io.BytesIO:
    """A classic ``docker save`` tar: <hex>.json configs, <id>/layer.tar, manifest.json."""
    buf = io.BytesIO()
    manifest = []
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

        seen: set[str] = set()
        for (config, layers), tags in images:
            cname = _sha(config).removeprefix("sha256:") + ".json"
            add(cname, config)
            paths = []
            for la in layers:
                path = _sha(la).removeprefix("sha256:") + "/layer.tar"
                if path not in seen:
                    add(path, la)
                    seen.add(path)
                paths.append(path)
            manifest.append({"Config": cname, "RepoTags": tags, "Layers": paths})
        add("manifest.json", json.dumps(manifest).encode())
    buf.seek(0)
    return buf


BASE = _layer({"etc/os": b"base\n"})
APP = _layer({"app/run": b"echo hi\n"})
OTHER = _layer({"other": b"x\n"})


@pytest.fixture
def svc(tmp_path) -> ImageService:
    return ImageService(tmp_path / "images",
                        snapshotter=NaiveSnapshotter(str(tmp_path / "images" / "snapshots")))


def _state(svc: ImageService) -> tuple:
    """Everything the three stores hold, to compare before and after a failure."""
    return ({i.digest for i in svc.content.walk()},
            {(s.name, s.kind) for s in svc.snapshotter.walk()},
            [(r.id, tuple(svc.metadata.references_of(r.id))) for r in svc.metadata.list_images()])


def _load(svc: ImageService, *images) -> list:
    return svc.load(_archive(list(images)))


# --- load -------------------------------------------------------------------------


def test_load_records_unpacks_and_tags(svc: ImageService) -> None:
    img = _image([BASE, APP], labels={"a": "1"})
    [summary] = _load(svc, (img, ["app:1", "registry.example:5000/team/app:2"]))
    assert summary.id == _sha(img[0])
    assert summary.repo_tags == ["app:1", "registry.example:5000/team/app:2"]
    assert summary.size == len(b"base\n") + len(b"echo hi\n")
    assert summary.labels == {"a": "1"}
    chains = oci.chain_ids([_sha(BASE), _sha(APP)])
    snaps = {s.name: s.kind for s in svc.snapshotter.walk()}
    assert snaps == {chains[0]: Kind.COMMITTED, chains[1]: Kind.COMMITTED}
    assert svc.check() == []


def test_load_reuses_existing_layers(svc: ImageService) -> None:
    _load(svc, (_image([BASE]), ["base"]))
    _load(svc, (_image([BASE, APP]), ["app"]))
    assert len(list(svc.snapshotter.walk())) == 2


def test_load_moves_tag_and_leaves_old_image_dangling(svc: ImageService) -> None:
    old = _image([BASE], created="2020-01-01T00:00:00Z")
    new = _image([BASE, APP])
    _load(svc, (old, ["app:latest"]))
    _load(svc, (new, ["app:latest"]))
    assert [s.repo_tags for s in svc.list({"dangling": ["true"]})] == [[]]
    assert svc.get("app").id == _sha(new[0])


def test_failed_load_leaves_everything_as_before(svc: ImageService) -> None:
    _load(svc, (_image([BASE]), ["base"]))
    before = _state(svc)
    # The second layer's bytes do not match the config's diff_id.
    config, _ = _image([APP, OTHER])
    bad = (config, [APP, _layer({"other": b"not what the config says\n"})])
    with pytest.raises(InvalidArgument):
        _load(svc, (bad, ["broken"]))
    assert _state(svc) == before


def test_failed_unpack_rolls_back_blobs_and_snapshots(svc: ImageService, monkeypatch) -> None:
    before = _state(svc)
    calls = []
    real = svc._extract

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(svc, "_extract", flaky)
    with pytest.raises(OSError):
        _load(svc, (_image([BASE, APP]), ["app"]))
    assert _state(svc) == before
    assert list(svc.content.statuses()) == []


def test_save_and_load_again(svc: ImageService, tmp_path) -> None:
    img = _image([BASE, APP])
    _load(svc, (img, ["app:1", "app:2"]))
    out = io.BytesIO()
    svc.save(["app:1"], out)
    other = ImageService(tmp_path / "other",
                         snapshotter=NaiveSnapshotter(str(tmp_path / "other" / "snapshots")))
    out.seek(0)
    [s] = other.load(out)
    assert s.id == _sha(img[0]) and s.repo_tags == ["app:1"]
    out = io.BytesIO()
    svc.save([_sha(img[0])[7:19]], out)  # by id: every tag goes along
    out.seek(0)
    [s] = ImageService(tmp_path / "third", snapshotter=NaiveSnapshotter(
        str(tmp_path / "third" / "snapshots"))).load(out)
    assert s.repo_tags == ["app:1", "app:2"]


# --- list / inspect / history -------------------------------------------------------


def test_list_filters(svc: ImageService) -> None:
    a = _image([BASE], created="2021-01-01T00:00:00Z", labels={"tier": "db"})
    b = _image([BASE, APP], created="2022-01-01T00:00:00Z", labels={"tier": "web", "x": ""})
    c = _image([OTHER], created="2023-01-01T00:00:00Z")
    _load(svc, (a, ["db:1"]), (b, ["me/web:1", "me/web:2"]), (c, ["c"]))
    svc.remove("c")
    ids = {"a": _sha(a[0]), "b": _sha(b[0]), "c": _sha(c[0])}
    assert [s.id for s in svc.list()] == [ids["b"], ids["a"]]
    svc.import_rootfs(io.BytesIO(OTHER))  # untagged: dangling
    assert len(svc.list({"dangling": ["true"]})) == 1
    assert len(svc.list({"dangling": ["false"]})) == 2
    assert [s.id for s in svc.list({"label": ["tier=web"]})] == [ids["b"]]
    assert [s.id for s in svc.list({"label": ["tier"]})] == [ids["b"], ids["a"]]
    assert svc.list({"label": ["tier=web", "x=1"]}) == []
    web = svc.list({"reference": ["me/*:1"]})
    assert [s.repo_tags for s in web] == [["me/web:1"]]  # only matching tags shown
    assert [s.id for s in svc.list({"reference": ["db"]})] == [ids["a"]]
    assert svc.list({"reference": ["*"]}) and not svc.list({"reference": ["web"]})
    assert [s.id for s in svc.list({"before": ["me/web:1"], "dangling": ["false"]})] == [ids["a"]]
    assert [s.id for s in svc.list({"since": ["db:1"], "dangling": ["false"]})] == [ids["b"]]
    with pytest.raises(InvalidArgument, match="invalid filter 'bogus'"):
        svc.list({"bogus": ["1"]})
    with pytest.raises(InvalidArgument, match=r"invalid filter 'dangling=\[maybe\]'"):
        svc.list({"dangling": ["maybe"]})
    with pytest.raises(NotFound, match="No such image: nope:latest"):
        svc.list({"before": ["nope"]})


def test_go_path_match() -> None:
    assert go_path_match("me/*", "me/web")
    assert not go_path_match("*", "me/web")
    assert go_path_match("we[a-c]", "web")
    assert not go_path_match("we[^a-c]", "web")
    assert go_path_match("w?b:*", "web:1")


def test_inspect_shape(svc: ImageService) -> None:
    img = _image([BASE, APP], labels={"a": "1"})
    _load(svc, (img, ["app:1"]))
    doc = svc.inspect("app:1")
    assert doc["Id"] == _sha(img[0])
    assert doc["RepoTags"] == ["app:1"] and doc["RepoDigests"] == []
    assert doc["Parent"] == "" and doc["Comment"] == ""
    assert doc["Created"] == "2024-01-01T00:00:00Z"
    assert doc["Config"]["Cmd"] == ["sh"] and doc["Config"]["Labels"] == {"a": "1"}
    assert doc["Architecture"] == "amd64" and doc["Os"] == "linux"
    assert doc["RootFS"] == {"Type": "layers", "Layers": [_sha(BASE), _sha(APP)]}
    assert doc["Size"] == 13
    assert doc["Metadata"]["LastTagTime"].endswith("Z")
    assert svc.inspect(doc["Id"][7:19])["Id"] == doc["Id"]
    with pytest.raises(NotFound, match="No such image: nope:latest"):
        svc.inspect("nope")


def test_inspect_legacy_container_config(svc: ImageService) -> None:
    """Docker's ``container``/``container_config`` (the legacy builder's step), or dockerd's
    zero config for an image without them (imported, BuildKit-built)."""
    _load(svc, (_image([BASE]), ["plain:1"]))
    doc = svc.inspect("plain:1")
    assert list(doc)[5:8] == ["Created", "Container", "ContainerConfig"]
    assert doc["Container"] == ""
    assert doc["ContainerConfig"] == {
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
        "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
        "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
        "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None}
    config, layers = _image([APP])
    raw = json.loads(config)
    raw["container"] = "c" * 64
    raw["container_config"] = {"Hostname": "c" * 12, "Image": "sha256:" + "d" * 64,
                               "Cmd": ["/bin/sh", "-c", "#(nop) VOLUME [/data]"],
                               "Volumes": {"/data": {}}, "Tty": "not a bool"}
    _load(svc, ((json.dumps(raw).encode(), layers), ["built:1"]))
    doc = svc.inspect("built:1")
    assert doc["Container"] == "c" * 64
    cc = doc["ContainerConfig"]
    assert (cc["Hostname"], cc["Image"], cc["Tty"]) == ("c" * 12, "sha256:" + "d" * 64, False)
    assert cc["Cmd"] == ["/bin/sh", "-c", "#(nop) VOLUME [/data]"]
    assert cc["Volumes"] == {"/data": {}}


def test_history(svc: ImageService) -> None:
    _load(svc, (_image([BASE, APP]), ["app:1"]))
    hist = svc.history("app:1")
    assert [h["CreatedBy"] for h in hist] == ['CMD ["sh"]', "step 1", "step 0"]
    assert hist[0]["Id"] == svc.get("app:1").id and hist[0]["Tags"] == ["app:1"]
    assert [h["Id"] for h in hist[1:]] == ["<missing>", "<missing>"]
    assert [h["Size"] for h in hist] == [0, len(b"echo hi\n"), len(b"base\n")]
    assert hist[0]["Created"] == 1704067200


# --- tag / remove / prune / gc --------------------------------------------------------


def test_tag(svc: ImageService) -> None:
    _load(svc, (_image([BASE]), ["base"]))
    svc.tag("base", "localhost:5000/base:v1")
    assert svc.inspect("base")["RepoTags"] == ["base:latest", "localhost:5000/base:v1"]
    with pytest.raises(InvalidArgument):
        svc.tag("base", "base@sha256:" + "a" * 64)
    with pytest.raises(NotFound):
        svc.tag("nope", "x")


def test_remove_tag_only_untags_while_other_names_remain(svc: ImageService) -> None:
    img = _image([BASE])
    _load(svc, (img, ["a:1", "b:1"]))
    assert svc.remove("a:1") == [{"Untagged": "a:1"}]
    assert svc.get("b:1").id == _sha(img[0])
    res = svc.remove("b:1")
    assert res[0] == {"Untagged": "b:1"}
    assert res[1] == {"Deleted": _sha(img[0])}
    assert {"Deleted": _sha(BASE)} in res  # the layer went with its last image
    assert list(svc.snapshotter.walk()) == [] and list(svc.content.walk()) == []


def test_remove_by_id_with_several_repositories_needs_force(svc: ImageService) -> None:
    img = _image([BASE])
    _load(svc, (img, ["a:1", "b:1"]))
    short = _sha(img[0])[7:19]
    with pytest.raises(Conflict) as exc:
        svc.remove(short)
    assert str(exc.value) == (f"conflict: unable to delete {short} (must be forced) - "
                              "image is referenced in multiple repositories")
    res = svc.remove(short, force=True)
    assert {"Untagged": "a:1"} in res and {"Untagged": "b:1"} in res
    assert {"Deleted": _sha(img[0])} in res
    assert svc.list() == []


def test_remove_by_id_with_one_tag(svc: ImageService) -> None:
    img = _image([BASE])
    _load(svc, (img, ["a:1"]))
    assert svc.remove(_sha(img[0]))[:2] == [{"Untagged": "a:1"}, {"Deleted": _sha(img[0])}]


def test_remove_keeps_shared_layers(svc: ImageService) -> None:
    _load(svc, (_image([BASE]), ["base"]), (_image([BASE, APP]), ["app"]))
    res = svc.remove("app")
    chains = oci.chain_ids([_sha(BASE), _sha(APP)])
    assert {"Deleted": chains[1]} in res and {"Deleted": chains[0]} not in res
    assert svc.check() == []
    svc.remove("base")
    assert list(svc.snapshotter.walk()) == []


def test_remove_unknown(svc: ImageService) -> None:
    with pytest.raises(NotFound, match="No such image: ghost:latest"):
        svc.remove("ghost")


def test_prune(svc: ImageService) -> None:
    old = _image([BASE], created="2020-01-01T00:00:00Z")
    _load(svc, (old, ["app"]))
    _load(svc, (_image([BASE, APP]), ["app"]))  # old is now dangling
    res = svc.prune()
    assert res["ImagesDeleted"] == [{"Deleted": _sha(old[0])}]
    assert len(svc.list()) == 1
    assert svc.prune()["ImagesDeleted"] is None
    res = svc.prune(all=True)
    assert {"Untagged": "app:latest"} in res["ImagesDeleted"]
    assert res["SpaceReclaimed"] > 0
    assert svc.list() == [] and list(svc.snapshotter.walk()) == []


def test_gc_removes_only_what_no_image_needs(svc: ImageService) -> None:
    _load(svc, (_image([BASE]), ["base"]))
    # Leftovers of a crash: a blob and a committed snapshot nobody names.
    with svc.content.writer("stray") as w:
        w.write(b"stray")
        stray = w.commit().digest
    mounts = svc.snapshotter.prepare("extract-x", None)
    with open(os.path.join(writable_dir(mounts), "f"), "w") as f:
        f.write("x")
    svc.snapshotter.commit("sha256:" + "9" * 64, "extract-x")
    mounts = svc.rootfs_mounts("base", "ctr-1")  # a container's rootfs is never collected
    res = svc.gc()
    assert res.blobs == [stray]
    assert res.snapshots == ["sha256:" + "9" * 64]
    assert svc.snapshotter.stat("ctr-1").kind is Kind.ACTIVE
    assert svc.check() == []
    assert svc.gc().blobs == []


# --- rootfs ---------------------------------------------------------------------------


def test_rootfs_mounts(svc: ImageService) -> None:
    _load(svc, (_image([BASE, APP]), ["app"]))
    mounts = svc.rootfs_mounts("app", "ctr-1")
    tree = writable_dir(mounts)
    with open(os.path.join(tree, "app", "run"), "rb") as f:
        assert f.read() == b"echo hi\n"
    assert svc.snapshotter.stat("ctr-1").labels["ketch.image"] == svc.get("app").id
    # A container on the image keeps its layers alive through rmi + gc.
    svc.remove("app")
    assert os.path.exists(os.path.join(tree, "etc", "os"))


# --- import ---------------------------------------------------------------------------


def test_import_with_changes(svc: ImageService) -> None:
    s = svc.import_rootfs(io.BytesIO(gzip.compress(BASE)), "imported:v1", changes=[
        "ENV A=1 B=\"two words\"", "ENV C 3", "CMD echo hi", 'ENTRYPOINT ["/bin/sh", "-c"]',
        "WORKDIR /srv", "WORKDIR app", "USER nobody", "LABEL k=v", "EXPOSE 80 53/udp",
        'VOLUME ["/data"]', "STOPSIGNAL SIGINT"])
    assert s.repo_tags == ["imported:v1"] and s.labels == {"k": "v"}
    doc = svc.inspect("imported:v1")
    cfg = doc["Config"]
    assert cfg["Env"] == ["A=1", "B=two words", "C=3"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "nobody"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}} and cfg["StopSignal"] == "SIGINT"
    assert doc["Comment"] == "Imported from -"
    assert doc["RootFS"]["Layers"] == [_sha(BASE)]  # diff_id of the uncompressed tar
    manifest = oci.parse_manifest(svc.content.read(svc.get("imported:v1").manifest_digest))
    assert manifest.layers[0].media_type == oci.MEDIA_TYPE_OCI_LAYER_GZIP
    assert svc.history("imported:v1")[0]["Comment"] == "Imported from -"
    assert svc.check() == []


def test_import_refuses_bad_change_before_writing(svc: ImageService) -> None:
    before = _state(svc)
    with pytest.raises(InvalidArgument, match="^run is not a valid change command$"):
        svc.import_rootfs(io.BytesIO(BASE), "x", changes=["RUN rm -rf /"])
    with pytest.raises(InvalidArgument, match="from is not a valid change command"):
        svc.import_rootfs(io.BytesIO(BASE), changes=["FROM scratch"])
    assert _state(svc) == before


def test_failed_import_leaves_everything_as_before(svc: ImageService) -> None:
    _load(svc, (_image([BASE]), ["base"]))
    before = _state(svc)
    with pytest.raises(InvalidArgument):
        svc.import_rootfs(io.BytesIO(b"this is not a tar archive" * 40), "bad")
    assert _state(svc) == before
    assert list(svc.content.statuses()) == []


def test_apply_changes_errors() -> None:
    cfg = oci.ContainerConfig()
    with pytest.raises(InvalidArgument, match="run is not a valid change command"):
        apply_changes(cfg, ["RUN true"])
    with pytest.raises(InvalidArgument, match="invalid containerPort"):
        apply_changes(cfg, ["EXPOSE eighty"])
    with pytest.raises(InvalidArgument):
        apply_changes(cfg, ["ENV"])


def test_bootstrap_busybox(svc: ImageService) -> None:
    from ketch.image.bootstrap import find_static_busybox

    try:
        find_static_busybox()
    except NotFound:
        pytest.skip("no static busybox on this host")
    before = _state(svc)
    s = svc.bootstrap_busybox("bb:1")
    assert s.repo_tags == ["bb:1"]
    assert svc.bootstrap_busybox("bb:2").id == s.id  # deterministic
    doc = svc.inspect("bb:1")
    assert doc["Config"]["Cmd"] == ["sh"] and doc["Config"]["Env"][0].startswith("PATH=")
    assert svc.history("bb:1")[0]["CreatedBy"] == "ketch image bootstrap busybox"
    tree = writable_dir(svc.rootfs_mounts("bb:1", "c"))
    assert os.path.isfile(os.path.join(tree, "bin", "busybox"))
    assert not os.listdir(os.path.join(svc.root, "tmp"))
    svc.snapshotter.remove("c")
    svc.remove(s.id, force=True)
    assert _state(svc) == before


def test_container_rootfs_holds_its_image(svc: ImageService) -> None:
    img = _image([BASE])
    _load(svc, (img, ["a:1"]))
    svc.rootfs_mounts("a:1", "0123456789abcdef")
    short = _sha(img[0])[7:19]
    with pytest.raises(Conflict) as exc:
        svc.remove(short)
    assert str(exc.value) == (f"conflict: unable to delete {short} (must be forced) - "
                              "image is being used by stopped container 0123456789ab")
    assert svc.prune(all=True)["ImagesDeleted"] is None
    # By name: the tag goes, the image stays (dangling) while the container needs it.
    assert svc.remove("a:1") == [{"Untagged": "a:1"}]
    assert svc.list({"dangling": ["true"]})[0].id == _sha(img[0])
    assert svc.remove(short, force=True)[0] == {"Deleted": _sha(img[0])}


def test_remove_by_id_with_tag_and_digest_of_one_repository(svc: ImageService) -> None:
    img = _image([BASE])
    _load(svc, (img, ["a:1"]))
    svc.metadata.tag("a@sha256:" + "e" * 64, _sha(img[0]))
    res = svc.remove(_sha(img[0])[7:19])
    assert res[:3] == [{"Untagged": "a:1"}, {"Untagged": "a@sha256:" + "e" * 64},
                       {"Deleted": _sha(img[0])}]


def test_remove_last_tag_also_drops_digest_references_of_that_repository(
        svc: ImageService) -> None:
    img = _image([BASE])
    _load(svc, (img, ["a:1", "b:1"]))
    svc.metadata.tag("a@sha256:" + "e" * 64, _sha(img[0]))
    assert svc.remove("a:1") == [{"Untagged": "a:1"}, {"Untagged": "a@sha256:" + "e" * 64}]
    assert svc.inspect("b:1")["RepoDigests"] == []


def test_gc_sweeps_crashed_imports(svc: ImageService) -> None:
    svc.snapshotter.prepare("extract-dead-sha256:x", None)
    with svc.content.writer("image-dead") as w:
        w.write(b"half")
    with svc.content.writer("pull-someone-else") as w:
        w.write(b"mine")
    svc.gc()
    assert list(svc.snapshotter.walk()) == []
    assert [s.ref for s in svc.content.statuses()] == ["pull-someone-else"]


def test_intermediate_images_only_with_all(svc: ImageService) -> None:
    from ketch.image.metadata import ImageRecord

    base = _image([BASE])
    [s] = _load(svc, (base, []))
    child = "sha256:" + "c" * 64
    svc.metadata.add_image(ImageRecord(id=child, manifest_digest=svc.get(s.id).manifest_digest,
                                       created="2030-01-01T00:00:00Z", parent=s.id))
    svc.metadata.tag("child", child)
    assert [x.id for x in svc.list()] == [child]
    assert [x.id for x in svc.list(all=True)] == [child, s.id]
    with pytest.raises(Conflict, match=r"\(cannot be forced\) - image has dependent child"):
        svc.remove(s.id, force=True)
    assert svc.prune()["ImagesDeleted"] is None


def test_summary_json_shape(svc: ImageService) -> None:
    [s] = _load(svc, (_image([BASE]), []))
    assert s.to_json() == {
        "Id": s.id, "ParentId": "", "RepoTags": [], "RepoDigests": [],
        "Created": 1704067200, "Size": 5, "SharedSize": -1, "Labels": {}, "Containers": -1}


def test_check_reports_missing_pieces(svc: ImageService) -> None:
    img = _image([BASE])
    _load(svc, (img, ["a"]))
    rec = svc.get("a")
    svc.content.delete(rec.manifest_digest)
    svc.snapshotter.remove(rec.layers[0].chain_id)
    problems = svc.check()
    assert (ProblemKind.BLOB_MISSING, rec.manifest_digest) in [(p.kind, p.object) for p in problems]
    assert (ProblemKind.SNAPSHOT_MISSING, rec.layers[0].chain_id) in [
        (p.kind, p.object) for p in problems]


def test_healthcheck_change() -> None:
    from ketch.image import oci
    from ketch.image.service import apply_changes

    c = oci.ContainerConfig()
    apply_changes(c, ["HEALTHCHECK --interval=5s --retries=2 CMD test -f /x"])
    assert c.healthcheck is not None
    assert (c.healthcheck.test, c.healthcheck.interval, c.healthcheck.retries) == \
        (["CMD-SHELL", "test -f /x"], 5_000_000_000, 2)
    apply_changes(c, ['HEALTHCHECK CMD ["true"]'])
    assert c.healthcheck.test == ["CMD", "true"]
    apply_changes(c, ["HEALTHCHECK NONE"])
    assert c.healthcheck.test == ["NONE"]
    with pytest.raises(InvalidArgument, match="Unknown flag: bogus"):
        apply_changes(c, ["HEALTHCHECK --bogus=1 CMD true"])
    with pytest.raises(InvalidArgument, match="Missing command"):
        apply_changes(c, ["HEALTHCHECK --interval=1s"])
