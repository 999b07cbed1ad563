"""``ketch`` container commands against a real daemon, judged by docker's behaviour.

The daemon is a fixture parameter: Debian's dockerd 20.10 today (the reference
engine), ketchd when its container endpoints exist (add its param to
``engine``). Every container a test makes carries the session's label and is
removed (``rm -f``) by the fixture's finalizer, also when the test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.conftest import BIN
from tests.integration.engines import run_in_pty
from tests.integration.refdockerd import RefDockerd, ref_dockerd  # noqa: F401 - a fixture
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - a fixture
from tests.integration.test_daemon_system import start_ketchd  # noqa: F401 - a fixture

pytestmark = pytest.mark.root


@dataclass
class Engine:
    """A daemon for the CLI: where it listens and the flags every ``run`` needs there."""

    name: str
    host: str
    # dockerd runs here with --bridge none: containers go without a network.
    run_flags: list[str] = field(default_factory=list)
    label: str = ""

    def env(self) -> dict[str, str]:
        env = {n: v for n, v in os.environ.items()
               if n not in ("KETCH_HOST", "DOCKER_HOST", "DOCKER_API_VERSION")}
        env["KETCH_HOST"] = self.host
        return env


@pytest.fixture(params=["dockerd", "ketchd"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "dockerd":
        d: RefDockerd = request.getfixturevalue("ref_dockerd")
        e = Engine("dockerd", f"unix://{d.sock}", ["--network", "none"])
    else:
        k = request.getfixturevalue("start_ketchd")()
        archive = request.getfixturevalue("busybox_archive")
        e = Engine("ketchd", k.host, ["--network", "none"])
        ok(ketch(e, "load", "-i", str(archive)))
    e.label = f"ketch-cli-test={secrets.token_hex(4)}"
    yield e
    # Every container of this test, whatever state it was left in.
    ids = ketch(e, "ps", "-aq", "--filter", f"label={e.label}").stdout.split()
    if ids:
        ketch(e, "rm", "-f", *ids)
    left = ketch(e, "ps", "-aq", "--filter", f"label={e.label}").stdout.split()
    assert not left, f"containers left behind: {left}"


def ketch(e: Engine, *args: str, input: bytes | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(BIN / "ketch"), *args], capture_output=True, env=e.env(),
                         timeout=timeout, input=input if input is not None else b"")
    return subprocess.CompletedProcess(out.args, out.returncode,
                                       out.stdout.decode(errors="replace"),
                                       out.stderr.decode(errors="replace"))


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return out.stdout


def run(e: Engine, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``ketch run`` with the engine's flags and the test's label before the image."""
    return ketch(e, "run", "-l", e.label, *e.run_flags, *args, input=input)


