"""compose graph: topological orders, cycles, selections and the parallel walk."""

from __future__ import annotations

import threading
import time

import pytest

from ketch.compose.errors import ComposeError
from ketch.compose.graph import Graph

# web -> api -> (db, cache); worker -> db
APP = {"web": ["api"], "api": ["db", "cache"], "worker": ["db"], "db": [], "cache": []}


def before(order: list[str], first: str, second: str) -> bool:
    return order.index(first) < order.index(second)


# --- orders --------------------------------------------------------------------------------------

def test_order_puts_dependencies_first_ties_by_name() -> None:
    order = Graph(APP).order()
    assert sorted(order) == sorted(APP)
    for s, deps in APP.items():
        for d in deps:
            assert before(order, d, s), (d, s, order)
    # ties broken by name: nothing depends on anything here
    assert Graph({"b": [], "c": [], "a": []}).order() == ["a", "b", "c"]
    assert Graph({"web": ["db", "cache"], "db": [], "cache": []}).order() == \
        ["cache", "db", "web"]


def test_reverse_order_puts_dependents_first() -> None:
    order = Graph(APP).order(reverse=True)
    assert sorted(order) == sorted(APP)
    for s, deps in APP.items():
        for d in deps:
            assert before(order, s, d), (s, d, order)
    assert Graph({"web": ["db"], "db": []}).order(reverse=True) == ["web", "db"]


def test_unknown_and_repeated_dependencies_are_dropped() -> None:
    g = Graph({"web": ["db", "db", "elsewhere"], "db": []})
    assert g.deps == {"web": ["db"], "db": []}
    assert g.dependents == {"web": [], "db": ["web"]}
    assert g.order() == ["db", "web"]


# --- cycles --------------------------------------------------------------------------------------

def test_two_service_cycle_message() -> None:
    with pytest.raises(ComposeError) as info:
        Graph({"a": ["b"], "b": ["a"]})
    assert str(info.value) == "dependency cycle detected: a -> b -> a"


def test_longer_cycle_message_names_the_loop_only() -> None:
    with pytest.raises(ComposeError) as info:
        Graph({"a": ["b"], "b": ["c"], "c": ["d"], "d": ["b"], "e": ["a"]})
    assert str(info.value) == "dependency cycle detected: b -> c -> d -> b"


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(ComposeError, match=r"^dependency cycle detected: a -> a$"):
        Graph({"a": ["a"]})


def test_diamond_is_not_a_cycle() -> None:
    g = Graph({"top": ["left", "right"], "left": ["base"], "right": ["base"], "base": []})
    assert g.order() == ["base", "left", "right", "top"]


# --- selections ----------------------------------------------------------------------------------

def test_with_dependencies_is_transitive() -> None:
    g = Graph(APP)
    assert g.with_dependencies(["web"]) == {"web", "api", "db", "cache"}
    assert g.with_dependencies(["worker"]) == {"worker", "db"}
    assert g.with_dependencies(["db"]) == {"db"}
    assert g.with_dependencies(["nosuch"]) == set()
    assert g.with_dependencies([]) == set()


def test_with_dependents_is_transitive() -> None:
    g = Graph(APP)
    assert g.with_dependents(["db"]) == {"db", "api", "web", "worker"}
    assert g.with_dependents(["cache"]) == {"cache", "api", "web"}
    assert g.with_dependents(["web"]) == {"web"}


def test_subgraph_keeps_only_edges_inside() -> None:
    sub = Graph(APP).subgraph(["web", "api", "db"])
    assert sub.deps == {"web": ["api"], "api": ["db"], "db": []}
    assert sub.order() == ["db", "api", "web"]


# --- walk ----------------------------------------------------------------------------------------

class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def __call__(self, s: str) -> None:
        with self.lock:
            self.events.append(("start", s))
        time.sleep(self.delay)
        with self.lock:
            self.events.append(("end", s))

    def index(self, kind: str, s: str) -> int:
        return self.events.index((kind, s))

    def started(self) -> list[str]:
        return [s for k, s in self.events if k == "start"]


