"""normalize: short forms to long forms, defaults, paths, references; profiles; config output."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ketch.compose import normalize as nz
from ketch.compose.errors import ComposeError
from ketch.gotext import go_duration


@dataclass
class Raw:
    model: dict[str, Any]
    working_dir: str = "/proj"
    name: str = "proj"
    environment: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=lambda: ["/proj/compose.yaml"])


def norm(text: str, **kw: Any) -> dict[str, Any]:
    return nz.normalize(Raw(yaml.safe_load(text), **kw))


def service(keys: str, **kw: Any) -> dict[str, Any]:
    """Normalise one service ``s`` with image busybox plus the YAML ``keys``."""
    body = "\n".join("    " + line for line in keys.strip("\n").splitlines())
    text = f"services:\n  s:\n    image: busybox\n{body}\n"
    text += "volumes: {data: {}, logs: {}}\nnetworks: {front: {}, back: {}}\n"
    text += "secrets: {s1: {file: ./s1}}\nconfigs: {c1: {content: x}}\n"
    return norm(text, **kw)["services"]["s"]


def error(text: str, **kw: Any) -> str:
    with pytest.raises(ComposeError) as info:
        norm(text, **kw)
    return str(info.value)


# --- ports -------------------------------------------------------------------------------------

def P(target: int, published: str | None = None, protocol: str = "tcp",
      host_ip: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"mode": "ingress"}
    if host_ip:
        d["host_ip"] = host_ip
    d["target"] = target
    if published is not None:
        d["published"] = published
    d["protocol"] = protocol
    return d


@pytest.mark.parametrize("short, expected", [
    ("80", [P(80)]),
    (80, [P(80)]),
    ("3000:3000", [P(3000, "3000")]),
    ("8080:80/udp", [P(80, "8080", "udp")]),
    ("127.0.0.1:8080:80", [P(80, "8080", host_ip="127.0.0.1")]),
    ("127.0.0.1::80", [P(80, host_ip="127.0.0.1")]),
    ("[::1]:8080:80", [P(80, "8080", host_ip="::1")]),
    ("::1:8080:80", [P(80, "8080", host_ip="::1")]),
    ("127.0.0.1:8080-8081:80-81/udp",
     [P(80, "8080", "udp", "127.0.0.1"), P(81, "8081", "udp", "127.0.0.1")]),
    ("80-82", [P(80), P(81), P(82)]),
    ("9090-9091:8080", [P(8080, "9090-9091")]),
    ("5000:5000/sctp", [P(5000, "5000", "sctp")]),
])
def test_ports_short_syntax(short: Any, expected: list[dict[str, Any]]) -> None:
    assert service(f"ports: [{json.dumps(short)}]")["ports"] == expected


@pytest.mark.parametrize("bad", ["3000:abc", "abc", "80/icmp", "1.2.3:80:80", "70000",
                                 "8080-8082:80-81", "90-80", ":", "x:80:80", ""])
def test_bad_ports_name_the_service_index_and_value(bad: str) -> None:
    assert error(f'services:\n  api:\n    image: x\n    ports: ["1", {json.dumps(bad)}]\n') == \
        f'validating /proj/compose.yaml: services.api.ports[1]: invalid port "{bad}"'


def test_ports_long_syntax_gets_defaults_and_a_string_published() -> None:
    ports = service("ports: [{target: 80, published: 8080}, "
                    "{target: '53', protocol: udp, host_ip: 0.0.0.0, mode: host, name: dns}]")
    assert ports["ports"] == [
        P(80, "8080"),
        {"name": "dns", "mode": "host", "host_ip": "0.0.0.0", "target": 53, "protocol": "udp"}]
    assert error("services:\n  a:\n    image: x\n    ports: [{target: x}]\n").endswith(
        'services.a.ports[0].target: invalid port "x"')
    assert error("services:\n  a:\n    image: x\n    ports: [{published: 80}]\n").endswith(
        "services.a.ports[0] missing properties 'target'")


def test_expose_is_strings_and_checked() -> None:
    assert service("expose: [80, '90-91', 53/udp]")["expose"] == ["80", "90-91", "53/udp"]
    assert error("services:\n  a:\n    image: x\n    expose: [http]\n").endswith(
        'services.a.expose[0]: invalid port "http"')


# --- volumes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("short, expected", [
    ("/data", {"type": "volume", "target": "/data", "volume": {}}),
    ("data:/data", {"type": "volume", "source": "data", "target": "/data", "volume": {}}),
    ("data:/data:ro", {"type": "volume", "source": "data", "target": "/data",
                       "read_only": True, "volume": {}}),
    ("data:/data:nocopy", {"type": "volume", "source": "data", "target": "/data",
                           "volume": {"nocopy": True}}),
    ("./src:/src", {"type": "bind", "source": "/proj/src", "target": "/src",
                    "bind": {"create_host_path": True}}),
    ("./src:/src:ro,z", {"type": "bind", "source": "/proj/src", "target": "/src",
                         "read_only": True, "bind": {"create_host_path": True, "selinux": "z"}}),
    ("../up:/up:rw,rshared", {"type": "bind", "source": "/up", "target": "/up",
                              "bind": {"propagation": "rshared", "create_host_path": True}}),
    ("/etc/hosts:/h:cached,rw", {"type": "bind", "source": "/etc/hosts", "target": "/h",
                                 "bind": {"create_host_path": True}}),
    ("./x:/x:nocopy", {"type": "bind", "source": "/proj/x", "target": "/x",
                       "bind": {"create_host_path": True}}),
])
def test_volumes_short_syntax(short: str, expected: dict[str, Any]) -> None:
    assert service(f"volumes: [{json.dumps(short)}]")["volumes"] == [expected]


def test_colons_inside_uninterpolated_variables_do_not_split() -> None:
    assert nz.parse_volume("${DATA:-./d}:/d:ro", "v", "/proj") == {
        "type": "volume", "source": "${DATA:-./d}", "target": "/d", "read_only": True,
        "volume": {}}


def test_a_home_relative_bind_source_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    vol = service("volumes: ['~/cache:/c']")["volumes"][0]
    assert vol["source"] == "/home/me/cache"


@pytest.mark.parametrize("bad, why", [
    ("data:relative", "invalid spec: data:relative: the target must be an absolute path"),
    ("a:/b:ro:x", "invalid spec: a:/b:ro:x: too many colons"),
    ("a::/b", "invalid spec: a::/b: empty section between colons"),
    ("data:/data:z", "invalid spec: data:/data:z: z applies to bind mounts only"),
    ("", "invalid empty volume spec"),
])
def test_bad_volumes(bad: str, why: str) -> None:
    assert error(f"services:\n  a:\n    image: x\n    volumes: [{json.dumps(bad)}]\n"
                 "volumes: {data: {}}\n") == \
        f"validating /proj/compose.yaml: services.a.volumes[0]: {why}"


def test_volumes_long_syntax() -> None:
    vols = service("""
