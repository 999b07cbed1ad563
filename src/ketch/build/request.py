"""What a build is asked to do, and what it reports while it runs.

``BuildOptions`` is the one shape every front end fills (``POST /build``'s
query, ``ketch build``'s flags through that API), so the executor never sees
HTTP. Progress is a stream of typed events; the API renders them as the
legacy builder's JSON stream for the docker CLI and docker-py, or hands them
to ketch's CLI as they are (``ketchprogress=1``) for its plain/tty display.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Resources:
    """Limits for RUN containers (``--memory``, ``--cpu-*``, ``--shm-size``, ...)."""

    memory: int = 0
    memory_swap: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    shm_size: int = 0
    ulimits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BuildOptions:
    """One build. Paths are inside the extracted context unless said otherwise."""

    dockerfile: str = "Dockerfile"          # path in the context (``-f``)
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    no_cache_filter: list[str] = field(default_factory=list)   # stage names
    cache_from: list[str] = field(default_factory=list)        # image references
    pull: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network_mode: str = ""                  # RUN's default network ("" = default)
    extra_hosts: list[str] = field(default_factory=list)
    platform: str = ""
    resources: Resources = field(default_factory=Resources)
    remove: bool = True                     # ``rm``: remove intermediate containers
    force_remove: bool = False              # ``forcerm``: also after a failure
    # ketch's own: directories (outside the context) the front end provided.
    secrets: dict[str, str] = field(default_factory=dict)          # id -> file path
    contexts: dict[str, str] = field(default_factory=dict)         # name -> directory
    source_date_epoch: int | None = None
    registry_auth: dict[str, Any] = field(default_factory=dict)    # X-Registry-Config


# --- progress events -------------------------------------------------------------------------


@dataclass
class StepStarted:
    """A step begins: ``Step 3/7 : RUN make`` (the number counts the whole file)."""

    step: int
    total: int
    stage: str
    text: str
    kind: str = "step"


@dataclass
class StepCached:
    step: int
    kind: str = "cached"


@dataclass
class StepMiss:
    """Why the cache could not serve a step (shown by ``--progress plain``)."""

    step: int
    reason: str
    kind: str = "miss"


@dataclass
class StepRunning:
    step: int
    container: str
    kind: str = "running"


@dataclass
class StepOutput:
    step: int
    data: str
    stream: str = "stdout"
    kind: str = "output"


@dataclass
class StepDone:
    step: int
    image: str
    seconds: float = 0.0
    removed_container: str = ""
    kind: str = "done"


@dataclass
class BuildWarning:
    text: str
    rule: str = ""        # a build check's rule name (BuildKit's lint): not in the legacy stream
    kind: str = "warning"


@dataclass
class BuildInfo:
    """A line of the legacy stream outside any step (``# Executing 2 build triggers``)."""

    text: str
    kind: str = "info"


@dataclass
class BuildResult:
    image: str
    tags: list[str] = field(default_factory=list)
    kind: str = "result"


Event = (StepStarted | StepCached | StepMiss | StepRunning | StepOutput | StepDone
         | BuildWarning | BuildInfo | BuildResult)
Emit = Callable[[Event], None]

def event_json(event: Event) -> dict[str, Any]:
    return asdict(event)


def event_from_json(doc: dict[str, Any]) -> Event:
    kinds: dict[str, Any] = {
        "step": StepStarted, "cached": StepCached, "miss": StepMiss, "running": StepRunning,
        "output": StepOutput, "done": StepDone, "warning": BuildWarning, "info": BuildInfo,
        "result": BuildResult,
    }
    cls = kinds.get(str(doc.get("kind")))
    if cls is None:
        raise ValueError(f"unknown build event {doc.get('kind')!r}")
    return cls(**{k: v for k, v in doc.items()})  # type: ignore[no-any-return]
