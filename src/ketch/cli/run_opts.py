"""``run``/``create`` flags -> the ``POST /containers/create`` body, as the docker CLI builds it.

The body is the one docker 28 sends (its Config + HostConfig +
NetworkingConfig, with the same always-present and omitted keys), so a
daemon sees no difference between ``ketch run`` and ``docker run``; the unit
tests compare it with bodies captured from the docker CLI.

Two kinds of mistakes, as docker reports them:

- a flag value that does not parse (``-m x``) is a ``FlagValueError``:
  ``invalid argument "x" for "-m, --memory" flag: invalid size: 'x'`` plus
  the usage line, exit 125;
- flags that parse but do not fit together (``--rm --restart always``) are a
  ``ConfigError``: ``ketch: conflicting options: ...`` plus a help hint, exit 125.

ketch additionally takes Kubernetes' ``Ki/Mi/Gi/Ti`` size suffixes and CPU
millicores (``--cpus 250m``); docker's own spellings keep docker's meaning.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence

from ketch.cli.flags import BOOL, LIST, VALUE, Option, go_quote
from ketch.errors import InvalidArgument
from ketch.gotext import parse_duration
from ketch.record import Record

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

# --------------------------------------------------------------------------- errors


class FlagValueError(InvalidArgument):
    """pflag's "invalid argument" for one flag's value (docker prints the usage after it)."""

    def __init__(self, flag: str, value: str, why: str) -> None:
        super().__init__(f'invalid argument "{value}" for "{flag}" flag: {why}')
        self.flag = flag


class ConfigError(InvalidArgument):
    """A create configuration docker's ``parse`` refuses (printed as "ketch: <msg>")."""


class VersionError(InvalidArgument):
    """A flag the daemon's API version cannot carry (docker prints it bare, exit 1)."""


# --------------------------------------------------------------------------- flag table


class Flag(Record):
    """One docker flag: ``kind`` says how its words are read (and how pflag would fail):
    str bool list int int64 uint16 size swap cpus duration. ``alias_of`` names the flag an
    old spelling stands for (--net -> --network, --dns-opt -> --dns-option)."""

    __slots__ = ("alias_of", "help", "hidden", "kind", "long", "short")

    def __init__(self, long: str, short: str = "", kind: str = "str", help: str = "",
                 hidden: bool = False, alias_of: str = "") -> None:
        self.long = long
        self.short = short
        self.kind = kind
        self.help = help
        self.hidden = hidden
        self.alias_of = alias_of

    @property
    def dest(self) -> str:
        return (self.alias_of or self.long).replace("-", "_")

    @property
    def label(self) -> str:
        """How pflag names the flag in its errors: ``-m, --memory`` or ``--cpus``."""
        return f"-{self.short}, --{self.long}" if self.short else f"--{self.long}"


