"""POST /build over a fake BuildService: dockerd's parameters, words and stream, message for message.

The expected streams are what dockerd 20.10's legacy builder wrote for the same steps
(captured with curl from a private dockerd), with ketch's image and container IDs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.unit.test_api_images import FakeImages
from tests.unit.test_api_versions import Backend as SystemBackend

from ketch.api import make_app
from ketch.api.routers.build import BUILDKIT_UNSUPPORTED, RED, RESET
from ketch.build import request as rq
from ketch.errors import InvalidArgument, KetchError, NotFound

IMG1 = "sha256:772b93ba6fc4ef3ec4429f7a84e73080bf55fcf735d97a4afa78dfb88673cfd7"
IMG2 = "sha256:8aa29a739d9c00000000000000000000000000000000000000000000000000aa"
IMG3 = "sha256:263d133debc992d8134cd56f0839c9eac93e3c96c71f82aeccecd76ccf24dbb6"
IMG4 = "sha256:bc73937a3bba0000000000000000000000000000000000000000000000000000"
CTR = "8555eabd7e12" + "0" * 52


class RunFailed(KetchError):
    def __init__(self, command: str, code: int) -> None:
        super().__init__(f"The command '{command}' returned a non-zero code: {code}")
        self.code = code


class FakeCache:
    def __init__(self) -> None:
        self.pruned: list[Any] = []

    def disk_usage(self) -> list[dict[str, Any]]:
        return [{"ID": "abc", "Type": "regular", "Size": 42, "InUse": False, "Shared": False}]

    def prune(self, filters: Any, options: Any) -> dict[str, Any]:
        self.pruned.append((dict(filters), options.all))
        return {"CachesDeleted": ["abc"], "SpaceReclaimed": 42}


Script = Callable[[rq.Emit, threading.Event], str]


class FakeBuilder:
    """BuildService's shape: the events come from ``script``."""

    def __init__(self, tmp: str, script: Script | None = None) -> None:
        self._tmp = tmp
        self.script = script or (lambda emit, cancel: IMG1)
        self.calls: list[tuple[rq.BuildOptions, dict[str, str], dict[str, bytes]]] = []
        self.cancelled = threading.Event()
        self.context_root = ""
        self.in_place: tuple[str, bool] = ("", False)
        self.cache = FakeCache()

    def tmp_dir(self) -> str:
        return self._tmp

    def cache_store(self) -> FakeCache:
        return self.cache

    def build(self, opts: rq.BuildOptions, context: Any, emit: rq.Emit,
              cancel: threading.Event) -> str:
        files = {}
        for rel in context.digests:
            with open(os.path.join(context.root, rel), "rb") as fh:
                files[rel] = fh.read()
        secrets = {k: Path(v).read_bytes() for k, v in context.secrets.items()}
        self.context_root = context.base
        self.in_place = (context.root, context.in_place)
        self.calls.append((opts, dict(context.digests), {**files, **{
            "secret:" + k: v for k, v in secrets.items()}}))
        try:
            return self.script(emit, cancel)
        finally:
            if cancel.is_set():
                self.cancelled.set()


