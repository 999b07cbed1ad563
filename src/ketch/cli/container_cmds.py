"""Container commands: ``run``, ``create``, ``start``, ``ps``, ``logs``, ``exec``, ... and
``ketch container <name>`` for each.

Each is docker 28's command: its flags, output, messages and exit codes. The
flags of ``run``/``create`` become the create body in ``run_opts``; the
streams of ``run``, ``start -a``, ``attach`` and ``exec`` are carried by
``attach``. The order of requests is docker's: create, attach, wait, start —
so no output is lost and the exit code is known even with ``--rm``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from ketch.cli import run_opts
from ketch.cli.command import (
    Command,
    Group,
    UsageFailure,
    command,
    filter_option,
    format_option,
    option,
    pass_obj,
    prune_filter_option,
)
from ketch.cli.session import Session, error_text, local, parse_filters
from ketch.errors import (
    InvalidArgument,
    KetchError,
    NotFound,
    NotSupported,
)

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any


def _status(exc: KetchError, code: int) -> KetchError:
    exc.exit_code = code  # type: ignore[attr-defined]
    return exc


def _cli_failure(cmd: str, message: str, code: int = 125) -> KetchError:
    """docker's StatusError for run/create: "ketch: <message>" and a --help hint."""
    return _status(local(InvalidArgument(
        f"ketch: {message}\n\nRun 'ketch {cmd} --help' for more information")), code)


PARALLEL = 50   # docker's parallelOperation runs at most 50 requests at once


def _in_parallel(names: Sequence[str], fn: Callable[[str], Any]
                 ) -> Iterator[tuple[str, KetchError | None]]:
    """docker's parallelOperation (stop, kill, rm, pause, unpause): the requests run at
    once, up to PARALLEL, and the results come back in the order the names were given."""
    if len(names) == 1:
        try:
            fn(names[0])
        except KetchError as exc:
            yield names[0], exc
        else:
            yield names[0], None
        return
    results: list[BaseException | None] = [None] * len(names)
    done = [threading.Event() for _ in names]
    slots = threading.BoundedSemaphore(PARALLEL)

    def work(i: int) -> None:
        try:
            fn(names[i])
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
            results[i] = exc
        finally:
            slots.release()
            done[i].set()

    def feed() -> None:
        for i in range(len(names)):
            slots.acquire()
            threading.Thread(target=work, args=(i,), daemon=True).start()

    threading.Thread(target=feed, daemon=True).start()
    for i, name in enumerate(names):
        done[i].wait()
        failure = results[i]
        if failure is not None and not isinstance(failure, KetchError):
            raise failure
        yield name, failure


def _each(session: Session, names: Sequence[str], fn: Callable[[str], Any],
          echo: bool = True, parallel: bool = True,
          forgiven: Callable[[KetchError], bool] = lambda exc: False) -> int:
    """Act on every name; print it on success, and the daemon's errors after all of them;
    exit 1 if any failed (docker's stop/kill/rm/pause/... loops; restart and update go
    one at a time, as docker's do). A ``forgiven`` error is printed at once and is not
    a failure."""
    errors: list[str] = []
    results: Iterable[tuple[str, KetchError | None]] = (
        _in_parallel(names, fn) if parallel else ((n, _attempt(fn, n)) for n in names))
    for name, exc in results:
        if exc is not None and forgiven(exc):
            sys.stderr.write(error_text(exc) + "\n")
        elif exc is not None:
            errors.append(error_text(exc))
        elif echo:
            sys.stdout.write(name + "\n")
            sys.stdout.flush()
    for text in errors:
        sys.stderr.write(text + "\n")
    return 1 if errors else 0


def _attempt(fn: Callable[[str], Any], name: str) -> KetchError | None:
    try:
        fn(name)
    except KetchError as exc:
        return exc
    return None


# --- run, create ----------------------------------------------------------------------------


def _run_command(name: str, usage: str, help: str, flags: Sequence[run_opts.Flag]
                 ) -> Callable[[Callable[..., Any]], Command]:
    # `-h` is --hostname, and the words after the image belong to the container.
    return command(name, usage, help, nargs=(1, None), options=run_opts.options(flags),
                   interspersed=False, help_short=False)


def _prepare(session: Session, cmd: str, params: dict[str, Any],
             args: tuple[str, ...]) -> tuple[Any, run_opts.CreateRequest]:
    client = session.connect()
    console = (0, 0)
    if params.get("tty") and sys.stdout.isatty():
        from ketch.cli.attach import terminal_size

        console = terminal_size(sys.stdout.fileno()) or (0, 0)
    try:
        req = run_opts.build(params, args[0], args[1:],
                             api_version=client.negotiate(), console_size=console)
    except run_opts.FlagValueError as exc:
        raise UsageFailure(str(exc), 125) from None
    except run_opts.ConfigError as exc:
        raise _cli_failure(cmd, str(exc)) from None
    except run_opts.VersionError as exc:
        raise _status(local(exc), 1) from None
    return client, req


def _familiar(image: str) -> str:
    from ketch.image.reference import normalize

    try:
        ref = normalize(image)
    except KetchError:
        return image
    return ref.familiar()


def _pull_for_create(session: Session, image: str, platform: str, quiet: bool) -> None:
    """docker's pullImage for run/create: the progress on stderr (stdout is for the ID)."""
    from ketch.cli.registry_client_cmds import pull_image
    from ketch.image.reference import normalize

    try:
        ref = normalize(image)
    except KetchError as exc:
        raise local(exc) from None
    pull_image(session, ref, platform=platform, quiet=quiet, out=sys.stderr)


def _create(client: Any, req: run_opts.CreateRequest, session: Session,
            quiet: bool = False) -> str:
    """docker's createContainer: cidfile, the pull policy, Warnings on stderr; the ID.
    Failures are plain errors: ``create`` prints them (exit 1), ``run`` wraps them (125)."""
    cid_file = None
    if req.cidfile:
        if os.path.exists(req.cidfile):
            raise local(InvalidArgument(f"container ID file found, make sure the other "
                                        f"container isn't running or delete {req.cidfile}"))
        try:
            cid_file = open(req.cidfile, "w")  # noqa: SIM115 - written below, removed on failure
        except OSError as exc:
            raise local(InvalidArgument(f"failed to create the container ID file: open "
                                        f"{req.cidfile}: {(exc.strerror or '').lower()}")) \
                from exc
    ok = False
    try:
        image = req.body["Image"]
        if req.pull == "always":
            _pull_for_create(session, image, req.platform, quiet)
        try:
            resp = client.container_create(req.body, name=req.name, platform=req.platform)
        except NotFound as exc:
            # docker pulls on a missing image (or none for --platform), then creates again;
            # another "not found" (an endpoint an older daemon lacks) is passed on as it is.
            if req.pull != "missing" or "image" not in str(exc).lower() or \
                    "does not match the specified platform" in str(exc):
                raise       # the daemon's own words say it better than a pull would
            if not quiet:
                sys.stderr.write(f"Unable to find image '{_familiar(image)}' locally\n")
            _pull_for_create(session, image, req.platform, quiet)
            resp = client.container_create(req.body, name=req.name, platform=req.platform)
        for w in resp.get("Warnings") or []:
            sys.stderr.write(f"WARNING: {w}\n")
        cid = str(resp["Id"])
        if cid_file is not None:
            cid_file.write(cid)
        ok = True
        return cid
    finally:
        if cid_file is not None:
            cid_file.close()
            if not ok:
                try:
                    os.unlink(req.cidfile)
                except OSError:
                    pass


