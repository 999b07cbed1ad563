"""Runs a Dockerfile plan: stages as a graph, steps through the cache, images out.

Each step's cache key is a digest of its parent image, the instruction after
variable expansion, the build args it can see, and for COPY/ADD the content
and metadata of exactly the files it selects; a hit reuses the image the step
made before. Stages the target does not need are skipped; independent stages
run in parallel threads. History and ``created_by`` follow BuildKit's forms
(``RUN /bin/sh -c make # buildkit``), not the legacy builder's ``#(nop)``.
"""

from __future__ import annotations

import contextlib
import copy as _copy
import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from ketch.build import copy as filecopy
from ketch.build.backend import Backend, CacheRecord, Mount, RunSpec
from ketch.build.dockerfile import expand, parse
from ketch.build.dockerignore import Matcher
from ketch.build.instructions import (
    PREDEFINED_ARGS,
    Command,
    Plan,
    Stage,
    arg_pairs,
    plan,
    triples,
)
from ketch.build.request import (
    BuildInfo,
    BuildOptions,
    BuildResult,
    BuildWarning,
    Emit,
    Event,
    StepCached,
    StepDone,
    StepMiss,
    StepStarted,
)
from ketch.errors import InvalidArgument, KetchError, NotFound, NotSupported
from ketch.gotext import go_duration
from ketch.linux.securejoin import secure_join

DEFAULT_SHELL = ["/bin/sh", "-c"]
HISTORY_COMMENT = "buildkit.dockerfile.v0"
# The image config's record of each history entry's cache key (see _step_key).
CACHE_FIELD = "ketch.build.cache.v1"
_KEY_VERSION = "ketch-build-v1"


class StepFailed(KetchError):
    """A RUN returned non-zero: dockerd's message, and the exit code for errorDetail."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Cancelled(KetchError):
    pass


@dataclass
class Context:
    """Where COPY reads: the build context (with digests made while it was received)
    and the named contexts of ``--build-context``."""

    root: str
    digests: dict[str, str] = field(default_factory=dict)
    named: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    # A context read in place (ketch's CLI on the daemon's machine): its
    # .dockerignore, which hides files from COPY as a tar would have left them out.
    ignore: Matcher | None = None


@dataclass
class _State:
    """A stage's position: the image so far (None before any image: FROM scratch)."""

    image: str | None
    doc: dict[str, Any]
    args: dict[str, str]            # ARGs declared in the stage with a value
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    ran_in: str = ""                # the container of the RUN that made ``image``
    rebuilt: bool = False           # the step that made ``image`` missed the cache