volumes:
  - {type: bind, source: ./conf, target: /etc/app, read_only: "true", bind: {create_host_path: false}}
  - {type: volume, source: data, target: /data, volume: {nocopy: true, subpath: sub}}
  - {type: tmpfs, target: /tmp, tmpfs: {size: 1m, mode: "1777"}}
""")["volumes"]
    assert vols == [
        {"type": "bind", "source": "/proj/conf", "target": "/etc/app", "read_only": True,
         "bind": {"create_host_path": False}},
        {"type": "volume", "source": "data", "target": "/data",
         "volume": {"nocopy": True, "subpath": "sub"}},
        {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 1048576, "mode": 0o1777}},
    ]


# --- mappings, commands, build ---------------------------------------------------------------

def test_environment_list_and_mapping_forms() -> None:
    env = {"FROM_OS": "os"}
    assert service("environment: [A=1, B=, C, FROM_OS, D=x=y]", environment=env)["environment"] \
        == {"A": "1", "B": "", "C": None, "D": "x=y", "FROM_OS": "os"}
    assert service("environment: {N: 1, T: true, F: 1.5, U: null, FROM_OS: null}",
                   environment=env)["environment"] == \
        {"F": "1.5", "FROM_OS": "os", "N": "1", "T": "true", "U": None}


def test_labels_sysctls_annotations_lists_become_mappings() -> None:
    s = service("labels: [b=2, a=1, flag]\nsysctls: [net.core.somaxconn=1024]\n"
                "annotations: {x: 1}")
    assert s["labels"] == {"a": "1", "b": "2", "flag": ""}
    assert list(s["labels"]) == ["a", "b", "flag"]
    assert s["sysctls"] == {"net.core.somaxconn": "1024"}
    assert s["annotations"] == {"x": "1"}


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("# comment\nA=from_a\nB=from_a\nSHARED=a\n")
    (tmp_path / "b.env").write_text("B=from_b\nSHARED=b\n")
    s = service("env_file: [a.env, b.env, {path: missing.env, required: false}]\n"
                "environment: [SHARED=env, A, UNSET]", working_dir=str(tmp_path))
    assert s["environment"] == {"A": "from_a", "B": "from_b", "SHARED": "env", "UNSET": None}
    assert "env_file" not in s


def test_a_missing_required_env_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    msg = error("services:\n  a:\n    image: x\n    env_file: nope.env\n",
                working_dir=str(tmp_path))
    assert msg.startswith("validating /proj/compose.yaml: services.a.env_file: ")
    assert f"env file {missing} not found" in msg


@pytest.mark.parametrize("given, expected", [
    ('"echo hello world"', ["echo", "hello", "world"]),
    ("""'sh -c "echo a b" '""", ["sh", "-c", "echo a b"]),
    ("[echo, 'a b']", ["echo", "a b"]),
    ("[]", []),
])
def test_command_and_entrypoint_strings_are_shell_split(given: str, expected: list[str]) -> None:
    s = service(f"command: {given}\nentrypoint: {given}")
    assert s["command"] == expected
    assert s["entrypoint"] == expected


def test_a_null_command_is_left_out_and_an_unclosed_quote_errors() -> None:
    assert "command" not in service("command: null")
    s = service("deploy: null\ndevelop: null\npid: null")
    assert "deploy" not in s and "develop" not in s and "pid" not in s
    assert error("services:\n  a:\n    image: x\n    command: [1]\n").endswith(
        "services.a.command[0] must be a string")
    assert error("services:\n  a:\n    image: x\n    command: 'echo \"a'\n").endswith(
        "services.a.command: No closing quotation")


def test_build_string_and_mapping() -> None:
    s = service("build: ./api")
    assert s["build"] == {"context": "/proj/api", "dockerfile": "Dockerfile"}
    s = service("build: {context: ., dockerfile: docker/Dockerfile.dev, target: dev, "
                "args: [A=1, B], labels: [l=v], cache_from: [x:y], shm_size: 1g}",
                environment={"B": "fromenv"})
    assert s["build"] == {"context": "/proj", "dockerfile": "docker/Dockerfile.dev",
                          "args": {"A": "1", "B": "fromenv"}, "labels": {"l": "v"},
                          "cache_from": ["x:y"], "target": "dev", "shm_size": 1 << 30}
    assert service("build: {dockerfile_inline: 'FROM x'}")["build"] == \
        {"context": "/proj", "dockerfile_inline": "FROM x"}
    git = "https://github.com/me/app.git#main"
    assert service(f"build: '{git}'")["build"]["context"] == git


def test_a_service_needs_an_image_or_a_build() -> None:
    assert error("services:\n  a:\n    restart: always\n") == (
        'service "a" has neither an image nor a build context specified: '
        "invalid compose project")


# --- depends_on, healthcheck, durations, sizes ------------------------------------------------

def test_depends_on_list_and_mapping() -> None:
    model = norm("""
