"""The builder through a private ketchd and ketch's CLI: what the engine must get right
beyond the docker CLI's basics (failures, Ctrl-C, secrets, cache mounts, networks,
reproducible output, exports, the build cache in df and prune)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_daemon_system import Ketchd, docker

pytestmark = pytest.mark.root

KETCH = [sys.executable, "-m", "ketch.cli.main"]


def ketch(k: Ketchd, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = {n: v for n, v in os.environ.items() if not n.startswith(("DOCKER_", "KETCH_"))}
    e.update(env or {})
    return subprocess.run([*KETCH, "-H", k.host, *args], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=timeout)


def write(ctx: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ctx


def inspect(k: Ketchd, ref: str) -> dict:
    out = docker(k, "image", "inspect", ref)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def run(k: Ketchd, image: str, *cmd: str) -> str:
    out = docker(k, "run", "--rm", image, *cmd)
    assert out.returncode == 0, out.stderr
    return out.stdout


def build_containers(k: Ketchd) -> list[str]:
    out = docker(k, "ps", "-aq", "--filter", "label=ketch.build.step")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def leftovers(k: Ketchd, wait: float = 10) -> list[str]:
    """Scratch dirs and mounts of builds; the context of a finished build may be
    removed just after its stream ended, so wait a little for that."""
    deadline = time.monotonic() + wait
    while True:
        found = _leftovers(k)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _leftovers(k: Ketchd) -> list[str]:
    tmp = k.root / "builder" / "tmp"
    found = [str(p) for p in tmp.iterdir()] if tmp.exists() else []
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if str(k.root / "builder") in line]
    return found


def test_failing_run_shows_output_tags_nothing_and_keeps_cache(loaded_ketchd: Ketchd,
                                                               tmp_path: Path) -> None:
    k = loaded_ketchd
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo first > /f\n"
                                   "RUN echo about to fail; exit 3\n"})
    out = ketch(k, "build", "--progress", "plain", "-t", "broken", ".", cwd=tmp_path)
    assert out.returncode == 1
    assert "about to fail" in out.stderr
    assert "The command '/bin/sh -c echo about to fail; exit 3' returned a non-zero code: 3" \
        in out.stderr
    assert docker(k, "image", "inspect", "broken").returncode != 0
    again = ketch(k, "build", "--progress", "plain", "-t", "broken", ".", cwd=tmp_path)
    assert again.returncode == 1
    assert "#2 CACHED" in again.stderr          # the step before the failure
    assert leftovers(k) == []
    # docker's legacy rule: without --force-rm the failed step's container stays
    assert len(build_containers(k)) == 2
    third = ketch(k, "build", "--force-rm", "-q", ".", cwd=tmp_path)
    assert third.returncode == 1
    assert len(build_containers(k)) == 2


def test_ctrl_c_removes_containers_mounts_and_snapshots(loaded_ketchd: Ketchd,
                                                        tmp_path: Path) -> None:
    k = loaded_ketchd
    write(tmp_path, {"Dockerfile": "FROM busybox\nCOPY Dockerfile /d\nRUN sleep 60\n"})
    e = {n: v for n, v in os.environ.items() if not n.startswith(("DOCKER_", "KETCH_"))}
    proc = subprocess.Popen([*KETCH, "-H", k.host, "build", "--progress", "plain", "."],
                            cwd=tmp_path, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not build_containers(k):
            assert time.monotonic() < deadline, "the RUN container never appeared"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    deadline = time.monotonic() + 30
    while build_containers(k) or _leftovers(k):
        assert time.monotonic() < deadline, (build_containers(k), _leftovers(k))
        time.sleep(0.2)


def test_secret_is_mounted_but_never_stored(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-value")
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox\n"
        "RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len\n"
        "RUN --mount=type=secret,id=tok,target=/etc/tok.txt cat /etc/tok.txt | wc -c > /len2\n")})
    out = ketch(k, "build", "-q", "--secret", f"id=tok,src={secret}", "-t", "sec", ".",
                cwd=ctx)
    assert out.returncode == 0, out.stderr
    assert run(k, "sec", "cat", "/len").strip() == "12"
    assert run(k, "sec", "cat", "/len2").strip() == "12"
    listing = run(k, "sec", "sh", "-c", "ls -a /run /etc; test ! -e /run/secrets")
    assert "tok.txt" not in listing
    saved = tmp_path / "sec.tar"
    assert docker(k, "save", "-o", str(saved), "sec").returncode == 0
    with tarfile.open(saved) as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isfile() else None
            if f is None:
                continue
            data = f.read()
            if m.name.endswith((".tar", "/layer.tar")) or data[:2] == b"\x1f\x8b":
                import gzip
                import io

                raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
                with tarfile.open(fileobj=io.BytesIO(raw)) as layer:
                    for lm in layer:
                        assert "secrets" not in lm.name and "tok.txt" not in lm.name
                        lf = layer.extractfile(lm) if lm.isfile() else None
                        assert lf is None or b"s3cr3t-value" not in lf.read()
            assert b"s3cr3t-value" not in data
    # BuildKit: a secret not given is no mount (the RUN fails), unless required
    missing = ketch(k, "build", "-q", ".", cwd=ctx)
    assert missing.returncode == 1 and "returned a non-zero code" in missing.stderr
    write(ctx, {"Dockerfile": "FROM busybox\nRUN --mount=type=secret,id=tok,required true\n"})
    required = ketch(k, "build", "-q", ".", cwd=ctx)
    assert required.returncode == 1 and "secret tok not found" in required.stderr


def test_cache_mount_outlives_builds_and_stays_out_of_layers(loaded_ketchd: Ketchd,
                                                             tmp_path: Path) -> None:
    k = loaded_ketchd
    write(tmp_path, {"Dockerfile": (
        "FROM busybox\n"
        "RUN --mount=type=cache,target=/cache echo x >> /cache/log && wc -l < /cache/log > /n\n")})
    for expected in ("1", "2"):
        out = ketch(k, "build", "-q", "--no-cache", "-t", "cm", ".", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert run(k, "cm", "cat", "/n").strip() == expected
    assert run(k, "cm", "sh", "-c", "test -e /cache && echo there || echo gone").strip() \
        == "gone"
    df = docker(k, "system", "df", "-v", "--format", "{{json .BuildCache}}")
    assert df.returncode == 0 and "exec.cachemount" in df.stdout, df.stdout + df.stderr
    assert docker(k, "builder", "prune", "-af").returncode == 0     # the mount's data too
    out = ketch(k, "build", "-q", "--no-cache", "-t", "cm", ".", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert run(k, "cm", "cat", "/n").strip() == "1"
    write(tmp_path, {"Dockerfile": (
        "FROM busybox\n"
        "RUN --mount=type=cache,target=/c,id=owned,uid=1000,gid=1001,mode=0700,sharing=locked "
        "stat -c '%u %g %a' /c > /st\n")})
    out = ketch(k, "build", "-q", "-t", "cm2", ".", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert run(k, "cm2", "cat", "/st").strip() == "1000 1001 700"


def test_run_network_none_and_tmpfs_and_bind(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    write(tmp_path, {"data/in.txt": "bound\n", "Dockerfile": (
        "FROM busybox\n"
        "RUN --network=none ls /sys/class/net > /nets\n"
        "RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && "
        "grep -c ' /scratch tmpfs' /proc/mounts > /tmpfs\n"
        "RUN --mount=type=bind,source=data,target=/mnt cat /mnt/in.txt > /copied\n")})
    out = ketch(k, "build", "-q", "-t", "nets", ".", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert run(k, "nets", "cat", "/nets").split() == ["lo"]
    assert run(k, "nets", "cat", "/tmpfs").strip() == "1"
    assert run(k, "nets", "cat", "/copied") == "bound\n"
    assert run(k, "nets", "sh", "-c", "ls /scratch /mnt | wc -l").strip() == "0"


def test_source_date_epoch_gives_the_same_image(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    write(tmp_path, {"a.txt": "a\n", "Dockerfile": (
        "FROM busybox\nCOPY a.txt /a.txt\nRUN echo made > /made && mkdir -p /d/e\n"
        "ENV X=1\n")})
    ids = []
    for _ in range(2):
        out = ketch(k, "build", "-q", "--no-cache", ".", cwd=tmp_path,
                    env={"SOURCE_DATE_EPOCH": "1700000000"})
        assert out.returncode == 0, out.stderr
        ids.append(out.stdout.strip())
        time.sleep(1.1)         # a different second: the clamp must hide it
    assert ids[0] == ids[1]
    assert inspect(k, ids[0])["Created"].startswith("2023-11-14T22:13:20")


def test_output_local_and_tar(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo out > /result\n"})
    dest = tmp_path / "out"
    out = ketch(k, "build", "-q", "-o", f"type=local,dest={dest}", ".", cwd=ctx)
    assert out.returncode == 0, out.stderr
    assert (dest / "result").read_text() == "out\n"
    tar_path = tmp_path / "out.tar"
    out = ketch(k, "build", "-q", "--output", f"type=tar,dest={tar_path}", ".", cwd=ctx)
    assert out.returncode == 0, out.stderr
    with tarfile.open(tar_path) as tf:
        assert tf.extractfile("result").read() == b"out\n"   # type: ignore[union-attr]


def test_build_cache_in_df_and_builder_prune(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo 1 > /one\nRUN echo 2 > /two\n"})
    out = ketch(k, "build", "-q", ".", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    df = docker(k, "system", "df", "--format", "{{json .}}")
    assert df.returncode == 0, df.stderr
    rows = {json.loads(line)["Type"]: json.loads(line) for line in df.stdout.splitlines()}
    assert int(rows["Build Cache"]["TotalCount"]) >= 2
    bad = docker(k, "builder", "prune", "-f", "--filter", "until=bogus")
    assert bad.returncode != 0 and "failed to prune build cache" in bad.stderr
    recent = docker(k, "builder", "prune", "-af", "--filter", "until=1h")
    assert recent.returncode == 0 and "Total reclaimed space: 0B" in recent.stdout
    cached = ketch(k, "build", "--progress", "plain", "-t", "kept", ".", cwd=tmp_path)
    assert cached.stderr.count("CACHED") == 2, cached.stderr
    # Without -a only the cache no tagged image stands on goes: this build's stays.
    assert docker(k, "builder", "prune", "-f").returncode == 0
    cached = ketch(k, "build", "--progress", "plain", ".", cwd=tmp_path)
    assert cached.stderr.count("CACHED") == 2, cached.stderr
    assert docker(k, "rmi", "kept").returncode == 0
    pruned = docker(k, "builder", "prune", "-af")
    assert pruned.returncode == 0, pruned.stderr
    assert "Total reclaimed space" in pruned.stdout
    again = ketch(k, "build", "--progress", "plain", ".", cwd=tmp_path)
    assert again.returncode == 0 and "CACHED" not in again.stderr


def test_docker_cli_build_and_run(loaded_ketchd: Ketchd, tmp_path: Path,
                                  start_ketchd: Callable[..., Ketchd]) -> None:
    k = loaded_ketchd
    write(tmp_path, {"app.sh": "echo app says $GREETING\n", "Dockerfile": (
        "FROM busybox AS base\nENV GREETING=hi\n"
        "FROM base\nWORKDIR /srv\nCOPY app.sh .\nCMD [\"sh\", \"/srv/app.sh\"]\n")})
    env = {n: v for n, v in os.environ.items() if not n.startswith("DOCKER_")}
    env.update(DOCKER_HOST=k.host, DOCKER_BUILDKIT="0",
               DOCKER_CONFIG=str(k.dir / "docker-config"))
    from tests.integration.test_daemon_system import DOCKER

    assert DOCKER is not None
    out = subprocess.run([DOCKER, "build", "-t", "app:1", "."], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Successfully tagged app:1" in out.stdout
    assert run(k, "app:1") == "app says hi\n"


def test_cache_from_an_image_pulled_from_a_registry(loaded_ketchd: Ketchd, tmp_path: Path,
                                                    start_registry: Callable[..., Any]) -> None:
    """CI's pattern: push the image, start from nothing, pull it, build with
    --cache-from: every step is served from the pulled image's layers."""
    k = loaded_ketchd
    reg = start_registry("ketch")
    name = f"{reg.host}/ci/app:cache"
    write(tmp_path, {"a.txt": "a\n", "Dockerfile": (
        "FROM busybox\nENV A=1\nCOPY a.txt /a\nRUN echo built > /b\nCMD [\"cat\", \"/b\"]\n")})
    out = ketch(k, "build", "-q", "-t", name, ".", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    first = out.stdout.strip()
    assert docker(k, "push", name).returncode == 0
    assert docker(k, "rmi", name).returncode == 0
    assert docker(k, "builder", "prune", "-af").returncode == 0
    assert docker(k, "pull", name).returncode == 0
    out = ketch(k, "build", "--progress", "plain", "--cache-from", name, "-t", "again", ".",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("CACHED") == 4, out.stderr
    assert "Running in" not in out.stderr and "#4 0." not in out.stderr
    assert run(k, "again") == "built\n"
    assert inspect(k, "again")["RootFS"] == inspect(k, first)["RootFS"]


def test_named_build_contexts(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    k = loaded_ketchd
    write(tmp_path / "extra", {"conf/app.conf": "x=1\n"})
    write(tmp_path / "base", {"bin/tool": "tool\n"})
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        "FROM rootdir AS tools\n"
        "FROM busybox\nCOPY --from=extra conf/app.conf /etc/app.conf\n"
        "COPY --from=tools /bin/tool /usr/local/bin/tool\n"
        "RUN --mount=from=extra,target=/x cat /x/conf/app.conf > /seen\n")})
    out = ketch(k, "build", "-q", "--build-context", f"extra={tmp_path / 'extra'}",
                "--build-context", f"rootdir={tmp_path / 'base'}", "-t", "named", ".", cwd=ctx)
    assert out.returncode == 0, out.stderr
    assert run(k, "named", "cat", "/etc/app.conf", "/usr/local/bin/tool", "/seen") == \
        "x=1\ntool\nx=1\n"


