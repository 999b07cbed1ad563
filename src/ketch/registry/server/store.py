"""The registry's logic over a storage driver: repositories, blobs, uploads, manifests, tags.

Layout (driver paths; every name a driver component, so nothing escapes)::

    /blobs/<alg>/<hex[:2]>/<hex>/data                         content, shared by repositories
    /repositories/<name>/_layers/<alg>/<hex>/link             blob <digest> is in <name>
    /repositories/<name>/_manifests/revisions/<alg>/<hex>/link   manifest <digest> is in <name>
    /repositories/<name>/_manifests/tags/<tag>/link           <tag> -> manifest digest
    /repositories/<name>/_referrers/<alg>/<subject-hex>/<alg>/<hex>/link
                                                              manifest <digest> has that subject
    /repositories/<name>/_uploads/<uuid>/startedat            an upload session (epoch seconds)
    /repositories/<name>/_uploads/<uuid>/data                 its bytes (a driver writer)

A link holds the digest it stands for. Content reaches ``/blobs`` only
verified: an upload is hashed while it streams in and moved into place only
when its digest is the one the client named, so a wrong or truncated upload
never becomes a blob. Repository names follow the reference grammar, whose
components start with ``[a-z0-9]``: they can never be ``..`` nor collide with
the ``_``-prefixed directories above.

Every method may block on the driver; the app calls them in a thread.
Garbage (blobs no manifest uses) is removed by ``gc``, never here: a blob
is shared, and a delete only unlinks it from one repository.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ketch.errors import InvalidArgument
from ketch.image import oci
from ketch.image.reference import _PATH, _TAG, NAME_MAX, parse_digest
from ketch.registry.server import errors as E
from ketch.registry.server.driver import FileWriter, PathNotFound, StorageDriver
from ketch.registry.server.errors import RegistryError

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
_NAME_RE = re.compile(_PATH)
_TAG_RE = re.compile(_TAG)
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Schema 1 is signed JSON that no current client pushes; refused, as Docker's registry does.
_SCHEMA1_TYPES = frozenset({"application/vnd.docker.distribution.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v1+prettyjws"})
ALL_MANIFEST_TYPES = oci.MANIFEST_TYPES | oci.INDEX_TYPES


# --- validation ------------------------------------------------------------------------------

def check_name(name: str) -> str:
    """``name`` if it is a repository name of the grammar; NAME_INVALID otherwise."""
    if len(name) > NAME_MAX or not _NAME_RE.fullmatch(name):
        raise RegistryError(E.NAME_INVALID, detail={"name": name})
    return name


def check_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise RegistryError(E.TAG_INVALID, detail={"Tag": tag})
    return tag


def check_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest ketch can verify; DIGEST_INVALID otherwise."""
    try:
        return parse_digest(digest)
    except InvalidArgument as exc:
        raise RegistryError(E.DIGEST_INVALID, detail=f"digest parsing failed: {exc}") from None


def is_digest(reference: str) -> bool:
    return ":" in reference


def check_upload_id(upload_id: str) -> str:
    if not _UUID_RE.fullmatch(upload_id):
        raise RegistryError(E.BLOB_UPLOAD_UNKNOWN, detail={"UUID": upload_id})
    return upload_id


# --- paths -----------------------------------------------------------------------------------

def blob_path(digest: str) -> str:
    alg, hexpart = parse_digest(digest)
    return f"/blobs/{alg}/{hexpart[:2]}/{hexpart}/data"


def repo_path(name: str) -> str:
    return f"/repositories/{name}"


def layer_link(name: str, digest: str) -> str:
    alg, hexpart = parse_digest(digest)
    return f"/repositories/{name}/_layers/{alg}/{hexpart}/link"


def revision_dir(name: str, digest: str) -> str:
    alg, hexpart = parse_digest(digest)
    return f"/repositories/{name}/_manifests/revisions/{alg}/{hexpart}"


def tags_dir(name: str) -> str:
    return f"/repositories/{name}/_manifests/tags"


def tag_link(name: str, tag: str) -> str:
    return f"{tags_dir(name)}/{tag}/link"


def referrers_dir(name: str, subject: str) -> str:
    alg, hexpart = parse_digest(subject)
    return f"/repositories/{name}/_referrers/{alg}/{hexpart}"


