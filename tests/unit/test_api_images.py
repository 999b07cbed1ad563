"""The /images routes over a fake backend: shapes, parameter parsing, error mapping, streams."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.unit.test_api_versions import Backend as SystemBackend

from ketch.api import make_app
from ketch.api.routers import images
from ketch.errors import Conflict, InvalidArgument, NotFound

ID = "sha256:" + "ab" * 32


@dataclass
class Summary:
    id: str
    repo_tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"Id": self.id, "ParentId": "", "RepoTags": self.repo_tags, "RepoDigests": [],
                "Created": 1700000000, "Size": 4096, "SharedSize": -1, "Labels": {},
                "Containers": -1}


class FakeImages:
    """Records every call; ``names`` are the images it knows."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.names = {"busybox", "me/box:1", ID}
        self.body = b""
        self.read_sizes: list[int] = []
        self.threads: set[str] = set()

    def _known(self, name: str) -> None:
        self.threads.add(threading.current_thread().name)
        if name not in self.names:
            raise NotFound(f"No such image: {name}")

    def list(self, filters: dict[str, list[str]] | None = None,
             all: bool = False) -> Sequence[Summary]:
        self.threads.add(threading.current_thread().name)
        self.calls.append(("list", filters, all))
        return [Summary(ID, ["busybox:latest"])]

    def inspect(self, name: str) -> dict[str, Any]:
        self._known(name)
        return {"Id": ID, "RepoTags": ["busybox:latest"], "Container": "",
                "ContainerConfig": {"Volumes": None}, "Size": 4096,
                "RootFS": {"Type": "layers", "Layers": ["sha256:" + "cd" * 32]}}

    def history(self, name: str) -> Sequence[Mapping[str, Any]]:
        self._known(name)
        return [{"Id": ID, "Created": 1, "CreatedBy": "x", "Tags": None, "Size": 1,
                 "Comment": ""}]

    def tag(self, src: str, dst: str) -> None:
        self._known(src)
        self.calls.append(("tag", src, dst))

    def remove(self, name: str, force: bool = False,
               noprune: bool = False) -> Sequence[Mapping[str, Any]]:
        self._known(name)
        self.calls.append(("remove", name, force, noprune))
        if name == ID and not force:
            raise Conflict("conflict: unable to delete abababababab (must be forced) - "
                           "image is referenced in multiple repositories")
        return [{"Untagged": "busybox:latest"}, {"Deleted": ID}]

    def prune(self, filters: dict[str, list[str]] | None = None, *,
              all: bool = False) -> dict[str, Any]:
        self.calls.append(("prune", filters))
        if filters and "foo" in filters:
            raise InvalidArgument("invalid filter 'foo'")
        return {"ImagesDeleted": None, "SpaceReclaimed": 0}

    def save(self, refs_or_ids: Sequence[str], out: BinaryIO) -> None:
        for name in refs_or_ids:
            self._known(name)
        self.calls.append(("save", list(refs_or_ids)))
        for i in range(5):
            out.write(bytes([i]) * 700_000)

    def _drain(self, stream: BinaryIO) -> None:
        self.threads.add(threading.current_thread().name)
        chunks = []
        while chunk := stream.read(images.CHUNK):
            self.read_sizes.append(len(chunk))
            chunks.append(chunk)
        self.body = b"".join(chunks)

    def load(self, stream: BinaryIO, moved: dict[str, str] | None = None
             ) -> Sequence[Summary]:
        self._drain(stream)
        if not self.body.startswith(b"TAR"):
            raise InvalidArgument("invalid archive: not a tar archive")
        if moved is not None:
            moved["me/box:1"] = "sha256:" + "00" * 32
        return [Summary(ID, ["busybox:latest", "me/box:1"]), Summary("sha256:" + "ef" * 32)]

    def import_rootfs(self, tar_stream: BinaryIO, ref: str | None = None,
                      changes: Sequence[str] = (), message: str = "") -> Summary:
        self._drain(tar_stream)
        self.calls.append(("import", ref, list(changes), message))
        return Summary(ID, [ref] if ref else [])


def call(fake: FakeImages, method: str, path: str,
         data: bytes | None = None) -> tuple[int, Any, Any]:
    async def go() -> tuple[int, Any, Any]:
        app = make_app(SystemBackend(), fake)
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, data=data)
            raw = await resp.read()
            body: Any = raw
            if resp.content_type == "application/json" and raw:
                text = raw.decode()
                if text.endswith("\r\n"):  # a JSON message stream, one object a line
                    body = [json.loads(line) for line in text.splitlines() if line]
                else:
                    body = json.loads(text)
            return resp.status, body, resp.headers

    return asyncio.run(go())


@pytest.fixture
def fake() -> FakeImages:
    return FakeImages()


# --- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "want"), [
    (None, {}),
    ("", {}),
    ('{"dangling":{"true":true}}', {"dangling": ["true"]}),
    ('{"reference":{"a/*":true,"b":false}}', {"reference": ["a/*"]}),
    ('{"label":["k=v","x"]}', {"label": ["k=v", "x"]}),
])
def test_parse_filters(raw: str | None, want: dict[str, list[str]]) -> None:
    assert images.parse_filters(raw) == want


