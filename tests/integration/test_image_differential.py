"""Images across tools: Debian's dockerd 20.10, skopeo and umoci judge ketchd.

Three claims, each proven through the daemon with the real docker CLI (28.x):

1. Differential. An archive loaded into dockerd and into ketchd gives the
   same image: ID, RepoTags, config (``docker image inspect``), history rows,
   and layer contents (each side's ``docker save``, compared per layer by
   file list with mode, owner, size, link target and content hash, not by
   archive bytes). Both directions: an image dockerd built itself (with
   whiteouts and an opaque directory) into ketchd, and ketch's busybox into
   dockerd; several images and tags in one archive; then round trips between
   them keep the ID. And ketch's unpacked snapshot, mounted, holds the files
   dockerd's container has (``docker export``).
2. The field reads ``ketch save`` (Docker 25+'s combined form: OCI layout plus
   manifest.json): skopeo inspects and copies it as ``oci-archive:`` and as
   ``docker-archive:``, umoci unpacks the copies into the image's filesystem,
   and ketchd loads what skopeo writes. (test_image_archive_tools covers the
   same tools against the archive library; here everything goes through
   ketchd.)
3. Bad input end to end: corrupt, truncated and inconsistent archives and
   hostile layers make ``docker load`` fail with a clear message and exit 1,
   leave ``docker images`` as it was, and leave the store consistent
   (``ImageService.check()``) with exactly the blobs and snapshots it had.
   dockerd refuses the docker-save shaped ones too.

Where ketchd differs from dockerd, the test is a strict xfail whose reason
names the code; it fails (XPASS) once the behaviour is fixed.

The reference dockerd is private and session-wide (refdockerd.py); each test
starts its own ketchd (test_daemon_system's fixtures), stopped by pid.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import PREFIX
from tests.integration.refdockerd import (  # noqa: F401 - ref_dockerd is a fixture
    RefDockerd,
    ref_dockerd,
)
from tests.integration.test_daemon_images import (  # noqa: F401 - fixtures
    _unmount_under,
    busybox_archive,
)
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    _wait_ready,
    docker,
    start_ketchd,
    stop_supervisor,
    write_private_config,
)
from tests.layers import Mounter, make_tar
from tests.unit.test_image_unpack import MALICIOUS, _bytes_for

from ketch.image import oci

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

SKOPEO = shutil.which("skopeo")
UMOCI = shutil.which("umoci")
MULTI = "diff/multi:1"

# The multi-layer image dockerd builds from its imported busybox. Each step
# is there for what it leaves in the layer tars: a setuid file, a directory
# owned by another uid/gid, a symlink, a hardlink, a file changed in a later
# layer, ``.wh.`` whiteouts for a deleted file and directory, and an opaque
# directory (``.wh..wh..opq``) for one deleted and made again.
DOCKERFILE = """\
FROM busybox:latest
LABEL org.example.test=differential
RUN mkdir -p /data/keep /data/gone /data/opq /data/empty \\
 && echo one > /data/keep/f && echo two > /data/gone/f && echo three > /data/opq/old \\
 && ln -s keep/f /data/link && chmod 4755 /data/keep/f && chown 12:34 /data/keep \\
 && chmod 700 /data/empty
COPY files/ /srv/
RUN rm -rf /data/gone /data/opq && mkdir /data/opq && echo new > /data/opq/new \\
 && echo changed > /data/keep/f && rm /srv/a.txt && ln /srv/big /srv/big.hard \\
 && chmod 0640 /srv/sub/b.txt && chown 7:8 /srv/sub/b.txt
ENV APP=diff
WORKDIR /srv
CMD ["sh", "-c", "ls"]
"""


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"{out.args}: {out.stderr}"
    return out.stdout


# --------------------------------------------------------------------- fixtures

@pytest.fixture
def ketchd(start_ketchd: Callable[..., Ketchd]) -> Iterator[Ketchd]:  # noqa: F811
    k = start_ketchd()
    yield k
    k.stop()
    _unmount_under(k.dir)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-x", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def multi_archive(ref_dockerd: RefDockerd, scratch: Path) -> Path:  # noqa: F811
    """``docker save`` of the image dockerd built, which dockerd then holds *as loaded*.

    Removing the built image and loading its archive back makes dockerd's view
    the one a load gives (no parent chain of intermediate images), so both
    engines are compared on the same archive.
    """
    ctx = scratch / "ctx"
    (ctx / "files" / "sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "files" / "a.txt").write_text("hello\n")
    (ctx / "files" / "sub" / "b.txt").write_text("deep\n")
    (ctx / "files" / "big").write_bytes(bytes(range(256)) * 20)
    d = ref_dockerd
    built = d.build(ctx, MULTI)
    archive = d.save(scratch / "multi-dockerd.tar", MULTI)
    d.remove(MULTI)
    d.load(archive)
    assert d.image_id(MULTI) == built
    return archive


# --------------------------------------------------------------------- archives

@dataclass(frozen=True)
class Entry:
    """One tar entry as a file list shows it (hardlinks resolved by flatten)."""

    name: str
    kind: str               # "f", "d", "l", "h" (hardlink), "c", "b", "p"
    mode: int
    uid: int
    gid: int
    size: int = 0
    link: str = ""
    sha256: str = ""
    xattrs: tuple[tuple[str, str], ...] = ()


_KINDS = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d",
          tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c",
          tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}


def _norm(name: str) -> str:
    name = name.strip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or "."


def layer_entries(data: bytes) -> list[Entry]:
    """A layer tar (plain or gzip) as a sorted file list."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        for m in tf:
            digest = ""
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                digest = hashlib.sha256(f.read()).hexdigest()
            xattrs = tuple(sorted((k, v) for k, v in m.pax_headers.items()
                                  if k.startswith("SCHILY.xattr.")))
            out.append(Entry(_norm(m.name), _KINDS.get(m.type, repr(m.type)),
                             stat.S_IMODE(m.mode), m.uid, m.gid,
                             m.size if m.isfile() else 0,
                             _norm(m.linkname) if m.islnk() else m.linkname,
                             digest, xattrs))
    return sorted(out, key=lambda e: e.name)


