"""compose project: up/down/restart/... against an in-memory Engine API.

The models come from the real ``normalize`` and the create bodies from the real
``convert``; only the engine is a fake: containers with labels and states,
networks, volumes and images, recording every call that changes something, with
scripted health and exits so the dependency waits can be followed step by step.
"""

from __future__ import annotations

import io
import tarfile
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from ketch.compose import labels as L
from ketch.compose import project as project_mod
from ketch.compose.errors import ComposeError
from ketch.compose.model import Project
from ketch.compose.normalize import apply_profiles, normalize
from ketch.compose.progress import Progress
from ketch.compose.project import Compose, DownOptions, UpOptions
from ketch.errors import Conflict, InvalidArgument, NotFound

BUSYBOX_ID = "sha256:" + "b" * 64


def labelled(labels: dict[str, str] | None, wanted: list[str]) -> bool:
    """The engine's label filter: every ``key`` or ``key=value`` present."""
    have = labels or {}
    for f in wanted:
        k, eq, v = f.partition("=")
        if k not in have or (eq and have[k] != v):
            return False
    return True


# --- the fake engine -----------------------------------------------------------------------------

class Engine:
    """The Engine API methods Compose calls, on plain dicts."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ctrs: dict[str, dict[str, Any]] = {}           # id -> record
        self.nets: dict[str, dict[str, Any]] = {}           # name -> record
        self.vols: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {"busybox": {"Id": BUSYBOX_ID, "Config": {}}}
        self.log: list[tuple[Any, ...]] = []
        self.health: dict[str, list[str]] = {}              # name -> Health.Status per inspect
        self.exits: dict[str, list[int]] = {}               # name -> [inspects left, exit code]
        self.fail_create: set[str] = set()
        self.seq = 0

    # helpers for the tests
    def by_name(self, name: str) -> dict[str, Any]:
        for c in self.ctrs.values():
            if c["Name"] == name:
                return c
        raise KeyError(name)

    def names(self) -> list[str]:
        return sorted(c["Name"] for c in self.ctrs.values())

    def status(self, name: str) -> str:
        return str(self.by_name(name)["Status"])

    def events(self, *kinds: str, since: int = 0) -> list[tuple[Any, ...]]:
        return [e for e in self.log[since:] if not kinds or e[0] in kinds]

    def add_container(self, name: str, labels: dict[str, str], status: str = "running"
                      ) -> str:
        with self.lock:
            self.seq += 1
            cid = f"{self.seq:064x}"
            self.ctrs[cid] = {"Id": cid, "Name": name, "Status": status, "ExitCode": 0,
                              "Body": {"Image": "busybox", "Labels": labels}}
        return cid

    def _get(self, ref: str) -> dict[str, Any]:
        if ref in self.ctrs:
            return self.ctrs[ref]
        for c in self.ctrs.values():
            if c["Name"] == ref:
                return c
        raise NotFound(f"No such container: {ref}")

    # containers
    def containers(self, *, all: bool = False, filters: dict[str, list[str]] | None = None
                   ) -> list[dict[str, Any]]:
        wanted = (filters or {}).get("label", [])
        out = []
        with self.lock:
            for c in self.ctrs.values():
                labels = c["Body"].get("Labels") or {}
                if not all and c["Status"] != "running":
                    continue
                if labelled(labels, wanted):
                    out.append({"Id": c["Id"], "Names": ["/" + c["Name"]],
                                "Image": c["Body"].get("Image"), "Labels": dict(labels),
                                "State": c["Status"]})
        return out

    def container_create(self, body: dict[str, Any], *, name: str = "") -> dict[str, Any]:
        with self.lock:
            if name in self.fail_create:
                raise InvalidArgument(f"create of {name} refused by the test")
            if body.get("Image") not in self.images:
                raise NotFound(f"No such image: {body.get('Image')}")
            if any(c["Name"] == name for c in self.ctrs.values()):
                raise Conflict(f'Conflict. The container name "/{name}" is already in use')
            cid = self.add_container(name, {}, status="created")
            self.ctrs[cid]["Body"] = body
            self.log.append(("create", name))
        return {"Id": cid}

    def container_start(self, cid: str, **kw: Any) -> None:
        with self.lock:
            c = self._get(cid)
            c["Status"] = "running"
            self.log.append(("start", c["Name"]))
            ex = self.exits.get(c["Name"])
            if ex is not None and ex[0] <= 0:
                c["Status"], c["ExitCode"] = "exited", ex[1]

    def container_stop(self, cid: str, *, timeout: int | None = None, **kw: Any) -> None:
        with self.lock:
            c = self._get(cid)
            if c["Status"] == "running":
                c["Status"], c["ExitCode"] = "exited", 0
            self.log.append(("stop", c["Name"], timeout))

    def container_restart(self, cid: str, *, timeout: int | None = None, **kw: Any) -> None:
        with self.lock:
            c = self._get(cid)
            c["Status"] = "running"
            self.log.append(("restart", c["Name"], timeout))

    def container_unpause(self, cid: str) -> None:
        with self.lock:
            c = self._get(cid)
            c["Status"] = "running"
            self.log.append(("unpause", c["Name"]))

    def container_remove(self, cid: str, *, force: bool = False, volumes: bool = False,
                         **kw: Any) -> None:
        with self.lock:
            c = self._get(cid)
            if c["Status"] == "running" and not force:
                raise Conflict("You cannot remove a running container")
            del self.ctrs[c["Id"]]
            self.log.append(("remove", c["Name"], volumes))

    def container_rename(self, cid: str, new_name: str) -> None:
        with self.lock:
            c = self._get(cid)
            if any(o["Name"] == new_name for o in self.ctrs.values()):
                raise Conflict(f'Conflict. The container name "/{new_name}" is already in use')
            self.log.append(("rename", c["Name"], new_name))
            c["Name"] = new_name

    def container_inspect(self, cid: str, **kw: Any) -> dict[str, Any]:
        with self.lock:
            c = self._get(cid)
            name = c["Name"]
            self.log.append(("inspect", name))
            ex = self.exits.get(name)
            if ex is not None and c["Status"] == "running":
                ex[0] -= 1
                if ex[0] <= 0:
                    c["Status"], c["ExitCode"] = "exited", ex[1]
            state: dict[str, Any] = {"Status": c["Status"], "Running": c["Status"] == "running",
                                     "ExitCode": c["ExitCode"]}
            hc = c["Body"].get("Healthcheck")
            if hc and (hc.get("Test") or ["NONE"])[0] != "NONE":
                script = self.health.get(name) or ["healthy"]
                state["Health"] = {"Status": script[0], "FailingStreak": 0, "Log": []}
                if len(script) > 1 and c["Status"] == "running":
                    script.pop(0)
            return {"Id": c["Id"], "Name": "/" + name, "State": state,
                    "Config": {"Labels": dict(c["Body"].get("Labels") or {}),
                               "Image": c["Body"].get("Image")},
                    "Mounts": []}

    def container_archive_put(self, cid: str, path: str, tar: Any, *,
                              copy_uid_gid: bool = False) -> None:
        with tarfile.open(fileobj=tar) as tf:
            files = {m.name: (tf.extractfile(m).read(), m.mode)  # type: ignore[union-attr]
                     for m in tf.getmembers()}
        self.log.append(("archive_put", self._get(cid)["Name"], path, files, copy_uid_gid))

    # networks
    def networks(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        names = (filters or {}).get("name", [])
        # the engine's name filter matches substrings
        return [dict(n) for k, n in self.nets.items()
                if (not names or any(x in k for x in names))
                and labelled(n.get("Labels"), (filters or {}).get("label", []))]

    def network_inspect(self, name: str, **kw: Any) -> dict[str, Any]:
        if name not in self.nets:
            raise NotFound(f"network {name} not found")
        return dict(self.nets[name])

    def network_create(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if name in self.nets:
                raise Conflict(f"network with name {name} already exists")
            self.nets[name] = {"Name": name, "Id": "n-" + name, "Labels": options.get("Labels"),
                               "Options": options}
            self.log.append(("network_create", name))
        return {"Id": "n-" + name}

    def network_remove(self, name: str) -> None:
        if name not in self.nets:
            raise NotFound(f"network {name} not found")
        del self.nets[name]
        self.log.append(("network_remove", name))

    def network_connect(self, network: str, container: str,
                        endpoint: dict[str, Any] | None = None) -> None:
        self.log.append(("network_connect", network, self._get(container)["Name"], endpoint))

    # volumes
    def volumes(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return [dict(v) for v in self.vols.values()
                if labelled(v.get("Labels"), (filters or {}).get("label", []))]

    def volume_inspect(self, name: str) -> dict[str, Any]:
        if name not in self.vols:
            raise NotFound(f"get {name}: no such volume")
        return dict(self.vols[name])

    def volume_create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.vols[body["Name"]] = dict(body)
            self.log.append(("volume_create", body["Name"]))
        return dict(body)

    def volume_remove(self, name: str, **kw: Any) -> None:
        if name not in self.vols:
            raise NotFound(f"get {name}: no such volume")
        del self.vols[name]
        self.log.append(("volume_remove", name))

    # images
    def image_inspect(self, name: str) -> dict[str, Any]:
        if name not in self.images:
            raise NotFound(f"No such image: {name}")
        return dict(self.images[name])

    def image_remove(self, name: str, **kw: Any) -> list[dict[str, str]]:
        if name not in self.images:
            raise NotFound(f"No such image: {name}")
        del self.images[name]
        self.log.append(("image_remove", name))
        return [{"Untagged": name}]


# --- projects through the real loader stages -----------------------------------------------------

@dataclass
class Raw:
    model: dict[str, Any]
    working_dir: str = "/proj"
    name: str = "proj"
    environment: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=lambda: ["/proj/compose.yaml"])


def make_project(text: str, working_dir: str = "/proj") -> Project:
    raw = Raw(yaml.safe_load(text), working_dir=working_dir,
              files=[working_dir + "/compose.yaml"])
    model = normalize(raw)
    return Project.of(raw.name, raw.working_dir, list(raw.files), apply_profiles(model, []),
                      all_services=model["services"], environment={})


class Run:
    """A Compose over the engine, with what it printed."""

    def __init__(self, engine: Engine, text: str, **kw: Any) -> None:
        self.out = io.StringIO()
        self.engine = engine
        self.project = make_project(text)
        self.compose = Compose(engine, self.project, Progress(self.out, tty=False), **kw)

    def up(self, **kw: Any) -> None:
        self.compose.up(UpOptions(**kw))

    def down(self, **kw: Any) -> None:
        self.compose.down(DownOptions(**kw))

    @property
    def said(self) -> list[str]:
        return self.out.getvalue().splitlines()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(project_mod, "POLL", 0.001)


@pytest.fixture
def engine() -> Engine:
    return Engine()


APP = """
services:
  db:
    image: busybox
    command: [sleep, "1000"]
    healthcheck: {test: [CMD, "true"], interval: 1s}
    volumes: [data:/var/lib/data]
  web:
    image: busybox
    command: [httpd, -f]
    ports: ["8080:80"]
    depends_on:
      db: {condition: service_healthy}
