"""``ketch registry fsck``: is the store what the layout promises?

Checked: every blob hashes to the digest its path names (and sits at the path
of that digest); every link holds the digest of its own path and its content
exists; every manifest parses and what it names is in its repository (blobs
linked, an index's manifests present); every tag names a manifest of its
repository; every referrer link names a manifest whose subject is that link's.
Each problem is reported with its driver path; the CLI exits non-zero on any.
Read-only: fsck repairs nothing (``gc`` drops dangling links).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ketch.errors import InvalidArgument
from ketch.image import oci
from ketch.image.reference import parse_digest
from ketch.registry.server.driver import PathNotFound
from ketch.registry.server.errors import RegistryError
from ketch.registry.server.store import (
    Store,
    blob_path,
    digest_dirs,
    layer_link,
    parse_manifest,
    referrers_dir,
    repo_path,
    revision_dir,
    tag_link,
)


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(slots=True)
class FsckReport:
    problems: list[Problem] = field(default_factory=list)
    blobs: int = 0
    manifests: int = 0
    links: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"{self.blobs} blobs, {self.manifests} manifests, {self.links} links checked: "
                f"{len(self.problems)} problem{'' if len(self.problems) == 1 else 's'}")


class _Checker:
    def __init__(self, store: Store, verify_content: bool) -> None:
        self.store = store
        self.drv = store.driver
        self.verify_content = verify_content
        self.report = FsckReport()

    def problem(self, path: str, message: str) -> None:
        self.report.problems.append(Problem(path, message))

    def blob_exists(self, digest: str) -> bool:
        try:
            self.drv.stat(blob_path(digest))
        except (PathNotFound, InvalidArgument):
            return False
        return True

    def link(self, path: str, expected: str) -> bool:
        """Is the link at ``path`` to ``expected``, with the content present?"""
        self.report.links += 1
        try:
            text = self.drv.get_content(path).decode("ascii", "replace").strip()
        except PathNotFound:
            self.problem(path, "missing link")
            return False
        if text != expected:
            self.problem(path, f"link holds {text!r}, its path names {expected}")
            return False
        if not self.blob_exists(expected):
            self.problem(path, f"links to {expected}, which is not stored")
            return False
        return True

    def digests_under(self, base: str) -> list[tuple[str, str]]:
        """(digest, directory) of the ``<base>/<alg>/<hex>`` directories."""
        out: list[tuple[str, str]] = []
        for digest, d in digest_dirs(self.drv, base):
            try:
                parse_digest(digest)
            except InvalidArgument:
                self.problem(d, "not a digest's directory")
                continue
            out.append((digest, d))
        return out

    # -- blobs --

    def blobs(self) -> None:
        try:
            files = list(self.drv.walk("/blobs"))
        except PathNotFound:
            return
        for info in files:
            parts = info.path.split("/")   # "", blobs, alg, hh, hex, data
            if len(parts) != 6 or parts[5] != "data":
                self.problem(info.path, "unexpected file in the blob store")
                continue
            alg, prefix, hexpart = parts[2], parts[3], parts[4]
            digest = f"{alg}:{hexpart}"
            try:
                parse_digest(digest)
            except InvalidArgument as exc:
                self.problem(info.path, f"not a blob path: {exc}")
                continue
            if prefix != hexpart[:2]:
                self.problem(info.path, f"blob {digest} under the wrong prefix {prefix}")
            self.report.blobs += 1
            if self.verify_content:
                h = hashlib.new(alg)
                with self.drv.reader(info.path) as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                if h.hexdigest() != hexpart:
                    self.problem(info.path, f"content does not match its digest {digest} "
                                            f"(it hashes to {alg}:{h.hexdigest()})")

    # -- repositories --

    def repository(self, repo: str) -> None:
        base = repo_path(repo)
        for digest, _ in self.digests_under(f"{base}/_layers"):
            self.link(layer_link(repo, digest), digest)
        revisions: set[str] = set()
        for digest, _ in self.digests_under(f"{base}/_manifests/revisions"):
            if self.link(revision_dir(repo, digest) + "/link", digest):
                revisions.add(digest)
                self.manifest(repo, digest)
        for tag in self.store.tags(repo):
            path = tag_link(repo, tag)
            self.report.links += 1
            try:
                text = self.drv.get_content(path).decode("ascii", "replace").strip()
            except PathNotFound:
                self.problem(path, "tag without a link")
                continue
            if text not in revisions:
                self.problem(path, f"tag {tag} names {text!r}, not a manifest of {repo}")
        for subject, sd in self.digests_under(f"{base}/_referrers"):
            for digest, _ in self.digests_under(referrers_dir(repo, subject)):
                path = f"{sd}/{digest.replace(':', '/')}/link"
                if not self.link(path, digest):
                    continue
                if digest not in revisions:
                    self.problem(path, f"referrer {digest} is not a manifest of {repo}")
                    continue
                parsed = parse_manifest(self.drv.get_content(blob_path(digest)))
                if parsed.subject is None or parsed.subject.digest != subject:
                    self.problem(path, f"manifest {digest} does not have subject {subject}")

    def manifest(self, repo: str, digest: str) -> None:
        path = blob_path(digest)
        self.report.manifests += 1
        try:
            parsed = parse_manifest(self.drv.get_content(path))
        except RegistryError as exc:
            self.problem(path, f"manifest {digest} of {repo} is invalid: {exc.detail}")
            return
        for desc in parsed.blobs:
            if desc.media_type in oci.FOREIGN_LAYER_TYPES and desc.urls:
                continue
            link = layer_link(repo, desc.digest)
            if not self.store.is_linked(repo, desc.digest):
                self.problem(link, f"manifest {digest} names blob {desc.digest}, "
                                   f"not linked in {repo}")
            elif not self.blob_exists(desc.digest):
                self.problem(link, f"manifest {digest} names blob {desc.digest}, not stored")
        for desc in parsed.manifests:
            child = revision_dir(repo, desc.digest) + "/link"
            try:
                ok = self.drv.get_content(child).decode().strip() == desc.digest
            except PathNotFound:
                ok = False
            if not ok:
                self.problem(child, f"index {digest} names manifest {desc.digest}, "
                                    f"not in {repo}")


def check(store: Store, *, verify_content: bool = True) -> FsckReport:
    """Every problem of the store (see the module docstring); ``report.ok`` when none."""
    c = _Checker(store, verify_content)
    c.blobs()
    for repo in store.repositories():
        c.repository(repo)
    return c.report
