"""``POST /build``, mixed into ``Client``.

The context goes out as a tar stream with chunked transfer encoding (the
caller hands a file object that produces the tar as it is read: nothing is
held in memory); the options go in the query, as the docker CLI sends them;
credentials for the registries of the base images in the
``X-Registry-Config`` header. The answer is a JSON message stream: the legacy
builder's ``stream``/``aux`` messages, or, with ``ketch_progress``, ketch's
typed progress events under ``"ketch"``.
"""

from __future__ import annotations

from ketch.client._transport import Request
from ketch.errors import System

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from typing import Any, BinaryIO

    from ketch.client._transport import StreamResponse, Transport


class BuildFailed(System):
    """The daemon ended the build stream with an error; ``code`` is a failing RUN's exit
    status (0 when the failure was not a command's)."""

    # Printed as it is, like docker prints an error inside a stream (no "Error response
    # from daemon:"); ketch.cli.session.error_text reads this flag.
    local = True

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def _json_list(values: Iterable[str]) -> str:
    import json

    return json.dumps(list(values), separators=(",", ":"))


def build_query(*, dockerfile: str = "", tags: Iterable[str] = (),
                build_args: Mapping[str, str | None] | None = None, target: str = "",
                no_cache: bool = False, no_cache_filter: Iterable[str] = (),
                cache_from: Iterable[str] = (), pull: bool = False,
                labels: Mapping[str, str] | None = None, network_mode: str = "",
                extra_hosts: Iterable[str] = (), platform: str = "", memory: int = 0,
                memory_swap: int = 0, cpu_shares: int = 0, cpu_period: int = 0,
                cpu_quota: int = 0, cpuset_cpus: str = "", cpuset_mems: str = "",
                shm_size: int = 0, ulimits: Iterable[Mapping[str, Any]] = (),
                remove: bool = True, force_remove: bool = False, quiet: bool = False,
                ketch_progress: bool = False, secrets: Iterable[str] = (),
                contexts: Iterable[str] = (), source_date_epoch: int | None = None,
                context_dir: str = "", context_id: str = ""
                ) -> list[tuple[str, str]]:
    """The query pairs of ``POST /build`` (moby's names; ``ketch*`` are ketch's own). Only
    what differs from the daemon's defaults is sent."""
    import json

    pairs: list[tuple[str, str]] = []
    if dockerfile:
        pairs.append(("dockerfile", dockerfile))
    pairs += [("t", t) for t in tags]
    if build_args:
        pairs.append(("buildargs", json.dumps(dict(build_args), separators=(",", ":"))))
    if target:
        pairs.append(("target", target))
    if no_cache:
        pairs.append(("nocache", "1"))
    nc_filter = list(no_cache_filter)
    if nc_filter:
        pairs.append(("ketchnocachefilter", _json_list(nc_filter)))
    cf = list(cache_from)
    if cf:
        pairs.append(("cachefrom", _json_list(cf)))
    if pull:
        pairs.append(("pull", "1"))
    if labels:
        pairs.append(("labels", json.dumps(dict(labels), separators=(",", ":"))))
    if network_mode:
        pairs.append(("networkmode", network_mode))
    pairs += [("extrahosts", h) for h in extra_hosts]
    if platform:
        pairs.append(("platform", platform))
    for key, value in (("memory", memory), ("memswap", memory_swap),
                       ("cpushares", cpu_shares), ("cpuperiod", cpu_period),
                       ("cpuquota", cpu_quota), ("shmsize", shm_size)):
        if value:
            pairs.append((key, str(value)))
    if cpuset_cpus:
        pairs.append(("cpusetcpus", cpuset_cpus))
    if cpuset_mems:
        pairs.append(("cpusetmems", cpuset_mems))
    ul = [dict(u) for u in ulimits]
    if ul:
        pairs.append(("ulimits", json.dumps(ul, separators=(",", ":"))))
    if not remove:
        pairs.append(("rm", "0"))       # the daemon removes them unless told not to
    if force_remove:
        pairs.append(("forcerm", "1"))
    if quiet:
        pairs.append(("q", "1"))
    if ketch_progress:
        pairs.append(("ketchprogress", "1"))
    sec, ctx = list(secrets), list(contexts)
    if sec:
        pairs.append(("ketchsecrets", _json_list(sec)))
    if ctx:
        pairs.append(("ketchcontexts", _json_list(ctx)))
    if source_date_epoch is not None:
        pairs.append(("sourcedateepoch", str(source_date_epoch)))
    if context_dir:
        pairs += [("ketchcontextdir", context_dir), ("ketchcontextid", context_id)]
    return pairs


def registry_config_header(auths: Mapping[str, Mapping[str, Any]]) -> str:
    """X-Registry-Config: base64url of the JSON map registry -> AuthConfig, as docker sends
    it (``e30=`` for none)."""
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps({k: dict(v) for k, v in auths.items()},
                                               separators=(",", ":")).encode()).decode()


class BuildMixin:
    """Needs the Client's ``transport`` and ``_versioned``."""

    if TYPE_CHECKING:
        transport: Transport

        def _versioned(self, path: str) -> str: ...

    def image_build(self, context: BinaryIO | bytes, query: list[tuple[str, str]], *,
                    registry_config: Mapping[str, Mapping[str, Any]] | None = None
                    ) -> Iterator[dict[str, Any]]:
        """``POST /build`` with ``query`` (``build_query``'s pairs) and the context tar.

        The request is sent, and a refusal (a non-2xx answer) raised, before this returns;
        the messages are then read as they come. A build that fails after its stream began
        raises ``BuildFailed`` when that message is reached."""
        from ketch.client._errors import from_status
        from ketch.client._http import form_encode

        headers = {"User-Agent": "ketch-cli", "Content-Type": "application/x-tar",
                   "X-Registry-Config": registry_config_header(registry_config or {})}
        path = "/build" + ("?" + form_encode(query) if query else "")
        resp = self.transport.open(Request("POST", self._versioned(path), headers, context))
        if not 200 <= resp.status < 300:
            try:
                raw = resp.read()
            finally:
                resp.close()
            raise from_status(resp.status, raw)
        return _build_messages(resp)


def _build_messages(resp: StreamResponse) -> Iterator[dict[str, Any]]:
    from ketch.client._client import stream_lines

    try:
        for line in stream_lines(resp):
            yield from _message(line)
    finally:
        resp.close()


def _message(line: bytes) -> Iterator[dict[str, Any]]:
    from ketch.client._client import parse_message

    msg = parse_message(line)
    if msg is None:
        return
    if msg.get("error") or msg.get("errorDetail"):
        detail = msg.get("errorDetail") or {}
        code = detail.get("code") if isinstance(detail, dict) else 0
        text = str((detail.get("message") if isinstance(detail, dict) else "")
                   or msg.get("error") or "")
        raise BuildFailed(text, code if isinstance(code, int) else 0)
    yield msg


__all__ = ["BuildFailed", "BuildMixin", "build_query", "registry_config_header"]
