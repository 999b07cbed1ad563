"""``make demo``: run a busybox container with ketch-runc and show its isolation.

Until the daemon exists this is the main job: build a busybox rootfs from the
host's busybox-static, write an OCI bundle, and run a container that prints
what it sees of itself (pid 1, hostname, interfaces, mounts, capabilities,
seccomp, cgroup limits), next to the host's view. Everything it makes lives
under a private --root and cgroup prefix and is removed at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
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
        return rc
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