def test_walk_runs_each_service_once_after_its_dependencies() -> None:
    rec = Recorder(delay=0.01)
    Graph(APP).walk(rec)
    assert sorted(rec.started()) == sorted(APP)
    for s, deps in APP.items():
        for d in deps:
            assert rec.index("end", d) < rec.index("start", s), (d, s, rec.events)


def test_walk_reverse_runs_dependents_first() -> None:
    rec = Recorder(delay=0.01)
    Graph(APP).walk(rec, reverse=True)
    assert sorted(rec.started()) == sorted(APP)
    for s, deps in APP.items():
        for d in deps:
            assert rec.index("end", s) < rec.index("start", d), (s, d, rec.events)


def test_walk_runs_independent_services_in_parallel() -> None:
    # Three independent services meet at a barrier: only possible if all three run at
    # once (a sequential walk would time the barrier out and raise BrokenBarrierError).
    barrier = threading.Barrier(3, timeout=5)
    met: list[str] = []

    def step(s: str) -> None:
        barrier.wait()
        met.append(s)

    Graph({"a": [], "b": [], "c": []}).walk(step)
    assert sorted(met) == ["a", "b", "c"]


def test_walk_starts_a_dependent_while_an_unrelated_branch_still_runs() -> None:
    # slow has nothing to do with fast -> after: "after" must not wait for "slow".
    release = threading.Event()
    seen: list[str] = []

    def step(s: str) -> None:
        if s == "slow":
            assert release.wait(5), "after never ran while slow was running"
        if s == "after":
            release.set()
        seen.append(s)

    Graph({"slow": [], "fast": [], "after": ["fast"]}).walk(step)
    assert seen.index("after") < seen.index("slow")


def test_walk_with_one_worker_is_sequential_in_order() -> None:
    rec = Recorder()
    Graph(APP).walk(rec, workers=1)
    starts = rec.started()
    # one at a time: every start is followed by its own end
    assert rec.events == [e for s in starts for e in (("start", s), ("end", s))]
    # whenever the worker is free: the first ready one by name
    assert starts == ["cache", "db", "api", "web", "worker"]


def test_walk_of_an_empty_graph_does_nothing() -> None:
    Graph({}).walk(lambda s: pytest.fail("called"))


def test_first_error_stops_new_starts_and_waits_for_running_ones() -> None:
    # a fails at once; b (independent) is running and finishes later; c waits for a and
    # must never start; the error comes out only after b has finished.
    a_failing = threading.Event()
    b_done = threading.Event()
    started: list[str] = []

    def step(s: str) -> None:
        started.append(s)
        if s == "a":
            a_failing.set()
            raise ComposeError("a broke")
        if s == "b":
            assert a_failing.wait(5)
            time.sleep(0.2)
            b_done.set()

    with pytest.raises(ComposeError, match="a broke"):
        Graph({"a": [], "b": [], "c": ["a"], "d": ["b"]}).walk(step)
    assert b_done.is_set()
    assert "c" not in started
    assert "d" not in started        # b finished after the failure: its dependents stay put


def test_first_error_is_raised_when_several_fail() -> None:
    def step(s: str) -> None:
        if s == "a":
            raise ValueError("first")
        time.sleep(0.2)
        raise KeyError("second")

    with pytest.raises(ValueError, match="first"):
        Graph({"a": [], "b": []}).walk(step)


def test_error_with_bounded_workers_starts_nothing_queued() -> None:
    # With one worker, b and c are ready but must wait for a slot; a's failure must
    # keep them from ever starting (nothing new starts after the first error).
    started: list[str] = []

    def step(s: str) -> None:
        started.append(s)
        if s == "a":
            raise ComposeError("a broke")

    with pytest.raises(ComposeError):
        Graph({"a": [], "b": [], "c": []}).walk(step, workers=1)
    assert started == ["a"]


def test_walk_bounded_workers_never_exceed_the_bound() -> None:
    lock = threading.Lock()
    now = 0
    peak = 0

    def step(s: str) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.02)
        with lock:
            now -= 1

    Graph({str(i): [] for i in range(8)}).walk(step, workers=2)
    assert peak == 2
