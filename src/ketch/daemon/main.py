"""ketchd's life, from flags to a clean exit.

    ketchd --root /var/lib/ketch --exec-root /run/ketch -H unix:///run/ketch/ketch.sock

1. flags + daemon.json -> Settings (a key set both ways is refused, as dockerd does);
2. the root lock (``<root>/ketchd.lock``, fcntl): one daemon per root, ever;
3. the pidfile; 4. the listeners (unix socket mode 0660, group ``ketch`` if it exists);
5. serve until SIGTERM/SIGINT; SIGHUP re-reads daemon.json;
6. on the way out: listeners closed, socket and pidfile removed, lock released.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import grp
import ipaddress
import logging
import os
import platform
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ketch import __version__
from ketch.daemon import config as cfgmod
from ketch.errors import Conflict, InvalidArgument, KetchError

if TYPE_CHECKING:
    from ketch.api.routers.system import HostFacts

log = logging.getLogger("ketchd")

DEFAULT_HOST = "unix:///run/ketch/ketch.sock"
DEFAULT_ROOT = "/var/lib/ketch"
DEFAULT_EXEC_ROOT = "/run/ketch"
DEFAULT_GROUP = "ketch"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "error": logging.ERROR, "fatal": logging.CRITICAL}
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
          "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
          "riscv64": "riscv64"}


@dataclass(slots=True)
class Settings:
    hosts: list[str]
    root: str
    exec_root: str
    pidfile: str
    log_level: str
    debug: bool
    group: str
    group_given: bool
    tls: bool
    tlsverify: bool
    tlscacert: str | None
    tlscert: str | None
    tlskey: str | None
    insecure_tcp: bool
    config_file: str
    labels: list[str] = field(default_factory=list)
    cgroup_parent: str = "/ketch"
    log_driver: str = "json-file"
    log_opts: dict[str, str] = field(default_factory=dict)
    init_path: str | None = None
    bridge: str = "ketch0"
    bip: str | None = None
    address_pools: list[dict[str, Any]] = field(default_factory=list)
    icc: bool = True
    ipv6: bool = False
    fixed_cidr_v6: str | None = None
    default_ulimits: list[tuple[str, int, int]] = field(default_factory=list)  # name soft hard
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    registry_endpoints: dict[str, str] = field(default_factory=dict)   # ketch's own
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5
    # ketch's own (dockerd has only /etc/docker/certs.d): where <host>/ca.crt are looked up.
    registry_certs_dirs: list[str] = field(
        default_factory=lambda: ["/etc/ketch/certs.d", "/etc/docker/certs.d"])


# flag dest -> daemon.json key
_FLAG_KEYS = {"hosts": "hosts", "root": "data-root", "exec_root": "exec-root",
              "pidfile": "pidfile", "log_level": "log-level", "debug": "debug",
              "group": "group", "tls": "tls", "tlsverify": "tlsverify",
              "tlscacert": "tlscacert", "tlscert": "tlscert", "tlskey": "tlskey",
              "cgroup_parent": "cgroup-parent", "bridge": "bridge", "bip": "bip",
              "default_ulimits": "default-ulimits", "log_driver": "log-driver",
              "log_opts": "log-opts", "ipv6": "ipv6", "fixed_cidr_v6": "fixed-cidr-v6",
              "icc": "icc", "address_pools": "default-address-pools",
              "insecure_registries": "insecure-registries",
              "registry_mirrors": "registry-mirrors",
              "registry_endpoints": "registry-endpoints",
              "max_concurrent_downloads": "max-concurrent-downloads",
              "max_concurrent_uploads": "max-concurrent-uploads"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ketchd", description="The ketch daemon (Docker Engine API)")
    # Defaults are None so that "given on the command line" can be told apart
    # from "defaulted": only given flags conflict with daemon.json.
    p.add_argument("-H", "--host", dest="hosts", action="append",
                   help=f"socket(s) to listen on (default {DEFAULT_HOST})")
    p.add_argument("--root", "--data-root", dest="root",
                   help=f"persistent state (default {DEFAULT_ROOT})")
    p.add_argument("--exec-root", dest="exec_root",
                   help=f"runtime state (default {DEFAULT_EXEC_ROOT})")
    p.add_argument("-p", "--pidfile", dest="pidfile",
                   help="pid file (default <exec-root>/ketchd.pid)")
    p.add_argument("-l", "--log-level", dest="log_level", choices=sorted(LOG_LEVELS))
    p.add_argument("-D", "--debug", dest="debug", action="store_const", const=True)
    p.add_argument("-G", "--group", dest="group",
                   help=f"group owning the unix socket (default {DEFAULT_GROUP}, else root)")
    p.add_argument("--config-file", dest="config_file",
                   help=f"daemon.json (default {cfgmod.DEFAULT_CONFIG_FILE})")
    p.add_argument("--tls", dest="tls", action="store_const", const=True)
    p.add_argument("--tlsverify", dest="tlsverify", action="store_const", const=True)
    p.add_argument("--tlscacert", dest="tlscacert")
    p.add_argument("--tlscert", dest="tlscert")
    p.add_argument("--tlskey", dest="tlskey")
    p.add_argument("-b", "--bridge", dest="bridge",
                   help='the default network\'s bridge interface (default ketch0; "none": none)')
    p.add_argument("--bip", dest="bip", help="the default bridge's address and subnet")
    p.add_argument("--ipv6", dest="ipv6", action="store_const", const=True,
                   help="IPv6 on the default bridge (with --fixed-cidr-v6)")
    p.add_argument("--fixed-cidr-v6", dest="fixed_cidr_v6",
                   help="the default bridge's IPv6 subnet")
    p.add_argument("--icc", dest="icc", type=_flag_bool, metavar="BOOL",
                   help="traffic between containers of the default bridge (default true)")
    p.add_argument("--default-address-pool", dest="address_pools", action="append",
                   metavar="base=CIDR,size=N",
                   help="pools networks' subnets are chosen from (default: Docker's)")
    p.add_argument("--log-driver", dest="log_driver",
                   help="default driver for container logs (json-file, local, none)")
    p.add_argument("--log-opt", dest="log_opts", action="append", metavar="KEY=VALUE",
                   help="default options of the log driver (max-size, max-file, ...)")
    p.add_argument("--default-ulimit", dest="default_ulimits", action="append",
                   metavar="NAME=SOFT[:HARD]",
                   help="default ulimits for containers (default: the daemon's own)")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append",
                   metavar="HOST[:PORT]|CIDR",
                   help="registries reached over plain HTTP or unverified TLS")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append",
                   metavar="URL", help="mirrors tried first for Docker Hub images")
    p.add_argument("--registry-endpoint", dest="registry_endpoints", action="append",
                   metavar="HOST=URL", help="reach registry HOST at URL instead (docker.io="
                   "http://127.0.0.1:5000 keeps Docker Hub names on a local registry)")
    p.add_argument("--registry-certs-dir", dest="registry_certs_dirs", action="append",
                   metavar="DIR", help="directories of <host[:port]>/ca.crt, client.cert and "
                   "client.key for registries (default /etc/ketch/certs.d, /etc/docker/certs.d)")
    p.add_argument("--max-concurrent-downloads", dest="max_concurrent_downloads", type=int,
                   metavar="N", help="layers downloaded at once by all pulls (default 3)")
    p.add_argument("--max-concurrent-uploads", dest="max_concurrent_uploads", type=int,
                   metavar="N", help="layers uploaded at once by all pushes (default 5)")
    p.add_argument("--cgroup-parent", dest="cgroup_parent",
                   help="parent cgroup of all containers (default /ketch)")
    p.add_argument("--insecure-tcp", dest="insecure_tcp", action="store_true",
                   help="allow tcp:// without TLS (anyone who reaches it is root)")
    p.add_argument("-v", "--version", action="store_true")
    return p


def _flag_bool(word: str) -> bool:
    if word.lower() in ("1", "t", "true"):
        return True
    if word.lower() in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {word!r}")


def _address_pool(word: str) -> dict[str, Any]:
    """``--default-address-pool base=10.10.0.0/16,size=24`` in daemon.json's shape."""
    fields = dict(part.partition("=")[::2] for part in word.split(","))
    if set(fields) != {"base", "size"} or not fields["size"].isdigit():
        raise InvalidArgument(f"invalid default address pool {word!r}: want "
                              "base=CIDR,size=N")
    return {"base": fields["base"], "size": int(fields["size"])}


