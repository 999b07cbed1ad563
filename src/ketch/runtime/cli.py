"""``ketch-runc``: runc's command line over ketch's runtime library.

Callers (dockerd, containerd, podman, conmon) drive runc with a fixed set of
flags and parse its exit codes, ``state`` JSON and error lines, so this module
follows runc: global flags before the command, the command's flags before its
positional arguments (``exec ID sh -c ...`` passes ``-c`` to sh), ``--flag v``,
``--flag=v`` and Go's single-dash ``-flag`` all accepted, errors as log lines
on stderr (and JSON in ``--log`` with ``--log-format json``), exit status 1.

The parser is a small table, not click or argparse, because a runtime is
exec'd once per container operation and start-up time is the product.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ketch import __version__
from ketch.errors import InvalidArgument, KetchError, NotSupported

SPEC_VERSION = "1.2.0"


class UsageError(Exception):
    pass


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]            # without dashes; the first is the key
    takes_value: bool = False
    multi: bool = False               # may repeat; collected in a list
    help: str = ""


@dataclass
class Command:
    name: str
    flags: list[Flag]
    run: Callable[[Globals, dict[str, Any], list[str]], int]
    usage: str = ""
    min_args: int = 0
    max_args: int | None = None


@dataclass
class Globals:
    root: str = "/run/ketch-runc"
    log: str | None = None
    log_format: str = "text"
    debug: bool = False
    systemd_cgroup: bool = False
    rootless: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


GLOBAL_FLAGS = [
    Flag(("debug",)), Flag(("log",), True), Flag(("log-format",), True),
    Flag(("root",), True), Flag(("criu",), True), Flag(("systemd-cgroup",)),
    Flag(("rootless",), True), Flag(("version", "v")), Flag(("help", "h")),
]


def parse_flags(flags: list[Flag], argv: list[str], *, stop_at_positional: bool = True
                ) -> tuple[dict[str, Any], list[str]]:
    """Go-style flags: parsing stops at the first positional argument or ``--``."""
    table = {n: f for f in flags for n in f.names}
    values: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            if stop_at_positional:
                rest.extend(argv[i:])
                break
            rest.append(arg)
            i += 1
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        flag = table.get(name)
        if flag is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        key = flag.names[0]
        if flag.takes_value:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            if flag.multi:
                values.setdefault(key, []).append(value)
            else:
                values[key] = value
        else:
            if eq:
                low = value.lower()
                if low not in ("true", "false", "1", "0", "t", "f"):
                    raise UsageError(f'invalid boolean value "{value}" for -{name}')
                values[key] = low in ("true", "1", "t")
            else:
                values[key] = True
        i += 1
    return values, rest


# -- logging, as runc's logrus does it ------------------------------------------

_g = Globals()


def _log_error(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if _g.log:
        try:
            with open(_g.log, "a") as f:
                if _g.log_format == "json":
                    f.write(json.dumps({"level": "error", "msg": msg, "time": stamp}) + "\n")
                else:
                    f.write(f'time="{stamp}" level=error msg={json.dumps(msg)}\n')
        except OSError:
            pass
        sys.stderr.write(msg + "\n")
    else:
        sys.stderr.write(f'time="{stamp}" level=error msg={json.dumps(msg)}\n')
    sys.stderr.flush()


def _runtime(g: Globals) -> Any:
    from ketch.runtime.container import Runtime
    return Runtime(g.root)


def _one_id(args: list[str], cmd: str) -> str:
    if len(args) != 1:
        raise UsageError(f'"{cmd}" requires exactly 1 argument(s)')
    return args[0]


def _fd_count(value: Any) -> int:
    try:
        n = int(value or 0)
    except ValueError:
        raise InvalidArgument(f"invalid value {value!r} for --preserve-fds") from None
    if n < 0:
        raise InvalidArgument("--preserve-fds must not be negative")
    return n


# -- commands -------------------------------------------------------------------

def cmd_spec(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.jsonmodel import to_json
    from ketch.runtime.defaults import default_spec

    bundle = o.get("bundle") or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise InvalidArgument("File config.json exists. Remove it first")
    data = to_json(default_spec(rootless=bool(o.get("rootless"))))
    with open(path, "w") as f:
        json.dump(data, f, indent="\t")
    return 0


def _create(g: Globals, o: dict[str, Any], container_id: str, stdio: Any) -> Any:
    from ketch.runtime.container import CreateOptions
    rt = _runtime(g)
    opts = CreateOptions(bundle=o.get("bundle") or ".", stdio=stdio,
                         console_socket=o.get("console-socket"), pid_file=o.get("pid-file"),
                         no_pivot=bool(o.get("no-pivot")),
                         no_new_keyring=bool(o.get("no-new-keyring")),
                         preserve_fds=_fd_count(o.get("preserve-fds")))
    return rt, rt.create(container_id, opts)


def cmd_create(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    container_id = _one_id(args, "create")
    _create(g, o, container_id, (None, None, None))
    return 0


def cmd_start(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    _runtime(g).start(_one_id(args, "start"))
    return 0


def cmd_run(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.runtime.foreground import run_foreground
    container_id = _one_id(args, "run")
    return run_foreground(g.root, container_id, o)


def cmd_state(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.jsonmodel import to_json
    st = _runtime(g).state(_one_id(args, "state"))
    sys.stdout.write(json.dumps(to_json(st), indent=2) + "\n")
    return 0


def cmd_list(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.jsonmodel import to_json
    states = _runtime(g).containers()
    fmt = o.get("format") or "table"
    if o.get("quiet"):
        for s in states:
            print(s.id)
        return 0
    if fmt == "json":
        print(json.dumps([to_json(s) for s in states]) if states else "null")
        return 0
    if fmt != "table":
        raise InvalidArgument(f"invalid format option: {fmt}")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for s in states:
        rows.append((s.id, str(s.pid), s.status, s.bundle, s.created, s.owner))
    # Go's tabwriter as runc sets it up: min width 12, padding 3.
    widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(6)]
    for r in rows:
        print("".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + r[-1])
    return 0


def parse_signal(value: str) -> int:
    v = value.strip().upper()
    if v.isdigit():
        n = int(v)
        if n <= 0 or n >= signal.NSIG:
            raise InvalidArgument(f"unknown signal {value!r}")
        return n
    if not v.startswith("SIG"):
        v = "SIG" + v
    if v.startswith("SIGRTMIN") or v.startswith("SIGRTMAX"):
        base = signal.SIGRTMIN if v.startswith("SIGRTMIN") else signal.SIGRTMAX
        off = v[8:]
        try:
            return int(base) + (int(off) if off else 0)
        except ValueError:
            raise InvalidArgument(f"unknown signal {value!r}") from None
    try:
        return int(signal.Signals[v])
    except KeyError:
        raise InvalidArgument(f"unknown signal {value!r}") from None


def cmd_kill(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    if not args or len(args) > 2:
        raise UsageError('"kill" requires a minimum of 1 and a maximum of 2 arguments')
    sig = parse_signal(args[1]) if len(args) == 2 else int(signal.SIGTERM)
    _runtime(g).kill(args[0], sig, all_processes=bool(o.get("all")))
    return 0


def cmd_delete(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    if not args:
        raise UsageError('"delete" requires a minimum of 1 argument')
    rt = _runtime(g)
    for cid in args:
        rt.delete(cid, force=bool(o.get("force")))
    return 0


def cmd_pause(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    _runtime(g).pause(_one_id(args, "pause"))
    return 0


def cmd_resume(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    _runtime(g).resume(_one_id(args, "resume"))
    return 0


def cmd_ps(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    if not args:
        raise UsageError('"ps" requires a minimum of 1 argument')
    pids = _runtime(g).pids(args[0])
    fmt = o.get("format") or "table"
    if fmt == "json":
        print(json.dumps(pids))
        return 0
    if fmt != "table":
        raise InvalidArgument(f"invalid format option: {fmt}")
    import subprocess
    ps_args = args[1:] or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise KetchError(f"ps: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    try:
        col = header.index("PID")
    except ValueError:
        raise KetchError("couldn't find PID field in ps output") from None
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)
    return 0


def cmd_events(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.linux.cgroups import stats_to_json
    container_id = _one_id(args, "events")
    rt = _runtime(g)
    interval = _duration(o.get("interval") or "5s")
    if o.get("stats"):
        data = stats_to_json(rt.stats(container_id))
        print(json.dumps({"type": "stats", "id": container_id, "data": data}))
        return 0
    ooms = rt.oom_kill_count(container_id)
    while True:
        # OOM first: a kill that also ended the container is still reported.
        try:
            count = rt.oom_kill_count(container_id)
        except KetchError:
            count = ooms
        if count > ooms:
            ooms = count
            print(json.dumps({"type": "oom", "id": container_id}), flush=True)
        if rt.state(container_id).status == "stopped":
            return 0
        try:
            data = stats_to_json(rt.stats(container_id))
        except KetchError:
            return 0
        print(json.dumps({"type": "stats", "id": container_id, "data": data}), flush=True)
        time.sleep(interval)


def _duration(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if value.endswith(suffix):
            try:
                return float(value[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
    raise InvalidArgument(f"invalid duration {value!r}")


_UPDATE_FLAGS = {
    # flag -> (section, field, parser)
    "blkio-weight": ("block_io", "weight", int),
    "cpu-period": ("cpu", "period", int),
    "cpu-quota": ("cpu", "quota", int),
    "cpu-burst": ("cpu", "burst", int),
    "cpu-share": ("cpu", "shares", int),
    "cpu-rt-period": ("cpu", "realtime_period", int),
    "cpu-rt-runtime": ("cpu", "realtime_runtime", int),
    "cpuset-cpus": ("cpu", "cpus", str),
    "cpuset-mems": ("cpu", "mems", str),
    "memory": ("memory", "limit", "bytes"),
    "memory-reservation": ("memory", "reservation", "bytes"),
    "memory-swap": ("memory", "swap", "bytes"),
    "pids-limit": ("pids", "limit", int),
}


def _bytes(value: str) -> int:
    v = value.strip().lower()
    if v == "-1":
        return -1
    mult = 1
    for suffix, m in (("kb", 1024), ("mb", 1024**2), ("gb", 1024**3), ("k", 1024),
                      ("m", 1024**2), ("g", 1024**3), ("b", 1)):
        if v.endswith(suffix):
            v, mult = v[: -len(suffix)], m
            break
    try:
        return int(float(v) * mult)
    except ValueError:
        raise InvalidArgument(f"invalid value for memory: {value}") from None


def cmd_update(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.jsonmodel import from_json
    from ketch.linux.cgroups import resources as res_mod
    container_id = _one_id(args, "update")
    if o.get("resources"):
        src = o["resources"]
        try:
            if src == "-":
                raw = sys.stdin.read()
            else:
                with open(src) as f:
                    raw = f.read()
            data = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"unable to parse resources: {exc}") from None
        resources = from_json(res_mod.Resources, data, where="resources")
    else:
        resources = res_mod.Resources()
        for flag, (section, fld, parser) in _UPDATE_FLAGS.items():
            if flag not in o:
                continue
            raw = o[flag]
            try:
                value = _bytes(raw) if parser == "bytes" else parser(raw)  # type: ignore
            except ValueError:
                raise InvalidArgument(f"invalid value for {flag}: {raw}") from None
            cls = {"block_io": res_mod.BlockIO, "cpu": res_mod.CPU,
                   "memory": res_mod.Memory, "pids": res_mod.Pids}[section]
            if getattr(resources, section) is None:
                setattr(resources, section, cls())
            setattr(getattr(resources, section), fld, value)
    _runtime(g).update(container_id, resources)
    return 0


def cmd_exec(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.runtime.foreground import exec_command
    if not args:
        raise UsageError('"exec" requires a minimum of 1 argument')
    return exec_command(g.root, args[0], args[1:], o)


def cmd_features(g: Globals, o: dict[str, Any], args: list[str]) -> int:
    from ketch.runtime.features import features
    print(json.dumps(features(), indent=4))
    return 0


def cmd_unsupported(name: str) -> Callable[[Globals, dict[str, Any], list[str]], int]:
    def run(g: Globals, o: dict[str, Any], args: list[str]) -> int:
        raise NotSupported(f"{name} is not supported by ketch-runc")
    return run


F = Flag
COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("spec", [F(("bundle", "b"), True), F(("rootless",))], cmd_spec,
            "create a new specification file"),
    Command("create", [F(("bundle", "b"), True), F(("console-socket",), True),
                       F(("pid-file",), True), F(("no-pivot",)), F(("no-new-keyring",)),
                       F(("preserve-fds",), True)], cmd_create, "create a container"),
    Command("start", [], cmd_start, "executes the user defined process in a created container"),
    Command("run", [F(("bundle", "b"), True), F(("console-socket",), True),
                    F(("detach", "d")), F(("keep",)), F(("pid-file",), True),
                    F(("no-subreaper",)), F(("no-pivot",)), F(("no-new-keyring",)),
                    F(("preserve-fds",), True)], cmd_run, "create and run a container"),
    Command("state", [], cmd_state, "output the state of a container"),
    Command("list", [F(("format", "f"), True), F(("quiet", "q"))], cmd_list,
            "lists containers started by runc with the given root"),
    Command("kill", [F(("all", "a"))], cmd_kill, "kill sends the specified signal to the "
            "container's init process"),
    Command("delete", [F(("force", "f"))], cmd_delete, "delete any resources held by the "
            "container"),
    Command("pause", [], cmd_pause, "pause suspends all processes inside the container"),
    Command("resume", [], cmd_resume, "resumes all processes that have been previously "
            "paused"),
    Command("ps", [F(("format", "f"), True)], cmd_ps, "ps displays the processes running "
            "inside a container"),
    Command("events", [F(("interval",), True), F(("stats",))], cmd_events,
            "display container events such as OOM notifications, cpu, memory, and IO usage "
            "statistics"),
    Command("update", [F(("resources", "r"), True), F(("blkio-weight",), True),
                       F(("cpu-period",), True), F(("cpu-quota",), True),
                       F(("cpu-burst",), True), F(("cpu-share",), True),
                       F(("cpu-rt-period",), True), F(("cpu-rt-runtime",), True),
                       F(("cpuset-cpus",), True), F(("cpuset-mems",), True),
                       F(("memory",), True), F(("memory-reservation",), True),
                       F(("memory-swap",), True), F(("pids-limit",), True),
                       F(("l3-cache-schema",), True), F(("mem-bw-schema",), True)],
            cmd_update, "update container resource constraints"),
    Command("exec", [F(("console-socket",), True), F(("cwd",), True),
                     F(("env", "e"), True, True), F(("tty", "t")), F(("user", "u"), True),
                     F(("additional-gids", "g"), True, True), F(("process", "p"), True),
                     F(("detach", "d")), F(("pid-file",), True),
                     F(("process-label",), True), F(("apparmor",), True),
                     F(("no-new-privs",)), F(("cap", "c"), True, True),
                     F(("preserve-fds",), True), F(("cgroup",), True, True),
                     F(("ignore-paused",)), F(("no-subreaper",))],
            cmd_exec, "execute new process inside the container"),
    Command("features", [], cmd_features, "show the enabled features"),
    Command("checkpoint", [], cmd_unsupported("checkpoint"), "checkpoint a running container"),
    Command("restore", [], cmd_unsupported("restore"), "restore a container from a previous "
            "checkpoint"),
]}


def _help() -> str:
    lines = ["NAME:", "   ketch-runc - an OCI runtime (runc-compatible), part of ketch", "",
             "USAGE:", "   ketch-runc [global options] command [command options] "
             "[arguments...]", "", "COMMANDS:"]
    for c in COMMANDS.values():
        lines.append(f"   {c.name:<11}{c.usage}")
    lines += ["", "GLOBAL OPTIONS:",
              "   --debug              enable debug logging",
              "   --log value          set the log file to write runc logs to",
              "   --log-format value   set the log format ('text' (default), or 'json')",
              "   --root value         root directory for storage of container state "
              "(default: \"/run/ketch-runc\")",
              "   --systemd-cgroup     not supported: ketch-runc manages cgroupfs itself",
              "   --version, -v        print the version"]
    return "\n".join(lines)


def version_text() -> str:
    return f"ketch-runc version {__version__}\nspec: {SPEC_VERSION}\n"


def main(argv: list[str] | None = None) -> int:
    global _g
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        gvals, rest = parse_flags(GLOBAL_FLAGS, argv)
    except UsageError as exc:
        _log_error(str(exc))
        return 1
    g = Globals(root=gvals.get("root") or "/run/ketch-runc", log=gvals.get("log"),
                log_format=gvals.get("log-format") or "text", debug=bool(gvals.get("debug")),
                systemd_cgroup=bool(gvals.get("systemd-cgroup")),
                rootless=gvals.get("rootless"))
    _g = g
    if g.log_format not in ("text", "json"):
        _log_error(f"invalid log-format: {g.log_format}")
        return 1
    if gvals.get("version"):
        sys.stdout.write(version_text())
        return 0
    if gvals.get("help") or not rest:
        print(_help())
        return 0 if gvals.get("help") else 0
    name, cmd_args = rest[0], rest[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        _log_error(f"No help topic for '{name}'")
        return 3
    try:
        if g.systemd_cgroup:
            raise NotSupported("--systemd-cgroup is not supported: ketch-runc manages "
                               "cgroups through cgroupfs")
        if cmd_args and cmd_args[0] in ("--help", "-h", "-help"):
            print(f"NAME:\n   ketch-runc {cmd.name} - {cmd.usage}")
            return 0
        opts, args = parse_flags(cmd.flags, cmd_args)
        return cmd.run(g, opts, args)
    except UsageError as exc:
        _log_error(str(exc))
        return 1
    except (KetchError, OSError) as exc:
        # runc's wording: create/run failures say so; exec failures exit 255.
        msg = str(exc)
        if name in ("create", "run"):
            msg = f"ketch-runc {name} failed: {msg}"
        elif name == "exec":
            msg = f"exec failed: {msg}"
        _log_error(msg)
        return 255 if name == "exec" else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
