"""Seccomp filters loaded into real processes (forked children, which then exit).

A filter cannot be removed once loaded, so every test loads it in a child made
with os.fork(); the child reports through its exit status and, on failure,
a message on a pipe.
"""

from __future__ import annotations

import ctypes
import errno
import os

import pytest
from tests.forking import in_child

from ketch.linux import seccomp as S
from ketch.linux.seccomp import Seccomp, SyscallRule
from ketch.runtime.seccomp_default import default_profile

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CLONE_NEWUTS = 0x04000000
PR_SET_NO_NEW_PRIVS = 38



def seccomp_mode() -> str:
    with open("/proc/self/status") as f:
        return next(line.split(":")[1].strip() for line in f if line.startswith("Seccomp:"))


def libc_call(name: str, *args: int) -> tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, name)
    ctypes.set_errno(0)
    ret = fn(*args)
    return ret, ctypes.get_errno()


def raw_syscall(number: int, *args: int) -> tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return ret, ctypes.get_errno()


def run_true() -> int:
    """fork + execve /bin/true, as a shell would; the exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execv("/bin/true", ["true"])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_mkdir_gets_eperm(tmp_path: os.PathLike[str]) -> None:
    profile = Seccomp(default_action="SCMP_ACT_ALLOW", syscalls=[
        SyscallRule(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO", errno_ret=errno.EPERM)])
    target = os.path.join(tmp_path, "d")

    def body() -> None:
        flt = S.compile(profile)
        assert not flt.stub                      # default ALLOW: seccomp_load path
        flt.load()
        flt.release()
        assert seccomp_mode() == "2"
        try:
            os.mkdir(target)
        except PermissionError as exc:
            assert exc.errno == errno.EPERM
        else:
            raise AssertionError("mkdir succeeded under the filter")
        with open(os.path.join(tmp_path, "f"), "w") as f:    # everything else still works
            f.write("ok")

    in_child(body)
    assert not os.path.exists(target)
    with open(os.path.join(tmp_path, "f")) as f:
        assert f.read() == "ok"


def test_default_profile_runs_commands_and_refuses_namespaces() -> None:
    def body() -> None:
        flt = S.compile(default_profile(set()))
        assert flt.stub                          # loaded through seccomp(2) with the stub
        flt.load()
        assert seccomp_mode() == "2"
        assert run_true() == 0
        ret, err = libc_call("unshare", CLONE_NEWUTS)
        assert (ret, err) == (-1, errno.EPERM), (ret, err)
        ret, err = libc_call("sethostname", 0, 0)
        assert (ret, err) == (-1, errno.EPERM), (ret, err)
        # clone3 says "not implemented", so libcs fall back to clone.
        nr_clone3 = S._get_lib().lib.seccomp_syscall_resolve_name(b"clone3")
        assert raw_syscall(nr_clone3, 0, 0) == (-1, errno.ENOSYS)
        # Syscalls newer than the profile: ENOSYS too (the stub).
        assert raw_syscall(1000) == (-1, errno.ENOSYS)
        # Threads (clone without namespace flags) still work.
        import threading
        done = []
        t = threading.Thread(target=lambda: done.append(1))
        t.start()
        t.join()
        assert done == [1]

    in_child(body)


def test_default_profile_with_sys_admin_allows_unshare() -> None:
    def body() -> None:
        with S.compile(default_profile({"CAP_SYS_ADMIN"})) as flt:
            flt.load()
        ret, err = libc_call("unshare", CLONE_NEWUTS)
        assert ret == 0, err
        assert run_true() == 0

    in_child(body)


def test_load_with_no_new_privs_as_an_unprivileged_user() -> None:
    def body() -> None:
        flt = S.compile(default_profile(set()))   # compiled while still root
        os.setgroups([])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        ret, err = libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        assert ret == 0, err
        flt.load()
        assert seccomp_mode() == "2"
        assert run_true() == 0

    in_child(body)


def test_load_without_privilege_or_no_new_privs_fails() -> None:
    def body() -> None:
        for profile in (default_profile(set()), Seccomp(default_action="SCMP_ACT_ALLOW")):
            flt = S.compile(profile)
            pid = os.fork()
            if pid == 0:
                try:
                    os.setresuid(1000, 1000, 1000)
                    flt.load()
                except OSError as exc:
                    ok = exc.errno == errno.EACCES and "seccomp" in str(exc)
                    os._exit(0 if ok else 2)
                os._exit(3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, profile.default_action

    in_child(body)


@pytest.mark.parametrize("flags", [["SECCOMP_FILTER_FLAG_TSYNC"], ["SECCOMP_FILTER_FLAG_LOG"],
                                   ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]])
def test_flags_load(flags: list[str]) -> None:
    for base in (default_profile(set()), Seccomp(default_action="SCMP_ACT_ALLOW")):
        base.flags = list(flags)

        def body(p: Seccomp = base) -> None:
            S.compile(p).load()
            assert seccomp_mode() == "2"
            assert run_true() == 0

        in_child(body)


def test_filter_survives_exec_and_applies_to_children() -> None:
    profile = Seccomp(default_action="SCMP_ACT_ALLOW", syscalls=[
        SyscallRule(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO", errno_ret=errno.EROFS)])

    def body() -> None:
        S.compile(profile).load()
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/sh", ["sh", "-c",
                                 "grep -q '^Seccomp:.2' /proc/self/status && "
                                 "! mkdir /tmp/ketch-seccomp-never 2>/dev/null"])
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    in_child(body)
    assert not os.path.exists("/tmp/ketch-seccomp-never")


def test_init_order_without_no_new_privs() -> None:
    """As ketch's init: compile, load while privileged, then drop caps, setuid, exec."""
    from ketch.linux import caps
    from ketch.linux import syscalls as sc

    names = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    sets = caps.CapSets.from_names(bounding=names, effective=names, permitted=names)

    def body() -> None:
        flt = S.compile(default_profile(set(names)))
        flt.load()                                 # needs CAP_SYS_ADMIN: still held
        caps.drop_bounding(sets)
        sc.prctl(sc.PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        sc.prctl(sc.PR_SET_KEEPCAPS, 0)
        caps.apply_sets(sets)
        sc.close_range(3)
        assert seccomp_mode() == "2"
        assert run_true() == 0

    in_child(body)


PRELOAD_SCRIPT = """
import os, sys
from ketch.errors import NotSupported
from ketch.linux import seccomp as S
from ketch.runtime.seccomp_default import default_profile
profile = default_profile(set())
if sys.argv[2] == "preload":
    S.preload()
os.chroot(sys.argv[1])
os.chdir("/")
try:
    flt = S.compile(profile)
except NotSupported as exc:
    print("NotSupported:", exc)
else:
    print("compiled", len(flt.export_bpf()) // 8)
"""


@pytest.mark.parametrize("mode", ["preload", "lazy"])
def test_compile_after_pivot_needs_preload(tmp_path: os.PathLike[str], mode: str) -> None:
    """The container's root may lack libseccomp: preload() opens it from the host first."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PRELOAD_SCRIPT, str(tmp_path), mode],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if mode == "preload":
        assert out.stdout.startswith("compiled "), out.stdout
    else:
        assert out.stdout.startswith("NotSupported: seccomp: cannot load libseccomp.so.2"), \
            out.stdout
        assert "preload() before pivot_root" in out.stdout
