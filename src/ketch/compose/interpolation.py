"""Variable interpolation in compose files, as Docker Compose v2 does it.

Forms: ``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}``
(unset), ``${VAR:?message}`` / ``${VAR?message}`` (required), ``${VAR:+replacement}`` /
``${VAR+replacement}`` (when set), nested inside defaults (``${A:-${B}}``), and ``$$``
for a literal ``$``. A ``$`` followed by anything else stays as written. An unset
variable without a default becomes "" with a warning.

``interpolate`` applies this to every string value of a model (never to keys) and,
like Compose, turns the strings of a few typed keys (``tty``, ``deploy.replicas``...)
into booleans and numbers. Errors name the path (``services.web.image``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ketch.compose.errors import ComposeError

Lookup = Callable[[str], "str | None"]
"""A variable's value, or None when it is not set (set-but-empty is "")."""
Warn = Callable[[str], None]

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
# the operator right after the name in ${NAME<op>rest}
_OPERATORS = (":?", "?", ":-", "-", ":+", "+")


class TemplateError(Exception):
    """A template that cannot be interpolated; subclasses carry Compose's wording."""


class InvalidTemplate(TemplateError):
    def __init__(self, template: str) -> None:
        super().__init__(f"Invalid template: {json.dumps(template, ensure_ascii=False)}")
        self.template = template


class MissingRequired(TemplateError):
    def __init__(self, variable: str, reason: str) -> None:
        text = f"required variable {variable} is missing a value"
        if reason:
            text += f": {reason}"
        super().__init__(text)
        self.variable = variable
        self.reason = reason


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start``, counting nested braces; -1 if none.

    Like Compose, the character after each ``{`` is skipped (so ``${}`` never closes)."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "}":
            depth -= 1
            if depth == 0:
                return i
        elif ch == "{":
            depth += 1
            i += 1
        i += 1
    return -1


def _braced(body: str, lookup: Lookup, warn: Warn | None) -> str:
    name_match = _NAME.match(body)
    if name_match is None:
        raise InvalidTemplate("")
    name = name_match.group(0)
    rest = body[name_match.end():]
    if not rest:
        return _plain(name, lookup, warn)
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise InvalidTemplate("")
    arg = rest[len(op):]
    value = lookup(name)
    if op in (":?", "?"):
        if value is None or (op == ":?" and value == ""):
            raise MissingRequired(name, substitute(arg, lookup, warn))
        return value
    if op in (":-", "-"):
        if value is None or (op == ":-" and value == ""):
            return substitute(arg, lookup, warn)
        return value
    # ":+" / "+": the replacement when set (and not empty for ":+"), else the value ("")
    if value is not None and (op == "+" or value != ""):
        return substitute(arg, lookup, warn)
    return value or ""


def _plain(name: str, lookup: Lookup, warn: Warn | None) -> str:
    value = lookup(name)
    if value is None:
        if warn is not None:
            warn(f'The "{name}" variable is not set. Defaulting to a blank string.')
        return ""
    return value


def substitute(template: str, lookup: Lookup, warn: Warn | None = None) -> str:
    """Interpolate one string. Raises ``InvalidTemplate`` / ``MissingRequired``."""
    if "$" not in template:
        return template
    out: list[str] = []
    i = 0
    n = len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        nxt = template[j + 1] if j + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i = j + 2
        elif nxt == "{":
            close = _closing_brace(template, j + 1)
            if close < 0:
                raise InvalidTemplate(template)
            try:
                out.append(_braced(template[j + 2:close], lookup, warn))
            except InvalidTemplate as exc:
                # the whole string is what the user must look at
                raise InvalidTemplate(exc.template or template) from None
            i = close + 1
        else:
            name = _NAME.match(template, j + 1)
            if name is None:
                out.append("$")
                i = j + 1
            else:
                out.append(_plain(name.group(0), lookup, warn))
                i = name.end()
    return "".join(out)


# --- typed keys: Compose casts their (interpolated) strings -------------------------

def _go_syntax(func: str, value: str) -> str:
    return f'{func}: parsing "{value}": invalid syntax'