volumes:
  data: {}
"""

def with_worker(text: str = APP) -> str:
    head, _, tail = text.partition("volumes:\n  data: {}")
    return head + """  worker:
    image: busybox
    depends_on: [db]
""" + "volumes:\n  data: {}" + tail


def pos(log: list[tuple[Any, ...]], *event: Any) -> int:
    for i, e in enumerate(log):
        if e[:len(event)] == event:
            return i
    raise AssertionError(f"{event} not in {log}")


# --- up ------------------------------------------------------------------------------------------

def test_up_creates_network_volume_and_labelled_containers(engine: Engine) -> None:
    r = Run(engine, APP)
    r.up()
    assert engine.names() == ["proj-db-1", "proj-web-1"]
    assert engine.status("proj-db-1") == engine.status("proj-web-1") == "running"

    net = engine.nets["proj_default"]
    assert net["Labels"] == {L.NETWORK: "default", L.PROJECT: "proj",
                             L.VERSION: L.COMPOSE_VERSION}
    assert net["Options"]["Driver"] == "bridge"
    assert set(engine.vols) == {"proj_data"}
    assert engine.vols["proj_data"]["Labels"] == {L.VOLUME: "data", L.PROJECT: "proj",
                                                  L.VERSION: L.COMPOSE_VERSION}
    assert engine.vols["proj_data"]["Driver"] == "local"

    web = engine.by_name("proj-web-1")["Body"]
    labels = web["Labels"]
    assert labels[L.PROJECT] == "proj"
    assert labels[L.SERVICE] == "web"
    assert labels[L.NUMBER] == "1"
    assert labels[L.ONEOFF] == "False"
    assert labels[L.CONFIG_HASH] == r.project.services["web"].config_hash()
    assert labels[L.DEPENDS_ON] == "db:service_healthy:false"
    assert labels[L.IMAGE] == BUSYBOX_ID
    assert labels[L.WORKING_DIR] == "/proj"
    assert labels[L.CONFIG_FILES] == "/proj/compose.yaml"
    assert labels[L.VERSION] == L.COMPOSE_VERSION
    assert engine.by_name("proj-db-1")["Body"]["Labels"][L.DEPENDS_ON] == ""
    # the body is convert's
    assert web["Image"] == "busybox" and web["Cmd"] == ["httpd", "-f"]
    assert web["HostConfig"]["NetworkMode"] == "proj_default"
    assert "proj-web-1" in web["NetworkingConfig"]["EndpointsConfig"]["proj_default"]["Aliases"]

    said = r.said
    for line in (" Network proj_default  Creating", " Network proj_default  Created",
                 " Volume proj_data  Created", " Container proj-db-1  Created",
                 " Container proj-web-1  Created", " Container proj-db-1  Started",
                 " Container proj-db-1  Healthy", " Container proj-web-1  Started"):
        assert line in said, (line, said)


def test_up_goes_in_dependency_order(engine: Engine) -> None:
    Run(engine, APP).up()
    log = engine.log
    assert pos(log, "network_create") < pos(log, "create", "proj-db-1")
    assert pos(log, "volume_create") < pos(log, "create", "proj-db-1")
    assert pos(log, "create", "proj-db-1") < pos(log, "create", "proj-web-1")
    assert pos(log, "start", "proj-db-1") < pos(log, "start", "proj-web-1")


def test_service_healthy_waits_for_the_health_to_turn(engine: Engine) -> None:
    engine.health["proj-db-1"] = ["starting", "starting", "starting", "healthy"]
    r = Run(engine, APP)
    r.up()
    log = engine.log
    looks = [i for i, e in enumerate(log) if e == ("inspect", "proj-db-1")]
    assert len(looks) >= 4
    # web started only after the look that saw "healthy"
    assert looks[3] < pos(log, "start", "proj-web-1")
    assert r.said.index(" Container proj-db-1  Waiting") < \
        r.said.index(" Container proj-db-1  Healthy") < \
        r.said.index(" Container proj-web-1  Started")


def test_unhealthy_dependency_fails_the_up(engine: Engine) -> None:
    engine.health["proj-db-1"] = ["starting", "unhealthy"]
    r = Run(engine, APP)
    with pytest.raises(ComposeError) as info:
        r.up()
    assert str(info.value) == "dependency failed to start: container proj-db-1 is unhealthy"
    assert engine.status("proj-web-1") == "created"
    assert ("start", "proj-web-1") not in engine.log
    assert " Container proj-db-1  Error" in r.said


def test_exited_dependency_fails_service_healthy(engine: Engine) -> None:
    engine.exits["proj-db-1"] = [1, 1]            # exits (1) at the first look
    engine.health["proj-db-1"] = ["starting"]
    with pytest.raises(ComposeError) as info:
        Run(engine, APP).up()
    assert str(info.value) == "dependency failed to start: container proj-db-1 exited (1)"
    assert ("start", "proj-web-1") not in engine.log


def test_service_healthy_without_healthcheck(engine: Engine) -> None:
    text = APP.replace('    healthcheck: {test: [CMD, "true"], interval: 1s}\n', "")
    with pytest.raises(ComposeError) as info:
        Run(engine, text).up()
    assert str(info.value) == \
        "dependency failed to start: container proj-db-1 has no healthcheck configured"
    assert ("start", "proj-web-1") not in engine.log


def test_optional_unhealthy_dependency_only_warns(engine: Engine) -> None:
    engine.health["proj-db-1"] = ["starting", "unhealthy"]
    r = Run(engine, APP.replace("{condition: service_healthy}",
                                "{condition: service_healthy, required: false}"))
    r.up()
    assert engine.status("proj-web-1") == "running"
    assert [s for s in r.said if s.startswith('WARN[0000] optional dependency "db"')]


ONESHOT = """
services:
  init:
    image: busybox
    command: [sh, -c, "exit 0"]
  web:
    image: busybox
    depends_on:
      init: {condition: service_completed_successfully}
