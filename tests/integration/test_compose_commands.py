"""``ketch compose`` commands against a private ketchd, as compose v2 prints and exits.

tests/integration/test_compose_cli.py covers up/down, the attached output, build,
profiles and bad input; this file covers the other commands' forms: ps (columns,
JSON, filters, one-off containers), ls, images, top, events, port, cp, wait, kill,
rm, logs, run and exec flags, and the global --progress. Every test ends with
``down -v --remove-orphans`` in a finalizer, and the daemon fixture removes what is
left, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.registries import free_port
from tests.integration.test_compose_cli import KETCH, Project
from tests.integration.test_daemon_system import Ketchd

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture
def proj(loaded_ketchd: Ketchd, tmp_path: Path) -> Iterator[Project]:
    d = tmp_path / "cmds"
    d.mkdir()
    p = Project(loaded_ketchd, d)
    yield p
    p.run("down", "-v", "--remove-orphans", "-t", "0", timeout=120)


def feed(p: Project, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KETCH, "compose", "-p", p.name, *args], cwd=p.d, env=p.env(),
                          input=stdin, capture_output=True, text=True, timeout=60)


def inspect(p: Project, name: str) -> dict:  # type: ignore[type-arg]
    res = p.ketch("inspect", name)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout)[0])


def until(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def state(p: Project, name: str) -> str:
    return p.ketch("inspect", "-f", "{{.State.Status}}", name).stdout.strip()


def test_ps_forms_filters_and_one_offs(proj: Project) -> None:
    port = free_port()
    proj.write(f"""
services:
  web:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
    ports: ["127.0.0.1:{port}:80"]
  job:
    image: busybox
    command: ["sh", "-c", "exit 3"]
