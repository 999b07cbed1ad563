"""The build client and ``ketch build``: the query and tar sent, the messages read, the renderers.

The daemon side is the real API app over a fake BuildService (tests.unit.test_build_api),
served on a unix socket in a thread, so the client's chunked upload and the stream it
reads are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.unit.test_api_images import FakeImages
from tests.unit.test_api_versions import Backend as SystemBackend
from tests.unit.test_build_api import IMG4, LEGACY, FakeBuilder, context_tar, failing, three_steps

from ketch.api import make_app
from ketch.client import Client
from ketch.client._build import BuildFailed, build_query
from ketch.errors import InvalidArgument


@contextlib.contextmanager
def serving(builder: FakeBuilder, sock: Path) -> Iterator[str]:
    """The API app on a unix socket, in a thread with its own loop."""
    app = make_app(SystemBackend(), FakeImages(), builder=builder)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.UnixSite(runner, str(sock)).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"unix://{sock}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_build_query_sends_only_what_differs_from_the_defaults() -> None:
    assert build_query() == []
    q = build_query(dockerfile="d/Df", tags=["a", "b:1"], build_args={"A": "1", "B": None},
                    target="t", no_cache=True, no_cache_filter=["s"], cache_from=["c"],
                    pull=True, labels={"l": "v"}, network_mode="host",
                    extra_hosts=["h:1.2.3.4"], platform="linux/amd64", memory=10,
                    memory_swap=-1, cpu_shares=2, cpu_period=3, cpu_quota=4,
                    cpuset_cpus="0", cpuset_mems="1", shm_size=5,
                    ulimits=[{"Name": "nofile", "Soft": 1, "Hard": 2}], remove=False,
                    force_remove=True, quiet=True, ketch_progress=True, secrets=["s"],
                    contexts=["c"], source_date_epoch=0)
    assert q == [("dockerfile", "d/Df"), ("t", "a"), ("t", "b:1"),
                 ("buildargs", '{"A":"1","B":null}'), ("target", "t"), ("nocache", "1"),
                 ("ketchnocachefilter", '["s"]'), ("cachefrom", '["c"]'), ("pull", "1"),
                 ("labels", '{"l":"v"}'), ("networkmode", "host"),
                 ("extrahosts", "h:1.2.3.4"), ("platform", "linux/amd64"), ("memory", "10"),
                 ("memswap", "-1"), ("cpushares", "2"), ("cpuperiod", "3"),
                 ("cpuquota", "4"), ("shmsize", "5"), ("cpusetcpus", "0"),
                 ("cpusetmems", "1"), ("ulimits", '[{"Name":"nofile","Soft":1,"Hard":2}]'),
                 ("rm", "0"), ("forcerm", "1"), ("q", "1"), ("ketchprogress", "1"),
                 ("ketchsecrets", '["s"]'), ("ketchcontexts", '["c"]'),
                 ("sourcedateepoch", "0")]


def test_the_client_streams_the_context_and_reads_the_messages(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), three_steps)
    with serving(b, tmp_path / "s.sock") as host:
        client = Client(host)
        # a file body goes out chunked, read as it is sent
        messages = list(client.image_build(io.BytesIO(context_tar({"Dockerfile": b"FROM x\n",
                                                                  "big": b"x" * 300000})),
                                           build_query(tags=["x:1", "y"], memory=5)))
    assert messages == LEGACY
    opts, digests, files = b.calls[0]
    assert files["big"] == b"x" * 300000 and opts.tags == ["x:1", "y"]
    assert opts.resources.memory == 5


def test_a_failed_build_raises_with_the_exit_code(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), failing)
    with serving(b, tmp_path / "s.sock") as host:
        stream = Client(host).image_build(context_tar(), [])
        seen = []
        with pytest.raises(BuildFailed) as info:
            for m in stream:
                seen.append(m)
    assert info.value.code == 3
    assert str(info.value) == "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert seen[-1] == {"stream": " ---> Running in 8555eabd7e12\n"}


def test_a_refused_request_raises_before_any_message(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), three_steps)
    with serving(b, tmp_path / "s.sock") as host, pytest.raises(InvalidArgument) as info:
        Client(host).image_build(io.BytesIO(context_tar()), [("buildargs", "x")])
    assert str(info.value) == ("error reading build args: invalid character 'x' looking for "
                               "beginning of value")


def test_quiet_and_ketch_progress(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), three_steps)
    with serving(b, tmp_path / "s.sock") as host:
        client = Client(host)
        assert list(client.image_build(context_tar(), build_query(quiet=True))) == \
            [{"stream": IMG4 + "\n"}]
        kinds = [m["ketch"]["kind"] for m in
                 client.image_build(context_tar(), build_query(ketch_progress=True))]
    assert kinds[0] == "step" and kinds[-1] == "result"


# --- ketch build: the context it sends ----------------------------------------------------


class Daemon:
    """A fake daemon for ``ketch build``: the real API app over a FakeBuilder."""

    def __init__(self, tmp: Path, script: Any = three_steps) -> None:
        self.builder = FakeBuilder(str(tmp / "daemon-tmp"), script)
        self.sock = tmp / "d.sock"

    def files(self, n: int = 0) -> dict[str, bytes]:
        return self.builder.calls[n][2]

    def opts(self, n: int = 0) -> Any:
        return self.builder.calls[n][0]


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    # These tests look at the tar; a directory is otherwise read in place (see below).
    monkeypatch.setenv("KETCH_BUILD_CONTEXT", "tar")
    d = Daemon(tmp_path)
    with serving(d.builder, d.sock):
        yield d


def ketch(d: Daemon, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
          monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    from ketch.cli import main

    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        return main.main(["-H", f"unix://{d.sock}", *args])
    finally:
        sys.stdin = old


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_the_dockerignore_applies_but_the_dockerfile_and_ignore_file_always_go(
        daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n", "a.txt": "a", "id.key": "k", "node_modules/x/y": "y",
        "keep/b.txt": "b",
        ".dockerignore": "*.key\nnode_modules\nDockerfile\n.dockerignore\n"})
    assert ketch(daemon, "build", "--progress", "plain", "-t", "me/app", str(ctx)) == 0
    assert set(daemon.files()) == {"Dockerfile", ".dockerignore", "a.txt", "keep/b.txt"}
    assert daemon.opts().dockerfile == "Dockerfile" and daemon.opts().tags == ["me/app"]
    err = capsys.readouterr().err
    assert "#2 [base 2/4] RUN echo hi && echo err >&2\n" in err
    assert "#3 CACHED\n" in err


def test_a_dockerfile_specific_ignore_file_wins(daemon: Daemon, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = write(tmp_path / "ctx", {"sub/app.Dockerfile": "FROM x\n",
                                   "sub/app.Dockerfile.dockerignore": "a.txt\n",
                                   ".dockerignore": "b.txt\n", "a.txt": "a", "b.txt": "b"})
    monkeypatch.chdir(ctx)
    assert ketch(daemon, "build", "-q", "-f", "sub/app.Dockerfile", ".") == 0
    assert "a.txt" not in daemon.files() and "b.txt" in daemon.files()
    assert daemon.opts().dockerfile == "sub/app.Dockerfile"


def test_a_local_daemon_reads_the_directory_in_place(daemon: Daemon, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KETCH_BUILD_CONTEXT")
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM x\n", "a.txt": "a"})
    secret = write(tmp_path, {"s": "shh"}) / "s"
    assert ketch(daemon, "build", "-q", "--secret", f"id=s,src={secret}", str(ctx)) == 0
    assert daemon.builder.in_place == (str(ctx.resolve()), True)
    assert daemon.files() == {"secret:s": b"shh"}       # only the secret travelled
    # A Dockerfile from outside the context goes in a tar, as docker sends it.
    write(tmp_path / "elsewhere", {"Df": "FROM y\n"})
    assert ketch(daemon, "build", "-q", "-f", str(tmp_path / "elsewhere/Df"), str(ctx)) == 0
    assert daemon.builder.in_place[1] is False and daemon.files(1)["a.txt"] == b"a"


def test_a_directory_the_daemon_sees_otherwise_is_sent_as_a_tar(
        daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon in another mount namespace refuses the directory: the tar follows."""
    monkeypatch.delenv("KETCH_BUILD_CONTEXT")
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM x\n", "a.txt": "a"})
    from ketch.cli import build_cmds

    real = build_cmds._in_place

    def wrong_inode(*args: Any) -> tuple[str, str, str]:
        path, _, rel = real(*args)      # type: ignore[misc]
        return path, "0:0", rel

    monkeypatch.setattr(build_cmds, "_in_place", wrong_inode)
    assert ketch(daemon, "build", "-q", str(ctx)) == 0
    assert len(daemon.builder.calls) == 1
    assert daemon.builder.in_place[1] is False and daemon.files()["a.txt"] == b"a"


