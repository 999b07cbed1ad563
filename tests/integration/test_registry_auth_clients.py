"""Real clients against ``ketch registry serve --auth basic|token``: skopeo, curl-like HTTP, TLS.

Each test starts its own server process on 127.0.0.1 and a free port with a
private storage directory and htpasswd file, and stops it by the pid it
started, also when the test fails. Only the test with Debian's dockerd (the
reference client of docker's identity tokens) needs root.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.integration.refdockerd import RefDockerd, ref_dockerd  # noqa: F401 - a fixture
from tests.integration.registries import (
    PASSWORD,
    USER,
    Registry,
    add_user,
    oci_layout,
    self_signed,
    tar_layer,
)

SKOPEO = shutil.which("skopeo")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")

Start = Callable[..., Registry]


@pytest.fixture
def start(tmp_path: Path, start_registry: Callable[..., Registry]) -> Start:
    """``start(auth, *extra, tls=False)``: ``ketch registry serve``; all stopped at the end.

    The servers of a test share one htpasswd file (``tmp_path/htpasswd``) and
    one certificate.
    """

    def go(auth: str, *extra: str, tls: bool = False) -> Registry:
        return start_registry("ketch", auth=auth, extra=extra, htpasswd=tmp_path / "htpasswd",
                              tls=self_signed_once(tmp_path) if tls else None)

    return go


def self_signed_once(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made once per test, and its key."""
    tls = tmp_path / "tls"
    if not (tls / "server.crt").exists():
        assert OPENSSL is not None
        cert, _ = self_signed(tls)
        # skopeo's --cert-dir: *.crt files there are trusted CAs (a self-signed
        # certificate is its own CA).
        certs = tmp_path / "certs.d"
        certs.mkdir()
        shutil.copy(cert, certs / "ca.crt")
    return tls / "server.crt", tls / "server.key"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    oci_layout(tmp_path / "image", [tar_layer({"payload.bin": os.urandom(256 * 1024)})])
    return tmp_path / "image"


def skopeo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # An empty auth file of our own: neither the host's credentials nor a
    # previous test's are ever used.
    authfile = tmp_path / "auth.json"
    if not authfile.exists():
        authfile.write_text("{}")
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(authfile)}
    assert SKOPEO is not None
    return subprocess.run([SKOPEO, *args], capture_output=True, text=True, env=env, timeout=120)


def push(tmp_path: Path, server: Registry, image: Path, ref: str, creds: str | None,
         *tls_args: str) -> subprocess.CompletedProcess[str]:
    args = ["copy", "--retry-times", "0"]
    if creds is not None:
        args += ["--dest-creds", creds]
    args += list(tls_args or ("--dest-tls-verify=false",))
    return skopeo(tmp_path, *args, f"oci:{image}:latest", f"docker://{server.host}/{ref}")


def inspect(tmp_path: Path, server: Registry, ref: str, creds: str | None,
            *tls_args: str) -> subprocess.CompletedProcess[str]:
    args = ["inspect", "--retry-times", "0"]
    if creds is not None:
        args += ["--creds", creds]
    args += list(tls_args or ("--tls-verify=false",))
    return skopeo(tmp_path, *args, f"docker://{server.host}/{ref}")


