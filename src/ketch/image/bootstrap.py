"""Base root filesystems made from the host, with no registry: busybox.

``busybox_rootfs(dest)`` copies Debian's statically linked busybox
(package busybox-static) into ``dest/bin``, adds one symlink per applet and a
minimal ``/etc``, so a container has a shell and the usual tools. The tree is
built in a temporary directory beside ``dest`` and renamed into place, so a
reader never sees half of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ketch.errors import NotFound, System

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

_PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""

_GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:
"""


def find_static_busybox() -> str:
    """The host's busybox, if it is the static one (a dynamic one would not run alone)."""
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and _is_static(path):
            return path
    raise NotFound("a statically linked busybox was not found "
                   "(install Debian's busybox-static package)")


def _is_static(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    # A dynamic ELF names its interpreter in a PT_INTERP segment.
    return head[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in head and \
        b"/lib/ld-linux" not in head


def applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise System(f"{busybox} --list-full failed: {out.stderr.strip()}")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def busybox_rootfs(dest: str) -> str:
    """Build the rootfs at ``dest`` (which must not exist yet); returns ``dest``."""
    busybox = find_static_busybox()
    parent = os.path.dirname(os.path.abspath(dest)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".busybox-", dir=parent)
    try:
        _populate(tmp, busybox)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _populate(root: str, busybox: str) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "tmp",
              "root", "home", "var/log", "var/run", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "root"), 0o700)
    shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
    os.chmod(os.path.join(root, "bin", "busybox"), 0o755)
    for applet in applets(busybox):
        rel = applet.lstrip("/")
        if os.path.basename(rel) == "busybox":
            continue   # a link named busybox would point at itself
        link = os.path.join(root, rel)
        if os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(os.path.join(root, "bin", "busybox"),
                                   os.path.dirname(link)), link)
    files = {
        "etc/passwd": _PASSWD,
        "etc/group": _GROUP,
        "etc/hostname": "busybox\n",
        "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "etc/resolv.conf": "",
        "etc/nsswitch.conf": "hosts: files dns\n",
        "etc/shadow": "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    }
    for rel, text in files.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)
    os.chmod(os.path.join(root, "etc/shadow"), 0o640)
