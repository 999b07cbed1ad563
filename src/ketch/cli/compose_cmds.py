"""``ketch compose ...``: Docker Compose v2's commands, flags, output and exit codes.

The compose file is read by ``ketch.compose`` (loader, normalize); the work is
done by ``ketch.compose.project`` through the Engine API, so these commands run
against ketchd and dockerd alike. This module parses flags, builds the project,
and prints: tables as ``docker compose ps`` does, progress lines on stderr,
container output with ``service-N |`` prefixes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from datetime import UTC

from ketch.cli.command import Group, UsageFailure, command, option, pass_obj
from ketch.cli.flags import LIST, VALUE, Option
from ketch.cli.session import Session, local
from ketch.errors import InvalidArgument, KetchError, NotFound

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

    from ketch.compose.model import Project, Service
    from ketch.compose.project import Compose


GLOBAL_OPTIONS = (
    Option("file", "file", "f", LIST, (), "stringArray", "Compose configuration files"),
    Option("project_name", "project-name", "p", VALUE, "", "string", "Project name"),
    Option("project_directory", "project-directory", "", VALUE, "", "string",
           "Specify an alternate working directory (default: the path of the, first "
           "specified, Compose file)"),
    Option("profile", "profile", "", LIST, (), "stringArray",
           "Specify a profile to enable"),
    Option("env_file", "env-file", "", LIST, (), "stringArray",
           "Specify an alternate environment file"),
    Option("ansi", "ansi", "", VALUE, "auto", "string",
           'Control when to print ANSI control characters ("never"|"always"|"auto")'),
    Option("progress", "progress", "", VALUE, "auto", "string",
           'Set type of progress output (auto, tty, plain, json, quiet)'),
    Option("parallel", "parallel", "", VALUE, "-1", "int",
           "Control max parallelism, -1 for unlimited"),
    Option("dry_run", "dry-run", "", "bool", False, "", "Execute command in dry run mode"),
)


class ComposeGroup(Group):
    """A group whose own flags (``-f``, ``-p``, ...) are kept for its commands."""

    def invoke(self, path: str, words: Sequence[str], session: Any) -> Any:
        from ketch.cli.command import _parse

        parsed = _parse(self.flags, words, lambda: self.help_text(path))
        if parsed is None:
            return 0
        session.compose = parsed.values
        if parsed.values.get("dry_run"):
            raise local(InvalidArgument("--dry-run is not supported by ketch compose"))
        if parsed.values["ansi"] not in ("never", "always", "auto"):
            raise local(InvalidArgument(f"unsupported --ansi value {parsed.values['ansi']!r}"))
        return self.dispatch(path, parsed.args, session)


COMMANDS = ("build", "config", "cp", "create", "down", "events", "exec", "images", "kill",
            "logs", "ls", "pause", "port", "ps", "pull", "push", "restart", "rm", "run",
            "start", "stop", "top", "unpause", "up", "version", "wait", "watch")

compose = ComposeGroup("compose", help="Define and run multi-container applications",
                       usage="[OPTIONS] COMMAND", options=GLOBAL_OPTIONS,
                       lazy={c: f"ketch.cli.compose_cmds:{c}_cmd" for c in COMMANDS})


# --- building the project ---------------------------------------------------------------------


def _opts(session: Session) -> dict[str, Any]:
    return getattr(session, "compose", None) or {o.dest: o.default for o in GLOBAL_OPTIONS}


def _color(session: Session, no_color: bool = False) -> bool:
    ansi = _opts(session)["ansi"]
    if no_color or ansi == "never" or os.environ.get("NO_COLOR"):
        return False
    return ansi == "always" or sys.stdout.isatty()


def load_project(session: Session, services: Sequence[str] = (), *,
                 interpolate: bool = True, profiles_all: bool = False) -> Project:
    from ketch.compose.loader import LoadOptions, load
    from ketch.compose.model import Project
    from ketch.compose.normalize import apply_profiles, normalize

    g = _opts(session)
    raw = load(LoadOptions(files=list(g["file"]), project_directory=g["project_directory"]
                           or None, project_name=g["project_name"] or None,
                           env_files=list(g["env_file"]), environ=os.environ,
                           interpolate=interpolate))
    for w in getattr(raw, "warnings", ()) or ():
        sys.stderr.write(f"WARN[0000] {w}\n")
    model = normalize(raw)
    profiles = list(g["profile"])
    if not profiles:
        env = getattr(raw, "environment", {}) or {}
        profiles = [p for p in env.get("COMPOSE_PROFILES", "").split(",") if p]
    if profiles_all:
        profiles = ["*"]
    active = apply_profiles(model, profiles, list(services))
    env_files = list(g["env_file"])
    if not env_files:
        dot = os.path.join(raw.working_dir, ".env")
        env_files = [dot] if os.path.isfile(dot) else []
    return Project.of(raw.name, raw.working_dir, list(raw.files), active,
                      [os.path.abspath(f) for f in env_files],
                      all_services=model.get("services") or {},
                      environment=getattr(raw, "environment", None) or dict(os.environ))


def _progress(session: Session) -> Any:
    from ketch.compose.progress import Progress

    mode = _opts(session)["progress"]
    if mode not in ("auto", "tty", "plain", "json", "quiet"):
        raise local(InvalidArgument(f"unsupported --progress value {mode!r}"))
    return Progress(quiet=mode == "quiet",
                    tty=None if mode == "auto" else mode == "tty")


def _compose(session: Session, project: Project, *, no_cache: bool = False,
             pull: bool = False, build_quiet: bool = False) -> Compose:
    from ketch.compose.project import Compose

    client = session.connect()

    def builder(svc: Service, image: str) -> None:
        _build(session, svc, image, no_cache=no_cache, pull=pull, quiet=build_quiet)

    def puller(image: str, quiet: bool) -> None:
        _pull(session, image, quiet=quiet)

    return Compose(client, project, _progress(session), builder=builder, puller=puller)


def _build(session: Session, svc: Service, image: str, *, no_cache: bool = False,
           pull: bool = False, quiet: bool = False) -> None:
    """A service's ``build:`` through ``ketch build`` (the same context handling)."""
    from ketch.cli import build_cmds

    spec = svc.build or {}
    # The flags as `ketch build` would see them unset (a list flag given no value is empty).
    flags: dict[str, Any] = {o.dest: () if o.kind == LIST and o.default is None else o.default
                             for o in build_cmds.build.options}
    context = str(spec.get("context") or ".")
    dockerfile = spec.get("dockerfile") or None
    if dockerfile and not os.path.isabs(dockerfile):
        dockerfile = os.path.join(context, dockerfile)
    args = []
    for k, v in (spec.get("args") or {}).items():
        args.append(k if v is None else f"{k}={v}")
    secrets = []
    top = svc.spec.get("__secrets__") or {}
    for s in spec.get("secrets") or []:
        source = s.get("source") if isinstance(s, dict) else s
        target = (s.get("target") if isinstance(s, dict) else None) or source
        defn = top.get(source) or {}
        if defn.get("file"):
            secrets.append(f"id={target},src={defn['file']}")
        elif defn.get("environment"):
            secrets.append(f"id={target},env={defn['environment']}")
    flags.update(
        file=dockerfile, tag=(image, *(spec.get("tags") or ())), build_arg=tuple(args),
        target=spec.get("target") or "", label=tuple(f"{k}={v}" for k, v in
                                                    (spec.get("labels") or {}).items()),
        cache_from=tuple(spec.get("cache_from") or ()), no_cache=no_cache or
        bool(spec.get("no_cache")), pull=pull or bool(spec.get("pull")),
        network=spec.get("network") or "default", secret=tuple(secrets),
        add_hosts=tuple(spec.get("extra_hosts") or ()), quiet=quiet,
        progress="quiet" if quiet else "auto")
    if spec.get("shm_size"):
        flags["shm_size"] = str(spec["shm_size"])
    sys.stderr.write(f" Service {svc.name}  Building\n")
    if build_cmds.run_build(session, context, flags) != 0:
        from ketch.compose.errors import ComposeError

        raise ComposeError(f"failed to build service {svc.name!r}")
    sys.stderr.write(f" Service {svc.name}  Built\n")


