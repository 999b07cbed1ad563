"""``POST /build``: the legacy builder's API, as the docker CLI (``DOCKER_BUILDKIT=0``),
docker-py and compose use it, plus the few parameters ketch's own CLI adds
(``ketchprogress``, ``ketchsecrets``, ``ketchcontexts``, ``ketchnocachefilter``,
``sourcedateepoch``).

The request is read as dockerd reads it (moby's build_routes.go): the query
first, refused with dockerd's words and statuses before a byte of the body
is read; then the body, a tar of the context, unpacked and hashed under the
daemon's tmp dir (``ketch.build.context``); then the build runs in a worker
thread and its progress events become the legacy JSON stream, message for
message what dockerd 20.10 writes (seen with curl against it): the step
line and its newline as two messages, ``" ---> "`` lines, the RUN's stderr
in red, the image ID as an ``aux`` message at the end of each stage (API
1.30+), then "Successfully built" and one "Successfully tagged" per tag.
``q=1`` holds all of that back and sends only the image ID, or, when the
build fails, everything held back and then the error, as dockerd does.

An error before anything was written is an ordinary error response; after
that it ends the stream as an ``errorDetail`` message (with the exit code of
a failing RUN). A client that hangs up cancels the build. The context is
removed when the build thread is done with it, whatever happened.

BuildKit's API (``version=2``, ``/session``, ``/grpc``) is refused with a
message saying what to do instead: ketchd has only this builder.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

from ketch.api import versions
from ketch.api.routers import add
from ketch.api.routers.images import bool_value
from ketch.errors import InvalidArgument, KetchError, NotSupported, System

if TYPE_CHECKING:
    from ketch.api.routers.system import ObjectStore
    from ketch.build.context import BuildContext
    from ketch.build.request import BuildOptions, Emit, Event

log = logging.getLogger(__name__)
T = TypeVar("T")

BUILDKIT_UNSUPPORTED = ("BuildKit API not supported: ketchd has only the legacy builder; "
                        "use DOCKER_BUILDKIT=0 (or build with ketch build)")

# How often a build that writes nothing checks whether its client is still there
# (aiohttp does not cancel a handler when the client leaves).
GONE_CHECK_SECONDS = 0.5
_BODY_CHUNK = 1 << 20
SESSION_HOLD_SECONDS = 10.0     # see ``session`` in ``setup``
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


class BuildBackend(Protocol):
    """``ketch.engine.builder.BuildService``, as far as this router needs it."""

    def build(self, opts: BuildOptions, context: BuildContext, emit: Emit,
              cancel: threading.Event) -> str: ...

    def cache_store(self) -> ObjectStore: ...

    def tmp_dir(self) -> str: ...


BUILDER: web.AppKey[BuildBackend] = web.AppKey("builder")


# --- Go's JSON words ----------------------------------------------------------------------
#
# dockerd decodes the JSON parameters with encoding/json and returns its error text;
# clients show it, so the same mistakes read the same here.


def _go_char(c: str) -> str:
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    quoted = c if c.isprintable() else json.dumps(c)[1:-1]
    return f"'{quoted}'"


def _container_at(doc: str, pos: int) -> str:
    """The innermost open bracket before ``pos`` ("{" or "["), strings skipped."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in doc[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def go_syntax_error(doc: str, exc: json.JSONDecodeError) -> str:
    pos = exc.pos
    if pos >= len(doc.rstrip()) or exc.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    c = _go_char(doc[pos])
    msg = exc.msg
    if msg == "Expecting value":
        return f"invalid character {c} looking for beginning of value"
    if msg.startswith("Expecting property name"):
        return f"invalid character {c} looking for beginning of object key string"
    if msg == "Expecting ':' delimiter":
        return f"invalid character {c} after object key"
    if msg == "Expecting ',' delimiter":
        if _container_at(doc, pos) == "{":
            return f"invalid character {c} after object key:value pair"
        return f"invalid character {c} after array element"
    if msg == "Extra data":
        return f"invalid character {c} after top-level value"
    if msg.startswith("Invalid control character"):
        return f"invalid character {c} in string literal"
    if msg.startswith("Invalid \\escape") or msg.startswith("Invalid \\u"):
        return f"invalid character {c} in string escape code"
    return f"invalid character {c}"


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"


