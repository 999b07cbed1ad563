"""The registry client against ``ketch registry serve`` (no auth, Basic, and its token mode).

ketch's server checks more than docker-registry 2.8 does (Content-Range of
chunked uploads, ``n`` and ``last`` of tags/list), and issues real tokens
with a lifetime, so this is where those paths of the client meet a server.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.integration.registries import PASSWORD, USER, Registry
from tests.integration.registry_client_support import BuiltImage, digest, make_image

from ketch.errors import Unauthorized
from ketch.image.content import ContentStore, Descriptor
from ketch.image.reference import normalize
from ketch.registry.client import Credentials, Registries, Repository, auth


def _push(repo: Repository, img: BuiltImage, tag: str, chunk_size: int | None = None) -> list[str]:
    out = [repo.push_blob(Descriptor(digest=d, size=len(b)), lambda b=b: io.BytesIO(b),
                          chunk_size=chunk_size) for d, b in img.blobs.items()]
    assert repo.push_manifest(tag, img.manifest, img.media_type) == img.manifest_digest
    return out


def test_round_trip_chunked_tags_mount_delete(start_registry: Callable[..., Registry],
                                              regs: Registries, tmp_path: Path) -> None:
    reg = start_registry("ketch")
    img = make_image((10_000, 700_000))
    repo = regs.repository(normalize(f"{reg.host}/kc/app:a"))
    assert _push(repo, img, "a", chunk_size=256 << 10) == ["pushed"] * 3
    for tag in ("b", "c", "d"):
        repo.push_manifest(tag, img.manifest, img.media_type)
    assert sorted(repo.tags(n=2)) == ["a", "b", "c", "d"]

    pulled = regs.repository(normalize(f"{reg.host}/kc/app:a")).manifest_for("a")
    assert pulled.config == img.config
    store = ContentStore(tmp_path / "content")
    for layer in pulled.parsed.layers:
        with store.writer(layer.digest, layer.digest, layer.size) as w:
            repo.fetch_blob(layer, w)
            assert w.commit().digest == layer.digest

    other = regs.repository(normalize(f"{reg.host}/kc/other:a"))
    layer = img.layers[1]
    assert other.push_blob(Descriptor(digest=digest(layer), size=len(layer)),
                           lambda: io.BytesIO(layer), mount_from=["kc/app"]) == "mounted:kc/app"
    repo.delete_manifest(img.manifest_digest)
    assert repo.blob_exists(digest(layer)) == len(layer)


def test_token_mode_with_short_lived_tokens(start_registry: Callable[..., Registry],
                                            regs: Registries,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[tuple[str, ...]] = []
    real = auth.fetch_token

    def counting(*args: Any, **kw: Any) -> auth.Token:
        fetched.append(tuple(args[2]))
        return real(*args, **kw)

    monkeypatch.setattr(auth, "fetch_token", counting)
    reg = start_registry("ketch", auth="token", extra=("--token-ttl", "2"))
    creds = Credentials(username=USER, password=PASSWORD)
    img = make_image((5000,))
    repo = regs.repository(normalize(f"{reg.host}/tk/app:t"), creds)
    _push(repo, img, "t")
    # The client keeps a token at least 60 s (as Docker); the server's expire
    # after 2 s: the next request is refused as invalid_token and retried.
    before = len(fetched)
    time.sleep(3)
    assert repo.resolve("t").data == img.manifest
    assert fetched[before:] == [("repository:tk/app:pull",)]
    login = regs.login(reg.host, creds)
    assert login.status == "Login Succeeded"
    with pytest.raises(Unauthorized):
        regs.login(reg.host, Credentials(username=USER, password="wrong"))
    # The refresh token login returned stands in for the password (OAuth POST).
    assert login.identity_token
    again = regs.repository(normalize(f"{reg.host}/tk/app:t"),
                            Credentials(identity_token=login.identity_token))
    assert again.resolve("t").data == img.manifest


def test_basic_mode(start_registry: Callable[..., Registry], regs: Registries) -> None:
    reg = start_registry("ketch", auth="basic")
    img = make_image((5000,))
    name = normalize(f"{reg.host}/bs/app:t")
    with pytest.raises(Unauthorized, match="no basic auth credentials"):
        _push(regs.repository(name), img, "t")
    _push(regs.repository(name, Credentials(username=USER, password=PASSWORD)), img, "t")
    assert regs.login(reg.host, Credentials(username=USER, password=PASSWORD)).status == (
        "Login Succeeded")
