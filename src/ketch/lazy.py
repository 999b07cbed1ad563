"""A module imported on first use, for modules only some code paths need.

``ketch-runc`` is exec'd once per container operation, so every import on its
path is paid every time; code that only ``events --stats`` or a v2 device
filter needs should not be. Use it as

    if TYPE_CHECKING:
        from ketch.linux.cgroups import _stats as st
    else:
        st = LazyModule("ketch.linux.cgroups._stats")

so type checkers still see the real module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)