"""


def test_service_completed_successfully_waits_for_exit_0(engine: Engine) -> None:
    engine.exits["proj-init-1"] = [3, 0]          # runs for three looks, then exits 0
    r = Run(engine, ONESHOT)
    r.up()
    log = engine.log
    looks = [i for i, e in enumerate(log) if e == ("inspect", "proj-init-1")]
    assert len(looks) >= 3
    assert looks[2] < pos(log, "start", "proj-web-1")
    assert engine.status("proj-web-1") == "running"
    assert " Container proj-init-1  Exited" in r.said


def test_service_completed_with_exit_3_fails(engine: Engine) -> None:
    engine.exits["proj-init-1"] = [1, 3]
    r = Run(engine, ONESHOT)
    with pytest.raises(ComposeError) as info:
        r.up()
    assert str(info.value) == 'service "init" didn\'t complete successfully: exit 3'
    assert ("start", "proj-web-1") not in engine.log


def test_unchanged_second_up_only_reports_running(engine: Engine) -> None:
    Run(engine, APP).up()
    mark = len(engine.log)
    again = Run(engine, APP)
    again.up()
    changed = engine.events("create", "start", "stop", "remove", "rename", "restart",
                            "network_create", "volume_create", since=mark)
    assert changed == []
    assert " Container proj-db-1  Running" in again.said
    assert " Container proj-web-1  Running" in again.said
    assert not [s for s in again.said if "Creat" in s or "Recreate" in s]


def test_changed_service_is_recreated_alone(engine: Engine) -> None:
    Run(engine, APP).up()
    old = engine.by_name("proj-web-1")["Id"]
    db = engine.by_name("proj-db-1")["Id"]
    mark = len(engine.log)
    r = Run(engine, APP.replace("[httpd, -f]", "[httpd, -f, -p, '81']"))
    r.up()
    new = engine.by_name("proj-web-1")
    assert new["Id"] != old and new["Body"]["Cmd"] == ["httpd", "-f", "-p", "81"]
    assert new["Body"]["Labels"][L.CONFIG_HASH] == r.project.services["web"].config_hash()
    assert new["Body"]["Labels"][L.REPLACE] == "proj-web-1"
    assert engine.by_name("proj-db-1")["Id"] == db
    log = engine.events("create", "start", "stop", "remove", "rename", since=mark)
    aside = f"{old[:12]}_proj-web-1"
    assert log == [("stop", "proj-web-1", None), ("rename", "proj-web-1", aside),
                   ("create", "proj-web-1"), ("remove", aside, False),
                   ("start", "proj-web-1")]
    assert new["Status"] == "running"
    assert " Container proj-web-1  Recreate" in r.said
    assert " Container proj-web-1  Recreated" in r.said
    assert " Container proj-db-1  Running" in r.said


def test_a_new_image_recreates(engine: Engine) -> None:
    Run(engine, APP).up()
    engine.images["busybox"] = {"Id": "sha256:" + "c" * 64, "Config": {}}
    mark = len(engine.log)
    Run(engine, APP).up()
    assert sorted(e[1] for e in engine.events("create", since=mark)) == \
        ["proj-db-1", "proj-web-1"]
    assert engine.by_name("proj-web-1")["Body"]["Labels"][L.IMAGE] == "sha256:" + "c" * 64


def test_force_recreate_and_no_recreate(engine: Engine) -> None:
    Run(engine, APP).up()
    mark = len(engine.log)
    Run(engine, APP).up(recreate="force")
    assert sorted(e[1] for e in engine.events("create", since=mark)) == \
        ["proj-db-1", "proj-web-1"]
    mark = len(engine.log)
    Run(engine, APP.replace("[httpd, -f]", "[httpd]")).up(recreate="never")
    assert engine.events("create", "remove", since=mark) == []
    assert engine.by_name("proj-web-1")["Body"]["Cmd"] == ["httpd", "-f"]


def test_failed_recreate_puts_the_old_container_back(engine: Engine) -> None:
    Run(engine, APP).up()
    old = engine.by_name("proj-web-1")["Id"]
    engine.fail_create.add("proj-web-1")
    with pytest.raises(InvalidArgument, match="refused by the test"):
        Run(engine, APP.replace("[httpd, -f]", "[httpd]")).up()
    assert engine.by_name("proj-web-1")["Id"] == old
    assert engine.names() == ["proj-db-1", "proj-web-1"]


def test_no_start_creates_only(engine: Engine) -> None:
    Run(engine, APP).up(start=False)
    assert engine.names() == ["proj-db-1", "proj-web-1"]
    assert engine.events("start") == []


def test_up_of_one_service_brings_its_dependencies(engine: Engine) -> None:
    Run(engine, with_worker()).up(services=["web"])
    assert engine.names() == ["proj-db-1", "proj-web-1"]


def test_up_no_deps_brings_only_the_service(engine: Engine) -> None:
    Run(engine, with_worker()).up(services=["worker"], deps=False)
    assert engine.names() == ["proj-worker-1"]


# --- scale ---------------------------------------------------------------------------------------

SCALED = """
services:
  web:
    image: busybox