def converse(argv: list[str], env: dict[str, str], steps: list[tuple[bytes, bytes | None]],
             timeout: float = 30) -> tuple[int, bytes]:
    """Run ``argv`` on a terminal; type each input once the previous answer has appeared."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        time.sleep(1.0)  # the session is attached before the first keystroke
        for data, expect in steps:
            os.write(master, data)
            while expect is not None and expect not in out:
                assert time.monotonic() < deadline, out
                r, _, _ = select.select([master], [], [], 0.1)
                if r:
                    out += os.read(master, 65536)
        while proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
        if proc.poll() is None:
            proc.kill()
        return proc.wait(timeout=10), out
    finally:
        os.close(master)


def test_run_output_and_exit_codes(engine: Engine) -> None:
    out = run(engine, "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    assert ok(run(engine, "--rm", "busybox", "true")) == ""

    missing = run(engine, "--rm", "busybox", "nosuchcmd")
    assert missing.returncode == 127, missing.stderr
    assert missing.stderr.startswith("ketch: Error response from daemon: ")
    assert "nosuchcmd" in missing.stderr
    assert missing.stderr.endswith("\n\nRun 'ketch run --help' for more information\n")

    assert run(engine, "--rm", "busybox", "/etc").returncode == 126

    bad = run(engine, "-m", "x", "busybox")
    assert bad.returncode == 125
    assert bad.stderr.startswith('invalid argument "x" for "-m, --memory" flag: invalid size: '
                                 "'x'\n\nUsage:  ketch run [OPTIONS] IMAGE [COMMAND] [ARG...]")

    conflict = run(engine, "--rm", "--restart", "always", "busybox")
    assert (conflict.returncode, conflict.stderr) == (
        125, "ketch: conflicting options: cannot specify both --restart and --rm\n\n"
             "Run 'ketch run --help' for more information\n")

    # (a registry nobody listens on: tests never reach past loopback)
    nosuch = run(engine, "127.0.0.1:1/nosuch-image:1", "true")
    assert nosuch.returncode == 125
    assert nosuch.stderr.startswith(
        "Unable to find image '127.0.0.1:1/nosuch-image:1' locally\n")
    assert "connect: connection refused" in nosuch.stderr


def test_stdin_half_close(engine: Engine) -> None:
    out = run(engine, "--rm", "-i", "busybox", "cat", input=b"hi\n")
    assert (out.returncode, out.stdout) == (0, "hi\n")
    # A longer input, and output that only comes after stdin's EOF.
    data = b"".join(b"line %d\n" % i for i in range(2000))
    out = run(engine, "--rm", "-i", "busybox", "sh", "-c", "wc -l; echo done", input=data)
    assert out.stdout.split() == ["2000", "done"]


def test_detached_lifecycle(engine: Engine) -> None:
    name = f"kt-{secrets.token_hex(3)}"
    cid = ok(run(engine, "-d", "--name", name, "busybox", "sh", "-c",
                 "echo one; echo two >&2; sleep 300")).strip()
    assert len(cid) == 64

    rows = ok(ketch(engine, "ps", "--filter", f"label={engine.label}",
                    "--format", "{{.ID}} {{.Names}} {{.State}}")).split()
    assert rows == [cid[:12], name, "running"]
    assert ok(ketch(engine, "ps", "-q", "--no-trunc", "--filter",
                    f"name={name}")).split() == [cid]

    deadline = time.monotonic() + 10
    while True:
        logs = ketch(engine, "logs", name)
        if "two" in logs.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (logs.stdout, logs.stderr) == ("one\n", "two\n")
    stamped = ok(ketch(engine, "logs", "-t", "--tail", "1", name)) + \
        ketch(engine, "logs", "-t", "--tail", "1", name).stderr
    assert "T" in stamped.split()[0] and stamped.split()[0].endswith("Z")

    ex = ketch(engine, "exec", name, "sh", "-c", "echo in-exec; exit 4")
    assert (ex.returncode, ex.stdout) == (4, "in-exec\n")
    assert ok(ketch(engine, "exec", "-i", name, "cat", input=b"piped\n")) == "piped\n"
    assert ok(ketch(engine, "exec", "-e", "X=42", "-w", "/tmp", name, "sh", "-c",
                    "echo $X $(pwd)")) == "42 /tmp\n"
    assert ketch(engine, "exec", name, "nosuchcmd").returncode in (126, 127)

    top = ok(ketch(engine, "top", name)).splitlines()
    assert top[0].split()[:2] == ["UID", "PID"] and any("sleep 300" in r for r in top[1:])

    stats = ok(ketch(engine, "stats", "--no-stream", name)).splitlines()
    assert stats[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    assert stats[1].split()[:2] == [cid[:12], name]
    assert ok(ketch(engine, "stats", "--no-stream", "--format", "{{.Name}}", name)) == \
        name + "\n"

    assert ok(ketch(engine, "pause", name)) == name + "\n"
    assert ok(ketch(engine, "inspect", "-f", "{{.State.Status}}", name)) == "paused\n"
    assert ok(ketch(engine, "unpause", name)) == name + "\n"

    new = name + "-b"
    assert ok(ketch(engine, "rename", name, new)) == ""
    info = json.loads(ok(ketch(engine, "container", "inspect", new)))
    assert info[0]["Id"] == cid and info[0]["Name"] == "/" + new

    assert ok(ketch(engine, "stop", "-t", "1", new)) == new + "\n"
    assert ok(ketch(engine, "wait", new)) == "137\n"
    assert ok(ketch(engine, "ps", "-a", "--filter", f"id={cid}", "--format",
                    "{{.Status}}")).startswith("Exited (137)")
    assert ok(ketch(engine, "rm", new)) == new + "\n"
    gone = ketch(engine, "rm", new)
    assert (gone.returncode, gone.stderr) == (1, f"Error response from daemon: No such "
                                                 f"container: {new}\n")


def test_create_start_attach_and_wait(engine: Engine) -> None:
    cid = ok(ketch(engine, "create", "-l", engine.label, *engine.run_flags, "busybox", "sh",
                   "-c", "echo started; exit 5")).strip()
    out = ketch(engine, "start", "-a", cid)
    assert (out.returncode, out.stdout) == (5, "started\n")
    assert ok(ketch(engine, "wait", cid)) == "5\n"
    assert ok(ketch(engine, "start", cid)) == cid + "\n"
    assert ok(ketch(engine, "wait", cid)) == "5\n"
    assert ok(ketch(engine, "container", "rm", cid)) == cid + "\n"


def test_inspect_container_then_image(engine: Engine) -> None:
    name = f"kt-{secrets.token_hex(3)}"
    ok(ketch(engine, "create", "-l", engine.label, *engine.run_flags, "--name", name,
             "-e", "A=1", "busybox", "true"))
    both = json.loads(ok(ketch(engine, "inspect", name, "busybox")))
    assert both[0]["Name"] == "/" + name and "A=1" in both[0]["Config"]["Env"]
    assert "RepoTags" in both[1]
    miss = ketch(engine, "inspect", "no-such-thing")
    assert (miss.returncode, miss.stdout, miss.stderr) == (
        1, "[]\n", "Error: No such object: no-such-thing\n")
    only = ketch(engine, "container", "inspect", "busybox")
    assert only.returncode == 1
    assert only.stderr == "Error response from daemon: No such container: busybox\n"


def test_tty_run_and_detach_keys(engine: Engine) -> None:
    argv = [str(BIN / "ketch"), "run", "-l", engine.label, *engine.run_flags, "-it"]
    t0 = time.monotonic()
    rc, out = run_in_pty([*argv, "--rm", "busybox", "sh"], engine.env(),
                         input=b"stty size; echo hi-$((1+2)); exit 7\r",
                         before_input=lambda: time.monotonic() - t0 > 1.5, timeout=30)
    assert rc == 7, out
    assert b"24 80" in out and b"hi-3" in out
    # ctrl-p ctrl-q leaves the container running.
    name = f"kt-{secrets.token_hex(3)}"
    t0 = time.monotonic()
    rc, out = run_in_pty([*argv, "--name", name, "busybox", "cat"], engine.env(),
                         input=b"\x10\x11", before_input=lambda: time.monotonic() - t0 > 1.5,
                         timeout=30)
    assert rc == 0, out
    assert ok(ketch(engine, "inspect", "-f", "{{.State.Running}}", name)) == "true\n"


def test_cidfile_and_prune(engine: Engine, tmp_path: Path) -> None:
    cidfile = tmp_path / "cid"
    cid = ok(run(engine, "-d", "--cidfile", str(cidfile), "busybox", "true")).strip()
    assert cidfile.read_text() == cid
    again = run(engine, "-d", "--cidfile", str(cidfile), "busybox", "true")
    assert again.returncode == 125 and "container ID file found" in again.stderr
    ok(ketch(engine, "wait", cid))
    pruned = ok(ketch(engine, "container", "prune", "-f", "--filter",
                      f"label={engine.label}"))
    assert pruned.startswith("Deleted Containers:\n") and cid in pruned
    assert pruned.endswith("Total reclaimed space: 0B\n") or "Total reclaimed space" in pruned


def test_kill_restart_update(engine: Engine) -> None:
    name = f"kt-{secrets.token_hex(3)}"
    ok(run(engine, "-d", "--name", name, "busybox", "sh", "-c",
           "trap 'exit 42' USR1; while true; do sleep 0.1; done"))
    assert ok(ketch(engine, "kill", "-s", "USR1", name)) == name + "\n"
    assert ok(ketch(engine, "wait", name)) == "42\n"
    assert ok(ketch(engine, "restart", "-t", "1", name)) == name + "\n"
    assert ok(ketch(engine, "inspect", "-f", "{{.State.Running}} {{.RestartCount}}",
                    name)).split()[0] == "true"
    assert ok(ketch(engine, "update", "--memory", "64m", "--memory-swap", "128m",
                    "--restart", "on-failure:2", name)) == name + "\n"
    assert ok(ketch(engine, "inspect", "-f",
                    "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}",
                    name)) == f"{64 << 20} on-failure\n"
    none = ketch(engine, "update", name)
    assert none.returncode == 1 and "one or more flags" in none.stderr
    assert ok(ketch(engine, "port", name)) == ""
    assert ok(ketch(engine, "kill", name)) == name + "\n"
    missing = ketch(engine, "kill", "kt-no-such-container")
    assert missing.returncode == 1 and "No such container" in missing.stderr
    forced = ketch(engine, "rm", "-f", "kt-no-such-container")
    assert (forced.returncode, forced.stdout) == (0, "")


def test_cp_both_ways(engine: Engine, tmp_path: Path) -> None:
    name = f"kt-{secrets.token_hex(3)}"
    ok(run(engine, "-d", "--name", name, "busybox", "sleep", "300"))
    src = tmp_path / "tree"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "f").write_text("payload\n")
    ok(ketch(engine, "cp", str(src), f"{name}:/tmp/"))              # into a directory
    ok(ketch(engine, "cp", str(src), f"{name}:/tmp/renamed"))       # to a new name
    ok(ketch(engine, "cp", f"{src}/.", f"{name}:/tmp/contents"))    # the contents only
    listing = ok(ketch(engine, "exec", name, "find", "/tmp", "-type", "f")).split()
    assert sorted(listing) == ["/tmp/contents/deep/f", "/tmp/renamed/deep/f",
                               "/tmp/tree/deep/f"]
    back = tmp_path / "back"
    ok(ketch(engine, "cp", f"{name}:/tmp/renamed", str(back)))
    assert (back / "deep" / "f").read_text() == "payload\n"
    ok(ketch(engine, "cp", f"{name}:/etc/hostname", str(tmp_path)))
    assert (tmp_path / "hostname").exists()
    missing = ketch(engine, "cp", f"{name}:/nosuch", str(tmp_path))
    assert (missing.returncode, missing.stderr) == (
        1, f"Error response from daemon: Could not find the file /nosuch in container "
           f"{name}\n")
    bad = ketch(engine, "cp", f"{name}:/etc/hostname", "/nonexistent-dir/x/")
    assert bad.stderr == 'invalid output path: directory "/nonexistent-dir" does not exist\n'


def test_attach_and_tty_logs(engine: Engine) -> None:
    name = f"kt-{secrets.token_hex(3)}"
    ok(run(engine, "-dit", "--name", name, "busybox", "sh"))
    rc, out = converse([str(BIN / "ketch"), "attach", name], engine.env(),
                       [(b"echo attached-$((2*3))\r", b"attached-6"), (b"\x10\x11", None)])
    assert rc == 0, out
    assert ok(ketch(engine, "inspect", "-f", "{{.State.Running}}", name)) == "true\n"
    # A tty container's log is raw (no stream frames), with the terminal's CRLF.
    assert "attached-6\r\n" in ok(ketch(engine, "logs", name))
    stopped = f"kt-{secrets.token_hex(3)}"
    ok(ketch(engine, "create", "-l", engine.label, *engine.run_flags, "--name", stopped,
             "busybox", "true"))
    refused = ketch(engine, "attach", stopped)
    assert (refused.returncode, refused.stderr) == (
        1, "You cannot attach to a stopped container, start it first\n")


def test_tty_resize_follows_the_terminal(engine: Engine) -> None:
    """SIGWINCH -> POST /containers/{id}/resize: the container sees the new size."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([str(BIN / "ketch"), "run", "-l", engine.label,
                             *engine.run_flags, "--rm", "-it", "busybox", "sh"],
                            stdin=slave, stdout=slave, stderr=slave, env=engine.env(),
                            start_new_session=True)
    os.close(slave)
    out = b""

    def until(expect: bytes) -> None:
        nonlocal out
        deadline = time.monotonic() + 20
        while expect not in out:
            assert time.monotonic() < deadline, out
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                out += os.read(master, 65536)

    try:
        time.sleep(1.0)
        os.write(master, b"stty size\r")
        until(b"24 80")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
        proc.send_signal(signal.SIGWINCH)  # no controlling terminal here: we tell it
        time.sleep(0.5)
        os.write(master, b"stty size; exit\r")
        until(b"40 132")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_diff_export_commit(engine: Engine, tmp_path: Path) -> None:
    import tarfile

    name = f"fs-{secrets.token_hex(3)}"
    ok(run(engine, "--name", name, "busybox", "sh", "-c",
           "echo x > /new; rm /bin/true; mkdir -p /etc/zz"))
    lines = ok(ketch(engine, "diff", name)).splitlines()
    for want in ("A /new", "D /bin/true", "C /etc", "A /etc/zz", "C /bin"):
        assert want in lines, lines
    out = tmp_path / "fs.tar"
    ok(ketch(engine, "export", "-o", str(out), name))
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert "new" in names and "bin/sh" in names and "bin/true" not in names
    assert not list(tmp_path.glob("fs.tar.*"))      # no temporary file left beside it
    piped = subprocess.run([str(BIN / "ketch"), "container", "export", name],
                           capture_output=True, env=engine.env(), timeout=60)
    assert piped.returncode == 0 and len(piped.stdout) == out.stat().st_size
    gone = ketch(engine, "export", "-o", str(tmp_path / "no" / "x.tar"), name)
    assert gone.returncode == 1 and "invalid output path" in gone.stderr

    repo = f"ketch-cli-commit-{secrets.token_hex(3)}"
    image = ok(ketch(engine, "commit", "-m", "hello", "-a", "me", "-c", "ENV A=1", name,
                     f"{repo}:v1")).strip()
    try:
        assert image.startswith("sha256:") and len(image) == 71
        got = ok(ketch(engine, "image", "inspect", f"{repo}:v1", "--format",
                       "{{.Id}} {{.Comment}} {{.Author}} {{index .Config.Env 1}}")).split()
        assert got == [image, "hello", "me", "A=1"]
        bad = ketch(engine, "commit", name, "Bad:x")
        assert (bad.returncode, bad.stderr) == (1, "invalid reference format: repository name "
                                                   "(library/Bad) must be lowercase\n")
        digest = ketch(engine, "commit", name, "x@sha256:" + "a" * 64)
        assert (digest.returncode, digest.stderr) == (
            1, "refusing to create a tag with a digest reference\n")
    finally:
        ketch(engine, "rmi", f"{repo}:v1")