def emptied(path: Any, seconds: float = 10) -> bool:
    """Whether ``path`` is (or becomes) empty: the build thread removes its context just
    after the answer has gone out."""
    deadline = time.monotonic() + seconds
    while os.listdir(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not os.listdir(path)


def context_tar(files: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (files or {"Dockerfile": b"FROM busybox\n"}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def call(builder: FakeBuilder | None, method: str, path: str, *, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """(status, decoded body, raw text): a stream decodes to a list of messages."""
    async def go() -> tuple[int, Any, str]:
        app = make_app(SystemBackend(), FakeImages(), builder=builder)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, data=body, headers=headers)
            text = (await resp.read()).decode()
            if text.endswith("\r\n"):
                return resp.status, [json.loads(x) for x in text.split("\r\n") if x], text
            return resp.status, json.loads(text) if text else None, text

    return asyncio.run(go())


def three_steps(emit: rq.Emit, cancel: threading.Event) -> str:
    emit(rq.StepStarted(1, 4, "base", "FROM busybox AS base"))
    emit(rq.StepDone(1, IMG1))
    emit(rq.StepStarted(2, 4, "base", "RUN echo hi && echo err >&2"))
    emit(rq.StepMiss(2, "no cached image for this step"))
    emit(rq.StepRunning(2, CTR))
    emit(rq.StepOutput(2, "err\n", "stderr"))
    emit(rq.StepOutput(2, "hi\n"))
    emit(rq.StepDone(2, IMG2, 0.2, removed_container=CTR))
    emit(rq.StepStarted(3, 4, "base", "COPY f /f"))
    emit(rq.StepCached(3))
    emit(rq.StepDone(3, IMG3))
    emit(rq.StepStarted(4, 4, "1", "LABEL a=b"))
    emit(rq.StepDone(4, IMG4))
    emit(rq.BuildWarning("[Warning] One or more build-args [Y Z] were not consumed"))
    emit(rq.BuildResult(IMG4, ["x:1", "y"]))
    return IMG4


LEGACY = [
    {"stream": "Step 1/4 : FROM busybox AS base"}, {"stream": "\n"},
    {"stream": " ---> 772b93ba6fc4\n"},
    {"stream": "Step 2/4 : RUN echo hi && echo err >&2"}, {"stream": "\n"},
    {"stream": " ---> Running in 8555eabd7e12\n"},
    {"stream": "\x1b[91merr\n\x1b[0m"},
    {"stream": "hi\n"},
    {"stream": "Removing intermediate container 8555eabd7e12\n"},
    {"stream": " ---> 8aa29a739d9c\n"},
    {"stream": "Step 3/4 : COPY f /f"}, {"stream": "\n"},
    {"stream": " ---> Using cache\n"},
    {"stream": " ---> 263d133debc9\n"},
    {"aux": {"ID": IMG3}},
    {"stream": "Step 4/4 : LABEL a=b"}, {"stream": "\n"},
    {"stream": " ---> bc73937a3bba\n"},
    {"aux": {"ID": IMG4}},
    {"stream": "[Warning] One or more build-args [Y Z] were not consumed\n"},
    {"stream": "Successfully built bc73937a3bba\n"},
    {"stream": "Successfully tagged x:1\n"},
    {"stream": "Successfully tagged y:latest\n"},
]


def test_the_legacy_stream_is_dockerds(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path), three_steps)
    status, messages, raw = call(b, "POST", "/v1.41/build?t=x:1&t=y", body=context_tar())
    assert status == 200
    assert messages == LEGACY
    # Go's encoder: no spaces, <>& escaped, each message ended by \r\n
    assert '{"stream":"Step 2/4 : RUN echo hi \\u0026\\u0026 echo err \\u003e\\u00262"}\r\n' in raw
    assert raw.count("\r\n") == len(LEGACY)


def test_interleaved_stages_are_written_step_by_step(tmp_path: Any) -> None:
    """ketch builds independent stages at once; the legacy stream keeps each step whole."""
    def script(emit: rq.Emit, cancel: threading.Event) -> str:
        emit(rq.StepStarted(1, 4, "a", "FROM busybox AS a"))
        emit(rq.StepStarted(3, 4, "b", "FROM busybox AS b"))
        emit(rq.StepDone(3, IMG1))
        emit(rq.StepStarted(4, 4, "b", "RUN echo b"))
        emit(rq.StepOutput(4, "b\n"))
        emit(rq.StepDone(1, IMG1))
        emit(rq.StepStarted(2, 4, "a", "RUN echo a"))
        emit(rq.StepOutput(2, "a\n"))
        emit(rq.StepDone(4, IMG2))
        emit(rq.StepDone(2, IMG3))
        emit(rq.BuildResult(IMG2, []))
        return IMG2

    _, messages, _ = call(FakeBuilder(str(tmp_path), script), "POST", "/build",
                          body=context_tar())
    streams = [m.get("stream") or m for m in messages]
    assert streams == [
        "Step 1/4 : FROM busybox AS a", "\n", " ---> 772b93ba6fc4\n",
        "Step 2/4 : RUN echo a", "\n", "a\n", " ---> 263d133debc9\n",
        {"aux": {"ID": IMG3}},
        "Step 3/4 : FROM busybox AS b", "\n", " ---> 772b93ba6fc4\n",
        "Step 4/4 : RUN echo b", "\n", "b\n", " ---> 8aa29a739d9c\n",
        {"aux": {"ID": IMG2}},      # the last is the image built
        "Successfully built 8aa29a739d9c\n"]


def test_a_failure_brings_the_held_output_first(tmp_path: Any) -> None:
    def script(emit: rq.Emit, cancel: threading.Event) -> str:
        emit(rq.StepStarted(1, 3, "b", "RUN sleep 1"))
        emit(rq.StepStarted(2, 3, "a", "RUN boom"))
        emit(rq.StepOutput(2, "boom: not found\n", "stderr"))
        raise RunFailed("/bin/sh -c boom", 127)

    _, messages, _ = call(FakeBuilder(str(tmp_path), script), "POST", "/build",
                          body=context_tar())
    assert messages[-3:] == [{"stream": "\n"}, {"stream": RED + "boom: not found\n" + RESET},
                             {"errorDetail": {"code": 127, "message": "The command '/bin/sh -c "
                              "boom' returned a non-zero code: 127"},
                              "error": "The command '/bin/sh -c boom' returned a non-zero code: "
                              "127"}]


def test_the_image_id_aux_needs_api_1_30(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path), three_steps)
    _, messages, _ = call(b, "POST", "/v1.29/build", body=context_tar())
    assert [m for m in messages if "aux" in m] == []


def test_a_builder_without_result_event_still_ends_like_dockerd(tmp_path: Any) -> None:
    def script(emit: rq.Emit, cancel: threading.Event) -> str:
        emit(rq.StepStarted(1, 1, "0", "FROM busybox"))
        emit(rq.StepDone(1, IMG1))
        return IMG1

    _, messages, _ = call(FakeBuilder(str(tmp_path), script), "POST", "/build?t=me/app",
                          body=context_tar())
    assert messages[-3:] == [{"aux": {"ID": IMG1}},
                             {"stream": "Successfully built 772b93ba6fc4\n"},
                             {"stream": "Successfully tagged me/app:latest\n"}]


def test_quiet_sends_only_the_id(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path), three_steps)
    status, messages, _ = call(b, "POST", "/build?q=1", body=context_tar())
    assert (status, messages) == (200, [{"stream": IMG4 + "\n"}])


