"""``ketch network create|ls|inspect|rm|prune|connect|disconnect``: docker's network commands.

The work is the daemon's (``/networks`` of the Engine API); these commands
read flags as the docker CLI 28 does, send the bodies it sends, print what
it prints and exit as it exits. What docker checks before asking the daemon
is checked here in its words: flag values (labels, links, filters) as usage
errors (exit 125), the IPAM flags that do not fit together (more gateways
than subnets, a range outside every subnet) as plain errors (exit 1).
Everything else, unknown drivers and swarm-only options included, is the
daemon's to refuse.
"""

from __future__ import annotations

import sys

from ketch.cli.command import Group, UsageFailure, command, option, pass_obj
from ketch.cli.flags import go_quote
from ketch.cli.session import Session, error_text, local, parse_filters
from ketch.errors import InvalidArgument, KetchError, NotFound

TYPE_CHECKING = False     # typing costs the CLI's start-up; see ketch.cli.flags
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    from ketch.cli.formatting import Struct

PRUNE_WARNING = ("WARNING! This will remove all custom networks not used by at least one "
                 "container.\nAre you sure you want to continue? [y/N] ")

# --------------------------------------------------------------------------- listing

NETWORK_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv4": "IPV4",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}
NETWORKS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
NETWORKS_RAW = "network_id: {{.ID}}\\nname: {{.Name}}\\ndriver: {{.Driver}}\\nscope: {{.Scope}}\\n"


def network_format(source: str | None, *, quiet: bool = False) -> str:
    """docker's network.NewFormat: -q only changes the default table and "raw"."""
    if not source or source == "table":
        return "{{.ID}}" if quiet else NETWORKS_TABLE
    if source == "raw":
        return "network_id: {{.ID}}" if quiet else NETWORKS_RAW
    return source


def go_time_text(created: str) -> str:
    """Go's ``time.Time.String()`` of an RFC 3339 time as the API sends it:
    "2026-12-01T12:17:24.1827117Z" -> "2026-12-01 12:17:24.1827117 +0000 UTC"
    (no fraction when it is zero, as Go trims trailing zeros). A time with an
    offset keeps it, named by the offset as Go's fixed zones are ("+0100 +0100")."""
    if not created:
        return "0001-01-01 00:00:00 +0000 UTC"
    date, _, rest = created.partition("T")
    zone = "+0000 UTC"
    if rest.endswith(("Z", "z")):
        clock = rest[:-1]
    else:
        cut = max(rest.rfind("+"), rest.rfind("-"))
        clock, offset = (rest[:cut], rest[cut:]) if cut > 0 else (rest, "")
        if offset:
            numeric = offset.replace(":", "")
            zone = "+0000 UTC" if numeric in ("+0000", "-0000") else f"{numeric} {numeric}"
    whole, dot, frac = clock.partition(".")
    frac = frac.rstrip("0")
    return f"{date} {whole}{'.' + frac if dot and frac else ''} {zone}"


def network_row(n: Mapping[str, Any], *, trunc: bool = True) -> Struct:
    """One row of ``docker network ls`` (docker's networkContext) for a network summary."""
    from ketch.cli.formatting import Struct, truncate_id

    labels: Mapping[str, str] = n.get("Labels") or {}

    def label(name: str) -> str:
        return labels.get(name, "")

    def flag(key: str) -> str:
        return "true" if n.get(key) else "false"

    nid = n.get("Id") or n.get("ID") or ""
    return Struct("*network.networkContext", {
        "ID": truncate_id(nid) if trunc else nid,
        "Name": n.get("Name") or "",
        "Driver": n.get("Driver") or "",
        "Scope": n.get("Scope") or "",
        "IPv4": flag("EnableIPv4"),
        "IPv6": flag("EnableIPv6"),
        "Internal": flag("Internal"),
        # docker joins a Go map in its random order; sorted, the column is stable.
        "Labels": ",".join(sorted(f"{k}={v}" for k, v in labels.items())),
        "Label": label,
        "CreatedAt": go_time_text(n.get("Created") or ""),
    })


