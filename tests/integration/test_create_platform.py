"""``create --platform``: this machine's platform runs; another is dockerd's "found but
does not match" (ketch pulls nothing to find the other one), through both CLIs."""

from __future__ import annotations

import os
import platform
import subprocess

import pytest
from tests.conftest import BIN
from tests.integration.test_daemon_system import DOCKER, Ketchd, docker

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")]

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
OTHER = "arm64" if ARCH != "arm64" else "amd64"


def test_platform(loaded_ketchd: Ketchd) -> None:
    k = loaded_ketchd
    out = docker(k, "run", "--rm", "--network", "none", "--platform", f"linux/{ARCH}",
                 "busybox", "echo", "same")
    assert (out.returncode, out.stdout) == (0, "same\n"), out.stderr
    want = (f"image with reference busybox was found but does not match the specified "
            f"platform: wanted linux/{OTHER}, actual: linux/{ARCH}")
    env = {**os.environ, "KETCH_HOST": k.host}
    ketch = subprocess.run([str(BIN / "ketch"), "create", "--network", "none", "--platform",
                            f"linux/{OTHER}", "busybox"], capture_output=True, text=True,
                           env=env, timeout=60)
    assert ketch.returncode == 1 and ketch.stderr == f"Error response from daemon: {want}\n"
    out = docker(k, "create", "--network", "none", "--platform", f"linux/{OTHER}", "busybox")
    assert out.returncode != 0 and "Unable to find image 'busybox:latest' locally" in out.stderr
    assert docker(k, "ps", "-aq").stdout == ""      # nothing was created