def test_events_since_until_and_formats(engine: Engine) -> None:
    import re

    name = f"ev-{secrets.token_hex(3)}"
    t0 = int(time.time())
    ok(run(engine, "--name", name, "busybox", "true"))
    t1 = str(int(time.time()) + 1)
    window = ["--since", str(t0), "--until", t1, "--filter", f"container={name}"]
    lines = ok(ketch(engine, "events", *window)).splitlines()
    actions = [line.split()[2] for line in lines]
    assert actions == ["create", "attach", "start", "die"], lines
    pattern = (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) container die "
               r"[0-9a-f]{64} \(exitCode=0, image=busybox, (.*, )?name=" + name + r"\)")
    assert re.fullmatch(pattern, lines[-1]), lines[-1]
    docs = [json.loads(x) for x in
            ok(ketch(engine, "system", "events", *window, "--format", "json")).splitlines()]
    assert [d["Action"] for d in docs] == actions
    assert all(d["Type"] == "container" and d["Actor"]["Attributes"]["name"] == name
               for d in docs)
    templ = ok(ketch(engine, "events", *window, "--format",
                     "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")).splitlines()
    assert templ[-1] == f"container die {name}"
    bad = ketch(engine, "events", "--format", "{{.Foo}}")
    assert bad.returncode == 64
    assert bad.stderr == ('Error parsing format: template: :1:2: executing "" at <.Foo>: '
                          "can't evaluate field Foo in type *events.Message\n")