CONTAINER_FLAGS: tuple[Flag, ...] = (
    Flag("add-host", kind="list", help="Add a custom host-to-IP mapping (host:ip)"),
    Flag("annotation", kind="list",
         help="Add an annotation to the container (passed through to the OCI runtime)"),
    Flag("attach", "a", "list", "Attach to STDIN, STDOUT or STDERR"),
    Flag("blkio-weight", kind="uint16",
         help="Block IO (relative weight), between 10 and 1000, or 0 to disable (default 0)"),
    Flag("blkio-weight-device", kind="list", help="Block IO weight (relative device weight)"),
    Flag("cap-add", kind="list", help="Add Linux capabilities"),
    Flag("cap-drop", kind="list", help="Drop Linux capabilities"),
    Flag("cgroup-parent", help="Optional parent cgroup for the container"),
    Flag("cgroupns", help="Cgroup namespace to use (host|private)"),
    Flag("cidfile", help="Write the container ID to the file"),
    Flag("cpu-period", kind="int64", help="Limit CPU CFS (Completely Fair Scheduler) period"),
    Flag("cpu-quota", kind="int64", help="Limit CPU CFS (Completely Fair Scheduler) quota"),
    Flag("cpu-rt-period", kind="int64", help="Limit CPU real-time period in microseconds"),
    Flag("cpu-rt-runtime", kind="int64", help="Limit CPU real-time runtime in microseconds"),
    Flag("cpu-shares", "c", "int64", "CPU shares (relative weight)"),
    Flag("cpus", kind="cpus", help="Number of CPUs (ketch also takes millicores: 250m)"),
    Flag("cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)"),
    Flag("cpuset-mems", help="MEMs in which to allow execution (0-3, 0,1)"),
    Flag("device", kind="list", help="Add a host device to the container"),
    Flag("device-cgroup-rule", kind="list", help="Add a rule to the cgroup allowed devices list"),
    Flag("device-read-bps", kind="list",
         help="Limit read rate (bytes per second) from a device"),
    Flag("device-read-iops", kind="list", help="Limit read rate (IO per second) from a device"),
    Flag("device-write-bps", kind="list",
         help="Limit write rate (bytes per second) to a device"),
    Flag("device-write-iops", kind="list", help="Limit write rate (IO per second) to a device"),
    Flag("dns", kind="list", help="Set custom DNS servers"),
    Flag("dns-opt", kind="list", help="Set DNS options", hidden=True, alias_of="dns-option"),
    Flag("dns-option", kind="list", help="Set DNS options"),
    Flag("dns-search", kind="list", help="Set custom DNS search domains"),
    Flag("domainname", help="Container NIS domain name"),
    Flag("entrypoint", help="Overwrite the default ENTRYPOINT of the image"),
    Flag("env", "e", "list", "Set environment variables"),
    Flag("env-file", kind="list", help="Read in a file of environment variables"),
    Flag("expose", kind="list", help="Expose a port or a range of ports"),
    Flag("gpus", help="GPU devices to add to the container ('all' to pass all GPUs)"),
    Flag("group-add", kind="list", help="Add additional groups to join"),
    Flag("health-cmd", help="Command to run to check health"),
    Flag("health-interval", kind="duration",
         help="Time between running the check (ms|s|m|h) (default 0s)"),
    Flag("health-retries", kind="int", help="Consecutive failures needed to report unhealthy"),
    Flag("health-start-interval", kind="duration",
         help="Time between running the check during the start period (ms|s|m|h) (default 0s)"),
    Flag("health-start-period", kind="duration",
         help="Start period for the container to initialize before starting health-retries "
              "countdown (ms|s|m|h) (default 0s)"),
    Flag("health-timeout", kind="duration",
         help="Maximum time to allow one check to run (ms|s|m|h) (default 0s)"),
    Flag("hostname", "h", help="Container host name"),
    Flag("init", kind="bool",
         help="Run an init inside the container that forwards signals and reaps processes"),
    Flag("interactive", "i", "bool", "Keep STDIN open even if not attached"),
    Flag("ip", help="IPv4 address (e.g., 172.30.100.104)"),
    Flag("ip6", help="IPv6 address (e.g., 2001:db8::33)"),
    Flag("ipc", help="IPC mode to use"),
    Flag("label", "l", "list", "Set meta data on a container"),
    Flag("label-file", kind="list", help="Read in a line delimited file of labels"),
    Flag("log-driver", help="Logging driver for the container"),
    Flag("log-opt", kind="list", help="Log driver options"),
    Flag("mac-address", help="Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
    Flag("memory", "m", "size", "Memory limit"),
    Flag("memory-reservation", kind="size", help="Memory soft limit"),
    Flag("memory-swap", kind="swap",
         help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
    Flag("memory-swappiness", kind="int64", help="Tune container memory swappiness (0 to 100)"),
    Flag("mount", kind="list", help="Attach a filesystem mount to the container"),
    Flag("net", kind="list", help="Connect a container to a network", hidden=True,
         alias_of="network"),
    Flag("net-alias", kind="list", help="Add network-scoped alias for the container",
         hidden=True, alias_of="network-alias"),
    Flag("network", kind="list", help="Connect a container to a network"),
    Flag("network-alias", kind="list", help="Add network-scoped alias for the container"),
    Flag("no-healthcheck", kind="bool", help="Disable any container-specified HEALTHCHECK"),
    Flag("oom-kill-disable", kind="bool", help="Disable OOM Killer"),
    Flag("oom-score-adj", kind="int", help="Tune host's OOM preferences (-1000 to 1000)"),
    Flag("pid", help="PID namespace to use"),
    Flag("pids-limit", kind="int64", help="Tune container pids limit (set -1 for unlimited)"),
    Flag("privileged", kind="bool", help="Give extended privileges to this container"),
    Flag("publish", "p", "list", "Publish a container's port(s) to the host"),
    Flag("publish-all", "P", "bool", "Publish all exposed ports to random ports"),
    Flag("read-only", kind="bool", help="Mount the container's root filesystem as read only"),
    Flag("restart", help="Restart policy to apply when a container exits (default \"no\")"),
    Flag("rm", kind="bool", help="Automatically remove the container and its associated "
                                 "anonymous volumes when it exits"),
    Flag("runtime", help="Runtime to use for this container"),
    Flag("security-opt", kind="list", help="Security Options"),
    Flag("shm-size", kind="size", help="Size of /dev/shm"),
    Flag("stop-signal", help="Signal to stop the container"),
    Flag("stop-timeout", kind="int", help="Timeout (in seconds) to stop a container"),
    Flag("storage-opt", kind="list", help="Storage driver options for the container"),
    Flag("sysctl", kind="list", help="Sysctl options"),
    Flag("tmpfs", kind="list", help="Mount a tmpfs directory"),
    Flag("tty", "t", "bool", "Allocate a pseudo-TTY"),
    Flag("ulimit", kind="list", help="Ulimit options"),
    Flag("user", "u", help="Username or UID (format: <name|uid>[:<group|gid>])"),
    Flag("userns", help="User namespace to use"),
    Flag("uts", help="UTS namespace to use"),
    Flag("volume", "v", "list", "Bind mount a volume"),
    Flag("volume-driver", help="Optional volume driver for the container"),
    Flag("volumes-from", kind="list", help="Mount volumes from the specified container(s)"),
    Flag("workdir", "w", help="Working directory inside the container"),
)

# Flags of run/create themselves, not of the container (docker's createOptions/runOptions).
CREATE_FLAGS: tuple[Flag, ...] = (
    Flag("name", help="Assign a name to the container"),
    Flag("platform", help="Set platform if server is multi-platform capable"),
    Flag("pull", help='Pull image before creating ("always", "missing", "never") '
                      '(default "missing")'),
    Flag("quiet", "q", "bool", "Suppress the pull output"),
)
RUN_FLAGS: tuple[Flag, ...] = CREATE_FLAGS + (
    Flag("detach", "d", "bool", "Run container in background and print container ID"),
    Flag("detach-keys", help="Override the key sequence for detaching a container"),
    Flag("sig-proxy", kind="bool", help="Proxy received signals to the process (default true)"),
)

FLAGS_BY_DEST: dict[str, Flag] = {f.dest: f for f in CONTAINER_FLAGS + RUN_FLAGS if not f.alias_of}


def options(flags: Sequence[Flag]) -> tuple[Option, ...]:
    """The flags for ``ketch.cli.flags``: values stay words (None when not given, so an
    explicit ``--init=false`` is told from no ``--init``), read by ``build``; an alias
    (``--net``) fills its flag's value."""
    kinds = {"bool": BOOL, "list": LIST}
    return tuple(Option(f.dest, f.long, f.short, kinds.get(f.kind, VALUE), None,
                        "list" if f.kind == "list" else _metavar(f.kind), f.help, f.hidden)
                 for f in flags)


def _metavar(kind: str) -> str:
    return {"int": "int", "int64": "int", "uint16": "uint16", "size": "bytes",
            "swap": "bytes", "cpus": "decimal", "duration": "duration"}.get(kind, "string")


def parse_int(text: str, bits: int = 64, signed: bool = True) -> int:
    """strconv.ParseInt / ParseUint with their messages."""
    fn = "ParseInt" if signed else "ParseUint"
    t = text
    if signed and t[:1] in "+-":
        t = t[1:]
    if not t or not t.isascii() or not t.isdigit():
        raise ValueError(f"strconv.{fn}: parsing {go_quote(text)}: invalid syntax")
    v = int(text)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise ValueError(f"strconv.{fn}: parsing {go_quote(text)}: value out of range")
    return v


_K8S = {"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40, "pi": 1 << 50}


def parse_size(text: str) -> int:
    """Docker's RAMInBytes ("512m", "1g" = 2^30), plus Kubernetes' "Ki/Mi/Gi/Ti"."""
    from ketch.cli.formatting import parse_size as go_units

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]i)", text)
    if m:
        return int(float(m.group(1)) * _K8S[m.group(2).lower()])
    try:
        return go_units(text)
    except InvalidArgument as exc:
        msg = str(exc)
        # go-units: "invalid suffix: 'q'" as it is; a number it cannot read is a bad size.
        raise ValueError(msg if msg.startswith("invalid") else f"invalid size: '{text}'") \
            from exc


def parse_cpus(text: str) -> int:
    """``--cpus`` as NanoCPUs: a rational number ("1.5"), or ketch's millicores ("250m")."""
    from fractions import Fraction

    m = re.fullmatch(r"(\d+)m", text)
    if m:
        return int(m.group(1)) * 1_000_000
    try:
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?\d+/\d+", text):
            raise ValueError
        r = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"failed to parse {text} as a rational number") from None
    nano = r * 1_000_000_000
    if nano.denominator != 1:
        raise ValueError("value is too precise")
    return int(nano)


