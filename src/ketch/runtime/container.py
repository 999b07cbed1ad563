"""The runtime as a library: create, start, state, kill, delete, exec, pause.

The engine's supervisor calls these in-process; ``ketch-runc`` wraps them in
runc's command line. A typical life:

    rt = Runtime("/run/ketch-runc")
    started = rt.create("web", CreateOptions(bundle="/b", stdio=(0, w, w)))
    rt.start("web")                 # the init execs the user's process
    ...                             # the caller reaps started.pid (waitpid / pidfd)
    rt.delete("web")                # after it exited; force=True kills it first

``create`` forks the init directly as the caller's child (in its new pid
namespace), so the caller reaps it. With a user namespace and a new pid
namespace, an intermediate process forks the init instead and exits: the init
is then reparented to the nearest child subreaper, which the caller should be
(the supervisor and ``ketch-runc run`` are).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch.errors import AlreadyExists, Conflict, InvalidArgument, KetchError, NotFound, System
from ketch.jsonmodel import json_name, to_json
from ketch.linux import syscalls as sc
from ketch.linux.syscalls import LinuxSyscalls, Syscalls
from ketch.runtime.state import (
    EXEC_FIFO,
    OCI_VERSION,
    ContainerState,
    StateStore,
    Status,
    check_transition,
    pid_start_time,
    validate_id,
)

if TYPE_CHECKING:
    # spec, specconv and sync are imported where used: `state`, `kill` and
    # `delete` need none of them, and ketch-runc pays for every import.
    from ketch.runtime.spec import Hooks, Process, Spec
    from ketch.runtime.specconv import Plan

DEFAULT_ROOT = "/run/ketch-runc"

Stdio = tuple[int | None, int | None, int | None]


@dataclass(slots=True)
class OCIState:
    """The state as ``runc state`` prints it (OCI runtime spec "State")."""

    oci_version: str = field(default=OCI_VERSION, metadata=json_name("ociVersion"))
    id: str = ""
    pid: int = field(default=0, metadata=json_name("pid", keep_empty=True))
    status: str = ""
    bundle: str = ""
    rootfs: str = ""
    created: str = ""
    owner: str = field(default="", metadata=json_name("owner", keep_empty=True))
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CreateOptions:
    bundle: str = "."
    stdio: Stdio = (None, None, None)     # fds for the init's 0/1/2; None: inherit ours
    console_socket: str | None = None
    pid_file: str | None = None
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0


@dataclass(slots=True)
class ExecOptions:
    stdio: Stdio = (None, None, None)
    console_socket: str | None = None
    pid_file: str | None = None
    preserve_fds: int = 0
    cgroup: str | None = None             # sub-cgroup, "path" or "controller:path"


@dataclass(slots=True)
class Started:
    """A process the runtime started; the caller reaps it."""

    pid: int
    pidfd: int | None = None
    direct_child: bool = True


def _now_rfc3339() -> str:
    secs, nanos = divmod(time.time_ns(), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def _rmtree(path: str) -> None:
    """Remove a state directory (a few flat files); shutil would cost an import."""
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            try:
                os.unlink(os.path.join(dirpath, name))
            except FileNotFoundError:
                pass
        for name in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, name))
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def write_pid_file(path: str, pid: int) -> None:
    """Atomically, as runc does: a reader never sees a half-written pid."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


