"""``exec``: a new process inside a running container's namespaces and cgroup.

The caller forks with its pid_for_children set to the container's pid
namespace, so the new process is in it and is still the caller's child. The
child joins the user namespace first, then the others (mount last), sets up
the process as init did, and execs; the sync socket is close-on-exec, so EOF
on it tells the parent the exec happened, and an ERROR message that it failed.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from ketch.errors import InvalidArgument
from ketch.linux import syscalls as sc
from ketch.runtime import process as proc_mod
from ketch.runtime import sync
from ketch.runtime.spec import Process, Spec
from ketch.runtime.specconv import RLIMITS
from ketch.runtime.state import ContainerState

if TYPE_CHECKING:
    from ketch.runtime.container import ExecOptions, Runtime, Started

# Joined in this order; pid is handled by the parent, around fork.
_EXEC_NS = [("user", sc.CLONE_NEWUSER), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
            ("net", sc.CLONE_NEWNET), ("cgroup", sc.CLONE_NEWCGROUP),
            ("time", sc.CLONE_NEWTIME), ("mnt", sc.CLONE_NEWNS)]


def _differs(pid: int, ns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino
    except FileNotFoundError:
        return False


def exec_in(rt: Runtime, st: ContainerState, spec: Spec, process: Process,
            opts: ExecOptions) -> Started:
    from ketch.runtime.container import Started

    if not process.args:
        raise InvalidArgument("args must not be empty")
    if process.cwd and not os.path.isabs(process.cwd):
        raise InvalidArgument(f"cwd {process.cwd!r} is not an absolute path")
    rlimits = []
    for r in process.rlimits:
        if r.type not in RLIMITS:
            raise InvalidArgument(f"wrong rlimit value: {r.type}")
        rlimits.append((RLIMITS[r.type], r.soft, r.hard))
    init = st.init_pid
    ns_fds: list[tuple[int, int]] = []
    try:
        for name, flag in _EXEC_NS:
            if _differs(init, name):
                ns_fds.append((os.open(f"/proc/{init}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC),
                               flag))
        console = None
        if process.terminal:
            if not opts.console_socket:
                raise InvalidArgument("cannot allocate tty if runc will detach without "
                                      "setting console socket")
            from ketch.runtime import console as console_mod
            console = console_mod.connect(opts.console_socket)
        parent_sock, child_sock = sync.pair()
        seccomp = spec.linux.seccomp if spec.linux else None
        proc_mod.preload(terminal=console is not None, seccomp=seccomp is not None)
        from ketch.runtime.container import _cgroup_joins, _compiled

        # The container's program compiled once (docker's profile: 15-18 ms), not
        # in every exec's child.
        flt = _compiled(seccomp) if seccomp is not None else None
        mgr = rt._cgroup(st.cgroup_path)
        self_join: list[str] = []
        parent_join: list[str] = []
        if not opts.cgroup:
            # As the init: born in the cgroup2 directory (clone3), the v1 ones joined
            # by the child itself (no threadgroup lock, no RCU grace period).
            self_join, parent_join = _cgroup_joins(rt._cgroup_mode(), mgr)
        else:
            mgr = rt._cgroup(_sub_cgroup(st.cgroup_path, opts.cgroup))

        saved = None
        pid_fd = None
        if _differs(init, "pid"):
            saved = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            pid_fd = os.open(f"/proc/{init}/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
            rt.sys.setns(pid_fd, sc.CLONE_NEWPID)
        try:
            maybe_pid = None
            if len(parent_join) == 1:
                from ketch.linux.clone import fork_into_cgroup
                maybe_pid = fork_into_cgroup(parent_join[0])
            born = maybe_pid is not None
            pid = os.fork() if maybe_pid is None else maybe_pid
            # Where the parent has nothing left to write (a v1-only host), the
            # child joins its v1 cgroups itself too; else the parent moves it.
            parent_moves = not born and bool(parent_join or opts.cgroup)
            if pid == 0:
                parent_sock.close()
                _child(child_sock, ns_fds, process, rlimits, flt, console, opts,
                       () if parent_moves else tuple(self_join))
                os._exit(1)
        finally:
            if saved is not None and os.getpid() != 1:
                rt.sys.setns(saved, sc.CLONE_NEWPID)
                os.close(saved)
            if pid_fd is not None:
                os.close(pid_fd)
        child_sock.close()
        if console is not None:
            console.close()
        try:
            if parent_moves:
                mgr.apply(pid)
            sync.send(parent_sock, sync.Kind.GO)
            try:
                data = parent_sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                import json
                obj = json.loads(data)
                sync.raise_error(sync.Message(sync.Kind(obj["k"]), 0, obj.get("t", ""),
                                              obj.get("e", "")))
        except BaseException:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            raise
        finally:
            parent_sock.close()
        if opts.pid_file:
            from ketch.runtime.container import write_pid_file
            write_pid_file(opts.pid_file, pid)
        pidfd = None
        try:
            pidfd = sc.pidfd_open(pid)
        except OSError:
            pass
        return Started(pid=pid, pidfd=pidfd)
    finally:
        for fd, _ in ns_fds:
            os.close(fd)


def _sub_cgroup(base: str, spec: str) -> str:
    """``--cgroup path`` or ``--cgroup controller:path``: a sub-cgroup of the container's."""
    sub = spec.split(":", 1)[1] if ":" in spec else spec
    sub = os.path.normpath("/" + sub).lstrip("/")
    return base.rstrip("/") + "/" + sub