def _start_error(exc: KetchError, cmd: str = "run") -> KetchError:
    """docker's toStatusError: 127 "not found", 126 "cannot execute", else 125."""
    msg = str(exc)
    code = 125
    if ("executable file not found" in msg or "no such file or directory" in msg
            or "system cannot find the file specified" in msg):
        code = 127
    elif "permission denied" in msg or "is a directory" in msg:
        code = 126
    return _cli_failure(cmd, error_text(exc), code)


@_run_command("create", "[OPTIONS] IMAGE [COMMAND] [ARG...]", "Create a new container",
              run_opts.CONTAINER_FLAGS + run_opts.CREATE_FLAGS)
@pass_obj
def create(session: Session, args: tuple[str, ...], **params: Any) -> int:
    client, req = _prepare(session, "create", params, args)
    try:
        cid = _create(client, req, session, bool(params.get("quiet")))
    except KetchError as exc:
        if getattr(exc, "exit_code", None) == 125:
            raise
        raise _status(exc, 1) from None
    sys.stdout.write(cid + "\n")
    return 0


@_run_command("run", "[OPTIONS] IMAGE [COMMAND] [ARG...]",
              "Create and run a new container from an image",
              run_opts.CONTAINER_FLAGS + run_opts.RUN_FLAGS)
@pass_obj
def run(session: Session, args: tuple[str, ...], **params: Any) -> int:
    client, req = _prepare(session, "run", params, args)
    body = req.body
    tty = bool(body["Tty"])
    if not req.detach and body["AttachStdin"] and tty and not sys.stdin.isatty():
        raise _status(local(InvalidArgument("the input device is not a TTY")), 1)
    try:
        cid = _create(client, req, session, bool(params.get("quiet")))
    except KetchError as exc:
        if getattr(exc, "exit_code", None) in (125, 126, 127):
            raise
        raise _cli_failure("run", error_text(exc)) from None
    return _start_attached(client, cid, body, auto_remove=req.auto_remove,
                           detach=req.detach, detach_keys=req.detach_keys,
                           sig_proxy=req.sig_proxy, cmd="run", print_id=True)


def _start_attached(client: Any, cid: str, config: dict[str, Any], *, auto_remove: bool,
                    detach: bool, detach_keys: str, sig_proxy: bool, cmd: str,
                    print_id: bool) -> int:
    """Attach (unless detached), register the wait, start, stream; the exit code."""
    stdin, stdout, stderr = (bool(config.get("AttachStdin")), bool(config.get("AttachStdout")),
                             bool(config.get("AttachStderr")))
    attached = not detach and (stdin or stdout or stderr)
    tty = bool(config.get("Tty"))
    conn = None
    if attached:
        from ketch.cli import attach as att  # not for `run -d`: it costs start-up

        keys = att.detach_key_bytes(detach_keys) if detach_keys else att.DEFAULT_DETACH_KEYS
        conn = client.container_attach(cid, stdin=stdin, stdout=stdout, stderr=stderr,
                                       stream=True, detach_keys=detach_keys)
    waiter = None
    if attached or auto_remove:
        waiter = client.container_wait(cid, condition="removed" if auto_remove
                                       else "next-exit")
    try:
        try:
            client.container_start(cid)
        except KetchError as exc:
            if waiter is not None and auto_remove:
                # The daemon removes it (AutoRemove): let that finish first, as docker does.
                try:
                    client.wait_result(waiter)
                except KetchError:
                    pass
                waiter = None
            raise _start_error(exc, cmd) from None
        if not attached:
            if print_id:
                sys.stdout.write(cid + "\n")
            return 0
        assert conn is not None

        def resize(h: int, w: int) -> None:
            client.container_resize(cid, h, w)

        streams = att.stdio_streams(stdin, stdout, stderr, tty)
        session = att.Session(conn.sock, conn.first, tty, streams, keys, resize=resize)

        def kill(sig: str) -> None:
            client.container_kill(cid, signal=sig)

        if sig_proxy and not tty:
            with att.proxy_signals(kill):
                ended = session.run()
        else:
            ended = session.run()
        conn.close()
        if not ended:
            return 0  # detached with the keys: the container goes on, as docker's run
        assert waiter is not None
        result = _wait_code(client, waiter)
        waiter = None
        return result
    finally:
        if conn is not None:
            conn.close()
        if waiter is not None:
            waiter.close()


def _wait_code(client: Any, waiter: Any) -> int:
    res = client.wait_result(waiter)
    err = (res.get("Error") or {}).get("Message") if isinstance(res.get("Error"), dict) else None
    if err:
        sys.stderr.write(f"{err}\n")
        return 125
    return int(res.get("StatusCode") or 0)


# --- start, stop, restart, kill, rm, pause, unpause, rename, wait ----------------------------


@command("start", "[OPTIONS] CONTAINER [CONTAINER...]", "Start one or more stopped containers",
         nargs=(1, None), aliases=("ketch container start", "ketch start"))
@option("-a", "--attach", "attach_", is_flag=True,
        help="Attach STDOUT/STDERR and forward signals")
@option("--detach-keys", metavar="string", default="",
        help="Override the key sequence for detaching a container")
