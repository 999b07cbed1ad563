"""Runtime benchmark: ketch against runc on the same bundle, ratios printed.

    .venv/bin/python bench/runtime.py [-n 100]

Measures, per container, on one busybox bundle with a network namespace:
  run   `run /bin/true` (create + start + wait + delete), binary against binary
  cycle create + start + delete of a `sleep` container, binary against binary
  lib   the same `run` through ketch's in-process library (what ketchd's
        supervisor does: no exec per container) against the runc binary
and checks that `run -d` leaves no resident helper process per container.
Each run uses a private --root and cgroup prefix and removes everything after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
KETCH_RUNC = str(Path(sys.executable).parent / "ketch-runc")
TAG = f"ketch-bench-{secrets.token_hex(3)}"


def make_bundle(base: Path, rootfs: Path, args: list[str]) -> Path:
    from ketch.jsonmodel import to_json
    from ketch.runtime.defaults import default_spec

    spec = to_json(default_spec())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"]["path"] = str(rootfs)
    # No cgroupsPath: each runtime names the cgroup after the container id,
    # and every id carries the run's tag.
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text(json.dumps(spec))
    return base


def timed(n: int, fn) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def binary_run(binary: str, root: Path, bundle: Path):
    def once(i: int) -> None:
        subprocess.run([binary, "--root", str(root), "run", "--bundle", str(bundle),
                        f"{TAG}-r{i}"],
                       check=True, stdout=subprocess.DEVNULL)
    return once


def binary_cycle(binary: str, root: Path, bundle: Path):
    def once(i: int) -> None:
        cid = f"{TAG}-c{i}"
        subprocess.run([binary, "--root", str(root), "create", "--bundle", str(bundle), cid],
                       check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        subprocess.run([binary, "--root", str(root), "start", cid], check=True)
        subprocess.run([binary, "--root", str(root), "delete", "--force", cid], check=True)
    return once


def library_run(root: Path, bundle: Path):
    from ketch.runtime.container import CreateOptions, Runtime

    rt = Runtime(str(root))
    devnull = os.open(os.devnull, os.O_RDWR)

    def once(i: int) -> None:
        cid = f"{TAG}-l{i}"
        started = rt.create(cid, CreateOptions(bundle=str(bundle),
                                               stdio=(devnull, devnull, devnull)))
        rt.start(cid)
        os.waitpid(started.pid, 0)
        if started.pidfd is not None:
            os.close(started.pidfd)
        rt.delete(cid)
    return once


def resident_helpers(binary: str, root: Path, bundle: Path) -> int:
    """Processes left besides the containers' own after `run -d` of 5 containers."""
    before = set(int(p) for p in os.listdir("/proc") if p.isdigit())
    for i in range(5):
        subprocess.run([binary, "--root", str(root), "run", "-d", "--bundle", str(bundle),
                        f"{TAG}-d{i}"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    after = set(int(p) for p in os.listdir("/proc") if p.isdigit())
    container_pids = set()
    for i in range(5):
        st = json.loads(subprocess.run([binary, "--root", str(root), "state", f"{TAG}-d{i}"],
                                       capture_output=True, check=True).stdout)
        container_pids.add(st["pid"])
    extra = []
    for pid in after - before - container_pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ketch" in cmd or b"runc" in cmd:
            extra.append(pid)
    for i in range(5):
        subprocess.run([binary, "--root", str(root), "delete", "--force", f"{TAG}-d{i}"],
                       check=True)
    return len(extra)


def cleanup(roots: dict[str, Path], runc: str) -> None:
    """Delete what a failed run left: containers in our roots, then our cgroups."""
    for name, root in roots.items():
        binary = runc if name == "runc" else KETCH_RUNC
        out = subprocess.run([binary, "--root", str(root), "list", "-q"], capture_output=True,
                             text=True)
        for cid in out.stdout.split():
            subprocess.run([binary, "--root", str(root), "delete", "--force", cid],
                           capture_output=True)
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if hierarchy.is_dir():
            for d in hierarchy.rglob(f"{TAG}-*"):
                if d.is_dir():
                    d.rmdir()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("the benchmark runs containers: run it as root", file=sys.stderr)
        return 1
    runc = shutil.which("runc")
    if runc is None:
        print("runc is not installed (apt-get install runc)", file=sys.stderr)
        return 1
    from ketch.image.bootstrap import busybox_rootfs

    cache = REPO / ".cache" / "busybox-rootfs"
    if not (cache / "bin" / "busybox").exists():
        shutil.rmtree(cache, ignore_errors=True)
        busybox_rootfs(str(cache))
    tag = TAG
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    roots = {name: Path("/run") / tag / name for name in ("runc", "ketch", "lib")}
    try:
        true_b = make_bundle(work / "true", cache, ["/bin/true"])
        sleep_b = make_bundle(work / "sleep", cache, ["sleep", "1000"])
        n = args.n
        results = {}
        # Warm up page cache and imports for both.
        binary_run(runc, roots["runc"], true_b)(10_000)
        binary_run(KETCH_RUNC, roots["ketch"], true_b)(10_000)
        results["run runc"] = timed(n, binary_run(runc, roots["runc"], true_b))
        results["run ketch-runc"] = timed(n, binary_run(KETCH_RUNC, roots["ketch"], true_b))
        results["run library"] = timed(n, library_run(roots["lib"], true_b))
        results["cycle runc"] = timed(n, binary_cycle(runc, roots["runc"], sleep_b))
        results["cycle ketch-runc"] = timed(n, binary_cycle(KETCH_RUNC, roots["ketch"], sleep_b))
        helpers = resident_helpers(KETCH_RUNC, roots["ketch"], sleep_b)
        print(f"containers per measurement: {n}")
        print(f"{'measurement':<28}{'ms/container':>14}")
        for k, v in results.items():
            print(f"{k:<28}{v * 1000:>14.2f}")
        print()
        print(f"ratio run ketch-runc/runc:      {results['run ketch-runc'] / results['run runc']:.2f}"
              "  (goal <= 1.5)")
        print(f"ratio cycle ketch-runc/runc:    "
              f"{results['cycle ketch-runc'] / results['cycle runc']:.2f}  (goal <= 1.5)")
        print(f"ratio run library/runc binary:  {results['run library'] / results['run runc']:.2f}"
              "  (goal <= 0.5)")
        print(f"resident helper processes after 5x run -d: {helpers}  (goal 0)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        cleanup(roots, runc)
        shutil.rmtree(Path("/run") / tag, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
