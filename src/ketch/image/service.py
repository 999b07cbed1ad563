"""The image service: content, snapshots and metadata behind one library API.

What the daemon's image routes will call. A session, step by step::

    svc = ImageService("/var/lib/ketch/image")
    with open("busybox.tar", "rb") as f:
        svc.load(f)                                 # docker load
    svc.tag("busybox", "me/box:1")                  # docker tag
    svc.list({"reference": ["me/*"]})               # docker images --filter
    svc.inspect("me/box:1")["RootFS"]               # docker image inspect
    mounts = svc.rootfs_mounts("me/box:1", cid)     # a container's writable rootfs
    svc.remove("me/box:1")                          # docker rmi: [{"Untagged": ...}]
    svc.gc()                                        # blobs and snapshots nobody names

Layout under ``root``: ``content/`` (ContentStore), ``snapshots/`` (the
snapshotter's root), ``metadata.db`` (ImageMetadata), ``tmp/`` (bootstrap
scratch), ``lock`` (see below).

Why it is built this way:

* The three stores stay ignorant of each other (containerd's split); only
  this module knows that an image is a manifest and a config in content,
  one committed snapshot per layer keyed by chain ID, and rows in metadata.
* All or nothing: an import (``load``, ``import_rootfs``,
  ``bootstrap_busybox``) writes blobs, then unpacks snapshots, then records
  metadata in one transaction. A failure before the transaction commits
  removes the snapshots and blobs it created, so the three stores are left
  exactly as before. A *crash* in between leaves only unnamed blobs and
  snapshots, which ``gc`` removes; metadata never names something missing.
* One host-wide lock (``flock`` on ``root/lock``) serialises the operations
  that change what is named or delete things, so ``gc`` can never delete a
  blob an import is about to name. Reads take no lock.
* Messages and JSON shapes are Docker's (moby's ``daemon/images`` and
  ``api/types/image``), because clients parse them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from ketch.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    KetchError,
    NotFound,
)
from ketch.filters import (
    IMAGE_LIST,
    IMAGE_PRUNE,
    bool_filter,
    check_names,
    match_each_label,
    match_labels,
    parse_until,
    prune_until,
)
from ketch.image import oci
from ketch.image.archive import LoadedImage, load_archive, save_archive
from ketch.image.content import ContentStore, Descriptor
from ketch.image.metadata import ImageMetadata, ImageRecord, Layer, rfc3339_now
from ketch.image.reference import Reference, is_full_id, normalize
from ketch.image.snapshot import Kind, Mount, Snapshotter, apply_layer
from ketch.jsonmodel import from_json, json_name, to_json

if TYPE_CHECKING:
    from ketch.image.check import Problem

SIZE_LABEL = "ketch.layer.size"
IMAGE_LABEL = "ketch.image"
BOOTSTRAP_CREATED_BY = "ketch image bootstrap busybox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ZERO_TIME = "0001-01-01T00:00:00Z"

# moby's validCommitCommands (builder/dockerfile): what --change accepts.
CHANGE_COMMANDS = frozenset({"cmd", "entrypoint", "env", "expose", "healthcheck", "label",
                             "onbuild", "stopsignal", "user", "volume", "workdir"})
HEALTHCHECK_FLAGS = {"interval": "interval", "timeout": "timeout",
                     "start-period": "start_period", "start-interval": "start_interval"}

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(slots=True)
class ImageSummary:
    """One entry of ``GET /images/json`` (moby's ``api/types/image.Summary``)."""

    id: str = field(default="", metadata=json_name("Id", keep_empty=True))
    parent_id: str = field(default="", metadata=json_name("ParentId", keep_empty=True))
    repo_tags: list[str] = field(default_factory=list,
                                 metadata=json_name("RepoTags", keep_empty=True))
    repo_digests: list[str] = field(default_factory=list,
                                    metadata=json_name("RepoDigests", keep_empty=True))
    created: int = field(default=0, metadata=json_name("Created", keep_empty=True))
    size: int = field(default=0, metadata=json_name("Size", keep_empty=True))
    shared_size: int = field(default=-1, metadata=json_name("SharedSize", keep_empty=True))
    labels: dict[str, str] = field(default_factory=dict,
                                   metadata=json_name("Labels", keep_empty=True))
    containers: int = field(default=-1, metadata=json_name("Containers", keep_empty=True))

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """The images part of ``GET /system/df`` (moby's ``LayersSize`` and ``Images``).

    ``images`` are the top-level images (what ``docker images`` lists), each
    with ``shared_size`` and ``containers`` filled in; ``layers_size`` is the
    size of every distinct layer they use, counted once.
    """

    layers_size: int
    images: list[ImageSummary]


@dataclass(frozen=True, slots=True)
class GcResult:
    """What ``gc`` removed, and the bytes it freed (blob sizes plus layer sizes)."""

    blobs: list[str]
    snapshots: list[str]
    space_reclaimed: int


# Aliases for annotations inside ImageService, whose ``list`` method shadows the builtin.
DeleteRecords = list[dict[str, str]]
HistoryItems = list[dict[str, Any]]
Mounts = list[Mount]
Names = list[str]
Problems = list["Problem"]


# --- helpers ---------------------------------------------------------------------

def parse_rfc3339(s: str | None) -> float:
    """Seconds since the epoch of an RFC 3339 time as Go writes it (nanoseconds too)."""
    if not s:
        return 0.0
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if m is None:
        return 0.0
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        base = datetime.fromisoformat(m.group(1) + tz)
    except ValueError:
        return 0.0
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never cross ``/``; ``[^...]`` negates.

    Docker's ``reference=`` filter uses it (``reference.FamiliarMatch``), and
    Python's fnmatch lets ``*`` match ``/``, so it cannot stand in.
    """
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                raise InvalidArgument("syntax error in pattern")
            body = pattern[i + 1:j]
            neg = body.startswith("^")
            body = body[1:] if neg else body
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.fullmatch("".join(out), name) is not None
    except re.error:
        raise InvalidArgument("syntax error in pattern") from None


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _layer_media_type(head: bytes) -> str:
    if head[:2] == _GZIP_MAGIC:
        return oci.MEDIA_TYPE_OCI_LAYER_GZIP
    if head[:4] == _ZSTD_MAGIC:
        return oci.MEDIA_TYPE_OCI_LAYER_ZSTD
    return oci.MEDIA_TYPE_OCI_LAYER


def _overlay_usable(root: str) -> bool:
    """Root, a kernel with overlayfs, and a backing fs that takes trusted.* xattrs."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/filesystems") as f:
            if not any(line.split()[-1:] == ["overlay"] for line in f):
                return False
    except OSError:
        return False
    probe = os.path.join(root, f".xattr-probe-{secrets.token_hex(4)}")
    try:
        os.mkdir(probe)
        os.setxattr(probe, "trusted.overlay.opaque", b"y")
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


