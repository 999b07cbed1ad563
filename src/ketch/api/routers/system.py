"""``/_ping``, ``/version`` and ``/info``: what clients ask first.

The docker CLI pings to learn the API version, then asks ``/version`` and
``/info``; docker-py and compose do the same. Shapes follow moby's
api/types/system (Info) and types.Version; values come from the backend
(facts about the host and the store) and are never invented: with no
container store yet, the container counts are honestly 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from ketch.api import versions
from ketch.api.routers import add


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the daemon knows about itself and its host (gathered at start; the
    counts and labels are refreshed per request)."""

    id: str
    name: str
    server_version: str
    git_commit: str
    build_time: str
    runtime_version: str  # Docker's "GoVersion": the interpreter, honestly
    os: str  # GOOS-style: "linux"
    arch: str  # GOARCH-style: "amd64"
    machine: str  # uname -m: "x86_64"
    kernel_version: str
    operating_system: str
    ncpu: int
    mem_total: int
    root_dir: str
    cgroup_version: str
    cgroup_controllers: frozenset[str] = frozenset()
    cgroup_driver: str = "cgroupfs"
    storage_driver: str = "overlay2"
    default_runtime: str = "ketch"
    containers: int = 0
    containers_running: int = 0
    containers_paused: int = 0
    containers_stopped: int = 0
    images: int = 0
    debug: bool = False
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class SystemBackend(Protocol):
    """What these routes need from the daemon (moby's backend.go pattern)."""

    def facts(self) -> HostFacts: ...


PING_HEADERS = {
    "API-Version": versions.CURRENT_API_VERSION,
    "Builder-Version": "1",
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


def version_json(f: HostFacts) -> dict[str, Any]:
    """GET /version in types.Version's shape (Components[].Details are strings)."""
    details = {
        "ApiVersion": versions.CURRENT_API_VERSION,
        "Arch": f.arch,
        "BuildTime": f.build_time,
        "Experimental": "false",
        "GitCommit": f.git_commit,
        "GoVersion": f.runtime_version,
        "KernelVersion": f.kernel_version,
        "MinAPIVersion": versions.MIN_API_VERSION,
        "Os": f.os,
    }
    return {
        "Platform": {"Name": f"ketch {f.server_version}"},
        "Components": [{"Name": "Engine", "Version": f.server_version, "Details": details}],
        "Version": f.server_version,
        "ApiVersion": versions.CURRENT_API_VERSION,
        "MinAPIVersion": versions.MIN_API_VERSION,
        "GitCommit": f.git_commit,
        "GoVersion": f.runtime_version,
        "Os": f.os,
        "Arch": f.arch,
        "KernelVersion": f.kernel_version,
        "BuildTime": f.build_time,
    }


def info_json(f: HostFacts, api_version: str) -> dict[str, Any]:
    """GET /info in system.Info's shape, with the fields docker CLI 28 prints."""
    c = f.cgroup_controllers
    out: dict[str, Any] = {
        "ID": f.id,
        "Containers": f.containers,
        "ContainersRunning": f.containers_running,
        "ContainersPaused": f.containers_paused,
        "ContainersStopped": f.containers_stopped,
        "Images": f.images,
        "Driver": f.storage_driver,
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": [], "Authorization": None, "Log": []},
        # What the host's cgroups offer (dockerd reads the same from sysinfo).
        "MemoryLimit": "memory" in c,
        "SwapLimit": "memory" in c,
        "CpuCfsPeriod": "cpu" in c,
        "CpuCfsQuota": "cpu" in c,
        "CPUShares": "cpu" in c,
        "CPUSet": "cpuset" in c,
        "PidsLimit": "pids" in c,
        "OomKillDisable": f.cgroup_version == "1" and "memory" in c,
        "IPv4Forwarding": False,
        "Debug": f.debug,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": "",
        "LoggingDriver": "",
        "CgroupDriver": f.cgroup_driver,
        "NEventsListener": 0,
        "KernelVersion": f.kernel_version,
        "OperatingSystem": f.operating_system,
        "OSVersion": "",
        "OSType": f.os,
        "Architecture": f.machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": None,
        "NCPU": f.ncpu,
        "MemTotal": f.mem_total,
        "GenericResources": None,
        "DockerRootDir": f.root_dir,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": f.name,
        "Labels": list(f.labels),
        "ExperimentalBuild": False,
        "ServerVersion": f.server_version,
        "Runtimes": {f.default_runtime: {"path": f.default_runtime}},
        "DefaultRuntime": f.default_runtime,
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": list(f.warnings),
    }
    if versions.at_least(api_version, "1.40"):
        out["CgroupVersion"] = f.cgroup_version
    return out


async def ping(request: web.Request) -> web.Response:
    """dockerd answers HEAD with the same headers and an empty body."""
    body = b"" if request.method == "HEAD" else b"OK"
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers=PING_HEADERS)


def setup(app: web.Application, backend: SystemBackend) -> None:
    """Adds the system routes, bound to ``backend``."""

    async def get_version(request: web.Request) -> web.Response:
        return web.json_response(version_json(backend.facts()))

    async def get_info(request: web.Request) -> web.Response:
        return web.json_response(info_json(backend.facts(), versions.of(request.match_info)))

    add(app, "GET", "/_ping", ping)
    add(app, "HEAD", "/_ping", ping)
    add(app, "GET", "/version", get_version)
    add(app, "GET", "/info", get_info)
