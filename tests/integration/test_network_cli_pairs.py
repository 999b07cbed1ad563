"""``ketch network ...`` next to the docker CLI 28, both talking to one daemon.

The daemon is Debian's dockerd 20.10, the reference, run with its bridge and
iptables but in a network namespace of its own (``unshare -n``), so the
bridges, veths and rules it makes never touch the host's. Both CLIs reach it
through its unix socket (a path, not bound to a namespace). The same command
line goes to each and their exit code, stdout and stderr must match, the
name of the program aside. Commands that change state run once per CLI on
names of its own ("d-..." for docker, "k-..." for ketch), and the two
transcripts are compared with the names swapped and the ids masked.

``KETCH_NETWORK_TARGET`` picks the daemons: ``dockerd`` (the default: both
CLIs on the reference), ``ketchd`` (both CLIs on a private ketchd), or
``cross`` (docker on dockerd, ketch on ketchd: the whole replacement, with
creation times, ids, MACs and the subnets each daemon picks from its pools masked).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.integration.engines import Result, _run, mounts_under
from tests.integration.refdockerd import DOCKER, DOCKERD, RefDockerd

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
KETCH = REPO / ".venv" / "bin" / "ketch"
UNSHARE = shutil.which("unshare")
TARGET = os.environ.get("KETCH_NETWORK_TARGET", "dockerd")


class NetnsDockerd(RefDockerd):
    """The reference dockerd with its bridge and iptables, alone in a network namespace.

    ``unshare -n`` execs dockerd, so the process started is dockerd itself and
    ``stop`` (engines.Dockerd's: containers, dockerd, containerd by pid, mounts,
    cgroups, the directory) ends it; the namespace goes with its last process.
    """

    def start(self, timeout: float = 60) -> None:
        assert UNSHARE is not None
        self.base.mkdir(parents=True, exist_ok=False)
        (self.base / "cli").mkdir()
        self.launch([UNSHARE, "-n", "--", *self.daemon_argv()], timeout)


@dataclass
class Daemon:
    """A daemon under test: its socket, the docker CLI's environment for it, its log."""

    host: str
    env: dict[str, str]
    log: Path | None = None


@dataclass
class Clis:
    """The docker CLI talking to ``ref`` and ketch's to ``own`` (one daemon, or two)."""

    ref: Daemon
    own: Daemon

    @property
    def cross(self) -> bool:
        return self.ref is not self.own

    def docker(self, *args: str, input: bytes | None = None) -> Result:
        assert DOCKER is not None
        return _run([DOCKER, *args], self.ref.env, input, 60, self.ref.log)

    def ketch(self, *args: str, input: bytes | None = None) -> Result:
        env = {k: v for k, v in self.own.env.items() if k not in ("KETCH_HOST", "DOCKER_HOST")}
        return _run([str(KETCH), "-H", self.own.host, *args], env, input, 60, self.own.log)

    def ok(self, *args: str) -> None:
        """The docker CLI's command on every daemon, which must take it."""
        assert DOCKER is not None
        for d in (self.ref, self.own) if self.cross else (self.ref,):
            res = _run([DOCKER, *args], d.env, None, 60, d.log)
            assert res.returncode == 0, str(res)

    def quiet(self, *args: str) -> None:
        """Like ``ok`` for clean-up: failures are not the test's business."""
        assert DOCKER is not None
        for d in (self.ref, self.own) if self.cross else (self.ref,):
            _run([DOCKER, *args], d.env, None, 60, d.log)


def _dockerd(prefix: str, busybox_rootfs: Path) -> Iterator[Daemon]:
    name = f"netd-{secrets.token_hex(2)}"
    d = NetnsDockerd(Path(tempfile.gettempdir()) / f"{prefix}-{name}", f"/{prefix}/{name}")
    try:
        d.start()
        d.import_busybox(busybox_rootfs)
        yield Daemon(f"unix://{d.sock}", d.env, d.log)
    finally:
        problems = d.stop()
        if mounts_under(d.base):
            problems.append(f"mounts left: {mounts_under(d.base)}")
        assert not problems, "network dockerd teardown:\n" + "\n".join(problems)


