"""Volumes: metadata in SQLite, data in ``<root>/volumes/<name>/_data``, as dockerd lays them out.

    store = VolumeStore("/var/lib/ketch")
    v = store.create("cache", labels={"app": "web"})
    path = store.mount("cache", container_id)       # at container start
    store.unmount("cache", container_id)            # at container stop
    store.remove("cache", users=engine.volume_users("cache"))

Only the ``local`` driver exists. A volume without options is a plain
directory. One with ``type``/``device``/``o`` options (``tmpfs``, a bind with
``o=bind``, a block device with its filesystem type) is mounted with mount(2)
on its ``_data`` directory when its first user mounts it and unmounted when
its last user leaves: the users are recorded in the database (not in memory),
so a restarted ketchd unmounts at the right time, and the kernel's mount
table (not a flag) says whether the mount is there.

Which containers *use* a volume is the engine's knowledge, not the store's:
the calls that need it (remove, list with ``dangling``, prune, disk usage)
take it as ``users`` (a list, or a callable from name to container ids), so
there is one truth.

Messages are dockerd's ("get x: no such volume", "remove x: volume is in use
- [id]", the local driver's option and name errors).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ketch import filters as flt
from ketch.errors import Conflict, InvalidArgument, NotFound, NotSupported, System
from ketch.linux.mount import read_mountinfo
from ketch.linux.syscalls import MNT_DETACH, LinuxSyscalls, Syscalls
from ketch.runtime.specconv import MOUNT_FLAGS, PROPAGATION
from ketch.sqlitedb import create_schema

LOCAL = "local"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"  # moby's volume.AnonymousLabel
NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME = re.compile(rf"^{NAME_CHARS}+$")
LOCAL_OPTIONS = ("type", "device", "o", "size")
# What ``docker volume ls --filter`` accepts (moby's volume service).
LIST_FILTERS = frozenset({"dangling", "name", "driver", "label"})
DB_NAME = "metadata.db"

Users = Callable[[str], Sequence[str]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    driver TEXT NOT NULL,
    created REAL NOT NULL,
    labels TEXT,
    options TEXT
);
CREATE TABLE IF NOT EXISTS mounts (
    name TEXT NOT NULL,
    ref TEXT NOT NULL,
    PRIMARY KEY (name, ref)
);
"""


def rfc3339(ts: float) -> str:
    """Go's ``time.RFC3339`` of a local time: "2024-01-02T03:04:05Z" or "...+01:00"."""
    local = datetime.fromtimestamp(int(ts)).astimezone()
    text = local.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def go_strerror(err: int) -> str:
    """Go's wording of an errno ("no such file or directory")."""
    return os.strerror(err)[:1].lower() + os.strerror(err)[1:]


@dataclass(frozen=True, slots=True)
class Volume:
    """One volume as ``docker volume inspect`` shows it."""

    name: str
    driver: str
    mountpoint: str
    created: float
    labels: Mapping[str, str] | None = None
    options: Mapping[str, str] | None = None
    scope: str = LOCAL

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in (self.labels or {})

    @property
    def needs_mount(self) -> bool:
        """A volume with a device is mounted at first use; a plain one is just a directory."""
        return bool(self.options and self.options.get("device"))

    @property
    def created_at(self) -> str:
        return rfc3339(self.created)

    def to_json(self) -> dict[str, Any]:
        """``volume.Volume`` of the Engine API (Labels and Options are null when empty)."""
        return {
            "CreatedAt": self.created_at,
            "Driver": self.driver,
            "Labels": dict(self.labels) if self.labels else None,
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": dict(self.options) if self.options else None,
            "Scope": self.scope,
        }


def validate_name(name: str) -> None:
    """The local driver's rule for names (checked before anything is made)."""
    if len(name) == 1:
        raise InvalidArgument(f"create {name}: volume name is too short, names should be at "
                              "least two alphanumeric characters")
    if not _NAME.match(name):
        raise InvalidArgument(
            f"create {name}: {flt.go_quote(name)} includes invalid characters for a local "
            f"volume name, only {flt.go_quote(NAME_CHARS)} are allowed. If you intended to "
            "pass a host directory, use absolute path")


