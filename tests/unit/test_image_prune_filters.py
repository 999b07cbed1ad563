"""dockerd's filter rules (ketch.filters) and ``docker image prune`` / ``images`` with them.

The timestamp cases are moby's ``api/types/time`` rules; the expected messages
are the ones dockerd answers with (seen from Debian's dockerd 20.10, in the
lower-case wording moby has used since). The service tests run over the
copy-based snapshotter: no root needed.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from tests.unit.test_image_service import (  # noqa: F401 - svc is a fixture
    APP,
    BASE,
    OTHER,
    _image,
    _load,
    _sha,
    svc,
)

from ketch import filters as flt
from ketch.errors import InvalidArgument
from ketch.image.service import ImageService

NOW = 1_700_000_000.0


# --- durations and timestamps --------------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [
    ("1h", 3600.0), ("1h30m", 5400.0), ("-1.5h", -5400.0), ("300ms", 0.3), ("2m3s", 123.0),
    ("0", 0.0), ("+10s", 10.0), ("1us", 1e-6), ("1µs", 1e-6), (".5s", 0.5),
])
def test_parse_duration(value: str, seconds: float) -> None:
    assert flt.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value, message", [
    ("", 'time: invalid duration ""'),
    ("xyz", 'time: invalid duration "xyz"'),
    ("1", 'time: missing unit in duration "1"'),
    ("1x", 'time: unknown unit "x" in duration "1x"'),
    ("1h5", 'time: missing unit in duration "1h5"'),
])
def test_parse_duration_errors(value: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        flt.parse_duration(value)
    assert str(exc.value) == message


def _local(*args: int) -> int:
    return int(datetime(*args).astimezone().timestamp())  # type: ignore[misc]


@pytest.mark.parametrize("value, want", [
    ("1h", str(int(NOW) - 3600)),
    ("-1h", str(int(NOW) + 3600)),
    ("2020-01-01T00:00:00Z", "1577836800.000000000"),
    ("2020-01-01T00:00:00.5Z", "1577836800.500000000"),
    ("2020-01-01T01:00:00+01:00", "1577836800.000000000"),
    ("2020-01-01T00:00Z", "1577836800.000000000"),
    ("2020-01-01T00Z", "1577836800.000000000"),
    ("2020-01-01Z", "1577836800.000000000"),
    ("1577836800", "1577836800"),
    ("1577836800.5", "1577836800.5"),
    ("0", "0"),
])
def test_get_timestamp(value: str, want: str) -> None:
    assert flt.get_timestamp(value, NOW) == want


def test_get_timestamp_local_forms_use_the_daemon_zone() -> None:
    assert flt.get_timestamp("2020-01-01", NOW) == f"{_local(2020, 1, 1)}.000000000"
    assert flt.get_timestamp("2020-01-01T10", NOW) == f"{_local(2020, 1, 1, 10)}.000000000"
    assert flt.get_timestamp("2020-01-01T10:30:05", NOW) == \
        f"{_local(2020, 1, 1, 10, 30, 5)}.000000000"


@pytest.mark.parametrize("value, message", [
    ("xyz", 'failed to parse value as time or duration: "xyz"'),
    ("1x", 'failed to parse value as time or duration: "1x"'),
    ("2020-13-01", 'parsing time "2020-13-01": month out of range'),
    ("2021-02-29", 'parsing time "2021-02-29": day out of range'),
    ("2020-01-01T24:00:00Z", 'parsing time "2020-01-01T24:00:00Z": hour out of range'),
])
def test_until_errors_are_dockerds(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        flt.parse_until(value, NOW)
    assert exc.value.message == message


def test_prune_until_takes_one_value() -> None:
    assert flt.prune_until({}) is None
    assert flt.prune_until({"until": ["2020-01-01T00:00:00Z"]}) == 1577836800.0
    assert flt.prune_until({"until": ["10m"]}, NOW) == NOW - 600
    with pytest.raises(InvalidArgument, match="^more than one until filter specified$"):
        flt.prune_until({"until": ["1h", "2h"]})


# --- names, booleans, labels -----------------------------------------------------------------


def test_check_names_and_bool_filter() -> None:
    flt.check_names({"dangling": ["true"], "label!": ["a"]}, flt.IMAGE_PRUNE)
    with pytest.raises(InvalidArgument) as exc:
        flt.check_names({"reference": ["x"]}, flt.IMAGE_PRUNE)
    assert exc.value.message == "invalid filter 'reference'"
    assert flt.bool_filter({}, "dangling", True) is True
    assert flt.bool_filter({"dangling": ["0"]}, "dangling", True) is False
    assert flt.bool_filter({"dangling": ["true"]}, "dangling", False) is True
    for values, message in ((["maybe"], "invalid filter 'dangling=[maybe]'"),
                            (["true", "false"], "invalid filter 'dangling=[false true]'"),
                            (["TRUE"], "invalid filter 'dangling=[TRUE]'"),
                            ([], "invalid filter 'dangling'")):
        with pytest.raises(InvalidArgument) as exc:
            flt.bool_filter({"dangling": values}, "dangling", True)
        assert exc.value.message == message


@pytest.mark.parametrize("filters, labels, want", [
    ({}, {}, True),
    ({"label": ["a"]}, {"a": "1"}, True),
    ({"label": ["a"]}, {}, False),
    ({"label": ["a=1"]}, {"a": "2"}, False),
    ({"label": ["a=1", "b"]}, {"a": "1", "b": ""}, True),
    ({"label": ["a=1", "b"]}, {"a": "1"}, False),
    ({"label!": ["a"]}, {"a": "1"}, False),
    ({"label!": ["a"]}, {}, True),
    ({"label!": ["a=1"]}, {"a": "2"}, True),
    ({"label!": ["a=1"]}, {"a": "1"}, False),
    # moby negates the whole list: only what matches every label! entry is spared.
    ({"label!": ["a", "b"]}, {"a": "1"}, True),
    ({"label!": ["a", "b"]}, {"a": "1", "b": "2"}, False),
    ({"label": ["a"], "label!": ["b"]}, {"a": "1", "b": "2"}, False),
])
def test_match_labels(filters: dict, labels: dict, want: bool) -> None:
    assert flt.match_labels(filters, labels) is want


@pytest.mark.parametrize("filters, labels, want", [
    ({"label!": ["a", "b"]}, {"a": "1"}, False),
    ({"label!": ["a", "b"]}, {"c": "1"}, True),
    ({"label!": ["a=1"]}, {"a": "2"}, True),
    ({"label": ["a!=1"]}, {"a": "1"}, False),
    ({"label": ["a!=1"]}, {"a": "2"}, True),
    ({"label": ["a", "b=2"]}, {"a": "", "b": "2"}, True),
    ({"label": ["a", "b=2"]}, {"a": ""}, False),
])
def test_match_each_label(filters: dict, labels: dict, want: bool) -> None:
    assert flt.match_each_label(filters, labels) is want


# --- docker image prune --------------------------------------------------------------------


def _three(svc: ImageService) -> dict[str, str]:  # noqa: F811
    """old (2020, label a=1), mid (2023, label b=2), new (now-ish, no label); all tagged."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    imgs = {"old": _image([BASE], created="2020-01-01T00:00:00Z", labels={"a": "1"}),
            "mid": _image([BASE, APP], created="2023-01-01T00:00:00Z", labels={"b": "2"}),
            "new": _image([OTHER], created=now)}
    for name, img in imgs.items():
        _load(svc, (img, [f"{name}:1"]))
    return {name: _sha(img[0]) for name, img in imgs.items()}