def settings_from(ns: argparse.Namespace) -> tuple[Settings, list[str]]:
    """Flags over daemon.json over defaults; the Docker keys ignored, for a warning."""
    path = ns.config_file or cfgmod.default_path()
    data = cfgmod.load(path, required=ns.config_file is not None)
    flags = {_FLAG_KEYS[k]: v for k, v in vars(ns).items() if k in _FLAG_KEYS and v is not None}
    if "log-opts" in flags:
        opts = {}
        for word in flags["log-opts"]:
            key, eq, value = word.partition("=")
            if not eq:
                raise InvalidArgument(f"invalid key value pair format in driver options: "
                                      f"{word}")     # dockerd's opts.ValidateLogOpt words
            opts[key] = value
        flags["log-opts"] = opts
    if "registry-endpoints" in flags:
        pairs = [w.partition("=") for w in flags["registry-endpoints"]]
        bad = [h + eq + u for h, eq, u in pairs if not eq or not h or not u]
        if bad:
            raise InvalidArgument(f"invalid registry endpoint {bad[0]!r}: want HOST=URL")
        flags["registry-endpoints"] = {h: u for h, _, u in pairs}
    if "default-address-pools" in flags:
        flags["default-address-pools"] = [_address_pool(w) for w in
                                           flags["default-address-pools"]]
    if "default-ulimits" in flags:     # the flag's words in daemon.json's shape
        flags["default-ulimits"] = {u["Name"]: u for u in
                                    map(cfgmod.parse_ulimit, flags["default-ulimits"])}
    merged = cfgmod.merge(flags, data, path)
    exec_root = merged.get("exec-root", DEFAULT_EXEC_ROOT)
    s = Settings(
        hosts=list(merged.get("hosts") or [DEFAULT_HOST]),
        root=os.path.abspath(merged.get("data-root", DEFAULT_ROOT)),
        exec_root=os.path.abspath(exec_root),
        pidfile=os.path.abspath(merged.get("pidfile", os.path.join(exec_root, "ketchd.pid"))),
        log_level=merged.get("log-level", "info"),
        debug=bool(merged.get("debug", False)),
        group=merged.get("group", DEFAULT_GROUP),
        group_given="group" in merged,
        tls=bool(merged.get("tls", False)),
        tlsverify=bool(merged.get("tlsverify", False)),
        tlscacert=merged.get("tlscacert"),
        tlscert=merged.get("tlscert"),
        tlskey=merged.get("tlskey"),
        insecure_tcp=bool(ns.insecure_tcp),
        config_file=path,
        labels=list(merged.get("labels") or []),
        cgroup_parent=merged.get("cgroup-parent") or "/ketch",
        log_driver=merged.get("log-driver") or "json-file",
        log_opts={str(k): str(v) for k, v in (merged.get("log-opts") or {}).items()},
        init_path=merged.get("init-path"),
        bridge=merged.get("bridge") or "ketch0",
        bip=merged.get("bip"),
        address_pools=list(merged.get("default-address-pools") or []),
        icc=bool(merged.get("icc", True)),
        ipv6=bool(merged.get("ipv6", False)),
        fixed_cidr_v6=merged.get("fixed-cidr-v6"),
        default_ulimits=cfgmod.default_ulimits(merged.get("default-ulimits"), path),
        insecure_registries=[str(x) for x in merged.get("insecure-registries") or []],
        registry_mirrors=[str(x) for x in merged.get("registry-mirrors") or []],
        registry_endpoints={str(k): str(v) for k, v in
                            (merged.get("registry-endpoints") or {}).items()},
        max_concurrent_downloads=int(merged.get("max-concurrent-downloads", 3)),
        max_concurrent_uploads=int(merged.get("max-concurrent-uploads", 5)),
    )
    if ns.registry_certs_dirs:
        s.registry_certs_dirs = [os.path.abspath(d) for d in ns.registry_certs_dirs]
    for key in ("max-concurrent-downloads", "max-concurrent-uploads"):
        if int(merged.get(key, 1)) < 1:
            raise InvalidArgument(f"invalid {key}: must be at least 1")
    from ketch.engine.model import LogConfig, verify_log_config

    try:        # names only: the values are checked when a container's log starts
        verify_log_config(LogConfig(type=s.log_driver, config=dict(s.log_opts)))
    except KetchError as exc:
        raise InvalidArgument(f"failed to set log opts: {exc}") from None
    if s.log_level not in LOG_LEVELS:
        raise InvalidArgument(f"unable to configure the ketch daemon with file {path}: "
                              f"log-level: invalid value {s.log_level!r}")
    return s, cfgmod.ignored(data)


