"""``ketch compose`` against ketchd and against Debian's dockerd 20.10: the same outcome.

ketch compose talks only the Engine API, so the same project run on both
engines must leave the same things behind: containers with the same names and
compose labels, networks and volumes with the same names and labels, the same
states and health, the same exit codes and messages, and the same order of
events where ``depends_on`` fixes one. A difference is a bug in ketchd (it does
not answer as dockerd does) or in ketch compose (it relies on something only
ketchd does).

The engines are the build tests' pair (build_support): each in a network
namespace of its own with busybox imported from the same rootfs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.integration.build_support import (  # noqa: F401 - fixtures
    BuildSide,
    build_dockerd,
    build_ketchd,
    build_scratch,
)
from tests.integration.refdockerd import DOCKERD
from tests.integration.test_daemon_system import DOCKER

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None or DOCKERD is None,
                       reason="needs the docker CLI and Debian's dockerd"),
]

KETCH = str(Path(sys.executable).with_name("ketch"))
# Labels whose values name things that differ by engine (image IDs) or by run.
VOLATILE_LABELS = ("com.docker.compose.image", "com.docker.compose.replace",
                   "com.docker.compose.slug")


class Run:
    def __init__(self, argv: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.argv = argv
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __str__(self) -> str:
        return (f"$ {' '.join(self.argv)}\n-> {self.returncode}\nstdout: {self.stdout}\n"
                f"stderr: {self.stderr}")


def compose(side: BuildSide, project_dir: Path, *args: str, timeout: float = 120) -> Run:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKER_", "KETCH_", "COMPOSE_"))}
    env["KETCH_HOST"] = side.env["DOCKER_HOST"]
    argv = [KETCH, "compose", *args]
    proc = subprocess.run(argv, cwd=project_dir, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(argv, proc)


def both(fn: Any, dockerd: BuildSide, ketchd: BuildSide) -> tuple[Any, Any]:
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(fn, dockerd)
        b = pool.submit(fn, ketchd)
        return a.result(), b.result()


def inspect_json(side: BuildSide, kind: str, names: list[str]) -> list[dict[str, Any]]:
    if not names:
        return []
    res = side.cli(kind, "inspect", *names)
    assert res.returncode == 0, str(res)
    out: list[dict[str, Any]] = json.loads(res.stdout)
    return out


def project_state(side: BuildSide, project: str) -> dict[str, Any]:
    """What the project left on the engine, in engine-independent terms."""
    flt = f"label=com.docker.compose.project={project}"
    ids = side.cli("ps", "-aq", "--filter", flt).stdout.split()
    containers = {}
    for c in inspect_json(side, "container", ids):
        labels = {k: v for k, v in (c["Config"]["Labels"] or {}).items()
                  if k.startswith("com.docker.compose.") and k not in VOLATILE_LABELS}
        state = c["State"]
        nets = c["NetworkSettings"]["Networks"] or {}
        containers[c["Name"].lstrip("/")] = {
            "labels": labels, "status": state["Status"], "exit": state["ExitCode"],
            "health": (state.get("Health") or {}).get("Status"),
            "networks": {n: sorted(a for a in (v.get("Aliases") or [])
                                   if not re.fullmatch(r"[0-9a-f]{12}", a))
                         for n, v in nets.items()},
            "mounts": sorted((m["Type"], m.get("Name") or "", m["Destination"])
                             for m in c["Mounts"]),
            "restart": c["HostConfig"]["RestartPolicy"]["Name"] or "no",
            "ports": {k: [p["HostPort"] for p in v or []]
                      for k, v in (c["HostConfig"].get("PortBindings") or {}).items()},
            "env": sorted(e for e in c["Config"]["Env"] or [] if not e.startswith("PATH=")),
            "cmd": c["Config"]["Cmd"],
        }
    net_names = side.cli("network", "ls", "-q", "--filter", flt,
                         "--format", "{{.Name}}").stdout.split()
    networks = {n["Name"]: {"driver": n["Driver"], "labels": {
        k: v for k, v in (n["Labels"] or {}).items() if k.startswith("com.docker.compose.")},
        "internal": n["Internal"]} for n in inspect_json(side, "network", net_names)}
    vol_names = side.cli("volume", "ls", "-q", "--filter", flt).stdout.split()
    volumes = {v["Name"]: {k: val for k, val in (v["Labels"] or {}).items()
                           if k.startswith("com.docker.compose.")}
               for v in inspect_json(side, "volume", vol_names)}
    return {"containers": containers, "networks": networks, "volumes": volumes}


def progress_lines(stderr: str) -> list[str]:
    return [ln.strip() for ln in stderr.splitlines() if ln.startswith(" ")]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"kcd{secrets.token_hex(3)}"
    yield name, tmp_path


@pytest.fixture
def engines(build_dockerd: BuildSide, build_ketchd: BuildSide  # noqa: F811
            ) -> Iterator[tuple[BuildSide, BuildSide]]:
    yield build_dockerd, build_ketchd


def write(d: Path, text: str) -> Path:
    (d / "compose.yaml").write_text(text)
    return d


def down_all(dockerd: BuildSide, ketchd: BuildSide, d: Path, name: str) -> None:
    def down(side: BuildSide) -> Run:
        return compose(side, d, "-p", name, "down", "-v", "--remove-orphans", "-t", "1")
    for res in both(down, dockerd, ketchd):
        assert res.returncode == 0, str(res)
    for side in (dockerd, ketchd):
        assert project_state(side, name) == {"containers": {}, "networks": {}, "volumes": {}}


APP = """
name: {name}
services:
  db:
    image: busybox:latest
    command: ["sh", "-c", "mkdir -p /data && echo ok > /data/ready && exec sleep 1000"]
    volumes: [data:/data]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 1s
      retries: 30
    networks:
      back:
        aliases: [database]
    environment:
      ROLE: db
    labels:
      tier: data
  api:
    image: busybox:latest
    command: sleep 1000
    depends_on:
      db: {{condition: service_healthy}}
    networks: [back, default]
    ports: ["8080:80", "127.0.0.1:9090:90/udp"]
    environment: [ROLE=api, EMPTY=]
    restart: unless-stopped
  job:
    image: busybox:latest
    command: ["true"]
