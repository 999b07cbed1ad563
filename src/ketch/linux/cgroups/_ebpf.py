"""The cgroup v2 device controller: an eBPF program attached to the cgroup dir.

cgroup v2 has no devices.allow; the kernel instead runs every program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to a cgroup (and its ancestors) on each
device open or mknod, with a ``struct bpf_cgroup_dev_ctx``:

    u32 access_type   (access << 16) | type      type: 1 block, 2 char
    u32 major                                    access: 1 mknod, 2 read, 4 write
    u32 minor

and allows the access if every program returns 1. ketch compiles the rule list
into one straight-line program, as runc and crun do:

    r2 = ctx->access_type & 0xffff      ; type
    r3 = ctx->access_type >> 16         ; access
    r4 = ctx->major ; r5 = ctx->minor
    block 0: if r2 != type goto block 1
             if (r3 & access) != r3 goto block 1    (left out for "rwm")
             if r4 != major goto block 1            (left out for *)
             if r5 != minor goto block 1            (left out for *)
             r0 = allow ; exit
    ...
    block N: r0 = default ; exit

The instructions are assembled here (8 bytes each, ``struct bpf_insn``), loaded
with bpf(BPF_PROG_LOAD), and attached with bpf(BPF_PROG_ATTACH,
BPF_F_ALLOW_MULTI) to the cgroup directory. A program ketch attached before is
recognized by its name and detached after the new one is in place, so the
cgroup is never without a filter; programs others attached are left alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from ketch.errors import Forbidden, InvalidArgument, NotSupported, System
from ketch.linux.cgroups._devices import WILDCARD, Rule, clean_rules
from ketch.linux.cgroups.resources import DeviceRule

# -- instruction encoding (linux/bpf_common.h, linux/bpf.h) --------------------------
BPF_LDX, BPF_ALU, BPF_JMP = 0x01, 0x04, 0x05
BPF_W, BPF_MEM = 0x00, 0x60
BPF_K, BPF_X = 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JNE, BPF_EXIT = 0x50, 0x90

R0, R1, R2, R3, R4, R5 = range(6)

BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR = 1, 2
BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
_TYPE_BITS = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}

# bpf(2) commands, program and attach types.
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

PROGRAM_NAME = "ketch_dev"      # how ketch knows its own program on a cgroup
LICENSE = "Apache"


@dataclass(frozen=True, slots=True)
class Insn:
    """One ``struct bpf_insn``; ``target`` names a label for a jump to resolve."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)


def ldx_w(dst: int, src: int, off: int) -> Insn:
    """dst = *(u32 *)(src + off)"""
    return Insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off)


def and32_imm(dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU | BPF_AND | BPF_K, dst, imm=imm)


def rsh32_imm(dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU | BPF_RSH | BPF_K, dst, imm=imm)


def mov32_imm(dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU | BPF_MOV | BPF_K, dst, imm=imm)


def mov32_reg(dst: int, src: int) -> Insn:
    return Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src)


def jne_imm(dst: int, imm: int, target: str) -> Insn:
    return Insn(BPF_JMP | BPF_JNE | BPF_K, dst, imm=imm, target=target)


def jne_reg(dst: int, src: int, target: str) -> Insn:
    return Insn(BPF_JMP | BPF_JNE | BPF_X, dst, src, target=target)


def exit_insn() -> Insn:
    return Insn(BPF_JMP | BPF_EXIT)


class Assembler:
    """Instructions plus labels; ``assemble`` resolves jumps to pc-relative offsets."""

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def emit(self, *insns: Insn) -> None:
        self.insns.extend(insns)

    def resolved(self) -> list[Insn]:
        out = []
        for pc, ins in enumerate(self.insns):
            if ins.target is not None:
                try:
                    dest = self.labels[ins.target]
                except KeyError:
                    raise ValueError(f"undefined BPF label {ins.target}") from None
                off = dest - pc - 1
                if not 0 <= off < 2**15:
                    raise ValueError(f"BPF jump to {ins.target} out of range")
                ins = Insn(ins.code, ins.dst, ins.src, off, ins.imm)
            out.append(ins)
        return out

    def assemble(self) -> bytes:
        return b"".join(i.encode() for i in self.resolved())


@dataclass(frozen=True, slots=True)
class DeviceProgram:
    """A compiled device filter: the instruction bytes and what they mean."""

    insns: bytes
    default_allow: bool
    rules: tuple[Rule, ...] = field(default=())
    license: str = LICENSE

    @property
    def count(self) -> int:
        return len(self.insns) // 8


def _u32_imm(n: int) -> int:
    """An u32 compared against a sign-extended s32 immediate: the same bits."""
    return n - 2**32 if n >= 2**31 else n


def compile_rules(rules: Sequence[DeviceRule]) -> DeviceProgram:
    """The eBPF program that enforces ``rules`` (OCI order, last one wins as in v1)."""
    default_allow, exceptions = clean_rules(rules)
    a = Assembler()
    a.emit(ldx_w(R2, R1, 0), and32_imm(R2, 0xFFFF),
           ldx_w(R3, R1, 0), rsh32_imm(R3, 16),
           ldx_w(R4, R1, 4),
           ldx_w(R5, R1, 8))
    for i, rule in enumerate(exceptions):
        nxt = f"block-{i + 1}"
        a.label(f"block-{i}")
        a.emit(jne_imm(R2, _TYPE_BITS[rule.type], nxt))
        access = 0
        for c in rule.access:
            access |= _ACCESS_BITS[c]
        if access != 0b111:
            # Every access asked for must be among the rule's.
            a.emit(mov32_reg(R1, R3), and32_imm(R1, access), jne_reg(R1, R3, nxt))
        if rule.major != WILDCARD:
            a.emit(jne_imm(R4, _u32_imm(rule.major), nxt))
        if rule.minor != WILDCARD:
            a.emit(jne_imm(R5, _u32_imm(rule.minor), nxt))
        a.emit(mov32_imm(R0, 1 if rule.allow else 0), exit_insn())
    a.label(f"block-{len(exceptions)}")
    a.emit(mov32_imm(R0, 1 if default_allow else 0), exit_insn())
    return DeviceProgram(a.assemble(), default_allow, tuple(exceptions))