def networks_output(networks: Iterable[Mapping[str, Any]], fmt: str | None = None, *,
                    quiet: bool = False, no_trunc: bool = False) -> str:
    """What ``docker network ls [-q] [--no-trunc] [--format F]`` prints, sorted by name."""
    from ketch.cli.formatting import render
    from ketch.cli.views import natural_key

    final = network_format(fmt, quiet=quiet)
    ordered = sorted(networks, key=lambda n: natural_key(n.get("Name") or ""))
    return render(final, [network_row(n, trunc=not no_trunc) for n in ordered],
                  NETWORK_HEADERS)


# --------------------------------------------------------------------------- flag values


def _bad_value(flag: str, value: str, why: str) -> UsageFailure:
    """pflag's refusal of one flag value: printed with the usage, exit 125."""
    return UsageFailure(f"invalid argument {go_quote(value)} for {go_quote(flag)} flag: {why}")


def go_csv_record(text: str) -> list[str]:
    """The first record of Go's encoding/csv reader over ``text`` (what pflag's
    StringSlice reads), with its errors: ``parse error on line 1, column 2: bare " in
    non-quoted-field`` and ``... extraneous or missing " in quoted-field``."""
    lines = text.splitlines(keepends=True)
    start = 1
    while lines and lines[0] in ("\n", "\r\n"):
        lines.pop(0)                 # Go skips empty lines before a record
        start += 1
    if not lines:
        return []
    line, rest, num = lines[0], lines[1:], start
    if not line.endswith("\n") and line.endswith("\r"):
        line = line[:-1]             # a \r before the end of input is dropped

    def nl(s: str) -> int:
        return 2 if s.endswith("\r\n") else 1 if s.endswith("\n") else 0

    def fail(line_no: int, col: int, what: str) -> ValueError:
        where = f"record on line {start}; " if line_no != start else ""
        return ValueError(f"{where}parse error on line {line_no}, column {col}: {what}")

    fields: list[str] = []
    col = 1
    while True:
        if not line or line[0] != '"':
            i = line.find(",")
            field = line[:i] if i >= 0 else line[:len(line) - nl(line)]
            j = field.find('"')
            if j >= 0:
                raise fail(num, col + len(field[:j].encode()), 'bare " in non-quoted-field')
            fields.append(field)
            if i < 0:
                return fields
            line = line[i + 1:]
            col += len(field.encode()) + 1
            continue
        line = line[1:]
        col += 1
        buf = ""
        while True:
            i = line.find('"')
            if i >= 0:
                buf += line[:i]
                col += len(line[:i].encode()) + 1
                line = line[i + 1:]
                if line[:1] == '"':
                    buf += '"'
                    line = line[1:]
                    col += 1
                elif line[:1] == ",":
                    line = line[1:]
                    col += 1
                    fields.append(buf)
                    break
                elif nl(line) == len(line):
                    fields.append(buf)
                    return fields
                else:
                    raise fail(num, col - 1, 'extraneous or missing " in quoted-field')
            elif line:
                buf += line
                col += len(line.encode())
                if rest:
                    line, rest = rest[0], rest[1:]
                    num += 1
                    col = 1
                else:
                    line = ""
            else:
                raise fail(num, col, 'extraneous or missing " in quoted-field')


def csv_words(flag: str, values: Iterable[str]) -> list[str]:
    """A pflag StringSlice: every occurrence is a CSV line ("--subnet a,b" is two)."""
    out: list[str] = []
    for v in values:
        if v == "":
            continue
        try:
            out.extend(go_csv_record(v))
        except ValueError as exc:
            raise _bad_value(flag, v, str(exc)) from None
    return out


def filters(flag: str, words: Iterable[str]) -> dict[str, list[str]]:
    """docker's FilterOpt: "key=value" words, a word without "=" refused as a flag value."""
    words = [w for w in words if w != ""]
    for w in words:
        if "=" not in w:
            raise _bad_value(flag, w, "bad format of filter (expected name=value)")
    return parse_filters(words)