def _deleted(res: dict) -> set[str]:
    return {r["Deleted"] for r in res["ImagesDeleted"] or [] if "Deleted" in r}


def test_prune_refuses_bad_filters_before_deleting(svc: ImageService) -> None:  # noqa: F811
    ids = _three(svc)
    cases = [({"foo": ["1"]}, "invalid filter 'foo'"),
             ({"reference": ["x"]}, "invalid filter 'reference'"),
             ({"dangling": ["maybe"]}, "invalid filter 'dangling=[maybe]'"),
             ({"dangling": ["false"], "until": ["xyz"]},
              'failed to parse value as time or duration: "xyz"'),
             ({"dangling": ["false"], "until": ["1h", "2h"]},
              "more than one until filter specified")]
    for filters, message in cases:
        with pytest.raises(InvalidArgument) as exc:
            svc.prune(filters)
        assert exc.value.message == message
    assert {s.id for s in svc.list()} == set(ids.values())


def test_prune_until(svc: ImageService) -> None:  # noqa: F811
    ids = _three(svc)
    # Tagged images are not dangling: without -a (dangling=false) nothing goes.
    assert svc.prune({"until": ["2021-01-01T00:00:00Z"]})["ImagesDeleted"] is None
    res = svc.prune({"dangling": ["false"], "until": ["2021-01-01T00:00:00Z"]})
    assert _deleted(res) == {ids["old"]}  # its layer stays: mid uses it
    assert res["SpaceReclaimed"] == 0
    chains = {la.chain_id for la in svc.get(ids["mid"]).layers}
    res = svc.prune({"dangling": ["false"], "until": ["1h"]})
    assert _deleted(res) == {ids["mid"], *chains}
    # mid's two layers were its own by then: both went, and count as reclaimed space.
    assert res["SpaceReclaimed"] == len(b"base\n") + len(b"echo hi\n")
    assert [s.id for s in svc.list()] == [ids["new"]]
    assert svc.check() == []


