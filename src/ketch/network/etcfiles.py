"""A container's /etc/resolv.conf, /etc/hosts and /etc/hostname, as dockerd 20.10's
libnetwork writes them for the default bridge network.

resolv.conf (libnetwork sandbox_dns, resolvconf):
- the host's file is the source; when it only names systemd-resolved's stub
  (127.0.0.53) the real upstream list in /run/systemd/resolve/resolv.conf is used;
- with none of --dns/--dns-search/--dns-option: the host's file as it is, minus
  nameservers on loopback (127.0.0.0/8, ::1, unreachable from the container's
  netns) and minus IPv6 nameservers unless IPv6 is on; if no nameserver is left,
  Docker's fallbacks 8.8.8.8 and 8.8.4.4 (plus Google's IPv6 pair with IPv6).
  On an offline host the fallbacks are still what Docker writes;
- with any of them: a new file "search / nameserver / options", each part taken
  from the flag if given, else from the host's file (not filtered, as dockerd).

hosts: the localhost and IPv6 lines, then --add-host entries, then the
container's own address with its name ("host.domain host" with a domainname).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ketch.errors import InvalidArgument

HOST_RESOLV_CONF = "/etc/resolv.conf"
RESOLVED_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
DEFAULT_DNS_V4 = ("8.8.8.8", "8.8.4.4")
DEFAULT_DNS_V6 = ("2001:4860:4860::8888", "2001:4860:4860::8844")
HOST_GATEWAY = "host-gateway"

_NAMESERVER = re.compile(r"^\s*nameserver\s+(\S+)\s*$")


def nameservers(text: str) -> list[str]:
    return [m.group(1) for line in text.splitlines() if (m := _NAMESERVER.match(line))]


def _keyword_values(text: str, keyword: str) -> list[str]:
    """The words after the last ``keyword`` line (search/options), as libc reads them."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == keyword:
            found = words[1:]
    return found


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_v6(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).version == 6
    except ValueError:
        return False


def host_resolv_conf_path(default: str = HOST_RESOLV_CONF,
                          resolved: str = RESOLVED_RESOLV_CONF) -> str:
    """The file whose nameservers a container can use (systemd-resolved's upstreams when
    the host's file only points at the 127.0.0.53 stub)."""
    try:
        with open(default) as f:
            servers = nameservers(f.read())
    except OSError:
        return default
    if servers == ["127.0.0.53"]:
        try:
            open(resolved).close()
            return resolved
        except OSError:
            pass
    return default


def resolv_conf(host_text: str, *, dns: Sequence[str] = (), dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = (), ipv6: bool = False) -> str:
    if dns or dns_search or dns_options:
        servers = list(dns) or nameservers(host_text)
        search = list(dns_search) or _keyword_values(host_text, "search")
        options = list(dns_options) or _keyword_values(host_text, "options")
        out = ""
        if search and " ".join(search).strip() != ".":
            out += "search " + " ".join(search) + "\n"
        out += "".join(f"nameserver {s}\n" for s in servers)
        if options:
            out += "options " + " ".join(options) + "\n"
        return out
    kept = []
    for line in host_text.splitlines(keepends=True):
        m = _NAMESERVER.match(line.rstrip("\n"))
        if m and (_is_loopback(m.group(1)) or (not ipv6 and _is_v6(m.group(1)))):
            continue
        kept.append(line)
    text = "".join(kept)
    if text and not text.endswith("\n"):
        text += "\n"
    if not nameservers(text):
        defaults = DEFAULT_DNS_V4 + (DEFAULT_DNS_V6 if ipv6 else ())
        text += "".join(f"nameserver {s}\n" for s in defaults)
    return text


EMBEDDED_DNS = "127.0.0.11"


def embedded_resolv_conf(text: str) -> str:
    """The resolv.conf of a container on a user-defined network (dockerd's
    rebuildDNS): its search domains, the embedded server, the IPv6 servers of
    ``text`` (the file it would have had otherwise), its options plus ``ndots:0``
    unless it sets a positive ndots itself."""
    search = _keyword_values(text, "search")
    options = _keyword_values(text, "options")
    servers = [EMBEDDED_DNS] + [s for s in nameservers(text) if _is_v6(s)]
    if not any(o.startswith("ndots:") and o[6:].isdigit() and int(o[6:]) > 0 for o in options):
        options.append("ndots:0")
    out = ""
    if search and " ".join(search).strip() != ".":
        out += "search " + " ".join(search) + "\n"
    out += "".join(f"nameserver {s}\n" for s in servers)
    out += "options " + " ".join(options) + "\n"
    return out


def read_host_resolv_conf() -> str:
    try:
        with open(host_resolv_conf_path()) as f:
            return f.read()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class ExtraHost:
    name: str
    ip: str        # an address, or "host-gateway" until resolved


def parse_add_host(value: str) -> ExtraHost:
    """``--add-host name:ip`` (also ``name=ip``, and ``[v6]`` in brackets, as docker 28)."""
    sep = "=" if "=" in value else ":"
    name, found, ip = value.partition(sep)
    if not found or not name or not ip:
        raise InvalidArgument(f"bad format for add-host: {value!r}")
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip != HOST_GATEWAY:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidArgument(f"invalid IP address in add-host: {ip!r}") from None
    return ExtraHost(name, ip)


DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hosts(hostname: str, ip: str | Sequence[str] | None, *, domainname: str = "",
          extra_hosts: Iterable[ExtraHost] = (), host_gateway: str | None = None) -> str:
    """/etc/hosts; ``ip`` None for a container without an address (--network none),
    several for one on several networks (one line each, in the order it joined)."""
    out = DEFAULT_HOSTS
    for extra in extra_hosts:
        addr = extra.ip
        if addr == HOST_GATEWAY:
            if not host_gateway:
                raise InvalidArgument("unable to derive the IP value for host-gateway")
            addr = host_gateway
        out += f"{addr}\t{extra.name}\n"
    # libnetwork's rule: the FQDN (hostname, with the domain if any), then its first
    # label when it has one
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    names = f"{fqdn} {fqdn.split('.', 1)[0]}" if "." in fqdn else hostname
    for addr in [ip] if isinstance(ip, str) else ip or ():
        if addr:
            out += f"{addr}\t{names}\n"
    return out


def hostname_file(hostname: str) -> str:
    return hostname + "\n"
