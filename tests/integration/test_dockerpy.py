"""ketchd judged by docker-py 7 (the Python SDK compose v1, testcontainers and
many scripts use): version negotiation, /info and the image endpoints.

Each test drives a private ketchd (the fixtures of test_daemon_system and
test_daemon_images: private root, socket and pidfile; stopped by pid and
removed by the finalizers) through ``docker.DockerClient(base_url=unix://…)``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_daemon_images import (  # noqa: F401 - fixtures
    busybox_archive,
    ketchd,
)
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    Ketchd,
    start_ketchd,
)

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.root


@pytest.fixture
def client(ketchd: Ketchd) -> Iterator[docker.DockerClient]:  # noqa: F811
    c = docker.DockerClient(base_url=ketchd.host, timeout=60)
    yield c
    c.close()


def test_ping_version_info(ketchd: Ketchd, client: docker.DockerClient) -> None:  # noqa: F811
    # docker-py 7 pins API 1.45 by default: ketchd's current version.
    assert docker.constants.DEFAULT_DOCKER_API_VERSION == "1.45"
    assert client.api.api_version == "1.45"
    assert client.ping() is True
    v = client.version()
    assert v["ApiVersion"] == "1.45" and v["MinAPIVersion"] == "1.24"
    assert v["Os"] == "linux" and v["Components"][0]["Name"] == "Engine"
    info = client.info()
    assert info["DockerRootDir"] == str(ketchd.root)
    assert info["Images"] == 0 and info["Containers"] == 0
    assert info["OSType"] == "linux" and info["NCPU"] >= 1
    # version="auto" asks /version first and settles on what the daemon says.
    auto = docker.DockerClient(base_url=ketchd.host, version="auto", timeout=60)
    try:
        assert auto.api.api_version == "1.45"
        assert auto.ping() is True
        assert auto.info()["ID"] == info["ID"]
    finally:
        auto.close()
    # An older pinned version is served too (min is 1.24).
    old = docker.DockerClient(base_url=ketchd.host, version="1.41", timeout=60)
    try:
        assert old.version()["ApiVersion"] == "1.45"
        assert old.info()["Images"] == 0
    finally:
        old.close()


def test_images(client: docker.DockerClient, busybox_archive: Path) -> None:  # noqa: F811
    loaded = client.images.load(busybox_archive.read_bytes())
    assert [i.tags for i in loaded] == [["busybox:latest"]]
    assert client.info()["Images"] == 1

    listed = client.images.list()
    assert [i.tags for i in listed] == [["busybox:latest"]]
    image = client.images.get("busybox:latest")
    assert image.id.startswith("sha256:") and image.id == listed[0].id == loaded[0].id
    assert image.tags == ["busybox:latest"]
    assert image.attrs["RootFS"]["Type"] == "layers"
    assert len(image.attrs["RootFS"]["Layers"]) == 1
    assert image.attrs["Config"]["Cmd"] == ["sh"]

    assert image.tag("me/box", "1") is True
    image.reload()
    assert sorted(image.tags) == ["busybox:latest", "me/box:1"]
    # ImageCollection.list re-inspects each id (all names); the raw list shows the match.
    assert [i.id for i in client.images.list(name="me/box")] == [image.id]
    assert [i["RepoTags"] for i in client.api.images(name="me/box")] == [["me/box:1"]]
    assert client.images.list(name="nosuch") == []
    assert client.images.get("me/box:1").id == image.id
    assert client.info()["Images"] == 1  # one image, two names

    hist = image.history()
    assert len(hist) == 1 and hist[0]["Id"] == image.id
    assert hist[0]["CreatedBy"] == "ketch image bootstrap busybox"

    data = b"".join(image.save())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert "manifest.json" in names and "index.json" in names
    assert len(manifest) == 1 and manifest[0]["Config"]

    # Errors map onto docker-py's exception classes by status and message.
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("nosuch")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.remove("nosuch")
    with pytest.raises(docker.errors.APIError) as exc:
        client.images.remove(image.id)
    assert exc.value.status_code == 409
    assert "image is referenced in multiple repositories" in str(exc.value)

    client.images.remove("me/box:1")
    assert client.images.get("busybox").tags == ["busybox:latest"]
    client.images.remove("busybox:latest")
    assert client.images.list() == []
    assert client.info()["Images"] == 0

    # prune removes dangling images only: a tagged one stays.
    client.images.load(busybox_archive.read_bytes())
    pruned = client.images.prune()
    assert not pruned.get("ImagesDeleted") and pruned["SpaceReclaimed"] == 0
    assert [i.tags for i in client.images.list()] == [["busybox:latest"]]
    assert client.info()["Images"] == 1


def test_load_of_an_archive_with_two_tags(client: docker.DockerClient,
                                          busybox_archive: Path) -> None:  # noqa: F811
    (image,) = client.images.load(busybox_archive.read_bytes())
    image.tag("me/box", "1")
    # GET /images/get?names=…&names=… (docker save of two names; docker-py has no call for it).
    resp = client.api._get(client.api._url("/images/get"),
                           params={"names": ["busybox:latest", "me/box:1"]})
    assert resp.status_code == 200
    data = resp.content
    client.images.remove(image.id, force=True)
    loaded = client.images.load(data)
    # One "Loaded image" line per tag, so docker-py returns the image once per tag
    # (as with dockerd); each carries both tags.
    assert len(loaded) == 2
    assert sorted({t for i in loaded for t in i.tags}) == ["busybox:latest", "me/box:1"]
