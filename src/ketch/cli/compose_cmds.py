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
from collections.abc import Mapping, Sequence

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
    Option("ansi", "ansi", "", VALUE, "auto", "string",
           'Control when to print ANSI control characters ("never"|"always"|"auto") '
           '(default "auto")'),
    Option("compatibility", "compatibility", "", "bool", False, "",
           "Run compose in backward compatibility mode"),
    Option("dry_run", "dry-run", "", "bool", False, "", "Execute command in dry run mode"),
    Option("env_file", "env-file", "", LIST, (), "stringArray",
           "Specify an alternate environment file"),
    Option("file", "file", "f", LIST, (), "stringArray", "Compose configuration files"),
    Option("no_ansi", "no-ansi", "", "bool", False, "",
           "Do not print ANSI control characters (DEPRECATED)", hidden=True),
    Option("parallel", "parallel", "", VALUE, "-1", "int",
           "Control max parallelism, -1 for unlimited (default -1)"),
    Option("profile", "profile", "", LIST, (), "stringArray",
           "Specify a profile to enable"),
    Option("progress", "progress", "", VALUE, "", "string",
           "Set type of progress output (auto, tty, plain, json, quiet)"),
    Option("project_directory", "project-directory", "", VALUE, "", "string",
           "Specify an alternate working directory (default: the path of the, first "
           "specified, Compose file)"),
    Option("project_name", "project-name", "p", VALUE, "", "string", "Project name"),
    Option("version", "version", "v", "bool", False, "",
           "Show the Docker Compose version information"),
    Option("workdir", "workdir", "", VALUE, "", "string",
           "DEPRECATED! USE --project-directory INSTEAD.\nSpecify an alternate working "
           "directory\n(default: the path of the, first specified, Compose file)", hidden=True),
)

PROGRESS_MODES = ("auto", "tty", "plain", "json", "quiet")


def _fail(message: str) -> KetchError:
    """A refusal of the command line, printed as compose prints it (no daemon prefix), exit 1."""
    return local(InvalidArgument(message))


def _unsupported(what: str) -> KetchError:
    from ketch.errors import NotSupported

    return local(NotSupported(f"{what} is not supported by ketch compose"))


