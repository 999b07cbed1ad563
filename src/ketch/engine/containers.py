"""The container engine: create, start, stop, kill, wait, remove, inspect, list.

One ``Engine`` per daemon, on the daemon's event loop. A container's life:

    create   parse and check the body (model), merge the image's defaults,
             name it, make its rootfs snapshot, store it         -> "created"
    start    mount the rootfs, write /etc/hostname, hosts, resolv.conf, make
             the OCI spec (specgen) and bundle, then ask the supervisor to
             create and start it                                 -> "running"
    exit     the supervisor's exit event: record how it ended, let the
             supervisor forget it, unmount, wake waiters, then auto-remove or
             restart by policy                                   -> "exited"
    remove   kill if forced, unmount, drop the snapshot and directories

The supervisor (``ketch.engine.supervisor``) holds the processes, so
containers outlive ketchd; on start ``reconcile`` takes its live set as the
truth. Blocking work (mounts, files, SQLite) runs in worker threads.

Layout: ``<root>/containers/<id>/`` holds hostname, hosts, resolv.conf, the
json-file log and the rootfs mount point; ``<exec-root>/containers/<id>/``
holds the OCI bundle (config.json).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal as signal_mod
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch.engine import model, specgen
from ketch.engine.names import random_name
from ketch.engine.network import NetworkOptions, ps_ports
from ketch.engine.store import ZERO_TIME, Container, ContainerStore, State, check_name
from ketch.errors import (
    Conflict,
    InvalidArgument,
    KetchError,
    NotFound,
    NotModified,
    NotSupported,
    System,
)
from ketch.jsonmodel import from_json, to_json
from ketch.units import human_duration

if TYPE_CHECKING:
    from ketch.engine.supervisor_client import SupervisorClient
    from ketch.image.service import ImageService
    from ketch.volume.store import VolumeStore

log = logging.getLogger("ketch.engine")

DEFAULT_STOP_TIMEOUT = 10


def now_rfc3339() -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, as Go's RFC3339Nano."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def parse_rfc3339(s: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (0 for Go's zero time)."""
    if not s or s.startswith("0001-"):
        return 0.0
    import calendar

    main, _, frac = s.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return secs + (float("0." + frac) if frac else 0.0)


def parse_signal(value: str | int | None, default: int = signal_mod.SIGKILL) -> int:
    """"KILL", "SIGKILL", "9" -> 9; dockerd's message for anything else."""
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    v = value.strip()
    if v.isdigit():
        n = int(v)
        if 0 < n < signal_mod.NSIG:
            return n
        raise InvalidArgument(f"Invalid signal: {value}")
    name = v.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal_mod.Signals[name])
    except KeyError:
        raise InvalidArgument(f"Invalid signal: {value}") from None


@dataclass(slots=True)
class EngineOptions:
    """The daemon's settings the engine needs."""

    root: str
    exec_root: str
    cgroup_parent: str = specgen.DEFAULT_CGROUP_PARENT
    log_driver: str = "json-file"
    log_opts: dict[str, str] = field(default_factory=dict)
    default_ulimits: list[model.Ulimit] = field(default_factory=list)
    init_path: str | None = None
    cgroup2: bool = False
    network: NetworkOptions = field(default_factory=lambda: NetworkOptions())
    sysinfo: model.SysInfo | None = None    # the host's features; probed here when None


def _init_binary() -> str | None:
    """The static init ``--init`` binds at /sbin/docker-init: Debian's tini-static."""
    for p in ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init"):
        if os.path.isfile(p):
            return p
    return None


