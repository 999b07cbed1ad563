"""Linux capabilities: the name table, the five sets of a process, and setting them.

The container's init process (a forked, single-threaded child, still root in
its user namespace) changes user and capabilities in runc's order:

    sets = CapSets(bounding=parse(spec.bounding), effective=parse(...), ...)
    drop_bounding(sets)          # 1. needs CAP_SETPCAP, so while still root
    prctl(PR_SET_KEEPCAPS, 1)    # 2. keep the permitted set across setuid
    os.setgroups(...); os.setresgid(...); os.setresuid(...)
    prctl(PR_SET_KEEPCAPS, 0)
    apply_sets(sets)             # 3. capset() effective/permitted/inheritable, then ambient

``apply(sets)`` does all three steps at once and works both before and after
setuid: when CAP_SETPCAP is permitted but no longer effective (setuid clears
the effective set), it raises the effective set again before dropping bounding
capabilities. Seccomp filters are compiled before any of this and, when
no_new_privs is off, loaded before it too (loading then needs CAP_SYS_ADMIN);
see ``ketch.linux.seccomp``.

As runc does: capabilities above the running kernel's ``cap_last_cap`` are
skipped without error, and an ambient capability the kernel refuses to raise
(it must be both permitted and inheritable) is skipped; ``apply_sets`` returns
the names of those so the caller can warn.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ketch.errors import InvalidArgument

if TYPE_CHECKING:
    import ctypes

# linux/capability.h
CAPS: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
NAMES: tuple[str, ...] = tuple(sorted(CAPS, key=CAPS.__getitem__))   # index = number
CAP_SETPCAP = CAPS["CAP_SETPCAP"]

# prctl options and capset's header (linux/prctl.h, linux/capability.h).
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522


def name(cap: int) -> str:
    """``CAP_CHOWN`` for 0; numbers beyond the table read ``CAP_41``."""
    return NAMES[cap] if 0 <= cap < len(NAMES) else f"CAP_{cap}"


def names(caps: set[int]) -> list[str]:
    return [name(c) for c in sorted(caps)]


def parse(cap_names: list[str] | set[str] | tuple[str, ...]) -> set[int]:
    """Capability names as the OCI spec spells them (``CAP_NET_RAW``) -> numbers."""
    out: set[int] = set()
    for n in cap_names:
        try:
            out.add(CAPS[n])
        except KeyError:
            raise InvalidArgument(f'unknown capability "{n}"') from None
    return out


def _mask(caps: set[int]) -> int:
    m = 0
    for c in caps:
        m |= 1 << c
    return m


def _unmask(m: int) -> set[int]:
    return {i for i in range(m.bit_length()) if m >> i & 1}


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability the running kernel knows (``/proc/sys/kernel/cap_last_cap``).

    Without /proc (or with it masked), probed with PR_CAPBSET_READ, which says
    EINVAL beyond the last one. Cached: it cannot change while the kernel runs.
    """
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _last_cap = int(f.read())
        except (OSError, ValueError):
            k = LinuxCapKernel()
            n = 0
            while n < 63 and k.capbset_known(n + 1):
                n += 1
            _last_cap = n
    return _last_cap


@dataclass(slots=True)
class CapSets:
    """The five capability sets of a process, as sets of numbers."""

    bounding: set[int] = field(default_factory=set)
    effective: set[int] = field(default_factory=set)
    inheritable: set[int] = field(default_factory=set)
    permitted: set[int] = field(default_factory=set)
    ambient: set[int] = field(default_factory=set)

    @classmethod
    def from_names(cls, bounding: list[str] | None = None, effective: list[str] | None = None,
                   inheritable: list[str] | None = None, permitted: list[str] | None = None,
                   ambient: list[str] | None = None) -> CapSets:
        return cls(bounding=parse(bounding or []), effective=parse(effective or []),
                   inheritable=parse(inheritable or []), permitted=parse(permitted or []),
                   ambient=parse(ambient or []))

    @classmethod
    def all(cls, caps: set[int]) -> CapSets:
        """The same capabilities in every set."""
        return cls(set(caps), set(caps), set(caps), set(caps), set(caps))


def current(pid: int | str = "self") -> CapSets:
    """A process's sets, from ``/proc/<pid>/status`` (CapBnd/CapEff/CapInh/CapPrm/CapAmb)."""
    keys = {"CapBnd": "bounding", "CapEff": "effective", "CapInh": "inheritable",
            "CapPrm": "permitted", "CapAmb": "ambient"}
    found: dict[str, set[int]] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                found[keys[key]] = _unmask(int(value.strip(), 16))
    return CapSets(**found)


class CapKernel(Protocol):
    """The kernel calls behind apply(); unit tests pass a recording fake."""

    def capbset_known(self, cap: int) -> bool: ...

    def capbset_read(self, cap: int) -> bool: ...

    def capbset_drop(self, cap: int) -> None: ...

    def capget(self) -> tuple[int, int, int]: ...

    def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...

    def ambient_clear_all(self) -> None: ...

    def ambient_raise(self, cap: int) -> None: ...


