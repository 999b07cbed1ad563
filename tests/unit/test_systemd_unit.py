"""contrib/ketchd.service: the directives the issue asks for, and an ExecStart
whose flags the installed ketchd accepts."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
from pathlib import Path

from tests.conftest import BIN

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "ketchd.service"


def unit() -> configparser.ConfigParser:
    # systemd allows repeated keys and %-specifiers: no interpolation, not strict.
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    p.read_string(UNIT.read_text())
    return p


def test_service_directives() -> None:
    s = unit()["Service"]
    assert s["KillMode"] == "process"  # containers survive a restart of ketchd
    assert s["Type"] == "simple"  # ketchd does not speak sd_notify
    assert s["Delegate"] == "yes"
    assert s["ExecReload"] == "/bin/kill -s HUP $MAINPID"
    for key in ("LimitNOFILE", "LimitNPROC", "TasksMax"):
        assert s[key] == "infinity", key
    assert s["Restart"] == "always"
    assert s["OOMScoreAdjust"] == "-500"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_exec_start_flags_are_accepted_by_ketchd() -> None:
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert Path(argv[0]).name == "ketchd"
    out = subprocess.run([str(BIN / "ketchd"), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    known = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", out.stdout))
    flags = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")]
    assert flags == ["--host"]
    assert set(flags) <= known, sorted(set(flags) - known)
    # The socket named is the one ketchd listens on by default.
    assert argv[argv.index("--host") + 1] == "unix:///run/ketch/ketch.sock"
    assert "unix:///run/ketch/ketch.sock" in out.stdout