@dataclass
class SavedImage:
    image_id: str
    repo_tags: list[str]
    config: dict[str, Any]
    layers: list[list[Entry]]


def read_saved(archive: Path) -> list[SavedImage]:
    """Every image of a ``docker save`` archive, by its manifest.json (any save format)."""
    images = []
    with tarfile.open(archive) as tf:
        manifest_file = tf.extractfile("manifest.json")
        assert manifest_file is not None, "no manifest.json"
        for item in json.load(manifest_file):
            raw = tf.extractfile(item["Config"])
            assert raw is not None
            config_bytes = raw.read()
            layers = []
            for name in item["Layers"]:
                f = tf.extractfile(name)        # follows in-archive symlinks
                assert f is not None, name
                layers.append(layer_entries(f.read()))
            images.append(SavedImage("sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                                     sorted(item.get("RepoTags") or []),
                                     json.loads(config_bytes), layers))
    return images


def saved_one(archive: Path) -> SavedImage:
    (image,) = read_saved(archive)
    return image


def assert_same_layers(a: SavedImage, b: SavedImage) -> None:
    assert len(a.layers) == len(b.layers)
    for i, (la, lb) in enumerate(zip(a.layers, b.layers, strict=True)):
        if la != lb:
            only_a = sorted(set(la) - set(lb), key=lambda e: e.name)[:10]
            only_b = sorted(set(lb) - set(la), key=lambda e: e.name)[:10]
            pytest.fail(f"layer {i} differs:\n  only in first: {only_a}\n"
                        f"  only in second: {only_b}")


def flatten(layers: list[list[Entry]]) -> dict[str, Entry]:
    """The filesystem the layers make, applying whiteouts as the OCI image spec says.

    A layer's whiteouts act on the layers below it only, so they are applied
    before its entries; hardlinks become the file they point at.
    """
    tree: dict[str, Entry] = {}
    for layer in layers:
        for e in layer:
            parent, _, base = e.name.rpartition("/")
            if base == ".wh..wh..opq":
                below = parent + "/" if parent else ""
                for p in [p for p in tree if p.startswith(below) and p != parent]:
                    del tree[p]
            elif base.startswith(".wh."):
                gone = f"{parent}/{base[4:]}" if parent else base[4:]
                for p in [p for p in tree if p == gone or p.startswith(gone + "/")]:
                    del tree[p]
        entries = [e for e in layer if not e.name.rpartition("/")[2].startswith(".wh.")]
        # Files first: the lists are sorted by name, so a hardlink may come before its target.
        for e in sorted(entries, key=lambda e: e.kind == "h"):
            if e.kind == "h":
                tree[e.name] = replace(tree[e.link], name=e.name)
            else:
                tree[e.name] = replace(e, xattrs=())
    tree.pop(".", None)
    return tree


def rootfs_tree(root: Path) -> dict[str, Entry]:
    """A directory as flatten shows a filesystem."""
    tree: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            kind = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l",
                    stat.S_IFCHR: "c", stat.S_IFBLK: "b",
                    stat.S_IFIFO: "p"}[stat.S_IFMT(st.st_mode)]
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if kind == "f" else ""
            tree[rel] = Entry(rel, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                              st.st_size if kind == "f" else 0,
                              os.readlink(path) if kind == "l" else "", digest)
    return tree


def assert_same_tree(got: dict[str, Entry], want: dict[str, Entry]) -> None:
    if got != want:
        diff = [(p, got.get(p), want.get(p)) for p in sorted(set(got) | set(want))
                if got.get(p) != want.get(p)]
        pytest.fail(f"{len(diff)} paths differ (path, got, want): {diff[:10]}")


# --------------------------------------------------------------------- engines

# Fields dockerd's inspect prints in Config that are not part of an image's
# config (docker/cli docs/deprecated.md, "Empty/nil fields in image Config from
# inspect API", deprecated in 28.3): Image is the legacy builder's parent ID,
# the rest are always empty. ketch models only the image spec's fields.
NOT_IMAGE_CONFIG = ("Hostname", "Domainname", "AttachStdin", "AttachStdout", "AttachStderr",
                    "Tty", "OpenStdin", "StdinOnce", "Image", "NetworkDisabled", "MacAddress",
                    "StopTimeout")


