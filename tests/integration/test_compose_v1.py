"""Debian's docker-compose 1.29 (Python, compose v1) against ketchd and against dockerd 20.10.

The same projects run with the same docker-compose on both engines at once
(compose_v1_support: each engine in a network namespace of its own, busybox
imported from one rootfs, docker-compose through docker-py for exec and run).
What compose v1 shows must agree: exit codes, the output of the commands whose
output is stable (``ps --services``, ``config``, ``exec``, ``run``, ``port``,
``logs`` of one service), the progress lines as a set (compose works on
services in parallel), and what the engine holds afterwards: the containers
(``proj_svc_N``), their com.docker.compose.* labels (but the config hash, which
hashes the engine's own image ID, and the version), networks with their aliases,
mounts, port bindings, the networks and volumes compose made and their labels.
Service-name DNS, data kept in a named volume across ``down``/``up``, and
``down -v`` removing everything are checked on both.

docker-compose speaks API 1.41 to both (compose_v1_support.API says why);
``test_negotiated_api_version`` runs it unpinned against ketchd.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.compose_v1_support import (
    COMPOSE,
    ComposePair,
    compose_labels,
    compose_pair,
    inspect,
    normalise,
)
from tests.integration.engines import Result
from tests.integration.refdockerd import DOCKERD
from tests.integration.test_container_differential import Side
from tests.integration.test_daemon_system import DOCKER

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(COMPOSE is None or DOCKER is None or DOCKERD is None,
                                 reason="needs docker-compose, the docker CLI and dockerd")]

APP = """\
version: "3.8"
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo web up; exec httpd -f -p 80 -h /www"]
    volumes:
      - data:/data
      - ./site:/www:ro
    ports:
      - "8080:80"
    environment:
      FOO: bar
    env_file: web.env
    labels:
      tier: front
    networks:
      default:
      back:
        aliases: [webalias]
    healthcheck:
      test: ["CMD", "test", "-e", "/www/index.html"]
      interval: 1s
      timeout: 2s
      retries: 3
  app:
    image: busybox
    command: ["sleep", "600"]
    stop_grace_period: 1s
    depends_on:
      web:
        condition: service_healthy
    networks: [back]
  worker:
    image: busybox
    command: ["sh", "-c", "echo worker $$WHO; exec sleep 600"]
    stop_signal: SIGKILL
    environment:
      - WHO=w
    depends_on: [app]
volumes:
  data:
networks:
  back:
"""
FILES = {"docker-compose.yml": APP, "site/index.html": "hello\n", "web.env": "FROMFILE=yes\n"}
PROJECT = "v1app"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture(scope="module")
def pair(busybox_rootfs: Path) -> Iterator[ComposePair]:
    with compose_pair(busybox_rootfs) as p:
        yield p


@pytest.fixture
def project(pair: ComposePair) -> Iterator[Callable[[dict[str, str]], dict[str, Path]]]:
    """Writes a project (the same files, one copy per engine); ``down -v`` of it at
    the end, also when the test failed, and nothing of it may be left."""
    made: list[dict[str, Path]] = []

    def write(files: dict[str, str], name: str = PROJECT) -> dict[str, Path]:
        dirs = {s.name: pair.project_dir(s, name, files) for s in pair.sides}
        made.append(dirs)
        return dirs

    yield write
    for dirs in made:
        pair.each(lambda s, dirs=dirs: pair.compose(
            s, dirs[s.name], "down", "-v", "--remove-orphans", "-t", "1"))
    for s in pair.sides:
        left = s.cli("ps", "-aq").stdout.split()
        if left:
            s.cli("rm", "-f", *left, timeout=120)
        assert not left, f"{s.name}: containers left after down -v"


# --------------------------------------------------------------------- comparing


def view(side: Side, pair: ComposePair, res: Result, *, stdout: bool = True,
         progress: bool = False) -> tuple[Any, ...]:
    """What must agree of one docker-compose run: the exit code, stdout (or not),
    and the progress lines on stderr as a sorted set (``progress``)."""
    def norm(text: str) -> str:
        text = ANSI.sub("", text).replace(str(pair.scratch / side.name), "<scratch>")
        return normalise(side, text)
    out: tuple[Any, ...] = (res.returncode,)
    if stdout:
        out += (norm(res.stdout),)
    if progress:
        # "Creating x ... " then "Creating x ... done": the finished lines, as a set.
        lines = {ln.strip() for ln in norm(res.stderr).splitlines()
                 if ln.strip() and not ln.rstrip().endswith("...")}
        out += (sorted(lines),)
    return out


def same(pair: ComposePair, dirs: dict[str, Path], *args: str, stdout: bool = True,
         progress: bool = False, timeout: float = 120) -> tuple[Result, Result]:
    d, k = pair.each(lambda s: pair.compose(s, dirs[s.name], *args, timeout=timeout))
    want = view(pair.dockerd, pair, d, stdout=stdout, progress=progress)
    got = view(pair.ketchd, pair, k, stdout=stdout, progress=progress)
    assert got == want, (f"docker-compose {' '.join(args)}\n  dockerd: {want}\n"
                         f"  ketchd:  {got}\n--- ketchd's run:\n{k}\n--- dockerd's run:\n{d}")
    return d, k


def labels_of(side: Side, pair: ComposePair, doc: dict[str, Any]) -> dict[str, str]:
    """A container's compose labels, the project's directory (one per engine) made
    equal, and a one-off's slug (random) left out."""
    here = str(pair.scratch / side.name)
    return {k: v.replace(here, "<scratch>") for k, v in compose_labels(doc).items()
            if k != "com.docker.compose.slug"}


