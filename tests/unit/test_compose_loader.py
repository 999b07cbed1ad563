"""The compose loader: discovery, .env, project names, YAML, merging, extends, include."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from ketch.compose.errors import ComposeError
from ketch.compose.loader import LoadOptions, RawProject, load, normalize_project_name
from ketch.compose.merge import enforce_unicity, merge_models


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None, **kw: Any
) -> RawProject:
    monkeypatch.chdir(cwd)
    return load(LoadOptions(environ=env or {}, **kw))


# --- discovery, directories, names ------------------------------------------------------

def test_discovers_compose_yaml_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "My_App"
    write(proj / "compose.yaml", "services:\n  web:\n    image: a\n")
    write(proj / "compose.override.yaml", "services:\n  web:\n    image: b\n")
    raw = run(proj, monkeypatch)
    assert raw.files == [str(proj / "compose.yaml"), str(proj / "compose.override.yaml")]
    assert raw.working_dir == str(proj)
    assert raw.name == "my_app"
    assert raw.model == {"name": "my_app", "services": {"web": {"image": "b"}}}


def test_discovers_in_parent_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "proj" / "docker-compose.yml", "services:\n  web:\n    image: a\n")
    sub = tmp_path / "proj" / "deep" / "er"
    sub.mkdir(parents=True)
    raw = run(sub, monkeypatch)
    assert raw.files == [str(tmp_path / "proj" / "docker-compose.yml")]
    assert raw.working_dir == str(tmp_path / "proj")
    assert raw.name == "proj"


def test_several_candidates_warn_and_prefer_compose_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a:\n    image: a\n")
    write(tmp_path / "p" / "docker-compose.yml", "services:\n  b:\n    image: b\n")
    raw = run(tmp_path / "p", monkeypatch)
    assert list(raw.model["services"]) == ["a"]
    assert raw.warnings[0].startswith("Found multiple config files with supported names: ")
    assert raw.warnings[1] == f"Using {tmp_path / 'p' / 'compose.yaml'}"


def test_no_file_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ComposeError, match="no configuration file provided: not found"):
        run(tmp_path, monkeypatch)


def test_compose_file_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "one.yml", "services:\n  a:\n    image: a\n")
    write(tmp_path / "sub" / "two.yml", "services:\n  b:\n    image: b\n")
    raw = run(tmp_path, monkeypatch, {"COMPOSE_FILE": f"one.yml{os.pathsep}sub/two.yml"})
    assert raw.files == [str(tmp_path / "one.yml"), str(tmp_path / "sub" / "two.yml")]
    assert sorted(raw.model["services"]) == ["a", "b"]
    raw = run(tmp_path, monkeypatch, {"COMPOSE_FILE": "sub/two.yml,one.yml", "COMPOSE_PATH_SEPARATOR": ","})
    assert raw.files[0] == str(tmp_path / "sub" / "two.yml")
    assert raw.working_dir == str(tmp_path / "sub")


def test_compose_file_from_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "custom.yml", "services:\n  a:\n    image: a\n")
    write(tmp_path / ".env", "COMPOSE_FILE=custom.yml\n")
    assert run(tmp_path, monkeypatch).files == [str(tmp_path / "custom.yml")]


def test_explicit_files_and_project_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf" / "base.yml", "services:\n  a:\n    image: ${IMG}\n")
    write(tmp_path / "elsewhere" / ".env", "IMG=from-elsewhere\n")
    write(tmp_path / "conf" / ".env", "IMG=from-conf\n")
    raw = run(tmp_path, monkeypatch, files=["conf/base.yml"])
    assert raw.working_dir == str(tmp_path / "conf")
    assert raw.model["services"]["a"]["image"] == "from-conf"
    raw = run(tmp_path, monkeypatch, files=["conf/base.yml"], project_directory="elsewhere")
    assert raw.working_dir == str(tmp_path / "elsewhere")
    assert raw.name == "elsewhere"
    assert raw.model["services"]["a"]["image"] == "from-elsewhere"


def test_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.StringIO("name: fromstdin\nservices:\n  a:\n    image: x\n")
    raw = run(tmp_path, monkeypatch, files=["-"], stdin=stdin)
    assert raw.files == ["-"]
    assert raw.working_dir == str(tmp_path)
    assert raw.name == "fromstdin"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("My App!", "myapp"), ("__x-Y_", "x-y_"), ("-_-", ""), ("ok-1_2", "ok-1_2")],
)
def test_normalize_project_name(given: str, expected: str) -> None:
    assert normalize_project_name(given) == expected


def test_project_name_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "Dir.Name" / "compose.yaml", "name: ${PREFIX:-Named}-App\nservices:\n  a:\n    image: x\n")
    cwd = tmp_path / "Dir.Name"
    assert run(cwd, monkeypatch).name == "named-app"
    assert run(cwd, monkeypatch, {"PREFIX": "P"}).name == "p-app"
    assert run(cwd, monkeypatch, {"COMPOSE_PROJECT_NAME": "envname"}).name == "envname"
    raw = run(cwd, monkeypatch, {"COMPOSE_PROJECT_NAME": "envname"}, project_name="flag")
    assert raw.name == "flag"
    assert raw.model["name"] == "flag"
    assert raw.environment["COMPOSE_PROJECT_NAME"] == "flag"
    (cwd / "compose.yaml").write_text("services:\n  a:\n    image: x\n")
    assert run(cwd, monkeypatch).name == "dirname"


def test_project_name_from_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "p" / "compose.yaml", "services:\n  a:\n    image: ${COMPOSE_PROJECT_NAME}\n")
    write(tmp_path / "p" / ".env", "COMPOSE_PROJECT_NAME=fromdotenv\n")
    raw = run(tmp_path / "p", monkeypatch)
    assert raw.name == "fromdotenv"
    assert raw.model["services"]["a"]["image"] == "fromdotenv"


def test_invalid_explicit_project_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: x\n")
    with pytest.raises(ComposeError) as exc:
        run(tmp_path, monkeypatch, project_name="Bad Name")
    assert str(exc.value) == (
        'invalid project name "Bad Name": must consist only of lowercase alphanumeric characters, '
        "hyphens, and underscores as well as start with a letter or number"
    )
    with pytest.raises(ComposeError, match="invalid project name"):
        run(tmp_path, monkeypatch, {"COMPOSE_PROJECT_NAME": "_x"})


# --- environment ------------------------------------------------------------------------

def test_os_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: ${A}:${B}\n")
    write(tmp_path / ".env", "A=file-a\nB=file-b\nC=${B}\n")
    raw = run(tmp_path, monkeypatch, {"B": "os-b"})
    assert raw.model["services"]["a"]["image"] == "file-a:os-b"
    assert raw.environment["A"] == "file-a"
    assert raw.environment["B"] == "os-b"
    # a .env value interpolates with the environment first
    assert raw.environment["C"] == "os-b"


def test_env_file_option_replaces_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: ${A:-none}-${B:-none}\n")
    write(tmp_path / ".env", "A=dotenv\n")
    write(tmp_path / "one.env", "B=one\n")
    write(tmp_path / "two.env", "B=two\n")
    raw = run(tmp_path, monkeypatch, env_files=["one.env", "two.env"])
    assert raw.model["services"]["a"]["image"] == "none-two"
    with pytest.raises(ComposeError, match="couldn't find env file"):
        run(tmp_path, monkeypatch, env_files=["missing.env"])


def test_os_environ_used_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: ${KETCH_LOADER_TEST_VAR}\n")
    monkeypatch.setenv("KETCH_LOADER_TEST_VAR", "from-os")
    monkeypatch.chdir(tmp_path)
    assert load(LoadOptions()).model["services"]["a"]["image"] == "from-os"


def test_interpolation_can_be_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: ${A:?no}\n    tty: 'true'\n")
    raw = run(tmp_path, monkeypatch, interpolate=False)
    assert raw.model["services"]["a"] == {"image": "${A:?no}", "tty": "true"}
    with pytest.raises(ComposeError, match="error while interpolating services.a.image: required variable A"):
        run(tmp_path, monkeypatch)


def test_unset_variable_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: x${U}\n    command: $U\n")
    seen: list[str] = []
    raw = run(tmp_path, monkeypatch, on_warning=seen.append)
    assert raw.warnings == ['The "U" variable is not set. Defaulting to a blank string.']
    assert seen == raw.warnings


# --- YAML -------------------------------------------------------------------------------

def test_yaml12_scalars_anchors_and_merge_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "compose.yaml",
        "x-base: &base\n"
        "  image: img\n"
        "  environment:\n"
        "    DEBUG: yes\n"
        "    WHEN: 2001-12-14\n"
        "services:\n"
        "  a:\n"
        "    <<: *base\n"
        "    ports: [22:22, 80]\n"
        "    user: 0755\n"
        "    stop_signal: on\n"
        "    tty: true\n"
        "    cpus: 0.5\n"
        "    x-hex: 0x1f\n",
    )
    a = run(tmp_path, monkeypatch).model["services"]["a"]
    assert a["image"] == "img"
    assert a["environment"] == {"DEBUG": "yes", "WHEN": "2001-12-14"}
    assert a["ports"] == ["22:22", 80]
    assert a["user"] == 0o755
    assert a["stop_signal"] == "on"
    assert a["tty"] is True
    assert a["cpus"] == 0.5
    assert a["x-hex"] == 31


def test_duplicate_keys_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "compose.yaml", "services:\n  a:\n    image: x\n    image: y\n")
    with pytest.raises(ComposeError) as exc:
        run(tmp_path, monkeypatch)
    assert str(exc.value) == f'failed to parse {path}: yaml: line 4: mapping key "image" already defined at line 3'


def test_invalid_yaml_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "compose.yaml", "services:\n  a:\n    image: [x\n  b: {\n")
    with pytest.raises(ComposeError, match=f"failed to parse {path}: yaml: line [0-9]+: "):
        run(tmp_path, monkeypatch)


def test_top_level_must_be_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "- a\n- b\n")
    with pytest.raises(ComposeError, match="top-level object must be a mapping"):
        run(tmp_path, monkeypatch)


def test_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "# nothing\n")
    with pytest.raises(ComposeError, match="empty compose file"):
        run(tmp_path, monkeypatch)


def test_version_is_dropped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "compose.yaml", "version: '3.8'\nx-keep: 1\nservices:\n  a:\n    image: x\n")
    raw = run(tmp_path, monkeypatch)
    assert "version" not in raw.model
    assert raw.model["x-keep"] == 1
    assert raw.warnings == [
        f"{path}: the attribute `version` is obsolete, it will be ignored, "
        "please remove it to avoid potential confusion"
    ]


# --- merging several files ------------------------------------------------------------

BASE = """
services:
  web:
    image: base
    command: ["echo", "base"]
    entrypoint: /bin/sh
    environment:
      - A=1
      - B=2
    labels:
      l1: one
    ports:
      - "8080:80"
      - target: 443
        published: "8443"
    expose: ["90"]
    dns: 1.1.1.1
    cap_add: [NET_ADMIN]
    volumes:
      - ./data:/data
      - logs:/var/log
    secrets: [s1]
    depends_on: [db]
    networks: [front]
    healthcheck:
      test: ["CMD", "true"]
      interval: 5s
    build: ./dir
    extra_hosts: ["a=1.2.3.4"]
    logging:
      driver: json-file
      options: {max-size: 1m}
  db:
    image: postgres
