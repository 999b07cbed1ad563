"""What a container sees of itself: checked from inside, as runtimetest does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest
from tests.conftest import BIN, errmsg, ketch_runc

pytestmark = pytest.mark.root


def run(bundles, runc_root, script, edit=None, cid="iso"):
    b = bundles.make(["sh", "-c", script], container_id=cid, edit=edit)
    out = ketch_runc("run", "--bundle", str(b), cid, root=runc_root)
    return out


def test_pid_hostname_interfaces_mounts(bundles, runc_root):
    out = run(bundles, runc_root,
              "echo pid=$$; hostname; ls /sys/class/net; cat /proc/mounts; ps -o pid")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "pid=1\n" in text
    assert "\nketch\n" in text
    nets = [line for line in text.splitlines() if line in os.listdir("/sys/class/net")]
    assert nets == ["lo"]          # a new network namespace has only loopback
    mounts = [line.split()[1] for line in text.splitlines() if line.count(" ") >= 5]
    assert mounts[0] == "/"
    for m in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"):
        assert m in mounts
    assert "/work" not in mounts and not any(m.startswith("/run/") for m in mounts)
    pids = [line.strip() for line in text.splitlines()[-3:]]
    assert "1" in pids


def test_capabilities_and_no_new_privs(bundles, runc_root):
    out = run(bundles, runc_root, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":\t") for line in out.stdout.decode().splitlines())
    # CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29)
    want = (1 << 5) | (1 << 10) | (1 << 29)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(fields[key], 16) == want, (key, fields)
    # Ambient capabilities must also be inheritable; the template's are not, so
    # (as with runc) none are raised.
    assert int(fields["CapInh"], 16) == 0
    assert int(fields["CapAmb"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"


def test_seccomp_filter_is_loaded(bundles, runc_root):
    from ketch.jsonmodel import to_json
    from ketch.runtime.seccomp_default import default_profile

    def edit(spec):
        spec["linux"]["seccomp"] = to_json(default_profile(
            set(spec["process"]["capabilities"]["bounding"])))
    out = run(bundles, runc_root, "grep '^Seccomp:' /proc/self/status; unshare -u true; "
              "echo unshare=$?", edit=edit)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "Seccomp:\t2" in text
    assert "unshare=1" in text


def test_memory_limit_oom_kill(bundles, runc_root, prefix):
    def edit(spec):
        spec["linux"]["resources"]["memory"] = {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}
    b = bundles.make(["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
                                  "head -c 64m /dev/zero | tail > /dev/null; echo survived"],
                     container_id="oom", edit=edit)
    out = ketch_runc("run", "--keep", "--bundle", str(b), "oom", root=runc_root)
    text = out.stdout.decode()
    assert text.startswith(str(16 * 1024 * 1024)), (text, out.stderr)
    from ketch.runtime.container import Runtime
    assert Runtime(str(runc_root)).oom_kill_count("oom") >= 1
    assert ketch_runc("delete", "oom", root=runc_root).returncode == 0


def test_pids_and_cpu_limits_in_effect(bundles, runc_root):
    def edit(spec):
        spec["linux"]["resources"]["pids"] = {"limit": 5}
        spec["linux"]["resources"]["cpu"] = {"shares": 512, "quota": 50000, "period": 100000}
    out = run(bundles, runc_root,
              "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.shares "
              "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", edit=edit)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["5", "512", "50000"]


def test_rlimits(bundles, runc_root):
    def edit(spec):
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
                                      {"type": "RLIMIT_NPROC", "soft": 77, "hard": 77}]
    out = run(bundles, runc_root, "ulimit -n; ulimit -Hn; ulimit -u", edit=edit)
    assert out.stdout.decode().split() == ["123", "456", "77"], out.stderr


def test_masked_and_readonly_paths_and_readonly_root(bundles, runc_root):
    def edit(spec):
        spec["root"]["readonly"] = True
    out = run(bundles, runc_root,
              "wc -c < /proc/keys; ls /proc/acpi 2>/dev/null | wc -l; "
              "echo 1 > /proc/sys/kernel/domainname 2>/dev/null; echo sys=$?; "
              "touch /x 2>/dev/null; echo root=$?; touch /dev/shm/x; echo shm=$?", edit=edit)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["0", "0", "sys=1", "root=1", "shm=0"]


def test_devices(bundles, runc_root):
    def edit(spec):
        spec["linux"]["devices"] = [
            {"type": "c", "path": "/dev/mynull", "major": 1, "minor": 3, "fileMode": 0o600,
             "uid": 0, "gid": 0},
            {"type": "c", "path": "/dev/kmsg", "major": 1, "minor": 11, "fileMode": 0o600}]
    out = run(bundles, runc_root,
              "ls -l /dev/null /dev/mynull /dev/ptmx /dev/fd /dev/kmsg | cut -c1-10; "
              "echo x > /dev/mynull && echo write-ok; head -c1 /dev/kmsg >/dev/null 2>&1;"
              " echo kmsg=$?", edit=edit)
    assert out.stdout.decode().split() == [
        "lrwxrwxrwx", "crw-------", "crw-------", "crw-rw-rw-", "lrwxrwxrwx", "write-ok",
        "kmsg=1"], out.stderr   # kmsg exists, but no cgroup rule allows it


def test_sysctl_and_hostname(bundles, runc_root):
    def edit(spec):
        spec["hostname"] = "box"
        spec["domainname"] = "example.test"
        spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}
    out = run(bundles, runc_root, "hostname; cat /proc/sys/kernel/domainname "
              "/proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni", edit=edit)
    assert out.stdout.decode().split() == ["box", "example.test", "1", "1234"], out.stderr


def test_user_namespace(bundles, runc_root):
    def edit(spec):
        spec["linux"]["namespaces"].append({"type": "user"})
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        # sysfs and cgroup mounts need a user namespace that owns the network one
    # The mapped root must be able to reach the rootfs: not under pytest's 0700 tmp.
    base = runc_root.parent / f"{runc_root.name}-bundles"
    base.mkdir(mode=0o755)
    b = bundles.make(["sh", "-c", "id -u; cat /proc/self/uid_map; echo pid=$$"],
                     container_id="userns", edit=edit, base=base)
    os.chown(b / "rootfs", 200000, 200000)
    out = ketch_runc("run", "--bundle", str(b), "userns", root=runc_root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "200000", "65536"]
    assert lines[2] == "pid=1"


def test_bind_mounts_and_propagation(bundles, runc_root, tmp_path):
    """rbind+rshared: a mount made inside shows up on the host; ro binds stay ro.

    / is not a shared mount here, so the test makes its own shared mount first.
    """
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("hi")
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    try:
        def edit(spec):
            caps = spec["process"]["capabilities"]
            for key in ("bounding", "effective", "permitted"):
                caps[key].append("CAP_SYS_ADMIN")
            spec["mounts"].append({"destination": "/data", "type": "bind",
                                   "source": str(shared), "options": ["rbind", "rshared"]})
            spec["mounts"].append({"destination": "/ro", "type": "bind",
                                   "source": str(shared), "options": ["rbind", "ro"]})
            spec["linux"]["rootfsPropagation"] = "shared"
        b = bundles.make(["sh", "-c", "cat /data/hello; mkdir -p /data/sub; "
                          "mount -t tmpfs tmpfs /data/sub && touch /data/sub/made-inside; "
                          "touch /ro/x 2>/dev/null; echo ro=$?; sleep 100"],
                         container_id="prop", edit=edit)
        out = ketch_runc("run", "-d", "--bundle", str(b), "prop", root=runc_root)
        assert out.returncode == 0, errmsg(out)
        deadline = time.monotonic() + 10
        while not (shared / "sub" / "made-inside").exists():
            assert time.monotonic() < deadline, "the mount made inside never propagated"
            time.sleep(0.05)
        assert ketch_runc("delete", "-f", "prop", root=runc_root).returncode == 0
    finally:
        subprocess.run(["umount", "-R", str(shared)], check=False)


def test_terminal_through_console_socket(bundles, runc_root, tmp_path):
    from ketch.runtime import console

    sock_path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    got: dict = {}

    def accept():
        conn, _ = listener.accept()
        got["fd"], got["name"] = console.recv_fd(conn)
        conn.close()
    t = threading.Thread(target=accept)
    t.start()
    b = bundles.make(["sh", "-c", "tty; stty size; echo done"], container_id="tty",
                     terminal=True,
                     edit=lambda s: s["process"].update(consoleSize={"height": 30, "width": 100}))
    out = ketch_runc("run", "-d", "--console-socket", sock_path, "--bundle", str(b), "tty",
                     root=runc_root)
    assert out.returncode == 0, out.stderr
    t.join(10)
    fd = got["fd"]
    data = b""
    deadline = time.monotonic() + 10
    while b"done" not in data and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    os.close(fd)
    listener.close()
    text = data.decode()
    assert "/dev/pts/0" in text
    assert "30 100" in text


def test_hooks_get_state_on_stdin(bundles, runc_root, tmp_path):
    log = tmp_path / "hooks.log"
    def hook(stage):
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {log}; echo ' {stage}' >> {log}"]}
    def edit(spec):
        spec["hooks"] = {s: [hook(s)] for s in ("prestart", "createRuntime", "createContainer",
                                                "poststart", "poststop")}
    b = bundles.make(["true"], container_id="hk", edit=edit)
    out = ketch_runc("run", "--bundle", str(b), "hk", root=runc_root)
    assert out.returncode == 0, out.stderr
    lines = log.read_text().splitlines()
    stages = [line.rsplit(" ", 1)[1] for line in lines]
    assert stages == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    first = json.loads(lines[0].rsplit(" ", 1)[0])
    assert first["id"] == "hk" and first["status"] == "creating" and first["pid"] > 0


def test_failing_hook_fails_create_and_cleans_up(bundles, runc_root):
    def edit(spec):
        spec["hooks"] = {"createRuntime": [{"path": "/bin/false", "args": ["false"]}]}
    b = bundles.make(["true"], container_id="hf", edit=edit)
    out = ketch_runc("create", "--bundle", str(b), "hf", root=runc_root)
    assert out.returncode == 1
    assert b"error running createRuntime hook #0" in errmsg(out)
    assert ketch_runc("list", "-q", root=runc_root).stdout == b""


def test_preserve_fds(bundles, runc_root, tmp_path):
    target = tmp_path / "fd3.out"
    b = bundles.make(["sh", "-c", "echo via-fd3 >&3"], container_id="pf")
    runc = BIN / "ketch-runc"
    out = subprocess.run(["sh", "-c", f"exec 3>{target}; exec {runc} --root {runc_root} run "
                          f"--preserve-fds 1 --bundle {b} pf"], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert target.read_text() == "via-fd3\n"


def test_join_namespaces_by_path(bundles, runc_root):
    """A second container joins the first's network, uts, ipc and pid namespaces."""
    def first(spec):
        spec["hostname"] = "shared-host"
    a = bundles.make(["sleep", "100"], container_id="nsa", edit=first)
    out = ketch_runc("run", "-d", "--bundle", str(a), "nsa", root=runc_root)
    assert out.returncode == 0, errmsg(out)
    pid = json.loads(ketch_runc("state", "nsa", root=runc_root).stdout)["pid"]

    def second(spec):
        spec.pop("hostname")
        spec["linux"]["namespaces"] = [
            {"type": "mount"},
            {"type": "network", "path": f"/proc/{pid}/ns/net"},
            {"type": "uts", "path": f"/proc/{pid}/ns/uts"},
            {"type": "ipc", "path": f"/proc/{pid}/ns/ipc"},
            {"type": "pid", "path": f"/proc/{pid}/ns/pid"},
        ]
    b = bundles.make(["sh", "-c", "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$"],
                     container_id="nsb", edit=second)
    out = ketch_runc("run", "--bundle", str(b), "nsb", root=runc_root)
    assert out.returncode == 0, errmsg(out)
    host, init_cmdline, mypid = out.stdout.decode().splitlines()
    assert host == "shared-host"
    assert init_cmdline.strip() == "sleep 100"   # the first container's pid 1
    assert mypid != "1"             # and is not pid 1 itself
    for ns in ("net", "uts", "ipc", "pid"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
