"""What the daemon is configured with, and what a client sends: options and credentials.

``RegistryOptions`` mirrors dockerd's flags (``--insecure-registry``,
``--registry-mirror``) and its certs.d layout; ``Credentials`` is Docker's
AuthConfig, the JSON that the ``X-Registry-Auth`` header carries.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ketch import __version__
from ketch.errors import InvalidArgument

# dockerd always treats loopback as insecure (registry/config.go adds
# 127.0.0.0/8 to the insecure CIDRs); ::1 is its IPv6 twin.
_ALWAYS_INSECURE = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class RegistryOptions:
    """Daemon-wide registry settings (dockerd's registry flags)."""

    insecure_registries: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    certs_dirs: tuple[str, ...] = ("/etc/ketch/certs.d", "/etc/docker/certs.d")
    user_agent: str = f"ketch/{__version__}"
    timeout: float = 30.0
    # ketch's own (containerd's hosts.toml ``server``): registry host -> the URL it is
    # reached at instead, e.g. ("docker.io", "http://127.0.0.1:5000") keeps Docker Hub
    # names on a local registry, never on the internet. Mirrors are still tried first.
    endpoints: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for host, url in self.endpoints:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or not host:
                raise InvalidArgument(f"invalid registry endpoint {host}={url}: want "
                                      "HOST=http(s)://HOST[:PORT]")
        for mirror in self.mirrors:
            if not mirror.startswith(("http://", "https://")):
                # dockerd's ValidateMirror words it this way.
                raise InvalidArgument(
                    f"invalid mirror: unsupported scheme {mirror.split('://')[0]!r} in {mirror!r}"
                    if "://" in mirror else f"invalid mirror: no scheme specified for {mirror!r}: "
                    "must use either 'https://' or 'http://'")
        for entry in self.insecure_registries:
            if "://" in entry:
                raise InvalidArgument(
                    f"insecure registry {entry} should not contain '://'")

    def is_insecure(self, netloc: str) -> bool:
        """dockerd's isSecureIndex, negated: may ``host[:port]`` skip TLS checks and use http?

        An exact ``host[:port]`` entry matches first; otherwise every address
        the host resolves to is checked against the CIDR entries (and
        loopback, which is always insecure).
        """
        return _is_insecure(netloc, self.insecure_registries)


@functools.lru_cache(maxsize=256)
def _is_insecure(netloc: str, entries: tuple[str, ...]) -> bool:
    networks = list(_ALWAYS_INSECURE)
    for entry in entries:
        if entry == netloc:
            return True
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host[:port] entry, matched exactly above
    host = split_host_port(netloc)[0]
    # Names are looked up only when a CIDR entry of the user's could match them: the
    # loopback ones are decided by the hosts file, so that deciding how to reach a
    # registry never sends a DNS query of its own.
    for address in _addresses(host, dns=len(networks) > len(_ALWAYS_INSECURE)):
        if any(address.version == n.version and address in n for n in networks):
            return True
    return False


def _addresses(host: str, dns: bool = True
               ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The host's addresses; a name that does not resolve has none (it is then secure)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if host == "localhost":
        return [ipaddress.ip_address("127.0.0.1")]
    if not dns:
        return _hosts_file_addresses(host)
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    out = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    return out


def _hosts_file_addresses(host: str, path: str = "/etc/hosts"
                          ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) > 1 and host.lower() in (n.lower() for n in fields[1:]):
                    try:
                        out.append(ipaddress.ip_address(fields[0].split("%")[0]))
                    except ValueError:
                        continue
    except OSError:
        pass
    return out


def split_host_port(netloc: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port`` or ``host`` -> (host, port); brackets dropped."""
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = netloc.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return netloc, None


@dataclass(frozen=True)
class Credentials:
    """Docker's AuthConfig: what ``docker login`` stored and X-Registry-Auth carries.

    ``auth`` is base64("user:password") as config.json keeps it;
    ``identity_token`` is an OAuth refresh token a previous login returned;
    ``registry_token`` a bearer token to send as is.
    """

    username: str = ""
    password: str = ""
    auth: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server_address: str = ""

    @classmethod
    def from_header(cls, value: str) -> Credentials:
        """Decode X-Registry-Auth: base64url of the AuthConfig JSON.

        Clients differ: docker CLI sends unpadded or padded base64url,
        older docker-py standard base64; all are accepted, as moby does. An
        empty header means no credentials. Keys match case-insensitively,
        as Go's JSON decoder matches struct fields.
        """
        value = value.strip()
        if not value:
            return cls()
        try:
            raw = base64.urlsafe_b64decode(
                value.replace("+", "-").replace("/", "_").rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
            doc = json.loads(raw)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument(f"invalid X-Registry-Auth header: {exc}") from None
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise InvalidArgument("invalid X-Registry-Auth header: expected a JSON object")
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Credentials:
        folded = {str(k).lower(): v for k, v in doc.items()}

        def text(key: str) -> str:
            v = folded.get(key)
            return v if isinstance(v, str) else ""

        return cls(username=text("username"), password=text("password"), auth=text("auth"),
                   identity_token=text("identitytoken"), registry_token=text("registrytoken"),
                   server_address=text("serveraddress"))

    def basic(self) -> tuple[str, str] | None:
        """(username, password) if the credentials have them, from ``auth`` if need be."""
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                decoded = base64.b64decode(self.auth + "=" * (-len(self.auth) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            if sep:
                return user, password
        return None

    @property
    def empty(self) -> bool:
        return self.basic() is None and not self.identity_token and not self.registry_token
