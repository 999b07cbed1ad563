"""Mount planning: ``-v``, ``--mount``, ``--tmpfs``, ``--volumes-from`` and image volumes.

The error table and the ``Mounts`` shapes are what Debian's dockerd 20.10
answered on this machine for the same ``docker run``/``docker create``
(``--network none``, busybox, and an image with ``VOLUME /data /empty``
whose /data holds a file, a symlink and a subdirectory owned by 1000:1000,
mode 0750), with the host paths of its data root replaced by the test's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ketch.engine.model import (
    BindOptions,
    ContainerConfig,
    DriverConfig,
    HostConfig,
    MountSpec,
    TmpfsOptions,
    VolumeOptions,
)
from ketch.engine.specgen import PlannedMount
from ketch.errors import InvalidArgument, KetchError, NotFound
from ketch.linux.fake import RecordingSyscalls
from ketch.volume.planner import (
    MountPoint,
    copy_tree,
    copy_up,
    mounts_json,
    parse_all,
    parse_bind,
    plan_mounts,
    remove_mounts,
    start_mounts,
    stop_mounts,
    tmpfs_data,
)
from ketch.volume.store import ANONYMOUS_LABEL, VolumeStore

DAEMON_ROOT = "/tmp/kvolref-24803/root"   # dockerd's root in the captures: under /tmp


class Kernel(RecordingSyscalls):
    """RecordingSyscalls that keeps the mount table it is asked to change."""

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
    s = VolumeStore(str(tmp_path / "root"), syscalls=kernel, mountpoints=lambda: kernel.table)
    yield s
    s.close()


def bind(src: str, dst: str, **opts: Any) -> MountSpec:
    return MountSpec(type="bind", source=src, target=dst,
                     bind_options=BindOptions(**opts) if opts else None)


def vol(src: str, dst: str, *, read_only: bool = False, **opts: Any) -> MountSpec:
    return MountSpec(type="volume", source=src, target=dst, read_only=read_only,
                     volume_options=VolumeOptions(**opts) if opts else None)


def tmpfs(dst: str, src: str = "", **opts: Any) -> MountSpec:
    return MountSpec(type="tmpfs", source=src, target=dst,
                     tmpfs_options=TmpfsOptions(**opts) if opts else None)


def exists_on_host(path: str) -> bool:
    return path in ("/tmp", "/etc")


# --- dockerd's refusals ----------------------------------------------------------------------

VS = "invalid volume specification"
ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("bind to /", {"binds": ["/tmp:/"]},
     f"{VS}: '/tmp:/': invalid mount config for type \"bind\": invalid specification: "
     "destination can't be '/'"),
    ("relative volume target", {"binds": ["vol:rel"]},
     f"{VS}: 'vol:rel': invalid mount config for type \"volume\": invalid mount path: 'rel' "
     "mount path must be absolute"),
    ("relative bind target", {"binds": ["/tmp:x"]},
     f"{VS}: '/tmp:x': invalid mount config for type \"bind\": invalid mount path: 'x' mount "
     "path must be absolute"),
    ("dot bind target", {"binds": ["/tmp:./x"]},
     f"{VS}: '/tmp:./x': invalid mount config for type \"bind\": invalid mount path: './x' "
     "mount path must be absolute"),
    ("unknown mode", {"binds": ["/tmp:/x:bogus"]}, "invalid mode: bogus"),
    ("destination with a mode", {"binds": ["/x:rw"]}, f"{VS}: '/x:rw'"),
    ("two rw modes", {"binds": ["/tmp:/x:ro,rw"]}, "invalid mode: ro,rw"),
    ("rw twice", {"binds": ["/tmp:/x:rw,rw"]}, "invalid mode: rw,rw"),
    ("two propagations", {"binds": ["/tmp:/x:private,rshared"]},
     "invalid mode: private,rshared"),
    ("copy is not a mode", {"binds": ["v3:/x:nocopy,copy"]}, "invalid mode: nocopy,copy"),
    ("two consistencies", {"binds": ["v3:/x:cached,delegated"]},
     "invalid mode: cached,delegated"),
    ("two labels", {"binds": ["a:/x:Z,z"]}, "invalid mode: Z,z"),
    ("windows path", {"binds": ["C:\\foo:/x"]}, "invalid mode: /x"),
    ("too many colons", {"binds": ["a:b:c:d"]}, f"{VS}: 'a:b:c:d'"),
    ("empty source", {"binds": [":/x"]}, f"{VS}: ':/x'"),
    ("nocopy on a bind", {"binds": ["/tmp:/x:nocopy"]},
     f"{VS}: '/tmp:/x:nocopy': invalid mount config for type \"bind\": field VolumeOptions "
     "must not be specified"),
    ("propagation on a volume", {"binds": ["v:/x:rshared"]},
     f"{VS}: 'v:/x:rshared': invalid mount config for type \"volume\": field BindOptions must "
     "not be specified"),
    ("same bind twice", {"binds": ["/tmp:/x", "/etc:/x"]}, "Duplicate mount point: /x"),
    ("same bind, trailing slash", {"binds": ["/tmp:/x", "/etc:/x/"]},
     "Duplicate mount point: /x"),
    ("bind over tmpfs", {"binds": ["/tmp:/x"], "tmpfs": {"/x": ""}},
     "Duplicate mount point: /x"),
    ("bind and --mount", {"binds": ["/tmp:/x"], "mounts": [bind("/etc", "/x")]},
     "Duplicate mount point: /x"),
    ("--mount target as written", {"binds": ["/tmp:/x"], "mounts": [bind("/etc", "/x/")]},
     "Duplicate mount point: /x/"),
    ("--mount twice", {"mounts": [bind("/etc", "/x/"), bind("/etc", "/x")]},
     "Duplicate mount point: /x"),
    ("read-only anonymous volume", {"mounts": [vol("", "/x", read_only=True)]},
     'invalid mount config for type "volume": must not set ReadOnly mode when using '
     "anonymous volumes"),
    ("missing bind source", {"mounts": [bind("/nonexist2", "/x")]},
     'invalid mount config for type "bind": bind source path does not exist: /nonexist2'),
    ("relative bind source", {"mounts": [bind("rel", "/x")]},
     "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be "
     "absolute"),
    ("tmpfs with a source", {"mounts": [tmpfs("/x", src="foo")]},
     'invalid mount config for type "tmpfs": field Source must not be specified'),
    ("bind without a source", {"mounts": [bind("", "/x")]},
     'invalid mount config for type "bind": field Source must not be empty'),
    ("relative volume mount", {"mounts": [vol("v", "rel")]},
     "invalid mount config for type \"volume\": invalid mount path: 'rel' mount path must be "
     "absolute"),
    ("tmpfs on /", {"mounts": [tmpfs("/")]},
     'invalid mount config for type "tmpfs": invalid specification: destination can\'t be '
     "'/'"),
    ("unknown type", {"mounts": [MountSpec(type="bogus", target="/x")]},
     'invalid mount config for type "bogus": mount type unknown'),
    ("no target", {"mounts": [vol("v", "")]},
     'invalid mount config for type "volume": field Target must not be empty'),
    ("shared bind of the daemon's parent", {"mounts": [bind("/tmp", "/x", propagation="shared")]},
     'invalid mount config: must use either propagation mode "rslave" or "rshared" when mount '
     f'source is within the daemon root, daemon root: "{DAEMON_ROOT}", bind mount source: '
     '"/tmp", propagation: "shared"'),
    ("empty --volumes-from", {"volumes_from": [""]},
     "volumes-from specification cannot be an empty string"),
    ("--volumes-from mode", {"volumes_from": ["x:bogus"]}, "invalid mode: bogus"),
    ("--volumes-from propagation", {"volumes_from": ["x:rshared"]}, "invalid mode: rshared"),
    ("--volumes-from nocopy", {"volumes_from": ["x:nocopy"]}, "invalid mode: nocopy"),
]


@pytest.mark.parametrize(("case", "hc", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_dockerd_refusals(case: str, hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_all(ContainerConfig(), HostConfig(**hc), daemon_root=DAEMON_ROOT,
                  exists=exists_on_host, volumes_from=lambda ref: [])
    assert str(exc.value) == message


def test_unknown_volumes_from_container() -> None:
    def lookup(ref: str) -> list[MountPoint]:
        raise NotFound(f"No such container: {ref}")

    with pytest.raises(NotFound, match="^No such container: nonex$"):
        parse_all(ContainerConfig(), HostConfig(volumes_from=["nonex"]), volumes_from=lookup)


def test_bad_names_and_drivers_come_from_the_store(store: VolumeStore) -> None:
    with pytest.raises(InvalidArgument, match='^create bad name!: "bad name!" includes'):
        plan_mounts(ContainerConfig(), HostConfig(binds=["bad name!:/x"]), store)
    with pytest.raises(InvalidArgument, match='^create /abs: "/abs" includes invalid'):
        plan_mounts(ContainerConfig(), HostConfig(mounts=[vol("/abs", "/x")]), store)
    with pytest.raises(NotFound, match=r'^create [0-9a-f]{64}: error looking up volume plugin '
                                       r'foo: plugin "foo" not found$'):
        plan_mounts(ContainerConfig(volumes={"/data": {}}), HostConfig(volume_driver="foo"),
                    store)
    assert store.volumes() == []


def test_failure_part_way_removes_the_volumes_it_made(store: VolumeStore) -> None:
    store.create("existing")
    with pytest.raises(InvalidArgument, match="includes invalid characters"):
        plan_mounts(ContainerConfig(), HostConfig(binds=["new1:/a", "existing:/b", "b!:/c"]),
                    store)
    assert [v.name for v in store.volumes()] == ["existing"]


def test_image_volume_over_a_file(store: VolumeStore, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    with pytest.raises(InvalidArgument) as exc:
        plan_mounts(ContainerConfig(volumes={"/etc/passwd": {}}), HostConfig(), store,
                    rootfs=str(rootfs))
    assert str(exc.value) == f"cannot mount volume over existing file, file exists " \
                             f"{rootfs}/etc/passwd"


def test_tmpfs_data() -> None:
    assert tmpfs_data(1 << 20, 0o1770, None, False) == "mode=1770,size=1m"
    assert tmpfs_data(3 << 30, 0, [["exec"]], True) == "ro,size=3g,exec"
    assert tmpfs_data(1000, 0, None, False) == "size=1000"
    assert tmpfs_data(4096, 0, None, False) == "size=4k"
    with pytest.raises(InvalidArgument, match="^invalid option: nosuid$"):
        tmpfs_data(0, 0, [["nosuid"]], False)


# --- the plans, against dockerd's inspect ----------------------------------------------------


def _by_dest(mounts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["Destination"]: m for m in mounts}


def test_plan_matches_dockerd_c1(store: VolumeStore) -> None:
    """docker create -v named:/data -v /tmp:/b:ro,rslave --tmpfs /t:size=1m
    --mount type=tmpfs,dst=/t2,tmpfs-size=1048576 volimg true"""
    config = ContainerConfig(volumes={"/data": {}, "/empty": {}})
    hc = HostConfig(binds=["named:/data", "/tmp:/b:ro,rslave"], tmpfs={"/t": "size=1m"},
                    mounts=[tmpfs("/t2", size_bytes=1048576)])
    plan = plan_mounts(config, hc, store, daemon_root=DAEMON_ROOT, exists=exists_on_host)
    got = _by_dest(mounts_json(plan.mounts))
    anon = got["/empty"]["Name"]
    assert got == {
        "/data": {"Type": "volume", "Name": "named", "Source": store.path_of("named"),
                  "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True,
                  "Propagation": ""},
        "/b": {"Type": "bind", "Source": "/tmp", "Destination": "/b", "Mode": "ro,rslave",
               "RW": False, "Propagation": "rslave"},
        "/t2": {"Type": "tmpfs", "Source": "", "Destination": "/t2", "Mode": "", "RW": True,
                "Propagation": ""},
        "/empty": {"Type": "volume", "Name": anon, "Source": store.path_of(anon),
                   "Destination": "/empty", "Driver": "local", "Mode": "", "RW": True,
                   "Propagation": ""},
    }
    assert store.get(anon).labels == {ANONYMOUS_LABEL: ""}
    assert sorted(plan.volumes) == sorted(["named", anon])
    assert sorted(plan.created) == sorted(["named", anon])


def test_plan_matches_dockerd_c2(store: VolumeStore) -> None:
    """docker create --mount type=volume,src=mv,dst=/m,volume-nocopy,readonly
    --mount type=bind,src=/etc,dst=/b2
    --mount type=bind,src=/etc,dst=/b3,bind-propagation=shared,bind-nonrecursive
    -v /anon -v ro:/r:ro,nocopy -v /tmp:/t1 -v /etc:/e:rshared
    --mount type=bind,src=/tmp,dst=/t2 volimg true  (-v /anon goes to Config.Volumes)"""
    config = ContainerConfig(volumes={"/data": {}, "/empty": {}, "/anon": {}})
    hc = HostConfig(binds=["ro:/r:ro,nocopy", "/tmp:/t1", "/etc:/e:rshared"],
                    mounts=[vol("mv", "/m", read_only=True, no_copy=True),
                            bind("/etc", "/b2"),
                            bind("/etc", "/b3", propagation="shared", non_recursive=True),
                            bind("/tmp", "/t2")])
    plan = plan_mounts(config, hc, store, daemon_root=DAEMON_ROOT, exists=exists_on_host)
    got = _by_dest(mounts_json(plan.mounts))

    def volume(dest: str, name: str, mode: str = "", rw: bool = True) -> dict[str, Any]:
        return {"Type": "volume", "Name": name, "Source": store.path_of(name),
                "Destination": dest, "Driver": "local", "Mode": mode, "RW": rw,
                "Propagation": ""}

    def host(dest: str, src: str, prop: str, mode: str = "") -> dict[str, Any]:
        return {"Type": "bind", "Source": src, "Destination": dest, "Mode": mode, "RW": True,
                "Propagation": prop}

    assert got == {
        "/b3": host("/b3", "/etc", "shared"),
        "/data": volume("/data", got["/data"]["Name"]),
        "/empty": volume("/empty", got["/empty"]["Name"]),
        "/anon": volume("/anon", got["/anon"]["Name"]),
        "/t1": host("/t1", "/tmp", "rslave"),
        "/e": host("/e", "/etc", "rshared", "rshared"),
        "/m": volume("/m", "mv", "z", rw=False),
        "/b2": host("/b2", "/etc", "rprivate"),
        "/r": volume("/r", "ro", "ro,nocopy", rw=False),
        "/t2": host("/t2", "/tmp", "rslave"),
    }
    points = {m.destination: m for m in plan.mounts}
    assert points["/b3"].non_recursive and not points["/b2"].non_recursive
    assert not points["/m"].copy_data and not points["/r"].copy_data
    assert points["/data"].copy_data and points["/data"].anonymous
    assert points["/t1"].create_source and not points["/b2"].create_source
    assert not points["/m"].anonymous and not points["/r"].anonymous


def test_volumes_from_as_dockerd(store: VolumeStore) -> None:
    """c6: --volumes-from c2:ro; c4: --volumes-from c2 -v /etc:/m."""
    src = plan_mounts(ContainerConfig(volumes={"/data": {}}),
                      HostConfig(binds=["ro:/r:ro,nocopy", "/etc:/e:rshared"],
                                 mounts=[vol("mv", "/m"), tmpfs("/t", size_bytes=4096)]),
                      store, exists=exists_on_host)
    records = [m.to_record() for m in src.mounts]    # what the engine stores

    def lookup(ref: str) -> list[MountPoint]:
        assert ref == "c2"
        return [MountPoint.from_record(r) for r in records]

    ro = plan_mounts(ContainerConfig(), HostConfig(volumes_from=["c2:ro"]), store,
                     volumes_from=lookup)
    got = _by_dest(mounts_json(ro.mounts))
    assert {d: (m["RW"], m["Mode"], m["Propagation"]) for d, m in got.items()} == {
        "/data": (False, "", ""), "/r": (False, "", ""), "/e": (False, "", "rshared"),
        "/m": (False, "", ""), "/t": (False, "", "")}
    assert got["/m"]["Name"] == "mv" and got["/m"]["Source"] == store.path_of("mv")
    assert ro.created == []
    assert all(not m.copy_data for m in ro.mounts)
    # The anonymous volume stays anonymous (rm -v of either container may remove it).
    assert {m.destination for m in ro.mounts if m.anonymous} == {"/data"}

    rw = plan_mounts(ContainerConfig(), HostConfig(volumes_from=["c2"], binds=["/etc:/m"]),
                     store, volumes_from=lookup, exists=exists_on_host)
    got = _by_dest(mounts_json(rw.mounts))
    assert got["/m"] == {"Type": "bind", "Source": "/etc", "Destination": "/m", "Mode": "",
                         "RW": True, "Propagation": "rprivate"}
    assert got["/r"]["RW"] is False and got["/data"]["RW"] is True


def test_image_volume_covered_by_tmpfs_or_mount(store: VolumeStore) -> None:
    config = ContainerConfig(volumes={"/a": {}, "/b/": {}, "/c": {}})
    plan = plan_mounts(config, HostConfig(tmpfs={"/a": ""}, binds=["/etc:/b"]), store,
                       exists=exists_on_host)
    assert [(m.destination, m.type) for m in plan.mounts] == [("/b", "bind"), ("/c", "volume")]


def test_binds_anonymous_volume_and_driver(store: VolumeStore) -> None:
    """Binds ["/anon2"] through the API: an anonymous volume, Mode "z" (dockerd's r3)."""
    plan = plan_mounts(ContainerConfig(), HostConfig(binds=["/anon2"]), store)
    [m] = mounts_json(plan.mounts)
    assert m["Mode"] == "z" and m["Type"] == "volume" and len(m["Name"]) == 64
    assert plan.mounts[0].anonymous
    mp = parse_bind("data:/x:nocopy", "local")
    assert (mp.name, mp.driver, mp.copy_data, mp.rw) == ("data", "local", False, True)


def test_mount_volume_options_create_the_volume(store: VolumeStore) -> None:
    spec = vol("opts", "/x", labels={"a": "b"},
               driver_config=DriverConfig(name="local",
                                          options={"type": "tmpfs", "device": "tmpfs"}))
    plan_mounts(ContainerConfig(), HostConfig(mounts=[spec]), store)
    v = store.get("opts")
    assert v.labels == {"a": "b"} and v.options == {"type": "tmpfs", "device": "tmpfs"}


def test_record_round_trip() -> None:
    mp = parse_bind("/tmp:/x:ro,rslave")
    assert MountPoint.from_record({**mp.to_record(), "future": 1}) == mp


# --- start, stop, rm -------------------------------------------------------------------------


def test_start_stop_rm(store: VolumeStore, kernel: Kernel, tmp_path: Path) -> None:
    host_dir = tmp_path / "made-at-start"
    store.create("tv", options={"type": "tmpfs", "device": "tmpfs"})
    plan = plan_mounts(ContainerConfig(volumes={"/img": {}}),
                       HostConfig(binds=[f"{host_dir}:/h:ro", "tv:/t", "named:/n"],
                                  mounts=[tmpfs("/tm", size_bytes=1 << 20, mode=0o700)]),
                       store)
    planned = start_mounts(plan.mounts, store, "c1")
    assert host_dir.is_dir()
    by = {p.destination: p for p in planned}
    assert by["/h"].source == str(host_dir) and not by["/h"].writable
    assert by["/t"].source == store.path_of("tv") and by["/t"].propagation == ""
    assert (by["/tm"].type, by["/tm"].data) == ("tmpfs", "mode=700,size=1m")
    # Field for field what specgen takes.
    import dataclasses

    assert all(isinstance(PlannedMount(**dataclasses.asdict(p)), PlannedMount)
               for p in planned)
    assert kernel.table == [store.path_of("tv")]
    stop_mounts(plan.mounts, store, "c1")
    assert kernel.table == []
    anon = next(m.name for m in plan.mounts if m.destination == "/img")
    users = {anon: ["other"]}
    # rm -v: the anonymous volume goes unless someone else uses it; named ones stay.
    assert remove_mounts(plan.mounts, store, lambda n: users.get(n, []),
                         remove_volumes=True, container_id="c1") == []
    assert store.exists(anon) and store.exists("named")
    users.clear()
    remove_mounts(plan.mounts, store, lambda n: [], remove_volumes=True)
    assert not store.exists(anon) and store.exists("named") and store.exists("tv")


def test_start_failure_releases(store: VolumeStore, kernel: Kernel) -> None:
    store.create("t1", options={"type": "tmpfs", "device": "tmpfs"})
    store.create("t2", options={"type": "tmpfs", "device": "tmpfs"})
    plan = plan_mounts(ContainerConfig(), HostConfig(binds=["t1:/a", "t2:/b"]), store)
    import errno

    kernel.fail("mount", errno.ENOMEM, times=2)
    kernel.calls.clear()
    with pytest.raises(KetchError, match="failed to mount local volume"):
        # t1's mount fails first: nothing stays referenced.
        start_mounts(plan.mounts, store, "c1")
    assert store.mount_refs("t1") == [] and store.mount_refs("t2") == []


# --- copy-up ---------------------------------------------------------------------------------


def _image_rootfs(root: Path) -> Path:
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "f").write_text("hi\n")
    os.link(data / "f", data / "hard")
    (data / "l").symlink_to("f")
    (data / "sub" / "x").write_bytes(b"\0" * 10)
    os.chmod(data / "sub" / "x", 0o4751)
    os.mkfifo(data / "fifo")
    os.utime(data / "f", (1_000_000, 1_000_000))
    os.chmod(data, 0o750)
    return root