def referrer_link(name: str, subject: str, digest: str) -> str:
    alg, hexpart = parse_digest(digest)
    return f"{referrers_dir(name, subject)}/{alg}/{hexpart}/link"


def upload_dir(name: str, upload_id: str) -> str:
    return f"/repositories/{name}/_uploads/{upload_id}"


def digest_of_blob_path(path: str) -> str:
    """``/blobs/<alg>/<hh>/<hex>/data`` -> ``<alg>:<hex>``."""
    parts = path.split("/")
    return f"{parts[2]}:{parts[4]}"


def digest_from_dir(path: str) -> str:
    """``.../<alg>/<hex>`` -> ``<alg>:<hex>`` (the layout's link directories)."""
    parts = path.rsplit("/", 2)
    return f"{parts[-2]}:{parts[-1]}"


def digest_dirs(driver: StorageDriver, base: str) -> list[tuple[str, str]]:
    """(digest, directory) of the ``<base>/<alg>/<hex>`` link directories; none if ``base``
    does not exist. The digests are as the names say, unchecked."""
    try:
        algs = driver.list(base)
    except PathNotFound:
        return []
    return [(digest_from_dir(d), d) for alg_dir in algs for d in driver.list(alg_dir)]


# --- records ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """A stored manifest: its exact bytes, their digest, and what they are."""

    digest: str
    media_type: str
    data: bytes
    subject: str | None = None
    references: tuple[str, ...] = ()       # blobs and child manifests it names

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class UploadStatus:
    name: str
    upload_id: str
    size: int


@dataclass(slots=True)
class ParsedManifest:
    """What the registry needs of a manifest: its type, blobs, child manifests, subject."""

    media_type: str
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    blobs: list[oci.Descriptor] = field(default_factory=list)      # config and layers
    manifests: list[oci.Descriptor] = field(default_factory=list)  # an index's children
    subject: oci.Descriptor | None = None

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(d.digest for d in (*self.blobs, *self.manifests))


def parse_manifest(data: bytes, content_type: str | None = None) -> ParsedManifest:
    """Validate a manifest's bytes; MANIFEST_INVALID with the reason otherwise.

    The type is the document's ``mediaType``, else the request's
    ``Content-Type``, else (OCI makes the field optional) its shape. A
    ``Content-Type`` naming another manifest type than the document is refused,
    so a client never reads back a type it did not push.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(E.MANIFEST_INVALID, detail=f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError(E.MANIFEST_INVALID, detail="not a JSON object")
    declared = doc.get("mediaType")
    ctype = (content_type or "").split(";", 1)[0].strip()
    if declared in _SCHEMA1_TYPES or ctype in _SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
        raise RegistryError(E.MANIFEST_INVALID, detail="schema 1 manifests are not supported")
    if declared is not None and not isinstance(declared, str):
        raise RegistryError(E.MANIFEST_INVALID, detail="mediaType is not a string")
    if declared and ctype in ALL_MANIFEST_TYPES and ctype != declared:
        raise RegistryError(E.MANIFEST_INVALID,
                            detail=f"mediaType {declared} does not match Content-Type {ctype}")
    media_type = declared or (ctype if ctype in ALL_MANIFEST_TYPES else "")
    if not media_type:
        media_type = oci.MEDIA_TYPE_OCI_INDEX if "manifests" in doc else oci.MEDIA_TYPE_OCI_MANIFEST
    try:
        if media_type in oci.MANIFEST_TYPES:
            m = oci.parse_manifest(data)
            return ParsedManifest(media_type, m.artifact_type or m.config.media_type,
                                  dict(m.annotations), [m.config, *m.layers], [], m.subject)
        if media_type in oci.INDEX_TYPES:
            ix = oci.parse_index(data)
            return ParsedManifest(media_type, ix.artifact_type, dict(ix.annotations), [],
                                  list(ix.manifests), ix.subject)
    except InvalidArgument as exc:
        raise RegistryError(E.MANIFEST_INVALID, detail=str(exc)) from None
    raise RegistryError(E.MANIFEST_INVALID, detail=f"unsupported manifest media type {media_type}")


# --- uploads ---------------------------------------------------------------------------------

class UploadSession:
    """One request's turn at an upload: bytes appended and hashed together.

    The sha256 state outlives the request in the store (``_hashers``), so a
    chunked upload is hashed once as it streams in; after a restart, or for
    another algorithm, ``finish`` reads the data back instead.
    """

    def __init__(self, store: Store, name: str, upload_id: str, writer: FileWriter,
                 hasher: Any) -> None:
        self.store = store
        self.name = name
        self.upload_id = upload_id
        self._writer = writer
        self._hasher = hasher
        self._open = True

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._writer.write(data)
        except BaseException:
            self._hasher = None       # it may now disagree with what was written
            raise
        if self._hasher is not None:
            self._hasher.update(data)

    def close(self) -> None:
        """End this request's turn, keeping the bytes for the next one."""
        if self._open:
            self._open = False
            try:
                self._writer.close()
            finally:
                self.store._release(self.upload_id, self._hasher, self._writer.size)

    def finish(self, digest: str, size: int | None = None) -> BlobInfo:
        """Commit the upload as blob ``digest`` if its bytes hash to it; the session ends either way.

        DIGEST_INVALID (and the upload is dropped) when they do not, so what a
        client sent wrong is never stored; SIZE_INVALID when ``size`` is given
        and differs.
        """
        try:
            alg, _ = check_digest(digest)
        except RegistryError:
            self.close()        # a malformed digest costs the client nothing it sent
            raise
        total = self._writer.size
        self._open = False
        try:
            self._writer.commit()
        except BaseException:
            self.store._release(self.upload_id, None, 0)
            raise
        hasher = self._hasher if alg == "sha256" else None
        self.store._release(self.upload_id, None, 0)
        return self.store._promote(self.name, self.upload_id, digest, total, hasher, size)

    def cancel(self) -> None:
        self._open = False
        try:
            self._writer.cancel()
        finally:
            self.store._release(self.upload_id, None, 0)


