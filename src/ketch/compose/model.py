"""The typed view of a canonical compose model that the commands work with.

``normalize`` gives the canonical model (the shape ``config --format json``
prints); this module reads from it what orchestration needs: which service
waits for which and how, how many containers, which image, which networks and
volumes the engine must have. What a container is created with stays in the
canonical service mapping, which ``convert`` turns into the Engine API's body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ketch.compose.errors import ComposeError

STARTED = "service_started"
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
CONDITIONS = (STARTED, HEALTHY, COMPLETED)


@dataclass(frozen=True)
class Dependency:
    service: str
    condition: str = STARTED
    required: bool = True
    restart: bool = False


@dataclass
class Service:
    name: str
    spec: dict[str, Any]                   # the canonical service mapping
    project: str

    @property
    def image(self) -> str:
        """The image the containers run: ``image:``, else the one a build tags,
        ``<project>-<service>`` as compose v2 names it."""
        img = self.spec.get("image")
        return str(img) if img else f"{self.project}-{self.name}"

    @property
    def build(self) -> dict[str, Any] | None:
        b = self.spec.get("build")
        return dict(b) if isinstance(b, Mapping) else None

    @property
    def depends_on(self) -> list[Dependency]:
        out = []
        for name, d in sorted((self.spec.get("depends_on") or {}).items()):
            d = d or {}
            cond = d.get("condition", STARTED)
            if cond not in CONDITIONS:
                raise ComposeError(f"services.{self.name}.depends_on.{name}.condition: "
                                   f"invalid condition {cond!r}")
            out.append(Dependency(name, cond, bool(d.get("required", True)),
                                  bool(d.get("restart", False))))
        return out

    @property
    def scale(self) -> int:
        if "scale" in self.spec:
            return int(self.spec["scale"])
        replicas = (self.spec.get("deploy") or {}).get("replicas")
        return 1 if replicas is None else int(replicas)

    @property
    def container_name(self) -> str | None:
        n = self.spec.get("container_name")
        return str(n) if n else None

    @property
    def pull_policy(self) -> str:
        return str(self.spec.get("pull_policy") or "missing")

    @property
    def has_healthcheck(self) -> bool:
        hc = self.spec.get("healthcheck") or {}
        return bool(hc) and not hc.get("disable") and (hc.get("test") or ["x"])[0] != "NONE"

    @property
    def networks(self) -> list[str]:
        return sorted(self.spec.get("networks") or {})

    @property
    def named_volumes(self) -> list[str]:
        return [v["source"] for v in self.spec.get("volumes") or []
                if v.get("type") == "volume" and v.get("source")]

    def references(self) -> set[str]:
        """Services this one needs to exist first beyond ``depends_on``: ``links``,
        ``volumes_from``, ``network_mode``/``pid``/``ipc: service:x``."""
        out: set[str] = set()
        for link in self.spec.get("links") or []:
            out.add(link.split(":", 1)[0])
        for vf in self.spec.get("volumes_from") or []:
            if not vf.startswith("container:"):
                out.add(vf.split(":", 1)[0])
        for key in ("network_mode", "pid", "ipc"):
            v = self.spec.get(key) or ""
            if isinstance(v, str) and v.startswith("service:"):
                out.add(v[len("service:"):])
        return out

    def config_hash(self) -> str:
        """What ``up`` compares to decide a container is out of date: the service's
        configuration without what does not make a container different (how it is
        built or pulled, how many there are, what it waits for)."""
        spec = {k: v for k, v in self.spec.items()
                if k not in ("build", "pull_policy", "scale", "depends_on", "profiles",
                             "develop")}
        if isinstance(spec.get("deploy"), Mapping):
            spec["deploy"] = {k: v for k, v in spec["deploy"].items() if k != "replicas"}
            if not spec["deploy"]:
                # `deploy: {replicas: n}` alone says only how many: the same containers
                # as no deploy at all (or `scale: n`)
                del spec["deploy"]
        raw = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class Project:
    name: str
    working_dir: str
    files: list[str]
    model: dict[str, Any]                              # canonical
    env_files: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)   # what interpolation saw
    services: dict[str, Service] = field(default_factory=dict)
    disabled: dict[str, Service] = field(default_factory=dict)   # out of the active profiles

    @property
    def from_labels(self) -> bool:
        """No compose file: ``-p name`` alone, the project known only by what the engine
        holds under its labels (``down``, ``ps``, ``logs`` work so, as compose's do)."""
        return not self.files

    @classmethod
    def of(cls, name: str, working_dir: str, files: list[str], model: dict[str, Any],
           env_files: list[str] | None = None,
           all_services: Mapping[str, Any] | None = None,
           environment: Mapping[str, str] | None = None) -> Project:
        p = cls(name, working_dir, files, model, list(env_files or []),
                dict(environment if environment is not None else {}))
        p.services = {n: Service(n, dict(s), name)
                      for n, s in sorted((model.get("services") or {}).items())}
        for n, s in (all_services or {}).items():
            if n not in p.services:
                p.disabled[n] = Service(n, dict(s), name)
        return p

    def networks(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v or {}) for k, v in (self.model.get("networks") or {}).items()}

    def volumes(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v or {}) for k, v in (self.model.get("volumes") or {}).items()}

    def network_name(self, key: str) -> str:
        n = self.networks().get(key, {}).get("name")
        return str(n) if n else f"{self.name}_{key}"

    def volume_name(self, key: str) -> str:
        n = self.volumes().get(key, {}).get("name")
        return str(n) if n else f"{self.name}_{key}"

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            if self.from_labels:
                return Service(name, {}, self.name)     # what the engine says is what there is
            if name in self.disabled:
                raise ComposeError(f"service {name!r} is not enabled by the active profiles"
                                   ) from None
            raise ComposeError(f"no such service: {name}") from None

    def select(self, names: list[str] | tuple[str, ...]) -> list[Service]:
        return [self.service(n) for n in names] if names else list(self.services.values())