def check_global(values: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """compose's PersistentPreRunE: the deprecated spellings, COMPOSE_ANSI/COMPOSE_PROGRESS/
    COMPOSE_PARALLEL_LIMIT, and which --ansi/--progress pairs it refuses. Returns the values
    with ``ansi`` and ``progress`` resolved."""
    v = dict(values)
    if v.get("dry_run"):
        raise _unsupported("--dry-run")
    if v.get("compatibility"):
        raise _unsupported("--compatibility")
    if v.get("no_ansi"):
        if v["ansi"] != "auto":
            raise _fail('cannot specify DEPRECATED "--no-ansi" and "--ansi". Please use only '
                        '"--ansi"')
        v["ansi"] = "never"
        sys.stderr.write("option '--no-ansi' is DEPRECATED ! Please use '--ansi' instead.\n")
    elif v["ansi"] == "auto" and "COMPOSE_ANSI" in environ:
        v["ansi"] = environ["COMPOSE_ANSI"]
    if v["ansi"] not in ("never", "always", "auto"):
        raise _fail(f"unsupported --ansi value {_q(v['ansi'])}")
    if environ.get("NO_COLOR"):
        v["ansi"] = "never"
    if not v["progress"]:
        v["progress"] = environ.get("COMPOSE_PROGRESS", "")
    mode = v["progress"]
    if mode == "tty" and v["ansi"] == "never":
        raise _fail("can't use --progress tty while ANSI support is disabled")
    if mode == "plain" and v["ansi"] == "always":
        raise _fail("can't use --progress plain while ANSI support is forced")
    if mode == "none":
        v["progress"] = "quiet"
    elif mode not in ("", *PROGRESS_MODES):
        raise _fail(f"unsupported --progress value {_q(mode)}")
    if v.get("workdir"):
        if v["project_directory"]:
            raise _fail('cannot specify DEPRECATED "--workdir" and "--project-directory". '
                        'Please use only "--project-directory" instead')
        v["project_directory"] = v["workdir"]
        sys.stderr.write("option '--workdir' is DEPRECATED at root level! Please use "
                         "'--project-directory' instead.\n")
    if "COMPOSE_PARALLEL_LIMIT" in environ and v["parallel"] == "-1":
        limit = environ["COMPOSE_PARALLEL_LIMIT"]
        try:
            int(limit)
        except ValueError:
            raise _fail(f"COMPOSE_PARALLEL_LIMIT must be an integer (found: {_q(limit)})"
                        ) from None
        v["parallel"] = limit
    else:
        _int(str(v["parallel"]), "--parallel")
    return v


def _q(s: str) -> str:
    """Go's %q of a string."""
    from ketch.filters import go_quote

    return go_quote(s)


class ComposeGroup(Group):
    """A group whose own flags (``-f``, ``-p``, ...) are kept for its commands."""

    def invoke(self, path: str, words: Sequence[str], session: Any) -> Any:
        try:
            return self._invoke(path, words, session)
        except UsageFailure as exc:
            # compose's flag errors are its own: the message alone, exit 1 (its
            # SetFlagErrorFunc), not docker's usage text and 125
            if exc.status == 125:
                raise _fail(exc.message) from None
            raise

    def _invoke(self, path: str, words: Sequence[str], session: Any) -> Any:
        from ketch.cli.command import _parse

        parsed = _parse(self.flags, words, lambda: self.help_text(path))
        if parsed is None:
            return 0
        session.compose = check_global(parsed.values, os.environ)
        if parsed.values.get("version") and not parsed.args:
            return version_cmd.callback(args=(), format_="", short=False)
        return self.dispatch(path, parsed.args, session)


COMMANDS = ("attach", "build", "commit", "config", "cp", "create", "down", "events", "exec",
            "export", "images", "kill", "logs", "ls", "pause", "port", "ps", "pull", "push",
            "restart", "rm", "run", "scale", "start", "stats", "stop", "top", "unpause", "up",
            "version", "volumes", "wait", "watch")

compose = ComposeGroup("compose", help="Define and run multi-container applications",
                       usage="[OPTIONS] COMMAND", options=GLOBAL_OPTIONS,
                       lazy={c: f"ketch.cli.compose_cmds:{c}_cmd" for c in COMMANDS})


# --- building the project ---------------------------------------------------------------------


def _opts(session: Session) -> dict[str, Any]:
    return getattr(session, "compose", None) or check_global(
        {o.dest: o.default for o in GLOBAL_OPTIONS}, {})


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

    g = _opts(session)
    mode = g["progress"] or "auto"
    if mode == "json":
        return json_progress()
    if mode == "auto" and g["ansi"] == "never":
        mode = "plain"      # as compose: no ANSI means the plain progress lines
    return Progress(quiet=mode == "quiet",
                    tty=None if mode == "auto" else mode == "tty")


def json_progress(out: Any = None) -> Any:
    """``--progress json``: each step one JSON object on stderr, as compose's json writer
    prints its events ({"id":"Container p-web-1","text":"Started"}), and warnings as its
    logger's JSON formatter does ({"level":"warning","msg":...,"time":...})."""
    import json
    import time

    from ketch.compose.progress import Progress

    class JsonProgress(Progress):
        def __call__(self, kind: str, name: str, status: str, *, error: bool = False) -> None:
            msg = {"id": f"{kind} {name}", "text": "Error" if error else status}
            if error:
                msg["status"] = status
            with self._lock:
                self.out.write(json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
                               + "\n")
                self.out.flush()

        def warn(self, text: str) -> None:
            from ketch.cli.formatting import go_time_rfc3339

            stamp = go_time_rfc3339(time.time())
            with self._lock:
                self.out.write(json.dumps({"level": "warning", "msg": text, "time": stamp},
                                          separators=(",", ":"), ensure_ascii=False) + "\n")
                self.out.flush()

    return JsonProgress(out, tty=False)


def _compose(session: Session, project: Project, *, no_cache: bool = False,
             pull: bool = False, build_quiet: bool = False) -> Compose:
    from ketch.compose.project import Compose

    progress = _progress(session)
    client = session.connect()

    def builder(svc: Service, image: str) -> None:
        _build(session, svc, image, no_cache=no_cache, pull=pull, quiet=build_quiet)

    def puller(image: str, quiet: bool) -> None:
        _pull(session, image, quiet=quiet)

    return Compose(client, project, progress, builder=builder, puller=puller,
                   workers=int(_opts(session)["parallel"]))


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
        parts = v.split("=")
        if len(parts) != 2:
            raise _fail(f"invalid --scale option {_q(v)}. Should be SERVICE=NUM")
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            raise _fail(f"strconv.Atoi: parsing {_q(parts[1])}: invalid syntax") from None
    return out


@command("up", "[OPTIONS] [SERVICE...]", "Create and start containers", nargs=(0, None))
@option("--abort-on-container-exit", is_flag=True,
        help="Stops all containers if any container was stopped. Incompatible with -d")
@option("--abort-on-container-failure", is_flag=True,
        help="Stops all containers if any container exited with failure. Incompatible with -d")
@option("--always-recreate-deps", is_flag=True,
        help="Recreate dependent containers. Incompatible with --no-recreate.")
@option("--attach", multiple=True, metavar="stringArray",
        help="Restrict attaching to the specified services. Incompatible with "
             "--attach-dependencies.")
@option("--attach-dependencies", is_flag=True,
        help="Automatically attach to log output of dependent services")
@option("--build", is_flag=True, help="Build images before starting containers")
@option("-d", "--detach", is_flag=True, help="Detached mode: Run containers in the background")
@option("--exit-code-from", default="",
        help="Return the exit code of the selected service container. Implies "
             "--abort-on-container-exit")
@option("--force-recreate", is_flag=True,
        help="Recreate containers even if their configuration and image haven't changed")
@option("--menu", is_flag=True,
        help="Enable interactive shortcuts when running attached. Incompatible with --detach. "
             "Can also be enable/disable by setting COMPOSE_MENU environment var.")
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
@option("--pull", default="policy",
        help='Pull image before running ("always"|"missing"|"never") (default "policy")')
@option("--quiet-build", is_flag=True, help="Suppress the build output")
@option("--quiet-pull", is_flag=True, help="Pull without printing progress information")
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("-V", "--renew-anon-volumes", is_flag=True,
        help="Recreate anonymous volumes instead of retrieving data from the previous "
             "containers")
@option("--scale", multiple=True, metavar="scale",
        help="Scale SERVICE to NUM instances. Overrides the `scale` setting in the Compose "
             "file if present.")
@option("-t", "--timeout", default="", metavar="int",
        help="Use this timeout in seconds for container shutdown when attached or when "
             "containers are already running")
@option("--timestamps", is_flag=True, help="Show timestamps")
@option("--wait", is_flag=True, help="Wait for services to be running|healthy. Implies "
        "detached mode.")
@option("--wait-timeout", default="", metavar="int",
        help="Maximum duration in seconds to wait for the project to be running|healthy")
@option("-w", "--watch", is_flag=True, help="Watch source code and rebuild/refresh containers "
        "when files are updated.")
@option("-y", "--yes", is_flag=True,
        help='Assume "yes" as answer to all prompts and run non-interactively')
@pass_obj
def up_cmd(session: Session, args: tuple[str, ...], **f: Any) -> int:
    from ketch.compose.project import UpOptions

    f["remove_orphans"] = f["remove_orphans"] or _truthy(
        os.environ.get("COMPOSE_REMOVE_ORPHANS", ""))
    validate_up(f, os.environ)
    detach = f["detach"]
    timeout = _timeout(f["timeout"])
    scales = _scales(f["scale"])
    project = load_project(session, args)
    if f["exit_code_from"]:
        project.service(f["exit_code_from"])
    if not project.services:
        raise _fail("no service selected")
    c = _compose(session, project, build_quiet=f["quiet_build"])
    opts = UpOptions(services=list(args),
                     build="always" if f["build"] else "never" if f["no_build"] else "auto",
                     recreate="force" if f["force_recreate"] else
                     "never" if f["no_recreate"] else "diverged",
                     recreate_deps="force" if f["always_recreate_deps"] else
                     "never" if f["no_recreate"] else "diverged",
                     renew_anon_volumes=f["renew_anon_volumes"],
                     deps=not f["no_deps"], scale=scales, start=not f["no_start"],
                     remove_orphans=f["remove_orphans"], timeout=timeout,
                     pull=_pull_mode(f["pull"]), quiet_pull=f["quiet_pull"])
    if not detach:
        f["attach_to"] = attach_set(project.model, list(args),
                                    [s.name for s in c.selection(args, deps=not f["no_deps"])],
                                    f)
    if detach or f["no_start"]:
        services = c.up(opts)
        if f["wait"]:
            wt = float(_int(f["wait_timeout"], "--wait-timeout")) if f["wait_timeout"] \
                else None
            c.wait_ready(services, wt)
        return 0
    return _up_attached(session, c, opts, f, timeout)


def attach_set(model: Mapping[str, Any], named: Sequence[str], selected: Sequence[str],
               f: Mapping[str, Any]) -> set[str]:
    """The services whose output an attached ``up`` shows, as compose picks them: those of
    --attach (which must be among the ``selected`` services up works on), else the named
    services (all when none; with --attach-dependencies their dependencies too) that do not
    say ``attach: false``; less those of --no-attach."""
    services = model.get("services") or {}
    if f.get("attach"):
        chosen = set(f["attach"])
        unexpected = sorted(chosen - set(selected))
        if unexpected:
            raise _fail("cannot attach to services not included in up: " + ", ".join(unexpected))
    else:
        base = list(selected) if f.get("attach_dependencies") or not named else list(named)
        chosen = {n for n in base if (services.get(n) or {}).get("attach", True) is not False}
    return chosen - set(f.get("no_attach") or ())


def validate_up(f: dict[str, Any], environ: Mapping[str, str]) -> None:
    """compose's validateFlags for ``up``, its messages in its order; ``f`` gets what the
    flags imply (--exit-code-from: --abort-on-container-exit; --wait: --detach)."""
    if f.get("exit_code_from") and not f.get("abort_on_container_failure"):
        f["abort_on_container_exit"] = True
    if f.get("abort_on_container_exit") and f.get("abort_on_container_failure"):
        raise _fail("--abort-on-container-failure cannot be combined with "
                    "--abort-on-container-exit")
    if f.get("wait"):
        if f.get("attach_dependencies") or f.get("abort_on_container_exit") or f.get("attach"):
            raise _fail("--wait cannot be combined with --abort-on-container-exit, --attach "
                        "or --attach-dependencies")
        f["detach"] = True
    if f.get("build") and f.get("no_build"):
        raise _fail("--build and --no-build are incompatible")
    if f.get("detach") and (f.get("attach_dependencies") or f.get("abort_on_container_exit")
                            or f.get("abort_on_container_failure") or f.get("attach")
                            or f.get("watch")):
        which = "--wait" if f.get("wait") else "--detach"
        raise _fail(f"{which} cannot be combined with --abort-on-container-exit, "
                    "--abort-on-container-failure, --attach, --attach-dependencies or --watch")
    if f.get("renew_anon_volumes") and f.get("no_recreate"):
        raise _fail("--no-recreate and --renew-anon-volumes are incompatible")
    if f.get("force_recreate") and f.get("no_recreate"):
        raise _fail("--force-recreate and --no-recreate are incompatible")
    if f.get("always_recreate_deps") and f.get("no_recreate"):
        raise _fail("--always-recreate-deps and --no-recreate are incompatible")
    if f.get("no_build") and f.get("watch"):
        raise _fail("--no-build and --watch are incompatible")
    if f.get("attach") and f.get("attach_dependencies"):
        raise _fail("cannot combine --attach and --attach-dependencies")
    if f.get("remove_orphans") and _truthy(environ.get("COMPOSE_IGNORE_ORPHANS", "")):
        raise _fail("cannot combine COMPOSE_IGNORE_ORPHANS and --remove-orphans")
    _check_pull(f.get("pull", "policy"))
    for flag in ("watch", "menu"):
        if f.get(flag):
            raise _unsupported("up --" + flag.replace("_", "-"))
    _scales(f.get("scale") or ())


def _pull_mode(value: str) -> str:
    """A --pull value as UpOptions takes it ("" for the services' own pull_policy)."""
    return {"policy": "", "if_not_present": "missing"}.get(value, value)


def _truthy(value: str) -> bool:
    """compose's utils.StringToBool."""
    return value.strip().lower() in ("1", "t", "true", "y", "yes")


def _check_pull(value: str) -> None:
    if value not in ("policy", "always", "never", "build", "missing", "if_not_present"):
        raise _fail(f"invalid --pull option {_q(value)}")


def _up_attached(session: Session, c: Compose, opts: Any, f: dict[str, Any],
                 timeout: int | None) -> int:
    """``up`` in the foreground: every container's output until all have stopped (or
    the first one with --abort-on-container-exit); Ctrl-C stops the project."""
    import time

    from ketch.compose.logs import LogPrinter, Target, follow_all, short_name
    from ketch.compose.project import _name_of

    printer = LogPrinter(sys.stdout, color=_color(session, f["no_color"]),
                         prefix=not f["no_log_prefix"])
    # Containers that existed before keep their old output; only what they print from
    # now on is shown, as compose (which attaches before starting) shows it.
    started = time.time()
    c.up(opts)
    attach = f["attach_to"]
    client = c.client
    targets = []
    for ctr in c.containers(sorted(attach)) if attach else []:
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
    on_failure = f.get("abort_on_container_failure", False)
    exit_from = f["exit_code_from"]
    code = 0
    try:
        with cond:
            while len(ended) < len(targets):
                if abort and ended:
                    break
                if on_failure and any(rc for _, rc in ended):
                    break
                cond.wait(0.5)
            first = ended[0] if ended else None
            if on_failure:
                first = next(((t, rc) for t, rc in ended if rc), None)
    except KeyboardInterrupt:
        sys.stderr.write("Gracefully stopping... (press Ctrl+C again to force)\n")
        c.stop(timeout=timeout)
        return 130
    if (abort or on_failure) and first is not None:
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
        raise _fail(f"invalid value for --rmi: {_q(rmi)}")
    project = _project_for_down(session)
    c = _compose(session, project)
    remove_orphans = remove_orphans or _truthy(os.environ.get("COMPOSE_REMOVE_ORPHANS", ""))
    opts = DownOptions(volumes=volumes, rmi=rmi, remove_orphans=remove_orphans,
                       timeout=_timeout(timeout))
    if args:
        _down_services(c, list(args), opts)
    else:
        c.down(opts)
    return 0


def dependents_of(model: Mapping[str, Any], names: Sequence[str]) -> set[str]:
    """The named services and, transitively, those that depend on them (what compose's
    ``down SERVICE`` takes down with them)."""
    services = model.get("services") or {}
    out = set(names)
    grew = True
    while grew:
        grew = False
        for n, svc in services.items():
            if n not in out and out.intersection((svc or {}).get("depends_on") or {}):
                out.add(n)
                grew = True
    return out


def _down_services(c: Compose, names: list[str], opts: Any) -> None:
    """``down SERVICE...``: the services' containers and their dependents', dependents
    first; then the project's networks (and with -v its volumes) that nothing uses any
    more, as compose does; one-off containers only with --remove-orphans."""
    from ketch.compose.project import service_of
    from ketch.errors import Conflict

    project = c.project
    if project.files:
        for n in names:
            project.service(n)
    existing = c.containers(oneoff=None if opts.remove_orphans else False)
    if not project.files:
        names = [n for n in names if any(service_of(i) == n for i in existing)]
        if not names:
            return
    targets = dependents_of(project.model, names)
    order = [n for n in reversed(dependency_order(project.model)) if n in targets]
    order += sorted(targets - set(order))
    for n in order:
        for ctr in existing:
            if service_of(ctr) == n:
                c._remove(ctr, timeout=opts.timeout, volumes=opts.volumes)  # noqa: SLF001
    if opts.remove_orphans:
        for ctr in c.orphans():
            c._remove(ctr, timeout=opts.timeout)  # noqa: SLF001
    for key, net in sorted(project.networks().items()):
        if net.get("external"):
            continue
        name = project.network_name(key)
        found = [n for n in c.client.networks(filters={"name": [name]}) if n.get("Name") == name]
        for n in found:
            c.progress("Network", name, "Removing")
            if (c.client.network_inspect(str(n["Id"])).get("Containers") or {}):
                c.progress("Network", name, "Resource is still in use")
                continue
            try:
                c.client.network_remove(str(n["Id"]))
            except NotFound:
                continue
            c.progress("Network", name, "Removed")
    if opts.volumes:
        for key, vol in sorted(project.volumes().items()):
            if vol.get("external"):
                continue
            name = project.volume_name(key)
            try:
                c.client.volume_remove(name)
            except NotFound:
                continue
            except Conflict:
                c.progress("Volume", name, "Resource is still in use")
                continue
            c.progress("Volume", name, "Removed")
    if opts.rmi:
        for image in c.images_to_remove(opts.rmi):
            try:
                c.client.image_remove(image)
            except NotFound:
                continue
            except Conflict:
                c.progress("Image", image, "Resource is still in use")
                continue
            c.progress("Image", image, "Removed")


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


def _canonical(c: Mapping[str, Any]) -> str:
    names = [str(n) for n in c.get("Names") or []]
    return next((n[1:] for n in names if n.count("/") == 1), names[0][1:] if names else "")


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
        help='SIGNAL to send to the container (default "SIGKILL")')
