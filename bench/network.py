"""Networking benchmark (issue 6): ketchd against Debian's dockerd 20.10, ratios printed.

    .venv/bin/python bench/network.py [-n 10] [--quick]
                                      [--only run,attach,throughput,connect,dns]
                                      [--profile DIR]

A private ketchd (its default bridge a private ``kb<hex>``, its own nft table)
and a private dockerd in a network namespace of its own (``unshare -n``, with
its default bridge, iptables and docker-proxy, which then touch nothing of the
host's) run side by side (``bench/_daemons.py``), the same busybox image
imported in both. ketch is ketchd, docker is dockerd:

  run         ``run --rm busybox true`` on the default bridge, in turns: the
              ketch CLI on ketchd, the docker CLI on ketchd and on dockerd
              (goal: ketch CLI <= 0.4 x docker CLI on dockerd); and the same
              with ``--network none``, side by side in every round, whose
              difference is what the bridge adds (also from each daemon's
              own events: create to destroy of every container)
  attach      the network setup of one container, in-process:
              ``ketch.network.bridge.BridgeNetwork.attach`` (veth pair, address,
              routes; with and without one published port) and ``detach`` (as
              ketchd calls it: rules now, the veth deleted in the background)
              on a private bridge ``kb<hex>x`` with its own nft table, into a
              throwaway netns (``unshare -n sleep``); then again with 100
              others on the bridge, each in a netns of its own (goal: under
              10 ms)
  throughput  1 GiB sent from the loopback where each daemon publishes (the
              host's for ketchd; dockerd's own netns, entered with nsenter, for
              dockerd, whose docker-proxy serves loopback as users get it) to
              ``-p 127.0.0.1:<port>:80`` of a container whose sink is busybox
              ``nc -ll -p 80 -e sh -c 'exec dd of=/dev/null bs=1M 2>&1'``
              (dd's record counts come back at the end); python ``sendall`` of
              a reused 1 MiB buffer, then a half-close and a wait for the
              sink's end, MB/s (goal: ketch >= docker)
  connect     500 sequential new connections to a published busybox ``httpd``
              (5 rounds of 100 per daemon, alternating, so a burst of other
              work on the machine does not land on one side only): connect,
              ``GET`` of a 3-byte file, the reply read to its end; median and
              p99 (goal: ketch <= docker). connect() alone printed
              beside: docker-proxy accepts before the container is reached, so
              it is not comparable on its own
  dns         10,000 sequential UDP queries (A of another container's name) to
              127.0.0.11:53 from inside a container's netns on a user-defined
              network ``benchnet``, a python client started there with
              ``nsenter --net`` (goal: ketch < 2 s)

The data-path clients are the same stdlib-only python script for both
daemons, started the same way. ``--profile DIR`` runs py-spy
(``.venv/bin/pip install py-spy``) on ketchd during the DNS queries and on
ketchd and its supervisor during extra ``run --rm`` rounds on the bridge.
Everything is removed at the end, also on failure, Ctrl-C or SIGTERM, and the
end checks that no ``kb<hex>`` link or nft table of ours is left.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemons import (  # noqa: E402 - bench/ is not a package
    BIN,
    BRIDGE,
    DOCKER,
    HEX,
    REPO,
    Daemon,
    end_on_signals,
    workspace,
)
from containers import (  # noqa: E402
    DOCKER_D,
    DOCKER_K,
    IMAGE,
    KETCH,
    KETCH_L,
    Client,
    Row,
    daemons,
    fmt_ms,
    import_busybox,
    print_table,
    supervisor_pid,
)

ALL = ("run", "attach", "throughput", "connect", "dns")
PYTHON = sys.executable
# The in-process attach's bridge and table: private names next to ketchd's BRIDGE.
ATTACH_BRIDGE = f"{BRIDGE}x"
ATTACH_TABLE = f"ketch_bench_{HEX}"
ATTACH_POOL = "10.214.0.0/16"
# The user network of the DNS measurement; on ketchd its bridge gets a private name.
USER_NET = "benchnet"
USER_BRIDGE = f"{BRIDGE}n"

# The data-path client: stdlib only, the same for both daemons, started the same
# way (nsenter first where the daemon's loopback or the container's netns is
# elsewhere). Prints one JSON object.
CLIENT = r'''
import json, socket, struct, sys, time

def send(port, mib):
    """mib x 1 MiB to the sink, half-close, read its reply (dd's record counts) to EOF."""
    buf = bytes(1 << 20)
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    for _ in range(mib):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    back = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        back += d
    t = time.perf_counter() - t0
    s.close()
    return {"seconds": t, "reply": back.decode(errors="replace")}

def connect(port, count, warmup):
    """count x (connect, GET, read to EOF, close); ms of connect() and of the whole."""
    req = b"GET /i HTTP/1.0\r\nHost: x\r\n\r\n"
    conn, total, bad = [], [], 0
    for i in range(warmup + count):
        t0 = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        t1 = time.perf_counter()
        s.sendall(req)
        back = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            back += d
        s.close()
        t2 = time.perf_counter()
        if not back.startswith(b"HTTP/1.") or b" 200 " not in back.split(b"\r\n", 1)[0]:
            bad += 1
        if i >= warmup:
            conn.append((t1 - t0) * 1000)
            total.append((t2 - t0) * 1000)
    return {"connect_ms": conn, "total_ms": total, "bad": bad}

def query(qid, name):
    labels = b"".join(bytes([len(x)]) + x for x in name.encode().split(b"."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + \
        struct.pack("!HH", 1, 1)

def answered(reply, qid):
    if len(reply) < 12:
        return False
    rid, flags, _qd, an = struct.unpack("!HHHH", reply[:8])
    return rid == qid and flags & 0x8000 and flags & 0xF == 0 and an >= 1

def dns(name, count):
    """count sequential A queries; a lost or wrong answer is counted, not retried."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    deadline = time.monotonic() + 15       # the container's resolver may still be coming up
    while True:
        try:
            s.sendto(query(1, name), ("127.0.0.11", 53))
            if answered(s.recv(65535), 1):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            return {"error": f"no answer for {name} from 127.0.0.11:53"}
        time.sleep(0.1)
    s.settimeout(2)
    packets = [query(i & 0xFFFF, name) for i in range(count)]
    bad = 0
    t0 = time.perf_counter()
    for i in range(count):
        s.sendto(packets[i], ("127.0.0.11", 53))
        try:
            if not answered(s.recv(65535), i & 0xFFFF):
                bad += 1
        except socket.timeout:
            bad += 1
    return {"seconds": time.perf_counter() - t0, "bad": bad}

mode, args = sys.argv[1], sys.argv[2:]
if mode == "send":
    out = send(int(args[0]), int(args[1]))
elif mode == "connect":
    out = connect(int(args[0]), int(args[1]), int(args[2]))
else:
    out = dns(args[0], int(args[1]))
print(json.dumps(out))
'''


@dataclass
class Result:
    """One data-path row: ketchd's and dockerd's figures side by side."""

    what: str
    ketch: str
    docker: str
    ratio: float | None
    goal: str
    met: bool | None


def free_port() -> int:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def container_pid(dm: Daemon, name: str) -> int:
    return int(dm.cli("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())


def wait_listening(dm: Daemon, name: str, port: int, timeout: float = 20) -> None:
    """Until the container's netns has a TCP socket listening on ``port``: a
    connect to a published port cannot tell (docker-proxy accepts regardless)."""
    pid = container_pid(dm, name)
    want = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for table in ("tcp", "tcp6"):      # busybox listens on a dual-stack socket
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    f = line.split()
                    if f[1].endswith(want) and f[3] == "0A":
                        return
        time.sleep(0.05)
    state = dm.cli("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name,
                   check=False).stdout.strip()
    logs = dm.cli("logs", name, check=False)
    raise RuntimeError(f"{dm.name}: {name} is not listening on {port} ({state}): "
                       f"{(logs.stdout + logs.stderr).strip()[-500:]}")


class Runner:
    """Starts the client script where each daemon's loopback (or a container's netns) is."""

    def __init__(self, base: Path, k: Daemon, d: Daemon) -> None:
        self.script = base / "netclient.py"
        self.script.write_text(CLIENT)
        self.k, self.d = k, d

    def argv(self, dm: Daemon, netns_pid: int | None, *args: str) -> list[str]:
        # -I -S: the client needs nothing beyond the standard library
        cmd = [PYTHON, "-I", "-S", str(self.script), *args]
        if netns_pid is None and dm is self.d:
            netns_pid = self.d.pid            # dockerd publishes in its own netns
        if netns_pid is not None:
            cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", *cmd]
        return cmd

    def run(self, dm: Daemon, *args: str, netns_pid: int | None = None,
            timeout: float = 600) -> dict:
        p = subprocess.run(self.argv(dm, netns_pid, *args), capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{dm.name}: client {' '.join(args)}: exit {p.returncode}: "
                               f"{p.stderr.strip()[-800:]}")
        out: dict = json.loads(p.stdout)
        if "error" in out:
            raise RuntimeError(f"{dm.name}: client {' '.join(args)}: {out['error']}")
        return out


def alternate(n: int, pair: tuple[Daemon, Daemon], fn: Callable[[Daemon], object]) -> None:
    """``n`` rounds of ``fn`` on both daemons, which one goes first alternating."""
    for i in range(n):
        for dm in (pair if i % 2 == 0 else pair[::-1]):
            fn(dm)


def lo_up_in(pid: int) -> None:
    """dockerd's fresh netns has its loopback down; docker-proxy listens there."""
    subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "link", "set", "lo", "up"],
                   check=True, capture_output=True)


