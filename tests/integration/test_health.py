"""Healthchecks judged by the docker CLI against a private ketchd: starting, unhealthy
after the retries, healthy once the probe passes, ps's "(healthy)", the probe's
output in the log, a probe killed at its timeout, and --no-healthcheck."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest
from tests.integration.test_daemon_containers import NONE, ok, wait_for
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    DOCKER,
    Ketchd,
    docker,
    start_ketchd,
)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]


@pytest.fixture
def ketchd(loaded_ketchd: Ketchd) -> Ketchd:
    """A private ketchd with busybox loaded (tests/integration/conftest.py)."""
    return loaded_ketchd


def api(k: Ketchd, method: str, path: str, body: Any = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("localhost", timeout=60)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(str(k.sock))
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def health(k: Ketchd, name: str) -> Any:
    return json.loads(ok(docker(k, "inspect", "-f", "{{json .State.Health}}", name)))


def status(k: Ketchd, name: str) -> str:
    return ok(docker(k, "ps", "--filter", f"name={name}", "--format", "{{.Status}}")).strip()


def processes(k: Ketchd, name: str) -> str:
    return ok(docker(k, "exec", name, "ps", "-o", "args"))


def test_starting_unhealthy_then_healthy(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "h1",
              "--health-cmd", "echo checking; test -f /tmp/ok", "--health-interval", "1s",
              "--health-retries", "2", "busybox", "sleep", "1000"))
    cfg = json.loads(ok(docker(k, "inspect", "-f", "{{json .Config.Healthcheck}}", "h1")))
    assert cfg == {"Test": ["CMD-SHELL", "echo checking; test -f /tmp/ok"],
                   "Interval": 1_000_000_000, "Retries": 2}
    h = health(k, "h1")         # the first probe runs one interval after the start
    assert h == {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert status(k, "h1").endswith(" (health: starting)")

    wait_for(lambda: health(k, "h1")["Status"] == "unhealthy", timeout=20)
    h = health(k, "h1")
    assert h["FailingStreak"] >= 2
    for r in h["Log"]:
        assert r["ExitCode"] == 1 and r["Output"] == "checking\n"
        assert r["Start"] <= r["End"]
    assert status(k, "h1").endswith(" (unhealthy)")
    assert ok(docker(k, "ps", "--filter", "health=unhealthy", "--format", "{{.Names}}")) \
        == "h1\n"

    ok(docker(k, "exec", "h1", "touch", "/tmp/ok"))
    wait_for(lambda: health(k, "h1")["Status"] == "healthy", timeout=20)
    h = health(k, "h1")
    assert h["FailingStreak"] == 0
    assert h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "checking\n"
    assert status(k, "h1").endswith(" (healthy)")

    # The log keeps the last five results only.
    wait_for(lambda: len(health(k, "h1")["Log"]) == 5, timeout=20)
    n = len(health(k, "h1")["Log"])
    wait_for(lambda: health(k, "h1")["Log"][-1]["Start"] > h["Log"][-1]["Start"], timeout=20)
    assert n == 5 and len(health(k, "h1")["Log"]) == 5
    ok(docker(k, "rm", "-f", "h1"))


def test_timeout_kills_the_probe(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "h2",
              "--health-cmd", "echo started; sleep 77", "--health-interval", "4s",
              "--health-timeout", "1s", "--health-retries", "1",
              "busybox", "sleep", "1000"))
    wait_for(lambda: "sleep 77" in processes(k, "h2"), timeout=20)
    wait_for(lambda: health(k, "h2")["Status"] == "unhealthy", timeout=20)
    r = health(k, "h2")["Log"][0]
    assert r["ExitCode"] == -1
    assert r["Output"] == "Health check exceeded timeout (1s): started\n"
    # Killed, not left behind (the next probe is an interval away).
    assert "sleep 77" not in processes(k, "h2")
    ok(docker(k, "rm", "-f", "h2"))


def test_no_healthcheck(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "h3", "--no-healthcheck",
              "busybox", "sleep", "1000"))
    doc = json.loads(ok(docker(k, "inspect", "h3")))[0]
    assert doc["Config"]["Healthcheck"] == {"Test": ["NONE"]}
    assert "Health" not in doc["State"]
    assert status(k, "h3").startswith("Up ") and "(" not in status(k, "h3")
    out = docker(k, "run", "--rm", *NONE, "--no-healthcheck", "--health-cmd", "true",
                 "busybox", "true")
    assert out.returncode != 0 and "--no-healthcheck conflicts with --health-* options" \
        in out.stderr
    ok(docker(k, "rm", "-f", "h3"))


def test_stop_ends_probing(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "h4", "--health-cmd", "true",
              "--health-interval", "1s", "busybox", "sleep", "1000"))
    wait_for(lambda: health(k, "h4")["Status"] == "healthy", timeout=20)
    ok(docker(k, "stop", "-t", "0", "h4"))
    ok(docker(k, "start", "h4"))
    assert health(k, "h4")["Status"] == "starting"
    wait_for(lambda: health(k, "h4")["Status"] == "healthy", timeout=20)
    ok(docker(k, "rm", "-f", "h4"))


def test_image_healthcheck_merged_and_disabled(ketchd: Ketchd) -> None:
    k = ketchd
    ok(docker(k, "run", "-d", *NONE, "--name", "base", "busybox", "sleep", "1000"))
    # The healthcheck in POST /commit's config (the API's way; the CLI's
    # --change 'HEALTHCHECK ...' is the image service's business).
    body = {"Cmd": ["sleep", "1000"], "Healthcheck": {
        "Test": ["CMD-SHELL", "test -e /tmp/gone || exit 9"], "Interval": 1_000_000_000,
        "Retries": 1}}
    status_, reply = api(k, "POST", "/v1.45/commit?container=base&repo=hcimg", body)
    assert status_ == 201, reply
    ok(docker(k, "rm", "-f", "base"))
    img = json.loads(ok(docker(k, "image", "inspect", "-f", "{{json .Config.Healthcheck}}",
                               "hcimg")))
    assert img["Test"] == ["CMD-SHELL", "test -e /tmp/gone || exit 9"]
    ok(docker(k, "run", "-d", *NONE, "--name", "h6", "hcimg", "sleep", "1000"))
    wait_for(lambda: health(k, "h6")["Status"] == "unhealthy", timeout=20)
    assert health(k, "h6")["Log"][0]["ExitCode"] == 9
    # A flag changes one field, the image's others stay (moby's merge).
    ok(docker(k, "run", "-d", *NONE, "--name", "h7", "--health-retries", "5", "hcimg",
              "sleep", "1000"))
    cfg = json.loads(ok(docker(k, "inspect", "-f", "{{json .Config.Healthcheck}}", "h7")))
    assert cfg == {**img, "Retries": 5}
    ok(docker(k, "run", "-d", *NONE, "--name", "h8", "--no-healthcheck", "hcimg",
              "sleep", "1000"))
    doc = json.loads(ok(docker(k, "inspect", "h8")))[0]
    assert doc["Config"]["Healthcheck"]["Test"] == ["NONE"] and "Health" not in doc["State"]
    ok(docker(k, "rm", "-f", "h6", "h7", "h8"))
