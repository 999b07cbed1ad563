"""The runtime as the engine uses it: in-process, stdio fds in, pid and pidfd out."""

from __future__ import annotations

import os
import select
import signal

import pytest

from ketch.errors import AlreadyExists, Conflict, NotFound
from ketch.runtime.container import CreateOptions, ExecOptions, Runtime
from ketch.runtime.spec import Process, User

pytestmark = pytest.mark.root


def read_all(fd: int) -> bytes:
    data = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return data
        data += chunk


def test_create_start_reap_delete(bundles, runc_root):
    b = bundles.make(["sh", "-c", "echo out; echo err >&2; exit 5"], container_id="lib")
    rt = Runtime(str(runc_root))
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    started = rt.create("lib", CreateOptions(bundle=str(b), stdio=(devnull, w_out, w_err)))
    os.close(w_out)
    os.close(w_err)
    os.close(devnull)
    assert started.direct_child and started.pidfd is not None
    assert rt.state("lib").status == "created"
    with pytest.raises(AlreadyExists):
        rt.create("lib", CreateOptions(bundle=str(b)))
    rt.start("lib")
    # The pidfd becomes readable when the process exits; the caller reaps it.
    assert select.select([started.pidfd], [], [], 10)[0]
    _, status = os.waitpid(started.pid, 0)
    assert os.WEXITSTATUS(status) == 5
    assert read_all(r_out) == b"out\n" and read_all(r_err) == b"err\n"
    assert rt.state("lib").status == "stopped"
    rt.delete("lib")
    with pytest.raises(NotFound):
        rt.state("lib")
    os.close(started.pidfd)


def test_exec_through_the_library(bundles, runc_root):
    b = bundles.make(["sleep", "100"], container_id="libx")
    rt = Runtime(str(runc_root))
    started = rt.create("libx", CreateOptions(bundle=str(b)))
    rt.start("libx")
    r, w = os.pipe()
    proc = Process(args=["sh", "-c", "id -u; cat /proc/1/cmdline"], env=["PATH=/bin"],
                   user=User(uid=1000, gid=1000))
    ex = rt.exec("libx", proc, ExecOptions(stdio=(None, w, w)))
    os.close(w)
    _, status = os.waitpid(ex.pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert read_all(r) == b"1000\nsleep\x00100\x00"
    with pytest.raises(Conflict, match="not stopped"):
        rt.delete("libx")
    rt.kill("libx", signal.SIGKILL)
    os.waitpid(started.pid, 0)
    rt.delete("libx")
