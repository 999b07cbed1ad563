"""Registry benchmark: ketch's registry server and ketchd's pull against Debian's Go tools.

    .venv/bin/python bench/registry.py [--size-mb 500] [--layers 10] [--runs 3]
                                       [--skip-docker] [--only serve,pull] [--profile DIR]
                                       [--no-sendfile]

Two parts, each timed on ketch and on the reference in turns in the same run,
so the ratios (ketch / reference, of the medians) are what the issue's goals
are stated in:

  serve   ``ketch registry serve`` against Debian's ``docker-registry``
          (distribution 2.8), both on 127.0.0.1 and a free port, each round on
          empty storage, through the same client, skopeo 1.9:
          push   ``skopeo copy --preserve-digests oci:SRC docker://...`` of a
                 SIZE MB image in LAYERS layers of incompressible data, the
                 layers uncompressed tars (so the registry is measured, not
                 gzip: ``--preserve-digests`` keeps skopeo from compressing them
                 on the way, as it otherwise does for a docker:// destination)
          pull   ``skopeo copy docker://... dir:OUT`` of it (goal for both:
                 ketch <= 1.0 x docker-registry)
          blob   ``curl -o /dev/null`` of one layer blob, 3 times a round; MB/s
                 (goal: ketch >= 500 MB/s)
          beside the times, the CPU time of the server and of skopeo in each
          push and pull (``--no-sendfile`` runs ketch's server with aiohttp's
          AIOHTTP_NOSENDFILE=1: sendfile moves the copy out of cold page cache
          onto the client, which is the bottleneck of a skopeo pull)
  pull    ``docker pull`` through the docker CLI into an empty private ketchd
          and an empty private dockerd 20.10 (``--bridge none
          --iptables=false``), from one docker-registry loaded with a second
          image of the same size and layer count, gzip-compressed (level 6) as
          real pulls are: each layer ~50 files of random base64 text (gzip
          keeps ~76%). Between rounds the image is removed and pruned on both
          daemons (goal: ketch <= 0.8 x dockerd). dockerd must not touch the
          host's network, so the registry and both daemons run in a network
          namespace of their own (``ip netns add``; entered with ``nsenter
          --net``, which keeps the host's mount namespace) and reach the
          registry on its 127.0.0.1.

The test data comes from a seeded PRNG (the same bytes every run). The
registries' storage, the images and skopeo's pull output live on a private
tmpfs (what is compared is the two programs, not this machine's shared disk);
the daemons' roots are on the disk under /tmp, as a real daemon's are.
``--profile DIR`` adds one unmeasured round with py-spy sampling the ketch
side (the server during a push, a pull and the blob downloads; ketchd during a
pull) and prints where its samples fall. Everything is removed at the end,
also on failure, Ctrl-C or SIGTERM: servers, daemons (and ketchd's supervisor)
stopped by their pids, ``ketch system reset`` of ketchd's directories, the
tmpfs unmounted, the network namespace deleted, the directory removed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemons import (  # noqa: E402 - bench/ is not a package
    BIN,
    CGROUP_PARENT,
    HEX,
    TAG,
    Daemon,
    dockerd,
    end_on_signals,
    ketchd,
    workspace,
)

SEED = 20261201
MTIME = 1_700_000_000
GO_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
PY_SPY = BIN / "py-spy"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
NETNS = f"ktbench-{HEX}"

# --------------------------------------------------------------------------
# Test data: OCI image layouts written with tarfile and json.


@dataclass
class Image:
    """An OCI layout with one image, tagged ``1``."""

    dir: Path
    manifest_digest: str
    layers: list[tuple[str, int]]  # (digest, size) of each layer blob
    uncompressed: int  # bytes of the layers' tars

    @property
    def ref(self) -> str:
        return f"oci:{self.dir}:1"

    @property
    def blob_bytes(self) -> int:
        return sum(size for _, size in self.layers)


def _tar(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({n.rsplit("/", 1)[0] for n, _ in files})
        for d in dirs:
            ti = tarfile.TarInfo(d + "/")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tf.addfile(ti)
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, MTIME
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _put_blob(layout: Path, data: bytes) -> tuple[str, int]:
    hexd = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hexd).write_bytes(data)
    return "sha256:" + hexd, len(data)


def write_layout(layout: Path, layers: list[tuple[bytes, bytes]], media_type: str,
                 comment: str) -> Image:
    """``layers``: (tar, blob) pairs, the blob being the tar itself or its gzip."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descs = []
    diff_ids = []
    for tar, blob in layers:
        digest, size = _put_blob(layout, blob)
        descs.append({"mediaType": media_type, "digest": digest, "size": size})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"{comment} layer {i}"}
                    for i in range(len(layers))],
    }, sort_keys=True).encode()
    cdigest, csize = _put_blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cdigest, "size": csize},
        "layers": descs,
    }, sort_keys=True).encode()
    mdigest, msize = _put_blob(layout, manifest)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": mdigest, "size": msize,
                       "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    }))
    return Image(layout, mdigest, [(d["digest"], d["size"]) for d in descs],
                 sum(len(t) for t, _ in layers))


