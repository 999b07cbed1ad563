"""A host reboot under ketchd, judged against what Debian's dockerd 20.10 does.

The reboot is simulated on a private ketchd: SIGKILL ketchd, then
``ketch.daemon.reset`` kills the supervisor and every container and removes
the network, mounts and cgroups (what a reboot clears), the exec root goes
(a tmpfs), and ketchd starts again on the same root.

What dockerd 20.10 did in the same scenario (its own data root, exec root and
containerd; dockerd, containerd, shims and containers SIGKILLed, mounts,
exec root and containerd's state removed, dockerd started again):

- a container that was running (or paused) when the host went down ends
  "exited" with ExitCode 255, Error "", FinishedAt = when dockerd restored it
  on boot, StartedAt kept; no "die" event;
- then ``always`` (even one that was stopped with ``docker stop``),
  ``unless-stopped`` (unless stopped or killed by the user) and ``on-failure``
  (255 is a failure, so while retries are left) start again: ExitCode 0,
  RestartCount unchanged, one "start" event each and nothing else;
- ``no``, a container that had already exited, one that exhausted its
  ``on-failure:N`` retries, and one never started stay as they were;
- ``docker logs`` of a restarted container shows the output of both runs.

The daemon is module-scoped (one reboot, several tests reading it); its
finalizer removes whatever is left, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import PREFIX
from tests.integration.engines import cgroup_dirs, cgroup_pids, cgroup_tree, mounts_under
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (
    DOCKER,
    Ketchd,
    cgroup_parent_of,
    docker,
    stop_supervisor,
    write_private_config,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

NONE = ("--network", "none")
SLEEP = "exec sleep 1000"

# name -> docker run options; every container prints "before-<name>" first.
RUNNING = {
    "always": ("--restart", "always"),          # on the default bridge: its network comes back
    "unless": ("--restart", "unless-stopped", *NONE),
    "onfail": ("--restart", "on-failure", *NONE),
    "no": ("--restart", "no", *NONE),
    "paused": ("--restart", "always", *NONE),   # paused when the host goes down
}
STOPPED = {
    "unless_stopped": ("--restart", "unless-stopped", *NONE),  # docker stop
    "always_stopped": ("--restart", "always", *NONE),          # docker stop
    "unless_killed": ("--restart", "unless-stopped", *NONE),   # docker kill
}
# dockerd starts these again on boot (and only these).
RESTARTED = {"always", "unless", "onfail", "paused", "always_stopped"}
# Running when the host went down: their exit is recorded on boot.
DIED_IN_REBOOT = set(RUNNING)


@dataclass
class Rebooted:
    k: Ketchd
    ids: dict[str, str]
    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]] = field(default_factory=dict)
    rebooted_at: str = ""          # RFC 3339, after the kill, before ketchd starts again
    since: int = 0                 # for docker events --since
    mounts: list[str] = field(default_factory=list)   # at ketchd's start, before containers
    first_ps: set[str] = field(default_factory=set)   # running as soon as the API answers


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def inspect(k: Ketchd, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(docker(k, "inspect", name)))[0]
    return doc


def wait_for(pred: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def rfc3339_now() -> str:
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def later(a: str, b: str) -> bool:
    """a >= b for dockerd's RFC 3339 UTC times (nanoseconds trimmed of trailing zeros)."""
    def key(s: str) -> tuple[str, str]:
        main, _, frac = s.rstrip("Z").partition(".")
        return main, frac.ljust(9, "0")
    return key(a) >= key(b)


