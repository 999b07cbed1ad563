"""daemon.json: Docker's keys where they apply, refused as dockerd refuses.

    cfg = load("/etc/ketch/daemon.json")       # {} when the file is absent
    merged = merge(flags_given, cfg, path)     # conflict if both set a key

An unknown key stops the daemon with dockerd's message, because a silently
ignored typo ("log-levl") is worse than a refusal. Docker keys that ketch
does not act on yet are accepted and named in a warning, so a daemon.json
written for dockerd still starts ketchd and says what is not honoured.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ketch.errors import InvalidArgument

DEFAULT_CONFIG_FILE = "/etc/ketch/daemon.json"

# Keys ketchd honours today, and the Python type each must have.
HONOURED: dict[str, type | tuple[type, ...]] = {
    "hosts": list,
    "data-root": str,
    "exec-root": str,
    "log-level": str,
    "debug": bool,
    "pidfile": str,
    "group": str,
    "tls": bool,
    "tlsverify": bool,
    "tlscacert": str,
    "tlscert": str,
    "tlskey": str,
    "labels": list,
    "cgroup-parent": str,
    "log-driver": str,
    "log-opts": dict,
    "init-path": str,
    "live-restore": bool,   # always on in ketch: containers outlive the daemon
    "bridge": str,          # the default network's interface ("none": no default network)
    "bip": str,
    "default-address-pools": list,
    "icc": bool,
    "ipv6": bool,
    "fixed-cidr-v6": str,
    "default-ulimits": dict,  # {"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048}}
    "insecure-registries": list,
    "registry-mirrors": list,
    "registry-endpoints": dict,   # ketch's own: {"docker.io": "http://127.0.0.1:5000"}
    "max-concurrent-downloads": int,
    "max-concurrent-uploads": int,
}

# Keys reloaded on SIGHUP; the others need a restart (as with dockerd).
RELOADABLE = frozenset({"log-level", "debug", "labels"})

# Docker's daemon.json keys that ketch does not act on yet.
DOCKER_ONLY = frozenset({
    "allow-nondistributable-artifacts", "api-cors-header", "authorization-plugins",
    "bip", "bip6", "bridge", "builder", "cdi-spec-dirs", "cgroup-parent",
    "containerd", "containerd-namespace", "containerd-plugins-namespace", "data-root",
    "default-address-pools", "default-cgroupns-mode", "default-gateway",
    "default-gateway-v6", "default-ipc-mode", "default-network-opts", "default-runtime",
    "default-shm-size", "default-ulimits", "dns", "dns-opts", "dns-search",
    "exec-opts", "experimental", "features", "fixed-cidr", "fixed-cidr-v6",
    "host-gateway-ip", "icc", "init", "init-path", "insecure-registries", "ip",
    "ip-forward", "ip-masq", "ip6tables", "iptables", "ipv6", "labels", "live-restore",
    "log-driver", "log-format", "log-opts", "max-concurrent-downloads",
    "max-concurrent-uploads", "max-download-attempts", "mtu", "no-new-privileges",
    "node-generic-resources", "oom-score-adjust", "proxies", "registry-mirrors",
    "runtimes", "seccomp-profile", "selinux-enabled", "shutdown-timeout",
    "storage-driver", "storage-opts", "userland-proxy", "userland-proxy-path",
    "userns-remap",
}) - HONOURED.keys()


def load(path: str, *, required: bool = False) -> dict[str, Any]:
    """The file's settings, validated; ``{}`` if it is absent and not required."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if required:
            raise InvalidArgument(f"unable to configure the ketch daemon with file {path}: "
                                  "open: no such file or directory") from None
        return {}
    except OSError as exc:
        raise InvalidArgument(f"unable to configure the ketch daemon with file {path}: "
                              f"{exc.strerror}") from exc
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"unable to configure the ketch daemon with file {path}: "
                              f"{exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument(f"unable to configure the ketch daemon with file {path}: "
                              "the top level must be a JSON object")
    validate(data, path)
    return data