def _ketchd(prefix: str, archive: Path) -> Iterator[Daemon]:
    """A private ketchd (its own bridge name, cgroup parent and state) with busybox."""
    from tests.integration.test_daemon_system import (
        Ketchd,
        _wait_ready,
        stop_supervisor,
        write_private_config,
    )

    d = Path(tempfile.mkdtemp(prefix=f"{prefix}-nk", dir="/tmp"))
    k = Ketchd(d, None)  # type: ignore[arg-type]
    write_private_config(k)
    try:
        with open(d / "ketchd.log", "wb") as log:
            k.proc = subprocess.Popen(k.args(), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        _wait_ready(k, None)
        env = {key: v for key, v in os.environ.items() if not key.startswith("DOCKER_")}
        env.update(DOCKER_HOST=k.host, DOCKER_CONFIG=str(d / "docker-config"))
        daemon = Daemon(k.host, env, d / "ketchd.log")
        assert DOCKER is not None
        res = _run([DOCKER, "load", "-i", str(archive)], env, None, 120, None)
        assert res.returncode == 0, str(res)
        yield daemon
    finally:
        if getattr(k, "proc", None) is not None:
            k.stop()
        stop_supervisor(k)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def clis(prefix: str, busybox_rootfs: Path, request: pytest.FixtureRequest) -> Iterator[Clis]:
    """``KETCH_NETWORK_TARGET``: dockerd (default), ketchd, or cross (docker on dockerd,
    ketch on ketchd)."""
    if DOCKERD is None or DOCKER is None or UNSHARE is None:
        pytest.skip("dockerd, the docker CLI or unshare is not installed")
    ref = own = None
    gens: list[Iterator[Daemon]] = []
    try:
        if TARGET in ("dockerd", "cross"):
            gens.append(_dockerd(prefix, busybox_rootfs))
            ref = next(gens[-1])
        if TARGET in ("ketchd", "cross"):
            gens.append(_ketchd(prefix, request.getfixturevalue("busybox_archive")))
            own = next(gens[-1])
        assert ref or own, f"KETCH_NETWORK_TARGET={TARGET}: dockerd, ketchd or cross"
        yield Clis(ref or own, own or ref)  # type: ignore[arg-type]
    finally:
        for g in reversed(gens):
            g.close()


@pytest.fixture(scope="module")
def world(clis: Clis) -> Iterator[Clis]:
    """Networks and a container both CLIs look at: made with docker, removed at the end."""
    clis.ok("network", "create", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.1",
            "--ip-range", "10.77.0.128/25", "--aux-address", "r=10.77.0.5", "--label", "x=y",
            "-o", "com.docker.network.bridge.name=kt-ref-full", "--internal", "--attachable",
            "ref-full")
    # One label a network: docker joins a network's labels in Go's random map order.
    clis.ok("network", "create", "--label", "x=z", "ref-plain")
    clis.ok("network", "create", "--ipv6", "--subnet", "fd00:77::/64", "--label", "bare",
            "ref-v6")
    clis.ok("run", "-d", "--name", "ref-c", "busybox", "sleep", "3600")
    clis.ok("network", "connect", "--alias", "web", "ref-full", "ref-c")
    try:
        yield clis
    finally:
        clis.quiet("rm", "-f", "ref-c")
        clis.quiet("network", "rm", "ref-full", "ref-plain", "ref-v6")


# --------------------------------------------------------------------------- comparing

_USAGE_WORDS = [(re.compile(p), r) for p, r in (
    (r"^docker: ", "ketch: "), (r"'docker ", "'ketch "), (r"Usage:  docker ", "Usage:  ketch "),
    (r"^  docker (.*), docker ", r"  ketch \1, ketch "))]


def _as_ketch(text: str) -> str:
    """docker's own name in its usage errors, as ketch spells them."""
    out = []
    for line in text.splitlines(keepends=True):
        for pat, rep in _USAGE_WORDS:
            line = pat.sub(rep, line)
        out.append(line)
    return "".join(out)


_ID = re.compile(r"\b[0-9a-f]{64}\b")
_SHORT = re.compile(r"\b[0-9a-f]{12}\b")
_MAC = re.compile(r"\b02:42(:[0-9a-f]{2}){4}\b")
# What two daemons cannot share: creation times (RFC 3339 and Go's time.String), the
# subnets picked from the default pools (172.16/12 and 192.168/16: which one is free
# depends on the host), the default bridge's device name.
_OWN = [(re.compile(p), r) for p, r in (
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "<time>"),
    (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? [+-]\d{4} \S+", "<time>"),
    (r"\b172\.(1[6-9]|2\d|3[01])\.\d+\.\d+", "<pool>"),
    (r"\b192\.168\.\d+\.\d+", "<pool>"),
    (r'("com\.docker\.network\.bridge\.name": )"(docker0|kt[0-9A-Za-z]{8})"',
     r'\1"<default>"'))]


def masked(text: str) -> str:
    text = _MAC.sub("<mac>", _SHORT.sub("<id12>", _ID.sub("<id>", text)))
    for pat, rep in _OWN:
        text = pat.sub(rep, text)
    return text


def same(clis: Clis, args: list[str]) -> None:
    """One command line through both CLIs: the same answer (masked across daemons)."""
    docker, ketch = clis.docker(*args), clis.ketch(*args)
    want = (docker.returncode, _as_ketch(docker.stdout), _as_ketch(docker.stderr))
    got = (ketch.returncode, ketch.stdout, ketch.stderr)
    if clis.cross:
        want = (want[0], masked(want[1]), masked(want[2]))
        got = (got[0], masked(got[1]), masked(got[2]))
    assert got == want, f"docker:\n{docker}\n\nketch:\n{ketch}"


def transcript(results: list[Result], name: str) -> list[tuple[int, str, str]]:
    """The results with the CLI's own names made neutral and ids masked."""

    def clean(text: str) -> str:
        return masked(_as_ketch(text).replace(name, "N"))

    return [(r.returncode, clean(r.stdout), clean(r.stderr)) for r in results]


def both(clis: Clis, steps: Callable[[Callable[..., Result], str], list[Result]]) -> None:
    """``steps`` run with docker on "d-<tag>" names, then with ketch on "k-<tag>" ones."""
    tag = secrets.token_hex(2)
    d = steps(clis.docker, f"d-{tag}")
    k = steps(clis.ketch, f"k-{tag}")
    assert transcript(k, f"k-{tag}") == transcript(d, f"d-{tag}"), (
        "docker:\n" + "\n\n".join(map(str, d)) + "\n\nketch:\n" + "\n\n".join(map(str, k)))


# --------------------------------------------------------------------------- same command

SAME = [
    # ls
    ["network", "ls"],
    ["network", "ls", "--no-trunc"],
    ["network", "ls", "-q"],
    ["network", "list", "-q", "--no-trunc"],
    ["network", "ls", "--format", "json"],
    ["network", "ls", "--format", "{{json .}}"],
    ["network", "ls", "--format", "raw"],
    ["network", "ls", "--format", "raw", "-q"],
    ["network", "ls", "--format",
     "table {{.Name}}\t{{.IPv6}}\t{{.Internal}}\t{{.IPv4}}\t{{.CreatedAt}}"],
    ["network", "ls", "--format", 'table {{.Name}}\t{{.Label "x"}}'],
    ["network", "ls", "-q", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"],
    ["network", "ls", "--format", "table", "-q"],
    ["network", "ls", "-f", "driver=bridge", "-f", "name=ref"],
    ["network", "ls", "-f", "label=x=y"],
    ["network", "ls", "-f", "label=x", "--format", "{{.Name}}"],
    ["network", "ls", "-f", "type=custom", "-q"],
    ["network", "ls", "-f", "type=builtin", "--format", "{{.Name}}"],
    ["network", "ls", "-f", "scope=local", "-f", "name=ref-v6"],
    ["network", "ls", "-f", "type=bad"],
    ["network", "ls", "-f", "bogus=1"],
    ["network", "ls", "-f", "foo"],
    ["network", "ls", "--format", "{{.Foo}}"],
    ["network", "ls", "--format", "{{"],
    # inspect
    ["network", "inspect", "ref-full"],
    ["network", "inspect", "ref-plain", "ref-v6", "bridge", "host", "none"],
    ["network", "inspect", "-v", "ref-plain"],
    ["network", "inspect", "--format", "json", "ref-full"],
    ["network", "inspect", "-f", "{{.Name}} {{json .IPAM}} {{json .Labels}}", "ref-full",
     "nope", "ref-v6"],
    ["network", "inspect", "-f", "{{range $id, $c := .Containers}}{{$c.Name}} "
     "{{$c.IPv4Address}}{{end}}", "ref-full"],
    ["network", "inspect", "-f", "{{json .}}", "host", "ref-full"],
    ["network", "inspect", "-f", "{{.EnableIPv4}} {{len .Containers}}", "ref-full"],
    ["network", "inspect", "nope"],
    ["network", "inspect", "-f", "{{.Foo}}", "ref-plain", "nope"],
    ["network", "inspect", "-f", "{{", "ref-plain"],
    ["network", "inspect", " "],
    # create: refused before or by the daemon
    ["network", "create", "--gateway", "1.2.3.4", "x"],
    ["network", "create", "--subnet", "10.1.0.0/16", "--subnet", "10.1.2.0/24", "x"],
    ["network", "create", "--subnet", "bad", "x"],
    ["network", "create", "--subnet", "10.0.0.0/8,bad", "x"],
    ["network", "create", "--subnet", "10.1.0.0/16", "--ip-range", "bad", "x"],
    ["network", "create", "--subnet", "10.1.0.0/16", "--gateway", "10.2.0.1", "x"],
    ["network", "create", "--subnet", "10.1.0.0/16", "--aux-address", "a=10.2.0.1", "x"],
    ["network", "create", "--subnet", "10.0.0.0/8", "--ip-range", "10.1.0.0/16",
     "--ip-range", "10.2.0.0/16", "--subnet", "11.0.0.0/8", "x"],
    ["network", "create", "--subnet", "10.7.0.0/24,10.8.0.0/24", "x"],
    ["network", "create", "--label", "a b=c", "x"],
    ["network", "create", "--label", "=c", "x"],
    ["network", "create", "--ipv6=maybe", "x"],
    ["network", "create", "--subnet", '10.1.0.0/16,"x', "x"],
    ["network", "create", "--gateway", 'a"b', "x"],
    ["network", "create", "ref-plain"],
    ["network", "create", "--scope", "swarm", "x"],
    ["network", "create", "--ingress", "x"],
    ["network", "create", "-d", "nosuch", "x"],
    ["network", "create"],
    ["network", "create", "a", "b"],
    ["network", "create", "--bogus", "x"],
    # rm, prune, connect, disconnect that fail
    ["network", "rm", "nope"],
    ["network", "rm", "nope", "nope2"],
    ["network", "rm", "-f", "nope"],
    ["network", "rm", "bridge"],
    ["network", "rm", "ref-full"],
    ["network", "rm", " "],
    ["network", "prune", "-f", "--filter", "bogus=1"],
    ["network", "prune", "--filter", "bogus"],
    ["network", "prune", "-f", "--filter", "label=nothing-has-this"],
    ["network", "connect", "ref-full", "ref-c"],
    ["network", "connect", "nope", "ref-c"],
    ["network", "connect", "ref-plain", "nope"],
    ["network", "connect", "--driver-opt", "bad", "ref-plain", "ref-c"],
    ["network", "connect", "--link", "a:b:c", "ref-plain", "ref-c"],
    ["network", "connect", "--gw-priority", "x", "ref-plain", "ref-c"],
    ["network", "connect", "--ip", "10.9.9.9", "ref-plain", "ref-c"],
    ["network", "connect", " ", "ref-c"],
    ["network", "connect", "ref-plain"],
    ["network", "disconnect", "ref-plain", "ref-c"],
    ["network", "disconnect", "nope", "ref-c"],
    ["network", "disconnect", "ref-full", "nope"],
    # help
    ["network", "disconnect", "--help"],
    ["network", "rm", "--help"],
    ["network", "prune", "--help"],
]

# The CLI's shared machinery (ketch.cli.command, formatting) through the network
# commands: argument-count errors as docker/cli's validators word them; the strict
# xfails are its remaining differences, kept so they show, and so a fix shows too.
KNOWN = [
    ["network", "ls", "a"],
    ["network", "inspect"],
    ["network", "remove"],
    pytest.param(["network"], marks=pytest.mark.xfail(
        strict=True, reason="docker prints a group's help on stderr, 2 spaces apart")),
    pytest.param(["network", "create", "--help"], marks=pytest.mark.xfail(
        strict=True, reason="docker wraps long flag help at 80 columns")),
    # ketch.cli.formatting's templates know no Go time.Time nor typed structs.
    pytest.param(["network", "inspect", "-f", "{{.Created}}", "host"], marks=pytest.mark.xfail(
        strict=TARGET != "cross",  # masked there
        reason="docker prints a time.Time as Go's String()")),
    pytest.param(["network", "inspect", "-f", "{{.ConfigFrom}} {{.IPAM}}", "host"],
                 marks=pytest.mark.xfail(strict=True, reason="docker prints structs as "
                                         "{...} and a nil map as map[]")),
    pytest.param(["network", "inspect", "-f", "{{.Containers}}", "ref-full"],
                 marks=pytest.mark.xfail(strict=True, reason="docker prints structs as "
                                         "{...} and a nil map as map[]")),
    pytest.param(["network", "inspect", "-f", "{{.IPAM.Foo}}", "host"],
                 marks=pytest.mark.xfail(strict=True, reason="docker's raw fallback errors "
                                         "on a missing key at any depth")),
]


@pytest.mark.parametrize("args", SAME + KNOWN, ids=lambda a: " ".join(a)[:70])
def test_same_output(world: Clis, args: list[str]) -> None:
    same(world, args)


# --------------------------------------------------------------------------- with state


def test_create_inspect_rm(world: Clis) -> None:
    def steps(cli: Callable[..., Result], n: str) -> list[Result]:
        return [
            cli("network", "create", "--subnet", "10.78.0.0/24", "--gateway", "10.78.0.254",
                "--ip-range", "10.78.0.0/25", "--aux-address", "a=10.78.0.5",
                "--aux-address", "b=10.78.0.6", "--label", "l=1", "--label", "m",
                "-o", "com.docker.network.bridge.enable_icc=false", "--ipam-opt", "i=3",
                "--internal", "--attachable", n),
            cli("network", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Scope}} {{json .IPAM}} "
                "{{.Internal}} {{.Attachable}} {{.EnableIPv6}} {{json .Options}} "
                "{{json .Labels}} {{json .Containers}} {{json .ConfigFrom}}", n),
            # Not {{.Labels}}: docker joins two labels in Go's random map order.
            cli("network", "ls", "-f", f"name={n}", "--format",
                "{{.Name}} {{.Driver}} {{.Internal}} {{.Label \"l\"}} {{.Label \"m\"}}."),
            cli("network", "create", n),
            cli("network", "rm", n),
            cli("network", "ls", "-q", "-f", f"name={n}"),
        ]

    both(world, steps)


