"""Builds through ketchd by every client users have: the docker CLI 28 (legacy builder API),
docker-py's ``images.build``, and ``ketch build``; and the BuildKit refusal they can read.

A private ketchd with busybox loaded (``loaded_ketchd``); each test builds a small
context and checks what the client printed and what the image holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_daemon_system import DOCKER, Ketchd, docker

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

KETCH = str(Path(sys.executable).parent / "ketch")
DOCKERFILE = """FROM busybox
RUN echo hello from run && echo to stderr >&2
COPY data.txt /data.txt
CMD ["cat", "/data.txt"]
"""


def _context(root: Path, dockerfile: str = DOCKERFILE, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "data.txt").write_text("data\n")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def _legacy(k: Ketchd, *args: str, cli: str | None = None, buildkit: str = "0"
            ) -> subprocess.CompletedProcess[str]:
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DOCKER_")}
    env.update(DOCKER_HOST=k.host, DOCKER_CONFIG=str(k.dir / "docker-config"),
               DOCKER_BUILDKIT=buildkit)
    return subprocess.run([cli or str(DOCKER), "build", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def _ketch(k: Ketchd, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith(("DOCKER_", "KETCH_"))}
    env["KETCH_HOST"] = k.host
    env["DOCKER_CONFIG"] = str(k.dir / "docker-config")
    return subprocess.run([KETCH, *args], capture_output=True, env=env, timeout=300,
                          input=stdin.decode() if stdin is not None else None, text=True)


def _run(k: Ketchd, image: str, *cmd: str) -> str:
    out = docker(k, "run", "--rm", "--network", "none", image, *cmd)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_docker_cli_legacy_build_prints_dockerds_lines(loaded_ketchd: Ketchd,
                                                       tmp_path: Path) -> None:
    k = loaded_ketchd
    ctx = _context(tmp_path / "ctx")
    out = _legacy(k, "-t", "built:1", str(ctx))
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Sending build context to Docker daemon")
    assert "Step 1/4 : FROM busybox" in lines
    assert "Step 2/4 : RUN echo hello from run && echo to stderr >&2" in lines
    assert "hello from run" in lines
    assert any(re.fullmatch(r" ---> Running in [0-9a-f]{12}", x) for x in lines)
    built = [x for x in lines if x.startswith("Successfully built ")]
    assert len(built) == 1 and re.fullmatch(r"Successfully built [0-9a-f]{12}", built[0])
    assert lines[-1] == "Successfully tagged built:1"
    inspect = json.loads(docker(k, "image", "inspect", "built:1").stdout)[0]
    assert inspect["Id"].startswith("sha256:" + built[0].split()[-1])
    assert _run(k, "built:1") == "data\n"
    # again: every step from the cache
    again = _legacy(k, "-t", "built:1", str(ctx))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" ---> Using cache") == 3
    assert f"Successfully built {built[0].split()[-1]}" in again.stdout
    quiet = _legacy(k, "-q", str(ctx))
    assert quiet.returncode == 0 and quiet.stdout.strip() == inspect["Id"]


def _stdin_build(k: Ketchd, ctx: Path, dockerfile: str, *args: str
                 ) -> subprocess.CompletedProcess[str]:
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DOCKER_")}
    env.update(DOCKER_HOST=k.host, DOCKER_CONFIG=str(k.dir / "docker-config"),
               DOCKER_BUILDKIT="0")
    return subprocess.run([str(DOCKER), "build", "-q", *args, "-f", "-", str(ctx)],
                          input=dockerfile, capture_output=True, text=True, env=env,
                          timeout=300)


def test_docker_cli_dockerfile_from_stdin_and_outside(loaded_ketchd: Ketchd,
                                                      tmp_path: Path) -> None:
    """``-f -`` and ``-f`` outside the context: the CLI adds the Dockerfile under a random
    name and ends its tar right after the amended .dockerignore's data."""
    k = loaded_ketchd
    ctx = _context(tmp_path / "ctx", **{".dockerignore": "*.log\n"})
    out = _stdin_build(k, ctx, "FROM busybox\nLABEL stdin=1\n")
    assert out.returncode == 0, out.stderr
    labels = json.loads(docker(k, "image", "inspect", out.stdout.strip()).stdout)[0][
        "Config"]["Labels"]
    assert labels == {"stdin": "1"}
    (tmp_path / "Dockerfile.out").write_text("FROM busybox\nLABEL outside=1\n")
    out = _legacy(k, "-q", "-f", str(tmp_path / "Dockerfile.out"), str(ctx))
    assert out.returncode == 0, out.stderr
    labels = json.loads(docker(k, "image", "inspect", out.stdout.strip()).stdout)[0][
        "Config"]["Labels"]
    assert labels == {"outside": "1"}