@option("-i", "--interactive", is_flag=True, help="Attach container's STDIN")
@pass_obj
def start(session: Session, args: tuple[str, ...], attach_: bool, detach_keys: str,
          interactive: bool) -> int:
    client = session.connect()
    if attach_ or interactive:
        if len(args) > 1:
            raise local(InvalidArgument("you cannot start and attach multiple containers "
                                        "at once"))
        info = client.container_inspect(args[0])
        cfg = dict(info.get("Config") or {})
        cfg["AttachStdin"] = interactive and bool(cfg.get("OpenStdin"))
        cfg["AttachStdout"] = cfg["AttachStderr"] = attach_
        if cfg["AttachStdin"] and cfg.get("Tty") and not sys.stdin.isatty():
            raise _status(local(InvalidArgument("the input device is not a TTY")), 1)
        try:
            return _start_attached(client, info["Id"], cfg,
                                   auto_remove=bool((info.get("HostConfig") or {})
                                                    .get("AutoRemove")),
                                   detach=False, detach_keys=detach_keys, sig_proxy=True,
                                   cmd="start", print_id=False)
        except KetchError as exc:
            if getattr(exc, "exit_code", None) in (125, 126, 127):
                # `start -a` prints the daemon's words without run's help hint.
                raise _status(local(InvalidArgument(error_text(exc.__cause__)
                                                    if isinstance(exc.__cause__, KetchError)
                                                    else str(exc))), 1) from None
            raise
    failed: list[str] = []
    for name in args:
        try:
            client.container_start(name, detach_keys=detach_keys)
        except KetchError as exc:
            sys.stderr.write(error_text(exc) + "\n")
            failed.append(name)
            continue
        sys.stdout.write(name + "\n")
    if failed:
        sys.stderr.write(f"Error: failed to start containers: {', '.join(failed)}\n")
        return 1
    return 0


def _timeout_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = option("-t", "--timeout", "timeout", metavar="int", default=None,
                help="Seconds to wait before killing the container")(fn)
    return option("-s", "--signal", "signal_", metavar="string", default="",
                        help="Signal to send to the container")(fn)


def _timeout(value: str | None, flag: str = "-t, --timeout") -> int | None:
    if value is None:
        return None
    try:
        return run_opts.parse_int(value)
    except ValueError as exc:
        raise UsageFailure(str(run_opts.FlagValueError(flag, value, str(exc)))) from None


@command("stop", "[OPTIONS] CONTAINER [CONTAINER...]", "Stop one or more running containers",
         nargs=(1, None), aliases=("ketch container stop", "ketch stop"))
@_timeout_option
@pass_obj
def stop(session: Session, args: tuple[str, ...], timeout: str | None, signal_: str) -> int:
    t = _timeout(timeout)
    client = session.connect()
    return _each(session, args, lambda n: client.container_stop(n, timeout=t, signal=signal_))


@command("restart", "[OPTIONS] CONTAINER [CONTAINER...]", "Restart one or more containers",
         nargs=(1, None), aliases=("ketch container restart", "ketch restart"))
@_timeout_option
@pass_obj
def restart(session: Session, args: tuple[str, ...], timeout: str | None, signal_: str) -> int:
    t = _timeout(timeout)
    client = session.connect()
    return _each(session, args,
                 lambda n: client.container_restart(n, timeout=t, signal=signal_),
                 parallel=False)


@command("kill", "[OPTIONS] CONTAINER [CONTAINER...]", "Kill one or more running containers",
         nargs=(1, None), aliases=("ketch container kill", "ketch kill"))
@option("-s", "--signal", "signal_", metavar="string", default="",
        help="Signal to send to the container")
@pass_obj
def kill(session: Session, args: tuple[str, ...], signal_: str) -> int:
    client = session.connect()
    return _each(session, args, lambda n: client.container_kill(n, signal=signal_))


@command("rm", "[OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers",
         nargs=(1, None), aliases=("ketch container rm", "ketch container remove", "ketch rm"))
@option("-f", "--force", is_flag=True,
        help="Force the removal of a running container (uses SIGKILL)")
@option("-l", "--link", is_flag=True, help="Remove the specified link")
@option("-v", "--volumes", is_flag=True,
        help="Remove anonymous volumes associated with the container")
@pass_obj
def rm(session: Session, args: tuple[str, ...], force: bool, link: bool, volumes: bool) -> int:
    client = session.connect()

    def one(name: str) -> None:
        if not name.strip("/"):
            raise local(InvalidArgument("container name cannot be empty"))
        client.container_remove(name.strip("/"), force=force, volumes=volumes, link=link)

    # `rm -f` of a missing container says so at once, and is not a failure.
    return _each(session, args, one, forgiven=lambda exc: force and isinstance(exc, NotFound))


@command("pause", "CONTAINER [CONTAINER...]", "Pause all processes within one or more containers",
         nargs=(1, None), aliases=("ketch container pause", "ketch pause"))
@pass_obj
def pause(session: Session, args: tuple[str, ...]) -> int:
    client = session.connect()
    return _each(session, args, client.container_pause)


@command("unpause", "CONTAINER [CONTAINER...]",
         "Unpause all processes within one or more containers",
         nargs=(1, None), aliases=("ketch container unpause", "ketch unpause"))
@pass_obj
def unpause(session: Session, args: tuple[str, ...]) -> int:
    client = session.connect()
    return _each(session, args, client.container_unpause)


@command("rename", "CONTAINER NEW_NAME", "Rename a container", nargs=(2, 2),
         aliases=("ketch container rename", "ketch rename"))
@pass_obj
def rename(session: Session, args: tuple[str, ...]) -> int:
    old, new = args[0].strip(), args[1].strip()
    if not old or not new:
        raise local(InvalidArgument("Error: Neither old nor new names may be empty"))
    session.connect().container_rename(old, new)
    return 0


@command("wait", "CONTAINER [CONTAINER...]",
         "Block until one or more containers stop, then print their exit codes",
         nargs=(1, None), aliases=("ketch container wait", "ketch wait"))
@pass_obj
def wait(session: Session, args: tuple[str, ...]) -> int:
    client = session.connect()
    failed = False
    for name in args:
        try:
            res = client.wait_result(client.container_wait(name))
        except KetchError as exc:
            sys.stderr.write(error_text(exc) + "\n")
            failed = True
            continue
        if isinstance(res.get("Error"), dict) and res["Error"].get("Message"):
            sys.stderr.write(f"Error response from daemon: {res['Error']['Message']}\n")
            failed = True
            continue
        sys.stdout.write(f"{int(res.get('StatusCode') or 0)}\n")
        sys.stdout.flush()
    return 1 if failed else 0


# --- ps ---------------------------------------------------------------------------------------


@command("ps", "[OPTIONS]", "List containers",
         aliases=("ketch container ls", "ketch container list", "ketch container ps",
                  "ketch ps"))
@option("-a", "--all", "all_", is_flag=True,
        help="Show all containers (default shows just running)")
@filter_option
@format_option
@option("-n", "--last", metavar="int", default="-1",
        help="Show n last created containers (includes all states) (default -1)")