volumes:
  data:
networks:
  back:
    internal: true
"""


def test_up_leaves_the_same_project(engines: tuple[BuildSide, BuildSide],
                                    project: tuple[str, Path]) -> None:
    dockerd, ketchd = engines
    name, d = project
    write(d, APP.format(name=name))
    try:
        ups = both(lambda s: compose(s, d, "up", "-d"), dockerd, ketchd)
        for res in ups:
            assert res.returncode == 0, str(res)
        # depends_on fixes the order: db healthy before api starts, on both
        for res in ups:
            lines = progress_lines(res.stderr)
            assert lines.index(f"Container {name}-db-1  Healthy") < \
                lines.index(f"Container {name}-api-1  Started"), res.stderr
        ref = project_state(dockerd, name)
        got = project_state(ketchd, name)
        # a job that exited at once may or may not have been seen running
        assert sorted(ref["containers"]) == [f"{name}-api-1", f"{name}-db-1", f"{name}-job-1"]
        assert got == ref
        # service-name DNS and aliases on the user network, on both engines
        for side in (dockerd, ketchd):
            for host in ("db", "database", f"{name}-db-1"):
                res = compose(side, d, "exec", "-T", "api", "nslookup", host)
                assert res.returncode == 0, f"{side.name}: {res}"
        # ps --services and ps -a names
        outs = both(lambda s: compose(s, d, "ps", "-a", "--format",
                                      "{{.Name}} {{.Service}} {{.State}}"), dockerd, ketchd)
        assert outs[0].stdout == outs[1].stdout, (str(outs[0]), str(outs[1]))
        # an unchanged project: nothing recreated
        again = both(lambda s: compose(s, d, "up", "-d"), dockerd, ketchd)
        for res in again:
            assert res.returncode == 0, str(res)
            assert "Recreate" not in res.stderr and "Creating" not in res.stderr, res.stderr
    finally:
        down_all(dockerd, ketchd, d, name)


def test_changed_service_recreated_alone(engines: tuple[BuildSide, BuildSide],
                                        project: tuple[str, Path]) -> None:
    dockerd, ketchd = engines
    name, d = project
    text = """
services:
  a: {image: busybox:latest, command: sleep 1000, environment: {V: "1"}}
  b: {image: busybox:latest, command: sleep 1000}
