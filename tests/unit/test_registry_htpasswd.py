"""htpasswd files: bcrypt only, malformed lines refused, re-read on change, successes cached."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.registry.server import htpasswd as hp
from ketch.registry.server.htpasswd import Htpasswd, parse


def bhash(password: bytes, prefix: bytes = b"$2b$") -> bytes:
    # Cost 4 (the minimum) keeps the tests fast; the format is the same.
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))
    return prefix + hashed[4:]


def write(path: Path, users: dict[str, bytes]) -> None:
    path.write_bytes(b"".join(u.encode() + b":" + h + b"\n" for u, h in users.items()))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records each bcrypt check (by hash) the module makes."""
    calls: list[bytes] = []
    real = hp._check_blocking

    def check(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(hp, "_check_blocking", check)
    return calls


def test_parse_skips_comments_and_blank_lines() -> None:
    h = bhash(b"pw")
    entries = parse(b"# users\n\n  alice:" + h + b"  \r\n#bob:x\n")
    assert list(entries) == ["alice"]
    assert entries["alice"].hash == h


def test_parse_refuses_a_line_without_colon_and_does_not_echo_it() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse(b"alice:" + bhash(b"pw") + b"\nhunter2\n", "users.htpasswd")
    assert str(exc.value) == "users.htpasswd: invalid entry at line 2"
    assert "hunter2" not in str(exc.value)
    with pytest.raises(InvalidArgument, match="line 1"):
        parse(b":" + bhash(b"pw") + b"\n")


def test_parse_marks_non_bcrypt_entries_and_warns_without_the_hash(
        caplog: pytest.LogCaptureFixture) -> None:
    md5 = b"$apr1$dLnbHhei$E1Khw2E9VzFmhOFoQkqhw."
    with caplog.at_level(logging.WARNING, logger="ketch.registry.auth"):
        entries = parse(b"bob:" + md5 + b"\nsha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "f")
    assert entries["bob"].hash is None and entries["sha"].hash is None
    assert "'bob'" in caplog.text and "bcrypt" in caplog.text
    assert "apr1" not in caplog.text and "W6ph5" not in caplog.text


def test_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="htpasswd file not found"):
        Htpasswd(str(tmp_path / "nope"))


def test_malformed_file_is_refused_at_start(tmp_path: Path) -> None:
    f = tmp_path / "h"
    f.write_text("garbage\n")
    with pytest.raises(InvalidArgument):
        Htpasswd(str(f))


@pytest.mark.parametrize("prefix", [b"$2b$", b"$2y$", b"$2a$"])
def test_verify_bcrypt_variants(tmp_path: Path, prefix: bytes) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"s3cret", prefix)})
    users = Htpasswd(str(f))
    assert users.verify_blocking("alice", "s3cret")
    assert not users.verify_blocking("alice", "s3cret ")
    assert not users.verify_blocking("alice", "")
    assert not users.verify_blocking("mallory", "s3cret")
    assert users.users() == ["alice"]


def test_unknown_user_costs_a_bcrypt_check_too(tmp_path: Path, counted: list[bytes]) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"pw")})
    assert not Htpasswd(str(f)).verify_blocking("nobody", "pw")
    assert counted == [hp._DUMMY_HASH]


def test_md5_user_never_logs_in(tmp_path: Path) -> None:
    f = tmp_path / "h"
    f.write_text("bob:$apr1$dLnbHhei$E1Khw2E9VzFmhOFoQkqhw.\n")  # htpasswd -m: md5pass
    users = Htpasswd(str(f))
    assert not users.verify_blocking("bob", "md5pass")
    assert users.users() == []
    assert users.entry_hash("bob") is None


def test_corrupt_bcrypt_hash_fails_closed(tmp_path: Path) -> None:
    f = tmp_path / "h"
    f.write_text("alice:$2y$99$notreallyahash\n")
    assert not Htpasswd(str(f)).verify_blocking("alice", "x")


def test_long_passwords_compare_their_first_72_bytes(tmp_path: Path) -> None:
    # As Apache's htpasswd and Go's bcrypt: bytes past 72 are not part of the hash.
    long = "p" * 72
    f = tmp_path / "h"
    write(f, {"alice": bhash(long.encode())})
    users = Htpasswd(str(f))
    assert users.verify_blocking("alice", long + "extra")
    assert not users.verify_blocking("alice", long[:-1])


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="apache2-utils not installed")
def test_file_written_by_apache_htpasswd(tmp_path: Path) -> None:
    f = tmp_path / "h"
    subprocess.run(["htpasswd", "-Bbc", "-C", "4", str(f), "alice", "from-apache"],
                   check=True, capture_output=True)
    assert f.read_text().startswith("alice:$2y$04$")
    users = Htpasswd(str(f))
    assert users.verify_blocking("alice", "from-apache")
    assert not users.verify_blocking("alice", "from-apache!")


