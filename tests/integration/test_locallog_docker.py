"""The local log driver through real clients: the docker CLI and docker-py against
a private ketchd, ketch's own CLI, the daemon-wide default from daemon.json,
and a differential check against Debian's dockerd 20.10 (its files decoded by
ketch's reader, ketch's files framed as dockerd's).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.conftest import BIN
from tests.integration.refdockerd import RefDockerd, ref_dockerd  # noqa: F401 - a fixture
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    docker,
    start_ketchd,
)

from ketch.engine import locallog
from ketch.engine.logread import ReadOptions, read_logs

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

NONE = ("--network", "none")


@pytest.fixture
def ketchd(loaded_ketchd: Ketchd) -> Ketchd:
    """A private ketchd with busybox loaded (tests/integration/conftest.py)."""
    return loaded_ketchd


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return out.stdout


def inspect(k: Ketchd, name: str) -> dict:
    return json.loads(ok(docker(k, "inspect", name)))[0]


def log_dir(root: Path, cid: str) -> Path:
    return root / "containers" / cid / "local-logs"


def entries(path: Path) -> list[locallog.Entry]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    frames, used = locallog.split(data)
    assert used == len(data), f"{path}: {len(data) - used} bytes that are not whole frames"
    return [locallog.decode(f) for f in frames]


def all_entries(d: Path) -> list[locallog.Entry]:
    """Every entry of a local log, oldest file first."""
    rotated = sorted((p for p in d.iterdir() if p.name != "container.log"),
                     key=lambda p: -int(p.name.split(".")[2]))
    return [e for p in [*rotated, d / "container.log"] for e in entries(p)]


def rfc3339(ns: int) -> str:
    """The CLI's -t format (RFC 3339 with nanoseconds, zeros kept)."""
    secs, nanos = divmod(ns, 10**9)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{nanos:09d}Z"


def wait_exited(k: Ketchd, name: str) -> None:
    assert ok(docker(k, "wait", name)).strip() == "0"


SEQ = "i=1; while [ $i -le {n} ]; do echo line-$i; i=$((i+1)); done"


def test_logs_tail_timestamps_since_until(ketchd: Ketchd) -> None:
    k = ketchd
    cid = ok(docker(k, "run", "-d", *NONE, "--name", "l1", "--log-driver", "local",
                    "--log-opt", "max-size=1k", "--log-opt", "max-file=3", "busybox",
                    "sh", "-c", SEQ.format(n=200) + "; usleep 200000; echo done >&2")).strip()
    wait_exited(k, "l1")
    doc = inspect(k, "l1")
    assert doc["HostConfig"]["LogConfig"] == {"Type": "local",
                                              "Config": {"max-size": "1k", "max-file": "3"}}
    assert doc["LogPath"] == ""
    d = log_dir(k.root, cid)
    assert sorted(p.name for p in d.iterdir()) == ["container.log", "container.log.1.gz",
                                                   "container.log.2.gz"]
    # 1k is 1000 bytes (go-units' FromHumanSize): a file is rotated once it reaches it.
    for p in ("container.log.1.gz", "container.log.2.gz"):
        size = len(gzip.decompress((d / p).read_bytes()))
        assert 1000 <= size < 1000 + 40, (p, size)
    kept = all_entries(d)
    first = int(kept[0].line.split(b"-")[1])
    assert [e.line for e in kept] == [b"line-%d" % i for i in range(first, 201)] + [b"done"]
    out = docker(k, "logs", "l1")
    assert out.stdout == "".join(f"line-{i}\n" for i in range(first, 201))
    assert out.stderr == "done\n"
    # --tail across the current file into the compressed .1.gz
    current = len(entries(d / "container.log"))
    n = current + 3
    tail = docker(k, "logs", "--tail", str(n), "l1")
    assert tail.stdout == "".join(f"line-{i}\n" for i in range(202 - n, 201))
    assert tail.stderr == "done\n"
    # -t: each line's own time
    stamped = ok(docker(k, "logs", "-t", "--tail", "3", "l1")).splitlines()
    assert stamped == [f"{rfc3339(e.time_nano)} {e.line.decode()}" for e in kept[-3:-1]]
    # --since/--until with the entries' times (inclusive)
    since, until = kept[10].time_nano, kept[14].time_nano
    out = ok(docker(k, "logs", "--since", rfc3339(since), "--until", rfc3339(until), "l1"))
    assert out == "".join(f"{e.line.decode()}\n" for e in kept[10:15])


def test_follow_across_rotation(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "f1", "--log-driver", "local",
              "--log-opt", "max-size=100", "--log-opt", "max-file=5", "busybox", "sh", "-c",
              "sleep 1; i=1; while [ $i -le 40 ]; do echo line-$i; usleep 30000; "
              "i=$((i+1)); done"))
    # Started before the output; ends when the container does.
    out = docker(k, "logs", "-f", "f1")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "".join(f"line-{i}\n" for i in range(1, 41))
    # After the exit: -f ends at once with what is kept.
    again = docker(k, "logs", "-f", "--tail", "2", "f1")
    assert again.stdout == "line-39\nline-40\n"


