"""Registry client: header parsing, credentials, options, error mapping, media types."""

from __future__ import annotations

import base64
import errno
import json
import ssl
import time
from pathlib import Path

import pytest

from ketch.errors import (
    Forbidden,
    InvalidArgument,
    NotFound,
    NotSupported,
    Unauthorized,
    Unavailable,
)
from ketch.registry.client.auth import Authorizer, Token, TokenCache, merge_scopes
from ketch.registry.client.challenge import Challenge, parse_challenges, parse_link_next
from ketch.registry.client.errors import RegistryError, error_from_response
from ketch.registry.client.options import Credentials, RegistryOptions, split_host_port
from ketch.registry.client.registries import Registries, login_host, registry_host
from ketch.registry.client.repository import manifest_media_type
from ketch.registry.client.transport import Transport, go_dial_error

# --- WWW-Authenticate --------------------------------------------------------------


def test_bearer_challenge_with_quoted_params() -> None:
    [c] = parse_challenges(['Bearer realm="https://auth.example/token",service="reg.example",'
                            'scope="repository:library/busybox:pull"'])
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg.example",
                        "scope": "repository:library/busybox:pull"}


def test_several_challenges_in_one_header_and_across_headers() -> None:
    got = parse_challenges(['Basic realm="basic-realm", Bearer realm="http://t/token",'
                            'service=svc, error="invalid_token"', "Negotiate abc123=="])
    assert [c.scheme for c in got] == ["basic", "bearer", "negotiate"]
    assert got[0].params == {"realm": "basic-realm"}
    assert got[1].params == {"realm": "http://t/token", "service": "svc", "error": "invalid_token"}
    assert got[2].token68 == "abc123=="


def test_quoted_string_escapes_commas_and_spaces() -> None:
    [c] = parse_challenges([r'Bearer  realm = "a \"quoted\", realm" , scope="x y",,'])
    assert c.params == {"realm": 'a "quoted", realm', "scope": "x y"}


def test_scheme_is_case_insensitive_and_param_names_lowercased() -> None:
    [c] = parse_challenges(['BEARER Realm="r",SERVICE="s"'])
    assert c == Challenge("bearer", {"realm": "r", "service": "s"})


def test_empty_and_garbage_headers() -> None:
    assert parse_challenges(["", "  ,  "]) == []
    [c] = parse_challenges(['Basic'])
    assert c == Challenge("basic")


def test_unterminated_quote_runs_to_end() -> None:
    [c] = parse_challenges(['Bearer realm="http://x/token'])
    assert c.get("realm") == "http://x/token"


def test_link_next() -> None:
    assert parse_link_next('</v2/a/tags/list?last=b&n=2>; rel="next"') == "/v2/a/tags/list?last=b&n=2"
    assert parse_link_next('<http://x/a>; rel="prev", </b>; rel=next') == "/b"
    assert parse_link_next('</a>; rel="prev"') is None


def test_merge_scopes_unites_actions_per_repository() -> None:
    assert merge_scopes(["repository:a:pull", "repository:a:push", "repository:b:pull"]) == (
        "repository:a:pull,push", "repository:b:pull")
    assert merge_scopes(["repository:a:pull repository:a:pull"]) == ("repository:a:pull",)
    assert merge_scopes(["registry:catalog:*"]) == ("registry:catalog:*",)


# --- credentials -------------------------------------------------------------------------


