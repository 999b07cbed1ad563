"""Image formats: OCI image-spec v1.1 and Docker image manifest v2 schema 2.

Manifests, indexes and configs are typed dataclasses whose JSON names are the
specs' own; JSON appears only at the edges, where bytes come in or go out:

    manifest = parse_manifest(store.read(desc.digest))     # validated
    raw = store.read(manifest.config.digest)
    config = parse_config(raw)                             # typed view
    image_id(raw)                                          # sha256 of the bytes

An image's identity is the digest of its config *bytes as stored*, and a
manifest's is the digest of its bytes. Parsing drops unknown keys and
re-encoding would change whitespace and key order, so callers keep the bytes
next to the parsed object and never re-serialize to compute an ID. New
documents (a manifest made for a ``docker save`` archive) are encoded once
with ``encode`` and their digest taken from exactly those bytes.

Platform selection follows containerd's ``platforms`` package: architecture
names are normalised (``x86_64`` is ``amd64``, ``aarch64`` is ``arm64``), arm
variants default to ``v7``, and a v7 host also runs v6 and v5 images, in that
order of preference; an arm64 host falls back to 32-bit arm images last.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from ketch.errors import InvalidArgument, NotFound
from ketch.image.content import Descriptor, Platform
from ketch.jsonmodel import from_json, json_name, to_json

# --- media types -----------------------------------------------------------

MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")

MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
INDEX_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG})
# Layers that are never shipped with the image (Windows base layers): absent
# from archives and registries by design, fetched from their urls if at all.
FOREIGN_LAYER_TYPES = frozenset({
    MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE, MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP,
    MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD, MEDIA_TYPE_DOCKER_LAYER_FOREIGN,
})
LAYER_TYPES = frozenset({
    MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_LAYER_GZIP,
}) | FOREIGN_LAYER_TYPES

# Annotations that name an image inside an OCI layout's index.json.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"  # written by Docker 25+ and containerd


# --- documents ---------------------------------------------------------------

@dataclass(slots=True)
class Manifest:
    """An image manifest (OCI, or Docker schema 2, which has the same shape)."""

    schema_version: int = 2
    media_type: str = field(default="", metadata=json_name("mediaType", omit="empty"))
    artifact_type: str = field(default="", metadata=json_name("artifactType", omit="empty"))
    config: Descriptor = field(default_factory=Descriptor)
    layers: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Index:
    """An image index / Docker manifest list: one manifest per platform."""

    schema_version: int = 2
    media_type: str = field(default="", metadata=json_name("mediaType", omit="empty"))
    artifact_type: str = field(default="", metadata=json_name("artifactType", omit="empty"))
    manifests: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class HealthConfig:
    """Docker's HEALTHCHECK; durations are nanoseconds, as Go encodes them."""

    test: list[str] | None = field(default=None, metadata=json_name("Test"))
    interval: int = field(default=0, metadata=json_name("Interval", omit="empty"))
    timeout: int = field(default=0, metadata=json_name("Timeout", omit="empty"))
    start_period: int = field(default=0, metadata=json_name("StartPeriod", omit="empty"))
    start_interval: int = field(default=0, metadata=json_name("StartInterval", omit="empty"))
    retries: int = field(default=0, metadata=json_name("Retries", omit="empty"))


@dataclass(slots=True)
class ContainerConfig:
    """The run defaults inside an image config. Docker spells these in PascalCase."""

    user: str = field(default="", metadata=json_name("User", omit="empty"))
    exposed_ports: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=json_name("ExposedPorts"))
    env: list[str] = field(default_factory=list, metadata=json_name("Env"))
    entrypoint: list[str] | None = field(default=None, metadata=json_name("Entrypoint"))
    cmd: list[str] | None = field(default=None, metadata=json_name("Cmd"))
    volumes: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=json_name("Volumes"))
    working_dir: str = field(default="", metadata=json_name("WorkingDir", omit="empty"))
    labels: dict[str, str] = field(default_factory=dict, metadata=json_name("Labels"))
    stop_signal: str = field(default="", metadata=json_name("StopSignal", omit="empty"))
    healthcheck: HealthConfig | None = field(default=None, metadata=json_name("Healthcheck"))
    args_escaped: bool = field(default=False, metadata=json_name("ArgsEscaped", omit="empty"))
    on_build: list[str] | None = field(default=None, metadata=json_name("OnBuild"))
    shell: list[str] | None = field(default=None, metadata=json_name("Shell"))


