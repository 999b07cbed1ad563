"""``ketch network ...`` without a daemon: the requests it sends and what it prints.

The daemon is a FakeTransport answering as dockerd 20.10 does. The request
bodies expected here are the ones the docker CLI 28.2.2 sent to dockerd for
the same flags (captured through a logging proxy); the messages are the ones
it printed. tests/integration/test_network_cli_pairs.py runs both CLIs against a
real dockerd.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ketch.cli import main
from ketch.cli.network_cmds import go_csv_record, go_time_text, ipam_config, networks_output
from ketch.cli.session import Session
from ketch.client import Client, FakeTransport, Request, Response

Run = Callable[..., tuple[int, str, str]]

BRIDGE = {"Name": "bridge", "Id": "5ebaf2a26bea66fabe898ecaac6ffbf2de48dfeba0503c88c7787a68e4af3929",
          "Created": "2026-12-01T12:17:24.182711701Z", "Scope": "local", "Driver": "bridge",
          "EnableIPv6": False, "Internal": False, "Labels": {}}
N10 = {"Name": "n10", "Id": "494948717f7da4288bb2e93abb0bcc2b9cbaf1d71c5d5ffbe9c7c452eb6ac79b",
       "Created": "2026-12-01T12:17:32.1Z", "Scope": "local", "Driver": "bridge",
       "EnableIPv6": True, "Internal": True, "Labels": {"z": "", "x": "y"}}
N9 = {**N10, "Name": "n9", "Id": "3953b836c15362231b66d085aa6825644cf852990572746a7d18ebb5bc84c26e",
      "EnableIPv6": False, "Internal": False, "Labels": None,
      "Created": "2026-12-01T12:17:32.096095117Z"}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(transport: FakeTransport, *args: str, stdin: str = "",
            version: str = "1.41") -> tuple[int, str, str]:
        monkeypatch.setattr(Session, "connect",
                            lambda self: Client("unix:///nowhere", transport=transport,
                                                version=version))
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def ok(body: object, status: int = 200) -> Response:
    return Response(status, {"Content-Type": "application/json"}, json.dumps(body).encode())


def error(status: int, message: str) -> Response:
    return ok({"message": message}, status)


def created(r: Request) -> Response:
    return ok({"Id": "f" * 64, "Warning": ""}, 201)


def body(req: Request) -> Any:
    assert isinstance(req.body, bytes)
    return json.loads(req.body)


def query(req: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(req.path).query)


# --------------------------------------------------------------------------- create


def test_create_sends_dockers_body(cli: Run) -> None:
    t = FakeTransport(created)
    assert cli(t, "network", "create", "--subnet", "10.60.0.0/24", "--ip-range", "10.60.0.0/25",
               "--gateway", "10.60.0.1", "--aux-address", "b=10.60.0.3", "--label", "l=1",
               "-o", "o=2", "--ipam-opt", "i=3", "--ipv6=false", "--internal", "cap1") == \
        (0, "f" * 64 + "\n", "")
    [req] = t.requests
    assert (req.method, req.path) == ("POST", "/v1.41/networks/create")
    # Byte for byte what docker 28.2.2 sent to dockerd 20.10 (key order included).
    assert req.body == (
        b'{"Driver": "bridge", "Scope": "", "EnableIPv6": false, "IPAM": {"Driver": "default", '
        b'"Options": {"i": "3"}, "Config": [{"Subnet": "10.60.0.0/24", "IPRange": '
        b'"10.60.0.0/25", "Gateway": "10.60.0.1", "AuxiliaryAddresses": {"b": "10.60.0.3"}}]}, '
        b'"Internal": true, "Attachable": false, "Ingress": false, "ConfigOnly": false, '
        b'"ConfigFrom": null, "Options": {"o": "2"}, "Labels": {"l": "1"}, "Name": "cap1", '
        b'"CheckDuplicate": true}')


def test_create_defaults_and_newer_api(cli: Run) -> None:
    t = FakeTransport(created)
    assert cli(t, "network", "create", "cap2")[0] == 0
    assert body(t.requests[0]) == {
        "Driver": "bridge", "Scope": "", "IPAM": {"Driver": "default", "Options": {},
                                                  "Config": []},
        "Internal": False, "Attachable": False, "Ingress": False, "ConfigOnly": False,
        "ConfigFrom": None, "Options": {}, "Labels": {}, "Name": "cap2",
        "CheckDuplicate": True}
    # From API 1.44 on the daemon refuses duplicates by itself: no CheckDuplicate.
    t = FakeTransport(created)
    cli(t, "network", "create", "-d", "macvlan", "--ipv4", "--attachable", "--ingress",
        "--scope", "local", "--config-from", "base", "--config-only", "--subnet",
        "10.1.0.0/16,fd00::/64", "--label", "bare", "n", version="1.45")
    sent = body(t.requests[0])
    assert "CheckDuplicate" not in sent and "EnableIPv6" not in sent
    assert sent["EnableIPv4"] is True and sent["Driver"] == "macvlan"
    assert sent["ConfigFrom"] == {"Network": "base"} and sent["ConfigOnly"] is True
    assert sent["Attachable"] and sent["Ingress"] and sent["Scope"] == "local"
    assert sent["IPAM"]["Config"] == [{"Subnet": "10.1.0.0/16"}, {"Subnet": "fd00::/64"}]
    assert sent["Labels"] == {"bare": ""}


USAGE_TAIL = ("\n\nUsage:  ketch network create [OPTIONS] NETWORK\n\n"
              "Run 'ketch network create --help' for more information\n")


@pytest.mark.parametrize(("args", "code", "err"), [
    (["--gateway", "1.2.3.4"], 1, "every ip-range or gateway must have a corresponding subnet\n"),
    (["--subnet", "10.1.0.0/16", "--ip-range", "10.1.0.0/24", "--ip-range", "10.1.1.0/24"], 1,
     "every ip-range or gateway must have a corresponding subnet\n"),
    (["--subnet", "10.1.0.0/16", "--subnet", "10.1.2.0/24"], 1,
     "multiple overlapping subnet configuration is not supported\n"),
    (["--subnet", "10.1.0.0/16", "--ip-range", "bad"], 1, "invalid CIDR address: bad\n"),
    (["--subnet", "10.1.0.0/16", "--gateway", "bad"], 1, "no matching subnet for gateway bad\n"),
    (["--subnet", "10.1.0.0/16", "--gateway", "10.2.0.1"], 1,
     "no matching subnet for gateway 10.2.0.1\n"),
    (["--subnet", "10.1.0.0/16", "--aux-address", "x=10.2.0.1"], 1,
     "no matching subnet for aux-address 10.2.0.1\n"),
    (["--subnet", "10.0.0.0/8", "--ip-range", "10.1.0.0/16", "--ip-range", "10.2.0.0/16",
      "--subnet", "11.0.0.0/8"], 1,
     "cannot configure multiple ranges (10.2.0.0/16, 10.1.0.0/16) on the same subnet "
     "(10.0.0.0/8)\n"),
    (["--subnet", "10.0.0.0/8,bad"], 1, "invalid subnet: invalid CIDR address: bad\n"),
    (["--label", "a b=c"], 125,
     'invalid argument "a b=c" for "--label" flag: label \'a b\' contains whitespaces'
     + USAGE_TAIL),
    (["--label", "=c"], 125,
     'invalid argument "=c" for "--label" flag: invalid label \'=c\': empty name' + USAGE_TAIL),
    (["--ipv4=maybe"], 125,
     'invalid argument "maybe" for "--ipv4" flag: strconv.ParseBool: parsing "maybe": '
     "invalid syntax" + USAGE_TAIL),
])
def test_create_refuses_as_docker_does(cli: Run, args: list[str], code: int, err: str) -> None:
    t = FakeTransport(created)
    assert cli(t, "network", "create", *args, "x") == (code, "", err)
    assert t.requests == []


def test_create_daemon_error_and_arguments(cli: Run) -> None:
    t = FakeTransport(lambda r: error(409, "network with name n1 already exists"))
    assert cli(t, "network", "create", "n1") == (
        1, "", "Error response from daemon: network with name n1 already exists\n")
    code, _, err = cli(t, "network", "create")
    assert code == 1 and err.startswith(
        "ketch: 'ketch network create' requires 1 argument\n\n"
        "Usage:  ketch network create [OPTIONS] NETWORK\n")


def test_ipam_config_keeps_subnet_order_and_pairs_gateways() -> None:
    assert ipam_config(["10.2.0.0/16", "fd00::/64"], ["10.2.1.0/24"], ["fd00::1", "10.2.0.1"],
                       {"a": "10.2.0.5", "b": "fd00::5"}) == [
        {"Subnet": "10.2.0.0/16", "IPRange": "10.2.1.0/24", "Gateway": "10.2.0.1",
         "AuxiliaryAddresses": {"a": "10.2.0.5"}},
        {"Subnet": "fd00::/64", "Gateway": "fd00::1", "AuxiliaryAddresses": {"b": "fd00::5"}}]
    # A single subnet is not parsed here: the daemon words that refusal.
    assert ipam_config(["bad"], [], [], {}) == [{"Subnet": "bad"}]


# Go's encoding/csv, as pflag's StringSlice flags read their values (messages checked
# against docker 28.2.2's).
@pytest.mark.parametrize(("text", "want"), [
    ("a,b", ["a", "b"]),
    ('"a,b",c', ["a,b", "c"]),
    ('"a""b"', ['a"b']),
    ("a,", ["a", ""]),
    ('""', [""]),
    ("a,b\nc", ["a", "b"]),
    ('"a\nb",c', ["a\nb", "c"]),
    ('"a', 'parse error on line 1, column 3: extraneous or missing " in quoted-field'),
    ('a"b', 'parse error on line 1, column 2: bare " in non-quoted-field'),
    ('"a"b', 'parse error on line 1, column 3: extraneous or missing " in quoted-field'),
    ('x,"y', 'parse error on line 1, column 5: extraneous or missing " in quoted-field'),
    ('\u00e9,"y', 'parse error on line 1, column 6: extraneous or missing " in quoted-field'),
    ('"a\nb', 'record on line 1; parse error on line 2, column 2: extraneous or missing " '
               "in quoted-field"),
    ('\n\na"b', 'parse error on line 3, column 2: bare " in non-quoted-field'),
])
def test_go_csv_record(text: str, want: list[str] | str) -> None:
    if isinstance(want, str):
        with pytest.raises(ValueError) as exc:
            go_csv_record(text)
        assert str(exc.value) == want
    else:
        assert go_csv_record(text) == want


def test_csv_errors_are_flag_errors(cli: Run) -> None:
    t = FakeTransport(created)
    code, _, err = cli(t, "network", "create", "--subnet", 'a"b', "x")
    assert code == 125 and err.startswith(
        'invalid argument "a\\"b" for "--subnet" flag: parse error on line 1, column 2: '
        'bare " in non-quoted-field\n\nUsage:  ketch network create')
    assert t.requests == []


# --------------------------------------------------------------------------- ls


def test_ls_table_sorted_naturally(cli: Run) -> None:
    t = FakeTransport(lambda r: ok([N10, BRIDGE, N9]))
    assert cli(t, "network", "ls") == (0, (
        "NETWORK ID     NAME      DRIVER    SCOPE\n"
        "5ebaf2a26bea   bridge    bridge    local\n"
        "3953b836c153   n9        bridge    local\n"
        "494948717f7d   n10       bridge    local\n"), "")
    assert t.requests[0].path == "/v1.41/networks"
    assert cli(t, "network", "list", "-q") == (0, "5ebaf2a26bea\n3953b836c153\n494948717f7d\n",
                                                "")
    code, out, _ = cli(t, "network", "ls", "--no-trunc", "-q")
    assert out.splitlines() == [BRIDGE["Id"], N9["Id"], N10["Id"]]


def test_ls_filters_go_as_json(cli: Run) -> None:
    t = FakeTransport(lambda r: ok([]))
    assert cli(t, "network", "ls", "-f", "driver=bridge", "--filter", "Name = n",
               "-f", "type=custom") == (0, "NETWORK ID   NAME      DRIVER    SCOPE\n", "")
    assert json.loads(query(t.requests[0])["filters"][0]) == {
        "driver": ["bridge"], "name": ["n"], "type": ["custom"]}
    code, out, err = cli(t, "network", "ls", "-f", "foo")
    assert (code, out) == (125, "")
    assert err.startswith('invalid argument "foo" for "-f, --filter" flag: bad format of '
                          "filter (expected name=value)\n\nUsage:  ketch network ls [OPTIONS]")
    t = FakeTransport(lambda r: error(400, "Invalid filter 'bogus'"))
    assert cli(t, "network", "ls", "-f", "bogus=1") == (
        1, "", "Error response from daemon: Invalid filter 'bogus'\n")


def test_ls_formats(cli: Run) -> None:
    t = FakeTransport(lambda r: ok([N10, N9]))
    code, out, _ = cli(t, "network", "ls", "--format", "json")
    assert json.loads(out.splitlines()[1]) == {
        "CreatedAt": "2026-12-01 12:17:32.1 +0000 UTC", "Driver": "bridge",
        "ID": "494948717f7d", "IPv4": "false", "IPv6": "true", "Internal": "true",
        "Labels": "x=y,z=", "Name": "n10", "Scope": "local"}
    # Keys sorted, as docker's MarshalJSON of its context.
    assert out.splitlines()[0].startswith('{"CreatedAt":"2026-12-01 12:17:32.096095117 +0000 UTC"')
    assert cli(t, "network", "ls", "--format",
               "table {{.Name}}\t{{.IPv6}}\t{{.Internal}}\t{{.Labels}}") == (0, (
                   "NAME      IPV6      INTERNAL   LABELS\n"
                   "n9        false     false      \n"
                   "n10       true      true       x=y,z=\n"), "")
    assert cli(t, "network", "ls", "--format", "raw") == (0, (
        "network_id: 3953b836c153\nname: n9\ndriver: bridge\nscope: local\n\n"
        "network_id: 494948717f7d\nname: n10\ndriver: bridge\nscope: local\n\n"), "")
    assert cli(t, "network", "ls", "--format", "raw", "-q") == (
        0, "network_id: 3953b836c153\nnetwork_id: 494948717f7d\n", "")
    # -q does not change an explicit template, only the default table.
    assert cli(t, "network", "ls", "-q", "--format", '{{.Name}} {{.Label "x"}}') == (
        0, "n9 \nn10 y\n", "")
    assert cli(t, "network", "ls", "--format", "{{.Foo}}") == (
        1, "", 'template parsing error: template: :1:2: executing "" at <.Foo>: '
               "can't evaluate field Foo in type *network.networkContext\n")


@pytest.mark.parametrize(("api", "go"), [
    ("2026-12-01T12:17:24.182711701Z", "2026-12-01 12:17:24.182711701 +0000 UTC"),
    ("2026-12-01T12:17:24.180000000Z", "2026-12-01 12:17:24.18 +0000 UTC"),
    ("2026-12-01T12:17:24Z", "2026-12-01 12:17:24 +0000 UTC"),
    ("2026-12-01T13:17:24.5+01:00", "2026-12-01 13:17:24.5 +0100 +0100"),
    ("2026-12-01T07:17:24-05:00", "2026-12-01 07:17:24 -0500 -0500"),
    ("", "0001-01-01 00:00:00 +0000 UTC"),
])
def test_created_at_is_gos_time_string(api: str, go: str) -> None:
    assert go_time_text(api) == go


def test_networks_output_without_rows_keeps_the_header() -> None:
    assert networks_output([], "table {{.ID}}") == "NETWORK ID\n"


# --------------------------------------------------------------------------- inspect


def _inspect_daemon(r: Request) -> Response:
    name = urlsplit(r.path).path.rsplit("/", 1)[-1]
    for n in (BRIDGE, N9, N10):
        if n["Name"] == name:
            return ok(n)
    return error(404, f"network {name} not found")


def test_inspect_found_and_missing(cli: Run) -> None:
    t = FakeTransport(_inspect_daemon)
    code, out, err = cli(t, "network", "inspect", "n9", "nope", "bridge")
    assert code == 1 and json.loads(out) == [N9, BRIDGE]
    assert out.startswith('[\n    {\n        "Name": "n9",\n        "Id": ')
    assert err == "Error response from daemon: network nope not found\n"
    assert cli(t, "network", "inspect", "nope") == (
        1, "[]\n", "Error response from daemon: network nope not found\n")
    assert cli(t, "network", "inspect", "-f", "{{.Name}}", "n9", "nope", "n10") == (
        1, "n9\nn10\n", "Error response from daemon: network nope not found\n")
    code, out, _ = cli(t, "network", "inspect", "--format", "json", "n9")
    assert out == json.dumps([N9], separators=(",", ":")) + "\n"


def test_inspect_errors_in_name_order(cli: Run) -> None:
    t = FakeTransport(_inspect_daemon)
    assert cli(t, "network", "inspect", "-f", "{{.Foo}}", "n9", "nope") == (
        1, "\n", 'template parsing error: template: :1:2: executing "" at <.Foo>: map has no '
                 'entry for key "Foo"\nError response from daemon: network nope not found\n')
    sent = len(t.requests)
    # A template that does not parse fails before the daemon is asked.
    assert cli(t, "network", "inspect", "-f", "{{", "n9") == (
        64, "", "template parsing error: template: :1: unclosed action\n")
    assert len(t.requests) == sent


def test_inspect_templates_see_dockers_struct_first(cli: Run) -> None:
    raw = {"Name": "n", "Id": "i", "Created": "2026-12-01T12:17:24Z", "Scope": "local",
           "Driver": "bridge", "EnableIPv6": False,
           "IPAM": {"Driver": "default", "Options": None,
                    "Config": [{"Gateway": "10.0.0.1", "Subnet": "10.0.0.0/24", "X": 1}]},
           "Internal": False, "Attachable": False, "Ingress": False,
           "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
           "Containers": {"c": {"Name": "a", "EndpointID": "e", "MacAddress": "m",
                                "IPv4Address": "10.0.0.2/24", "IPv6Address": "",
                                "Extra": "x"}},
           "Options": {}, "Labels": {}, "Unknown": "u"}
    t = FakeTransport(lambda r: ok(raw))
    # {{json .}}: the struct's fields in its order, EnableIPv4 added, unknown keys gone.
    assert cli(t, "network", "inspect", "-f", "{{json .}}", "n") == (0, (
        '{"Name":"n","Id":"i","Created":"2026-12-01T12:17:24Z","Scope":"local",'
        '"Driver":"bridge","EnableIPv4":false,"EnableIPv6":false,"IPAM":{"Driver":"default",'
        '"Options":null,"Config":[{"Subnet":"10.0.0.0/24","Gateway":"10.0.0.1"}]},'
        '"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},'
        '"ConfigOnly":false,"Containers":{"c":{"Name":"a","EndpointID":"e","MacAddress":"m",'
        '"IPv4Address":"10.0.0.2/24","IPv6Address":""}},"Options":{},"Labels":{}}\n'), "")
    assert cli(t, "network", "inspect", "-f", "{{.EnableIPv4}}", "n") == (0, "false\n", "")
    # What the struct lacks is looked up in the daemon's JSON.
    assert cli(t, "network", "inspect", "-f", "{{.Unknown}}", "n") == (0, "u\n", "")
    # The default output is the daemon's JSON as it came.
    code, out, _ = cli(t, "network", "inspect", "n")
    assert json.loads(out) == [raw]


def test_inspect_verbose_and_empty_name(cli: Run) -> None:
    t = FakeTransport(_inspect_daemon)
    cli(t, "network", "inspect", "-v", "n9")
    assert query(t.requests[-1]) == {"verbose": ["true"]}
    assert cli(t, "network", "inspect", " ") == (
        1, "[]\n", "invalid network name or ID: value is empty\n")


# --------------------------------------------------------------------------- rm


def _rm_daemon(r: Request) -> Response:
    name = r.path.rsplit("/", 1)[-1]
    if name == "bridge":
        return error(403, "bridge is a pre-defined network and cannot be removed")
    if name.startswith("nope"):
        return error(404, f"network {name} not found")
    return Response(204, {}, b"")


def test_rm_each_then_exit_status(cli: Run) -> None:
    t = FakeTransport(_rm_daemon)
    assert cli(t, "network", "rm", "bridge", "r1", "nope", "r2") == (1, "r1\nr2\n", (
        "Error response from daemon: bridge is a pre-defined network and cannot be removed\n"
        "Error response from daemon: network nope not found\n"
        "exit status 1\n"))
    assert [(r.method, r.path) for r in t.requests] == [
        ("DELETE", "/v1.41/networks/bridge"), ("DELETE", "/v1.41/networks/r1"),
        ("DELETE", "/v1.41/networks/nope"), ("DELETE", "/v1.41/networks/r2")]
    # -f forgives only what is not there.
    assert cli(t, "network", "remove", "-f", "nope", "r1") == (0, "r1\n", "")
    assert cli(t, "network", "rm", "-f", "bridge")[0] == 1


# --------------------------------------------------------------------------- prune

WARNING = ("WARNING! This will remove all custom networks not used by at least one container.\n"
           "Are you sure you want to continue? [y/N] ")


def test_prune_prompt_and_report(cli: Run) -> None:
    t = FakeTransport(lambda r: ok({"NetworksDeleted": ["p1", "p2"]}))
    assert cli(t, "network", "prune", stdin="n\n") == (0, WARNING, "")
    assert t.requests == []
    assert cli(t, "network", "prune", stdin="y\n") == (
        0, WARNING + "Deleted Networks:\np1\np2\n\n", "")
    assert (t.requests[0].method, t.requests[0].path) == ("POST", "/v1.41/networks/prune")
    cli(t, "network", "prune", "-f", "--filter", "until=1h", "--filter", "label=a=b")
    assert json.loads(query(t.requests[-1])["filters"][0]) == {
        "until": ["1h"], "label": ["a=b"]}
    t = FakeTransport(lambda r: ok({"NetworksDeleted": None}))
    assert cli(t, "network", "prune", "-f") == (0, "", "")


def test_prune_refusals(cli: Run) -> None:
    t = FakeTransport(lambda r: error(400, "Invalid filter 'bogus'"))
    assert cli(t, "network", "prune", "-f", "--filter", "bogus=1") == (
        1, "", "Error response from daemon: Invalid filter 'bogus'\n")
    code, _, err = cli(t, "network", "prune", "--filter", "bogus")
    assert code == 125 and err.startswith(
        'invalid argument "bogus" for "--filter" flag: bad format of filter '
        "(expected name=value)\n\nUsage:  ketch network prune [OPTIONS]\n")


# --------------------------------------------------------------------------- connect


def test_connect_sends_dockers_body(cli: Run) -> None:
    t = FakeTransport(lambda r: Response(200, {}, b"OK"))
    assert cli(t, "network", "connect", "--alias", "x", "--ip", "10.60.0.77", "--link",
               "c1:cc", "--driver-opt", "a=b", "cap1", "c1") == (0, "", "")
    [req] = t.requests
    assert (req.method, req.path) == ("POST", "/v1.41/networks/cap1/connect")
    # What docker 28.2.2 sent for the same flags.
    assert body(req) == json.loads(
        '{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.60.0.77"},'
        '"Links":["c1:cc"],"Aliases":["x"],"MacAddress":"","DriverOpts":{"a":"b"},'
        '"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"",'
        '"IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,'
        '"DNSNames":null}}')
    cli(t, "network", "connect", "cap2", "c1")
    assert body(t.requests[-1]) == json.loads(
        '{"Container":"c1","EndpointConfig":{"IPAMConfig":{},"Links":null,"Aliases":[],'
        '"MacAddress":"","DriverOpts":{},"GwPriority":0,"NetworkID":"","EndpointID":"",'
        '"Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"",'
        '"GlobalIPv6PrefixLen":0,"DNSNames":null}}')
    cli(t, "network", "connect", "--alias", "a1,a2", "--ip6", "fd00::9", "--link-local-ip",
        "169.254.1.1,169.254.1.2", "--gw-priority", "-3", "n", "c")
    ep = body(t.requests[-1])["EndpointConfig"]
    assert ep["Aliases"] == ["a1", "a2"] and ep["GwPriority"] == -3
    assert ep["IPAMConfig"] == {"IPv6Address": "fd00::9",
                                "LinkLocalIPs": ["169.254.1.1", "169.254.1.2"]}


CONNECT_TAIL = ("\n\nUsage:  ketch network connect [OPTIONS] NETWORK CONTAINER\n\n"
                "Run 'ketch network connect --help' for more information\n")


@pytest.mark.parametrize(("args", "code", "err"), [
    (["--driver-opt", "bad"], 1, "invalid key/value pair format in driver options\n"),
    (["--driver-opt", "=x"], 1, "invalid key/value pair format in driver options\n"),
    (["--link", "a:b:c"], 125,
     'invalid argument "a:b:c" for "--link" flag: bad format for links: a:b:c' + CONNECT_TAIL),
    (["--link", ""], 125,
     'invalid argument "" for "--link" flag: empty string specified for links' + CONNECT_TAIL),
    (["--gw-priority", "x"], 125,
     'invalid argument "x" for "--gw-priority" flag: strconv.ParseInt: parsing "x": '
     "invalid syntax" + CONNECT_TAIL),
])
def test_connect_refuses_as_docker_does(cli: Run, args: list[str], code: int, err: str) -> None:
    t = FakeTransport(lambda r: Response(200, {}, b"OK"))
    assert cli(t, "network", "connect", *args, "n", "c") == (code, "", err)
    assert t.requests == []


def test_connect_errors_and_empty_ids(cli: Run) -> None:
    t = FakeTransport(lambda r: error(404, "No such container: nope"))
    assert cli(t, "network", "connect", "n", "nope") == (
        1, "", "Error response from daemon: No such container: nope\n")
    t = FakeTransport(lambda r: Response(200, {}, b"OK"))
    assert cli(t, "network", "connect", " ", "c") == (
        1, "", "invalid network name or ID: value is empty\n")
    assert cli(t, "network", "disconnect", "n", "") == (
        1, "", "invalid container name or ID: value is empty\n")
    assert t.requests == []


def test_disconnect_body(cli: Run) -> None:
    t = FakeTransport(lambda r: Response(200, {}, b"OK"))
    assert cli(t, "network", "disconnect", "-f", " cap2 ", "c1") == (0, "", "")
    [req] = t.requests
    assert (req.path, body(req)) == ("/v1.41/networks/cap2/disconnect",
                                     {"Container": "c1", "Force": True})
    cli(t, "network", "disconnect", "cap2", "c1")
    assert body(t.requests[-1]) == {"Container": "c1", "Force": False}


# --------------------------------------------------------------------------- help


def test_group_help_lists_dockers_commands(cli: Run) -> None:
    t = FakeTransport(lambda r: ok({}))
    code, out, _ = cli(t, "network", "--help")
    names = [line.split()[0] for line in out.split("Commands:\n")[1].split("\n\n")[0].splitlines()]
    assert code == 0 and names == ["connect", "create", "disconnect", "inspect", "ls", "prune",
                                   "rm"]
    code, out, _ = cli(t, "network", "ls", "--help")
    assert "Aliases:\n  ketch network ls, ketch network list\n" in out
    code, out, _ = cli(t, "network", "rm", "--help")
    assert "Aliases:\n  ketch network rm, ketch network remove\n" in out
    assert t.requests == []
