"""The local content store: commit, verify, resume, lock, and nothing half-written visible."""

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.image import content as content_mod
from ketch.image.content import ContentStore, Descriptor, Platform


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    return ContentStore(tmp_path / "content")


def blob_files(store):
    out = []
    for dirpath, _, files in os.walk(os.path.join(store.root, "blobs")):
        out += [os.path.join(dirpath, f) for f in files]
    return out


def ingest_dirs(store):
    path = os.path.join(store.root, "ingest")
    return os.listdir(path) if os.path.isdir(path) else []


def test_write_commit_read(store):
    data = b"hello, ketch"
    with store.writer("r1", expected_digest=sha(data), total=len(data)) as w:
        assert w.offset == 0
        w.write(data[:5])
        w.write(data[5:])
        assert w.offset == len(data)
        assert w.digest() == sha(data)
        desc = w.commit()
    assert desc == Descriptor(media_type="application/octet-stream", digest=sha(data), size=len(data))
    assert store.read(sha(data)) == data
    with store.open(sha(data)) as f:
        assert f.read() == data
    info = store.info(sha(data))
    assert (info.digest, info.size) == (sha(data), len(data))
    assert info.created.tzinfo is not None
    assert store.exists(sha(data))
    path = os.path.join(store.root, "blobs", "sha256", hashlib.sha256(data).hexdigest())
    assert os.path.isfile(path)
    assert os.stat(path).st_mode & 0o222 == 0       # committed blobs are read-only
    assert ingest_dirs(store) == []


def test_commit_without_expected_names_blob_by_its_hash(store):
    with store.writer("r") as w:
        w.write(b"abc")
        assert w.commit().digest == sha(b"abc")


def test_commit_of_existing_blob_is_idempotent(store):
    for _ in range(2):
        with store.writer("same", expected_digest=sha(b"x")) as w:
            w.write(b"x")
            assert w.commit().digest == sha(b"x")
    # A different ref for the same bytes also succeeds and cleans up its ingest.
    with store.writer("other") as w:
        w.write(b"x")
        w.commit()
    assert [i.digest for i in store.walk()] == [sha(b"x")]
    assert ingest_dirs(store) == []


def test_wrong_digest_leaves_nothing(store):
    wanted = sha(b"good")
    with store.writer("r") as w:
        w.write(b"evil")
        with pytest.raises(InvalidArgument) as exc:
            w.commit(expected=wanted)
    assert str(exc.value) == f"unexpected commit digest {sha(b'evil')}, expected {wanted}"
    assert blob_files(store) == []
    assert ingest_dirs(store) == []
    assert not store.exists(sha(b"evil"))


def test_wrong_digest_given_at_open(store):
    with store.writer("r", expected_digest=sha(b"good")) as w:
        w.write(b"bad!")
        with pytest.raises(InvalidArgument, match="unexpected commit digest"):
            w.commit()
    assert blob_files(store) == []


@pytest.mark.parametrize("size", [3, 5])
def test_size_mismatch(store, size):
    with store.writer("r") as w:
        w.write(b"four")
        with pytest.raises(InvalidArgument) as exc:
            w.commit(size=size)
        assert str(exc.value) == f"unexpected commit size 4, expected {size}"
        # The writer stays usable: the download may just not be finished.
        if size == 5:
            w.write(b"!")
            assert w.commit(size=5).digest == sha(b"four!")
    if size == 3:
        assert blob_files(store) == []


def test_commit_checks_total_from_open(store):
    with store.writer("r", total=10) as w:
        w.write(b"short")
        with pytest.raises(InvalidArgument, match="unexpected commit size 5, expected 10"):
            w.commit()


def test_resume_after_partial_write(store):
    data = os.urandom(300_000)
    w = store.writer("layer", expected_digest=sha(data), total=len(data))
    w.write(data[:123_456])
    w.close()                                   # the connection dropped
    [status] = store.statuses()
    assert (status.ref, status.offset, status.total) == ("layer", 123_456, len(data))
    assert store.status("layer").offset == 123_456
    with store.writer("layer", expected_digest=sha(data)) as w2:
        assert w2.offset == 123_456
        assert w2.total == len(data)            # remembered in the ingest
        w2.write(data[w2.offset:])
        assert w2.digest() == sha(data)
        w2.commit()
    assert store.read(sha(data)) == data
    assert store.statuses() == []