""")
    res = proj.run("--progress", "quiet", "up", "-d", check=True)
    assert res.stderr == ""                 # --progress quiet: no progress lines
    until(lambda: state(proj, f"{proj.name}-job-1") == "exited")
    one_off = proj.run("run", "-d", "web", "sleep", "1000", check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", one_off), one_off

    table = proj.run("ps", check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS",
                                "PORTS"]
    assert len(table) == 2                  # the exited job and the one-off are left out
    assert table[1].startswith(f"{proj.name}-web-1 ")
    assert f"127.0.0.1:{port}->80/tcp" in table[1] and " busybox " in table[1]
    assert '"sh -c \'trap \'exit 0…"' in table[1]

    names = proj.run("ps", "-a", "--format", "{{.Name}}", check=True).stdout.split()
    assert names[:2] == [f"{proj.name}-job-1", f"{proj.name}-web-1"]
    assert len(names) == 3 and names[2].startswith(f"{proj.name}-web-run-")
    assert proj.run("ps", "-a", "--services", check=True).stdout == "job\nweb\n"
    assert proj.run("ps", "--status", "exited", "--format", "{{.Name}} {{.ExitCode}}",
                    check=True).stdout == f"{proj.name}-job-1 3\n"
    running = proj.run("ps", "--filter", "status=running", "--format", "{{.Service}}",
                       check=True).stdout.split()
    assert running == ["web", "web"]        # a status filter includes the one-off
    assert proj.run("ps", "--status", "paused", check=True).stdout.splitlines()[1:] == []

    docs = [json.loads(line) for line in
            proj.run("ps", "-a", "--format", "json", check=True).stdout.splitlines()]
    assert [d["Name"] for d in docs] == names
    web = docs[1]
    assert web["Publishers"] == [{"URL": "127.0.0.1", "TargetPort": 80,
                                  "PublishedPort": port, "Protocol": "tcp"}]
    assert (web["Project"], web["Service"], web["State"]) == (proj.name, "web", "running")
    assert web["Networks"] == f"{proj.name}_default" and web["ExitCode"] == 0
    assert docs[0]["ExitCode"] == 3 and docs[0]["State"] == "exited"
    assert len(web["ID"]) == 12

    ids = proj.run("ps", "-q", check=True).stdout.split()
    assert len(ids) == 1 and len(ids[0]) == 64
    full = proj.run("ps", "--no-trunc", "--format", "{{.ID}}", check=True).stdout.strip()
    assert full == ids[0]
    res = proj.run("ps", "nosuch")
    assert res.returncode == 1 and "no such service: nosuch" in res.stderr
    # without the compose file, by project name alone
    os.rename(proj.d / "compose.yaml", proj.d / "elsewhere.yaml")
    try:
        assert proj.run("ps", "--format", "{{.Name}}", check=True).stdout == \
            f"{proj.name}-web-1\n"
    finally:
        os.rename(proj.d / "elsewhere.yaml", proj.d / "compose.yaml")


def test_ls_images_and_top(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: sleep 1000
""")
    proj.run("up", "-d", "--scale", "w=2", check=True)
    files = str(proj.d / "compose.yaml")
    ls = proj.run("ls", check=True).stdout.splitlines()
    assert ls[0] == "NAME                STATUS              CONFIG FILES"
    mine = [line for line in ls if line.split()[0] == proj.name]
    assert mine and mine[0].split() == [proj.name, "running(2)", files]
    listed = json.loads(proj.run("ls", "--format", "json", check=True).stdout)
    assert {"Name": proj.name, "Status": "running(2)", "ConfigFiles": files} in listed
    assert proj.run("ls", "-q", "--filter", f"name=^{proj.name}$",
                    check=True).stdout == proj.name + "\n"

    images = proj.run("images", check=True).stdout.splitlines()
    assert images[0].split() == ["CONTAINER", "REPOSITORY", "TAG", "PLATFORM", "IMAGE", "ID",
                                 "SIZE", "CREATED"]
    assert [line.split()[:3] for line in images[1:]] == [
        [f"{proj.name}-w-1", "busybox", "latest"], [f"{proj.name}-w-2", "busybox", "latest"]]
    assert images[1].endswith(" ago")
    docs = json.loads(proj.run("images", "--format", "json", check=True).stdout)
    assert sorted(d["ContainerName"] for d in docs) == [f"{proj.name}-w-1", f"{proj.name}-w-2"]
    assert {d["Repository"] for d in docs} == {"busybox"} and docs[0]["Size"] > 0
    ids = proj.run("images", "-q", check=True).stdout.split()
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{64}", ids[0])

    top = proj.run("top", check=True).stdout.splitlines()
    header = top[0].split()
    assert header[:2] == ["SERVICE", "#"] and header[-1] == "CMD" and "PID" in header
    assert [line.split()[:2] for line in top[1:]] == [["w", "1"], ["w", "2"]]
    assert all(line.endswith("sleep 1000") for line in top[1:])

    proj.run("stop", "-t", "0", check=True)
    assert proj.name not in proj.run("ls", "-q", check=True).stdout.split()
    listed = json.loads(proj.run("ls", "-a", "--format", "json", check=True).stdout)
    assert {"Name": proj.name, "Status": "exited(2)", "ConfigFiles": files} in listed
    assert proj.run("top", check=True).stdout == ""


