"""``docker stats`` frames (v1 and v2 shapes from the fake cgroupfs, streaming rules) and
``docker update`` (body, dockerd's merge and conflict rules, apply, roll back)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ketch.engine import model, specgen
from ketch.engine import stats as st
from ketch.engine.store import Container, ContainerStore, State
from ketch.errors import Conflict, InvalidArgument, NotFound, System
from ketch.linux.cgroups import Mode, Stats
from ketch.linux.cgroups.fake import FakeCgroupTree

CG = "/ketch/abc"
MIB = 1024 * 1024
MEM_TOTAL = 8 * 1024 * MIB
PROC_STAT = ("cpu  100 0 50 800 10 0 5 0 0 0\n"
             "cpu0 50 0 25 400 5 0 2 0 0 0\n"
             "cpu1 50 0 25 400 5 0 3 0 0 0\n"
             "intr 1 2 3\nctxt 99\n")


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kw: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kw), 30))
    return run


# --- host facts ----------------------------------------------------------------------------


def test_system_cpu_usage_and_machine_memory() -> None:
    import os

    hz = os.sysconf("SC_CLK_TCK")
    usage, cpus = st.system_cpu_usage(PROC_STAT)
    assert usage == (100 + 50 + 800 + 10 + 5) * 1_000_000_000 // hz    # 7 fields, no steal
    assert cpus == 2
    with pytest.raises(System):
        st.system_cpu_usage("cpu 1 2 3\n")
    assert st.machine_memory("MemTotal:       16384 kB\nMemFree: 1 kB\n") == 16384 * 1024
    assert st.machine_memory("") == 0


def test_network_stats_from_net_dev() -> None:
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    "
            "packets errs drop fifo colls carrier compressed\n"
            "    lo:     100       1    0    0    0     0          0         0      100       "
            "1    0    0    0     0       0          0\n"
            "  eth0:    1500      10    1    2    0     0          0         0      700       "
            "7    3    4    0     0       0          0\n")
    assert st.network_stats(text) == {"eth0": {
        "rx_bytes": 1500, "rx_packets": 10, "rx_errors": 1, "rx_dropped": 2,
        "tx_bytes": 700, "tx_packets": 7, "tx_errors": 3, "tx_dropped": 4}}


# --- frames ------------------------------------------------------------------------------------


def _v1_stats(tmp_path: Path, limit: str) -> Stats:
    tree = FakeCgroupTree(tmp_path, Mode.HYBRID)
    mgr = tree.manager(CG)
    mgr.create()
    cpu = tree.dir("cpu", CG)
    tree.put(cpu, "cpu.stat", "nr_periods 10\nnr_throttled 3\nthrottled_time 777\n")
    tree.put(cpu, "cpuacct.usage", "3000\n")
    tree.put(cpu, "cpuacct.usage_percpu", "1000 2000\n")
    tree.put(cpu, "cpuacct.stat", "user 2\nsystem 1\n")
    mem = tree.dir("memory", CG)
    tree.put(mem, "memory.stat", "cache 4096\nrss 8192\nshmem 1\ntotal_inactive_file 100\n")
    tree.put(mem, "memory.usage_in_bytes", "12288\n")
    tree.put(mem, "memory.max_usage_in_bytes", "20480\n")
    tree.put(mem, "memory.limit_in_bytes", limit + "\n")
    tree.put(mem, "memory.failcnt", "2\n")
    tree.put(tree.dir("pids", CG), "pids.current", "3\n")
    blk = tree.dir("blkio", CG)
    tree.put(blk, "blkio.throttle.io_serviced_recursive", "8:0 Read 2\n8:0 Write 0\nTotal 2\n")
    tree.put(blk, "blkio.throttle.io_service_bytes_recursive",
             "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n")
    s: Stats = mgr.stats()
    return s


def test_v1_frame_as_dockerd(tmp_path: Path) -> None:
    raw = _v1_stats(tmp_path, str(64 * MIB))
    f = st.docker_stats(raw, cgroup2=False, name="/web", cid="c" * 64,
                        read_ns=1700000000_500000000, system_usage=9000, online_cpus=2,
                        mem_total=MEM_TOTAL)
    assert f["read"] == "2023-11-14T22:13:20.5Z" and f["preread"] == st.ZERO_TIME
    assert f["name"] == "/web" and f["id"] == "c" * 64 and f["num_procs"] == 0
    assert "networks" not in f and f["storage_stats"] == {}
    assert f["pids_stats"] == {"current": 3}           # pids.max "max": no limit shown
    assert f["cpu_stats"] == {
        "cpu_usage": {"total_usage": 3000, "percpu_usage": [1000, 2000],
                      "usage_in_kernelmode": 10_000_000, "usage_in_usermode": 20_000_000},
        "system_cpu_usage": 9000, "online_cpus": 2,
        "throttling_data": {"periods": 10, "throttled_periods": 3, "throttled_time": 777}}
    mem = f["memory_stats"]
    assert mem["usage"] == 12288 and mem["max_usage"] == 20480 and mem["failcnt"] == 2
    assert mem["limit"] == 64 * MIB
    assert mem["stats"]["cache"] == 4096 and mem["stats"]["total_inactive_file"] == 100
    assert "shmem" not in mem["stats"] and set(mem["stats"]) == set(st.V1_MEMORY_KEYS)
    assert f["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 0}]
    assert f["blkio_stats"]["io_serviced_recursive"][0]["value"] == 2
    assert f["blkio_stats"]["io_queue_recursive"] == []     # [] while running, as dockerd
    assert list(mem["stats"]) == sorted(st.V1_MEMORY_KEYS)
    assert list(f) == ["read", "preread", "pids_stats", "blkio_stats", "num_procs",
                       "storage_stats", "cpu_stats", "precpu_stats", "memory_stats", "name",
                       "id"]


def test_v1_unlimited_memory_is_the_machines(tmp_path: Path) -> None:
    raw = _v1_stats(tmp_path, "9223372036854771712")
    f = st.docker_stats(raw, cgroup2=False, name="/web", cid="c", read_ns=1,
                        system_usage=1, online_cpus=1, mem_total=MEM_TOTAL)
    assert f["memory_stats"]["limit"] == MEM_TOTAL


def test_v2_frame_as_dockerd(tmp_path: Path) -> None:
    tree = FakeCgroupTree(tmp_path, Mode.V2)
    mgr = tree.manager(CG)
    mgr.create()
    d = tree.dir("", CG)
    tree.put(d, "cpu.stat", "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\n"
                            "nr_throttled 1\nthrottled_usec 7\n")
    tree.put(d, "memory.current", "65536\n")
    tree.put(d, "memory.peak", "99999\n")
    tree.put(d, "memory.stat", "anon 100\nfile 200\ninactive_file 50\nzswap 1\n")
    tree.put(d, "pids.current", "2\n")
    tree.put(d, "pids.max", "100\n")
    tree.put(d, "io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    raw = mgr.stats()
    f = st.docker_stats(raw, cgroup2=True, name="/web", cid="c", read_ns=1,
                        system_usage=5, online_cpus=4, mem_total=MEM_TOTAL)
    assert f["cpu_stats"]["cpu_usage"] == {"total_usage": 5000, "usage_in_kernelmode": 2000,
                                           "usage_in_usermode": 3000}
    assert f["cpu_stats"]["throttling_data"] == {"periods": 4, "throttled_periods": 1,
                                                 "throttled_time": 7000}
    mem = f["memory_stats"]
    assert mem["usage"] == 65536 and "max_usage" not in mem
    assert mem["limit"] == MEM_TOTAL                   # memory.max "max"
    assert mem["stats"]["inactive_file"] == 50 and set(mem["stats"]) == set(st.V2_MEMORY_KEYS)
    assert f["pids_stats"] == {"current": 2, "limit": 100}
    assert f["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "read", "value": 10},
        {"major": 8, "minor": 0, "op": "write", "value": 20}]
    assert f["blkio_stats"]["io_serviced_recursive"] is None


def test_empty_frame_is_dockerds_text() -> None:
    text = json.dumps(st.empty_stats("/x", "abc"), separators=(",", ":"))
    assert text == (
        '{"read":"0001-01-01T00:00:00Z","preread":"0001-01-01T00:00:00Z","pids_stats":{},'
        '"blkio_stats":{"io_service_bytes_recursive":null,"io_serviced_recursive":null,'
        '"io_queue_recursive":null,"io_service_time_recursive":null,'
        '"io_wait_time_recursive":null,"io_merged_recursive":null,"io_time_recursive":null,'
        '"sectors_recursive":null},"num_procs":0,"storage_stats":{},'
        '"cpu_stats":{"cpu_usage":{"total_usage":0,"usage_in_kernelmode":0,'
        '"usage_in_usermode":0},"throttling_data":{"periods":0,"throttled_periods":0,'
        '"throttled_time":0}},"precpu_stats":{"cpu_usage":{"total_usage":0,'
        '"usage_in_kernelmode":0,"usage_in_usermode":0},"throttling_data":{"periods":0,'
        '"throttled_periods":0,"throttled_time":0}},"memory_stats":{},"name":"/x","id":"abc"}')


# --- a fake engine -----------------------------------------------------------------------------


class FakeRuntime:
    def __init__(self) -> None:
        self.reads = 0
        self.updates: list[tuple[str, Any]] = []
        self.fail: Exception | None = None

    def stats(self, cid: str) -> Stats:
        self.reads += 1
        s = Stats()
        s.cpu.usage.total = 1000 * self.reads
        s.memory.usage.usage = 4096
        s.memory.usage.limit = 2**63
        s.pids.current = 1
        return s

    def update(self, cid: str, resources: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.updates.append((cid, resources))


class Opts:
    cgroup2 = False


class FakeEngine:
    def __init__(self, tmp_path: Path) -> None:
        self.store = ContainerStore(str(tmp_path / "containers.db"))
        self.opts = Opts()
        self.rt = FakeRuntime()
        self.events: list[tuple[str, str]] = []
        self.spec_options = specgen.SpecOptions(ncpu=4)

    def _runtime(self) -> FakeRuntime:
        return self.rt

    def _sysinfo(self) -> model.SysInfo:
        return model.SysInfo(ncpu=4)

    def on_event(self, action: str, c: Container, attrs: dict[str, str]) -> None:
        self.events.append((action, c.name))

    def add(self, name: str, status: str = "running", **hc: Any) -> Container:
        host = model.HostConfig(**hc)
        model.adapt_host_config(host, model.DaemonDefaults())
        c = Container(id=(name.encode().hex() * 64)[:64], name=name, created="", image="busybox",
                      image_id="sha256:x", config={"Image": "busybox"},
                      host_config=model.host_config_json(host), state=State(status=status))
        self.store.add(c)
        return c


def reader(eng: FakeEngine) -> st.StatsReader:
    clock = iter(range(1, 1000))
    return st.StatsReader(eng, interval=0.01,  # type: ignore[arg-type]
                          clock=lambda: next(clock) * 1_000_000_000)


async def _take(agen: Any, n: int) -> list[dict[str, Any]]:
    out = []
    async for frame in agen:
        out.append(frame)
        if len(out) == n:
            break
    await agen.aclose()
    return out


@aio
async def test_stream_frames_carry_the_previous_cpu(tmp_path: Path) -> None:
    eng = FakeEngine(tmp_path)
    eng.add("web")
    frames = await _take(reader(eng).frames("web", stream=True, one_shot=False), 3)
    assert frames[0]["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert frames[0]["preread"] == st.ZERO_TIME
    assert frames[1]["precpu_stats"] == frames[0]["cpu_stats"]
    assert frames[2]["preread"] == frames[1]["read"]
    assert frames[2]["memory_stats"]["limit"] == st.machine_memory()
    assert frames[2]["name"] == "/web"


@aio
async def test_no_stream_primes_one_shot_does_not(tmp_path: Path) -> None:
    eng = FakeEngine(tmp_path)
    eng.add("web")
    frames = await _take(reader(eng).frames("web", stream=False, one_shot=False), 5)
    assert len(frames) == 1 and eng.rt.reads == 2
    assert frames[0]["precpu_stats"]["cpu_usage"]["total_usage"] == 1000
    assert frames[0]["cpu_stats"]["cpu_usage"]["total_usage"] == 2000
    frames = await _take(reader(eng).frames("web", stream=False, one_shot=True), 5)
    assert len(frames) == 1 and eng.rt.reads == 3
    assert frames[0]["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    with pytest.raises(InvalidArgument, match="cannot have stream=true and one-shot=true"):
        await _take(reader(eng).frames("web", stream=True, one_shot=True), 1)
    with pytest.raises(NotFound):
        await _take(reader(eng).frames("nosuch", stream=False, one_shot=False), 1)


@aio
async def test_stopped_container_gives_zeros_and_a_removed_one_ends_the_stream(
        tmp_path: Path) -> None:
    eng = FakeEngine(tmp_path)
    c = eng.add("old", status="exited")
    frames = await _take(reader(eng).frames("old", stream=False, one_shot=False), 5)
    assert frames == [st.empty_stats("/old", c.id)] and eng.rt.reads == 0
    agen = reader(eng).frames("old", stream=True, one_shot=False)
    first = await agen.__anext__()
    assert first["read"] == st.ZERO_TIME and first["cpu_stats"] == st.empty_stats(
        "", "")["cpu_stats"]
    eng.store.remove(c)
    rest = [f async for f in agen]
    assert rest == []


# --- update ------------------------------------------------------------------------------------


def test_parse_update_keeps_resources_and_restart_policy_only() -> None:
    hc = st.parse_update(b'{"Memory": 67108864, "Binds": ["/a:/b"], "PidsLimit": -1, '
                         b'"RestartPolicy": {"Name": "always"}, "cpuquota": 5000}')
    assert hc.memory == 64 * MIB and hc.binds is None and hc.pids_limit == 0
    assert hc.restart_policy.name == "always" and hc.cpu_quota == 5000
    assert st.parse_update(b'{"PidsLimit": 10}', "1.39").pids_limit is None
    assert st.parse_update(b"").memory == 0
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        st.parse_update(b"{")
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        st.parse_update(b'{"Memory": "lots"}')


@pytest.mark.parametrize(("current", "new", "message"), [
    ({"cpu_period": 100000}, {"nano_cpus": 10**9},
     "Nano CPUs cannot be updated as CPU Period has already been set"),
    ({"cpu_quota": 50000}, {"nano_cpus": 10**9},
     "Nano CPUs cannot be updated as CPU Quota has already been set"),
    ({"nano_cpus": 10**9}, {"cpu_period": 100000},
     "CPU Period cannot be updated as NanoCPUs has already been set"),
    ({"nano_cpus": 10**9}, {"cpu_quota": 50000},
     "CPU Quota cannot be updated as NanoCPUs has already been set"),
    ({"memory": 32 * MIB, "memory_swap": 64 * MIB}, {"memory": 128 * MIB},
     "Memory limit should be smaller than already set memoryswap limit"),
    ({}, {"memory": 128 * MIB},          # no swap limit yet: dockerd refuses it too
     "Memory limit should be smaller than already set memoryswap limit"),
    ({"auto_remove": True}, {"restart_policy": model.RestartPolicy("always")},
     "Restart policy cannot be updated because AutoRemove is enabled"),
])
def test_merge_conflicts(current: dict[str, Any], new: dict[str, Any], message: str) -> None:
    with pytest.raises(Conflict, match=message):
        st.merge_update(model.HostConfig(**current), model.HostConfig(**new))


def test_merge_sets_only_given_fields() -> None:
    cur = model.HostConfig(memory=32 * MIB, memory_swap=64 * MIB, cpu_shares=512,
                           pids_limit=10, restart_policy=model.RestartPolicy("always"))
    st.merge_update(cur, model.HostConfig(memory=64 * MIB, nano_cpus=5 * 10**8))
    assert (cur.memory, cur.memory_swap, cur.cpu_shares, cur.nano_cpus, cur.pids_limit) == (
        64 * MIB, 64 * MIB, 512, 5 * 10**8, 10)
    assert cur.restart_policy.name == "always"
    st.merge_update(cur, model.HostConfig(memory=256 * MIB, memory_swap=-1, pids_limit=0,
                                          restart_policy=model.RestartPolicy("no")))
    assert (cur.memory, cur.memory_swap, cur.pids_limit) == (256 * MIB, -1, 0)
    assert cur.restart_policy.name == "no"


@aio
async def test_update_running_applies_stores_and_logs(tmp_path: Path) -> None:
    eng = FakeEngine(tmp_path)
    eng.add("web", memory=32 * MIB)
    body = json.dumps({"Memory": 64 * MIB, "NanoCpus": 5 * 10**8, "PidsLimit": 50}).encode()
    warnings = await st.update(eng, "web", body)  # type: ignore[arg-type]
    assert warnings == []
    hc = eng.store.get("web").host_config
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["PidsLimit"]) == (
        64 * MIB, 64 * MIB, 5 * 10**8, 50)
    (cid, res), = eng.rt.updates
    assert cid == eng.store.get("web").id
    assert res.memory.limit == 64 * MIB and res.memory.swap is None
    assert (res.cpu.period, res.cpu.quota) == (100000, 50000) and res.pids.limit == 50
    assert eng.events == [("update", "web")]


@aio
async def test_update_stopped_only_stores_and_runtime_failure_rolls_back(
        tmp_path: Path) -> None:
    eng = FakeEngine(tmp_path)
    eng.add("old", status="exited")
    await st.update(eng, "old", b'{"CpuShares": 512}')  # type: ignore[arg-type]
    assert eng.store.get("old").host_config["CpuShares"] == 512 and eng.rt.updates == []
    eng.add("web")
    eng.rt.fail = Conflict("container not running")
    with pytest.raises(System, match="^Cannot update container [0-9a-f]{64}: container not running"):
        await st.update(eng, "web", b'{"CpuShares": 256}')  # type: ignore[arg-type]
    assert eng.store.get("web").host_config["CpuShares"] == 0
    with pytest.raises(Conflict, match="^Cannot update container [0-9a-f]{64}: Memory limit"):
        await st.update(eng, "web", b'{"Memory": 67108864}')  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="Minimum memory limit allowed is 6MB"):
        await st.update(eng, "web", b'{"Memory": 1024}')  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="invalid restart policy"):
        await st.update(eng, "web",  # type: ignore[arg-type]
                        b'{"RestartPolicy": {"Name": "sometimes"}}')
    eng.add("gone", status="removing")
    with pytest.raises(Conflict, match='marked for removal and cannot be "update"'):
        await st.update(eng, "gone", b"{}")  # type: ignore[arg-type]