def default_snapshotter(root: str) -> Snapshotter:
    """Overlay where it works, else the copy-based one; remembered per root.

    The choice is written to ``root/snapshotter`` on first use, because the
    two keep incompatible trees and must never be swapped under one root.
    """
    from ketch.image.snapshot.naive import NaiveSnapshotter
    from ketch.image.snapshot.overlay import OverlaySnapshotter

    os.makedirs(root, exist_ok=True)
    marker = os.path.join(root, "snapshotter")
    try:
        with open(marker) as f:
            kind = f.read().strip()
    except FileNotFoundError:
        kind = "overlayfs" if _overlay_usable(root) else "naive"
        with open(marker + ".tmp", "w") as f:
            f.write(kind + "\n")
        os.rename(marker + ".tmp", marker)
    path = os.path.join(root, "snapshots")
    if kind == "overlayfs":
        return OverlaySnapshotter(path)
    return NaiveSnapshotter(path)


# --- --change ---------------------------------------------------------------------

def _json_or_shell(rest: str, shell: bool = True) -> list[str]:
    """The JSON form (``["a","b"]``) or the shell form, wrapped in ``/bin/sh -c``."""
    stripped = rest.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", stripped] if shell else stripped.split()


def _pairs(instr: str, rest: str) -> list[tuple[str, str]]:
    """``k=v k2="v 2"`` or the legacy ``k v w`` form (one pair), as ENV and LABEL take."""
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as exc:
        raise InvalidArgument(f"{instr}: {exc}") from None
    if not words:
        raise InvalidArgument(f"{instr} requires at least one argument")
    if "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidArgument(f"{instr} must have two arguments")
        return [(key, value.strip())]
    out = []
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{instr} names can not be blank" if not key else
                                  f"Syntax error - can't find = in {w!r}. "
                                  "Must be of the form: name=value")
        out.append((key, value))
    return out


def apply_changes(config: oci.ContainerConfig, changes: Iterable[str]) -> None:
    """Apply ``docker import --change`` / ``docker commit --change`` lines to ``config``.

    Only the instructions moby allows there (``validCommitCommands``); any
    other is refused with Docker's words, "<instr> is not a valid change command".
    """
    for line in changes:
        line = line.strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        if "\t" in word:
            word, _, more = word.partition("\t")
            rest = more + " " + rest
        instr = word.lower()
        if instr not in CHANGE_COMMANDS:
            raise InvalidArgument(f"{instr} is not a valid change command")
        rest = rest.strip()
        if instr == "env":
            env = list(config.env)
            for key, value in _pairs("ENV", rest):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
            config.env = env
        elif instr == "label":
            config.labels = {**config.labels, **dict(_pairs("LABEL", rest))}
        elif instr == "cmd":
            config.cmd = _json_or_shell(rest)
        elif instr == "entrypoint":
            config.entrypoint = _json_or_shell(rest) if rest else None
        elif instr == "workdir":
            if not rest:
                raise InvalidArgument("WORKDIR requires exactly one argument")
            config.working_dir = os.path.normpath(
                os.path.join(config.working_dir or "/", rest))
        elif instr == "user":
            if not rest:
                raise InvalidArgument("USER requires exactly one argument")
            config.user = rest
        elif instr == "expose":
            ports = dict(config.exposed_ports)
            for p in rest.split():
                port, _, proto = p.partition("/")
                if not port or not all(x.isdigit() for x in port.split("-")):
                    raise InvalidArgument(f"invalid containerPort: {port}")
                ports[f"{port}/{(proto or 'tcp').lower()}"] = {}
            config.exposed_ports = ports
        elif instr == "volume":
            vols = dict(config.volumes)
            for v in _json_or_shell(rest, shell=False):
                if not v.strip():
                    raise InvalidArgument("VOLUME specified can not be an empty string")
                vols[v] = {}
            config.volumes = vols
        elif instr == "stopsignal":
            if not rest:
                raise InvalidArgument("STOPSIGNAL requires exactly one argument")
            config.stop_signal = rest
        elif instr == "onbuild":
            config.on_build = [*(config.on_build or []), rest]
        elif instr == "healthcheck":
            config.healthcheck = parse_healthcheck(rest)


def parse_healthcheck(rest: str) -> oci.HealthConfig:
    """``HEALTHCHECK [--interval=D] [--timeout=D] [--start-period=D] [--start-interval=D]
    [--retries=N] CMD ...`` or ``HEALTHCHECK NONE``, with the Dockerfile's messages."""
    from ketch.filters import parse_duration

    hc = oci.HealthConfig()
    words = rest.split()
    while words and words[0].startswith("--"):
        flag, eq, value = words.pop(0)[2:].partition("=")
        if not eq:
            raise InvalidArgument(f"flag --{flag} needs a value (--{flag}=VALUE)")
        if flag == "retries":
            if not value.isdigit() or int(value) < 1:
                raise InvalidArgument("--retries must be at least 1")
            hc.retries = int(value)
        elif flag in HEALTHCHECK_FLAGS:
            try:
                secs = parse_duration(value)
            except (InvalidArgument, ValueError):
                raise InvalidArgument(f"time: invalid duration \"{value}\"") from None
            if 0 < secs < 0.001:
                raise InvalidArgument(f"Interval \"{flag}\" cannot be less than 1ms")
            setattr(hc, HEALTHCHECK_FLAGS[flag], int(secs * 1_000_000_000))
        else:
            raise InvalidArgument(f"Unknown flag: {flag}")
    if not words:
        raise InvalidArgument("Missing command after HEALTHCHECK")
    kind = words[0].upper()
    cmd_text = rest[rest.index(words[0]) + len(words[0]):].strip()
    if kind == "NONE":
        if cmd_text:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        hc.test = ["NONE"]
    elif kind == "CMD":
        if not cmd_text:
            raise InvalidArgument("Missing command after HEALTHCHECK CMD")
        if cmd_text.startswith("["):
            hc.test = ["CMD", *_json_or_shell(cmd_text)]
        else:
            hc.test = ["CMD-SHELL", cmd_text]
    else:
        raise InvalidArgument(f"Unknown type {kind!r} in HEALTHCHECK (try CMD)")
    return hc


