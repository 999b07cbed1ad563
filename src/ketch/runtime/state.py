"""Container status, the legal moves between statuses, and the on-disk state.

    creating -> created --start--> running <--pause/resume--> paused
                   \\                  |
                    `------kill------> stopped --delete--> (gone)

The status is never trusted from disk alone: it is derived from the kernel each
time (is the init pid alive with the same start time? is the exec fifo still
there? is the cgroup frozen?), as runc does, so a crash can never leave a
stale "running". ``state.json`` in ``<root>/<id>/`` holds what cannot be
derived: pid, its start time, bundle, cgroup path, namespace paths.
"""

from __future__ import annotations

import enum
import json
import os
import re
from dataclasses import dataclass, field

from ketch.errors import InvalidArgument, InvalidTransition, NotFound
from ketch.jsonmodel import from_json, to_json

OCI_VERSION = "1.2.0"       # the runtime-spec version ketch implements
EXEC_FIFO = "exec.fifo"
STATE_FILE = "state.json"

_ID_RE = re.compile(r"^[\w+\-.]+$")


class Status(enum.Enum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"

    def can_start(self) -> bool:
        return self is Status.CREATED

    def can_kill(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING, Status.PAUSED)

    def can_pause(self) -> bool:
        return self in (Status.RUNNING, Status.CREATED)

    def can_resume(self) -> bool:
        return self is Status.PAUSED

    def can_delete(self) -> bool:
        """Without --force: stopped ones, and created ones (runc kills their init)."""
        return self in (Status.STOPPED, Status.CREATED)

    def can_exec(self) -> bool:
        return self in (Status.CREATED, Status.RUNNING)


def check_transition(status: Status, verb: str, container_id: str) -> None:
    """Raise runc's message when ``verb`` is illegal in ``status``."""
    allowed = {
        "start": status.can_start(),
        "kill": status.can_kill(),
        "pause": status.can_pause(),
        "resume": status.can_resume(),
        "exec": status.can_exec(),
    }[verb]
    if allowed:
        return
    if verb == "start":
        if status is Status.STOPPED:
            raise InvalidTransition("cannot start a container that has stopped")
        raise InvalidTransition("cannot start an already running container")
    if verb == "kill":
        raise InvalidTransition("container not running")
    if verb == "pause":
        raise InvalidTransition("container not running")
    if verb == "resume":
        raise InvalidTransition("container not paused")
    if status is Status.PAUSED:
        raise InvalidTransition("cannot exec in a paused container")
    raise InvalidTransition("cannot exec in a stopped container")


def validate_id(container_id: str) -> None:
    if not container_id:
        raise InvalidArgument("container id cannot be empty")
    if not _ID_RE.fullmatch(container_id) or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id format: {container_id}")


@dataclass(slots=True)
class ContainerState:
    """What ``state.json`` records about one container."""

    id: str = ""
    init_pid: int = 0
    init_start_time: int = 0
    bundle: str = ""
    rootfs: str = ""
    created: str = ""
    owner: str = ""
    cgroup_path: str = ""
    namespace_paths: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # Set when the init process could not be direct child of the creator
    # (user namespaces): informational only.
    intermediate: bool = False
    config_json: str = ""   # config.json as it was at create time (bundle may change)


def pid_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The comm field may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


class StateStore:
    """``<root>/<id>/state.json`` files, written atomically."""

    def __init__(self, root: str) -> None:
        self.root = root

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, container_id)

    def exists(self, container_id: str) -> bool:
        return os.path.exists(os.path.join(self.dir(container_id), STATE_FILE))

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(os.path.join(self.root, n, STATE_FILE)))

    def load(self, container_id: str) -> ContainerState:
        validate_id(container_id)
        path = os.path.join(self.dir(container_id), STATE_FILE)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            raise NotFound("container does not exist") from None
        except ValueError as exc:
            raise InvalidArgument(f"corrupt state file {path}: {exc}") from None
        return from_json(ContainerState, data, where=path)

    def save(self, st: ContainerState) -> None:
        d = self.dir(st.id)
        tmp = os.path.join(d, f".{STATE_FILE}.tmp")
        with open(tmp, "w") as f:
            json.dump(to_json(st), f)
        os.replace(tmp, os.path.join(d, STATE_FILE))

    def status(self, st: ContainerState, frozen: bool = False) -> Status:
        if not st.init_pid or pid_start_time(st.init_pid) != st.init_start_time:
            return Status.STOPPED
        if os.path.exists(os.path.join(self.dir(st.id), EXEC_FIFO)):
            return Status.CREATED
        return Status.PAUSED if frozen else Status.RUNNING