def _digest(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _env_map(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    """Set ``key``: in place when it is there (PATH keeps its position), else appended."""
    entry = f"{key}={value}"
    out = [entry if e.partition("=")[0] == key else e for e in env]
    if entry not in out:
        out.append(entry)
    return out


def _scratch_doc(platform: tuple[str, str, str]) -> dict[str, Any]:
    os_, arch, variant = platform
    doc: dict[str, Any] = {"architecture": arch, "os": os_, "config": {},
                           "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    if variant:
        doc["variant"] = variant
    return doc


class Builder:
    """One build: the plan, the options, the backend and the progress sink."""

    def __init__(self, df_text: str | bytes, opts: BuildOptions, backend: Backend,
                 ctx: Context, emit: Emit, cancel: threading.Event | None = None,
                 host_platform: tuple[str, str, str] = ("linux", "amd64", "")) -> None:
        self.df = parse(df_text)
        self.plan: Plan = plan(self.df)
        self.opts = opts
        self.backend = backend
        self.ctx = ctx
        self._emit = emit
        self._tl = threading.local()  # per stage thread: did the step miss? is it a trigger?
        self.cancel = cancel or threading.Event()
        self.platform = host_platform
        self._lock = threading.Lock()
        self._used_args: set[str] = set()
        self._stage_futures: dict[int, Future[_State]] = {}
        self._cache_from: list[tuple[str, dict[str, Any]]] | None = None

        self._total = len(self.df.instructions)
        self._numbers = self._step_numbers()
        epoch_arg = opts.build_args.get("SOURCE_DATE_EPOCH")
        if opts.source_date_epoch is None and epoch_arg:
            # BuildKit's other way in: --build-arg SOURCE_DATE_EPOCH (the docker CLI's).
            try:
                opts.source_date_epoch = int(epoch_arg)
            except ValueError:
                raise InvalidArgument(f"invalid SOURCE_DATE_EPOCH: {epoch_arg}") from None
            self._used_args.add("SOURCE_DATE_EPOCH")
        self._created = self._created_time()

    def emit(self, event: Event) -> None:
        """Progress out; a step run as an ONBUILD trigger reports only its failure."""
        if getattr(self._tl, "quiet", False) and not isinstance(event, BuildWarning):
            return
        self._emit(event)

    # --- set-up -------------------------------------------------------------------------------

    def _step_numbers(self) -> dict[int, int]:
        """Line -> the step's number in ``Step N/M`` (every instruction of the file)."""
        return {ins.start_line: i + 1 for i, ins in enumerate(self.df.instructions)}

    def _created_time(self) -> str:
        if self.opts.source_date_epoch is not None:
            t = time.gmtime(self.opts.source_date_epoch)
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
        return ""

    def _now(self) -> str:
        if self._created:
            return self._created
        from datetime import datetime

        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def _platform_args(self) -> dict[str, str]:
        os_, arch, variant = self.platform
        plat = f"{os_}/{arch}" + (f"/{variant}" if variant else "")
        out = {}
        for prefix in ("TARGET", "BUILD"):
            out[f"{prefix}PLATFORM"] = plat
            out[f"{prefix}OS"] = os_
            out[f"{prefix}ARCH"] = arch
            out[f"{prefix}VARIANT"] = variant
        return out

    def _global_args(self) -> dict[str, str]:
        env = self._platform_args()
        for cmd in self.plan.global_args:
            n = self._numbers.get(cmd.line, 0)
            self.emit(StepStarted(step=n, total=self._total, stage="", text=_display(cmd)))
            self.emit(StepDone(step=n, image=""))
            for name, default in arg_pairs(cmd):
                self._used_args.add(name)
                value = self.opts.build_args.get(name)
                if value is None and default is not None:
                    value = expand(default, env, self.plan.escape)
                if value is not None:
                    env[name] = value
        return env

    # --- the graph ----------------------------------------------------------------------------

    def _target(self) -> Stage:
        if self.opts.target:
            st = self.plan.stage_named(self.opts.target)
            if st is None or st.name != self.opts.target.lower():
                raise InvalidArgument(
                    f"failed to reach build target {self.opts.target} in Dockerfile")
            return st
        return self.plan.stages[-1]

    def _base_stage(self, stage: Stage, base: str) -> Stage | None:
        """An earlier stage ``FROM x`` names (a later name is an image, as BuildKit)."""
        for st in self.plan.stages[:stage.index]:
            if st.name and st.name == base.lower():
                return st
        return None

    def _dependencies(self, stage: Stage, gargs: dict[str, str]) -> list[Stage]:
        deps: list[Stage] = []
        base = expand(stage.base, gargs, self.plan.escape)
        st = self._base_stage(stage, base)
        if st is not None:
            deps.append(st)
        for cmd in stage.commands:
            for ref in _stage_refs(cmd):
                other = self.plan.stage_named(ref)
                if other is not None and other is not stage:
                    deps.append(other)
                elif other is stage:
                    raise InvalidArgument(f"circular dependency detected on stage: {stage.label}")
        return deps

    def _needed(self, target: Stage, gargs: dict[str, str]) -> list[Stage]:
        order: list[Stage] = []
        state: dict[int, int] = {}   # 1 = visiting, 2 = done

        def visit(st: Stage) -> None:
            mark = state.get(st.index)
            if mark == 2:
                return
            if mark == 1:
                raise InvalidArgument(f"circular dependency detected on stage: {st.label}")
            state[st.index] = 1
            for dep in self._dependencies(st, gargs):
                visit(dep)
            state[st.index] = 2
            order.append(st)

        visit(target)
        return order

    # --- running ------------------------------------------------------------------------------

    def run(self) -> str:
        from ketch.build.checks import parse_directive, run_checks

        findings = run_checks(self.df)
        for f in findings:
            self.emit(BuildWarning(f.text(), rule=f.rule))
        if findings and parse_directive(self.df.directives.get("check")).error:
            rules = sorted({f.rule for f in findings})
            raise InvalidArgument(f"lint violation found for rules: {', '.join(rules)}")
        gargs = self._global_args()
        target = self._target()
        stages = self._needed(target, gargs)
        if len(stages) == 1:
            result = self._build_stage(stages[0], gargs)
        else:
            with ThreadPoolExecutor(max_workers=min(len(stages), 4),
                                    thread_name_prefix="ketch-build") as pool:
                for st in stages:     # dependencies first: their futures exist when waited on
                    self._stage_futures[st.index] = pool.submit(self._build_stage, st, gargs)
                try:
                    result = self._stage_futures[target.index].result()
                except BaseException:
                    self.cancel.set()
                    raise
        unused = sorted(k for k in self.opts.build_args
                        if k not in self._used_args and k not in PREDEFINED_ARGS)
        if unused:
            self.emit(BuildWarning(f"[Warning] One or more build-args [{' '.join(unused)}] "
                                   "were not consumed"))
        image = result.image
        if image is None or self.opts.labels:
            doc = _copy.deepcopy(result.doc)
            if self.opts.labels:
                labels = dict(doc["config"].get("Labels") or {})
                labels.update(self.opts.labels)
                doc["config"]["Labels"] = labels
            image = self._cached_or(
                key=_digest([_KEY_VERSION, "labels", image, self.opts.labels]),
                parent=image or "", command="LABEL (build)", inputs={},
                make=lambda: self.backend.commit_config(result.image, doc))
        if self.opts.tags:
            self.backend.tag(image, self.opts.tags)
        self.emit(BuildResult(image=image, tags=list(self.opts.tags)))
        return image

    def _stage_state(self, index: int) -> _State:
        fut = self._stage_futures.get(index)
        if fut is None:
            raise InvalidArgument(f"stage {index} was not built")  # the graph missed an edge
        return fut.result()

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("build cancelled")

    def _build_stage(self, stage: Stage, gargs: dict[str, str]) -> _State:
        self._check_cancel()
        n = self._numbers[stage.line]
        self.emit(StepStarted(step=n, total=self._total, stage=stage.label,
                              text=f"FROM {stage.base}" + (f" AS {stage.name}" if stage.name
                                                           else "")))
        base = expand(stage.base, gargs, self.plan.escape)
        platform = expand(stage.platform, gargs, self.plan.escape) if stage.platform else ""
        if platform:
            self._check_platform(platform)
        t0 = time.monotonic()
        base_stage = self._base_stage(stage, base)
        if base_stage is not None:
            prev = self._stage_state(base_stage.index)
            state = _State(image=prev.image, doc=_copy.deepcopy(prev.doc), args={},
                           shell=list(prev.shell))
        elif base.lower() == "scratch":
            state = _State(image=None, doc=_scratch_doc(self.platform), args={})
        elif base in self.ctx.named:
            state = self._from_directory(stage, base, n)
        else:
            if not base:
                raise InvalidArgument("base name (" + stage.base + ") should not be blank")
            image = self.backend.base_image(base, pull=self.opts.pull, platform=platform)
            doc = self.backend.image_doc(image)
            shell = list(doc.get("config", {}).get("Shell") or DEFAULT_SHELL)
            state = _State(image=image, doc=doc, args={}, shell=shell)
        triggers = list(state.doc.get("config", {}).get("OnBuild") or [])
        if triggers:
            # As the legacy builder: one line, then the triggers run without steps of
            # their own; FROM's result is the image after them.
            noun = "trigger" if len(triggers) == 1 else "triggers"
            self.emit(BuildInfo(f"# Executing {len(triggers)} build {noun}"))
            self._tl.quiet = True
            try:
                state = self._onbuild(stage, state, triggers, n)
            finally:
                self._tl.quiet = False
        self.emit(StepDone(step=n, image=state.image or "", seconds=time.monotonic() - t0))
        for cmd in stage.commands:
            self._check_cancel()
            state = self._step(stage, state, cmd, gargs)
        return state

    def _from_directory(self, stage: Stage, name: str, n: int) -> _State:
        """``FROM name`` of a ``--build-context name=DIR``: the directory is the
        stage's root filesystem (BuildKit's local context as a base)."""
        root = self.ctx.named[name]
        sel = filecopy.select(root, ["."])
        doc = _scratch_doc(self.platform)
        self._history(doc, f"FROM {name} (build context)", empty=False)
        empty = _State(image=None, doc=_scratch_doc(self.platform), args={})
        key = self._step_key(empty, doc, ["context", name, sel.digest])

        def fill(rootfs: str) -> None:
            filecopy.apply(sel, rootfs, "/", workdir="/")

        image = self._cached_or(key=key, parent="", command=f"FROM {name}",
                                inputs={"files": {k: v.digest for k, v in sel.files.items()}},
                                make=lambda: self.backend.commit_files(None, doc, fill))
        return _State(image, self.backend.image_doc(image), {})

    def _check_platform(self, platform: str) -> None:
        parts = platform.split("/")
        os_, arch = parts[0], parts[1] if len(parts) > 1 else ""
        if os_ != self.platform[0] or (arch and arch != self.platform[1]):
            raise NotSupported(f"building for platform {platform} is not supported: ketch "
                               f"builds for this machine ({self.platform[0]}/"
                               f"{self.platform[1]}) only")

    def _onbuild(self, stage: Stage, state: _State, triggers: list[str], n: int) -> _State:
        from ketch.build.instructions import _command

        doc = _copy.deepcopy(state.doc)
        doc["config"]["OnBuild"] = None
        state = _State(image=state.image, doc=doc, args=state.args, shell=state.shell)
        for text in triggers:
            parsed = parse(text)
            for ins in parsed.instructions:
                if ins.name in ("onbuild", "from", "maintainer"):
                    raise InvalidArgument(f"{ins.name.upper()} isn't allowed as an ONBUILD "
                                          "trigger")
                cmd = _command(ins)
                cmd.line = stage.line
                state = self._step(stage, state, cmd, {}, number=n)
        return state

    # --- one step -----------------------------------------------------------------------------

    def _env(self, state: _State) -> dict[str, str]:
        """What ``$VAR`` sees: the stage's ARGs, overridden by ENV (BuildKit's rule)."""
        env = dict(state.args)
        env.update(_env_map(state.doc.get("config", {}).get("Env") or []))
        return env

    def _x(self, word: str, state: _State) -> str:
        return expand(word, self._env(state), self.plan.escape)

    def _step(self, stage: Stage, state: _State, cmd: Command, gargs: dict[str, str],
              number: int | None = None) -> _State:
        n = number or self._numbers.get(cmd.line, 0)
        for other in self._waits_for(cmd, state):
            self._stage_state(other.index)     # the step starts once its sources exist
        self.emit(StepStarted(step=n, total=self._total, stage=stage.label,
                              text=_display(cmd)))
        t0 = time.monotonic()
        name = cmd.name
        self._tl.missed = False
        if name == "arg":
            declared = self._arg(state, cmd, gargs)
            # BuildKit records ARG lines in history (empty layers), defaults as written.
            shown = []
            for arg_name, default in arg_pairs(cmd):
                shown.append(arg_name if default is None
                             else f"{arg_name}={self._x(default, declared)}")
            doc = _copy.deepcopy(state.doc)
            new = self._commit_meta(stage, declared, doc, "ARG " + " ".join(shown), n,
                                    _display(cmd))
            new.args = declared.args
            new.rebuilt = self._tl.missed or state.rebuilt
            self.emit(StepDone(step=n, image=new.image or "", seconds=time.monotonic() - t0))
            return new
        if name == "run":
            new = self._run(stage, state, cmd, n)
        elif name in ("copy", "add"):
            new = self._copy(stage, state, cmd, n)
        elif name == "workdir":
            new = self._workdir(stage, state, cmd, n)
        else:
            new = self._meta(stage, state, cmd, n)
        new.rebuilt = self._tl.missed
        removed = new.ran_in if self.opts.remove or self.opts.force_remove else ""
        self.emit(StepDone(step=n, image=new.image or "", seconds=time.monotonic() - t0,
                           removed_container=removed))
        return new

    def _waits_for(self, cmd: Command, state: _State) -> list[Stage]:
        out = []
        for ref in _stage_refs(cmd):
            if "$" in ref:
                continue
            other = self.plan.stage_named(ref)
            if other is not None and other.index in self._stage_futures:
                out.append(other)
        return out

    def _arg(self, state: _State, cmd: Command, gargs: dict[str, str]) -> _State:
        args = dict(state.args)
        for name, default in arg_pairs(cmd):
            with self._lock:
                self._used_args.add(name)
            value = self.opts.build_args.get(name)
            if value is None and name in self.opts.build_args:
                value = os.environ.get(name)   # ``--build-arg NAME`` without a value
            if value is None and default is not None:
                value = self._x(default, _State(state.image, state.doc, args, state.shell))
            if value is None and name in gargs and any(
                    name == a for c in self.plan.global_args for a, _ in arg_pairs(c)):
                value = gargs[name]
            if value is None and name in self._platform_args():
                value = self._platform_args()[name]
            if value is not None:
                args[name] = value
        return _State(state.image, state.doc, args, state.shell)

    def _history(self, doc: dict[str, Any], created_by: str, empty: bool) -> None:
        entry: dict[str, Any] = {"created": self._now(), "created_by": created_by,
                                 "comment": HISTORY_COMMENT}
        if empty:
            entry["empty_layer"] = True
        doc.setdefault("history", []).append(entry)
        doc["created"] = entry["created"]

    def _step_key(self, state: _State, doc: dict[str, Any], parts: list[Any]) -> str:
        """The step's cache key, and its parent-free part recorded in ``doc``.

        The recorded list (one entry per history entry) is what ``--cache-from``
        matches on an image built elsewhere, whose intermediate images are not here:
        like BuildKit's inline cache, it travels in the image config.
        """
        content = _digest(parts)
        history = doc.get("history") or []
        keys = _cache_keys(state.doc)
        keys += [""] * (len(history) - 1 - len(keys))
        doc[CACHE_FIELD] = [*keys[:len(history) - 1], content]
        return _digest([_KEY_VERSION, state.image, content, self._created])

    def _cached_or(self, *, key: str, parent: str, command: str, inputs: dict[str, Any],
                   make: Callable[[], str], step: int = 0, stage: str = "",
                   state: _State | None = None, doc: dict[str, Any] | None = None) -> str:
        """The cached image for ``key``, else ``make()`` recorded under it."""
        use_cache = not self.opts.no_cache and stage not in self.opts.no_cache_filter
        if use_cache:
            hit = self.backend.cache_get(key)
            if hit is None and state is not None and doc is not None:
                hit = self._from_cache_images(state, doc)
                if hit is not None:
                    self.backend.cache_put(CacheRecord(key=key, image=hit, parent=parent,
                                                       command=command, inputs=inputs))
            if hit is not None:
                if step:
                    self.emit(StepCached(step=step))
                return hit
            if step:
                rebuilt = state.rebuilt if state is not None else False
                self.emit(StepMiss(step=step, reason=self._miss_reason(parent, command, inputs,
                                                                       rebuilt)))
        elif step:
            self.emit(StepMiss(step=step, reason="--no-cache" if self.opts.no_cache
                               else f"--no-cache-filter {stage}"))
        self._tl.missed = True
        image = make()
        self.backend.cache_put(CacheRecord(key=key, image=image, parent=parent,
                                           command=command, inputs=inputs))
        return image

    def _cache_images(self) -> list[tuple[str, dict[str, Any]]]:
        """The ``--cache-from`` images' ids and configs, looked up once; one that
        cannot be found is a warning, as BuildKit's import of a missing cache."""
        with self._lock:
            if self._cache_from is None:
                found = []
                for ref in self.opts.cache_from:
                    try:
                        image = self.backend.base_image(ref, pull=False, platform="")
                    except KetchError as exc:
                        self.emit(BuildWarning(f"[Warning] --cache-from {ref}: {exc}"))
                        continue
                    found.append((image, self.backend.image_doc(image)))
                self._cache_from = found
            return self._cache_from

    def _from_cache_images(self, state: _State, doc: dict[str, Any]) -> str | None:
        """The step's result taken from a ``--cache-from`` image whose history starts
        as the parent's and goes on with this very step (same recorded key)."""
        if not self.opts.cache_from:
            return None
        parent_hist = [h.get("created_by", "") for h in state.doc.get("history") or []]
        parent_keys = _cache_keys(state.doc)
        parent_keys += [""] * (len(parent_hist) - len(parent_keys))
        parent_diffs = list((state.doc.get("rootfs") or {}).get("diff_ids") or [])
        n = len(parent_hist)
        want = doc[CACHE_FIELD][n]
        for image, cdoc in self._cache_images():
            hist = cdoc.get("history") or []
            keys = _cache_keys(cdoc)
            keys += [""] * (len(hist) - len(keys))
            diffs = list((cdoc.get("rootfs") or {}).get("diff_ids") or [])
            if len(hist) <= n or keys[n] != want or keys[:n] != parent_keys:
                continue
            if [h.get("created_by", "") for h in hist[:n]] != parent_hist:
                continue
            if diffs[:len(parent_diffs)] != parent_diffs:
                continue
            if hist[n].get("empty_layer"):
                doc["history"][-1]["empty_layer"] = True
                return self.backend.commit_config(state.image, doc)
            if len(diffs) <= len(parent_diffs):
                continue
            return self.backend.commit_layer_from(state.image, doc, image, len(parent_diffs))
        return None

    def _miss_reason(self, parent: str, command: str, inputs: dict[str, Any],
                     parent_rebuilt: bool) -> str:
        same = [s for s in self.backend.cache_siblings(parent) if s.command == command]
        if not same:
            if parent_rebuilt:
                return "a step before it was rebuilt"
            return "first build of this step (or the instruction changed)"
        last = same[-1]
        old_files = last.inputs.get("files")
        new_files = inputs.get("files")
        if isinstance(old_files, dict) and isinstance(new_files, dict):
            changed = sorted(k for k in set(old_files) | set(new_files)
                             if old_files.get(k) != new_files.get(k))
            if changed:
                shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                                  if len(changed) > 5 else "")
                return f"files changed: {shown}"
        old_args, new_args = last.inputs.get("args") or {}, inputs.get("args") or {}
        changed = sorted(k for k in set(old_args) | set(new_args)
                         if old_args.get(k) != new_args.get(k))
        if changed:
            return "build args changed: " + ", ".join(changed)
        if last.inputs.get("source") != inputs.get("source"):
            return "the source of the files changed (a stage or image was rebuilt)"
        if last.inputs.get("mounts") != inputs.get("mounts"):
            return "the mounted files changed"
        if last.inputs.get("expanded") != inputs.get("expanded"):
            return "ARG or ENV values used by the instruction changed"
        return "the cached result is gone"

    def _commit_meta(self, stage: Stage, state: _State, doc: dict[str, Any], created_by: str,
                     n: int, raw: str, inputs: dict[str, Any] | None = None) -> _State:
        if created_by:
            self._history(doc, created_by, empty=True)
            key = self._step_key(state, doc, ["meta", created_by, doc["config"]])
        else:   # no history row (ONBUILD): the key still covers the new config
            key = _digest([_KEY_VERSION, state.image, "meta", raw, doc["config"],
                           self._created])
        parent = state.image
        image = self._cached_or(key=key, parent=parent or "", command=raw,
                                inputs={"expanded": created_by, **(inputs or {})}, step=n, state=state, doc=doc,
                                stage=stage.name,
                                make=lambda: self.backend.commit_config(parent, doc))
        return _State(image, doc, state.args, list(doc["config"].get("Shell") or state.shell))

    def _meta(self, stage: Stage, state: _State, cmd: Command, n: int) -> _State:
        doc = _copy.deepcopy(state.doc)
        cfg = doc.setdefault("config", {})
        name = cmd.name
        x = lambda w: self._x(w, state)  # noqa: E731
        if name == "env":
            env = list(cfg.get("Env") or [])
            shown = []
            cur = self._env(state)      # the whole line sees the environment before it
            for k, v in triples(cmd):
                value = expand(v, cur, self.plan.escape)
                key = expand(k, cur, self.plan.escape)
                env = _set_env(env, key, value)
                shown.append(f"{key}={value}")
            cfg["Env"] = env
            created_by = "ENV " + " ".join(shown)
        elif name == "label":
            labels = dict(cfg.get("Labels") or {})
            shown = []
            for k, v in triples(cmd):
                key, value = x(k), x(v)
                labels[key] = value
                shown.append(f"{key}={value}")
            cfg["Labels"] = labels
            created_by = "LABEL " + " ".join(shown)
        elif name in ("cmd", "entrypoint"):
            argv = self._argv(cmd, state)
            field_name = "Cmd" if name == "cmd" else "Entrypoint"
            cfg[field_name] = argv
            if name == "entrypoint" and not any(
                    c.name == "cmd" for c in stage.commands if c.line < cmd.line):
                cfg["Cmd"] = None   # a new ENTRYPOINT resets a CMD this stage did not set
            created_by = f"{name.upper()} {_go_q_list(argv)}"
        elif name == "expose":
            ports = dict(cfg.get("ExposedPorts") or {})
            these: set[str] = set()
            for word in cmd.args:
                for p in x(word).split():
                    these |= _port_specs(p)
            for port in these:
                ports[port] = {}
            cfg["ExposedPorts"] = ports
            # BuildKit prints the instruction's ports as Go prints a map (keys sorted)
            created_by = "EXPOSE map[" + " ".join(f"{k}:{{}}" for k in sorted(these)) + "]"
        elif name == "volume":
            vols = dict(cfg.get("Volumes") or {})
            for word in cmd.args:
                v = x(word)
                if not v.strip():
                    raise InvalidArgument("VOLUME specified can not be an empty string")
                vols[v] = {}
            cfg["Volumes"] = vols
            created_by = "VOLUME [" + " ".join(x(w) for w in cmd.args) + "]"
        elif name == "user":
            cfg["User"] = x(cmd.args[0])
            created_by = f"USER {cfg['User']}"
        elif name == "stopsignal":
            sig = x(cmd.args[0])
            _check_signal(sig)
            cfg["StopSignal"] = sig
            created_by = f"STOPSIGNAL {sig}"
        elif name == "shell":
            cfg["Shell"] = list(cmd.args)
            created_by = "SHELL [" + " ".join(cmd.args) + "]"
        elif name == "maintainer":
            doc["author"] = cmd.args[0]
            created_by = f"MAINTAINER {cmd.args[0]}"
        elif name == "onbuild":
            triggers = list(cfg.get("OnBuild") or [])
            triggers.append(cmd.trigger)
            cfg["OnBuild"] = triggers
            created_by = ""     # BuildKit adds no history row for ONBUILD
        elif name == "healthcheck":
            cfg["Healthcheck"] = _healthcheck(cmd)
            created_by = "HEALTHCHECK " + _go_q_health(cfg["Healthcheck"])
        else:
            raise NotSupported(f"the {name.upper()} instruction is not supported")
        return self._commit_meta(stage, state, doc, created_by, n, _display(cmd))

    def _argv(self, cmd: Command, state: _State) -> list[str]:
        if cmd.json:
            return list(cmd.args)
        if not cmd.args:
            return []
        return [*state.shell, cmd.args[0]]

    # --- WORKDIR ------------------------------------------------------------------------------

    def _workdir(self, stage: Stage, state: _State, cmd: Command, n: int) -> _State:
        doc = _copy.deepcopy(state.doc)
        cfg = doc.setdefault("config", {})
        path = self._x(cmd.args[0], state)
        if not path.startswith("/"):
            path = os.path.join(cfg.get("WorkingDir") or "/", path)
        path = os.path.normpath(path)
        if path.startswith("//"):
            path = path[1:]
        cfg["WorkingDir"] = path
        created_by = f"WORKDIR {path}"
        self._history(doc, created_by, empty=False)
        user = cfg.get("User") or ""
        key = self._step_key(state, doc, ["workdir", path, user])
        parent = state.image

        def fill(rootfs: str) -> None:
            target = secure_join(rootfs, path)
            if os.path.isdir(target):
                return
            os.makedirs(target, mode=0o755, exist_ok=True)
            if user:
                uid, gid = self.backend.user_ids(rootfs, user)
                os.chown(target, uid, gid)

        def make() -> str:
            return self.backend.commit_files(parent, doc, fill)

        image = self._cached_or(key=key, parent=parent or "", command=_display(cmd),
                                inputs={"expanded": created_by},
                                step=n, state=state, doc=doc, stage=stage.name, make=make)
        return _State(image, self.backend.image_doc(image), state.args, state.shell)

    # --- COPY and ADD -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _source_root(self, cmd: Command, state: _State) -> Iterator[tuple[str, str,
                                                                         dict[str, str]]]:
        """(root dir, identity for the key, known digests) of where COPY reads."""
        src = self._x(cmd.flag("from"), state) if cmd.flag("from") else ""
        if not src:
            yield self.ctx.root, "context", self.ctx.digests
            return
        if src in self.ctx.named:
            yield self.ctx.named[src], f"context:{src}", {}
            return
        other = self.plan.stage_named(src)
        if other is not None:
            image = self._stage_state(other.index).image
        else:
            image = self.backend.base_image(src, pull=self.opts.pull, platform="")
        with self.backend.rootfs(image) as root:
            yield root, f"image:{image}", {}

    def _copy(self, stage: Stage, state: _State, cmd: Command, n: int) -> _State:
        is_add = cmd.name == "add"
        words = [self._x(w, state) for w in cmd.args]
        dest = words[-1]
        sources = words[:-1]
        chown = self._x(cmd.flag("chown"), state) if cmd.flag("chown") else ""
        chmod_text = self._x(cmd.flag("chmod"), state) if cmd.flag("chmod") else ""
        chmod = filecopy.parse_chmod_spec(chmod_text) if chmod_text else None
        excludes = [self._x(e, state) for e in cmd.flags.get("exclude", [])]
        parents = cmd.flag("parents") == "true"
        checksum = cmd.flag("checksum")
        if checksum and not all(_is_url(s) for s in sources):
            raise InvalidArgument("checksum can't be specified for local sources")
        doc = _copy.deepcopy(state.doc)
        workdir = doc.get("config", {}).get("WorkingDir") or "/"
        created_by = _copy_created_by(cmd, words)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ketch-copy-"))
            heredoc_names = {h.name for h in cmd.heredocs}
            known: dict[str, str] = {}
            if cmd.heredocs:
                root, ident = tmp, "heredoc"
                for h in cmd.heredocs:
                    content = h.content
                    if h.expand:
                        content = _expand_heredoc(content, self._env(state))
                    p = os.path.join(tmp, h.name)
                    with open(p, "w") as f:
                        f.write(content)
                    os.chmod(p, 0o644)
                sources = [s.removeprefix("<<").removeprefix("-") if s.startswith("<<") else s
                           for s in sources]
                if any(s not in heredoc_names for s in sources):
                    raise NotSupported("mixing heredocs and files in one COPY is not supported")
            elif is_add and any(_is_git(s) for s in sources):
                raise NotSupported("ADD of a git repository is not supported by ketch: clone "
                                   "it into the context and COPY it")
            elif is_add and any(_is_url(s) for s in sources):
                if not all(_is_url(s) for s in sources):
                    raise NotSupported("mixing URLs and local files in one ADD is not "
                                       "supported")
                fetched = []
                for url in sources:
                    got = filecopy.fetch_url(url, tmp, checksum=checksum or None)
                    fetched.append(os.path.basename(got.path))
                root, ident, sources = tmp, "url", fetched
            else:
                root, ident, known = stack.enter_context(self._source_root(cmd, state))
            try:
                sel = filecopy.select(root, sources, excludes=excludes, parents=parents,
                                      known_digests=known or None,
                                      instruction=cmd.name.upper(),
                                      from_stage=ident.startswith("image:"),
                                      ignore=self.ctx.ignore if ident == "context" else None)
            except (NotFound, InvalidArgument) as exc:
                raise type(exc)(f"{cmd.name.upper()} failed: {exc}") from None
            files = {k: f"{v.kind}:{v.mode:o}:{v.digest}:{v.linkname}"
                     for k, v in sel.files.items()}
            inputs: dict[str, Any] = {"files": files if len(files) <= 20000 else {},
                                      "source": ident}
            filecopy.check_destination(sel, dest)
            self._history(doc, created_by, empty=False)
            key = self._step_key(state, doc, [created_by, ident, sel.digest, chown, chmod_text,
                                              parents, excludes, workdir, is_add])
            parent = state.image

            def fill(rootfs: str) -> None:
                uid = gid = None
                if chown:
                    uid, gid = self.backend.user_ids(rootfs, chown)
                filecopy.apply(sel, rootfs, dest, workdir=workdir, uid=uid, gid=gid,
                               chmod=chmod, parents=parents,
                               extract_archives=is_add and ident not in ("url", "heredoc"))

            inputs["expanded"] = created_by
            image = self._cached_or(key=key, parent=parent or "", command=_display(cmd),
                                    inputs=inputs, step=n, state=state, doc=doc, stage=stage.name,
                                    make=lambda: self.backend.commit_files(parent, doc, fill))
        return _State(image, self.backend.image_doc(image), state.args, state.shell)

    # --- RUN ----------------------------------------------------------------------------------

    def _run(self, stage: Stage, state: _State, cmd: Command, n: int) -> _State:
        doc = _copy.deepcopy(state.doc)
        cfg = doc.setdefault("config", {})
        if cmd.json:
            argv = list(cmd.args)
            shown = " ".join(argv)      # BuildKit joins an exec form with spaces
        else:
            script = cmd.args[0] if cmd.args else ""
            if cmd.heredocs:
                only = len(cmd.heredocs) == 1 and script.strip() in (
                    f"<<{cmd.heredocs[0].name}", f"<<-{cmd.heredocs[0].name}",
                    f"<<'{cmd.heredocs[0].name}'", f'<<"{cmd.heredocs[0].name}"')
                if only:
                    script = cmd.heredocs[0].content
                else:
                    for h in cmd.heredocs:
                        script += "\n" + h.content + h.name
            argv = [*state.shell, script]
            shown = " ".join(argv)
        args = {k: v for k, v in state.args.items()}
        for k in PREDEFINED_ARGS:
            # Proxy args reach RUN without an ARG line, and stay out of history unless
            # declared (BuildKit); they are not part of the cache key either.
            value = self.opts.build_args.get(k)
            if value is not None and k not in args:
                args[k] = value
        visible_args = {k: v for k, v in args.items()
                        if k not in PREDEFINED_ARGS or k in self._declared(stage)}
        prefix = ""
        if visible_args:
            prefix = f"|{len(visible_args)} " + " ".join(
                f"{k}={v}" for k, v in sorted(visible_args.items())) + " "
        created_by = f"RUN {prefix}{shown} # buildkit"
        env = list(cfg.get("Env") or [])
        env_keys = {e.partition("=")[0] for e in env}
        run_env = env + [f"{k}={v}" for k, v in sorted(args.items()) if k not in env_keys]
        network = cmd.flag("network") or ""
        if network and network not in ("none", "host", "default"):
            raise InvalidArgument(f"unsupported network mode {network!r} for RUN "
                                  "(none, host or default)")
        if cmd.flag("security") and cmd.flag("security") != "sandbox":
            raise NotSupported("RUN --security=insecure is not supported")
        mounts, mount_inputs, cleanup = self._mounts(cmd, state)
        try:
            spec = RunSpec(argv=argv, env=run_env, user=cfg.get("User") or "",
                           workdir=cfg.get("WorkingDir") or "",
                           network="" if network in ("", "default") else network,
                           mounts=mounts)
            self._history(doc, created_by, empty=False)
            key_env = [e for e in run_env if e.partition("=")[0] not in PREDEFINED_ARGS
                       or e.partition("=")[0] in visible_args]
            key = self._step_key(state, doc, [created_by, key_env, network, mount_inputs])
            parent = state.image
            ran_in: list[str] = []

            def make() -> str:
                def output(stream: str, data: str) -> None:
                    from ketch.build.request import StepOutput

                    self.emit(StepOutput(step=n, data=data, stream=stream))

                def started(container: str) -> None:
                    from ketch.build.request import StepRunning

                    ran_in.append(container)
                    self.emit(StepRunning(step=n, container=container))

                return self.backend.commit_run(parent, doc, spec, output, started,
                                               self.cancel.is_set)

            image = self._cached_or(key=key, parent=parent or "", command=_display(cmd),
                                    inputs={"args": visible_args, "mounts": mount_inputs,
                                            "expanded": created_by},
                                    step=n, state=state, doc=doc, stage=stage.name, make=make)
        finally:
            for fn in cleanup:
                fn()
        return _State(image, self.backend.image_doc(image), state.args, state.shell,
                      ran_in=ran_in[0] if ran_in else "")

    def _declared(self, stage: Stage) -> set[str]:
        return {name for c in stage.commands if c.name == "arg" for name, _ in arg_pairs(c)}

    def _mounts(self, cmd: Command, state: _State
                ) -> tuple[list[Mount], list[Any], list[Callable[[], None]]]:
        mounts: list[Mount] = []
        inputs: list[Any] = []
        cleanup: list[Callable[[], None]] = []
        workdir = state.doc.get("config", {}).get("WorkingDir") or "/"
        for raw in cmd.flags.get("mount", []):
            o = _mount_options(self._x(raw, state))
            kind = o.get("type", "bind")
            target = o.get("target") or o.get("dst") or o.get("destination") or ""
            if target and not target.startswith("/"):
                target = os.path.join(workdir, target)
            if kind == "secret":
                ident = o.get("id") or os.path.basename(target)
                if not ident:
                    raise InvalidArgument("secret mount needs an id or a target")
                path = self.opts.secrets.get(ident) or self.ctx.secrets.get(ident)
                if path is None:
                    if o.get("required", "false") in ("true", ""):
                        raise InvalidArgument(f"secret {ident} not found")
                    continue
                mounts.append(Mount("bind", target or f"/run/secrets/{ident}", path, True))
                inputs.append(["secret", ident, target])   # never the content
                continue
            if not target:
                raise InvalidArgument(f"mount type={kind} requires a target")
            if kind == "tmpfs":
                mounts.append(Mount("tmpfs", target, size=int(o.get("size", "0") or 0)))
                inputs.append(["tmpfs", target])
            elif kind == "cache":
                ident = o.get("id") or target
                sharing = o.get("sharing", "shared")
                if sharing not in ("shared", "private", "locked"):
                    raise InvalidArgument(f"unsupported sharing value {sharing!r}")
                try:
                    uid, gid = int(o.get("uid", "0")), int(o.get("gid", "0"))
                    mode = int(o.get("mode", "755"), 8)
                except ValueError:
                    raise InvalidArgument(f"invalid uid, gid or mode in --mount {raw}") from None
                path, release = self.backend.cache_dir(ident, sharing, uid, gid, mode)
                cleanup.append(release)
                mounts.append(Mount("bind", target, path, readonly=o.get("ro") == "true"
                                    or "readonly" in o))
                inputs.append(["cache", ident, target])
            elif kind == "bind":
                source = o.get("source") or o.get("src") or "."
                ro = not ("rw" in o or o.get("readwrite") == "true" or o.get("rw") == "true")
                frm = o.get("from", "")
                known: dict[str, str] = {}
                if frm in self.ctx.named:
                    root, ident_root = self.ctx.named[frm], f"context:{frm}"
                elif frm:
                    other = self.plan.stage_named(frm)
                    image = (self._stage_state(other.index).image if other is not None
                             else self.backend.base_image(frm, pull=self.opts.pull,
                                                          platform=""))
                    cm = self.backend.rootfs(image)
                    root = cm.__enter__()
                    cleanup.append(functools.partial(_close, cm))
                    ident_root = f"image:{image}"
                else:
                    root, ident_root = self.ctx.root, "context"
                    known = self.ctx.digests
                path = secure_join(root, source)
                if not os.path.exists(path):
                    raise NotFound(f"failed to compute cache key: \"/{source.lstrip('/')}\": "
                                   "not found")
                hidden = self.ctx.ignore if ident_root == "context" else None
                sel = filecopy.select(root, [source], known_digests=known or None,
                                      ignore=hidden)
                if hidden is not None:
                    # A context read in place holds what .dockerignore hides: mount a
                    # copy of what was selected (writable too: writes are thrown away).
                    scratch = tempfile.mkdtemp(prefix="ketch-bind-")
                    cleanup.append(functools.partial(shutil.rmtree, scratch, ignore_errors=True))
                    filecopy.apply(sel, scratch, "/m/" if os.path.isdir(path) else "/m",
                                   workdir="/")
                    path = os.path.join(scratch, "m")
                elif not ro:
                    # Writes to a rw bind mount are thrown away (BuildKit): give a copy.
                    scratch = tempfile.mkdtemp(prefix="ketch-bind-")
                    cleanup.append(functools.partial(shutil.rmtree, scratch, ignore_errors=True))
                    dst = os.path.join(scratch, "m")
                    if os.path.isdir(path):
                        shutil.copytree(path, dst, symlinks=True)
                    else:
                        shutil.copy2(path, dst)
                    path = dst
                mounts.append(Mount("bind", target, path, readonly=ro))
                inputs.append(["bind", ident_root, source, target, ro, sel.digest])
            elif kind == "ssh":
                raise NotSupported("RUN --mount=type=ssh is not supported")
            else:
                raise InvalidArgument(f"unsupported mount type {kind!r}")
        return mounts, inputs, cleanup


