"""The build executor against an in-memory backend: graph, cache keys, expansion,
configs and history, without an engine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ketch.build.backend import CacheRecord, RunSpec
from ketch.build.executor import Builder, Context, StepFailed
from ketch.build.request import BuildOptions, StepCached, StepMiss, StepOutput, StepStarted
from ketch.errors import InvalidArgument, NotFound, NotSupported


class FakeBackend:
    """Images as (parent, doc, files); files as {path: bytes} snapshots."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[str | None, dict[str, Any], dict[str, bytes]]] = {}
        self.cache: dict[str, CacheRecord] = {}
        self.runs: list[RunSpec] = []
        self.reused: list[tuple[str, int]] = []
        self.tags: dict[str, str] = {}
        self.lock = threading.Lock()
        self.run_hook: Callable[[RunSpec], int] = lambda spec: 0
        base_doc = {"architecture": "amd64", "os": "linux",
                    "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]},
                    "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
        self.base = self._add(None, base_doc, {"etc/passwd": b"root:x:0:0::/root:/bin/sh\n"
                                               b"app:x:1000:1000::/home/app:/bin/sh\n",
                                               "etc/group": b"root:x:0:\napp:x:1000:\n"})

    def _layer(self, doc: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        """``doc`` with one more diff_id, as the engine adds for a layer step."""
        doc = json.loads(json.dumps(doc))
        tree = json.dumps(sorted((k, v.hex()) for k, v in files.items()))
        doc["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(tree.encode()).hexdigest())
        return doc

    def _add(self, parent: str | None, doc: dict[str, Any], files: dict[str, bytes]) -> str:
        body = json.dumps([parent, doc, sorted((k, v.hex()) for k, v in files.items())],
                          sort_keys=True)
        image = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
        with self.lock:
            self.images[image] = (parent, json.loads(json.dumps(doc)), dict(files))
        return image

    def files(self, image: str) -> dict[str, bytes]:
        return self.images[image][2]

    def base_image(self, ref: str, *, pull: bool, platform: str) -> str:
        if ref in ("busybox", "busybox:latest"):
            return self.base
        if ref in self.tags:
            return self.tags[ref]
        raise NotFound(f"No such image: {ref}")

    def image_doc(self, image_id: str) -> dict[str, Any]:
        return json.loads(json.dumps(self.images[image_id][1]))

    def cache_get(self, key: str) -> str | None:
        rec = self.cache.get(key)
        return rec.image if rec else None

    def cache_put(self, record: CacheRecord) -> None:
        self.cache[record.key] = record

    def cache_siblings(self, parent: str) -> list[CacheRecord]:
        return [r for r in self.cache.values() if r.parent == parent]

    def commit_config(self, parent: str | None, doc: dict[str, Any]) -> str:
        return self._add(parent, doc, self.files(parent) if parent else {})

    def _tree(self, parent: str | None, root: str) -> None:
        for rel, data in (self.files(parent) if parent else {}).items():
            p = os.path.join(root, rel)
            if rel.endswith("/"):
                os.makedirs(p, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(p), exist_ok=True)
            Path(p).write_bytes(data)

    def commit_layer_from(self, parent: str | None, doc: dict[str, Any], source: str,
                          index: int) -> str:
        self.reused.append((source, index))
        doc = json.loads(json.dumps(doc))
        doc["rootfs"]["diff_ids"].append(self.images[source][1]["rootfs"]["diff_ids"][index])
        return self._add(parent, doc, self.files(source))

    def commit_files(self, parent: str | None, doc: dict[str, Any],
                     fill: Callable[[str], None]) -> str:
        with tempfile.TemporaryDirectory() as root:
            self._tree(parent, root)
            fill(root)
            files = {}
            for dirpath, dirs, names in os.walk(root):
                for d in dirs:
                    rel = os.path.relpath(os.path.join(dirpath, d), root) + "/"
                    files[rel] = b""
                for n in names:
                    p = os.path.join(dirpath, n)
                    files[os.path.relpath(p, root)] = Path(p).read_bytes()
        return self._add(parent, self._layer(doc, files), files)

    def commit_run(self, parent: str | None, doc: dict[str, Any], spec: RunSpec,
                   output: Callable[[str, str], None], started: Callable[[str], None],
                   cancelled: Callable[[], bool]) -> str:
        self.runs.append(spec)
        started("c0ffee")
        output("stdout", "ran " + spec.argv[-1] + "\n")
        code = self.run_hook(spec)
        if code:
            raise StepFailed(f"The command '{' '.join(spec.argv)}' returned a non-zero code: "
                             f"{code}", code)
        files = dict(self.files(parent) if parent else {})
        n = sum(1 for k in files if k.startswith("ran/") and not k.endswith("/")) + 1
        files[f"ran/{n}"] = spec.argv[-1].encode()
        return self._add(parent, self._layer(doc, files), files)

    @contextlib.contextmanager
    def rootfs(self, image_id: str | None) -> Iterator[str]:
        with tempfile.TemporaryDirectory() as root:
            self._tree(image_id, root)
            yield root

    def user_ids(self, rootfs: str, spec: str) -> tuple[int, int]:
        user, _, group = spec.partition(":")
        ids = {"root": 0, "app": 1000}
        uid = int(user) if user.isdigit() else ids[user]
        gid = int(group) if group.isdigit() else ids.get(group, uid)
        return uid, gid

    def cache_dir(self, ident: str, sharing: str = "shared", uid: int = 0, gid: int = 0,
                  mode: int = 0o755) -> tuple[str, Callable[[], None]]:
        return tempfile.mkdtemp(), lambda: None

    def tag(self, image_id: str, tags: list[str]) -> None:
        for t in tags:
            self.tags[t] = image_id


def build(backend: FakeBackend, context: Path, text: str, **kw: Any
          ) -> tuple[str, list[Any]]:
    events: list[Any] = []
    opts = BuildOptions(**kw)
    b = Builder(text, opts, backend, Context(root=str(context)), events.append,
                threading.Event())
    return b.run(), events


def config(backend: FakeBackend, image: str) -> dict[str, Any]:
    return backend.image_doc(image)["config"]


@pytest.fixture
def fb() -> FakeBackend:
    return FakeBackend()


def test_metadata_instructions_make_the_config(fb: FakeBackend, tmp_path: Path) -> None:
    image, _ = build(fb, tmp_path, """\
FROM busybox
ENV A=1 B="two words"
ENV C=${A}-x
LABEL version="1.0" "other label"=y
EXPOSE 80 53/udp
VOLUME ["/data"]
USER app
WORKDIR /srv
WORKDIR sub
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost
ENTRYPOINT ["/bin/app"]
CMD ["--serve"]
""")
    cfg = config(fb, image)
    assert cfg["Env"] == ["PATH=/usr/bin:/bin", "A=1", "B=two words", "C=1-x"]
    assert cfg["Labels"] == {"version": "1.0", "other label": "y"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["User"] == "app"
    assert cfg["WorkingDir"] == "/srv/sub"
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"],
                                  "Interval": 5_000_000_000, "Retries": 2}
    assert cfg["Entrypoint"] == ["/bin/app"] and cfg["Cmd"] == ["--serve"]
    history = fb.image_doc(image)["history"]
    assert [h["created_by"] for h in history][:3] == [
        "ENV A=1 B=two words", "ENV C=1-x", "LABEL version=1.0 other label=y"]
    assert "srv/sub/" in fb.files(image)      # WORKDIR makes the directory


def test_entrypoint_resets_inherited_cmd(fb: FakeBackend, tmp_path: Path) -> None:
    image, _ = build(fb, tmp_path, "FROM busybox\nENTRYPOINT [\"/x\"]\n")
    assert config(fb, image)["Cmd"] is None


def test_run_sees_args_and_shell(fb: FakeBackend, tmp_path: Path) -> None:
    image, events = build(fb, tmp_path, """\
FROM busybox
ARG V=1
ARG UNSET
SHELL ["/bin/bash", "-ec"]
RUN echo $V
RUN ["/bin/true", "x"]
""", build_args={"V": "2"})
    first, second = fb.runs
    assert first.argv == ["/bin/bash", "-ec", "echo $V"]
    assert "V=2" in first.env and not any(e.startswith("UNSET=") for e in first.env)
    assert second.argv == ["/bin/true", "x"]
    history = [h["created_by"] for h in fb.image_doc(image)["history"]]
    assert "RUN |1 V=2 /bin/bash -ec echo $V # buildkit" in history
    assert any(isinstance(e, StepOutput) and e.data == "ran echo $V\n" for e in events)
    assert "V" not in json.dumps(config(fb, image).get("Env"))   # ARGs do not persist


def test_unconsumed_build_arg_is_a_warning(fb: FakeBackend, tmp_path: Path) -> None:
    _, events = build(fb, tmp_path, "FROM busybox\nRUN true\n",
                      build_args={"NOPE": "1", "HTTP_PROXY": "x"})
    warnings = [e.text for e in events if e.kind == "warning"]
    assert warnings == ["[Warning] One or more build-args [NOPE] were not consumed"]


def test_global_args_in_from_and_redeclared(fb: FakeBackend, tmp_path: Path) -> None:
    image, _ = build(fb, tmp_path, """\
ARG BASE=busybox
ARG V=global
FROM ${BASE}
ARG V
ENV SEEN=$V
""")
    assert "SEEN=global" in config(fb, image)["Env"]


def test_cache_hits_and_miss_reasons(fb: FakeBackend, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b.txt").write_text("bee")
    text = "FROM busybox\nRUN echo hi\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\nRUN cat /a.txt\n"
    first, _ = build(fb, tmp_path, text)
    runs = len(fb.runs)
    again, events = build(fb, tmp_path, text)
    assert again == first and len(fb.runs) == runs
    assert sum(isinstance(e, StepCached) for e in events) == 4
    (tmp_path / "b.txt").write_text("changed")
    third, events = build(fb, tmp_path, text)
    assert third != first
    cached = {e.step for e in events if isinstance(e, StepCached)}
    misses = {e.step: e.reason for e in events if isinstance(e, StepMiss)}
    assert cached == {2, 3}
    assert misses[4] == "files changed: b.txt"
    assert misses[5] == "a step before it was rebuilt"
    assert len(fb.runs) == runs + 1          # only the RUN after the changed COPY


def test_no_cache_and_filter(fb: FakeBackend, tmp_path: Path) -> None:
    text = "FROM busybox AS base\nRUN echo 1\nFROM base AS app\nRUN echo 2\n"
    build(fb, tmp_path, text)
    build(fb, tmp_path, text, no_cache=True)
    assert len(fb.runs) == 4
    _, events = build(fb, tmp_path, text, no_cache_filter=["app"])
    assert len(fb.runs) == 5
    assert any(isinstance(e, StepMiss) and "--no-cache-filter" in e.reason for e in events)


def test_build_arg_change_is_the_miss_reason(fb: FakeBackend, tmp_path: Path) -> None:
    text = "FROM busybox\nARG V\nRUN echo $V\n"
    build(fb, tmp_path, text, build_args={"V": "1"})
    _, events = build(fb, tmp_path, text, build_args={"V": "2"})
    assert [e.reason for e in events if isinstance(e, StepMiss)] == ["build args changed: V"]


def test_only_needed_stages_and_target(fb: FakeBackend, tmp_path: Path) -> None:
    text = """\
FROM busybox AS unused
RUN echo unused
FROM busybox AS lib
RUN echo lib
FROM busybox AS final
COPY --from=lib /ran /from-lib
"""
    image, _ = build(fb, tmp_path, text)
    assert [r.argv[-1] for r in fb.runs] == ["echo lib"]
    assert fb.files(image)["from-lib/1"] == b"echo lib"
    fb.runs.clear()
    build(fb, tmp_path, text, target="unused", no_cache=True)
    assert [r.argv[-1] for r in fb.runs] == ["echo unused"]
    with pytest.raises(InvalidArgument, match="failed to reach build target nope"):
        build(fb, tmp_path, text, target="nope")


def test_parallel_independent_stages(fb: FakeBackend, tmp_path: Path) -> None:
    seen: set[str] = set()
    barrier = threading.Barrier(2, timeout=5)

    def hook(spec: RunSpec) -> int:
        if spec.argv[-1] in ("echo a", "echo b"):
            barrier.wait()          # both stages must be running at once to pass
        seen.add(spec.argv[-1])
        return 0

    fb.run_hook = hook
    build(fb, tmp_path, """\
FROM busybox AS a
RUN echo a
FROM busybox AS b
RUN echo b
FROM busybox
COPY --from=a /ran /a
COPY --from=b /ran /b
""")
    assert seen == {"echo a", "echo b"}


def test_cycles_and_bad_input(fb: FakeBackend, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="circular dependency detected on stage: [ab]"):
        build(fb, tmp_path, "FROM busybox AS a\nCOPY --from=b /x /x\n"
                            "FROM busybox AS b\nCOPY --from=a /x /x\n")
    with pytest.raises(InvalidArgument, match="unknown flag: frm"):
        build(fb, tmp_path, "FROM busybox\nCOPY --frm=a x y\n")
    with pytest.raises(InvalidArgument, match="line 2: unknown instruction: RUNN"):
        build(fb, tmp_path, "FROM busybox\nRUNN x\n")
    with pytest.raises(NotFound, match="COPY failed: .*missing"):
        build(fb, tmp_path, "FROM busybox\nCOPY missing /x\n")
    with pytest.raises(NotFound, match="No such image: nope"):
        build(fb, tmp_path, "FROM nope\n")
    with pytest.raises(NotSupported, match="platform"):
        build(fb, tmp_path, "FROM --platform=linux/s390x busybox\n")


def test_failing_run_keeps_earlier_cache(fb: FakeBackend, tmp_path: Path) -> None:
    fb.run_hook = lambda spec: 3 if "fail" in spec.argv[-1] else 0
    text = "FROM busybox\nRUN echo ok\nRUN fail\n"
    with pytest.raises(StepFailed) as info:
        build(fb, tmp_path, text, tags=["x:1"])
    assert info.value.code == 3
    assert "returned a non-zero code: 3" in str(info.value)
    assert fb.tags == {}
    fb.run_hook = lambda spec: 0
    _, events = build(fb, tmp_path, text)
    assert {e.step for e in events if isinstance(e, StepCached)} == {2}


def test_copy_chown_heredoc_and_labels(fb: FakeBackend, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    image, _ = build(fb, tmp_path, """\
FROM busybox
ARG WHO=there
COPY <<EOF /hello.txt
hello $WHO
EOF
COPY --chown=app:app f /home/app/f
""", labels={"built.by": "test"}, tags=["t:1", "t:2"])
    assert fb.files(image)["hello.txt"] == b"hello there\n"
    assert fb.files(image)["home/app/f"] == b"x"
    assert config(fb, image)["Labels"] == {"built.by": "test"}
    assert fb.tags == {"t:1": image, "t:2": image}


def test_onbuild_triggers_run_in_the_child(fb: FakeBackend, tmp_path: Path) -> None:
    parent, _ = build(fb, tmp_path, "FROM busybox\nONBUILD RUN echo triggered\n",
                      tags=["parent"])
    fb.base_image = lambda ref, pull, platform: parent  # type: ignore[method-assign]
    child, _ = build(fb, tmp_path, "FROM parent\nENV X=1\n")
    assert fb.runs[-1].argv[-1] == "echo triggered"
    assert not config(fb, child).get("OnBuild")


def test_source_date_epoch_pins_created(fb: FakeBackend, tmp_path: Path) -> None:
    text = "FROM busybox\nENV A=1\nRUN echo x\n"
    a, _ = build(fb, tmp_path, text, source_date_epoch=1700000000, no_cache=True)
    b, _ = build(fb, tmp_path, text, source_date_epoch=1700000000, no_cache=True)
    assert a == b
    assert fb.image_doc(a)["created"] == "2023-11-14T22:13:20Z"


def test_step_numbers_count_the_whole_file(fb: FakeBackend, tmp_path: Path) -> None:
    _, events = build(fb, tmp_path, "FROM busybox\nENV A=1\nRUN echo\n")
    starts = [(e.step, e.total, e.text) for e in events if isinstance(e, StepStarted)]
    assert starts == [(1, 3, "FROM busybox"), (2, 3, "ENV A=1"), (3, 3, "RUN echo")]

def test_cache_from_an_image_without_its_intermediates(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    text = "FROM busybox\nENV A=1\nCOPY a.txt /a\nRUN echo x\nCMD [\"x\"]\n"
    built = FakeBackend()
    image, _ = build(built, tmp_path, text)
    # Another machine: the same base, only the final image (as a pull gives it).
    fresh = FakeBackend()
    fresh.images[image] = built.images[image]
    fresh.tags["reg/app:cache"] = image
    again, events = build(fresh, tmp_path, text, cache_from=["reg/app:cache"])
    assert fresh.runs == []
    assert [i for _, i in fresh.reused] == [0, 1]      # the COPY's layer, the RUN's
    assert sum(isinstance(e, StepCached) for e in events) == 4
    assert config(fresh, again) == config(built, image)
    (tmp_path / "a.txt").write_text("changed")
    _, events = build(fresh, tmp_path, text, cache_from=["reg/app:cache"])
    assert len(fresh.runs) == 1              # the COPY and what follows it missed
    missing, events = build(FakeBackend(), tmp_path, text, cache_from=["nope:1"])
    assert any(e.kind == "warning" and "--cache-from nope:1" in e.text for e in events)


def test_check_directive_warns_or_fails(fb: FakeBackend, tmp_path: Path) -> None:
    _, events = build(fb, tmp_path, "FROM busybox\nCMD echo hi\n")
    assert [e.text for e in events if e.kind == "warning"] == [
        "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended "
        "behavior related to OS signals (line 2)"]
    with pytest.raises(InvalidArgument, match="lint violation found for rules: "
                                              "JSONArgsRecommended"):
        build(fb, tmp_path, "# check=error=true\nFROM busybox\nCMD echo hi\n")


def test_source_date_epoch_as_a_build_arg(fb: FakeBackend, tmp_path: Path) -> None:
    a, events = build(fb, tmp_path, "FROM busybox\nENV A=1\n",
                      build_args={"SOURCE_DATE_EPOCH": "1700000000"})
    assert fb.image_doc(a)["created"] == "2023-11-14T22:13:20Z"
    assert not [e for e in events if e.kind == "warning"]


def test_proxy_args_reach_run_without_arg_and_stay_out_of_history(fb: FakeBackend,
                                                                   tmp_path: Path) -> None:
    image, events = build(fb, tmp_path, "FROM busybox\nRUN env\n",
                          build_args={"HTTP_PROXY": "http://proxy:3128"})
    assert "HTTP_PROXY=http://proxy:3128" in fb.runs[-1].env
    history = [h["created_by"] for h in fb.image_doc(image)["history"]]
    assert history[-1] == "RUN /bin/sh -c env # buildkit"
    assert not [e for e in events if e.kind == "warning"]
    # another proxy: the same cache (BuildKit leaves proxies out of the key)
    _, events = build(fb, tmp_path, "FROM busybox\nRUN env\n",
                      build_args={"HTTP_PROXY": "http://other:3128"})
    assert any(isinstance(e, StepCached) for e in events)


def test_add_of_a_git_repository_is_refused(fb: FakeBackend, tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match="git repository"):
        build(fb, tmp_path, "FROM busybox\nADD https://example.invalid/repo.git /src\n")


def test_history_in_buildkits_words(fb: FakeBackend, tmp_path: Path) -> None:
    image, _ = build(fb, tmp_path, """\
FROM busybox
ARG V=1 W
EXPOSE 8000-8001 53/udp
VOLUME /data /cache
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD wget -q localhost
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hello"]
""")
    assert [h["created_by"] for h in fb.image_doc(image)["history"]] == [
        "ARG V=1 W",
        "EXPOSE map[53/udp:{} 8000/tcp:{} 8001/tcp:{}]",
        "VOLUME [/data /cache]",
        "SHELL [/bin/sh -ec]",
        'HEALTHCHECK &{["CMD-SHELL" "wget -q localhost"] "5s" "2s" "0s" "0s" \'\\x04\'}',
        'ENTRYPOINT ["/bin/sh" "-c"]',
        'CMD ["echo hello"]']
    assert all(h["empty_layer"] for h in fb.image_doc(image)["history"])
    assert set(config(fb, image)["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "53/udp"}
