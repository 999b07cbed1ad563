"""debootstrap for real: a Debian bookworm rootfs, imported as an image and run.

debootstrap downloads from the host's Debian mirror once; the resulting tar
is cached in ``.cache`` under a name keyed by the source of
``ketch.image.debootstrap`` (a change to the tidy-up makes a new one), so
later runs only import and run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import CACHE, PREFIX

from ketch.errors import System
from ketch.image import debootstrap as db

pytestmark = pytest.mark.root

SUITE = "bookworm"


def _cache_key() -> str:
    src = Path(db.__file__).read_bytes()
    return hashlib.sha256(src).hexdigest()[:12]


@pytest.fixture(scope="session")
def debian_tar() -> Path:
    """The tidied bookworm rootfs as a tar, built once per change of the module."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"debian-{SUITE}-{_cache_key()}.tar"
    if tar.exists():
        return tar
    for old in CACHE.glob(f"debian-{SUITE}-*.tar"):
        old.unlink()
    tree = CACHE / f"{PREFIX}-debian"
    steps: list[str] = []

    def progress(p: db.Progress) -> None:
        if p.new_step:
            steps.append(p.step)

    start = time.monotonic()
    try:
        res = db.debootstrap_rootfs(str(tree), SUITE, progress=progress)
        built = time.monotonic() - start
        part = tar.with_suffix(".part")
        with open(part, "wb") as f:
            db.rootfs_tar(res.path, f)
        os.rename(part, tar)
        print(f"debootstrap {SUITE}: {built:.1f}s, tar {time.monotonic() - start - built:.1f}s,"
              f" {tar.stat().st_size >> 20} MiB from {res.mirror}", file=sys.stderr)
    finally:
        db.remove_tree(str(tree))
        tar.with_suffix(".part").unlink(missing_ok=True)
    assert steps[0] == db.STEP_PREPARING and steps[-1] == db.STEP_DONE
    assert {db.STEP_RETRIEVING, db.STEP_CONFIGURING, db.STEP_INSTALLED} <= set(steps)
    return tar


@pytest.fixture
def store() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-deb", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tar_is_tidied_like_dockers_debian(debian_tar: Path) -> None:
    with tarfile.open(debian_tar) as tf:
        members = {m.name: m for m in tf.getmembers()}
    names = list(members)
    assert names == sorted(names, key=lambda n: n.encode().split(b"/"))
    assert not [n for n in names if n.startswith("dev/")]
    assert not [n for n in names if n.endswith(".deb")]
    assert not [n for n in names if n.startswith("var/lib/apt/lists/") and
                n != "var/lib/apt/lists/partial"]
    assert "etc/hostname" not in members and "etc/resolv.conf" not in members
    assert "etc/apt/apt.conf.d/docker-clean" in members
    assert "etc/apt/sources.list.d/debian.sources" in members
    assert not [m for m in members.values() if m.ischr() or m.isblk()]
    assert all(m.uname == "" for m in members.values())
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"


def test_import_and_run_bash(debian_tar: Path, store: Path, runc_root: Path) -> None:
    from ketch.image.service import ImageService
    from ketch.image.snapshot.naive import NaiveSnapshotter
    from ketch.jsonmodel import to_json
    from ketch.runtime.container import CreateOptions, Runtime
    from ketch.runtime.defaults import default_spec

    svc = ImageService(store / "image",
                       snapshotter=NaiveSnapshotter(str(store / "image" / "snaps")))
    ref = db.parse_debian_reference("debian:bookworm")
    with open(debian_tar, "rb") as f:
        summary = svc.import_rootfs(f, ref.ref, changes=db.image_changes(ref.suite),
                                    message=db.history_comment(ref.suite))
    assert summary.repo_tags == ["debian:bookworm"]
    info = svc.inspect("debian:bookworm")
    assert info["Config"]["Cmd"] == ["bash"]
    assert info["Config"]["Env"] == [f"PATH={db.IMAGE_PATH}"]
    assert info["Comment"] == "Debian 12 (bookworm), debootstrap --variant=minbase"
    assert len(info["RootFS"]["Layers"]) == 1
    assert [h["Comment"] for h in svc.history("debian:bookworm")] == [info["Comment"]]

    mounts = svc.rootfs_mounts("debian:bookworm", "deb-ctr")
    tree = Path(mounts[0].source)
    assert (tree / "bin/bash").is_file() and os.access(tree / "usr/bin/bash", os.X_OK)
    assert (tree / "usr/bin/apt-get").is_file()
    assert re.fullmatch(r"12\.\d+\n", (tree / "etc/debian_version").read_text())

    spec = to_json(default_spec())
    spec["root"] = {"path": str(tree), "readonly": False}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["bash", "-c", "cat /etc/debian_version; echo $BASH_VERSION"]
    spec["process"]["env"] = [f"PATH={db.IMAGE_PATH}"]
    spec["linux"]["cgroupsPath"] = f"/{PREFIX}/deb"
    bundle = store / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    rt = Runtime(str(runc_root))
    r, w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        started = rt.create("deb", CreateOptions(bundle=str(bundle), stdio=(devnull, w, w)))
    finally:
        os.close(w)
        os.close(devnull)
    rt.start("deb")
    _, status = os.waitpid(started.pid, 0)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    if started.pidfd is not None:
        os.close(started.pidfd)
    rt.delete("deb")
    assert os.WEXITSTATUS(status) == 0, out
    assert re.fullmatch(rb"12\.\d+\n5\.2\.\S+\n", out), out