def test_create_drivers_and_ipv6(world: Clis) -> None:
    def steps(cli: Callable[..., Result], n: str) -> list[Result]:
        # docker sends the subnets in Go's random map order; dockerd lists the IPv4 ones
        # first whatever it got, so the inspect line is stable against it.
        out = [
            cli("network", "create", "--ipv6", "--subnet", "fd00:78::/64", "--subnet",
                "10.79.0.0/24", "--gateway", "fd00:78::1", n),
            cli("network", "inspect", "-f", "{{.EnableIPv6}} {{json .IPAM.Config}}", n),
            cli("network", "create", "--config-only", "--subnet", "10.80.0.0/24",
                f"{n}-co"),
            cli("network", "create", "-d", "null", f"{n}-null"),
            cli("network", "inspect", "-f", "{{.Driver}} {{.ConfigOnly}} {{json .IPAM}}",
                f"{n}-co", f"{n}-null"),
        ]
        out.append(cli("network", "rm", n, f"{n}-co", f"{n}-null"))
        return out

    both(world, steps)


def test_rm_several_and_force(world: Clis) -> None:
    def steps(cli: Callable[..., Result], n: str) -> list[Result]:
        return [
            cli("network", "create", f"{n}1"),
            cli("network", "create", f"{n}2"),
            cli("network", "rm", "bridge", f"{n}1", "nope", f"{n}2"),
            cli("network", "create", f"{n}3"),
            cli("network", "remove", "-f", "nope", f"{n}3"),
        ]

    both(world, steps)


