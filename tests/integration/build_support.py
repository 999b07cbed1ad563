"""Shared pieces of the build tests: two engines that build, and what a built image is.

The engines: Debian's dockerd 20.10 and a private ketchd, each in a network
namespace of its own (netns_dockerd.py), so RUN steps get each engine's
default bridge without touching the host's network, and both see the same
empty world. Both are driven by the same docker CLI (28.x) with
``DOCKER_BUILDKIT=0``: that CLI, without buildx, then speaks the legacy
builder API (``POST /build`` with a tar context and a JSON stream back),
which is what dockerd 20.10 serves and what ketchd must answer like it.
Both get ``busybox:latest`` from the same rootfs tar through ``docker import``.

What a built image is, as the tests compare it (``Built``):

- its files: a container of it exported (``docker export``), every entry's
  path, type, mode, owner, size, link target and content hash; whether a
  file kept the fixed mtime its build context gave it (``CONTEXT_MTIME``),
  since files made by RUN carry the time of the build. The stubs the
  runtime adds to every container (/etc/hosts, /etc/hostname,
  /etc/resolv.conf, /.dockerenv, /dev, /proc, /sys) are not the image's;
- its config fields a Dockerfile sets (``CONFIG_KEYS``);
- its history from the image config (``docker save``): the number of layers
  with content and each row's ``created_by`` in BuildKit's form
  (``normalise_created_by``), since ketch writes BuildKit's forms and the
  legacy builder its own.

``KETCH_BUILDDIFF_SELFCHECK=1`` puts a second dockerd where ketchd would be:
every scenario must then pass, which shows the scenario and its
normalisation are sound.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import PREFIX
from tests.integration.engines import IMAGE_PATH, Result, write_image_tar
from tests.integration.netns_dockerd import Netns, NetnsDockerd, NetnsKetchd, remove_dir
from tests.integration.test_container_differential import Side
from tests.integration.test_daemon_system import (
    DOCKER,
    Ketchd,
    _wait_ready,
    write_private_config,
)

SELFCHECK = os.environ.get("KETCH_BUILDDIFF_SELFCHECK") == "1"
BASE = "busybox:latest"
# Every file and directory of a test's build context gets this mtime, so a file
# COPY'd or ADD'ed into an image can be told from one a RUN wrote at build time.
CONTEXT_MTIME = 1_600_000_000
# What ``docker image inspect``'s Config says that a Dockerfile decides.
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
               "Labels", "Healthcheck", "StopSignal", "OnBuild", "Shell")
STRING_KEYS = ("WorkingDir", "User", "StopSignal")
# Paths of every container that the runtime, not the image, provides.
# dockerd's init layer adds /etc/mtab -> /proc/mounts to every container, not to images.
RUNTIME_STUBS = ("etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv", "etc/mtab")
RUNTIME_TREES = ("dev", "proc", "sys")


# --------------------------------------------------------------------- the engines

class BuildSide(Side):
    """One engine as the docker CLI reaches it, with the legacy builder."""

    def build(self, context: Path, *args: str, timeout: float = 300) -> Result:
        """``docker build [args] context`` as a user types it."""
        return self.cli("build", *args, str(context), timeout=timeout)

    def image_id(self, ref: str) -> str:
        res = self.cli("image", "inspect", "--format", "{{.Id}}", ref)
        assert res.returncode == 0, str(res)
        return res.stdout.strip()

    def has_image(self, ref: str) -> bool:
        return self.cli("image", "inspect", ref).returncode == 0


def _env(base: dict[str, str], host: str, config: Path) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("DOCKER_")}
    # The legacy builder on both sides: the CLI has no buildx here, and dockerd
    # 20.10's BuildKit is not what ketch is compared with.
    env.update(DOCKER_HOST=host, DOCKER_CONFIG=str(config), DOCKER_BUILDKIT="0")
    return env


def _import_busybox(side: BuildSide, rootfs: Path, scratch: Path) -> None:
    """The same rootfs tar, imported the same way, on both engines."""
    tar = write_image_tar(rootfs, scratch / f"busybox-{side.name}.tar")
    try:
        res = side.cli("import", "--change", f"ENV PATH={IMAGE_PATH}", "-", BASE,
                       input=tar.read_bytes(), timeout=120)
    finally:
        tar.unlink()
    assert res.returncode == 0, str(res)


@contextlib.contextmanager
def netns_dockerd(name: str, rootfs: Path, scratch: Path, side_name: str) -> Iterator[BuildSide]:
    """A private dockerd 20.10 with its bridge and iptables, in a netns of its own."""
    assert DOCKER is not None
    netns = Netns()
    name = f"{name}-{secrets.token_hex(2)}"
    d = NetnsDockerd(Path(tempfile.gettempdir()) / f"{PREFIX}-{name}", f"/{PREFIX}/{name}",
                     netns, docker=DOCKER)
    problems: list[str] = []
    try:
        d.start()
        side = BuildSide(side_name, _env(d.env, f"unix://{d.sock}", d.base / "cli"),
                         d.base, d.log)
        _import_busybox(side, rootfs, scratch)
        yield side
    finally:
        try:
            problems = d.stop()
        finally:
            netns.close()
        assert not problems, "dockerd teardown:\n" + "\n".join(problems)


@contextlib.contextmanager
def netns_ketchd(rootfs: Path, scratch: Path) -> Iterator[BuildSide]:
    """A private ketchd (own dirs, bridge name, cgroup parent) in a netns of its own."""
    netns = Netns()
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-bk", dir="/tmp"))
    k = Ketchd(d, None)  # type: ignore[arg-type]
    write_private_config(k)
    (d / "cli").mkdir()
    side = BuildSide("ketchd", _env(dict(os.environ), k.host, d / "cli"), k.root,
                     d / "ketchd.log")
    nk = NetnsKetchd(k, netns)
    problems: list[str] = []
    try:
        nk.start(side.log)
        _wait_ready(k, None)
        _import_busybox(side, rootfs, scratch)
        yield side
    finally:
        try:
            problems = nk.stop()
        finally:
            netns.close()
            problems += remove_dir(d)
        assert not problems, "ketchd teardown:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def build_scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-bs", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def build_dockerd(busybox_rootfs: Path, build_scratch: Path) -> Iterator[BuildSide]:
    with netns_dockerd("bd", busybox_rootfs, build_scratch, "dockerd") as side:
        yield side


@pytest.fixture(scope="session")
def build_ketchd(busybox_rootfs: Path, build_scratch: Path) -> Iterator[BuildSide]:
    """ketchd; with KETCH_BUILDDIFF_SELFCHECK=1 a second dockerd in its place."""
    if SELFCHECK:
        with netns_dockerd("bd2", busybox_rootfs, build_scratch, "ketchd") as side:
            yield side
        return
    with netns_ketchd(busybox_rootfs, build_scratch) as side:
        yield side


# --------------------------------------------------------------------- build contexts

def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    """A build context: ``files`` maps a relative path to its content; a path
    ending in ``/`` is an (empty) directory, content ``"->target"`` a symlink.
    Every entry gets ``CONTEXT_MTIME``, so both engines read identical trees."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        elif isinstance(content, str) and content.startswith("->"):
            p.symlink_to(content[2:])
        else:
            p.write_bytes(content.encode() if isinstance(content, str) else content)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            os.utime(os.path.join(dirpath, name), (CONTEXT_MTIME, CONTEXT_MTIME),
                     follow_symlinks=False)
    os.utime(root, (CONTEXT_MTIME, CONTEXT_MTIME))
    return root