def validate(data: dict[str, Any], path: str) -> None:
    """dockerd's refusal for unknown keys, plus a type check of the honoured ones."""
    unknown = sorted(k for k in data if k not in HONOURED and k not in DOCKER_ONLY)
    if unknown:
        raise InvalidArgument(
            f"unable to configure the ketch daemon with file {path}: the following "
            f"directives don't match any configuration option: {', '.join(unknown)}")
    for key, kind in HONOURED.items():
        if key in data and not isinstance(data[key], kind):
            raise InvalidArgument(f"unable to configure the ketch daemon with file {path}: "
                                  f"{key}: wrong type {type(data[key]).__name__}")


def ignored(data: dict[str, Any]) -> list[str]:
    """Docker keys present in the file that ketch does not honour yet (for a warning)."""
    return sorted(k for k in data if k in DOCKER_ONLY)


def merge(flags: dict[str, Any], data: dict[str, Any], path: str) -> dict[str, Any]:
    """File settings under explicit flags; a key set both ways is dockerd's conflict."""
    both = sorted(k for k in flags if k in data)
    if both:
        desc = ", ".join(f"{k}: (from flag: {flags[k]}, from file: {data[k]})" for k in both)
        raise InvalidArgument(
            f"unable to configure the ketch daemon with file {path}: the following "
            f"directives are specified both as a flag and in the configuration file: {desc}")
    out = dict(data)
    out.update(flags)
    return out


# The names go-units' ParseUlimit knows (RLIMIT_*), as dockerd takes them.
ULIMIT_NAMES = frozenset({"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue",
                          "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending",
                          "stack", "as"})


def parse_ulimit(text: str) -> dict[str, Any]:
    """``nofile=1024[:2048]`` (dockerd's --default-ulimit) as daemon.json writes it:
    {"Name": "nofile", "Soft": 1024, "Hard": 2048}, with go-units' messages."""
    name, eq, limits = text.partition("=")
    if not eq:
        raise InvalidArgument(f"invalid ulimit argument: {text}")
    if name not in ULIMIT_NAMES:
        raise InvalidArgument(f"invalid ulimit type: {name}")
    parts = limits.split(":")
    if len(parts) > 2:
        raise InvalidArgument(f"too many limit value arguments - {limits}, can only have up "
                              f"to two, `soft[:hard]`")
    values = []
    for p in parts:
        try:
            values.append(int(p))
        except ValueError:
            raise InvalidArgument(f'strconv.ParseInt: parsing "{p}": invalid syntax') from None
    soft, hard = values[0], values[-1]
    if soft > hard:
        raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard limit: "
                              f"{soft} > {hard}")
    return {"Name": name, "Soft": soft, "Hard": hard}


def default_ulimits(value: Any, path: str) -> list[tuple[str, int, int]]:
    """daemon.json's "default-ulimits" checked: (name, soft, hard) for each entry."""
    out = []
    for key, u in (value or {}).items():
        if not isinstance(u, dict) or not all(isinstance(u.get(f), int) and
                                              not isinstance(u.get(f), bool)
                                              for f in ("Soft", "Hard")):
            raise InvalidArgument(f"unable to configure the ketch daemon with file {path}: "
                                  f"default-ulimits: {key}: want "
                                  '{"Name": ..., "Soft": <int>, "Hard": <int>}')
        name = str(u.get("Name") or key)
        if name not in ULIMIT_NAMES:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        if u["Soft"] > u["Hard"]:
            raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard "
                                  f"limit: {u['Soft']} > {u['Hard']}")
        out.append((name, int(u["Soft"]), int(u["Hard"])))
    return out


def default_path() -> str:
    """``KETCH_CONFIG_FILE`` lets tests and packagers move the default."""
    return os.environ.get("KETCH_CONFIG_FILE", DEFAULT_CONFIG_FILE)