def failing(emit: rq.Emit, cancel: threading.Event) -> str:
    emit(rq.StepStarted(1, 2, "0", "FROM busybox"))
    emit(rq.StepDone(1, IMG1))
    emit(rq.StepStarted(2, 2, "0", "RUN exit 3"))
    emit(rq.StepRunning(2, CTR))
    raise RunFailed("/bin/sh -c exit 3", 3)


RUN_ERROR = {"errorDetail": {"code": 3, "message": "The command '/bin/sh -c exit 3' returned "
                                                   "a non-zero code: 3"},
             "error": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"}


def test_a_failing_run_ends_the_stream_with_its_code(tmp_path: Any) -> None:
    status, messages, raw = call(FakeBuilder(str(tmp_path), failing), "POST", "/build",
                                 body=context_tar())
    assert status == 200
    assert messages[-2:] == [{"stream": " ---> Running in 8555eabd7e12\n"}, RUN_ERROR]
    assert raw.endswith('{"errorDetail":{"code":3,"message":"The command \'/bin/sh -c exit 3\''
                        ' returned a non-zero code: 3"},"error":"The command \'/bin/sh -c '
                        'exit 3\' returned a non-zero code: 3"}\r\n')


def test_quiet_failure_sends_what_was_held_back_then_the_error(tmp_path: Any) -> None:
    _, messages, _ = call(FakeBuilder(str(tmp_path), failing), "POST", "/build?q=1",
                          body=context_tar())
    assert messages[0] == {"stream": "Step 1/2 : FROM busybox"}
    assert messages[-1] == RUN_ERROR and len(messages) == 7


def test_an_error_before_any_output_is_an_error_response(tmp_path: Any) -> None:
    def script(emit: rq.Emit, cancel: threading.Event) -> str:
        raise NotFound("Cannot locate specified Dockerfile: Dockerfile")

    b = FakeBuilder(str(tmp_path), script)
    status, body, _ = call(b, "POST", "/build", body=context_tar({"x": b"1"}))
    assert (status, body) == (404, {"message": "Cannot locate specified Dockerfile: Dockerfile"})
    # the context is gone, and so is its directory
    assert emptied(tmp_path) and not os.path.exists(b.context_root)


def test_the_builder_sees_the_context_and_options(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path))
    auth = base64.urlsafe_b64encode(json.dumps(
        {"127.0.0.1:5000": {"username": "u", "password": "p"}}).encode()).decode()
    query = ("dockerfile=sub%2FDf&t=a&t=b:2&extrahosts=h:1.2.3.4&extrahosts=g:5.6.7.8"
             "&nocache=1&pull=1&rm=0&memory=1024&memswap=-1&cpushares=512&cpusetcpus=0-1"
             "&cpusetmems=0&cpuperiod=100000&cpuquota=50000&shmsize=65536"
             "&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D"
             "&labels=%7B%22l%22%3A%22v%22%7D&cachefrom=%5B%22img%3A1%22%5D"
             "&networkmode=host&platform=linux%2Famd64&target=final"
             "&ulimits=%5B%7B%22Name%22%3A%22nofile%22%2C%22Hard%22%3A20%2C%22Soft%22%3A10%7D%5D"
             "&sourcedateepoch=1700000000&ketchnocachefilter=%5B%22s1%22%5D")
    status, _, _ = call(b, "POST", "/v1.41/build?" + query,
                        body=context_tar({"sub/Df": b"FROM x\n", "f": b"data"}),
                        headers={"X-Registry-Config": auth})
    assert status == 200
    opts, digests, files = b.calls[0]
    assert files == {"sub/Df": b"FROM x\n", "f": b"data"}
    assert set(digests) == {"sub/Df", "f"}
    assert opts.dockerfile == "sub/Df" and opts.tags == ["a", "b:2"]
    assert opts.extra_hosts == ["h:1.2.3.4", "g:5.6.7.8"]
    assert (opts.no_cache, opts.pull, opts.remove, opts.force_remove) == (True, True, False, False)
    assert opts.build_args == {"A": "1", "B": None}
    assert opts.labels == {"l": "v"} and opts.cache_from == ["img:1"]
    assert (opts.network_mode, opts.platform, opts.target) == ("host", "linux/amd64", "final")
    r = opts.resources
    assert (r.memory, r.memory_swap, r.cpu_shares, r.cpuset_cpus, r.cpuset_mems) == \
        (1024, -1, 512, "0-1", "0")
    assert (r.cpu_period, r.cpu_quota, r.shm_size) == (100000, 50000, 65536)
    assert r.ulimits == [{"Name": "nofile", "Hard": 20, "Soft": 10}]
    assert opts.source_date_epoch == 1700000000 and opts.no_cache_filter == ["s1"]
    assert opts.registry_auth == {"127.0.0.1:5000": {"username": "u", "password": "p"}}
    assert emptied(tmp_path)      # removed after the build