def test_events_text_and_json(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: sleep 1000
""")
    proj.run("up", "-d", check=True)
    lines: list[str] = []
    proc = subprocess.Popen([KETCH, "compose", "-p", proj.name, "events", "--json"],
                            cwd=proj.d, env=proj.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1)
        proj.run("restart", "-t", "0", check=True)
        until(lambda: any('"action":"start"' in line for line in lines))
    finally:
        proc.terminate()
        proc.wait(10)
    start = json.loads(next(line for line in lines if '"action":"start"' in line))
    assert sorted(start) == ["action", "attributes", "id", "service", "time", "type"]
    assert (start["service"], start["type"]) == ("w", "container")
    assert start["attributes"]["name"] == f"{proj.name}-w-1"
    assert not any(k.startswith("com.docker.compose.") for k in start["attributes"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
                        start["time"])
    # the text form, over a window in the past
    since = str(int(time.time()) - 60)
    text = proj.run("events", "--since", since, "--until", str(int(time.time()) + 1),
                    check=True).stdout
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} container start [0-9a-f]{64} "
                     rf"\(.*name={proj.name}-w-1.*\)\n\n", text, re.M), text


def test_port_cp_wait_kill_rm(proj: Project) -> None:
    port = free_port()
    proj.write(f"""
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && exec httpd -f -h /www -p 80"]
    ports: ["127.0.0.1:{port}:80"]
  w:
    image: busybox
    command: sleep 1000
  j:
    image: busybox
    command: ["sh", "-c", "sleep 1; exit 4"]
    profiles: [job]
""")
    proj.run("up", "-d", "--scale", "w=2", check=True)
    assert proj.run("port", "web", "80", check=True).stdout == f"127.0.0.1:{port}\n"
    assert proj.run("port", "--protocol", "TCP", "web", "80",
                    check=True).stdout == f"127.0.0.1:{port}\n"
    res = proj.run("port", "web", "81")
    assert res.returncode == 1
    assert f"no port 81/tcp for container {proj.name}-web-1: {port}/tcp" in res.stderr
    res = proj.run("port", "--index", "3", "w", "80")
    assert res.returncode == 1 and 'service "w" is not running container #3' in res.stderr

    # cp: to a service goes to each of its containers, from it reads the first
    (proj.d / "f.txt").write_text("hello\n")
    proj.run("cp", "f.txt", "w:/tmp/f.txt", check=True)
    for n in ("1", "2"):
        assert proj.run("exec", "-T", "--index", n, "w", "cat", "/tmp/f.txt",
                        check=True).stdout == "hello\n"
    proj.run("exec", "-T", "--index", "2", "w", "sh", "-c", "echo two > /tmp/f.txt", check=True)
    proj.run("cp", "--index", "2", "w:/tmp/f.txt", "back2.txt", check=True)
    assert (proj.d / "back2.txt").read_text() == "two\n"
    proj.run("cp", "w:/tmp/f.txt", str(proj.d / "back1.txt"), check=True)
    assert (proj.d / "back1.txt").read_text() == "hello\n"
    res = proj.run("cp", "nosuch:/x", "y")
    assert res.returncode == 1 and 'no container found for service "nosuch"' in res.stderr

    # wait: the exit code of what it waited for, and compose's line for each
    proj.run("--profile", "job", "up", "-d", "j", check=True)
    res = proj.run("--profile", "job", "wait", "j")
    assert res.returncode == 4, res.stderr
    assert re.fullmatch(r'container "[0-9a-f]{64}" exited with status code 4\n', res.stdout)

    # kill with nothing running says so, and succeeds
    proj.run("stop", "-t", "0", "w", check=True)
    res = proj.run("kill", "w")
    assert (res.returncode, res.stderr) == (0, "no container to kill")

    # rm: one-off containers are not its business; it asks, and -f says what it removes
    proj.run("run", "-T", "w", "true", check=True)
    res = feed(proj, "rm", "w", stdin="n\n")
    assert res.returncode == 0
    assert res.stdout == f"Going to remove {proj.name}-w-1, {proj.name}-w-2\n"
    assert state(proj, f"{proj.name}-w-1") == "exited"
    res = proj.run("rm", "-f", "w", check=True)
    assert res.stdout == f"Going to remove {proj.name}-w-1, {proj.name}-w-2\n"
    assert f"Container {proj.name}-w-1  Removed" in res.stderr
    res = proj.run("rm", "-f", "w", check=True)
    assert (res.stdout, res.stderr) == ("", "No stopped containers\n")
    left = proj.run("ps", "-a", "--format", "{{.Name}}", check=True).stdout.split()
    assert any(n.startswith(f"{proj.name}-w-run-") for n in left), left
    res = proj.run("rm", "-s", "-f", "web", check=True)
    assert f"Going to remove {proj.name}-web-1" in res.stdout
    assert state(proj, f"{proj.name}-web-1") == ""


def test_logs_flags(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: ["sh", "-c", "echo from-$$HOSTNAME; exec sleep 1000"]
  quiet:
    image: busybox
    command: ["sh", "-c", "echo hidden; exec sleep 1000"]
    attach: false
""")
    proj.run("up", "-d", "--scale", "w=2", check=True)
    w2 = inspect(proj, f"{proj.name}-w-2")["Config"]["Hostname"]
    until(lambda: "from-" in proj.run("logs", "--index", "2", "w").stdout)
    out = proj.run("logs", "--no-log-prefix", "--index", "2", "w", check=True).stdout
    assert out == f"from-{w2}\n"
    stamped = proj.run("logs", "-t", "--no-color", "--index", "1", "w", check=True).stdout
    assert re.fullmatch(r"w-1  \| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z from-\w+\n", stamped), \
        stamped
    # attach: false keeps a service out of `logs` unless it is named
    every = proj.run("logs", "--no-color", check=True).stdout
    assert "hidden" not in every and every.count("from-") == 2
    assert "hidden" in proj.run("logs", "quiet", check=True).stdout
    assert proj.run("logs", "--since", "2100-01-01T00:00:00Z", "w", check=True).stdout == ""
    assert proj.run("logs", "--until", "2000-01-01T00:00:00Z", "w", check=True).stdout == ""
    assert proj.run("logs", "--since", "10m", "--no-log-prefix", "--index", "2", "w",
                    check=True).stdout == f"from-{w2}\n"
    res = proj.run("logs", "--index", "3", "w")
    assert res.returncode == 1 and 'service "w" is not running container #3' in res.stderr


