"""Pull and push through ketchd, driven by the docker CLI and docker-py, to real registries.

The registries are Debian's Go registry (distribution 2.8, the reference) and
``ketch registry serve``, each on loopback. What must hold is Docker's round
trip: push, remove, pull, run; the same image ID and the same digest.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.integration.registries import PASSWORD, USER, Registry
from tests.integration.test_daemon_system import DOCKER, Ketchd, docker

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

KINDS = ["go", pytest.param("ketch", marks=pytest.mark.skipif(
    importlib.util.find_spec("ketch.cli.registry_cmds") is None,
    reason="ketch registry serve is not there yet"))]


def _ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"{out.args}: {out.stderr}{out.stdout}"
    return out.stdout


def _inspect(k: Ketchd, name: str) -> dict[str, Any]:
    return dict(json.loads(_ok(docker(k, "image", "inspect", name)))[0])


def _login(k: Ketchd, reg: Registry, password: str = PASSWORD
           ) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    env = {"DOCKER_HOST": k.host, "DOCKER_CONFIG": str(k.dir / "docker-config"),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([DOCKER, "login", "-u", USER, "--password-stdin", reg.host],
                          input=password, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("kind", KINDS)
def test_push_rmi_pull_run_round_trip(loaded_ketchd: Ketchd, start_registry: Callable[..., Registry],
                                      kind: str) -> None:
    k = loaded_ketchd
    reg = start_registry(kind)
    name = f"{reg.host}/me/box:1"
    _ok(docker(k, "tag", "busybox:latest", name))
    image_id = _inspect(k, name)["Id"]
    out = _ok(docker(k, "push", name))
    assert f"The push refers to repository [{reg.host}/me/box]" in out
    assert "Pushed" in out
    digest = out.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    assert _inspect(k, name)["RepoDigests"] == [f"{reg.host}/me/box@{digest}"]
    # A second push finds everything there; another repository of the registry gets
    # the layer by a cross-repository mount.
    assert "Layer already exists" in _ok(docker(k, "push", name))
    _ok(docker(k, "tag", name, f"{reg.host}/me/copy:1"))
    assert ": Mounted from me/box" in _ok(docker(k, "push", f"{reg.host}/me/copy:1"))
    _ok(docker(k, "rmi", f"{reg.host}/me/copy:1"))

    _ok(docker(k, "rmi", name))
    out = _ok(docker(k, "pull", name))
    assert f"Digest: {digest}" in out
    # busybox:latest still holds the layer, so nothing needed downloading.
    assert f"Status: Downloaded newer image for {name}" in out
    doc = _inspect(k, name)
    assert doc["Id"] == image_id
    assert f"{reg.host}/me/box@{digest}" in doc["RepoDigests"]
    assert "Status: Image is up to date for" in _ok(docker(k, "pull", name))

    # From nothing: every layer comes from the registry.
    _ok(docker(k, "rmi", "-f", image_id))
    out = _ok(docker(k, "pull", f"{reg.host}/me/box@{digest}"))
    assert "Pull complete" in out
    assert _inspect(k, f"{reg.host}/me/box@{digest}")["Id"] == image_id
    _ok(docker(k, "tag", f"{reg.host}/me/box@{digest}", "busybox:latest"))
    run = docker(k, "run", "--rm", "--network", "none", f"{reg.host}/me/box@{digest}",
                 "echo", "pulled")
    assert _ok(run).strip() == "pulled"


@pytest.mark.parametrize("kind", KINDS)
def test_pull_errors(loaded_ketchd: Ketchd, start_registry: Callable[..., Registry],
                     kind: str) -> None:
    k = loaded_ketchd
    reg = start_registry(kind)
    out = docker(k, "pull", f"{reg.host}/me/none:1")
    assert out.returncode == 1
    assert "manifest unknown" in out.stderr or "not found" in out.stderr, out.stderr
    assert "Error response from daemon" in out.stderr
    out = docker(k, "pull", "127.0.0.1:1/me/none:1")
    assert out.returncode == 1 and "connection refused" in out.stderr, out.stderr
    out = docker(k, "push", f"{reg.host}/me/never-tagged:1")
    assert out.returncode == 1
    assert "An image does not exist locally with the tag" in out.stderr


@pytest.mark.parametrize(("kind", "auth"), [("go", True), *(
    pytest.param("ketch", mode, marks=KINDS[1].marks) for mode in ("basic", "token"))])
def test_auth_login_push_pull(loaded_ketchd: Ketchd, start_registry: Callable[..., Registry],
                              kind: str, auth: bool | str) -> None:
    """Basic auth (htpasswd) on both registries, and ketch's token flow (Bearer)."""
    k = loaded_ketchd
    reg = start_registry(kind, auth=auth)
    name = f"{reg.host}/me/secret:1"
    _ok(docker(k, "tag", "busybox:latest", name))
    out = docker(k, "push", name)
    # Basic auth refuses a client with no credentials; the token flow gives it an
    # anonymous token that grants nothing (as Docker Hub does).
    refusal = ("denied: requested access to the resource is denied" if auth == "token"
               else "no basic auth credentials")
    assert (out.returncode, out.stderr) == (1, refusal + "\n")
    bad = _login(k, reg, "wrong")
    assert bad.returncode == 1 and "unauthorized" in bad.stderr.lower(), bad.stderr
    good = _login(k, reg)
    assert good.returncode == 0 and "Login Succeeded" in good.stdout, good.stderr
    config = json.loads((k.dir / "docker-config" / "config.json").read_text())
    assert reg.host in config["auths"]
    _ok(docker(k, "push", name))
    _ok(docker(k, "rmi", name))
    _ok(docker(k, "pull", name))
    _ok(docker(k, "logout", reg.host))
    out = docker(k, "pull", name.replace(":1", ":2"))
    assert out.returncode == 1


