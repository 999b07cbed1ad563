"""Pull and push through ketch.engine.distribution, against an in-memory registry.

The registry here is a fake of the client library's Repository (what a real
registry would answer), so what is checked is the engine's part: which blobs
are fetched, in which order layers are unpacked, what is recorded and named,
and the progress messages the docker CLI draws from. The real client against
real registries is tested in tests/integration.
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from tests.unit.image_blobs import layer_tar as _layer
from tests.unit.image_blobs import sha as _sha

from ketch.engine.distribution import (
    Distribution,
    parse_platform,
    progress_bar,
    pull_reference,
)
from ketch.errors import InvalidArgument, NotFound
from ketch.image import oci
from ketch.image.content import Descriptor
from ketch.image.reference import Reference
from ketch.image.service import ImageService
from ketch.image.snapshot.naive import NaiveSnapshotter


@dataclass
class Fetched:
    data: bytes
    digest: str


@dataclass
class Pulled:
    """The client's PulledImage, for a plain manifest."""

    manifest: Fetched
    parsed: oci.Manifest
    config: bytes
    index: None = None

    @property
    def digest(self) -> str:
        return self.manifest.digest


class FakeRepository:
    """One repository of an in-memory registry, shaped as the client's Repository."""

    def __init__(self, registry: FakeRegistry, path: str) -> None:
        self.registry, self.path = registry, path

    def resolve(self, tag_or_digest: str) -> Fetched:
        return self.manifest_for(tag_or_digest, None).manifest

    def manifest_for(self, tag_or_digest: str, platform: Any) -> Pulled:
        key = (self.path, tag_or_digest)
        if key not in self.registry.manifests:
            raise NotFound(f"manifest for {self.path}:{tag_or_digest} not found: "
                           "manifest unknown: manifest unknown")
        raw = self.registry.manifests[key]
        manifest = oci.parse_manifest(raw)
        return Pulled(Fetched(raw, _sha(raw)), manifest,
                      self.registry.blobs[manifest.config.digest])

    def fetch_blob(self, desc: Descriptor, sink: Any, progress: Any = None) -> None:
        with self.registry.lock:
            self.registry.fetched.append(desc.digest)
        data = self.registry.blobs[desc.digest]
        sink.write(data[sink.offset:])
        if progress is not None:
            progress(len(data))

    def tags(self, n: int | None = None) -> list[str]:
        return sorted(t for (p, t) in self.registry.manifests if p == self.path
                      and not t.startswith("sha256:"))

    def push_blob(self, desc: Descriptor, open_blob: Any, progress: Any = None,
                  mount_from: Any = (), chunk_size: int | None = None) -> str:
        if desc.digest in self.registry.blobs:
            return "exists"
        with open_blob() as f:
            data = f.read()
        assert _sha(data) == desc.digest
        self.registry.blobs[desc.digest] = data
        if progress is not None:
            progress(len(data))
        return "pushed"

    def push_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        self.registry.manifests[(self.path, reference)] = data
        self.registry.manifests[(self.path, _sha(data))] = data
        return _sha(data)


class FakeRegistry:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.fetched: list[str] = []
        self.lock = threading.Lock()

    def repository(self, ref: Reference, creds: Any = None) -> FakeRepository:
        return FakeRepository(self, ref.path)

    def close(self) -> None:
        self.closed = True

    def add_image(self, path: str, tag: str, layers: list[bytes], *, gz: bool = True) -> str:
        blobs = [gzip.compress(la, mtime=0) if gz else la for la in layers]
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha(la) for la in layers]},
        }).encode()
        self.blobs[_sha(config)] = config
        for b in blobs:
            self.blobs[_sha(b)] = b
        mt = oci.MEDIA_TYPE_OCI_LAYER_GZIP if gz else oci.MEDIA_TYPE_OCI_LAYER
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": oci.MEDIA_TYPE_OCI_CONFIG, "digest": _sha(config),
                       "size": len(config)},
            "layers": [{"mediaType": mt, "digest": _sha(b), "size": len(b)} for b in blobs],
        }).encode()
        self.manifests[(path, tag)] = manifest
        self.manifests[(path, _sha(manifest))] = manifest
        return _sha(manifest)


BASE = _layer({"etc/os": b"base\n"})
APP = _layer({"app/run": b"echo hi\n"})


