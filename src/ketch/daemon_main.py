"""``ketchd``: the daemon's console entry point; the work is in ketch.daemon.main."""

from __future__ import annotations

import sys


def main() -> int:
    from ketch.daemon.main import run

    return run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