"""


def numbers(engine: Engine) -> list[int]:
    return sorted(int(c["Body"]["Labels"][L.NUMBER]) for c in engine.ctrs.values())


def test_scale_up_numbers_containers(engine: Engine) -> None:
    Run(engine, SCALED).up(scale={"web": 3})
    assert engine.names() == ["proj-web-1", "proj-web-2", "proj-web-3"]
    assert numbers(engine) == [1, 2, 3]


def test_scale_from_the_model(engine: Engine) -> None:
    Run(engine, SCALED + "    scale: 2\n").up()
    assert engine.names() == ["proj-web-1", "proj-web-2"]
    Run(engine, SCALED + "    deploy: {replicas: 3}\n").up()
    assert engine.names() == ["proj-web-1", "proj-web-2", "proj-web-3"]


def test_scale_down_removes_the_highest_numbers(engine: Engine) -> None:
    Run(engine, SCALED).up(scale={"web": 3})
    mark = len(engine.log)
    Run(engine, SCALED).up(scale={"web": 1})
    assert engine.names() == ["proj-web-1"]
    assert [e[1] for e in engine.events("remove", since=mark)] == ["proj-web-3", "proj-web-2"]
    assert engine.events("create", since=mark) == []


def test_scale_down_compares_numbers_not_names(engine: Engine) -> None:
    Run(engine, SCALED).up(scale={"web": 11})
    Run(engine, SCALED).up(scale={"web": 10})
    assert "proj-web-11" not in engine.names()
    assert numbers(engine) == list(range(1, 11))


def test_scale_up_fills_the_gaps(engine: Engine) -> None:
    Run(engine, SCALED).up(scale={"web": 3})
    engine.container_remove("proj-web-2", force=True)
    mark = len(engine.log)
    Run(engine, SCALED).up(scale={"web": 3})
    assert engine.events("create", since=mark) == [("create", "proj-web-2")]


def test_scale_to_zero(engine: Engine) -> None:
    Run(engine, SCALED).up(scale={"web": 2})
    Run(engine, SCALED).up(scale={"web": 0})
    assert engine.names() == []


def test_custom_container_name_cannot_scale(engine: Engine) -> None:
    with pytest.raises(ComposeError) as info:
        Run(engine, SCALED + "    container_name: fixed\n").up(scale={"web": 2})
    assert str(info.value) == ('service "web" uses the custom container name "fixed": '
                               "it cannot be scaled to 2")
    Run(engine, SCALED + "    container_name: fixed\n").up()
    assert engine.names() == ["fixed"]


# --- networks, volumes, images -------------------------------------------------------------------

EXTERNAL_NET = """
services:
  web: {image: busybox, networks: [ext]}
