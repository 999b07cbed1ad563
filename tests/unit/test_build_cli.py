"""The build client and ``ketch build``: the query and tar sent, the messages read, the renderers.

The daemon side is the real API app over a fake BuildService (tests.unit.test_build_api),
served on a unix socket in a thread, so the client's chunked upload and the stream it
reads are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from tests.unit.test_api_images import FakeImages
from tests.unit.test_api_versions import Backend as SystemBackend
from tests.unit.test_build_api import IMG4, LEGACY, FakeBuilder, context_tar, failing, three_steps

from ketch.api import make_app
from ketch.client import Client
from ketch.client._build import BuildFailed, build_query
from ketch.errors import InvalidArgument


@contextlib.contextmanager
def serving(builder: FakeBuilder, sock: Path) -> Iterator[str]:
    """The API app on a unix socket, in a thread with its own loop."""
    app = make_app(SystemBackend(), FakeImages(), builder=builder)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.UnixSite(runner, str(sock)).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"unix://{sock}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_build_query_sends_only_what_differs_from_the_defaults() -> None:
    assert build_query() == []
    q = build_query(dockerfile="d/Df", tags=["a", "b:1"], build_args={"A": "1", "B": None},
                    target="t", no_cache=True, no_cache_filter=["s"], cache_from=["c"],
                    pull=True, labels={"l": "v"}, network_mode="host",
                    extra_hosts=["h:1.2.3.4"], platform="linux/amd64", memory=10,
                    memory_swap=-1, cpu_shares=2, cpu_period=3, cpu_quota=4,
                    cpuset_cpus="0", cpuset_mems="1", shm_size=5,
                    ulimits=[{"Name": "nofile", "Soft": 1, "Hard": 2}], remove=False,
                    force_remove=True, quiet=True, ketch_progress=True, secrets=["s"],
                    contexts=["c"], source_date_epoch=0)
    assert q == [("dockerfile", "d/Df"), ("t", "a"), ("t", "b:1"),
                 ("buildargs", '{"A":"1","B":null}'), ("target", "t"), ("nocache", "1"),
                 ("ketchnocachefilter", '["s"]'), ("cachefrom", '["c"]'), ("pull", "1"),
                 ("labels", '{"l":"v"}'), ("networkmode", "host"),
                 ("extrahosts", "h:1.2.3.4"), ("platform", "linux/amd64"), ("memory", "10"),
                 ("memswap", "-1"), ("cpushares", "2"), ("cpuperiod", "3"),
                 ("cpuquota", "4"), ("shmsize", "5"), ("cpusetcpus", "0"),
                 ("cpusetmems", "1"), ("ulimits", '[{"Name":"nofile","Soft":1,"Hard":2}]'),
                 ("rm", "0"), ("forcerm", "1"), ("q", "1"), ("ketchprogress", "1"),
                 ("ketchsecrets", '["s"]'), ("ketchcontexts", '["c"]'),
                 ("sourcedateepoch", "0")]


def test_the_client_streams_the_context_and_reads_the_messages(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), three_steps)
    with serving(b, tmp_path / "s.sock") as host:
        client = Client(host)
        # a file body goes out chunked, read as it is sent
        messages = list(client.image_build(io.BytesIO(context_tar({"Dockerfile": b"FROM x\n",
                                                                  "big": b"x" * 300000})),
                                           build_query(tags=["x:1", "y"], memory=5)))
    assert messages == LEGACY
    opts, digests, files = b.calls[0]
    assert files["big"] == b"x" * 300000 and opts.tags == ["x:1", "y"]
    assert opts.resources.memory == 5


def test_a_failed_build_raises_with_the_exit_code(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), failing)
    with serving(b, tmp_path / "s.sock") as host:
        stream = Client(host).image_build(context_tar(), [])
        seen = []
        with pytest.raises(BuildFailed) as info:
            for m in stream:
                seen.append(m)
    assert info.value.code == 3
    assert str(info.value) == "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert seen[-1] == {"stream": " ---> Running in 8555eabd7e12\n"}


def test_a_refused_request_raises_before_any_message(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), three_steps)
    with serving(b, tmp_path / "s.sock") as host, pytest.raises(InvalidArgument) as info:
        Client(host).image_build(io.BytesIO(context_tar()), [("buildargs", "x")])
    assert str(info.value) == ("error reading build args: invalid character 'x' looking for "
                               "beginning of value")


def test_quiet_and_ketch_progress(tmp_path: Path) -> None:
    b = FakeBuilder(str(tmp_path / "tmp"), three_steps)
    with serving(b, tmp_path / "s.sock") as host:
        client = Client(host)
        assert list(client.image_build(context_tar(), build_query(quiet=True))) == \
            [{"stream": IMG4 + "\n"}]
        kinds = [m["ketch"]["kind"] for m in
                 client.image_build(context_tar(), build_query(ketch_progress=True))]
    assert kinds[0] == "step" and kinds[-1] == "result"