services:
  a: {image: x, depends_on: [c, b]}
  b: {image: x, depends_on: {c: {condition: service_healthy, restart: true}}}
  c: {image: x, depends_on: {a2: {condition: service_completed_successfully, required: false}}}
  a2: {image: x}
""")
    s = model["services"]
    assert s["a"]["depends_on"] == {"b": {"condition": "service_started", "required": True},
                                    "c": {"condition": "service_started", "required": True}}
    assert s["b"]["depends_on"] == {"c": {"condition": "service_healthy", "restart": True,
                                          "required": True}}
    assert s["c"]["depends_on"] == {"a2": {"condition": "service_completed_successfully",
                                           "required": False}}


def test_depends_on_an_undefined_service() -> None:
    assert error("services:\n  web: {image: x, depends_on: [db]}\n") == \
        'service "web" depends on undefined service "db": invalid compose project'


def test_healthcheck_forms() -> None:
    hc = service("healthcheck: {test: pg_isready -U app, interval: 90s, timeout: 500ms, "
                 "retries: '5', start_period: 1h, start_interval: 1.5s}")["healthcheck"]
    assert hc == {"test": ["CMD-SHELL", "pg_isready -U app"], "timeout": "500ms",
                  "interval": "1m30s", "retries": 5, "start_period": "1h0m0s",
                  "start_interval": "1.5s"}
    assert list(hc) == ["test", "timeout", "interval", "retries", "start_period",
                        "start_interval"]
    assert service("healthcheck: {test: [CMD, curl, -f, x]}")["healthcheck"] == \
        {"test": ["CMD", "curl", "-f", "x"]}
    assert service("healthcheck: {disable: true}")["healthcheck"] == \
        {"test": ["NONE"], "disable": True}
    assert error("services:\n  a:\n    image: x\n    healthcheck: {test: [curl, x]}\n").endswith(
        'services.a.healthcheck.test must start either by "CMD", "CMD-SHELL" or "NONE"')


@pytest.mark.parametrize("given, go", [
    ("0", "0s"), ("1s", "1s"), ("90s", "1m30s"), ("1m30s", "1m30s"), ("500ms", "500ms"),
    ("1h", "1h0m0s"), ("1.5h", "1h30m0s"), ("2h3m4.5s", "2h3m4.5s"), ("1500us", "1.5ms"),
    ("10ns", "10ns"), ("-5s", "-5s"), ("1m0.25s", "1m0.25s"), ("3µs", "3µs"),
])
def test_durations_are_go_duration_strings(given: str, go: str) -> None:
    assert service(f"stop_grace_period: '{given}'")["stop_grace_period"] == go


@pytest.mark.parametrize("bad, why", [
    ("10", 'time: missing unit in duration "10"'),
    ("10x", 'time: unknown unit "x" in duration "10x"'),
    ("abc", 'time: invalid duration "abc"'),
    ("", 'time: invalid duration ""'),
])
def test_bad_durations(bad: str, why: str) -> None:
    assert error(f"services:\n  db:\n    image: x\n    healthcheck: {{interval: '{bad}'}}\n") \
        == f"validating /proj/compose.yaml: services.db.healthcheck.interval: {why}"


@pytest.mark.parametrize("given, n", [
    ("512m", 512 << 20), ("1g", 1 << 30), ("1.5g", 3 << 29), ("64M", 64 << 20),
    ("100k", 102400), ("1gb", 1 << 30), ("2MiB", 2 << 20), ("1024", 1024), (1024, 1024),
    ("-1", -1),
])
def test_byte_sizes_are_ints(given: Any, n: int) -> None:
    s = service(f"mem_limit: {json.dumps(given)}\nshm_size: {json.dumps(given)}\n"
                f"memswap_limit: {json.dumps(given)}\nmem_reservation: {json.dumps(given)}")
    assert (s["mem_limit"], s["shm_size"], s["memswap_limit"], s["mem_reservation"]) == (n,) * 4


@pytest.mark.parametrize("bad", ["12x", "m", "1.2.3g", "lots"])
def test_bad_sizes(bad: str) -> None:
    assert error(f"services:\n  web:\n    image: x\n    mem_limit: {bad}\n") == \
        f"validating /proj/compose.yaml: services.web.mem_limit: invalid size: '{bad}'"


def test_scalars_from_interpolated_strings_are_cast() -> None:
    s = service("privileged: 'true'\ninit: 'no'\ncpus: '1.5'\npids_limit: '100'\n"
                "tty: yes\noom_score_adj: -500\nscale: '2'")
    assert (s["privileged"], s["init"], s["cpus"], s["pids_limit"], s["tty"],
            s["oom_score_adj"], s["scale"]) == (True, False, 1.5, 100, True, -500, 2)
    assert error("services:\n  a:\n    image: x\n    privileged: maybe\n").endswith(
        'services.a.privileged: invalid boolean "maybe"')
    assert error("services:\n  a:\n    image: x\n    pids_limit: many\n").endswith(
        'services.a.pids_limit: invalid integer "many"')


def test_deploy_resources_and_replicas() -> None:
    s = service("deploy: {replicas: 3, resources: {limits: {cpus: 0.5, memory: 64m, pids: 20}, "
                "reservations: {cpus: '2', memory: 32m}}, "
                "restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3}}")
    assert s["deploy"] == {
        "replicas": 3,
        "resources": {"limits": {"cpus": "0.5", "memory": 64 << 20, "pids": 20},
                      "reservations": {"cpus": "2", "memory": 32 << 20}},
        "restart_policy": {"condition": "on-failure", "delay": "5s", "max_attempts": 3}}
    assert "scale" not in s  # as compose: replicas stay where they were given


def test_scale_and_replicas_must_agree() -> None:
    s = service("scale: 2\ndeploy: {resources: {limits: {memory: 1m}}}")
    assert (s["scale"], s["deploy"]["replicas"]) == (2, 2)
    assert service("scale: 2\ndeploy: {replicas: '2'}")["scale"] == 2
    assert error("services:\n  a: {image: x, scale: 2, deploy: {replicas: 3}}\n") == \
        "services.a: can't set distinct values on 'scale' and 'deploy.replicas': " \
        "invalid compose project"
    assert error("services:\n  a: {image: x, scale: -1}\n") == \
        "validating /proj/compose.yaml: services.a.scale must be greater than or equal to 0"
    assert error("services:\n  a: {image: x, container_name: c, deploy: {replicas: 2}}\n") == \
        "services.a: can't set container_name and deploy.replicas as container name must be " \
        "unique: invalid compose project"


@pytest.mark.parametrize("keys, which", [
    ("cpus: 1.5, deploy: {resources: {limits: {cpus: '2'}}}",
     "'cpus' and 'deploy.resources.limits.cpus'"),
    ("mem_limit: 1g, deploy: {resources: {limits: {memory: 512m}}}",
     "'mem_limit' and 'deploy.resources.limits.memory'"),
    ("mem_reservation: 1g, deploy: {resources: {reservations: {memory: 512m}}}",
     "'mem_reservation' and 'deploy.resources.reservations.memory'"),
    ("pids_limit: 5, deploy: {resources: {limits: {pids: 6}}}",
     "'pids_limit' and 'deploy.resources.limits.pids'"),
])
def test_two_spellings_of_a_limit_must_agree(keys: str, which: str) -> None:
    assert error(f"services:\n  a: {{image: x, {keys}}}\n") == \
        f"services.a: can't set distinct values on {which}: invalid compose project"
    same = keys.replace("'2'", "1.5").replace("512m", "1g").replace("pids: 6", "pids: 5")
    norm(f"services:\n  a: {{image: x, {same}}}\n")


def test_pull_policy_if_not_present_is_missing() -> None:
    assert service("pull_policy: if_not_present")["pull_policy"] == "missing"
    assert service("pull_policy: always")["pull_policy"] == "always"


def test_dockerfile_and_inline_are_exclusive() -> None:
    assert error("services:\n  a: {build: {dockerfile: D, dockerfile_inline: 'FROM x'}}\n") == \
        'service "a" declares mutualy exclusive dockerfile and dockerfile_inline: ' \
        "invalid compose project"


def test_ulimits_devices_extra_hosts_dns_tmpfs_logging() -> None:
    s = service("""