# --- the service -----------------------------------------------------------------

class _Undo:
    """What an import created so far, removed again if it fails."""

    def __init__(self, svc: ImageService, blobs_before: set[str] | None = None) -> None:
        self.svc = svc
        self.blobs_before = blobs_before
        self.blobs: list[str] = []
        self.snapshots: list[str] = []

    def rollback(self) -> None:
        for key in reversed(self.snapshots):
            with contextlib.suppress(KetchError, OSError):
                self.svc.snapshotter.remove(key)
        for digest in self.blobs:
            with contextlib.suppress(KetchError, OSError):
                self.svc.content.delete(digest)


class ImageService:
    """Images on one host: see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], *,
                 snapshotter: Snapshotter | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.snapshotter = snapshotter or default_snapshotter(self.root)
        self.metadata = ImageMetadata(os.path.join(self.root, "metadata.db"))
        self._lock_path = os.path.join(self.root, "lock")
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._layers_of_manifest: dict[str, frozenset[str]] = {}

    @property
    def snapshotter_name(self) -> str:
        return "overlayfs" if type(self.snapshotter).__name__.startswith("Overlay") else "naive"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The host-wide write lock (re-entrant within this object)."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
            finally:
                os.close(fd)

    # --- writing blobs and snapshots --------------------------------------------

    def _put_bytes(self, data: bytes, undo: _Undo) -> str:
        digest = oci.digest_of(data)
        if not self.content.exists(digest):
            self.content.put(f"image-{secrets.token_hex(8)}", data, digest)
            undo.blobs.append(digest)
        return digest

    def _put_stream(self, stream: BinaryIO, undo: _Undo) -> Descriptor:
        """Stream a layer into content; its media type comes from its magic bytes."""
        head = b""
        with self.content.writer(f"image-{secrets.token_hex(8)}") as w:
            try:
                while chunk := stream.read(1 << 20):
                    if len(head) < 4:
                        head += chunk[:4]
                    w.write(chunk)
                digest = w.digest()
                existed = self.content.exists(digest)
                desc = w.commit()
            except BaseException:
                w.abort()
                raise
        if not existed:
            undo.blobs.append(digest)
        return Descriptor(_layer_media_type(head), desc.digest, desc.size)

    def _unpack(self, layers: Sequence[Descriptor], diff_ids: list[str],
                undo: _Undo) -> list[Layer]:
        """One committed snapshot per layer, keyed by chain ID; existing ones are reused."""
        out: list[Layer] = []
        for desc, chain in zip(layers, oci.chain_ids(diff_ids), strict=True):
            parent = out[-1].chain_id if out else None
            diff_id = diff_ids[len(out)]
            size = self._snapshot_size(chain)
            if size is None:
                size = self._extract(desc, chain, parent, diff_id, undo)
            out.append(Layer(diff_id, chain, size))
        return out

    def _snapshot_size(self, chain: str) -> int | None:
        try:
            info = self.snapshotter.stat(chain)
        except NotFound:
            return None
        if info.kind is not Kind.COMMITTED:
            return None
        recorded = self.metadata.layer_size(chain)
        if recorded is not None:
            return recorded
        return int(info.labels.get(SIZE_LABEL, "0") or 0)

    def _extract(self, desc: Descriptor, chain: str, parent: str | None, diff_id: str,
                 undo: _Undo, wrap: Callable[[BinaryIO], BinaryIO] | None = None) -> int:
        key = f"extract-{secrets.token_hex(6)}-{chain}"
        mounts = self.snapshotter.prepare(key, parent)
        try:
            with self.content.open(desc.digest) as raw:
                f = wrap(raw) if wrap is not None else raw
                res = apply_layer(mounts, f, media_type=desc.media_type)
            if res.diff_id != diff_id:
                raise InvalidArgument(f"layer {desc.digest}: uncompressed digest {res.diff_id} "
                                      f"does not match the config's diff_id {diff_id}")
            try:
                self.snapshotter.commit(chain, key, labels={SIZE_LABEL: str(res.size)})
            except AlreadyExists:
                # Committed meanwhile by another ketch (same chain ID, same tree).
                self.snapshotter.remove(key)
                return self._snapshot_size(chain) or res.size
        except BaseException:
            with contextlib.suppress(KetchError, OSError):
                self.snapshotter.remove(key)
            raise
        undo.snapshots.append(chain)
        return res.size

    def _record(self, manifest_digest: str, config_digest: str,
                config: oci.ImageConfig, layers: list[Layer],
                parent: str | None = None) -> ImageRecord:
        return ImageRecord(id=config_digest, manifest_digest=manifest_digest,
                           created=config.created or "", size=sum(la.size for la in layers),
                           parent=parent, layers=tuple(layers),
                           labels=dict(config.config.labels))

    # --- load / save ---------------------------------------------------------------

    def load(self, stream: BinaryIO, moved: dict[str, str] | None = None
             ) -> list[ImageSummary]:
        """``docker load``: every image of the archive, unpacked and tagged, or nothing.

        A tag already naming another image moves; that image stays, dangling
        if it was its last name, and ``moved`` (when given) gets the tag's
        familiar name -> the id it named before, for docker's message.
        """
        with self._locked():
            undo = _Undo(self, {i.digest for i in self.content.walk()})
            try:
                loaded = load_archive(stream, self.content)
                for image in loaded:
                    for d in self._blobs_of(image.manifest_digest):
                        if d not in (undo.blobs_before or set()) and d not in undo.blobs:
                            undo.blobs.append(d)
                records: list[tuple[ImageRecord, list[str]]] = []
                for image in loaded:
                    manifest = oci.parse_manifest(self.content.read(image.manifest_digest))
                    config = oci.parse_config(self.content.read(image.config_digest))
                    layers = self._unpack(manifest.layers, config.rootfs.diff_ids, undo)
                    records.append((self._record(image.manifest_digest, image.config_digest,
                                                 config, layers), image.repo_tags))
                with self.metadata.transaction():
                    for rec, tags in records:
                        self.metadata.add_image(rec)
                        for t in tags:
                            old = self.metadata.tag(normalize(t), rec.id)
                            if old is not None and moved is not None:
                                moved[t] = old
            except BaseException:
                undo.rollback()
                raise
        # The archive's own tags, not every name the image has here: docker load
        # reports what it loaded.
        return [self._summary(self.metadata.get_by_id(rec.id), [str(normalize(t)) for t in tags])
                for rec, tags in records]

    # --- pulled images ----------------------------------------------------------------
    #
    # A pull (ketch.engine.distribution) downloads blobs straight into ``content``
    # with resumable writers, then asks for each layer to be unpacked and finally
    # for the image to be recorded. Layers are unpacked one at a time under the
    # host lock (``gc`` treats unlocked ``extract-`` snapshots as crash leftovers).

    def layer_unpacked(self, diff_ids: Sequence[str]) -> Layer | None:
        """The top layer of this DiffID chain if its snapshot is already here."""
        chain = oci.chain_ids(list(diff_ids))[-1]
        size = self._snapshot_size(chain)
        return None if size is None else Layer(diff_ids[-1], chain, size)

    def unpack_layer(self, desc: Descriptor, diff_ids: Sequence[str],
                     wrap: Callable[[BinaryIO], BinaryIO] | None = None) -> Layer:
        """Unpack blob ``desc`` (in content) as the top of the chain ``diff_ids``.

        The layers below must be unpacked already. ``wrap`` may wrap the blob's
        reader (to report progress as it is read).
        """
        chains = oci.chain_ids(list(diff_ids))
        chain, parent = chains[-1], (chains[-2] if len(chains) > 1 else None)
        with self._locked():
            size = self._snapshot_size(chain)
            if size is None:
                # Verified layers stay even if the pull fails later: gc collects them.
                size = self._extract(desc, chain, parent, diff_ids[-1], _Undo(self), wrap)
        return Layer(diff_ids[-1], chain, size)

    def record_pulled(self, manifest: bytes, config: bytes, layers: Sequence[Layer],
                      refs: Sequence[Reference]) -> tuple[ImageRecord, bool]:
        """Store the manifest and config, record the image and point ``refs`` at it.

        Returns the record and whether anything changed (a new image, or a
        reference that named something else or nothing): dockerd's "Downloaded
        newer image" against "Image is up to date".
        """
        with self._locked():
            undo = _Undo(self)
            manifest_digest = self._put_bytes(manifest, undo)
            config_digest = self._put_bytes(config, undo)
            cfg = oci.parse_config(config)
            rec = self._record(manifest_digest, config_digest, cfg, list(layers))
            changed = False
            with self.metadata.transaction():
                changed |= self.metadata.add_image(rec)
                before = set(self.metadata.references_of(rec.id))
                for ref in refs:
                    self.metadata.tag(ref, rec.id)
                    changed |= str(ref) not in before
            return self.metadata.get_by_id(rec.id), changed

    def add_reference(self, image_id: str, ref: Reference) -> None:
        """Point one more reference (a digest reference after a push) at an image."""
        self.metadata.tag(ref, image_id)

    def manifest_of(self, rec: ImageRecord) -> tuple[bytes, oci.Manifest]:
        """An image's manifest, as stored and parsed (what a push sends)."""
        raw = self.content.read(rec.manifest_digest)
        return raw, oci.parse_manifest(raw)

    def _blobs_of(self, manifest_digest: str) -> list[str]:
        manifest = oci.parse_manifest(self.content.read(manifest_digest))
        return [manifest_digest, manifest.config.digest,
                *(la.digest for la in manifest.layers if self.content.exists(la.digest))]

    def save(self, refs_or_ids: Sequence[str], out: BinaryIO) -> None:
        """``docker save``: a name saves that tag; an id saves the image with all its tags."""
        by_manifest: dict[str, LoadedImage] = {}
        for name in refs_or_ids:
            rec = self.metadata.resolve(name)
            if self._names_id(name, rec):
                tags = [normalize(r).familiar() for r in self.metadata.references_of(rec.id)
                        if "@" not in r]
            else:
                tags = [normalize(name).familiar()]
            old = by_manifest.get(rec.manifest_digest)
            merged = (old.repo_tags if old else []) + [
                t for t in tags if not old or t not in old.repo_tags]
            by_manifest[rec.manifest_digest] = LoadedImage(rec.id, rec.manifest_digest, merged)
        save_archive(list(by_manifest.values()), self.content, out)

    def _names_id(self, name: str, rec: ImageRecord) -> bool:
        """Whether the user named the image by (a prefix of) its id, not by a reference.

        A hex string that is also one of the image's tags counts as the tag.
        """
        if is_full_id(name):
            return True
        hexpart = name.removeprefix("sha256:")
        if not hexpart or not rec.id.removeprefix("sha256:").startswith(hexpart):
            return False
        try:
            return str(normalize(name)) not in self.metadata.references_of(rec.id)
        except InvalidArgument:
            return True

    # --- import / bootstrap --------------------------------------------------------

    def import_rootfs(self, tar_stream: BinaryIO, ref: str | None = None,
                      changes: Sequence[str] = (), message: str = "",
                      platform: oci.Platform | None = None) -> ImageSummary:
        """``docker import``: one layer from a (possibly compressed) tar, plus a config.

        ``changes`` are ``--change`` lines, checked before anything is written;
        ``message`` is ``-m`` (Docker's default "Imported from -" for stdin).
        """
        container_config = oci.ContainerConfig()
        apply_changes(container_config, changes)
        target = normalize(ref) if ref else None
        now = rfc3339_now()
        msg = message or "Imported from -"
        plat = platform or oci.Platform(architecture=oci.host_arch(), os="linux")
        with self._locked():
            undo = _Undo(self)
            try:
                layer = self._put_stream(tar_stream, undo)
                return self._make_image(
                    [layer], container_config, created=now, undo=undo, target=target,
                    history=[oci.History(created=now, comment=msg)], comment=msg,
                    platform=plat, diff_ids=None)
            except BaseException:
                undo.rollback()
                raise

    def bootstrap_busybox(self, ref: str = "busybox:latest") -> ImageSummary:
        """A one-layer busybox image from the host's busybox-static, no registry needed.

        File times are pinned to the busybox binary's, and the config's
        ``created`` too, so bootstrapping twice on one host gives one image id.
        """
        from ketch.image.bootstrap import busybox_rootfs, find_static_busybox
        from ketch.image.diff import write_layer

        target = normalize(ref)
        tmp_root = os.path.join(self.root, "tmp")
        os.makedirs(tmp_root, mode=0o700, exist_ok=True)
        tree = os.path.join(tmp_root, f"busybox-{secrets.token_hex(6)}")
        with self._locked():
            undo = _Undo(self)
            try:
                stamp = int(os.stat(find_static_busybox()).st_mtime)
                busybox_rootfs(tree)
                for dirpath, dirnames, filenames in os.walk(tree, topdown=False):
                    for name in dirnames + filenames:
                        os.utime(os.path.join(dirpath, name), (stamp, stamp),
                                 follow_symlinks=False)
                os.utime(tree, (stamp, stamp))
                with self.content.writer(f"image-{secrets.token_hex(8)}") as w:
                    try:
                        diff_id, _ = write_layer(tree, w)  # type: ignore[arg-type]
                        existed = self.content.exists(w.digest())
                        desc = w.commit()
                    except BaseException:
                        w.abort()
                        raise
                if not existed:
                    undo.blobs.append(desc.digest)
                layer = Descriptor(oci.MEDIA_TYPE_OCI_LAYER, desc.digest, desc.size)
                created = _rfc3339(stamp)
                cc = oci.ContainerConfig(env=[f"PATH={DEFAULT_PATH}"], cmd=["sh"])
                return self._make_image(
                    [layer], cc, created=created, undo=undo, target=target,
                    history=[oci.History(created=created, created_by=BOOTSTRAP_CREATED_BY)],
                    comment="", platform=oci.Platform(architecture=oci.host_arch(), os="linux"),
                    diff_ids=[diff_id])
            except BaseException:
                undo.rollback()
                raise
            finally:
                shutil.rmtree(tree, ignore_errors=True)

    def _make_image(self, layers: list[Descriptor], cc: oci.ContainerConfig, *, created: str,
                    undo: _Undo, target: Any, history: list[oci.History], comment: str,
                    platform: oci.Platform, diff_ids: list[str] | None) -> ImageSummary:
        """Unpack the layers, write config and manifest, record and tag: one image."""
        if diff_ids is None:
            # The diff_id is only known once unpacked: unpack first, under a temporary key.
            diff_ids = []
            recorded: list[Layer] = []
            for desc in layers:
                recorded.append(self._extract_unknown(desc, recorded, undo))
                diff_ids.append(recorded[-1].diff_id)
        else:
            recorded = self._unpack(layers, diff_ids, undo)
        config = oci.ImageConfig(architecture=platform.architecture, os=platform.os,
                                 variant=platform.variant or "", created=created, config=cc,
                                 rootfs=oci.RootFS(diff_ids=list(diff_ids)), history=history)
        doc = to_json(config)
        if comment:
            doc["comment"] = comment
        config_bytes = json.dumps(doc, separators=(",", ":")).encode()
        config_digest = self._put_bytes(config_bytes, undo)
        manifest = oci.Manifest(
            media_type=oci.MEDIA_TYPE_OCI_MANIFEST,
            config=Descriptor(oci.MEDIA_TYPE_OCI_CONFIG, config_digest, len(config_bytes)),
            layers=list(layers))
        manifest_digest = self._put_bytes(oci.encode(manifest), undo)
        rec = self._record(manifest_digest, config_digest, config, recorded)
        with self.metadata.transaction():
            self.metadata.add_image(rec)
            if target is not None:
                self.metadata.tag(target, rec.id)
        return self._summary(self.metadata.get_by_id(rec.id))

    def _extract_unknown(self, desc: Descriptor, below: list[Layer], undo: _Undo) -> Layer:
        parent = below[-1].chain_id if below else None
        key = f"extract-{secrets.token_hex(6)}"
        mounts = self.snapshotter.prepare(key, parent)
        try:
            with self.content.open(desc.digest) as f:
                res = apply_layer(mounts, f, media_type=desc.media_type)
            chain = oci.chain_ids([*(la.diff_id for la in below), res.diff_id])[-1]
            if self._snapshot_size(chain) is not None:
                self.snapshotter.remove(key)
                return Layer(res.diff_id, chain, res.size)
            self.snapshotter.commit(chain, key, labels={SIZE_LABEL: str(res.size)})
        except BaseException:
            with contextlib.suppress(KetchError, OSError):
                self.snapshotter.remove(key)
            raise
        undo.snapshots.append(chain)
        return Layer(res.diff_id, chain, res.size)

    # --- reading ---------------------------------------------------------------------

    def get(self, name: str) -> ImageRecord:
        """The image a user's name or id prefix means ("No such image: x" otherwise)."""
        return self.metadata.resolve(name)

    def _config(self, rec: ImageRecord) -> tuple[oci.ImageConfig, dict[str, Any]]:
        raw = self.content.read(rec.id)
        return oci.parse_config(raw), json.loads(raw)

    def _summary(self, rec: ImageRecord, refs: list[str] | None = None) -> ImageSummary:
        refs = self.metadata.references_of(rec.id) if refs is None else refs
        tags = [normalize(r).familiar() for r in refs if "@" not in r]
        digests = [normalize(r).familiar() for r in refs if "@" in r]
        return ImageSummary(id=rec.id, parent_id=rec.parent or "", repo_tags=tags,
                            repo_digests=digests, created=int(parse_rfc3339(rec.created)),
                            size=rec.size, labels=dict(rec.labels))

    def list(self, filters: dict[str, list[str]] | None = None,
             all: bool = False) -> list[ImageSummary]:
        """``docker images`` with its filters; newest first.

        ``dangling=true|false``, ``label=k`` / ``label=k=v`` (all must hold) and
        ``label!=k[=v]`` (none may hold; ``ketch.filters.match_each_label``, as
        moby's list reads them), ``reference=<glob>`` (any may match; only matching
        tags are shown), ``before=<image>`` / ``since=<image>`` (by creation
        time), ``until=<timestamp|duration>`` (created before it; API 1.44,
        which dockerd serves to every version). Unnamed images with children
        (intermediate build steps) only with ``all``.
        """
        filters = {k: list(v) for k, v in (filters or {}).items()}
        check_names(filters, IMAGE_LIST)
        dangling = bool_filter(filters, "dangling", False) if "dangling" in filters else None
        until = [parse_until(v) for v in filters.get("until", [])]
        before = [parse_rfc3339(self.get(v).created) for v in filters.get("before", [])]
        since = [parse_rfc3339(self.get(v).created) for v in filters.get("since", [])]
        patterns = filters.get("reference", [])
        all_refs = self.metadata.all_references()
        out: list[ImageSummary] = []
        for rec in self.metadata.list_images():
            refs = all_refs.get(rec.id, [])
            tags = [r for r in refs if "@" not in r]
            if dangling is not None and dangling != (not tags):
                continue
            if not refs and not all and self.metadata.children(rec.id):
                continue  # an intermediate build image: shown only with -a
            created = parse_rfc3339(rec.created)
            if any(created >= b for b in before) or any(created <= s for s in since):
                continue
            if any(created >= u for u in until):
                continue
            if not match_each_label(filters, rec.labels):
                continue
            if patterns:
                refs = [r for r in refs if any(_ref_match(p, r) for p in patterns)]
                if not refs:
                    continue
            out.append(self._summary(rec, refs))
        return out

    def inspect(self, name: str) -> dict[str, Any]:
        """``docker image inspect``, in the Engine API's shape (``image.InspectResponse``)."""
        rec = self.get(name)
        config, raw = self._config(rec)
        summary = self._summary(rec)
        return {
            "Id": rec.id,
            "RepoTags": summary.repo_tags,
            "RepoDigests": summary.repo_digests,
            "Parent": rec.parent or "",
            "Comment": raw.get("comment", ""),
            "Created": config.created or "",
            # Gone from API 1.45 on (the image router drops them); docker-compose v1
            # reads ContainerConfig.Volumes when it recreates a container.
            "Container": raw.get("container") or "",
            "ContainerConfig": legacy_container_config(raw.get("container_config")),
            "DockerVersion": raw.get("docker_version", ""),
            "Author": config.author,
            "Config": inspect_config(config.config),
            "Architecture": config.architecture,
            **({"Variant": config.variant} if config.variant else {}),
            "Os": config.os,
            **({"OsVersion": config.os_version} if config.os_version else {}),
            "Size": rec.size,
            "GraphDriver": {"Data": None, "Name": self.snapshotter_name},
            "RootFS": {"Type": config.rootfs.type, "Layers": list(config.rootfs.diff_ids)},
            "Metadata": {"LastTagTime": rec.last_tag_time or ZERO_TIME},
        }

    def history(self, name: str) -> HistoryItems:
        """``docker history``: newest step first; ids only where an image starts (moby)."""
        rec = self.get(name)
        config, _ = self._config(rec)
        items: list[dict[str, Any]] = []
        n = 0
        for h in config.history:
            size = 0
            if not h.empty_layer and n < len(rec.layers):
                size = rec.layers[n].size
                n += 1
            items.insert(0, {"Id": "<missing>", "Created": int(parse_rfc3339(h.created)),
                             "CreatedBy": h.created_by, "Tags": None, "Size": size,
                             "Comment": h.comment})
        current: ImageRecord | None = rec
        for item in items:
            if current is None:
                break
            item["Id"] = current.id
            tags = [normalize(r).familiar() for r in self.metadata.references_of(current.id)
                    if "@" not in r]
            item["Tags"] = tags or None
            current = self.metadata.get_by_id(current.parent) if current.parent else None
        return items

    # --- names ---------------------------------------------------------------------------

    def tag(self, src: str, dst: str) -> None:
        """``docker tag``: ``dst`` (a name, never a digest) now names ``src``'s image."""
        target = normalize(dst)
        if target.digest is not None:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        with self._locked():
            rec = self.get(src)
            self.metadata.tag(target, rec.id)

    def remove(self, name: str, force: bool = False,
               noprune: bool = False) -> DeleteRecords:
        """``docker rmi``, with moby's rules (``daemon/images/image_delete.go``).

        By name: that reference is untagged; the image goes only with its last
        name. By id: allowed when its names are at most one tag in one
        repository (they are untagged), otherwise only with ``force``.
        Removing an image removes the layers only it used (``Deleted: <chain>``);
        ``noprune`` keeps a now-dangling parent image.
        """
        with self._locked():
            rec = self.get(name)
            records: DeleteRecords = []
            refs = self.metadata.references_of(rec.id)
            if not self._names_id(name, rec):
                parsed = normalize(name)
                self.metadata.untag(parsed)
                records.append({"Untagged": parsed.familiar()})
                refs = self.metadata.references_of(rec.id)
                if parsed.digest is None:
                    repo = parsed.name
                    if not any("@" not in r and normalize(r).name == repo for r in refs):
                        for r in [r for r in refs if "@" in r and normalize(r).name == repo]:
                            self.metadata.untag(r)
                            records.append({"Untagged": normalize(r).familiar()})
                            refs.remove(r)
                if refs:
                    return records
                # The last name is gone; the image goes too unless something holds it.
                self._delete(rec, records, force=force, prune=not noprune, quiet=True)
                return records
            if _single_reference(refs):
                self._check_delete(rec, force=force, check_refs=False)
                for r in refs:
                    self.metadata.untag(r)
                    records.append({"Untagged": normalize(r).familiar()})
            self._delete(rec, records, force=force, prune=not noprune)
            return records

    def containers_using(self, image_id: str) -> Names:
        """Keys of the container rootfs snapshots made from ``image_id`` by ``rootfs_mounts``."""
        return [info.name for info in self.snapshotter.walk()
                if info.kind is not Kind.COMMITTED and info.labels.get(IMAGE_LABEL) == image_id]

    def _check_delete(self, rec: ImageRecord, *, force: bool, quiet: bool = False,
                      check_refs: bool = True) -> bool:
        """moby's checkImageDeleteConflict; False instead of raising when ``quiet``.

        Children block always ("cannot be forced"); without ``force``, more
        than one name and a container's rootfs block too ("must be forced").
        ketch does not know yet whether a container runs, so every container
        counts as a stopped one, which ``force`` overrides as in Docker.
        """
        def conflict(hard: bool, why: str) -> bool:
            if quiet:
                return False
            how = "cannot be forced" if hard else "must be forced"
            raise Conflict(f"conflict: unable to delete {_short(rec.id)} ({how}) - {why}")

        if self.metadata.children(rec.id):
            return conflict(True, "image has dependent child images")
        if force:
            return True
        if check_refs and len(self.metadata.references_of(rec.id)) > 1:
            return conflict(False, "image is referenced in multiple repositories")
        users = self.containers_using(rec.id)
        if users:
            return conflict(False, f"image is being used by stopped container {users[0][:12]}")
        return True

    def _delete(self, rec: ImageRecord, records: DeleteRecords, *, force: bool,
                prune: bool, quiet: bool = False, collect: bool = True) -> None:
        """Delete ``rec`` (and, with ``prune``, its parents that no name holds any more).

        ``collect``: remove the snapshots and blobs it leaves unused now; a caller
        deleting many images (``prune``) collects once at the end instead.
        """
        if not self._check_delete(rec, force=force, quiet=quiet):
            return
        if quiet and self.metadata.references_of(rec.id):
            return  # a parent still has a name: not pruned
        with self.metadata.transaction():
            for r in self.metadata.references_of(rec.id):
                self.metadata.untag(r)
                records.append({"Untagged": normalize(r).familiar()})
            self.metadata.delete_image(rec.id)
        records.append({"Deleted": rec.id})
        if collect:
            removed, _ = self._collect_snapshots()
            records.extend({"Deleted": c} for c in removed)
            self._collect_blobs(self._blobs_of_record(rec))
        if prune and rec.parent:
            with contextlib.suppress(NotFound):
                parent = self.metadata.get_by_id(rec.parent)
                self._delete(parent, records, force=False, prune=True, quiet=True,
                             collect=collect)

    def prune(self, filters: Mapping[str, Sequence[str]] | None = None, *,
              all: bool = False) -> dict[str, Any]:
        """``docker image prune``, with dockerd's filters (``daemon/images/image_prune.go``).

        ``dangling=true`` (the default): images without a tag; ``dangling=false``
        (what ``-a`` sends; ``all`` here means the same): every image no
        container uses. ``until=<timestamp|duration>``: only images created
        before it. ``label=k[=v]`` must all hold and ``label!=k[=v]`` must not
        all hold (``ketch.filters.match_labels``). Any other name, or a bad
        value, is refused before anything is deleted, in dockerd's words.

        Images with children are not candidates (moby prunes "heads"; with
        ``-a`` a parent goes once its children went, in a later pass here).
        An image a container uses is skipped quietly, as moby ignores the
        conflict. ``SpaceReclaimed`` counts the layers that went, as moby sums
        their diff sizes. Returns the Engine API's body.
        """
        f = {k: list(v) for k, v in (filters or {}).items()}
        check_names(f, IMAGE_PRUNE)
        dangling_only = bool_filter(f, "dangling", True) and not all
        until = prune_until(f)
        with self._locked():
            sizes = {la.chain_id: la.size for rec in self.metadata.list_images()
                     for la in rec.layers}
            deleted: DeleteRecords = []
            done: set[str] = set()
            progress = True
            while progress:  # a pass may free parents for the next one
                progress = False
                in_use = self._container_counts()
                all_refs = self.metadata.all_references()
                for rec in self.metadata.list_images():
                    if rec.id in done or in_use.get(rec.id) or self.metadata.children(rec.id):
                        continue
                    refs = all_refs.get(rec.id, [])
                    if dangling_only and any("@" not in r for r in refs):
                        continue
                    if until is not None and (not rec.created
                                              or parse_rfc3339(rec.created) > until):
                        continue
                    if not match_labels(f, rec.labels):
                        continue
                    done.add(rec.id)
                    with contextlib.suppress(NotFound, Conflict):
                        self._delete(rec, deleted, force=True, prune=True, collect=False)
                        progress = True
            if deleted:
                removed, _ = self._collect_snapshots()
                deleted.extend({"Deleted": c} for c in removed)
                self._collect_blobs()
            space = sum(sizes.get(r.get("Deleted", ""), 0) for r in deleted)
            return {"ImagesDeleted": deleted or None, "SpaceReclaimed": space}

    def _container_counts(self) -> Counter[str]:
        """image id -> how many container rootfs snapshots (``rootfs_mounts``) are of it."""
        return Counter(info.labels[IMAGE_LABEL] for info in self.snapshotter.walk()
                       if info.kind is not Kind.COMMITTED and IMAGE_LABEL in info.labels)

    def disk_usage(self) -> DiskUsage:
        """The images part of ``docker system df``, computed as dockerd does.

        The images are the top-level ones (not unnamed parents of other
        images). A layer is *shared* when more than one of them uses it; an
        image's ``SharedSize`` is the size of its shared layers, and
        ``Containers`` the number of containers made from it.
        """
        counts = self._container_counts()
        all_refs = self.metadata.all_references()
        top = [rec for rec in self.metadata.list_images()
               if all_refs.get(rec.id) or not self.metadata.children(rec.id)]
        users: Counter[str] = Counter()
        sizes: dict[str, int] = {}
        for rec in top:
            for la in rec.layers:
                sizes[la.chain_id] = la.size
            users.update({la.chain_id for la in rec.layers})
        images: list[ImageSummary] = []
        for rec in top:
            summary = self._summary(rec, all_refs.get(rec.id, []))
            summary.shared_size = sum(sizes[c] for c in {la.chain_id for la in rec.layers}
                                      if users[c] > 1)
            summary.containers = counts.get(rec.id, 0)
            images.append(summary)
        return DiskUsage(layers_size=sum(sizes.values()), images=images)

    # --- containers ---------------------------------------------------------------------

    def rootfs_mounts(self, name: str, container_key: str) -> Mounts:
        """A new active snapshot on top of the image, for a container's rootfs.

        The caller mounts the returned ``Mount`` records (honouring
        ``Mount.cwd``) and removes the snapshot with the container. The image's
        id is kept as a label, so the engine can tell which image a rootfs is
        of; gc never removes active snapshots or their parents.
        """
        with self._locked():
            rec = self.get(name)
            return self.snapshotter.prepare(container_key, rec.chain_id,
                                            labels={IMAGE_LABEL: rec.id})

    # --- garbage -------------------------------------------------------------------------

    def gc(self) -> GcResult:
        """Remove every blob and committed snapshot that no image needs.

        Active snapshots and views (containers) are never touched, and neither
        are the committed snapshots under them.
        """
        with self._locked():
            self._collect_leftovers()
            snaps, snap_bytes = self._collect_snapshots()
            blobs, blob_bytes = self._collect_blobs()
            return GcResult(blobs, snaps, snap_bytes + blob_bytes)

    def _collect_leftovers(self) -> None:
        """Extraction snapshots and ingests of imports that crashed.

        Imports run under the lock that ``gc`` holds, so any that exist now
        belong to a process that died; other writers' ingests are left alone.
        """
        for info in list(self.snapshotter.walk()):
            if info.kind is Kind.ACTIVE and info.name.startswith("extract-"):
                with contextlib.suppress(Conflict, NotFound):
                    self.snapshotter.remove(info.name)
        for status in self.content.statuses():
            if status.ref.startswith(("image-", "load-")):
                with contextlib.suppress(Conflict, NotFound):
                    self.content.abort(status.ref)

    def _collect_snapshots(self) -> tuple[Names, int]:
        keep = self.metadata.chain_ids_in_use()
        infos = list(self.snapshotter.walk())
        children: dict[str | None, int] = {}
        for info in infos:
            children[info.parent] = children.get(info.parent, 0) + 1
        removed: Names = []
        freed = 0
        progress = True
        while progress:  # leaves first: a removal may free its parent
            progress = False
            for info in infos:
                if (info.kind is not Kind.COMMITTED or info.name in keep
                        or info.name in removed or children.get(info.name, 0)):
                    continue
                try:
                    self.snapshotter.remove(info.name)
                except (Conflict, NotFound):
                    continue
                removed.append(info.name)
                freed += int(info.labels.get(SIZE_LABEL, "0") or 0)
                children[info.parent] = children.get(info.parent, 1) - 1
                progress = True
        return removed, freed

    def _manifest_layers(self, manifest_digest: str) -> frozenset[str]:
        """The layer digests a manifest names; manifests never change, so kept."""
        cached = self._layers_of_manifest.get(manifest_digest)
        if cached is None:
            cached = frozenset()
            with contextlib.suppress(NotFound, InvalidArgument):
                manifest = oci.parse_manifest(self.content.read(manifest_digest))
                cached = frozenset(la.digest for la in manifest.layers)
            self._layers_of_manifest[manifest_digest] = cached
        return cached

    def _blobs_of_record(self, rec: ImageRecord) -> set[str]:
        return {rec.id, rec.manifest_digest, *self._manifest_layers(rec.manifest_digest)}

    def _collect_blobs(self, candidates: set[str] | None = None) -> tuple[Names, int]:
        """Delete blobs no image needs: all of the store, or only ``candidates``
        (what one removed image held: the common ``rmi`` case needs no walk)."""
        keep: set[str] = set()
        for rec in self.metadata.list_images():
            keep |= self._blobs_of_record(rec)
        removed: Names = []
        freed = 0
        if candidates is None:
            pairs = [(info.digest, info.size) for info in self.content.walk()]
        else:
            pairs = []
            for digest in candidates - keep:
                with contextlib.suppress(NotFound):
                    pairs.append((digest, self.content.info(digest).size))
        for digest, size in pairs:
            if digest in keep:
                continue
            with contextlib.suppress(NotFound):
                self.content.delete(digest)
                removed.append(digest)
                freed += size

        return removed, freed

    def check(self, quick: bool = False) -> Problems:
        """``ketch system check`` on this store (``ketch.image.check``); empty: healthy."""
        from ketch.image.check import check_store

        return check_store(self.root, snapshots_root=getattr(self.snapshotter, "root", None),
                           quick=quick)