class LinuxCapKernel:
    """prctl(2) through libc, capget/capset(2) as raw syscalls (version 3: two words per set)."""

    def _prctl(self, what: str, option: int, arg2: int = 0, arg3: int = 0) -> int:
        from ketch.linux.syscalls import libc

        ret = int(libc().prctl(option, arg2, arg3, 0, 0))
        if ret < 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"prctl({what}): {os.strerror(err)}")
        return ret

    def capbset_known(self, cap: int) -> bool:
        try:
            self._prctl(f"PR_CAPBSET_READ, {name(cap)}", PR_CAPBSET_READ, cap)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False
            raise
        return True

    def capbset_read(self, cap: int) -> bool:
        return self._prctl(f"PR_CAPBSET_READ, {name(cap)}", PR_CAPBSET_READ, cap) == 1

    def capbset_drop(self, cap: int) -> None:
        self._prctl(f"PR_CAPBSET_DROP, {name(cap)}", PR_CAPBSET_DROP, cap)

    def _call(self, which: str, data: ctypes.Array[ctypes.c_uint32]) -> None:
        import ctypes

        from ketch.linux.syscalls import raw_syscall

        header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
        ret = raw_syscall(which, ctypes.c_void_p(ctypes.addressof(header)),
                          ctypes.c_void_p(ctypes.addressof(data)))
        if ret < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{which}: {os.strerror(err)}")

    def capget(self) -> tuple[int, int, int]:
        import ctypes

        data = (ctypes.c_uint32 * 6)()     # {effective, permitted, inheritable} x 2
        self._call("capget", data)
        return (data[0] | data[3] << 32, data[1] | data[4] << 32, data[2] | data[5] << 32)

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        import ctypes

        lo, hi = 0xFFFFFFFF, 32
        data = (ctypes.c_uint32 * 6)(effective & lo, permitted & lo, inheritable & lo,
                                     effective >> hi, permitted >> hi, inheritable >> hi)
        try:
            self._call("capset", data)
        except OSError as exc:
            raise OSError(exc.errno, f"capset(effective={effective:#x}, permitted="
                                     f"{permitted:#x}, inheritable={inheritable:#x}): "
                                     f"{exc.strerror}") from None

    def ambient_clear_all(self) -> None:
        self._prctl("PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL", PR_CAP_AMBIENT,
                    PR_CAP_AMBIENT_CLEAR_ALL)

    def ambient_raise(self, cap: int) -> None:
        self._prctl(f"PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, {name(cap)}", PR_CAP_AMBIENT,
                    PR_CAP_AMBIENT_RAISE, cap)


def _known(caps: set[int], last: int) -> set[int]:
    return {c for c in caps if c <= last}


def drop_bounding(c: CapSets, kernel: CapKernel | None = None, last: int | None = None) -> None:
    """Drop from the bounding set every capability not in ``c.bounding`` (needs CAP_SETPCAP)."""
    k = kernel or LinuxCapKernel()
    top = last_cap() if last is None else last
    for cap in range(top + 1):
        if cap not in c.bounding and k.capbset_read(cap):
            k.capbset_drop(cap)


def apply_sets(c: CapSets, kernel: CapKernel | None = None,
               last: int | None = None) -> list[str]:
    """capset() the effective, permitted and inheritable sets, then set the ambient set.

    Returns the ambient capabilities the kernel refused to raise (not both
    permitted and inheritable); runc only warns about those, and so may the caller.
    """
    k = kernel or LinuxCapKernel()
    top = last_cap() if last is None else last
    k.capset(_mask(_known(c.effective, top)), _mask(_known(c.permitted, top)),
             _mask(_known(c.inheritable, top)))
    try:
        k.ambient_clear_all()
    except OSError as exc:
        if exc.errno == errno.EINVAL:    # kernel without ambient capabilities (< 4.3)
            return []
        raise
    refused: list[str] = []
    for cap in sorted(_known(c.ambient, top)):
        try:
            k.ambient_raise(cap)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
            refused.append(name(cap))
    return refused


def apply(c: CapSets, kernel: CapKernel | None = None, last: int | None = None) -> None:
    """Make the calling process's five sets ``c`` (bounding, then capset, then ambient).

    Works before setuid and after a setuid done with PR_SET_KEEPCAPS: if
    CAP_SETPCAP is permitted but not effective, it is made effective first so
    the bounding set can still be dropped.
    """
    k = kernel or LinuxCapKernel()
    top = last_cap() if last is None else last
    needs_drop = any(cap not in c.bounding and k.capbset_read(cap) for cap in range(top + 1))
    if needs_drop:
        eff, prm, inh = k.capget()
        if not eff >> CAP_SETPCAP & 1 and prm >> CAP_SETPCAP & 1:
            k.capset(prm, prm, inh)
        drop_bounding(c, k, top)
    apply_sets(c, k, top)
