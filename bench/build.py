"""Build benchmark (issue 8): ketchd's builder against Debian's dockerd 20.10, ratios printed.

    .venv/bin/python bench/build.py [-n 5] [--quick] [--only small,context,stages]

A private ketchd (its default bridge a private ``kb<hex>``, its own cgroup
parent) and a private dockerd in a network namespace of its own (its bridge
and iptables touch nothing of the host's) run side by side
(``bench/_daemons.py``), the same busybox rootfs imported in both. Three
clients, each timed end to end as a user runs it (wall time of the command):

  ketch CLI   ``.venv/bin/ketch -H unix://<ketchd> build``: on a unix socket to a
              daemon on the same machine it lets ketchd read the context
              directory in place (nothing sent); the context rows also time it
              with ``KETCH_BUILD_CONTEXT=tar`` (the tar sent, as docker does)
  docker→k    the docker CLI 28.2.2 on ketchd, ``DOCKER_BUILDKIT=0`` (the legacy
              builder API, ``POST /build``, as on dockerd)
  docker→d    the docker CLI 28.2.2 on dockerd 20.10, ``DOCKER_BUILDKIT=0``

and ratios of the first two to the third, of the medians. The work:

  small    a 5-step Dockerfile on busybox (ENV, WORKDIR, COPY a file, RUN
           echo > file, CMD), cold (``--no-cache``) and fully cached (the same
           build again); goals: cold <= 0.5x, cached <= 0.6x docker
  context  a context of 20,000 files / 500 MB (19,990 files of 256 B-4 KB and
           10 of 45 MB, from a seeded PRNG): ``COPY . /ctx`` cold, and
           ``COPY one-file /x`` cold, which isolates sending, receiving and
           hashing the context (every client sends all of it); goal: >= 2x
           faster than docker. Then the cache's precision: a Dockerfile with
           ``COPY a.txt``, ``RUN``, ``COPY b.txt``, ``RUN`` is built, b.txt
           changed, built again: the steps reported cached must be the two
           before b.txt (dockerd: `` ---> Using cache``; ketch's CLI: ``CACHED``)
  stages   three independent stages of ``RUN sleep 1`` and a final stage
           copying from all three, cold: the wall time against the slowest
           stage (1 s); goal: near it (the legacy builder runs stages one
           after the other)

Rounds alternate which client goes first, so a burst of other work on the
machine does not land on one side only, and every timed build starts after
a ``sync`` (the writeback of the context just written or of the last
round's 500 MB layer would otherwise land on whichever build comes next). Images made by a round are removed
after it (the context rows make 500 MB layers). Everything is removed at the
end, also on failure, Ctrl-C or SIGTERM: both daemons stopped by their pids,
ketchd's supervisor, cgroups and bridge, dockerd's containerd and cgroups,
and the directory with the contexts.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemons import (  # noqa: E402 - bench/ is not a package
    BIN,
    DOCKER,
    REPO,
    Daemon,
    end_on_signals,
    workspace,
)
from containers import daemons, import_busybox  # noqa: E402

KETCH = str(BIN / "ketch")
PYTHON = str(BIN / "python")
SEED = 20261201
ALL = ("small", "context", "stages")
KETCH_L, DOCKER_K, DOCKER_D = "ketch CLI", "docker→k", "docker→d"

SMALL = """\
FROM busybox
ENV APP=bench
WORKDIR /app
COPY hello.txt .
RUN echo built > /app/built.txt
CMD ["cat", "/app/built.txt"]
"""
COPY_ALL = "FROM busybox\nCOPY . /ctx\n"
COPY_ONE = "FROM busybox\nCOPY one-file /x\n"
# The cache's precision: only the steps from the changed file's COPY on may run again.
PRECISION = """\
FROM busybox
COPY a.txt /a.txt
RUN cat /a.txt > /a.copy
COPY b.txt /b.txt
RUN cat /b.txt > /b.copy
"""
STAGES = """\
FROM busybox AS one
RUN sleep 1 && echo one > /one
FROM busybox AS two
RUN sleep 1 && echo two > /two
FROM busybox AS three
RUN sleep 1 && echo three > /three
FROM busybox
COPY --from=one /one /one
COPY --from=two /two /two
COPY --from=three /three /three
"""


# --------------------------------------------------------------------------
# Clients.


@dataclass
class Client:
    label: str
    daemon: Daemon
    ketch_cli: bool
    extra_env: dict[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        if self.ketch_cli:
            return [KETCH, "-H", f"unix://{self.daemon.sock}", "build", "--progress", "plain",
                    *args]
        return [DOCKER, "build", *args]

    @property
    def env(self) -> dict[str, str]:
        env = self.daemon.env
        # The docker CLI without buildx speaks the legacy builder API; say so, so it
        # does not look for BuildKit.
        env["DOCKER_BUILDKIT"] = "0"
        env.update(self.extra_env)
        return env

    def build(self, context: Path, *args: str, dockerfile: str = "") -> tuple[float, str]:
        """One build, timed end to end; (seconds, stdout + stderr). Fails loudly."""
        extra = ["-f", dockerfile] if dockerfile else []
        # Dirty pages of earlier work (the context just written, the last round's
        # 500 MB layer) are written back before the clock starts, not during a build.
        os.sync()
        t = time.perf_counter()
        p = subprocess.run(self.argv(*extra, *args, str(context)), env=self.env,
                           capture_output=True, text=True, timeout=1800)
        took = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"{self.label}: build {' '.join(args)} failed "
                               f"({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}\n"
                               f"daemon log:\n{self.daemon.log()}")
        return took, p.stdout + p.stderr

    def remove(self, *tags: str) -> None:
        """The images a round made (their untagged parents go with them on dockerd)."""
        self.daemon.cli("rmi", "-f", *tags, check=False)

    def cached_steps(self, output: str) -> int:
        """Steps the build reported as served from the cache."""
        if self.ketch_cli:
            return len(re.findall(r"\bCACHED\b", output))
        return output.count(" ---> Using cache")


def clients(k: Daemon, d: Daemon) -> list[Client]:
    return [Client(KETCH_L, k, True), Client(DOCKER_K, k, False), Client(DOCKER_D, d, False)]


def rounds(cs: list[Client], n: int, one: Callable[[Client, int], float]
           ) -> dict[str, list[float]]:
    """``n`` rounds of ``one`` per client; which client goes first rotates."""
    times: dict[str, list[float]] = {c.label: [] for c in cs}
    for i in range(n):
        order = cs[i % len(cs):] + cs[:i % len(cs)]
        for c in order:
            times[c.label].append(one(c, i))
    return times


# --------------------------------------------------------------------------
# Results.


@dataclass
class Row:
    what: str
    times: dict[str, list[float]]
    goal: str = ""
    met: Callable[[float, float], bool] | None = None   # (ketch median, docker median)
    notes: list[str] = field(default_factory=list)


def med(ts: list[float]) -> float:
    return statistics.median(ts)


def print_table(rows: list[Row]) -> None:
    print()
    print("seconds: median of the rounds (best in brackets); "
          "ratio = client on ketchd / docker CLI on dockerd, of the medians")
    print(f"| {'measurement':<34} | {KETCH_L:>13} | {DOCKER_K:>13} | {DOCKER_D:>13} "
          f"| ratio ketch | ratio docker→k | goal")
    print(f"| {'-' * 34} | {'-' * 13} | {'-' * 13} | {'-' * 13} | ----------- | "
          "-------------- | ----")
    for r in rows:
        cells = []
        for label in (KETCH_L, DOCKER_K, DOCKER_D):
            ts = r.times.get(label, [])
            cells.append(f"{med(ts):.2f} ({min(ts):.2f})" if ts else "-")
        ref = r.times.get(DOCKER_D)
        ratios = []
        for label in (KETCH_L, DOCKER_K):
            mine = r.times.get(label)
            ratios.append(f"{med(mine) / med(ref):.2f}" if mine and ref else "-")
        goal = r.goal
        if r.met is not None and r.times.get(KETCH_L) and ref:
            goal += " (met)" if r.met(med(r.times[KETCH_L]), med(ref)) else " (NOT met)"
        print(f"| {r.what:<34} | {cells[0]:>13} | {cells[1]:>13} | {cells[2]:>13} "
              f"| {ratios[0]:>11} | {ratios[1]:>14} | {goal}")
        for note in r.notes:
            print(f"|   {note}")


# --------------------------------------------------------------------------
# Contexts.


def small_context(base: Path) -> Path:
    ctx = base / "small"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SMALL)
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


def big_context(base: Path, small_files: int, big_files: int, big_mb: int) -> Path:
    """``small_files`` files of 256 B-4 KB in 100 directories and ``big_files`` of
    ``big_mb`` MB, from a seeded PRNG (the same bytes every run), plus the
    Dockerfiles, a.txt, b.txt and one-file."""
    rng = random.Random(SEED)
    ctx = base / "big"
    ctx.mkdir()
    pool = rng.randbytes(4 << 20)
    for i in range(small_files):
        d = ctx / "src" / f"d{i % 100:02d}"
        if i < 100:
            d.mkdir(parents=True)
        size = rng.randint(256, 4 << 10)
        off = rng.randint(0, len(pool) - size)
        (d / f"f{i:05d}.dat").write_bytes(pool[off:off + size])
    chunk = rng.randbytes(1 << 20)
    for i in range(big_files):
        with open(ctx / f"big{i}.bin", "wb") as f:
            for j in range(big_mb):
                # A different first 8 bytes per MB: no two files (or MBs) the same.
                f.write(i.to_bytes(4, "big") + j.to_bytes(4, "big") + chunk[8:])
    for name, text in (("Dockerfile", COPY_ALL), ("one.Dockerfile", COPY_ONE),
                       ("precision.Dockerfile", PRECISION), ("a.txt", "a\n"),
                       ("b.txt", "b\n"), ("one-file", "one\n")):
        (ctx / name).write_text(text)
    return ctx


def stages_context(base: Path) -> Path:
    ctx = base / "stages"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(STAGES)
    return ctx


# --------------------------------------------------------------------------
# Measurements.


def bench_small(base: Path, cs: list[Client], n: int) -> list[Row]:
    ctx = small_context(base)

    def cold(c: Client, i: int) -> float:
        took, _ = c.build(ctx, "--no-cache", "-t", f"bsmall-cold:{i}")
        c.remove(f"bsmall-cold:{i}")
        return took

    def cached(c: Client, i: int) -> float:
        took, out = c.build(ctx, "-t", "bsmall:warm")
        if c.cached_steps(out) < 5:
            raise RuntimeError(f"{c.label}: the cached build ran steps again:\n{out}")
        return took

    cold_t = rounds(cs, n, cold)
    for c in cs:                    # fill each engine's cache once
        c.build(ctx, "-t", "bsmall:warm")
    cached_t = rounds(cs, n, cached)
    return [Row("small, cold (--no-cache)", cold_t, "<= 0.5x", lambda k, d: k <= 0.5 * d),
            Row("small, fully cached", cached_t, "<= 0.6x", lambda k, d: k <= 0.6 * d)]


def bench_context(base: Path, cs: list[Client], n: int, files: int, big: int,
                  big_mb: int) -> list[Row]:
    t = time.perf_counter()
    ctx = big_context(base, files - big, big, big_mb)
    total = sum(f.stat().st_size for f in ctx.rglob("*") if f.is_file())
    print(f"  context: {files} files, {total >> 20} MB ({time.perf_counter() - t:.0f} s "
          "to write)", flush=True)

    def copy_all(c: Client, i: int) -> float:
        took, _ = c.build(ctx, "--no-cache", "-t", f"bctx-all:{i}")
        c.remove(f"bctx-all:{i}")
        return took

    def copy_one(c: Client, i: int) -> float:
        took, _ = c.build(ctx, "--no-cache", "-t", f"bctx-one:{i}",
                          dockerfile=str(ctx / "one.Dockerfile"))
        c.remove(f"bctx-one:{i}")
        return took

    one_t = rounds(cs, n, copy_one)
    all_t = rounds(cs, n, copy_all)
    # ketch's CLI lets a daemon on the same machine read the context directory in
    # place; the same CLI made to send the tar as docker does shows the transfer.
    tar = [Client(KETCH_L, cs[0].daemon, True, {"KETCH_BUILD_CONTEXT": "tar"})]
    one_tar = rounds(tar, n, copy_one)
    all_tar = rounds(tar, n, copy_all)
    rows = [Row(f"COPY one-file, {files} files ctx", one_t, ">= 2x faster",
                lambda k, d: k <= 0.5 * d),
            Row("  ketch CLI sending the tar", {**one_tar, DOCKER_D: one_t[DOCKER_D]},
                ">= 2x faster", lambda k, d: k <= 0.5 * d),
            Row(f"COPY . ({total >> 20} MB), cold", all_t, ">= 2x faster",
                lambda k, d: k <= 0.5 * d),
            Row("  ketch CLI sending the tar", {**all_tar, DOCKER_D: all_t[DOCKER_D]},
                ">= 2x faster", lambda k, d: k <= 0.5 * d)]

    # The cache's precision, and the time of a rebuild after one changed file: each
    # round writes b.txt anew, so every build sees it changed and a.txt not.
    precision = str(ctx / "precision.Dockerfile")
    (ctx / "b.txt").write_text("b\n")
    for c in cs:
        c.build(ctx, "-t", "bctx-precision", dockerfile=precision)
    cached_counts: dict[str, list[int]] = {c.label: [] for c in cs}

    def changed_b(c: Client, i: int) -> float:
        (ctx / "b.txt").write_text(f"b changed for {c.label} in round {i}\n")
        took, out = c.build(ctx, "-t", "bctx-precision", dockerfile=precision)
        cached_counts[c.label].append(c.cached_steps(out))
        return took

    rebuild = rounds(cs, n, changed_b)
    for c in cs:
        c.remove("bctx-precision")
    notes = [f"{label}: steps cached after b.txt changed, per round: {counts} "
             f"({'right' if set(counts) == {2} else 'WRONG: want 2'})"
             for label, counts in cached_counts.items()]
    rows.append(Row("rebuild after b.txt changed", rebuild, "2 of 4 cached", None, notes))
    return rows


def bench_stages(base: Path, cs: list[Client], n: int) -> list[Row]:
    ctx = stages_context(base)

    def cold(c: Client, i: int) -> float:
        took, _ = c.build(ctx, "--no-cache", "-t", f"bstages:{i}")
        c.remove(f"bstages:{i}")
        return took

    times = rounds(cs, n, cold)
    row = Row("3 stages of sleep 1, cold", times, "near 1 s (slowest stage)")
    row.notes.append("ratio to the slowest stage (1 s): " + ", ".join(
        f"{label} {med(ts):.2f}x" for label, ts in times.items()))
    return [row]


def progress(rows: list[Row]) -> None:
    """Each row's medians as soon as it is measured (the table comes at the end)."""
    for r in rows:
        print(f"  {r.what}: " + ", ".join(f"{label} {med(ts):.2f} s"
                                         for label, ts in r.times.items()), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5, help="rounds of the small and stages builds")
    ap.add_argument("--context-rounds", type=int, default=3,
                    help="rounds of the 500 MB context builds (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="3 small rounds, one context round over 2,000 files / 50 MB")
    ap.add_argument("--only", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if only - set(ALL):
        ap.error(f"unknown: {','.join(sorted(only - set(ALL)))}")
    if os.geteuid() != 0:
        print("bench/build.py needs root (two daemons, containers)", file=sys.stderr)
        return 2
    n = 3 if args.quick and args.n == 5 else args.n
    ctx_rounds = 1 if args.quick else args.context_rounds
    files, big, big_mb = (2_000, 10, 5) if args.quick else (20_000, 10, 45)
    end_on_signals()
    # As containers.py: the CLI measured as installed (byte-code fresh).
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "src")], check=False)
    rows: list[Row] = []
    with workspace() as base, daemons(base) as (k, d):
        print(f"ketchd pid {k.pid}, dockerd pid {d.pid} (own netns), in {base}", flush=True)
        import_busybox(base, [k, d])
        cs = clients(k, d)
        if "small" in only:
            print(f"small: {n} rounds cold and cached ...", flush=True)
            rows += (new := bench_small(base, cs, n))
            progress(new)
        if "stages" in only:
            print(f"stages: {n} rounds ...", flush=True)
            rows += (new := bench_stages(base, cs, n))
            progress(new)
        if "context" in only:
            print(f"context: {ctx_rounds} rounds ...", flush=True)
            rows += (new := bench_context(base, cs, ctx_rounds, files, big, big_mb))
            progress(new)
    print_table(rows)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have run: daemons, cgroups, bridge and files are gone.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
