"""``ketch volume ...`` without a daemon: the requests it sends and what it prints.

The daemon is a FakeTransport answering as dockerd does (the integration
test runs the same commands against the real router).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from ketch.cli import main
from ketch.cli.session import Session
from ketch.client import Client, FakeTransport, Request, Response

VOL = {"CreatedAt": "2024-01-02T03:04:05Z", "Driver": "local", "Labels": {"k": "v"},
       "Mountpoint": "/var/lib/ketch/volumes/data/_data", "Name": "data", "Options": None,
       "Scope": "local"}


def daemon(handler: Callable[[Request], Response]) -> FakeTransport:
    return FakeTransport(handler)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.setattr(main, "COMMANDS", {**main.COMMANDS,
                                           "volume": "ketch.cli.volume_cmds:volume"})

    def run(transport: FakeTransport, *args: str, stdin: str = "",
            version: str = "1.45") -> tuple[int, str, str]:
        monkeypatch.setattr(Session, "connect",
                            lambda self: Client("unix:///nowhere", transport=transport,
                                                version=version))
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def ok(body: object, status: int = 200) -> Response:
    return Response(status, {"Content-Type": "application/json"}, json.dumps(body).encode())


def error(status: int, message: str) -> Response:
    return ok({"message": message}, status)


def test_create_sends_docker_body(cli: Callable[..., tuple[int, str, str]]) -> None:
    t = daemon(lambda r: ok(VOL, 201))
    assert cli(t, "volume", "create", "-d", "local", "--label", "k=v", "--label", "bare",
               "-o", "type=tmpfs", "--opt", "device=tmpfs", "data") == (0, "data\n", "")
    [req] = t.requests
    assert (req.method, req.path) == ("POST", "/v1.45/volumes/create")
    assert json.loads(req.body or b"") == {
        "Name": "data", "Driver": "local", "DriverOpts": {"type": "tmpfs", "device": "tmpfs"},
        "Labels": {"k": "v", "bare": ""}}
    code, _, err = cli(t, "volume", "create", "--name", "a", "b")
    assert code == 1 and err.startswith("conflicting options: cannot specify a volume-name")
    t = daemon(lambda r: error(400, 'create x2: invalid option: "foo"'))
    assert cli(t, "volume", "create", "-o", "foo=bar", "x2") == (
        1, "", 'Error response from daemon: create x2: invalid option: "foo"\n')


def test_ls_quiet_filters_and_table(cli: Callable[..., tuple[int, str, str]]) -> None:
    other = {**VOL, "Name": "abc", "Labels": None}
    t = daemon(lambda r: ok({"Volumes": [VOL, other], "Warnings": None}))
    code, out, _ = cli(t, "volume", "ls", "-f", "dangling=true", "--filter", "label=k")
    assert code == 0
    assert out.splitlines() == ["DRIVER    VOLUME NAME", "local     abc", "local     data"]
    query = parse_qs(urlsplit(t.requests[0].path).query)
    assert json.loads(query["filters"][0]) == {"dangling": ["true"], "label": ["k"]}
    assert cli(t, "volume", "list", "-q") == (0, "abc\ndata\n", "")
    assert cli(t, "volume", "ls", "--format", "{{.Name}}:{{.Labels}}") == \
        (0, "abc:\ndata:k=v\n", "")


def test_inspect_found_and_missing(cli: Callable[..., tuple[int, str, str]]) -> None:
    def handle(r: Request) -> Response:
        if r.path.endswith("/volumes/data"):
            return ok(VOL)
        return error(404, "get nope: no such volume")

    code, out, err = cli(daemon(handle), "volume", "inspect", "data", "nope")
    assert code == 1 and json.loads(out) == [VOL]
    assert err == "Error response from daemon: get nope: no such volume\n"
    assert cli(daemon(handle), "volume", "inspect", "-f", "{{.Mountpoint}}", "data") == \
        (0, VOL["Mountpoint"] + "\n", "")


def test_rm_each_then_exit_1(cli: Callable[..., tuple[int, str, str]]) -> None:
    def handle(r: Request) -> Response:
        if "/volumes/busy" in r.path:
            return error(409, "remove busy: volume is in use - [c1]")
        return Response(204, {}, b"")

    t = daemon(handle)
    code, out, err = cli(t, "volume", "rm", "-f", "a", "busy", "b")
    assert (code, out) == (1, "a\nb\n")
    assert err == "Error response from daemon: remove busy: volume is in use - [c1]\n"
    assert [r.path for r in t.requests] == ["/v1.45/volumes/a?force=1",
                                            "/v1.45/volumes/busy?force=1",
                                            "/v1.45/volumes/b?force=1"]
    assert all(r.method == "DELETE" for r in t.requests)


def test_prune_prompt_all_and_report(cli: Callable[..., tuple[int, str, str]]) -> None:
    report = {"VolumesDeleted": ["x", "y"], "SpaceReclaimed": 2048}
    t = daemon(lambda r: ok(report))
    code, out, _ = cli(t, "volume", "prune", stdin="n\n")
    assert code == 0 and t.requests == []
    assert out == ("WARNING! This will remove anonymous local volumes not used by at least one "
                   "container.\nAre you sure you want to continue? [y/N] ")
    code, out, _ = cli(t, "volume", "prune", "-a", stdin="y\n")
    assert out.startswith("WARNING! This will remove all local volumes")
    assert out.endswith("Deleted Volumes:\nx\ny\n\nTotal reclaimed space: 2.048kB\n")
    query = parse_qs(urlsplit(t.requests[0].path).query)
    assert json.loads(query["filters"][0]) == {"all": ["true"]}
    code, _, err = cli(t, "volume", "prune", "-a", "--filter", "all=1", "-f")
    assert code != 0 and "cannot specify both --all and --filter all=1" in err
    # An old daemon prunes all unused volumes and has no --all.
    code, out, _ = cli(t, "volume", "prune", version="1.41", stdin="n\n")
    assert out.startswith("WARNING! This will remove all local volumes")
    code, _, err = cli(t, "volume", "prune", "-a", "-f", version="1.41")
    assert code != 0 and '"--all" requires API version 1.42' in err
    t = daemon(lambda r: ok({"VolumesDeleted": [], "SpaceReclaimed": 0}))
    assert cli(t, "volume", "prune", "-f") == (0, "Total reclaimed space: 0B\n", "")