def _clean(value: Any) -> Any:
    """Drop empty values: dockerd 20.10 prints every Config field, newer engines omit empty ones."""
    if isinstance(value, dict):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, "", [], {}, False, 0)}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def image_view(inspect: dict[str, Any]) -> dict[str, Any]:
    """What must agree between engines in ``docker image inspect``.

    Left out on purpose: GraphDriver (each engine's own storage), Metadata
    (LastTagTime is when *this* engine tagged), Size and VirtualSize (see
    test_sizes_match_dockerd), and Container/ContainerConfig, which API 1.45
    dropped and which the containerd image store omits at every version.
    """
    return {
        "Id": inspect["Id"],
        "RepoTags": sorted(inspect["RepoTags"]),
        "RepoDigests": sorted(inspect["RepoDigests"]),
        "Parent": inspect.get("Parent") or "",
        "Comment": inspect.get("Comment") or "",
        "Created": inspect["Created"],
        "DockerVersion": inspect.get("DockerVersion") or "",
        "Author": inspect.get("Author") or "",
        "Config": _clean({k: v for k, v in inspect["Config"].items()
                          if k not in NOT_IMAGE_CONFIG}),
        "Architecture": inspect["Architecture"],
        "Variant": inspect.get("Variant") or "",
        "Os": inspect["Os"],
        "RootFS": inspect["RootFS"],
    }


def history_rows(out: str, sizes: bool = False) -> list[dict[str, str]]:
    """``docker history --human=false --no-trunc --format '{{json .}}'`` rows.

    Without ``sizes`` a row says only whether its layer is empty (Size "0").
    """
    rows = []
    for line in out.splitlines():
        row = json.loads(line)
        row.pop("CreatedSince")           # relative to now with --human
        if not sizes:
            row["Size"] = "empty" if row["Size"] == "0" else "layer"
        rows.append(row)
    return rows


HISTORY = ("history", "--human=false", "--no-trunc", "--format", "{{json .}}")


def assert_same_image(d: RefDockerd, k: Ketchd, ref: str) -> None:
    want = image_view(d.inspect(ref))
    got = image_view(json.loads(ok(docker(k, "image", "inspect", ref)))[0])
    assert got == want
    assert history_rows(ok(docker(k, *HISTORY, ref))) == \
        history_rows(d.ok(*HISTORY, ref).stdout)
    # docker images: the same name and ID (the size is test_sizes_match_dockerd's).
    fmt = ("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", ref)
    assert ok(docker(k, *fmt)) == d.ok(*fmt).stdout


def load_into_ketchd(k: Ketchd, archive: Path) -> str:
    return ok(docker(k, "load", "-i", str(archive)))


# ===================================================================== 1. differential

def test_dockerd_build_loaded_into_ketchd_is_the_same_image(
        ref_dockerd: RefDockerd, multi_archive: Path, ketchd: Ketchd,  # noqa: F811
        scratch: Path) -> None:
    d, k = ref_dockerd, ketchd
    source = saved_one(multi_archive)
    assert source.repo_tags == [MULTI]
    # The archive has what the Dockerfile is there for: whiteouts and an opaque dir.
    names = {e.name for layer in source.layers for e in layer}
    assert {"data/.wh.gone", "srv/.wh.a.txt", "data/opq/.wh..wh..opq"} <= names
    assert any(e.kind == "h" for layer in source.layers for e in layer)

    assert load_into_ketchd(k, multi_archive).strip() == f"Loaded image: {MULTI}"
    assert json.loads(ok(docker(k, "image", "inspect", MULTI)))[0]["Id"] == source.image_id
    assert_same_image(d, k, MULTI)

    # What each engine saves holds the same layers, entry by entry.
    k_archive = k.dir / "multi-ketch.tar"
    ok(docker(k, "save", "-o", str(k_archive), MULTI))
    d_archive = d.save(scratch / "multi-dockerd-again.tar", MULTI)
    ks, ds = saved_one(k_archive), saved_one(d_archive)
    assert ks.image_id == ds.image_id == source.image_id
    assert ks.repo_tags == ds.repo_tags == [MULTI]
    assert ks.config == ds.config
    assert_same_layers(ks, ds)
    assert_same_layers(ks, source)

    # The harness check: the image is what the Dockerfile says.
    tree = flatten(source.layers)
    assert (tree["data/keep/f"].mode, tree["data/keep"].uid, tree["data/keep"].gid) == \
        (0o4755, 12, 34)
    assert {"data/opq/new", "data/link", "srv/big.hard"} <= set(tree)
    assert not {"data/gone", "data/opq/old", "srv/a.txt"} & set(tree)


# What dockerd's init layer adds to every container's filesystem (and so to
# ``docker export``), beyond the image's files.
DOCKER_INIT = {".dockerenv", "dev/console", "dev/pts", "dev/shm", "etc/hostname", "etc/hosts",
               "etc/mtab", "etc/resolv.conf"}


def _without_init(tree: dict[str, Entry]) -> dict[str, Entry]:
    return {p: e for p, e in tree.items() if p not in DOCKER_INIT}


def exported_tree(d: RefDockerd, ref: str) -> dict[str, Entry]:
    """The image's filesystem as dockerd unpacks it: ``docker export`` of a created container."""
    cid = d.ok("create", "--network", "none", ref).stdout.strip()
    try:
        out = subprocess.run([d.docker_bin, "export", cid], env=d.env, capture_output=True,
                             timeout=60, check=False)
        assert out.returncode == 0, out.stderr
    finally:
        d.ok("rm", cid)
    return _without_init(flatten([layer_entries(out.stdout)]))