def test_defaults_follow_the_api_version(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path))
    call(b, "POST", "/v1.41/build?forcerm=1&rm=0", body=context_tar())
    call(b, "POST", "/v1.41/build", body=context_tar())
    call(b, "POST", "/v1.31/build?platform=linux/arm64&pull=1", body=context_tar())
    forced, default, old = (c[0] for c in b.calls)
    assert (forced.remove, forced.force_remove) == (True, True)
    assert (default.remove, default.force_remove, default.dockerfile) == \
        (True, False, "Dockerfile")
    assert old.platform == "" and old.pull is True


@pytest.mark.parametrize(("query", "status", "message"), [
    ("buildargs=x", 400,
     "error reading build args: invalid character 'x' looking for beginning of value"),
    ("buildargs=%5B1%5D", 400,
     "error reading build args: json: cannot unmarshal array into Go value of type "
     "map[string]*string"),
    ("buildargs=%7B%22a%22%3A1%7D", 400,
     "error reading build args: json: cannot unmarshal number into Go value of type string"),
    ("buildargs=%7B%22a%22", 400, "error reading build args: unexpected end of JSON input"),
    ("labels=x", 400, "error reading labels: invalid character 'x' looking for beginning of "
                      "value"),
    ("ulimits=x", 400, "error reading ulimit settings: invalid character 'x' looking for "
                       "beginning of value"),
    ("cachefrom=x", 500, "invalid character 'x' looking for beginning of value"),
    ("version=3", 500, 'invalid version "3"'),
    ("squash=1", 400, "squash is only supported with experimental mode"),
    ("shmsize=abc", 500, 'strconv.ParseInt: parsing "abc": invalid syntax'),
    ("isolation=foo", 400, 'Unsupported isolation: "foo"'),
    ("version=2", 400, BUILDKIT_UNSUPPORTED),
])
def test_bad_parameters_are_refused_with_dockerds_words(tmp_path: Any, query: str, status: int,
                                                        message: str) -> None:
    b = FakeBuilder(str(tmp_path))
    got = call(b, "POST", "/v1.41/build?" + query, body=context_tar())
    assert got[:2] == (status, {"message": message})
    assert b.calls == [] and os.listdir(tmp_path) == []


