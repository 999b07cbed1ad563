"""resolv.conf, hosts and hostname as dockerd 20.10 writes them for the default bridge."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.network.etcfiles import (
    ExtraHost,
    host_resolv_conf_path,
    hostname_file,
    hosts,
    parse_add_host,
    resolv_conf,
)

HOST = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n" \
       "nameserver fd00::1\noptions ndots:2\n"


def test_host_file_filtered() -> None:
    assert resolv_conf(HOST) == ("# generated\nsearch example.com\nnameserver 10.0.0.2\n"
                                 "options ndots:2\n")
    assert "nameserver fd00::1\n" in resolv_conf(HOST, ipv6=True)


def test_only_loopback_servers_fall_back_to_googles() -> None:
    got = resolv_conf("nameserver 127.0.0.1\nnameserver ::1\nsearch x")
    assert got == "search x\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert resolv_conf("").endswith("nameserver 8.8.4.4\n")
    assert "2001:4860:4860::8888" in resolv_conf("", ipv6=True)


def test_dns_flags_build_a_new_file() -> None:
    assert resolv_conf(HOST, dns=["1.1.1.1"]) == ("search example.com\nnameserver 1.1.1.1\n"
                                                  "options ndots:2\n")
    assert resolv_conf(HOST, dns_search=["."], dns_options=["rotate"]) == (
        "nameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver fd00::1\noptions rotate\n")


def test_systemd_resolved_stub(tmp_path: Path) -> None:
    etc, run = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    etc.write_text("nameserver 127.0.0.53\noptions edns0\n")
    assert host_resolv_conf_path(str(etc), str(run)) == str(etc)
    run.write_text("nameserver 10.0.0.2\n")
    assert host_resolv_conf_path(str(etc), str(run)) == str(run)


def test_hosts() -> None:
    got = hosts("abc123", "172.17.0.2",
                extra_hosts=[ExtraHost("db", "10.0.0.5"), ExtraHost("gw", "host-gateway")],
                host_gateway="172.17.0.1")
    assert got == ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                   "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                   "ff02::2\tip6-allrouters\n10.0.0.5\tdb\n172.17.0.1\tgw\n172.17.0.2\tabc123\n")
    assert hosts("h", "172.17.0.2", domainname="example.com").endswith(
        "172.17.0.2\th.example.com h\n")
    assert hosts("h", None).endswith("ff02::2\tip6-allrouters\n")
    with pytest.raises(InvalidArgument):
        hosts("h", None, extra_hosts=[ExtraHost("gw", "host-gateway")])
    assert hostname_file("abc") == "abc\n"


def test_parse_add_host() -> None:
    assert parse_add_host("db:10.0.0.5") == ExtraHost("db", "10.0.0.5")
    assert parse_add_host("db=10.0.0.5") == ExtraHost("db", "10.0.0.5")
    assert parse_add_host("v6:[fd00::1]") == ExtraHost("v6", "fd00::1")
    assert parse_add_host("gw:host-gateway") == ExtraHost("gw", "host-gateway")
    for bad in ("db", "db:", ":1.2.3.4", "db:notanip"):
        with pytest.raises(InvalidArgument):
            parse_add_host(bad)


def test_hosts_own_line_names_as_libnetwork() -> None:
    from ketch.network.etcfiles import hosts

    def own(hostname: str, domainname: str = "") -> str:
        return hosts(hostname, "10.0.0.2", domainname=domainname).splitlines()[-1]

    assert own("web") == "10.0.0.2\tweb"
    assert own("web", "dom.example") == "10.0.0.2\tweb.dom.example web"
    assert own("my.host.name", "dom.example") == "10.0.0.2\tmy.host.name.dom.example my"
    assert own("a.b") == "10.0.0.2\ta.b a"
    # one line per address, in the order the container joined its networks
    assert hosts("h", ["10.0.0.2", "fd00::2"]).splitlines()[-2:] == ["10.0.0.2\th",
                                                                     "fd00::2\th"]
