"""Docker's ``filters`` query values: which names a call accepts, and what they mean.

The Engine API passes filters as ``{name: [values]}`` (``ketch.api.routers.images.
parse_filters`` decodes the JSON). Every prune and list call then does the same
few things with them, the way moby's ``api/types/filters`` and
``api/types/time`` do, so the answers and the error messages users see are
dockerd's:

    check_names(filters, {"dangling", "label", "label!", "until"})
    dangling = bool_filter(filters, "dangling", default=True)   # "invalid filter 'dangling=[x]'"
    until = prune_until(filters)            # "24h", "2024-01-01T00:00:00Z", "1704067200.5"
    keep = created > until or not match_labels(filters, image_labels)

Kept free of any store and of aiohttp: the image service, the API's prune
endpoints and, later, containers, networks and volumes all share it.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone

from ketch.errors import InvalidArgument
from ketch.gotext import go_quote  # noqa: F401 - callers quote with filters.go_quote
from ketch.gotext import parse_duration as parse_go_duration

Filters = Mapping[str, Sequence[str]]

# moby's accepted filter names per call (daemon/*_prune.go, daemon/images/images.go).
IMAGE_LIST = frozenset({"dangling", "label", "label!", "before", "since", "reference", "until"})
IMAGE_PRUNE = frozenset({"dangling", "label", "label!", "until"})
CONTAINER_PRUNE = frozenset({"label", "label!", "until"})
NETWORK_PRUNE = frozenset({"label", "label!", "until"})
VOLUME_PRUNE = frozenset({"label", "label!", "all"})
BUILD_CACHE_PRUNE = frozenset({"id", "parent", "type", "description", "inuse", "shared",
                               "private", "until", "unused-for", "label", "label!"})


def go_list(values: Iterable[str]) -> str:
    """How Go's ``%s`` prints a ``[]string`` (sorted here: Go's map order is random)."""
    return "[" + " ".join(sorted(values)) + "]"


def invalid_filter(name: str, values: Iterable[str] | None = None) -> InvalidArgument:
    """moby's ``invalidFilter``: "invalid filter 'name'" or "invalid filter 'name=[a b]'"."""
    if values is None:
        return InvalidArgument(f"invalid filter '{name}'")
    return InvalidArgument(f"invalid filter '{name}={go_list(values)}'")


def check_names(filters: Filters, accepted: Iterable[str]) -> None:
    """``filters.Args.Validate``: every name must be one the call knows."""
    allowed = frozenset(accepted)
    for name in sorted(filters):
        if name not in allowed:
            raise invalid_filter(name)


def bool_filter(filters: Filters, name: str, default: bool) -> bool:
    """``filters.Args.GetBoolOrDefault``: "true"/"1" or "false"/"0", never both."""
    if name not in filters:
        return default
    values = set(filters[name])
    if not values:
        raise invalid_filter(name)
    is_true = bool(values & {"1", "true"})
    is_false = bool(values & {"0", "false"})
    if is_true == is_false:
        raise invalid_filter(name, values)
    return is_true


# --- labels ------------------------------------------------------------------------------


def match_kv_list(values: Iterable[str], labels: Mapping[str, str]) -> bool:
    """``filters.Args.MatchKVList``: every ``k`` / ``k=v`` holds (no values: true)."""
    wanted = list(values)
    if not wanted:
        return True
    if not labels:
        return False
    for value in wanted:
        key, sep, expected = value.partition("=")
        if key not in labels or (sep and labels[key] != expected):
            return False
    return True


def match_labels(filters: Filters, labels: Mapping[str, str]) -> bool:
    """moby's ``matchLabels`` for prunes: every ``label`` holds, and not every ``label!`` does.

    (``label!=a --filter label!=b`` spares only what has *both*: moby negates the
    whole list, not each entry, and ketch does the same.)
    """
    if not match_kv_list(filters.get("label", ()), labels):
        return False
    negated = list(filters.get("label!", ()))
    return not (negated and match_kv_list(negated, labels))


def match_each_label(filters: Filters, labels: Mapping[str, str]) -> bool:
    """``docker images``' label rules (moby's image list): each ``label`` entry must
    hold and each ``label!`` entry must not; ``label=k!=v`` is ``label!=k=v``."""
    for name in ("label", "label!"):
        for value in filters.get(name, ()):
            key, sep, expected = value.partition("=")
            negate = name == "label!"
            if key.endswith("!"):
                key, negate = key[:-1], not negate
            holds = key in labels and (not sep or labels[key] == expected)
            if holds == negate:
                return False
    return True


# --- times: api/types/time ----------------------------------------------------------------

def parse_duration(value: str) -> float:
    """Go's ``time.ParseDuration``, in seconds: "1h30m", "-1.5h", "300ms"; ValueError as Go words it."""
    return parse_go_duration(value) / 1e9