def plain_image(layout: Path, size_mb: int, n_layers: int, rng: random.Random) -> Image:
    """Incompressible layers, uncompressed: one random file per layer tar."""
    per = (size_mb << 20) // n_layers
    layers = []
    for i in range(n_layers):
        tar = _tar([(f"bench/plain{i}/data.bin", rng.randbytes(per))])
        layers.append((tar, tar))
    return write_layout(layout, layers, OCI_LAYER, "plain")


def gzip_image(layout: Path, size_mb: int, n_layers: int, rng: random.Random) -> Image:
    """Semi-compressible layers, gzip level 6: ~50 files of random base64 text per layer."""
    per = (size_mb << 20) // n_layers
    n_files = 50
    tars = []
    for i in range(n_layers):
        # base64 with a newline every 76 characters: 4 characters per 3 random bytes.
        files = [(f"bench/text{i}/f{j:03d}.txt",
                  base64.encodebytes(rng.randbytes(per // n_files * 3 // 4)))
                 for j in range(n_files)]
        tars.append(_tar(files))
    # zlib releases the GIL: both cores compress.
    with ThreadPoolExecutor(2) as pool:
        gzs = list(pool.map(lambda t: gzip.compress(t, compresslevel=6, mtime=0), tars))
    return write_layout(layout, list(zip(tars, gzs, strict=True)), OCI_LAYER + "+gzip", "gzip")


# --------------------------------------------------------------------------
# Processes: registries, skopeo, py-spy.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_netns(argv: list[str], netns: str | None) -> list[str]:
    # nsenter execs the command (no fork): the pid Popen holds is the command's.
    return ["nsenter", f"--net=/run/netns/{netns}", "--", *argv] if netns else argv


@dataclass
class Registry:
    kind: str  # "ketch" or "docker-registry"
    dir: Path
    netns: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        storage = self.dir / "storage"
        storage.mkdir(parents=True)
        # An empty network namespace has every port free.
        self.port = 5000 if self.netns else free_port()
        if self.kind == "ketch":
            argv = [str(BIN / "ketch"), "registry", "serve", "--addr", self.host,
                    "--root", str(storage)]
        else:
            (self.dir / "config.yml").write_text("\n".join([
                "version: 0.1", "log:", "  level: warn", "  accesslog:", "    disabled: true",
                "storage:", "  filesystem:", f"    rootdirectory: {storage}",
                "http:", f"  addr: {self.host}", f"  secret: {TAG}", ""]))
            argv = [GO_REGISTRY, "serve", str(self.dir / "config.yml")]
        with open(self.dir / "registry.log", "wb") as log:
            self.proc = subprocess.Popen(in_netns(argv, self.netns), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **self.env})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode}:\n{self.log()}")
            probe = subprocess.run(in_netns(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                             f"http://{self.host}/v2/"], self.netns),
                                   capture_output=True, text=True)
            if probe.stdout == "200":
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer on {self.host}:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "registry.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def skopeo(*args: str, netns: str | None = None) -> None:
    p = subprocess.run(in_netns([SKOPEO, "copy", "-q", *args], netns), capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise RuntimeError(f"skopeo copy {' '.join(args)}: {p.stderr.strip()}")


def push(img: Image, reg: Registry, repo: str) -> None:
    skopeo("--preserve-digests", "--dest-tls-verify=false", img.ref,
           f"docker://{reg.host}/{repo}:1", netns=reg.netns)


def pull(reg: Registry, repo: str, out: Path) -> None:
    skopeo("--src-tls-verify=false", f"docker://{reg.host}/{repo}:1", f"dir:{out}",
           netns=reg.netns)


def check_pushed(img: Image, reg: Registry, repo: str) -> None:
    """The registry holds the manifest we wrote, digest for digest (nothing recompressed)."""
    p = subprocess.run(["curl", "-sfI", "-H",
                        "Accept: application/vnd.oci.image.manifest.v1+json",
                        f"http://{reg.host}/v2/{repo}/manifests/1"],
                       capture_output=True, text=True)
    got = [line.split(":", 1)[1].strip() for line in p.stdout.splitlines()
           if line.lower().startswith("docker-content-digest:")]
    if got != [img.manifest_digest]:
        raise RuntimeError(f"{reg.kind}: pushed manifest is {got}, expected "
                           f"{img.manifest_digest} (did skopeo recompress?)")


def check_pulled(img: Image, out: Path) -> None:
    for digest, size in img.layers:
        f = out / digest.removeprefix("sha256:")
        if not f.is_file() or f.stat().st_size != size:
            raise RuntimeError(f"pull: layer {digest} missing or of the wrong size in {out}")


def download(reg: Registry, repo: str, digest: str, size: int) -> float:
    """One GET of a blob with curl to /dev/null: MB/s (10^6 bytes)."""
    p = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                        f"http://{reg.host}/v2/{repo}/blobs/{digest}"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{reg.kind}: GET blob failed: curl exit {p.returncode}")
    got, secs = p.stdout.split()
    if int(got) != size:
        raise RuntimeError(f"{reg.kind}: GET blob gave {got} bytes, expected {size}")
    return size / float(secs) / 1e6


@contextlib.contextmanager
def py_spy(pid: int, out: Path, subprocesses: bool = False) -> Iterator[None]:
    """py-spy samples ``pid`` (all threads, idle ones left out) until the block ends."""
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
            "--threads", "--nonblocking", "-o", str(out)]
    if subprocesses:
        argv.append("--subprocesses")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached before the work starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)


