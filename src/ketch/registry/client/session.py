"""One registry endpoint spoken to with one set of credentials: auth retries and redirects.

A ``Session`` is what the repository operations send requests through. It
adds the Authorization header the endpoint's challenges call for, retries
once after a 401 that taught it something (a new challenge, an invalid
token, a missing scope), and follows redirects for reads (registries send
blob downloads to storage: S3, a CDN) without passing the registry's
credentials to another host, as Go's HTTP client does.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ketch.errors import Unauthorized
from ketch.registry.client.auth import Authorizer
from ketch.registry.client.challenge import parse_challenges
from ketch.registry.client.options import RegistryOptions
from ketch.registry.client.transport import (
    Body,
    NetworkError,
    Response,
    Transport,
    method_word,
    resendable,
)

MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Endpoint:
    """Where a registry answers: scheme and host, whether TLS is verified, whether a mirror."""

    scheme: str
    netloc: str
    verify: bool = True
    mirror: bool = False

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"


class Session:
    """Requests to one endpoint, authorized for the scopes each one names."""

    def __init__(self, transport: Transport, options: RegistryOptions, endpoint: Endpoint,
                 authorizer: Authorizer) -> None:
        self.transport = transport
        self.options = options
        self.endpoint = endpoint
        self.auth = authorizer

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith("/"):
            return self.endpoint.url + path_or_url
        return urllib.parse.urljoin(self.endpoint.url + "/", path_or_url)

    def _verify(self, url: str) -> bool:
        netloc = urllib.parse.urlsplit(url).netloc
        if netloc == self.endpoint.netloc:
            return self.endpoint.verify
        return not self.options.is_insecure(netloc)

    def request(self, method: str, path_or_url: str, scopes: Sequence[str],
                headers: Mapping[str, str] | None = None, body: Body | None = None,
                follow: bool = False) -> Response:
        """Send, authorized; retry once after an instructive 401; follow redirects if asked.

        The response may still be an error status: callers decide what a 404
        means. A 401 that cannot be answered (no credentials for a Basic
        challenge) raises Unauthorized in Docker's words.
        """
        url = self.url(path_or_url)
        for redirects in range(MAX_REDIRECTS + 1):
            same_host = urllib.parse.urlsplit(url).netloc == self.endpoint.netloc
            resp = self._authorized(method, url, scopes, headers, body, same_host)
            if not follow or resp.status not in REDIRECTS:
                return resp
            location = resp.header("Location")
            resp.discard()
            if not location:
                raise NetworkError(f"{method_word(method)} \"{url}\": "
                                   f"{resp.status} response missing Location header")
            if redirects == MAX_REDIRECTS:
                raise NetworkError(f"{method_word(method)} \"{location}\": stopped after "
                                   f"{MAX_REDIRECTS} redirects")
            url = urllib.parse.urljoin(url, location)
        raise AssertionError("unreachable")

    def _authorized(self, method: str, url: str, scopes: Sequence[str],
                    headers: Mapping[str, str] | None, body: Body | None,
                    same_host: bool) -> Response:
        context = f"{method_word(method)} \"{url}\""
        for attempt in range(2):
            hdrs = dict(headers or {})
            if same_host:
                hdrs.update(self.auth.headers(scopes, context))
            resp = self.transport.request(method, url, hdrs, body, verify=self._verify(url))
            if resp.status != 401 or not same_host:
                return resp
            challenges = parse_challenges(resp.header_all("WWW-Authenticate"))
            if attempt == 0 and resendable(body) and self.auth.unauthorized(challenges, scopes):
                resp.discard()
                continue
            if ("Authorization" not in hdrs and any(c.scheme == "basic" for c in challenges)
                    and not any(c.scheme == "bearer" for c in challenges)):
                resp.discard()
                # distribution's basic handler: a Basic challenge and nothing to answer it with.
                raise Unauthorized(f"{context}: no basic auth credentials")
            return resp
        raise AssertionError("unreachable")