# --------------------------------------------------------------------------
# Measurements.


def bench_runs(base: Path, k: Daemon, d: Daemon, n: int
               ) -> tuple[list[Row], dict[str, dict[str, list[float]]]]:
    """The two run rows, and each daemon's own create-to-destroy times of those runs."""
    clients = [Client(KETCH_L, KETCH, k), Client(DOCKER_K, DOCKER, k),
               Client(DOCKER_D, DOCKER, d)]
    argv = {"bridge": ["run", "--rm", IMAGE, "true"],
            "none": ["run", "--rm", "--network", "none", IMAGE, "true"]}
    times: dict[str, dict[str, list[float]]] = {net: {c.label: [] for c in clients}
                                                for net in argv}
    with event_log(base, k) as klog, event_log(base, d) as dlog:
        for c in clients:               # warm-up: first container of each pair
            for args in argv.values():
                c.run(*args)
        # Bridge and none next to each other in every round (their order and the
        # clients' alternating), so the load of the moment weighs on both alike.
        for i in range(n):
            j = i % len(clients)
            for c in clients[j:] + clients[:j]:
                for net in (("bridge", "none") if i % 2 == 0 else ("none", "bridge")):
                    times[net][c.label].append(c.timed(*argv[net]))
    rows = [Row("run --rm default bridge true", times["bridge"], goal=0.4),
            Row("run --rm --network none true", times["none"])]
    return rows, {k.name: daemon_side(klog), d.name: daemon_side(dlog)}


