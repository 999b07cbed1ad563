"""Volumes on a real kernel, and the volume commands of the docker CLI and of ketch.

- The local driver's options mount for real: a ``tmpfs`` volume and a bind
  volume (``type=none,o=bind``) are mounted at the first user, stay for the
  second, and are unmounted by the last; removing a bind volume never
  deletes the bound directory's content.
- The ``/volumes`` router runs in an aiohttp app of this process on a unix
  socket (ketchd's wiring is the lead's), and the docker CLI 28 and ketch's
  own ``volume`` commands talk to it: create/ls/inspect/rm/prune with their
  flags and output, as docker prints them for dockerd.

Everything lives under ``/tmp/<session prefix>-vol*``; a finalizer lazily
unmounts whatever is left below it and removes it, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.conftest import PREFIX
from tests.integration.engines import mounts_under, unmount_all
from tests.integration.refdockerd import ref_dockerd  # noqa: F401 - a fixture

from ketch.api import make_app
from ketch.api.routers import volumes
from ketch.api.routers.system import HostFacts
from ketch.volume.store import VolumeStore

DOCKER = shutil.which("docker")

pytestmark = [pytest.mark.root]

FACTS = HostFacts(
    id="0d1c", name="box", server_version="0.1.0", git_commit="abc1234", build_time="",
    runtime_version="CPython 3.11.7", os="linux", arch="amd64", machine="x86_64",
    kernel_version=os.uname().release, operating_system="Debian", ncpu=1, mem_total=1 << 30,
    root_dir="/var/lib/ketch", cgroup_version="2")


class Backend:
    def facts(self) -> HostFacts:
        return FACTS


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-vol", dir="/tmp"))
    try:
        yield d
    finally:
        left = unmount_all(d)
        shutil.rmtree(d, ignore_errors=True)
        assert not left, f"mounts left under {d}: {left}"


@pytest.fixture
def store(base: Path) -> Iterator[VolumeStore]:
    s = VolumeStore(str(base / "root"))
    yield s
    s.close()


# --- the local driver's mounts ----------------------------------------------------------------


def test_tmpfs_volume_refcount(store: VolumeStore, base: Path) -> None:
    v = store.create("tv", options={"type": "tmpfs", "device": "tmpfs",
                                    "o": "size=1m,uid=1000,mode=0750"})
    assert mounts_under(base) == []
    path = store.mount("tv", "c1")
    assert mounts_under(base) == [v.mountpoint]
    st = os.stat(path)
    assert (st.st_uid, st.st_mode & 0o7777) == (1000, 0o750)
    Path(path, "f").write_text("in tmpfs")
    store.mount("tv", "c2")
    assert mounts_under(base) == [v.mountpoint]           # mounted once
    store.unmount("tv", "c1")
    assert Path(path, "f").read_text() == "in tmpfs"      # c2 still uses it
    store.unmount("tv", "c2")
    assert mounts_under(base) == []
    assert os.listdir(path) == []
    # A restarted daemon: the refs are in the database, the mount in the kernel.
    store.mount("tv", "c3")
    again = VolumeStore(str(base / "root"))
    try:
        assert again.mount_refs("tv") == ["c3"]
        assert again.reconcile(set()) == ["tv"]
        assert mounts_under(base) == []
    finally:
        again.close()


def test_bind_volume_and_remove_keeps_the_host_dir(store: VolumeStore, base: Path) -> None:
    host = base / "host-data"
    host.mkdir()
    (host / "precious").write_text("keep me")
    v = store.create("bv", options={"type": "none", "device": str(host), "o": "bind"})
    path = store.mount("bv", "c1")
    assert Path(path, "precious").read_text() == "keep me"
    assert mounts_under(base) == [v.mountpoint]
    store.unmount("bv", "c1")
    assert mounts_under(base) == []
    store.mount("bv", "c2")
    store.release_all("c2")
    store.remove("bv")
    assert (host / "precious").read_text() == "keep me"
    assert not Path(v.mountpoint).exists()


def test_mount_failure_leaves_nothing(store: VolumeStore, base: Path) -> None:
    v = store.create("bad", options={"type": "none", "device": str(base / "missing"),
                                     "o": "bind"})
    with pytest.raises(Exception, match=r"error while mounting volume '.*': failed to mount "
                                        r"local volume: mount .*/missing:.*, flags: 0x1000: "
                                        r"no such file or directory"):
        store.mount("bad", "c1")
    assert store.mount_refs("bad") == [] and mounts_under(base) == []
    assert v.needs_mount


# --- the router and the CLIs ------------------------------------------------------------------


class Server:
    """The Engine API app with the volume router, served on a unix socket from a thread."""

    def __init__(self, store: VolumeStore, sock: Path,
                 in_use: Callable[[str], list[str]]) -> None:
        self.sock = sock
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        app = make_app(Backend())
        volumes.setup(app, store, in_use=in_use)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.runner = web.AppRunner(app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.UnixSite(self.runner, str(sock))
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "the test server did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def api(store: VolumeStore, base: Path) -> Iterator[tuple[Server, dict[str, list[str]]]]:
    users: dict[str, list[str]] = {}
    server = Server(store, base / "api.sock", lambda n: users.get(n, []))
    try:
        yield server, users
    finally:
        server.stop()


def docker(server: Server, *args: str, input: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = f"unix://{server.sock}"
    env["DOCKER_CONFIG"] = str(server.sock.parent / "docker-config")
    assert DOCKER is not None
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env,
                          input=input, timeout=60)


@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
def test_docker_cli_volume_commands(api: tuple[Server, dict[str, list[str]]],
                                    store: VolumeStore) -> None:
    server, users = api
    r = docker(server, "volume", "create", "--label", "x=1", "--label", "y", "lab")
    assert (r.returncode, r.stdout, r.stderr) == (0, "lab\n", "")
    r = docker(server, "volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs",
               "-o", "o=size=1m,uid=1000", "tv")
    assert r.returncode == 0, r.stderr
    anon = docker(server, "volume", "create").stdout.strip()
    assert len(anon) == 64
    r = docker(server, "volume", "create", "-o", "foo=bar", "x2")
    assert r.returncode == 1
    assert r.stderr.strip() == 'Error response from daemon: create x2: invalid option: "foo"'
    r = docker(server, "volume", "create", "a")
    assert r.stderr.strip() == ("Error response from daemon: create a: volume name is too "
                                "short, names should be at least two alphanumeric characters")

    r = docker(server, "volume", "ls")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert [line.split() for line in lines[1:]] == [["local", anon], ["local", "lab"],
                                                    ["local", "tv"]]
    assert docker(server, "volume", "ls", "-q", "-f", "label=x=1").stdout == "lab\n"
    users["lab"] = ["c1"]
    assert docker(server, "volume", "ls", "-q", "-f", "dangling=true").stdout.split() == \
        [anon, "tv"]
    r = docker(server, "volume", "ls", "-f", "bogus=1")
    assert r.returncode == 1 and "invalid filter 'bogus'" in r.stderr

    r = docker(server, "volume", "inspect", "tv", "nope")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error response from daemon: get nope: no such volume"
    [doc] = json.loads(r.stdout)
    assert doc["Options"] == {"device": "tmpfs", "o": "size=1m,uid=1000", "type": "tmpfs"}
    assert doc["Mountpoint"] == store.path_of("tv") and doc["Labels"] is None
    r = docker(server, "volume", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Labels}}", "lab")
    assert r.stdout == "lab local map[x:1 y:]\n"

    r = docker(server, "volume", "rm", "lab")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error response from daemon: remove lab: volume is in use - [c1]"
    r = docker(server, "volume", "rm", "-f", "nope")
    assert (r.returncode, r.stdout) == (0, "nope\n")

    # prune: anonymous ones only (the CLI speaks 1.45 here), then -a for the named.
    r = docker(server, "volume", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n"
    r = docker(server, "volume", "prune", input="n\n")
    assert "anonymous local volumes not used by at least one container" in r.stdout
    r = docker(server, "volume", "prune", "-a", input="y\n")
    assert "Deleted Volumes:\ntv\n" in r.stdout and "lab" not in r.stdout
    users.clear()
    r = docker(server, "volume", "rm", "lab", "nope")
    assert r.returncode == 1 and r.stdout == "lab\n"
    assert r.stderr.strip() == "Error response from daemon: get nope: no such volume"
    assert store.volumes() == []
    r = docker(server, "system", "df")
    assert r.returncode == 0, r.stderr
    assert "Local Volumes" in r.stdout


def test_ketch_cli_volume_commands(api: tuple[Server, dict[str, list[str]]],
                                   store: VolumeStore, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from ketch.cli import main

    server, users = api
    monkeypatch.setattr(main, "COMMANDS", {**main.COMMANDS,
                                           "volume": "ketch.cli.volume_cmds:volume"})
    monkeypatch.setenv("KETCH_HOST", f"unix://{server.sock}")

    def ketch(*args: str, stdin: str = "") -> tuple[int, str, str]:
        import io
        import sys

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    assert ketch("volume", "create", "--label", "k=v", "data") == (0, "data\n", "")
    code, out, _ = ketch("volume", "create")
    anon = out.strip()
    assert code == 0 and len(anon) == 64
    assert ketch("volume", "create", "--name", "a1", "a2") == (
        1, "", "conflicting options: cannot specify a volume-name through both --name and as "
               "a positional arg\n")
    code, out, _ = ketch("volume", "ls")
    assert out.splitlines()[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert sorted(line.split()[1] for line in out.splitlines()[1:]) == sorted([anon, "data"])
    assert ketch("volume", "ls", "-q", "--filter", "label=k") == (0, "data\n", "")
    code, out, err = ketch("volume", "inspect", "data", "nope")
    assert code == 1 and json.loads(out)[0]["Labels"] == {"k": "v"}
    assert err == "Error response from daemon: get nope: no such volume\n"
    assert ketch("volume", "inspect", "-f", "{{.Driver}}", "data") == (0, "local\n", "")
    users["data"] = ["c1"]
    assert ketch("volume", "rm", "data") == (
        1, "", "Error response from daemon: remove data: volume is in use - [c1]\n")
    code, out, _ = ketch("volume", "prune", stdin="n\n")
    assert code == 0 and "Deleted" not in out and store.exists(anon)
    code, out, _ = ketch("volume", "prune", "-f")
    assert out == f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n"
    users.clear()
    assert ketch("volume", "prune", "-a", "-f", "--filter", "all=1")[0] != 0
    assert ketch("volume", "rm", "data") == (0, "data\n", "")
    assert ketch("volume", "ls", "-q") == (0, "", "")



# --- the planner's refusals, side by side with dockerd 20.10 ------------------------------


def _differential_cases(dockerd_base: Path) -> list[tuple[list[str], dict[str, Any]]]:
    """``docker create`` flags, and the HostConfig the docker CLI makes of them."""
    from ketch.engine.model import BindOptions, MountSpec

    def mount(**kw: Any) -> MountSpec:
        return MountSpec(**kw)

    missing = f"/{PREFIX}-missing-source"
    root_parent = str(dockerd_base)
    return [
        (["-v", "/tmp:/"], {"binds": ["/tmp:/"]}),
        (["-v", "vol:rel"], {"binds": ["vol:rel"]}),
        (["-v", "/tmp:x"], {"binds": ["/tmp:x"]}),
        (["-v", "/tmp:/x:bogus"], {"binds": ["/tmp:/x:bogus"]}),
        (["-v", "/x:rw"], {"binds": ["/x:rw"]}),
        (["-v", "/tmp:/x:ro,rw"], {"binds": ["/tmp:/x:ro,rw"]}),
        (["-v", "v3:/x:nocopy,copy"], {"binds": ["v3:/x:nocopy,copy"]}),
        (["-v", "a:/x:Z,z"], {"binds": ["a:/x:Z,z"]}),
        (["-v", "a:b:c:d"], {"binds": ["a:b:c:d"]}),
        (["-v", "/tmp:/x:nocopy"], {"binds": ["/tmp:/x:nocopy"]}),
        (["-v", "v:/x:rshared"], {"binds": ["v:/x:rshared"]}),
        (["-v", "bad!:/x"], {"binds": ["bad!:/x"]}),
        (["-v", "/tmp:/x", "-v", "/etc:/x/"], {"binds": ["/tmp:/x", "/etc:/x/"]}),
        (["-v", "/tmp:/x", "--tmpfs", "/x"], {"binds": ["/tmp:/x"], "tmpfs": {"/x": ""}}),
        (["-v", "/tmp:/x", "--mount", "type=bind,src=/etc,dst=/x"],
         {"binds": ["/tmp:/x"], "mounts": [mount(type="bind", source="/etc", target="/x")]}),
        (["--mount", "type=bind,src=/etc,dst=/x/", "-v", "/tmp:/x"],
         {"binds": ["/tmp:/x"], "mounts": [mount(type="bind", source="/etc", target="/x/")]}),
        (["--mount", "type=volume,dst=/x,readonly"],
         {"mounts": [mount(type="volume", target="/x", read_only=True)]}),
        (["--mount", f"type=bind,src={missing},dst=/x"],
         {"mounts": [mount(type="bind", source=missing, target="/x")]}),
        (["--mount", "type=bind,src=rel,dst=/x"],
         {"mounts": [mount(type="bind", source="rel", target="/x")]}),
        (["--mount", "type=tmpfs,src=foo,dst=/x"],
         {"mounts": [mount(type="tmpfs", source="foo", target="/x")]}),
        (["--mount", "type=bind,dst=/x"], {"mounts": [mount(type="bind", target="/x")]}),
        (["--mount", "type=tmpfs,dst=/"], {"mounts": [mount(type="tmpfs", target="/")]}),
        (["--mount", f"type=bind,src={root_parent},dst=/x,bind-propagation=shared"],
         {"mounts": [mount(type="bind", source=root_parent, target="/x",
                           bind_options=BindOptions(propagation="shared"))]}),
        (["--volumes-from", ""], {"volumes_from": [""]}),
        (["--volumes-from", "x:bogus"], {"volumes_from": ["x:bogus"]}),
    ]


def _daemon_message(stderr: str) -> str:
    for line in stderr.splitlines():
        _, sep, message = line.partition("Error response from daemon: ")
        if sep:
            return message
    raise AssertionError(f"no daemon error in {stderr!r}")


@pytest.mark.skipif(DOCKER is None or shutil.which("dockerd") is None,
                    reason="dockerd (docker.io) or the docker CLI is not installed")
def test_refusals_match_dockerd(ref_dockerd: Any, store: VolumeStore) -> None:  # noqa: F811
    from ketch.engine.model import ContainerConfig, HostConfig
    from ketch.errors import KetchError
    from ketch.volume.planner import plan_mounts

    for flags, hc in _differential_cases(ref_dockerd.base):
        theirs = ref_dockerd.cli("create", "--network", "none", *flags, "busybox:latest",
                                 "true")
        assert theirs.returncode != 0, f"dockerd accepted {flags}"
        with pytest.raises(KetchError) as exc:
            plan_mounts(ContainerConfig(), HostConfig(**hc), store,
                        daemon_root=str(ref_dockerd.data_root),
                        volumes_from=lambda ref: [])
        assert str(exc.value) == _daemon_message(theirs.stderr), flags
    assert store.volumes() == []


# --- plans and copy-up, side by side with dockerd 20.10 -----------------------------------

VOLIMG_DOCKERFILE = """FROM busybox:latest
RUN mkdir -p /data/sub && echo hi > /data/f && ln /data/f /data/hard && ln -s f /data/l \\
 && chown -R 1000:1000 /data && chmod 750 /data && chmod 4751 /data/sub