@pytest.mark.parametrize("mode", ["in-place", "tar"])
def test_dockerignore_same_in_place_and_as_a_tar(loaded_ketchd: Ketchd, tmp_path: Path,
                                                 mode: str) -> None:
    """ketch's CLI lets a local daemon read the context where it is; what COPY sees must
    be what a tar would have carried, and the user's directory stays untouched."""
    k = loaded_ketchd
    ctx = write(tmp_path, {"keep/a.txt": "a", "keep/b.key": "k", "logs/x.log": "x",
                           "logs/important.log": "i",
                           ".dockerignore": "**/*.key\nlogs\n!logs/important.log\n"
                                            "Dockerfile\n.dockerignore\n",
                           "Dockerfile": "FROM busybox\nCOPY . /ctx\n"
                                         "RUN --mount=target=/m find /m -type f | sort > /seen\n"})
    before = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*"))
    env = {"KETCH_BUILD_CONTEXT": "tar"} if mode == "tar" else {}
    out = ketch(k, "build", "-q", "-t", f"ign-{mode}", ".", cwd=ctx, env=env)
    assert out.returncode == 0, out.stderr
    listing = run(k, f"ign-{mode}", "sh", "-c", "cd /ctx && find . | sort; cat /seen")
    assert listing.split() == [".", "./keep", "./keep/a.txt", "./logs",
                               "./logs/important.log",
                               "/m/keep/a.txt", "/m/logs/important.log"]
    assert sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*")) == before


