"""ketch.image.debootstrap without the network: references, mirrors, progress, tidying, tar."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import textwrap
from pathlib import Path

import pytest

from ketch.errors import Forbidden, InvalidArgument, NotFound, NotSupported, System
from ketch.image import debootstrap as db
from ketch.image.oci import ContainerConfig
from ketch.image.service import apply_changes

# -- references ---------------------------------------------------------------------


@pytest.mark.parametrize("text,tag,suite,version", [
    ("debian:bookworm", "bookworm", "bookworm", "12"),
    ("debian:12", "12", "bookworm", "12"),
    ("debian:bullseye", "bullseye", "bullseye", "11"),
    ("debian:13", "13", "trixie", "13"),
    ("debian", "latest", "trixie", "13"),
    ("debian:stable", "stable", "trixie", "13"),
    ("debian:oldstable", "oldstable", "bookworm", "12"),
    ("debian:unstable", "unstable", "sid", None),
    ("debian:sid", "sid", "sid", None),
    ("docker.io/library/debian:trixie", "trixie", "trixie", "13"),
    ("library/debian:bookworm", "bookworm", "bookworm", "12"),
])
def test_parse_debian_reference(text: str, tag: str, suite: str, version: str | None) -> None:
    ref = db.parse_debian_reference(text)
    assert (ref.tag, ref.suite, ref.version) == (tag, suite, version)
    assert ref.ref == f"debian:{tag}"
    assert db.is_debian_reference(text)


@pytest.mark.parametrize("text", ["debian:buster", "debian:testing", "debian:bookworm-slim",
                                  "debian:12.5", "debian:forky"])
def test_unknown_release_lists_the_supported_ones(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        db.parse_debian_reference(text)
    msg = str(e.value)
    assert f"unsupported Debian release {text.split(':')[1]!r}" in msg
    for name in ("bullseye", "bookworm", "trixie", "sid", "latest", "12"):
        assert name in msg


@pytest.mark.parametrize("text", ["busybox", "ubuntu:22.04", "example.com/debian:bookworm",
                                  "me/debian:bookworm"])
def test_other_repositories_are_not_debian(text: str) -> None:
    assert not db.is_debian_reference(text)
    with pytest.raises(InvalidArgument, match="only the debian repository"):
        db.parse_debian_reference(text)


def test_digest_and_bad_grammar_refused() -> None:
    with pytest.raises(InvalidArgument, match="no registry digest"):
        db.parse_debian_reference("debian@sha256:" + "a" * 64)
    with pytest.raises(InvalidArgument):
        db.parse_debian_reference("Debian:bookworm")
    assert not db.is_debian_reference("Debian:bookworm")


# -- the host's mirror ----------------------------------------------------------------


def _etc(tmp_path: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        p = tmp_path / "etc" / "apt" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return str(tmp_path)


def test_mirror_from_deb822_skips_security_vendor_and_disabled(tmp_path: Path) -> None:
    root = _etc(tmp_path, {
        "sources.list.d/a-vendor.list":
            "deb https://packages.example.com/apt cloud-sdk-bookworm main\n",
        "sources.list.d/b-off.sources": """\
            Types: deb
            URIs: http://off.example.org/debian
            Suites: bookworm
            Components: main
            Enabled: no
            """,
        "sources.list.d/debian.sources": """\
            Types: deb
            # http://snapshot.debian.org/archive/debian-security/20250520T000000Z
            URIs: http://mirror.example.org/debian-security
            Suites: bookworm-security
            Components: main

            Types: deb-src deb
            URIs: http://mirror.example.org/debian/
            Suites: bookworm
              bookworm-updates
            Components: main contrib
            Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
            """,
        "sources.list.d/c.sources.disabled": """\
            Types: deb
            URIs: http://disabled.example.org/debian
            Suites: bookworm
            Components: main
            """,
    })
    srcs = db.read_apt_sources(root)
    assert [s.uris[0] for s in srcs] == [
        "https://packages.example.com/apt", "http://off.example.org/debian",
        "http://mirror.example.org/debian-security", "http://mirror.example.org/debian/"]
    assert srcs[1].enabled is False
    assert srcs[3].suites == ("bookworm", "bookworm-updates")
    assert srcs[3].types == ("deb-src", "deb")
    assert db.host_mirror(root) == "http://mirror.example.org/debian"


def test_mirror_from_one_line_sources_list_first(tmp_path: Path) -> None:
    root = _etc(tmp_path, {
        "sources.list": """\
            # a comment
            deb cdrom:[Debian GNU/Linux 12]/ bookworm main
            deb-src http://src.example.org/debian bookworm main
            deb [arch=amd64 signed-by=/k.gpg] http://ftp.example.org/debian bookworm main # tail
            """,
        "sources.list.d/z.sources": """\
            Types: deb
            URIs: http://later.example.org/debian
            Suites: bookworm
            Components: main
            """,
    })
    assert db.host_mirror(root) == "http://ftp.example.org/debian"


def test_no_debian_archive_means_the_default(tmp_path: Path) -> None:
    root = _etc(tmp_path, {
        "sources.list": "deb http://archive.ubuntu.com/ubuntu jammy main universe\n"
                        "deb http://deb.example.org/debian bookworm contrib\n",
    })
    assert db.host_mirror(root) == db.DEFAULT_MIRROR
    assert db.host_mirror(str(tmp_path / "nothing")) == db.DEFAULT_MIRROR


def test_check_mirror() -> None:
    assert db.check_mirror("http://m.example/debian/") == "http://m.example/debian"
    assert db.check_mirror("file:/srv/mirror") == "file:/srv/mirror"
    for bad in ("ftp.example.org/debian", "cdrom:/x", "http://", ""):
        with pytest.raises(InvalidArgument, match="invalid mirror"):
            db.check_mirror(bad)


# -- progress ---------------------------------------------------------------------------

# debootstrap ends some lines with a space, kept here.
RUN = ("I: Retrieving InRelease \n"
       "I: Checking Release signature\n"
       "I: Valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)\n"
       "I: Retrieving Packages \n"
       "I: Validating Packages \n") + """\