def validate_options(name: str, options: Mapping[str, str]) -> None:
    """The local driver's ``validateOpts``: known keys, and a device with a type."""
    if not options:
        return
    for key in sorted(options):
        if key not in LOCAL_OPTIONS:
            raise InvalidArgument(f"create {name}: invalid option: {flt.go_quote(key)}")
    if "size" in options:
        # dockerd offers sizes only on xfs with project quotas; ketch has no quota support.
        raise NotSupported(f"create {name}: quota size requested but no quota support")
    for key in ("device", "type"):
        if not options.get(key):
            raise InvalidArgument(f"create {name}: missing required option: {flt.go_quote(key)}")


def check_driver(name: str, driver: str) -> None:
    if driver not in ("", LOCAL):
        # No volume plugins in ketch: every other driver is an unknown plugin, as in dockerd.
        raise NotFound(f"create {name}: error looking up volume plugin {driver}: "
                       f"plugin {flt.go_quote(driver)} not found")


def mount_flags(o: str) -> tuple[int, str]:
    """moby's ``mount.ParseOptions``: the flag words of ``o`` as flags, the rest as data."""
    flags = 0
    data: list[str] = []
    for word in o.split(","):
        if not word:
            continue
        if word in MOUNT_FLAGS:
            clear, bit = MOUNT_FLAGS[word]
            flags = flags & ~bit if clear else flags | bit
        elif word in PROPAGATION:
            flags |= PROPAGATION[word]
        else:
            data.append(word)
    return flags, ",".join(data)


