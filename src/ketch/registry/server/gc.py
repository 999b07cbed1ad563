"""``ketch registry gc``: mark the content manifests use, sweep the rest.

Kept (marked):

- every manifest of a repository, or with ``delete_untagged`` only the tagged
  ones, plus
- the manifests an index of a kept manifest lists, recursively (a tagged
  multi-platform image keeps its per-platform manifests, tagged or not), and
- the manifests whose ``subject`` is a kept manifest (signatures, SBOMs and
  other referrers live as long as what they describe);
- the config and layer blobs of every kept manifest, in every repository.

Swept: manifests left unmarked (only with ``delete_untagged``), blobs no kept
manifest names, the repository links to swept blobs, and upload sessions
older than ``upload_max_age``. A blob uploaded and not yet used by a manifest
is garbage, which is why gc must not run while clients push: the CLI holds
``config.storage_lock`` exclusively, which a writable server holds shared.
``dry_run`` reports what would go and deletes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ketch.registry.server.driver import PathNotFound
from ketch.registry.server.errors import RegistryError
from ketch.registry.server.store import (
    ParsedManifest,
    Store,
    blob_path,
    digest_of_blob_path,
    layer_link,
    parse_manifest,
    revision_dir,
)

DEFAULT_UPLOAD_MAX_AGE = 7 * 24 * 3600


@dataclass(slots=True)
class GCReport:
    """What gc removed (or, dry, would remove)."""

    dry_run: bool = False
    blobs_kept: int = 0
    blobs_deleted: list[tuple[str, int]] = field(default_factory=list)   # (digest, size)
    manifests_deleted: list[tuple[str, str]] = field(default_factory=list)  # (repo, digest)
    links_deleted: list[tuple[str, str]] = field(default_factory=list)  # (repo, digest)
    uploads_deleted: list[tuple[str, str]] = field(default_factory=list)  # (repo, upload id)

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.blobs_deleted)

    def lines(self) -> list[str]:
        """One line per removal, then a summary (what ``ketch registry gc`` prints)."""
        verb = "would delete" if self.dry_run else "deleted"
        out = [f"{verb} manifest {repo}@{d}" for repo, d in self.manifests_deleted]
        out += [f"{verb} upload {repo}/{u}" for repo, u in self.uploads_deleted]
        out += [f"{verb} link {repo}@{d}" for repo, d in self.links_deleted]
        out += [f"{verb} blob {d} ({size} bytes)" for d, size in self.blobs_deleted]
        out.append(f"{len(self.blobs_deleted)} blobs {verb}, {self.bytes_freed} bytes, "
                   f"{self.blobs_kept} blobs kept, {len(self.manifests_deleted)} manifests "
                   f"{verb}")
        return out


def _load(store: Store, digest: str) -> ParsedManifest | None:
    try:
        return parse_manifest(store.driver.get_content(blob_path(digest)))
    except (PathNotFound, RegistryError):
        return None


def _kept_manifests(store: Store, repo: str, delete_untagged: bool
                    ) -> tuple[set[str], list[str], dict[str, ParsedManifest]]:
    """(kept manifest digests, manifests to delete, parsed manifests) of one repository."""
    revisions = store.revisions(repo)
    parsed = {d: p for d in revisions if (p := _load(store, d)) is not None}
    roots = set(store.tag_map(repo).values()) if delete_untagged else set(revisions)
    kept: set[str] = set()
    todo = [d for d in roots if d in parsed]
    by_subject: dict[str, list[str]] = {}
    for d, p in parsed.items():
        if p.subject is not None:
            by_subject.setdefault(p.subject.digest, []).append(d)
    while todo:
        d = todo.pop()
        if d in kept:
            continue
        kept.add(d)
        todo.extend(c.digest for c in parsed[d].manifests if c.digest in parsed)
        todo.extend(by_subject.get(d, ()))
    doomed = sorted(d for d in revisions if d not in kept) if delete_untagged else []
    return kept, doomed, parsed


def collect(store: Store, *, dry_run: bool = False, delete_untagged: bool = False,
            upload_max_age: float = DEFAULT_UPLOAD_MAX_AGE, now: float | None = None
            ) -> GCReport:
    """Mark and sweep the whole store (see the module docstring). Not for a live registry."""
    now = time.time() if now is None else now
    report = GCReport(dry_run=dry_run)
    marked: set[str] = set()
    repos = store.repositories(with_uploads_only=True)
    for repo in repos:
        kept, doomed, parsed = _kept_manifests(store, repo, delete_untagged)
        for d in kept:
            marked.add(d)
            marked.update(b.digest for b in parsed[d].blobs)
        # a manifest gc cannot read is kept whole: never delete what is not understood
        marked.update(d for d in store.revisions(repo) if d not in parsed)
        for d in doomed:
            report.manifests_deleted.append((repo, d))
            if not dry_run:
                store.delete_manifest(repo, d)
    report.uploads_deleted = store.purge_uploads(upload_max_age, now=now, dry_run=dry_run)
    # Manifests of repositories that are listed nowhere (an unreadable one) stay: only blobs
    # under /blobs are swept, and only when nothing marked them.
    try:
        blob_files = [info for info in store.driver.walk("/blobs")
                      if info.path.endswith("/data")]
    except PathNotFound:
        blob_files = []
    doomed_blobs: set[str] = set()
    for info in blob_files:
        digest = digest_of_blob_path(info.path)
        if digest in marked:
            report.blobs_kept += 1
            continue
        doomed_blobs.add(digest)
        report.blobs_deleted.append((digest, info.size))
    for repo in repos:
        for digest in store.layers(repo):
            if digest in doomed_blobs:
                report.links_deleted.append((repo, digest))
                if not dry_run:
                    store.driver.delete(layer_link(repo, digest).rsplit("/", 1)[0])
        if not dry_run:
            # a manifest revision whose bytes are gone is a dangling link: drop it too
            for digest in store.revisions(repo):
                if digest in doomed_blobs:
                    store.driver.delete(revision_dir(repo, digest))
    if not dry_run:
        for digest, _ in report.blobs_deleted:
            try:
                store.driver.delete(blob_path(digest).rsplit("/", 1)[0])
            except PathNotFound:
                pass
    return report
