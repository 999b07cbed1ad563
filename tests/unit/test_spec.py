import json

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.jsonmodel import to_json
from ketch.runtime.defaults import default_spec
from ketch.runtime.spec import load_spec, parse_spec


def test_default_spec_round_trips():
    data = to_json(default_spec())
    spec = parse_spec(json.loads(json.dumps(data)))
    assert to_json(spec) == data
    assert data["process"]["capabilities"]["bounding"] == [
        "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert data["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert data["process"]["user"] == {"uid": 0, "gid": 0}


def test_json_names_are_the_specs():
    spec = parse_spec({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "noNewPrivileges": True, "oomScoreAdj": -5,
                    "user": {"uid": 1, "gid": 2, "additionalGids": [3]}},
        "root": {"path": "rootfs"},
        "linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                  "resources": {"memory": {"limit": 1024, "disableOOMKiller": True},
                                "blockIO": {"throttleReadIOPSDevice": [
                                    {"major": 8, "minor": 0, "rate": 5}]}},
                  "cgroupsPath": "/a/b", "maskedPaths": ["/proc/kcore"]},
    })
    assert spec.process.no_new_privileges is True
    assert spec.process.oom_score_adj == -5
    assert spec.process.user.additional_gids == [3]
    assert spec.linux.uid_mappings[0].host_id == 1000
    assert spec.linux.resources.memory.disable_oom_killer is True
    assert spec.linux.resources.block_io.throttle_read_iops_device[0].rate == 5
    out = to_json(spec)
    assert out["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert out["linux"]["resources"]["blockIO"]["throttleReadIOPSDevice"][0]["rate"] == 5


@pytest.mark.parametrize("data, message", [
    ({"process": {"args": "sh"}}, "process.args: expected array, got string"),
    ({"process": {"user": {"uid": "0"}}}, "process.user.uid: expected integer, got string"),
    ({"linux": {"namespaces": [{"type": 5}]}}, "linux.namespaces[0].type: expected string"),
    ([], "expected object, got array"),
])
def test_type_errors_name_the_path(data, message):
    with pytest.raises(InvalidArgument) as exc:
        parse_spec(data)
    assert message in str(exc.value)


def test_load_spec_errors(tmp_path):
    with pytest.raises(NotFound, match="config.json not found"):
        load_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InvalidArgument, match="failed to parse config.json"):
        load_spec(str(tmp_path))
