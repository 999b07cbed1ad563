"""``ketch`` starts ketchd itself when the default socket has no daemon.

The default place is moved under the session prefix with KETCH_ROOT,
KETCH_EXEC_ROOT and KETCH_DAEMON_CGROUP, so the host's /run/ketch and
/var/lib/ketch are never touched. The daemon is not the test's child (the
CLI started it and exited), so the finalizer stops it by the pid in its
pidfile, waits for it to go, and removes its cgroups and directories.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import BIN, PREFIX, remove_cgroup_tree
from tests.integration.test_daemon_system import NO_DOCKER_HUB

from ketch.cli.autostart import Place, clamp, parse_limits

pytestmark = pytest.mark.root


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture
def place() -> Iterator[Place]:
    base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-as", dir="/tmp"))
    p = Place(root=str(base / "root"), exec_root=str(base / "exec"),
              cgroup=f"{PREFIX}/ketchd-{base.name[-6:]}")
    # The auto-started daemon reads this daemon.json (KETCH_CONFIG_FILE): its
    # containers' and supervisor's cgroups under the prefix, no default bridge.
    (base / "daemon.json").write_text(json.dumps(
        {"cgroup-parent": f"/{PREFIX}/as-{base.name[-6:]}", "bridge": "none",
         "registry-endpoints": NO_DOCKER_HUB}))
    yield p
    from ketch.daemon.reset import reset

    reset(p.root, p.exec_root, pidfile=p.pidfile,
          cgroup_parent=f"/{PREFIX}/as-{base.name[-6:]}")
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        d = hierarchy / p.cgroup
        if d.is_dir():
            remove_cgroup_tree(d)
    shutil.rmtree(base, ignore_errors=True)


def _env(p: Place) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KETCH_HOST", "DOCKER_HOST")}
    env.update(KETCH_ROOT=p.root, KETCH_EXEC_ROOT=p.exec_root, KETCH_DAEMON_CGROUP=p.cgroup,
               KETCH_CONFIG_FILE=str(Path(p.root).parent / "daemon.json"))
    return env


def test_two_clis_start_one_detached_daemon(place: Place) -> None:
    r, w = os.pipe()
    try:
        # Both CLIs get `w`; a daemon that kept it would keep the pipe open.
        procs = [subprocess.Popen([str(BIN / "ketch"), "version"], env=_env(place),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, pass_fds=(w,))
                 for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        os.close(w)
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert b"Server: ketch" in out
    started = [err.decode() for _, err in outs if b"Started ketchd" in err]
    assert len(started) == 1, outs
    pid = int(Path(place.pidfile).read_text().strip())
    assert f"Started ketchd (pid {pid}); its log is {place.log}" in started[0]
    assert _alive(pid)

    os.set_blocking(r, False)
    try:
        assert os.read(r, 1) == b""  # EOF: nobody holds the write end any more
    finally:
        os.close(r)

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(") ", 1)[1].split()
    assert int(fields[3]) == pid, "ketchd leads its own session"
    cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    assert f"/{place.cgroup}\n" in cgroups
    ours = parse_limits(Path("/proc/1/limits").read_text())
    theirs = parse_limits(Path(f"/proc/{pid}/limits").read_text())
    # pid 1's limits, lowered only where this sandbox's hard limit forbids them.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for res in (resource.RLIMIT_NOFILE, resource.RLIMIT_CORE, resource.RLIMIT_STACK):
        want = ours[res]
        assert theirs[res] in (want, clamp(want, resource.getrlimit(res)[1])), res
    assert theirs[resource.RLIMIT_NOFILE][1] <= hard
    assert os.path.getsize(place.log) > 0

    # A third CLI finds the running daemon and starts nothing.
    out = subprocess.run([str(BIN / "ketch"), "info"], env=_env(place), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Started ketchd" not in out.stderr
    assert f" Root Dir: {place.root}" in out.stdout


def test_a_daemon_that_cannot_start_is_reported(place: Place) -> None:
    os.makedirs(place.root, exist_ok=True)
    # A daemon.json ketchd refuses: its own error must reach the user.
    env = _env(place)
    Path(place.root, "bad.json").write_text('{"no-such-option": 1}')
    from ketch.cli.autostart import daemon_argv, start

    argv = [*daemon_argv(place), "--config-file", str(Path(place.root, "bad.json"))]
    with pytest.raises(Exception) as info:
        start(place, lambda: False, argv=argv, timeout=20)
    assert "could not start ketchd" in str(info.value)
    assert "no-such-option" in str(info.value)
    assert env  # the environment is not needed when calling start() directly
