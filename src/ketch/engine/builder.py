"""The engine's side of ``docker build``: images, snapshots and containers for the
builder (``ketch.build.executor``), which decides the steps and the cache.

A build runs in a worker thread. Steps that touch the filesystem get a
writable snapshot of their parent image: COPY/ADD/WORKDIR mount it here and
write into it, RUN goes through the engine as an ordinary container (same
runtime, cgroups, network and events as ``docker run``), the way moby's
legacy builder runs its steps. Either way the snapshot's upper directory
becomes the step's layer, and every step is an image whose parent is the
step before (``docker images -a`` shows them, as with dockerd's legacy builder).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from ketch.build.backend import CacheRecord, RunSpec
from ketch.errors import InvalidArgument, KetchError, NotFound, NotSupported

if TYPE_CHECKING:
    from ketch.build.context import BuildContext
    from ketch.build.request import BuildOptions, Emit
    from ketch.engine.containers import Engine

_BUILD_LABEL = "ketch.build.step"


class BuildService:
    """``POST /build``'s engine: one per daemon, builds run in worker threads."""

    def __init__(self, engine: Engine, distribution: Any = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 on_image_event: Callable[[str, str, str], None] | None = None) -> None:
        self.engine = engine
        self.on_image_event = on_image_event or (lambda action, image, ref: None)
        self.images = engine.images
        self.distribution = distribution
        self.loop = loop or asyncio.get_event_loop()
        self.root = os.path.join(engine.opts.root, "builder")
        self._cache_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        os.makedirs(self.tmp_dir(), mode=0o700, exist_ok=True)
        self._sweep()

    def _sweep(self) -> None:
        """What a build killed with the daemon left: its mounts, scratch dirs and
        snapshots (no build runs yet when the daemon starts)."""
        from ketch.image.snapshot import Kind

        tmp = self.tmp_dir()
        for name in os.listdir(tmp):
            path = os.path.join(tmp, name)
            with contextlib.suppress(OSError):
                _unmount_all(path)
            shutil.rmtree(path, ignore_errors=True)
        for info in list(self.images.snapshotter.walk()):
            if info.kind is Kind.ACTIVE and info.name.startswith("build-"):
                with contextlib.suppress(KetchError, OSError):
                    self.images.snapshotter.remove(info.name)

    def tmp_dir(self) -> str:
        return os.path.join(self.root, "tmp")

    def cache_lock(self, path: str) -> threading.Lock:
        """One lock per cache mount directory, shared by every build of this daemon."""
        with self._locks_lock:
            return self._cache_locks.setdefault(path, threading.Lock())

    def build(self, opts: BuildOptions, context: BuildContext, emit: Emit,
              cancel: threading.Event) -> str:
        from ketch.build.executor import Builder, Context
        from ketch.image import oci
        from ketch.linux.securejoin import secure_join

        dockerfile = opts.dockerfile or "Dockerfile"
        path = secure_join(context.root, dockerfile)
        try:
            with open(path, "rb") as f:
                text = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise InvalidArgument("Cannot locate specified Dockerfile: "
                                  f"{opts.dockerfile or 'Dockerfile'}") from None
        ignore = None
        if context.in_place:
            ignore = _context_ignore(context.root, dockerfile)
        else:
            # dockerd's removeDockerfile: the docker CLI's .dockerfile.<hex> (a Dockerfile
            # from stdin or outside the context) must not reach COPY . /
            context.drop_build_files(dockerfile)
        backend = _Backend(self, opts)
        ctx = Context(root=context.root, digests=context.digests, named=dict(context.contexts),
                      secrets=dict(context.secrets), ignore=ignore)
        builder = Builder(text, opts, backend, ctx, emit, cancel,
                          host_platform=("linux", oci.host_arch(), ""))
        return builder.run()

    def call(self, coro: Any) -> Any:
        """Run an engine coroutine on the daemon's loop from a build thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def cache_store(self) -> BuildCacheStore:
        return BuildCacheStore(self)


def _context_ignore(root: str, dockerfile: str) -> Any:
    """The .dockerignore of a context read in place (``<Dockerfile>.dockerignore``
    first), as a matcher; what it names is hidden from COPY as a client leaves it out
    of a tar. The Dockerfile and .dockerignore stay unless named (removeDockerfile)."""
    from pathlib import Path

    from ketch.build.dockerignore import Matcher, ignore_file_for, read_file

    found = ignore_file_for(Path(root), Path(root) / dockerfile)
    return Matcher(read_file(found)) if found is not None else None


class _Backend:
    """``ketch.build.backend.Backend`` over one daemon's engine, for one build."""

    def __init__(self, svc: BuildService, opts: BuildOptions) -> None:
        self.svc = svc
        self.images = svc.images
        self.opts = opts

    # --- images ----------------------------------------------------------------------------

    def base_image(self, ref: str, *, pull: bool, platform: str) -> str:
        from ketch.image.reference import normalize

        try:
            name = normalize(ref)
        except InvalidArgument:
            raise InvalidArgument(f"invalid reference format: {ref}") from None
        if not pull:
            with contextlib.suppress(NotFound):
                return self.images.get(str(name)).id
        if self.svc.distribution is None:
            raise NotFound(f"No such image: {name.familiar()}")
        from ketch.registry.client import Credentials

        creds = None
        auth = self.opts.registry_auth.get(name.domain) if self.opts.registry_auth else None
        if isinstance(auth, dict):
            creds = Credentials.from_json(auth)
        tag = name.tag or ""
        source = name.name if name.digest is None else f"{name.name}@{name.digest}"
        self.svc.distribution.pull(source, tag if name.digest is None else "",
                                   platform=platform, creds=creds, emit=lambda m: None)
        return self.images.get(str(name)).id

    def image_doc(self, image_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.images.content.read(image_id))
        doc.setdefault("config", {})
        if doc["config"] is None:
            doc["config"] = {}
        return doc

    def tag(self, image_id: str, tags: list[str]) -> None:
        from ketch.image.reference import normalize

        refs = []
        for t in tags:
            try:
                ref = normalize(t)
            except InvalidArgument:
                raise InvalidArgument(f"invalid reference format: {t}") from None
            if ref.digest is not None:
                raise InvalidArgument("refusing to create a tag with a digest reference")
            refs.append(ref)
        for ref in refs:
            with self.images.metadata.transaction():
                self.images.metadata.tag(ref, image_id)
            self.svc.on_image_event("tag", image_id, ref.familiar())

    # --- cache -----------------------------------------------------------------------------

    def cache_get(self, key: str) -> str | None:
        return self.images.metadata.cache_get(key)

    def cache_put(self, record: CacheRecord) -> None:
        self.images.metadata.cache_put(record.key, record.image, record.parent, record.command,
                                       json.dumps(record.inputs, sort_keys=True))

    def cache_siblings(self, parent: str) -> list[CacheRecord]:
        out = []
        for key, image, par, command, inputs, *_ in self.images.metadata.cache_rows(parent):
            try:
                doc = json.loads(inputs)
            except ValueError:
                doc = {}
            out.append(CacheRecord(key=key, image=image, parent=par, command=command,
                                   inputs=doc))
        return out

    def cache_dir(self, ident: str, sharing: str = "shared", uid: int = 0, gid: int = 0,
                  mode: int = 0o755) -> tuple[str, Callable[[], None]]:
        h = hashlib.sha256(ident.encode()).hexdigest()[:32]
        path = os.path.join(self.svc.root, "cache-mounts", h)
        lock = self.svc.cache_lock(path)
        release: Callable[[], None] = lambda: None  # noqa: E731
        if sharing == "locked":
            lock.acquire()
            release = lock.release
        elif sharing == "private":
            if lock.acquire(blocking=False):
                release = lock.release
            else:   # in use: this step gets a fresh one, thrown away after it
                path = os.path.join(self.svc.tmp_dir(), f"cache-{secrets.token_hex(8)}")
                release = functools.partial(shutil.rmtree, path, ignore_errors=True)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            os.mkdir(path, mode)
            os.chown(path, uid, gid)
            os.chmod(path, mode)          # not the umask's
        except FileExistsError:
            pass
        except BaseException:
            release()
            raise
        return path, release

    # --- steps ------------------------------------------------------------------------------

    def commit_config(self, parent: str | None, doc: dict[str, Any]) -> str:
        return derive_image(self.images, parent, doc, None)

    def commit_layer_from(self, parent: str | None, doc: dict[str, Any], source: str,
                          index: int) -> str:
        from ketch.image import oci

        rec = self.images.get(source)
        manifest = oci.parse_manifest(self.images.content.read(rec.manifest_digest))
        return derive_image(self.images, parent, doc, None,
                            reuse=(rec.layers[index], manifest.layers[index]))

    def commit_files(self, parent: str | None, doc: dict[str, Any],
                     fill: Callable[[str], None]) -> str:
        with self._writable(parent) as (rootfs, upper, key):
            fill(rootfs)
            _unmount_all(rootfs)
            return derive_image(self.images, parent, doc, upper,
                                clamp=self.opts.source_date_epoch, active_key=key)

    @contextlib.contextmanager
    def _writable(self, parent: str | None) -> Iterator[tuple[str, str, str]]:
        """A writable snapshot of ``parent`` mounted on a temporary directory:
        (mounted root, upper dir holding the changes, snapshot key)."""
        snap = self.images.snapshotter
        key = f"build-{secrets.token_hex(8)}"
        target = os.path.join(self.svc.tmp_dir(), key)
        os.makedirs(target, mode=0o700)
        try:
            if parent is not None:
                mounts = self.images.rootfs_mounts(parent, key)
            else:
                mounts = snap.prepare(key, None)
            try:
                from ketch.engine.containers import mount_layer

                for m in mounts:
                    mount_layer(m.type, m.source, m.options, target, cwd=m.cwd)
                try:
                    yield target, _upper_of(mounts, target), key
                finally:
                    _unmount_all(target)
            finally:
                with contextlib.suppress(KetchError, OSError):
                    snap.remove(key)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(target)

    @contextlib.contextmanager
    def rootfs(self, image_id: str | None) -> Iterator[str]:
        if image_id is None:
            empty = os.path.join(self.svc.tmp_dir(), f"empty-{secrets.token_hex(6)}")
            os.makedirs(empty, mode=0o755)
            try:
                yield empty
            finally:
                shutil.rmtree(empty, ignore_errors=True)
            return
        # A writable snapshot is simplest to mount and is thrown away afterwards.
        with self._writable(image_id) as (root, _upper, _key):
            yield root

    def user_ids(self, rootfs: str, spec: str) -> tuple[int, int]:
        from ketch.engine.userdb import UserDB

        user, _, group = spec.partition(":")
        db = UserDB.from_rootfs(rootfs)
        try:
            eu = db.exec_user(spec)
        except KetchError as exc:
            raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: "
                                  f"{exc}") from None
        if not group and user.isdigit():
            return eu.uid, eu.uid       # BuildKit: a numeric user alone sets the gid too
        return eu.uid, eu.gid

    def commit_run(self, parent: str | None, doc: dict[str, Any], spec: RunSpec,
                   output: Callable[[str, str], None], started: Callable[[str], None],
                   cancelled: Callable[[], bool]) -> str:
        if parent is None:
            raise NotSupported("RUN on FROM scratch with no files before it: there is no "
                               "shell to run")
        o = self.opts
        r = o.resources
        mounts: list[dict[str, Any]] = []
        for m in spec.mounts:
            if m.type == "tmpfs":
                entry: dict[str, Any] = {"Type": "tmpfs", "Target": m.target}
                if m.size:
                    entry["TmpfsOptions"] = {"SizeBytes": m.size}
                mounts.append(entry)
            else:
                mounts.append({"Type": "bind", "Source": m.source, "Target": m.target,
                               "ReadOnly": m.readonly})
        network = spec.network or o.network_mode or "default"
        hc: dict[str, Any] = {
            "NetworkMode": network, "Mounts": mounts,
            "LogConfig": {"Type": "json-file", "Config": {}},
            "Memory": r.memory, "MemorySwap": r.memory_swap, "CpuShares": r.cpu_shares,
            "CpuPeriod": r.cpu_period, "CpuQuota": r.cpu_quota, "CpusetCpus": r.cpuset_cpus,
            "CpusetMems": r.cpuset_mems, "ShmSize": r.shm_size, "Ulimits": r.ulimits or None,
            "ExtraHosts": o.extra_hosts or None,
        }
        body = {"Image": parent, "Cmd": spec.argv, "Entrypoint": [""], "Env": spec.env,
                "User": spec.user, "WorkingDir": spec.workdir,
                "Healthcheck": {"Test": ["NONE"]}, "Labels": {_BUILD_LABEL: "1"},
                "AttachStdout": True, "AttachStderr": True, "HostConfig": hc}
        return self.svc.call(self._run(parent, doc, body, spec, output, started, cancelled))

    async def _run(self, parent: str, doc: dict[str, Any], body: dict[str, Any], spec: RunSpec,
                   output: Callable[[str, str], None], started: Callable[[str], None],
                   cancelled: Callable[[], bool]) -> str:
        from ketch.engine.logread import ReadOptions, follow_batches

        engine = self.svc.engine
        cid, _ = await engine.create(body)
        # dockerd's legacy rules: rm (default) removes a step's container after it
        # succeeds, forcerm also after it fails; a cancelled build leaves none.
        keep = not (self.opts.remove or self.opts.force_remove)
        try:
            started(cid)
            await engine.start(cid)
            c = engine.store.get(cid)
            stopped = engine.exit_event(cid)
            watcher = asyncio.ensure_future(self._watch_cancel(cid, stopped, cancelled))
            try:
                path = engine.log_path(c)
                if path:
                    async for batch in follow_batches(path, ReadOptions(), follow=True,
                                                      stopped=stopped):
                        for rec in batch:
                            output(rec.stream, rec.text.decode("utf-8", "replace"))
                result = await engine.wait(cid)
            finally:
                watcher.cancel()
            if cancelled():
                from ketch.build.executor import Cancelled

                raise Cancelled("build cancelled")
            code = int(result.get("StatusCode", 0))
            if code != 0:
                from ketch.build.executor import StepFailed

                keep = not self.opts.force_remove
                shown = " ".join(spec.argv)
                raise StepFailed(f"The command '{shown}' returned a non-zero code: {code}",
                                 code)
            from ketch.engine.files import ContainerFiles

            upper, lowers = ContainerFiles(engine).layer_dirs(cid)
            _drop_mount_stubs(upper, lowers, [m.target for m in spec.mounts])
            return await asyncio.to_thread(derive_image, self.images, parent, doc, upper,
                                           clamp=self.opts.source_date_epoch)
        except BaseException as exc:
            from ketch.build.executor import StepFailed

            if not isinstance(exc, StepFailed):
                keep = False
            raise
        finally:
            if not keep:
                with contextlib.suppress(KetchError):
                    await engine.remove(cid, force=True, volumes=True)

    async def _watch_cancel(self, cid: str, stopped: asyncio.Event,
                            cancelled: Callable[[], bool]) -> None:
        while not stopped.is_set():
            if cancelled():
                with contextlib.suppress(KetchError):
                    await self.svc.engine.kill(cid, "SIGKILL")
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopped.wait(), 0.2)