def http(server: Registry, path: str, *, headers: dict[str, str] | None = None,
         data: bytes | None = None, context: ssl.SSLContext | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(server.url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


CREDS = f"{USER}:{PASSWORD}"


def push_and_inspect(tmp_path: Path, server: Registry, image: Path, ref: str) -> None:
    """``image`` pushed as ``ref`` with the right credentials, and found there with its tag."""
    ok = push(tmp_path, server, image, ref, CREDS)
    assert ok.returncode == 0, ok.stderr + server.log()
    got = inspect(tmp_path, server, ref, CREDS)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["RepoTags"] == [ref.rpartition(":")[2]]


# -- basic -------------------------------------------------------------------

def test_basic_skopeo_push_inspect_and_wrong_passwords(tmp_path: Path, start: Start,
                                                       image: Path) -> None:
    server = start("basic")
    push_and_inspect(tmp_path, server, image, "team/app:1")

    wrong = push(tmp_path, server, image, "team/app:2", f"{USER}:wrong")
    assert wrong.returncode != 0
    assert "unauthorized: authentication required" in wrong.stderr
    for creds in (f"{USER}:wrong", f"mallory:{PASSWORD}", None):
        bad = inspect(tmp_path, server, "team/app:1", creds)
        assert bad.returncode != 0
        assert "unauthorized: authentication required" in bad.stderr
    # Nothing of the refused push was stored.
    tags = inspect(tmp_path, server, "team/app:1", CREDS)
    assert json.loads(tags.stdout)["RepoTags"] == ["1"]


def test_basic_challenge_over_http(tmp_path: Path, start: Start) -> None:
    server = start("basic", "--realm", "ketch-test")
    status, headers, body = http(server, "/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="ketch-test"'
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    status, _, _ = http(server, "/v2/", headers=basic(USER, PASSWORD))
    assert status == 200
    status, _, body = http(server, "/v2/_catalog", headers=basic(USER, "nope"))
    assert status == 401
    assert json.loads(body)["errors"][0]["detail"] == [
        {"Type": "registry", "Class": "", "Name": "catalog", "Action": "*"}]


def test_basic_user_added_while_running(tmp_path: Path, start: Start, image: Path) -> None:
    server = start("basic")
    assert push(tmp_path, server, image, "x:1", CREDS).returncode == 0
    assert inspect(tmp_path, server, "x:1", "bob:builder").returncode != 0
    add_user(tmp_path / "htpasswd", "bob", "builder")
    got = inspect(tmp_path, server, "x:1", "bob:builder")
    assert got.returncode == 0, got.stderr + server.log()


def test_log_holds_no_password(tmp_path: Path, start: Start, image: Path) -> None:
    server = start("basic")
    push(tmp_path, server, image, "x:1", CREDS)
    inspect(tmp_path, server, "x:1", f"{USER}:a-wrong-password")
    log = server.log()
    assert PASSWORD not in log and "a-wrong-password" not in log
    assert base64.b64encode(CREDS.encode()).decode() not in log


# -- token -------------------------------------------------------------------

def test_token_skopeo_push_inspect_and_wrong_passwords(tmp_path: Path, start: Start,
                                                       image: Path) -> None:
    server = start("token")
    push_and_inspect(tmp_path, server, image, "team/app:1")

    wrong = push(tmp_path, server, image, "team/app:2", f"{USER}:wrong")
    assert wrong.returncode != 0
    assert "incorrect username or password" in wrong.stderr
    # Anonymous: a token with no access, then the registry's refusal.
    anon = inspect(tmp_path, server, "team/app:1", None)
    assert anon.returncode != 0
    assert "requested access to the resource is denied" in anon.stderr


def token_for(server: Registry, scope: str, *, context: ssl.SSLContext | None = None
              ) -> dict[str, Any]:
    query = urllib.parse.urlencode({"service": "ketch-registry", "scope": scope})
    status, _, body = http(server, f"/token?{query}", headers=basic(USER, PASSWORD),
                           context=context)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def test_token_challenge_and_flow_over_http(tmp_path: Path, start: Start, image: Path) -> None:
    server = start("token")
    assert push(tmp_path, server, image, "x:1", CREDS).returncode == 0
    status, headers, _ = http(server, "/v2/x/manifests/1")
    assert status == 401
    assert headers["WWW-Authenticate"] == (
        f'Bearer realm="http://{server.host}/token",service="ketch-registry",'
        'scope="repository:x:pull"')
    token = token_for(server, "repository:x:pull")
    assert token["expires_in"] > 0 and token["token"] == token["access_token"]
    accept = "application/vnd.oci.image.manifest.v1+json"
    status, _, body = http(server, "/v2/x/manifests/1", headers={
        "Authorization": f"Bearer {token['token']}", "Accept": accept})
    assert status == 200 and json.loads(body)["schemaVersion"] == 2
    # A pull-only token does not delete.
    req = urllib.request.Request(server.url + "/v2/x/manifests/1", method="DELETE",
                                 headers={"Authorization": f"Bearer {token['token']}"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 401
    assert 'error="insufficient_scope"' in exc.value.headers["WWW-Authenticate"]


@pytest.mark.slow
def test_expired_token(tmp_path: Path, start: Start) -> None:
    server = start("token", "--token-ttl", "1")
    token = token_for(server, "repository:x:pull")
    assert token["expires_in"] == 1
    auth = {"Authorization": f"Bearer {token['token']}"}
    assert http(server, "/v2/", headers=auth)[0] == 200
    # Past the expiry and the server's leeway for clock rounding (5 s).
    time.sleep(7)
    status, headers, body = http(server, "/v2/", headers=auth)
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"


def test_token_key_survives_a_restart(tmp_path: Path, start: Start) -> None:
    key = tmp_path / "token.key"
    first = start("token", "--token-key", str(key))
    token = token_for(first, "repository:x:pull")
    assert key.stat().st_mode & 0o777 == 0o600
    first.stop()
    second = start("token", "--token-key", str(key))
    status, _, _ = http(second, "/v2/", headers={"Authorization": f"Bearer {token['token']}"})
    assert status == 200


def test_docker_oauth_password_and_refresh_grants(tmp_path: Path, start: Start) -> None:
    server = start("token")
    form = urllib.parse.urlencode({"grant_type": "password", "username": USER,
                                   "password": PASSWORD, "service": "ketch-registry",
                                   "client_id": "docker", "access_type": "offline",
                                   "scope": "repository:x:pull"}).encode()
    status, _, body = http(server, "/token", data=form)
    assert status == 200, body
    refresh = json.loads(body)["refresh_token"]
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh,
                                   "service": "ketch-registry", "client_id": "docker",
                                   "scope": "repository:x:pull,push"}).encode()
    status, _, body = http(server, "/token", data=form)
    assert status == 200, body
    assert json.loads(body)["scope"] == "repository:x:pull,push"


# -- TLS ---------------------------------------------------------------------

@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("auth", ["basic", "token"])
def test_tls_with_a_self_signed_certificate(tmp_path: Path, start: Start, image: Path,
                                            auth: str) -> None:
    server = start(auth, tls=True)
    certs = str(tmp_path / "certs.d")
    ok = push(tmp_path, server, image, "secure/app:1", CREDS, "--dest-cert-dir", certs)
    assert ok.returncode == 0, ok.stderr + server.log()
    got = inspect(tmp_path, server, "secure/app:1", CREDS, "--cert-dir", certs)
    assert got.returncode == 0, got.stderr
    wrong = inspect(tmp_path, server, "secure/app:1", f"{USER}:wrong", "--cert-dir", certs)
    assert wrong.returncode != 0
    # Without trusting the certificate, the client refuses the server.
    untrusted = inspect(tmp_path, server, "secure/app:1", CREDS, "--tls-verify=true")
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
    if auth == "token":
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "server.crt"))
        status, headers, _ = http(server, "/v2/", context=ctx)
        assert status == 401
        assert f'realm="https://{server.host}/token"' in headers["WWW-Authenticate"]
        assert token_for(server, "repository:secure/app:pull", context=ctx)["token"]


# -- dockerd 20.10, the reference for docker login's identity tokens ----------

@pytest.mark.root
def test_reference_dockerd_login_identity_token_push_pull(
        tmp_path: Path, start: Start, ref_dockerd: RefDockerd) -> None:  # noqa: F811
    d = ref_dockerd
    server = start("token", "--access-log", "-")
    name = f"{server.host}/ref/box:1"
    config = d.base / "cli" / "config.json"
    try:
        d.ok("tag", "busybox:latest", name)
        bad = d.cli("login", "-u", USER, "--password-stdin", server.host, input=b"wrong\n")
        assert bad.returncode == 1
        assert "unauthorized: incorrect username or password" in bad.stderr, bad
        d.ok("login", "-u", USER, "--password-stdin", server.host,
             input=PASSWORD.encode() + b"\n")
        # dockerd asked for an offline token: the CLI keeps the identity token,
        # not the password, and later requests use the refresh-token grant.
        stored = json.loads(config.read_text())["auths"][server.host]
        assert stored.get("identitytoken")
        assert PASSWORD not in config.read_text()
        d.ok("push", name, timeout=120)
        d.ok("rmi", name)
        d.ok("pull", name, timeout=120)
        assert "POST /token" in server.log()
        # A new password revokes the identity token.
        htpasswd = tmp_path / "htpasswd"
        htpasswd.write_text("")
        add_user(htpasswd, USER, "a new password")
        refused = d.cli("pull", name, timeout=120)
        assert refused.returncode == 1 and "refresh token revoked" in refused.stderr, refused
        d.ok("logout", server.host)
        anonymous = d.cli("pull", name, timeout=120)
        assert anonymous.returncode == 1
        assert "requested access to the resource is denied" in anonymous.stderr, anonymous
    finally:
        d.cli("logout", server.host)
        d.cli("rmi", name)