class _GoJSONError(ValueError):
    pass


def _unmarshal(doc: str) -> Any:
    def no_constants(name: str) -> Any:
        # Go knows no NaN or Infinity; its error names the first letter.
        raise _GoJSONError(f"invalid character '{name[0]}' looking for beginning of value")

    try:
        return json.loads(doc, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise _GoJSONError(go_syntax_error(doc, exc)) from None


def _cannot(value: Any, go_type: str) -> _GoJSONError:
    return _GoJSONError(f"json: cannot unmarshal {_go_type(value)} into Go value of type "
                        f"{go_type}")


def _string_map(doc: str, go_type: str, nullable: bool) -> dict[str, str | None]:
    value = _unmarshal(doc)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _cannot(value, go_type)
    out: dict[str, str | None] = {}
    for k, v in value.items():
        if v is None:
            out[k] = None if nullable else ""
        elif isinstance(v, str):
            out[k] = v
        else:
            raise _cannot(v, "string")
    return out


def _string_list(doc: str) -> list[str]:
    value = _unmarshal(doc)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _cannot(value, "[]string")
    for item in value:
        if not isinstance(item, str):
            raise _cannot(item, "string")
    return list(value)


def _ulimits(doc: str) -> list[dict[str, Any]]:
    """``[]*units.Ulimit``: Name, Hard, Soft (Go matches field names case-insensitively)."""
    value = _unmarshal(doc)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _cannot(value, "[]*units.Ulimit")
    out: list[dict[str, Any]] = []
    for item in value:
        if item is None:
            continue
        if not isinstance(item, dict):
            raise _cannot(item, "units.Ulimit")
        limit: dict[str, Any] = {"Name": "", "Hard": 0, "Soft": 0}
        for key, v in item.items():
            name = {"name": "Name", "hard": "Hard", "soft": "Soft"}.get(key.lower())
            if name is None or v is None:
                continue
            if name == "Name" and not isinstance(v, str):
                raise _GoJSONError(f"json: cannot unmarshal {_go_type(v)} into Go struct "
                                   "field Ulimit.Name of type string")
            if name != "Name" and (not isinstance(v, int) or isinstance(v, bool)):
                raise _GoJSONError(f"json: cannot unmarshal {_go_type(v)} into Go struct "
                                   f"field Ulimit.{name} of type int64")
            limit[name] = v
        out.append(limit)
    return out


# --- the request ------------------------------------------------------------------------


@dataclass
class BuildRequest:
    """What the query and headers asked for, checked."""

    options: BuildOptions
    quiet: bool = False
    ketch_progress: bool = False
    want_aux: bool = True
    secrets: list[str] | None = None       # ketchsecrets: ids declared (None: not asked)
    contexts: list[str] | None = None      # ketchcontexts: names declared
    context_dir: str = ""                  # ketchcontextdir: the context read in place
    context_id: str = ""                   # ketchcontextid: "<st_dev>:<st_ino>" of it


def _int64_or_zero(query: Mapping[str, str], key: str) -> int:
    """moby's Int64ValueOrZero: anything unparsable is 0."""
    try:
        return int(query.get(key, "") or "0", 10)
    except ValueError:
        return 0


def _registry_config(value: str) -> dict[str, Any]:
    """X-Registry-Config: base64url JSON, registry -> AuthConfig. dockerd ignores a header
    it cannot decode (a build without credentials still works for public images)."""
    if not value:
        return {}
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        doc = json.loads(raw)
    except (ValueError, binascii.Error):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, dict)}