# --- host facts for /version and /info ------------------------------------------------


def _os_release() -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "PRETTY_NAME":
                    return value.strip().strip('"')
    return "<unknown>"


def _mem_total() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _cgroups() -> tuple[str, frozenset[str]]:
    """The cgroup version ("2" only on a pure v2 host; hybrid counts as "1", as
    dockerd reports it) and the controllers the host offers, for /info's
    MemoryLimit, PidsLimit, ... flags: read from the host, not assumed."""
    from ketch.linux.cgroups import Mode, detect_mode, read_mounts, unified_mount, v1_mounts

    try:
        mounts = read_mounts()
        mode = detect_mode()
    except KetchError:
        return "", frozenset()
    if mode is Mode.V2:
        m = unified_mount(mounts)
        controllers: set[str] = set()
        if m is not None:
            with contextlib.suppress(OSError), open(f"{m.mountpoint}/cgroup.controllers") as f:
                controllers = set(f.read().split())
        return "2", frozenset(controllers)
    return "1", frozenset(c for c in v1_mounts() if not c.startswith("name="))


def _git_commit() -> str:
    """The commit of the source tree ketch runs from, when it is a git checkout."""
    src = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", src, "rev-parse", "--short=7", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _engine_id(root: str) -> str:
    """A stable daemon ID, kept under --root as dockerd keeps its engine-id."""
    path = os.path.join(root, "engine-id")
    with contextlib.suppress(OSError), open(path) as f:
        value = f.read().strip()
        if value:
            return value
    value = str(uuid.uuid4())
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(value)
    os.replace(tmp, path)
    return value