@pass_obj
def kill_cmd(session: Session, args: tuple[str, ...], remove_orphans: bool,
             signal_: str) -> int:
    from ketch.compose.project import service_of

    project = _project_for_down(session)
    c = _compose(session, project)
    items = c.containers(args, stopped=False, oneoff=None)
    # orphans are killed too only with --remove-orphans, as compose does
    if project.files and not (remove_orphans or
                              _truthy(os.environ.get("COMPOSE_REMOVE_ORPHANS", ""))):
        items = [i for i in items if service_of(i) in project.services]
    if not items:
        sys.stderr.write("no container to kill")
        return 0
    for i in items:
        name = _canonical(i)
        c.progress("Container", name, "Killing")
        c.client.container_kill(str(i["Id"]), signal=signal_)
        c.progress("Container", name, "Killed")
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
@option("-a", "--all", "all_", is_flag=True, hidden=True, help="Deprecated - no effect")
@option("-f", "--force", is_flag=True, help="Don't ask to confirm removal")
@option("-s", "--stop", is_flag=True, help="Stop the containers, if required, before removing")
@option("-v", "--volumes", is_flag=True, help="Remove any anonymous volumes attached to "
        "containers")
@pass_obj
def rm_cmd(session: Session, args: tuple[str, ...], all_: bool, force: bool, stop: bool,
           volumes: bool) -> int:
    from ketch.compose.project import service_of

    project = _project_for_down(session)
    c = _compose(session, project)
    if stop:
        c.stop(args)
    # compose's Remove: the services' containers (not `run`'s), those not running
    candidates = []
    for i in c.containers(args, oneoff=False):
        if project.files and service_of(i) not in project.services:
            continue
        try:
            state = c.client.container_inspect(i["Id"]).get("State") or {}
        except NotFound:
            continue
        if not state.get("Running"):
            candidates.append(i)
    if not candidates:
        sys.stderr.write("No stopped containers\n")
        return 0
    message = "Going to remove " + ", ".join(_canonical(i) for i in candidates)
    if force:
        sys.stdout.write(message + "\n")
    elif not confirm(message, sys.stdin, sys.stdout):
        return 0
    for i in candidates:
        c._remove(i, volumes=volumes)     # noqa: SLF001 - up/down's removal, with its progress
    return 0