def summarize_profile(raw: Path, top: int = 12) -> None:
    """Print where the samples of a py-spy raw (collapsed stacks) file fall."""
    if not raw.exists():
        print(f"    (no profile written to {raw})")
        return
    leaf: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        # with --subprocesses the process comes first, then the thread
        threads[next((f for f in frames[:2] if f.startswith("thread")), frames[0])] += n
        leaf[frames[-1]] += n
        # inclusive: per function, whatever line of it is on the stack
        for f in {re.sub(r":\d+\)$", ")", f) for f in frames[1:]}:
            incl[f] += n
    print(f"    {raw.name}: {total} samples (250 Hz, busy threads only)")
    for t, n in threads.most_common(6):
        print(f"      thread {t[:70]}: {100 * n / total:.0f}%")
    print("      where the samples end (self):")
    for f, n in leaf.most_common(top):
        print(f"        {100 * n / total:5.1f}%  {f[:110]}")
    print("      functions on the stack (inclusive, ketch's own but the CLI's frames):")
    own = [(f, n) for f, n in incl.most_common() if "(ketch/" in f and "(ketch/cli/" not in f]
    for f, n in own[:top]:
        print(f"        {100 * n / total:5.1f}%  {f[:110]}")


# --------------------------------------------------------------------------
# Measuring.


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # no writeback of the previous round's data lands on this one
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Row:
    what: str
    ketch: list[float]
    ref: list[float]
    ref_name: str
    goal: str  # as printed
    ok: Callable[[float, float], bool] | None = None  # (ketch median, ref median) -> met
    unit: str = "s"
    absolute: bool = False  # the goal is a number of its own, not a ratio to the reference


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def print(self) -> None:
        print()
        print("median of the runs (best in brackets); ratio = ketch / reference, of the medians")
        print(f"| {'measurement':<46} | {'ketch':>15} | {'reference':>15} | ratio | goal")
        print(f"| {'-' * 46} | {'-' * 15} | {'-' * 15} | ----- | ----")
        for r in self.rows:
            best = min if r.unit == "s" else max
            fmt = ".2f" if r.unit == "s" else ".0f"
            k = f"{statistics.median(r.ketch):{fmt}} ({best(r.ketch):{fmt}})" if r.ketch else "-"
            t = f"{statistics.median(r.ref):{fmt}} ({best(r.ref):{fmt}})" if r.ref else "-"
            ratio = (f"{statistics.median(r.ketch) / statistics.median(r.ref):5.2f}"
                     if r.ketch and r.ref else "    -")
            met = ""
            if r.ok is not None and r.ketch and (r.ref or r.absolute):
                ref = statistics.median(r.ref) if r.ref else 0.0
                met = " (met)" if r.ok(statistics.median(r.ketch), ref) else " (NOT met)"
            print(f"| {r.what + ', ' + r.unit:<46} | {k:>15} | {t:>15} | {ratio} | "
                  f"{r.goal}{met}   [{r.ref_name}]")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_serve(img: Image, base: Path, runs: int, res: Results,
                profile: Path | None, ketch_env: dict[str, str]) -> None:
    """Each run: both servers on empty storage, then push, pull and GETs on each in turns
    (the order swapped every run), so the two sides of a ratio meet the same load."""
    times: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    cpu: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    client_cpu: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    speeds: dict[str, list[float]] = collections.defaultdict(list)
    blob_digest, blob_size = img.layers[0]
    kinds = ("ketch", "docker-registry")

    def measure(reg: Registry, op: str, fn: Callable[[], object]) -> None:
        assert reg.proc is not None
        before = cpu_seconds(reg.proc.pid)
        client = resource.getrusage(resource.RUSAGE_CHILDREN)
        times[(reg.kind, op)].append(timed(fn))
        cpu[(reg.kind, op)].append(cpu_seconds(reg.proc.pid) - before)
        # skopeo is the only child reaped in between
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu[(reg.kind, op)].append(after.ru_utime - client.ru_utime
                                          + after.ru_stime - client.ru_stime)

    for i in range(runs):
        order = [Registry(kind, base / f"reg-{kind}-{i}",
                          env=ketch_env if kind == "ketch" else {}) for kind in kinds]
        if i % 2:
            order.reverse()
        out = base / f"pulled-{i}"
        try:
            for reg in order:
                reg.start()
            for reg in order:
                measure(reg, "push", lambda reg=reg: push(img, reg, "bench"))
                check_pushed(img, reg, "bench")
            for reg in order:
                measure(reg, "pull", lambda reg=reg, out=out: pull(reg, "bench", out))
                check_pulled(img, out)
                shutil.rmtree(out)
            for reg in order:
                speeds[reg.kind] += [download(reg, "bench", blob_digest, blob_size)
                                     for _ in range(3)]
            for reg in order:
                k = reg.kind
                print(f"  run {i + 1} {k:<15} " + "  ".join(
                    f"{op} {times[(k, op)][-1]:5.2f} s (CPU: server {cpu[(k, op)][-1]:4.2f} s,"
                    f" skopeo {client_cpu[(k, op)][-1]:4.2f} s)" for op in ("push", "pull"))
                    + f"  blob GET {', '.join(f'{s:.0f}' for s in speeds[k][-3:])} MB/s",
                    flush=True)
        finally:
            for reg in order:
                reg.stop()
            shutil.rmtree(out, ignore_errors=True)
    mb = img.blob_bytes >> 20
    for op in ("push", "pull"):
        res.add(Row(f"skopeo {op} {mb} MB, {len(img.layers)} layers", times[("ketch", op)],
                    times[("docker-registry", op)], "docker-registry", "<= 1.0",
                    lambda k, r: k <= r))
        res.add(Row(f"  the server's CPU time in that {op}", cpu[("ketch", op)],
                    cpu[("docker-registry", op)], "docker-registry", ""))
        res.add(Row(f"  skopeo's CPU time in that {op}", client_cpu[("ketch", op)],
                    client_cpu[("docker-registry", op)], "docker-registry", ""))
    res.add(Row(f"GET of a {blob_size >> 20} MB blob (curl)", speeds["ketch"],
                speeds["docker-registry"], "docker-registry", ">= 500 MB/s",
                lambda k, r: k >= 500, unit="MB/s", absolute=True))
    if profile is not None:
        print("  profiling ketch registry serve (one more push, pull and 5 blob GETs) ...")
        reg = Registry("ketch", base / "reg-profile", env=ketch_env)
        out = base / "pulled-profile"
        try:
            reg.start()
            assert reg.proc is not None
            for name, work in (
                    ("serve-push", lambda: push(img, reg, "bench")),
                    ("serve-pull", lambda: pull(reg, "bench", out)),
                    ("serve-blob-get", lambda: [download(reg, "bench", blob_digest, blob_size)
                                                for _ in range(5)])):
                with py_spy(reg.proc.pid, profile / f"{name}.txt"):
                    t = timed(work)
                print(f"    {name}: {t:.2f} s under py-spy")
                summarize_profile(profile / f"{name}.txt")
        finally:
            reg.stop()
            shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """A network namespace of our own with its loopback up; deleted on any exit."""
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def image_gone(dm: Daemon, ref: str) -> None:
    """Remove the image and prune: the next pull starts on an empty daemon."""
    dm.cli("rmi", ref)
    dm.cli("image", "prune", "-af", check=False)
    p = subprocess.run(["curl", "-sf", "--unix-socket", str(dm.sock),
                        "http://localhost/v1.41/system/df"], capture_output=True)
    left = json.loads(p.stdout).get("LayersSize", 0) if p.returncode == 0 else None
    if left:
        print(f"  warning: {dm.name} still holds {left} bytes of layers after rmi and prune")


