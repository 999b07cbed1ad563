"""Compose benchmark (issue 9): ``ketch compose`` against Debian's docker-compose, ratios printed.

    .venv/bin/python bench/compose.py [-n 5] [--quick] [--only up,unchanged,config]

A private ketchd (its default bridge a private ``kb<hex>``, its own cgroup
parent) and a private dockerd in a network namespace of its own (its bridges
and iptables touch nothing of the host's) run side by side
(``bench/_daemons.py``), the same busybox rootfs imported in both. Docker
Compose v2 (the Go one) is not installed here; the reference is Debian's
docker-compose 1.29.2 (Python, v1). Three columns, each timed end to end as a
user runs it (wall time of the command):

  ketch→k   ``ketch -H unix://<ketchd> compose -f FILE -p NAME ...``
  v1→k      docker-compose 1.29 on ketchd
  v1→d      docker-compose 1.29 on dockerd 20.10 (the reference of the ratios)

The work:

  up         ``up -d`` of 10 busybox services (``sleep`` behind a shell that
             ends on SIGTERM), three of them a dependency chain of healthchecks
             (h1 <- h2 <- h3, ``condition: service_healthy``, interval 1s), three
             more waiting for h3 to be healthy, four with no dependency; from
             nothing each round (the project is taken down, untimed, between
             rounds); goal: at most docker-compose's time on dockerd
  unchanged  ``up -d`` of that project again, nothing changed (nothing to
             recreate); goal: < 0.3 s
  config     ``config`` of a generated 100-service file (ports, environment,
             volumes, depends_on, healthchecks, labels, an anchor and merge key);
             goal: < 0.3 s. No daemon is involved.

Rounds rotate which client goes first, so a burst of other work on the
machine does not land on one side only. When ``ketch compose`` is not in this
checkout (``ketch compose version`` fails), its column is left out with a
message and the docker-compose columns are measured all the same.
Everything is removed at the end, also on failure, Ctrl-C or SIGTERM: the
projects taken down, both daemons stopped by their pids, ketchd's supervisor,
cgroups and bridge, dockerd's containerd and cgroups, and the directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    REPO,
    Daemon,
    end_on_signals,
    workspace,
)
from containers import daemons, import_busybox  # noqa: E402

KETCH = str(BIN / "ketch")
PYTHON = str(BIN / "python")
V1 = shutil.which("docker-compose") or "/usr/bin/docker-compose"
ALL = ("up", "unchanged", "config")
KETCH_K, V1_K, V1_D = "ketch→k", "v1→k", "v1→d"
LABELS = (KETCH_K, V1_K, V1_D)
# A service that stops at once on SIGTERM (a shell as pid 1 ignores it otherwise),
# so taking a project down between rounds does not wait out the stop timeout.
SLEEPER = "[\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]"
HEALTH = """\
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      timeout: 2s
      retries: 30
