"""``ketch registry serve|gc|fsck``: ketch's own registry, run and kept from the CLI.

These commands need no daemon: ``serve`` is the registry server itself (an
OCI distribution v1.1 registry on a storage directory, like Debian's
``docker-registry`` listening on ``:5000``), ``gc`` removes what no manifest
uses, ``fsck`` checks the storage. Failures print as ketch's own (no "Error
response from daemon"), since no daemon answered.
"""

from __future__ import annotations

import sys

from ketch.cli.command import Group, command, option
from ketch.errors import InvalidArgument, KetchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ketch.registry.server.driver import StorageDriver

DEFAULT_ADDR = "127.0.0.1:5000"


def _local(exc: KetchError) -> KetchError:
    from ketch.cli.session import local

    return local(exc)


def parse_addr(addr: str) -> tuple[str | None, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) -> (host, port)."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise _local(InvalidArgument(f"invalid --addr {addr!r}: expected host:port"))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port_text)


def _driver(storage: str, root: str | None, storage_opts: tuple[str, ...]) -> StorageDriver:
    from ketch.registry.server.config import make_driver, parse_storage_opts

    try:
        return make_driver(storage, root=root, options=parse_storage_opts(storage_opts))
    except KetchError as exc:
        raise _local(exc) from None


def _storage_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = option("--storage-opt", "storage_opts", metavar="list", multiple=True,
                help="Storage driver option (key=value)")(fn)
    fn = option("--storage", metavar="string", default="filesystem",
                help='Storage driver: filesystem or s3 (default "filesystem")')(fn)
    fn = option("--root", metavar="string", default=None,
                help="Storage directory (default /var/lib/ketch-registry)")(fn)
    return fn


# --- serve ------------------------------------------------------------------------------------


@command("serve", "[OPTIONS]", "Run an OCI distribution (Docker) registry")
@option("--addr", metavar="string", default=DEFAULT_ADDR,
        help=f'Address to listen on, host:port (default "{DEFAULT_ADDR}")')
@_storage_options
@option("--auth", metavar="string", default="none",
        help='Authentication: none, basic or token (default "none")')
@option("--htpasswd", metavar="string", default=None,
        help="htpasswd file (bcrypt) of the users of basic and token authentication")
@option("--token-ttl", "token_ttl", metavar="int", default="300",
        help="Lifetime of issued tokens in seconds (default 300)")
@option("--token-key", "token_key", metavar="string", default=None,
        help="Key file signing tokens, made if missing (default: in the storage "
             "directory; with other storage a new key at each start)")
@option("--realm", metavar="string", default=None, help="Authentication realm")
@option("--service", metavar="string", default="ketch-registry",
        help='Token service name (default "ketch-registry")')
@option("--tls-cert", "tls_cert", metavar="string", default=None,
        help="TLS certificate chain (PEM)")
@option("--tls-key", "tls_key", metavar="string", default=None, help="TLS private key (PEM)")
@option("--read-only", "read_only", is_flag=True,
        help="Refuse every write (pushes and deletes)")
@option("--no-delete", "no_delete", is_flag=True,
        help="Refuse deletes of manifests, tags and blobs")
@option("--access-log", "access_log", metavar="string", default=None,
        help='Write an access log (common log format) to this file, or "-" for stdout')
