"""The network layer's records on disk: one JSON file per object in the network
state dir, named ``<prefix>-<key>.json`` (``bridge-ketch0``, ``net-<id>``,
``macvlan-<id>``).

Written whole to a temporary file (per thread: two networks of one daemon may
save at once) and renamed: a crash leaves the old or the new version, never half
of one. Not fsynced: after a power loss the kernel objects they describe are
gone too. One write of the C encoder's text: ``json.dump`` with ``indent`` runs
the pure-Python encoder, and a bridge's file grows with its endpoints.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any


def path(state_dir: str, prefix: str, key: str) -> str:
    return os.path.join(state_dir, f"{prefix}-{key}.json")


def load(state_dir: str, prefix: str, key: str) -> Any | None:
    try:
        with open(path(state_dir, prefix, key)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def load_all(state_dir: str, prefix: str) -> list[Any]:
    """Every record of one kind, in file name order (a file removed meanwhile by
    another network's teardown is skipped)."""
    out: list[Any] = []
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if name.startswith(f"{prefix}-") and name.endswith(".json"):
            try:
                with open(os.path.join(state_dir, name)) as f:
                    out.append(json.load(f))
            except FileNotFoundError:
                continue
    return out


def save(state_dir: str, prefix: str, key: str, doc: Any) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    target = path(state_dir, prefix, key)
    tmp = f"{target}.{threading.get_ident()}.tmp"
    text = json.dumps(doc, separators=(",", ":"))
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, target)


def remove(state_dir: str, prefix: str, key: str) -> None:
    try:
        os.unlink(path(state_dir, prefix, key))
    except FileNotFoundError:
        pass