@contextlib.contextmanager
def event_log(base: Path, dm: Daemon) -> Iterator[Path]:
    """``docker events`` of the daemon into a file while the block runs (a replay
    with --since would only have the daemon's last 256 events)."""
    path = base / f"events-{dm.name}.jsonl"
    with open(path, "wb") as f:
        p = subprocess.Popen([DOCKER, "events", "--format", "{{json .}}"], env=dm.env,
                             stdout=f, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)                        # subscribed before the first container
        yield path
        time.sleep(0.5)                        # the last events written
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def daemon_side(log: Path) -> dict[str, list[float]]:
    """Seconds from each container's ``create`` event to its ``destroy`` event, by
    the network it joined: the daemon's own timestamps, no CLI in them."""
    created: dict[str, int] = {}
    destroyed: dict[str, int] = {}
    joined: dict[str, str] = {}
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            actor = e.get("Actor") or {}
            attrs = actor.get("Attributes") or {}
            if e.get("Type") == "container" and e.get("Action") in ("create", "destroy"):
                (created if e["Action"] == "create" else destroyed)[actor["ID"]] = e["timeNano"]
            elif e.get("Type") == "network" and e.get("Action") == "connect":
                joined[attrs.get("container", "")] = attrs.get("name", "")
    out: dict[str, list[float]] = {"bridge": [], "none": []}
    for cid, t in created.items():
        if cid in destroyed:
            out["bridge" if joined.get(cid) == "bridge" else "none"].append(
                (destroyed[cid] - t) / 1e9)
    return out