def confirm(message: str, stdin: Any, stdout: Any) -> bool:
    """compose's prompt: on a terminal "? message (y/N) "; else the message alone, and a
    line read as a boolean (y, yes, true, 1 ...)."""
    if stdin.isatty() and stdout.isatty():
        stdout.write(f"? {message} (y/N) ")
    else:
        stdout.write(message)
    stdout.flush()
    answer = stdin.readline()
    if not (stdin.isatty() and stdout.isatty()):
        stdout.write("\n")
    return _truthy(answer.split()[0] if answer.split() else "")


@command("wait", "SERVICE [SERVICE...] [OPTIONS]", "Block until containers of all (or "
         "specified) services stop.", nargs=(1, None))
@option("--down-project", is_flag=True, help="Drops project when the first container stops")
@pass_obj
def wait_cmd(session: Session, args: tuple[str, ...], down_project: bool) -> int:
    from ketch.compose.project import DownOptions

    project = _project_for_down(session)
    c = _compose(session, project)
    items = c.containers(args, stopped=False, oneoff=None)
    if not items:
        raise _fail(f"no containers for project {_q(project.name)}")
    codes: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def one(cid: str) -> None:
        resp = c.client.container_wait(cid, condition="not-running")
        res = c.client.wait_result(resp)
        code = int(res.get("StatusCode") or 0)
        with lock:
            sys.stdout.write(f"container {_q(cid)} exited with status code {code}\n")
            sys.stdout.flush()
            codes.append(code)
        done.set()

    threads = [threading.Thread(target=one, args=(i["Id"],), daemon=True) for i in items]
    for t in threads:
        t.start()
    if down_project:
        done.wait()
        c.down(DownOptions(remove_orphans=True))
        return codes[0]
    for t in threads:
        t.join()
    return codes[-1] if codes else 0


def _container_of(c: Compose, service: str, index: int, *, oneoff: bool | None = False,
                  stopped: bool = False) -> dict[str, Any]:
    """compose's getSpecifiedContainer: the service's container number ``index`` (the
    lowest number when 0), one-off containers last."""
    from ketch.compose import labels as L
    from ketch.compose.project import number_of

    items = [i for i in c.containers([service], stopped=stopped, oneoff=oneoff)
             if not index or number_of(i) == index]
    if not items:
        if index:
            raise _fail(f"service {_q(service)} is not running container #{index}")
        raise _fail(f"service {_q(service)} is not running")
    items.sort(key=lambda i: ((i.get("Labels") or {}).get(L.ONEOFF) == "True", number_of(i)))
    return items[0]


def resolve_env(values: Sequence[str], environment: Mapping[str, str]) -> list[str]:
    """``-e KEY`` takes KEY's value from the project's environment (the shell and the .env
    files, as compose resolves it); ``-e KEY=v`` is kept; an unknown KEY stays bare."""
    out = []
    for e in values:
        if "=" in e or e not in environment:
            out.append(e)
        else:
            out.append(f"{e}={environment[e]}")
    return out


