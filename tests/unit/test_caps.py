"""Capabilities: the table, parsing, /proc reading, and apply() against a recording kernel."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

import pytest

from ketch.errors import InvalidArgument
from ketch.linux import caps
from ketch.linux.caps import CapSets


def test_table() -> None:
    assert caps.CAPS["CAP_CHOWN"] == 0
    assert caps.CAPS["CAP_SYS_ADMIN"] == 21
    assert caps.CAPS["CAP_AUDIT_WRITE"] == 29
    assert caps.CAPS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(caps.CAPS) == 41
    assert sorted(caps.CAPS.values()) == list(range(41))
    assert all(caps.NAMES[n] == name for name, n in caps.CAPS.items())
    assert caps.name(39) == "CAP_BPF" and caps.name(45) == "CAP_45"
    assert caps.names({29, 5, 10}) == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]


def test_parse() -> None:
    assert caps.parse(["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_KILL"]) == {5, 10}
    assert caps.parse([]) == set()


@pytest.mark.parametrize("bad", ["CAP_NOPE", "cap_chown", "CHOWN", ""])
def test_parse_unknown(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        caps.parse(["CAP_CHOWN", bad])
    assert str(err.value) == f'unknown capability "{bad}"'


def test_from_names_and_all() -> None:
    c = CapSets.from_names(bounding=["CAP_CHOWN"], ambient=["CAP_KILL"])
    assert c == CapSets(bounding={0}, ambient={5})
    assert CapSets.all({1, 2}) == CapSets({1, 2}, {1, 2}, {1, 2}, {1, 2}, {1, 2})


def test_last_cap_is_the_kernels() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())


def test_current_reads_proc_status() -> None:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                fields[key] = int(value, 16)
    mine = caps.current()
    assert caps._mask(mine.bounding) == fields["CapBnd"]
    assert caps._mask(mine.effective) == fields["CapEff"]
    assert caps._mask(mine.permitted) == fields["CapPrm"]
    assert caps._mask(mine.inheritable) == fields["CapInh"]
    assert caps._mask(mine.ambient) == fields["CapAmb"]
    assert caps.current(os.getpid()) == mine


@dataclass
class FakeKernel:
    """Models the rules apply() relies on, and records every call."""

    bounding: set[int] = field(default_factory=lambda: set(range(41)))
    effective: set[int] = field(default_factory=lambda: set(range(41)))
    permitted: set[int] = field(default_factory=lambda: set(range(41)))
    inheritable: set[int] = field(default_factory=set)
    ambient: set[int] = field(default_factory=set)
    no_ambient: bool = False
    calls: list[tuple[object, ...]] = field(default_factory=list)

    def capbset_known(self, cap: int) -> bool:
        return cap <= 40

    def capbset_read(self, cap: int) -> bool:
        return cap in self.bounding

    def capbset_drop(self, cap: int) -> None:
        self.calls.append(("drop", cap))
        if caps.CAP_SETPCAP not in self.effective:
            raise OSError(errno.EPERM, "prctl(PR_CAPBSET_DROP): Operation not permitted")
        self.bounding.discard(cap)

    def capget(self) -> tuple[int, int, int]:
        self.calls.append(("capget",))
        return (caps._mask(self.effective), caps._mask(self.permitted),
                caps._mask(self.inheritable))

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self.calls.append(("capset", effective, permitted, inheritable))
        e, p, i = caps._unmask(effective), caps._unmask(permitted), caps._unmask(inheritable)
        if not p <= self.permitted or not e <= p:
            raise OSError(errno.EPERM, "capset: Operation not permitted")
        self.effective, self.permitted, self.inheritable = e, p, i
        self.ambient &= p & i

    def ambient_clear_all(self) -> None:
        self.calls.append(("ambient_clear",))
        if self.no_ambient:
            raise OSError(errno.EINVAL, "prctl: Invalid argument")
        self.ambient.clear()

    def ambient_raise(self, cap: int) -> None:
        self.calls.append(("ambient_raise", cap))
        if cap not in self.permitted or cap not in self.inheritable:
            raise OSError(errno.EPERM, "prctl: Operation not permitted")
        self.ambient.add(cap)


def test_apply_as_root() -> None:
    k = FakeKernel()
    want = CapSets.all({0, 5})
    caps.apply(want, kernel=k, last=40)
    assert (k.bounding, k.effective, k.permitted, k.inheritable, k.ambient) == \
        ({0, 5}, {0, 5}, {0, 5}, {0, 5}, {0, 5})
    drops = [c[1] for c in k.calls if c[0] == "drop"]
    assert drops == [c for c in range(41) if c not in (0, 5)]
    kinds = [c[0] for c in k.calls]
    # bounding first (while CAP_SETPCAP is effective), then capset, then ambient.
    assert kinds.index("capset") > max(i for i, c in enumerate(kinds) if c == "drop")
    assert kinds[-3:] == ["ambient_clear", "ambient_raise", "ambient_raise"]
    assert ("capset", 0b100001, 0b100001, 0b100001) in k.calls


def test_apply_after_setuid_raises_setpcap_first() -> None:
    # After setuid(1000) with PR_SET_KEEPCAPS: permitted kept, effective empty.
    k = FakeKernel(effective=set())
    caps.apply(CapSets.all({0, 5}), kernel=k, last=40)
    assert k.bounding == {0, 5} and k.effective == {0, 5} and k.ambient == {0, 5}
    first_capset = next(c for c in k.calls if c[0] == "capset")
    assert first_capset == ("capset", caps._mask(set(range(41))),
                            caps._mask(set(range(41))), 0)


def test_apply_skips_caps_above_the_kernels_last() -> None:
    k = FakeKernel(bounding=set(range(39)), effective=set(range(39)),
                   permitted=set(range(39)))
    want = CapSets.all({0, 38, 39, 40})       # 39, 40: unknown to a 5.8 kernel
    caps.apply(want, kernel=k, last=38)
    assert k.bounding == {0, 38} and k.effective == {0, 38} and k.ambient == {0, 38}
    touched = [c[1] for c in k.calls if c[0] in ("drop", "ambient_raise")]
    assert touched and all(isinstance(c, int) and c <= 38 for c in touched)


def test_apply_without_drops_does_not_touch_bounding() -> None:
    k = FakeKernel(bounding={0, 5})
    caps.apply(CapSets(bounding={0, 5}, effective={0}, permitted={0, 5}), kernel=k, last=40)
    assert not [c for c in k.calls if c[0] in ("drop", "capget")]
    assert k.effective == {0} and k.permitted == {0, 5} and k.ambient == set()


def test_runc_order_drop_bounding_then_apply_sets() -> None:
    k = FakeKernel()
    want = CapSets(bounding={5, 10, 29}, effective={5, 10, 29}, permitted={5, 10, 29},
                   ambient={5, 10, 29})               # ambient without inheritable
    caps.drop_bounding(want, kernel=k, last=40)
    assert k.bounding == {5, 10, 29}
    refused = caps.apply_sets(want, kernel=k, last=40)
    assert refused == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
    assert k.ambient == set() and k.effective == {5, 10, 29}


def test_apply_sets_on_a_kernel_without_ambient() -> None:
    k = FakeKernel(no_ambient=True, inheritable={5})
    assert caps.apply_sets(CapSets.all({5}), kernel=k, last=40) == []
    assert not [c for c in k.calls if c[0] == "ambient_raise"]


def test_capset_failure_propagates() -> None:
    k = FakeKernel(permitted={0}, effective={0})
    with pytest.raises(OSError) as err:
        caps.apply_sets(CapSets(effective={5}, permitted={5}), kernel=k, last=40)
    assert err.value.errno == errno.EPERM


def test_drop_without_setpcap_fails_naming_the_call() -> None:
    k = FakeKernel(effective=set(), permitted={0})
    with pytest.raises(OSError, match="PR_CAPBSET_DROP"):
        caps.apply(CapSets.all({0}), kernel=k, last=40)