@option("-l", "--latest", is_flag=True,
        help="Show the latest created container (includes all states)")
@option("--no-trunc", is_flag=True, help="Don't truncate output")
@option("-q", "--quiet", is_flag=True, help="Only display container IDs")
@option("-s", "--size", is_flag=True, help="Display total file sizes")
@pass_obj
def ps(session: Session, args: tuple[str, ...], all_: bool, filters: tuple[str, ...],
       format_: str | None, last: str, latest: bool, no_trunc: bool, quiet: bool,
       size: bool) -> int:
    from ketch.cli import views

    try:
        n = run_opts.parse_int(last)
    except ValueError as exc:
        raise UsageFailure(str(run_opts.FlagValueError("-n, --last", last, str(exc)))) \
            from None
    if latest and n == -1:
        n = 1
    want_size = size or (not quiet and views.ps_needs_size(format_))
    items = session.connect().containers(all=all_ or n > 0, limit=n if n > 0 else None,
                                         size=want_size, filters=parse_filters(filters))
    sys.stdout.write(views.containers_output(items, format_, quiet=quiet,
                                             size=size and not format_,
                                             no_trunc=no_trunc))
    return 0


# --- logs ---------------------------------------------------------------------------------------


def go_timestamp(value: str, now: float | None = None) -> str:
    """docker's timetypes.GetTimestamp: "10m" (ago), unix seconds, or an RFC 3339 date ->
    the ``seconds[.nanos]`` the API takes."""
    import datetime as dt

    if not value:
        return ""
    now = time.time() if now is None else now
    if value != "0":
        try:
            # A duration: that long ago, in whole seconds as docker sends it.
            return str(int(now - run_opts.parse_duration(value) / 1e9))
        except ValueError:
            pass
    if value.replace(".", "", 1).isdigit():
        return value
    text = value.replace("Z", "+00:00")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f",
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H",
                "%Y-%m-%d"):
        try:
            t0 = dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        if t0.tzinfo is None:
            t0 = t0.astimezone()
        ts = t0.timestamp()
        return f"{int(ts)}.{t0.microsecond * 1000:09d}"
    raise local(InvalidArgument(f'failed to parse value as time or duration: "{value}"'))


def _copy_stream(resp: Any, tty: bool) -> None:
    from ketch.cli.attach import Demuxer

    demux = None if tty else Demuxer()
    out, err = sys.stdout.fileno(), sys.stderr.fileno()
    sys.stdout.flush()
    while True:
        data = resp.read(65536)
        if not data:
            break
        if demux is None:
            os.write(out, data)
            continue
        for stream, chunk in demux.feed(data):
            fd = err if stream in (2, 3) else out
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]


@command("logs", "[OPTIONS] CONTAINER", "Fetch the logs of a container", nargs=(1, 1),
         aliases=("ketch container logs", "ketch logs"))
@option("--details", is_flag=True, help="Show extra details provided to logs")
@option("-f", "--follow", is_flag=True, help="Follow log output")
@option("--since", metavar="string", default="",
        help='Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative '
             '(e.g. "42m" for 42 minutes)')
@option("-n", "--tail", metavar="string", default="all",
        help='Number of lines to show from the end of the logs (default "all")')
@option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@option("--until", metavar="string", default="",
        help='Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative '
             '(e.g. "42m" for 42 minutes)')
@pass_obj
def logs(session: Session, args: tuple[str, ...], details: bool, follow: bool, since: str,
         tail: str, timestamps: bool, until: str) -> int:
    client = session.connect()
    info = client.container_inspect(args[0])
    tty = bool((info.get("Config") or {}).get("Tty"))
    resp = client.container_logs(args[0], follow=follow, since=go_timestamp(since),
                                 until=go_timestamp(until), timestamps=timestamps,
                                 tail=tail, details=details)
    try:
        _copy_stream(resp, tty)
    finally:
        resp.close()
    return 0


# --- exec, attach -------------------------------------------------------------------------------


@command("exec", "[OPTIONS] CONTAINER COMMAND [ARG...]",
         "Execute a command in a running container", nargs=(2, None),
         aliases=("ketch container exec", "ketch exec"), interspersed=False)
@option("-d", "--detach", is_flag=True, help="Detached mode: run command in the background")
@option("--detach-keys", metavar="string", default="",
        help="Override the key sequence for detaching a container")
@option("-e", "--env", "env", metavar="list", multiple=True,
        help="Set environment variables")
@option("--env-file", metavar="list", multiple=True,
        help="Read in a file of environment variables")
@option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached")
@option("--privileged", is_flag=True, help="Give extended privileges to the command")
@option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY")
@option("-u", "--user", metavar="string", default="",
        help="Username or UID (format: \"<name|uid>[:<group|gid>]\")")
@option("-w", "--workdir", metavar="string", default="",
        help="Working directory inside the container")
@pass_obj
def exec_(session: Session, args: tuple[str, ...], detach: bool, detach_keys: str,
          env: tuple[str, ...], env_file: tuple[str, ...], interactive: bool, privileged: bool,
          tty: bool, user: str, workdir: str) -> int:
    from ketch.cli import attach as att

    environ = os.environ
    lines: list[str] = []
    try:
        for path in env_file:
            lines += run_opts.read_kv_file(path, True, environ)
    except run_opts.ConfigError as exc:
        raise _status(local(InvalidArgument(str(exc))), 1) from None
    lines += [run_opts._env_lookup(e, environ) for e in env]  # noqa: SLF001 - shared rule
    if detach_keys:
        try:
            att.detach_key_bytes(detach_keys)
        except KetchError as exc:
            raise _status(local(exc), 1) from None
    if interactive and tty and not detach and not sys.stdin.isatty():
        raise _status(local(InvalidArgument("the input device is not a TTY")), 1)
    client = session.connect()
    container = args[0]
    # docker checks the container first: a clear "No such container" before anything else.
    client.container_inspect(container)
    console = None
    if tty and sys.stdout.isatty():
        console = att.terminal_size(sys.stdout.fileno())
    body: dict[str, Any] = {
        "User": user, "Privileged": privileged, "Tty": tty,
        "AttachStdin": interactive and not detach, "AttachStderr": not detach,
        "AttachStdout": not detach, "Detach": detach, "DetachKeys": detach_keys,
        "Env": lines or None, "WorkingDir": workdir, "Cmd": list(args[1:]),
    }
    if console:
        body["ConsoleSize"] = list(console)
    exec_id = str(client.exec_create(container, body)["Id"])
    if detach:
        client.exec_start(exec_id, detach=True, tty=tty, console_size=console)
        return 0
    conn = client.exec_start(exec_id, tty=tty, console_size=console)
    assert conn is not None
    keys = att.detach_key_bytes(detach_keys) if detach_keys else att.DEFAULT_DETACH_KEYS
    streams = att.stdio_streams(interactive, True, True, tty)

    def resize(h: int, w: int) -> None:
        client.exec_resize(exec_id, h, w)

    try:
        ended = att.Session(conn.sock, conn.first, tty, streams, keys, resize=resize).run()
    finally:
        conn.close()
    if not ended:
        return 0
    # The exit code is known once the exec's process is gone; the stream ends just before.
    for _ in range(200):
        info = client.exec_inspect(exec_id)
        if not info.get("Running"):
            return int(info.get("ExitCode") or 0)
        time.sleep(0.01)
    return int(client.exec_inspect(exec_id).get("ExitCode") or 0)