"""

OVERRIDE = """
services:
  web:
    image: override
    command: ["echo", "override"]
    environment:
      B: "20"
      C: "3"
    labels: ["l2=two"]
    ports:
      - "8080:80"
      - "9090:90"
    expose: ["90", "91"]
    dns: [8.8.8.8]
    cap_add: [NET_ADMIN, SYS_TIME]
    volumes:
      - ./other:/data:ro
      - /tmp:/tmp
    secrets:
      - source: s1
        target: /run/secrets/s1
        mode: 0400
    depends_on:
      cache:
        condition: service_healthy
    networks:
      back:
        aliases: [w]
    healthcheck:
      test: ["CMD", "false"]
    build:
      dockerfile: Other
    extra_hosts: ["a=1.2.3.4", "b=5.6.7.8"]
    logging:
      options: {max-file: "3"}
"""


def test_merge_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "base.yml", BASE)
    write(tmp_path / "over.yml", OVERRIDE)
    web = run(tmp_path, monkeypatch, files=["base.yml", "over.yml"]).model["services"]["web"]
    assert web["image"] == "override"
    assert web["command"] == ["echo", "override"]
    assert web["entrypoint"] == "/bin/sh"
    assert web["environment"] == {"A": "1", "B": "20", "C": "3"}
    assert web["labels"] == {"l1": "one", "l2": "two"}
    assert web["ports"] == ["8080:80", {"target": 443, "published": "8443"}, "9090:90"]
    assert web["expose"] == ["90", "91"]
    assert web["dns"] == ["1.1.1.1", "8.8.8.8"]
    assert web["cap_add"] == ["NET_ADMIN", "SYS_TIME"]
    assert web["volumes"] == ["./other:/data:ro", "logs:/var/log", "/tmp:/tmp"]
    assert web["secrets"] == [{"source": "s1", "target": "/run/secrets/s1", "mode": 0o400}]
    assert web["depends_on"] == {
        "db": {"condition": "service_started", "required": True},
        "cache": {"condition": "service_healthy"},
    }
    assert web["networks"] == {"front": None, "back": {"aliases": ["w"]}}
    assert web["healthcheck"] == {"test": ["CMD", "false"], "interval": "5s"}
    assert web["build"] == {"context": "./dir", "dockerfile": "Other"}
    assert web["extra_hosts"] == ["a=1.2.3.4", "b=5.6.7.8"]
    assert web["logging"] == {"driver": "json-file", "options": {"max-size": "1m", "max-file": "3"}}


def test_merge_logging_other_driver_replaces() -> None:
    base = {"services": {"a": {"logging": {"driver": "json-file", "options": {"x": "1"}}}}}
    over = {"services": {"a": {"logging": {"driver": "syslog"}}}}
    assert merge_models(base, over)["services"]["a"]["logging"] == {"driver": "syslog"}


def test_merge_null_keeps_and_type_clash_errors() -> None:
    assert merge_models({"services": {"a": {"image": "x"}}}, {"services": {"a": None}}) == {
        "services": {"a": {"image": "x"}}
    }
    with pytest.raises(ComposeError, match="cannot override services.a.deploy"):
        merge_models({"services": {"a": {"deploy": {"replicas": 1}}}}, {"services": {"a": {"deploy": [1]}}})


def test_unicity_inside_one_file() -> None:
    model = {"services": {"a": {
        "ports": ["80:80", 80, "80:80"],
        "volumes": ["a:/x", {"type": "bind", "source": "/h", "target": "/x"}],
        "secrets": ["s", {"source": "t", "target": "/run/secrets/s"}],
        "configs": ["c", {"source": "c"}],
        "environment": ["A=1", "A=2"],
    }}}
    a = enforce_unicity(model)["services"]["a"]
    assert a["ports"] == ["80:80", 80]
    assert a["volumes"] == [{"type": "bind", "source": "/h", "target": "/x"}]
    assert a["secrets"] == [{"source": "t", "target": "/run/secrets/s"}]
    assert a["configs"] == [{"source": "c"}]
    assert a["environment"] == ["A=2"]


def test_top_level_resources_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.yml", "services:\n  s:\n    image: x\nvolumes:\n  v:\n    labels: [a=1]\nnetworks:\n  n: {}\n")
    write(tmp_path / "b.yml", "volumes:\n  v:\n    driver: local\n    labels: {b: '2'}\nnetworks:\n  n:\n    internal: true\n")
    model = run(tmp_path, monkeypatch, files=["a.yml", "b.yml"]).model
    assert model["volumes"] == {"v": {"labels": {"a": "1", "b": "2"}, "driver": "local"}}
    assert model["networks"] == {"n": {"internal": True}}


def test_each_file_is_interpolated_before_merging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.yml", "services:\n  s:\n    image: ${IMG}\n")
    write(tmp_path / "b.yml", "services:\n  s:\n    command: $$HOME\n")
    s = run(tmp_path, monkeypatch, {"IMG": "i"}, files=["a.yml", "b.yml"]).model["services"]["s"]
    assert s == {"image": "i", "command": "$HOME"}


# --- extends ----------------------------------------------------------------------------

def test_extends_same_file_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "compose.yaml",
        "services:\n"
        "  base:\n    image: b\n    environment: {A: '1'}\n    ports: ['80']\n    command: base\n"
        "  mid:\n    extends: base\n    environment: [B=2]\n"
        "  top:\n    extends:\n      service: mid\n    command: top\n    ports: ['81']\n",
    )
    services = run(tmp_path, monkeypatch).model["services"]
    assert services["top"] == {
        "image": "b",
        "environment": {"A": "1", "B": "2"},
        "ports": ["80", "81"],
        "command": "top",
    }
    assert "extends" not in services["mid"]
    assert services["base"] == {"image": "b", "environment": {"A": "1"}, "ports": ["80"], "command": "base"}


def test_extends_other_file_rebases_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "lib"
    write(
        lib / "common.yml",
        "services:\n"
        "  root:\n    image: r\n    env_file: root.env\n"
        "  svc:\n    extends: root\n    build: ./ctx\n"
        "    volumes: [./data:/data, named:/n, /abs:/abs, {type: bind, source: ../up, target: /up}]\n"
        "    env_file: [{path: x.env, required: false}]\n",
    )
    write(
        tmp_path / "app" / "compose.yaml",
        "services:\n  web:\n    extends:\n      file: ../lib/common.yml\n      service: svc\n"
        "    volumes: [./mine:/mine]\n",
    )
    web = run(tmp_path / "app", monkeypatch).model["services"]["web"]
    assert web["image"] == "r"
    assert web["build"] == str(lib / "ctx")
    assert web["volumes"] == [
        f"{lib}/data:/data",
        "named:/n",
        "/abs:/abs",
        {"type": "bind", "source": str(tmp_path / "up"), "target": "/up"},
        "./mine:/mine",
    ]
    assert web["env_file"] == [str(lib / "root.env"), {"path": str(lib / "x.env"), "required": False}]


def test_extends_missing_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "compose.yaml", "services:\n  a:\n    extends: nope\n")
    with pytest.raises(ComposeError) as exc:
        run(tmp_path, monkeypatch)
    assert str(exc.value) == f'cannot extend service "a" in {path}: service "nope" not found'
    write(tmp_path / "other.yml", "services:\n  x:\n    image: x\n")
    path.write_text("services:\n  a:\n    extends: {file: other.yml, service: nope}\n")
    with pytest.raises(ComposeError, match='service "nope" not found in other.yml'):
        run(tmp_path, monkeypatch)


def test_extends_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path / "compose.yaml",
        "services:\n  a:\n    extends: b\n  b:\n    extends: c\n  c:\n    extends: a\n",
    )
    with pytest.raises(ComposeError) as exc:
        run(tmp_path, monkeypatch)
    assert str(exc.value) == (
        f"Circular reference:\n  a in {path}\n  extends b in {path}\n"
        f"  extends c in {path}\n  extends a in {path}"
    )


# --- include ----------------------------------------------------------------------------

def test_include_with_own_dotenv_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "sub"
    write(sub / "compose.yaml",
          "services:\n  db:\n    image: db:${DB_TAG}\n    build: .\n    volumes: [./init:/init]\n"
          "secrets:\n  pw:\n    file: ./pw.txt\n")
    write(sub / ".env", "DB_TAG=15\nSHARED=sub\n")
    write(tmp_path / "app" / "compose.yaml",
          "include:\n  - ../sub/compose.yaml\nservices:\n  web:\n    image: web:${SHARED:-none}\n"
          "    depends_on: [db]\n")
    model = run(tmp_path / "app", monkeypatch).model
    assert model["services"]["db"] == {
        "image": "db:15",
        "build": str(sub),
        "volumes": [f"{sub}/init:/init"],
    }
    # the included project's .env does not leak into the including file
    assert model["services"]["web"]["image"] == "web:none"
    assert model["secrets"] == {"pw": {"file": str(sub / "pw.txt")}}
    assert "include" not in model


def test_include_long_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "inc" / "a.yml", "services:\n  a:\n    image: ${TAG}\n    build: ctx\n")
    write(tmp_path / "inc" / "b.yml", "services:\n  a:\n    command: over\n")
    write(tmp_path / "vars.env", "TAG=t1\n")
    write(tmp_path / "compose.yaml",
          "include:\n  - path: [inc/a.yml, inc/b.yml]\n    project_directory: pd\n    env_file: vars.env\n")
    a = run(tmp_path, monkeypatch).model["services"]["a"]
    assert a == {"image": "t1", "build": str(tmp_path / "pd" / "ctx"), "command": "over"}


def test_include_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "inc.yml", "services:\n  x:\n    image: a\n")
    write(tmp_path / "compose.yaml", "include: [inc.yml]\nservices:\n  x:\n    image: b\n")
    with pytest.raises(ComposeError) as exc:
        run(tmp_path, monkeypatch)
    assert str(exc.value) == "services.x conflicts with imported resource"
    # the same definition twice is no conflict
    (tmp_path / "compose.yaml").write_text("include: [inc.yml]\nservices:\n  x:\n    image: a\n")
    assert run(tmp_path, monkeypatch).model["services"] == {"x": {"image": "a"}}


def test_include_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = write(tmp_path / "compose.yaml", "include: [other.yml]\nservices:\n  a:\n    image: a\n")
    other = write(tmp_path / "other.yml", "include: [compose.yaml]\nservices:\n  b:\n    image: b\n")
    with pytest.raises(ComposeError) as exc:
        run(tmp_path, monkeypatch)
    assert str(exc.value) == f"include cycle detected:\n{main}\n include {other}\n include {main}"


def test_include_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "include: [nope.yml]\n")
    with pytest.raises(ComposeError, match="no such file or directory"):
        run(tmp_path, monkeypatch)


# --- !reset and !override ---------------------------------------------------------------

def test_reset_and_override_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.yml",
          "services:\n  web:\n    image: a\n    ports: ['80:80']\n    environment: {A: '1', B: '2'}\n"
          "    build: ./ctx\n    x-tmp: 1\n")
    write(tmp_path / "b.yml",
          "services:\n  web:\n    ports: !override ['81:81']\n    environment: !override {C: '${V}'}\n"
          "    build: !reset null\n    x-tmp: !reset\n    x-new: !override {k: v}\n")
    web = run(tmp_path, monkeypatch, {"V": "3"}, files=["a.yml", "b.yml"]).model["services"]["web"]
    assert web == {"image": "a", "ports": ["81:81"], "environment": {"C": "3"}, "x-new": {"k": "v"}}
    assert type(web["environment"]) is dict
    assert type(web["ports"]) is list


def test_reset_in_extending_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml",
          "services:\n  base:\n    image: b\n    command: run\n    ports: ['1:1']\n"
          "  child:\n    extends: base\n    command: !reset []\n    ports: !override ['2:2']\n")
    child = run(tmp_path, monkeypatch).model["services"]["child"]
    assert child == {"image": "b", "ports": ["2:2"]}


def test_invalid_flag_name_is_reported_before_file_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ComposeError, match='invalid project name "UPPER"'):
        run(tmp_path, monkeypatch, project_name="UPPER")


def test_extends_an_empty_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  base:\n  a:\n    extends: base\n    image: x\n")
    assert run(tmp_path, monkeypatch).model["services"] == {"base": None, "a": {"image": "x"}}


def test_dotenv_can_be_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: ${A:-unset}\n")
    write(tmp_path / ".env", "A=set\n")
    assert run(tmp_path, monkeypatch).model["services"]["a"]["image"] == "set"
    raw = run(tmp_path, monkeypatch, {"COMPOSE_DISABLE_ENV_FILE": "true"})
    assert raw.model["services"]["a"]["image"] == "unset"


def test_multiple_documents_in_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "compose.yaml", "services:\n  a:\n    image: x\n---\nservices:\n  a:\n    command: y\n")
    assert run(tmp_path, monkeypatch).model["services"]["a"] == {"image": "x", "command": "y"}


def test_loaded_files_are_not_shared_between_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the same file extended twice and included: each use gets its own copy
    write(tmp_path / "base.yml", "services:\n  b:\n    image: b\n    environment: {A: '1'}\n")
    write(tmp_path / "compose.yaml",
          "services:\n"
          "  one:\n    extends: {file: base.yml, service: b}\n    environment: {B: '2'}\n"
          "  two:\n    extends: {file: base.yml, service: b}\n")
    services = run(tmp_path, monkeypatch).model["services"]
    assert services["one"]["environment"] == {"A": "1", "B": "2"}
    assert services["two"]["environment"] == {"A": "1"}


def test_yaml_aliases_are_not_shared_when_merging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.yml",
          "x-deploy: &deploy\n  resources: {limits: {cpus: '1'}}\n"
          "services:\n  one:\n    image: x\n    deploy: *deploy\n  two:\n    image: x\n    deploy: *deploy\n")
    write(tmp_path / "b.yml", "services:\n  one:\n    deploy:\n      resources: {limits: {memory: 1g}}\n")
    # without interpolation (which copies every value) nothing else would separate them
    for interpolate in (True, False):
        model = run(tmp_path, monkeypatch, files=["a.yml", "b.yml"], interpolate=interpolate).model
        assert model["services"]["one"]["deploy"] == {"resources": {"limits": {"cpus": "1", "memory": "1g"}}}
        assert model["services"]["two"]["deploy"] == {"resources": {"limits": {"cpus": "1"}}}
        assert model["x-deploy"] == {"resources": {"limits": {"cpus": "1"}}}


@pytest.mark.parametrize("ref", ["oci://docker.io/x/y:1", "git@github.com:x/y.git", "https://github.com/x/y.git"])
def test_remote_include_and_extends_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str) -> None:
    write(tmp_path / "compose.yaml", f"include: ['{ref}']\n")
    with pytest.raises(ComposeError, match="is not supported by ketch compose"):
        run(tmp_path, monkeypatch)
    write(tmp_path / "compose.yaml", f"services:\n  a:\n    extends: {{file: '{ref}', service: b}}\n")
    with pytest.raises(ComposeError, match="is not supported by ketch compose"):
        run(tmp_path, monkeypatch)
