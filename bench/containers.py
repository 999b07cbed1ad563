"""Container benchmark: ketchd against Debian's dockerd 20.10, ratios printed.

    .venv/bin/python bench/containers.py [-n 10] [--quick] [--only run,many,mem,ps,bridge]
                                         [--profile DIR]

A private ketchd and a private dockerd run side by side (``bench/_daemons.py``),
both with the same busybox image (``docker import`` of a busybox-static
rootfs). Each measurement runs, in turns, the ketch CLI against ketchd, the
docker CLI 28.2.2 against ketchd and the docker CLI against dockerd; goals
compare ketch (its CLI on ketchd) with docker (its CLI on dockerd):

  run     ``run --rm --network none busybox true``, best and median of N
          (goal: ketch <= 0.3 x docker)
  many    100 x ``run -d --network none busybox sleep 1000``, one after the
          other, then one ``rm -f`` naming all 100 (goal: the total <= 0.3 x)
  mem     host memory per idle container beyond the container's own processes,
          over 50 ``run -d ... sleep``: ketch's supervisor and ketchd (VmRSS,
          and Pss from smaps_rollup) before and after, and any helper process
          of ketch's; for dockerd its per-container containerd-shim (goal:
          ketch <= 1 MB per container)
  ps      ``ps -a`` with 200 containers (100 running sleep, 100 created),
          start-up included (goal: ketch < 100 ms)
  bridge  ``run --rm busybox true`` on each daemon's default bridge: ketchd's
          is a private ``kb<hex>`` bridge on the host; dockerd's default bridge
          rewrites the host's firewall (FORWARD policy DROP), so this dockerd
          runs in a network namespace of its own (``unshare -n``, with its
          bridge and iptables), where it changes nothing of the host's

The ratio of each row compares best rounds (on a shared machine other work
only adds time), medians printed beside them. ``--profile DIR`` runs py-spy
(``.venv/bin/pip install py-spy``) on ketchd and its supervisor during an
extra series of ``run --rm`` and writes flame graphs and raw stacks there.
Everything is removed at the end, also on failure, Ctrl-C or SIGTERM: every
container, both daemons, ketchd's supervisor, the cgroups, ketchd's bridge,
the directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemons import (  # noqa: E402 - bench/ is not a package
    BIN,
    BRIDGE,
    CGROUP_PARENT,
    DOCKER,
    REPO,
    Daemon,
    cmdline,
    dockerd,
    end_on_signals,
    ketchd,
    workspace,
)

IMAGE = "busybox:latest"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KETCH = str(BIN / "ketch")
ALL = ("run", "many", "mem", "ps", "bridge")


@dataclass
class Client:
    """One CLI talking to one daemon."""

    label: str
    argv0: str
    daemon: Daemon

    def argv(self, *args: str) -> list[str]:
        if self.argv0 == KETCH:
            return [KETCH, "-H", f"unix://{self.daemon.sock}", *args]
        return [DOCKER, *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.argv(*args), env=self.daemon.env, capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{self.label}: {' '.join(args[:6])}: exit {p.returncode}: "
                               f"{(p.stderr or p.stdout).strip()[:500]}")
        return p

    def timed(self, *args: str) -> float:
        start = time.perf_counter()
        self.run(*args)
        return time.perf_counter() - start


@dataclass
class Row:
    what: str
    times: dict[str, list[float]]  # client label -> seconds per round
    goal: float | None = None      # ratio ketch/docker to stay at or under
    goal_abs: float | None = None  # seconds ketch must stay under (best round)


KETCH_L, DOCKER_K, DOCKER_D = "ketch > ketchd", "docker > ketchd", "docker > dockerd"


def in_turns(clients: list[Client], n: int, fn: Callable[[Client], float]) -> dict[str, list[float]]:
    """``n`` rounds of ``fn`` for every client, the order rotated each round."""
    out: dict[str, list[float]] = {c.label: [] for c in clients}
    for i in range(n):
        k = i % len(clients)
        for c in clients[k:] + clients[:k]:
            out[c.label].append(fn(c))
    return out


# --------------------------------------------------------------------------
# Measurements.


def bench_run(clients: list[Client], n: int, network: str) -> Row:
    args = ["run", "--rm", *(["--network", network] if network else []), IMAGE, "true"]
    for c in clients:           # warm-up: first container of each client/daemon pair
        c.run(*args)
    times = in_turns(clients, n, lambda c: c.timed(*args))
    where = f"--network {network}" if network else "default bridge"
    return Row(f"run --rm {where} true", times, goal=0.3)


def bench_many(clients: list[Client], count: int) -> list[Row]:
    runs: dict[str, list[float]] = {}
    rms: dict[str, list[float]] = {}
    for c in clients:
        names = [f"many-{i}" for i in range(count)]
        start = time.perf_counter()
        for name in names:
            c.run("run", "-d", "--network", "none", "--name", name, IMAGE, "sleep", "1000")
        runs[c.label] = [time.perf_counter() - start]
        rms[c.label] = [c.timed("rm", "-f", *names)]
        left = c.daemon.cli("ps", "-aq").stdout.split()
        if left:
            raise RuntimeError(f"{c.label}: containers left after rm -f: {left[:5]}")
    total = {k: [runs[k][0] + rms[k][0]] for k in runs}
    return [Row(f"{count} x run -d sleep (sequential)", runs, goal=0.3),
            Row(f"rm -f of {count} running (one command)", rms, goal=0.3),
            Row(f"{count} x run -d + rm -f, total", total, goal=0.3)]


def _status(pid: int) -> dict[str, int]:
    """VmRSS and Pss of ``pid`` in kB."""
    out = {"rss": 0, "pss": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1])
    return out


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(") ", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p))
    return kids


def _descendants(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _in_cgroup(pid: int, parent: str) -> bool:
    """Is ``pid`` in a cgroup under ``parent`` (a container's) in any hierarchy?"""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return any(line.split(":", 2)[2].startswith(parent + "/") for line in text.splitlines())


def supervisor_pid(k: Daemon) -> int:
    return int((k.dir / "exec" / "supervisor.pid").read_text().split()[0])


def ketch_helpers(k: Daemon) -> list[int]:
    """Processes of ketch's other than ketchd, its supervisor and the containers'."""
    kids = _children_map()
    sup = supervisor_pid(k)
    pids = _descendants(k.pid, kids) + _descendants(sup, kids)
    return [p for p in pids if p != sup and not _in_cgroup(p, CGROUP_PARENT)]


def docker_shims(d: Daemon) -> list[int]:
    exec_root = str(d.dir / "exec")
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and "containerd-shim" in cmdline(int(p)) and exec_root in cmdline(int(p))]


