"""A recording stand-in for ``LinuxSyscalls``, for unit tests that need no root.

Each call is stored as a frozen record; ``fail(name, errno, times)`` makes the
next calls of that syscall fail, so error paths can be tested too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[object, ...]


@dataclass
class RecordingSyscalls:
    calls: list[Call] = field(default_factory=list)
    _failures: dict[str, list[int]] = field(default_factory=dict)

    def fail(self, name: str, err: int, times: int = 1) -> None:
        self._failures.setdefault(name, []).extend([err] * times)

    def _record(self, name: str, *args: object) -> None:
        self.calls.append(Call(name, args))
        pending = self._failures.get(name)
        if pending:
            err = pending.pop(0)
            raise OSError(err, f"{name}: {os.strerror(err)}")

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def mount(self, source: str | None, target: str, fstype: str | None,
              flags: int = 0, data: str | None = None) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._record("setns", fd, nstype)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._record("setdomainname", name)

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._record("mknod", path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._record("chown", path, uid, gid)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int:
        self._record("prctl", option, arg2, arg3, arg4, arg5)
        return 0
