"""Registry commands: ``pull``, ``push``, ``login``, ``logout``, ``search`` (and ``image pull|push``).

Each is docker 28's command: its flags, its lines, its messages and exit
codes. ketchd talks to the registry; the CLI only brings the credentials
(``ketch.cli.credentials``: docker's config.json and credential helpers) in the
``X-Registry-Auth`` header, and draws the progress stream (``ketch.cli.progress``).
"""

from __future__ import annotations

import os
import sys

from ketch.cli.command import command, option, pass_obj
from ketch.cli.session import Session, local
from ketch.errors import InvalidArgument, KetchError, NotSupported, Unauthorized, Unavailable

TYPE_CHECKING = False     # typing costs the CLI start-up (ketch.record says why)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from ketch.cli.credentials import AuthConfig, ConfigFile
    from ketch.image.reference import Reference

    T = TypeVar("T")

DEFAULT_NAMESPACE = "docker.io"


def _config(session: Session) -> ConfigFile:
    from ketch.cli.credentials import ConfigFile, config_dir

    return ConfigFile.load(config_dir(session.config_dir))


def _fail(message: str) -> KetchError:
    """A refusal of the CLI itself: printed bare, exit 1."""
    return local(InvalidArgument(message))


def _reference(name: str) -> tuple[Reference, bool]:
    """docker's ParseNormalizedNamed: the full reference, and whether the user named the
    repository only (no tag, no digest), which pull and push fill with ``latest``."""
    from ketch.image.reference import normalize

    try:
        ref = normalize(name)
    except KetchError as exc:
        raise _fail(str(exc)) from None
    # after the last "/" a ":" can only start a tag (a registry's port comes before it)
    name_only = "@" not in name and ":" not in name.rsplit("/", 1)[-1]
    return ref, name_only


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


# --- asking for credentials -----------------------------------------------------------------


def _read_line(prompt: str) -> str:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    return line.rstrip("\r\n").strip()


def _read_secret(prompt: str) -> str:
    """A line from the terminal with its echo off (restored even on ^C). The echo goes off
    before the prompt is shown, and right away (TCSANOW): a password typed as soon as the
    prompt appears is neither echoed nor thrown away."""
    import termios

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    new = list(old)
    new[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, new)
    try:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        line = sys.stdin.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, old)
    sys.stdout.write("\n")
    return line.rstrip("\r\n")


def prompt_credentials(user: str, password: str, default_user: str, key: str) -> AuthConfig:
    """docker's PromptUserForCredentials: asks for what was not given."""
    from ketch.cli.credentials import INDEX_SERVER, AuthConfig

    user = user.strip()
    if not user:
        if key == INDEX_SERVER:
            sys.stdout.write("Log in with your Docker ID or email address to push and pull "
                             "images from Docker Hub. If you don't have a Docker ID, head over "
                             "to https://hub.docker.com/ to create one.\n")
        default_user = default_user.strip()
        user = _read_line(f"Username ({default_user}): " if default_user else "Username: ")
        user = user or default_user
        if not user:
            raise _fail("error: username is required")
    if not password.strip():
        password = _read_secret("Password: ")
        if not password:
            raise _fail("error: password is required")
    return AuthConfig(user, password, key)


def _with_login_retry(cfg: ConfigFile, key: str, what: str, call: Callable[[str], T],
                      auth: str) -> T:
    """docker's RegistryAuthenticationPrivilegedFunc: when the daemon answers 401 and a
    person is at the terminal, ask for credentials once and try again with them (they are
    not stored: that is what ``login`` is for)."""
    try:
        return _answered(call, auth)
    except Unauthorized:
        if not _stdin_is_terminal():
            raise
    sys.stdout.write(f"\nLogin prior to {what}:\n")
    try:
        stored = cfg.get_auth(key)
    except KetchError as exc:
        sys.stderr.write(f"Unable to retrieve stored credentials for {key}, error: {exc}.\n")
        from ketch.cli.credentials import AuthConfig

        stored = AuthConfig(server_address=key)
    return _answered(call, prompt_credentials("", "", stored.username, key).encode())


def _answered(call: Callable[[str], T], auth: str) -> T:
    """``call(auth)``; a 503 the daemon answered is printed as its answer ("Error response
    from daemon: ..."), as docker prints every daemon error, not as a daemon not there."""
    try:
        return call(auth)
    except Unavailable as exc:
        if getattr(exc, "daemon_status", None) is None:
            raise
        raise local(Unavailable(f"Error response from daemon: {exc}")) from None