ulimits: {nproc: 65535, nofile: {soft: 1024, hard: '2048'}}
devices: [/dev/fuse, "/dev/sda:/dev/xvda:r", "/dev/tty0:rw", {source: /dev/kvm}]
extra_hosts: ["db:10.0.0.5", "v6=::1", "gw:host-gateway"]
dns: 1.1.1.1
dns_search: example.com
tmpfs: /run
logging: {driver: json-file, options: {max-size: 10m, max-file: 3}}
""")
    assert s["ulimits"] == {"nofile": {"soft": 1024, "hard": 2048},
                            "nproc": {"soft": 65535, "hard": 65535}}
    assert s["devices"] == [
        {"source": "/dev/fuse", "target": "/dev/fuse", "permissions": "rwm"},
        {"source": "/dev/sda", "target": "/dev/xvda", "permissions": "r"},
        {"source": "/dev/tty0", "target": "/dev/tty0", "permissions": "rw"},
        {"source": "/dev/kvm", "target": "/dev/kvm", "permissions": "rwm"}]
    assert s["extra_hosts"] == ["db=10.0.0.5", "v6=::1", "gw=host-gateway"]
    assert s["dns"] == ["1.1.1.1"] and s["dns_search"] == ["example.com"]
    assert s["tmpfs"] == ["/run"]
    assert s["logging"] == {"driver": "json-file", "options": {"max-file": "3", "max-size": "10m"}}
    assert service("extra_hosts: {a: 1.2.3.4, b: ['::1', 5.6.7.8]}")["extra_hosts"] == \
        ["a=1.2.3.4", "b=::1", "b=5.6.7.8"]


def test_secrets_and_configs_references() -> None:
    s = service("secrets: [s1, {source: s1, target: /x, uid: '1', mode: '0440'}]\n"
                "configs: [{source: c1, target: /etc/c, mode: 0444}]")
    assert s["secrets"] == [{"source": "s1"},
                            {"source": "s1", "target": "/x", "uid": "1", "mode": 0o440}]
    assert s["configs"] == [{"source": "c1", "target": "/etc/c", "mode": 0o444}]


def test_develop_watch_paths_are_absolute() -> None:
    s = service("develop: {watch: [{action: sync, path: ./src, target: /app/src, ignore: x},"
                "{action: rebuild, path: package.json}]}")
    assert s["develop"] == {"watch": [
        {"ignore": ["x"], "path": "/proj/src", "action": "sync", "target": "/app/src"},
        {"path": "/proj/package.json", "action": "rebuild"}]}
    assert error("services:\n  a:\n    image: x\n    develop: {watch: [{action: sync, "
                 "path: .}]}\n").endswith(
        "services.a.develop.watch[0]: target is required for non-rebuild actions")


# --- networks ----------------------------------------------------------------------------------

def test_the_default_network_is_added_where_services_use_it() -> None:
    m = norm("services:\n  a: {image: x}\n  b: {image: x, networks: [front]}\n"
             "  c: {image: x, network_mode: host}\nnetworks: {front: {}}\n")
    assert m["services"]["a"]["networks"] == {"default": None}
    assert m["services"]["b"]["networks"] == {"front": None}
    assert "networks" not in m["services"]["c"]
    assert service("networks: []")["networks"] == {"default": None}
    assert "networks" not in service("networks: []\nnetwork_mode: host")
    assert m["networks"] == {"default": {"name": "proj_default"}, "front": {"name": "proj_front"}}
    # nobody on the default network: none created
    m = norm("services:\n  b: {image: x, networks: [front]}\nnetworks: {front: {}}\n")
    assert list(m["networks"]) == ["front"]


def test_service_network_mapping_form() -> None:
    nets = service("networks: {front: {aliases: [api], ipv4_address: 10.1.0.5, priority: 10}, "
                   "back: null}")["networks"]
    assert nets == {"back": None,
                    "front": {"aliases": ["api"], "ipv4_address": "10.1.0.5", "priority": 10}}


def test_top_level_names_and_externals() -> None:
    m = norm("""