networks:
  ext: {external: true, name: shared}
"""

EXTERNAL_VOL = """
services:
  web: {image: busybox, volumes: ["v:/v"]}
volumes:
  v: {external: true, name: myvol}
"""


def test_missing_external_network(engine: Engine) -> None:
    with pytest.raises(ComposeError) as info:
        Run(engine, EXTERNAL_NET).up()
    assert str(info.value) == "network shared declared as external, but could not be found"
    assert engine.names() == []


def test_existing_external_network_is_used_and_kept(engine: Engine) -> None:
    engine.nets["shared"] = {"Name": "shared", "Id": "n-shared", "Labels": {}}
    r = Run(engine, EXTERNAL_NET)
    r.up()
    assert engine.events("network_create") == []
    assert engine.by_name("proj-web-1")["Body"]["HostConfig"]["NetworkMode"] == "shared"
    r.down()
    assert "shared" in engine.nets


def test_missing_external_volume(engine: Engine) -> None:
    with pytest.raises(ComposeError) as info:
        Run(engine, EXTERNAL_VOL).up()
    assert str(info.value) == 'external volume "myvol" not found'


def test_existing_external_volume_is_used_and_kept(engine: Engine) -> None:
    engine.vols["myvol"] = {"Name": "myvol", "Labels": {}}
    r = Run(engine, EXTERNAL_VOL)
    r.up()
    assert engine.events("volume_create") == []
    r.down(volumes=True)
    assert "myvol" in engine.vols


def test_volume_not_made_by_compose_is_warned_about(engine: Engine) -> None:
    engine.vols["proj_data"] = {"Name": "proj_data", "Labels": {}}
    r = Run(engine, APP)
    r.up()
    assert engine.events("volume_create") == []
    assert ('WARN[0000] volume "proj_data" already exists but was not created by Docker '
            "Compose. Use `external: true` to use an existing volume") in r.said


def test_a_network_whose_name_only_contains_ours_is_not_ours(engine: Engine) -> None:
    engine.nets["xproj_default"] = {"Name": "xproj_default", "Id": "n-x", "Labels": {}}
    Run(engine, SCALED).up()
    assert ("network_create", "proj_default") in engine.log


def test_second_network_is_connected_after_create(engine: Engine) -> None:
    Run(engine, """
services:
  web: {image: busybox, networks: {front: {}, back: {priority: 10}}}
networks: {front: {}, back: {}}
""").up()
    body = engine.by_name("proj-web-1")["Body"]
    assert list(body["NetworkingConfig"]["EndpointsConfig"]) == ["proj_back"]
    connects = engine.events("network_connect")
    assert [(e[1], e[2]) for e in connects] == [("proj_front", "proj-web-1")]
    assert pos(engine.log, "network_connect") < pos(engine.log, "start", "proj-web-1")


def test_config_content_is_put_into_the_container_before_start(engine: Engine) -> None:
    Run(engine, """
services:
  web: {image: busybox, configs: [{source: c1, target: /etc/app.conf}]}
configs:
  c1: {content: "hello"}
""").up()
    (put,) = engine.events("archive_put")
    assert put[1:3] == ("proj-web-1", "/")
    assert put[3] == {"etc/app.conf": (b"hello", 0o444)}
    assert put[4] is True
    assert pos(engine.log, "archive_put") < pos(engine.log, "start", "proj-web-1")


BUILT = """
services:
  api: {build: ., command: [serve]}
  db: {image: busybox}