"""


def up_project() -> str:
    """10 services: the chain h1 <- h2 <- h3 of healthchecks, w1-w3 after h3, w4-w7 free."""
    out = ["services:"]
    for i in (1, 2, 3):
        out.append(f"  h{i}:\n    image: busybox\n    command: {SLEEPER}\n{HEALTH.rstrip()}")
        if i > 1:
            out.append(f"    depends_on:\n      h{i - 1}:\n        condition: service_healthy")
    for i in range(1, 8):
        out.append(f"  w{i}:\n    image: busybox\n    command: {SLEEPER}")
        if i <= 3:
            out.append("    depends_on:\n      h3:\n        condition: service_healthy")
    return "\n".join(out) + "\n"


def config_project(n: int = 100) -> str:
    """``n`` services with the keys people use, in the compose-spec format both read."""
    out = ["x-common: &common",
           "  image: busybox",
           "  restart: unless-stopped",
           "  labels:",
           "    bench.kind: generated",
           "services:"]
    for i in range(n):
        out += [f"  s{i:03d}:",
                "    <<: *common",
                f"    command: [\"sh\", \"-c\", \"echo s{i:03d}; sleep 3600\"]",
                "    environment:",
                f"      INDEX: \"{i}\"",
                "      MODE: ${BENCH_MODE:-test}",
                "    ports:",
                f"      - \"127.0.0.1:{20000 + i}:80\"",
                "    volumes:",
                f"      - data{i % 10}:/data",
                "      - ./conf:/conf:ro",
                "    healthcheck:",
                "      test: [\"CMD\", \"true\"]",
                "      interval: 5s"]
        if i:
            out += ["    depends_on:", f"      s{i - 1:03d}:",
                    "        condition: service_started"]
    out.append("volumes:")
    out += [f"  data{j}: {{}}" for j in range(10)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Clients.


@dataclass
class Client:
    label: str
    daemon: Daemon
    ketch: bool

    def argv(self, file: Path, project: str, *args: str) -> list[str]:
        if self.ketch:
            return [KETCH, "-H", f"unix://{self.daemon.sock}", "compose", "-f", str(file),
                    "-p", project, *args]
        return [V1, "-f", str(file), "-p", project, *args]

    def run(self, file: Path, project: str, *args: str, check: bool = True,
            timeout: float = 600) -> tuple[float, str]:
        """One command, timed end to end; (seconds, stdout + stderr). Fails loudly."""
        t = time.perf_counter()
        p = subprocess.run(self.argv(file, project, *args), env=self.daemon.env,
                           capture_output=True, text=True, timeout=timeout,
                           cwd=file.parent)
        took = time.perf_counter() - t
        if check and p.returncode != 0:
            raise RuntimeError(f"{self.label}: compose {' '.join(args)} failed "
                               f"({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}\n"
                               f"daemon log:\n{self.daemon.log()}")
        return took, p.stdout + p.stderr

    def project(self) -> str:
        # Distinct per client: two clients share ketchd.
        return {KETCH_K: "bkc", V1_K: "bv1", V1_D: "bv1"}[self.label]


def ketch_compose_available(k: Daemon) -> bool:
    p = subprocess.run([KETCH, "-H", f"unix://{k.sock}", "compose", "version"],
                       env=k.env, capture_output=True, text=True, timeout=60)
    return p.returncode == 0


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
    met: Callable[[float, float | None], bool] | None = None  # (ketch median, v1→d median)
    notes: list[str] = field(default_factory=list)


def med(ts: list[float]) -> float:
    return statistics.median(ts)


def print_table(rows: list[Row]) -> None:
    print()
    print("seconds: median of the rounds (best in brackets); "
          f"ratio = client / {V1_D} (docker-compose 1.29 on dockerd 20.10), of the medians")
    print(f"| {'measurement':<38} | {KETCH_K:>13} | {V1_K:>13} | {V1_D:>13} "
          f"| ratio {KETCH_K} | ratio {V1_K} | goal")
    print(f"| {'-' * 38} | {'-' * 13} | {'-' * 13} | {'-' * 13} | ------------- "
          "| ---------- | ----")
    for r in rows:
        cells = []
        for label in LABELS:
            ts = r.times.get(label, [])
            cells.append(f"{med(ts):.2f} ({min(ts):.2f})" if ts else "-")
        ref = r.times.get(V1_D)
        ratios = []
        for label in (KETCH_K, V1_K):
            mine = r.times.get(label)
            ratios.append(f"{med(mine) / med(ref):.2f}" if mine and ref else "-")
        goal = r.goal
        if r.met is not None and r.times.get(KETCH_K):
            ok = r.met(med(r.times[KETCH_K]), med(ref) if ref else None)
            goal += " (met)" if ok else " (NOT met)"
        print(f"| {r.what:<38} | {cells[0]:>13} | {cells[1]:>13} | {cells[2]:>13} "
              f"| {ratios[0]:>13} | {ratios[1]:>10} | {goal}")
        for note in r.notes:
            print(f"|   {note}")


def progress(rows: list[Row]) -> None:
    for r in rows:
        print(f"  {r.what}: " + ", ".join(f"{label} {med(ts):.2f} s"
                                         for label, ts in r.times.items()), flush=True)


# --------------------------------------------------------------------------
# Measurements.


def running(c: Client, project: str) -> int:
    """The project's running containers, counted through the engine (not compose)."""
    p = c.daemon.cli("ps", "-q", "--filter", f"label=com.docker.compose.project={project}")
    return len(p.stdout.split())


def write_up_project(base: Path) -> Path:
    d = base / "up"
    d.mkdir()
    file = d / "compose.yaml"
    file.write_text(up_project())
    return file


