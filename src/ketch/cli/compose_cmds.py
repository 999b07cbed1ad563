"""``ketch compose ...``: Docker Compose v2's commands, flags, output and exit codes.

The compose file is read by ``ketch.compose`` (loader, normalize); the work is
done by ``ketch.compose.project`` through the Engine API, so these commands run
against ketchd and dockerd alike. This module is the ``compose`` group (its
global flags, which module holds each command), the loading of the project, and
the helpers several commands share; the commands themselves live in
``compose_lifecycle`` (up, down, start, ...), ``compose_views`` (ps, logs,
config, ...), ``compose_exec`` (run, exec, cp, ...) and ``compose_build`` (build,
pull, push, watch), each imported only when its command runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from ketch.cli.command import Group, UsageFailure, command, option
from ketch.cli.flags import LIST, VALUE, Option
from ketch.cli.session import Session, local
from ketch.errors import InvalidArgument, KetchError

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

    from ketch.compose.model import Project, Service
    from ketch.compose.project import Compose

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)


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


# each command's module: the group loads only the one a command line names
COMMANDS = {
    "compose_cmds": ("version",),
    "compose_lifecycle": ("create", "down", "kill", "pause", "restart", "rm", "scale", "start",
                          "stop", "unpause", "up", "wait"),
    "compose_views": ("config", "events", "images", "logs", "ls", "port", "ps", "top",
                      "volumes"),
    "compose_exec": ("attach", "commit", "cp", "exec", "export", "run", "stats"),
    "compose_build": ("build", "pull", "push", "watch"),
}

compose = ComposeGroup("compose", help="Define and run multi-container applications",
                       usage="[OPTIONS] COMMAND", options=GLOBAL_OPTIONS,
                       lazy={c: f"ketch.cli.{m}:{c}_cmd" for m, cs in COMMANDS.items()
                             for c in cs})


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
        from ketch.cli.compose_build import _build

        _build(session, project, svc, image, no_cache=no_cache, pull=pull,
               quiet=build_quiet)

    def puller(image: str, quiet: bool) -> None:
        from ketch.cli.compose_build import _pull

        _pull(session, image, quiet=quiet)

    return Compose(client, project, progress, builder=builder, puller=puller,
                   workers=int(_opts(session)["parallel"]))


# --- flags, errors and containers shared by the commands -------------------------------------


def _int(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageFailure(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseInt: '
                           f'parsing "{value}": invalid syntax') from None


def _timeout(value: str | None) -> int | None:
    return None if value in (None, "") else _int(str(value), "-t, --timeout")


def _pull_mode(value: str) -> str:
    """A --pull value as UpOptions takes it ("" for the services' own pull_policy)."""
    return {"policy": "", "if_not_present": "missing"}.get(value, value)


def _check_pull(value: str) -> None:
    if value not in ("policy", "always", "never", "build", "missing", "if_not_present"):
        raise _fail(f"invalid --pull option {_q(value)}")


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


def _canonical(c: Mapping[str, Any]) -> str:
    names = [str(n) for n in c.get("Names") or []]
    return next((n[1:] for n in names if n.count("/") == 1), names[0][1:] if names else "")


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


# --- version (the group's own -v/--version prints it too) -------------------------------------


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
