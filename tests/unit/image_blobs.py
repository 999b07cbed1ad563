"""OCI content made in memory for the unit tests: digests, layer tars, image manifests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer of regular files (mode 0644, a fixed mtime): the same bytes each time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def oci_manifest(config: bytes, layers: Sequence[bytes], media_type: str = OCI_MANIFEST,
                 **extra: Any) -> bytes:
    """An image manifest of these blobs (uncompressed layers); ``extra`` fields added."""
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(x), "size": len(x)} for x in layers]}
    doc.update(extra)
    return json.dumps(doc).encode()