services:
  a: {image: x, networks: [n1, n2, n3, n4], volumes: [v1:/1, v2:/2, v3:/3, v4:/4]}
networks:
  n1:
  n2: {name: custom, driver: bridge, driver_opts: {mtu: 1400}, labels: [k=v],
       ipam: {config: [{subnet: 10.5.0.0/16, gateway: 10.5.0.1}]}, internal: "true"}
  n3: {external: true}
  n4: {external: {name: legacy}}
volumes:
  v1: {}
  v2: {name: keep}
  v3: {external: true, name: outside}
  v4: {external: true}
""")
    assert m["networks"] == {
        "n1": {"name": "proj_n1"},
        "n2": {"name": "custom", "driver": "bridge", "driver_opts": {"mtu": "1400"},
               "ipam": {"config": [{"subnet": "10.5.0.0/16", "gateway": "10.5.0.1"}]},
               "internal": True, "labels": {"k": "v"}},
        "n3": {"name": "n3", "external": True},
        "n4": {"name": "legacy", "external": True}}
    assert m["volumes"] == {"v1": {"name": "proj_v1"}, "v2": {"name": "keep"},
                            "v3": {"name": "outside", "external": True},
                            "v4": {"name": "v4", "external": True}}


def test_an_external_network_with_a_driver_conflicts() -> None:
    assert error("services:\n  a: {image: x}\nnetworks:\n  n: {external: true, driver: x}\n") == \
        'conflicting parameters "external" and "driver" specified for network "n"'


def test_secrets_and_configs_top_level() -> None:
    m = norm("""