"""


def test_missing_image_without_puller(engine: Engine) -> None:
    with pytest.raises(ComposeError) as info:
        Run(engine, "services: {web: {image: nginx}}").up()
    assert str(info.value) == "service 'web': pulling nginx is not possible here"


def test_missing_image_is_pulled(engine: Engine) -> None:
    pulled: list[tuple[str, bool]] = []

    def puller(image: str, quiet: bool) -> None:
        pulled.append((image, quiet))
        engine.images[image] = {"Id": "sha256:" + "d" * 64, "Config": {}}

    r = Run(engine, "services: {web: {image: nginx}}", puller=puller)
    r.up()
    assert pulled == [("nginx", False)]
    assert engine.names() == ["proj-web-1"]
    assert " Image nginx  Pulled" in r.said


def test_build_needed_without_builder(engine: Engine) -> None:
    with pytest.raises(ComposeError) as info:
        Run(engine, BUILT).up()
    assert str(info.value) == "service 'api' needs a build, and none can be run here"


def test_build_of_a_missing_image(engine: Engine) -> None:
    built: list[tuple[str, str]] = []

    def builder(svc: Any, image: str) -> None:
        built.append((svc.name, image))
        engine.images[image] = {"Id": "sha256:" + "e" * 64, "Config": {}}

    Run(engine, BUILT, builder=builder).up()
    assert built == [("api", "proj-api")]
    assert engine.by_name("proj-api-1")["Body"]["Image"] == "proj-api"
    built.clear()
    Run(engine, BUILT, builder=builder).up()          # image there: no build
    assert built == []
    Run(engine, BUILT, builder=builder).up(build="always")
    assert built == [("api", "proj-api")]


def test_no_build_with_a_missing_image(engine: Engine) -> None:
    with pytest.raises(ComposeError) as info:
        Run(engine, BUILT).up(build="never")
    assert str(info.value) == ("image proj-api for service api not found; build it first "
                               "(--build or `compose build`)")


# --- down ----------------------------------------------------------------------------------------

def test_down_removes_in_reverse_dependency_order(engine: Engine) -> None:
    Run(engine, with_worker()).up()
    mark = len(engine.log)
    r = Run(engine, with_worker())
    r.down()
    assert engine.names() == []
    log = engine.log[mark:]
    for dependent in ("proj-web-1", "proj-worker-1"):
        assert pos(log, "remove", dependent) < pos(log, "stop", "proj-db-1")
    assert pos(log, "stop", "proj-db-1") < pos(log, "remove", "proj-db-1")
    assert ("network_remove", "proj_default") in log
    assert pos(log, "remove", "proj-db-1") < pos(log, "network_remove")
    assert engine.nets == {}
    assert set(engine.vols) == {"proj_data"}                 # kept without -v
    assert [e[2] for e in engine.events("remove", since=mark)] == [False] * 3
    assert " Container proj-db-1  Removed" in r.said
    assert " Network proj_default  Removed" in r.said


def test_down_volumes(engine: Engine) -> None:
    Run(engine, APP).up()
    mark = len(engine.log)
    r = Run(engine, APP)
    r.down(volumes=True)
    assert engine.vols == {}
    assert ("volume_remove", "proj_data") in engine.log[mark:]
    assert [e[2] for e in engine.events("remove", since=mark)] == [True, True]
    assert " Volume proj_data  Removed" in r.said


def test_down_of_nothing_is_quiet(engine: Engine) -> None:
    r = Run(engine, APP)
    r.down(volumes=True)
    assert engine.log == []
    assert r.said == []


def orphan(engine: Engine) -> str:
    return engine.add_container("proj-old-1", {L.PROJECT: "proj", L.SERVICE: "old",
                                               L.NUMBER: "1", L.ONEOFF: "False"})


ORPHAN_WARNING = ("WARN[0000] Found orphan containers ([proj-old-1]) for this project. If you "
                  "removed or renamed this service in your compose file, you can run this "
                  "command with the --remove-orphans flag to clean it up.")


def test_down_warns_about_orphans_and_keeps_them(engine: Engine) -> None:
    Run(engine, SCALED).up()
    orphan(engine)
    r = Run(engine, SCALED)
    r.down()
    assert ORPHAN_WARNING in r.said
    assert engine.names() == ["proj-old-1"]


def test_down_remove_orphans(engine: Engine) -> None:
    Run(engine, SCALED).up()
    orphan(engine)
    r = Run(engine, SCALED)
    r.down(remove_orphans=True)
    assert engine.names() == []
    assert ORPHAN_WARNING not in r.said


def test_up_warns_about_orphans_or_removes_them(engine: Engine) -> None:
    orphan(engine)
    other = engine.add_container("other-old-1", {L.PROJECT: "other", L.SERVICE: "old"})
    r = Run(engine, SCALED)
    r.up()
    assert ORPHAN_WARNING in r.said
    assert "proj-old-1" in engine.names()
    Run(engine, SCALED).up(remove_orphans=True)
    assert engine.names() == ["other-old-1", "proj-web-1"]
    assert other in engine.ctrs


def test_service_out_of_the_profiles_is_no_orphan(engine: Engine) -> None:
    text = SCALED + "  debug: {image: busybox, profiles: [dev]}\n"
    engine.add_container("proj-debug-1", {L.PROJECT: "proj", L.SERVICE: "debug",
                                          L.NUMBER: "1", L.ONEOFF: "False"})
    r = Run(engine, text)
    r.up()
    assert not [s for s in r.said if "orphan" in s]


def test_down_rmi_local_removes_only_built_images(engine: Engine) -> None:
    engine.images["proj-api"] = {"Id": "sha256:" + "a" * 64, "Config": {}}
    Run(engine, BUILT).up()
    r = Run(engine, BUILT)
    r.down(rmi="local")
    assert engine.events("image_remove") == [("image_remove", "proj-api")]
    assert set(engine.images) == {"busybox"}
    assert " Image proj-api  Removed" in r.said


def test_down_rmi_all(engine: Engine) -> None:
    engine.images["proj-api"] = {"Id": "sha256:" + "a" * 64, "Config": {}}
    Run(engine, BUILT).up()
    Run(engine, BUILT).down(rmi="all")
    assert sorted(e[1] for e in engine.events("image_remove")) == ["busybox", "proj-api"]
    assert engine.images == {}


def test_down_without_rmi_keeps_images(engine: Engine) -> None:
    engine.images["proj-api"] = {"Id": "sha256:" + "a" * 64, "Config": {}}
    Run(engine, BUILT).up()
    Run(engine, BUILT).down()
    assert engine.events("image_remove") == []


# --- stop, start, restart ------------------------------------------------------------------------

def test_stop_goes_dependents_first(engine: Engine) -> None:
    Run(engine, with_worker()).up()
    mark = len(engine.log)
    Run(engine, with_worker()).compose.stop(timeout=3)
    log = engine.events("stop", since=mark)
    assert sorted(e[1] for e in log) == ["proj-db-1", "proj-web-1", "proj-worker-1"]
    assert log[-1] == ("stop", "proj-db-1", 3)
    assert engine.status("proj-db-1") == "exited"


def test_start_waits_for_dependencies_again(engine: Engine) -> None:
    Run(engine, APP).up()
    Run(engine, APP).compose.stop()
    engine.health["proj-db-1"] = ["starting", "healthy"]
    mark = len(engine.log)
    Run(engine, APP).compose.start()
    log = engine.log[mark:]
    looks = [i for i, e in enumerate(log) if e == ("inspect", "proj-db-1")]
    assert pos(log, "start", "proj-db-1") < looks[1] < pos(log, "start", "proj-web-1")


def test_start_without_containers(engine: Engine) -> None:
    # compose's startService: the first service (in dependency order) without one
    with pytest.raises(ComposeError, match='^service "db" has no container to start$'):
        Run(engine, APP).compose.start()
    with pytest.raises(ComposeError, match='^service "web" has no container to start$'):
        Run(engine, APP).compose.start(["web"])


RESTARTS = """
services:
  db: {image: busybox}
  web:
    image: busybox
    depends_on:
      db: {condition: service_started, restart: true}
  worker:
    image: busybox
    depends_on: [db]
