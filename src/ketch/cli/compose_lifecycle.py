"""``ketch compose up/down/create/start/stop/restart/kill/pause/unpause/rm/wait/scale``:
the lifecycle of a project's containers (``up`` with its attached output)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, Sequence

from ketch.cli.command import command, option, pass_obj
from ketch.cli.compose_cmds import (
    _canonical,
    _check_pull,
    _color,
    _compose,
    _fail,
    _int,
    _project_for_down,
    _pull_mode,
    _q,
    _timeout,
    _unsupported,
    load_project,
)
from ketch.cli.session import Session
from ketch.errors import KetchError, NotFound

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

    from ketch.compose.project import Compose


# --- up / down --------------------------------------------------------------------------------


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


def _truthy(value: str) -> bool:
    """compose's utils.StringToBool."""
    return value.strip().lower() in ("1", "t", "true", "y", "yes")


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
    c.down(DownOptions(services=list(args), volumes=volumes, rmi=rmi,
                       remove_orphans=remove_orphans, timeout=_timeout(timeout)))
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