def test_from_pulls_a_missing_base_and_pull_refreshes_it(loaded_ketchd: Ketchd, tmp_path: Path,
                                                          start_registry: Callable[..., Any]
                                                          ) -> None:
    k = loaded_ketchd
    reg = start_registry("ketch")
    base = f"{reg.host}/lib/base:1"
    assert docker(k, "tag", "busybox", base).returncode == 0
    assert docker(k, "push", base).returncode == 0
    assert docker(k, "rmi", base).returncode == 0
    write(tmp_path, {"Dockerfile": f"FROM {base}\nRUN echo on-base > /x\n"})
    out = ketch(k, "build", "-q", "-t", "pulled", ".", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert run(k, "pulled", "cat", "/x") == "on-base\n"
    assert docker(k, "image", "inspect", base).returncode == 0     # pulled by the build
    # A newer base in the registry: only --pull sees it.
    write(tmp_path / "newer", {"Dockerfile": "FROM busybox\nRUN echo v2 > /version\n"})
    assert ketch(k, "build", "-q", "-t", base, str(tmp_path / "newer")).returncode == 0
    assert docker(k, "push", base).returncode == 0
    assert docker(k, "tag", "busybox", base).returncode == 0        # the old one again here
    write(tmp_path, {"Dockerfile": f"FROM {base}\nRUN cat /version 2>/dev/null || true\n"})
    stale = ketch(k, "build", "-q", ".", cwd=tmp_path)
    fresh = ketch(k, "build", "-q", "--pull", ".", cwd=tmp_path)
    assert stale.returncode == 0 and fresh.returncode == 0, (stale.stderr, fresh.stderr)
    assert run(k, fresh.stdout.strip(), "cat", "/version") == "v2\n"
    missing = ketch(k, "build", "-q", ".", cwd=write(tmp_path / "m", {
        "Dockerfile": f"FROM {reg.host}/lib/nope:1\n"}))
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_add_from_a_url_and_when_nothing_listens(loaded_ketchd: Ketchd, tmp_path: Path) -> None:
    import hashlib
    import http.server
    import threading

    payload = b"fetched over http\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/files/data.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        k = loaded_ketchd
        url = f"http://127.0.0.1:{server.server_address[1]}/files/data.txt"
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        write(tmp_path, {"Dockerfile": f"FROM busybox\nADD --checksum={digest} {url} /srv/\n"})
        out = ketch(k, "build", "-q", "-t", "fetched", ".", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert run(k, "fetched", "cat", "/srv/data.txt").encode() == payload
        write(tmp_path, {"Dockerfile": f"FROM busybox\nADD --checksum=sha256:{'0' * 64} "
                                       f"{url} /srv/\n"})
        bad = ketch(k, "build", "-q", ".", cwd=tmp_path)
        assert bad.returncode == 1 and "checksum" in bad.stderr
    finally:
        server.shutdown()
        server.server_close()
    write(tmp_path, {"Dockerfile": f"FROM busybox\nADD {url} /srv/\n"})   # nothing listens now
    gone = ketch(k, "build", "-q", ".", cwd=tmp_path)
    assert gone.returncode == 1 and "no network access" in gone.stderr, gone.stderr
