"""Real engines with ketch-runc as their OCI runtime: dockerd 20.10 and podman 4.3.

Every test runs twice, with ``runc`` (the reference: if it fails there, the
harness is wrong) and with ``ketch`` (ketch-runc).  The engines are private:
own data and exec roots, socket, storage, network config, locks, and a cgroup
parent under the session prefix; dockerd runs without bridge or iptables and
every container with ``--network none``, so the host's network is not touched.
Teardown removes containers, stops the daemon and its containerd and shims by
pid, unmounts, removes cgroups and directories, and fails if anything is left.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from tests.conftest import BIN
from tests.integration.engines import (
    IMAGE_PATH,
    Dockerd,
    Podman,
    alive,
    cgroup_tree,
    engine_interfaces,
    mounts_under,
    pids_mentioning,
    run_in_pty,
    write_image_tar,
)

pytestmark = pytest.mark.root

KETCH_RUNC = str(BIN / "ketch-runc")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
RUNTIMES = ["runc", "ketch"]
# The loop a detached test container runs: SIGTERM ends it with status 7, so a
# stop that ends in 7 (not 137 after the timeout) proves the signal went through.
LOOP = ["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]


def _base(prefix: str, what: str) -> Path:
    # Short (unix socket paths under it must stay below 108 bytes) and holding
    # the session prefix, so the session's mount leak check covers it.
    return Path(tempfile.gettempdir()) / f"{prefix}-{what}"


@pytest.fixture(scope="module")
def image_tar(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_image_tar(busybox_rootfs, tmp_path_factory.mktemp("image") / "busybox.tar")
    return path.read_bytes()


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    if request.param == "ketch" and not os.access(KETCH_RUNC, os.X_OK):
        pytest.skip(f"{KETCH_RUNC} is not installed")
    if request.param == "runc" and not shutil.which("runc"):
        pytest.skip("runc is not installed")
    return request.param


# ====================================================================== dockerd

@pytest.fixture(scope="module")
def dockerd(prefix: str, image_tar: bytes):
    if not shutil.which("dockerd") or not shutil.which("docker"):
        pytest.skip("dockerd or the docker CLI is not installed")
    ifaces = engine_interfaces()
    d = Dockerd(_base(prefix, "dockerd"), f"/{prefix}/dockerd",
                runtimes={"ketch": KETCH_RUNC},
                docker=shutil.which("docker") or "docker",
                logged={"runc-argv": RUNC, "ketch-argv": KETCH_RUNC})
    try:
        d.start()
        d.ok("import", "--change", f"ENV PATH={IMAGE_PATH}", "-", "busybox:latest",
             input=image_tar, timeout=120)
        yield d
    finally:
        problems = d.stop()
        new = engine_interfaces() - ifaces
        if new:
            problems.append(f"interfaces left: {sorted(new)}")
        if mounts_under(d.base):
            problems.append(f"mounts left: {mounts_under(d.base)}")
        assert not problems, "dockerd teardown:\n" + "\n".join(problems)


def drun(d: Dockerd, runtime: str, *cmd: str, opts: tuple[str, ...] = (), **kw):
    return d.cli("run", "--rm", "--runtime", runtime, "--network", "none", *opts,
                 "busybox", *cmd, **kw)


def inspect(d: Dockerd, cid: str) -> dict:
    return json.loads(d.ok("inspect", cid).stdout)[0]


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def detached(dockerd: Dockerd, runtime: str):
    """A running ``docker run -d`` container; removed afterwards whatever happened."""
    ids: list[str] = []

    def start(*opts: str, cmd=LOOP) -> str:
        res = dockerd.ok("run", "-d", "--runtime", runtime, "--network", "none", *opts,
                         "busybox", *cmd)
        ids.append(res.stdout.strip())
        return ids[-1]

    yield start
    if ids:
        dockerd.cli("unpause", *ids)
        dockerd.cli("rm", "-f", *ids, timeout=120)


RUNC_COMMANDS = {"checkpoint", "create", "delete", "events", "exec", "kill", "list", "pause",
                 "ps", "restore", "resume", "run", "spec", "start", "state", "update",
                 "features"}


def subcommand(argv: list[str]) -> str:
    return next((a for a in argv if a in RUNC_COMMANDS), "?")


def freezer_state(d: Dockerd, cid: str) -> str | None:
    for p in (Path("/sys/fs/cgroup/freezer") / d.cgroup_parent.strip("/") / cid / "freezer.state",
              Path("/sys/fs/cgroup/unified") / d.cgroup_parent.strip("/") / cid / "cgroup.freeze",
              Path("/sys/fs/cgroup") / d.cgroup_parent.strip("/") / cid / "cgroup.freeze"):
        if p.exists():
            return p.read_text().strip()
    return None


def test_docker_run_echo(dockerd, runtime):
    res = drun(dockerd, runtime, "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), str(res)


def test_docker_exit_code_propagates(dockerd, runtime):
    res = drun(dockerd, runtime, "sh", "-c", "exit 3")
    assert res.returncode == 3, str(res)
    res = drun(dockerd, runtime, "sh", "-c", "exit 255")
    assert res.returncode == 255, str(res)


def test_docker_exec(dockerd, runtime, detached):
    cid = detached()
    res = dockerd.ok("exec", cid, "echo", "exec-ok")
    assert res.stdout == "exec-ok\n"
    res = dockerd.cli("exec", cid, "sh", "-c", "exit 4")
    assert res.returncode == 4, str(res)
    res = dockerd.ok("exec", "-u", "1000", "-w", "/tmp", "-e", "X=y", cid,
                     "sh", "-c", "id -u; pwd; echo $X")
    assert res.stdout == "1000\n/tmp\ny\n", str(res)
    res = dockerd.ok("exec", "-i", cid, "cat", input=b"piped\n")
    assert res.stdout == "piped\n", str(res)
    # The exec'ed process shares the container's pid namespace.
    res = dockerd.ok("exec", cid, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '")
    assert res.stdout.startswith("sh -c trap"), str(res)


def test_docker_top_and_ps(dockerd, runtime, detached):
    cid = detached()
    res = dockerd.ok("ps", "--no-trunc", "--filter", f"id={cid}", "--format", "{{.Status}}")
    assert res.stdout.startswith("Up"), str(res)
    st = inspect(dockerd, cid)["State"]
    assert st["Running"] and st["Status"] == "running", st
    assert alive(st["Pid"])
    res = dockerd.ok("top", cid)                     # the runtime's `ps --format json`
    assert "trap 'exit 7' TERM" in res.stdout or "sleep" in res.stdout, str(res)
    assert str(st["Pid"]) in res.stdout, str(res)
    res = dockerd.ok("stats", "--no-stream", "--format", "{{.PIDs}}", cid)  # the shim's cgroup
    assert int(res.stdout) >= 1, str(res)


def test_docker_pause_unpause(dockerd, runtime, detached):
    cid = detached()
    dockerd.ok("pause", cid)
    assert inspect(dockerd, cid)["State"]["Paused"] is True
    res = dockerd.ok("ps", "--filter", f"id={cid}", "--format", "{{.Status}}")
    assert "(Paused)" in res.stdout, str(res)
    assert freezer_state(dockerd, cid) in ("FROZEN", "1"), freezer_state(dockerd, cid)
    dockerd.ok("unpause", cid)
    assert inspect(dockerd, cid)["State"]["Paused"] is False
    assert freezer_state(dockerd, cid) in ("THAWED", "0"), freezer_state(dockerd, cid)
    assert dockerd.ok("exec", cid, "echo", "alive").stdout == "alive\n"


def test_docker_stop_and_rm(dockerd, runtime, detached):
    cid = detached()
    pid = inspect(dockerd, cid)["State"]["Pid"]
    dockerd.ok("stop", "-t", "20", cid)
    st = inspect(dockerd, cid)["State"]
    assert (st["Running"], st["ExitCode"]) == (False, 7), st   # SIGTERM reached the trap
    assert not alive(pid)
    dockerd.ok("rm", cid)
    assert dockerd.cli("inspect", cid).returncode != 0
    assert not [p for p in cgroup_tree(dockerd.cgroup_parent) if p.name == cid]
    assert not dockerd.bundle_dir(cid).exists()


def test_docker_paused_container_stop_kill_rm(dockerd, runtime, detached):
    """The runtime must thaw a frozen container to signal or delete it."""
    cid = detached()
    dockerd.ok("pause", cid)
    res = dockerd.cli("exec", cid, "true")
    assert res.returncode != 0 and "is paused" in res.stderr, str(res)
    dockerd.ok("stop", "-t", "20", cid)
    st = inspect(dockerd, cid)["State"]
    assert (st["Status"], st["ExitCode"], st["Paused"]) == ("exited", 7, False), st
    cid = detached()
    dockerd.ok("pause", cid)
    dockerd.ok("kill", cid)
    wait_for(lambda: not inspect(dockerd, cid)["State"]["Running"], what="exit on KILL")
    assert inspect(dockerd, cid)["State"]["ExitCode"] == 137
    cid = detached()
    dockerd.ok("pause", cid)
    pid = inspect(dockerd, cid)["State"]["Pid"]
    dockerd.ok("rm", "-f", cid)                      # runtime `delete --force` on FROZEN
    assert not alive(pid)
    assert not [p for p in cgroup_tree(dockerd.cgroup_parent) if p.name == cid]


def test_docker_parallel_execs(dockerd, runtime, detached):
    import subprocess

    cid = detached()
    procs = [subprocess.Popen([dockerd.docker_bin, "exec", cid, "sh", "-c", f"echo {i}"],
                              env=dockerd.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(8)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outs
    assert sorted(int(o) for o, _ in outs) == list(range(8)), outs
    # A process left by `exec -d` dies with the container.
    dockerd.ok("exec", "-d", cid, "sleep", "4321")
    pid = inspect(dockerd, cid)["State"]["Pid"]
    dockerd.ok("stop", "-t", "20", cid)
    assert inspect(dockerd, cid)["State"]["ExitCode"] == 7
    assert not alive(pid)
    assert not pids_mentioning("sleep 4321")


def test_docker_kill_signal_and_restart(dockerd, runtime, detached):
    cid = detached(cmd=["sh", "-c", "trap 'exit 9' USR1; while :; do sleep 0.1; done"])
    dockerd.ok("kill", "-s", "USR1", cid)
    wait_for(lambda: not inspect(dockerd, cid)["State"]["Running"], what="exit on USR1")
    assert inspect(dockerd, cid)["State"]["ExitCode"] == 9
    dockerd.ok("start", cid)                         # delete + create + start again
    assert inspect(dockerd, cid)["State"]["Running"]
    dockerd.ok("restart", "-t", "1", cid)
    assert inspect(dockerd, cid)["State"]["Running"]
    assert dockerd.ok("exec", cid, "echo", "back").stdout == "back\n"
    dockerd.ok("kill", cid)                          # SIGKILL from outside: 128 + 9
    wait_for(lambda: not inspect(dockerd, cid)["State"]["Running"], what="exit on KILL")
    assert inspect(dockerd, cid)["State"]["ExitCode"] == 137


def test_docker_stdin_piped(dockerd, runtime):
    res = drun(dockerd, runtime, "cat", opts=("-i",), input=b"hi\n")
    assert (res.returncode, res.stdout) == (0, "hi\n"), str(res)


def test_docker_tty(dockerd, runtime):
    rc, out = run_in_pty([dockerd.docker_bin, "run", "--rm", "-t", "--runtime", runtime,
                          "--network", "none", "busybox", "sh", "-c",
                          "tty; test -t 0 && test -t 1 && echo isatty; exit 6"],
                         dockerd.env)
    text = out.decode(errors="replace")
    assert rc == 6, text
    assert "/dev/pts/0" in text and "isatty" in text, text
    assert "\r\n" in text                            # a terminal's output processing


def test_docker_tty_interactive(dockerd, runtime):
    name = f"it-{runtime}-{os.getpid()}"

    def running() -> bool:
        res = dockerd.cli("inspect", "-f", "{{.State.Running}}", name)
        return res.stdout.strip() == "true"

    try:
        rc, out = run_in_pty([dockerd.docker_bin, "run", "--rm", "-it", "--name", name,
                              "--runtime", runtime, "--network", "none", "busybox",
                              "sh", "-c", "read x; echo got:$x; exit 5"],
                             dockerd.env, input=b"hello\r", before_input=running)
    finally:
        dockerd.cli("rm", "-f", name)
    text = out.decode(errors="replace")
    assert "got:hello" in text, text
    assert rc == 5, text


def test_docker_memory_limit(dockerd, runtime):
    res = drun(dockerd, runtime, "sh", "-c",
               "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
               " || cat /sys/fs/cgroup/memory.max", opts=("--memory", "32m"))
    assert (res.returncode, res.stdout) == (0, "33554432\n"), str(res)


def test_docker_update_memory(dockerd, runtime, detached):
    cid = detached("--memory", "32m")
    dockerd.ok("update", "--memory", "64m", "--memory-swap", "64m", cid)  # runtime `update`
    res = dockerd.ok("exec", cid, "sh", "-c",
                     "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                     " || cat /sys/fs/cgroup/memory.max")
    assert res.stdout == "67108864\n", str(res)


def test_docker_default_seccomp(dockerd, runtime):
    res = drun(dockerd, runtime, "sh", "-c", "cat /proc/self/status")
    assert res.returncode == 0, str(res)
    assert "Seccomp:\t2" in res.stdout, str(res)     # docker's default profile, filter mode
    # A syscall docker's profile refuses (EPERM): unshare of a user namespace.
    res = drun(dockerd, runtime, "unshare", "-U", "true")
    assert res.returncode != 0, str(res)


def test_docker_read_only(dockerd, runtime):
    res = drun(dockerd, runtime, "sh", "-c", "touch /x; echo rc=$?; grep ' / ' /proc/mounts",
               opts=("--read-only",))
    assert res.returncode == 0, str(res)
    assert "Read-only file system" in res.stderr + res.stdout, str(res)
    assert "rc=1" in res.stdout and " ro," in res.stdout, str(res)


def test_docker_user(dockerd, runtime):
    res = drun(dockerd, runtime, "id", opts=("--user", "1000"))
    assert (res.returncode, res.stdout) == (0, "uid=1000 gid=0(root) groups=0(root)\n"), str(res)
    res = drun(dockerd, runtime, "sh", "-c", "id -u; id -g", opts=("--user", "1000:1000"))
    assert res.stdout == "1000\n1000\n", str(res)


def test_docker_hostname(dockerd, runtime):
    res = drun(dockerd, runtime, "sh", "-c", "hostname; cat /etc/hostname", opts=("-h", "foo"))
    assert (res.returncode, res.stdout) == (0, "foo\nfoo\n"), str(res)


def test_docker_proc_readonly_paths_keep_nosuid_nodev_noexec(dockerd, runtime, request):
    """readonlyPaths are remounted ro keeping the flags /proc has, as runc does."""
    res = drun(dockerd, runtime, "cat", "/proc/self/mountinfo")
    assert res.returncode == 0, str(res)
    opts = {f[4]: set(f[5].split(",")) for f in (line.split() for line in res.stdout.splitlines())}
    for path in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"):
        assert path in opts, res.stdout
        assert {"ro", "nosuid", "nodev", "noexec"} <= opts[path], (path, opts[path])


TUN_AND_CONSOLE = ("mknod /tmp/tun c 10 200 && (exec 3<>/tmp/tun) && echo tun-opened;"
                   " mknod /tmp/console c 5 1 && (exec 3</tmp/console) && echo console-opened;"
                   " true")


def test_docker_dev_net_tun_allowed(dockerd, runtime, request):
    """runc (since 1.1.3) appends `c 10:200 rwm` (/dev/net/tun) to every container's
    device rules; docker's spec does not list it, images that mknod it rely on it."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun on this host")
    res = drun(dockerd, runtime, "sh", "-c", TUN_AND_CONSOLE)
    assert res.returncode == 0, str(res)
    assert "tun-opened" in res.stdout, str(res)
    assert "console-opened" in res.stdout, str(res)      # docker's spec allows c 5:1


