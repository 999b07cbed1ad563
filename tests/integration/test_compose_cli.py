"""``ketch compose`` against a private ketchd: the commands as a user runs them.

Each test writes a compose project in a temporary directory, runs ``ketch
compose`` there as a subprocess (no terminal, as CI), and checks what the user
sees (output, exit codes, messages) and what the engine holds afterwards. Every
test ends with ``down -v --remove-orphans`` in a finalizer, and the daemon
fixture removes whatever is left, also when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.registries import free_port
from tests.integration.test_daemon_system import Ketchd

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

KETCH = str(Path(sys.executable).with_name("ketch"))


class Project:
    def __init__(self, k: Ketchd, d: Path) -> None:
        self.k = k
        self.d = d
        self.name = d.name.replace("_", "-").lower()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {n: v for n, v in os.environ.items()
               if not n.startswith(("DOCKER_", "KETCH_", "COMPOSE_"))}
        env["KETCH_HOST"] = self.k.host
        env.update(extra or {})
        return env

    def write(self, text: str, name: str = "compose.yaml") -> None:
        (self.d / name).write_text(text)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
            check: bool | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([KETCH, "compose", "-p", self.name, *args], cwd=self.d,
                             env=self.env(env), capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert res.returncode == 0, f"{args}: {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def ketch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KETCH, *args], env=self.env(), capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    def left(self) -> tuple[list[str], list[str], list[str]]:
        flt = f"label=com.docker.compose.project={self.name}"
        return (self.ketch("ps", "-aq", "--filter", flt).stdout.split(),
                self.ketch("network", "ls", "-q", "--filter", flt).stdout.split(),
                self.ketch("volume", "ls", "-q", "--filter", flt).stdout.split())


def get(url: str, wait: float = 15) -> str:
    """The page, once the server in the container listens (``--wait`` sees it running,
    which can be a moment before it has bound its port)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return str(urllib.request.urlopen(url, timeout=5).read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def proj(loaded_ketchd: Ketchd, tmp_path: Path) -> Iterator[Project]:
    d = tmp_path / "app"
    d.mkdir()
    p = Project(loaded_ketchd, d)
    yield p
    p.run("down", "-v", "--remove-orphans", "-t", "0", timeout=120)


def test_up_attached_prefixes_and_exit_codes(proj: Project) -> None:
    proj.write("""
services:
  a:
    image: busybox
    command: ["sh", "-c", "echo one; sleep 0.5; echo two; exit 3"]
  b:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo b-ready; while :; do sleep 0.1; done"]
""")
    res = proj.run("up", "--exit-code-from", "a", "--no-color")
    assert res.returncode == 3, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "Attaching to a-1, b-1"
    assert "a-1  | one" in lines and "a-1  | two" in lines, res.stdout
    assert "b-1  | b-ready" in lines
    assert "a-1 exited with code 3" in lines
    assert "Aborting on container exit..." in res.stderr
    # b was stopped with the project
    state = proj.ketch("inspect", "-f", "{{.State.Status}}", f"{proj.name}-b-1")
    assert state.stdout.strip() == "exited"
    # a second attached up shows only new output, not the old runs'
    res = proj.run("up", "--abort-on-container-exit", "--no-log-prefix")
    assert res.returncode == 3
    assert res.stdout.count("one\n") == 1, res.stdout
    logs = proj.run("logs", "--no-color", "a", check=True)
    assert logs.stdout.count("a-1  | one") == 2, logs.stdout
    tail = proj.run("logs", "--tail", "1", "--no-log-prefix", "a", check=True)
    assert tail.stdout == "two\n"
    assert proj.run("logs", "nosuch").returncode == 1


def test_ports_volumes_dns_and_restart(proj: Project) -> None:
    port = free_port()
    proj.write(f"""
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && httpd -f -h /www -p 80"]
    ports: ["127.0.0.1:{port}:80"]
    depends_on:
      store: {{condition: service_healthy, restart: true}}
  store:
    image: busybox
    command: ["sh", "-c", "[ -f /data/n ] || echo 0 > /data/n; touch /tmp/up; exec sleep 1000"]
    volumes: ["data:/data"]
    healthcheck: {{test: ["CMD", "test", "-f", "/tmp/up"], interval: 1s, start_period: 5s}}
volumes:
  data: {{}}
""")
    res = proj.run("up", "-d", "--wait", check=True)
    assert f"Container {proj.name}-store-1  Healthy" in res.stderr
    body = get(f"http://127.0.0.1:{port}/")
    assert body.strip(), body
    assert proj.run("port", "web", "80", check=True).stdout == f"127.0.0.1:{port}\n"
    # service-name DNS on the project network
    proj.run("exec", "-T", "web", "nslookup", "store", check=True)
    proj.run("exec", "-T", "store", "sh", "-c", "echo 41 > /data/n", check=True)
    # restarting store restarts web too (depends_on restart: true)
    before = proj.ketch("inspect", "-f", "{{.State.StartedAt}}", f"{proj.name}-web-1").stdout
    res = proj.run("restart", "-t", "1", "store", check=True)
    after = proj.ketch("inspect", "-f", "{{.State.StartedAt}}", f"{proj.name}-web-1").stdout
    assert before != after, res.stderr
    # `up` replacing store (its config changed) restarts web, without recreating it
    web_id = proj.ketch("inspect", "-f", "{{.Id}}", f"{proj.name}-web-1").stdout
    proj.write((proj.d / "compose.yaml").read_text().replace(
        'volumes: ["data:/data"]', 'volumes: ["data:/data"]\n    environment: {V: "2"}'))
    res = proj.run("up", "-d", "--wait", "-t", "1", check=True)
    assert f"Container {proj.name}-store-1  Recreated" in res.stderr, res.stderr
    assert f"Container {proj.name}-web-1  Restarted" in res.stderr, res.stderr
    assert proj.ketch("inspect", "-f", "{{.Id}}", f"{proj.name}-web-1").stdout == web_id
    assert proj.run("exec", "-T", "store", "cat", "/data/n", check=True).stdout == "41\n"
    # the named volume outlives down, and goes with down -v
    proj.run("down", "-t", "1", check=True)
    assert proj.left() == ([], [], [f"{proj.name}_data"])
    proj.run("up", "-d", "--wait", check=True)
    out = proj.run("exec", "-T", "store", "cat", "/data/n", check=True).stdout
    assert out == "41\n"
    proj.run("down", "-v", "-t", "1", check=True)
    assert proj.left() == ([], [], [])


def test_scale_run_exec_and_listing(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: sleep 1000
    environment: {GREETING: hello}
    labels: {team: core}
""")
    proj.run("up", "-d", "--scale", "w=2", check=True)
    ps = proj.run("ps", "--format", "{{.Name}} {{.Service}} {{.State}}", check=True)
    assert ps.stdout == f"{proj.name}-w-1 w running\n{proj.name}-w-2 w running\n"
    js = [json.loads(line) for line in proj.run("ps", "--format", "json",
                                                 check=True).stdout.splitlines()]
    assert [j["Name"] for j in js] == [f"{proj.name}-w-1", f"{proj.name}-w-2"]
    assert proj.run("ps", "--services", check=True).stdout == "w\n"
    assert len(proj.run("ps", "-q", check=True).stdout.split()) == 2
    out = proj.run("exec", "-T", "--index", "2", "w", "sh", "-c", "echo $GREETING $HOSTNAME",
                   check=True).stdout
    assert out.startswith("hello ")
    res = proj.run("exec", "-T", "w", "sh", "-c", "exit 5")
    assert res.returncode == 5, res.stdout + res.stderr
    run = proj.run("run", "--rm", "-T", "-e", "GREETING=bye", "w", "sh", "-c", "echo $GREETING")
    assert (run.returncode, run.stdout) == (0, "bye\n"), run.stderr
    run = proj.run("run", "--rm", "-T", "w", "sh", "-c", "exit 9")
    assert run.returncode == 9, run.stdout + run.stderr
    # run --rm leaves no container behind
    assert len(proj.left()[0]) == 2
    ls = proj.run("ls", check=True).stdout
    assert proj.name in ls and "running(2)" in ls, ls
    top = proj.run("top", check=True).stdout
    assert "sleep 1000" in top
    images = proj.run("images", check=True).stdout
    assert "busybox" in images
    proj.run("pause", "w", check=True)
    assert "paused" in proj.run("ps", "--format", "{{.State}}").stdout
    proj.run("unpause", "w", check=True)
    proj.run("stop", "-t", "0", check=True)
    assert proj.run("ps", "--format", "{{.Name}}", check=True).stdout == ""
    proj.run("start", check=True)
    proj.run("kill", "-s", "KILL", "w", check=True)
    proj.run("rm", "-f", check=True)
    assert proj.left()[0] == []
    # scale down removes the highest numbers
    proj.run("up", "-d", "--scale", "w=3", check=True)
    proj.run("up", "-d", "--scale", "w=1", "-t", "0", check=True)
    assert proj.run("ps", "--format", "{{.Name}}", check=True).stdout == f"{proj.name}-w-1\n"


def test_build_profiles_env_and_config(proj: Project) -> None:
    (proj.d / "img").mkdir()
    (proj.d / "img" / "Dockerfile").write_text(
        "FROM busybox\nARG MSG=none\nRUN echo $MSG > /msg\nCMD [\"cat\", \"/msg\"]\n")
    (proj.d / ".env").write_text("TAG_MSG=from-dotenv\nEXTRA=x\n")
    proj.write("""
services:
  app:
    build:
      context: ./img
      args: {MSG: "${TAG_MSG}"}
  tool:
    image: busybox
    profiles: [tools]
    command: ["echo", "tool ran"]
""")
    res = proj.run("up", "--no-color", check=True)
    assert "app-1  | from-dotenv" in res.stdout, res.stdout + res.stderr
    assert "tool" not in res.stdout
    images = proj.ketch("images", "--format", "{{.Repository}}").stdout.split()
    assert f"{proj.name}-app" in images
    assert proj.run("config", "--services", check=True).stdout == "app\n"
    assert proj.run("--profile", "tools", "config", "--services",
                    check=True).stdout == "app\ntool\n"
    assert proj.run("config", "--services", env={"COMPOSE_PROFILES": "tools"},
                    check=True).stdout == "app\ntool\n"
    doc = json.loads(proj.run("config", "--format", "json", check=True).stdout)
    assert doc["services"]["app"]["build"]["args"] == {"MSG": "from-dotenv"}
    # the environment wins over .env
    doc = json.loads(proj.run("config", "--format", "json", env={"TAG_MSG": "env"},
                              check=True).stdout)
    assert doc["services"]["app"]["build"]["args"] == {"MSG": "env"}
    res = proj.run("--profile", "tools", "run", "--rm", "-T", "tool")
    assert (res.returncode, res.stdout) == (0, "tool ran\n"), res.stderr
    proj.run("down", "--rmi", "local", check=True)
    images = proj.ketch("images", "--format", "{{.Repository}}").stdout.split()
    assert f"{proj.name}-app" not in images and "busybox" in images


@pytest.mark.parametrize("text, words", [
    ("services:\n  a: [unclosed\n", "compose.yaml"),
    ("services:\n  a:\n    image: busybox\n    bogus: 1\n", "bogus"),
    ("services:\n  a:\n    image: busybox\n    ports: ['3000:abc']\n",
     'services.a.ports[0]: invalid port "3000:abc"'),
    ("services:\n  a: {image: busybox, depends_on: [b]}\n  b: {image: busybox, depends_on: [a]}\n",
     "dependency cycle detected"),
    ("services:\n  a: {image: 'busybox:${TAG:?TAG must be set}'}\n", "TAG must be set"),
])
def test_bad_input_names_the_problem(proj: Project, text: str, words: str) -> None:
    proj.write(text)
    res = proj.run("up", "-d")
    assert res.returncode != 0
    assert words in res.stderr, res.stderr
    assert proj.left() == ([], [], [])


def test_failures_stop_cleanly(proj: Project) -> None:
    port = free_port()
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        proj.write(f"""
services:
  early:
    image: busybox
    command: ["sh", "-c", "sleep 1; exit 2"]
    healthcheck: {{test: ["CMD", "false"], interval: 5s}}
  web:
    image: busybox
    command: sleep 1000
    ports: ["127.0.0.1:{port}:80"]
""")
        res = proj.run("up", "-d", "web")
        assert res.returncode == 1
        assert str(port) in res.stderr, res.stderr
        proj.run("down", check=True)
        assert proj.left() == ([], [], [])
    finally:
        holder.close()
    # --wait fails when a service exits before it is healthy, naming it
    res = proj.run("up", "-d", "--wait", "early")
    assert res.returncode == 1
    assert f"{proj.name}-early-1 exited (2)" in res.stderr, res.stderr
    proj.run("down", check=True)
    assert proj.left() == ([], [], [])


def test_watch_syncs_files(proj: Project) -> None:
    (proj.d / "src").mkdir()
    (proj.d / "src" / "a.txt").write_text("v1\n")
    proj.write("""
services:
  w:
    image: busybox
    command: sleep 1000
    develop:
      watch:
        - {action: sync, path: ./src, target: /app}
""")
    proc = subprocess.Popen([KETCH, "compose", "-p", proj.name, "watch"], cwd=proj.d,
                            env=proj.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while proj.run("ps", "--format", "{{.State}}").stdout.strip() != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
        (proj.d / "src" / "a.txt").write_text("v2\n")
        while True:
            out = proj.run("exec", "-T", "w", "cat", "/app/a.txt")
            if out.stdout == "v2\n":
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_service_keys_reach_the_container(proj: Project) -> None:
    (proj.d / "token.txt").write_text("s3cret\n")
    proj.write("""
services:
  s:
    image: busybox
    command: ["sh", "-c", "exec sleep 1000"]
    hostname: box
    user: "1000:1000"
    working_dir: /tmp
    init: true
    stop_signal: SIGUSR1
    stop_grace_period: 3s
    mem_limit: 64m
    cpus: 0.5
    pids_limit: 50
    cap_drop: [NET_RAW]
    ulimits: {nofile: {soft: 1024, hard: 2048}}
    sysctls: {net.ipv4.ip_local_port_range: "20000 30000"}
    extra_hosts: ["db.example:10.1.2.3"]
    shm_size: 16m
    labels: {team: core}
    secrets: [token, {source: envsecret, target: other, mode: 0400}]
    configs: [{source: motd, target: /etc/motd}]
    restart: on-failure:2
  ro:
    image: busybox
    command: sleep 1000
    read_only: true
    tmpfs: [/scratch]
secrets:
  token: {file: ./token.txt}
  envsecret: {environment: SECRET_VALUE}
configs:
  motd: {content: "hello from compose"}
""")
    proj.run("up", "-d", env={"SECRET_VALUE": "from-env"}, check=True)

    def sh(cmd: str) -> str:
        return proj.run("exec", "-T", "s", "sh", "-c", cmd, check=True).stdout.strip()

    assert sh("hostname") == "box"
    assert sh("id -u; id -g").split() == ["1000", "1000"]
    assert sh("pwd") == "/tmp"
    assert sh("cat /run/secrets/token") == "s3cret"
    assert proj.run("exec", "-T", "-u", "0", "s", "cat", "/run/secrets/other",
                    check=True).stdout == "from-env"
    assert sh("cat /etc/motd") == "hello from compose"
    assert sh("grep db.example /etc/hosts").split()[0] == "10.1.2.3"
    assert sh("ulimit -n") == "1024"
    assert sh("cat /proc/sys/net/ipv4/ip_local_port_range").split() == ["20000", "30000"]
    assert proj.run("exec", "-T", "ro", "touch", "/x").returncode != 0   # read-only root
    proj.run("exec", "-T", "ro", "touch", "/scratch/x", check=True)       # tmpfs writable
    fmt = ("{{.HostConfig.Init}} {{.Config.StopSignal}} {{.Config.StopTimeout}} "
           "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} "
           "{{.HostConfig.CapDrop}} {{.HostConfig.ShmSize}} {{.HostConfig.RestartPolicy.Name}}:"
           "{{.HostConfig.RestartPolicy.MaximumRetryCount}} {{index .Config.Labels \"team\"}}")
    got = proj.ketch("inspect", "-f", fmt, f"{proj.name}-s-1").stdout.split()
    assert got == ["true", "SIGUSR1", "3", str(64 << 20), "500000000", "50", "[NET_RAW]",
                   str(16 << 20), "on-failure:2", "core"], got


def test_project_by_name_alone(proj: Project, tmp_path: Path) -> None:
    """``-p NAME`` without the compose file: ps, logs and down find the project by its
    labels, as compose does, and down removes its network and (-v) volumes too."""
    proj.write("""
services:
  db: {image: busybox, command: ["sh", "-c", "echo db-says-hi; exec sleep 1000"],
       volumes: ["data:/data"]}
  app: {image: busybox, command: sleep 1000, depends_on: [db]}
volumes:
  data: {}
""")
    proj.run("up", "-d", check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = Project(proj.k, elsewhere)
    other.name = proj.name
    ps = other.run("ps", "--format", "{{.Service}}", check=True)
    assert ps.stdout == "app\ndb\n"
    assert "db-says-hi" in other.run("logs", "db", check=True).stdout
    res = other.run("down", "-v", "-t", "0", check=True)
    assert "orphan" not in res.stderr
    lines = [ln.strip() for ln in res.stderr.splitlines()]
    assert lines.index(f"Container {proj.name}-app-1  Removed") < \
        lines.index(f"Container {proj.name}-db-1  Stopping"), res.stderr
    assert proj.left() == ([], [], [])


def test_push_pull_and_pull_policy(proj: Project, start_registry: Any) -> None:
    reg = start_registry("ketch")
    image = f"{reg.host}/compose/app:1"
    (proj.d / "app").mkdir()
    (proj.d / "app" / "Dockerfile").write_text("FROM busybox\nRUN echo pushed > /what\n"
                                               "CMD [\"cat\", \"/what\"]\n")
    proj.write(f"""
services:
  app:
    build: ./app
    image: {image}
""")
    proj.run("build", check=True)
    res = proj.run("push", check=True)
    assert "digest: sha256:" in res.stdout, res.stdout + res.stderr
    proj.ketch("rmi", image)
    assert proj.ketch("image", "inspect", image).returncode != 0
    proj.write(f"""
services:
  app:
    image: {image}
    pull_policy: always
""")
    res = proj.run("up", "--no-color", check=True)
    assert f"Image {image}  Pulled" in res.stderr, res.stderr
    assert "app-1  | pushed" in res.stdout
    proj.ketch("rmi", "-f", image)
    proj.run("pull", "-q", check=True)
    assert proj.ketch("image", "inspect", image).returncode == 0
