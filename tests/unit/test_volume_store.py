"""The volume store: names, options, anonymous volumes, listing, removal, prune, mount refcount.

Messages are those dockerd 20.10 printed for the same requests (``docker
volume create/rm``, ``docker run -v``), captured on this machine. The
kernel is a recording fake (``ketch.linux.fake.RecordingSyscalls``) with a
mount table the test keeps, so refcounting is checked without root; the
integration tests mount for real.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound, NotSupported, System
from ketch.linux.fake import RecordingSyscalls
from ketch.linux.syscalls import MS_BIND
from ketch.volume.store import (
    ANONYMOUS_LABEL,
    VolumeStore,
    mount_flags,
    rfc3339,
)


class Kernel(RecordingSyscalls):
    """RecordingSyscalls that also keeps the mount table it is asked to change."""

    def __init__(self) -> None:
        super().__init__()
        self.table: list[str] = []

    def mount(self, source: str | None, target: str, fstype: str | None,
              flags: int = 0, data: str | None = None) -> None:
        super().mount(source, target, fstype, flags, data)
        self.table.append(target)

    def umount2(self, target: str, flags: int = 0) -> None:
        super().umount2(target, flags)
        self.table.remove(target)


@pytest.fixture
def kernel() -> Kernel:
    return Kernel()


@pytest.fixture
def store(tmp_path: Path, kernel: Kernel) -> Iterator[VolumeStore]:
    s = VolumeStore(str(tmp_path), syscalls=kernel, mountpoints=lambda: list(kernel.table))
    yield s
    s.close()


# --- create ----------------------------------------------------------------------------------


def test_create_lays_out_dirs_and_json(store: VolumeStore, tmp_path: Path) -> None:
    v = store.create("data", labels={"x": "1", "y": ""})
    data = tmp_path / "volumes" / "data" / "_data"
    assert data.is_dir() and v.mountpoint == str(data)
    assert oct((tmp_path / "volumes" / "data").stat().st_mode & 0o777) == "0o701"
    assert oct(data.stat().st_mode & 0o777) == "0o755"
    doc = v.to_json()
    assert list(doc) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                         "Scope"]
    assert doc["Driver"] == "local" and doc["Scope"] == "local" and doc["Options"] is None
    assert doc["Labels"] == {"x": "1", "y": ""}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", doc["CreatedAt"])
    assert not v.anonymous
    # Created again: the same volume, unchanged (labels are not merged), as dockerd.
    again = store.create("data", labels={"new": "1"})
    assert again == v
    assert store.ensure("data") == (v, False)
    made, created = store.ensure("other")
    assert created and made.name == "other"
    assert store.get("data").to_json()["Labels"] == {"x": "1", "y": ""}


def test_unnamed_volume_is_anonymous(store: VolumeStore) -> None:
    v = store.create()
    assert re.fullmatch(r"[0-9a-f]{64}", v.name)
    assert v.labels == {ANONYMOUS_LABEL: ""} and v.anonymous


def test_empty_labels_and_options_are_null(store: VolumeStore) -> None:
    doc = store.create("plain", labels={}, options={}).to_json()
    assert doc["Labels"] is None and doc["Options"] is None


@pytest.mark.parametrize(("name", "driver", "options", "kind", "message"), [
    ("a", "", None, InvalidArgument,
     "create a: volume name is too short, names should be at least two alphanumeric characters"),
    ("bad!", "", None, InvalidArgument,
     'create bad!: "bad!" includes invalid characters for a local volume name, only '
     '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
     "use absolute path"),
    ("rel/path", "", None, InvalidArgument,
     'create rel/path: "rel/path" includes invalid characters for a local volume name, only '
     '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
     "use absolute path"),
    ("x1", "foo", None, NotFound,
     'create x1: error looking up volume plugin foo: plugin "foo" not found'),
    ("x2", "", {"foo": "bar"}, InvalidArgument, 'create x2: invalid option: "foo"'),
    ("x3", "", {"type": "tmpfs"}, InvalidArgument,
     'create x3: missing required option: "device"'),
    ("x4", "", {"device": "tmpfs"}, InvalidArgument,
     'create x4: missing required option: "type"'),
    ("x5", "", {"o": "size=1m"}, InvalidArgument,
     'create x5: missing required option: "device"'),
    ("x6", "", {"size": "1g"}, NotSupported,
     "create x6: quota size requested but no quota support"),
])
def test_create_refusals(store: VolumeStore, name: str, driver: str,
                         options: dict[str, str] | None, kind: type[Exception],
                         message: str) -> None:
    with pytest.raises(kind) as exc:
        store.create(name, driver, options=options)
    assert str(exc.value) == message
    assert store.volumes() == []


def test_get_missing(store: VolumeStore) -> None:
    with pytest.raises(NotFound, match="^get nope: no such volume$"):
        store.get("nope")


def test_rfc3339_is_go_format() -> None:
    text = rfc3339(0)
    assert text.startswith("1970-01-01T") or text.startswith("1969-12-31T")
    assert text.endswith("Z") or re.search(r"[+-]\d\d:\d\d$", text)


def test_store_survives_reopen(tmp_path: Path, kernel: Kernel) -> None:
    s = VolumeStore(str(tmp_path), syscalls=kernel, mountpoints=lambda: kernel.table)
    v = s.create("keep", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    s.close()
    s2 = VolumeStore(str(tmp_path), syscalls=kernel, mountpoints=lambda: kernel.table)
    assert s2.get("keep") == v
    s2.close()


# --- list ----------------------------------------------------------------------------------


def test_list_filters(store: VolumeStore) -> None:
    store.create("web-data", labels={"app": "web", "tier": "front"})
    store.create("db-data", labels={"app": "db"})
    anon = store.create().name
    users = {"db-data": ["c1"]}

    def names(**filters: list[str]) -> list[str]:
        return [v.name for v in store.list_volumes(filters, users=lambda n: users.get(n, []))]

    assert names() == sorted(["web-data", "db-data", anon])
    assert names(name=["data"]) == ["db-data", "web-data"]          # substring (regexp) match
    assert names(name=["^web"]) == ["web-data"]
    assert names(label=["app"]) == ["db-data", "web-data"]
    assert names(label=["app=web"]) == ["web-data"]
    assert names(label=["app=web", "tier=front"]) == ["web-data"]
    assert names(label=[ANONYMOUS_LABEL]) == [anon]
    assert names(driver=["local"]) == sorted(["web-data", "db-data", anon])
    assert names(driver=["other"]) == []
    assert names(dangling=["true"]) == sorted(["web-data", anon])
    assert names(dangling=["0"]) == ["db-data"]
    with pytest.raises(InvalidArgument, match=r"^invalid filter 'dangling=\[maybe\]'$"):
        names(dangling=["maybe"])
    with pytest.raises(InvalidArgument, match="^invalid filter 'foo'$"):
        names(foo=["x"])


# --- remove and prune ------------------------------------------------------------------------


def test_remove_refuses_in_use_and_deletes_data(store: VolumeStore, tmp_path: Path) -> None:
    v = store.create("named")
    Path(v.mountpoint, "f").write_text("hi")
    with pytest.raises(Conflict) as exc:
        store.remove("named", users=["e06c01a01bce", "abc"])
    assert str(exc.value) == "remove named: volume is in use - [abc, e06c01a01bce]"
    store.mount("named", "running1")
    with pytest.raises(Conflict, match=r"volume is in use - \[running1\]"):
        store.remove("named")
    store.unmount("named", "running1")
    store.remove("named")
    assert not (tmp_path / "volumes" / "named").exists()
    with pytest.raises(NotFound, match="^get named: no such volume$"):
        store.remove("named")


def test_remove_never_deletes_through_a_mount(store: VolumeStore, kernel: Kernel) -> None:
    v = store.create("bindvol", options={"type": "none", "device": "/srv", "o": "bind"})
    kernel.table.append(v.mountpoint + "/nested")   # someone else's mount under the volume
    with pytest.raises(System, match="still mounted"):
        store.remove("bindvol")
    assert os.path.isdir(v.mountpoint) and store.exists("bindvol")


def test_prune_anonymous_only_by_default(store: VolumeStore) -> None:
    store.create("named1")
    store.create("named2", labels={"keep": "1"})
    a1 = store.create()
    a2 = store.create(labels={"team": "x"})
    Path(a1.mountpoint, "blob").write_bytes(b"x" * 1000)
    used = {a2.name: ["c9"]}
    report = store.prune({}, users=lambda n: used.get(n, []))
    assert report == {"VolumesDeleted": [a1.name], "SpaceReclaimed": 1000}
    # all=true: the named ones too, but never a used one; label filters apply.
    report = store.prune({"all": ["true"], "label!": ["keep"]},
                         users=lambda n: used.get(n, []))
    assert report["VolumesDeleted"] == ["named1"]
    # An API client before 1.42 means "all".
    report = store.prune({}, users=lambda n: used.get(n, []), all_volumes=True)
    assert report["VolumesDeleted"] == ["named2"]
    assert [v.name for v in store.volumes()] == [a2.name]
    assert store.prune({}) == {"VolumesDeleted": [a2.name], "SpaceReclaimed": 0}


def test_prune_filter_errors(store: VolumeStore) -> None:
    with pytest.raises(InvalidArgument, match="^invalid filter 'until'$"):
        store.prune({"until": ["1h"]})
    with pytest.raises(InvalidArgument, match=r"^invalid filter 'all=\[maybe\]'$"):
        store.prune({"all": ["maybe"]})


def test_disk_usage(store: VolumeStore) -> None:
    v = store.create("sized")
    Path(v.mountpoint, "a").write_bytes(b"1234")
    os.link(Path(v.mountpoint, "a"), Path(v.mountpoint, "b"))    # counted once
    (Path(v.mountpoint) / "d").mkdir()
    Path(v.mountpoint, "d", "c").write_bytes(b"12")
    [doc] = store.disk_usage(lambda n: ["c1", "c2"])
    assert doc["Name"] == "sized" and doc["UsageData"] == {"Size": 6, "RefCount": 2}


# --- mount refcount ----------------------------------------------------------------------------


def test_plain_volume_needs_no_kernel(store: VolumeStore, kernel: Kernel) -> None:
    v = store.create("plain")
    assert store.mount("plain", "c1") == v.mountpoint
    store.unmount("plain", "c1")
    assert kernel.calls == []


def test_tmpfs_volume_mounted_once_and_unmounted_by_last_user(store: VolumeStore,
                                                              kernel: Kernel) -> None:
    v = store.create("tv", options={"type": "tmpfs", "device": "tmpfs",
                                    "o": "size=1m,uid=1000,noexec"})
    assert store.mount("tv", "c1") == v.mountpoint
    store.mount("tv", "c2")
    store.mount("tv", "c2")                       # the same ref twice counts once
    [m] = kernel.named("mount")
    assert m.args == ("tmpfs", v.mountpoint, "tmpfs", 0x8, "size=1m,uid=1000")
    assert store.mount_refs("tv") == ["c1", "c2"]
    store.unmount("tv", "c1")
    assert kernel.named("umount2") == []
    store.unmount("tv", "c2")
    assert [c.args for c in kernel.named("umount2")] == [(v.mountpoint, 0)]
    assert kernel.table == []


def test_bind_volume_and_release_all(store: VolumeStore, kernel: Kernel) -> None:
    v = store.create("bv", options={"type": "none", "device": "/etc", "o": "bind"})
    store.create("tv", options={"type": "tmpfs", "device": "tmpfs"})
    store.mount("bv", "c1")
    store.mount("tv", "c1")
    assert kernel.named("mount")[0].args == ("/etc", v.mountpoint, "none", MS_BIND, None)
    assert store.release_all("c1") == ["bv", "tv"]
    assert kernel.table == []


def test_mount_failure_message_is_dockerds(store: VolumeStore, kernel: Kernel) -> None:
    v = store.create("bv2", options={"type": "none", "device": "/nonexist3", "o": "bind"})
    kernel.fail("mount", errno.ENOENT)
    with pytest.raises(System) as exc:
        store.mount("bv2", "c1")
    assert str(exc.value) == (
        f"error while mounting volume '{v.mountpoint}': failed to mount local volume: "
        f"mount /nonexist3:{v.mountpoint}, flags: 0x1000: no such file or directory")
    assert store.mount_refs("bv2") == []
    store.create("ev", options={"type": "ext4", "device": "/dev/nonexist"})
    kernel.fail("mount", errno.ENOENT)
    with pytest.raises(System, match="failed to mount local volume: mount /dev/nonexist:"
                                     ".*/ev/_data: no such file or directory$"):
        store.mount("ev", "c1")


def test_busy_unmount_detaches(store: VolumeStore, kernel: Kernel) -> None:
    store.create("tv", options={"type": "tmpfs", "device": "tmpfs"})
    store.mount("tv", "c1")
    kernel.fail("umount2", errno.EBUSY)
    store.unmount("tv", "c1")
    assert [c.args[1] for c in kernel.named("umount2")] == [0, 2]


def test_reconcile_drops_dead_refs(store: VolumeStore, kernel: Kernel) -> None:
    store.create("tv", options={"type": "tmpfs", "device": "tmpfs"})
    store.mount("tv", "dead")
    store.mount("tv", "live")
    assert store.reconcile({"live"}) == ["tv"]
    assert store.mount_refs("tv") == ["live"] and kernel.table
    assert store.reconcile(set()) == ["tv"]
    assert kernel.table == []


def test_mount_flags() -> None:
    assert mount_flags("bind") == (MS_BIND, "")
    assert mount_flags("ro,size=1m,nosuid,uid=0") == (0x1 | 0x2, "size=1m,uid=0")
    assert mount_flags("") == (0, "")
    assert mount_flags("addr=10.0.0.1,rw,nfsvers=4")[1] == "addr=10.0.0.1,nfsvers=4"
