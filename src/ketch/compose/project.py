"""The work of each compose command, done through the Engine API.

Everything compose knows about a running application is on the engine: the
containers, networks and volumes carry compose's labels (``ketch.compose.labels``),
so each command asks the engine what exists, compares it with the model and
changes only the difference. That is how ``up`` of an unchanged project does
nothing, and how ``down`` finds what an earlier ``up`` (or ``docker compose``)
created. Works against ketchd and dockerd alike.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ketch.compose import labels as L
from ketch.compose.errors import ComposeError
from ketch.compose.graph import Graph
from ketch.compose.model import COMPLETED, HEALTHY, Project, Service
from ketch.compose.progress import Progress
from ketch.errors import Conflict, Forbidden, KetchError, NotFound

POLL = 0.1          # seconds between looks at a dependency's state (an inspect costs ~2 ms)

Builder = Callable[[Service, str], None]        # (service, image name to tag)


@dataclass
class UpOptions:
    services: list[str] = field(default_factory=list)
    build: str = "auto"             # "auto" (missing only) | "always" (--build) | "never" (--no-build)
    recreate: str = "diverged"      # "diverged" | "force" (--force-recreate) | "never" (--no-recreate)
    # for the services pulled in only as dependencies of the named ones:
    # "force" with --always-recreate-deps, "never" with --no-recreate
    recreate_deps: str = "diverged"
    renew_anon_volumes: bool = False    # -V: recreated containers get new anonymous volumes
    deps: bool = True               # False: --no-deps
    scale: dict[str, int] = field(default_factory=dict)
    start: bool = True              # False: create only (`create`, `up --no-start`)
    remove_orphans: bool = False
    timeout: int | None = None      # -t for the containers stopped on recreate
    pull: str = ""                  # "" (the services' pull_policy) | "always" | "missing" | "never"
    quiet_pull: bool = False


@dataclass
class DownOptions:
    services: list[str] = field(default_factory=list)   # down SERVICE...: these and dependents
    volumes: bool = False
    rmi: str = ""                   # "" | "local" | "all"
    remove_orphans: bool = False
    timeout: int | None = None


def _name_of(c: Mapping[str, Any]) -> str:
    names = c.get("Names") or [c.get("Name") or ""]
    return str(names[0]).lstrip("/")


def _labels(c: Mapping[str, Any]) -> dict[str, str]:
    return dict(c.get("Labels") or (c.get("Config") or {}).get("Labels") or {})


def number_of(c: Mapping[str, Any]) -> int:
    try:
        return int(_labels(c).get(L.NUMBER, "0"))
    except ValueError:
        return 0


def service_of(c: Mapping[str, Any]) -> str:
    return _labels(c).get(L.SERVICE, "")


class Compose:
    """One project on one engine."""

    def __init__(self, client: Any, project: Project, progress: Progress | None = None, *,
                 builder: Builder | None = None, puller: Callable[[str, bool], None] | None = None,
                 workers: int = -1) -> None:
        """``workers``: how many services are worked on at once (``--parallel``; -1: as
        many as are ready)."""
        self.client = client
        self.workers = workers if workers > 0 else 64
        self.project = project
        self.progress = progress or Progress(quiet=True)
        self.builder = builder
        self.puller = puller
        self._image_ids: dict[str, str] = {}
        self._recreated: set[str] = set()   # services whose containers this run replaced
        self._renew = False                 # up -V: anonymous volumes not carried over
        self._lock = threading.Lock()

    # --- what exists ----------------------------------------------------------------------

    def containers(self, services: Iterable[str] = (), *, stopped: bool = True,
                   oneoff: bool | None = False) -> list[dict[str, Any]]:
        """The project's containers (summaries), by service then number."""
        flt = [f"{L.PROJECT}={self.project.name}"]
        if oneoff is not None:
            flt.append(f"{L.ONEOFF}={'True' if oneoff else 'False'}")
        wanted = set(services)
        out = [c for c in self.client.containers(all=stopped, filters={"label": flt})
               if not wanted or service_of(c) in wanted]
        out.sort(key=lambda c: (service_of(c), number_of(c), _name_of(c)))
        return out

    def graph(self, services: Iterable[Service] | None = None) -> Graph:
        svcs = list(self.project.services.values()) if services is None else list(services)
        names = {s.name for s in svcs}
        return Graph({s.name: [d.service for d in s.depends_on if d.service in names] +
                      [r for r in s.references() if r in names] for s in svcs})

    def selection(self, names: Sequence[str], *, deps: bool = True) -> list[Service]:
        """The named services (all when none), with what they depend on unless ``deps`` is off."""
        chosen = self.project.select(list(names))
        if names and deps:
            full = self.graph()
            keep = full.with_dependencies(s.name for s in chosen)
            chosen = [s for n, s in self.project.services.items() if n in keep]
        return chosen

    def container_name(self, svc: Service, number: int) -> str:
        return svc.container_name or f"{self.project.name}-{svc.name}-{number}"

    def _primary_names(self) -> dict[str, str]:
        """For links, volumes_from and ``service:`` modes: each service's first container."""
        out: dict[str, str] = {}
        existing: dict[str, list[str]] = {}
        for c in self.containers():
            existing.setdefault(service_of(c), []).append(_name_of(c))
        for name, svc in self.project.services.items():
            have = existing.get(name)
            out[name] = have[0] if have else self.container_name(svc, 1)
        return out

    # --- networks and volumes ---------------------------------------------------------------

    def ensure_networks(self, services: Iterable[Service]) -> None:
        used: set[str] = set()
        for s in services:
            used.update(s.networks)
        for key, net in sorted(self.project.networks().items()):
            if key not in used:
                continue
            name = self.project.network_name(key)
            if net.get("external"):
                try:
                    self.client.network_inspect(name)
                except NotFound:
                    raise ComposeError(f"network {name} declared as external, but could not "
                                       "be found") from None
                continue
            found = [n for n in self.client.networks(filters={"name": [name]})
                     if n.get("Name") == name]
            if found:
                labels = found[0].get("Labels") or {}
                owner = labels.get(L.PROJECT)
                if owner is None:
                    self.progress.warn(f"a network with name {name} exists but was not created "
                                       "by compose.\nSet `external: true` to use an existing "
                                       "network")
                elif owner != self.project.name:
                    self.progress.warn(f"a network with name {name} exists but was not created "
                                       f'for project "{self.project.name}".\nSet `external: '
                                       "true` to use an existing network")
                if labels.get(L.NETWORK, "") != key:
                    raise ComposeError(f"network {name} was found but has incorrect label "
                                       f'{L.NETWORK} set to "{labels.get(L.NETWORK, "")}"')
                continue
            self.progress("Network", name, "Creating")
            ipam = net.get("ipam") or {}
            options: dict[str, Any] = {
                "Driver": net.get("driver") or "bridge",
                "Options": dict(net.get("driver_opts") or {}),
                "Internal": bool(net.get("internal")),
                "Attachable": bool(net.get("attachable")),
                "EnableIPv6": bool(net.get("enable_ipv6")),
                "Labels": {**dict(net.get("labels") or {}), L.NETWORK: key,
                           L.PROJECT: self.project.name, L.VERSION: L.COMPOSE_VERSION},
            }
            if ipam:
                options["IPAM"] = {
                    "Driver": ipam.get("driver") or "default",
                    "Options": dict(ipam.get("options") or {}),
                    "Config": [{k2: v for k, k2 in (("subnet", "Subnet"), ("gateway", "Gateway"),
                                                    ("ip_range", "IPRange"))
                                if (v := c.get(k))}
                               | ({"AuxiliaryAddresses": c["aux_addresses"]}
                                  if c.get("aux_addresses") else {})
                               for c in ipam.get("config") or []]}
            try:
                self.client.network_create(name, options)
            except Conflict:
                pass        # created meanwhile by another compose: the same network
            self.progress("Network", name, "Created")

    def ensure_volumes(self, services: Iterable[Service]) -> None:
        used: set[str] = set()
        for s in services:
            used.update(s.named_volumes)
        for key, vol in sorted(self.project.volumes().items()):
            if key not in used:
                continue
            name = self.project.volume_name(key)
            try:
                found = self.client.volume_inspect(name)
            except NotFound:
                found = None
            if vol.get("external"):
                if found is None:
                    raise ComposeError(f'external volume "{name}" not found')
                continue
            if found is not None:
                if (found.get("Labels") or {}).get(L.PROJECT) != self.project.name:
                    self.progress.warn(f'volume "{name}" already exists but was not created by '
                                       "Docker Compose. Use `external: true` to use an "
                                       "existing volume")
                continue
            self.progress("Volume", name, "Creating")
            self.client.volume_create({
                "Name": name, "Driver": vol.get("driver") or "local",
                "DriverOpts": dict(vol.get("driver_opts") or {}),
                "Labels": {**dict(vol.get("labels") or {}), L.VOLUME: key,
                           L.PROJECT: self.project.name, L.VERSION: L.COMPOSE_VERSION}})
            self.progress("Volume", name, "Created")

    # --- images ----------------------------------------------------------------------------

    def _image_id(self, image: str) -> str | None:
        try:
            return str(self.client.image_inspect(image).get("Id") or "")
        except NotFound:
            return None

    def ensure_images(self, services: Iterable[Service], *, build: str = "auto",
                      pull: str = "", quiet_pull: bool = False) -> None:
        for svc in services:
            image = svc.image
            policy = pull or svc.pull_policy
            have = self._image_id(image)
            if svc.build is not None and build != "never" and \
                    (build == "always" or policy == "build" or have is None):
                if self.builder is None:
                    raise ComposeError(f"service {svc.name!r} needs a build, and none can be "
                                       "run here")
                self.builder(svc, image)
                have = self._image_id(image)
            elif policy in ("always", "daily", "weekly") or \
                    (have is None and policy not in ("never", "build")):
                if svc.build is not None and have is None and policy != "always":
                    raise ComposeError(f"image {image} for service {svc.name} not found; "
                                       "build it first (--build or `compose build`)"
                                       if build == "never" else
                                       f"service {svc.name!r} has no image to run")
                self.pull_image(svc, quiet_pull)
                have = self._image_id(image)
            if have is None:
                raise ComposeError(f"No such image: {image}")
            with self._lock:
                self._image_ids[svc.name] = have

    def pull_image(self, svc: Service, quiet: bool = False) -> None:
        if self.puller is None:
            raise ComposeError(f"service {svc.name!r}: pulling {svc.image} is not possible here")
        self.progress("Image", svc.image, "Pulling")
        self.puller(svc.image, quiet)
        self.progress("Image", svc.image, "Pulled")

    # --- containers ------------------------------------------------------------------------

    def _container_labels(self, svc: Service, number: int, *, oneoff: bool = False,
                          image_id: str = "") -> dict[str, str]:
        deps = ",".join(f"{d.service}:{d.condition}:{str(d.restart).lower()}"
                        for d in svc.depends_on)
        return {
            L.PROJECT: self.project.name, L.SERVICE: svc.name, L.NUMBER: str(number),
            L.ONEOFF: "True" if oneoff else "False", L.CONFIG_HASH: svc.config_hash(),
            L.WORKING_DIR: self.project.working_dir,
            L.CONFIG_FILES: ",".join(self.project.files),
            L.ENV_FILE: ",".join(self.project.env_files), L.VERSION: L.COMPOSE_VERSION,
            L.DEPENDS_ON: deps, L.IMAGE: image_id,
        }

    def create_container(self, svc: Service, number: int, *, name: str | None = None,
                         oneoff: bool = False, extra_labels: Mapping[str, str] | None = None,
                         override: Callable[[dict[str, Any]], None] | None = None,
                         use_aliases: bool = True,
                         replacing: Mapping[str, Any] | None = None) -> str:
        """``replacing``: the inspect of the container this one replaces, whose anonymous
        volumes (and the image's VOLUMEs) it takes over, so their data survives ``up``."""
        from ketch.compose import convert

        networks = {k: self.project.network_name(k) for k in self.project.networks()}
        volumes = {k: self.project.volume_name(k) for k in self.project.volumes()}
        cname = name or self.container_name(svc, number)
        inherit: list[Any] = []
        image_volumes: list[str] = []
        if replacing is not None:
            inherit = list(replacing.get("Mounts") or [])
            try:
                cfg = self.client.image_inspect(svc.image).get("Config") or {}
                image_volumes = list(cfg.get("Volumes") or {})
            except NotFound:
                pass
        spec = convert.container_spec(self.project.model, svc.name, project=self.project.name,
                                      number=number, image=svc.image, network_names=networks,
                                      volume_names=volumes,
                                      container_names=self._primary_names(), name=cname,
                                      use_aliases=use_aliases,
                                      environment=self.project.environment,
                                      inherit_mounts=inherit, image_volumes=image_volumes)
        for w in spec.warnings:
            self.progress.warn(w)
        body = spec.body
        image_id = self._image_ids.get(svc.name) or self._image_id(svc.image) or ""
        body["Labels"] = {**dict(body.get("Labels") or {}),
                          **self._container_labels(svc, number, oneoff=oneoff,
                                                   image_id=image_id),
                          **dict(extra_labels or {})}
        if override is not None:
            override(body)
        cid = str(self.client.container_create(body, name=cname)["Id"])
        try:
            for net, endpoint in spec.extra_networks:
                self.client.network_connect(net, cid, endpoint)
            for f in spec.files:
                self._inject(cid, f)
        except KetchError:
            self.client.container_remove(cid, force=True)
            raise
        return cid

    def _inject(self, cid: str, f: Any) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size = len(f.content)
            info.mode = f.mode
            info.uid, info.gid = f.uid, f.gid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(f.content))
        buf.seek(0)
        self.client.container_archive_put(cid, "/", buf, copy_uid_gid=True)

    def _diverged(self, svc: Service, c: Mapping[str, Any]) -> bool:
        lab = _labels(c)
        if lab.get(L.CONFIG_HASH) != svc.config_hash():
            return True
        want = self._image_ids.get(svc.name)
        return bool(want) and lab.get(L.IMAGE) not in (want, None, "")

    def converge(self, svc: Service, *, scale: int | None = None, recreate: str = "diverged",
                 timeout: int | None = None) -> None:
        """Bring the service's containers to the model: remove the surplus, recreate the
        out-of-date ones, create the missing ones. Starting is a later step."""
        want = svc.scale if scale is None else scale
        if svc.container_name and want > 1:
            raise ComposeError(f'service "{svc.name}" uses the custom container name '
                               f'"{svc.container_name}": it cannot be scaled to {want}')
        have = self.containers([svc.name])
        keep, surplus = have[:want], have[want:]
        for c in reversed(surplus):
            self._remove(c, timeout=timeout)
        for c in keep:
            name = _name_of(c)
            if recreate == "force" or (recreate == "diverged" and self._diverged(svc, c)):
                self._recreate(svc, c, timeout=timeout)
            elif c.get("State") == "running":
                self.progress("Container", name, "Running")
        used = {number_of(c) for c in keep}
        n = 1
        for _ in range(want - len(keep)):
            while n in used:
                n += 1
            used.add(n)
            name = self.container_name(svc, n)
            self.progress("Container", name, "Creating")
            self.create_container(svc, n)
            self.progress("Container", name, "Created")

    def _recreate(self, svc: Service, c: Mapping[str, Any], *, timeout: int | None) -> None:
        """compose v2's order: stop the old one, move it aside, create the new one under
        its name, remove the old one; a failure puts the old one back."""
        old_id = str(c["Id"])
        name = _name_of(c)
        number = number_of(c) or 1
        self.progress("Container", name, "Recreate")
        if c.get("State") in ("running", "paused", "restarting"):
            self.client.container_stop(old_id, timeout=self._timeout(svc, timeout))
        aside = f"{old_id[:12]}_{name}"
        old = self.client.container_inspect(old_id)
        self.client.container_rename(old_id, aside)
        try:
            self.create_container(svc, number, name=name, extra_labels={L.REPLACE: name},
                                  replacing=None if self._renew else old)
        except BaseException:
            self.client.container_rename(old_id, name)
            raise
        self.client.container_remove(old_id, force=True)
        with self._lock:
            self._recreated.add(svc.name)
        self.progress("Container", name, "Recreated")

    @staticmethod
    def _timeout(svc: Service, timeout: int | None) -> int | None:
        if timeout is not None:
            return timeout
        return None     # the container's StopTimeout (from stop_grace_period) applies

    def _remove(self, c: Mapping[str, Any], *, timeout: int | None = None,
                volumes: bool = False) -> None:
        name = _name_of(c)
        if c.get("State") in ("running", "paused", "restarting"):
            self.progress("Container", name, "Stopping")
            self.client.container_stop(str(c["Id"]), timeout=timeout)
            self.progress("Container", name, "Stopped")
        self.progress("Container", name, "Removing")
        try:
            self.client.container_remove(str(c["Id"]), force=True, volumes=volumes)
        except NotFound:
            pass
        self.progress("Container", name, "Removed")

    # --- starting, in dependency order -----------------------------------------------------

    def wait_dependencies(self, svc: Service, among: set[str] | None = None) -> None:
        """Wait for each dependency's condition (``among``: only those services)."""
        for dep in svc.depends_on:
            if among is not None and dep.service not in among:
                continue
            target = self.project.services.get(dep.service)
            if target is None:
                if dep.required:
                    raise ComposeError(f'service "{svc.name}" depends on undefined service '
                                       f'"{dep.service}": invalid compose project')
                self.progress.warn(f"optional dependency {dep.service!r} of {svc.name!r} "
                                   "is not in the project")
                continue
            for c in self.containers([dep.service]):
                try:
                    self.wait_condition(target, c, dep.condition, required=dep.required)
                except ComposeError as exc:
                    if dep.required:
                        raise
                    # compose's words for a dependency the service can do without
                    self.progress.warn(f'optional dependency "{dep.service}" failed to '
                                       f"start: {exc}")

    def wait_condition(self, svc: Service, c: Mapping[str, Any], condition: str, *,
                       required: bool = True, deadline: float | None = None) -> None:
        name = _name_of(c)
        cid = str(c["Id"])
        if condition not in (HEALTHY, COMPLETED):
            return
        self.progress("Container", name, "Waiting")
        while True:
            info = self.client.container_inspect(cid)
            state = info.get("State") or {}
            status = state.get("Status")
            if condition == HEALTHY:
                health = state.get("Health")
                if status in ("exited", "dead"):
                    # before the health: an exited container's health says little
                    self.progress("Container", name, "Error", error=True)
                    raise ComposeError(f"dependency failed to start: container {name} exited "
                                       f"({state.get('ExitCode', 0)})")
                if health is None:
                    raise ComposeError(f"dependency failed to start: container {name} has no "
                                       "healthcheck configured")
                if health.get("Status") == "healthy":
                    self.progress("Container", name, "Healthy")
                    return
                if health.get("Status") == "unhealthy":
                    self.progress("Container", name, "Error", error=True)
                    raise ComposeError(f"dependency failed to start: container {name} is "
                                       "unhealthy")
            elif status in ("exited", "dead"):
                code = int(state.get("ExitCode") or 0)
                if code != 0:
                    self.progress("Container", name, "Error", error=True)
                    raise ComposeError(f'service "{svc.name}" didn\'t complete successfully: '
                                       f"exit {code}")
                self.progress("Container", name, "Exited")
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(name)
            time.sleep(POLL)

    def start_service(self, svc: Service, *, wait_deps: bool = True,
                      among: set[str] | None = None) -> None:
        if wait_deps:
            self.wait_dependencies(svc, among)
        # `depends_on: {x: {restart: true}}`: a dependency replaced by this run takes its
        # dependents' running containers along (the spec: "after it updates the dependency").
        bounce = svc.name not in self._recreated and any(
            d.restart and d.service in self._recreated for d in svc.depends_on)
        for c in self.containers([svc.name]):
            if c.get("State") in ("running", "restarting"):
                if bounce:
                    name = _name_of(c)
                    self.progress("Container", name, "Restarting")
                    self.client.container_restart(str(c["Id"]))
                    self.progress("Container", name, "Restarted")
                continue
            name = _name_of(c)
            self.progress("Container", name, "Starting")
            if c.get("State") == "paused":
                self.client.container_unpause(str(c["Id"]))
            else:
                self.client.container_start(str(c["Id"]))
            self.progress("Container", name, "Started")

    def up(self, opts: UpOptions) -> list[Service]:
        services = self.selection(opts.services, deps=opts.deps)
        graph = self.graph(services)
        orphans = self.orphans()
        if orphans:
            if opts.remove_orphans:
                for c in orphans:
                    self._remove(c, timeout=opts.timeout)
            else:
                self._orphan_warning(orphans)
        self.ensure_images(services, build=opts.build, pull=opts.pull,
                           quiet_pull=opts.quiet_pull)
        self.ensure_networks(services)
        self.ensure_volumes(services)
        by_name = {s.name: s for s in services}
        named = set(opts.services) or set(by_name)
        self._renew = opts.renew_anon_volumes
        graph.walk(workers=self.workers, step=lambda n: self.converge(
            by_name[n], scale=opts.scale.get(n), timeout=opts.timeout,
            recreate=opts.recreate if n in named else opts.recreate_deps))
        if opts.start:
            # --no-deps: what was left out is not waited for either
            among = None if opts.deps else set(by_name)
            graph.walk(lambda n: self.start_service(by_name[n], among=among),
                       workers=self.workers)
        return services

    def orphans(self) -> list[dict[str, Any]]:
        if self.project.from_labels:
            return []
        known = set(self.project.services) | set(self.project.disabled)
        return [c for c in self.containers(oneoff=None) if service_of(c) not in known]

    def _orphan_warning(self, orphans: Sequence[Mapping[str, Any]]) -> None:
        names = " ".join(_name_of(c) for c in orphans)
        self.progress.warn(f"Found orphan containers ([{names}]) for this project. If you "
                           "removed or renamed this service in your compose file, you can "
                           "run this command with the --remove-orphans flag to clean it up.")

    def wait_ready(self, services: Iterable[Service], timeout: float | None = None) -> None:
        """``up --wait``: every container running, and healthy where it has a healthcheck;
        one that exits fails the wait unless a dependent waits for its completion."""
        deadline = None if timeout is None else time.monotonic() + timeout
        completes = {d.service for s in self.project.services.values() for d in s.depends_on
                     if d.condition == COMPLETED}
        svcs = list(services)
        errors: list[BaseException] = []

        def one(svc: Service, c: Mapping[str, Any]) -> None:
            try:
                if svc.name in completes:
                    self.wait_condition(svc, c, COMPLETED, deadline=deadline)
                elif svc.has_healthcheck:
                    self.wait_condition(svc, c, HEALTHY, deadline=deadline)
                else:
                    state = (self.client.container_inspect(str(c["Id"])).get("State") or {})
                    if state.get("Status") in ("exited", "dead"):
                        raise ComposeError(f"container {_name_of(c)} exited "
                                           f"({state.get('ExitCode', 0)})")
                    self.progress("Container", _name_of(c), "Running")
            except BaseException as exc:    # noqa: BLE001 - handed to the caller below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(s, c), daemon=True)
                   for s in svcs for c in self.containers([s.name])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for exc in errors:
            if isinstance(exc, TimeoutError):
                raise ComposeError(f"application not healthy after {timeout:g}s" if timeout
                                   else "application not healthy") from None
        if errors:
            raise errors[0]

    # --- stopping and removing -------------------------------------------------------------

    def down(self, opts: DownOptions) -> None:
        # one-off (`run`) containers stay unless orphans go too, as compose's down leaves
        # them (and the network they hold then stays, "still in use")
        everything = self.containers(oneoff=None if opts.remove_orphans else False)
        known = set(self.project.services) | set(self.project.disabled)
        if self.project.from_labels:
            known |= {service_of(c) for c in everything}
        orphans = [c for c in everything if service_of(c) not in known]
        if orphans and not opts.remove_orphans:
            self._orphan_warning(orphans)
            everything = [c for c in everything if service_of(c) in known]
        if opts.services:
            # compose's `down SERVICE...`: the services and whatever depends on them; the
            # networks and volumes below then go only when nothing uses them any more
            for n in opts.services:
                if not self.project.from_labels:
                    self.project.service(n)
            targets = self.graph().with_dependents(opts.services) | set(opts.services)
            everything = [c for c in everything if service_of(c) in targets or
                          (opts.remove_orphans and service_of(c) not in known)]
        by_service: dict[str, list[dict[str, Any]]] = {}
        for c in everything:
            by_service.setdefault(service_of(c), []).append(c)
        deps: dict[str, list[str]] = {s: [] for s in by_service}
        for s, cs in by_service.items():
            svc = self.project.services.get(s)
            if svc is not None:
                deps[s] = [d.service for d in svc.depends_on if d.service in by_service]
            else:   # known from its labels only: "db:service_healthy:false,..."
                for c in cs:
                    for item in _labels(c).get(L.DEPENDS_ON, "").split(","):
                        dep = item.split(":", 1)[0]
                        if dep in by_service and dep not in deps[s]:
                            deps[s].append(dep)

        def remove_all(s: str) -> None:
            for c in by_service[s]:
                self._remove(c, timeout=opts.timeout, volumes=opts.volumes)

        Graph(deps).walk(remove_all, reverse=True, workers=self.workers)
        flt = {"label": [f"{L.PROJECT}={self.project.name}"]}
        net_names = [self.project.network_name(k) for k, n in
                     sorted(self.project.networks().items()) if not n.get("external")]
        if self.project.from_labels:
            net_names = sorted(str(n["Name"]) for n in self.client.networks(filters=flt))
        for name in net_names:
            found = [n for n in self.client.networks(filters={"name": [name]})
                     if n.get("Name") == name]
            if not found:
                continue
            try:
                attached = self.client.network_inspect(name).get("Containers") or {}
            except NotFound:
                continue
            if attached:        # a one-off container, or another project's: it stays
                self.progress("Network", name, "Resource is still in use")
                continue
            self.progress("Network", name, "Removing")
            try:
                self.client.network_remove(name)
            except NotFound:
                pass
            except (Conflict, Forbidden):
                self.progress("Network", name, "Resource is still in use")
                continue
            self.progress("Network", name, "Removed")
        if opts.volumes:
            vol_names = [self.project.volume_name(k) for k, v in
                         sorted(self.project.volumes().items()) if not v.get("external")]
            if self.project.from_labels:
                vol_names = sorted(str(v["Name"]) for v in self.client.volumes(filters=flt))
            for name in vol_names:
                try:
                    self.client.volume_inspect(name)
                except NotFound:
                    continue
                self.progress("Volume", name, "Removing")
                try:
                    self.client.volume_remove(name)
                except NotFound:
                    pass
                except Conflict:
                    self.progress("Volume", name, "Resource is still in use")
                    continue
                self.progress("Volume", name, "Removed")
        if opts.rmi:
            for image in self.images_to_remove(opts.rmi):
                self.progress("Image", image, "Removing")
                try:
                    self.client.image_remove(image)
                except NotFound:
                    continue
                except Conflict as exc:
                    self.progress.warn(str(exc))
                    continue
                self.progress("Image", image, "Removed")

    def images_to_remove(self, mode: str) -> list[str]:
        out: list[str] = []
        for svc in self.project.services.values():
            if mode == "local" and svc.spec.get("image"):
                continue        # `local`: only the images compose named itself
            if svc.image not in out and self._image_id(svc.image) is not None:
                out.append(svc.image)
        return out

    def stop(self, names: Sequence[str] = (), timeout: int | None = None) -> None:
        services = self.project.select(list(names))
        graph = self.graph(services)
        by_name = {s.name: s for s in services}

        def one(n: str) -> None:
            for c in self.containers([n], stopped=False):
                name = _name_of(c)
                self.progress("Container", name, "Stopping")
                self.client.container_stop(str(c["Id"]), timeout=timeout)
                self.progress("Container", name, "Stopped")

        graph.walk(lambda n: one(by_name[n].name), reverse=True, workers=self.workers)

    def start(self, names: Sequence[str] = ()) -> None:
        services = self.project.select(list(names))
        graph = self.graph(services)
        by_name = {s.name: s for s in services}

        def one(n: str) -> None:
            svc = by_name[n]
            if svc.scale > 0 and not self.containers([n]):
                raise ComposeError(f'service "{n}" has no container to start')
            self.start_service(svc)

        graph.walk(one, workers=self.workers)

    def restart(self, names: Sequence[str] = (), timeout: int | None = None,
                no_deps: bool = False) -> None:
        """Restart the services and, unless ``no_deps``, those that depend on them with
        ``restart: true``, each after what it depends on is back."""
        chosen = {s.name for s in self.project.select(list(names))}
        grew = bool(names) and not no_deps
        while grew:     # to a fixed point: a dependent's dependents follow it too
            grew = False
            for s in self.project.services.values():
                if s.name not in chosen and any(d.restart and d.service in chosen
                                                for d in s.depends_on):
                    chosen.add(s.name)
                    grew = True
        services = [s for n, s in self.project.services.items() if n in chosen]
        graph = self.graph(services)
        by_name = {s.name: s for s in services}

        def one(n: str) -> None:
            svc = by_name[n]
            self.wait_dependencies(svc)
            for c in self.containers([n]):
                name = _name_of(c)
                self.progress("Container", name, "Restarting")
                self.client.container_restart(str(c["Id"]), timeout=timeout)
                self.progress("Container", name, "Started")

        graph.walk(one, workers=self.workers)

    def each(self, names: Sequence[str], action: str, fn: Callable[[str], None], *,
             stopped: bool = False, done: str = "") -> int:
        """``kill``, ``pause``, ``unpause``: the action on every container of the services."""
        services = self.project.select(list(names))
        count = 0
        for c in self.containers([s.name for s in services], stopped=stopped):
            name = _name_of(c)
            self.progress("Container", name, action)
            fn(str(c["Id"]))
            self.progress("Container", name, done or action)
            count += 1
        return count

    def remove_stopped(self, names: Sequence[str] = (), *, volumes: bool = False,
                       include_running: bool = False) -> list[dict[str, Any]]:
        services = self.project.select(list(names))
        out = []
        for c in self.containers([s.name for s in services], oneoff=None):
            if c.get("State") in ("running", "paused", "restarting") and not include_running:
                continue
            out.append(c)
        for c in out:
            self._remove(c, volumes=volumes)
        return out
