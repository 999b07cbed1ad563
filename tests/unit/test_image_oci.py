"""Manifests, indexes, configs, chain IDs and platform selection."""

from __future__ import annotations

import hashlib
import json

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.image import oci
from ketch.image.content import Descriptor, Platform

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def manifest_doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_DOCKER_MANIFEST,
        "config": {"mediaType": oci.MEDIA_TYPE_DOCKER_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": oci.MEDIA_TYPE_DOCKER_LAYER_GZIP, "digest": D2, "size": 20}],
    }
    doc.update(over)
    return doc


def test_parse_docker_manifest() -> None:
    m = oci.parse_manifest(json.dumps(manifest_doc()).encode())
    assert m.config.digest == D1 and m.config.size == 10
    assert [(layer.media_type, layer.digest) for layer in m.layers] == [
        (oci.MEDIA_TYPE_DOCKER_LAYER_GZIP, D2)]


def test_parse_oci_manifest_without_media_type() -> None:
    doc = manifest_doc()
    del doc["mediaType"]
    assert oci.parse_manifest(json.dumps(doc).encode()).media_type == ""


@pytest.mark.parametrize("doc, words", [
    (manifest_doc(mediaType="application/vnd.docker.distribution.manifest.v1+json"),
     "unsupported media type application/vnd.docker.distribution.manifest.v1+json"),
    (manifest_doc(schemaVersion=1), "unsupported manifest schema version 1"),
    (manifest_doc(mediaType=oci.MEDIA_TYPE_OCI_INDEX), "unsupported media type"),
    ({"schemaVersion": 2, "manifests": []}, "an index, not a manifest"),
    (manifest_doc(config={"digest": "sha256:xyz", "size": 1}), "manifest.config.digest"),
    (manifest_doc(layers=[{"digest": D2, "size": -1}]), "size: must not be negative"),
])
def test_parse_manifest_refuses(doc: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words.replace("+", r"\+").replace(".", r"\.")):
        oci.parse_manifest(json.dumps(doc).encode())


def test_parse_manifest_not_json() -> None:
    with pytest.raises(InvalidArgument, match="not JSON"):
        oci.parse_manifest(b"\x1f\x8b")
    with pytest.raises(InvalidArgument, match="expected a JSON object"):
        oci.parse_manifest(b"[]")


def index_doc(*entries: tuple[str, str, str | None, str]) -> bytes:
    manifests = []
    for os_name, arch, variant, digest in entries:
        plat: dict[str, str] = {"os": os_name, "architecture": arch}
        if variant:
            plat["variant"] = variant
        manifests.append({"mediaType": oci.MEDIA_TYPE_OCI_MANIFEST, "digest": digest,
                          "size": 1, "platform": plat})
    return json.dumps({"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_INDEX,
                       "manifests": manifests}).encode()


def test_parse_index_and_platforms() -> None:
    idx = oci.parse_index(index_doc(("linux", "amd64", None, D1), ("linux", "arm", "v7", D2)))
    assert idx.manifests[1].platform == Platform(architecture="arm", os="linux", variant="v7")


def test_parse_index_refuses_manifest() -> None:
    with pytest.raises(InvalidArgument, match="unsupported media type"):
        oci.parse_index(json.dumps(manifest_doc()).encode())
    with pytest.raises(InvalidArgument, match="a manifest, not an index"):
        doc = manifest_doc()
        del doc["mediaType"]
        oci.parse_index(json.dumps(doc).encode())


CONFIG = (b'{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",'
          b'"container_config":{"Hostname":"x"},"docker_version":"24.0.7",'
          b'"config":{"User":"app","Env":["PATH=/bin"],"Entrypoint":null,"Cmd":["sh"],'
          b'"ExposedPorts":{"80/tcp":{}},"WorkingDir":"/srv","Labels":{"a":"b"},'
          b'"StopSignal":"SIGTERM","Healthcheck":{"Test":["CMD","true"],"Interval":1000000000},'
          b'"ArgsEscaped":true,"OnBuild":null,"Shell":["/bin/sh","-c"],'
          b'"Volumes":{"/data":{}}},'
          b'"rootfs":{"type":"layers","diff_ids":["' + D1.encode() + b'","' + D2.encode() + b'"]},'
          b'"history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD x /",'
          b'"comment":"c"},{"created_by":"CMD [\\"sh\\"]","empty_layer":true}]}')


def test_parse_config_docker_keys() -> None:
    c = oci.parse_config(CONFIG)
    assert (c.architecture, c.os, c.created) == ("amd64", "linux", "2024-01-01T00:00:00Z")
    cc = c.config
    assert cc.user == "app" and cc.env == ["PATH=/bin"] and cc.cmd == ["sh"]
    assert cc.entrypoint is None and cc.exposed_ports == {"80/tcp": {}}
    assert cc.working_dir == "/srv" and cc.labels == {"a": "b"} and cc.volumes == {"/data": {}}
    assert cc.healthcheck is not None and cc.healthcheck.test == ["CMD", "true"]
    assert cc.healthcheck.interval == 10**9 and cc.args_escaped and cc.shell == ["/bin/sh", "-c"]
    assert cc.stop_signal == "SIGTERM"
    assert c.rootfs.diff_ids == [D1, D2]
    assert [h.empty_layer for h in c.history] == [False, True]
    assert c.history[0].created_by == "ADD x /" and c.history[0].comment == "c"
    assert c.platform == Platform(architecture="amd64", os="linux")


