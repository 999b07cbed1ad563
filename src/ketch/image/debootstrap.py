"""Debian root filesystems made with debootstrap: ``ketch image bootstrap debian:<suite>``.

The client side of the command, as the CLI uses it (it runs as root)::

    ref = parse_debian_reference("debian:bookworm")     # suite, tag, version
    tree = debootstrap_rootfs(dest, ref.suite, progress=show)
    diff_id, size = rootfs_tar(tree.path, out)           # the body of a docker import
    changes, message = image_changes(ref.suite), history_comment(ref.suite)

Why it is built this way:

* The packages come from the host's own Debian mirror (its apt sources),
  because that is the mirror the host is known to reach; ``--mirror`` wins.
  What is written *into* the image is always deb.debian.org, so an image
  does not carry one host's proxy or snapshot URL around.
* Like ``bootstrap.busybox_rootfs``, the tree is built in a temporary
  directory beside ``dest`` and renamed into place, and a missing host tool
  is a ``NotFound`` naming the Debian package (``scripts/install-system-packages``
  installs it); nothing here runs apt-get on the host behind the caller's back.
* debootstrap mounts proc and sys inside the target for its second stage and
  unmounts them from an exit trap, which a kill skips. Every mount below the
  target is therefore undone (deepest first) before the tree is removed or
  read: removing a tree with a live sysfs or a bind of the host's /dev in
  it would delete host files, and reading one would put them in the image.
* The tree is then tidied the way Docker's official debian images are
  (see ``tidy_rootfs``), and the tar is ``diff.write_layer`` over the whole
  tree: sorted, numeric owners, xattrs, mtimes as on disk, so one tree
  always gives one diff_id.
"""

from __future__ import annotations

import collections
import glob
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from ketch.errors import Conflict, Forbidden, InvalidArgument, NotFound, NotSupported, System
from ketch.image.reference import DEFAULT_DOMAIN, DEFAULT_TAG, OFFICIAL_PREFIX, normalize

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What the image's own apt sources name: Debian's CDN, as in the official images.
IMAGE_MIRROR = "http://deb.debian.org/debian"
IMAGE_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPOSITORY = "debian"
VARIANTS = ("minbase", "buildd")
MIRROR_SCHEMES = ("http://", "https://", "file:")


@dataclass(frozen=True, slots=True)
class Suite:
    codename: str
    version: str | None  # "12"; None for sid, which never gets a number


# The releases this can build: the ones the Debian archive (and the installed
# debootstrap and keyring) serve today. Older ones moved to archive.debian.org.
SUITES: dict[str, Suite] = {
    "bullseye": Suite("bullseye", "11"),
    "bookworm": Suite("bookworm", "12"),
    "trixie": Suite("trixie", "13"),
    "sid": Suite("sid", None),
}
# Tags Docker Hub's debian repository also has, meaning one of the above.
# "latest"/"stable"/"oldstable" move when Debian releases; this table is the
# one place to update then. "testing" is refused: it is forky, which the
# installed debootstrap does not know yet.
ALIASES: dict[str, str] = {
    "11": "bullseye", "12": "bookworm", "13": "trixie",
    "unstable": "sid",
    "latest": "trixie", "stable": "trixie", "oldstable": "bookworm",
}
# Every Debian codename and archive alias: how a host's apt source is told to
# be a Debian archive (and not Ubuntu's, a PPA or a vendor repository).
_DEBIAN_DISTS = frozenset({
    "buzz", "rex", "bo", "hamm", "slink", "potato", "woody", "sarge", "etch", "lenny",
    "squeeze", "wheezy", "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie",
    "forky", "duke", "sid", "oldoldstable", "oldstable", "stable", "testing", "unstable",
    "experimental",
})
# dpkg's architecture names to OCI's (image config "architecture", "variant").
DPKG_TO_OCI: dict[str, tuple[str, str]] = {
    "amd64": ("amd64", ""), "arm64": ("arm64", "v8"), "armhf": ("arm", "v7"),
    "armel": ("arm", "v5"), "i386": ("386", ""), "ppc64el": ("ppc64le", ""),
    "s390x": ("s390x", ""), "riscv64": ("riscv64", ""), "mips64el": ("mips64le", ""),
}
# Architectures a host runs without emulation, besides its own.
_NATIVE_EXTRA: dict[str, tuple[str, ...]] = {"amd64": ("i386",), "arm64": ("armhf", "armel")}


def supported_tags() -> list[str]:
    return [*SUITES, *ALIASES]


