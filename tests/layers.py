"""Small layer tars and overlayfs probes shared by the image tests."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from ketch.image.snapshot import Mount


def make_tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A PAX tar of (name, data) files and (name/, None) directories, fixed mtimes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name.rstrip("/"))
            ti.mtime = 1_700_000_000
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def overlay_available() -> bool:
    """Whether this kernel has overlayfs (tests that mount it skip otherwise)."""
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


class Mounter:
    """Mounts snapshot ``Mount`` records for real and remembers them for the finalizer."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.active: list[Path] = []

    def mount(self, mounts: list[Mount], name: str) -> Path:
        [m] = mounts
        target = self.base / name
        target.mkdir()
        cmd = ["mount"] + (["-t", m.type] if m.type != "bind" else [])
        cmd += ["-o", ",".join(m.options), m.source, str(target)]
        # Long overlay chains use lowerdirs relative to m.cwd.
        proc = subprocess.run(cmd, cwd=m.cwd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        self.active.append(target)
        return target

    def unmount(self, target: Path) -> None:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)
        self.active.remove(target)

    def release(self, tmp_path: Path) -> None:
        """Unmount what is left, newest first, and fail if anything under tmp_path stays."""
        for target in reversed(self.active):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if str(tmp_path) in line]
        assert not left, f"mounts left behind: {left}"