_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
          "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


# --------------------------------------------------------------------------- list-flag parsers

_ULIMITS = {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
            "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"}


def parse_ulimit(text: str) -> dict[str, Any]:
    """go-units ParseUlimit: ``name=soft[:hard]``."""
    name, sep, limits = text.partition("=")
    if not sep:
        raise ValueError(f"invalid ulimit argument: {text}")
    if name not in _ULIMITS:
        raise ValueError(f"invalid ulimit type: {name}")
    soft_s, sep2, hard_s = limits.partition(":")
    if sep2 and ":" in hard_s:
        raise ValueError(f"too many limit value arguments - {limits}, can only have up to two, "
                         "`soft[:hard]`")
    try:
        soft = parse_int(soft_s)
        hard = parse_int(hard_s) if sep2 else soft
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if soft > hard:
        raise ValueError(f"ulimit soft limit must be less than or equal to hard limit: "
                         f"{soft} > {hard}")
    return {"Name": name, "Hard": hard, "Soft": soft}


def parse_throttle(text: str, iops: bool) -> dict[str, Any]:
    """ValidateThrottleBpsDevice / ValidateThrottleIOpsDevice: ``/dev/sda:1mb``."""
    path, sep, rate = text.rpartition(":")
    if not sep:
        raise ValueError(f"bad format: {text}")
    if not path.startswith("/dev/"):
        raise ValueError(f"bad format for device path: {text}")
    try:
        if iops:
            value = parse_int(rate, signed=False)
        else:
            value = parse_size(rate)
            if value < 0:
                raise ValueError
    except ValueError:
        unit = "" if iops else "[<unit>]"
        tail = "" if iops else ". Unit is optional and can be kb, mb, or gb"
        raise ValueError(f"invalid rate for device: {text}. The correct format is "
                         f"<device-path>:<number>{unit}. Number must be a positive integer"
                         f"{tail}") from None
    return {"Path": path, "Rate": value}


def parse_weight_device(text: str) -> dict[str, Any]:
    path, sep, w = text.rpartition(":")
    if not sep:
        raise ValueError(f"bad format: {text}")
    if not path.startswith("/dev/"):
        raise ValueError(f"bad format for device path: {text}")
    try:
        weight = parse_int(w, 16, signed=False)
    except ValueError:
        raise ValueError(f"invalid weight for device: {text}") from None
    if weight and not 10 <= weight <= 1000:
        raise ValueError(f"invalid weight for device: {text}")
    return {"Path": path, "Weight": weight}


_CGROUP_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def _valid_device_mode(mode: str) -> bool:
    return bool(mode) and all(c in "rwm" for c in mode) and len(set(mode)) == len(mode)


def parse_device(text: str) -> dict[str, str]:
    """validateLinuxPath + parseLinuxDevice: ``/dev/x[:/dev/y][:rwm]``."""
    if text.count(":") > 2 or not text.split(":")[0]:
        raise ConfigError(f"bad format for path: {text}")
    parts = text.split(":")
    perms = "rwm"
    dst = ""
    if len(parts) == 3:
        if not _valid_device_mode(parts[2]):
            raise ConfigError(f"bad mode specified: {parts[2]}")
        dst, perms = parts[1], parts[2]
    elif len(parts) == 2:
        if _valid_device_mode(parts[1]):
            perms = parts[1]
        else:
            dst = parts[1]
    target = os.path.normpath(dst or parts[0])
    if not target.startswith("/"):
        raise ConfigError(f"{dst or parts[0]} is not an absolute path")
    src = parts[0]
    return {"PathOnHost": src, "PathInContainer": dst or src, "CgroupPermissions": perms}


def _env_lookup(line: str, environ: Mapping[str, str]) -> str:
    if "=" in line:
        return line
    return f"{line}={environ[line]}" if line in environ else line


def read_kv_file(path: str, env: bool, environ: Mapping[str, str]) -> list[str]:
    """opts.ParseEnvFile / ParseKeyValueFile: ``#`` comments and blank lines skipped."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"open {path}: {(exc.strerror or str(exc)).lower()}") from exc
    text = raw.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    out: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if sep and not key:
            raise ConfigError(f"invalid env file ({path}): no variable name on line '{line}'")
        if key != key.rstrip() or " " in key.strip() or "\t" in key:
            raise ConfigError(f"invalid env file ({path}): variable '{key.strip()}' contains "
                              "whitespaces")
        out.append(_env_lookup(line, environ) if env else line)
        del n
    return out


def kv_map(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = v
    return out


def normalize_cap(cap: str) -> str:
    """docker 28's capability spelling: upper case with ``CAP_`` ("ALL" stays)."""
    c = cap.strip().upper()
    if c == "ALL" or c.startswith("CAP_"):
        return c
    return "CAP_" + c


# --------------------------------------------------------------------------- ports


_PROTOS = ("tcp", "udp", "sctp")


def _port_range(text: str, what: str) -> tuple[int, int]:
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = parse_int(lo_s, 16, signed=False)
        hi = parse_int(hi_s, 16, signed=False) if sep else lo
    except ValueError:
        raise ConfigError(f"invalid {what}: {text}") from None
    if hi < lo:
        raise ConfigError(f"invalid range specified for {what}: {text}")
    return lo, hi


