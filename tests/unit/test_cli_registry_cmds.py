"""``ketch pull|push|login|logout|search`` and ``run/create --pull`` against a fake daemon.

The daemon is a small aiohttp server on a unix socket in the test's directory,
answering as dockerd's Engine API does (JSON-message streams, X-Registry-Auth),
so the CLI goes through its real HTTP transport. The expected lines are the ones
docker 28.2.2 printed for the same answers.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ketch.cli import main

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PULL_MESSAGES = [
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaa"},
    {"status": "Downloading", "progressDetail": {"current": 1000, "total": 3000},
     "progress": "x", "id": "aaa"},
    {"status": "Download complete", "progressDetail": {}, "id": "aaa"},
    {"status": "Pull complete", "progressDetail": {}, "id": "aaa"},
    {"status": "Digest: sha256:abc"},
    {"status": "Status: Downloaded newer image for busybox:latest"},
]
PUSH_MESSAGES = [
    {"status": "The push refers to repository [localhost:5000/busybox]"},
    {"status": "Preparing", "progressDetail": {}, "id": "aaa"},
    {"status": "Pushing", "progressDetail": {"current": 1000, "total": 3000}, "id": "aaa"},
    {"status": "Pushed", "progressDetail": {}, "id": "aaa"},
    {"status": "latest: digest: sha256:abc size: 527"},
    {"progressDetail": {}, "aux": {"Tag": "latest", "Digest": "sha256:abc", "Size": 527}},
]


def error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"message": message}),
                        content_type="application/json")


async def stream(request: web.Request, messages: list[dict[str, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    for m in messages:
        await resp.write((json.dumps(m) + "\r\n").encode())
    await resp.write_eof()
    return resp


class FakeEngine:
    """The Engine API routes the registry commands use; every request is recorded, and a
    test replaces an answer by assigning to ``handlers``."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.requests: list[dict[str, Any]] = []
        self.handlers: dict[str, Handler] = {
            "auth": self.auth, "create": self.create, "push": self.push,
            "search": self.search, "containers_create": self.containers_create,
            "distribution": self.distribution}
        self.logins: dict[str, str] = {"user": "secret", "tokuser": "secret"}
        self.images: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # default answers
    async def auth(self, r: web.Request) -> web.StreamResponse:
        body = await r.json()
        if self.logins.get(body.get("username")) != body.get("password"):
            return error(401, "login attempt to http://x/v2/ failed with status: 401 Unauthorized")
        token = "tok123" if body["username"] == "tokuser" else ""
        return web.json_response({"Status": "Login Succeeded", "IdentityToken": token})

    async def create(self, r: web.Request) -> web.StreamResponse:
        self.images.add(r.query.get("fromImage", "") + ":" + r.query.get("tag", ""))
        return await stream(r, PULL_MESSAGES)

    async def push(self, r: web.Request) -> web.StreamResponse:
        return await stream(r, PUSH_MESSAGES)

    async def search(self, r: web.Request) -> web.StreamResponse:
        return web.json_response([
            {"name": "busybox", "description": "Busybox base image.", "star_count": 3000,
             "is_official": True, "is_automated": False},
            {"name": "foo/bar", "description": "x" * 60, "star_count": 2,
             "is_official": False, "is_automated": True}])

    async def distribution(self, r: web.Request) -> web.StreamResponse:
        if r.match_info["name"].endswith(":nosuch"):
            return error(404, "manifest unknown: manifest unknown")
        return web.json_response({"Descriptor": {"mediaType": "x", "digest": "sha256:abc",
                                                 "size": 739},
                                  "Platforms": [{"architecture": "amd64", "os": "linux"}]})

    async def containers_create(self, r: web.Request) -> web.StreamResponse:
        body = await r.json()
        if "docker.io/library/" + body["Image"] + ":latest" not in self.images:
            return error(404, f"No such image: {body['Image']}:latest")
        return web.json_response({"Id": "c" * 64, "Warnings": []}, status=201)

    # plumbing
    def _app(self) -> web.Application:
        def route(name: str) -> Handler:
            async def h(r: web.Request) -> web.StreamResponse:
                self.requests.append({"name": name, "method": r.method, "path": r.path_qs,
                                      "auth": r.headers.get("X-Registry-Auth"),
                                      "body": await r.read()})
                return await self.handlers[name](r)
            return h

        async def ping(r: web.Request) -> web.Response:
            return web.Response(text="OK", headers={"API-Version": "1.45"})

        app = web.Application()
        app.router.add_route("*", "/_ping", ping)
        app.router.add_route("*", "/v{v}/_ping", ping)
        app.router.add_post("/v{v}/auth", route("auth"))
        app.router.add_post("/v{v}/images/create", route("create"))
        app.router.add_post("/v{v}/images/{name:.*}/push", route("push"))
        app.router.add_get("/v{v}/images/search", route("search"))
        app.router.add_post("/v{v}/containers/create", route("containers_create"))
        app.router.add_get("/v{v}/distribution/{name:.*}/json", route("distribution"))
        return app

    def start(self) -> None:
        self._thread.start()

        async def up() -> None:
            self._runner = web.AppRunner(self._app())
            await self._runner.setup()
            await web.UnixSite(self._runner, str(self.sock)).start()

        asyncio.run_coroutine_threadsafe(up(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["name"] == name]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    e = FakeEngine(tmp_path / "engine.sock")
    e.start()
    try:
        yield e
    finally:
        e.stop()


CLI = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> CLI:
    """Runs ``ketch -H <fake> --config <tmp>/cfg ARGS`` in this process."""
    monkeypatch.delenv("DOCKER_DEFAULT_PLATFORM", raising=False)

    def run(*args: str, stdin: str = "", config: bool = True) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        pre = ["-H", f"unix://{engine.sock}"]
        if config:
            pre += ["--config", str(tmp_path / "cfg")]
        code = main.main([*pre, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def config(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "cfg" / "config.json").read_text())
    return data


def decoded(header: str | None) -> dict[str, Any]:
    assert header is not None
    out: dict[str, Any] = json.loads(base64.urlsafe_b64decode(header))
    return out


WARNING = ("WARNING! Your credentials are stored unencrypted in '{}'.\n"
           "Configure a credential helper to remove this warning. See\n"
           "https://docs.docker.com/go/credential-store/\n")


# --- login, logout ----------------------------------------------------------------------------


def test_login_password_stdin_stores_and_warns_once(cli: CLI, engine: FakeEngine,
                                                    tmp_path: Path) -> None:
    code, out, err = cli("login", "-u", "user", "--password-stdin", "localhost:5000",
                         stdin="secret\n")
    assert (code, out) == (0, "Login Succeeded\n")
    assert err == "\n" + WARNING.format(tmp_path / "cfg" / "config.json") + "\n"
    [req] = engine.named("auth")
    assert json.loads(req["body"]) == {"username": "user", "password": "secret",
                                       "serveraddress": "localhost:5000"}
    assert config(tmp_path) == {"auths": {"localhost:5000": {
        "auth": base64.b64encode(b"user:secret").decode()}}}
    # the same credentials again: the file is not rewritten, no warning
    assert cli("login", "-u", "user", "--password-stdin", "localhost:5000",
               stdin="secret") == (0, "Login Succeeded\n", "")


def test_login_keeps_the_identity_token(cli: CLI, tmp_path: Path) -> None:
    code, out, err = cli("login", "-u", "tokuser", "-p", "secret", "https://reg.example/v2/")
    assert (code, out) == (0, "Login Succeeded\n")
    assert err == "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"
    assert config(tmp_path)["auths"] == {"reg.example": {"auth": "dG9rdXNlcjo=",
                                                         "identitytoken": "tok123"}}


def test_login_refusals(cli: CLI, engine: FakeEngine, tmp_path: Path) -> None:
    assert cli("login", "-u", "u", "-p", "x", "--password-stdin", "h") == (
        1, "", "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"
               "conflicting options: cannot specify both --password and --password-stdin\n")
    assert cli("login", "--password-stdin", "h") == (
        1, "", "the --password-stdin option requires --username to be set\n")
    assert cli("login", "h") == (
        1, "", "Error: Cannot perform an interactive login from a non TTY device\n")
    code, out, err = cli("login", "-u", "user", "--password-stdin", "h", stdin="wrong")
    assert (code, out) == (1, "")
    assert err == ("Error response from daemon: login attempt to http://x/v2/ failed with "
                   "status: 401 Unauthorized\n")
    assert not (tmp_path / "cfg" / "config.json").exists()
    assert cli("login", "a", "b")[0] == 1


def test_login_with_stored_credentials(cli: CLI, engine: FakeEngine, tmp_path: Path) -> None:
    cli("login", "-u", "user", "--password-stdin", "localhost:5000", stdin="secret")
    code, out, err = cli("login", "localhost:5000")
    assert (code, out) == (0, "Login Succeeded\n")
    assert err.startswith("Authenticating with existing credentials... [Username: user]\n")
    engine.logins["user"] = "changed"
    code, out, err = cli("login", "localhost:5000")
    assert code == 1
    assert "Stored credentials invalid or expired\n" in err
    assert err.endswith("Error: Cannot perform an interactive login from a non TTY device\n")


def test_login_through_a_creds_store_has_no_warning(cli: CLI, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-ketchtest"
    helper.write_text(f"#!/bin/sh\ncat > {tmp_path}/stored-$1\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text('{"credsStore": "ketchtest"}')
    assert cli("login", "-u", "user", "--password-stdin", "h:1", stdin="secret") == (
        0, "Login Succeeded\n", "")
    assert json.loads((tmp_path / "stored-store").read_text()) == {
        "ServerURL": "h:1", "Username": "user", "Secret": "secret"}
    assert config(tmp_path) == {"auths": {"h:1": {}}, "credsStore": "ketchtest"}


def test_logout(cli: CLI, tmp_path: Path) -> None:
    cli("login", "-u", "user", "--password-stdin", "localhost:5000", stdin="secret")
    assert cli("logout", "http://localhost:5000/") == (
        0, "Removing login credentials for localhost:5000\n", "")
    assert config(tmp_path) == {"auths": {}}
    # docker 28 says the same when nothing was stored
    assert cli("logout", "other:1") == (0, "Removing login credentials for other:1\n", "")
    assert cli("logout") == (
        0, "Removing login credentials for https://index.docker.io/v1/\n", "")


# --- pull -------------------------------------------------------------------------------------


def test_pull_lines_and_request(cli: CLI, engine: FakeEngine) -> None:
    code, out, err = cli("pull", "busybox")
    assert (code, err) == (0, "")
    assert out == (
        "Using default tag: latest\nlatest: Pulling from library/busybox\n"
        "aaa: Pulling fs layer\naaa: Download complete\naaa: Pull complete\n"
        "Digest: sha256:abc\nStatus: Downloaded newer image for busybox:latest\n"
        "docker.io/library/busybox:latest\n")
    [req] = engine.named("create")
    assert req["path"] == "/v1.45/images/create?fromImage=docker.io%2Flibrary%2Fbusybox&tag=latest"
    assert req["auth"] == "e30="        # nothing stored: an empty object, as docker sends


def test_pull_quiet_all_tags_digest_platform(cli: CLI, engine: FakeEngine) -> None:
    assert cli("pull", "-q", "busybox") == (0, "docker.io/library/busybox:latest\n", "")
    code, out, _ = cli("image", "pull", "-a", "localhost:5000/busybox")
    assert code == 0 and out.splitlines()[-1] == "localhost:5000/busybox"
    assert "Using default tag" not in out
    assert engine.requests[-1]["path"] == \
        "/v1.45/images/create?fromImage=localhost%3A5000%2Fbusybox"
    digest = "sha256:" + "a" * 64
    code, out, _ = cli("pull", "--platform", "linux/AMD64", f"busybox:1@{digest}")
    assert out.splitlines()[-1] == f"docker.io/library/busybox:1@{digest}"
    assert engine.requests[-1]["path"] == ("/v1.45/images/create?fromImage=docker.io%2Flibrary"
                                           "%2Fbusybox&tag=sha256%3A" + "a" * 64 +
                                           "&platform=linux%2Famd64")
    assert cli("pull", "-a", "localhost:5000/busybox:v1") == (
        1, "", "tag can't be used with --all-tags/-a\n")
    assert cli("pull", "BAD") == (
        1, "", "invalid reference format: repository name (library/BAD) must be lowercase\n")


def test_pull_sends_the_registrys_credentials(cli: CLI, engine: FakeEngine) -> None:
    cli("login", "-u", "user", "--password-stdin", "localhost:5000", stdin="secret")
    cli("pull", "localhost:5000/app:v1")
    assert decoded(engine.requests[-1]["auth"]) == {
        "username": "user", "password": "secret", "serveraddress": "localhost:5000"}
    cli("pull", "other.example/app:v1")
    assert engine.requests[-1]["auth"] == "e30="


def test_pull_errors(cli: CLI, engine: FakeEngine) -> None:
    async def failing(r: web.Request) -> web.StreamResponse:
        return await stream(r, [PULL_MESSAGES[0], {
            "errorDetail": {"message": "manifest unknown: manifest unknown"},
            "error": "manifest unknown: manifest unknown"}])

    engine.handlers["create"] = failing
    assert cli("pull", "localhost:5000/x:1") == (
        1, "latest: Pulling from library/busybox\n", "manifest unknown: manifest unknown\n")

    async def refused(r: web.Request) -> web.StreamResponse:
        return error(404, "pull access denied for nosuch, repository does not exist or may "
                          "require 'docker login'")

    engine.handlers["create"] = refused
    code, out, err = cli("pull", "nosuch")
    assert (code, out) == (1, "Using default tag: latest\n")
    assert err == ("Error response from daemon: pull access denied for nosuch, repository "
                   "does not exist or may require 'docker login'\n")


def test_pull_asks_for_credentials_at_a_terminal(cli: CLI, engine: FakeEngine,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ketch.cli import registry_client_cmds as rc

    async def needs_login(r: web.Request) -> web.StreamResponse:
        if decoded(r.headers.get("X-Registry-Auth")).get("username") != "user":
            return error(401, "authentication required")
        return await stream(r, PULL_MESSAGES)

    engine.handlers["create"] = needs_login
    assert cli("pull", "localhost:5000/x:1")[0] == 1       # no terminal: the error
    monkeypatch.setattr(rc, "_stdin_is_terminal", lambda: True)
    monkeypatch.setattr(rc, "_read_secret", lambda prompt: "secret")
    code, out, _ = cli("pull", "localhost:5000/x:1", stdin="user\n")
    assert code == 0
    assert out.startswith("\nLogin prior to pull:\nUsername: latest: Pulling from")


# --- push -------------------------------------------------------------------------------------


def test_push(cli: CLI, engine: FakeEngine) -> None:
    code, out, err = cli("push", "localhost:5000/busybox")
    assert (code, err) == (0, "")
    assert out == ("Using default tag: latest\n"
                   "The push refers to repository [localhost:5000/busybox]\n"
                   "aaa: Preparing\naaa: Pushed\nlatest: digest: sha256:abc size: 527\n")
    [req] = engine.named("push")
    assert req["path"] == "/v1.45/images/localhost:5000/busybox/push?tag=latest"
    assert (req["auth"], req["body"]) == ("e30=", b"")
    assert cli("push", "-q", "localhost:5000/busybox") == (
        0, "localhost:5000/busybox:latest\n", "")
    assert cli("image", "push", "-a", "-q", "busybox") == (0, "docker.io/library/busybox\n", "")
    assert engine.requests[-1]["path"] == "/v1.45/images/docker.io/library/busybox/push"


def test_push_refusals(cli: CLI, engine: FakeEngine) -> None:
    assert cli("push", "busybox@sha256:" + "a" * 64) == (
        1, "", "cannot push a digest reference\n")
    assert cli("push", "-a", "busybox:1") == (1, "", "tag can't be used with --all-tags/-a\n")
    assert cli("push", "--platform", "linux/amd64", "localhost:5000/busybox") == (
        1, "", '"--platform" requires API version 1.46, but the Docker daemon API version '
               'is 1.45\n')
    assert engine.named("push") == []


# --- search -----------------------------------------------------------------------------------


def test_search_table(cli: CLI, engine: FakeEngine) -> None:
    code, out, _ = cli("search", "busybox")
    assert code == 0
    assert out == (
        "NAME      DESCRIPTION                                     STARS     OFFICIAL\n"
        "busybox   Busybox base image.                             3000      [OK]\n"
        "foo/bar   " + "x" * 44 + "…   2         \n")
    code, out, _ = cli("search", "--no-trunc", "--limit", "5", "-f", "is-official=true",
                       "--format", "{{.Name}}: {{.StarCount}}", "busybox")
    assert out == "busybox: 3000\nfoo/bar: 2\n"
    path = engine.requests[-1]["path"]
    assert "limit=5" in path and "%22is-official%22%3A%7B%22true%22%3Atrue%7D" in path
    code, _, err = cli("search", "--limit", "x", "busybox")
    assert code == 125 and err.startswith('invalid argument "x" for "--limit" flag')

    async def unreachable(r: web.Request) -> web.StreamResponse:
        return error(500, 'Get "https://index.docker.io/v1/search?q=busybox&n=25": dial tcp: '
                          "lookup index.docker.io: no such host")

    engine.handlers["search"] = unreachable
    code, out, err = cli("search", "busybox")
    assert (code, out) == (1, "")
    assert err.startswith("Error response from daemon: Get \"https://index.docker.io/v1/")

    async def no_index(r: web.Request) -> web.StreamResponse:
        return error(503, "searching is not supported")

    engine.handlers["search"] = no_index        # the daemon's answer, not a daemon away
    assert cli("search", "busybox") == (
        1, "", "Error response from daemon: searching is not supported\n")


# --- run/create --pull ------------------------------------------------------------------------


def test_create_pulls_a_missing_image(cli: CLI, engine: FakeEngine) -> None:
    code, out, err = cli("create", "busybox")
    assert (code, out) == (0, "c" * 64 + "\n")
    assert err == ("Unable to find image 'busybox:latest' locally\n"
                   "latest: Pulling from library/busybox\naaa: Pulling fs layer\n"
                   "aaa: Download complete\naaa: Pull complete\nDigest: sha256:abc\n"
                   "Status: Downloaded newer image for busybox:latest\n")
    assert [r["name"] for r in engine.requests] == ["containers_create", "create",
                                                    "containers_create"]
    # present now: no pull; --pull always pulls anyway (quietly with -q)
    assert cli("create", "busybox") == (0, "c" * 64 + "\n", "")
    assert cli("create", "-q", "--pull", "always", "busybox") == (0, "c" * 64 + "\n", "")
    assert [r["name"] for r in engine.requests][-3:] == ["containers_create", "create",
                                                         "containers_create"]


def test_create_pull_never_and_failed_pull(cli: CLI, engine: FakeEngine) -> None:
    assert cli("create", "--pull", "never", "busybox") == (
        1, "", "Error response from daemon: No such image: busybox:latest\n")
    assert engine.named("create") == []

    async def refused(r: web.Request) -> web.StreamResponse:
        return error(404, "pull access denied for busybox")

    engine.handlers["create"] = refused
    code, out, err = cli("run", "busybox")
    assert (code, out) == (125, "")
    assert err == ("Unable to find image 'busybox:latest' locally\nketch: Error response from "
                   "daemon: pull access denied for busybox\n\n"
                   "Run 'ketch run --help' for more information\n")


def test_interactive_login_at_a_terminal(engine: FakeEngine, tmp_path: Path) -> None:
    """The prompts on a real terminal (a pty): the username echoed, the password not."""
    import os
    import pty
    import select
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ketch.cli.main", "-H", f"unix://{engine.sock}", "--config",
         str(tmp_path / "cfg"), "login", "localhost:5000"],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""

    def read_until(text: bytes) -> None:
        nonlocal seen
        while text not in seen:
            ready, _, _ = select.select([master], [], [], 20)
            assert ready, seen
            try:
                chunk = os.read(master, 4096)
            except OSError:
                chunk = b""
            assert chunk, seen
            seen += chunk

    try:
        read_until(b"Username: ")
        os.write(master, b"user\n")
        read_until(b"Password: ")
        os.write(master, b"secret\n")
        read_until(b"Login Succeeded")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"user\r\n" in seen and b"secret" not in seen     # the password is not echoed
    assert json.loads(engine.named("auth")[0]["body"])["password"] == "secret"
    assert config(tmp_path)["auths"]["localhost:5000"]["auth"] == \
        base64.b64encode(b"user:secret").decode()


def test_content_trust_is_refused_not_skipped(cli: CLI, engine: FakeEngine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli("pull", "--disable-content-trust=false", "busybox")
    assert code == 1 and err.startswith("content trust is not supported")
    monkeypatch.setenv("DOCKER_CONTENT_TRUST", "1")
    assert cli("push", "localhost:5000/x:1")[0] == 1
    assert cli("pull", "--disable-content-trust", "-q", "busybox")[0] == 0
    assert cli("pull", "-q", "busybox@sha256:" + "a" * 64)[0] == 0   # a digest needs no trust
    monkeypatch.setenv("DOCKER_CONTENT_TRUST", "false")
    assert cli("pull", "-q", "busybox")[0] == 0
    assert len(engine.named("create")) == 3 and engine.named("push") == []


def test_client_distribution_inspect(engine: FakeEngine) -> None:
    from ketch.client import Client
    from ketch.errors import NotFound

    c = Client(f"unix://{engine.sock}")
    got = c.distribution_inspect("localhost:5000/me/box:1", auth="e30=")
    assert got["Descriptor"]["digest"] == "sha256:abc"
    [req] = engine.named("distribution")
    assert (req["path"], req["auth"]) == ("/v1.45/distribution/localhost:5000/me/box:1/json",
                                          "e30=")
    with pytest.raises(NotFound, match="manifest unknown"):
        c.distribution_inspect("localhost:5000/me/box:nosuch")