def test_prune(world: Clis) -> None:
    def steps(cli: Callable[..., Result], n: str) -> list[Result]:
        # Each prune removes one network: dockerd reports several in any order.
        return [
            cli("network", "create", "--label", f"{n}=1", f"{n}-a"),
            cli("network", "create", "--label", f"{n}=3", f"{n}-b"),
            cli("network", "prune", "--filter", f"label={n}", input=b"n\n"),
            cli("network", "ls", "-q", "-f", f"label={n}", "--format", "{{.Name}}"),
            cli("network", "prune", "--filter", f"label={n}=1", input=b"y\n"),
            cli("network", "prune", "-f", "--filter", f"label={n}=3"),
            cli("network", "create", "--label", f"{n}=2", f"{n}-c"),
            cli("network", "prune", "-f", "--filter", f"label!={n}=2",
                "--filter", f"label={n}"),
            cli("network", "prune", "-f", "--filter", f"label={n}=2", "--filter", "until=1h"),
            cli("network", "prune", "-f", "--filter", f"label={n}=2"),
            cli("network", "ls", "-q", "-f", f"label={n}"),
        ]

    both(world, steps)


def test_connect_disconnect(world: Clis) -> None:
    def steps(cli: Callable[..., Result], n: str) -> list[Result]:
        # Below API 1.45 the daemon adds the short container ID to Aliases (DNSNames
        # from 1.45 on): the aliases of 12 characters are left out, so daemons that speak
        # different versions compare.
        settings = ('{{with index .NetworkSettings.Networks "' + n + '"}}{{json .IPAMConfig}} '
                    "{{json .Links}} {{range .Aliases}}{{if ne (len .) 12}}{{.}},{{end}}{{end}} "
                    "{{json .DriverOpts}} {{.IPAddress}} {{.Gateway}} {{.MacAddress}}{{end}}")
        return [
            cli("network", "create", "--subnet", "10.81.0.0/24", n),
            cli("network", "connect", "--alias", "a1", "--alias", "a2,a3", "--ip", "10.81.0.9",
                "--link-local-ip", "169.254.7.7", "--driver-opt", "k=v", n, "ref-c"),
            cli("inspect", "-f", settings, "ref-c"),
            cli("network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{.IPv4Address}}"
                "{{end}}", n),
            cli("network", "connect", n, "ref-c"),
            cli("network", "rm", n),
            cli("network", "disconnect", n, "ref-c"),
            cli("network", "disconnect", n, "ref-c"),
            cli("network", "disconnect", "-f", n, "ref-c"),
            cli("network", "connect", "--link", "ref-c:peer", n, "ref-c"),
            cli("inspect", "-f", settings, "ref-c"),
            cli("network", "disconnect", "--force", n, "ref-c"),
            cli("network", "rm", n),
        ]

    both(world, steps)
