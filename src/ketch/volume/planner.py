"""A container's mounts, planned as dockerd plans them (``registerMountPoints``).

At create, ``plan_mounts`` reads ``HostConfig.VolumesFrom``, ``Binds`` (``-v``),
``Mounts`` (``--mount``) and ``Tmpfs`` and the image's ``VOLUME``s
(``Config.Volumes``), validates them with dockerd's messages, creates the
volumes they name (and an anonymous one per uncovered image volume), and
answers ``MountPoint``s, the records the engine keeps with the container:

    plan = plan_mounts(config, host_config, store, volumes_from=engine.mount_points_of,
                       daemon_root=root, rootfs=merged_rootfs)
    copy_up(plan.mounts, store, merged_rootfs)                   # still at create
    planned = start_mounts(plan.mounts, store, cid)              # at start -> specgen
    stop_mounts(plan.mounts, store, cid)                         # when it stops
    remove_mounts(plan.mounts, store, users, remove_volumes=v)   # at rm (-v)
    mounts_json(plan.mounts)                                     # inspect's "Mounts"

Precedence is dockerd's: a ``-v`` or ``--mount`` replaces what
``--volumes-from`` brought to the same destination; ``-v`` and ``--mount``
(and ``-v`` and ``--tmpfs``) may not share one ("Duplicate mount point");
an image volume is only made where nothing else is mounted.
``HostConfig.Tmpfs`` is checked here but mounted by specgen (``make_spec``
adds it), so it is not among the mount points, as in ``docker inspect``.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, NotSupported, System
from ketch.runtime.rootfs import secure_join
from ketch.volume.store import LOCAL, VolumeStore

RW_MODES = frozenset({"rw", "ro"})
LABEL_MODES = frozenset({"z", "Z"})
PROPAGATION_MODES = frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared"})
COPY_MODES = frozenset({"nocopy"})
CONSISTENCY_MODES = frozenset({"consistent", "cached", "delegated"})
DEFAULT_PROPAGATION = "rprivate"
TMPFS_OPTIONS = frozenset({"exec", "noexec"})


# --- inputs: the engine's parsed config, read through these shapes ---------------------------
# (``ketch.engine.model``'s HostConfig, MountSpec and ContainerConfig fit them; the
# volume layer sits below the engine and does not import it.)

class BindOptionsLike(Protocol):
    @property
    def propagation(self) -> str: ...
    @property
    def non_recursive(self) -> bool: ...
    @property
    def create_mountpoint(self) -> bool: ...
    @property
    def read_only_non_recursive(self) -> bool: ...
    @property
    def read_only_force_recursive(self) -> bool: ...


class DriverConfigLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def options(self) -> Mapping[str, str] | None: ...


class VolumeOptionsLike(Protocol):
    @property
    def no_copy(self) -> bool: ...
    @property
    def labels(self) -> Mapping[str, str] | None: ...
    @property
    def subpath(self) -> str: ...
    @property
    def driver_config(self) -> DriverConfigLike | None: ...


class TmpfsOptionsLike(Protocol):
    @property
    def size_bytes(self) -> int: ...
    @property
    def mode(self) -> int: ...
    @property
    def options(self) -> Sequence[Sequence[str]] | None: ...


class MountSpecLike(Protocol):
    """One ``HostConfig.Mounts`` entry (``ketch.engine.model.MountSpec``)."""

    @property
    def type(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def bind_options(self) -> BindOptionsLike | None: ...
    @property
    def volume_options(self) -> VolumeOptionsLike | None: ...
    @property
    def tmpfs_options(self) -> TmpfsOptionsLike | None: ...


class HostConfigLike(Protocol):
    @property
    def binds(self) -> Sequence[str] | None: ...
    @property
    def mounts(self) -> Sequence[MountSpecLike] | None: ...
    @property
    def tmpfs(self) -> Mapping[str, str] | None: ...
    @property
    def volumes_from(self) -> Sequence[str] | None: ...
    @property
    def volume_driver(self) -> str: ...


class ContainerConfigLike(Protocol):
    @property
    def volumes(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class _Bind:
    propagation: str = ""
    non_recursive: bool = False
    create_mountpoint: bool = False
    read_only_non_recursive: bool = False
    read_only_force_recursive: bool = False


@dataclass(frozen=True, slots=True)
class _Driver:
    name: str = ""
    options: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class _VolumeOptions:
    no_copy: bool = False
    labels: Mapping[str, str] | None = None
    subpath: str = ""
    driver_config: _Driver | None = None


@dataclass(frozen=True, slots=True)
class _Spec:
    """A ``-v`` read as the ``--mount`` it means (moby builds a mount.Mount the same way)."""

    type: str
    source: str
    target: str
    read_only: bool
    bind_options: _Bind | None = None
    volume_options: _VolumeOptions | None = None
    tmpfs_options: TmpfsOptionsLike | None = None


@dataclass(slots=True)
class HostMount:
    """A mount ready for the spec: field for field ``ketch.engine.specgen.PlannedMount``
    (``PlannedMount(**dataclasses.asdict(m))``)."""

    destination: str
    source: str = ""
    type: str = "bind"
    writable: bool = True
    propagation: str = "rprivate"
    non_recursive: bool = False
    read_only_non_recursive: bool = False
    data: str = ""


@dataclass(slots=True)
class MountPoint:
    """One mount of a container, as dockerd keeps it in ``container.MountPoints``.

    The engine stores these with the container (``to_record``/``from_record``)
    and hands them back at start, stop and rm.
    """

    type: str                       # "bind" | "volume" | "tmpfs"
    destination: str
    source: str = ""                # a bind's host path; a volume's Mountpoint
    name: str = ""                  # the volume's name
    driver: str = ""
    mode: str = ""                  # what the user wrote after the second colon
    rw: bool = True
    propagation: str = ""
    copy_data: bool = False         # copy the image's content in when the volume is empty
    anonymous: bool = False         # no source given: ``rm -v`` removes the volume
    image_volume: bool = False      # from the image's VOLUME (Config.Volumes)
    create_source: bool = False     # ``-v /host:/dst`` makes /host at start when missing
    non_recursive: bool = False
    read_only_non_recursive: bool = False
    read_only_force_recursive: bool = False
    tmpfs_data: str = ""            # ``size=1m,mode=1770`` of a ``--mount type=tmpfs``
    driver_options: dict[str, str] | None = None   # --mount volume-opt, used at creation
    labels: dict[str, str] | None = None           # --mount volume-label, used at creation

    def to_json(self) -> dict[str, Any]:
        """One entry of inspect's ``Mounts`` (moby's types.MountPoint, with its omitempty)."""
        out: dict[str, Any] = {"Type": self.type}
        if self.name:
            out["Name"] = self.name
        out["Source"] = self.source
        out["Destination"] = self.destination
        if self.driver:
            out["Driver"] = self.driver
        out.update({"Mode": self.mode, "RW": self.rw, "Propagation": self.propagation})
        return out

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MountPoint:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass(slots=True)
class MountPlan:
    """What ``plan_mounts`` decided: the mount points by destination, and the volumes
    they use (``created``: the ones this plan made, for the engine to remove if the
    create fails later)."""

    mounts: list[MountPoint] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


# (container name or id) -> that container's mount points; NotFound if there is none.
VolumesFrom = Callable[[str], Sequence[MountPoint]]


# --- modes and errors ---------------------------------------------------------------------

def valid_mode(mode: str) -> bool:
    """moby's linuxValidMountMode: known words, at most one of each kind."""
    if mode == "":
        return True
    counts = [0, 0, 0, 0, 0]
    for o in mode.split(","):
        for i, kind in enumerate((RW_MODES, LABEL_MODES, PROPAGATION_MODES, COPY_MODES,
                                  CONSISTENCY_MODES)):
            if o in kind:
                counts[i] += 1
                break
        else:
            return False
    return max(counts) <= 1