def test_partial_lines_and_no_newline(ketchd: Ketchd) -> None:
    k = ketchd
    cid = ok(docker(k, "run", "-d", *NONE, "--name", "p1", "--log-driver", "local",
                    "busybox", "sh", "-c",
                    "head -c 20000 /dev/zero | tr '\\0' x; echo; printf end")).strip()
    wait_exited(k, "p1")
    es = entries(log_dir(k.root, cid) / "container.log")
    assert [len(e.line) for e in es] == [16384, 20000 - 16384, 3]
    a, b, c = (e.partial for e in es)
    assert a and b and c and a.id == b.id != c.id
    assert (a.ordinal, a.last, b.ordinal, b.last, c.ordinal, c.last) == (1, False, 2, True,
                                                                         1, False)
    assert ok(docker(k, "logs", "p1")) == "x" * 20000 + "\nend"


def test_option_errors_as_dockerd(ketchd: Ketchd) -> None:
    k = ketchd
    bad = docker(k, "run", "--rm", *NONE, "--log-driver", "local", "--log-opt", "x=1",
                 "busybox", "true")
    assert bad.returncode == 125
    assert "unknown log opt 'x' for log driver local" in bad.stderr
    ok(docker(k, "create", *NONE, "--name", "v1", "--log-driver", "local",
              "--log-opt", "max-size=abc", "busybox", "true"))
    started = docker(k, "start", "v1")
    assert started.returncode != 0
    msg = "failed to initialize logging driver: invalid value for max-size: abc: " \
          "invalid size: 'abc'"
    assert msg in started.stderr
    state = inspect(k, "v1")["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("created", 128, msg)
    never = docker(k, "logs", "v1")        # no file yet: nothing, as dockerd
    assert (never.returncode, never.stdout, never.stderr) == (0, "", "")
    one = docker(k, "run", "--rm", *NONE, "--log-driver", "local", "--log-opt", "max-file=1",
                 "busybox", "true")
    assert "compression cannot be enabled when max file count is 1" in one.stderr
    assert ok(docker(k, "run", "--rm", *NONE, "--log-driver", "local",
                     "--log-opt", "max-file=1", "--log-opt", "compress=false",
                     "busybox", "echo", "fine")) == "fine\n"
    # json-file's values in the same words (dockerd 20.10's).
    js = docker(k, "run", "--rm", *NONE, "--log-opt", "max-size=abc", "busybox", "true")
    assert "failed to initialize logging driver: invalid size: 'abc'" in js.stderr
    assert "OCI runtime" not in js.stderr
    plugin = docker(k, "run", "--rm", *NONE, "--log-driver", "foo", "busybox", "true")
    assert 'error looking up logging plugin foo: plugin "foo" not found' in plugin.stderr


def test_daemon_default_from_daemon_json(start_ketchd: Callable[..., Ketchd],  # noqa: F811
                                         busybox_archive: Path) -> None:  # noqa: F811
    k = start_ketchd({"log-driver": "local", "log-opts": {"max-size": "2k", "max-file": "2"}})
    ok(docker(k, "load", "-i", str(busybox_archive)))
    assert ok(docker(k, "info", "--format", "{{.LoggingDriver}} {{.Plugins.Log}}")) == \
        "local [json-file local]\n"
    cid = ok(docker(k, "run", "-d", *NONE, "--name", "d1", "busybox", "sh", "-c",
                    SEQ.format(n=150))).strip()
    wait_exited(k, "d1")
    assert inspect(k, "d1")["HostConfig"]["LogConfig"] == {
        "Type": "local", "Config": {"max-size": "2k", "max-file": "2"}}
    d = log_dir(k.root, cid)
    assert sorted(p.name for p in d.iterdir()) == ["container.log", "container.log.1.gz"]
    assert ok(docker(k, "logs", "--tail", "2", "d1")) == "line-149\nline-150\n"
    ok(docker(k, "rm", "d1"))
    assert not d.exists()
    # A container's own driver keeps none of the daemon's options.
    ok(docker(k, "run", "-d", *NONE, "--name", "j1", "--log-driver", "json-file",
              "busybox", "echo", "json"))
    wait_exited(k, "j1")
    assert inspect(k, "j1")["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert ok(docker(k, "logs", "j1")) == "json\n"


def test_ketch_cli_and_docker_py(ketchd: Ketchd) -> None:
    k = ketchd
    env = {n: v for n, v in os.environ.items() if n not in ("KETCH_HOST", "DOCKER_HOST")}
    env["KETCH_HOST"] = k.host
    out = subprocess.run([str(BIN / "ketch"), "run", "--name", "kc", *NONE,
                          "--log-driver", "local", "--log-opt", "max-file=2", "busybox",
                          "sh", "-c", "echo from-ketch; echo err >&2"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    logs = subprocess.run([str(BIN / "ketch"), "logs", "--tail", "1", "kc"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "", "err\n")
    assert inspect(k, "kc")["HostConfig"]["LogConfig"]["Type"] == "local"

    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=k.host, timeout=60)
    try:
        c = client.containers.run(
            "busybox", ["sh", "-c", "echo one; echo two"], network_mode="none", detach=True,
            log_config=docker_py.types.LogConfig(type="local", config={"max-size": "10k"}))
        assert c.wait()["StatusCode"] == 0
        assert c.logs() == b"one\ntwo\n"
        assert c.logs(tail=1, timestamps=True).decode().endswith("Z two\n")
        c.reload()
        assert c.attrs["HostConfig"]["LogConfig"] == {"Type": "local",
                                                      "Config": {"max-size": "10k"}}
        c.remove()
    finally:
        client.close()


# -- against dockerd 20.10 ------------------------------------------------------------------
# Pauses around stderr so both engines see the two streams in the same order.
SCRIPT = ("echo hello; usleep 200000; echo err >&2; usleep 200000; "
          "head -c 20000 /dev/zero | tr '\\0' y; echo; "
          + SEQ.format(n=60) + "; printf partial")


def test_differential_with_dockerd(ketchd: Ketchd, ref_dockerd: RefDockerd) -> None:  # noqa: F811
    k, d = ketchd, ref_dockerd
    opts = ["--log-driver", "local", "--log-opt", "max-size=1k", "--log-opt", "max-file=4"]
    ref_id = d.ok("run", "-d", "--network", "none", *opts, "busybox", "sh", "-c",
                  SCRIPT).stdout.strip()
    try:
        d.ok("wait", ref_id)
        time.sleep(0.5)         # dockerd compresses the last rotated file in the background
        ours = ok(docker(k, "run", "-d", *NONE, *opts, "busybox", "sh", "-c", SCRIPT)).strip()
        wait_exited(k, ours)
        ref_dir, our_dir = log_dir(d.data_root, ref_id), log_dir(k.root, ours)
        assert sorted(p.name for p in ref_dir.iterdir()) == \
            sorted(p.name for p in our_dir.iterdir())

        # The same entries in the same files, but for times and partial ids.
        def shape(dir_: Path) -> list[list[tuple[object, ...]]]:
            files = sorted(dir_.iterdir(), key=lambda p: p.name)
            return [[(e.source, e.line, e.partial is not None,
                      e.partial and (e.partial.ordinal, e.partial.last, len(e.partial.id)))
                     for e in entries(p)] for p in files]

        assert shape(our_dir) == shape(ref_dir)
        # Field for field the same encoding once times and ids are made equal.
        for a, b in zip(all_entries(our_dir), all_entries(ref_dir), strict=True):
            same = locallog.Entry(a.source, b.time_nano, a.line,
                                  a.partial and locallog.Partial(
                                      b.partial.id if b.partial else "", a.partial.ordinal,
                                      a.partial.last))
            assert locallog.frame(same) == locallog.frame(b)
        # Both compressed headers carry lastTime = the time of the file's last entry.
        for dir_ in (ref_dir, our_dir):
            gz = dir_ / "container.log.1.gz"
            fd = os.open(gz, os.O_RDONLY)
            try:
                meta = locallog.gzip_meta(fd)
            finally:
                os.close(fd)
            last = entries(gz)[-1].time_nano
            assert meta["lastTime"].rstrip("Z").split(".")[1].ljust(9, "0") == \
                f"{last % 10**9:09d}"

        # ketch's reader on dockerd's files gives what dockerd's docker logs gives, but
        # for one thing: 20.10's reader forgets the newline after the last piece of a
        # cut line (later moby gives it back, as json-file always did; so does ketch).
        def fixed(text: str) -> str:
            return text.replace("yline-1\n", "y\nline-1\n")

        ref_path = str(ref_dir / "container.log")
        for args, ropts in [([], ReadOptions()), (["--tail", "5"], ReadOptions(tail=5)),
                            (["--tail", "66"], ReadOptions(tail=66))]:
            res = d.ok("logs", *args, ref_id)
            recs = list(read_logs(ref_path, ropts))
            assert b"".join(r.text for r in recs if r.stream == "stdout").decode() == \
                fixed(res.stdout)
            assert b"".join(r.text for r in recs if r.stream == "stderr").decode() == res.stderr
        # ... and ketchd's docker logs on its own files the same as dockerd's on its own.
        for args in ([], ["--tail", "5"], ["--tail", "66"]):
            res, mine = d.ok("logs", *args, ref_id), docker(k, "logs", *args, ours)
            assert (mine.stdout, mine.stderr) == (fixed(res.stdout), res.stderr)
    finally:
        d.cli("rm", "-f", ref_id)
