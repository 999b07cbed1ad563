"""Turning the current (forked) process into the container's process, then exec.

Shared by a container's init and by ``exec``: rlimits, OOM score, the user,
capabilities, no_new_privs, seccomp, fds and signals, and the final execve.
The order matters and is runc's:

    rlimits, oom_score_adj            (still fully privileged)
    seccomp load if not no_new_privs  (loading needs CAP_SYS_ADMIN then)
    bounding set, setgroups/setgid/setuid keeping caps, capset, ambient
    no_new_privs, umask, chdir
    ... wait for start ...
    seccomp load if no_new_privs      (as late as possible)
    signals to default, fds closed, execve
"""

from __future__ import annotations

import os
import signal
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketch.errors import InvalidArgument, System
from ketch.linux import syscalls as sc
from ketch.runtime.spec import Process
from ketch.runtime.specconv import RLIMITS

if TYPE_CHECKING:
    from ketch.linux.caps import CapSets

DEFAULT_UMASK = 0o022


@dataclass
class Prepared:
    """What ``exec`` needs once the process is set up."""

    path: str
    args: list[str]
    env: dict[str, str]


def preload(*, terminal: bool = False, seccomp: bool = False, hooks: bool = False) -> None:
    """Import now what is needed after pivot_root or setns(mnt).

    From then on the host's filesystem (and Python's library on it) is out of
    reach, so a lazy import there would fail inside the container.
    """
    import errno  # noqa: F401
    import resource  # noqa: F401

    import ketch.linux.caps  # noqa: F401
    if terminal:
        import ketch.runtime.console  # noqa: F401
    if seccomp:
        import ketch.linux.seccomp
        ketch.linux.seccomp.preload()   # libseccomp itself, not just our module
    if hooks:
        import subprocess  # noqa: F401

        import ketch.runtime.hooks  # noqa: F401


def env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not key:
            continue
        out[key] = value if sep else ""
    return out


def lookup(name: str, env: dict[str, str]) -> str:
    """Resolve ``name`` as execve will, with Go's exec.LookPath wording for failures."""
    if "/" in name:
        try:
            st = os.stat(name)
        except OSError as exc:
            raise InvalidArgument(f'unable to start container process: exec: "{name}": '
                                  f'stat {name}: {(exc.strerror or "").lower()}') from None
        if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
            raise InvalidArgument(f'unable to start container process: exec: "{name}": '
                                  'permission denied')
        return name
    for d in env.get("PATH", "").split(":"):
        candidate = os.path.join(d or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise InvalidArgument(f'unable to start container process: exec: "{name}": executable '
                          'file not found in $PATH')


def home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def apply_rlimits(rlimits: list[tuple[int, int, int]]) -> None:
    import resource

    for res, soft, hard in rlimits:
        try:
            resource.prlimit(0, res, (soft, hard))
        except (OSError, ValueError) as exc:
            name = next((k for k, v in RLIMITS.items() if v == res), str(res))
            raise System(f"error setting rlimit {name}: {exc}") from None


def set_oom_score_adj(value: int | None) -> None:
    if value is None:
        return
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(value))


def set_user(proc: Process, cap_sets: CapSets | None) -> None:
    """setgroups/setgid/setuid, keeping exactly the capabilities the spec asks for."""
    from ketch.linux import caps

    user = proc.user
    sets = cap_sets if cap_sets is not None else caps.CapSets()
    try:
        caps.drop_bounding(sets)
    except OSError as exc:
        raise System(f"unable to start container process: unable to apply caps: "
                     f"{_reason(exc)}") from None
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups(list(user.additional_gids))
    except PermissionError:
        # Without a gid mapping for them (setgroups denied in a user namespace).
        if user.additional_gids:
            raise System("unable to set additional groups: operation not permitted") from None
    try:
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        raise System(f"unable to set user {user.uid}:{user.gid}: {_reason(exc)}") from None
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    try:
        caps.apply_sets(sets)
    except OSError as exc:
        raise System(f"unable to start container process: unable to apply caps: "
                     f"{_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    """"operation not permitted", as Go prints errno texts."""
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


def cap_sets_of(proc: Process) -> CapSets:
    from ketch.linux import caps

    c = proc.capabilities
    if c is None:
        return caps.CapSets()
    return caps.CapSets(
        bounding=caps.parse(c.bounding), effective=caps.parse(c.effective),
        inheritable=caps.parse(c.inheritable), permitted=caps.parse(c.permitted),
        ambient=caps.parse(c.ambient))


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ and SIG_IGN survives exec: undo all of it."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass


def exec_now(prepared: Prepared, preserve_fds: int = 0, keep: tuple[int, ...] = ()) -> None:
    """Close every fd not given, reset signals, execve. Returns only by raising.

    ``keep`` fds survive until execve (they must be close-on-exec): the parent
    reads EOF on them as "exec happened" and an error message otherwise.
    """
    for fd in range(3, 3 + preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    first = 3 + preserve_fds
    for fd in sorted(k for k in keep if k >= first):
        if fd > first:
            sc.close_range(first, fd - 1)
        first = fd + 1
    sc.close_range(first)
    reset_signals()
    os.execve(prepared.path, prepared.args, prepared.env)


def exit_code_for_exec_error(exc: OSError) -> int:
    import errno

    return 127 if exc.errno == errno.ENOENT else 126
