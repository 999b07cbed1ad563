"""Image references: Docker's grammar, its normalisation and its messages.

What a user types and what the store keys on are different strings:

    ref = normalize("busybox")          # docker.io/library/busybox:latest
    ref.familiar()                      # "busybox:latest", as docker prints it
    ref.with_digest("sha256:" + hex)    # docker.io/library/busybox:latest@sha256:...
    parse("localhost:5000/app@sha256:...")   # exactly as written, no defaults

The grammar is the one of distribution/reference (the library Docker, containerd
and the registries share), so that every name Docker accepts is accepted here and
every name it refuses is refused with the same words::

    reference    := name [ ":" tag ] [ "@" digest ]
    name         := [ domain "/" ] path
    domain       := host [ ":" port ]
    host         := domain-name | IPv4 | "[" IPv6 "]"
    path         := component ( "/" component )*
    component    := [a-z0-9]+ ( separator [a-z0-9]+ )*
    separator    := "." | "_" | "__" | "-"+
    tag          := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest       := algorithm ":" hex{32,}

``parse`` checks the grammar only; ``normalize`` is what Docker does with user
input: it adds ``docker.io``, ``library/`` and ``:latest`` where they are implied.
The regular expressions are compiled on first use, because the CLI imports this
module on paths that never parse a reference.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ketch.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

# Hex length of each digest algorithm ketch can verify (OCI's registered ones).
DIGEST_HEX_LENGTHS: dict[str, int] = {"sha256": 64, "sha512": 128}

ERR_FORMAT = "invalid reference format"
ERR_TAG = "invalid tag format"
ERR_DIGEST = "invalid digest format"
ERR_UPPERCASE = "repository name must be lowercase"
ERR_EMPTY = "repository name must have at least one component"
ERR_TOO_LONG = f"repository name must not be more than {NAME_MAX} characters"
# go-digest's words, which Docker passes through unchanged.
ERR_CHECKSUM_FORMAT = "invalid checksum digest format"
ERR_CHECKSUM_LENGTH = "invalid checksum digest length"
ERR_UNSUPPORTED = "unsupported digest algorithm"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH}"


@functools.cache
def _regex(kind: str) -> re.Pattern[str]:
    """Compile one pattern on first use (kept out of import time)."""
    patterns = {
        "reference": rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?",
        "tag": _TAG,
        "digest": _DIGEST,
        "identifier": r"[a-f0-9]{64}",
        "algorithm": r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*",
    }
    return re.compile(patterns[kind])


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image reference. ``domain`` is "" when the input named none."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name, ``domain/path``: what a registry is asked for."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def familiar_name(self) -> str:
        """The name as Docker shows it: no ``docker.io/``, no ``library/``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
            path = path[len(OFFICIAL_PREFIX):]
        return path

    def familiar(self) -> str:
        """The whole reference as ``docker images`` and ``docker ps`` print it."""
        return self.familiar_name + self._suffix()

    def _suffix(self) -> str:
        out = ""
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        """The same name (and digest, if any) with ``tag``."""
        if not _regex("tag").fullmatch(tag):
            raise InvalidArgument(ERR_TAG)
        return Reference(self.domain, self.path, tag, self.digest)

    def with_digest(self, digest: str) -> Reference:
        """The same name (and tag, if any) pinned to ``digest``."""
        if not _regex("digest").fullmatch(digest):
            raise InvalidArgument(ERR_DIGEST)
        parse_digest(digest)
        return Reference(self.domain, self.path, self.tag, digest)

    def without_tag_or_digest(self) -> Reference:
        """Only the name: the key under which a repository's tags are listed."""
        return Reference(self.domain, self.path)