# --- helpers ------------------------------------------------------------------------------------


def _stage_refs(cmd: Command) -> list[str]:
    """What a command reads from elsewhere: COPY --from, RUN --mount from=."""
    if cmd.name == "copy" and cmd.flag("from"):
        return [cmd.flag("from")]
    if cmd.name == "run":
        refs = [_mount_options(m).get("from", "") for m in cmd.flags.get("mount", [])]
        return [r for r in refs if r]
    return []


def _close(cm: contextlib.AbstractContextManager[str]) -> None:
    cm.__exit__(None, None, None)


def _cache_keys(doc: dict[str, Any]) -> list[str]:
    keys = doc.get(CACHE_FIELD)
    return [str(k) for k in keys] if isinstance(keys, list) else []


def _go_quote(s: str) -> str:
    """Go's %q of a string (strconv.Quote), near enough for history text."""
    return json.dumps(s, ensure_ascii=False)


def _go_q_list(items: list[str]) -> str:
    """Go's %q of a []string: ``["a" "b"]``."""
    return "[" + " ".join(_go_quote(i) for i in items) + "]"


def _go_q_health(hc: dict[str, Any]) -> str:
    """Go's %q of BuildKit's *HealthConfig, which is how its history shows HEALTHCHECK."""
    retries = int(hc.get("Retries") or 0)
    if 32 <= retries < 127 and chr(retries) not in "'\\":
        rune = f"'{chr(retries)}'"
    elif retries < 256:
        rune = f"'\\x{retries:02x}'"
    else:
        rune = f"'\\u{retries:04x}'"
    durations = " ".join(_go_quote(go_duration(int(hc.get(k) or 0)))
                         for k in ("Interval", "Timeout", "StartPeriod", "StartInterval"))
    return f"&{{{_go_q_list(list(hc.get('Test') or []))} {durations} {rune}}}"