def test_ketch_unpacks_layers_as_dockerd_does(ref_dockerd: RefDockerd,  # noqa: F811
                                             multi_archive: Path, ketchd: Ketchd) -> None:
    """ketch's snapshot of the top layer, mounted, holds the files dockerd's container has.

    The view is made after ketchd stopped, so nothing else touches the store.
    """
    from ketch.image.service import ImageService

    k = ketchd
    load_into_ketchd(k, multi_archive)
    k.stop()
    want = exported_tree(ref_dockerd, MULTI)
    # flatten() reads whiteouts and opaque directories as dockerd does.
    assert_same_tree(_without_init(flatten(saved_one(multi_archive).layers)), want)

    svc = ImageService(k.root / "image")
    top = svc.metadata.resolve(MULTI).layers[-1].chain_id
    mounter = Mounter(k.dir)
    mounts = svc.snapshotter.view("differential-view", top)
    try:
        got = _without_init(rootfs_tree(mounter.mount(mounts, "view")))
    finally:
        mounter.release(k.dir)
        svc.snapshotter.remove("differential-view")
    assert_same_tree(got, want)
    assert svc.check() == []


def test_round_trip_keeps_ids(ref_dockerd: RefDockerd, multi_archive: Path,  # noqa: F811
                              start_ketchd: Callable[..., Ketchd],  # noqa: F811
                              scratch: Path) -> None:
    """dockerd -> ketchd -> dockerd -> a fresh ketchd: every hop the same image."""
    d = ref_dockerd
    image_id = saved_one(multi_archive).image_id
    k1 = start_ketchd()
    load_into_ketchd(k1, multi_archive)
    hop1 = k1.dir / "hop1.tar"
    ok(docker(k1, "save", "-o", str(hop1), MULTI))
    d.remove(MULTI)
    assert MULTI in d.load(hop1)            # dockerd reads ketch's combined format
    assert d.image_id(MULTI) == image_id
    hop2 = d.save(scratch / "hop2.tar", MULTI)
    k2 = start_ketchd()
    load_into_ketchd(k2, hop2)
    assert json.loads(ok(docker(k2, "image", "inspect", MULTI)))[0]["Id"] == image_id
    assert_same_image(d, k2, MULTI)
    assert_same_layers(saved_one(hop1), saved_one(hop2))
    # Loading the same archive twice changes nothing on either side.
    load_into_ketchd(k2, hop1)
    assert ok(docker(k2, "images", "-q", "--no-trunc")).split() == [image_id]


def _names(lines: str) -> list[str]:
    return sorted(lines.splitlines())


