"""The rest of runc's command line: update, events, ps, features, logs, flags."""

from __future__ import annotations

import json

import pytest
from tests.conftest import errmsg, ketch_runc

pytestmark = pytest.mark.root


@pytest.fixture
def running(bundles, runc_root):
    def edit(spec):
        spec["linux"]["resources"]["memory"] = {"limit": 64 * 1024 * 1024}
    b = bundles.make(["sleep", "100"], container_id="cmd", edit=edit)
    out = ketch_runc("run", "-d", "--bundle", str(b), "cmd", root=runc_root)
    assert out.returncode == 0, errmsg(out)
    return "cmd"


def memory_limit(runc_root, cid):
    out = ketch_runc("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                     root=runc_root)
    assert out.returncode == 0, errmsg(out)
    return int(out.stdout)


def test_update_from_stdin_and_flags(running, runc_root):
    assert memory_limit(runc_root, running) == 64 * 1024 * 1024
    out = ketch_runc("update", "-r", "-", running, root=runc_root,
                     input=json.dumps({"memory": {"limit": 32 * 1024 * 1024},
                                       "pids": {"limit": 50}}).encode())
    assert out.returncode == 0, errmsg(out)
    assert memory_limit(runc_root, running) == 32 * 1024 * 1024
    out = ketch_runc("update", "--memory", "48m", "--pids-limit", "40", running, root=runc_root)
    assert out.returncode == 0, errmsg(out)
    assert memory_limit(runc_root, running) == 48 * 1024 * 1024
    out = ketch_runc("exec", running, "cat", "/sys/fs/cgroup/pids/pids.max", root=runc_root)
    assert out.stdout == b"40\n"
    out = ketch_runc("update", "-r", "-", running, root=runc_root, input=b"{nope")
    assert out.returncode == 1 and b"unable to parse resources" in errmsg(out)


def test_events_stats(running, runc_root):
    out = ketch_runc("events", "--stats", running, root=runc_root)
    assert out.returncode == 0, errmsg(out)
    event = json.loads(out.stdout)
    assert event["type"] == "stats" and event["id"] == running
    data = event["data"]
    assert data["memory"]["usage"]["limit"] == 64 * 1024 * 1024
    assert data["memory"]["usage"]["usage"] > 0
    assert data["pids"]["current"] >= 1
    assert data["cpu"]["usage"]["total"] > 0


def test_ps_table(running, runc_root):
    out = ketch_runc("ps", running, root=runc_root)
    assert out.returncode == 0, errmsg(out)
    lines = out.stdout.decode().splitlines()
    assert lines[0].split()[:2] == ["UID", "PID"]
    assert any("sleep 100" in line for line in lines[1:])


def test_features_version_and_unsupported(runc_root):
    out = ketch_runc("features", root=runc_root)
    data = json.loads(out.stdout)
    assert "createRuntime" in data["hooks"] and "rbind" in data["mountOptions"]
    assert "CAP_SYS_ADMIN" in data["linux"]["capabilities"]
    assert ketch_runc("--version", root=runc_root).stdout.startswith(b"ketch-runc version ")
    out = ketch_runc("--systemd-cgroup", "list", root=runc_root)
    assert out.returncode == 1 and b"--systemd-cgroup is not supported" in errmsg(out)
    out = ketch_runc("checkpoint", "x", root=runc_root)
    assert out.returncode == 1 and b"checkpoint is not supported" in errmsg(out)
    out = ketch_runc("nosuchcommand", root=runc_root)
    assert out.returncode == 3


def test_log_file_in_json(runc_root, tmp_path):
    log = tmp_path / "log.json"
    out = ketch_runc("--log", str(log), "--log-format", "json", "state", "nosuch",
                     root=runc_root)
    assert out.returncode == 1
    assert out.stderr == b"container does not exist\n"
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and entry["msg"] == "container does not exist"


def test_no_pivot_and_no_new_keyring(bundles, runc_root):
    b = bundles.make(["sh", "-c", "cat /proc/self/mountinfo | head -1; "
                      "grep -c _ses /proc/keys || true"], container_id="np")
    out = ketch_runc("run", "--no-pivot", "--no-new-keyring", "--bundle", str(b), "np",
                     root=runc_root)
    assert out.returncode == 0, errmsg(out)
    # MS_MOVE + chroot instead of pivot_root: / is the rootfs directory moved
    # onto /, so mountinfo shows its host path as the mount's root.
    assert b"rootfs / " in out.stdout.splitlines()[0]


def test_events_reports_oom(bundles, runc_root):
    def edit(spec):
        spec["linux"]["resources"]["memory"] = {"limit": 16 * 1024 * 1024,
                                                "swap": 16 * 1024 * 1024}
    # The container waits for the test's go (a file in its rootfs) so the OOM
    # happens after `events` has read its starting count, however slow the host.
    b = bundles.make(["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                      "head -c 64m /dev/zero | tail; sleep 100"],
                     container_id="oome", edit=edit)
    assert ketch_runc("run", "-d", "--bundle", str(b), "oome", root=runc_root).returncode == 0
    import subprocess
    import time

    from tests.conftest import BIN
    p = subprocess.Popen([str(BIN / "ketch-runc"), "--root", str(runc_root), "events",
                          "--interval", "100ms", "oome"], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        seen = []
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line)["type"])
            if len(seen) == 1:
                (b / "rootfs" / "tmp" / "go").touch()
            if "oom" in seen:
                break
        assert "oom" in seen, seen
    finally:
        p.kill()
        p.wait()
