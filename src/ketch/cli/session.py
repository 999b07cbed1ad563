"""What every command shares: the daemon connection, filters, errors.

``connect()`` gives a negotiated Client. When the host is the default one
(no ``--host``, ``KETCH_HOST`` or ``DOCKER_HOST``), nothing answers there and
the user is root, it starts ketchd first (``ketch.cli.autostart``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from ketch.errors import InvalidArgument, KetchError, Unavailable

TYPE_CHECKING = False     # typing costs the CLI start-up (ketch.record says why)
if TYPE_CHECKING:
    from ketch.client import Client


class Session:
    """The global options of one ``ketch`` invocation."""

    def __init__(self, host: str | None = None, debug: bool = False,
                 config_dir: str | None = None) -> None:
        self.host_flag = host
        self.debug = debug
        self.config_dir = config_dir    # --config: where config.json is (ketch.cli.credentials)
        self._client: Client | None = None

    def connect(self) -> Client:
        if self._client is None:
            self._client = _connect(self.host_flag)
        return self._client


def _connect(flag: str | None) -> Client:
    from ketch.client import Client, resolve_host

    explicit = flag or os.environ.get("KETCH_HOST") or os.environ.get("DOCKER_HOST")
    if explicit:
        client = Client(resolve_host(explicit))
        client.negotiate()
        return client
    from ketch.cli.autostart import Place, start

    place = Place.from_env()
    client = Client(place.host)
    try:
        client.negotiate()
        return client
    except Unavailable:
        if os.geteuid() != 0:
            raise

    def ping() -> bool:
        try:
            client.ping()
            return True
        except Unavailable:
            return False

    pid = start(place, ping)
    if pid is not None:
        sys.stderr.write(f"Started ketchd (pid {pid}); its log is {place.log}\n")
    client.negotiate()
    return client


def parse_filters(words: Iterable[str]) -> dict[str, list[str]]:
    """``--filter key=value`` (repeatable) -> {"key": ["value", ...]}, as docker's opts.FilterOpt."""
    out: dict[str, list[str]] = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {w}")
        out.setdefault(key.strip().lower(), []).append(value.strip())
    return out


def error_text(exc: KetchError) -> str:
    """How docker prints a failure: daemon answers are prefixed, local ones are not."""
    from ketch.client import StreamError

    if isinstance(exc, (Unavailable, StreamError)) or getattr(exc, "local", False):
        return str(exc)
    return f"Error response from daemon: {exc}"


def local(exc: KetchError) -> KetchError:
    """Marks an error found by the CLI itself (a bad flag value), printed without the
    "Error response from daemon" prefix."""
    exc.local = True  # type: ignore[attr-defined]
    return exc
