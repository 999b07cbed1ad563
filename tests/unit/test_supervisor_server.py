"""The supervisor's loop without root: plain child processes stand in for containers.

A ``FakeRuntime`` has the runtime library's shape (create forks a child that
waits for start, then execs; kill, delete, state, oom_kill_count). The
supervisor runs in a forked child process, as it would after fork+exec: it
needs the main thread for its signals, and pytest must not become a subreaper.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from ketch.engine.supervisor_client import LogConfig, SupervisorClient, SyncClient
from ketch.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    NotSupported,
    Unavailable,
)
from ketch.linux import syscalls as sc
from ketch.runtime.container import CreateOptions, Started


@dataclass
class FakeState:
    status: str


class FakeRuntime:
    def __init__(self) -> None:
        self.procs: dict[str, dict] = {}

    def create(self, cid: str, opts: CreateOptions) -> Started:
        if cid in self.procs:
            raise AlreadyExists("container with given ID already exists")
        with open(os.path.join(opts.bundle, "config.json")) as f:
            config = json.load(f)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for i, fd in enumerate(opts.stdio):
                    if fd is not None:
                        os.dup2(fd, i)
                os.read(r, 1)                   # the "exec fifo": wait for start
                from ketch.runtime.process import reset_signals
                sc.close_range(3)
                reset_signals()
                os.execvp(config["args"][0], config["args"])
            finally:
                os._exit(127)
        os.close(r)
        self.procs[cid] = {"pid": pid, "gate": w, "started": False,
                           "oom": config.get("oomAfterStart", 0)}
        return Started(pid=pid, pidfd=sc.pidfd_open(pid))

    def start(self, cid: str) -> None:
        p = self._get(cid)
        os.write(p["gate"], b"x")
        os.close(p["gate"])
        p["started"] = True

    def _get(self, cid: str) -> dict:
        if cid not in self.procs:
            raise NotFound("container does not exist")
        return self.procs[cid]

    def state(self, cid: str) -> FakeState:
        p = self._get(cid)
        try:
            with open(f"/proc/{p['pid']}/stat") as f:
                alive = f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
        except FileNotFoundError:
            alive = False
        if not alive:
            return FakeState("stopped")
        return FakeState("running" if p["started"] else "created")

    def kill(self, cid: str, sig: int, all_processes: bool = False) -> None:
        os.kill(self._get(cid)["pid"], sig)

    def delete(self, cid: str, force: bool = False) -> None:
        p = self.procs.pop(cid, None)
        if p is None:
            return
        if not p["started"]:
            os.close(p["gate"])
        try:
            os.kill(p["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass

    def oom_kill_count(self, cid: str) -> int:
        p = self._get(cid)
        return p["oom"] if p["started"] else 0

    def containers(self) -> list:
        return []


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.exec_root = tmp / "run"
        self.root = tmp / "root"
        self.sock = str(self.exec_root / "supervisor.sock")
        self.n = 0
        self.stopped = False        # a test shut it down itself

    def start(self) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                from ketch.engine.supervisor.server import Supervisor

                sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
                sup = Supervisor(str(self.exec_root), str(self.root), runtime=FakeRuntime())
                sup.listen()
                os.write(w, b"ready")
                os.close(w)
                sup.serve()
                sup.close()
            except BaseException:  # noqa: BLE001 - reported through the test's failure
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(w)
        assert os.read(r, 5) == b"ready"
        os.close(r)
        self.pid = pid

    def stop(self) -> int:
        if self.stopped:
            _, status = os.waitpid(self.pid, 0)
            return os.waitstatus_to_exitcode(status)
        try:
            with SyncClient(self.sock) as c:
                for info in c.hello.containers:
                    c.call("delete", {"id": info.id, "force": True})
                c.call("shutdown", {"force": True})
        finally:
            _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def bundle(self, *args: str, **extra: object) -> str:
        self.n += 1
        b = self.tmp / f"bundle{self.n}"
        b.mkdir()
        (b / "config.json").write_text(json.dumps({"args": list(args), **extra}))
        return str(b)

    def log(self, cid: str) -> Path:
        return self.root / "logs" / f"{cid}-json.log"

    def create(self, c: SyncClient, cid: str, *args: str, log: bool = True,
               **kw: object) -> int:
        extra = {k: v for k, v in kw.items() if k == "oomAfterStart"}
        req = {"id": cid, "bundle": self.bundle(*args, **extra),
               **{k: v for k, v in kw.items() if k != "oomAfterStart"}}
        if log:
            req["log"] = {"path": str(self.log(cid))}
        return c.call("create", req)["pid"]

    def entries(self, cid: str) -> list[tuple[str, str]]:
        return [(e["stream"], e["log"]) for e in
                (json.loads(x) for x in self.log(cid).read_text().splitlines())]


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    harness.start()
    yield harness
    assert harness.stop() == 0


def test_run_log_wait_delete(h):
    with SyncClient(h.sock) as c:
        assert c.hello.containers == [] and c.hello.version == 1
        pid = h.create(c, "a", "sh", "-c", "echo out; echo err >&2; exit 7")
        assert c.call("state", {"id": "a"})["status"] == "created"
        c.call("start", {"id": "a"})
        rec = c.call("wait", {"id": "a"})
        assert (rec["exitCode"], rec["signal"], rec["pid"]) == (7, 0, pid)
        assert not rec["oomKilled"]
        assert sorted(h.entries("a")) == [("stderr", "err\n"), ("stdout", "out\n")]
        assert json.loads((h.root / "exits" / "a.json").read_text())["exitCode"] == 7
        with pytest.raises(AlreadyExists):
            h.create(c, "a", "true")
        with pytest.raises(Conflict, match="has stopped"):
            c.call("start", {"id": "a"})
        with pytest.raises(Conflict, match="not running"):
            c.call("kill", {"id": "a", "signal": 15})
        assert c.call("delete", {"id": "a"})["exit"]["exitCode"] == 7
        assert not (h.root / "exits" / "a.json").exists()
        with pytest.raises(NotFound, match="no such container: a"):
            c.call("wait", {"id": "a"})


def test_signals_give_128_plus_n_and_oom_is_decided_at_reap(h):
    with SyncClient(h.sock) as c:
        h.create(c, "s", "sleep", "100")
        h.create(c, "o", "sh", "-c", "exit 137", oomAfterStart=1)
        c.call("start", {"id": "s"})
        c.call("start", {"id": "o"})
        with pytest.raises(Conflict, match="not stopped"):
            c.call("delete", {"id": "s"})
        c.call("kill", {"id": "s", "signal": signal.SIGTERM})
        assert c.call("wait", {"id": "s"})["exitCode"] == 143
        rec = c.call("wait", {"id": "o"})
        assert rec["exitCode"] == 137 and rec["oomKilled"] is True


def test_wait_replies_come_when_the_process_ends_and_events_go_to_everyone(h):
    with SyncClient(h.sock) as c, SyncClient(h.sock) as watcher:
        h.create(c, "w", "sh", "-c", "read x; exit 3", stdinOpen=True)
        c.call("start", {"id": "w"})
        # A wait is pending; other requests are answered meanwhile.
        c.sock.sendall(b'{"id": 100, "op": "wait", "args": {"id": "w"}}\n')
        assert c.call("list")["containers"][0]["status"] == "running"
        ours, theirs = socket.socketpair()
        c.call("attach", {"id": "w", "stdin": True}, fds=[theirs.fileno()])
        theirs.close()
        ours.sendall(b"go\n")
        msgs = [c._next_message() for _ in range(2)]
        assert {m.get("id") for m in msgs} == {100, None}
        event = next(m for m in msgs if "event" in m)
        assert event["event"] == "exit" and event["data"]["exitCode"] == 3
        assert watcher._next_message()["data"]["id"] == "w"
        ours.close()


def test_attach_half_close_and_framing(h):
    with SyncClient(h.sock) as c:
        h.create(c, "cat", "sh", "-c", "cat; echo bye >&2", stdinOpen=True, stdinOnce=True)
        ours, theirs = socket.socketpair()
        c.call("attach", {"id": "cat", "stdin": True}, fds=[theirs.fileno()])
        theirs.close()
        c.call("start", {"id": "cat"})
        ours.sendall(b"hello\n")
        ours.shutdown(socket.SHUT_WR)
        data = read_all(ours)
        assert unframe(data) == [(1, b"hello\n"), (2, b"bye\n")]
        assert c.call("wait", {"id": "cat"})["exitCode"] == 0
        with pytest.raises(Conflict, match="cannot attach to a stopped container"):
            c.call("attach", {"id": "cat"}, fds=[os.open(os.devnull, os.O_RDONLY)])


def test_a_slow_reader_pauses_only_its_container_and_loses_nothing(h):
    size = 4 << 20
    with SyncClient(h.sock) as c:
        h.create(c, "big", "head", "-c", str(size), "/dev/zero", log=False)
        ours, theirs = socket.socketpair()
        c.call("attach", {"id": "big"}, fds=[theirs.fileno()])
        theirs.close()
        c.call("start", {"id": "big"})
        # Nobody reads "big"'s output yet: it must block, not be dropped, and
        # the supervisor must go on serving other containers.
        h.create(c, "small", "echo", "still served")
        c.call("start", {"id": "small"})
        assert c.call("wait", {"id": "small"})["exitCode"] == 0
        assert h.entries("small") == [("stdout", "still served\n")]
        assert c.call("state", {"id": "big"})["status"] == "running"
        frames = unframe(read_all(ours))
        assert sum(len(d) for _, d in frames) == size
        assert c.call("wait", {"id": "big"})["exitCode"] == 0


def test_clients_come_and_go_containers_stay(h):
    c = SyncClient(h.sock)
    pid = h.create(c, "long", "sh", "-c", "while true; do echo t; sleep 0.01; done")
    c.call("start", {"id": "long"})
    c.sock.shutdown(socket.SHUT_RDWR)       # as if the daemon died
    c.close()
    with SyncClient(h.sock) as c2:
        (info,) = c2.hello.containers
        assert (info.id, info.pid, info.status) == ("long", pid, "running")
        deadline = time.monotonic() + 10        # still logging, with no client
        while len(h.entries("long")) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.entries("long")[:3] == [("stdout", "t\n")] * 3
        c2.call("kill", {"id": "long", "signal": signal.SIGKILL})
        assert c2.call("wait", {"id": "long"})["exitCode"] == 137


def test_protocol_manners(h):
    s = socket.socket(socket.AF_UNIX)
    s.connect(h.sock)
    s.sendall(b'{"id": 1, "op": "list"}\n')
    reply = json.loads(s.makefile("rb").readline())
    assert reply["error"] == {"kind": "Conflict", "message": "protocol: say hello first"}
    s.close()
    with SyncClient(h.sock) as c:
        with pytest.raises(NotSupported, match="unknown request: nope"):
            c.call("nope")
        with pytest.raises(Conflict, match="alive"):
            h.create(c, "x", "sleep", "100")
            c.call("start", {"id": "x"})
            c.call("shutdown")
        r, w = os.pipe()
        with pytest.raises(InvalidArgument, match="not a socket"):
            c.call("attach", {"id": "x"}, fds=[r])
        os.close(r)
        os.close(w)
        with pytest.raises(InvalidArgument, match="exactly one socket"):
            c.call("attach", {"id": "x"})
        with pytest.raises(NotSupported, match="compress"):
            c.call("create", {"id": "y", "bundle": h.bundle("true"),
                              "log": {"path": str(h.log("y")), "opts": {"compress": "true"}}})


def read_all(s: socket.socket) -> bytes:
    s.settimeout(30)
    data = b""
    while chunk := s.recv(1 << 20):
        data += chunk
    s.close()
    return data


def unframe(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        stream, size = struct.unpack(">BxxxL", data[:8])
        out.append((stream, data[8:8 + size]))
        data = data[8 + size:]
    return out


def test_a_signal_to_a_created_container_is_its_own(h):
    """It waits for start with the supervisor's signals blocked; it must not wake the
    supervisor (a shared wakeup pipe would), and the signal acts once it execs."""
    with SyncClient(h.sock) as c:
        h.create(c, "early", "sleep", "100")
        c.call("kill", {"id": "early", "signal": signal.SIGTERM})
        assert c.call("list")["containers"][0]["status"] == "created"
        c.call("start", {"id": "early"})
        assert c.call("wait", {"id": "early"})["exitCode"] == 143


def test_detach_keys_end_the_attachment_not_the_container(h):
    with SyncClient(h.sock) as c:
        h.create(c, "d", "cat", stdinOpen=True, stdinOnce=True)
        c.call("start", {"id": "d"})
        first, theirs = socket.socketpair()
        c.call("attach", {"id": "d", "stdin": True, "detachKeys": [16, 17]},
               fds=[theirs.fileno()])
        theirs.close()
        first.sendall(b"one\n")
        echo = b""
        while len(echo) < 12:
            echo += first.recv(12 - len(echo))
        assert unframe(echo) == [(1, b"one\n")]
        first.sendall(b"\x10")
        first.sendall(b"\x11never\n")
        # The supervisor closes the attachment: output ends for this client only.
        assert read_all(first) == b""
        assert c.call("state", {"id": "d"})["status"] == "running"
        second, theirs = socket.socketpair()
        c.call("attach", {"id": "d", "stdin": True}, fds=[theirs.fileno()])
        theirs.close()
        second.sendall(b"two\n")
        second.shutdown(socket.SHUT_WR)
        assert b"".join(d for _, d in unframe(read_all(second))) == b"two\n"
        assert c.call("wait", {"id": "d"})["exitCode"] == 0
    assert h.entries("d") == [("stdout", "one\n"), ("stdout", "two\n")]


def test_the_asyncio_client(h):
    async def body():
        c = await SupervisorClient.connect(path=h.sock)
        assert c.hello.pid == h.pid and c.hello.containers == []
        pid = await c.create("a", h.bundle("sh", "-c", "echo hi; exit 4"),
                             log=LogConfig(path=str(h.log("a"))))
        waiting = asyncio.ensure_future(c.wait("a"))     # answered later
        assert (await c.state("a")).status == "created"
        assert await c.start("a") == pid
        rec = await waiting
        name, data = await c.events().__anext__()
        assert (rec.exit_code, name, data["exitCode"]) == (4, "exit", 4)
        assert [i.id for i in await c.containers()] == ["a"]
        with pytest.raises(NotFound):
            await c.kill("nope", signal.SIGTERM)
        assert (await c.delete("a")).exit_code == 4
        assert await c.shutdown() == []
        h.stopped = True
        assert [e async for e in c.events()] == []      # the stream ends with the connection
        with pytest.raises(Unavailable):
            await c.containers()
        await c.close()

    asyncio.run(asyncio.wait_for(body(), 30))
    assert h.entries("a") == [("stdout", "hi\n")]


def test_an_upgrade_the_new_code_cannot_take_is_not_made(tmp_path):
    """The installed code is asked first (a separate process); on "no" nothing is exec'd."""
    from ketch.engine.supervisor.__main__ import _reexec

    class Old:
        def snapshot(self):
            return {"version": 999, "containers": []}, []

    lock = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # in a child: were the check wrong, execv must not replace pytest
        try:
            _reexec(Old(), str(tmp_path), str(tmp_path), lock)
            os.write(w, b"exec returned")
        except OSError as exc:
            os.write(w, str(exc).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    os.close(lock)
    assert "cannot take over" in said
    assert not (tmp_path / "supervisor.state").exists()
