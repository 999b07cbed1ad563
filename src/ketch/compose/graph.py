"""The services' ``depends_on`` graph, and a walk over it in parallel.

``up`` starts a service as soon as every service it depends on is done (created,
started, healthy: the step decides), so independent branches start side by side;
``down`` walks the other way, stopping dependents before what they depend on.
One thread per ready service, bounded, with the first failure stopping whatever
has not begun yet (what has begun finishes, so nothing is left half-done).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from ketch.compose.errors import ComposeError


class Graph:
    """Services and the services each depends on (only those in the graph)."""

    def __init__(self, deps: Mapping[str, Iterable[str]]) -> None:
        self.deps: dict[str, list[str]] = {s: sorted(d for d in set(ds) if d in deps)
                                           for s, ds in deps.items()}
        self.dependents: dict[str, list[str]] = {s: [] for s in self.deps}
        for s, ds in self.deps.items():
            for d in ds:
                self.dependents[d].append(s)
        self._check_cycles()

    def _check_cycles(self) -> None:
        # Depth-first with colours; the message names the loop as compose does.
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(s: str) -> None:
            state[s] = 1
            path.append(s)
            for d in self.deps[s]:
                if state.get(d) == 1:
                    loop = path[path.index(d):] + [d]
                    raise ComposeError("dependency cycle detected: " + " -> ".join(loop))
                if d not in state:
                    visit(d)
            path.pop()
            state[s] = 2

        for s in sorted(self.deps):
            if s not in state:
                visit(s)

    def order(self, *, reverse: bool = False) -> list[str]:
        """A topological order (dependencies first), ties by name."""
        out: list[str] = []
        edges = self.dependents if reverse else self.deps
        seen: set[str] = set()

        def visit(s: str) -> None:
            if s in seen:
                return
            seen.add(s)
            for d in edges[s]:
                visit(d)
            out.append(s)

        for s in sorted(self.deps):
            visit(s)
        return out

    def with_dependencies(self, names: Iterable[str]) -> set[str]:
        """The named services and, transitively, what they depend on."""
        return self._closure(names, self.deps)

    def with_dependents(self, names: Iterable[str]) -> set[str]:
        """The named services and, transitively, what depends on them."""
        return self._closure(names, self.dependents)

    def _closure(self, names: Iterable[str], edges: dict[str, list[str]]) -> set[str]:
        out: set[str] = set()
        todo = [n for n in names if n in self.deps]
        while todo:
            s = todo.pop()
            if s not in out:
                out.add(s)
                todo.extend(edges[s])
        return out

    def subgraph(self, names: Iterable[str]) -> Graph:
        keep = set(names)
        return Graph({s: [d for d in ds if d in keep] for s, ds in self.deps.items() if s in keep})

    def walk(self, step: Callable[[str], None], *, reverse: bool = False,
             workers: int = 8) -> None:
        """Run ``step(service)`` for every service once all it waits for are done:
        dependencies first, or dependents first with ``reverse``. The first error is
        raised after the steps already running have finished; nothing new starts."""
        waits = self.dependents if reverse else self.deps
        pending = {s: set(waits[s]) for s in self.deps}
        done: set[str] = set()
        errors: list[BaseException] = []
        lock = threading.Lock()
        if not pending:
            return
        limit = max(1, min(workers, len(pending)))
        with ThreadPoolExecutor(max_workers=limit) as pool:
            running: dict[Future[None], str] = {}

            def launch() -> None:
                # Only as many as there are free workers: a step queued in the pool would
                # still begin after a failure, and nothing new may start once one failed.
                for s in sorted(pending):
                    if len(running) >= limit:
                        return
                    if not pending[s] - done:
                        del pending[s]
                        running[pool.submit(step, s)] = s

            launch()
            while running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    s = running.pop(fut)
                    exc = fut.exception()
                    with lock:
                        if exc is not None:
                            errors.append(exc)
                        else:
                            done.add(s)
                if not errors:
                    launch()
        if errors:
            raise errors[0]
