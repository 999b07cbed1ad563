"""htpasswd files for ``ketch registry serve --auth basic|token``: bcrypt only, re-read on change.

The format is Apache's: one ``user:hash`` a line; blank lines and lines
starting with ``#`` are skipped. Like distribution's registry, only bcrypt
hashes (``$2y$``, ``$2b$``, ``$2a$``; what ``htpasswd -B`` writes) are
accepted: MD5-crypt, SHA1 and crypt(3) entries are weak, so a user with such
an entry can never log in, and the file's load says so once, naming the user
(never the hash).

bcrypt is slow on purpose (~100 ms at cost 10), and one ``docker push`` sends
the same credentials with every blob request, so a successful check is
remembered for a short time. The remembered key is an HMAC of user and
password under a per-process random key: the cache holds nothing an attacker
could brute-force offline faster than bcrypt itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bcrypt

from ketch.errors import InvalidArgument, NotFound

log = logging.getLogger("ketch.registry.auth")

BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
# bcrypt only reads the first 72 bytes of a password; Apache's htpasswd and
# Go's bcrypt (distribution) compare only those, while python-bcrypt >= 5
# refuses longer ones. Truncating keeps long passwords working as they do there.
BCRYPT_MAX_PASSWORD = 72
# How long a successful check is remembered: long enough to cover the burst of
# requests of one push or pull, short enough that a removed user is soon out.
CACHE_TTL = 60.0
CACHE_MAX = 4096
# Checked against when the user does not exist, so that a wrong user name takes
# as long as a wrong password (no user enumeration by timing).
_DUMMY_HASH = bcrypt.hashpw(b"ketch-no-such-user", bcrypt.gensalt(rounds=10))


# bcrypt runs on threads of its own, few of them: a flood of wrong passwords
# then queues behind itself instead of taking the default executor's threads,
# which the server's storage calls need (bcrypt releases the GIL, so a few
# threads use the cores).
_BCRYPT_THREADS = max(1, min(4, os.cpu_count() or 1))
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _bcrypt_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(_BCRYPT_THREADS, thread_name_prefix="ketch-bcrypt")
        return _executor


@dataclass(frozen=True, slots=True)
class Entry:
    """One user's line: the name and its bcrypt hash (None for a refused scheme)."""

    user: str
    hash: bytes | None


def parse(text: bytes, source: str = "htpasswd") -> dict[str, Entry]:
    """The users of an htpasswd file's content; InvalidArgument for a malformed line."""
    entries: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        user_b, sep, hashed = line.partition(b":")
        if not sep or not user_b:
            # The line itself may be a password typed in by mistake: never echo it.
            raise InvalidArgument(f"{source}: invalid entry at line {number}")
        try:
            user = user_b.decode()
        except UnicodeDecodeError:
            raise InvalidArgument(f"{source}: invalid user name at line {number}") from None
        if hashed.startswith(BCRYPT_PREFIXES):
            entries[user] = Entry(user, hashed)
        else:
            log.warning("%s: user %r has a non-bcrypt password hash; only bcrypt is "
                        "supported (htpasswd -B): this user cannot log in", source, user)
            entries[user] = Entry(user, None)
    return entries


def _check_blocking(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        # A corrupt hash (bad salt, unknown cost): nobody logs in with it.
        return False


class Htpasswd:
    """A file of users, re-read whenever it changes on disk.

    A file that vanishes or becomes malformed after the start denies everyone
    until it is fixed (fail closed) rather than keeping stale users alive.
    """

    def __init__(self, path: str, *, cache_ttl: float = CACHE_TTL) -> None:
        self.path = path
        self.cache_ttl = cache_ttl
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._entries: dict[str, Entry] = {}
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, float] = {}
        # Bumped at every re-read: a check that started before a password
        # change must not be remembered after it.
        self._generation = 0
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        # The first load is strict: a server must not start on a file it cannot read.
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                self._entries = parse(f.read(), path)
        except FileNotFoundError:
            raise NotFound(f"htpasswd file not found: {path}") from None
        except OSError as exc:
            raise InvalidArgument(f"cannot read htpasswd file {path}: {exc.strerror}") from None
        self._stamp = _stamp(st)
        if not any(e.hash for e in self._entries.values()):
            log.warning("%s: no user with a bcrypt password: nobody can log in", path)

    def _refresh(self) -> dict[str, Entry]:
        """The current entries, re-reading the file if its stat changed."""
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        stamp = _stamp(st) if st is not None else None
        with self._lock:
            if stamp == self._stamp:
                return self._entries
            entries: dict[str, Entry] = {}
            try:
                if st is None:
                    raise InvalidArgument("file missing")
                with open(self.path, "rb") as f:
                    entries = parse(f.read(), self.path)
                log.info("%s: re-read (%d users)", self.path, len(entries))
            except (OSError, InvalidArgument) as exc:
                log.error("%s: cannot be read (%s): denying every login until fixed",
                          self.path, exc)
            self._stamp = stamp
            self._entries = entries
            # Someone changed passwords or removed users: forget what was checked.
            self._cache.clear()
            self._generation += 1
            return entries

    def users(self) -> list[str]:
        """Names of users who can log in (with a bcrypt hash)."""
        return sorted(u for u, e in self._refresh().items() if e.hash)

    def entry_hash(self, user: str) -> bytes | None:
        """The user's bcrypt hash as now in the file (None if absent or refused).

        Refresh tokens carry a fingerprint of it, so a changed password or a
        removed user revokes them.
        """
        entry = self._refresh().get(user)
        return entry.hash if entry else None

    def _key(self, user: str, password: str) -> bytes:
        msg = user.encode() + b"\0" + password.encode()
        return hmac.new(self._cache_key, msg, hashlib.sha256).digest()

    def verify_blocking(self, user: str, password: str) -> bool:
        """True if the password is the user's (blocks for a bcrypt check)."""
        entry = self._refresh().get(user)
        if entry is None or entry.hash is None:
            _check_blocking(password.encode(), _DUMMY_HASH)
            return False
        return _check_blocking(password.encode(), entry.hash)

    async def verify(self, user: str, password: str) -> bool:
        """True if the password is the user's: remembered successes, else bcrypt in a thread.

        Concurrent checks of the same credentials share one bcrypt run (a
        push opens many connections at once with the same credentials).
        """
        self._refresh()
        key = self._key(user, password)
        now = time.monotonic()
        expires = self._cache.get(key)
        if expires is not None and expires > now:
            return True
        task = self._inflight.get(key)
        if task is None:
            # The check runs in its own task so that a client hanging up
            # (cancelling its request) does not cancel it for the others.
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(loop.run_in_executor(
                _bcrypt_executor(), self.verify_blocking, user, password))
            self._inflight[key] = task
            generation = self._generation
            task.add_done_callback(lambda t: self._settle(key, generation, t))
        return await asyncio.shield(task)

    def _settle(self, key: bytes, generation: int, task: asyncio.Future[bool]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        if generation != self._generation:
            return
        now = time.monotonic()
        if len(self._cache) >= CACHE_MAX:
            self._cache = {k: t for k, t in self._cache.items() if t > now}
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
        self._cache[key] = now + self.cache_ttl


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    # ctime too: a rewrite within the mtime granularity, keeping the size, still shows.
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
