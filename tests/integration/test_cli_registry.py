"""``ketch login|pull|push|logout`` and ``run --pull`` against a real ketchd and a registry.

The registry is Debian's Go registry (distribution 2.8) on loopback with
htpasswd auth. Each step is also done with the docker CLI 28.2.2 against the
same ketchd, and the outputs compared: the same lines on a pipe, the same
config.json entry, the same errors. The two CLIs share one image store, so the
steps are ordered so that both meet the same state (the same tag removed
before each pull, the layer already in the registry before each compared push).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import BIN
from tests.integration.registries import GO_REGISTRY, PASSWORD, USER, Registry
from tests.integration.test_daemon_system import DOCKER, Ketchd

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed"),
    pytest.mark.skipif(GO_REGISTRY is None, reason="docker-registry is not installed"),
]


@pytest.fixture
def registry(start_registry: Callable[..., Registry]) -> str:
    """docker-registry with htpasswd (bcrypt) auth on 127.0.0.1; its host:port."""
    return start_registry("go", auth=True).host


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("DOCKER_", "KETCH_"))}


def ketch(k: Ketchd, cfg: Path, *args: str, input: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "ketch"), "-H", k.host, "--config", str(cfg), *args],
                          input=input, capture_output=True, text=True, env=_env(), timeout=120)


def docker(k: Ketchd, cfg: Path, *args: str, input: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    env = {**_env(), "DOCKER_HOST": k.host, "DOCKER_CONFIG": str(cfg)}
    return subprocess.run([DOCKER, *args], input=input, capture_output=True, text=True,
                          env=env, timeout=120)


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"{out.args}: {out.stderr}{out.stdout}"
    return out.stdout


def test_login_push_pull_logout_as_docker(loaded_ketchd: Ketchd, registry: str,
                                          tmp_path: Path) -> None:
    k = loaded_ketchd
    kcfg, dcfg = tmp_path / "ketch-cfg", tmp_path / "docker-cfg"
    name = f"{registry}/me/box:1"

    # without credentials the registry refuses, in the same words for both
    ok(ketch(k, kcfg, "tag", "busybox:latest", name))
    kp, dp = ketch(k, kcfg, "push", name), docker(k, dcfg, "push", name)
    assert kp.returncode == dp.returncode == 1
    assert (kp.stdout, kp.stderr) == (dp.stdout, dp.stderr)

    # login: the same lines, the same config.json
    kl = ketch(k, kcfg, "login", "-u", USER, "--password-stdin", registry, input=PASSWORD + "\n")
    dl = docker(k, dcfg, "login", "-u", USER, "--password-stdin", registry, input=PASSWORD + "\n")
    assert (kl.returncode, kl.stdout) == (dl.returncode, dl.stdout) == (0, "Login Succeeded\n")
    assert kl.stderr == dl.stderr.replace(str(dcfg), str(kcfg))
    kjson = (kcfg / "config.json").read_text()
    assert kjson == (dcfg / "config.json").read_text()
    assert json.loads(kjson) == {"auths": {registry: {"auth": _b64(f"{USER}:{PASSWORD}")}}}
    assert (kcfg / "config.json").stat().st_mode & 0o777 == 0o600
    # wrong password: the daemon's refusal, nothing stored
    bad = ketch(k, tmp_path / "bad-cfg", "login", "-u", USER, "--password-stdin", registry,
                input="wrong")
    dbad = docker(k, tmp_path / "dbad-cfg", "login", "-u", USER, "--password-stdin", registry,
                  input="wrong")
    assert (bad.returncode, bad.stderr) == (dbad.returncode, dbad.stderr)
    assert bad.returncode == 1 and bad.stderr.startswith("Error response from daemon: ")
    assert not (tmp_path / "bad-cfg" / "config.json").exists()

    # push: the first one uploads; then both CLIs find the layer there and print the same
    out = ok(ketch(k, kcfg, "push", name))
    assert out.startswith(f"The push refers to repository [{registry}/me/box]\n")
    assert ": Pushed\n" in out
    digest = out.splitlines()[-1].split("digest: ")[1].split()[0]
    assert digest.startswith("sha256:")
    kp, dp = ketch(k, kcfg, "push", name), docker(k, dcfg, "push", name)
    assert ok(kp) == ok(dp)
    assert "Layer already exists" in kp.stdout
    assert ok(ketch(k, kcfg, "push", "-q", name)) == f"{name}\n"

    # pull: the same lines, from nothing (every name of the image removed before each)
    image_id = json.loads(ok(ketch(k, kcfg, "image", "inspect", name)))[0]["Id"]
    ok(ketch(k, kcfg, "rmi", "-f", image_id))
    kp = ketch(k, kcfg, "pull", name)
    ok(ketch(k, kcfg, "rmi", "-f", image_id))
    dp = docker(k, dcfg, "pull", name)
    assert ok(kp) == ok(dp)
    assert ": Pull complete\n" in kp.stdout
    assert kp.stdout.endswith(f"Digest: {digest}\nStatus: Downloaded newer image for {name}\n"
                              f"{name}\n")
    assert ok(ketch(k, kcfg, "pull", "-q", name)) == f"{name}\n"
    kp, dp = ketch(k, kcfg, "pull", f"{registry}/me/nosuch"), \
        docker(k, dcfg, "pull", f"{registry}/me/nosuch")
    assert kp.returncode == dp.returncode == 1
    assert (kp.stdout, kp.stderr) == (dp.stdout, dp.stderr)

    # on a terminal: the layer lines, rewritten in place, end as the same screen
    ok(ketch(k, kcfg, "rmi", "-f", image_id))
    raw = _in_pty([str(BIN / "ketch"), "-H", k.host, "--config", str(kcfg), "pull", name])
    assert "\x1b[1A\x1b[2K\r" in raw
    ok(ketch(k, kcfg, "rmi", "-f", image_id))
    assert DOCKER is not None
    draw = _in_pty(["env", f"DOCKER_HOST={k.host}", f"DOCKER_CONFIG={dcfg}", DOCKER, "pull",
                    name])
    assert _screen(raw) == _screen(draw)
    assert ": Pull complete" in _screen(raw)[1] and _screen(raw)[-1] == name
    ok(ketch(k, kcfg, "tag", name, "busybox:latest"))

    # docker's credentials serve ketch: its config dir, ketch's CLI
    ok(ketch(k, kcfg, "rmi", name))
    assert ok(ketch(k, dcfg, "pull", "-q", name)) == f"{name}\n"

    # run pulls what is missing (progress on stderr, the container's output on stdout)
    ok(ketch(k, kcfg, "rmi", name))
    run = ketch(k, kcfg, "run", "--rm", "--network", "none", name, "echo", "pulled")
    assert ok(run) == "pulled\n"
    assert run.stderr.startswith(f"Unable to find image '{name}' locally\n")
    assert run.stderr.endswith(f"Status: Downloaded newer image for {name}\n")
    never = ketch(k, kcfg, "create", "--pull", "never", f"{registry}/me/box:nosuch")
    assert (never.returncode, never.stderr) == (
        1, f"Error response from daemon: No such image: {registry}/me/box:nosuch\n")

    # the registry's descriptor through the daemon, with the stored credentials
    from ketch.cli.credentials import ConfigFile, auth_for_domain
    from ketch.client import Client

    auth = auth_for_domain(ConfigFile.load(str(kcfg)), registry).encode()
    desc = Client(k.host).distribution_inspect(name, auth=auth)
    assert desc["Descriptor"]["digest"] == digest
    assert {"os": "linux"}.items() <= desc["Platforms"][0].items()

    # every tag: push -a and pull -a, the same lines from both CLIs
    repo = f"{registry}/me/box"
    ok(ketch(k, kcfg, "tag", name, f"{repo}:2"))
    out = ok(ketch(k, kcfg, "push", "-a", repo))
    assert "\n1: digest: " in out and "\n2: digest: " in out
    assert ok(ketch(k, kcfg, "push", "-a", repo)) == ok(docker(k, dcfg, "push", "-a", repo))
    ok(ketch(k, kcfg, "rmi", "-f", image_id))
    kp = ketch(k, kcfg, "pull", "-a", repo)
    ok(ketch(k, kcfg, "rmi", "-f", image_id))
    dp = docker(k, dcfg, "pull", "-a", repo)
    assert ok(kp) == ok(dp)
    assert kp.stdout.endswith(f"Status: Downloaded newer image for {repo}\n{repo}\n")
    ok(ketch(k, kcfg, "tag", name, "busybox:latest"))

    # search: ketchd knows no index; its refusal printed as docker prints it
    ks, ds = ketch(k, kcfg, "search", "busybox"), docker(k, dcfg, "search", "busybox")
    assert ks.returncode == ds.returncode == 1
    assert (ks.stdout, ks.stderr) == (ds.stdout, ds.stderr)
    assert ks.stderr.startswith("Error response from daemon: ")

    # logout: the same line, the entry gone, and the registry refuses again
    klo, dlo = ketch(k, kcfg, "logout", registry), docker(k, dcfg, "logout", registry)
    assert ok(klo) == ok(dlo) == f"Removing login credentials for {registry}\n"
    assert (kcfg / "config.json").read_text() == (dcfg / "config.json").read_text()
    assert json.loads((kcfg / "config.json").read_text()) == {"auths": {}}
    ok(ketch(k, kcfg, "rmi", name))
    kp, dp = ketch(k, kcfg, "pull", name), docker(k, dcfg, "pull", name)
    assert kp.returncode == dp.returncode == 1
    assert (kp.stdout, kp.stderr) == (dp.stdout, dp.stderr)


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _in_pty(argv: list[str]) -> str:
    """What ``argv`` writes on a terminal (``script`` gives it one)."""
    import shlex

    out = subprocess.run(["script", "-qec", shlex.join(argv), "/dev/null"], capture_output=True,
                         env=_env(), timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.decode()      # bytes: text mode would turn every CR into a LF


def _screen(text: str) -> list[str]:
    """The lines a terminal shows once ``text`` is drawn: CR, LF, cursor up/down (ESC[nA,
    ESC[nB) and erase line (ESC[2K) applied, as docker's progress uses them."""
    import re

    lines: list[str] = [""]
    row = col = 0
    for tok in re.findall(r"\x1b\[(\d*)([A-Za-z])|(\r)|(\n)|([^\x1b\r\n]+)", text):
        n, op, cr, lf, chars = tok
        if cr:
            col = 0
        elif lf:
            row += 1
            col = 0
        elif op == "A":
            row = max(0, row - int(n or 1))
        elif op == "B":
            row += int(n or 1)
        elif op == "K":
            while len(lines) <= row:
                lines.append("")
            lines[row] = ""
        elif chars:
            while len(lines) <= row:
                lines.append("")
            cur = lines[row].ljust(col)
            lines[row] = cur[:col] + chars + cur[col + len(chars):]
            col += len(chars)
        while len(lines) <= row:
            lines.append("")
    return [line.rstrip() for line in lines if line.strip()]