def _port_specs(spec: str) -> set[str]:
    """``80``, ``53/udp``, ``8000-8002/tcp`` as nat.ParsePortSpecs expands them."""
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    if ":" in port:
        port = port.rsplit(":", 1)[1]   # an IP or host port is ignored (with a warning)
    low, dash, high = port.partition("-")
    try:
        first, last = int(low), int(high) if dash else int(low)
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {port}") from None
    if not (0 < first <= last <= 65535):
        raise InvalidArgument(f"invalid containerPort: {port}")
    return {f"{n}/{proto}" for n in range(first, last + 1)}


def _is_git(s: str) -> bool:
    return s.startswith(("git://", "git@")) or (_is_url(s) and s.split("#")[0].endswith(".git"))


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _display(cmd: Command) -> str:
    return cmd.original.strip()


def _copy_created_by(cmd: Command, words: list[str]) -> str:
    """BuildKit's history words for COPY/ADD: only --parents, --chown and --chmod
    of the flags (not --from, --link or --exclude), then sources and destination."""
    flags = []
    if cmd.flag("parents") == "true":
        flags.append("--parents")
    for k in ("chown", "chmod"):
        if cmd.flag(k):
            flags.append(f"--{k}={cmd.flag(k)}")
    return f"{cmd.name.upper()} {' '.join([*flags, *words])} # buildkit"


