"""``/_ping``, ``/version``, ``/info``, ``/system/df`` and the prunes of ``docker system prune``.

The docker CLI pings to learn the API version, then asks ``/version`` and
``/info``; docker-py and compose do the same. Shapes follow moby's
api/types/system (Info) and types.Version; values come from the backend
(facts about the host and the store) and are never invented: with no
container store yet, the container counts are honestly 0.

``GET /system/df`` and ``POST /{containers,networks,volumes,build}/prune``
report on the daemon's stores through one seam, ``Stores`` (see
``stores``): each area's router puts its store in when it is set up (the
image router does, ``ketch.api.routers.images.setup``). An area ketchd does
not serve yet (containers, networks, volumes, build cache) is an
``EmptyStore``: it lists nothing and prunes nothing, because nothing of that
kind can exist, but refuses bad filters exactly as dockerd does, so that
``docker system prune`` (which calls every one of these, and fails on the
first error) works today and keeps working when the real stores plug in.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from ketch import filters as flt
from ketch.api import versions
from ketch.api.errors import Handler
from ketch.api.routers import add
from ketch.api.routers.images import bool_value, parse_filters
from ketch.engine.files import go_time
from ketch.errors import InvalidArgument


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
    log_driver: str = "json-file"        # the daemon's default (daemon.json "log-driver")
    blkio_weight: bool = True            # the I/O scheduler takes weights (engine.sysinfo)
    containers: int = 0
    containers_running: int = 0
    containers_paused: int = 0
    containers_stopped: int = 0
    images: int = 0
    debug: bool = False
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    registry_config: dict[str, Any] | None = None   # moby's registry.ServiceConfig


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


def _ip_forward() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


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
        # The drivers ketch has (dockerd lists its built-in ones the same way).
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                    "Authorization": None, "Log": ["json-file", "local"]},
        # What the host's cgroups offer (dockerd reads the same from sysinfo).
        "MemoryLimit": "memory" in c,
        "SwapLimit": "memory" in c,
        "CpuCfsPeriod": "cpu" in c,
        "CpuCfsQuota": "cpu" in c,
        "CPUShares": "cpu" in c,
        "CPUSet": "cpuset" in c,
        "PidsLimit": "pids" in c,
        # Not in dockerd 20.10's Info (only its warning below): whether --blkio-weight
        # can work here, or is discarded with a warning at create.
        "BlkioWeight": f.blkio_weight,
        "OomKillDisable": f.cgroup_version == "1" and "memory" in c,
        "IPv4Forwarding": _ip_forward(),
        "Debug": f.debug,
        "NFd": _open_fds(),
        "NGoroutines": threading.active_count(),    # the daemon's threads, honestly
        "SystemTime": go_time(time.time_ns()),     # time.Now() in RFC3339Nano, local
        "LoggingDriver": f.log_driver,
        "CgroupDriver": f.cgroup_driver,
        "NEventsListener": 0,
        "KernelVersion": f.kernel_version,
        "OperatingSystem": f.operating_system,
        "OSVersion": "",
        "OSType": f.os,
        "Architecture": f.machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": f.registry_config,
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


# --- /system/df and the prunes: the stores seam ----------------------------------------

Filters = Mapping[str, Sequence[str]]


class JSONSummary(Protocol):
    """An image as ``/system/df`` lists it (``ketch.image.service.ImageSummary``)."""

    def to_json(self) -> dict[str, Any]: ...


class ImageUsage(Protocol):
    """``ketch.image.service.DiskUsage``: the distinct layers' size and the top-level images."""

    @property
    def layers_size(self) -> int: ...

    @property
    def images(self) -> Sequence[JSONSummary]: ...


class ImageStore(Protocol):
    def disk_usage(self) -> ImageUsage: ...


@dataclass(frozen=True, slots=True)
class PruneOptions:
    """What a prune request says besides its filters."""

    api_version: str
    all: bool = False  # ``/build/prune?all=1``: all cache, not only the unused dangling part


class ObjectStore(Protocol):
    """Containers, volumes, networks or build cache as ``/system/df`` and prune see them.

    ``disk_usage`` gives the entries of ``Containers`` / ``Volumes`` /
    ``BuildCache`` in the Engine API's shapes (``[]`` for networks, which df
    does not show); ``prune`` takes the decoded ``filters`` and answers the
    prune's body. Both may block (they are called in a thread).
    """

    def disk_usage(self) -> list[dict[str, Any]]: ...

    def prune(self, filters: Filters, options: PruneOptions) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class EmptyStore:
    """A kind of object ketchd cannot make yet: nothing to list, nothing to prune.

    Filters are still checked as dockerd checks them (names, ``until``
    values), so a mistyped ``docker system prune --filter`` fails the same
    way here as there; the answer is the empty report dockerd gives when it
    finds nothing.
    """

    accepted: frozenset[str]
    empty_report: Mapping[str, Any]
    until_is_duration: bool = False  # the build cache reads ``until`` as a Go duration
    error_prefix: str = ""

    def disk_usage(self) -> list[dict[str, Any]]:
        return []

    def prune(self, filters: Filters, options: PruneOptions) -> dict[str, Any]:
        try:
            flt.check_names(filters, self.accepted)
            if self.until_is_duration:
                # moby's toBuildkitPruneInfo: "unused-for" is the old name of "until".
                until, unused = filters.get("until", ()), filters.get("unused-for", ())
                if until and unused:
                    raise InvalidArgument('conflicting filters: "until" and "unused-for"')
                key = "unused-for" if unused else "until"
                values = [*until, *unused]
                if len(values) > 1:
                    raise InvalidArgument("filters expect only one value")
                for value in values:
                    try:
                        flt.parse_duration(value)
                    except ValueError as exc:
                        raise InvalidArgument(
                            f"\"{key}\" filter expects a duration (e.g., '24h'): {exc}") from None
            else:
                flt.prune_until(filters)
            if "all" in self.accepted:
                flt.bool_filter(filters, "all", False)
        except InvalidArgument as exc:
            raise InvalidArgument(self.error_prefix + exc.message) from None
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.empty_report.items()}