def parse_request(query: Any, headers: Mapping[str, str], version: str) -> BuildRequest:
    """The build's options, refused in dockerd's order and words (newImageBuildOptions,
    then postBuild's own checks)."""
    from ketch.build.request import BuildOptions, Resources

    q: Mapping[str, str] = query
    ge = versions.at_least
    forcerm = bool_value(q, "forcerm")
    if ge(version, "1.12") and (forcerm or q.get("rm", "") == ""):
        remove = True           # rm defaults to true since API 1.12; forcerm implies it
    else:
        remove = bool_value(q, "rm")
    shm_size = 0
    if q.get("shmsize", ""):
        try:
            shm_size = int(q["shmsize"], 10)
        except ValueError:
            raise System(f'strconv.ParseInt: parsing "{q["shmsize"]}": invalid syntax') from None
    isolation = q.get("isolation", "")
    if isolation and isolation.lower() != "default":
        raise InvalidArgument(f'Unsupported isolation: "{isolation}"')
    if query.getall("securityopt", []):
        raise InvalidArgument("The daemon on this platform does not support setting security "
                              "options on build")
    try:
        ulimits = _ulimits(q["ulimits"]) if q.get("ulimits", "") else []
    except _GoJSONError as exc:
        raise InvalidArgument(f"error reading ulimit settings: {exc}") from None
    try:
        build_args = _string_map(q["buildargs"], "map[string]*string", True) \
            if q.get("buildargs", "") else {}
    except _GoJSONError as exc:
        raise InvalidArgument(f"error reading build args: {exc}") from None
    try:
        labels = _string_map(q["labels"], "map[string]string", False) \
            if q.get("labels", "") else {}
    except _GoJSONError as exc:
        raise InvalidArgument(f"error reading labels: {exc}") from None
    try:
        cache_from = _string_list(q["cachefrom"]) if q.get("cachefrom", "") else []
    except _GoJSONError as exc:
        raise System(str(exc)) from None        # dockerd returns this one unwrapped: a 500
    builder_version = q.get("version", "")
    if builder_version not in ("", "1", "2"):
        raise System(f'invalid version "{builder_version}"')
    if bool_value(q, "squash"):
        raise InvalidArgument("squash is only supported with experimental mode")
    if builder_version == "2":
        raise InvalidArgument(BUILDKIT_UNSUPPORTED)
    if q.get("remote", ""):
        raise NotSupported("building from a remote context (a URL or a git repository) is not "
                           "supported by ketchd: send the context as a tar")
    if q.get("cgroupparent", ""):
        raise NotSupported("a cgroup parent for build containers is not supported by ketchd")
    try:
        secrets = _string_list(q["ketchsecrets"]) if q.get("ketchsecrets", "") else None
        contexts = _string_list(q["ketchcontexts"]) if q.get("ketchcontexts", "") else None
        no_cache_filter = _string_list(q["ketchnocachefilter"]) \
            if q.get("ketchnocachefilter", "") else []
    except _GoJSONError as exc:
        raise InvalidArgument(f"error reading ketch build parameters: {exc}") from None
    context_dir, context_id = q.get("ketchcontextdir", ""), q.get("ketchcontextid", "")
    if context_dir and not context_id:
        raise InvalidArgument("ketchcontextdir needs ketchcontextid")
    epoch: int | None = None
    if q.get("sourcedateepoch", ""):
        try:
            epoch = int(q["sourcedateepoch"], 10)
        except ValueError:
            raise InvalidArgument(f"invalid sourcedateepoch {q['sourcedateepoch']!r}: "
                                  "expected seconds since the epoch") from None
        if epoch < 0:
            raise InvalidArgument(f"invalid sourcedateepoch {epoch}: negative")
    options = BuildOptions(
        dockerfile=q.get("dockerfile", "") or "Dockerfile",
        tags=list(query.getall("t", [])),
        build_args=dict(build_args),
        target=q.get("target", ""),
        no_cache=bool_value(q, "nocache"),
        no_cache_filter=no_cache_filter,
        cache_from=cache_from,
        pull=bool_value(q, "pull") and ge(version, "1.16"),
        labels={k: v or "" for k, v in labels.items()},
        network_mode=q.get("networkmode", ""),
        extra_hosts=list(query.getall("extrahosts", [])),
        platform=q.get("platform", "") if ge(version, "1.32") else "",
        resources=Resources(
            memory=_int64_or_zero(q, "memory"),
            memory_swap=_int64_or_zero(q, "memswap"),
            cpu_shares=_int64_or_zero(q, "cpushares"),
            cpu_period=_int64_or_zero(q, "cpuperiod"),
            cpu_quota=_int64_or_zero(q, "cpuquota"),
            cpuset_cpus=q.get("cpusetcpus", ""),
            cpuset_mems=q.get("cpusetmems", ""),
            shm_size=shm_size,
            ulimits=ulimits,
        ),
        remove=remove,
        force_remove=forcerm,
        source_date_epoch=epoch,
        registry_auth=_registry_config(headers.get("X-Registry-Config", "")),
    )
    return BuildRequest(options, quiet=bool_value(q, "q"),
                        ketch_progress=bool_value(q, "ketchprogress"),
                        want_aux=ge(version, "1.30"), secrets=secrets, contexts=contexts,
                        context_dir=context_dir, context_id=context_id)