def test_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"old")})
    users = Htpasswd(str(f))
    assert users.verify_blocking("alice", "old")
    write(f, {"alice": bhash(b"new"), "bob": bhash(b"bobpw")})
    assert not users.verify_blocking("alice", "old")
    assert users.verify_blocking("alice", "new")
    assert users.verify_blocking("bob", "bobpw")


def test_vanished_or_broken_file_denies_everyone_until_fixed(tmp_path: Path) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"pw")})
    users = Htpasswd(str(f))
    f.unlink()
    assert not users.verify_blocking("alice", "pw")
    f.write_text("not an htpasswd file\n")
    assert not users.verify_blocking("alice", "pw")
    write(f, {"alice": bhash(b"pw")})
    assert users.verify_blocking("alice", "pw")


def test_successes_are_cached_failures_are_not(tmp_path: Path, counted: list[bytes]) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"pw")})
    users = Htpasswd(str(f))

    async def go() -> list[bool]:
        return [await users.verify("alice", "pw"), await users.verify("alice", "pw"),
                await users.verify("alice", "bad"), await users.verify("alice", "bad")]

    assert asyncio.run(go()) == [True, True, False, False]
    assert len(counted) == 3


def test_concurrent_checks_of_the_same_credentials_share_one_bcrypt(
        tmp_path: Path, counted: list[bytes]) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"pw")})
    users = Htpasswd(str(f))

    async def go() -> list[bool]:
        return list(await asyncio.gather(*(users.verify("alice", "pw") for _ in range(50))))

    assert asyncio.run(go()) == [True] * 50
    assert len(counted) == 1


def test_cache_expires(tmp_path: Path, counted: list[bytes]) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"pw")})
    users = Htpasswd(str(f), cache_ttl=0)

    async def go() -> None:
        assert await users.verify("alice", "pw")
        assert await users.verify("alice", "pw")

    asyncio.run(go())
    assert len(counted) == 2


def test_a_password_change_drops_cached_successes(tmp_path: Path) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"old")})
    users = Htpasswd(str(f))

    async def go() -> tuple[bool, bool, bool]:
        first = await users.verify("alice", "old")
        write(f, {"alice": bhash(b"new")})
        # Same size and maybe the same mtime tick: the ctime/inode stamp still changes.
        os.utime(f)
        return first, await users.verify("alice", "old"), await users.verify("alice", "new")

    assert asyncio.run(go()) == (True, False, True)


def test_cache_keys_hold_no_password(tmp_path: Path) -> None:
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"pw")})
    users = Htpasswd(str(f))
    asyncio.run(users.verify("alice", "pw"))
    (key,) = users._cache
    assert b"pw" not in key and b"alice" not in key
    # Keyed by a per-process secret: another instance derives another key.
    other = Htpasswd(str(f))
    assert other._key("alice", "pw") != key


def test_bcrypt_floods_leave_the_default_executor_free(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []

    def slow_check(password: bytes, hashed: bytes) -> bool:
        threads.append(threading.current_thread().name)
        time.sleep(0.2)
        return False

    monkeypatch.setattr(hp, "_check_blocking", slow_check)
    # More bcrypt threads than the default executor has (cpus + 4), to keep the
    # test short: the point is that they are other threads.
    pool = ThreadPoolExecutor(16, thread_name_prefix="ketch-bcrypt")
    monkeypatch.setattr(hp, "_executor", pool)
    f = tmp_path / "h"
    write(f, {"alice": bhash(b"pw")})
    users = Htpasswd(str(f))

    async def go() -> float:
        checks = [asyncio.ensure_future(users.verify("alice", f"guess{i}")) for i in range(16)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.to_thread(lambda: None)   # as the server's storage calls
        waited = time.monotonic() - started
        assert not any(await asyncio.gather(*checks))
        return waited

    try:
        assert asyncio.run(go()) < 0.15
    finally:
        pool.shutdown()
    assert len(threads) == 16 and all(name.startswith("ketch-bcrypt") for name in threads)
