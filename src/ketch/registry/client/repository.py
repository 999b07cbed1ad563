"""One repository on one registry: manifests, blobs, tags (distribution spec v1.1).

    repo = registries.repository(normalize("127.0.0.1:5000/app:1"), creds)
    image = repo.manifest_for("1", None)                # index -> this host's manifest
    for layer in image.parsed.layers:
        with store.writer(f"pull-{layer.digest}", layer.digest, layer.size) as w:
            repo.fetch_blob(layer, w, progress)         # resumes, verifies
            w.commit()

Pulls go to the first endpoint that answers (mirrors, then the registry;
https, then http for an insecure one) and stay there for the rest of the
repository's operations; pushes never go to mirrors. Every operation is safe
to call from several threads at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from ketch.errors import InvalidArgument, KetchError, NotSupported, System, Unavailable
from ketch.image.content import Descriptor, Platform
from ketch.image.oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Manifest,
    parse_index,
    parse_manifest,
    select_platform,
)
from ketch.image.reference import Reference, parse_digest
from ketch.registry.client.challenge import parse_challenges, parse_link_next
from ketch.registry.client.errors import RegistryError, error_from_response
from ketch.registry.client.options import Credentials
from ketch.registry.client.registries import registry_host
from ketch.registry.client.session import Endpoint, Session
from ketch.registry.client.transport import Body, NetworkError, Response

if TYPE_CHECKING:
    from ketch.registry.client.registries import Registries

# containerd's and distribution's limit: a manifest is metadata, never this big.
MAX_MANIFEST_SIZE = 4 << 20
MAX_CONFIG_SIZE = 16 << 20
READ_CHUNK = 1 << 20
# Manifests kept per Repository object, by digest (a pull of all tags sees a few dozen).
MANIFEST_CACHE = 64
# Attempts of a blob transfer that make no progress before giving up.
MAX_RETRIES = 4
RETRY_DELAY = 0.2

# Docker sends these in this order: the index types first, so that a
# multi-platform image is never flattened by the registry into one manifest.
ACCEPT_MANIFESTS = ", ".join([MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
                              MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_MANIFEST])
SCHEMA1_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
})
OCTET_STREAM = "application/octet-stream"

T = TypeVar("T")


class BlobSink(Protocol):
    """Where a blob download goes: ketch.image.content.Writer fits.

    A sink that also has ``digest() -> str`` (the digest of everything
    written) is trusted to hash, so a resumed ingest keeps its bytes and the
    download continues at ``offset``; without it, the client hashes and
    restarts partial sinks from zero.
    """

    @property
    def offset(self) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def truncate(self, size: int = 0) -> None: ...


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index exactly as the registry sent it, with its type and digest."""

    data: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.data))


@dataclass(frozen=True)
class PulledImage:
    """What a pull needs before the layers: the documents, as bytes, and the parsed manifest.

    ``digest`` is what ``RepoDigests`` records: the index's when the tag
    named an index, else the manifest's.
    """

    index: FetchedManifest | None
    manifest: FetchedManifest
    parsed: Manifest
    config: bytes

    @property
    def digest(self) -> str:
        return (self.index or self.manifest).digest

    @property
    def config_digest(self) -> str:
        return self.parsed.config.digest


def _is_digest(tag_or_digest: str) -> bool:
    return ":" in tag_or_digest


def _digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def manifest_media_type(content_type: str, data: bytes) -> str:
    """The document's type: the Content-Type if it is a known one, else what the JSON says.

    Some registries answer ``application/json`` (or nothing useful); OCI
    allows a manifest without ``mediaType``, so the shape decides then.
    Schema 1 is refused: Docker removed it, and its signed form cannot be
    verified by digest the same way.
    """
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct in SCHEMA1_TYPES:
        raise NotSupported(_schema1_message())
    if ct in MANIFEST_TYPES or ct in INDEX_TYPES:
        return ct
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(f"unsupported manifest media type: {ct or 'none'}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid manifest: expected a JSON object")
    if doc.get("schemaVersion") == 1:
        raise NotSupported(_schema1_message())
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and (media_type in MANIFEST_TYPES or media_type in INDEX_TYPES):
        return media_type
    if media_type:
        raise InvalidArgument(f"unsupported manifest media type: {media_type}")
    if "manifests" in doc:
        return MEDIA_TYPE_OCI_INDEX
    if "config" in doc:
        return MEDIA_TYPE_OCI_MANIFEST
    raise InvalidArgument(f"unsupported manifest media type: {ct or 'none'}")