def no_containers() -> EmptyStore:
    return EmptyStore(flt.CONTAINER_PRUNE, {"ContainersDeleted": None, "SpaceReclaimed": 0})


def no_networks() -> EmptyStore:
    return EmptyStore(flt.NETWORK_PRUNE, {"NetworksDeleted": None})


def no_volumes() -> EmptyStore:
    # dockerd's volume prune answers an empty list, not null, when nothing goes.
    return EmptyStore(flt.VOLUME_PRUNE, {"VolumesDeleted": [], "SpaceReclaimed": 0})


def no_build_cache() -> EmptyStore:
    return EmptyStore(flt.BUILD_CACHE_PRUNE, {"CachesDeleted": None, "SpaceReclaimed": 0},
                      until_is_duration=True, error_prefix="failed to prune build cache: ")


@dataclass(slots=True)
class Stores:
    """What ``/system/df`` and the prune endpoints report on: the seam where stores plug in.

    ``images`` is None when the app serves no images (df then lists none);
    the others are ``EmptyStore`` until ketchd has containers, volumes,
    networks and a builder, whose routers will put their stores here.
    """

    images: ImageStore | None = None
    containers: ObjectStore = field(default_factory=no_containers)
    networks: ObjectStore = field(default_factory=no_networks)
    volumes: ObjectStore = field(default_factory=no_volumes)
    build_cache: ObjectStore = field(default_factory=no_build_cache)


STORES = web.AppKey("ketch_stores", Stores)


def stores(app: web.Application) -> Stores:
    """The app's ``Stores``, made on first use (by whichever router is set up first)."""
    if STORES not in app:
        app[STORES] = Stores()
    return app[STORES]


DF_TYPES = ("container", "image", "volume", "build-cache")


def df_types(requested: Sequence[str], api_version: str) -> frozenset[str]:
    """``?type=`` of API 1.42+ (repeatable); without it, or before 1.42, everything."""
    if not requested or not versions.at_least(api_version, "1.42"):
        return frozenset(DF_TYPES)
    for t in requested:
        if t not in DF_TYPES:
            raise InvalidArgument(f"unknown object type: {t}")
    return frozenset(requested)


def disk_usage_json(st: Stores, types: frozenset[str], api_version: str) -> dict[str, Any]:
    """moby's ``types.DiskUsage``: a kind not asked for is null (and LayersSize 0)."""
    layers_size = 0
    images: list[dict[str, Any]] | None = None
    if "image" in types:
        images = []
        if st.images is not None:
            usage = st.images.disk_usage()
            layers_size = usage.layers_size
            for summary in usage.images:
                doc = summary.to_json()
                if not versions.at_least(api_version, "1.44"):
                    doc["VirtualSize"] = doc.get("Size", 0)
                images.append(doc)
    out: dict[str, Any] = {
        "LayersSize": layers_size,
        "Images": images,
        "Containers": st.containers.disk_usage() if "container" in types else None,
        "Volumes": st.volumes.disk_usage() if "volume" in types else None,
        "BuildCache": st.build_cache.disk_usage() if "build-cache" in types else None,
    }
    if not versions.at_least(api_version, "1.42"):
        # Deprecated since 1.38; dockerd still sends the build cache's total before 1.42.
        out["BuilderSize"] = sum(int(b.get("Size", 0)) for b in out["BuildCache"] or [])
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

    async def get_df(request: web.Request) -> web.Response:
        version = versions.of(request.match_info)
        types = df_types(request.query.getall("type", []), version)
        body = await asyncio.to_thread(disk_usage_json, stores(request.app), types, version)
        return web.json_response(body)

    def prune_route(pick: str) -> Handler:
        # These belong to the containers, networks, volumes and build routers; they
        # live here until those routers exist, over the same Stores seam.
        async def prune(request: web.Request) -> web.Response:
            options = PruneOptions(versions.of(request.match_info),
                                   all=bool_value(request.query, "all"))
            store: ObjectStore = getattr(stores(request.app), pick)
            filters = parse_filters(request.query.get("filters"))
            in_loop = getattr(store, "prune_async", None)   # a store that awaits its work
            if in_loop is not None:
                return web.json_response(await in_loop(filters, options))
            return web.json_response(await asyncio.to_thread(store.prune, filters, options))
        return prune

    stores(app)
    add(app, "GET", "/_ping", ping)
    add(app, "HEAD", "/_ping", ping)
    add(app, "GET", "/version", get_version)
    add(app, "GET", "/info", get_info)
    add(app, "GET", "/system/df", get_df)
    add(app, "POST", "/containers/prune", prune_route("containers"))
    add(app, "POST", "/networks/prune", prune_route("networks"))
    add(app, "POST", "/volumes/prune", prune_route("volumes"))
    add(app, "POST", "/build/prune", prune_route("build_cache"))