@command("exec", "[OPTIONS] SERVICE COMMAND [ARGS...]",
         "Execute a command in a running container", nargs=(2, None), interspersed=False)
@option("-d", "--detach", is_flag=True, help="Detached mode: Run command in the background")
@option("-e", "--env", "env", multiple=True, metavar="stringArray",
        help="Set environment variables")
@option("--index", default="0", metavar="int",
        help="Index of the container if service has multiple replicas")
@option("-i", "--interactive", is_flag=True, default=True, hidden=True,
        help="Keep STDIN open even if not attached")
@option("-T", "--no-tty", "no_tty", is_flag=True,
        help="Disable pseudo-TTY allocation. By default 'docker compose exec' allocates a TTY.")
@option("--privileged", is_flag=True, help="Give extended privileges to the process")
@option("-t", "--tty", is_flag=True, default=True, hidden=True, help="Allocate a pseudo-TTY")
@option("-u", "--user", default="", help="Run the command as this user")
@option("-w", "--workdir", default="", help="Path to workdir directory for this command")
@pass_obj
def exec_cmd(session: Session, args: tuple[str, ...], detach: bool, env: tuple[str, ...],
             index: str, interactive: bool, no_tty: bool, privileged: bool, tty: bool,
             user: str, workdir: str) -> int:
    from ketch.cli.container_cmds import exec_

    n = _int(index, "--index")
    project = _project_for_down(session)
    c = _compose(session, project)
    target = _container_of(c, args[0], n, oneoff=None)
    # compose allocates a TTY when its output is a terminal (and -T says otherwise);
    # without a terminal on stdin there is nothing to give it
    use_tty = tty and not no_tty and sys.stdout.isatty() and sys.stdin.isatty()
    rv: int = exec_.callback(session, args=(target["Id"], *args[1:]), detach=detach,
                             detach_keys="", env=tuple(resolve_env(env, project.environment)),
                             env_file=(), interactive=interactive and not detach,
                             privileged=privileged, tty=use_tty, user=user, workdir=workdir)
    return rv


@command("run", "[OPTIONS] SERVICE [COMMAND] [ARGS...]", "Run a one-off command on a service",
         nargs=(1, None), interspersed=False)
@option("--build", is_flag=True, help="Build image before starting container")
@option("--cap-add", "cap_add", multiple=True, metavar="list", help="Add Linux capabilities")
@option("--cap-drop", "cap_drop", multiple=True, metavar="list",
        help="Drop Linux capabilities")
@option("-d", "--detach", is_flag=True, help="Run container in background and print "
        "container ID")
@option("--entrypoint", default=None, help="Override the entrypoint of the image")
@option("-e", "--env", "env", multiple=True, metavar="stringArray",
        help="Set environment variables")
@option("--env-from-file", "env_from_file", multiple=True, metavar="stringArray",
        help="Set environment variables from file")
@option("-i", "--interactive", is_flag=True, default=None,
        help="Keep STDIN open even if not attached (default true)")
@option("-l", "--label", "label", multiple=True, metavar="stringArray",
        help="Add or override a label")
@option("--name", default="", help="Assign a name to the container")
@option("-T", "--no-TTY", "no_tty", is_flag=True, default=None,
        help="Disable pseudo-TTY allocation (default: auto-detected)")
@option("--no-deps", is_flag=True, help="Don't start linked services")
@option("-p", "--publish", "publish", multiple=True, metavar="stringArray",
        help="Publish a container's port(s) to the host")
@option("--pull", default="policy", help='Pull image before running ("always"|"missing"|'
        '"never") (default "policy")')
@option("-q", "--quiet", is_flag=True, help="Don't print anything to STDOUT")
@option("--quiet-build", is_flag=True, help="Suppress progress output from the build process")
@option("--quiet-pull", is_flag=True, help="Pull without printing progress information")
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("--rm", is_flag=True, help="Automatically remove the container when it exits")
@option("-P", "--service-ports", "service_ports", is_flag=True,
        help="Run command with all service's ports enabled and mapped to the host")
@option("-t", "--tty", "tty_", is_flag=True, default=None, hidden=True,
        help="Allocate a pseudo-TTY")
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

    from ketch.cli.container_cmds import _start_attached
    from ketch.compose import labels as L
    from ketch.compose.project import UpOptions

    check_run_flags(f)
    labels = run_labels(f["label"])
    entrypoint = run_entrypoint(f["entrypoint"])
    tty = run_tty(f, stdin_tty=sys.stdin.isatty(), stdout_tty=sys.stdout.isatty())
    name = args[0]
    project = load_project(session, args[:1])
    svc = project.service(name)
    extra_env = resolve_env(f["env"], project.environment)
    for path in f["env_from_file"]:
        extra_env = _env_file_values(path, project.environment) + extra_env
    c = _compose(session, project, build_quiet=f["quiet_build"])
    if f["remove_orphans"]:
        for o in c.orphans():
            c._remove(o)    # noqa: SLF001 - the same removal as up/down's
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
                    pull=_pull_mode(f["pull"]),
                    quiet_pull=f["quiet_pull"])
    slug = _secrets.token_hex(32)
    cname = f["name"] or f"{project.name}-{name}-run-{slug[:12]}"
    interactive = f["interactive"] is not False and not f["detach"]

    def override(body: dict[str, Any]) -> None:
        if len(args) > 1:
            body["Cmd"] = list(args[1:])
        if entrypoint is not None:
            body["Entrypoint"] = entrypoint
            if len(args) == 1:
                body["Cmd"] = None      # as compose: a new entrypoint drops the service's command
        if f["user"]:
            body["User"] = f["user"]
        if f["workdir"]:
            body["WorkingDir"] = f["workdir"]
        if extra_env:
            keys = {e.split("=", 1)[0] for e in extra_env}
            body["Env"] = [e for e in body.get("Env") or [] if e.split("=", 1)[0] not in keys] \
                + extra_env
        body.setdefault("Labels", {}).update(labels)
        # compose numbers no one-off container (it creates them as number -1)
        body["Labels"].pop(L.NUMBER, None)
        host = body.setdefault("HostConfig", {})
        if f["cap_add"]:
            host["CapAdd"] = list(host.get("CapAdd") or []) + list(f["cap_add"])
        if f["cap_drop"]:
            host["CapDrop"] = list(host.get("CapDrop") or []) + list(f["cap_drop"])
        if not f["service_ports"]:
            host["PortBindings"] = {}
        if f["publish"]:
            from ketch.cli.run_opts import ConfigError, parse_publish

            for spec in f["publish"]:
                try:
                    triples = parse_publish(spec)
                except ConfigError as exc:
                    raise _fail(str(exc)) from None
                for cport, hip, hport in triples:
                    body.setdefault("ExposedPorts", {})[cport] = {}
                    host.setdefault("PortBindings", {}).setdefault(cport, []).append(
                        {"HostIp": hip, "HostPort": hport})
        if f["volume"]:
            host["Binds"] = list(host.get("Binds") or []) + list(f["volume"])
        host["AutoRemove"] = bool(f["rm"])
        body["Tty"] = tty
        body["OpenStdin"] = interactive
        body["StdinOnce"] = interactive
        body["AttachStdin"] = interactive
        body["AttachStdout"] = not f["detach"]
        body["AttachStderr"] = not f["detach"]
        body["Hostname"] = body.get("Hostname") or ""

    cid = c.create_container(svc, 1, name=cname, oneoff=True,
                             extra_labels={L.SLUG: slug}, override=override,
                             use_aliases=f["use_aliases"])
    body = c.client.container_inspect(cid).get("Config") or {}
    config = {"AttachStdin": bool(body.get("AttachStdin")),
              "AttachStdout": not f["detach"], "AttachStderr": not f["detach"], "Tty": tty}
    saved = sys.stdout
    if f["quiet"]:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - as compose: stdout to /dev/null
    try:
        return _start_attached(c.client, cid, config, auto_remove=bool(f["rm"]),
                               detach=f["detach"], detach_keys="", sig_proxy=True, cmd="run",
                               print_id=f["detach"])
    finally:
        if f["quiet"]:
            sys.stdout.close()
            sys.stdout = saved


