"""The registry's store: names, verified uploads, manifests and what they reference, tags, referrers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.image_blobs import OCI_INDEX, OCI_MANIFEST, sha
from tests.unit.image_blobs import oci_manifest as image_manifest

from ketch.registry.server import errors as E
from ketch.registry.server.errors import RegistryError
from ketch.registry.server.fsdriver import FSDriver
from ketch.registry.server.store import Store, check_name, check_tag

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def code_of(exc: pytest.ExceptionInfo[RegistryError]) -> str:
    return exc.value.code.code


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(FSDriver(str(tmp_path / "reg")))


def push_blob(store: Store, name: str, data: bytes) -> str:
    digest = sha(data)
    s = store.open_upload(name, store.start_upload(name).upload_id)
    s.write(data)
    s.finish(digest)
    return digest


def push_image(store: Store, name: str, tag: str, layer: bytes = b"layer",
               **extra: Any) -> tuple[str, bytes]:
    push_blob(store, name, b"{}")
    push_blob(store, name, layer)
    data = image_manifest(b"{}", [layer], **extra)
    return store.put_manifest(name, tag, data, OCI_MANIFEST).digest, data


@pytest.mark.parametrize("name", ["a", "a/b", "a-b/c_d/e.f", "a__b", "0/1", "x" * 255])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../a", "a/../b", "A", "a/", "/a", "a//b", "_a",
                                  "a/_layers", "a b", "a%2fb", "-a", "a.", "x" * 256])
def test_bad_names(name: str) -> None:
    with pytest.raises(RegistryError) as exc:
        check_name(name)
    assert code_of(exc) == "NAME_INVALID"


@pytest.mark.parametrize("tag", ["", ".a", "-a", "a" * 129, "a/b", "a:b"])
def test_bad_tags(tag: str) -> None:
    with pytest.raises(RegistryError) as exc:
        check_tag(tag)
    assert code_of(exc) == "TAG_INVALID"


def test_chunked_upload_verified_and_linked(store: Store) -> None:
    up = store.start_upload("app")
    for part in (b"hello ", b"world"):
        s = store.open_upload("app", up.upload_id)
        s.write(part)
        s.close()
    assert store.upload_status("app", up.upload_id).size == 11
    s = store.open_upload("app", up.upload_id)
    info = s.finish(sha(b"hello world"))
    assert info.size == 11
    assert store.stat_blob("app", info.digest).size == 11
    with store.open_blob("app", info.digest, 6) as f:
        assert f.read() == b"world"
    # the session is gone
    with pytest.raises(RegistryError) as exc:
        store.open_upload("app", up.upload_id)
    assert code_of(exc) == "BLOB_UPLOAD_UNKNOWN"
    # another repository does not see the blob
    with pytest.raises(RegistryError) as exc:
        store.stat_blob("other", info.digest)
    assert code_of(exc) == "BLOB_UNKNOWN"


def test_upload_resumed_by_another_store_rehashes(store: Store) -> None:
    up = store.start_upload("app")
    s = store.open_upload("app", up.upload_id)
    s.write(b"abc")
    s.close()
    fresh = Store(store.driver)          # a restarted server: no hash state in memory
    s = fresh.open_upload("app", up.upload_id)
    s.write(b"def")
    assert s.finish(sha(b"abcdef")).size == 6


def test_sha512_digest(store: Store) -> None:
    data = b"x" * 1000
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    s = store.open_upload("app", store.start_upload("app").upload_id)
    s.write(data)
    assert s.finish(digest).digest == digest
    assert store.stat_blob("app", digest).size == 1000


def test_wrong_digest_stores_nothing(store: Store) -> None:
    up = store.start_upload("app")
    s = store.open_upload("app", up.upload_id)
    s.write(b"truncated")
    with pytest.raises(RegistryError) as exc:
        s.finish(sha(b"truncated and more"))
    assert code_of(exc) == "DIGEST_INVALID"
    assert list(store.driver.walk("/")) == []
    with pytest.raises(RegistryError):
        store.stat_blob("app", sha(b"truncated"))


def test_malformed_digest_keeps_the_upload(store: Store) -> None:
    up = store.start_upload("app")
    s = store.open_upload("app", up.upload_id)
    s.write(b"abc")
    with pytest.raises(RegistryError) as exc:
        s.finish("sha256:nothex")
    assert code_of(exc) == "DIGEST_INVALID"
    s = store.open_upload("app", up.upload_id)
    assert s.finish(sha(b"abc")).size == 3


def test_upload_is_one_request_at_a_time(store: Store) -> None:
    up = store.start_upload("app")
    s = store.open_upload("app", up.upload_id)
    with pytest.raises(RegistryError) as exc:
        store.open_upload("app", up.upload_id)
    assert code_of(exc) == "BLOB_UPLOAD_INVALID"
    s.close()
    store.cancel_upload("app", up.upload_id)
    with pytest.raises(RegistryError) as exc:
        store.upload_status("app", up.upload_id)
    assert code_of(exc) == "BLOB_UPLOAD_UNKNOWN"


def test_mount_and_delete_blob(store: Store) -> None:
    digest = push_blob(store, "src", b"shared")
    assert store.mount_blob("dst", "src", digest) is not None
    assert store.stat_blob("dst", digest).size == 6
    assert store.mount_blob("dst2", "nowhere", digest) is None
    store.delete_blob("dst", digest)
    with pytest.raises(RegistryError):
        store.stat_blob("dst", digest)
    assert store.stat_blob("src", digest).size == 6       # still in its other repository
    with pytest.raises(RegistryError) as exc:
        store.delete_blob("dst", digest)
    assert code_of(exc) == "BLOB_UNKNOWN"


def test_put_and_get_manifest_by_tag_and_digest(store: Store) -> None:
    digest, data = push_image(store, "app", "v1")
    rec = store.get_manifest("app", "v1")
    assert (rec.digest, rec.data, rec.media_type) == (digest, data, OCI_MANIFEST)
    assert store.get_manifest("app", digest).data == data
    # a manifest is also a blob of its repository (containerd fetches them so)
    assert store.stat_blob("app", digest).size == len(data)
    assert store.tags("app") == ["v1"]
    assert store.repositories() == ["app"]


def test_manifest_without_media_type_takes_content_type(store: Store) -> None:
    push_blob(store, "app", b"{}")
    doc = json.loads(image_manifest(b"{}", []))
    del doc["mediaType"]
    rec = store.put_manifest("app", "t", json.dumps(doc).encode(), OCI_MANIFEST)
    assert store.get_manifest("app", "t").media_type == OCI_MANIFEST == rec.media_type


def test_manifest_missing_blob(store: Store) -> None:
    push_blob(store, "app", b"{}")
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", "v1", image_manifest(b"{}", [b"never pushed"]), OCI_MANIFEST)
    assert code_of(exc) == "MANIFEST_BLOB_UNKNOWN"
    assert exc.value.detail == sha(b"never pushed")
    with pytest.raises(RegistryError):
        store.get_manifest("app", "v1")


def test_manifest_blob_of_another_repository_is_unknown(store: Store) -> None:
    push_blob(store, "other", b"{}")
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", "v1", image_manifest(b"{}", []), OCI_MANIFEST)
    assert code_of(exc) == "MANIFEST_BLOB_UNKNOWN"


@pytest.mark.parametrize("data, content_type", [
    (b"not json", OCI_MANIFEST),
    (b"[]", OCI_MANIFEST),
    (json.dumps({"schemaVersion": 1, "name": "x"}).encode(), None),
    (json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(), None),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode(), OCI_MANIFEST),
])
def test_invalid_manifests(store: Store, data: bytes, content_type: str | None) -> None:
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", "v1", data, content_type)
    assert code_of(exc) == "MANIFEST_INVALID"


def test_content_type_disagreeing_with_media_type(store: Store) -> None:
    push_blob(store, "app", b"{}")
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", "v1", image_manifest(b"{}", []), DOCKER_MANIFEST)
    assert code_of(exc) == "MANIFEST_INVALID"


def test_blob_size_mismatch_in_manifest(store: Store) -> None:
    push_blob(store, "app", b"{}")
    doc = json.loads(image_manifest(b"{}", []))
    doc["config"]["size"] = 3
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", "v1", json.dumps(doc).encode(), OCI_MANIFEST)
    assert code_of(exc) == "MANIFEST_INVALID"


def test_manifest_too_big(tmp_path: Path) -> None:
    store = Store(FSDriver(str(tmp_path)), max_manifest_size=100)
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", "v1", b" " * 101, OCI_MANIFEST)
    assert code_of(exc) == "SIZE_INVALID" and exc.value.status == 413


def test_put_by_digest_checks_digest(store: Store) -> None:
    push_blob(store, "app", b"{}")
    data = image_manifest(b"{}", [])
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", sha(b"other"), data, OCI_MANIFEST)
    assert code_of(exc) == "DIGEST_INVALID"
    rec = store.put_manifest("app", sha(data), data, OCI_MANIFEST)
    assert rec.digest == sha(data)
    assert store.tags("app") == []


def test_index_needs_its_manifests(store: Store) -> None:
    child, child_data = push_image(store, "app", "child")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": len(child_data),
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    rec = store.put_manifest("app", "multi", json.dumps(index).encode(), OCI_INDEX)
    assert rec.references == (child,)
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": sha(b"missing"), "size": 1})
    with pytest.raises(RegistryError) as exc:
        store.put_manifest("app", "multi2", json.dumps(index).encode(), OCI_INDEX)
    assert code_of(exc) == "MANIFEST_BLOB_UNKNOWN"


def test_delete_manifest_and_tags(store: Store) -> None:
    digest, _ = push_image(store, "app", "v1")
    store.put_manifest("app", "v2", store.get_manifest("app", "v1").data, OCI_MANIFEST)
    store.delete_manifest("app", "v2")               # a tag only
    assert store.tags("app") == ["v1"]
    assert store.get_manifest("app", digest).digest == digest
    store.delete_manifest("app", digest)             # the manifest and every tag on it
    assert store.tags("app") == []
    with pytest.raises(RegistryError) as exc:
        store.get_manifest("app", digest)
    assert code_of(exc) == "MANIFEST_UNKNOWN"
    with pytest.raises(RegistryError) as exc:
        store.delete_manifest("app", "v1")
    assert code_of(exc) == "MANIFEST_UNKNOWN"


def test_tags_of_unknown_repository(store: Store) -> None:
    with pytest.raises(RegistryError) as exc:
        store.tags("nobody")
    assert exc.value.code is E.NAME_UNKNOWN


def test_referrers(store: Store) -> None:
    subject, subject_data = push_image(store, "app", "v1")
    subj = {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_data)}
    push_blob(store, "app", b"sig")
    sbom = image_manifest(b"{}", [b"sig"], artifactType="application/spdx+json", subject=subj,
                          annotations={"k": "v"})
    rec = store.put_manifest("app", sha(sbom), sbom, OCI_MANIFEST)
    assert rec.subject == subject
    sig = image_manifest(b"{}", [b"sig"], artifactType="application/x-sig", subject=subj)
    store.put_manifest("app", sha(sig), sig, OCI_MANIFEST)
    refs = store.referrers("app", subject)
    assert sorted(r["digest"] for r in refs) == sorted([sha(sbom), sha(sig)])
    only = store.referrers("app", subject, "application/spdx+json")
    assert only == [{"mediaType": OCI_MANIFEST, "digest": sha(sbom), "size": len(sbom),
                     "artifactType": "application/spdx+json", "annotations": {"k": "v"}}]
    # a subject need not exist, and a deleted referrer is no longer listed
    assert store.referrers("app", sha(b"nothing")) == []
    store.delete_manifest("app", sha(sig))
    assert [r["digest"] for r in store.referrers("app", subject)] == [sha(sbom)]


def test_catalog_nested_names(store: Store) -> None:
    for name in ("b", "a/x", "a", "a/x/y"):
        push_image(store, name, "t")
    assert store.repositories() == ["a", "a/x", "a/x/y", "b"]


def test_purge_spares_a_session_still_being_started(store: Store, tmp_path: Path) -> None:
    """A session whose start time is not written yet is as old as its directory: a
    purge at that moment (the server's start-up purge racing a first push) must not
    take it; one left without it by a crash long ago goes."""
    import os
    import time

    started = store.start_upload("app")
    fresh = tmp_path / "reg" / "repositories" / "app" / "_uploads" / "11111111-1111-4111-8111-111111111111"
    fresh.mkdir(parents=True)
    stale = fresh.with_name("22222222-2222-4222-8222-222222222222")
    stale.mkdir()
    long_ago = time.time() - 30 * 86400
    os.utime(stale, (long_ago, long_ago))
    gone = store.purge_uploads(7 * 86400)
    assert gone == [("app", stale.name)]
    assert fresh.is_dir() and not stale.exists()
    assert [u for u, _ in store.uploads("app")] == sorted([started.upload_id, fresh.name])
