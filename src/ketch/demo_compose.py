"""The compose part of ``make demo``: a three-service application on a private ketchd.

``demo/compose`` is the application of the README (an API built from a
multi-stage Dockerfile, PostgreSQL with a named volume, Redis; every base
image from ``ketch image bootstrap debian:bookworm`` and Debian's packages),
``demo/compose-busybox`` its offline variant on busybox alone, for machines
that cannot reach a Debian mirror (and CI). The demo starts its own ketchd
under a private directory, socket, cgroup parent and bridge, then shows::

    up -d --build --wait      the services become healthy in dependency order
    ps, GET / (a few times)   the API counts in the cache and writes rows to the db
    restart, GET /            the counts are kept
    down, up, GET /           the rows are kept in the named volume (a new cache starts over)
    down -v                   and the volume is gone

and removes everything (containers, daemon, its supervisor, cgroups, bridge,
directories) at the end, also on failure, Ctrl-C or SIGTERM.

    python -m ketch.demo_compose [--variant auto|debian|busybox] [--port N]
                                 [--client ketch|docker-compose]

``--variant`` defaults to ``$KETCH_DEMO_COMPOSE`` or ``auto`` (debian when the
host's Debian mirror answers). ``--client docker-compose`` runs the same demo
with Debian's docker-compose 1.29 (Python, v1) against the private ketchd.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
PROJECT = "demo"
VARIANTS = {"debian": "demo/compose", "busybox": "demo/compose-busybox"}
# The API's own health endpoint (busybox httpd serves CGI from /cgi-bin only).
HEALTH = {"debian": "/health", "busybox": "/cgi-bin/health"}
# What a build prints besides its steps: BuildKit-style "#N" detail lines
# (timings, cache notes, the steps' own output: apt's hundreds of lines), and
# the legacy builder's (docker-compose v1) ids and notices. The demo shows
# the step lines and compose's own progress, and counts the rest.
BUILD_DETAIL = re.compile(
    r"(#\d+ (?!\[)|\s*$| ---> |Removing intermediate container|Sending build context|"
    r"DEPRECATED: The legacy builder|\s+Install the buildx|\s+https://docs\.docker\.com/go/buildx|"
    r"Successfully built |\x1b\[)")
# A line of a RUN step's output in the legacy builder: whatever is not one of its own.
LEGACY_OWN = re.compile(r"(Step \d+/\d+ : |Successfully tagged |Building [\w.-]+$|"
                        r"(Creating|Starting|Recreating) [\w.-]+ +\.\.\.|"
                        r"Creating (network|volume) \")")


class DemoFailed(Exception):
    """A step of the demo did not do what it shows; the message says which."""


@dataclass
class Daemon:
    """A private ketchd: its own root, exec-root, socket, pidfile, cgroup parent, bridge."""

    base: Path
    tag: str
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def sock(self) -> Path:
        return self.base / "k.sock"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.tag}"

    def start(self) -> None:
        bindir = Path(sys.executable).parent
        (self.base / "daemon.json").write_text(json.dumps(
            {"cgroup-parent": self.cgroup_parent, "bridge": f"kc{self.tag[-6:]}"}))
        env = {k: v for k, v in os.environ.items()
               if k not in ("DOCKER_HOST", "KETCH_HOST", "DOCKER_CONTEXT", "COMPOSE_FILE",
                            "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES")}
        # `ketch` on PATH is this checkout's, so the commands read as a user types them.
        env.update(KETCH_HOST=f"unix://{self.sock}", DOCKER_HOST=f"unix://{self.sock}",
                   DOCKER_CONFIG=str(self.base / "docker-config"),
                   PATH=f"{bindir}:{os.environ.get('PATH', '')}")
        self.env = env
        with open(self.base / "ketchd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(bindir / "ketchd"), "--root", str(self.base / "root"),
                 "--exec-root", str(self.base / "exec"), "--host", f"unix://{self.sock}",
                 "--pidfile", str(self.base / "pid"),
                 "--config-file", str(self.base / "daemon.json")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # a Ctrl-C reaches the demo, which stops it in order
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise DemoFailed("ketchd did not start:\n" + self.log_tail())
            time.sleep(0.05)

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = (self.base / "ketchd.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        from ketch.daemon.reset import reset

        # The supervisor, containers, mounts, cgroups and bridge the daemon made.
        reset(str(self.base / "root"), str(self.base / "exec"), pidfile=str(self.base / "pid"),
              cgroup_parent=self.cgroup_parent)


@contextlib.contextmanager
def private_daemon(tag: str) -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))
    daemon = Daemon(base, tag)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so every cleanup runs."""
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class Shell:
    """Runs the commands the demo shows, as a user would type them in the repository."""

    env: dict[str, str]
    compose: list[str]  # "ketch compose -f FILE -p NAME" or docker-compose's

    def show(self, cmdline: str, *, check: bool = True, quiet_build: bool = False) -> str:
        print(f"$ {cmdline}", flush=True)
        proc = subprocess.Popen(cmdline, shell=True, env=self.env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        out: list[str] = []
        hidden = 0
        in_run = False   # the legacy builder: inside a RUN step's output
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            out.append(line)
            if quiet_build:
                if line.startswith(" ---> Running in "):
                    in_run = True
                elif LEGACY_OWN.match(line) or line.startswith("Removing intermediate"):
                    in_run = False
                if in_run or BUILD_DETAIL.match(line):
                    hidden += 1
                    continue
            sys.stdout.write(line)
            sys.stdout.flush()
        rc = proc.wait()
        if hidden:
            print(f"  ({hidden} lines of build detail and RUN output left out)")
        if check and rc != 0:
            raise DemoFailed(f"`{cmdline}` failed (exit {rc})")
        return "".join(out)

    def compose_cmd(self, args: str) -> str:
        return " ".join([*self.compose, args])


# -- the Debian base image --------------------------------------------------------

def mirror_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the host's Debian mirror serves bookworm (what debootstrap and apt fetch)."""
    from ketch.image.debootstrap import host_mirror

    mirror = host_mirror()
    if mirror.startswith("file:"):
        path = mirror[len("file:"):].lstrip("/")
        return os.path.exists(f"/{path}/dists/bookworm/Release"), mirror
    req = urllib.request.Request(f"{mirror}/dists/bookworm/Release", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200, mirror
    except (OSError, ValueError):
        return False, mirror


def build_mirror() -> str:
    """The mirror apt in the demo's builds should use, when the image's own
    (deb.debian.org) is not the machine's: DEBIAN_MIRROR, a build arg of demo/compose."""
    from ketch.image.debootstrap import IMAGE_MIRROR, host_mirror

    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    mirror = host_mirror()
    # A file: mirror is the host's filesystem, which a build container does not see.
    if mirror == IMAGE_MIRROR or not mirror.startswith(("http://", "https://")):
        return ""
    return mirror


def debian_cache() -> Path:
    """Where the bootstrapped debian:bookworm is kept between runs (``ketch save``):
    named by the source of the bootstrap code, so a change to it makes a new one."""
    import ketch.image.debootstrap as db

    key = hashlib.sha256(Path(db.__file__).read_bytes()).hexdigest()[:12]
    return CACHE / f"demo-debian-bookworm-{key}.tar"


def base_images(sh: Shell, variant: str) -> None:
    if variant == "busybox":
        sh.show("ketch image bootstrap busybox")
        return
    cached = debian_cache()
    if cached.exists():
        print(f"(debian:bookworm was bootstrapped by an earlier run and saved in "
              f"{cached.relative_to(REPO)}; remove it to debootstrap anew)")
        sh.show(f"ketch load -q -i {shlex.quote(str(cached.relative_to(REPO)))}")
        return
    print("(the first debootstrap downloads about 40 MB from the Debian mirror: a minute or two)")
    sh.show("ketch image bootstrap debian:bookworm")
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("demo-debian-bookworm-*.tar"):
        old.unlink()
    part = cached.with_suffix(".part")
    if subprocess.call(["ketch", "save", "-o", str(part), "debian:bookworm"], env=sh.env) == 0:
        part.rename(cached)
    else:
        part.unlink(missing_ok=True)


# -- the application ------------------------------------------------------------------

def get(port: int, path: str = "/", timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace").strip()


def call_api(port: int, times: int) -> dict[str, object]:
    body: dict[str, object] = {}
    for _ in range(times):
        status, text = get(port)
        print(f"GET http://127.0.0.1:{port}/ -> {status} {text}")
        if status != 200:
            raise DemoFailed(f"the API answered {status}")
        body = json.loads(text)
    return body


def wait_healthy(port: int, path: str, timeout: float = 90) -> None:
    """Until the API's health endpoint answers 200 (after a restart, which does not wait)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, last = get(port, path, timeout=3)
            if status == 200:
                return
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    raise DemoFailed(f"the API did not become healthy in {timeout:.0f} s: {last}")


def wait_services(sh: Shell, timeout: float = 180) -> None:
    """docker-compose v1 has no `up --wait`: poll the project's containers' health."""
    deadline = time.monotonic() + timeout
    fmt = "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
    states: list[str] = []
    while time.monotonic() < deadline:
        ids = subprocess.run(["ketch", "ps", "-aq", "--filter",
                              f"label=com.docker.compose.project={PROJECT}"],
                             env=sh.env, capture_output=True, text=True).stdout.split()
        states = subprocess.run(["ketch", "inspect", "--format", fmt, *ids], env=sh.env,
                                capture_output=True, text=True).stdout.split("\n") if ids else []
        states = [s for s in states if s]
        if states and all(s.endswith((" healthy", " running")) for s in states):
            return
        if any(s.endswith((" unhealthy", " exited", " dead")) for s in states):
            break
        time.sleep(0.5)
    raise DemoFailed("the services did not become healthy: " + ", ".join(states))


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    print(f"(port {preferred} is taken on this machine: the demo publishes {port} instead)")
    return port


def ketch_compose_available(env: dict[str, str]) -> bool:
    try:
        return subprocess.run(["ketch", "compose", "version"], env=env, capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_demo(sh: Shell, variant: str, port: int, v1: bool) -> None:
    what = ("an API (multi-stage build), PostgreSQL and Redis on debian:bookworm"
            if variant == "debian" else "web (busybox httpd) and a db with a volume, offline")
    print(f"\n--- compose: {what} ---")
    base_images(sh, variant)
    sh.show(f"cat {VARIANTS[variant]}/compose.yaml | grep -v '^#'")
    up = "up -d --build" if v1 else "up -d --build --wait"
    started = time.monotonic()
    sh.show(sh.compose_cmd(up), quiet_build=True)
    if v1:
        wait_services(sh)
    print(f"(built, started and healthy in {time.monotonic() - started:.1f} s)")
    sh.show(sh.compose_cmd("ps"))
    sh.show(sh.compose_cmd("logs db") + " | grep 'db: '", check=False)
    first = call_api(port, 3)

    print("\n--- restart: the containers keep their data ---")
    sh.show(sh.compose_cmd("restart"))
    wait_healthy(port, HEALTH[variant])
    after = call_api(port, 1)
    if after.get("rows") != _int(first.get("rows")) + 1:
        raise DemoFailed(f"the rows were not kept across the restart: {first} then {after}")

    print("\n--- down and up: the rows are in the named volume ---")
    sh.show(sh.compose_cmd("down"))
    sh.show("ketch volume ls")
    sh.show(sh.compose_cmd("up -d" if v1 else "up -d --wait"), quiet_build=True)
    if v1:
        wait_services(sh)
    sh.show(sh.compose_cmd("logs db") + " | grep 'db: '", check=False)
    again = call_api(port, 1)
    print("(rows went on counting from the volume; visits started over: the new "
          f"{'cache' if variant == 'debian' else 'web'} container has no volume)")
    if again.get("rows") != _int(after.get("rows")) + 1:
        raise DemoFailed(f"the rows were not kept in the volume: {after} then {again}")

    print("\n--- down -v: containers, network and volume removed ---")
    sh.show(sh.compose_cmd("down -v"))
    sh.show("ketch ps -a")
    sh.show("ketch volume ls")


def _int(v: object) -> int:
    return v if isinstance(v, int) else -1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ketch.demo_compose",
                                description="The compose demo on a private ketchd.")
    p.add_argument("--variant", choices=("auto", *VARIANTS),
                   default=os.environ.get("KETCH_DEMO_COMPOSE", "auto"),
                   help="debian (needs the Debian mirror), busybox (offline), or auto "
                        "(default: $KETCH_DEMO_COMPOSE or auto)")
    p.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "3000")),
                   help="the API's published port on 127.0.0.1 (default 3000)")
    p.add_argument("--client", choices=("ketch", "docker-compose"), default="ketch",
                   help="ketch compose, or Debian's docker-compose (v1) against ketchd")
    args = p.parse_args(argv)
    if args.variant not in ("auto", *VARIANTS):
        p.error(f"KETCH_DEMO_COMPOSE={args.variant}: expected auto, debian or busybox")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("the demo runs containers: run it as root", file=sys.stderr)
        return 1
    variant = args.variant
    if variant == "auto":
        ok, mirror = mirror_reachable()
        variant = "debian" if ok else "busybox"
        if not ok:
            print(f"(the Debian mirror {mirror} does not answer: the offline busybox "
                  "variant of the compose demo runs instead)")
    mirror = build_mirror() if variant == "debian" else ""
    tag = f"ketch-demo-c{os.urandom(3).hex()}"
    v1 = args.client == "docker-compose"
    with sigterm_as_interrupt(), private_daemon(tag) as daemon:
        env = dict(daemon.env)
        port = free_port(args.port)
        env["DEMO_PORT"] = str(port)
        if mirror:
            env["DEBIAN_MIRROR"] = mirror
            print(f"(apt in the builds uses this machine's Debian mirror, {mirror})")
        if v1:
            if shutil.which("docker-compose", path=env["PATH"]) is None:
                print("docker-compose is not installed (Debian's package docker-compose)",
                      file=sys.stderr)
                return 1
            compose = ["docker-compose"]
        else:
            if not ketch_compose_available(env):
                print("`ketch compose` is not available in this checkout "
                      "(`ketch compose version` failed); --client docker-compose runs the "
                      "same demo with Debian's docker-compose", file=sys.stderr)
                return 1
            compose = ["ketch", "compose"]
        compose += ["-f", f"{VARIANTS[variant]}/compose.yaml", "-p", PROJECT]
        sh = Shell(env, compose)
        print(f"(a private ketchd on {daemon.sock}; everything it makes is removed at the end)")
        try:
            run_demo(sh, variant, port, v1)
        except DemoFailed as e:
            print(f"\ndemo failed: {e}", file=sys.stderr)
            with contextlib.suppress(Exception):
                sh.show(sh.compose_cmd("ps -a"), check=False)
                sh.show(sh.compose_cmd("logs --tail 20"), check=False)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: cleaning up", file=sys.stderr)
            return 130
        finally:
            # Whatever state the demo stopped in: the project goes (its volume too).
            with contextlib.suppress(Exception):
                subprocess.run([*compose, "down", "-v", "--remove-orphans", "-t", "2"],
                               env=env, cwd=REPO, capture_output=True, timeout=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
