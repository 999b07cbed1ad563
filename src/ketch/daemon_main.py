"""``ketchd``: the daemon. Not built yet; says so instead of pretending."""

from __future__ import annotations

import sys


def main() -> int:
    sys.stderr.write("ketchd: the daemon is not available yet in this version of ketch; "
                     "use ketch-runc to run containers\n")
    return 1