# --- the store -------------------------------------------------------------------------------

class Store:
    """Repositories on a driver. Methods raise RegistryError with the spec's codes."""

    def __init__(self, driver: StorageDriver, *, max_manifest_size: int = MAX_MANIFEST_SIZE
                 ) -> None:
        self.driver = driver
        self.max_manifest_size = max_manifest_size
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._hashers: dict[str, tuple[Any, int]] = {}

    # -- small helpers --

    def _exists(self, path: str) -> bool:
        try:
            self.driver.stat(path)
        except PathNotFound:
            return False
        return True

    def _read_link(self, path: str) -> str | None:
        try:
            text = self.driver.get_content(path).decode("ascii", "replace").strip()
        except PathNotFound:
            return None
        return text

    def _link(self, path: str, digest: str) -> None:
        self.driver.put_content(path, digest.encode())

    def _delete(self, path: str) -> bool:
        try:
            self.driver.delete(path)
        except PathNotFound:
            return False
        return True

    def repository_exists(self, name: str) -> bool:
        return self._exists(repo_path(check_name(name)))

    # -- blobs --

    def _blob_size(self, digest: str) -> int | None:
        try:
            return self.driver.stat(blob_path(digest)).size
        except PathNotFound:
            return None

    def is_linked(self, name: str, digest: str) -> bool:
        """Is ``digest`` a blob of repository ``name`` (a layer, a config, or a manifest)?"""
        return (self._read_link(layer_link(name, digest)) == digest
                or self._read_link(revision_dir(name, digest) + "/link") == digest)

    def stat_blob(self, name: str, digest: str) -> BlobInfo:
        check_name(name)
        check_digest(digest)
        size = self._blob_size(digest) if self.is_linked(name, digest) else None
        if size is None:
            raise RegistryError(E.BLOB_UNKNOWN, detail=digest)
        return BlobInfo(digest, size)

    def open_blob(self, name: str, digest: str, offset: int = 0) -> BinaryIO:
        self.stat_blob(name, digest)
        try:
            return self.driver.reader(blob_path(digest), offset)
        except PathNotFound:
            raise RegistryError(E.BLOB_UNKNOWN, detail=digest) from None

    def delete_blob(self, name: str, digest: str) -> None:
        """Unlink a blob from ``name``; its bytes go at the next ``gc`` if nothing else uses them."""
        check_name(name)
        check_digest(digest)
        if not self._delete(layer_link(name, digest).rsplit("/", 1)[0]):
            raise RegistryError(E.BLOB_UNKNOWN, detail=digest)

    def mount_blob(self, name: str, source: str, digest: str) -> BlobInfo | None:
        """Link ``source``'s blob ``digest`` into ``name``; None if ``source`` has no such blob."""
        check_name(name)
        check_name(source)
        check_digest(digest)
        if not self.is_linked(source, digest):
            return None
        size = self._blob_size(digest)
        if size is None:
            return None
        self._link(layer_link(name, digest), digest)
        return BlobInfo(digest, size)

    def put_blob(self, name: str, digest: str, data: bytes) -> BlobInfo:
        """A whole small blob in one call (tests, and manifests' own configs in tools)."""
        check_name(name)
        alg, hexpart = check_digest(digest)
        if hashlib.new(alg, data).hexdigest() != hexpart:
            raise RegistryError(E.DIGEST_INVALID, detail={"Digest": digest})
        if self._blob_size(digest) != len(data):
            self.driver.put_content(blob_path(digest), data)
        self._link(layer_link(name, digest), digest)
        return BlobInfo(digest, len(data))

    # -- uploads --

    def start_upload(self, name: str) -> UploadStatus:
        check_name(name)
        upload_id = str(uuidlib.uuid4())
        self.driver.put_content(upload_dir(name, upload_id) + "/startedat",
                                str(int(time.time())).encode())
        return UploadStatus(name, upload_id, 0)

    def _check_upload(self, name: str, upload_id: str) -> None:
        check_name(name)
        check_upload_id(upload_id)
        if not self._exists(upload_dir(name, upload_id) + "/startedat"):
            raise RegistryError(E.BLOB_UPLOAD_UNKNOWN, detail={"UUID": upload_id})

    def open_upload(self, name: str, upload_id: str) -> UploadSession:
        """The upload's writer, for one request at a time (BLOB_UPLOAD_INVALID if busy)."""
        self._check_upload(name, upload_id)
        with self._lock:
            if upload_id in self._busy:
                raise RegistryError(E.BLOB_UPLOAD_INVALID,
                                    detail="another request is writing to this upload")
            self._busy.add(upload_id)
            saved = self._hashers.pop(upload_id, None)
        try:
            writer = self.driver.writer(upload_dir(name, upload_id) + "/data", append=True)
        except BaseException:
            self._release(upload_id, None, 0)
            raise
        hasher = None
        if saved is not None and saved[1] == writer.size:
            hasher = saved[0]
        elif writer.size == 0:
            hasher = hashlib.sha256()
        return UploadSession(self, name, upload_id, writer, hasher)

    def _release(self, upload_id: str, hasher: Any, size: int) -> None:
        with self._lock:
            self._busy.discard(upload_id)
            if hasher is not None:
                self._hashers[upload_id] = (hasher, size)
            else:
                self._hashers.pop(upload_id, None)

    def upload_status(self, name: str, upload_id: str) -> UploadStatus:
        session = self.open_upload(name, upload_id)
        try:
            return UploadStatus(name, upload_id, session.size)
        finally:
            session.close()

    def cancel_upload(self, name: str, upload_id: str) -> None:
        session = self.open_upload(name, upload_id)
        session.cancel()
        self._delete(upload_dir(name, upload_id))

    def _promote(self, name: str, upload_id: str, digest: str, total: int, hasher: Any,
                 size: int | None) -> BlobInfo:
        """Verify a committed upload and move it to its blob path; the upload is gone after."""
        data = upload_dir(name, upload_id) + "/data"
        try:
            alg, hexpart = check_digest(digest)
            if size is not None and size != total:
                raise RegistryError(E.SIZE_INVALID, detail={"size": total, "expected": size})
            if hasher is None:
                hasher = hashlib.new(alg)
                with self.driver.reader(data) as f:
                    while chunk := f.read(1 << 20):
                        hasher.update(chunk)
            if hasher.hexdigest() != hexpart:
                raise RegistryError(E.DIGEST_INVALID, detail={"Digest": digest})
            if self._blob_size(digest) != total:
                self.driver.move(data, blob_path(digest))
            self._link(layer_link(name, digest), digest)
        finally:
            self._delete(upload_dir(name, upload_id))
        return BlobInfo(digest, total)

    def uploads(self, name: str) -> Iterator[tuple[str, float]]:
        """(upload id, start time) of the repository's unfinished uploads."""
        try:
            ids = self.driver.list(f"{repo_path(name)}/_uploads")
        except PathNotFound:
            return
        for path in ids:
            upload_id = path.rsplit("/", 1)[1]
            text = self._read_link(path + "/startedat")
            try:
                started = float(text) if text else None
            except ValueError:
                started = None
            if started is None:
                # Not written yet (a session being started right now) or lost in a
                # crash: the directory's own time says which; a backend without
                # one counts it as new rather than purge a live upload.
                try:
                    started = self.driver.stat(path).mtime or time.time()
                except PathNotFound:
                    continue
            yield upload_id, started

    def purge_uploads(self, max_age: float, *, now: float | None = None,
                      dry_run: bool = False) -> list[tuple[str, str]]:
        """Drop upload sessions started more than ``max_age`` seconds ago; (repo, id) of each.

        Safe on a live registry: a session that old is abandoned (a client
        resumes within minutes), and one being written to right now is skipped.
        """
        now = time.time() if now is None else now
        out = []
        for repo in self.repositories(with_uploads_only=True):
            for upload_id, started in self.uploads(repo):
                if now - started <= max_age:
                    continue
                with self._lock:
                    if upload_id in self._busy:
                        continue
                    self._hashers.pop(upload_id, None)
                out.append((repo, upload_id))
                if not dry_run:
                    self._delete(upload_dir(repo, upload_id))
        return out

    # -- manifests --

    def _resolve(self, name: str, reference: str) -> str:
        """The digest a tag or digest reference names in ``name``; MANIFEST_UNKNOWN if none."""
        check_name(name)
        if is_digest(reference):
            check_digest(reference)
            if self._read_link(revision_dir(name, reference) + "/link") != reference:
                raise RegistryError(E.MANIFEST_UNKNOWN, detail={"Name": name, "Revision": reference})
            return reference
        check_tag(reference)
        digest = self._read_link(tag_link(name, reference))
        if digest is None:
            raise RegistryError(E.MANIFEST_UNKNOWN, detail={"Tag": reference})
        return digest

    def get_manifest(self, name: str, reference: str) -> ManifestRecord:
        digest = self._resolve(name, reference)
        try:
            data = self.driver.get_content(blob_path(digest))
        except PathNotFound:
            raise RegistryError(E.MANIFEST_UNKNOWN, detail={"Name": name, "Revision": digest}) from None
        parsed = parse_manifest(data)
        return ManifestRecord(digest, parsed.media_type, data,
                              parsed.subject.digest if parsed.subject else None, parsed.references)

    def put_manifest(self, name: str, reference: str, data: bytes,
                     content_type: str | None = None) -> ManifestRecord:
        """Store a manifest under a tag or its digest, after checking it and what it names."""
        check_name(name)
        by_digest = is_digest(reference)
        if by_digest:
            alg, hexpart = check_digest(reference)
        else:
            check_tag(reference)
            alg = "sha256"
        if len(data) > self.max_manifest_size:
            raise RegistryError(E.SIZE_INVALID, "manifest too big", status=413,
                                detail={"size": len(data), "limit": self.max_manifest_size})
        digest = f"{alg}:{hashlib.new(alg, data).hexdigest()}"
        if by_digest and digest != reference:
            raise RegistryError(E.DIGEST_INVALID, detail={"Digest": reference, "Actual": digest})
        parsed = parse_manifest(data, content_type)
        self._check_references(name, parsed)
        path = blob_path(digest)
        if self._blob_size(digest) != len(data):
            self.driver.put_content(path, data)
        self._link(revision_dir(name, digest) + "/link", digest)
        if parsed.subject is not None:
            self._link(referrer_link(name, parsed.subject.digest, digest), digest)
        if not by_digest:
            self._link(tag_link(name, reference), digest)
        return ManifestRecord(digest, parsed.media_type, data,
                              parsed.subject.digest if parsed.subject else None, parsed.references)

    def _check_references(self, name: str, parsed: ParsedManifest) -> None:
        missing: list[str] = []
        for desc in parsed.blobs:
            if desc.media_type in oci.FOREIGN_LAYER_TYPES and desc.urls:
                continue    # shipped from its urls by design, never pushed
            size = self._blob_size(desc.digest) if self.is_linked(name, desc.digest) else None
            if size is None:
                missing.append(desc.digest)
            elif size != desc.size:
                raise RegistryError(E.MANIFEST_INVALID,
                                    detail=f"blob {desc.digest} is {size} bytes, "
                                           f"the manifest says {desc.size}")
        for desc in parsed.manifests:
            if self._read_link(revision_dir(name, desc.digest) + "/link") != desc.digest:
                missing.append(desc.digest)
        if missing:
            # one error per missing blob, each naming it, as Docker's registry answers
            raise RegistryError(E.MANIFEST_BLOB_UNKNOWN, detail=missing[0], more=[
                (E.MANIFEST_BLOB_UNKNOWN, E.MANIFEST_BLOB_UNKNOWN.message, d)
                for d in missing[1:]])

    def delete_manifest(self, name: str, reference: str) -> None:
        """Delete a tag (by tag), or a manifest with every tag on it (by digest)."""
        digest = self._resolve(name, reference)
        if not is_digest(reference):
            self._delete(tag_link(name, reference).rsplit("/", 1)[0])
            return
        try:
            parsed = parse_manifest(self.driver.get_content(blob_path(digest)))
            subject = parsed.subject.digest if parsed.subject else None
        except (PathNotFound, RegistryError):
            subject = None
        for tag in self.tags(name):
            if self._read_link(tag_link(name, tag)) == digest:
                self._delete(tag_link(name, tag).rsplit("/", 1)[0])
        if subject is not None:
            self._delete(referrer_link(name, subject, digest).rsplit("/", 1)[0])
        self._delete(revision_dir(name, digest))

    def revisions(self, name: str) -> list[str]:
        """Digests of every manifest in ``name``."""
        return [digest for digest, _ in
                digest_dirs(self.driver, f"{repo_path(name)}/_manifests/revisions")]

    def layers(self, name: str) -> list[str]:
        """Digests of every blob linked into ``name`` (not its manifests)."""
        return [digest for digest, _ in digest_dirs(self.driver, f"{repo_path(name)}/_layers")]

    # -- tags, referrers, catalog --

    def tags(self, name: str) -> list[str]:
        """The repository's tags, sorted; NAME_UNKNOWN for a repository that does not exist."""
        check_name(name)
        try:
            entries = self.driver.list(tags_dir(name))
        except PathNotFound:
            if not self._exists(repo_path(name)):
                raise RegistryError(E.NAME_UNKNOWN, detail={"name": name}) from None
            return []
        return sorted(p.rsplit("/", 1)[1] for p in entries)

    def tag_map(self, name: str) -> dict[str, str]:
        """tag -> manifest digest."""
        out = {}
        for tag in self.tags(name):
            digest = self._read_link(tag_link(name, tag))
            if digest:
                out[tag] = digest
        return out

    def referrers(self, name: str, subject: str, artifact_type: str | None = None
                  ) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose subject is ``subject``, as the referrers API lists them."""
        check_name(name)
        check_digest(subject)
        out: list[dict[str, Any]] = []
        for digest, _ in digest_dirs(self.driver, referrers_dir(name, subject)):
            try:
                data = self.driver.get_content(blob_path(digest))
                parsed = parse_manifest(data)
            except (PathNotFound, RegistryError):
                continue     # a dangling link is fsck's to report, not the client's
            if artifact_type and parsed.artifact_type != artifact_type:
                continue
            desc: dict[str, Any] = {"mediaType": parsed.media_type, "digest": digest,
                                    "size": len(data)}
            if parsed.artifact_type:
                desc["artifactType"] = parsed.artifact_type
            if parsed.annotations:
                desc["annotations"] = parsed.annotations
            out.append(desc)
        return out

    def repositories(self, *, with_uploads_only: bool = False) -> list[str]:
        """Every repository name, sorted: directories with manifests or blobs (or, for gc,
        only unfinished uploads)."""
        out: list[str] = []
        markers = ("_manifests", "_layers", "_uploads") if with_uploads_only else (
            "_manifests", "_layers")

        def visit(path: str, name: str) -> None:
            try:
                entries = self.driver.list(path)
            except PathNotFound:
                return
            leaves = [e.rsplit("/", 1)[1] for e in entries]
            if name and any(x in markers for x in leaves):
                out.append(name)
            for entry, leaf in zip(entries, leaves, strict=True):
                if not leaf.startswith("_"):
                    visit(entry, f"{name}/{leaf}" if name else leaf)

        visit("/repositories", "")
        return sorted(out)