def engine_state(side: Side, pair: ComposePair, project: str = PROJECT) -> dict[str, Any]:
    """What the engine holds of the project, in the terms compose v1 sees it."""
    label = f"label=com.docker.compose.project={project}"
    names = sorted(side.cli("ps", "-a", "--filter", label, "--format", "{{.Names}}")
                   .stdout.split())
    containers = {}
    here = str(pair.scratch / side.name)
    for doc in inspect(side, *names) if names else []:
        hc = doc["HostConfig"]
        # Docker 25+ stores an unset restart policy as "no" (dockerd 20.10 keeps "");
        # ketch answers as the later Docker.
        restart = dict(hc["RestartPolicy"], Name=hc["RestartPolicy"]["Name"] or "no")
        nets = doc["NetworkSettings"]["Networks"] or {}
        short = doc["Id"][:12]
        containers[doc["Name"]] = {
            "labels": labels_of(side, pair, doc),
            "user_labels": {k: v for k, v in (doc["Config"]["Labels"] or {}).items()
                            if not k.startswith("com.docker.compose.")},
            "env": sorted(doc["Config"]["Env"] or []),
            "cmd": doc["Config"]["Cmd"],
            "healthcheck": doc["Config"].get("Healthcheck"),
            "stop_signal": doc["Config"].get("StopSignal"),
            "network_mode": normalise(side, hc["NetworkMode"]),
            "binds": sorted(normalise(side, b.replace(here, "<scratch>"))
                            for b in hc["Binds"] or []),
            "ports": hc["PortBindings"],
            "links": hc["Links"],
            "restart": restart,
            "mounts": sorted((m["Type"], m.get("Name", ""), m["Destination"], m["RW"])
                             for m in doc["Mounts"]),
            # Aliases at API 1.41 hold the short ID too (each engine its own); dockerd
            # 20.10 also adds a hostname of its own, which Docker 26+ keeps in DNSNames
            # instead, as ketch does (that it resolves is checked).
            "networks": {n: sorted(a for a in (e.get("Aliases") or [])
                                   if a not in (short, doc["Config"]["Hostname"]))
                         for n, e in nets.items()},
            "status": doc["State"]["Status"],
            "health": (doc["State"].get("Health") or {}).get("Status"),
        }
    nets = sorted(side.cli("network", "ls", "--filter", label, "--format", "{{.Name}}")
                  .stdout.split())
    vols = sorted(side.cli("volume", "ls", "--filter", label, "--format", "{{.Name}}")
                  .stdout.split())
    skip = {"com.docker.compose.version"}

    def labels(kind: str, name: str) -> dict[str, str]:
        res = side.cli(kind, "inspect", "--format", "{{json .Labels}}", name)
        assert res.returncode == 0, str(res)
        return {k: v for k, v in (json.loads(res.stdout) or {}).items() if k not in skip}

    return {"containers": containers,
            "networks": {n: labels("network", n) for n in nets},
            "volumes": {v: labels("volume", v) for v in vols}}


