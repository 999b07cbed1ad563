"""Seccomp filters: the OCI ``linux.seccomp`` profile compiled by libseccomp (ctypes).

The lifecycle, as a container's init process runs it:

    preload()                 # before pivot_root: dlopen libseccomp from the host
    flt = compile(profile)    # validate, build the libseccomp context, generate BPF
    ...                       # (if not no_new_privileges: flt.load() now, while
    ...                       #  CAP_SYS_ADMIN is still held; see below)
    drop capabilities, setuid, set no_new_privs
    flt.load()                # as late as possible, just before execve
    flt.release()             # optional: the process is about to exec anyway

Why this order: compiling needs nothing from the kernel but memory, so it is done
early, while errors can still be reported to the parent and while the host's
library is reachable. Loading a filter needs either no_new_privs or
CAP_SYS_ADMIN: with ``noNewPrivileges: true`` the filter is loaded last, so it
applies to as little of the runtime's own work as possible; without it the
filter must be loaded *before* capabilities are dropped, and then every syscall
the runtime makes afterwards (setgroups, setresuid, capset, prctl, close_range,
rt_sigaction, execve...) must be allowed by the profile, as with runc.

Behaviour follows runc's libcontainer/seccomp:

- syscall names unknown to libseccomp are skipped silently (profiles list
  syscalls newer than the host); a rule whose action equals the default action
  is skipped (libseccomp refuses it with EACCES);
- when several conditions of one rule test the same argument, each condition
  becomes a rule of its own (so they are ORed, not ANDed; libseccomp cannot AND
  two tests of one argument);
- no_new_privs is never forced by loading (SCMP_FLTATR_CTL_NNP is 0);
- profiles of more than 32 rules use libseccomp's binary-tree optimisation;
- unless the default action lets syscalls through (ALLOW, LOG, TRACE) or is
  already ERRNO(ENOSYS), a short stub is put in front of libseccomp's program:
  a syscall numbered above every syscall the profile names gets ENOSYS instead
  of the default action. A program built against a newer kernel then sees
  "not implemented" and falls back (glibc does for clone3, faccessat2,
  fchmodat2...) instead of failing with EPERM. Filters with a stub are loaded
  with seccomp(2) directly; the others with seccomp_load.

Importing this module loads nothing: libseccomp is opened on first use.
Unsupported: SCMP_ACT_NOTIFY (it needs a seccomp agent behind listenerPath).
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketch.errors import InvalidArgument, NotSupported
from ketch.jsonmodel import json_name

if TYPE_CHECKING:
    import ctypes

# --------------------------------------------------------------------------
# The profile, with the OCI runtime spec's JSON names (``linux.seccomp``).


@dataclass(slots=True)
class ArgCmp:
    """One test of a syscall argument: ``args[index] <op> value`` (MASKED_EQ: ``& value == value_two``)."""

    index: int = 0
    value: int = 0
    value_two: int = field(default=0, metadata=json_name("valueTwo"))
    op: str = ""


@dataclass(slots=True)
class SyscallRule:
    names: list[str] = field(default_factory=list)
    action: str = ""
    errno_ret: int | None = field(default=None, metadata=json_name("errnoRet"))
    args: list[ArgCmp] = field(default_factory=list)


@dataclass(slots=True)
class Seccomp:
    default_action: str = ""
    default_errno_ret: int | None = field(default=None, metadata=json_name("defaultErrnoRet"))
    architectures: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[SyscallRule] = field(default_factory=list)


# --------------------------------------------------------------------------
# Tables: the spec's names -> libseccomp's values.

EPERM = 1
ENOSYS = 38

# seccomp.h SCMP_ACT_*; ERRNO and TRACE carry a 16-bit errno in the low bits.
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,          # = KILL_THREAD
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
# Defaults that let a syscall through: no -ENOSYS stub for them (as runc).
_PERMISSIVE = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")

# enum scmp_compare
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# The spec's architecture names -> libseccomp's (seccomp_arch_resolve_name).
ARCHES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}

# enum scmp_filter_attr
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7
_ATTR_CTL_OPTIMIZE = 8
_ATTR_API_SYSRAWRC = 9

# The spec's flags -> (libseccomp attribute, seccomp(2) SECCOMP_FILTER_FLAG_* bit).
FLAGS: dict[str, tuple[int, int]] = {
    "SECCOMP_FILTER_FLAG_TSYNC": (_ATTR_CTL_TSYNC, 1 << 0),
    "SECCOMP_FILTER_FLAG_LOG": (_ATTR_CTL_LOG, 1 << 1),
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": (_ATTR_CTL_SSB, 1 << 2),
}

MAX_ARGS = 6                  # a Linux syscall has at most six arguments
_OPTIMIZE_ABOVE = 32          # syscall names; runc's threshold for the binary tree
_U64 = 1 << 64

_NR_UNKNOWN = -1              # __NR_SCMP_ERROR: libseccomp does not know the name
_SECCOMP_SET_MODE_FILTER = 1
_PR_SET_NO_NEW_PRIVS = 38
_X32_SYSCALL_BIT = 0x40000000
# AUDIT_ARCH_* as the kernel puts it in seccomp_data.arch. libseccomp's arch
# tokens are these values, except x32 which shares x86_64's.
_AUDIT_ARCH_X86_64 = 0xC000003E
_TOKEN_X32 = 0x4000003E
_S390_TOKENS = (0x16, 0x80000016)   # s390, s390x (EM_S390 [| 64BIT]) with BE


# --------------------------------------------------------------------------
# Validation.


def _action_value(action: str, errno_ret: int | None) -> int:
    base = ACTIONS[action]
    if action in _WITH_ERRNO:
        return base | ((EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    return base


def _check_action(action: str, errno_ret: int | None, where: str) -> None:
    if action == "SCMP_ACT_NOTIFY":
        raise NotSupported("seccomp action SCMP_ACT_NOTIFY is not supported")
    if action not in ACTIONS:
        if not action:
            raise InvalidArgument(f"seccomp: {where}: missing action")
        raise InvalidArgument(f'seccomp: {where}: unknown action "{action}"')
    if errno_ret is not None:
        if action not in _WITH_ERRNO:
            raise InvalidArgument(f"seccomp: {where}: errnoRet is only valid with "
                                  f"SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {action}")
        if not 0 <= errno_ret <= 0xFFFF:
            raise InvalidArgument(f"seccomp: {where}: errnoRet {errno_ret} is out of range")


def validate(s: Seccomp) -> None:
    """Check every name and number in the profile; syscall names are not checked.

    Unknown syscall names are legal (runc skips them: profiles list syscalls
    newer than the host), everything else unknown is an InvalidArgument.
    """
    _check_action(s.default_action, s.default_errno_ret, "defaultAction")
    for arch in s.architectures:
        if arch not in ARCHES:
            raise InvalidArgument(f'seccomp: unknown architecture "{arch}"')
    for flag in s.flags:
        if flag not in FLAGS:
            raise InvalidArgument(f'seccomp: unknown flag "{flag}"')
    for i, rule in enumerate(s.syscalls):
        where = f"syscalls[{i}]"
        if not rule.names:
            raise InvalidArgument(f"seccomp: {where}: no syscall names")
        for name in rule.names:
            if not name or "\0" in name:
                raise InvalidArgument(f"seccomp: {where}: invalid syscall name {name!r}")
        where = f"{where} ({', '.join(rule.names[:3])}{', ...' if len(rule.names) > 3 else ''})"
        _check_action(rule.action, rule.errno_ret, where)
        for arg in rule.args:
            if arg.op not in OPERATORS:
                raise InvalidArgument(f'seccomp: {where}: unknown operator "{arg.op}"')
            if not 0 <= arg.index < MAX_ARGS:
                raise InvalidArgument(f"seccomp: {where}: argument index {arg.index} "
                                      f"is out of range (0-{MAX_ARGS - 1})")
            for v in (arg.value, arg.value_two):
                if not 0 <= v < _U64:
                    raise InvalidArgument(f"seccomp: {where}: argument value {v} "
                                          "is not a 64-bit unsigned integer")


# --------------------------------------------------------------------------
# libseccomp, opened lazily.


class _Lib:
    """libseccomp.so.2's functions, with their C signatures declared once."""

    def __init__(self) -> None:
        try:
            import ctypes

            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except (OSError, ImportError) as exc:
            raise NotSupported(
                f"seccomp: cannot load libseccomp.so.2 ({exc}); install libseccomp2, and "
                "call ketch.linux.seccomp.preload() before pivot_root") from None

        class ArgCmpStruct(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

        class SockFprogStruct(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        ctx, u32, c_int, c_str = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p
        sigs: dict[str, tuple[list[Any], Any]] = {
            "seccomp_init": ([u32], ctx),
            "seccomp_release": ([ctx], None),
            "seccomp_arch_add": ([ctx, u32], c_int),
            "seccomp_arch_native": ([], u32),
            "seccomp_arch_resolve_name": ([c_str], u32),
            "seccomp_attr_set": ([ctx, c_int, u32], c_int),
            "seccomp_syscall_resolve_name": ([c_str], c_int),
            "seccomp_syscall_resolve_name_arch": ([u32, c_str], c_int),
            "seccomp_rule_add_array": ([ctx, u32, c_int, ctypes.c_uint,
                                        ctypes.POINTER(ArgCmpStruct)], c_int),
            "seccomp_load": ([ctx], c_int),
            "seccomp_export_bpf": ([ctx, c_int], c_int),
        }
        for name, (argtypes, restype) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = restype
        self.ctypes = ctypes
        self.lib = lib
        self.ArgCmp = ArgCmpStruct
        self.SockFprog = SockFprogStruct
        self.native = int(lib.seccomp_arch_native())
        self._arch_tokens: dict[str, int] = {}
        # The one syscall this module makes itself (loading a patched program):
        # its number comes from libseccomp, libc's syscall(2) from the process.
        self.nr_seccomp = int(lib.seccomp_syscall_resolve_name(b"seccomp"))
        self.syscall = ctypes.CDLL(None, use_errno=True).syscall
        self.syscall.restype = ctypes.c_long

    def arch_token(self, spec_name: str) -> int:
        token = self._arch_tokens.get(spec_name)
        if token is None:
            token = int(self.lib.seccomp_arch_resolve_name(ARCHES[spec_name].encode()))
            if token == 0:
                raise NotSupported(f"seccomp: architecture {spec_name} is not supported "
                                   "by this libseccomp")
            self._arch_tokens[spec_name] = token
        return token


_lib: _Lib | None = None


def _get_lib() -> _Lib:
    global _lib
    if _lib is None:
        _lib = _Lib()
    return _lib


def preload() -> None:
    """Open libseccomp now. Call it before pivot_root: the container's root may not have it.

    Once opened, the library stays mapped, so compile() after pivot_root finds it.
    """
    _get_lib()


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


# --------------------------------------------------------------------------
# Compiling.

_SOCK_FILTER = struct.Struct("=HBBI")   # struct sock_filter, host byte order
# cBPF opcodes used by the stub.
_LD_W_ABS = 0x20           # BPF_LD | BPF_W | BPF_ABS
_JMP_JA = 0x05             # BPF_JMP | BPF_JA
_JMP_JEQ_K = 0x15          # BPF_JMP | BPF_JEQ | BPF_K
_JMP_JGT_K = 0x25
_JMP_JSET_K = 0x45
_RET_K = 0x06              # BPF_RET | BPF_K
_OFF_NR = 0                # offsetof(struct seccomp_data, nr)
_OFF_ARCH = 4              # offsetof(struct seccomp_data, arch)
_Insn = tuple[int, int, int, "int | str"]   # (code, jt, jf, k); k "F": jump to the filter
_TO_FILTER: _Insn = (_JMP_JA, 0, 0, "F")
_RET_ENOSYS = ACTIONS["SCMP_ACT_ERRNO"] | ENOSYS


def _above(top: int) -> list[_Insn]:
    """Syscall numbers above ``top`` get ENOSYS; the others go on to the filter."""
    return [(_JMP_JGT_K, 0, 1, top), (_RET_K, 0, 0, _RET_ENOSYS), _TO_FILTER]


class Filter:
    """A compiled profile: a libseccomp context, and the program load() installs."""

    def __init__(self, lib: _Lib, ctx: int, flags: int) -> None:
        self._lib = lib
        self._ctx: int | None = ctx
        self._flags = flags          # SECCOMP_FILTER_FLAG_* bits, for seccomp(2)
        self.stub = b""              # the -ENOSYS prefix; b"" when there is none
        self._program = b""          # stub + libseccomp's program, when there is a stub
        self._fprog: Any = None      # struct sock_fprog over _program, built ahead of load()
        self.loaded = False

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _context(self, what: str) -> int:
        if self._ctx is None:
            raise OSError(errno.EBADF, f"{what}: the seccomp filter was released")
        return self._ctx

    def _set_stub(self, stub: bytes) -> None:
        """Prepend ``stub``; everything load() needs is built now, before privileges go."""
        ct = self._lib.ctypes
        self.stub = stub
        self._program = stub + self._export_libseccomp()
        buf = ct.create_string_buffer(self._program, len(self._program))
        count = len(self._program) // _SOCK_FILTER.size
        self._fprog = (self._lib.SockFprog(count, ct.addressof(buf)), buf)

    def export_bpf(self) -> bytes:
        """The cBPF program (``struct sock_filter`` array, host order) that load() installs."""
        return self._program if self.stub else self._export_libseccomp()

    def _export_libseccomp(self) -> bytes:
        ctx = self._context("seccomp_export_bpf")
        fd = os.memfd_create("ketch-seccomp-bpf", os.MFD_CLOEXEC)
        try:
            _check(self._lib.lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)

    def load(self) -> None:
        """Install the filter on the calling thread (on all threads with TSYNC).

        Needs no_new_privs set, or CAP_SYS_ADMIN in the effective set. It is one
        syscall, so it can run as late as the caller likes (just before execve).
        """
        if not self.stub:
            _check(self._lib.lib.seccomp_load(self._context("seccomp_load")), "seccomp_load")
            self.loaded = True
            return
        ct = self._lib.ctypes
        fprog, _buf = self._fprog
        ret = self._lib.syscall(ct.c_long(self._lib.nr_seccomp),
                                ct.c_long(_SECCOMP_SET_MODE_FILTER), ct.c_long(self._flags),
                                ct.byref(fprog))
        if ret > 0:       # TSYNC: the id of a thread that could not be synchronised
            raise OSError(errno.EAGAIN, f"seccomp(SECCOMP_SET_MODE_FILTER): thread {ret} "
                             "could not be synchronised")
        if ret < 0:
            err = ct.get_errno()
            raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")
        self.loaded = True

    def release(self) -> None:
        """Free the libseccomp context; a loaded filter stays in force."""
        if self._ctx is not None:
            self._lib.lib.seccomp_release(self._ctx)
            self._ctx = None


def _conditions(lib: _Lib, args: list[ArgCmp]) -> list[ctypes.Array[Any]]:
    """The condition arrays to add, one rule each (runc splits tests of one argument)."""
    def one(items: list[ArgCmp]) -> ctypes.Array[Any]:
        arr = (lib.ArgCmp * len(items))()
        for slot, a in zip(arr, items, strict=True):
            slot.arg, slot.op = a.index, OPERATORS[a.op]
            slot.datum_a, slot.datum_b = a.value, a.value_two
        return arr

    indexes = [a.index for a in args]
    if len(set(indexes)) != len(indexes):
        return [one([a]) for a in args]
    return [one(args)]


def _add_rules(lib: _Lib, ctx: int, rule: SyscallRule, action: int,
               resolved: dict[str, int]) -> None:
    conds = _conditions(lib, rule.args) if rule.args else []
    add = lib.lib.seccomp_rule_add_array
    for name in rule.names:
        nr = resolved.get(name)
        if nr is None:
            nr = resolved[name] = int(lib.lib.seccomp_syscall_resolve_name(name.encode()))
        if nr == _NR_UNKNOWN:
            continue
        if not conds:
            _check(add(ctx, action, nr, 0, None), f"seccomp_rule_add_array({name})")
            continue
        for arr in conds:
            _check(add(ctx, action, nr, len(arr), arr), f"seccomp_rule_add_array({name})")


def compile(s: Seccomp) -> Filter:
    """Validate ``s`` and build its filter; nothing is loaded into the kernel."""
    validate(s)
    lib = _get_lib()
    default = _action_value(s.default_action, s.default_errno_ret)
    ctx = lib.lib.seccomp_init(default)
    if not ctx:
        raise OSError(errno.EINVAL, f"seccomp_init: libseccomp refused default action "
                         f"{s.default_action} ({default:#x}); the kernel may not support it")
    try:
        for arch in s.architectures:
            rc = lib.lib.seccomp_arch_add(ctx, lib.arch_token(arch))
            if rc != -errno.EEXIST:     # the native one is always there
                _check(rc, f"seccomp_arch_add({arch})")
        _check(lib.lib.seccomp_attr_set(ctx, _ATTR_CTL_NNP, 0), "seccomp_attr_set(CTL_NNP)")
        # The kernel's errno from seccomp_load (EACCES...), not ECANCELED; >= 2.5.0.
        lib.lib.seccomp_attr_set(ctx, _ATTR_API_SYSRAWRC, 1)
        flags = 0
        for flag in s.flags:
            attr, bit = FLAGS[flag]
            _check(lib.lib.seccomp_attr_set(ctx, attr, 1), f"seccomp_attr_set({flag})")
            flags |= bit
        if sum(len(r.names) for r in s.syscalls) > _OPTIMIZE_ABOVE:
            # Binary tree instead of a linear list; older libraries lack it (not fatal).
            lib.lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)
        resolved: dict[str, int] = {}
        for rule in s.syscalls:
            action = _action_value(rule.action, rule.errno_ret)
            if action == default:
                continue          # redundant, and libseccomp refuses it (EACCES)
            _add_rules(lib, ctx, rule, action, resolved)
        flt = Filter(lib, ctx, flags)
        stub = _enosys_stub(lib, s)
        if stub:
            flt._set_stub(stub)
        return flt
    except BaseException:
        lib.lib.seccomp_release(ctx)
        raise


_CACHE: dict[str, Filter] = {}
_CACHE_MAX = 8


def compile_cached(s: Seccomp) -> Filter:
    """``compile(s)``, remembered by the profile's content.

    For a long-lived caller (ketchd's supervisor) every container with the same
    profile (almost always docker's default) shares one compiled program: the
    compile costs 15-18 ms (libseccomp's rule adding and BPF export). The
    returned filter belongs to the cache: callers load it, never release it.
    """
    import json

    from ketch.jsonmodel import to_json

    key = json.dumps(to_json(s), sort_keys=True)
    flt = _CACHE.get(key)
    if flt is None:
        flt = compile(s)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE))).release()
        _CACHE[key] = flt
    return flt