def resolve_suite(name: str) -> Suite:
    """The release a tag or suite name means; ``InvalidArgument`` listing the choices."""
    codename = ALIASES.get(name, name)
    suite = SUITES.get(codename)
    if suite is None:
        raise InvalidArgument(
            f"unsupported Debian release {name!r}: supported are "
            f"{', '.join(SUITES)} (and the tags {', '.join(ALIASES)})")
    return suite


# -- references ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DebianRef:
    """What ``debian:<tag>`` asks for: the image name to create and the suite to build."""

    tag: str  # as typed: "bookworm", "12", "latest"
    suite: str  # the codename given to debootstrap
    version: str | None
    repository: str = REPOSITORY

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


def is_debian_reference(s: str) -> bool:
    """Whether ``s`` names the debian repository (so ``bootstrap`` should use debootstrap)."""
    try:
        r = normalize(s)
    except InvalidArgument:
        return False
    return r.domain == DEFAULT_DOMAIN and r.path == OFFICIAL_PREFIX + REPOSITORY


def parse_debian_reference(s: str) -> DebianRef:
    """``debian``, ``debian:bookworm``, ``debian:12``, ``docker.io/library/debian:trixie``."""
    r = normalize(s)
    if r.domain != DEFAULT_DOMAIN or r.path != OFFICIAL_PREFIX + REPOSITORY:
        raise InvalidArgument(f"{s}: only the debian repository can be made with debootstrap "
                              "(debian:<release>)")
    if r.digest:
        raise InvalidArgument(f"{s}: a bootstrapped image has no registry digest; "
                              "name it by tag (debian:<release>)")
    tag = r.tag or DEFAULT_TAG
    suite = resolve_suite(tag)
    return DebianRef(tag=tag, suite=suite.codename, version=suite.version)


# -- the host's mirror ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AptSource:
    """One entry of the host's apt sources, in either file format."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str  # the file it came from, for messages
    enabled: bool = True


def _one_line_sources(path: str, text: str) -> list[AptSource]:
    """``deb [opt=val ...] uri suite component...``, the classic sources.list format."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.startswith("["):
            _, _, rest = rest.partition("]")
        words = rest.split()
        if kind not in ("deb", "deb-src") or len(words) < 2:
            continue
        out.append(AptSource((kind,), (words[0],), (words[1],), tuple(words[2:]), path))
    return out


def _deb822_sources(path: str, text: str) -> list[AptSource]:
    """The deb822 ``.sources`` format: paragraphs of ``Field: value`` (apt 1.1 and later)."""
    out = []
    paragraphs: list[dict[str, str]] = [{}]
    last = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if paragraphs[-1]:
                paragraphs.append({})
            continue
        if raw[0] in " \t" and last:
            paragraphs[-1][last] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        last = name.strip().lower()
        paragraphs[-1][last] = value.strip()
    for p in paragraphs:
        if not p.get("types") or not p.get("uris") or not p.get("suites"):
            continue
        enabled = p.get("enabled", "yes").strip().lower() not in ("no", "false", "0")
        out.append(AptSource(tuple(p["types"].split()), tuple(p["uris"].split()),
                             tuple(p["suites"].split()), tuple(p.get("components", "").split()),
                             path, enabled))
    return out


def read_apt_sources(root: str = "/") -> list[AptSource]:
    """The host's sources, in the order apt reads them (sources.list, then the directory)."""
    etc = os.path.join(root, "etc", "apt")
    files = [os.path.join(etc, "sources.list")]
    files += sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.list")) +
                    glob.glob(os.path.join(etc, "sources.list.d", "*.sources")))
    out: list[AptSource] = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        out += _deb822_sources(path, text) if path.endswith(".sources") else \
            _one_line_sources(path, text)
    return out


def host_mirror(root: str = "/") -> str:
    """The host's Debian archive mirror, or ``DEFAULT_MIRROR`` when it names none.

    A Debian archive entry is an enabled binary (``deb``) source with a plain
    Debian suite (``bookworm``, not ``bookworm-security`` or a vendor's
    ``cloud-sdk-bookworm``) and the ``main`` component, served over a scheme
    debootstrap can fetch from.
    """
    for src in read_apt_sources(root):
        if not src.enabled or "deb" not in src.types or "main" not in src.components:
            continue
        if not any(s in _DEBIAN_DISTS for s in src.suites):
            continue
        for uri in src.uris:
            if uri.startswith(MIRROR_SCHEMES):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def check_mirror(mirror: str) -> str:
    if not mirror.startswith(MIRROR_SCHEMES) or mirror in MIRROR_SCHEMES:
        raise InvalidArgument(f"invalid mirror {mirror!r}: expected an http://, https:// "
                              "or file: URL of a Debian archive")
    return mirror.rstrip("/")