@pytest.mark.parametrize("raw", ["{", "[1]", '{"a": 3}', '{"a": [1]}'])
def test_parse_filters_refuses(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        images.parse_filters(raw)


@pytest.mark.parametrize(("value", "want"), [
    ("1", True), ("true", True), ("True", True), ("yes", True),
    ("", False), ("0", False), ("false", False), ("no", False), ("none", False),
])
def test_bool_value(value: str, want: bool) -> None:
    assert images.bool_value({"force": value}, "force") is want
    assert images.bool_value({}, "force") is False


def test_tag_target() -> None:
    assert images.tag_target("me/box", "1") == "me/box:1"
    assert images.tag_target("me/box", "") == "me/box"
    with pytest.raises(InvalidArgument):
        images.tag_target("", "1")


# --- routes -------------------------------------------------------------------------------

def test_list_shape_filters_and_version_gate(fake: FakeImages) -> None:
    status, body, _ = call(fake, "GET",
                           '/v1.45/images/json?all=1&filters={"dangling":{"false":true}}')
    assert status == 200
    assert body == [{"Id": ID, "ParentId": "", "RepoTags": ["busybox:latest"],
                     "RepoDigests": [], "Created": 1700000000, "Size": 4096,
                     "SharedSize": -1, "Labels": {}, "Containers": -1}]
    assert fake.calls[-1] == ("list", {"dangling": ["false"]}, True)
    _, body, _ = call(fake, "GET", "/v1.43/images/json")
    assert body[0]["VirtualSize"] == 4096
    assert fake.calls[-1] == ("list", {}, False)
    # API < 1.28: the legacy filter= parameter is a reference filter.
    call(fake, "GET", "/v1.24/images/json?filter=busy*")
    assert fake.calls[-1] == ("list", {"reference": ["busy*"]}, False)
    call(fake, "GET", "/images/json?filter=busy*")
    assert fake.calls[-1] == ("list", {}, False)
    status, body, _ = call(fake, "GET", "/images/json?filters={bad")
    assert status == 400 and body["message"].startswith("invalid filter")
    assert fake.threads and threading.main_thread().name not in fake.threads


def test_inspect_history_and_not_found(fake: FakeImages) -> None:
    status, body, _ = call(fake, "GET", "/v1.45/images/me/box:1/json")
    assert status == 200 and body["Id"] == ID and "VirtualSize" not in body
    _, body, _ = call(fake, "GET", "/v1.43/images/busybox/json")
    assert body["VirtualSize"] == 4096
    # Container and ContainerConfig: gone from API 1.45 (docker-compose v1 reads the
    # latter, at the version it negotiates).
    assert "ContainerConfig" not in call(fake, "GET", "/v1.45/images/busybox/json")[1]
    _, body, _ = call(fake, "GET", "/v1.44/images/busybox/json")
    assert body["Container"] == "" and body["ContainerConfig"] == {"Volumes": None}
    status, body, _ = call(fake, "GET", "/images/nosuch/json")
    assert (status, body) == (404, {"message": "No such image: nosuch"})
    status, body, _ = call(fake, "GET", "/v1.45/images/busybox/history")
    assert status == 200 and body[0]["CreatedBy"] == "x"
    status, body, _ = call(fake, "GET", "/images/nosuch/history")
    assert status == 404


def test_tag(fake: FakeImages) -> None:
    status, body, _ = call(fake, "POST", "/v1.45/images/busybox/tag?repo=me/box&tag=2")
    assert (status, body) == (201, b"")
    assert fake.calls[-1] == ("tag", "busybox", "me/box:2")
    status, body, _ = call(fake, "POST", "/images/busybox/tag?tag=2")
    assert status == 400
    status, body, _ = call(fake, "POST", "/images/nosuch/tag?repo=x")
    assert status == 404


def test_delete_and_prune(fake: FakeImages) -> None:
    status, body, _ = call(fake, "DELETE", "/v1.45/images/me/box:1?force=0&noprune=1")
    assert status == 200
    assert body == [{"Untagged": "busybox:latest"}, {"Deleted": ID}]
    assert fake.calls[-1] == ("remove", "me/box:1", False, True)
    status, body, _ = call(fake, "DELETE", f"/images/{ID}")
    assert status == 409 and "must be forced" in body["message"]
    status, _, _ = call(fake, "DELETE", f"/images/{ID}?force=1")
    assert status == 200 and fake.calls[-1] == ("remove", ID, True, False)
    status, body, _ = call(fake, "POST", '/v1.45/images/prune?filters={"dangling":{"true":true}}')
    assert (status, body) == (200, {"ImagesDeleted": None, "SpaceReclaimed": 0})
    assert fake.calls[-1] == ("prune", {"dangling": ["true"]})
    call(fake, "POST", '/images/prune?filters={"dangling":["false"],"until":{"1h":true}}')
    assert fake.calls[-1] == ("prune", {"dangling": ["false"], "until": ["1h"]})
    status, body, _ = call(fake, "POST", '/images/prune?filters={"foo":["1"]}')
    assert (status, body) == (400, {"message": "invalid filter 'foo'"})


def test_save_streams_the_archive(fake: FakeImages) -> None:
    status, body, headers = call(fake, "GET", "/v1.45/images/get?names=busybox&names=me/box:1")
    assert status == 200 and headers["Content-Type"] == "application/x-tar"
    assert body == b"".join(bytes([i]) * 700_000 for i in range(5))
    assert fake.calls[-1] == ("save", ["busybox", "me/box:1"])
    status, body, _ = call(fake, "GET", "/images/me/box:1/get")
    assert status == 200 and len(body) == 3_500_000
    assert fake.calls[-1] == ("save", ["me/box:1"])
    # Nothing sent yet when the name is unknown: an ordinary 404.
    status, body, _ = call(fake, "GET", "/images/get?names=busybox&names=nosuch")
    assert (status, body) == (404, {"message": "No such image: nosuch"})


def test_load_reads_the_body_in_chunks_and_answers_a_message_stream(fake: FakeImages) -> None:
    data = b"TAR" + b"x" * (3 * images.CHUNK)
    for path in ("/v1.45/images/load", "/images/load?quiet=1"):
        status, body, headers = call(fake, "POST", path, data=data)
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert body == [{"stream": "Loaded image: busybox:latest\n"},
                        {"stream": "The image me/box:1 already exists, renaming the old one "
                                   "with ID sha256:" + "00" * 32 + " to empty string\n"},
                        {"stream": "Loaded image: me/box:1\n"},
                        {"stream": "Loaded image ID: sha256:" + "ef" * 32 + "\n"}]
        assert fake.body == data
        assert max(fake.read_sizes) <= images.CHUNK
    status, body, _ = call(fake, "POST", "/images/load", data=b"junk")
    assert status == 400 and body == {"message": "invalid archive: not a tar archive"}


def test_create_imports_from_the_body_and_refuses_pulls(fake: FakeImages) -> None:
    status, body, _ = call(
        fake, "POST",
        "/v1.45/images/create?fromSrc=-&repo=busybox:latest&tag=&message=hi"
        "&changes=CMD%20sh&changes=ENV%20A%3D1", data=b"rootfs tar")
    assert (status, body) == (200, [{"status": ID}])
    assert fake.body == b"rootfs tar"
    assert fake.calls[-1] == ("import", "busybox:latest", ["CMD sh", "ENV A=1"], "hi")
    call(fake, "POST", "/images/create?fromSrc=-&repo=me/box&tag=2", data=b"t")
    assert fake.calls[-1] == ("import", "me/box:2", [], "")
    call(fake, "POST", "/images/create?fromSrc=-", data=b"t")
    assert fake.calls[-1] == ("import", None, [], "")
    status, body, _ = call(fake, "POST", "/v1.45/images/create?fromImage=busybox&tag=latest")
    assert (status, body) == (501, {"message": "pulling images is not supported by this daemon"})
    status, body, _ = call(fake, "POST", "/images/create?fromSrc=http://x/rootfs.tar")
    assert status == 501
    status, body, _ = call(fake, "POST", "/images/create")
    assert status == 400


def test_no_image_backend_means_no_image_routes() -> None:
    async def go() -> int:
        async with TestClient(TestServer(make_app(SystemBackend()))) as client:
            return (await client.get("/images/json")).status

    assert asyncio.run(go()) == 404


def test_save_failing_part_way_cuts_the_connection(fake: FakeImages) -> None:
    """A clean end would pass a truncated tar off as whole; the client must see an error."""
    import aiohttp

    def broken_save(refs_or_ids: Sequence[str], out: BinaryIO) -> None:
        out.write(b"x" * (3 * images.CHUNK))
        raise OSError("disk on fire")

    fake.save = broken_save  # type: ignore[method-assign]

    async def go() -> tuple[int, type[BaseException] | None]:
        async with TestClient(TestServer(make_app(SystemBackend(), fake))) as client:
            resp = await client.get("/images/busybox/get")
            try:
                await resp.read()
            except aiohttp.ClientError as exc:
                return resp.status, type(exc)
            return resp.status, None

    status, error = asyncio.run(go())
    assert status == 200 and error is not None


def test_a_save_writer_never_waits_on_its_own_loop() -> None:
    # A BufferedWriter over the response flushes when it is collected; after a client
    # left mid-save that happened on the event loop's own thread, whose write waited
    # for the loop: ketchd froze. On the loop's thread the write now fails at once.
    import asyncio
    import threading

    from ketch.api.routers.images import _ResponseWriter

    outcome: list[str] = []

    async def main() -> None:
        raw = _ResponseWriter(None, None, asyncio.get_running_loop())  # type: ignore[arg-type]
        try:
            raw.write(b"late bytes")
        except BrokenPipeError:
            outcome.append("refused")

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive() and outcome == ["refused"]
