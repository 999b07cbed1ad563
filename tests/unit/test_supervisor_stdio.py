"""Detach keys: the sequence is found across reads and never reaches the process."""

from __future__ import annotations

from ketch.engine.supervisor.stdio import DetachKeys

CTRL_P_Q = b"\x10\x11"


def test_no_keys_passes_everything():
    d = DetachKeys(b"")
    assert d.feed(b"a\x10\x11b") == (b"a\x10\x11b", False)


def test_the_sequence_in_one_read():
    d = DetachKeys(CTRL_P_Q)
    assert d.feed(b"ls\n\x10\x11ignored") == (b"ls\n", True)


def test_the_sequence_split_across_reads_is_held_back():
    d = DetachKeys(CTRL_P_Q)
    assert d.feed(b"ab\x10") == (b"ab", False)
    assert d.feed(b"\x11") == (b"", True)


def test_a_false_start_is_passed_on():
    d = DetachKeys(CTRL_P_Q)
    assert d.feed(b"x\x10") == (b"x", False)
    assert d.feed(b"y") == (b"\x10y", False)
    assert d.feed(b"\x10") == (b"", False)
    assert d.flush() == b"\x10"         # stdin ended: what was held goes on
    assert d.flush() == b""


def test_longer_sequences():
    d = DetachKeys(b"abc")
    assert d.feed(b"xab") == (b"x", False)
    assert d.feed(b"ab") == (b"ab", False)     # "abab": the first "ab" was not it
    assert d.feed(b"c") == (b"", True)
