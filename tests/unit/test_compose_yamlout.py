"""``config``'s fast YAML writer gives exactly what PyYAML gives with compose's dumper."""

from __future__ import annotations

from typing import Any

import pytest

from ketch.compose import normalize as nz
from ketch.compose import yamlout

TRICKY = ["", "3000", "true", "null", "a: b", "*x", "-x", "x #y", "~", "1.5", "0x1F", " lead",
          "trail ", "${HOME}", 'a"b', "back\\slash", "{", "[x]", "@x", "`x", "!x", "%x", "&x",
          "x,y", "?", "- x", ":x", "x:", "yes", "on", "2021-01-01", "x y", "a'b", "#c", "|",
          ">", "12:30", "1e3", ".5", "+1", "-", "---", "...", "x\ty", "NO", "0o17", "<<", "=x"]


def model(t: str) -> dict[str, Any]:
    return {"name": "p", "services": {"s": {
        "image": t, "command": [t, "x"], "labels": {t or "e": t}, "empty": {}, "el": [],
        "n": None, "b": True, "i": 3, "lst": [{"a": t, "b": [1, 2]}, [t, []], {}],
        "deep": {"x": {"y": [{"z": t}]}}}}}


@pytest.mark.parametrize("text", TRICKY)
def test_same_as_pyyaml(text: str) -> None:
    m = model(text)
    assert yamlout.dump(m, nz._pyyaml_dump) == nz._pyyaml_dump(m)


@pytest.mark.parametrize("value", ["two\nlines", "é", 1.5, "k" * 200])
def test_what_it_cannot_write_goes_to_pyyaml(value: Any) -> None:
    m = {"services": {"s": {"x": value}}} if not (isinstance(value, str) and len(value) > 128) \
        else {"services": {value: {"x": 1}}}
    calls: list[Any] = []

    def fallback(data: Any) -> str:
        calls.append(data)
        return nz._pyyaml_dump(data)

    assert yamlout.dump(m, fallback) == nz._pyyaml_dump(m)
    assert calls == [m]