def _sum(pids: list[int]) -> dict[str, int]:
    tot = {"rss": 0, "pss": 0}
    for p in pids:
        for key, v in _status(p).items():
            tot[key] += v
    return tot


@dataclass
class MemRow:
    what: str
    rss_kb: float   # per container
    pss_kb: float


def bench_mem(k: Daemon, d: Daemon, count: int) -> list[MemRow]:
    kc = Client(KETCH_L, KETCH, k)
    dc = Client(DOCKER_D, DOCKER, d)
    rows: list[MemRow] = []

    def settle() -> None:
        time.sleep(1.0)

    settle()
    sup = supervisor_pid(k)
    before = {"sup": _status(sup), "ketchd": _status(k.pid), "helpers": _sum(ketch_helpers(k))}
    names = [f"mem-{i}" for i in range(count)]
    for name in names:
        kc.run("run", "-d", "--network", "none", "--name", name, IMAGE, "sleep", "1000")
    settle()
    helpers = ketch_helpers(k)
    after = {"sup": _status(sup), "ketchd": _status(k.pid), "helpers": _sum(helpers)}
    for key, label in (("sup", "ketch supervisor growth"), ("ketchd", "ketchd growth"),
                       ("helpers", f"ketch helper processes ({len(helpers)} after)")):
        rows.append(MemRow(label, (after[key]["rss"] - before[key]["rss"]) / count,
                           (after[key]["pss"] - before[key]["pss"]) / count))
    rows.append(MemRow("ketch total (supervisor + ketchd + helpers)",
                       sum(r.rss_kb for r in rows), sum(r.pss_kb for r in rows)))
    kc.run("rm", "-f", *names)

    settle()
    dbefore = _status(d.pid)
    for name in names:
        dc.run("run", "-d", "--network", "none", "--name", name, IMAGE, "sleep", "1000")
    settle()
    shims = docker_shims(d)
    if len(shims) < count:
        raise RuntimeError(f"dockerd: {len(shims)} shims for {count} containers")
    s = _sum(shims)
    rows.append(MemRow(f"dockerd: containerd-shim ({len(shims)})", s["rss"] / count,
                       s["pss"] / count))
    dafter = _status(d.pid)
    rows.append(MemRow("dockerd growth", (dafter["rss"] - dbefore["rss"]) / count,
                       (dafter["pss"] - dbefore["pss"]) / count))
    dc.run("rm", "-f", *names)
    return rows