I: Resolving dependencies of required packages...
I: Checking component main on http://deb.debian.org/debian...
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving apt 2.6.1
I: Validating apt 2.6.1
W: Retrying failed download of http://deb.debian.org/debian/pool/main/b/bash.deb
I: Retrieving bash 5.2.15-2+b13
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting apt...
some unprefixed output of a maintainer script
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Unpacking zlib1g:amd64...
I: Configuring required packages...
I: Configuring apt...
I: Unpacking the base system...
I: Unpacking gpgv...
I: Configuring the base system...
I: Configuring gpgv...
I: Base system installed successfully.
"""


def test_progress_steps_in_order_with_counts() -> None:
    p = db.ProgressParser()
    events = [p.feed(line) for line in RUN.splitlines(keepends=True)]
    assert events[16] is None  # not debootstrap's own line
    got = [e for e in events if e is not None]
    steps = [e.step for e in got if e.new_step]
    assert steps == [db.STEP_LISTS, db.STEP_RESOLVING, db.STEP_RETRIEVING, db.STEP_EXTRACTING,
                     db.STEP_CORE, db.STEP_CONFIGURING, db.STEP_BASE, db.STEP_CONFIGURING,
                     db.STEP_INSTALLED]
    retrieving = [e for e in got if e.step == db.STEP_RETRIEVING and e.level == "info"]
    assert [(e.detail, e.count) for e in retrieving] == [
        ("adduser 3.134", 1), ("adduser 3.134", 1), ("apt 2.6.1", 2), ("apt 2.6.1", 2),
        ("bash 5.2.15-2+b13", 3)]
    warn = [e for e in got if e.level == "warning"]
    assert len(warn) == 1 and warn[0].step == db.STEP_RETRIEVING and not warn[0].new_step
    assert warn[0].detail.startswith("Retrying failed download")
    core = [e for e in got if e.step == db.STEP_CORE]
    assert [(e.detail, e.count) for e in core][-1] == ("zlib1g:amd64", 2)
    base = [e for e in got if e.step == db.STEP_BASE]
    assert [e.detail for e in base] == ["Unpacking the base system...", "gpgv"]
    assert p.errors == []


def test_progress_as_terminal_lines() -> None:
    assert str(db.Progress(db.STEP_RETRIEVING, "bash 5.2", new_step=True, count=1)) == \
        "Retrieving packages"
    assert str(db.Progress(db.STEP_RETRIEVING, "bash 5.2", count=2)) == \
        "Retrieving packages: bash 5.2"
    assert str(db.Progress(db.STEP_RETRIEVING, "slow", "warning")) == "W: slow"
    assert str(db.Progress(db.STEP_LISTS, "bad", "error")) == "E: bad"


def test_progress_errors_are_collected() -> None:
    p = db.ProgressParser()
    first = p.feed("E: Failed getting release file http://x/debian/dists/bookworm/Release\n")
    assert first is not None and first.level == "error" and first.step == db.STEP_PREPARING
    assert p.feed("I: something new debootstrap says\n") == db.Progress(
        db.STEP_PREPARING, "something new debootstrap says", "info", True, 0)
    p.feed("E: second\n")
    assert p.errors == ["Failed getting release file http://x/debian/dists/bookworm/Release",
                        "second"]
    assert p.feed("X: not a level\n") is None and p.feed("\n") is None


# -- running (argument checks; the real run is in the integration tests) ---------------


def test_bad_arguments_before_anything_runs(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    dest = str(tmp_path / "rootfs")
    with pytest.raises(InvalidArgument, match="unsupported Debian release"):
        db.debootstrap_rootfs(dest, "buster")
    with pytest.raises(InvalidArgument, match="unsupported debootstrap variant"):
        db.debootstrap_rootfs(dest, variant="fakechroot")
    with pytest.raises(InvalidArgument, match="invalid mirror"):
        db.debootstrap_rootfs(dest, mirror="deb.debian.org/debian")
    with pytest.raises(NotSupported, match="emulator"):
        db.debootstrap_rootfs(dest, arch="s390x" if db.host_arch() != "s390x" else "amd64")
    monkeypatch.setattr(db.shutil, "which", lambda *a, **k: None)
    with pytest.raises(NotFound, match="install Debian's debootstrap package"):
        db.debootstrap_rootfs(dest, mirror="http://m/debian", install=False)
    assert list(tmp_path.iterdir()) == []
    # Not root: no apt-get, the same NotFound.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NotFound, match="install Debian's debootstrap package"):
        db.install_debootstrap()


def _fake(tmp_path: Path, body: str) -> str:
    """A stand-in debootstrap: ``$4`` is the target, as in the real argument order."""
    script = tmp_path / "fake-debootstrap"
    script.write_text("#!/bin/sh\nset -e\ntarget=\"$4\"\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap_rootfs needs root")


@root_only
def test_success_tidies_renames_and_reports(tmp_path: Path) -> None:
    fake = _fake(tmp_path, """\
        echo "args: $*" > "$target.args"
        echo "I: Retrieving InRelease "
        echo "I: Retrieving bash 5.2"
        mkdir -p "$target/dev" "$target/etc/apt" "$target/var/cache/apt/archives/partial" \
                 "$target/var/lib/apt/lists/partial" "$target/usr/bin" "$target/var/log/apt"
        ln -s /proc/self/fd "$target/dev/fd"
        echo junk > "$target/dev/null"
        echo host > "$target/etc/hostname"
        echo "nameserver 10.0.0.1" > "$target/etc/resolv.conf"
        echo "deb http://m/debian bookworm main" > "$target/etc/apt/sources.list"
        echo deb > "$target/var/cache/apt/archives/bash_5.2_amd64.deb"
        echo lst > "$target/var/lib/apt/lists/m_debian_dists_bookworm_InRelease"
        echo log > "$target/var/log/dpkg.log"
        echo log > "$target/var/log/bootstrap.log"
        echo log > "$target/var/log/apt/term.log"
        echo sh > "$target/usr/bin/bash"
        echo "I: Base system installed successfully."
        """)
    seen: list[db.Progress] = []
    dest = tmp_path / "out" / "rootfs"
    res = db.debootstrap_rootfs(str(dest), "12", mirror="http://m.example/debian/",
                                progress=seen.append, debootstrap=fake)
    assert res == db.DebianRootfs(str(dest), "bookworm", "http://m.example/debian", "minbase",
                                  db.host_arch())
    args = next((tmp_path / "out").glob(".debootstrap-*.args")).read_text().split()
    assert args[1:4] == ["--variant=minbase", f"--arch={db.host_arch()}", "bookworm"]
    assert args[5] == "http://m.example/debian"
    assert [e.step for e in seen if e.new_step] == [
        db.STEP_PREPARING, db.STEP_LISTS, db.STEP_RETRIEVING, db.STEP_INSTALLED,
        db.STEP_CLEANING, db.STEP_DONE]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["rootfs"]
    assert os.listdir(dest / "dev") == []
    assert (dest / "usr/bin/bash").read_text() == "sh\n"
    assert not (dest / "etc/hostname").exists() and not (dest / "etc/resolv.conf").exists()
    assert not (dest / "etc/apt/sources.list").exists()
    assert os.listdir(dest / "var/cache/apt/archives") == ["partial"]
    assert os.listdir(dest / "var/lib/apt/lists") == ["partial"]
    assert (dest / "var/log/dpkg.log").read_text() == ""
    assert (dest / "var/log/apt/term.log").read_text() == ""
    assert not (dest / "var/log/bootstrap.log").exists()
    assert "URIs: http://deb.debian.org/debian\n" in \
        (dest / "etc/apt/sources.list.d/debian.sources").read_text()
    with pytest.raises(InvalidArgument, match="already exists"):
        db.debootstrap_rootfs(str(dest), debootstrap=fake)


@root_only
def test_failure_reports_error_lines_and_removes_the_tree(tmp_path: Path) -> None:
    fake = _fake(tmp_path, """\
        mkdir -p "$target/debootstrap"
        echo "I: Retrieving InRelease "
        echo "E: Failed getting release file http://m/debian/dists/bookworm/InRelease"
        exit 1
        """)
    dest = tmp_path / "rootfs"
    with pytest.raises(System) as e:
        db.debootstrap_rootfs(str(dest), debootstrap=fake, mirror="http://m/debian")
    assert str(e.value) == ("debootstrap of Debian bookworm failed (exit status 1):\n"
                            "Failed getting release file "
                            "http://m/debian/dists/bookworm/InRelease")
    assert list(tmp_path.iterdir()) == [tmp_path / "fake-debootstrap"]


@root_only
def test_failure_without_error_lines_quotes_the_log(tmp_path: Path) -> None:
    fake = _fake(tmp_path, """\
        mkdir -p "$target/debootstrap"
        printf 'dpkg: error processing package x\\nline two\\n' > "$target/debootstrap/debootstrap.log"
        echo "W: Failure trying to run: chroot $target dpkg --force-depends --install x.deb"
        echo "W: See $target/debootstrap/debootstrap.log for details"
        exit 1
        """)
    with pytest.raises(System) as e:
        db.debootstrap_rootfs(str(tmp_path / "rootfs"), debootstrap=fake,
                              mirror="http://m/debian")
    msg = str(e.value)
    assert "W: Failure trying to run: chroot" in msg
    assert msg.endswith("debootstrap.log:\ndpkg: error processing package x\nline two")
    assert not any(p.name.startswith(".debootstrap-") for p in tmp_path.iterdir())


@root_only
def test_a_failing_progress_callback_stops_debootstrap(tmp_path: Path) -> None:
    fake = _fake(tmp_path, """\
        mkdir -p "$target"
        echo "I: Retrieving InRelease "
        sleep 60
        """)

    def boom(p: db.Progress) -> None:
        if p.step == db.STEP_LISTS:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        db.debootstrap_rootfs(str(tmp_path / "rootfs"), debootstrap=fake,
                              mirror="http://m/debian", progress=boom)
    assert not any(p.name.startswith(".debootstrap-") for p in tmp_path.iterdir())


def test_not_root_is_forbidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Forbidden, match="needs root"):
        db.debootstrap_rootfs(str(tmp_path / "r"), debootstrap="/bin/false",
                              mirror="http://m/debian")


# -- tidying ---------------------------------------------------------------------------


def test_tidy_sources_per_release(tmp_path: Path) -> None:
    for suite in ("bullseye", "trixie", "sid"):
        (tmp_path / suite).mkdir()
        db.tidy_rootfs(str(tmp_path / suite), suite)
    bullseye = (tmp_path / "bullseye/etc/apt/sources.list").read_text().splitlines()
    assert bullseye == ["deb http://deb.debian.org/debian bullseye main",
                        "deb http://deb.debian.org/debian-security bullseye-security main",
                        "deb http://deb.debian.org/debian bullseye-updates main"]
    trixie = (tmp_path / "trixie/etc/apt/sources.list.d/debian.sources").read_text()
    assert "Suites: trixie trixie-updates\n" in trixie
    assert "URIs: http://deb.debian.org/debian-security\nSuites: trixie-security\n" in trixie
    sid = (tmp_path / "sid/etc/apt/sources.list.d/debian.sources").read_text()
    assert "Suites: sid\n" in sid and "security" not in sid and sid.count("Types:") == 1
    conf = tmp_path / "trixie/etc/apt/apt.conf.d"
    assert sorted(os.listdir(conf)) == ["docker-autoremove-suggests", "docker-clean",
                                        "docker-gzip-indexes", "docker-no-languages"]
    assert 'Dir::Cache::pkgcache "";' in (conf / "docker-clean").read_text()
    assert "force-unsafe-io" in \
        (tmp_path / "trixie/etc/dpkg/dpkg.cfg.d/docker-apt-speedup").read_text()
    policy = tmp_path / "trixie/usr/sbin/policy-rc.d"
    assert policy.read_text().rstrip().endswith("exit 101")
    assert stat.S_IMODE(policy.stat().st_mode) == 0o755


def test_tidy_empties_machine_id_and_keeps_lists_partial(tmp_path: Path) -> None:
    root = tmp_path
    (root / "etc").mkdir()
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    lists = root / "var/lib/apt/lists"
    (lists / "partial").mkdir(parents=True)
    (lists / "lock").write_text("")
    (lists / "sub").mkdir()
    (lists / "x_Packages").write_text("P")
    (root / "var/cache/ldconfig").mkdir(parents=True)
    (root / "var/cache/ldconfig/aux-cache").write_text("c")
    (root / "var/cache/debconf").mkdir(parents=True)
    (root / "var/cache/debconf/config.dat-old").write_text("o")
    (root / "var/cache/debconf/config.dat").write_text("n")
    db.tidy_rootfs(str(root), "bookworm")
    assert (root / "etc/machine-id").read_text() == ""
    assert sorted(os.listdir(lists)) == ["lock", "partial"]
    assert os.listdir(root / "var/cache/ldconfig") == []
    assert os.listdir(root / "var/cache/debconf") == ["config.dat"]


# -- tar and image config -----------------------------------------------------------------


def _tree(root: Path) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "b").write_bytes(b"second\n")
    (root / "a").write_bytes(b"first\n")
    (root / "usr/bin/bash").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    os.link(root / "usr/bin/bash", root / "usr/bin/rbash")
    (root / "bin").symlink_to("usr/bin")
    os.mkfifo(root / "etc/fifo")
    (root / "usr/bin/bash").chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(1, 1_700_000_000_123_456_789),
                     follow_symlinks=False)


def test_rootfs_tar_is_deterministic_and_complete(tmp_path: Path) -> None:
    _tree(tmp_path / "r")
    one, two = io.BytesIO(), io.BytesIO()
    d1, n1 = db.rootfs_tar(str(tmp_path / "r"), one)
    d2, n2 = db.rootfs_tar(str(tmp_path / "r"), two)
    assert one.getvalue() == two.getvalue() and (d1, n1) == (d2, n2)
    assert d1 == "sha256:" + hashlib.sha256(one.getvalue()).hexdigest()
    assert n1 == len(one.getvalue())
    one.seek(0)
    with tarfile.open(fileobj=one) as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names == ["a", "b", "bin", "etc", "etc/fifo", "usr", "usr/bin", "usr/bin/bash",
                         "usr/bin/rbash"]
        by = {m.name: m for m in members}
        assert by["bin"].issym() and by["bin"].linkname == "usr/bin"
        assert by["etc/fifo"].isfifo()
        assert by["usr/bin/rbash"].islnk() and by["usr/bin/rbash"].linkname == "usr/bin/bash"
        assert by["usr/bin/bash"].mode == 0o755
        assert all(m.uname == "" and m.gname == "" for m in members)
        assert all(int(m.mtime) == 1_700_000_000 for m in members)
        assert by["a"].pax_headers["mtime"] == "1700000000.123456789"
        f = tf.extractfile("a")
        assert f is not None and f.read() == b"first\n"


def test_rootfs_tar_of_a_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        db.rootfs_tar(str(tmp_path / "nope"), io.BytesIO())


def test_image_changes_apply_as_docker_debian_config() -> None:
    changes = db.image_changes("bookworm")
    assert changes == ['CMD ["bash"]',
                       "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    cc = ContainerConfig()
    apply_changes(cc, changes)
    assert cc.cmd == ["bash"]
    assert cc.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert db.history_comment("12") == "Debian 12 (bookworm), debootstrap --variant=minbase"
    assert db.history_comment("sid") == "Debian sid, debootstrap --variant=minbase"
    with pytest.raises(InvalidArgument):
        db.image_changes("buster")


def test_oci_platform_names() -> None:
    r = db.DebianRootfs("/x", "bookworm", "m", "minbase", "arm64")
    assert (r.oci_arch, r.oci_variant) == ("arm64", "v8")
    r = db.DebianRootfs("/x", "bookworm", "m", "minbase", "i386")
    assert (r.oci_arch, r.oci_variant) == ("386", "")