def test_run_flags(proj: Project) -> None:
    port, svc_port = free_port(), free_port()
    (proj.d / "data").mkdir()
    (proj.d / "data" / "f").write_text("mounted\n")
    proj.write(f"""
services:
  app:
    image: busybox
    command: ["echo", "default command"]
    ports: ["127.0.0.1:{svc_port}:8080"]
    depends_on: [db]
  db:
    image: busybox
    command: sleep 1000
""")
    env = {"FROMSHELL": "shell-value"}
    res = proj.run("run", "--rm", "-T", "--no-deps", "-e", "FROMSHELL", "-e", "B=2", "app",
                   "sh", "-c", "echo $FROMSHELL $B", env=env)
    assert (res.returncode, res.stdout) == (0, "shell-value 2\n"), res.stderr
    assert proj.run("ps", "-a", "--services", check=True).stdout == "\n"   # --no-deps: no db
    res = proj.run("run", "--rm", "-T", "-u", "1234", "-w", "/tmp", "app", "sh", "-c",
                   "id -u; pwd", check=True)
    assert res.stdout == "1234\n/tmp\n"
    res = proj.run("run", "--rm", "-T", "--entrypoint", "sh -c", "app", "echo from-entrypoint",
                   check=True)
    assert res.stdout == "from-entrypoint\n"
    res = proj.run("run", "--rm", "-T", "-v", f"{proj.d / 'data'}:/data:ro", "app", "cat",
                   "/data/f", check=True)
    assert res.stdout == "mounted\n"
    assert proj.run("run", "--rm", "-T", "-q", "app", check=True).stdout == ""
    # with its dependencies (started first) by default
    assert proj.run("run", "--rm", "-T", "app", check=True).stdout == "default command\n"
    assert state(proj, f"{proj.name}-db-1") == "running"

    cid = proj.run("run", "-d", "--name", "custom-run", "-l", "team=core", "-p",
                   f"127.0.0.1:{port}:9000", "app", "sleep", "1000", check=True).stdout.strip()
    info = inspect(proj, "custom-run")
    assert info["Id"] == cid
    labels = info["Config"]["Labels"]
    assert labels["team"] == "core" and labels["com.docker.compose.oneoff"] == "True"
    assert "com.docker.compose.container-number" not in labels     # as compose's one-offs
    assert labels["com.docker.compose.service"] == "app" and labels["com.docker.compose.slug"]
    bindings = info["HostConfig"]["PortBindings"]
    assert bindings == {"9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    # the service's own ports only with --service-ports
    info = inspect(proj, proj.run("run", "-d", "-P", "app", "sleep", "1000",
                                  check=True).stdout.strip())
    assert info["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(svc_port)}]}
    res = proj.run("run", "-d", "-P", "-p", "9000", "app")
    assert res.returncode == 1 and "--service-ports and --publish are incompatible" in res.stderr


def test_exec_flags(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: sleep 1000
    environment: {FROMFILE: file-value}
""")
    proj.run("up", "-d", "--scale", "w=2", check=True)
    w2 = inspect(proj, f"{proj.name}-w-2")["Config"]["Hostname"]
    assert proj.run("exec", "-T", "--index", "2", "w", "hostname",
                    check=True).stdout == w2 + "\n"
    res = proj.run("exec", "-T", "-e", "A=1", "-e", "FROMSHELL", "w", "sh", "-c",
                   "echo $A $FROMSHELL $FROMFILE", env={"FROMSHELL": "shell"}, check=True)
    assert res.stdout == "1 shell file-value\n"
    res = proj.run("exec", "-T", "-u", "4321", "-w", "/tmp", "w", "sh", "-c", "id -u; pwd",
                   check=True)
    assert res.stdout == "4321\n/tmp\n"
    proj.run("exec", "-d", "w", "touch", "/tmp/detached", check=True)
    until(lambda: proj.run("exec", "-T", "w", "test", "-f", "/tmp/detached").returncode == 0)
    assert proj.run("exec", "-T", "w", "sh", "-c", "exit 7").returncode == 7
    res = proj.run("exec", "--index", "5", "w", "true")
    assert res.returncode == 1 and 'service "w" is not running container #5' in res.stderr
    proj.run("stop", "-t", "0", check=True)
    res = proj.run("exec", "-T", "w", "true")
    assert res.returncode == 1 and 'service "w" is not running' in res.stderr


def test_up_attaches_as_compose_does(proj: Project) -> None:
    proj.write("""
services:
  web:
    image: busybox
    command: ["sh", "-c", "sleep 1; echo web-says"]
    depends_on: [db]
  db:
    image: busybox
    command: ["sh", "-c", "echo db-says; sleep 2"]
  side:
    image: busybox
    command: ["echo", "side-says"]
    attach: false
""")
    # a named service alone: its dependency runs, unseen
    res = proj.run("up", "--no-color", "web")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "Attaching to web-1"
    assert "web-1  | web-says" in res.stdout and "db-says" not in res.stdout
    res = proj.run("up", "--no-color", "--attach-dependencies", "web")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "Attaching to db-1, web-1"
    # attach: false, and --no-attach
    res = proj.run("up", "--no-color", "--no-attach", "db")
    assert res.stdout.splitlines()[0] == "Attaching to web-1", res.stdout
    res = proj.run("up", "--attach", "side", "web")
    assert res.returncode == 1
    assert "cannot attach to services not included in up: side" in res.stderr


def test_down_of_services(proj: Project) -> None:
    proj.write("""
services:
  web:
    image: busybox
    command: sleep 1000
    depends_on: [db]
  db:
    image: busybox
    command: sleep 1000
  other:
    image: busybox
    command: sleep 1000
""")
    res = proj.run("--progress", "json", "up", "-d", check=True)
    events = [json.loads(line) for line in res.stderr.splitlines()]
    assert {"id": f"Container {proj.name}-db-1", "text": "Started"} in events, res.stderr
    res = proj.run("down", "-t", "0", "db", check=True)
    # db and what depends on it; the network stays for `other`
    assert f"Container {proj.name}-web-1  Removed" in res.stderr
    assert f"Container {proj.name}-db-1  Removed" in res.stderr
    assert f"Network {proj.name}_default  Resource is still in use" in res.stderr
    assert proj.run("ps", "-a", "--format", "{{.Service}}", check=True).stdout == "other\n"
    res = proj.run("down", "nosuch")
    assert res.returncode == 1 and "no such service: nosuch" in res.stderr
    proj.run("down", "-t", "0", "other", check=True)
    assert proj.left() == ([], [], [])


def test_scale_and_volumes(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: sleep 1000
    volumes: ["data:/data"]
    depends_on: [db]
  db:
    image: busybox
    command: sleep 1000
    volumes: ["dbdata:/var/db"]
volumes:
  data: {}
  dbdata: {}
""")
    proj.run("scale", "w=2", check=True)
    names = proj.run("ps", "--format", "{{.Name}}", check=True).stdout.split()
    assert names == [f"{proj.name}-db-1", f"{proj.name}-w-1", f"{proj.name}-w-2"]
    proj.run("scale", "w=1", check=True)
    assert proj.run("ps", "--format", "{{.Name}}", "w", check=True).stdout == \
        f"{proj.name}-w-1\n"
    table = proj.run("volumes", check=True).stdout.splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert [line.split() for line in table[1:]] == [["local", f"{proj.name}_data"],
                                                    ["local", f"{proj.name}_dbdata"]]
    assert proj.run("volumes", "-q", "db", check=True).stdout == f"{proj.name}_dbdata\n"
    assert proj.run("volumes", "--format", "{{.Name}} {{.Driver}}", "w",
                    check=True).stdout == f"{proj.name}_data local\n"
    res = proj.run("volumes", "nosuch")
    assert res.returncode == 1 and "no such service: nosuch" in res.stderr
    res = proj.run("scale", "nosuch=2")
    assert res.returncode == 1 and "nosuch" in res.stderr


def test_attach_commit_export_stats(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: ["sh", "-c", "echo > /tmp/made-here; i=0; while :; do i=$$((i+1)); echo tick-$$i; sleep 0.3; done"]
""")
    proj.run("up", "-d", "--scale", "w=2", check=True)
    # commit: an image of a service container's changes
    image = f"{proj.name}-committed:v1"
    proj.run("commit", "-m", "from compose", "--index", "2", "w", image, check=True)
    info = json.loads(proj.ketch("image", "inspect", image).stdout)[0]
    assert info["Comment"] == "from compose"
    assert proj.ketch("run", "--rm", image, "ls", "/tmp/made-here").returncode == 0
    proj.ketch("rmi", image)
    # export: its filesystem as a tar
    out = proj.d / "fs.tar"
    proj.run("export", "-o", str(out), "w", check=True)
    import tarfile

    with tarfile.open(out) as tar:
        assert "tmp/made-here" in tar.getnames()
    # stats: the project's containers, once
    res = proj.run("stats", "--no-stream", "--format", "{{.Name}}", check=True)
    assert sorted(res.stdout.split()) == [f"{proj.name}-w-1", f"{proj.name}-w-2"]
    assert proj.run("stats", "--no-stream", "nosuch", check=True).stdout.split()[:2] == \
        ["CONTAINER", "ID"]
    # attach: the output of a service's container until it is stopped
    proc = subprocess.Popen([KETCH, "compose", "-p", proj.name, "attach", "--no-stdin",
                             "--index", "1", "w"], cwd=proj.d, env=proj.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        proj.run("kill", "w", check=True)
        out_text, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert re.search(r"^tick-\d+$", out_text, re.M), out_text
    res = proj.run("attach", "--index", "3", "w")
    assert res.returncode == 1 and 'service "w" is not running container #3' in res.stderr


def test_down_keeps_one_off_containers(proj: Project) -> None:
    proj.write("""
services:
  w:
    image: busybox
    command: sleep 1000
""")
    proj.run("up", "-d", check=True)
    proj.run("run", "-d", "w", "sleep", "1000", check=True)
    res = proj.run("down", "-t", "0", check=True)
    assert f"Network {proj.name}_default  Resource is still in use" in res.stderr
    left = proj.run("ps", "-a", "--format", "{{.Name}}", check=True).stdout.split()
    assert len(left) == 1 and left[0].startswith(f"{proj.name}-w-run-")


def test_start_names_a_service_without_containers(proj: Project) -> None:
    proj.write("""
services:
  a:
    image: busybox
    command: sleep 1000
  b:
    image: busybox
    command: sleep 1000
""")
    proj.run("up", "-d", "a", check=True)
    proj.run("stop", "-t", "0", check=True)
    res = proj.run("start")
    assert res.returncode == 1, res.stderr
    assert 'service "b" has no container to start' in res.stderr
