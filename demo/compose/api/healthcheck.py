"""The container's healthcheck: exit 0 when GET /health answers 200."""

import sys
import urllib.request

try:
    with urllib.request.urlopen("http://127.0.0.1:3000/health", timeout=4) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
    print(exc)
    sys.exit(1)