def parse_publish(spec: str) -> list[tuple[str, str, str]]:
    """nat.ParsePortSpec: ``[ip:][host[-host]:]port[-port][/proto]`` ->
    [(container "80/tcp", host ip, host port)]."""
    import ipaddress

    if "=" in spec:  # the long syntax: published=8080,target=80,protocol=udp
        params = {"protocol": "tcp"}
        for part in spec.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k:
                raise ConfigError(f"invalid publish opts format (should be name=value but "
                                  f"got '{part}')")
            params[k] = v
        spec = f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}"
    raw, _, proto = spec.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in _PROTOS:
        raise ConfigError(f"invalid proto: {proto}")
    ip = host = ""
    if raw.startswith("["):
        end = raw.find("]")
        ip, rest = raw[1:end], raw[end + 2:]
        host, _, cport = rest.rpartition(":")
    else:
        parts = raw.split(":")
        if len(parts) == 1:
            cport = parts[0]
        elif len(parts) == 2:
            host, cport = parts
        elif len(parts) == 3:
            ip, host, cport = parts
        else:
            ip = ":".join(parts[:-2])
            host, cport = parts[-2], parts[-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"invalid IP address: {ip}") from None
    if not cport:
        raise ConfigError(f"no port specified: {spec}<empty>")
    c_lo, c_hi = _port_range(cport, "containerPort")
    h_lo = h_hi = 0
    if host:
        h_lo, h_hi = _port_range(host, "hostPort")
        if c_hi - c_lo != h_hi - h_lo and c_lo != c_hi:
            raise ConfigError(f"invalid ranges specified for container and host Ports: "
                              f"{cport} and {host}")
    out = []
    for i in range(c_hi - c_lo + 1):
        hp = ""
        if host:
            if c_lo == c_hi and h_lo != h_hi:
                hp = host if h_lo != h_hi else str(h_lo)
            else:
                hp = str(h_lo + i)
        out.append((f"{c_lo + i}/{proto}", ip, hp))
    return out


def parse_expose(spec: str) -> list[str]:
    raw, _, proto = spec.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in _PROTOS:
        raise ConfigError(f"invalid range format for --expose: invalid proto: {proto}")
    try:
        lo, hi = _port_range(raw, "port")
    except ConfigError as exc:
        raise ConfigError(f"invalid range format for --expose: {exc}") from None
    return [f"{p}/{proto}" for p in range(lo, hi + 1)]


# --------------------------------------------------------------------------- volumes, mounts


def parse_volume(spec: str) -> tuple[str | None, str]:
    """``-v``: (bind string, "") for host paths and named volumes, (None, path) for an
    anonymous volume. Like the docker CLI, only the shape is looked at here: whether a
    path is absolute is the daemon's to say."""
    if not spec:
        raise ConfigError("invalid empty volume spec")
    parts = spec.split(":")
    if len(parts) > 1 and "" in parts[:-1]:
        raise ConfigError(f"invalid spec: {spec}: empty section between colons")
    if len(parts) == 1:
        return None, spec
    src = parts[0]
    if not src:
        return None, spec
    if src.startswith(".") and not src.startswith("/"):
        src = os.path.abspath(src)  # a relative host path, made absolute as docker does
    return ":".join([src, *parts[1:]]), ""


def _bool_value(key: str, val: str, has: bool) -> bool:
    if not has:
        return True
    low = val.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise ConfigError(f'invalid value for {key}: {val} (must be "true" or "false")')


def parse_mount(spec: str) -> dict[str, Any]:
    """``--mount type=...,source=...,target=...`` as docker's MountOpt."""
    import csv

    value = spec.strip()
    if not value:
        raise ValueError("value is empty")
    fields = next(csv.reader([value]))
    mount: dict[str, Any] = {"Type": "volume"}

    def sub(key: str) -> dict[str, Any]:
        d: dict[str, Any] = mount.setdefault(key, {})
        return d

    for fld in fields:
        key, sep, val = fld.partition("=")
        has = bool(sep)
        if key.strip() != key:
            raise ValueError(f"invalid option '{key.strip()}' in '{fld}': option should not "
                             "have whitespace")
        if has:
            if not val.strip():
                raise ValueError(f"invalid value for '{key}': value is empty")
            if val.strip() != val:
                raise ValueError(f"invalid value for '{key}' in '{fld}': value should not "
                                 "have whitespace")
        key = key.lower()
        if not has and key not in ("readonly", "ro", "volume-nocopy", "bind-create-src"):
            raise ValueError(f"invalid field '{fld}' must be a key=value pair")
        if key == "type":
            mount["Type"] = val.lower()
        elif key in ("source", "src"):
            mount["Source"] = os.path.abspath(val) if val.startswith(".") else val
        elif key in ("target", "dst", "destination"):
            mount["Target"] = val
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = _bool_value(key, val, has)
        elif key == "consistency":
            mount["Consistency"] = val.lower()
        elif key == "bind-propagation":
            sub("BindOptions")["Propagation"] = val.lower()
        elif key == "bind-recursive":
            opts = {"enabled": None, "disabled": "NonRecursive",
                    "writable": "ReadOnlyNonRecursive", "readonly": "ReadOnlyForceRecursive"}
            if val not in opts:
                raise ValueError(f'invalid value for {key}: {val} (must be "enabled", '
                                 '"disabled", "writable", or "readonly")')
            flag = opts[val]
            if flag:
                sub("BindOptions")[flag] = True
        elif key == "bind-create-src":
            sub("BindOptions")["CreateMountpoint"] = _bool_value(key, val, has)
        elif key == "volume-subpath":
            sub("VolumeOptions")["Subpath"] = val
        elif key == "volume-nocopy":
            sub("VolumeOptions")["NoCopy"] = _bool_value(key, val, has)
        elif key == "volume-label":
            k, _, v = val.partition("=")
            sub("VolumeOptions").setdefault("Labels", {})[k] = v
        elif key == "volume-driver":
            sub("VolumeOptions").setdefault("DriverConfig", {})["Name"] = val
        elif key == "volume-opt":
            k, _, v = val.partition("=")
            sub("VolumeOptions").setdefault("DriverConfig", {}).setdefault("Options", {})[k] = v
        elif key == "tmpfs-size":
            try:
                sub("TmpfsOptions")["SizeBytes"] = parse_size(val)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
        elif key == "tmpfs-mode":
            try:
                sub("TmpfsOptions")["Mode"] = int(val, 8)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {val}") from None
        else:
            raise ValueError(f"unknown option '{key}' in '{fld}'")
    t = mount["Type"]
    if t != "bind" and "BindOptions" in mount:
        raise ValueError(f"cannot mix 'bind-*' options with mount type '{t}'")
    if t != "volume" and "VolumeOptions" in mount:
        raise ValueError(f"cannot mix 'volume-*' options with mount type '{t}'")
    if t != "tmpfs" and "TmpfsOptions" in mount:
        raise ValueError(f"cannot mix 'tmpfs-*' options with mount type '{t}'")
    if not mount.get("Target"):
        raise ValueError("target is required")
    return mount