# --- the legacy JSON stream ---------------------------------------------------------------


def short_id(image: str) -> str:
    """stringid.TruncateID: the hex without its algorithm, 12 characters."""
    return image.partition(":")[2][:12] if ":" in image else image[:12]


def familiar_tag(tag: str) -> str:
    """A tag as "Successfully tagged" prints it: with ``:latest`` when it names none."""
    if "@" in tag or ":" in tag.rsplit("/", 1)[-1]:
        return tag
    return tag + ":latest"


RED, RESET = "\x1b[91m", "\x1b[0m"


class LegacyRenderer:
    """Progress events -> the messages dockerd's legacy builder writes (see the module
    docstring). Used from the build thread only.

    dockerd builds one step after the other; ketch's builder runs independent stages
    at the same time, so their events interleave. Each step is written as one block
    (its Step line, its output, its ``--->`` lines): the events of a step other than
    the one being written are held until that one is done (see ``event``).
    """

    def __init__(self, *, quiet: bool = False, want_aux: bool = True) -> None:
        self.quiet = quiet
        self.want_aux = want_aux
        self.held: list[dict[str, Any]] = []    # q=1: everything, for a failure
        self._stage: str | None = None
        self._image = ""                        # the latest image of the stage written
        self._aux_pending = False
        self._last_aux = ""
        self._current: int | None = None        # the step being written
        self._waiting: dict[int, list[Event]] = {}
        self._finished: set[int] = set()        # held steps whose StepDone came

    def _out(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.quiet:
            self.held.extend(messages)
            return []
        return messages

    def _aux(self, image: str) -> list[dict[str, Any]]:
        if not self.want_aux or not image or image == self._last_aux:
            return []
        self._last_aux = image
        return [{"aux": {"ID": image}}]

    def _stage_end(self) -> list[dict[str, Any]]:
        """The aux message dockerd writes when a stage's last command is done."""
        pending, self._aux_pending = self._aux_pending, False
        return self._aux(self._image) if pending else []

    def event(self, ev: Event) -> list[dict[str, Any]]:
        from ketch.build import request as rq

        out: list[dict[str, Any]] = []
        if isinstance(ev, rq.BuildWarning) and ev.rule:
            return []       # BuildKit's lint findings: the legacy builder has none
        if isinstance(ev, rq.BuildWarning | rq.BuildInfo | rq.BuildResult):
            out += self._drain()
            if isinstance(ev, rq.BuildWarning | rq.BuildInfo):
                out += self._stage_end()
                text = ev.text if ev.text.endswith("\n") else ev.text + "\n"
                out.append({"stream": text})
                return self._out(out)
            out += self.finished(ev.image, ev.tags)
            if self.quiet:
                self.held.extend(out)
                return [{"stream": ev.image + "\n"}]
            return out
        # Every event joins its step's queue; the step being written takes its events at
        # once. When it is done, the next one is chosen only when the next event comes:
        # the lowest step with events then (a stage's next step, usually, rather than
        # a step of another stage that started earlier and waits, like "FROM base").
        self._waiting.setdefault(ev.step, []).append(ev)
        if isinstance(ev, rq.StepDone):
            self._finished.add(ev.step)
        if self._current is None:
            self._current = min(self._waiting)
        for held in self._waiting.pop(self._current, []):
            out += self._render(held)
        if self._current in self._finished:
            self._finished.discard(self._current)
            self._current = None
        return self._out(out)

    def _drain(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for step in sorted(self._waiting):
            for ev in self._waiting.pop(step):
                out += self._render(ev)
        self._finished.clear()
        self._current = None
        return out

    def flush(self) -> list[dict[str, Any]]:
        """Whatever is held, in step order: before an error ends the stream, the output of
        the step that failed must be in it."""
        return self._out(self._drain())

    def _render(self, ev: Event) -> list[dict[str, Any]]:
        from ketch.build import request as rq

        out: list[dict[str, Any]] = []
        if isinstance(ev, rq.StepStarted):
            if self._stage is not None and ev.stage != self._stage:
                out += self._stage_end()
            self._stage = ev.stage
            out += [{"stream": f"Step {ev.step}/{ev.total} : {ev.text}"}, {"stream": "\n"}]
        elif isinstance(ev, rq.StepCached):
            out.append({"stream": " ---> Using cache\n"})
        elif isinstance(ev, rq.StepRunning):
            out.append({"stream": f" ---> Running in {short_id(ev.container)}\n"})
        elif isinstance(ev, rq.StepOutput):
            if ev.data:
                text = RED + ev.data + RESET if ev.stream == "stderr" else ev.data
                out.append({"stream": text})
        elif isinstance(ev, rq.StepDone):
            if ev.removed_container:
                out.append({"stream": "Removing intermediate container "
                                      f"{short_id(ev.removed_container)}\n"})
            if ev.image:
                self._image = ev.image
                self._aux_pending = True
                out.append({"stream": f" ---> {short_id(ev.image)}\n"})
        # StepMiss: the legacy stream says nothing about why the cache missed.
        return out

    def finished(self, image: str, tags: list[str]) -> list[dict[str, Any]]:
        """The end of a build: the final image's aux (the docker CLI's --iidfile takes the
        last one), then dockerd's two lines."""
        out = self._stage_end()
        out += self._aux(image)
        out.append({"stream": f"Successfully built {short_id(image)}\n"})
        out += [{"stream": f"Successfully tagged {familiar_tag(t)}\n"} for t in tags]
        return out


def error_message(exc: BaseException) -> dict[str, Any]:
    """streamformatter.FormatError: a failing RUN's exit code goes in errorDetail."""
    text = str(exc) if isinstance(exc, KetchError) else f"{type(exc).__name__}: {exc}"
    detail: dict[str, Any] = {}
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        detail["code"] = code
    detail["message"] = text
    return {"errorDetail": detail, "error": text}


def go_json(doc: dict[str, Any]) -> bytes:
    """One message as Go's encoding/json writes it: UTF-8 as is, ``<``, ``>`` and ``&``
    escaped (they only occur inside strings, so replacing them is safe), then the
    ``\\r\\n`` moby's streamformatter ends each message with."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return text.encode("utf-8", errors="replace") + b"\r\n"


# --- the body, read from a thread --------------------------------------------------------


class _Body(io.RawIOBase):
    """The request body as a blocking file for the extraction thread: each read asks
    the event loop for the next piece (big pieces: a BufferedReader sits on top)."""

    def __init__(self, request: web.Request, loop: asyncio.AbstractEventLoop) -> None:
        self._content = request.content
        self._loop = loop

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        future = asyncio.run_coroutine_threadsafe(self._content.read(len(view)), self._loop)
        data = future.result()
        view[:len(data)] = data
        return len(data)


def check_context_dir(request: web.Request, req: BuildRequest) -> None:
    """``ketchcontextdir``: ketch's CLI on this machine names its context directory
    instead of sending it (the body then holds only secrets and named contexts), so
    nothing is copied and only the files COPY reads are hashed. Only over the unix
    socket, whose clients can already bind-mount any host path into a container, and
    only when the directory is the client's own (same device and inode: a client in
    another mount namespace sees other files under that path)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, str):
        raise InvalidArgument("ketchcontextdir is accepted only over a unix socket")
    path = req.context_dir
    if not os.path.isabs(path):
        raise InvalidArgument(f"ketchcontextdir must be an absolute path: {path}")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidArgument(f"ketchcontextdir {path}: {exc.strerror}") from None
    if f"{st.st_dev}:{st.st_ino}" != req.context_id:
        raise InvalidArgument(f"ketchcontextdir {path} is not the client's directory "
                              "(another mount namespace?): send the context as a tar")


