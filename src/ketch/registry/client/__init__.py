"""The distribution client ketchd pulls and pushes with (OCI distribution v1.1, Registry API v2).

Synchronous, standard library only, safe to share between threads::

    registries = Registries(RegistryOptions(insecure_registries=("10.0.0.0/8",)))
    repo = registries.repository(normalize("127.0.0.1:5000/app:1"),
                                 Credentials.from_header(x_registry_auth))
    image = repo.manifest_for("1", None)
    repo.fetch_blob(image.parsed.layers[0], writer, progress)

Modules: ``options`` (daemon options, credentials), ``transport`` (connection
pool, TLS, Go-worded network errors), ``challenge`` (WWW-Authenticate),
``auth`` (Basic, Bearer tokens and their cache), ``errors`` (registry error
bodies -> ketch.errors), ``session`` (one endpoint, auth retries, redirects),
``registries`` (endpoints, pings, login), ``repository`` (the operations).
"""

from ketch.registry.client.errors import ErrorDetail, RegistryError
from ketch.registry.client.options import Credentials, RegistryOptions
from ketch.registry.client.registries import LoginResult, Registries
from ketch.registry.client.repository import (
    BlobSink,
    FetchedManifest,
    PulledImage,
    Repository,
)

__all__ = [
    "BlobSink",
    "Credentials",
    "ErrorDetail",
    "FetchedManifest",
    "LoginResult",
    "PulledImage",
    "Registries",
    "RegistryError",
    "RegistryOptions",
    "Repository",
]
