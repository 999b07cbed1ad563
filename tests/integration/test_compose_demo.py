"""The compose demo (``make demo``'s compose part, ``ketch.demo_compose``).

CI runs the OFFLINE variant, ``demo/compose-busybox``, end to end through
``ketch compose`` against a private ketchd: built from busybox, web waiting
for db to be healthy, counts kept across ``restart``, rows kept in the named
volume across ``down``/``up``, nothing left after ``down -v``. Then the demo
program itself runs that variant (its own ketchd, its own cleanup). The
Debian variant (``demo/compose``) needs debootstrap and the Debian mirror, so
here its files are only read: they must parse and say what the README says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import REPO
from tests.integration.registries import free_port
from tests.integration.test_daemon_system import Ketchd

KETCH = str(Path(sys.executable).with_name("ketch"))
DEBIAN = REPO / "demo" / "compose"
BUSYBOX = REPO / "demo" / "compose-busybox"
# Where no daemon listens: `config` must not need one, and nothing may auto-start.
NO_DAEMON = "unix:///nonexistent/ketch-compose-demo.sock"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {n: v for n, v in os.environ.items()
           if not n.startswith(("DOCKER_", "KETCH_", "COMPOSE_", "DEMO_", "DEBIAN_MIRROR"))}
    env.update(extra)
    return env


def _ketch_compose_missing() -> str:
    """Why the `ketch compose` tests cannot run ("" when they can)."""
    try:
        p = subprocess.run([KETCH, "compose", "version"], env=_clean_env(KETCH_HOST=NO_DAEMON),
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ketch compose version` did not run: {exc}"
    if p.returncode != 0:
        return ("`ketch compose` is not in this checkout yet (`ketch compose version` exit "
                f"{p.returncode}: {(p.stderr or p.stdout).strip()[:200]})")
    return ""


MISSING = _ketch_compose_missing()
needs_compose = pytest.mark.skipif(bool(MISSING), reason=MISSING)
needs_root = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


# -- the files -------------------------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def _froms(dockerfile: Path) -> list[str]:
    return [line.split()[1] for line in dockerfile.read_text().splitlines()
            if line.upper().startswith("FROM ")]


def test_debian_demo_files_say_what_the_readme_says() -> None:
    doc = _load(DEBIAN / "compose.yaml")
    services = doc["services"]
    assert set(services) == {"api", "db", "cache"}
    api, db, cache = services["api"], services["db"], services["cache"]
    assert api["depends_on"] == {"db": {"condition": "service_healthy"},
                                 "cache": {"condition": "service_healthy"}}
    assert api["ports"] == ["127.0.0.1:${DEMO_PORT:-3000}:3000"]
    assert api["environment"]["DATABASE_URL"].startswith("postgres://")
    assert "@db:5432/" in api["environment"]["DATABASE_URL"]
    assert api["environment"]["REDIS_URL"] == "redis://cache:6379"
    assert "pg_isready" in db["healthcheck"]["test"]
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "pgdata" in doc["volumes"]
    assert cache["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # Every base image is the bootstrapped Debian; the API's build is multi-stage.
    for svc in ("api", "db", "cache"):
        froms = _froms(DEBIAN / svc / "Dockerfile")
        stages = {line.split()[-1] for line in (DEBIAN / svc / "Dockerfile").read_text()
                  .splitlines() if line.upper().startswith("FROM ") and " AS " in line.upper()}
        assert all(f == "debian:bookworm" or f in stages for f in froms), (svc, froms)
    assert len(_froms(DEBIAN / "api" / "Dockerfile")) >= 2
    assert "apt-get install -y --no-install-recommends postgresql" in \
        (DEBIAN / "db" / "Dockerfile").read_text()
    assert "redis-server" in (DEBIAN / "cache" / "Dockerfile").read_text()
    # The API's own sources compile (they run on bookworm's Python 3.11).
    for name in ("app.py", "healthcheck.py"):
        compile((DEBIAN / "api" / name).read_text(), name, "exec")


def test_busybox_demo_files_parse() -> None:
    doc = _load(BUSYBOX / "compose.yaml")
    services = doc["services"]
    assert set(services) == {"web", "db"}
    assert services["web"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["db"]["volumes"] == ["data:/data"]
    for svc in ("web", "db"):
        assert _froms(BUSYBOX / svc / "Dockerfile") == ["busybox"]


@needs_compose
@pytest.mark.parametrize("variant", [DEBIAN, BUSYBOX], ids=["debian", "busybox"])
def test_ketch_compose_config_reads_the_demo(variant: Path) -> None:
    p = subprocess.run([KETCH, "compose", "-f", str(variant / "compose.yaml"), "-p", "demo",
                        "config", "--format", "json"],
                       env=_clean_env(KETCH_HOST=NO_DAEMON, DEMO_PORT="3999"),
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert p.returncode == 0, p.stderr
    model = json.loads(p.stdout)
    assert model["name"] == "demo"
    front = model["services"]["api" if variant == DEBIAN else "web"]
    assert front["ports"][0]["published"] == "3999"
    assert front["ports"][0]["host_ip"] == "127.0.0.1"
    assert all(dep["condition"] == "service_healthy" for dep in front["depends_on"].values())
    assert front["build"]["context"] == str(variant / ("api" if variant == DEBIAN else "web"))
    assert set(model["volumes"]) == {"pgdata" if variant == DEBIAN else "data"}
    if variant == DEBIAN:
        # apt's mirror in the builds: the image's own unless DEBIAN_MIRROR says otherwise.
        assert all(svc["build"]["args"] == {"DEBIAN_MIRROR": ""}
                   for svc in model["services"].values())


# -- the offline variant, end to end --------------------------------------------------------

class Demo:
    """``ketch compose -f demo/compose-busybox/compose.yaml -p <name>`` on a private ketchd."""

    def __init__(self, k: Ketchd, name: str, port: int) -> None:
        self.k, self.name, self.port = k, name, port

    def env(self) -> dict[str, str]:
        return _clean_env(KETCH_HOST=self.k.host, DEMO_PORT=str(self.port))

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([KETCH, "compose", "-f", str(BUSYBOX / "compose.yaml"),
                              "-p", self.name, *args], env=self.env(), cwd=REPO,
                             capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        return res

    def ok(self, *args: str) -> str:
        res = self.compose(*args)
        assert res.returncode == 0, f"compose {' '.join(args)}: exit {res.returncode}\n" \
            f"{res.stdout}\n{res.stderr}\n{self.k.log()[-3000:]}"
        return res.stdout + res.stderr

    def ketch(self, *args: str) -> list[str]:
        res = subprocess.run([KETCH, *args], env=self.env(), capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    def labelled(self, kind: str) -> list[str]:
        flt = f"label=com.docker.compose.project={self.name}"
        if kind == "container":
            return self.ketch("ps", "-aq", "--filter", flt)
        return self.ketch(kind, "ls", "-q", "--filter", flt)

    def get(self, path: str = "/") -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def visit(self) -> dict[str, Any]:
        status, body = self.get()
        assert status == 200, body
        out: dict[str, Any] = json.loads(body)
        return out

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: tuple[int, str] | str = ""
        while time.monotonic() < deadline:
            try:
                last = self.get("/cgi-bin/health")
                if last[0] == 200:
                    return
            except OSError as e:
                last = str(e)
            time.sleep(0.3)
        raise AssertionError(f"web did not become healthy: {last}")


@pytest.fixture
def demo(loaded_ketchd: Ketchd, tmp_path: Path) -> Iterator[Demo]:
    d = Demo(loaded_ketchd, f"demo-{tmp_path.name[-8:]}".lower().replace("_", "-"), free_port())
    yield d
    d.compose("down", "-v", "--remove-orphans", "-t", "0", timeout=120)


@needs_compose
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_busybox_demo_end_to_end(demo: Demo) -> None:
    demo.ok("up", "-d", "--build", "--wait")
    ps = demo.ok("ps")
    assert re.search(rf"{demo.name}-db-1 .*\(healthy\)", ps), ps
    assert re.search(rf"{demo.name}-web-1 .*\(healthy\)", ps), ps
    assert f"127.0.0.1:{demo.port}->8080/tcp" in ps, ps
    assert "db: initialising /data" in demo.ok("logs", "db")
    first = [demo.visit() for _ in range(3)]
    assert [(v["visits"], v["rows"]) for v in first] == [(1, 1), (2, 2), (3, 3)]

    # restart: the same containers, their data kept.
    containers = sorted(demo.labelled("container"))
    demo.ok("restart")
    demo.wait_healthy()
    again = demo.visit()
    assert (again["visits"], again["rows"]) == (4, 4)
    assert sorted(demo.labelled("container")) == containers

    # down keeps the named volume; a new project finds its rows there.
    demo.ok("down")
    assert demo.labelled("container") == [] and demo.labelled("network") == []
    assert demo.labelled("volume") == [f"{demo.name}_data"]
    demo.ok("up", "-d", "--wait")
    logs = demo.ok("logs", "db")
    assert "db: 4 rows" in logs and "initialising" not in logs, logs
    after = demo.visit()
    assert (after["visits"], after["rows"]) == (1, 5), after

    # down -v: nothing of the project is left.
    demo.ok("down", "-v")
    assert demo.labelled("container") == []
    assert demo.labelled("network") == []
    assert demo.labelled("volume") == []


@pytest.mark.parametrize("client", ["ketch", "docker-compose"])
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_the_demo_program_runs_the_offline_variant(client: str) -> None:
    if client == "ketch" and MISSING:
        pytest.skip(MISSING)
    if client == "docker-compose" and not os.path.exists("/usr/bin/docker-compose"):
        pytest.skip("Debian's docker-compose is not installed")
    port = free_port()
    p = subprocess.run([sys.executable, "-m", "ketch.demo_compose", "--variant", "busybox",
                        "--port", str(port), "--client", client],
                       env=_clean_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert re.findall(r'"rows": (\d+)', out) == ["1", "2", "3", "4", "5"], out
    assert re.findall(r'"visits": (\d+)', out) == ["1", "2", "3", "4", "1"], out
    # Its private daemon is gone with its directory.
    m = re.search(r"a private ketchd on (\S+)/k\.sock", out)
    assert m, out
    assert not Path(m.group(1)).exists()
    tag = Path(m.group(1)).name[:len("ketch-demo-c") + 6]     # its cgroup parent, /<tag>
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{tag}*"))


def test_the_demo_shows_build_steps_and_counts_the_rest() -> None:
    from ketch.demo_compose import BUILD_DETAIL, LEGACY_OWN

    shown = [" Service api  Building", "#4 [base  2/12] RUN apt-get update",
             " Container demo-db-1  Healthy", "Step 2/9 : RUN apt-get update",
             "Successfully tagged demo_db:latest", "Creating demo_db_1 ... done"]
    hidden = ["#4 cache miss: first build of this step", "#4 DONE 10.4s", "",
              "#7 0.223 psycopg2 2.9.5", " ---> 8ae026bd5c4c",
              "Removing intermediate container de86a4317b6b",
              "Sending build context to Docker daemon  4.608kB"]
    assert [line for line in shown if BUILD_DETAIL.match(line)] == []
    assert [line for line in hidden if not BUILD_DETAIL.match(line)] == []
    # The legacy builder's own lines end a RUN step's output.
    assert LEGACY_OWN.match("Step 3/9 : ENV PATH=/x") and LEGACY_OWN.match("Building db\n")
    assert LEGACY_OWN.match("Creating demo_api_1 ... done")
    # apt's lines are not, even when they begin with the same words.
    for line in ("Get:1 http://x", "Building dependency tree...", "Creating config file /etc/x"):
        assert not LEGACY_OWN.match(line), line