VOLUME /data /empty
"""


def _tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry below ``root`` (and root itself as "."): mode, owner, group, and the
    content (a symlink's target, a file's bytes)."""
    out: dict[str, tuple[int, int, int, str]] = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        if p.is_symlink():
            what = "-> " + os.readlink(p)
        elif p.is_file():
            what = p.read_bytes().decode(errors="replace")
        else:
            what = ""
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, what)
    return out


def _normalized(mounts: list[dict[str, Any]], volume_dir: str) -> dict[str, dict[str, Any]]:
    out = {}
    for m in mounts:
        m = dict(m)
        if m["Type"] == "volume":
            anonymous = len(m["Name"]) == 64
            assert m["Source"] == f"{volume_dir}/{m['Name']}/_data"
            m["Name"] = "<anonymous>" if anonymous else m["Name"]
            m["Source"] = "<volume>"
        out[m["Destination"]] = m
    return out


@pytest.mark.skipif(DOCKER is None or shutil.which("dockerd") is None,
                    reason="dockerd (docker.io) or the docker CLI is not installed")
def test_plan_and_copy_up_match_dockerd(ref_dockerd: Any, store: VolumeStore,  # noqa: F811
                                        base: Path) -> None:
    from ketch.engine.model import BindOptions, ContainerConfig, HostConfig, MountSpec
    from ketch.volume.planner import copy_up, mounts_json, plan_mounts

    ctx = base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(VOLIMG_DOCKERFILE)
    ref_dockerd.build(ctx, "volimg:1")
    src = base / "bind-src"
    src.mkdir()
    flags = ["-v", "named:/data", "-v", f"{src}:/b:ro,rslave", "-v", "ro:/r:ro,nocopy",
             "-v", "/anon", "--tmpfs", "/t:size=1m",
             "--mount", "type=tmpfs,dst=/t2,tmpfs-size=1048576",
             "--mount", "type=volume,src=mv,dst=/m,volume-nocopy,readonly",
             "--mount", f"type=bind,src={src},dst=/b2,bind-propagation=shared"]
    cid = ref_dockerd.ok("create", "--network", "none", *flags, "volimg:1", "true"
                         ).stdout.strip()
    theirs = json.loads(ref_dockerd.ok("inspect", cid).stdout)[0]

    # The same request as the docker CLI sends it (-v /anon goes to Config.Volumes).
    from ketch.engine.model import TmpfsOptions, VolumeOptions

    config = ContainerConfig(volumes={"/data": {}, "/empty": {}, "/anon": {}})
    hc = HostConfig(binds=["named:/data", f"{src}:/b:ro,rslave", "ro:/r:ro,nocopy"],
                    tmpfs={"/t": "size=1m"},
                    mounts=[MountSpec(type="tmpfs", target="/t2",
                                      tmpfs_options=TmpfsOptions(size_bytes=1048576)),
                            MountSpec(type="volume", source="mv", target="/m", read_only=True,
                                      volume_options=VolumeOptions(no_copy=True)),
                            MountSpec(type="bind", source=str(src), target="/b2",
                                      bind_options=BindOptions(propagation="shared"))])
    assert sorted(theirs["HostConfig"]["Binds"]) == sorted(hc.binds or [])  # a Go map: any order
    rootfs = base / "rootfs"
    rootfs.mkdir()
    # The container's filesystem as dockerd has it, for the copy-up.
    exported = subprocess.run([ref_dockerd.docker_bin, "export", cid], capture_output=True,
                              env=ref_dockerd.env, timeout=120, check=True).stdout
    subprocess.run(["tar", "-C", str(rootfs), "-x", "--same-owner", "-p"], input=exported,
                   check=True, timeout=120)
    plan = plan_mounts(config, hc, store, daemon_root=str(ref_dockerd.data_root),
                       rootfs=str(rootfs))
    assert _normalized(mounts_json(plan.mounts), store.dir) == \
        _normalized(theirs["Mounts"], str(ref_dockerd.data_root / "volumes"))

    # /empty and /anon are not in the image's layers (VOLUME makes no directory): no copy.
    assert copy_up(plan.mounts, store, str(rootfs)) == ["named"]
    assert set(_tree(Path(store.path_of("named")))) == {".", "f", "hard", "l", "sub"}
    for name in ("named", "mv", "ro"):
        assert _tree(Path(store.path_of(name))) == \
            _tree(ref_dockerd.data_root / "volumes" / name / "_data"), name
    anon = {m["Destination"]: m["Name"] for m in theirs["Mounts"] if m["Type"] == "volume"}
    mine = {m.destination: m.name for m in plan.mounts if m.type == "volume"}
    for dest in ("/empty", "/anon"):
        assert _tree(Path(store.path_of(mine[dest]))) == \
            _tree(ref_dockerd.data_root / "volumes" / anon[dest] / "_data"), dest
    ref_dockerd.ok("rm", "-v", cid)