@dataclass(slots=True)
class RootFS:
    """The layer list an image's filesystem is built from, as uncompressed digests."""

    type: str = field(default="layers", metadata=json_name("type", keep_empty=True))
    diff_ids: list[str] = field(default_factory=list,
                                metadata=json_name("diff_ids", keep_empty=True))


@dataclass(slots=True)
class History:
    """One build step; ``empty_layer`` steps (ENV, CMD) produced no layer."""

    created: str | None = None
    created_by: str = field(default="", metadata=json_name("created_by", omit="empty"))
    author: str = field(default="", metadata=json_name("author", omit="empty"))
    comment: str = field(default="", metadata=json_name("comment", omit="empty"))
    empty_layer: bool = field(default=False, metadata=json_name("empty_layer", omit="empty"))


@dataclass(slots=True)
class ImageConfig:
    """An image config (OCI) / container image JSON (Docker).

    A *view* of the config: unknown keys (Docker's ``container_config``,
    ``docker_version``) are dropped, so the bytes, not this object, are the
    image's identity.
    """

    architecture: str = ""
    os: str = ""
    os_version: str = field(default="", metadata=json_name("os.version", omit="empty"))
    os_features: list[str] = field(default_factory=list, metadata=json_name("os.features"))
    variant: str = field(default="", metadata=json_name("variant", omit="empty"))
    created: str | None = None
    author: str = field(default="", metadata=json_name("author", omit="empty"))
    config: ContainerConfig = field(default_factory=ContainerConfig,
                                    metadata=json_name("config", omit="zero"))
    rootfs: RootFS = field(default_factory=RootFS)
    history: list[History] = field(default_factory=list)

    @property
    def platform(self) -> Platform:
        return Platform(architecture=self.architecture, os=self.os,
                        os_version=self.os_version or None,
                        os_features=list(self.os_features), variant=self.variant or None)


# --- parsing -------------------------------------------------------------------

def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"invalid {what}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"invalid {what}: expected a JSON object")
    return doc


def _check_schema_version(doc: dict[str, Any], what: str) -> None:
    version = doc.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise InvalidArgument(f"unsupported {what} schema version {version!r}: only 2 is supported")


def _check_descriptor(desc: Descriptor, where: str) -> None:
    """Re-check what ``Descriptor.from_json`` checks, for descriptors nested by jsonmodel."""
    Descriptor.from_json(desc.to_json(), where=where)


def parse_manifest(data: bytes) -> Manifest:
    """Decode and validate an image manifest (OCI or Docker schema 2).

    An absent ``mediaType`` is allowed (OCI makes it optional) unless the
    document is really an index; schema 1 manifests are refused, as Docker
    stopped supporting them.
    """
    doc = _load_json(data, "manifest")
    _check_schema_version(doc, "manifest")
    media_type = doc.get("mediaType")
    if media_type is None:
        if "manifests" in doc:
            raise InvalidArgument("unsupported media type: an index, not a manifest")
    elif media_type not in MANIFEST_TYPES:
        raise InvalidArgument(f"unsupported media type {media_type} for a manifest")
    if "config" not in doc:
        raise InvalidArgument("invalid manifest: no config descriptor")
    manifest = from_json(Manifest, doc, where="manifest")
    _check_descriptor(manifest.config, "manifest.config")
    for i, layer in enumerate(manifest.layers):
        _check_descriptor(layer, f"manifest.layers[{i}]")
    return manifest


def parse_index(data: bytes) -> Index:
    """Decode and validate an image index or Docker manifest list."""
    doc = _load_json(data, "index")
    _check_schema_version(doc, "index")
    media_type = doc.get("mediaType")
    if media_type is None:
        if "config" in doc or "layers" in doc:
            raise InvalidArgument("unsupported media type: a manifest, not an index")
    elif media_type not in INDEX_TYPES:
        raise InvalidArgument(f"unsupported media type {media_type} for an index")
    index = from_json(Index, doc, where="index")
    for i, desc in enumerate(index.manifests):
        _check_descriptor(desc, f"index.manifests[{i}]")
    return index


