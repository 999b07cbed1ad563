"""``ketch compose ps/ls/images/top/events/port/logs/config/volumes``: the commands that
list and print, with their rows and formats as compose prints them."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from ketch.cli.command import command, option, pass_obj
from ketch.cli.compose_cmds import (
    _canonical,
    _color,
    _compose,
    _container_of,
    _fail,
    _int,
    _project_for_down,
    _q,
    _unsupported,
    load_project,
)
from ketch.cli.session import Session
from ketch.errors import NotFound

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any


# --- listing ----------------------------------------------------------------------------------

PS_TABLE = ("table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t"
            "{{.Status}}\t{{.Ports}}")
# compose's ContainerContext headers (fields without one print "<no value>" in a header row)
PS_HEADERS = {"ID": "CONTAINER ID", "Name": "NAME", "Project": "PROJECT", "Service": "SERVICE",
              "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS",
              "Size": "SIZE", "Labels": "LABELS"}


def ps_row(c: Mapping[str, Any], state: Mapping[str, Any] | None = None, *, trunc: bool = True,
           now: float | None = None) -> Any:
    """One ``compose ps`` row (compose's ContainerContext) from a /containers/json entry and
    the container's inspected ``State``: the fields ``--format`` templates and ``json`` see."""
    from ketch.cli import views
    from ketch.cli.formatting import Struct
    from ketch.compose import labels as L

    base = views.container_row(c, trunc=trunc, now=now)
    lab = dict(c.get("Labels") or {})
    st = state or {}
    health, exit_code = "", 0
    # as compose: a health only while running, an exit code only once exited or dead
    if st.get("Status") == "running":
        health = str((st.get("Health") or {}).get("Status") or "")
    elif st.get("Status") in ("exited", "dead"):
        exit_code = int(st.get("ExitCode") or 0)
    names = [str(n) for n in c.get("Names") or []]
    name = next((n[1:] for n in names if n.count("/") == 1), names[0][1:] if names else "")
    ports = sorted(c.get("Ports") or [], key=lambda p: p.get("PrivatePort") or 0)
    publishers = [Struct("api.PortPublisher", {
        "URL": p.get("IP") or "", "TargetPort": int(p.get("PrivatePort") or 0),
        "PublishedPort": int(p.get("PublicPort") or 0), "Protocol": p.get("Type") or ""},
        marshal=False) for p in ports]
    return Struct("*formatter.ContainerContext", {
        "ID": base["ID"], "Name": name, "Names": base["Names"],
        "Service": lab.get(L.SERVICE, ""), "Project": lab.get(L.PROJECT, ""),
        "Image": str(c.get("Image") or ""), "Command": base["Command"],
        "CreatedAt": base["CreatedAt"], "RunningFor": base["RunningFor"],
        "ExitCode": exit_code, "State": base["State"], "Status": base["Status"],
        "Health": health, "Publishers": publishers, "Ports": base["Ports"],
        "Labels": base["Labels"], "Label": base["Label"], "Mounts": base["Mounts"],
        "LocalVolumes": base["LocalVolumes"], "Networks": base["Networks"],
        "Size": base["Size"]})


def ps_output(rows: Sequence[Any], fmt: str) -> str:
    """The rows as ``--format`` asks: "" or "table" (compose's columns), "table TEMPLATE",
    "json" (one object per line), or a Go template."""
    from ketch.cli.formatting import TemplateError, go_json, render

    if fmt == "json":
        # compose's MarshalJSON: a map of the fields (keys sorted), HTML escaped; the
        # publishers are structs, their fields in declaration order
        return "".join(go_json({k: ([dict(p) for p in r[k]] if k == "Publishers" else r[k])
                                for k in sorted(r) if not callable(r[k])},
                               escape_html=True) + "\n" for r in rows)
    source = PS_TABLE if fmt in ("", "table") else fmt
    try:
        return render(source, rows, PS_HEADERS)
    except TemplateError as exc:
        raise _fail(str(exc)) from None


def _status_filter(filter_: str) -> list[str]:
    if not filter_:
        return []
    key, sep, value = filter_.partition("=")
    if not sep:
        raise _fail("arguments to --filter should be in form KEY=VAL")
    if key == "status":
        return [value]
    if key == "source":
        raise _unsupported("--filter source")
    raise _fail(f"unknown filter {key}")


@command("ps", "[OPTIONS] [SERVICE...]", "List containers", nargs=(0, None))
@option("-a", "--all", "all_", is_flag=True,
        help="Show all stopped containers (including those created by the run command)")
@option("--filter", "filter_", default="",
        help="Filter services by a property (supported filters: status)")
@option("--format", "format_", default="",
        help="Format output using a custom template: 'table' (default), 'table TEMPLATE', "
             "'json', or a Go template")
@option("--no-trunc", is_flag=True, help="Don't truncate output")
@option("--orphans", is_flag=True, default=True,
        help="Include orphaned services (not declared by project) (default true)")
@option("-q", "--quiet", is_flag=True, help="Only display IDs")
@option("--services", is_flag=True, help="Display services")
@option("--status", multiple=True, metavar="stringArray",
        help="Filter services by status. Values: [paused | restarting | removing | running | "
             "dead | created | exited]")
@pass_obj
def ps_cmd(session: Session, args: tuple[str, ...], all_: bool, filter_: str, format_: str,
           no_trunc: bool, orphans: bool, quiet: bool, services: bool,
           status: tuple[str, ...]) -> int:
    from ketch.compose.project import service_of

    statuses = list(status) + _status_filter(filter_)
    project = _project_for_down(session)
    names = list(args)
    if project.files:
        for a in args:
            if a not in project.services:
                raise _fail(f"no such service: {a}")
        if not args and not orphans:
            names = list(project.services)
    c = _compose(session, project)
    everything = all_ or bool(statuses)
    # without -a, one-off (`run`) containers are left out, as compose does
    items = c.containers(names, stopped=everything, oneoff=None if everything else False)
    if names:
        items = [i for i in items if service_of(i) in names]
    if statuses:
        items = [i for i in items if i.get("State") in statuses]
    rows = []
    for i in items:
        try:
            state = c.client.container_inspect(i["Id"]).get("State") or {}
        except NotFound:
            continue        # removed meanwhile
        rows.append(ps_row(i, state, trunc=not no_trunc))
    rows.sort(key=lambda r: r["Name"])
    if quiet:
        sys.stdout.write("".join(str(i["Id"]) + "\n" for i in
                                 sorted(items, key=lambda i: _canonical(i))))
        return 0
    if services:
        seen: list[str] = []
        for r in rows:
            if r["Service"] not in seen:
                seen.append(r["Service"])
        sys.stdout.write("\n".join(seen) + "\n")     # an empty line when none: Println("")
        return 0
    sys.stdout.write(ps_output(rows, format_))
    return 0


@command("logs", "[OPTIONS] [SERVICE...]", "View output from containers", nargs=(0, None))
@option("-f", "--follow", is_flag=True, help="Follow log output")
@option("--index", default="0", metavar="int",
        help="index of the container if service has multiple replicas")
@option("--no-color", is_flag=True, help="Produce monochrome output")
@option("--no-log-prefix", is_flag=True, help="Don't print prefix in logs")
@option("--since", default="", help='Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) '
        'or relative (e.g. 42m for 42 minutes)')
@option("-n", "--tail", default="all",
        help='Number of lines to show from the end of the logs for each container (default '
             '"all")')
@option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@option("--until", default="", help='Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z)'
        ' or relative (e.g. 42m for 42 minutes)')
@pass_obj
def logs_cmd(session: Session, args: tuple[str, ...], follow: bool, index: str,
             no_color: bool, no_log_prefix: bool, since: str, tail: str, timestamps: bool,
             until: str) -> int:
    from ketch.cli.container_cmds import go_timestamp
    from ketch.compose.logs import LogPrinter, Target, follow_all, short_name
    from ketch.compose.project import _name_of

    n = _int(index, "--index")
    if n > 0 and len(args) != 1:
        raise _fail("--index requires one service to be selected")
    project = _project_for_down(session)
    if project.files:
        for a in args:
            project.service(a)
    c = _compose(session, project)
    if n > 0:
        items = [_container_of(c, args[0], n, oneoff=False, stopped=True)]
    else:
        names = list(args)
        if project.files and not names:
            # as compose: a service with `attach: false` is left out unless named
            names = [n for n, svc in project.services.items()
                     if svc.spec.get("attach", True) is not False]
        items = c.containers(names, oneoff=False) if names or not project.files else []
    client = c.client
    printer = LogPrinter(sys.stdout, color=_color(session, no_color), prefix=not no_log_prefix)
    targets = []
    for i in items:
        info = client.container_inspect(i["Id"])
        targets.append(Target(short_name(_name_of(i), project.name), i["Id"],
                              bool((info.get("Config") or {}).get("Tty"))))
    threads = follow_all(printer, client, targets, follow=follow, tail=tail,
                         since=go_timestamp(since) if since else "",
                         until=go_timestamp(until) if until else "", timestamps=timestamps)
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        return 130
    return 0


def top_output(containers: Sequence[tuple[str, str, Mapping[str, Any]]]) -> str:
    """compose's ``top``: one table for all containers (given as (service, replica number,
    /top answer), sorted by container name), SERVICE and # first, the titles in the order
    first seen and CMD last, "-" where a container lacks a column."""
    from ketch.cli.formatting import tabwrite

    header = ["SERVICE", "#"]
    entries: list[dict[str, str]] = []
    for service, replica, top in containers:
        titles = [str(t) for t in top.get("Titles") or []]
        for proc in top.get("Processes") or []:
            entry = {"SERVICE": service, "#": replica}
            for k, title in enumerate(titles):
                if title not in header:
                    header.append(title)
                entry[title] = str(proc[k]) if k < len(proc) else ""
            entries.append(entry)
    if not entries:
        return ""
    if "CMD" in header:
        header.remove("CMD")
        header.append("CMD")
    lines = ["\t".join(header)] + ["\t".join(e.get(h, "-") for h in header) for e in entries]
    return tabwrite("\n".join(lines) + "\n", minwidth=4, padding=2)


@command("top", "[SERVICES...]", "Display the running processes", nargs=(0, None))
@pass_obj
def top_cmd(session: Session, args: tuple[str, ...]) -> int:
    from ketch.compose import labels as L

    project = _project_for_down(session)
    c = _compose(session, project)
    items = sorted(c.containers(args, stopped=False, oneoff=None), key=_canonical)
    tops = []
    for i in items:
        lab = i.get("Labels") or {}
        tops.append((lab.get(L.SERVICE, ""), lab.get(L.NUMBER, ""),
                     c.client.container_top(i["Id"])))
    sys.stdout.write(top_output(tops))
    return 0


@command("port", "[OPTIONS] SERVICE PRIVATE_PORT", "Print the public port for a port binding",
         nargs=(2, None))
@option("--index", default="0", metavar="int",
        help="Index of the container if service has multiple replicas")
@option("--protocol", default="tcp", help='tcp or udp (default "tcp")')
@pass_obj
def port_cmd(session: Session, args: tuple[str, ...], index: str, protocol: str) -> int:
    try:
        port = int(args[1], 10)
        if not 0 <= port < 1 << 16 or not args[1].isdigit():
            raise ValueError
    except ValueError:
        what = "value out of range" if args[1].isdigit() else "invalid syntax"
        raise _fail(f"strconv.ParseUint: parsing {_q(args[1])}: {what}") from None
    protocol = protocol.lower()
    project = _project_for_down(session)
    c = _compose(session, project)
    target = _container_of(c, args[0], _int(index, "--index"), oneoff=None)
    for p in target.get("Ports") or []:
        if int(p.get("PrivatePort") or 0) == port and p.get("Type") == protocol:
            sys.stdout.write(f"{p.get('IP') or ''}:{int(p.get('PublicPort') or 0)}\n")
            return 0
    known = ", ".join(f"{int(p.get('PublicPort') or 0)}/{p.get('Type')}"
                      for p in target.get("Ports") or [])
    raise _fail(f"no port {port}/{protocol} for container {_canonical(target)}: {known}")


def image_ref_parts(ref: str) -> tuple[str, str]:
    """(repository, tag) of a container's image reference as compose's images shows them:
    the familiar name and the tag (``latest`` when none); ("", "") for an image ID."""
    import re

    if not ref or re.fullmatch(r"(sha256:)?[0-9a-f]{64}", ref):
        return "", ""
    name, _, digest = ref.partition("@")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/",
                   "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if not tag and not digest:
        tag = "latest"
    return name, tag


def images_rows(entries: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """(container name, image reference, image inspect) -> compose's image summaries,
    sorted by container name."""
    out = []
    for name, ref, img in sorted(entries, key=lambda e: e[0]):
        repo, tag = image_ref_parts(ref)
        platform = "/".join(x for x in (img.get("Os"), img.get("Architecture"),
                                        img.get("Variant")) if x)
        tagged = str((img.get("Metadata") or {}).get("LastTagTime") or "")
        if not tagged or tagged.startswith("0001-01-01"):
            tagged = str(img.get("Created") or "")
        out.append({"ID": str(img.get("Id") or ""), "ContainerName": name,
                    "Repository": repo, "Tag": tag, "Platform": platform,
                    "Size": int(img.get("Size") or 0), "LastTagTime": tagged})
    return out


def images_output(rows: Sequence[Mapping[str, Any]], fmt: str, *, quiet: bool = False,
                  now: float | None = None) -> str:
    import time

    from ketch.cli.formatting import docker_size, go_json, truncate_id
    from ketch.cli.views import _parse_rfc3339
    from ketch.units import human_duration

    if quiet:
        ids: list[str] = []
        for r in rows:
            i = str(r["ID"]).split(":", 1)[-1]
            if i not in ids:
                ids.append(i)
        return "".join(i + "\n" for i in ids)
    if fmt == "json":
        # a nil slice when there is none, as compose's encoder writes it
        return (go_json([dict(r) for r in rows]) if rows else "null") + "\n\n"
    table = []
    for r in rows:
        created = "N/A"
        if r["LastTagTime"]:
            try:
                ts, _ = _parse_rfc3339(str(r["LastTagTime"]))
                created = human_duration((time.time() if now is None else now) - ts) + " ago"
            except ValueError:
                pass
        table.append({"c": r["ContainerName"], "r": r["Repository"] or "<none>",
                      "t": r["Tag"] or "<none>", "p": r["Platform"],
                      "i": truncate_id(str(r["ID"])), "s": docker_size(int(r["Size"])),
                      "a": created})
    return print_view(table, fmt, ("CONTAINER", "REPOSITORY", "TAG", "PLATFORM", "IMAGE ID",
                                   "SIZE", "CREATED"))


@command("images", "[OPTIONS] [SERVICE...]", "List images used by the created containers",
         nargs=(0, None))
@option("--format", "format_", default="table",
        help='Format the output. Values: [table | json] (default "table")')
@option("-q", "--quiet", is_flag=True, help="Only display IDs")
@pass_obj
def images_cmd(session: Session, args: tuple[str, ...], format_: str, quiet: bool) -> int:
    project = _project_for_down(session)
    c = _compose(session, project)
    entries = []
    for i in c.containers(args, oneoff=None):
        try:
            img = c.client.image_inspect(str(i.get("Image") or i.get("ImageID")))
        except NotFound:
            img = c.client.image_inspect(str(i.get("ImageID")))
        entries.append((_canonical(i), str(i.get("Image") or ""), img))
    sys.stdout.write(images_output(images_rows(entries), format_, quiet=quiet))
    return 0


# --- the model --------------------------------------------------------------------------------


@command("config", "[OPTIONS] [SERVICE...]", "Parse, resolve and render compose file in "
         "canonical format", nargs=(0, None), aliases=("ketch compose config",
                                                       "ketch compose convert"))
@option("--environment", is_flag=True, help="Print environment used for interpolation.")
@option("--format", "format_", default="", help="Format the output. Values: [yaml | json]")
@option("--hash", "hash_", default="", help="Print the service config hash, one per line.")
@option("--images", is_flag=True, help="Print the image names, one per line.")
@option("--lock-image-digests", is_flag=True,
        help="Produces an override file with image digests")
@option("--models", is_flag=True, help="Print the model names, one per line.")
@option("--networks", is_flag=True, help="Print the network names, one per line.")
@option("--no-consistency", is_flag=True, help="Don't check model consistency - warning: may "
        "produce invalid Compose output")
@option("--no-env-resolution", is_flag=True, help="Don't resolve service env files")
@option("--no-interpolate", is_flag=True, help="Don't interpolate environment variables")
@option("--no-normalize", is_flag=True, help="Don't normalize compose model")
@option("--no-path-resolution", is_flag=True, help="Don't resolve file paths")
@option("-o", "--output", default="", help="Save to file (default to stdout)")
@option("--profiles", is_flag=True, help="Print the profile names, one per line.")
@option("-q", "--quiet", is_flag=True, help="Only validate the configuration, don't print "
        "anything")
@option("--resolve-image-digests", is_flag=True, help="Pin image tags to digests")
@option("--services", is_flag=True, help="Print the service names, one per line.")
@option("--variables", is_flag=True, help="Print model variables and default values.")
@option("--volumes", is_flag=True, help="Print the volume names, one per line.")
@pass_obj
def config_cmd(session: Session, args: tuple[str, ...], **f: Any) -> int:
    text = config_text(session, args, f)
    if f["quiet"]:
        return 0
    if f["output"] and text:
        with open(f["output"], "w") as fh:
            fh.write(text)
        return 0
    sys.stdout.write(text)
    return 0


def config_text(session: Session, args: Sequence[str], f: Mapping[str, Any]) -> str:
    """What ``config`` prints, chosen by its flags in compose's order of precedence."""
    from ketch.compose.normalize import dump

    for flag in ("no_normalize", "no_path_resolution", "no_consistency", "no_env_resolution",
                 "resolve_image_digests", "lock_image_digests", "variables", "models"):
        if f.get(flag):
            raise _unsupported("config --" + flag.replace("_", "-"))
    fmt = f.get("format_") or ""
    if f.get("services"):
        project = load_project(session, interpolate=not f.get("no_interpolate"))
        return "".join(n + "\n" for n in dependency_order(project.model))
    if f.get("volumes"):
        project = load_project(session)
        return "".join(n + "\n" for n in sorted(project.model.get("volumes") or {}))
    if f.get("networks"):
        project = load_project(session)
        return "".join(n + "\n" for n in sorted(project.model.get("networks") or {}))
    if f.get("hash_"):
        project = load_project(session)
        wanted = sorted(project.services) if f["hash_"] == "*" else f["hash_"].split(",")
        for n in wanted:
            project.service(n)
        return "".join(f"{n} {project.service(n).config_hash()}\n" for n in sorted(wanted))
    if f.get("profiles"):
        project = load_project(session, args)
        names = sorted({p for s in (project.services | project.disabled).values()
                        for p in s.spec.get("profiles") or []})
        return "".join(n + "\n" for n in names)
    if f.get("images"):
        project = load_project(session, args)
        return "".join(project.services[n].image + "\n" for n in sorted(project.services))
    if f.get("environment"):
        project = load_project(session, args)
        return "".join(f"{k}={v}\n" for k, v in sorted(project.environment.items()))
    fmt = fmt or "yaml"
    if fmt not in ("yaml", "json"):
        raise _fail(f"unsupported format {_q(fmt)}")
    interpolate = not f.get("no_interpolate")
    if args and not interpolate:
        sys.stderr.write("WARN[0000] service filtering is not applied when --no-interpolate "
                         "is set, the full model will be rendered\n")
        args = ()
    project = load_project(session, args, interpolate=interpolate)
    model = project.model
    if args:
        model = dict(model)
        model["services"] = {k: v for k, v in (model.get("services") or {}).items()
                             if k in _with_dependencies(model, args)}
    # an interpolated model has its literal dollars doubled, as compose prints it
    return dump(model, fmt, escape_dollars=interpolate)


def dependency_order(model: Mapping[str, Any]) -> list[str]:
    """The services as compose's ForEachService visits them: each after what it depends
    on (compose takes the rest in map order; here by name, to be the same each time)."""
    services = model.get("services") or {}
    out: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen or n not in services:
            return
        seen.add(n)
        for dep in sorted((services[n] or {}).get("depends_on") or {}):
            visit(dep)
        out.append(n)

    for n in sorted(services):
        visit(n)
    return out


def _with_dependencies(model: Mapping[str, Any], names: Sequence[str]) -> set[str]:
    """The named services and, transitively, those they depend on (compose's selection)."""
    services = model.get("services") or {}
    keep: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in keep or n not in services:
            continue
        keep.add(n)
        todo.extend((services[n] or {}).get("depends_on") or {})
    return keep


def ls_stacks(containers: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """compose's project list from its containers: by name, the states counted
    ("exited(1), running(2)"), the config files in the order first seen."""
    from ketch.compose import labels as L

    by_project: dict[str, list[Mapping[str, Any]]] = {}
    for c in containers:
        by_project.setdefault((c.get("Labels") or {}).get(L.PROJECT, ""), []).append(c)
    out = []
    for name in sorted(by_project):
        states: dict[str, int] = {}
        files: list[str] = []
        missing = False
        for c in by_project[name]:
            st = str(c.get("State") or "")
            states[st] = states.get(st, 0) + 1
            lab = c.get("Labels") or {}
            if L.CONFIG_FILES not in lab:
                missing = True
                continue
            for f in str(lab[L.CONFIG_FILES]).split(","):
                if f not in files:
                    files.append(f)
        status = ", ".join(f"{s}({n})" for s, n in sorted(states.items()))
        out.append({"Name": name, "Status": status,
                    "ConfigFiles": "N/A" if missing else ",".join(files)})
    return out


def _go_regex_match(pattern: str, text: str) -> bool:
    import re

    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def print_view(rows: Sequence[Mapping[str, Any]], fmt: str, headers: Sequence[str]) -> str:
    """compose's formatter.Print: a table (columns at least 20 wide, 3 apart) or JSON."""
    from ketch.cli.formatting import go_json, tabwrite

    low = fmt.lower()
    if low in ("table", "pretty", ""):
        lines = ["\t".join(headers)] + ["\t".join(str(v) for v in r.values()) for r in rows]
        return tabwrite("\n".join(lines) + "\n", minwidth=20, padding=3)
    if low == "json":
        return go_json([dict(r) for r in rows]) + "\n"
    if low == "{{json .}}":
        return "".join(go_json(dict(r)) + "\n" for r in rows)
    raise _fail(f"format value {_q(fmt)} could not be parsed: parsing failed")


@command("ls", "[OPTIONS]", "List running compose projects")
@option("-a", "--all", "all_", is_flag=True, help="Show all stopped Compose projects")
@option("--filter", "filters", multiple=True, metavar="filter",
        help="Filter output based on conditions provided")
@option("--format", "format_", default="table",
        help='Format the output. Values: [table | json] (default "table")')
@option("-q", "--quiet", is_flag=True, help="Only display project names")
@pass_obj
def ls_cmd(session: Session, args: tuple[str, ...], all_: bool, filters: tuple[str, ...],
           format_: str, quiet: bool) -> int:
    from ketch.compose import labels as L

    names: list[str] = []
    for flt in filters:
        key, sep, value = flt.partition("=")
        if not sep:
            raise _fail(f"bad format of filter (expected name=value): {flt}")
        if key.strip().lower() != "name":
            raise _fail(f"invalid filter '{key.strip().lower()}'")
        names.append(value.strip())
    client = session.connect()
    containers = client.containers(all=all_, filters={"label": [L.PROJECT, L.CONFIG_HASH]})
    rows = ls_stacks(containers)
    if names:
        rows = [r for r in rows if r["Name"] in names or
                any(_go_regex_match(n, r["Name"]) for n in names)]
    if quiet:
        sys.stdout.write("".join(r["Name"] + "\n" for r in rows))
        return 0
    sys.stdout.write(print_view(rows, format_, ("NAME", "STATUS", "CONFIG FILES")))
    return 0


def event_text(ev: Mapping[str, Any], *, as_json: bool) -> str | None:
    """One engine event as ``compose events`` prints it, or None for what compose skips
    (other types, one-off containers). The text form ends in a blank line, as compose's
    (its Event.String ends in a newline that Println follows with another)."""
    from datetime import datetime

    from ketch.cli.formatting import go_json
    from ketch.compose import labels as L

    if (ev.get("Type") or "container") != "container":
        return None
    actor = ev.get("Actor") or {}
    attrs_all = dict(actor.get("Attributes") or {})
    if attrs_all.get(L.ONEOFF) == "True":
        return None
    attrs = {k: v for k, v in attrs_all.items() if not k.startswith(L.PREFIX)}
    ns = int(ev.get("timeNano") or 0) or int(ev.get("time") or 0) * 10**9
    when = datetime.fromtimestamp(ns // 10**9).astimezone()
    frac = ns % 10**9
    cid = actor.get("ID") or ev.get("id") or ""
    action = ev.get("Action") or ev.get("status") or ""
    if as_json:
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
        if frac:
            stamp += ("." + f"{frac:09d}").rstrip("0")
        off = when.utcoffset()
        secs = int(off.total_seconds()) if off is not None else 0
        if secs == 0:
            stamp += "Z"
        else:
            sign = "+" if secs > 0 else "-"
            secs = abs(secs)
            stamp += f"{sign}{secs // 3600:02d}:{secs % 3600 // 60:02d}"
        return go_json({"action": action, "attributes": attrs, "id": cid,
                        "service": attrs_all.get(L.SERVICE, ""), "time": stamp,
                        "type": "container"}, escape_html=True, sort_keys=True) + "\n"
    pairs = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.") + f"{frac // 1000:06d}"
    return f"{stamp} container {action} {cid} ({pairs})\n\n"


@command("events", "[OPTIONS] [SERVICE...]", "Receive real time events from containers",
         nargs=(0, None))
@option("--json", "json_", is_flag=True, help="Output events as a stream of json objects")
@option("--since", default="", help="Show all events created since timestamp")
@option("--until", default="", help="Stream events until this timestamp")
@pass_obj
def events_cmd(session: Session, args: tuple[str, ...], json_: bool, since: str,
               until: str) -> int:
    from ketch.cli.container_cmds import go_timestamp
    from ketch.compose import labels as L

    project = _project_for_down(session)
    flt: dict[str, list[str]] = {"label": [f"{L.PROJECT}={project.name}"]}
    client = session.connect()
    wanted = set(args)
    try:
        for ev in client.events(since=go_timestamp(since) if since else "",
                                until=go_timestamp(until) if until else "", filters=flt):
            service = ((ev.get("Actor") or {}).get("Attributes") or {}).get(L.SERVICE, "")
            if wanted and service not in wanted:
                continue
            text = event_text(ev, as_json=json_)
            if text is not None:
                sys.stdout.write(text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    return 0


@command("volumes", "[OPTIONS] [SERVICE...]", "List volumes", nargs=(0, None))
@option("--format", "format_", default="table",
        help="Format output using a custom template: 'table' (default), 'table TEMPLATE', "
             "'json', or a Go template")
@option("-q", "--quiet", is_flag=True, help="Only display volume names")
@pass_obj
def volumes_cmd(session: Session, args: tuple[str, ...], format_: str, quiet: bool) -> int:
    """The project's volumes (those its labels name), or those the named services'
    running containers mount."""
    from ketch.cli.formatting import TemplateError
    from ketch.cli.views import volumes_output
    from ketch.compose import labels as L
    from ketch.compose.project import service_of

    project = _project_for_down(session)
    if project.files:
        for a in args:
            if a not in project.services:
                raise _fail(f"no such service: {a}")
    client = session.connect()
    flt = {"label": [f"{L.PROJECT}={project.name}"]}
    volumes = list(client.volumes(filters=flt))
    if args:
        used = {str(m.get("Name") or "") for c in client.containers(filters=flt)
                if service_of(c) in args for m in c.get("Mounts") or []}
        volumes = [v for v in volumes if v.get("Name") in used]
    if quiet:
        sys.stdout.write("".join(f"{v.get('Name')}\n" for v in volumes))
        return 0
    try:
        sys.stdout.write(volumes_output(volumes, format_))
    except TemplateError as exc:
        raise _fail(str(exc)) from None
    return 0
