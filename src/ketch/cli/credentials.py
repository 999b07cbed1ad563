"""Registry credentials in docker's ``config.json``, shared with the docker CLI.

ketch reads and writes the very file docker uses, so ``docker login`` serves
``ketch pull`` and ``ketch login`` serves ``docker push``:

    cfg = ConfigFile.load(config_dir(flag))        # --config, $KETCH_CONFIG, $DOCKER_CONFIG, ~/.docker
    auth = cfg.get_auth(registry_key("docker.io"))  # "https://index.docker.io/v1/"
    header = auth.encode()                          # the X-Registry-Auth header

Entries live under ``auths`` (``auth`` is base64 of ``user:password``; an
``identitytoken`` replaces the password when the registry issued one), or in
an external store through ``docker-credential-<name>`` helpers named by
``credsStore`` (all registries) or ``credHelpers`` (per registry). Helpers
speak docker-credential-helpers' protocol: the action as the argument, the
server URL or a JSON record on stdin, JSON on stdout, errors as text on stdout.

Keys are docker's: Docker Hub is ``https://index.docker.io/v1/`` (a legacy URL
kept for compatibility with every docker release), any other registry is
``host[:port]``. Keys written by older tools as URLs are still found.
"""

from __future__ import annotations

import base64
import json
import os
import sys

from ketch.errors import KetchError
from ketch.record import Record

TYPE_CHECKING = False     # typing costs the CLI start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

INDEX_SERVER = "https://index.docker.io/v1/"
HUB_DOMAINS = ("docker.io", "index.docker.io", "registry-1.docker.io")
CONFIG_FILE = "config.json"
HELPER_PREFIX = "docker-credential-"
TOKEN_USERNAME = "<token>"      # a helper's username when its secret is an identity token
NOT_FOUND_MESSAGE = "credentials not found in native keychain"

# docker's words (cli/config/credentials) when a password goes into the file in clear.
UNENCRYPTED_WARNING = (
    "\nWARNING! Your credentials are stored unencrypted in '{path}'.\n"
    "Configure a credential helper to remove this warning. See\n"
    "https://docs.docker.com/go/credential-store/\n")


class CredentialsError(KetchError):
    """A helper failed or the file could not be read or written; printed bare."""

    local = True


def config_dir(flag: str | None = None) -> str:
    """Where config.json lives: ``--config``, else $KETCH_CONFIG, else $DOCKER_CONFIG (so a
    shell set up for docker finds the same credentials), else ~/.docker."""
    for value in (flag, os.environ.get("KETCH_CONFIG"), os.environ.get("DOCKER_CONFIG")):
        if value:
            return value
    return os.path.join(os.path.expanduser("~"), ".docker")


def registry_key(domain: str) -> str:
    """The config key of a registry's domain, as docker files it."""
    if domain in HUB_DOMAINS or domain == INDEX_SERVER:
        return INDEX_SERVER
    return domain


def convert_to_hostname(address: str) -> str:
    """``https://host:5000/v2/`` -> ``host:5000``: how keys written as URLs are matched."""
    stripped = address
    if "://" in stripped:
        from urllib.parse import urlsplit

        try:
            u = urlsplit(stripped)
            host = u.hostname or ""
            port = u.port
        except ValueError:
            host, port = "", None
        if host:
            if ":" in host:
                host = f"[{host}]"
            return f"{host}:{port}" if port else host
        stripped = stripped.split("://", 1)[1]
    return stripped.split("/", 1)[0]


class AuthConfig(Record):
    """One registry's credentials (docker's types.AuthConfig)."""

    __slots__ = ("email", "identity_token", "password", "registry_token", "server_address",
                 "username")

    def __init__(self, username: str = "", password: str = "", server_address: str = "",
                 identity_token: str = "", registry_token: str = "", email: str = "") -> None:
        self.username = username
        self.password = password
        self.server_address = server_address
        self.identity_token = identity_token
        self.registry_token = registry_token
        self.email = email

    def api_json(self) -> dict[str, str]:
        """The Engine API's AuthConfig: what POST /auth gets and X-Registry-Auth carries,
        in docker's field order, empty fields left out (as Go's omitempty)."""
        pairs = (("username", self.username), ("password", self.password),
                 ("email", self.email), ("serveraddress", self.server_address),
                 ("identitytoken", self.identity_token),
                 ("registrytoken", self.registry_token))
        return {k: v for k, v in pairs if v}

    def encode(self) -> str:
        """The X-Registry-Auth header: base64url (padded) JSON; ``e30=`` ("{}") when empty,
        which docker sends too."""
        raw = json.dumps(self.api_json(), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode()

    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token
                    or self.registry_token)