_INT = re.compile(r"[+-]?\d+")


def parse_timestamps(value: str) -> tuple[int, int]:
    """``timetypes.ParseTimestamps``: "1704067200" or "1704067200.5" -> (seconds, nanoseconds)."""
    secs, dot, frac = value.partition(".")
    if not _INT.fullmatch(secs):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(secs)}: invalid syntax")
    if not dot:
        return int(secs), 0
    if not _INT.fullmatch(frac):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(frac)}: invalid syntax")
    return int(secs), int(int(frac) * 10 ** (9 - len(frac)))


def _layout(value: str, in_location: bool) -> tuple[str, str]:
    """The Go layout ``GetTimestamp`` picks for ``value``, and a regex for it."""
    zone = "" if in_location else "Z07:00"
    zone_re = "" if in_location else r"(?P<zone>Z|z|[+-]\d\d:\d\d)"
    date = r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)"
    if "." in value:
        return ("2006-01-02T15:04:05.999999999" + zone,
                date + r"T(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:\.(?P<f>\d+))?" + zone_re)
    if "T" in value:
        colons = value.count(":")
        if not in_location and not any(c in value for c in "zZ") and colons > 0:
            colons -= 1  # the zone offset's own colon
        if colons == 0:
            return "2006-01-02T15" + zone, date + r"T(?P<h>\d\d)" + zone_re
        if colons == 1:
            return "2006-01-02T15:04" + zone, date + r"T(?P<h>\d\d):(?P<mi>\d\d)" + zone_re
        return ("2006-01-02T15:04:05" + zone,
                date + r"T(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:\.(?P<f>\d+))?" + zone_re)
    return "2006-01-02" + zone, date + zone_re


def _days_in(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1] if 1 <= month <= 12 else 31


def _parse_time(value: str, now: float) -> tuple[int, int]:
    """A date or date-time as ``GetTimestamp`` reads it: local time unless a zone is given."""
    in_location = not (any(c in value for c in "zZ+") or value.count("-") == 3)
    layout, pattern = _layout(value, in_location)
    m = re.fullmatch(pattern, value)
    if m is None:
        raise ValueError(f"parsing time {go_quote(value)} as {go_quote(layout)}: "
                         f"cannot parse {go_quote(value)} as {go_quote(layout)}")
    g = m.groupdict()
    if in_location:
        # Go uses time.FixedZone(reference.Zone()): the daemon's offset now.
        offset = datetime.fromtimestamp(now).astimezone().utcoffset() or timedelta(0)
        tz = timezone(offset)
    elif g["zone"] in ("Z", "z"):
        tz = UTC
    else:
        zone = g["zone"]
        delta = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = timezone(-delta if zone[0] == "-" else delta)
    y, mo, d = int(g["y"]), int(g["mo"]), int(g["d"])
    h, mi, sec = int(g.get("h") or 0), int(g.get("mi") or 0), int(g.get("s") or 0)
    for what, n, top in (("month", mo, 12), ("day", d, _days_in(y, mo)), ("hour", h, 23),
                         ("minute", mi, 59), ("second", sec, 59)):
        if n > top or (n < 1 and what in ("month", "day")):
            raise ValueError(f"parsing time {go_quote(value)}: {what} out of range")
    t = datetime(y, mo, d, h, mi, sec, tzinfo=tz)
    frac = g.get("f") or ""
    nanos = int(frac[:9].ljust(9, "0")) if frac else 0
    return math.floor(t.timestamp()), nanos


def get_timestamp(value: str, now: float | None = None) -> str:
    """``timetypes.GetTimestamp``: a duration before ``now``, a date, or a Unix time, as "secs[.nanos]"."""
    now = time.time() if now is None else now
    if value != "0":
        try:
            d = parse_duration(value)
        except ValueError:
            pass
        else:
            return str(math.floor(now - d))
    try:
        secs, nanos = _parse_time(value, now)
    except ValueError:
        if "-" in value:
            raise  # looked like a date, and is a wrong one: say why
        try:
            parse_timestamps(value)
        except ValueError:
            raise ValueError(
                f"failed to parse value as time or duration: {go_quote(value)}") from None
        return value
    return f"{secs}.{nanos:09d}"


def parse_until(value: str, now: float | None = None) -> float:
    """An ``until`` value as seconds since the epoch; InvalidArgument with dockerd's words."""
    try:
        secs, nanos = parse_timestamps(get_timestamp(value, now))
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return secs + nanos / 1e9


def prune_until(filters: Filters, now: float | None = None) -> float | None:
    """moby's ``getUntilFromPruneFilters``: at most one ``until``; None without one."""
    values = list(filters.get("until", ()))
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument("more than one until filter specified")
    return parse_until(values[0], now)