def _to_int(value: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ValueError(_go_syntax("strconv.Atoi", value))
    return int(value)


def _to_int64(value: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ValueError(_go_syntax("strconv.ParseInt", value))
    return int(value)


def _to_float(value: str) -> float:
    try:
        if value.strip() != value or value.lower() in ("nan", "inf", "+inf", "-inf", "infinity"):
            raise ValueError
        return float(value)
    except ValueError:
        raise ValueError(_go_syntax("strconv.ParseFloat", value)) from None


def _boolean_caster(warn: Warn | None) -> Callable[[str], bool]:
    def to_bool(value: str) -> bool:
        low = value.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("y", "yes", "on", "n", "no", "off"):
            result = low in ("y", "yes", "on")
            if warn is not None:
                warn(
                    f'"{value}" for boolean is not supported by YAML 1.2, '
                    f"please use `{'true' if result else 'false'}`"
                )
            return result
        raise ValueError(f"invalid boolean: {value}")

    return to_bool


_INT, _INT64, _FLOAT, _BOOL = "int", "int64", "float", "bool"
# paths with "*" for any key and "[]" for any list item
_CASTS: dict[tuple[str, ...], str] = {
    ("services", "*", "cpu_count"): _INT64,
    ("services", "*", "cpu_percent"): _FLOAT,
    ("services", "*", "cpu_period"): _INT64,
    ("services", "*", "cpu_quota"): _INT64,
    ("services", "*", "cpu_rt_period"): _INT64,
    ("services", "*", "cpu_rt_runtime"): _INT64,
    ("services", "*", "cpus"): _FLOAT,
    ("services", "*", "cpu_shares"): _INT64,
    ("services", "*", "init"): _BOOL,
    ("services", "*", "depends_on", "*", "required"): _BOOL,
    ("services", "*", "depends_on", "*", "restart"): _BOOL,
    ("services", "*", "deploy", "replicas"): _INT,
    ("services", "*", "deploy", "update_config", "parallelism"): _INT,
    ("services", "*", "deploy", "update_config", "max_failure_ratio"): _FLOAT,
    ("services", "*", "deploy", "rollback_config", "parallelism"): _INT,
    ("services", "*", "deploy", "rollback_config", "max_failure_ratio"): _FLOAT,
    ("services", "*", "deploy", "restart_policy", "max_attempts"): _INT,
    ("services", "*", "deploy", "placement", "max_replicas_per_node"): _INT,
    ("services", "*", "healthcheck", "retries"): _INT,
    ("services", "*", "healthcheck", "disable"): _BOOL,
    ("services", "*", "oom_kill_disable"): _BOOL,
    ("services", "*", "oom_score_adj"): _INT64,
    ("services", "*", "pids_limit"): _INT64,
    ("services", "*", "ports", "[]", "target"): _INT,
    ("services", "*", "privileged"): _BOOL,
    ("services", "*", "read_only"): _BOOL,
    ("services", "*", "scale"): _INT,
    ("services", "*", "stdin_open"): _BOOL,
    ("services", "*", "tty"): _BOOL,
    ("services", "*", "ulimits", "*"): _INT,
    ("services", "*", "ulimits", "*", "hard"): _INT,
    ("services", "*", "ulimits", "*", "soft"): _INT,
    ("services", "*", "volumes", "[]", "read_only"): _BOOL,
    ("services", "*", "volumes", "[]", "volume", "nocopy"): _BOOL,
    ("networks", "*", "external"): _BOOL,
    ("networks", "*", "internal"): _BOOL,
    ("networks", "*", "attachable"): _BOOL,
    ("networks", "*", "enable_ipv4"): _BOOL,
    ("networks", "*", "enable_ipv6"): _BOOL,
    ("volumes", "*", "external"): _BOOL,
    ("secrets", "*", "external"): _BOOL,
    ("configs", "*", "external"): _BOOL,
}


# by (length, last part), so most strings are looked up once and skipped
_CASTS_BY_TAIL: dict[tuple[int, str], list[tuple[tuple[str, ...], str]]] = {}
for _pattern, _kind in _CASTS.items():
    _CASTS_BY_TAIL.setdefault((len(_pattern), _pattern[-1]), []).append((_pattern, _kind))


def _cast_kind(path: tuple[str, ...]) -> str | None:
    if not path:
        return None
    candidates = _CASTS_BY_TAIL.get((len(path), path[-1]), []) + _CASTS_BY_TAIL.get(
        (len(path), "*"), []
    )
    for pattern, kind in candidates:
        if all(p == "*" or p == part for p, part in zip(pattern, path, strict=True)):
            return kind
    return None


def path_text(path: tuple[str, ...]) -> str:
    """Compose's spelling of a model path: keys joined by dots, list items as ``[]``."""
    return ".".join(path)


class _Interpolator:
    def __init__(self, lookup: Lookup, warn: Warn | None, cast: bool) -> None:
        self.lookup = lookup
        self.warn = warn
        self.cast = cast
        self.casters: dict[str, Callable[[str], Any]] = {
            _INT: _to_int, _INT64: _to_int64, _FLOAT: _to_float, _BOOL: _boolean_caster(warn),
        }

    def value(self, value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            return self.string(value, path)
        if isinstance(value, dict):
            out = {k: self.value(v, (*path, str(k))) for k, v in value.items()}
            # a dict subclass (a YAML tag's marker) keeps its class
            return out if type(value) is dict else type(value)(out)
        if isinstance(value, list):
            items = [self.value(v, (*path, "[]")) for v in value]
            return items if type(value) is list else type(value)(items)
        return value

    def string(self, value: str, path: tuple[str, ...]) -> Any:
        try:
            result = substitute(value, self.lookup, self.warn)
        except InvalidTemplate as exc:
            raise ComposeError(
                f"invalid interpolation format for {path_text(path)}.\n"
                f"You may need to escape any $ with another $.\n{exc.template}"
            ) from None
        except TemplateError as exc:
            raise ComposeError(f"error while interpolating {path_text(path)}: {exc}") from None
        if not self.cast:
            return result
        kind = _cast_kind(path)
        if kind is None:
            return result
        try:
            return self.casters[kind](result)
        except ValueError as exc:
            raise ComposeError(
                f"error while interpolating {path_text(path)}: failed to cast to expected type: {exc}"
            ) from None


def interpolate(
    model: dict[str, Any],
    lookup: Lookup,
    warn: Warn | None = None,
    *,
    cast: bool = True,
    path: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A copy of ``model`` with every string value interpolated (keys untouched).

    ``warn`` receives each warning (unset variables, YAML 1.1 booleans). ``cast``
    turns the strings of Compose's typed keys into bool/int/float; ``path`` is the
    position of ``model`` in the whole file, for error messages and casts."""
    result = _Interpolator(lookup, warn, cast).value(model, path)
    assert isinstance(result, dict)
    return result