"""


def restarted(engine: Engine, since: int) -> list[str]:
    return [e[1] for e in engine.events("restart", since=since)]


def test_restart_propagates_to_dependents_with_restart_true(engine: Engine) -> None:
    Run(engine, RESTARTS).up()
    mark = len(engine.log)
    Run(engine, RESTARTS).compose.restart(["db"], timeout=2)
    got = restarted(engine, mark)
    assert got == ["proj-db-1", "proj-web-1"]
    assert engine.events("restart", since=mark)[0][2] == 2


def test_restart_no_deps(engine: Engine) -> None:
    Run(engine, RESTARTS).up()
    mark = len(engine.log)
    Run(engine, RESTARTS).compose.restart(["db"], no_deps=True)
    assert restarted(engine, mark) == ["proj-db-1"]


def test_restart_all(engine: Engine) -> None:
    Run(engine, RESTARTS).up()
    mark = len(engine.log)
    Run(engine, RESTARTS).compose.restart()
    got = restarted(engine, mark)
    assert sorted(got) == ["proj-db-1", "proj-web-1", "proj-worker-1"]
    assert got[0] == "proj-db-1"


CHAIN = """
services:
  c: {image: busybox}
  b:
    image: busybox
    depends_on: {c: {condition: service_started, restart: true}}
  a:
    image: busybox
    depends_on: {b: {condition: service_started, restart: true}}
"""


def test_restart_propagates_transitively(engine: Engine) -> None:
    Run(engine, CHAIN).up()
    mark = len(engine.log)
    Run(engine, CHAIN).compose.restart(["c"])
    assert restarted(engine, mark) == ["proj-c-1", "proj-b-1", "proj-a-1"]


# --- wait_ready, each, remove_stopped ------------------------------------------------------------

def test_wait_ready_healthy(engine: Engine) -> None:
    r = Run(engine, APP)
    r.up()
    r.compose.wait_ready(r.project.select([]), timeout=5)
    assert " Container proj-web-1  Running" in r.said


def test_wait_ready_times_out(engine: Engine) -> None:
    r = Run(engine, APP.replace("""    depends_on:
      db: {condition: service_healthy}
