"""The S3 storage driver on a moto S3 server on loopback: the driver contract, then S3's own cases.

moto runs as a subprocess (``python -m moto.server``) on a free port of
127.0.0.1, started once for the module and killed in its finalizer; every test
gets a bucket of its own. Credentials are fake (moto does not check them), and
the driver's root prefix is not the bucket root, with foreign objects beside
it, so every test also checks that the driver keeps to its prefix.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.registries import Moto, free_port, moto_server, self_signed
from tests.unit.registry_driver_contract import DriverContract, MiB, blob, walked

from ketch.errors import Forbidden, InvalidArgument, Unavailable
from ketch.registry.server.driver import PathNotFound
from ketch.registry.server.s3driver import MIN_PART_SIZE, S3Driver, driver_from_options

ROOT = "reg/root"
# Beside the driver's prefix: a sibling whose name starts like it, and the bucket root.
FOREIGN = {"reg/rootx/y": b"sibling", "reg/root-a": b"dash", "outside": b"out"}
CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


def make_driver(moto: Moto, bucket: str, **kw: Any) -> S3Driver:
    options: dict[str, Any] = {"region": "us-east-1", "endpoint_url": moto.endpoint,
                               "root": ROOT, "part_size": MIN_PART_SIZE, **CREDENTIALS}
    options.update(kw)
    return S3Driver(bucket, **options)


def objects(d: S3Driver) -> dict[str, bytes]:
    """Every object in the driver's bucket, foreign ones too, hidden ones too."""
    out = {}
    for page in d.client.get_paginator("list_objects_v2").paginate(Bucket=d.bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = d.client.get_object(Bucket=d.bucket, Key=obj["Key"])["Body"].read()
    return out


def uploads(d: S3Driver) -> list[str]:
    listed = d.client.list_multipart_uploads(Bucket=d.bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


@pytest.fixture
def s3(moto: Moto) -> Iterator[S3Driver]:
    bucket = f"ketch-{secrets.token_hex(6)}"
    d = make_driver(moto, bucket)
    d.client.create_bucket(Bucket=bucket)
    for key, data in FOREIGN.items():
        d.client.put_object(Bucket=bucket, Key=key, Body=data)
    yield d
    # What the driver left must not have touched what is not its own.
    left = objects(d)
    for key, data in FOREIGN.items():
        assert left.pop(key) == data
    assert all(k.startswith(ROOT + "/") for k in left)
    remove_bucket(d)


def remove_bucket(d: S3Driver) -> None:
    """The driver's bucket gone, with every object and unfinished multipart upload in it."""
    for page in d.client.get_paginator("list_objects_v2").paginate(Bucket=d.bucket):
        for obj in page.get("Contents", []):
            d.client.delete_object(Bucket=d.bucket, Key=obj["Key"])
    for upload in d.client.list_multipart_uploads(Bucket=d.bucket).get("Uploads", []):
        d.client.abort_multipart_upload(Bucket=d.bucket, Key=upload["Key"],
                                        UploadId=upload["UploadId"])
    d.client.delete_bucket(Bucket=d.bucket)


@pytest.fixture
def driver(s3: S3Driver) -> S3Driver:
    return s3


class TestS3DriverContract(DriverContract):
    pass


# -- configuration -----------------------------------------------------------

@pytest.mark.parametrize("kw", [{"part_size": MIN_PART_SIZE - 1}, {"root": "../up"},
                                {"root": "a//b"}, {"access_key": "only-the-key"}])
def test_bad_options_refused(moto: Moto, kw: dict[str, Any]) -> None:
    if "access_key" in kw:
        kw = {**kw, "secret_key": None}
    with pytest.raises(InvalidArgument):
        make_driver(moto, "bucket", **kw)


@pytest.mark.parametrize("bucket", ["", "a/b", "a b"])
def test_bad_bucket_refused(moto: Moto, bucket: str) -> None:
    with pytest.raises(InvalidArgument):
        make_driver(moto, bucket)


def test_keys_under_root_prefix(s3: S3Driver) -> None:
    s3.put_content("/a/b", b"1")
    w = s3.writer("/a/c")
    w.write(b"22")
    w.commit()
    stored = objects(s3)
    assert stored["reg/root/a/b"] == b"1"
    assert stored["reg/root/a/c"] == b"22"
    assert s3.list("/") == ["/a"]


def test_root_prefix_optional(moto: Moto, s3: S3Driver) -> None:
    # At the bucket root, the foreign objects are the driver's own files.
    whole = make_driver(moto, s3.bucket, root="")
    assert whole.get_content("/outside") == b"out"
    assert whole.list("/") == ["/outside", "/reg"]
    assert whole.list("/reg") == ["/reg/root-a", "/reg/rootx"]


def test_credentials_from_environment(moto: Moto, s3: S3Driver,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    d = make_driver(moto, s3.bucket, access_key=None, secret_key=None)
    d.put_content("/env", b"ok")
    assert d.get_content("/env") == b"ok"
    assert d.client._request_signer._credentials.access_key == "from-env"


def test_no_credentials_is_unavailable(moto: Moto, s3: S3Driver, tmp_path: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    # No file, and no instance metadata lookup (which would leave loopback).
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    d = make_driver(moto, s3.bucket, access_key=None, secret_key=None)
    with pytest.raises(Unavailable, match="AWS_ACCESS_KEY_ID"):
        d.get_content("/x")


# -- errors --------------------------------------------------------------------

def test_missing_bucket(moto: Moto) -> None:
    d = make_driver(moto, f"ketch-none-{secrets.token_hex(4)}")
    with pytest.raises(Unavailable, match="does not exist"):
        d.check_bucket()
    with pytest.raises(Unavailable, match="does not exist"):
        d.get_content("/x")
    with pytest.raises(Unavailable, match="does not exist"):
        d.put_content("/x", b"x")


def test_check_bucket(s3: S3Driver) -> None:
    s3.check_bucket()


def test_unreachable_endpoint(moto: Moto) -> None:
    d = S3Driver("bucket", region="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}",
                 **CREDENTIALS)
    with pytest.raises(Unavailable, match="127.0.0.1"):
        d.get_content("/x")
    with pytest.raises(Unavailable):
        list(d.walk("/"))


def test_access_denied_is_forbidden(s3: S3Driver) -> None:
    # moto checks no signatures; a bucket policy denying everyone is what it enforces.
    policy = ('{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*",'
              f'"Action":"s3:GetObject","Resource":"arn:aws:s3:::{s3.bucket}/*"}}]}}')
    s3.put_content("/f", b"x")
    s3.client.put_bucket_policy(Bucket=s3.bucket, Policy=policy)
    try:
        with pytest.raises(Forbidden, match="s3 GetObject /f: "):
            s3.get_content("/f")
    finally:
        s3.client.delete_bucket_policy(Bucket=s3.bucket)


# -- writers on S3 -------------------------------------------------------------

def test_closed_upload_is_hidden_parts_and_a_tail(s3: S3Driver) -> None:
    data = blob(6 * MiB, seed=10)
    w = s3.writer("/up/data")
    w.write(data)
    w.close()
    # One full part in the multipart upload, the remaining 1 MiB in the hidden tail.
    assert uploads(s3) == ["reg/root/up/data"]
    assert objects(s3)["reg/root/up/.#partial.data"] == data[MIN_PART_SIZE:]
    assert s3.list("/up") == []
    w = s3.writer("/up/data", append=True)
    w.commit()
    assert s3.get_content("/up/data") == data
    assert uploads(s3) == []
    assert [k for k in objects(s3) if k.startswith(ROOT + "/")] == ["reg/root/up/data"]


def test_small_file_is_one_put(s3: S3Driver) -> None:
    w = s3.writer("/small")
    w.write(b"abc")
    w.close()
    assert uploads(s3) == []
    w = s3.writer("/small", append=True)
    w.write(b"def")
    w.commit()
    assert s3.get_content("/small") == b"abcdef"
    assert uploads(s3) == []


def test_crashed_writer_leaves_out_what_it_did_not_keep(s3: S3Driver) -> None:
    kept = blob(6 * MiB, seed=11)
    w = s3.writer("/crash")
    w.write(kept)
    w.close()
    # A writer that dies after sending two more parts, without closing.
    lost = s3.writer("/crash", append=True)
    lost.write(blob(11 * MiB, seed=12))
    del lost
    w = s3.writer("/crash", append=True)
    assert w.size == len(kept)
    w.write(b"!")
    w.commit()
    assert s3.get_content("/crash") == kept + b"!"
    assert uploads(s3) == []


def test_crash_before_any_close_is_aborted_at_commit(s3: S3Driver) -> None:
    lost = s3.writer("/orphan")
    lost.write(blob(5 * MiB, seed=13))
    del lost
    assert uploads(s3) == ["reg/root/orphan"]
    w = s3.writer("/orphan", append=True)
    assert w.size == 0
    w.write(b"fresh")
    w.commit()
    assert s3.get_content("/orphan") == b"fresh"
    assert uploads(s3) == []


def test_fresh_writer_drops_unfinished_upload(s3: S3Driver) -> None:
    w = s3.writer("/again")
    w.write(blob(5 * MiB + 1, seed=14))
    w.close()
    assert uploads(s3) == ["reg/root/again"]
    w = s3.writer("/again")
    assert uploads(s3) == []
    assert w.size == 0
    w.write(b"new")
    w.commit()
    assert s3.get_content("/again") == b"new"


def test_writer_after_close_refuses_more(s3: S3Driver) -> None:
    w = s3.writer("/closed")
    w.write(b"x")
    w.close()
    with pytest.raises(Exception, match="closed"):
        w.write(b"y")
    with pytest.raises(Exception, match="closed"):
        w.commit()


def test_upload_that_vanished_is_not_found(s3: S3Driver) -> None:
    w = s3.writer("/gone")
    w.write(blob(5 * MiB + 10, seed=15))
    w.close()
    # A bucket lifecycle rule may abort an old unfinished upload.
    for upload in s3.client.list_multipart_uploads(Bucket=s3.bucket)["Uploads"]:
        s3.client.abort_multipart_upload(Bucket=s3.bucket, Key=upload["Key"],
                                         UploadId=upload["UploadId"])
    with pytest.raises(PathNotFound):
        s3.writer("/gone", append=True)
    s3.writer("/gone").cancel()


# -- big moves and deletes -------------------------------------------------------

def test_move_by_multipart_copy(s3: S3Driver) -> None:
    s3.copy_part_size = MIN_PART_SIZE  # as for an object over 5 GiB, with 12 MiB
    data = blob(12 * MiB + 1, seed=16)
    s3.put_content("/big", data)
    s3.move("/big", "/moved/big")
    assert s3.get_content("/moved/big") == data
    assert walked(s3) == ["/moved/big"]
    assert uploads(s3) == []


def test_move_onto_itself_keeps_the_file(s3: S3Driver) -> None:
    s3.put_content("/same", b"x")
    s3.move("/same", "/same")
    assert s3.get_content("/same") == b"x"


def test_delete_in_batches_with_unfinished_uploads(s3: S3Driver) -> None:
    s3.delete_batch = 2
    names = [f"/many/{i:02d}" for i in range(7)]
    for name in names:
        s3.put_content(name, name.encode())
    w = s3.writer("/many/sub/upload")
    w.write(blob(5 * MiB + 2, seed=17))
    w.close()
    s3.put_content("/manyx", b"kept")
    s3.delete("/many")
    assert walked(s3) == ["/manyx"]
    assert uploads(s3) == []
    with pytest.raises(PathNotFound):
        s3.delete("/many")
    with pytest.raises(InvalidArgument):
        s3.delete("/")


def test_reader_streams_large_object(s3: S3Driver) -> None:
    data = blob(12 * MiB, seed=18)
    s3.put_content("/stream", data)
    got = bytearray()
    with s3.reader("/stream", 3) as f:
        while chunk := f.read(100_000):
            got += chunk
    assert bytes(got) == data[3:]
    with s3.reader("/stream", len(data) + 10) as f:
        assert f.read() == b""


# -- --storage-opt ---------------------------------------------------------------

def test_driver_from_options(moto: Moto, s3: S3Driver) -> None:
    d = driver_from_options({"bucket": s3.bucket, "endpoint": moto.endpoint,
                             "region": "us-east-1", "prefix": "/reg/root/",
                             "part-size": "5MiB", "access-key": "k", "secret-key": "s"})
    assert (d.bucket, d.prefix, d.part_size) == (s3.bucket, "reg/root/", 5 * MiB)
    s3.put_content("/a", b"same store")
    assert d.get_content("/a") == b"same store"


@pytest.mark.parametrize("options, message", [
    ({}, "bucket=NAME"),
    ({"bucket": "b", "colour": "red"}, "unknown s3 storage option 'colour'"),
    ({"bucket": "b", "part-size": "1MiB"}, "part size"),
    ({"bucket": "b", "part-size": "lots"}, "a size"),
    ({"bucket": "b", "tls-verify": "maybe"}, "true or false"),
    ({"bucket": "b", "ca-bundle": "/nonexistent/ca.pem"}, "no such file"),
    ({"bucket": "b", "ca-bundle": "/etc/hostname", "tls-verify": "false"}, "contradict"),
])
def test_driver_from_bad_options(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        driver_from_options(options)


def test_driver_options_sizes_and_tls(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    d = driver_from_options({"bucket": "b", "part-size": "64m", "ca-bundle": str(ca),
                             "access-key": "k", "secret-key": "s", "region": "eu-west-1"})
    assert d.part_size == 64 * MiB
    assert d.client._endpoint.http_session._verify == str(ca)
    d = driver_from_options({"bucket": "b", "tls-verify": "false", "access-key": "k",
                             "secret-key": "s", "region": "eu-west-1"})
    assert d.client._endpoint.http_session._verify is False


def test_reopen_without_writing_sends_nothing(s3: S3Driver) -> None:
    # The server opens and closes an upload's writer to answer a status request.
    w = s3.writer("/status")
    w.write(blob(5 * MiB + 5, seed=19))
    w.close()
    calls: list[str] = []
    s3.client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    w = s3.writer("/status", append=True)
    assert w.size == 5 * MiB + 5
    w.close()
    assert calls == ["GetObject", "ListParts"]


# -- TLS -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Moto, Path]]:
    """moto over HTTPS with a self-signed certificate for 127.0.0.1; the certificate's path."""
    d = tmp_path_factory.mktemp("moto-tls")
    cert, key = self_signed(d)
    with moto_server(d / "moto.log", "-c", str(cert), "-k", str(key), scheme="https") as server:
        yield server, cert


def write_and_read_back(d: S3Driver) -> None:
    """A bucket made, an object written and read back, both removed: the connection works."""
    d.client.create_bucket(Bucket=d.bucket)
    d.put_content("/over/tls", b"secret")
    assert d.get_content("/over/tls") == b"secret"
    d.delete("/over")
    d.client.delete_bucket(Bucket=d.bucket)


def test_tls_with_ca_bundle(moto_tls: tuple[Moto, Path]) -> None:
    server, cert = moto_tls
    d = make_driver(server, f"ketch-tls-{secrets.token_hex(4)}", verify=str(cert))
    write_and_read_back(d)


def test_tls_untrusted_certificate_is_unavailable(moto_tls: tuple[Moto, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = moto_tls
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    d = make_driver(server, "ketch-tls-untrusted")
    with pytest.raises(Unavailable, match="certificate"):
        d.get_content("/x")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verify_off(moto_tls: tuple[Moto, Path]) -> None:
    server, _ = moto_tls
    d = make_driver(server, f"ketch-tls-{secrets.token_hex(4)}", verify=False)
    write_and_read_back(d)


def test_tls_ca_bundle_from_environment(moto_tls: tuple[Moto, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server, cert = moto_tls
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    d = make_driver(server, f"ketch-tls-{secrets.token_hex(4)}")
    write_and_read_back(d)