# --- layers and images ---------------------------------------------------------------------


def _upper_of(mounts: Any, target: str) -> str:
    for m in mounts:
        if m.type == "overlay":
            for opt in m.options:
                key, _, value = opt.partition("=")
                if key == "upperdir":
                    return os.path.join(m.cwd or "", value)
    for m in mounts:
        if m.type == "bind":
            return str(m.source)    # no parent layers: the snapshot dir is all new
    raise NotSupported("building needs the overlayfs snapshotter")


def _drop_mount_stubs(upper: str, lowers: list[str], targets: list[str]) -> None:
    """Remove the empty files and directories the runtime made in ``upper`` as mount
    points for RUN --mount targets (and parents it had to create): BuildKit leaves
    no trace of a mount in the layer. What the image already had stays."""
    for target in targets:
        rel = target.strip("/")
        while rel:
            if any(os.path.lexists(os.path.join(low, rel)) for low in lowers):
                break
            p = os.path.join(upper, rel)
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    os.rmdir(p)         # only when empty
                elif os.path.isfile(p) and os.path.getsize(p) == 0:
                    os.unlink(p)
                else:
                    break
            except OSError:
                break
            rel = os.path.dirname(rel)


def _unmount_all(target: str) -> None:
    from ketch.engine.containers import unmount_all

    unmount_all(target)


