"""Containers on disk: one SQLite row per container, all of them in memory.

dockerd keeps every container in memory and writes ``config.v2.json`` per
container on each change; ketch does the same with one SQLite database (WAL),
so a change is one transaction and a crash at any point leaves either the old
or the new record. Reads never touch the disk: ``ps`` with hundreds of
containers is a walk over a dict.

The record holds the container's Docker-shaped ``Config`` and ``HostConfig``
as the API returns them (what ``inspect`` prints is what was stored), plus
the state machine's fields.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.jsonmodel import from_json, json_name, to_json
from ketch.sqlitedb import create_schema

ZERO_TIME = "0001-01-01T00:00:00Z"

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    doc     TEXT NOT NULL
);
"""

NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"


@dataclass(slots=True)
class State:
    """Docker's ``State``: what the container is doing, and how it last ended."""

    status: str = field(default="created", metadata=json_name("Status", keep_empty=True))
    pid: int = field(default=0, metadata=json_name("Pid", keep_empty=True))
    exit_code: int = field(default=0, metadata=json_name("ExitCode", keep_empty=True))
    error: str = field(default="", metadata=json_name("Error", keep_empty=True))
    oom_killed: bool = field(default=False, metadata=json_name("OOMKilled", keep_empty=True))
    started_at: str = field(default=ZERO_TIME, metadata=json_name("StartedAt", keep_empty=True))
    finished_at: str = field(default=ZERO_TIME,
                             metadata=json_name("FinishedAt", keep_empty=True))
    restarting: bool = field(default=False, metadata=json_name("Restarting", keep_empty=True))
    health: dict[str, Any] | None = field(default=None, metadata=json_name("Health"))

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    def to_docker(self) -> dict[str, Any]:
        """The ``State`` object of ``GET /containers/{id}/json``, in dockerd's key order."""
        out: dict[str, Any] = {
            "Status": self.status,
            "Running": self.status in ("running", "paused"),
            "Paused": self.status == "paused",
            "Restarting": self.restarting,
            "OOMKilled": self.oom_killed,
            "Dead": self.status == "dead",
            "Pid": self.pid,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at,
        }
        if self.health is not None:
            out["Health"] = self.health
        return out


@dataclass(slots=True)
class Container:
    """One container, as stored. ``config``/``host_config`` are Docker's JSON shapes."""

    id: str = field(metadata=json_name("Id"))
    name: str = field(metadata=json_name("Name"))           # without the leading "/"
    created: str = field(metadata=json_name("Created"))
    image: str = field(metadata=json_name("ImageRef"))      # as the user named it
    image_id: str = field(metadata=json_name("Image"))
    path: str = field(default="", metadata=json_name("Path", keep_empty=True))
    args: list[str] = field(default_factory=list, metadata=json_name("Args", keep_empty=True))
    config: dict[str, Any] = field(default_factory=dict, metadata=json_name("Config"))
    host_config: dict[str, Any] = field(default_factory=dict,
                                        metadata=json_name("HostConfig"))
    state: State = field(default_factory=State, metadata=json_name("State"))
    restart_count: int = field(default=0, metadata=json_name("RestartCount", keep_empty=True))
    has_been_started: bool = field(default=False, metadata=json_name("HasBeenStarted"))
    has_been_manually_stopped: bool = field(
        default=False, metadata=json_name("HasBeenManuallyStopped"))
    network_settings: dict[str, Any] = field(default_factory=dict,
                                             metadata=json_name("NetworkSettings"))
    mounts: list[dict[str, Any]] = field(default_factory=list, metadata=json_name("Mounts"))
    # The volume planner's records (ketch.volume.planner.MountPoint.to_record()).
    mount_points: list[dict[str, Any]] = field(default_factory=list,
                                               metadata=json_name("MountPoints"))
    exec_ids: list[str] = field(default_factory=list, metadata=json_name("ExecIDs"))
    # network name -> the MAC address asked for it (--mac-address, an endpoint's
    # MacAddress): NetworkSettings shows the one in use while running, this after
    desired_macs: dict[str, str] = field(default_factory=dict,
                                         metadata=json_name("DesiredMacAddresses"))

    @property
    def short_id(self) -> str:
        return self.id[:12]