services:
  a: {image: x, secrets: [s, e], configs: [c, f]}
secrets:
  s: {file: ./secret.txt}
  e: {environment: TOKEN}
configs:
  c: {content: "hello"}
  f: {file: /etc/app.conf, name: fixed}
""", environment={"TOKEN": "t"})
    assert m["secrets"] == {"e": {"name": "proj_e", "environment": "TOKEN"},
                            "s": {"name": "proj_s", "file": "/proj/secret.txt"}}
    assert m["configs"] == {"c": {"name": "proj_c", "content": "hello"},
                            "f": {"name": "fixed", "file": "/etc/app.conf"}}
    assert error("services:\n  a: {image: x}\nsecrets:\n  s: {name: x}\n") == \
        'secret "s" must declare either `file` or `environment`: invalid compose project'
    # the variable is read when the container is made, not here (config still prints)
    assert norm("services:\n  a: {image: x}\nsecrets:\n  s: {environment: NOPE}\n")[
        "secrets"] == {"s": {"name": "proj_s", "environment": "NOPE"}}


@pytest.mark.parametrize("svc, message", [
    ("{image: x, networks: [nope]}",
     'service "a" refers to undefined network nope: invalid compose project'),
    ("{image: x, volumes: ['nope:/x']}",
     'service "a" refers to undefined volume nope: invalid compose project'),
    ("{image: x, secrets: [nope]}",
     'service "a" refers to undefined secret nope: invalid compose project'),
    ("{image: x, configs: [nope]}",
     'service "a" refers to undefined config nope: invalid compose project'),
    ("{build: {context: ., secrets: [nope]}}",
     'service "a" refers to undefined build secret nope: invalid compose project'),
    ("{image: x, links: ['nope:alias']}",
     'service "a" depends on undefined service "nope": invalid compose project'),
    ("{image: x, volumes_from: ['nope:ro']}",
     'service "a" depends on undefined service "nope": invalid compose project'),
    ("{image: x, network_mode: 'service:nope'}",
     'service "a" depends on undefined service "nope": invalid compose project'),
    ("{image: x, pid: 'service:nope'}",
     'service "a" depends on undefined service "nope": invalid compose project'),
    ("{image: x, volumes_from: ['container:']}", 'service "a": invalid volumes_from "container:"'),
    ("{image: x, network_mode: host, networks: [default]}",
     "service a declares mutually exclusive `network_mode` and `networks`: "
     "invalid compose project"),
])
def test_undefined_references(svc: str, message: str) -> None:
    assert error(f"services:\n  a: {svc}\n  b: {{image: x}}\n") == message


def test_valid_references_to_services_and_containers() -> None:
    m = norm("services:\n  a: {image: x, links: ['b:bee'], volumes_from: [b, 'container:c1:ro'],"
             " ipc: 'service:b'}\n  b: {image: x, network_mode: 'service:a'}\n")
    assert m["services"]["a"]["links"] == ["b:bee"]
    assert m["services"]["a"]["volumes_from"] == ["b", "container:c1:ro"]
    assert m["services"]["b"]["network_mode"] == "service:a"


def test_links_namespaces_and_volumes_from_are_implicit_dependencies() -> None:
    m = norm("""
services:
  a: {image: x, links: ['b:bee'], volumes_from: [c, 'container:other'], ipc: 'service:d',
      depends_on: {b: {condition: service_healthy}}}
  b: {image: x}
  c: {image: x}
  d: {image: x, network_mode: 'service:c'}
""")
    s = m["services"]
    assert s["a"]["depends_on"] == {
        "b": {"condition": "service_healthy", "required": True},  # the explicit one stays
        "c": {"condition": "service_started", "required": True},
        "d": {"condition": "service_started", "restart": True, "required": True}}
    assert s["d"]["depends_on"] == {"c": {"condition": "service_started", "restart": True,
                                          "required": True}}
    assert "depends_on" not in s["b"]


# --- the demo project ------------------------------------------------------------------------

DEMO = """
name: demo
services:
  api:
    build:
      context: ./api
    ports:
      - "3000:3000"
    environment:
      DATABASE_URL: postgres://app:app@db:5432/app
      REDIS_URL: redis://cache:6379
    depends_on:
      db:
        condition: service_healthy
      cache:
        condition: service_started
  db:
    image: postgres:16
    environment:
      - POSTGRES_USER=app
      - POSTGRES_PASSWORD=app
    volumes:
      - dbdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U app"]
      interval: 1s
      timeout: 3s
      retries: 30
  cache:
    image: redis:7