def kv_map(words: Iterable[str]) -> dict[str, str]:
    """docker's MapOpts / ConvertKVStringsToMap: "k=v" -> {k: v}, "k" -> {k: ""}."""
    out: dict[str, str] = {}
    for w in words:
        key, _, value = w.partition("=")
        out[key] = value
    return out


def check_labels(labels: Iterable[str]) -> list[str]:
    """opts.ValidateLabel on every --label."""
    from ketch.cli.run_opts import check_label

    out = []
    for v in labels:
        try:
            out.append(check_label(v))
        except ValueError as exc:
            raise _bad_value("--label", v, str(exc)) from None
    return out


def check_link(value: str) -> str:
    """opts.ValidateLink: "name" or "name:alias", never more colons."""
    if value == "":
        raise _bad_value("--link", value, "empty string specified for links")
    if value.count(":") > 1:
        raise _bad_value("--link", value, f"bad format for links: {value}")
    return value


# --------------------------------------------------------------------------- IPAM


class _Subnet:
    __slots__ = ("aux", "gateway", "ip_range", "subnet")

    def __init__(self, subnet: str) -> None:
        self.subnet = subnet
        self.ip_range = ""
        self.gateway = ""
        self.aux: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        """An IPAMConfig as Go marshals it: empty fields are left out."""
        out: dict[str, Any] = {}
        for key, value in (("Subnet", self.subnet), ("IPRange", self.ip_range),
                           ("Gateway", self.gateway), ("AuxiliaryAddresses", self.aux)):
            if value:
                out[key] = value
        return out


def _cidr_error(text: str) -> KetchError:
    return local(InvalidArgument(f"invalid CIDR address: {text}"))


def _parse_cidr(text: str) -> tuple[Any, Any]:
    """net.ParseCIDR: the address and its network (host bits allowed), or Go's error."""
    import ipaddress

    addr, slash, bits = text.partition("/")
    if not slash or not bits.isdigit() or "%" in addr:
        raise _cidr_error(text)
    try:
        ip = ipaddress.ip_address(addr)
        net = ipaddress.ip_network(f"{addr}/{int(bits)}", strict=False)
    except ValueError:
        raise _cidr_error(text) from None
    return ip, net


def _contains(net: Any, ip: Any) -> bool:
    """net.IPNet.Contains: an IPv4-mapped IPv6 address counts as the IPv4 one."""
    if ip is None:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return bool(ip.version == net.version and ip in net)


def subnet_matches(subnet: str, data: str) -> bool:
    """docker's subnetMatches: is ``data`` (an address, or a CIDR's address) in ``subnet``?"""
    import ipaddress

    try:
        _, net = _parse_cidr(subnet)
    except KetchError as exc:
        raise local(InvalidArgument(f"invalid subnet: {exc}")) from None
    if "/" in data:
        ip, _ = _parse_cidr(data)
    else:
        try:
            ip = ipaddress.ip_address(data)
        except ValueError:
            ip = None
    return _contains(net, ip)


def ipam_config(subnets: Sequence[str], ip_ranges: Sequence[str], gateways: Sequence[str],
                aux_addresses: Mapping[str, str]) -> list[dict[str, Any]]:
    """docker's createIPAMConfig: the subnets with their range, gateway and auxiliary
    addresses, refused in docker's words when they do not fit together. The configs
    keep the order of --subnet (docker's come out of a Go map, in any order)."""

    def fail(message: str) -> KetchError:
        return local(InvalidArgument(message))

    if len(subnets) < len(ip_ranges) or len(subnets) < len(gateways):
        raise fail("every ip-range or gateway must have a corresponding subnet")
    data: dict[str, _Subnet] = {}
    for s in subnets:
        for k in data:
            if subnet_matches(s, k) or subnet_matches(k, s):
                raise fail("multiple overlapping subnet configuration is not supported")
        data[s] = _Subnet(s)
    for r in ip_ranges:
        match = False
        for s in subnets:
            _parse_cidr(r)
            if not subnet_matches(s, r):
                continue
            if data[s].ip_range:
                raise fail(f"cannot configure multiple ranges ({r}, {data[s].ip_range}) "
                           f"on the same subnet ({s})")
            data[s].ip_range = r
            match = True
        if not match:
            raise fail(f"no matching subnet for range {r}")
    for g in gateways:
        match = False
        for s in subnets:
            if not subnet_matches(s, g):
                continue
            if data[s].gateway:
                raise fail(f"cannot configure multiple gateways ({g}, {data[s].gateway}) "
                           f"for the same subnet ({s})")
            data[s].gateway = g
            match = True
        if not match:
            raise fail(f"no matching subnet for gateway {g}")
    for key, aa in aux_addresses.items():
        match = False
        for s in subnets:
            if not subnet_matches(s, aa):
                continue
            data[s].aux[key] = aa
            match = True
        if not match:
            raise fail(f"no matching subnet for aux-address {aa}")
    return [d.body() for d in data.values()]


