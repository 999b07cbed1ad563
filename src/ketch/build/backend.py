"""What the executor needs from the engine, as a protocol.

The builder sits below the engine in ketch's layers: it decides what each
step is and whether the cache serves it, and the engine (``engine/builder.py``)
owns images, snapshots and containers. The split follows moby's legacy
builder backend: every step that changes the filesystem runs against a
writable root filesystem of its parent image and becomes one more image.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Mount:
    """A mount for one RUN container (``RUN --mount`` after planning)."""

    type: str                      # "bind" | "tmpfs"
    target: str
    source: str = ""
    readonly: bool = True
    size: int = 0                  # tmpfs bytes (0 = the default)


@dataclass
class RunSpec:
    """A RUN step's container."""

    argv: list[str]
    env: list[str]
    user: str = ""
    workdir: str = ""
    network: str = ""              # "" = the build's default network
    mounts: list[Mount] = field(default_factory=list)


@dataclass
class CacheRecord:
    key: str
    image: str
    parent: str
    command: str
    inputs: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    def base_image(self, ref: str, *, pull: bool, platform: str) -> str:
        """The id of the image ``FROM ref`` names (pulled first when asked or missing)."""

    def image_doc(self, image_id: str) -> dict[str, Any]:
        """The image's config JSON document."""

    def cache_get(self, key: str) -> str | None:
        """The image a step with this key made before, if it still exists."""

    def cache_put(self, record: CacheRecord) -> None: ...

    def cache_siblings(self, parent: str) -> list[CacheRecord]:
        """Earlier steps on the same parent, to say why a step missed."""

    def commit_config(self, parent: str | None, doc: dict[str, Any]) -> str:
        """A new image: ``parent``'s layers and the config ``doc`` (no new layer)."""

    def commit_layer_from(self, parent: str | None, doc: dict[str, Any], source: str,
                          index: int) -> str:
        """A new image: ``parent``'s layers plus layer ``index`` of image ``source``
        (a ``--cache-from`` hit), with the config ``doc``."""

    def commit_files(self, parent: str | None, doc: dict[str, Any],
                     fill: Callable[[str], None]) -> str:
        """A new image: ``fill(rootfs)`` writes into a writable view of ``parent``; its
        changes are one more layer (none if it changed nothing)."""

    def commit_run(self, parent: str | None, doc: dict[str, Any], spec: RunSpec,
                   output: Callable[[str, str], None], started: Callable[[str], None],
                   cancelled: Callable[[], bool]) -> str:
        """Run ``spec`` in a container on ``parent``; its changes become one more layer.
        A non-zero exit raises ``StepFailed``."""

    def rootfs(self, image_id: str | None) -> AbstractContextManager[str]:
        """A read-only view of an image's tree (COPY --from, RUN --mount from=)."""

    def user_ids(self, rootfs: str, spec: str) -> tuple[int, int]:
        """``--chown`` words to numbers, read from the image's /etc/passwd and group."""

    def cache_dir(self, ident: str, sharing: str = "shared", uid: int = 0, gid: int = 0,
                  mode: int = 0o755) -> tuple[str, Callable[[], None]]:
        """The directory that backs ``RUN --mount=type=cache,id=ident`` and what to call
        when the step is done with it: ``locked`` waits for other users to finish,
        ``private`` gets a directory of its own while another uses the shared one."""

    def tag(self, image_id: str, tags: list[str]) -> None: ...

