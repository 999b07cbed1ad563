"""``ketch`` image commands against a private ketchd, checked beside the docker CLI.

Both CLIs talk to the same daemon, so what ``ketch`` prints can be compared
line by line with what ``docker`` prints for the same store.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import BIN
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    docker,
    start_ketchd,
)

pytestmark = pytest.mark.root


@pytest.fixture
def ketchd(start_ketchd: Callable[..., Ketchd]) -> Iterator[Ketchd]:  # noqa: F811
    from tests.integration.test_daemon_images import _unmount_under

    k = start_ketchd()
    yield k
    k.stop()
    _unmount_under(k.dir)


def ketch(k: Ketchd, *args: str, input: bytes | None = None,
          stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {n: v for n, v in os.environ.items() if n not in ("KETCH_HOST", "DOCKER_HOST")}
    env["KETCH_HOST"] = k.host
    out = subprocess.run([str(BIN / "ketch"), *args], capture_output=True, env=env,
                         timeout=120, input=input,
                         stdin=stdin if input is None else None)
    return subprocess.CompletedProcess(out.args, out.returncode,
                                       out.stdout.decode(errors="replace"),
                                       out.stderr.decode(errors="replace"))


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_bootstrap_tag_inspect_save_load_rmi(ketchd: Ketchd, tmp_path: Path) -> None:
    k = ketchd
    out = ketch(k, "image", "bootstrap", "busybox")
    image_id = ok(out).strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert "=> building a busybox root filesystem" in out.stderr

    doc = json.loads(ok(ketch(k, "image", "inspect", "busybox")))
    assert doc[0]["Id"] == image_id
    assert doc[0]["RepoTags"] == ["busybox:latest"]
    assert doc[0]["Config"]["Cmd"] == ["sh"]
    assert any(e.startswith("PATH=") for e in doc[0]["Config"]["Env"])

    ok(ketch(k, "tag", "busybox", "me/box:1"))
    assert ok(ketch(k, "image", "inspect", "-f", "{{.RepoTags}}", "me/box:1")).strip() == \
        "[busybox:latest me/box:1]"

    archive = tmp_path / "box.tar"
    ok(ketch(k, "save", "-o", str(archive), "me/box:1"))
    with tarfile.open(archive) as tf:
        names = tf.getnames()
    assert "manifest.json" in names and "index.json" in names and "oci-layout" in names
    assert not list(tmp_path.glob("box.tar.ketch-save-*"))

    rm = ok(ketch(k, "rmi", "me/box:1", "busybox"))
    assert rm.splitlines()[:2] == ["Untagged: me/box:1", "Untagged: busybox:latest"]
    assert f"Deleted: {image_id}" in rm
    assert ok(ketch(k, "images", "-q")) == ""

    assert ok(ketch(k, "load", "-i", str(archive))) == "Loaded image: me/box:1\n"
    assert ok(ketch(k, "images", "-q", "--no-trunc")).strip() == image_id
    with open(archive, "rb") as f:
        assert ok(ketch(k, "load", "-q", stdin=f.fileno())) == "Loaded image: me/box:1\n"

    # Saved to stdout: the same bytes as -o.
    with open(tmp_path / "out.tar", "wb") as f:
        assert subprocess.run([str(BIN / "ketch"), "-H", k.host, "save", "me/box:1"],
                              stdout=f, timeout=60).returncode == 0
    assert (tmp_path / "out.tar").read_bytes() == archive.read_bytes()


def test_errors_as_docker_prints_them(ketchd: Ketchd, tmp_path: Path) -> None:
    k = ketchd
    out = ketch(k, "image", "inspect", "nosuch")
    assert out.returncode == 1 and out.stdout.strip() == "[]"
    assert out.stderr.strip() == "Error response from daemon: No such image: nosuch:latest"
    out = ketch(k, "inspect", "nosuch")
    assert out.returncode == 1 and out.stderr.strip() == "Error: No such object: nosuch"
    out = ketch(k, "rmi", "nosuch")
    assert out.returncode == 1
    assert out.stderr.strip() == "Error response from daemon: No such image: nosuch:latest"
    out = ketch(k, "tag", "busybox", "Bad:x")
    assert out.returncode == 1
    assert out.stderr.strip() == ('Error parsing reference: "Bad:x" is not a valid '
                                  'repository/tag: invalid reference format: repository '
                                  'name (library/Bad) must be lowercase')
    out = ketch(k, "load", "-i", str(tmp_path / "none.tar"))
    assert out.returncode == 1
    assert out.stderr.strip() == f"open {tmp_path}/none.tar: no such file or directory"
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    out = ketch(k, "load", "-i", str(bad))
    assert out.returncode == 1 and out.stderr.startswith("Error response from daemon: ")
    out = ketch(k, "save", "-o", str(tmp_path / "no" / "dir.tar"), "busybox")
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert not (tmp_path / "no").exists()
    if DOCKER is not None:
        # The docker CLI says the same things against the same daemon.
        for args in (["image", "inspect", "nosuch"], ["rmi", "nosuch"]):
            d, kk = docker(k, *args), ketch(k, *args)
            assert (d.returncode, d.stderr) == (kk.returncode, kk.stderr), args


def test_import_with_changes_and_message(ketchd: Ketchd, tmp_path: Path) -> None:
    k = ketchd
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hello").write_text("hi\n")
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(tree, arcname=".")
    image_id = ok(ketch(k, "import", "-c", 'CMD ["/bin/true"]', "-c", "ENV A=1",
                        "-m", "from a test", str(tar), "imp:1")).strip()
    doc = json.loads(ok(ketch(k, "image", "inspect", "imp:1")))[0]
    assert doc["Id"] == image_id
    assert doc["Config"]["Cmd"] == ["/bin/true"] and "A=1" in doc["Config"]["Env"]
    assert doc["Comment"] == "from a test"
    with open(tar, "rb") as f:
        image2 = ok(ketch(k, "import", "-", "imp:2", stdin=f.fileno())).strip()
    assert image2.startswith("sha256:")
    out = ketch(k, "import", "-c", "BOGUS x", str(tar), "imp:3")
    assert out.returncode == 1 and "imp:3" not in ok(ketch(k, "images", "--format",
                                                           "{{.Repository}}:{{.Tag}}"))


def test_prune_and_system_prune(ketchd: Ketchd, busybox_archive: Path) -> None:  # noqa: F811
    k = ketchd
    ok(ketch(k, "load", "-i", str(busybox_archive)))
    out = ok(ketch(k, "image", "prune", "-f"))
    assert out == "Total reclaimed space: 0B\n"
    # No to the question: nothing removed.
    out = ketch(k, "image", "prune", "-a", input=b"n\n")
    assert out.returncode == 0 and "Are you sure you want to continue? [y/N]" in out.stdout
    assert ok(ketch(k, "images", "-q"))
    out = ok(ketch(k, "image", "prune", "-a", input=b"y\n"))
    assert "Deleted Images:\nuntagged: busybox:latest\ndeleted: sha256:" in out
    assert "Total reclaimed space: " in out
    assert ok(ketch(k, "images", "-q")) == ""
    ok(ketch(k, "load", "-i", str(busybox_archive)))
    out = ok(ketch(k, "system", "prune", "-a", "-f"))
    assert "untagged: busybox:latest" in out and "Total reclaimed space:" in out