def _auth_header(cfg: ConfigFile, domain: str) -> tuple[str, str]:
    """(config key, X-Registry-Auth) for a registry domain."""
    from ketch.cli.credentials import auth_for_domain, registry_key

    return registry_key(domain), auth_for_domain(cfg, domain).encode()


# --- pull -------------------------------------------------------------------------------------


def _trust_wanted(disable_flag: bool | None) -> bool:
    """docker's content trust switch: ``--disable-content-trust[=false]`` when given, else
    $DOCKER_CONTENT_TRUST (any value but a false one turns it on, as docker reads it)."""
    if disable_flag is not None:
        return not disable_flag
    value = os.environ.get("DOCKER_CONTENT_TRUST", "")
    return bool(value) and value.lower() not in ("0", "f", "false")


@command("pull", "[OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry",
         nargs=(1, 1), aliases=("ketch image pull", "ketch pull"))
@option("-a", "--all-tags", is_flag=True, help="Download all tagged images in the repository")
@option("--disable-content-trust", is_flag=True, default=None,
        help="Skip image verification (default true)")
@option("--platform", metavar="string", default="",
        help="Set platform if server is multi-platform capable")
@option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@pass_obj
def pull(session: Session, args: tuple[str, ...], all_tags: bool,
         disable_content_trust: bool | None, platform: str, quiet: bool) -> int:
    ref, name_only = _reference(args[0])
    if all_tags and not name_only:
        raise _fail("tag can't be used with --all-tags/-a")
    if _trust_wanted(disable_content_trust) and ref.digest is None:
        raise local(NotSupported("content trust is not supported: ketch does not verify "
                                 "Notary signatures; pull with --disable-content-trust"))
    if not all_tags and name_only and not quiet:
        sys.stdout.write(f"Using default tag: {ref.tag}\n")
    platform = platform or os.environ.get("DOCKER_DEFAULT_PLATFORM", "")
    pull_image(session, ref, all_tags=all_tags, platform=platform, quiet=quiet,
               out=sys.stdout)
    # the reference pulled, fully qualified, as the last line (the only one with -q)
    sys.stdout.write((ref.name if all_tags else str(ref)) + "\n")
    return 0


def pull_image(session: Session, ref: Reference, *, all_tags: bool = False, platform: str = "",
               quiet: bool = False, out: Any = None) -> None:
    """Pull ``ref`` through the daemon, the progress drawn on ``out`` (run and create pull
    with it too, onto stderr)."""
    from ketch.cli import progress

    cfg = _config(session)
    key, auth = _auth_header(cfg, ref.domain)
    tag = "" if all_tags else (ref.digest or ref.tag or "latest")
    client = session.connect()

    def call(header: str) -> Any:
        return client.image_pull(ref.name, tag, platform=platform, auth=header)

    messages = _with_login_retry(cfg, key, "pull", call, auth)
    progress.display(messages, out if out is not None else sys.stdout, quiet=quiet)


# --- push -------------------------------------------------------------------------------------


def _platform(text: str) -> dict[str, str]:
    """``os[/arch[/variant]]`` as the OCI platform object docker sends (lower case)."""
    parts = text.lower().split("/")
    if len(parts) > 3 or not all(parts):
        raise _fail(f'"{text}": unknown operating system or architecture: invalid argument')
    out = {"os": parts[0]}
    if len(parts) > 1:
        out["architecture"] = parts[1]
    if len(parts) > 2:
        out["variant"] = parts[2]
    return {k: out[k] for k in ("architecture", "os", "variant") if k in out}


@command("push", "[OPTIONS] NAME[:TAG]", "Upload an image to a registry", nargs=(1, 1),
         aliases=("ketch image push", "ketch push"))
@option("-a", "--all-tags", is_flag=True, help="Push all tags of an image to the repository")
@option("--disable-content-trust", is_flag=True, default=None,
        help="Skip image signing (default true)")
@option("--platform", metavar="string", default="",
        help="Push a platform-specific manifest as a single-platform image to the registry. "
             "Image index won't be pushed, meaning that other manifests, including "
             "attestations won't be preserved. 'os[/arch[/variant]]': Explicit platform "
             "(eg. linux/amd64)")