def check_name(name: str) -> str:
    """A user-given name without its optional leading "/"; dockerd's rule and message."""
    import re

    bare = name[1:] if name.startswith("/") else name
    if not re.fullmatch(NAME_CHARS + "+", bare):
        raise InvalidArgument(f"Invalid container name ({name}), only {NAME_CHARS} are allowed")
    return bare


class ContainerStore:
    """The containers of one daemon; thread-safe, so handlers may write from workers."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        create_schema(path, SCHEMA, "the container store")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self._by_id: dict[str, Container] = {}
        self._by_name: dict[str, str] = {}
        for (doc,) in self._db.execute("SELECT doc FROM containers"):
            c = from_json(Container, json.loads(doc), where="containers.db")
            self._by_id[c.id] = c
            self._by_name[c.name] = c.id

    def close(self) -> None:
        self._db.close()

    # --- lookups --------------------------------------------------------------------------

    def all(self) -> list[Container]:
        return list(self._by_id.values())

    def get(self, ref: str) -> Container:
        """By full id, name ("/x" or "x"), or unique id prefix, as dockerd resolves names."""
        c = self.find(ref)
        if c is None:
            raise NotFound(f"No such container: {ref}")
        return c

    def find(self, ref: str) -> Container | None:
        if not ref:
            return None
        c = self._by_id.get(ref)
        if c is not None:
            return c
        cid = self._by_name.get(ref[1:] if ref.startswith("/") else ref)
        if cid is not None:
            return self._by_id[cid]
        matches = [c for i, c in self._by_id.items() if i.startswith(ref)]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        return matches[0] if matches else None

    def name_owner(self, name: str) -> str | None:
        return self._by_name.get(name)

    # --- changes --------------------------------------------------------------------------

    def add(self, c: Container) -> None:
        """Reserve the name and store the container, or Conflict as dockerd words it."""
        with self._lock:
            owner = self._by_name.get(c.name)
            if owner is not None:
                raise Conflict(
                    f'Conflict. The container name "/{c.name}" is already in use by '
                    f'container "{owner}". You have to remove (or rename) that container '
                    "to be able to reuse that name.")
            self._write(c, insert=True)
            self._by_id[c.id] = c
            self._by_name[c.name] = c.id

    def save(self, c: Container) -> None:
        with self._lock:
            self._write(c, insert=False)

    def rename(self, c: Container, new: str) -> None:
        with self._lock:
            owner = self._by_name.get(new)
            if owner is not None and owner != c.id:
                raise Conflict(
                    f'Conflict. The container name "/{new}" is already in use by container '
                    f'"{owner}". You have to remove (or rename) that container to be able '
                    "to reuse that name.")
            old = c.name
            c.name = new
            try:
                self._write(c, insert=False)
            except BaseException:
                c.name = old
                raise
            del self._by_name[old]
            self._by_name[new] = c.id

    def remove(self, c: Container) -> None:
        with self._lock:
            self._db.execute("DELETE FROM containers WHERE id = ?", (c.id,))
            self._by_id.pop(c.id, None)
            if self._by_name.get(c.name) == c.id:
                del self._by_name[c.name]

    def _write(self, c: Container, *, insert: bool) -> None:
        doc = json.dumps(to_json(c), separators=(",", ":"))
        if insert:
            self._db.execute("INSERT INTO containers (id, name, doc) VALUES (?,?,?)",
                             (c.id, c.name, doc))
        else:
            self._db.execute("UPDATE containers SET name = ?, doc = ? WHERE id = ?",
                             (c.name, doc, c.id))
