"""The S3 storage driver: driver paths as object keys in an S3-compatible bucket.

A driver path ``/a/b`` is the key ``<root>/a/b``; a "directory" is a key
prefix ending in ``/`` that some object starts with (S3 has no directories).

S3 cannot append to an object, and an upload crosses several requests (a
chunked push is a PATCH per chunk, each one a ``writer(append=True)`` that is
closed at the end), so a writer keeps its unfinished file in two hidden places:

- a multipart upload for the path's own key, holding the full parts (each of
  ``part_size``, which S3 requires to be at least 5 MiB for all parts but the
  last), invisible until it is completed;
- a small "tail" object ``<dir>/.#partial.<name>`` with the bytes after the last
  full part, and in its metadata the upload's id and how many parts were kept.

``close`` writes the tail (when anything was written); ``writer(append=True)``
reads it back and goes on after the kept parts; ``commit`` uploads the tail
as the last part and completes the upload straight into the path's key (so
nothing is copied), or, for a file smaller than one part, puts it whole.
Parts a crashed writer uploaded after the last close are past the kept count
and are left out of the completion; commit, cancel and a fresh writer abort
the key's other uploads. An upload abandoned for good (its client gone, the
server killed) is removed by ``delete`` of its directory (the registry's gc
of stale uploads); a bucket lifecycle rule (AbortIncompleteMultipartUpload)
is the backstop. The ``#`` in the tail's name cannot occur in a driver path,
so ``list`` and ``walk`` never show it, like the directory driver's partial
files.

boto3 is imported when a driver is made, not with this module: the directory
driver's users never pay for it.
"""

from __future__ import annotations

import builtins
import io
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from ketch.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    KetchError,
    NotSupported,
    System,
    Unavailable,
)
from ketch.registry.server.driver import FileInfo, PathNotFound, check_path

MiB = 1024 * 1024
GiB = 1024 * MiB
# S3's limits: every part but the last at least 5 MiB, at most 5 GiB, at most
# 10000 parts; a single PutObject or CopyObject at most 5 GiB.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10000
MAX_SINGLE_COPY = 5 * GiB
# Large enough that a 500 MB layer is ~30 requests, small enough to buffer per upload.
DEFAULT_PART_SIZE = 16 * MiB
# What one GetObject response is read in: big reads keep the per-call cost of
# botocore's stream wrapper negligible next to the network.
READ_CHUNK = 1 * MiB

_PARTIAL = ".#partial."
_META_UPLOAD = "ketch-upload-id"
_META_PARTS = "ketch-parts"
# Loose on purpose: AWS wants 3-63 lowercase characters, some compatible
# servers allow more; the server judges, this only keeps "/" and blanks out.
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")

# Error codes that mean "the key (or upload) is not there" rather than a failure.
_MISSING_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                      "RequestTimeTooSkewed", "Throttling", "ThrottlingException"}


def _code(exc: Exception) -> str:
    """The S3 error code of a ClientError ("NoSuchKey", "InvalidRange", "404" for a HEAD)."""
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _root_prefix(root: str) -> str:
    """``root`` as a key prefix (``""`` or ``"a/b/"``), checked like a driver path."""
    stripped = root.strip("/")
    if not stripped:
        return ""
    try:
        check_path("/" + stripped)
    except InvalidArgument:
        raise InvalidArgument(f"invalid S3 root prefix: {root!r}") from None
    return stripped + "/"


