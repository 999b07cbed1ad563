"""Image archives: what ``docker load`` reads and ``docker save`` writes.

Three shapes exist in the field, and ``load_archive`` takes all of them:

* ``docker save`` before Docker 25: ``manifest.json`` (Config, RepoTags,
  Layers), the config as ``<hex>.json``, layers as ``<v1-id>/layer.tar``
  (uncompressed; duplicates are symlinks), a legacy ``repositories`` file;
* an OCI image layout: ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``,
  tags in the ``org.opencontainers.image.ref.name`` annotation, or in
  ``io.containerd.image.name`` as Docker 25+ and containerd write it;
* Docker 25+'s combined form, both of the above over one ``blobs/`` tree.

A load, step by step::

    with open("busybox.tar", "rb") as f:
        images = load_archive(f, store)     # every blob verified, then committed
    images[0].repo_tags                     # ["busybox:latest"]
    save_archive(images, store, out)        # the Docker 25+ combined form

The outer tar is read once, forward only (``docker save`` puts
``manifest.json`` last, and the archive may come from a pipe), so nothing can
be interpreted until the end. Each member is therefore *spooled*: small JSON
documents are kept in memory, everything else streams into a content-store
ingest (same filesystem as the blobs, so the final commit is a rename), while
its digest and, for gzip and zstd members, the digest of its decompressed
bytes are computed on the way. A member named ``blobs/sha256/<hex>`` that the
store already holds is only hashed. Memory use is bounded by the chunk size,
whatever the archive's size.

Then the archive is checked as a whole: every blob's digest against its name
and descriptor, every layer's uncompressed digest against the config's
``diff_ids`` (the only check ``<v1-id>/layer.tar`` names allow), media types,
sizes and layer counts. Only when everything holds are the blobs committed;
a failure at any point aborts the ingests and deletes the blobs this load
committed, so the store is left exactly as it was. Content that was already
there is never touched.

For ``docker save`` archives without OCI manifests ketch writes an OCI
manifest over the archive's config and layers (the layer bytes as they are,
as Docker 25+ does), so every loaded image is reachable from a manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import posixpath
import re
import secrets
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ketch.errors import InvalidArgument, KetchError, NotFound
from ketch.image import oci
from ketch.image.content import CHUNK, ContentStore, Descriptor, Writer
from ketch.image.reference import normalize, parse, parse_digest

# Documents read into memory (manifests, configs, indexes) may not exceed this.
JSON_LIMIT = 32 << 20
# Names that are always documents, never blobs to stream into the store.
_META_NAMES = frozenset({"manifest.json", "index.json", "oci-layout", "repositories"})
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BLOB_NAME = re.compile(r"blobs/([^/]+)/([^/]+)")
_LEGACY_CONFIG_NAME = re.compile(r"([a-f0-9]{64})\.json")
_MAX_LINK_DEPTH = 16
_OCI_LAYOUT_VERSION = "1.0.0"


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """One image an archive held, now in the content store.

    ``repo_tags`` are in Docker's familiar form ("busybox:latest"), as
    ``docker load`` prints them; empty for an untagged image.
    """

    config_digest: str
    manifest_digest: str
    repo_tags: list[str] = field(default_factory=list)
    layers: list[Descriptor] = field(default_factory=list)


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid image archive: {message}")


class _DiffHasher:
    """sha256 of a member's decompressed bytes (its DiffID if it is a layer).

    Output is hashed in bounded pieces and thrown away, so a compression bomb
    costs time, not memory. Invalid data just stops the hash: the result then
    cannot match any diff_id, which is where the error is reported.
    """

    def __init__(self, head: bytes) -> None:
        self.compression = ("gzip" if head[:2] == _GZIP_MAGIC
                            else "zstd" if head[:4] == _ZSTD_MAGIC else "")
        self._hash = hashlib.sha256()
        self._failed = False
        self._gz: Any = None
        self._zw: Any = None
        if self.compression == "gzip":
            self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.compression == "zstd":
            import zstandard
            self._zw = zstandard.ZstdDecompressor().stream_writer(
                self, write_size=CHUNK, closefd=False)  # type: ignore[arg-type]  # write() only
            self._zerror = zstandard.ZstdError

    def write(self, data: bytes) -> int:  # the zstd stream_writer's sink
        self._hash.update(data)
        return len(data)

    def update(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            if self._gz is not None:
                self._feed_gzip(chunk)
            elif self._zw is not None:
                self._zw.write(chunk)
        except zlib.error:
            self._failed = True
        except Exception as exc:
            if self._zw is not None and isinstance(exc, self._zerror):
                self._failed = True
            else:
                raise

    def _feed_gzip(self, data: bytes) -> None:
        while data:
            if self._gz.eof:
                rest = self._gz.unused_data + data
                if rest[:2] != _GZIP_MAGIC:
                    return  # trailing padding after the last member, as gzip(1) allows
                self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = rest
            self._hash.update(self._gz.decompress(data, CHUNK))
            data = self._gz.unconsumed_tail

    def digest(self, plain: str) -> str | None:
        if not self.compression:
            return plain
        if self._failed:
            return None
        if self._gz is not None and not self._gz.eof:
            return None  # truncated
        if self._zw is not None:
            try:
                self._zw.flush()
            except self._zerror:
                return None
        return "sha256:" + self._hash.hexdigest()


@dataclass(slots=True)
class _Member:
    """A regular file of the archive, spooled: in memory, in an ingest, or in the store."""

    name: str
    size: int
    digest: str
    diff_id: str | None
    compression: str
    data: bytes | None = None
    writer: Writer | None = None

    def document(self, what: str) -> bytes:
        if self.data is None:
            raise _bad(f"{what} {self.name} is not a JSON document")
        return self.data


class _GzipReader(io.RawIOBase):
    """A gzipped archive, inflated with its trailer checked.

    tarfile's own gzip reader neither checks the CRC-32 nor reads past the
    tar's end-of-archive blocks, so a damaged trailer went unnoticed; dockerd
    refuses it ("gzip: invalid checksum"). ``finish`` reads to the end of the
    gzip stream after the tar's last member.
    """

    MAGIC = b"\x1f\x8b"

    def __init__(self, src: BinaryIO, head: bytes) -> None:
        super().__init__()
        self._src = src
        self._pending = head
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._out = b""

    @classmethod
    def wrap(cls, stream: BinaryIO) -> _GzipReader | None:
        """A reader over ``stream`` if it starts as gzip does, else None (nothing consumed)."""
        peek = getattr(stream, "peek", None)
        if peek is not None:
            return cls(stream, b"") if peek(2)[:2] == cls.MAGIC else None
        if stream.seekable():
            pos = stream.tell()
            head = stream.read(2)
            stream.seek(pos)
            return cls(stream, b"") if head == cls.MAGIC else None
        return None  # cannot look ahead: tarfile's own detection ("r|*") decides

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._out:
            if self._z.eof:
                return 0
            raw = self._pending or self._src.read(CHUNK)
            self._pending = b""
            if not raw:
                raise _bad("truncated or corrupt: unexpected end of the gzip stream")
            try:
                self._out = self._z.decompress(raw)
            except zlib.error as exc:
                raise _bad(f"gzip: invalid checksum or data ({exc})") from None
        n = min(len(buf), len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def finish(self) -> None:
        while self.read(CHUNK):
            pass


class _Loader:
    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self.token = secrets.token_hex(8)
        self.members: dict[str, _Member] = {}
        self.links: dict[str, str] = {}
        self.writers: list[Writer] = []
        self.added: list[str] = []
        self.to_commit: dict[str, _Member | bytes] = {}
        self.images: dict[str, LoadedImage] = {}

    # --- spooling -------------------------------------------------------------

    def spool(self, stream: BinaryIO) -> None:
        gz = _GzipReader.wrap(stream)
        try:
            tar = tarfile.open(fileobj=gz or stream, mode="r|" if gz else "r|*")  # noqa: SIM115
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _bad(f"not a tar archive: {exc}") from None
        with tar:
            n = 0
            while True:
                try:
                    member = tar.next()
                except (tarfile.TarError, EOFError, zlib.error) as exc:
                    raise _bad(f"truncated or corrupt: {exc}") from None
                if member is None:
                    break
                name = _clean(member.name)
                if not name:
                    continue
                if member.issym():
                    self.links[name] = _clean(posixpath.join(posixpath.dirname(name),
                                                             member.linkname))
                elif member.islnk():
                    self.links[name] = _clean(member.linkname)
                elif member.isreg():
                    n += 1
                    self._spool_file(tar, member, name, n)
            if gz is not None:
                gz.finish()

    def _spool_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str,
                    n: int) -> None:
        src = tar.extractfile(member)
        assert src is not None
        named = _blob_digest(name)

        def read() -> bytes:
            try:
                return src.read(CHUNK)
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                raise _bad(f"truncated or corrupt at {name}: {exc}") from None

        head = read()
        base = posixpath.basename(name)
        is_meta = (name in _META_NAMES or base in ("json", "VERSION") or name.endswith(".json")
                   or (named is not None and head.lstrip()[:1] in (b"{", b"[")))
        if is_meta and member.size > JSON_LIMIT:
            if named is None:
                raise _bad(f"{name} is larger than {JSON_LIMIT} bytes")
            is_meta = False  # a huge blob that happens to start with "{": not a document
        h = hashlib.sha256()
        diff = _DiffHasher(head)
        old = self.members.pop(name, None)
        if old is not None and old.writer is not None:
            old.writer.abort()  # a later entry replaces an earlier one, as in tar
        writer: Writer | None = None
        keep: list[bytes] | None = [] if is_meta else None
        if not is_meta and not (named is not None and self.store.exists(named)):
            writer = self.store.writer(f"load-{self.token}-{n}", expected_digest=named,
                                       total=member.size)
            self.writers.append(writer)
        chunk = head
        while chunk:
            h.update(chunk)
            diff.update(chunk)
            if keep is not None:
                keep.append(chunk)
            if writer is not None:
                writer.write(chunk)
            chunk = read()
        digest = "sha256:" + h.hexdigest()
        if named is not None and digest != named:
            raise _bad(f"{name}: content digest {digest} does not match its name")
        self.members[name] = _Member(
            name, member.size, digest, diff.digest(digest), diff.compression,
            data=b"".join(keep) if keep is not None else None, writer=writer)

    # --- lookups -----------------------------------------------------------------

    def member(self, name: str, what: str) -> _Member:
        path = _clean(name)
        for _ in range(_MAX_LINK_DEPTH):
            if path in self.members:
                return self.members[path]
            if path not in self.links:
                break
            path = self.links[path]
        raise _bad(f"{what} {name} not found in the archive")

    def blob(self, desc: Descriptor, what: str) -> _Member:
        algorithm, hexpart = parse_digest(desc.digest)
        m = self.member(f"blobs/{algorithm}/{hexpart}", what)
        if m.digest != desc.digest:
            raise _bad(f"{what} {desc.digest}: content digest is {m.digest}")
        if m.size != desc.size:
            raise _bad(f"{what} {desc.digest}: size is {m.size}, descriptor says {desc.size}")
        return m

    # --- the OCI layout ----------------------------------------------------------

    def load_oci(self) -> None:
        layout = _json(self.member("oci-layout", "file").document("file"), "oci-layout")
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if version != _OCI_LAYOUT_VERSION:
            raise _bad(f"unsupported OCI layout version {version!r}")
        index = _parse(oci.parse_index, self.member("index.json", "file").document("file"),
                       "index.json")
        for desc in index.manifests:
            target = desc
            if desc.media_type in oci.INDEX_TYPES:
                m = self.blob(desc, "index")
                sub = _parse(oci.parse_index, m.document("index"), f"index {desc.digest}")
                self.to_commit[desc.digest] = m
                try:
                    target = oci.select_platform(sub)
                except NotFound as exc:
                    raise _bad(f"index {desc.digest}: {exc}") from None
            elif desc.media_type not in oci.MANIFEST_TYPES:
                raise _bad(f"unsupported media type {desc.media_type or '(none)'} in index.json")
            tags = _oci_tags(desc.annotations)
            image = self.images.get(target.digest) or self._oci_image(target)
            self._add_tags(target.digest, image, tags)

    def _oci_image(self, desc: Descriptor) -> LoadedImage:
        mm = self.blob(desc, "manifest")
        manifest = _parse(oci.parse_manifest, mm.document("manifest"), f"manifest {desc.digest}")
        if manifest.config.media_type not in oci.CONFIG_TYPES:
            raise _bad(f"manifest {desc.digest}: unsupported media type "
                       f"{manifest.config.media_type} for an image config")
        cm = self.blob(manifest.config, "config")
        config = _parse(oci.parse_config, cm.document("config"), f"config {cm.digest}")
        diff_ids = config.rootfs.diff_ids
        if len(diff_ids) != len(manifest.layers):
            raise _bad(f"manifest {desc.digest} has {len(manifest.layers)} layers, "
                       f"its config {len(diff_ids)} diff_ids")
        for i, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
            if layer.media_type not in oci.LAYER_TYPES:
                raise _bad(f"unsupported media type {layer.media_type} for layer {i} "
                           f"of manifest {desc.digest}")
            if layer.media_type in oci.FOREIGN_LAYER_TYPES and not self._has_blob(layer):
                continue  # never shipped in archives; fetched from its urls if at all
            lm = self.blob(layer, "layer")
            self._check_diff_id(lm, diff_id, f"layer {layer.digest}")
            self.to_commit[layer.digest] = lm
        self.to_commit[manifest.config.digest] = cm
        self.to_commit[desc.digest] = mm
        return LoadedImage(cm.digest, desc.digest, [], list(manifest.layers))

    def _has_blob(self, desc: Descriptor) -> bool:
        algorithm, hexpart = parse_digest(desc.digest)
        try:
            self.member(f"blobs/{algorithm}/{hexpart}", "layer")
        except InvalidArgument:
            return False
        return True

    @staticmethod
    def _check_diff_id(m: _Member, diff_id: str, what: str) -> None:
        if m.name not in what:
            what = f"{what} ({m.name})"
        if m.diff_id is None:
            raise _bad(f"{what} is not valid {m.compression}: corrupt or truncated")
        if m.diff_id != diff_id:
            raise _bad(f"{what}: uncompressed digest {m.diff_id} does not match "
                       f"the config's diff_id {diff_id}")

    def _add_tags(self, manifest_digest: str, image: LoadedImage, tags: list[str]) -> None:
        merged = list(image.repo_tags) + [t for t in tags if t not in image.repo_tags]
        self.images[manifest_digest] = LoadedImage(
            image.config_digest, image.manifest_digest, merged, image.layers)

    # --- docker save's manifest.json ---------------------------------------------

    def load_docker(self) -> None:
        entries = _json(self.member("manifest.json", "file").document("file"), "manifest.json")
        if not isinstance(entries, list):
            raise _bad("manifest.json: expected an array")
        for i, entry in enumerate(entries):
            where = f"manifest.json[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise _bad(f"{where}: expected an object with a Config path")
            layers = entry.get("Layers") or []
            tags = entry.get("RepoTags") or []
            if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
                raise _bad(f"{where}.Layers: expected an array of paths")
            if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
                raise _bad(f"{where}.RepoTags: expected an array of names")
            familiar = [_familiar(t, f"{where}.RepoTags") for t in tags]
            cm = self.member(entry["Config"], "config")
            legacy = _LEGACY_CONFIG_NAME.fullmatch(posixpath.basename(cm.name))
            if legacy and "sha256:" + legacy.group(1) != cm.digest:
                raise _bad(f"config {cm.name}: content digest {cm.digest} does not match its name")
            known = next((k for k, img in self.images.items()
                          if img.config_digest == cm.digest), None)
            if known is not None:  # the combined form: the OCI side made the manifest
                self._add_tags(known, self.images[known], familiar)
                continue
            image = self._docker_image(cm, layers, where)
            self._add_tags(image.manifest_digest, self.images.get(image.manifest_digest, image),
                           familiar)

    def _docker_image(self, cm: _Member, paths: list[str], where: str) -> LoadedImage:
        config = _parse(oci.parse_config, cm.document("config"), f"config {cm.name}")
        diff_ids = config.rootfs.diff_ids
        if len(diff_ids) != len(paths):
            raise _bad(f"{where} has {len(paths)} layers, its config {len(diff_ids)} diff_ids")
        layers: list[Descriptor] = []
        for path, diff_id in zip(paths, diff_ids, strict=True):
            lm = self.member(path, "layer")
            self._check_diff_id(lm, diff_id, f"layer {path}")
            media_type = {"gzip": oci.MEDIA_TYPE_OCI_LAYER_GZIP,
                          "zstd": oci.MEDIA_TYPE_OCI_LAYER_ZSTD}.get(lm.compression,
                                                                     oci.MEDIA_TYPE_OCI_LAYER)
            layers.append(Descriptor(media_type, lm.digest, lm.size))
            self.to_commit[lm.digest] = lm
        manifest = oci.Manifest(
            media_type=oci.MEDIA_TYPE_OCI_MANIFEST,
            config=Descriptor(oci.MEDIA_TYPE_OCI_CONFIG, cm.digest, cm.size), layers=layers)
        data = oci.encode(manifest)
        digest = oci.digest_of(data)
        self.to_commit[cm.digest] = cm
        self.to_commit[digest] = data
        return LoadedImage(cm.digest, digest, [], layers)

    # --- commit or roll back -----------------------------------------------------------

    def commit(self) -> None:
        """Move every needed blob into the store; other ingests are dropped."""
        for digest, source in self.to_commit.items():
            if self.store.exists(digest):
                continue
            writer = source.writer if isinstance(source, _Member) else None
            data = source if isinstance(source, bytes) else source.data
            self.added.append(digest)
            if writer is not None:
                writer.commit(expected=digest)
                continue
            if data is None:  # hashed only because the store had it; since deleted
                raise _bad(f"blob {digest} vanished from the content store during the load")
            self.store.put(f"load-{self.token}-{digest}", data, digest)
        self.abort_ingests()

    def abort_ingests(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(KetchError, OSError):
                writer.abort()

    def rollback(self) -> None:
        self.abort_ingests()
        for digest in self.added:
            with contextlib.suppress(NotFound, OSError):
                self.store.delete(digest)


def load_archive(stream: BinaryIO, store: ContentStore) -> list[LoadedImage]:
    """Read a ``docker save`` archive or an OCI layout tar into ``store``.

    All or nothing: on any error (``InvalidArgument`` for a bad archive) the
    store holds exactly what it held before. Images come back in archive order.
    """
    loader = _Loader(store)
    try:
        loader.spool(stream)
        has_oci = "index.json" in loader.members or "oci-layout" in loader.members
        has_docker = "manifest.json" in loader.members
        if not has_oci and not has_docker:
            raise _bad("no manifest.json (docker save) or index.json (OCI layout) found")
        if has_oci:
            loader.load_oci()
        if has_docker:
            loader.load_docker()
        loader.commit()
    except BaseException:
        loader.rollback()
        raise
    return list(loader.images.values())


def save_archive(images: Sequence[LoadedImage], store: ContentStore, out: BinaryIO) -> None:
    """Write ``images`` as Docker 25+ does: an OCI layout plus ``manifest.json``.

    Both halves share one ``blobs/`` tree, so the archive loads with
    ``docker load`` (old and new), skopeo's ``docker-archive:`` and
    ``oci-archive:``, and ketch. Layers are written as stored. The tar is
    written forward only, so ``out`` may be a pipe.
    """
    blobs: dict[str, int] = {}
    index = oci.Index(media_type=oci.MEDIA_TYPE_OCI_INDEX)
    docker_manifest: list[dict[str, Any]] = []
    for image in images:
        raw = store.read(image.manifest_digest)
        manifest = oci.parse_manifest(raw)
        paths: list[str] = []
        for desc in [manifest.config, *manifest.layers]:
            if desc.media_type in oci.FOREIGN_LAYER_TYPES and not store.exists(desc.digest):
                continue
            blobs[desc.digest] = store.info(desc.digest).size
            paths.append(_blob_path(desc.digest))
        blobs[image.manifest_digest] = len(raw)
        target = Descriptor(manifest.media_type or oci.MEDIA_TYPE_OCI_MANIFEST,
                            image.manifest_digest, len(raw))
        refs = [normalize(t) for t in image.repo_tags]
        for ref in refs:
            annotations = {oci.ANNOTATION_IMAGE_NAME: str(ref)}
            if ref.tag:
                annotations[oci.ANNOTATION_REF_NAME] = ref.tag
            index.manifests.append(Descriptor(target.media_type, target.digest, target.size,
                                              annotations=annotations))
        if not refs:
            index.manifests.append(target)
        docker_manifest.append({"Config": paths[0],
                                "RepoTags": [r.familiar() for r in refs] or None,
                                "Layers": paths[1:]})
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for digest, size in blobs.items():
            info = tarfile.TarInfo(_blob_path(digest))
            info.size, info.mode = size, 0o444
            with store.open(digest) as f:
                tar.addfile(info, f)
        documents = {
            "oci-layout": json.dumps({"imageLayoutVersion": _OCI_LAYOUT_VERSION}).encode(),
            "index.json": oci.encode(index),
            "manifest.json": json.dumps(docker_manifest).encode(),
        }
        for name, data in documents.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o444
            tar.addfile(info, io.BytesIO(data))


# --- helpers ---------------------------------------------------------------------

def _clean(name: str) -> str:
    """An archive path as a lookup key: no ``./``, no leading ``/``, no ``..`` escape."""
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def _blob_digest(name: str) -> str | None:
    m = _BLOB_NAME.fullmatch(name)
    if m is None:
        return None
    digest = f"{m.group(1)}:{m.group(2)}"
    try:
        algorithm, _ = parse_digest(digest)
    except InvalidArgument as exc:
        raise _bad(f"{name}: {exc}") from None
    if algorithm != "sha256":
        raise _bad(f"{name}: only sha256 blobs are supported")
    return digest


def _blob_path(digest: str) -> str:
    algorithm, hexpart = parse_digest(digest)
    return f"blobs/{algorithm}/{hexpart}"


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"{what} is not valid JSON: {exc}") from None


def _parse(fn: Any, data: bytes, what: str) -> Any:
    try:
        return fn(data)
    except InvalidArgument as exc:
        raise _bad(f"{what}: {exc}") from None


def _familiar(name: str, where: str) -> str:
    try:
        return normalize(name).familiar()
    except InvalidArgument as exc:
        raise _bad(f"{where}: {name!r}: {exc}") from None


def _oci_tags(annotations: dict[str, str]) -> list[str]:
    """The image name an index.json entry carries, if any.

    ``io.containerd.image.name`` is a full reference. ``ref.name`` may be a
    full reference or just a tag ("latest", as ``skopeo copy oci:dir:latest``
    writes); a bare tag names no repository, so it tags nothing, as in
    ``docker load``.
    """
    name = annotations.get(oci.ANNOTATION_IMAGE_NAME)
    if name:
        return [_familiar(name, oci.ANNOTATION_IMAGE_NAME)]
    ref = annotations.get(oci.ANNOTATION_REF_NAME, "")
    if ":" in ref or "/" in ref:
        try:
            parse(ref)
        except InvalidArgument:
            return []
        return [_familiar(ref, oci.ANNOTATION_REF_NAME)]
    return []