def test_a_dockerfile_outside_the_context_goes_under_a_random_name(
        daemon: Daemon, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"a.txt": "a", ".dockerignore": "*.log"})
    write(tmp_path / "elsewhere", {"Df": "FROM outside\n"})
    assert ketch(daemon, "build", "-q", "-f", str(tmp_path / "elsewhere/Df"), str(ctx)) == 0
    name = daemon.opts().dockerfile
    assert re.fullmatch(r"\.dockerfile\.[0-9a-f]{20}", name)
    files = daemon.files()
    assert files[name] == b"FROM outside\n"
    # docker's trick: the daemon's own .dockerignore pass leaves it out of COPY
    assert files[".dockerignore"] == b"*.log\n" + name.encode() + b"\n"
    assert files["a.txt"] == b"a"


def test_a_dockerfile_from_stdin(daemon: Daemon, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"a.txt": "a"})
    assert ketch(daemon, "build", "-q", "-f", "-", str(ctx), stdin=b"FROM stdin\n") == 0
    name = daemon.opts().dockerfile
    assert name.startswith(".dockerfile.") and daemon.files()[name] == b"FROM stdin\n"
    assert daemon.files()[".dockerignore"] == b".dockerignore\n" + name.encode() + b"\n"


def test_a_tar_on_stdin_is_the_context(daemon: Daemon) -> None:
    tar = context_tar({"build/Df": b"FROM t\n", "f": b"1"})
    assert ketch(daemon, "build", "-q", "-f", "build/Df", "-", stdin=tar) == 0
    assert daemon.files() == {"build/Df": b"FROM t\n", "f": b"1"}
    assert daemon.opts().dockerfile == "build/Df"


