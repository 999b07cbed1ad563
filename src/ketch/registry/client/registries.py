"""The daemon's entry point: endpoints per registry, pings, sessions, login.

``Registries`` is made once per daemon from its options and shared by every
pull, push and login (it is thread-safe): it owns the connection pool and
the token cache, and knows, as dockerd does, where a registry answers:

* ``docker.io`` is ``registry-1.docker.io``, after the configured mirrors;
* other registries are tried over https first; an insecure one (listed in
  ``--insecure-registry``, or loopback) without TLS verification, and then
  over plain http if https does not answer.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ketch.errors import InvalidArgument, KetchError, Unauthorized
from ketch.image.reference import DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, Reference
from ketch.registry.client.auth import Authorizer, TokenCache, basic_header
from ketch.registry.client.challenge import Challenge, parse_challenges
from ketch.registry.client.errors import error_from_response, status_text
from ketch.registry.client.options import Credentials, RegistryOptions
from ketch.registry.client.session import Endpoint, Session
from ketch.registry.client.transport import NetworkError, Transport, method_word

DOCKER_HUB_HOST = "registry-1.docker.io"
# What docker login sends for Docker Hub, and what config.json keys it under.
DOCKER_HUB_INDEX = "https://index.docker.io/v1/"
PING_CACHE_SECONDS = 300.0

if TYPE_CHECKING:
    from ketch.registry.client.repository import Repository

T = TypeVar("T")


@dataclass(frozen=True)
class LoginResult:
    """The body of POST /auth: ``{"Status": ..., "IdentityToken": ...}``."""

    status: str = "Login Succeeded"
    identity_token: str = ""


def registry_host(domain: str) -> str:
    """The host a reference's domain is reached at (docker.io's is not docker.io)."""
    return DOCKER_HUB_HOST if domain in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, "") else domain


def login_host(server: str) -> str:
    """docker login's server argument -> the registry host (URL, v1 index and paths accepted)."""
    server = server.strip()
    if server in ("", DOCKER_HUB_INDEX, DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, DOCKER_HUB_HOST,
                  "https://" + DEFAULT_DOMAIN, "https://" + LEGACY_DEFAULT_DOMAIN):
        return DOCKER_HUB_HOST
    netloc = urllib.parse.urlsplit(server).netloc if "://" in server else server.split("/", 1)[0]
    if not netloc:
        raise InvalidArgument(f"invalid registry address {server!r}")
    return registry_host(netloc)


