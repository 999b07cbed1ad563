"""The Docker Engine API server of ketchd (aiohttp).

Routes only parse requests and shape JSON the way Docker does; what they
report comes from a backend the daemon passes in, so this package never
touches the kernel. A request goes: version prefix checked
(``versions.py``) -> route -> backend; any ketch error on the way becomes a
status code and ``{"message": ...}`` in ``errors.py`` and nowhere else.
"""

from __future__ import annotations

from ketch.api.app import make_app
from ketch.api.versions import CURRENT_API_VERSION, MIN_API_VERSION

__all__ = ["CURRENT_API_VERSION", "MIN_API_VERSION", "make_app"]
