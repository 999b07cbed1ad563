"""compose model: the typed view of a canonical model (built by the real normalize)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from ketch.compose.errors import ComposeError
from ketch.compose.model import COMPLETED, HEALTHY, STARTED, Dependency, Project, Service
from ketch.compose.normalize import apply_profiles, normalize


@dataclass
class Raw:
    model: dict[str, Any]
    working_dir: str = "/proj"
    name: str = "proj"
    environment: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=lambda: ["/proj/compose.yaml"])


def canonical(text: str) -> dict[str, Any]:
    return normalize(Raw(yaml.safe_load(text)))


def project(text: str, profiles: tuple[str, ...] = ()) -> Project:
    model = canonical(text)
    active = apply_profiles(model, list(profiles))
    return Project.of("proj", "/proj", ["/proj/compose.yaml"], active,
                      all_services=model["services"])


def svc(keys: str, name: str = "s") -> Service:
    body = "\n".join("    " + line for line in keys.strip("\n").splitlines())
    return project(f"services:\n  {name}:\n{body}\n", profiles=("*",)).services[name]


BASE = """
image: busybox
command: [sleep, "100"]
environment: {A: "1"}
ports: ["8080:80"]
"""


def hash_of(extra: str = "", base: str = BASE) -> str:
    return svc(base + extra).config_hash()


# --- config_hash -------------------------------------------------------------------------------

def test_config_hash_is_stable_and_hex() -> None:
    h = hash_of()
    assert h == hash_of()
    assert len(h) == 64 and int(h, 16) >= 0


def test_config_hash_does_not_depend_on_key_order() -> None:
    a = svc("image: busybox\nenvironment: {A: '1', B: '2'}\ncommand: [x]")
    b = svc("command: [x]\nenvironment: {B: '2', A: '1'}\nimage: busybox")
    assert a.config_hash() == b.config_hash()


@pytest.mark.parametrize("extra", [
    "build: .",
    "pull_policy: always",
    "scale: 3",
    "deploy: {replicas: 4}",
    "profiles: [dev]",
    "develop: {watch: [{action: sync, path: ./src, target: /app}]}",
])
def test_config_hash_ignores_what_does_not_change_a_container(extra: str) -> None:
    assert hash_of(extra) == hash_of()


def test_config_hash_ignores_depends_on() -> None:
    text = "services:\n  db: {image: busybox}\n  s:\n" + \
        "\n".join("    " + x for x in BASE.strip().splitlines())
    plain = project(text).services["s"].config_hash()
    waits = project(text + "\n    depends_on: {db: {condition: service_healthy}}"
                    ).services["s"].config_hash()
    assert plain == waits == hash_of()


def test_config_hash_same_for_scale_and_replicas() -> None:
    # moving from `scale: 2` to `deploy: {replicas: 2}` changes no container
    assert hash_of("scale: 2") == hash_of("deploy: {replicas: 2}") == hash_of()


def test_config_hash_keeps_the_rest_of_deploy() -> None:
    limited = hash_of("deploy: {replicas: 2, resources: {limits: {memory: 64M}}}")
    assert limited == hash_of("deploy: {resources: {limits: {memory: 64M}}}")
    assert limited != hash_of()


@pytest.mark.parametrize("base", [
    BASE.replace('[sleep, "100"]', '[sleep, "200"]'),
    BASE.replace('{A: "1"}', '{A: "2"}'),
    BASE.replace('{A: "1"}', '{A: "1", B: "1"}'),
    BASE.replace('"8080:80"', '"8081:80"'),
    BASE.replace("busybox", "alpine"),
    BASE + "entrypoint: [/bin/sh]\n",
    BASE + "volumes: [/data]\n",
])
def test_config_hash_sees_what_changes_a_container(base: str) -> None:
    assert hash_of(base=base) != hash_of()


# --- scale, image, depends_on ------------------------------------------------------------------

def test_scale_defaults_to_one() -> None:
    assert svc("image: busybox").scale == 1


def test_scale_from_scale_key() -> None:
    assert svc("image: busybox\nscale: 3").scale == 3


def test_scale_from_deploy_replicas() -> None:
    assert svc("image: busybox\ndeploy: {replicas: 2}").scale == 2
    assert svc("image: busybox\ndeploy: {replicas: 0}").scale == 0


def test_scale_wins_over_a_model_without_replicas() -> None:
    s = Service("s", {"scale": 5, "deploy": {"resources": {}}}, "proj")
    assert s.scale == 5


def test_image_given() -> None:
    assert svc("image: busybox:1.36").image == "busybox:1.36"


def test_image_of_a_build_is_project_dash_service(tmp_path: Any) -> None:
    s = svc("build: .", name="api")
    assert s.image == "proj-api"
    assert s.build is not None and s.build["context"] == "/proj"
    assert svc("image: busybox").build is None


def test_depends_on_list_form_is_service_started() -> None:
    p = project("services:\n  db: {image: busybox}\n  cache: {image: busybox}\n"
                "  web: {image: busybox, depends_on: [db, cache]}\n")
    assert p.services["web"].depends_on == [Dependency("cache", STARTED, True, False),
                                            Dependency("db", STARTED, True, False)]


def test_depends_on_long_form() -> None:
    p = project("""