def test_archive_of_several_images_and_tags(ref_dockerd: RefDockerd,  # noqa: F811
                                            multi_archive: Path, ketchd: Ketchd,
                                            scratch: Path) -> None:
    """Two images, one of them under two names, in one archive each way (and gzipped)."""
    d, k = ref_dockerd, ketchd
    d.ok("tag", MULTI, "diff/alias:2")
    try:
        both = d.save(scratch / "both-dockerd.tar", MULTI, "diff/alias:2", "busybox:latest")
    finally:
        d.remove("diff/alias:2")
    by_id = {i.image_id: i.repo_tags for i in read_saved(both)}
    assert sorted(by_id.values()) == [["busybox:latest"], ["diff/alias:2", MULTI]]
    gzipped = k.dir / "both-dockerd.tar.gz"
    gzipped.write_bytes(gzip.compress(both.read_bytes(), compresslevel=1))
    assert _names(load_into_ketchd(k, gzipped)) == \
        ["Loaded image: busybox:latest", "Loaded image: diff/alias:2", f"Loaded image: {MULTI}"]
    fmt = ("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    want = sorted(f"{t} {i}" for i, tags in by_id.items() for t in tags)
    assert _names(ok(docker(k, *fmt))) == want

    # ketchd's archive of the same: one manifest.json entry per image, as dockerd's.
    from_ketch = k.dir / "both-ketch.tar"
    ok(docker(k, "save", "-o", str(from_ketch), MULTI, "diff/alias:2", "busybox:latest"))
    saved = read_saved(from_ketch)
    assert {i.image_id: i.repo_tags for i in saved} == by_id
    for image in saved:
        (twin,) = [i for i in read_saved(both) if i.image_id == image.image_id]
        assert_same_layers(image, twin)
    d.remove(MULTI)
    try:
        assert _names(d.load(from_ketch)) == _names(load_into_ketchd(k, gzipped))
        assert _names(d.ok(*fmt, "diff/*").stdout) == [w for w in want if w.startswith("diff/")]
    finally:
        d.cli("rmi", "diff/alias:2")
        if d.cli("image", "inspect", MULTI).returncode != 0:
            d.load(multi_archive)


def test_ketch_busybox_loaded_into_dockerd_is_the_same_image(
        ref_dockerd: RefDockerd, busybox_archive: Path, ketchd: Ketchd,  # noqa: F811
        scratch: Path) -> None:
    d, k = ref_dockerd, ketchd
    load_into_ketchd(k, busybox_archive)
    # Its own name in dockerd, whose busybox:latest is the base of the builds.
    ref = "ketch/busybox:1"
    ok(docker(k, "tag", "busybox:latest", ref))
    k_archive = k.dir / "ketchbox.tar"
    ok(docker(k, "save", "-o", str(k_archive), ref))
    ks = saved_one(k_archive)
    assert ks.repo_tags == [ref]
    try:
        assert f"Loaded image: {ref}" in d.load(k_archive)
        assert d.image_id(ref) == ks.image_id
        ok(docker(k, "rmi", "busybox:latest"))
        assert_same_image(d, k, ref)
        ds = saved_one(d.save(scratch / "ketchbox-dockerd.tar", ref))
        assert ds.image_id == ks.image_id and ds.config == ks.config
        assert_same_layers(ds, ks)
        # dockerd runs it: the layer unpacked into a working busybox.
        assert d.ok("run", "--rm", "--network", "none", ref, "echo", "hi").stdout == "hi\n"
        # And back: what dockerd saves loads into ketchd as the same image.
        ok(docker(k, "rmi", ref))
        load_into_ketchd(k, scratch / "ketchbox-dockerd.tar")
        assert json.loads(ok(docker(k, "image", "inspect", ref)))[0]["Id"] == ks.image_id
    finally:
        d.cli("rmi", ref)


def _layer_sizes(history: str) -> list[int]:
    return [int(r["Size"]) for r in history_rows(history, sizes=True)]


def test_sizes_match_dockerd(ref_dockerd: RefDockerd, multi_archive: Path,  # noqa: F811
                             ketchd: Ketchd) -> None:
    d, k = ref_dockerd, ketchd
    load_into_ketchd(k, multi_archive)
    assert _layer_sizes(ok(docker(k, *HISTORY, MULTI))) == \
        _layer_sizes(d.ok(*HISTORY, MULTI).stdout)
    assert json.loads(ok(docker(k, "image", "inspect", MULTI)))[0]["Size"] == \
        d.inspect(MULTI)["Size"]


# ===================================================================== 2. skopeo and umoci

def skopeo(*args: str) -> str:
    assert SKOPEO is not None
    out = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, f"skopeo {' '.join(args)}: {out.stderr}"
    return out.stdout


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> dict[str, Entry]:
    assert UMOCI is not None
    out = subprocess.run([UMOCI, "unpack", "--image", f"{layout}:{tag}", str(bundle)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"umoci unpack {layout}:{tag}: {out.stderr}"
    return rootfs_tree(bundle / "rootfs")


needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
needs_umoci = pytest.mark.skipif(UMOCI is None, reason="umoci is not installed (apt-get install umoci)")


@needs_skopeo
@needs_umoci
def test_skopeo_and_umoci_read_ketch_save(multi_archive: Path, ketchd: Ketchd) -> None:
    k = ketchd
    load_into_ketchd(k, multi_archive)
    info = json.loads(ok(docker(k, "image", "inspect", MULTI)))[0]
    saved = k.dir / "multi.tar"
    ok(docker(k, "save", "-o", str(saved), MULTI))
    with tarfile.open(saved) as tf:
        names = tf.getnames()
        index_file = tf.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
    # Docker 25+'s combined form: an OCI layout and manifest.json over one blobs/.
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
    assert all(n == "blobs" or n.startswith("blobs/") for n in names
               if n not in ("oci-layout", "index.json", "manifest.json"))
    (desc,) = index["manifests"]

    as_oci = json.loads(skopeo("inspect", f"oci-archive:{saved}"))
    assert as_oci["Digest"] == desc["digest"]
    assert as_oci["Layers"] == info["RootFS"]["Layers"]    # stored uncompressed, as loaded
    assert (as_oci["Created"], as_oci["Architecture"], as_oci["Os"]) == \
        (info["Created"], info["Architecture"], info["Os"])
    assert as_oci["Env"] == info["Config"]["Env"]
    assert as_oci["Labels"] == info["Config"]["Labels"]
    config = skopeo("inspect", "--raw", "--config", f"oci-archive:{saved}").encode()
    assert "sha256:" + hashlib.sha256(config).hexdigest() == info["Id"]
    as_docker = json.loads(skopeo("inspect", f"docker-archive:{saved}"))
    # (RepoTags lists a registry's tags, always empty for an archive.)
    assert (as_docker["Created"], as_docker["Env"]) == (info["Created"], info["Config"]["Env"])
    assert as_docker["Layers"] == info["RootFS"]["Layers"]

    # Copies into a layout, through either view of the archive, unpack with umoci
    # into exactly the filesystem the layers make.
    layout = k.dir / "layout"
    skopeo("copy", f"oci-archive:{saved}", f"oci:{layout}:via-oci")
    skopeo("copy", f"docker-archive:{saved}", f"oci:{layout}:via-docker")
    want = flatten(saved_one(multi_archive).layers)
    assert want["data/keep/f"].mode == 0o4755 and "data/opq/old" not in want
    assert_same_tree(umoci_unpack(layout, "via-oci", k.dir / "b1"), want)
    assert_same_tree(umoci_unpack(layout, "via-docker", k.dir / "b2"), want)


@needs_skopeo
@needs_umoci
def test_umoci_unpacks_ketch_busybox_into_its_rootfs(busybox_archive: Path,  # noqa: F811
                                                      busybox_rootfs: Path,
                                                      ketchd: Ketchd) -> None:
    """A layer ketch wrote itself (bootstrap), read by umoci: the directory it was made from."""
    k = ketchd
    load_into_ketchd(k, busybox_archive)
    saved = k.dir / "busybox.tar"
    ok(docker(k, "save", "-o", str(saved), "busybox:latest"))
    layout = k.dir / "layout"
    skopeo("copy", f"oci-archive:{saved}", f"oci:{layout}:latest")
    got = umoci_unpack(layout, "latest", k.dir / "bundle")
    assert_same_tree(got, flatten(saved_one(saved).layers))
    assert_same_tree(got, rootfs_tree(busybox_rootfs))


@needs_skopeo
def test_ketchd_loads_what_skopeo_writes(multi_archive: Path,
                                        start_ketchd: Callable[..., Ketchd]) -> None:  # noqa: F811
    k1 = start_ketchd()
    load_into_ketchd(k1, multi_archive)
    image_id = json.loads(ok(docker(k1, "image", "inspect", MULTI)))[0]["Id"]
    saved = k1.dir / "multi.tar"
    ok(docker(k1, "save", "-o", str(saved), MULTI))

    k2 = start_ketchd()
    # OCI to OCI keeps the config's bytes, so the image ID.
    oci_out = k2.dir / "skopeo-oci.tar"
    skopeo("copy", f"oci-archive:{saved}", f"oci-archive:{oci_out}:example.com/diff/oci:2")
    assert load_into_ketchd(k2, oci_out).strip() == "Loaded image: example.com/diff/oci:2"
    assert json.loads(ok(docker(k2, "image", "inspect", "example.com/diff/oci:2")))[0]["Id"] \
        == image_id

    # skopeo's own docker-archive writer (the pre-25 layout), tag from the reference.
    docker_out = k2.dir / "skopeo-docker.tar"
    skopeo("copy", f"oci-archive:{saved}", f"docker-archive:{docker_out}:other/multi:3")
    # Only the archive's tag, though the image has another name here already.
    assert load_into_ketchd(k2, docker_out) == "Loaded image: other/multi:3\n"
    assert sorted(json.loads(ok(docker(k2, "image", "inspect", image_id)))[0]["RepoTags"]) == \
        ["example.com/diff/oci:2", "other/multi:3"]

    # dockerd's docker save converted to OCI: skopeo rewrites the config as an
    # OCI config, so the ID is that config's digest; the layers stay.
    converted = k2.dir / "skopeo-from-dockerd.tar"
    skopeo("copy", f"docker-archive:{multi_archive}", f"oci-archive:{converted}:conv/multi:4")
    new_config = skopeo("inspect", "--raw", "--config", f"oci-archive:{converted}").encode()
    assert load_into_ketchd(k2, converted).strip() == "Loaded image: conv/multi:4"
    conv = json.loads(ok(docker(k2, "image", "inspect", "conv/multi:4")))[0]
    assert conv["Id"] == "sha256:" + hashlib.sha256(new_config).hexdigest()
    orig = json.loads(ok(docker(k2, "image", "inspect", "other/multi:3")))[0]
    assert conv["RootFS"] == orig["RootFS"]
    assert conv["Config"] == orig["Config"]
    # Two images: the first two loads are one image under two names.
    assert len(set(ok(docker(k2, "images", "-q", "--no-trunc")).split())) == 2


def test_load_prints_only_the_archives_tags(ref_dockerd: RefDockerd,  # noqa: F811
                                            multi_archive: Path, ketchd: Ketchd) -> None:
    d, k = ref_dockerd, ketchd
    load_into_ketchd(k, multi_archive)
    ok(docker(k, "tag", MULTI, "other/multi:3"))
    other = k.dir / "other.tar"
    ok(docker(k, "save", "-o", str(other), "other/multi:3"))   # a name saves that tag only
    assert saved_one(other).repo_tags == ["other/multi:3"]
    ok(docker(k, "rmi", "other/multi:3"))
    try:
        want = d.load(other)                 # dockerd already holds the image as diff/multi:1
    finally:
        d.cli("rmi", "other/multi:3")
    assert want == "Loaded image: other/multi:3\n"
    assert load_into_ketchd(k, other) == want


# ===================================================================== 3. bad input

def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


BENIGN = make_tar([("etc/", None), ("etc/motd", b"base layer\n"), ("big", os.urandom(64 << 10))])


def _config(layers: list[bytes]) -> bytes:
    return json.dumps({
        "architecture": oci.host_arch(), "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer) for layer in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }).encode()


def docker_archive(layers: list[bytes], *, config: bytes | None = None,
                   tag: str = "bad/image:1") -> bytes:
    """A ``docker save`` archive of the pre-25 layout (what dockerd 20.10 writes)."""
    config = config if config is not None else _config(layers)
    files: list[tuple[str, bytes | None]] = [(f"{_sha(config)[7:]}.json", config)]
    names = []
    for i, layer in enumerate(layers, 1):
        names.append(f"{i:064x}/layer.tar")
        files.append((names[-1], layer))
    manifest = [{"Config": files[0][0], "RepoTags": [tag], "Layers": names}]
    return make_tar([*files, ("manifest.json", json.dumps(manifest).encode())])


def oci_archive(layers: list[bytes], *, edit: Callable[[dict[str, Any]], None] | None = None,
                blobs: Callable[[dict[str, bytes]], None] | None = None,
                tag: str = "bad/image:1") -> bytes:
    """An OCI layout; ``edit`` changes the manifest, ``blobs`` the blob set, before packing."""
    config = _config(layers)
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": oci.MEDIA_TYPE_OCI_CONFIG, "digest": _sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": oci.MEDIA_TYPE_OCI_LAYER, "digest": _sha(layer),
                    "size": len(layer)} for layer in layers]}
    if edit is not None:
        edit(manifest)
    raw = json.dumps(manifest).encode()
    content = {_sha(b): b for b in [config, *layers, raw]}
    if blobs is not None:
        blobs(content)
    index = {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_INDEX,
             "manifests": [{"mediaType": oci.MEDIA_TYPE_OCI_MANIFEST, "digest": _sha(raw),
                            "size": len(raw),
                            "annotations": {"io.containerd.image.name": f"docker.io/{tag}",
                                            "org.opencontainers.image.ref.name": "1"}}]}
    return make_tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                     *((f"blobs/sha256/{d[7:]}", b) for d, b in content.items()),
                     ("index.json", json.dumps(index).encode())])


