"""The image database alone: records, references, Docker's lookup rules, check()."""

from __future__ import annotations

import sqlite3

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.image.metadata import ImageMetadata, ImageRecord, Layer

A = "sha256:" + "a" * 64
AB = "sha256:" + "ab" + "c" * 62
B = "sha256:" + "b" * 64
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _rec(image_id: str, *, parent: str | None = None, created: str = "2024-01-01T00:00:00Z",
         labels: dict[str, str] | None = None) -> ImageRecord:
    return ImageRecord(id=image_id, manifest_digest="sha256:" + "f" * 64, created=created,
                       size=10, parent=parent, labels=labels or {},
                       layers=(Layer(D1, D1, 4), Layer(D2, "sha256:" + "3" * 64, 6)))


@pytest.fixture
def db(tmp_path) -> ImageMetadata:
    return ImageMetadata(tmp_path / "metadata.db")


def test_add_and_get_round_trip(db: ImageMetadata) -> None:
    assert db.add_image(_rec(A, labels={"k": "v"}))
    assert not db.add_image(_rec(A))  # same config, same image
    got = db.get_by_id(A)
    assert got.layers == _rec(A).layers
    assert got.labels == {"k": "v"}
    assert got.chain_id == "sha256:" + "3" * 64
    assert db.get_by_id("a" * 64).id == A
    assert db.chain_ids_in_use() == {D1, "sha256:" + "3" * 64}
    assert db.layer_size(D1) == 4


def test_wal_mode(db: ImageMetadata) -> None:
    con = sqlite3.connect(db.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_tag_normalises_and_moves(db: ImageMetadata) -> None:
    db.add_image(_rec(A))
    db.add_image(_rec(B))
    assert db.tag("busybox", A) is None
    assert db.references_of(A) == ["docker.io/library/busybox:latest"]
    assert db.get_by_ref("docker.io/library/busybox:latest").id == A
    assert db.get_by_id(A).last_tag_time is not None
    assert db.tag("busybox:latest", B) == A  # moved: A is left without names
    assert db.references_of(A) == []
    assert db.get_by_ref("busybox").id == B


def test_digest_references_are_listed_after_tags(db: ImageMetadata) -> None:
    db.add_image(_rec(A))
    db.tag("busybox@" + D1, A)
    db.tag("busybox:1", A)
    assert db.references_of(A) == ["docker.io/library/busybox:1",
                                   "docker.io/library/busybox@" + D1]


def test_untag(db: ImageMetadata) -> None:
    db.add_image(_rec(A))
    db.tag("x:1", A)
    assert db.untag("x:1") == A
    with pytest.raises(NotFound, match="No such image: x:1"):
        db.untag("x:1")


def test_tag_unknown_image(db: ImageMetadata) -> None:
    with pytest.raises(NotFound):
        db.tag("x", A)


def test_resolve_order_and_messages(db: ImageMetadata) -> None:
    db.add_image(_rec(A))
    db.add_image(_rec(AB))
    db.tag("web", A)
    assert db.resolve("web").id == A
    assert db.resolve(A).id == A
    assert db.resolve("aaaa").id == A
    assert db.resolve("sha256:aaaa").id == A
    # moby: an ambiguous prefix is "No such image", like an unknown one.
    with pytest.raises(NotFound, match=r"^No such image: a:latest$"):
        db.resolve("a")
    with pytest.raises(NotFound, match=r"^No such image: nothere:latest$"):
        db.resolve("nothere")
    with pytest.raises(NotFound, match="No such image: sha256:" + "e" * 64):
        db.resolve("sha256:" + "e" * 64)
    with pytest.raises(InvalidArgument):
        db.resolve("UPPER")


def test_delete_image_removes_rows_and_refuses_with_children(db: ImageMetadata) -> None:
    db.add_image(_rec(A))
    db.add_image(_rec(B, parent=A))
    db.tag("p", A)
    with pytest.raises(Conflict, match="dependent child images"):
        db.delete_image(A)
    db.delete_image(B)
    db.delete_image(A)
    assert db.list_images() == []
    assert db.all_references() == {}
    assert db.chain_ids_in_use() == set()


def test_parent_must_exist(db: ImageMetadata) -> None:
    with pytest.raises(NotFound):
        db.add_image(_rec(B, parent=A))


def test_transaction_groups_changes(db: ImageMetadata) -> None:
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.add_image(_rec(A))
            db.tag("x", A)
            raise RuntimeError("boom")
    assert db.list_images() == []
    assert db.all_references() == {}


def test_list_newest_first(db: ImageMetadata) -> None:
    db.add_image(_rec(A, created="2020-01-01T00:00:00Z"))
    db.add_image(_rec(B, created="2024-01-01T00:00:00Z"))
    assert [r.id for r in db.list_images()] == [B, A]


def test_check_healthy_and_broken(db: ImageMetadata) -> None:
    db.add_image(_rec(A))
    db.tag("x", A)
    assert db.check() == []
    con = sqlite3.connect(db.path)
    con.execute("INSERT INTO refs (ref, image_id, kind, added) VALUES ('BAD REF', ?, 'tag', 0)",
                (A,))
    con.execute("DELETE FROM layers WHERE position = 0")
    con.commit()
    con.close()
    problems = db.check()
    assert any("BAD REF" in p for p in problems)
    assert any("layer positions" in p for p in problems)
