"""Exec and network events as dockerd 20.10 emits them, judged by the docker CLI (28.x)
and docker-py against a private ketchd: ``exec_create``/``exec_start``/``exec_die``
of user execs and health probes, ``network connect``/``disconnect`` on the default
bridge in dockerd's order, ``--filter`` and ``--since``/``--until`` over them; and
the lifetime of exec records (ExecIDs, inspect after exit, the supervisor's records,
a ketchd restart in between).

The expected sequences are the ones a Debian dockerd 20.10 printed for the same
commands (run privately in its own network namespace).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Any

import pytest
from tests.integration.test_daemon_containers import (  # noqa: F401 - fixtures
    NONE,
    inspect,
    ketchd,
    ok,
    wait_for,
)
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    docker,
    start_ketchd,
)
from tests.integration.test_events_stats import docker_bg, stop_bg

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

HEX64 = re.compile(r"[0-9a-f]{64}")


def history(k: Ketchd, since: float, *filters: str) -> list[dict[str, Any]]:
    """The buffered events from ``since`` to now (``--until`` ends the stream)."""
    time.sleep(0.3)     # an event logged just after the command returned
    args = ["events", "--since", f"{since:.9f}", "--until", f"{time.time():.9f}"]
    for f in filters:
        args += ["--filter", f]
    out = ok(docker(k, *args, "--format", "{{json .}}"))
    return [json.loads(line) for line in out.splitlines()]


def actions(events: list[dict[str, Any]]) -> list[str]:
    return [f"{e['Type']} {e['Action']}" for e in events]


def supervisor_execs(k: Ketchd) -> dict[str, list[str]]:
    """The exec records the supervisor holds, per container."""
    from ketch.engine.supervisor_client import SyncClient

    with SyncClient(str(k.dir / "exec" / "supervisor.sock")) as c:
        res = c.call("list", {})
    return {x["id"]: list(x.get("execs") or []) for x in res["containers"]}


# --- exec events --------------------------------------------------------------------------


def test_exec_events_exit_codes_and_exec_ids(ketchd: Ketchd) -> None:  # noqa: F811
    k = ketchd
    cid = ok(docker(k, "run", "-d", *NONE, "--name", "ex1", "--label", "team=a", "busybox",
                    "sleep", "100")).strip()
    t0 = time.time()
    assert ok(docker(k, "exec", "ex1", "echo", "hi")) == "hi\n"
    assert docker(k, "exec", "ex1", "sh", "-c", "exit 3").returncode == 3
    ok(docker(k, "exec", "ex1", "true"))
    evs = history(k, t0)
    assert actions(evs) == [
        "container exec_create: echo hi", "container exec_start: echo hi",
        "container exec_die",
        "container exec_create: sh -c exit 3", "container exec_start: sh -c exit 3",
        "container exec_die",
        # dockerd joins the command and its arguments: a space even with none
        "container exec_create: true ", "container exec_start: true ",
        "container exec_die"]
    for i in range(0, 9, 3):
        create, start, die = evs[i:i + 3]
        eid = create["Actor"]["Attributes"]["execID"]
        assert HEX64.fullmatch(eid)
        for e in (create, start, die):
            assert e["id"] == e["Actor"]["ID"] == cid and e["from"] == "busybox"
            assert e["status"] == e["Action"] and e["scope"] == "local"
        # The container's attributes (labels, image, name) with the exec's own.
        assert create["Actor"]["Attributes"] == {"execID": eid, "team": "a",
                                                 "image": "busybox", "name": "ex1"}
        assert start["Actor"]["Attributes"] == create["Actor"]["Attributes"]
        assert die["Actor"]["Attributes"] == {**create["Actor"]["Attributes"],
                                              "exitCode": ["0", "3", "0"][i // 3]}

    # In ExecIDs while it runs, out of it once it exited, inspectable after.
    t1 = time.time()
    ok(docker(k, "exec", "-d", "ex1", "sleep", "1"))
    (eid,) = inspect(k, "ex1")["ExecIDs"]
    wait_for(lambda: inspect(k, "ex1")["ExecIDs"] is None, 10)
    doc = json.loads(k.curl(f"http://x/exec/{eid}/json").stdout)
    assert doc["ExitCode"] == 0 and doc["Running"] is False and doc["ID"] == eid
    assert actions(history(k, t1)) == ["container exec_create: sleep 1",
                                       "container exec_start: sleep 1",
                                       "container exec_die"]
    # Once the container is gone, so are its execs (dockerd: "No such exec instance").
    ok(docker(k, "rm", "-f", "ex1"))
    gone = k.curl("-w", "%{http_code}", f"http://x/exec/{eid}/json").stdout
    assert gone.endswith("404") and "No such exec instance" in gone


def test_exec_that_cannot_start_has_no_exec_die(ketchd: Ketchd) -> None:  # noqa: F811
    docker_py = pytest.importorskip("docker")
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "ex1", "busybox", "sleep", "100"))
    api = docker_py.APIClient(base_url=k.host, timeout=60)
    try:
        t0 = time.time()
        eid = api.exec_create("ex1", ["/nonexist"])["Id"]
        with pytest.raises(docker_py.errors.APIError) as err:
            api.exec_start(eid, detach=True)
        assert err.value.response.status_code == 400
        assert "/nonexist" in str(err.value)
        doc = api.exec_inspect(eid)
        assert doc["ExitCode"] == 126 and doc["Running"] is False
        assert inspect(k, "ex1")["ExecIDs"] is None
        # dockerd: created and started, never died
        assert actions(history(k, t0)) == ["container exec_create: /nonexist ",
                                           "container exec_start: /nonexist "]
    finally:
        api.close()


def test_docker_py_exec_run_reads_the_exit_code(ketchd: Ketchd) -> None:  # noqa: F811
    docker_py = pytest.importorskip("docker")
    k = ketchd
    client = docker_py.DockerClient(base_url=k.host, timeout=60)
    try:
        ctr = client.containers.run("busybox", ["sleep", "100"], detach=True,
                                    network_mode="none", name="ex1")
        t0 = time.time()
        for code in range(5):
            res = ctr.exec_run(["sh", "-c", f"echo {code}; exit {code}"])
            assert res.exit_code == code and res.output == f"{code}\n".encode()
        dies = history(k, t0, "event=exec_die")
        assert [e["Actor"]["Attributes"]["exitCode"] for e in dies] == ["0", "1", "2", "3",
                                                                       "4"]
        # Every record went from the supervisor once its exit was read.
        wait_for(lambda: supervisor_execs(k).get(ctr.id) == [], 10)
        ctr.remove(force=True)
    finally:
        client.close()


def test_health_probes_log_exec_events_and_leave_no_records(ketchd: Ketchd  # noqa: F811
                                                            ) -> None:
    k = ketchd
    t0 = time.time()
    cid = ok(docker(k, "run", "-d", *NONE, "--name", "hc1", "--health-cmd", "exit 0",
                    "--health-interval", "1s", "busybox", "sleep", "100")).strip()
    wait_for(lambda: inspect(k, "hc1")["State"]["Health"]["Status"] == "healthy", 15)
    for _ in range(10):
        ok(docker(k, "exec", "hc1", "true"))
    time.sleep(2.5)     # probes meanwhile
    evs = history(k, t0)
    probe_ids = {e["Actor"]["Attributes"]["execID"] for e in evs
                 if e["Action"] == "exec_create: /bin/sh -c exit 0"}
    probe = [e for e in evs if e["Actor"]["Attributes"].get("execID") in probe_ids]
    # dockerd: the probe is an exec of the container's shell, with its events, then
    # the status change.
    assert actions(probe[:3]) == ["container exec_create: /bin/sh -c exit 0",
                                  "container exec_start: /bin/sh -c exit 0",
                                  "container exec_die"]
    assert probe[2]["Actor"]["Attributes"] == {
        "execID": probe[0]["Actor"]["Attributes"]["execID"], "exitCode": "0",
        "image": "busybox", "name": "hc1"}
    assert "container health_status: healthy" in actions(evs)
    assert len([e for e in probe if e["Action"] == "exec_die"]) >= 3
    # No record piles up, neither of probes nor of user execs (a probe may be running).
    assert len(supervisor_execs(k)[cid]) <= 1
    ok(docker(k, "rm", "-f", "hc1"))


def test_exec_records_through_a_ketchd_restart(ketchd: Ketchd) -> None:  # noqa: F811
    k = ketchd
    cid = ok(docker(k, "run", "-d", *NONE, "--name", "ex1", "busybox", "sleep", "100")).strip()
    ok(docker(k, "exec", "-d", "ex1", "sleep", "1.5"))
    assert len(inspect(k, "ex1")["ExecIDs"]) == 1
    os.kill(k.proc.pid, signal.SIGKILL)
    k.proc.wait()
    time.sleep(2)       # the exec ends while no daemon runs
    with open(k.dir / "ketchd.log", "ab") as log:
        k.proc = subprocess.Popen(k.args(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    wait_for(lambda: docker(k, "version").returncode == 0, 20)
    # Execs do not outlive their daemon (as dockerd's): no stale ExecIDs, and the
    # supervisor forgot the exec whose waiter went with the old daemon.
    assert inspect(k, "ex1")["ExecIDs"] is None
    assert supervisor_execs(k)[cid] == []
    t0 = time.time()
    assert docker(k, "exec", "ex1", "sh", "-c", "exit 7").returncode == 7
    assert [e["Actor"]["Attributes"].get("exitCode") for e in history(k, t0)] == \
        [None, None, "7"]
    wait_for(lambda: supervisor_execs(k)[cid] == [], 10)
    ok(docker(k, "rm", "-f", "ex1"))


# --- network events -----------------------------------------------------------------------


def _network_event(e: dict[str, Any], action: str, cid: str, name: str = "bridge",
                   driver: str = "bridge") -> str:
    """Checks the shape dockerd sends; returns the network's ID."""
    assert e["Type"] == "network" and e["Action"] == action
    assert set(e) == {"Type", "Action", "Actor", "scope", "time", "timeNano"}  # no status
    assert e["Actor"]["Attributes"] == {"container": cid, "name": name, "type": driver}
    assert HEX64.fullmatch(e["Actor"]["ID"])
    return str(e["Actor"]["ID"])