def bench_ps(clients: list[Client], k: Daemon, d: Daemon, count: int, n: int) -> list[Row]:
    half = count // 2
    for dm, cli in ((k, Client(KETCH_L, KETCH, k)), (d, Client(DOCKER_D, DOCKER, d))):
        for i in range(half):
            cli.run("run", "-d", "--network", "none", "--name", f"ps-r{i}", IMAGE,
                    "sleep", "1000")
        for i in range(count - half):
            cli.run("create", "--network", "none", "--name", f"ps-c{i}", IMAGE, "true")
        got = len(dm.cli("ps", "-aq").stdout.split())
        if got != count:
            raise RuntimeError(f"{dm.name} lists {got} containers, expected {count}")
    for c in clients:
        c.run("ps", "-a")
    all_ = in_turns(clients, n, lambda c: c.timed("ps", "-a"))
    running = in_turns(clients, n, lambda c: c.timed("ps"))
    for dm in (k, d):
        dm.remove_containers()
    return [Row(f"ps -a, {count} containers ({half} running)", all_, goal_abs=0.1),
            Row(f"ps, {half} running of {count}", running, goal_abs=0.1)]


def profile_run(k: Daemon, out: Path, rounds: int) -> None:
    """py-spy on ketchd and the supervisor while ``rounds`` x run --rm go."""
    pyspy = BIN / "py-spy"
    if not pyspy.exists():
        print(f"  (no profile: {pyspy} missing; .venv/bin/pip install py-spy)")
        return
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in (("ketchd", k.pid), ("supervisor", supervisor_pid(k))):
        for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
            # --subprocesses: the supervisor's forked container inits run
            # Python (namespaces, mounts, seccomp) until their exec.
            extra = ["--subprocesses"] if name == "supervisor" else []
            procs.append(subprocess.Popen(
                [str(pyspy), "record", "-r", "1000", "-f", fmt, "-o",
                 str(out / f"{name}.{ext}"), "--pid", str(pid), "--nonblocking", *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    kc = Client(KETCH_L, KETCH, k)
    try:
        for _ in range(rounds):
            kc.run("run", "--rm", "--network", "none", IMAGE, "true")
    finally:
        for p in procs:
            p.send_signal(2)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    print(f"  profiles in {out}")


# --------------------------------------------------------------------------


def import_busybox(base: Path, daemons: list[Daemon]) -> None:
    from ketch.image.bootstrap import busybox_rootfs

    rootfs = base / "busybox-rootfs"
    busybox_rootfs(str(rootfs))
    tar = base / "busybox.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(str(rootfs), arcname=".")
    for dm in daemons:
        with open(tar, "rb") as f:
            p = subprocess.run([DOCKER, "import", "--change", f"ENV PATH={IMAGE_PATH}", "-",
                                IMAGE], stdin=f, env=dm.env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{dm.name}: docker import: {p.stderr.strip()}")


def fmt_ms(ts: list[float]) -> str:
    return f"{min(ts) * 1000:.0f} ({statistics.median(ts) * 1000:.0f})"


def print_table(rows: list[Row], mem: list[MemRow]) -> None:
    print()
    print("ms: best of the rounds (median in brackets); "
          "ratio = ketch CLI on ketchd / docker CLI on dockerd, best rounds")
    print(f"| {'measurement':<40} | {KETCH_L:>14} | {DOCKER_K:>15} | {DOCKER_D:>16} "
          "| ratio | goal")
    print(f"| {'-' * 40} | {'-' * 14} | {'-' * 15} | {'-' * 16} | ----- | ----")
    for r in rows:
        k = r.times.get(KETCH_L, [])
        dd = r.times.get(DOCKER_D, [])
        ratio = min(k) / min(dd) if k and dd else None
        goal = ""
        if r.goal is not None and ratio is not None:
            goal = f"<= {r.goal:g}x " + ("met" if ratio <= r.goal else "NOT met")
        elif r.goal_abs is not None and k:
            goal = f"< {r.goal_abs * 1000:.0f} ms " + ("met" if min(k) < r.goal_abs
                                                        else "NOT met")
        cells = [fmt_ms(r.times[c]) if r.times.get(c) else "-"
                 for c in (KETCH_L, DOCKER_K, DOCKER_D)]
        ratio_s = f"{ratio:5.2f}" if ratio is not None else "    -"
        print(f"| {r.what:<40} | {cells[0]:>14} | {cells[1]:>15} | {cells[2]:>16} | "
              f"{ratio_s} | {goal}")
    if mem:
        print()
        print("memory per idle container (kB), beyond the container's own processes")
        print(f"| {'what':<46} | {'RSS kB':>8} | {'Pss kB':>8}")
        print(f"| {'-' * 46} | {'-' * 8} | {'-' * 8}")
        for m in mem:
            print(f"| {m.what:<46} | {m.rss_kb:8.0f} | {m.pss_kb:8.0f}")
        total = next((m for m in mem if m.what.startswith("ketch total")), None)
        if total is not None:
            worst = max(total.rss_kb, total.pss_kb)
            print(f"goal: ketch <= 1024 kB per container: "
                  f"{'met' if worst <= 1024 else 'NOT met'} ({worst:.0f} kB, larger of RSS/Pss)")


@contextlib.contextmanager
def daemons(base: Path) -> Iterator[tuple[Daemon, Daemon]]:
    k = ketchd(base)
    d = dockerd(base, netns=True)
    try:
        k.start()
        d.start()
        yield k, d
    finally:
        for dm in (k, d):
            try:
                dm.stop()
            except BaseException as exc:  # noqa: BLE001 - stop the other one too
                print(f"  warning: stopping {dm.name}: {exc!r}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10, help="rounds of run --rm and ps (default 10)")
    ap.add_argument("--quick", action="store_true",
                    help="3 rounds, 20 containers for many/mem, 40 for ps")
    ap.add_argument("--only", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    ap.add_argument("--profile", metavar="DIR", type=Path,
                    help="py-spy ketchd and its supervisor during extra run --rm rounds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/containers.py needs root (two daemons, containers)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    if only - set(ALL):
        ap.error(f"unknown: {','.join(sorted(only - set(ALL)))}")
    n = 3 if args.quick and args.n == 10 else args.n
    many, mem_n, ps_n = (20, 20, 40) if args.quick else (100, 50, 200)
    end_on_signals()
    # With PYTHONDONTWRITEBYTECODE set (as here) a module edited since the last
    # compile is compiled again at every start of the CLI: compile once, as
    # `make install` does, so the CLI is measured as installed.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=False)
    rows: list[Row] = []
    mem: list[MemRow] = []
    with workspace() as base, daemons(base) as (k, d):
        print(f"ketchd pid {k.pid}, dockerd pid {d.pid} (own netns), ketchd bridge {BRIDGE}, "
              f"in {base}", flush=True)
        import_busybox(base, [k, d])
        clients = [Client(KETCH_L, KETCH, k), Client(DOCKER_K, DOCKER, k),
                   Client(DOCKER_D, DOCKER, d)]
        if "run" in only:
            print("run --rm --network none ...", flush=True)
            rows.append(bench_run(clients, n, "none"))
        if "bridge" in only:
            print("run --rm on the default bridge ...", flush=True)
            rows.append(bench_run(clients, n, ""))
        if "many" in only:
            print(f"{many} x run -d, rm -f ...", flush=True)
            rows += bench_many(clients, many)
        if "mem" in only:
            print(f"memory over {mem_n} containers ...", flush=True)
            mem = bench_mem(k, d, mem_n)
        if "ps" in only:
            print(f"ps with {ps_n} containers ...", flush=True)
            rows += bench_ps(clients, k, d, ps_n, n)
        if args.profile:
            print("profiling ketchd and its supervisor ...", flush=True)
            profile_run(k, args.profile, max(n, 20))
    print_table(rows, mem)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have run: containers, daemons, bridge, cgroups are gone.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
