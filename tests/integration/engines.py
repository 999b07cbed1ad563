"""Private dockerd and podman instances that run ketch-runc (or runc) as their runtime.

Everything an engine makes is kept findable and removable:

- its directories live under one base directory whose name holds the test
  session's prefix (so the session's mount leak check sees them too);
- its cgroups live under ``/<prefix>/<engine>`` in every hierarchy;
- every process it starts either is its child, or carries the base directory
  in its command line (containerd, shims, conmon, ``podman container cleanup``),
  or sits in one of its cgroups.  Only such processes are ever signalled, and
  only by pid.

Host paths that the engines write outside their directories whatever they are
told (``/run/containerd/s`` for shim sockets, ``/run/containers/networks``,
``/var/lib/containers/cache``, the runtimes' default ``--root`` directories
that podman relies on) are removed afterwards only if they did not exist before
and only entry by entry, never recursively, so a concurrent user is not hurt.
"""

from __future__ import annotations

import ctypes
import os
import pty
import select
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------- processes

def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _ppid_state(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    st = _ppid_state(pid)
    return st is not None and st[1] != "Z"


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children(pid: int) -> list[int]:
    return [p for p in all_pids() if (_ppid_state(p) or (0, ""))[0] == pid]


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (never ourselves)."""
    me = os.getpid()
    return [p for p in all_pids() if p != me and text in cmdline(p) and alive(p)]


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def terminate(pids: list[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL the ones still there after ``timeout``; returns survivors."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        pids = wait_gone(pids, timeout if sig == signal.SIGTERM else 5.0)
        if not pids:
            break
    return pids


# ---------------------------------------------------------------- mounts

def mounts_under(*dirs: Path) -> list[str]:
    """Mount points at or below any of ``dirs``, in mountinfo order."""
    prefixes = [str(d).rstrip("/") for d in dirs]
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if any(mp == p or mp.startswith(p + "/") for p in prefixes):
                out.append(mp)
    return out


def unmount_all(*dirs: Path) -> list[str]:
    """Lazily unmount everything below ``dirs``, newest first; returns what stays."""
    for _ in range(3):
        mps = mounts_under(*dirs)
        if not mps:
            return []
        for mp in reversed(mps):
            _libc.umount2(mp.encode(), MNT_DETACH)
    return mounts_under(*dirs)


# ---------------------------------------------------------------- cgroups

def cgroup_dirs(rel: str) -> list[Path]:
    """``rel`` (``/a/b``) in every mounted hierarchy where it exists."""
    rel = rel.strip("/")
    out = []
    if not CGROUP_ROOT.is_dir():
        return out
    if (CGROUP_ROOT / "cgroup.controllers").exists():       # pure v2
        return [CGROUP_ROOT / rel] if (CGROUP_ROOT / rel).is_dir() else []
    for h in sorted(CGROUP_ROOT.iterdir()):
        if (h / rel).is_dir():
            out.append(h / rel)
    return out


def cgroup_tree(rel: str) -> list[Path]:
    """Every cgroup directory at or below ``rel``, in every hierarchy."""
    out = []
    for top in cgroup_dirs(rel):
        for dirpath, _dirnames, _files in os.walk(top):
            out.append(Path(dirpath))
    return out


def cgroup_pids(rel: str) -> list[int]:
    pids: set[int] = set()
    for d in cgroup_tree(rel):
        try:
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return sorted(pids)


def thaw(rel: str) -> None:
    """A frozen process cannot die: thaw a paused container before killing it."""
    for d in cgroup_tree(rel):
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            f = d / name
            if f.exists():
                try:
                    f.write_text(value)
                except OSError:
                    pass


def remove_cgroups(rel: str) -> list[str]:
    """Kill what is left in the tree (ours by construction), rmdir leaf-first."""
    pids = cgroup_pids(rel)
    if pids:
        thaw(rel)
        terminate(pids, timeout=2.0)
    for _ in range(20):
        for d in sorted(cgroup_tree(rel), key=lambda p: -len(p.parts)):
            try:
                os.rmdir(d)
            except OSError:
                pass
        if not cgroup_tree(rel):
            break
        time.sleep(0.1)
    else:
        return [str(d) for d in cgroup_tree(rel)]
    # The parents (``/<prefix>``) go too once empty; shared ones stay (rmdir fails).
    parent = Path(rel.strip("/")).parent
    while str(parent) not in ("", "."):
        for d in cgroup_dirs(str(parent)):
            try:
                os.rmdir(d)
            except OSError:
                pass
        parent = parent.parent
    return []


# ---------------------------------------------------------------- host paths

@dataclass
class HostEntries:
    """Entries engines create outside their own directories.

    ``entries`` are listed children first; each is removed afterwards only if it
    did not exist before (files unlinked, directories rmdir'ed only if empty).
    """

    entries: list[str]
    existed: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.existed = {e: os.path.lexists(e) for e in self.entries}

    def cleanup(self) -> list[str]:
        left = []
        for e in self.entries:
            if self.existed[e] or not os.path.lexists(e):
                continue
            try:
                if os.path.isdir(e) and not os.path.islink(e):
                    os.rmdir(e)
                else:
                    os.unlink(e)
            except OSError:
                left.append(e)
        return left


# ---------------------------------------------------------------- commands

@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    log: str = ""           # the engine's log lines written while the command ran

    def __str__(self) -> str:
        return (f"$ {' '.join(self.argv)}\n-> exit {self.returncode}\n"
                f"stdout: {self.stdout!r}\nstderr: {self.stderr!r}\n"
                f"engine log:\n{self.log[-6000:]}")


def _run(argv: list[str], env: dict[str, str], input: bytes | None, timeout: float,
         logfile: Path | None) -> Result:
    start = logfile.stat().st_size if logfile and logfile.exists() else 0
    # Files, not pipes: a detached container could inherit a pipe and hold it open.
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(argv, input=input, stdout=out, stderr=err, env=env,
                                  timeout=timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -999
        out.seek(0)
        err.seek(0)
        res = Result(argv, rc, out.read().decode(errors="replace"),
                     err.read().decode(errors="replace"))
    if rc == -999:
        res.stderr += f"\n[harness: timed out after {timeout}s]"
    if logfile and logfile.exists():
        with open(logfile, "rb") as f:
            f.seek(start)
            res.log = f.read().decode(errors="replace")
    return res


def run_in_pty(argv: list[str], env: dict[str, str], *, input: bytes | None = None,
               before_input=None, timeout: float = 60) -> tuple[int, bytes]:
    """Run ``argv`` with a pty as its stdin/stdout/stderr, like a terminal user."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                start_new_session=True)
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    pending = input
    try:
        while time.monotonic() < deadline:
            if pending is not None and (before_input is None or before_input()):
                os.write(master, pending)
                pending = None
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:          # EIO: every slave fd is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None and pending is None:
                # Drain what is left, then stop.
                r, _, _ = select.select([master], [], [], 0.2)
                if not r:
                    break
        else:
            proc.kill()
            out += b"\n[harness: timed out]"
        rc = proc.wait(timeout=10)
    finally:
        os.close(master)
    return rc, out


def write_image_tar(rootfs: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w") as tar:
        tar.add(str(rootfs), arcname=".")
    return dest


def argv_wrapper(path: Path, real: str, log: Path) -> Path:
    """A runtime that logs its argv (one line per call, fields split by \\x1f) and execs ``real``."""
    path.write_text("#!/bin/sh\n"
                    f"printf '%s\\037' \"$@\" '\n' >> '{log}'\n"
                    f"exec '{real}' \"$@\"\n")
    path.chmod(0o755)
    return path


def read_argv_log(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    calls = []
    for line in log.read_text().splitlines():
        parts = line.split("\x1f")
        call = [p for p in parts if p != ""]
        if call:
            calls.append(call)
    return calls


# ---------------------------------------------------------------- dockerd

class Dockerd:
    """A private dockerd (and the containerd it starts) with ketch-runc added as a runtime."""

    def __init__(self, base: Path, cgroup_parent: str, runtimes: dict[str, str],
                 dockerd: str = "dockerd", docker: str = "docker",
                 logged: dict[str, str] | None = None) -> None:
        """``runtimes``: name -> binary; ``logged``: name -> binary, run through
        a wrapper that records the argv dockerd/containerd pass (see argv_calls)."""
        self.base = base
        self.cgroup_parent = cgroup_parent
        self.runtimes = dict(runtimes)
        self.logged = dict(logged or {})
        self.dockerd_bin = dockerd
        self.docker_bin = docker
        self.data_root = base / "root"
        self.exec_root = base / "run"
        self.pidfile = base / "docker.pid"
        self.sock = base / "docker.sock"
        self.log = base / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.containerd_pid: int | None = None
        self.host = HostEntries(["/run/containerd/s", "/run/containerd",
                                 "/run/docker/plugins", "/run/docker"])
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}",
                    "DOCKER_CONFIG": str(base / "cli")}
        self.env.pop("DOCKER_CONTEXT", None)
        self.env.pop("DOCKER_TLS_VERIFY", None)

    def start(self, timeout: float = 60) -> None:
        self.base.mkdir(parents=True, exist_ok=False)
        (self.base / "cli").mkdir()
        (self.base / "argv").mkdir()
        for name, real in self.logged.items():
            self.runtimes[name] = str(argv_wrapper(self.base / "argv" / name, real,
                                                   self.base / "argv" / f"{name}.log"))
        argv = self.daemon_argv("--bridge", "none", "--iptables=false")
        for name, path in self.runtimes.items():
            argv += ["--add-runtime", f"{name}={path}"]
        self.launch(argv, timeout)

    def daemon_argv(self, *extra: str) -> list[str]:
        """dockerd with this instance's private paths, socket and cgroup parent."""
        return [self.dockerd_bin, "--data-root", str(self.data_root),
                "--exec-root", str(self.exec_root), "--pidfile", str(self.pidfile),
                "-H", f"unix://{self.sock}", "--cgroup-parent", self.cgroup_parent,
                "--exec-opt", "native.cgroupdriver=cgroupfs", *extra]

    def launch(self, argv: list[str], timeout: float = 60) -> None:
        """Start ``argv`` (dockerd, or a command that execs it) and wait for its API."""
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}:\n"
                                   f"{self.log.read_text()[-4000:]}")
            if self.sock.exists() and self.cli("version", timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer in {timeout}s:\n"
                                   f"{self.log.read_text()[-4000:]}")
            time.sleep(0.1)
        self.containerd_pid = self._find_containerd()

    def _find_containerd(self) -> int | None:
        pidf = self.exec_root / "containerd" / "containerd.pid"
        cands = []
        if pidf.exists():
            try:
                cands.append(int(pidf.read_text().strip()))
            except ValueError:
                pass
        if self.proc is not None:
            cands += children(self.proc.pid)
        for p in cands:
            if "containerd" in cmdline(p) and str(self.exec_root) in cmdline(p):
                return p
        return None

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60) -> Result:
        return _run([self.docker_bin, *args], self.env, input, timeout, self.log)

    def ok(self, *args: str, **kw) -> Result:
        res = self.cli(*args, **kw)
        assert res.returncode == 0, str(res)
        return res

    def argv_calls(self, name: str) -> list[list[str]]:
        return read_argv_log(self.base / "argv" / f"{name}.log")

    def bundle_dir(self, cid: str) -> Path:
        return (self.exec_root / "containerd" / "daemon" / "io.containerd.runtime.v2.task"
                / "moby" / cid)

    def our_processes(self) -> list[int]:
        """Processes this daemon started, other than dockerd itself."""
        pids = set(pids_mentioning(str(self.base)))    # containerd, shims, hooks
        pids.update(cgroup_pids(self.cgroup_parent))   # containers and their execs
        if self.containerd_pid and alive(self.containerd_pid):
            pids.add(self.containerd_pid)
        if self.proc is not None:
            pids.discard(self.proc.pid)
        return sorted(pids)

    def stop(self) -> list[str]:
        """Tear everything down; returns what could not be cleaned (empty if all went)."""
        problems: list[str] = []
        ids: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            ids = self.cli("ps", "-aq", "--no-trunc", timeout=30).stdout.split()
            if ids:
                res = self.cli("rm", "-f", *ids, timeout=120)
                if res.returncode != 0:
                    problems.append(f"docker rm -f failed: {res}")
            containerd = self._find_containerd() or self.containerd_pid
            self.containerd_pid = containerd
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                problems.append("dockerd ignored SIGTERM for 20s; killed")
                self.proc.kill()
                self.proc.wait(timeout=10)
        # containerd is dockerd's child: dockerd stops it, but not when it was killed.
        shim_sockets = self._shim_sockets(ids)
        leftover = self.our_processes()
        if leftover:
            desc = [f"{p}: {cmdline(p)[:160]}" for p in leftover]
            survivors = terminate(leftover, timeout=10)
            problems.append(f"processes left after dockerd stopped (killed): {desc}")
            if survivors:
                problems.append(f"unkillable: {survivors}")
        left = unmount_all(self.data_root, self.exec_root, self.base)
        if left:
            problems.append(f"mounts left: {left}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)
            if self.base.exists():
                problems.append(f"could not remove {self.base}")
        left_cg = remove_cgroups(self.cgroup_parent)
        if left_cg:
            problems.append(f"cgroups left: {left_cg}")
        for sock in shim_sockets:          # left behind when a shim was killed
            if os.path.lexists(sock):
                problems.append(f"stale shim socket (removed): {sock}")
                os.unlink(sock)
        left_host = self.host.cleanup()
        if left_host:
            problems.append(f"host paths we created and could not remove: {left_host}")
        return problems

    def _shim_sockets(self, ids: list[str]) -> list[str]:
        """Our shims' sockets in /run/containerd/s (containerd 1.6 names them by hash)."""
        import glob
        import hashlib

        socks = set()
        task_dir = self.exec_root / "containerd" / "daemon" / "io.containerd.runtime.v2.task"
        for f in glob.glob(f"{task_dir}/*/*/address"):
            try:
                addr = Path(f).read_text().strip()
            except OSError:
                continue
            if addr.startswith("unix://"):
                socks.add(addr[len("unix://"):])
        grpc = self.exec_root / "containerd" / "containerd.sock"
        for cid in {*ids, *(Path(f).parent.name for f in glob.glob(f"{task_dir}/*/*/address"))}:
            digest = hashlib.sha256(f"{grpc}/moby/{cid}".encode()).hexdigest()
            socks.add(f"/run/containerd/s/{digest}")
        return sorted(s for s in socks if s.startswith("/run/containerd/s/"))


# ---------------------------------------------------------------- podman

class Podman:
    """podman with private storage, run root, tmpdir, network config and locks."""

    def __init__(self, base: Path, cgroup_parent: str, podman: str = "podman") -> None:
        self.base = base
        self.cgroup_parent = cgroup_parent
        self.bin = podman
        self.root = base / "root"
        self.runroot = base / "runroot"
        self.tmpdir = base / "tmp"
        self.conf = base / "containers.conf"
        self.events = base / "events.log"
        # Written by podman whatever its flags say (see the module docstring).
        self.host = HostEntries([
            "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
            "/var/lib/containers/cache", "/var/lib/containers",
            "/run/containers/networks", "/run/containers",
            "/run/runc", "/run/ketch-runc"])
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf),
                    "TMPDIR": str(self.tmpdir)}
        self.env.pop("CONTAINER_HOST", None)
        self.env.pop("CONTAINER_CONNECTION", None)

    def logged_runtime(self, real: str) -> str:
        """A wrapper for ``real`` that records its argv (see argv_calls).

        It keeps ``real``'s base name: podman decides from the name whether a
        runtime speaks JSON (``runtime_supports_json``), which changes its argv.
        """
        d = self.base / "argv" / Path(real).name
        d.mkdir(parents=True, exist_ok=True)
        path = d / Path(real).name
        if not path.exists():
            argv_wrapper(path, real, d / "argv.log")
        return str(path)

    def argv_calls(self, real: str) -> list[list[str]]:
        return read_argv_log(self.base / "argv" / Path(real).name / "argv.log")

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=False)
        self.tmpdir.mkdir()
        (self.base / "networks").mkdir()
        # lock_type file: locks under --tmpdir instead of /dev/shm/libpod_lock;
        # network_config_dir: not /etc/containers/networks nor /etc/cni/net.d.
        self.conf.write_text(
            "[network]\n"
            'network_backend = "netavark"\n'
            f'network_config_dir = "{self.base / "networks"}"\n'
            "[engine]\n"
            'lock_type = "file"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.events}"\n')

    def global_args(self, runtime: str | None) -> list[str]:
        args = ["--root", str(self.root), "--runroot", str(self.runroot),
                "--tmpdir", str(self.tmpdir), "--storage-driver", "overlay",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        if runtime:
            args += ["--runtime", runtime]
        return args

    def cli(self, runtime: str | None, *args: str, input: bytes | None = None,
            timeout: float = 60) -> Result:
        return _run([self.bin, *self.global_args(runtime), *args], self.env, input,
                    timeout, None)

    def run_args(self) -> list[str]:
        """Options every ``podman run``/``create`` gets here (see reference-tools.md)."""
        return ["--network", "none", "--cgroup-parent", self.cgroup_parent,
                "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]

    def our_processes(self) -> list[int]:
        pids = set(pids_mentioning(str(self.base)))    # conmon, podman cleanup
        pids.update(cgroup_pids(self.cgroup_parent))
        return sorted(pids)

    def stop(self, runtimes: list[str]) -> list[str]:
        problems: list[str] = []
        ids = set(self._container_ids())
        if self.root.exists():
            # A container is removed through the runtime it was made with.
            for rt in runtimes:
                res = self.cli(rt, "rm", "-af", "-t", "0", timeout=120)
                if res.returncode != 0:
                    problems.append(f"podman rm -af failed: {res}")
            res = self.cli(None, "ps", "-aq", timeout=30)
            if res.stdout.strip():
                problems.append(f"containers left in podman: {res.stdout.split()}")
        # conmon's exit command (podman container cleanup) may still be running.
        leftover = wait_gone(self.our_processes(), 10.0)
        if leftover:
            desc = [f"{p}: {cmdline(p)[:160]}" for p in leftover]
            terminate(leftover, timeout=5)
            problems.append(f"processes left after podman rm -af (killed): {desc}")
        # As root podman gives the runtime no --root: its state is in the runtime's
        # default root (/run/runc, /run/ketch-runc), one directory per container id.
        ids.update(self._container_ids())
        for rt in runtimes:
            real = os.path.realpath(rt)
            state_root = Path("/run") / ("ketch-runc" if "ketch" in Path(real).name else "runc")
            for cid in sorted(ids):
                if (state_root / cid).exists():
                    problems.append(f"runtime state left: {state_root / cid}")
                    _run([rt, "delete", "--force", cid], self.env, None, 30, None)
                    shutil.rmtree(state_root / cid, ignore_errors=True)
        left = unmount_all(self.base)
        if left:
            problems.append(f"mounts left: {left}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)
            if self.base.exists():
                problems.append(f"could not remove {self.base}")
        left_cg = remove_cgroups(self.cgroup_parent)
        if left_cg:
            problems.append(f"cgroups left: {left_cg}")
        left_host = self.host.cleanup()
        if left_host:
            problems.append(f"host paths we created and could not remove: {left_host}")
        return problems

    def _container_ids(self) -> list[str]:
        d = self.root / "overlay-containers"
        try:
            return [e for e in os.listdir(d) if len(e) == 64]
        except OSError:
            return []


def engine_interfaces() -> set[str]:
    """Interfaces only dockerd or podman would create (never our own bridges)."""
    names = set(os.listdir("/sys/class/net"))
    return {n for n in names if n in ("docker0", "podman0", "cni-podman0")
            or n.startswith(("br-", "cni-"))}