def serve(args: tuple[str, ...], addr: str, root: str | None, storage: str,
          storage_opts: tuple[str, ...], auth: str, htpasswd: str | None, token_ttl: str,
          token_key: str | None, realm: str | None, service: str, tls_cert: str | None,
          tls_key: str | None, read_only: bool, no_delete: bool, access_log: str | None) -> int:
    import asyncio

    from ketch.registry.server.app import access_logger, make_app, ssl_context
    from ketch.registry.server.app import serve as run_server
    from ketch.registry.server.config import storage_lock
    from ketch.registry.server.store import Store

    host, port = parse_addr(addr)
    if not token_ttl.isdigit() or int(token_ttl) <= 0:
        raise _local(InvalidArgument(f"invalid --token-ttl {token_ttl!r}: seconds expected"))
    if bool(tls_cert) != bool(tls_key):
        raise _local(InvalidArgument("--tls-cert and --tls-key go together"))
    driver = _driver(storage, root, storage_opts)
    authorizer = None
    if auth != "none":
        from ketch.registry.server.auth import authorizer_from_options

        store_dir = getattr(driver, "root", None)   # directory storage only
        if auth == "token" and token_key is None and isinstance(store_dir, str):
            # Kept with the storage ('#': outside every driver path), so identity
            # tokens from `docker login` outlive a restart of the server.
            import os

            token_key = os.path.join(store_dir, ".#token.key")
        try:
            authorizer = authorizer_from_options(mode=auth, htpasswd=htpasswd,
                                                 token_ttl=int(token_ttl),
                                                 token_key_path=token_key, realm=realm,
                                                 service=service)
        except KetchError as exc:
            raise _local(exc) from None
    elif htpasswd:
        raise _local(InvalidArgument("--htpasswd needs --auth basic or --auth token"))
    tls = None
    if tls_cert and tls_key:
        try:
            tls = ssl_context(tls_cert, tls_key)
        except (OSError, ValueError) as exc:
            raise _local(InvalidArgument(f"cannot load the TLS certificate: {exc}")) from None
    app = make_app(Store(driver), authorizer=authorizer, read_only=read_only,
                   delete_enabled=not no_delete)
    logger = access_logger(access_log)
    scheme = "https" if tls else "http"

    def ready(bound: int) -> None:
        shown = f"[{host}]" if host and ":" in host else (host or "0.0.0.0")
        sys.stderr.write(f"ketch registry listening on {scheme}://{shown}:{bound} "
                         f"(storage: {getattr(driver, 'root', driver.name)})\n")
        sys.stderr.flush()

    with storage_lock(driver, exclusive=False) if not read_only else _nothing():
        try:
            asyncio.run(run_server(app, host, port, tls=tls, access_log=logger,
                                   ready=ready))
        except OSError as exc:
            raise _local(InvalidArgument(f"cannot listen on {addr}: {exc.strerror or exc}")
                         ) from None
    return 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- gc ---------------------------------------------------------------------------------------


@command("gc", "[OPTIONS]", "Remove blobs and manifests no tag or index uses")
@_storage_options
@option("-n", "--dry-run", "dry_run", is_flag=True, help="List what would be removed, remove nothing")
@option("-m", "--delete-untagged", "delete_untagged", is_flag=True,
        help="Also remove manifests no tag, index or subject keeps")
@option("-q", "--quiet", is_flag=True, help="Print the summary only")
def gc(args: tuple[str, ...], root: str | None, storage: str, storage_opts: tuple[str, ...],
       dry_run: bool, delete_untagged: bool, quiet: bool) -> int:
    from ketch.registry.server.config import storage_lock
    from ketch.registry.server.gc import collect
    from ketch.registry.server.store import Store

    driver = _driver(storage, root, storage_opts)
    try:
        with storage_lock(driver, exclusive=True):
            report = collect(Store(driver), dry_run=dry_run, delete_untagged=delete_untagged)
    except KetchError as exc:
        raise _local(exc) from None
    lines = report.lines()
    sys.stdout.write("\n".join(lines[-1:] if quiet else lines) + "\n")
    return 0


# --- fsck -------------------------------------------------------------------------------------


@command("fsck", "[OPTIONS]", "Check the registry storage: blob digests, links, manifests")
@_storage_options
@option("--quick", is_flag=True, help="Do not re-hash blob contents")
def fsck(args: tuple[str, ...], root: str | None, storage: str, storage_opts: tuple[str, ...],
         quick: bool) -> int:
    from ketch.registry.server.fsck import check
    from ketch.registry.server.store import Store

    driver = _driver(storage, root, storage_opts)
    report = check(Store(driver), verify_content=not quick)
    for p in report.problems:
        sys.stdout.write(f"{p}\n")
    sys.stdout.write(report.summary() + "\n")
    return 0 if report.ok else 1


registry = Group("registry", help="Run and maintain a registry", usage="COMMAND", lazy={})
for _name, _cmd in (("serve", serve), ("gc", gc), ("fsck", fsck)):
    registry.add_command(_cmd, _name)
