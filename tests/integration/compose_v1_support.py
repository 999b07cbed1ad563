"""Debian's docker-compose 1.29 (Python, compose v1) against ketchd and dockerd 20.10 side by side.

Both engines run in a network namespace of their own, as the network
differential tests run them (netns_dockerd.py): compose creates bridge
networks, and dockerd needs its bridge and iptables for them, which must not
touch the host. Each engine gets busybox imported from the same rootfs, so the
images are equal. docker-compose is run with ``COMPOSE_INTERACTIVE_NO_CLI=1``:
``exec`` and ``run`` then go through docker-py (the API) rather than through the
docker CLI, which is what is being judged here.

``python3 -m tests.integration.compose_v1_support DIR`` brings a pair up by
hand (for debugging) and prints the two DOCKER_HOST values; Ctrl-C tears it down.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import PREFIX
from tests.integration.engines import Result, _run
from tests.integration.netns_dockerd import Netns, NetnsKetchd, remove_dir
from tests.integration.test_container_differential import Side
from tests.integration.test_daemon_system import Ketchd, _wait_ready, write_private_config
from tests.integration.test_network_differential import POOLS, _import_busybox, _netns_dockerd

COMPOSE = shutil.which("docker-compose")
# The API version docker-compose and the docker CLI speak to both engines: dockerd 20.10's.
# Unpinned, docker-compose takes the server's (ketchd's is 1.45), where image inspect no
# longer has ContainerConfig, which docker-compose 1.29 reads to recreate a container:
# it fails there as it does against Docker 26 and later (KeyError: 'ContainerConfig').
API = "1.41"


@contextlib.contextmanager
def netns_ketchd(busybox_rootfs: Path, scratch: Path) -> Iterator[Side]:
    """A private ketchd (own dirs, bridge name, cgroup parent) in a netns of its own."""
    netns = Netns()
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-ck", dir="/tmp"))
    k = Ketchd(d, None)  # type: ignore[arg-type]
    write_private_config(k, {"default-address-pools": [{"base": base, "size": size}
                                                         for base, size in POOLS]})
    env = {key: v for key, v in os.environ.items() if not key.startswith("DOCKER_")}
    env.update(DOCKER_HOST=k.host, DOCKER_CONFIG=str(d / "cli"), DOCKER_API_VERSION=API)
    side = Side("ketchd", env, d, d / "ketchd.log")
    nk = NetnsKetchd(k, netns)
    problems: list[str] = []
    try:
        nk.start(side.log)
        _wait_ready(k, None)
        _import_busybox(side, busybox_rootfs, scratch)
        yield side
    finally:
        try:
            problems = nk.stop()
        finally:
            netns.close()
            problems += remove_dir(d)
        assert not problems, "ketchd teardown:\n" + "\n".join(problems)


@contextlib.contextmanager
def dockerd_side(busybox_rootfs: Path, scratch: Path) -> Iterator[Side]:
    with _netns_dockerd("cd", busybox_rootfs, scratch, "dockerd") as side:
        side.env["DOCKER_API_VERSION"] = API
        yield side


# Names compose gives the containers it runs with ``run`` (proj_svc_run_<12 hex>).
RUN_NAME = re.compile(r"_run_[0-9a-f]{12}\b")
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
HEX12 = re.compile(r"\b[0-9a-f]{12}\b")


@dataclass
class ComposePair:
    dockerd: Side
    ketchd: Side
    scratch: Path
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.dockerd, self.ketchd

    def project_dir(self, side: Side, name: str, files: dict[str, str]) -> Path:
        """The same project written once per side (the same directory name, so
        the same project name; bind mounts point into each side's own copy)."""
        d = self.scratch / side.name / name
        d.mkdir(parents=True, exist_ok=True)
        for rel, text in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return d

    def compose(self, side: Side, project: Path, *args: str, timeout: float = 120,
                api: str | None = API) -> Result:
        """``docker-compose -f <project>/docker-compose.yml ARGS`` against ``side``: the
        project's name is its directory's (no chdir: both sides run at once, in threads).
        ``api`` pins COMPOSE_API_VERSION (None: docker-py negotiates the server's)."""
        argv, env = self.command(side, project, *args, api=api)
        return _run(argv, env, None, timeout, side.log)

    def command(self, side: Side, project: Path, *args: str,
                api: str | None = API) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of ``compose`` (for one run in the background)."""
        assert COMPOSE is not None
        env = {**side.env, "COMPOSE_INTERACTIVE_NO_CLI": "1", "COMPOSE_HTTP_TIMEOUT": "60"}
        for key in ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_API_VERSION"):
            env.pop(key, None)
        if api is not None:
            env["COMPOSE_API_VERSION"] = api
        return [COMPOSE, "-f", str(project / "docker-compose.yml"), *args], env

    def cli(self, side: Side, *args: str) -> Result:
        return side.cli(*args)

    def each(self, fn: Any) -> tuple[Any, Any]:
        d, k = (f.result() for f in [self.pool.submit(fn, s) for s in self.sides])
        return d, k


def normalise(side: Side, text: str) -> str:
    """What must differ between two engines made equal: IDs, the engine's own dirs."""
    text = text.replace(str(side.root), "<root>")
    text = RUN_NAME.sub("_run_<id>", text)
    text = HEX64.sub("<id>", text)
    return HEX12.sub("<id>", text)


def compose_labels(inspect: dict[str, Any]) -> dict[str, str]:
    """The com.docker.compose.* labels that must agree (not the config hash, which
    hashes the engine's own image ID, nor the version)."""
    skip = {"com.docker.compose.config-hash", "com.docker.compose.version"}
    return {k: v for k, v in (inspect["Config"]["Labels"] or {}).items()
            if k.startswith("com.docker.compose.") and k not in skip}


def inspect(side: Side, *refs: str) -> list[dict[str, Any]]:
    res = side.cli("inspect", *refs)
    assert res.returncode == 0, str(res)
    out: list[dict[str, Any]] = json.loads(res.stdout)
    return out


@contextlib.contextmanager
def compose_pair(busybox_rootfs: Path) -> Iterator[ComposePair]:
    scratch = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-cs", dir="/tmp"))
    try:
        with ThreadPoolExecutor(2) as boot:
            fd = boot.submit(_enter, dockerd_side, busybox_rootfs, scratch)
            fk = boot.submit(_enter, netns_ketchd, busybox_rootfs, scratch)
            stacks = [fd.exception() or fd.result(), fk.exception() or fk.result()]
        with contextlib.ExitStack() as stack:
            for s in stacks:
                if isinstance(s, contextlib.ExitStack):
                    stack.push(s)
            errors = [s for s in stacks if isinstance(s, BaseException)]
            if errors:
                raise errors[0]
            d, k = (s.side for s in stacks)  # type: ignore[union-attr]
            pair = ComposePair(d, k, scratch)
            try:
                yield pair
            finally:
                pair.pool.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Entered(contextlib.ExitStack):
    side: Side


def _enter(cm: Any, *args: Any) -> _Entered:
    """Enter ``cm(*args)`` in a thread (both engines start at once)."""
    stack = _Entered()
    stack.side = stack.enter_context(cm(*args))
    return stack


if __name__ == "__main__":
    import signal
    import sys
    import time

    from ketch.image.bootstrap import busybox_rootfs as build

    rootfs = Path(sys.argv[1])
    if not (rootfs / "bin" / "busybox").exists():
        build(str(rootfs))
    with compose_pair(rootfs) as p:
        for s in p.sides:
            print(f"{s.name}: DOCKER_HOST={s.env['DOCKER_HOST']} log={s.log}", flush=True)
        print(f"scratch: {p.scratch}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        except (KeyboardInterrupt, SystemExit):
            pass