def test_docker_runtime_argv(dockerd, runtime, capsys):
    """What dockerd/containerd actually pass to the runtime, recorded by a wrapper."""
    name = f"{runtime}-argv"
    res = dockerd.ok("run", "-d", "--runtime", name, "--network", "none", "busybox", *LOOP)
    cid = res.stdout.strip()
    try:
        dockerd.ok("exec", cid, "true")
        dockerd.ok("top", cid)
        dockerd.ok("pause", cid)
        dockerd.ok("unpause", cid)
        dockerd.ok("update", "--memory", "64m", "--memory-swap", "64m", cid)
        dockerd.ok("stop", "-t", "20", cid)
    finally:
        dockerd.cli("rm", "-f", cid)
    rc, out = run_in_pty([dockerd.docker_bin, "run", "--rm", "-t", "--runtime", name,
                          "--network", "none", "busybox", "true"], dockerd.env)
    assert rc == 0, out
    calls = dockerd.argv_calls(name)
    exec_root = str(dockerd.exec_root)
    shown = []
    for argv in calls:
        line = " ".join(argv).replace(exec_root, "$EXEC_ROOT")
        line = line.replace(cid, "$ID")
        shown.append(line)
    with capsys.disabled():
        print(f"\n--- argv dockerd/containerd passed to {name}:")
        print("\n".join(shown))
    subcommands = {subcommand(a) for a in calls}
    assert {"create", "start", "exec", "ps", "pause", "resume", "update", "kill",
            "delete"} <= subcommands, shown
    for argv in calls:
        assert argv[:2] == ["--root", f"{exec_root}/runtime-runc/moby"], argv
        assert argv[2] == "--log" and argv[3].endswith("/log.json"), argv
        assert argv[4:6] == ["--log-format", "json"], argv
    assert any("--console-socket" in a for a in calls), shown