def _schema1_message() -> str:
    return ("Docker Image manifest version 2, schema 1 is not supported: its support has been "
            "removed. Suggest the author of the image to upgrade it to the OCI Format or "
            "Docker Image manifest v2, schema 2")


class Repository:
    """Manifests, blobs and tags of one repository (``ref.path``) on ``ref.domain``'s registry."""

    def __init__(self, registries: Registries, ref: Reference, creds: Credentials) -> None:
        self.registries = registries
        self.ref = ref
        self.creds = creds
        self.host = registry_host(ref.domain)
        self.name = ref.path
        self._lock = threading.Lock()
        self._sessions: dict[Endpoint, Session] = {}
        self._pinned: dict[bool, Endpoint] = {}
        self._manifests: dict[str, FetchedManifest] = {}

    # --- plumbing ---------------------------------------------------------------

    def _scope(self, actions: str = "pull") -> list[str]:
        return [f"repository:{self.name}:{actions}"]

    def _session(self, endpoint: Endpoint) -> Session:
        with self._lock:
            session = self._sessions.get(endpoint)
        if session is None:
            session = self.registries.session(endpoint, self.creds)
            with self._lock:
                session = self._sessions.setdefault(endpoint, session)
        return session

    def _run(self, op: Callable[[Session], T], push: bool = False) -> T:
        """Run ``op`` on this repository's endpoint, finding it (and pinning it) on first use."""
        with self._lock:
            pinned = self._pinned.get(push)
        if pinned is not None:
            return op(self._session(pinned))
        endpoints = self.registries.endpoints(self.host, include_mirrors=not push)

        def attempt(endpoint: Endpoint) -> T:
            result = op(self._session(endpoint))
            with self._lock:
                self._pinned.setdefault(push, endpoint)
            return result

        return self.registries.each_endpoint(endpoints, attempt)

    def _path(self, kind: str, ref: str) -> str:
        return f"/v2/{self.name}/{kind}/{ref}"

    def _uploads_path(self) -> str:
        # The trailing slash is the spec's; docker-registry redirects without it.
        return f"/v2/{self.name}/blobs/uploads/"

    def _familiar(self, tag_or_digest: str) -> str:
        ref = self.ref.without_tag_or_digest()
        if _is_digest(tag_or_digest):
            return Reference(ref.domain, ref.path, None, tag_or_digest).familiar()
        return Reference(ref.domain, ref.path, tag_or_digest).familiar()

    def _pull_error(self, resp: Response, body: bytes, tag_or_digest: str) -> KetchError:
        """dockerd's translatePullError wording for a failed manifest fetch."""
        exc = error_from_response(resp.status, body,
                                  parse_challenges(resp.header_all("WWW-Authenticate")))
        first = exc.errors[0] if exc.errors else None
        code = first.code if first else ""
        if code == "DENIED":
            return _rewrap(exc, f"pull access denied for {self.ref.familiar_name}, repository does "
                                f"not exist or may require 'docker login': {first}")
        if code == "NAME_UNKNOWN":
            return _rewrap(exc, f"repository {self.ref.familiar_name} not found: {first}")
        if code == "MANIFEST_UNKNOWN" or resp.status == 404:
            return _rewrap(exc, f"manifest for {self._familiar(tag_or_digest)} not found: {exc}")
        return exc

    # --- manifests ----------------------------------------------------------------

    def resolve(self, tag_or_digest: str) -> FetchedManifest:
        """The manifest or index a tag or digest names, as bytes, checked against a digest."""
        return self._run(lambda s: self._resolve(s, tag_or_digest))

    def _resolve(self, session: Session, tag_or_digest: str) -> FetchedManifest:
        """By tag as dockerd: HEAD for the digest, then GET by that digest (verified).

        A registry whose HEAD gives no digest, or answers HEAD with an error,
        is asked with GET by tag, whose answer then decides (and words the
        error), as dockerd falls back.
        """
        if not _is_digest(tag_or_digest):
            with session.request("HEAD", self._path("manifests", tag_or_digest), self._scope(),
                                 {"Accept": ACCEPT_MANIFESTS}, follow=True) as resp:
                resp.discard()
                digest = resp.header("Docker-Content-Digest") if resp.status == 200 else ""
            if digest:
                try:
                    parse_digest(digest)
                except InvalidArgument:
                    digest = ""
            if digest:
                return self._get_manifest(session, digest, tag_or_digest)
        return self._get_manifest(session, tag_or_digest, tag_or_digest)

    def _get_manifest(self, session: Session, tag_or_digest: str, asked: str) -> FetchedManifest:
        expected = tag_or_digest if _is_digest(tag_or_digest) else None
        if expected is not None:
            parse_digest(expected)
            # Content named by its digest never changes: a pull that resolves
            # and then asks for the image by that digest needs one GET, not two.
            with self._lock:
                cached = self._manifests.get(expected)
            if cached is not None:
                return cached
        with session.request("GET", self._path("manifests", tag_or_digest), self._scope(),
                             {"Accept": ACCEPT_MANIFESTS}, follow=True) as resp:
            if resp.status != 200:
                body = resp.read(1 << 16)
                raise self._pull_error(resp, body, asked)
            if resp.length is not None and resp.length > MAX_MANIFEST_SIZE:
                raise InvalidArgument(f"manifest for {self._familiar(tag_or_digest)} is too big: "
                                      f"{resp.length} bytes, at most {MAX_MANIFEST_SIZE}")
            data = resp.read(MAX_MANIFEST_SIZE)
            if len(data) > MAX_MANIFEST_SIZE:
                raise InvalidArgument(f"manifest for {self._familiar(tag_or_digest)} is too big")
            content_type = resp.header("Content-Type")
        media_type = manifest_media_type(content_type, data)
        if expected is not None:
            algorithm = parse_digest(expected)[0]
            actual = _digest(data, algorithm)
            if actual != expected:
                raise InvalidArgument(f"manifest verification failed for digest {expected}")
            digest = expected
        else:
            digest = _digest(data)
        fetched = FetchedManifest(data, media_type, digest)
        with self._lock:
            if len(self._manifests) >= MANIFEST_CACHE:
                self._manifests.pop(next(iter(self._manifests)))
            self._manifests[digest] = fetched
        return fetched

    def manifest_for(self, tag_or_digest: str, platform: Platform | None = None) -> PulledImage:
        """The image for ``platform`` (default: this host): index, manifest, config bytes.

        An index is followed to the best manifest by containerd's platform
        rules; a plain manifest is taken as it is (checking its config's
        platform is the caller's: dockerd warns or refuses by its own rules).
        """
        return self._run(lambda s: self._manifest_for(s, tag_or_digest, platform))

    def _manifest_for(self, session: Session, tag_or_digest: str,
                      platform: Platform | None) -> PulledImage:
        top = self._resolve(session, tag_or_digest)
        index: FetchedManifest | None = None
        manifest = top
        if top.is_index:
            index = top
            parsed_index = parse_index(top.data)
            want = platform or Platform()
            chosen = select_platform(parsed_index, want.os or "linux", want.architecture or None,
                                     want.variant)
            manifest = self._resolve(session, chosen.digest)
            if manifest.is_index:
                raise InvalidArgument(f"manifest {chosen.digest} in the index of "
                                      f"{self._familiar(tag_or_digest)} is an index itself")
        parsed = parse_manifest(manifest.data)
        config = self._fetch_small(session, parsed.config, MAX_CONFIG_SIZE)
        return PulledImage(index, manifest, parsed, config)

    def _fetch_small(self, session: Session, desc: Descriptor, limit: int) -> bytes:
        """A small blob (a config) into memory, verified."""
        if desc.size > limit:
            raise InvalidArgument(f"blob {desc.digest} is too big: {desc.size} bytes, at most {limit}")
        with session.request("GET", self._path("blobs", desc.digest), self._scope(),
                             follow=True) as resp:
            if resp.status != 200:
                raise self._blob_error(resp, desc.digest)
            data = resp.read(limit)
        algorithm = parse_digest(desc.digest)[0]
        if len(data) != desc.size or _digest(data, algorithm) != desc.digest:
            raise InvalidArgument(f"blob verification failed for digest {desc.digest}")
        return data

    def push_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest or index under a tag or its digest; returns its digest."""
        digest = _digest(data)
        if _is_digest(reference) and reference != digest:
            raise InvalidArgument(f"manifest digest {digest} does not match {reference}")

        def put(session: Session) -> str:
            with session.request("PUT", self._path("manifests", reference), self._scope("pull,push"),
                                 {"Content-Type": media_type}, Body.of(data)) as resp:
                body = resp.read(1 << 16)
                if resp.status not in (200, 201, 202):
                    raise error_from_response(resp.status, body, parse_challenges(
                        resp.header_all("WWW-Authenticate")))
                returned = resp.header("Docker-Content-Digest")
            if returned and returned != digest and returned.startswith("sha256:"):
                raise InvalidArgument(f"registry stored the manifest as {returned}, "
                                      f"expected {digest}")
            return digest

        return self._run(put, push=True)

    def delete_manifest(self, digest: str) -> None:
        """Delete a manifest by digest (registries refuse tags; 405 if deletes are disabled)."""
        parse_digest(digest)
        with self._lock:
            self._manifests.pop(digest, None)

        def delete(session: Session) -> None:
            with session.request("DELETE", self._path("manifests", digest),
                                 self._scope("delete")) as resp:
                body = resp.read(1 << 16)
                if resp.status not in (200, 202, 204):
                    raise error_from_response(resp.status, body, parse_challenges(
                        resp.header_all("WWW-Authenticate")))

        self._run(delete, push=True)

    def tags(self, n: int | None = None) -> list[str]:
        """Every tag, following ``Link: <...>; rel="next"`` pages (``n`` is the page size asked)."""

        def list_tags(session: Session) -> list[str]:
            path = self._path("tags", "list")
            if n is not None:
                path += f"?n={n}"
            out: list[str] = []
            seen: set[str] = set()
            next_path: str | None = path
            while next_path and next_path not in seen:
                path = next_path
                seen.add(path)  # a server looping its Link must not loop us
                with session.request("GET", path, self._scope(), follow=True) as resp:
                    body = resp.read(MAX_MANIFEST_SIZE)
                    if resp.status != 200:
                        exc = error_from_response(resp.status, body, parse_challenges(
                            resp.header_all("WWW-Authenticate")))
                        if exc.codes[:1] == ("NAME_UNKNOWN",):
                            raise _rewrap(exc, f"repository {self.ref.familiar_name} not found: "
                                               f"{exc.errors[0]}")
                        raise exc
                    link = resp.header("Link")
                try:
                    doc = json.loads(body)
                except (UnicodeDecodeError, ValueError):
                    raise InvalidArgument(f"invalid tags list from registry: {body[:200]!r}") from None
                tags = doc.get("tags") if isinstance(doc, dict) else None
                out.extend(t for t in tags or [] if isinstance(t, str))
                next_path = parse_link_next(link) if link else None
            return out

        return self._run(list_tags)

    # --- blobs --------------------------------------------------------------------

    def _blob_error(self, resp: Response, digest: str) -> RegistryError:
        body = resp.read(1 << 16)
        return error_from_response(resp.status, body,
                                   parse_challenges(resp.header_all("WWW-Authenticate")))

    def blob_exists(self, digest: str) -> int | None:
        """The blob's size if the repository has it, else None."""
        parse_digest(digest)
        return self._run(lambda s: self._blob_exists(s, digest))

    def _blob_exists(self, session: Session, digest: str, actions: str = "pull") -> int | None:
        with session.request("HEAD", self._path("blobs", digest), self._scope(actions),
                             follow=True) as resp:
            resp.discard()
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise error_from_response(resp.status, b"", parse_challenges(
                    resp.header_all("WWW-Authenticate")))
            length = resp.header("Content-Length")
            return int(length) if length.isdigit() else 0

    def fetch_blob(self, desc: Descriptor, sink: BlobSink,
                   progress: Callable[[int, int], None] | None = None,
                   on_retry: Callable[[int, KetchError], None] | None = None) -> None:
        """Stream a blob into ``sink`` and verify it; resumes a cut transfer with Range.

        The sink ends holding exactly the blob, or an error is raised; a
        digest mismatch truncates it to zero, so nothing half-right is left
        for a commit to accept. ``progress(done, total)`` is called as bytes
        arrive. ``on_retry(attempt, error)`` is called before each retry after
        a network failure (where dockerd shows "Retrying in N seconds"; the
        callback may wait as long as it likes before returning).
        """
        algorithm, _ = parse_digest(desc.digest)
        self._run(lambda s: self._fetch_blob(s, desc, algorithm, sink, progress, on_retry))

    def _fetch_blob(self, session: Session, desc: Descriptor, algorithm: str, sink: BlobSink,
                    progress: Callable[[int, int], None] | None,
                    on_retry: Callable[[int, KetchError], None] | None) -> None:
        sink_digest: Callable[[], str] | None = getattr(sink, "digest", None)
        own = None if callable(sink_digest) else hashlib.new(algorithm)
        if sink.offset and (own is not None or sink.offset > desc.size):
            sink.truncate(0)
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        failures = attempts = 0
        last: KetchError | None = None
        while True:
            before = sink.offset
            if before < desc.size or (before == 0 and desc.size == 0):
                try:
                    own = self._download(session, desc, sink, own, algorithm, view, progress)
                except NetworkError as exc:
                    last = exc
                    attempts += 1
                    failures = 0 if sink.offset > before else failures + 1
                    if failures >= MAX_RETRIES or attempts >= MAX_RETRIES * 4:
                        raise last from None
                    if on_retry is not None:
                        on_retry(attempts, exc)
                    time.sleep(RETRY_DELAY * failures)
                    continue
            if sink.offset != desc.size:
                digest = ""  # a registry that ends the body early (truncated storage)
            elif own is not None:
                digest = f"{algorithm}:{own.hexdigest()}"
            else:
                digest = sink_digest() if sink_digest is not None else ""
            if digest != desc.digest:
                sink.truncate(0)
                # dockerd's words for a layer whose bytes do not match its digest.
                raise InvalidArgument(f"filesystem layer verification failed for digest {desc.digest}")
            return

    def _download(self, session: Session, desc: Descriptor, sink: BlobSink, own: Any,
                  algorithm: str, view: memoryview,
                  progress: Callable[[int, int], None] | None) -> Any:
        """One GET of the rest of the blob into the sink; returns the (maybe restarted) hash."""
        offset = sink.offset
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with session.request("GET", self._path("blobs", desc.digest), self._scope(), headers,
                             follow=True) as resp:
            if resp.status == 206:
                start = _content_range_start(resp.header("Content-Range"))
                if start != offset:
                    raise NetworkError(f"Get \"{resp.url}\": range answer starts at {start}, "
                                       f"asked {offset}")
            elif resp.status == 200:
                if offset:
                    # The server ignored Range: the body is the whole blob again.
                    sink.truncate(0)
                    if own is not None:
                        own = hashlib.new(algorithm)
                    offset = 0
            else:
                raise self._blob_error(resp, desc.digest)
            update = own.update if own is not None else None
            write = sink.write
            size = desc.size
            while True:
                n = resp.readinto(view)
                if not n:
                    break
                chunk = view[:n]
                if update is not None:
                    update(chunk)
                try:
                    write(chunk)
                except OSError as exc:  # the sink's disk, not the network: no retry
                    raise System(f"cannot store blob {desc.digest}: "
                                 f"{exc.strerror or exc}") from exc
                offset += n
                if offset > size:
                    sink.truncate(0)
                    raise InvalidArgument(
                        f"filesystem layer verification failed for digest {desc.digest}")
                if progress is not None:
                    progress(offset, size)
        return own

    def push_blob(self, desc: Descriptor, open_blob: Callable[[], BinaryIO],
                  progress: Callable[[int, int], None] | None = None,
                  mount_from: Sequence[str] = (), chunk_size: int | None = None) -> str:
        """Make the repository have the blob: "exists", "mounted:<source>" or "pushed".

        Order as Docker: a HEAD (already there), a cross-repository mount from
        each of ``mount_from`` (same registry; no bytes move), then an upload:
        POST for a session, then one PUT with the body (monolithic), or
        PATCHes of ``chunk_size`` bytes and a closing PUT. A network failure
        restarts the upload from a new session a few times; ``open_blob`` is
        called again for each attempt.
        """
        parse_digest(desc.digest)
        if chunk_size is not None and chunk_size <= 0:
            raise InvalidArgument(f"invalid chunk size {chunk_size}")
        return self._run(lambda s: self._push_blob(s, desc, open_blob, progress, mount_from,
                                                   chunk_size), push=True)

    def _push_blob(self, session: Session, desc: Descriptor, open_blob: Callable[[], BinaryIO],
                   progress: Callable[[int, int], None] | None, mount_from: Sequence[str],
                   chunk_size: int | None) -> str:
        if self._blob_exists(session, desc.digest, "pull,push") is not None:
            if progress is not None:
                progress(desc.size, desc.size)
            return "exists"
        location: str | None = None
        for source in mount_from:
            if source == self.name:
                continue
            query = urllib.parse.urlencode({"mount": desc.digest, "from": source})
            scopes = [*self._scope("pull,push"), f"repository:{source}:pull"]
            with session.request("POST", self._uploads_path() + "?" + query, scopes,
                                 body=Body.of(b"")) as resp:
                body = resp.read(1 << 16)
                if resp.status == 201:
                    if progress is not None:
                        progress(desc.size, desc.size)
                    return f"mounted:{source}"
                if resp.status == 202:
                    # Mount refused (source lacks the blob, or no access):
                    # the registry opened an upload session instead; use it.
                    location = resp.header("Location") or None
                    break
                if resp.status in (401, 403, 404):
                    continue  # no access to the source: try the next, then upload
                raise error_from_response(resp.status, body, parse_challenges(
                    resp.header_all("WWW-Authenticate")))
        failures = 0
        while True:
            try:
                self._upload(session, desc, open_blob, progress, chunk_size, location)
                return "pushed"
            except NetworkError:
                failures += 1
                location = None
                if failures >= MAX_RETRIES:
                    raise
                time.sleep(RETRY_DELAY * failures)

    def _start_upload(self, session: Session) -> str:
        with session.request("POST", self._uploads_path(), self._scope("pull,push"),
                             body=Body.of(b"")) as resp:
            body = resp.read(1 << 16)
            if resp.status != 202:
                raise error_from_response(resp.status, body, parse_challenges(
                    resp.header_all("WWW-Authenticate")))
            location = resp.header("Location")
        if not location:
            raise Unavailable(f"registry {self.host} started an upload without a Location")
        return location

    def _upload(self, session: Session, desc: Descriptor, open_blob: Callable[[], BinaryIO],
                progress: Callable[[int, int], None] | None, chunk_size: int | None,
                location: str | None) -> None:
        location = session.url(location or self._start_upload(session))
        total = desc.size

        def report(base: int) -> Callable[[int], None] | None:
            if progress is None:
                return None
            return lambda sent: progress(base + sent, total)

        if chunk_size is not None and total > 0:
            start = 0
            while start < total:
                length = min(chunk_size, total - start)
                body = Body(reopen=_opener(open_blob, start), length=length, progress=report(start))
                headers = {"Content-Type": OCTET_STREAM,
                           "Content-Range": f"{start}-{start + length - 1}"}
                with session.request("PATCH", location, self._scope("pull,push"), headers,
                                     body) as resp:
                    err = resp.read(1 << 16)
                    if resp.status != 202:
                        raise error_from_response(resp.status, err, parse_challenges(
                            resp.header_all("WWW-Authenticate")))
                    location = session.url(resp.header("Location") or location)
                start += length
            final: Body = Body.of(b"")
        else:
            final = Body(reopen=_opener(open_blob, 0), length=total, progress=report(0))
        sep = "&" if urllib.parse.urlsplit(location).query else "?"
        url = location + sep + urllib.parse.urlencode({"digest": desc.digest})
        with session.request("PUT", url, self._scope("pull,push"),
                             {"Content-Type": OCTET_STREAM}, final) as resp:
            err = resp.read(1 << 16)
            if resp.status not in (201, 204):
                raise error_from_response(resp.status, err, parse_challenges(
                    resp.header_all("WWW-Authenticate")))
            returned = resp.header("Docker-Content-Digest")
        if returned and returned != desc.digest:
            raise InvalidArgument(f"registry stored blob {desc.digest} as {returned}")


def _opener(open_blob: Callable[[], BinaryIO], start: int) -> Callable[[], BinaryIO]:
    def reopen() -> BinaryIO:
        f = open_blob()
        if start:
            f.seek(start)
        return f
    return reopen


def _content_range_start(value: str) -> int:
    """``bytes 100-199/200`` -> 100 (-1 if unparsable)."""
    unit, _, rest = value.strip().partition(" ")
    start = rest.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else -1


def _rewrap(exc: RegistryError, message: str) -> RegistryError:
    """The same kind of error, with the registry's details kept, in other words."""
    new = type(exc)(message)
    new.status = exc.status
    new.errors = exc.errors
    return new


__all__ = ["BlobSink", "FetchedManifest", "PulledImage", "Repository"]
