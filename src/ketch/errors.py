"""The one vocabulary of failures, shared by every layer.

Lower layers raise one of these kinds (``raise NotFound(...) from exc`` keeps
the cause); the API maps kinds to HTTP status codes in exactly one place, and
the runtime CLI maps them to runc's exit statuses. Messages are worded the way
Docker and runc word them, because users and clients read them.

This module imports nothing from ketch, so every module may import it.
"""

from __future__ import annotations


class KetchError(Exception):
    """Base of every error ketch raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(KetchError):
    """The named object does not exist ("No such container: x")."""


class InvalidArgument(KetchError):
    """The request or configuration is malformed or names an impossible value."""


class Conflict(KetchError):
    """The request collides with the current state of an object."""


class AlreadyExists(Conflict):
    """An object with that name or id is already there."""


class InvalidTransition(Conflict):
    """The object's state does not allow this operation (start a running container)."""


class NotModified(KetchError):
    """Nothing to do: the object is already in the asked-for state."""


class Unauthorized(KetchError):
    """Credentials are missing or wrong."""


class Forbidden(KetchError):
    """Credentials are fine but the operation is not allowed."""


class Unavailable(KetchError):
    """A dependency (daemon, registry, kernel feature) cannot be reached right now."""


class NotSupported(KetchError):
    """The feature is not supported by ketch or by this host. Never faked."""


class System(KetchError):
    """The kernel or the host failed in a way the caller did not cause."""


class MultiError(System):
    """Several independent failures, typically gathered during cleanup."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "no error")
