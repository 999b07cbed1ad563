"""Image references against Docker's grammar, normalisation and messages."""

import pytest

from ketch.errors import InvalidArgument
from ketch.image.reference import (
    Reference,
    is_full_id,
    normalize,
    parse,
    parse_digest,
)

H = "0123456789abcdef" * 4          # 64 hex: a sha256
H512 = H * 2                        # 128 hex: a sha512
D = f"sha256:{H}"

# input -> (domain, path, tag, digest), exactly as written (no defaults).
PARSE_OK = [
    ("busybox", "", "busybox", None, None),
    ("busybox:1.36", "", "busybox", "1.36", None),
    ("library/busybox", "", "library/busybox", None, None),
    ("user/app:v1", "", "user/app", "v1", None),
    ("a/b/c/d", "", "a/b/c/d", None, None),
    ("docker.io/library/busybox", "docker.io", "library/busybox", None, None),
    ("example.com/app", "example.com", "app", None, None),
    ("example.com:5000/app:tag", "example.com:5000", "app", "tag", None),
    ("localhost:5000/x", "localhost:5000", "x", None, None),
    ("localhost/x", "localhost", "x", None, None),
    ("127.0.0.1:5000/ns/app", "127.0.0.1:5000", "ns/app", None, None),
    ("[::1]:5000/x", "[::1]:5000", "x", None, None),
    ("[::1]/x", "[::1]", "x", None, None),
    ("[2001:db8::1]:443/ns/app:v2", "[2001:db8::1]:443", "ns/app", "v2", None),
    ("[fe80::1:2:3]/app", "[fe80::1:2:3]", "app", None, None),
    ("my-registry.example.com/a_b/c__d/e-f", "my-registry.example.com", "a_b/c__d/e-f", None, None),
    ("a.b/c---d", "a.b", "c---d", None, None),
    ("app.v2/x", "app.v2", "x", None, None),
    ("UPPER.example.com/app", "UPPER.example.com", "app", None, None),
    (f"busybox@{D}", "", "busybox", None, D),
    (f"busybox:latest@{D}", "", "busybox", "latest", D),
    (f"reg:5000/a/b:t@{D}", "reg:5000", "a/b", "t", D),
    (f"busybox@sha512:{H512}", "", "busybox", None, f"sha512:{H512}"),
    ("busybox:" + "t" * 128, "", "busybox", "t" * 128, None),
    ("busybox:_under", "", "busybox", "_under", None),
    ("busybox:V1.0-RC_2", "", "busybox", "V1.0-RC_2", None),
    ("a", "", "a", None, None),
    ("0", "", "0", None, None),
    ("a.b", "", "a.b", None, None),
    ("a/" + "b" * 253, "", "a/" + "b" * 253, None, None),
]


@pytest.mark.parametrize("s, domain, path, tag, digest", PARSE_OK)
def test_parse_ok(s, domain, path, tag, digest):
    ref = parse(s)
    assert ref == Reference(domain, path, tag, digest)
    assert str(ref) == s