def tar_gz(files: dict[str, bytes], mode: int = 0o640, uid: int = 0) -> bytes:
    """A gzipped tar of regular files (for ADD's auto-extraction), with fixed mtimes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        dirs: set[str] = set()
        for name, data in files.items():
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, CONTEXT_MTIME
                    tf.addfile(ti)
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = len(data), mode, CONTEXT_MTIME, uid, uid
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------- what an image is

@dataclass(frozen=True)
class Node:
    """One path of an image's filesystem, as a container of it shows it."""

    kind: str               # "f", "d", "l" (symlink), "h" (hardlink), "c", "b", "p"
    mode: int
    uid: int
    gid: int
    size: int = 0
    link: str = ""
    sha256: str = ""
    from_context: bool = False      # a non-directory that kept CONTEXT_MTIME

    def __str__(self) -> str:
        extra = f" -> {self.link}" if self.link else ""
        digest = f" {self.sha256[:12]}" if self.sha256 else ""
        ctx = " ctx-mtime" if self.from_context else ""
        return f"{self.kind} {self.mode:04o} {self.uid}:{self.gid} {self.size}{digest}{extra}{ctx}"


_KINDS = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d",
          tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c",
          tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}


def _norm(name: str) -> str:
    name = name.strip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or "."


def _runtime_stub(path: str) -> bool:
    return path in RUNTIME_STUBS or any(path == t or path.startswith(t + "/")
                                        for t in RUNTIME_TREES)


