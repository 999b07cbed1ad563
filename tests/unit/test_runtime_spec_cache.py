"""config.json's seccomp profile is parsed once per distinct profile (it is most of
the file, and the same for nearly every container); the result is what a full
parse gives."""

from __future__ import annotations

import json

from ketch.jsonmodel import to_json
from ketch.runtime import spec as spec_mod
from ketch.runtime.defaults import default_spec
from ketch.runtime.seccomp_default import default_profile


def _spec_with_profile() -> dict:
    data = to_json(default_spec())
    data["linux"]["seccomp"] = to_json(default_profile())
    return data


def _write(tmp_path, name, data):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(data))
    return str(d)


def test_same_profile_parsed_once_and_equal_to_a_full_parse(tmp_path):
    data = _spec_with_profile()
    a = _write(tmp_path, "a", data)
    other = json.loads(json.dumps(data))
    other["process"]["args"] = ["sleep", "1"]
    b = _write(tmp_path, "b", other)
    _, sa = spec_mod.read_spec(a)
    _, sb = spec_mod.read_spec(b)
    assert sa.linux.seccomp is sb.linux.seccomp           # one parse, shared
    assert spec_mod.seccomp_key(sa.linux.seccomp) is not None
    assert to_json(sb) == to_json(spec_mod.parse_spec(other))
    assert sb.process.args == ["sleep", "1"]


def test_a_different_profile_is_its_own(tmp_path):
    data = _spec_with_profile()
    a = _write(tmp_path, "a", data)
    changed = json.loads(json.dumps(data))
    changed["linux"]["seccomp"]["defaultAction"] = "SCMP_ACT_KILL"
    b = _write(tmp_path, "b", changed)
    _, sa = spec_mod.read_spec(a)
    _, sb = spec_mod.read_spec(b)
    assert sa.linux.seccomp is not sb.linux.seccomp
    assert to_json(sb.linux.seccomp)["defaultAction"] == "SCMP_ACT_KILL"
    assert to_json(sa.linux.seccomp)["defaultAction"] != "SCMP_ACT_KILL"


def test_no_profile_no_cache_entry(tmp_path):
    data = to_json(default_spec())
    data["linux"].pop("seccomp", None)
    _, s = spec_mod.read_spec(_write(tmp_path, "a", data))
    assert s.linux.seccomp is None
