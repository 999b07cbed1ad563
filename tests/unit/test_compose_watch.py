"""compose watch: snapshots, changes, and what a rule does to the service's containers."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ketch.compose import watch
from ketch.compose.model import Service
from ketch.compose.project import UpOptions
from ketch.compose.watch import Rule, Watcher, changes, snapshot


def write(root: Path, rel: str, text: str = "x") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def bump(p: Path) -> None:
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# --- snapshot and changes ------------------------------------------------------------------------

def test_snapshot_lists_files_relative(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "12345")
    write(tmp_path, "src/b.py")
    write(tmp_path, "src/deep/c.py")
    (tmp_path / "empty").mkdir()
    snap = snapshot(str(tmp_path))
    assert sorted(snap) == ["a.txt", "src/b.py", "src/deep/c.py"]
    assert snap["a.txt"][1] == 5
    assert snap["a.txt"][0] == (tmp_path / "a.txt").stat().st_mtime


def test_snapshot_of_a_file_root(tmp_path: Path) -> None:
    f = write(tmp_path, "conf.ini", "abc")
    assert snapshot(str(f)) == {"": (f.stat().st_mtime, 3)}


def test_snapshot_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert snapshot(str(tmp_path / "nope")) == {}


def test_snapshot_ignore_patterns(tmp_path: Path) -> None:
    write(tmp_path, "keep.py")
    write(tmp_path, "skip.tmp")
    write(tmp_path, "src/deep.tmp")
    write(tmp_path, "src/ok.py")
    write(tmp_path, "node_modules/lib/x.js")
    snap = snapshot(str(tmp_path), ["*.tmp", "node_modules"])
    # dockerignore rules: "*.tmp" is at the root only
    assert sorted(snap) == ["keep.py", "src/deep.tmp", "src/ok.py"]
    snap = snapshot(str(tmp_path), ["**/*.tmp", "node_modules/"])
    assert sorted(snap) == ["keep.py", "src/ok.py"]


def test_snapshot_ignore_with_exception(tmp_path: Path) -> None:
    write(tmp_path, "a.log")
    write(tmp_path, "important.log")
    assert sorted(snapshot(str(tmp_path), ["*.log", "!important.log"])) == ["important.log"]


def test_changes_new_modified_deleted(tmp_path: Path) -> None:
    a = write(tmp_path, "a")
    write(tmp_path, "b")
    write(tmp_path, "c")
    before = snapshot(str(tmp_path))
    bump(a)
    (tmp_path / "b").unlink()
    write(tmp_path, "d")
    write(tmp_path, "c", "longer")
    after = snapshot(str(tmp_path))
    assert changes(before, after) == (["a", "c", "d"], ["b"])
    assert changes(after, after) == ([], [])


# --- Watcher.apply -------------------------------------------------------------------------------

class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.tars: list[dict[str, bytes]] = []

    def container_archive_put(self, cid: str, path: str, tar: Any, **kw: Any) -> None:
        with tarfile.open(fileobj=tar, mode="r") as tf:
            files = {m.name: (tf.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                     for m in tf.getmembers()}
        self.tars.append(files)
        self.calls.append(("archive_put", cid, path))

    def exec_create(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("exec_create", cid, body["Cmd"]))
        return {"Id": "exec-" + cid}

    def exec_start(self, exec_id: str, *, detach: bool = False, **kw: Any) -> None:
        self.calls.append(("exec_start", exec_id, detach))

    def container_restart(self, cid: str, **kw: Any) -> None:
        self.calls.append(("restart", cid))


class FakeCompose:
    def __init__(self, containers: dict[str, list[str]]) -> None:
        self.client = FakeClient()
        self._containers = containers
        self.said: list[tuple[str, str, str]] = []
        self.ups: list[UpOptions] = []

    def progress(self, kind: str, name: str, status: str, **kw: Any) -> None:
        self.said.append((kind, name, status))

    def containers(self, services: list[str], *, stopped: bool = True) -> list[dict[str, Any]]:
        assert stopped is False
        return [{"Id": f"id-{n}", "Names": [f"/{n}"]}
                for s in services for n in self._containers.get(s, [])]

    def up(self, opts: UpOptions) -> None:
        self.ups.append(opts)


def service(tmp_path: Path, *rules: dict[str, Any]) -> Service:
    return Service("web", {"image": "busybox", "develop": {"watch": list(rules)}}, "proj")


def test_watcher_reads_the_rules(tmp_path: Path) -> None:
    svc = service(tmp_path, {"action": "sync", "path": str(tmp_path), "target": "/app",
                             "ignore": ["*.tmp"]},
                  {"action": "rebuild", "path": str(tmp_path / "pkg")})
    other = Service("db", {"image": "busybox"}, "proj")
    w = Watcher(FakeCompose({}), [svc, other], rebuild=lambda s: None)
    assert [(r.service.name, r.action, r.path, r.target, r.ignore) for r in w.rules] == [
        ("web", "sync", str(tmp_path), "/app", ["*.tmp"]),
        ("web", "rebuild", str(tmp_path / "pkg"), "", []),
    ]


def rule(tmp_path: Path, action: str = "sync", target: str = "/app") -> Rule:
    return Rule(Service("web", {}, "proj"), action, str(tmp_path), target, [])


def test_sync_puts_a_tar_with_target_paths_into_every_container(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "print(1)")
    write(tmp_path, "pkg/mod.py", "x = 2")
    compose = FakeCompose({"web": ["proj-web-1", "proj-web-2"]})
    Watcher(compose, [], rebuild=lambda s: None).apply(
        rule(tmp_path), ["main.py", "pkg/mod.py"], [])
    assert compose.client.calls == [("archive_put", "id-proj-web-1", "/"),
                                    ("archive_put", "id-proj-web-2", "/")]
    assert compose.client.tars[0] == {"app/main.py": b"print(1)", "app/pkg/mod.py": b"x = 2"}
    assert compose.client.tars[1] == compose.client.tars[0]
    assert ("Container", "proj-web-1", "Synced 2 file(s)") in compose.said


def test_sync_of_a_file_root_uses_the_target_itself(tmp_path: Path) -> None:
    f = write(tmp_path, "app.conf", "k=v")
    compose = FakeCompose({"web": ["proj-web-1"]})
    r = Rule(Service("web", {}, "proj"), "sync", str(f), "/etc/app.conf", [])
    Watcher(compose, [], rebuild=lambda s: None).apply(r, [""], [])
    assert compose.client.tars == [{"etc/app.conf": b"k=v"}]


def test_a_file_gone_before_the_copy_is_left_out(tmp_path: Path) -> None:
    write(tmp_path, "here.py", "1")
    compose = FakeCompose({"web": ["proj-web-1"]})
    Watcher(compose, [], rebuild=lambda s: None).apply(rule(tmp_path), ["gone.py", "here.py"],
                                                       [])
    assert compose.client.tars == [{"app/here.py": b"1"}]


def test_deletions_run_rm_in_the_container(tmp_path: Path) -> None:
    compose = FakeCompose({"web": ["proj-web-1"]})
    Watcher(compose, [], rebuild=lambda s: None).apply(rule(tmp_path), [],
                                                       ["old.py", "pkg/x.py"])
    assert compose.client.calls == [
        ("exec_create", "id-proj-web-1", ["rm", "-rf", "/app/old.py", "/app/pkg/x.py"]),
        ("exec_start", "exec-id-proj-web-1", True),
    ]
    assert compose.client.tars == []


def test_sync_restart_restarts_after_the_copy(tmp_path: Path) -> None:
    write(tmp_path, "a.py")
    compose = FakeCompose({"web": ["proj-web-1"]})
    Watcher(compose, [], rebuild=lambda s: None).apply(
        rule(tmp_path, "sync+restart"), ["a.py"], [])
    assert compose.client.calls == [("archive_put", "id-proj-web-1", "/"),
                                    ("restart", "id-proj-web-1")]
    assert ("Container", "proj-web-1", "Restarted") in compose.said


def test_plain_sync_does_not_restart(tmp_path: Path) -> None:
    write(tmp_path, "a.py")
    compose = FakeCompose({"web": ["proj-web-1"]})
    Watcher(compose, [], rebuild=lambda s: None).apply(rule(tmp_path), ["a.py"], [])
    assert not [c for c in compose.client.calls if c[0] == "restart"]


def test_rebuild_builds_and_ups_the_service_alone(tmp_path: Path) -> None:
    built: list[str] = []
    compose = FakeCompose({"web": ["proj-web-1"]})
    Watcher(compose, [], rebuild=lambda s: built.append(s.name)).apply(
        rule(tmp_path, "rebuild"), ["Dockerfile"], [])
    assert built == ["web"]
    assert len(compose.ups) == 1
    assert compose.ups[0].services == ["web"] and compose.ups[0].deps is False
    assert compose.client.calls == []


def test_run_applies_a_change_seen_between_looks(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, "a.py", "1")
    compose = FakeCompose({"web": ["proj-web-1"]})
    svc = service(tmp_path, {"action": "sync", "path": str(tmp_path), "target": "/app"})
    w = Watcher(compose, [svc], rebuild=lambda s: None)
    monkeypatch.setattr(watch, "INTERVAL", 0.0)
    looks = 0

    def sleep(_: float) -> None:
        nonlocal looks
        looks += 1
        if looks == 1:
            a.write_text("22")
            bump(a)

    monkeypatch.setattr(watch.time, "sleep", sleep)
    w.run(rounds=2)
    assert compose.client.tars == [{"app/a.py": b"22"}]     # once: the second look saw nothing
    assert ("Watch", f"web {tmp_path}", "Watching") in compose.said


def test_tar_members_are_regular_files(tmp_path: Path) -> None:
    write(tmp_path, "x.sh", "#!/bin/sh\n")
    (tmp_path / "x.sh").chmod(0o755)
    buf = Watcher._tar(rule(tmp_path), ["x.sh"])
    assert isinstance(buf, io.BytesIO) and buf.tell() == 0
    with tarfile.open(fileobj=buf) as tf:
        (m,) = tf.getmembers()
    assert m.name == "app/x.sh" and m.isfile() and m.mode & 0o777 == 0o755