def _decode_auth(value: str) -> tuple[str, str]:
    """The ``auth`` field: base64 of ``user:password`` (docker's decodeAuth)."""
    try:
        text = base64.b64decode(value, validate=False).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"illegal base64 data in auth config: {exc}") from None
    user, sep, password = text.partition(":")
    if not sep:
        raise CredentialsError("invalid auth configuration file")
    return user, password.strip("\x00")


class ConfigFile:
    """config.json: the credentials part is understood, every other key is kept as is."""

    def __init__(self, path: str, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data if data is not None else {}
        self.auths: dict[str, AuthConfig] = {}
        for key, entry in (self.data.get("auths") or {}).items():
            if not isinstance(entry, dict):
                continue
            user, password = (_decode_auth(entry["auth"]) if entry.get("auth")
                              else (entry.get("username", ""), entry.get("password", "")))
            self.auths[key] = AuthConfig(user, password, key, entry.get("identitytoken", ""),
                                         entry.get("registrytoken", ""), entry.get("email", ""))

    @classmethod
    def load(cls, directory: str | None = None) -> ConfigFile:
        """The file in ``directory`` (config_dir() when None); empty when there is none.
        A broken file is warned about and treated as empty, as docker does."""
        path = os.path.join(directory or config_dir(), CONFIG_FILE)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            sys.stderr.write(f"WARNING: Error loading config file: {path}: "
                             f"{(exc.strerror or str(exc)).lower()}\n")
            return cls(path)
        try:
            data = json.loads(raw) if raw.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls(path, data)
        except (ValueError, CredentialsError) as exc:
            sys.stderr.write(f"WARNING: Error loading config file: {path}: {exc}\n")
            return cls(path)

    # --- which store -----------------------------------------------------------------------

    @property
    def creds_store(self) -> str:
        return str(self.data.get("credsStore") or "")

    def helper_for(self, key: str) -> str:
        """The helper serving ``key``: its credHelpers entry, else credsStore, else none."""
        helpers = self.data.get("credHelpers") or {}
        return str(helpers.get(key) or self.creds_store)

    def store_for(self, key: str) -> FileStore | HelperStore:
        helper = self.helper_for(key)
        return HelperStore(self, helper) if helper else FileStore(self)

    def get_auth(self, key: str) -> AuthConfig:
        """The credentials for a registry key; empty ones (not an error) when none."""
        return self.store_for(key).get(key)

    # --- writing ---------------------------------------------------------------------------

    def save(self) -> None:
        """Atomically: a temporary file beside it, renamed over it. A new file is 0600; an
        existing one keeps its mode and owner. A symlinked config.json is written through."""
        auths: dict[str, Any] = {}
        for key, a in self.auths.items():
            entry: dict[str, str] = {}
            if a.username or a.password:
                entry["auth"] = base64.b64encode(f"{a.username}:{a.password}".encode()).decode()
            for field, value in (("email", a.email), ("identitytoken", a.identity_token),
                                 ("registrytoken", a.registry_token)):
                if value:
                    entry[field] = value
            auths[key] = entry
        data = dict(self.data)
        data["auths"] = auths
        if "auths" not in self.data:        # docker writes auths first
            data = {"auths": auths, **self.data}
        # Go's json.MarshalIndent with a tab, no final newline: byte for byte what docker writes
        text = json.dumps(data, indent="\t", ensure_ascii=False)
        target = os.path.realpath(self.path)
        directory = os.path.dirname(target)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            try:
                st: os.stat_result | None = os.stat(target)
            except FileNotFoundError:
                st = None
            tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                if st is not None:
                    os.chmod(tmp, st.st_mode & 0o7777)
                    try:
                        os.chown(tmp, st.st_uid, st.st_gid)
                    except PermissionError:
                        pass
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise CredentialsError(f"Error saving credentials: {target}: "
                                   f"{(exc.strerror or str(exc)).lower()}") from None
        self.data = data


class FileStore:
    """Credentials in config.json itself (docker's fileStore)."""

    def __init__(self, cfg: ConfigFile) -> None:
        self.cfg = cfg

    def get(self, key: str) -> AuthConfig:
        found = self.cfg.auths.get(key)
        if found is None:
            # keys an older client wrote as URLs ("https://host:5000/v1/")
            for k, a in self.cfg.auths.items():
                if convert_to_hostname(k) == key:
                    return a
            return AuthConfig(server_address=key)
        return found

    def store(self, auth: AuthConfig) -> bool:
        """True when the file changed (docker writes only then, and warns only then)."""
        key = auth.server_address
        if self.cfg.auths.get(key) == auth:
            return False
        self.cfg.auths[key] = auth
        self.cfg.save()
        return True

    def erase(self, key: str) -> None:
        if key in self.cfg.auths:
            del self.cfg.auths[key]
            self.cfg.save()


class HelperStore:
    """Credentials kept by ``docker-credential-<helper>`` (docker's nativeStore); config.json
    keeps an empty entry per registry, as docker leaves one."""

    def __init__(self, cfg: ConfigFile, helper: str) -> None:
        self.cfg = cfg
        self.helper = helper
        self.file = FileStore(cfg)

    def _run(self, action: str, data: str, what: str) -> str:
        """One helper call; its stdout. Failures worded as docker-credential-helpers'."""
        import subprocess

        program = HELPER_PREFIX + self.helper
        try:
            proc = subprocess.run([program, action], input=data.encode(), capture_output=True,
                                  check=False)
        except FileNotFoundError:
            raise CredentialsError(f'error {what} credentials - err: exec: "{program}": '
                                   "executable file not found in $PATH, out: ``") from None
        except OSError as exc:
            raise CredentialsError(f"error {what} credentials - err: fork/exec {program}: "
                                   f"{(exc.strerror or str(exc)).lower()}, out: ``") from None
        out = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            text = out.strip()
            if action == "get" and text == NOT_FOUND_MESSAGE:
                raise _NotFound
            err = (text if text in ("credentials missing server URL",
                                    "credentials missing username")
                   else f"exit status {proc.returncode}")
            raise CredentialsError(f"error {what} credentials - err: {err}, out: `{text}`")
        return out

    def get(self, key: str) -> AuthConfig:
        base = self.file.get(key)
        try:
            out = self._run("get", key, "getting")
        except _NotFound:
            return base         # nothing stored: docker then asks for credentials
        try:
            creds = json.loads(out)
        except ValueError as exc:
            raise CredentialsError(f"error getting credentials - {exc}") from None
        user, secret = str(creds.get("Username") or ""), str(creds.get("Secret") or "")
        if user == TOKEN_USERNAME:
            return AuthConfig(server_address=key, identity_token=secret, email=base.email)
        return AuthConfig(user, secret, key, email=base.email)

    def store(self, auth: AuthConfig) -> bool:
        user, secret = auth.username, auth.password
        if auth.identity_token:
            user, secret = TOKEN_USERNAME, auth.identity_token
        record = {"ServerURL": auth.server_address, "Username": user, "Secret": secret}
        self._run("store", json.dumps(record), "storing")
        # docker keeps an entry without secrets in the file (it once held the email)
        self.file.store(AuthConfig(server_address=auth.server_address, email=auth.email))
        return False

    def erase(self, key: str) -> None:
        self._run("erase", key, "erasing")
        self.file.erase(key)

    def list(self) -> dict[str, str]:
        """Server URL -> username of everything the helper keeps."""
        out = self._run("list", "unused", "listing")
        try:
            data = json.loads(out)
        except ValueError as exc:
            raise CredentialsError(f"error listing credentials - {exc}") from None
        if not isinstance(data, dict):
            raise CredentialsError("error listing credentials - not a JSON object")
        return {str(k): str(v) for k, v in data.items()}


class _NotFound(Exception):
    """The helper keeps nothing for that server."""


def auth_for_domain(cfg: ConfigFile, domain: str) -> AuthConfig:
    """What pull, push and search send for a registry domain ("docker.io",
    "localhost:5000"): the stored credentials, or none."""
    key = registry_key(domain)
    try:
        found = cfg.get_auth(key)
    except CredentialsError as exc:
        # docker goes on anonymously when a helper fails; ketch also says why
        sys.stderr.write(f"WARNING: {exc}\n")
        return AuthConfig()
    # nothing stored: an empty object ("e30="), exactly what docker sends
    return AuthConfig() if found.empty() else found


__all__ = ["INDEX_SERVER", "UNENCRYPTED_WARNING", "AuthConfig", "ConfigFile", "CredentialsError",
           "FileStore", "HelperStore", "auth_for_domain", "config_dir", "convert_to_hostname",
           "registry_key"]
