"""Shared fixtures: a busybox rootfs, per-test bundles, private runtime roots.

Kernel hygiene: every test session gets its own prefix (``ketch-test-<pid>-<rand>``)
for state roots and cgroups; fixtures delete every container they made and
remove the cgroup parent leaf-first, also when a test fails; and the session
ends with a leak check that fails the run if anything with the prefix is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KETCH_TEST_CACHE", REPO / ".cache"))
# One prefix per test session. pytest imports this file as ``conftest`` and the
# test modules import it again as ``tests.conftest``: two module objects, so
# the value lives in the environment, where both (and any subprocess) find it.
PREFIX = os.environ.setdefault("KETCH_TEST_PREFIX",
                               f"ketch-test-{os.getpid()}-{secrets.token_hex(3)}")
BIN = Path(sys.executable).parent


def conformance_dir() -> Path:
    """The shared conformance data (BuildKit's parser cases, moby's .dockerignore cases):
    ``../shared/conformance`` beside the checkout, else $KETCH_CONFORMANCE, else the
    workplace's /work/shared/conformance (a clone made elsewhere, as CI's may be)."""
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "conformance"]
    if os.environ.get("KETCH_CONFORMANCE"):
        candidates.insert(0, Path(os.environ["KETCH_CONFORMANCE"]))
    candidates.append(Path("/work/shared/conformance"))
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_root():
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    """A busybox rootfs made from the host's busybox-static, built once and cached."""
    from ketch.image.bootstrap import busybox_rootfs as build

    dest = CACHE / "busybox-rootfs"
    if not (dest / "bin" / "busybox").exists():
        if dest.exists():
            shutil.rmtree(dest)
        build(str(dest))
    return dest


@pytest.fixture(scope="session")
def prefix() -> str:
    return PREFIX


class Bundles:
    """Makes OCI bundles (config.json + a private copy of the busybox rootfs)."""

    def __init__(self, base: Path, rootfs: Path) -> None:
        self.base = base
        self.rootfs = rootfs
        self.n = 0

    def make(self, args: list[str] | None = None, *, container_id: str | None = None,
             edit=None, terminal: bool = False, base: Path | None = None) -> Path:
        from ketch.jsonmodel import to_json
        from ketch.runtime.defaults import default_spec

        self.n += 1
        bundle = (base or self.base) / f"bundle{self.n}"
        bundle.mkdir()
        shutil.copytree(self.rootfs, bundle / "rootfs", symlinks=True)
        spec = to_json(default_spec())
        spec["process"]["terminal"] = terminal
        spec["process"]["args"] = args or ["true"]
        spec["root"]["readonly"] = False
        cid = container_id or f"c{self.n}"
        spec["linux"]["cgroupsPath"] = f"/{PREFIX}/{cid}"
        if edit is not None:
            edit(spec)
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        return bundle


@pytest.fixture
def bundles(tmp_path: Path, busybox_rootfs: Path) -> Bundles:
    return Bundles(tmp_path, busybox_rootfs)


def _cgroup_dirs(prefix: str) -> list[Path]:
    out = []
    base = Path("/sys/fs/cgroup")
    if not base.exists():
        return out
    for hierarchy in base.iterdir():
        p = hierarchy / prefix
        if p.is_dir():
            out.append(p)
    if (base / prefix).is_dir():
        out.append(base / prefix)
    return out


def remove_cgroup_tree(path: Path) -> None:
    """rmdir leaf-first; cgroup dirs cannot be removed with their control files.

    A cgroup whose child or last task just went may refuse rmdir (EBUSY) for a
    moment while the kernel releases it: retried for up to two seconds.
    """
    import errno

    for dirpath, _dirnames, _ in sorted(os.walk(path, topdown=False), key=lambda t: -len(t[0])):
        deadline = time.monotonic() + 2
        while True:
            try:
                os.rmdir(dirpath)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    break
                time.sleep(0.02)


@pytest.fixture
def runc_root(tmp_path: Path) -> Iterator[Path]:
    """A private ketch-runc --root; every container left in it is deleted afterwards."""
    root = Path("/run") / PREFIX / tmp_path.name
    root.mkdir(parents=True, exist_ok=True)
    yield root
    from ketch.runtime.container import Runtime

    rt = Runtime(str(root))
    for st in rt.containers():
        try:
            rt.delete(st.id, force=True)
        except Exception as exc:  # noqa: BLE001 - keep cleaning
            print(f"cleanup of {st.id} failed: {exc}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _leak_check() -> Iterator[None]:
    yield
    if not is_root():
        return
    leftovers = []
    stray = _processes_mentioning(PREFIX)
    for pid, args in stray:
        leftovers.append(f"process {pid} ({args[:120]})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # A killed process leaves its cgroup only once it is gone.
    deadline = time.monotonic() + 5
    while stray and _processes_mentioning(PREFIX) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in _cgroup_dirs(PREFIX):
        for dirpath, _, _ in os.walk(p):
            if dirpath != str(p):
                leftovers.append(dirpath)
        remove_cgroup_tree(p)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if PREFIX in line]
    run_dir = Path("/run") / PREFIX
    shutil.rmtree(run_dir, ignore_errors=True)
    if leftovers or mounts:
        pytest.fail(f"kernel state left behind: cgroups {leftovers} mounts {mounts}",
                    pytrace=False)


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Daemons and supervisors of this session still alive (their args name the prefix)."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    continue
        except OSError:
            continue
        if text in args and ("ketchd" in args or "ketch.engine.supervisor" in args):
            out.append((int(entry), args))
    return out


def ketch_runc(*args: str, root: Path, input: bytes | None = None, timeout: float = 60,
               **kw) -> subprocess.CompletedProcess:
    """Run the installed ``ketch-runc`` binary, as dockerd or podman would.

    Output goes through files, not pipes: a detached container inherits them
    and would otherwise keep the pipe open long after ketch-runc exited.
    """
    import tempfile

    cmd = [str(BIN / "ketch-runc"), "--root", str(root), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(cmd, input=input, stdout=out, stderr=err, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL, **kw)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def errmsg(out: subprocess.CompletedProcess) -> bytes:
    """The message of ketch-runc's logrus-style error line(s), unescaped."""
    import re

    msgs = []
    for line in out.stderr.decode(errors="replace").splitlines():
        m = re.search(r'level=error msg=("(?:[^"\\]|\\.)*")', line)
        msgs.append(json.loads(m.group(1)) if m else line)
    return "\n".join(msgs).encode()