@command("attach", "[OPTIONS] CONTAINER",
         "Attach local standard input, output, and error streams to a running container",
         nargs=(1, 1), aliases=("ketch container attach", "ketch attach"))
@option("--detach-keys", metavar="string", default="",
        help="Override the key sequence for detaching a container")
@option("--no-stdin", is_flag=True, help="Do not attach STDIN")
@option("--sig-proxy", is_flag=True, default=True, metavar="",
        help="Proxy all received signals to the process (default true)")
@pass_obj
def attach(session: Session, args: tuple[str, ...], detach_keys: str, no_stdin: bool,
           sig_proxy: bool) -> int:
    from ketch.cli import attach as att

    client = session.connect()
    info = client.container_inspect(args[0])
    state = info.get("State") or {}
    if not state.get("Running"):
        raise _status(local(InvalidArgument(
            "You cannot attach to a stopped container, start it first")), 1)
    if state.get("Paused"):
        raise _status(local(InvalidArgument(
            "You cannot attach to a paused container, unpause it first")), 1)
    if state.get("Restarting"):
        raise _status(local(InvalidArgument(
            "You cannot attach to a restarting container, wait until it is running")), 1)
    cfg = info.get("Config") or {}
    tty = bool(cfg.get("Tty"))
    stdin = bool(cfg.get("OpenStdin")) and not no_stdin
    if stdin and tty and not sys.stdin.isatty():
        raise _status(local(InvalidArgument("the input device is not a TTY")), 1)
    cid = str(info["Id"])
    conn = client.container_attach(cid, stdin=stdin, stdout=True, stderr=True,
                                   detach_keys=detach_keys)
    waiter = client.container_wait(cid)
    keys = att.detach_key_bytes(detach_keys) if detach_keys else att.DEFAULT_DETACH_KEYS
    streams = att.stdio_streams(stdin, True, True, tty)

    def resize(h: int, w: int) -> None:
        client.container_resize(cid, h, w)

    def forward(sig: str) -> None:
        client.container_kill(cid, signal=sig)

    try:
        s = att.Session(conn.sock, conn.first, tty, streams, keys, resize=resize)
        if sig_proxy and not tty:
            with att.proxy_signals(forward):
                ended = s.run()
        else:
            ended = s.run()
        conn.close()
        if not ended:
            return 0
        return _wait_code(client, waiter)
    finally:
        conn.close()
        waiter.close()


# --- inspect ----------------------------------------------------------------------------------


def _inspect(session: Session, names: Sequence[str], format_: str | None, size: bool,
             kinds: Sequence[str], generic: bool) -> int:
    from ketch.cli.formatting import check_inspect_format, inspect_format

    check_inspect_format(format_)
    client = session.connect()
    found: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in names:
        obj = None
        last: KetchError | None = None
        for kind in kinds:
            try:
                if kind == "container":
                    obj = client.container_inspect(name, size=size)
                elif kind == "image":
                    obj = client.image_inspect(name)
                else:
                    raise NotSupported(f"inspecting {kind} objects is not supported yet")
                break
            except NotFound as exc:
                last = exc
                continue
            except KetchError as exc:
                last = exc
                if not generic:
                    break
                continue
        if obj is not None:
            found.append(obj)
        elif generic and (last is None or isinstance(last, NotFound)):
            errors.append(f"Error: No such object: {name}")
        else:
            assert last is not None
            errors.append(error_text(last))
    text, failed = inspect_format(format_, found)
    sys.stdout.write(text)
    errors = failed + errors
    if errors:
        sys.stderr.write("\n".join(errors) + "\n")
        return 1
    return 0


@command("inspect", "[OPTIONS] CONTAINER [CONTAINER...]",
         "Display detailed information on one or more containers", nargs=(1, None))
@option("-f", "--format", "format_", metavar="string",
        help="Format output using a custom template: 'json', or a Go template")
@option("-s", "--size", is_flag=True, help="Display total file sizes")
@pass_obj
def inspect(session: Session, args: tuple[str, ...], format_: str | None, size: bool) -> int:
    return _inspect(session, args, format_, size, ("container",), generic=False)


@command("inspect", "[OPTIONS] NAME|ID [NAME|ID...]",
         "Return low-level information on ketch objects", nargs=(1, None))
@option("-f", "--format", "format_", metavar="string",
        help="Format output using a custom template: 'json', or a Go template")
@option("-s", "--size", is_flag=True, help="Display total file sizes if the type is "
                                           "container")
@option("--type", "type_", metavar="string", default="",
        help="Only inspect objects of the given type")
@pass_obj
def inspect_any(session: Session, args: tuple[str, ...], format_: str | None, size: bool,
                type_: str) -> int:
    """docker inspect: a container first, then an image, of that name."""
    if type_ and type_ not in ("image", "container", "network", "volume", "node", "service",
                               "task", "secret", "config", "plugin"):
        raise local(InvalidArgument(f'"{type_}" is not a valid value for --type'))
    kinds = (type_,) if type_ else ("container", "image")
    return _inspect(session, args, format_, size, kinds, generic=True)


# --- top, port -----------------------------------------------------------------------------


@command("top", "CONTAINER [ps OPTIONS]", "Display the running processes of a container",
         nargs=(1, None), aliases=("ketch container top", "ketch top"), interspersed=False)
@pass_obj
def top(session: Session, args: tuple[str, ...]) -> int:
    from ketch.cli.formatting import tabwrite

    procs = session.connect().container_top(args[0], " ".join(args[1:]))
    lines = ["\t".join(procs.get("Titles") or [])]
    lines += ["\t".join(p) for p in procs.get("Processes") or []]
    sys.stdout.write(tabwrite("".join(line + "\n" for line in lines), minwidth=20))
    return 0