class Engine:
    def __init__(self, opts: EngineOptions, images: ImageService,
                 supervisor: SupervisorClient, volumes: VolumeStore | None = None, *,
                 on_event: Callable[[str, Container, dict[str, str]], None] | None = None
                 ) -> None:
        self.opts = opts
        self.images = images
        self.sup = supervisor
        if volumes is None:
            from ketch.volume.store import VolumeStore

            volumes = VolumeStore(opts.root)
        self.volumes = volumes
        from ketch.engine.networks import Networks

        self.networks = Networks(self, opts.network, opts.root)
        self.store = ContainerStore(os.path.join(opts.root, "containers.db"))
        self.on_event = on_event or (lambda action, c, attrs: None)
        self._exited: dict[str, asyncio.Event] = {}       # id -> set at each exit
        self._removed: dict[str, asyncio.Event] = {}
        self._events_task: asyncio.Task[None] | None = None
        self._restart_tasks: dict[str, asyncio.Task[None]] = {}
        self._prepared: set[str] = set()    # created in the supervisor, not started yet
        self._starting: set[str] = set()    # sup.start sent, "running" not recorded yet
        self._early_exits: dict[str, dict[str, Any]] = {}
        self._released: set[str] = set()    # exited: supervisor delete and _release done
        self._recording: dict[str, asyncio.Future[None]] = {}   # an exit's cleanup under way
        self._locks: dict[str, asyncio.Lock] = {}   # one start/prepare at a time
        self._host_sysinfo: model.SysInfo | None = opts.sysinfo
        self._background: set[asyncio.Future[None]] = set()
        from ketch.engine.execs import Execs

        self.execs = Execs(self)
        from ketch.engine.health import HealthMonitor

        self.health = HealthMonitor(self)
        os.makedirs(self._dir(""), mode=0o710, exist_ok=True)
        os.makedirs(os.path.join(opts.exec_root, "containers"), mode=0o700, exist_ok=True)
        self.spec_options = specgen.SpecOptions(
            cgroup_parent=opts.cgroup_parent, cgroup_version=2 if opts.cgroup2 else 1,
            default_ulimits=list(opts.default_ulimits),
            init_path=opts.init_path or _init_binary())
        self.defaults = model.DaemonDefaults(cgroup2=opts.cgroup2, runtime="runc",
                                             log_driver=opts.log_driver,
                                             log_opts=dict(opts.log_opts),
                                             ulimits=list(opts.default_ulimits))

    # --- paths ----------------------------------------------------------------------------

    def _dir(self, cid: str) -> str:
        return os.path.join(self.opts.root, "containers", cid)

    def _bundle(self, cid: str) -> str:
        return os.path.join(self.opts.exec_root, "containers", cid)

    def _rootfs(self, cid: str) -> str:
        return os.path.join(self._dir(cid), "rootfs")

    def log_path(self, c: Container) -> str:
        """The file ``docker logs`` reads ("" for driver none)."""
        driver = self._host_config(c).log_config.type
        if driver == "none":
            return ""
        if driver == "local":
            return os.path.join(self._dir(c.id), "local-logs", "container.log")
        return os.path.join(self._dir(c.id), f"{c.id}-json.log")

    # --- typed views of the stored JSON ----------------------------------------------------

    @staticmethod
    def _config(c: Container) -> model.ContainerConfig:
        return from_json(model.ContainerConfig, c.config, where="Config")

    @staticmethod
    def _host_config(c: Container) -> model.HostConfig:
        return from_json(model.HostConfig, c.host_config, where="HostConfig")

    # --- start-up ---------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the store agree with the supervisor's live set, then follow its events.

        Containers the supervisor still runs stay running; ones it saw exit
        while ketchd was away get their exit recorded; ones it does not know
        at all (the machine rebooted) are marked exited and their mounts
        released. Then ``always``/``unless-stopped`` containers start again.
        """
        live = {info.id: info for info in await self.sup.containers()}
        alive = [i for i, info in live.items()
                 if info.supervised and info.status in ("running", "paused", "created")]
        await asyncio.to_thread(self.volumes.reconcile, alive)
        # Kernel leftovers of containers that are gone, then the networks (their
        # endpoints of live containers kept, with their DNS).
        running = []
        for cid in alive:
            rec = self.store.find(cid)
            if rec is not None and live[cid].status != "created":
                rec.state.pid = live[cid].pid
                running.append(rec)
        await asyncio.to_thread(self.networks.setup, running)
        for c in self.store.all():
            info = live.get(c.id)
            if info is not None and info.status in ("running", "paused", "created") \
                    and info.supervised:
                if c.state.status not in ("running", "paused"):
                    c.state.status = "running" if info.status != "paused" else "paused"
                    c.state.pid = info.pid
                    await asyncio.to_thread(self.store.save, c)
                if c.state.status == "running":
                    self.health.start(c.id)     # as dockerd's restore
                continue
            if info is not None and info.exit is not None:
                await self._record_exit(c, to_json(info.exit), restart=False)
            elif c.state.running:
                if info is not None:      # a process of a dead supervisor: not ours to keep
                    with contextlib.suppress(KetchError):
                        await self.sup.kill(c.id, signal_mod.SIGKILL)
                    with contextlib.suppress(KetchError):
                        await self.sup.delete(c.id, force=True)
                c.state = State(status="exited", exit_code=255, error="",  # as dockerd's restore
                                started_at=c.state.started_at, finished_at=now_rfc3339(),
                                health=_stopped_health(c.state.health))
                await asyncio.to_thread(self._release, c)
                await asyncio.to_thread(self.store.save, c)
            else:
                await asyncio.to_thread(self._release, c)
        self._events_task = asyncio.create_task(self._follow_exits(), name="exits")
        for c in self.store.all():
            if c.state.running or not c.has_been_started:
                continue        # dockerd's restore starts only what has run before
            p = self._host_config(c).restart_policy
            # on-failure ignores a manual stop here, as dockerd's restore does (moby #35166).
            if p.name == "always" or (
                    p.name == "unless-stopped" and not c.has_been_manually_stopped) or (
                    p.name == "on-failure" and c.state.exit_code != 0 and (
                        p.maximum_retry_count == 0
                        or c.restart_count < p.maximum_retry_count)):
                with contextlib.suppress(KetchError):
                    await self.start(c.id)

    async def close(self) -> None:
        for t in [self._events_task, *self._restart_tasks.values()]:
            if t is not None:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        await self.health.close()
        await asyncio.to_thread(self.networks.close)
        self.store.close()

    async def _follow_exits(self) -> None:
        async for kind, data in self.sup.events():
            if kind != "exit":
                continue
            c = self.store.find(str(data.get("id", "")))
            if c is None:
                continue
            if c.id in self._starting:
                self._early_exits[c.id] = data   # start() records it when it is done
                continue
            if c.state.status not in ("running", "paused"):
                # The init of a container that never ran (a failed start, or a
                # prepared one deleted): nothing ended that the user started.
                self._prepared.discard(c.id)
                continue
            try:
                await self._record_exit(c, data, restart=True)
            except Exception:  # noqa: BLE001 - one bad exit must not stop the others
                log.exception("recording the exit of %s failed", c.id)

    # --- create ---------------------------------------------------------------------------

    def _sysinfo(self) -> model.SysInfo:
        """The host's cgroup features (``engine.sysinfo``), probed at the first create."""
        if self._host_sysinfo is None:
            from ketch.engine.sysinfo import probe

            self._host_sysinfo = probe(cgroup2=self.opts.cgroup2, runtimes=("runc", "ketch"),
                                       default_runtime="runc")
        return self._host_sysinfo

    async def create(self, body: bytes | dict[str, Any], name: str = "", *,
                     api_version: str = model.API_VERSION) -> tuple[str, list[str]]:
        """``POST /containers/create``: the new id and dockerd's warnings."""
        req = model.parse_create_request(body, name, api_version=api_version,
                                         cgroup2=self.opts.cgroup2)
        config, hc = req.config, req.host_config
        if not config.image:
            raise InvalidArgument("No image was specified in the container config")
        try:
            image, image_config = await asyncio.to_thread(self._image_and_config, config.image)
        except NotFound:
            raise NotFound(f"No such image: {_familiar(config.image)}") from None
        warnings = model.validate_create(config, hc, self._sysinfo())
        self._check_references(hc, req.networking_config, api_version)
        model.adapt_host_config(hc, self.defaults)
        if hc.network_mode in ("", "default"):
            hc.network_mode = "bridge"
        if hc.network_mode.startswith("container:"):
            # dockerd stores the other container's ID (a missing one fails at start)
            other = self.store.find(hc.network_mode.partition(":")[2])
            if other is not None:
                hc.network_mode = f"container:{other.id}"
        self._check_network(hc)
        networks = self.networks.configure(hc.network_mode,
                                           req.networking_config.endpoints_config)
        _check_endpoint_addresses(networks)
        specgen.merge_image_config(config, image_config)
        if name:    # dockerd reserves the name last (newContainer), after the checks above
            name = check_name(name)
            owner = self.store.name_owner(name)
            if owner is not None:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{owner}". You have to remove (or rename) that container to be able '
                    "to reuse that name.")
        cid = secrets.token_hex(32)
        specgen.default_hostname(cid, config, hc)
        path, args = specgen.entrypoint_and_args(config)
        name = name or random_name(lambda n: self.store.name_owner(n) is not None)
        c = Container(id=cid, name=name, created=now_rfc3339(), image=config.image,
                      image_id=image.id, path=path, args=args,
                      config=model.config_json(config), host_config=model.host_config_json(hc),
                      desired_macs={n: ep["MacAddress"] for n, ep in networks.items()
                                    if ep.get("MacAddress")})
        from ketch.engine.network import port_specs
        from ketch.engine.networks import network_settings

        port_specs(hc, config.exposed_ports)      # bad -p specs fail the create
        # dockerd fills Ports in at the first start: a created container has none yet
        c.network_settings = network_settings(networks, ports={})
        await asyncio.to_thread(self._store_new, c, config, hc)
        self.on_event("create", c, {})
        return cid, warnings

    def _image_and_config(self, ref: str) -> tuple[Any, Any]:
        """The image record and its config (one trip to a worker thread for both)."""
        image = self.images.get(ref)
        return image, self._image_config(image.id)

    def _image_config(self, image_id: str) -> Any:
        from ketch.image import oci

        rec = self.images.get(image_id)
        return oci.parse_config(self.images.content.read(rec.id)).config

    def _store_new(self, c: Container, config: model.ContainerConfig,
                   hc: model.HostConfig) -> None:
        """Plan the mounts, make the rootfs snapshot and directories, store the record;
        on failure nothing is left (in one worker thread: each trip costs a wake-up)."""
        from ketch.volume.planner import mounts_json

        plan = self._plan_mounts(config, hc)
        c.mount_points = [m.to_record() for m in plan.mounts]
        c.mounts = mounts_json(plan.mounts)
        try:
            self._prepare_dirs(c, plan.mounts)
            self.store.add(c)
        except BaseException:
            self._discard_dirs(c)
            for name in plan.created:
                with contextlib.suppress(KetchError, OSError):
                    self.volumes.remove(name, users=[])
            raise

    def _check_references(self, hc: model.HostConfig, networking: Any, api: str) -> None:
        """What dockerd refuses at create about other things a container names: the
        IPC donor, legacy links, several network endpoints, a storage size."""
        if hc.storage_opt:
            # overlay's size quota needs xfs with pquota, which ketch's snapshots lack
            raise InvalidArgument("--storage-opt is supported only for overlay over xfs "
                                  "with 'pquota' mount option")
        # Not a 404 for either: the docker CLI would take it for a missing image and pull.
        if hc.ipc_mode.startswith("container:"):
            try:
                self.store.get(hc.ipc_mode.partition(":")[2])
            except NotFound as exc:
                raise InvalidArgument(str(exc)) from None
        mode = hc.network_mode
        if mode not in ("", "default", "bridge", "host", "none") and \
                not mode.startswith("container:"):
            # dockerd's registerLinks skips a container on a user-defined network: its
            # HostConfig.Links are neither checked nor kept (inspect shows the empty link
            # graph); docker-compose v1 sends them with every `run` container.
            hc.links = None
        if not hc.links:
            hc.links = None     # inspect shows dockerd's link graph: null when empty
        for link in hc.links or []:
            name = link.partition(":")[0].lstrip("/")
            try:
                self.store.get(name)
            except NotFound as exc:
                raise InvalidArgument(f"could not get container for {name}: {exc}") from None
            raise NotSupported("legacy container links (--link) are not supported yet")
        names = sorted(getattr(networking, "endpoints_config", None) or {})
        if len(names) > 1 and (model.version_tuple(api) < (1, 44) or any(
                n in ("none", "host") or n.startswith("container:") for n in names)):
            raise InvalidArgument("Container cannot be connected to network endpoints: "
                                  + ", ".join(names))

    def _check_network(self, hc: model.HostConfig) -> None:
        mode = hc.network_mode
        if mode in ("none", "host") or mode.startswith("container:"):
            return
        from ketch.errors import NotSupported

        if mode == "bridge" and self.networks.default_record() is None:
            raise NotSupported('the default network is disabled ("bridge": "none"): '
                               "use --network none or --network host")
        # Other names are looked up at start, as dockerd does (user networks come later).

    def _plan_mounts(self, config: model.ContainerConfig, hc: model.HostConfig) -> Any:
        from ketch.volume.planner import MountPoint, plan_mounts

        def volumes_from(ref: str) -> list[MountPoint]:
            other = self.store.get(ref)
            return [MountPoint.from_record(r) for r in other.mount_points]

        return plan_mounts(config, hc, self.volumes, volumes_from=volumes_from,
                           daemon_root=self.opts.root)

    def _mount_points(self, c: Container) -> list[Any]:
        from ketch.volume.planner import MountPoint

        return [MountPoint.from_record(r) for r in c.mount_points]

    def volume_users(self, name: str) -> list[str]:
        """The containers whose mounts use volume ``name`` (a volume in use is not removed)."""
        return [c.id for c in self.store.all()
                if any(r.get("type") == "volume" and r.get("name") == name
                       for r in c.mount_points)]

    def _prepare_dirs(self, c: Container, mounts: list[Any] | None = None) -> None:
        os.makedirs(self._rootfs(c.id), mode=0o700, exist_ok=True)
        os.makedirs(self._bundle(c.id), mode=0o700, exist_ok=True)
        try:
            self.images.rootfs_mounts(c.image_id, c.id)
            copy = bool(mounts and any(getattr(m, "type", "") == "volume" for m in mounts))
            workdir = str((c.config or {}).get("WorkingDir") or "").strip("/")
            if copy or workdir:
                # Image content under a new volume's path is copied in at create, and a
                # working directory the image lacks made, as dockerd does; the rootfs is
                # mounted for that moment only.
                self._mount_rootfs(c)
                try:
                    if copy:
                        from ketch.volume.planner import copy_up

                        copy_up(mounts or [], self.volumes, self._rootfs(c.id))
                    if workdir:
                        _make_workdir(self._rootfs(c.id), workdir)
                finally:
                    self._unmount_rootfs(c)
        except BaseException:
            self._discard_dirs(c)
            raise

    def _remove_files(self, c: Container, *, release: bool) -> None:
        """What remove does off the event loop, in one go: unmount, snapshot and
        directories, then the record."""
        if release:
            self._release(c)
        self._discard_dirs(c)
        self.store.remove(c)

    def _discard_dirs(self, c: Container) -> None:
        with contextlib.suppress(KetchError, OSError):
            self.images.snapshotter.remove(c.id)
        shutil.rmtree(self._dir(c.id), ignore_errors=True)
        shutil.rmtree(self._bundle(c.id), ignore_errors=True)

    # --- start ----------------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        c = self.store.get(ref)
        if c.state.status in ("running", "paused"):
            raise NotModified("container already started")
        if c.state.status == "removing":
            raise Conflict("container is marked for removal and cannot be started")
        task = self._restart_tasks.get(c.id)
        if task is not None and task is not asyncio.current_task():
            self._cancel_restart(c.id)      # a user's start wins over a pending restart
        async with self._lock(c.id):
            if c.state.status in ("running", "paused"):
                raise NotModified("container already started")
            await self._exit_recorded(c.id)
            try:
                if c.id not in self._prepared:
                    await self._prepare(c)
                self._prepared.discard(c.id)
                self._starting.add(c.id)
                pid = await self.sup.start(c.id)
            except KetchError as exc:
                self._starting.discard(c.id)
                self._prepared.discard(c.id)
                await self._failed_start(c, exc)
                raise _start_error(exc) from None
        c.state = State(status="running", pid=pid, started_at=now_rfc3339(),
                        health=c.state.health,
                        finished_at=c.state.finished_at)
        c.has_been_started = True
        c.has_been_manually_stopped = False
        await asyncio.to_thread(self.store.save, c)
        self._starting.discard(c.id)
        self.health.start(c.id)
        self.on_event("start", c, {})
        early = self._early_exits.pop(c.id, None)
        if early is not None:
            # It ended before its start was recorded (echo is quick): record it now.
            await self._record_exit(c, early, restart=True)

    async def _prepare(self, c: Container) -> None:
        """Rootfs, bundle and the supervisor's ``create``: the process exists, stopped
        before the user's program, with its stdio held by the supervisor. An attach
        before start needs this (docker run attaches, then starts)."""
        config, hc = self._config(c), self._host_config(c)
        self._released.discard(c.id)
        bundle = await asyncio.to_thread(self._make_bundle, c, config, hc)
        from ketch.engine.supervisor_client import LogConfig

        log_cfg = LogConfig(driver=hc.log_config.type or "json-file",
                            path=self.log_path(c), opts=dict(hc.log_config.config or {}))
        from ketch.engine.supervisor.logs import check_values

        try:        # the values, as dockerd when it starts the logger (exit code 128)
            check_values(log_cfg.driver, log_cfg.opts)
        except KetchError as exc:
            exc.not_runtime = True  # type: ignore[attr-defined]  # worded as dockerd's
            raise
        pid = await self.sup.create(c.id, bundle, tty=config.tty,
                                    stdin_open=config.open_stdin,
                                    stdin_once=config.stdin_once, log=log_cfg)
        try:
            await self._connect(c, config, hc, pid)
        except BaseException:
            with contextlib.suppress(KetchError):
                await self.sup.delete(c.id, force=True)
            connected = self.networks.attached(c.id)
            await asyncio.to_thread(self._release, c)
            self._network_events("network disconnect", c, connected)
            raise
        self._exited.setdefault(c.id, asyncio.Event()).clear()
        self._prepared.add(c.id)

    async def _connect(self, c: Container, config: model.ContainerConfig,
                       hc: model.HostConfig, pid: int) -> None:
        """Plug the created container into its networks (its netns exists, its program
        has not started), then complete /etc/hosts with its address."""
        from ketch.engine.network import port_specs
        from ketch.network.ports import ports_json

        specs = tuple(port_specs(hc, config.exposed_ports))
        attached = await asyncio.to_thread(self.networks.plug, c, pid, specs)
        self._network_events("network connect", c, attached)
        eps = [a.endpoint for a in attached if a.endpoint is not None]
        published = eps[0].ports if eps else ()
        c.network_settings = self.networks.settings_running(
            c, attached, pid, ports_json(published, list(config.exposed_ports or {})))
        if eps:
            await asyncio.to_thread(self._write_hosts, c, config, hc)

    def _own_addresses(self, c: Container) -> list[str]:
        """The container's addresses for /etc/hosts, as it joined its networks."""
        out = []
        for a in self.networks.attached(c.id):
            if a.endpoint is not None:
                out += [str(ip) for ip in (a.endpoint.ip, a.endpoint.ip6) if ip is not None]
        return out

    def _host_gateway(self, c: Container) -> str | None:
        """``host-gateway``: the default bridge's gateway, whatever network the container
        is on (dockerd's default host-gateway-ip), else its first network's."""
        default = self.networks.default_record()
        d = self.networks.manager.driver(default.id) if default is not None else None
        with contextlib.suppress(KetchError):
            gw = getattr(d, "gateway", None)
            if gw is not None:
                return str(gw)
        for a in self.networks.attached(c.id):
            if a.endpoint is not None and a.endpoint.gateway is not None:
                return str(a.endpoint.gateway)
        return None

    def rewrite_network_files(self, c: Container) -> None:
        """After a ``network connect``/``disconnect`` of a running container: /etc/hosts
        lists its addresses on every network; on its first user-defined network its
        resolv.conf turns to the embedded DNS server (and stays so, as dockerd's)."""
        self._write_hosts(c, self._config(c), self._host_config(c))
        if self.networks.uses_embedded_dns(c):
            from ketch.network import etcfiles

            path = os.path.join(self._dir(c.id), "resolv.conf")
            text = _read(path)
            if etcfiles.EMBEDDED_DNS not in etcfiles.nameservers(text):
                with open(path, "w") as f:     # in place: it is bind-mounted
                    f.write(etcfiles.embedded_resolv_conf(text))

    def _network_events(self, action: str, c: Container, attached: list[Any]) -> None:
        """dockerd's ``network connect``/``disconnect``, one per network."""
        from ketch.engine.events import network_attrs

        for a in attached:
            with contextlib.suppress(KetchError):
                rec = self.networks.find(a.network_id)
                self.on_event(action, c, network_attrs(rec.id, rec.name, rec.driver))

    async def _failed_start(self, c: Container, exc: KetchError) -> None:
        with contextlib.suppress(KetchError):
            await self.sup.delete(c.id, force=True)
        connected = self.networks.attached(c.id)
        await asyncio.to_thread(self._release, c)
        # dockerd: connect, disconnect, and no die
        self._network_events("network disconnect", c, connected)
        text = str(_start_error(exc))     # what the client was told, as dockerd records it
        c.state.error = text
        c.state.exit_code = _exit_code_of_start_error(text)
        c.state.status = "created" if not c.has_been_started else "exited"
        await asyncio.to_thread(self.store.save, c)
        if self._host_config(c).auto_remove:
            # dockerd removes an --rm container whose start failed (the client
            # waits for "removed").
            task = asyncio.ensure_future(self._remove_quietly(c.id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _clear_network(self, c: Container) -> None:
        """A stopped container keeps no address (dockerd empties NetworkSettings), nor
        ports: dockerd's releaseNetwork drops them all, exposed ones too (inspect shows
        ``{}``, docker-compose v1's ``ps`` an empty Ports column)."""
        from ketch.engine.networks import Networks

        c.network_settings = Networks.settings_stopped(c, {})

    async def _remove_quietly(self, cid: str) -> None:
        with contextlib.suppress(KetchError):
            await self.remove(cid, force=True)

    def _make_bundle(self, c: Container, config: model.ContainerConfig,
                     hc: model.HostConfig) -> str:
        """Mount the rootfs, write the /etc files and config.json; the bundle's path."""
        import json

        rootfs = self._rootfs(c.id)
        self._mount_rootfs(c)
        _init_layer_files(rootfs, config.working_dir or "")
        mounts = self._etc_files(c, config, hc)
        try:
            import dataclasses

            from ketch.volume.planner import start_mounts

            for hm in start_mounts(self._mount_points(c), self.volumes, c.id):
                mounts.append(specgen.PlannedMount(**dataclasses.asdict(hm)))
            try:
                spec = specgen.make_spec(c.id, config, hc, None, rootfs,
                                         options=self.spec_options, mounts=mounts,
                                         resolve=self._resolve_namespace,
                                         shm_path=self._mount_shm(c, hc))
            except KetchError as exc:
                # found while building the spec, as dockerd finds it: its own words
                exc.not_runtime = True  # type: ignore[attr-defined]
                raise
        except BaseException:
            self._release(c)
            raise
        bundle = self._bundle(c.id)
        os.makedirs(bundle, mode=0o700, exist_ok=True)
        tmp = os.path.join(bundle, "config.json.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(to_json(spec)))     # one write, not json.dump's hundreds
        os.replace(tmp, os.path.join(bundle, "config.json"))
        return bundle

    def _mount_rootfs(self, c: Container) -> None:
        target = self._rootfs(c.id)
        os.makedirs(target, mode=0o700, exist_ok=True)
        if _is_mounted(target):
            return
        for m in self.images.snapshotter.mounts(c.id):
            mount_layer(m.type, m.source, m.options, target, cwd=m.cwd)

    def _etc_files(self, c: Container, config: model.ContainerConfig,
                   hc: model.HostConfig) -> list[specgen.PlannedMount]:
        """/etc/hostname, hosts and resolv.conf of the container, bind-mounted from its
        directory (dockerd's algorithm: ``ketch.network.etcfiles``)."""
        from ketch.network import etcfiles

        d = self._dir(c.id)
        host_net = hc.network_mode == "host"
        if hc.network_mode.startswith("container:"):
            return self._shared_etc_files(c, config, hc)
        resolv = etcfiles.resolv_conf(etcfiles.read_host_resolv_conf(), dns=hc.dns or (),
                                      dns_search=hc.dns_search or (),
                                      dns_options=hc.dns_options or ())
        if self.networks.uses_embedded_dns(c):
            resolv = etcfiles.embedded_resolv_conf(resolv)
        files = {
            "hostname": etcfiles.hostname_file(config.hostname or c.short_id),
            "hosts": _read("/etc/hosts") if host_net else self._hosts_text(
                config, hc, None, self._host_gateway(c)),
            "resolv.conf": resolv,
        }
        planned = []
        for name, text in files.items():
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(text)
            planned.append(specgen.PlannedMount(destination=f"/etc/{name}", source=path,
                                                writable=not hc.readonly_rootfs))
        return planned

    def _shared_etc_files(self, c: Container, config: model.ContainerConfig,
                          hc: model.HostConfig) -> list[specgen.PlannedMount]:
        """``--network container:X``: X's hostname, hosts and resolv.conf files, and
        X's host and domain names (dockerd's initializeNetworking)."""
        try:
            other = self.store.get(hc.network_mode.partition(":")[2])
        except NotFound as exc:
            exc.not_runtime = True  # type: ignore[attr-defined]  # dockerd's own words
            raise
        config.hostname = str(other.config.get("Hostname") or other.short_id)
        config.domainname = str(other.config.get("Domainname") or "")
        c.config["Hostname"], c.config["Domainname"] = config.hostname, config.domainname
        d = self._dir(other.id)
        return [specgen.PlannedMount(destination=f"/etc/{name}",
                                     source=os.path.join(d, name),
                                     writable=not hc.readonly_rootfs)
                for name in ("hostname", "hosts", "resolv.conf")]

    def _etc_dir(self, c: Container) -> str:
        """Where a container's /etc files are: its own directory, or that of the
        container whose network it shares."""
        mode = c.host_config.get("NetworkMode") or ""
        if mode.startswith("container:"):
            other = self.store.find(mode.partition(":")[2])
            if other is not None:
                return self._dir(other.id)
        return self._dir(c.id)

    @staticmethod
    def _hosts_text(config: model.ContainerConfig, hc: model.HostConfig,
                    ip: str | list[str] | None, gateway: str | None) -> str:
        from ketch.network import etcfiles

        extra = [etcfiles.parse_add_host(h) for h in hc.extra_hosts or []]
        return etcfiles.hosts(config.hostname, ip, domainname=config.domainname or "",
                              extra_hosts=extra, host_gateway=gateway)

    def _write_hosts(self, c: Container, config: model.ContainerConfig,
                     hc: model.HostConfig) -> None:
        # Rewritten in place: the file is bind-mounted already, a rename would not show.
        text = self._hosts_text(config, hc, self._own_addresses(c), self._host_gateway(c))
        with open(os.path.join(self._dir(c.id), "hosts"), "w") as f:
            f.write(text)

    def _shm_dir(self, cid: str) -> str:
        return os.path.join(self._dir(cid), "mounts", "shm")

    def _mount_shm(self, c: Container, hc: model.HostConfig) -> str | None:
        """A shareable IPC namespace's /dev/shm: a tmpfs on the host (dockerd's
        ``mounts/shm``), so that ``--ipc container:<this>`` can mount the same one."""
        if hc.ipc_mode != "shareable":
            return None
        path = self._shm_dir(c.id)
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not _is_mounted(path):
            size = hc.shm_size or self.spec_options.default_shm_size
            from ketch.linux.syscalls import LinuxSyscalls

            # MS_NOSUID | MS_NODEV | MS_NOEXEC, as dockerd mounts it
            LinuxSyscalls().mount("shm", path, "tmpfs", 2 | 4 | 8, f"mode=1777,size={size}")
        return path

    def _resolve_namespace(self, kind: str, ref: str) -> specgen.SharedNamespace:
        other = self.store.get(ref)
        if other.state.status not in ("running", "paused") or not other.state.pid:
            raise Conflict(f"cannot join {kind} of a non running container: {other.id}")
        ns = {"pid": "pid", "ipc": "ipc", "network": "net", "net": "net", "uts": "uts"}.get(
            kind, kind)
        shm = self._shm_dir(other.id) if ns == "ipc" else None
        return specgen.SharedNamespace(path=f"/proc/{other.state.pid}/ns/{ns}",
                                       shm_path=shm if shm and _is_mounted(shm) else None)

    def _release(self, c: Container) -> None:
        """Unmount the rootfs and the volumes, drop the bundle; the snapshot stays."""
        from ketch.volume.planner import stop_mounts

        self.networks.unplug(c.id)
        self._unmount_rootfs(c)
        shm = self._shm_dir(c.id)
        with contextlib.suppress(OSError):
            while _is_mounted(shm):
                _umount(shm)
        with contextlib.suppress(KetchError, OSError):
            stop_mounts(self._mount_points(c), self.volumes, c.id)
        shutil.rmtree(self._bundle(c.id), ignore_errors=True)

    def _unmount_rootfs(self, c: Container) -> None:
        unmount_all(self._rootfs(c.id))

    # --- exits ----------------------------------------------------------------------------

    async def _record_exit(self, c: Container, data: dict[str, Any], *, restart: bool) -> None:
        self.health.stop(c.id)
        code = int(data.get("exitCode", 0) or 0)
        c.state = State(status="exited", exit_code=code, oom_killed=bool(data.get("oomKilled")),
                        health=c.state.health,
                        started_at=c.state.started_at,
                        finished_at=str(data.get("finishedAt") or now_rfc3339()))
        # Waiters (wait, stop, logs -f) are woken now, before any await: a client
        # told "exited" may remove the container while the rest runs, and must not
        # find a new, never-set event in its place. Its output is logged already.
        self._exited.setdefault(c.id, asyncio.Event()).set()
        # A remove woken by that waits for this cleanup, and then does not repeat it.
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recording[c.id] = recorded
        try:
            connected = await self._clean_after_exit(c)
        finally:
            if self._recording.get(c.id) is recorded:
                del self._recording[c.id]
            recorded.set_result(None)
        if c.state.oom_killed:
            self.on_event("oom", c, {})
        self.on_event("die", c, {"exitCode": str(code)})
        # after the die, as dockerd's Cleanup releases the network
        self._network_events("network disconnect", c, connected)
        hc = self._host_config(c)
        if hc.auto_remove:
            with contextlib.suppress(KetchError):
                await self.remove(c.id, force=True)
            return
        if restart and self._should_restart(c, hc):
            self._restart_tasks[c.id] = asyncio.create_task(self._restart_later(c.id))

    async def _clean_after_exit(self, c: Container) -> list[Any]:
        """The supervisor forgets it, the rootfs is released, the exit is stored;
        the networks it was on."""
        connected = self.networks.attached(c.id)    # before a woken remove can release it
        # The supervisor's delete (cgroup, runtime state) and the unmount touch
        # nothing of each other's: at once. (The container's mount namespace has
        # its own copy of the rootfs mount, so what is still dying is unaffected.)
        # The exit is stored by the same worker after the unmount: what it stores
        # (the state, no address) is known already, and a crash before the
        # supervisor's delete is answered is repaired by reconcile, which finds
        # the exit there.
        release = asyncio.ensure_future(asyncio.to_thread(self._release_and_store, c))
        deleted = True
        try:
            await self.sup.delete(c.id, force=True)
        except NotFound:
            pass
        except KetchError:
            deleted = False
        finally:
            await release
        if deleted:
            self._released.add(c.id)
        return connected

    def _release_and_store(self, c: Container) -> None:
        self._release(c)
        self._clear_network(c)
        self.store.save(c)

    def _should_restart(self, c: Container, hc: model.HostConfig) -> bool:
        p = hc.restart_policy
        if c.has_been_manually_stopped or p.name in ("", "no"):
            return False
        if p.name in ("always", "unless-stopped"):
            return True
        if p.name == "on-failure":
            return c.state.exit_code != 0 and (
                p.maximum_retry_count == 0 or c.restart_count < p.maximum_retry_count)
        return False

    async def _restart_later(self, cid: str) -> None:
        """Docker's back-off: 100 ms doubling per quick exit, reset after 10 s of running."""
        c = self.store.find(cid)
        if c is None:
            return
        ran = parse_rfc3339(c.state.finished_at) - parse_rfc3339(c.state.started_at)
        delay = 0.1 if ran >= 10 else min(0.1 * 2 ** min(c.restart_count, 16), 60.0)
        c.state.restarting = True
        await asyncio.to_thread(self.store.save, c)
        try:
            await asyncio.sleep(delay)
            c = self.store.find(cid)
            if c is None or c.has_been_manually_stopped:
                return
            c.restart_count += 1
            c.state.restarting = False
            await self.start(cid)
        except KetchError as exc:
            log.warning("restarting %s failed: %s", cid, exc)
        finally:
            if self._restart_tasks.get(cid) is asyncio.current_task():
                del self._restart_tasks[cid]
                c2 = self.store.find(cid)
                if c2 is not None and c2.state.restarting:
                    c2.state.restarting = False
                    await asyncio.to_thread(self.store.save, c2)

    # --- stop, kill, wait -----------------------------------------------------------------

    async def kill(self, ref: str, sig: str | int | None = None) -> None:
        c = self.store.get(ref)
        n = parse_signal(sig)
        if c.state.status not in ("running", "paused"):
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        if n in (signal_mod.SIGKILL, signal_mod.SIGTERM, signal_mod.SIGINT):
            c.has_been_manually_stopped = True  # a kill is a stop for restart policies
            self._cancel_restart(c.id)
        await self.sup.kill(c.id, n)
        self.on_event("kill", c, {"signal": str(n)})

    def _cancel_restart(self, cid: str) -> None:
        task = self._restart_tasks.pop(cid, None)
        if task is not None:
            task.cancel()

    async def stop(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.store.get(ref)
        self._cancel_restart(c.id)
        if c.state.status not in ("running", "paused"):
            if c.state.restarting:
                c.has_been_manually_stopped = True
                await asyncio.to_thread(self.store.save, c)
                return
            raise NotModified("container already stopped")
        config = self._config(c)
        c.has_been_manually_stopped = True
        await asyncio.to_thread(self.store.save, c)
        stop_signal = parse_signal(sig or config.stop_signal or None, signal_mod.SIGTERM)
        if timeout is None:
            timeout = config.stop_timeout if config.stop_timeout is not None \
                else DEFAULT_STOP_TIMEOUT
        done = self._exited.setdefault(c.id, asyncio.Event())
        done.clear()
        if c.state.status == "paused":
            await self.unpause(c.id)
        await self._signal(c, stop_signal)
        if timeout >= 0:
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                await self._signal(c, signal_mod.SIGKILL)
        await done.wait()
        # dockerd's order: kill, (kill), die, network disconnect, then stop; the die is
        # reported by the exit's bookkeeping, which may still be under way.
        recording = self._recording.get(c.id)
        if recording is not None:
            await asyncio.shield(recording)
        self.on_event("stop", c, {})

    async def _signal(self, c: Container, sig: int) -> None:
        """A signal of stop or rm -f, with dockerd's kill event (sent or not)."""
        self.on_event("kill", c, {"signal": str(int(sig))})
        with contextlib.suppress(KetchError):
            await self.sup.kill(c.id, sig)

    async def restart(self, ref: str, timeout: int | None = None,
                      sig: str | None = None) -> None:
        c = self.store.get(ref)
        if c.state.status in ("running", "paused"):
            await self.stop(c.id, timeout, sig)
        await self.start(c.id)
        self.on_event("restart", c, {})

    async def wait(self, ref: str, condition: str = "not-running") -> dict[str, Any]:
        """``POST /containers/{id}/wait``: how it ended, once it has (per ``condition``)."""
        if condition not in ("", "not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition}")
        c = self.store.get(ref)
        removed = self._removed.setdefault(c.id, asyncio.Event())
        exited = self._exited.setdefault(c.id, asyncio.Event())
        if condition == "removed":
            await removed.wait()
        elif condition == "next-exit" or c.state.status in ("running", "paused") \
                or c.state.restarting:
            exited.clear() if condition == "next-exit" else None
            while True:
                await exited.wait()
                c2 = self.store.find(c.id)
                if c2 is None or not c2.state.restarting:
                    break
                exited.clear()
        c = self.store.find(c.id) or c
        error = c.state.error if condition != "removed" else ""
        return {"StatusCode": c.state.exit_code,
                "Error": {"Message": error} if error else None}

    # --- remove, rename, pause --------------------------------------------------------------

    async def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        c = self.store.get(ref)
        self.health.stop(c.id)
        if c.state.status == "removing":
            raise Conflict(f"removal of container {c.id} is already in progress")
        if c.state.status in ("running", "paused") or c.state.restarting:
            if not force:
                if c.state.status == "paused":
                    raise Conflict(f'cannot remove container "/{c.name}": container is '
                                   "paused: unpause the container before removing or force "
                                   "remove")
                raise Conflict(f'cannot remove container "/{c.name}": container is running: '
                               "stop the container before removing or force remove")
            self._cancel_restart(c.id)
            c.has_been_manually_stopped = True
            done = self._exited.setdefault(c.id, asyncio.Event())
            if c.state.status in ("running", "paused"):
                done.clear()
                await self._signal(c, signal_mod.SIGKILL)
                try:
                    await asyncio.wait_for(done.wait(), 30)
                except TimeoutError:
                    raise System(f"could not kill container {c.id}") from None
            c = self.store.find(c.id) or c
        recording = self._recording.get(c.id)
        if recording is not None:
            await asyncio.shield(recording)
        c.state.status = "removing"
        # Prepared for an attach, never started: connected, and no exit to say so.
        connected = self.networks.attached(c.id) if c.id in self._prepared else []
        self._prepared.discard(c.id)
        released = c.id in self._released   # its exit did both already
        self._released.discard(c.id)
        if not released:
            with contextlib.suppress(KetchError):
                await self.sup.delete(c.id, force=True)
        await asyncio.to_thread(self._remove_files, c, release=not released)
        self._network_events("network disconnect", c, connected)
        auto = bool(c.host_config.get("AutoRemove"))
        if c.mount_points:
            from ketch.volume.planner import remove_mounts

            for err in await asyncio.to_thread(
                    remove_mounts, self._mount_points(c), self.volumes, self.volume_users,
                    remove_volumes=volumes or auto, container_id=c.id):
                log.warning("removing the volumes of %s: %s", c.id, err)
        self.execs.forget_container(c.id)
        self._exited.pop(c.id, None)
        self._locks.pop(c.id, None)
        self._removed.setdefault(c.id, asyncio.Event()).set()
        self.on_event("destroy", c, {})

    async def rename(self, ref: str, new_name: str) -> None:
        c = self.store.get(ref)
        if not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        new = check_name(new_name)
        if new == c.name:
            raise InvalidArgument("Renaming a container with the same name as its current "
                                  "name")
        old = c.name
        try:
            await asyncio.to_thread(self.store.rename, c, new)
        except Conflict as exc:
            raise Conflict(f"Error when allocating new name: {exc}") from None
        self.networks.renamed(c)
        self.on_event("rename", c, {"oldName": f"/{old}"})

    def _runtime(self) -> Any:
        from ketch.runtime.container import Runtime

        return Runtime(os.path.join(self.opts.exec_root, "runtime"))

    async def pause(self, ref: str) -> None:
        c = self.store.get(ref)
        if c.state.status == "paused":
            raise Conflict(f"Container {c.id} is already paused")
        if c.state.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        await asyncio.to_thread(self._runtime().pause, c.id)
        self.health.pause(c.id)
        c.state.status = "paused"
        await asyncio.to_thread(self.store.save, c)
        self.on_event("pause", c, {})

    async def unpause(self, ref: str) -> None:
        c = self.store.get(ref)
        if c.state.status != "paused":
            raise Conflict(f"Container {c.id} is not paused")
        await asyncio.to_thread(self._runtime().resume, c.id)
        self.health.resume(c.id)
        c.state.status = "running"
        await asyncio.to_thread(self.store.save, c)
        self.on_event("unpause", c, {})

    async def top(self, ref: str, ps_args: str = "-ef") -> dict[str, Any]:
        """``docker top``: the host's ``ps`` filtered to the container's processes."""
        c = self.store.get(ref)
        if c.state.status not in ("running", "paused"):
            raise Conflict(f"Container {c.id} is not running")
        pids = set(await asyncio.to_thread(self._runtime().pids, c.id))
        out = await asyncio.to_thread(
            subprocess.run, ["ps", *(ps_args.split() or ["-ef"])], capture_output=True,
            text=True, check=False)
        if out.returncode != 0:
            # dockerd: "ps: " and the first line ps wrote (its usage text follows it)
            lines = out.stderr.strip().splitlines()
            raise InvalidArgument(f"ps: {lines[0] if lines else f'exit status {out.returncode}'}")
        lines = out.stdout.splitlines()
        if not lines:
            raise System("ps printed nothing")
        titles = lines[0].split()
        try:
            pid_col = titles.index("PID")
        except ValueError:
            raise InvalidArgument("Couldn't find PID field in ps output") from None
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pid_col and fields[pid_col].isdigit() \
                    and int(fields[pid_col]) in pids:
                procs.append(fields)
        return {"Titles": titles, "Processes": procs}

    # --- views ------------------------------------------------------------------------------

    def inspect(self, ref: str, *, size: bool = False) -> dict[str, Any]:
        c = self.store.get(ref)
        # dockerd sets the paths when a start first makes the files (and the log).
        made = c.has_been_started or bool(c.state.error) or c.id in self._prepared
        d = self._etc_dir(c)
        out: dict[str, Any] = {
            "Id": c.id, "Created": c.created, "Path": c.path, "Args": c.args,
            "State": c.state.to_docker(), "Image": c.image_id,
            "ResolvConfPath": os.path.join(d, "resolv.conf") if made else "",
            "HostnamePath": os.path.join(d, "hostname") if made else "",
            "HostsPath": os.path.join(d, "hosts") if made else "",
            # dockerd keeps the local driver's file private: no LogPath.
            "LogPath": "" if not made or self._host_config(c).log_config.type == "local"
            else self.log_path(c), "Name": f"/{c.name}",
            "RestartCount": c.restart_count, "Driver": self.images.snapshotter_name,
            "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
            "ExecIDs": c.exec_ids or None, "HostConfig": c.host_config,
            "GraphDriver": {"Data": {"MergedDir": self._rootfs(c.id)},
                            "Name": self.images.snapshotter_name},
            "Mounts": c.mounts, "Config": c.config, "NetworkSettings": c.network_settings,
        }
        if size:
            out["SizeRw"], out["SizeRootFs"] = self._sizes(c)
        return out

    def _sizes(self, c: Container) -> tuple[int, int]:
        rw = 0
        try:
            rw = int(self.images.snapshotter.usage(c.id).content)    # dockerd's SizeRw
        except (KetchError, AttributeError, OSError):
            rw = 0
        image_size = 0
        with contextlib.suppress(KetchError):
            image_size = self.images.get(c.image_id).size
        return rw, rw + image_size

    def status_text(self, c: Container, now: float | None = None) -> str:
        """docker ps's STATUS: "Up 3 minutes", "Exited (0) 2 hours ago", "Created"."""
        now = time.time() if now is None else now
        s = c.state
        if s.restarting:
            return (f"Restarting ({s.exit_code}) "
                    f"{human_duration(now - parse_rfc3339(s.finished_at))} ago")
        if s.status in ("running", "paused"):
            text = f"Up {human_duration(now - parse_rfc3339(s.started_at))}"
            if s.status == "paused":
                return text + " (Paused)"       # dockerd shows no health when paused
            if s.health:
                status = s.health.get("Status", "")
                text += f" (health: {status})" if status == "starting" else f" ({status})"
            return text
        if s.status == "removing":
            return "Removal In Progress"
        if s.status == "dead":
            return "Dead"
        if s.finished_at == ZERO_TIME:
            return "Created"
        return f"Exited ({s.exit_code}) {human_duration(now - parse_rfc3339(s.finished_at))} ago"

    def summary(self, c: Container, *, size: bool = False) -> dict[str, Any]:
        hc = c.host_config
        out: dict[str, Any] = {
            "Id": c.id, "Names": [f"/{c.name}"], "Image": c.image, "ImageID": c.image_id,
            "Command": _ps_command(c.path, c.args),
            "Created": int(parse_rfc3339(c.created)),
            "Ports": ps_ports(c.network_settings),
            "Labels": (c.config.get("Labels") or {}), "State": c.state.status,
            "Status": self.status_text(c),
            "HostConfig": {"NetworkMode": hc.get("NetworkMode", "")},
            "NetworkSettings": {"Networks": c.network_settings.get("Networks", {})},
            "Mounts": c.mounts,
        }
        if size:
            out["SizeRw"], out["SizeRootFs"] = self._sizes(c)
        return out

    def ps(self, *, all: bool = False, limit: int = -1, size: bool = False,
             filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        from ketch.engine.filters import container_filter

        match = container_filter(filters or {}, self.store)
        rows = sorted(self.store.all(), key=lambda c: c.created, reverse=True)
        if limit > 0:
            all = True
        out = []
        for c in rows:
            if not all and c.state.status not in ("running", "paused") \
                    and not c.state.restarting and not (filters or {}).get("status"):
                continue
            if not match(c):
                continue
            out.append(self.summary(c, size=size))
            if 0 < limit <= len(out):
                break
        return out

    async def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        from ketch.engine.filters import prune_filter

        match = prune_filter(filters or {})
        deleted: list[str] = []
        reclaimed = 0
        for c in list(self.store.all()):
            if c.state.status in ("running", "paused") or c.state.restarting or not match(c):
                continue
            rw, _ = self._sizes(c)
            try:
                await self.remove(c.id)
            except KetchError as exc:
                log.warning("prune: removing %s failed: %s", c.id, exc)
                continue
            deleted.append(c.id)
            reclaimed += rw
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    # --- streams: attach, logs, resize ----------------------------------------------------

    async def attach(self, ref: str, sock: Any, *, stdin: bool, stdout: bool, stderr: bool,
                     detach_keys: str | None = None) -> None:
        """Hand a hijacked connection to the supervisor (it owns a copy from then on).

        Call ``ready_for_attach`` first, before the hijack: the client starts the
        container as soon as it has the 101 answer.
        """
        c = self.attachable(ref)
        if c.id not in self._prepared and c.state.status in ("created", "exited"):
            return  # it could not be prepared: the stream just ends, start says why
        await self.sup.attach(c.id, sock, stdin=stdin, stdout=stdout, stderr=stderr,
                              detach_keys=parse_detach_keys(detach_keys))

    async def ready_for_attach(self, ref: str) -> Container:
        """A created container is made to exist in the supervisor (stopped before the
        user's program) so its output can be attached before it starts."""
        c = self.attachable(ref)
        if c.state.status == "running" and c.id not in self._starting:
            await self._settle_ended(c)
        async with self._lock(c.id):
            await self._exit_recorded(c.id)
            if c.state.status in ("created", "exited") and c.id not in self._prepared:
                try:
                    await self._prepare(c)
                except KetchError:
                    # As with dockerd, the attach itself succeeds (the stream just
                    # ends); the start that follows reports why it cannot run.
                    with contextlib.suppress(KetchError):
                        await self.sup.delete(c.id, force=True)
                    await asyncio.to_thread(self._release, c)
        return c

    async def _settle_ended(self, c: Container) -> None:
        """A "running" container whose program has ended, its exit not recorded yet
        (the supervisor's event is on its way): wait for the record, so that the attach
        is one to an exited container, which streams its next run (dockerd's attach
        to an exited container waits for the next start). docker-compose v1's ``run``
        attaches right after its start, then starts again what it finds exited."""
        try:
            info = await self.sup.state(c.id)
        except KetchError:
            return
        ended = info.exit is not None or info.status == "stopped"
        if not ended and not info.drained:
            return
        # Drained, not reaped yet: it is exiting (or it closed its stdio and lives on,
        # and is then attached as a running one after the wait).
        done = self._exited.setdefault(c.id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 10 if ended else 2)

    async def _exit_recorded(self, cid: str) -> None:
        """Wait for the cleanup of an exit that is under way: a container is "exited"
        before its bundle is dropped and its rootfs unmounted, and a start or an attach
        (docker-compose v1's ``run`` does both right after an exit) must prepare it
        again only then, not while the cleanup removes what it makes."""
        recording = self._recording.get(cid)
        if recording is not None:
            await asyncio.shield(recording)

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def attachable(self, ref: str) -> Container:
        """The container, if an attach can be set up (checked before the hijack). An
        exited one is attached as a created one (``docker start -a``: attach, then start)."""
        c = self.store.get(ref)
        if c.state.restarting:
            raise Conflict(f"container {ref} is restarting, wait until the container is "
                           "running")          # dockerd's words
        if c.state.status not in ("created", "running", "paused", "exited"):
            raise Conflict(f"container {ref} is {c.state.status}: cannot attach to it")
        return c

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.store.get(ref)
        if c.state.status not in ("running", "paused"):
            raise Conflict(f"Container {c.id} is not running")
        await self.sup.resize(c.id, height, width)

    def exit_event(self, cid: str) -> asyncio.Event:
        """Set at the container's next exit (a logs -f follower stops there)."""
        return self._exited.setdefault(cid, asyncio.Event())

    def in_use_by(self, image_id: str) -> list[str]:
        return [c.id for c in self.store.all() if c.image_id == image_id]


# --- helpers ----------------------------------------------------------------------------------


def _stopped_health(health: dict[str, Any] | None) -> dict[str, Any] | None:
    """A container that is not running is unhealthy (dockerd), its probe log kept."""
    if health is None:
        return None
    return {**health, "Status": "unhealthy"}


def _familiar(name: str) -> str:
    from ketch.image.reference import normalize

    try:
        return normalize(name).familiar()
    except KetchError:
        return name


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _make_workdir(rootfs: str, workdir: str) -> None:
    """dockerd's SetupWorkingDirectory: the missing part of the path, root's, 0755, with
    the image's symlinks followed inside the container's filesystem."""
    from ketch.runtime.rootfs import secure_join

    path = secure_join(rootfs, workdir)
    if not os.path.isdir(path):
        old = os.umask(0o022)
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        finally:
            os.umask(old)


def _init_layer_files(rootfs: str, workdir: str) -> None:
    """What dockerd's init layer adds to every container: an empty /.dockerenv (tools
    look for it) and /etc/mtab -> /proc/mounts; and the working directory, for a
    container created before it was asked for (a start after a restore). They are
    left out of diff and commit (engine.files.RUNTIME_PATHS), as that layer is."""
    env = os.path.join(rootfs, ".dockerenv")
    if not os.path.lexists(env):
        os.close(os.open(env, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755))
        os.chmod(env, 0o755)
    etc = os.path.join(rootfs, "etc")
    if os.path.isdir(etc) and not os.path.islink(etc) and \
            not os.path.lexists(os.path.join(etc, "mtab")):
        os.symlink("/proc/mounts", os.path.join(etc, "mtab"))
    if workdir.strip("/"):
        _make_workdir(rootfs, workdir)


def _ps_command(path: str, args: list[str]) -> str:
    """``ps``' COMMAND as dockerd 20.10 builds it: the path, then the arguments, each
    one with a space in single quotes as it is (checked: ``sh -c 'echo a b'``)."""
    joined = " ".join(f"'{a}'" if " " in a else a for a in args)
    return f"{path} {joined}" if joined else path


def _exit_code_of_start_error(text: str) -> int:
    """The exit code dockerd records for a container that could not start."""
    low = text.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return 127
    if "permission denied" in low or "is a directory" in low:
        return 126
    return 128


def _start_error(exc: KetchError) -> KetchError:
    """The runtime's failure worded as dockerd's (the docker CLI reads 126/127 from it)."""
    if getattr(exc, "not_runtime", False):
        return exc
    msg = (f"failed to create task for container: failed to create shim task: OCI runtime "
           f"create failed: {exc}: unknown")
    if isinstance(exc, (InvalidArgument, NotFound)):
        return InvalidArgument(msg)
    return System(msg)


def _mount_id(path: str) -> int | None:
    """The id of the mount ``path`` is on (its root, if something is mounted there)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    return None


def _check_endpoint_addresses(networks: dict[str, dict[str, Any]]) -> None:
    """dockerd's verifyNetworkingConfig at create: static addresses must parse."""
    import ipaddress

    for ep in networks.values():
        ipam = ep.get("IPAMConfig") or {}
        for key, version in (("IPv4Address", 4), ("IPv6Address", 6)):
            value = ipam.get(key)
            if not value:
                continue
            try:
                ok = ipaddress.ip_address(value).version == version
            except ValueError:
                ok = False
            if not ok:
                raise InvalidArgument(f"invalid IPv{version} address: {value}")


def _is_mounted(path: str) -> bool:
    """Whether something is mounted at ``path``: its mount differs from its parent
    directory's. As exact as mountinfo (bind mounts of the same filesystem too, which
    st_dev misses), without reading mountinfo, which grows with every container."""
    mine = _mount_id(path)
    return mine is not None and mine != _mount_id(os.path.dirname(path.rstrip("/")))


def _umount(target: str) -> None:
    from ketch.linux.syscalls import LinuxSyscalls

    LinuxSyscalls().umount2(target, 0)


def unmount_all(target: str) -> None:
    """Unmount everything stacked on ``target``."""
    import errno

    while _is_mounted(target):
        try:
            _umount(target)
        except OSError as exc:
            # Another thread released it first (an exit and a remove at once).
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise


def mount_layer(fstype: str, source: str, options: list[str], target: str,
                cwd: str | None = None) -> None:
    """One snapshot mount. With ``cwd`` the options hold paths relative to it, and the
    mount is done by mount(8) in that directory: a threaded daemon must not chdir."""
    if cwd is None:
        from ketch.linux.syscalls import LinuxSyscalls

        flags = 0
        opts = [o for o in options if o not in ("ro", "rw", "bind", "rbind")]
        if "ro" in options:
            flags |= 1  # MS_RDONLY
        if "bind" in options or "rbind" in options:
            flags |= 4096 | (16384 if "rbind" in options else 0)  # MS_BIND | MS_REC
        LinuxSyscalls().mount(source, target, None if flags & 4096 else fstype, flags,
                              ",".join(opts) or None)
        return
    out = subprocess.run(["mount", "-t", fstype, "-o", ",".join(options), source, target],
                         cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise System(f"mounting the rootfs on {target}: {out.stderr.strip()}")


def parse_detach_keys(spec: str | None) -> bytes:
    """Docker's ``--detach-keys`` ("ctrl-p,ctrl-q", "a,ctrl-@"), as bytes; the default
    is ctrl-p ctrl-q. moby's term.ToBytes rules and message."""
    if spec is None or spec == "":
        return b"\x10\x11"
    out = bytearray()
    for key in spec.split(","):
        k = key.strip()
        if len(k) == 1:
            out.append(ord(k))
            continue
        low = k.lower()
        if low.startswith("ctrl-") and len(low) == 6:
            ch = low[5]
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
                continue
            special = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if ch in special:
                out.append(special[ch])
                continue
        raise InvalidArgument(f"Invalid escape keys ({spec}) provided")
    return bytes(out)
