"""Small value classes for code that must start fast.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis`` and
``tokenize``): 5-15 ms before the first line of a CLI command runs, more
than the whole of a ``ketch ps``. The client and the CLI's hot path declare
their records as ``Record`` subclasses instead: the fields in ``__slots__``,
an ``__init__`` written out, and equality and ``repr`` from the slots, which
is all they used of dataclasses. The daemon keeps using dataclasses.
"""

from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({inner})"


__all__ = ["Record"]