class HostSystem:
    """The system backend of the API: facts read from the host, nothing invented.

    Images are counted per request by ``count_images`` (all of them,
    intermediate ones included, as dockerd's CountImages); containers by
    ``count_containers`` (running, paused, stopped); without them, 0.
    """

    def __init__(self, settings: Settings, warnings: list[str],
                 count_images: Callable[[], int] | None = None,
                 count_containers: Callable[[], tuple[int, int, int]] | None = None) -> None:
        from ketch.api.routers.system import HostFacts

        self._count_images = count_images
        self.count_containers = count_containers

        uname = platform.uname()
        cgroup_version, controllers = _cgroups()
        self.settings = settings
        from ketch.engine.sysinfo import probe
        from ketch.engine.sysinfo import warnings as host_warnings

        # Probed once: /info's warnings here, create's validation in the engine.
        self.sysinfo = host = probe(cgroup2=cgroup_version == "2",
                                    runtimes=("runc", "ketch"), default_runtime="runc")
        self._facts = HostFacts(
            id=_engine_id(settings.root),
            name=socket.gethostname(),
            server_version=__version__,
            git_commit=_git_commit(),
            build_time="",
            runtime_version=f"{platform.python_implementation()} {platform.python_version()}",
            os="linux",
            arch=GOARCH.get(uname.machine, uname.machine),
            machine=uname.machine,
            kernel_version=uname.release,
            operating_system=_os_release(),
            ncpu=len(os.sched_getaffinity(0)),
            mem_total=_mem_total(),
            root_dir=settings.root,
            cgroup_version=cgroup_version,
            cgroup_controllers=controllers,
            log_driver=settings.log_driver,
            blkio_weight=host.blkio_weight,
            warnings=[*warnings, *host_warnings(host)],
            registry_config=registry_config(settings),
        )

    def facts(self) -> HostFacts:
        images = self._count_images() if self._count_images is not None else 0
        running, paused, stopped = (self.count_containers() if self.count_containers
                                    else (0, 0, 0))
        return replace(self._facts, debug=self.settings.debug, labels=list(self.settings.labels),
                       images=images, containers=running + paused + stopped,
                       containers_running=running, containers_paused=paused,
                       containers_stopped=stopped)