# -- the bpf(2) syscall ---------------------------------------------------------------

def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    from ketch.linux.syscalls import libc, syscall_number
    ret = int(libc().syscall(ctypes.c_long(syscall_number("bpf")), ctypes.c_long(cmd),
                             attr, ctypes.c_long(len(attr))))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({what}): {os.strerror(err)}")
    return ret


def _attr(data: bytes, size: int = 128) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(size)
    ctypes.memmove(buf, data, len(data))
    return buf


def load_program(program: DeviceProgram) -> int:
    """bpf(BPF_PROG_LOAD): the program's fd. The verifier's log goes in the error."""
    insns = ctypes.create_string_buffer(program.insns, len(program.insns))
    lic = ctypes.create_string_buffer(program.license.encode())
    log = ctypes.create_string_buffer(65536)

    def attempt(with_log: bool) -> int:
        name = PROGRAM_NAME.encode()[:15].ljust(16, b"\0")
        data = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_CGROUP_DEVICE, program.count,
                           ctypes.addressof(insns), ctypes.addressof(lic),
                           1 if with_log else 0, len(log) if with_log else 0,
                           ctypes.addressof(log) if with_log else 0, 0, 0, name)
        return _bpf(BPF_PROG_LOAD, _attr(data), "BPF_PROG_LOAD")

    try:
        return attempt(False)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            # Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
            try:
                resource.setrlimit(resource.RLIMIT_MEMLOCK,
                                   (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                return attempt(False)
            except (OSError, ValueError):
                pass
        if exc.errno == errno.EINVAL or exc.errno == errno.EACCES:
            try:
                return attempt(True)
            except OSError as exc2:
                text = log.value.decode(errors="replace").strip()
                raise OSError(exc2.errno, f"bpf(BPF_PROG_LOAD): {os.strerror(exc2.errno or 0)}"
                              + (f"; verifier: {text}" if text else "")) from None
        raise


def query_programs(cgroup_fd: int) -> list[int]:
    """The ids of the device programs attached to the cgroup itself."""
    size = 64
    for _ in range(10):
        ids = (ctypes.c_uint32 * size)()
        attr = _attr(struct.pack("<IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                                 ctypes.addressof(ids), size))
        try:
            _bpf(BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                size = struct.unpack_from("<I", attr, 24)[0]
                continue
            raise
        count = struct.unpack_from("<I", attr, 24)[0]
        return list(ids[:count])
    raise System("cannot list the device programs of a cgroup: the list keeps growing")


def program_fd(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _attr(struct.pack("<I", prog_id)),
                "BPF_PROG_GET_FD_BY_ID")


def program_name(fd: int) -> str:
    info = ctypes.create_string_buffer(80)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _attr(struct.pack("<IIQ", fd, len(info),
                                                   ctypes.addressof(info))),
         "BPF_OBJ_GET_INFO_BY_FD")
    return info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")


def attach(cgroup_fd: int, prog_fd: int) -> None:
    _bpf(BPF_PROG_ATTACH, _attr(struct.pack("<IIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE,
                                            BPF_F_ALLOW_MULTI)), "BPF_PROG_ATTACH")


def detach(cgroup_fd: int, prog_fd: int) -> None:
    _bpf(BPF_PROG_DETACH, _attr(struct.pack("<III", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE)),
         "BPF_PROG_DETACH")


def attached_ketch_programs(cgroup_fd: int) -> list[int]:
    """fds of the programs on this cgroup that ketch attached (by their name)."""
    fds = []
    for pid in query_programs(cgroup_fd):
        try:
            fd = program_fd(pid)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):
                continue        # gone, or hidden from us by an LSM: not ours
            raise
        try:
            if program_name(fd) == PROGRAM_NAME:
                fds.append(fd)
                continue
        except OSError:
            pass
        os.close(fd)
    return fds


def replace_device_program(dir_path: str, program: DeviceProgram) -> None:
    """Load ``program`` and make it the cgroup's ketch device filter."""
    try:
        dfd = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise System(f"cannot open cgroup {dir_path}: {exc.strerror}") from exc
    old: list[int] = []
    pfd = -1
    try:
        try:
            old = attached_ketch_programs(dfd)
            pfd = load_program(program)
            attach(dfd, pfd)
            for fd in old:
                detach(dfd, fd)
        except OSError as exc:
            msg = f"cannot set device filter on cgroup {dir_path}: {exc.strerror or exc}"
            if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
                raise NotSupported(msg + " (the kernel lacks eBPF cgroup device support)"
                                   ) from exc
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise Forbidden(msg) from exc
            if exc.errno == errno.EINVAL:
                raise InvalidArgument(msg) from exc
            raise System(msg) from exc
    finally:
        for fd in [*old, pfd]:
            if fd >= 0:
                os.close(fd)
        os.close(dfd)
