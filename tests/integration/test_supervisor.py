"""The supervisor as ketchd uses it: a real process, real containers, real logs.

Each test starts ``python -I -m ketch.engine.supervisor`` with a private
exec-root under /run/<PREFIX> (so the runtime's state carries the prefix) and
bundles whose cgroups are under /<PREFIX>/; the fixture deletes every
container, shuts the supervisor down and checks that no process it started
is left, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ketch.engine.supervisor_client import (
    LogConfig,
    SupervisorClient,
    SyncClient,
    request_upgrade,
    socket_path,
    spawn,
)
from ketch.errors import Conflict, NotSupported, Unavailable

pytestmark = pytest.mark.root


class Sup:
    def __init__(self, exec_root: Path, root: Path, cgroup: str) -> None:
        self.exec_root = exec_root
        self.root = root
        self.cgroup = cgroup            # the supervisor's own
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()     # container pids seen, to prove none is left

    def start(self) -> None:
        self.proc = spawn(str(self.exec_root), str(self.root), cgroup=self.cgroup)

    @property
    def sock(self) -> str:
        return socket_path(str(self.exec_root))

    def log(self, cid: str) -> Path:
        return self.root / "containers" / cid / f"{cid}-json.log"

    def log_config(self, cid: str, **opts: str) -> LogConfig:
        return LogConfig(path=str(self.log(cid)), opts=dict(opts))

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                with SyncClient(self.sock) as c:
                    for info in c.hello.containers:
                        c.call("delete", {"id": info.id, "force": True})
                    c.call("shutdown", {"force": True})
                self.proc.wait(20)
            except Exception as exc:  # noqa: BLE001 - clean up whatever happened
                print(f"supervisor cleanup: {exc}", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        # Whatever a dead supervisor left: the runtime's own delete.
        from ketch.runtime.container import Runtime

        rt = Runtime(str(self.exec_root / "runtime"))
        for st in rt.containers():
            try:
                rt.delete(st.id, force=True)
            except Exception as exc:  # noqa: BLE001
                print(f"cleanup of {st.id} failed: {exc}", file=sys.stderr)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        from ketch.linux import cgroups

        cgroups.new_manager(self.cgroup).destroy()


@pytest.fixture
def sup(tmp_path: Path, prefix: str):
    s = Sup(Path("/run") / prefix / f"sup-{tmp_path.name}", tmp_path / "root",
            f"/{prefix}/supervisor-{tmp_path.name}")
    s.start()
    yield s
    s.cleanup()
    left = [pid for pid in s.pids if _alive(pid)]
    assert not left, f"container processes left: {left}"
    # Nor a cgroup of its containers or of the supervisor, nor a mount.
    paths = [json.loads(cfg.read_text())["linux"]["cgroupsPath"]
             for cfg in tmp_path.glob("bundle*/config.json")] + [s.cgroup]
    cgroups_left = [str(p) for path in paths
                    for p in Path("/sys/fs/cgroup").glob(f"*/{path.lstrip('/')}")]
    assert not cgroups_left, f"cgroups left: {cgroups_left}"
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(tmp_path) in line or str(s.exec_root) in line]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def log_entries(path: Path) -> list[dict]:
    """Every entry, oldest file first: ``.2``, ``.1``, then the current one."""
    def age(p: Path) -> int:
        return int(p.name[len(path.name) + 1:] or 0)

    entries = []
    for p in sorted(path.parent.glob(path.name + "*"), key=age, reverse=True):
        entries += [json.loads(line) for line in p.read_text().splitlines()]
    return entries


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_logs_exit_code_and_records(sup, bundles):
    b = bundles.make(["sh", "-c", "echo out; echo err >&2; printf 'no newline'; exit 3"],
                     container_id="logs")

    async def body():
        c = await SupervisorClient.connect(str(sup.exec_root))
        pid = await c.create("logs", str(b), log=sup.log_config("logs"))
        sup.pids.add(pid)
        assert (await c.state("logs")).status == "created"
        await c.start("logs")
        rec = await c.wait("logs")
        name, data = await asyncio.wait_for(c.events().__anext__(), 10)
        assert name == "exit" and data["id"] == "logs" and data["exitCode"] == 3
        info = await c.state("logs")
        await c.close()
        return rec, info

    rec, info = run(body())
    assert not os.path.exists(f"/proc/{rec.pid}")      # reaped, not a zombie
    assert rec.exit_code == 3 and rec.signal == 0 and not rec.oom_killed and rec.finished_at
    assert info.status == "stopped" and info.exit is not None and info.exit.exit_code == 3
    # On disk, for a ketchd that was not there to hear it.
    on_disk = json.loads((sup.root / "exits" / "logs.json").read_text())
    assert on_disk["exitCode"] == 3 and on_disk["pid"] == rec.pid
    entries = log_entries(sup.log("logs"))
    by_stream = {s: [e["log"] for e in entries if e["stream"] == s] for s in ("stdout", "stderr")}
    assert by_stream == {"stdout": ["out\n", "no newline"], "stderr": ["err\n"]}
    assert all(e["time"].endswith("Z") for e in entries)
    with SyncClient(sup.sock) as c:
        res = c.call("delete", {"id": "logs"})
        assert res["exit"]["exitCode"] == 3
        assert c.hello.containers[0].id == "logs"
    assert not (sup.root / "exits" / "logs.json").exists()


CLIENT = """
import sys
from ketch.engine.supervisor_client import SyncClient, LogConfig
c = SyncClient(sys.argv[1])
c.call("create", {"id": "tick", "bundle": sys.argv[2],
                  "log": {"path": sys.argv[3], "opts": {"max-size": "2k", "max-file": "3"}}})