@option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@pass_obj
def push(session: Session, args: tuple[str, ...], all_tags: bool,
         disable_content_trust: bool | None, platform: str, quiet: bool) -> int:
    from ketch.cli import progress

    plat = _platform(platform) if platform else None
    ref, name_only = _reference(args[0])
    if all_tags and not name_only:
        raise _fail("tag can't be used with --all-tags/-a")
    if _trust_wanted(disable_content_trust):
        raise local(NotSupported("content trust is not supported: ketch does not sign "
                                 "images; push with --disable-content-trust"))
    client = session.connect()
    if plat is not None:
        from ketch.client._registry import require_api

        require_api(client.negotiate(), "1.46", "--platform")   # before any output, as docker
    if not all_tags and name_only and not quiet:
        sys.stdout.write(f"Using default tag: {ref.tag}\n")
    if ref.digest is not None:
        raise _fail("cannot push a digest reference")
    cfg = _config(session)
    key, auth = _auth_header(cfg, ref.domain)
    tag = "" if all_tags else (ref.tag or "latest")

    def call(header: str) -> Any:
        # the full name ("docker.io/library/busybox"), as docker 28 sends it
        return client.image_push(ref.name, tag, platform=plat, auth=header)

    messages = _with_login_retry(cfg, key, "push", call, auth)
    progress.display(messages, sys.stdout, quiet=quiet)
    if quiet:
        sys.stdout.write((ref.name if all_tags else str(ref)) + "\n")
    return 0


# --- login, logout ----------------------------------------------------------------------------


@command("login", "[OPTIONS] [SERVER]",
         "Authenticate to a registry.\nDefaults to Docker Hub if no server is specified.",
         nargs=(0, 1))
@option("-p", "--password", metavar="string", default="",
        help="Password or Personal Access Token (PAT)")
@option("--password-stdin", is_flag=True,
        help="Take the Password or Personal Access Token (PAT) from stdin")
@option("-u", "--username", metavar="string", default="", help="Username")
@pass_obj
def login(session: Session, args: tuple[str, ...], password: str, password_stdin: bool,
          username: str) -> int:
    from ketch.cli.credentials import INDEX_SERVER, convert_to_hostname

    if password:
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. "
                         "Use --password-stdin.\n")
        if password_stdin:
            raise _fail("conflicting options: cannot specify both --password and "
                        "--password-stdin")
    if password_stdin:
        if not username:
            raise _fail("the --password-stdin option requires --username to be set")
        password = sys.stdin.read()
        password = password.removesuffix("\n").removesuffix("\r")
    server = args[0] if args else ""
    if server in ("", DEFAULT_NAMESPACE):
        server = INDEX_SERVER
    key = server if server == INDEX_SERVER else convert_to_hostname(server)
    cfg = _config(session)
    client = session.connect()

    status = ""
    done = False
    if not username and not password:
        # docker tries what is stored first, and asks only when that fails
        try:
            stored = cfg.get_auth(key)
        except KetchError:
            stored = None
        if stored is not None and stored.username and stored.password:
            # docker 28's words, on stderr, as it writes them when stderr is no terminal
            sys.stderr.write(f"Authenticating with existing credentials... [Username: "
                             f"{stored.username}]\n\n Info -> To login with a different "
                             "account, run 'ketch logout' followed by 'ketch login'\n\n\n")
            try:
                status = _login_and_store(client, cfg, stored)
                done = True
            except Unauthorized:
                sys.stderr.write("Stored credentials invalid or expired\n")
            except KetchError as exc:
                from ketch.cli.session import error_text

                sys.stderr.write(f"Login did not succeed, error: {error_text(exc)}\n")
            default_user = stored.username
        else:
            default_user = stored.username if stored is not None else ""
    else:
        default_user = ""
    if not done:
        if (not username or not password) and not _stdin_is_terminal():
            raise _fail("Error: Cannot perform an interactive login from a non TTY device")
        auth = prompt_credentials(username, password, default_user, key)
        status = _login_and_store(client, cfg, auth)
    if status:
        sys.stdout.write(status + "\n")
    return 0


def _login_and_store(client: Any, cfg: ConfigFile, auth: AuthConfig) -> str:
    """POST /auth, then the credentials (or the identity token the registry gave for
    them) into the store; the daemon's status line."""
    from ketch.cli.credentials import UNENCRYPTED_WARNING, AuthConfig, CredentialsError, FileStore

    resp = client.registry_login({"username": auth.username, "password": auth.password,
                                  "serveraddress": auth.server_address})
    token = str(resp.get("IdentityToken") or "")
    if token:
        auth = AuthConfig(auth.username, "", auth.server_address, identity_token=token)
    store = cfg.store_for(auth.server_address)
    try:
        changed = store.store(auth)
    except CredentialsError as exc:
        msg = str(exc)
        if not msg.startswith("Error saving credentials"):
            msg = f"Error saving credentials: {msg}"
        raise _fail(msg) from None
    if changed and isinstance(store, FileStore) and auth.password:
        sys.stderr.write(UNENCRYPTED_WARNING.format(path=cfg.path) + "\n")
    return str(resp.get("Status") or "")


