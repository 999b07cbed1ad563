"""``docker build`` side by side: Debian's dockerd 20.10 and ketchd, the same docker CLI (28.x).

The same Dockerfile and context are built on both engines with the legacy
builder (``DOCKER_BUILDKIT=0``: the CLI's ``POST /build``), each engine in a
network namespace of its own with the same imported busybox
(build_support.py). What is compared:

- the image: its files (a container exported: paths, types, modes, owners,
  sizes, link targets, content hashes, whether a context file kept its
  mtime), the config fields a Dockerfile sets, MAINTAINER's author, the
  number of layers and the history rows with ``created_by`` normalised
  (ketch writes BuildKit's forms, ``RUN /bin/sh -c x # buildkit`` and
  ``ENV A=1``, where the legacy builder writes ``/bin/sh -c x`` and
  ``/bin/sh -c #(nop)  ENV A=1``; both are read as the instruction);
- the CLI's output: the JSON stream as the CLI prints it (``Step N/M : ...``,
  `` ---> <id>``, ``Using cache``, RUN's output and its `` ---> Running in``
  and ``Removing intermediate container`` lines, ``Successfully
  built/tagged``) with IDs as ``<id>`` (the built ID is checked against
  ``docker image inspect``), ``-q``'s ID line, error messages and exit codes.
  The legacy builder also runs (and reports) a container for each metadata
  step, an implementation detail of it that is not compared.

Where ketchd differs from dockerd on purpose, the test is a strict xfail
whose reason says why. ``KETCH_BUILDDIFF_SELFCHECK=1`` runs a second dockerd
in ketchd's place: every scenario must pass then.
"""

from __future__ import annotations

import difflib
import json
import re
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.integration.build_support import (  # noqa: F401 - fixtures
    SELFCHECK,
    BuildSide,
    Built,
    build_dockerd,
    build_ketchd,
    build_scratch,
    built,
    tar_gz,
    tree_diff,
    write_context,
)
from tests.integration.engines import Result
from tests.integration.refdockerd import DOCKERD
from tests.integration.test_daemon_system import DOCKER

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None or DOCKERD is None,
                                 reason="needs the docker CLI and dockerd (package docker.io)")]

HEX64 = re.compile(r"\b(sha256:)?[0-9a-f]{64}\b")
HEX12 = re.compile(r"\b[0-9a-f]{12}\b")
# The CLI counts the context it sends with a carriage return per update.
SENDING = re.compile(r"Sending build context to Docker daemon\s+[\d.]+[kMG]?B\r*\n")
# RUN's stderr comes colour-wrapped per chunk the engine read, and where its
# reads end is the kernel's business: the colour codes go, the text stays.
COLOUR = re.compile(r"\x1b\[(91|0)m")
# The legacy builder's warning from the CLI, the same for both engines.
DEPRECATED = re.compile(r"DEPRECATED: The legacy builder is deprecated.*?environment-variable\.\n\n",
                        re.S)