PARSE_BAD = [
    ("", "repository name must have at least one component"),
    (":tag", "invalid reference format"),
    ("busybox:", "invalid reference format"),
    ("busybox@", "invalid reference format"),
    ("busybox::tag", "invalid reference format"),
    ("busybox:-tag", "invalid reference format"),
    ("busybox:.tag", "invalid reference format"),
    ("busybox:" + "t" * 129, "invalid reference format"),
    ("/busybox", "invalid reference format"),
    ("busybox/", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("-busybox", "invalid reference format"),
    ("busybox-", "invalid reference format"),
    ("a..b", "invalid reference format"),
    ("a___b", "invalid reference format"),
    ("a._b", "invalid reference format"),
    ("-example.com/app", "invalid reference format"),
    ("example-.com/app", "invalid reference format"),
    ("reg:port/app", "invalid reference format"),
    ("[::1]:/app", "invalid reference format"),
    ("[zz::1]/app", "invalid reference format"),
    ("::1/app", "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),   # < 32 hex
    ("busybox@sha256:" + "g" * 64, "invalid reference format"),
    ("busybox@" + H, "invalid reference format"),
    ("busy box", "invalid reference format"),
    ("busybox\n", "invalid reference format"),
    ("Busybox", "repository name must be lowercase"),
    ("example.com/App", "repository name must be lowercase"),
    ("a/" + "b" * 254, "repository name must not be more than 255 characters"),
    (f"busybox@sha256:{H[:40]}", "invalid checksum digest length"),
    (f"busybox@sha256:{H}00", "invalid checksum digest length"),
    (f"busybox@sha256:{H.upper()}", "invalid checksum digest format"),
    (f"busybox@md5:{H[:32]}", "unsupported digest algorithm"),
    (f"busybox@sha384:{H + H[:32]}", "unsupported digest algorithm"),
]


@pytest.mark.parametrize("s, message", PARSE_BAD)
def test_parse_bad(s, message):
    with pytest.raises(InvalidArgument) as exc:
        parse(s)
    assert str(exc.value) == message


# input -> (full normalised form, familiar form)
NORMALIZE = [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/library/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
    ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("user/ns/app", "docker.io/user/ns/app:latest", "user/ns/app:latest"),
    ("library/ns/app", "docker.io/library/ns/app:latest", "library/ns/app:latest"),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest"),
    ("localhost", "docker.io/library/localhost:latest", "localhost:latest"),
    ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
    ("myreg:5000/ns/app", "myreg:5000/ns/app:latest", "myreg:5000/ns/app:latest"),
    ("example.com/app:v1", "example.com/app:v1", "example.com/app:v1"),
    ("192.168.1.1:5000/app", "192.168.1.1:5000/app:latest", "192.168.1.1:5000/app:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ("[2001:db8::1]/ns/x:t", "[2001:db8::1]/ns/x:t", "[2001:db8::1]/ns/x:t"),
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest"),   # uppercase first part: a host
    ("quay.io/coreos/etcd", "quay.io/coreos/etcd:latest", "quay.io/coreos/etcd:latest"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
    (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}", f"busybox:1@{D}"),
    (f"localhost:5000/x@{D}", f"localhost:5000/x@{D}", f"localhost:5000/x@{D}"),
]


@pytest.mark.parametrize("s, full, familiar", NORMALIZE)
def test_normalize(s, full, familiar):
    ref = normalize(s)
    assert str(ref) == full
    assert ref.familiar() == familiar
    # Normalising is idempotent, and the familiar form normalises back.
    assert normalize(full) == ref
    assert normalize(familiar) == ref
    assert parse(full) == ref


NORMALIZE_BAD = [
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("user/App", "invalid reference format: repository name (user/App) must be lowercase"),
    ("localhost:5000/Foo:v1", "invalid reference format: repository name (Foo) must be lowercase"),
    (H, f"invalid repository name ({H}), cannot specify 64-byte hexadecimal strings"),
    ("", "invalid reference format"),
    ("busybox:", "invalid reference format"),
    ("a/" + "b" * 254, "repository name must not be more than 255 characters"),
    (f"busybox@md5:{H[:32]}", "unsupported digest algorithm"),
    (f"busybox@sha256:{H[:40]}", "invalid checksum digest length"),
]


@pytest.mark.parametrize("s, message", NORMALIZE_BAD)
def test_normalize_bad(s, message):
    with pytest.raises(InvalidArgument) as exc:
        normalize(s)
    assert str(exc.value) == message


@pytest.mark.parametrize("s, name, familiar_name", [
    ("busybox", "docker.io/library/busybox", "busybox"),
    ("user/app:v1", "docker.io/user/app", "user/app"),
    ("myreg:5000/ns/app", "myreg:5000/ns/app", "myreg:5000/ns/app"),
    ("library/a/b", "docker.io/library/a/b", "library/a/b"),
])
def test_name_and_familiar_name(s, name, familiar_name):
    ref = normalize(s)
    assert ref.name == name
    assert ref.familiar_name == familiar_name
    assert ref.without_tag_or_digest() == Reference(ref.domain, ref.path)


def test_with_tag_and_digest():
    ref = normalize("busybox")
    assert str(ref.with_tag("1.36")) == "docker.io/library/busybox:1.36"
    pinned = ref.with_digest(D)
    assert str(pinned) == f"docker.io/library/busybox:latest@{D}"
    assert pinned.with_tag("x").digest == D
    assert ref.with_tag("1").tag == "1" and ref.tag == "latest"   # frozen: a copy


@pytest.mark.parametrize("tag", ["", "-x", ".x", "a" * 129, "a:b", "a/b"])
def test_with_tag_bad(tag):
    with pytest.raises(InvalidArgument, match="^invalid tag format$"):
        normalize("busybox").with_tag(tag)


@pytest.mark.parametrize("digest, message", [
    ("sha256:abc", "invalid digest format"),
    ("nocolon", "invalid digest format"),
    (f"md5:{H[:32]}", "unsupported digest algorithm"),
    (f"sha512:{H}", "invalid checksum digest length"),
])
def test_with_digest_bad(digest, message):
    with pytest.raises(InvalidArgument) as exc:
        normalize("busybox").with_digest(digest)
    assert str(exc.value) == message


def test_reference_is_frozen_and_hashable():
    ref = normalize("busybox")
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]
    assert {ref: 1}[normalize("docker.io/library/busybox:latest")] == 1


@pytest.mark.parametrize("s, expected", [
    (H, True), (D, True), (H.upper(), False), (H[:63], False), (H + "0", False),
    (f"sha512:{H}", False), ("busybox", False), ("", False), (H[:12], False),
])
def test_is_full_id(s, expected):
    assert is_full_id(s) is expected


@pytest.mark.parametrize("s, expected", [
    (D, ("sha256", H)),
    (f"sha512:{H512}", ("sha512", H512)),
])
def test_parse_digest_ok(s, expected):
    assert parse_digest(s) == expected


@pytest.mark.parametrize("s, message", [
    ("", "invalid checksum digest format"),
    ("sha256", "invalid checksum digest format"),
    ("sha256:", "invalid checksum digest format"),
    (f":{H}", "invalid checksum digest format"),
    (f"sha256:{H[:63]}", "invalid checksum digest length"),
    (f"sha512:{H}", "invalid checksum digest length"),
    (f"sha256:{H[:63]}G", "invalid checksum digest format"),
    (f"sha256:{H.upper()}", "invalid checksum digest format"),
    (f"md5:{H[:32]}", "unsupported digest algorithm"),
    (f"SHA256:{H}", "invalid checksum digest format"),
    (f"sha 256:{H}", "invalid checksum digest format"),
])
def test_parse_digest_bad(s, message):
    with pytest.raises(InvalidArgument) as exc:
        parse_digest(s)
    assert str(exc.value) == message
