"""Human units shared by the CLI and the engine (docker's go-units wording).

The engine needs them too: a container's ``Status`` ("Up 3 minutes",
"Exited (0) About an hour ago") is written by the daemon, not the client.
"""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: "Less than a second", "About a minute", "3 weeks"."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size_precision(size: float, precision: int) -> str:
    """go-units HumanSizeWithPrecision: decimal units, ``%.*g`` digits ("4.26MB")."""
    v, i = float(size), 0
    while v >= 1000.0 and i < len(_DECIMAL) - 1:
        v /= 1000.0
        i += 1
    return ("%." + str(precision) + "g") % v + _DECIMAL[i]


def human_size(size: float) -> str:
    """go-units HumanSize (4 significant digits): "1.982MB", "0B"."""
    return human_size_precision(size, 4)