def _flip_last_file_byte(layer: bytes) -> bytes:
    """The same tar with one byte of its last file's data changed (still a valid tar)."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        last = [m for m in tf if m.isfile()][-1]
    pos = last.offset_data
    return layer[:pos] + bytes([layer[pos] ^ 0xFF]) + layer[pos + 1:]


def _bad_crc(data: bytes) -> bytes:
    """A gzip member whose trailer's CRC-32 does not match its data."""
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


def _drop_manifests(blobs: dict[str, bytes]) -> None:
    for digest in [d for d, b in blobs.items() if b.startswith(b'{"schemaVersion"')]:
        del blobs[digest]


def _set_layer(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["layers"][-1][field] = value
    return edit


def _swap_blob(blobs: dict[str, bytes]) -> None:
    """The top layer's blob holds other bytes than its name says."""
    blobs[_sha(LAYER2)] = LAYER2 + b"\0" * 512


LAYER2 = make_tar([("etc/", None), ("etc/motd", b"second layer\n")])

def _cut_inside(archive: bytes, member: str) -> bytes:
    """The archive cut off a few bytes into ``member``'s data.

    A cut at a header boundary would be a shorter valid tar (Go's archive/tar
    and Python's tarfile both take a clean end there), not a truncated one.
    """
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        return archive[: tf.getmember(member).offset_data + 10]


# name -> (archive, what the message must say)
BAD_ARCHIVES: dict[str, tuple[Callable[[], bytes], str]] = {
    "not a tar": (lambda: b"this is not an archive\n" * 200, "not a tar archive"),
    "truncated in a layer": (
        lambda: _cut_inside(docker_archive([BENIGN, LAYER2]), f"{1:064x}/layer.tar"),
        "unexpected end of data"),
    "truncated in manifest.json": (
        lambda: _cut_inside(docker_archive([BENIGN, LAYER2]), "manifest.json"),
        "unexpected end of data"),
    "gzipped archive cut short": (
        lambda: gzip.compress(docker_archive([BENIGN, LAYER2]))[:-2000], "truncated or corrupt"),
    "gzipped archive with a bad CRC": (
        lambda: _bad_crc(gzip.compress(docker_archive([BENIGN, LAYER2]))), "checksum"),
    "layer differs from its diff_id": (lambda: docker_archive(
        [BENIGN, _flip_last_file_byte(LAYER2)], config=_config([BENIGN, LAYER2])),
        "does not match the config's diff_id"),
    "fewer layers than diff_ids": (lambda: docker_archive(
        [BENIGN], config=_config([BENIGN, LAYER2])), "has 1 layers, its config 2 diff_ids"),
    "config not named by its digest": (lambda: docker_archive(
        [BENIGN], config=_config([BENIGN])).replace(b'"os": "linux"', b'"os": "LINUX"'),
        "does not match its name"),
    "layer digest in the manifest names no blob": (lambda: oci_archive(
        [BENIGN, LAYER2], edit=_set_layer("digest", _sha(b"something else"))),
        "not found in the archive"),
    "wrong layer size in the manifest": (lambda: oci_archive(
        [BENIGN, LAYER2], edit=_set_layer("size", len(LAYER2) + 1)),
        f"size is {len(LAYER2)}, descriptor says {len(LAYER2) + 1}"),
    "blob bytes differ from its digest": (lambda: oci_archive(
        [BENIGN, LAYER2], blobs=_swap_blob), "does not match its name"),
    "unknown layer media type": (lambda: oci_archive(
        [BENIGN, LAYER2], edit=_set_layer("mediaType", "application/vnd.example.unknown")),
        "unsupported media type application/vnd.example.unknown"),
    "manifest blob missing": (lambda: oci_archive(
        [BENIGN], blobs=_drop_manifests),
        "not found in the archive"),
}

# A few of the unpack tests' hostile layers, each on top of a good layer so the
# load has committed something to roll back when it fails.
HOSTILE = ["dotdot escape", "absolute hardlink to a host file", "symlink then write through",
           "hardlink to outside", "whiteout of a path outside", "overlay xattr smuggled in",
           "huge pax header", "directory replaced by file"]


def _store_state(k: Ketchd) -> dict[str, Any]:
    image_root = k.root / "image"
    return {
        "images": ok(docker(k, "images", "-a", "--no-trunc", "--format",
                            "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}")),
        "blobs": sorted(str(p.relative_to(image_root))
                        for p in (image_root / "content").rglob("*") if p.is_file()
                        and "ingest" not in p.parts),
        "ingest": sorted(p.name for p in (image_root / "content" / "ingest").glob("*")),
        "snapshots": sorted(str(p.relative_to(image_root))
                            for p in (image_root / "snapshots").glob("snapshots/*")),
    }


def _host_files() -> dict[str, str]:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest()
            for p in ("/etc/passwd", "/etc/hostname", "/etc/hosts") if Path(p).exists()}