def derive_image(images: Any, parent: str | None, doc: dict[str, Any], upper: str | None,
                 clamp: int | None = None, reuse: tuple[Any, Any] | None = None,
                 active_key: str | None = None) -> str:
    """A new image: ``parent``'s layers, plus ``upper`` as one more layer when it holds
    changes, with ``doc`` as its config (diff_ids filled in here). The last history
    entry is marked ``empty_layer`` when no layer was added. ``reuse`` is an existing
    (layer record, manifest descriptor) to add instead of ``upper``. ``active_key`` names
    the unmounted active snapshot ``upper`` belongs to: it becomes the layer's committed
    snapshot as it is, instead of a second copy unpacked from the layer tar (not with
    ``clamp``, whose snapshot must hold the layer's clamped times). Returns the image id."""
    from ketch.engine.files import _commit_snapshot, _Created, _put, filtered_layer
    from ketch.image import oci
    from ketch.image.content import Descriptor
    from ketch.image.metadata import ImageRecord
    from ketch.image.service import SIZE_LABEL
    from ketch.image.snapshot import apply_layer

    created = _Created()
    doc = json.loads(json.dumps(doc))
    with images._locked():
        try:
            layers: list[Any] = []
            manifest_layers: list[Any] = []
            diff_ids: list[str] = []
            if parent is not None:
                base = images.get(parent)
                layers = list(base.layers)
                manifest_layers = list(oci.parse_manifest(
                    images.content.read(base.manifest_digest)).layers)
                diff_ids = [la.diff_id for la in base.layers]
            history = doc.get("history") or []
            if reuse is not None:
                layer, desc = reuse
                layers.append(layer)
                manifest_layers.append(desc)
                diff_ids.append(layer.diff_id)
            elif upper is not None:
                with images.content.writer(f"build-{secrets.token_hex(8)}") as w:
                    try:
                        diff_id, _size, entries = filtered_layer(upper, w, clamp_mtime=clamp)
                        existed = images.content.exists(w.digest())
                        desc = w.commit()
                    except BaseException:
                        w.abort()
                        raise
                if entries:
                    if not existed:
                        created.blobs.append(desc.digest)
                    chain = oci.chain_ids([*diff_ids, diff_id])[-1]
                    from ketch.image.metadata import Layer

                    size = None
                    if active_key is not None and clamp is None:
                        size = _commit_active(images, active_key, chain, upper, created,
                                              SIZE_LABEL)
                    if size is None:
                        size = _commit_snapshot(images, desc, chain, layers[-1].chain_id
                                                if layers else None, created, SIZE_LABEL,
                                                apply_layer)
                    layers.append(Layer(diff_id, chain, size))
                    manifest_layers.append(Descriptor(oci.MEDIA_TYPE_OCI_LAYER, desc.digest,
                                                      desc.size))
                    diff_ids.append(diff_id)
                else:
                    if not existed:
                        with contextlib.suppress(KetchError, OSError):
                            images.content.delete(desc.digest)
                    if history:
                        history[-1]["empty_layer"] = True
            doc["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
            config_bytes = json.dumps(doc, separators=(",", ":")).encode()
            config_digest = _put(images, config_bytes, created)
            with contextlib.suppress(NotFound):
                images.metadata.get_by_id(config_digest)
                return str(config_digest)       # the same image exists: nothing more
            manifest = oci.Manifest(
                media_type=oci.MEDIA_TYPE_OCI_MANIFEST,
                config=Descriptor(oci.MEDIA_TYPE_OCI_CONFIG, config_digest, len(config_bytes)),
                layers=manifest_layers)
            manifest_digest = _put(images, oci.encode(manifest), created)
            labels = dict((doc.get("config") or {}).get("Labels") or {})
            rec = ImageRecord(id=config_digest, manifest_digest=manifest_digest,
                              created=str(doc.get("created") or ""),
                              size=sum(la.size for la in layers), parent=parent,
                              layers=tuple(layers), labels=labels)
            with images.metadata.transaction():
                images.metadata.add_image(rec)
            return str(config_digest)
        except BaseException:
            created.rollback(images)
            raise


def _commit_active(images: Any, key: str, chain: str, upper: str, created: Any,
                   size_label: str) -> int | None:
    """Commit the active snapshot ``key`` as layer ``chain``; None when ``chain``
    exists already (the caller then uses the existing one)."""
    from ketch.errors import AlreadyExists
    from ketch.image.snapshot import Kind

    with contextlib.suppress(NotFound):
        if images.snapshotter.stat(chain).kind is Kind.COMMITTED:
            return None
    size = _content_size(upper)
    try:
        images.snapshotter.commit(chain, key, labels={size_label: str(size)})
    except AlreadyExists:
        return None
    created.snapshots.append(chain)
    return size


def _content_size(path: str) -> int:
    """What an unpack of the layer would count: file contents and link targets."""
    import stat

    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
            elif stat.S_ISLNK(st.st_mode):
                total += len(os.readlink(os.path.join(dirpath, name)).encode())
    return total


# --- build cache as system df and builder prune see it ---------------------------------------


@dataclass
class BuildCacheStore:
    """The step cache as ``/system/df`` BuildCache entries and ``/build/prune``."""

    svc: BuildService

    def disk_usage(self) -> list[dict[str, Any]]:
        from datetime import datetime

        images = self.svc.images
        tagged = set(images.metadata.all_references())
        out = []
        for key, image, parent, command, _inputs, created, last_used, count in \
                images.metadata.cache_rows():
            try:
                rec = images.metadata.get_by_id(image)
            except NotFound:
                continue
            own = rec.layers[-1].size if rec.layers and (
                not parent or len(rec.layers) > len(_layers_of(images, parent))) else 0
            out.append({
                "ID": key.removeprefix("sha256:")[:25], "Parent": parent, "Parents": [parent]
                if parent else [],
                "Type": "regular", "Description": command,
                "InUse": False, "Shared": image in tagged, "Size": own,
                "CreatedAt": datetime.fromtimestamp(created, UTC).isoformat(),
                "LastUsedAt": datetime.fromtimestamp(last_used, UTC).isoformat(),
                "UsageCount": count,
            })
        for path, size in self._cache_mounts():
            st = os.stat(path)
            when = datetime.fromtimestamp(st.st_mtime, UTC).isoformat()
            out.append({"ID": os.path.basename(path)[:25], "Parent": "", "Parents": [],
                        "Type": "exec.cachemount", "Description": "cached mount (RUN "
                        "--mount=type=cache)", "InUse": self.svc.cache_lock(path).locked(),
                        "Shared": False, "Size": size, "CreatedAt": when, "LastUsedAt": when,
                        "UsageCount": 0})
        return out

    def prune(self, filters: Any, options: Any) -> dict[str, Any]:
        """``/build/prune``: without ``all`` only steps no tagged image is built on
        (dangling cache); ``until``/``unused-for`` keep what was used more recently.
        The step images only the cache kept go with their rows."""
        import time

        from ketch.api.routers.system import no_build_cache
        from ketch.filters import parse_duration

        no_build_cache().prune(filters, options)     # dockerd's checks and words
        window = [*filters.get("until", ()), *filters.get("unused-for", ())]
        cutoff = time.time() - parse_duration(window[0]) if window else None
        images = self.svc.images
        meta = images.metadata
        tagged = set(meta.all_references())
        kept_by_tags: set[str] = set()
        for image in tagged:
            cur: str | None = image
            while cur and cur not in kept_by_tags:
                kept_by_tags.add(cur)
                try:
                    cur = meta.get_by_id(cur).parent
                except NotFound:
                    break
        rows = [r for r in meta.cache_rows()
                if (getattr(options, "all", False) or r[1] not in kept_by_tags)
                and (cutoff is None or r[6] < cutoff)]
        meta.cache_delete([r[0] for r in rows])
        still_cached = {r[1] for r in meta.cache_rows()}
        reclaimed = 0
        deleted: list[str] = []
        for key, image, *_ in reversed(rows):        # newest first: children before parents
            deleted.append(key.removeprefix("sha256:")[:25])
            if image in tagged or image in still_cached or meta.children(image):
                continue
            if self.svc.engine.in_use_by(image):
                continue
            try:
                rec = meta.get_by_id(image)
            except NotFound:
                continue
            parent_layers = len(_layers_of(images, rec.parent)) if rec.parent else 0
            with contextlib.suppress(KetchError):
                images.remove(image, force=False)
                if len(rec.layers) > parent_layers:
                    reclaimed += rec.layers[-1].size
        if getattr(options, "all", False) and cutoff is None:
            for path, size in self._cache_mounts():
                lock = self.svc.cache_lock(path)
                if lock.acquire(blocking=False):    # not while a RUN uses it
                    try:
                        shutil.rmtree(path, ignore_errors=True)
                    finally:
                        lock.release()
                    reclaimed += size
                    deleted.append(os.path.basename(path)[:25])
        with contextlib.suppress(KetchError):
            images.gc()
        return {"CachesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def _cache_mounts(self) -> list[tuple[str, int]]:
        """RUN --mount=type=cache directories and their disk use."""
        from ketch.image.snapshot import dir_usage

        base = os.path.join(self.svc.root, "cache-mounts")
        try:
            names = sorted(os.listdir(base))
        except FileNotFoundError:
            return []
        return [(os.path.join(base, n), dir_usage(os.path.join(base, n)).size) for n in names]

def _layers_of(images: Any, image_id: str) -> tuple[Any, ...]:
    try:
        return tuple(images.metadata.get_by_id(image_id).layers)
    except NotFound:
        return ()