def read_write(mode: str) -> bool:
    return valid_mode(mode) and "ro" not in mode.split(",")


def _propagation_of(mode: str) -> str | None:
    for o in mode.split(","):
        if o in PROPAGATION_MODES:
            return o
    return None


def invalid_spec(raw: str) -> InvalidArgument:
    return InvalidArgument(f"invalid volume specification: '{raw}'")


class MountConfigError(InvalidArgument):
    """moby's errMountConfig: "invalid mount config for type "bind": ..."."""

    def __init__(self, type_: str, why: str) -> None:
        super().__init__(f'invalid mount config for type "{type_}": {why}')


def _clean(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/")) if path else "."


def _check_target(type_: str, target: str) -> None:
    if not target:
        raise MountConfigError(type_, "field Target must not be empty")
    if _clean(target) in ("/", "//"):
        raise MountConfigError(type_, "invalid specification: destination can't be '/'")
    if not target.replace("\\", "/").startswith("/"):
        raise MountConfigError(type_, f"invalid mount path: '{target}' mount path must be "
                                      "absolute")


def tmpfs_data(size: int, mode: int, options: Sequence[Sequence[str]] | None,
               read_only: bool) -> str:
    """moby's ConvertTmpfsOptions: "ro,mode=1770,size=1m" from --mount's tmpfs options."""
    parts = ["ro"] if read_only else []
    if mode:
        parts.append(f"mode={mode:o}")
    if size:
        suffix = ""
        for s, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % div == 0:
                size, suffix = size // div, s
                break
        parts.append(f"size={size}{suffix}")
    for opt in options or ():
        if len(opt) < 1 or len(opt) > 2:
            raise InvalidArgument("invalid option array length")
        if opt[0] not in TMPFS_OPTIONS:
            raise InvalidArgument("invalid option: " + opt[0])
        parts.append(opt[0] if len(opt) == 1 else f"{opt[0]}={opt[1]}")
    return ",".join(parts)


# --- parsing: -v and --mount -----------------------------------------------------------------

def parse_mount_spec(m: MountSpecLike, *, check_source: bool = True,
                     exists: Callable[[str], bool] = os.path.exists) -> MountPoint:
    """A ``--mount`` (``HostConfig.Mounts`` entry) validated and turned into a mount point.

    ``check_source``: a bind's source must exist (not for ``-v``, whose source
    dockerd creates at start).
    """
    t = m.type
    _check_target(t, m.target)
    bo, vo, to = m.bind_options, m.volume_options, m.tmpfs_options
    dest = _clean(m.target)
    if t == "bind":
        if not m.source:
            raise MountConfigError(t, "field Source must not be empty")
        if bo is not None and bo.propagation and bo.propagation not in PROPAGATION_MODES:
            raise MountConfigError(t, f"invalid propagation mode: {bo.propagation}")
        if vo is not None:
            raise MountConfigError(t, "field VolumeOptions must not be specified")
        if not m.source.replace("\\", "/").startswith("/"):
            raise MountConfigError(t, f"invalid mount path: '{m.source}' mount path must be "
                                      "absolute")
        create = bool(bo and bo.create_mountpoint)
        if check_source and not create and not exists(m.source):
            raise MountConfigError(t, f"bind source path does not exist: {m.source}")
        return MountPoint(type="bind", destination=dest, source=_clean(m.source),
                          rw=not m.read_only,
                          propagation=(bo.propagation if bo and bo.propagation
                                       else DEFAULT_PROPAGATION),
                          create_source=create,
                          non_recursive=bool(bo and bo.non_recursive),
                          read_only_non_recursive=bool(bo and bo.read_only_non_recursive),
                          read_only_force_recursive=bool(bo and bo.read_only_force_recursive))
    if t == "volume":
        if bo is not None:
            raise MountConfigError(t, "field BindOptions must not be specified")
        anonymous = not m.source
        if vo is not None and vo.subpath:
            if anonymous:
                raise MountConfigError(t, "must not set Subpath when using anonymous volumes")
            raise NotSupported("volume subpaths (VolumeOptions.Subpath) are not supported "
                               "by ketch yet")
        if m.read_only and anonymous:
            raise MountConfigError(t, "must not set ReadOnly mode when using anonymous volumes")
        dc = vo.driver_config if vo is not None else None
        return MountPoint(type="volume", destination=dest, name=m.source, rw=not m.read_only,
                          copy_data=not (vo is not None and vo.no_copy), anonymous=anonymous,
                          driver=dc.name if dc is not None else "",
                          driver_options=dict(dc.options) if dc is not None and dc.options
                          else None,
                          labels=dict(vo.labels) if vo is not None and vo.labels else None)
    if t == "tmpfs":
        if bo is not None:
            raise MountConfigError(t, "field BindOptions must not be specified")
        if m.source:
            raise MountConfigError(t, "field Source must not be specified")
        try:
            data = tmpfs_data(to.size_bytes if to else 0, to.mode if to else 0,
                              to.options if to else None, m.read_only)
        except InvalidArgument as exc:
            raise MountConfigError(t, exc.message) from None
        return MountPoint(type="tmpfs", destination=dest, rw=not m.read_only, tmpfs_data=data)
    raise MountConfigError(t, "mount type unknown")


def parse_bind(raw: str, volume_driver: str = "") -> MountPoint:
    """One ``-v`` (``HostConfig.Binds`` entry): ``name:/dst[:mode]``, ``/host:/dst[:mode]``
    or ``/dst``, as moby's ParseMountRaw reads it."""
    arr = raw.split(":", 3)
    if arr[0] == "":
        raise invalid_spec(raw)
    mode = ""
    if len(arr) == 1:
        source, target = "", arr[0]
    elif len(arr) == 2:
        if valid_mode(arr[1]):
            raise invalid_spec(raw)  # "/foo:rw": a destination with a mode, no source
        source, target = arr
    elif len(arr) == 3:
        source, target, mode = arr
    else:
        raise invalid_spec(raw)
    if not valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    kind = "bind" if source.startswith("/") else "volume"
    vo: _VolumeOptions | None = None
    if volume_driver and kind == "volume":
        vo = _VolumeOptions(driver_config=_Driver(name=volume_driver))
    if "nocopy" in mode.split(","):
        vo = dataclasses.replace(vo or _VolumeOptions(), no_copy=True)
    prop = _propagation_of(mode)
    spec = _Spec(type=kind, source=source, target=target, read_only=not read_write(mode),
                 bind_options=_Bind(propagation=prop) if prop is not None else None,
                 volume_options=vo)
    try:
        mp = parse_mount_spec(spec, check_source=False)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{invalid_spec(raw).message}: {exc.message}") from None
    mp.mode = mode
    if mp.type == "bind":
        mp.create_source = True
    return mp


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """``container[:ro|rw]`` -> (container, mode); propagation and copy modes refused."""
    if not spec:
        raise InvalidArgument("volumes-from specification cannot be an empty string")
    cid, _, mode = spec.partition(":")
    if not mode:
        return cid, "rw"
    if (not valid_mode(mode) or _propagation_of(mode) is not None
            or "nocopy" in mode.split(",")):
        raise InvalidArgument(f"invalid mode: {mode}")
    return cid, mode


def check_daemon_root(mp: MountPoint, daemon_root: str, explicit_propagation: bool) -> None:
    """moby's validateBindDaemonRoot: a bind of (or above) the daemon's root must not be
    private, or the root's mounts (other containers' rootfs) would be pinned in it.
    Without an explicit propagation it becomes ``rslave``."""
    if mp.type != "bind" or not daemon_root:
        return
    # Plain string prefixes, as dockerd compares them.
    if not (mp.source.startswith(daemon_root) or daemon_root.startswith(mp.source)):
        return
    if not explicit_propagation:
        mp.propagation = "rslave"
        return
    if mp.propagation in ("rslave", "rshared"):
        return
    raise InvalidArgument(
        'invalid mount config: must use either propagation mode "rslave" or "rshared" when '
        f'mount source is within the daemon root, daemon root: "{daemon_root}", bind mount '
        f'source: "{mp.source}", propagation: "{mp.propagation}"')


# --- planning --------------------------------------------------------------------------------

def parse_all(config: ContainerConfigLike, host_config: HostConfigLike, *,
              volumes_from: VolumesFrom | None = None, daemon_root: str = "",
              exists: Callable[[str], bool] = os.path.exists) -> list[MountPoint]:
    """Every mount point of the container, validated, volumes not created yet.

    Image volumes (``Config.Volumes``) not covered by a mount or a tmpfs come
    last, as anonymous volumes with ``copy_data``.
    """
    hc = host_config
    points: dict[str, MountPoint] = {}
    tmpfs = {_clean(d) for d in (hc.tmpfs or {})}

    for spec in hc.volumes_from or []:
        ref, mode = parse_volumes_from(spec)
        if volumes_from is None:
            raise NotFound(f"No such container: {ref}")
        for m in volumes_from(ref):
            points[m.destination] = dataclasses.replace(
                m, mode="", rw=m.rw and read_write(mode), copy_data=False,
                create_source=False, driver_options=None, labels=None)

    binds: set[str] = set()
    for raw in hc.binds or []:
        mp = parse_bind(raw, hc.volume_driver)
        if mp.destination in binds or mp.destination in tmpfs:
            raise InvalidArgument(f"Duplicate mount point: {mp.destination}")
        check_daemon_root(mp, daemon_root, _propagation_of(mp.mode) is not None)
        binds.add(mp.destination)
        points[mp.destination] = mp

    for ms in hc.mounts or []:
        mp = parse_mount_spec(ms, exists=exists)
        explicit = bool(ms.bind_options and ms.bind_options.propagation)
        check_daemon_root(mp, daemon_root, explicit)
        if mp.destination in binds:
            raise InvalidArgument(f"Duplicate mount point: {ms.target}")
        binds.add(mp.destination)
        points[mp.destination] = mp

    for raw in (config.volumes or {}):
        dest = _clean(raw)
        if not dest.startswith("/"):
            raise InvalidArgument(f"invalid mount path: '{raw}' mount path must be absolute")
        if dest in points or dest in tmpfs:
            continue
        points[dest] = MountPoint(type="volume", destination=dest, rw=True, copy_data=True,
                                  anonymous=True, driver=hc.volume_driver,
                                  image_volume=True)
    return list(points.values())


def plan_mounts(config: ContainerConfigLike, host_config: HostConfigLike,
                store: VolumeStore, *,
                volumes_from: VolumesFrom | None = None, daemon_root: str = "",
                rootfs: str | None = None,
                exists: Callable[[str], bool] = os.path.exists) -> MountPlan:
    """Validate everything, then create the volumes (so a bad ``-v`` makes none).

    ``rootfs`` (the container's root as the image gives it) lets an image volume
    be refused over a file, as dockerd does; without it that check is skipped.
    On a failure part way, the volumes created so far are removed again.
    """
    points = parse_all(config, host_config, volumes_from=volumes_from,
                       daemon_root=daemon_root, exists=exists)
    plan = MountPlan()
    try:
        for mp in points:
            if mp.type != "volume" or mp.source:
                continue  # a bind, a tmpfs, or a volume that --volumes-from brought
            if mp.image_volume and rootfs is not None:
                host = secure_join(rootfs, mp.destination)
                if os.path.exists(host) and not os.path.isdir(host):
                    raise InvalidArgument("cannot mount volume over existing file, "
                                          f"file exists {host}")
            v, made = store.ensure(mp.name, mp.driver, options=mp.driver_options,
                                   labels=mp.labels)
            if made:
                plan.created.append(v.name)
            mp.name, mp.source, mp.driver = v.name, v.mountpoint, v.driver
            mp.driver_options = mp.labels = None
            if not mp.image_volume and mp.driver == LOCAL and not mp.mode:
                mp.mode = "z"  # moby's setBindModeIfNull for local volumes of -v and --mount
    except BaseException:
        for name in plan.created:
            try:
                store.remove(name)
            except KetchError:
                pass
        raise
    plan.mounts = points
    plan.volumes = sorted({m.name for m in points if m.type == "volume"})
    return plan


# --- copy-up ---------------------------------------------------------------------------------

def _copy_meta(src_st: os.stat_result, dst: str) -> None:
    os.chown(dst, src_st.st_uid, src_st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(src_st.st_mode):
        os.chmod(dst, stat.S_IMODE(src_st.st_mode))
    os.utime(dst, ns=(src_st.st_atime_ns, src_st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: str, dst: str) -> None:
    """``src``'s content into the existing ``dst``: files, symlinks, hardlinks, devices,
    fifos, owners, modes and times kept (and ``dst`` itself gets ``src``'s)."""
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target_dir = dst if rel == "." else os.path.join(dst, rel)
        for name in sorted(dirnames + filenames):
            s = os.path.join(dirpath, name)
            d = os.path.join(target_dir, name)
            st = os.lstat(s)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, 0o700)
                dirs.append((d, st))
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], d)
                continue
            if stat.S_ISREG(mode):
                shutil.copyfile(s, d, follow_symlinks=False)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                os.mknod(d, mode, st.st_rdev)
            else:
                continue  # sockets are not content
            _copy_meta(st, d)
            if st.st_nlink > 1:
                links[key] = d
        # os.walk does not descend into symlinked directories: they were copied as links.
        dirnames[:] = [n for n in dirnames if not os.path.islink(os.path.join(dirpath, n))]
    # Directories last, deepest first, so their times survive the files written in them.
    for d, st in reversed(dirs):
        _copy_meta(st, d)
    _copy_meta(os.lstat(src), dst)