def dir_size(path: str) -> int:
    """Bytes of the regular files below ``path``, each inode once (moby's directory.Size)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total


def _users_of(users: Users | None, name: str) -> list[str]:
    return list(users(name)) if users is not None else []


class VolumeStore:
    """The volumes of one daemon root. Thread-safe: the API calls it from worker threads."""

    def __init__(self, root: str, *, syscalls: Syscalls | None = None,
                 mountpoints: Callable[[], Iterable[str]] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.dir = os.path.join(self.root, "volumes")
        self.sys: Syscalls = syscalls or LinuxSyscalls()
        self._mountpoints = mountpoints or (lambda: (m.mountpoint for m in read_mountinfo()))
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o701)
        self.db_path = os.path.join(self.dir, DB_NAME)
        create_schema(self.db_path, SCHEMA, "volume database")
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- paths and records -----------------------------------------------------------------

    def path_of(self, name: str) -> str:
        return os.path.join(self.dir, name, "_data")

    def _volume(self, row: tuple[Any, ...]) -> Volume:
        name, driver, created, labels, options = row
        return Volume(name=name, driver=driver, mountpoint=self.path_of(name), created=created,
                      labels=json.loads(labels) if labels else None,
                      options=json.loads(options) if options else None)

    def _row(self, name: str) -> tuple[Any, ...] | None:
        with self._lock:
            cur = self._db.execute("SELECT name, driver, created, labels, options FROM volumes "
                                   "WHERE name = ?", (name,))
            row: tuple[Any, ...] | None = cur.fetchone()
            return row

    def get(self, name: str) -> Volume:
        row = self._row(name)
        if row is None:
            raise NotFound(f"get {name}: no such volume")
        return self._volume(row)

    def exists(self, name: str) -> bool:
        return self._row(name) is not None

    def volumes(self) -> list[Volume]:
        with self._lock:
            rows = self._db.execute("SELECT name, driver, created, labels, options FROM volumes "
                                    "ORDER BY name").fetchall()
        return [self._volume(r) for r in rows]

    # --- create -----------------------------------------------------------------------------

    def create(self, name: str = "", driver: str = "", options: Mapping[str, str] | None = None,
               labels: Mapping[str, str] | None = None) -> Volume:
        """A new volume, or the existing one of that name (dockerd answers it unchanged).

        Without a name the volume is anonymous: a random 64-hex name and moby's
        ``com.docker.volume.anonymous`` label, which is what prune looks for.
        """
        return self.ensure(name, driver, options, labels)[0]

    def ensure(self, name: str = "", driver: str = "", options: Mapping[str, str] | None = None,
               labels: Mapping[str, str] | None = None) -> tuple[Volume, bool]:
        """``create``, also saying whether this call made the volume (decided under the
        store's lock, so two creates of one name cannot both think they made it)."""
        labels = dict(labels or {})
        if not name:
            name = secrets.token_hex(32)
            labels[ANONYMOUS_LABEL] = ""
        check_driver(name, driver)
        validate_name(name)
        if name == DB_NAME:
            raise Conflict(f"create {name}: the name is reserved for the volume database")
        with self._lock:
            row = self._row(name)
            if row is not None:
                return self._volume(row), False
            validate_options(name, options or {})
            vdir = os.path.join(self.dir, name)
            data = os.path.join(vdir, "_data")
            try:
                os.makedirs(vdir, exist_ok=True)
                os.chmod(vdir, 0o701)
                os.makedirs(data, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise System(f"create {name}: {exc}") from exc
            created = time.time()
            with self._tx() as db:
                db.execute("INSERT INTO volumes (name, driver, created, labels, options) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (name, LOCAL, created, json.dumps(labels) if labels else None,
                            json.dumps(dict(options)) if options else None))
            return self.get(name), True

    # --- mount and unmount: the refcount ---------------------------------------------------

    def _is_mounted(self, path: str) -> bool:
        return path in set(self._mountpoints())

    def mount_refs(self, name: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT ref FROM mounts WHERE name = ? ORDER BY ref",
                                    (name,)).fetchall()
        return [r[0] for r in rows]

    def mount(self, name: str, ref: str) -> str:
        """Where the volume's data is, mounted for ``ref`` (a container id); counted per ref."""
        with self._lock:
            v = self.get(name)
            if v.needs_mount and not self._is_mounted(v.mountpoint):
                self._mount_device(v)
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO mounts (name, ref) VALUES (?, ?)", (name, ref))
            return v.mountpoint

    def _mount_device(self, v: Volume) -> None:
        opts = v.options or {}
        device, fstype, o = opts["device"], opts["type"], opts.get("o", "")
        flags, data = mount_flags(o)
        os.makedirs(v.mountpoint, mode=0o755, exist_ok=True)
        try:
            self.sys.mount(device, v.mountpoint, fstype, flags, data or None)
        except OSError as exc:
            what = f"mount {device}:{v.mountpoint}"
            if flags:
                what += f", flags: {flags:#x}"
            if data:
                what += f", data: {data}"
            why = go_strerror(exc.errno) if exc.errno else str(exc)
            raise System(f"error while mounting volume '{v.mountpoint}': failed to mount "
                         f"local volume: {what}: {why}") from exc

    def unmount(self, name: str, ref: str) -> None:
        """``ref`` is done with the volume; the last one out unmounts its device."""
        with self._lock:
            with self._tx() as db:
                db.execute("DELETE FROM mounts WHERE name = ? AND ref = ?", (name, ref))
            row = self._row(name)
            if row is None:
                return
            v = self._volume(row)
            if v.needs_mount and not self.mount_refs(name):
                self._unmount_device(v)

    def _unmount_device(self, v: Volume) -> None:
        if not self._is_mounted(v.mountpoint):
            return
        try:
            self.sys.umount2(v.mountpoint, 0)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise System(f"error while unmounting volume '{v.mountpoint}': {exc}") from exc
            # Still busy (a process of a dead container holds a file): detach it, the
            # kernel frees it when the last user goes, and the volume is free for reuse.
            self.sys.umount2(v.mountpoint, MNT_DETACH)

    def release_all(self, ref: str) -> list[str]:
        """Every mount of ``ref`` undone (a container stopped or vanished); the names."""
        with self._lock:
            names = [r[0] for r in self._db.execute(
                "SELECT name FROM mounts WHERE ref = ? ORDER BY name", (ref,)).fetchall()]
            for name in names:
                self.unmount(name, ref)
            return names

    def reconcile(self, live_refs: Iterable[str]) -> list[str]:
        """At daemon start: forget the mounts of containers that are not running any more,
        unmount what nobody uses. Returns the names whose refs were dropped."""
        live = set(live_refs)
        with self._lock:
            stale = [(n, r) for n, r in self._db.execute(
                "SELECT name, ref FROM mounts").fetchall() if r not in live]
            for name, ref in stale:
                self.unmount(name, ref)
            for v in self.volumes():
                if v.needs_mount and not self.mount_refs(v.name):
                    self._unmount_device(v)
        return sorted({n for n, _ in stale})

    # --- remove and prune ------------------------------------------------------------------

    def remove(self, name: str, *, users: Sequence[str] = ()) -> None:
        """Delete the volume and its data; refused while a container uses it."""
        with self._lock:
            v = self.get(name)
            refs = sorted(set(users) | set(self.mount_refs(name)))
            if refs:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(refs)}]")
            if v.needs_mount:
                self._unmount_device(v)
            vdir = os.path.join(self.dir, name)
            # Never delete through a mount: a bind volume's data is the user's directory.
            under = [m for m in self._mountpoints() if m == vdir or m.startswith(vdir + "/")]
            if under:
                raise System(f"remove {name}: the volume is still mounted at {under[0]}")
            with self._tx() as db:
                db.execute("DELETE FROM volumes WHERE name = ?", (name,))
            shutil.rmtree(vdir, ignore_errors=True)

    def prune(self, filters: flt.Filters, *, users: Users | None = None,
              all_volumes: bool = False) -> dict[str, Any]:
        """``POST /volumes/prune``: unused volumes, only anonymous ones unless ``all``.

        ``all_volumes`` is what an API client older than 1.42 means (before the
        ``all`` filter existed, prune removed every unused volume).
        """
        flt.check_names(filters, flt.VOLUME_PRUNE)
        every = flt.bool_filter(filters, "all", False) or all_volumes
        deleted: list[str] = []
        reclaimed = 0
        for v in self.volumes():
            if not every and not v.anonymous:
                continue
            if not flt.match_labels(filters, v.labels or {}):
                continue
            if _users_of(users, v.name) or self.mount_refs(v.name):
                continue
            size = dir_size(v.mountpoint) if not v.needs_mount else 0
            try:
                self.remove(v.name, users=_users_of(users, v.name))
            except (Conflict, NotFound):
                continue  # taken (or removed) meanwhile: not an error for prune
            deleted.append(v.name)
            reclaimed += size
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    # --- listing ---------------------------------------------------------------------------

    def list_volumes(self, filters: flt.Filters | None = None, *,
                     users: Users | None = None) -> list[Volume]:
        """``GET /volumes``: filters dangling, name (substring or regexp), driver, label."""
        filters = filters or {}
        flt.check_names(filters, LIST_FILTERS)
        dangling: bool | None = None
        if "dangling" in filters:
            dangling = flt.bool_filter(filters, "dangling", False)
        out = []
        for v in self.volumes():
            if "name" in filters and not any(_match(p, v.name) for p in filters["name"]):
                continue
            if "driver" in filters and v.driver not in filters["driver"]:
                continue
            if not flt.match_kv_list(filters.get("label", ()), v.labels or {}):
                continue
            if dangling is not None:
                used = bool(_users_of(users, v.name) or self.mount_refs(v.name))
                if used == dangling:
                    continue
            out.append(v)
        return out

    def disk_usage(self, users: Users | None = None) -> list[dict[str, Any]]:
        """The ``Volumes`` of ``/system/df``: each with ``UsageData`` {Size, RefCount}."""
        out = []
        for v in self.volumes():
            doc = v.to_json()
            refs = set(_users_of(users, v.name)) | set(self.mount_refs(v.name))
            doc["UsageData"] = {"Size": dir_size(v.mountpoint), "RefCount": len(refs)}
            out.append(doc)
        return out


def _match(pattern: str, name: str) -> bool:
    """``filters.Args.Match``: the exact value, else the value as a regular expression."""
    if pattern == name:
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False