# --- filter helpers ---------------------------------------------------------------------

def inspect_config(cc: oci.ContainerConfig) -> dict[str, Any]:
    """An image's run defaults as dockerd's inspect shows them: its Go struct, every
    field present (``""``, ``false``, ``null`` when unset) but the ``omitempty`` ones."""
    doc = to_json(cc)
    out: dict[str, Any] = {"Hostname": "", "Domainname": "", "User": cc.user,
                           "AttachStdin": False, "AttachStdout": False, "AttachStderr": False}
    if "ExposedPorts" in doc:
        out["ExposedPorts"] = doc["ExposedPorts"]
    out.update({"Tty": False, "OpenStdin": False, "StdinOnce": False,
                "Env": doc.get("Env"), "Cmd": doc.get("Cmd")})
    for key in ("Healthcheck", "ArgsEscaped"):
        if key in doc:
            out[key] = doc[key]
    out.update({"Image": "", "Volumes": doc.get("Volumes"), "WorkingDir": cc.working_dir,
                "Entrypoint": doc.get("Entrypoint"), "OnBuild": doc.get("OnBuild"),
                "Labels": doc.get("Labels")})
    for key in ("StopSignal", "Shell"):
        if key in doc:
            out[key] = doc[key]
    return out


def legacy_container_config(raw: Any) -> dict[str, Any]:
    """Docker's ``container_config`` of the build step that made an image (a zero
    config when the image has none: imported, or built without the legacy builder),
    in the shape ``inspect_config`` gives, with the fields it zeroes kept from ``raw``."""
    raw = raw if isinstance(raw, dict) else {}
    try:
        cc = from_json(oci.ContainerConfig, raw, where="container_config")
    except InvalidArgument:
        cc = oci.ContainerConfig()
    out = inspect_config(cc)
    for key in ("Hostname", "Domainname", "AttachStdin", "AttachStdout", "AttachStderr",
                "Tty", "OpenStdin", "StdinOnce", "Image"):
        if key in raw and isinstance(raw[key], type(out[key])):
            out[key] = raw[key]
    return out


def _ref_match(pattern: str, ref: str) -> bool:
    """moby's reference.FamiliarMatch: the familiar string, then the familiar name."""
    parsed = normalize(ref)
    return go_path_match(pattern, parsed.familiar()) or go_path_match(
        pattern, parsed.familiar_name)


def _single_reference(refs: list[str]) -> bool:
    """moby's isSingleReference: at most one tag, and every reference in one repository."""
    tags = [r for r in refs if "@" not in r]
    if len(tags) > 1:
        return False
    return len({normalize(r).name for r in refs}) <= 1

