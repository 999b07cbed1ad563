"""ketchd's settings: flags over daemon.json, as dockerd reads them (default-ulimits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.daemon.main import parser, settings_from
from ketch.engine import model
from ketch.errors import InvalidArgument


def settings(tmp_path: Path, config: dict[str, object], *flags: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(config))
    return settings_from(parser().parse_args(["--config-file", str(path), *flags]))[0]


def test_default_ulimits_from_the_file_and_the_flag(tmp_path: Path) -> None:
    s = settings(tmp_path, {"default-ulimits": {
        "nofile": {"Name": "nofile", "Soft": 1111, "Hard": 2222},
        "nproc": {"Soft": 10, "Hard": 20}}})
    assert s.default_ulimits == [("nofile", 1111, 2222), ("nproc", 10, 20)]
    s = settings(tmp_path, {}, "--default-ulimit", "nofile=1024:4096",
                 "--default-ulimit", "core=0")
    assert s.default_ulimits == [("nofile", 1024, 4096), ("core", 0, 0)]
    assert settings(tmp_path, {}).default_ulimits == []


@pytest.mark.parametrize(("config", "flags", "message"), [
    ({}, ["--default-ulimit", "nofile"], "invalid ulimit argument: nofile"),
    ({}, ["--default-ulimit", "bogus=1"], "invalid ulimit type: bogus"),
    ({}, ["--default-ulimit", "nofile=2:1"],
     "ulimit soft limit must be less than or equal to hard limit: 2 > 1"),
    ({}, ["--default-ulimit", "nofile=x"], 'strconv.ParseInt: parsing "x": invalid syntax'),
    ({"default-ulimits": {"nofile": {"Soft": "1", "Hard": 2}}}, [], "default-ulimits: nofile"),
    ({"default-ulimits": {"nofile": {"Soft": 1, "Hard": 2}}},
     ["--default-ulimit", "nofile=1"], "specified both as a flag and in the configuration file"),
])
def test_bad_default_ulimits(tmp_path: Path, config: dict[str, object], flags: list[str],
                             message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        settings(tmp_path, config, *flags)


def test_default_ulimits_join_the_containers_own() -> None:
    # dockerd's mergeUlimits at create: the container's own win, the others are added.
    hc = model.HostConfig(ulimits=[model.Ulimit(name="nofile", soft=5, hard=6)])
    defaults = model.DaemonDefaults(ulimits=[model.Ulimit(name="nofile", soft=1, hard=2),
                                             model.Ulimit(name="nproc", soft=3, hard=4)])
    model.adapt_host_config(hc, defaults)
    assert [(u.name, u.soft, u.hard) for u in hc.ulimits or []] == [("nofile", 5, 6),
                                                                     ("nproc", 3, 4)]


def test_log_driver_flags(tmp_path: Path) -> None:
    s = settings(tmp_path, {}, "--log-driver", "local", "--log-opt", "max-size=1m",
                 "--log-opt", "max-file=2")
    assert (s.log_driver, s.log_opts) == ("local", {"max-size": "1m", "max-file": "2"})
    with pytest.raises(InvalidArgument, match="invalid key value pair format"):
        settings(tmp_path, {}, "--log-opt", "max-size")
    with pytest.raises(InvalidArgument, match="specified both as a flag"):
        settings(tmp_path, {"log-driver": "local"}, "--log-driver", "json-file")
    with pytest.raises(InvalidArgument, match="failed to set log opts"):
        settings(tmp_path, {}, "--log-driver", "local", "--log-opt", "bogus=1")