x-note: kept
volumes:
  dbdata:
"""

DEMO_CANONICAL = {
    "name": "demo",
    "services": {
        "api": {
            "build": {"context": "/srv/demo/api", "dockerfile": "Dockerfile"},
            "depends_on": {"cache": {"condition": "service_started", "required": True},
                           "db": {"condition": "service_healthy", "required": True}},
            "environment": {"DATABASE_URL": "postgres://app:app@db:5432/app",
                            "REDIS_URL": "redis://cache:6379"},
            "networks": {"default": None},
            "ports": [{"mode": "ingress", "target": 3000, "published": "3000",
                       "protocol": "tcp"}],
        },
        "cache": {"image": "redis:7", "networks": {"default": None}},
        "db": {
            "environment": {"POSTGRES_PASSWORD": "app", "POSTGRES_USER": "app"},
            "healthcheck": {"test": ["CMD-SHELL", "pg_isready -U app"], "timeout": "3s",
                            "interval": "1s", "retries": 30},
            "image": "postgres:16",
            "networks": {"default": None},
            "volumes": [{"type": "volume", "source": "dbdata",
                         "target": "/var/lib/postgresql/data", "volume": {}}],
        },
    },
    "networks": {"default": {"name": "demo_default"}},
    "volumes": {"dbdata": {"name": "demo_dbdata"}},
    "x-note": "kept",
}


def demo() -> dict[str, Any]:
    return norm(DEMO, working_dir="/srv/demo", name="demo")


def test_the_demo_project_canonical_model() -> None:
    m = demo()
    assert m == DEMO_CANONICAL
    assert list(m["services"]) == ["api", "cache", "db"]
    assert list(m["services"]["api"]) == ["build", "depends_on", "environment", "networks",
                                          "ports"]


def test_normalize_does_not_change_its_input() -> None:
    raw = Raw(yaml.safe_load(DEMO))
    before = json.dumps(raw.model, sort_keys=True)
    nz.normalize(raw)
    assert json.dumps(raw.model, sort_keys=True) == before


def test_dump_yaml_in_compose_order() -> None:
    text = nz.dump(demo(), "yaml")
    assert text.startswith("name: demo\nservices:\n  api:\n    build:\n")
    assert "    ports:\n      - mode: ingress\n        target: 3000\n" \
           '        published: "3000"\n        protocol: tcp\n' in text
    assert "    networks:\n      default: null\n" in text
    assert "&" not in text and "*" not in text  # no anchors or aliases
    assert text.index("\nnetworks:") < text.index("\nvolumes:") < text.index("\nx-note:")
    assert yaml.safe_load(text) == DEMO_CANONICAL


def test_dump_quotes_only_strings_that_would_read_as_something_else() -> None:
    text = nz.dump({"name": "p", "services": {"s": {"environment": {
        "A": "true", "B": "1.5", "C": "null", "D": "plain text", "E": "line1\nline2",
        "F": "", "G": "*star", "H": "a: b", "I": "yes"}}}}, "yaml")
    assert 'A: "true"' in text and 'B: "1.5"' in text and 'C: "null"' in text
    assert 'F: ""' in text and 'G: "*star"' in text and 'H: "a: b"' in text
    assert 'I: "yes"' in text
    assert "D: plain text" in text
    assert "E: |-\n" in text


def test_dump_json_is_indented_by_two_and_escapes_like_go() -> None:
    # compose-go's MarshalJSON: a map (keys sorted), indented by two, no final newline
    text = nz.dump({"name": "p", "services": {"s": {"command": ["a<b", "&"]}}}, "json")
    assert text.startswith('{\n  "name": "p",\n  "services": {\n    "s": {')
    assert not text.endswith("\n")
    assert "\\u003c" in text and "\\u0026" in text
    assert json.loads(text)["services"]["s"]["command"] == ["a<b", "&"]
    assert json.loads(nz.dump(demo(), "json")) == DEMO_CANONICAL
    with pytest.raises(ComposeError):
        nz.dump(demo(), "toml")


# --- profiles ----------------------------------------------------------------------------------

PROFILED = """
services:
  web: {image: x, depends_on: [db]}
  db: {image: x}
  debug: {image: x, profiles: [dev], depends_on: [tools]}
  tools: {image: x, profiles: [tools]}
  docs: {image: x, profiles: [docs, dev]}