def bench_up(file: Path, cs: list[Client], n: int) -> list[Row]:
    def up(c: Client, i: int) -> float:
        took, _ = c.run(file, c.project(), "up", "-d")
        if (got := running(c, c.project())) != 10:
            raise RuntimeError(f"{c.label}: {got} containers running after up -d, want 10")
        c.run(file, c.project(), "down", "-v", "-t", "1")
        return took

    times = rounds(cs, n, up)
    row = Row("up -d, 10 services, 3 chained healthy", times, "<= v1→d",
              lambda k, d: d is not None and k <= d)
    row.notes.append("the chain alone needs 3 health intervals of 1 s: about 3 s is the floor")
    return [row]


def bench_unchanged(file: Path, cs: list[Client], n: int) -> list[Row]:
    for c in cs:
        c.run(file, c.project(), "up", "-d")
    ids = {c.label: c.daemon.cli("ps", "-q", "--no-trunc", "--filter",
                                 f"label=com.docker.compose.project={c.project()}").stdout.split()
           for c in cs}

    def again(c: Client, i: int) -> float:
        took, _ = c.run(file, c.project(), "up", "-d")
        return took

    times = rounds(cs, n, again)
    notes = []
    for c in cs:
        now = c.daemon.cli("ps", "-q", "--no-trunc", "--filter",
                           f"label=com.docker.compose.project={c.project()}").stdout.split()
        same = sorted(now) == sorted(ids[c.label])
        notes.append(f"{c.label}: containers {'kept (nothing recreated)' if same else 'RECREATED'}")
        c.run(file, c.project(), "down", "-v", "-t", "1")
    return [Row("up -d again, nothing changed", times, "< 0.3 s",
                lambda k, d: k < 0.3, notes)]


def bench_config(base: Path, cs: list[Client], n: int) -> list[Row]:
    d = base / "config"
    (d / "conf").mkdir(parents=True)
    file = d / "compose.yaml"
    file.write_text(config_project())
    # One client per program: config does not talk to a daemon.
    programs = [c for c in cs if c.label in (KETCH_K, V1_D)]
    lines: dict[str, int] = {}

    def config(c: Client, i: int) -> float:
        took, out = c.run(file, "bconfig", "config")
        lines[c.label] = out.count("\n")
        return took

    times = rounds(programs, n, config)
    notes = [f"{label}: {count} lines of output" for label, count in lines.items()]
    return [Row("config, 100 services", times, "< 0.3 s", lambda k, d: k < 0.3, notes)]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5, help="rounds of each measurement (default 5)")
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    ap.add_argument("--only", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if only - set(ALL):
        ap.error(f"unknown: {','.join(sorted(only - set(ALL)))}")
    if os.geteuid() != 0:
        print("bench/compose.py needs root (two daemons, containers)", file=sys.stderr)
        return 2
    if not os.path.exists(V1):
        print("docker-compose (Debian's package docker-compose) is not installed",
              file=sys.stderr)
        return 2
    n = 3 if args.quick and args.n == 5 else args.n
    end_on_signals()
    # As the other benchmarks: the CLI measured as installed (byte-code fresh).
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "src")], check=False)
    rows: list[Row] = []
    with workspace() as base, daemons(base) as (k, d):
        print(f"ketchd pid {k.pid}, dockerd pid {d.pid} (own netns), in {base}", flush=True)
        import_busybox(base, [k, d])
        cs = [Client(V1_K, k, False), Client(V1_D, d, False)]
        if ketch_compose_available(k):
            cs.insert(0, Client(KETCH_K, k, True))
        else:
            print(f"`ketch compose` is not in this checkout (`ketch compose version` failed): "
                  f"the {KETCH_K} column is left out", flush=True)
        try:
            file = write_up_project(base)
            if "up" in only:
                print(f"up: {n} rounds ...", flush=True)
                rows += (new := bench_up(file, cs, n))
                progress(new)
            if "unchanged" in only:
                print(f"unchanged: {n} rounds ...", flush=True)
                rows += (new := bench_unchanged(file, cs, n))
                progress(new)
            if "config" in only:
                print(f"config: {n} rounds ...", flush=True)
                rows += (new := bench_config(base, cs, n))
                progress(new)
        finally:
            # A failed round leaves its project up: take every one down (the daemons'
            # stop removes containers too; this also removes networks and volumes).
            for c in cs:
                c.run(file, c.project(), "down", "-v", "-t", "1", check=False)
    print_table(rows)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have run: projects, daemons, cgroups, bridge and files are gone.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