def same_state(pair: ComposePair, project: str = PROJECT) -> dict[str, Any]:
    d, k = pair.each(lambda s: engine_state(s, pair, project))
    assert k == d, f"engine state differs:\n  dockerd: {d}\n  ketchd:  {k}"
    return k


# --------------------------------------------------------------------- the tests


def test_a_project_through_its_life(pair: ComposePair, project: Callable[..., Any]) -> None:
    dirs = project(FILES)
    _, k = same(pair, dirs, "config")
    assert "webalias" in k.stdout
    same(pair, dirs, "config", "--services")
    same(pair, dirs, "up", "-d", progress=True)
    state = same_state(pair)
    assert sorted(state["containers"]) == ["/v1app_app_1", "/v1app_web_1", "/v1app_worker_1"]
    assert sorted(state["networks"]) == ["v1app_back", "v1app_default"]
    assert list(state["volumes"]) == ["v1app_data"]
    web = state["containers"]["/v1app_web_1"]
    assert web["health"] == "healthy" and web["networks"]["v1app_back"] == ["web", "webalias"]
    assert web["labels"]["com.docker.compose.service"] == "web"
    same(pair, dirs, "ps")
    same(pair, dirs, "ps", "--services")
    same(pair, dirs, "logs", "--no-color", "web")
    same(pair, dirs, "port", "web", "80")
    same(pair, dirs, "exec", "-T", "web", "sh", "-c", "echo $FOO $FROMFILE")

    # Service-name DNS: app (on back) finds web by name and by its alias there; worker
    # (on default) finds web, not app.
    _, k = same(pair, dirs, "exec", "-T", "app", "sh", "-c",
                "nslookup web >/dev/null && nslookup webalias >/dev/null && "
                "ping -c1 -W2 web >/dev/null && echo found")
    assert k.stdout == "found\n"
    _, k = same(pair, dirs, "exec", "-T", "worker", "sh", "-c",
                "ping -c1 -W2 web >/dev/null && echo web; ping -c1 -W1 app 2>&1 | head -1")
    assert k.stdout == "web\nping: bad address 'app'\n"

    # run --rm: its exit code and output (it sleeps first: compose v1 attaches after
    # its start, so a quicker program's output is a race on any engine).
    _, k = same(pair, dirs, "run", "--rm", "-T", "app", "sh", "-c",
                "sleep 0.5; echo from run; exit 3", progress=True)
    assert (k.returncode, k.stdout) == (3, "from run\n")
    _, k = same(pair, dirs, "run", "--rm", "-T", "web", "sh", "-c", "sleep 0.5; cat /www/*")
    assert k.stdout == "hello\n"
    _, k = same(pair, dirs, "run", "-d", "app", "sleep", "60")
    run_name = k.stdout.strip()
    d_run = pair.dockerd.cli("ps", "-aq", "--filter", "name=v1app_app_run").stdout.split()
    assert len(d_run) == 1 and run_name.startswith("v1app_app_run_")
    # compose's links (to the service's own containers) are ignored on a user network.
    views = []
    for s in pair.sides:
        [ref] = s.cli("ps", "-aq", "--filter", "name=v1app_app_run").stdout.split()
        [doc] = inspect(s, ref)
        views.append((doc["HostConfig"]["Links"], labels_of(s, pair, doc)))
        s.cli("rm", "-f", doc["Id"])
    assert views[1] == views[0]

    # Data in the named volume outlives down (without -v).
    same(pair, dirs, "exec", "-T", "web", "sh", "-c", "echo kept > /data/f")
    same(pair, dirs, "stop", "worker", progress=True)
    same(pair, dirs, "start", "worker", progress=True)
    same(pair, dirs, "restart", "app", progress=True)
    same(pair, dirs, "pause", "app", progress=True)
    same(pair, dirs, "ps", "app")
    same(pair, dirs, "unpause", "app", progress=True)
    same(pair, dirs, "kill", "-s", "KILL", "worker", progress=True)
    same(pair, dirs, "ps", "-a", "worker")
    d, k = same(pair, dirs, "top", "web", stdout=False)
    for res in (d, k):
        assert "httpd -f -p 80 -h /www" in res.stdout and res.stdout.startswith("v1app_web_1")
    same(pair, dirs, "up", "-d", "--scale", "worker=3", progress=True)
    state = same_state(pair)
    assert sum(n.startswith("/v1app_worker_") for n in state["containers"]) == 3

    # A changed service is recreated (the scale goes back to 1).
    changed = {s.name: dirs[s.name] / "docker-compose.yml" for s in pair.sides}
    for path in changed.values():
        path.write_text(APP.replace("FOO: bar", "FOO: baz"))
    _, k = same(pair, dirs, "up", "-d", progress=True)
    assert "Recreating v1app_web_1 ... done" in k.stderr
    _, k = same(pair, dirs, "exec", "-T", "web", "sh", "-c", "echo $FOO; cat /data/f")
    assert k.stdout == "baz\nkept\n"
    same_state(pair)

    same(pair, dirs, "down", progress=True)
    state = same_state(pair)
    assert state == {"containers": {}, "networks": {}, "volumes": state["volumes"]}
    assert list(state["volumes"]) == ["v1app_data"]
    same(pair, dirs, "up", "-d", progress=True)
    _, k = same(pair, dirs, "exec", "-T", "web", "cat", "/data/f")
    assert k.stdout == "kept\n"

    # An orphan (worker dropped from the file) goes with --remove-orphans; -v the volume.
    for path in changed.values():
        path.write_text(APP.split("  worker:")[0] + "volumes:\n" + APP.split("\nvolumes:\n")[1])
    same(pair, dirs, "down", "-v", "--remove-orphans", "-t", "1", progress=True)
    assert same_state(pair) == {"containers": {}, "networks": {}, "volumes": {}}