# ======================================================================= podman

PODMAN_RUNTIME = {"runc": RUNC, "ketch": KETCH_RUNC}


@pytest.fixture(scope="module")
def podman(prefix: str, image_tar: bytes):
    if not shutil.which("podman") or not shutil.which("conmon"):
        pytest.skip("podman or conmon is not installed")
    ifaces = engine_interfaces()
    p = Podman(_base(prefix, "podman"), f"/{prefix}/podman")
    runtimes = [RUNC, KETCH_RUNC]
    try:
        p.start()
        runtimes += [p.logged_runtime(RUNC), p.logged_runtime(KETCH_RUNC)]
        res = p.cli(None, "import", "--change", f"ENV PATH={IMAGE_PATH}", "-", "busybox:latest",
                    input=image_tar, timeout=120)
        assert res.returncode == 0, str(res)
        yield p
    finally:
        problems = p.stop(runtimes)
        new = engine_interfaces() - ifaces
        if new:
            problems.append(f"interfaces left: {sorted(new)}")
        assert not problems, "podman teardown:\n" + "\n".join(problems)


def prun(p: Podman, runtime: str, *cmd: str, opts: tuple[str, ...] = (), **kw):
    return p.cli(PODMAN_RUNTIME[runtime], "run", "--rm", *p.run_args(), *opts,
                 "busybox", *cmd, **kw)