@pytest.fixture(scope="module")
def loaded(busybox_archive: Path) -> Iterator[Ketchd]:  # noqa: F811
    """One ketchd holding busybox for all the bad loads, each of which must leave it as it was.

    Module-scoped (start_ketchd is per test) because a daemon start and a
    busybox load cost about a second, and sharing it also shows that refused
    loads do not add up to damage.
    """
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-d", dir="/tmp"))
    k = Ketchd(d, None)  # type: ignore[arg-type]
    write_private_config(k)
    with open(d / "ketchd.log", "wb") as log:
        k.proc = subprocess.Popen(k.args(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        _wait_ready(k, None)
        load_into_ketchd(k, busybox_archive)
        yield k
    finally:
        k.stop()
        stop_supervisor(k)
        _unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def _refused(k: Ketchd, data: bytes) -> str:
    before, host = _store_state(k), _host_files()
    archive = k.dir / "bad.tar"
    archive.write_bytes(data)
    out = docker(k, "load", "-i", str(archive))
    if out.returncode == 0:
        # Wrongly accepted: take it out again so the module's other cases start clean.
        for line in out.stdout.splitlines():
            docker(k, "rmi", "-f", line.rpartition(" ")[2])
    assert out.returncode == 1, out
    assert out.stderr.strip() and "Traceback" not in out.stderr + k.log()
    assert _store_state(k) == before
    from ketch.image.service import ImageService

    assert ImageService(k.root / "image").check() == []
    assert _host_files() == host
    assert not [p for p in k.dir.rglob("evil")], "a hostile layer wrote outside its root"
    return out.stderr


# Refused by dockerd 20.10, accepted by ketchd: see each reason.
BAD_ARCHIVE_XFAILS: dict[str, str] = {}


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=BAD_ARCHIVE_XFAILS[c]))
    if c in BAD_ARCHIVE_XFAILS else c for c in BAD_ARCHIVES])