def copy_up(mounts: Sequence[MountPoint], store: VolumeStore, rootfs: str) -> list[str]:
    """Docker's copy of image content into new volumes, at create: for each volume
    mount with ``copy_data`` whose path is a directory in ``rootfs`` (the container's
    root, image content visible), copy it in when the volume is empty. Returns the
    names of the volumes that received content."""
    filled: list[str] = []
    for mp in mounts:
        if mp.type != "volume" or not mp.copy_data or not mp.name:
            continue
        src = secure_join(rootfs, mp.destination)
        if not os.path.isdir(src) or os.path.islink(src):
            continue
        ref = "copy-up-" + secrets.token_hex(8)
        path = store.mount(mp.name, ref)
        try:
            if os.listdir(path):
                continue  # a volume with content keeps it
            copy_tree(src, path)
            filled.append(mp.name)
        except OSError as exc:
            raise System(f"copying image content of {mp.destination} into volume "
                         f"{mp.name}: {exc}") from exc
        finally:
            store.unmount(mp.name, ref)
    return filled


# --- start, stop, rm -------------------------------------------------------------------------

def start_mounts(mounts: Sequence[MountPoint], store: VolumeStore,
                 container_id: str) -> list[HostMount]:
    """At start: volumes mounted (counted for ``container_id``), ``-v`` sources made,
    and the mounts for ``specgen.make_spec`` (as PlannedMounts). A failure undoes this
    container's mounts."""
    out: list[HostMount] = []
    try:
        for mp in mounts:
            if mp.type == "tmpfs":
                out.append(HostMount(destination=mp.destination, source="tmpfs",
                                        type="tmpfs", writable=mp.rw, propagation="",
                                        data=mp.tmpfs_data))
                continue
            source = mp.source
            if mp.type == "volume":
                source = store.mount(mp.name, container_id)
            elif mp.create_source and not os.path.lexists(source):
                try:
                    os.makedirs(source, 0o755, exist_ok=True)
                except OSError as exc:
                    raise System(f"error while creating mount source path '{source}': "
                                 f"{exc}") from exc
            out.append(HostMount(destination=mp.destination, source=source, type="bind",
                                    writable=mp.rw, propagation=mp.propagation,
                                    non_recursive=mp.non_recursive,
                                    read_only_non_recursive=mp.read_only_non_recursive))
    except BaseException:
        store.release_all(container_id)
        raise
    return out