def registry_config(settings: Settings) -> dict[str, Any]:
    """/info's RegistryConfig, as moby's registry.ServiceConfig shows the options.

    Loopback is always insecure (dockerd's default CIDRs); an insecure entry
    that is a network goes to InsecureRegistryCIDRs, a host name becomes an
    index of its own marked not secure.
    """
    cidrs = ["::1/128", "127.0.0.0/8"]
    mirrors = [m if m.endswith("/") else m + "/" for m in settings.registry_mirrors]
    indexes: dict[str, Any] = {"docker.io": {"Name": "docker.io", "Mirrors": mirrors,
                                             "Secure": True, "Official": True}}
    for entry in settings.insecure_registries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            indexes[entry] = {"Name": entry, "Mirrors": [], "Secure": False, "Official": False}
            continue
        if str(net) not in cidrs:
            cidrs.append(str(net))
    return {"AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": cidrs, "IndexConfigs": indexes,
            "Mirrors": mirrors or None}


# --- the root lock and the pidfile ---------------------------------------------------


def _proc_is_ketchd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"ketchd" in cmdline or b"ketch.daemon" in cmdline


def lock_root(root: str) -> int:
    """Holds ``<root>/ketchd.lock`` for the daemon's life; a second daemon is refused."""
    os.makedirs(root, mode=0o711, exist_ok=True)
    path = os.path.join(root, "ketchd.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise Conflict(f"failed to start daemon, ensure ketchd is not running on root "
                           f"{root}: {path} is held by process with PID {holder}") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def write_pidfile(path: str) -> None:
    """dockerd's check: a live ketchd in the pidfile refuses the start."""
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        pid = int(f.read().strip())
        if pid != os.getpid() and os.path.exists(f"/proc/{pid}") and _proc_is_ketchd(pid):
            raise Conflict(f"failed to start daemon, ensure ketchd is not running or delete "
                           f"{path}: process with PID {pid} is still running")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)


# --- listeners ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    unix_path: str | None = None
    tcp_addr: tuple[str, int] | None = None


def plan_listeners(s: Settings) -> tuple[list[Listener], list[str]]:
    """Parses --host values; TCP only with TLS or --insecure-tcp (then a warning)."""
    from urllib.parse import urlsplit

    out: list[Listener] = []
    warnings: list[str] = []
    for host in s.hosts:
        u = urlsplit(host)
        if u.scheme == "unix" or host.startswith("/"):
            path = u.path if u.scheme == "unix" else host
            if not path:
                raise InvalidArgument(f"invalid --host {host!r}: no socket path")
            out.append(Listener(host, unix_path=os.path.abspath(path)))
        elif u.scheme == "tcp":
            if not u.hostname:
                raise InvalidArgument(f"invalid --host {host!r}: no address")
            tls = s.tls or s.tlsverify
            if not tls and not s.insecure_tcp:
                raise InvalidArgument(
                    f"refusing to listen on {host} without TLS: anyone who can reach it "
                    "controls the host as root; use --tlsverify with --tlscacert, --tlscert "
                    "and --tlskey, or --insecure-tcp if you accept that")
            if tls and not (s.tlscert and s.tlskey):
                raise InvalidArgument(f"--host {host}: --tls needs --tlscert and --tlskey")
            if not tls:
                warnings.append(f"WARNING: API is accessible on http://{u.hostname}:"
                                f"{u.port or 2375} without encryption.")
            out.append(Listener(host, tcp_addr=(u.hostname, u.port or (2376 if tls else 2375))))
        else:
            raise InvalidArgument(f"invalid --host {host!r}: only unix:// and tcp:// are supported")
    return out, warnings


def tls_context(s: Settings) -> ssl.SSLContext | None:
    if not (s.tls or s.tlsverify):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert s.tlscert and s.tlskey
    ctx.load_cert_chain(s.tlscert, s.tlskey)
    if s.tlsverify:
        if not s.tlscacert:
            raise InvalidArgument("--tlsverify needs --tlscacert")
        ctx.load_verify_locations(s.tlscacert)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def socket_gid(s: Settings) -> int:
    """The ``ketch`` group if it exists, else root; a named group that is missing is an error."""
    try:
        return grp.getgrnam(s.group).gr_gid
    except KeyError:
        if s.group_given and s.group != DEFAULT_GROUP:
            raise InvalidArgument(f"group {s.group} not found") from None
        return 0


