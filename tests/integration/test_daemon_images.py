"""ketchd's image endpoints judged by the real docker CLI (28.x) and curl.

The busybox archive is made once per session by the image library itself
(``bootstrap_busybox`` then ``save``, in a scratch root with the copy-based
snapshotter, so nothing is mounted); each test then drives a private ketchd
(the daemon fixtures of test_daemon_system) with ``docker load``, ``docker
import`` and the rest, and the finalizers stop the daemon by pid, unmount
anything left under its directory and remove it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import PREFIX
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    docker,
    start_ketchd,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]


def _unmount_under(path: Path) -> None:
    """Images should never leave mounts; if a bug did, they must not outlive the test."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(str(path) + "/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture
def ketchd(start_ketchd: Callable[..., Ketchd]) -> Iterator[Ketchd]:  # noqa: F811
    k = start_ketchd()
    yield k
    k.stop()
    _unmount_under(k.dir)


@pytest.fixture(scope="session")
def busybox_archive() -> Iterator[Path]:
    from ketch.image.service import ImageService
    from ketch.image.snapshot.naive import NaiveSnapshotter

    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-a", dir="/tmp"))
    try:
        svc = ImageService(d / "image", snapshotter=NaiveSnapshotter(str(d / "image" / "snaps")))
        svc.bootstrap_busybox("busybox:latest")
        archive = d / "busybox.tar"
        with open(archive, "wb") as f:
            svc.save(["busybox:latest"], f)
        yield archive
    finally:
        _unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_load_list_inspect_tag_history_save_rmi_prune(ketchd: Ketchd,
                                                      busybox_archive: Path) -> None:
    k = ketchd
    assert "Loaded image: busybox:latest" in ok(docker(k, "load", "-i", str(busybox_archive)))
    assert ok(docker(k, "load", "-q", "-i", str(busybox_archive))).strip() == \
        "Loaded image: busybox:latest"

    lines = ok(docker(k, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")).splitlines()
    assert len(lines) == 1 and lines[0].startswith("busybox:latest ")
    short_id = lines[0].split()[1]

    info = json.loads(ok(docker(k, "image", "inspect", "busybox")))[0]
    assert info["Id"].startswith("sha256:" + short_id)
    assert info["RepoTags"] == ["busybox:latest"]
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 1
    assert info["Config"]["Cmd"] == ["sh"]

    ok(docker(k, "tag", "busybox", "me/box:1"))
    tags = ok(docker(k, "images", "--format", "{{.Repository}}:{{.Tag}}")).split()
    assert sorted(tags) == ["busybox:latest", "me/box:1"]
    assert ok(docker(k, "images", "--filter", "reference=me/*", "--format",
                     "{{.Repository}}:{{.Tag}}")).split() == ["me/box:1"]
    assert json.loads(ok(docker(k, "image", "inspect", "me/box:1")))[0]["Id"] == info["Id"]

    hist = ok(docker(k, "history", "--no-trunc", "--format", "{{.ID}} {{.CreatedBy}}",
                     "busybox"))
    assert hist.splitlines() == [f"{info['Id']} ketch image bootstrap busybox"]

    out = subprocess.run(f"{DOCKER} save busybox | tar -t", shell=True, capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, "DOCKER_HOST": k.host,
                              "DOCKER_CONFIG": str(k.dir / "docker-config")})
    names = out.stdout.split()
    assert out.returncode == 0, out.stderr
    assert "manifest.json" in names and "index.json" in names
    saved = k.dir / "saved.tar"
    ok(docker(k, "save", "-o", str(saved), "me/box:1", "busybox"))
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert sorted(manifest[0]["RepoTags"]) == ["busybox:latest", "me/box:1"]

    # rmi by name untags while another name is left, then deletes with the last one.
    assert ok(docker(k, "rmi", "me/box:1")).strip() == "Untagged: me/box:1"
    out = ok(docker(k, "rmi", "busybox"))
    assert out.splitlines()[0] == "Untagged: busybox:latest"
    assert f"Deleted: {info['Id']}" in out
    assert ok(docker(k, "images", "-q")).strip() == ""

    # A dangling image (its tag moved away) goes with prune.
    ok(docker(k, "load", "-i", str(saved)))
    ok(docker(k, "rmi", "me/box:1"))
    ok(docker(k, "tag", info["Id"], "other:1"))
    out = ok(docker(k, "image", "prune", "-f"))
    assert "Total reclaimed space: 0B" in out  # tagged: nothing dangling
    ok(docker(k, "rmi", "busybox"))
    assert ok(docker(k, "images", "-q")).strip() != ""


def test_import_from_stdin_and_dangling_prune(ketchd: Ketchd, busybox_rootfs: Path) -> None:
    k = ketchd
    env = {**os.environ, "DOCKER_HOST": k.host, "DOCKER_CONFIG": str(k.dir / "docker-config")}
    out = subprocess.run(
        f"tar -C {busybox_rootfs} -c . | {DOCKER} import -c 'CMD [\"sh\"]' -m hello - "
        "busybox:latest", shell=True, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    image_id = out.stdout.strip()
    assert image_id.startswith("sha256:")
    info = json.loads(ok(docker(k, "image", "inspect", "busybox:latest")))[0]
    assert info["Id"] == image_id
    assert info["Config"]["Cmd"] == ["sh"] and info["Comment"] == "hello"
    assert ok(docker(k, "history", "--format", "{{.Comment}}", "busybox")).strip() == "hello"

    # A second import under the same tag leaves the first one dangling.
    out = subprocess.run(
        f"tar -C {busybox_rootfs} -c ./bin | {DOCKER} import - busybox:latest", shell=True,
        capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    dangling = ok(docker(k, "images", "-q", "--no-trunc", "--filter", "dangling=true")).split()
    assert dangling == [image_id]
    out = ok(docker(k, "image", "prune", "-f"))
    assert "Deleted Images:" in out and f"deleted: {image_id}" in out
    assert ok(docker(k, "images", "-q", "--filter", "dangling=true")).strip() == ""
    assert len(ok(docker(k, "images", "-q")).split()) == 1


def test_errors(ketchd: Ketchd, busybox_archive: Path) -> None:
    k = ketchd
    out = docker(k, "image", "inspect", "nosuch")
    assert out.returncode == 1 and "No such image: nosuch" in out.stderr
    out = docker(k, "rmi", "nosuch")
    # The CLI decodes dockerd-style JSON errors and prints only the message.
    assert out.returncode == 1
    assert "Error response from daemon: No such image: nosuch:latest" in out.stderr
    assert '{"message"' not in out.stderr
    out = docker(k, "save", "nosuch")
    assert out.returncode == 1 and "No such image: nosuch" in out.stderr
    out = docker(k, "pull", "127.0.0.1:1/busybox")
    assert out.returncode == 1 and 'Get "http://127.0.0.1:1/v2/"' in out.stderr
    bad = k.dir / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    out = docker(k, "load", "-i", str(bad))
    assert out.returncode == 1
    ok(docker(k, "load", "-i", str(busybox_archive)))
    ok(docker(k, "tag", "busybox", "me/box:1"))
    # By id with two names: a conflict that -f overrides.
    image_id = json.loads(ok(docker(k, "image", "inspect", "busybox")))[0]["Id"]
    out = docker(k, "rmi", image_id[7:19])
    assert out.returncode == 1
    assert "image is referenced in multiple repositories" in out.stderr
    out = ok(docker(k, "rmi", "-f", image_id[7:19]))
    assert f"Deleted: {image_id}" in out
    # curl: the status codes behind those messages.
    resp = k.curl("-w", "\n%{http_code}", "http://ketch/v1.45/images/nosuch/json")
    body, code = resp.stdout.rsplit("\n", 1)
    assert (code, json.loads(body)) == ("404", {"message": "No such image: nosuch:latest"})
    resp = k.curl("-w", "\n%{http_code}", "-X", "POST",
                  "http://ketch/v1.45/images/create?fromImage=127.0.0.1:1/busybox&tag=latest")
    assert resp.stdout.rsplit("\n", 1)[1] == "500"