def test_resume_after_exception_in_with_block(store):
    with pytest.raises(RuntimeError):
        with store.writer("r") as w:
            w.write(b"abc")
            raise RuntimeError("network")
    with store.writer("r") as w:
        assert w.offset == 3
        w.write(b"def")
        assert w.commit().digest == sha(b"abcdef")


def test_resume_with_different_total_conflicts(store):
    store.writer("r", total=10).close()
    with pytest.raises(Conflict, match="differs"):
        store.writer("r", total=11)
    store.writer("r", total=10).close()         # the lock was released


def test_truncate_restarts(store):
    with store.writer("r") as w:
        w.write(b"garbage")
        w.truncate(3)
        assert w.offset == 3 and w.digest() == sha(b"gar")
        w.truncate(0)
        w.write(b"fresh")
        assert w.commit().digest == sha(b"fresh")
    with store.writer("r2") as w, pytest.raises(InvalidArgument):
        w.truncate(1)


def test_same_ref_conflicts_in_process(store):
    w = store.writer("busy")
    with pytest.raises(Conflict) as exc:
        store.writer("busy")
    assert str(exc.value) == "ref busy locked"
    with pytest.raises(Conflict):
        store.abort("busy")
    store.writer("other").abort()               # other refs are independent
    w.close()
    store.writer("busy").abort()


