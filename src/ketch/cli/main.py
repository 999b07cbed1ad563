"""``ketch``: the Docker-style CLI. Only ``version`` exists until the daemon does."""

from __future__ import annotations

import sys

from ketch import __version__


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"], ["version"]):
        print(f"ketch version {__version__}")
        return 0
    sys.stderr.write("ketch: this command needs the ketch daemon, which is not available "
                     "yet in this version; use ketch-runc to run containers\n")
    return 1