def parse(s: str) -> Reference:
    """Check ``s`` against the grammar and split it, adding nothing.

    ``parse("busybox")`` has no domain and no tag; use ``normalize`` for user
    input. The first component is the domain by Docker's rule (``_is_domain``),
    so ``parse(str(normalize(x)))`` gives back ``normalize(x)``. Errors are
    distribution/reference's ("invalid reference format").
    """
    if s == "":
        raise InvalidArgument(ERR_EMPTY)
    m = _regex("reference").fullmatch(s)
    if m is None:
        lower = s.lower()
        if lower != s and _regex("reference").fullmatch(lower):
            raise InvalidArgument(ERR_UPPERCASE)
        raise InvalidArgument(ERR_FORMAT)
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    first, sep, rest = name.partition("/")
    if sep and _is_domain(first):
        domain, path = first, rest
    else:
        domain, path = "", name
    if len(path) > NAME_MAX:
        raise InvalidArgument(ERR_TOO_LONG)
    if digest is not None:
        parse_digest(digest)
    return Reference(domain, path, tag, digest)


def _is_domain(component: str) -> bool:
    """Docker's rule for "is this first component a registry host?".

    Grammar alone cannot tell (``library/busybox`` matches both ways), so
    Docker decides by looks: a dot, a port or IPv6 colon, ``localhost``, or
    uppercase letters, which a repository path never has.
    """
    return (component == "localhost" or "." in component or ":" in component
            or component.lower() != component)


def _split_docker_domain(s: str) -> tuple[str, str]:
    """Split user input into (domain, rest), filling in Docker Hub's defaults.

    A first component is a domain when it contains "." or ":", is "localhost",
    or has uppercase letters (which a path never may); otherwise the input is a
    Docker Hub name, and a one-component Hub name lives under ``library/``.
    """
    first, sep, rest = s.partition("/")
    if not sep:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + s
    if first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif _is_domain(first):
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, s
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def normalize(s: str) -> Reference:
    """Turn what a user typed into the fully qualified reference Docker uses.

    ``busybox`` -> ``docker.io/library/busybox:latest``; ``:latest`` is only
    added when neither a tag nor a digest was given; ``name:tag@digest`` keeps
    both (pulling by digest, remembering the tag).
    """
    if _regex("identifier").fullmatch(s):
        raise InvalidArgument(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(s)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidArgument(f"{ERR_FORMAT}: repository name ({remote}) must be lowercase")
    ref = parse(f"{domain}/{remainder}")
    if ref.tag is None and ref.digest is None:
        ref = Reference(ref.domain, ref.path, DEFAULT_TAG)
    return ref


def is_full_id(s: str) -> bool:
    """True for a complete image or layer ID: 64 lowercase hex, bare or ``sha256:``.

    Such strings name content, never a repository, so lookups try them as IDs
    first (and ``normalize`` refuses them as names, like Docker).
    """
    if s.startswith("sha256:"):
        s = s[len("sha256:"):]
    return _regex("identifier").fullmatch(s) is not None


def parse_digest(s: str) -> tuple[str, str]:
    """Split and validate ``algorithm:hex``; only algorithms ketch can verify pass.

    The words are go-digest's, which Docker shows unchanged: a malformed string
    is "invalid checksum digest format", a known algorithm with the wrong number
    of hex digits "invalid checksum digest length", an algorithm ketch cannot
    hash "unsupported digest algorithm".
    """
    algorithm, sep, hexpart = s.partition(":")
    if not sep or not algorithm or not hexpart:
        raise InvalidArgument(ERR_CHECKSUM_FORMAT)
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        if _regex("algorithm").fullmatch(algorithm) and re.fullmatch(r"[a-zA-Z0-9=_-]+", hexpart):
            raise InvalidArgument(ERR_UNSUPPORTED)
        raise InvalidArgument(ERR_CHECKSUM_FORMAT)
    if len(hexpart) != length:
        raise InvalidArgument(ERR_CHECKSUM_LENGTH)
    if not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise InvalidArgument(ERR_CHECKSUM_FORMAT)
    return algorithm, hexpart
