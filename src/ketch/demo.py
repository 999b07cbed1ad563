"""``make demo``: a container with ketch-runc, then images through ketchd.

Part one builds a busybox rootfs from the host's busybox-static, writes an
OCI bundle, and runs a container that prints what it sees of itself (pid 1,
hostname, interfaces, mounts, capabilities, seccomp, cgroup limits), next to
the host's view. Part two starts a private ketchd and drives its image store
with the ketch CLI and the docker CLI side by side (bootstrap, images,
history, tag, save | load, rmi). Everything lives under private directories,
a private socket and a cgroup prefix, and is removed at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
echo "--- inside the container ---"
echo "my pid:        $$ (pid 1 of my own pid namespace)"
echo "hostname:      $(hostname)"
echo "processes:"; ps -o pid,user,args
echo "interfaces:    $(ls /sys/class/net | tr '\n' ' ')"
echo "mounts:"; cut -d' ' -f1-3 /proc/mounts | sed 's/^/  /'
echo "capabilities:  $(grep CapEff /proc/self/status)"
echo "seccomp:       $(grep '^Seccomp:' /proc/self/status)"
echo "memory limit:  $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
echo "pids limit:    $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"
echo "/proc/keys:    $(wc -c < /proc/keys) bytes (masked)"
touch /etc/x 2>/dev/null && echo "root is writable" || echo "root is read-only"
"""


