"""Resolve a path inside a directory as if that directory were ``/``.

Used wherever ketch reads or writes a tree it does not trust (a build context,
an image's root filesystem): a symlink in that tree, absolute or full of
``..``, must never lead to the host's files. ``..`` at the top stays at the
top, as it does at a real ``/``.

The resolution is done on strings with ``lstat``/``readlink``; it is meant for
trees nobody else changes while ketch works on them (a build step's rootfs, an
extracted context), not as a defence against a concurrent attacker.
"""

from __future__ import annotations

import os
import stat

from ketch.errors import InvalidArgument

# The kernel's own limit on symlinks followed while resolving one path.
MAX_SYMLINKS = 40


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def secure_join(root: str, unsafe: str, *, follow_final: bool = True) -> str:
    """``root/unsafe`` with its symlinks resolved within ``root``.

    The result always lies inside ``root``. Components that do not exist are
    kept as written (so the result can name something to create). With
    ``follow_final=False`` a symlink in the last component is not followed:
    the result names the link itself.
    """
    return os.path.join(root, *resolve_parts(root, unsafe, follow_final=follow_final))


def resolve_parts(root: str, unsafe: str, *, follow_final: bool = True) -> list[str]:
    """The components below ``root`` that ``unsafe`` leads to (see :func:`secure_join`)."""
    pending = _split(unsafe)
    pending.reverse()  # a stack: the next component is at the end
    resolved: list[str] = []
    hops = 0
    missing = False  # once a component is missing, nothing below it can be a link
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            missing = False
            continue
        if missing or (not pending and not follow_final):
            resolved.append(part)
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            missing = True
            resolved.append(part)
            continue
        except NotADirectoryError:
            missing = True
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise InvalidArgument(f"too many levels of symbolic links resolving {unsafe!r}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        for piece in reversed(_split(target)):
            pending.append(piece)
    return resolved