def _header(doc: object, urlsafe: bool = True, pad: bool = True) -> str:
    raw = json.dumps(doc).encode()
    text = (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()
    return text if pad else text.rstrip("=")


@pytest.mark.parametrize("urlsafe,pad", [(True, True), (True, False), (False, True), (False, False)])
def test_credentials_header_encodings(urlsafe: bool, pad: bool) -> None:
    # "?>?" makes the encodings differ in '+/' vs '-_'.
    doc = {"username": "u?>?", "password": "p?>?>", "serveraddress": "127.0.0.1:5000"}
    creds = Credentials.from_header(_header(doc, urlsafe, pad))
    assert (creds.username, creds.password, creds.server_address) == ("u?>?", "p?>?>", "127.0.0.1:5000")
    assert creds.basic() == ("u?>?", "p?>?>")


def test_credentials_keys_are_case_insensitive_and_tokens_kept() -> None:
    creds = Credentials.from_header(_header({"Username": "a", "IdentityToken": "it",
                                             "RegistryToken": "rt", "email": "x@y"}))
    assert (creds.username, creds.identity_token, creds.registry_token) == ("a", "it", "rt")


def test_credentials_auth_field_decoded() -> None:
    auth = base64.b64encode(b"alice:s3:cret").decode()
    creds = Credentials.from_header(_header({"auth": auth}))
    assert creds.basic() == ("alice", "s3:cret")
    assert not creds.empty


def test_credentials_empty_header_and_null() -> None:
    assert Credentials.from_header("").empty
    assert Credentials.from_header(_header(None)).empty
    assert Credentials.from_header(_header({})).empty


def test_credentials_bad_header() -> None:
    with pytest.raises(InvalidArgument, match="invalid X-Registry-Auth header"):
        Credentials.from_header("!!!notbase64")
    with pytest.raises(InvalidArgument, match="invalid X-Registry-Auth header"):
        Credentials.from_header(base64.urlsafe_b64encode(b"[1]").decode())


# --- options and endpoints ------------------------------------------------------------------


def test_loopback_is_always_insecure() -> None:
    opts = RegistryOptions()
    assert opts.is_insecure("127.0.0.1:5000")
    assert opts.is_insecure("127.3.4.5")
    assert opts.is_insecure("localhost:5000")
    assert opts.is_insecure("[::1]:5000")
    assert not opts.is_insecure("10.1.2.3:5000")


def test_insecure_by_host_port_and_cidr(monkeypatch: pytest.MonkeyPatch) -> None:
    from ketch.registry.client import options

    # A name is checked against the CIDRs by its addresses (dockerd resolves it); the
    # resolver is a fake here, since tests send no DNS query past loopback.
    looked_up: list[str] = []

    def fake_getaddrinfo(host: str, *args: object, **kw: object) -> list[tuple]:
        looked_up.append(host)
        if host == "inside.example":
            return [(2, 1, 6, "", ("10.9.9.9", 0))]
        raise OSError("no such host")

    monkeypatch.setattr(options.socket, "getaddrinfo", fake_getaddrinfo)
    options._is_insecure.cache_clear()
    opts = RegistryOptions(insecure_registries=("reg.example:5000", "10.0.0.0/8"))
    assert opts.is_insecure("reg.example:5000")
    assert not opts.is_insecure("reg.example:5001")
    assert opts.is_insecure("10.1.2.3:443")
    assert not opts.is_insecure("11.0.0.1")
    assert opts.is_insecure("inside.example:443")
    assert looked_up == ["reg.example", "inside.example"]
    # Without CIDRs of the user's, nothing is looked up at all.
    looked_up.clear()
    assert not RegistryOptions().is_insecure("registry.example")
    assert looked_up == []
    options._is_insecure.cache_clear()


def test_options_refuse_bad_mirror_and_insecure_entries() -> None:
    with pytest.raises(InvalidArgument, match="no scheme"):
        RegistryOptions(mirrors=("mirror.example",))
    with pytest.raises(InvalidArgument, match="should not contain"):
        RegistryOptions(insecure_registries=("http://x",))


def test_endpoint_overrides_replace_the_registry_not_the_mirrors() -> None:
    regs = Registries(RegistryOptions(mirrors=("http://127.0.0.1:8/",),
                                      endpoints=(("docker.io", "http://127.0.0.1:9"),
                                                 ("reg.example", "https://10.1.2.3:5000"))))
    assert [e.url for e in regs.endpoints(registry_host("docker.io"))] == [
        "http://127.0.0.1:8", "http://127.0.0.1:9"]
    assert [(e.url, e.verify) for e in regs.endpoints("reg.example")] == [
        ("https://10.1.2.3:5000", True)]
    with pytest.raises(InvalidArgument, match="invalid registry endpoint"):
        RegistryOptions(endpoints=(("docker.io", "127.0.0.1:9"),))


def test_loopback_names_come_from_the_hosts_file_not_dns(tmp_path: Path) -> None:
    from ketch.registry.client import options

    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.1.1 myreg.local myreg # comment\n")
    assert options._hosts_file_addresses("myreg", str(hosts)) == [
        options.ipaddress.ip_address("127.0.1.1")]
    assert options._hosts_file_addresses("other", str(hosts)) == []


def test_split_host_port() -> None:
    assert split_host_port("a:5000") == ("a", 5000)
    assert split_host_port("[::1]:5000") == ("::1", 5000)
    assert split_host_port("a") == ("a", None)


def test_endpoints_order_as_dockerd() -> None:
    regs = Registries(RegistryOptions(mirrors=("http://127.0.0.1:9/",),
                                      insecure_registries=("reg.example:5000",)))
    hub = regs.endpoints(registry_host("docker.io"))
    assert [(e.url, e.mirror) for e in hub] == [("http://127.0.0.1:9", True),
                                                ("https://registry-1.docker.io", False)]
    assert [e.url for e in regs.endpoints("reg.example:5000")] == [
        "https://reg.example:5000", "http://reg.example:5000"]
    assert [e.verify for e in regs.endpoints("reg.example:5000")] == [False, False]
    secure = regs.endpoints("secure.example")
    assert [(e.url, e.verify) for e in secure] == [("https://secure.example", True)]
    # Mirrors are for Docker Hub only, and never for pushes.
    assert len(regs.endpoints(registry_host("docker.io"), include_mirrors=False)) == 1


def test_login_host() -> None:
    assert login_host("") == "registry-1.docker.io"
    assert login_host("https://index.docker.io/v1/") == "registry-1.docker.io"
    assert login_host("docker.io") == "registry-1.docker.io"
    assert login_host("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000"
    assert login_host("127.0.0.1:5000") == "127.0.0.1:5000"


# --- error mapping -------------------------------------------------------------------------


def _body(*errors: tuple[str, str]) -> bytes:
    return json.dumps({"errors": [{"code": c, "message": m, "detail": None}
                                  for c, m in errors]}).encode()


@pytest.mark.parametrize("status,code,kind", [
    (404, "MANIFEST_UNKNOWN", NotFound),
    (404, "NAME_UNKNOWN", NotFound),
    (404, "BLOB_UNKNOWN", NotFound),
    (401, "UNAUTHORIZED", Unauthorized),
    (403, "DENIED", Forbidden),
    (404, "DENIED", Forbidden),  # the code wins over the status
    (400, "DIGEST_INVALID", InvalidArgument),
    (400, "MANIFEST_BLOB_UNKNOWN", InvalidArgument),
    (405, "UNSUPPORTED", NotSupported),
    (429, "TOOMANYREQUESTS", Unavailable),
])
def test_error_kinds(status: int, code: str, kind: type[Exception]) -> None:
    exc = error_from_response(status, _body((code, "msg")))
    assert isinstance(exc, kind) and isinstance(exc, RegistryError)
    assert exc.status == status and exc.codes == (code,)
    assert str(exc) == f"{code.lower().replace('_', ' ')}: msg"


def test_error_text_as_docker_prints_it() -> None:
    exc = error_from_response(404, _body(("MANIFEST_UNKNOWN", "manifest unknown")),
                              context="manifest for x:t not found")
    assert str(exc) == "manifest for x:t not found: manifest unknown: manifest unknown"
    several = error_from_response(400, _body(("DIGEST_INVALID", "a"), ("SIZE_INVALID", "b")))
    assert str(several) == "errors:\ndigest invalid: a\nsize invalid: b\n"


def test_error_without_body() -> None:
    assert str(error_from_response(500, b"oops")) == (
        "received unexpected HTTP status: 500 Internal Server Error")
    assert isinstance(error_from_response(503, b""), Unavailable)
    unauth = error_from_response(401, b"")
    assert isinstance(unauth, Unauthorized)
    assert str(unauth) == "unauthorized: authentication required"
    not_found = error_from_response(404, b"404 page not found\n")
    assert isinstance(not_found, NotFound)
    assert str(not_found).startswith("error parsing HTTP 404 response body: ")
    assert '"404 page not found\\n"' in str(not_found)


def test_error_from_bearer_challenge() -> None:
    challenges = parse_challenges(['Bearer realm="r",error="insufficient_scope"'])
    exc = error_from_response(401, b"", challenges)
    assert isinstance(exc, Forbidden)
    assert str(exc) == "denied: requested access to the resource is denied"
    challenges = parse_challenges(['Bearer realm="r",error="invalid_token",'
                                   'error_description="token expired"'])
    exc = error_from_response(401, _body(("UNAUTHORIZED", "authentication required")), challenges)
    assert isinstance(exc, Unauthorized)
    assert exc.codes == ("UNAUTHORIZED", "UNAUTHORIZED")
    assert str(exc).startswith("errors:\nunauthorized: token expired\n")


def test_error_details_body_of_token_servers() -> None:
    exc = error_from_response(401, b'{"details":"incorrect username or password"}')
    assert str(exc) == "unauthorized: incorrect username or password"


# --- manifest media types -------------------------------------------------------------------


def test_media_type_from_header_or_body() -> None:
    oci = "application/vnd.oci.image.manifest.v1+json"
    assert manifest_media_type(oci + "; charset=utf-8", b"{}") == oci
    assert manifest_media_type("application/json", b'{"schemaVersion":2,"manifests":[]}') == (
        "application/vnd.oci.image.index.v1+json")
    assert manifest_media_type("", b'{"schemaVersion":2,"config":{}}') == oci
    docker = "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest_media_type("text/plain", json.dumps({"mediaType": docker}).encode()) == docker


def test_schema1_refused() -> None:
    with pytest.raises(NotSupported, match="schema 1 is not supported"):
        manifest_media_type("application/vnd.docker.distribution.manifest.v1+prettyjws", b"{}")
    with pytest.raises(NotSupported):
        manifest_media_type("application/json", b'{"schemaVersion":1,"fsLayers":[]}')
    with pytest.raises(InvalidArgument):
        manifest_media_type("application/json", b"not json")


# --- token cache and 401 handling ---------------------------------------------------------------


def _authorizer(challenges: list[Challenge], creds: Credentials | None = None) -> Authorizer:
    return Authorizer(Transport(RegistryOptions()), creds or Credentials(), challenges, TokenCache())


def test_token_cache_expiry() -> None:
    cache = TokenCache()
    now = time.monotonic()
    cache.put(("k",), Token("fresh", now + 300))
    cache.put(("old",), Token("old", now + 5))  # inside the refresh margin: treated as expired
    assert cache.get(("k",)) == Token("fresh", now + 300)
    assert cache.get(("old",)) is None
    cache.drop(("k",))
    assert cache.get(("k",)) is None


def test_basic_header_and_missing_credentials() -> None:
    basic = [Challenge("basic", {"realm": "r"})]
    auth = _authorizer(basic, Credentials(username="u", password="p"))
    assert auth.headers(["repository:a:pull"], "Get x") == {
        "Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    with pytest.raises(Unauthorized, match="^Head \"u\": no basic auth credentials$"):
        _authorizer(basic).headers([], 'Head "u"')
    assert _authorizer([]).headers([], "x") == {}
    token = _authorizer([Challenge("bearer", {"realm": "http://127.0.0.1:9/t"})],
                        Credentials(registry_token="tok"))
    assert token.headers([], "x") == {"Authorization": "Bearer tok"}


def test_bearer_uses_cached_token_and_401_drops_it() -> None:
    challenge = Challenge("bearer", {"realm": "http://127.0.0.1:9/token", "service": "s"})
    auth = _authorizer([challenge])
    scopes = ("repository:a:pull",)
    key = auth._bearer_key(challenge, scopes)
    auth.cache.put(key, Token("cached", time.monotonic() + 300))
    assert auth.headers(list(scopes), "x") == {"Authorization": "Bearer cached"}
    # Same challenge, nothing new: not worth a retry.
    assert not auth.unauthorized([challenge], scopes)
    assert auth.cache.get(key) is not None
    invalid = Challenge("bearer", {**challenge.params, "error": "invalid_token"})
    assert auth.unauthorized([invalid], scopes)
    assert auth.cache.get(key) is None


def test_insufficient_scope_adds_the_asked_scope() -> None:
    challenge = Challenge("bearer", {"realm": "http://127.0.0.1:9/token"})
    auth = _authorizer([challenge])
    asked = Challenge("bearer", {"realm": "http://127.0.0.1:9/token", "error": "insufficient_scope",
                                 "scope": "repository:b:pull"})
    assert auth.unauthorized([asked], ["repository:a:push"])
    assert auth._scopes(["repository:a:push"]) == ("repository:a:push", "repository:b:pull")
    # Asked again for a scope already asked for: nothing new, no retry.
    again = Challenge("bearer", {"realm": "http://127.0.0.1:9/token", "scope": "repository:b:pull"})
    assert not auth.unauthorized([again], ["repository:a:push"])


def test_go_dial_error_words() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert go_dial_error(refused, "127.0.0.1:5000") == (
        "dial tcp 127.0.0.1:5000: connect: connection refused")
    assert go_dial_error(refused, "reg.example", "https") == (
        "dial tcp reg.example:443: connect: connection refused")
    assert go_dial_error(TimeoutError(), "reg.example", "http") == "dial tcp reg.example:80: i/o timeout"
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    assert go_dial_error(unreachable, "10.0.0.1:5000") == (
        "dial tcp 10.0.0.1:5000: connect: network is unreachable")


def test_certs_dir_problems_are_clear(tmp_path: Path) -> None:
    host = tmp_path / "reg.example:5000"
    host.mkdir()
    (host / "client.cert").write_text("x")
    transport = Transport(RegistryOptions(certs_dirs=(str(tmp_path),)))
    with pytest.raises(InvalidArgument, match="missing key client.key for client certificate "
                                              "client.cert"):
        transport.ssl_context("reg.example:5000", verify=True)
    (host / "client.cert").unlink()
    (host / "ca.crt").write_text("not a certificate")
    with pytest.raises(InvalidArgument, match="unable to load CA certificate"):
        transport.ssl_context("reg.example:5000", verify=True)
    # Another host has no directory: the system's CAs only.
    assert transport.ssl_context("other.example", verify=True).verify_mode == ssl.CERT_REQUIRED