""", ""))
    r.up()
    engine.health["proj-db-1"] = ["starting"]
    with pytest.raises(ComposeError) as info:
        r.compose.wait_ready(r.project.select([]), timeout=0.05)
    assert str(info.value) == "application not healthy after 0.05s"


def test_wait_ready_exited_container(engine: Engine) -> None:
    engine.exits["proj-web-1"] = [0, 2]
    r = Run(engine, SCALED)
    r.up()
    with pytest.raises(ComposeError) as info:
        r.compose.wait_ready(r.project.select([]), timeout=5)
    assert str(info.value) == "container proj-web-1 exited (2)"


def test_each_acts_on_running_containers(engine: Engine) -> None:
    Run(engine, SCALED).up(scale={"web": 2})
    engine.container_stop("proj-web-2")
    seen: list[str] = []
    r = Run(engine, SCALED)
    n = r.compose.each([], "Killing", seen.append, done="Killed")
    assert n == 1
    assert seen == [engine.by_name("proj-web-1")["Id"]]
    assert " Container proj-web-1  Killed" in r.said


def test_remove_stopped_leaves_running_ones(engine: Engine) -> None:
    Run(engine, SCALED).up(scale={"web": 2})
    engine.container_stop("proj-web-2")
    removed = Run(engine, SCALED).compose.remove_stopped()
    assert [c["Names"][0] for c in removed] == ["/proj-web-2"]
    assert engine.names() == ["proj-web-1"]


# --- what the lead added: dependencies' recreate policy, --no-deps waits, restart on recreate,
# --- a project known from its labels only --------------------------------------------------------

def test_recreate_policy_of_dependencies(engine: Engine) -> None:
    Run(engine, APP).up()
    changed_db = APP.replace('[sleep, "1000"]', '[sleep, "2000"]')
    mark = len(engine.log)
    Run(engine, changed_db).up(services=["web"], recreate_deps="never")
    assert engine.events("create", since=mark) == []
    mark = len(engine.log)
    Run(engine, APP).up(services=["web"], recreate_deps="force")
    assert [e[1] for e in engine.events("create", since=mark)] == ["proj-db-1"]
    mark = len(engine.log)
    Run(engine, changed_db).up(services=["web"])
    assert [e[1] for e in engine.events("create", since=mark)] == ["proj-db-1"]


def test_no_deps_does_not_wait_for_what_it_left_out(engine: Engine) -> None:
    Run(engine, APP).up()
    engine.health["proj-db-1"] = ["unhealthy"]
    changed_web = APP.replace("[httpd, -f]", "[httpd]")
    Run(engine, changed_web).up(services=["web"], deps=False)
    assert engine.by_name("proj-web-1")["Body"]["Cmd"] == ["httpd"]
    assert engine.status("proj-web-1") == "running"
    with pytest.raises(ComposeError, match="is unhealthy"):
        Run(engine, APP).up(services=["web"])


def test_recreated_dependency_restarts_dependents_with_restart_true(engine: Engine) -> None:
    Run(engine, RESTARTS).up()
    mark = len(engine.log)
    r = Run(engine, RESTARTS.replace("db: {image: busybox}",
                                     "db: {image: busybox, command: [sleep, '9']}"))
    r.up()
    assert [e[1] for e in engine.events("create", since=mark)] == ["proj-db-1"]
    assert restarted(engine, mark) == ["proj-web-1"]
    assert pos(engine.log[mark:], "start", "proj-db-1") < \
        pos(engine.log[mark:], "restart", "proj-web-1")
    assert " Container proj-web-1  Restarted" in r.said
    mark = len(engine.log)
    Run(engine, RESTARTS.replace("db: {image: busybox}",
                                 "db: {image: busybox, command: [sleep, '9']}")).up()
    assert restarted(engine, mark) == []          # nothing replaced: nothing bounced


def labels_only(engine: Engine) -> Run:
    r = Run(engine, SCALED)
    r.project = Project.of("proj", "/elsewhere", [], {"name": "proj", "services": {}})
    r.compose = Compose(engine, r.project, Progress(r.out, tty=False))
    return r


def test_down_from_labels_alone(engine: Engine) -> None:
    Run(engine, with_worker()).up()
    engine.add_container("other-web-1", {L.PROJECT: "other", L.SERVICE: "web"})
    engine.nets["unrelated"] = {"Name": "unrelated", "Labels": {}}
    mark = len(engine.log)
    r = labels_only(engine)
    r.down(volumes=True)
    assert engine.names() == ["other-web-1"]
    log = engine.log[mark:]
    for dependent in ("proj-web-1", "proj-worker-1"):
        assert pos(log, "remove", dependent) < pos(log, "stop", "proj-db-1")
    assert set(engine.nets) == {"unrelated"}
    assert engine.vols == {}
    assert not [s for s in r.said if "orphan" in s]


def test_network_options_and_ipam(engine: Engine) -> None:
    Run(engine, """
services:
  web: {image: busybox, networks: [back]}
networks:
  back:
    driver_opts: {com.docker.network.bridge.name: br-back}
    internal: true
    attachable: true
    labels: {tier: back}
    ipam:
      config: [{subnet: 10.9.0.0/24, gateway: 10.9.0.1, ip_range: 10.9.0.128/25}]
""").up()
    opts = engine.nets["proj_back"]["Options"]
    assert opts["Driver"] == "bridge"
    assert opts["Options"] == {"com.docker.network.bridge.name": "br-back"}
    assert opts["Internal"] is True and opts["Attachable"] is True
    assert opts["Labels"] == {"tier": "back", L.NETWORK: "back", L.PROJECT: "proj",
                              L.VERSION: L.COMPOSE_VERSION}
    assert opts["IPAM"]["Driver"] == "default"
    assert opts["IPAM"]["Config"] == [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1",
                                       "IPRange": "10.9.0.128/25"}]


def test_same_named_network_not_made_by_compose_is_refused(engine: Engine) -> None:
    engine.nets["proj_default"] = {"Name": "proj_default", "Id": "n-x", "Labels": {}}
    with pytest.raises(ComposeError) as info:
        Run(engine, SCALED).up()
    assert str(info.value) == ('network proj_default was found but has incorrect label '
                               'com.docker.compose.network set to ""')
    assert engine.names() == []


# --- progress lines (what every command above prints) -------------------------------------------

def test_progress_plain_lines() -> None:
    out = io.StringIO()
    p = Progress(out, tty=False)
    p("Container", "proj-web-1", "Started")
    p("Container", "proj-web-1", "Error", error=True)
    p.warn("careful")
    assert out.getvalue() == (" Container proj-web-1  Started\n"
                              " Container proj-web-1  Error\n"
                              "WARN[0000] careful\n")


def test_progress_marks_on_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(out, tty=True)
    p("Container", "proj-web-1", "Started")
    p("Container", "proj-db-1", "Waiting")
    p("Container", "proj-db-1", "Error", error=True)
    p("Network", "proj_default", "Creating")
    assert out.getvalue().splitlines() == [" \u2714 Container proj-web-1  Started",
                                           " Container proj-db-1  Waiting",
                                           " \u2718 Container proj-db-1  Error",
                                           " Network proj_default  Creating"]


def test_progress_quiet_keeps_warnings() -> None:
    out = io.StringIO()
    p = Progress(out, quiet=True, tty=False)
    p("Container", "proj-web-1", "Started")
    p.warn("still said")
    assert out.getvalue() == "WARN[0000] still said\n"