def test_encode_uses_spec_names() -> None:
    doc = json.loads(oci.encode(oci.parse_config(CONFIG)))
    assert doc["config"]["ExposedPorts"] == {"80/tcp": {}}
    assert doc["config"]["WorkingDir"] == "/srv"
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [D1, D2]}
    assert doc["history"][1] == {"created_by": 'CMD ["sh"]', "empty_layer": True}
    m = oci.Manifest(media_type=oci.MEDIA_TYPE_OCI_MANIFEST,
                     config=Descriptor(oci.MEDIA_TYPE_OCI_CONFIG, D1, 3))
    assert json.loads(oci.encode(m)) == {
        "schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": oci.MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": 3}}


def test_image_id_is_digest_of_stored_bytes() -> None:
    # Same JSON, different whitespace: a different image. Never re-encode.
    spaced = CONFIG.replace(b'"os":"linux"', b'"os": "linux"')
    assert oci.image_id(CONFIG) == "sha256:" + hashlib.sha256(CONFIG).hexdigest()
    assert oci.image_id(spaced) != oci.image_id(CONFIG)
    assert oci.parse_config(spaced) == oci.parse_config(CONFIG)


@pytest.mark.parametrize("doc, words", [
    (b'{"rootfs":{"type":"layers","diff_ids":["nope"]}}', "diff_ids\\[0\\]"),
    (b'{"rootfs":{"type":"other","diff_ids":[]}}', "unsupported rootfs type"),
    (b'{"config":{"Env":"A=1"}}', "config.config.Env: expected array"),
])
def test_parse_config_refuses(doc: bytes, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        oci.parse_config(doc)


def test_chain_ids() -> None:
    assert oci.chain_ids([]) == []
    assert oci.chain_ids([D1]) == [D1]
    c2 = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256(f"{c2} {D3}".encode()).hexdigest()
    assert oci.chain_ids([D1, D2, D3]) == [D1, c2, c3]


def test_chain_id_known_value() -> None:
    # busybox-style two-layer stack computed independently with sha256sum.
    a = "sha256:a" + "0" * 63
    b = "sha256:b" + "0" * 63
    expected = hashlib.sha256((a + " " + b).encode()).hexdigest()
    assert oci.chain_ids([a, b])[1] == "sha256:" + expected


@pytest.mark.parametrize("arch, variant, want", [
    ("x86_64", "", ("amd64", "")),
    ("amd64", "v1", ("amd64", "")),
    ("aarch64", "", ("arm64", "")),
    ("arm64", "v8", ("arm64", "")),
    ("armhf", "", ("arm", "v7")),
    ("armel", "", ("arm", "v6")),
    ("arm", "", ("arm", "v7")),
    ("armv6l", "", ("arm", "v6")),
    ("i686", "", ("386", "")),
    ("s390x", "", ("s390x", "")),
])
def test_normalize_arch(arch: str, variant: str, want: tuple[str, str]) -> None:
    assert oci.normalize_arch(arch, variant) == want


MULTI = oci.parse_index(index_doc(
    ("linux", "amd64", None, D1),
    ("linux", "arm", "v6", D2),
    ("linux", "arm64", "v8", D3),
    ("windows", "amd64", None, "sha256:" + "4" * 64),
))


@pytest.mark.parametrize("os_name, arch, variant, want", [
    ("linux", "x86_64", None, D1),
    ("linux", "amd64", None, D1),
    ("linux", "aarch64", None, D3),
    ("linux", "arm64", "v8", D3),
    ("linux", "arm", "v7", D2),   # a v7 host runs v6 images
    ("linux", "arm", "v6", D2),
    ("windows", "amd64", None, "sha256:" + "4" * 64),
])
def test_select_platform(os_name: str, arch: str, variant: str | None, want: str) -> None:
    assert oci.select_platform(MULTI, os=os_name, arch=arch, variant=variant).digest == want


def test_select_platform_prefers_exact_variant() -> None:
    idx = oci.parse_index(index_doc(("linux", "arm", "v6", D1), ("linux", "arm", "v7", D2)))
    assert oci.select_platform(idx, arch="arm", variant="v7").digest == D2
    assert oci.select_platform(idx, arch="arm", variant="v6").digest == D1


def test_select_platform_arm64_falls_back_to_arm() -> None:
    idx = oci.parse_index(index_doc(("linux", "arm", "v7", D1)))
    assert oci.select_platform(idx, arch="arm64").digest == D1


def test_select_platform_not_found_docker_words() -> None:
    with pytest.raises(NotFound) as exc:
        oci.select_platform(MULTI, arch="arm", variant="v5")
    assert str(exc.value) == "no matching manifest for linux/arm/v5 in the manifest list entries"
    idx = oci.parse_index(index_doc(("linux", "arm64", None, D1)))
    with pytest.raises(NotFound, match="^no matching manifest for linux/amd64 in the manifest"):
        oci.select_platform(idx, arch="amd64")


def test_select_platform_skips_entries_without_platform() -> None:
    idx = oci.Index(manifests=[Descriptor(oci.MEDIA_TYPE_OCI_MANIFEST, D1, 1)])
    with pytest.raises(NotFound):
        oci.select_platform(idx, arch="amd64")


def test_host_arch_is_normalised() -> None:
    assert oci.host_arch() in ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")
