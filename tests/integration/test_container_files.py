"""Containers' filesystems judged by the docker CLI (28.x) and docker-py: ``docker cp``
both ways, ``export``, ``diff``, ``commit``, and the archive endpoints' errors.

Each test gets a private ketchd (the fixtures of test_daemon_containers); containers
run with ``--network none``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from tests.integration.test_daemon_containers import (  # noqa: F401 - fixtures
    NONE,
    busybox_archive,
    ketchd,
    ok,
    start_ketchd,
)
from tests.integration.test_daemon_system import DOCKER, Ketchd, docker

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]


@pytest.fixture
def kd(ketchd: Ketchd) -> Ketchd:  # noqa: F811 - the imported fixture
    return ketchd


def run_d(k: Ketchd, name: str, *extra: str, cmd: tuple[str, ...] = ("sleep", "60")) -> str:
    return ok(docker(k, "run", "-d", *NONE, "--name", name, *extra, "busybox", *cmd)).strip()


def output_of(k: Ketchd, name: str, image: str, *cmd: str) -> str:
    """What a container printed, read from its log (docker run --rm's attached output
    is not what is tested here)."""
    ok(docker(k, "run", "-d", *NONE, "--name", name, image, *cmd))
    ok(docker(k, "wait", name))
    return ok(docker(k, "logs", name))


def sh(k: Ketchd, name: str, script: str) -> str:
    return ok(docker(k, "exec", name, "sh", "-c", script))


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


# --- docker cp out of the container ------------------------------------------------------


def test_cp_file_dir_and_contents_out(kd: Ketchd, tmp_path: Path) -> None:
    k = kd
    run_d(k, "c1")
    sh(k, "c1", "mkdir -p /data/sub && echo hello > /data/a && echo deep > /data/sub/b "
                "&& ln -s a /data/link && chmod 640 /data/a")
    ok(docker(k, "cp", "c1:/data/a", str(tmp_path / "a")))
    assert (tmp_path / "a").read_text() == "hello\n"
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640
    ok(docker(k, "cp", "c1:/data", str(tmp_path / "dir")))
    assert (tmp_path / "dir" / "sub" / "b").read_text() == "deep\n"
    assert os.readlink(tmp_path / "dir" / "link") == "a"
    # dir/. copies the contents into an existing directory
    (tmp_path / "into").mkdir()
    ok(docker(k, "cp", "c1:/data/.", str(tmp_path / "into")))
    assert sorted(os.listdir(tmp_path / "into")) == ["a", "link", "sub"]
    # a symlink is copied as a link, and followed with -L
    ok(docker(k, "cp", "c1:/data/link", str(tmp_path / "l1")))
    assert os.readlink(tmp_path / "l1") == "a"
    ok(docker(k, "cp", "-L", "c1:/data/link", str(tmp_path / "l2")))
    assert not (tmp_path / "l2").is_symlink() and (tmp_path / "l2").read_text() == "hello\n"


def test_cp_to_stdout_is_a_tar_with_docker_names(kd: Ketchd) -> None:
    k = kd
    run_d(k, "c1")
    sh(k, "c1", "mkdir -p /d/e && echo x > /d/e/f")
    out = subprocess.run([DOCKER or "docker", "cp", "c1:/d", "-"], capture_output=True,
                         env={**os.environ, "DOCKER_HOST": k.host}, check=True)
    assert tar_names(out.stdout) == ["d", "d/e", "d/e/f"]
    out = subprocess.run([DOCKER or "docker", "cp", "c1:/d/.", "-"], capture_output=True,
                         env={**os.environ, "DOCKER_HOST": k.host}, check=True)
    assert tar_names(out.stdout) == [".", "./e", "./e/f"]


def test_cp_missing_path_and_container(kd: Ketchd, tmp_path: Path) -> None:
    k = kd
    run_d(k, "c1")
    out = docker(k, "cp", "c1:/nope", str(tmp_path / "x"))
    assert out.returncode != 0
    assert "Could not find the file /nope in container c1" in out.stderr
    out = docker(k, "cp", "ghost:/etc", str(tmp_path / "x"))
    assert out.returncode != 0 and "No such container" in out.stderr


# --- docker cp into the container -----------------------------------------------------------


def test_cp_into_running_and_stopped(kd: Ketchd, tmp_path: Path) -> None:
    k = kd
    (tmp_path / "f").write_text("file\n")
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "s" / "g").write_text("g\n")
    run_d(k, "c1")
    ok(docker(k, "cp", str(tmp_path / "f"), "c1:/tmp/"))
    ok(docker(k, "cp", str(tmp_path / "d"), "c1:/tmp/d2"))
    ok(docker(k, "cp", str(tmp_path / "f"), "c1:/tmp/renamed"))
    assert sh(k, "c1", "cat /tmp/f /tmp/d2/s/g /tmp/renamed") == "file\ng\nfile\n"
    # through the image's symlinks, resolved inside the container (/bin/sh -> busybox is
    # a file; /var/run style links to directories are followed)
    sh(k, "c1", "mkdir /target && ln -s /target /tmp/via")
    ok(docker(k, "cp", str(tmp_path / "f"), "c1:/tmp/via/"))
    assert sh(k, "c1", "cat /target/f") == "file\n"

    ok(docker(k, "create", *NONE, "--name", "c2", "busybox", "cat", "/root/f"))
    ok(docker(k, "cp", str(tmp_path / "f"), "c2:/root/f"))
    ok(docker(k, "start", "-a", "c2"))
    assert ok(docker(k, "logs", "c2")) == "file\n"
    # nothing stays mounted on the host for the stopped container
    doc = json.loads(ok(docker(k, "inspect", "c2")))[0]
    merged = doc["GraphDriver"]["Data"]["MergedDir"]
    assert not os.path.ismount(merged)


def test_cp_into_volume_and_readonly_rootfs(kd: Ketchd, tmp_path: Path) -> None:
    k = kd
    (tmp_path / "f").write_text("v\n")
    bind = tmp_path / "bind"
    bind.mkdir()
    run_d(k, "ro", "--read-only", "-v", "vol1:/vol", "-v", f"{bind}:/bind",
          "-v", f"{bind}:/robind:ro")
    out = docker(k, "cp", str(tmp_path / "f"), "ro:/tmp/")
    assert out.returncode != 0 and "container rootfs is marked read-only" in out.stderr
    ok(docker(k, "cp", str(tmp_path / "f"), "ro:/vol/"))
    assert sh(k, "ro", "cat /vol/f") == "v\n"
    ok(docker(k, "cp", str(tmp_path / "f"), "ro:/bind/"))
    assert (bind / "f").read_text() == "v\n"
    out = docker(k, "cp", str(tmp_path / "f"), "ro:/robind/")
    assert out.returncode != 0 and "mounted volume is marked read-only" in out.stderr
    # reading from a volume of a stopped container
    ok(docker(k, "stop", "-t", "0", "ro"))
    ok(docker(k, "cp", "ro:/vol/f", str(tmp_path / "back")))
    assert (tmp_path / "back").read_text() == "v\n"


def test_put_archive_refuses_escapes(kd: Ketchd) -> None:
    import docker as dockerpy

    k = kd
    run_d(k, "c1")
    client = dockerpy.DockerClient(base_url=k.host, version="1.45")
    try:
        c = client.containers.get("c1")

        def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                for info, data in members:
                    info.size = len(data) if info.isreg() else 0
                    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
            return buf.getvalue()

        climb = tarfile.TarInfo("../../etc/evil")
        with pytest.raises(dockerpy.errors.APIError) as err:
            c.put_archive("/tmp", tar_of((climb, b"x")))
        assert "is outside of" in str(err.value)
        link = tarfile.TarInfo("up")
        link.type, link.linkname = tarfile.SYMTYPE, "../../.."
        with pytest.raises(dockerpy.errors.APIError) as err:
            c.put_archive("/tmp", tar_of((link, b"")))
        assert "invalid symlink" in str(err.value)
        # An absolute symlink in the container resolves inside it, never on the host.
        sh(k, "c1", "ln -s / /tmp/rootlink")
        f = tarfile.TarInfo("rootlink/etc/planted")
        assert c.put_archive("/tmp", tar_of((f, b"in\n")))
        assert sh(k, "c1", "cat /etc/planted") == "in\n"
        assert not os.path.exists("/etc/planted")
        # not a directory, missing
        with pytest.raises(dockerpy.errors.APIError) as err:
            c.put_archive("/etc/passwd", tar_of((tarfile.TarInfo("x"), b"")))
        assert "extraction point is not a directory" in str(err.value)
        with pytest.raises(dockerpy.errors.NotFound) as err2:
            c.put_archive("/nope", tar_of((tarfile.TarInfo("x"), b"")))
        # named as the client named it (docker-py uses the id)
        assert f"Could not find the file /nope in container {c.id}" in str(err2.value)
        # compressed archives are accepted, as dockerd's DecompressStream does
        import gzip

        assert c.put_archive("/tmp", gzip.compress(tar_of((tarfile.TarInfo("gz"), b"z"))))
        assert sh(k, "c1", "cat /tmp/gz") == "z"
        # get_archive gives the tar and the stat
        stream, st = c.get_archive("/etc/planted")
        data = b"".join(stream)
        assert st["name"] == "planted" and st["size"] == 3 and st["mode"] == 0o644
        assert tar_names(data) == ["planted"]
    finally:
        client.close()


def test_head_archive_stat_header(kd: Ketchd) -> None:
    import http.client
    import socket

    k = kd
    run_d(k, "c1")
    sh(k, "c1", "mkdir /d && ln -s /d /l")

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(k.host.removeprefix("unix://"))

    def head(path: str) -> tuple[int, dict[str, object]]:
        conn = Conn("localhost")
        conn.request("HEAD", f"/v1.45/containers/c1/archive?path={path}")
        r = conn.getresponse()
        r.read()
        raw = r.getheader("X-Docker-Container-Path-Stat")
        conn.close()
        return r.status, json.loads(base64.b64decode(raw)) if raw else {}

    status, st = head("/d")
    assert status == 200 and st["name"] == "d" and st["mode"] == (1 << 31) | 0o755
    status, st = head("/l")
    assert st["mode"] == (1 << 27) | 0o777 and st["linkTarget"] == "/d"
    status, st = head("/")
    assert status == 200 and st["name"] == "/"
    status, _ = head("/missing")
    assert status == 404


# --- export, diff, commit -----------------------------------------------------------------


def test_export_diff_commit(kd: Ketchd, tmp_path: Path) -> None:
    k = kd
    run_d(k, "c1")
    sh(k, "c1", "echo changed > /etc/motd && mkdir -p /new/dir && rm /bin/vi && "
                "echo 1 > /tmp/t")
    diff = ok(docker(k, "diff", "c1")).splitlines()
    assert "A /new" in diff and "A /new/dir" in diff and "D /bin/vi" in diff
    assert "C /bin" in diff and "A /etc/motd" in diff and "C /tmp" in diff
    assert not any(x.endswith(("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"))
                   for x in diff)
    out = subprocess.run([DOCKER or "docker", "export", "c1"], capture_output=True,
                         env={**os.environ, "DOCKER_HOST": k.host}, check=True)
    names = tar_names(out.stdout)
    assert "etc/motd" in names and "bin/sh" in names and "bin/vi" not in names
    assert not any(".wh." in n for n in names)
    image_id = ok(docker(k, "commit", "-m", "msg", "-a", "me", "-c", "ENV X=1",
                         "c1", "mine:v1")).strip()
    assert image_id.startswith("sha256:")
    assert output_of(k, "from_mine", "mine:v1", "sh", "-c",
                     "cat /etc/motd; echo $X; ls /new; test -e /bin/vi || echo novi") \
        == "changed\n1\ndir\nnovi\n"
    doc = json.loads(ok(docker(k, "image", "inspect", "mine:v1")))[0]
    assert doc["Comment"] == "msg" and doc["Author"] == "me"
    assert "X=1" in doc["Config"]["Env"]
    assert doc["Config"]["Cmd"] == ["sleep", "60"]
    history = ok(docker(k, "history", "--format", "{{.CreatedBy}}|{{.Comment}}", "mine:v1"))
    assert history.splitlines()[0] == "sleep 60|msg"
    # the base image is the new one's parent, and cannot go while it has a child
    base_id = json.loads(ok(docker(k, "image", "inspect", "busybox")))[0]["Id"]
    assert doc["Parent"] == base_id
    out = docker(k, "rmi", "-f", base_id)
    assert out.returncode != 0 and "image has dependent child images" in out.stderr


def test_diff_of_fresh_container_is_empty(kd: Ketchd) -> None:
    k = kd
    ok(docker(k, "run", *NONE, "--name", "c1", "busybox", "true"))
    assert ok(docker(k, "diff", "c1")) == ""
    image_id = ok(docker(k, "commit", "c1")).strip()
    doc = json.loads(ok(docker(k, "image", "inspect", image_id)))[0]
    base = json.loads(ok(docker(k, "image", "inspect", "busybox")))[0]
    assert doc["RootFS"]["Layers"] == base["RootFS"]["Layers"]


def test_cp_archive_mode_paused_and_volume_refs(kd: Ketchd, tmp_path: Path) -> None:
    k = kd
    (tmp_path / "f").write_text("owned\n")
    os.chown(tmp_path / "f", 1234, 1234)
    run_d(k, "cu", "--user", "daemon", "-v", "v2:/data")
    # -a: the container user's uid/gid (busybox's passwd: daemon is 1:1); else the archive's
    ok(docker(k, "cp", "-a", str(tmp_path / "f"), "cu:/data/a"))
    ok(docker(k, "cp", str(tmp_path / "f"), "cu:/data/b"))
    assert sh(k, "cu", "stat -c '%u:%g' /data/a /data/b") == "1:1\n1234:1234\n"
    ok(docker(k, "pause", "cu"))
    ok(docker(k, "cp", "cu:/data/a", str(tmp_path / "back")))
    ok(docker(k, "unpause", "cu"))
    assert (tmp_path / "back").read_text() == "owned\n"
    # the copies took no lasting reference on the volume
    ok(docker(k, "rm", "-f", "cu"))
    ok(docker(k, "volume", "rm", "v2"))


def test_commit_api_config_and_stopped_container(kd: Ketchd) -> None:
    import docker as dockerpy

    k = kd
    ok(docker(k, "run", *NONE, "--name", "cs", "busybox", "sh", "-c", "echo data > /f"))
    client = dockerpy.DockerClient(base_url=k.host, version="1.45")
    try:
        c = client.containers.get("cs")
        img = c.commit(repository="me/s", tag="t", conf={"Cmd": ["cat", "/f"],
                                                         "Labels": {"a": "b"}},
                       changes=["ENV Y=2"])
        assert img.tags == ["me/s:t"]
        assert img.attrs["Config"]["Cmd"] == ["cat", "/f"]
        assert img.attrs["Config"]["Labels"] == {"a": "b"}
        assert "Y=2" in img.attrs["Config"]["Env"]
        assert output_of(k, "from_me_s", "me/s:t") == "data\n"
        assert c.diff() == [{"Path": "/f", "Kind": 1}]
        with pytest.raises(dockerpy.errors.APIError) as err:
            c.commit(repository="x", changes=["RUN true"])
        assert "run is not a valid change command" in str(err.value)
        with pytest.raises(dockerpy.errors.NotFound):
            client.api.commit("ghost")
        with pytest.raises(dockerpy.errors.APIError) as err:
            client.api.get_archive("cs", "")
        assert "pathcannot be empty" in str(err.value)
    finally:
        client.close()


def test_diff_of_a_recreated_directory_on_a_committed_image(kd: Ketchd) -> None:
    k = kd
    ok(docker(k, "run", *NONE, "--name", "c0", "busybox", "mkdir", "-p", "/w/a", "/w/b"))
    ok(docker(k, "commit", "c0", "img0"))
    ok(docker(k, "run", *NONE, "--name", "c1", "img0", "sh", "-c",
              "rm -rf /w && mkdir /w && touch /w/n"))
    assert ok(docker(k, "diff", "c1")).splitlines() == ["C /w", "A /w/n", "D /w/a", "D /w/b"]
    ok(docker(k, "commit", "c1", "img1"))
    assert output_of(k, "from_img1", "img1", "ls", "/w") == "n\n"