# -- progress ---------------------------------------------------------------------

STEP_PREPARING = "Preparing"
STEP_LISTS = "Retrieving package lists"
STEP_RESOLVING = "Resolving dependencies"
STEP_RETRIEVING = "Retrieving packages"
STEP_EXTRACTING = "Extracting base system"
STEP_CORE = "Installing core packages"
STEP_BASE = "Installing base packages"
STEP_CONFIGURING = "Configuring"
STEP_INSTALLED = "Base system installed"
STEP_CLEANING = "Cleaning up"
STEP_DONE = "Done"

Level = Literal["info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Progress:
    """One step message for the CLI: show ``step`` when ``new_step``, ``detail`` if verbose.

    ``count`` is how many packages the step has handled so far (retrieved,
    extracted, unpacked or configured), 0 for steps that are not per package.
    """

    step: str
    detail: str = ""
    level: Level = "info"
    new_step: bool = False
    count: int = 0

    def __str__(self) -> str:
        """One line for a terminal: the step, or the warning or error."""
        if self.level == "warning":
            return f"W: {self.detail}"
        if self.level == "error":
            return f"E: {self.detail}"
        if self.new_step or not self.detail:
            return self.step
        return f"{self.step}: {self.detail}"


_LIST_FILES = ("InRelease", "Release", "Release.gpg", "Packages")


@dataclass(slots=True)
class ProgressParser:
    """Turns debootstrap's ``I:``/``W:``/``E:`` lines into ``Progress`` steps.

    It keeps the current step because some lines mean different things by
    position: ``Unpacking <pkg>...`` is part of the core packages or of the
    base system, depending on which came last.
    """

    step: str = ""
    count: int = 0
    _errors: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    def _to(self, step: str, detail: str, counted: bool = False) -> Progress:
        new = step != self.step
        if new:
            self.step, self.count = step, 0
        if counted:
            self.count += 1
        return Progress(step, detail, "info", new, self.count)

    def feed(self, line: str) -> Progress | None:
        line = line.rstrip("\n")
        level, sep, msg = line.partition(": ")
        if not sep or level not in ("I", "W", "E"):
            return None
        msg = msg.strip()
        if level == "W":
            return Progress(self.step or STEP_PREPARING, msg, "warning", False, self.count)
        if level == "E":
            self._errors.append(msg)
            return Progress(self.step or STEP_PREPARING, msg, "error", False, self.count)
        return self._info(msg)

    def _info(self, msg: str) -> Progress:
        word, _, rest = msg.partition(" ")
        rest = rest.strip()
        pkg = rest.removesuffix("...")
        if (word == "Retrieving" and rest in _LIST_FILES) or \
                msg.startswith(("Checking Release signature", "Valid Release signature",
                                 "Validating Packages")):
            return self._to(STEP_LISTS, msg)
        if msg.startswith(("Resolving dependencies", "Checking component", "Found ")):
            return self._to(STEP_RESOLVING, msg)
        if word == "Retrieving":
            return self._to(STEP_RETRIEVING, rest, counted=True)
        if word == "Validating":
            return self._to(STEP_RETRIEVING, rest)
        if msg.startswith("Chosen extractor"):
            return self._to(STEP_EXTRACTING, msg)
        if word == "Extracting":
            return self._to(STEP_EXTRACTING, pkg, counted=True)
        if msg.startswith(("Installing core packages", "Unpacking required packages")):
            return self._to(STEP_CORE, msg)
        if msg.startswith("Unpacking the base system"):
            return self._to(STEP_BASE, msg)
        if word == "Unpacking":
            step = self.step if self.step in (STEP_CORE, STEP_BASE) else STEP_CORE
            return self._to(step, pkg, counted=True)
        if msg.startswith(("Configuring required packages", "Configuring the base system")):
            return self._to(STEP_CONFIGURING, msg)
        if word == "Configuring":
            return self._to(STEP_CONFIGURING, pkg, counted=True)
        if msg.startswith("Base system installed"):
            return self._to(STEP_INSTALLED, msg)
        return self._to(self.step or STEP_PREPARING, msg)


# -- running debootstrap ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DebianRootfs:
    """What ``debootstrap_rootfs`` made; ``oci_arch``/``oci_variant`` go in the image config."""

    path: str
    suite: str
    mirror: str
    variant: str
    arch: str  # dpkg's name

    @property
    def oci_arch(self) -> str:
        return DPKG_TO_OCI.get(self.arch, (self.arch, ""))[0]

    @property
    def oci_variant(self) -> str:
        return DPKG_TO_OCI.get(self.arch, (self.arch, ""))[1]


def find_debootstrap() -> str:
    path = shutil.which("debootstrap") or shutil.which(
        "debootstrap", path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise NotFound("debootstrap was not found (install Debian's debootstrap package)")
    return path


def install_debootstrap(report: Callable[[Progress], None] | None = None) -> str:
    """``find_debootstrap``, installing Debian's package with apt-get first if it is missing.

    As the CLI does for busybox-static: one ``apt-get install``, and one
    ``apt-get update`` and a retry only if the package lists do not know it.
    """
    try:
        return find_debootstrap()
    except NotFound:
        if os.geteuid() != 0:
            raise
    if report is not None:
        report(Progress(STEP_PREPARING, "apt-get install debootstrap", new_step=True))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"]
    out = subprocess.run(install, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0 and "Unable to locate package" in out.stderr:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False, env=env)
        out = subprocess.run(install, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-3:])
        raise System(f"could not install debootstrap with apt-get: {tail}")
    return find_debootstrap()


def host_arch() -> str:
    """The host's architecture in dpkg's words (``amd64``), as debootstrap defaults to."""
    try:
        out = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                             text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except FileNotFoundError:
        pass
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386",
            "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def _check_arch(arch: str | None) -> str:
    host = host_arch()
    if arch is None or arch == host:
        return host
    if arch in _NATIVE_EXTRA.get(host, ()):
        return arch
    raise NotSupported(f"cannot bootstrap a {arch} system on this {host} host: its second "
                       "stage would need an emulator (binfmt_misc and qemu-user), which "
                       "ketch does not set up")


def mounts_below(path: str) -> list[str]:
    """Mount points strictly inside ``path``, deepest first."""
    from ketch.linux.mount import read_mountinfo

    base = os.path.realpath(path).rstrip("/") + "/"
    points = {m.mountpoint for m in read_mountinfo() if m.mountpoint.startswith(base)}
    return sorted(points, key=lambda p: (-p.count("/"), p))


def unmount_below(path: str) -> None:
    """Detach every mount inside ``path``; ``System`` naming any that stay."""
    from ketch.linux.syscalls import MNT_DETACH, LinuxSyscalls

    sc = LinuxSyscalls()
    for _ in range(3):  # a detach can reveal a mount stacked under the same point
        points = mounts_below(path)
        if not points:
            return
        for p in points:
            try:
                sc.umount2(p, MNT_DETACH)
            except OSError:
                pass  # checked below: what failed is still listed
    left = mounts_below(path)
    if left:
        raise System(f"could not unmount {', '.join(left)}; {path} was left in place")


def remove_tree(path: str) -> None:
    """Unmount what is inside ``path``, then delete it (never through a mount)."""
    if not os.path.lexists(path):
        return
    unmount_below(path)
    shutil.rmtree(path, ignore_errors=True)


def _log_tail(root: str, n: int = 8) -> list[str]:
    try:
        with open(os.path.join(root, "debootstrap", "debootstrap.log"),
                  errors="replace") as f:
            lines = [ln.rstrip() for ln in f if ln.strip()]
    except OSError:
        return []
    return lines[-n:]


def _failure(suite: str, rc: int, parser: ProgressParser, tail: list[str],
             log: list[str]) -> System:
    """The message for a failed run: its E: lines, else the last lines it and its log wrote."""
    why = parser.errors or [ln for ln in tail if ln.strip()][-5:]
    if log and not parser.errors:
        why += ["debootstrap.log:", *log]
    how = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
    text = "\n".join(why) if why else "no output"
    return System(f"debootstrap of Debian {suite} failed ({how}):\n{text}")


def debootstrap_rootfs(
    dest: str,
    suite: str = "bookworm",
    *,
    mirror: str | None = None,
    variant: str = "minbase",
    arch: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    debootstrap: str | None = None,
    install: bool = True,
    sources_root: str = "/",
) -> DebianRootfs:
    """Build a Debian ``suite`` tree at ``dest`` (which must not exist) with debootstrap.

    ``suite`` may be a codename or a tag of ``ALIASES``; ``mirror`` defaults
    to the host's (``host_mirror``). ``progress`` gets a ``Progress`` per
    line debootstrap reports, then the tidy-up steps. On failure the half
    made tree is unmounted and removed and ``System`` carries debootstrap's
    error lines. Needs root, as debootstrap does (chroot, mknod, mount).
    ``debootstrap`` is the program to run (found on PATH, and installed with
    apt-get when missing and ``install``).
    """
    codename = resolve_suite(suite).codename
    if variant not in VARIANTS:
        raise InvalidArgument(f"unsupported debootstrap variant {variant!r}: "
                              f"supported are {', '.join(VARIANTS)}")
    mirror = check_mirror(mirror) if mirror else host_mirror(sources_root)
    arch = _check_arch(arch)
    if os.geteuid() != 0:
        raise Forbidden("debootstrap needs root (it chroots, makes device nodes and mounts)")
    if os.path.lexists(dest):
        raise InvalidArgument(f"{dest} already exists")
    report = progress or (lambda _p: None)
    tool = debootstrap or (install_debootstrap(report) if install else find_debootstrap())
    parent = os.path.dirname(os.path.abspath(dest)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".debootstrap-", dir=parent)
    os.chmod(tmp, 0o755)
    cmd = [tool, f"--variant={variant}", f"--arch={arch}", codename, tmp, mirror]
    try:
        report(Progress(STEP_PREPARING, " ".join(["debootstrap", *cmd[1:]]), new_step=True))
        _run(cmd, codename, tmp, report)
        unmount_below(tmp)
        report(Progress(STEP_CLEANING, "apt caches, logs, host files", new_step=True))
        tidy_rootfs(tmp, codename)
        os.rename(tmp, dest)
    except BaseException:
        remove_tree(tmp)
        raise
    report(Progress(STEP_DONE, dest, new_step=True))
    return DebianRootfs(dest, codename, mirror, variant, arch)


def _run(cmd: list[str], suite: str, target: str, report: Callable[[Progress], None]) -> None:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"}
    parser = ProgressParser()
    tail: collections.deque[str] = collections.deque(maxlen=20)
    # Its own session, so an interrupt can stop debootstrap and the chrooted
    # dpkg under it together, and only them.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            text=True, errors="replace", bufsize=1)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            ev = parser.feed(line)
            if ev is not None:
                report(ev)
        rc = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if rc != 0:
        raise _failure(suite, rc, parser, list(tail), _log_tail(target))


def _stop(proc: subprocess.Popen[str]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue


# -- tidying, as Docker's debian images are -----------------------------------------

# apt and dpkg settings of the official images (their "minimizing config"),
# in our words: each is cheap and helps every later `RUN apt-get ...`.
_APT_CONF = {
    # A layer should not keep the .debs apt downloaded, nor its binary caches
    # (rebuilt from the lists in a second).
    "docker-clean": (
        "// Keep downloaded packages and apt's binary caches out of image layers.\n"
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\n'
        'Dir::Cache::srcpkgcache "";\n'),
    # Package lists stay compressed on disk: a smaller layer after apt-get update.
    "docker-gzip-indexes": (
        "// Store package lists compressed.\n"
        'Acquire::GzipIndexes "true";\n'
        'Acquire::CompressionTypes::Order:: "gz";\n'),
    # Translated descriptions are never read in a container.
    "docker-no-languages": (
        "// Do not fetch translated package descriptions.\n"
        'Acquire::Languages "none";\n'),
    # Suggested packages do not keep others from being autoremoved.
    "docker-autoremove-suggests": (
        "// Let autoremove remove packages that are only suggested.\n"
        'Apt::AutoRemove::SuggestsImportant "false";\n'),
}
# dpkg's fsyncs protect against power loss; a layer is committed after the
# build step anyway, and they make installs in containers several times slower.
_DPKG_CONF = {"docker-apt-speedup": "# No fsync per file: layers are committed after the step.\n"
                                    "force-unsafe-io\n"}
# No init runs in a container, so maintainer scripts must not try to start
# services (invoke-rc.d asks this script; 101 means "action forbidden").
_POLICY_RC_D = "#!/bin/sh\n# Containers run no init: do not start services from maintainer scripts.\nexit 101\n"


def _sources(suite: str) -> tuple[str, str]:
    """The image's own apt sources: (path below the root, content)."""
    updates = suite != "sid"
    if suite == "bullseye":  # the one-line format, as bullseye's images have it
        lines = [f"deb {IMAGE_MIRROR} {suite} main",
                 f"deb {IMAGE_SECURITY_MIRROR} {suite}-security main",
                 f"deb {IMAGE_MIRROR} {suite}-updates main"]
        return "etc/apt/sources.list", "\n".join(lines) + "\n"
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    suites = f"{suite} {suite}-updates" if updates else suite
    text = (f"Types: deb\nURIs: {IMAGE_MIRROR}\nSuites: {suites}\nComponents: main\n"
            f"Signed-By: {keyring}\n")
    if updates:
        text += (f"\nTypes: deb\nURIs: {IMAGE_SECURITY_MIRROR}\nSuites: {suite}-security\n"
                 f"Components: main\nSigned-By: {keyring}\n")
    return "etc/apt/sources.list.d/debian.sources", text


def _empty_dir(path: str, keep: tuple[str, ...] = ()) -> None:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        if name in keep:
            continue
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def _remove(root: str, *patterns: str) -> None:
    for pattern in patterns:
        for p in glob.glob(os.path.join(root, pattern)):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)


def _write(root: str, rel: str, text: str, mode: int = 0o644) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def tidy_rootfs(root: str, suite: str) -> None:
    """What Docker's debian images do after debootstrap, where cheap and sensible.

    * /dev emptied: debootstrap made device nodes for its chroot; a container
      gets its own /dev from the runtime, and a layer without nodes unpacks
      anywhere (also where mknod is not allowed).
    * The host's /etc/hostname and /etc/resolv.conf, which debootstrap copies
      in, removed: the engine provides both per container.
    * apt's downloaded .debs, binary caches and package lists removed (an
      ``apt-get update`` comes first in every Dockerfile anyway); the lists'
      ``partial`` and ``lock`` are kept as apt left them.
    * Logs of the bootstrap emptied, and files that only record this build
      (ldconfig's aux-cache, debconf's -old copies) removed; /etc/machine-id,
      if a package made one, emptied so each container is not one machine.
    * apt sources naming deb.debian.org (main, -updates, -security), and the
      official images' apt/dpkg settings and policy-rc.d (see ``_APT_CONF``).
    """
    _empty_dir(os.path.join(root, "dev"))
    _remove(root, "etc/hostname", "etc/resolv.conf",
            "var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*",
            "var/cache/apt/*.bin", "var/log/bootstrap.log", "var/cache/ldconfig/aux-cache",
            "var/cache/debconf/*-old", "etc/apt/sources.list")
    _empty_dir(os.path.join(root, "var/lib/apt/lists"), keep=("partial", "lock"))
    for pattern in ("var/log/*.log", "var/log/apt/*.log", "etc/machine-id"):
        for p in glob.glob(os.path.join(root, pattern)):
            if os.path.isfile(p) and not os.path.islink(p):
                os.truncate(p, 0)
    rel, text = _sources(suite)
    _write(root, rel, text)
    for name, conf in _APT_CONF.items():
        _write(root, f"etc/apt/apt.conf.d/{name}", conf)
    for name, conf in _DPKG_CONF.items():
        _write(root, f"etc/dpkg/dpkg.cfg.d/{name}", conf)
    _write(root, "usr/sbin/policy-rc.d", _POLICY_RC_D, 0o755)


# -- the import ---------------------------------------------------------------------


def rootfs_tar(root: str, out: BinaryIO) -> tuple[str, int]:
    """Write the whole tree at ``root`` as one layer tar; return (diff_id, size).

    It is ``diff.write_layer`` in naive mode with no parent: every entry,
    sorted, numeric owners, xattrs and mtimes kept, hard links as links, so
    the same tree always gives the same bytes. A tree with something
    mounted in it is refused rather than tarred through the mount.
    """
    from ketch.image.diff import write_layer

    if not os.path.isdir(root):
        raise NotFound(f"rootfs {root} is not a directory")
    left = mounts_below(root)
    if left:
        raise Conflict(f"{root} has mounts inside ({', '.join(left)}); unmount them first")
    return write_layer(root, out, lower_dirs=[], whiteout_mode="naive")


def image_changes(suite: str = "bookworm") -> list[str]:
    """The ``--change`` lines giving the config of Docker's debian images."""
    resolve_suite(suite)
    return ['CMD ["bash"]', f"ENV PATH={IMAGE_PATH}"]


def history_comment(suite: str = "bookworm", variant: str = "minbase") -> str:
    """The import message (the history comment): how the layer was made."""
    s = resolve_suite(suite)
    release = f"Debian {s.version} ({s.codename})" if s.version else f"Debian {s.codename}"
    return f"{release}, debootstrap --variant={variant}"