def _mount_options(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part:
            continue
        k, eq, v = part.partition("=")
        out[k.strip().lower()] = v if eq else ""
    return out


def _expand_heredoc(content: str, env: dict[str, str]) -> str:
    """Expand ``$VAR`` in a heredoc body, keeping everything else (quotes included)."""
    import re

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, content)


def _check_signal(sig: str) -> None:
    import signal

    s = sig.upper()
    if s.isdigit():
        return
    name = s if s.startswith("SIG") else "SIG" + s
    if not hasattr(signal, name) and not name.startswith("SIGRTM"):
        raise InvalidArgument(f"Invalid signal: {sig}")


def _healthcheck(cmd: Command) -> dict[str, Any]:
    from ketch.filters import parse_duration

    kind = cmd.args[0].upper()
    hc: dict[str, Any] = {}
    if kind == "NONE":
        if len(cmd.args) > 1:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise InvalidArgument(f"Unknown type \"{kind}\" in HEALTHCHECK (try CMD)")
    rest = cmd.args[1:]
    if not rest:
        raise InvalidArgument("Missing command after HEALTHCHECK CMD")
    hc["Test"] = ["CMD", *rest] if cmd.json else ["CMD-SHELL", rest[0]]
    names = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
             "start-interval": "StartInterval"}
    for flag, key in names.items():
        if cmd.flag(flag):
            try:
                secs = parse_duration(cmd.flag(flag))
            except (InvalidArgument, ValueError):
                raise InvalidArgument(f"time: invalid duration \"{cmd.flag(flag)}\"") from None
            if secs and secs < 0.001:
                raise InvalidArgument(f"Interval \"{flag}\" cannot be less than 1ms")
            hc[key] = int(secs * 1_000_000_000)
    if cmd.flag("retries"):
        try:
            retries = int(cmd.flag("retries"))
        except ValueError:
            raise InvalidArgument(f"strconv.ParseInt: parsing \"{cmd.flag('retries')}\": "
                                  "invalid syntax") from None
        if retries < 0:
            raise InvalidArgument("--retries cannot be negative")
        hc["Retries"] = retries
    return hc