# --------------------------------------------------------------------------- checks

_SYSCTL_NAMES = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                 "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def check_sysctl(val: str) -> str:
    k, sep, _ = val.partition("=")
    if sep and k and (k in _SYSCTL_NAMES or k.startswith(("net.", "fs.mqueue."))):
        return val
    raise ValueError(f"sysctl '{val}' is not allowed")


def check_ip(val: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(val.strip()))
    except ValueError:
        raise ValueError(f"IP address is not correctly formatted: {val}") from None


def check_dns_search(val: str) -> str:
    v = val.strip()
    if v == ".":
        return v
    if re.fullmatch(r"(:?(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9]))"
                    r"(:?\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9]))*\.?", v) \
            and len(v) <= 255:
        return v
    raise ValueError(f"{v} is not a valid domain")


def check_extra_host(val: str) -> str:
    import ipaddress

    name, sep, ip = val.partition("=")
    if not sep:
        name, sep, ip = val.partition(":")
    if not sep or not name:
        raise ValueError(f"bad format for add-host: {go_quote(val)}")
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"invalid IP address in add-host: {go_quote(ip)}") from None
    # The daemon takes "name:ip" whichever way it was written.
    return f"{name}:{ip}"


def check_label(val: str) -> str:
    k, _, _ = val.partition("=")
    if not k.strip():
        raise ValueError(f"invalid label '{val}': empty name")
    if any(c.isspace() for c in k):
        raise ValueError(f"label '{k}' contains whitespaces")
    return val


def check_attach(val: str) -> str:
    low = val.lower()
    if low in ("stdin", "stdout", "stderr"):
        return low
    raise ValueError("valid streams are STDIN, STDOUT and STDERR")


def check_cgroup_rule(val: str) -> str:
    if _CGROUP_RULE.match(val):
        return val
    raise ValueError(f"invalid device cgroup format '{val}'")