def test_same_ref_conflicts_across_processes(store):
    script = textwrap.dedent(f"""
        import sys
        from ketch.image.content import ContentStore
        w = ContentStore({store.root!r}).writer("shared")
        w.write(b"from child")
        print("locked", flush=True)
        sys.stdin.readline()
        w.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(Conflict, match="ref shared locked"):
            store.writer("shared")
    finally:
        child.stdin.write("\n")
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    with store.writer("shared") as w:           # the child's exit freed the lock
        assert w.offset == len(b"from child")


def test_abort_removes_ingest(store):
    w = store.writer("r")
    w.write(b"abc")
    w.abort()
    assert ingest_dirs(store) == [] and blob_files(store) == []
    w.abort()                                   # twice is fine
    with pytest.raises(Conflict, match="closed"):
        w.write(b"more")
    store.writer("r2").close()
    store.abort("r2")
    assert store.statuses() == []
    with pytest.raises(NotFound):
        store.abort("r2")
    with pytest.raises(NotFound):
        store.status("r2")


def test_walk_and_delete(store):
    blobs = [b"one", b"two", b"three"]
    for i, data in enumerate(blobs):
        with store.writer(f"r{i}") as w:
            w.write(data)
            w.commit()
    assert sorted(i.digest for i in store.walk()) == sorted(sha(b) for b in blobs)
    assert {i.digest: i.size for i in store.walk()}[sha(b"three")] == 5
    store.delete(sha(b"two"))
    assert not store.exists(sha(b"two"))
    assert len(list(store.walk())) == 2
    with pytest.raises(NotFound) as exc:
        store.delete(sha(b"two"))
    assert str(exc.value) == f"content digest {sha(b'two')} not found"


def test_missing_blob_is_not_found(store):
    d = sha(b"nothing")
    for call in (store.info, store.read, store.open, store.verify):
        with pytest.raises(NotFound, match=f"^content digest {d} not found$"):
            call(d)
    assert store.exists(d) is False
    assert list(store.walk()) == []
    assert store.statuses() == []


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "nonsense", ""])
def test_bad_digest_is_invalid_argument(store, bad):
    with pytest.raises(InvalidArgument):
        store.info(bad)
    with pytest.raises(InvalidArgument):
        store.writer("r", expected_digest=bad or "x")


def test_verify_detects_corruption(store):
    with store.writer("r") as w:
        w.write(b"pristine")
        d = w.commit().digest
    assert store.verify(d) is True
    path = os.path.join(store.root, "blobs", "sha256", d.split(":")[1])
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"P")
    assert store.verify(d) is False


def test_hashing_streams_in_chunks(store, monkeypatch):
    monkeypatch.setattr(content_mod, "CHUNK", 7)   # force many reads
    data = os.urandom(1000)
    w = store.writer("big")
    w.write(data[:500])
    w.close()
    with store.writer("big") as w:                # resume rehashes the prefix in chunks
        w.write(data[500:])
        d = w.commit().digest
    assert d == sha(data)
    assert store.verify(d)


def test_sha512_content(store):
    data = b"longer hash"
    d512 = "sha512:" + hashlib.sha512(data).hexdigest()
    with store.writer("r", expected_digest=d512) as w:
        w.write(data)
        assert w.commit().digest == d512
    assert store.read(d512) == data
    assert [i.digest for i in store.walk()] == [d512]
    # A sha256 writer asked to commit as sha512 rehashes the file.
    with store.writer("r2") as w:
        w.write(b"other")
        assert w.commit(expected="sha512:" + hashlib.sha512(b"other").hexdigest())


def test_debris_in_blobs_is_never_a_blob(store):
    """A crash can leave temp files beside blobs; none of them is ever reported."""
    with store.writer("r") as w:
        w.write(b"real")
        d = w.commit().digest
    hexpart = d.split(":")[1]
    blobdir = os.path.join(store.root, "blobs", "sha256")
    for name in (".tmp-" + hexpart, hexpart + ".partial", "0" * 63, "G" * 64):
        with open(os.path.join(blobdir, name), "wb") as f:
            f.write(b"junk")
    os.mkdir(os.path.join(blobdir, "f" * 64))        # a directory with a digest name
    os.makedirs(os.path.join(store.root, "blobs", "md5"))
    assert [i.digest for i in store.walk()] == [d]
    assert not store.exists("sha256:" + "f" * 64)


def test_uncommitted_bytes_are_invisible(store):
    w = store.writer("r")
    w.write(b"pending")
    assert not store.exists(sha(b"pending"))
    assert list(store.walk()) == [] and blob_files(store) == []
    w.close()
    assert list(store.walk()) == []


def test_ingest_layout(store):
    w = store.writer("my-ref", total=3)
    w.write(b"abc")
    w.close()
    key = hashlib.sha256(b"my-ref").hexdigest()
    path = os.path.join(store.root, "ingest", key)
    assert sorted(os.listdir(path)) == ["data", "ref", "startedat", "total", "updatedat"]
    with open(os.path.join(path, "ref")) as f:
        assert f.read() == "my-ref"
    status = store.status("my-ref")
    assert status.updated_at >= status.started_at


def test_empty_ref_is_invalid(store):
    with pytest.raises(InvalidArgument):
        store.writer("")


def test_descriptor_json_round_trip():
    d = sha(b"x")
    raw = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": d, "size": 7,
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8",
                     "os.version": "10", "os.features": ["f"]},
        "unknownExtension": True,
    }
    desc = Descriptor.from_json(raw)
    assert desc.platform == Platform("arm64", "linux", "10", ["f"], "v8")
    out = desc.to_json()
    raw.pop("unknownExtension")
    assert out == raw
    assert Descriptor(media_type="", digest=d, size=0).to_json() == {
        "mediaType": "", "digest": d, "size": 0}


@pytest.mark.parametrize("raw, message", [
    ({"mediaType": "m", "digest": "sha256:abc", "size": 1}, "descriptor.digest: invalid checksum digest length"),
    ({"mediaType": "m", "digest": sha(b"x"), "size": -1}, "descriptor.size: must not be negative"),
    ({"mediaType": "m", "digest": sha(b"x"), "size": "1"}, "descriptor.size: expected integer, got string"),
])
def test_descriptor_from_json_rejects(raw, message):
    with pytest.raises(InvalidArgument) as exc:
        Descriptor.from_json(raw)
    assert str(exc.value) == message
