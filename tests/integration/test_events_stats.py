"""``/events``, ``/containers/{id}/stats`` and ``/containers/{id}/update`` judged by the
docker CLI (28.x) and docker-py, against a private ketchd (``--network none``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.integration.test_daemon_containers import (  # noqa: F401 - fixtures
    NONE,
    inspect,
    ketchd,
    ok,
)
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    docker,
    start_ketchd,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]


def docker_bg(k: Ketchd, *args: str) -> subprocess.Popen[str]:
    assert DOCKER is not None
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DOCKER_")}
    env["DOCKER_HOST"] = k.host
    env["DOCKER_CONFIG"] = str(k.dir / "docker-config")
    return subprocess.Popen([DOCKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def stop_bg(p: subprocess.Popen[str]) -> tuple[str, str]:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        return p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()


# --- events -------------------------------------------------------------------------------


def test_events_history_live_and_filters(ketchd: Ketchd) -> None:  # noqa: F811
    k = ketchd
    t0 = time.time()
    live = docker_bg(k, "events", "--filter", "event=die", "--format", "{{json .}}")
    try:
        time.sleep(1)   # subscribed before the container runs
        ok(docker(k, "run", "-d", *NONE, "--name", "e1", "--label", "team=a", "busybox",
                  "sh", "-c", "exit 3"))
        assert ok(docker(k, "wait", "e1")).strip() == "3"
        time.sleep(0.5)     # the engine may log "die" just after wait answers
        ok(docker(k, "rename", "e1", "e2"))
        ok(docker(k, "rm", "e2"))
        time.sleep(0.5)
    finally:
        out, err = stop_bg(live)
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 1, (out, err)
    die = lines[0]
    assert die["Type"] == "container" and die["Action"] == "die" and die["status"] == "die"
    assert die["Actor"]["Attributes"]["exitCode"] == "3"
    assert die["Actor"]["Attributes"]["name"] == "e1"
    assert die["Actor"]["Attributes"]["team"] == "a"
    assert die["from"] == "busybox" and die["scope"] == "local"
    assert die["timeNano"] // 10**9 == die["time"]

    # The history, ended by --until. (The CLI turns "0s" into now in whole seconds, as
    # Go's Unix(): an event in the current second is after it.)
    t1 = time.time()
    out = ok(docker(k, "events", "--since", f"{t0:.3f}", "--until", f"{t1:.3f}",
                    "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}"))
    # (the none network's connect and disconnect, as dockerd's: name is the network's)
    assert out.splitlines() == ["container create e1", "network connect none",
                                "container start e1", "container die e1",
                                "network disconnect none", "container rename e2",
                                "container destroy e2"], out
    rename = ok(docker(k, "events", "--since", f"{t0:.3f}", "--until", f"{t1:.3f}", "--filter",
                       "event=rename", "--format", "{{json .Actor.Attributes}}"))
    assert json.loads(rename)["oldName"] == "/e1"
    # container= matches the name (or an id prefix); label= the container's labels;
    # image= the image with or without its tag; type=image has none of these.
    for flt, count in (("container=e1", 3), ("container=e2", 2), ("label=team=a", 5),
                       ("label=team=b", 0), ("image=busybox:latest", 0),
                       ("image=busybox", 5), ("type=image", 0)):
        out = ok(docker(k, "events", "--since", f"{t0:.3f}", "--until", f"{t1:.3f}",
                        "--filter", flt))
        assert len(out.splitlines()) == count, (flt, out)
    # since after until: dockerd's message.
    out = docker(k, "events", "--since", "100", "--until", "50")
    assert out.returncode != 0
    assert "`since` time (100) cannot be after `until` time (50)" in out.stderr


def test_event_stream_ends_when_ketchd_stops(ketchd: Ketchd) -> None:  # noqa: F811
    live = docker_bg(ketchd, "events")
    try:
        time.sleep(1)
        t0 = time.monotonic()
        ketchd.stop()
        live.wait(timeout=15)
        assert time.monotonic() - t0 < 10
    finally:
        stop_bg(live)


def test_image_events_and_docker_py(ketchd: Ketchd) -> None:  # noqa: F811
    import docker as docker_py

    k = ketchd
    t0 = time.time()
    ok(docker(k, "tag", "busybox", "mybox:1"))
    ok(docker(k, "rmi", "mybox:1"))
    out = ok(docker(k, "events", "--since", f"{t0:.3f}", "--until", f"{time.time():.3f}",
                    "--filter",
                    "type=image", "--format", "{{.Action}} {{.Actor.Attributes.name}}"))
    assert out.splitlines() == ["tag mybox:1", out.splitlines()[1]]
    assert out.splitlines()[1].startswith("untag sha256:")

    client = docker_py.DockerClient(base_url=k.host, version="1.45")
    try:
        stream = client.events(decode=True, filters={"event": "start"})
        ok(docker(k, "run", "-d", *NONE, "--name", "py1", "busybox", "true"))
        ev = next(iter(stream))
        stream.close()
        assert ev["Action"] == "start" and ev["Actor"]["Attributes"]["name"] == "py1"
        past = list(client.events(decode=True, since=int(t0), until=int(time.time()) + 1,
                                  filters={"container": "py1"}))
        assert [e["Action"] for e in past][:2] == ["create", "start"]
    finally:
        client.close()


# --- stats --------------------------------------------------------------------------------


def test_stats_no_stream_stream_and_stopped(ketchd: Ketchd) -> None:  # noqa: F811
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "s1", "--memory", "64m", "busybox",
              "sh", "-c", "while true; do :; done"))
    ok(docker(k, "create", *NONE, "--name", "s2", "busybox", "true"))
    row = json.loads(ok(docker(k, "stats", "--no-stream", "--format", "{{json .}}", "s1")))
    assert row["Name"] == "s1" and row["PIDs"] == "1"
    assert row["MemUsage"].endswith(" / 64MiB"), row
    cpu = float(row["CPUPerc"].rstrip("%"))
    assert cpu > 20, row     # a busy loop on one CPU
    stopped = json.loads(ok(docker(k, "stats", "--no-stream", "--format", "{{json .}}",
                                   "s2")))
    assert stopped["CPUPerc"] == "0.00%" and stopped["MemUsage"] == "0B / 0B"
    assert stopped["PIDs"] == "0"

    # The raw API: one-shot has no precpu; stream=0 has it; a frame a second when streaming.
    import docker as docker_py

    client = docker_py.APIClient(base_url=k.host, version="1.45")
    try:
        one = client.stats("s1", stream=False, one_shot=True)
        assert one["name"] == "/s1" and one["precpu_stats"]["cpu_usage"]["total_usage"] == 0
        assert "networks" not in one and one["num_procs"] == 0
        assert one["memory_stats"]["limit"] == 64 * 1024 * 1024
        assert one["cpu_stats"]["online_cpus"] >= 1 and one["cpu_stats"]["system_cpu_usage"] > 0
        if Path("/sys/fs/cgroup/memory").is_dir():       # v1 (hybrid): dockerd's statsV1
            assert one["blkio_stats"]["io_queue_recursive"] == []
            assert len(one["cpu_stats"]["cpu_usage"]["percpu_usage"]) >= 1
            assert "total_inactive_file" in one["memory_stats"]["stats"]
            assert one["memory_stats"]["max_usage"] >= one["memory_stats"]["usage"]
        two = client.stats("s1", stream=False)
        assert two["precpu_stats"]["cpu_usage"]["total_usage"] > 0
        assert two["preread"] != "0001-01-01T00:00:00Z"
        frames = client.stats("s1", decode=True, stream=True)
        first, second = next(frames), next(frames)
        frames.close()  # type: ignore[attr-defined]
        assert second["precpu_stats"] == first["cpu_stats"]
    finally:
        client.close()

    # docker stats (streaming, all running containers) draws its table until stopped.
    assert DOCKER is not None
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DOCKER_")}
    env.update(DOCKER_HOST=k.host, DOCKER_CONFIG=str(k.dir / "docker-config"))
    out = subprocess.run(["timeout", "4", DOCKER, "stats", "--format",
                          "{{.Name}} {{.MemUsage}}"], capture_output=True, text=True, env=env,
                         timeout=30)
    assert out.returncode == 124, out.stderr
    assert "s1 " in out.stdout and " / 64MiB" in out.stdout
    ok(docker(k, "rm", "-f", "s1", "s2"))


def test_stats_networks_on_the_default_bridge(ketchd: Ketchd) -> None:  # noqa: F811
    import docker as docker_py

    k = ketchd
    ok(docker(k, "run", "-d", "--name", "n1", "busybox", "sleep", "1000"))
    client = docker_py.APIClient(base_url=k.host, version="1.45")
    try:
        one = client.stats("n1", stream=False, one_shot=True)
    finally:
        client.close()
    assert set(one["networks"]) == {"eth0"}
    assert set(one["networks"]["eth0"]) == {"rx_bytes", "rx_packets", "rx_errors",
                                            "rx_dropped", "tx_bytes", "tx_packets",
                                            "tx_errors", "tx_dropped"}
    row = json.loads(ok(docker(k, "stats", "--no-stream", "--format", "{{json .}}", "n1")))
    assert row["NetIO"].count(" / ") == 1
    ok(docker(k, "rm", "-f", "n1"))


# --- update -------------------------------------------------------------------------------


def _cgroup_dir(pid: int, controller: str) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_update_running_and_stopped(ketchd: Ketchd) -> None:  # noqa: F811
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "u1", "--memory", "32m", "busybox",
              "sleep", "1000"))
    t0 = time.time()
    ok(docker(k, "update", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50", "u1"))
    doc = inspect(k, "u1")
    hc = doc["HostConfig"]
    assert hc["Memory"] == 64 * 1024 * 1024 and hc["NanoCpus"] == 500_000_000
    assert hc["MemorySwap"] == 64 * 1024 * 1024 and hc["PidsLimit"] == 50
    pid = doc["State"]["Pid"]
    if (Path("/sys/fs/cgroup/memory")).is_dir():
        mem = _cgroup_dir(pid, "memory")
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
        cpu = _cgroup_dir(pid, "cpu")
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (_cgroup_dir(pid, "pids") / "pids.max").read_text().strip() == "50"
    out = ok(docker(k, "events", "--since", f"{t0:.3f}", "--until", f"{time.time():.3f}",
                    "--format", "{{.Action}} {{.Actor.Attributes.name}}"))
    assert "update u1" in out.splitlines()

    # dockerd's rules: more memory than the swap limit needs the swap too; a NanoCPUs
    # container cannot take a CPU quota; bad values are refused as at create.
    out = docker(k, "update", "--memory", "256m", "u1")
    assert out.returncode == 1
    assert ("Cannot update container " + doc["Id"] + ": Memory limit should be smaller "
            "than already set memoryswap limit, update the memoryswap at the same time") \
        in out.stderr
    out = docker(k, "update", "--cpu-quota", "20000", "u1")
    assert "CPU Quota cannot be updated as NanoCPUs has already been set" in out.stderr
    out = docker(k, "update", "--memory", "1m", "u1")
    assert "Minimum memory limit allowed is 6MB" in out.stderr
    out = docker(k, "update", "--restart", "bogus", "u1")
    assert out.returncode != 0
    ok(docker(k, "update", "--memory", "256m", "--memory-swap", "512m", "--restart",
              "on-failure:3", "u1"))
    hc = inspect(k, "u1")["HostConfig"]
    assert hc["Memory"] == 256 * 1024 * 1024 and hc["MemorySwap"] == 512 * 1024 * 1024
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}

    # A stopped container keeps the new limits for its next start.
    ok(docker(k, "stop", "-t", "0", "u1"))
    ok(docker(k, "update", "--memory", "128m", "u1"))
    ok(docker(k, "start", "u1"))
    pid = inspect(k, "u1")["State"]["Pid"]
    if (Path("/sys/fs/cgroup/memory")).is_dir():
        mem = _cgroup_dir(pid, "memory")
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(128 * 1024 * 1024)
    ok(docker(k, "rm", "-f", "u1"))
    out = docker(k, "update", "--memory", "64m", "nosuch")
    assert out.returncode == 1 and "No such container: nosuch" in out.stderr
