import os

import pytest

from ketch.errors import InvalidArgument, InvalidTransition, NotFound
from ketch.runtime.state import (
    ContainerState,
    StateStore,
    Status,
    check_transition,
    pid_start_time,
    validate_id,
)


@pytest.mark.parametrize("status, verb, ok", [
    (Status.CREATED, "start", True), (Status.RUNNING, "start", False),
    (Status.STOPPED, "start", False), (Status.STOPPED, "kill", False),
    (Status.CREATED, "kill", True), (Status.PAUSED, "kill", True),
    (Status.RUNNING, "pause", True), (Status.PAUSED, "pause", False),
    (Status.PAUSED, "resume", True), (Status.RUNNING, "resume", False),
    (Status.PAUSED, "exec", False), (Status.RUNNING, "exec", True),
])
def test_transitions(status, verb, ok):
    if ok:
        check_transition(status, verb, "x")
    else:
        with pytest.raises(InvalidTransition):
            check_transition(status, verb, "x")


def test_messages_are_runcs():
    with pytest.raises(InvalidTransition, match="cannot start a container that has stopped"):
        check_transition(Status.STOPPED, "start", "x")
    with pytest.raises(InvalidTransition, match="container not running"):
        check_transition(Status.STOPPED, "kill", "x")


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a b", "x\n"])
def test_invalid_ids(bad):
    with pytest.raises(InvalidArgument):
        validate_id(bad)


def test_store_round_trip_and_status(tmp_path):
    store = StateStore(str(tmp_path))
    with pytest.raises(NotFound, match="container does not exist"):
        store.load("c1")
    os.mkdir(tmp_path / "c1")
    me = os.getpid()
    st = ContainerState(id="c1", init_pid=me, init_start_time=pid_start_time(me) or 0,
                        bundle="/b")
    store.save(st)
    assert store.load("c1") == st
    assert store.ids() == ["c1"]
    assert store.status(st) is Status.RUNNING
    (tmp_path / "c1" / "exec.fifo").write_text("")
    assert store.status(st) is Status.CREATED
    st.init_start_time += 1   # a recycled pid must not look alive
    assert store.status(st) is Status.STOPPED
