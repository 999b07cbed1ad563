"""The runtime keeps the states it loaded while their files are the ones it read."""

from __future__ import annotations

import os
import shutil

import pytest

from ketch.errors import NotFound
from ketch.runtime.container import Runtime
from ketch.runtime.state import ContainerState


def _state(cid: str, config: str = "{}") -> ContainerState:
    return ContainerState(id=cid, init_pid=1, init_start_time=1, bundle="/b",
                          cgroup_path=f"/x/{cid}", config_json=config)


def test_loaded_once_while_the_file_is_unchanged(tmp_path):
    rt = Runtime(str(tmp_path))
    os.makedirs(rt.store.dir("c1"))
    rt.store.save(_state("c1"))
    first = rt._load("c1")
    assert rt._load("c1") is first
    rt.store.save(_state("c1", '{"hooks": {"poststop": [{"path": "/bin/true"}]}}'))
    second = rt._load("c1")
    assert second is not first and second.config_json.startswith('{"hooks"')
    hooks = rt._hooks_of(second)
    assert hooks is not None and hooks.poststop[0].path == "/bin/true"
    assert rt._hooks_of(second) is hooks            # parsed once
    shutil.rmtree(rt.store.dir("c1"))
    with pytest.raises(NotFound):
        rt._load("c1")
    assert "c1" not in rt._states


def test_another_writer_is_seen(tmp_path):
    rt = Runtime(str(tmp_path))
    os.makedirs(rt.store.dir("c2"))
    rt.store.save(_state("c2"))
    assert rt._load("c2").init_pid == 1
    other = Runtime(str(tmp_path))                  # e.g. ketch-runc on the same root
    st = _state("c2")
    st.init_pid = 42
    other.store.save(st)
    assert rt._load("c2").init_pid == 42