@pytest.fixture
def svc(tmp_path) -> ImageService:
    return ImageService(tmp_path / "images",
                        snapshotter=NaiveSnapshotter(str(tmp_path / "images" / "snapshots")))


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def dist(svc, registry):
    d = Distribution(svc, registry, max_downloads=1)  # type: ignore[arg-type]
    yield d
    d.close()


def _statuses(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("status", "") for m in messages]


def test_pull_records_the_image_its_tag_and_digest(svc, registry, dist):
    digest = registry.add_image("me/app", "v1", [BASE, APP])
    out: list[dict[str, Any]] = []
    [res] = dist.pull("127.0.0.1:5000/me/app", "v1", emit=out.append)
    assert res.changed and res.digest == digest
    doc = svc.inspect("127.0.0.1:5000/me/app:v1")
    assert doc["RepoTags"] == ["127.0.0.1:5000/me/app:v1"]
    assert doc["RepoDigests"] == [f"127.0.0.1:5000/me/app@{digest}"]
    assert doc["RootFS"]["Layers"] == [_sha(BASE), _sha(APP)]
    st = _statuses(out)
    assert st[0] == "Pulling from me/app" and out[0]["id"] == "v1"
    assert st.count("Pulling fs layer") == 2 and st.count("Pull complete") == 2
    assert "Waiting" in st          # one download at a time: the second waits
    assert st[-2:] == [f"Digest: {digest}",
                       "Status: Downloaded newer image for 127.0.0.1:5000/me/app:v1"]


def test_pull_again_is_up_to_date_and_fetches_nothing(svc, registry, dist):
    registry.add_image("me/app", "v1", [BASE, APP])
    dist.pull("127.0.0.1:5000/me/app", "v1", emit=lambda m: None)
    registry.fetched.clear()
    out: list[dict[str, Any]] = []
    [res] = dist.pull("127.0.0.1:5000/me/app", "v1", emit=out.append)
    assert not res.changed and registry.fetched == []
    # The image is known: dockerd prints no line for its layers at all.
    assert _statuses(out) == ["Pulling from me/app", f"Digest: {res.digest}",
                              "Status: Image is up to date for 127.0.0.1:5000/me/app:v1"]


def test_shared_base_layer_is_not_fetched_twice(svc, registry, dist):
    registry.add_image("me/base", "1", [BASE])
    registry.add_image("me/app", "1", [BASE, APP])
    dist.pull("127.0.0.1:5000/me/base", "1", emit=lambda m: None)
    registry.fetched.clear()
    out: list[dict[str, Any]] = []
    dist.pull("127.0.0.1:5000/me/app", "1", emit=out.append)
    assert registry.fetched == [_sha(gzip.compress(APP, mtime=0))]
    st = _statuses(out)
    assert st.index("Already exists") < st.index("Pulling fs layer")


def test_pull_by_digest_names_only_the_digest(svc, registry, dist):
    digest = registry.add_image("me/app", "v1", [BASE])
    dist.pull(f"127.0.0.1:5000/me/app@{digest}", "", emit=lambda m: None)
    doc = svc.inspect(f"127.0.0.1:5000/me/app@{digest}")
    assert doc["RepoTags"] == [] and doc["RepoDigests"] == [f"127.0.0.1:5000/me/app@{digest}"]


def test_pull_all_tags(svc, registry, dist):
    registry.add_image("me/app", "a", [BASE])
    registry.add_image("me/app", "b", [BASE, APP])
    out: list[dict[str, Any]] = []
    results = dist.pull("127.0.0.1:5000/me/app", "", emit=out.append)
    assert sorted(r.reference.tag for r in results) == ["a", "b"]
    assert _statuses(out)[-1] == "Status: Downloaded newer image for 127.0.0.1:5000/me/app"


def test_a_blob_that_does_not_match_its_digest_leaves_no_image(svc, registry, dist):
    registry.add_image("me/app", "v1", [BASE, APP])
    bad = _sha(gzip.compress(APP, mtime=0))
    registry.blobs[bad] = gzip.compress(_layer({"evil": b"x"}), mtime=0)
    with pytest.raises(InvalidArgument):
        dist.pull("127.0.0.1:5000/me/app", "v1", emit=lambda m: None)
    assert svc.list(all=True) == []
    assert not svc.content.exists(bad)


