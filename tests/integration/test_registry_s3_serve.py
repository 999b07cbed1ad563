"""``ketch registry serve --storage s3`` on a moto S3 server, judged by skopeo.

An image with a 12 MiB incompressible layer (so a blob upload spans several
5 MiB parts) goes in with ``skopeo copy`` and comes back out; the layer comes
back byte for byte, the bucket holds the blobs under the prefix and no
unfinished multipart upload is left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.integration.registries import Moto, Registry, oci_layout, tar_layer
from tests.integration.test_registry_s3driver import make_driver, remove_bucket
from tests.unit.registry_driver_contract import MiB, blob

from ketch.registry.server.s3driver import S3Driver

SKOPEO = shutil.which("skopeo")
pytestmark = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
PREFIX = "registry/v2store"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gzip_layer_image(d: Path, tag: str, layer_data: bytes) -> str:
    """An OCI image layout with one layer holding ``layer_data``; its layer digest.

    The layer is gzipped: skopeo would compress an uncompressed one on the
    way in, and its digest would not be the one here.
    """
    layer = gzip.compress(tar_layer({"data.bin": layer_data}), compresslevel=1, mtime=0)
    oci_layout(d, [layer], tag=tag)
    return _sha(layer)


def skopeo(*args: str) -> str:
    assert SKOPEO is not None
    out = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def bucket(moto: Moto) -> Iterator[S3Driver]:
    name = f"ketch-serve-{secrets.token_hex(5)}"
    d = make_driver(moto, name, root=PREFIX)
    d.client.create_bucket(Bucket=name)
    yield d
    remove_bucket(d)


def storage_args(moto: Moto, d: S3Driver) -> list[str]:
    """``--storage s3`` and its options for the bucket of ``d``."""
    opts = [f"bucket={d.bucket}", f"endpoint={moto.endpoint}", "region=us-east-1",
            f"prefix={PREFIX}", "part-size=5MiB"]
    args = ["--storage", "s3"]
    for opt in opts:
        args += ["--storage-opt", opt]
    return args


def s3_env() -> dict[str, str]:
    """Fake credentials for moto; no instance metadata lookup (it would leave loopback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_EC2_METADATA_DISABLED="true")
    return env


def skip_unless_wired(output: str) -> None:
    if "not supported" in output and "s3" in output:
        pytest.skip(f"ketch registry --storage s3 is not wired yet: {output.strip()}")


def ketch_registry(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "ketch.cli.main", "registry", *args],
                         capture_output=True, text=True, timeout=300, env=s3_env(),
                         stdin=subprocess.DEVNULL)
    skip_unless_wired(out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def serve_s3(moto: Moto,
             start_registry: Callable[..., Registry]) -> Callable[[S3Driver], str]:
    """Start ``ketch registry serve`` on a bucket; its host:port. Stopped by its pid after."""

    def start(d: S3Driver) -> str:
        try:
            reg = start_registry("ketch", storage=storage_args(moto, d), env=s3_env())
        except AssertionError as exc:   # its message holds the server's log
            skip_unless_wired(str(exc))
            raise
        return reg.host

    return start


def test_skopeo_copy_in_and_out(bucket: S3Driver, serve_s3: Callable[[S3Driver], str],
                                tmp_path: Path) -> None:
    host = serve_s3(bucket)
    layer_data = blob(12 * MiB, seed=21)
    layer_digest = gzip_layer_image(tmp_path / "src", "v1", layer_data)
    skopeo("copy", f"oci:{tmp_path / 'src'}:v1", f"docker://{host}/s3/rand:v1",
           "--dest-tls-verify=false")

    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/s3/rand:v1"))
    assert inspected["Layers"] == [layer_digest]
    skopeo("copy", f"docker://{host}/s3/rand:v1", f"oci:{tmp_path / 'out'}:v1",
           "--src-tls-verify=false")
    pulled = tmp_path / "out" / "blobs" / "sha256" / layer_digest.split(":")[1]
    with tarfile.open(pulled, "r:gz") as tar:
        member = tar.extractfile("data.bin")
        assert member is not None
        assert member.read() == layer_data

    # The blobs are objects under the prefix; nothing of the upload is left.
    keys = [info.path for info in bucket.walk("/")]
    assert any(p.endswith(layer_digest.split(":")[1] + "/data") for p in keys), keys
    assert not any("_uploads" in p for p in keys), keys
    assert bucket.client.list_multipart_uploads(Bucket=bucket.bucket).get("Uploads", []) == []

    # A second copy in (another tag) finds the blobs there already.
    skopeo("copy", f"oci:{tmp_path / 'src'}:v1", f"docker://{host}/s3/rand:v2",
           "--dest-tls-verify=false")
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{host}/s3/rand"))
    assert sorted(tags["Tags"]) == ["v1", "v2"]


def test_gc_and_fsck_on_s3(moto: Moto, bucket: S3Driver,
                           serve_s3: Callable[[S3Driver], str], tmp_path: Path) -> None:
    host = serve_s3(bucket)
    old = gzip_layer_image(tmp_path / "old", "v1", blob(6 * MiB, seed=22))
    new = gzip_layer_image(tmp_path / "new", "v1", blob(2 * MiB, seed=23))
    for src in ("old", "new"):  # the tag moves: the old image is left untagged
        skopeo("copy", f"oci:{tmp_path / src}:v1", f"docker://{host}/s3/gc:v1",
               "--dest-tls-verify=false")

    def blobs() -> set[str]:
        return {"sha256:" + p.split("/")[-2] for p in
                (info.path for info in bucket.walk("/blobs"))}

    assert {old, new} <= blobs()
    storage = storage_args(moto, bucket)
    ketch_registry("fsck", *storage)
    ketch_registry("gc", "--delete-untagged", *storage)
    left = blobs()
    assert new in left and old not in left
    ketch_registry("fsck", *storage)
    skopeo("copy", f"docker://{host}/s3/gc:v1", f"oci:{tmp_path / 'out'}:v1",
           "--src-tls-verify=false")
    assert (tmp_path / "out" / "blobs" / "sha256" / new.split(":")[1]).exists()