def test_exit_codes_and_unhealthy_dependencies(pair: ComposePair,
                                               project: Callable[..., Any]) -> None:
    dirs = project({"docker-compose.yml": """\
version: "3.8"
services:
  one:
    image: busybox
    command: ["sh", "-c", "echo one; sleep 1; echo done; exit 4"]
  two:
    image: busybox
    command: ["sleep", "30"]
    stop_signal: SIGKILL
    expose: ["5000"]
"""}, name="v1exit")
    # Attached: one's output (two's lines interleave with it), then its exit code.
    d, k = same(pair, dirs, "up", "--exit-code-from", "one", "--no-color", stdout=False)
    for res in (d, k):
        assert res.returncode == 4
        assert [ln for ln in res.stdout.splitlines() if ln.startswith("one_1")] == [
            "one_1  | one", "one_1  | done"]
    # A stopped container shows no ports, exposed ones neither.
    _, k = same(pair, dirs, "ps", "-a")
    assert "5000" not in k.stdout
    # `events --json` while a service restarts: compose's reading of the engine's events.
    watching = []
    for s in pair.sides:
        argv, env = pair.command(s, dirs[s.name], "events", "--json")
        out = (pair.scratch / f"events-{s.name}").open("w+")
        watching.append((out, subprocess.Popen(argv, env=env, stdout=out,
                                               stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL)))
    try:
        time.sleep(2)       # docker-compose starts (about 0.5 s) and subscribes
        same(pair, dirs, "start", "two", progress=True)
        same(pair, dirs, "restart", "-t", "1", "two", progress=True)
        time.sleep(1)
    finally:
        for _out, proc in watching:
            proc.terminate()
            proc.wait(10)
    seen = []
    for out, _ in watching:
        out.seek(0)
        seen.append([(e["service"], e["action"], sorted(e["attributes"]))
                     for e in map(json.loads, out.read().splitlines())])
        out.close()
    assert seen[1] == seen[0]
    actions = [a for _, a, _ in seen[1]]
    assert actions[0] == "start" and actions[-2:] == ["start", "restart"] and "die" in actions
    # "Going to remove a, b": newest first on both, and both were created at once.
    d, k = same(pair, dirs, "rm", "-f", "-s", progress=True, stdout=False)
    for res in (d, k):
        listed = res.stdout.strip().removeprefix("Going to remove ").split(", ")
        assert sorted(listed) == ["v1exit_one_1", "v1exit_two_1"]

    dirs = project({"docker-compose.yml": """\
version: "3.8"
services:
  db:
    image: busybox
    command: ["sleep", "600"]
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      timeout: 1s
      retries: 2
  api:
    image: busybox
    command: ["sleep", "600"]
    depends_on:
      db:
        condition: service_healthy
"""}, name="v1sick")
    _, k = same(pair, dirs, "up", "-d", progress=True)
    assert k.returncode == 1 and 'ERROR: for api  Container "<id>" is unhealthy.' in normalise(
        pair.ketchd, k.stderr)
    same(pair, dirs, "ps")
    same_state(pair, "v1sick")