def test_podman_run_echo(podman, runtime):
    res = prun(podman, runtime, "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), str(res)


def test_podman_exit_code_propagates(podman, runtime):
    res = prun(podman, runtime, "sh", "-c", "exit 3")
    assert res.returncode == 3, str(res)


def test_podman_stdin_and_seccomp(podman, runtime):
    res = prun(podman, runtime, "cat", opts=("-i",), input=b"hi\n")
    assert (res.returncode, res.stdout) == (0, "hi\n"), str(res)
    res = prun(podman, runtime, "sh", "-c", "grep Seccomp: /proc/self/status")
    assert res.stdout == "Seccomp:\t2\n", str(res)


def test_podman_tty(podman, runtime):
    rc, out = run_in_pty([podman.bin, *podman.global_args(PODMAN_RUNTIME[runtime]), "run",
                          "--rm", "-t", *podman.run_args(), "busybox", "sh", "-c",
                          "tty; test -t 0 && test -t 1 && echo isatty; exit 6"], podman.env)
    text = out.decode(errors="replace")
    assert rc == 6, text
    assert "/dev/pts/0" in text and "isatty" in text, text


def test_podman_detached_exec_stop_rm(podman, runtime):
    rt = PODMAN_RUNTIME[runtime]
    res = podman.cli(rt, "run", "-d", *podman.run_args(), "busybox", *LOOP)
    assert res.returncode == 0, str(res)
    cid = res.stdout.strip()
    try:
        res = podman.cli(rt, "exec", cid, "echo", "exec-ok")
        assert (res.returncode, res.stdout) == (0, "exec-ok\n"), str(res)
        res = podman.cli(rt, "exec", cid, "sh", "-c", "exit 4")
        assert res.returncode == 4, str(res)
        res = podman.cli(rt, "ps", "--filter", f"id={cid}", "--format", "{{.Status}}")
        assert res.stdout.startswith("Up"), str(res)
        res = podman.cli(rt, "pause", cid)
        assert res.returncode == 0, str(res)
        res = podman.cli(rt, "inspect", "-f", "{{.State.Status}}", cid)
        assert res.stdout.strip() == "paused", str(res)
        res = podman.cli(rt, "unpause", cid)
        assert res.returncode == 0, str(res)
        res = podman.cli(rt, "stop", "-t", "20", cid)
        assert res.returncode == 0, str(res)
        res = podman.cli(rt, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid)
        assert res.stdout.strip() == "exited 7", str(res)      # SIGTERM reached the trap
        res = podman.cli(rt, "rm", cid)
        assert res.returncode == 0, str(res)
        assert podman.cli(rt, "inspect", cid).returncode != 0
    finally:
        podman.cli(rt, "rm", "-f", "-t", "0", cid)
    assert not [p for p in cgroup_tree(podman.cgroup_parent) if cid in p.name]


def test_podman_runtime_argv(podman, runtime, capsys):
    """What podman/conmon actually pass to the runtime, recorded by a wrapper."""
    rt = podman.logged_runtime(PODMAN_RUNTIME[runtime])
    res = podman.cli(rt, "run", "--rm", *podman.run_args(), "busybox", "true")
    assert res.returncode == 0, str(res)
    res = podman.cli(rt, "run", "-d", *podman.run_args(), "busybox", *LOOP)
    assert res.returncode == 0, str(res)
    cid = res.stdout.strip()
    try:
        for args in (("exec", cid, "true"), ("pause", cid), ("unpause", cid),
                     ("stop", "-t", "20", cid), ("rm", cid)):
            res = podman.cli(rt, *args)
            assert res.returncode == 0, str(res)
    finally:
        podman.cli(rt, "rm", "-f", "-t", "0", cid)
    calls = podman.argv_calls(PODMAN_RUNTIME[runtime])
    shown = [" ".join(a).replace(str(podman.base), "$BASE").replace(cid, "$ID") for a in calls]
    with capsys.disabled():
        print(f"\n--- argv podman/conmon passed to {Path(rt).name}:")
        print("\n".join(shown))
    subcommands = {subcommand(a) for a in calls}
    assert {"create", "start", "exec", "pause", "resume", "kill", "delete"} <= subcommands, shown


def test_docker_exec_errors_map_to_126_127(dockerd, runtime):
    """dockerd maps the runtime's error text to 127 (not found) and 126 (not executable)."""
    res = drun(dockerd, runtime, "/nonexistent")
    assert res.returncode == 127, str(res)
    res = drun(dockerd, runtime, "nonexistent-command")
    assert res.returncode == 127, str(res)
    assert "executable file not found in $PATH" in res.stderr, str(res)
    res = drun(dockerd, runtime, "/etc/passwd")
    assert res.returncode == 126, str(res)


def test_podman_exec_errors_map_to_126_127(podman, runtime):
    """podman maps the runtime's error text to 127 (not found) and 126 (not executable)."""
    res = prun(podman, runtime, "/nonexistent")
    assert res.returncode == 127, str(res)
    res = prun(podman, runtime, "/etc/passwd")
    assert res.returncode == 126, str(res)


def test_podman_device_rules_match_runc(podman, runtime, request):
    """podman's spec has no rule for /dev/console (c 5:1): it must stay closed, while
    runc's implicit /dev/net/tun rule (c 10:200) opens the tun device."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun on this host")
    res = prun(podman, runtime, "sh", "-c", TUN_AND_CONSOLE)
    assert res.returncode == 0, str(res)
    assert "console-opened" not in res.stdout, str(res)
    assert "tun-opened" in res.stdout, str(res)