def _valid_mac(mac: str) -> bool:
    return bool(re.fullmatch(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}", mac))


_DETACH_KEY = re.compile(r"^(ctrl-[a-z@\[\\\]^_]|[^,])$")


def check_detach_keys(keys: str) -> None:
    """Docker's term.ToBytes check: comma-separated single characters or ``ctrl-X``."""
    for k in keys.split(","):
        if not _DETACH_KEY.match(k.strip() if len(k) > 1 else k):
            raise ConfigError(f"Unknown character: '{k}'")


def version_lt(a: str, b: str) -> bool:
    return tuple(int(x) for x in a.split(".")) < tuple(int(x) for x in b.split("."))


# --------------------------------------------------------------------------- the body


class CreateRequest(Record):
    """What ``POST /containers/create`` gets: the body and the query (and, for ``run``
    only, how to attach)."""

    __slots__ = ("auto_remove", "body", "cidfile", "detach", "detach_keys", "extra", "name",
                 "platform", "pull", "sig_proxy")

    def __init__(self, body: dict[str, Any], name: str = "", platform: str = "",
                 pull: str = "missing", cidfile: str = "", detach: bool = False,
                 detach_keys: str = "", sig_proxy: bool = True, auto_remove: bool = False,
                 extra: dict[str, Any] | None = None) -> None:
        self.body = body
        self.name = name
        self.platform = platform
        self.pull = pull
        self.cidfile = cidfile
        self.detach = detach
        self.detach_keys = detach_keys
        self.sig_proxy = sig_proxy
        self.auto_remove = auto_remove
        self.extra: dict[str, Any] = {} if extra is None else extra

    @property
    def config(self) -> dict[str, Any]:
        return self.body

    @property
    def host_config(self) -> dict[str, Any]:
        hc: dict[str, Any] = self.body["HostConfig"]
        return hc


class _Values:
    """Flag values by dest, converting each with pflag's error wording."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.p = params

    def changed(self, dest: str) -> bool:
        v = self.p.get(dest)
        return v is not None and v != ()

    def text(self, dest: str, default: str = "") -> str:
        v = self.p.get(dest)
        return default if v is None else str(v)

    def flag(self, dest: str) -> bool:
        return bool(self.p.get(dest))

    def words(self, dest: str) -> list[str]:
        return list(self.p.get(dest) or ())

    def conv(self, dest: str, fn: Callable[[str], Any], default: Any) -> Any:
        v = self.p.get(dest)
        if v is None:
            return default
        try:
            return fn(str(v))
        except ValueError as exc:
            raise FlagValueError(FLAGS_BY_DEST[dest].label, str(v), str(exc)) from None

    def each(self, dest: str, fn: Callable[[str], Any]) -> list[Any]:
        out = []
        for v in self.words(dest):
            try:
                out.append(fn(v))
            except ValueError as exc:
                raise FlagValueError(FLAGS_BY_DEST[dest].label, v, str(exc)) from None
        return out


_EMPTY_ENDPOINT: dict[str, Any] = {
    "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
    "GwPriority": 0, "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
    "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
    "DNSNames": None,
}
_NOT_USER_DEFINED = ("default", "bridge", "host", "none")


def _user_defined(mode: str) -> bool:
    return mode not in _NOT_USER_DEFINED and not mode.startswith("container:")


def _network_attachment(spec: str) -> dict[str, Any]:
    """``--network name`` or the advanced ``name=x,alias=y,ip=...`` form."""
    if "=" not in spec:
        return {"Target": spec}
    import csv

    att: dict[str, Any] = {"Target": ""}
    for fld in next(csv.reader([spec])):
        k, sep, v = fld.partition("=")
        k = k.strip().lower()
        if not sep:
            raise ConfigError(f"invalid field '{fld}' must be a key=value pair")
        if k == "name":
            att["Target"] = v
        elif k == "alias":
            att.setdefault("Aliases", []).append(v)
        elif k == "ip":
            att["IPv4Address"] = v
        elif k == "ip6":
            att["IPv6Address"] = v
        elif k == "mac-address":
            att["MacAddress"] = v
        elif k == "link-local-ip":
            att.setdefault("LinkLocalIPs", []).append(v)
        elif k == "driver-opt":
            dk, _, dv = v.partition("=")
            att.setdefault("DriverOpts", {})[dk] = dv
        elif k == "gw-priority":
            att["GwPriority"] = int(v)
        else:
            raise ConfigError(f"invalid field key {k}")
    return att


def _endpoint(att: Mapping[str, Any]) -> dict[str, Any] | None:
    if not str(att.get("Target", "")).strip():
        raise ConfigError("no name set for network")
    if not _user_defined(att["Target"]) and att.get("Aliases"):
        raise ConfigError("network-scoped aliases are only supported for user-defined networks")
    ep = dict(_EMPTY_ENDPOINT)
    changed = False
    if att.get("Aliases"):
        ep["Aliases"] = list(att["Aliases"])
        changed = True
    if att.get("DriverOpts"):
        ep["DriverOpts"] = dict(att["DriverOpts"])
        changed = True
    if att.get("GwPriority"):
        ep["GwPriority"] = att["GwPriority"]
        changed = True
    if att.get("IPv4Address") or att.get("IPv6Address") or att.get("LinkLocalIPs"):
        ep["IPAMConfig"] = {k: att[k] for k in ("IPv4Address", "IPv6Address", "LinkLocalIPs")
                            if att.get(k)}
        changed = True
    if att.get("MacAddress"):
        mac = str(att["MacAddress"]).strip()
        if not _valid_mac(mac):
            raise ConfigError(f"{att['MacAddress']} is not a valid mac address")
        ep["MacAddress"] = mac.lower().replace("-", ":")
        changed = True
    return ep if changed else None


def _networking(v: _Values) -> tuple[str, dict[str, Any]]:
    """HostConfig.NetworkMode and EndpointsConfig as docker's parseNetworkOpts."""
    atts = [_network_attachment(s) for s in v.words("network")]
    aliases = v.words("network_alias")
    ip4, ip6, mac = v.text("ip"), v.text("ip6"), v.text("mac_address")
    if ip4 or ip6:
        import ipaddress  # only then: it costs every run's start-up ~1 ms
    if ip4:
        try:
            ipaddress.IPv4Address(ip4)
        except ValueError:
            raise FlagValueError("--ip", ip4, f"invalid string being converted to IP address: "
                                 f"{ip4}") from None
    if ip6:
        try:
            ipaddress.IPv6Address(ip6)
        except ValueError:
            raise FlagValueError("--ip6", ip6, f"invalid string being converted to IP "
                                 f"address: {ip6}") from None

    def apply(att: dict[str, Any]) -> None:
        if att.get("Aliases") and aliases:
            raise ConfigError("conflicting options: cannot specify both --network-alias and "
                              "per-network alias")
        if att.get("IPv4Address") and ip4:
            raise ConfigError("conflicting options: cannot specify both --ip and per-network "
                              "IPv4 address")
        if att.get("MacAddress") and mac:
            raise ConfigError("conflicting options: cannot specify both --mac-address and "
                              "per-network MAC address")
        if aliases:
            att["Aliases"] = list(aliases)
        if ip4:
            att["IPv4Address"] = ip4
        if ip6:
            att["IPv6Address"] = ip6
        if mac:
            att["MacAddress"] = mac

    endpoints: dict[str, Any] = {}
    if not atts:
        att: dict[str, Any] = {"Target": "default"}
        apply(att)
        endpoints["default"] = _endpoint(att) or dict(_EMPTY_ENDPOINT)
        return "default", endpoints
    user = plain = False
    for i, att in enumerate(atts):
        if _user_defined(att["Target"]):
            user = True
        else:
            plain = True
        if i == 0:
            apply(att)
        ep = _endpoint(att)
        if att["Target"] in endpoints:
            raise ConfigError(f"network {go_quote(att['Target'])} is specified multiple times")
        if i == 0 and len(atts) == 1 and ep is None:
            continue
        endpoints[att["Target"]] = ep or dict(_EMPTY_ENDPOINT)
    if user and plain:
        raise ConfigError("conflicting options: cannot attach both user-defined and "
                          "non-user-defined network-modes")
    return atts[0]["Target"], endpoints


def _security_opts(opts: list[str]) -> tuple[list[str] | None, list[str] | None,
                                             list[str] | None]:
    out: list[str] = []
    masked: list[str] | None = None
    readonly: list[str] | None = None
    for opt in opts:
        k, sep, val = opt.partition("=")
        if not sep and k != "no-new-privileges":
            k, sep, val = opt.partition(":")
        if (not sep or not val) and k != "no-new-privileges":
            raise ConfigError(f"Invalid --security-opt: {go_quote(opt)}")
        if opt == "systempaths=unconfined":
            masked, readonly = [], []
            continue
        if k == "seccomp" and val not in ("builtin", "unconfined"):
            try:
                with open(val, "rb") as f:
                    data = json.loads(f.read())
            except OSError as exc:
                raise ConfigError(f"opening seccomp profile ({val}) failed: open {val}: "
                                  f"{(exc.strerror or str(exc)).lower()}") from exc
            except ValueError as exc:
                raise ConfigError(f"compacting json for seccomp profile ({val}) failed: "
                                  f"{exc}") from exc
            opt = "seccomp=" + json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        out.append(opt)
    # docker filters its own list in place: given options leave [], never null.
    return (out if opts else None), masked, readonly


def _pid_ok(mode: str) -> bool:
    kind, sep, rest = mode.partition(":")
    return mode in ("", "host") or (kind == "container" and sep == ":" and bool(rest))


def build(params: Mapping[str, Any], image: str, cmd: Sequence[str], *,
          api_version: str = "1.45", environ: Mapping[str, str] | None = None,
          console_size: tuple[int, int] = (0, 0)) -> CreateRequest:
    """The create request docker 28 would send for these flags (flag values by dest)."""
    env_os = os.environ if environ is None else environ
    v = _Values(params)

    # Values first: a bad one fails as a flag error before anything else is looked at.
    memory = v.conv("memory", parse_size, 0)
    mem_res = v.conv("memory_reservation", parse_size, 0)
    mem_swap = v.conv("memory_swap", lambda s: -1 if s == "-1" else parse_size(s), 0)
    shm = v.conv("shm_size", parse_size, 0)
    nano = v.conv("cpus", parse_cpus, 0)
    cpu_shares = v.conv("cpu_shares", parse_int, 0)
    cpu_period = v.conv("cpu_period", parse_int, 0)
    cpu_quota = v.conv("cpu_quota", parse_int, 0)
    rt_period = v.conv("cpu_rt_period", parse_int, 0)
    rt_runtime = v.conv("cpu_rt_runtime", parse_int, 0)
    swappiness = v.conv("memory_swappiness", parse_int, -1)
    pids = v.conv("pids_limit", parse_int, 0)
    blkio = v.conv("blkio_weight", lambda s: parse_int(s, 16, signed=False), 0)
    oom_adj = v.conv("oom_score_adj", lambda s: parse_int(s, 64), 0)
    stop_timeout = v.conv("stop_timeout", lambda s: parse_int(s, 64), None)
    h_interval = v.conv("health_interval", parse_duration, 0)
    h_timeout = v.conv("health_timeout", parse_duration, 0)
    h_start = v.conv("health_start_period", parse_duration, 0)
    h_start_iv = v.conv("health_start_interval", parse_duration, 0)
    h_retries = v.conv("health_retries", lambda s: parse_int(s, 64), 0)
    ulimits = v.each("ulimit", parse_ulimit)
    read_bps = v.each("device_read_bps", lambda s: parse_throttle(s, False))
    write_bps = v.each("device_write_bps", lambda s: parse_throttle(s, False))
    read_iops = v.each("device_read_iops", lambda s: parse_throttle(s, True))
    write_iops = v.each("device_write_iops", lambda s: parse_throttle(s, True))
    weight_dev = v.each("blkio_weight_device", parse_weight_device)
    attach = v.each("attach", check_attach)
    cgroup_rules = v.each("device_cgroup_rule", check_cgroup_rule)
    dns = v.each("dns", check_ip)
    dns_search = v.each("dns_search", check_dns_search)
    extra_hosts = v.each("add_host", check_extra_host)
    labels_flag = v.each("label", check_label)
    sysctls = kv_map(v.each("sysctl", check_sysctl))
    mounts = v.each("mount", parse_mount)
    env_flag = [_env_lookup(e, env_os) for e in v.words("env")]
    for e in v.words("env"):
        if e.startswith("="):
            raise FlagValueError("-e, --env", e, f"invalid environment variable: {e}")

    if v.changed("gpus"):
        raise ConfigError("--gpus is not supported: ketch has no GPU device drivers")
    pull = v.text("pull", "missing")
    if pull not in ("always", "missing", "never"):
        raise ConfigError(f"invalid pull option: '{pull}': must be one of \"always\", "
                          "\"missing\" or \"never\"")
    platform = v.text("platform", env_os.get("DOCKER_DEFAULT_PLATFORM", ""))
    if platform and not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}", platform):
        raise ConfigError(f"error parsing specified platform: \"{platform}\": unknown "
                          "operating system or architecture: invalid argument")
    if v.changed("health_start_interval") and version_lt(api_version, "1.44"):
        raise VersionError(f'"--health-start-interval" requires API version 1.44, but the '
                          f"daemon's API version is {api_version}")

    mac = v.text("mac_address")
    if mac and not _valid_mac(mac.strip()):
        raise ConfigError(f"{mac} is not a valid mac address")
    interactive = v.flag("interactive")
    attach_stdin = "stdin" in attach or interactive
    attach_stdout = "stdout" in attach or not attach
    attach_stderr = "stderr" in attach or not attach

    binds: list[str] = []
    volumes: dict[str, Any] = {}
    for spec in v.words("volume"):
        bind, anon = parse_volume(spec)
        if bind is not None:
            binds.append(bind)
        else:
            volumes[anon] = {}
    tmpfs: dict[str, str] = {}
    for t in v.words("tmpfs"):
        k, _, val = t.partition(":")
        tmpfs[k] = val

    entrypoint: list[str] | None = None
    if v.changed("entrypoint"):
        entrypoint = [v.text("entrypoint")]

    port_bindings: dict[str, list[dict[str, str]]] = {}
    exposed: dict[str, Any] = {}
    for spec in v.words("publish"):
        for cport, ip, hport in parse_publish(spec):
            port_bindings.setdefault(cport, []).append({"HostIp": ip, "HostPort": hport})
            exposed[cport] = {}
    for spec in v.words("expose"):
        for p in parse_expose(spec):
            exposed[p] = {}

    devices = [parse_device(d) for d in v.words("device")]

    env: list[str] = []
    for path in v.words("env_file"):
        env += read_kv_file(path, True, env_os)
    env += env_flag
    label_lines: list[str] = []
    for path in v.words("label_file"):
        label_lines += read_kv_file(path, False, env_os)
    label_lines += labels_flag

    pid = v.text("pid")
    if not _pid_ok(pid):
        raise ConfigError("--pid: invalid PID mode")
    uts = v.text("uts")
    if uts not in ("", "host"):
        raise ConfigError("--uts: invalid UTS mode")
    userns = v.text("userns")
    if userns not in ("", "host"):
        raise ConfigError("--userns: invalid USER mode")
    cgroupns = v.text("cgroupns")
    if cgroupns not in ("", "host", "private"):
        raise ConfigError("--cgroupns: invalid CGROUP mode")

    restart_text = v.text("restart", "no")
    restart: dict[str, Any] = {"Name": "", "MaximumRetryCount": 0}
    if restart_text:
        name, sep, count = restart_text.partition(":")
        if sep and not name:
            raise ConfigError("invalid restart policy format: no policy provided before colon")
        if count:
            try:
                restart["MaximumRetryCount"] = parse_int(count)
            except ValueError:
                raise ConfigError("invalid restart policy format: maximum retry count must "
                                  "be an integer") from None
        restart["Name"] = name

    log_driver = v.text("log_driver")
    log_opts = kv_map(v.words("log_opt"))
    if log_driver == "none" and v.words("log_opt"):
        raise ConfigError(f"invalid logging opts for driver {log_driver}")

    security, masked, readonly = _security_opts(v.words("security_opt"))
    storage: dict[str, str] = {}
    for o in v.words("storage_opt"):
        k, sep, val = o.partition("=")
        if not sep:
            raise ConfigError("invalid storage option")
        storage[k] = val

    health: dict[str, Any] | None = None
    have_health = bool(v.text("health_cmd") or h_interval or h_timeout or h_start or h_retries
                       or h_start_iv)
    if v.flag("no_healthcheck"):
        if have_health:
            raise ConfigError("--no-healthcheck conflicts with --health-* options")
        health = {"Test": ["NONE"]}
    elif have_health:
        for what, n in (("interval", h_interval), ("timeout", h_timeout),
                        ("retries", h_retries), ("start-period", h_start),
                        ("start-interval", h_start_iv)):
            if n < 0:
                raise ConfigError(f"--health-{what} cannot be negative")
        health = {}
        if v.text("health_cmd"):
            health["Test"] = ["CMD-SHELL", v.text("health_cmd")]
        for key, n in (("Interval", h_interval), ("Timeout", h_timeout),
                       ("StartPeriod", h_start), ("StartInterval", h_start_iv),
                       ("Retries", h_retries)):
            if n:
                health[key] = n

    auto_remove = v.flag("rm")
    if auto_remove and restart["Name"] not in ("", "no"):
        raise ConfigError("conflicting options: cannot specify both --restart and --rm")

    network_mode, endpoints = _networking(v)
    if version_lt(api_version, "1.44") and any(
            (ep or {}).get("MacAddress") for ep in endpoints.values()):
        raise VersionError(f'"specify mac-address per network" requires API version 1.44, but '
                          f"the daemon's API version is {api_version}")
    annotations = kv_map(v.words("annotation"))
    if annotations and version_lt(api_version, "1.43"):
        raise VersionError(f'"--annotation" requires API version 1.43, but the daemon\'s API '
                          f"version is {api_version}")

    tty = v.flag("tty")
    config: dict[str, Any] = {
        "Hostname": v.text("hostname"),
        "Domainname": v.text("domainname"),
        "User": v.text("user"),
        "AttachStdin": attach_stdin,
        "AttachStdout": attach_stdout,
        "AttachStderr": attach_stderr,
    }
    if exposed:
        config["ExposedPorts"] = exposed
    config |= {
        "Tty": tty,
        "OpenStdin": interactive,
        "StdinOnce": interactive and attach_stdin,
        "Env": env or None,
        "Cmd": list(cmd) or None,
    }
    if health is not None:
        config["Healthcheck"] = health
    config |= {
        "Image": image,
        "Volumes": volumes,
        "WorkingDir": v.text("workdir"),
        "Entrypoint": entrypoint,
        "OnBuild": None,
        "Labels": kv_map(label_lines),
    }
    if v.text("stop_signal"):
        config["StopSignal"] = v.text("stop_signal")
    if stop_timeout is not None:
        config["StopTimeout"] = stop_timeout

    hc: dict[str, Any] = {
        "Binds": binds or None,
        "ContainerIDFile": v.text("cidfile"),
        "LogConfig": {"Type": log_driver, "Config": log_opts},
        "NetworkMode": network_mode,
        "PortBindings": port_bindings,
        "RestartPolicy": restart,
        "AutoRemove": auto_remove,
        "VolumeDriver": v.text("volume_driver"),
        "VolumesFrom": v.words("volumes_from") or None,
        "ConsoleSize": list(console_size),
        "CapAdd": [normalize_cap(c) for c in v.words("cap_add")] or None,
        "CapDrop": [normalize_cap(c) for c in v.words("cap_drop")] or None,
        "CgroupnsMode": cgroupns,
        "Dns": dns,
        "DnsOptions": v.words("dns_option"),
        "DnsSearch": dns_search,
        "ExtraHosts": extra_hosts or None,
        "GroupAdd": v.words("group_add") or None,
        "IpcMode": v.text("ipc"),
        "Cgroup": "",
        "Links": None,
        "OomScoreAdj": oom_adj,
        "PidMode": pid,
        "Privileged": v.flag("privileged"),
        "PublishAllPorts": v.flag("publish_all"),
        "ReadonlyRootfs": v.flag("read_only"),
        "SecurityOpt": security,
    }
    if storage:
        hc["StorageOpt"] = storage
    if tmpfs:
        hc["Tmpfs"] = tmpfs
    hc |= {"UTSMode": uts, "UsernsMode": userns, "ShmSize": shm}
    if sysctls:
        hc["Sysctls"] = sysctls
    if v.text("runtime"):
        hc["Runtime"] = v.text("runtime")
    hc |= {
        "Isolation": "",
        "CpuShares": cpu_shares,
        "Memory": memory,
        "NanoCpus": nano,
        "CgroupParent": v.text("cgroup_parent"),
        "BlkioWeight": blkio,
        "BlkioWeightDevice": weight_dev,
        "BlkioDeviceReadBps": read_bps,
        "BlkioDeviceWriteBps": write_bps,
        "BlkioDeviceReadIOps": read_iops,
        "BlkioDeviceWriteIOps": write_iops,
        "CpuPeriod": cpu_period,
        "CpuQuota": cpu_quota,
        "CpuRealtimePeriod": rt_period,
        "CpuRealtimeRuntime": rt_runtime,
        "CpusetCpus": v.text("cpuset_cpus"),
        "CpusetMems": v.text("cpuset_mems"),
        "Devices": devices,
        "DeviceCgroupRules": cgroup_rules or None,
        "DeviceRequests": None,
        "MemoryReservation": mem_res,
        "MemorySwap": mem_swap,
        "MemorySwappiness": swappiness,
        "OomKillDisable": v.flag("oom_kill_disable"),
        "PidsLimit": pids,
        "Ulimits": ulimits,
        "CpuCount": 0,
        "CpuPercent": 0,
        "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
    }
    if mounts:
        hc["Mounts"] = mounts
    hc |= {"MaskedPaths": masked, "ReadonlyPaths": readonly}
    if v.p.get("init") is not None:
        hc["Init"] = bool(v.p.get("init"))
    if annotations:
        hc["Annotations"] = annotations
    if swappiness != -1 and not 0 <= swappiness <= 100:
        raise ConfigError(f"invalid value: {swappiness}. Valid memory swappiness range is 0-100")

    config["HostConfig"] = hc
    config["NetworkingConfig"] = {"EndpointsConfig": endpoints}

    detach = v.flag("detach")
    keys = v.text("detach_keys")
    if keys:
        check_detach_keys(keys)
    if detach:
        if attach:
            raise ConfigError("conflicting options: cannot specify both --attach and --detach")
        config["AttachStdin"] = config["AttachStdout"] = config["AttachStderr"] = False
        config["StdinOnce"] = False
    sig = v.p.get("sig_proxy")
    return CreateRequest(body=config, name=v.text("name"), platform=platform, pull=pull,
                         cidfile=v.text("cidfile"), detach=detach, detach_keys=keys,
                         sig_proxy=True if sig is None else bool(sig), auto_remove=auto_remove)


__all__ = ["CONTAINER_FLAGS", "CREATE_FLAGS", "RUN_FLAGS", "ConfigError", "CreateRequest",
           "Flag", "FlagValueError", "VersionError", "build", "options",
           "parse_cpus", "parse_duration", "parse_size"]