def stop_mounts(mounts: Sequence[MountPoint], store: VolumeStore, container_id: str) -> None:
    """When the container has stopped: its volume mounts released (the last user of a
    device volume unmounts it)."""
    for mp in mounts:
        if mp.type == "volume" and mp.name:
            store.unmount(mp.name, container_id)
    store.release_all(container_id)


def remove_mounts(mounts: Sequence[MountPoint], store: VolumeStore,
                  users: Callable[[str], Sequence[str]], *, remove_volumes: bool,
                  container_id: str = "") -> list[str]:
    """At ``rm``: with ``remove_volumes`` (``rm -v``, ``--rm``) the anonymous volumes go,
    unless another container uses them (not an error, as in dockerd). ``users`` must no
    longer count the removed container. Returns the errors, which dockerd only logs."""
    if container_id:
        store.release_all(container_id)
    errors: list[str] = []
    if not remove_volumes:
        return errors
    for mp in mounts:
        if mp.type != "volume" or not mp.anonymous or not mp.name:
            continue
        try:
            store.remove(mp.name, users=list(users(mp.name)))
        except (Conflict, NotFound):
            continue
        except KetchError as exc:
            errors.append(exc.message)
    return errors


def mounts_json(mounts: Sequence[MountPoint]) -> list[dict[str, Any]]:
    """inspect's ``Mounts`` (dockerd's order is a Go map's; ketch keeps the plan's)."""
    return [m.to_json() for m in mounts]