def test_prune_labels(svc: ImageService) -> None:  # noqa: F811
    ids = _three(svc)
    assert svc.prune({"dangling": ["false"], "label": ["zzz"]})["ImagesDeleted"] is None
    res = svc.prune({"dangling": ["false"], "label": ["a=1"]})
    assert _deleted(res) == {ids["old"]}
    res = svc.prune({"dangling": ["false"], "label!": ["b"]})
    assert _deleted(res) == {ids["new"], _sha(OTHER)}  # with its one layer (chain ID = diff ID)
    assert [s.id for s in svc.list()] == [ids["mid"]]
    res = svc.prune({"dangling": ["false"], "label": ["b=2"], "label!": ["b=2"]})
    assert res["ImagesDeleted"] is None
    res = svc.prune(all=True)
    assert _deleted(res) >= {ids["mid"]}
    assert svc.list() == [] and svc.check() == []


def test_prune_dangling_only_takes_untagged_images(svc: ImageService) -> None:  # noqa: F811
    old = _image([BASE], created="2020-01-01T00:00:00Z", labels={"a": "1"})
    _load(svc, (old, ["app:1"]))
    _load(svc, (_image([BASE, APP]), ["app:1"]))  # old is dangling now
    assert svc.prune({"label": ["nope"]})["ImagesDeleted"] is None
    assert svc.prune({"until": ["2019-01-01T00:00:00Z"]})["ImagesDeleted"] is None
    res = svc.prune({"dangling": ["true"], "label": ["a"], "until": ["2021-01-01T00:00:00Z"]})
    assert res["ImagesDeleted"] == [{"Deleted": _sha(old[0])}]


def test_prune_skips_images_containers_use(svc: ImageService) -> None:  # noqa: F811
    ids = _three(svc)
    svc.rootfs_mounts("old:1", "ctr-1")
    res = svc.prune(all=True)
    assert ids["old"] not in _deleted(res) and ids["new"] in _deleted(res)
    assert [s.id for s in svc.list()] == [ids["old"]]


# --- docker images: the same rules ----------------------------------------------------------


def test_list_until_and_label_not(svc: ImageService) -> None:  # noqa: F811
    ids = _three(svc)
    assert {s.id for s in svc.list({"until": ["2021-01-01T00:00:00Z"]})} == {ids["old"]}
    assert {s.id for s in svc.list({"until": ["1h"]})} == {ids["old"], ids["mid"]}
    assert {s.id for s in svc.list({"label!": ["a"]})} == {ids["mid"], ids["new"]}
    assert {s.id for s in svc.list({"label": ["b=2"]})} == {ids["mid"]}
    # Unlike prune, the list drops what matches any one label! entry (moby's list does).
    assert {s.id for s in svc.list({"label!": ["a", "b"]})} == {ids["new"]}
    assert {s.id for s in svc.list({"label": ["b!=2"]})} == {ids["old"], ids["new"]}
    with pytest.raises(InvalidArgument, match="^failed to parse value as time or duration"):
        svc.list({"until": ["soon"]})
    with pytest.raises(InvalidArgument, match=r"^invalid filter 'dangling=\[0 1\]'$"):
        svc.list({"dangling": ["1", "0"]})
    with pytest.raises(InvalidArgument, match="^invalid filter 'bogus'$"):
        svc.list({"bogus": ["x"]})