"""
    write(d, text)
    try:
        for res in both(lambda s: compose(s, d, "-p", name, "up", "-d"), dockerd, ketchd):
            assert res.returncode == 0, str(res)
        before = [{c: s.cli("inspect", "-f", "{{.Id}}", c).stdout for c in
                   (f"{name}-a-1", f"{name}-b-1")} for s in (dockerd, ketchd)]
        write(d, text.replace('V: "1"', 'V: "2"'))
        ups = both(lambda s: compose(s, d, "-p", name, "up", "-d", "-t", "1"), dockerd, ketchd)
        for res in ups:
            assert res.returncode == 0, str(res)
            assert f"Container {name}-a-1  Recreated" in progress_lines(res.stderr), res.stderr
        for side, ids in zip((dockerd, ketchd), before, strict=True):
            assert side.cli("inspect", "-f", "{{.Id}}", f"{name}-a-1").stdout != \
                ids[f"{name}-a-1"]
            assert side.cli("inspect", "-f", "{{.Id}}", f"{name}-b-1").stdout == \
                ids[f"{name}-b-1"]
        assert project_state(ketchd, name) == project_state(dockerd, name)
    finally:
        down_all(dockerd, ketchd, d, name)


def test_scale_up_and_down(engines: tuple[BuildSide, BuildSide],
                           project: tuple[str, Path]) -> None:
    dockerd, ketchd = engines
    name, d = project
    write(d, "services:\n  w: {image: busybox:latest, command: sleep 1000}\n")
    try:
        for n in ("3", "1"):
            for res in both(lambda s, n=n: compose(s, d, "-p", name, "up", "-d", "-t", "1",
                                                   "--scale", f"w={n}"), dockerd, ketchd):
                assert res.returncode == 0, str(res)
            ref, got = project_state(dockerd, name), project_state(ketchd, name)
            assert sorted(ref["containers"]) == [f"{name}-w-{i}" for i in range(1, int(n) + 1)]
            assert got == ref
    finally:
        down_all(dockerd, ketchd, d, name)


def test_unhealthy_dependency_fails_up(engines: tuple[BuildSide, BuildSide],
                                      project: tuple[str, Path]) -> None:
    dockerd, ketchd = engines
    name, d = project
    write(d, """
services:
  db:
    image: busybox:latest
    command: sleep 1000
    healthcheck: {test: ["CMD", "false"], interval: 1s, retries: 2}
  app:
    image: busybox:latest
    command: sleep 1000
    depends_on: {db: {condition: service_healthy}}
""")
    try:
        ups = both(lambda s: compose(s, d, "-p", name, "up", "-d"), dockerd, ketchd)
        for res in ups:
            assert res.returncode == 1, str(res)
            assert f"dependency failed to start: container {name}-db-1 is unhealthy" in \
                res.stderr, str(res)
        ref, got = project_state(dockerd, name), project_state(ketchd, name)
        assert ref["containers"][f"{name}-app-1"]["status"] == "created"
        assert got == ref
    finally:
        down_all(dockerd, ketchd, d, name)


def test_completed_dependency_and_exit_codes(engines: tuple[BuildSide, BuildSide],
                                            project: tuple[str, Path]) -> None:
    dockerd, ketchd = engines
    name, d = project
    write(d, """
services:
  migrate:
    image: busybox:latest
    command: ["sh", "-c", "exit ${MIGRATE_EXIT:-0}"]
  app:
    image: busybox:latest
    command: sleep 1000
    depends_on: {migrate: {condition: service_completed_successfully}}
""")
    try:
        for res in both(lambda s: compose(s, d, "-p", name, "up", "-d"), dockerd, ketchd):
            assert res.returncode == 0, str(res)
            lines = progress_lines(res.stderr)
            assert lines.index(f"Container {name}-migrate-1  Exited") < \
                lines.index(f"Container {name}-app-1  Started"), res.stderr
        assert project_state(ketchd, name) == project_state(dockerd, name)
        runs = both(lambda s: compose(s, d, "-p", name, "run", "--rm", "-T", "--no-deps",
                                      "app", "sh", "-c", "echo out; exit 7"), dockerd, ketchd)
        for res in runs:
            assert res.returncode == 7, str(res)
            assert res.stdout == "out\n", str(res)
        execs = both(lambda s: compose(s, d, "-p", name, "exec", "-T", "app", "sh", "-c",
                                       "exit 4"), dockerd, ketchd)
        for res in execs:
            assert res.returncode == 4, str(res)
    finally:
        down_all(dockerd, ketchd, d, name)
    try:
        env_fail = both(lambda s: subprocess_env_compose(s, d, name), dockerd, ketchd)
        for res in env_fail:
            assert res.returncode == 1, str(res)
            assert 'service "migrate" didn\'t complete successfully: exit 3' in res.stderr, \
                str(res)
    finally:
        down_all(dockerd, ketchd, d, name)


def subprocess_env_compose(side: BuildSide, d: Path, name: str) -> Run:
    (d / ".env").write_text("MIGRATE_EXIT=3\n")
    return compose(side, d, "-p", name, "up", "-d")