@command("logout", "[SERVER]",
         "Log out from a registry.\nIf no server is specified, the default is defined by the "
         "daemon.", nargs=(0, 1))
@pass_obj
def logout(session: Session, args: tuple[str, ...]) -> int:
    from ketch.cli.credentials import INDEX_SERVER, convert_to_hostname

    server = args[0] if args else ""
    if not server:
        regs, hostname = [INDEX_SERVER], INDEX_SERVER
    else:
        hostname = convert_to_hostname(server)
        # older clients filed a registry as a URL: those keys go too
        regs = [server, hostname, "http://" + hostname, "https://" + hostname]
    cfg = _config(session)
    sys.stdout.write(f"Removing login credentials for {hostname}\n")
    errors: dict[str, str] = {}
    for r in dict.fromkeys(regs):
        try:
            cfg.store_for(r).erase(r)
        except KetchError as exc:
            errors[r] = str(exc)
    if len(errors) == len(dict.fromkeys(regs)):
        sys.stderr.write("WARNING: could not erase credentials:\n")
        for k, v in errors.items():
            sys.stderr.write(f"{k}: {v}\n")
    return 0


# --- search -----------------------------------------------------------------------------------

SEARCH_TABLE = "table {{.Name}}\t{{.Description}}\t{{.StarCount}}\t{{.IsOfficial}}"
SEARCH_HEADERS = {"Name": "NAME", "Description": "DESCRIPTION", "StarCount": "STARS",
                  "IsOfficial": "OFFICIAL", "IsAutomated": "AUTOMATED"}


def _search_domain(term: str) -> str:
    """The registry a search term names ("localhost:5000/app"), else Docker Hub."""
    first, sep, _ = term.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DEFAULT_NAMESPACE


@command("search", "[OPTIONS] TERM", "Search Docker Hub for images", nargs=(1, 1))
@option("-f", "--filter", "filters", metavar="filter", multiple=True,
        help="Filter output based on conditions provided")
@option("--format", "format_", metavar="string",
        help="Pretty-print search using a Go template")
@option("--limit", metavar="int", default="0", help="Max number of search results")
@option("--no-trunc", is_flag=True, help="Don't truncate output")
@pass_obj
def search(session: Session, args: tuple[str, ...], filters: tuple[str, ...],
           format_: str | None, limit: str, no_trunc: bool) -> int:
    from ketch.cli import formatting, run_opts
    from ketch.cli.command import UsageFailure
    from ketch.cli.session import parse_filters

    try:
        n = run_opts.parse_int(limit)
    except ValueError as exc:
        raise UsageFailure(str(run_opts.FlagValueError("--limit", limit, str(exc)))) from None
    flt = parse_filters(filters)
    if "is-automated" in flt:
        sys.stderr.write('WARNING: the "is-automated" filter is deprecated, and searching for '
                         '"is-automated=true" will not yield any results in future.\n')
    term = args[0]
    cfg = _config(session)
    key, auth = _auth_header(cfg, _search_domain(term))
    client = session.connect()

    def call(header: str) -> Any:
        return client.image_search(term, limit=n if n > 0 else 0, filters=flt, auth=header)

    results = _with_login_retry(cfg, key, "search", call, auth)
    fmt = SEARCH_TABLE if not format_ or format_ == "table" else format_
    rows = []
    for r in results:
        desc = str(r.get("description") or "").replace("\n", " ").replace("\r", " ")
        if not no_trunc:
            desc = formatting.ellipsis(desc, 45)
        rows.append(formatting.Struct("*registry.searchContext", {
            "Name": str(r.get("name") or ""),
            "Description": desc,
            "StarCount": str(r.get("star_count") or 0),
            "IsOfficial": "[OK]" if r.get("is_official") else "",
            "IsAutomated": "[OK]" if r.get("is_automated") else "",
        }))
    sys.stdout.write(formatting.render(fmt, rows, SEARCH_HEADERS))
    return 0


__all__ = ["login", "logout", "prompt_credentials", "pull", "pull_image", "push", "search"]