OPTIONS = """\
version: "3.8"
services:
  built:
    build:
      context: ./img
      args:
        GREETING: hi-there
    image: v1built:latest
    stop_signal: SIGKILL
    tmpfs: /scratch
    user: "1000:1000"
    working_dir: /tmp
    hostname: myhost
    extra_hosts: ["somehost:10.1.2.3"]
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
    sysctls:
      net.ipv4.ip_forward: "0"
    init: true
    mem_limit: 64m
    pids_limit: 50
    shm_size: 32m
    restart: unless-stopped
    expose: ["9000"]
    links: ["peer:pal"]
    container_name: v1fixed
    logging:
      driver: json-file
      options: {max-size: "1m"}
  peer:
    image: busybox
    command: ["sleep", "600"]
    stop_signal: SIGKILL
    volumes:
      - ext:/ext
    networks:
      default:
        ipv4_address: 172.31.5.5
      extnet:
  sidecar:
    image: busybox
    command: ["sleep", "600"]
    stop_signal: SIGKILL
    network_mode: "service:peer"
    volumes_from: [peer]
networks:
  default:
    ipam:
      config: [{subnet: 172.31.5.0/24}]
    labels: {x: y}
  extnet:
    external: true
    name: v1ext_net
volumes:
  ext:
    external: true
    name: v1ext
"""
DOCKERFILE = """\
FROM busybox
ARG GREETING=hello
ENV GREETING=$GREETING
RUN echo "$GREETING" > /greeting
LABEL built=yes
EXPOSE 7000
CMD ["sh", "-c", "cat /greeting; sleep 600"]
"""


def options_view(side: Side) -> dict[str, Any]:
    """The HostConfig fields the service options above set, and the endpoint links."""
    [doc] = inspect(side, "v1fixed")
    hc = doc["HostConfig"]
    keys = ("Tmpfs", "Init", "Memory", "PidsLimit", "ShmSize", "Sysctls", "Ulimits",
            "LogConfig", "RestartPolicy", "CapAdd", "CapDrop", "ExtraHosts", "Links")
    [side_doc] = inspect(side, "v1opts_sidecar_1")
    [peer] = inspect(side, "v1opts_peer_1")
    return {"host_config": {k: hc.get(k) for k in keys},
            "config": {k: doc["Config"].get(k) for k in ("User", "WorkingDir", "Hostname",
                                                          "ExposedPorts", "Env")},
            "endpoint_links": sorted(doc["NetworkSettings"]["Networks"]["v1opts_default"]
                                     ["Links"] or []),
            "peer_ip": peer["NetworkSettings"]["Networks"]["v1opts_default"]["IPAddress"],
            "sidecar": (side_doc["HostConfig"]["NetworkMode"] == f"container:{peer['Id']}",
                        side_doc["HostConfig"]["VolumesFrom"] == [f"{peer['Id']}:rw"])}


