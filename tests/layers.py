"""Small layer tars and overlayfs probes shared by the image tests."""

from __future__ import annotations

import io
import tarfile


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
