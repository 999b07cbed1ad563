"""``compose watch``: keep running services in step with the files they are built from.

Each ``develop.watch`` rule names a host path and an action: ``sync`` copies the
changed files into the service's containers (under ``target``), ``sync+restart``
copies and then restarts them, ``rebuild`` builds the image again and recreates
the containers. The paths are looked at twice a second (modification times and
sizes), which needs nothing from the kernel beyond ``stat`` and is fast enough for
hand edits; several changes within one look are handled as one.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ketch.compose.model import Service

INTERVAL = 0.5


@dataclass
class Rule:
    service: Service
    action: str           # sync | rebuild | sync+restart | sync+exec
    path: str             # absolute, on the host
    target: str           # in the container
    ignore: list[str]


def snapshot(root: str, ignore: Iterable[str] = ()) -> dict[str, tuple[float, int]]:
    """Each file under ``root`` (or ``root`` itself): (mtime, size); ignored ones left out."""
    from ketch.build.dockerignore import Matcher

    matcher = Matcher(list(ignore)) if ignore else None
    out: dict[str, tuple[float, int]] = {}
    if os.path.isfile(root):
        st = os.stat(root)
        return {"": (st.st_mtime, st.st_size)}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            if matcher is not None and matcher.matches(rel):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            out[rel] = (st.st_mtime, st.st_size)
        if matcher is not None:
            dirnames[:] = [d for d in dirnames
                           if not matcher.matches(d if rel_dir == "." else
                                                  os.path.join(rel_dir, d))]
    return out


def changes(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]]
            ) -> tuple[list[str], list[str]]:
    """(changed or new, deleted) relative paths."""
    changed = sorted(p for p, v in after.items() if before.get(p) != v)
    deleted = sorted(p for p in before if p not in after)
    return changed, deleted


class Watcher:
    def __init__(self, compose: Any, services: Iterable[Service],
                 rebuild: Callable[[Service], None]) -> None:
        self.compose = compose
        self.rebuild = rebuild
        self.rules: list[Rule] = []
        for svc in services:
            for w in (svc.spec.get("develop") or {}).get("watch") or []:
                self.rules.append(Rule(svc, str(w.get("action") or "sync"), str(w["path"]),
                                       str(w.get("target") or ""), list(w.get("ignore") or [])))

    def run(self, *, rounds: int | None = None) -> None:
        progress = self.compose.progress
        states = [snapshot(r.path, r.ignore) for r in self.rules]
        for r in self.rules:
            progress("Watch", f"{r.service.name} {r.path}", "Watching")
        n = 0
        while rounds is None or n < rounds:
            n += 1
            time.sleep(INTERVAL)
            for i, r in enumerate(self.rules):
                now = snapshot(r.path, r.ignore)
                changed, deleted = changes(states[i], now)
                states[i] = now
                if changed or deleted:
                    self.apply(r, changed, deleted)

    def apply(self, r: Rule, changed: list[str], deleted: list[str]) -> None:
        from ketch.compose.project import UpOptions

        c = self.compose
        if r.action == "rebuild":
            c.progress("Service", r.service.name, "Rebuilding")
            self.rebuild(r.service)
            c.up(UpOptions(services=[r.service.name], deps=False))
            return
        for ctr in c.containers([r.service.name], stopped=False):
            cid = str(ctr["Id"])
            if changed:
                c.client.container_archive_put(cid, "/", self._tar(r, changed))
            if deleted:
                paths = [os.path.join(r.target, p) if p else r.target for p in deleted]
                ex = c.client.exec_create(cid, {"Cmd": ["rm", "-rf", *paths],
                                                "AttachStdout": False, "AttachStderr": False})
                c.client.exec_start(str(ex["Id"]), detach=True)
            c.progress("Container", ctr["Names"][0].lstrip("/"),
                       f"Synced {len(changed) + len(deleted)} file(s)")
            if r.action == "sync+restart":
                c.client.container_restart(cid)
                c.progress("Container", ctr["Names"][0].lstrip("/"), "Restarted")

    @staticmethod
    def _tar(r: Rule, changed: list[str]) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for rel in changed:
                src = os.path.join(r.path, rel) if rel else r.path
                dest = os.path.join(r.target, rel) if rel else r.target
                try:
                    tar.add(src, arcname=dest.lstrip("/"), recursive=False)
                except OSError:
                    continue        # gone again since the look
        buf.seek(0)
        return buf