def test_the_added_dockerfile_is_not_in_copy(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    ctx = _context(tmp_path / "ctx")
    out = _stdin_build(k, ctx, "FROM busybox\nCOPY . /ctx/\n", "-t", "stdin:1")
    assert out.returncode == 0, out.stderr
    listing = _run(k, "stdin:1", "ls", "-A", "/ctx").split()
    assert sorted(listing) == ["Dockerfile", "data.txt"]


def test_docker_cli_failing_run(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", "FROM busybox\nRUN exit 3\n")
    out = _legacy(loaded_ketchd, str(ctx))
    # the legacy docker CLI exits with the command's status and prints dockerd's words
    assert out.returncode == 3, out.stderr
    assert out.stderr.strip().endswith(
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3")


def test_buildkit_clients_read_what_to_do(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx")
    old_cli = shutil.which("docker", path="/usr/bin")
    if old_cli is None or old_cli == DOCKER:
        pytest.skip("no docker 20.10 CLI with its built-in BuildKit client")
    out = _legacy(loaded_ketchd, str(ctx), cli=old_cli, buildkit="1")
    assert out.returncode == 1
    assert "BuildKit API not supported: ketchd has only the legacy builder; use " \
           "DOCKER_BUILDKIT=0" in out.stderr


def test_docker_py_images_build(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    docker_py = pytest.importorskip("docker")
    ctx = _context(tmp_path / "ctx")
    client = docker_py.DockerClient(base_url=loaded_ketchd.host, version="1.41")
    try:
        image, logs = client.images.build(path=str(ctx), tag="py:1", rm=True)
        chunks = list(logs)
        assert image.id.startswith("sha256:")
        assert "py:1" in image.tags
        assert {"stream": "Step 1/4 : FROM busybox"} in chunks
        assert {"aux": {"ID": image.id}} in chunks
        # a low-level build streams the same messages, decoded
        stream = client.api.build(path=str(ctx), tag="py:2", decode=True,
                                  buildargs={"UNUSED": "1"})
        messages: list[dict[str, Any]] = list(stream)
        assert any("[Warning] One or more build-args [UNUSED] were not consumed"
                   in m.get("stream", "") for m in messages)
        (ctx / "Dockerfile").write_text("FROM busybox\nRUN exit 7\n")
        with pytest.raises(docker_py.errors.BuildError) as info:
            client.images.build(path=str(ctx))
        assert "returned a non-zero code: 7" in str(info.value)
    finally:
        client.close()


def test_ketch_build_plain_quiet_and_output(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    ctx = _context(tmp_path / "ctx", ignored="x", **{".dockerignore": "ignored\n"})
    out = _ketch(k, "build", "--progress", "plain", "-t", "kb:1", str(ctx))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    err = out.stderr
    assert re.search(r"^#\d+ \[2/4\] RUN echo hello from run && echo to stderr >&2$", err,
                     re.M), err
    assert re.search(r"^#\d+ \d+\.\d{3} hello from run$", err, re.M), err
    assert re.search(r"^#\d+ DONE \d+\.\d+s$", err, re.M), err
    assert "naming to kb:1 done" in err
    again = _ketch(k, "build", "--progress", "plain", "-t", "kb:1", str(ctx))
    assert again.stderr.count("CACHED") == 3, again.stderr
    quiet = _ketch(k, "build", "-q", str(ctx))
    assert quiet.returncode == 0 and quiet.stderr == ""
    image_id = json.loads(docker(k, "image", "inspect", "kb:1").stdout)[0]["Id"]
    assert quiet.stdout == image_id + "\n"
    assert _run(k, "kb:1", "ls", "/") .count("ignored") == 0
    # -o: the image's files in a directory, or in a tar
    dest = tmp_path / "out"
    out = _ketch(k, "build", "-q", "-o", f"type=local,dest={dest}", str(ctx))
    assert out.returncode == 0, out.stderr
    assert (dest / "data.txt").read_text() == "data\n"
    assert (dest / "bin" / "busybox").exists()
    out = _ketch(k, "build", "-q", "-o", f"type=tar,dest={tmp_path / 'fs.tar'}", str(ctx))
    assert out.returncode == 0, out.stderr
    with tarfile.open(tmp_path / "fs.tar") as tf:
        assert "data.txt" in {n.lstrip("./") for n in tf.getnames()}
    # the export's container is gone
    assert docker(k, "ps", "-aq").stdout.strip() == ""


def test_ketch_build_failure_and_stdin(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    out = _ketch(k, "build", "--progress", "plain", "-", stdin=b"FROM busybox\nRUN exit 3\n")
    assert out.returncode == 1
    assert out.stderr.rstrip().endswith(
        "ERROR: The command '/bin/sh -c exit 3' returned a non-zero code: 3")
    ok = _ketch(k, "build", "-q", "-", stdin=b"FROM busybox\nLABEL a=b\n")
    assert ok.returncode == 0, ok.stderr
    labels = json.loads(docker(k, "image", "inspect", ok.stdout.strip()).stdout)[0][
        "Config"]["Labels"]
    assert labels == {"a": "b"}


def test_ketch_build_secrets_and_named_contexts(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    (tmp_path / "token").write_text("s3cr3t")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "lib.txt").write_text("from lib\n")
    ctx = _context(tmp_path / "ctx", "FROM busybox\n"
                   "RUN --mount=type=secret,id=tok cat /run/secrets/tok > /seen\n"
                   "COPY --from=extra lib.txt /lib.txt\n")
    out = _ketch(k, "build", "-q", "-t", "sec:1", "--secret", f"id=tok,src={tmp_path / 'token'}",
                 "--build-context", f"extra={lib}", str(ctx))
    assert out.returncode == 0, out.stderr
    assert _run(k, "sec:1", "cat", "/seen", "/lib.txt") == "s3cr3tfrom lib\n"
    # the secret is nowhere in the image's files
    exported = docker(k, "run", "--rm", "--network", "none", "sec:1", "sh", "-c",
                      "grep -rl s3cr3t /bin /etc /run 2>/dev/null | grep -v ^/seen || true")
    assert exported.stdout.strip() == ""


def test_build_cache_in_df_and_builder_prune(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    ctx = _context(tmp_path / "ctx")
    assert _ketch(k, "build", "-q", str(ctx)).returncode == 0
    df = docker(k, "system", "df")
    assert df.returncode == 0 and "Build Cache" in df.stdout
    out = _ketch(k, "builder", "prune", "-a", "-f")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().splitlines()[-1].startswith("Total reclaimed space: ")