def print_bridge_cost(runs: list[Row], side: dict[str, dict[str, list[float]]]) -> None:
    """What the default bridge adds to a run --rm: the two rows' bests and medians apart."""
    bridge, none = runs
    print("the default bridge adds to run --rm, ms: best - best (median - median); for the "
          "commands also the median of each round's bridge - none")
    for c in (KETCH_L, DOCKER_K, DOCKER_D):
        b, n = bridge.times[c], none.times[c]
        paired = statistics.median(x - y for x, y in zip(b, n, strict=True))
        print(f"  {c:<34} {(min(b) - min(n)) * 1000:6.1f} "
              f"({(statistics.median(b) - statistics.median(n)) * 1000:6.1f})"
              f"   paired {paired * 1000:6.1f}")
    for name, by in side.items():
        b, n = by["bridge"], by["none"]
        if b and n:
            print(f"  {name + ', create to destroy event':<34} "
                  f"{(min(b) - min(n)) * 1000:6.1f} "
                  f"({(statistics.median(b) - statistics.median(n)) * 1000:6.1f})"
                  f"   [bridge {fmt_ms(b)}, none {fmt_ms(n)}, {len(b)}+{len(n)} runs]")


@dataclass
class AttachTimes:
    attach: list[float]
    attach_port: list[float]
    detach: list[float]        # the caller's part with background=True, as ketchd
    detach_done: list[float]   # until the veth is gone (background work)
    detach_sync: list[float]   # detach(background=False)
    crowd: int = 0             # endpoints already on the bridge for the next two
    crowded_attach: list[float] = field(default_factory=list)
    crowded_detach: list[float] = field(default_factory=list)


