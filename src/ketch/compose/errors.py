"""The one error kind of bad compose input."""

from __future__ import annotations

from ketch.errors import InvalidArgument


class ComposeError(InvalidArgument):
    """A compose file, variable or flag that cannot be used. The message is the whole
    text the user sees, naming the file, service and key where there is one
    (``services.api.ports[0]: invalid port "3000:abc"``). Found by compose, not the
    daemon: printed without "Error response from daemon"."""

    local = True