def check_run_flags(f: Mapping[str, Any]) -> None:
    """``run``'s refusals, in compose's words."""
    if f.get("publish") and f.get("service_ports"):
        raise _fail("--service-ports and --publish are incompatible")
    if f.get("tty_") is not None and f.get("no_tty") is not None:
        raise _fail("--tty and --no-TTY can't be used together")
    _check_pull(f.get("pull") or "policy")


def run_tty(f: Mapping[str, Any], *, stdin_tty: bool, stdout_tty: bool) -> bool:
    """Whether ``run`` allocates a TTY: ``-t``/``-T`` when given; else compose's default
    (when the output is a terminal), off when stdin is no terminal and neither ``-T`` nor
    ``-i`` was given, since there is nothing to attach to."""
    if f.get("tty_") is not None:
        return bool(f["tty_"])
    if f.get("no_tty") is not None:
        return not f["no_tty"]
    if f.get("interactive") is None and not stdin_tty:
        return False
    return stdout_tty


def run_labels(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep:
            raise _fail("label must be set as KEY=VALUE")
        out[k] = val
    return out


def run_entrypoint(value: str | None) -> list[str] | None:
    """``--entrypoint`` split as a shell would (compose's shellwords); None when not given."""
    import shlex

    if value is None:
        return None
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise _fail(f"invalid entrypoint {_q(value)}: {exc}") from None


def _env_file_values(path: str, environment: Mapping[str, str]) -> list[str]:
    """``--env-from-file``: KEY=VALUE lines of a file read with compose's .env rules."""
    from ketch.compose.dotenv import read_dotenv

    values = read_dotenv(path, lookup=environment.get)
    return [f"{k}={v}" for k, v in values.items()]


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


def split_cp_arg(arg: str) -> tuple[str, str]:
    """compose's splitCpArg: ("service", "path") for SERVICE:PATH, ("", arg) for a local path
    (absolute, or starting with ".")."""
    if arg.startswith("/"):
        return "", arg
    service, sep, path = arg.partition(":")
    if not sep or service.startswith("."):
        return "", arg
    return service, path


@command("cp", "[OPTIONS] SERVICE:SRC_PATH DEST_PATH|-\n\tketch compose cp [OPTIONS] SRC_PATH|- "
         "SERVICE:DEST_PATH", "Copy files/folders between a service container and the local "
         "filesystem", nargs=(2, 2))
@option("--all", "all_", is_flag=True, help="Include containers created by the run command")
@option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information)")
@option("-L", "--follow-link", "follow_link", is_flag=True,
        help="Always follow symbol link in SRC_PATH")
@option("--index", default="0", metavar="int",
        help="Index of the container if service has multiple replicas")
@pass_obj
def cp_cmd(session: Session, args: tuple[str, ...], all_: bool, archive: bool,
           follow_link: bool, index: str) -> int:
    from ketch.cli.container_cmds import cp as docker_cp

    if not args[0]:
        raise _fail("source can not be empty")
    if not args[1]:
        raise _fail("destination can not be empty")
    n = _int(index, "--index")
    src_service, src_path = split_cp_arg(args[0])
    dst_service, dst_path = split_cp_arg(args[1])
    if src_service and dst_service:
        raise _fail("copying between services is not supported")
    if not src_service and not dst_service:
        raise _fail("unknown copy direction")
    service = src_service or dst_service
    project = _project_for_down(session)
    c = _compose(session, project)
    if n:
        targets = [_container_of(c, service, n, oneoff=False, stopped=True)]
    else:
        targets = c.containers([service], oneoff=None if all_ else False)
        if not targets:
            raise _fail(f"no container found for service {_q(service)}")
        if src_service:
            targets = targets[:1]     # from a service: its first container; to it: all of them
    for t in targets:
        name = _canonical(t)
        words = (f"{t['Id']}:{src_path}", dst_path) if src_service else \
            (src_path, f"{t['Id']}:{dst_path}")
        c.progress("Container", name, "Copying")
        rv: int = docker_cp.callback(session, args=words, archive=archive,
                                     follow_link=follow_link, quiet=True)
        if rv:
            return rv
        c.progress("Container", name, "Copied")
    return 0


@command("create", "[OPTIONS] [SERVICE...]", "Creates containers for a service",
         nargs=(0, None))
@option("--build", is_flag=True, help="Build images before starting containers")
@option("--force-recreate", is_flag=True,
        help="Recreate containers even if their configuration and image haven't changed")
@option("--no-build", is_flag=True, help="Don't build an image, even if it's policy")
@option("--no-recreate", is_flag=True, help="If containers already exist, don't recreate "
        "them. Incompatible with --force-recreate.")
@option("--pull", default="policy",
        help='Pull image before running ("always"|"missing"|"never"|"build") (default '
             '"policy")')
@option("--quiet-pull", is_flag=True, help="Pull without printing progress information")
@option("--remove-orphans", is_flag=True,
        help="Remove containers for services not defined in the Compose file")
@option("--scale", multiple=True, metavar="scale",
        help="Scale SERVICE to NUM instances. Overrides the `scale` setting in the Compose "
             "file if present.")
@option("-y", "--yes", is_flag=True,
        help='Assume "yes" as answer to all prompts and run non-interactively')