def test_a_gzipped_tar_on_stdin_with_a_secret_added(daemon: Daemon, tmp_path: Path) -> None:
    import gzip

    (tmp_path / "tok").write_text("s3")
    tar = gzip.compress(context_tar({"Dockerfile": b"FROM t\n"}))
    assert ketch(daemon, "build", "-q", "--secret", f"id=tok,src={tmp_path / 'tok'}", "-",
                 stdin=tar) == 0
    assert daemon.files() == {"Dockerfile": b"FROM t\n", "secret:tok": b"s3"}


def test_a_dockerfile_on_stdin_is_an_empty_context(daemon: Daemon) -> None:
    assert ketch(daemon, "build", "-q", "-", stdin=b"FROM busybox\nRUN true\n") == 0
    assert daemon.files() == {"Dockerfile": b"FROM busybox\nRUN true\n"}


def test_stdin_cannot_be_both(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert ketch(daemon, "build", "-f", "-", "-") == 1
    assert capsys.readouterr().err == ("invalid argument: can't use stdin for both build "
                                       "context and dockerfile\n")


def test_missing_context_or_dockerfile(daemon: Daemon, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert ketch(daemon, "build", str(tmp_path / "nope")) == 1
    assert capsys.readouterr().err == (f'unable to prepare context: path "{tmp_path}/nope" '
                                       "not found\n")
    (tmp_path / "empty").mkdir()
    assert ketch(daemon, "build", str(tmp_path / "empty")) == 1
    assert capsys.readouterr().err == (
        "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat "
        f"{tmp_path}/empty/Dockerfile: no such file or directory\n")
    assert daemon.builder.calls == []


def test_quiet_prints_only_the_id_and_iidfile(daemon: Daemon, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM x\n"})
    assert ketch(daemon, "build", "-q", "--iidfile", str(tmp_path / "iid"), str(ctx)) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == (IMG4 + "\n", "")
    assert (tmp_path / "iid").read_text() == IMG4


def test_flags_reach_the_daemon(daemon: Daemon, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM x\n", "lib/.keep": ""})
    monkeypatch.setenv("FROM_ENV", "e")
    monkeypatch.delenv("UNSET_ARG", raising=False)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert ketch(daemon, "build", "-q", "--build-arg", "A=1", "--build-arg", "FROM_ENV",
                 "--build-arg", "UNSET_ARG", "--label", "l=v", "--label", "bare",
                 "--target", "t", "--no-cache", "--no-cache-filter", "s1,s2", "--cache-from",
                 "a:1,b:2", "--pull", "--network", "host", "--add-host", "h=1.2.3.4",
                 "--platform", "linux/amd64", "-m", "64m", "--memory-swap", "-1",
                 "-c", "512", "--cpu-period", "100000", "--cpu-quota", "50000",
                 "--cpuset-cpus", "0", "--cpuset-mems", "0", "--shm-size", "1m",
                 "--ulimit", "nofile=10:20", "--rm=false",
                 "--build-context", f"lib={ctx / 'lib'}", str(ctx)) == 0
    o = daemon.opts()
    assert o.build_args == {"A": "1", "FROM_ENV": "e", "UNSET_ARG": None}
    assert o.labels == {"l": "v", "bare": ""} and o.target == "t"
    assert (o.no_cache, o.no_cache_filter, o.cache_from, o.pull) == \
        (True, ["s1", "s2"], ["a:1", "b:2"], True)
    assert (o.network_mode, o.extra_hosts, o.platform) == ("host", ["h:1.2.3.4"],
                                                           "linux/amd64")
    r = o.resources
    assert (r.memory, r.memory_swap, r.cpu_shares, r.cpu_period, r.cpu_quota) == \
        (64 << 20, -1, 512, 100000, 50000)
    assert (r.cpuset_cpus, r.cpuset_mems, r.shm_size) == ("0", "0", 1 << 20)
    assert r.ulimits == [{"Name": "nofile", "Hard": 20, "Soft": 10}]
    assert (o.remove, o.force_remove, o.source_date_epoch) == (False, False, 1700000000)
    assert set(o.contexts) == {"lib"}


def test_a_bad_flag_value_is_a_usage_error(daemon: Daemon, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert ketch(daemon, "build", "-m", "lots", str(tmp_path)) == 125
    assert capsys.readouterr().err.startswith(
        'invalid argument "lots" for "-m, --memory" flag: invalid size: \'lots\'')
    assert ketch(daemon, "build", "--progress", "fancy", str(tmp_path)) == 125


def test_a_failed_build_prints_the_error_and_exits_1(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    d = Daemon(tmp_path, failing)
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM x\n"})
    with serving(d.builder, d.sock):
        assert ketch(d, "build", "--progress", "plain", str(ctx)) == 1
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err.endswith("#2 [2/2] RUN exit 3\n#2 ERROR: The command '/bin/sh -c exit 3'"
                                " returned a non-zero code: 3\n\nERROR: The command "
                                "'/bin/sh -c exit 3' returned a non-zero code: 3\n")
        # -q: nothing on stdout, the held-back progress and the error on stderr
        assert ketch(d, "build", "-q", str(ctx)) == 1
        out = capsys.readouterr()
        assert out.out == "" and "#1 [1/2] FROM busybox\n" in out.err


def test_daemon_refusals_are_printed_as_docker_prints_them(
        daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM x\n"})
    assert ketch(daemon, "build", "--squash", str(ctx)) == 1
    assert capsys.readouterr().err == ("Error response from daemon: squash is only supported "
                                       "with experimental mode\n")


def test_remote_contexts_are_refused_locally(daemon: Daemon,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert ketch(daemon, "build", "https://github.com/x/y.git") == 1
    assert "not supported" in capsys.readouterr().err


def test_builder_prune(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert ketch(daemon, "builder", "prune", "-a", "-f") == 0
    assert capsys.readouterr().out == ("Deleted build cache objects:\nabc\n\n"
                                       "Total reclaimed space: 42B\n")
    assert daemon.builder.cache.pruned == [({}, True)]
    assert ketch(daemon, "builder", "prune", stdin=b"n\n") == 0
    assert capsys.readouterr().out == ("WARNING! This will remove all dangling build cache. "
                                       "Are you sure you want to continue? [y/N] ")


# --- renderers ------------------------------------------------------------------------------


def _events() -> list[dict[str, Any]]:
    from ketch.build import request as rq

    events: list[rq.Event] = [
            rq.StepStarted(1, 3, "build", "FROM busybox AS build"),
            rq.StepDone(1, "sha256:" + "a" * 64),
            rq.StepStarted(2, 3, "build", "RUN make"),
            rq.StepMiss(2, "the command changed"),
            rq.StepRunning(2, "c" * 64),
            rq.StepOutput(2, "compil"), rq.StepOutput(2, "ing\ndone\n"),
            rq.StepDone(2, "sha256:" + "b" * 64, seconds=1.25, removed_container="c" * 64),
            rq.StepStarted(3, 3, "stage-1", "COPY --from=build /out /"),
            rq.StepCached(3), rq.StepDone(3, IMG4),
            rq.BuildResult(IMG4, ["me/app:1"])]
    return [rq.event_json(e) for e in events]


def test_plain_is_buildkits_format() -> None:
    from ketch.cli.build_progress import Plain

    out = io.StringIO()
    r = Plain(out)
    for ev in _events():
        r.event(ev)
    r.close()
    text = re.sub(r"^(#\d+) \d+\.\d{3} ", r"\1 T ", out.getvalue(), flags=re.M)
    assert text == (
        "#1 [build 1/3] FROM busybox AS build\n#1 DONE 0.0s\n\n"
        "#2 [build 2/3] RUN make\n#2 cache miss: the command changed\n"
        "#2 T compiling\n#2 T done\n#2 DONE 1.2s\n\n"
        "#3 [stage-1 3/3] COPY --from=build /out /\n#3 CACHED\n\n"
        f"#4 exporting to image\n#4 writing image {IMG4} done\n#4 naming to me/app:1 done\n"
        "#4 DONE 0.0s\n")


def test_tty_redraws_in_place_and_shows_the_running_steps_output() -> None:
    from ketch.build import request as rq
    from ketch.cli.build_progress import TTY

    out = io.StringIO()
    r = TTY(out, width=80, height=20)
    events = _events()
    for ev in events[:7]:
        r.event(ev)
    r.draw(force=True)
    frame = out.getvalue().rsplit("\x1b[J", 1)[-1]
    assert "=> [build 2/3] RUN make" in frame and "\x1b[2m => => # done\x1b[0m" in frame
    for ev in events[7:]:
        r.event(ev)
    r.close()
    last = out.getvalue().rsplit("\x1b[J", 1)[-1].splitlines()
    assert last[0].startswith("[+] Building ") and last[0].endswith("(3/3) FINISHED")
    assert last[-2:] == [f" => writing image {IMG4}"[:79], " => naming to me/app:1"]
    assert all(len(line) <= 80 for line in last)
    assert out.getvalue().count("\x1b[") > 4     # redrawn with cursor movement
    r2 = TTY(io.StringIO(), width=80, height=20)
    r2.event(rq.event_json(rq.StepStarted(1, 1, "0", "RUN false")))
    r2.event(rq.event_json(rq.StepOutput(1, "oops\n", "stderr")))
    r2.failed("The command '/bin/sh -c false' returned a non-zero code: 1")
    assert r2.out.getvalue().endswith(  # type: ignore[attr-defined]
        "------\n > [1/1] RUN false:\noops\n------\nERROR: The command '/bin/sh -c false' "
        "returned a non-zero code: 1\n")


def test_auto_is_tty_only_on_a_terminal() -> None:
    from ketch.cli.build_progress import choose

    class Term(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert choose("auto", Term()) == "tty" and choose("auto", io.StringIO()) == "plain"
    assert choose("rawjson", Term()) == "rawjson"


def test_rawjson_prints_the_events(daemon: Daemon, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from ketch.build.request import event_from_json

    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM x\n"})
    assert ketch(daemon, "build", "--progress", "rawjson", str(ctx)) == 0
    events = [event_from_json(json.loads(x)) for x in capsys.readouterr().err.splitlines()]
    assert events[-1].kind == "result" and len(events) == 15


# --- --print-ast, secrets, outputs ------------------------------------------------------------


def test_print_ast_needs_no_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from ketch.cli import main

    df = tmp_path / "Dockerfile"
    df.write_text("FROM busybox AS b\nRUN --network=none echo \\\n  hi\n"
                  "COPY <<EOF /x\nhello\nEOF\nCMD [\"sh\"]\n")
    assert main.main(["-H", "unix:///nonexistent.sock", "build", "--print-ast", str(df)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["instruction"] for r in rows] == ["from", "run", "copy", "cmd"]
    assert rows[0]["args"] == ["busybox", "AS", "b"]
    assert rows[1]["flags"] == ["--network=none"] and \
        (rows[1]["start_line"], rows[1]["end_line"]) == (2, 3)
    assert rows[2]["heredocs"] == [{"name": "EOF", "content": "hello\n", "expand": True,
                                    "chomp": False, "fd": None}]
    assert rows[3]["json"] is True and rows[3]["args"] == ["sh"]
    df.write_text("FROM busybox\nRUN <<EOF\nabc\n")
    assert main.main(["build", "--print-ast", str(df)]) == 1
    err = capsys.readouterr().err
    assert err == "dockerfile parse error on line 2: unterminated heredoc\n"


def test_secret_specs() -> None:
    from ketch.cli.build_cmds import parse_secret

    env = {"TOKEN": "t0k", "other": "o"}
    assert parse_secret("id=a,env=TOKEN", env) == ("a", b"t0k")
    assert parse_secret("id=other", env) == ("other", b"o")
    assert parse_secret("type=env,id=TOKEN", env) == ("TOKEN", b"t0k")
    with pytest.raises(InvalidArgument, match="is not set"):
        parse_secret("id=a,env=NOPE", env)
    with pytest.raises(InvalidArgument, match="must be a key=value pair"):
        parse_secret("id=a,bogus", env)
    with pytest.raises(InvalidArgument, match="failed to read secret a"):
        parse_secret("id=a,src=/nonexistent/x", env)


def test_output_specs() -> None:
    from ketch.cli.build_cmds import parse_output
    from ketch.errors import NotSupported

    o = parse_output("out")
    assert (o.kind, o.dest) == ("local", "out")
    o = parse_output("type=tar,dest=img.tar")
    assert (o.kind, o.dest) == ("tar", "img.tar")
    o = parse_output("-")
    assert (o.kind, o.dest) == ("tar", "-")
    with pytest.raises(NotSupported):
        parse_output("type=registry,ref=x")
    with pytest.raises(InvalidArgument, match="dest is required"):
        parse_output("type=local")


def test_an_exported_filesystem_is_extracted_safely(tmp_path: Path) -> None:
    import tarfile

    from ketch.cli.build_cmds import extract_tar

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("etc/ok", b"1"), ("bin/sh", b"2")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        dev = tarfile.TarInfo("dev/null")
        dev.type = tarfile.CHRTYPE
        tf.addfile(dev)
    extract_tar(io.BytesIO(buf.getvalue()), str(tmp_path / "out"))
    assert (tmp_path / "out/etc/ok").read_bytes() == b"1"
    assert not (tmp_path / "out/dev/null").exists()
    bad = io.BytesIO()
    with tarfile.open(fileobj=bad, mode="w") as tf:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.TarError):
        extract_tar(io.BytesIO(bad.getvalue()), str(tmp_path / "out2"))
    assert not (tmp_path / "escape").exists()


def test_step_labels_read_as_buildkits() -> None:
    from ketch.cli.build_progress import _label

    assert _label("stage-0", 1, 10, "FROM x") == "[ 1/10] FROM x"
    assert _label("stage-2", 3, 4, "RUN y") == "[stage-2 3/4] RUN y"
    assert _label("build", 2, 4, "RUN y") == "[build 2/4] RUN y"


def test_context_entries_are_roots_with_whole_second_mtimes(tmp_path: Path) -> None:
    import tarfile

    from ketch.cli.build_cmds import TarStream, tree_entries

    (tmp_path / "f").write_text("x")
    os.utime(tmp_path / "f", (1_600_000_000.7, 1_600_000_000.7))
    data = TarStream(tree_entries(str(tmp_path), ["f"])).read()
    # one header and one data block, no PAX record for a fractional mtime; a whole record
    assert len(data.rstrip(b"\0")) <= 1024 and len(data) == tarfile.RECORDSIZE
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        info = tf.getmember("f")
    assert (info.uid, info.gid, info.uname, info.mtime) == (0, 0, "", 1_600_000_000)


def test_the_tar_stream_carries_every_kind_and_compresses(tmp_path: Path) -> None:
    import gzip
    import tarfile

    from ketch.cli.build_cmds import TarStream, bytes_entry, tree_entries

    (tmp_path / "d").mkdir()
    (tmp_path / "d/big").write_bytes(os.urandom(3 << 20))
    os.link(tmp_path / "d/big", tmp_path / "d/same")
    os.symlink("big", tmp_path / "d/link")
    (tmp_path / ("long-" + "x" * 150)).write_text("long name")
    rels = ["d", "d/big", "d/link", "d/same", "long-" + "x" * 150]
    members = [*tree_entries(str(tmp_path), rels), bytes_entry("extra", b"e")]
    stream = TarStream(iter(members), compress=True)
    parts = []
    while chunk := stream.read(65536):
        assert len(chunk) <= 65536
        parts.append(chunk)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(b"".join(parts)))) as tf:
        got = {m.name: m for m in tf.getmembers()}
        assert got["d"].isdir() and got["d/link"].issym() and got["d/link"].linkname == "big"
        assert got["d/same"].islnk() and got["d/same"].linkname == "d/big"
        assert tf.extractfile("d/big").read() == (tmp_path / "d/big").read_bytes()  # type: ignore[union-attr]
        assert tf.extractfile("long-" + "x" * 150).read() == b"long name"  # type: ignore[union-attr]
        assert tf.extractfile("extra").read() == b"e"  # type: ignore[union-attr]


def test_an_unreadable_file_ends_the_stream_with_the_error(tmp_path: Path) -> None:
    import tarfile

    from ketch.cli.build_cmds import TarStream, tree_entries

    (tmp_path / "a").write_text("a")
    members = tree_entries(str(tmp_path), ["a", "gone"])
    stream = TarStream(members)
    data = stream.read()
    assert isinstance(stream.error, FileNotFoundError)
    # cut at a member's edge, the tar would still read as a whole one: it must not
    with pytest.raises(tarfile.ReadError), \
            tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for member in tf:
            if member.isreg():
                tf.extractfile(member).read()  # type: ignore[union-attr]