class Registries:
    """Connections, tokens and endpoint knowledge shared by all registry operations."""

    def __init__(self, options: RegistryOptions) -> None:
        self.options = options
        self.transport = Transport(options)
        self.tokens = TokenCache()
        self._lock = threading.Lock()
        self._pings: dict[str, tuple[float, list[Challenge]]] = {}

    def close(self) -> None:
        """Close idle connections (the daemon's shutdown)."""
        self.transport.close()

    # --- endpoints -------------------------------------------------------------

    def endpoints(self, host: str, include_mirrors: bool = True) -> list[Endpoint]:
        """Where to try ``host`` (a registry host, docker.io already mapped), in order."""
        out: list[Endpoint] = []
        if host == DOCKER_HUB_HOST and include_mirrors:
            for mirror in self.options.mirrors:
                parts = urllib.parse.urlsplit(mirror)
                out.append(Endpoint(parts.scheme, parts.netloc,
                                    verify=not self.options.is_insecure(parts.netloc), mirror=True))
        for name, url in self.options.endpoints:
            if registry_host(name) == host:
                parts = urllib.parse.urlsplit(url)
                out.append(Endpoint(parts.scheme, parts.netloc,
                                    verify=not self.options.is_insecure(parts.netloc)))
                return out
        insecure = self.options.is_insecure(host)
        out.append(Endpoint("https", host, verify=not insecure))
        if insecure:
            out.append(Endpoint("http", host, verify=False))
        return out

    def ping(self, endpoint: Endpoint, force: bool = False) -> list[Challenge]:
        """``GET /v2/`` on the endpoint: its challenges (none when it needs no auth).

        Any HTTP answer counts as "this endpoint speaks"; only a network or TLS
        failure raises (NetworkError), which is what makes the caller try the
        next endpoint. Answers are remembered for a while: every pull would
        otherwise start with the same round trip.
        """
        now = time.monotonic()
        with self._lock:
            cached = self._pings.get(endpoint.url)
        if cached is not None and not force and now - cached[0] < PING_CACHE_SECONDS:
            return cached[1]
        url = endpoint.url + "/v2/"
        with self.transport.request("GET", url, verify=endpoint.verify) as resp:
            resp.discard()
            challenges = (parse_challenges(resp.header_all("WWW-Authenticate"))
                          if resp.status == 401 else [])
            if resp.status >= 500:
                # A registry that is up but failing: not worth caching.
                return challenges
        with self._lock:
            self._pings[endpoint.url] = (now, challenges)
        return challenges

    def session(self, endpoint: Endpoint, creds: Credentials) -> Session:
        challenges = self.ping(endpoint)
        authorizer = Authorizer(self.transport, creds, list(challenges), self.tokens,
                                verify_realm=True)
        return Session(self.transport, self.options, endpoint, authorizer)

    def each_endpoint(self, endpoints: list[Endpoint], op: Callable[[Endpoint], T]) -> T:
        """Run ``op`` on the first endpoint that works, as dockerd falls back.

        A network failure moves on to the next endpoint (https -> http for an
        insecure registry, mirror -> the next mirror -> the registry); so does
        any failure on a mirror, which may simply not have the image. The
        last endpoint's error is the one reported.
        """
        last: KetchError | None = None
        for endpoint in endpoints:
            try:
                return op(endpoint)
            except KetchError as exc:
                if not (isinstance(exc, NetworkError) or endpoint.mirror):
                    raise
                last = exc
        assert last is not None
        raise last

    # --- public API ---------------------------------------------------------------

    def repository(self, ref: Reference, creds: Credentials | None = None) -> Repository:
        """A repository on its registry; nothing is sent until an operation runs."""
        from ketch.registry.client.repository import Repository

        return Repository(self, ref, creds or Credentials())

    def login(self, server: str, creds: Credentials) -> LoginResult:
        """Check credentials against a registry the way ``docker login`` does (dockerd's loginV2).

        A registry without auth accepts anyone; Basic is checked with an
        authenticated ``GET /v2/``; Bearer by fetching an offline token, whose
        refresh token (if the server gives one) is returned as IdentityToken
        for the CLI to store instead of the password.
        """
        host = login_host(server)
        return self.each_endpoint(self.endpoints(host, include_mirrors=False),
                                  lambda ep: self._login(ep, creds))

    def _login(self, endpoint: Endpoint, creds: Credentials) -> LoginResult:
        challenges = self.ping(endpoint, force=True)
        url = endpoint.url + "/v2/"
        context = f"{method_word('GET')} \"{url}\""
        authorizer = Authorizer(self.transport, creds, list(challenges), self.tokens)
        headers: dict[str, str] = {}
        identity = ""
        basic = creds.basic()
        for challenge in challenges:
            if challenge.scheme == "bearer":
                token = authorizer.token(challenge, (), context, offline=True)
                headers["Authorization"] = "Bearer " + token.value
                identity = token.refresh_token
                break
            if challenge.scheme == "basic":
                if basic is None:
                    raise Unauthorized(f"{context}: no basic auth credentials")
                headers["Authorization"] = basic_header(*basic)
                break
        with self.transport.request("GET", url, headers, verify=endpoint.verify) as resp:
            body = resp.read(1 << 16)
            if resp.status == 200:
                return LoginResult(identity_token=identity)
            if resp.status == 401:
                raise Unauthorized(f"login attempt to {url} failed with status: "
                                   f"{status_text(resp.status)}")
            raise error_from_response(resp.status, body,
                                      parse_challenges(resp.header_all("WWW-Authenticate")),
                                      context=context)