@command("port", "CONTAINER [PRIVATE_PORT[/PROTO]]",
         "List port mappings or a specific mapping for the container", nargs=(1, 2),
         aliases=("ketch container port", "ketch port"))
@pass_obj
def port(session: Session, args: tuple[str, ...]) -> int:
    info = session.connect().container_inspect(args[0])
    ports: dict[str, Any] = ((info.get("NetworkSettings") or {}).get("Ports") or {})

    def host(b: dict[str, str]) -> str:
        ip = b.get("HostIp") or ""
        return f"[{ip}]:{b.get('HostPort')}" if ":" in ip else f"{ip}:{b.get('HostPort')}"

    if len(args) == 2:
        want = args[1] if "/" in args[1] else args[1] + "/tcp"
        num, _, proto = want.partition("/")
        if not num.isdigit():
            raise local(InvalidArgument(f"Error: invalid port ({num}): strconv.ParseUint: "
                                        f'parsing "{num}": invalid syntax'))
        binds = ports.get(want)
        if binds:
            for b in binds:
                sys.stdout.write(host(b) + "\n")
            return 0
        raise local(InvalidArgument(f"Error: No public port '{want}' published for "
                                    f"{args[0]}"))
    rows = []
    for key, binds in ports.items():
        for b in binds or []:
            rows.append((int(key.split("/")[0]), key, host(b)))
    for _n, key, h in sorted(rows):
        sys.stdout.write(f"{key} -> {h}\n")
    return 0


# --- stats ------------------------------------------------------------------------------------

STATS_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
STATS_TABLE = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
               "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")