def test_docker_py_pull_push_with_auth_config(loaded_ketchd: Ketchd,
                                              start_registry: Callable[..., Registry]) -> None:
    import docker as dockerpy

    k = loaded_ketchd
    reg = start_registry("go", auth=True)
    client = dockerpy.DockerClient(base_url=k.host, version="1.45")
    try:
        auth = {"username": USER, "password": PASSWORD}
        assert client.login(USER, PASSWORD, registry=reg.host)["Status"] == "Login Succeeded"
        img = client.images.get("busybox:latest")
        img.tag(f"{reg.host}/py/box", "7")
        lines = list(client.images.push(f"{reg.host}/py/box", "7", auth_config=auth,
                                        stream=True, decode=True))
        assert any("aux" in m for m in lines), lines
        assert not any("error" in m for m in lines), lines
        client.images.remove(f"{reg.host}/py/box:7")
        pulled = client.images.pull(f"{reg.host}/py/box", tag="7", auth_config=auth)
        assert pulled.id == img.id
        dist = client.api.inspect_distribution(f"{reg.host}/py/box:7", auth_config=auth)
        assert dist["Descriptor"]["digest"].startswith("sha256:")
    finally:
        client.close()


def test_pull_event_and_all_tags(loaded_ketchd: Ketchd,
                                 start_registry: Callable[..., Registry]) -> None:
    k = loaded_ketchd
    reg = start_registry("go")
    for tag in ("a", "b"):
        _ok(docker(k, "tag", "busybox:latest", f"{reg.host}/me/multi:{tag}"))
    out = _ok(docker(k, "push", "--all-tags", f"{reg.host}/me/multi"))
    assert "a: digest:" in out and "b: digest:" in out
    for tag in ("a", "b"):
        _ok(docker(k, "rmi", f"{reg.host}/me/multi:{tag}"))
    out = _ok(docker(k, "pull", "--all-tags", f"{reg.host}/me/multi"))
    assert f"Status: Downloaded newer image for {reg.host}/me/multi" in out
    tags = _inspect(k, f"{reg.host}/me/multi:a")["RepoTags"]
    assert f"{reg.host}/me/multi:b" in tags
    events = _ok(docker(k, "events", "--since", "0", "--until", str(int(time.time()) + 1),
                        "--filter",
                        "event=pull", "--format", "{{.Actor.ID}}"))
    assert f"{reg.host}/me/multi:a" in events


def test_docker_hub_names_come_from_the_registry_mirror(
        start_ketchd: Callable[..., Ketchd], busybox_archive: Any,
        start_registry: Callable[..., Registry]) -> None:
    """``--registry-mirror``: Docker Hub images are fetched from the mirror (there is no
    internet here, so anything that reached past the mirror would fail)."""
    reg = start_registry("go")
    k = start_ketchd({"registry-mirrors": [f"http://{reg.host}"]})
    _ok(docker(k, "load", "-i", str(busybox_archive)))
    _ok(docker(k, "tag", "busybox:latest", f"{reg.host}/library/busybox:latest"))
    _ok(docker(k, "push", f"{reg.host}/library/busybox:latest"))
    image_id = _inspect(k, "busybox:latest")["Id"]
    _ok(docker(k, "rmi", "-f", image_id))
    out = _ok(docker(k, "pull", "busybox"))
    assert "Status: Downloaded newer image for busybox:latest" in out
    doc = _inspect(k, "busybox")
    assert doc["Id"] == image_id
    assert doc["RepoTags"] == ["busybox:latest"]
    assert doc["RepoDigests"][0].startswith("busybox@sha256:")
    mirrors = json.loads(_ok(docker(k, "info", "--format", "{{json .RegistryConfig}}")))
    assert mirrors["Mirrors"] == [f"http://{reg.host}/"]