def _extract(request: web.Request, loop: asyncio.AbstractEventLoop, tmp_dir: str,
             req: BuildRequest) -> BuildContext:
    from ketch.build.context import extract_context

    os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
    dest = tempfile.mkdtemp(prefix="build-", dir=tmp_dir)
    reader = io.BufferedReader(_Body(request, loop), _BODY_CHUNK)
    try:
        return extract_context(reader, dest, secrets=req.secrets, contexts=req.contexts)
    except BaseException:
        # extract_context removed what it wrote; dest itself may remain (it failed early).
        with contextlib.suppress(OSError):
            os.rmdir(dest)
        raise


# --- the stream ---------------------------------------------------------------------------


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread of its own (see ``run_build`` for why not the executor)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="build-context", daemon=True).start()
    return await future


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def run_build(request: web.Request, builder: BuildBackend, req: BuildRequest,
                    ctx: BuildContext) -> web.StreamResponse:
    """Runs the build in a thread and streams its messages; owns ``ctx`` (removed when the
    thread is done with it)."""
    from ketch.build.request import BuildResult, event_json

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()
    renderer = LegacyRenderer(quiet=req.quiet, want_aux=req.want_aux)
    opts = req.options
    opts.secrets = dict(ctx.secrets)
    opts.contexts = dict(ctx.contexts)
    saw_result = False

    def put(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def emit(ev: Event) -> None:
        nonlocal saw_result
        if isinstance(ev, BuildResult):
            saw_result = True
        if req.ketch_progress:
            put("messages", [{"ketch": event_json(ev)}])
            return
        messages = renderer.event(ev)
        if messages:
            put("messages", messages)

    def work() -> None:
        try:
            image = builder.build(opts, ctx, emit, cancel)
            if not saw_result:
                # The builder's result event is optional: the stream ends as dockerd's.
                emit(BuildResult(image, list(opts.tags)))
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            held: list[dict[str, Any]] = []
            if not req.ketch_progress:
                held = renderer.flush()
                if req.quiet:
                    held = list(renderer.held)
            put("error", (exc, held))
        else:
            put("done", None)
        finally:
            try:
                ctx.remove()
            except OSError as exc:
                log.warning("removing build context %s: %s", ctx.base, exc)

    # A thread of its own, not the loop's default executor: a build holds its thread for
    # minutes, and waits on engine work that may itself need that executor.
    thread = threading.Thread(target=work, name="build", daemon=True)
    thread.start()
    response: web.StreamResponse | None = None

    async def write(data: bytes) -> None:
        nonlocal response
        if response is None:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
        if data:
            await response.write(data)

    try:
        while True:
            try:
                items = [await asyncio.wait_for(queue.get(), GONE_CHECK_SECONDS)]
            except TimeoutError:
                if _gone(request):
                    break
                continue
            while not queue.empty():
                items.append(queue.get_nowait())
            data = bytearray()
            final: tuple[str, Any] | None = None
            for kind, value in items:
                if kind == "messages":
                    data += b"".join(go_json(m) for m in value)
                else:
                    final = (kind, value)     # "done" and "error" come last
            if final is not None and final[0] == "error":
                exc, held = final[1]
                data += b"".join(go_json(m) for m in held)
                if response is None and not data:
                    raise exc                 # nothing written yet: a plain error response
                if not isinstance(exc, KetchError):
                    log.error("POST %s failed", request.path, exc_info=exc)
                data += go_json(error_message(exc))
            await write(bytes(data))
            if final is not None:
                assert response is not None
                await response.write_eof()
                return response
    except ConnectionError:
        pass                                  # the client left while we wrote
    finally:
        # Done, failed, or the client left: a build still running stops at its next
        # look at ``cancel``.
        if thread.is_alive():
            cancel.set()
    return response if response is not None else web.Response()


# --- routes ------------------------------------------------------------------------------


class _RefusedSessions:
    """BuildKit session ids whose /build was refused (see ``session`` in ``setup``)."""

    def __init__(self) -> None:
        self._done: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Event] = {}

    def add(self, sid: str) -> None:
        if not sid:
            return
        now = asyncio.get_running_loop().time()
        # The /session of a refused build may come after the refusal; a minute is plenty.
        self._done = {k: t for k, t in self._done.items() if now - t < 60}
        self._done[sid] = now
        event = self._waiting.get(sid)
        if event is not None:
            event.set()

    async def wait(self, sid: str, timeout: float) -> None:
        if sid in self._done:
            return
        event = self._waiting.setdefault(sid, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiting.pop(sid, None)



def setup(app: web.Application, builder: BuildBackend) -> None:
    """Adds ``/build`` and the BuildKit refusals; the build cache goes into the stores
    that ``/system/df`` and ``/build/prune`` report on."""
    from ketch.api.routers.system import stores

    app[BUILDER] = builder
    stores(app).build_cache = builder.cache_store()

    async def post_build(request: web.Request) -> web.StreamResponse:
        try:
            req = parse_request(request.query, request.headers,
                                versions.of(request.match_info))
        except KetchError:
            refused.add(request.query.get("session", ""))
            raise
        if req.context_dir:
            check_context_dir(request, req)
        loop = asyncio.get_running_loop()
        ctx = await in_thread(_extract, request, loop, builder.tmp_dir(), req)
        if req.context_dir:
            ctx.root, ctx.digests, ctx.in_place = req.context_dir, {}, True
        return await run_build(request, builder, req, ctx)

    async def buildkit(request: web.Request) -> web.StreamResponse:
        raise InvalidArgument(BUILDKIT_UNSUPPORTED)

    refused = _RefusedSessions()

    async def session(request: web.Request) -> web.StreamResponse:
        # A BuildKit client (the docker CLI 18.09-20.10 with DOCKER_BUILDKIT=1) opens
        # /session and sends /build?version=2&session=ID together, waits for both, and
        # prints the first failure. A refused /session reads only "unable to upgrade to
        # h2c, received 400", so the session is accepted (101) and held, unused, until
        # that client's /build has been refused with the message that says what to do;
        # then it is closed, and that message is what the user reads.
        sid = request.headers.get("X-Docker-Expose-Session-Uuid", "")
        if not sid or "Upgrade" not in request.headers:
            raise InvalidArgument(BUILDKIT_UNSUPPORTED)
        from ketch.api.streams import take_socket

        sock = take_socket(request)
        try:
            # The HTTP/2 preface and an empty SETTINGS frame, as a gRPC client opens: the
            # client's session server then takes the close as an ordinary hang-up.
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: h2c\r\n\r\n" + H2_PREFACE)
            await refused.wait(sid, SESSION_HOLD_SECONDS)
        except OSError:
            pass
        finally:
            sock.close()
        return web.Response()       # dropped: the connection is no longer aiohttp's

    add(app, "POST", "/build", post_build)
    add(app, "*", "/session", session)
    add(app, "*", "/grpc", buildkit)


__all__ = ["BUILDKIT_UNSUPPORTED", "BuildBackend", "BuildRequest", "LegacyRenderer",
           "error_message", "go_json", "parse_request", "run_build", "setup"]