services:
  db: {image: busybox}
  init: {image: busybox}
  web:
    image: busybox
    depends_on:
      db: {condition: service_healthy, restart: true}
      init: {condition: service_completed_successfully, required: false}
""")
    assert p.services["web"].depends_on == [Dependency("db", HEALTHY, True, True),
                                            Dependency("init", COMPLETED, False, False)]


def test_depends_on_bad_condition_names_the_path() -> None:
    s = Service("web", {"depends_on": {"db": {"condition": "service_ready"}}}, "proj")
    with pytest.raises(ComposeError) as info:
        _ = s.depends_on
    assert str(info.value) == \
        "services.web.depends_on.db.condition: invalid condition 'service_ready'"


# --- other readers -----------------------------------------------------------------------------

def test_has_healthcheck() -> None:
    assert svc("image: busybox\nhealthcheck: {test: [CMD, 'true']}").has_healthcheck
    assert not svc("image: busybox").has_healthcheck
    assert not svc("image: busybox\nhealthcheck: {disable: true}").has_healthcheck
    assert not svc("image: busybox\nhealthcheck: {test: [NONE]}").has_healthcheck


def test_named_volumes_and_networks() -> None:
    p = project("""
services:
  s:
    image: busybox
    volumes: [data:/data, /anon, ./here:/there]
    networks: [front, back]
volumes: {data: {}}
networks: {front: {}, back: {}}
""")
    s = p.services["s"]
    assert s.named_volumes == ["data"]
    assert s.networks == ["back", "front"]
    assert p.volume_name("data") == "proj_data"
    assert p.network_name("front") == "proj_front"


def test_explicit_names_of_networks_and_volumes() -> None:
    p = project("""
services: {s: {image: busybox, volumes: [data:/d], networks: [n]}}
volumes: {data: {name: shared-data}}
networks: {n: {name: shared-net}}
""")
    assert p.volume_name("data") == "shared-data"
    assert p.network_name("n") == "shared-net"
    assert p.network_name("undeclared") == "proj_undeclared"


def test_default_network_when_none_given() -> None:
    p = project("services: {s: {image: busybox}}")
    assert p.services["s"].networks == ["default"]
    assert p.network_name("default") == "proj_default"


def test_references() -> None:
    p = project("""
services:
  a: {image: busybox}
  b: {image: busybox}
  c: {image: busybox}
  d: {image: busybox}
  s:
    image: busybox
    links: ["a:alias"]
    volumes_from: ["b:ro", "container:other"]
    pid: "service:c"
    ipc: "service:d"
  n:
    image: busybox
    network_mode: "service:a"
""")
    assert p.services["s"].references() == {"a", "b", "c", "d"}
    assert p.services["n"].references() == {"a"}
    assert p.services["a"].references() == set()


def test_container_name_and_pull_policy() -> None:
    s = svc("image: busybox\ncontainer_name: fixed\npull_policy: always")
    assert s.container_name == "fixed"
    assert s.pull_policy == "always"
    plain = svc("image: busybox")
    assert plain.container_name is None
    assert plain.pull_policy == "missing"


# --- Project ---------------------------------------------------------------------------------

PROFILED = """
services:
  web: {image: busybox}
  db: {image: busybox}
  debug: {image: busybox, profiles: [dev]}
"""


def test_select_all_in_name_order() -> None:
    p = project(PROFILED)
    assert [s.name for s in p.select([])] == ["db", "web"]
    assert [s.name for s in p.select(["web", "db"])] == ["web", "db"]


def test_select_unknown_service() -> None:
    with pytest.raises(ComposeError) as info:
        project(PROFILED).select(["web", "nope"])
    assert str(info.value) == "no such service: nope"


def test_select_service_of_an_inactive_profile() -> None:
    p = project(PROFILED)
    assert set(p.disabled) == {"debug"}
    with pytest.raises(ComposeError) as info:
        p.select(["debug"])
    assert str(info.value) == "service 'debug' is not enabled by the active profiles"


def test_profile_enabled_service_is_selectable() -> None:
    p = project(PROFILED, profiles=("dev",))
    assert [s.name for s in p.select(["debug"])] == ["debug"]
    assert p.disabled == {}
