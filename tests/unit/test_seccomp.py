"""Seccomp profiles: validation, compilation, and what the compiled program decides.

No root needed: filters are compiled and exported, never loaded. The exported
cBPF program is run by a small interpreter against a ``seccomp_data`` record,
so the tests check decisions (allow, EPERM, ENOSYS), not bytes.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys

import pytest

from ketch.errors import InvalidArgument, NotSupported
from ketch.jsonmodel import from_json, to_json
from ketch.linux import seccomp as S
from ketch.linux.seccomp import ArgCmp, Seccomp, SyscallRule
from ketch.runtime.seccomp_default import default_profile

ALLOW = 0x7FFF0000
KILL = 0x00000000


def errno_ret(err: int) -> int:
    return 0x00050000 | err


EPERM, EACCES, ENOSYS = 1, 13, 38
AUDIT_X86_64, AUDIT_I386, AUDIT_AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7
X32_BIT = 0x40000000

LIB = S._get_lib()
NATIVE = LIB.native
on_x86_64 = pytest.mark.skipif(NATIVE != AUDIT_X86_64, reason="x86_64 host only")


def nr(name: str, arch: int | None = None) -> int:
    """The syscall's number on ``arch`` (libseccomp's token; x32 numbers carry bit 30)."""
    n = LIB.lib.seccomp_syscall_resolve_name_arch(NATIVE if arch is None else arch,
                                                  name.encode())
    assert n >= 0, name
    return int(n)


def run_bpf(prog: bytes, nr: int, arch: int = NATIVE, args: tuple[int, ...] = ()) -> int:
    """Run a classic BPF seccomp program over one syscall; returns SECCOMP_RET_*."""
    full = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("=iIQ6Q", nr, arch, 0, *full)
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(100_000):
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:                               # LD
            mode = code & 0xE0
            if mode == 0x20:
                a = struct.unpack_from("=I", data, k)[0]
            elif mode == 0x00:
                a = k
            elif mode == 0x60:
                a = mem[k]
            else:
                raise AssertionError(f"LD mode {mode:#x}")
        elif cls == 0x01:                             # LDX
            x = k if code & 0xE0 == 0x00 else mem[k]
        elif cls == 0x02:                             # ST
            mem[k] = a
        elif cls == 0x03:                             # STX
            mem[k] = x
        elif cls == 0x04:                             # ALU
            src = x if code & 0x08 else k
            op = code & 0xF0
            ops = {0x00: a + src, 0x10: a - src, 0x20: a * src, 0x40: a | src,
                   0x50: a & src, 0x60: a << src, 0x70: a >> src, 0x80: -a,
                   0xA0: a ^ src}
            a = ops[op] & 0xFFFFFFFF
        elif cls == 0x05:                             # JMP
            src = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                pc += k
                continue
            cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: a & src != 0}[op]
            pc += jt if cond else jf
        elif cls == 0x06:                             # RET
            return k if code & 0x18 == 0 else a
        else:                                         # MISC: TAX / TXA
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise AssertionError("program did not return")


def program(profile: Seccomp) -> bytes:
    with S.compile(profile) as flt:
        return flt.export_bpf()


# --- validation -------------------------------------------------------------


def _bad(**changes: object) -> Seccomp:
    rule = SyscallRule(names=["read"], action="SCMP_ACT_ALLOW")
    base = Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[rule])
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("profile, message", [
    (_bad(default_action=""), "seccomp: defaultAction: missing action"),
    (_bad(default_action="SCMP_ACT_NOPE"), 'seccomp: defaultAction: unknown action "SCMP_ACT_NOPE"'),
    (_bad(architectures=["SCMP_ARCH_Z80"]), 'seccomp: unknown architecture "SCMP_ARCH_Z80"'),
    (_bad(flags=["SECCOMP_FILTER_FLAG_NOPE"]), 'seccomp: unknown flag "SECCOMP_FILTER_FLAG_NOPE"'),
    (_bad(syscalls=[SyscallRule(names=["read"], action="SCMP_ACT_FOO")]),
     'seccomp: syscalls[0] (read): unknown action "SCMP_ACT_FOO"'),
    (_bad(syscalls=[SyscallRule(names=[], action="SCMP_ACT_ALLOW")]),
     "seccomp: syscalls[0]: no syscall names"),
    (_bad(syscalls=[SyscallRule(names=["read", ""], action="SCMP_ACT_ALLOW")]),
     "seccomp: syscalls[0]: invalid syscall name ''"),
    (_bad(syscalls=[SyscallRule(names=["a", "b", "c", "d"], action="SCMP_ACT_ALLOW",
                                args=[ArgCmp(0, 1, 0, "SCMP_CMP_LIKE")])]),
     'seccomp: syscalls[0] (a, b, c, ...): unknown operator "SCMP_CMP_LIKE"'),
    (_bad(syscalls=[SyscallRule(names=["read"], action="SCMP_ACT_ALLOW",
                                args=[ArgCmp(6, 1, 0, "SCMP_CMP_EQ")])]),
     "seccomp: syscalls[0] (read): argument index 6 is out of range (0-5)"),
    (_bad(syscalls=[SyscallRule(names=["read"], action="SCMP_ACT_ALLOW",
                                args=[ArgCmp(0, -1, 0, "SCMP_CMP_EQ")])]),
     "seccomp: syscalls[0] (read): argument value -1 is not a 64-bit unsigned integer"),
    (_bad(syscalls=[SyscallRule(names=["read"], action="SCMP_ACT_ALLOW", errno_ret=1)]),
     "seccomp: syscalls[0] (read): errnoRet is only valid with SCMP_ACT_ERRNO and "
     "SCMP_ACT_TRACE, not SCMP_ACT_ALLOW"),
    (_bad(default_errno_ret=70000),
     "seccomp: defaultAction: errnoRet 70000 is out of range"),
    (_bad(default_action="SCMP_ACT_KILL", default_errno_ret=1),
     "seccomp: defaultAction: errnoRet is only valid with SCMP_ACT_ERRNO and "
     "SCMP_ACT_TRACE, not SCMP_ACT_KILL"),
])
def test_validate_rejects(profile: Seccomp, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        S.validate(profile)
    assert str(err.value) == message
    with pytest.raises(InvalidArgument):   # compile validates first
        S.compile(profile)


@pytest.mark.parametrize("profile", [
    _bad(default_action="SCMP_ACT_NOTIFY"),
    _bad(syscalls=[SyscallRule(names=["mkdir"], action="SCMP_ACT_NOTIFY")],
         listener_path="/run/agent.sock"),
])
def test_notify_is_not_supported(profile: Seccomp) -> None:
    with pytest.raises(NotSupported) as err:
        S.validate(profile)
    assert str(err.value) == "seccomp action SCMP_ACT_NOTIFY is not supported"


def test_validate_accepts_every_known_name() -> None:
    S.validate(Seccomp(
        default_action="SCMP_ACT_KILL_PROCESS", architectures=list(S.ARCHES),
        flags=list(S.FLAGS),
        syscalls=[SyscallRule(names=["read"], action=a) for a in S.ACTIONS
                  if a != "SCMP_ACT_NOTIFY"]
        + [SyscallRule(names=["read"], action="SCMP_ACT_ERRNO", errno_ret=0xFFFF,
                       args=[ArgCmp(5, 2**64 - 1, 0, op) for op in S.OPERATORS])]))


# --- JSON names ---------------------------------------------------------------


def test_json_uses_the_oci_names() -> None:
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/x", "listenerMetadata": "m",
        "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5,
                      "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                                "op": "SCMP_CMP_MASKED_EQ"}]}],
    }
    s = from_json(Seccomp, json.loads(json.dumps(doc)), where="linux.seccomp")
    assert s.default_errno_ret == 1 and s.listener_path == "/x"
    assert s.syscalls[0].errno_ret == 5
    assert s.syscalls[0].args[0] == ArgCmp(0, 2114060288, 0, "SCMP_CMP_MASKED_EQ")
    assert to_json(s) == doc


# --- compiling and what the program decides ------------------------------------


def test_small_profile_with_masked_eq() -> None:
    o_creat = 0o100
    p = Seccomp(default_action="SCMP_ACT_ALLOW", syscalls=[
        SyscallRule(names=["openat"], action="SCMP_ACT_ERRNO", errno_ret=EACCES,
                    args=[ArgCmp(2, o_creat, o_creat, "SCMP_CMP_MASKED_EQ")]),
        SyscallRule(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO"),
    ])
    prog = program(p)
    assert prog and len(prog) % 8 == 0
    assert run_bpf(prog, nr("openat"), args=(0, 0, 0o2)) == ALLOW
    assert run_bpf(prog, nr("openat"), args=(0, 0, 0o102)) == errno_ret(EACCES)
    assert run_bpf(prog, nr("mkdirat")) == errno_ret(EPERM)      # errnoRet defaults to EPERM
    assert run_bpf(prog, nr("read")) == ALLOW


def test_conditions_on_one_argument_are_split_into_rules() -> None:
    # Two tests of args[0]: each its own rule, so either value matches (runc).
    split = program(Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[
        SyscallRule(names=["personality"], action="SCMP_ACT_ALLOW",
                    args=[ArgCmp(0, 8, 0, "SCMP_CMP_EQ"), ArgCmp(0, 0, 0, "SCMP_CMP_EQ")])]))
    n = nr("personality")
    assert run_bpf(split, n, args=(8,)) == ALLOW
    assert run_bpf(split, n, args=(0,)) == ALLOW
    assert run_bpf(split, n, args=(1,)) == errno_ret(EPERM)
    # Tests of different arguments stay one rule: all must hold.
    joined = program(Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[
        SyscallRule(names=["kill"], action="SCMP_ACT_ALLOW",
                    args=[ArgCmp(0, 1, 0, "SCMP_CMP_EQ"), ArgCmp(1, 9, 0, "SCMP_CMP_EQ")])]))
    n = nr("kill")
    assert run_bpf(joined, n, args=(1, 9)) == ALLOW
    assert run_bpf(joined, n, args=(1, 15)) == errno_ret(EPERM)
    assert run_bpf(joined, n, args=(2, 9)) == errno_ret(EPERM)


def test_conditions_compare_all_64_bits() -> None:
    prog = program(Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[
        SyscallRule(names=["personality"], action="SCMP_ACT_ALLOW",
                    args=[ArgCmp(0, 0, 0, "SCMP_CMP_EQ")])]))
    assert run_bpf(prog, nr("personality"), args=(1 << 32,)) == errno_ret(EPERM)


def test_unknown_names_redundant_rules_and_empty_rules_compile() -> None:
    prog = program(Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[
        SyscallRule(names=["no_such_syscall", "read"], action="SCMP_ACT_ALLOW"),
        SyscallRule(names=["no_such_syscall_either"], action="SCMP_ACT_ALLOW"),
        SyscallRule(names=["write"], action="SCMP_ACT_ERRNO"),   # = default: skipped
        SyscallRule(names=["write"], action="SCMP_ACT_ERRNO", errno_ret=EPERM),
    ]))
    assert run_bpf(prog, nr("read")) == ALLOW
    assert run_bpf(prog, nr("write")) == errno_ret(EPERM)


def test_actions_are_encoded_as_libseccomp_does() -> None:
    p = Seccomp(default_action="SCMP_ACT_ALLOW", syscalls=[
        SyscallRule(names=["mkdir" if "mkdir" in _native_names() else "mkdirat"],
                    action="SCMP_ACT_KILL_PROCESS"),
        SyscallRule(names=["getpid"], action="SCMP_ACT_TRAP"),
        SyscallRule(names=["getppid"], action="SCMP_ACT_LOG"),
        SyscallRule(names=["gettid"], action="SCMP_ACT_TRACE", errno_ret=7),
        SyscallRule(names=["getuid"], action="SCMP_ACT_KILL"),
    ])
    prog = program(p)
    assert run_bpf(prog, nr("getpid")) == 0x00030000
    assert run_bpf(prog, nr("getppid")) == 0x7FFC0000
    assert run_bpf(prog, nr("gettid")) == 0x7FF00007
    assert run_bpf(prog, nr("getuid")) == KILL
    name = "mkdir" if "mkdir" in _native_names() else "mkdirat"
    assert run_bpf(prog, nr(name)) == 0x80000000


def _native_names() -> set[str]:
    return {n for n in ("mkdir", "open") if LIB.lib.seccomp_syscall_resolve_name(n.encode()) >= 0}


@pytest.mark.parametrize("flag", sorted(S.FLAGS))
def test_flags_compile(flag: str) -> None:
    with S.compile(Seccomp(default_action="SCMP_ACT_ERRNO", flags=[flag], syscalls=[
            SyscallRule(names=["read"], action="SCMP_ACT_ALLOW")])) as flt:
        assert flt._flags == S.FLAGS[flag][1]
        assert flt.export_bpf()


def test_released_filter_cannot_export() -> None:
    flt = S.compile(Seccomp(default_action="SCMP_ACT_ALLOW"))
    flt.release()
    flt.release()                       # twice is fine
    with pytest.raises(OSError, match="seccomp_export_bpf: the seccomp filter was released"):
        flt.export_bpf()


# --- the -ENOSYS stub -----------------------------------------------------------


@pytest.mark.parametrize("default, errno_, stub", [
    ("SCMP_ACT_ALLOW", None, False), ("SCMP_ACT_LOG", None, False),
    ("SCMP_ACT_TRACE", None, False), ("SCMP_ACT_ERRNO", ENOSYS, False),
    ("SCMP_ACT_ERRNO", None, True), ("SCMP_ACT_KILL_PROCESS", None, True),
])
def test_stub_only_when_the_default_refuses(default: str, errno_: int | None,
                                            stub: bool) -> None:
    with S.compile(Seccomp(default_action=default, default_errno_ret=errno_, syscalls=[
            SyscallRule(names=["read", "write"], action="SCMP_ACT_KILL")])) as flt:
        assert bool(flt.stub) is stub
        if stub:
            assert flt.export_bpf().startswith(flt.stub)


def test_syscalls_above_the_profile_get_enosys() -> None:
    p = Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[
        SyscallRule(names=["read", "write", "exit_group", "getpid"], action="SCMP_ACT_ALLOW")])
    prog = program(p)
    top = max(nr(n) for n in ("read", "write", "exit_group", "getpid"))
    assert run_bpf(prog, nr("read")) == ALLOW
    assert run_bpf(prog, top - 1) in (errno_ret(EPERM), ALLOW)
    assert run_bpf(prog, nr("close")) == errno_ret(EPERM)     # below the top: default
    assert run_bpf(prog, top + 1) == errno_ret(ENOSYS)
    assert run_bpf(prog, 5000) == errno_ret(ENOSYS)


@on_x86_64
def test_default_profile_decisions_on_x86_64() -> None:
    prog = program(default_profile(set(), arch="x86_64"))
    assert run_bpf(prog, nr("read")) == ALLOW
    assert run_bpf(prog, nr("mount")) == errno_ret(EPERM)
    assert run_bpf(prog, nr("unshare")) == errno_ret(EPERM)
    assert run_bpf(prog, nr("clone3")) == errno_ret(ENOSYS)
    thread_flags = 0x3D0F00                          # what pthread_create passes
    assert run_bpf(prog, nr("clone"), args=(thread_flags,)) == ALLOW
    assert run_bpf(prog, nr("clone"), args=(0x04000000 | 17,)) == errno_ret(EPERM)  # NEWUTS
    assert run_bpf(prog, nr("personality"), args=(0xFFFFFFFF,)) == ALLOW
    assert run_bpf(prog, nr("personality"), args=(0x0040000,)) == errno_ret(EPERM)
    assert run_bpf(prog, nr("keyctl")) == errno_ret(EPERM)
    assert run_bpf(prog, 1000) == errno_ret(ENOSYS)          # newer than the profile
    # The 32-bit ABIs: x86 and x32, each with its own numbers.
    assert run_bpf(prog, 3, arch=AUDIT_I386) == ALLOW                  # i386 read
    assert run_bpf(prog, nr("mount", 0x40000003), arch=AUDIT_I386) == errno_ret(EPERM)
    assert run_bpf(prog, X32_BIT | 0, arch=AUDIT_X86_64) == ALLOW      # x32 read
    assert run_bpf(prog, X32_BIT | 1000, arch=AUDIT_X86_64) == errno_ret(ENOSYS)
    assert run_bpf(prog, 1000, arch=AUDIT_I386) == errno_ret(ENOSYS)
    # Another architecture entirely: libseccomp's bad-arch action (kill).
    assert run_bpf(prog, 0, arch=AUDIT_AARCH64) == KILL


@on_x86_64
def test_default_profile_with_sys_admin_allows_namespaces() -> None:
    prog = program(default_profile({"CAP_SYS_ADMIN"}, arch="x86_64"))
    assert run_bpf(prog, nr("mount")) == ALLOW
    assert run_bpf(prog, nr("unshare")) == ALLOW
    assert run_bpf(prog, nr("clone3")) == ALLOW
    assert run_bpf(prog, nr("clone"), args=(0x04000000 | 17,)) == ALLOW


# --- the default profile as data ------------------------------------------------


def _allowed(p: Seccomp) -> set[str]:
    return {n for r in p.syscalls if r.action == "SCMP_ACT_ALLOW" and not r.args
            for n in r.names}


def test_default_profile_shape() -> None:
    p = default_profile(arch="x86_64")
    S.validate(p)
    assert p.default_action == "SCMP_ACT_ERRNO" and p.default_errno_ret == EPERM
    assert p.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = _allowed(p)
    assert len(allowed) > 300
    for name in ("read", "openat", "execve", "futex", "epoll_wait", "socket", "setuid",
                 "capset", "prctl", "rt_sigaction", "close_range", "faccessat2"):
        assert name in allowed
    for name in ("mount", "unshare", "setns", "ptrace", "keyctl", "kexec_load", "reboot",
                 "init_module", "clone", "clone3", "personality", "bpf", "chroot"):
        assert name not in allowed
    conditional = {n: r for r in p.syscalls for n in r.names if r.args or r.errno_ret}
    clone = conditional["clone"]
    assert clone.args == [ArgCmp(0, 0x7E020000, 0, "SCMP_CMP_MASKED_EQ")]
    assert conditional["clone3"].action == "SCMP_ACT_ERRNO"
    assert conditional["clone3"].errno_ret == ENOSYS
    personas = sorted(r.args[0].value for r in p.syscalls if r.names == ["personality"])
    assert personas == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    # JSON round trip keeps it whole.
    assert from_json(Seccomp, to_json(p)) == p


@pytest.mark.parametrize("cap, names", [
    ("CAP_SYS_ADMIN", ["mount", "umount2", "unshare", "setns", "sethostname", "clone",
                       "clone3", "pivot_root"]),
    ("CAP_SYS_PTRACE", ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"]),
    ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_TIME", ["settimeofday", "clock_settime"]),
    ("CAP_SYS_BOOT", ["reboot"]),
    ("CAP_SYS_NICE", ["mbind", "set_mempolicy", "move_pages"]),
    ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
    ("CAP_SYSLOG", ["syslog"]),
    ("CAP_BPF", ["bpf"]),
    ("CAP_PERFMON", ["perf_event_open"]),
    ("CAP_SYS_CHROOT", ["chroot"]),
    ("CAP_SYS_PACCT", ["acct"]),
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
])
def test_capabilities_open_their_groups(cap: str, names: list[str]) -> None:
    without = _allowed(default_profile({"CAP_CHOWN"}, arch="x86_64"))
    with_cap = _allowed(default_profile({"CAP_CHOWN", cap}, arch="x86_64"))
    for name in names:
        assert name not in without
        assert name in with_cap
    assert without < with_cap


def test_sys_admin_replaces_the_clone_conditions() -> None:
    p = default_profile({"CAP_SYS_ADMIN"}, arch="x86_64")
    assert not [r for r in p.syscalls if "clone" in r.names and r.args]
    assert not [r for r in p.syscalls if "clone3" in r.names and r.action != "SCMP_ACT_ALLOW"]


def test_each_syscall_has_one_unconditional_decision() -> None:
    for caps in (set(), {"CAP_SYS_ADMIN", "CAP_SYSLOG", "CAP_BPF", "CAP_PERFMON"}):
        p = default_profile(caps, arch="x86_64")
        plain = [n for r in p.syscalls if not r.args for n in r.names]
        assert len(plain) == len(set(plain))
        conditional = {n for r in p.syscalls if r.args for n in r.names}
        assert not conditional & set(plain)


@pytest.mark.parametrize("arch, arches, extra", [
    ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], None),
    ("arm64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], "cacheflush"),
    ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], "set_tls"),
    ("s390x", ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"], "s390_runtime_instr"),
    ("riscv64", ["SCMP_ARCH_RISCV64"], None),
    ("sparc64", [], None),
])
def test_default_profile_per_architecture(arch: str, arches: list[str],
                                          extra: str | None) -> None:
    p = default_profile(arch=arch)
    assert p.architectures == arches
    if extra:
        assert extra in _allowed(p)


def test_s390x_tests_the_second_clone_argument() -> None:
    p = default_profile(arch="s390x")
    (clone,) = [r for r in p.syscalls if r.names == ["clone"]]
    assert clone.args[0].index == 1


def test_default_profile_compiles_for_the_host() -> None:
    for caps in (None, {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"}):
        with S.compile(default_profile(caps)) as flt:
            assert len(flt.export_bpf()) // 8 > 100
            assert flt.stub


# --- laziness -----------------------------------------------------------------------


def test_import_loads_nothing() -> None:
    code = ("import sys, ketch.linux.seccomp, ketch.runtime.seccomp_default, ketch.linux.caps;"
            "print('ctypes' in sys.modules, ketch.linux.seccomp._lib)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "None"]
