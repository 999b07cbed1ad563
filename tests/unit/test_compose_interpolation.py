"""Compose interpolation: the ${VAR} forms, $$, errors naming the path, typed keys."""

from __future__ import annotations

import pytest

from ketch.compose.errors import ComposeError
from ketch.compose.interpolation import (
    InvalidTemplate,
    MissingRequired,
    interpolate,
    substitute,
)

ENV = {"A": "alpha", "EMPTY": "", "B": "beta", "lower": "small"}


def sub(text: str, env: dict[str, str] | None = None, warnings: list[str] | None = None) -> str:
    return substitute(text, (ENV if env is None else env).get, None if warnings is None else warnings.append)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain", "plain"),
        ("$A", "alpha"),
        ("${A}", "alpha"),
        ("x${A}y$B.z", "xalphaybeta.z"),
        ("$lower", "small"),
        ("${A:-d}", "alpha"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${A:+r}", "r"),
        ("${EMPTY:+r}", ""),
        ("${UNSET:+r}", ""),
        ("${EMPTY+r}", "r"),
        ("${UNSET+r}", ""),
        ("${A:?boom}", "alpha"),
        ("${EMPTY?boom}", ""),
        ("${UNSET:-${A}}", "alpha"),
        ("${UNSET:-${NOPE:-${B}}}", "beta"),
        ("${UNSET:-$A-x}", "alpha-x"),
        ("${UNSET:-a b c} and ${A}", "a b c and alpha"),
        ("${UNSET:-x}}", "x}"),
        ("$$", "$"),
        ("$$A", "$A"),
        ("$${A}", "${A}"),
        ("cost $5 and $", "cost $5 and $"),
        ("a $ b", "a $ b"),
        ("${A:-x:-y}", "alpha"),
        ("${UNSET-x:-y}", "x:-y"),
        ("${UNSET:-{\"k\": [1]}}", '{"k": [1]}'),
        ("${A:-{x}}", "alpha"),
        ("$A-suffix", "alpha-suffix"),
        ("${UNSET:-/p:-q}", "/p:-q"),
    ],
)
def test_substitute_forms(template: str, expected: str) -> None:
    assert sub(template) == expected


def test_unset_without_default_is_blank_with_a_warning() -> None:
    warnings: list[str] = []
    assert sub("x${NOPE}y$NOPE2", warnings=warnings) == "xy"
    assert warnings == [
        'The "NOPE" variable is not set. Defaulting to a blank string.',
        'The "NOPE2" variable is not set. Defaulting to a blank string.',
    ]


def test_defaults_do_not_warn() -> None:
    warnings: list[str] = []
    sub("${NOPE:-d}${NOPE-d}${NOPE:+$$NOPE2}${A:?$NOPE3}", warnings=warnings)
    assert warnings == []
    # a default that is used and names an unset variable does warn
    sub("${NOPE:-$NOPE4}", warnings=warnings)
    assert warnings == ['The "NOPE4" variable is not set. Defaulting to a blank string.']


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${UNSET:?need it}", "required variable UNSET is missing a value: need it"),
        ("${EMPTY:?need it}", "required variable EMPTY is missing a value: need it"),
        ("${UNSET?}", "required variable UNSET is missing a value"),
        ("${UNSET:?need $A}", "required variable UNSET is missing a value: need alpha"),
    ],
)
def test_required(template: str, message: str) -> None:
    with pytest.raises(MissingRequired) as exc:
        sub(template)
    assert str(exc.value) == message


@pytest.mark.parametrize("template", ["${", "${A", "${}", "${1A}", "${A B}", "x ${A!}", "${A:-x"])
def test_invalid_templates(template: str) -> None:
    with pytest.raises(InvalidTemplate):
        sub(template)


def test_interpolate_walks_values_not_keys() -> None:
    model = {
        "services": {
            "${A}": {
                "image": "img:${A}",
                "command": ["echo", "$B", 3, None, True],
                "environment": {"K": "${A:-x}"},
            }
        }
    }
    out = interpolate(model, ENV.get)
    assert out == {
        "services": {
            "${A}": {
                "image": "img:alpha",
                "command": ["echo", "beta", 3, None, True],
                "environment": {"K": "alpha"},
            }
        }
    }
    # the input is left alone
    assert model["services"]["${A}"]["image"] == "img:${A}"


def test_required_error_names_the_path() -> None:
    model = {"services": {"web": {"image": "nginx:${TAG:?need a tag}"}}}
    with pytest.raises(ComposeError) as exc:
        interpolate(model, {}.get)
    assert str(exc.value) == (
        "error while interpolating services.web.image: "
        "required variable TAG is missing a value: need a tag"
    )


def test_invalid_template_error_names_the_path_and_the_value() -> None:
    model = {"services": {"web": {"command": ["sh", "-c", "echo ${oops"]}}}
    with pytest.raises(ComposeError) as exc:
        interpolate(model, {}.get)
    assert str(exc.value) == (
        "invalid interpolation format for services.web.command.[].\n"
        "You may need to escape any $ with another $.\necho ${oops"
    )


def test_typed_keys_are_cast() -> None:
    env = {"N": "3", "T": "true", "C": "0.5", "P": "8080"}
    model = {
        "services": {
            "web": {
                "deploy": {"replicas": "${N}"},
                "tty": "${T}",
                "cpus": "${C}",
                "ports": [{"target": "${P}", "published": "${P}"}],
                "ulimits": {"nofile": {"soft": "${N}", "hard": "10"}, "nproc": "7"},
                "depends_on": {"db": {"required": "false"}},
                "image": "${N}",
            }
        },
        "volumes": {"v": {"external": "true"}},
    }
    web = interpolate(model, env.get)["services"]["web"]
    assert web["deploy"]["replicas"] == 3
    assert web["tty"] is True
    assert web["cpus"] == 0.5
    assert web["ports"][0] == {"target": 8080, "published": "8080"}
    assert web["ulimits"] == {"nofile": {"soft": 3, "hard": 10}, "nproc": 7}
    assert web["depends_on"]["db"]["required"] is False
    assert web["image"] == "3"
    assert interpolate(model, env.get)["volumes"]["v"]["external"] is True


def test_cast_can_be_turned_off() -> None:
    model = {"services": {"web": {"tty": "true"}}}
    assert interpolate(model, {}.get, cast=False)["services"]["web"]["tty"] == "true"


def test_yaml11_booleans_warn() -> None:
    warnings: list[str] = []
    out = interpolate({"services": {"w": {"privileged": "yes", "tty": "off"}}}, {}.get, warnings.append)
    assert out["services"]["w"] == {"privileged": True, "tty": False}
    assert warnings == [
        '"yes" for boolean is not supported by YAML 1.2, please use `true`',
        '"off" for boolean is not supported by YAML 1.2, please use `false`',
    ]


def test_cast_failure_names_the_path() -> None:
    with pytest.raises(ComposeError) as exc:
        interpolate({"services": {"w": {"deploy": {"replicas": "many"}}}}, {}.get)
    assert str(exc.value) == (
        "error while interpolating services.w.deploy.replicas: failed to cast to expected type: "
        'strconv.Atoi: parsing "many": invalid syntax'
    )
    with pytest.raises(ComposeError, match="invalid boolean: maybe"):
        interpolate({"services": {"w": {"tty": "maybe"}}}, {}.get)