def prepare_unix_path(path: str) -> None:
    """Removes a stale socket, but never one a live daemon answers on."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise InvalidArgument(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise Conflict(f"failed to start daemon: another daemon is listening on {path}")


# --- logging --------------------------------------------------------------------------


class _LogfmtFormatter(logging.Formatter):
    """dockerd's logrus text format, so log scrapers that know it keep working."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = {"WARNING": "warning", "CRITICAL": "fatal"}.get(record.levelname,
                                                               record.levelname.lower())
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"')
        micros = int((record.created % 1) * 1_000_000)
        line = f'time="{ts}.{micros:06d}Z" level={level} msg="{msg}"'
        if record.exc_info:
            # The traceback goes under its line: a bug must be findable from the log.
            line += "\n" + self.formatException(record.exc_info)
        return line


def set_log_level(s: Settings) -> None:
    logging.getLogger().setLevel(logging.DEBUG if s.debug else LOG_LEVELS[s.log_level])


# --- the daemon -----------------------------------------------------------------------


class Daemon:
    def __init__(self, ns: argparse.Namespace, settings: Settings, ignored: list[str]) -> None:
        self.ns = ns
        self.settings = settings
        self.ignored = ignored
        self.stop = asyncio.Event()
        self.unix_paths: list[str] = []
        self.supervisor_proc: Any = None

    def reload(self) -> None:
        """SIGHUP: re-read daemon.json; a bad file is logged and the old settings kept."""
        try:
            new, ignored = settings_from(self.ns)
        except KetchError as exc:
            log.error("Error reconfiguring the daemon: %s", exc)
            return
        old = self.settings
        for name in ("hosts", "root", "exec_root", "pidfile", "group", "tls", "tlsverify",
                     "tlscacert", "tlscert", "tlskey"):
            if getattr(old, name) != getattr(new, name):
                log.warning("%s changed in %s; it takes effect at the next start",
                            name, new.config_file)
        old.log_level, old.debug, old.labels = new.log_level, new.debug, new.labels
        set_log_level(old)
        log.info("Reloaded configuration: log-level=%s debug=%s labels=%s",
                 old.log_level, old.debug, old.labels)
        if ignored:
            log.warning("daemon.json keys not supported by ketch yet, ignored: %s",
                        ", ".join(ignored))

    async def start_engine(self, images: Any, backend: HostSystem,
                           events: Any = None) -> Any:
        """Connect to the supervisor (starting one if none answers), then reconcile.

        The supervisor outlives ketchd (containers keep running across a
        daemon restart); a new ketchd finds it by its socket.
        """
        from ketch.engine import supervisor_client as supc
        from ketch.engine.containers import Engine, EngineOptions
        from ketch.engine.model import Ulimit
        from ketch.engine.network import NetworkOptions
        from ketch.errors import NotSupported, Unavailable

        s = self.settings
        sup_root = os.path.join(s.root, "supervisor")
        try:
            sup = await supc.SupervisorClient.connect(s.exec_root)
        except NotSupported:
            log.info("upgrading the container supervisor in place")
            await asyncio.to_thread(supc.request_upgrade, s.exec_root)
            sup = await supc.SupervisorClient.connect(s.exec_root)
        except Unavailable:
            cgroup = s.cgroup_parent.rstrip("/") + "-supervisor"
            self.supervisor_proc = await asyncio.to_thread(
                supc.spawn, s.exec_root, sup_root, cgroup=cgroup)
            log.info("started the container supervisor (pid %d)", self.supervisor_proc.pid)
            sup = await supc.SupervisorClient.connect(s.exec_root)
        cgroup_version, _ = _cgroups()
        engine = Engine(EngineOptions(root=s.root, exec_root=s.exec_root,
                                      sysinfo=backend.sysinfo,
                                      cgroup_parent=s.cgroup_parent, log_driver=s.log_driver,
                                      log_opts=dict(s.log_opts), init_path=s.init_path,
                                      cgroup2=cgroup_version == "2",
                                      default_ulimits=[Ulimit(name=n, soft=soft, hard=hard)
                                                       for n, soft, hard in s.default_ulimits],
                                      network=NetworkOptions(bridge=s.bridge, bip=s.bip,
                                                             address_pools=s.address_pools,
                                                             icc=s.icc, ipv6=s.ipv6,
                                                             fixed_cidr_v6=s.fixed_cidr_v6)),
                        images, sup,
                        on_event=events.container_event if events is not None else None)
        await engine.reconcile()

        def count() -> tuple[int, int, int]:
            states = [c.state.status for c in engine.store.all()]
            running = sum(1 for st in states if st == "running")
            paused = sum(1 for st in states if st == "paused")
            return running, paused, len(states) - running - paused

        backend.count_containers = count
        return engine

    def distribution(self, images: Any, eventing: Any) -> Any:
        """The registry client and the pull/push machinery over the image store."""
        from ketch import __version__ as version
        from ketch.engine.distribution import Distribution
        from ketch.registry.client import Registries, RegistryOptions

        s = self.settings
        options = RegistryOptions(insecure_registries=tuple(s.insecure_registries),
                                  mirrors=tuple(s.registry_mirrors),
                                  endpoints=tuple(sorted(s.registry_endpoints.items())),
                                  certs_dirs=tuple(s.registry_certs_dirs),
                                  user_agent=f"ketch/{version}")
        return Distribution(images, Registries(options),
                            max_downloads=s.max_concurrent_downloads,
                            max_uploads=s.max_concurrent_uploads, on_event=eventing.log)

    async def serve(self) -> None:
        from aiohttp import web

        from ketch.api import make_app
        from ketch.image.service import ImageService

        s = self.settings
        listeners, warnings = plan_listeners(s)
        for w in warnings:
            log.warning("%s", w)
        images = ImageService(os.path.join(s.root, "image"))
        backend = HostSystem(s, warnings, count_images=lambda: len(images.list(all=True)))
        from ketch.engine.events import EventBus, EventingImages

        events = EventBus()
        engine = await self.start_engine(images, backend, events)
        eventing = EventingImages(images, events)
        distribution = self.distribution(images, eventing)
        from ketch.engine.builder import BuildService

        builder = BuildService(engine, distribution, loop=asyncio.get_running_loop(),
                               on_image_event=eventing.log)
        app = make_app(backend, eventing, engine, events, distribution=distribution,
                       builder=builder)
        # Open streams (wait, logs -f, events, attach) are cut after a short grace
        # period: containers outlive the daemon, their clients reconnect.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            ctx = tls_context(s)
            gid = socket_gid(s) if any(lst.unix_path for lst in listeners) else 0
            for lst in listeners:
                if lst.unix_path is not None:
                    prepare_unix_path(lst.unix_path)
                    site: web.BaseSite = web.UnixSite(runner, lst.unix_path)
                    await site.start()
                    self.unix_paths.append(lst.unix_path)
                    os.chown(lst.unix_path, 0, gid)
                    os.chmod(lst.unix_path, 0o660)
                else:
                    assert lst.tcp_addr is not None
                    site = web.TCPSite(runner, lst.tcp_addr[0], lst.tcp_addr[1], ssl_context=ctx)
                    await site.start()
                log.info("API listen on %s", lst.host)
            log.info("Daemon has completed initialization")
            await self.stop.wait()
            log.info("Processing signal 'terminated'")
        finally:
            events.close()
            await runner.cleanup()
            distribution.close()
            await engine.close()
            await engine.sup.close()
            for path in self.unix_paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            log.info("Daemon shutdown complete")


def run(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    if ns.version:
        print(f"ketchd version {__version__}")
        return 0
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogfmtFormatter())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    if os.geteuid() != 0:
        log.error("ketchd needs to be started with root privileges")
        return 1
    lock_fd = -1
    pidfile_written = False
    settings: Settings | None = None
    try:
        settings, ignored = settings_from(ns)
        set_log_level(settings)
        if ignored:
            log.warning("daemon.json keys not supported by ketch yet, ignored: %s",
                        ", ".join(ignored))
        log.info("Starting up")
        lock_fd = lock_root(settings.root)
        os.makedirs(settings.exec_root, mode=0o700, exist_ok=True)
        write_pidfile(settings.pidfile)
        pidfile_written = True
        asyncio.run(Daemon(ns, settings, ignored).serve())
        return 0
    except KetchError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("failed to start daemon: %s", exc)
        return 1
    finally:
        if pidfile_written and settings is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(settings.pidfile)
        if lock_fd >= 0:
            os.close(lock_fd)
