"""Capabilities applied to real processes (forked children that then exit)."""

from __future__ import annotations

import os

import pytest
from tests.forking import in_child

from ketch.linux import caps
from ketch.linux import syscalls as sc
from ketch.linux.caps import CapSets

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CHOWN_KILL = {caps.CAPS["CAP_CHOWN"], caps.CAPS["CAP_KILL"]}



def status_masks() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                out[key] = int(value, 16)
    return out


def become_1000_keeping_caps() -> None:
    os.setgroups([])
    os.setresgid(1000, 1000, 1000)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    os.setresuid(1000, 1000, 1000)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)


def test_apply_after_setuid() -> None:
    def body() -> None:
        become_1000_keeping_caps()
        assert status_masks()["CapEff"] == 0          # setuid cleared the effective set
        caps.apply(CapSets.all(CHOWN_KILL))
        want = (1 << 0) | (1 << 5)
        assert status_masks() == {"CapInh": want, "CapPrm": want, "CapEff": want,
                                  "CapBnd": want, "CapAmb": want}
        assert os.getuid() == 1000
        assert caps.current() == CapSets.all(CHOWN_KILL)

    in_child(body)


def test_runc_order() -> None:
    """drop_bounding as root, setuid with keepcaps, then apply_sets (ketch's init order)."""
    names = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    want = CapSets.from_names(bounding=names, effective=names, permitted=names,
                              ambient=names)             # no inheritable, as runc's spec

    def body() -> None:
        caps.drop_bounding(want)
        become_1000_keeping_caps()
        refused = caps.apply_sets(want)
        assert refused == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
        mask = caps._mask(caps.parse(names))
        assert status_masks() == {"CapInh": 0, "CapPrm": mask, "CapEff": mask,
                                  "CapBnd": mask, "CapAmb": 0}

    in_child(body)


def test_ambient_caps_reach_a_non_root_program_across_exec() -> None:
    def body() -> None:
        become_1000_keeping_caps()
        caps.apply(CapSets(bounding=CHOWN_KILL, effective=CHOWN_KILL, permitted=CHOWN_KILL,
                           inheritable=CHOWN_KILL, ambient={caps.CAPS["CAP_KILL"]}))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(w, 1)
            os.execv("/bin/sh", ["sh", "-c", "grep -E '^Cap' /proc/self/status"])
        os.close(w)
        out = os.read(r, 4096).decode()
        os.waitpid(pid, 0)
        fields = {k: int(v, 16) for k, v in (line.split(":\t") for line in out.splitlines())}
        # After execve a non-root program has exactly its ambient capabilities.
        assert fields == {"CapInh": 0x21, "CapPrm": 0x20, "CapEff": 0x20, "CapBnd": 0x21,
                          "CapAmb": 0x20}, fields

    in_child(body)


def test_unknown_caps_above_last_cap_are_skipped() -> None:
    def body() -> None:
        caps.apply(CapSets.all({0}), last=caps.last_cap())
        # Capability 63 is beyond any kernel's last cap: skipped, no error.
        caps.apply(CapSets.all({0, 63}))
        assert caps.current() == CapSets.all({0})

    in_child(body)


def test_drop_without_setpcap_names_the_call() -> None:
    def body() -> None:
        become_1000_keeping_caps()
        # Lose CAP_SETPCAP from the permitted set: bounding can no longer be dropped.
        caps.apply_sets(CapSets(effective={0, 5}, permitted={0, 5}))
        try:
            caps.apply(CapSets.all({0}))
        except OSError as exc:
            assert "PR_CAPBSET_DROP" in str(exc), exc
        else:
            raise AssertionError("dropping the bounding set without CAP_SETPCAP succeeded")

    in_child(body)