def reset_ketchd(k: Daemon) -> None:
    """``ketch system reset`` of ketchd's directories (after Daemon.stop, belt and braces)."""
    p = subprocess.run([str(BIN / "ketch"), "system", "reset", "--root", str(k.dir / "root"),
                        "--exec-root", str(k.dir / "exec"), "--pidfile", str(k.dir / "pid"),
                        "--cgroup-parent", CGROUP_PARENT, "-f"],
                       env=k.env, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"  warning: ketch system reset: {(p.stderr or p.stdout).strip()[:300]}")


def bench_pull(img: Image, base: Path, fast: Path, runs: int, skip_docker: bool, res: Results,
               profile: Path | None) -> None:
    """``base``: the daemons' directories (disk); ``fast``: the registry's storage (tmpfs)."""
    with netns() as ns:
        reg = Registry("docker-registry", fast / "reg-pull", netns=ns)
        k = ketchd(base, bridge="none")
        k.argv = in_netns(k.argv, ns)
        daemons = [k]
        if not skip_docker:
            d = dockerd(base)  # --bridge none --iptables=false
            d.argv = in_netns(d.argv, ns)
            daemons.append(d)
        try:
            reg.start()
            push(img, reg, "bench/gz")
            ref = f"{reg.host}/bench/gz:1"
            for dm in daemons:
                dm.start()
            times: dict[str, list[float]] = collections.defaultdict(list)
            for i in range(runs):
                for dm in daemons if i % 2 == 0 else daemons[::-1]:
                    t = timed(lambda dm=dm: dm.cli("pull", "-q", ref))
                    dm.cli("image", "inspect", ref)
                    times[dm.name].append(t)
                    print(f"  run {i + 1} docker pull on {dm.name:<8} {t:6.2f} s", flush=True)
                    image_gone(dm, ref)
            res.add(Row(f"docker pull {img.blob_bytes >> 20} MB gzip ({img.uncompressed >> 20} "
                        f"MB), {len(img.layers)} layers", times["ketchd"], times["dockerd"],
                        "dockerd 20.10", "<= 0.8", lambda k_, r: k_ <= 0.8 * r))
            if profile is not None:
                print("  profiling ketchd during one more pull ...")
                with py_spy(k.pid, profile / "ketchd-pull.txt", subprocesses=True):
                    t = timed(lambda: k.cli("pull", "-q", ref))
                print(f"    ketchd pull: {t:.2f} s under py-spy")
                summarize_profile(profile / "ketchd-pull.txt")
                image_gone(k, ref)
        finally:
            for dm in daemons:
                dm.stop()
            reset_ketchd(k)
            reg.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=500, help="image size (default 500)")
    ap.add_argument("--layers", type=int, default=10, help="layers per image (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="rounds per measurement (default 3)")
    ap.add_argument("--skip-docker", action="store_true",
                    help="no dockerd: ketchd's pull is timed alone")
    ap.add_argument("--only", default="serve,pull", help="comma-separated subset of serve,pull")
    ap.add_argument("--no-sendfile", action="store_true",
                    help="serve ketch's blobs without sendfile (AIOHTTP_NOSENDFILE=1, aiohttp's "
                         "own switch), to see what sendfile costs a client that is the "
                         "bottleneck")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="one more round with py-spy on the ketch side; raw stacks to DIR")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/registry.py needs root (daemons, tmpfs, network namespace)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    if args.profile is not None:
        if not PY_SPY.exists():
            print(f"--profile needs py-spy in {BIN} (.venv/bin/pip install py-spy)",
                  file=sys.stderr)
            return 2
        args.profile.mkdir(parents=True, exist_ok=True)
    end_on_signals()
    res = Results()
    with workspace() as base:
        fast = base / "tmpfs"
        fast.mkdir()
        # Source images, registry storage (two servers at once at most) and a pull's output.
        size = 8 * args.size_mb + 512
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "ktbench", str(fast)],
                       check=True)
        try:
            rng = random.Random(SEED)
            t = time.perf_counter()
            if "serve" in only:
                plain = plain_image(fast / "plain", args.size_mb, args.layers, rng)
                print(f"serve: {len(plain.layers)} uncompressed layers, {plain.blob_bytes >> 20}"
                      f" MB of incompressible data ({time.perf_counter() - t:.0f} s to make)",
                      flush=True)
                bench_serve(plain, fast, args.runs, res, args.profile,
                            {"AIOHTTP_NOSENDFILE": "1"} if args.no_sendfile else {})
                shutil.rmtree(plain.dir)
            if "pull" in only:
                t = time.perf_counter()
                gz = gzip_image(fast / "gzip", args.size_mb, args.layers, rng)
                print(f"pull: {len(gz.layers)} gzip layers, {gz.blob_bytes >> 20} MB "
                      f"({gz.uncompressed >> 20} MB uncompressed; "
                      f"{time.perf_counter() - t:.0f} s to make)", flush=True)
                bench_pull(gz, base, fast, args.runs, args.skip_docker, res, args.profile)
        finally:
            subprocess.run(["umount", str(fast)], capture_output=True)
    res.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