def test_missing_tag_is_not_found(dist):
    with pytest.raises(NotFound, match="manifest unknown"):
        dist.pull("127.0.0.1:5000/me/none", "v1", emit=lambda m: None)


def test_push_sends_missing_blobs_then_the_manifest(svc, registry, dist):
    src = FakeRegistry()
    digest = src.add_image("me/app", "v1", [BASE, APP])
    Distribution(svc, src).pull("127.0.0.1:5000/me/app", "v1", emit=lambda m: None)
    svc.tag("127.0.0.1:5000/me/app:v1", "127.0.0.1:6000/other/app:v2")
    out: list[dict[str, Any]] = []
    [pushed] = dist.push("127.0.0.1:6000/other/app", "v2", emit=out.append)
    assert pushed == digest     # the same manifest bytes: the same digest
    assert registry.manifests[("other/app", "v2")] == src.manifests[("me/app", "v1")]
    st = _statuses(out)
    assert st[0] == "The push refers to repository [127.0.0.1:6000/other/app]"
    assert st.count("Preparing") == 2 and st.count("Pushed") == 2
    assert out[-1]["aux"]["Digest"] == digest
    assert st[-2] == f"v2: digest: {digest} size: {len(src.manifests[('me/app', 'v1')])}"
    assert f"127.0.0.1:6000/other/app@{digest}" in svc.inspect(digest.replace(
        digest, "127.0.0.1:6000/other/app:v2"))["RepoDigests"]
    out.clear()
    dist.push("127.0.0.1:6000/other/app", "v2", emit=out.append)
    assert _statuses(out).count("Layer already exists") == 2


def test_blob_locks_go_with_their_last_user(dist):
    with dist._blob_lock("sha256:a"), dist._blob_lock("sha256:b"):
        assert set(dist._blob_locks) == {"sha256:a", "sha256:b"}
    assert dist._blob_locks == {}


def test_push_of_an_unknown_tag(dist):
    out: list[dict[str, Any]] = []
    with pytest.raises(NotFound, match="An image does not exist locally with the tag: "
                                       "127.0.0.1:6000/nope$"):
        dist.push("127.0.0.1:6000/nope", "1", emit=out.append)
    assert _statuses(out) == ["The push refers to repository [127.0.0.1:6000/nope]"]


def test_push_of_a_missing_tag_of_a_known_repository(svc, registry, dist):
    src = FakeRegistry()
    src.add_image("me/app", "v1", [BASE])
    Distribution(svc, src).pull("127.0.0.1:5000/me/app", "v1", emit=lambda m: None)
    with pytest.raises(NotFound, match="tag does not exist: 127.0.0.1:5000/me/app:latest"):
        dist.push("127.0.0.1:5000/me/app", "latest", emit=lambda m: None)


@pytest.mark.parametrize(("image", "tag", "want", "every"), [
    ("busybox", "latest", "docker.io/library/busybox:latest", False),
    ("busybox", "", "docker.io/library/busybox", True),
    ("busybox:1", "", "docker.io/library/busybox:1", False),
    ("localhost:5000/x", "", "localhost:5000/x", True),
    ("localhost:5000/x", "sha256:" + "a" * 64, "localhost:5000/x@sha256:" + "a" * 64, False),
])
def test_pull_reference(image, tag, want, every):
    ref, all_tags = pull_reference(image, tag)
    assert (str(ref), all_tags) == (want, every)


def test_pull_reference_refuses_bad_names():
    with pytest.raises(InvalidArgument, match=r"repository name \(me/UPPER\) must be lowercase"):
        pull_reference("me/UPPER", "latest")
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        pull_reference("me/x:", "")


def test_parse_platform():
    p = parse_platform("linux/arm64/v8")
    assert p is not None and (p.os, p.architecture) == ("linux", "arm64")
    assert parse_platform("") is None
    with pytest.raises(InvalidArgument, match="unknown operating system or architecture"):
        parse_platform("linux//")


def test_progress_bar_as_moby_draws_it():
    assert progress_bar(0, 1000) == "[>" + " " * 50 + "]       0B/1kB"
    assert progress_bar(500, 1000) == "[" + "=" * 25 + ">" + " " * 25 + "]     500B/1kB"
    assert progress_bar(1000, 1000) == "[" + "=" * 50 + ">]      1kB/1kB"
    assert progress_bar(2048, 6) == "[" + "=" * 50 + ">]  2.048kB"   # dockerd's push lines