@pass_obj
def create_cmd(session: Session, args: tuple[str, ...], build: bool, force_recreate: bool,
               no_build: bool, no_recreate: bool, pull: str, quiet_pull: bool,
               remove_orphans: bool, scale: tuple[str, ...], yes: bool) -> int:
    from ketch.compose.project import UpOptions

    if build and no_build:
        raise _fail("--build and --no-build are incompatible")
    if force_recreate and no_recreate:
        raise _fail("--force-recreate and --no-recreate are incompatible")
    _check_pull(pull)
    scales = _scales(scale)
    project = load_project(session, args)
    c = _compose(session, project)
    c.up(UpOptions(services=list(args), build="always" if build else
                   "never" if no_build else "auto",
                   recreate="force" if force_recreate else "never" if no_recreate
                   else "diverged", scale=scales, start=False,
                   remove_orphans=remove_orphans, pull=_pull_mode(pull),
                   quiet_pull=quiet_pull))
    return 0


# --- images -----------------------------------------------------------------------------------


@command("build", "[OPTIONS] [SERVICE...]", "Build or rebuild services", nargs=(0, None))
@option("--build-arg", "build_arg", multiple=True, metavar="stringArray",
        help="Set build-time variables for services")
@option("--builder", default="", help="Set builder to use")
@option("--check", is_flag=True, help="Check build configuration")
@option("-m", "--memory", default="", metavar="bytes",
        help="Set memory limit for the build container. Not supported by BuildKit.")
@option("--no-cache", is_flag=True, help="Do not use cache when building the image")
@option("--print", "print_", is_flag=True, help="Print equivalent bake file")
@option("--provenance", default="", help="Add a provenance attestation")
@option("--pull", is_flag=True, help="Always attempt to pull a newer version of the image")
@option("--push", is_flag=True, help="Push service images")
@option("-q", "--quiet", is_flag=True, help="Suppress the build output")
@option("--sbom", default="", help="Add a SBOM attestation")
@option("--ssh", default=None, help="Set SSH authentications used when building service "
        "images. (use 'default' for using your default SSH Agent)")
@option("--with-dependencies", is_flag=True,
        help="Also build dependencies (transitively)")
@pass_obj
def build_cmd(session: Session, args: tuple[str, ...], build_arg: tuple[str, ...],
              builder: str, check: bool, memory: str, no_cache: bool, print_: bool,
              provenance: str, pull: bool, push: bool, quiet: bool, sbom: str,
              ssh: str | None, with_dependencies: bool) -> int:
    for flag, given in (("--builder", builder), ("--check", check), ("--memory", memory),
                        ("--print", print_), ("--provenance", provenance), ("--sbom", sbom),
                        ("--ssh", ssh is not None)):
        if given:
            raise _unsupported("build " + flag)
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
        if push:
            from ketch.cli import registry_client_cmds as reg

            reg.push.callback(session, args=(svc.image,), all_tags=False,
                              disable_content_trust=True, platform="", quiet=quiet)
    return 0


@command("pull", "[OPTIONS] [SERVICE...]", "Pull service images", nargs=(0, None))
@option("--ignore-buildable", is_flag=True, help="Ignore images that can be built")
@option("--ignore-pull-failures", is_flag=True,
        help="Pull what it can and ignores images with pull failures")
@option("--include-deps", is_flag=True, help="Also pull services declared as dependencies")
@option("--no-parallel", is_flag=True, default=None, hidden=True,
        help="DEPRECATED disable parallel pulling")
@option("--parallel", is_flag=True, default=None, hidden=True,
        help="DEPRECATED pull multiple images in parallel")
@option("--policy", default="", help='Apply pull policy ("missing"|"always")')
@option("-q", "--quiet", is_flag=True, help="Pull without printing progress information")
@pass_obj
def pull_cmd(session: Session, args: tuple[str, ...], ignore_buildable: bool,
             ignore_pull_failures: bool, include_deps: bool, no_parallel: bool | None,
             parallel: bool | None, policy: str, quiet: bool) -> int:
    for flag, given in (("--no-parallel", no_parallel), ("--parallel", parallel)):
        if given is not None:
            sys.stderr.write(f"option '{flag}' is DEPRECATED and will be ignored.\n")
    project = load_project(session, args)
    c = _compose(session, project)
    pulling: dict[str, str] = {}
    for svc in c.selection(args, deps=include_deps):
        skip = pull_skip(svc.spec, policy, present=lambda image: c._image_id(image) is not None,  # noqa: SLF001
                         ignore_buildable=ignore_buildable, pulling=pulling)
        if skip:
            c.progress("Service", svc.name, skip)
            continue
        pulling[svc.image] = svc.name
        try:
            c.pull_image(svc, quiet)
        except KetchError as exc:
            if not ignore_pull_failures:
                raise
            sys.stderr.write(f"WARN[0000] {svc.name}: {exc}\n")
    return 0


def pull_skip(spec: Mapping[str, Any], policy: str, *, present: Any,
              ignore_buildable: bool, pulling: Mapping[str, str]) -> str:
    """Why ``pull`` leaves a service out, in compose's words ("" to pull it): no image,
    its pull policy (--policy replaces it), buildable with --ignore-buildable, or an
    image another service pulls already."""
    image = spec.get("image")
    if not image:
        return "Skipped - No image to be pulled"
    rule = policy or str(spec.get("pull_policy") or "")
    if rule in ("never", "build"):
        return "Skipped"
    if rule in ("missing", "if_not_present") and present(image):
        return "Skipped - Image is already present locally"
    if spec.get("build") is not None and ignore_buildable:
        return "Skipped - Image can be built"
    if image in pulling:
        return f"Skipped - Image is already being pulled by {pulling[image]}"
    return ""


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


@command("version", "[OPTIONS]", "Show the Docker Compose version information")
@option("-f", "--format", "format_", default="", help="Format the output. Values: "
        "[pretty | json]. (Default: pretty)")
@option("--short", is_flag=True, help="Shows only Compose's version number")
def version_cmd(args: tuple[str, ...], format_: str, short: bool) -> int:
    sys.stdout.write(version_text(format_, short))
    return 0


def version_text(fmt: str, short: bool) -> str:
    """compose's three forms: the number alone, ``{"version":"v2.x.y"}``, or a sentence
    (ketch's, naming the compose version whose behaviour it follows)."""
    from ketch import __version__
    from ketch.compose.labels import COMPOSE_VERSION

    if short:
        return COMPOSE_VERSION + "\n"
    if fmt == "json":
        return '{"version":' + _q("v" + COMPOSE_VERSION) + "}\n"
    return f"ketch compose version v{COMPOSE_VERSION} (ketch {__version__})\n"


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


@command("watch", "[SERVICE...]", "Watch build context for service and rebuild/refresh "
         "containers when files are updated", nargs=(0, None))
