"""The registry client against Debian's docker-registry (distribution 2.8) on loopback.

No root needed: every registry, proxy and token server runs as a child or a
thread of the test, on 127.0.0.1 and a port the kernel picked, with its
storage under pytest's tmp dirs.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.registries import (
    GO_REGISTRY,
    PASSWORD,
    USER,
    Registry,
    free_port,
    make_tls,
    start_go_registry,
)
from tests.integration.registry_client_support import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    FaultProxy,
    MemorySink,
    TokenServer,
    digest,
    make_image,
    make_index,
)

from ketch.errors import Forbidden, InvalidArgument, NotFound, Unauthorized, Unavailable
from ketch.image.content import ContentStore, Descriptor, Platform
from ketch.image.oci import host_arch, parse_manifest
from ketch.image.reference import normalize
from ketch.registry.client import Credentials, Registries, RegistryOptions, Repository
from ketch.registry.client.transport import NetworkError, Transport

pytestmark = pytest.mark.skipif(GO_REGISTRY is None,
                                reason="needs Debian's docker-registry")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_go_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()


def push_image(repo: Repository, img: BuiltImage, tag: str) -> list[str]:
    results = [repo.push_blob(Descriptor(digest=d, size=len(b)), lambda b=b: io.BytesIO(b))
               for d, b in img.blobs.items()]
    assert repo.push_manifest(tag, img.manifest, img.media_type) == img.manifest_digest
    return results


def fetch(repo: Repository, store: ContentStore, desc: Descriptor, **kw: object) -> str:
    with store.writer(f"pull-{desc.digest}", desc.digest, desc.size) as w:
        repo.fetch_blob(desc, w, **kw)  # type: ignore[arg-type]
        return w.commit().digest


# --- pull and push ----------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_push_then_pull_round_trip(registry: Registry, regs: Registries, tmp_path: Path,
                                   media_type: str) -> None:
    img = make_image(media_type=media_type)
    name = f"{registry.host}/round/{'oci' if media_type == OCI_MANIFEST else 'docker'}:v1"
    repo = regs.repository(normalize(name))
    assert push_image(repo, img, "v1") == ["pushed"] * 3
    assert push_image(repo, img, "v1") == ["exists"] * 3

    pulled = regs.repository(normalize(name)).manifest_for("v1")
    assert pulled.index is None
    assert pulled.manifest.data == img.manifest
    assert pulled.manifest.media_type == media_type
    assert pulled.digest == img.manifest_digest
    assert pulled.config == img.config
    store = ContentStore(tmp_path / "content")
    seen: list[tuple[int, int]] = []
    for layer in pulled.parsed.layers:
        assert fetch(repo, store, layer, progress=lambda d, t: seen.append((d, t))) == layer.digest
        assert store.read(layer.digest) == img.blobs[layer.digest]
    assert seen[-1] == (len(img.layers[-1]), len(img.layers[-1]))
    assert repo.blob_exists(digest(img.layers[1])) == len(img.layers[1])
    assert repo.blob_exists(digest(b"never pushed")) is None


def test_resolve_by_tag_and_by_digest(registry: Registry, regs: Registries) -> None:
    img = make_image((1024,))
    repo = regs.repository(normalize(f"{registry.host}/resolve/app:t"))
    push_image(repo, img, "t")
    by_tag = repo.resolve("t")
    by_digest = repo.resolve(img.manifest_digest)
    assert by_tag == by_digest
    assert by_tag.digest == img.manifest_digest and by_tag.data == img.manifest
    assert repo.manifest_for(img.manifest_digest).config == img.config


def test_index_follows_platform(registry: Registry, regs: Registries) -> None:
    amd, arm = make_image((1000,), arch="amd64"), make_image((2000,), arch="arm64")
    repo = regs.repository(normalize(f"{registry.host}/multi/app:list"))
    push_image(repo, amd, amd.manifest_digest)
    push_image(repo, arm, arm.manifest_digest)
    index = make_index([(amd, "linux", "amd64"), (arm, "linux", "arm64")])
    assert repo.push_manifest("list", index, OCI_INDEX) == digest(index)

    got = repo.manifest_for("list", Platform(architecture="arm64", os="linux"))
    assert got.index is not None and got.index.data == index
    assert got.digest == digest(index)  # what RepoDigests records
    assert got.manifest.digest == arm.manifest_digest and got.config == arm.config
    default = repo.manifest_for("list", None)
    expected = {"amd64": amd, "arm64": arm}.get(host_arch())
    if expected is not None:
        assert default.manifest.digest == expected.manifest_digest
    with pytest.raises(NotFound) as exc:
        repo.manifest_for("list", Platform(architecture="s390x", os="linux"))
    assert str(exc.value) == "no matching manifest for linux/s390x in the manifest list entries"


def test_missing_manifest_and_repository_words(registry: Registry, regs: Registries) -> None:
    repo = regs.repository(normalize(f"{registry.host}/nosuchrepo:t"))
    with pytest.raises(NotFound) as exc:
        repo.manifest_for("t")
    assert str(exc.value) == (f"manifest for {registry.host}/nosuchrepo:t not found: "
                              "manifest unknown: manifest unknown")
    zero = "sha256:" + "0" * 64
    with pytest.raises(NotFound) as exc:
        repo.resolve(zero)
    assert str(exc.value) == (f"manifest for {registry.host}/nosuchrepo@{zero} not found: "
                              "manifest unknown: manifest unknown")
    with pytest.raises(NotFound) as exc:
        repo.tags()
    assert str(exc.value) == (f"repository {registry.host}/nosuchrepo not found: "
                              "name unknown: repository name not known to registry")


def test_tags_mount_chunked_delete(registry: Registry, regs: Registries) -> None:
    img = make_image((4096, 300_000))
    src = regs.repository(normalize(f"{registry.host}/ops/src:a"))
    push_image(src, img, "a")
    src.push_manifest("b", img.manifest, img.media_type)
    assert sorted(src.tags()) == ["a", "b"]

    dst = regs.repository(normalize(f"{registry.host}/ops/dst:a"))
    layer = img.layers[1]
    desc = Descriptor(digest=digest(layer), size=len(layer))
    assert dst.push_blob(desc, lambda: io.BytesIO(layer), mount_from=["ops/src"]) == "mounted:ops/src"
    # Mounting from a repository without the blob falls back to an upload.
    other = make_image((5000,)).layers[0]
    odesc = Descriptor(digest=digest(other), size=len(other))
    sent: list[int] = []
    assert dst.push_blob(odesc, lambda: io.BytesIO(other), mount_from=["ops/src"],
                         chunk_size=1024, progress=lambda d, t: sent.append(d)) == "pushed"
    assert sent[-1] == len(other)
    assert dst.blob_exists(odesc.digest) == len(other)

    assert src.resolve(img.manifest_digest).data == img.manifest  # now cached by this object
    src.delete_manifest(img.manifest_digest)
    with pytest.raises(NotFound):
        src.resolve(img.manifest_digest)
    with pytest.raises(NotFound):
        src.resolve("a")


def test_connection_refused_in_dockerd_words(regs: Registries) -> None:
    port = free_port()
    repo = regs.repository(normalize(f"127.0.0.1:{port}/x:t"))
    with pytest.raises(Unavailable) as exc:
        repo.manifest_for("t")
    assert str(exc.value) == (f'Get "http://127.0.0.1:{port}/v2/": dial tcp 127.0.0.1:{port}: '
                              "connect: connection refused")


def test_parallel_blob_downloads_share_one_repository(registry: Registry, regs: Registries,
                                                      tmp_path: Path) -> None:
    img = make_image(tuple(200_000 + i * 1000 for i in range(6)))
    repo = regs.repository(normalize(f"{registry.host}/parallel/app:t"))
    push_image(repo, img, "t")
    pulled = regs.repository(normalize(f"{registry.host}/parallel/app:t")).manifest_for("t")
    store = ContentStore(tmp_path / "content")
    errors: list[BaseException] = []

    def one(layer: Descriptor) -> None:
        try:
            assert fetch(repo, store, layer) == layer.digest
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(layer,)) for layer in pulled.parsed.layers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(store.exists(layer.digest) for layer in pulled.parsed.layers)


def test_parallel_pushes_share_one_repository(registry: Registry, regs: Registries) -> None:
    img = make_image(tuple(100_000 + i for i in range(8)))
    repo = regs.repository(normalize(f"{registry.host}/parallel/push:t"))
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def one(dgst: str, data: bytes) -> None:
        try:
            results[dgst] = repo.push_blob(Descriptor(digest=dgst, size=len(data)),
                                           lambda: io.BytesIO(data))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=item) for item in img.blobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert set(results.values()) == {"pushed"} and len(results) == len(img.blobs)
    assert repo.push_manifest("t", img.manifest, img.media_type) == img.manifest_digest


def test_connections_are_kept_alive(registry: Registry, big_image: BuiltImage) -> None:
    proxy = FaultProxy(registry.port)
    with _through(proxy) as (regs, repo):
        layer = _layer(big_image)
        for _ in range(20):
            assert repo.blob_exists(layer.digest) == layer.size
        repo.resolve("t")
        # One failed TLS attempt (https first), then one kept-alive http connection.
        assert proxy.connections <= 2


def test_docker_hub_goes_to_the_mirror(registry: Registry) -> None:
    img = make_image((2048,))
    direct = Registries(RegistryOptions(certs_dirs=()))
    mirrored = Registries(RegistryOptions(certs_dirs=(), mirrors=(f"http://{registry.host}/",)))
    try:
        push_image(direct.repository(normalize(f"{registry.host}/library/mirrored:1")), img, "1")
        pulled = mirrored.repository(normalize("mirrored:1")).manifest_for("1")
        assert pulled.manifest.data == img.manifest
    finally:
        direct.close()
        mirrored.close()


# --- faults -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_image(registry: Registry) -> BuiltImage:
    img = make_image((4 << 20,))
    regs = Registries(RegistryOptions(certs_dirs=()))
    try:
        push_image(regs.repository(normalize(f"{registry.host}/faults/big:t")), img, "t")
    finally:
        regs.close()
    return img


@contextlib.contextmanager
def _through(proxy: FaultProxy) -> Iterator[tuple[Registries, Repository]]:
    """A client for the big image by way of ``proxy``; the client and the proxy closed after."""
    regs = Registries(RegistryOptions(certs_dirs=(), timeout=10))
    try:
        yield regs, regs.repository(normalize(f"{proxy.netloc}/faults/big:t"))
    finally:
        regs.close()
        proxy.close()


def _layer(img: BuiltImage) -> Descriptor:
    return parse_manifest(img.manifest).layers[0]


def test_cut_download_resumes_with_range(registry: Registry, big_image: BuiltImage,
                                         tmp_path: Path) -> None:
    proxy = FaultProxy(registry.port, cut_after=1 << 20, cuts=2)
    with _through(proxy) as (regs, repo):
        layer = _layer(big_image)
        store = ContentStore(tmp_path / "content")
        retries: list[int] = []
        assert fetch(repo, store, layer, on_retry=lambda n, e: retries.append(n)) == layer.digest
        assert retries == [1, 2]
        blob_gets = [r for r in proxy.requests if r.startswith(b"GET") and layer.digest.encode() in r]
        assert len(blob_gets) == 3
        # Each retry asked for the rest only, from where the data stopped.
        assert len(proxy.ranges) == 2
        starts = [int(r.split(b"=")[1].rstrip(b"-")) for r in proxy.ranges]
        assert 0 < starts[0] < starts[1] < layer.size
        assert store.read(layer.digest) == big_image.layers[0]


def test_server_ignoring_range_restarts_from_zero(registry: Registry, big_image: BuiltImage,
                                                  tmp_path: Path) -> None:
    # Cut after 1.5 MiB: progress passes 1 MiB (one read), then starts over at 1 MiB.
    proxy = FaultProxy(registry.port, cut_after=3 << 19, strip_range=True)
    with _through(proxy) as (regs, repo):
        layer = _layer(big_image)
        store = ContentStore(tmp_path / "content")
        seen: list[int] = []
        assert fetch(repo, store, layer, progress=lambda d, t: seen.append(d)) == layer.digest
        assert seen[-1] == layer.size
        assert any(b < a for a, b in zip(seen, seen[1:], strict=False))  # went back to zero


def test_endless_cuts_give_up_and_leave_no_verified_blob(registry: Registry,
                                                         big_image: BuiltImage,
                                                         tmp_path: Path) -> None:
    proxy = FaultProxy(registry.port, cut_after=1 << 20, cuts=1000, strip_range=True)
    with _through(proxy) as (regs, repo):
        layer = _layer(big_image)
        store = ContentStore(tmp_path / "content")
        with pytest.raises(Unavailable):
            fetch(repo, store, layer)
        assert not store.exists(layer.digest)
        # The ingest kept what arrived; a later pull resumes it with Range.
        kept = store.status(f"pull-{layer.digest}").offset
        assert kept > 0
    clean = FaultProxy(registry.port)
    with _through(clean) as (regs, repo):
        assert fetch(repo, store, layer) == layer.digest
        assert clean.ranges == [f"bytes={kept}-".encode()]


def test_corrupted_download_is_refused(registry: Registry, big_image: BuiltImage,
                                       tmp_path: Path) -> None:
    proxy = FaultProxy(registry.port, corrupt_at=2 << 20)
    with _through(proxy) as (regs, repo):
        layer = _layer(big_image)
        store = ContentStore(tmp_path / "content")
        with store.writer("corrupt", layer.digest, layer.size) as w:
            with pytest.raises(InvalidArgument) as exc:
                repo.fetch_blob(layer, w)
            assert str(exc.value) == f"filesystem layer verification failed for digest {layer.digest}"
            assert w.offset == 0
        # A sink without digest() is hashed by the client itself. (A new
        # connection, since the proxy counts offsets per connection.)
        regs.close()
        proxy.corrupt_at = 1 << 20
        sink = MemorySink()
        with pytest.raises(InvalidArgument):
            repo.fetch_blob(layer, sink)
        assert sink.offset == 0
        repo.fetch_blob(layer, sink)
        assert bytes(sink.buf) == big_image.layers[0]


# --- htpasswd --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_go_registry(tmp_path_factory.mktemp("basic"), auth=True)
    try:
        yield reg
    finally:
        reg.stop()


def test_basic_auth(basic_registry: Registry, regs: Registries) -> None:
    name = normalize(f"{basic_registry.host}/private/app:t")
    with pytest.raises(Unauthorized) as exc:
        regs.repository(name).manifest_for("t")
    assert str(exc.value) == (f'Head "http://{basic_registry.host}/v2/private/app/manifests/t": '
                              "no basic auth credentials")
    wrong = Credentials(username=USER, password="wrong")
    with pytest.raises(Unauthorized) as exc:
        regs.repository(name, wrong).manifest_for("t")
    assert str(exc.value) == "unauthorized: authentication required"

    good = Credentials(username=USER, password=PASSWORD)
    img = make_image((1234,))
    push_image(regs.repository(name, good), img, "t")
    assert regs.repository(name, good).manifest_for("t").config == img.config


def test_login(basic_registry: Registry, registry: Registry, regs: Registries) -> None:
    good = Credentials(username=USER, password=PASSWORD)
    result = regs.login(basic_registry.host, good)
    assert (result.status, result.identity_token) == ("Login Succeeded", "")
    assert regs.login(f"http://{basic_registry.host}", good).status == "Login Succeeded"
    with pytest.raises(Unauthorized) as exc:
        regs.login(basic_registry.host, Credentials(username=USER, password="nope"))
    assert str(exc.value) == (f"login attempt to http://{basic_registry.host}/v2/ failed with "
                              "status: 401 Unauthorized")
    # A registry without auth lets anyone in, as dockerd reports it.
    assert regs.login(registry.host, Credentials(username="x", password="y")).status == (
        "Login Succeeded")
    port = free_port()
    with pytest.raises(Unavailable) as exc2:
        regs.login(f"127.0.0.1:{port}", good)
    assert str(exc2.value) == (f'Get "http://127.0.0.1:{port}/v2/": dial tcp 127.0.0.1:{port}: '
                               "connect: connection refused")


# --- TLS -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tls(tmp_path_factory.mktemp("tls"))


def test_tls_registry(tls: dict[str, Path], tmp_path: Path) -> None:
    reg = start_go_registry(tmp_path / "reg", tls=(tls["server.crt"], tls["server.key"]))
    certs = tmp_path / "certs.d"
    (certs / reg.host).mkdir(parents=True)
    (certs / reg.host / "ca.crt").write_bytes(tls["ca.crt"].read_bytes())
    regs = Registries(RegistryOptions(certs_dirs=(str(certs),)))
    try:
        img = make_image((1000,))
        repo = regs.repository(normalize(f"{reg.host}/tls/app:t"))
        push_image(repo, img, "t")
        assert repo.manifest_for("t").config == img.config
        # Loopback is insecure for dockerd, so https was used without http fallback...
        assert {e.scheme for e in repo._pinned.values()} == {"https"}
        # ...and the certs.d CA verifies the server when verification is on.
        transport = Transport(RegistryOptions(certs_dirs=(str(certs),)))
        with transport.request("GET", f"https://{reg.host}/v2/") as resp:
            assert resp.status == 200
            resp.read()
        transport.close()
        bare = Transport(RegistryOptions(certs_dirs=()))
        with pytest.raises(NetworkError) as exc:
            bare.request("GET", f"https://{reg.host}/v2/")
        assert "x509: certificate signed by unknown authority" in str(exc.value)
        bare.close()
    finally:
        regs.close()
        reg.stop()


def test_tls_client_certificate_from_certs_dir(tls: dict[str, Path], tmp_path: Path) -> None:
    reg = start_go_registry(tmp_path / "reg", tls=(tls["server.crt"], tls["server.key"]),
                         client_ca=tls["ca.crt"])
    certs = tmp_path / "certs.d"
    host_dir = certs / reg.host
    host_dir.mkdir(parents=True)
    for name in ("ca.crt", "client.cert", "client.key"):
        (host_dir / name).write_bytes(tls[name].read_bytes())
    with_cert = Registries(RegistryOptions(certs_dirs=(str(certs),)))
    without = Registries(RegistryOptions(certs_dirs=()))
    try:
        img = make_image((1000,))
        push_image(with_cert.repository(normalize(f"{reg.host}/mtls/app:t")), img, "t")
        # Without the certificate TLS fails, and dockerd's fallback to http
        # (loopback is insecure) meets Go's answer to plain HTTP on a TLS port.
        with pytest.raises(InvalidArgument) as exc:
            without.repository(normalize(f"{reg.host}/mtls/app:t")).resolve("t")
        assert str(exc.value) == (
            "error parsing HTTP 400 response body: invalid character 'C' looking for beginning "
            'of value: "Client sent an HTTP request to an HTTPS server.\\n"')
    finally:
        with_cert.close()
        without.close()
        reg.stop()


# --- bearer tokens -----------------------------------------------------------------------------------


@pytest.fixture
def token_registry(request: pytest.FixtureRequest,
                   tmp_path: Path) -> Iterator[tuple[Registry, TokenServer]]:
    """docker-registry in token mode; its first token is expired unless the param says False."""
    tokens = TokenServer(tmp_path / "token", expire_first=getattr(request, "param", True))
    try:
        reg = start_go_registry(tmp_path / "reg", token=tokens.registry_config())
    except BaseException:
        tokens.close()
        raise
    try:
        yield reg, tokens
    finally:
        reg.stop()
        tokens.close()


def test_bearer_token_flow(token_registry: tuple[Registry, TokenServer],
                           regs: Registries) -> None:
    reg, tokens = token_registry
    name = normalize(f"{reg.host}/tok/app:t")
    good = Credentials(username="alice", password="s3cret")
    img = make_image((1000, 2000))
    # The first token is expired: the registry says invalid_token, the client refetches.
    assert push_image(regs.repository(name, good), img, "t") == ["pushed"] * 3
    assert tokens.issued[0]["user"] == "alice"
    assert any("repository:tok/app:pull,push" in i["scopes"] for i in tokens.issued)
    fetched = len(tokens.issued)
    # Cached: more operations with the same scope fetch no new token.
    push_image(regs.repository(name, good), img, "t")
    assert len(tokens.issued) == fetched

    anonymous = regs.repository(name)
    assert anonymous.manifest_for("t").config == img.config
    assert tokens.issued[-1]["user"] == ""
    with pytest.raises((Unauthorized, Forbidden)):
        anonymous.push_manifest("u", img.manifest, img.media_type)


@pytest.mark.parametrize("token_registry", [False], indirect=True)
def test_bearer_login_identity_token(token_registry: tuple[Registry, TokenServer],
                                     regs: Registries) -> None:
    reg, tokens = token_registry
    with pytest.raises(Unauthorized) as exc:
        regs.login(reg.host, Credentials(username="alice", password="bad"))
    assert str(exc.value) == (f'Get "http://{reg.host}/v2/": unauthorized: '
                              "incorrect username or password")
    result = regs.login(reg.host, Credentials(username="alice", password="s3cret"))
    assert result.status == "Login Succeeded"
    assert result.identity_token.startswith("refresh-")
    # The identity token replaces the password: tokens now come by POST.
    creds = Credentials(identity_token=result.identity_token)
    img = make_image((1000,))
    push_image(regs.repository(normalize(f"{reg.host}/tok/ident:t"), creds), img, "t")
    assert tokens.issued[-1]["method"] == "POST"
