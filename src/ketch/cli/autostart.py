"""Start ketchd in the background when the default socket has no daemon.

Docker needs a service manager to start dockerd; ketch's CLI does it itself,
the first time root runs a command and nothing listens on the default
socket. The daemon must then live as if init had started it, not as a child
of the user's shell:

- a new session, so the terminal's hang-up and the shell's job control never
  reach it;
- its own cgroup (``ketchd`` in each hierarchy), so it leaves the user's
  session cgroup and whatever limits or kills that cgroup gets;
- the resource limits of pid 1, not the ``ulimit`` of the shell that started it;
- no inherited file descriptors except /dev/null and its log
  (``<root>/ketchd.log``), default signal dispositions and an empty mask;
- a lock (``<exec-root>/autostart.lock``), so two CLIs started at once never
  start two daemons: the second waits and then finds the first one's socket.

Where things go can be moved with ``KETCH_ROOT``, ``KETCH_EXEC_ROOT`` and
``KETCH_DAEMON_CGROUP`` (tests use private ones).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Mapping

from ketch.errors import Unavailable
from ketch.record import Record

DEFAULT_ROOT = "/var/lib/ketch"
DEFAULT_EXEC_ROOT = "/run/ketch"
DEFAULT_CGROUP = "ketchd"
START_TIMEOUT = 20.0

# The limits a service gets from init; names as /proc/<pid>/limits prints them.
LIMITS = {
    "Max open files": resource.RLIMIT_NOFILE,
    "Max processes": resource.RLIMIT_NPROC,
    "Max core file size": resource.RLIMIT_CORE,
    "Max stack size": resource.RLIMIT_STACK,
    "Max locked memory": resource.RLIMIT_MEMLOCK,
    "Max file size": resource.RLIMIT_FSIZE,
    "Max data size": resource.RLIMIT_DATA,
    "Max address space": resource.RLIMIT_AS,
    "Max pending signals": resource.RLIMIT_SIGPENDING,
    "Max msgqueue size": resource.RLIMIT_MSGQUEUE,
}


class Place(Record):
    """Where an auto-started daemon keeps its state, socket, log and cgroup."""

    __slots__ = ("cgroup", "exec_root", "root")

    def __init__(self, root: str = DEFAULT_ROOT, exec_root: str = DEFAULT_EXEC_ROOT,
                 cgroup: str = DEFAULT_CGROUP) -> None:
        self.root = root
        self.exec_root = exec_root
        self.cgroup = cgroup

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Place:
        env = os.environ if environ is None else environ
        return cls(env.get("KETCH_ROOT") or DEFAULT_ROOT,
                   env.get("KETCH_EXEC_ROOT") or DEFAULT_EXEC_ROOT,
                   env.get("KETCH_DAEMON_CGROUP") or DEFAULT_CGROUP)

    @property
    def socket(self) -> str:
        return os.path.join(self.exec_root, "ketch.sock")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> str:
        return os.path.join(self.root, "ketchd.log")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.exec_root, "ketchd.pid")


def daemon_argv(place: Place) -> list[str]:
    """ketchd from the same installation as this CLI (the venv's interpreter)."""
    return [sys.executable, "-m", "ketch.daemon_main", "--root", place.root,
            "--exec-root", place.exec_root, "--host", place.host, "--pidfile", place.pidfile]


def parse_limits(text: str) -> dict[int, tuple[int, int]]:
    """``/proc/<pid>/limits`` -> {RLIMIT_*: (soft, hard)}; "unlimited" is RLIM_INFINITY."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines()[1:]:
        for name, res in LIMITS.items():
            if line.startswith(name):
                fields = line[len(name):].split()
                if len(fields) >= 2:
                    out[res] = (_limit(fields[0]), _limit(fields[1]))
    return out


def _limit(word: str) -> int:
    return resource.RLIM_INFINITY if word == "unlimited" else int(word)


def cgroup_dirs(name: str, mountinfo: str, proc_cgroup: str) -> list[str]:
    """One ``<hierarchy>/<name>`` per cgroup hierarchy this process is in.

    v1 hierarchies are matched to mount points by their controller list (or
    ``name=``), the v2 one by its fstype; a hierarchy that is not mounted is
    skipped.
    """
    mounts: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        if rest[0] == "cgroup2":
            mounts.setdefault("", fields[4])
        elif rest[0] == "cgroup":
            opts = set(rest[2].split(","))
            for line2 in proc_cgroup.splitlines():
                _, ctrls, _ = line2.split(":", 2)
                if ctrls and set(ctrls.split(",")) <= opts:
                    mounts.setdefault(ctrls, fields[4])
    out = []
    for line in proc_cgroup.splitlines():
        _, ctrls, _ = line.split(":", 2)
        base = mounts.get(ctrls)
        if base is not None:
            out.append(os.path.join(base, name))
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def clamp(want: tuple[int, int], hard_now: int) -> tuple[int, int]:
    """``want`` lowered to a hard limit we cannot raise (no CAP_SYS_RESOURCE)."""
    def low(a: int, b: int) -> int:
        if a == resource.RLIM_INFINITY:
            return b
        return a if b == resource.RLIM_INFINITY else min(a, b)
    return low(want[0], hard_now), low(want[1], hard_now)


def _set_limit(res: int, want: tuple[int, int]) -> None:
    try:
        resource.setrlimit(res, want)
    except (OSError, ValueError):
        try:
            resource.setrlimit(res, clamp(want, resource.getrlimit(res)[1]))
        except (OSError, ValueError):
            pass


def _child(argv: list[str], place: Place, limits: dict[int, tuple[int, int]],
           cgroups: list[str]) -> None:
    """In the forked child: become a service, then exec ketchd. Never returns."""
    try:
        os.setsid()
        for sig in range(1, signal.NSIG):
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for res, want in limits.items():
            _set_limit(res, want)
        for d in cgroups:
            try:
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write("0")
            except OSError:
                pass  # a hierarchy we may not write to: stay where we are in it
        os.chdir("/")
        null = os.open("/dev/null", os.O_RDONLY)
        log = os.open(place.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 2**31 - 1)  # close_range(2) underneath: cheap however high
        os.execv(argv[0], argv)
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        os._exit(127)


def start(place: Place, ping: Callable[[], bool], *, timeout: float = START_TIMEOUT,
          argv: list[str] | None = None) -> int | None:
    """Start ketchd for ``place`` unless ``ping`` finds one; its pid, or None if one ran.

    Waits until the daemon answers ``ping``; if it dies first, its log's last
    lines are the error.
    """
    import fcntl

    os.makedirs(place.exec_root, 0o711, exist_ok=True)
    os.makedirs(place.root, 0o711, exist_ok=True)
    lock = os.open(os.path.join(place.exec_root, "autostart.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ping():
            return None  # another CLI started it while we waited for the lock
        limits = parse_limits(_read("/proc/1/limits"))
        cgroups = cgroup_dirs(place.cgroup, _read("/proc/self/mountinfo"),
                              _read("/proc/self/cgroup"))
        argv = argv or daemon_argv(place)
        start_offset = os.path.getsize(place.log) if os.path.exists(place.log) else 0
        pid = os.fork()
        if pid == 0:
            _child(argv, place, limits, cgroups)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ping():
                return pid
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                raise Unavailable(_failure(place, start_offset, status))
            time.sleep(0.05)
        raise Unavailable(f"ketchd (pid {pid}) did not answer on {place.socket} within "
                          f"{timeout:.0f}s; see {place.log}")
    finally:
        os.close(lock)


def _failure(place: Place, offset: int, status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    try:
        with open(place.log, "rb") as f:
            f.seek(offset)
            tail = f.read().decode(errors="replace").strip().splitlines()[-5:]
    except OSError as exc:
        tail = [f"(cannot read {place.log}: {os.strerror(exc.errno or errno.EIO)})"]
    lines = "\n".join(tail)
    return f"could not start ketchd (exit status {code}); from {place.log}:\n{lines}"
