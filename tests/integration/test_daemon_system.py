"""ketchd judged by the real docker CLI (28.x) and curl: version, info, ping, errors, signals.

Each daemon gets a private --root, --exec-root, socket, pidfile and daemon.json
under a /tmp directory named with the session prefix (short: a unix socket
path must fit in 108 bytes). Finalizers stop the daemon by its pid and remove
the directory, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import BIN, PREFIX

pytestmark = pytest.mark.root

DOCKER = shutil.which("docker")


@dataclass
class Ketchd:
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def sock(self) -> Path:
        return self.dir / "k.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def pidfile(self) -> Path:
        return self.dir / "ketchd.pid"

    @property
    def config(self) -> Path:
        return self.dir / "daemon.json"

    def log(self) -> str:
        return (self.dir / "ketchd.log").read_text(errors="replace")

    def args(self, *extra: str, **over: str) -> list[str]:
        opts = {"--root": str(self.root), "--exec-root": str(self.dir / "exec"),
                "--host": self.host, "--pidfile": str(self.pidfile),
                "--config-file": str(self.config)}
        opts.update(over)
        return [str(BIN / "ketchd"), *(x for kv in opts.items() for x in kv), *extra]

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-s", "--unix-socket", str(self.sock), *args],
                              capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _wait_ready(k: Ketchd, tcp_port: int | None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if k.proc.poll() is not None:
            raise AssertionError(f"ketchd exited {k.proc.returncode}:\n{k.log()}")
        if tcp_port is not None or k.sock.exists():
            s = socket.socket(socket.AF_INET if tcp_port else socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(("127.0.0.1", tcp_port) if tcp_port else str(k.sock))
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise AssertionError(f"ketchd did not listen on {k.sock}:\n{k.log()}")


@pytest.fixture
def start_ketchd() -> Iterator[Callable[..., Ketchd]]:
    started: list[Ketchd] = []
    dirs: list[Path] = []

    def start(config: dict[str, object] | None = None, *extra: str,
              tcp_port: int | None = None, **over: str) -> Ketchd:
        d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-d", dir="/tmp"))
        dirs.append(d)
        k = Ketchd(d, None)  # type: ignore[arg-type]
        # Containers' cgroups (and the supervisor's, "<parent>-supervisor") under the
        # session prefix, where the leak check looks.
        write_private_config(k, config)
        with open(d / "ketchd.log", "wb") as log:
            k.proc = subprocess.Popen(k.args(*extra, **over), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        started.append(k)
        _wait_ready(k, tcp_port)
        return k

    yield start
    for k in started:
        k.stop()
        stop_supervisor(k)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def write_private_config(k: Ketchd, config: dict[str, object] | None = None) -> None:
    """daemon.json with the daemon's kernel names private: containers' and the
    supervisor's cgroups under the session prefix, its own default bridge and nft
    table (all removed by ``stop_supervisor``), Docker Hub on loopback, then ``config``."""
    k.config.write_text(json.dumps({"cgroup-parent": cgroup_parent_of(k),
                                    "bridge": f"kt{k.dir.name[-8:]}"[:15].replace("_", "x"),
                                    "registry-endpoints": NO_DOCKER_HUB,
                                    **(config or {})}))


# Tests reach nothing past loopback: a Docker Hub name (a container of an image that is
# not there, which the docker CLI then pulls) goes to a port nobody listens on, never to
# DNS and the internet.
NO_DOCKER_HUB = {"docker.io": "http://127.0.0.1:9"}


def cgroup_parent_of(k: Ketchd) -> str:
    """The private cgroup parent a test daemon gets (tests may rewrite its daemon.json)."""
    return f"/{PREFIX}/{k.dir.name[-8:]}"


def stop_supervisor(k: Ketchd) -> None:
    """The supervisor outlives ketchd by design: ``ketch system reset``'s library
    removes its containers, network, mounts and cgroups (the fixture the dirs)."""
    from ketch.daemon.reset import reset

    parent = cgroup_parent_of(k)
    rep = reset(str(k.root), str(k.dir / "exec"), pidfile=str(k.pidfile),
                cgroup_parent=parent, remove_dirs=False)
    if rep.errors:
        print(f"reset of {k.dir}: {rep.errors}")

def docker(k: Ketchd, *args: str) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DOCKER_")}
    env["DOCKER_HOST"] = k.host
    env["DOCKER_CONFIG"] = str(k.dir / "docker-config")
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
def test_docker_version_and_info(start_ketchd: Callable[..., Ketchd]) -> None:
    k = start_ketchd()
    out = docker(k, "version")
    assert out.returncode == 0, out.stderr
    assert "Server:" in out.stdout
    assert "API version:      1.45 (minimum version 1.24)" in out.stdout
    out = docker(k, "info")
    assert out.returncode == 0, out.stderr
    assert "Server Version: 0.1.0" in out.stdout
    assert f"Docker Root Dir: {k.root}" in out.stdout
    assert "Default Runtime: ketch" in out.stdout
    out = docker(k, "version", "--format", "{{.Server.APIVersion}}")
    assert out.stdout.strip() == "1.45"


def test_ketch_cli_version_and_info(start_ketchd: Callable[..., Ketchd]) -> None:
    k = start_ketchd()
    out = subprocess.run([str(BIN / "ketch"), "-H", k.host, "version"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "\nServer: ketch 0.1.0\n" in out.stdout
    env = {**os.environ, "KETCH_HOST": k.host}
    out = subprocess.run([str(BIN / "ketch"), "info"], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f" Root Dir: {k.root}" in out.stdout


def test_versions_ping_and_404_over_the_socket(start_ketchd: Callable[..., Ketchd]) -> None:
    k = start_ketchd()
    out = k.curl("-w", "\n%{http_code}", "http://ketch/v1.99/version")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "400"
    assert json.loads(body) == {
        "message": "client version 1.99 is too new. Maximum supported API version is 1.45"}
    out = k.curl("-w", "\n%{http_code}", "http://ketch/v1.12/info")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "400" and "too old. Minimum supported API version is 1.24" in body
    out = k.curl("-w", "\n%{http_code}", "http://ketch/v1.45/no/such/page")
    assert out.stdout == '{"message": "page not found"}\n404'
    for method in (["-I"], []):
        out = k.curl("-i", *method, "http://ketch/_ping")
        # text mode has turned CRLF into LF
        head, _, body = out.stdout.partition("\n\n")
        headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip()
                   for line in head.splitlines()[1:]}
        assert head.startswith("HTTP/1.1 200")
        assert headers["api-version"] == "1.45"
        assert headers["builder-version"] == "1"
        assert headers["docker-experimental"] == "false"
        assert headers["ostype"] == "linux"
        assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert headers["pragma"] == "no-cache"
        assert body == ("" if method else "OK")
    info = json.loads(k.curl("http://ketch/v1.45/info").stdout)
    assert info["DockerRootDir"] == str(k.root)
    assert info["CgroupVersion"] in ("1", "2")
    mode = os.stat(k.sock).st_mode
    assert stat.S_IMODE(mode) == 0o660


def test_second_daemon_on_the_same_root_refuses(start_ketchd: Callable[..., Ketchd]) -> None:
    k = start_ketchd()
    other = subprocess.run(
        k.args(**{"--host": f"unix://{k.dir}/k2.sock", "--pidfile": str(k.dir / "k2.pid"),
                  "--exec-root": str(k.dir / "exec2")}),
        capture_output=True, text=True, timeout=30)
    assert other.returncode == 1
    assert "failed to start daemon, ensure ketchd is not running" in other.stderr
    assert f"is held by process with PID {k.proc.pid}" in other.stderr
    assert not (k.dir / "k2.sock").exists()
    assert k.proc.poll() is None


def test_sigterm_removes_socket_and_pidfile(start_ketchd: Callable[..., Ketchd]) -> None:
    k = start_ketchd()
    assert k.pidfile.read_text() == str(k.proc.pid)
    os.kill(k.proc.pid, signal.SIGTERM)
    assert k.proc.wait(15) == 0
    assert not k.sock.exists()
    assert not k.pidfile.exists()
    assert "Daemon shutdown complete" in k.log()


def test_sighup_reloads_daemon_json(start_ketchd: Callable[..., Ketchd]) -> None:
    k = start_ketchd({"labels": ["a=1"]})
    assert json.loads(k.curl("http://ketch/info").stdout)["Labels"] == ["a=1"]
    k.config.write_text(json.dumps({"labels": ["a=2"], "debug": True}))
    os.kill(k.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = json.loads(k.curl("http://ketch/info").stdout)
        if info["Labels"] == ["a=2"]:
            break
        time.sleep(0.05)
    assert info["Labels"] == ["a=2"] and info["Debug"] is True
    # A broken file is reported and the running settings are kept.
    k.config.write_text('{"bogus-key": 1}')
    os.kill(k.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "Error reconfiguring" not in k.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "don't match any configuration option: bogus-key" in k.log()
    assert json.loads(k.curl("http://ketch/info").stdout)["Labels"] == ["a=2"]
    assert k.proc.poll() is None


def _run_refused(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def test_refusals_at_start() -> None:
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-r", dir="/tmp"))
    try:
        cfg = d / "daemon.json"
        base = [str(BIN / "ketchd"), "--root", str(d / "root"), "--exec-root", str(d / "exec"),
                "--pidfile", str(d / "p.pid"), "--config-file", str(cfg)]
        cfg.write_text('{"bogus": true, "log-levl": "debug"}')
        out = _run_refused([*base, "--host", f"unix://{d}/k.sock"])
        assert out.returncode == 1
        assert ("the following directives don't match any configuration option: "
                "bogus, log-levl") in out.stderr
        cfg.write_text('{"log-level": "debug"}')
        out = _run_refused([*base, "--log-level", "info", "--host", f"unix://{d}/k.sock"])
        assert out.returncode == 1
        assert "specified both as a flag and in the configuration file: log-level" in out.stderr
        cfg.write_text("{}")
        out = _run_refused([*base, "--host", "tcp://127.0.0.1:0"])
        assert out.returncode == 1
        assert "refusing to listen on tcp://127.0.0.1:0 without TLS" in out.stderr
        assert not (d / "k.sock").exists()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def test_insecure_tcp_is_allowed_with_a_warning(start_ketchd: Callable[..., Ketchd]) -> None:
    port = _free_port()
    k = start_ketchd(None, "--insecure-tcp", tcp_port=port, **{"--host": f"tcp://127.0.0.1:{port}"})
    warning = f"WARNING: API is accessible on http://127.0.0.1:{port} without encryption."
    out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/v1.45/info"],
                         capture_output=True, text=True, timeout=30)
    warnings = json.loads(out.stdout)["Warnings"]
    # Then what the host's cgroups lack, if anything (engine.sysinfo: "WARNING: No ...").
    assert warnings[0] == warning and all(w.startswith("WARNING: No ") for w in warnings[1:])
    assert warning in k.log()


@pytest.mark.skipif(DOCKER is None or shutil.which("openssl") is None,
                    reason="needs the docker CLI and openssl")
def test_tcp_with_tlsverify(start_ketchd: Callable[..., Ketchd], tmp_path: Path) -> None:
    """One self-signed certificate serves as CA, server and client certificate."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=digitalSignature,keyEncipherment,keyCertSign",
         "-addext", "extendedKeyUsage=serverAuth,clientAuth"],
        check=True, capture_output=True, timeout=60)
    shutil.copy(tmp_path / "cert.pem", tmp_path / "ca.pem")
    port = _free_port()
    k = start_ketchd(None, "--tlsverify", "--tlscacert", str(tmp_path / "ca.pem"),
                     "--tlscert", str(tmp_path / "cert.pem"), "--tlskey", str(tmp_path / "key.pem"),
                     tcp_port=port, **{"--host": f"tcp://127.0.0.1:{port}"})
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DOCKER_")}
    env.update(DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1",
               DOCKER_CERT_PATH=str(tmp_path), DOCKER_CONFIG=str(k.dir / "docker-config"))
    assert DOCKER is not None
    out = subprocess.run([DOCKER, "version", "--format", "{{.Server.APIVersion}}"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "1.45"), out.stderr
    del env["DOCKER_TLS_VERIFY"], env["DOCKER_CERT_PATH"]
    out = subprocess.run([DOCKER, "version"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode != 0
