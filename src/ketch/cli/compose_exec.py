"""``ketch compose run/exec/cp/attach/commit/export/stats``: one service's container
through the docker commands (a one-off container for ``run``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from ketch.cli.command import command, option, pass_obj
from ketch.cli.compose_cmds import (
    _canonical,
    _check_pull,
    _compose,
    _container_of,
    _fail,
    _int,
    _project_for_down,
    _pull_mode,
    _q,
    load_project,
)
from ketch.cli.session import Session

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any


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