c.call("start", {"id": "tick"})
print("started", flush=True)
sys.stdin.read()
"""


def test_containers_outlive_their_client(sup, bundles):
    b = bundles.make(["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.02; done"],
                     container_id="tick")
    # A client process starts the container, then dies by SIGKILL.
    client = subprocess.Popen([sys.executable, "-c", CLIENT, sup.sock, str(b),
                               str(sup.log("tick"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert client.stdout is not None and client.stdout.readline() == b"started\n"
    client.kill()
    client.wait()

    with SyncClient(sup.sock) as c:
        (info,) = c.hello.containers
        sup.pids.add(info.pid)
        assert (info.id, info.status, info.supervised) == ("tick", "running", True)
        # Still logging, with no client: the log rotates (2 KiB, 3 files) twice.
        second = sup.log("tick").parent / "tick-json.log.2"
        deadline = time.monotonic() + 20
        while not second.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.exists()
        with pytest.raises(Conflict, match="not stopped"):
            c.call("delete", {"id": "tick"})
        c.call("kill", {"id": "tick", "signal": signal.SIGKILL})
        rec = c.call("wait", {"id": "tick"})
        assert rec["exitCode"] == 137 and rec["signal"] == 9
        c.call("delete", {"id": "tick"})
        assert c.call("list")["containers"] == []
    assert not (sup.log("tick").parent / "tick-json.log.3").exists()
    assert os.path.getsize(sup.log("tick").parent / "tick-json.log.1") < 2048 + 100
    # No line lost or torn across the rotations.
    numbers = [int(e["log"].split()[1]) for e in log_entries(sup.log("tick"))]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        stream, size = struct.unpack(">BxxxL", data[:8])
        out.append((stream, data[8:8 + size]))
        data = data[8 + size:]
    return out


def read_until_eof(s: socket.socket) -> bytes:
    s.settimeout(20)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_attach_stdin_half_close_keeps_output(sup, bundles):
    b = bundles.make(["sh", "-c", "cat; echo done >&2"], container_id="cat")
    ours, theirs = socket.socketpair()

    async def body():
        c = await SupervisorClient.connect(str(sup.exec_root))
        sup.pids.add(await c.create("cat", str(b), stdin_open=True, stdin_once=True,
                                    log=sup.log_config("cat")))
        await c.attach("cat", theirs, stdin=True)
        theirs.close()
        await c.start("cat")
        ours.sendall(b"hi\n")
        ours.shutdown(socket.SHUT_WR)           # stdin ends; the output must not
        out = await asyncio.to_thread(read_until_eof, ours)
        rec = await c.wait("cat")
        await c.close()
        return out, rec

    out, rec = run(body())
    ours.close()
    assert frames(out) == [(1, b"hi\n"), (2, b"done\n")]
    assert rec.exit_code == 0
    assert [e["log"] for e in log_entries(sup.log("cat"))] == ["hi\n", "done\n"]


def test_tty_resize_and_exec(sup, bundles):
    cid, eid = "7" * 64, "e" * 64      # Docker's ids are this long
    b = bundles.make(["sh", "-c", "stty size; read x; stty size; echo got $x"], terminal=True,
                     container_id=cid)
    ours, theirs = socket.socketpair()
    eo, et = socket.socketpair()

    async def body():
        c = await SupervisorClient.connect(str(sup.exec_root))
        sup.pids.add(await c.create(cid, str(b), tty=True, stdin_open=True,
                                    console_size=(24, 80), log=sup.log_config(cid)))
        await c.attach(cid, theirs, stdin=True)
        theirs.close()
        await c.start(cid)
        # An exec beside it, its output to its own socket, never to the log.
        pid = await c.exec(cid, eid, {"args": ["echo", "from exec"], "env": ["PATH=/bin"],
                                         "cwd": "/"}, sock=et)
        sup.pids.add(pid)
        et.close()
        exec_out = await asyncio.to_thread(read_until_eof, eo)
        exec_rec = await c.wait(cid, eid)
        await c.resize(cid, 30, 100)
        ours.sendall(b"hello\n")
        out = await asyncio.to_thread(read_until_eof, ours)
        rec = await c.wait(cid)
        await c.close()
        return exec_out, exec_rec, out, rec

    exec_out, exec_rec, out, rec = run(body())
    ours.close()
    eo.close()
    assert frames(exec_out) == [(1, b"from exec\n")] and exec_rec.exit_code == 0
    assert rec.exit_code == 0
    # Raw bytes, no frames, for a tty; the echo of the input comes from the pty.
    assert out.replace(b"hello\r\n", b"", 1) == b"24 80\r\n30 100\r\ngot hello\r\n"
    logged = "".join(e["log"] for e in log_entries(sup.log(cid)))
    assert "24 80\r\n" in logged and "got hello\r\n" in logged and "from exec" not in logged
    assert {e["stream"] for e in log_entries(sup.log(cid))} == {"stdout"}


def test_oom_killed_recorded(sup, bundles):
    def limit(spec):
        spec["linux"]["resources"] = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}

    b = bundles.make(["sh", "-c", "head -c 200m /dev/zero | tail"], container_id="oom",
                     edit=limit)
    with SyncClient(sup.sock) as c:
        sup.pids.add(c.call("create", {"id": "oom", "bundle": str(b)})["pid"])
        c.call("start", {"id": "oom"})
        rec = c.call("wait", {"id": "oom"})
        c.call("delete", {"id": "oom"})
    assert rec["oomKilled"] is True


def test_handshake_version_mismatch(sup):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sup.sock)
    s.sendall(b'{"id": 1, "op": "hello", "args": {"version": 999}}\n')
    reply = json.loads(read_until_eof(s))
    s.close()
    assert reply["ok"] is False and reply["error"]["kind"] == "NotSupported"
    assert "version mismatch" in reply["error"]["message"]
    with SyncClient(sup.sock) as c, pytest.raises(NotSupported, match="unknown request"):
        c.call("frobnicate")


def test_a_second_supervisor_is_refused(sup):
    out = subprocess.run([sys.executable, "-I", "-m", "ketch.engine.supervisor",
                          "--exec-root", str(sup.exec_root), "--root", str(sup.root)],
                         capture_output=True, timeout=30)
    assert out.returncode != 0 and b"another supervisor" in out.stderr


def test_supervisor_killed_then_replaced(sup, bundles):
    """The single point of failure: what a new supervisor knows after SIGKILL."""
    b = bundles.make(["sleep", "1000"], container_id="quiet")
    with SyncClient(sup.sock) as c:
        pid = c.call("create", {"id": "quiet", "bundle": str(b)})["pid"]
        sup.pids.add(pid)
        c.call("start", {"id": "quiet"})
    assert sup.proc is not None
    sup.proc.kill()
    sup.proc.wait()
    assert _alive(pid)          # a quiet container runs on, reparented
    sup.start()
    with SyncClient(sup.sock) as c:
        (info,) = c.hello.containers
        assert (info.id, info.pid, info.status, info.supervised) == \
            ("quiet", pid, "running", False)
        c.call("kill", {"id": "quiet", "signal": signal.SIGKILL})
        rec = c.call("wait", {"id": "quiet"})
        assert rec["exitCode"] == 255 and rec["lost"] is True
        c.call("delete", {"id": "quiet"})
    assert not _alive(pid)


def test_shutdown_refused_while_alive_then_forced(sup, bundles):
    b = bundles.make(["sleep", "1000"], container_id="alive")
    with SyncClient(sup.sock) as c:
        sup.pids.add(c.call("create", {"id": "alive", "bundle": str(b)})["pid"])
        c.call("start", {"id": "alive"})
        with pytest.raises(Conflict, match="alive"):
            c.call("shutdown")
        assert c.call("shutdown", {"force": True}) == {"containers": ["alive"]}
    assert sup.proc is not None and sup.proc.wait(20) == 0
    assert not os.path.exists(sup.sock)
    rec = json.loads((sup.root / "exits" / "alive.json").read_text())
    assert rec["exitCode"] == 137
    # The stopped container stays for the next supervisor (and ketchd) to delete.
    sup.start()
    with SyncClient(sup.sock) as c:
        (info,) = c.hello.containers
        assert info.status == "stopped" and info.exit is not None
        assert info.exit.exit_code == 137
        c.call("delete", {"id": "alive"})


def test_the_supervisor_protects_itself(sup):
    assert sup.proc is not None
    pid = sup.proc.pid
    # -1000 needs CAP_SYS_RESOURCE, which some sandboxes withhold even from root:
    # then the supervisor says so in its log and goes on.
    adj = Path(f"/proc/{pid}/oom_score_adj").read_text().strip()
    log = (sup.exec_root / "supervisor.log").read_text()
    assert adj == "-1000" or "cannot set oom_score_adj: Permission denied" in log
    assert f"{sup.cgroup}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    status = Path(f"/proc/{pid}/status").read_text()
    assert "\nSigBlk:\t0000000000014003\n" in status     # HUP INT TERM CHLD: signalfd's
    assert os.getsid(pid) == pid                # its own session, away from a terminal


def test_upgrade_reexecs_in_place(sup, bundles):
    """Same pid, same children, logs and an attachment carried through execve."""
    b = bundles.make(["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.01; done"],
                     container_id="up")
    c2 = bundles.make(["sh", "-c", "cat; echo end"], container_id="up2")
    assert sup.proc is not None
    ours, theirs = socket.socketpair()
    with SyncClient(sup.sock) as c:
        pid = c.call("create", {"id": "up", "bundle": str(b), "log": {
            "path": str(sup.log("up"))}})["pid"]
        sup.pids.add(pid)
        c.call("start", {"id": "up"})
        sup.pids.add(c.call("create", {"id": "up2", "bundle": str(c2), "stdinOpen": True,
                                       "stdinOnce": True})["pid"])
        c.call("attach", {"id": "up2", "stdin": True}, fds=[theirs.fileno()])
        theirs.close()
        c.call("start", {"id": "up2"})
        ours.sendall(b"before\n")
        # Asked as a newer ketchd would: without hello.
        assert request_upgrade(str(sup.exec_root)) == sup.proc.pid
        with pytest.raises((Unavailable, OSError)):     # the old image's connections end
            c.call("list")
    with SyncClient(sup.sock) as c:
        infos = {i.id: i for i in c.hello.containers}
        assert c.hello.pid == sup.proc.pid
        assert (infos["up"].pid, infos["up"].status, infos["up"].supervised) == \
            (pid, "running", True)
        before = len(log_entries(sup.log("up")))
        deadline = time.monotonic() + 10
        while len(log_entries(sup.log("up"))) < before + 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        c.call("kill", {"id": "up", "signal": signal.SIGKILL})
        assert c.call("wait", {"id": "up"})["exitCode"] == 137     # still our child
        # The attachment went on across the exec: stdin in, output out.
        ours.sendall(b"after\n")
        ours.shutdown(socket.SHUT_WR)
        out = read_until_eof(ours)
        assert {stream for stream, _ in frames(out)} == {1}
        assert b"".join(data for _, data in frames(out)) == b"before\nafter\nend\n"
        assert c.call("wait", {"id": "up2"})["exitCode"] == 0
    ours.close()
    numbers = [int(e["log"].split()[1]) for e in log_entries(sup.log("up"))]
    assert len(numbers) >= before + 10
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))    # nothing lost
    assert not (sup.exec_root / "supervisor.state").exists()


def test_no_fd_is_left_behind(sup, bundles):
    """Pipes, pty masters, pidfds, console sockets, attachments, log files: all closed."""
    assert sup.proc is not None
    fd_dir = Path(f"/proc/{sup.proc.pid}/fd")
    plain = bundles.make(["sh", "-c", "cat; echo x"], container_id="fd1")
    tty = bundles.make(["sleep", "100"], container_id="fd2", terminal=True)
    with SyncClient(sup.sock) as c:
        before = sorted(os.listdir(fd_dir))     # with this client's connection
        for _ in range(2):
            sup.pids.add(c.call("create", {"id": "fd1", "bundle": str(plain), "stdinOpen": True,
                                           "stdinOnce": True,
                                           "log": {"path": str(sup.log("fd1"))}})["pid"])
            sup.pids.add(c.call("create", {"id": "fd2", "bundle": str(tty), "tty": True,
                                           "stdinOpen": True})["pid"])
            ours, theirs = socket.socketpair()
            c.call("attach", {"id": "fd1", "stdin": True}, fds=[theirs.fileno()])
            theirs.close()
            c.call("start", {"id": "fd1"})
            c.call("start", {"id": "fd2"})
            eo, et = socket.socketpair()
            c.call("exec", {"id": "fd2", "execId": "e", "tty": True,
                            "process": {"args": ["true"], "env": ["PATH=/bin"], "cwd": "/"}},
                   fds=[et.fileno()])
            et.close()
            read_until_eof(eo)
            eo.close()
            ours.shutdown(socket.SHUT_WR)
            read_until_eof(ours)
            ours.close()
            assert c.call("wait", {"id": "fd1"})["exitCode"] == 0
            c.call("delete", {"id": "fd1"})
            c.call("delete", {"id": "fd2", "force": True})
        after = sorted(os.listdir(fd_dir))
        assert after == before, [os.readlink(fd_dir / fd) for fd in after[3:]]