def tree_of_tar(data: bytes) -> dict[str, Node]:
    out: dict[str, Node] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        for m in tf:
            path = _norm(m.name)
            if _runtime_stub(path) or path == ".":
                continue
            digest = ""
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                digest = hashlib.sha256(f.read()).hexdigest()
            kind = _KINDS.get(m.type, repr(m.type))
            out[path] = Node(kind, stat.S_IMODE(m.mode), m.uid, m.gid,
                             m.size if m.isfile() else 0,
                             _norm(m.linkname) if m.islnk() else m.linkname, digest,
                             kind != "d" and int(m.mtime) == CONTEXT_MTIME)
    return out


def export_tree(side: BuildSide, image: str, scratch: Path) -> dict[str, Node]:
    """The files of ``image`` as ``docker export`` of a (never started) container shows them."""
    res = side.cli("create", "--network", "none", "--entrypoint", "/bin/true", image)
    assert res.returncode == 0, str(res)
    cid = res.stdout.strip()
    dest = scratch / f"export-{side.name}-{secrets.token_hex(4)}.tar"
    try:
        res = side.cli("export", "-o", str(dest), cid, timeout=120)
        assert res.returncode == 0, str(res)
        return tree_of_tar(dest.read_bytes())
    finally:
        side.cli("rm", "-f", cid)
        dest.unlink(missing_ok=True)


@dataclass
class Built:
    """What the tests compare of one built image."""

    config: dict[str, Any]
    author: str
    layers: int                         # layers with content (not the empty tar)
    history: list[tuple[str, bool]]     # (created_by normalised, empty)
    tree: dict[str, Node]


# The diff ID of an empty layer tar: dockerd's legacy builder commits one for a
# WORKDIR whose directory exists; BuildKit commits none. Either way nothing changed.
EMPTY_TAR = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def saved_config(side: BuildSide, image: str, scratch: Path) -> dict[str, Any]:
    """The image config JSON as ``docker save`` writes it (history with empty_layer)."""
    dest = scratch / f"save-{side.name}-{secrets.token_hex(4)}.tar"
    try:
        res = side.cli("save", "-o", str(dest), image, timeout=120)
        assert res.returncode == 0, str(res)
        with tarfile.open(dest) as tf:
            manifest_f = tf.extractfile("manifest.json")
            assert manifest_f is not None
            manifest = json.load(manifest_f)
            config_f = tf.extractfile(manifest[0]["Config"])
            assert config_f is not None
            doc: dict[str, Any] = json.load(config_f)
            return doc
    finally:
        dest.unlink(missing_ok=True)


def history_rows(doc: dict[str, Any]) -> list[tuple[str, bool]]:
    """(created_by normalised, empty) per history row; a row whose layer is the
    empty tar counts as empty, and rows BuildKit does not write are left out."""
    diff_ids = iter(doc.get("rootfs", {}).get("diff_ids", []))
    rows = []
    for h in doc.get("history", []):
        empty = bool(h.get("empty_layer"))
        if not empty:
            empty = next(diff_ids, EMPTY_TAR) == EMPTY_TAR
        text = normalise_created_by(h.get("created_by") or "")
        if text is not None:
            rows.append((text, empty))
    return rows


def built(side: BuildSide, image: str, scratch: Path) -> Built:
    doc = saved_config(side, image, scratch)
    # The config as the API shows it (``docker image inspect``), which is what
    # users and tools read; the saved config for the history and layers.
    res = side.cli("image", "inspect", image)
    assert res.returncode == 0, str(res)
    cfg = json.loads(res.stdout)[0].get("Config") or {}
    layers = [d for d in doc.get("rootfs", {}).get("diff_ids", []) if d != EMPTY_TAR]
    # null and "" for an unset string are told apart by test_inspect_empty_strings
    # alone, so that one difference does not hide the others here.
    config = {k: ("" if cfg.get(k) is None and k in STRING_KEYS else cfg.get(k))
              for k in CONFIG_KEYS}
    return Built(config, str(doc.get("author", "")),
                 len(layers), history_rows(doc), export_tree(side, image, scratch))


