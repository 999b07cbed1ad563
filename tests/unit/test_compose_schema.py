"""The compose schema: which keys exist, which types they take, and compose's wording."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ketch.compose import schema
from ketch.compose.errors import ComposeError


def err(model: Any, files: list[str] | None = None) -> str:
    with pytest.raises(ComposeError) as info:
        schema.validate(model, files)
    return str(info.value)


def svc(**keys: Any) -> dict[str, Any]:
    return {"services": {"api": {"image": "busybox", **keys}}}


def test_a_full_project_with_every_common_key_is_valid() -> None:
    model = yaml.safe_load("""
version: "3.9"
name: demo
x-common: &common {restart: always}
services:
  api:
    <<: *common
    build: {context: ., dockerfile: Dockerfile, args: [A=1], target: run,
            labels: {a: b}, cache_from: [x], secrets: [s1]}
    command: ["run", "--fast"]
    entrypoint: /bin/sh -c
    environment: {A: 1, B: null, C: true}
    env_file: [a.env, {path: b.env, required: false}]
    ports: [80, "3000:3000", {target: 81, published: 8081, protocol: udp}]
    expose: [80, "90-91"]
    volumes: [data:/data, {type: tmpfs, target: /t, tmpfs: {size: 1m}}]
    depends_on: {db: {condition: service_healthy, restart: true, required: false}}
    healthcheck: {test: [CMD, "true"], interval: 1s, retries: 3, start_period: 2s}
    deploy: {replicas: 2, resources: {limits: {cpus: "0.5", memory: 64m, pids: 10},
                                       reservations: {memory: 32m}}}
    mem_limit: 512m
    cpus: 1.5
    networks: {front: {aliases: [a], ipv4_address: 10.0.0.2}}
    hostname: h
    user: "1000"
    working_dir: /w
    labels: [a=b]
    init: true
    stop_signal: SIGINT
    stop_grace_period: 1m
    tmpfs: /run
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    privileged: "true"
    read_only: false
    ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}
    sysctls: {net.core.somaxconn: 1024}
    extra_hosts: ["h:1.2.3.4"]
    dns: 8.8.8.8
    logging: {driver: json-file, options: {max-size: 1m, max-file: 3}}
    secrets: [s1, {source: s1, target: /x, mode: 0440}]
    configs: [c1]
    tty: true
    stdin_open: true
    pull_policy: missing
    links: [db]
    volumes_from: [db]
    pid: host
    ipc: shareable
    shm_size: 64m
    devices: ["/dev/null:/dev/n:rwm"]
    security_opt: [no-new-privileges]
    develop: {watch: [{action: sync, path: ./src, target: /src}]}
    x-ours: 1
  db:
    image: postgres
networks:
  front: {driver: bridge, ipam: {config: [{subnet: 10.0.0.0/24}]}}
  outside: {external: true}
volumes:
  data: {}
  other:
secrets:
  s1: {file: ./s1.txt}
configs:
  c1: {content: hello}
