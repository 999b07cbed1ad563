"""Registries: the distribution client ketchd pulls and pushes with, and ``ketch registry serve``.

``client/`` speaks the OCI distribution protocol to any registry (auth
challenges, manifests and indexes, blobs verified by digest); ``server/`` is
ketch's own registry, on a storage driver (a directory or an S3 bucket).
"""