# --------------------------------------------------------------------------
# The -ENOSYS stub (runc's patchbpf, written from its idea).


def _filter_arches(lib: _Lib, s: Seccomp) -> list[int]:
    tokens = [lib.native]
    for arch in s.architectures:
        token = lib.arch_token(arch)
        if token not in tokens:
            tokens.append(token)
    return tokens


def _enosys_stub(lib: _Lib, s: Seccomp) -> bytes:
    """A cBPF prefix: per architecture, syscalls above the profile's highest get ENOSYS.

    Layout (all jumps forward and short; ``F`` is the first instruction of
    libseccomp's program, which the stub does not touch)::

        ld  [arch]
        jeq AUDIT_ARCH_1, block_1       ... one per architecture
        ja  F
      block (x86_64 shape; others have no jset and no x32 half):
        ld  [nr]
        jset X32_BIT, x32
        jgt MAX_X86_64, 0, 1
        ret ERRNO(ENOSYS)
        ja  F
      x32:
        jgt MAX_X32, 0, 1
        ret ERRNO(ENOSYS)
        ja  F
    """
    if s.default_action in _PERMISSIVE:
        return b""
    if s.default_action == "SCMP_ACT_ERRNO" and s.default_errno_ret == ENOSYS:
        return b""
    names = {n for rule in s.syscalls for n in rule.names}
    resolve = lib.lib.seccomp_syscall_resolve_name_arch
    # audit arch -> {"main"/"x32": highest syscall number named in the profile}
    highest: dict[int, dict[str, int]] = {}
    for token in _filter_arches(lib, s):
        top = max((resolve(token, n.encode()) for n in names), default=-1)
        if top < 0:
            continue
        if token == _TOKEN_X32:
            highest.setdefault(_AUDIT_ARCH_X86_64, {})["x32"] = top
        else:
            highest.setdefault(token, {})["main"] = top
    if not highest:
        return b""

    blocks: list[tuple[int, list[_Insn]]] = []
    for audit, tops in highest.items():
        block: list[_Insn] = [(_LD_W_ABS, 0, 0, _OFF_NR)]
        if audit == _AUDIT_ARCH_X86_64:
            main = _above(tops["main"]) if "main" in tops else [_TO_FILTER]
            x32 = _above(tops["x32"]) if "x32" in tops else [_TO_FILTER]
            block.append((_JMP_JSET_K, len(main), 0, _X32_SYSCALL_BIT))
            block += main + x32
        else:
            if audit in _S390_TOKENS:
                # Syscalls unknown to an s390 kernel arrive as number 0 (setup).
                block += [(_JMP_JEQ_K, 0, 1, 0), (_RET_K, 0, 0, _RET_ENOSYS)]
            block += _above(tops["main"])
        blocks.append((audit, block))

    head: list[_Insn] = [(_LD_W_ABS, 0, 0, _OFF_ARCH)]
    offset = 1 + len(blocks) + 1      # index of the first block
    for i, (audit, block) in enumerate(blocks):
        jt = offset - (1 + i + 1)
        if jt > 255:                  # cannot happen with the few arches of a filter
            raise OSError(errno.E2BIG, "seccomp: -ENOSYS stub too long")
        head.append((_JMP_JEQ_K, jt, 0, audit))
        offset += len(block)
    head.append(_TO_FILTER)
    insns = head + [insn for _, block in blocks for insn in block]
    end = len(insns)
    out = bytearray()
    for pc, (code, jt, jf, k) in enumerate(insns):
        if k == "F":
            k = end - (pc + 1)
        out += _SOCK_FILTER.pack(code, jt, jf, int(k))
    return bytes(out)