@dataclass
class BuildPair:
    dockerd: BuildSide
    ketchd: BuildSide
    scratch: Path
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))

    @property
    def sides(self) -> tuple[BuildSide, BuildSide]:
        return self.dockerd, self.ketchd

    def both(self, context: Path, *args: str) -> tuple[Result, Result]:
        """``docker build [args] context`` on both engines at once (dockerd's first)."""
        futs = [self.pool.submit(s.build, context, *args) for s in self.sides]
        d, k = (f.result() for f in futs)
        return d, k

    def ok(self, context: Path, *args: str) -> tuple[Result, Result]:
        d, k = self.both(context, *args)
        assert d.returncode == 0, f"dockerd could not build:\n{d}"
        assert k.returncode == 0, f"ketchd could not build:\n{k}"
        return d, k

    def images(self, ref: str) -> tuple[Built, Built]:
        futs = [self.pool.submit(built, s, ref, self.scratch) for s in self.sides]
        d, k = (f.result() for f in futs)
        return d, k

    def same_image(self, ref: str) -> Built:
        """The image ``ref`` on both engines: files, config, author, layers, history."""
        want, got = self.images(ref)
        problems = []
        if got.tree != want.tree:
            problems.append("files (- dockerd, + ketchd):\n" + tree_diff(want.tree, got.tree))
        if got.config != want.config:
            keys = [k for k in want.config if want.config[k] != got.config.get(k)]
            problems.append("config:\n" + "\n".join(
                f"  {k}: dockerd {want.config[k]!r}\n  {' ' * len(k)}  ketchd  {got.config[k]!r}"
                for k in keys))
        if got.author != want.author:
            problems.append(f"author: dockerd {want.author!r} ketchd {got.author!r}")
        if got.layers != want.layers:
            problems.append(f"layers: dockerd {want.layers} ketchd {got.layers}")
        if got.history != want.history:
            problems.append("history (created_by, empty_layer):\n" + text_diff(
                "\n".join(map(str, want.history)), "\n".join(map(str, got.history))))
        assert not problems, f"image {ref} differs:\n" + "\n".join(problems)
        return got

    def same_output(self, d: Result, k: Result) -> None:
        """Exit code, stdout and stderr of one build, once IDs are placeholders."""
        want, got = view(d), view(k)
        if want != got:
            parts = [f"exit code: dockerd {want[0]} ketchd {got[0]}"] if want[0] != got[0] else []
            for label, a, b in (("stdout", want[1], got[1]), ("stderr", want[2], got[2])):
                if a != b:
                    parts.append(f"{label}:\n{text_diff(a, b)}")
            raise AssertionError("\n".join(parts) + f"\n\nketchd log:\n{k.log[-3000:]}")


# Wording that changed in Docker after 20.10, where ketch speaks as current Docker
# (BuildKit's Dockerfile parser, which the legacy builder uses since moby 23):
# dockerd 20.10's text is rewritten into the newer form before comparing.
VERSION_WORDING = [(re.compile(r"dockerfile parse error line (\d+):"),
                    r"dockerfile parse error on line \1:")]
STEP = re.compile(r"^Step \d+/\d+ : (\S+)")
CONTAINER_LINE = re.compile(r"^( ---> Running in \S+|Removing intermediate container \S+)$")


def normalise(text: str) -> str:
    """IDs become <id> (the legacy builder makes an image per step, BuildKit-like
    builders do not, so the IDs between steps are not compared; the final one is,
    against ``docker image inspect``); the context size line goes; RUN's colour
    codes go; the container lines of steps other than RUN go (the legacy builder
    runs a container even to record an ENV, which is its own business)."""
    text = HEX64.sub("<id>", text)
    text = HEX12.sub("<id>", text)
    text = SENDING.sub("", text)
    text = COLOUR.sub("", text)
    text = DEPRECATED.sub("", text)
    for pattern, repl in VERSION_WORDING:
        text = pattern.sub(repl, text)
    out = []
    step = ""
    for line in text.split("\n"):
        m = STEP.match(line)
        if m:
            step = m.group(1).upper()
        elif CONTAINER_LINE.match(line) and step != "RUN":
            continue
        out.append(line)
    return "\n".join(out)


def view(res: Result) -> tuple[int, str, str]:
    return res.returncode, normalise(res.stdout), normalise(res.stderr)


def all_of(*checks: Callable[[], object]) -> None:
    """Every check runs; the test fails with all their messages (one difference
    must not hide the others)."""
    failures = []
    for check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


def text_diff(want: str, got: str) -> str:
    return "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), "dockerd",
                                          "ketchd", lineterm="", n=3))


# --------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pair(build_dockerd: BuildSide, build_ketchd: BuildSide,  # noqa: F811
         build_scratch: Path) -> Iterator[BuildPair]:  # noqa: F811
    p = BuildPair(build_dockerd, build_ketchd, build_scratch)
    yield p
    p.pool.shutdown()


@pytest.fixture
def ctx(pair: BuildPair) -> Path:
    """A fresh directory for this test's build context(s)."""
    d = pair.scratch / f"ctx-{secrets.token_hex(4)}"
    d.mkdir()
    return d


def tag(request: pytest.FixtureRequest) -> str:
    """An image name per test (both engines live through the whole module)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"bd/{name[:100]}"


# --------------------------------------------------------------------- metadata

METADATA = """\
FROM busybox
MAINTAINER Ketch Tester <kt@example.com>
LABEL a=1 "b c"="d e" multi.word="x\\
 y"
