"""``ketch-runc run`` and ``exec`` in the foreground: wait, forward signals, proxy a tty.

Detached, these return as soon as the process runs (its stdio are ours, or a
pty sent over ``--console-socket``). In the foreground we are the process's
parent (``run`` becomes a child subreaper first, so even an init forked by an
intermediate process comes back to us), we forward the signals we receive,
and with a terminal and no console socket we make the console socket
ourselves and copy bytes between our stdio and the pty master.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from ketch.errors import InvalidArgument
from ketch.linux import syscalls as sc

_NOT_FORWARDED = {signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP, signal.SIGTTIN,
                  signal.SIGTTOU, signal.SIGTSTP, signal.SIGCONT}


class _InternalConsole:
    """A console socket of our own, for a terminal nobody else will hold."""

    def __init__(self) -> None:
        import socket
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="ketch-runc-console-")
        self.path = os.path.join(self.dir, "console.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)

    def receive(self) -> int:
        from ketch.runtime import console
        conn, _ = self.listener.accept()
        try:
            fd, _name = console.recv_fd(conn)
        finally:
            conn.close()
        return fd

    def close(self) -> None:
        self.listener.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass


def _forward_signals(pid: int, master: int | None) -> None:
    def forward(sig: int, _frame: Any) -> None:
        if sig == signal.SIGWINCH and master is not None:
            _copy_winsize(master)
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in signal.valid_signals():
        if sig in _NOT_FORWARDED:
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError, RuntimeError):
            pass


def _copy_winsize(master: int) -> None:
    from ketch.runtime import console
    for fd in (0, 1, 2):
        if os.isatty(fd):
            size = console.get_size(fd)
            if size:
                console.set_size(master, *size)
            return


def _wait(pid: int, master: int | None) -> int:
    """Wait for ``pid`` (proxying the tty if any); return a shell-style exit code."""
    if master is None:
        _, status = os.waitpid(pid, 0)
        return _code(status)
    import select
    import termios
    import tty
    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    _copy_winsize(master)
    fds = [0, master]
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _drain(master)
                return _code(status)
            try:
                readable, _, _ = select.select(fds, [], [], 0.1)
            except InterruptedError:
                continue
            for fd in readable:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if fd == 0:
                    if data:
                        os.write(master, data)
                    else:
                        fds.remove(0)
                else:
                    if data:
                        os.write(1, data)
                    else:
                        fds.remove(master)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _drain(master: int) -> None:
    import select
    while True:
        try:
            r, _, _ = select.select([master], [], [], 0)
            if not r:
                return
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        os.write(1, data)


def _code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_foreground(root: str, container_id: str, o: dict[str, Any]) -> int:
    from ketch.runtime.container import CreateOptions, Runtime

    rt = Runtime(root)
    detach = bool(o.get("detach"))
    bundle = o.get("bundle") or "."
    preserve = int(o.get("preserve-fds") or 0)
    terminal = False
    if not o.get("console-socket"):
        # Only process.terminal matters here; create() parses the whole config.
        try:
            with open(os.path.join(os.path.abspath(bundle), "config.json"), "rb") as f:
                terminal = bool(json.load(f).get("process", {}).get("terminal"))
        except (OSError, ValueError, AttributeError):
            terminal = False   # create() reports a missing or broken config.json
        if terminal and detach:
            raise InvalidArgument("cannot allocate tty if runc will detach without setting "
                                  "console socket")
    if not detach and not o.get("no-subreaper"):
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    internal = _InternalConsole() if terminal else None
    try:
        opts = CreateOptions(bundle=bundle,
                             console_socket=internal.path if internal else o.get("console-socket"),
                             pid_file=o.get("pid-file"), no_pivot=bool(o.get("no-pivot")),
                             no_new_keyring=bool(o.get("no-new-keyring")), preserve_fds=preserve)
        started = rt.create(container_id, opts)
        master = internal.receive() if internal else None
    finally:
        if internal:
            internal.close()
    try:
        rt.start(container_id)
    except BaseException:
        rt.delete(container_id, force=True)
        raise
    if detach:
        return 0
    _forward_signals(started.pid, master)
    code = _wait(started.pid, master)
    if not o.get("keep"):
        rt.delete(container_id, force=True)
    return code


def _parse_user(value: str) -> tuple[int, int | None]:
    uid_s, _, gid_s = value.partition(":")
    try:
        return int(uid_s), (int(gid_s) if gid_s else None)
    except ValueError:
        raise InvalidArgument(f"parsing {value} as int for uid/gid failed") from None


def build_exec_process(spec_process: Any, args: list[str], o: dict[str, Any]) -> Any:
    """The process for ``exec``: --process JSON, or the container's process with flags."""
    import copy

    from ketch.runtime.spec import Capabilities, parse_process

    if o.get("process"):
        try:
            with open(o["process"]) as f:
                data = json.load(f)
        except OSError as exc:
            raise InvalidArgument(f"process file: {exc.strerror}: {o['process']}") from None
        except ValueError as exc:
            raise InvalidArgument(f"failed to parse process.json: {exc}") from None
        p = parse_process(data)
    else:
        if not args:
            raise InvalidArgument("exec args cannot be empty")
        p = copy.deepcopy(spec_process)
        p.args = list(args)
        p.terminal = False
        p.console_size = None
    if o.get("cwd"):
        p.cwd = o["cwd"]
    for e in o.get("env", []):
        p.env.append(e)
    if o.get("tty"):
        p.terminal = True
    if o.get("user"):
        p.user.uid, gid = _parse_user(o["user"])
        if gid is not None:
            p.user.gid = gid
    for g in o.get("additional-gids", []):
        try:
            p.user.additional_gids.append(int(g))
        except ValueError:
            raise InvalidArgument(f"parsing additional-gids {g!r} failed") from None
    if o.get("cap"):
        if p.capabilities is None:
            p.capabilities = Capabilities()
        for c in o["cap"]:
            for s in (p.capabilities.bounding, p.capabilities.effective,
                      p.capabilities.permitted):
                if c not in s:
                    s.append(c)
    if o.get("no-new-privs"):
        p.no_new_privileges = True
    if o.get("apparmor"):
        p.apparmor_profile = o["apparmor"]
    if o.get("process-label"):
        p.selinux_label = o["process-label"]
    return p


