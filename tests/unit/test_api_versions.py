"""Version prefixes and dockerd's refusals; /_ping, /version, /info shapes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ketch.api import make_app, versions
from ketch.api.routers.system import HostFacts
from ketch.errors import InvalidArgument

FACTS = HostFacts(
    id="0d1c", name="box", server_version="0.1.0", git_commit="abc1234", build_time="",
    runtime_version="CPython 3.11.7", os="linux", arch="amd64", machine="x86_64",
    kernel_version="6.1.0", operating_system="Debian GNU/Linux 12 (bookworm)", ncpu=4,
    mem_total=8 << 30, root_dir="/var/lib/ketch", cgroup_version="2",
    cgroup_controllers=frozenset({"cpu", "memory", "pids"}),
)


class Backend:
    def __init__(self, facts: HostFacts = FACTS) -> None:
        self._facts = facts

    def facts(self) -> HostFacts:
        return self._facts


def call(method: str, path: str, facts: HostFacts = FACTS) -> tuple[int, Any, Any]:
    async def go() -> tuple[int, Any, Any]:
        async with TestClient(TestServer(make_app(Backend(facts)))) as client:
            resp = await client.request(method, path)
            raw = await resp.read()
            body: Any = raw
            if resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body, resp.headers

    return asyncio.run(go())


@pytest.mark.parametrize(("path", "want"), [
    ("/v1.45/info", ("1.45", "/info")),
    ("/v1.24/containers/json", ("1.24", "/containers/json")),
    ("/info", (None, "/info")),
    ("/version", (None, "/version")),
    ("/vfoo/info", (None, "/vfoo/info")),
])
def test_split_path(path: str, want: tuple[str | None, str]) -> None:
    assert versions.split_path(path) == want


def test_check_range() -> None:
    assert versions.check(None) == "1.45"
    assert versions.check("1.24") == "1.24"
    assert versions.check("1.45") == "1.45"
    assert versions.check("1.30") == "1.30"


def test_too_new_message_is_dockerds() -> None:
    with pytest.raises(InvalidArgument) as info:
        versions.check("1.50")
    assert str(info.value) == ("client version 1.50 is too new. "
                               "Maximum supported API version is 1.45")


def test_too_old_message_is_dockerds() -> None:
    with pytest.raises(InvalidArgument) as info:
        versions.check("1.23")
    assert str(info.value) == ("client version 1.23 is too old. Minimum supported API version "
                               "is 1.24, please upgrade your client to a newer version")


def test_versions_compare_as_numbers() -> None:
    # "1.100" is a string-wise smaller than "1.45" but numerically larger.
    with pytest.raises(InvalidArgument, match="too new"):
        versions.check("1.100")
    assert versions.at_least("1.40", "1.9")
    assert not versions.at_least("1.39", "1.40")


def test_bad_version_string() -> None:
    with pytest.raises(InvalidArgument):
        versions.check("1..2")


@pytest.mark.parametrize("path", ["/v1.99/version", "/v1.50/_ping", "/v1.12/info"])
def test_out_of_range_prefix_gives_400(path: str) -> None:
    status, body, _ = call("GET", path)
    assert status == 400
    assert "Maximum supported API version is 1.45" in body["message"] or \
        "Minimum supported API version is 1.24" in body["message"]


def test_unknown_endpoint_under_prefix_is_404() -> None:
    assert call("GET", "/v1.45/nope")[:2] == (404, {"message": "page not found"})
    assert call("GET", "/nope")[:2] == (404, {"message": "page not found"})


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", ["/_ping", "/v1.24/_ping", "/v1.45/_ping"])
def test_ping_headers(method: str, path: str) -> None:
    status, body, headers = call(method, path)
    assert status == 200
    assert body == (b"OK" if method == "GET" else b"")
    assert headers["API-Version"] == "1.45"
    assert headers["Builder-Version"] == "1"
    assert headers["Docker-Experimental"] == "false"
    assert headers["Ostype"] == "linux"
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert headers["Pragma"] == "no-cache"


def test_version_shape() -> None:
    status, body, _ = call("GET", "/v1.45/version")
    assert status == 200
    assert body["ApiVersion"] == "1.45" and body["MinAPIVersion"] == "1.24"
    assert body["Version"] == "0.1.0" and body["GoVersion"] == "CPython 3.11.7"
    assert (body["Os"], body["Arch"], body["KernelVersion"]) == ("linux", "amd64", "6.1.0")
    engine = body["Components"][0]
    assert engine["Name"] == "Engine"
    assert engine["Details"]["ApiVersion"] == "1.45"
    assert engine["Details"]["MinAPIVersion"] == "1.24"
    assert all(isinstance(v, str) for v in engine["Details"].values())
    assert body["Platform"]["Name"]


def test_info_shape_and_gating() -> None:
    facts = replace(FACTS, labels=["a=b"])
    status, body, _ = call("GET", "/v1.45/info", facts)
    assert status == 200
    assert body["Containers"] == body["ContainersRunning"] == 0
    assert body["Driver"] == "overlay2" and body["CgroupDriver"] == "cgroupfs"
    assert body["CgroupVersion"] == "2"
    assert body["DefaultRuntime"] == "ketch"
    assert body["SecurityOptions"] == ["name=seccomp,profile=builtin"]
    assert body["Swarm"]["LocalNodeState"] == "inactive"
    assert body["Warnings"] == [] and body["Labels"] == ["a=b"]
    assert body["Architecture"] == "x86_64" and body["NCPU"] == 4
    assert body["MemTotal"] == 8 << 30 and body["DockerRootDir"] == "/var/lib/ketch"
    assert body["MemoryLimit"] and body["PidsLimit"] and body["CpuCfsQuota"]
    assert not body["CPUSet"] and not body["OomKillDisable"]
    # CgroupVersion came with API 1.40.
    _, old, _ = call("GET", "/v1.39/info")
    assert "CgroupVersion" not in old