def test_copy_up_fills_empty_volumes_only(store: VolumeStore, tmp_path: Path) -> None:
    rootfs = _image_rootfs(tmp_path / "rootfs")
    store.create("full")
    Path(store.path_of("full"), "mine").write_text("keep")
    plan = plan_mounts(ContainerConfig(volumes={"/data": {}, "/missing": {}}),
                       HostConfig(binds=["full:/data2", "fresh:/data/sub", "skip:/x:nocopy"]),
                       store, rootfs=str(rootfs))
    (rootfs / "data2").mkdir()
    (rootfs / "data2" / "img").write_text("image")
    (rootfs / "x").mkdir()
    (rootfs / "x" / "img").write_text("image")
    filled = copy_up(plan.mounts, store, str(rootfs))
    anon = next(m.name for m in plan.mounts if m.destination == "/data")
    assert sorted(filled) == sorted([anon, "fresh"])
    assert os.listdir(store.path_of("full")) == ["mine"]          # had content: kept
    assert os.listdir(store.path_of("skip")) == []                # nocopy
    dst = Path(store.path_of(anon))
    assert sorted(os.listdir(dst)) == ["f", "fifo", "hard", "l", "sub"]
    assert stat.S_IMODE(dst.stat().st_mode) == 0o750              # the root's mode too
    assert os.readlink(dst / "l") == "f"
    assert (dst / "f").stat().st_ino == (dst / "hard").stat().st_ino
    assert stat.S_ISFIFO((dst / "fifo").lstat().st_mode)
    assert stat.S_IMODE((dst / "sub" / "x").stat().st_mode) == 0o4751
    assert int((dst / "f").stat().st_mtime) == 1_000_000
    assert os.listdir(store.path_of("fresh")) == ["x"]
    # A second copy-up (a restart) changes nothing.
    assert copy_up(plan.mounts, store, str(rootfs)) == []


@pytest.mark.root
def test_copy_tree_keeps_owners(tmp_path: Path) -> None:
    src = _image_rootfs(tmp_path / "rootfs") / "data"
    for p in [src, *src.rglob("*")]:
        os.chown(p, 1000, 1000, follow_symlinks=False)
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_tree(str(src), str(dst))
    for p in [dst, *dst.rglob("*")]:
        st = p.lstat()
        assert (st.st_uid, st.st_gid) == (1000, 1000), p


def test_copy_up_does_not_follow_symlinks_out(store: VolumeStore, tmp_path: Path) -> None:
    outside = tmp_path / "host-secret"
    outside.mkdir()
    (outside / "secret").write_text("no")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "data").symlink_to(str(outside))    # absolute: resolved inside the rootfs
    plan = plan_mounts(ContainerConfig(volumes={"/data": {}}), HostConfig(), store,
                       rootfs=str(rootfs))
    assert copy_up(plan.mounts, store, str(rootfs)) == []
    assert os.listdir(plan.mounts[0].source) == []