def exec_command(root: str, container_id: str, args: list[str], o: dict[str, Any]) -> int:
    from ketch.runtime.container import ExecOptions, Runtime
    from ketch.runtime.specconv import _apparmor_enabled, _selinux_enabled

    rt = Runtime(root)
    st = rt._load(container_id)
    spec = rt._spec_of(st)
    process = build_exec_process(spec.process, args, o)
    if process.apparmor_profile and not _apparmor_enabled():
        raise InvalidArgument("apparmor profile specified but AppArmor is not enabled on "
                              "this host")
    if process.selinux_label and not _selinux_enabled():
        raise InvalidArgument("SELinux label specified but SELinux is not enabled on this host")
    detach = bool(o.get("detach"))
    internal = None
    console_socket = o.get("console-socket")
    if process.terminal and not console_socket:
        if detach:
            raise InvalidArgument("cannot allocate tty if runc will detach without setting "
                                  "console socket")
        internal = _InternalConsole()
        console_socket = internal.path
    cgroups = o.get("cgroup") or []
    try:
        opts = ExecOptions(console_socket=console_socket, pid_file=o.get("pid-file"),
                           preserve_fds=int(o.get("preserve-fds") or 0),
                           cgroup=cgroups[-1] if cgroups else None)
        started = rt.exec(container_id, process, opts)
        master = internal.receive() if internal else None
    finally:
        if internal:
            internal.close()
    if detach:
        return 0
    _forward_signals(started.pid, master)
    return _wait(started.pid, master)