"""


def test_profiles_select_services() -> None:
    m = norm(PROFILED)
    assert sorted(nz.apply_profiles(m, [])["services"]) == ["db", "web"]
    assert sorted(nz.apply_profiles(m, ["docs"])["services"]) == ["db", "docs", "web"]
    assert sorted(nz.apply_profiles(m, ["*"])["services"]) == \
        ["db", "debug", "docs", "tools", "web"]
    # an explicitly named service is enabled with what it depends on
    assert sorted(nz.apply_profiles(m, [], ["debug"])["services"]) == \
        ["db", "debug", "tools", "web"]
    assert sorted(m["services"]) == ["db", "debug", "docs", "tools", "web"]  # input unchanged


def test_a_profile_whose_dependency_is_disabled_is_an_error() -> None:
    m = norm(PROFILED)
    with pytest.raises(ComposeError) as info:
        nz.apply_profiles(m, ["dev"])
    assert str(info.value) == \
        'service "debug" depends on undefined service "tools": invalid compose project'
    with pytest.raises(ComposeError, match="no such service: nope"):
        nz.apply_profiles(m, [], ["nope"])


def test_an_optional_dependency_on_a_disabled_service_is_dropped() -> None:
    m = norm("services:\n  a: {image: x, depends_on: {b: {condition: service_started, "
             "required: false}}}\n  b: {image: x, profiles: [p]}\n")
    out = nz.apply_profiles(m, [])
    assert list(out["services"]) == ["a"]
    assert "depends_on" not in out["services"]["a"]


# --- odd corners -------------------------------------------------------------------------------

def test_schema_errors_come_first_with_the_file() -> None:
    assert error("services:\n  api:\n    image: x\n    foo: 1\n") == \
        "validating /proj/compose.yaml: services.api additional properties 'foo' not allowed"


def test_an_empty_model_and_x_keys_in_services() -> None:
    assert nz.normalize(Raw({})) == {"name": "proj", "services": {}}
    s = service("x-meta: {owner: me}")
    assert s["x-meta"] == {"owner": "me"}
    assert list(s)[-1] == "x-meta"


def test_go_duration_and_sizes_helpers() -> None:
    assert go_duration(0) == "0s"
    assert go_duration(90 * 10**9) == "1m30s"
    assert go_duration(3_600 * 10**9 + 1) == "1h0m0.000000001s"
    assert nz.parse_duration("1h2m3s", "x") == 3723 * 10**9
    assert nz.to_bytes("1t", "x") == 1 << 40


def test_label_files_are_read_and_labels_win(tmp_path: Path) -> None:
    (tmp_path / "a.labels").write_text("com.example.a=1\ncom.example.b=from-file\n")
    s = service("label_file: a.labels\nlabels: {com.example.b: given}",
                working_dir=str(tmp_path))
    assert s["labels"] == {"com.example.a": "1", "com.example.b": "given"}
    assert "label_file" not in s
    msg = error("services:\n  a: {image: x, label_file: [nope.labels]}\n",
                working_dir=str(tmp_path))
    assert "services.a.label_file" in msg and "nope.labels not found" in msg


def test_realtime_cpu_and_blkio_values() -> None:
    s = service("cpu_rt_runtime: 400ms\ncpu_rt_period: '1400us'\n"
                "blkio_config: {weight: '300', device_read_bps: [{path: /dev/sda, rate: 12mb}],"
                " device_write_iops: [{path: /dev/sda, rate: '30'}],"
                " weight_device: [{path: /dev/sda, weight: 400}]}")
    assert (s["cpu_rt_runtime"], s["cpu_rt_period"]) == (400_000, 1400)
    assert service("cpu_rt_runtime: 95000")["cpu_rt_runtime"] == 95000
    assert s["blkio_config"] == {
        "weight": 300, "weight_device": [{"path": "/dev/sda", "weight": 400}],
        "device_read_bps": [{"path": "/dev/sda", "rate": 12 << 20}],
        "device_write_iops": [{"path": "/dev/sda", "rate": 30}]}


def test_a_local_bind_volume_device_is_made_absolute() -> None:
    m = norm("services:\n  a: {image: x, volumes: ['v:/v']}\n"
             "volumes:\n  v: {driver_opts: {type: none, o: bind, device: ./data}}\n"
             "  w: {driver_opts: {type: tmpfs, device: tmpfs}}\n")
    assert m["volumes"]["v"]["driver_opts"] == {"device": "/proj/data", "o": "bind",
                                                "type": "none"}
    assert m["volumes"]["w"]["driver_opts"] == {"device": "tmpfs", "type": "tmpfs"}


def test_a_project_loaded_from_disk_normalizes(tmp_path: Path) -> None:
    from ketch.compose.loader import LoadOptions, load

    (tmp_path / "compose.yaml").write_text(
        "services:\n"
        "  web:\n"
        "    build: ./web\n"
        "    ports: ['${PORT:-8080}:80']\n"
        "    env_file: web.env\n"
        "    volumes: ['./html:/usr/share/html:ro']\n")
    (tmp_path / "web.env").write_text("GREETING=hi\n")
    raw = load(LoadOptions(files=[str(tmp_path / "compose.yaml")], project_name="site",
                           environ={"PORT": "9000"}))
    m = nz.normalize(raw)
    web = m["services"]["web"]
    assert web["build"] == {"context": str(tmp_path / "web"), "dockerfile": "Dockerfile"}
    assert web["ports"] == [P(80, "9000")]
    assert web["environment"] == {"GREETING": "hi"}
    assert web["volumes"][0]["source"] == str(tmp_path / "html")
    assert m["networks"] == {"default": {"name": "site_default"}}