def registry_demo(base: Path, env: dict[str, str],
                  show: Callable[[str], int]) -> subprocess.Popen[bytes] | None:
    """ketch's own registry on loopback, with a password: login, push, rmi, pull, run.

    Returns the registry's process for the caller to stop.
    """
    import socket
    import time

    import bcrypt

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"127.0.0.1:{port}"
    hashed = bcrypt.hashpw(b"demo-pass", bcrypt.gensalt(rounds=6)).decode()
    (base / "htpasswd").write_text(f"demo:{hashed}\n")
    print(f"\n--- registries: ketch registry serve on {host}, with a password ---")
    cmd = (f"ketch registry serve --addr {host} --root {base / 'registry'} "
           f"--auth basic --htpasswd {base / 'htpasswd'}")
    print(f"$ {cmd} &", flush=True)
    proc = subprocess.Popen(cmd.split(), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            print("the registry did not start", file=sys.stderr)
            return proc
        time.sleep(0.05)
    show(f"echo demo-pass | ketch login -u demo --password-stdin {host}")
    show(f"ketch tag busybox {host}/demo/box:1")
    show(f"ketch push {host}/demo/box:1")
    show(f"ketch rmi {host}/demo/box:1 busybox")
    show(f"ketch pull {host}/demo/box:1")
    show(f"ketch run --rm --network none {host}/demo/box:1 echo pulled back and running")
    show(f"ketch image inspect --format '{{{{.RepoDigests}}}}' {host}/demo/box:1")
    show(f"ketch logout {host}")
    return proc


def build_demo(base: Path, show: Callable[[str], int], with_docker: bool) -> None:
    """A multi-stage Dockerfile built by ketch and by the docker CLI, then rebuilt
    from cache after one file changes."""
    ctx = base / "build-ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "greeting.txt").write_text("hello from a ketch build\n")
    (ctx / "notes.tmp").write_text("left out by .dockerignore\n")
    (ctx / ".dockerignore").write_text("*.tmp\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS build\n"
        "WORKDIR /work\n"
        "COPY src/ ./\n"
        "RUN tr a-z A-Z < greeting.txt > shout.txt\n"
        "\n"
        "FROM busybox\n"
        "COPY --from=build /work/shout.txt /srv/\n"
        "CMD [\"cat\", \"/srv/shout.txt\"]\n")
    print("\n--- builds: a multi-stage Dockerfile, its cache, the docker CLI too ---")
    show(f"cat {ctx}/Dockerfile")
    show(f"ketch build --progress plain -t demo/app:1 {ctx}")
    show("ketch run --rm demo/app:1")
    show(f"echo bye > {ctx}/src/greeting.txt && ketch build --progress plain -t demo/app:2 "
         f"{ctx} 2>&1 | grep -E 'CACHED|cache miss|naming'")
    if with_docker:
        show(f"DOCKER_BUILDKIT=0 docker build -q -t demo/app:3 {ctx} 2>/dev/null")
    show("ketch history demo/app:2")
    show("ketch rmi demo/app:1 demo/app:2" + (" demo/app:3" if with_docker else ""))


def images_demo(tag: str) -> int:
    """A private ketchd, driven by both CLIs; stopped by its pid, its dirs removed."""
    import signal
    import time

    base = Path(tempfile.mkdtemp(prefix=f"{tag}-d", dir="/tmp"))
    sock = base / "k.sock"
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "KETCH_HOST")}
    env.update(KETCH_HOST=f"unix://{sock}", DOCKER_HOST=f"unix://{sock}",
               DOCKER_CONFIG=str(base / "docker-config"))
    # Private names for what the daemon adds to the kernel, removed by reset() below.
    cgroup_parent = f"/{tag}"
    (base / "daemon.json").write_text(json.dumps({"cgroup-parent": cgroup_parent,
                                                  "bridge": f"kd{tag[-6:]}"}))
    log = open(base / "ketchd.log", "wb")  # noqa: SIM115 - closed in finally
    registry: subprocess.Popen[bytes] | None = None
    daemon = subprocess.Popen(
        [str(bindir / "ketchd"), "--root", str(base / "root"), "--exec-root", str(base / "exec"),
         "--host", f"unix://{sock}", "--pidfile", str(base / "pid"),
         "--config-file", str(base / "daemon.json")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                print((base / "ketchd.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.05)
        docker = shutil.which("docker")
        # `ketch` on PATH is this checkout's, so the commands read as a user types them.
        env["PATH"] = f"{bindir}:{env.get('PATH', '')}"

        def show(cmdline: str) -> int:
            print(f"$ {cmdline}", flush=True)
            return subprocess.call(cmdline, shell=True, env=env)

        print(f"\n--- images: a private ketchd on {sock} ---")
        rc = show("ketch image bootstrap busybox")
        if rc != 0:
            return rc
        show("ketch tag busybox demo/box:1")
        show("ketch images")
        show("ketch history busybox")
        if docker:
            show("docker images --format 'table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}'")
            show("docker save demo/box:1 | ketch load")
            show("docker image inspect --format '{{.Id}} {{.Config.Cmd}}' demo/box:1")
        show("ketch rmi demo/box:1")
        print("\n--- containers: the same ketchd runs them (supervised, logged) ---")
        show("ketch run --rm busybox sh -c 'echo hello from $(hostname); ip -4 addr show eth0 "
             "| grep inet'")
        show("echo piped | ketch run -i --rm --network none busybox tr a-z A-Z")
        show("ketch run -d --name web -p 127.0.0.1:18089:80 busybox httpd -f -p 80 -h /etc")
        show("sleep 0.5; wget -q -O - http://127.0.0.1:18089/hostname || "
             "python3 -c \"import urllib.request; print(urllib.request.urlopen("
             "'http://127.0.0.1:18089/hostname').read().decode().strip())\"")
        show("ketch exec web ps")
        show("ketch ps")
        if docker:
            show("docker ps --format 'table {{.Names}}\\t{{.Status}}\\t{{.Ports}}'")
        show("ketch rm -f web")
        print("\n--- networks: a user network, its containers found by name ---")
        show("ketch network create demo-net")
        show("ketch run -d --name api --network demo-net --network-alias backend "
             "busybox httpd -f -p 80 -h /etc")
        # (127.0.0.11 is ketchd's DNS server, bound in each container's namespace)
        show("ketch run --rm --network demo-net busybox sh -c "
             "'cat /etc/resolv.conf; nslookup backend | grep -A1 Name: ; "
             "wget -q -O - http://backend/hostname'")
        show("ketch network ls")
        show("ketch network inspect --format '{{.Name}} {{range .IPAM.Config}}{{.Subnet}}"
             "{{end}} {{len .Containers}} container(s)' demo-net")
        show("ketch rm -f api")
        show("ketch network rm demo-net")
        build_demo(base, show, docker is not None)
        registry = registry_demo(base, env, show)
        show("ketch system df")
        return 0
    finally:
        if registry is not None and registry.poll() is None:
            registry.terminate()
            registry.wait(15)
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        log.close()
        from ketch.daemon.reset import reset

        reset(str(base / "root"), str(base / "exec"), pidfile=str(base / "pid"),
              cgroup_parent=cgroup_parent)
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    from ketch.image.bootstrap import busybox_rootfs
    from ketch.jsonmodel import to_json
    from ketch.runtime.defaults import default_spec
    from ketch.runtime.seccomp_default import default_profile

    if os.geteuid() != 0:
        print("the demo runs containers: run it as root", file=sys.stderr)
        return 1
    cache = REPO / ".cache" / "busybox-rootfs"
    if not (cache / "bin" / "busybox").exists():
        print(f"building a busybox rootfs from the host's busybox-static in {cache}")
        shutil.rmtree(cache, ignore_errors=True)
        busybox_rootfs(str(cache))
    tag = f"ketch-demo-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    root = Path("/run") / tag
    runc = str(Path(sys.executable).parent / "ketch-runc")
    try:
        spec = to_json(default_spec())
        spec["process"]["terminal"] = False
        # The script comes in on a read-only bind over /tmp (which the image has),
        # so the shared rootfs is not written to.
        (work / "script").mkdir()
        (work / "script" / "demo.sh").write_text(SCRIPT)
        spec["process"]["args"] = ["sh", "/tmp/demo.sh"]
        spec["mounts"].append({"destination": "/tmp", "type": "bind",
                               "source": str(work / "script"), "options": ["rbind", "ro"]})
        spec["hostname"] = "demo"
        spec["root"]["path"] = str(cache)
        spec["linux"]["cgroupsPath"] = f"/{tag}/demo"
        spec["linux"]["resources"]["memory"] = {"limit": 64 * 1024 * 1024}
        spec["linux"]["resources"]["pids"] = {"limit": 64}
        spec["linux"]["seccomp"] = to_json(default_profile(
            set(spec["process"]["capabilities"]["bounding"])))
        (work / "config.json").write_text(json.dumps(spec, indent=2))
        print("--- on the host ---")
        print(f"hostname:      {os.uname().nodename}")
        print(f"interfaces:    {' '.join(sorted(os.listdir('/sys/class/net')))}")
        print(f"$ ketch-runc --root {root} run --bundle {work} demo")
        rc = subprocess.call([runc, "--root", str(root), "run", "--bundle", str(work), "demo"])
        print(f"--- container exited with status {rc}; its cgroup and state are gone ---")
        print("$ ketch-runc list")
        subprocess.call([runc, "--root", str(root), "list"])
        if rc != 0:
            return rc
        return images_demo(tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            p = hierarchy / tag
            if p.is_dir():
                for d in sorted(p.rglob("*"), key=lambda x: -len(str(x))):
                    if d.is_dir():
                        d.rmdir()
                p.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