def _pull(session: Session, image: str, *, quiet: bool = False) -> None:
    from ketch.cli.registry_client_cmds import _reference, pull_image

    ref, _ = _reference(image)
    pull_image(session, ref, quiet=quiet, out=sys.stderr)


# --- up / down --------------------------------------------------------------------------------


def _int(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageFailure(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseInt: '
                           f'parsing "{value}": invalid syntax') from None


def _timeout(value: str | None) -> int | None:
    return None if value in (None, "") else _int(str(value), "-t, --timeout")


def _scales(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        name, sep, n = v.partition("=")
        if not sep:
            raise local(InvalidArgument(f"invalid --scale option {v!r}: expected SERVICE=NUM"))
        out[name] = _int(n, "--scale")
    return out


@command("up", "[OPTIONS] [SERVICE...]", "Create and start containers", nargs=(0, None))
@option("--abort-on-container-exit", is_flag=True,
        help="Stops all containers if any container was stopped. Incompatible with -d")
@option("--always-recreate-deps", is_flag=True, help="Recreate dependent containers.")
@option("--attach", multiple=True, metavar="stringArray",
        help="Restrict attaching to the specified services.")
@option("--build", is_flag=True, help="Build images before starting containers")
@option("-d", "--detach", is_flag=True, help="Detached mode: Run containers in the background")
@option("--exit-code-from", default="",
        help="Return the exit code of the selected service container. Implies "
             "--abort-on-container-exit")
@option("--force-recreate", is_flag=True,
        help="Recreate containers even if their configuration and image haven't changed")
@option("--no-attach", multiple=True, metavar="stringArray",
        help="Do not attach (stream logs) to the specified services")
@option("--no-build", is_flag=True, help="Don't build an image, even if it's policy")
@option("--no-color", is_flag=True, help="Produce monochrome output")
@option("--no-deps", is_flag=True, help="Don't start linked services")
@option("--no-log-prefix", is_flag=True, help="Don't print prefix in logs")
@option("--no-recreate", is_flag=True,
        help="If containers already exist, don't recreate them. Incompatible with "
             "--force-recreate.")
@option("--no-start", is_flag=True, help="Don't start the services after creating them")
@option("--pull", default="", help='Pull image before running ("always"|"missing"|"never")')
@option("--quiet-pull", is_flag=True, help="Pull without printing progress information")
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("--scale", multiple=True, metavar="scale",
        help="Scale SERVICE to NUM instances. Overrides the scale setting in the Compose "
             "file if present.")
@option("-t", "--timeout", default="", metavar="int",
        help="Use this timeout in seconds for container shutdown when attached or when "
             "containers are already running")
@option("--timestamps", is_flag=True, help="Show timestamps")
@option("--wait", is_flag=True, help="Wait for services to be running|healthy. Implies "
        "detached mode.")
@option("--wait-timeout", default="", metavar="int",
        help="Maximum duration in seconds to wait for the project to be running|healthy")
@pass_obj
def up_cmd(session: Session, args: tuple[str, ...], **f: Any) -> int:
    from ketch.compose.project import UpOptions

    if f["exit_code_from"]:
        f["abort_on_container_exit"] = True
    detach = f["detach"] or f["wait"]
    if detach and f["abort_on_container_exit"]:
        raise local(InvalidArgument("--abort-on-container-exit and --detach are incompatible"))
    if f["force_recreate"] and f["no_recreate"]:
        raise local(InvalidArgument("--force-recreate and --no-recreate are incompatible"))
    if f["build"] and f["no_build"]:
        raise local(InvalidArgument("--build and --no-build are incompatible"))
    if f["pull"] not in ("", "always", "missing", "never", "build"):
        raise local(InvalidArgument(f"invalid --pull option {f['pull']!r}"))
    timeout = _timeout(f["timeout"])
    scales = _scales(f["scale"])
    project = load_project(session, args)
    if f["exit_code_from"] and f["exit_code_from"] not in project.services:
        raise local(InvalidArgument(f"exit code from {f['exit_code_from']!r}: no such "
                                    "service"))
    c = _compose(session, project)
    opts = UpOptions(services=list(args),
                     build="always" if f["build"] else "never" if f["no_build"] else "auto",
                     recreate="force" if f["force_recreate"] else
                     "never" if f["no_recreate"] else "diverged",
                     deps=not f["no_deps"], scale=scales, start=not f["no_start"],
                     remove_orphans=f["remove_orphans"], timeout=timeout, pull=f["pull"],
                     quiet_pull=f["quiet_pull"])
    if detach or f["no_start"]:
        services = c.up(opts)
        if f["wait"]:
            wt = float(_int(f["wait_timeout"], "--wait-timeout")) if f["wait_timeout"] \
                else None
            c.wait_ready(services, wt)
        return 0
    return _up_attached(session, c, opts, f, timeout)


def _up_attached(session: Session, c: Compose, opts: Any, f: dict[str, Any],
                 timeout: int | None) -> int:
    """``up`` in the foreground: every container's output until all have stopped (or
    the first one with --abort-on-container-exit); Ctrl-C stops the project."""
    import time

    from ketch.compose.logs import LogPrinter, Target, follow_all, short_name
    from ketch.compose.project import _name_of, service_of

    printer = LogPrinter(sys.stdout, color=_color(session, f["no_color"]),
                         prefix=not f["no_log_prefix"])
    # Containers that existed before keep their old output; only what they print from
    # now on is shown, as compose (which attaches before starting) shows it.
    started = time.time()
    services = c.up(opts)
    names = {s.name for s in services}
    attach = set(f["attach"]) or names
    attach -= set(f["no_attach"])
    client = c.client
    targets = []
    for ctr in c.containers(names):
        if service_of(ctr) not in attach:
            continue
        info = client.container_inspect(ctr["Id"])
        targets.append(Target(short_name(_name_of(ctr), c.project.name), ctr["Id"],
                              bool((info.get("Config") or {}).get("Tty"))))
    if not targets:
        return 0
    sys.stdout.write("Attaching to " + ", ".join(t.name for t in targets) + "\n")
    sys.stdout.flush()
    ended: list[tuple[Target, int]] = []
    cond = threading.Condition()

    def on_end(t: Target) -> None:
        try:
            state = client.container_inspect(t.cid).get("State") or {}
            code = int(state.get("ExitCode") or 0)
        except KetchError:
            code = 0
        printer.status(t.name, f"exited with code {code}")
        with cond:
            ended.append((t, code))
            cond.notify_all()

    follow_all(printer, client, targets, follow=True, timestamps=f["timestamps"],
               since=f"{started:.9f}", on_end=on_end)
    abort = f["abort_on_container_exit"]
    exit_from = f["exit_code_from"]
    code = 0
    try:
        with cond:
            while len(ended) < len(targets):
                if abort and ended:
                    break
                cond.wait(0.5)
            first = ended[0] if ended else None
    except KeyboardInterrupt:
        sys.stderr.write("Gracefully stopping... (press Ctrl+C again to force)\n")
        c.stop(timeout=timeout)
        return 130
    if abort and first is not None:
        sys.stderr.write("Aborting on container exit...\n")
        c.stop(timeout=timeout)
        code = first[1]
    if exit_from:
        for ctr in c.containers([exit_from]):
            state = client.container_inspect(ctr["Id"]).get("State") or {}
            code = int(state.get("ExitCode") or 0)
    return code


@command("down", "[OPTIONS] [SERVICES]", "Stop and remove containers, networks",
         nargs=(0, None))
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("--rmi", default="",
        help='Remove images used by services. "local" remove only images that don\'t have a '
             'custom tag ("local"|"all")')
@option("-t", "--timeout", default="", metavar="int",
        help="Specify a shutdown timeout in seconds")
@option("-v", "--volumes", is_flag=True,
        help="Remove named volumes declared in the \"volumes\" section of the Compose file "
             "and anonymous volumes attached to containers")
@pass_obj
def down_cmd(session: Session, args: tuple[str, ...], remove_orphans: bool, rmi: str,
             timeout: str, volumes: bool) -> int:
    from ketch.compose.project import DownOptions

    if rmi not in ("", "local", "all"):
        raise local(InvalidArgument(f"invalid --rmi option {rmi!r}"))
    project = _project_for_down(session)
    c = _compose(session, project)
    c.down(DownOptions(volumes=volumes, rmi=rmi, remove_orphans=remove_orphans,
                       timeout=_timeout(timeout)))
    return 0


def _project_for_down(session: Session) -> Project:
    """``down`` and ``ps`` work without a compose file too (``-p name``), as compose does:
    from the labels of what exists."""
    from ketch.compose.errors import ComposeError
    from ketch.compose.model import Project

    g = _opts(session)
    try:
        return load_project(session, profiles_all=True)
    except ComposeError as exc:
        if not g["project_name"] or g["file"] or "no configuration file" not in str(exc):
            raise
    return Project.of(g["project_name"], os.getcwd(), [], {"name": g["project_name"],
                                                             "services": {}})


# --- listing ----------------------------------------------------------------------------------

PS_TABLE = ("table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t"
            "{{.Status}}\t{{.Ports}}")
PS_HEADERS = {"Name": "NAME", "Image": "IMAGE", "Command": "COMMAND", "Service": "SERVICE",
              "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS", "ID": "CONTAINER ID",
              "State": "STATE", "Project": "PROJECT", "Health": "HEALTH",
              "ExitCode": "EXIT CODE", "CreatedAt": "CREATED AT", "Names": "NAMES",
              "Labels": "LABELS", "Networks": "NETWORKS", "Mounts": "MOUNTS",
              "LocalVolumes": "LOCAL VOLUMES", "Size": "SIZE", "Publishers": "PUBLISHERS"}


def _ps_row(c: dict[str, Any], *, trunc: bool) -> Any:
    from ketch.cli import views
    from ketch.cli.formatting import Struct
    from ketch.compose import labels as L

    base = views.container_row(c, trunc=trunc)
    lab = c.get("Labels") or {}
    status = str(c.get("Status") or "")
    health = ""
    for word in ("healthy", "unhealthy", "starting"):
        if f"({word})" in status or f"(health: {word})" in status:
            health = word
            break
    exit_code = 0
    if c.get("State") == "exited" and "(" in status:
        try:
            exit_code = int(status.split("(", 1)[1].split(")", 1)[0])
        except ValueError:
            exit_code = 0
    fields = dict(base)
    fields.update({
        "Name": base["Names"], "Service": lab.get(L.SERVICE, ""),
        "Project": lab.get(L.PROJECT, ""), "Health": health, "ExitCode": exit_code,
        "Publishers": [{"URL": p.get("IP", ""), "TargetPort": p.get("PrivatePort", 0),
                        "PublishedPort": p.get("PublicPort", 0),
                        "Protocol": p.get("Type", "")} for p in c.get("Ports") or []],
    })
    return Struct("api.ContainerSummary", fields)


@command("ps", "[OPTIONS] [SERVICE...]", "List containers", nargs=(0, None))
@option("-a", "--all", "all_", is_flag=True,
        help="Show all stopped containers (including those created by the run command)")
@option("--filter", default="", help="Filter services by a property (supported filters: "
        "status).")
@option("--format", "format_", default="table",
        help="Format output using a custom template: 'table' (default), 'table TEMPLATE', "
             "'json', or a Go template")
@option("--no-trunc", is_flag=True, help="Don't truncate output")
@option("--orphans", is_flag=True, default=True, help="Include orphaned services (default true)")
@option("-q", "--quiet", is_flag=True, help="Only display IDs")
@option("--services", is_flag=True, help="Display services")
@option("--status", multiple=True, metavar="stringArray",
        help="Filter services by status. Values: [paused | restarting | removing | running | "
             "dead | created | exited]")
@pass_obj
def ps_cmd(session: Session, args: tuple[str, ...], all_: bool, filter: str, format_: str,
           no_trunc: bool, orphans: bool, quiet: bool, services: bool,
           status: tuple[str, ...]) -> int:
    from ketch.cli.formatting import go_json, render
    from ketch.compose.project import service_of

    project = _project_for_down(session)
    c = _compose(session, project)
    statuses = set(status)
    if filter:
        key, _, value = filter.partition("=")
        if key != "status":
            raise local(InvalidArgument(f"unknown filter {key}"))
        statuses.add(value)
    for s in statuses:
        if s not in ("paused", "restarting", "removing", "running", "dead", "created",
                     "exited"):
            raise local(InvalidArgument(f"invalid filter: status={s}"))
    if args:
        for a in args:
            project.service(a)
    items = c.containers(args, stopped=all_ or bool(statuses), oneoff=None if all_ else False)
    if statuses:
        items = [i for i in items if i.get("State") in statuses]
    if not orphans:
        items = [i for i in items if service_of(i) in project.services]
    if services:
        seen: list[str] = []
        for i in items:
            if service_of(i) not in seen:
                seen.append(service_of(i))
        names = seen if items or args else []
        sys.stdout.write("".join(n + "\n" for n in names))
        return 0
    if quiet:
        sys.stdout.write("".join(str(i["Id"]) + "\n" for i in items))
        return 0
    rows = [_ps_row(i, trunc=not no_trunc) for i in items]
    if format_ == "json":
        sys.stdout.write("".join(go_json(dict(r)) + "\n" for r in rows))
        return 0
    fmt = PS_TABLE if format_ in ("", "table") else format_
    sys.stdout.write(render(fmt, rows, PS_HEADERS))
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
        help="Number of lines to show from the end of the logs for each container")
@option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@option("--until", default="", help='Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z)'
        ' or relative (e.g. 42m for 42 minutes)')
@pass_obj
def logs_cmd(session: Session, args: tuple[str, ...], follow: bool, index: str,
             no_color: bool, no_log_prefix: bool, since: str, tail: str, timestamps: bool,
             until: str) -> int:
    from ketch.cli.container_cmds import go_timestamp
    from ketch.compose.logs import LogPrinter, Target, follow_all, short_name
    from ketch.compose.project import _name_of, number_of

    project = _project_for_down(session)
    for a in args:
        project.service(a)
    c = _compose(session, project)
    n = _int(index, "--index")
    items = c.containers(args, oneoff=None)
    if n:
        items = [i for i in items if number_of(i) == n]
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


# --- lifecycle of existing containers ---------------------------------------------------------


@command("start", "[SERVICE...]", "Start services", nargs=(0, None))
@pass_obj
def start_cmd(session: Session, args: tuple[str, ...]) -> int:
    project = load_project(session, args)
    _compose(session, project).start(args)
    return 0


@command("stop", "[OPTIONS] [SERVICE...]", "Stop services", nargs=(0, None))
@option("-t", "--timeout", default="", metavar="int",
        help="Specify a shutdown timeout in seconds")
@pass_obj
def stop_cmd(session: Session, args: tuple[str, ...], timeout: str) -> int:
    project = _project_for_down(session)
    _compose(session, project).stop(args, _timeout(timeout))
    return 0


@command("restart", "[OPTIONS] [SERVICE...]", "Restart service containers", nargs=(0, None))
@option("--no-deps", is_flag=True, help="Don't restart dependent services")
@option("-t", "--timeout", default="", metavar="int",
        help="Specify a shutdown timeout in seconds")
@pass_obj
def restart_cmd(session: Session, args: tuple[str, ...], no_deps: bool, timeout: str) -> int:
    project = load_project(session, args)
    _compose(session, project).restart(args, _timeout(timeout), no_deps=no_deps)
    return 0


@command("kill", "[OPTIONS] [SERVICE...]", "Force stop service containers", nargs=(0, None))
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("-s", "--signal", "signal_", default="SIGKILL",
        help="SIGNAL to send to the container")
@pass_obj
def kill_cmd(session: Session, args: tuple[str, ...], remove_orphans: bool,
             signal_: str) -> int:
    project = load_project(session, args)
    c = _compose(session, project)
    if remove_orphans:
        for o in c.orphans():
            c._remove(o)    # noqa: SLF001 - the same removal as up/down's
    n = c.each(args, "Killing", lambda cid: c.client.container_kill(cid, signal=signal_),
               done="Killed")
    if n == 0:
        raise local(InvalidArgument("no container to kill"))
    return 0


@command("pause", "[SERVICE...]", "Pause services", nargs=(0, None))
@pass_obj
def pause_cmd(session: Session, args: tuple[str, ...]) -> int:
    project = load_project(session, args)
    c = _compose(session, project)
    c.each(args, "Pausing", c.client.container_pause, done="Paused")
    return 0


@command("unpause", "[SERVICE...]", "Unpause services", nargs=(0, None))
@pass_obj
def unpause_cmd(session: Session, args: tuple[str, ...]) -> int:
    project = load_project(session, args)
    c = _compose(session, project)
    c.each(args, "Unpausing", c.client.container_unpause, done="Unpaused")
    return 0


@command("rm", "[OPTIONS] [SERVICE...]", "Removes stopped service containers", nargs=(0, None))
@option("-f", "--force", is_flag=True, help="Don't ask to confirm removal")
@option("-s", "--stop", is_flag=True, help="Stop the containers, if required, before removing")
@option("-v", "--volumes", is_flag=True, help="Remove any anonymous volumes attached to "
        "containers")
@pass_obj
def rm_cmd(session: Session, args: tuple[str, ...], force: bool, stop: bool,
           volumes: bool) -> int:
    from ketch.compose.project import _name_of

    project = load_project(session, args)
    c = _compose(session, project)
    if stop:
        c.stop(args)
    candidates = [i for i in c.containers(args, oneoff=None)
                  if i.get("State") not in ("running", "paused", "restarting")]
    if not candidates:
        sys.stderr.write("No stopped containers\n")
        return 0
    if not force:
        names = ", ".join(_name_of(i) for i in candidates)
        if not sys.stdin.isatty():
            sys.stderr.write(f"Going to remove {names}\n")
            raise local(InvalidArgument("cannot ask for confirmation without a terminal: "
                                        "use -f"))
        sys.stderr.write(f"Going to remove {names}\n? Are you sure? (y/N) ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    c.remove_stopped(args, volumes=volumes)
    return 0


@command("wait", "SERVICE [SERVICE...] [OPTIONS]", "Block until containers of all (or "
         "specified) services stop.", nargs=(1, None))
@option("--down-project", is_flag=True, help="Drops project when the first container stops")
@pass_obj
def wait_cmd(session: Session, args: tuple[str, ...], down_project: bool) -> int:
    from ketch.compose.project import DownOptions

    project = load_project(session, args)
    c = _compose(session, project)
    items = c.containers(args)
    if not items:
        raise local(InvalidArgument("no containers for project " + repr(project.name)))
    codes: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def one(cid: str) -> None:
        resp = c.client.container_wait(cid, condition="not-running")
        res = c.client.wait_result(resp)
        with lock:
            codes.append(int(res.get("StatusCode") or 0))
        done.set()

    threads = [threading.Thread(target=one, args=(i["Id"],), daemon=True) for i in items]
    for t in threads:
        t.start()
    if down_project:
        done.wait()
        c.down(DownOptions())
        return codes[0]
    for t in threads:
        t.join()
    return codes[-1] if codes else 0


# --- per-container commands -------------------------------------------------------------------


def _container_of(c: Compose, service: str, index: int) -> dict[str, Any]:
    from ketch.compose.project import number_of

    items = [i for i in c.containers([service], stopped=False)]
    if not items:
        raise local(InvalidArgument(f"service {service!r} is not running"))
    if index:
        for i in items:
            if number_of(i) == index:
                return i
        raise local(InvalidArgument(f"service {service!r} is not running container "
                                    f"#{index}"))
    return items[0]


@command("exec", "[OPTIONS] SERVICE COMMAND [ARGS...]",
         "Execute a command in a running container", nargs=(2, None), interspersed=False)
@option("-d", "--detach", is_flag=True, help="Detached mode: Run command in the background")
@option("-e", "--env", "env", multiple=True, metavar="stringArray",
        help="Set environment variables")
@option("--index", default="0", metavar="int",
        help="Index of the container if service has multiple replicas")
@option("-T", "--no-TTY", "no_tty", is_flag=True,
        help="Disable pseudo-TTY allocation. By default `docker compose exec` allocates a TTY.")
@option("--privileged", is_flag=True, help="Give extended privileges to the process")
@option("-u", "--user", default="", help="Run the command as this user")
@option("-w", "--workdir", default="", help="Path to workdir directory for this command")
@pass_obj
def exec_cmd(session: Session, args: tuple[str, ...], detach: bool, env: tuple[str, ...],
             index: str, no_tty: bool, privileged: bool, user: str, workdir: str) -> int:
    from ketch.cli.container_cmds import exec_

    project = load_project(session, args[:1])
    project.service(args[0])
    c = _compose(session, project)
    target = _container_of(c, args[0], _int(index, "--index"))
    tty = not no_tty and sys.stdin.isatty()
    rv: int = exec_.callback(session, args=(target["Id"], *args[1:]), detach=detach,
                             detach_keys="", env=env, env_file=(), interactive=not detach,
                             privileged=privileged, tty=tty, user=user, workdir=workdir)
    return rv


@command("run", "[OPTIONS] SERVICE [COMMAND] [ARGS...]", "Run a one-off command on a service",
         nargs=(1, None), interspersed=False)
@option("--build", is_flag=True, help="Build image before starting container")
@option("-d", "--detach", is_flag=True, help="Run container in background and print "
        "container ID")
@option("--entrypoint", default=None, help="Override the entrypoint of the image")
@option("-e", "--env", "env", multiple=True, metavar="stringArray",
        help="Set environment variables")
@option("-i", "--interactive", is_flag=True, default=True,
        help="Keep STDIN open even if not attached (default true)")
@option("-l", "--label", "label", multiple=True, metavar="stringArray",
        help="Add or override a label")
@option("--name", default="", help="Assign a name to the container")
@option("-T", "--no-TTY", "no_tty", is_flag=True,
        help="Disable pseudo-TTY allocation (default: auto-detected)")
@option("--no-deps", is_flag=True, help="Don't start linked services")
@option("-p", "--publish", "publish", multiple=True, metavar="stringArray",
        help="Publish a container's port(s) to the host")
@option("--pull", default="policy", help='Pull image before running ("always"|"missing"|'
        '"never")')
@option("--quiet-pull", is_flag=True, help="Pull without printing progress information")
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("--rm", is_flag=True, help="Automatically remove the container when it exits")
@option("-P", "--service-ports", "service_ports", is_flag=True,
        help="Run command with all service's ports enabled and mapped to the host")
@option("--use-aliases", is_flag=True,
        help="Use the service's network useAliases in the network(s) the container "
             "connects to")
@option("-u", "--user", default="", help="Run as specified username or uid")
@option("-v", "--volume", "volume", multiple=True, metavar="stringArray",
        help="Bind mount a volume")
@option("-w", "--workdir", default="", help="Working directory inside the container")
@pass_obj
def run_cmd(session: Session, args: tuple[str, ...], **f: Any) -> int:
    import secrets as _secrets
    import shlex

    from ketch.cli.container_cmds import _start_attached
    from ketch.compose import labels as L
    from ketch.compose.project import UpOptions

    name = args[0]
    project = load_project(session, args[:1])
    svc = project.service(name)
    c = _compose(session, project)
    if not f["no_deps"] and svc.depends_on:
        deps = [d.service for d in svc.depends_on if d.service in project.services]
        if deps:
            c.up(UpOptions(services=deps, build="auto"))
            for d in svc.depends_on:
                if d.service in project.services:
                    c.wait_dependencies(svc)
                    break
    else:
        c.ensure_networks([svc])
        c.ensure_volumes([svc])
    c.ensure_images([svc], build="always" if f["build"] else "auto",
                    pull="" if f["pull"] == "policy" else f["pull"],
                    quiet_pull=f["quiet_pull"])
    tty = not f["no_tty"] and sys.stdin.isatty() and sys.stdout.isatty()
    slug = _secrets.token_hex(32)
    cname = f["name"] or f"{project.name}-{name}-run-{slug[:12]}"
    extra_env = list(f["env"])

    def override(body: dict[str, Any]) -> None:
        if len(args) > 1:
            body["Cmd"] = list(args[1:])
        if f["entrypoint"] is not None:
            body["Entrypoint"] = shlex.split(f["entrypoint"]) if f["entrypoint"] else [""]
        if f["user"]:
            body["User"] = f["user"]
        if f["workdir"]:
            body["WorkingDir"] = f["workdir"]
        env = [e if "=" in e else f"{e}={os.environ.get(e, '')}" for e in extra_env]
        if env:
            keys = {e.split("=", 1)[0] for e in env}
            body["Env"] = [e for e in body.get("Env") or [] if e.split("=", 1)[0] not in keys] \
                + env
        for lab in f["label"]:
            k, _, v = lab.partition("=")
            body.setdefault("Labels", {})[k] = v
        host = body.setdefault("HostConfig", {})
        if not f["service_ports"]:
            host["PortBindings"] = {}
        if f["publish"]:
            from ketch.cli.run_opts import ConfigError, parse_publish

            for spec in f["publish"]:
                try:
                    triples = parse_publish(spec)
                except ConfigError as exc:
                    raise local(InvalidArgument(str(exc))) from None
                for cport, hip, hport in triples:
                    body.setdefault("ExposedPorts", {})[cport] = {}
                    host.setdefault("PortBindings", {}).setdefault(cport, []).append(
                        {"HostIp": hip, "HostPort": hport})
        if f["volume"]:
            host["Binds"] = list(host.get("Binds") or []) + list(f["volume"])
        host["AutoRemove"] = bool(f["rm"])
        body["Tty"] = tty
        interactive = bool(f["interactive"]) and not f["detach"]
        body["OpenStdin"] = interactive
        body["StdinOnce"] = interactive
        body["AttachStdin"] = interactive
        body["AttachStdout"] = not f["detach"]
        body["AttachStderr"] = not f["detach"]
        body["Hostname"] = body.get("Hostname") or ""

    numbers = [int((i.get("Labels") or {}).get(L.NUMBER, "0") or 0)
               for i in c.containers([name], oneoff=True)]
    number = max(numbers, default=0) + 1
    cid = c.create_container(svc, number, name=cname, oneoff=True,
                             extra_labels={L.SLUG: slug}, override=override,
                             use_aliases=f["use_aliases"])
    body = c.client.container_inspect(cid).get("Config") or {}
    config = {"AttachStdin": bool(body.get("AttachStdin")),
              "AttachStdout": not f["detach"], "AttachStderr": not f["detach"], "Tty": tty}
    return _start_attached(c.client, cid, config, auto_remove=bool(f["rm"]),
                           detach=f["detach"], detach_keys="", sig_proxy=True, cmd="run",
                           print_id=f["detach"])


@command("top", "[SERVICES...]", "Display the running processes", nargs=(0, None))
@pass_obj
def top_cmd(session: Session, args: tuple[str, ...]) -> int:
    from ketch.cli.formatting import tabwrite
    from ketch.compose.project import _name_of

    project = load_project(session, args)
    c = _compose(session, project)
    out = []
    for i in c.containers(args, stopped=False):
        top = c.client.container_top(i["Id"])
        out.append(_name_of(i) + "\n")
        lines = ["\t".join(top.get("Titles") or [])]
        lines += ["\t".join(str(x) for x in p) for p in top.get("Processes") or []]
        out.append(tabwrite("\n".join(lines) + "\n", minwidth=0, padding=3))
        out.append("\n")
    sys.stdout.write("".join(out))
    return 0


@command("port", "[OPTIONS] SERVICE PRIVATE_PORT", "Print the public port for a port binding",
         nargs=(2, 2))
@option("--index", default="0", metavar="int",
        help="Index of the container if service has multiple replicas")
@option("--protocol", default="tcp", help="tcp or udp")
@pass_obj
def port_cmd(session: Session, args: tuple[str, ...], index: str, protocol: str) -> int:
    project = load_project(session, args[:1])
    project.service(args[0])
    c = _compose(session, project)
    target = _container_of(c, args[0], _int(index, "--index"))
    info = c.client.container_inspect(target["Id"])
    ports = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(
        f"{args[1]}/{protocol}") or []
    if not ports:
        raise local(NotFound(f"no port {args[1]}/{protocol} for container "
                             f"{target['Names'][0].lstrip('/')}"))
    p = ports[0]
    sys.stdout.write(f"{p.get('HostIp') or '0.0.0.0'}:{p.get('HostPort')}\n")
    return 0


@command("images", "[OPTIONS] [SERVICE...]", "List images used by the created containers",
         nargs=(0, None))
@option("--format", "format_", default="table", help="Format the output. Values: [table | json]")
@option("-q", "--quiet", is_flag=True, help="Only display IDs")
@pass_obj
def images_cmd(session: Session, args: tuple[str, ...], format_: str, quiet: bool) -> int:
    import json

    from ketch.cli.formatting import docker_size, tabwrite
    from ketch.compose.project import _name_of

    project = _project_for_down(session)
    c = _compose(session, project)
    rows = []
    for i in c.containers(args):
        img = c.client.image_inspect(i["ImageID"]) if i.get("ImageID") else {}
        repo_tag = (img.get("RepoTags") or ["<none>:<none>"])[0]
        repo, _, tag = repo_tag.rpartition(":")
        rows.append({"ID": str(img.get("Id") or ""), "ContainerName": _name_of(i),
                     "Repository": repo, "Tag": tag, "Size": int(img.get("Size") or 0)})
    if quiet:
        seen = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        sys.stdout.write("".join(s + "\n" for s in seen))
        return 0
    if format_ == "json":
        sys.stdout.write(json.dumps(rows) + "\n")
        return 0
    lines = ["CONTAINER\tREPOSITORY\tTAG\tIMAGE ID\tSIZE"]
    for r in rows:
        short = r["ID"].split(":", 1)[-1][:12]
        lines.append(f"{r['ContainerName']}\t{r['Repository']}\t{r['Tag']}\t{short}\t"
                     f"{docker_size(r['Size'])}")
    sys.stdout.write(tabwrite("\n".join(lines) + "\n", minwidth=0, padding=3))
    return 0


@command("cp", "[OPTIONS] SERVICE:SRC_PATH DEST_PATH|-\n\tketch compose cp [OPTIONS] SRC_PATH|- "
         "SERVICE:DEST_PATH", "Copy files/folders between a service container and the local "
         "filesystem", nargs=(2, 2))
@option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information)")
@option("-L", "--follow-link", "follow_link", is_flag=True,
        help="Always follow symbol link in SRC_PATH")
@option("--index", default="0", metavar="int",
        help="Index of the container if service has multiple replicas")
@pass_obj
def cp_cmd(session: Session, args: tuple[str, ...], archive: bool, follow_link: bool,
           index: str) -> int:
    from ketch.cli.container_cmds import cp as docker_cp

    project = load_project(session)
    c = _compose(session, project)
    words = list(args)
    for k, w in enumerate(words):
        svc, sep, path = w.partition(":")
        if sep and svc in project.services:
            target = _container_of(c, svc, _int(index, "--index"))
            words[k] = f"{target['Id']}:{path}"
    rv: int = docker_cp.callback(session, args=tuple(words), archive=archive,
                                 follow_link=follow_link, quiet=True)
    return rv


@command("create", "[OPTIONS] [SERVICE...]", "Creates containers for a service",
         nargs=(0, None))
@option("--build", is_flag=True, help="Build images before starting containers")
@option("--force-recreate", is_flag=True,
        help="Recreate containers even if their configuration and image haven't changed")
@option("--no-build", is_flag=True, help="Don't build an image, even if it's policy")
@option("--no-recreate", is_flag=True, help="If containers already exist, don't recreate them")
@option("--pull", default="", help='Pull image before running ("always"|"missing"|"never")')
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("--scale", multiple=True, metavar="scale", help="Scale SERVICE to NUM instances")
@pass_obj
def create_cmd(session: Session, args: tuple[str, ...], build: bool, force_recreate: bool,
               no_build: bool, no_recreate: bool, pull: str, remove_orphans: bool,
               scale: tuple[str, ...]) -> int:
    from ketch.compose.project import UpOptions

    project = load_project(session, args)
    c = _compose(session, project)
    c.up(UpOptions(services=list(args), build="always" if build else
                   "never" if no_build else "auto",
                   recreate="force" if force_recreate else "never" if no_recreate
                   else "diverged", scale=_scales(scale), start=False,
                   remove_orphans=remove_orphans, pull=pull))
    return 0


# --- images -----------------------------------------------------------------------------------


@command("build", "[OPTIONS] [SERVICE...]", "Build or rebuild services", nargs=(0, None))
@option("--build-arg", "build_arg", multiple=True, metavar="stringArray",
        help="Set build-time variables for services")
@option("--no-cache", is_flag=True, help="Do not use cache when building the image")
@option("--pull", is_flag=True, help="Always attempt to pull a newer version of the image")
@option("-q", "--quiet", is_flag=True, help="Don't print anything to STDOUT")
@option("--with-dependencies", is_flag=True,
        help="Also build dependencies (transitively)")
@pass_obj
def build_cmd(session: Session, args: tuple[str, ...], build_arg: tuple[str, ...],
              no_cache: bool, pull: bool, quiet: bool, with_dependencies: bool) -> int:
    project = load_project(session, args)
    c = _compose(session, project)
    services = c.selection(args, deps=with_dependencies)
    extra = {}
    for a in build_arg:
        k, sep, v = a.partition("=")
        extra[k] = v if sep else os.environ.get(k)
    for svc in services:
        if svc.build is None:
            continue
        if extra:
            b = dict(svc.spec["build"])
            b["args"] = {**(b.get("args") or {}), **extra}
            svc.spec["build"] = b
        _build(session, svc, svc.image, no_cache=no_cache, pull=pull, quiet=quiet)
    return 0


@command("pull", "[OPTIONS] [SERVICE...]", "Pull service images", nargs=(0, None))
@option("--ignore-buildable", is_flag=True, help="Ignore images that can be built")
@option("--ignore-pull-failures", is_flag=True,
        help="Pull what it can and ignores images with pull failures")
@option("--include-deps", is_flag=True, help="Also pull services declared as dependencies")
@option("--policy", default="", help='Apply pull policy ("missing"|"always")')
@option("-q", "--quiet", is_flag=True, help="Pull without printing progress information")
@pass_obj
def pull_cmd(session: Session, args: tuple[str, ...], ignore_buildable: bool,
             ignore_pull_failures: bool, include_deps: bool, policy: str, quiet: bool) -> int:
    project = load_project(session, args)
    c = _compose(session, project)
    failed = 0
    for svc in c.selection(args, deps=include_deps):
        if svc.build is not None and (ignore_buildable or not svc.spec.get("image")):
            continue
        if policy == "missing" and c._image_id(svc.image) is not None:   # noqa: SLF001
            continue
        try:
            c.pull_image(svc, quiet)
        except KetchError as exc:
            if not ignore_pull_failures:
                raise
            sys.stderr.write(f"WARN[0000] {svc.name}: {exc}\n")
            failed += 1
    return 0


@command("push", "[OPTIONS] [SERVICE...]", "Push service images", nargs=(0, None))
@option("--ignore-push-failures", is_flag=True,
        help="Push what it can and ignores images with push failures")
@option("--include-deps", is_flag=True, help="Also push images of services declared as "
        "dependencies")
@option("-q", "--quiet", is_flag=True, help="Push without printing progress information")
@pass_obj
def push_cmd(session: Session, args: tuple[str, ...], ignore_push_failures: bool,
             include_deps: bool, quiet: bool) -> int:
    from ketch.cli import registry_client_cmds as reg

    project = load_project(session, args)
    c = _compose(session, project)
    for svc in c.selection(args, deps=include_deps):
        if not svc.spec.get("image"):
            continue
        try:
            reg.push.callback(session, args=(svc.image,), all_tags=False,
                              disable_content_trust=True, platform="", quiet=quiet)
        except KetchError as exc:
            if not ignore_push_failures:
                raise
            sys.stderr.write(f"WARN[0000] {svc.name}: {exc}\n")
    return 0


# --- the model --------------------------------------------------------------------------------


@command("config", "[OPTIONS] [SERVICE...]", "Parse, resolve and render compose file in "
         "canonical format", nargs=(0, None), aliases=("ketch compose config",
                                                       "ketch compose convert"))
@option("--format", "format_", default="yaml", help='Format the output. Values: [yaml | json]')
@option("--hash", "hash_", default="", help="Print the service config hash, one per line.")
@option("--images", is_flag=True, help="Print the image names, one per line.")
@option("--no-interpolate", is_flag=True, help="Don't interpolate environment variables.")
@option("-o", "--output", default="", help="Save to file (default to stdout)")
@option("--profiles", is_flag=True, help="Print the profile names, one per line.")
@option("-q", "--quiet", is_flag=True, help="Only validate the configuration, don't print "
        "anything.")
@option("--services", is_flag=True, help="Print the service names, one per line.")
@option("--volumes", is_flag=True, help="Print the volume names, one per line.")
@pass_obj
def config_cmd(session: Session, args: tuple[str, ...], format_: str, hash_: str, images: bool,
               no_interpolate: bool, output: str, profiles: bool, quiet: bool, services: bool,
               volumes: bool) -> int:
    from ketch.compose.normalize import dump

    if format_ not in ("yaml", "json"):
        raise local(InvalidArgument(f"unsupported format {format_!r}"))
    project = load_project(session, args, interpolate=not no_interpolate)
    model = project.model
    if args:
        keep = set(args)
        model = dict(model)
        model["services"] = {k: v for k, v in (model.get("services") or {}).items()
                             if k in keep}
    text: str
    if quiet:
        return 0
    if services:
        text = "".join(n + "\n" for n in (model.get("services") or {}))
    elif volumes:
        text = "".join(n + "\n" for n in (model.get("volumes") or {}))
    elif profiles:
        names = sorted({p for s in (project.services | project.disabled).values()
                        for p in s.spec.get("profiles") or []})
        text = "".join(n + "\n" for n in names)
    elif images:
        text = "".join(project.services[n].image + "\n" for n in model.get("services") or {})
    elif hash_:
        wanted = list(project.services) if hash_ == "*" else hash_.split(",")
        text = "".join(f"{n} {project.service(n).config_hash()}\n" for n in wanted)
    else:
        text = dump(model, format_)
        if not text.endswith("\n"):
            text += "\n"
    if output:
        with open(output, "w") as fh:
            fh.write(text)
        return 0
    sys.stdout.write(text)
    return 0


@command("ls", "[OPTIONS]", "List running compose projects")
@option("-a", "--all", "all_", is_flag=True, help="Show all stopped Compose projects")
@option("--filter", "filters", multiple=True, metavar="filter",
        help="Filter output based on conditions provided")
@option("--format", "format_", default="table", help="Format the output. Values: [table | json]")
@option("-q", "--quiet", is_flag=True, help="Only display project names.")
@pass_obj
def ls_cmd(session: Session, args: tuple[str, ...], all_: bool, filters: tuple[str, ...],
           format_: str, quiet: bool) -> int:
    import json

    from ketch.cli.formatting import tabwrite
    from ketch.compose import labels as L

    client = session.connect()
    projects: dict[str, dict[str, Any]] = {}
    for c in client.containers(all=True, filters={"label": [L.PROJECT]}):
        lab = c.get("Labels") or {}
        p = projects.setdefault(lab[L.PROJECT], {"states": {}, "files": set()})
        p["states"][c.get("State") or ""] = p["states"].get(c.get("State") or "", 0) + 1
        if lab.get(L.CONFIG_FILES):
            p["files"].add(lab[L.CONFIG_FILES])
    want_names = [f.split("=", 1)[1] for f in filters if f.startswith("name=")]
    rows = []
    for name in sorted(projects):
        p = projects[name]
        if not all_ and not p["states"].get("running"):
            continue
        if want_names and not any(w in name for w in want_names):
            continue
        status = ", ".join(f"{s}({n})" for s, n in sorted(p["states"].items()))
        rows.append({"Name": name, "Status": status, "ConfigFiles": ",".join(sorted(p["files"]))})
    if quiet:
        sys.stdout.write("".join(r["Name"] + "\n" for r in rows))
    elif format_ == "json":
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        lines = ["NAME\tSTATUS\tCONFIG FILES"] + [
            f"{r['Name']}\t{r['Status']}\t{r['ConfigFiles']}" for r in rows]
        sys.stdout.write(tabwrite("\n".join(lines) + "\n", minwidth=0, padding=3))
    return 0


@command("version", "[OPTIONS]", "Show the Docker Compose version information")
@option("-f", "--format", "format_", default="", help='Format the output. Values: '
        '[pretty | json]. (Default: pretty)')
@option("--short", is_flag=True, help="Shows only Compose's version number")
def version_cmd(args: tuple[str, ...], format_: str, short: bool) -> int:
    import json

    from ketch import __version__
    from ketch.compose.labels import COMPOSE_VERSION

    if short:
        sys.stdout.write(COMPOSE_VERSION + "\n")
    elif format_ == "json":
        sys.stdout.write(json.dumps({"version": COMPOSE_VERSION}) + "\n")
    else:
        sys.stdout.write(f"ketch compose version v{COMPOSE_VERSION} (ketch {__version__})\n")
    return 0


@command("events", "[OPTIONS] [SERVICE...]", "Receive real time events from containers",
         nargs=(0, None))
@option("--json", "json_", is_flag=True, help="Output events as a stream of json objects")
@option("--since", default="", help="Show all events created since timestamp")
@option("--until", default="", help="Stream events until this timestamp")
@pass_obj
def events_cmd(session: Session, args: tuple[str, ...], json_: bool, since: str,
               until: str) -> int:
    import json
    from datetime import datetime

    from ketch.cli.container_cmds import go_timestamp
    from ketch.compose import labels as L

    project = _project_for_down(session)
    flt: dict[str, list[str]] = {"type": ["container"],
                                 "label": [f"{L.PROJECT}={project.name}"]}
    client = session.connect()
    wanted = set(args)
    try:
        for ev in client.events(since=go_timestamp(since) if since else "",
                                until=go_timestamp(until) if until else "", filters=flt):
            attrs = dict((ev.get("Actor") or {}).get("Attributes") or {})
            service = attrs.get(L.SERVICE, "")
            if wanted and service not in wanted:
                continue
            ts = ev.get("timeNano") or int(ev.get("time", 0)) * 10**9
            when = datetime.fromtimestamp(ts / 1e9, tz=UTC)
            cid = (ev.get("Actor") or {}).get("ID") or ev.get("id") or ""
            action = ev.get("Action") or ev.get("status") or ""
            if json_:
                sys.stdout.write(json.dumps({
                    "time": when.isoformat(), "type": "container", "action": action,
                    "id": cid, "service": service, "attributes": attrs}) + "\n")
            else:
                pairs = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
                sys.stdout.write(f"{when.strftime('%Y-%m-%d %H:%M:%S.%f')} container {action} "
                                 f"{cid} ({pairs})\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    return 0


@command("watch", "[SERVICE...]", "Watch build context for service and rebuild/refresh "
         "containers when files are updated", nargs=(0, None))
@option("--no-up", is_flag=True, help="Do not build & start services before watching")
@option("--prune", is_flag=True, help="Prune dangling images on rebuild")
@option("--quiet", is_flag=True, help="hide build output")
@pass_obj
def watch_cmd(session: Session, args: tuple[str, ...], no_up: bool, prune: bool,
              quiet: bool) -> int:
    from ketch.compose.project import UpOptions
    from ketch.compose.watch import Watcher

    project = load_project(session, args)
    c = _compose(session, project)
    services = c.selection(args, deps=False)
    if not any((s.spec.get("develop") or {}).get("watch") for s in services):
        raise local(InvalidArgument("none of the selected services is configured for watch, "
                                    "consider setting a 'develop' section"))
    if not no_up:
        c.up(UpOptions(services=list(args)))
    w = Watcher(c, services, rebuild=lambda svc: _build(session, svc, svc.image, quiet=quiet))
    try:
        w.run()
    except KeyboardInterrupt:
        return 130
    return 0


