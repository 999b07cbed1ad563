"""The devices emulator and the eBPF device filter assembler (no kernel involved)."""

from __future__ import annotations

import struct

import pytest

from ketch.errors import InvalidArgument
from ketch.linux.cgroups import Emulator, Rule, compile_rules
from ketch.linux.cgroups._ebpf import (
    Assembler,
    exit_insn,
    jne_imm,
    ldx_w,
    mov32_imm,
)
from ketch.linux.cgroups.resources import DeviceRule

DENY_ALL = DeviceRule(allow=False)
ALLOW_ALL = DeviceRule(allow=True)


def _insns(code: bytes) -> list[tuple[int, int, int, int]]:
    """(opcode, dst, src, off, imm) of each 8-byte instruction."""
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack("<BBhi", code[i:i + 8])
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out  # type: ignore[return-value]


# -- emulator --------------------------------------------------------------------------------

def test_rule_normalization_and_strings() -> None:
    assert Rule.of(DeviceRule(True, "c", 1, 3, None)).cgroup_string() == "c 1:3 rwm"
    assert Rule.of(DeviceRule(True, "b", None, 7, "mr")).cgroup_string() == "b *:7 rm"
    assert Rule.of(DeviceRule(False, None, 4, 5, "w")).cgroup_string() == "a"


def test_last_rule_wins_like_v1() -> None:
    emu = Emulator.from_rules([DENY_ALL, DeviceRule(True, "c", 1, 3), DeviceRule(False, "c", 1, 3, "w")])
    assert not emu.default_allow
    assert emu.exceptions == {("c", 1, 3): "rm"}


def test_a_rule_resets_everything() -> None:
    emu = Emulator.from_rules([DENY_ALL, DeviceRule(True, "c", 1, 3), ALLOW_ALL])
    assert emu.default_allow and emu.exceptions == {}


def test_from_list() -> None:
    assert Emulator.from_list("a *:* rwm\n").default_allow
    emu = Emulator.from_list("c 1:3 rwm\nb *:* m\nc 136:* rw\n")
    assert not emu.default_allow
    assert emu.exceptions == {("c", 1, 3): "rwm", ("b", -1, -1): "m", ("c", 136, -1): "rw"}
    assert Emulator.from_list("").exceptions == {}
    with pytest.raises(InvalidArgument, match="malformed devices.list"):
        Emulator.from_list("c 1:3\n")


def test_transition_from_allow_all_starts_over() -> None:
    target = Emulator.from_rules([DENY_ALL, DeviceRule(True, "c", 1, 3)])
    rules = Emulator(True).transition(target)
    assert [(r.allow, r.cgroup_string()) for r in rules] == [(False, "a"), (True, "c 1:3 rwm")]


def test_transition_between_allow_lists() -> None:
    src = Emulator.from_rules([DENY_ALL, DeviceRule(True, "c", 1, 3), DeviceRule(True, "c", 1, 5)])
    dst = Emulator.from_rules([DENY_ALL, DeviceRule(True, "c", 1, 5, "r"),
                               DeviceRule(True, "c", 1, 9)])
    assert [(r.allow, r.cgroup_string()) for r in src.transition(dst)] == [
        (False, "c 1:3 rwm"), (False, "c 1:5 wm"), (True, "c 1:9 rwm")]
    assert src.transition(src) == []


def test_hole_in_wildcard_refused() -> None:
    with pytest.raises(InvalidArgument, match="punch a hole"):
        Emulator.from_rules([DENY_ALL, DeviceRule(True, "c", None, 3), DeviceRule(False, "c", 1, 3)])
    # Removing a wildcard rule itself is fine.
    emu = Emulator.from_rules([DENY_ALL, DeviceRule(True, "c", None, None),
                               DeviceRule(False, "c", None, None, "m")])
    assert emu.exceptions == {("c", -1, -1): "rw"}


def test_bad_numbers() -> None:
    with pytest.raises(InvalidArgument, match="invalid device number"):
        Rule.of(DeviceRule(True, "c", 2**32, 0))


# -- assembler ---------------------------------------------------------------------------------

def test_instruction_encoding() -> None:
    # struct bpf_insn: u8 code, u8 dst:4 src:4 (dst in the low nibble), s16 off, s32 imm.
    assert ldx_w(2, 1, 4).encode() == bytes.fromhex("6112040000000000")
    assert mov32_imm(0, 1).encode() == bytes.fromhex("b400000001000000")
    assert exit_insn().encode() == bytes.fromhex("9500000000000000")