def parse_config(data: bytes) -> ImageConfig:
    """Decode an image config and check the fields ketch relies on.

    Keep ``data``: the image ID is its digest (``image_id``).
    """
    doc = _load_json(data, "image config")
    config = from_json(ImageConfig, doc, where="config")
    if config.rootfs.type != "layers":
        raise InvalidArgument(f"invalid image config: unsupported rootfs type {config.rootfs.type!r}")
    for i, diff_id in enumerate(config.rootfs.diff_ids):
        try:
            Descriptor.from_json({"digest": diff_id}, where=f"config.rootfs.diff_ids[{i}]")
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid image config: {exc}") from None
    return config


def encode(doc: Manifest | Index | ImageConfig) -> bytes:
    """Bytes for a document ketch creates; hash these bytes, never re-encode."""
    return json.dumps(to_json(doc), indent=3, ensure_ascii=False).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_id(config_bytes: bytes) -> str:
    """The image ID: the digest of the config bytes exactly as stored."""
    return digest_of(config_bytes)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainIDs of a layer stack (OCI image-spec, config.md "Layer ChainID").

    A snapshot is keyed by its chain ID, because the same layer on a different
    parent is a different filesystem: ChainID(L0) = DiffID(L0),
    ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
    """
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else digest_of(f"{out[-1]} {diff_id}".encode()))
    return out


# --- platforms -----------------------------------------------------------------

def normalize_arch(arch: str, variant: str = "") -> tuple[str, str]:
    """containerd's normalizeArch: one spelling per architecture and variant."""
    arch, variant = arch.lower(), (variant or "").lower()
    if arch in ("i386", "i486", "i586", "i686"):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8", "v8.0") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch in ("arm", "armv5l", "armv6l", "armv7l", "armv8l"):
        if arch != "arm" and not variant:
            variant = "v" + arch[4]
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
        return "arm", variant
    return arch, variant


def normalize_os(os_name: str) -> str:
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def host_arch() -> str:
    """The machine's architecture under its OCI name."""
    return normalize_arch(_platform.machine())[0]


def _candidates(arch: str, variant: str) -> list[tuple[str, str]]:
    """(arch, variant) pairs a host runs, most preferred first (platforms.Only)."""
    if arch == "arm":
        order = ["v8", "v7", "v6", "v5"]
        if variant not in order:
            return [("arm", variant)]
        return [("arm", v) for v in order[order.index(variant):]]
    if arch == "arm64":
        return [("arm64", variant)] + ([("arm", v) for v in ("v8", "v7", "v6", "v5")]
                                       if variant == "" else [])
    if arch == "amd64" and variant.startswith("v") and variant[1:].isdigit():
        level = int(variant[1:])
        return [("amd64", f"v{n}" if n > 1 else "") for n in range(level, 0, -1)]
    return [(arch, variant)]


def select_platform(index: Index, os: str = "linux", arch: str | None = None,
                    variant: str | None = None) -> Descriptor:
    """The manifest of ``index`` that best fits the platform, as containerd picks it.

    Entries without a platform never match (attestations, for instance, carry
    ``unknown/unknown``). Among matches, the most preferred variant wins, then
    the first in the index, which is the order registries and Docker use.
    """
    want_os = normalize_os(os)
    # With no arch given, the machine name also gives the variant (armv6l: v6).
    want_arch, want_variant = normalize_arch(arch or _platform.machine(), variant or "")
    ranks = {c: i for i, c in enumerate(_candidates(want_arch, want_variant))}
    best: tuple[int, int] | None = None
    chosen: Descriptor | None = None
    for pos, desc in enumerate(index.manifests):
        plat = desc.platform
        if plat is None or desc.media_type not in MANIFEST_TYPES | {""}:
            continue
        if normalize_os(plat.os) != want_os:
            continue
        rank = ranks.get(normalize_arch(plat.architecture, plat.variant or ""))
        if rank is None:
            continue
        if best is None or (rank, pos) < best:
            best, chosen = (rank, pos), desc
    if chosen is None:
        name = f"{want_os}/{want_arch}" + (f"/{want_variant}" if want_variant else "")
        raise NotFound(f"no matching manifest for {name} in the manifest list entries")
    return chosen