def test_network_events_on_the_default_bridge(ketchd: Ketchd) -> None:  # noqa: F811
    k = ketchd
    t0 = time.time()
    live = docker_bg(k, "events", "--filter", "type=network", "--format", "{{json .}}")
    try:
        time.sleep(1)   # subscribed before the containers run
        cid = ok(docker(k, "run", "-d", "--name", "br1", "busybox", "sleep", "100")).strip()
        running_net_id = json.loads(ok(docker(
            k, "inspect", "--format", "{{json .NetworkSettings.Networks.bridge.NetworkID}}",
            "br1")))
        ok(docker(k, "exec", "br1", "true"))
        ok(docker(k, "stop", "-t", "1", "br1"))
        ok(docker(k, "rm", "br1"))
        ok(docker(k, "run", "--rm", "--name", "rm1", "busybox", "true"))
        # the none network's connect and disconnect (driver null), as dockerd's
        ok(docker(k, "run", "--rm", *NONE, "--name", "none1", "busybox", "true"))
        time.sleep(0.5)
    finally:
        out, err = stop_bg(live)
    evs = history(k, t0)
    names = {e["Actor"]["ID"]: e["Actor"]["Attributes"].get("name") for e in evs
             if e["Type"] == "container"}
    rid = next(i for i, n in names.items() if n == "rm1")
    seq = [(a, e["Actor"]["Attributes"].get("container") or e["Actor"]["ID"])
           for a, e in zip(actions(evs), evs, strict=True)
           if not a.startswith("container exec_") and a != "container kill"]
    # dockerd 20.10's order: connect before start, disconnect after die.
    b = [a for a, who in seq if who == cid]
    assert b[:3] == ["container create", "network connect", "container start"]
    assert b.index("container die") + 1 == b.index("network disconnect")
    # docker stop -t 1 of a sleep (pid 1 ignores TERM): dockerd's kill 15, kill 9, die,
    # disconnect, stop.
    stop_seq = [(e["Action"], e["Actor"]["Attributes"].get("signal")) for e in evs
                if (e["Actor"]["Attributes"].get("container") or e["Actor"]["ID"]) == cid
                and e["Action"] in ("kill", "die", "disconnect", "stop")]
    assert stop_seq == [("kill", "15"), ("kill", "9"), ("die", None), ("disconnect", None),
                        ("stop", None)], stop_seq
    assert b[-1] == "container destroy" and b.count("network disconnect") == 1
    assert [a for a, who in seq if who == rid] == [     # attached: dockerd's attach first
        "container create", "container attach", "network connect", "container start",
        "container die", "network disconnect", "container destroy"]
    on_bridge = [e for e in evs if e["Type"] == "network"
                 and e["Actor"]["Attributes"]["name"] == "bridge"]
    net = {_network_event(e, e["Action"], e["Actor"]["Attributes"]["container"])
           for e in on_bridge}
    assert net == {running_net_id}      # one network, one ID, the one inspect shows
    assert len(on_bridge) == 4
    nid = next(i for i, n in names.items() if n == "none1")
    on_none = [e for e in evs if e["Type"] == "network" and e not in on_bridge]
    assert [_network_event(e, e["Action"], nid, "none", "null") and e["Action"]
            for e in on_none] == ["connect", "disconnect"]

    # The live stream with type=network saw exactly those.
    lines = [json.loads(x) for x in out.splitlines()]
    assert [(e["Action"], e["Actor"]["Attributes"]["container"]) for e in lines] == [
        ("connect", cid), ("disconnect", cid), ("connect", rid), ("disconnect", rid),
        ("connect", nid), ("disconnect", nid)], err