def _child(sock: socket.socket, ns_fds: list[tuple[int, int]], process: Process,
           rlimits: list[tuple[int, int, int]], flt: Any, console: Any,
           opts: ExecOptions, cgroup_join: tuple[str, ...]) -> None:
    from ketch.runtime.init import _describe, _join_cgroups, _redirect_stdio

    try:
        _redirect_stdio(opts.stdio)
        _join_cgroups(cgroup_join)      # before the namespaces: host paths, host root
        sync.expect(sock, sync.Kind.GO)
        s = sc.LinuxSyscalls()
        for fd, flag in ns_fds:
            s.setns(fd, flag)
            if flag == sc.CLONE_NEWUSER:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
        os.setsid()
        if console is not None:
            from ketch.runtime import console as console_mod
            master, slave, name = console_mod.open_pty()
            size = process.console_size
            if size is not None and size.height and size.width:
                console_mod.set_size(master, size.height, size.width)
            console_mod.send_fd(console, master, name)
            os.close(master)
            console.close()
            console_mod.make_controlling(slave)
            if slave > 2:
                os.close(slave)
        proc_mod.apply_rlimits(rlimits)
        proc_mod.set_oom_score_adj(process.oom_score_adj)
        env = proc_mod.env_dict(process.env)
        if "HOME" not in env:
            env["HOME"] = proc_mod.home_of(process.user.uid)
        os.chdir("/")
        path = proc_mod.lookup(process.args[0], env)
        prepared = proc_mod.Prepared(path=path, args=list(process.args), env=env)
        if flt is not None and not process.no_new_privileges:
            flt.load()
        proc_mod.set_user(process, proc_mod.cap_sets_of(process))
        if process.no_new_privileges:
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        os.umask(process.user.umask if process.user.umask is not None
                 else proc_mod.DEFAULT_UMASK)
        try:
            os.chdir(process.cwd or "/")
        except OSError as exc:
            raise OSError(exc.errno, f"chdir to cwd (\"{process.cwd}\") set in config.json "
                                     f"failed: {(exc.strerror or '').lower()}") from None
        if flt is not None and process.no_new_privileges:
            flt.load()
        proc_mod.exec_now(prepared, opts.preserve_fds, keep=(sock.fileno(),))
    except BaseException as exc:  # noqa: BLE001 - report everything to the parent
        try:
            sync.send(sock, sync.Kind.ERROR, text=_describe(exc), error=type(exc).__name__)
        except OSError:
            pass
    os._exit(1)