def test_a_remote_context_is_not_supported(tmp_path: Any) -> None:
    status, body, _ = call(FakeBuilder(str(tmp_path)), "POST",
                           "/build?remote=https://example.com/x.git", body=b"")
    assert status == 501 and "remote context" in body["message"]


def test_a_body_that_is_not_a_tar_is_refused(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path))
    status, body, _ = call(b, "POST", "/build", body=b"FROM busybox\n" * 200)
    assert status == 400 and body["message"].startswith("invalid build context")
    assert b.calls == [] and os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", ["/session", "/v1.41/session", "/grpc", "/v1.41/grpc"])
def test_buildkit_endpoints_say_what_to_do(tmp_path: Any, path: str) -> None:
    for method in ("POST", "GET"):
        status, body, _ = call(FakeBuilder(str(tmp_path)), method, path,
                               headers={"Upgrade": "h2c", "Connection": "Upgrade"})
        assert (status, body) == (400, {"message": BUILDKIT_UNSUPPORTED})


def test_a_buildkit_session_is_held_until_its_build_is_refused(tmp_path: Any) -> None:
    """The docker CLI 20.10 with DOCKER_BUILDKIT=1 prints the first failure of /session and
    /build: the session is taken (101) and closed once /build was refused, so the user
    reads the refusal's message (seen with /usr/bin/docker 20.10)."""
    async def go() -> tuple[bytes, float]:
        app = make_app(SystemBackend(), builder=FakeBuilder(str(tmp_path)))  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            port = client.server.port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1.41/session HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                         b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
                         b"X-Docker-Expose-Session-Uuid: s1\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            resp = await client.post("/v1.41/build?version=2&session=s1&remote=client-session")
            assert resp.status == 400
            assert (await resp.json())["message"] == BUILDKIT_UNSUPPORTED
            loop = asyncio.get_running_loop()
            start = loop.time()
            rest = await asyncio.wait_for(reader.read(), 5)     # closed by the daemon
            writer.close()
            return head + rest, loop.time() - start

    data, seconds = asyncio.run(go())
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Upgrade: h2c" in data and data.endswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                                    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    assert seconds < 3


def test_without_a_builder_build_is_not_routed() -> None:
    status, body, _ = call(None, "POST", "/v1.41/build", body=context_tar())
    assert (status, body) == (404, {"message": "page not found"})