def test_build_and_service_options(pair: ComposePair, project: Callable[..., Any]) -> None:
    for s in pair.sides:
        assert s.cli("network", "create", "v1ext_net").returncode == 0
        assert s.cli("volume", "create", "v1ext").returncode == 0
    try:
        dirs = project({"docker-compose.yml": OPTIONS, "img/Dockerfile": DOCKERFILE},
                       name="v1opts")
        same(pair, dirs, "config")
        d, k = same(pair, dirs, "build", stdout=False, timeout=300)
        for res in (d, k):
            assert "Successfully tagged v1built:latest" in res.stdout
        same(pair, dirs, "up", "-d", progress=True)
        same(pair, dirs, "ps")
        same(pair, dirs, "logs", "--no-color", "built")
        # The options as the container sees them; the link alias resolves from built
        # only (an endpoint link on a user-defined network), to peer's fixed address.
        # (Its limits are read off its pid 1: runc applies an exec's after it starts.)
        _, k = same(pair, dirs, "exec", "-T", "built", "sh", "-c",
                    "id; pwd; hostname; grep somehost /etc/hosts; "
                    "grep 'open files' /proc/1/limits | awk '{print $4, $5}'; "
                    "nslookup pal | grep -c 172.31.5.5; nslookup peer_1 | grep -c 172.31.5.5")
        assert k.stdout == ("uid=1000 gid=1000 groups=1000\n/tmp\nmyhost\n"
                            "10.1.2.3\tsomehost\n1024 2048\n1\n1\n")
        _, k = same(pair, dirs, "exec", "-T", "peer", "sh", "-c",
                    "ping -c1 -W1 pal 2>&1 | head -1; ping -c1 -W1 myhost >/dev/null && echo ok")
        assert k.stdout == "ping: bad address 'pal'\nok\n"
        _, k = same(pair, dirs, "exec", "-T", "sidecar", "sh", "-c",
                    "ls -d /ext; ip -4 -o addr | grep -c 172.31.5.5/24")
        assert k.stdout == "/ext\n1\n"
        d_view, k_view = pair.each(options_view)
        assert k_view == d_view
        state = same_state(pair, "v1opts")
        assert state["networks"] == {"v1opts_default": {"com.docker.compose.network": "default",
                                                        "com.docker.compose.project": "v1opts",
                                                        "x": "y"}}
        same(pair, dirs, "down", "-v", progress=True)
        assert same_state(pair, "v1opts") == {"containers": {}, "networks": {}, "volumes": {}}
    finally:
        for s in pair.sides:
            s.cli("rm", "-f", "v1fixed", "v1opts_peer_1", "v1opts_sidecar_1")
            s.cli("network", "rm", "v1ext_net")
            s.cli("volume", "rm", "v1ext")
            s.cli("rmi", "v1built:latest")


def test_negotiated_api_version(pair: ComposePair, project: Callable[..., Any]) -> None:
    """Unpinned, docker-compose speaks ketchd's own API version (1.45): a project comes
    up, runs and goes. (Recreating a container needs image inspect's ContainerConfig,
    which API 1.45 no longer has: compose v1 fails there as against Docker 26+.)"""
    dirs = project({"docker-compose.yml": """\
version: "3.8"
services:
  a:
    image: busybox
    command: ["sleep", "600"]
    stop_signal: SIGKILL
  b:
    image: busybox
    command: ["sleep", "600"]
    stop_signal: SIGKILL
"""}, name="v1auto")
    k = pair.ketchd
    for args in (("up", "-d"), ("ps", "--services"), ("exec", "-T", "a", "ping", "-c1", "b"),
                 ("run", "--rm", "-T", "b", "sh", "-c", "sleep 0.3; echo ok")):
        res = pair.compose(k, dirs[k.name], *args, api=None)
        assert res.returncode == 0, str(res)
    assert res.stdout == "ok\n"
    res = pair.compose(k, dirs[k.name], "down", api=None)
    assert res.returncode == 0, str(res)
    assert engine_state(k, pair, "v1auto") == {"containers": {}, "networks": {}, "volumes": {}}
