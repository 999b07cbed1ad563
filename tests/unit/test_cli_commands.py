"""The CLI's plumbing without a daemon: usage errors as docker words and numbers
them, filters, references, the client's streams, and auto-start's helpers."""

from __future__ import annotations

import io
import json
import resource

import pytest

from ketch import errors as e
from ketch.cli.autostart import Place, cgroup_dirs, parse_limits
from ketch.cli.image_cmds import split_reference
from ketch.cli.main import main
from ketch.cli.session import error_text, parse_filters
from ketch.client import Client, FakeTransport, Request, Response, StreamError


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_flag_is_125_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "images", "--bogus")
    assert code == 125
    assert err.startswith("unknown flag: --bogus\n\nUsage:  ketch images [OPTIONS] "
                          "[REPOSITORY[:TAG]]\n\nRun 'ketch images --help'")


def test_unknown_shorthand(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "image", "prune", "-z")
    assert code == 125
    assert err.startswith("unknown shorthand flag: 'z' in -z\n")


@pytest.mark.parametrize(("args", "want"), [
    (["tag", "a"], "ketch: 'ketch tag' requires 2 arguments"),
    (["history"], "ketch: 'ketch history' requires 1 argument"),
    (["rmi"], "ketch: 'ketch rmi' requires at least 1 argument"),
    (["images", "a", "b"], "ketch: 'ketch images' requires at most 1 argument"),
    (["image", "save"], "ketch: 'ketch image save' requires at least 1 argument"),
])
def test_argument_counts_are_1(capsys: pytest.CaptureFixture[str], args: list[str],
                               want: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 1
    assert err.splitlines()[0] == want


@pytest.mark.parametrize(("args", "first", "last"), [
    # docker/cli's validators: NoArgs, RequiresMinArgs ("See"), RequiresMaxArgs (docker
    # 28's "SRun"), RequiresRangeArgs; an alias named by its command's name
    (["volume", "ls", "a"], "ketch: 'ketch volume ls' accepts no arguments",
     "Run 'ketch volume ls --help' for more information"),
    (["rmi"], "ketch: 'ketch rmi' requires at least 1 argument",
     "See 'ketch rmi --help' for more information"),
    (["images", "a", "b"], "ketch: 'ketch images' requires at most 1 argument",
     "SRun 'ketch images --help' for more information"),
    (["port"], "ketch: 'ketch port' requires at least 1 and at most 2 arguments",
     "Run 'ketch port --help' for more information"),
    (["container", "remove"], "ketch: 'ketch container rm' requires at least 1 argument",
     "See 'ketch container rm --help' for more information"),
    (["container", "list", "a"], "ketch: 'ketch container ls' accepts no arguments",
     "Run 'ketch container ls --help' for more information"),
])
def test_argument_errors_as_docker_28(capsys: pytest.CaptureFixture[str], args: list[str],
                                      first: str, last: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 1
    lines = err.splitlines()
    assert (lines[0], lines[-1]) == (first, last)


def test_flag_without_value(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "images", "--format")
    assert code == 125
    assert err.startswith("flag needs an argument: --format")


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    # docker 28's words, with the group's usage line under a group.
    code, _, err = run(capsys, "frobnicate")
    assert code == 1
    assert err == ("ketch: unknown command: ketch frobnicate\n\n"
                   "Run 'ketch --help' for more information\n")
    code, _, err = run(capsys, "container", "frobnicate")
    assert code == 1
    assert err == ("ketch: unknown command: ketch container frobnicate\n\n"
                   "Usage:  ketch container\n\n"
                   "Run 'ketch container --help' for more information\n")


def test_global_flags_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--bogus", "ps")
    assert code == 125
    assert err == ("unknown flag: --bogus\n\nUsage:  ketch [OPTIONS] COMMAND\n\n"
                   "Run 'ketch --help' for more information\n")
    code, _, err = run(capsys, "-H")
    assert code == 125 and err.startswith("flag needs an argument: 'H' in -H\n")
    assert run(capsys, "-v")[1].startswith("ketch version ")
    assert run(capsys, "-D", "--version")[1].startswith("ketch version ")


def test_help_layouts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "images", "--help")
    assert code == 0
    assert out.startswith("Usage:  ketch images [OPTIONS] [REPOSITORY[:TAG]]\n\nList images\n")
    assert "  -q, --quiet " in out and "      --no-trunc " in out
    code, out, _ = run(capsys, "image", "--help")
    assert code == 0 and "  bootstrap " in out and "  list " not in out
    code, out, _ = run(capsys)
    assert code == 0 and "  images " in out and "  system " in out
    assert run(capsys, "--version")[1].startswith("ketch version ")


def test_no_daemon_message_and_exit_code(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    host = f"unix://{tmp_path}/none.sock"
    monkeypatch.setenv("KETCH_HOST", host)
    code, _, err = run(capsys, "images")
    assert code == 1
    assert err.startswith(f"Cannot connect to the ketch daemon at {host}.")


def test_save_refuses_a_terminal(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, _, err = run(capsys, "save", "busybox")
    assert code == 1
    assert err.strip() == ("cowardly refusing to save to a terminal. "
                           "Use the -o flag or redirect")


def test_import_from_url_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "import", "http://example.invalid/x.tar")
    assert code == 1
    assert "importing from a URL is not supported" in err


def test_parse_filters() -> None:
    assert parse_filters(["dangling=true", "label=a=b", "label=c"]) == {
        "dangling": ["true"], "label": ["a=b", "c"]}
    with pytest.raises(e.InvalidArgument, match="bad format of filter"):
        parse_filters(["dangling"])


def test_split_reference() -> None:
    assert split_reference("me/box:1") == ("me/box", "1")
    assert split_reference("localhost:5000/box") == ("localhost:5000/box", "")
    with pytest.raises(e.InvalidArgument, match='^Error parsing reference: "Bad:x" is not a '
                                                'valid repository/tag: invalid reference format'):
        split_reference("Bad:x")
    with pytest.raises(e.InvalidArgument, match="invalid reference format"):
        split_reference("x@sha256:" + "a" * 64)


def test_error_text() -> None:
    assert error_text(e.NotFound("No such image: x:latest")) == \
        "Error response from daemon: No such image: x:latest"
    assert error_text(e.Unavailable("Cannot connect")) == "Cannot connect"
    assert error_text(StreamError("bad layer")) == "bad layer"


def _stream_daemon(body: bytes, status: int = 200) -> FakeTransport:
    def handle(req: Request) -> Response:
        if req.path == "/_ping":
            return Response(200, {"Api-Version": "1.45"}, b"OK")
        return Response(status, {}, body)

    return FakeTransport(handle)


def test_load_streams_messages_and_sends_the_file() -> None:
    body = b'{"stream":"Loaded image: a:1\\n"}\r\n{"stream":"Loaded image: b:2\\n"}\r\n'
    t = _stream_daemon(body)
    msgs = list(Client("unix:///x", transport=t).images_load(io.BytesIO(b"TAR"), quiet=True))
    assert [m["stream"] for m in msgs] == ["Loaded image: a:1\n", "Loaded image: b:2\n"]
    assert t.requests[-1].path == "/v1.45/images/load?quiet=1"
    assert t.requests[-1].body == b"TAR"


def test_error_inside_a_stream_raises() -> None:
    body = b'{"status":"x"}\n' + json.dumps({"errorDetail": {"message": "bad layer"},
                                             "error": "bad layer"}).encode()
    t = _stream_daemon(body)
    with pytest.raises(StreamError, match="bad layer"):
        list(Client("unix:///x", transport=t).image_import(io.BytesIO(b"")))


def test_stream_error_status_keeps_the_message() -> None:
    t = _stream_daemon(b'{"message":"invalid image archive"}', 400)
    with pytest.raises(e.InvalidArgument, match="invalid image archive"):
        list(Client("unix:///x", transport=t).images_load(io.BytesIO(b"")))


def test_query_encoding() -> None:
    t = _stream_daemon(b"[]")
    c = Client("unix:///x", transport=t)
    c.images(all=True, filters={"reference": ["me/*"]})
    assert t.requests[-1].path == \
        "/v1.45/images/json?all=1&filters=%7B%22reference%22%3A+%5B%22me%2F%2A%22%5D%7D"
    c.image_tag("a/b:1", "c", "2")
    assert t.requests[-1].path == "/v1.45/images/a/b:1/tag?repo=c&tag=2"
    c.images_save(["a", "b"]).close()
    assert t.requests[-1].path == "/v1.45/images/get?names=a&names=b"


def test_place_from_env() -> None:
    p = Place.from_env({"KETCH_ROOT": "/r", "KETCH_EXEC_ROOT": "/x", "KETCH_DAEMON_CGROUP": "c"})
    assert (p.socket, p.log, p.pidfile, p.cgroup) == ("/x/ketch.sock", "/r/ketchd.log",
                                                       "/x/ketchd.pid", "c")
    assert Place.from_env({}).host == "unix:///run/ketch/ketch.sock"


def test_parse_limits() -> None:
    text = ("Limit                     Soft Limit           Hard Limit           Units\n"
            "Max cpu time              unlimited            unlimited            seconds\n"
            "Max open files            1024                 524288               files\n"
            "Max core file size        0                    unlimited            bytes\n")
    limits = parse_limits(text)
    assert limits[resource.RLIMIT_NOFILE] == (1024, 524288)
    assert limits[resource.RLIMIT_CORE] == (0, resource.RLIM_INFINITY)
    assert resource.RLIMIT_CPU not in limits


def test_cgroup_dirs_hybrid_and_v2() -> None:
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n")
    proc = "4:memory:/user.slice\n3:cpu,cpuacct:/user.slice\n2:pids:/x\n0::/user.slice\n"
    assert cgroup_dirs("ketchd", mountinfo, proc) == [
        "/sys/fs/cgroup/memory/ketchd", "/sys/fs/cgroup/cpu,cpuacct/ketchd",
        "/sys/fs/cgroup/unified/ketchd"]
    v2 = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert cgroup_dirs("ketchd", v2, "0::/init.scope\n") == ["/sys/fs/cgroup/ketchd"]


def test_stop_and_rm_run_at_once_and_report_in_order(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # docker's parallelOperation: all requests in flight together (the first one here
    # waits until the last has arrived), names printed in the order given, errors after.
    import threading

    from ketch.cli import session as session_mod

    last_arrived = threading.Event()

    def handle(req: Request) -> Response:
        if req.path == "/_ping":
            return Response(200, {"Api-Version": "1.45"}, b"OK")
        if "/c1/" in req.path or req.path.endswith("/c1?force=1"):
            assert last_arrived.wait(5), "the requests were sent one after the other"
        if "/c3" in req.path:
            last_arrived.set()
        if "/gone" in req.path:
            return Response(404, {}, b'{"message": "No such container: gone"}')
        return Response(204, {}, b"")

    client = Client("unix:///x", transport=FakeTransport(handle))
    monkeypatch.setattr(session_mod, "_connect", lambda flag: client)
    code, out, err = run(capsys, "stop", "c1", "gone", "c3")
    assert (code, out) == (1, "c1\nc3\n")
    assert err == "Error response from daemon: No such container: gone\n"
    last_arrived.clear()
    code, out, err = run(capsys, "rm", "-f", "c1", "gone", "c3")
    assert (code, out) == (0, "c1\nc3\n")     # rm -f of a missing one is not a failure
    assert err == "Error response from daemon: No such container: gone\n"


def test_event_lines_as_the_docker_cli_prints_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from ketch.cli.system_cmds import pretty_event

    msg = {"Type": "container", "Action": "die", "timeNano": 1764590000000001000,
           "Actor": {"ID": "c" * 64, "Attributes": {"name": "x", "exitCode": "0",
                                                    "image": "busybox"}}}
    for tz, when in (("UTC", "2025-12-01T11:53:20.000001000Z"),
                     ("Europe/Berlin", "2025-12-01T12:53:20.000001000+01:00")):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        assert pretty_event(msg) == (f"{when} container die {'c' * 64} "
                                     "(exitCode=0, image=busybox, name=x)")
    monkeypatch.delenv("TZ")
    time.tzset()
    assert pretty_event({"Type": "network", "Action": "connect", "time": 1,
                         "Actor": {"ID": "n1", "Attributes": {}}}).endswith(
        " network connect n1")