def test_ping_announces_the_legacy_builder(tmp_path: Any) -> None:
    async def go() -> str | None:
        app = make_app(SystemBackend(), builder=FakeBuilder(str(tmp_path)))  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/_ping")
            return resp.headers.get("Builder-Version")

    assert asyncio.run(go()) == "1"


def test_ketch_progress_streams_the_events(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path), three_steps)
    _, messages, _ = call(b, "POST", "/build?ketchprogress=1", body=context_tar())
    events = [rq.event_from_json(m["ketch"]) for m in messages]
    assert events[0] == rq.StepStarted(1, 4, "base", "FROM busybox AS base")
    assert events[-1] == rq.BuildResult(IMG4, ["x:1", "y"])
    _, failed, _ = call(FakeBuilder(str(tmp_path), failing), "POST", "/build?ketchprogress=1",
                        body=context_tar())
    assert failed[-1] == RUN_ERROR


def test_declared_secrets_and_contexts_reach_the_builder_apart(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path))
    tar = context_tar({"Dockerfile": b"FROM x\n", ".ketch-build-secrets/tok": b"s3",
                       ".ketch-build-contexts/lib/a": b"A"})
    status, _, _ = call(b, "POST", "/build?ketchsecrets=%5B%22tok%22%5D"
                        "&ketchcontexts=%5B%22lib%22%5D", body=tar)
    assert status == 200
    opts, digests, files = b.calls[0]
    assert set(digests) == {"Dockerfile"} and files["secret:tok"] == b"s3"
    assert set(opts.secrets) == {"tok"} and set(opts.contexts) == {"lib"}
    assert emptied(tmp_path)


def test_a_client_that_leaves_cancels_the_build(tmp_path: Any) -> None:
    def script(emit: rq.Emit, cancel: threading.Event) -> str:
        emit(rq.StepStarted(1, 2, "0", "RUN sleep 100"))
        if not cancel.wait(20):
            raise AssertionError("never cancelled")
        raise InvalidArgument("Build cancelled")

    b = FakeBuilder(str(tmp_path), script)

    async def go() -> None:
        app = make_app(SystemBackend(), builder=b)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/build", data=context_tar())
            assert (await resp.content.readline()).startswith(b'{"stream":"Step 1/2')
            resp.close()
            await asyncio.to_thread(b.cancelled.wait, 10)

    asyncio.run(go())
    assert b.cancelled.is_set()
    assert emptied(tmp_path)        # the thread removes the context once it returns


def test_a_client_that_leaves_during_the_upload_leaves_nothing(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"))
    tar = context_tar({"big": b"x" * 200000})

    async def go() -> bool:
        app = make_app(SystemBackend(), builder=b)  # type: ignore[arg-type]
        seen = False
        async with TestClient(TestServer(app)) as client:
            _, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
            part = tar[:70000]
            writer.write(b"POST /v1.41/build HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n"
                         + b"%x\r\n" % len(part) + part + b"\r\n")
            await writer.drain()
            for _ in range(100):        # the extraction has begun
                seen = os.path.isdir(tmp_path / "tmp") and bool(os.listdir(tmp_path / "tmp"))
                if seen:
                    break
                await asyncio.sleep(0.02)
            writer.close()
            for _ in range(200):
                if not os.listdir(tmp_path / "tmp"):
                    break
                await asyncio.sleep(0.02)
        return seen

    assert asyncio.run(go())
    assert b.calls == [] and os.listdir(tmp_path / "tmp") == []


def test_build_cache_is_in_df_and_prune(tmp_path: Any) -> None:
    b = FakeBuilder(str(tmp_path))
    status, df, _ = call(b, "GET", "/v1.45/system/df?type=build-cache")
    assert status == 200 and df["BuildCache"][0]["ID"] == "abc"
    status, report, _ = call(b, "POST", "/v1.45/build/prune?all=1")
    assert report == {"CachesDeleted": ["abc"], "SpaceReclaimed": 42}
    assert b.cache.pruned == [({}, True)]