def stats_row(s: dict[str, Any], container: str, trunc: bool = True) -> Any:
    """docker's StatsEntry from one /stats document (Linux daemon)."""
    from ketch.cli.formatting import Struct, bytes_size, human_size_precision, truncate_id

    cpu = s.get("cpu_stats") or {}
    pre = s.get("precpu_stats") or {}
    cpu_delta = float(((cpu.get("cpu_usage") or {}).get("total_usage") or 0)
                      - ((pre.get("cpu_usage") or {}).get("total_usage") or 0))
    sys_delta = float((cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0))
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage")
                                           or []) or 0
    cpu_pct = cpu_delta / sys_delta * online * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    mstats = mem.get("stats") or {}
    usage = int(mem.get("usage") or 0)
    for key in ("total_inactive_file", "inactive_file"):
        if key in mstats:
            if int(mstats[key]) < usage:
                usage -= int(mstats[key])
            break
    limit = int(mem.get("limit") or 0)
    mem_pct = usage / limit * 100.0 if limit else 0.0
    rx = sum(int(n.get("rx_bytes") or 0) for n in (s.get("networks") or {}).values())
    tx = sum(int(n.get("tx_bytes") or 0) for n in (s.get("networks") or {}).values())
    rd = wr = 0
    for e in ((s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []):
        op = str(e.get("op") or "").lower()
        if op == "read":
            rd += int(e.get("value") or 0)
        elif op == "write":
            wr += int(e.get("value") or 0)
    name = str(s.get("name") or "").lstrip("/")
    cid = str(s.get("id") or "")
    return Struct("formatter.StatsEntry", {
        "Container": container,
        "ID": truncate_id(cid) if trunc else cid,
        "Name": name or "--",
        "CPUPerc": f"{cpu_pct:.2f}%",
        "MemUsage": f"{bytes_size(usage)} / {bytes_size(limit)}",
        "MemPerc": f"{mem_pct:.2f}%",
        "NetIO": f"{human_size_precision(rx, 3)} / {human_size_precision(tx, 3)}",
        "BlockIO": f"{human_size_precision(rd, 3)} / {human_size_precision(wr, 3)}",
        "PIDs": str((s.get("pids_stats") or {}).get("current") or 0),
    })


def _stats_format(fmt: str | None) -> str:
    if not fmt or fmt == "table":
        return STATS_TABLE
    return fmt


@command("stats", "[OPTIONS] [CONTAINER...]",
         "Display a live stream of container(s) resource usage statistics", nargs=(0, None),
         aliases=("ketch container stats", "ketch stats"))
@option("-a", "--all", "all_", is_flag=True,
        help="Show all containers (default shows just running)")
@format_option
@option("--no-stream", is_flag=True,
        help="Disable streaming stats and only pull the first result")
@option("--no-trunc", is_flag=True, help="Do not truncate output")
@pass_obj
def stats(session: Session, args: tuple[str, ...], all_: bool, format_: str | None,
          no_stream: bool, no_trunc: bool) -> int:
    import json

    from ketch.cli.formatting import render

    client = session.connect()
    names = list(args) or [c["Id"] for c in client.containers(all=all_)]
    fmt = _stats_format(format_)
    if no_stream:
        rows = []
        errors = []
        for n in names:
            try:
                with client.container_stats(n, stream=False) as resp:
                    doc = json.loads(resp.read() or b"{}")
            except KetchError as exc:
                errors.append(error_text(exc))
                continue
            rows.append(stats_row(doc, n, trunc=not no_trunc))
        if errors:
            # docker prints no table when a named container cannot be read.
            sys.stderr.write("\n".join(errors) + "\n")
            return 1
        sys.stdout.write(render(fmt, rows, STATS_HEADERS))
        return 0
    # Streaming: one reader per container, the table redrawn every second.
    latest: dict[str, Any] = {}
    lock = threading.Lock()

    def follow(n: str) -> None:
        try:
            from ketch.client import json_messages

            with client.container_stats(n, stream=True) as resp:
                for frame in json_messages(resp):
                    with lock:
                        latest[n] = stats_row(frame, n, not no_trunc)
        except (KetchError, OSError, ValueError):
            pass
        with lock:
            latest.pop(n, None)

    for n in names:
        threading.Thread(target=follow, args=(n,), daemon=True).start()
    try:
        while True:
            time.sleep(1.0)
            with lock:
                rows = [latest[n] for n in names if n in latest]
            clear = "\033[2J\033[H" if sys.stdout.isatty() else ""
            sys.stdout.write(clear + render(fmt, rows, STATS_HEADERS))
            sys.stdout.flush()
            if not any(t.name != "MainThread" and t.is_alive()
                       for t in threading.enumerate()):
                return 0
    except KeyboardInterrupt:
        return 0


# --- update -----------------------------------------------------------------------------------

UPDATE_FLAGS = tuple(f for f in run_opts.CONTAINER_FLAGS if f.long in (
    "blkio-weight", "cpu-period", "cpu-quota", "cpu-rt-period", "cpu-rt-runtime", "cpu-shares",
    "cpus", "cpuset-cpus", "cpuset-mems", "memory", "memory-reservation", "memory-swap",
    "pids-limit", "restart"))


@command("update", "[OPTIONS] CONTAINER [CONTAINER...]",
         "Update configuration of one or more containers", nargs=(1, None),
         aliases=("ketch container update", "ketch update"),
         options=run_opts.options(UPDATE_FLAGS))
@pass_obj
def update(session: Session, args: tuple[str, ...], **params: Any) -> int:
    given = {k: v for k, v in params.items() if v is not None and v != ()}
    if not given:
        raise _status(local(InvalidArgument(
            "you must provide one or more flags when using this command")), 1)
    try:
        req = run_opts.build(params, "", ())
    except run_opts.FlagValueError as exc:
        raise UsageFailure(str(exc), 125) from None
    except run_opts.ConfigError as exc:
        raise _status(local(exc), 1) from None
    hc = req.host_config
    keys = ("CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight",
            "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
            "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuPeriod", "CpuQuota",
            "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "Devices",
            "DeviceCgroupRules", "DeviceRequests", "MemoryReservation", "MemorySwap",
            "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits", "CpuCount",
            "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth")
    # As docker's UpdateConfig: unset lists go as null, not [].
    body: dict[str, Any] = {k: (hc[k] if hc[k] != [] else None) for k in keys}
    body["MemorySwappiness"] = None
    body["OomKillDisable"] = None
    body["PidsLimit"] = hc["PidsLimit"] if params.get("pids_limit") is not None else None
    body["RestartPolicy"] = hc["RestartPolicy"] if params.get("restart") is not None \
        else {"Name": "", "MaximumRetryCount": 0}
    client = session.connect()
    warnings: list[str] = []

    def one(name: str) -> None:
        resp = client.container_update(name, body)
        warnings.extend(resp.get("Warnings") or [])

    rc = _each(session, args, one, parallel=False)
    for w in warnings:
        sys.stderr.write(w + "\n")
    return rc


# --- prune ------------------------------------------------------------------------------------


@command("prune", "[OPTIONS]", "Remove all stopped containers")
@prune_filter_option
@option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@pass_obj
def prune(session: Session, args: tuple[str, ...], filters: tuple[str, ...], force: bool) -> int:
    from ketch.cli.formatting import human_size
    from ketch.cli.system_cmds import confirm

    flt = parse_filters(filters)
    if not force and not confirm("WARNING! This will remove all stopped containers.\n"
                                 "Are you sure you want to continue? [y/N] "):
        return 0
    report = session.connect().containers_prune(flt)
    deleted = report.get("ContainersDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Containers:\n" + "".join(d + "\n" for d in deleted) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}\n")
    return 0


# --- cp ---------------------------------------------------------------------------------------

GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27


def split_cp_arg(arg: str) -> tuple[str, str]:
    """docker's splitCpArg: ``CONTAINER:PATH`` or a local path (absolute, or starting with
    "." before any colon)."""
    if arg.startswith("/"):
        return "", arg
    ctr, sep, path = arg.partition(":")
    if not sep or ctr.startswith("."):
        return "", arg
    return ctr, path


def _keep_trailing(abs_path: str, original: str) -> str:
    """archive.PreserveTrailingDotOrSeparator: "dir/." and "dir/" keep their meaning."""
    if original.endswith("/.") and not abs_path.endswith("/."):
        return abs_path.rstrip("/") + "/."
    if original.endswith("/") and not abs_path.endswith("/"):
        return abs_path + "/"
    return abs_path


def _split_dir_entry(path: str) -> tuple[str, str]:
    """archive.SplitPathDirEntry: ("/a/b/", ".") -> ("/a/b", "."), "/a/b" -> ("/a", "b")."""
    cleaned = os.path.normpath(path)
    if path.endswith("/."):
        return cleaned, "."
    return os.path.dirname(cleaned) or ".", os.path.basename(cleaned)


def _rebase(name: str, old: str, new: str) -> str:
    if not new or new == old:
        return name
    if name == old:
        return new
    if name.startswith(old + "/"):
        return new + name[len(old):]
    return name


def _extract(tar_stream: Any, dest_dir: str, old: str, new: str) -> None:
    """Unpack a container's tar into ``dest_dir``, renaming the top entry ``old`` -> ``new``,
    owned by us (docker's NoLchown) and never outside ``dest_dir``."""
    import tarfile

    uid, gid = os.getuid(), os.getgid()

    def safe(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        m = member.replace(name=_rebase(member.name, old, new), deep=False)
        if m.islnk():
            m = m.replace(linkname=_rebase(m.linkname, old, new), deep=False)
        checked = tarfile.tar_filter(m, path)  # refuses absolute names and escapes
        return checked.replace(mode=m.mode, uid=uid, gid=gid, uname="", gname="", deep=False)

    with tarfile.open(fileobj=tar_stream, mode="r|") as tf:
        tf.extractall(dest_dir, filter=safe)


class _Counting:
    def __init__(self, f: Any) -> None:
        self.f = f
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.f.read(n)
        self.n += len(data)
        return data


def _go_err(exc: OSError, op: str, path: str) -> str:
    return f"{op} {path}: {(exc.strerror or str(exc)).lower()}"


def _copy_from(client: Any, ctr: str, src: str, dst: str, follow: bool, quiet: bool) -> int:
    from ketch.cli.formatting import human_size_precision

    if dst != "-":
        dst = _keep_trailing(os.path.abspath(dst), dst)
        parent = os.path.dirname(os.path.normpath(dst))
        if parent and not os.path.isdir(parent):
            raise _status(local(InvalidArgument(
                f'invalid output path: directory "{parent}" does not exist')), 1)
    rebase = ""
    if follow:
        try:
            st = client.container_stat_path(ctr, src)
        except KetchError:
            st = {}
        if int(st.get("mode") or 0) & GO_MODE_SYMLINK:
            target = str(st.get("linkTarget") or "")
            if not target.startswith("/"):
                target = os.path.join(_split_dir_entry(src)[0], target)
            rebase = _split_dir_entry(src)[1]
            src = target
    resp, stat = client.container_archive_get(ctr, src)
    with resp:
        if dst == "-":
            sys.stdout.flush()
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    return 0
                sys.stdout.buffer.write(chunk)
        src_is_dir = bool(int(stat.get("mode") or 0) & GO_MODE_DIR)
        src_base = _split_dir_entry(src)[1]
        src_base_name = rebase or src_base
        counted = _Counting(resp)
        exists = os.path.lexists(dst)
        is_dir = os.path.isdir(dst)
        if exists and is_dir:
            dest_dir, new = os.path.normpath(dst), src_base_name
        elif exists and src_is_dir:
            raise _status(local(InvalidArgument("cannot copy directory")), 1)
        elif not exists and not src_is_dir and dst.endswith("/"):
            raise _status(local(InvalidArgument("no such directory")), 1)
        else:
            dest_dir, new = os.path.dirname(os.path.normpath(dst)), os.path.basename(
                os.path.normpath(dst))
        try:
            _extract(counted, dest_dir, src_base, new if new != "." else "")
        except OSError as exc:
            raise _status(local(InvalidArgument(str(exc))), 1) from None
    if not quiet:
        size = counted.n if src_is_dir else int(stat.get("size") or 0)
        sys.stderr.write(f"Successfully copied {human_size_precision(size, 3)} to {dst}\n")
    return 0


def _copy_to(client: Any, ctr: str, src: str, dst: str, follow: bool, archive: bool,
             quiet: bool) -> int:
    import tarfile
    import tempfile

    from ketch.cli.formatting import human_size_precision

    dst_path = dst
    dst_exists = dst_is_dir = False
    try:
        st = client.container_stat_path(ctr, dst)
        if int(st.get("mode") or 0) & GO_MODE_SYMLINK:
            target = str(st.get("linkTarget") or "")
            if not target.startswith("/"):
                target = os.path.join(_split_dir_entry(dst)[0], target)
            dst_path = target
            st = client.container_stat_path(ctr, target)
        dst_exists, dst_is_dir = True, bool(int(st.get("mode") or 0) & GO_MODE_DIR)
    except KetchError:
        pass  # as docker: a destination that cannot be looked at is one to create
    if src == "-":
        if not dst_is_dir:
            raise _status(local(InvalidArgument(
                f'destination "{ctr}:{dst}" must be a directory')), 1)
        client.container_archive_put(ctr, dst_path, sys.stdin.buffer, copy_uid_gid=archive)
        return 0
    src = _keep_trailing(os.path.abspath(src), src)
    real = os.path.normpath(src)
    try:
        info = os.stat(real) if follow else os.lstat(real)
    except OSError as exc:
        raise _status(local(InvalidArgument(_go_err(exc, "lstat", real))), 1) from None
    import stat as st_mod

    src_is_dir = st_mod.S_ISDIR(info.st_mode)
    src_dir, src_base = _split_dir_entry(src)
    if dst_exists and dst_is_dir:
        put_dir, name = dst_path, src_base
    elif dst_exists and src_is_dir:
        raise _status(local(InvalidArgument("cannot copy directory")), 1)
    elif not dst_exists and not src_is_dir and dst.endswith("/"):
        raise _status(local(InvalidArgument("no such directory")), 1)
    else:
        put_dir, name = _split_dir_entry(dst_path)
    total = 0
    with tempfile.TemporaryFile() as tmp:
        with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
            def add(path: str, arc: str) -> None:
                nonlocal total
                ti = tf.gettarinfo(path, arc)
                if follow and path == real and os.path.islink(path):
                    ti = tf.gettarinfo(os.path.realpath(path), arc)
                    path = os.path.realpath(path)
                if not archive:
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = ""
                if ti.isreg():
                    total += ti.size
                    with open(path, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
                if ti.isdir():
                    for entry in sorted(os.listdir(path)):
                        add(os.path.join(path, entry), f"{arc}/{entry}" if arc != "." else
                            f"./{entry}")

            add(os.path.join(src_dir, src_base) if src_base != "." else src_dir,
                name if name != "." else ".")
        tmp.seek(0)
        client.container_archive_put(ctr, put_dir, tmp, copy_uid_gid=archive)
    if not quiet:
        sys.stderr.write(f"Successfully copied {human_size_precision(total, 3)} to "
                         f"{ctr}:{dst_path}\n")
    return 0


@command("cp", "[OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n\tketch cp [OPTIONS] SRC_PATH|- "
               "CONTAINER:DEST_PATH",
         "Copy files/folders between a container and the local filesystem", nargs=(2, 2),
         aliases=("ketch container cp", "ketch cp"))
@option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information)")
@option("-L", "--follow-link", is_flag=True, help="Always follow symlinks in SRC_PATH")
@option("-q", "--quiet", is_flag=True,
        help="Suppress progress output during copy. Progress output is automatically "
             "suppressed if no terminal is attached")
@pass_obj
def cp(session: Session, args: tuple[str, ...], archive: bool, follow_link: bool,
       quiet: bool) -> int:
    src, dst = args
    if not src:
        raise _status(local(InvalidArgument("source can not be empty")), 1)
    if not dst:
        raise _status(local(InvalidArgument("destination can not be empty")), 1)
    src_ctr, src_path = split_cp_arg(src)
    dst_ctr, dst_path = split_cp_arg(dst)
    quiet = quiet or not sys.stdout.isatty() or dst_path == "-"
    if src_ctr and dst_ctr:
        raise _status(local(InvalidArgument("copying between containers is not supported")), 1)
    if not src_ctr and not dst_ctr:
        raise _status(local(InvalidArgument("must specify at least one container source")), 1)
    client = session.connect()
    if src_ctr:
        return _copy_from(client, src_ctr, src_path, dst_path, follow_link, quiet)
    return _copy_to(client, dst_ctr, src_path, dst_path, follow_link, archive, quiet)


# --- the group ---------------------------------------------------------------------------------

container = Group("container", help="Manage containers", usage="COMMAND", lazy={})
for _name, _cmd in (("run", run), ("create", create), ("start", start), ("stop", stop),
                    ("restart", restart), ("kill", kill), ("rm", rm), ("remove", rm),
                    ("ls", ps), ("list", ps), ("ps", ps), ("logs", logs), ("exec", exec_),
                    ("attach", attach), ("wait", wait), ("inspect", inspect), ("top", top),
                    ("stats", stats), ("pause", pause), ("unpause", unpause),
                    ("rename", rename), ("update", update), ("port", port),
                    ("prune", prune), ("cp", cp)):
    container.add_command(_cmd, _name)
container.lazy.update({"commit": "ketch.cli.filesystem_cmds:commit",
                      "diff": "ketch.cli.filesystem_cmds:diff",
                      "export": "ketch.cli.filesystem_cmds:export"})
container.hidden_names = {"remove", "list", "ps"}

__all__ = ["attach", "container", "cp", "create", "exec_", "go_timestamp", "inspect",
           "inspect_any", "kill", "logs", "pause", "port", "prune", "ps", "rename", "restart",
           "rm", "run", "start", "stats", "stats_row", "stop", "top", "unpause", "update",
           "wait"]
