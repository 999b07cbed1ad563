"""Pull and push: the registry client and the image store, with dockerd's progress stream.

    dist = Distribution(images, Registries(options), max_downloads=3)
    dist.pull("127.0.0.1:5000/app", "v1", platform="", creds=None, emit=send)
    dist.push("127.0.0.1:5000/app", "v1", creds=None, emit=send)

``emit`` gets the JSON messages of the Engine API's progress stream, one dict
at a time (``{"status": "Downloading", "progressDetail": {...}, "id": ...}``),
from whichever thread does the work; the docker CLI draws its bars from them.

A pull resolves the manifest (through an index to this machine's platform),
downloads the layers it lacks in parallel, straight into the content store
with resumable writers (a dropped connection continues where it stopped, a
wrong digest keeps nothing), unpacks them in order as they arrive, and only
then records the image and its references: a failed pull names nothing. A
push sends what the registry lacks (asking first, mounting from another
repository of the same registry where the image is known under another name)
and then the manifest, and remembers the digest the registry now knows it by.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.image import oci
from ketch.image.content import Descriptor, Platform
from ketch.image.metadata import Layer
from ketch.image.reference import Reference, normalize, parse_digest
from ketch.units import human_size

if TYPE_CHECKING:
    from ketch.image.service import ImageService
    from ketch.registry.client import Credentials, Registries, Repository

Emit = Callable[[dict[str, Any]], None]
# (action, actor id, name): moby logs pulls and pushes by familiar reference and name.
OnEvent = Callable[[str, str, str], None]

# How often one layer's progress is reported at most (dockerd: about every 100 ms).
PROGRESS_INTERVAL = 0.1


def short_id(digest: str) -> str:
    """The 12 hex digits docker names a layer by in progress lines."""
    return digest.partition(":")[2][:12]


def progress_bar(current: int, total: int) -> str:
    """moby's JSONProgress.String() at a wide terminal: ``[=====>     ]  1.2MB/3.4MB``."""
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = min(50, int(current / total * 100) // 2)
    # A current past the total (a pushed tar is longer than the layer's size) shows alone.
    numbers = (f"{human_size(current):>8}" if current > total
               else f"{human_size(current):>8}/{human_size(total)}")
    return f"[{'=' * pct}>{' ' * (50 - pct)}] {numbers}"


def progress_message(status: str, lid: str, current: int | None = None,
                     total: int | None = None) -> dict[str, Any]:
    if current is None:
        return {"status": status, "progressDetail": {}, "id": lid}
    detail: dict[str, Any] = {"current": current}
    if total:
        detail["total"] = total
    return {"status": status, "progressDetail": detail,
            "progress": progress_bar(current, total or 0), "id": lid}


def parse_platform(text: str) -> Platform | None:
    """``os[/arch[/variant]]`` as the API's ``platform`` parameter; None when empty."""
    if not text:
        return None
    parts = text.lower().split("/")
    if len(parts) > 3 or not all(parts):
        raise InvalidArgument(f'"{text}": unknown operating system or architecture: '
                              "invalid argument")
    arch, variant = "", None
    if len(parts) > 1:
        arch, v = oci.normalize_arch(parts[1], parts[2] if len(parts) > 2 else "")
        variant = v or None
    return Platform(architecture=arch, os=oci.normalize_os(parts[0]), variant=variant)


def pull_reference(from_image: str, tag: str) -> tuple[Reference, bool]:
    """moby's postImagesCreate: the reference to pull, and whether it means every tag.

    ``tag`` may be a tag or a digest; with neither in either place, every tag
    of the repository is pulled (``docker pull --all-tags`` sends no tag).
    """
    ref = normalize(from_image)
    if tag:
        if ":" in tag and not tag.startswith(":"):
            parse_digest(tag)
            ref = ref.without_tag_or_digest().with_digest(tag)
        else:
            ref = ref.without_tag_or_digest().with_tag(tag)
        return ref, False
    # normalize() adds :latest; what the user wrote decides.
    written = from_image.rsplit("/", 1)[-1]
    if "@" in from_image or ":" in written:
        return ref, False
    return ref.without_tag_or_digest(), True


class _Throttle:
    """Progress of one transfer, reported at most every PROGRESS_INTERVAL."""

    def __init__(self, emit: Emit, status: str, lid: str, total: int) -> None:
        self.emit, self.status, self.lid, self.total = emit, status, lid, total
        self.last = 0.0

    def __call__(self, current: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL and current < self.total:
            return
        self.last = now
        self.emit(progress_message(self.status, self.lid, current, total or self.total))


class _CountingReader:
    """A blob being unpacked, reporting how much of it has been read."""

    def __init__(self, raw: BinaryIO, report: _Throttle) -> None:
        self._raw, self._report, self._done = raw, report, 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._done += len(data)
        self._report(self._done)
        return data

    def readinto(self, buf: Any) -> int:
        n = self._raw.readinto(buf)  # type: ignore[attr-defined]
        self._done += n or 0
        self._report(self._done)
        return n or 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@dataclass(frozen=True, slots=True)
class PullResult:
    image_id: str
    reference: Reference
    digest: str
    changed: bool


class Distribution:
    """Pulls and pushes for one daemon; thread-safe, called from worker threads."""

    def __init__(self, images: ImageService, registries: Registries, *,
                 max_downloads: int = 3, max_uploads: int = 5,
                 on_event: OnEvent | None = None) -> None:
        self.images = images
        self.registries = registries
        self.max_downloads = max(1, max_downloads)
        self.max_uploads = max(1, max_uploads)
        self.on_event = on_event
        # One pool per direction for the whole daemon: the limits are dockerd's
        # max-concurrent-downloads/uploads, shared by every pull or push at once.
        self._downloads = ThreadPoolExecutor(self.max_downloads, "ketch-download")
        self._uploads = ThreadPoolExecutor(self.max_uploads, "ketch-upload")
        self._blob_locks: dict[str, tuple[threading.Lock, int]] = {}   # lock, users
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        self._downloads.shutdown(wait=False, cancel_futures=True)
        self._uploads.shutdown(wait=False, cancel_futures=True)
        self.registries.close()

    # --- pull ------------------------------------------------------------------------

    def pull(self, from_image: str, tag: str, *, platform: str = "",
             creds: Credentials | None = None, emit: Emit) -> list[PullResult]:
        """``POST /images/create?fromImage=...``: one tag, a digest, or every tag."""
        ref, all_tags = pull_reference(from_image, tag)
        plat = parse_platform(platform)
        repo = self.registries.repository(ref, creds)
        if not all_tags:
            result = self._pull_one(repo, ref, plat, emit)
            emit({"status": f"Digest: {result.digest}"})
            emit({"status": ("Status: Downloaded newer image for " if result.changed
                             else "Status: Image is up to date for ") + ref.familiar()})
            return [result]
        tags = repo.tags()
        if not tags:
            raise NotFound(f"no tags found for {ref.familiar()}")
        results = []
        for t in tags:
            r = self._pull_one(repo, ref.with_tag(t), plat, emit)
            emit({"status": f"Digest: {r.digest}"})
            results.append(r)
        changed = any(r.changed for r in results)
        emit({"status": ("Status: Downloaded newer image for " if changed
                         else "Status: Image is up to date for ") + ref.familiar_name})
        return results

    def _pull_one(self, repo: Repository, ref: Reference, platform: Platform | None,
                  emit: Emit) -> PullResult:
        # A missing manifest is an error response; what goes wrong after it is found
        # (no manifest for this platform, a bad layer) comes after "Pulling from",
        # whose line is named by the tag, or by the whole reference (dockerd).
        top = repo.resolve(ref.digest or ref.tag or "latest")
        emit({"status": f"Pulling from {ref.path}",
              "id": str(ref) if ref.digest else ref.tag})
        pulled = repo.manifest_for(top.digest, platform)
        manifest = pulled.parsed
        config = oci.parse_config(pulled.config)
        if platform is not None and platform.os and pulled.index is None and \
                oci.normalize_os(config.os or "linux") != platform.os:
            # A plain manifest: dockerd checks only the operating system.
            raise InvalidArgument("operating system is not supported")
        diff_ids = list(config.rootfs.diff_ids)
        if len(diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"{ref.familiar()}: the manifest has {len(manifest.layers)} "
                                  f"layers, its config {len(diff_ids)}")
        layers = self._layers(repo, manifest, diff_ids, oci.digest_of(pulled.config), emit)
        digest_ref = ref.without_tag_or_digest().with_digest(pulled.digest)
        refs = [digest_ref] if ref.digest else [ref, digest_ref]
        rec, changed = self.images.record_pulled(pulled.manifest.data, pulled.config, layers,
                                                 refs)
        if self.on_event is not None:
            self.on_event("pull", ref.familiar(), ref.familiar_name)
        return PullResult(rec.id, ref, pulled.digest, changed)

    def _layers(self, repo: Repository, manifest: oci.Manifest, diff_ids: list[str],
                image_id: str, emit: Emit) -> list[Layer]:
        """The image's layers unpacked here: what is missing downloaded in parallel and
        unpacked in order as it arrives."""
        try:
            known = self.images.metadata.get_by_id(image_id)
        except NotFound:
            known = None
        if known is not None and len(known.layers) == len(diff_ids):
            return list(known.layers)   # the image is here already: dockerd prints no layer
        have: dict[int, Layer] = {}
        for i in range(len(diff_ids)):
            layer = self.images.layer_unpacked(diff_ids[: i + 1])
            if layer is None:
                break  # above a missing layer nothing can be unpacked yet
            have[i] = layer
        for i, desc in enumerate(manifest.layers):
            if i in have:
                emit(progress_message("Already exists", short_id(desc.digest)))
        missing = [(i, d) for i, d in enumerate(manifest.layers) if i not in have]
        for _, desc in missing:
            emit(progress_message("Pulling fs layer", short_id(desc.digest)))
        fetches: dict[int, Future[None]] = {}
        for n, (i, desc) in enumerate(missing):
            if n >= self.max_downloads:
                emit(progress_message("Waiting", short_id(desc.digest)))
            fetches[i] = self._downloads.submit(self._fetch_layer, repo, desc, emit)
        layers: list[Layer] = []
        try:
            for i, desc in enumerate(manifest.layers):
                if i in have:
                    layers.append(have[i])
                    continue
                fetches[i].result()
                layers.append(self._unpack(desc, diff_ids[: i + 1], emit))
        except BaseException:
            for f in fetches.values():
                f.cancel()
            raise
        return layers

    @contextlib.contextmanager
    def _blob_lock(self, digest: str) -> Iterator[None]:
        """One download of a blob at a time in this daemon (two pulls sharing a layer)."""
        with self._locks_guard:
            lock, users = self._blob_locks.get(digest, (threading.Lock(), 0))
            self._blob_locks[digest] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._locks_guard:   # dropped with its last user: the daemon runs for months
                lock, users = self._blob_locks[digest]
                if users == 1:
                    del self._blob_locks[digest]
                else:
                    self._blob_locks[digest] = (lock, users - 1)

    def _fetch_layer(self, repo: Repository, desc: Descriptor, emit: Emit) -> None:
        lid = short_id(desc.digest)
        content = self.images.content
        with self._blob_lock(desc.digest):
            if not content.exists(desc.digest):
                self._download(repo, desc, emit, lid)
        emit(progress_message("Download complete", lid))

    def _download(self, repo: Repository, desc: Descriptor, emit: Emit, lid: str) -> None:
        content = self.images.content
        ref = f"pull-{desc.digest.replace(':', '-')}"
        for _ in range(50):
            try:
                writer = content.writer(ref, expected_digest=desc.digest, total=desc.size)
                break
            except Conflict:
                # Another ketchd process on this root is fetching it: wait for it.
                time.sleep(0.1)
                if content.exists(desc.digest):
                    return
        else:
            raise Conflict(f"layer {desc.digest} is being downloaded by another process")
        with writer:
            report = _Throttle(emit, "Downloading", lid, desc.size)
            if writer.offset:
                report(writer.offset)
            repo.fetch_blob(desc, writer, report)
            emit(progress_message("Verifying Checksum", lid))
            writer.commit()

    def _unpack(self, desc: Descriptor, diff_ids: list[str], emit: Emit) -> Layer:
        lid = short_id(desc.digest)
        report = _Throttle(emit, "Extracting", lid, desc.size)

        def wrap(raw: BinaryIO) -> BinaryIO:
            return _CountingReader(raw, report)  # type: ignore[return-value]

        layer = self.images.unpack_layer(desc, diff_ids, wrap)
        emit(progress_message("Pull complete", lid))
        return layer

    # --- push ------------------------------------------------------------------------

    def push(self, name: str, tag: str, *, creds: Credentials | None = None,
             emit: Emit) -> list[str]:
        """``POST /images/{name}/push?tag=``: one tag, or every tag of the repository."""
        if "@" in name:
            raise InvalidArgument("cannot push a digest reference")
        base = normalize(name).without_tag_or_digest()
        written = name.rsplit("/", 1)[-1]
        if ":" in written and not tag:
            tag = normalize(name).tag or ""
        emit({"status": f"The push refers to repository [{base.name}]"})
        local = sorted({normalize(r) for refs in self.images.metadata.all_references().values()
                        for r in refs if "@" not in r
                        and normalize(r).without_tag_or_digest() == base},
                       key=lambda r: r.tag or "")
        if not local:
            raise NotFound(f"An image does not exist locally with the tag: {base.familiar_name}")
        if tag:
            want = base.with_tag(tag)
            if want not in local:
                raise NotFound(f"tag does not exist: {want.familiar()}")
            local = [want]
        repository = self.registries.repository(base, creds)
        return [self._push_one(repository, r, emit) for r in local]

    def _mount_sources(self, image_id: str, ref: Reference) -> list[str]:
        """Other repositories of the same registry naming this image (cross-repo mounts)."""
        out = []
        for other in self.images.metadata.references_of(image_id):
            o = normalize(other)
            if o.domain == ref.domain and o.path != ref.path and o.path not in out:
                out.append(o.path)
        return out

    def _push_one(self, repo: Repository, ref: Reference, emit: Emit) -> str:
        rec = self.images.get(str(ref))
        raw, manifest = self.images.manifest_of(rec)
        config_bytes = self.images.content.read(rec.id)
        sources = self._mount_sources(rec.id, ref)
        layers = list(manifest.layers)
        diff_ids = oci.parse_config(config_bytes).rootfs.diff_ids
        # Push lines name a layer by its DiffID (pull lines by its blob digest), as dockerd.
        ids = {d.digest: short_id(diff_ids[i] if i < len(diff_ids) else d.digest)
               for i, d in enumerate(layers)}
        for desc in layers:
            if not self.images.content.exists(desc.digest):
                raise NotFound(f"layer {desc.digest} of {ref.familiar()} is not in the "
                               "content store (it cannot be pushed)")
        # dockerd lists the top layer first.
        order = list(reversed(layers))
        for desc in order:
            emit(progress_message("Preparing", ids[desc.digest]))
        futures = []
        for n, desc in enumerate(order):
            if n >= self.max_uploads:
                emit(progress_message("Waiting", ids[desc.digest]))
            futures.append(self._uploads.submit(self._push_layer, repo, desc, ids[desc.digest],
                                                sources, emit))
        try:
            for f in futures:
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        cfg = manifest.config
        repo.push_blob(cfg, lambda: io.BytesIO(config_bytes))
        tag = ref.tag or "latest"
        digest = repo.push_manifest(tag, raw, manifest.media_type or oci.MEDIA_TYPE_OCI_MANIFEST)
        emit({"status": f"{tag}: digest: {digest} size: {len(raw)}"})
        emit({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": len(raw)}})
        self.images.add_reference(rec.id, ref.without_tag_or_digest().with_digest(digest))
        if self.on_event is not None:
            self.on_event("push", ref.familiar(), ref.familiar_name)
        return digest

    def _push_layer(self, repo: Repository, desc: Descriptor, lid: str, sources: list[str],
                    emit: Emit) -> None:
        report = _Throttle(emit, "Pushing", lid, desc.size)
        how = repo.push_blob(desc, lambda: self.images.content.open(desc.digest), report,
                             mount_from=sources)
        if how == "exists":
            emit(progress_message("Layer already exists", lid))
        elif how.startswith("mounted:"):
            emit(progress_message(f"Mounted from {how.partition(':')[2]}", lid))
        else:
            emit(progress_message("Pushed", lid))

    # --- login and distribution inspect ------------------------------------------------

    def login(self, creds: Credentials) -> dict[str, str]:
        """``POST /auth``: check the credentials against the registry."""
        result = self.registries.login(creds.server_address, creds)
        return {"Status": result.status, "IdentityToken": result.identity_token}

    def inspect(self, name: str, creds: Credentials | None = None) -> dict[str, Any]:
        """``GET /distribution/{name}/json``: the descriptor a registry has for a name."""
        ref = normalize(name)
        repo = self.registries.repository(ref, creds)
        fetched = repo.resolve(ref.digest or ref.tag or "latest")
        desc = {"mediaType": fetched.media_type, "digest": fetched.digest,
                "size": len(fetched.data)}
        platforms: list[dict[str, Any]] = []
        if fetched.is_index:
            for m in oci.parse_index(fetched.data).manifests:
                if m.platform is not None:
                    platforms.append(_platform_json(m.platform))
        else:
            # A plain manifest's platform is its config's.
            config = oci.parse_config(repo.manifest_for(fetched.digest).config)
            platforms.append(_platform_json(config.platform))
        return {"Descriptor": desc, "Platforms": platforms}


def _platform_json(p: Platform) -> dict[str, Any]:
    out: dict[str, Any] = {"architecture": p.architecture, "os": p.os}
    if p.os_version:
        out["os.version"] = p.os_version
    if p.os_features:
        out["os.features"] = list(p.os_features)
    if p.variant:
        out["variant"] = p.variant
    return out
