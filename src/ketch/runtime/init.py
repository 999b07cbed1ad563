"""The container's init: one linear sequence, run in the forked child.

The parent (``container.create``) forked us after putting us in the new pid
namespace; from here on, in order (runc's standard_init, same reasons):

    join the v1 cgroups (writing 0 to each hierarchy's ``tasks``); the cgroup2
    one (hybrid, v2) we were born in (clone3), or the parent moves us there; wait
    GO here when the order matters (new user or cgroup namespace, intermediate,
    v2), else before the first message we send
    user namespace: join by path, or unshare and let the parent write the maps
    join namespaces by path, unshare the new ones
    (user namespace + new pid namespace: fork once more; the child is pid 1)
    rootfs: mounts, devices            -> parent runs prestart/createRuntime hooks
    createContainer hooks, pivot_root
    session, console, hostname, sysctls, readonly and masked paths, ro root
    rlimits, oom_score_adj, personality, keyring
    resolve the executable (so ``create`` fails, not ``start``, when it is missing)
    seccomp (before dropping caps unless no_new_privs), user and capabilities
    READY -> block opening the exec fifo for writing until ``start`` reads it
    startContainer hooks, seccomp (with no_new_privs), execve

Any failure before READY is sent to the parent as ERROR and ends the child.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ketch.linux import syscalls as sc
from ketch.linux.syscalls import Syscalls
from ketch.runtime import process as proc_mod
from ketch.runtime import sync
from ketch.runtime.rootfs import Rootfs
from ketch.runtime.spec import Box, Spec
from ketch.runtime.specconv import NAMESPACES, Plan

if TYPE_CHECKING:
    import socket

    from ketch.linux.seccomp import Filter


@dataclass
class InitConfig:
    """Everything the child needs; it inherits this object through fork."""

    container_id: str
    spec: Spec
    plan: Plan
    sys: Syscalls
    sock: socket.socket
    fifo_fd: int                        # O_PATH fd of <state>/exec.fifo
    console: socket.socket | None = None
    stdio: tuple[int | None, int | None, int | None] = (None, None, None)
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0
    intermediate: bool = False          # fork once more after unsharing the pid ns
    cgroup_paths: Mapping[str, str] = field(default_factory=dict)
    cgroup_v1_mounts: Mapping[str, str] = field(default_factory=dict)
    cgroup_v2: bool = False
    create_container_state: dict[str, object] = field(default_factory=dict)
    ready: bool = False                 # READY sent: errors now go to stderr
    seccomp: Filter | None = None       # the profile compiled by the parent, if it did
    cgroup_join: tuple[str, ...] = ()   # cgroup v1 dirs we move ourselves into
    report_join: bool = False           # the parent waits for JOINED to write the rest
    go_early: bool = True               # wait for GO before anything else
    go_seen: bool = False


def child_main(cfg: InitConfig) -> None:
    """Entry point in the forked child. Never returns."""
    code = 1
    try:
        _redirect_stdio(cfg.stdio)
        _close_other_fds(cfg)
        _run(cfg)
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
        msg = _describe(exc)
        ready = cfg.ready
        if not ready:
            try:
                sync.send(cfg.sock, sync.Kind.ERROR, text=msg, error=type(exc).__name__)
            except OSError:
                pass
        else:
            try:
                os.write(2, f"ketch-runc init: {msg}\n".encode())
            except OSError:
                pass
        if isinstance(exc, OSError) and ready:
            code = proc_mod.exit_code_for_exec_error(exc)
    os._exit(code)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if os.environ.get("KETCH_DEBUG"):
        import traceback
        text += "\n" + traceback.format_exc()
    return text


def _redirect_stdio(stdio: tuple[int | None, int | None, int | None]) -> None:
    for target, fd in enumerate(stdio):
        if fd is not None and fd != target:
            os.dup2(fd, target)


def _close_other_fds(cfg: InitConfig) -> None:
    """Close every fd the caller had open that this container was not given.

    The caller may be a supervisor holding other containers' pipes and ptys;
    a copy kept here until exec would delay their EOFs (and leak them to the
    container if CLOEXEC was missing).
    """
    keep = {0, 1, 2, cfg.sock.fileno(), cfg.fifo_fd}
    keep.update(range(3, 3 + cfg.preserve_fds))
    if cfg.console is not None:
        keep.add(cfg.console.fileno())
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 2**31 - 1)


def _run(cfg: InitConfig) -> None:
    spec, plan, s = cfg.spec, cfg.plan, cfg.sys
    assert spec.process is not None and spec.linux is not None
    process = spec.process
    _join_cgroups(cfg.cgroup_join)
    if cfg.report_join:
        # Only now may the parent write the rest: its write holds the cgroup
        # mutex through an RCU grace period, which ours would wait behind.
        sync.send(cfg.sock, sync.Kind.JOINED)
    if cfg.go_early:
        _await_go(cfg)

    joins = dict(plan.join_namespaces)
    if "user" in joins:
        _setns(s, joins["user"], sc.CLONE_NEWUSER)
    if plan.has_new("user"):
        s.unshare(sc.CLONE_NEWUSER)
        sync.send(cfg.sock, sync.Kind.MAP_IDS)
        sync.expect(cfg.sock, sync.Kind.IDS_MAPPED)
    if plan.has_ns("user"):
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    for ns_type, path in plan.join_namespaces:
        if ns_type in ("user", "pid"):
            continue   # user: above; pid: the parent did it (or the intermediate below)
        _setns(s, path, NAMESPACES[ns_type][0])
    unshare = plan.new_namespaces & ~(sc.CLONE_NEWUSER | sc.CLONE_NEWPID)
    if cfg.intermediate:
        unshare |= sc.CLONE_NEWPID
    if unshare:
        s.unshare(unshare)
    if cfg.intermediate:
        pid = os.fork()
        if pid:
            sync.send(cfg.sock, sync.Kind.PID, pid=pid)
            os._exit(0)

    rootfs = Rootfs(plan=plan, sys=s, in_userns=plan.has_ns("user"),
                    cgroup_paths=cfg.cgroup_paths, cgroup_v1_mounts=cfg.cgroup_v1_mounts,
                    cgroup_v2=cfg.cgroup_v2)
    # Device nodes and mount points get exactly the modes the spec asks for.
    os.umask(0)
    rootfs.prepare()
    hooks = spec.hooks
    if hooks:
        _await_go(cfg)      # hooks see the container in all of its cgroups
    if hooks and (hooks.prestart or hooks.create_runtime):
        sync.send(cfg.sock, sync.Kind.HOOKS)
        sync.expect(cfg.sock, sync.Kind.HOOKS_DONE)
    if hooks and hooks.create_container:
        from ketch.runtime import hooks as hooks_mod
        state = dict(cfg.create_container_state, pid=os.getpid())
        hooks_mod.run(hooks.create_container, state, "createContainer")
    rootfs.pivot(cfg.no_pivot)

    os.setsid()
    if process.terminal:
        _setup_console(cfg, process.console_size)
    if spec.hostname:
        s.sethostname(spec.hostname)
    if spec.domainname:
        s.setdomainname(spec.domainname)
    for key, value in spec.linux.sysctl.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    rootfs.finalize(spec.linux.readonly_paths, spec.linux.masked_paths)

    proc_mod.apply_rlimits(plan.rlimits)
    proc_mod.set_oom_score_adj(process.oom_score_adj)
    if spec.linux.personality is not None:
        _set_personality(spec.linux.personality.domain)
    if not cfg.no_new_keyring:
        _join_session_keyring(cfg.container_id)

    env = proc_mod.env_dict(process.env)
    if "HOME" not in env:
        env["HOME"] = proc_mod.home_of(process.user.uid)
    path = proc_mod.lookup(process.args[0], env)
    prepared = proc_mod.Prepared(path=path, args=list(process.args), env=env)

    seccomp_filter = None
    if spec.linux.seccomp is not None:
        seccomp_filter = cfg.seccomp
        if seccomp_filter is None:
            from ketch.linux import seccomp
            seccomp_filter = seccomp.compile(spec.linux.seccomp)
        if not process.no_new_privileges:
            seccomp_filter.load()
    proc_mod.set_user(process, proc_mod.cap_sets_of(process))
    if process.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    os.umask(process.user.umask if process.user.umask is not None else proc_mod.DEFAULT_UMASK)
    _chdir(process.cwd)

    _await_go(cfg)
    sync.send(cfg.sock, sync.Kind.READY)
    cfg.ready = True
    cfg.sock.close()
    # Blocks until `start` opens the fifo for reading; the byte tells it we go.
    fifo = os.open(f"/proc/self/fd/{cfg.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fifo, b"0")
    os.close(fifo)
    os.close(cfg.fifo_fd)

    if hooks and hooks.start_container:
        from ketch.runtime import hooks as hooks_mod
        hooks_mod.run(hooks.start_container, dict(cfg.create_container_state,
                                                  pid=os.getpid(), status="running"),
                      "startContainer")
    if seccomp_filter is not None and process.no_new_privileges:
        seccomp_filter.load()
    proc_mod.exec_now(prepared, cfg.preserve_fds)


def _join_cgroups(dirs: tuple[str, ...]) -> None:
    """Move ourselves (one thread: a fresh fork) into each v1 cgroup: 0 written to
    ``tasks`` is the calling thread, moved without the threadgroup lock."""
    for d in dirs:
        fd = os.open(os.path.join(d, "tasks"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        except OSError as exc:
            raise OSError(exc.errno, f"joining cgroup {d}: {exc.strerror}") from None
        finally:
            os.close(fd)


def _await_go(cfg: InitConfig) -> None:
    if not cfg.go_seen:
        sync.expect(cfg.sock, sync.Kind.GO)
        cfg.go_seen = True


def _setns(s: Syscalls, path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        s.setns(fd, nstype)
    except OSError as exc:
        raise OSError(exc.errno, f"failed to join namespace {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _setup_console(cfg: InitConfig, size: Box | None) -> None:
    from ketch.runtime import console

    if cfg.console is None:
        raise OSError("process.terminal is set but no console socket was given")
    master, slave, name = console.open_pty()
    if size is not None and size.height and size.width:
        console.set_size(master, size.height, size.width)
    # /dev/console is the container's terminal, as on a real machine.
    if os.path.exists("/dev/console") or os.path.isdir("/dev"):
        try:
            if not os.path.exists("/dev/console"):
                os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY, 0o600))
            cfg.sys.mount(name, "/dev/console", "bind", sc.MS_BIND)
        except OSError:
            pass
    console.send_fd(cfg.console, master, name)
    os.close(master)
    cfg.console.close()
    console.make_controlling(slave)
    if slave > 2:
        os.close(slave)


def _chdir(cwd: str) -> None:
    try:
        os.chdir(cwd or "/")
    except OSError as exc:
        raise OSError(exc.errno, f"chdir to cwd (\"{cwd}\") set in config.json failed: "
                                 f"{(exc.strerror or '').lower()}") from None


_PERSONALITY = {"LINUX": 0x0000, "LINUX32": 0x0008}


def _set_personality(domain: str) -> None:
    from ketch.errors import InvalidArgument
    if domain not in _PERSONALITY:
        raise InvalidArgument(f"invalid personality domain {domain}")
    import ctypes
    ret = sc.libc().personality(ctypes.c_ulong(_PERSONALITY[domain]))
    if ret < 0:
        raise OSError(ctypes.get_errno(), "personality failed")


def _join_session_keyring(container_id: str) -> None:
    """A fresh session keyring, so containers do not share the host's keys."""
    KEYCTL_JOIN_SESSION_KEYRING = 1
    try:
        ret = sc.raw_syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING,
                             f"_ses.{container_id}".encode())
    except OSError:
        return
    if ret < 0:
        import ctypes
        import errno
        err = ctypes.get_errno()
        # Not having keyrings (ENOSYS) or being denied them is not fatal, as in runc.
        if err not in (errno.ENOSYS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise OSError(err, f"could not create session key: {os.strerror(err)}")

