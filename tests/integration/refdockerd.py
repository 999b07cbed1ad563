"""Debian's dockerd 20.10 as the reference engine for the image tests.

One private daemon per test session (starting it costs a second or two),
built on ``engines.Dockerd``, which already keeps everything it makes
findable and removable: its own data root, exec root, unix socket and
pidfile under ``/tmp/<prefix>-refd-<random>``, ``--bridge none --iptables=false``, a
cgroup parent under the session prefix for the build containers, and a
teardown that stops dockerd and its containerd by pid, unmounts, removes
the cgroups and the directory, and reports anything it could not remove.

What this module adds for images: the busybox base imported the way
reference-tools.md describes (``busybox:latest``), ``build`` with the legacy
builder (the machine's CLI has no buildx, and dockerd 20.10 builds by itself),
and ``save``/``load`` to and from files.

Use it from a test module with::

    from tests.integration.refdockerd import ref_dockerd  # noqa: F401 - a fixture
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engines import IMAGE_PATH, Dockerd, mounts_under, write_image_tar

DOCKERD = shutil.which("dockerd")
DOCKER = shutil.which("docker")
# The tag of the base image every reference build starts FROM.
BASE = "busybox:latest"


class RefDockerd(Dockerd):
    """A private dockerd with image helpers; every call fails loudly with the daemon's log."""

    def __init__(self, base: Path, cgroup_parent: str) -> None:
        super().__init__(base, cgroup_parent, runtimes={}, docker=DOCKER or "docker")
        # The legacy builder (POST /build), whatever the caller's environment says.
        self.env["DOCKER_BUILDKIT"] = "0"
        self.env.pop("DOCKER_API_VERSION", None)

    def import_busybox(self, rootfs: Path, tag: str = BASE) -> str:
        tar = write_image_tar(rootfs, self.base / "busybox-rootfs.tar")
        try:
            return self.ok("import", "--change", f"ENV PATH={IMAGE_PATH}", "-", tag,
                           input=tar.read_bytes(), timeout=120).stdout.strip()
        finally:
            tar.unlink()

    def build(self, context: Path, tag: str) -> str:
        """``docker build`` of ``context`` (its Dockerfile) without a network; the image ID."""
        self.ok("build", "--network", "none", "-q", "-t", tag, str(context), timeout=120)
        return self.image_id(tag)

    def save(self, dest: Path, *refs: str) -> Path:
        self.ok("save", "-o", str(dest), *refs, timeout=120)
        return dest

    def load(self, archive: Path) -> str:
        return self.ok("load", "-i", str(archive), timeout=120).stdout

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.ok("image", "inspect", ref).stdout)
        return data[0]

    def image_id(self, ref: str) -> str:
        return str(self.inspect(ref)["Id"])

    def remove(self, *refs: str) -> None:
        """``docker rmi``; the layers stay while another image shares them."""
        self.ok("rmi", *refs)


@pytest.fixture(scope="session")
def ref_dockerd(prefix: str, busybox_rootfs: Path) -> Iterator[RefDockerd]:
    """The session's reference dockerd, with ``busybox:latest`` imported."""
    if DOCKERD is None or DOCKER is None:
        pytest.skip("dockerd (package docker.io) or the docker CLI is not installed")
    # Short: the socket path under it must stay below 108 bytes; and named with
    # the session prefix so the session's mount leak check covers it.
    # A module that imports this fixture gets its own instance of it (pytest
    # keys session fixtures by where they are defined), hence the random part.
    name = f"refd-{secrets.token_hex(2)}"
    d = RefDockerd(Path(tempfile.gettempdir()) / f"{prefix}-{name}", f"/{prefix}/{name}")
    try:
        d.start()
        d.import_busybox(busybox_rootfs)
        yield d
    finally:
        problems = d.stop()
        if mounts_under(d.base):
            problems.append(f"mounts left: {mounts_under(d.base)}")
        assert not problems, "reference dockerd teardown:\n" + "\n".join(problems)