class ThrowawayNetns:
    """A netns held by an ``unshare -n sleep`` we started; killed by pid."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
        self.path = f"/proc/{self.proc.pid}/ns/net"
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(OSError):
                if os.readlink(self.path) != mine:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("unshare -n did not make a netns")
            time.sleep(0.005)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def bench_attach(base: Path, rounds: int, crowd: int) -> AttachTimes:
    from ketch.network.bridge import BridgeConfig, BridgeNetwork
    from ketch.network.endpoint import EndpointRequest
    from ketch.network.ipam import AddressPool
    from ketch.network.ports import parse_publish

    cfg = BridgeConfig(name=ATTACH_BRIDGE, table=ATTACH_TABLE,
                       address_pools=(AddressPool(ipaddress.IPv4Network(ATTACH_POOL), 24),))
    state_dir = str(base / "attach-netstate")
    out = AttachTimes([], [], [], [], [])
    ports = tuple(parse_publish(["127.0.0.1::80"]))
    ns = ThrowawayNetns()
    fillers: list[ThrowawayNetns] = []
    net = BridgeNetwork(state_dir, cfg)
    try:
        net.setup()
        pc = time.perf_counter

        def one(with_ports: bool, background: bool) -> None:
            cid = secrets.token_hex(32)
            t0 = pc()
            net.attach(EndpointRequest(cid, ns.path, ports=ports if with_ports else ()))
            t1 = pc()
            net.detach(cid, background=background)
            t2 = pc()
            net.drain()
            t3 = pc()
            (out.attach_port if with_ports else out.attach).append(t1 - t0)
            if background:
                out.detach.append(t2 - t1)
                out.detach_done.append(t3 - t1)
            else:
                out.detach_sync.append(t2 - t1)

        for _ in range(3):                          # warm-up: netlink socket, nft, imports
            one(False, True)
        out.attach.clear()
        out.detach.clear()
        out.detach_done.clear()
        for i in range(rounds):
            one(i % 2 == 1, True)
            one(i % 2 == 0, False)
        # The same with many containers on the bridge: the state of the whole
        # bridge is rewritten at every change, and other work may grow with it.
        # Each filler in a netns of its own, as containers are.
        for _ in range(crowd):
            fillers.append(ThrowawayNetns())
            net.attach(EndpointRequest(secrets.token_hex(32), fillers[-1].path))
        out.crowd = crowd
        for _ in range(rounds // 2 if crowd else 0):
            cid = secrets.token_hex(32)
            t0 = pc()
            net.attach(EndpointRequest(cid, ns.path, ports=ports))
            t1 = pc()
            net.detach(cid, background=True)
            t2 = pc()
            net.drain()
            out.crowded_attach.append(t1 - t0)
            out.crowded_detach.append(t2 - t1)
    finally:
        try:
            BridgeNetwork(state_dir, cfg).teardown()
        finally:
            net.close()
            for holder in [ns, *fillers]:
                holder.kill()
    return out


def bench_throughput(r: Runner, k: Daemon, d: Daemon, mib: int, rounds: int) -> Result:
    port = free_port()
    sink = ["nc", "-ll", "-p", "80", "-e", "sh", "-c", "exec dd of=/dev/null bs=1M 2>&1"]
    for dm in (k, d):
        dm.cli("run", "-d", "--name", "tp-sink", "-p", f"127.0.0.1:{port}:80", IMAGE, *sink)
        wait_listening(dm, "tp-sink", 80)
    mbs: dict[str, list[float]] = {"ketchd": [], "dockerd": []}

    def send(dm: Daemon, size: int) -> float:
        out = r.run(dm, "send", str(port), str(size))
        if "records out" not in out["reply"]:   # the sink saw EOF and ended normally
            raise RuntimeError(f"{dm.name}: the sink did not finish: {out['reply']!r}")
        return size * (1 << 20) / out["seconds"] / 1e6

    alternate(1, (k, d), lambda dm: send(dm, max(1, mib // 8)))   # warm-up
    alternate(rounds, (k, d), lambda dm: mbs[dm.name].append(send(dm, mib)))
    for dm in (k, d):
        dm.cli("rm", "-f", "tp-sink")
    kb, db = max(mbs["ketchd"]), max(mbs["dockerd"])
    return Result(f"published port, {mib} MiB x {rounds}, MB/s",
                  f"{kb:.0f} ({statistics.median(mbs['ketchd']):.0f})",
                  f"{db:.0f} ({statistics.median(mbs['dockerd']):.0f})",
                  kb / db, "ketch >= docker", kb >= db)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def bench_connect(r: Runner, k: Daemon, d: Daemon, count: int, rounds: int) -> list[Result]:
    port = free_port()
    httpd = "mkdir -p /www && echo ok > /www/i && exec httpd -f -p 80 -h /www"
    for dm in (k, d):
        dm.cli("run", "-d", "--name", "http", "-p", f"127.0.0.1:{port}:80", IMAGE,
               "sh", "-c", httpd)
        wait_listening(dm, "http", 80)
    conn: dict[str, list[float]] = {"ketchd": [], "dockerd": []}
    total: dict[str, list[float]] = {"ketchd": [], "dockerd": []}

    def one(dm: Daemon) -> None:
        out = r.run(dm, "connect", str(port), str(count), "20")
        if out["bad"]:
            raise RuntimeError(f"{dm.name}: {out['bad']} of {count + 20} GETs failed")
        conn[dm.name] += out["connect_ms"]
        total[dm.name] += out["total_ms"]

    alternate(rounds, (k, d), one)
    for dm in (k, d):
        dm.cli("rm", "-f", "http")
    rows = []
    for what, data, goal in (("new connection + GET, ms", total, True),
                             ("connect() alone, ms", conn, False)):
        km, dmed = statistics.median(data["ketchd"]), statistics.median(data["dockerd"])
        k99, d99 = pct(data["ketchd"], 99), pct(data["dockerd"], 99)
        verdict = ""
        if goal:
            verdict = "ketch <= docker: median " + ("met" if km <= dmed else "NOT met") + \
                ", p99 " + ("met" if k99 <= d99 else "NOT met")
        rows.append(Result(f"{what}: median (p99), {rounds} x {count}",
                           f"{km:.3f} ({k99:.3f})", f"{dmed:.3f} ({d99:.3f})", km / dmed,
                           verdict, None))
    return rows


def bench_dns(r: Runner, k: Daemon, d: Daemon, count: int, rounds: int,
              profile: Path | None) -> Result:
    secs: dict[str, list[float]] = {"ketchd": [], "dockerd": []}
    try:
        k.cli("network", "create", "-o", f"com.docker.network.bridge.name={USER_BRIDGE}",
              USER_NET)
        d.cli("network", "create", USER_NET)
        pids: dict[str, int] = {}
        for dm in (k, d):
            for name in ("web", "client"):
                dm.cli("run", "-d", "--name", name, "--network", USER_NET, IMAGE,
                       "sleep", "100000")
            pids[dm.name] = container_pid(dm, "client")

        def one(dm: Daemon) -> float:
            out = r.run(dm, "dns", "web", str(count), netns_pid=pids[dm.name])
            if out["bad"]:
                raise RuntimeError(f"{dm.name}: {out['bad']} of {count} DNS queries "
                                   "unanswered or wrong")
            return float(out["seconds"])

        alternate(rounds, (k, d), lambda dm: secs[dm.name].append(one(dm)))
        if profile is not None:                 # an extra round, not counted
            with pyspy(profile, {"ketchd-dns": k.pid}):
                one(k)
    finally:
        for dm in (k, d):
            with contextlib.suppress(Exception):
                dm.cli("rm", "-f", "web", "client", check=False)
                dm.cli("network", "rm", USER_NET, check=False)
    kb, db = min(secs["ketchd"]), min(secs["dockerd"])
    return Result(f"{count} DNS queries (UDP, sequential), s, x {rounds}",
                  f"{kb:.3f} ({statistics.median(secs['ketchd']):.3f})",
                  f"{db:.3f} ({statistics.median(secs['dockerd']):.3f})",
                  kb / db, "ketch < 2 s", kb < 2.0)


@contextlib.contextmanager
def pyspy(out: Path, pids: dict[str, int]) -> Iterator[None]:
    """py-spy record (flame graph and raw stacks) of ``pids`` while the block runs."""
    exe = BIN / "py-spy"
    if not exe.exists():
        print(f"  (no profile: {exe} missing; .venv/bin/pip install py-spy)")
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
            procs.append(subprocess.Popen(
                [str(exe), "record", "-r", "1000", "-f", fmt, "-o", str(out / f"{name}.{ext}"),
                 "--pid", str(pid), "--nonblocking", "--threads"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        print(f"  profiles in {out}")


def profile_bridge_runs(k: Daemon, out: Path, rounds: int) -> None:
    kc = Client(KETCH_L, KETCH, k)
    with pyspy(out, {"ketchd-run": k.pid, "supervisor-run": supervisor_pid(k)}):
        for _ in range(rounds):
            kc.run("run", "--rm", IMAGE, "true")


# --------------------------------------------------------------------------


def ms(ts: list[float]) -> str:
    return f"{min(ts) * 1000:.2f} ({statistics.median(ts) * 1000:.2f})"


def print_attach(a: AttachTimes) -> bool:
    print()
    print("network setup per container, in-process (ketch.network.bridge.BridgeNetwork), "
          "ms: best (median)")
    rows = [("attach (veth, address, routes)", a.attach),
            ("attach with one published port", a.attach_port),
            ("detach(background=True): the caller's part", a.detach),
            ("  ... until the veth is deleted", a.detach_done),
            ("detach(background=False)", a.detach_sync)]
    if a.crowd:
        rows += [(f"attach with a port, {a.crowd} others on the bridge", a.crowded_attach),
                 (f"detach(background=True), {a.crowd} others", a.crowded_detach)]
    for what, ts in rows:
        print(f"| {what:<44} | {ms(ts):>16} | {len(ts)} rounds")
    worst = statistics.median(a.attach_port) + statistics.median(a.detach)
    ok = worst < 0.010
    print(f"goal: setup under 10 ms: {'met' if ok else 'NOT met'} "
          f"(median attach with a port + detach's caller part: {worst * 1000:.2f} ms)")
    if a.crowd:
        crowded = statistics.median(a.crowded_attach) + statistics.median(a.crowded_detach)
        print(f"      with {a.crowd} others on the bridge: "
              f"{'met' if crowded < 0.010 else 'NOT met'} ({crowded * 1000:.2f} ms)")
        ok = ok and crowded < 0.010
    return ok


def print_results(rows: list[Result]) -> None:
    print()
    print("data path: best (median) unless said; ratio = ketchd / dockerd")
    print(f"| {'measurement':<52} | {'ketchd':>17} | {'dockerd':>17} | ratio | goal")
    print(f"| {'-' * 52} | {'-' * 17} | {'-' * 17} | ----- | ----")
    for r in rows:
        goal = r.goal + ("" if r.met is None else (", met" if r.met else ", NOT met"))
        ratio = f"{r.ratio:5.2f}" if r.ratio is not None else "    -"
        print(f"| {r.what:<52} | {r.ketch:>17} | {r.docker:>17} | {ratio} | {goal}")


def leftovers() -> list[str]:
    """Our links and nft tables still on the host (should be none)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [line.split(": ")[1].split("@")[0] for line in links.splitlines()
             if line.count(": ") >= 2]
    found = [name for name in names if name.startswith(BRIDGE)]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [t for t in tables.splitlines() if HEX in t]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10, help="rounds of run --rm (default 10)")
    ap.add_argument("--quick", action="store_true",
                    help="3 run rounds, 256 MiB once, 2 x 50 connections, DNS once")
    ap.add_argument("--only", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    ap.add_argument("--profile", metavar="DIR", type=Path,
                    help="py-spy ketchd during the DNS queries and extra run --rm rounds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/network.py needs root (two daemons, bridges, netns)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    if only - set(ALL):
        ap.error(f"unknown: {','.join(sorted(only - set(ALL)))}")
    n = 3 if args.quick and args.n == 10 else args.n
    attach_rounds, crowd, mib, tp_rounds, conns, conn_rounds, dns_rounds = (
        (20, 20, 256, 1, 50, 2, 1) if args.quick else (100, 100, 1024, 3, 100, 5, 3))
    end_on_signals()
    # As containers.py: the CLI measured as installed (byte-code fresh).
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "src")], check=False)
    runs: list[Row] = []
    side: dict[str, dict[str, list[float]]] = {}
    results: list[Result] = []
    attach: AttachTimes | None = None
    with workspace() as base:
        if "attach" in only:
            print(f"in-process attach/detach on {ATTACH_BRIDGE}, {attach_rounds} rounds ...",
                  flush=True)
            attach = bench_attach(base, attach_rounds, crowd)
        if only - {"attach"}:
            with daemons(base) as (k, d):
                print(f"ketchd pid {k.pid}, dockerd pid {d.pid} (own netns), ketchd bridge "
                      f"{BRIDGE}, in {base}", flush=True)
                lo_up_in(d.pid)
                import_busybox(base, [k, d])
                r = Runner(base, k, d)
                if "run" in only:
                    print("run --rm on the default bridge and with --network none ...",
                          flush=True)
                    runs, side = bench_runs(base, k, d, n)
                if "throughput" in only:
                    print(f"throughput: {mib} MiB x {tp_rounds} to a published port ...",
                          flush=True)
                    results.append(bench_throughput(r, k, d, mib, tp_rounds))
                if "connect" in only:
                    print(f"connections: {conn_rounds} x {conns} to a published httpd ...",
                          flush=True)
                    results += bench_connect(r, k, d, conns, conn_rounds)
                if "dns" in only:
                    print(f"DNS: {dns_rounds} x 10,000 queries on {USER_NET} ...", flush=True)
                    results.append(bench_dns(r, k, d, 10_000, dns_rounds, args.profile))
                if args.profile:
                    print("profiling ketchd and its supervisor during run --rm ...", flush=True)
                    profile_bridge_runs(k, args.profile, max(n, 20))
    if runs:
        print_table(runs, [])
        print_bridge_cost(runs, side)
    if attach is not None:
        print_attach(attach)
    if results:
        print_results(results)
    left = leftovers()
    if left:
        print(f"warning: left on the host: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have run: containers, networks, daemons, bridges are gone.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