# The legacy builder's metadata rows: the shell in force, "#(nop)", the instruction.
_NOP = re.compile(r"^.*?#\(nop\)\s+")
_BUILDKIT = re.compile(r"\s*# buildkit$")
# Its COPY/ADD rows name the sources by a content hash ("COPY file:<hex> in /dst ").
# With a flag it writes no space before the hash ("COPY --chown=1:1file:<hex> in /d ").
_LEGACY_COPY = re.compile(r"^(COPY|ADD) (.*?)(?:multi|file|dir):[0-9a-f]+ in (.*?)\s*$")
# Its HEALTHCHECK row is Go's %q of the struct before StartInterval existed.
_LEGACY_HEALTH = re.compile(r'^(HEALTHCHECK &\{\[.*\] "[^"]*" "[^"]*" "[^"]*") (\'.*\'\})$')
INSTRUCTIONS = ("FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
                "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
                "HEALTHCHECK", "SHELL")


def normalise_created_by(text: str) -> str | None:
    """A history row in BuildKit's form (ketch's claim), whichever builder wrote it.

    BuildKit (dockerfile2llb's commitToHistory): ``RUN <argv joined> # buildkit``,
    ``COPY [--chown=..] <srcs> <dest> # buildkit``, ``EXPOSE map[80/tcp:{}]``,
    ``HEALTHCHECK &{... "0s" '\x03'}``, no row for ONBUILD, the rest as the
    instruction's words. The legacy builder: the RUN argv alone, the others after
    ``<shell> #(nop) ``, COPY sources as content hashes, EXPOSE as written, ONBUILD
    rows. Both become the BuildKit form without the ``# buildkit`` marker and with
    COPY/ADD sources dropped (the legacy builder does not name them); None for a
    row BuildKit does not write.
    """
    text = _BUILDKIT.sub("", text.strip())
    if not text:
        return ""
    if _NOP.match(text):
        text = _NOP.sub("", text)
        m = _LEGACY_COPY.match(text)
        if m:
            return " ".join([m.group(1), *m.group(2).split(), m.group(3)])
        if text.startswith("ONBUILD "):
            return None
        if text.startswith("ARG "):
            return normalise_created_by(text)
        if text.startswith("EXPOSE "):
            return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in port_set(text.split()[1:])) + "]"
        text = _LEGACY_HEALTH.sub(r'\1 "0s" \2', text)
        return text
    word = text.split(" ", 1)[0]
    if word == "ARG":
        # Names only: the legacy builder writes the Dockerfile's words (``ARG V=default``
        # even under --build-arg V=x, ``ARG BASE`` for a global one), BuildKit the value
        # in force (``ARG V=x``, ``ARG BASE=busybox``); the RUN rows show the values.
        return "ARG " + " ".join(w.split("=", 1)[0] for w in text.split()[1:])
    if word not in INSTRUCTIONS:
        return "RUN " + text            # the legacy builder's RUN row: the argv alone
    if word in ("COPY", "ADD"):
        words = text.split(" ")
        return " ".join([word, *(w for w in words[1:-1] if w.startswith("--")), words[-1]])
    return text


def port_set(specs: list[str]) -> list[str]:
    """EXPOSE's words as the keys of Go's nat.PortSet in its %v order: a protocol
    on each (tcp by default), ranges expanded, sorted as strings."""
    ports = set()
    for spec in specs:
        port, _, proto = spec.partition("/")
        first, _, last = port.partition("-")
        for n in range(int(first), int(last or first) + 1):
            ports.add(f"{n}/{proto or 'tcp'}")
    return sorted(ports)


def tree_diff(want: dict[str, Node], got: dict[str, Node], limit: int = 40) -> str:
    """dockerd's entries (-) against ketchd's (+), path by path."""
    lines = []
    for path in sorted(set(want) | set(got)):
        a, b = want.get(path), got.get(path)
        if a != b:
            lines.append(f"  {path}:\n    - {a}\n    + {b}")
    more = f"\n  ... {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more