def start_daemon(k: Ketchd) -> None:
    with open(k.dir / "ketchd.log", "ab") as log:
        k.proc = subprocess.Popen(k.args(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    if not wait_for(lambda: k.proc.poll() is not None or docker(k, "version").returncode == 0,
                    30) or k.proc.poll() is not None:
        raise AssertionError(f"ketchd did not come up:\n{k.log()[-4000:]}")


def reboot(k: Ketchd) -> None:
    """What a reboot does to ketchd and its containers (see the module doc)."""
    from ketch.daemon.reset import reset

    os.kill(k.proc.pid, signal.SIGKILL)
    k.proc.wait(10)
    # /run in a real boot; and the dead daemon's pid may belong to another process now.
    k.pidfile.unlink(missing_ok=True)
    rep = reset(str(k.root), str(k.dir / "exec"), pidfile=str(k.pidfile),
                cgroup_parent=cgroup_parent_of(k), remove_dirs=False)
    assert not rep.errors, rep.errors
    shutil.rmtree(k.dir / "exec")
    assert cgroup_pids(cgroup_parent_of(k)) == []
    assert mounts_under(k.dir) == []


def wait_settled(r: Rebooted) -> None:
    """dockerd restarts before it serves the API; ketchd may do it just after. Wait
    until the ones dockerd restarts run (not failing here: the tests say what is
    wrong), then a moment more, so a late restart of another would be seen too."""
    def running() -> set[str]:
        out = docker(r.k, "ps", "--format", "{{.Names}}")
        return set(out.stdout.split()) if out.returncode == 0 else set()
    wait_for(lambda: running() >= RESTARTED, 15)
    time.sleep(1.5)


@pytest.fixture(scope="module")
def rebooted(busybox_archive: Path) -> Iterator[Rebooted]:  # noqa: F811
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-d", dir="/tmp"))
    k = Ketchd(d, None)  # type: ignore[arg-type]
    try:
        write_private_config(k)
        start_daemon(k)
        ok(docker(k, "load", "-i", str(busybox_archive)))
        r = Rebooted(k, {}, {}, mounts=mounts_under(k.dir))
        for name, opts in {**RUNNING, **STOPPED}.items():
            r.ids[name] = ok(docker(k, "run", "-d", "--name", name, *opts, "busybox", "sh",
                                    "-c", f"echo before-{name}; {SLEEP}")).strip()
        for name, opts in {"exited3": ("--restart", "no"),
                           "onfail_max": ("--restart", "on-failure:1")}.items():
            r.ids[name] = ok(docker(k, "run", "-d", "--name", name, *opts, *NONE, "busybox",
                                    "sh", "-c", f"echo before-{name}; exit 3")).strip()
        r.ids["created"] = ok(docker(k, "create", "--name", "created", "--restart", "always",
                                     *NONE, "busybox", "sleep", "1000")).strip()
        ok(docker(k, "stop", "-t", "1", "unless_stopped", "always_stopped"))
        ok(docker(k, "kill", "unless_killed"))
        ok(docker(k, "pause", "paused"))
        # The logs hold the first run's line, and on-failure:1 used its one retry.
        assert wait_for(lambda: inspect(k, "onfail_max")["RestartCount"] == 1
                        and inspect(k, "onfail_max")["State"]["Status"] == "exited")
        assert wait_for(lambda: all(
            ok(docker(k, "logs", n)) == f"before-{n}\n" for n in {*RUNNING, *STOPPED}))
        r.before = {n: inspect(k, n) for n in r.ids}
        reboot(k)
        r.rebooted_at = rfc3339_now()
        r.since = int(time.time())
        start_daemon(k)
        r.first_ps = set(ok(docker(k, "ps", "--format", "{{.Names}}")).split())
        wait_settled(r)
        r.after = {n: inspect(k, n) for n in r.ids}
        yield r
    finally:
        if k.proc is not None:
            k.stop()
        stop_supervisor(k)
        shutil.rmtree(d, ignore_errors=True)


def state(r: Rebooted, name: str) -> dict[str, Any]:
    st: dict[str, Any] = r.after[name]["State"]
    return st


def test_running_ones_are_started_again_by_policy(rebooted: Rebooted) -> None:
    r = rebooted
    for name in sorted(RESTARTED - {"onfail"}):
        st, old = state(r, name), r.before[name]["State"]
        assert (name, st["Status"], st["Running"], st["ExitCode"], st["Error"]) == \
            (name, "running", True, 0, ""), r.k.log()[-3000:]
        assert st["Pid"] not in (0, old["Pid"])
        assert later(st["StartedAt"], r.rebooted_at), (name, st)
        assert r.after[name]["RestartCount"] == r.before[name]["RestartCount"] == 0
        if name in DIED_IN_REBOOT:       # its exit was recorded on boot
            assert later(st["FinishedAt"], r.rebooted_at), (name, st)
        else:                            # stopped before: that stop's time stays
            assert st["FinishedAt"] == old["FinishedAt"], (name, st, old)


def test_restarted_before_the_api_answers(rebooted: Rebooted) -> None:
    """dockerd loads and restarts containers, then listens: the first ps sees them."""
    assert rebooted.first_ps == RESTARTED


# dockerd's restore asks the restart manager, as for an exit (on-failure: exit code
# != 0 and retries left), of containers started before; never-started ones stay.
def test_on_failure_is_started_again(rebooted: Rebooted) -> None:
    """255 (the host went down) is a failure: dockerd restarts on-failure ones on boot."""
    r = rebooted
    st = state(r, "onfail")
    assert (st["Status"], st["ExitCode"], st["Error"]) == ("running", 0, ""), st
    assert later(st["StartedAt"], r.rebooted_at) and later(st["FinishedAt"], r.rebooted_at)
    assert r.after["onfail"]["RestartCount"] == 0
    assert "start onfail" in boot_events(r)
    assert docker(r.k, "logs", "onfail").stdout == "before-onfail\n" * 2


def test_never_started_stays_created(rebooted: Rebooted) -> None:
    """dockerd restarts only containers that were started before, whatever the policy."""
    r = rebooted
    st = state(r, "created")
    assert (st["Status"], st["StartedAt"]) == ("created", "0001-01-01T00:00:00Z"), st
    assert "start created" not in boot_events(r)


def test_the_others_stay_as_dockerd_leaves_them(rebooted: Rebooted) -> None:
    r = rebooted
    # Running with --restart no when the host went down: 255, no error, ended at boot.
    st, old = state(r, "no"), r.before["no"]["State"]
    assert (st["Status"], st["Running"], st["Pid"], st["ExitCode"], st["Error"]) == \
        ("exited", False, 0, 255, "")
    assert st["StartedAt"] == old["StartedAt"]
    assert later(st["FinishedAt"], r.rebooted_at)
    # Exited before the reboot: untouched.
    for name, code in (("unless_stopped", 137), ("unless_killed", 137), ("exited3", 3),
                       ("onfail_max", 3)):
        st, old = state(r, name), r.before[name]["State"]
        assert (name, st["Status"], st["ExitCode"], st["Error"]) == (name, "exited", code, "")
        assert (st["StartedAt"], st["FinishedAt"]) == (old["StartedAt"], old["FinishedAt"])
        assert r.after[name]["RestartCount"] == r.before[name]["RestartCount"]
    assert r.after["onfail_max"]["RestartCount"] == 1


def boot_events(r: Rebooted) -> list[str]:
    """The container events since the reboot, as "<action> <name>"."""
    out = ok(docker(r.k, "events", "--since", str(r.since - 1), "--until",
                    str(int(time.time()) + 1), "--filter", "type=container",
                    "--format", "{{.Action}} {{.Actor.Attributes.name}}"))
    return out.splitlines()


def test_boot_events_are_the_starts(rebooted: Rebooted) -> None:
    """One start each, nothing else (no die for what the reboot ended); on-failure
    and the never-started one are judged by their own tests above."""
    lines = boot_events(rebooted)
    assert sorted(x for x in lines if x not in ("start onfail", "start created")) == \
        sorted(f"start {n}" for n in RESTARTED - {"onfail"}), lines


def test_logs_keep_the_first_run(rebooted: Rebooted) -> None:
    r = rebooted
    for name in [n for n in [*RUNNING, *STOPPED, "exited3"] if n != "onfail"]:
        runs = 2 if name in RESTARTED else 1
        assert wait_for(lambda n=name, c=runs: docker(r.k, "logs", n).stdout  # type: ignore
                        == f"before-{n}\n" * c, 5), (name, docker(r.k, "logs", name))
    out = docker(r.k, "logs", "onfail_max")
    assert out.stdout == "before-onfail_max\n" * 2


def test_default_bridge_is_back(rebooted: Rebooted) -> None:
    r = rebooted
    doc = inspect(r.k, "always")
    ip = doc["NetworkSettings"]["IPAddress"]
    assert ip and doc["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ip
    assert f"inet {ip}/" in ok(docker(r.k, "exec", "always", "ip", "-4", "addr", "show", "eth0"))
    assert inspect(r.k, "no")["NetworkSettings"]["IPAddress"] == ""


def test_rm_f_removes_everything(rebooted: Rebooted) -> None:
    r = rebooted
    k = r.k
    ok(docker(k, "rm", "-f", *r.ids))
    assert ok(docker(k, "ps", "-aq")) == ""
    assert mounts_under(k.dir) == r.mounts
    assert cgroup_pids(cgroup_parent_of(k)) == []
    # The parent itself stays (as dockerd's); nothing below it.
    assert sorted(cgroup_tree(cgroup_parent_of(k))) == sorted(cgroup_dirs(cgroup_parent_of(k)))
    assert sorted(os.listdir(k.root / "containers")) == []
    assert sorted(os.listdir(k.dir / "exec" / "containers")) == []
    bridge = json.loads(k.config.read_text())["bridge"]
    brif = Path("/sys/class/net") / bridge / "brif"
    assert not brif.exists() or os.listdir(brif) == []