def test_force_remove_disconnects_once(ketchd: Ketchd) -> None:  # noqa: F811
    k = ketchd
    t0 = time.time()
    ids = [ok(docker(k, "run", "-d", "--name", f"fr{i}", "busybox", "sleep", "100")).strip()
           for i in range(3)]
    for i in range(3):
        ok(docker(k, "rm", "-f", f"fr{i}"))
    time.sleep(0.5)     # the exit's bookkeeping may end after rm answered
    evs = history(k, t0)
    for cid in ids:
        mine = [a for a, e in zip(actions(evs), evs, strict=True)
                if cid in (e["Actor"]["ID"], e["Actor"]["Attributes"].get("container"))]
        assert mine.count("network connect") == mine.count("network disconnect") == 1, mine
        assert mine.index("container die") + 1 == mine.index("network disconnect"), mine


def test_filters_and_replay_over_exec_and_network_events(ketchd: Ketchd  # noqa: F811
                                                         ) -> None:
    k = ketchd
    t0 = time.time()
    cid = ok(docker(k, "run", "-d", "--name", "web", "busybox", "sleep", "100")).strip()
    assert docker(k, "exec", "web", "sh", "-c", "exit 2").returncode == 2
    ok(docker(k, "stop", "-t", "0", "web"))
    ok(docker(k, "rm", "web"))
    t1 = time.time()
    time.sleep(1.1)
    ok(docker(k, "run", "--rm", "busybox", "true"))    # after --until

    def seen(*filters: str, until: float = t1) -> list[str]:
        args = ["events", "--since", f"{t0:.9f}", "--until", f"{until:.9f}"]
        for f in filters:
            args += ["--filter", f]
        return ok(docker(k, *args, "--format", "{{.Type}} {{.Action}}")).splitlines()

    assert seen("type=network") == ["network connect", "network disconnect"]
    assert seen("event=exec_die") == ["container exec_die"]
    assert seen("event=exec_create", "event=exec_start") == [
        "container exec_create: sh -c exit 2", "container exec_start: sh -c exit 2"]
    assert seen("event=connect", "event=disconnect") == ["network connect",
                                                         "network disconnect"]
    # container= matches the actor's ID or name: the container's own events only,
    # not the network's (their actor is the network)...
    by_name = seen("container=web")
    assert by_name == seen(f"container={cid[:12]}")
    assert "network connect" not in by_name and "container exec_die" in by_name
    assert by_name[0] == "container create" and by_name[-1] == "container destroy"
    # ... while network=bridge and container=bridge both match the network's events,
    # as dockerd's filter does not look at the type.
    assert seen("network=bridge") == ["network connect", "network disconnect"]
    assert seen("container=bridge") == ["network connect", "network disconnect"]
    assert seen("type=network", "event=disconnect") == ["network disconnect"]
    assert seen("type=container", "event=disconnect") == []
    # Everything in the window, nothing after --until.
    assert seen(until=time.time()).count("network connect") == 2
    assert seen().count("network connect") == 1