@option("--no-up", is_flag=True, help="Do not build & start services before watching")
@option("--prune", is_flag=True, default=True,
        help="Prune dangling images on rebuild (default true)")
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
        raise _fail("none of the selected services is configured for watch, consider "
                    "setting a 'develop' section")
    if not no_up:
        c.up(UpOptions(services=list(args)))
    replaced: list[str] = []

    def image_id(name: str) -> str | None:
        try:
            return str(c.client.image_inspect(name).get("Id") or "") or None
        except NotFound:
            return None

    def rebuild(svc: Service) -> None:
        # images a rebuild replaced are removed once dangling and unused: the container
        # that ran one is recreated after the build, so it goes at the next rebuild or at exit
        if prune:
            prune_replaced(c.client, replaced)
        before = image_id(svc.image)
        _build(session, svc, svc.image, quiet=quiet)
        if before and before != image_id(svc.image):
            replaced.append(before)

    w = Watcher(c, services, rebuild=rebuild)
    try:
        w.run()
    except KeyboardInterrupt:
        return 130
    finally:
        if prune:
            prune_replaced(c.client, replaced)
    return 0


def prune_replaced(client: Any, ids: list[str]) -> None:
    """Remove the images in ``ids`` that have no tag left; those still used stay listed."""
    for iid in list(ids):
        try:
            if client.image_inspect(iid).get("RepoTags"):
                ids.remove(iid)
                continue
            client.image_remove(iid)
        except NotFound:
            pass
        except KetchError:
            continue        # still used by a container: later
        ids.remove(iid)


def scale_args(args: Sequence[str]) -> dict[str, int]:
    """``SERVICE=REPLICAS`` words, refused in compose's words."""
    out: dict[str, int] = {}
    for arg in args:
        key, sep, val = arg.partition("=")
        if not sep or not key or not val:
            raise _fail(f"invalid scale specifier: {arg}")
        try:
            out[key] = int(val)
        except ValueError:
            raise _fail("invalid scale specifier: can't parse replica value as int: "
                        f"{arg}") from None
    return out


@command("scale", "[SERVICE=REPLICAS...]", "Scale services ", nargs=(1, None))
@option("--no-deps", is_flag=True, help="Don't start linked services")
@pass_obj
def scale_cmd(session: Session, args: tuple[str, ...], no_deps: bool) -> int:
    from ketch.compose.project import UpOptions

    replicas = scale_args(args)
    names = sorted(replicas)
    project = load_project(session, names)
    for n in names:
        project.service(n)
    c = _compose(session, project)
    c.up(UpOptions(services=names, scale=replicas, deps=not no_deps))
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


# --- a service's container through the docker commands -----------------------------------------


@command("attach", "[OPTIONS] SERVICE", "Attach local standard input, output, and error "
         "streams to a service's running container", nargs=(1, 1))
@option("--detach-keys", default="",
        help="Override the key sequence for detaching from a container.")
@option("--index", default="0", metavar="int",
        help="index of the container if service has multiple replicas.")
@option("--no-stdin", is_flag=True, help="Do not attach STDIN")
@option("--sig-proxy", is_flag=True, default=True,
        help="Proxy all received signals to the process (default true)")
@pass_obj
def attach_cmd(session: Session, args: tuple[str, ...], detach_keys: str, index: str,
               no_stdin: bool, sig_proxy: bool) -> int:
    from ketch.cli.container_cmds import attach

    c = _compose(session, _project_for_down(session))
    target = _container_of(c, args[0], _int(index, "--index"), oneoff=None)
    rv: int = attach.callback(session, args=(str(target["Id"]),), detach_keys=detach_keys,
                              no_stdin=no_stdin, sig_proxy=sig_proxy)
    return rv


@command("commit", "[OPTIONS] SERVICE [REPOSITORY[:TAG]]",
         "Create a new image from a service container's changes", nargs=(1, 2))
@option("-a", "--author", default="",
        help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
@option("-c", "--change", "changes", multiple=True, metavar="list",
        help="Apply Dockerfile instruction to the created image")
@option("--index", default="0", metavar="int",
        help="index of the container if service has multiple replicas.")
@option("-m", "--message", default="", help="Commit message")
@option("-p", "--pause", is_flag=True, default=True,
        help="Pause container during commit (default true)")
@pass_obj
def commit_cmd(session: Session, args: tuple[str, ...], author: str, changes: tuple[str, ...],
               index: str, message: str, pause: bool) -> int:
    from ketch.cli.filesystem_cmds import commit

    c = _compose(session, _project_for_down(session))
    target = _container_of(c, args[0], _int(index, "--index"), oneoff=None)
    rv: int = commit.callback(session, args=(str(target["Id"]), *args[1:]), author=author,
                              changes=changes, message=message, pause=pause)
    return rv


@command("export", "[OPTIONS] SERVICE", "Export a service container's filesystem as a tar "
         "archive", nargs=(1, 1))
@option("--index", default="0", metavar="int",
        help="index of the container if service has multiple replicas.")
@option("-o", "--output", default="", help="Write to a file, instead of STDOUT")
@pass_obj
def export_cmd(session: Session, args: tuple[str, ...], index: str, output: str) -> int:
    from ketch.cli.filesystem_cmds import export

    c = _compose(session, _project_for_down(session))
    target = _container_of(c, args[0], _int(index, "--index"), oneoff=None)
    rv: int = export.callback(session, args=(str(target["Id"]),), output=output)
    return rv


@command("stats", "[OPTIONS] [SERVICE]", "Display a live stream of container(s) resource "
         "usage statistics", nargs=(0, 1))
@option("-a", "--all", "all_", is_flag=True,
        help="Show all containers (default shows just running)")
@option("--format", "format_", default="",
        help="Format output using a custom template: 'table' (default), 'table TEMPLATE', "
             "'json', or a Go template")
@option("--no-stream", is_flag=True,
        help="Disable streaming stats and only pull the first result")
@option("--no-trunc", is_flag=True, help="Do not truncate output")
@pass_obj
def stats_cmd(session: Session, args: tuple[str, ...], all_: bool, format_: str,
              no_stream: bool, no_trunc: bool) -> int:
    """``docker stats`` over the project's containers (of one service when named)."""
    from ketch.cli.container_cmds import STATS_HEADERS, _stats_format, stats
    from ketch.cli.formatting import render
    from ketch.compose import labels as L

    project = _project_for_down(session)
    flt = [f"{L.PROJECT}={project.name}"]
    if args:
        flt.append(f"{L.SERVICE}={args[0]}")
    ids = [str(i["Id"]) for i in session.connect().containers(all=all_,
                                                              filters={"label": flt})]
    if not ids:
        # stats of no container: the header alone
        sys.stdout.write(render(_stats_format(format_ or None), [], STATS_HEADERS))
        return 0
    rv: int = stats.callback(session, args=tuple(ids), all_=all_, format_=format_ or None,
                             no_stream=no_stream, no_trunc=no_trunc)
    return rv