def test_assembler_resolves_forward_jumps() -> None:
    a = Assembler()
    a.emit(jne_imm(2, 7, "out"), mov32_imm(0, 1), exit_insn())
    a.label("out")
    a.emit(mov32_imm(0, 0), exit_insn())
    assert _insns(a.assemble())[0] == (0x55, 2, 0, 2, 7)
    b = Assembler()
    b.emit(jne_imm(2, 7, "nowhere"))
    with pytest.raises(ValueError, match="undefined BPF label"):
        b.assemble()


HEADER = [
    (0x61, 2, 1, 0, 0),        # r2 = *(u32 *)(r1 + 0)       access_type
    (0x54, 2, 0, 0, 0xFFFF),   # w2 &= 0xffff                type
    (0x61, 3, 1, 0, 0),        # r3 = *(u32 *)(r1 + 0)
    (0x74, 3, 0, 0, 16),       # w3 >>= 16                   access
    (0x61, 4, 1, 4, 0),        # r4 = major
    (0x61, 5, 1, 8, 0),        # r5 = minor
]


def test_compile_small_rule_set() -> None:
    prog = compile_rules([DENY_ALL, DeviceRule(True, "c", 1, 3, "rwm"),
                          DeviceRule(True, "b", 8, None, "r")])
    assert not prog.default_allow
    assert prog.count == 20
    assert _insns(prog.insns) == HEADER + [
        # block 0: c 1:3 rwm -> allow (rwm: no access check)
        (0x55, 2, 0, 4, 2),        # if r2 != CHAR goto block 1
        (0x55, 4, 0, 3, 1),        # if r4 != 1 goto block 1
        (0x55, 5, 0, 2, 3),        # if r5 != 3 goto block 1
        (0xB4, 0, 0, 0, 1),        # w0 = 1
        (0x95, 0, 0, 0, 0),        # exit
        # block 1: b 8:* r -> allow
        (0x55, 2, 0, 6, 1),        # if r2 != BLOCK goto block 2
        (0xBC, 1, 3, 0, 0),        # w1 = w3
        (0x54, 1, 0, 0, 2),        # w1 &= READ
        (0x5D, 1, 3, 3, 0),        # if r1 != r3 goto block 2
        (0x55, 4, 0, 2, 8),        # if r4 != 8 goto block 2
        (0xB4, 0, 0, 0, 1),
        (0x95, 0, 0, 0, 0),
        # block 2: the default
        (0xB4, 0, 0, 0, 0),        # w0 = 0 (deny)
        (0x95, 0, 0, 0, 0),
    ]
    assert prog.insns[:16] == bytes.fromhex("6112000000000000" "54020000ffff0000")


def test_compile_allow_all_but_one() -> None:
    prog = compile_rules([ALLOW_ALL, DeviceRule(False, "c", 1, 3, "rwm")])
    assert prog.default_allow
    assert _insns(prog.insns)[6:] == [
        (0x55, 2, 0, 4, 2), (0x55, 4, 0, 3, 1), (0x55, 5, 0, 2, 3),
        (0xB4, 0, 0, 0, 0), (0x95, 0, 0, 0, 0),       # c 1:3 -> deny
        (0xB4, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]       # anything else -> allow


def test_compile_allow_all_is_header_and_return() -> None:
    prog = compile_rules([ALLOW_ALL])
    assert _insns(prog.insns) == HEADER + [(0xB4, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]


def test_compile_large_device_number_is_sign_folded() -> None:
    prog = compile_rules([DENY_ALL, DeviceRule(True, "c", 2**31 + 5, None)])
    assert _insns(prog.insns)[7] == (0x55, 4, 0, 2, -(2**31) + 5)


def test_compile_default_rules_of_the_runtime() -> None:
    # The runtime's defaults: mknod of any char/block, the usual /dev nodes, ptys.
    rules = [DENY_ALL, DeviceRule(True, "c", None, None, "m"), DeviceRule(True, "b", None, None, "m"),
             *[DeviceRule(True, "c", 1, n) for n in (3, 5, 7, 8, 9)],
             *[DeviceRule(True, "c", 5, n) for n in (0, 1, 2)], DeviceRule(True, "c", 136, None)]
    prog = compile_rules(rules)
    assert len(prog.rules) == 11
    assert [r.cgroup_string() for r in prog.rules][:3] == ["b *:* m", "c *:* m", "c 1:3 rwm"]
    assert _insns(prog.insns)[-2:] == [(0xB4, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)]