# --------------------------------------------------------------------------- create


@command("create", "[OPTIONS] NETWORK", "Create a network", nargs=(1, 1))
@option("--attachable", is_flag=True, help="Enable manual container attachment")
@option("--aux-address", "aux_addresses", metavar="map", multiple=True,
        help="Auxiliary IPv4 or IPv6 addresses used by Network driver (default map[])")
@option("--config-from", metavar="string", default="",
        help="The network from which to copy the configuration")
@option("--config-only", is_flag=True, help="Create a configuration only network")
@option("-d", "--driver", metavar="string", default="bridge",
        help='Driver to manage the Network (default "bridge")')
@option("--gateway", "gateways", metavar="strings", multiple=True,
        help="IPv4 or IPv6 Gateway for the master subnet")
@option("--ingress", is_flag=True, help="Create swarm routing-mesh network")
@option("--internal", is_flag=True, help="Restrict external access to the network")
@option("--ip-range", "ip_ranges", metavar="strings", multiple=True,
        help="Allocate container ip from a sub-range")
@option("--ipam-driver", metavar="string", default="default",
        help='IP Address Management Driver (default "default")')
@option("--ipam-opt", "ipam_opts", metavar="map", multiple=True,
        help="Set IPAM driver specific options (default map[])")
# None until given: EnableIPv4/EnableIPv6 go to the daemon only when set (pflag's Changed).
@option("--ipv4", is_flag=True, default=None,
        help="Enable or disable IPv4 address assignment (default true)")
@option("--ipv6", is_flag=True, default=None, help="Enable or disable IPv6 address assignment")
@option("--label", "labels", metavar="list", multiple=True, help="Set metadata on a network")
@option("-o", "--opt", "opts", metavar="map", multiple=True,
        help="Set driver specific options (default map[])")
@option("--scope", metavar="string", default="", help="Control the network's scope")
@option("--subnet", "subnets", metavar="strings", multiple=True,
        help="Subnet in CIDR format that represents a network segment")
@pass_obj
def create(session: Session, args: tuple[str, ...], attachable: bool,
           aux_addresses: tuple[str, ...], config_from: str, config_only: bool, driver: str,
           gateways: tuple[str, ...], ingress: bool, internal: bool, ip_ranges: tuple[str, ...],
           ipam_driver: str, ipam_opts: tuple[str, ...], ipv4: bool | None, ipv6: bool | None,
           labels: tuple[str, ...], opts: tuple[str, ...], scope: str,
           subnets: tuple[str, ...]) -> int:
    body = create_options(
        driver=driver, scope=scope, ipv4=ipv4, ipv6=ipv6, internal=internal,
        attachable=attachable, ingress=ingress, config_only=config_only,
        config_from=config_from, opts=opts, labels=labels, ipam_driver=ipam_driver,
        ipam_opts=ipam_opts, subnets=subnets, ip_ranges=ip_ranges, gateways=gateways,
        aux_addresses=aux_addresses)
    resp = session.connect().network_create(args[0], body)
    sys.stdout.write(f"{resp.get('Id', '')}\n")
    return 0


