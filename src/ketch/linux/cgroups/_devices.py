"""The devices cgroup's semantics, played in Python.

A v1 devices cgroup is a default (allow or deny everything) plus a set of
exceptions; an "a" rule resets the default and drops the exceptions, other
rules add or remove exceptions. ``Emulator`` keeps that state so that

* v1 can move a running cgroup from what ``devices.list`` shows to the wanted
  rules with the fewest writes (never denying everything in between unless the
  default itself changes), as runc does;
* v2, which has no devices files, gets the same meaning compiled into an eBPF
  program (``_ebpf.compile_rules``) from ``Emulator.rules()``: at most one
  leading wildcard rule for the default, then exceptions that all say the
  opposite of the default, so their order does not matter.

Like the kernel (and runc), it refuses a rule that would punch a hole in a
wildcard exception ("deny c 1:3" while "c *:* rwm" is allowed), because v1
would silently ignore it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ketch.errors import InvalidArgument
from ketch.linux.cgroups.resources import DeviceRule

WILDCARD = -1
_ACCESS_ORDER = "rwm"


def _norm_access(access: str | None) -> str:
    if not access:
        return "rwm"
    bad = set(access) - set(_ACCESS_ORDER)
    if bad:
        raise InvalidArgument(f"invalid device access {access!r}: only r, w and m are allowed")
    return "".join(c for c in _ACCESS_ORDER if c in access)


@dataclass(frozen=True, slots=True)
class Rule:
    """A normalized rule: type "a", "b" or "c"; -1 is the * wildcard."""

    type: str
    major: int
    minor: int
    access: str
    allow: bool

    @classmethod
    def of(cls, r: DeviceRule) -> Rule:
        t = r.type or "a"
        if t not in ("a", "b", "c"):
            raise InvalidArgument(f"invalid device type {t!r} in a devices cgroup rule "
                                  "(want a, b or c)")
        for n in (r.major, r.minor):
            if n is not None and not (0 <= n < 2**32) and n != WILDCARD:
                raise InvalidArgument(f"invalid device number {n} in a devices cgroup rule")
        major = WILDCARD if r.major is None else r.major
        minor = WILDCARD if r.minor is None else r.minor
        if t == "a":
            major = minor = WILDCARD
        return cls(t, major, minor, _norm_access(r.access), bool(r.allow))

    def cgroup_string(self) -> str:
        """As devices.allow and devices.deny take it: "c 1:3 rwm", or "a"."""
        if self.type == "a":
            return "a"
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


_Key = tuple[str, int, int]


def _union(a: str, b: str) -> str:
    return "".join(c for c in _ACCESS_ORDER if c in a or c in b)


def _minus(a: str, b: str) -> str:
    return "".join(c for c in _ACCESS_ORDER if c in a and c not in b)


class Emulator:
    """A devices cgroup's state: the default and the exceptions to it."""

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[_Key, str] = {}

    @classmethod
    def from_rules(cls, rules: Iterable[DeviceRule | Rule],
                   default_allow: bool = False) -> Emulator:
        emu = cls(default_allow)
        for r in rules:
            emu.apply(r if isinstance(r, Rule) else Rule.of(r))
        return emu

    @classmethod
    def from_list(cls, text: str) -> Emulator:
        """The state devices.list shows: "a *:* rwm" alone for allow-all, else
        the allowed exceptions of a deny-by-default cgroup."""
        emu = cls(False)
        for line in text.splitlines():
            fields = line.replace(":", " ").split()
            if len(fields) != 4:
                raise InvalidArgument(f"malformed devices.list line {line!r}")
            t, major, minor, access = fields
            if t == "a":
                emu = cls(True)
                continue
            emu.apply(Rule(t, WILDCARD if major == "*" else int(major),
                           WILDCARD if minor == "*" else int(minor),
                           _norm_access(access), True))
        return emu

    def apply(self, rule: Rule) -> None:
        if rule.type == "a":
            self.default_allow = rule.allow
            self.exceptions = {}
            return
        key = (rule.type, rule.major, rule.minor)
        if rule.allow == self.default_allow:
            self._remove(key, rule)     # back to the default for these accesses
        else:
            self.exceptions[key] = _union(self.exceptions.get(key, ""), rule.access)

    def _remove(self, key: _Key, rule: Rule) -> None:
        t, major, minor = key
        for wider in ((t, WILDCARD, minor), (t, major, WILDCARD), (t, WILDCARD, WILDCARD)):
            if wider == key:
                continue
            have = self.exceptions.get(wider, "")
            if set(have) & set(rule.access):
                verb = "allow" if rule.allow else "deny"
                raise InvalidArgument(
                    f"device rule {verb} {rule.cgroup_string()} is not supported by the "
                    f"devices cgroup: it would punch a hole in the wildcard rule "
                    f"{Rule(t, wider[1], wider[2], have, not rule.allow).cgroup_string()}")
        left = _minus(self.exceptions.get(key, ""), rule.access)
        if left:
            self.exceptions[key] = left
        else:
            self.exceptions.pop(key, None)

    def _ordered(self) -> list[tuple[_Key, str]]:
        return sorted(self.exceptions.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0]))

    def transition(self, target: Emulator) -> list[Rule]:
        """The rules that move a cgroup in this state to ``target``'s."""
        out: list[Rule] = []
        old = self.exceptions
        # An allow-by-default cgroup cannot be narrowed exception by exception
        # without knowing every deny; start over as runc does.
        if self.default_allow or self.default_allow != target.default_allow:
            out.append(Rule("a", WILDCARD, WILDCARD, "rwm", target.default_allow))
            old = {}
        for key, perms in sorted(old.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            dropped = _minus(perms, target.exceptions.get(key, ""))
            if dropped:
                out.append(Rule(key[0], key[1], key[2], dropped, target.default_allow))
        for key, perms in target._ordered():
            gained = _minus(perms, old.get(key, ""))
            if gained:
                out.append(Rule(key[0], key[1], key[2], gained, not target.default_allow))
        return out

    def rules(self) -> list[Rule]:
        """The clean rule list: from a fresh deny-all cgroup to this state."""
        return Emulator(False).transition(self)


def clean_rules(rules: Sequence[DeviceRule]) -> tuple[bool, list[Rule]]:
    """(default allow?, exceptions) for an ordered OCI rule list."""
    emu = Emulator.from_rules(rules)
    return emu.default_allow, [r for r in emu.rules() if r.type != "a"]
