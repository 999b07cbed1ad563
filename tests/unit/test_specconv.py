import copy

import pytest

from ketch.errors import InvalidArgument, NotSupported
from ketch.jsonmodel import to_json
from ketch.linux import syscalls as sc
from ketch.runtime.defaults import default_spec
from ketch.runtime.spec import Mount, parse_spec
from ketch.runtime.specconv import convert, parse_mount


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def spec_with(edit=None):
    data = to_json(default_spec())
    if edit:
        edit(data)
    return parse_spec(copy.deepcopy(data))


def test_default_plan(bundle):
    plan = convert(spec_with(), str(bundle))
    assert plan.rootfs == str(bundle / "rootfs")
    assert plan.has_new("pid") and plan.has_new("mount") and plan.has_new("network")
    assert not plan.has_new("user")
    assert plan.setup_dev
    assert [d.path for d in plan.devices][:2] == ["/dev/null", "/dev/zero"]
    assert plan.root_propagation == sc.MS_SLAVE | sc.MS_REC
    assert plan.rlimits == [(7, 1024, 1024)]
    proc = next(m for m in plan.mounts if m.destination == "/proc")
    assert proc.fstype == "proc" and proc.flags == 0


def test_mount_options_sorted_into_flags_propagation_and_data():
    m = parse_mount(Mount(destination="/dev/pts", type="devpts", source="devpts",
                          options=["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                                   "rslave", "rro"]))
    assert m.flags == sc.MS_NOSUID | sc.MS_NOEXEC
    assert m.data == "newinstance,ptmxmode=0666"
    assert m.propagation == [sc.MS_SLAVE | sc.MS_REC]
    assert m.attr_set == 0x1


def test_bind_mount_needs_existing_source(tmp_path):
    m = parse_mount(Mount(destination="/x", type="none", source=str(tmp_path),
                          options=["rbind", "ro"]))
    assert m.is_bind and m.flags & sc.MS_REC and m.flags & sc.MS_RDONLY
    with pytest.raises(InvalidArgument, match="no such file"):
        parse_mount(Mount(destination="/x", type="bind", source=str(tmp_path / "nope")))


def test_idmap_is_refused_clearly():
    with pytest.raises(NotSupported, match="idmap"):
        parse_mount(Mount(destination="/x", type="tmpfs", source="tmpfs", options=["idmap"]))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["linux"]["namespaces"].append({"type": "foo"}),
     'namespace "foo" does not exist'),
    (lambda d: d["linux"]["namespaces"].append({"type": "pid"}), "duplicated ns"),
    (lambda d: d.pop("process"), "process property must not be empty"),
    (lambda d: d["process"].update(args=[]), "args must not be empty"),
    (lambda d: d["root"].update(path="missing"), "does not exist"),
    (lambda d: d["linux"]["namespaces"].append({"type": "user"}), "no user mapping"),
    (lambda d: d["linux"].update(namespaces=[{"type": "pid"}]), "mount namespace is required"),
    (lambda d: d["linux"].update(sysctl={"kernel.panic": "1"}), "not in a separate"),
    (lambda d: (d.pop("hostname"), d["linux"].update(sysctl={"net.ipv4.ip_forward": "1"},
                                                      namespaces=[{"type": "mount"}])),
     "hosts network namespace"),
    (lambda d: d["process"].update(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]),
     "wrong rlimit value"),
    (lambda d: d["linux"]["namespaces"].append({"type": "cgroup", "path": "/nonexistent/ns"}),
     "does not exist"),
    (lambda d: d["process"].update(cwd="relative"), "not an absolute path"),
    (lambda d: d["mounts"].append({"destination": "rel", "type": "tmpfs"}), "not absolute"),
])
def test_invalid_specs(bundle, edit, message):
    with pytest.raises((InvalidArgument, NotSupported)) as exc:
        convert(spec_with(edit), str(bundle))
    assert message in str(exc.value)


def test_hostname_needs_uts(bundle):
    def edit(d):
        d["linux"]["namespaces"] = [ns for ns in d["linux"]["namespaces"] if ns["type"] != "uts"]
    with pytest.raises(InvalidArgument, match="UTS"):
        convert(spec_with(edit), str(bundle))


def test_dev_bind_skips_device_creation(bundle):
    def edit(d):
        d["mounts"] = [m for m in d["mounts"] if m["destination"] != "/dev"]
        d["mounts"].append({"destination": "/dev", "type": "bind", "source": "/dev",
                            "options": ["rbind"]})
    plan = convert(spec_with(edit), str(bundle))
    assert not plan.setup_dev and plan.devices == []


def test_join_order_puts_user_first(bundle, tmp_path):
    ns = tmp_path / "ns"
    ns.write_text("")
    def edit(d):
        d["linux"]["namespaces"] = [{"type": "mount"}, {"type": "network", "path": str(ns)},
                                    {"type": "user", "path": str(ns)}]
        d.pop("hostname")
    plan = convert(spec_with(edit), str(bundle))
    assert [t for t, _ in plan.join_namespaces] == ["user", "network"]
