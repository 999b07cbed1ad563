"""Reading and writing /proc/sys, the one place the network code touches sysctls."""

from __future__ import annotations

import os

PROC_SYS = "/proc/sys"


def _path(key: str) -> str:
    # "net.ipv4.ip_forward" or "net/ipv4/ip_forward"; interface names may hold dots,
    # so callers with such keys pass the slash form.
    rel = key if "/" in key else key.replace(".", "/")
    return os.path.join(PROC_SYS, rel)


def read(key: str) -> str:
    with open(_path(key)) as f:
        return f.read().strip()


def write(key: str, value: str) -> None:
    with open(_path(key), "w") as f:
        f.write(value)


def ensure(key: str, value: str) -> str | None:
    """Set ``key`` to ``value``; return the old value if it changed, else None."""
    old = read(key)
    if old == value:
        return None
    write(key, value)
    return old