def test_pull_of_an_index_picks_the_platform(loaded_ketchd: Ketchd,
                                             start_registry: Callable[..., Registry]) -> None:
    """A manifest list: this machine's entry by default, another with --platform, and
    RepoDigests naming the list (as dockerd); no entry for the platform is an error
    after "Pulling from"."""
    from tests.integration.registries import put_image, put_manifest, tar_layer

    k = loaded_ketchd
    reg = start_registry("go")
    busybox = _inspect(k, "busybox:latest")
    amd = put_image(reg.host, "me/multi", [tar_layer({"hello": b"amd64\n"})])
    arm = put_image(reg.host, "me/multi", [tar_layer({"hello": b"arm64\n"})], arch="arm64")
    media = "application/vnd.docker.distribution.manifest.list.v2+json"
    entry = "application/vnd.docker.distribution.manifest.v2+json"
    here = busybox["Architecture"]
    index = put_manifest(reg.host, "me/multi", "1", {
        "schemaVersion": 2, "mediaType": media, "manifests": [
            {"mediaType": entry, "digest": amd[0], "size": amd[1],
             "platform": {"architecture": here, "os": "linux"}},
            {"mediaType": entry, "digest": arm[0], "size": arm[1],
             "platform": {"architecture": "arm64", "os": "linux"}}]}, media)
    out = _ok(docker(k, "pull", f"{reg.host}/me/multi:1"))
    assert f"Digest: {index}" in out
    doc = _inspect(k, f"{reg.host}/me/multi:1")
    assert doc["Architecture"] == here
    assert doc["RepoDigests"] == [f"{reg.host}/me/multi@{index}"]
    _ok(docker(k, "rmi", f"{reg.host}/me/multi:1"))
    _ok(docker(k, "pull", "--platform", "linux/arm64", f"{reg.host}/me/multi:1"))
    assert _inspect(k, f"{reg.host}/me/multi:1")["Architecture"] == "arm64"
    out = docker(k, "pull", "--platform", "linux/s390x", f"{reg.host}/me/multi:1")
    assert out.returncode == 1
    assert "1: Pulling from me/multi" in out.stdout
    assert "no matching manifest for linux/s390x in the manifest list entries" in out.stderr
    import docker as dockerpy

    client = dockerpy.DockerClient(base_url=k.host, version="1.45")
    try:
        dist = client.api.inspect_distribution(f"{reg.host}/me/multi:1")
    finally:
        client.close()
    assert dist["Descriptor"] == {"mediaType": media, "digest": index,
                                  "size": dist["Descriptor"]["size"]}
    assert [p["architecture"] for p in dist["Platforms"]] == [here, "arm64"]


def test_pull_of_many_gzip_layers_from_nothing(loaded_ketchd: Ketchd,
                                               start_registry: Callable[..., Registry]) -> None:
    """Five gzip layers on top of busybox's: downloads beyond three wait (dockerd's
    max-concurrent-downloads), every layer lands, in order (a later layer replaces a file)."""
    from tests.integration.registries import put_image, tar_layer

    k = loaded_ketchd
    reg = start_registry("go")
    # busybox's own root filesystem as the first layer, through a container export.
    cid = _ok(docker(k, "create", "busybox:latest", "true")).strip()
    assert DOCKER is not None
    base = subprocess.run([DOCKER, "export", cid], capture_output=True, timeout=60,
                          env={"DOCKER_HOST": k.host, "PATH": "/usr/bin:/bin"}).stdout
    _ok(docker(k, "rm", cid))
    layers = [base] + [tar_layer({f"layer{i}": f"{i}\n".encode(), "which": f"{i}\n".encode()})
                       for i in range(1, 5)]
    put_image(reg.host, "me/tall", layers, tag="5")
    out = _ok(docker(k, "pull", f"{reg.host}/me/tall:5"))
    lines = out.splitlines()
    assert sum(1 for line in lines if line.endswith(": Pull complete")) == 5
    assert sum(1 for line in lines if line.endswith(": Waiting")) == 2
    run = docker(k, "run", "--rm", "--network", "none", f"{reg.host}/me/tall:5", "sh", "-c",
                 "cat /layer1 /layer4 /which")
    assert _ok(run).split() == ["1", "4", "4"]


@pytest.mark.parametrize("kind", KINDS)
def test_committed_image_round_trip(loaded_ketchd: Ketchd,
                                    start_registry: Callable[..., Registry], kind: str) -> None:
    """An image made here (a container's changes committed as a new layer) pushed,
    removed and pulled back: the same ID, the same digest, the same files."""
    k = loaded_ketchd
    reg = start_registry(kind)
    name = f"{reg.host}/me/committed:1"
    _ok(docker(k, "run", "--name", "maker", "--network", "none", "busybox", "sh", "-c",
               "echo layered > /made && rm /bin/true"))
    _ok(docker(k, "commit", "-c", "CMD cat /made", "maker", name))
    _ok(docker(k, "rm", "maker"))
    before = _inspect(k, name)
    assert len(before["RootFS"]["Layers"]) == 2
    out = _ok(docker(k, "push", name))
    digest = out.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    _ok(docker(k, "rmi", name))
    _ok(docker(k, "rmi", "busybox:latest"))          # nothing of it left here
    out = _ok(docker(k, "pull", name))
    assert out.count("Pull complete") == 2 and f"Digest: {digest}" in out
    after = _inspect(k, name)
    assert after["Id"] == before["Id"]
    assert after["RepoDigests"] == [f"{reg.host}/me/committed@{digest}"]
    run = docker(k, "run", "--rm", "--network", "none", name)
    assert _ok(run) == "layered\n"
    gone = docker(k, "run", "--rm", "--network", "none", name, "ls", "/bin/true")
    assert gone.returncode != 0     # the whiteout came through the registry too