class Runtime:
    def __init__(self, root: str = DEFAULT_ROOT, *, sys: Syscalls | None = None,
                 mountinfo: str = "/proc/self/mountinfo",
                 cgroup_root: str = "/sys/fs/cgroup") -> None:
        self.root = root
        self.store = StateStore(root)
        self.sys = sys or LinuxSyscalls()
        self.mountinfo = mountinfo
        self.cgroup_root = cgroup_root
        self._managers: dict[str, Any] = {}
        self._mode: Any = None
        self._v1: dict[str, str] | None = None
        # Loaded states, by id: (the file's identity, the state, its hooks once parsed).
        # A long-lived caller (the supervisor) asks about the same container at start,
        # kill, reap and delete; a stat tells whether the file is still the one read.
        self._states: dict[str, list[Any]] = {}

    # -- helpers --------------------------------------------------------------
    def _cgroup(self, path: str) -> Any:
        """The cgroup manager for ``path``, kept: resolving it reads mountinfo."""
        mgr = self._managers.get(path)
        if mgr is None:
            from ketch.linux import cgroups
            mgr = cgroups.new_manager(path, mode=self._cgroup_mode(),
                                      mountinfo_path=self.mountinfo, root=self.cgroup_root)
            self._managers[path] = mgr
        return mgr

    def _cgroup_mode(self) -> Any:
        if self._mode is None:
            from ketch.linux import cgroups
            self._mode = cgroups.detect_mode(self.mountinfo)
        return self._mode

    def _v1_mounts(self) -> dict[str, str]:
        if self._v1 is None:
            from ketch.linux import cgroups
            self._v1 = ({} if self._cgroup_mode() is cgroups.Mode.V2
                        else cgroups.v1_mounts(self.mountinfo))
        return self._v1

    def _load(self, container_id: str) -> ContainerState:
        validate_id(container_id)
        try:
            ident = _identity(self._state_file(container_id))
        except FileNotFoundError:
            self._states.pop(container_id, None)
            raise NotFound("container does not exist") from None
        hit = self._states.get(container_id)
        if hit is not None and hit[0] == ident:
            return hit[1]
        st = self.store.load(container_id)
        self._states[container_id] = [ident, st, _UNPARSED]
        return st

    def _state_file(self, container_id: str) -> str:
        from ketch.runtime.state import STATE_FILE
        return os.path.join(self.store.dir(container_id), STATE_FILE)

    def _remember(self, st: ContainerState, hooks: Hooks | None) -> None:
        """A state just saved, and its hooks: the next ``_load`` needs no read."""
        try:
            self._states[st.id] = [_identity(self._state_file(st.id)), st, hooks]
        except OSError:
            self._states.pop(st.id, None)

    def _spec_of(self, st: ContainerState) -> Spec:
        from ketch.runtime.spec import _parse_spec_cached
        return _parse_spec_cached(json.loads(st.config_json))

    def _hooks_of(self, st: ContainerState) -> Hooks | None:
        """Only the hooks: start and delete need nothing else of the config."""
        hit = self._states.get(st.id)
        if hit is not None and hit[1] is st and hit[2] is not _UNPARSED:
            return hit[2]
        data = json.loads(st.config_json).get("hooks")
        hooks = None
        if data:
            from ketch.jsonmodel import from_json
            from ketch.runtime.spec import Hooks
            hooks = from_json(Hooks, data, where="config.json: hooks")
        if hit is not None and hit[1] is st:
            hit[2] = hooks
        return hooks

    def status(self, st: ContainerState) -> Status:
        status = self.store.status(st)
        if status in (Status.RUNNING, Status.CREATED):
            try:
                if self._cgroup(st.cgroup_path).frozen():
                    return Status.PAUSED
            except (OSError, KetchError):
                pass
        return status

    def oci_state(self, st: ContainerState) -> OCIState:
        status = self.status(st)
        return OCIState(id=st.id, pid=0 if status is Status.STOPPED else st.init_pid,
                        status=status.value, bundle=st.bundle, rootfs=st.rootfs,
                        created=st.created, owner=st.owner, annotations=st.annotations)

    # -- create -----------------------------------------------------------------
    def create(self, container_id: str, opts: CreateOptions) -> Started:
        validate_id(container_id)
        bundle = os.path.abspath(opts.bundle)
        from ketch.runtime.spec import read_spec
        from ketch.runtime.specconv import convert
        config_text, spec = read_spec(bundle)
        plan = convert(spec, bundle)
        assert spec.linux is not None
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        state_dir = self.store.dir(container_id)
        try:
            os.mkdir(state_dir, 0o711)
        except FileExistsError:
            raise AlreadyExists("container with given ID already exists") from None
        # As runc: without a cgroupsPath, a cgroup named after the container,
        # relative to our own (so a runtime started inside a cgroup stays in it).
        cgroup_path = spec.linux.cgroups_path or container_id
        cleanup = _Cleanup()
        cleanup.push(lambda: _rmtree(state_dir))
        try:
            return self._create(container_id, opts, bundle, spec, plan, state_dir,
                                cgroup_path, cleanup, config_text)
        except BaseException:
            cleanup.run()
            raise

    def _create(self, container_id: str, opts: CreateOptions, bundle: str, spec: Spec,
                plan: Plan, state_dir: str, cgroup_path: str, cleanup: _Cleanup,
                config_text: str) -> Started:
        from ketch.linux import cgroups
        from ketch.runtime import sync
        from ketch.runtime.init import InitConfig, child_main
        from ketch.runtime.specconv import device_rules

        assert spec.linux is not None and spec.process is not None
        fifo = os.path.join(state_dir, EXEC_FIFO)
        os.mkfifo(fifo, 0o622)
        os.chmod(fifo, 0o622)     # whatever our umask: the init writes to it
        # The init opens it as the container's root, which a user namespace maps
        # to another host uid: make it that uid's.
        os.chown(fifo, _host_id(0, spec.linux.uid_mappings), _host_id(0, spec.linux.gid_mappings))
        fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
        cleanup.push(lambda: os.close(fifo_fd))

        mode = self._cgroup_mode()
        mgr = self._cgroup(cgroup_path)
        if mgr.exists() and mgr.pids():
            raise Conflict(f"cgroup {cgroup_path} is not empty: another container uses it")
        mgr.create()
        cleanup.push(mgr.destroy)
        intermediate = plan.has_ns("user") and plan.has_new("pid")
        self_join, parent_join = _cgroup_joins(mode, mgr)
        # The init waits for GO before anything else where the order matters: the
        # parent must have written the uid maps' and the intermediate's pid, and a
        # new cgroup namespace is rooted where the init is when it unshares.
        go_early = (not self_join or intermediate or plan.has_new("user")
                    or plan.has_new("cgroup"))
        if spec.linux.resources is not None:
            resources = copy.copy(spec.linux.resources)
            resources.devices = device_rules(spec)
            mgr.set(resources)

        console = None
        if spec.process.terminal:
            if not opts.console_socket:
                raise InvalidArgument("cannot allocate tty if runc will detach without "
                                      "setting console socket")
            from ketch.runtime import console as console_mod
            console = console_mod.connect(opts.console_socket)
            cleanup.push(console.close)
        elif opts.console_socket:
            raise InvalidArgument("cannot use console socket if runc will not detach or "
                                  "allocate tty")

        # Everything the child needs is imported now: after pivot_root (or, in a
        # user namespace, as a root that cannot read our library) it cannot be.
        from ketch.runtime import process as proc_mod
        proc_mod.preload(terminal=spec.process.terminal, seccomp=spec.linux.seccomp is not None,
                         hooks=spec.hooks is not None)
        seccomp_filter = None
        if spec.linux.seccomp is not None:
            # Compiled here, once per distinct profile for a long-lived caller,
            # rather than in every forked init.
            seccomp_filter = _compiled(spec.linux.seccomp)
        parent_sock, child_sock = sync.pair()
        cleanup.push(parent_sock.close)
        state_base: dict[str, object] = {
            "ociVersion": OCI_VERSION, "id": container_id, "status": "creating",
            "bundle": bundle, "annotations": dict(spec.annotations)}
        cfg = InitConfig(
            container_id=container_id, spec=spec, plan=plan, sys=self.sys, sock=child_sock,
            fifo_fd=fifo_fd, console=console, stdio=opts.stdio, no_pivot=opts.no_pivot,
            no_new_keyring=opts.no_new_keyring, preserve_fds=opts.preserve_fds,
            intermediate=intermediate, cgroup_paths=mgr.paths(),
            cgroup_v1_mounts=self._v1_mounts(),
            cgroup_v2=mode is cgroups.Mode.V2, create_container_state=state_base,
            seccomp=seccomp_filter, cgroup_join=tuple(self_join), go_early=go_early,
            report_join=bool(self_join and parent_join))

        def in_child(born_in_cgroup: bool) -> None:
            if born_in_cgroup:
                cfg.report_join = False     # (the child's copy) nothing left to write
            child_main(cfg)

        pid, born = self._fork_into_pidns(
            plan, intermediate, in_child, close_in_child=[parent_sock],
            cgroup_dir=parent_join[0] if len(parent_join) == 1 else None)
        child_sock.close()
        init_pid = pid
        cleanup.push(lambda: _kill_and_reap(pid))
        if not born:
            if cfg.report_join:
                sync.expect(parent_sock, sync.Kind.JOINED)
            _join_parent_side(mgr, parent_join, pid, parent_sock)
        try:
            sync.send(parent_sock, sync.Kind.GO)
        except OSError:
            pass    # the init ended already: its ERROR (or the EOF) is read below

        def save_state(init_pid: int) -> bool:
            start_time = pid_start_time(init_pid)
            if start_time is None:
                return False
            st_rec = ContainerState(
                id=container_id, init_pid=init_pid, init_start_time=start_time,
                bundle=bundle, rootfs=plan.rootfs, created=_now_rfc3339(),
                cgroup_path=cgroup_path, annotations=dict(spec.annotations),
                intermediate=intermediate, config_json=config_text)
            self.store.save(st_rec)
            self._remember(st_rec, spec.hooks)
            return True

        # The init's pid is final unless an intermediate forks it: the state is
        # written now, while the init sets up, not after READY (a failure still
        # removes the whole state directory).
        saved = not intermediate and save_state(init_pid)
        while True:
            msg = sync.recv(parent_sock)
            if msg.kind is sync.Kind.MAP_IDS:
                _write_id_maps(pid, spec)
                sync.send(parent_sock, sync.Kind.IDS_MAPPED)
            elif msg.kind is sync.Kind.PID:
                init_pid = msg.pid
                cleanup.push(lambda pid=init_pid: _kill_pid(pid))
                os.waitpid(pid, 0)
            elif msg.kind is sync.Kind.HOOKS:
                from ketch.runtime import hooks
                assert spec.hooks is not None
                st = dict(state_base, pid=init_pid)
                hooks.run(spec.hooks.prestart, st, "prestart")
                hooks.run(spec.hooks.create_runtime, st, "createRuntime")
                sync.send(parent_sock, sync.Kind.HOOKS_DONE)
            elif msg.kind is sync.Kind.READY:
                break
            elif msg.kind is sync.Kind.ERROR:
                sync.raise_error(msg)
            else:
                raise System(f"unexpected message from init: {msg.kind.value}")

        if not saved and not save_state(init_pid):
            raise System("container init exited before it was ready")
        if opts.pid_file:
            write_pid_file(opts.pid_file, init_pid)
        os.close(fifo_fd)
        parent_sock.close()
        if console is not None:
            console.close()
        pidfd = None
        try:
            pidfd = sc.pidfd_open(init_pid)
        except OSError:
            pass
        return Started(pid=init_pid, pidfd=pidfd, direct_child=not intermediate)

    def _fork_into_pidns(self, plan: Plan, intermediate: bool, child: Any,
                         close_in_child: list[Any], cgroup_dir: str | None = None
                         ) -> tuple[int, bool]:
        """fork() with the child in the container's pid namespace: (pid, whether it
        was born in the cgroup2 directory ``cgroup_dir``, see ``clone``).

        unshare(CLONE_NEWPID) and setns(pid) only change where the caller's next
        child goes, so the caller does it around fork and then goes back; the
        child is pid 1 of the new namespace and stays the caller's own child.
        """
        joins = dict(plan.join_namespaces)
        saved = None
        if not intermediate and (plan.has_new("pid") or "pid" in joins):
            saved = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if "pid" in joins:
                    fd = os.open(joins["pid"], os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        self.sys.setns(fd, sc.CLONE_NEWPID)
                    finally:
                        os.close(fd)
                else:
                    self.sys.unshare(sc.CLONE_NEWPID)
            except BaseException:
                os.close(saved)
                raise
        try:
            pid = None
            if cgroup_dir is not None:
                from ketch.linux.clone import fork_into_cgroup
                pid = fork_into_cgroup(cgroup_dir)
            born = pid is not None
            if pid is None:
                pid = os.fork()
            if pid == 0:
                for obj in close_in_child:
                    try:
                        obj.close()
                    except OSError:
                        pass
                child(born)
                os._exit(1)
        finally:
            if saved is not None and os.getpid() != 1:
                self.sys.setns(saved, sc.CLONE_NEWPID)
                os.close(saved)
        return pid, born

    # -- start ------------------------------------------------------------------
    def start(self, container_id: str) -> None:
        st = self._load(container_id)
        check_transition(self.status(st), "start", container_id)
        fifo = os.path.join(self.store.dir(container_id), EXEC_FIFO)
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Conflict("cannot start an already running container") from None
        import select
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                if poller.poll(50):
                    try:
                        data = os.read(fd, 1)
                    except BlockingIOError:
                        data = b""
                    if data:
                        break
                if pid_start_time(st.init_pid) != st.init_start_time:
                    raise Conflict("cannot start a container that has stopped")
        finally:
            os.close(fd)
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass
        hooks_cfg = self._hooks_of(st)
        if hooks_cfg and hooks_cfg.poststart:
            from ketch.runtime import hooks
            try:
                hooks.run(hooks_cfg.poststart, self._hook_state(st, "running"), "poststart")
            except KetchError as exc:
                print(f"warning: {exc}", file=sys.stderr)

    def _hook_state(self, st: ContainerState, status: str) -> dict[str, object]:
        return {"ociVersion": OCI_VERSION, "id": st.id, "status": status,
                "pid": st.init_pid, "bundle": st.bundle, "annotations": st.annotations}

    # -- queries ----------------------------------------------------------------
    def state(self, container_id: str) -> OCIState:
        return self.oci_state(self._load(container_id))

    def containers(self) -> list[OCIState]:
        out = []
        for cid in self.store.ids():
            try:
                out.append(self.oci_state(self.store.load(cid)))
            except KetchError:
                continue
        return out

    def pids(self, container_id: str) -> list[int]:
        st = self._load(container_id)
        mgr = self._cgroup(st.cgroup_path)
        return mgr.pids() if mgr.exists() else []

    def stats(self, container_id: str) -> Any:
        st = self._load(container_id)
        if self.status(st) is Status.STOPPED:
            raise Conflict("container not running")
        return self._cgroup(st.cgroup_path).stats()

    def oom_kill_count(self, container_id: str) -> int:
        st = self._load(container_id)
        return int(self._cgroup(st.cgroup_path).oom_kill_count())

    # -- signals and pause --------------------------------------------------------
    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        st = self._load(container_id)
        status = self.status(st)
        if not status.can_kill():
            if all_processes and status is Status.STOPPED:
                # runc lets `kill --all` reach what is left in the cgroup.
                mgr = self._cgroup(st.cgroup_path)
                if mgr.exists() and mgr.pids():
                    mgr.kill_all(sig)
                    return
            check_transition(status, "kill", container_id)
        if all_processes:
            self._cgroup(st.cgroup_path).kill_all(sig)
            return
        try:
            fd = sc.pidfd_open(st.init_pid)
        except OSError:
            os.kill(st.init_pid, sig)
        else:
            try:
                if pid_start_time(st.init_pid) != st.init_start_time:
                    raise Conflict("container not running")
                sc.pidfd_send_signal(fd, sig)
            finally:
                os.close(fd)
        if status is Status.PAUSED and sig == signal.SIGKILL:
            self._cgroup(st.cgroup_path).thaw()

    def pause(self, container_id: str) -> None:
        st = self._load(container_id)
        check_transition(self.status(st), "pause", container_id)
        self._cgroup(st.cgroup_path).freeze()

    def resume(self, container_id: str) -> None:
        st = self._load(container_id)
        check_transition(self.status(st), "resume", container_id)
        self._cgroup(st.cgroup_path).thaw()

    def update(self, container_id: str, resources: Any) -> None:
        st = self._load(container_id)
        if self.status(st) is Status.STOPPED:
            raise Conflict("container not running")
        self._cgroup(st.cgroup_path).set(resources)
        spec = self._spec_of(st)
        assert spec.linux is not None
        spec.linux.resources = _merge_resources(spec.linux.resources, resources)
        st.config_json = json.dumps(to_json(spec))
        self.store.save(st)

    # -- delete -----------------------------------------------------------------
    def delete(self, container_id: str, force: bool = False) -> None:
        try:
            st = self._load(container_id)
        except NotFound:
            if force:
                return
            raise
        status = self.status(st)
        mgr = self._cgroup(st.cgroup_path)
        if status is Status.CREATED:
            self._kill_init(st)
        elif status in (Status.RUNNING, Status.PAUSED):
            if not force:
                raise Conflict(f"cannot delete container {container_id} that is not stopped: "
                               f"{status.value}")
            if mgr.exists():
                mgr.kill_all(signal.SIGKILL)
            self._kill_init(st)
        self._wait_gone(st, mgr)
        self._destroy(st, mgr)

    def _kill_init(self, st: ContainerState) -> None:
        if pid_start_time(st.init_pid) == st.init_start_time:
            try:
                os.kill(st.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self._cgroup(st.cgroup_path).thaw()
            except (OSError, KetchError):
                pass

    def _wait_gone(self, st: ContainerState, mgr: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = pid_start_time(st.init_pid) == st.init_start_time
            left = mgr.pids() if mgr.exists() else []
            if not alive and not left:
                return
            if left:
                mgr.kill_all(signal.SIGKILL)
            time.sleep(0.005)
        raise System(f"container {st.id}: processes still running after SIGKILL")

    def _destroy(self, st: ContainerState, mgr: Any) -> None:
        errors: list[BaseException] = []
        self._managers.pop(st.cgroup_path, None)
        try:
            mgr.destroy()
        except (OSError, KetchError) as exc:
            errors.append(exc)
        hooks_cfg = self._hooks_of(st)
        _rmtree(self.store.dir(st.id))
        self._states.pop(st.id, None)
        if hooks_cfg and hooks_cfg.poststop:
            from ketch.runtime import hooks
            try:
                hooks.run(hooks_cfg.poststop, self._hook_state(st, "stopped"), "poststop")
            except KetchError as exc:
                print(f"warning: {exc}", file=sys.stderr)
        if errors:
            from ketch.errors import MultiError
            raise MultiError(errors)

    # -- exec -------------------------------------------------------------------
    def exec(self, container_id: str, process: Process, opts: ExecOptions) -> Started:
        from ketch.runtime.execution import exec_in
        st = self._load(container_id)
        check_transition(self.status(st), "exec", container_id)
        return exec_in(self, st, self._spec_of(st), process, opts)


_FILTERS: dict[str, Any] = {}      # compiled seccomp programs by the profile's JSON
_FILTERS_MAX = 8


def _compiled(profile: Any) -> Any:
    """The profile's compiled program, by the JSON the spec cache already has for it
    (``compile_cached`` would serialize the parsed profile again to find it). Ours to
    release: the parent only needs it until the fork, the child has its copy."""
    from ketch.linux import seccomp as seccomp_mod
    from ketch.runtime.spec import seccomp_key

    key = seccomp_key(profile)
    if key is None:
        return seccomp_mod.compile_cached(profile)
    flt = _FILTERS.get(key)
    if flt is None:
        flt = seccomp_mod.compile(profile)
        if len(_FILTERS) >= _FILTERS_MAX:
            _FILTERS.pop(next(iter(_FILTERS))).release()
        _FILTERS[key] = flt
    return flt


def _cgroup_joins(mode: Any, mgr: Any) -> tuple[list[str], list[str]]:
    """(the cgroup dirs the init joins itself, the ones the parent moves it into).

    Any write of a pid to ``cgroup.procs`` takes the kernel's threadgroup lock,
    whose write side waits for an RCU grace period (12-15 ms here, paid for
    nearly every container). A single-threaded process that writes 0 to a v1
    hierarchy's ``tasks`` moves itself without that lock (Linux 6.x), and the
    forked init is single-threaded: it joins its v1 hierarchies that way, first
    thing. What is left, a hybrid host's cgroup2 directory (no controllers
    there; cgroup2 moves whole processes only) or a v2 host's one cgroup, the
    init is born in (``clone``); where clone3 is refused the parent writes it,
    on a hybrid host while the init sets up.
    """
    from ketch.linux import cgroups

    if mode is cgroups.Mode.V2:
        return [], mgr.dirs()
    paths = mgr.paths()
    own = list(dict.fromkeys(d for key, d in paths.items() if key))
    parent = [paths[""]] if "" in paths else []
    return own, parent


def _join_parent_side(mgr: Any, dirs: list[str], pid: int, sock: Any) -> None:
    """Move ``pid`` into ``dirs``; if it died meanwhile, raise the init's own error."""
    from ketch.linux.cgroups._fs import write_pid
    from ketch.runtime import sync

    try:
        for d in dirs:
            write_pid(mgr.fs, d, pid)
    except KetchError:
        import select
        if select.select([sock], [], [], 1.0)[0]:
            msg = sync.recv(sock)
            if msg.kind is sync.Kind.ERROR:
                sync.raise_error(msg)
        raise


_UNPARSED = object()     # hooks not parsed yet


def _identity(path: str) -> tuple[int, int, int]:
    """Which file is at ``path`` now: a save renames a new one over it (a new inode)."""
    s = os.stat(path)
    return s.st_ino, s.st_mtime_ns, s.st_size


def _merge_resources(old: Any, new: Any) -> Any:
    """Fields set in ``new`` replace those in ``old``; unset ones are kept."""
    from ketch.jsonmodel import from_json as fj
    from ketch.linux.cgroups.resources import Resources
    if old is None:
        return new
    merged = to_json(old)
    for key, value in to_json(new).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return fj(Resources, merged)


def _host_id(container_id: int, mappings: list[Any]) -> int:
    """The host id ``container_id`` maps to (itself without mappings)."""
    if not mappings:
        return container_id
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return container_id


def _write_id_maps(pid: int, spec: Spec) -> None:
    assert spec.linux is not None

    def fmt(maps: list[Any]) -> str:
        return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)

    for name, maps in (("uid_map", spec.linux.uid_mappings), ("gid_map", spec.linux.gid_mappings)):
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(fmt(maps))
        except OSError as exc:
            raise System(f"failed to write {name} for the container: {exc.strerror}") from None


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_and_reap(pid: int) -> None:
    _kill_pid(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class _Cleanup:
    """Undo steps, run newest first; every one runs even if another fails."""

    def __init__(self) -> None:
        self._steps: list[Any] = []

    def push(self, fn: Any) -> None:
        self._steps.append(fn)

    def run(self) -> None:
        while self._steps:
            fn = self._steps.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001 - cleanup gathers, it does not stop
                pass