def _fake(tmp: Path, body: str) -> str:
    script = tmp / "fake-debootstrap"
    script.write_text("#!/bin/sh\ntarget=\"$4\"\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def _mounted_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(str(path) + "/")]


def test_failure_unmounts_what_debootstrap_left(store: Path) -> None:
    # debootstrap mounts proc and sys in the target and unmounts them from an
    # exit trap; killed, it leaves them. Here the stand-in leaves them on purpose.
    fake = _fake(store, """\
        mkdir -p "$target/proc" "$target/sys" "$target/dev/pts"
        mount -t proc proc "$target/proc"
        mount -t sysfs sysfs "$target/sys"
        mount -t tmpfs tmpfs "$target/dev"
        mkdir "$target/dev/pts" && mount -t tmpfs tmpfs "$target/dev/pts"
        echo "E: Couldn't install"
        exit 1
        """)
    out = store / "out"
    try:
        with pytest.raises(System, match=re.escape("(exit status 1):\nCouldn't install")):
            db.debootstrap_rootfs(str(out / "rootfs"), debootstrap=fake,
                                  mirror="http://127.0.0.1:9/debian")
        assert _mounted_below(out) == []
        assert list(out.iterdir()) == []
        assert Path("/proc/self/status").exists() and Path("/sys/kernel").is_dir()
    finally:
        db.unmount_below(str(out))


def test_unreachable_mirror_is_a_clear_error(store: Path) -> None:
    # Port 9 on loopback refuses at once: no network beyond this host.
    with pytest.raises(System) as e:
        db.debootstrap_rootfs(str(store / "rootfs"), SUITE, mirror="http://127.0.0.1:9/debian")
    msg = str(e.value)
    assert msg.startswith("debootstrap of Debian bookworm failed (exit status 1):\n")
    assert "release file" in msg.lower() and "127.0.0.1:9" in msg
    assert list(store.iterdir()) == []


def test_rootfs_tar_refuses_a_tree_with_mounts(store: Path) -> None:
    from ketch.errors import Conflict

    (store / "proc").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(store / "proc")], check=True)
    try:
        with pytest.raises(Conflict, match="has mounts inside"):
            with open(os.devnull, "wb") as f:
                db.rootfs_tar(str(store), f)
    finally:
        db.unmount_below(str(store))
    assert _mounted_below(store) == []


@pytest.mark.slow
def test_docker_imports_and_runs_the_same_tar(debian_tar: Path) -> None:
    """The reference: Debian's dockerd takes the tar and --change lines as ketch does."""
    from tests.integration.engines import Dockerd, mounts_under

    if not shutil.which("dockerd") or not shutil.which("docker"):
        pytest.skip("dockerd or the docker CLI is not installed")
    d = Dockerd(Path(tempfile.gettempdir()) / f"{PREFIX}-deb-dockerd", f"/{PREFIX}/deb-dockerd",
                runtimes={}, docker=shutil.which("docker") or "docker")
    try:
        d.start()
        args = ["import"]
        for change in db.image_changes(SUITE):
            args += ["--change", change]
        d.ok(*args, "-m", db.history_comment(SUITE), str(debian_tar), "debian:bookworm",
             timeout=180)
        info = json.loads(d.ok("image", "inspect", "debian:bookworm").stdout)[0]
        assert info["Config"]["Cmd"] == ["bash"]
        assert info["Config"]["Env"] == [f"PATH={db.IMAGE_PATH}"]
        assert info["Comment"] == db.history_comment(SUITE)
        out = d.ok("run", "--rm", "--network", "none", "debian:bookworm", "bash", "-c",
                   "cat /etc/debian_version; ls /etc/apt/apt.conf.d", timeout=120).stdout
        lines = out.splitlines()
        assert re.fullmatch(r"12\.\d+", lines[0]), out
        assert "docker-clean" in lines[1:], out
    finally:
        problems = d.stop()
        if mounts_under(d.base):
            problems.append(f"mounts left: {mounts_under(d.base)}")
        assert not problems, "dockerd teardown:\n" + "\n".join(problems)
