"""ketch-runc end to end, as its callers use it: a real kernel and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from tests.conftest import BIN, errmsg, ketch_runc

pytestmark = pytest.mark.root


def state(root, cid):
    out = ketch_runc("state", cid, root=root)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_status(root, cid, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state(root, cid)["status"] == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{cid} never reached {status}: {state(root, cid)}")


def test_run_prints_and_exits_with_status(bundles, runc_root):
    b = bundles.make(["sh", "-c", "echo hello from $(hostname); exit 3"])
    out = ketch_runc("run", "--bundle", str(b), "c1", root=runc_root)
    assert out.stdout == b"hello from ketch\n", out.stderr
    assert out.returncode == 3
    assert ketch_runc("list", "-q", root=runc_root).stdout == b""   # deleted after run


def test_create_start_state_kill_delete(bundles, runc_root, tmp_path):
    b = bundles.make(["sleep", "1000"], container_id="life")
    pidfile = tmp_path / "pid"
    out = ketch_runc("create", "--bundle", str(b), "--pid-file", str(pidfile), "life",
                     root=runc_root)
    assert out.returncode == 0, out.stderr
    st = state(runc_root, "life")
    assert st["status"] == "created"
    assert st["id"] == "life" and st["bundle"] == str(b)
    assert int(pidfile.read_text()) == st["pid"] > 0
    # Between create and start the init waits, not running the user's process.
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert b"sleep" not in f.read()
    assert ketch_runc("start", "life", root=runc_root).returncode == 0
    wait_status(runc_root, "life", "running")
    listed = json.loads(ketch_runc("list", "--format", "json", root=runc_root).stdout)
    assert [c["id"] for c in listed] == ["life"]
    # Deleting a running container needs --force.
    out = ketch_runc("delete", "life", root=runc_root)
    assert out.returncode == 1
    assert b"cannot delete container life that is not stopped: running" in errmsg(out)
    assert ketch_runc("kill", "life", "KILL", root=runc_root).returncode == 0
    wait_status(runc_root, "life", "stopped")
    out = ketch_runc("kill", "life", root=runc_root)
    assert out.returncode == 1 and b"container not running" in errmsg(out)
    assert ketch_runc("delete", "life", root=runc_root).returncode == 0
    out = ketch_runc("state", "life", root=runc_root)
    assert out.returncode == 1 and b"container does not exist" in errmsg(out)


def test_duplicate_id_is_refused(bundles, runc_root):
    b = bundles.make(["sleep", "100"], container_id="dup")
    assert ketch_runc("create", "--bundle", str(b), "dup", root=runc_root).returncode == 0
    out = ketch_runc("create", "--bundle", str(b), "dup", root=runc_root)
    assert out.returncode == 1
    assert b"create failed: container with given ID already exists" in errmsg(out)
    assert state(runc_root, "dup")["status"] == "created"


def test_delete_force_running(bundles, runc_root):
    b = bundles.make(["sleep", "100"], container_id="f")
    assert ketch_runc("run", "-d", "--bundle", str(b), "f", root=runc_root).returncode == 0
    pid = state(runc_root, "f")["pid"]
    assert ketch_runc("delete", "--force", "f", root=runc_root).returncode == 0
    from ketch.runtime.state import pid_start_time
    assert pid_start_time(pid) is None     # gone, or a zombie waiting for its parent


def test_pause_resume(bundles, runc_root):
    b = bundles.make(["sleep", "100"], container_id="p")
    assert ketch_runc("run", "-d", "--bundle", str(b), "p", root=runc_root).returncode == 0
    assert ketch_runc("pause", "p", root=runc_root).returncode == 0
    assert state(runc_root, "p")["status"] == "paused"
    out = ketch_runc("pause", "p", root=runc_root)
    assert out.returncode == 1
    assert ketch_runc("resume", "p", root=runc_root).returncode == 0
    assert state(runc_root, "p")["status"] == "running"


def test_exec_joins_the_container(bundles, runc_root):
    b = bundles.make(["sleep", "100"], container_id="e")
    assert ketch_runc("run", "-d", "--bundle", str(b), "e", root=runc_root).returncode == 0
    out = ketch_runc("exec", "-e", "X=42", "e", "sh", "-c", "echo $X $(hostname); ps -o pid,args",
                     root=runc_root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "42 ketch"
    assert any(line.split()[0] == "1" and "sleep" in line for line in lines[2:])
    out = ketch_runc("exec", "e", "sh", "-c", "exit 7", root=runc_root)
    assert out.returncode == 7
    out = ketch_runc("exec", "e", "nosuchcommand", root=runc_root)
    assert out.returncode == 255
    assert (b'exec failed: unable to start container process: exec: "nosuchcommand": '
            b'executable file not found in $PATH') in errmsg(out)


def test_exec_process_json_and_detach(bundles, runc_root, tmp_path):
    b = bundles.make(["sleep", "100"], container_id="ep")
    assert ketch_runc("run", "-d", "--bundle", str(b), "ep", root=runc_root).returncode == 0
    proc = {"args": ["sh", "-c", "id -u > /tmp/who; sleep 100"], "cwd": "/tmp",
            "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 65534, "gid": 65534}}
    pj = tmp_path / "process.json"
    pj.write_text(json.dumps(proc))
    pidfile = tmp_path / "exec.pid"
    out = ketch_runc("exec", "--process", str(pj), "-d", "--pid-file", str(pidfile), "ep",
                     root=runc_root)
    assert out.returncode == 0, out.stderr
    pid = int(pidfile.read_text())
    assert os.path.exists(f"/proc/{pid}")
    out = ketch_runc("ps", "--format", "json", "ep", root=runc_root)
    assert pid in json.loads(out.stdout)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = ketch_runc("exec", "ep", "cat", "/tmp/who", root=runc_root)
        if out.stdout:
            break
        time.sleep(0.05)
    assert out.stdout == b"65534\n"


def test_kill_all(bundles, runc_root):
    b = bundles.make(["sh", "-c", "sleep 100 & sleep 100 & wait"], container_id="ka")
    assert ketch_runc("run", "-d", "--bundle", str(b), "ka", root=runc_root).returncode == 0
    deadline = time.monotonic() + 20
    while len(json.loads(ketch_runc("ps", "-f", "json", "ka", root=runc_root).stdout)) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ketch_runc("kill", "--all", "ka", "KILL", root=runc_root).returncode == 0
    wait_status(runc_root, "ka", "stopped")


def test_start_of_stopped_container_fails(bundles, runc_root):
    b = bundles.make(["true"], container_id="st")
    assert ketch_runc("create", "--bundle", str(b), "st", root=runc_root).returncode == 0
    assert ketch_runc("kill", "st", "KILL", root=runc_root).returncode == 0
    wait_status(runc_root, "st", "stopped")
    out = ketch_runc("start", "st", root=runc_root)
    assert out.returncode == 1
    assert b"cannot start a container that has stopped" in errmsg(out)


def test_missing_executable_fails_at_create(bundles, runc_root):
    b = bundles.make(["/bin/nosuch"], container_id="nx")
    out = ketch_runc("create", "--bundle", str(b), "nx", root=runc_root)
    assert out.returncode == 1
    assert b"/bin/nosuch" in errmsg(out)
    assert ketch_runc("list", "-q", root=runc_root).stdout == b""


def test_bad_config_leaves_nothing(bundles, runc_root, prefix):
    b = bundles.make(["true"], container_id="bad")
    (b / "config.json").write_text("{broken")
    out = ketch_runc("create", "--bundle", str(b), "bad", root=runc_root)
    assert out.returncode == 1 and b"failed to parse config.json" in errmsg(out)
    assert not (runc_root / "bad").exists()
    assert not os.path.exists(f"/sys/fs/cgroup/memory/{prefix}/bad")


def test_unknown_namespace_and_missing_rootfs(bundles, runc_root):
    b = bundles.make(["true"], container_id="ns",
                     edit=lambda s: s["linux"]["namespaces"].append({"type": "bogus"}))
    out = ketch_runc("create", "--bundle", str(b), "ns", root=runc_root)
    assert out.returncode == 1 and b'namespace "bogus" does not exist' in errmsg(out)
    b2 = bundles.make(["true"], container_id="nr", edit=lambda s: s["root"].update(path="/nope"))
    out = ketch_runc("create", "--bundle", str(b2), "nr", root=runc_root)
    assert out.returncode == 1 and b"rootfs (/nope) does not exist" in errmsg(out)
    assert ketch_runc("list", "-q", root=runc_root).stdout == b""


def test_spec_writes_template(tmp_path):
    out = subprocess.run([os.path.join(os.path.dirname(__import__("sys").executable),
                                       "ketch-runc"), "spec", "--bundle", str(tmp_path)],
                         capture_output=True)
    assert out.returncode == 0
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["process"]["args"] == ["sh"]
    out = ketch_runc("spec", "--bundle", str(tmp_path), root=tmp_path)
    assert out.returncode == 1 and b"File config.json exists. Remove it first" in errmsg(out)


def test_signals_are_forwarded_in_foreground_run(bundles, runc_root):
    # The container says it is ready (a file in its rootfs) once its trap is set.
    b = bundles.make(["sh", "-c", "trap 'echo got TERM; exit 0' TERM; touch /tmp/ready; "
                      "sleep 100 & wait"], container_id="sig")
    p = subprocess.Popen([str(BIN / "ketch-runc"), "--root", str(runc_root), "run",
                          "--bundle", str(b), "sig"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (b / "rootfs" / "tmp" / "ready").exists():
        assert time.monotonic() < deadline, "the container never got ready"
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=20)
    assert b"got TERM" in stdout, stderr
    assert p.returncode == 0