def test_bad_archive_is_refused_and_changes_nothing(loaded: Ketchd, case: str) -> None:
    build, message = BAD_ARCHIVES[case]
    err = _refused(loaded, build())
    assert err.startswith("Error response from daemon: invalid image archive: "), err
    assert message in err


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_layer_is_refused_and_changes_nothing(loaded: Ketchd, case: str) -> None:
    entries, opts = MALICIOUS[case]
    err = _refused(loaded, docker_archive([BENIGN, _bytes_for(entries, opts)]))
    # The message names the entry (or the header) that was refused.
    assert err.startswith("Error response from daemon: layer "), err
    names = [e.name for e in entries or []]
    assert any(repr(n) in err for n in names) or "header" in err, err


def test_load_of_an_untagged_image_prints_its_id(ref_dockerd: RefDockerd,  # noqa: F811
                                                 multi_archive: Path, ketchd: Ketchd,
                                                 scratch: Path) -> None:
    """Saved by ID, an image has no RepoTags; both engines name it by ID and tag nothing."""
    d, k = ref_dockerd, ketchd
    image_id = d.image_id(MULTI)
    by_id = d.save(scratch / "by-id.tar", image_id)
    assert saved_one(by_id).repo_tags == []
    want = d.load(by_id)
    assert want == f"Loaded image ID: {image_id}\n"
    assert load_into_ketchd(k, by_id) == want
    fmt = ("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert ok(docker(k, *fmt)) == f"<none>:<none> {image_id}\n"


def test_load_moving_a_tag_says_so(ref_dockerd: RefDockerd,  # noqa: F811
                                   multi_archive: Path, ketchd: Ketchd) -> None:
    d, k = ref_dockerd, ketchd
    load_into_ketchd(k, multi_archive)
    other = k.dir / "other.tar"
    other.write_bytes(docker_archive([BENIGN], tag="diff/moved:1"))
    ok(docker(k, "tag", MULTI, "diff/moved:1"))
    d.ok("tag", MULTI, "diff/moved:1")
    try:
        want = d.load(other)
    finally:
        d.cli("rmi", "diff/moved:1")
    assert want.startswith("The image diff/moved:1 already exists, renaming the old one with "
                           f"ID {d.image_id(MULTI)} to empty string\n")
    assert load_into_ketchd(k, other) == want



def _is_oci_layout(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            return "index.json" in tf.getnames()
    except (tarfile.TarError, EOFError, OSError):
        return False


def test_dockerd_refuses_the_bad_docker_archives_too(ref_dockerd: RefDockerd,  # noqa: F811
                                                     scratch: Path) -> None:
    """The corpus is bad by the reference's judgment too, not only by ketch's.

    Only the docker-save shaped cases: dockerd 20.10 reads no OCI layouts at all.
    (For hostile layers dockerd is laxer than ketch: it sanitises ``../`` names
    and ignores foreign xattrs, so those are ketch's own rules.)
    """
    d = ref_dockerd
    for name, (build, _message) in BAD_ARCHIVES.items():
        data = build()
        if _is_oci_layout(data):
            continue
        archive = scratch / "bad.tar"
        archive.write_bytes(data)
        out = d.cli("load", "-i", str(archive))
        if out.returncode == 0:
            d.cli("rmi", "bad/image:1")
        assert out.returncode == 1, f"dockerd loaded {name!r}: {out}"