def create_options(*, driver: str = "bridge", scope: str = "", ipv4: bool | None = None,
                   ipv6: bool | None = None, internal: bool = False, attachable: bool = False,
                   ingress: bool = False, config_only: bool = False, config_from: str = "",
                   opts: Sequence[str] = (), labels: Sequence[str] = (),
                   ipam_driver: str = "default", ipam_opts: Sequence[str] = (),
                   subnets: Sequence[str] = (), ip_ranges: Sequence[str] = (),
                   gateways: Sequence[str] = (), aux_addresses: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """The CreateOptions docker 28 sends for these flags, its keys in its order."""
    checked_labels = check_labels(labels)
    config = ipam_config(csv_words("--subnet", subnets), csv_words("--ip-range", ip_ranges),
                         csv_words("--gateway", gateways), kv_map(aux_addresses))
    body: dict[str, Any] = {"Driver": driver, "Scope": scope}
    if ipv4 is not None:
        body["EnableIPv4"] = ipv4
    if ipv6 is not None:
        body["EnableIPv6"] = ipv6
    body.update({
        "IPAM": {"Driver": ipam_driver, "Options": kv_map(ipam_opts), "Config": config},
        "Internal": internal,
        "Attachable": attachable,
        "Ingress": ingress,
        "ConfigOnly": config_only,
        "ConfigFrom": {"Network": config_from} if config_from else None,
        "Options": kv_map(opts),
        "Labels": kv_map(checked_labels),
    })
    return body


# --------------------------------------------------------------------------- ls


@command("ls", "[OPTIONS]", "List networks",
         aliases=("ketch network ls", "ketch network list"))
@option("-f", "--filter", "filter_words", metavar="filter", multiple=True,
        help='Provide filter values (e.g. "driver=bridge")')
@option("--format", "format_", metavar="string",
        help="Format output using a custom template: 'table', 'table TEMPLATE', 'json', "
             "or a Go template")
@option("--no-trunc", is_flag=True, help="Do not truncate the output")
@option("-q", "--quiet", is_flag=True, help="Only display network IDs")
@pass_obj
def ls(session: Session, args: tuple[str, ...], filter_words: tuple[str, ...],
       format_: str | None, no_trunc: bool, quiet: bool) -> int:
    flt = filters("-f, --filter", filter_words)
    nets = session.connect().networks(flt)
    sys.stdout.write(networks_output(nets, format_, quiet=quiet, no_trunc=no_trunc))
    return 0


# --------------------------------------------------------------------------- inspect


def _fields(doc: Any, spec: Sequence[tuple[str, Any]], omitempty: frozenset[str] = frozenset()
            ) -> dict[str, Any]:
    """``doc`` decoded into a Go struct: its fields in order, zero values for the absent,
    unknown keys dropped."""
    src = doc if isinstance(doc, dict) else {}
    out: dict[str, Any] = {}
    for key, zero in spec:
        value = src.get(key, zero)
        if value is None and zero is not None:
            value = zero
        if key in omitempty and not value:
            continue
        out[key] = value
    return out


_ENDPOINT = (("Name", ""), ("EndpointID", ""), ("MacAddress", ""), ("IPv4Address", ""),
             ("IPv6Address", ""))


def typed_network(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An inspected network as docker 28's ``network.Inspect`` holds it, which is what its
    templates see first (``{{json .}}`` in the struct's order, ``{{.EnableIPv4}}`` even
    from a daemon that does not send it); a template that fails on it runs on the raw
    JSON instead, as docker's TemplateInspector falls back."""
    ipam = _fields(doc.get("IPAM"), (("Driver", ""), ("Options", None), ("Config", None)))
    if isinstance(ipam.get("Config"), list):
        ipam["Config"] = [_fields(c, (("Subnet", ""), ("IPRange", ""), ("Gateway", ""),
                                      ("AuxiliaryAddresses", None)),
                                  frozenset(("Subnet", "IPRange", "Gateway",
                                             "AuxiliaryAddresses")))
                          for c in ipam["Config"]]
    containers = doc.get("Containers")
    out = _fields(doc, (
        ("Name", ""), ("Id", ""), ("Created", "0001-01-01T00:00:00Z"), ("Scope", ""),
        ("Driver", ""), ("EnableIPv4", False), ("EnableIPv6", False), ("IPAM", None),
        ("Internal", False), ("Attachable", False), ("Ingress", False), ("ConfigFrom", None),
        ("ConfigOnly", False), ("Containers", None), ("Options", None), ("Labels", None),
        ("Peers", None), ("Services", None)), frozenset(("Peers", "Services")))
    out["IPAM"] = ipam
    out["ConfigFrom"] = _fields(doc.get("ConfigFrom"), (("Network", ""),))
    if isinstance(containers, dict):
        out["Containers"] = {k: _fields(v, _ENDPOINT) for k, v in containers.items()}
    return out



@command("inspect", "[OPTIONS] NETWORK [NETWORK...]",
         "Display detailed information on one or more networks", nargs=(1, None))
@option("-f", "--format", "format_", metavar="string",
        help="Format output using a custom template: 'json', or a Go template")
@option("-v", "--verbose", is_flag=True, help="Verbose output for diagnostics")
@pass_obj
def inspect(session: Session, args: tuple[str, ...], format_: str | None,
            verbose: bool) -> int:
    from ketch.cli.formatting import check_inspect_format, inspect_format

    check_inspect_format(format_)
    client = session.connect()
    found: list[dict[str, Any]] = []
    out: list[str] = []
    errors: list[str] = []        # in the order of the names, as docker joins them
    for name in args:
        try:
            net = client.network_inspect(name, verbose=verbose)
        except KetchError as exc:
            errors.append(error_text(exc))
            continue
        found.append(net)
        if format_ and format_ != "json":
            text, failed = inspect_format(format_, [typed_network(net)])
            if failed:
                text, failed = inspect_format(format_, [net])
            if failed:
                errors.extend(failed)
            else:
                out.append(text)
    if not format_ or format_ == "json":
        sys.stdout.write(inspect_format(format_, found)[0])
    else:
        sys.stdout.write("".join(out) or "\n")
    if errors:
        sys.stderr.write("\n".join(errors) + "\n")
        return 1
    return 0


# --------------------------------------------------------------------------- rm


@command("rm", "NETWORK [NETWORK...]", "Remove one or more networks", nargs=(1, None),
         aliases=("ketch network rm", "ketch network remove"))
@option("-f", "--force", is_flag=True, help="Do not error if the network does not exist")
@pass_obj
def rm(session: Session, args: tuple[str, ...], force: bool) -> int:
    # docker inspects each network first to ask before removing a swarm's ingress
    # network; without swarm there is none to ask about, so ketch goes straight on.
    client = session.connect()
    failed = False
    for name in args:
        try:
            client.network_remove(name)
        except KetchError as exc:
            if force and isinstance(exc, NotFound):
                continue
            failed = True
            _stderr_line(error_text(exc))
            continue
        sys.stdout.write(f"{name}\n")
        sys.stdout.flush()
    if failed:
        # docker's StatusError carries "exit status 1", which its main prints last.
        _stderr_line("exit status 1")
        return 1
    return 0


def _stderr_line(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- prune


def prune_report_text(report: Mapping[str, Any]) -> str:
    """docker's output: the names under "Deleted Networks:" and an empty line; nothing
    when nothing went."""
    deleted = report.get("NetworksDeleted") or []
    if not deleted:
        return ""
    return "Deleted Networks:\n" + "".join(f"{n}\n" for n in deleted) + "\n"


@command("prune", "[OPTIONS]", "Remove all unused networks")
@option("--filter", "filter_words", metavar="filter", multiple=True,
        help='Provide filter values (e.g. "until=<timestamp>")')
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@pass_obj
def prune(session: Session, args: tuple[str, ...], filter_words: tuple[str, ...],
          force: bool) -> int:
    from ketch.cli.system_cmds import confirm

    flt = filters("--filter", filter_words)
    # docker asks before it connects; a "no" is not an error (exit 0, nothing more).
    if not force and not confirm(PRUNE_WARNING):
        return 0
    sys.stdout.write(prune_report_text(session.connect().networks_prune(flt)))
    return 0


# --------------------------------------------------------------------------- connect


def endpoint_settings(*, ip: str = "", ip6: str = "", links: Sequence[str] = (),
                      aliases: Sequence[str] = (), link_local_ips: Sequence[str] = (),
                      driver_opts: Sequence[str] = (), gw_priority: int = 0
                      ) -> dict[str, Any]:
    """The EndpointSettings docker 28's ``network connect`` sends, every key of the Go
    struct included (empty operational fields too), so a daemon sees docker's body."""
    opts: dict[str, str] = {}
    for word in csv_words("--driver-opt", driver_opts):
        key, sep, value = word.partition("=")
        key = key.strip()
        if not sep or not key:
            raise local(InvalidArgument("invalid key/value pair format in driver options"))
        opts[key] = value.strip()
    ipam: dict[str, Any] = {}
    if ip:
        ipam["IPv4Address"] = ip
    if ip6:
        ipam["IPv6Address"] = ip6
    lla = csv_words("--link-local-ip", link_local_ips)
    if lla:
        ipam["LinkLocalIPs"] = lla
    return {
        "IPAMConfig": ipam,
        "Links": [check_link(v) for v in links] or None,
        "Aliases": csv_words("--alias", aliases),
        "MacAddress": "",
        "DriverOpts": opts,
        "GwPriority": gw_priority,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


@command("connect", "[OPTIONS] NETWORK CONTAINER", "Connect a container to a network",
         nargs=(2, 2))
@option("--alias", "aliases", metavar="strings", multiple=True,
        help="Add network-scoped alias for the container")
@option("--driver-opt", "driver_opts", metavar="strings", multiple=True,
        help="driver options for the network")
@option("--gw-priority", metavar="int", default="0",
        help="Highest gw-priority provides the default gateway. Accepts positive and "
             "negative values.")
@option("--ip", metavar="string", default="", help='IPv4 address (e.g., "172.30.100.104")')
@option("--ip6", metavar="string", default="", help='IPv6 address (e.g., "2001:db8::33")')
@option("--link", "links", metavar="list", multiple=True, help="Add link to another container")
@option("--link-local-ip", "link_local_ips", metavar="strings", multiple=True,
        help="Add a link-local address for the container")
@pass_obj
def connect(session: Session, args: tuple[str, ...], aliases: tuple[str, ...],
            driver_opts: tuple[str, ...], gw_priority: str, ip: str, ip6: str,
            links: tuple[str, ...], link_local_ips: tuple[str, ...]) -> int:
    from ketch.cli.run_opts import parse_int

    try:
        priority = parse_int(gw_priority)
    except ValueError as exc:
        raise _bad_value("--gw-priority", gw_priority, str(exc)) from None
    endpoint = endpoint_settings(ip=ip, ip6=ip6, links=links, aliases=aliases,
                                 link_local_ips=link_local_ips, driver_opts=driver_opts,
                                 gw_priority=priority)
    session.connect().network_connect(args[0], args[1], endpoint)
    return 0


# --------------------------------------------------------------------------- disconnect


@command("disconnect", "[OPTIONS] NETWORK CONTAINER", "Disconnect a container from a network",
         nargs=(2, 2))
@option("-f", "--force", is_flag=True, help="Force the container to disconnect from a network")
@pass_obj
def disconnect(session: Session, args: tuple[str, ...], force: bool) -> int:
    session.connect().network_disconnect(args[0], args[1], force=force)
    return 0


network = Group("network", help="Manage networks", usage="COMMAND", lazy={})
for _name, _cmd in (("connect", connect), ("create", create), ("disconnect", disconnect),
                    ("inspect", inspect), ("ls", ls), ("list", ls), ("prune", prune),
                    ("rm", rm), ("remove", rm)):
    network.add_command(_cmd, _name)
network.hidden_names = {"list", "remove"}