ENV E1=one
EXPOSE 80 53/udp 8080/tcp
WORKDIR /srv
USER 1000:1000
VOLUME /data /cache
VOLUME ["/logs"]
HEALTHCHECK --interval=5s --timeout=2s --start-period=1s --retries=4 CMD wget -q localhost || exit 1
STOPSIGNAL SIGKILL
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo built-on
ONBUILD ENV CHILD=1
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hello"]
"""


@pytest.mark.parametrize("dockerfile", [
    pytest.param(METADATA, id="all"),
    # Shell forms go through the SHELL in force; a later CMD replaces the earlier.
    pytest.param("FROM busybox\nSHELL [\"/bin/sh\", \"-xc\"]\nENTRYPOINT exec top -b\n"
                 "CMD one\nCMD two\n", id="shell-forms"),
    pytest.param("FROM busybox\nHEALTHCHECK NONE\nUSER nobody\nEXPOSE 1000-1002\n"
                 "LABEL empty=\"\"\n", id="healthcheck-none"),
    pytest.param("FROM busybox\nCMD [\"sh\"]\nENTRYPOINT [\"env\"]\n", id="entrypoint-resets-cmd"),
])
def test_metadata_instructions(pair: BuildPair, ctx: Path, request: pytest.FixtureRequest,
                               dockerfile: str) -> None:
    write_context(ctx, {"Dockerfile": dockerfile})
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


def test_inspect_empty_strings(pair: BuildPair, ctx: Path,
                               request: pytest.FixtureRequest) -> None:
    """An image config's unset strings: dockerd's API shows "" (Go's zero value), never null."""
    write_context(ctx, {"Dockerfile": "FROM busybox\nLABEL x=y\n"})
    pair.ok(ctx, "-t", tag(request))
    for side in pair.sides:
        # The raw JSON (a --format template reads Go's typed struct, where null is "").
        res = side.cli("image", "inspect", tag(request))
        config = json.loads(res.stdout)[0]["Config"]
        assert (config.get("User"), config.get("WorkingDir")) == ("", ""), side.name


def test_env_forms_and_expansion(pair: BuildPair, ctx: Path,
                                 request: pytest.FixtureRequest) -> None:
    write_context(ctx, {"Dockerfile": """\
FROM busybox
ENV A 1
ENV SPACED hello  world
ENV B=2 C="three four" D=${A}x E=$B-y
ENV F=${UNSET:-def} G=${A:+set} H='$A' I="\\$A" J=${A}${B}
ENV PATH=$PATH:/opt/bin
WORKDIR /w/$A/${B}
LABEL from.env=$C
EXPOSE 80${A}
USER ${B}
RUN echo "$A|$B|$C|$D|$E|$F|$G|$H|$I|$J|$SPACED|$PATH" > /tmp/env.txt
"""})
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


ARGS_DOCKERFILE = """\
ARG BASE=busybox
ARG VERSION=latest
FROM ${BASE}:${VERSION}
ARG BASE
ARG V=default
ARG W
ARG VERSION
ENV FROM_ARG=$V
LABEL base=$BASE version=$VERSION
RUN echo "$V-$W-$BASE-$VERSION" > /arg.txt
"""


@pytest.mark.parametrize("args", [
    pytest.param((), id="defaults"),
    pytest.param(("--build-arg", "V=over", "--build-arg", "W=w"), id="build-args"),
    # An argument no ARG declares: the legacy builder warns; VERSION from the
    # command line reaches the FROM line too.
    pytest.param(("--build-arg", "VERSION=latest", "--build-arg", "UNUSED=1"), id="unused"),
])
def test_arg(pair: BuildPair, ctx: Path, request: pytest.FixtureRequest,
             args: tuple[str, ...]) -> None:
    write_context(ctx, {"Dockerfile": ARGS_DOCKERFILE})
    name = tag(request)
    d, k = pair.ok(ctx, "-t", name, *args)
    all_of(lambda: pair.same_output(d, k), lambda: pair.same_image(name))


# --------------------------------------------------------------------- COPY and ADD

FILES: dict[str, str | bytes] = {
    "a.txt": "alpha\n",
    "b.txt": "bravo\n",
    "run.sh": "#!/bin/sh\necho run\n",
    "d/x": "x\n",
    "d/sub/y": "y\n",
    "d/link": "->x",
    "d/empty/": "",
    "other.dat": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("lines", [
    pytest.param("COPY a.txt /a.txt", id="file"),
    pytest.param("COPY d /dd", id="dir-contents"),
    pytest.param("COPY d/ /dd/", id="dir-slash"),
    pytest.param("COPY *.txt /glob/", id="glob-star"),
    pytest.param("COPY d/* /star/", id="glob-dir-star"),
    pytest.param("COPY a.txt b.txt d run.sh /multi/", id="several-to-dir"),
    pytest.param("COPY a.txt /newname", id="dest-no-slash"),
    pytest.param("COPY a.txt /tmp", id="existing-dir"),
    pytest.param("COPY a.txt relative/\nWORKDIR /w\nCOPY b.txt rel2/", id="relative-dest"),
    pytest.param("COPY --chown=1000:1000 a.txt d /owned/", id="chown-ids"),
    # A user name alone: dockerd 20.10 looks its name up as the group too, BuildKit
    # takes the user's primary group, the reference says "the same numeric UID as
    # the GID"; a user whose group has its name and its uid as gid agrees with all.
    pytest.param("RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd"
                 " && echo 'app:x:1234:' >> /etc/group && echo 'appg:x:4321:' >> /etc/group\n"
                 "COPY --chown=app a.txt /byname/\nCOPY --chown=app:appg d /byname/d/\n"
                 "COPY --chown=www-data:users b.txt /byname/b", id="chown-names"),
    pytest.param("COPY run.sh other.dat /bin/\nCOPY a.txt /etc/passwd", id="over-existing"),
    pytest.param("COPY . /all/", id="whole-context"),
])
def test_copy(pair: BuildPair, ctx: Path, request: pytest.FixtureRequest, lines: str) -> None:
    files = dict(FILES)
    files["Dockerfile"] = f"FROM busybox\n{lines}\n"
    write_context(ctx, files)
    (ctx / "run.sh").chmod(0o755)
    (ctx / "d" / "sub").chmod(0o750)
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


@pytest.mark.parametrize("lines", [
    pytest.param("ADD app.tar.gz /opt/", id="tar-gz-extracted"),
    pytest.param("ADD app.tar.gz /opt/app", id="tar-gz-to-new-dir"),
    pytest.param("ADD a.txt /plain/", id="plain-file"),
    pytest.param("ADD notatar.gz /x/", id="gz-named-not-tar"),
    pytest.param("ADD a.txt app.tar.gz /both/", id="file-and-tar"),
])
def test_add(pair: BuildPair, ctx: Path, request: pytest.FixtureRequest, lines: str) -> None:
    write_context(ctx, {
        "Dockerfile": f"FROM busybox\n{lines}\n",
        "a.txt": "alpha\n",
        "app.tar.gz": tar_gz({"bin/app": b"#!/bin/sh\n", "share/doc/README": b"doc\n"},
                             mode=0o750, uid=1000),
        "notatar.gz": b"\x1f\x8b but not really gzip",
    })
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


def test_dockerignore_and_dockerfile_in_subdir(pair: BuildPair, ctx: Path,
                                               request: pytest.FixtureRequest) -> None:
    write_context(ctx, {
        "build/app.Dockerfile": "FROM busybox\nCOPY . /ctx/\n",
        # The Dockerfile and .dockerignore go to the daemon even when excluded
        # (the CLI sees to it), but "the ADD and COPY instructions do not copy
        # them to the image" (the reference, .dockerignore file).
        ".dockerignore": "**/*.log\n!keep/*.log\nsecret*\n**/tmp\nbuild\n.dockerignore\n",
        "a.txt": "a\n",
        "x.log": "x\n",
        "deep/er/y.log": "y\n",
        "deep/er/z.txt": "z\n",
        "keep/k.log": "k\n",
        "secret.key": "s\n",
        "src/tmp/t": "t\n",
        "src/main.c": "int main;\n",
    })
    name = tag(request)
    pair.ok(ctx, "-f", str(ctx / "build" / "app.Dockerfile"), "-t", name)
    pair.same_image(name)


# --------------------------------------------------------------------- WORKDIR, USER, RUN

def test_workdir_relative_and_created(pair: BuildPair, ctx: Path,
                                      request: pytest.FixtureRequest) -> None:
    write_context(ctx, {"Dockerfile": """\
FROM busybox
WORKDIR /a
WORKDIR b
WORKDIR c/d
RUN pwd > /pwd.txt
WORKDIR /etc
WORKDIR /
"""})
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


def test_user_owns_what_run_writes(pair: BuildPair, ctx: Path,
                                   request: pytest.FixtureRequest) -> None:
    write_context(ctx, {"Dockerfile": """\
FROM busybox
RUN mkdir /o && chmod 1777 /o
USER 1000:1000
RUN touch /o/by-ids && id > /o/id.txt
USER nobody
RUN touch /o/by-name
USER root
"""})
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


@pytest.mark.xfail(not SELFCHECK, strict=True, reason=(
    "deliberate: ketch creates a WORKDIR as BuildKit does, owned by the USER in force "
    "(dockerfile2llb's Mkdir WithUser); the legacy builder creates it as root"))
def test_workdir_made_after_user_is_owned_by_it(pair: BuildPair, ctx: Path,
                                                request: pytest.FixtureRequest) -> None:
    write_context(ctx, {"Dockerfile": "FROM busybox\nUSER nobody\nWORKDIR /made/by/workdir\n"})
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


def test_run_shell_and_exec_forms(pair: BuildPair, ctx: Path,
                                  request: pytest.FixtureRequest) -> None:
    write_context(ctx, {"Dockerfile": """\
FROM busybox
ARG GREETING=hi
RUN echo "$GREETING from shell" > /shell.txt && ln -s shell.txt /link
RUN ["/bin/sh", "-c", "echo exec $GREETING > /exec.txt"]
RUN ["touch", "/touched"]
RUN echo one \\
    two > /continued.txt
SHELL ["/bin/sh", "-xc"]
RUN echo via-shell > /shell2.txt
RUN rm /bin/vi && mkdir -p /var/empty && chmod 0700 /var/empty
"""})
    name = tag(request)
    d, k = pair.ok(ctx, "-t", name)
    all_of(lambda: pair.same_output(d, k), lambda: pair.same_image(name))


# --------------------------------------------------------------------- stages

MULTISTAGE = """\
FROM busybox AS base
RUN echo base > /base.txt

FROM base AS builder
COPY a.txt /src/
RUN cp /src/a.txt /src/built.txt && echo more >> /src/built.txt

FROM busybox
COPY --from=builder /src/built.txt /app/
COPY --from=0 /base.txt /app/base-by-index.txt
COPY --from=builder /src /app/src
CMD ["cat", "/app/built.txt"]
"""


@pytest.mark.parametrize("args", [
    pytest.param((), id="final"),
    pytest.param(("--target", "builder"), id="target-builder"),
    pytest.param(("--target", "base"), id="target-base"),
])
def test_multistage(pair: BuildPair, ctx: Path, request: pytest.FixtureRequest,
                    args: tuple[str, ...]) -> None:
    write_context(ctx, {"Dockerfile": MULTISTAGE, "a.txt": "alpha\n"})
    name = tag(request)
    pair.ok(ctx, "-t", name, *args)
    pair.same_image(name)


def test_onbuild_runs_in_child(pair: BuildPair, ctx: Path,
                               request: pytest.FixtureRequest) -> None:
    parent = f"{tag(request)}-parent"
    write_context(ctx / "p", {"Dockerfile": """\
FROM busybox
ONBUILD COPY a.txt /from-child-context/
ONBUILD RUN echo triggered > /onbuild.txt
ONBUILD ENV TRIGGERED=yes
LABEL role=parent
""", "a.txt": "parent's\n"})
    write_context(ctx / "c", {"Dockerfile": f"FROM {parent}\nRUN cat /onbuild.txt\n",
                              "a.txt": "child's\n"})
    pair.ok(ctx / "p", "-t", parent)
    d, k = pair.ok(ctx / "c", "-t", tag(request))
    all_of(lambda: pair.same_image(tag(request)), lambda: pair.same_output(d, k),
           lambda: pair.same_image(parent))


def test_volume_discards_later_writes(pair: BuildPair, ctx: Path,
                                      request: pytest.FixtureRequest) -> None:
    """Docker's reference: "If any build steps change the data within the volume
    after it has been declared, those changes will be discarded" (legacy builder)."""
    write_context(ctx, {"Dockerfile": """\
FROM busybox
RUN mkdir /vol && echo before > /vol/before.txt
VOLUME /vol
RUN echo after > /vol/after.txt && echo changed > /vol/before.txt && echo outside > /out.txt
"""})
    name = tag(request)
    pair.ok(ctx, "-t", name)
    pair.same_image(name)


# --------------------------------------------------------------------- the stream

STREAM = """\
FROM busybox
ENV GREETING=hello
WORKDIR /app
COPY a.txt .
RUN echo "$GREETING" && cat a.txt > copy.txt
CMD ["cat", "copy.txt"]
"""


def test_stream_steps_and_result(pair: BuildPair, ctx: Path,
                                 request: pytest.FixtureRequest) -> None:
    """Step N/M lines, ' ---> <id>', RUN's output, Successfully built/tagged."""
    write_context(ctx, {"Dockerfile": STREAM, "a.txt": "alpha\n"})
    d, k = pair.ok(ctx, "--no-cache", "-t", tag(request), "-t", f"{tag(request)}:two")
    pair.same_output(d, k)
    for side, res in ((pair.dockerd, d), (pair.ketchd, k)):
        image = side.image_id(tag(request))
        assert image == side.image_id(f"{tag(request)}:two")
        assert f"Successfully built {image.removeprefix('sha256:')[:12]}\n" in res.stdout


def test_quiet_prints_the_id(pair: BuildPair, ctx: Path, request: pytest.FixtureRequest) -> None:
    write_context(ctx, {"Dockerfile": STREAM, "a.txt": "alpha\n"})
    d, k = pair.ok(ctx, "-q", "--no-cache", "-t", tag(request))
    pair.same_output(d, k)
    for side, res in ((pair.dockerd, d), (pair.ketchd, k)):
        assert res.stdout == side.image_id(tag(request)) + "\n"


def test_cache_second_build_uses_cache_for_every_step(pair: BuildPair, ctx: Path,
                                                      request: pytest.FixtureRequest) -> None:
    write_context(ctx, {"Dockerfile": STREAM, "a.txt": "alpha\n"})
    first = pair.ok(ctx, "-t", tag(request))
    second = pair.ok(ctx, "-t", tag(request))
    pair.same_output(*second)
    for res, res1 in zip(second, first, strict=True):
        # Every step but FROM says so, and the result is the image the first build made.
        assert res.stdout.count(" ---> Using cache\n") == 5, res.stdout
        assert res.stdout.split("Successfully built ")[1] == res1.stdout.split(
            "Successfully built ")[1]
    # A changed file misses from its COPY on; the steps before still hit.
    (ctx / "a.txt").write_text("changed\n")
    third = pair.ok(ctx, "-t", tag(request))
    pair.same_output(*third)
    for res in third:
        assert res.stdout.count(" ---> Using cache\n") == 2, res.stdout


# --------------------------------------------------------------------- errors

@pytest.mark.parametrize(("dockerfile", "args"), [
    pytest.param("FROM busybox\nFOO bar\n", (), id="unknown-instruction"),
    pytest.param("FROM busybox\nCOPY missing.txt /x\n", (), id="copy-missing"),
    pytest.param("FROM busybox\nRUN exit 3\n", (), id="run-fails"),
    pytest.param("FROM busybox AS one\nRUN true\n", ("--target", "nope"), id="missing-target"),
    pytest.param("RUN true\n", (), id="no-from"),
])
def test_errors(pair: BuildPair, ctx: Path, request: pytest.FixtureRequest, dockerfile: str,
                args: tuple[str, ...]) -> None:
    """The message, the CLI's exit code (a failing RUN's own code), and no image tagged."""
    write_context(ctx, {"Dockerfile": dockerfile})
    d, k = pair.both(ctx, "-t", tag(request), *args)
    assert d.returncode != 0, str(d)
    pair.same_output(d, k)
    for side in pair.sides:
        assert not side.has_image(tag(request))