""")
    schema.validate(model, ["/p/compose.yaml"])


@pytest.mark.parametrize("model, message", [
    ({"servics": {}}, "(root) additional properties 'servics' not allowed"),
    (svc(foo=1), "services.api additional properties 'foo' not allowed"),
    (svc(build={"context": ".", "dockerfiel": "x"}),
     "services.api.build additional properties 'dockerfiel' not allowed"),
    (svc(healthcheck={"tst": "x"}),
     "services.api.healthcheck additional properties 'tst' not allowed"),
    (svc(deploy={"resources": {"limits": {"memroy": "1g"}}}),
     "services.api.deploy.resources.limits additional properties 'memroy' not allowed"),
    (svc(ports=[{"target": 80, "publish": 80}]),
     "services.api.ports[0] additional properties 'publish' not allowed"),
    (svc(volumes=[{"type": "bind", "source": ".", "target": "/x", "bnd": {}}]),
     "services.api.volumes[0] additional properties 'bnd' not allowed"),
    ({"networks": {"n": {"drivr": "bridge"}}},
     "networks.n additional properties 'drivr' not allowed"),
    ({"volumes": {"v": {"external": True, "nme": "x"}}},
     "volumes.v additional properties 'nme' not allowed"),
    ({"services": {"bad name": {"image": "x"}}},
     "services additional properties 'bad name' not allowed"),
])
def test_unknown_keys_are_named_with_their_path(model: Any, message: str) -> None:
    assert err(model) == message


@pytest.mark.parametrize("model, message", [
    (svc(mem_limit=True), "services.api.mem_limit must be a string or number"),
    (svc(mem_limit=[1]), "services.api.mem_limit must be a string or number"),
    (svc(image=5), "services.api.image must be a string"),
    (svc(ports="80:80"), "services.api.ports must be a list"),
    (svc(ports=[[80]]), "services.api.ports[0] must be a string, number or mapping"),
    (svc(environment="A=1"), "services.api.environment must be a mapping or list"),
    (svc(environment={"A": [1]}), "services.api.environment.A must be a string, number or boolean"),
    (svc(command={"a": 1}), "services.api.command must be a string or list"),
    (svc(healthcheck={"interval": 5}), "services.api.healthcheck.interval must be a string"),
    (svc(cap_add="NET_ADMIN"), "services.api.cap_add must be a list"),
    (svc(depends_on={"db": {"condition": "service_up"}}),
     'services.api.depends_on.db.condition must be one of the following: "service_started", '
     '"service_healthy", "service_completed_successfully"'),
    (svc(depends_on={"db": {"required": True}}),
     "services.api.depends_on.db missing properties 'condition'"),
    (svc(volumes=[{"source": "a", "target": "/a"}]),
     "services.api.volumes[0] missing properties 'type'"),
    (svc(volumes=[{"type": "nfs", "target": "/a"}]),
     'services.api.volumes[0].type must be one of the following: "bind", "volume", "tmpfs", '
     '"cluster", "npipe", "image"'),
    (svc(ulimits={"nofile": {"soft": 1}}), "services.api.ulimits.nofile missing properties 'hard'"),
    (svc(cap_add=["A", "A"]), "services.api.cap_add array items[0,1] must be unique"),
    ({"services": []}, "services must be a mapping"),
    ({"services": {"api": "busybox"}}, "services.api must be a mapping"),
    ({"name": 3}, "name must be a string"),
])
def test_wrong_types_are_named_with_their_path(model: Any, message: str) -> None:
    assert err(model) == message


def test_the_file_prefixes_the_message_when_known() -> None:
    assert err(svc(foo=1), ["/p/compose.yaml"]) == \
        "validating /p/compose.yaml: services.api additional properties 'foo' not allowed"


def test_a_model_that_is_not_a_mapping() -> None:
    assert err(["a"]) == "(root) must be a mapping, not list"


def test_x_keys_are_allowed_where_compose_allows_them() -> None:
    schema.validate({"x-top": {"any": [1]}, "services": {"a": {"image": "i", "x-s": 1,
                     "build": {"x-b": 1}, "healthcheck": {"x-h": 1}}},
                     "networks": {"n": {"x-n": 1}}})
    # not in free mappings: an environment key named x-... is a variable, fine either way,
    # but a service may not be called with an x- prefix at the services level by pattern only
    assert err({"services": {"a": {"image": "i", "ulimits": {"x-y": 1}}}}) == \
        "services.a.ulimits additional properties 'x-y' not allowed"


def test_interpolated_strings_are_accepted_for_scalars() -> None:
    # interpolation leaves "true", "3", "512m" as strings
    schema.validate(svc(privileged="true", scale="3", mem_limit="512m", cpus="0.5",
                        init="false", pids_limit="10"))


def test_floats_with_no_fraction_count_as_integers() -> None:
    schema.validate({"models": {"m": {"model": "x", "context_size": 4.0}}})
    assert err({"models": {"m": {"model": "x", "context_size": 4.5}}}) == \
        "models.m.context_size must be a integer"


def test_human_type_names() -> None:
    assert schema.human_type(("array",)) == "list"
    assert schema.human_type(("object", "null")) == "mapping"
    assert schema.human_type(("string", "number", "boolean")) == "string, number or boolean"
    assert schema.human_type(("number", "string")) == "string or number"


def test_every_service_key_of_the_issue_is_known() -> None:
    issue_keys = ["build", "image", "command", "entrypoint", "environment", "ports", "expose", "volumes", "depends_on", "healthcheck", "restart", "deploy", "mem_limit", "cpus", "networks", "network_mode", "hostname", "user", "working_dir", "labels", "init", "stop_signal", "stop_grace_period", "tmpfs", "cap_add", "cap_drop", "privileged", "read_only", "ulimits", "sysctls", "extra_hosts", "dns", "logging", "secrets", "configs", "tty", "stdin_open", "pull_policy", "links", "volumes_from", "pid", "ipc", "shm_size", "devices", "security_opt", "develop", "env_file", "profiles", "scale", "container_name"]
    missing = [k for k in issue_keys if k not in schema.SERVICE_KEYS]
    assert missing == []