class S3Driver:
    """A StorageDriver on an S3 bucket (AWS, MinIO, Ceph RGW, moto, ...).

    Credentials are ``access_key``/``secret_key`` when given, else boto3's own
    chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
    ``~/.aws``, instance roles). ``verify`` is False to accept any TLS
    certificate, or a CA bundle's path. ``path_style`` (default: on when an
    ``endpoint_url`` is given) addresses ``endpoint/bucket/key`` as MinIO and
    most self-hosted servers want, instead of ``bucket.endpoint/key``.
    """

    name = "s3"

    def __init__(self, bucket: str, *, region: str | None = None,
                 endpoint_url: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 session_token: str | None = None, root: str = "",
                 part_size: int = DEFAULT_PART_SIZE, verify: bool | str = True,
                 path_style: bool | None = None) -> None:
        if not bucket or not _BUCKET.fullmatch(bucket):
            raise InvalidArgument(f"invalid S3 bucket name: {bucket!r}")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise InvalidArgument(
                f"S3 part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes: {part_size}")
        if (access_key is None) != (secret_key is None):
            raise InvalidArgument("S3 access key and secret key go together")
        self.bucket = bucket
        self.prefix = _root_prefix(root)
        self.part_size = part_size
        self.endpoint_url = endpoint_url
        # Both may be lowered (tests do) to take the multipart copy and the
        # batched delete paths with little data.
        self.copy_part_size = MAX_SINGLE_COPY
        self.delete_batch = 1000  # DeleteObjects' maximum

        import boto3
        import botocore.config
        import botocore.exceptions as bexc

        self._client_error: type[Exception] = bexc.ClientError
        self._boto_error: type[Exception] = bexc.BotoCoreError
        self._connection_errors: tuple[type[Exception], ...] = (
            bexc.EndpointConnectionError, bexc.ConnectionError, bexc.ConnectionClosedError,
            bexc.ReadTimeoutError, bexc.ConnectTimeoutError, bexc.ProxyConnectionError,
            bexc.IncompleteReadError, bexc.ResponseStreamingError)
        self._credential_errors: tuple[type[Exception], ...] = (
            bexc.NoCredentialsError, bexc.PartialCredentialsError,
            bexc.CredentialRetrievalError)
        if path_style is None:
            path_style = endpoint_url is not None
        config = botocore.config.Config(
            region_name=region,
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10, read_timeout=60,
            # The server calls the driver from a thread pool; one connection each.
            max_pool_connections=32,
            # botocore >= 1.36 adds CRC checksums to every upload by default,
            # which several S3-compatible servers reject; the registry checks
            # every blob's digest itself.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            aws_session_token=session_token, region_name=region)
        # True means "check", with boto3's choice of CA bundle (AWS_CA_BUNDLE,
        # ca_bundle in ~/.aws/config), which an explicit True would override.
        self.client: Any = session.client("s3", endpoint_url=endpoint_url,
                                          verify=None if verify is True else verify,
                                          config=config)

    # -- keys and errors -------------------------------------------------

    def _key(self, path: str) -> str:
        check_path(path)
        return self.prefix if path == "/" else self.prefix + path[1:]

    def _dir_prefix(self, path: str) -> str:
        """The prefix every key under the directory ``path`` starts with."""
        check_path(path)
        return self.prefix if path == "/" else self.prefix + path[1:] + "/"

    def _path(self, key: str) -> str | None:
        """The driver path of ``key``, or None for hidden and foreign keys."""
        if not key.startswith(self.prefix):
            return None
        path = "/" + key[len(self.prefix):]
        try:
            return check_path(path)
        except InvalidArgument:
            return None

    def _tail_key(self, path: str) -> str:
        key = self._key(path)
        head, _, name = key.rpartition("/")
        return f"{head}/{_PARTIAL}{name}" if head else f"{_PARTIAL}{name}"

    def _translate(self, exc: Exception, op: str, path: str) -> KetchError:
        if isinstance(exc, self._client_error):
            response: dict[str, Any] = getattr(exc, "response", None) or {}
            error = response.get("Error", {})
            code = _code(exc)
            message = str(error.get("Message", "") or code)
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            text = f"s3 {op} {path}: {code}: {message}"
            if code == "NoSuchBucket":
                return Unavailable(f"s3 bucket {self.bucket!r} does not exist: {message}")
            if code in _MISSING_CODES or status == 404:
                return PathNotFound(path)
            if status in (401, 403):
                return Forbidden(text)
            if code == "NotImplemented" or status == 501:
                return NotSupported(text)
            if status in (409, 412):
                return Conflict(text)
            if code in _UNAVAILABLE_CODES or status in (429, 500, 502, 503, 504):
                return Unavailable(text)
            if status in (400, 411, 416):
                return InvalidArgument(text)
            return System(text)
        if isinstance(exc, self._connection_errors):
            return Unavailable(f"s3 endpoint {self.endpoint_url or 'aws'}: {exc}")
        if isinstance(exc, self._credential_errors):
            return Unavailable(f"s3: {exc} (give an access key, or set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY)")
        return System(f"s3 {op} {path}: {exc}")

    @contextmanager
    def _errors(self, op: str, path: str) -> Iterator[None]:
        """Turn botocore's exceptions into ketch's kinds, keeping the cause."""
        try:
            yield
        except (self._client_error, self._boto_error) as exc:
            raise self._translate(exc, op, path) from exc

    def _missing(self, exc: Exception) -> bool:
        return isinstance(self._translate(exc, "", ""), PathNotFound)

    def check_bucket(self) -> None:
        """Fail now (not at the first request) if the bucket is missing or not ours."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._client_error as exc:
            if self._missing(exc):  # HeadBucket has no body: a bare 404
                raise Unavailable(f"s3 bucket {self.bucket!r} does not exist") from exc
            raise self._translate(exc, "HeadBucket", "/") from exc
        except self._boto_error as exc:
            raise self._translate(exc, "HeadBucket", "/") from exc

    # -- whole files -----------------------------------------------------

    def get_content(self, path: str) -> bytes:
        key = self._key(path)
        if path == "/":
            raise PathNotFound(path)
        with self._errors("GetObject", path):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                return cast(bytes, body.read())
            finally:
                body.close()

    def put_content(self, path: str, data: bytes) -> None:
        key = self._key(path)
        if path == "/":
            raise InvalidArgument("the storage root is a directory")
        # One PutObject: S3 makes the new object visible whole or not at all.
        with self._errors("PutObject", path):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        key = self._key(path)
        if offset < 0:
            raise InvalidArgument(f"negative offset: {offset}")
        if path == "/":
            raise PathNotFound(path)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset:
            args["Range"] = f"bytes={offset}-"
        with self._errors("GetObject", path):
            try:
                response = self.client.get_object(**args)
            except self._client_error as exc:
                if _code(exc) != "InvalidRange":
                    raise
                response = None
        if response is None:
            # S3 answers 416 for a range starting at or past the end; a file
            # read from its end (a resumed download that had it all) is empty.
            self.stat(path)
            return io.BytesIO(b"")
        return io.BufferedReader(_BodyReader(response["Body"], self, path),
                                 buffer_size=READ_CHUNK)

    # -- unfinished files ------------------------------------------------

    def writer(self, path: str, append: bool = False) -> S3Writer:
        key = self._key(path)
        if path == "/":
            raise InvalidArgument("the storage root is a directory")
        tail_key = self._tail_key(path)
        if not append:
            # Whatever an earlier writer left unfinished here is dropped, as
            # the directory driver truncates its partial file.
            self._abort_uploads(path, key)
            with self._errors("DeleteObject", path):
                self.client.delete_object(Bucket=self.bucket, Key=tail_key)
            return S3Writer(self, path, key, tail_key, None, [], bytearray())
        with self._errors("GetObject", path):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=tail_key)
            except self._client_error as exc:
                if self._missing(exc):
                    # Nothing kept yet: an append starts an empty file.
                    return S3Writer(self, path, key, tail_key, None, [], bytearray())
                raise
            try:
                tail = bytearray(response["Body"].read())
            finally:
                response["Body"].close()
        meta = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
        upload_id = meta.get(_META_UPLOAD)
        if not upload_id:
            return S3Writer(self, path, key, tail_key, None, [], tail)
        kept = int(meta.get(_META_PARTS, "0"))
        parts = self._kept_parts(path, key, upload_id, kept)
        return S3Writer(self, path, key, tail_key, upload_id, parts, tail)

    def _kept_parts(self, path: str, key: str, upload_id: str,
                    kept: int) -> list[tuple[int, str, int]]:
        """Parts 1..kept of an upload as (number, etag, size); later ones a crashed writer sent are left out."""
        parts: dict[int, tuple[int, str, int]] = {}
        with self._errors("ListParts", path):
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id)
            for page in pages:
                for part in page.get("Parts", []):
                    number = int(part["PartNumber"])
                    if number <= kept:
                        parts[number] = (number, str(part["ETag"]), int(part["Size"]))
        if sorted(parts) != list(range(1, kept + 1)):
            raise System(f"s3 upload of {path}: parts missing from multipart upload {upload_id}")
        return [parts[n] for n in range(1, kept + 1)]

    def _abort_uploads(self, path: str, prefix: str, exact: bool = True) -> None:
        """Abort the multipart uploads of ``prefix`` (that key only, or every key under it)."""
        with self._errors("ListMultipartUploads", path):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if exact and upload["Key"] != prefix:
                        continue
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    except self._client_error as exc:
                        # Gone already (completed or aborted by another writer).
                        if not self._missing(exc):
                            raise

    # -- metadata and the tree -------------------------------------------

    def stat(self, path: str) -> FileInfo:
        key = self._key(path)
        if path == "/":
            # The bucket (or root prefix) is the store: it exists even empty.
            return FileInfo(path, 0, 0.0, True)
        try:
            with self._errors("HeadObject", path):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            return FileInfo(path, int(head["ContentLength"]),
                            head["LastModified"].timestamp())
        except PathNotFound:
            pass
        with self._errors("ListObjectsV2", path):
            listed = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=key + "/", MaxKeys=1)
        contents = listed.get("Contents", [])
        if not contents:
            raise PathNotFound(path)
        # A prefix has no time of its own; the first object under it is a
        # real time of something in it, at the cost of one key listed.
        return FileInfo(path, 0, contents[0]["LastModified"].timestamp(), True)

    def list(self, path: str) -> list[str]:
        prefix = self._dir_prefix(path)
        found = False
        children: set[str] = set()
        with self._errors("ListObjectsV2", path):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for entry in page.get("CommonPrefixes", []):
                    found = True
                    child = self._path(entry["Prefix"].rstrip("/"))
                    if child is not None:
                        children.add(child)
                for obj in page.get("Contents", []):
                    found = True
                    child = self._path(obj["Key"])
                    if child is not None:
                        children.add(child)
        if not found and path != "/":
            raise PathNotFound(path)
        return sorted(children)

    def move(self, src: str, dst: str) -> None:
        src_key, dst_key = self._key(src), self._key(dst)
        if "/" in (src, dst):
            raise InvalidArgument("the storage root is a directory")
        with self._errors("HeadObject", src):
            size = int(self.client.head_object(Bucket=self.bucket, Key=src_key)["ContentLength"])
        if src == dst:
            # S3 refuses a copy onto itself, and the delete after it would lose the file.
            return
        if size <= self.copy_part_size:
            with self._errors("CopyObject", src):
                self.client.copy_object(Bucket=self.bucket, Key=dst_key,
                                        CopySource={"Bucket": self.bucket, "Key": src_key})
        else:
            self._multipart_copy(src, src_key, dst_key, size)
        with self._errors("DeleteObject", src):
            self.client.delete_object(Bucket=self.bucket, Key=src_key)

    def _multipart_copy(self, path: str, src_key: str, dst_key: str, size: int) -> None:
        """Copy an object too big for one CopyObject, range by range, server-side."""
        with self._errors("CreateMultipartUpload", path):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=dst_key)["UploadId"]
        try:
            parts = []
            with self._errors("UploadPartCopy", path):
                for number, start in enumerate(range(0, size, self.copy_part_size), 1):
                    end = min(start + self.copy_part_size, size) - 1
                    result = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=dst_key, UploadId=upload_id, PartNumber=number,
                        CopySource={"Bucket": self.bucket, "Key": src_key},
                        CopySourceRange=f"bytes={start}-{end}")
                    parts.append({"PartNumber": number,
                                  "ETag": result["CopyPartResult"]["ETag"]})
            with self._errors("CompleteMultipartUpload", path):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=dst_key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort_quietly(dst_key, upload_id)
            raise

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        """Abort after a failure, which is the error worth reporting, not this one."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - best effort, the first failure is raised
            pass

    def delete(self, path: str) -> None:
        key = self._key(path)
        if path == "/":
            raise InvalidArgument("refusing to delete the storage root")
        found = False
        try:
            with self._errors("HeadObject", path):
                self.client.head_object(Bucket=self.bucket, Key=key)
            found = True
            with self._errors("DeleteObject", path):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except PathNotFound:
            pass
        prefix = key + "/"
        with self._errors("DeleteObjects", path):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys = [obj["Key"] for obj in page.get("Contents", [])]
                found = found or bool(keys)
                for i in range(0, len(keys), self.delete_batch):
                    self._delete_keys(path, keys[i:i + self.delete_batch])
        if found:
            # Unfinished uploads in the tree go with it, as its partial files do.
            self._abort_uploads(path, prefix, exact=False)
        else:
            raise PathNotFound(path)

    def _delete_keys(self, path: str, keys: builtins.list[str]) -> None:
        result = self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = result.get("Errors", [])
        if errors:
            first = errors[0]
            raise System(f"s3 DeleteObjects {path}: {len(errors)} keys not deleted, "
                         f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}")

    def walk(self, path: str) -> Iterator[FileInfo]:
        prefix = self._dir_prefix(path)
        found = False
        last = ""
        with self._errors("ListObjectsV2", path):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    found = True
                    child = self._path(obj["Key"])
                    if child is None:
                        continue
                    # S3 lists keys in byte order, which is path order (the
                    # prefix is shared and paths are ASCII), so the walk
                    # streams; a server that did not sort would break that.
                    if child <= last:
                        raise System(f"s3 server listed {child} after {last}: keys not sorted")
                    last = child
                    yield FileInfo(child, int(obj["Size"]), obj["LastModified"].timestamp())
        if not found and path != "/":
            # A file walks as itself, as in the directory driver.
            info = self.stat(path)
            if info.is_dir:
                return
            yield info


class S3Writer:
    """An unfinished S3 file: full parts in a multipart upload, the rest in a hidden tail object."""

    def __init__(self, driver: S3Driver, path: str, key: str, tail_key: str,
                 upload_id: str | None, parts: list[tuple[int, str, int]],
                 buffer: bytearray) -> None:
        self._driver = driver
        self._path = path
        self._key = key
        self._tail_key = tail_key
        self._upload_id = upload_id
        self._parts = parts
        self._buffer = buffer
        self._size = sum(p[2] for p in parts) + len(buffer)
        self._done = False
        # Until a write, the bucket already holds this writer's state (a fresh
        # writer removed the old one): a status check's open and close cost no upload.
        self._dirty = False

    @property
    def size(self) -> int:
        return self._size

    def _check_open(self) -> None:
        if self._done:
            raise Conflict(f"upload of {self._path} already closed")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        view = memoryview(data).cast("B")
        n = view.nbytes
        self._dirty = True
        part_size = self._driver.part_size
        if not self._buffer:
            # Whole parts straight from the caller's data, not through the buffer.
            while len(view) >= part_size:
                self._upload_part(bytes(view[:part_size]))
                view = view[part_size:]
                self._size += part_size
        self._buffer += view
        self._size += len(view)
        while len(self._buffer) >= part_size:
            with memoryview(self._buffer) as whole:
                chunk = bytes(whole[:part_size])
            self._upload_part(chunk)
            # bytearray drops a prefix without moving the rest (CPython keeps a start offset).
            del self._buffer[:part_size]
        return n

    def _upload_part(self, chunk: bytes) -> None:
        d = self._driver
        if len(self._parts) >= MAX_PARTS:
            raise NotSupported(f"upload of {self._path}: more than {MAX_PARTS} parts of "
                               f"{d.part_size} bytes (raise the S3 part size)")
        if self._upload_id is None:
            with d._errors("CreateMultipartUpload", self._path):
                self._upload_id = d.client.create_multipart_upload(
                    Bucket=d.bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        with d._errors("UploadPart", self._path):
            result = d.client.upload_part(
                Bucket=d.bucket, Key=self._key, UploadId=self._upload_id,
                PartNumber=number, Body=chunk)
        self._parts.append((number, str(result["ETag"]), len(chunk)))

    def close(self) -> None:
        """Keep what was written: the tail object records the rest and the upload's state."""
        if self._done:
            return
        self._done = True
        if not self._dirty:
            return
        d = self._driver
        metadata = {}
        if self._upload_id is not None:
            metadata = {_META_UPLOAD: self._upload_id, _META_PARTS: str(len(self._parts))}
        with d._errors("PutObject", self._path):
            d.client.put_object(Bucket=d.bucket, Key=self._tail_key, Body=bytes(self._buffer),
                                Metadata=metadata)

    def commit(self) -> None:
        """Make the file readable at its path: one completion (or PutObject), no copy."""
        self._check_open()
        self._done = True
        d = self._driver
        if self._upload_id is None:
            with d._errors("PutObject", self._path):
                d.client.put_object(Bucket=d.bucket, Key=self._key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._upload_part(bytes(self._buffer))
            parts = [{"PartNumber": n, "ETag": etag} for n, etag, _ in self._parts]
            with d._errors("CompleteMultipartUpload", self._path):
                d.client.complete_multipart_upload(
                    Bucket=d.bucket, Key=self._key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts})
        self._buffer = bytearray()
        with d._errors("DeleteObject", self._path):
            d.client.delete_object(Bucket=d.bucket, Key=self._tail_key)
        # Uploads a crashed writer started for this key (before it ever closed) end here.
        d._abort_uploads(self._path, self._key)

    def cancel(self) -> None:
        """Drop the unfinished file (not a file committed earlier at the path)."""
        self._done = True
        self._buffer = bytearray()
        d = self._driver
        d._abort_uploads(self._path, self._key)
        with d._errors("DeleteObject", self._path):
            d.client.delete_object(Bucket=d.bucket, Key=self._tail_key)


class _BodyReader(io.RawIOBase):
    """A GetObject response body as a raw stream, with botocore's errors as ketch's."""

    def __init__(self, body: Any, driver: S3Driver, path: str) -> None:
        self._body = body
        self._driver = driver
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._driver._errors("GetObject", self._path):
            data = self._body.read(len(view))
        view[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        # RawIOBase's readall reads 8 KiB at a time; the body can do it at once.
        with self._driver._errors("GetObject", self._path):
            return cast(bytes, self._body.read())

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


# -- ``--storage s3 --storage-opt key=value`` ------------------------------------

OPTIONS = {
    "bucket": "the bucket (required)",
    "region": "the region (default: AWS_REGION, AWS_DEFAULT_REGION or ~/.aws/config)",
    "endpoint": "the S3 endpoint URL, for S3-compatible servers (default: AWS)",
    "prefix": "the key prefix the registry lives under (default: the bucket root)",
    "part-size": f"multipart upload part size, at least 5MiB (default {DEFAULT_PART_SIZE // MiB}MiB)",
    "access-key": "access key id (default: AWS_ACCESS_KEY_ID or boto3's chain)",
    "secret-key": "secret access key (default: AWS_SECRET_ACCESS_KEY or boto3's chain)",
    "tls-verify": "true or false: check the endpoint's TLS certificate (default true)",
    "ca-bundle": "CA certificates (PEM) to check the endpoint's certificate with",
    "path-style": "true or false: endpoint/bucket/key URLs (default: true with an endpoint)",
}
_SIZE = re.compile(r"(\d+)\s*(?:([kmg])i?b?)?", re.IGNORECASE)
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _size_option(name: str, text: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise InvalidArgument(f"invalid s3 option {name}={text!r}: a size such as 16MiB expected")
    unit = {"": 1, "k": 1024, "m": MiB, "g": GiB}[(m.group(2) or "").lower()]
    return int(m.group(1)) * unit


def _bool_option(name: str, text: str) -> bool:
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise InvalidArgument(f"invalid s3 option {name}={text!r}: true or false expected") from None


def driver_from_options(options: Mapping[str, str]) -> S3Driver:
    """The driver ``--storage s3`` makes from its ``--storage-opt key=value`` words (see OPTIONS).

    Credentials are best left to the environment (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``): a command line is visible
    to every user of the host.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidArgument(f"unknown s3 storage option {unknown[0]!r} "
                              f"(known: {', '.join(sorted(OPTIONS))})")
    bucket = options.get("bucket", "")
    if not bucket:
        raise InvalidArgument("the s3 storage needs --storage-opt bucket=NAME")
    verify: bool | str = _bool_option("tls-verify", options.get("tls-verify", "true"))
    ca_bundle = options.get("ca-bundle")
    if ca_bundle:
        if not verify:
            raise InvalidArgument("s3 options ca-bundle and tls-verify=false contradict")
        if not os.path.isfile(ca_bundle):
            raise InvalidArgument(f"s3 option ca-bundle: no such file: {ca_bundle}")
        verify = ca_bundle
    path_style = options.get("path-style")
    return S3Driver(
        bucket, region=options.get("region") or None,
        endpoint_url=options.get("endpoint") or None,
        access_key=options.get("access-key") or None,
        secret_key=options.get("secret-key") or None,
        root=options.get("prefix", ""),
        part_size=_size_option("part-size", options.get("part-size", str(DEFAULT_PART_SIZE))),
        verify=verify,
        path_style=None if path_style is None else _bool_option("path-style", path_style))
